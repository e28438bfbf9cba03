//! Fence contexts (timelines): unique context ids, increasing seqnos, and the kernel's
//! wrap-around aware ordering ([`seqno_is_later`]).

use std::fmt;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::time::Instant;

use crate::fence::{Fence, Signaller};
use crate::interrupt::InterruptDomain;
use crate::ops::FenceOps;
use crate::sync::{Arc, AtomicU64, Ordering};

/// Context ids are global and unique for the life of the process (`dma_fence_context_alloc`).
/// Id 0 is reserved for stub fences.
static NEXT_CONTEXT_ID: StdAtomicU64 = StdAtomicU64::new(1);

/// How seqnos of a context compare (`dma_fence_ops.use_64bit_seqno`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeqnoWidth {
    /// Full 64-bit seqnos, compared as plain integers: they never wrap in practice.
    #[default]
    U64,
    /// 32-bit hardware seqnos: only the low 32 bits count, and `a` is later than `b` when
    /// `(a - b) as i32 > 0`, so ordering survives wrap-around for distances below 2^31.
    U32,
}

/// Whether seqno `a` is later than seqno `b` on a timeline of the given width
/// (`__dma_fence_is_later`).
pub fn seqno_is_later(a: u64, b: u64, width: SeqnoWidth) -> bool {
    match width {
        SeqnoWidth::U64 => a > b,
        SeqnoWidth::U32 => ((a as u32).wrapping_sub(b as u32) as i32) > 0,
    }
}

/// A context's deadline hook; see [`FenceContextBuilder::on_deadline`].
pub(crate) type DeadlineHook = Box<dyn Fn(&Fence, Instant) + Send + Sync + 'static>;

/// What every fence of a context shares.
pub(crate) struct ContextShared {
    pub(crate) id: u64,
    pub(crate) name: Box<str>,
    pub(crate) driver: &'static str,
    pub(crate) width: SeqnoWidth,
    pub(crate) domain: Option<InterruptDomain>,
    /// Told when a fence of the context gets an earlier deadline ([`Fence::set_deadline`]).
    pub(crate) deadline_hook: Option<DeadlineHook>,
}

impl ContextShared {
    pub(crate) fn new(
        name: Box<str>,
        driver: &'static str,
        width: SeqnoWidth,
        domain: Option<InterruptDomain>,
    ) -> Arc<Self> {
        Arc::new(ContextShared {
            id: NEXT_CONTEXT_ID.fetch_add(1, StdOrdering::Relaxed),
            name,
            driver,
            width,
            domain,
            deadline_hook: None,
        })
    }

    /// The shared context of stub fences: id 0, name "stub".
    pub(crate) fn stub() -> Arc<Self> {
        Arc::new(ContextShared {
            id: 0,
            name: "stub".into(),
            driver: "gpusched",
            width: SeqnoWidth::U64,
            domain: None,
            deadline_hook: None,
        })
    }
}

/// A timeline: a unique context id and increasing seqnos (`dma_fence_context_alloc` plus a
/// seqno counter). Fences of one context must signal in seqno order; that is what makes
/// [`Fence::is_later`] and per-context deduplication meaningful.
pub struct FenceContext {
    shared: Arc<ContextShared>,
    /// The last seqno handed out.
    seqno: AtomicU64,
}

impl fmt::Debug for FenceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FenceContext")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("last_seqno", &self.last_seqno())
            .finish()
    }
}

impl FenceContext {
    /// A new context with a name for diagnostics, 64-bit seqnos and no interrupt domain.
    pub fn new(name: impl Into<String>) -> Self {
        FenceContext::builder(name).build()
    }

    /// A builder for contexts with a driver name, 32-bit seqnos or an interrupt domain.
    pub fn builder(name: impl Into<String>) -> FenceContextBuilder {
        FenceContextBuilder {
            name: name.into(),
            driver: "gpusched",
            width: SeqnoWidth::U64,
            domain: None,
            start: 0,
            deadline_hook: None,
        }
    }

    /// The context id, unique in the process.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The context (timeline) name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The seqno width the context's fences compare with.
    pub fn seqno_width(&self) -> SeqnoWidth {
        self.shared.width
    }

    /// The interrupt domain of the context's fences, if any.
    pub fn interrupt_domain(&self) -> Option<&InterruptDomain> {
        self.shared.domain.as_ref()
    }

    /// The last seqno handed out (0 before the first).
    pub fn last_seqno(&self) -> u64 {
        self.seqno.load(Ordering::Relaxed)
    }

    /// Takes the next seqno without creating a fence.
    pub fn next_seqno(&self) -> u64 {
        self.seqno.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// A new pending fence with the next seqno, and its unique signaller.
    pub fn next(&self) -> (Fence, Signaller) {
        let seqno = self.next_seqno();
        Fence::new_pending(self.shared.clone(), seqno, None)
    }

    /// A new pending fence with the next seqno, backed by `ops` (polling, lazy enabling,
    /// deadlines, a backend wait).
    pub fn next_with_ops(&self, ops: Box<dyn FenceOps>) -> (Fence, Signaller) {
        let seqno = self.next_seqno();
        Fence::new_pending(self.shared.clone(), seqno, Some(ops))
    }

    /// Allocates a fence now, with room for `callbacks` callbacks, to be published later
    /// without allocating: [`PreparedFence::init`](crate::PreparedFence::init) gives it a
    /// seqno (take one with [`next_seqno`](FenceContext::next_seqno) at that time, so seqnos
    /// follow publication order).
    #[cfg(not(gpusched_loom))]
    pub fn prepare(
        &self,
        callbacks: usize,
        ops: Option<Box<dyn FenceOps>>,
    ) -> crate::PreparedFence {
        crate::PreparedFence::new(self.shared.clone(), callbacks, ops)
    }

    /// A new pending fence with an explicit seqno (a hardware seqno, say). The caller keeps
    /// seqnos increasing; the context's counter is not moved.
    pub fn with_seqno(&self, seqno: u64, ops: Option<Box<dyn FenceOps>>) -> (Fence, Signaller) {
        Fence::new_pending(self.shared.clone(), seqno, ops)
    }
}

/// Builder for a [`FenceContext`].
pub struct FenceContextBuilder {
    name: String,
    driver: &'static str,
    width: SeqnoWidth,
    domain: Option<InterruptDomain>,
    start: u64,
    deadline_hook: Option<DeadlineHook>,
}

impl fmt::Debug for FenceContextBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FenceContextBuilder")
            .field("name", &self.name)
            .field("driver", &self.driver)
            .field("width", &self.width)
            .field("domain", &self.domain)
            .field("start", &self.start)
            .field("deadline_hook", &self.deadline_hook.is_some())
            .finish()
    }
}

impl FenceContextBuilder {
    /// The driver name reported by the context's fences (default `"gpusched"`).
    pub fn driver_name(mut self, driver: &'static str) -> Self {
        self.driver = driver;
        self
    }

    /// The seqno width (default [`SeqnoWidth::U64`]).
    pub fn seqno_width(mut self, width: SeqnoWidth) -> Self {
        self.width = width;
        self
    }

    /// The interrupt domain whose reset interrupts interruptible waits on these fences.
    pub fn interrupt_domain(mut self, domain: &InterruptDomain) -> Self {
        self.domain = Some(domain.clone());
        self
    }

    /// The seqno *before* the first one handed out (default 0, so the first fence is 1).
    /// Useful to test wrap-around.
    pub fn start_after(mut self, seqno: u64) -> Self {
        self.start = seqno;
        self
    }

    /// A hook told when a fence of the context gets an earlier deadline
    /// ([`Fence::set_deadline`]), with the fence and the new deadline: the way the producer of
    /// plain fences (no [`FenceOps`]) learns of deadlines as they come, e.g. a scheduler that
    /// forwards a job's finished-fence deadline to its hardware fence. Polling
    /// ([`Fence::deadline`], [`Signaller::deadline`]) needs no hook.
    ///
    /// A producer that gets its backing fence later (a scheduler's finished fence gets its
    /// hardware fence when the job runs) reads [`Fence::deadline`] at that point and forwards
    /// it with [`Fence::set_deadline`], then forwards later lowerings from the hook; both are
    /// allocation-free.
    ///
    /// The hook runs on the thread that set the deadline, once per lowering (a later deadline
    /// than one set before does not call it), never for a signalled fence, and never on the
    /// signalling path: setting a deadline and running the hook allocate nothing. It must not
    /// block on fences, and may run concurrently with the fence signalling and with itself:
    /// setters on several threads may reach it out of order (a later deadline just after an
    /// earlier one), so keep the earliest deadline heard ([`Fence::deadline`] always is).
    pub fn on_deadline(mut self, hook: impl Fn(&Fence, Instant) + Send + Sync + 'static) -> Self {
        self.deadline_hook = Some(Box::new(hook));
        self
    }

    /// Builds the context with a fresh unique id.
    pub fn build(self) -> FenceContext {
        let shared = ContextShared {
            id: NEXT_CONTEXT_ID.fetch_add(1, StdOrdering::Relaxed),
            name: self.name.into_boxed_str(),
            driver: self.driver,
            width: self.width,
            domain: self.domain,
            deadline_hook: self.deadline_hook,
        };
        FenceContext { shared: Arc::new(shared), seqno: AtomicU64::new(self.start) }
    }
}
