//! The order the applier must keep: which admitted updates may run now.
//!
//! Every update admitted from the log waits for each earlier update that
//! touches a related resource (see [`super::resource`]) or carries the
//! same client `Idempotency-Key`, and for nothing else. A barrier
//! ([`Touches::Everything`]) waits for everything before it, and
//! everything after it waits for it, so a service without a key rule
//! gets strict slot order from the same code.
//!
//! The dependency graph is kept small: an update depends only on the
//! latest pending update at each related key (the earlier ones at that
//! key are its predecessors already), and done updates leave it at once.

use super::resource::Touches;
use crate::paxos::ballot::Slot;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// An update's place in the log: slot, index in the slot's batch.
pub type Pos = (Slot, u32);

struct Entry {
    touches: Touches,
    client: Option<Bytes>,
    /// Earlier updates not done yet that this one waits for.
    blockers: u32,
    /// Later updates that wait for this one.
    dependents: Vec<Pos>,
}

#[derive(Default)]
pub struct Order {
    pending: BTreeMap<Pos, Entry>,
    /// The latest pending update at each key.
    by_path: BTreeMap<String, Pos>,
    by_client: BTreeMap<Bytes, Pos>,
    /// The latest pending barrier.
    barrier: Option<Pos>,
    /// Pending updates that wait for nothing, in log order.
    ready: BTreeSet<Pos>,
}

impl Order {
    /// Updates admitted and not done.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Admit the update at `pos`, later in the log than every update
    /// admitted before.
    pub fn admit(&mut self, pos: Pos, touches: Touches, client: Option<Bytes>) {
        debug_assert!(self.pending.last_key_value().is_none_or(|(p, _)| *p < pos));
        let mut deps: BTreeSet<Pos> = BTreeSet::new();
        deps.extend(self.barrier);
        match &touches {
            Touches::Everything => {
                // Every pending update is the latest at some key, or
                // before one that is: waiting for those covers them all.
                deps.extend(self.by_path.values().copied());
                deps.extend(self.by_client.values().copied());
                self.by_path.clear();
                self.by_client.clear();
                self.barrier = Some(pos);
            }
            Touches::Paths(paths) => {
                for p in paths {
                    // Ancestors and the key itself: each prefix ending at
                    // a segment.
                    for (i, _) in p.match_indices('/') {
                        deps.extend(self.by_path.get(&p[..=i]).copied());
                    }
                    // Descendants: keys that start with this one.
                    let below = self.by_path.range::<str, _>((
                        std::ops::Bound::Excluded(p.as_str()),
                        std::ops::Bound::Unbounded,
                    ));
                    deps.extend(
                        below
                            .take_while(|(k, _)| k.starts_with(p.as_str()))
                            .map(|(_, at)| *at),
                    );
                }
                for p in paths {
                    self.by_path.insert(p.clone(), pos);
                }
            }
        }
        if let Some(k) = &client {
            deps.extend(self.by_client.get(k).copied());
            self.by_client.insert(k.clone(), pos);
        }
        let mut blockers = 0;
        for d in deps {
            if let Some(e) = self.pending.get_mut(&d) {
                e.dependents.push(pos);
                blockers += 1;
            }
        }
        if blockers == 0 {
            self.ready.insert(pos);
        }
        let entry = Entry {
            touches,
            client,
            blockers,
            dependents: Vec::new(),
        };
        self.pending.insert(pos, entry);
    }

    /// The earliest update that waits for nothing, taken out of the
    /// ready set (it stays pending until `done`).
    pub fn take_ready(&mut self) -> Option<Pos> {
        self.ready.pop_first()
    }

    /// The update at `pos` is applied (or skipped): what waited for it
    /// alone may run.
    pub fn done(&mut self, pos: Pos) {
        let Some(e) = self.pending.remove(&pos) else {
            return;
        };
        self.ready.remove(&pos);
        if let Touches::Paths(paths) = &e.touches {
            for p in paths {
                if self.by_path.get(p) == Some(&pos) {
                    self.by_path.remove(p);
                }
            }
        }
        if let Some(k) = &e.client {
            if self.by_client.get(k) == Some(&pos) {
                self.by_client.remove(k);
            }
        }
        if self.barrier == Some(pos) {
            self.barrier = None;
        }
        for d in e.dependents {
            if let Some(next) = self.pending.get_mut(&d) {
                next.blockers -= 1;
                if next.blockers == 0 {
                    self.ready.insert(d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::resource::related;
    use proptest::prelude::*;

    fn paths(ps: &[&str]) -> Touches {
        Touches::Paths(ps.iter().map(|p| p.to_string()).collect())
    }

    /// Whether two updates must keep their log order, by the definition
    /// (the graph above is an economical form of this).
    fn conflict(a: &Touches, ac: Option<&Bytes>, b: &Touches, bc: Option<&Bytes>) -> bool {
        if ac.is_some() && ac == bc {
            return true;
        }
        match (a, b) {
            (Touches::Paths(x), Touches::Paths(y)) => {
                x.iter().any(|p| y.iter().any(|q| related(p, q)))
            }
            _ => true,
        }
    }

    fn drain(o: &mut Order) -> Vec<Pos> {
        std::iter::from_fn(|| o.take_ready()).collect()
    }

    #[test]
    fn unrelated_keys_run_together_and_related_ones_in_order() {
        let mut o = Order::default();
        o.admit((1, 0), paths(&["/a/"]), None);
        o.admit((1, 1), paths(&["/b/"]), None);
        o.admit((2, 0), paths(&["/a/x/"]), None);
        o.admit((2, 1), paths(&["/"]), None);
        assert_eq!(drain(&mut o), vec![(1, 0), (1, 1)]);
        o.done((1, 0));
        assert_eq!(drain(&mut o), vec![(2, 0)]);
        o.done((2, 0));
        assert_eq!(drain(&mut o), vec![], "the root waits for /b too");
        o.done((1, 1));
        assert_eq!(drain(&mut o), vec![(2, 1)]);
    }

    #[test]
    fn a_barrier_orders_against_everything() {
        let mut o = Order::default();
        o.admit((1, 0), paths(&["/a/"]), None);
        o.admit((1, 1), Touches::Everything, None);
        o.admit((1, 2), paths(&["/b/"]), None);
        assert_eq!(drain(&mut o), vec![(1, 0)]);
        o.done((1, 0));
        assert_eq!(drain(&mut o), vec![(1, 1)]);
        o.done((1, 1));
        assert_eq!(drain(&mut o), vec![(1, 2)]);
    }

    #[test]
    fn a_client_key_orders_its_retries() {
        let mut o = Order::default();
        let k = Some(Bytes::from_static(b"k"));
        o.admit((1, 0), paths(&["/a/"]), k.clone());
        o.admit((2, 0), paths(&["/b/"]), k);
        assert_eq!(drain(&mut o), vec![(1, 0)]);
        o.done((1, 0));
        assert_eq!(drain(&mut o), vec![(2, 0)]);
    }

    fn touches() -> impl Strategy<Value = (Touches, Option<Bytes>)> {
        let path = prop::sample::select(vec!["/", "/a/", "/a/b/", "/a/c/", "/b/", "/b/a/"]);
        let t = prop_oneof![
            1 => Just(Touches::Everything),
            6 => prop::collection::vec(path, 1..3)
                .prop_map(|ps| Touches::Paths(ps.into_iter().map(String::from).collect())),
        ];
        let client = prop::option::weighted(0.2, prop::sample::select(vec!["x", "y"]))
            .prop_map(|k| k.map(|k| Bytes::from_static(k.as_bytes())));
        (t, client)
    }

    proptest! {
        /// Whatever the keys and whatever order the runs finish in: an
        /// update starts only after every earlier related one is done,
        /// and everything admitted is started in the end.
        #[test]
        fn related_updates_never_overlap_or_pass(
            updates in prop::collection::vec(touches(), 1..40),
            finish in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
        ) {
            let mut o = Order::default();
            let all: Vec<(Pos, Touches, Option<Bytes>)> = updates
                .into_iter()
                .enumerate()
                .map(|(i, (t, c))| (((i / 3) as Slot + 1, (i % 3) as u32), t, c))
                .collect();
            for (pos, t, c) in &all {
                o.admit(*pos, t.clone(), c.clone());
            }
            let mut running: Vec<Pos> = Vec::new();
            let mut done: BTreeSet<Pos> = BTreeSet::new();
            let mut choices = finish.into_iter();
            while done.len() < all.len() {
                while let Some(p) = o.take_ready() {
                    let (_, t, c) = all.iter().find(|(q, ..)| *q == p).unwrap();
                    for (q, u, d) in &all {
                        if *q < p && conflict(t, c.as_ref(), u, d.as_ref()) {
                            prop_assert!(done.contains(q), "{p:?} started before {q:?} was done");
                        }
                    }
                    running.push(p);
                }
                prop_assert!(!running.is_empty(), "nothing runnable, {} left", all.len() - done.len());
                let i = choices.next().map_or(0, |ix| ix.index(running.len()));
                let p = running.swap_remove(i);
                o.done(p);
                done.insert(p);
            }
            prop_assert!(o.is_empty());
        }
    }
}
