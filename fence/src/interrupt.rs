//! Interrupting interruptible waits during a reset.
//!
//! The kernel proposed, and never merged, letting its timeout-and-reset (TDR) worker interrupt
//! *interruptible* fence waits: such waits return a restart error (`-ERESTARTSYS`) and new ones
//! fail at once until the reset ends, so that a lock the reset needs can only ever be held
//! across waits that the reset can break. We ship it.
//!
//! An [`InterruptDomain`] is attached to fence contexts (see
//! [`FenceContextBuilder::interrupt_domain`](crate::FenceContextBuilder::interrupt_domain)).
//! It keeps an epoch and a count of open interrupt sections. An interruptible wait on a fence of
//! the domain listens both on the fence and on the domain, and returns
//! [`WaitError::Interrupted`](crate::WaitError::Interrupted) when the epoch moves or a section
//! is open. Plain waits never look at the domain: they keep waiting.
//!
//! Opening a section ([`InterruptDomain::begin_interrupt`]) never allocates, never takes a
//! lock and never waits, so the TDR worker may do it inside a signalling section.

use std::fmt;

use crate::sync::{Arc, AtomicU64, AtomicUsize, Event, Ordering};

struct DomainInner {
    name: Box<str>,
    /// Bumped (SeqCst) each time an interrupt section opens. A waiter that saw another value
    /// when it started has been interrupted.
    epoch: AtomicU64,
    /// Number of interrupt sections open now; non-zero makes new interruptible waits fail.
    open: AtomicUsize,
    /// Notified (all listeners) when a section opens.
    event: Event,
}

/// A group of fence contexts whose interruptible waits one reset can interrupt (a reset
/// domain's view of its waiters). Cheap to clone; clones share state.
#[derive(Clone)]
pub struct InterruptDomain {
    inner: Arc<DomainInner>,
}

impl fmt::Debug for InterruptDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterruptDomain")
            .field("name", &self.inner.name)
            .field("epoch", &self.epoch())
            .field("interrupting", &self.is_interrupting())
            .finish()
    }
}

impl InterruptDomain {
    /// A new domain with a name for diagnostics.
    pub fn new(name: impl Into<String>) -> Self {
        let event = Event::new();
        // `Event::notify` allocates the event's shared state on first use; make that happen
        // here, so that `begin_interrupt` (called inside signalling sections) never allocates.
        drop(event.listen());
        InterruptDomain {
            inner: Arc::new(DomainInner {
                name: name.into().into_boxed_str(),
                epoch: AtomicU64::new(0),
                open: AtomicUsize::new(0),
                event,
            }),
        }
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many interrupt sections have been opened so far.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    /// Whether an interrupt section is open now (new interruptible waits fail at once).
    pub fn is_interrupting(&self) -> bool {
        self.inner.open.load(Ordering::SeqCst) != 0
    }

    /// Opens an interrupt section: every interruptible wait on the domain's fences returns
    /// [`WaitError::Interrupted`](crate::WaitError::Interrupted), and new ones fail at once,
    /// until the returned guard drops. Allocation-free and lock-free.
    pub fn begin_interrupt(&self) -> InterruptSection {
        self.inner.open.fetch_add(1, Ordering::SeqCst);
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
        InterruptSection { domain: self.clone() }
    }

    /// Whether a wait that started at `epoch` must return: a section opened since, or is open.
    #[cfg_attr(gpusched_loom, allow(dead_code))] // interruptible waits are not built under loom
    pub(crate) fn interrupted_since(&self, epoch: u64) -> bool {
        self.inner.open.load(Ordering::SeqCst) != 0
            || self.inner.epoch.load(Ordering::SeqCst) != epoch
    }

    #[cfg_attr(gpusched_loom, allow(dead_code))]
    pub(crate) fn event(&self) -> &Event {
        &self.inner.event
    }
}

/// An open interrupt section; see [`InterruptDomain::begin_interrupt`]. Interruptible waits
/// work again once every section of the domain has ended.
#[must_use = "interruptible waits fail only while the section is held"]
#[derive(Debug)]
pub struct InterruptSection {
    domain: InterruptDomain,
}

impl InterruptSection {
    /// The domain this section interrupts.
    pub fn domain(&self) -> &InterruptDomain {
        &self.domain
    }
}

impl Drop for InterruptSection {
    fn drop(&mut self) {
        self.domain.inner.open.fetch_sub(1, Ordering::SeqCst);
    }
}
