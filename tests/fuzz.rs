//! Generated and mutated inputs for what reads bytes from outside the
//! process: peer frame decoding (every Paxos message), the update payload
//! and stored answer encodings, and the adapters' rewriting (the streamed
//! body rewriter, the fragment scanner, URL roots, Azure signatures and
//! the OData adapter). No input may panic, and none may make the code
//! allocate more than a bound proportional to the input.
//!
//! CI runs 20,000 cases per target (`cargo test --release --test fuzz`,
//! well under a second); `scripts/fuzz` runs millions. `ORDO_FUZZ_CASES` sets the count
//! per target and `ORDO_FUZZ_SEED` the seed (a failure prints both, and
//! the input).

use bytes::Bytes;
use ordo::adapter::azure::{Account, AzureStorage, Scheme, ToSign, string_to_sign};
use ordo::adapter::rewrite::Replace;
use ordo::adapter::{Adapter, Asked, Head, Roots};
use ordo::http::fragment::Scanner;
use ordo::http::request::{ProxiedRequest, StoredResponse};
use ordo::mesh::frame::{self, Frame};
use ordo::paxos::ballot::{Ballot, NodeId, Update, UpdateId, Value};
use ordo::paxos::membership::Eras;
use ordo::paxos::message::{AcceptedEntry, Message, Role};
use ordo::rng::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Counts the bytes allocated and keeps the peak since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Cases per target.
fn cases() -> u64 {
    std::env::var("ORDO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("ORDO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

/// The most a case may allocate above what was live before it: a fixed
/// allowance and a multiple of the input (decoders may copy their input a
/// few times, never blow it up).
fn allowance(input_len: usize) -> usize {
    (4 << 20) + 64 * input_len
}

/// Run `target` on `cases()` inputs from `make`; each must neither panic
/// nor allocate beyond [`allowance`]. Tests run one at a time in this
/// binary (a lock), so the counts are the case's own.
fn fuzz(name: &str, mut make: impl FnMut(&mut Rng) -> Vec<u8>, target: impl Fn(&[u8])) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    let mut rng = Rng::new(seed ^ name.len() as u64 ^ name.bytes().map(u64::from).sum::<u64>());
    let started = Instant::now();
    let n = cases();
    for case in 0..n {
        let input = make(&mut rng);
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        let used = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        let shown = || {
            let hex: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
            format!(
                "{name}: case {case} (ORDO_FUZZ_SEED={seed}), input {} bytes: {hex}",
                input.len()
            )
        };
        assert!(outcome.is_ok(), "panicked on {}", shown());
        assert!(
            used <= allowance(input.len()),
            "allocated {used} bytes on {}",
            shown()
        );
    }
    eprintln!(
        "fuzz {name}: {n} cases in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// `base` changed in one to four ways: bits and bytes, "interesting"
/// values (postcard's longest varints, lengths of u32::MAX), cuts,
/// insertions, duplicated ranges.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.range(1, 5) {
        let at = |rng: &mut Rng, v: &Vec<u8>| rng.below(v.len() as u64 + 1) as usize;
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len() as u64) as usize;
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len() as u64) as usize;
                v[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = at(rng, &v);
                let interesting: &[&[u8]] = &[
                    &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                    &[0x80, 0x80, 0x80, 0x80, 0x80],
                    &[0x00],
                    &[0x7f],
                ];
                let pick = interesting[rng.below(interesting.len() as u64) as usize];
                v.splice(i..i, pick.iter().copied());
            }
            3 => {
                let i = at(rng, &v);
                v.truncate(i);
            }
            4 => {
                let i = at(rng, &v);
                let n = rng.below(16) as usize;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(i..i, bytes);
            }
            5 if v.len() > 1 => {
                let a = rng.below(v.len() as u64) as usize;
                let b = (a + rng.below(32) as usize).min(v.len());
                let i = at(rng, &v);
                let dup = v[a..b].to_vec();
                v.splice(i..i, dup);
            }
            6 if !v.is_empty() => {
                let a = rng.below(v.len() as u64) as usize;
                let b = (a + rng.below(16) as usize).min(v.len());
                v.drain(a..b);
            }
            _ => {
                let n = rng.below(64) as usize;
                v = (0..n).map(|_| rng.next_u64() as u8).collect();
            }
        }
    }
    v
}

fn pick<'a, T>(rng: &mut Rng, of: &'a [T]) -> &'a T {
    &of[rng.below(of.len() as u64) as usize]
}

/// Every kind of message, with values big and small.
fn messages(rng: &mut Rng) -> Vec<Message> {
    let slot = rng.below(1 << 40);
    let ballot = Ballot {
        round: rng.below(1 << 40),
        node: NodeId(rng.below(8) as u16),
    };
    let update = Update {
        id: UpdateId {
            origin: NodeId(1),
            boot: rng.next_u64(),
            seq: rng.next_u64(),
        },
        key: Some(Bytes::from_static(b"client-key")),
        payload: request().encode(),
    };
    let value = Value::Batch(vec![update.clone()]);
    vec![
        Message::Prepare {
            ballot,
            from_slot: slot,
            takeover: rng.chance(0.5),
        },
        Message::Promise {
            ballot,
            chosen_upto: slot,
            accepted: vec![AcceptedEntry {
                slot,
                ballot,
                value: value.clone(),
            }],
            from_slot: slot,
            next_page: Some(slot + 1),
        },
        Message::Accept {
            ballot,
            slot,
            value: value.clone(),
        },
        Message::Accepted { ballot, slot },
        Message::Voted { ballot, slot },
        Message::Vote {
            ballot,
            slot,
            value: value.clone(),
        },
        Message::Chosen { ballot, slot },
        Message::Heartbeat {
            ballot,
            commit: slot,
            lease: true,
        },
        Message::Decided {
            slot,
            value: Value::Noop,
        },
        Message::Fetch {
            from_slot: slot,
            max: rng.next_u64() as u32,
        },
        Message::Entries {
            entries: vec![(slot, value), (slot + 1, Value::Noop)],
            commit: slot,
        },
        Message::Forward {
            updates: vec![update],
            hops: 1,
        },
        Message::Digests {
            entries: vec![(slot, rng.next_u64())],
            ask: true,
            answer: false,
        },
        Message::Rejected {
            ballot,
            promised: ballot,
        },
        Message::Confirm {
            ballot,
            seq: rng.next_u64(),
        },
        Message::ReadIndexReply {
            id: UpdateId {
                origin: NodeId(2),
                boot: 1,
                seq: 2,
            },
            index: slot,
        },
        Message::RebuildRound {
            nonce: rng.next_u64(),
            round: ballot.round,
        },
        Message::Compacted {
            upto: slot,
            commit: slot + 7,
        },
        Message::NeedsReseed { from: slot },
        Message::Reseeded {
            slot,
            eras: Some(Eras::genesis(&[NodeId(0), NodeId(1), NodeId(2)])),
        },
        Message::Reconfigured {
            eras: Eras::genesis(&[NodeId(0), NodeId(1)]),
        },
        Message::StartVoting { ballot },
        Message::Progress {
            ballot,
            commit: slot,
            applied: slot,
            fit: true,
            voting: false,
        },
        Message::TimeoutNow {
            ballot,
            commit: slot,
            by_operator: true,
        },
    ]
}

fn request() -> ProxiedRequest {
    ProxiedRequest {
        method: "PUT".into(),
        path_and_query: "/kv/a?x=1".into(),
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("host".into(), b"ordo.example:8080".to_vec()),
        ],
        body: Bytes::from_static(b"{\"v\":1}"),
    }
}

#[test]
fn peer_frames_never_panic_or_blow_up() {
    fuzz(
        "frames",
        |rng| {
            let frame = if rng.chance(0.1) {
                Frame::Hello {
                    cluster: "prod".into(),
                    node: "north".into(),
                    protocol: frame::PROTOCOL,
                }
            } else {
                let msgs = messages(rng);
                Frame::Msg {
                    group: "kv".into(),
                    role: *pick(
                        rng,
                        &[Role::Proposer, Role::Acceptor, Role::Learner, Role::Applier],
                    ),
                    msg: pick(rng, &msgs).clone(),
                }
            };
            let bytes = frame::encode(&frame, frame::MAX_FRAME_BYTES).expect("encodes");
            if rng.chance(0.2) {
                // Whole frames too, so that what follows decoding runs.
                bytes[4..].to_vec()
            } else {
                mutate(rng, &bytes[4..])
            }
        },
        |input| {
            if let Ok(Frame::Msg { msg, .. }) = frame::decode(input) {
                // What the driver asks of every message first.
                let _ = msg.absurd();
                let _ = msg.kind();
            }
        },
    );
}

#[test]
fn update_payloads_and_stored_answers_never_panic_or_blow_up() {
    fuzz(
        "payloads",
        |rng| {
            let base = if rng.chance(0.5) {
                request().encode()
            } else {
                StoredResponse::text("ordo: an answer").encode()
            };
            mutate(rng, &base)
        },
        |input| {
            let _ = ProxiedRequest::decode(input);
            let _ = ProxiedRequest::decode_head(input);
            let _ = StoredResponse::decode(input);
        },
    );
}

/// Up to `max` of `of`, one after the other (now and then cut short), so
/// that what a rewriter or parser looks for appears, whole and in part.
fn tokens(rng: &mut Rng, of: &[&str], max: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..rng.below(max) {
        let t = pick(rng, of).as_bytes();
        let n = if rng.chance(0.2) {
            rng.below(t.len() as u64 + 1) as usize
        } else {
            t.len()
        };
        v.extend_from_slice(&t[..n]);
    }
    v
}

#[test]
fn the_body_rewriter_streams_what_it_rewrites_whole() {
    fuzz(
        "rewrite",
        |rng| {
            tokens(
                rng,
                &[
                    "http://b1",
                    "http:\\/\\/b1",
                    "http:/",
                    "b1",
                    "x",
                    "/",
                    "0",
                    ":",
                    "\"",
                ],
                40,
            )
        },
        |input| {
            let r = Replace::urls([
                (b"http://b1".to_vec(), b"https://front".to_vec()),
                (b"http:\\/\\/b1".to_vec(), b"X".to_vec()),
            ])
            .expect("pairs");
            let whole = r.whole(input).map(|b| b.to_vec()).unwrap_or(input.to_vec());
            let mut s = r.streaming();
            let mut out = Vec::new();
            for chunk in input.chunks(7) {
                out.extend_from_slice(&s.push(chunk));
            }
            out.extend_from_slice(&s.finish());
            assert_eq!(out, whole);
        },
    );
}

#[test]
fn the_fragment_scanner_never_panics_and_never_lets_a_fragment_through() {
    let base: &[&[u8]] = &[
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];
    // The parser's date service lives on a local task set.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let _in_local = local.enter();
    let _in_rt = rt.enter();
    let config = actix_http::ServiceConfig::default();
    // The requests actix-http's own parser reads from `bytes`: method,
    // path and query.
    let parsed = |bytes: &[u8]| -> Vec<String> {
        use actix_codec::Decoder as _;
        let mut codec = actix_http::h1::Codec::new(config.clone());
        let mut buf = bytes::BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Ok(Some(m)) = codec.decode(&mut buf) {
            if let actix_http::h1::Message::Item(req) = m {
                out.push(format!("{} {}", req.method(), req.uri()));
            }
        }
        out
    };
    let untouched = std::cell::Cell::new(0u64);
    fuzz(
        "fragment",
        |rng| {
            let mut v = Vec::new();
            for _ in 0..rng.range(1, 5) {
                let one: &[u8] = pick::<&[u8]>(rng, base);
                if rng.chance(0.5) {
                    v.extend_from_slice(&mutate(rng, one));
                } else {
                    v.extend_from_slice(one);
                }
            }
            v.extend_from_slice(b"DELETE /coll/#f HTTP/1.1\r\nHost: a\r\n\r\n");
            v
        },
        |input| {
            let mut bytes = input.to_vec();
            let mut s = Scanner::default();
            // Reads cut anywhere.
            let step = 1 + input.len() % 23;
            for chunk in bytes.chunks_mut(step) {
                s.scan(chunk);
            }
            let before = parsed(input);
            let after = parsed(&bytes);
            // The parser never gets the request with the fragment (it
            // would read it as `DELETE /coll/`)...
            assert!(
                !after.iter().any(|r| r == "DELETE /coll/"),
                "the parser got the request with the fragment: {after:?}"
            );
            // ...and gets nothing the client did not send: what it reads
            // after the scanner is what it reads without it, cut short.
            assert!(
                before.starts_with(&after),
                "the scanner changed a request: {before:?} -> {after:?}"
            );
            // Everything before the request with the fragment passed.
            let upto = before.iter().take_while(|r| *r != "DELETE /coll/").count();
            if after.len() == upto {
                untouched.set(untouched.get() + 1);
            }
        },
    );
    // Traffic the parser reads whole passes whole: a scanner that cut
    // everything would fail here.
    let share = untouched.get() as f64 / cases() as f64;
    eprintln!("fuzz fragment: {share:.3} of the cases passed whole up to the fragment");
    assert!(share > 0.9, "only {share:.3} of the cases passed whole");
}

#[test]
fn url_roots_and_the_adapters_never_panic() {
    let roots = Roots {
        presented: Some("https://ordo.example/mymovies".into()),
        backend: "http://127.0.0.1:10000/devstoreaccount1".into(),
    };
    let key = "b3JkbyBwcmVzZW50cyB0aGlzIGtleSB0byBpdHMgY2xpZW50cyE=";
    let azure = AzureStorage {
        presented: Account::new("mymovies", key).expect("key"),
        real: Account::new("devstoreaccount1", key).expect("key"),
    };
    let parts = [
        "https://ordo.example/mymovies",
        "http://127.0.0.1:10000/devstoreaccount1",
        "http:\\/\\/127.0.0.1:10000\\/devstoreaccount1",
        "/c/b",
        "?comp=list",
        "&restype=container",
        "%2F",
        "#",
        "<Error><Code>",
        "</Code><Message>",
        "\nRequestId:1\nTime:2",
        "</Message></Error>",
        "Tue, 01 Dec 2026 04:10:50 GMT",
        "x",
        "\r\n",
        "é",
    ];
    fuzz(
        "adapters",
        |rng| {
            let mut v = tokens(rng, &parts, 24);
            if rng.chance(0.1) {
                v = mutate(rng, &v);
            }
            v
        },
        |input| {
            let text = String::from_utf8_lossy(input);
            let _ = roots.to_backend(&text);
            let _ = roots.to_presented(&text);
            let (path, value) = input.split_at(input.len() / 2);
            let (path, value) = (
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(value),
            );
            let headers = vec![
                ("x-ms-date".to_string(), value.as_bytes().to_vec()),
                ("x-ms-meta-a".to_string(), input.to_vec()),
                (
                    "authorization".to_string(),
                    format!("SharedKey mymovies:{value}").into_bytes(),
                ),
            ];
            let path = format!("/{path}");
            let _ = string_to_sign(
                Scheme::SharedKey,
                "mymovies",
                &ToSign {
                    method: "PUT",
                    path_and_query: &path,
                    headers: &headers,
                    content_length: Some(input.len() as u64),
                },
            );
            let _ = azure.authenticate(&Head {
                method: "PUT",
                path_and_query: &path,
                headers: &headers,
                content_length: None,
            });
            let mut req = ProxiedRequest {
                method: "PUT".into(),
                path_and_query: path.clone(),
                headers: headers.clone(),
                body: Bytes::copy_from_slice(input),
            };
            let _ = azure.to_backend(&roots, &mut req);
            let _ = azure.settle_answer(409, Bytes::copy_from_slice(input));
            let asked = Asked {
                method: "GET".into(),
                path_and_query: format!("{path}?comp=list"),
            };
            let json = [("content-type".to_string(), b"application/json".to_vec())];
            let odata = ordo::adapter::odata::OData;
            if let Some(r) = odata.answer_body(&roots, &asked, &json) {
                let _ = r.whole(input);
            }
            let mut req = ProxiedRequest {
                headers: json.to_vec(),
                ..req
            };
            let _ = odata.to_backend(&roots, &mut req);
        },
    );
}
