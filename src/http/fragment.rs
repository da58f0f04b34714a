//! Request targets with a fragment are refused, not cut.
//!
//! A fragment (`#...`) is never sent to a server (RFC 9110 §4.2.1); a
//! request target that has one is malformed, and servers refuse it with
//! 400. The `http` crate's URI parser instead drops the fragment in
//! silence, so `DELETE /coll/#frag` reached every backend as
//! `DELETE /coll/`: a request the backend would have refused deleted the
//! collection, on every replica. The parsed request no longer shows the
//! `#`, so the check is made below the parser: [`FragmentGuard`] wraps a
//! client connection, follows its HTTP/1.1 framing (request line, head,
//! body by `Content-Length` or chunks) and spoils the request line of a
//! request whose target holds a `#` (the `#` becomes a NUL byte), which
//! the parser then refuses with 400 and the connection is closed.
//!
//! The framing is followed the way the parser follows it; where it cannot
//! be (a malformed length or chunk size), the parser refuses the request
//! and closes the connection too, so nothing after it is served.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest start of a field line kept: a longer `Content-Length` or
/// `Transfer-Encoding` (which no client sends) leaves the framing
/// unknown, and the connection is closed; other fields may be longer.
const LINE_MAX: usize = 8 << 10;

/// Where in the framing the next byte falls. The chunk states are
/// actix-http's own (`h1::chunked`), so that both read the same bytes as
/// the same parts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum At {
    /// Before a request (empty lines allowed) or in its method.
    Method {
        started: bool,
    },
    /// In the request target.
    Target,
    /// After the target, up to the end of the request line.
    Version,
    /// In the head's fields.
    Fields,
    /// In a body of known length: this many bytes left.
    Body(u64),
    /// The first hex digit of a chunk size.
    SizeFirst,
    /// More hex digits of a chunk size (the size so far).
    SizeRest(u64),
    /// Blanks after a chunk size.
    SizeLws(u64),
    /// A chunk extension.
    Extension(u64),
    /// The LF after a chunk-size line's CR.
    SizeLf(u64),
    /// In chunk data: this many bytes left.
    ChunkData(u64),
    /// The CR, then the LF, after chunk data.
    BodyCr,
    BodyLf,
    /// After the last chunk: CR ends the body, anything else starts a
    /// trailer line, which runs to a CR and its LF.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    /// The framing is not understood (the parser refuses such bytes), or
    /// a request was spoiled: nothing more is passed on.
    Lost,
}

/// Follows the framing of the requests on one connection.
#[derive(Clone, Debug)]
pub struct Scanner {
    at: At,
    /// The start of the current field line.
    line: Vec<u8>,
    /// ...which was longer than `LINE_MAX`.
    line_long: bool,
    content_length: Option<u64>,
    chunked: bool,
    /// Requests refused here so far.
    pub refused: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            at: At::Method { started: false },
            line: Vec::new(),
            line_long: false,
            content_length: None,
            chunked: false,
            refused: 0,
        }
    }
}

impl Scanner {
    /// Whether the framing was lost (or a request spoiled): the
    /// connection must end.
    pub fn lost(&self) -> bool {
        self.at == At::Lost
    }

    /// Follow `bytes`, the next ones read from the client, spoiling any
    /// `#` in a request target. Where the framing is lost, every byte
    /// from there on is spoiled: whatever it holds is refused by the
    /// parser, never served unchecked (fail closed).
    pub fn scan(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let hex = (b as char).to_digit(16).map(u64::from);
            self.at = match std::mem::replace(&mut self.at, At::Lost) {
                At::Method { started } => {
                    if b == b' ' && started {
                        At::Target
                    } else {
                        At::Method {
                            started: started || (b != b'\r' && b != b'\n'),
                        }
                    }
                }
                At::Target => match b {
                    b' ' => At::Version,
                    b'#' => {
                        self.refused += 1;
                        At::Lost
                    }
                    b'\n' => At::Lost,
                    _ => At::Target,
                },
                At::Version => {
                    if b == b'\n' {
                        self.line.clear();
                        self.content_length = None;
                        self.chunked = false;
                        At::Fields
                    } else {
                        At::Version
                    }
                }
                At::Fields => {
                    if b == b'\n' {
                        self.end_field()
                    } else {
                        if self.line.len() < LINE_MAX {
                            self.line.push(b);
                        } else {
                            self.line_long = true;
                        }
                        At::Fields
                    }
                }
                At::Body(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.at = if take == left {
                        At::Method { started: false }
                    } else {
                        At::Body(left - take)
                    };
                    continue;
                }
                At::ChunkData(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.at = if take == left {
                        At::BodyCr
                    } else {
                        At::ChunkData(left - take)
                    };
                    continue;
                }
                At::SizeFirst => match hex {
                    Some(d) => At::SizeRest(d),
                    None => At::Lost,
                },
                At::SizeRest(size) => match (b, hex) {
                    (_, Some(d)) => match size.checked_mul(16) {
                        Some(n) => At::SizeRest(n + d),
                        None => At::Lost,
                    },
                    (b'\t' | b' ', _) => At::SizeLws(size),
                    (b';', _) => At::Extension(size),
                    (b'\r', _) => At::SizeLf(size),
                    _ => At::Lost,
                },
                At::SizeLws(size) => match b {
                    b'\t' | b' ' => At::SizeLws(size),
                    b';' => At::Extension(size),
                    b'\r' => At::SizeLf(size),
                    _ => At::Lost,
                },
                At::Extension(size) => match b {
                    b'\r' => At::SizeLf(size),
                    0x00..=0x08 | 0x0a..=0x1f | 0x7f => At::Lost,
                    _ => At::Extension(size),
                },
                At::SizeLf(size) => match b {
                    b'\n' if size > 0 => At::ChunkData(size),
                    b'\n' => At::EndCr,
                    _ => At::Lost,
                },
                At::BodyCr => match b {
                    b'\r' => At::BodyLf,
                    _ => At::Lost,
                },
                At::BodyLf => match b {
                    b'\n' => At::SizeFirst,
                    _ => At::Lost,
                },
                At::EndCr => match b {
                    b'\r' => At::EndLf,
                    _ => At::Trailer,
                },
                At::Trailer => match b {
                    b'\r' => At::TrailerLf,
                    _ => At::Trailer,
                },
                At::TrailerLf => match b {
                    b'\n' => At::EndCr,
                    _ => At::Lost,
                },
                At::EndLf => match b {
                    b'\n' => At::Method { started: false },
                    _ => At::Lost,
                },
                At::Lost => At::Lost,
            };
            if self.at == At::Lost {
                // Fail closed: from here on the parser gets nothing it
                // could read as a request (the `#` of a spoiled target
                // included).
                bytes[i..].fill(0);
                return;
            }
            i += 1;
        }
    }

    /// A whole field line (or the empty line that ends the head) has
    /// been read: what comes next.
    fn end_field(&mut self) -> At {
        let line = std::mem::take(&mut self.line);
        let long = std::mem::replace(&mut self.line_long, false);
        let text = line.strip_suffix(b"\r").unwrap_or(&line);
        if text.is_empty() {
            return if self.chunked {
                At::SizeFirst
            } else {
                match self.content_length {
                    Some(n) if n > 0 => At::Body(n),
                    _ => At::Method { started: false },
                }
            };
        }
        let Some(colon) = text.iter().position(|&c| c == b':') else {
            return At::Fields;
        };
        let (name, value) = (&text[..colon], &text[colon + 1..]);
        let framing = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding");
        if framing && long {
            return At::Lost;
        }
        let Ok(value) = std::str::from_utf8(value).map(str::trim) else {
            return At::Fields;
        };
        // As actix-http reads them: one Content-Length, digits only; a
        // Transfer-Encoding of `chunked` (or `identity`). Anything else it
        // refuses, and so is the framing lost here.
        if name.eq_ignore_ascii_case(b"content-length") {
            match value.parse::<u64>() {
                Ok(n) if self.content_length.is_none() && !value.starts_with('+') => {
                    self.content_length = Some(n);
                }
                _ => return At::Lost,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") && !self.chunked {
                self.chunked = true;
            } else if !value.eq_ignore_ascii_case("identity") {
                return At::Lost;
            }
        }
        At::Fields
    }
}

/// A client connection whose requests are checked for fragments.
pub struct FragmentGuard<T> {
    io: T,
    scanner: Scanner,
}

impl<T> FragmentGuard<T> {
    pub fn new(io: T) -> Self {
        FragmentGuard {
            io,
            scanner: Scanner::default(),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FragmentGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.scanner.scan(&mut buf.filled_mut()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FragmentGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `input` scanned in pieces cut at `cuts`; what the parser would get.
    fn scanned(input: &[u8], cuts: &[usize]) -> (Vec<u8>, u64) {
        let mut s = Scanner::default();
        let mut out = input.to_vec();
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
        bounds.extend([0, input.len()]);
        bounds.sort();
        for w in bounds.windows(2) {
            s.scan(&mut out[w[0]..w[1]]);
        }
        (out, s.refused)
    }

    #[test]
    fn a_fragment_in_the_target_is_spoiled() {
        let (out, refused) = scanned(b"DELETE /coll/#frag HTTP/1.1\r\nHost: a\r\n\r\n", &[]);
        assert_eq!(&out[..18], b"DELETE /coll/\0\0\0\0\0");
        assert!(
            out[13..].iter().all(|&b| b == 0),
            "nothing after it is passed on"
        );
        assert_eq!(refused, 1);
    }

    /// What a reviewer found: framing the scanner did not follow made it
    /// stop checking while the parser went on. Each is followed by a
    /// request with a fragment, which must never reach the parser intact.
    #[test]
    fn framing_the_parser_reads_otherwise_never_lets_a_fragment_through() {
        let then = "DELETE /coll/#f HTTP/1.1\r\nHost: a\r\n\r\n";
        let zeros = "0".repeat(9000);
        let spaces = " ".repeat(9000);
        let ext = "a".repeat(9000);
        let cases = [
            format!("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: {zeros}\r\n\r\n{then}"),
            format!("GET / HTTP/1.1\r\nHost: a\r\nContent-Length:{spaces}0\r\n\r\n{then}"),
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:{spaces}chunked\r\n\r\n\
                 1;{ext}\r\nX\r\n0\r\n\r\n{then}"
            ),
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {zeros}1\r\nX\r\n0\r\n\r\n{then}"
            ),
            // A bare LF after the last chunk starts a trailer for the
            // parser, which runs to the next CR.
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                 0\r\n\nGET /#x HTTP/1.1\r\n\r\n{then}"
            ),
            format!("PUT / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 0\r\n\r\n{then}"),
            format!("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{then}"),
        ];
        for (k, case) in cases.iter().enumerate() {
            for cuts in [vec![], vec![40, 9010, 9030], vec![1, 2, 3, 18050]] {
                let (out, _) = scanned(case.as_bytes(), &cuts);
                let text = String::from_utf8_lossy(&out);
                assert!(!text.contains("DELETE /coll/#"), "case {k}, cuts {cuts:?}");
            }
        }
    }

    /// Long fields other than the two that frame a body are fine.
    #[test]
    fn a_long_cookie_is_not_a_lost_framing() {
        let req = format!(
            "GET /a HTTP/1.1\r\nCookie: {}\r\nContent-Length: 2\r\n\r\n##GET /b HTTP/1.1\r\n\r\n",
            "c".repeat(20_000)
        );
        let (out, refused) = scanned(req.as_bytes(), &[100, 10_000]);
        assert_eq!(out, req.as_bytes());
        assert_eq!(refused, 0);
    }

    #[test]
    fn a_hash_in_a_field_or_a_body_is_left_alone() {
        let req = b"PUT /a HTTP/1.1\r\nX-Tag: #1\r\nContent-Length: 12\r\n\r\nGET /#x HTTP\
                    GET /b HTTP/1.1\r\n\r\n";
        let (out, refused) = scanned(req, &[3, 20, 50]);
        assert_eq!(out, req.to_vec());
        assert_eq!(refused, 0);
    }

    #[test]
    fn chunked_bodies_are_followed_to_the_next_request() {
        let req = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5;ext=1\r\nGET /\r\n3\r\n#x \r\n0\r\nTrailer: #\r\n\r\n\
                    DELETE /c#f HTTP/1.1\r\n\r\n";
        let (out, refused) = scanned(req, &[]);
        assert_eq!(refused, 1, "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("GET /\r\n3\r\n#x \r\n0\r\nTrailer: #"),
            "{text}"
        );
        assert!(text.contains("DELETE /c\0\0"), "{text}");
    }

    #[test]
    fn the_request_after_a_sized_body_is_checked() {
        let req = b"PUT /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc\r\nDELETE /#f HTTP/1.1\r\n\r\n";
        let (out, refused) = scanned(req, &[]);
        assert_eq!(refused, 1);
        assert!(String::from_utf8_lossy(&out).contains("DELETE /\0\0"));
    }

    proptest! {
        /// However the reads cut the stream, the same bytes are spoiled.
        #[test]
        fn cuts_do_not_matter(cuts in proptest::collection::vec(0usize..160, 0..10)) {
            let req: &[u8] = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                       4\r\n#abc\r\n0\r\n\r\n\
                       PUT /b HTTP/1.1\r\nContent-Length: 2\r\n\r\n##\
                       GET /c#d HTTP/1.1\r\n\r\n";
            prop_assert_eq!(scanned(req, &cuts), scanned(req, &[]));
            prop_assert_eq!(scanned(req, &[]).1, 1);
        }
    }
}
