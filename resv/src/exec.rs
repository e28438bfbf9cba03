//! A multi-object locker in the style of the kernel's `drm_exec` (`drivers/gpu/drm/drm_exec.c`):
//! lock any set of [`Resv`]s, backing off and retrying on contention, then run the caller's
//! code with every guard.
//!
//! The loop (`drm_exec_until_all_locked`): one [`AcquireCtx`] for the whole transaction; lock
//! the objects in the order given; on [`WwError::Deadlock`] drop every guard, take the
//! contended object with `lock_slow` (waiting, no back-off possible while holding nothing),
//! then lock the rest again, skipping objects already held ([`WwError::AlreadyLocked`], which
//! also makes duplicates harmless). The context keeps its stamp across retries, so the
//! transaction ages until it wins: it cannot starve.

use gpusched_fence::InterruptDomain;

use crate::resv::{Resv, ResvGuard, RESV_WW_CLASS};
use crate::ww::{AcquireCtx, WwError};

/// Locks sets of [`Resv`]s together without deadlock; see the module docs.
///
/// ```
/// use gpusched_fence::FenceContext;
/// use gpusched_resv::{Exec, Resv, Usage};
///
/// let (a, b) = (Resv::new(), Resv::new());
/// let ring = FenceContext::new("ring");
/// let (fence, signaller) = ring.next();
/// let mut exec = Exec::new();
/// // Duplicates are locked once: the closure gets one guard per distinct object, in order of
/// // first appearance.
/// let n = exec
///     .lock_all(&[&a, &b, &a], |guards| {
///         for g in guards.iter_mut() {
///             g.reserve_fences(1).unwrap();
///             g.add_fence(fence.clone(), Usage::Write);
///         }
///         guards.len()
///     })
///     .unwrap();
/// assert_eq!(n, 2);
/// assert!(!a.test_signaled_unlocked(Usage::Read));
/// signaller.signal();
/// assert!(b.test_signaled_unlocked(Usage::Read));
/// ```
#[derive(Debug, Default)]
pub struct Exec {
    interrupt: Option<InterruptDomain>,
    /// Back-offs so far, over every `lock_all` of this locker.
    contentions: u64,
}

impl Exec {
    /// A locker whose waits are not interruptible.
    pub fn new() -> Self {
        Exec { interrupt: None, contentions: 0 }
    }

    /// A locker whose waits `domain` can interrupt (`DRM_EXEC_INTERRUPTIBLE_WAIT`):
    /// [`lock_all`](Exec::lock_all) then fails with [`WwError::Interrupted`].
    pub fn interruptible(domain: InterruptDomain) -> Self {
        Exec { interrupt: Some(domain), contentions: 0 }
    }

    /// How many times this locker backed off and retried.
    pub fn contentions(&self) -> u64 {
        self.contentions
    }

    /// Locks every object of `objects` (duplicates allowed), then calls `f` with one guard per
    /// distinct object, in order of first appearance, and unlocks them all when `f` returns.
    /// Guards cannot escape `f`: they borrow a context that lives only during this call.
    ///
    /// # Errors
    /// [`WwError::Interrupted`] when an interruptible locker's domain interrupted a wait;
    /// nothing is locked then and `f` did not run. Deadlocks never reach the caller.
    #[track_caller]
    pub fn lock_all<R>(
        &mut self,
        objects: &[&Resv],
        f: impl FnOnce(&mut [ResvGuard<'_>]) -> R,
    ) -> Result<R, WwError> {
        let ctx = AcquireCtx::new(&RESV_WW_CLASS);
        // Index of first appearance, guard.
        let mut held: Vec<(usize, ResvGuard<'_>)> = Vec::with_capacity(objects.len());
        let mut contended: Option<usize> = None;
        'retry: loop {
            held.clear();
            if let Some(i) = contended.take() {
                let g = match &self.interrupt {
                    Some(d) => objects[i].lock_slow_interruptible(&ctx, d)?,
                    None => objects[i].lock_slow(&ctx),
                };
                held.push((i, g));
            }
            for (i, obj) in objects.iter().enumerate() {
                let r = match &self.interrupt {
                    Some(d) => obj.lock_interruptible(&ctx, d),
                    None => obj.lock(&ctx),
                };
                match r {
                    Ok(g) => held.push((i, g)),
                    Err(WwError::AlreadyLocked) => {}
                    Err(WwError::Deadlock) => {
                        self.contentions += 1;
                        contended = Some(i);
                        continue 'retry;
                    }
                    Err(e) => return Err(e),
                }
            }
            break;
        }
        ctx.done();
        held.sort_unstable_by_key(|(i, _)| *i);
        let mut guards: Vec<ResvGuard<'_>> = held.into_iter().map(|(_, g)| g).collect();
        Ok(f(&mut guards))
    }
}
