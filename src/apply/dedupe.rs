//! The dedupe window of the applier: for every update id applied in the
//! last `dedupe_window_slots` slots, the latest slot it was in.
//!
//! The rule is the log's alone, so every node skips the same copies: an
//! id is a duplicate at slot `s` if a copy of it is in a slot within the
//! window before `s` (or earlier in `s`). The age is checked when an id
//! is looked up, so forgetting old ids is only about memory and may lag.
//!
//! Ids of one origin and boot count up, so they are kept per origin, by
//! sequence number: about 40 bytes an id, where one map of whole ids and
//! a queue in slot order took about 110. (At 13,000 updates a second a
//! window holds hundreds of thousands of ids.)

use crate::paxos::ballot::{NodeId, Slot, UpdateId};
use std::collections::BTreeMap;

/// See the module comment.
#[derive(Debug)]
pub struct Recent {
    window: u64,
    /// Per origin and boot: sequence number → latest slot.
    origins: BTreeMap<(NodeId, u64), BTreeMap<u64, Slot>>,
    /// The slot of the last full sweep.
    swept: Slot,
}

impl Recent {
    /// An empty window of `window` slots.
    pub fn new(window: u64) -> Recent {
        Recent {
            window,
            origins: BTreeMap::new(),
            swept: 0,
        }
    }

    /// The oldest slot in the window of `slot`.
    fn oldest(&self, slot: Slot) -> Slot {
        slot.saturating_sub(self.window)
    }

    /// Whether `id` was applied within the window before `slot`.
    pub fn seen(&self, id: &UpdateId, slot: Slot) -> bool {
        self.origins
            .get(&(id.origin, id.boot))
            .and_then(|seqs| seqs.get(&id.seq))
            .is_some_and(|&s| s >= self.oldest(slot))
    }

    /// `id` is in `slot` (slots come in log order).
    pub fn remember(&mut self, slot: Slot, id: UpdateId) {
        let latest = self
            .origins
            .entry((id.origin, id.boot))
            .or_default()
            .entry(id.seq)
            .or_insert(slot);
        *latest = (*latest).max(slot);
    }

    /// Forget ids that left the window of `slot`: each origin's oldest
    /// sequence numbers while they are out (ids come nearly in order, so
    /// this frees nearly all at once), and every id out of the window
    /// each eighth of a window (an old id applied again late holds the
    /// ones after it until then).
    pub fn expire(&mut self, slot: Slot) {
        let oldest = self.oldest(slot);
        let sweep = slot >= self.swept + (self.window / 8).max(1);
        for seqs in self.origins.values_mut() {
            if sweep {
                seqs.retain(|_, s| *s >= oldest);
                continue;
            }
            while let Some(e) = seqs.first_entry() {
                if *e.get() >= oldest {
                    break;
                }
                e.remove();
            }
        }
        if sweep {
            self.swept = slot;
        }
        self.origins.retain(|_, seqs| !seqs.is_empty());
    }

    /// The ids in the window of `slot`, each with its latest slot, in
    /// slot order (a reseed carries them).
    pub fn export(&self, slot: Slot) -> Vec<(Slot, UpdateId)> {
        let oldest = self.oldest(slot);
        let mut out: Vec<(Slot, UpdateId)> = self
            .origins
            .iter()
            .flat_map(|(&(origin, boot), seqs)| {
                seqs.iter()
                    .filter(|&(_, &s)| s >= oldest)
                    .map(move |(&seq, &s)| (s, UpdateId { origin, boot, seq }))
            })
            .collect();
        out.sort();
        out
    }

    /// Forget every id.
    pub fn clear(&mut self) {
        self.origins.clear();
        self.swept = 0;
    }

    /// Ids held (some may be out of the window, not yet forgotten).
    pub fn len(&self) -> usize {
        self.origins.values().map(BTreeMap::len).sum()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u16, seq: u64) -> UpdateId {
        UpdateId {
            origin: NodeId(origin),
            boot: 7,
            seq,
        }
    }

    #[test]
    fn an_id_is_seen_within_the_window_only() {
        let mut r = Recent::new(10);
        r.remember(5, id(1, 1));
        assert!(r.seen(&id(1, 1), 5), "a second copy in the same slot");
        assert!(r.seen(&id(1, 1), 15), "slot 5 is in the window of 15");
        assert!(!r.seen(&id(1, 1), 16), "but not of 16");
        assert!(!r.seen(&id(2, 1), 6), "another origin's id");
        // A later copy moves the id's latest slot.
        r.remember(12, id(1, 1));
        assert!(r.seen(&id(1, 1), 22));
    }

    #[test]
    fn expired_ids_are_forgotten_and_a_late_one_within_an_eighth_window() {
        let mut r = Recent::new(80);
        for seq in 1..=100 {
            r.remember(seq, id(0, seq));
        }
        r.remember(101, id(0, 1));
        r.expire(150);
        assert_eq!(r.len(), 32, "a sweep: slots 70..=101 are left");
        // Seq 1, applied again late, holds the others back from the
        // cheap walk: 70..=74 stay, though out of the window...
        r.expire(155);
        assert_eq!(r.len(), 32);
        assert!(!r.seen(&id(0, 72), 155), "...and are not seen");
        // ...until the next sweep, an eighth of a window later.
        r.expire(160);
        assert_eq!(r.len(), 22);
        assert_eq!(r.export(160).first().map(|(s, _)| *s), Some(80));
        r.expire(1000);
        assert!(r.is_empty());
    }
}
