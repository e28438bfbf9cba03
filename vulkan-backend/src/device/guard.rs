//! A drop guard for set-up code: a value paired with the action that destroys it, run when
//! the guard drops (an early return or `?` on a later step) unless the value was
//! [`defuse`](Guard::defuse)d (set-up succeeded and something else owns it now). Guards
//! drop in reverse order of creation, so a failed set-up destroys what it created newest
//! first, as a hand-written unwind would.
//!
//! Hand-written rather than the `scopeguard` crate: this is all of it, and it needs no new
//! dependency.

use std::ops::{Deref, DerefMut};

/// `value`, destroyed by `undo` on drop unless defused.
pub(crate) struct Guard<T, F: FnOnce(T)> {
    /// `None` only once defused or dropped.
    armed: Option<(T, F)>,
}

impl<T, F: FnOnce(T)> Guard<T, F> {
    /// Guards `value`: `undo(value)` runs when the guard drops armed.
    pub(crate) fn new(value: T, undo: F) -> Self {
        Guard { armed: Some((value, undo)) }
    }

    /// Set-up succeeded: hands the value back without running `undo`.
    pub(crate) fn defuse(mut self) -> T {
        match self.armed.take() {
            Some((value, _undo)) => value,
            None => unreachable!("a guard is armed until defused or dropped"),
        }
    }
}

impl<T, F: FnOnce(T)> Deref for Guard<T, F> {
    type Target = T;

    fn deref(&self) -> &T {
        match &self.armed {
            Some((value, _)) => value,
            None => unreachable!("a guard is armed until defused or dropped"),
        }
    }
}

impl<T, F: FnOnce(T)> DerefMut for Guard<T, F> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.armed {
            Some((value, _)) => value,
            None => unreachable!("a guard is armed until defused or dropped"),
        }
    }
}

impl<T, F: FnOnce(T)> Drop for Guard<T, F> {
    fn drop(&mut self) {
        if let Some((value, undo)) = self.armed.take() {
            undo(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::Guard;

    #[test]
    fn undo_runs_in_reverse_order_unless_defused() {
        let log = RefCell::new(Vec::new());
        {
            let _a = Guard::new(1, |v| log.borrow_mut().push(v));
            let b = Guard::new(2, |v| log.borrow_mut().push(v));
            let _c = Guard::new(3, |v| log.borrow_mut().push(v));
            assert_eq!(b.defuse(), 2);
        }
        assert_eq!(*log.borrow(), [3, 1]);
    }
}
