//! Coarse deadlines for a thread's many short waits, without a timer each.
//!
//! Every plain read must end within the request timeout, but nearly all
//! end in well under a millisecond. A tokio timer per read (registered
//! in the runtime's wheel on the first wait, removed on completion) cost
//! about 5% of ordo's CPU per GET and lifted its p99 (`scripts/bench`,
//! wrk at 16 connections). Here a read's future checks its own deadline
//! whenever it is polled, and one ticker task per thread wakes, every
//! [`TICK`], the waits whose deadline has passed: a deadline fires up to
//! a tick late, which for timeouts of seconds does not matter.
//!
//! The ticker runs only while waits are registered, for tasks of a
//! current-thread runtime (the client workers'), where a spawned task
//! shares the thread's registry; elsewhere a plain tokio timeout is used.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;

/// How often the ticker looks for waits past their deadline.
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Registry {
    waits: HashMap<u64, (Instant, Waker)>,
    next: u64,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// `future`, or `Err(())` once `limit` has passed (up to a [`TICK`]
/// later).
pub async fn within<F: Future>(limit: Duration, future: F) -> Result<F::Output, ()> {
    // A task of a current-thread runtime runs on that runtime's thread,
    // where the ticker runs too. (A future driven by `block_on` from
    // some other thread would have a registry no ticker serves.)
    let current_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !current_thread || tokio::task::try_id().is_none() {
        return tokio::time::timeout(limit, future).await.map_err(|_| ());
    }
    Bounded {
        future,
        deadline: Instant::now() + limit,
        id: None,
    }
    .await
}

pin_project_lite::pin_project! {
    struct Bounded<F> {
        #[pin]
        future: F,
        deadline: Instant,
        // Its key in the registry, once it has waited.
        id: Option<u64>,
    }

    impl<F> PinnedDrop for Bounded<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(id) = this.id {
                forget(id);
            }
        }
    }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Result<F::Output, ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            if let Some(id) = this.id.take() {
                forget(id);
            }
            return Poll::Ready(Ok(out));
        }
        if Instant::now() >= *this.deadline {
            if let Some(id) = this.id.take() {
                forget(id);
            }
            return Poll::Ready(Err(()));
        }
        let deadline = *this.deadline;
        REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            match *this.id {
                Some(id) => {
                    if let Some((_, waker)) = r.waits.get_mut(&id)
                        && !waker.will_wake(cx.waker())
                    {
                        waker.clone_from(cx.waker());
                    }
                }
                None => {
                    let id = r.next;
                    r.next += 1;
                    r.waits.insert(id, (deadline, cx.waker().clone()));
                    *this.id = Some(id);
                }
            }
            if r.ticker.as_ref().is_none_or(|t| t.is_finished()) {
                r.ticker = Some(tokio::spawn(tick()));
            }
        });
        Poll::Pending
    }
}

fn forget(id: u64) {
    // Not during the thread's teardown, when the registry may be gone.
    let _ = REGISTRY.try_with(|r| r.borrow_mut().waits.remove(&id));
}

/// Wake the waits past their deadline, every tick, while there are any.
async fn tick() {
    loop {
        tokio::time::sleep(TICK).await;
        let now = Instant::now();
        let (due, idle) = REGISTRY.with(|r| {
            let r = r.borrow();
            let due: Vec<Waker> = r
                .waits
                .values()
                .filter(|(deadline, _)| *deadline <= now)
                .map(|(_, waker)| waker.clone())
                .collect();
            (due, r.waits.is_empty())
        });
        due.into_iter().for_each(Waker::wake);
        if idle {
            // Started again by the next wait. (This task is still
            // running here, so that wait starts a ticker of its own only
            // once this one has returned.)
            REGISTRY.with(|r| r.borrow_mut().ticker = None);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_past_its_deadline_ends() {
        tokio::spawn(past_its_deadline()).await.unwrap();
    }

    async fn past_its_deadline() {
        let limit = Duration::from_millis(150);
        let start = Instant::now();
        let out = within(limit, std::future::pending::<()>()).await;
        assert_eq!(out, Err(()));
        // Not before its time; and it does end (the bound is loose: a
        // slow machine must not fail this).
        let took = start.elapsed();
        assert!(
            took >= limit && took < limit + Duration::from_secs(5),
            "{took:?}"
        );
        // Nothing is left registered, and the ticker stops.
        tokio::time::sleep(3 * TICK).await;
        REGISTRY.with(|r| {
            let r = r.borrow();
            assert_eq!(r.next, 1, "the wait was not the ticker's");
            assert!(r.waits.is_empty());
            assert!(r.ticker.is_none());
        });
    }

    #[tokio::test]
    async fn a_wait_that_ends_in_time_is_answered_and_forgotten() {
        tokio::spawn(ends_in_time()).await.unwrap();
    }

    async fn ends_in_time() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(7);
        });
        assert_eq!(within(Duration::from_secs(1), rx).await, Ok(Ok(7)));
        REGISTRY.with(|r| assert!(r.borrow().waits.is_empty()));
        // A dropped wait is forgotten too.
        let dropped = within(Duration::from_secs(1), std::future::pending::<()>());
        let _ = tokio::time::timeout(Duration::from_millis(10), dropped).await;
        REGISTRY.with(|r| assert!(r.borrow().waits.is_empty()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_thread_runtime_a_timer_bounds_the_wait() {
        let out = within(Duration::from_millis(20), std::future::pending::<()>()).await;
        assert_eq!(out, Err(()));
    }
}
