//! HTTP/1.1 pipelining on the applier's hop (`services[].backend_pipeline`).
//!
//! Without it every update costs the node one write and one read, and
//! the backend the same, each a trip through the TCP stack. At thousands
//! of updates a second those trips were the largest share of the
//! machine's CPU (`scripts/bench` under `perf`). Pipelined, the updates
//! the applier has out at once leave in one write, and their answers come
//! back in as few reads as the backend allows.
//!
//! A lane is one connection with up to `depth` requests on it. The
//! answers come back in the order the requests were sent, so a lane needs
//! no ids. Requests on one lane are processed in order and those on
//! different lanes side by side: the applier only has updates out
//! together when they commute (`apply::resource`), or one at a time.
//!
//! When a connection ends with requests unanswered:
//! - if the backend said `Connection: close` (or ended a body by closing),
//!   it has read nothing after that answer (RFC 9112 §9.6): the rest are
//!   sent again on a new connection (at most [`RESENDS`] times on
//!   connections that answered nothing);
//! - otherwise nobody knows whether they were applied. They fail like
//!   any lost answer, and the applier retries them under the same
//!   `Idempotency-Key`, which makes the repeat harmless.
//!
//! Every wait is bounded: connecting by `connect_timeout`, each read or
//! write by `request_timeout`, the requests queued on a lane by
//! [`Limits::queue`], and a body by `max_response_bytes`.

use super::request::Header;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Times one request is sent again after the backend closed a
/// connection before reading it, when that connection answered nothing
/// (a backend that closes after every answer still gets through the
/// queue, one answer per connection).
pub const RESENDS: u8 = 3;

/// The longest answer head read.
const MAX_HEAD: usize = 64 << 10;

/// Headers in one answer, at most (hyper's limit too).
const MAX_HEADERS: usize = 100;

/// Bytes gathered into one write.
const WRITE_BATCH: usize = 256 << 10;

/// What a lane may hold and how long it may wait.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests on one connection at once.
    pub depth: usize,
    /// Requests waiting for a lane, beyond which a call fails at once
    /// (and is retried by the applier).
    pub queue: usize,
    pub connect: Duration,
    /// The longest wait for any one read or write.
    pub request: Duration,
    /// An unused connection is closed after this.
    pub idle: Duration,
    /// The largest answer body.
    pub max_body: usize,
}

/// The backend's answer, whole.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Names in lower case, as hyper gives them.
    pub headers: Vec<Header>,
    pub body: Bytes,
}

/// How one request ended.
#[derive(Debug)]
pub enum Outcome {
    Answer(Answer),
    /// The body was over [`Limits::max_body`]; the backend did answer,
    /// with this status.
    TooLarge {
        status: u16,
    },
    /// No answer: why.
    Failed(String),
}

/// How a connection is made: plain TCP or TLS.
pub trait Connect: Send + Sync + 'static {
    fn connect(&self) -> BoxFuture<std::io::Result<Box<dyn Stream>>>;
}

pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A connection's byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

struct Job {
    request: Bytes,
    /// The answer to a HEAD has no body whatever it announces.
    head: bool,
    resent: u8,
    reply: oneshot::Sender<Outcome>,
}

impl Job {
    fn fail(self, why: &str) {
        let _ = self.reply.send(Outcome::Failed(why.to_string()));
    }
}

/// Lanes to one backend. Lanes start (and connect) on first use, on the
/// runtime of the caller.
pub struct Pipeline {
    lanes: Vec<std::sync::Mutex<Option<mpsc::Sender<Job>>>>,
    next: AtomicUsize,
    connector: Arc<dyn Connect>,
    limits: Limits,
}

impl Pipeline {
    pub fn new(lanes: usize, connector: Arc<dyn Connect>, limits: Limits) -> Pipeline {
        Pipeline {
            lanes: (0..lanes.max(1))
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            connector,
            limits,
        }
    }

    /// Send one encoded request (see [`encode_request`]) and wait for
    /// its answer. Call it on the runtime that is to drive the lanes.
    pub async fn send(&self, request: Bytes, head: bool) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            head,
            resent: 0,
            reply,
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let sent = {
            let mut lane = match self.lanes[i].lock() {
                Ok(lane) => lane,
                Err(poisoned) => poisoned.into_inner(),
            };
            // A lane whose task is gone (its runtime stopped) is started
            // again on this one.
            let tx = match lane.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::channel(self.limits.queue.max(1));
                    tokio::spawn(run_lane(rx, self.connector.clone(), self.limits.clone()));
                    *lane = Some(tx.clone());
                    tx
                }
            };
            tx.try_send(job)
        };
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                job.fail(&format!(
                    "more than {} requests waiting for one connection to the backend",
                    self.limits.queue
                ));
            }
            Err(mpsc::error::TrySendError::Closed(job)) => job.fail("the connection task stopped"),
        }
        answer
            .await
            .unwrap_or_else(|_| Outcome::Failed("the connection to the backend was lost".into()))
    }
}

/// One lane: connects when there is work, runs the connection until it
/// ends, and again.
async fn run_lane(mut jobs: mpsc::Receiver<Job>, connector: Arc<dyn Connect>, limits: Limits) {
    let mut again: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match again.pop_front() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let stream = match tokio::time::timeout(limits.connect, connector.connect()).await {
            Ok(Ok(stream)) => stream,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("cannot connect: {e}"),
                    _ => format!("cannot connect within {:?}", limits.connect),
                };
                // Everything waiting would wait for the same refusal.
                first.fail(&why);
                again.drain(..).for_each(|job| job.fail(&why));
                while let Ok(job) = jobs.try_recv() {
                    job.fail(&why);
                }
                continue;
            }
        };
        again.push_front(first);
        if connection(stream, &mut jobs, &mut again, &limits).await == Ended::Stopped {
            return;
        }
    }
}

#[derive(PartialEq, Eq, Debug)]
enum Ended {
    /// Reconnect when there is work.
    Closed,
    /// Nobody can send on this lane any more.
    Stopped,
}

struct Sent {
    job: Job,
    _permit: OwnedSemaphorePermit,
}

/// How the reading side ended.
struct ReadEnd {
    why: String,
    /// The backend read nothing after its last answer.
    resend: bool,
    /// It answered at least one request on this connection.
    answered: bool,
}

async fn connection(
    stream: Box<dyn Stream>,
    jobs: &mut mpsc::Receiver<Job>,
    again: &mut VecDeque<Job>,
    limits: &Limits,
) -> Ended {
    let (rd, wr) = tokio::io::split(stream);
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Sent>();
    let permits = Arc::new(Semaphore::new(limits.depth.max(1)));
    let mut front: Option<Sent> = None;
    let (read, ended) = tokio::select! {
        (ended, why) = write_side(wr, jobs, again, sent_tx, permits, limits) => {
            (ReadEnd { why, resend: false, answered: true }, ended)
        }
        read = read_side(rd, &mut sent_rx, &mut front, limits) => (read, Ended::Closed),
    };
    let unanswered = front
        .into_iter()
        .chain(std::iter::from_fn(|| sent_rx.try_recv().ok()));
    for Sent { mut job, .. } in unanswered {
        if read.resend && (read.answered || job.resent < RESENDS) && !job.reply.is_closed() {
            job.resent += u8::from(!read.answered);
            again.push_back(job);
        } else {
            job.fail(&read.why);
        }
    }
    ended
}

/// Takes requests (those to send again first), gathers those waiting into
/// one write, and hands each to the reading side before its bytes leave.
async fn write_side(
    mut wr: impl AsyncWrite + Unpin,
    jobs: &mut mpsc::Receiver<Job>,
    again: &mut VecDeque<Job>,
    sent: mpsc::UnboundedSender<Sent>,
    permits: Arc<Semaphore>,
    limits: &Limits,
) -> (Ended, String) {
    let depth = limits.depth.max(1);
    let mut batch = Vec::new();
    loop {
        // The permit first: a job is never held across a wait, where the
        // reading side's end would drop it unanswered.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return (Ended::Closed, "closed".into());
        };
        let job = match again.pop_front() {
            Some(job) => job,
            None if permits.available_permits() == depth - 1 => {
                match tokio::time::timeout(limits.idle, jobs.recv()).await {
                    Ok(Some(job)) => job,
                    Ok(None) => return (Ended::Stopped, "ordo is stopping".into()),
                    Err(_) => return (Ended::Closed, "idle".into()),
                }
            }
            None => match jobs.recv().await {
                Some(job) => job,
                None => return (Ended::Stopped, "ordo is stopping".into()),
            },
        };
        batch.clear();
        let mut next = Some((job, permit));
        while let Some((job, permit)) = next.take() {
            // A caller that gave up (its own timeout) is not sent.
            if !job.reply.is_closed() {
                batch.extend_from_slice(&job.request);
                if sent
                    .send(Sent {
                        job,
                        _permit: permit,
                    })
                    .is_err()
                {
                    return (Ended::Closed, "closed".into());
                }
            }
            if batch.len() >= WRITE_BATCH {
                break;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let job = match again.pop_front() {
                Some(job) => job,
                None => match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            next = Some((job, permit));
        }
        if batch.is_empty() {
            continue;
        }
        let write = async {
            wr.write_all(&batch).await?;
            wr.flush().await
        };
        match tokio::time::timeout(limits.request, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (Ended::Closed, format!("sending to the backend failed: {e}")),
            Err(_) => {
                return (
                    Ended::Closed,
                    format!("the backend took nothing for {:?}", limits.request),
                );
            }
        }
        if batch.capacity() > 2 * WRITE_BATCH {
            batch = Vec::new();
        }
    }
}

/// Reads answers in order and gives each to its request.
async fn read_side(
    mut rd: impl AsyncRead + Unpin,
    sent: &mut mpsc::UnboundedReceiver<Sent>,
    front: &mut Option<Sent>,
    limits: &Limits,
) -> ReadEnd {
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut answered = false;
    let fail = |why: String, resend: bool, answered: bool| ReadEnd {
        why,
        resend,
        answered,
    };
    loop {
        let Some(current) = front.as_ref() else {
            if !buf.is_empty() {
                // An answer already read, to a request whose hand-over
                // lost the race with its bytes: wait for it. (Reading on
                // could meet the end of the connection and take the
                // answers in the buffer for lost.)
                match sent.recv().await {
                    Some(next) => *front = Some(next),
                    None => return fail("closed".into(), false, answered),
                }
                continue;
            }
            // Nothing asked: wait for a request, and notice a backend
            // that closes the idle connection (its answers to what is
            // sent next could never come).
            tokio::select! {
                next = sent.recv() => match next {
                    Some(next) => *front = Some(next),
                    None => return fail("closed".into(), false, answered),
                },
                read = rd.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        return fail("the backend closed the connection".into(), true, answered);
                    }
                    // An answer to a request whose hand-over lost the
                    // race with its bytes; it is parsed once it is known.
                    Ok(_) => {}
                },
            }
            continue;
        };
        match parse(&buf, current.job.head, limits.max_body, false) {
            Parsed::Informational(n) => buf.advance(n),
            Parsed::Complete {
                answer,
                used,
                close,
            } => {
                buf.advance(used);
                if let Some(done) = front.take() {
                    let _ = done.job.reply.send(Outcome::Answer(answer));
                }
                answered = true;
                if close {
                    return fail("the backend closed the connection".into(), true, answered);
                }
            }
            Parsed::TooLarge { status } => {
                if let Some(done) = front.take() {
                    let _ = done.job.reply.send(Outcome::TooLarge { status });
                }
                // What follows cannot be found without reading the body.
                return fail(
                    "an earlier answer was too large to read".into(),
                    false,
                    answered,
                );
            }
            Parsed::Invalid(why) => return fail(format!("invalid answer: {why}"), false, answered),
            Parsed::Partial => {
                if buf.capacity() - buf.len() < 8 << 10 {
                    buf.reserve(buf.len().clamp(16 << 10, 1 << 20));
                }
                match tokio::time::timeout(limits.request, rd.read_buf(&mut buf)).await {
                    Ok(Ok(0)) => {
                        // The body may end with the connection.
                        let head = current.job.head;
                        return match parse(&buf, head, limits.max_body, true) {
                            Parsed::Complete { answer, .. } => {
                                if let Some(done) = front.take() {
                                    let _ = done.job.reply.send(Outcome::Answer(answer));
                                }
                                answered = true;
                                fail("the backend closed the connection".into(), true, answered)
                            }
                            _ => fail(
                                "the answer was cut short: the backend closed the connection"
                                    .into(),
                                false,
                                answered,
                            ),
                        };
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return fail(format!("reading the answer failed: {e}"), false, answered);
                    }
                    Err(_) => {
                        return fail(
                            format!("no answer within {:?}", limits.request),
                            false,
                            answered,
                        );
                    }
                }
            }
        }
    }
}

/// What the bytes so far hold.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Partial,
    /// A 1xx answer of `n` bytes, before the real one.
    Informational(usize),
    Complete {
        answer: Answer,
        used: usize,
        /// Nothing after this answer is read by the backend.
        close: bool,
    },
    TooLarge {
        status: u16,
    },
    Invalid(String),
}

/// One answer from the start of `buf`, framed as RFC 9112 §6.3 says.
/// `eof`: the connection has ended, which ends a body without a length.
fn parse(buf: &[u8], head: bool, limit: usize, eof: bool) -> Parsed {
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
    let mut close = http10;
    let mut chunked = false;
    let mut coded = false;
    let mut length: Option<u64> = None;
    let mut headers = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "connection" => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
            "transfer-encoding" => {
                coded = true;
                // Only the last coding frames the body.
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            "content-length" => {
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
            _ => {}
        }
        headers.push((name, h.value.to_vec()));
    }
    let rest = &buf[n..];
    let complete = |body: Bytes, used: usize, close: bool| Parsed::Complete {
        answer: Answer {
            status,
            headers: headers.clone(),
            body,
        },
        used: n + used,
        close,
    };
    if head || status == 204 || status == 304 {
        return complete(Bytes::new(), 0, close);
    }
    if coded {
        // With both, Transfer-Encoding frames the body; the connection
        // is not trusted after it (RFC 9112 §6.3).
        let close = close || length.is_some();
        if !chunked {
            return until_closed(rest, limit, eof, status, |body| {
                complete(body, rest.len(), true)
            });
        }
        return match dechunk(rest, limit) {
            Dechunked::Whole(body, used) => complete(body, used, close),
            Dechunked::Partial => Parsed::Partial,
            Dechunked::TooLarge => Parsed::TooLarge { status },
            Dechunked::Invalid(why) => Parsed::Invalid(why),
        };
    }
    if let Some(len) = length {
        if len > limit as u64 {
            return Parsed::TooLarge { status };
        }
        let len = len as usize;
        if rest.len() < len {
            return Parsed::Partial;
        }
        return complete(Bytes::copy_from_slice(&rest[..len]), len, close);
    }
    until_closed(rest, limit, eof, status, |body| {
        complete(body, rest.len(), true)
    })
}

/// A body that ends with the connection.
fn until_closed(
    rest: &[u8],
    limit: usize,
    eof: bool,
    status: u16,
    complete: impl FnOnce(Bytes) -> Parsed,
) -> Parsed {
    if rest.len() > limit {
        Parsed::TooLarge { status }
    } else if eof {
        complete(Bytes::copy_from_slice(rest))
    } else {
        Parsed::Partial
    }
}

enum Dechunked {
    Whole(Bytes, usize),
    Partial,
    TooLarge,
    Invalid(String),
}

/// A chunked body from the start of `data`: the body and the bytes used
/// (trailers read and dropped, as hyper does).
fn dechunk(data: &[u8], limit: usize) -> Dechunked {
    let mut body = BytesMut::new();
    let mut pos = 0;
    loop {
        let (used, size) = match httparse::parse_chunk_size(&data[pos..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) if data.len() - pos > MAX_HEAD => {
                return Dechunked::Invalid("chunk size line too long".into());
            }
            Ok(httparse::Status::Partial) => return Dechunked::Partial,
            Err(_) => return Dechunked::Invalid("malformed chunk size".into()),
        };
        pos += used;
        if size == 0 {
            // Trailer lines up to an empty one.
            loop {
                let Some(eol) = data[pos..].iter().position(|&b| b == b'\n') else {
                    return if data.len() - pos > MAX_HEAD {
                        Dechunked::Invalid("trailers too long".into())
                    } else {
                        Dechunked::Partial
                    };
                };
                let line = &data[pos..pos + eol];
                pos += eol + 1;
                if line.is_empty() || line == b"\r" {
                    return Dechunked::Whole(body.freeze(), pos);
                }
            }
        }
        if (body.len() as u64).saturating_add(size) > limit as u64 {
            return Dechunked::TooLarge;
        }
        let size = size as usize;
        if data.len() - pos < size + 2 {
            return Dechunked::Partial;
        }
        body.extend_from_slice(&data[pos..pos + size]);
        if &data[pos + size..pos + size + 2] != b"\r\n" {
            return Dechunked::Invalid("chunk not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

/// `req` as HTTP/1.1 bytes for `authority`, with `Host` and
/// `Content-Length` set as hyper sets them (the caller has removed both
/// and every hop-by-hop field).
pub fn encode_request(req: &http::Request<Bytes>, authority: &str) -> Bytes {
    let body = req.body();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = Vec::with_capacity(128 + target.len() + body.len() + 64 * req.headers().len());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::DELETE | http::Method::OPTIONS
    );
    if !body.is_empty() || !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 1 << 20;

    fn whole(buf: &[u8], head: bool) -> (Answer, usize, bool) {
        ended(buf, head, false)
    }

    /// The answer at the start of `buf`, which must be whole.
    fn ended(buf: &[u8], head: bool, eof: bool) -> (Answer, usize, bool) {
        match parse(buf, head, LIMIT, eof) {
            Parsed::Complete {
                answer,
                used,
                close,
            } => (answer, used, close),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_content_length_body_and_what_follows() {
        let two = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nETag: \"x\"\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n";
        let (a, used, close) = whole(two, false);
        assert_eq!((a.status, &a.body[..], close), (201, &b"ok"[..], false));
        assert_eq!(a.headers[1], ("etag".to_string(), b"\"x\"".to_vec()));
        let (b, used2, _) = whole(&two[used..], false);
        assert_eq!((b.status, b.body.len(), used + used2), (204, 0, two.len()));
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n1\r\nd\r\n0\r\nT: 1\r\n\r\nnext";
        let (a, used, close) = whole(r, false);
        assert_eq!(
            (&a.body[..], used, close),
            (&b"abcd"[..], r.len() - 4, false)
        );
        for cut in 0..r.len() - 4 {
            assert_eq!(
                parse(&r[..cut], false, LIMIT, false),
                Parsed::Partial,
                "{cut}"
            );
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n";
        assert!(matches!(
            parse(bad, false, LIMIT, false),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn bodies_that_are_not_there() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(whole(head, true).1, head.len());
        let not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(whole(not_modified, false).0.body.len(), 0);
        let cont = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert_eq!(parse(cont, false, LIMIT, false), Parsed::Informational(25));
    }

    #[test]
    fn closing_answers() {
        let said = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        assert!(whole(said, false).2);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(whole(old, false).2);
        let kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(!whole(kept, false).2);
        // No length: the body ends with the connection.
        let open = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(parse(open, false, LIMIT, false), Parsed::Partial);
        let (a, _, close) = ended(open, false, true);
        assert_eq!((&a.body[..], close), (&b"all of it"[..], true));
    }

    #[test]
    fn bad_and_oversized_answers() {
        let cases: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
        ];
        for case in cases {
            assert!(matches!(
                parse(case, false, LIMIT, false),
                Parsed::Invalid(_)
            ));
        }
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n";
        assert_eq!(
            parse(big, false, LIMIT, false),
            Parsed::TooLarge { status: 200 }
        );
        let same = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok";
        assert_eq!(whole(same, false).0.body, Bytes::from_static(b"ok"));
    }

    #[test]
    fn requests_carry_host_and_length_as_hyper_sends_them() {
        let req = http::Request::builder()
            .method("PUT")
            .uri("http://b:8/kv/a?x=1")
            .header("content-type", "text/plain")
            .body(Bytes::from_static(b"v"))
            .expect("request");
        assert_eq!(
            &encode_request(&req, "b:8")[..],
            b"PUT /kv/a?x=1 HTTP/1.1\r\nhost: b:8\r\ncontent-type: text/plain\r\ncontent-length: 1\r\n\r\nv"
        );
        let del = http::Request::builder()
            .method("DELETE")
            .uri("http://b:8/kv/a")
            .body(Bytes::new())
            .expect("request");
        assert_eq!(
            &encode_request(&del, "b:8")[..],
            b"DELETE /kv/a HTTP/1.1\r\nhost: b:8\r\n\r\n"
        );
    }

    proptest! {
        /// However the answers arrive, cut anywhere, each is found whole
        /// and only once all of its bytes are there.
        #[test]
        fn answers_are_found_whole_wherever_the_bytes_are_cut(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..5),
            chunk in 1usize..7,
            cut in any::<prop::sample::Index>(),
        ) {
            let mut wire = Vec::new();
            let mut ends = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                if i % 2 == 0 {
                    wire.extend_from_slice(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
                    wire.extend_from_slice(body);
                } else {
                    wire.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                    for piece in body.chunks(chunk) {
                        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        wire.extend_from_slice(piece);
                        wire.extend_from_slice(b"\r\n");
                    }
                    wire.extend_from_slice(b"0\r\n\r\n");
                }
                ends.push(wire.len());
            }
            let cut = cut.index(wire.len() + 1);
            let mut at = 0;
            for (body, end) in bodies.iter().zip(&ends) {
                let seen = &wire[at..cut.max(at)];
                match parse(seen, false, LIMIT, false) {
                    Parsed::Complete { answer, used, close } => {
                        prop_assert!(cut >= *end);
                        prop_assert_eq!(&answer.body[..], &body[..]);
                        prop_assert_eq!(at + used, *end);
                        prop_assert!(!close);
                        at = *end;
                    }
                    Parsed::Partial => {
                        prop_assert!(cut < *end);
                        break;
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
