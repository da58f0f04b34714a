//! Resource keys: which updates a service lets the applier run side by
//! side.
//!
//! A service may declare that its updates to different resources commute
//! (`resource_key` in its configuration): applied in any order relative
//! to each other they leave the same state and give the same answers.
//! The applier then runs updates with unrelated keys concurrently and
//! keeps every pair of related keys in slot order (parallel state-machine
//! replication, as in CBASE: Kotla and Dahlin, DSN 2004).
//!
//! A key is a path, as a list of segments, cut to the configured depth.
//! Paths are hierarchical in the services this is for (WebDAV, most REST
//! APIs): a `DELETE` of a collection touches every member. So two keys
//! are related when one is a prefix of the other, segment by segment, not
//! only when they are equal: `/a` orders against `/a/b` and `/a/b/c`, and
//! `/a/b` and `/a/c` are free of each other. WebDAV's `MOVE` and `COPY`
//! name a second resource in `Destination`; it is a key too.
//!
//! Anything ordo cannot place with certainty (a payload that does not
//! decode, a path with `.` or `..` segments or an encoded `/`, a
//! `Destination` that is not a path) is a barrier: it orders against
//! every update. That is always safe; it only costs concurrency.

use crate::http::request::{ProxiedRequest, header};
use crate::paxos::ballot::Update;
use std::fmt;
use std::sync::Arc;

/// What one update touches, for ordering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touches {
    /// Orders against every update before and after it.
    Everything,
    /// These resources (one or two paths), each in `/a/b/` form: every
    /// segment followed by `/`, so that a prefix test is a segment test.
    Paths(Vec<String>),
}

/// The key rule of a service: how a path names a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// Only the first `depth` segments name the resource (`None`: all).
    pub depth: Option<u32>,
}

impl PathRule {
    /// The key of `path_and_query` (origin form), or `None` if ordo
    /// cannot be sure which resource it names.
    pub fn key(&self, path_and_query: &str) -> Option<String> {
        let path = path_and_query
            .split(['?', '#'])
            .next()
            .filter(|p| p.starts_with('/'))?;
        let mut key = String::with_capacity(path.len() + 1);
        key.push('/');
        let limit = self.depth.map_or(usize::MAX, |d| d as usize);
        for seg in path.split('/').filter(|s| !s.is_empty()).take(limit) {
            key.push_str(&segment(seg)?);
            key.push('/');
        }
        Some(key)
    }

    /// What the encoded request `payload` touches.
    pub fn touches(&self, payload: &[u8]) -> Touches {
        let Ok(head) = ProxiedRequest::decode_head(payload) else {
            return Touches::Everything;
        };
        let Some(own) = self.key(&head.path_and_query) else {
            return Touches::Everything;
        };
        let named = |name: &str| {
            head.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .count()
        };
        // Two `Destination`s: which one the backend takes is its own
        // business. A tagged `If` (RFC 4918 §10.4) makes the request
        // depend on another resource's lock state.
        let tagged_if = header(&head.headers, "if").is_some_and(|v| v.contains(&b'<'));
        if named("destination") > 1 || tagged_if {
            return Touches::Everything;
        }
        let mut paths = vec![own];
        if let Some(dest) = header(&head.headers, "destination") {
            let Some(key) = std::str::from_utf8(dest)
                .ok()
                .and_then(origin_form)
                .and_then(|p| self.key(p))
            else {
                return Touches::Everything;
            };
            paths.push(key);
        }
        Touches::Paths(paths)
    }
}

/// One segment as the resource's name: whatever spellings a backend may
/// take for the same resource get the same name, and a segment it may
/// resolve elsewhere gives none. Merging two names only costs
/// concurrency; splitting one name in two would break the order, so every
/// doubt merges: matrix parameters (`;v=1`) are cut, percent-encoding is
/// decoded (invalid UTF-8 becomes U+FFFD), and case is folded.
fn segment(raw: &str) -> Option<String> {
    let raw = raw.split(';').next().unwrap_or_default();
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    let name = String::from_utf8_lossy(&out).to_lowercase();
    // RFC 3986 §5.2.4 dot segments, and separators a backend may see
    // once decoded (`%2F`, and `\\` on some servers).
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
        return None;
    }
    Some(name)
}

/// The path of a `Destination` value: an absolute URI (RFC 4918 §10.3)
/// or, as some clients send, an absolute path.
fn origin_form(uri: &str) -> Option<&str> {
    if uri.starts_with('/') {
        return Some(uri);
    }
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))?;
    rest.find('/').map(|i| &rest[i..]).or(Some("/"))
}

/// Whether keys `a` and `b` (in `/a/b/` form) are related: equal, or one
/// contains the other.
pub fn related(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// How the applier learns what an update touches. `None` everywhere: a
/// service that did not declare a rule, applied strictly in slot order.
#[derive(Clone, Default)]
pub struct Resources {
    touches: Option<TouchesFn>,
}

type TouchesFn = Arc<dyn Fn(&Update) -> Touches + Send + Sync>;

impl Resources {
    /// Strict slot order: every update is a barrier.
    pub fn sequential() -> Resources {
        Resources { touches: None }
    }

    /// Keys from the HTTP request in each payload, by `rule`.
    pub fn by_path(rule: PathRule) -> Resources {
        Resources::custom(move |u: &Update| rule.touches(&u.payload))
    }

    /// Keys by any function of the update (the simulator's operations).
    pub fn custom(f: impl Fn(&Update) -> Touches + Send + Sync + 'static) -> Resources {
        Resources {
            touches: Some(Arc::new(f)),
        }
    }

    pub fn is_sequential(&self) -> bool {
        self.touches.is_none()
    }

    pub fn touches(&self, u: &Update) -> Touches {
        match &self.touches {
            Some(f) => f(u),
            None => Touches::Everything,
        }
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_sequential() {
            "Resources::sequential"
        } else {
            "Resources::keyed"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::ProxiedRequest;
    use bytes::Bytes;

    fn payload(method: &str, path: &str, headers: &[(&str, &str)]) -> Bytes {
        ProxiedRequest {
            method: method.into(),
            path_and_query: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: Bytes::from_static(b"body"),
        }
        .encode()
    }

    const ALL: PathRule = PathRule { depth: None };

    #[test]
    fn keys_are_segment_paths_without_query() {
        assert_eq!(ALL.key("/kv/a?x=1").as_deref(), Some("/kv/a/"));
        assert_eq!(ALL.key("/KV/%41;v=2").as_deref(), Some("/kv/a/"));
        assert_eq!(ALL.key("/a%20b").as_deref(), Some("/a b/"));
        assert_eq!(ALL.key("//kv///a/").as_deref(), Some("/kv/a/"));
        assert_eq!(ALL.key("/").as_deref(), Some("/"));
        let two = PathRule { depth: Some(2) };
        assert_eq!(two.key("/a/b/c/d").as_deref(), Some("/a/b/"));
        assert_eq!(two.key("/a").as_deref(), Some("/a/"));
    }

    #[test]
    fn paths_a_backend_could_resolve_elsewhere_are_barriers() {
        for p in [
            "/a/../b",
            "/a/./b",
            "/a%2Fb",
            "/%2e%2e/b",
            "/a\\b",
            "/;x",
            "*",
            "",
        ] {
            assert_eq!(ALL.key(p), None, "{p}");
        }
    }

    #[test]
    fn related_is_a_segment_prefix_not_a_string_prefix() {
        assert!(related("/a/", "/a/b/"));
        assert!(related("/a/b/", "/a/"));
        assert!(related("/", "/x/"));
        assert!(related("/a/b/", "/a/b/"));
        assert!(!related("/a/", "/ab/"));
        assert!(!related("/a/b/", "/a/c/"));
    }

    #[test]
    fn a_move_touches_its_destination() {
        let p = payload(
            "MOVE",
            "/dav/a.txt",
            &[("Destination", "http://ordo.example:8080/dav/b.txt")],
        );
        assert_eq!(
            ALL.touches(&p),
            Touches::Paths(vec!["/dav/a.txt/".into(), "/dav/b.txt/".into()])
        );
        for headers in [
            &[("Destination", "mailto:x")][..],
            &[("Destination", "/dav/b"), ("destination", "/dav/c")],
            &[("If", "</dav/b> (<opaquelocktoken:1>)")],
        ] {
            let odd = payload("COPY", "/dav/a", headers);
            assert_eq!(ALL.touches(&odd), Touches::Everything, "{headers:?}");
        }
        assert_eq!(ALL.touches(b"\x09junk"), Touches::Everything);
    }
}
