//! Policies: `Log` counts, stores and logs without panicking; `Off` checks nothing; `Panic`
//! panics with the report. One test, because the policy is process-wide.
#![cfg(feature = "checker")]

use gpusched_fence::lockdep::{
    self, lock_acquire, lock_release, signalling_section, Acquire, Policy, Rule, RESV,
};

#[track_caller]
fn resv_in_section() {
    let _s = signalling_section();
    lock_acquire(&RESV, Acquire::Exclusive, None);
    lock_release(&RESV, None);
}

#[test]
fn policies() {
    assert_eq!(lockdep::policy(), if cfg!(debug_assertions) { Policy::Panic } else { Policy::Log });

    lockdep::set_policy(Policy::Log);
    assert_eq!(lockdep::policy(), Policy::Log);
    let before = lockdep::violations();
    resv_in_section();
    resv_in_section();
    assert_eq!(lockdep::violations(), before + 2, "every occurrence counts");
    let reports = lockdep::reports();
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.rule == Rule::ResvInSignalling));
    assert_eq!(lockdep::take_reports().len(), 2);
    assert_eq!(lockdep::reports(), []);

    lockdep::set_policy(Policy::Off);
    let before = lockdep::violations();
    resv_in_section();
    assert_eq!(lockdep::violations(), before);
    assert_eq!(lockdep::reports(), []);
    // `capture` checks even under `Off`.
    let ((), captured) = lockdep::capture(resv_in_section);
    assert_eq!(captured.len(), 1);
    assert_eq!(lockdep::violations(), before + 1);

    lockdep::set_policy(Policy::Panic);
    let err = std::panic::catch_unwind(resv_in_section).expect_err("panics");
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.starts_with("gpusched lockdep: "), "{msg}");
    assert!(msg.contains(Rule::ResvInSignalling.sentence()), "{msg}");
    // The first line names the rule of CONTRACT.md that was broken.
    assert_eq!(Rule::ResvInSignalling.contract_rule(), Some(4));
    assert!(msg.lines().next().unwrap().ends_with("(rule 4 of CONTRACT.md)"), "{msg}");
}
