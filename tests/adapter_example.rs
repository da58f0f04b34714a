//! The worked example of docs/adapters.md ("Writing an adapter"),
//! compiled and run; the page shows the code between the markers, and a
//! test keeps the two the same.

// docs:begin
use ordo::adapter::{Adapter, Asked, Roots, rewrite::Replace};
use ordo::http::request::{Header, header};

#[derive(Debug)]
struct SelfLinks;

impl Adapter for SelfLinks {
    fn kind(&self) -> &'static str {
        "self-links"
    }

    fn answer_body(&self, roots: &Roots, _asked: &Asked, headers: &[Header]) -> Option<Replace> {
        let json =
            header(headers, "content-type").is_some_and(|t| t.starts_with(b"application/json"));
        let presented = roots.presented.as_deref()?;
        json.then(|| {
            Replace::urls([(
                roots.backend.as_bytes().to_vec(),
                presented.as_bytes().to_vec(),
            )])
        })
        .flatten()
    }
}
// docs:end

#[test]
fn the_worked_example_rewrites_self_links() {
    let roots = Roots {
        presented: Some("https://api.example".into()),
        backend: "http://10.0.0.5:8000".into(),
    };
    let asked = Asked {
        method: "GET".into(),
        path_and_query: "/items/1".into(),
    };
    let json = [("content-type".to_string(), b"application/json".to_vec())];
    let r = SelfLinks
        .answer_body(&roots, &asked, &json)
        .expect("a JSON answer is rewritten");
    assert_eq!(
        r.whole(br#"{"self":"http://10.0.0.5:8000/items/1"}"#)
            .as_deref(),
        Some(&br#"{"self":"https://api.example/items/1"}"#[..])
    );
    let text = [("content-type".to_string(), b"text/plain".to_vec())];
    assert!(SelfLinks.answer_body(&roots, &asked, &text).is_none());
    assert_eq!(SelfLinks.kind(), "self-links");
}

#[test]
fn the_page_shows_this_code() {
    let here = include_str!("adapter_example.rs");
    let start = here.find("// docs:begin\n").expect("begin") + "// docs:begin\n".len();
    let end = here.find("// docs:end").expect("end");
    let page = include_str!("../docs/adapters.md");
    assert!(
        page.contains(&format!("```rust\n{}```", &here[start..end])),
        "docs/adapters.md's example differs from tests/adapter_example.rs"
    );
}
