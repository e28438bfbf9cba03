//! [`Callback`]: what a fence runs when it signals (`struct dma_fence_cb`), either a closure
//! boxed when the callback is made, or an `Arc` its owner already holds
//! ([`SharedCallback`]).
//!
//! The kernel embeds `struct dma_fence_cb` in the object that waits (a scheduler job embeds
//! the callback of its hardware fence), so adding a callback never allocates. A shared
//! callback is the same: its state is the owner's `Arc`, and making it only moves a handle
//! in, with no allocation at all. Both kinds are one pointer and one vtable (16 bytes on
//! 64-bit targets, as the `Box<dyn FnOnce>` they replace), so a fence's callback list costs
//! the same per entry whichever kind it holds.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::fence::Fence;

/// A callback whose state lives in an `Arc` its owner already holds: adding it to a fence
/// ([`Callback::shared`]) allocates nothing (the kernel's `dma_fence_cb` embedded in its
/// owner). The fence holds the `Arc` until it signals or the callback is removed.
pub trait SharedCallback: Send + Sync + 'static {
    /// Runs once, on the signalling thread, inside its signalling section: the same rules
    /// as for [`Fence::add_callback`]'s closures (short, allocation-free, wait-free).
    fn on_signal(self: Arc<Self>, fence: &Fence);
}

/// How to run and how to drop one kind of callback state.
struct VTable {
    /// Consumes the state and runs it.
    call: unsafe fn(NonNull<()>, &Fence),
    /// Consumes the state without running it.
    drop: unsafe fn(NonNull<()>),
}

/// A callback ready to be added without allocating: a closure is boxed when the `Callback`
/// is made ([`Callback::new`]); an `Arc` is moved in as it is ([`Callback::shared`]). See
/// [`Fence::add_prepared_callback`].
pub struct Callback {
    /// `Box::into_raw` of the closure, or `Arc::into_raw` of the shared state; owned.
    data: NonNull<()>,
    /// The functions of the kind `data` was made by.
    vtable: &'static VTable,
}

// SAFETY: a `Callback` owns its state and nothing else: a `Box<F>` with `F: Send`
// (`Callback::new`), or a strong count of an `Arc<T>` with `T: Send + Sync`
// (`Callback::shared`). Either may move to, and be run or dropped on, another thread. It is
// not `Sync`: it is only ever used through ownership.
unsafe impl Send for Callback {}

impl Callback {
    /// Boxes `f` now, so that adding it later need not allocate.
    pub fn new(f: impl FnOnce(&Fence) + Send + 'static) -> Self {
        Callback::boxed(f)
    }

    fn boxed<F: FnOnce(&Fence) + Send + 'static>(f: F) -> Self {
        let raw = Box::into_raw(Box::new(f));
        Callback {
            // SAFETY: `Box::into_raw` never returns null (a zero-sized `F` gets a dangling,
            // non-null pointer).
            data: unsafe { NonNull::new_unchecked(raw.cast::<()>()) },
            vtable: &Boxed::<F>::VTABLE,
        }
    }

    /// A callback that runs `this.on_signal(fence)`: it moves `this` in, without allocating
    /// (clone the `Arc` first to keep a handle).
    pub fn shared<T: SharedCallback>(this: Arc<T>) -> Self {
        let raw = Arc::into_raw(this).cast_mut();
        Callback {
            // SAFETY: `Arc::into_raw` never returns null.
            data: unsafe { NonNull::new_unchecked(raw.cast::<()>()) },
            vtable: &Shared::<T>::VTABLE,
        }
    }

    /// Runs the callback, consuming it.
    pub(crate) fn call(self, fence: &Fence) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `data` was made by the constructor that chose `vtable`, and is consumed
        // exactly once: here, with `Drop` suppressed by `ManuallyDrop`.
        unsafe { (this.vtable.call)(this.data, fence) }
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        // SAFETY: as in `call`: the state is consumed once, here, by its own kind's drop.
        unsafe { (self.vtable.drop)(self.data) }
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback(..)")
    }
}

/// The vtable of a boxed closure `F`.
struct Boxed<F>(PhantomData<F>);

impl<F: FnOnce(&Fence) + Send + 'static> Boxed<F> {
    const VTABLE: VTable = VTable { call: Self::call, drop: Self::drop };

    /// # Safety
    /// `data` is `Box::<F>::into_raw`'s, not yet consumed.
    unsafe fn call(data: NonNull<()>, fence: &Fence) {
        // SAFETY: the caller's contract.
        let f = unsafe { Box::from_raw(data.as_ptr().cast::<F>()) };
        f(fence);
    }

    /// # Safety
    /// As for `call`.
    unsafe fn drop(data: NonNull<()>) {
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(data.as_ptr().cast::<F>()) });
    }
}

/// The vtable of a shared callback `T`.
struct Shared<T>(PhantomData<T>);

impl<T: SharedCallback> Shared<T> {
    const VTABLE: VTable = VTable { call: Self::call, drop: Self::drop };

    /// # Safety
    /// `data` is `Arc::<T>::into_raw`'s, its strong count not yet consumed.
    unsafe fn call(data: NonNull<()>, fence: &Fence) {
        // SAFETY: the caller's contract.
        let this = unsafe { Arc::from_raw(data.as_ptr().cast_const().cast::<T>()) };
        this.on_signal(fence);
    }

    /// # Safety
    /// As for `call`.
    unsafe fn drop(data: NonNull<()>) {
        // SAFETY: the caller's contract.
        drop(unsafe { Arc::from_raw(data.as_ptr().cast_const().cast::<T>()) });
    }
}

#[cfg(all(test, not(gpusched_loom)))]
mod tests {
    use super::*;
    use crate::FenceContext;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter(AtomicUsize);

    impl SharedCallback for Counter {
        fn on_signal(self: Arc<Self>, fence: &Fence) {
            assert!(fence.is_signaled());
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A shared callback runs once with the fence signalled, and gives its `Arc` back
    /// (run, removed or dropped unrun): no count is lost or leaked.
    #[test]
    fn shared_callback_runs_once_and_releases_its_arc() {
        let ctx = FenceContext::new("cb");
        let counter = Arc::new(Counter(AtomicUsize::new(0)));

        let (fence, signaller) = ctx.next();
        fence.add_prepared_callback(Callback::shared(counter.clone())).expect("pending");
        assert_eq!(Arc::strong_count(&counter), 2);
        signaller.signal();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert_eq!(Arc::strong_count(&counter), 1);

        let (fence, signaller) = ctx.next();
        let id = fence.add_prepared_callback(Callback::shared(counter.clone())).expect("pending");
        let taken = fence.take_callback(id).expect("still pending");
        assert_eq!(Arc::strong_count(&counter), 2);
        drop(taken);
        assert_eq!(Arc::strong_count(&counter), 1);
        signaller.signal();
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);

        let (fence, signaller) = ctx.next();
        signaller.signal();
        let back = fence.add_prepared_callback(Callback::shared(counter.clone()));
        let Err(already) = back else { panic!("the fence has signalled") };
        drop(already.into_inner());
        assert_eq!(Arc::strong_count(&counter), 1);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
    }

    /// A boxed closure (zero-sized or not) runs once, or is dropped unrun with its captures.
    #[test]
    fn boxed_callback_runs_or_drops_its_captures() {
        let ctx = FenceContext::new("cb");
        let seen = Arc::new(AtomicUsize::new(0));
        let (fence, signaller) = ctx.next();
        let s = seen.clone();
        fence
            .add_callback(move |_| {
                s.fetch_add(1, Ordering::Relaxed);
            })
            .expect("pending");
        fence.add_callback(|_| {}).expect("pending");
        signaller.signal();
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        assert_eq!(Arc::strong_count(&seen), 1);

        let s = seen.clone();
        let unrun = Callback::new(move |_| {
            s.fetch_add(1, Ordering::Relaxed);
        });
        drop(unrun);
        assert_eq!(Arc::strong_count(&seen), 1);
        assert_eq!(seen.load(Ordering::Relaxed), 1);
    }
}
