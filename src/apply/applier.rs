//! The applier: applies chosen slots to the local backend, in slot
//! order, one update at a time, and never skips one.
//!
//! A retryable failure (no answer, 408, 429, 500, 502, 503, 504) is
//! retried with capped exponential backoff, forever: skipping would make
//! this backend differ from every other. Any other response is that
//! update's deterministic result. The applied index is written after each
//! slot but not synced on its own: after a crash a slot may be applied
//! again, which the `Idempotency-Key` (cluster, service, slot, index)
//! makes harmless.
//!
//! Duplicate updates (the same `UpdateId` chosen twice, which forwarding
//! retries can cause) are skipped. That decision is replicated state: it
//! depends only on the log (ids seen in the last `dedupe_window_slots`
//! slots), so every node skips the same ones.
//!
//! A client's own `Idempotency-Key` works the same way, across nodes and
//! failovers: an update whose key was applied in one of the last
//! `client_key_window_slots` slots is not applied again, and its origin
//! answers with the stored first answer. The records live in the node
//! table, written before the applied index moves past them (so a crash
//! cannot keep the index and lose the record), and are looked up by key;
//! whether one counts depends only on its slot, so a record whose delete
//! was lost in a crash changes nothing.

use crate::paxos::ballot::{NodeId, Slot, Update, UpdateId, Value};
use crate::paxos::command::{BackendReply, ClientOutcome, Command, Ctx, Timer};
use crate::paxos::message::Message;
use crate::paxos::state::{self, Meta};
use crate::storage::kv::Kv;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ApplierConfig {
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub dedupe_window_slots: u64,
    /// How long (in slots) a client idempotency key is remembered.
    pub client_key_window_slots: u64,
    /// Test-only breakage: apply every retry again, ignoring client keys.
    pub bug_ignore_client_keys: bool,
}

impl Default for ApplierConfig {
    fn default() -> Self {
        ApplierConfig {
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_secs(5),
            dedupe_window_slots: 100_000,
            client_key_window_slots: 1_000_000,
            bug_ignore_client_keys: false,
        }
    }
}

/// True for backend statuses that say "try again", not "this is the
/// answer" (MISSION, Applying).
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

struct Current {
    slot: Slot,
    updates: Vec<Update>,
    index: usize,
    /// A call is out to the backend (else a retry timer is pending).
    calling: bool,
    attempts: u32,
}

/// The first application of client key `key`, if it is within the
/// window and before update `index` of `slot`: then this one is a retry.
/// A record at this very (slot, index) is a re-application after a crash,
/// not a retry: it is applied again (the backend's idempotency covers it).
fn first_use(
    kv: &dyn Kv,
    key: &[u8],
    window: u64,
    slot: Slot,
    index: usize,
) -> Option<state::ClientKeyRecord> {
    let oldest = slot.saturating_sub(window);
    state::load_client_key(kv, key)
        .filter(|r| r.slot >= oldest && (r.slot, r.index as usize) < (slot, index))
}

/// One applied update, for observers (the sim's prefix checks, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Update {
        slot: Slot,
        id: UpdateId,
        status: u16,
    },
    Duplicate {
        slot: Slot,
        id: UpdateId,
    },
}

pub struct Applier {
    id: NodeId,
    cfg: ApplierConfig,
    applied: Slot,
    commit: Slot,
    current: Option<Current>,
    /// Update ids applied in recent slots, oldest first, for dedupe.
    recent: BTreeMap<UpdateId, Slot>,
    recent_order: VecDeque<(Slot, UpdateId)>,
    /// Stored client keys by slot, oldest first, to delete expired ones.
    client_keys: VecDeque<(Slot, Vec<u8>)>,
    /// What was applied since the driver last drained it.
    pub journal: Vec<Applied>,
    pub dropped: u64,
}

impl Applier {
    pub fn recover(id: NodeId, cfg: ApplierConfig, ctx: &mut Ctx<'_>) -> Applier {
        let applied = state::load_u64(&*ctx.kv, Meta::Applied);
        let commit = state::last_chosen_slot(&*ctx.kv);
        assert!(
            applied <= commit,
            "applied {applied} beyond the log's {commit}"
        );
        let mut a = Applier {
            id,
            cfg,
            applied,
            commit,
            current: None,
            recent: BTreeMap::new(),
            recent_order: VecDeque::new(),
            client_keys: VecDeque::new(),
            journal: Vec::new(),
            dropped: 0,
        };
        // Rebuild the dedupe window exactly as live application built it.
        let first = (applied + 1)
            .saturating_sub(a.cfg.dedupe_window_slots)
            .max(1);
        let mut from = first;
        while from <= applied {
            let page = state::load_chosen_range(&*ctx.kv, from, 256);
            let Some(last) = page.last().map(|e| e.0) else {
                break;
            };
            for (slot, value) in page.into_iter().take_while(|(s, _)| *s <= applied) {
                for u in value.updates() {
                    a.remember(slot, u.id);
                }
            }
            from = last + 1;
        }
        let mut keys = state::load_client_keys(&*ctx.kv);
        keys.sort_by_key(|(_, slot)| *slot);
        a.client_keys = keys.into_iter().map(|(k, s)| (s, k)).collect();
        a.resume(ctx);
        a
    }

    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// Retrying a slot the backend keeps refusing.
    pub fn stuck_attempts(&self) -> u32 {
        self.current.as_ref().map_or(0, |c| c.attempts)
    }

    pub fn on_message(&mut self, ctx: &mut Ctx<'_>, from: NodeId, msg: Message) {
        match msg {
            Message::Committed { commit } if from == self.id => {
                self.commit = self.commit.max(commit);
                self.resume(ctx);
            }
            _ => self.dropped += 1,
        }
    }

    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        if timer != Timer::ApplyRetry {
            return;
        }
        if let Some(c) = &self.current {
            if !c.calling {
                self.call(ctx);
            }
        }
    }

    /// The backend's reply to `Command::Apply { slot, index, .. }`.
    pub fn on_backend_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        slot: Slot,
        index: u32,
        reply: BackendReply,
    ) {
        let Some(c) = self.current.as_mut() else {
            self.dropped += 1;
            return;
        };
        if c.slot != slot || c.index != index as usize || !c.calling {
            self.dropped += 1;
            return;
        }
        c.calling = false;
        let status = match &reply {
            BackendReply::Response { status, body } if !is_retryable(*status) => {
                let id = c.updates[c.index].id;
                if id.origin == self.id {
                    ctx.client(ClientOutcome::Answer {
                        id,
                        slot,
                        status: *status,
                        body: body.clone(),
                    });
                }
                *status
            }
            _ => {
                c.attempts += 1;
                let base = self.cfg.retry_base.as_micros() as u64;
                let cap = self.cfg.retry_max.as_micros() as u64;
                let backoff = base.saturating_mul(1 << c.attempts.min(20)).min(cap);
                let wait = Duration::from_micros(ctx.rng.range(backoff / 2, backoff));
                ctx.set_timer(Timer::ApplyRetry, ctx.now + wait);
                return;
            }
        };
        let id = c.updates[c.index].id;
        if let (Some(key), BackendReply::Response { body, .. }) = (&c.updates[c.index].key, &reply)
        {
            let rec = state::ClientKeyRecord {
                slot,
                index,
                status,
                body: body.clone(),
            };
            state::store_client_key(ctx.kv, key, &rec);
            self.client_keys.push_back((slot, key.to_vec()));
        }
        self.remember(slot, id);
        self.journal.push(Applied::Update { slot, id, status });
        if let Some(c) = self.current.as_mut() {
            c.index += 1;
            c.attempts = 0;
        }
        self.resume(ctx);
    }

    /// The rule, live and on rebuild alike: an id is a duplicate at slot
    /// `s` if any copy of it is in a slot within the window before `s`;
    /// the map holds each id's latest slot.
    fn remember(&mut self, slot: Slot, id: UpdateId) {
        self.recent.insert(id, slot);
        self.recent_order.push_back((slot, id));
    }

    /// Forget ids from slots that left the window before `slot` applies.
    fn expire(&mut self, slot: Slot, kv: &mut dyn Kv) {
        let oldest_key = slot.saturating_sub(self.cfg.client_key_window_slots);
        while let Some((s, _)) = self.client_keys.front() {
            if *s >= oldest_key {
                break;
            }
            if let Some((s, key)) = self.client_keys.pop_front() {
                // Overwritten by a later use of the same key: keep it.
                if state::load_client_key(kv, &key).is_some_and(|r| r.slot == s) {
                    state::forget_client_key(kv, &key);
                }
            }
        }
        let oldest = slot.saturating_sub(self.cfg.dedupe_window_slots);
        while let Some(&(s, id)) = self.recent_order.front() {
            if s >= oldest {
                break;
            }
            self.recent_order.pop_front();
            if self.recent.get(&id) == Some(&s) {
                self.recent.remove(&id);
            }
        }
    }

    /// Apply as far as the commit index allows, or until a backend call
    /// is out.
    fn resume(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            if let Some(c) = self.current.as_mut() {
                if c.calling || c.attempts > 0 {
                    return;
                }
                // Skip duplicates, then call for the next update.
                while c.index < c.updates.len() {
                    let u = &c.updates[c.index];
                    let id = u.id;
                    if self.recent.contains_key(&id) {
                        // Seen within the window: remember this latest
                        // copy too, as a rebuild from the log would.
                        self.recent.insert(id, c.slot);
                        self.recent_order.push_back((c.slot, id));
                    } else {
                        let window = self.cfg.client_key_window_slots;
                        let first = u
                            .key
                            .as_ref()
                            .filter(|_| !self.cfg.bug_ignore_client_keys)
                            .and_then(|k| first_use(&*ctx.kv, k, window, c.slot, c.index));
                        let Some(first) = first else {
                            break;
                        };
                        // A client retry: answered with the first answer.
                        if id.origin == self.id {
                            ctx.client(ClientOutcome::Answer {
                                id,
                                slot: first.slot,
                                status: first.status,
                                body: first.body,
                            });
                        }
                        self.recent.insert(id, c.slot);
                        self.recent_order.push_back((c.slot, id));
                    }
                    self.journal.push(Applied::Duplicate { slot: c.slot, id });
                    c.index += 1;
                }
                if c.index < c.updates.len() {
                    self.call(ctx);
                    return;
                }
                let slot = c.slot;
                self.current = None;
                self.finish(ctx, slot);
                continue;
            }
            if self.applied >= self.commit {
                return;
            }
            let slot = self.applied + 1;
            self.expire(slot, ctx.kv);
            let value = state::load_chosen(&*ctx.kv, slot);
            let Some(value) = value else {
                panic!("slot {slot} is committed but not in the log");
            };
            match value {
                Value::Noop => self.finish(ctx, slot),
                Value::Batch(updates) => {
                    self.current = Some(Current {
                        slot,
                        updates,
                        index: 0,
                        calling: false,
                        attempts: 0,
                    });
                }
            }
        }
    }

    fn call(&mut self, ctx: &mut Ctx<'_>) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        c.calling = true;
        ctx.out.push(Command::Apply {
            slot: c.slot,
            index: c.index as u32,
            update: c.updates[c.index].clone(),
        });
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>, slot: Slot) {
        assert_eq!(slot, self.applied + 1, "slots apply in order");
        assert!(slot <= self.commit, "applied must not pass commit");
        self.applied = slot;
        state::store_u64(ctx.kv, Meta::Applied, slot);
    }
}
