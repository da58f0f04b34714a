//! The group's [`Kv`] as the actors see it: fjall, plus counters that let
//! a driver tell whether every write issued so far is already durable.
//!
//! The four actors of one group share one [`SyncStats`]. Every `put` and
//! `delete` bumps `writes` once it has returned; a `sync` notes `writes`
//! before it starts and, once fjall has fsynced, raises `durable` to that
//! mark. So `durable >= m` means a sync that started after the first `m`
//! writes has returned: those writes are on disk.

use crate::storage::fjall_kv::FjallKv;
use crate::storage::kv::{Kv, Table};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Write and sync counters shared by one group's actors.
#[derive(Debug, Default)]
pub struct SyncStats {
    writes: AtomicU64,
    durable: AtomicU64,
    syncs: AtomicU64,
}

impl SyncStats {
    /// Writes (puts and deletes) issued so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The first this many writes are known to be on disk.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// `Kv::sync` calls that have returned.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
}

/// One group's tables in fjall, counting writes and syncs. Cheap to
/// clone; clones share the database and the counters.
#[derive(Clone)]
pub struct GroupKv {
    inner: FjallKv,
    stats: Arc<SyncStats>,
}

impl GroupKv {
    pub fn new(inner: FjallKv) -> GroupKv {
        GroupKv {
            inner,
            stats: Arc::new(SyncStats::default()),
        }
    }

    pub fn stats(&self) -> &Arc<SyncStats> {
        &self.stats
    }

    /// The write count now: a message whose truth depends on writes made
    /// so far may leave once `is_durable(mark)`.
    pub fn write_mark(&self) -> u64 {
        self.stats.writes()
    }

    pub fn is_durable(&self, mark: u64) -> bool {
        self.stats.durable() >= mark
    }
}

impl Kv for GroupKv {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(table, key)
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.inner.put(table, key, value);
        self.stats.writes.fetch_add(1, Ordering::SeqCst);
    }

    fn delete(&mut self, table: Table, key: &[u8]) {
        self.inner.delete(table, key);
        self.stats.writes.fetch_add(1, Ordering::SeqCst);
    }

    fn scan(&self, table: Table, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.inner.scan(table, from, limit)
    }

    fn last(&self, table: Table) -> Option<(Vec<u8>, Vec<u8>)> {
        self.inner.last(table)
    }

    fn sync(&mut self) {
        // Every write counted before this load has returned from fjall,
        // so the fsync below covers it.
        let mark = self.stats.writes();
        self.inner.sync();
        self.stats.durable.fetch_max(mark, Ordering::SeqCst);
        self.stats.syncs.fetch_add(1, Ordering::SeqCst);
    }
}
