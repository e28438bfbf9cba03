//! The checker API in both builds: with the `checker` feature a violation is reported; without
//! it (or under loom) every annotation is a no-op with the same API.

use gpusched_fence::lockdep::{
    self, begin_signalling, capture, end_signalling, lock_acquire, lock_release, might_alloc,
    might_wait, no_reclaim, reclaim_section, signalling_section, Acquire, LockClass, NestKey, RESV,
};

static API_LOCK: LockClass = LockClass::new("test-api-lock");

#[test]
fn annotations_report_exactly_when_the_checker_is_compiled_in() {
    assert_eq!(lockdep::ENABLED, cfg!(feature = "checker"));
    let ((), reports) = capture(|| {
        let m = lockdep::Mutex::new(&API_LOCK, 5);
        assert_eq!(*m.lock(), 5);
        let cookie = begin_signalling();
        let _s = signalling_section();
        {
            let _n = no_reclaim();
            might_alloc();
        }
        lock_acquire(&RESV, Acquire::Exclusive, Some(NestKey(9)));
        lock_release(&RESV, Some(NestKey(9)));
        end_signalling(cookie);
        drop(_s);
        let _r = reclaim_section();
        might_wait();
    });
    let expected = usize::from(cfg!(feature = "checker"));
    assert_eq!(reports.len(), expected, "{reports:#?}");
}

#[test]
fn send_and_sync_where_documented() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<lockdep::SignallingCookie>();
    send::<lockdep::Report>();
    sync::<lockdep::Report>();
    send::<lockdep::Mutex<Vec<u8>>>();
    sync::<lockdep::Mutex<Vec<u8>>>();
    sync::<lockdep::RwLock<Vec<u8>>>();
    sync::<LockClass>();
    sync::<lockdep::CheckingAllocator>();
}
