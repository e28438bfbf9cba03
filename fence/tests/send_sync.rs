//! Compile-time thread-safety assertions for the public types: a type that stops being
//! `Send`/`Sync` breaks this file's build, not a user's.

#![allow(dead_code)]

use gpusched_fence::{
    AlreadySignaled, Callback, CallbackId, Fence, FenceArray, FenceAwait, FenceContext,
    FenceContextBuilder, FenceError, FenceFuture, FenceStatus, InterruptDomain, InterruptSection,
    OpsWait, PointOrderError, SeqnoWidth, Signaller, Timeline, WaitError,
};

const fn send_sync<T: Send + Sync>() {}
const fn send<T: Send>() {}

const _: () = {
    send_sync::<Fence>();
    send_sync::<Signaller>();
    send_sync::<FenceContext>();
    send_sync::<FenceContextBuilder>();
    send_sync::<InterruptDomain>();
    send_sync::<InterruptSection>();
    send_sync::<Timeline>();
    send_sync::<FenceArray>();
    send_sync::<FenceFuture>();
    send_sync::<FenceAwait>();
    send_sync::<FenceError>();
    send_sync::<WaitError>();
    send_sync::<FenceStatus>();
    send_sync::<CallbackId>();
    send_sync::<SeqnoWidth>();
    send_sync::<OpsWait>();
    send_sync::<PointOrderError>();
    send::<AlreadySignaled<Callback>>();
    send_sync::<AlreadySignaled<fn(&Fence)>>();
    // A boxed `FnOnce + Send` is `Send` but (without `Sync` on the closure) not `Sync`.
    send::<Callback>();
    send_sync::<Box<dyn gpusched_fence::FenceOps>>();
};

/// Futures can be spawned on multi-threaded executors (they must be `Send + 'static`).
fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}

#[test]
fn futures_are_spawnable() {
    let (fence, signaller) = FenceContext::new("ring").next();
    spawnable(std::future::IntoFuture::into_future(fence.clone()));
    spawnable(fence.wait_async_interruptible());
    spawnable(async move { fence.await });
    assert!(signaller.signal());
}
