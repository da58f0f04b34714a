//! The `http` adapter: pass-through, with the addresses that name a
//! resource mapped between the presented root and the backend's.
//!
//! - `Location` and `Content-Location` in answers name the backend's own
//!   address; a client that followed them would bypass ordo (and reach a
//!   backend it may not be able to reach at all). They are mapped to the
//!   presented root.
//! - `Destination` (WebDAV `COPY` and `MOVE`) names ordo's address, the
//!   one the client knows; each node's backend expects its own. It is
//!   mapped to the backend's root on every node.
//!
//! A URL under neither root is left as it is: it names somewhere else.

use super::{Adapter, Asked, Roots, map_header};
use crate::http::request::{Header, ProxiedRequest};

/// Request headers that name a resource of the service.
pub const REQUEST_URL_HEADERS: &[&str] = &["destination"];

/// Answer headers that name a resource of the service.
pub const ANSWER_URL_HEADERS: &[&str] = &["location", "content-location"];

#[derive(Clone, Copy, Debug, Default)]
pub struct Http;

impl Adapter for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn to_backend(&self, roots: &Roots, req: &mut ProxiedRequest) -> Result<(), String> {
        request_urls(roots, &mut req.headers);
        Ok(())
    }

    fn answer_headers(&self, roots: &Roots, _asked: &Asked, headers: &mut Vec<Header>) {
        answer_urls(roots, headers);
    }
}

/// Map [`REQUEST_URL_HEADERS`] to the backend's root.
pub fn request_urls(roots: &Roots, headers: &mut [Header]) {
    for name in REQUEST_URL_HEADERS {
        map_header(headers, name, |v| roots.to_backend(v));
    }
}

/// Map [`ANSWER_URL_HEADERS`] to the presented root.
pub fn answer_urls(roots: &Roots, headers: &mut [Header]) {
    for name in ANSWER_URL_HEADERS {
        map_header(headers, name, |v| roots.to_presented(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> Header {
        (n.into(), v.as_bytes().to_vec())
    }

    fn roots() -> Roots {
        Roots {
            presented: Some("http://127.0.0.1:7700".into()),
            backend: "http://127.0.0.1:7720".into(),
        }
    }

    #[test]
    fn answers_name_the_presented_address() {
        let mut headers = vec![
            h("Location", "http://127.0.0.1:7720/kv/new"),
            h("content-location", "http://127.0.0.1:7720/kv/new?v=2"),
            h("location", "https://elsewhere.example/x"),
            h("etag", "\"http://127.0.0.1:7720\""),
        ];
        let asked = Asked {
            method: "POST".into(),
            path_and_query: "/kv".into(),
        };
        Http.answer_headers(&roots(), &asked, &mut headers);
        assert_eq!(
            headers,
            vec![
                h("Location", "http://127.0.0.1:7700/kv/new"),
                h("content-location", "http://127.0.0.1:7700/kv/new?v=2"),
                h("location", "https://elsewhere.example/x"),
                h("etag", "\"http://127.0.0.1:7720\""),
            ]
        );
    }

    #[test]
    fn destination_names_the_backend_of_each_node() {
        let mut req = ProxiedRequest {
            method: "MOVE".into(),
            path_and_query: "/dav/a".into(),
            headers: vec![h("Destination", "http://127.0.0.1:7700/dav/b")],
            body: Default::default(),
        };
        Http.to_backend(&roots(), &mut req).expect("mapped");
        assert_eq!(
            req.headers,
            vec![h("Destination", "http://127.0.0.1:7720/dav/b")]
        );
    }
}
