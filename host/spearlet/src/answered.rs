//! The results SMS answered lately, so that an assignment sent again after its result was
//! answered is not run twice.

/// The (execution, attempt) pairs whose results SMS answered lately, at most
/// [`MAX_ANSWERED`]: an assignment of one of them that comes again (a reconnecting stream read
/// it before the answer) is not run a second time.
#[derive(Debug, Default)]
pub struct Answered {
    order: std::collections::VecDeque<(String, u32)>,
    set: std::collections::HashSet<(String, u32)>,
}

/// How many answered results a node remembers.
pub const MAX_ANSWERED: usize = 16_384;

impl Answered {
    /// Whether the result of `id`'s `attempt` was answered lately.
    pub fn contains(&self, id: &str, attempt: u32) -> bool {
        self.set.contains(&(id.to_owned(), attempt))
    }

    /// Remember the result of `id`'s `attempt` as answered (the oldest go past the bound).
    pub fn insert(&mut self, id: &str, attempt: u32) {
        // Attempt 0: not known (an older record); nothing to tell apart by.
        if attempt == 0 || !self.set.insert((id.to_owned(), attempt)) {
            return;
        }
        self.order.push_back((id.to_owned(), attempt));
        if self.order.len() > MAX_ANSWERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_attempts_apart_and_forgets_the_oldest_past_the_bound() {
        let mut a = Answered::default();
        a.insert("e", 1);
        assert!(a.contains("e", 1));
        assert!(!a.contains("e", 2), "another attempt of it may run");
        a.insert("x", 0);
        assert!(!a.contains("x", 0), "an unknown attempt is not remembered");
        for i in 0..MAX_ANSWERED {
            a.insert(&format!("n{i}"), 1);
        }
        assert!(!a.contains("e", 1), "the oldest went");
        assert!(a.contains(&format!("n{}", MAX_ANSWERED - 1), 1));
        assert_eq!(a.order.len(), MAX_ANSWERED);
        assert_eq!(a.set.len(), MAX_ANSWERED);
    }
}
