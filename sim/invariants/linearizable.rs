//! The client history is linearizable: every update, every read through
//! the log and every read-index read, with its call and return times,
//! judged by our Wing & Gong checker against the key-value model. Plain
//! reads are not linearizable by design; `staleness.rs` judges them.

use crate::sim::checker::{self, Budget, Operation, Verdict};
use crate::sim::clients::{OpRecord, OpStatus, Via};
use crate::sim::workload::{KvModel, SimOp};

/// `Ok(None)`: the history was too large for the checker's budget.
pub(in crate::sim) fn check(ops: &[OpRecord]) -> Result<Option<()>, String> {
    let history: Vec<Operation<SimOp, String>> = ops
        .iter()
        .filter(|o| o.status != OpStatus::Refused && o.via != Via::Plain)
        .map(|o| Operation {
            client: o.client as u64,
            call: o.call.as_micros(),
            ret: o.ret.map(|t| t.as_micros()),
            input: o.input.clone(),
            output: o.output.clone(),
        })
        .collect();
    let budget = Budget {
        max_steps: 2_000_000,
        deadline: None,
    };
    match checker::check(&KvModel, &history, &budget) {
        Verdict::Ok => Ok(Some(())),
        Verdict::Unknown { .. } => Ok(None),
        Verdict::Violation(e) => Err(format!("history is not linearizable:\n{e}")),
    }
}
