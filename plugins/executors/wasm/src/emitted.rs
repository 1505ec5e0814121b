//! The pieces of output a function `emit`s (`spear:function/output`) during one invocation: sent
//! on at once to a streaming caller, or kept and put before the function's result for any other.
//! At most `max` bytes in all: past that `emit` answers `false` and the invocation fails (a
//! function's own failure: the instance stays ready).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// A streaming caller's side of one invocation: the channel its pieces go down (to the thread
/// that hands them to the caller's sink), and the flag that says it wants no more.
pub struct Pieces {
    /// Where pieces go.
    pub tx: SyncSender<Vec<u8>>,
    /// Set when no more are wanted.
    pub stop: Arc<AtomicBool>,
}

/// Where the current invocation's pieces go.
#[derive(Default)]
pub struct Output {
    pieces: Option<Pieces>,
    kept: Vec<u8>,
    total: usize,
    max: usize,
    until: Option<Instant>,
    over: bool,
    /// A piece waited for room past the deadline and was dropped.
    late: bool,
}

impl Output {
    /// For one invocation: to `pieces` (a streaming caller) or kept; at most `max` bytes; a
    /// piece waits for room in the channel until `until` (the invocation's deadline; `None`:
    /// one too far to be an instant).
    pub fn new(pieces: Option<Pieces>, max: usize, until: Option<Instant>) -> Self {
        Self {
            pieces,
            max,
            until,
            ..Self::default()
        }
    }

    /// Take a piece the function emitted; whether more are wanted.
    pub fn take(&mut self, piece: Vec<u8>) -> bool {
        if self.over {
            return false;
        }
        self.total = self.total.saturating_add(piece.len());
        if self.total > self.max {
            self.over = true;
            self.kept = Vec::new();
            return false;
        }
        let Some(p) = &self.pieces else {
            self.kept.extend_from_slice(&piece);
            return true;
        };
        if p.stop.load(Ordering::Relaxed) {
            return false;
        }
        let mut item = piece;
        loop {
            match p.tx.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(back)) => {
                    // A caller that takes pieces slowly holds the function up until its
                    // deadline; then the piece is lost, and so is the invocation's output.
                    if self.until.is_some_and(|u| Instant::now() >= u) {
                        self.late = true;
                        break;
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        p.stop.store(true, Ordering::Relaxed);
        false
    }

    /// The invocation's output: the pieces kept, then `result`; an error when the pieces came to
    /// more than the limit.
    pub fn finish(self, result: Vec<u8>) -> Result<Vec<u8>, String> {
        if self.over {
            return Err(format!(
                "its output (the pieces it emitted) came to more than {} bytes",
                self.max
            ));
        }
        if self.late {
            return Err(
                "a piece of its output could not be handed over before the deadline".into(),
            );
        }
        if self.kept.is_empty() {
            return Ok(result);
        }
        let mut out = self.kept;
        out.extend_from_slice(&result);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(60))
    }

    #[test]
    fn kept_pieces_come_before_the_result_within_the_limit() {
        let mut o = Output::new(None, 5, later());
        assert!(o.take(b"ab".to_vec()));
        assert!(o.take(b"cd".to_vec()));
        assert_eq!(o.finish(b"!".to_vec()).unwrap(), b"abcd!");
        let mut o = Output::new(None, 3, later());
        assert!(o.take(b"ab".to_vec()));
        assert!(!o.take(b"cd".to_vec()), "over the limit");
        assert!(!o.take(b"e".to_vec()), "and no more after");
        assert!(
            o.finish(Vec::new())
                .unwrap_err()
                .contains("more than 3 bytes")
        );
    }

    #[test]
    fn streamed_pieces_go_at_once_until_no_more_are_wanted() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut o = Output::new(
            Some(Pieces {
                tx,
                stop: stop.clone(),
            }),
            100,
            Some(Instant::now() + Duration::from_millis(50)),
        );
        assert!(o.take(b"a".to_vec()));
        assert_eq!(rx.try_recv().unwrap(), b"a");
        // A caller that reads nothing: the next piece waits until the deadline, then no more.
        assert!(o.take(b"b".to_vec()));
        assert!(!o.take(b"c".to_vec()));
        assert!(stop.load(Ordering::Relaxed));
        assert!(
            o.finish(b"z".to_vec())
                .unwrap_err()
                .contains("before the deadline"),
            "a piece was lost"
        );
        assert_eq!(rx.try_recv().unwrap(), b"b");
        // A caller gone: no more wanted, and nothing lost that anyone waits for.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        drop(rx);
        let mut o = Output::new(
            Some(Pieces {
                tx,
                stop: Arc::new(AtomicBool::new(false)),
            }),
            100,
            later(),
        );
        assert!(!o.take(b"a".to_vec()));
        assert_eq!(
            o.finish(b"z".to_vec()).unwrap(),
            b"z",
            "streamed pieces are not kept"
        );
    }
}
