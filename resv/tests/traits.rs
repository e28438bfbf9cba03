//! Compile-time `Send`/`Sync` assertions for every public type (the `!Send` ones are
//! `compile_fail` doctests in the crate docs).

use gpusched_resv::{
    AcquireCtx, Exec, FenceIter, Resv, ResvGuard, Usage, WwAlgorithm, WwClass, WwError, WwGuard,
    WwMutex,
};

fn send_sync<T: Send + Sync>() {}
fn sync<T: Sync>() {}

#[test]
fn public_types_are_send_and_sync_where_they_should_be() {
    send_sync::<WwMutex<u32>>();
    send_sync::<WwClass>();
    send_sync::<WwError>();
    send_sync::<WwAlgorithm>();
    send_sync::<Resv>();
    send_sync::<Usage>();
    send_sync::<Exec>();
    send_sync::<FenceIter<'static>>();
    // Guards and contexts stay on their thread but may be shared by reference.
    sync::<WwGuard<'static, u32>>();
    sync::<ResvGuard<'static>>();
    let _ = core::mem::size_of::<AcquireCtx>(); // !Send and !Sync: see the crate docs
}
