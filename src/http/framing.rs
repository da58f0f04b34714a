//! An answer's head, and how its body is framed (RFC 9112 §6.3), with
//! the verdicts hyper's client gives.
//!
//! Shared by the two places ordo speaks HTTP/1.1 to a backend itself: the
//! applier's pipelined connections ([`super::pipeline`]), which read each
//! answer whole, and the reads' own connections ([`super::reads`]), which
//! stream it. One reading of the framing for both, so that a backend's
//! answer means the same on either path.

use bytes::Bytes;

/// The longest answer head read (about hyper's largest buffer).
pub const MAX_HEAD: usize = 400 << 10;

/// Headers in one answer, at most (hyper's limit too).
const MAX_HEADERS: usize = 100;

/// What becomes of the connection after an answer.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum After {
    KeepOn,
    /// The backend closes it and reads nothing more (`Connection:
    /// close`, HTTP/1.0, a body ended by closing): what was sent behind
    /// this answer can go again.
    Closes,
    /// The framing was ambiguous (both Transfer-Encoding and
    /// Content-Length): the connection is dropped, and what was sent
    /// behind this answer may have been read, so it is not sent again.
    Distrusted,
}

/// Where an answer's body ends.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Framing {
    /// No body, whatever the head says (a HEAD's answer, 204, 304).
    Empty,
    /// `Content-Length`.
    Length(u64),
    Chunked,
    /// The body ends with the connection.
    UntilClose,
}

/// A whole answer head.
#[derive(Debug)]
pub struct Head {
    /// Its bytes, up to and with the empty line.
    pub len: usize,
    pub status: u16,
    /// Through a HeaderMap, as hyper does: the same checks, and repeated
    /// names grouped the same way.
    pub headers: http::HeaderMap,
    pub framing: Framing,
    pub after: After,
}

/// What the start of a buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A 1xx answer of `n` bytes, before the real one.
    Informational(usize),
    Head(Head),
    Invalid(String),
}

/// The answer head at the start of `buf`; `head`: the request was a
/// HEAD, whose answer has no body.
pub fn parse_head(buf: &[u8], head: bool) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Invalid(format!("answer head over {MAX_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Invalid(format!("malformed answer head: {e}")),
    };
    let Some(status) = resp.code else {
        return Parsed::Invalid("no status".into());
    };
    if status == 101 {
        return Parsed::Invalid("101 Switching Protocols was not asked for".into());
    }
    if (100..200).contains(&status) {
        return Parsed::Informational(n);
    }
    let http10 = resp.version == Some(0);
    let mut after = if http10 { After::Closes } else { After::KeepOn };
    let mut chunked = false;
    let mut coded = false;
    let mut length: Option<u64> = None;
    let mut headers = http::HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::Invalid(format!("invalid header {:?}", h.name));
        };
        if name == http::header::CONNECTION {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    after = After::Closes;
                    break;
                } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                    after = After::KeepOn;
                }
            }
        } else if name == http::header::TRANSFER_ENCODING {
            if http10 {
                return Parsed::Invalid("Transfer-Encoding in an HTTP/1.0 answer".into());
            }
            coded = true;
            // Only the last coding frames the body.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == http::header::CONTENT_LENGTH {
            for v in h.value.split(|&b| b == b',') {
                let parsed = std::str::from_utf8(v.trim_ascii())
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok());
                match (parsed, length) {
                    (None, _) => return Parsed::Invalid("invalid Content-Length".into()),
                    (Some(a), Some(b)) if a != b => {
                        return Parsed::Invalid("conflicting Content-Length".into());
                    }
                    (Some(a), _) => length = Some(a),
                }
            }
        }
        headers.append(name, value);
    }
    let framing = if head || status == 204 || status == 304 {
        Framing::Empty
    } else if coded {
        // With both, Transfer-Encoding frames the body, and the
        // connection is not used again (RFC 9112 §6.3).
        if length.is_some() {
            after = After::Distrusted;
        }
        if chunked {
            Framing::Chunked
        } else {
            after = After::Closes;
            Framing::UntilClose
        }
    } else if let Some(len) = length {
        Framing::Length(len)
    } else {
        after = After::Closes;
        Framing::UntilClose
    };
    Parsed::Head(Head {
        len: n,
        status,
        headers,
        framing,
        after,
    })
}

/// Where a chunked body's framing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkAt {
    /// Before a chunk-size line.
    Size,
    /// In chunk data: this many bytes left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer lines, up to an empty one (read and dropped, as hyper does).
    Trailers,
    Done,
}

/// One step through a chunked body ([`Chunks::step`]); every count is
/// from the start of the bytes given.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkStep {
    /// `skip` framing bytes, then `len` bytes of the body.
    Data {
        skip: usize,
        len: usize,
    },
    /// `skip` framing bytes used; nothing changes before `need` more
    /// bytes than were given.
    More {
        skip: usize,
        need: u64,
    },
    /// The body is over after `skip` framing bytes.
    Done {
        skip: usize,
    },
    /// The declared chunks exceed the limit.
    TooLarge,
    Invalid(&'static str),
}

/// A chunked body's decoder, fed the bytes as they come. The framing's
/// own bytes (sizes, extensions, trailers) may not exceed the body by
/// more than [`MAX_HEAD`].
#[derive(Debug, Clone)]
pub struct Chunks {
    at: ChunkAt,
    /// Body bytes declared so far, at most `limit`.
    declared: u64,
    limit: u64,
    framing: usize,
}

impl Chunks {
    /// A body of at most `limit` bytes.
    pub fn new(limit: u64) -> Chunks {
        Chunks {
            at: ChunkAt::Size,
            declared: 0,
            limit,
            framing: 0,
        }
    }

    fn too_long(&self, pending: usize) -> bool {
        (self.framing + pending) as u64 > MAX_HEAD as u64 + self.declared
    }

    /// The next step through `data` (the bytes after those the last
    /// step counted).
    pub fn step(&mut self, data: &[u8]) -> ChunkStep {
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            match self.at {
                ChunkAt::Done => return ChunkStep::Done { skip: pos },
                ChunkAt::Data(n) => {
                    if rest.is_empty() {
                        // The data, then its CRLF.
                        let need = n.saturating_add(2);
                        return ChunkStep::More { skip: pos, need };
                    }
                    let len = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    let left = n - len as u64;
                    self.at = if left == 0 {
                        ChunkAt::DataEnd
                    } else {
                        ChunkAt::Data(left)
                    };
                    return ChunkStep::Data { skip: pos, len };
                }
                ChunkAt::DataEnd => {
                    if rest.len() < 2 {
                        let need = 2 - rest.len() as u64;
                        return ChunkStep::More { skip: pos, need };
                    }
                    if &rest[..2] != b"\r\n" {
                        return ChunkStep::Invalid("chunk not followed by CRLF");
                    }
                    pos += 2;
                    self.framing += 2;
                    self.at = ChunkAt::Size;
                }
                ChunkAt::Size => {
                    let (used, size) = match httparse::parse_chunk_size(rest) {
                        Ok(httparse::Status::Complete(found)) => found,
                        Ok(httparse::Status::Partial) if self.too_long(rest.len()) => {
                            return ChunkStep::Invalid("chunk framing too long");
                        }
                        Ok(httparse::Status::Partial) => {
                            return ChunkStep::More { skip: pos, need: 1 };
                        }
                        Err(_) => return ChunkStep::Invalid("malformed chunk size"),
                    };
                    pos += used;
                    self.framing += used;
                    if self.too_long(0) {
                        return ChunkStep::Invalid("chunk framing too long");
                    }
                    if size == 0 {
                        self.at = ChunkAt::Trailers;
                        continue;
                    }
                    let Some(declared) = self.declared.checked_add(size) else {
                        return ChunkStep::Invalid("chunk sizes overflow");
                    };
                    if declared > self.limit {
                        return ChunkStep::TooLarge;
                    }
                    self.declared = declared;
                    self.at = ChunkAt::Data(size);
                }
                ChunkAt::Trailers => {
                    let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
                        if self.too_long(rest.len()) {
                            return ChunkStep::Invalid("chunk framing too long");
                        }
                        return ChunkStep::More { skip: pos, need: 1 };
                    };
                    let line = &rest[..eol];
                    pos += eol + 1;
                    self.framing += eol + 1;
                    if self.too_long(0) {
                        return ChunkStep::Invalid("chunk framing too long");
                    }
                    if line.is_empty() || line == b"\r" {
                        self.at = ChunkAt::Done;
                    }
                }
            }
        }
    }
}

/// A whole chunked body from the start of `data`, at most `limit` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Dechunked {
    /// The body, and the bytes of `data` it used.
    Whole(Bytes, usize),
    /// Not before `data` holds this many bytes.
    Partial(usize),
    TooLarge,
    Invalid(String),
}

/// The framing is followed first and the body copied once it is all
/// there.
pub fn dechunk(data: &[u8], limit: usize) -> Dechunked {
    let mut chunks = Chunks::new(limit as u64);
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    loop {
        match chunks.step(&data[pos..]) {
            ChunkStep::Data { skip, len } => {
                pieces.push((pos + skip, len));
                pos += skip + len;
            }
            ChunkStep::More { need, .. } => {
                let need = (data.len() as u64).saturating_add(need);
                return Dechunked::Partial(usize::try_from(need).unwrap_or(usize::MAX));
            }
            ChunkStep::Done { skip } => {
                let size: usize = pieces.iter().map(|(_, len)| len).sum();
                let mut body = bytes::BytesMut::with_capacity(size);
                for (at, len) in pieces {
                    body.extend_from_slice(&data[at..at + len]);
                }
                return Dechunked::Whole(body.freeze(), pos + skip);
            }
            ChunkStep::TooLarge => return Dechunked::TooLarge,
            ChunkStep::Invalid(why) => return Dechunked::Invalid(why.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body a decoder makes of `data` fed in pieces of `size` bytes,
    /// as a stream would: bytes it has not used yet stay for the next.
    fn streamed(data: &[u8], size: usize) -> Result<Vec<u8>, String> {
        let mut chunks = Chunks::new(u64::MAX);
        let mut body = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            match chunks.step(&buf) {
                ChunkStep::Data { skip, len } => {
                    body.extend_from_slice(&buf[skip..skip + len]);
                    buf.drain(..skip + len);
                }
                ChunkStep::More { skip, .. } => {
                    buf.drain(..skip);
                    if fed == data.len() {
                        return Err("cut short".into());
                    }
                    let next = (fed + size).min(data.len());
                    buf.extend_from_slice(&data[fed..next]);
                    fed = next;
                }
                ChunkStep::Done { skip } => {
                    buf.drain(..skip);
                    assert!(buf.is_empty() && fed == data.len(), "bytes left over");
                    return Ok(body);
                }
                other => return Err(format!("{other:?}")),
            }
        }
    }

    #[test]
    fn a_chunked_body_decodes_the_same_in_any_pieces() {
        let data = b"5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\n";
        let (whole, used) = match dechunk(data, 1 << 20) {
            Dechunked::Whole(b, used) => (b, used),
            other => panic!("{other:?}"),
        };
        assert_eq!(&whole[..], b"helloabcdefghijklmnopqrstuvwxyz");
        assert_eq!(used, data.len());
        for size in 1..data.len() {
            assert_eq!(streamed(data, size).as_deref(), Ok(&whole[..]), "{size}");
        }
    }

    #[test]
    fn a_chunk_without_its_crlf_is_refused() {
        assert_eq!(
            streamed(b"3\r\nabcX\r\n0\r\n\r\n", 4),
            Err("Invalid(\"chunk not followed by CRLF\")".into())
        );
    }

    #[test]
    fn chunk_framing_may_not_outgrow_the_body() {
        let mut data = b"1\r\na\r\n0\r\n".to_vec();
        data.extend(std::iter::repeat_n(b"x-t: 1\r\n", MAX_HEAD / 8 + 1).flatten());
        assert_eq!(
            dechunk(&data, 1 << 20),
            Dechunked::Invalid("chunk framing too long".into())
        );
    }

    #[test]
    fn chunk_sizes_that_overflow_are_refused_not_wrapped() {
        let data = b"1\r\na\r\nffffffffffffffff\r\n";
        assert_eq!(
            dechunk(data, usize::MAX),
            Dechunked::Invalid("chunk sizes overflow".into())
        );
        assert_eq!(
            streamed(data, 3),
            Err("Invalid(\"chunk sizes overflow\")".into())
        );
    }

    #[test]
    fn declared_chunks_over_the_limit_are_too_large_before_they_arrive() {
        assert_eq!(dechunk(b"10\r\nabc", 15), Dechunked::TooLarge);
        assert_eq!(dechunk(b"10\r\nabc", 16), Dechunked::Partial(7 + 13 + 2));
    }

    #[test]
    fn the_framing_of_an_answer_follows_rfc_9112() {
        let framing = |head: &[u8], is_head: bool| match parse_head(head, is_head) {
            Parsed::Head(h) => (h.framing, h.after),
            other => panic!("{other:?}"),
        };
        let len = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(framing(len, false), (Framing::Length(3), After::KeepOn));
        assert_eq!(framing(len, true), (Framing::Empty, After::KeepOn));
        let both = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(framing(both, false), (Framing::Chunked, After::Distrusted));
        let none = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(framing(none, false), (Framing::UntilClose, After::Closes));
        let not_modified = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n";
        assert_eq!(
            framing(not_modified, false),
            (Framing::Empty, After::KeepOn)
        );
        let old = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(old, false), (Framing::Length(0), After::Closes));
    }
}
