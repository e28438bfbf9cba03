//! Async waits (`fence.await`, `wait_async_interruptible`) on several executors: the futures
//! are built on `event-listener`, not on a runtime, so any executor drives them.

use std::future::IntoFuture;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use gpusched_fence::{FenceContext, FenceError, FenceFuture, InterruptDomain, WaitError};

const WATCHDOG: Duration = Duration::from_secs(30);

fn settle() {
    thread::sleep(Duration::from_millis(30));
}

#[test]
fn await_on_futures_lite_block_on() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let t = thread::spawn(move || {
        settle();
        signaller.signal_error(FenceError::TimedOut);
    });
    let r = futures_lite::future::block_on(async { (&fence).await });
    assert_eq!(r, Err(FenceError::TimedOut));
    t.join().unwrap();
    // Owned `.await`, already signalled.
    assert_eq!(futures_lite::future::block_on(fence.into_future()), Err(FenceError::TimedOut));
}

#[test]
fn pending_future_is_pending_until_signal() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let mut fut = Box::pin(fence.clone().into_future());
    assert!(futures_lite::future::block_on(futures_lite::future::poll_once(&mut fut)).is_none());
    signaller.signal();
    assert_eq!(futures_lite::future::block_on(fut), Ok(()));
}

#[test]
fn await_on_tokio_multi_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let ctx = FenceContext::new("ring");
    let pairs: Vec<_> = (0..16).map(|_| ctx.next()).collect();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        let mut signallers = Vec::new();
        for (i, (fence, s)) in pairs.into_iter().enumerate() {
            signallers.push((i, s));
            tasks.push(tokio::spawn(async move { (fence.await, i) }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Signal from a plain OS thread: the executor is woken through the waker.
        thread::spawn(move || {
            for (i, s) in signallers {
                if i % 2 == 0 {
                    s.signal();
                } else {
                    s.signal_error(FenceError::Driver(i as i32));
                }
            }
        });
        for t in tasks {
            let (r, i) = tokio::time::timeout(WATCHDOG, t).await.unwrap().unwrap();
            let want = if i % 2 == 0 { Ok(()) } else { Err(FenceError::Driver(i as i32)) };
            assert_eq!(r, want);
        }
    });
}

#[tokio::test(flavor = "current_thread")]
async fn await_on_tokio_current_thread() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let waiter = tokio::spawn(async move { fence.await });
    tokio::task::yield_now().await;
    signaller.signal_error(FenceError::Cancelled);
    assert_eq!(waiter.await.unwrap(), Err(FenceError::Cancelled));
}

#[test]
fn await_on_smol() {
    let ex = Arc::new(smol::Executor::new());
    let (fence, signaller) = FenceContext::new("ring").next();
    let f2 = fence.clone();
    let task = ex.spawn(async move { f2.await });
    let other = ex.spawn(async move { fence.wait_async_interruptible().await });
    let t = thread::spawn(move || {
        settle();
        signaller.signal();
    });
    let r = smol::block_on(ex.run(async {
        let a = task.await;
        let b = other.await;
        (a, b)
    }));
    assert_eq!(r, (Ok(()), Ok(())));
    t.join().unwrap();
}

#[test]
fn interruptible_async_wait_is_interrupted() {
    let domain = InterruptDomain::new("reset");
    let ctx = FenceContext::builder("ring").interrupt_domain(&domain).build();
    let (fence, signaller) = ctx.next();
    let fut: FenceFuture = fence.wait_async_interruptible();
    assert!(fut.fence().ptr_eq(&fence));
    let d = domain.clone();
    let t = thread::spawn(move || {
        settle();
        d.begin_interrupt()
    });
    // A plain `.await` of the same fence is not interrupted.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (interrupted, plain_timed_out) = rt.block_on(async {
        let interrupted = tokio::time::timeout(WATCHDOG, fut).await.unwrap();
        let plain = tokio::time::timeout(Duration::from_millis(30), (&fence).into_future()).await;
        (interrupted, plain.is_err())
    });
    assert_eq!(interrupted, Err(WaitError::Interrupted));
    assert!(plain_timed_out, "a plain await must not be interrupted");
    let section = t.join().unwrap();
    // New interruptible async waits fail at once while the section is open.
    assert_eq!(
        futures_lite::future::block_on(fence.wait_async_interruptible()),
        Err(WaitError::Interrupted)
    );
    drop(section);
    let fut = fence.wait_async_interruptible();
    signaller.signal();
    assert_eq!(smol::block_on(fut), Ok(()));
    // A signalled fence reports its outcome even inside a section.
    let _section = domain.begin_interrupt();
    assert_eq!(smol::block_on(fence.wait_async_interruptible()), Ok(()));
}

#[test]
fn a_future_created_before_a_section_opened_and_closed_is_interrupted() {
    // The epoch moved while the future was pending: the wait must restart.
    let domain = InterruptDomain::new("reset");
    let ctx = FenceContext::builder("ring").interrupt_domain(&domain).build();
    let (fence, _signaller) = ctx.next();
    let mut fut = Box::pin(fence.wait_async_interruptible());
    assert!(futures_lite::future::block_on(futures_lite::future::poll_once(&mut fut)).is_none());
    drop(domain.begin_interrupt());
    assert_eq!(futures_lite::future::block_on(fut), Err(WaitError::Interrupted));
}

#[test]
fn abandoned_fence_resolves_its_future() {
    let (fence, signaller) = FenceContext::new("ring").next();
    let t = thread::spawn(move || {
        settle();
        drop(signaller);
    });
    assert_eq!(smol::block_on(fence.into_future()), Err(FenceError::Abandoned));
    t.join().unwrap();
}
