//! The web console in a real browser: headless Chromium driven through
//! the W3C WebDriver protocol (`chromedriver`, Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/run`). The console shows every
//! node and the leader; disabling a node through the page, with the admin
//! token, makes that node's `/readyz` answer 503; a wrong token changes
//! nothing. The screenshot the test takes is `docs/images/console.png`.

mod common;

use base64::Engine as _;
use common::{Cluster, NODES, Options, Proc, WAIT, call, get, wait_until};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "console-test-token-0123456789";

/// A chromedriver process and one browser session.
struct Browser {
    base: String,
    session: String,
    _driver: Proc,
}

fn find(candidates: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|c| {
        std::env::split_paths(&path)
            .map(|d| d.join(c))
            .chain([std::path::PathBuf::from("/usr/bin").join(c)])
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

fn webdriver(method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let r = call(
        method,
        url,
        &[("content-type", "application/json")],
        bytes.as_deref(),
        Duration::from_secs(60),
    )?;
    let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("{e}: {}", r.body))?;
    if r.status != 200 {
        return Err(format!("{method} {url}: {} {}", r.status, v["value"]));
    }
    Ok(v["value"].clone())
}

impl Browser {
    fn start(dir: &std::path::Path) -> Browser {
        let driver = find(&["chromedriver", "chromium-driver"]).unwrap_or_else(|| {
            panic!(
                "chromedriver is not installed, and this test drives Chromium with it. \
                 .ci/run installs it; locally: sudo apt-get install -y chromium chromium-driver"
            )
        });
        let chromium = find(&["chromium", "chromium-browser", "google-chrome"])
            .expect("chromium is installed with chromium-driver");
        let port = common::free_ports(1)[0];
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"));
        let proc = Proc::spawn("chromedriver", cmd, &dir.join("logs/chromedriver.log"));
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver to answer", WAIT, || {
            webdriver("GET", &format!("{base}/status"), None).map(|_| ())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"]
            }
        }}});
        let v = webdriver("POST", &format!("{base}/session"), Some(caps))
            .unwrap_or_else(|e| panic!("no browser session: {e}"));
        let session = v["sessionId"].as_str().expect("a session id").to_string();
        Browser {
            base,
            session,
            _driver: proc,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    fn go(&self, url: &str) {
        webdriver("POST", &self.url("/url"), Some(json!({ "url": url }))).expect("navigate");
    }

    /// The text of the element `css` selects, or why not.
    fn text(&self, css: &str) -> Result<String, String> {
        let el = webdriver(
            "POST",
            &self.url("/element"),
            Some(json!({"using": "css selector", "value": css})),
        )?;
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .ok_or("no element id")?
            .to_string();
        Ok(
            webdriver("GET", &self.url(&format!("/element/{id}/text")), None)?
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    }

    fn click(&self, css: &str) {
        let el = webdriver(
            "POST",
            &self.url("/element"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .unwrap_or_else(|e| panic!("{css}: {e}"));
        let id = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element id")
            .to_string();
        webdriver(
            "POST",
            &self.url(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .expect("click");
    }

    /// Wait for a dialog, answer `text` if given, accept it; its message.
    fn answer_dialog(&self, text: Option<&str>) -> String {
        let message = wait_until("a dialog", WAIT, || {
            webdriver("GET", &self.url("/alert/text"), None)
        });
        if let Some(t) = text {
            webdriver("POST", &self.url("/alert/text"), Some(json!({ "text": t })))
                .expect("type into the prompt");
        }
        webdriver("POST", &self.url("/alert/accept"), Some(json!({}))).expect("accept");
        message.as_str().unwrap_or("").to_string()
    }

    fn screenshot(&self) -> Vec<u8> {
        let b64 = webdriver("GET", &self.url("/screenshot"), None).expect("screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64"))
            .expect("a PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = webdriver("DELETE", &self.url(""), None);
    }
}

#[test]
fn the_console_shows_the_cluster_and_disables_a_node_with_the_token() {
    let c = Cluster::start(Options {
        console: true,
        extra_toml: format!("[admin]\ntoken = \"{TOKEN}\"\n"),
        ..Options::default()
    });
    for k in 0..5 {
        let r = common::must(
            "PUT",
            &c.nodes[0].url(&format!("/kv/c{k}")),
            &[],
            Some(b"1"),
        );
        assert!(r.status == 200 || r.status == 201, "{r:?}");
    }
    let leader = NODES[c.leader()];
    let browser = Browser::start(c.dir());
    // The console of a node that is not the leader, and one that is.
    let target = (0..3).find(|&i| NODES[i] != leader).expect("a follower");
    let console = |i: usize| format!("http://{}/", c.nodes[i].console.expect("a console"));
    browser.go(&console(target));
    assert_eq!(browser.text("#node").expect("the node"), NODES[target]);
    wait_until("the leader on the page", WAIT, || {
        let shown = browser.text("#leader-kv")?;
        (shown == leader).then_some(()).ok_or(shown)
    });
    for n in NODES {
        let row = browser.text(&format!("#node-{n}")).expect("a row per node");
        assert!(row.starts_with(n), "{row}");
    }

    // A wrong token: refused, nothing changes.
    browser.click(&format!("#node-{} button.danger", NODES[target]));
    assert!(browser.answer_dialog(None).starts_with("Disable"));
    browser.answer_dialog(Some("not-the-token"));
    wait_until("the refusal on the page", WAIT, || {
        let r = browser.text("#result")?;
        r.starts_with("401").then_some(()).ok_or(r)
    });
    assert_eq!(get(&c.nodes[target].url("/readyz")).status, 200);

    // With the token: the node is disabled and stops being ready.
    browser.click(&format!("#node-{} button.danger", NODES[target]));
    browser.answer_dialog(None);
    browser.answer_dialog(Some(TOKEN));
    let readyz = c.nodes[target].url("/readyz");
    wait_until("the disabled node's /readyz to answer 503", WAIT, || {
        let r = call("GET", &readyz, &[], None, Duration::from_secs(5))?;
        (r.status == 503)
            .then_some(())
            .ok_or(format!("{} {}", r.status, r.body))
    });
    wait_until("the page to show it disabled", WAIT, || {
        let row = browser.text(&format!("#node-{}", NODES[target]))?;
        row.contains("disabled").then_some(()).ok_or(row)
    });
    wait_until("the event on the page", WAIT, || {
        let events = browser.text("#events-kv")?;
        events
            .contains("disabled: disabled from the console")
            .then_some(())
            .ok_or(events)
    });

    // The log page lists the updates, newest first.
    browser.go(&format!("{}services/kv/log", console(target)));
    let table = browser.text("table").expect("the log table");
    assert!(table.contains("/kv/c4") && table.contains("PUT"), "{table}");
    // Every node's digest of the newest update, all equal.
    let api = format!("{}api/services/kv/log", console(target));
    wait_until("every node's digest of the newest update", WAIT, || {
        let r = call("GET", &api, &[], None, Duration::from_secs(5))?;
        let v: Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
        let newest = v["entries"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["kind"] == "updates"))
            .cloned()
            .ok_or("no update in the log")?;
        let digests: Vec<&Value> = newest["digests"]
            .as_object()
            .map(|m| m.values().collect())
            .unwrap_or_default();
        (digests.len() == 3
            && digests.iter().all(|d| *d == digests[0])
            && newest["chosen_at"]
                .as_str()
                .is_some_and(|t| t.ends_with("UTC")))
        .then_some(())
        .ok_or(newest.to_string())
    });

    // The leader's console knows every node's progress: the screenshot.
    let leader_index = NODES.iter().position(|n| *n == leader).expect("a node");
    browser.go(&console(leader_index));
    wait_until("the leader's view of the disabled node", WAIT, || {
        let row = browser.text(&format!("#node-{}", NODES[target]))?;
        row.contains("unfit").then_some(()).ok_or(row)
    });
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images/console.png");
    std::fs::create_dir_all(out.parent().expect("a folder")).expect("docs/images");
    std::fs::write(&out, png).expect("write the screenshot");
}

/// A page of another site open in a browser on a node's machine cannot
/// act through the "loopback without a token" rule (nor with a token):
/// the browser names its origin, and ordo refuses a foreign one.
#[test]
fn admin_actions_from_a_page_of_another_origin_are_refused() {
    let c = Cluster::start(Options {
        console: true,
        ..Options::default()
    });
    let console = c.nodes[1].console.expect("a console");
    let disable = format!("http://{console}/_ordo/admin/services/kv/disable?reason=csrf");
    let readyz = c.nodes[1].url("/readyz");
    let r = call(
        "POST",
        &disable,
        &[("origin", "http://evil.example")],
        None,
        Duration::from_secs(5),
    )
    .expect("an answer");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.body.contains("another origin"), "{}", r.body);
    assert_eq!(get(&readyz).status, 200, "nothing changed");
    // DNS rebinding: a foreign name pointed at 127.0.0.1, so that Origin
    // and Host agree. Without a token, only loopback names may act.
    let rebound = format!("evil.example:{}", console.port());
    let r = call(
        "POST",
        &disable,
        &[("host", &rebound), ("origin", &format!("http://{rebound}"))],
        None,
        Duration::from_secs(5),
    )
    .expect("an answer");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(get(&readyz).status, 200, "nothing changed");
    // The console's own page (same origin), on this machine, may.
    let own = format!("http://{console}");
    let r = call(
        "POST",
        &disable,
        &[("origin", &own)],
        None,
        Duration::from_secs(5),
    )
    .expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    wait_until("the node to be disabled", WAIT, || {
        let r = call("GET", &readyz, &[], None, Duration::from_secs(5))?;
        (r.status == 503).then_some(()).ok_or(r.status.to_string())
    });
}
