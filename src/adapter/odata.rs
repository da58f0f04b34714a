//! The `odata` adapter: OData services (v2 to v4), which name their
//! entities by absolute URIs under the service root.
//!
//! A backend's feed names its own root (`<id>`, `<link href>` and
//! `xml:base` in Atom; `@odata.context`, `@odata.id`, `odata.id`, the
//! `...@odata.navigationLink`s and `__metadata.uri` in JSON; `Location`
//! and `OData-EntityId` in headers). A client that followed them would
//! bypass ordo, and the nodes' answers would differ by each backend's
//! address. So the backend's root is mapped to the presented one in the
//! answers, and the presented root back to each node's backend in what
//! clients send (`@odata.bind`, `__metadata.uri`, `Destination`): a
//! service refuses an entity it does not recognise as its own.
//!
//! Only Atom, XML and JSON bodies are rewritten, URL roots matched whole
//! (also in JSON's `\/` spelling).

use super::rewrite::Replace;
use super::{Adapter, Asked, Roots, http, is_document, map_header};
use crate::http::request::{Header, ProxiedRequest};

/// OData's header naming the entity a request made or changed (v4).
const ENTITY_ID: &str = "odata-entityid";

#[derive(Clone, Copy, Debug, Default)]
pub struct OData;

/// `from` root to `to` root, as written plainly and in JSON's escaped
/// form.
fn roots_replace(from: &str, to: &str) -> Option<Replace> {
    Replace::urls([
        (from.as_bytes().to_vec(), to.as_bytes().to_vec()),
        (
            from.replace('/', "\\/").into_bytes(),
            to.replace('/', "\\/").into_bytes(),
        ),
    ])
}

impl Adapter for OData {
    fn kind(&self) -> &'static str {
        "odata"
    }

    fn to_backend(&self, roots: &Roots, req: &mut ProxiedRequest) -> Result<(), String> {
        http::request_urls(roots, &mut req.headers);
        let Some(presented) = roots.presented.as_deref() else {
            return Ok(());
        };
        if req.body.is_empty() || !is_document(&req.headers) {
            return Ok(());
        }
        if let Some(body) =
            roots_replace(presented, &roots.backend).and_then(|r| r.whole(&req.body))
        {
            req.body = body;
        }
        Ok(())
    }

    fn answer_headers(&self, roots: &Roots, _asked: &Asked, headers: &mut Vec<Header>) {
        http::answer_urls(roots, headers);
        map_header(headers, ENTITY_ID, |v| roots.to_presented(v));
    }

    fn answer_body(&self, roots: &Roots, _asked: &Asked, headers: &[Header]) -> Option<Replace> {
        if !is_document(headers) {
            return None;
        }
        roots_replace(&roots.backend, roots.presented.as_deref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Roots {
        Roots {
            presented: Some("https://movies.example".into()),
            backend: "http://10.0.0.5:8000".into(),
        }
    }

    fn asked() -> Asked {
        Asked {
            method: "GET".into(),
            path_and_query: "/odata/Movies".into(),
        }
    }

    fn h(n: &str, v: &str) -> Header {
        (n.into(), v.as_bytes().to_vec())
    }

    #[test]
    fn answers_name_the_presented_root_in_atom_and_json() {
        let json = br#"{"@odata.context":"http://10.0.0.5:8000/odata/$metadata#Movies","value":[{"@odata.id":"http://10.0.0.5:8000/odata/Movies(1)","__metadata":{"uri":"http:\/\/10.0.0.5:8000\/odata\/Movies(1)"},"Other":"http://10.0.0.5:80001/x"}]}"#;
        let r = OData
            .answer_body(&roots(), &asked(), &[h("Content-Type", "application/json")])
            .expect("rewritten");
        assert_eq!(
            String::from_utf8_lossy(&r.whole(json).expect("changed")),
            r#"{"@odata.context":"https://movies.example/odata/$metadata#Movies","value":[{"@odata.id":"https://movies.example/odata/Movies(1)","__metadata":{"uri":"https:\/\/movies.example\/odata\/Movies(1)"},"Other":"http://10.0.0.5:80001/x"}]}"#
        );
        let atom = br#"<feed xml:base="http://10.0.0.5:8000/odata/"><id>http://10.0.0.5:8000/odata/Movies</id><link href="http://10.0.0.5:8000/odata/Movies(1)"/></feed>"#;
        let r = OData
            .answer_body(
                &roots(),
                &asked(),
                &[h("content-type", "application/atom+xml")],
            )
            .expect("rewritten");
        assert_eq!(
            String::from_utf8_lossy(&r.whole(atom).expect("changed")),
            r#"<feed xml:base="https://movies.example/odata/"><id>https://movies.example/odata/Movies</id><link href="https://movies.example/odata/Movies(1)"/></feed>"#
        );
        // Other content is the client's own.
        assert!(
            OData
                .answer_body(&roots(), &asked(), &[h("content-type", "text/plain")])
                .is_none()
        );
        let mut headers = vec![h("OData-EntityId", "http://10.0.0.5:8000/odata/Movies(2)")];
        OData.answer_headers(&roots(), &asked(), &mut headers);
        assert_eq!(
            headers,
            [h(
                "OData-EntityId",
                "https://movies.example/odata/Movies(2)"
            )]
        );
    }

    #[test]
    fn requests_name_each_nodes_backend() {
        let mut req = ProxiedRequest {
            method: "POST".into(),
            path_and_query: "/odata/Movies".into(),
            headers: vec![h("Content-Type", "application/json;odata.metadata=minimal")],
            body: bytes::Bytes::from_static(
                br#"{"Director@odata.bind":"https://movies.example/odata/People(1)"}"#,
            ),
        };
        OData.to_backend(&roots(), &mut req).expect("mapped");
        assert_eq!(
            &req.body[..],
            br#"{"Director@odata.bind":"http://10.0.0.5:8000/odata/People(1)"}"#
        );
    }
}
