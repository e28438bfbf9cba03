//! Running out of class ids (512) is reported once, and leaves the checker working for the
//! classes it has. Its own binary: it fills the process-wide class table.
#![cfg(feature = "checker")]

use gpusched_fence::lockdep::{
    capture, lock_acquire, lock_release, signalling_section, Acquire, LockClass, Rule, RESV,
};

#[test]
fn class_exhaustion_is_reported_once_not_a_crash() {
    let ((), reports) = capture(|| {
        for i in 0..600 {
            let name: &'static str = Box::leak(format!("leaked-{i}").into_boxed_str());
            let class: &'static LockClass = Box::leak(Box::new(LockClass::new(name)));
            lock_acquire(class, Acquire::Exclusive, None);
            lock_release(class, None);
        }
    });
    assert_eq!(reports.iter().map(|r| r.rule).collect::<Vec<_>>(), [Rule::ClassesExhausted]);
    // 3 pseudo-classes + 509 leaked ones fill the table: the 510th is the first without room.
    assert_eq!(reports[0].acquired.class, "leaked-509");
    // Classes that have ids are still checked.
    let ((), reports) = capture(|| {
        let _s = signalling_section();
        lock_acquire(&RESV, Acquire::Exclusive, None);
        lock_release(&RESV, None);
    });
    assert_eq!(reports.iter().map(|r| r.rule).collect::<Vec<_>>(), [Rule::ResvInSignalling]);
}
