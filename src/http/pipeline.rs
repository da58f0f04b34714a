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
//! Every wait is bounded: connecting by `connect_timeout`, each write and
//! each whole answer by `request_timeout`, the requests queued on a lane
//! by [`Limits::queue`], a head by 400 KiB, and a body by
//! `max_response_bytes`.

use super::framing::{self, After, Dechunked, Framing, dechunk};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Times one request is sent again after the backend closed a
/// connection before reading it, when that connection answered nothing
/// (a backend that closes after every answer still gets through the
/// queue, one answer per connection).
pub const RESENDS: u8 = 3;

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
    /// The longest wait for one write, or for one whole answer.
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
    pub headers: http::HeaderMap,
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
    connector: Arc<dyn Connect>,
    limits: Limits,
}

impl Pipeline {
    pub fn new(lanes: usize, connector: Arc<dyn Connect>, limits: Limits) -> Pipeline {
        Pipeline {
            lanes: (0..lanes.max(1))
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
            connector,
            limits,
        }
    }

    /// Send one encoded request (see [`encode_request`]) on the lane
    /// `lane` picks, and wait for its answer. Call it on the runtime that
    /// is to drive the lanes.
    ///
    /// Requests for one resource must share a lane. A request whose
    /// caller gave up (its timeout) may still be in the lane, written or
    /// about to be read by the backend; the applier then sends it again
    /// and goes on to the resource's next update. On one connection
    /// those reach the backend in that order; on two, the stale one
    /// could land last.
    pub async fn send(&self, request: Bytes, head: bool, lane: u64) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            head,
            resent: 0,
            reply,
        };
        let i = (lane % self.lanes.len() as u64) as usize;
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
            // Nothing is sent again after a failed write.
            (ReadEnd { why, resend: false, answered: false }, ended)
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
    let end = |why: &str, resend: bool, answered: bool| ReadEnd {
        why: why.to_string(),
        resend,
        answered,
    };
    // The current answer's deadline, and the bytes it needs before it is
    // parsed again.
    let mut deadline = tokio::time::Instant::now();
    let mut need = 0;
    loop {
        let Some(current) = front.as_ref() else {
            // The writing side hands a request over before writing it,
            // and both sides run in this one task: bytes that arrive
            // while nothing is handed over were not asked for (a
            // backend's 408 on its idle timeout, say). Taken for the
            // next request's answer, they would misplace every answer.
            let next = match sent.try_recv() {
                Ok(next) => Some(next),
                Err(_) if !buf.is_empty() => {
                    return end("the backend sent what nobody asked for", false, answered);
                }
                Err(_) => tokio::select! {
                    biased;
                    next = sent.recv() => match next {
                        Some(next) => Some(next),
                        None => return end("closed", false, answered),
                    },
                    // Notice a backend that closes the idle connection:
                    // nothing is outstanding, so nothing is lost.
                    read = rd.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => {
                            return end("the backend closed the connection", true, answered);
                        }
                        Ok(_) => {
                            return end("the backend sent what nobody asked for", false, answered);
                        }
                    },
                },
            };
            *front = next;
            deadline = tokio::time::Instant::now() + limits.request;
            need = 0;
            continue;
        };
        let parsed = if buf.len() >= need {
            parse(&buf, current.job.head, limits.max_body, false)
        } else {
            Parsed::Partial(need)
        };
        match parsed {
            Parsed::Informational(n) => buf.advance(n),
            Parsed::Complete {
                answer,
                used,
                after,
            } => {
                buf.advance(used);
                if let Some(done) = front.take() {
                    let _ = done.job.reply.send(Outcome::Answer(answer));
                }
                answered = true;
                match after {
                    After::KeepOn => {}
                    After::Closes => return end("the backend closed the connection", true, true),
                    After::Distrusted => {
                        return end("an earlier answer's framing was ambiguous", false, true);
                    }
                }
            }
            Parsed::TooLarge { status } => {
                if let Some(done) = front.take() {
                    let _ = done.job.reply.send(Outcome::TooLarge { status });
                }
                // What follows cannot be found without reading the body.
                return end("an earlier answer was too large to read", false, answered);
            }
            Parsed::Invalid(why) => {
                return end(&format!("invalid answer: {why}"), false, answered);
            }
            Parsed::Partial(more) => {
                need = more;
                if buf.capacity() - buf.len() < 8 << 10 {
                    buf.reserve(buf.len().clamp(16 << 10, 1 << 20));
                }
                match tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await {
                    Ok(Ok(0)) => {
                        // The body may end with the connection.
                        let head = current.job.head;
                        if let Parsed::Complete { answer, .. } =
                            parse(&buf, head, limits.max_body, true)
                        {
                            if let Some(done) = front.take() {
                                let _ = done.job.reply.send(Outcome::Answer(answer));
                            }
                            return end("the backend closed the connection", true, true);
                        }
                        return end(
                            "the answer was cut short: the backend closed the connection",
                            false,
                            answered,
                        );
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return end(&format!("reading the answer failed: {e}"), false, answered);
                    }
                    Err(_) => {
                        let why = format!("no whole answer within {:?}", limits.request);
                        return end(&why, false, answered);
                    }
                }
            }
        }
    }
}

/// What the bytes so far hold.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Not yet: nothing can change before the buffer holds this many
    /// bytes (so that a large body is not parsed again on every read).
    Partial(usize),
    /// A 1xx answer of `n` bytes, before the real one.
    Informational(usize),
    Complete {
        answer: Answer,
        used: usize,
        after: After,
    },
    TooLarge {
        status: u16,
    },
    Invalid(String),
}

/// One whole answer from the start of `buf` (`framing` reads its head).
/// `eof`: the connection has ended, which ends a body without a length.
fn parse(buf: &[u8], head: bool, limit: usize, eof: bool) -> Parsed {
    let h = match framing::parse_head(buf, head) {
        framing::Parsed::Head(h) => h,
        framing::Parsed::Partial => return Parsed::Partial(buf.len() + 1),
        framing::Parsed::Informational(n) => return Parsed::Informational(n),
        framing::Parsed::Invalid(why) => return Parsed::Invalid(why),
    };
    let (n, status, after) = (h.len, h.status, h.after);
    let rest = &buf[n..];
    let complete = |body: Bytes, used: usize, after: After| Parsed::Complete {
        answer: Answer {
            status,
            headers: h.headers,
            body,
        },
        used: n + used,
        after,
    };
    match h.framing {
        Framing::Empty => complete(Bytes::new(), 0, after),
        Framing::Chunked => match dechunk(rest, limit) {
            Dechunked::Whole(body, used) => complete(body, used, after),
            Dechunked::Partial(need) => Parsed::Partial(n + need),
            Dechunked::TooLarge => Parsed::TooLarge { status },
            Dechunked::Invalid(why) => Parsed::Invalid(why),
        },
        Framing::Length(len) => {
            if len > limit as u64 {
                return Parsed::TooLarge { status };
            }
            let len = len as usize;
            if rest.len() < len {
                return Parsed::Partial(n + len);
            }
            complete(Bytes::copy_from_slice(&rest[..len]), len, after)
        }
        Framing::UntilClose => {
            if rest.len() > limit {
                Parsed::TooLarge { status }
            } else if eof {
                complete(Bytes::copy_from_slice(rest), rest.len(), after)
            } else {
                Parsed::Partial(buf.len() + 1)
            }
        }
    }
}

/// `req` as HTTP/1.1 bytes, with `Host` (`host`: the backend's host and
/// any port that is not its scheme's default) and `Content-Length` (for
/// a body that is not empty) as hyper's client sets them. The caller has
/// removed both from `req`, and every hop-by-hop field.
pub fn encode_request(req: &http::Request<Bytes>, host: &str) -> Bytes {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let fields = req
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
    encode(req.method().as_str(), target, host, fields, req.body())
}

/// A request as HTTP/1.1 bytes: its line, `Host`, `fields`, and a
/// `Content-Length` for a body that is not empty. The one writer of
/// requests to a backend (`encode_request` for updates, `reads` for
/// reads); the callers check what they pass.
pub(crate) fn encode<'a>(
    method: &str,
    target: &str,
    host: &str,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    body: &[u8],
) -> Bytes {
    let mut out = Vec::with_capacity(256 + target.len() + host.len() + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
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

    fn whole(buf: &[u8], head: bool) -> (Answer, usize, After) {
        ended(buf, head, false)
    }

    /// The answer at the start of `buf`, which must be whole.
    fn ended(buf: &[u8], head: bool, eof: bool) -> (Answer, usize, After) {
        match parse(buf, head, LIMIT, eof) {
            Parsed::Complete {
                answer,
                used,
                after,
            } => (answer, used, after),
            other => panic!("{other:?}"),
        }
    }

    fn partial(p: Parsed) -> bool {
        matches!(p, Parsed::Partial(_))
    }

    #[test]
    fn a_content_length_body_and_what_follows() {
        let two = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nETag: \"x\"\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n";
        let (a, used, after) = whole(two, false);
        assert_eq!(
            (a.status, &a.body[..], after),
            (201, &b"ok"[..], After::KeepOn)
        );
        assert_eq!(a.headers["etag"], "\"x\"");
        let (b, used2, _) = whole(&two[used..], false);
        assert_eq!((b.status, b.body.len(), used + used2), (204, 0, two.len()));
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n1\r\nd\r\n0\r\nT: 1\r\n\r\nnext";
        let (a, used, after) = whole(r, false);
        assert_eq!(
            (&a.body[..], used, after),
            (&b"abcd"[..], r.len() - 4, After::KeepOn)
        );
        for cut in 0..r.len() - 4 {
            assert!(partial(parse(&r[..cut], false, LIMIT, false)), "{cut}");
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
        assert_eq!(whole(said, false).2, After::Closes);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(whole(old, false).2, After::Closes);
        let kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(whole(kept, false).2, After::KeepOn);
        // No length: the body ends with the connection.
        let open = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert!(partial(parse(open, false, LIMIT, false)));
        let (a, _, after) = ended(open, false, true);
        assert_eq!((&a.body[..], after), (&b"all of it"[..], After::Closes));
        // Both framings: the body as chunked says, and the connection is
        // not trusted with what was sent behind it.
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
        let (a, _, after) = whole(both, false);
        assert_eq!((&a.body[..], after), (&b"x"[..], After::Distrusted));
    }

    #[test]
    fn bad_and_oversized_answers() {
        let cases: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
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
        // Framing that outgrows its body: extensions, or trailers
        // without end, are refused before they fill memory.
        let mut ext = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            ext.extend_from_slice(format!("1;{}\r\nx\r\n", "e".repeat(60 << 10)).as_bytes());
        }
        assert!(matches!(
            parse(&ext, false, LIMIT, false),
            Parsed::Invalid(_)
        ));
        let mut trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        trailers.extend(b"a: b\r\n".repeat(100_000));
        assert!(matches!(
            parse(&trailers, false, LIMIT, false),
            Parsed::Invalid(_)
        ));
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
        // An empty body: no Content-Length, whatever the method.
        let empty = http::Request::builder()
            .method("PUT")
            .uri("http://b:8/kv/a")
            .body(Bytes::new())
            .expect("request");
        assert_eq!(
            &encode_request(&empty, "b:8")[..],
            b"PUT /kv/a HTTP/1.1\r\nhost: b:8\r\n\r\n"
        );
    }

    proptest! {
        /// However the answers arrive, cut anywhere, each is found whole
        /// and only once all of its bytes are there; and the bytes an
        /// incomplete answer says it needs never reach past its end (the
        /// reader waits for them before parsing again).
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
                    Parsed::Complete { answer, used, after } => {
                        prop_assert!(cut >= *end);
                        prop_assert_eq!(&answer.body[..], &body[..]);
                        prop_assert_eq!(at + used, *end);
                        prop_assert_eq!(after, After::KeepOn);
                        at = *end;
                    }
                    Parsed::Partial(need) => {
                        prop_assert!(cut < *end);
                        prop_assert!(need > seen.len());
                        prop_assert!(at + need <= *end, "needs {} past the end", at + need - *end);
                        break;
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
