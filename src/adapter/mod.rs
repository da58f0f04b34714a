//! Adapters: what a kind of service needs so that it proxies well.
//!
//! ordo passes requests through unchanged, but some things name the place
//! they were sent to, and that place differs between the client's side
//! (ordo's address, the *presented* root) and each node's backend (its
//! own address, maybe its own account). An [`Adapter`] maps between the
//! two, on both paths that reach a backend:
//!
//! - the **read path** (the gateway streams a read from the local
//!   backend): [`Adapter::to_backend`] on the request,
//!   [`Adapter::answer_headers`] and [`Adapter::answer_body`] on the
//!   answer, whose body is rewritten as it streams;
//! - the **apply path** (every node's applier sends each chosen update to
//!   its own backend): the same three, with the answer rewritten *before*
//!   it is digested, so that answers that differ only by each backend's
//!   own address still agree across nodes.
//!
//! [`Adapter::authenticate`] runs once, on the node that took the
//! request, before anything is read from its body or proposed: a request
//! it refuses never reaches the log.
//!
//! What an adapter does must depend only on the request, the [`Roots`]
//! and the node's configuration, never on time or chance, except where a
//! backend wants it (a signature's date): an update is rewritten on every
//! node and the answers compared.
//!
//! The kinds: [`http::Http`] (pass-through, with the addresses in
//! `Location`, `Content-Location` and `Destination` mapped) and
//! [`azure::AzureStorage`] (an account of ordo's own in front of each
//! node's real one) and [`odata::OData`] (absolute URIs in feeds).

pub mod azure;
pub mod http;
pub mod odata;
pub mod rewrite;

use crate::http::request::{Header, ProxiedRequest};
use rewrite::Replace;

/// A request as an adapter sees it before the backend does.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    pub method: &'a str,
    /// As the client sent it (on the apply path: as it was proposed).
    pub path_and_query: &'a str,
    pub headers: &'a [Header],
    /// The body's announced length (`Content-Length`), which the end-to-end
    /// `headers` leave out.
    pub content_length: Option<u64>,
}

/// What a client asked, for rewriting the answer: as the client sent it
/// (on the apply path: as it was proposed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub method: String,
    pub path_and_query: String,
}

/// A request an adapter refuses, and what the client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

/// The two roots an adapter maps between, each `scheme://authority`
/// with an optional path, without a trailing `/`: a URL under one names
/// the same resource as the URL with the same rest under the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// Where clients send requests: the service's `presented_url`, or the
    /// scheme and `Host` of the client's request (with the service's
    /// prefix when it is stripped). `None` when neither is known (a
    /// request without `Host`): absolute URLs are then left alone.
    pub presented: Option<String>,
    /// This node's backend.
    pub backend: String,
}

impl Roots {
    /// `url` (absolute, or an absolute path) under the presented root, as
    /// the same place under the backend's; `None` if it is not under it.
    pub fn to_backend(&self, url: &str) -> Option<String> {
        swap(url, self.presented.as_deref()?, &self.backend)
    }

    /// `url` under the backend's root as the same place under the
    /// presented one; `None` if it is not under it.
    pub fn to_presented(&self, url: &str) -> Option<String> {
        swap(url, &self.backend, self.presented.as_deref()?)
    }
}

/// `scheme://authority` and the path of a root.
pub fn split_root(root: &str) -> (&str, &str) {
    let after = root.find("://").map_or(0, |i| i + 3);
    match root[after..].find('/') {
        Some(j) => root.split_at(after + j),
        None => (root, ""),
    }
}

/// `url` with root `from` replaced by `to`, matching whole segments (the
/// scheme and authority without regard to case). An absolute path is
/// mapped by the roots' paths.
fn swap(url: &str, from: &str, to: &str) -> Option<String> {
    let (from_origin, from_path) = split_root(from);
    let (to_origin, to_path) = split_root(to);
    let rest = if url.starts_with('/') && !url.starts_with("//") {
        let rest = url.strip_prefix(from_path)?;
        return at_boundary(rest).then(|| format!("{to_path}{rest}"));
    } else {
        let head = url.get(..from_origin.len())?;
        if !head.eq_ignore_ascii_case(from_origin) {
            return None;
        }
        url[from_origin.len()..].strip_prefix(from_path)?
    };
    at_boundary(rest).then(|| format!("{to_origin}{to_path}{rest}"))
}

/// Whether what follows a matched root starts a new segment.
fn at_boundary(rest: &str) -> bool {
    rest.is_empty() || rest.starts_with(['/', '?', '#'])
}

/// How a node finds the presented root of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presenting {
    /// The service's `presented_url`, if configured.
    pub url: Option<String>,
    /// `http` or `https`: the client port's.
    pub scheme: &'static str,
    /// The part of the path the backend does not see (`strip_prefix`).
    pub stripped: String,
}

impl Presenting {
    /// The presented root of a request with this `Host` header.
    pub fn root(&self, host: Option<&[u8]>) -> Option<String> {
        if let Some(url) = &self.url {
            return Some(url.clone());
        }
        let host = std::str::from_utf8(host?).ok()?.trim();
        valid_authority(host).then(|| {
            let prefix = self.stripped.trim_end_matches('/');
            format!("{}://{host}{prefix}", self.scheme)
        })
    }
}

/// A `Host` value that can stand in a URL: a name or address and a port,
/// nothing that would end the authority or start a path.
fn valid_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 261
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// What fixes up a kind of service; see the module docs. The defaults do
/// nothing.
pub trait Adapter: Send + Sync + std::fmt::Debug {
    /// The kind's name in the configuration (`adapter = "..."`).
    fn kind(&self) -> &'static str;

    /// Whether the client may make this request; on the node that took
    /// it, before its body is read or anything is proposed.
    fn authenticate(&self, _req: &Head<'_>) -> Result<(), Refusal> {
        Ok(())
    }

    /// The request as this node's backend must get it. Its target is
    /// already the backend's path (the backend root's path and the rest);
    /// hop-by-hop fields are gone. `Err` is a final answer (400) that
    /// must be the same on every node: it may depend on the request only.
    fn to_backend(&self, _roots: &Roots, _req: &mut ProxiedRequest) -> Result<(), String> {
        Ok(())
    }

    /// The answer's headers as the client must see them.
    fn answer_headers(&self, _roots: &Roots, _asked: &Asked, _headers: &mut Vec<Header>) {}

    /// How the answer's body must be rewritten, if at all, given the
    /// request and the answer's headers.
    fn answer_body(&self, _roots: &Roots, _asked: &Asked, _headers: &[Header]) -> Option<Replace> {
        None
    }

    /// An update's answer body (rewritten, whole) as it is kept and
    /// digested: without what differs between backends by nature and
    /// means nothing to the client (a request id, a time in an error
    /// message). Apply path only.
    fn settle_answer(&self, _status: u16, body: bytes::Bytes) -> bytes::Bytes {
        body
    }
}

/// The adapter a service's configuration names.
pub fn for_service(s: &crate::config::Service) -> Result<std::sync::Arc<dyn Adapter>, String> {
    Ok(match s.adapter {
        crate::config::Adapter::Http => std::sync::Arc::new(http::Http),
        crate::config::Adapter::Odata => std::sync::Arc::new(odata::OData),
        crate::config::Adapter::AzureStorage => {
            let a = s
                .azure
                .as_ref()
                .ok_or("adapter \"azure-storage\" needs an [services.azure] table")?;
            std::sync::Arc::new(azure::AzureStorage {
                presented: azure::Account::new(&a.presented_account, &a.presented_key)?,
                real: azure::Account::new(&a.account, &a.key)?,
            })
        }
    })
}

/// Whether an answer's content type says it is a document a service
/// writes itself (XML, Atom, JSON): the bodies adapters may rewrite.
pub fn is_document(headers: &[Header]) -> bool {
    let kind = crate::http::request::header(headers, "content-type").unwrap_or(b"");
    [b"xml".as_slice(), b"json"]
        .iter()
        .any(|t| kind.windows(t.len()).any(|w| w.eq_ignore_ascii_case(t)))
}

/// Replace the value of every header named `name` for which `f` gives a
/// new one.
pub fn map_header(headers: &mut [Header], name: &str, f: impl Fn(&str) -> Option<String>) {
    for (n, v) in headers.iter_mut() {
        if !n.eq_ignore_ascii_case(name) {
            continue;
        }
        if let Some(new) = std::str::from_utf8(v).ok().and_then(|s| f(s.trim())) {
            *v = new.into_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(presented: &str, backend: &str) -> Roots {
        Roots {
            presented: Some(presented.into()),
            backend: backend.into(),
        }
    }

    #[test]
    fn urls_map_between_roots_by_whole_segments() {
        let r = roots("https://movies.example", "http://10.0.0.5:8000");
        assert_eq!(
            r.to_presented("http://10.0.0.5:8000/movies/1?x=1")
                .as_deref(),
            Some("https://movies.example/movies/1?x=1")
        );
        assert_eq!(
            r.to_presented("HTTP://10.0.0.5:8000").as_deref(),
            Some("https://movies.example")
        );
        // Another port is another server.
        assert_eq!(r.to_presented("http://10.0.0.5:80001/x"), None);
        assert_eq!(r.to_presented("http://elsewhere/x"), None);
        assert_eq!(
            r.to_backend("https://movies.example/movies/2").as_deref(),
            Some("http://10.0.0.5:8000/movies/2")
        );
        // Paths are mapped by the roots' paths (both empty here).
        assert_eq!(r.to_presented("/movies/1").as_deref(), Some("/movies/1"));
    }

    #[test]
    fn roots_with_paths_map_paths_too() {
        let r = roots(
            "http://ordo:8080/mymovies",
            "http://127.0.0.1:10000/devstoreaccount1",
        );
        assert_eq!(
            r.to_presented("http://127.0.0.1:10000/devstoreaccount1/c/b")
                .as_deref(),
            Some("http://ordo:8080/mymovies/c/b")
        );
        assert_eq!(
            r.to_backend("/mymovies/c/b").as_deref(),
            Some("/devstoreaccount1/c/b")
        );
        // `/mymoviesX` is not under `/mymovies`.
        assert_eq!(r.to_backend("/mymoviesX/c"), None);
        assert_eq!(r.to_backend("http://ordo:8080/other/c"), None);
    }

    #[test]
    fn without_a_presented_root_nothing_maps() {
        let r = Roots {
            presented: None,
            backend: "http://b:1".into(),
        };
        assert_eq!(r.to_presented("http://b:1/x"), None);
        assert_eq!(r.to_backend("/x"), None);
    }

    #[test]
    fn the_presented_root_comes_from_config_or_from_host() {
        let p = Presenting {
            url: None,
            scheme: "https",
            stripped: "/mymovies".into(),
        };
        assert_eq!(
            p.root(Some(b"ordo.example:8443")).as_deref(),
            Some("https://ordo.example:8443/mymovies")
        );
        // A Host that would break out of the authority is not used.
        assert_eq!(p.root(Some(b"evil.example/x")), None);
        assert_eq!(p.root(Some(b"a b")), None);
        assert_eq!(p.root(None), None);
        let fixed = Presenting {
            url: Some("https://movies.example".into()),
            ..p
        };
        assert_eq!(fixed.root(None).as_deref(), Some("https://movies.example"));
    }
}
