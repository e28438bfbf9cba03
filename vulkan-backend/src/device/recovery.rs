//! Device loss and recreation: the recovery thread of the shared device behind a
//! [`VulkanDevice`](crate::VulkanDevice) handle (`DeviceShared`), its recreation of lost
//! generations, the graveyard of lost generations, and the device's teardown (amdgpu's GPU
//! reset and "VRAM lost" handling, `amdgpu_device_gpu_recover` / `amdgpu_vram_lost`, with the
//! kernel's rule that a reset never frees memory the hardware may still touch).
//!
//! # Loss
//! A core (one generation) is declared lost by whoever sees it first: the completion thread
//! (`VK_ERROR_DEVICE_LOST` from a wait or counter read), a `vkQueueSubmit`, the timeout
//! handler (a hang nothing can release: the hardware made no progress across two timeouts),
//! or fault injection. `DeviceCore::mark_lost` sets the flag, signals every in-flight
//! hardware fence of every ring `DeviceLost` (the scheduler retires those jobs with it) and
//! wakes the recovery thread with an allocation-free notify: it may run inside a signalling
//! section. Jobs already prepared on the lost core fail `DeviceLost` in `run_job` (their
//! command buffers belong to its pool); arming a job while the replacement is not ready fails
//! with `RecordError::DeviceLost`. So every fence ever handed out signals.
//!
//! # Recreation
//! The recovery thread (never in a signalling section) creates a new core on the same
//! physical device with the same configuration and kernels (built-in, then user kernels in
//! creation order, so `Kernel` handles stay valid), gives every ring a new `RingHw` on it (the
//! ring's `Scheduler`, entities, karma and bans are untouched, like the kernel's schedulers
//! across an amdgpu reset), then publishes the generation and wakes
//! [`wait_generation`](crate::VulkanDevice::wait_generation). Releasable injected hangs of the
//! lost core are released first. Buffers keep their generation: using one of a lost
//! generation is an error naming both generations (its memory is gone, "VRAM lost"); clients
//! re-create buffers and resubmit their jobs (recording closures are re-recordable). A failed
//! creation of the device and its kernels (`vkCreateDevice` refused, out of memory, a kernel
//! refused) is retried [`RECREATE_ATTEMPTS`] times in all, with exponential back-off from
//! [`RECREATE_BACKOFF`] (10, 20, 40, 80 ms); a ring that cannot be re-created on a device
//! that was (its semaphore or command pool refused) ends it at once; an adopted device
//! without a re-creation callback is not retried. Past that the device is gone for good:
//! every fence it handed out has signalled (`DeviceLost`, by the loss), `wait_generation`,
//! `buffer` and `ring` return `DeviceError::Gone`, arming returns `RecordError::DeviceGone`,
//! and jobs already armed end `DeviceLost` when they run.
//!
//! # The graveyard
//! A lost core may still be running work (a device whose loss was injected on lavapipe is; a really
//! lost one answers `VK_ERROR_DEVICE_LOST` quickly), and destroying a device with pending work
//! never returns on lavapipe. So old cores and rings go to a graveyard owned by the recovery
//! thread, which destroys a ring only once nothing else holds it and its semaphore has passed every
//! value submitted to it (or reports the loss), and a core only once nothing holds it: the last
//! drop of an old generation never lands in a signalling section. While a graveyard ring still has
//! work its hardware has not passed, `DeviceShared::lost_busy` says so: that
//! work shares the physical device with the new generation (lavapipe runs every `VkDevice`'s
//! dispatches on one thread pool), and the timeout handler does not blame a new job that may be
//! queued behind it (see the ring's docs, "Timeouts"). A device whose work never finishes (a real
//! shader hang on a driver without a watchdog) must never be destroyed: at teardown it is leaked,
//! with an error log, after waiting 5 s. A *simulated* wedge (`JobFault::HangForever`) is released
//! at teardown, so tests do not leak.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::adopt::AdoptError;
use super::DeviceCore;
/// Also reachable here, where the ring code imports it from.
pub(crate) use super::DeviceShared;
use crate::kernel::create_kernel;
use crate::ring::RingHw;
use crate::sync::{self, lock};

/// How long teardown waits for a lost generation's hardware before leaking it.
pub(crate) const WEDGE_TEARDOWN_WAIT: Duration = Duration::from_secs(5);

/// How many times the recovery thread tries to create the next generation before the device
/// is gone for good.
pub const RECREATE_ATTEMPTS: u32 = 5;

/// The wait after the first failed re-creation; it doubles after each further failure.
pub const RECREATE_BACKOFF: Duration = Duration::from_millis(10);

/// How often the recovery thread looks at the graveyard.
const REAP_INTERVAL: Duration = Duration::from_millis(20);

/// Wakes the recovery thread. `loss` is allocation-free (a mutex and a condvar notify).
#[derive(Debug, Default)]
pub(crate) struct Notify {
    state: Mutex<NotifyState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct NotifyState {
    loss: bool,
    stop: bool,
    /// The graveyard is not empty: look at it every [`REAP_INTERVAL`].
    graves: bool,
    /// The device's last handle went (see [`DeviceShared`]'s `Drop`): what the recovery
    /// thread destroys before it exits.
    teardown: Option<Teardown>,
}

/// What is left to destroy once a device's last handle went: its current core (a reference;
/// destroyed once it is the last one) and its graveyard.
struct Teardown {
    core: Arc<DeviceCore>,
    graveyard: Graveyard,
}

impl fmt::Debug for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Teardown")
            .field("generation", &self.core.generation)
            .field("graves", &(self.graveyard.rings.len() + self.graveyard.cores.len()))
            .finish()
    }
}

impl Teardown {
    /// Outside any signalling section: the graveyard as at teardown ([`reap_final`]), then,
    /// with `wait_core` (on the recovery thread), the core once nothing else holds it (a
    /// buffer or kernel handle the application still keeps keeps it alive: looked at every
    /// [`REAP_INTERVAL`]), so that its destruction (`vkDeviceWaitIdle`, `vkDestroyDevice`)
    /// never runs where the last handle happened to drop, which may be a fence callback.
    /// Without it (`VulkanDevice::close`, which found nothing else holding the device) the
    /// core is let go here.
    fn run(self, wait_core: bool) {
        let Teardown { mut core, mut graveyard } = self;
        reap_final(&mut graveyard, &core.name);
        if !wait_core {
            return;
        }
        loop {
            match Arc::try_unwrap(core) {
                Ok(c) => {
                    drop(c);
                    return;
                }
                Err(c) => core = c,
            }
            std::thread::sleep(REAP_INTERVAL);
        }
    }
}

impl Notify {
    /// A core was lost: recreate.
    pub(crate) fn loss(&self) {
        lock(&self.state).loss = true;
        self.cv.notify_all();
    }

    fn graves(&self, any: bool) {
        lock(&self.state).graves = any;
    }

    fn stop(&self) {
        lock(&self.state).stop = true;
        self.cv.notify_all();
    }
}

/// Lost generations waiting for their hardware to finish.
#[derive(Default)]
pub(super) struct Graveyard {
    rings: Vec<Arc<RingHw>>,
    cores: Vec<Arc<DeviceCore>>,
}

impl DeviceShared {
    /// For [`VulkanDevice::close`](crate::VulkanDevice::close), once no other handle or ring exists: releases every
    /// injected hang of the lost generations (simulated wedges included: this is teardown),
    /// destroys what the graveyard may destroy, and says whether only this object's
    /// references remain (the current core held by `current` alone, the graveyard empty). A
    /// lost generation stays alive while a buffer of it does, or while its hardware runs.
    pub(crate) fn quiescent(&self) -> bool {
        let core = self.core();
        // `core` + `current`.
        if Arc::strong_count(&core) != 2 {
            return false;
        }
        let mut g = lock(&self.graveyard);
        for c in &g.cores {
            c.release_injected(true);
        }
        bury(&mut g.rings);
        g.cores.retain(|c| Arc::strong_count(c) > 1);
        g.rings.is_empty() && g.cores.is_empty()
    }

    /// Creates the next generation (recovery thread, outside any signalling section).
    fn recreate(&self) {
        let t0 = Instant::now();
        let old = self.core();
        // Releasable injected hangs first: the lost core's queue then drains by itself.
        old.release_injected(false);
        // An adopted device without a re-creation callback has no next generation: it is
        // gone at once (retrying could not change that).
        if self.adoption.as_ref().is_some_and(|a| a.recreate.is_none()) {
            self.give_up(0, AdoptError::NoRecreate.to_string());
            return;
        }
        let user = lock(&self.user_kernels);
        let mut attempt = 0;
        let new = loop {
            attempt += 1;
            // An adopted device's next generation comes from its engine (`adopt.rs`).
            let made = self.next_core().map_err(|e| e.to_string()).and_then(|core| {
                let mut k = lock(&core.kernels);
                for (spirv, bindings, push) in user.iter() {
                    k.push(
                        create_kernel(&core.device, spirv, *bindings, *push)
                            .map_err(|e| e.to_string())?,
                    );
                }
                drop(k);
                Ok(core)
            });
            match made {
                Ok(core) => break core,
                Err(e) if attempt < RECREATE_ATTEMPTS => {
                    let backoff = RECREATE_BACKOFF * (1 << (attempt - 1));
                    tracing::warn!(target: "gpusched_vulkan", device = %self.name, attempt, %e, ?backoff, "device recreation failed, retrying");
                    std::thread::sleep(backoff);
                }
                Err(e) => {
                    self.give_up(attempt, e);
                    return;
                }
            }
        };
        // The old core's calibration (its queue may still be running work).
        new.faults.inherit_calibration(&old.faults);
        let slots = lock(&self.slots);
        let mut fresh = Vec::with_capacity(slots.len());
        for slot in slots.iter().filter_map(Weak::upgrade) {
            match RingHw::new(&new, slot.queue, &slot.name, slot.credit_limit, slot.flags.clone()) {
                Ok(hw) => fresh.push((slot, hw)),
                Err(e) => {
                    self.give_up(attempt, format!("ring recreation: {e}"));
                    return;
                }
            }
        }
        {
            let mut rings = lock(&new.comp.rings);
            rings.extend(fresh.iter().map(|(_, hw)| Arc::downgrade(hw)));
        }
        // Before any ring moves to the new core (so before any of its jobs can time out):
        // the old rings may still run work. The reap below refines it.
        self.lost_busy.store(true, Ordering::SeqCst);
        let mut graves = Vec::with_capacity(fresh.len());
        for (slot, hw) in fresh {
            graves.push(slot.swap(hw));
        }
        let generation = new.generation;
        *lock(&self.current) = new;
        drop(slots);
        drop(user);
        {
            let mut g = lock(&self.graveyard);
            g.rings.extend(graves);
            g.cores.push(old);
            self.notify.graves(true);
        }
        {
            let _g = lock(&self.gen_lock);
            self.generation.store(generation, Ordering::SeqCst);
            self.generations.fetch_add(1, Ordering::SeqCst);
        }
        self.gen_cv.notify_all();
        tracing::warn!(target: "gpusched_vulkan", device = %self.name, generation, elapsed = ?t0.elapsed(), "device recreated");
    }

    /// Re-creation failed for good after `attempts` tries (the last with `last`): the device
    /// is gone. The lost core stays current (every fence it handed out was failed by the
    /// loss; jobs armed on it fail `DeviceLost` when they run); later calls report
    /// [`DeviceError::Gone`](crate::DeviceError::Gone), and `wait_generation` wakes to say so.
    fn give_up(&self, attempts: u32, last: String) {
        tracing::error!(target: "gpusched_vulkan", device = %self.name, attempts, %last, "device recreation failed: the device is gone");
        let _ = self.gone.set((attempts, last));
        self.dead.store(true, Ordering::SeqCst);
        drop(lock(&self.gen_lock));
        self.gen_cv.notify_all();
    }

    /// Destroys what the graveyard may destroy now.
    fn reap(&self) {
        let mut g = lock(&self.graveyard);
        bury(&mut g.rings);
        self.lost_busy.store(g.rings.iter().any(|r| !r.passed()), Ordering::SeqCst);
        g.cores.retain(|c| Arc::strong_count(c) > 1);
        self.notify.graves(!g.rings.is_empty() || !g.cores.is_empty());
    }
}

/// Teardown of a graveyard: releases every injected hang of the lost generations, waits
/// (bounded) for their hardware, destroys what finished and leaks what did not. Waits: never
/// in a signalling section (the recovery thread, or `VulkanDevice::close`'s thread).
fn reap_final(g: &mut Graveyard, name: &str) {
    for c in &g.cores {
        c.release_injected(true);
    }
    let deadline = Instant::now() + WEDGE_TEARDOWN_WAIT;
    for r in g.rings.drain(..) {
        while !r.passed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if r.passed() {
            drop(r);
        } else {
            diag!(error, target: "gpusched_vulkan", device = %name, generation = r.core.generation, "a lost device generation never finished its work: leaking it (destroying it would never return)");
            std::mem::forget(r);
        }
    }
    g.cores.clear();
}

/// Destroys the graveyard's rings whose hardware passed everything submitted and that
/// nothing else holds. `Arc::try_unwrap` takes the last reference atomically: a weak
/// reference upgraded at the same moment (a hardware fence's `signaled`, `mark_lost`) either
/// keeps the ring here for the next look or fails to upgrade, so such a temporary reference
/// never becomes the last one (whose drop would run `RingHw::drop` where it is let go,
/// possibly inside a signalling section). Allocation-free.
fn bury(rings: &mut Vec<Arc<RingHw>>) {
    let mut i = 0;
    while i < rings.len() {
        if Arc::strong_count(&rings[i]) > 1 || !rings[i].passed() {
            i += 1;
            continue;
        }
        let r = rings.swap_remove(i);
        match Arc::try_unwrap(r) {
            // Looks at index `i` again: the former last entry moved there.
            Ok(hw) => drop(hw),
            Err(r) => {
                // Upgraded meanwhile: back to its place (room was just freed).
                rings.push(r);
                let last = rings.len() - 1;
                rings.swap(i, last);
                i += 1;
            }
        }
    }
}

impl DeviceShared {
    /// Stops and joins the recovery thread (unless called on it). Afterwards nothing but
    /// the handles holds this object: [`VulkanDevice::close`](crate::VulkanDevice::close) calls it so that the last drop
    /// happens on its own thread (the recovery thread briefly holds a reference while it
    /// works).
    pub(crate) fn stop_recovery(&self) {
        self.notify.stop();
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            if Some(&std::thread::current().id()) != self.thread_id.get() {
                let _ = h.join();
            }
        }
    }
}

/// The last handle of a device may go in a fence callback on a ring's completion thread (the
/// application dropped its handles while a job ran: the job's completion frees the last
/// reference), that is inside a signalling section, where nothing may wait. There the drop
/// neither joins the recovery thread nor destroys anything: it hands the current core (a
/// reference) and the graveyard to the recovery thread ([`Teardown`]), which destroys them
/// and exits, detached (allocation-free). So does a drop on the recovery thread itself, whose
/// loop runs the teardown once the drop returned. Anywhere else (the application's thread,
/// [`VulkanDevice::close`](crate::VulkanDevice::close)) the teardown happens here,
/// synchronously, so a device dropped before the process exits is destroyed before it does.
impl Drop for DeviceShared {
    fn drop(&mut self) {
        let handle = sync::get_mut(&mut self.thread).take();
        let on_recovery = Some(&std::thread::current().id()) == self.thread_id.get();
        let graveyard = std::mem::take(sync::get_mut(&mut self.graveyard));
        let core = sync::get_mut(&mut self.current).clone();
        let teardown = Teardown { core, graveyard };
        // On the recovery thread itself (its `drop(sh)` was the last reference) the core is
        // still referenced by `self.current` until this returns: its loop runs the teardown
        // after that, like a completion thread's.
        if handle.is_some() && (on_recovery || crate::ring::on_completion_thread()) {
            {
                let mut st = lock(&self.notify.state);
                st.teardown = Some(teardown);
                st.stop = true;
            }
            self.notify.cv.notify_all();
            // Detached: it exits once the teardown is done.
            drop(handle);
        } else {
            gpusched::fence::lockdep::might_wait();
            self.notify.stop();
            if let Some(h) = handle {
                let _ = h.join();
            }
            // The core is destroyed with its last reference: this one unless a buffer or
            // kernel handle still holds it.
            teardown.run(false);
        }
    }
}

pub(super) fn recovery_thread(shared: Weak<DeviceShared>, notify: Arc<Notify>) {
    loop {
        {
            let mut st = lock(&notify.state);
            if !st.loss && !st.stop {
                st = if st.graves {
                    sync::wait_timeout(&notify.cv, st, REAP_INTERVAL)
                } else {
                    sync::wait(&notify.cv, st)
                };
            }
            if st.stop {
                let teardown = st.teardown.take();
                drop(st);
                if let Some(t) = teardown {
                    t.run(true);
                }
                return;
            }
            st.loss = false;
        }
        // Gone: its drop is running and sets `stop` (with a teardown for this thread, or
        // joining it): look again.
        let Some(sh) = shared.upgrade() else { continue };
        if !sh.dead.load(Ordering::SeqCst) && sh.core().is_lost() {
            sh.recreate();
        }
        sh.reap();
        // May be the last reference: the drop then runs here and does not join this thread.
        drop(sh);
    }
}
