//! Parking a blocking waiter on a fence's 32-bit state word until the signaller wakes it.
//!
//! A waiter first spins for up to [`spin`] (a fence about to signal costs no sleep), then
//! sleeps.
//! On Linux this is a bare futex on the word itself (`FUTEX_WAIT_PRIVATE` /
//! `FUTEX_WAKE_PRIVATE`), the same mechanism `std::sync::Condvar` uses: no global table, no
//! bucket lock, and a wake that never allocates, however many threads wait (the kernel keeps
//! the wait queue). Elsewhere it falls back to `parking_lot_core`'s global table keyed by the
//! word's address (whose `unpark_all` spills to the heap past 8 parked threads).
//!
//! # Protocol (see `PARKED` in `fence.rs`)
//! The waiter sets `PARKED` with an AcqRel RMW, re-checks `SIGNALED`, then calls
//! [`wait`] with the word's value it last saw; the kernel compares the word with that value
//! under its own lock and sleeps only if it is unchanged. The signaller sets `SIGNALED` (the
//! word changes) before calling [`wake_all`] when the previous word had `PARKED`. So either
//! the waiter's compare sees the change, or it is queued before the wake: no lost wake-up.
//! Spurious returns are fine: the caller loops on the word.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a blocking waiter spins on the word before it sleeps, in ns (see
/// [`crate::set_wait_spin`]).
static SPIN_NS: AtomicU64 = AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64);

/// The default spin. A wake costs a futex syscall on each side and a context switch (~5 µs on
/// our 2-core machines); a fence that signals within the spin costs neither. The i915 driver
/// spins the same way before it sleeps on a request (`CONFIG_DRM_I915_SPIN_REQUEST`, 5 µs).
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(3);

/// Sets the spin (see [`crate::set_wait_spin`]).
pub(crate) fn set_spin(d: Duration) {
    SPIN_NS.store(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
}

/// The spin.
pub(crate) fn spin() -> Duration {
    Duration::from_nanos(SPIN_NS.load(Ordering::Relaxed))
}

/// Spins until `*word & bit != 0`, for at most [`spin`] (and not past `deadline`). Returns
/// whether the bit was seen. Never spins on a single-CPU machine, where the signaller cannot
/// run while the waiter spins.
pub(crate) fn spin_until(word: &AtomicU32, bit: u32, deadline: Option<Instant>) -> bool {
    static CPUS: AtomicUsize = AtomicUsize::new(0);
    let mut cpus = CPUS.load(Ordering::Relaxed);
    if cpus == 0 {
        cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        CPUS.store(cpus, Ordering::Relaxed);
    }
    let spin = spin();
    if cpus < 2 || spin.is_zero() {
        return false;
    }
    let start = Instant::now();
    let end = deadline.map_or(start + spin, |d| d.min(start + spin));
    loop {
        for _ in 0..32 {
            if word.load(Ordering::Acquire) & bit != 0 {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= end {
            return false;
        }
    }
}

/// Sleeps while `*word == expected`, until woken or `deadline`. Returns `false` only when the
/// deadline passed; `true` on a wake, a changed word or a spurious return (the caller
/// re-checks).
#[cfg(target_os = "linux")]
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            Some(libc::timespec {
                tv_sec: left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            })
        }
    };
    let ts = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned `AtomicU32` (the kernel only reads it, atomically);
    // `ts` is null or points to a `timespec` that outlives the call; FUTEX_WAIT reads no other
    // argument.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts,
        )
    };
    if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        return false;
    }
    true
}

/// Wakes every thread in [`wait`] on `word`. Allocation-free.
#[cfg(target_os = "linux")]
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live aligned word; it reads no other argument.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// Makes sure the parking table exists before any waiter can set `PARKED`: nothing to do with
/// futexes.
#[cfg(target_os = "linux")]
pub(crate) fn ensure_ready() {}

/// Sleeps while `*word == expected` (see the Linux version).
#[cfg(not(target_os = "linux"))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
    use std::sync::atomic::Ordering;
    let validate = || word.load(Ordering::Acquire) == expected;
    // SAFETY: the key is the word's address, used as a parking key only by the waiters and
    // the signaller of this word; the callbacks neither panic nor call into parking_lot.
    let result = unsafe {
        parking_lot_core::park(
            word.as_ptr() as usize,
            validate,
            || {},
            |_, _| {},
            parking_lot_core::DEFAULT_PARK_TOKEN,
            deadline,
        )
    };
    !matches!(result, parking_lot_core::ParkResult::TimedOut)
}

/// Wakes every thread in [`wait`] on `word`.
#[cfg(not(target_os = "linux"))]
pub(crate) fn wake_all(word: &AtomicU32) {
    // (With more than 8 threads parked on one word, `unpark_all` spills its wake list to the
    // heap: the one allocation a signal can make on these platforms.)
    // SAFETY: the key is the word's address, used only under the protocol above.
    unsafe {
        parking_lot_core::unpark_all(
            word.as_ptr() as usize,
            parking_lot_core::DEFAULT_UNPARK_TOKEN,
        );
    }
}

/// Makes sure `parking_lot_core` has created its global table before any waiter sets
/// `PARKED`: otherwise the first signaller to unpark would create it, allocating inside its
/// signalling section. (Later growth of the table happens on the parking side only.)
#[cfg(not(target_os = "linux"))]
pub(crate) fn ensure_ready() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static READY: AtomicBool = AtomicBool::new(false);
    if !READY.load(Ordering::Acquire) {
        static KEY: u8 = 0;
        // SAFETY: the key is the address of a private static nobody parks on; unparking it
        // wakes no one and only forces the table into existence.
        unsafe {
            parking_lot_core::unpark_all(
                &KEY as *const u8 as usize,
                parking_lot_core::DEFAULT_UNPARK_TOKEN,
            );
        }
        READY.store(true, Ordering::Release);
    }
}
