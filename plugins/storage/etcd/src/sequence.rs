//! Exactly-once writes through resends: the backend's writer sequence.
//!
//! A write that reached a member but got no answer may have applied, or may still apply later (a
//! follower that forwarded it to the leader, a request waiting in a socket). So every write is a
//! transaction that also checks that this writer's own key holds the token of its last write, and
//! moves the key to a fresh token. Then:
//! - sending the same transaction again is safe: one copy at most applies, and when a copy fails
//!   the key says whether another copy applied (it holds the fresh token) or the write's own
//!   checks failed (it holds the old one);
//! - a copy that arrives after a later write fails its check: it can never undo that write;
//! - a write none of whose copies was answered has an unknown outcome (its error begins with
//!   [`OUTCOME_UNKNOWN`]). Before the next write the backend settles it: it moves the key from
//!   the old token to a third one, so that no copy of the write can apply any more, or finds that
//!   one did.
//!
//! A write whose own checks failed while an earlier copy of it may still be on its way is settled
//! the same way before it is answered, so that "not applied" is final.
//!
//! The key is `<prefix>\0writer/<id>`, one per opened backend, created when it opens. Keys that
//! begin with a NUL byte are the backend's own: scans skip them, writes of them are refused. The
//! keys of writers idle for a week are removed when a backend opens. A writer that finds its key
//! gone or changed (a cluster restored from a backup) takes it over from what it holds: no copy
//! of its earlier writes expects that, so none can apply.
//!
//! [`OUTCOME_UNKNOWN`]: spear_plugin_api::storage::OUTCOME_UNKNOWN

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, TxnOp};

/// Where the writers' keys are, under the namespace.
pub(crate) const WRITERS: &[u8] = b"\0writer/";
/// How long a writer's key is kept after its last write.
pub(crate) const IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the writer's key holds, as far as the writer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// It holds this (`None`: it does not exist).
    Known(Option<Vec<u8>>),
    /// A write moving it from `before` to `after` may have applied; settling moves it from
    /// `before` to `burn` instead (a token of its own, so that settling may be sent again).
    Unsure {
        before: Option<Vec<u8>>,
        after: Vec<u8>,
        burn: Vec<u8>,
    },
}

/// The length of a token: 13 digits of milliseconds, `-`, 32 hex digits, `-`, 16 hex digits.
pub(crate) const TOKEN_LEN: usize = 63;

/// A token never used before: the time it was made (for the idle sweep), then 128 random bits
/// and a counter.
pub(crate) fn token() -> Vec<u8> {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let random = |salt: u64| {
        // RandomState's keys come from the operating system's random source.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(now.as_nanos());
        h.write_u32(std::process::id());
        h.finish()
    };
    format!(
        "{:013}-{:016x}{:016x}-{n:016x}",
        now.as_millis(),
        random(n),
        random(!n)
    )
    .into_bytes()
}

/// When `token` was made, in milliseconds since the epoch (`None`: not one of ours).
pub(crate) fn made_ms(token: &[u8]) -> Option<u128> {
    std::str::from_utf8(token)
        .ok()?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Whether `key` (the namespace's full key) holds `value` (`None`: does not exist).
pub(crate) fn holds(key: &[u8], value: Option<&[u8]>) -> Compare {
    match value {
        Some(v) => Compare::value(key, CompareOp::Equal, v),
        None => Compare::version(key, CompareOp::Equal, 0),
    }
}

impl State {
    /// The token the next write expects, and a fresh one it moves the key to. The state becomes
    /// unsure until the write's answer says.
    pub(crate) fn begin(&mut self) -> (Option<Vec<u8>>, Vec<u8>) {
        let State::Known(before) = self else {
            unreachable!("a write begins once the state is settled")
        };
        let before = before.clone();
        let after = token();
        *self = State::Unsure {
            before: before.clone(),
            after: after.clone(),
            burn: token(),
        };
        (before, after)
    }

    /// What settling an unsure state sends: the compare and the write (`None` when settled).
    pub(crate) fn settling(&self, key: &[u8]) -> Option<(Compare, TxnOp)> {
        match self {
            State::Known(_) => None,
            State::Unsure { before, burn, .. } => Some((
                holds(key, before.as_deref()),
                TxnOp::put(key, burn.clone(), None),
            )),
        }
    }

    /// Take the answer to a write or a settling: whether it applied, or else what the key holds
    /// now. Returns whether the write moving the key to `after` applied.
    pub(crate) fn answered(&mut self, applied: bool, now: Option<Vec<u8>>) -> bool {
        let State::Unsure { after, .. } = std::mem::replace(self, State::Known(None)) else {
            unreachable!("an answer comes to an unsure state")
        };
        let applied = applied || now.as_ref() == Some(&after);
        // What the key holds otherwise is taken as it is: what the write expected (its checks
        // failed), a settling's token, or something else (see the module).
        *self = State::Known(if applied { Some(after) } else { now });
        applied
    }

    /// Take the answer to a settling that applied: the write it settled never will.
    pub(crate) fn burnt(&mut self) {
        if let State::Unsure { burn, .. } = self {
            *self = State::Known(Some(std::mem::take(burn)));
        }
    }

    /// The tokens of an unsure write: the one it moves the key to, and the one settling it does.
    pub(crate) fn unsure_tokens(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match self {
            State::Unsure { after, burn, .. } => Some((after.clone(), burn.clone())),
            State::Known(_) => None,
        }
    }

    /// Forget a write that surely was not taken (every member refused it before taking it).
    pub(crate) fn not_taken(&mut self) {
        if let State::Unsure { before, .. } = self {
            *self = State::Known(before.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_carry_their_time() {
        let (a, b) = (token(), token());
        assert_ne!(a, b);
        assert_eq!((a.len(), b.len()), (TOKEN_LEN, TOKEN_LEN));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let made = made_ms(&a).unwrap();
        assert!(now - made < 5000, "{made} vs {now}");
        assert_eq!(made_ms(b"nonsense"), None);
    }

    #[test]
    fn an_answer_says_which_copy_applied() {
        let mut s = State::Known(None);
        let (before, after) = s.begin();
        assert_eq!(before, None);
        // The key holds the write's token: an earlier copy applied.
        assert!(s.answered(false, Some(after.clone())));
        assert_eq!(s, State::Known(Some(after.clone())));
        // The key holds what the write expected: its own checks failed.
        let (before, _) = s.begin();
        assert!(!s.answered(false, before.clone()));
        assert_eq!(s, State::Known(before.clone()));
        // Settled by burning: known to hold the burn token.
        s.begin();
        let State::Unsure { burn, .. } = s.clone() else {
            panic!()
        };
        s.burnt();
        assert_eq!(s, State::Known(Some(burn)));
        // Something else: taken over.
        s.begin();
        assert!(!s.answered(false, Some(b"restored".to_vec())));
        assert_eq!(s, State::Known(Some(b"restored".to_vec())));
        s.begin();
        s.not_taken();
        assert_eq!(s, State::Known(Some(b"restored".to_vec())));
    }
}
