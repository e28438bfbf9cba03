//! Stateful property test of `Resv` (proptest-state-machine): an exact reference model of the
//! fence list (`dma_resv`'s slot array) against the real object under random transitions.
//!
//! The model is a list of (fence, usage) entries plus each fence's (context, seqno, signalled
//! state), the reservation count, a dirty flag and the published snapshot. It follows
//! `resv.rs` rule for rule:
//! - `reserve_fences(n)` prunes signalled entries, then adds `n` to the reservation;
//! - `add_fence(f, u)` uses one reservation and replaces, in place, the *first* entry that is
//!   either of `f`'s context, with a usage `>= u`, and not later than `f` (or `f` itself), or
//!   has signalled; otherwise it appends (`dma_resv_add_fence`);
//! - `replace_fences(ctx, r, u)` overwrites every entry of `ctx` in place;
//! - unlocking clears the reservation and, when the list changed, prunes signalled entries and
//!   publishes the list as the snapshot that unlocked readers see.
//!
//! After every transition: the locked view (`fences`, `get_fences(u)`, `test_signaled(u)`,
//! `get_singleton(u)`, `reserved`) equals the model exactly (same fences, same order, usage
//! `<= u`); the unlocked view (`fences_unlocked`, `test_signaled_unlocked`,
//! `get_singleton_unlocked`) equals the last published snapshot, also while the lock is held
//! and changed; `try_lock` fails while locked. Pruning (at reserve and at unlock) must not
//! change which unsignalled fences a query returns nor what `test_signaled` answers.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256); failures are persisted next to
//! this file (`state_machine.proptest-regressions`) and replayed first. Each case leaks its
//! `Resv` (a held guard borrows it for the whole case).

use gpusched_fence::{Fence, FenceContext, FenceError, Signaller};
use gpusched_resv::{Resv, ResvGuard, Usage};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

/// Contexts fences are added from; context `RINGS` is the replacement context.
const RINGS: usize = 3;
const MAX_FENCES: usize = 24;
const ERROR: FenceError = FenceError::Driver(-5);

type Outcome = Result<(), FenceError>;

#[derive(Clone, Debug)]
enum Transition {
    Reserve(usize),
    /// Add the next fence of context `ctx`.
    AddNew {
        ctx: usize,
        usage: Usage,
    },
    /// Add a fence that already exists again (possibly older than what the list holds).
    AddExisting {
        fence: usize,
        usage: Usage,
    },
    /// Replace every fence of `ctx` by the next fence of the replacement context.
    Replace {
        ctx: usize,
        usage: Usage,
    },
    Signal {
        fence: usize,
        error: bool,
    },
    /// Unlock (publishing when dirty), check the unlocked view, lock again.
    Unlock,
}

#[derive(Clone, Debug)]
struct MFence {
    ctx: usize,
    seqno: u64,
    state: Option<Outcome>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    fences: Vec<MFence>,
    next_seqno: [u64; RINGS + 1],
    list: Vec<(usize, Usage)>,
    reserved: usize,
    dirty: bool,
    snapshot: Vec<(usize, Usage)>,
}

impl Model {
    fn signalled(&self, f: usize) -> bool {
        self.fences[f].state.is_some()
    }

    fn new_fence(&mut self, ctx: usize) -> usize {
        self.next_seqno[ctx] += 1;
        self.fences.push(MFence { ctx, seqno: self.next_seqno[ctx], state: None });
        self.fences.len() - 1
    }

    fn prune(&mut self) {
        let before = self.list.len();
        let fences = &self.fences;
        self.list.retain(|&(f, _)| fences[f].state.is_none());
        self.dirty |= self.list.len() != before;
    }

    fn add(&mut self, f: usize, usage: Usage) {
        self.reserved -= 1;
        let new = &self.fences[f];
        let slot = self.list.iter().position(|&(o, ou)| {
            let old = &self.fences[o];
            (old.ctx == new.ctx && ou >= usage && (o == f || old.seqno <= new.seqno))
                || old.state.is_some()
        });
        // Re-adding the fence a slot already holds, with its usage, changes nothing: the
        // snapshot is not republished.
        match slot {
            Some(i) if self.list[i] == (f, usage) => {}
            Some(i) => {
                self.list[i] = (f, usage);
                self.dirty = true;
            }
            None => {
                self.list.push((f, usage));
                self.dirty = true;
            }
        }
    }
}

fn usage() -> impl Strategy<Value = Usage> {
    prop::sample::select(Usage::ALL.to_vec())
}

struct ResvModel;

impl ReferenceStateMachine for ResvModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Transition> {
        let n = state.fences.len();
        let mut t: Vec<(u32, BoxedStrategy<Transition>)> = vec![
            (2, (1..=3usize).prop_map(Transition::Reserve).boxed()),
            (
                1,
                (0..RINGS, usage())
                    .prop_map(|(ctx, usage)| Transition::Replace { ctx, usage })
                    .boxed(),
            ),
            (2, Just(Transition::Unlock).boxed()),
        ];
        if state.reserved > 0 && n < MAX_FENCES {
            t.push((
                5,
                (0..RINGS, usage())
                    .prop_map(|(ctx, usage)| Transition::AddNew { ctx, usage })
                    .boxed(),
            ));
        }
        if n > 0 {
            if state.reserved > 0 {
                t.push((
                    1,
                    (0..n, usage())
                        .prop_map(|(fence, usage)| Transition::AddExisting { fence, usage })
                        .boxed(),
                ));
            }
            t.push((
                4,
                (0..n, prop::bool::weighted(0.3))
                    .prop_map(|(fence, error)| Transition::Signal { fence, error })
                    .boxed(),
            ));
        }
        prop::strategy::Union::new_weighted(t).boxed()
    }

    fn preconditions(state: &Model, t: &Transition) -> bool {
        match *t {
            Transition::AddNew { .. } => state.reserved > 0 && state.fences.len() < MAX_FENCES,
            Transition::AddExisting { fence, .. } => {
                state.reserved > 0 && fence < state.fences.len()
            }
            Transition::Replace { .. } => state.fences.len() < MAX_FENCES,
            Transition::Signal { fence, .. } => {
                state.fences.get(fence).is_some_and(|f| f.state.is_none())
            }
            Transition::Reserve(_) | Transition::Unlock => true,
        }
    }

    fn apply(mut state: Model, t: &Transition) -> Model {
        match *t {
            Transition::Reserve(n) => {
                state.prune();
                state.reserved += n;
            }
            Transition::AddNew { ctx, usage } => {
                let f = state.new_fence(ctx);
                state.add(f, usage);
            }
            Transition::AddExisting { fence, usage } => state.add(fence, usage),
            Transition::Replace { ctx, usage } => {
                let r = state.new_fence(RINGS);
                let fences = &state.fences;
                let mut hit = false;
                for e in state.list.iter_mut().filter(|(f, _)| fences[*f].ctx == ctx) {
                    *e = (r, usage);
                    hit = true;
                }
                state.dirty |= hit;
            }
            Transition::Signal { fence, error } => {
                state.fences[fence].state = Some(if error { Err(ERROR) } else { Ok(()) });
            }
            Transition::Unlock => {
                state.reserved = 0;
                if state.dirty {
                    state.dirty = false;
                    let fences = &state.fences;
                    state.list.retain(|&(f, _)| fences[f].state.is_none());
                    state.snapshot = state.list.clone();
                }
            }
        }
        state
    }
}

struct Sut {
    resv: &'static Resv,
    guard: Option<ResvGuard<'static>>,
    contexts: Vec<FenceContext>,
    fences: Vec<(Fence, Option<Signaller>)>,
}

impl Sut {
    fn guard(&self) -> &ResvGuard<'static> {
        self.guard.as_ref().expect("locked between transitions")
    }

    fn new_fence(&mut self, ctx: usize) -> Fence {
        let (f, s) = self.contexts[ctx].next();
        self.fences.push((f.clone(), Some(s)));
        f
    }

    fn same(&self, got: &[Fence], want: impl Iterator<Item = usize>, what: &str) {
        let want: Vec<usize> = want.collect();
        let ok = got.len() == want.len()
            && got.iter().zip(&want).all(|(g, &w)| g.ptr_eq(&self.fences[w].0));
        assert!(ok, "{what}: got {got:?}, want fences {want:?}");
    }

    /// What pruning must preserve: per usage, the unsignalled fences and `test_signaled`.
    fn query_answers(&self) -> Vec<(Vec<Fence>, bool)> {
        let g = self.guard();
        Usage::ALL
            .iter()
            .map(|&u| {
                let live = g.get_fences(u).into_iter().filter(|f| !f.is_signaled()).collect();
                (live, g.test_signaled(u))
            })
            .collect()
    }
}

fn same_answers(a: &[(Vec<Fence>, bool)], b: &[(Vec<Fence>, bool)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((fa, ta), (fb, tb))| {
            ta == tb && fa.len() == fb.len() && fa.iter().zip(fb).all(|(x, y)| x.ptr_eq(y))
        })
}

struct ResvTest;

impl StateMachineTest for ResvTest {
    type SystemUnderTest = Sut;
    type Reference = ResvModel;

    fn init_test(_: &Model) -> Sut {
        let resv: &'static Resv = Box::leak(Box::new(Resv::new()));
        let mut contexts: Vec<FenceContext> =
            (0..RINGS).map(|i| FenceContext::new(format!("ring{i}"))).collect();
        contexts.push(FenceContext::new("replacement"));
        Sut { resv, guard: Some(resv.lock_no_ctx()), contexts, fences: Vec::new() }
    }

    fn apply(mut sut: Sut, m: &Model, t: Transition) -> Sut {
        match t {
            Transition::Reserve(n) => {
                let before = sut.query_answers();
                sut.guard.as_mut().expect("locked").reserve_fences(n).expect("small reservation");
                assert!(same_answers(&before, &sut.query_answers()), "pruning changed answers");
            }
            Transition::AddNew { ctx, usage } => {
                let f = sut.new_fence(ctx);
                sut.guard.as_mut().expect("locked").add_fence(f, usage);
            }
            Transition::AddExisting { fence, usage } => {
                let f = sut.fences[fence].0.clone();
                sut.guard.as_mut().expect("locked").add_fence(f, usage);
            }
            Transition::Replace { ctx, usage } => {
                let r = sut.new_fence(RINGS);
                let id = sut.contexts[ctx].id();
                sut.guard.as_mut().expect("locked").replace_fences(id, &r, usage);
            }
            Transition::Signal { fence, error } => {
                let s = sut.fences[fence].1.take().expect("precondition: pending");
                if error {
                    s.signal_error(ERROR);
                } else {
                    s.signal();
                }
            }
            Transition::Unlock => {
                let before = sut.query_answers();
                drop(sut.guard.take());
                assert!(!sut.resv.is_locked());
                // The snapshot is the locked view at the unlock, less pruned signalled fences.
                let after: Vec<(Vec<Fence>, bool)> = Usage::ALL
                    .iter()
                    .map(|&u| {
                        let live = sut
                            .resv
                            .fences_unlocked(u)
                            .into_iter()
                            .filter(|f| !f.is_signaled())
                            .collect();
                        (live, sut.resv.test_signaled_unlocked(u))
                    })
                    .collect();
                assert!(same_answers(&before, &after), "snapshot differs from the locked view");
                sut.check_unlocked(m);
                sut.guard = Some(sut.resv.lock_no_ctx());
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        let g = sut.guard();
        assert_eq!(g.reserved(), m.reserved, "reservation");
        let entries: Vec<(Fence, Usage)> =
            g.fences(Usage::Bookkeep).map(|(f, u)| (f.clone(), u)).collect();
        let ok = entries.len() == m.list.len()
            && entries
                .iter()
                .zip(&m.list)
                .all(|((f, u), &(mf, mu))| *u == mu && f.ptr_eq(&sut.fences[mf].0));
        assert!(ok, "locked list {entries:?}, model {:?}", m.list);
        for u in Usage::ALL {
            let want = m.list.iter().filter(|(_, mu)| *mu <= u).map(|(f, _)| *f);
            sut.same(&g.get_fences(u), want.clone(), "get_fences");
            let all_signalled = want.clone().all(|f| m.signalled(f));
            assert_eq!(g.test_signaled(u), all_signalled, "test_signaled({u:?})");
            check_singleton(sut, g.get_singleton(u), want.collect());
        }
        assert!(sut.resv.is_locked());
        assert!(sut.resv.try_lock(None).is_none(), "try_lock succeeded while locked");
        sut.check_unlocked(m);
    }

    fn teardown(mut sut: Sut, m: Model) {
        drop(sut.guard.take());
        // The final unlock publishes like any other.
        let m = ResvModel::apply(m, &Transition::Unlock);
        sut.check_unlocked(&m);
        assert_eq!(gpusched_fence::lockdep::violations(), 0, "checker violations");
    }
}

impl Sut {
    /// Unlocked readers see the last published snapshot (also while the lock is held).
    fn check_unlocked(&self, m: &Model) {
        for u in Usage::ALL {
            let want = m.snapshot.iter().filter(|(_, mu)| *mu <= u).map(|(f, _)| *f);
            self.same(&self.resv.fences_unlocked(u), want.clone(), "fences_unlocked");
            // The iterator: the same list with usages, less fences that signalled successfully.
            let iterated: Vec<(Fence, Usage)> = self.resv.iter_unlocked(u).collect();
            let want_iter: Vec<(usize, Usage)> = m
                .snapshot
                .iter()
                .filter(|&&(f, mu)| mu <= u && m.fences[f].state != Some(Ok(())))
                .copied()
                .collect();
            let ok = iterated.len() == want_iter.len()
                && iterated
                    .iter()
                    .zip(&want_iter)
                    .all(|((f, fu), &(mf, mu))| *fu == mu && f.ptr_eq(&self.fences[mf].0));
            assert!(ok, "iter_unlocked({u:?}) gave {iterated:?}, model {want_iter:?}");
            let all_signalled = want.clone().all(|f| m.signalled(f));
            assert_eq!(
                self.resv.test_signaled_unlocked(u),
                all_signalled,
                "test_signaled_unlocked"
            );
            check_singleton(self, self.resv.get_singleton_unlocked(u), want.collect());
        }
    }
}

/// `get_singleton`: none for no fence, the fence itself for one, an array of all otherwise.
fn check_singleton(sut: &Sut, got: Option<Fence>, want: Vec<usize>) {
    match (got, want.as_slice()) {
        (None, []) => {}
        (Some(f), [one]) => assert!(f.ptr_eq(&sut.fences[*one].0), "singleton of one fence"),
        (Some(f), many) if many.len() > 1 => {
            // An array of all the fences: signalled exactly when they all are (single-threaded
            // here, so callbacks have run).
            let all = many.iter().all(|&w| sut.fences[w].0.is_signaled());
            assert_eq!(f.is_signaled(), all, "singleton array of {many:?}");
        }
        (got, want) => panic!("singleton {got:?} for fences {want:?}"),
    }
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    Config { cases, ..Config::default() }
}

prop_state_machine! {
    #![proptest_config(config())]
    #[test]
    fn resv_matches_model(sequential 1..40 => ResvTest);
}
