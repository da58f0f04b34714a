//! The deployment guides stay true: the Kubernetes configuration template
//! is a valid node configuration for every pod, and the commands the
//! systemd unit and the StatefulSet run are ordo's.

use std::process::Command;

fn ordo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .output()
        .expect("ordo runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The `ordo.toml.in` block of the ConfigMap in `ordo.yaml`.
fn template() -> String {
    let yaml = std::fs::read_to_string("docs/deploy/kubernetes/ordo.yaml").expect("ordo.yaml");
    let mut lines = yaml.lines().skip_while(|l| !l.contains("ordo.toml.in: |"));
    lines.next().expect("the ordo.toml.in block");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_template_is_a_valid_configuration_for_every_pod() {
    let t = template();
    for pod in ["ordo-0", "ordo-1", "ordo-2"] {
        let cfg = ordo::config::Config::parse(&t.replace("POD_NAME", pod))
            .unwrap_or_else(|e| panic!("{pod}: {e}\n{t}"));
        assert_eq!(cfg.node, pod);
        assert!(
            cfg.nodes[pod]
                .addr
                .starts_with(&format!("{pod}.ordo-peers."))
        );
    }
}

#[test]
fn the_guides_run_commands_that_exist() {
    let run = ordo(&["run", "--help"]);
    for flag in ["--config", "--init", "--log-format"] {
        assert!(run.contains(flag), "ordo run has no {flag}: {run}");
    }
    let unit = std::fs::read_to_string("docs/deploy/systemd/ordo.service").expect("unit");
    assert!(unit.contains("ordo run --config /etc/ordo/ordo.toml --log-format json"));
    let backend = ordo(&["demo-backend", "--help"]);
    for flag in ["--listen", "--data-file"] {
        assert!(backend.contains(flag), "{backend}");
    }
}
