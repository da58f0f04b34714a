//! A simulated disk that keeps what was synced apart from what was only
//! written. A crash keeps the synced state plus a random prefix of the
//! unsynced writes (the OS may have flushed some of them, in order).
//!
//! Keys and values are shared (`Rc`) between the written view, the
//! pending writes and the synced state, so a write is copied once.

use crate::rng::Rng;
use crate::storage::kv::{Kv, Table};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::rc::Rc;

/// One table: shared keys and values.
pub type Entries = BTreeMap<Rc<[u8]>, Rc<[u8]>>;

type Tables = [Entries; 3];

#[derive(Clone, Debug)]
enum Write {
    Put(Table, Rc<[u8]>, Rc<[u8]>),
    Delete(Table, Rc<[u8]>),
}

/// One node's disk. Write marks count every put and delete since the
/// disk was made (`Kv::write_mark`); the first `durable` of them are
/// synced and the rest are `pending`, in order.
#[derive(Clone, Default)]
pub struct SimDisk {
    /// What reads see: synced state plus every pending write.
    view: Tables,
    synced: Tables,
    pending: VecDeque<Write>,
    durable: u64,
    pub syncs: u64,
    /// Bytes of keys and values scans have returned: what a role held in
    /// memory to read a range (`tests/roles.rs` bounds a fetch's).
    pub scanned_bytes: std::cell::Cell<u64>,
}

fn idx(t: Table) -> usize {
    t as usize
}

fn apply(tables: &mut Tables, w: &Write) {
    match w {
        Write::Put(t, k, v) => {
            tables[idx(*t)].insert(k.clone(), v.clone());
        }
        Write::Delete(t, k) => {
            tables[idx(*t)].remove(k);
        }
    }
}

impl SimDisk {
    /// Writes not yet covered by a sync.
    pub fn unsynced(&self) -> usize {
        self.pending.len()
    }

    /// A sync that started at write mark `mark` returns: every write up
    /// to it is durable. (A later sync may have covered them already.)
    pub fn sync_to(&mut self, mark: u64) {
        while self.durable < mark {
            let Some(w) = self.pending.pop_front() else {
                break;
            };
            apply(&mut self.synced, &w);
            self.durable += 1;
        }
        self.syncs += 1;
    }

    /// Power loss: keep the synced state and a random prefix of the rest.
    /// The marks go on from what survived.
    /// The disk is lost: a new, empty one in its place.
    pub fn wipe(&mut self) {
        let syncs = self.syncs;
        *self = SimDisk::default();
        self.syncs = syncs;
    }

    pub fn crash(&mut self, rng: &mut Rng) {
        let keep = rng.below(self.pending.len() as u64 + 1) as usize;
        for w in self.pending.drain(..).take(keep) {
            apply(&mut self.synced, &w);
            self.durable += 1;
        }
        self.view = self.synced.clone();
    }

    /// Every key of a table, for end-of-run comparisons.
    pub fn table(&self, t: Table) -> &Entries {
        &self.view[idx(t)]
    }
}

impl Kv for SimDisk {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.view[idx(table)].get(key).map(|v| v.to_vec())
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        let w = Write::Put(table, Rc::from(key), Rc::from(value));
        apply(&mut self.view, &w);
        self.pending.push_back(w);
    }

    fn delete(&mut self, table: Table, key: &[u8]) {
        let w = Write::Delete(table, Rc::from(key));
        apply(&mut self.view, &w);
        self.pending.push_back(w);
    }

    fn scan(&self, table: Table, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let out: Vec<(Vec<u8>, Vec<u8>)> = self.view[idx(table)]
            .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let read: usize = out.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.scanned_bytes
            .set(self.scanned_bytes.get() + read as u64);
        out
    }

    fn last(&self, table: Table) -> Option<(Vec<u8>, Vec<u8>)> {
        self.view[idx(table)]
            .iter()
            .next_back()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
    }

    fn drop_below(&mut self, table: Table, below: &[u8]) {
        // A real store drops whole files: the last file below the bound
        // usually holds keys above it too, and stays. The highest
        // `STRADDLING` keys below stay here likewise, so that a caller
        // that reads below its own bound meets what it dropped. The drop
        // is durable at once. Pending writes below the bound stay pending
        // (a journal is not a file the drop reaches): a crash may replay
        // them.
        const STRADDLING: usize = 3;
        for tables in [&mut self.view, &mut self.synced] {
            let t = &mut tables[idx(table)];
            let doomed: Vec<Rc<[u8]>> = t
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(below)))
                .rev()
                .skip(STRADDLING)
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                t.remove(&k);
            }
        }
    }

    fn sync(&mut self) {
        let mark = self.write_mark();
        self.sync_to(mark);
    }

    fn write_mark(&self) -> u64 {
        self.durable + self.pending.len() as u64
    }

    fn durable_mark(&self) -> u64 {
        self.durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_and_a_prefix_of_the_rest() {
        for seed in 0..50 {
            let mut d = SimDisk::default();
            d.put(Table::Log, b"a", b"1");
            d.sync();
            d.put(Table::Log, b"b", b"2");
            d.put(Table::Log, b"c", b"3");
            d.delete(Table::Log, b"a");
            assert_eq!(d.get(Table::Log, b"c"), Some(b"3".to_vec()));
            d.crash(&mut Rng::new(seed));
            let has = |k: &[u8]| d.get(Table::Log, k).is_some();
            // Prefix: c only if b, a deleted only if c.
            assert!(!has(b"c") || has(b"b"));
            assert!(has(b"a") || has(b"c"));
            assert_eq!(d.unsynced(), 0);
            assert_eq!(d.write_mark(), d.durable_mark());
        }
    }

    #[test]
    fn a_drop_is_durable_at_once_and_keeps_the_last_keys_below_its_bound() {
        let mut d = SimDisk::default();
        for k in [b"a", b"b", b"c", b"d", b"e", b"f"] {
            d.put(Table::Log, k, b"v");
        }
        d.sync();
        d.put(Table::Log, b"0", b"pending");
        d.drop_below(Table::Log, b"f");
        let keys = |d: &SimDisk| {
            d.table(Table::Log)
                .keys()
                .map(|k| k.to_vec())
                .collect::<Vec<_>>()
        };
        // "0" (pending), "a" and "b" go from what reads see; "c", "d",
        // "e" straddle; "f" is not below.
        assert_eq!(keys(&d), [b"c", b"d", b"e", b"f"]);
        // A crash keeps the drop; the pending write may come back.
        d.crash(&mut Rng::new(0));
        assert!(keys(&d).ends_with(&[b"c".to_vec(), b"d".to_vec(), b"e".to_vec(), b"f".to_vec()]));
        assert!(d.get(Table::Log, b"a").is_none() && d.get(Table::Log, b"b").is_none());
    }

    #[test]
    fn a_sync_covers_the_writes_before_its_mark_only() {
        let mut d = SimDisk::default();
        d.put(Table::Log, b"a", b"1");
        d.put(Table::Log, b"b", b"2");
        let mark = d.write_mark();
        d.put(Table::Log, b"c", b"3");
        assert_eq!((mark, d.durable_mark()), (2, 0));
        d.sync_to(mark);
        assert_eq!((d.durable_mark(), d.write_mark()), (2, 3));
        // A late sync of an older mark changes nothing.
        d.sync_to(1);
        assert_eq!(d.durable_mark(), 2);
        d.crash(&mut Rng::new(0));
        assert!(d.get(Table::Log, b"b").is_some());
        assert_eq!(d.write_mark(), d.durable_mark());
    }
}
