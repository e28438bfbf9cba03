//! Compute results through the scheduler, checked on the host: dependency chains across two
//! rings with shared buffers, implicit synchronisation across entities, many pushing threads.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{
    assert_no_validation_errors, close, device, fill_job, push, slow_fill_job,
    wait_ended_or_cancelled, wait_ok, WATCHDOG,
};
use gpusched::{Entity, Priority, SchedulerConfig};
use gpusched_vulkan::{Buffer, Builtin, VulkanDevice, VulkanJob};

const N: u32 = 65_536;

fn saxpy_job(a: f32, x: &Buffer, y: &Buffer, n: u32) -> VulkanJob {
    let (xb, yb) = (x.clone(), y.clone());
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Saxpy);
        ctx.dispatch(
            cb,
            &k,
            &[&xb, &yb],
            &push(&[a.to_ne_bytes(), n.to_ne_bytes()]),
            [n.div_ceil(64), 1, 1],
        )
    })
    .reads(x)
    .writes(y)
}

fn reduce_job(src: &Buffer, dst: &Buffer, n: u32) -> VulkanJob {
    let (s, d) = (src.clone(), dst.clone());
    VulkanJob::new(move |ctx, cb| {
        let k = ctx.builtin(Builtin::Reduce);
        ctx.dispatch(cb, &k, &[&s, &d], &n.to_ne_bytes(), [n.div_ceil(256), 1, 1])
    })
    .reads(src)
    .writes(dst)
}

/// Waits until the completion thread has seen the ring's semaphore reach `value` (a fence may
/// be signalled earlier by a poll of the semaphore) and checks nothing more was submitted.
fn settle(ring: &gpusched::Scheduler<gpusched_vulkan::VulkanRing>, value: u64) {
    let deadline = std::time::Instant::now() + WATCHDOG;
    while ring.backend().completed() < value {
        assert!(std::time::Instant::now() < deadline, "completion thread never caught up");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(ring.backend().completed(), value);
    assert_eq!(ring.backend().submitted(), value);
}

#[test]
fn dependency_chain_across_two_rings() {
    let Some(dev) = device() else { return };
    let r0 = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let r1 = dev.ring(0, SchedulerConfig::new("r1")).unwrap();
    let e0 = Entity::new(&[&r0], Priority::Normal).unwrap();
    let e1 = Entity::new(&[&r1], Priority::Normal).unwrap();
    let a = dev.buffer(u64::from(N) * 4).unwrap();
    let b = dev.buffer(u64::from(N) * 4).unwrap();
    let p = dev.buffer(256 * 4).unwrap();
    let c = dev.buffer(4).unwrap();
    // A = 1 (ring 0), B = 2 (ring 1), B = 3A + B (ring 0), P = partial sums of B (ring 1),
    // C = sum of P (ring 0). Only implicit dependencies order them.
    VulkanDevice::submit(&e0, fill_job(&a, 1.0, N)).unwrap();
    VulkanDevice::submit(&e1, fill_job(&b, 2.0, N)).unwrap();
    VulkanDevice::submit(&e0, saxpy_job(3.0, &a, &b, N)).unwrap();
    VulkanDevice::submit(&e1, reduce_job(&b, &p, N)).unwrap();
    let last = VulkanDevice::submit(&e0, reduce_job(&p, &c, 256)).unwrap();
    wait_ok(&last);
    assert!(b.read_f32(WATCHDOG).unwrap().iter().all(|v| *v == 5.0), "B = 3 * 1 + 2");
    let parts = p.read_f32(WATCHDOG).unwrap();
    assert!(parts.iter().all(|v| *v == 5.0 * 256.0), "partials {parts:?}");
    assert_eq!(c.read_f32(WATCHDOG).unwrap(), vec![5.0 * N as f32]);
    assert_eq!(r0.stats().finished_ok, 3);
    assert_eq!(r1.stats().finished_ok, 2);
    settle(&r0, 3);
    settle(&r1, 2);
    assert_no_validation_errors();
    drop((e0, e1, r0, r1, a, b, p, c, last));
    close(dev);
}

#[test]
fn implicit_sync_write_then_reads_then_write() {
    let Some(dev) = device() else { return };
    let r0 = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let r1 = dev.ring(0, SchedulerConfig::new("r1")).unwrap();
    let n = 4096u32;
    let x = dev.buffer(u64::from(n) * 4).unwrap();
    x.write_f32(&vec![0.0; n as usize], WATCHDOG).unwrap();
    // The first writer burns time before writing, so a reader that did not wait would copy
    // zeros; the last writer would overwrite X before slow readers copied it.
    let writer = Entity::new(&[&r0], Priority::Normal).unwrap();
    let xb = x.clone();
    let slow_fill = VulkanJob::new(move |ctx, cb| {
        ctx.busy(cb, 8, 2048)?;
        ctx.barrier(cb);
        let k = ctx.builtin(Builtin::Fill);
        ctx.dispatch(
            cb,
            &k,
            &[&xb],
            &push(&[1.0f32.to_ne_bytes(), n.to_ne_bytes()]),
            [n / 64, 1, 1],
        )
    })
    .writes(&x);
    VulkanDevice::submit(&writer, slow_fill).unwrap();
    let mut outs = Vec::new();
    let mut readers = Vec::new();
    for i in 0..4 {
        let ring = if i % 2 == 0 { &r1 } else { &r0 };
        let e = Entity::new(&[ring], Priority::Normal).unwrap();
        let y = dev.buffer(u64::from(n) * 4).unwrap();
        y.write_f32(&vec![0.0; n as usize], WATCHDOG).unwrap();
        VulkanDevice::submit(&e, saxpy_job(1.0, &x, &y, n)).unwrap();
        outs.push(y);
        readers.push(e);
    }
    let last_writer = Entity::new(&[&r1], Priority::Normal).unwrap();
    let done = VulkanDevice::submit(&last_writer, fill_job(&x, 7.0, n)).unwrap();
    wait_ok(&done);
    for y in &outs {
        let v = y.read_f32(WATCHDOG).unwrap();
        assert!(v.iter().all(|v| *v == 1.0), "a reader saw {:?}", &v[..4]);
    }
    assert!(x.read_f32(WATCHDOG).unwrap().iter().all(|v| *v == 7.0));
    assert_no_validation_errors();
    drop((writer, readers, last_writer, r0, r1, x, outs, done));
    close(dev);
}

#[test]
fn many_threads_pushing_at_once() {
    let Some(dev) = device() else { return };
    let rings = [
        dev.ring(0, SchedulerConfig::new("r0").credit_limit(8)).unwrap(),
        dev.ring(0, SchedulerConfig::new("r1").credit_limit(8)).unwrap(),
    ];
    let n = 1024u32;
    let ones = dev.buffer(u64::from(n) * 4).unwrap();
    {
        let e = Entity::new(&[&rings[0]], Priority::Normal).unwrap();
        VulkanDevice::submit(&e, fill_job(&ones, 1.0, n)).unwrap();
    }
    const THREADS: usize = 4;
    const JOBS: usize = 40;
    let fences = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (dev, rings, ones, fences) =
                (dev.clone(), rings.clone(), ones.clone(), fences.clone());
            std::thread::spawn(move || {
                let e = Entity::new(&[&rings[0], &rings[1]], Priority::Normal).unwrap();
                let acc = dev.buffer(u64::from(n) * 4).unwrap();
                VulkanDevice::submit(&e, fill_job(&acc, t as f32, n)).unwrap();
                let mut last = None;
                for _ in 0..JOBS {
                    last = Some(VulkanDevice::submit(&e, saxpy_job(1.0, &ones, &acc, n)).unwrap());
                    fences.fetch_add(1, Ordering::Relaxed);
                }
                wait_ok(&last.unwrap());
                let v = acc.read_f32(WATCHDOG).unwrap();
                assert!(
                    v.iter().all(|x| *x == t as f32 + JOBS as f32),
                    "thread {t}: {:?}",
                    &v[..4]
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(fences.load(Ordering::Relaxed), (THREADS * JOBS) as u64);
    let total: u64 = rings.iter().map(|r| r.stats().finished_ok).sum();
    assert_eq!(total, (THREADS * (JOBS + 1) + 1) as u64);
    assert_no_validation_errors();
    drop((rings, ones));
    close(dev);
}

#[test]
fn two_devices_one_entity_load_balances() {
    let Some(d0) = device() else { return };
    let d1 = d0.sibling().unwrap();
    assert_ne!(d0.generation(), d1.generation());
    let r0 = d0.ring(0, SchedulerConfig::new("dev0")).unwrap();
    let r1 = d1.ring(0, SchedulerConfig::new("dev1")).unwrap();
    let seen = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let gens = [d0.generation(), d1.generation()];
    let job = |seen: &Arc<[AtomicU64; 2]>| {
        let seen = seen.clone();
        VulkanJob::new(move |ctx, cb| {
            let i = usize::from(ctx.generation() == gens[1]);
            seen[i].fetch_add(1, Ordering::Relaxed);
            ctx.busy(cb, 4, 256)
        })
    };
    // A busy entity holds device 0; an idle entity then balances to device 1.
    let a = Entity::new(&[&r0, &r1], Priority::Normal).unwrap();
    let b = Entity::new(&[&r0, &r1], Priority::Normal).unwrap();
    let fa: Vec<_> = (0..3).map(|_| VulkanDevice::submit(&a, job(&seen)).unwrap()).collect();
    let fb: Vec<_> = (0..3).map(|_| VulkanDevice::submit(&b, job(&seen)).unwrap()).collect();
    for f in fa.iter().chain(&fb) {
        wait_ok(f);
    }
    assert_eq!(seen[0].load(Ordering::Relaxed), 3, "entity a recorded on device 0");
    assert_eq!(seen[1].load(Ordering::Relaxed), 3, "entity b recorded on device 1");
    assert_eq!(r0.stats().finished_ok, 3);
    assert_eq!(r1.stats().finished_ok, 3);
    assert_no_validation_errors();
    drop((a, b, fa, fb, r0, r1));
    close(d1);
    close(d0);
}

#[test]
fn hardware_fence_waits_and_polls_the_semaphore() {
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let f = VulkanDevice::submit(&e, VulkanJob::new(|ctx, cb| ctx.busy(cb, 8, 4096))).unwrap();
    // The hardware fence of the running job: waiting on it blocks in vkWaitSemaphores.
    let hw = ring.pending_hw_fences();
    for h in &hw {
        h.wait_timeout(WATCHDOG).unwrap();
        assert!(h.is_signaled());
        assert!(h.seqno() >= 1 && h.seqno() <= ring.backend().submitted());
    }
    wait_ok(&f);
    settle(&ring, 1);
    assert_no_validation_errors();
    drop((e, ring, f, hw));
    close(dev);
}

/// Dropping the last handle of a ring tears it down (`drm_sched_fini`): a job still on the
/// ring ends `Cancelled` (the hardware still runs it; its resources are released once it
/// finished), one that finished first ends `Ok`.

#[test]
fn dropping_handles_with_work_outstanding_leaks_nothing() {
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("r0")).unwrap();
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let buf = dev.buffer(4096).unwrap();
    let done = VulkanDevice::submit(&e, slow_fill_job(&buf)).unwrap();
    // Every handle but the device goes while the job runs: the entity's slot, the ring and the
    // buffer must all be released once it finishes, so that `close` can destroy the device.
    drop((e, ring, buf));
    wait_ended_or_cancelled(&done);
    drop(done);
    assert_no_validation_errors();
    close(dev);
}

/// Runs a chain over two rings (fill, SAXPY, reduce, with several jobs ready at once) with
/// batching set as asked, and returns the results read back on the host.
fn chain_results(dev: &VulkanDevice, batching: bool) -> (Vec<f32>, Vec<f32>, u64) {
    let r0 = dev.ring(0, SchedulerConfig::new("b0")).unwrap();
    let r1 = dev.ring(0, SchedulerConfig::new("b1")).unwrap();
    r0.backend().set_batching(batching);
    r1.backend().set_batching(batching);
    assert_eq!(r0.backend().batching(), batching);
    let e0 = Entity::new(&[&r0], Priority::Normal).unwrap();
    let e1 = Entity::new(&[&r1], Priority::High).unwrap();
    let n = 8192u32;
    let a = dev.buffer(u64::from(n) * 4).unwrap();
    let b = dev.buffer(u64::from(n) * 4).unwrap();
    let p = dev.buffer(256 * 4).unwrap();
    // A gate holds `e0`'s queue: when it opens, every queued job of `e0` is ready at once and
    // the scheduler hands them over together (one batch).
    let gate = gpusched::fence::FenceContext::new("gate").next();
    let gated = e0.job(VulkanJob::empty()).dependency(gate.0.clone()).arm().unwrap().push();
    VulkanDevice::submit(&e0, fill_job(&a, 1.0, n)).unwrap();
    VulkanDevice::submit(&e0, fill_job(&b, 0.5, n)).unwrap();
    let mut last = None;
    for i in 0..12 {
        last = Some(VulkanDevice::submit(&e0, saxpy_job(1.0 + i as f32, &a, &b, n)).unwrap());
    }
    let done = VulkanDevice::submit(&e0, reduce_job(&b, &p, n)).unwrap();
    // `e1` on the other ring reads B after the chain (an implicit cross-ring dependency).
    let q = dev.buffer(256 * 4).unwrap();
    let other = VulkanDevice::submit(&e1, reduce_job(&b, &q, n)).unwrap();
    gate.1.signal();
    wait_ok(&gated);
    wait_ok(&other);
    let mut q_partials = q.read_f32(WATCHDOG).unwrap();
    q_partials.truncate((n / 256) as usize);
    assert!(q_partials.iter().all(|v| *v == 78.5 * 256.0), "{:?}", &q_partials[..4]);
    wait_ok(&done);
    wait_ok(&last.unwrap());
    let mut partials = p.read_f32(WATCHDOG).unwrap();
    partials.truncate((n / 256) as usize);
    let submits = r0.backend().submits() + r1.backend().submits();
    let out = (b.read_f32(WATCHDOG).unwrap(), partials, submits);
    drop((e0, e1, r0, r1, a, b, p, q, done));
    out
}

#[test]
fn batching_on_and_off_give_the_same_results() {
    let Some(dev) = device() else { return };
    let off = chain_results(&dev, false);
    let on = chain_results(&dev, true);
    // B = 0.5 + sum_{i<12} (1 + i) * 1 = 0.5 + 78; partial sums of 32 elements each.
    assert!(off.0.iter().all(|v| *v == 78.5), "batching off: {:?}", &off.0[..4]);
    assert!(off.1.iter().all(|v| *v == 78.5 * 256.0), "partials {:?}", &off.1[..4]);
    assert_eq!((&on.0, &on.1), (&off.0, &off.1));
    // 17 jobs: one submit each without batching; with it, the 16 jobs released by the gate
    // go to the hardware in one submit (plus the other ring's reader).
    assert_eq!(off.2, 17);
    assert!(on.2 <= 3, "batching made {} submits for 17 jobs", on.2);
    eprintln!("submits for 17 jobs: batching off {}, on {}", off.2, on.2);
    assert_no_validation_errors();
    close(dev);
}

/// A batch larger than one `vkQueueSubmit` carries (32 jobs) goes out in several calls, in
/// order: the chain's result is right.
#[test]
fn a_batch_of_more_than_32_jobs_is_submitted_in_order() {
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("big").credit_limit(64)).unwrap();
    assert!(ring.backend().batching());
    let e = Entity::new(&[&ring], Priority::Normal).unwrap();
    let n = 4096u32;
    let a = dev.buffer(u64::from(n) * 4).unwrap();
    let b = dev.buffer(u64::from(n) * 4).unwrap();
    let gate = gpusched::fence::FenceContext::new("gate").next();
    let gated = e.job(VulkanJob::empty()).dependency(gate.0.clone()).arm().unwrap().push();
    VulkanDevice::submit(&e, fill_job(&a, 1.0, n)).unwrap();
    VulkanDevice::submit(&e, fill_job(&b, 0.5, n)).unwrap();
    let mut last = None;
    for _ in 0..40 {
        last = Some(VulkanDevice::submit(&e, saxpy_job(1.0, &a, &b, n)).unwrap());
    }
    gate.1.signal();
    wait_ok(&gated);
    wait_ok(&last.unwrap());
    let out = b.read_f32(WATCHDOG).unwrap();
    assert!(out.iter().all(|v| *v == 40.5), "{:?}", &out[..4]);
    // 43 jobs, released together: at least two calls for the batch (32 a call), far fewer
    // than one per job.
    let submits = ring.backend().submits();
    assert!((2..43).contains(&submits), "{submits} submits for 43 jobs");
    assert_eq!(ring.backend().completed(), 43);
    drop((e, ring, a, b));
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn explicit_dependency_orders_and_propagates_errors() {
    use gpusched::fence::{FenceContext, FenceError};
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("after")).unwrap();
    let client = Entity::new(&[&ring], Priority::Normal).unwrap();
    let (a, b) = (dev.buffer(u64::from(N) * 4).unwrap(), dev.buffer(u64::from(N) * 4).unwrap());
    let host = FenceContext::new("host producer");

    // The fill of `a` waits for a host fence: no buffer links the two.
    let (gate, open) = host.next();
    let filled = VulkanDevice::submit(&client, fill_job(&a, 3.0, N).after(&gate)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!filled.is_signaled(), "ran before its explicit dependency signalled");
    assert_eq!(ring.stats().jobs_run, 0);
    open.signal();
    wait_ok(&filled);
    assert!(a.read_f32(WATCHDOG).unwrap().iter().all(|v| *v == 3.0));

    // A failed explicit dependency fails the job with its error; the job never runs.
    let (gate, fail) = host.next();
    let skipped = VulkanDevice::submit(&client, fill_job(&b, 5.0, N).after(&gate)).unwrap();
    fail.signal_error(FenceError::Killed);
    assert_eq!(
        skipped.wait_timeout(WATCHDOG),
        Err(gpusched::fence::WaitError::Failed(FenceError::Killed))
    );
    assert_eq!(ring.stats().jobs_run, 1, "only the first fill ran");

    drop((client, ring, a, b));
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn arm_publishes_the_fence_before_push_and_drop_cancels() {
    use gpusched::fence::FenceError;
    let Some(dev) = device() else { return };
    let ring = dev.ring(0, SchedulerConfig::new("arm")).unwrap();
    let client = Entity::new(&[&ring], Priority::Normal).unwrap();
    // Another client: an entity's own jobs must be pushed in the order they were armed.
    let other = Entity::new(&[&ring], Priority::Normal).unwrap();
    let x = dev.buffer(u64::from(N) * 4).unwrap();
    let y = dev.buffer(u64::from(N) * 4).unwrap();

    // Armed, not pushed: its finished fence is already in `y`'s reservation object, so
    // another client's reader submitted now orders after it; callbacks added before the push
    // see both fences.
    let armed = VulkanDevice::arm(&client, fill_job(&y, 2.0, N)).unwrap();
    let order = Arc::new(AtomicU64::new(0));
    let o = order.clone();
    armed
        .scheduled()
        .add_callback(move |_| {
            o.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).ok();
        })
        .unwrap();
    let o = order.clone();
    armed
        .finished()
        .add_callback(move |_| {
            o.compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst).ok();
        })
        .unwrap();
    VulkanDevice::submit(&other, fill_job(&x, 1.0, N)).unwrap();
    let reader = VulkanDevice::submit(&other, saxpy_job(1.0, &y, &x, N)).unwrap();
    let filled = armed.push();
    wait_ok(&reader);
    assert_eq!(order.load(Ordering::SeqCst), 2, "scheduled, then finished");
    assert!(filled.is_signaled());
    assert!(x.read_f32(WATCHDOG).unwrap().iter().all(|v| *v == 3.0), "x = 1 + y after y = 2");

    // Dropped instead of pushed: both fences signal Cancelled, and a job that reads the
    // buffer after it ends with that error instead of reading what was never written.
    let armed = VulkanDevice::arm(&client, fill_job(&y, 7.0, N)).unwrap();
    let (scheduled, finished) = (armed.scheduled().clone(), armed.finished().clone());
    let reader = VulkanDevice::submit(&other, saxpy_job(1.0, &y, &x, N)).unwrap();
    drop(armed);
    // Cancelled in the entity's timeline order, by whichever thread pumps the scheduler (the
    // ring's completion thread may be pumping right now): wait for it.
    assert_eq!(
        finished.wait_timeout(WATCHDOG),
        Err(gpusched::fence::WaitError::Failed(FenceError::Cancelled))
    );
    assert!(scheduled.is_signaled());
    assert_eq!(
        reader.wait_timeout(WATCHDOG),
        Err(gpusched::fence::WaitError::Failed(FenceError::Cancelled))
    );
    assert_eq!(
        x.read_f32(WATCHDOG),
        Err(gpusched_vulkan::HostAccessError::Wait(gpusched::fence::WaitError::Failed(
            FenceError::Cancelled
        ))),
        "a read of x reports its failed writer"
    );

    drop((client, other, ring, x, y));
    assert_no_validation_errors();
    close(dev);
}
