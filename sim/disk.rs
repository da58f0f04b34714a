//! A simulated disk that keeps what was synced apart from what was only
//! written. A crash keeps the synced state plus a random prefix of the
//! unsynced writes (the OS may have flushed some of them, in order).

use crate::rng::Rng;
use crate::storage::kv::{Kv, Table};
use std::collections::BTreeMap;

type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

#[derive(Clone, Debug)]
enum Write {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
}

#[derive(Default)]
pub struct SimDisk {
    /// What reads see: synced state plus every pending write.
    view: Tables,
    synced: Tables,
    pending: Vec<Write>,
    pub syncs: u64,
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

    /// Make the first `n` pending writes durable (a sync that started
    /// when there were `n`).
    pub fn sync_prefix(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        for w in self.pending.drain(..n) {
            apply(&mut self.synced, &w);
        }
        self.syncs += 1;
    }

    /// Power loss: keep the synced state and a random prefix of the rest.
    pub fn crash(&mut self, rng: &mut Rng) {
        let keep = rng.below(self.pending.len() as u64 + 1) as usize;
        for w in self.pending.drain(..).take(keep) {
            apply(&mut self.synced, &w);
        }
        self.view = self.synced.clone();
    }

    /// Every key of a table, for end-of-run comparisons.
    pub fn table(&self, t: Table) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.view[idx(t)]
    }
}

impl Kv for SimDisk {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.view[idx(table)].get(key).cloned()
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        let w = Write::Put(table, key.to_vec(), value.to_vec());
        apply(&mut self.view, &w);
        self.pending.push(w);
    }

    fn delete(&mut self, table: Table, key: &[u8]) {
        let w = Write::Delete(table, key.to_vec());
        apply(&mut self.view, &w);
        self.pending.push(w);
    }

    fn scan(&self, table: Table, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.view[idx(table)]
            .range(from.to_vec()..)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn last(&self, table: Table) -> Option<(Vec<u8>, Vec<u8>)> {
        self.view[idx(table)]
            .iter()
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    fn sync(&mut self) {
        let n = self.pending.len();
        self.sync_prefix(n);
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
        }
    }
}
