//! Divergence: a node says its replica differs exactly when a fault made
//! its backend differ. No false alarm (a node whose backend is sound
//! never calls itself diverged), and no miss (a node whose backend
//! answered differently, long enough before the end of a converged run,
//! has noticed).

use crate::sim::node::SimNode;
use crate::time::Time;
use std::time::Duration;

/// How long detection may take: digests wait `digest_flush` (20 ms) and
/// a network delay; a node that was down asks when it catches up.
pub(in crate::sim) const DETECT_WITHIN: Duration = Duration::from_secs(2);

/// No node whose backend is sound calls itself diverged, while the sound
/// ones are a majority. (With a majority unsound, no digest may have a
/// majority, and every node rightly says so.)
pub(in crate::sim) fn no_false_alarm(nodes: &[SimNode]) -> Result<(), String> {
    let unsound = nodes.iter().filter(|n| n.backend.unsound()).count();
    if unsound > nodes.len() - (nodes.len() / 2 + 1) {
        return Ok(());
    }
    for n in nodes {
        let Some(g) = &n.group else { continue };
        if let Some(d) = &g.applier.role().node_state().diverged {
            if !n.backend.unsound() {
                return Err(format!(
                    "{} calls itself diverged at slot {} ({}), but its backend is sound",
                    n.id,
                    d.slot,
                    if d.majority.is_some() {
                        "a majority differs"
                    } else {
                        "no majority"
                    }
                ));
            }
        }
    }
    Ok(())
}

/// Every node whose backend answered differently before `now -
/// DETECT_WITHIN` has noticed (judged only on a converged run).
pub(in crate::sim) fn found(nodes: &[SimNode], now: Time) -> Result<(), String> {
    for n in nodes {
        let Some(since) = n.skewed_since else {
            continue;
        };
        if now.since(since) < DETECT_WITHIN || n.backend.skewed_updates == 0 {
            continue;
        }
        if !n.diverged() {
            return Err(format!(
                "{}'s backend has answered differently since {since:?} ({} updates), \
                 and the node has not noticed",
                n.id, n.backend.skewed_updates
            ));
        }
    }
    Ok(())
}
