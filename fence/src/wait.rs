//! Waiting on many fences, and `async` waits usable on any executor (built on
//! `event-listener`, not on a runtime).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crossbeam_utils::sync::{Parker, Unparker};

use crate::error::{FenceError, WaitError};
use crate::fence::Fence;
use crate::lockdep;
use crate::sync::EventListener;

/// A future that resolves when a fence signals: `fence.await` (through `IntoFuture`) or
/// [`Fence::wait_async_interruptible`]. Works on any executor: it registers an
/// `event-listener` listener and is woken by the signal.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct FenceFuture {
    fence: Fence,
    listener: Option<EventListener>,
    /// `Some(epoch at start)` for an interruptible wait on a fence with a domain.
    interrupt_epoch: Option<u64>,
    domain_listener: Option<EventListener>,
    enabled: bool,
}

impl FenceFuture {
    pub(crate) fn new(fence: Fence, interruptible: bool) -> Self {
        let interrupt_epoch =
            if interruptible { fence.interrupt_domain().map(|d| d.epoch()) } else { None };
        FenceFuture {
            fence,
            listener: None,
            interrupt_epoch,
            domain_listener: None,
            enabled: false,
        }
    }

    /// The fence this future waits on.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WaitError>> {
        if !self.enabled {
            self.enabled = true;
            self.fence.enable_signaling();
        }
        loop {
            // A reset that began after this wait started interrupts it, even if the fence
            // signalled since (the waiter must restart and re-validate, as with
            // -ERESTARTSYS); a wait that starts on a signalled fence returns its outcome.
            if let (Some(epoch), Some(domain)) =
                (self.interrupt_epoch, self.fence.interrupt_domain())
            {
                if domain.epoch() != epoch {
                    return Poll::Ready(Err(WaitError::Interrupted));
                }
            }
            if let Some(r) = self.fence.polled_outcome() {
                return Poll::Ready(r.map_err(WaitError::from));
            }
            if let (Some(epoch), Some(domain)) =
                (self.interrupt_epoch, self.fence.interrupt_domain())
            {
                if domain.interrupted_since(epoch) {
                    return Poll::Ready(Err(WaitError::Interrupted));
                }
            }
            let mut registered = true;
            if self.listener.is_none() {
                self.listener = Some(self.fence.listen());
                registered = false;
            }
            if self.interrupt_epoch.is_some() && self.domain_listener.is_none() {
                if let Some(domain) = self.fence.interrupt_domain() {
                    self.domain_listener = Some(domain.event().listen());
                    registered = false;
                }
            }
            if !registered {
                // Listeners were just created: re-check before sleeping.
                continue;
            }
            let mut woke = false;
            if let Some(l) = self.listener.as_mut() {
                if Pin::new(l).poll(cx).is_ready() {
                    self.listener = None;
                    woke = true;
                }
            }
            if let Some(l) = self.domain_listener.as_mut() {
                if Pin::new(l).poll(cx).is_ready() {
                    self.domain_listener = None;
                    woke = true;
                }
            }
            if !woke {
                return Poll::Pending;
            }
        }
    }
}

impl Future for FenceFuture {
    type Output = Result<(), WaitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_inner(cx)
    }
}

/// The future of `fence.await`: resolves to the fence's outcome.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct FenceAwait(FenceFuture);

impl Future for FenceAwait {
    type Output = Result<(), FenceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut().0.poll_inner(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(WaitError::Failed(e))) => Poll::Ready(Err(e)),
            Poll::Ready(Err(other)) => unreachable!("a plain async wait ended with {other:?}"),
        }
    }
}

impl IntoFuture for Fence {
    type Output = Result<(), FenceError>;
    type IntoFuture = FenceAwait;

    fn into_future(self) -> FenceAwait {
        FenceAwait(FenceFuture::new(self, false))
    }
}

impl IntoFuture for &Fence {
    type Output = Result<(), FenceError>;
    type IntoFuture = FenceAwait;

    fn into_future(self) -> FenceAwait {
        FenceAwait(FenceFuture::new(self.clone(), false))
    }
}

impl Fence {
    /// An interruptible async wait: resolves to [`WaitError::Interrupted`] when a reset of the
    /// fence's interrupt domain interrupts waits (see [`Fence::wait_interruptible`]).
    pub fn wait_async_interruptible(&self) -> FenceFuture {
        FenceFuture::new(self.clone(), true)
    }
}

struct ThreadWaker(Unparker);

impl Wake for ThreadWaker {
    fn wake(self: StdArc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread until it completes or `deadline` passes (`None` then).
pub(crate) fn block_on_deadline<F: Future + Unpin>(
    mut fut: F,
    deadline: Option<Instant>,
) -> Option<F::Output> {
    let parker = Parker::new();
    let waker = Waker::from(StdArc::new(ThreadWaker(parker.unparker().clone())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = Pin::new(&mut fut).poll(&mut cx) {
            return Some(v);
        }
        match deadline {
            None => parker.park(),
            Some(d) => {
                if Instant::now() >= d {
                    return None;
                }
                parker.park_deadline(d);
            }
        }
    }
}

/// Waits until any of `fences` signals or `timeout` passes (`dma_fence_wait_any_timeout`).
/// Returns the index of the first signalled fence found (check its status: it may have
/// failed). `None` waits forever.
///
/// # Errors
/// [`WaitError::Timeout`], or [`WaitError::NoFences`] for an empty slice.
#[track_caller]
pub fn wait_any(fences: &[Fence], timeout: Option<Duration>) -> Result<usize, WaitError> {
    lockdep::might_wait();
    if fences.is_empty() {
        return Err(WaitError::NoFences);
    }
    if let Some(i) = fences.iter().position(Fence::is_signaled) {
        return Ok(i);
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let fut = WaitAny { futs: fences.iter().map(|f| FenceFuture::new(f.clone(), false)).collect() };
    block_on_deadline(fut, deadline).ok_or(WaitError::Timeout)
}

/// Waits until all of `fences` have signalled or `timeout` passes. On success, reports the
/// first error in slice order among the fences, if any failed.
///
/// # Errors
/// [`WaitError::Timeout`], or [`WaitError::Failed`] with the first member error.
#[track_caller]
pub fn wait_all(fences: &[Fence], timeout: Option<Duration>) -> Result<(), WaitError> {
    lockdep::might_wait();
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    for f in fences {
        match f.wait_until(deadline) {
            Ok(()) | Err(WaitError::Failed(_)) => {}
            Err(e) => return Err(e),
        }
    }
    match fences.iter().find_map(Fence::error) {
        Some(e) => Err(WaitError::Failed(e)),
        None => Ok(()),
    }
}

struct WaitAny {
    futs: Vec<FenceFuture>,
}

impl Future for WaitAny {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        for (i, f) in self.get_mut().futs.iter_mut().enumerate() {
            if f.poll_inner(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    }
}
