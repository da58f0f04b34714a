//! The narrow storage interface every durable role state goes through.
//!
//! Roles never touch a file. They write through [`Kv`]; the driver
//! (`crate::driver`, for the actix actors and the sim alike) decides when
//! to call [`Kv::sync`], and holds back every message whose truth depends
//! on a write until the sync that covers it has returned. Writes are
//! visible to reads at once, but survive a crash only once synced.
//!
//! Write marks are how a driver tells "covered": every put or delete
//! counts one write, [`Kv::write_mark`] is the count so far, and
//! [`Kv::durable_mark`] is the count a returned sync covered. A message
//! held at mark `m` may leave once `durable_mark() >= m`. Both stores
//! (fjall in production, the sim's disk) answer these alike.

/// One table of a Paxos group's durable state. Each table is a separate
/// ordered key space; keys are compared as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Acceptor state: promised ballot, accepted (ballot, value) per slot.
    Acceptor,
    /// The chosen log: slot -> value.
    Log,
    /// Node state: proposer round, applied index, enabled flag, ...
    Node,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Acceptor, Table::Log, Table::Node];

    pub fn name(self) -> &'static str {
        match self {
            Table::Acceptor => "acceptor",
            Table::Log => "log",
            Table::Node => "node",
        }
    }
}

/// An ordered key-value store with explicit durability.
///
/// Storage failures are fatal: an implementation that cannot read, write
/// or sync must stop the process (see `storage::fatal`), never return a
/// half-done result. "Restarting a node won't help" is the class of error.
pub trait Kv {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]);
    fn delete(&mut self, table: Table, key: &[u8]);
    /// Up to `limit` entries with key >= `from`, in ascending key order.
    fn scan(&self, table: Table, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// The entry with the greatest key, if any.
    fn last(&self, table: Table) -> Option<(Vec<u8>, Vec<u8>)>;
    /// Entries with keys below `below` will not be read again: the store
    /// may reclaim them from now on, a whole file at a time, instead of
    /// writing a tombstone per key (which an LSM tree rewrites at every
    /// compaction until it meets the value). Until a file goes, reads
    /// still see what it holds, so callers skip those keys themselves.
    ///
    /// Not ordered with writes: files may go before writes issued
    /// earlier are durable. Callers first make durable the record that
    /// says the keys are gone (its write mark covered by
    /// [`Kv::durable_mark`]), so that no crash keeps the old record
    /// without the entries it promises.
    fn drop_below(&mut self, table: Table, below: &[u8]);
    /// Make every write issued so far durable (fsync). Returns once done.
    fn sync(&mut self);
    /// Writes (puts and deletes) issued so far.
    fn write_mark(&self) -> u64;
    /// The first this many writes are on disk: a sync that started after
    /// them has returned.
    fn durable_mark(&self) -> u64;
}
