//! The update payload (an HTTP request as ordo proposes it) and the
//! stored form of a backend's response, with their encodings, and the
//! hop-by-hop header rules of RFC 9110 §7.6.1.
//!
//! Both types are encoded with postcard behind a one-byte format tag.
//! The request encoding is part of the replicated log: every node must
//! decode a chosen payload the same way, so a new format gets a new tag
//! and the old one stays decodable.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A header as ordo carries it: the name (any case; compared without
/// case) and the raw value bytes.
pub type Header = (String, Vec<u8>);

/// Format tag of the first (current) [`ProxiedRequest`] encoding.
const REQUEST_V1: u8 = 1;
/// Format tag of the first (current) [`StoredResponse`] encoding.
const RESPONSE_V1: u8 = 1;

/// Header fields that describe one connection, not the message
/// (RFC 9110 §7.6.1), plus `Proxy-Connection` (obsolete, still sent)
/// and the proxy authentication fields, which belong to the hop to ordo.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Fields ordo sets itself on the next hop: `Host` names the backend,
/// `Content-Length` is recomputed from the body actually sent.
pub const RECOMPUTED: &[&str] = &["host", "content-length"];

/// Why a payload did not decode. Deterministic: it depends only on the
/// bytes, so every node reaches the same verdict for a chosen payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("unknown {what} format tag {tag}")]
    UnknownFormat { what: &'static str, tag: u8 },
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("{extra} bytes after the end of the {what}")]
    Trailing { what: &'static str, extra: usize },
}

/// One client update as proposed: the whole HTTP request with its
/// end-to-end headers (see [`strip_hop_by_hop`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiedRequest {
    pub method: String,
    /// The request target in origin form: `/path?query`.
    pub path_and_query: String,
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl ProxiedRequest {
    /// The payload bytes of an `Update`.
    pub fn encode(&self) -> Bytes {
        encode_tagged(REQUEST_V1, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<ProxiedRequest, DecodeError> {
        decode_tagged("request", REQUEST_V1, bytes)
    }

    /// Method, target and headers of an encoded request, without copying
    /// its body (the applier's scheduler looks at every update).
    pub fn decode_head(bytes: &[u8]) -> Result<RequestHead, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if tag != REQUEST_V1 {
            return Err(DecodeError::UnknownFormat {
                what: "request",
                tag,
            });
        }
        // The fields come in declaration order; the body is left unread.
        let (head, _body) =
            postcard::take_from_bytes::<RequestHead>(rest).map_err(|e| DecodeError::Malformed {
                what: "request",
                why: e.to_string(),
            })?;
        Ok(head)
    }
}

/// The leading fields of a [`ProxiedRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RequestHead {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<Header>,
}

/// A backend's response as the applier reports it: end-to-end headers
/// and the whole body. The status travels beside it (in
/// `BackendReply::Response` and `Command::Answer`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl StoredResponse {
    /// A response made by ordo itself: a plain-text body saying why.
    pub fn text(message: impl Into<String>) -> StoredResponse {
        let message = message.into();
        StoredResponse {
            headers: vec![(
                "content-type".to_string(),
                b"text/plain; charset=utf-8".to_vec(),
            )],
            body: Bytes::from(message.into_bytes()),
        }
    }

    pub fn encode(&self) -> Bytes {
        encode_tagged(RESPONSE_V1, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredResponse, DecodeError> {
        decode_tagged("response", RESPONSE_V1, bytes)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header(&self.headers, name)
    }
}

/// The first value of header `name` (any case) in `headers`.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn encode_tagged<T: Serialize>(tag: u8, value: &T) -> Bytes {
    // Serialising into memory cannot fail: every field is a string, a
    // byte vector or a sequence of them (no maps, no floats).
    match postcard::to_extend(value, vec![tag]) {
        Ok(out) => Bytes::from(out),
        Err(e) => unreachable!("postcard into memory failed: {e}"),
    }
}

fn decode_tagged<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    expected: u8,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if tag != expected {
        return Err(DecodeError::UnknownFormat { what, tag });
    }
    let (value, extra) =
        postcard::take_from_bytes::<T>(rest).map_err(|e| DecodeError::Malformed {
            what,
            why: e.to_string(),
        })?;
    if !extra.is_empty() {
        return Err(DecodeError::Trailing {
            what,
            extra: extra.len(),
        });
    }
    Ok(value)
}

/// The field names listed in `Connection` headers, lower-cased: these are
/// hop-by-hop too (RFC 9110 §7.6.1).
fn connection_options(headers: &[Header]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Remove the hop-by-hop fields (those of [`HOP_BY_HOP`] and every field
/// a `Connection` header names) and the fields ordo recomputes
/// ([`RECOMPUTED`]), keeping the rest in order.
pub fn strip_hop_by_hop(headers: &mut Vec<Header>) {
    let named = connection_options(headers);
    headers.retain(|(name, _)| {
        let drop = HOP_BY_HOP
            .iter()
            .chain(RECOMPUTED)
            .any(|h| name.eq_ignore_ascii_case(h))
            || named.iter().any(|t| name.eq_ignore_ascii_case(t));
        !drop
    });
}

/// True if `name` is one of the fixed hop-by-hop or recomputed fields
/// (not counting those a `Connection` header names).
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .chain(RECOMPUTED)
        .any(|h| name.eq_ignore_ascii_case(h))
}

impl fmt::Display for ProxiedRequest {
    /// `METHOD /path?query (N headers, M bytes)`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({} headers, {} bytes)",
            self.method,
            self.path_and_query,
            self.headers.len(),
            self.body.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(name: &str, value: &str) -> Header {
        (name.to_string(), value.as_bytes().to_vec())
    }

    fn sample() -> ProxiedRequest {
        ProxiedRequest {
            method: "PUT".into(),
            path_and_query: "/kv/a?x=1&y=%20".into(),
            headers: vec![
                h("Content-Type", "application/json"),
                ("X-Bin".into(), vec![0, 255, 128, 10]),
            ],
            body: Bytes::from_static(b"{\"v\":1}"),
        }
    }

    #[test]
    fn request_round_trips() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes[0], REQUEST_V1);
        assert_eq!(ProxiedRequest::decode(&bytes), Ok(r));
        let empty = ProxiedRequest::default();
        assert_eq!(ProxiedRequest::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn response_round_trips() {
        let r = StoredResponse {
            headers: vec![
                h("ETag", "\"x\""),
                h("Set-Cookie", "a=1"),
                h("set-cookie", "b=2"),
            ],
            body: Bytes::from_static(&[1, 2, 3, 0, 255]),
        };
        assert_eq!(StoredResponse::decode(&r.encode()), Ok(r.clone()));
        assert_eq!(r.header("etag"), Some(&b"\"x\""[..]));
        assert_eq!(r.header("SET-COOKIE"), Some(&b"a=1"[..]));
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        assert_eq!(ProxiedRequest::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            ProxiedRequest::decode(&[9, 1, 2]),
            Err(DecodeError::UnknownFormat {
                what: "request",
                tag: 9
            })
        );
        let good = sample().encode();
        let cut = &good[..good.len() - 3];
        assert!(matches!(
            ProxiedRequest::decode(cut),
            Err(DecodeError::Malformed { .. })
        ));
        let mut long = good.to_vec();
        long.extend_from_slice(b"xx");
        assert_eq!(
            ProxiedRequest::decode(&long),
            Err(DecodeError::Trailing {
                what: "request",
                extra: 2
            })
        );
        // A request is not a response.
        assert!(StoredResponse::decode(b"").is_err());
    }

    #[test]
    fn hop_by_hop_fields_go_end_to_end_stay() {
        let mut headers = vec![
            h("Host", "client.example"),
            h("Connection", "keep-alive, X-Private ,  x-other"),
            h("connection", "close"),
            h("Keep-Alive", "timeout=5"),
            h("Content-Type", "application/json"),
            h("Proxy-Connection", "keep-alive"),
            h("TE", "trailers"),
            h("Trailer", "Expires"),
            h("Transfer-Encoding", "chunked"),
            h("Upgrade", "h2c"),
            h("Proxy-Authorization", "Basic xyz"),
            h("Proxy-Authenticate", "Basic"),
            h("Content-Length", "7"),
            h("X-Private", "secret"),
            h("X-OTHER", "1"),
            h("Authorization", "Bearer t"),
            h("X-Keep", "1"),
            h("x-keep", "2"),
        ];
        strip_hop_by_hop(&mut headers);
        assert_eq!(
            headers,
            vec![
                h("Content-Type", "application/json"),
                h("Authorization", "Bearer t"),
                h("X-Keep", "1"),
                h("x-keep", "2"),
            ]
        );
    }

    fn header_strategy() -> impl Strategy<Value = Header> {
        (
            "[A-Za-z][A-Za-z0-9-]{0,20}",
            proptest::collection::vec(any::<u8>(), 0..40),
        )
    }

    fn request_strategy() -> impl Strategy<Value = ProxiedRequest> {
        (
            ".{0,12}",
            ".{0,60}",
            proptest::collection::vec(header_strategy(), 0..12),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(method, path_and_query, headers, body)| ProxiedRequest {
                method,
                path_and_query,
                headers,
                body: Bytes::from(body),
            })
    }

    proptest! {
        #[test]
        fn any_request_round_trips(r in request_strategy()) {
            prop_assert_eq!(ProxiedRequest::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn any_response_round_trips(
            headers in proptest::collection::vec(header_strategy(), 0..12),
            body in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let r = StoredResponse { headers, body: Bytes::from(body) };
            prop_assert_eq!(StoredResponse::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ProxiedRequest::decode(&bytes);
            let _ = StoredResponse::decode(&bytes);
            // With the right tag in front, still only an error or a value.
            let mut tagged = vec![REQUEST_V1];
            tagged.extend_from_slice(&bytes);
            if let Ok(r) = ProxiedRequest::decode(&tagged) {
                prop_assert_eq!(ProxiedRequest::decode(&r.encode()), Ok(r));
            }
        }

        #[test]
        fn stripping_leaves_only_end_to_end_fields_in_order(
            mut headers in proptest::collection::vec(
                prop_oneof![
                    header_strategy(),
                    proptest::sample::select(HOP_BY_HOP).prop_map(|n| (n.to_uppercase(), b"x".to_vec())),
                    Just(("Connection".to_string(), b"x-a, X-B".to_vec())),
                    Just(("X-A".to_string(), b"1".to_vec())),
                ],
                0..20,
            )
        ) {
            let before = headers.clone();
            let named = connection_options(&headers);
            strip_hop_by_hop(&mut headers);
            for (n, _) in &headers {
                prop_assert!(!is_hop_by_hop(n), "{n} kept");
                prop_assert!(!named.contains(&n.to_ascii_lowercase()), "{n} kept");
            }
            // The kept fields are a subsequence of the input.
            let mut it = before.iter();
            for kept in &headers {
                prop_assert!(it.any(|b| b == kept));
            }
        }
    }
}
