//! Durable state: the narrow [`kv::Kv`] interface and the fjall
//! implementation used in production. The protocol's records on top of it
//! are `paxos::state`.

pub mod fjall_kv;
pub mod identity;
pub mod kv;

/// A storage failure: log it and stop the process. Retrying a failed
/// fsync is not safe (the kernel may have dropped the dirty pages), and
/// restarting will not help either; an operator must look.
pub fn fatal(context: &str, err: &dyn std::fmt::Display) -> ! {
    eprintln!("ordo: fatal storage error: {context}: {err}");
    tracing::error!(%context, %err, "fatal storage error");
    std::process::exit(70)
}
