//! The `azure-storage` adapter: Azure Blob storage behind ordo under an
//! account of ordo's own. (Not Queue: its answers carry message ids and
//! pop receipts each backend makes up, which no two nodes would agree on;
//! not Table, whose signatures differ.)
//!
//! Clients know the service by a *presented* account name and key that
//! the operator makes up; each node's backend is a real account (or an
//! Azurite) with its own name and key. So:
//!
//! - **authenticate** (the node that took the request): a request signed
//!   with `SharedKey` or `SharedKeyLite` must name the presented account
//!   and carry a signature made with the presented key over the request as
//!   the client sent it, dated within 15 minutes (as Azure wants); else
//!   403. An unsigned request passes as it is (the backend decides, as
//!   for a public container). Shared access signatures (`sig=`) are
//!   refused (403): no node could sign them again for its own account;
//!   and batches (`comp=batch`, 501): their parts are signed inside the
//!   body and answered with each backend's own ids.
//! - **to_backend** (every node, for its own backend): the signature is
//!   made again for this node's real account and key, over the request as
//!   the backend gets it, dated now (an update applied by a node that
//!   catches up hours later must not be refused as stale);
//!   `x-ms-copy-source` and `Destination`-like URLs are mapped to the
//!   backend's root.
//! - **answers**: `Location` and `Content-Location`, and the backend's
//!   root in the XML or JSON bodies of the service's own answers
//!   (listings, which name `ServiceEndpoint`), are mapped to the presented
//!   root. Blob content is never rewritten. The request id and time that
//!   Azure puts in an error's message differ on every node; they are cut
//!   before the answer is digested.
//!
//! The canonical forms follow the documented rules ("Authorize with
//! Shared Key"): the string to sign over the standard headers, the
//! `x-ms-` headers sorted in the service's collation (hyphens count only
//! to break ties), and the canonical resource `/account/path` with the
//! query parameters (all of them for SharedKey, only `comp` for
//! SharedKeyLite).

use super::{Adapter, Asked, Head, Refusal, Roots, http};
use crate::http::request::{Header, ProxiedRequest, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use std::cmp::Ordering;

/// How far a request's date may be from this node's clock.
const DATE_SKEW_SECS: i64 = 15 * 60;

/// An account and its key.
#[derive(Clone)]
pub struct Account {
    pub name: String,
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Account({:?}, key hidden)", self.name)
    }
}

impl Account {
    /// `key` is the base64 account key.
    pub fn new(name: &str, key: &str) -> Result<Account, String> {
        let bytes = B64
            .decode(key.trim())
            .map_err(|e| format!("the key of account {name:?} is not base64: {e}"))?;
        Ok(Account {
            name: name.to_string(),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The base64 signature of `text`.
    pub fn sign(&self, text: &str) -> String {
        B64.encode(ring::hmac::sign(&self.key, text.as_bytes()).as_ref())
    }

    /// Whether `signature` (base64) is this key's over `text`, compared in
    /// constant time.
    fn verifies(&self, text: &str, signature: &str) -> bool {
        B64.decode(signature.trim())
            .is_ok_and(|sig: Vec<u8>| ring::hmac::verify(&self.key, text.as_bytes(), &sig).is_ok())
    }
}

/// Which Shared Key scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    SharedKey,
    SharedKeyLite,
}

#[derive(Debug)]
pub struct AzureStorage {
    /// What clients sign with.
    pub presented: Account,
    /// This node's backend's account.
    pub real: Account,
}

/// The parts of a request a signature covers.
pub struct ToSign<'a> {
    pub method: &'a str,
    /// The path and query as sent (percent-encoded).
    pub path_and_query: &'a str,
    pub headers: &'a [Header],
    pub content_length: Option<u64>,
}

/// The string a `scheme` signature of `req` for `account` is made over.
pub fn string_to_sign(scheme: Scheme, account: &str, req: &ToSign<'_>) -> String {
    let h = |name: &str| -> String {
        header(req.headers, name)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .unwrap_or_default()
    };
    // Since version 2015-02-21, a zero length is signed as empty.
    let length = match req.content_length {
        Some(0) | None => String::new(),
        Some(n) => n.to_string(),
    };
    // With x-ms-date, Date is signed as empty (the SDKs send only the
    // former; a client may send both).
    let date = if header(req.headers, "x-ms-date").is_some() {
        String::new()
    } else {
        h("date")
    };
    let (path, query) = match req.path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.path_and_query, ""),
    };
    let mut out = String::new();
    match scheme {
        Scheme::SharedKey => {
            for field in [
                req.method.to_string(),
                h("content-encoding"),
                h("content-language"),
                length,
                h("content-md5"),
                h("content-type"),
                date,
                h("if-modified-since"),
                h("if-match"),
                h("if-none-match"),
                h("if-unmodified-since"),
                h("range"),
            ] {
                out.push_str(&field);
                out.push('\n');
            }
        }
        Scheme::SharedKeyLite => {
            for field in [
                req.method.to_string(),
                h("content-md5"),
                h("content-type"),
                date,
            ] {
                out.push_str(&field);
                out.push('\n');
            }
        }
    }
    out.push_str(&canonical_headers(req.headers));
    out.push('/');
    out.push_str(account);
    out.push_str(if path.is_empty() { "/" } else { path });
    let params = query_params(query);
    match scheme {
        Scheme::SharedKey => {
            for (name, values) in params {
                out.push('\n');
                out.push_str(&name);
                out.push(':');
                out.push_str(&values.join(","));
            }
        }
        Scheme::SharedKeyLite => {
            if let Some((_, values)) = params.iter().find(|(n, _)| n == "comp") {
                out.push_str("?comp=");
                out.push_str(&values.join(","));
            }
        }
    }
    out
}

/// The `x-ms-` headers, lower case, in the service's order, one
/// `name:value\n` each (several of one name joined by commas).
fn canonical_headers(headers: &[Header]) -> String {
    let mut ms: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if !name.starts_with("x-ms-") {
            continue;
        }
        let value = String::from_utf8_lossy(value).trim().to_string();
        match ms.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => ms.push((name, value)),
        }
    }
    ms.sort_by(|a, b| collate(&a.0, &b.0));
    ms.iter().map(|(n, v)| format!("{n}:{v}\n")).collect()
}

/// The storage service's order of header names: by letters and digits
/// first, hyphens (and apostrophes) set aside; among names equal that
/// way, the one whose first hyphen comes later sorts first.
pub fn collate(a: &str, b: &str) -> Ordering {
    // Level one: the characters that carry weight, in the service's
    // order (punctuation, then digits, then letters).
    const ORDER: &str = "!#$%&*.^_`|~+0123456789abcdefghijklmnopqrstuvwxyz";
    let weight = |c: char| {
        ORDER
            .find(c.to_ascii_lowercase())
            .map_or(0x100 + c as u32, |i| i as u32 + 1)
    };
    let ignored = |c: &char| *c == '-' || *c == '\'';
    let first = a
        .chars()
        .filter(|c| !ignored(c))
        .map(weight)
        .cmp(b.chars().filter(|c| !ignored(c)).map(weight));
    if first != Ordering::Equal {
        return first;
    }
    // Level two: where the set-aside characters are.
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mark = |c: Option<&char>| match c {
        None => 1,
        Some('\'') => 0x8012,
        Some('-') => 0x8212,
        Some(_) => 0,
    };
    let (mut i, mut j) = (0, 0);
    loop {
        if i != j {
            return if i > j {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (wa, wb) = (mark(a.get(i)), mark(b.get(j)));
        match (wa, wb) {
            (1, 1) => return Ordering::Equal,
            _ if wa == wb => {
                i += 1;
                j += 1;
            }
            (0, _) => i += 1,
            (_, 0) => j += 1,
            _ => return wa.cmp(&wb),
        }
    }
}

/// The query's parameters: names lower case and sorted, each with its
/// values decoded and sorted.
fn query_params(query: &str) -> Vec<(String, Vec<String>)> {
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name).to_ascii_lowercase();
        let value = decode(value);
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => params.push((name, vec![value])),
        }
    }
    for (_, values) in &mut params {
        values.sort();
    }
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// Percent-decoding, as the SDKs decode a query value to sign it (a `+`
/// stays a `+`).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The scheme, account and signature of an `Authorization` value.
fn parse_authorization(value: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let scheme = match scheme {
        "SharedKey" => Scheme::SharedKey,
        "SharedKeyLite" => Scheme::SharedKeyLite,
        _ => return None,
    };
    let (account, signature) = rest.trim().split_once(':')?;
    Some((scheme, account, signature))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An HTTP date (`Tue, 01 Dec 2026 04:10:50 GMT`) as Unix seconds.
fn parse_http_date(s: &str) -> Option<i64> {
    let rest = s.trim().split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: u8 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)?;
    let year: i32 = parts.next()?.parse().ok()?;
    let clock: Vec<u8> = parts
        .next()?
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if parts.next() != Some("GMT") || clock.len() != 3 {
        return None;
    }
    let month = time::Month::try_from(month as u8 + 1).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let t = date.with_hms(clock[0], clock[1], clock[2]).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// Now as an HTTP date.
pub fn http_date_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let weekday = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        [t.weekday().number_days_from_monday() as usize];
    format!(
        "{weekday}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        t.day(),
        MONTHS[t.month() as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn refuse(message: String) -> Refusal {
    Refusal {
        status: 403,
        message,
    }
}

impl Adapter for AzureStorage {
    fn kind(&self) -> &'static str {
        "azure-storage"
    }

    fn authenticate(&self, req: &Head<'_>) -> Result<(), Refusal> {
        let query = req.path_and_query.split_once('?').map_or("", |(_, q)| q);
        let params = query_params(query);
        if params.iter().any(|(n, _)| n == "sig") {
            return Err(refuse(
                "shared access signatures are not taken: they are signed for the presented \
                 account, and no node can sign them again for its own"
                    .into(),
            ));
        }
        if params
            .iter()
            .any(|(n, v)| n == "comp" && v.iter().any(|v| v.eq_ignore_ascii_case("batch")))
        {
            return Err(Refusal {
                status: 501,
                message: "batch requests are not proxied: their parts are signed for the \
                          presented account and answered with each backend's own request ids"
                    .into(),
            });
        }
        let Some(auth) = header(req.headers, "authorization") else {
            return Ok(());
        };
        let auth = String::from_utf8_lossy(auth);
        let Some((scheme, account, signature)) = parse_authorization(&auth) else {
            return Err(refuse(
                "the Authorization header is not SharedKey or SharedKeyLite \
                 (the only schemes this proxy takes)"
                    .into(),
            ));
        };
        if account != self.presented.name {
            return Err(refuse(format!(
                "the request is signed for account {account:?}; this service is account {:?}",
                self.presented.name
            )));
        }
        let date = header(req.headers, "x-ms-date").or_else(|| header(req.headers, "date"));
        let Some(at) = date.and_then(|d| parse_http_date(&String::from_utf8_lossy(d))) else {
            return Err(refuse(
                "a signed request needs an x-ms-date (or Date) header".into(),
            ));
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if (now - at).abs() > DATE_SKEW_SECS {
            return Err(refuse(format!(
                "the request's date is {} s from this node's clock, more than {DATE_SKEW_SECS} s",
                now - at
            )));
        }
        let text = string_to_sign(
            scheme,
            &self.presented.name,
            &ToSign {
                method: req.method,
                path_and_query: req.path_and_query,
                headers: req.headers,
                content_length: req.content_length,
            },
        );
        if !self.presented.verifies(&text, signature) {
            return Err(refuse(format!(
                "the signature does not match: sign with the presented account's key over \
                 {text:?}"
            )));
        }
        Ok(())
    }

    fn to_backend(&self, roots: &Roots, req: &mut ProxiedRequest) -> Result<(), String> {
        http::request_urls(roots, &mut req.headers);
        super::map_header(&mut req.headers, "x-ms-copy-source", |v| {
            roots.to_backend(v)
        });
        let signed = header(&req.headers, "authorization")
            .is_some_and(|v| parse_authorization(&String::from_utf8_lossy(v)).is_some());
        if !signed {
            return Ok(());
        }
        req.headers.retain(|(n, _)| {
            !n.eq_ignore_ascii_case("authorization")
                && !n.eq_ignore_ascii_case("date")
                && !n.eq_ignore_ascii_case("x-ms-date")
        });
        req.headers
            .push(("x-ms-date".to_string(), http_date_now().into_bytes()));
        let text = string_to_sign(
            Scheme::SharedKey,
            &self.real.name,
            &ToSign {
                method: &req.method,
                path_and_query: &req.path_and_query,
                headers: &req.headers,
                content_length: Some(req.body.len() as u64),
            },
        );
        let value = format!("SharedKey {}:{}", self.real.name, self.real.sign(&text));
        req.headers
            .push(("authorization".to_string(), value.into_bytes()));
        Ok(())
    }

    fn answer_headers(&self, roots: &Roots, _asked: &Asked, headers: &mut Vec<Header>) {
        http::answer_urls(roots, headers);
    }

    fn answer_body(
        &self,
        roots: &Roots,
        asked: &Asked,
        headers: &[Header],
    ) -> Option<super::rewrite::Replace> {
        // Only the service's own documents: a listing's query names an
        // operation (`comp=list`, `restype=container`); a blob's content
        // is the client's, whatever its type.
        let query = asked.path_and_query.split_once('?').map_or("", |(_, q)| q);
        let operation = query_params(query)
            .iter()
            .any(|(n, _)| n == "comp" || n == "restype");
        if !(operation && super::is_document(headers)) {
            return None;
        }
        let presented = roots.presented.as_deref()?;
        super::rewrite::Replace::urls([(
            roots.backend.as_bytes().to_vec(),
            presented.as_bytes().to_vec(),
        )])
    }

    fn settle_answer(&self, status: u16, body: Bytes) -> Bytes {
        if status < 400 {
            return body;
        }
        settled_error(&body).unwrap_or(body)
    }
}

/// An error body as every node can agree on it: its `Code` and the first
/// line of its `Message`. The rest differs from backend to backend by
/// nature: the request id and time in the message, and details that name
/// the node's own account or echo the node's own signature
/// (`AuthenticationErrorDetail`).
fn settled_error(body: &[u8]) -> Option<Bytes> {
    let text = std::str::from_utf8(body).ok()?;
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(&text[start..end])
    };
    let code = element("Code")?;
    let message = element("Message").unwrap_or("");
    let first = message.lines().next().unwrap_or("");
    Some(Bytes::from(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code>\
         <Message>{first}</Message></Error>"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> Header {
        (n.into(), v.as_bytes().to_vec())
    }

    #[test]
    fn header_names_sort_as_the_service_sorts_them() {
        let mut names = vec![
            "x-ms-version",
            "x-ms-meta-a-b",
            "x-ms-date",
            "x-ms-meta-ab",
            "x-ms-blob-type",
            "x-ms-meta-a_b",
            "x-ms-client-request-id",
            "x-ms-meta-a1",
            "x-ms-meta-zz",
        ];
        names.sort_by(|a, b| collate(a, b));
        // The order the Python SDK's _storage_header_sort gives.
        assert_eq!(
            names,
            [
                "x-ms-blob-type",
                "x-ms-client-request-id",
                "x-ms-date",
                "x-ms-meta-a_b",
                "x-ms-meta-a1",
                "x-ms-meta-ab",
                "x-ms-meta-a-b",
                "x-ms-meta-zz",
                "x-ms-version",
            ]
        );
    }

    #[test]
    fn the_string_to_sign_follows_the_documented_layout() {
        let headers = vec![
            h("x-ms-version", "2021-08-06"),
            h("Content-Type", "text/plain"),
            h("x-ms-date", "Tue, 01 Dec 2026 04:10:50 GMT"),
            h("x-ms-blob-type", "BlockBlob"),
            h("Date", "ignored when x-ms-date is there"),
        ];
        let req = ToSign {
            method: "PUT",
            path_and_query: "/acct/c/b%20x?timeout=30&comp=block&blockid=YQ%3D%3D",
            headers: &headers,
            content_length: Some(5),
        };
        assert_eq!(
            string_to_sign(Scheme::SharedKey, "acct", &req),
            "PUT\n\n\n5\n\ntext/plain\n\n\n\n\n\n\n\
             x-ms-blob-type:BlockBlob\nx-ms-date:Tue, 01 Dec 2026 04:10:50 GMT\nx-ms-version:2021-08-06\n\
             /acct/acct/c/b%20x\nblockid:YQ==\ncomp:block\ntimeout:30"
        );
        assert_eq!(
            string_to_sign(Scheme::SharedKeyLite, "acct", &req),
            "PUT\n\ntext/plain\n\n\
             x-ms-blob-type:BlockBlob\nx-ms-date:Tue, 01 Dec 2026 04:10:50 GMT\nx-ms-version:2021-08-06\n\
             /acct/acct/c/b%20x?comp=block"
        );
    }

    /// Two nodes' backends refusing the same update alike give the same
    /// settled answer, whatever ids, times and details they add.
    #[test]
    fn error_answers_keep_only_what_every_node_agrees_on() {
        let on = |node: &str, account: &str| {
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code>\
                 <Message>Server failed to authenticate the request.\nRequestId:{node}\n\
                 Time:2026-12-01T04:10:5{node}.000Z</Message><AuthenticationErrorDetail>\
                 String to sign used was /blob/{account}/c</AuthenticationErrorDetail></Error>"
            )
        };
        let a = settled_error(on("1", "northacct").as_bytes()).expect("settled");
        let b = settled_error(on("2", "eastacct").as_bytes()).expect("settled");
        assert_eq!(a, b);
        assert_eq!(
            &a[..],
            b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code>\
              <Message>Server failed to authenticate the request.</Message></Error>"
        );
        assert!(settled_error(b"not xml").is_none());
    }

    #[test]
    fn dates_parse_and_print() {
        let now = http_date_now();
        let parsed = parse_http_date(&now).expect("parses");
        let unix = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((unix - parsed).abs() <= 2, "{now}");
        assert_eq!(
            parse_http_date("Tue, 01 Dec 2026 04:10:50 GMT"),
            Some(1_796_098_250)
        );
    }
}
