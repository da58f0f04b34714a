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

/// The longest header line start kept: enough for `Content-Length` and
/// `Transfer-Encoding` and their values.
const LINE_KEPT: usize = 128;

/// Where in the framing the next byte falls.
#[derive(Clone, Debug, PartialEq, Eq)]
enum At {
    /// Before a request (empty lines allowed) or in its method.
    Method { started: bool },
    /// In the request target.
    Target,
    /// After the target, up to the end of the request line.
    Version,
    /// In the head's fields.
    Fields,
    /// In a body of known length: this many bytes left.
    Body(u64),
    /// In a chunk-size line.
    ChunkSize,
    /// In chunk data: this many bytes left, then CRLF.
    ChunkData(u64),
    /// In the CRLF after chunk data.
    ChunkEnd,
    /// In the trailer fields after the last chunk.
    Trailers,
    /// The framing is not understood: the parser refuses it and closes.
    Lost,
}

/// Follows the framing of the requests on one connection.
#[derive(Clone, Debug)]
pub struct Scanner {
    at: At,
    /// The start of the current field or chunk-size line.
    line: Vec<u8>,
    /// The line was longer than what `line` keeps.
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
    /// Follow `bytes`, the next ones read from the client, spoiling any
    /// `#` in a request target.
    pub fn scan(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match &mut self.at {
                At::Method { started } => {
                    if b == b' ' && *started {
                        self.at = At::Target;
                    } else if b != b'\r' && b != b'\n' {
                        *started = true;
                    }
                }
                At::Target => match b {
                    b' ' => self.at = At::Version,
                    b'#' => {
                        bytes[i] = 0;
                        self.refused += 1;
                        self.at = At::Lost;
                    }
                    b'\n' => self.at = At::Lost,
                    _ => {}
                },
                At::Version => {
                    if b == b'\n' {
                        self.start_head();
                    }
                }
                At::Fields | At::Trailers | At::ChunkSize => {
                    if b == b'\n' {
                        self.end_line();
                    } else if self.line.len() < LINE_KEPT {
                        self.line.push(b);
                    } else {
                        self.line_long = true;
                    }
                }
                At::Body(left) | At::ChunkData(left) => {
                    let take = (*left).min((bytes.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        self.at = match self.at {
                            At::Body(_) => At::Method { started: false },
                            _ => At::ChunkEnd,
                        };
                    }
                    continue;
                }
                At::ChunkEnd => {
                    if b == b'\n' {
                        self.at = At::ChunkSize;
                    } else if b != b'\r' {
                        self.at = At::Lost;
                    }
                }
                At::Lost => return,
            }
            i += 1;
        }
    }

    fn start_head(&mut self) {
        self.at = At::Fields;
        self.line.clear();
        self.line_long = false;
        self.content_length = None;
        self.chunked = false;
    }

    /// A whole line of fields, trailers or a chunk size has been read.
    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let long = std::mem::replace(&mut self.line_long, false);
        let text = line.strip_suffix(b"\r").unwrap_or(&line);
        match self.at {
            At::Fields if text.is_empty() => {
                self.at = if self.chunked {
                    At::ChunkSize
                } else {
                    match self.content_length {
                        Some(n) if n > 0 => At::Body(n),
                        _ => At::Method { started: false },
                    }
                };
            }
            At::Fields => self.field(text, long),
            At::Trailers if text.is_empty() => self.at = At::Method { started: false },
            At::Trailers => {}
            At::ChunkSize => {
                let digits = text.split(|&c| c == b';').next().unwrap_or(b"");
                let size = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| u64::from_str_radix(d.trim(), 16).ok());
                self.at = match size {
                    _ if long => At::Lost,
                    Some(0) => At::Trailers,
                    Some(n) => At::ChunkData(n),
                    None => At::Lost,
                };
            }
            _ => {}
        }
    }

    /// One field of a request head: only the two that frame the body
    /// matter here.
    fn field(&mut self, text: &[u8], long: bool) {
        let Some(colon) = text.iter().position(|&c| c == b':') else {
            return;
        };
        let (name, value) = (&text[..colon], &text[colon + 1..]);
        let value = String::from_utf8_lossy(value);
        let value = value.trim();
        if name.eq_ignore_ascii_case(b"content-length") {
            match value.parse::<u64>() {
                Ok(n) if !long => self.content_length = Some(n),
                // The parser refuses it; what follows is not a request.
                _ => self.at = At::Lost,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if long {
                self.at = At::Lost;
            } else if value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            {
                self.chunked = true;
            }
        }
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
        assert_eq!(&out[..18], b"DELETE /coll/\0frag");
        assert_eq!(refused, 1);
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
        assert!(text.contains("DELETE /c\0f"), "{text}");
    }

    #[test]
    fn the_request_after_a_sized_body_is_checked() {
        let req = b"PUT /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc\r\nDELETE /#f HTTP/1.1\r\n\r\n";
        let (out, refused) = scanned(req, &[]);
        assert_eq!(refused, 1);
        assert!(String::from_utf8_lossy(&out).contains("DELETE /\0f"));
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
