//! Violation reports: which rule was broken, where, by whom, and the chain of recorded lock
//! orders that closes the cycle. Built only on the failure path (the only place the checker
//! allocates).

use core::fmt;
use core::panic::Location;

/// The rule a [`Report`] says was broken. The numbered rules are those of CONTRACT.md at the
/// repository root; [`Rule::contract_rule`] gives the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// Rule 4 of CONTRACT.md: a reservation lock (blocking) was taken inside a signalling section.
    ResvInSignalling,
    /// Rule 4 of CONTRACT.md: a fence was waited on inside a signalling section.
    WaitInSignalling,
    /// Rule 4 of CONTRACT.md: an allocation that may enter reclaim (or a reclaim section) inside a
    /// signalling section.
    ReclaimInSignalling,
    /// Rule 4 of CONTRACT.md: a lock that is taken inside a signalling section is elsewhere held while
    /// waiting on a fence (or the reverse).
    LockHeldAcrossWait,
    /// Rule 6 of CONTRACT.md: a blocking reservation lock inside a reclaim section.
    ResvInReclaim,
    /// Rule 5 of CONTRACT.md: an outer lock taken while a reservation lock is held (the inverted
    /// `mmap_lock`/`copy_from_user` order).
    OuterUnderResv,
    /// Rule 5 of CONTRACT.md: any other lock-order inversion (a cycle in the class graph).
    LockOrderInversion,
    /// Rule 7 of CONTRACT.md: a lock needed by reset held across a non-interruptible fence wait.
    ResetLockAcrossWait,
    /// Rule 5 of CONTRACT.md: a lock of a class already held was taken without a nest key
    /// (same-class recursion, a cycle of one class).
    SameClassRecursion,
    /// Rule 4 of CONTRACT.md: a signalling section begun with `begin_signalling` was ended
    /// on another thread (the section's extent is per thread).
    SectionEndedOnWrongThread,
    /// Not a contract rule but a checker limit: the per-thread held-lock stack (depth 48)
    /// overflowed; deeper locks are not tracked.
    HeldStackOverflow,
    /// Not a contract rule but a checker limit: more lock classes than the graph has room
    /// for (512); new classes are not tracked.
    ClassesExhausted,
}

impl Rule {
    /// The rule in one sentence, as the first line of a report says it.
    pub fn sentence(self) -> &'static str {
        match self {
            Rule::ResvInSignalling => {
                "a reservation (resv) lock was taken inside a fence signalling section, but \
                 fences are waited on under resv locks, so the fence may never signal"
            }
            Rule::WaitInSignalling => {
                "a fence was waited on inside a fence signalling section: the fence being \
                 signalled may depend on the one waited for"
            }
            Rule::ReclaimInSignalling => {
                "memory that may enter reclaim was allocated inside a fence signalling \
                 section, but reclaim waits on fences"
            }
            Rule::LockHeldAcrossWait => {
                "a lock that is taken inside a fence signalling section is also held while \
                 waiting on a fence"
            }
            Rule::ResvInReclaim => {
                "a reservation (resv) lock was taken with a blocking lock inside a reclaim \
                 section; reclaim may only trylock resv locks"
            }
            Rule::OuterUnderResv => {
                "an outer lock was taken while holding a reservation (resv) lock; the order \
                 is outer -> resv"
            }
            Rule::LockOrderInversion => {
                "two locks are taken in opposite orders (a cycle in the lock-class graph), \
                 which can deadlock"
            }
            Rule::ResetLockAcrossWait => {
                "a lock needed by GPU reset was held across a non-interruptible fence wait; \
                 use an interruptible wait so reset can break it"
            }
            Rule::SameClassRecursion => {
                "a lock was taken while another lock of the same class is held, without a \
                 nest key (acquire context) covering both"
            }
            Rule::SectionEndedOnWrongThread => {
                "a fence signalling section was ended on a different thread than the one \
                 that began it"
            }
            Rule::HeldStackOverflow => {
                "more than 48 locks are held by one thread; locks beyond that are not \
                 checked (use a nest key for many locks of one class)"
            }
            Rule::ClassesExhausted => {
                "more than 512 lock classes are in use; the checker stops tracking new \
                 classes (declare classes in statics, not per object)"
            }
        }
    }

    /// The number of the rule of CONTRACT.md this variant reports (`None` for the checker's
    /// own limits, [`Rule::HeldStackOverflow`] and [`Rule::ClassesExhausted`]).
    pub fn contract_rule(self) -> Option<u8> {
        match self {
            Rule::ResvInSignalling
            | Rule::WaitInSignalling
            | Rule::ReclaimInSignalling
            | Rule::LockHeldAcrossWait
            | Rule::SectionEndedOnWrongThread => Some(4),
            Rule::OuterUnderResv | Rule::LockOrderInversion | Rule::SameClassRecursion => Some(5),
            Rule::ResvInReclaim => Some(6),
            Rule::ResetLockAcrossWait => Some(7),
            Rule::HeldStackOverflow | Rule::ClassesExhausted => None,
        }
    }

    /// A short kebab-case name, stable for logs and greps.
    pub fn name(self) -> &'static str {
        match self {
            Rule::ResvInSignalling => "resv-in-signalling",
            Rule::WaitInSignalling => "wait-in-signalling",
            Rule::ReclaimInSignalling => "reclaim-in-signalling",
            Rule::LockHeldAcrossWait => "lock-held-across-wait",
            Rule::ResvInReclaim => "resv-in-reclaim",
            Rule::OuterUnderResv => "outer-under-resv",
            Rule::LockOrderInversion => "lock-order-inversion",
            Rule::ResetLockAcrossWait => "reset-lock-across-wait",
            Rule::SameClassRecursion => "same-class-recursion",
            Rule::SectionEndedOnWrongThread => "section-ended-on-wrong-thread",
            Rule::HeldStackOverflow => "held-stack-overflow",
            Rule::ClassesExhausted => "classes-exhausted",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One place involved in a violation: a class, where it was taken, and by which thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The lock class (or pseudo-class: `signalling`, `reclaim`, `resv`).
    pub class: &'static str,
    /// Where it was taken (`#[track_caller]`).
    pub location: &'static Location<'static>,
    /// The thread's name (or `ThreadId(n)` when unnamed).
    pub thread: String,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` at {} (thread {})", self.class, self.location, self.thread)
    }
}

/// One recorded edge `from -> to` of the lock-class graph: `to` was taken while `from` was
/// held, first seen at these places (or primed at start-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEdge {
    /// The class that was held.
    pub from: &'static str,
    /// The class that was taken while `from` was held.
    pub to: &'static str,
    /// Where `from` had been taken when the edge was first recorded (`None` for primed
    /// edges, and when the checker's fixed edge table was full).
    pub held_at: Option<&'static Location<'static>>,
    /// Where `to` was taken when the edge was first recorded (`None` as for `held_at`).
    pub taken_at: Option<&'static Location<'static>>,
    /// The thread that first recorded it.
    pub thread: String,
    /// Whether this edge is part of the primed order (outer -> resv -> reclaim ->
    /// signalling) rather than observed.
    pub primed: bool,
}

impl fmt::Display for ChainEdge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.primed, self.held_at, self.taken_at) {
            (true, _, _) => {
                write!(f, "`{}` -> `{}`: primed order (rule 5 of CONTRACT.md)", self.from, self.to)
            }
            (false, Some(held_at), Some(taken_at)) => write!(
                f,
                "`{}` -> `{}`: `{}` taken at {} while `{}` held since {} (thread {})",
                self.from, self.to, self.to, taken_at, self.from, held_at, self.thread
            ),
            _ => write!(f, "`{}` -> `{}`: places not kept (edge table full)", self.from, self.to),
        }
    }
}

/// A contract violation, with structured fields and a readable [`Display`](fmt::Display)
/// (a lockdep splat a person can act on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The rule broken.
    pub rule: Rule,
    /// What the current thread was doing: the lock, wait or allocation that was checked.
    pub acquired: Site,
    /// The held lock (or open section) it conflicts with, if any.
    pub held: Option<Site>,
    /// For cycles: the recorded edges from `acquired.class` back to `held.class`; with the
    /// new edge `held -> acquired` they close the cycle. Empty for non-cycle rules.
    pub chain: Vec<ChainEdge>,
    /// Every lock held by the thread at the time, outermost first.
    pub held_locks: Vec<Site>,
    /// A backtrace: always for allocations inside the global allocator (whose `file:line`
    /// cannot point at the user's code), otherwise when `RUST_BACKTRACE` is set (useful when
    /// the section was opened by `Signaller::signal` and the offending code is a callback).
    pub backtrace: Option<String>,
}

impl Report {
    /// The classes involved, in cycle order when there is a cycle.
    pub fn classes(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if let Some(h) = &self.held {
            v.push(h.class);
        }
        v.push(self.acquired.class);
        for e in &self.chain {
            if !v.contains(&e.to) {
                v.push(e.to);
            }
        }
        v
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gpusched lockdep: {} [{}]", self.rule.sentence(), self.rule)?;
        match self.rule.contract_rule() {
            Some(n) => writeln!(f, " (rule {n} of CONTRACT.md)")?,
            None => writeln!(f)?,
        }
        writeln!(f, "  this thread:  {}", self.acquired)?;
        if let Some(h) = &self.held {
            writeln!(f, "  while holding {}", h)?;
        }
        if !self.chain.is_empty() {
            if let Some(h) = &self.held {
                writeln!(
                    f,
                    "  the new order `{}` -> `{}` closes this cycle:",
                    h.class, self.acquired.class
                )?;
            }
            for e in &self.chain {
                writeln!(f, "    {e}")?;
            }
            if let Some(h) = &self.held {
                writeln!(
                    f,
                    "    `{}` -> `{}`: new, at {}",
                    h.class, self.acquired.class, self.acquired.location
                )?;
            }
        }
        if !self.held_locks.is_empty() {
            writeln!(f, "  locks held by this thread (outermost first):")?;
            for (i, s) in self.held_locks.iter().enumerate() {
                writeln!(f, "    #{i} `{}` at {}", s.class, s.location)?;
            }
        }
        if let Some(bt) = &self.backtrace {
            writeln!(f, "  backtrace:\n{bt}")?;
        }
        Ok(())
    }
}
