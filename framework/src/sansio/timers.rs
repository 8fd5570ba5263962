//! Keyed timers: what a core asks for, and the table drivers keep.
//!
//! A timer is its own key. [`TimerOp::Set`] of a timer equal to a pending one
//! replaces it (the old one never fires); [`TimerOp::Cancel`] removes it. So a
//! core re-arms "the election timeout" or "the retry of request 7" without
//! counting rounds to recognise stale firings.
//!
//! [`TimerTable`] is the bookkeeping every driver shares: it hands out a
//! token per armed timer and says, when a timer fires, whether that token is
//! still the current one. Drivers that can cancel a scheduled callback use
//! the token returned by [`TimerTable::set`] / [`TimerTable::cancel`] to do
//! so; the others just drop firings that [`TimerTable::fire`] refuses.

use std::time::Duration;

/// One timer operation produced by a core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerOp<T> {
    /// Fire `timer` after `after`, replacing a pending timer equal to it.
    Set {
        /// Delay from now.
        after: Duration,
        /// The timer (and its key).
        timer: T,
    },
    /// Remove the pending timer equal to this one, if any.
    Cancel(T),
}

impl<T> TimerOp<T> {
    /// The same operation on a wrapped timer.
    pub fn map<U>(self, f: impl Fn(T) -> U) -> TimerOp<U> {
        match self {
            TimerOp::Set { after, timer } => TimerOp::Set {
                after,
                timer: f(timer),
            },
            TimerOp::Cancel(t) => TimerOp::Cancel(f(t)),
        }
    }
}

/// The pending timers of one core: each with the token of its current arming.
///
/// Lookups are linear: a core has a handful of pending timers.
#[derive(Debug, Clone)]
pub struct TimerTable<T> {
    pending: Vec<(T, u64)>,
    next: u64,
}

impl<T> Default for TimerTable<T> {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            next: 1,
        }
    }
}

impl<T: PartialEq> TimerTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }
    /// Arm `timer`: returns its new token and the token of the pending timer
    /// it replaces, if any.
    pub fn set(&mut self, timer: T) -> (u64, Option<u64>) {
        let token = self.next;
        self.next += 1;
        let old = self.cancel(&timer);
        self.pending.push((timer, token));
        (token, old)
    }
    /// Disarm `timer`: returns the token it had, if it was pending.
    pub fn cancel(&mut self, timer: &T) -> Option<u64> {
        let i = self.pending.iter().position(|(t, _)| t == timer)?;
        Some(self.pending.swap_remove(i).1)
    }
    /// Timer `token` fired: true (and removed) if it is still pending, false
    /// if it was replaced or cancelled since.
    pub fn fire(&mut self, token: u64) -> bool {
        match self.pending.iter().position(|(_, k)| *k == token) {
            Some(i) => {
                self.pending.swap_remove(i);
                true
            }
            None => false,
        }
    }
    /// Forget every pending timer (a crash or a restart).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }
    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_an_equal_timer_replaces_it_and_cancel_removes_it() {
        let mut t = TimerTable::new();
        let (a, old) = t.set("retry");
        assert_eq!(old, None);
        let (b, old) = t.set("retry");
        assert_eq!(old, Some(a));
        let (c, _) = t.set("beat");
        assert_eq!(t.len(), 2);
        assert!(!t.fire(a), "a replaced timer does not fire");
        assert!(t.fire(b));
        assert!(!t.fire(b), "fires once");
        assert_eq!(t.cancel(&"beat"), Some(c));
        assert!(!t.fire(c), "a cancelled timer does not fire");
        assert!(t.is_empty());
    }
}
