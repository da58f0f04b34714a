//! The acceptor (Paxos Made Simple §2.2, phase 1b and 2b).
//!
//! Promises only a ballot above the one promised (a repeated request gets
//! the same answer), accepts only at a ballot at least the one promised,
//! and every reply that reflects a write leaves only after that write is
//! synced (`send_durable`). Entries at or below the node's commit index
//! are forgotten: they are chosen and live in the log, and a promise says
//! so with `chosen_upto` so a new leader leaves those slots alone.
//!
//! Leader stickiness: while the acceptor hears from the leader it promised
//! (accepts, confirmation rounds) within `leader_lease`, it refuses to
//! promise a higher ballot to anyone else, unless the prepare is the
//! preferred leader's takeover. Refusing is always safe; this stops a node
//! that cannot hear the leader (a one-way cut) from deposing it again and
//! again.
//!
//! Promise paging: a promise reports what was accepted from the requested
//! slot on, but at most `promise_bytes_max` bytes of it per message (and
//! always at least one entry), so that a promise fits in a peer frame
//! however large the accepted values are. A page that stops short names
//! the slot to continue from; the candidate asks again with a `Prepare`
//! at the same ballot from there, which is a repeat of the promised
//! ballot and so gets the same kind of answer: a page from the new start.
//! Why the pages together are as good as one promise is argued at
//! `Proposer::on_promise`.

use super::ballot::{Ballot, NodeId, Slot, Value};
use super::command::Ctx;
use super::message::{AcceptedEntry, Message, Role, entry_cost};
use crate::paxos::state;
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Test-only protocol breakage, so tests can show the checkers catch a
/// broken acceptor. Never set outside tests and the sim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptorBugs {
    /// Accept at any ballot, forgetting the promise made in phase 1.
    pub forget_promise: bool,
    /// Send a `Promise` before the sync that covers it.
    pub promise_before_sync: bool,
    /// Vote at once after losing the whole store (no rebuild).
    pub vote_after_amnesia: bool,
}

/// The acceptor's settings.
#[derive(Clone, Debug)]
pub struct AcceptorConfig {
    /// How long the leader of the promised ballot stays "live" after it
    /// was last heard from (leader stickiness).
    pub leader_lease: Duration,
    /// Bytes of accepted entries per promise page (see
    /// `message::entry_cost`); a page always carries at least one entry,
    /// so the largest page is the larger of this and the largest entry.
    pub promise_bytes_max: usize,
    /// The other nodes of the group: their learners hear this acceptor's
    /// votes (`Message::Voted`).
    pub learners: Vec<NodeId>,
}

/// 4 MiB: with an entry of at most one update of `MAX_BODY_BYTES_LIMIT`
/// (8 MiB) and its headers, a page stays well below the 16 MiB frame.
pub const PROMISE_BYTES_MAX_DEFAULT: usize = 4 << 20;

impl Default for AcceptorConfig {
    fn default() -> Self {
        AcceptorConfig {
            leader_lease: Duration::from_millis(1000),
            promise_bytes_max: PROMISE_BYTES_MAX_DEFAULT,
            learners: Vec::new(),
        }
    }
}

/// One node's acceptor (see the module comment).
pub struct Acceptor {
    id: NodeId,
    promised: Ballot,
    /// What this acceptor accepted above `chosen_upto`, mirrored on disk.
    accepted: BTreeMap<Slot, (Ballot, Value)>,
    /// The node's commit index, as the local learner last reported it.
    chosen_upto: Slot,
    bugs: AcceptorBugs,
    cfg: AcceptorConfig,
    /// When the leader of the promised ballot was last heard from.
    leader_heard: Option<Time>,
    /// This acceptor lost its state and rebuilds: it does not vote (see
    /// `paxos::rebuild`) until its proposer says it may.
    rebuilding: bool,
    /// Messages dropped as malformed or misaddressed.
    pub dropped: u64,
}

impl Acceptor {
    /// Rebuild from what the disk holds: promised ballot and accepted
    /// entries. `chosen_upto` is on disk too: entries below it may be
    /// gone, and a promise must never pretend they were never accepted.
    pub fn recover(id: NodeId, ctx: &Ctx<'_>, cfg: AcceptorConfig, bugs: AcceptorBugs) -> Acceptor {
        let promised = state::load_promised(&*ctx.kv);
        let chosen_upto = state::load_u64(&*ctx.kv, state::Meta::ChosenUpto);
        let mut accepted = BTreeMap::new();
        let mut from = chosen_upto + 1;
        loop {
            let page = state::load_accepted(&*ctx.kv, from, 1024);
            let Some(last) = page.last().map(|e| e.0) else {
                break;
            };
            for (slot, ballot, value) in page {
                assert!(ballot <= promised, "accepted above promised in {slot}");
                accepted.insert(slot, (ballot, value));
            }
            from = last + 1;
        }
        Acceptor {
            id,
            rebuilding: state::load_u64(&*ctx.kv, state::Meta::Rebuilding) == 1,
            promised,
            accepted,
            chosen_upto,
            bugs,
            cfg,
            leader_heard: None,
            dropped: 0,
        }
    }

    /// The highest ballot promised.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Whether it rebuilds after losing its state (and does not vote).
    pub fn rebuilding(&self) -> bool {
        self.rebuilding
    }

    /// Accepted entries held (above the commit index): bounded by the
    /// leader's window in steady state.
    pub fn held(&self) -> usize {
        self.accepted.len()
    }

    /// Slots up to this one are chosen; what was accepted there is gone.
    pub fn chosen_upto(&self) -> Slot {
        self.chosen_upto
    }

    /// What was accepted in `slot`, if the slot is above `chosen_upto`.
    pub fn accepted(&self, slot: Slot) -> Option<&(Ballot, Value)> {
        self.accepted.get(&slot)
    }

    /// A message from node `from`: prepares, accepts, confirmation
    /// rounds and the local learner's commit index.
    pub fn on_message(&mut self, ctx: &mut Ctx<'_>, from: NodeId, msg: Message) {
        if self.rebuilding
            && matches!(
                msg,
                Message::Prepare { .. } | Message::Accept { .. } | Message::Confirm { .. }
            )
        {
            // What it promised and accepted before is lost: any answer
            // now could break a promise or hide a vote (PML §5.1).
            self.dropped += 1;
            return;
        }
        match msg {
            Message::StartVoting { ballot } if from == self.id => self.start_voting(ctx, ballot),
            Message::Prepare {
                ballot,
                from_slot,
                takeover,
            } => self.on_prepare(ctx, from, ballot, from_slot, takeover),
            Message::Accept {
                ballot,
                slot,
                value,
            } => self.on_accept(ctx, from, ballot, slot, value),
            Message::Committed { commit } if from == self.id => self.on_committed(ctx, commit),
            Message::Confirm { ballot, seq } if ballot.node == from => {
                if ballot == self.promised {
                    self.leader_heard = Some(ctx.now);
                }
                // Read-index: a leader is still current for us if we have
                // promised nothing higher. Nothing is written, so nothing
                // waits for a sync.
                let reply = if ballot >= self.promised {
                    Message::Confirmed { ballot, seq }
                } else {
                    Message::Rejected {
                        ballot,
                        promised: self.promised,
                    }
                };
                ctx.send(from, Role::Proposer, reply);
            }
            _ => self.dropped += 1,
        }
    }

    fn on_prepare(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        ballot: Ballot,
        from_slot: Slot,
        takeover: bool,
    ) {
        if ballot.node != from {
            self.dropped += 1;
            return;
        }
        let leader_live = self
            .leader_heard
            .is_some_and(|t| ctx.now.since(t) < self.cfg.leader_lease);
        let sticky = leader_live && !takeover && ballot.node != self.promised.node;
        if ballot < self.promised || (ballot > self.promised && sticky) {
            let promised = self.promised;
            ctx.send(from, Role::Proposer, Message::Rejected { ballot, promised });
            return;
        }
        if ballot > self.promised {
            self.promise(ctx, ballot);
        }
        // ballot == promised now: a repeat, or the request for a further
        // page, gets the same kind of answer, from `from_slot`. Durable
        // even for a repeat, since the first write may not be synced yet.
        let mut accepted = Vec::new();
        let mut bytes = 0;
        let mut next_page = None;
        for (&slot, (b, v)) in self.accepted.range(from_slot.max(self.chosen_upto + 1)..) {
            let cost = entry_cost(v);
            if !accepted.is_empty() && bytes + cost > self.cfg.promise_bytes_max {
                next_page = Some(slot);
                break;
            }
            bytes += cost;
            accepted.push(AcceptedEntry {
                slot,
                ballot: *b,
                value: v.clone(),
            });
        }
        let msg = Message::Promise {
            ballot,
            chosen_upto: self.chosen_upto,
            accepted,
            from_slot,
            next_page,
        };
        if self.bugs.promise_before_sync {
            ctx.send(from, Role::Proposer, msg);
        } else {
            ctx.send_durable(from, Role::Proposer, msg);
        }
    }

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        ballot: Ballot,
        slot: Slot,
        value: Value,
    ) {
        if ballot.node != from || slot == 0 {
            self.dropped += 1;
            return;
        }
        if ballot < self.promised && !self.bugs.forget_promise {
            let promised = self.promised;
            ctx.send(from, Role::Proposer, Message::Rejected { ballot, promised });
            return;
        }
        if ballot > self.promised {
            self.promise(ctx, ballot);
        }
        if ballot == self.promised {
            self.leader_heard = Some(ctx.now);
        }
        // At or below chosen_upto the slot is chosen; by Paxos any value
        // proposed there at a ballot we may accept equals the chosen one,
        // so the vote is safe without keeping the value again.
        let keep = slot > self.chosen_upto;
        if keep {
            let same = self.accepted.get(&slot).map(|(b, v)| (*b, v));
            if same != Some((ballot, &value)) {
                // A repeat at the same ballot must carry the same value:
                // one proposer proposes one value per slot and ballot.
                if let Some((b, v)) = self.accepted.get(&slot) {
                    assert!(
                        *b != ballot || *v == value,
                        "two values for slot {slot} at ballot {ballot}"
                    );
                }
                state::store_accepted(ctx.kv, slot, ballot, &value);
                self.accepted.insert(slot, (ballot, value.clone()));
            }
        }
        // The leader's copy of the vote goes first: an update's answer
        // waits for it, and every write to a peer takes its turn on the
        // node's thread (tens of microseconds each on loopback TLS).
        ctx.send_durable(from, Role::Proposer, Message::Accepted { ballot, slot });
        if keep {
            // The learners hear the vote once it is on disk: this
            // node's with the value, the others' without.
            ctx.send_durable(
                self.id,
                Role::Learner,
                Message::Vote {
                    ballot,
                    slot,
                    value,
                },
            );
            // Not to the proposer's node: its learner hears from its
            // proposer, and the proposer has the vote (`Accepted`).
            for &n in self.cfg.learners.iter().filter(|&&n| n != ballot.node) {
                ctx.send_durable(n, Role::Learner, Message::Voted { ballot, slot });
            }
        }
    }

    /// Rebuilding is over: promise `ballot`, then vote. The promise is
    /// written before the flag is cleared, so a crash between the two
    /// leaves the acceptor rebuilding, never voting unfenced.
    fn start_voting(&mut self, ctx: &mut Ctx<'_>, ballot: Ballot) {
        if !self.rebuilding {
            return;
        }
        if ballot > self.promised {
            self.promise(ctx, ballot);
        }
        state::store_u64(ctx.kv, state::Meta::Rebuilding, 0);
        self.rebuilding = false;
    }

    fn promise(&mut self, ctx: &mut Ctx<'_>, ballot: Ballot) {
        assert!(ballot > self.promised, "promise must go up");
        self.promised = ballot;
        state::store_promised(ctx.kv, ballot);
    }

    fn on_committed(&mut self, ctx: &mut Ctx<'_>, commit: Slot) {
        if commit <= self.chosen_upto {
            return;
        }
        self.chosen_upto = commit;
        state::store_u64(ctx.kv, state::Meta::ChosenUpto, commit);
        let forget: Vec<Slot> = self.accepted.range(..=commit).map(|(&s, _)| s).collect();
        for slot in forget {
            self.accepted.remove(&slot);
            state::forget_accepted(ctx.kv, slot);
        }
    }
}
