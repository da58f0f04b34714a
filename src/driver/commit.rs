//! Group commit: messages held until the sync that covers their writes.
//!
//! A message whose truth depends on writes (a promise, a vote, a prepare
//! whose round was just stored) is held at the write mark of the moment
//! it was sent. The first held message asks the shell for a flush, which
//! comes once the inputs already waiting are handled, so that a burst of
//! votes is held together. The flush releases what a sync (perhaps
//! another role's: one store per group) already covered and starts one
//! sync for the rest; messages held while it runs wait for the next
//! flush, asked for when it returns. So at most one sync per role is in
//! flight, and each covers everything held before it started.
//!
//! Order: a held message never overtakes an earlier held one of the same
//! role (release is a prefix), and a durable send while others are held
//! is held too. A crash drops every held message with the driver: they
//! never leave.

use super::Output;
use crate::paxos::ballot::NodeId;
use crate::paxos::message::{Message, Role};
use crate::storage::kv::Kv;
use std::collections::VecDeque;

struct Held {
    /// The write mark when it was held: the writes it depends on are
    /// among the first `mark`.
    mark: u64,
    to: NodeId,
    role: Role,
    msg: Message,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Nothing asked of the shell.
    #[default]
    Idle,
    /// `Output::Flush` is out.
    Queued,
    /// `Output::Sync` is out.
    Syncing,
}

#[derive(Default)]
pub(super) struct GroupCommit {
    held: VecDeque<Held>,
    state: State,
}

impl GroupCommit {
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Send `msg` once every write made so far is on disk.
    pub(super) fn send_durable(
        &mut self,
        kv: &dyn Kv,
        to: NodeId,
        role: Role,
        msg: Message,
        out: &mut Vec<Output>,
    ) {
        let mark = kv.write_mark();
        if self.held.is_empty() && kv.durable_mark() >= mark {
            out.push(Output::Send { to, role, msg });
            return;
        }
        self.held.push_back(Held {
            mark,
            to,
            role,
            msg,
        });
        if self.state == State::Idle {
            self.state = State::Queued;
            out.push(Output::Flush);
        }
    }

    pub(super) fn flush(&mut self, kv: &dyn Kv, out: &mut Vec<Output>) {
        if self.state != State::Queued {
            return;
        }
        self.state = State::Idle;
        self.release(kv, out);
        if !self.held.is_empty() {
            self.state = State::Syncing;
            out.push(Output::Sync {
                mark: kv.write_mark(),
            });
        }
    }

    pub(super) fn synced(&mut self, kv: &dyn Kv, out: &mut Vec<Output>) {
        if self.state != State::Syncing {
            return;
        }
        self.state = State::Idle;
        self.release(kv, out);
        if !self.held.is_empty() {
            self.state = State::Queued;
            out.push(Output::Flush);
        }
    }

    /// Send every held message, oldest first, that the store's durable
    /// mark covers.
    fn release(&mut self, kv: &dyn Kv, out: &mut Vec<Output>) {
        let durable = kv.durable_mark();
        while self.held.front().is_some_and(|h| h.mark <= durable) {
            if let Some(h) = self.held.pop_front() {
                out.push(Output::Send {
                    to: h.to,
                    role: h.role,
                    msg: h.msg,
                });
            }
        }
    }
}
