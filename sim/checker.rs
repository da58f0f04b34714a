//! Linearizability checker for simulated histories.
//!
//! The simulator records what every client saw (call time, return time, input,
//! output) and asks whether some total order of the operations, consistent with
//! real time, explains all outputs under a sequential model. Deciding this is
//! NP-complete in general, so the search here is the Wing & Gong backtracking
//! search with memoisation of visited configurations (Lowe, "Testing for
//! linearizability"), run separately on each independent resource because
//! linearizability is compositional (P-compositionality): a history is
//! linearizable iff each per-resource sub-history is. The whole check runs under
//! a budget so that a pathological history yields `Unknown` instead of hanging
//! the simulation.
//!
//! Unknown outcomes (timeouts) are what make such searches blow up, since
//! those ops stay candidates forever. Two sound reductions keep them cheap: an
//! unknown op whose step would not change the state is never placed, and the
//! search first runs with a cap on consecutive unknown placements, deepening
//! only when the cap may have hidden a linearization (see `UNKNOWN_RUN_LIMITS`).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

/// One client call in a history. Times are in any monotonic unit (the sim uses microseconds).
#[derive(Clone, Debug)]
pub struct Operation<I, O> {
    /// Who issued the call; only used to make explanations readable.
    pub client: u64,
    /// When the call was issued: the op cannot take effect before this.
    pub call: u64,
    /// None: the outcome is unknown (timeout, dropped connection). Such an op may take effect at any time after `call`, or never.
    pub ret: Option<u64>,
    /// What was asked; the model interprets it.
    pub input: I,
    /// None exactly when the outcome is unknown: any result is acceptable.
    pub output: Option<O>,
}

/// The sequential specification the history is checked against.
///
/// States are hashed and compared so the search never explores the same
/// configuration twice; keep them small.
pub trait Model {
    /// Hash + Eq so visited configurations can be memoised; Debug for explanations.
    type State: Clone + Eq + std::hash::Hash + std::fmt::Debug;
    /// Debug so explanations can show what was asked.
    type Input: Clone + std::fmt::Debug;
    /// Debug so explanations can show what was answered.
    type Output: Clone + std::fmt::Debug;
    /// State before any operation: every linearization starts here.
    fn init(&self) -> Self::State;
    /// Which independent resource this input touches (e.g. the key).
    fn partition(&self, input: &Self::Input) -> String;
    /// Apply `input` to `state`. `output` is None for an unknown outcome (accept any result).
    /// Returns the new state if the observed output is possible, None otherwise.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// Limits on the total work of one `check` call, so a history with too much
/// concurrency degrades to `Verdict::Unknown` rather than an endless search.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Search steps (attempted placements plus backtracks) over all partitions.
    pub max_steps: u64,
    /// Wall-clock cut-off, checked every few hundred steps.
    pub deadline: Option<Instant>,
}

impl Default for Budget {
    /// Generous enough for simulated histories of thousands of ops, yet bounded
    /// so a run cannot stall on one adversarial history.
    fn default() -> Self {
        Budget {
            max_steps: 10_000_000,
            deadline: None,
        }
    }
}

/// Result of a check. `Unknown` is deliberately distinct from `Ok`: running
/// out of budget proves nothing either way.
#[derive(Debug)]
pub enum Verdict {
    /// Every partition has a linearization.
    Ok,
    /// No linearization exists for the first failing partition (sorted by key).
    Violation(Explanation),
    /// The budget ran out before an answer was reached.
    Unknown {
        /// Which limit was hit, and where.
        reason: String,
    },
}

/// An operation rendered for humans, so an explanation outlives the generic
/// history types it came from.
#[derive(Clone, Debug)]
pub struct OpSummary {
    /// Index into the history slice passed to `check`.
    pub index: usize,
    /// Issuing client, to spot per-client patterns (retries, session order).
    pub client: u64,
    /// Call time, as in the history.
    pub call: u64,
    /// Return time; None when the outcome is unknown.
    pub ret: Option<u64>,
    /// The input, Debug-formatted.
    pub input: String,
    /// None when the outcome is unknown.
    pub output: Option<String>,
}

/// One op of the longest partial linearization, with the model state right
/// after it, so the reader can follow how the state evolved.
#[derive(Clone, Debug)]
pub struct Placed {
    /// The op placed at this position.
    pub op: OpSummary,
    /// Model state right after it, Debug-formatted.
    pub state_after: String,
}

/// An op that was a legal next choice after the longest partial linearization
/// but could not be applied there: these are the usual suspects.
#[derive(Clone, Debug)]
pub struct Stuck {
    /// The op that could not be placed.
    pub op: OpSummary,
    /// What the model objected to (state, input and observed output).
    pub why: String,
}

/// Why a partition is not linearizable: the furthest the search got, and what
/// blocked it there. The true culprit is usually among `stuck`, or is an op in
/// `linearized` whose effect made them impossible.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// Partition key (the resource) that failed.
    pub partition: String,
    /// Number of ops in that partition.
    pub partition_ops: usize,
    /// `Model::init`, Debug-formatted: the state before the first placed op.
    pub initial_state: String,
    /// Longest partial linearization found, in linearized order.
    pub linearized: Vec<Placed>,
    /// Ops that could have been placed next (real-time order allows it) but
    /// whose step failed from the final state of `linearized`.
    pub stuck: Vec<Stuck>,
    /// The remaining op that returns first: one of `stuck` had to take effect
    /// before it returned, which is why no other op was eligible.
    pub first_return: Option<OpSummary>,
}

fn fmt_time(t: Option<u64>) -> String {
    t.map_or_else(|| "?".to_string(), |t| t.to_string())
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} client {} [{}, {}] {} -> {}",
            self.index,
            self.client,
            self.call,
            fmt_time(self.ret),
            self.input,
            self.output.as_deref().unwrap_or("? (unknown outcome)")
        )
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "linearizability violation on partition {:?} ({} ops)",
            self.partition, self.partition_ops
        )?;
        writeln!(f, "initial state: {}", self.initial_state)?;
        writeln!(
            f,
            "longest linearizable prefix: {} of {} ops",
            self.linearized.len(),
            self.partition_ops
        )?;
        for (n, p) in self.linearized.iter().enumerate() {
            writeln!(f, "  {:>4}. {}", n + 1, p.op)?;
            writeln!(f, "        state: {}", p.state_after)?;
        }
        match &self.first_return {
            Some(op) => writeln!(
                f,
                "no op can be linearized next; one of these had to take effect before {} returned at {}:",
                format_args!("#{}", op.index),
                fmt_time(op.ret)
            )?,
            None => writeln!(f, "no op can be linearized next:")?,
        }
        for s in &self.stuck {
            writeln!(f, "  {}", s.op)?;
            writeln!(f, "        why: {}", s.why)?;
        }
        Ok(())
    }
}

/// Check `history` against `model`. Partitions are checked in sorted key order
/// so the reported violation is deterministic; the budget covers all of them.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: &Budget,
) -> Verdict {
    for (i, op) in history.iter().enumerate() {
        if let Some(r) = op.ret
            && r < op.call
        {
            return Verdict::Unknown {
                reason: format!(
                    "malformed history: op #{i} returns at {r} before its call at {}",
                    op.call
                ),
            };
        }
    }
    let mut parts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        parts.entry(model.partition(&op.input)).or_default().push(i);
    }
    let mut work = Work { steps: 0, budget };
    let total = parts.len();
    for (n, (key, idxs)) in parts.iter().enumerate() {
        match check_partition(model, history, key, idxs, &mut work) {
            Outcome::Linearizable => {}
            Outcome::Violation(e) => return Verdict::Violation(e),
            Outcome::OutOfBudget(why) => {
                return Verdict::Unknown {
                    reason: format!(
                        "{why} while checking partition {key:?} ({} of {total} partitions not checked)",
                        total - n - 1
                    ),
                };
            }
        }
    }
    Verdict::Ok
}

enum Outcome {
    Linearizable,
    Violation(Explanation),
    OutOfBudget(String),
}

/// Shared step counter, so the budget bounds the sum over partitions.
struct Work<'a> {
    steps: u64,
    budget: &'a Budget,
}

impl Work<'_> {
    fn tick(&mut self) -> Result<(), String> {
        self.steps += 1;
        if self.steps > self.budget.max_steps {
            return Err(format!(
                "step budget of {} exhausted",
                self.budget.max_steps
            ));
        }
        // Instant::now is not free; sample it (including on the first step).
        if self.steps & 255 == 1
            && let Some(d) = self.budget.deadline
            && Instant::now() >= d
        {
            return Err(format!("deadline passed after {} steps", self.steps));
        }
        Ok(())
    }
}

const NIL: usize = usize::MAX;

/// Entry of the doubly linked event list. Lifting an op unlinks its call and
/// return entries but leaves their own links intact, so unlifting in LIFO
/// order restores the list exactly (dancing links).
struct Node {
    /// Local op id within the partition.
    op: usize,
    is_call: bool,
    /// For a call entry, the node of its return entry.
    partner: usize,
    prev: usize,
    next: usize,
}

fn lift(nodes: &mut [Node], c: usize) {
    let (p, n) = (nodes[c].prev, nodes[c].next);
    nodes[p].next = n;
    if n != NIL {
        nodes[n].prev = p;
    }
    let r = nodes[c].partner;
    let (p, n) = (nodes[r].prev, nodes[r].next);
    nodes[p].next = n;
    if n != NIL {
        nodes[n].prev = p;
    }
}

fn unlift(nodes: &mut [Node], c: usize) {
    let r = nodes[c].partner;
    let (p, n) = (nodes[r].prev, nodes[r].next);
    nodes[p].next = r;
    if n != NIL {
        nodes[n].prev = r;
    }
    let (p, n) = (nodes[c].prev, nodes[c].next);
    nodes[p].next = c;
    if n != NIL {
        nodes[n].prev = c;
    }
}

/// Configurations whose hashes collide: (linearized-op bitset, state).
type Bucket<S> = Vec<(Box<[u64]>, S)>;

/// Visited configurations (set of linearized ops, state). Buckets are keyed
/// by a precomputed hash so a cache hit costs no clone of the state.
struct Cache<S> {
    hasher: RandomState,
    buckets: HashMap<u64, Bucket<S>>,
}

impl<S: Clone + Eq + Hash> Cache<S> {
    fn new() -> Self {
        Cache {
            hasher: RandomState::new(),
            buckets: HashMap::new(),
        }
    }

    /// True if the configuration was new (and is now recorded).
    fn insert(&mut self, bits: &[u64], state: &S) -> bool {
        let h = self.hasher.hash_one((bits, state));
        let bucket = self.buckets.entry(h).or_default();
        if bucket.iter().any(|(b, s)| &**b == bits && s == state) {
            return false;
        }
        bucket.push((bits.into(), state.clone()));
        true
    }
}

fn summarize<I: fmt::Debug, O: fmt::Debug>(index: usize, op: &Operation<I, O>) -> OpSummary {
    OpSummary {
        index,
        client: op.client,
        call: op.call,
        ret: op.ret,
        input: format!("{:?}", op.input),
        output: match op.ret {
            Some(_) => op.output.as_ref().map(|o| format!("{o:?}")),
            None => None,
        },
    }
}

fn check_partition<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    key: &str,
    idxs: &[usize],
    work: &mut Work<'_>,
) -> Outcome {
    let n = idxs.len();
    let ops: Vec<&Operation<M::Input, M::Output>> = idxs.iter().map(|&h| &history[h]).collect();
    // An unknown outcome accepts any output, whatever the history recorded.
    let outputs: Vec<Option<&M::Output>> = ops
        .iter()
        .map(|op| op.ret.and(op.output.as_ref()))
        .collect();
    let known: Vec<bool> = ops.iter().map(|op| op.ret.is_some()).collect();

    // Event order: time, then calls before returns (ops touching at an instant
    // are concurrent), then history index (idxs is ascending, so local id).
    // Unknown returns are at infinity, strictly after every finite time.
    let mut events: Vec<(u128, bool, usize)> = Vec::with_capacity(2 * n);
    for (j, op) in ops.iter().enumerate() {
        events.push((u128::from(op.call), false, j));
        let ret = op.ret.map_or(u128::from(u64::MAX) + 1, u128::from);
        events.push((ret, true, j));
    }
    events.sort_unstable();

    let mut nodes = Vec::with_capacity(events.len() + 1);
    nodes.push(Node {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: if events.is_empty() { NIL } else { 1 },
    });
    let mut call_node = vec![0; n];
    let mut ret_node = vec![0; n];
    for (k, &(_, is_ret, j)) in events.iter().enumerate() {
        let id = k + 1;
        nodes.push(Node {
            op: j,
            is_call: !is_ret,
            partner: NIL,
            prev: k,
            next: if id < events.len() { id + 1 } else { NIL },
        });
        if is_ret {
            ret_node[j] = id;
        } else {
            call_node[j] = id;
        }
    }
    for j in 0..n {
        nodes[call_node[j]].partner = ret_node[j];
    }

    let part = Part {
        ops,
        outputs,
        known,
    };
    for (phase, &limit) in UNKNOWN_RUN_LIMITS.iter().enumerate() {
        let last = phase + 1 == UNKNOWN_RUN_LIMITS.len();
        match search(model, &part, &mut nodes, limit, work) {
            SearchResult::Found => return Outcome::Linearizable,
            SearchResult::OutOfBudget(why) => return Outcome::OutOfBudget(why),
            SearchResult::Exhausted { cut, best } if !cut || last => {
                return Outcome::Violation(explain(
                    model, key, idxs, &part, &best, &call_node, &ret_node,
                ));
            }
            SearchResult::Exhausted { .. } => {}
        }
    }
    unreachable!("the last phase is unrestricted, so it never reports a cut")
}

/// Search phases, by the longest run of consecutive unknown-outcome ops a
/// linearization may contain. An unknown op never expires: it stays a
/// candidate for the rest of the history, so every dead end would be retried
/// with every ordering of all pending unknown ops (factorial). Timed-out ops
/// that did take effect rarely need more than one or two placed back to back,
/// so restricted phases come first: a linearization they find is a valid
/// witness, and a failure that never hit the restriction is exact. Only
/// otherwise does the search deepen, ending with the classic unrestricted one.
const UNKNOWN_RUN_LIMITS: [usize; 4] = [1, 2, 4, usize::MAX];

/// One partition's ops, indexed by local id (position in `idxs`).
struct Part<'a, M: Model> {
    ops: Vec<&'a Operation<M::Input, M::Output>>,
    /// None for unknown outcomes, whatever the history recorded.
    outputs: Vec<Option<&'a M::Output>>,
    known: Vec<bool>,
}

enum SearchResult {
    Found,
    /// No linearization; `cut` if the unknown-run limit pruned something, in
    /// which case the answer is not final.
    Exhausted {
        cut: bool,
        best: Vec<usize>,
    },
    OutOfBudget(String),
}

/// Iterative Wing & Gong search. Leaves `nodes` as it found them unless it
/// runs out of budget.
fn search<M: Model>(
    model: &M,
    part: &Part<'_, M>,
    nodes: &mut [Node],
    run_limit: usize,
    work: &mut Work<'_>,
) -> SearchResult {
    let (ops, outputs, known) = (&part.ops, &part.outputs, &part.known);
    let n = ops.len();
    let mut state = model.init();
    let mut bits = vec![0u64; n.div_ceil(64)];
    // (placed call node, state before it, unknown run before it)
    let mut stack: Vec<(usize, M::State, usize)> = Vec::new();
    let mut cache = Cache::new();
    let mut remaining_known = known.iter().filter(|&&k| k).count();
    let mut best: Vec<usize> = Vec::new();
    let mut cur = nodes[0].next;
    let mut run = 0usize;
    let mut cut = false;

    // Ops with unknown outcome may never take effect, so the search succeeds
    // as soon as every op with a known outcome is placed.
    while remaining_known > 0 {
        if let Err(why) = work.tick() {
            return SearchResult::OutOfBudget(why);
        }
        // A known op's return entry is still listed, so a return entry is met
        // before the end of the list.
        debug_assert!(cur != NIL);
        if nodes[cur].is_call {
            let j = nodes[cur].op;
            if let Some(next_state) = model.step(&state, &ops[j].input, outputs[j]) {
                // An unknown op that leaves the state unchanged is never worth
                // placing: dropping it yields the same states with fewer ops.
                let useful = known[j] || next_state != state;
                let allowed = known[j] || run < run_limit;
                cut |= useful && !allowed;
                if useful && allowed {
                    bits[j / 64] |= 1 << (j % 64);
                    if cache.insert(&bits, &next_state) {
                        let prev_state = std::mem::replace(&mut state, next_state);
                        stack.push((cur, prev_state, run));
                        lift(nodes, cur);
                        if known[j] {
                            remaining_known -= 1;
                            run = 0;
                        } else {
                            run += 1;
                        }
                        if stack.len() > best.len() {
                            best.clear();
                            best.extend(stack.iter().map(|&(c, _, _)| nodes[c].op));
                        }
                        cur = nodes[0].next;
                        continue;
                    }
                    bits[j / 64] &= !(1 << (j % 64));
                }
            }
            cur = nodes[cur].next;
        } else {
            // This op had to be placed before its return, and nothing left
            // fits: undo the most recent placement and try its successor.
            let Some((c, prev_state, prev_run)) = stack.pop() else {
                return SearchResult::Exhausted { cut, best };
            };
            let j = nodes[c].op;
            bits[j / 64] &= !(1 << (j % 64));
            state = prev_state;
            run = prev_run;
            unlift(nodes, c);
            if known[j] {
                remaining_known += 1;
            }
            cur = nodes[c].next;
        }
    }
    SearchResult::Found
}

/// Rebuild the deepest configuration after the fact: replaying the recorded
/// order is cheaper than snapshotting states during the search.
fn explain<M: Model>(
    model: &M,
    key: &str,
    idxs: &[usize],
    part: &Part<'_, M>,
    best: &[usize],
    call_node: &[usize],
    ret_node: &[usize],
) -> Explanation {
    let (ops, outputs) = (&part.ops, &part.outputs);
    let n = idxs.len();
    let init = model.init();
    let initial_state = format!("{init:?}");
    let mut state = Some(init);
    let mut linearized = Vec::with_capacity(best.len());
    for &j in best {
        state = state.and_then(|s| model.step(&s, &ops[j].input, outputs[j]));
        linearized.push(Placed {
            op: summarize(idxs[j], ops[j]),
            state_after: match &state {
                Some(s) => format!("{s:?}"),
                None => "? (replay failed: is Model::step deterministic?)".to_string(),
            },
        });
    }
    let mut done = vec![false; n];
    for &j in best {
        done[j] = true;
    }
    let first = (0..n).filter(|&j| !done[j]).min_by_key(|&j| ret_node[j]);
    let mut stuck = Vec::new();
    if let Some(f) = first {
        let mut cands: Vec<usize> = (0..n)
            .filter(|&j| !done[j] && call_node[j] < ret_node[f])
            .collect();
        cands.sort_by_key(|&j| call_node[j]);
        for j in cands {
            let input = &ops[j].input;
            let why = match &state {
                None => "? (state unknown)".to_string(),
                Some(s) => match model.step(s, input, outputs[j]) {
                    None => match outputs[j] {
                        Some(o) => format!("from state {s:?}, {input:?} cannot return {o:?}"),
                        None => format!("from state {s:?}, {input:?} cannot be applied"),
                    },
                    Some(_) => "applicable here, but every continuation after it fails".to_string(),
                },
            };
            stuck.push(Stuck {
                op: summarize(idxs[j], ops[j]),
                why,
            });
        }
    }
    Explanation {
        partition: key.to_string(),
        partition_ops: n,
        initial_state,
        linearized,
        stuck,
        first_return: first.map(|j| summarize(idxs[j], ops[j])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Clone, Debug)]
    enum RegIn {
        Read(u8),
        Write(u8, i64),
    }

    #[derive(Clone, Debug, PartialEq)]
    enum RegOut {
        Ack,
        Val(i64),
    }

    /// One integer register per key, initially 0.
    struct Register;

    impl Model for Register {
        type State = i64;
        type Input = RegIn;
        type Output = RegOut;
        fn init(&self) -> i64 {
            0
        }
        fn partition(&self, input: &RegIn) -> String {
            match input {
                RegIn::Read(k) | RegIn::Write(k, _) => format!("k{k}"),
            }
        }
        fn step(&self, s: &i64, input: &RegIn, output: Option<&RegOut>) -> Option<i64> {
            match (input, output) {
                (RegIn::Write(_, v), None | Some(RegOut::Ack)) => Some(*v),
                (RegIn::Read(_), None) => Some(*s),
                (RegIn::Read(_), Some(RegOut::Val(v))) if v == s => Some(*s),
                _ => None,
            }
        }
    }

    #[derive(Clone, Debug)]
    enum ListIn {
        Append(u8, u64),
        Read(u8),
    }

    /// One append-only list per key; appends and reads return the whole list.
    struct AppendList;

    impl Model for AppendList {
        type State = Vec<u64>;
        type Input = ListIn;
        type Output = Vec<u64>;
        fn init(&self) -> Vec<u64> {
            Vec::new()
        }
        fn partition(&self, input: &ListIn) -> String {
            match input {
                ListIn::Append(k, _) | ListIn::Read(k) => format!("k{k}"),
            }
        }
        fn step(&self, s: &Vec<u64>, input: &ListIn, out: Option<&Vec<u64>>) -> Option<Vec<u64>> {
            let next = match input {
                ListIn::Append(_, v) => {
                    let mut n = s.clone();
                    n.push(*v);
                    n
                }
                ListIn::Read(_) => s.clone(),
            };
            match out {
                Some(o) if *o != next => None,
                _ => Some(next),
            }
        }
    }

    fn op<I, O>(
        client: u64,
        call: u64,
        ret: Option<u64>,
        input: I,
        output: Option<O>,
    ) -> Operation<I, O> {
        Operation {
            client,
            call,
            ret,
            input,
            output,
        }
    }

    fn w(c: u64, call: u64, ret: u64, k: u8, v: i64) -> Operation<RegIn, RegOut> {
        op(c, call, Some(ret), RegIn::Write(k, v), Some(RegOut::Ack))
    }

    fn r(c: u64, call: u64, ret: u64, k: u8, v: i64) -> Operation<RegIn, RegOut> {
        op(c, call, Some(ret), RegIn::Read(k), Some(RegOut::Val(v)))
    }

    fn w_unknown(c: u64, call: u64, k: u8, v: i64) -> Operation<RegIn, RegOut> {
        op(c, call, None, RegIn::Write(k, v), None)
    }

    fn violation(v: Verdict) -> Explanation {
        match v {
            Verdict::Violation(e) => e,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    fn assert_ok(v: Verdict) {
        if !matches!(v, Verdict::Ok) {
            match v {
                Verdict::Violation(e) => panic!("unexpected violation:\n{e}"),
                other => panic!("expected Ok, got {other:?}"),
            }
        }
    }

    #[test]
    fn sequential_ok() {
        let h = vec![
            w(1, 0, 1, 0, 1),
            r(2, 2, 3, 0, 1),
            w(1, 4, 5, 0, 2),
            r(2, 6, 7, 0, 2),
            r(1, 8, 9, 0, 2),
        ];
        assert_ok(check(&Register, &h, &Budget::default()));
        assert_ok(check(&Register, &[], &Budget::default()));
    }

    #[test]
    fn concurrent_writes_read_sees_either() {
        for seen in [1, 2] {
            let h = vec![
                w(1, 0, 10, 0, 1),
                w(2, 0, 10, 0, 2),
                r(3, 11, 12, 0, seen),
                r(3, 13, 14, 0, seen),
            ];
            assert_ok(check(&Register, &h, &Budget::default()));
        }
        // ...but two later reads cannot disagree.
        let h = vec![
            w(1, 0, 10, 0, 1),
            w(2, 0, 10, 0, 2),
            r(3, 11, 12, 0, 1),
            r(3, 13, 14, 0, 2),
        ];
        violation(check(&Register, &h, &Budget::default()));
    }

    #[test]
    fn touching_ops_are_concurrent() {
        // The read is called at the instant the write returns: lenient order.
        let h = vec![w(1, 0, 10, 0, 1), r(2, 10, 20, 0, 0)];
        assert_ok(check(&Register, &h, &Budget::default()));
    }

    #[test]
    fn stale_read_is_violation() {
        let h = vec![
            w(1, 0, 10, 0, 1),
            r(2, 1, 5, 0, 0),
            r(2, 20, 30, 0, 0), // stale: the write completed at 10
            w(1, 40, 50, 0, 2),
        ];
        let e = violation(check(&Register, &h, &Budget::default()));
        assert_eq!(e.partition, "k0");
        assert_eq!(e.stuck.len(), 1);
        assert_eq!(e.stuck[0].op.index, 2);
        let text = e.to_string();
        println!("{text}");
        assert!(text.contains("#2 client 2 [20, 30] Read(0) -> Val(0)"));
        assert!(text.contains("cannot return Val(0)"));
    }

    #[test]
    fn read_of_unwritten_value_is_violation() {
        let h = vec![w(1, 0, 10, 0, 1), r(2, 5, 15, 0, 7)];
        let e = violation(check(&Register, &h, &Budget::default()));
        assert!(e.stuck.iter().any(|s| s.op.index == 1));
        println!("{e}");
    }

    #[test]
    fn unknown_outcomes() {
        // Timed out, but a later read shows it took effect.
        let h = vec![w_unknown(1, 0, 0, 5), r(2, 100, 110, 0, 5)];
        assert_ok(check(&Register, &h, &Budget::default()));
        // Timed out and never observed: it may never have happened.
        let h = vec![
            w_unknown(1, 0, 0, 5),
            r(2, 100, 110, 0, 0),
            r(2, 120, 130, 0, 0),
        ];
        assert_ok(check(&Register, &h, &Budget::default()));
        // It cannot take effect before it was called.
        let h = vec![r(2, 0, 10, 0, 5), w_unknown(1, 20, 0, 5)];
        violation(check(&Register, &h, &Budget::default()));
        // Recorded output is ignored for an unknown outcome.
        let h = vec![op(1, 0, None, RegIn::Read(0), Some(RegOut::Val(9)))];
        assert_ok(check(&Register, &h, &Budget::default()));
    }

    #[test]
    fn partitions_are_independent() {
        // Interleaved in time; each key alone is linearizable.
        let h = vec![
            w(1, 0, 10, 0, 1),
            w(2, 0, 10, 1, 2),
            r(3, 11, 12, 0, 1),
            r(3, 13, 14, 1, 2),
        ];
        assert_ok(check(&Register, &h, &Budget::default()));
        // Key 1 has a stale read; key 0 is fine.
        let h = vec![
            w(1, 0, 10, 0, 1),
            w(2, 0, 10, 1, 2),
            r(3, 11, 12, 0, 1),
            r(3, 13, 14, 1, 0),
        ];
        let e = violation(check(&Register, &h, &Budget::default()));
        assert_eq!(e.partition, "k1");
        assert_eq!(e.stuck[0].op.index, 3);
        // Both broken: the first key in sorted order is reported.
        let h = vec![r(1, 0, 1, 2, 9), r(1, 2, 3, 1, 9)];
        assert_eq!(
            violation(check(&Register, &h, &Budget::default())).partition,
            "k1"
        );
    }

    #[test]
    fn budget_exhaustion_is_unknown() {
        let mut h = Vec::new();
        for i in 0..200u64 {
            let v = i as i64 + 1;
            h.push(w(i, 0, 1000, 0, v));
            h.push(r(i + 1000, 0, 1000, 0, v));
        }
        let tiny = Budget {
            max_steps: 10,
            deadline: None,
        };
        assert!(matches!(
            check(&Register, &h, &tiny),
            Verdict::Unknown { .. }
        ));
        let past = Budget {
            max_steps: u64::MAX,
            deadline: Some(Instant::now()),
        };
        match check(&Register, &h, &past) {
            Verdict::Unknown { reason } => assert!(reason.contains("deadline")),
            other => panic!("expected Unknown, got {other:?}"),
        }
    }

    #[test]
    fn malformed_history_is_unknown() {
        let h = vec![w(1, 10, 5, 0, 1)];
        assert!(matches!(
            check(&Register, &h, &Budget::default()),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn append_applied_twice_is_violation() {
        let b = Budget::default();
        let ok = vec![
            op(1, 0, Some(10), ListIn::Append(0, 1), Some(vec![1])),
            op(2, 5, Some(15), ListIn::Append(0, 2), Some(vec![1, 2])),
            op(3, 20, Some(30), ListIn::Read(0), Some(vec![1, 2])),
        ];
        assert_ok(check(&AppendList, &ok, &b));
        let dup = vec![
            op(1, 0, Some(10), ListIn::Append(0, 1), Some(vec![1])),
            op(3, 20, Some(30), ListIn::Read(0), Some(vec![1, 1])),
        ];
        let e = violation(check(&AppendList, &dup, &b));
        assert_eq!(e.stuck[0].op.index, 1);
        println!("{e}");
        // Even with an unknown outcome the append applies at most once.
        let dup = vec![
            op(1, 0, None, ListIn::Append(0, 1), None),
            op(3, 20, Some(30), ListIn::Read(0), Some(vec![1, 1])),
        ];
        violation(check(&AppendList, &dup, &b));
    }

    #[test]
    fn long_runs_of_unknown_ops() {
        // Five timed-out appends all seen by one read, in an order that
        // differs from their call order: needs deepening past the restricted
        // phases.
        let b = Budget::default();
        let mut h: Vec<_> = (0..5u64)
            .map(|v| op(v, v, None, ListIn::Append(0, v), None))
            .collect();
        h.push(op(
            9,
            100,
            Some(110),
            ListIn::Read(0),
            Some(vec![4, 2, 0, 3, 1]),
        ));
        assert_ok(check(&AppendList, &h, &b));
        // A value appended twice is still impossible, however many unknowns.
        h.push(op(
            9,
            120,
            Some(130),
            ListIn::Read(0),
            Some(vec![4, 2, 0, 3, 1, 1]),
        ));
        let e = violation(check(&AppendList, &h, &b));
        assert_eq!(e.stuck.last().map(|s| s.op.index), Some(6));
        println!("{e}");
    }

    /// Reference answer by plain enumeration of all real-time-respecting
    /// orders; unknown-outcome ops may be left out.
    fn brute_force<M: Model>(m: &M, h: &[Operation<M::Input, M::Output>]) -> bool {
        fn go<M: Model>(
            m: &M,
            h: &[Operation<M::Input, M::Output>],
            placed: &mut Vec<bool>,
            s: &M::State,
        ) -> bool {
            if (0..h.len()).all(|k| placed[k] || h[k].ret.is_none()) {
                return true;
            }
            for j in 0..h.len() {
                let blocked = (0..h.len())
                    .any(|k| !placed[k] && k != j && h[k].ret.is_some_and(|r| r < h[j].call));
                if placed[j] || blocked {
                    continue;
                }
                let out = if h[j].ret.is_some() {
                    h[j].output.as_ref()
                } else {
                    None
                };
                if let Some(next) = m.step(s, &h[j].input, out) {
                    placed[j] = true;
                    let ok = go(m, h, placed, &next);
                    placed[j] = false;
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        go(m, h, &mut vec![false; h.len()], &m.init())
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        let (mut oks, mut bad) = (0, 0);
        for _ in 0..3000 {
            let n = 1 + rng.below(7) as usize;
            let mut reg = Vec::new();
            let mut list = Vec::new();
            for c in 0..n as u64 {
                let call = rng.below(20);
                let ret = (rng.below(100) >= 15).then(|| call + rng.below(10));
                let v = rng.below(3);
                if rng.below(2) == 0 {
                    reg.push(op(
                        c,
                        call,
                        ret,
                        RegIn::Write(0, v as i64),
                        ret.map(|_| RegOut::Ack),
                    ));
                    let seen: Vec<u64> =
                        (0..rng.below(3)).map(|_| rng.below(3)).chain([v]).collect();
                    list.push(op(c, call, ret, ListIn::Append(0, v), ret.map(|_| seen)));
                } else {
                    reg.push(op(
                        c,
                        call,
                        ret,
                        RegIn::Read(0),
                        ret.map(|_| RegOut::Val(v as i64)),
                    ));
                    let seen: Vec<u64> = (0..rng.below(4)).map(|_| rng.below(3)).collect();
                    list.push(op(c, call, ret, ListIn::Read(0), ret.map(|_| seen)));
                }
            }
            let expect = brute_force(&Register, &reg);
            let got = check(&Register, &reg, &Budget::default());
            assert_eq!(matches!(got, Verdict::Ok), expect, "{reg:?}");
            assert_eq!(matches!(got, Verdict::Violation(_)), !expect, "{reg:?}");
            let expect_l = brute_force(&AppendList, &list);
            let got = check(&AppendList, &list, &Budget::default());
            assert_eq!(matches!(got, Verdict::Ok), expect_l, "{list:?}");
            assert_eq!(matches!(got, Verdict::Violation(_)), !expect_l, "{list:?}");
            for e in [expect, expect_l] {
                if e { oks += 1 } else { bad += 1 }
            }
        }
        println!("brute-force cross-check: {oks} linearizable, {bad} not");
        assert!(oks > 500 && bad > 500);
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// (client, call, linearization point, ret) with strictly increasing
    /// points and each client issuing one call at a time.
    fn gen_timing(
        rng: &mut Rng,
        n_ops: usize,
        clients: u64,
        width: u64,
    ) -> Vec<(u64, u64, u64, u64)> {
        let mut free = vec![0u64; clients as usize];
        let mut t = 0u64;
        let mut out = Vec::with_capacity(n_ops);
        while out.len() < n_ops {
            t += 1 + rng.below(3);
            let c = rng.below(clients);
            let since = free[c as usize];
            if since > t {
                continue;
            }
            let call = t - rng.below(width + 1).min(t - since);
            let ret = t + rng.below(width + 1);
            free[c as usize] = ret;
            out.push((c, call, t, ret));
        }
        out
    }

    fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// A history produced by a real sequential execution at the points, with
    /// some outcomes lost (some of those never applied).
    fn gen_register(
        rng: &mut Rng,
        n_ops: usize,
        clients: u64,
        keys: u64,
        width: u64,
        lost_pct: u64,
    ) -> Vec<Operation<RegIn, RegOut>> {
        let mut regs = vec![0i64; keys as usize];
        let mut h = Vec::new();
        for (i, (c, call, _, ret)) in gen_timing(rng, n_ops, clients, width)
            .into_iter()
            .enumerate()
        {
            let k = rng.below(keys) as u8;
            let lost = rng.below(100) < lost_pct;
            let applied = !lost || rng.below(2) == 0;
            let (input, output) = if rng.below(2) == 0 {
                if applied {
                    regs[k as usize] = i as i64 + 1;
                }
                (RegIn::Write(k, i as i64 + 1), RegOut::Ack)
            } else {
                (RegIn::Read(k), RegOut::Val(regs[k as usize]))
            };
            if lost {
                h.push(op(c, call, None, input, None));
            } else {
                h.push(op(c, call, Some(ret), input, Some(output)));
            }
        }
        shuffle(rng, &mut h);
        h
    }

    fn gen_list(
        rng: &mut Rng,
        n_ops: usize,
        clients: u64,
        keys: u64,
        width: u64,
        lost_pct: u64,
    ) -> Vec<Operation<ListIn, Vec<u64>>> {
        let mut lists = vec![Vec::new(); keys as usize];
        let mut h = Vec::new();
        for (i, (c, call, _, ret)) in gen_timing(rng, n_ops, clients, width)
            .into_iter()
            .enumerate()
        {
            let k = rng.below(keys) as u8;
            let lost = rng.below(100) < lost_pct;
            let applied = !lost || rng.below(2) == 0;
            let input = if rng.below(2) == 0 {
                if applied {
                    lists[k as usize].push(i as u64);
                }
                ListIn::Append(k, i as u64)
            } else {
                ListIn::Read(k)
            };
            if lost {
                h.push(op(c, call, None, input, None));
            } else {
                h.push(op(
                    c,
                    call,
                    Some(ret),
                    input,
                    Some(lists[k as usize].clone()),
                ));
            }
        }
        shuffle(rng, &mut h);
        h
    }

    #[test]
    fn random_linearizable_histories_pass() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for n in 0..200 {
            let keys = 1 + n % 3;
            let clients = 2 + rng.below(5);
            let width = 1 + rng.below(20);
            let h = gen_register(&mut rng, 30, clients, keys, width, 10);
            assert_ok(check(&Register, &h, &Budget::default()));
            let h = gen_list(&mut rng, 30, clients, keys, width, 10);
            assert_ok(check(&AppendList, &h, &Budget::default()));
        }
    }

    #[test]
    fn random_corrupted_histories_mostly_fail() {
        // Sanity check that the generator plus checker is not vacuous: a read
        // of a value nobody wrote must always be caught.
        let mut rng = Rng(12345);
        let (mut tried, mut caught) = (0, 0);
        for _ in 0..100 {
            let mut h = gen_register(&mut rng, 30, 3, 1, 3, 10);
            if let Some(o) = h
                .iter_mut()
                .find(|o| matches!(o.output, Some(RegOut::Val(_))))
            {
                o.output = Some(RegOut::Val(-1));
                tried += 1;
                caught += matches!(
                    check(&Register, &h, &Budget::default()),
                    Verdict::Violation(_)
                ) as u32;
            }
        }
        assert!(tried > 90);
        assert_eq!(caught, tried);
    }

    #[test]
    fn performance_2000_ops() {
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        for lost_pct in [0, 5, 10] {
            let h = gen_register(&mut rng, 2000, 8, 5, 30, lost_pct);
            let start = Instant::now();
            let v = check(&Register, &h, &Budget::default());
            println!(
                "2000 ops, 8 clients, 5 keys, register, {lost_pct}% unknown outcomes: {:?}",
                start.elapsed()
            );
            assert_ok(v);
            let h = gen_list(&mut rng, 2000, 8, 5, 30, lost_pct);
            let start = Instant::now();
            let v = check(&AppendList, &h, &Budget::default());
            println!(
                "2000 ops, 8 clients, 5 keys, append list, {lost_pct}% unknown outcomes: {:?}",
                start.elapsed()
            );
            assert_ok(v);
        }

        // Deep single-key sequential history: the search must not recurse.
        let h: Vec<_> = (0..20_000u64)
            .map(|i| w(1, 2 * i, 2 * i + 1, 0, i as i64))
            .collect();
        let deadline = Some(Instant::now() + Duration::from_secs(600));
        assert_ok(check(
            &Register,
            &h,
            &Budget {
                max_steps: 10_000_000,
                deadline,
            },
        ));
    }
}
