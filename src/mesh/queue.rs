//! A peer's outgoing queue: bounded in frames and in bytes.
//!
//! A frame count alone bounds nothing: a frame is up to 16 MiB, and a
//! slot's Accept carries its whole batch. While a peer is down its queue
//! fills between two connection attempts (up to `backoff_max` apart), and
//! with slots of a few dozen updates 4,096 frames held about 80 MB (a
//! leader at 64 clients with one follower stopped). The byte bound keeps
//! that to `bytes`, whatever the frames hold. An empty queue always takes
//! one frame, so the largest frame still gets through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Full, in frames or in bytes.
    Full,
    /// The peer's connection task has stopped.
    Closed,
}

/// A queue holding at most `frames` frames and, beyond its first frame,
/// `bytes` bytes.
pub(super) fn channel(frames: usize, bytes: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(frames);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            queued: queued.clone(),
            max_bytes: bytes,
        },
        QueueRx { rx, queued },
    )
}

pub(super) struct QueueTx {
    tx: mpsc::Sender<Vec<u8>>,
    /// Bytes sent and not yet taken out.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl QueueTx {
    /// Queue `frame` unless that would pass a bound.
    pub(super) fn try_send(&self, frame: Vec<u8>) -> Result<(), Refused> {
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        self.tx.try_send(frame).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }
}

pub(super) struct QueueRx {
    rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

impl QueueRx {
    /// The next frame; `None` once every sender is gone.
    pub(super) async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.rx.recv().await?;
        self.taken(&frame);
        Some(frame)
    }

    /// The next frame if one is waiting.
    pub(super) fn try_recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.rx.try_recv().ok()?;
        self.taken(&frame);
        Some(frame)
    }

    fn taken(&self, frame: &[u8]) {
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_beyond_the_byte_bound_are_refused_until_taken_out() {
        let (tx, mut rx) = channel(100, 1000);
        for _ in 0..4 {
            assert_eq!(tx.try_send(vec![0; 250]), Ok(()));
        }
        assert_eq!(
            tx.try_send(vec![0; 1]),
            Err(Refused::Full),
            "1000 bytes held"
        );
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(250));
        assert_eq!(tx.try_send(vec![0; 250]), Ok(()), "room again");
        assert_eq!(tx.try_send(vec![0; 1]), Err(Refused::Full));
    }

    #[test]
    fn an_empty_queue_takes_a_frame_larger_than_the_bound() {
        let (tx, mut rx) = channel(100, 1000);
        assert_eq!(tx.try_send(vec![0; 5000]), Ok(()));
        assert_eq!(tx.try_send(vec![0; 1]), Err(Refused::Full));
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(5000));
        assert_eq!(tx.try_send(vec![0; 1]), Ok(()));
    }

    #[test]
    fn the_frame_bound_holds_for_small_frames_and_a_closed_queue_says_so() {
        let (tx, rx) = channel(2, 1 << 20);
        assert_eq!(tx.try_send(vec![1]), Ok(()));
        assert_eq!(tx.try_send(vec![2]), Ok(()));
        assert_eq!(tx.try_send(vec![3]), Err(Refused::Full));
        drop(rx);
        assert_eq!(tx.try_send(vec![4]), Err(Refused::Closed));
    }
}
