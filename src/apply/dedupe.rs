//! The dedupe window of the applier: for every update id applied in the
//! window, the latest slot it was in.
//!
//! The window of slot `s` is the slots before it, back `window` slots at
//! most, and no further back than keeps the ids whose latest slot is in
//! it at `max_ids` or fewer: whole slots leave from the oldest end until
//! the rest hold no more. So memory is bounded in ids, whatever a slot
//! holds: a window of slots alone held every id of 100,000 slots, and
//! at 50 updates a slot (c=256 in `scripts/bench`) a node's RSS grew by
//! 11 MB every 30 s, past 100 MB within three minutes.
//!
//! The rule is the log's alone, so every node skips the same copies: an
//! id is a duplicate at slot `s` if a copy of it is in a slot within the
//! window of `s` (or earlier in `s`). The id bound keeps that: which
//! slots the window of `s` holds depends only on the latest slots of the
//! ids in slots before `s`, which the log fixes. (The count of ids whose
//! latest slot is `t` or later only grows as slots come, so the window's
//! oldest slot only moves forward, and a slot that left it never comes
//! back: an id that left with it counts again only if a copy of it comes
//! in a later slot. So a node that rebuilds from fewer slots of log, or
//! from a reseed's export, decides every later copy alike.) The age is
//! checked when an id is looked up, so forgetting old ids is only about
//! memory and may lag.
//!
//! Ids of one origin and boot count up, so they are kept per origin, by
//! sequence number: about 40 bytes an id, where one map of whole ids and
//! a queue in slot order took about 110.

use crate::paxos::ballot::{NodeId, Slot, UpdateId};
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// See the module comment.
#[derive(Clone, Debug)]
pub struct Recent {
    /// Slots back from the current one, at most.
    window: u64,
    /// Ids whose latest slot is in the window, at most.
    max_ids: usize,
    /// Per origin and boot: sequence number → latest slot.
    origins: BTreeMap<(NodeId, u64), BTreeMap<u64, Slot>>,
    /// How many ids have each slot as their latest, for the slots from
    /// `floor` on.
    by_slot: BTreeMap<Slot, u64>,
    /// Their sum: the ids in the window.
    in_window: u64,
    /// Ids in `origins` (some may be out of the window, not yet forgotten).
    held: usize,
    /// The oldest slot the id bound leaves in the window.
    floor: Slot,
    /// The slot of the last full sweep.
    swept: Slot,
}

impl Recent {
    /// An empty window of `window` slots and `max_ids` ids.
    pub fn new(window: u64, max_ids: usize) -> Recent {
        Recent {
            window,
            max_ids: max_ids.max(1),
            origins: BTreeMap::new(),
            by_slot: BTreeMap::new(),
            in_window: 0,
            held: 0,
            floor: 0,
            swept: 0,
        }
    }

    /// The oldest slot in the window of `slot` (of the slot last given to
    /// [`Recent::expire`], for the id bound).
    fn oldest(&self, slot: Slot) -> Slot {
        slot.saturating_sub(self.window).max(self.floor)
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
        let seqs = self.origins.entry((id.origin, id.boot)).or_default();
        match seqs.entry(id.seq) {
            Entry::Vacant(e) => {
                e.insert(slot);
                self.held += 1;
            }
            Entry::Occupied(mut e) => {
                let before = *e.get();
                if before >= slot {
                    return;
                }
                e.insert(slot);
                // Its count moves to the later slot.
                if let Some(n) = self.by_slot.get_mut(&before) {
                    *n -= 1;
                    self.in_window -= 1;
                    if *n == 0 {
                        self.by_slot.remove(&before);
                    }
                }
            }
        }
        if slot >= self.floor {
            *self.by_slot.entry(slot).or_default() += 1;
            self.in_window += 1;
        }
    }

    /// Move the window to that of `slot` (the next slot to be taken, every
    /// one before it remembered), and forget ids that left it: each
    /// origin's oldest sequence numbers while they are out (ids come
    /// nearly in order, so this frees nearly all at once), and every id
    /// out of the window each eighth of a window, in slots or in ids (an
    /// old id applied again late holds the ones after it until then).
    pub fn expire(&mut self, slot: Slot) {
        let by_slots = slot.saturating_sub(self.window);
        while let Some((&s, &n)) = self.by_slot.first_key_value() {
            if s >= by_slots && self.in_window <= self.max_ids as u64 {
                break;
            }
            self.by_slot.pop_first();
            self.in_window -= n;
            if s >= by_slots {
                // Left for the id bound.
                self.floor = self.floor.max(s + 1);
            }
        }
        let oldest = self.oldest(slot);
        let sweep = slot >= self.swept + (self.window / 8).max(1)
            || self.held as u64 > self.in_window + (self.max_ids as u64 / 8).max(1);
        let mut held = 0;
        for seqs in self.origins.values_mut() {
            if sweep {
                seqs.retain(|_, s| *s >= oldest);
            } else {
                while let Some(e) = seqs.first_entry() {
                    if *e.get() >= oldest {
                        break;
                    }
                    e.remove();
                }
            }
            held += seqs.len();
        }
        self.held = held;
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
        let (window, max_ids) = (self.window, self.max_ids);
        *self = Recent::new(window, max_ids);
    }

    /// Ids held (some may be out of the window, not yet forgotten).
    pub fn len(&self) -> usize {
        self.held
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
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
        let mut r = Recent::new(10, usize::MAX);
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
        let mut r = Recent::new(80, usize::MAX);
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

    /// The regression: a window of slots alone held every id of its
    /// 100,000 slots, at 50 a slot 5 million (about 200 MB).
    #[test]
    fn memory_is_bounded_in_ids_whatever_the_slots_hold() {
        let (per_slot, max_ids) = (50u64, 10_000usize);
        let bound = max_ids + max_ids / 8 + per_slot as usize;
        let mut r = Recent::new(100_000, max_ids);
        let mut seq = 1;
        for slot in 1..=2_000 {
            r.expire(slot);
            assert!(r.len() <= bound, "{} ids held at slot {slot}", r.len());
            // An id applied again in every slot stops the cheap walk
            // (which frees each origin's oldest): sweeps must free the rest.
            r.remember(slot, id(0, 1));
            for _ in 1..per_slot {
                seq += 1;
                r.remember(slot, id(0, seq));
            }
        }
        r.expire(2_001);
        // Slot 2000 holds 50 ids, each one before 49 (seq 1 moved on):
        // 50 + 49 * 203 = 9,997 ids is 204 whole slots, 1797..=2000.
        let first_of = |slot: u64| id(0, (slot - 1) * (per_slot - 1) + 2);
        assert!(r.seen(&first_of(1_797), 2_001));
        assert!(!r.seen(&first_of(1_796), 2_001), "out by the id bound");
        assert!(r.seen(&id(0, 1), 2_001));
        assert_eq!(r.export(2_001).len(), 9_997);
    }

    /// Record each id's decision (a duplicate or not) from slot `from`
    /// on, as the applier makes them.
    fn decide(r: &mut Recent, log: &[Vec<UpdateId>], from: usize) -> Vec<bool> {
        let mut out = Vec::new();
        for (i, ids) in log.iter().enumerate().skip(from) {
            let slot = i as u64 + 1;
            r.expire(slot);
            for id in ids {
                out.push(r.seen(id, slot));
                r.remember(slot, *id);
            }
        }
        out
    }

    /// The applier's rebuild after a restart: slots `from..=upto` of the
    /// log, `page` slots at a time, the window moved after each.
    fn rebuild(r: &mut Recent, log: &[Vec<UpdateId>], mut from: usize, upto: usize, page: usize) {
        while from <= upto {
            let end = (from + page - 1).min(upto);
            for slot in from..=end {
                for id in &log[slot - 1] {
                    r.remember(slot as u64, *id);
                }
            }
            from = end + 1;
            r.expire(from as u64);
        }
    }

    proptest::proptest! {
        /// The rule is the log's: a node that restarted after slot `k`
        /// (and rebuilt from the log's last `window` slots, a page at a
        /// time), took a reseed at `k` (the export), or restarted at `k`
        /// after a reseed at `j` decides every later copy as one that went
        /// on without a break.
        #[test]
        fn decisions_are_the_same_live_after_a_restart_and_after_a_reseed(
            log in proptest::collection::vec(
                proptest::collection::vec((0u16..3, 0u64..24), 0..6), 1..60),
            window in 1u64..40,
            max_ids in 1usize..30,
            k in 0usize..60,
            page in 1usize..5,
            j in 0usize..60,
            log_from in 0usize..60,
        ) {
            let log: Vec<Vec<UpdateId>> = log
                .into_iter()
                .map(|ids| ids.into_iter().map(|(o, seq)| id(o, seq)).collect())
                .collect();
            let k = k % log.len();
            let mut live = Recent::new(window, max_ids);
            let all = decide(&mut live, &log, 0);
            let mut upto_k = Recent::new(window, max_ids);
            let before = decide(&mut upto_k, &log[..k], 0).len();
            let after = &all[before..];

            // A restart: the applier's rebuild.
            let mut rebuilt = Recent::new(window, max_ids);
            let first = (k as u64 + 1).saturating_sub(window).max(1) as usize;
            rebuild(&mut rebuilt, &log, first, k, page);
            proptest::prop_assert_eq!(&decide(&mut rebuilt, &log, k)[..], after);

            // A reseed: the export at `k`, taken in slot order.
            let mut seeded = Recent::new(window, max_ids);
            for (slot, id) in upto_k.export(k as u64 + 1) {
                seeded.remember(slot, id);
            }
            proptest::prop_assert_eq!(&decide(&mut seeded, &log, k)[..], after);

            // A restart at `k` after a reseed at `j`: the applier's rebuild
            // takes the window the reseed brought (kept on disk), then the
            // log from the window's first slot, or from where the log
            // begins (its slots up to `j` may be gone).
            let j = j % (k + 1);
            let mut upto_j = Recent::new(window, max_ids);
            decide(&mut upto_j, &log[..j], 0);
            let brought = upto_j.export(j as u64 + 1);
            let mut restarted = Recent::new(window, max_ids);
            if brought.last().is_some_and(|&(slot, _)| slot >= first as u64) {
                for &(slot, id) in brought.iter().filter(|&&(s, _)| s >= first as u64) {
                    restarted.remember(slot, id);
                }
            }
            rebuild(&mut restarted, &log, first.max(1 + log_from % (j + 1)), k, page);
            proptest::prop_assert_eq!(&decide(&mut restarted, &log, k)[..], after);
        }
    }
}
