//! A plain read's exchange with the backend, on connections of the
//! thread that took the read.
//!
//! The read's own future writes the request, reads the answer's head and
//! hands the body on as it arrives; idle connections wait in a pool of
//! the thread's own. hyper's pooled client, used before, runs each
//! connection as a task apart from the request's, so every answer went
//! through a channel and a task hand-off on its way to the handler; under
//! a load that fills both cores that cost about a fifth of ordo's CPU per
//! GET and put a 3.5-4 ms p99 on reads whose median was 0.3 ms (wrk, 16
//! connections; 0.6-0.7 ms p99 on this path, in the same run).
//!
//! The framing is read as for the applier's pipelined answers
//! ([`super::framing`]), but the body is streamed: a read's answer is
//! never held whole. A connection goes back to the pool only once its
//! answer's body has been read to its end with nothing after it, and the
//! backend keeps it open; an answer given up half-read closes it.
//!
//! A pooled connection may have been closed by the backend while it was
//! idle: a read that gets no byte of an answer on one is sent once more
//! on a new connection (reads are safe to repeat), and the thread's
//! other idle connections to that backend are dropped with it.
//!
//! Every wait is bounded: connecting by `connect`, the head by the
//! caller's request timeout, and each wait for more of a body by `stall`.

use super::framing::{self, After, ChunkStep, Chunks, Framing};
use super::pipeline::{Connect, Stream};
use super::request::ProxiedRequest;
use bytes::{Buf, Bytes, BytesMut};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Room kept free in a read buffer before each read.
const READ_ROOM: usize = 8 << 10;

/// How the read connections to one backend are made and kept.
#[derive(Clone, Debug)]
pub struct Limits {
    pub connect: Duration,
    /// The longest wait for more of a body.
    pub stall: Duration,
    /// An idle connection older than this is not used again.
    pub idle: Duration,
    /// Idle connections kept per thread.
    pub max_idle: usize,
}

/// One backend's read connections (those of each thread apart).
pub struct Reads {
    connector: Arc<dyn Connect>,
    /// This backend among others, in the threads' pools.
    id: usize,
    limits: Limits,
}

struct Idle {
    since: Instant,
    conn: Box<dyn Stream>,
}

thread_local! {
    /// This thread's idle read connections, by backend id. A connection
    /// is driven by the runtime of the thread that opened it.
    static IDLE: RefCell<HashMap<usize, VecDeque<Idle>>> = RefCell::new(HashMap::new());
}

/// A read's answer: its head, and its body to come.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Body,
}

/// Why an exchange failed.
enum Failure {
    /// Not one byte of an answer came: on a pooled connection, the
    /// backend had closed it.
    Nothing(String),
    Failed(String),
}

impl Reads {
    pub fn new(connector: Arc<dyn Connect>, id: usize, limits: Limits) -> Reads {
        Reads {
            connector,
            id,
            limits,
        }
    }

    /// Send `request` (a whole encoded request) and answer with the
    /// answer's head; `head`: it is a HEAD, whose answer has no body.
    /// Untimed: the caller bounds it.
    pub async fn fetch(&self, request: &[u8], head: bool) -> Result<Answer, String> {
        let home = (self.id, self.limits.max_idle);
        let stall = self.limits.stall;
        if let Some(conn) = self.take() {
            match exchange(conn, request, head, home, stall).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Failed(why)) => return Err(why),
                // Those idle as long were most likely closed too.
                Err(Failure::Nothing(_)) => self.forget(),
            }
        }
        let conn = self.connect().await?;
        exchange(conn, request, head, home, stall)
            .await
            .map_err(|(Failure::Nothing(why) | Failure::Failed(why))| why)
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        match tokio::time::timeout(self.limits.connect, self.connector.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(format!("cannot connect: {e}")),
            Err(_) => Err(format!("cannot connect within {:?}", self.limits.connect)),
        }
    }

    /// The most recently used idle connection that has not idled too
    /// long and has nothing to read: bytes on an idle connection are
    /// nobody's answer (a backend's 408 before it closes, a body sent
    /// after a HEAD's answer), and the end of it means it is closed.
    fn take(&self) -> Option<Box<dyn Stream>> {
        let idle = self.limits.idle;
        IDLE.with(|pools| {
            let mut pools = pools.borrow_mut();
            let pool = pools.get_mut(&self.id)?;
            while let Some(mut last) = pool.pop_back() {
                if last.since.elapsed() > idle {
                    // The rest are older still.
                    pool.clear();
                    return None;
                }
                if quiet(&mut last.conn) {
                    return Some(last.conn);
                }
            }
            None
        })
    }

    fn forget(&self) {
        IDLE.with(|pools| {
            if let Some(pool) = pools.borrow_mut().get_mut(&self.id) {
                pool.clear();
            }
        });
    }
}

/// Whether an idle connection has nothing to read. tokio answers from
/// the readiness it has cached: no system call unless the reactor saw
/// the socket become readable (a read that leaves the socket empty
/// clears it).
fn quiet(conn: &mut Box<dyn Stream>) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(
        tokio::io::AsyncRead::poll_read(Pin::new(conn), &mut cx, &mut buf),
        Poll::Pending
    )
}

/// Write the request, read up to the end of the answer's head. `home`:
/// the pool the connection goes back to (backend id, most idle); `stall`:
/// the longest wait for more of the body.
async fn exchange(
    mut conn: Box<dyn Stream>,
    request: &[u8],
    head: bool,
    home: (usize, usize),
    stall: Duration,
) -> Result<Answer, Failure> {
    // Flushed: TLS may hold written bytes back until then.
    let sent = match conn.write_all(request).await {
        Ok(()) => conn.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        return Err(Failure::Nothing(format!("sending the request failed: {e}")));
    }
    let mut buf = BytesMut::with_capacity(READ_ROOM);
    let mut got = false;
    loop {
        if buf.capacity() - buf.len() < READ_ROOM / 2 {
            buf.reserve(READ_ROOM);
        }
        let read = conn.read_buf(&mut buf).await;
        let n = match read {
            Ok(0) if !got => {
                return Err(Failure::Nothing(
                    "the backend closed the connection without answering".into(),
                ));
            }
            Ok(0) => {
                return Err(Failure::Failed(
                    "the answer was cut short: the backend closed the connection".into(),
                ));
            }
            Ok(n) => n,
            Err(e) if !got => return Err(Failure::Nothing(format!("reading the answer: {e}"))),
            Err(e) => return Err(Failure::Failed(format!("reading the answer: {e}"))),
        };
        got |= n > 0;
        loop {
            match framing::parse_head(&buf, head) {
                framing::Parsed::Partial => break,
                framing::Parsed::Informational(n) => buf.advance(n),
                framing::Parsed::Invalid(why) => {
                    return Err(Failure::Failed(format!("invalid answer: {why}")));
                }
                framing::Parsed::Head(h) => {
                    buf.advance(h.len);
                    let frame = match h.framing {
                        Framing::Empty | Framing::Length(0) => Frame::Done,
                        Framing::Length(n) => Frame::Length(n),
                        Framing::Chunked => Frame::Chunks(Chunks::new(u64::MAX)),
                        Framing::UntilClose => Frame::UntilClose,
                    };
                    let mut body = Body {
                        conn: Some(conn),
                        buf,
                        frame,
                        keep: h.after == After::KeepOn,
                        home,
                        stall,
                        timer: None,
                    };
                    if matches!(body.frame, Frame::Done) {
                        // No body to read (HEAD, 204, 304, a length of 0):
                        // actix-web never polls one, so the connection goes
                        // back now.
                        body.finish();
                    }
                    return Ok(Answer {
                        status: h.status,
                        headers: h.headers,
                        body,
                    });
                }
            }
        }
    }
}

/// A read as HTTP/1.1 bytes, with `Host` (the backend's: the caller has
/// removed the client's, with the hop-by-hop fields). Fields hyper's
/// client would refuse are left out, as it left them out; a method or
/// target it would refuse is refused.
pub fn encode_read(req: &ProxiedRequest, host: &str) -> Result<Bytes, String> {
    let target = &req.path_and_query;
    if req.method.is_empty() || !req.method.bytes().all(is_tchar) {
        return Err(format!("invalid method {:?}", req.method));
    }
    // No blanks or control bytes (bytes above ASCII pass, as `http::Uri`
    // lets them); a fragment is never sent (`super::fragment`).
    let allowed = |b: u8| (b.is_ascii_graphic() || b >= 0x80) && b != b'#';
    if target.is_empty() || !target.bytes().all(allowed) {
        return Err(format!("invalid request target {target:?}"));
    }
    // As `http::HeaderValue` takes them: no control bytes but tab.
    let value_ok = |value: &[u8]| {
        value
            .iter()
            .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
    };
    let fields = req
        .headers
        .iter()
        .filter(|(name, value)| !name.is_empty() && name.bytes().all(is_tchar) && value_ok(value))
        .map(|(name, value)| (name.as_bytes(), value.as_slice()));
    Ok(super::pipeline::encode(
        &req.method,
        target,
        host,
        fields,
        &[],
    ))
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where a body ends.
enum Frame {
    Length(u64),
    Chunks(Chunks),
    UntilClose,
    Done,
}

/// A read's answer body, as it arrives.
pub struct Body {
    conn: Option<Box<dyn Stream>>,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    frame: Frame,
    /// The backend keeps the connection open after this answer.
    keep: bool,
    /// The pool the connection goes back to (backend id, most idle).
    home: (usize, usize),
    stall: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body {
    /// The body is over: the connection goes back to its pool if nothing
    /// came after the answer and the backend keeps it open.
    fn finish(&mut self) {
        self.frame = Frame::Done;
        let Some(conn) = self.conn.take() else {
            return;
        };
        let (id, max_idle) = self.home;
        if !self.keep || !self.buf.is_empty() {
            return;
        }
        IDLE.with(|pools| {
            let mut pools = pools.borrow_mut();
            let pool = pools.entry(id).or_default();
            if pool.len() < max_idle {
                pool.push_back(Idle {
                    since: Instant::now(),
                    conn,
                });
            }
        });
    }

    /// The body cannot go on: its connection is dropped.
    fn fail(&mut self, why: String) -> Poll<Option<io::Result<Bytes>>> {
        self.conn = None;
        self.frame = Frame::Done;
        Poll::Ready(Some(Err(io::Error::other(why))))
    }

    /// Read more into the buffer: the bytes read (0 at the end of the
    /// connection), or why not.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if self.buf.capacity() - self.buf.len() < READ_ROOM / 2 {
            self.buf.reserve(READ_ROOM);
        }
        match tokio_util::io::poll_read_buf(Pin::new(conn), cx, &mut self.buf) {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no more of the answer within {stall:?}"),
                )))
            }
        }
    }
}

impl futures_core::Stream for Body {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.frame {
                Frame::Done | Frame::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Frame::Length(left) if !this.buf.is_empty() => {
                    let len = this
                        .buf
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= len as u64;
                    let data = this.buf.split_to(len).freeze();
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Frame::UntilClose if !this.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(this.buf.split().freeze())));
                }
                Frame::Chunks(chunks) => match chunks.step(&this.buf) {
                    ChunkStep::Data { skip, len } => {
                        this.buf.advance(skip);
                        return Poll::Ready(Some(Ok(this.buf.split_to(len).freeze())));
                    }
                    ChunkStep::Done { skip } => {
                        this.buf.advance(skip);
                        this.finish();
                        return Poll::Ready(None);
                    }
                    ChunkStep::More { skip, .. } => this.buf.advance(skip),
                    // No limit was set: never too large.
                    ChunkStep::TooLarge => return this.fail("chunked body too large".into()),
                    ChunkStep::Invalid(why) => {
                        return this.fail(format!("invalid chunked body: {why}"));
                    }
                },
                _ => {}
            }
            match ready!(this.poll_more(cx)) {
                Ok(0) if matches!(this.frame, Frame::UntilClose) => {
                    this.conn = None;
                    this.frame = Frame::Done;
                }
                Ok(0) => {
                    return this.fail(
                        "the answer was cut short: the backend closed the connection".into(),
                    );
                }
                Ok(_) => {}
                Err(e) => return this.fail(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(method: &str, target: &str, headers: &[(&str, &[u8])]) -> ProxiedRequest {
        ProxiedRequest {
            method: method.into(),
            path_and_query: target.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn a_read_is_sent_with_the_backends_host_and_its_valid_fields() {
        let req = read(
            "GET",
            "/kv/caf\u{e9}?q=1",
            &[
                ("accept", b"*/*"),
                ("x-bad", b"a\r\nx-smuggled: 1"),
                ("bad name", b"1"),
            ],
        );
        let bytes = encode_read(&req, "10.0.0.5:8000").unwrap();
        assert_eq!(
            &bytes[..],
            "GET /kv/caf\u{e9}?q=1 HTTP/1.1\r\nhost: 10.0.0.5:8000\r\naccept: */*\r\n\r\n"
                .as_bytes()
        );
    }

    #[test]
    fn a_method_or_target_that_would_split_the_request_is_refused() {
        for (method, target) in [
            ("GET", "/a b"),
            ("GET", "/a\r\nx: 1"),
            ("GET", "/a#frag"),
            ("GET", ""),
            ("GE T", "/a"),
            ("GET\r\n", "/a"),
        ] {
            let refused = encode_read(&read(method, target, &[]), "h");
            assert!(refused.is_err(), "{method:?} {target:?}");
        }
    }
}
