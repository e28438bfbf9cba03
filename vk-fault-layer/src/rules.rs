//! The armed faults and per-command counters: the decision each intercepted call asks for.
//!
//! Rules:
//! - one rule at most per command; arming replaces it, [`Rules::disarm`] removes it;
//! - every intercepted call is counted (passed through or failed), failed ones also as
//!   injected;
//! - a call on a lost device that [fails on a lost device](FaultCall::fails_on_lost_device)
//!   fails with `VK_ERROR_DEVICE_LOST` before any rule is looked at (and does not advance the
//!   rule's trigger);
//! - [`Trigger::Nth`] fires once, on the Nth call after arming, then the command is disarmed;
//! - [`Trigger::Random`] draws from the command's own splitmix64 stream, seeded at arming
//!   from the seed and the command number, so that calls to other commands never shift it.

use ash::vk;

use crate::call::{Fault, FaultCall, Trigger};

/// What an intercepted call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Call down the chain.
    PassThrough,
    /// Return this code without calling down.
    Fail(vk::Result),
    /// Lose the call's device and return `VK_ERROR_DEVICE_LOST` without calling down.
    Lose,
}

/// The trigger of an armed rule, with its running state.
#[derive(Clone, Copy, Debug)]
enum Armed {
    /// Calls left before the failing one (the failing call is the one that finds 1).
    Nth { left: u64 },
    /// Fails a call when the next 53-bit draw, as a fraction of 1, is below `probability`.
    Random { probability: f64, state: u64 },
}

/// One command's rule and counters.
#[derive(Clone, Copy, Debug, Default)]
struct Site {
    rule: Option<(Armed, Fault)>,
    calls: u64,
    injected: u64,
}

/// Every command's rule and counters.
#[derive(Debug)]
pub(crate) struct Rules {
    sites: [Site; FaultCall::COUNT],
}

/// One step of splitmix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number
/// generators"): advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rules {
    /// No rule armed, every counter zero.
    pub(crate) const fn new() -> Self {
        const EMPTY: Site = Site { rule: None, calls: 0, injected: 0 };
        Self { sites: [EMPTY; FaultCall::COUNT] }
    }

    /// Arms `call` (already validated by [`crate::call::validate`]), replacing its rule.
    pub(crate) fn arm(&mut self, call: FaultCall, trigger: Trigger, fault: Fault) {
        let armed = match trigger {
            Trigger::Nth(n) => Armed::Nth { left: n },
            Trigger::Random { probability, seed } => {
                // Mixing in the command number gives each command its own stream.
                let mut state = seed ^ (u64::from(call.as_raw()) << 32);
                let state = splitmix64(&mut state);
                Armed::Random { probability, state }
            }
        };
        self.sites[call.index()].rule = Some((armed, fault));
    }

    /// Removes `call`'s rule (its counters stay).
    pub(crate) fn disarm(&mut self, call: FaultCall) {
        self.sites[call.index()].rule = None;
    }

    /// Removes every rule and zeroes every counter.
    pub(crate) fn reset(&mut self) {
        *self = Self::new();
    }

    /// Calls of `call` since the last reset.
    pub(crate) fn calls(&self, call: FaultCall) -> u64 {
        self.sites[call.index()].calls
    }

    /// Calls of `call` that the layer failed since the last reset.
    pub(crate) fn injected(&self, call: FaultCall) -> u64 {
        self.sites[call.index()].injected
    }

    /// Counts one call of `call` and decides its fate; `device_lost` says whether the call's
    /// device is lost.
    pub(crate) fn decide(&mut self, call: FaultCall, device_lost: bool) -> Decision {
        let site = &mut self.sites[call.index()];
        site.calls += 1;
        let decision = if device_lost && call.fails_on_lost_device() {
            Decision::Fail(vk::Result::ERROR_DEVICE_LOST)
        } else {
            Self::fire(site)
        };
        if decision != Decision::PassThrough {
            site.injected += 1;
        }
        decision
    }

    /// Advances `site`'s trigger by one call.
    fn fire(site: &mut Site) -> Decision {
        let Some((armed, fault)) = &mut site.rule else {
            return Decision::PassThrough;
        };
        let fires = match armed {
            Armed::Nth { left } => {
                *left -= 1;
                *left == 0
            }
            Armed::Random { probability, state } => {
                let unit = (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64;
                unit < *probability
            }
        };
        if !fires {
            return Decision::PassThrough;
        }
        let decision = match *fault {
            Fault::Fail(code) => Decision::Fail(code),
            Fault::LoseDevice => Decision::Lose,
        };
        if matches!(armed, Armed::Nth { .. }) {
            site.rule = None;
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OOM: Fault = Fault::Fail(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);

    fn failing(rules: &mut Rules, call: FaultCall, calls: usize) -> Vec<usize> {
        (0..calls).filter(|_| rules.decide(call, false) != Decision::PassThrough).collect()
    }

    #[test]
    fn nth_fires_once_at_n() {
        let mut rules = Rules::new();
        rules.arm(FaultCall::AllocateMemory, Trigger::Nth(3), OOM);
        let decisions: Vec<_> =
            (0..6).map(|_| rules.decide(FaultCall::AllocateMemory, false)).collect();
        let fail = Decision::Fail(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);
        let pass = Decision::PassThrough;
        assert_eq!(decisions, [pass, pass, fail, pass, pass, pass]);
        assert_eq!(rules.calls(FaultCall::AllocateMemory), 6);
        assert_eq!(rules.injected(FaultCall::AllocateMemory), 1);
    }

    #[test]
    fn random_is_reproducible_and_per_command() {
        let trigger = Trigger::Random { probability: 0.25, seed: 7 };
        let mut a = Rules::new();
        a.arm(FaultCall::AllocateMemory, trigger, OOM);
        let first = failing(&mut a, FaultCall::AllocateMemory, 200);
        let mut b = Rules::new();
        b.arm(FaultCall::AllocateMemory, trigger, OOM);
        b.arm(FaultCall::CreateBuffer, trigger, OOM);
        let mut second = Vec::new();
        for i in 0..200 {
            // Calls to another armed command in between do not shift the stream.
            b.decide(FaultCall::CreateBuffer, false);
            if b.decide(FaultCall::AllocateMemory, false) != Decision::PassThrough {
                second.push(i);
            }
        }
        assert_eq!(first, second);
        assert!((20..80).contains(&first.len()), "{} of 200 failed at p = 0.25", first.len());
        let mut c = Rules::new();
        c.arm(FaultCall::AllocateMemory, Trigger::Random { probability: 0.25, seed: 8 }, OOM);
        assert_ne!(failing(&mut c, FaultCall::AllocateMemory, 200), first);
    }

    #[test]
    fn probability_bounds() {
        let mut rules = Rules::new();
        let never = Trigger::Random { probability: 0.0, seed: 1 };
        let always = Trigger::Random { probability: 1.0, seed: 1 };
        rules.arm(FaultCall::CreateBuffer, never, OOM);
        assert!(failing(&mut rules, FaultCall::CreateBuffer, 1000).is_empty());
        rules.arm(FaultCall::CreateBuffer, always, OOM);
        assert_eq!(failing(&mut rules, FaultCall::CreateBuffer, 1000).len(), 1000);
    }

    #[test]
    fn lost_device_fails_only_commands_that_report_it() {
        let mut rules = Rules::new();
        rules.arm(FaultCall::QueueSubmit, Trigger::Nth(2), OOM);
        let lost = Decision::Fail(vk::Result::ERROR_DEVICE_LOST);
        assert_eq!(rules.decide(FaultCall::QueueSubmit, true), lost);
        assert_eq!(rules.decide(FaultCall::AllocateMemory, true), Decision::PassThrough);
        // The lost call did not advance the Nth trigger: the second healthy call fails.
        assert_eq!(rules.decide(FaultCall::QueueSubmit, false), Decision::PassThrough);
        let oom = Decision::Fail(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);
        assert_eq!(rules.decide(FaultCall::QueueSubmit, false), oom);
    }

    #[test]
    fn lose_action_and_reset() {
        let mut rules = Rules::new();
        rules.arm(FaultCall::WaitSemaphores, Trigger::Nth(1), Fault::LoseDevice);
        assert_eq!(rules.decide(FaultCall::WaitSemaphores, false), Decision::Lose);
        rules.arm(FaultCall::CreateSemaphore, Trigger::Nth(1), OOM);
        rules.reset();
        assert_eq!(rules.decide(FaultCall::CreateSemaphore, false), Decision::PassThrough);
        assert_eq!(rules.calls(FaultCall::WaitSemaphores), 0);
        assert_eq!(rules.injected(FaultCall::CreateSemaphore), 0);
    }
}
