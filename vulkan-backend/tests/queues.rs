//! Queue families as rings on the real device: every family the device created queues on is
//! usable, rings report their family and what it runs, bad families and queues are typed
//! errors, and entities are checked against what their rings can run. On lavapipe (one family
//! of one queue) several rings share the queue; on a GPU each family's queues are exercised.

mod common;

use common::{assert_no_validation_errors, close, device, fill_job, wait_ok, WATCHDOG};
use gpusched::{Priority, SchedError, SchedulerConfig};
use gpusched_vulkan::{DeviceError, QueueCaps, VulkanDevice, VulkanJob};

#[test]
fn families_are_planned_with_the_main_family_first() {
    let Some(dev) = device() else { return };
    let families = dev.queue_families();
    assert!(!families.is_empty());
    assert_eq!(families[0].index, dev.queue_family());
    assert_eq!(families[0].queue_count, dev.queue_count());
    assert!(families[0].caps.contains(QueueCaps::COMPUTE), "{}", families[0]);
    // At most one family of each kind beyond the main one, each with queues.
    let async_compute = families[1..].iter().filter(|f| f.caps.compute).count();
    let copy = families[1..].iter().filter(|f| !f.caps.compute && !f.caps.graphics).count();
    assert!(async_compute <= 1 && copy <= 1, "{families:?}");
    assert_eq!(async_compute + copy, families.len() - 1, "{families:?}");
    assert!(families.iter().all(|f| f.queue_count > 0 && f.caps.transfer), "{families:?}");
    // Compute work: every compute family, dedicated ones first.
    let compute = dev.families_for(QueueCaps::COMPUTE);
    assert!(compute.iter().all(|f| f.caps.compute));
    assert_eq!(compute.len(), 1 + async_compute);
    assert_eq!(compute.last().map(|f| f.index), Some(dev.queue_family()));
    assert_eq!(dev.families_for(QueueCaps::TRANSFER).len(), families.len());
    drop(families);
    close(dev);
}

#[test]
fn a_ring_on_every_queue_of_every_family_runs_what_its_family_can() {
    let Some(dev) = device() else { return };
    let mut rings = Vec::new();
    for f in dev.queue_families() {
        // Two rings on the first queue (they share it), one on each other queue.
        for q in std::iter::once(0).chain(0..f.queue_count) {
            let name = format!("f{}q{q}r{}", f.index, rings.len());
            let ring = dev.ring_on(f.index, q, SchedulerConfig::new(&name)).unwrap();
            assert_eq!(ring.backend().family(), f);
            assert_eq!(ring.backend().queue_index(), q);
            assert_eq!(ring.backend().name(), name);
            rings.push(ring);
            if rings.len() >= gpusched_vulkan::MAX_RINGS / 2 {
                break;
            }
        }
    }
    let mut fences = Vec::new();
    let mut checks = Vec::new();
    for (i, ring) in rings.iter().enumerate() {
        let caps = ring.backend().family().caps;
        // An empty job runs anywhere.
        let any = VulkanDevice::entity(&[ring], Priority::Normal, QueueCaps::NONE).unwrap();
        fences.push(VulkanDevice::submit(&any, VulkanJob::empty()).unwrap());
        // A buffer fill runs on every family (transfer).
        let buf = dev.buffer(64 * 4).unwrap();
        let copy = VulkanDevice::entity(&[ring], Priority::Normal, QueueCaps::TRANSFER).unwrap();
        let b = buf.clone();
        let value = i as u32 + 1;
        let job = VulkanJob::new(move |ctx, cb| ctx.fill_u32(cb, &b, value)).writes(&buf);
        fences.push(VulkanDevice::submit(&copy, job).unwrap());
        let mut expect = value;
        if caps.compute {
            // Then a kernel on compute families, ordered after the fill by the buffer.
            let e = VulkanDevice::entity(&[ring], Priority::Normal, QueueCaps::COMPUTE).unwrap();
            fences.push(VulkanDevice::submit(&e, fill_job(&buf, 0.5, 64)).unwrap());
            expect = 0.5f32.to_bits();
        } else {
            let err =
                VulkanDevice::entity(&[ring], Priority::Normal, QueueCaps::COMPUTE).unwrap_err();
            assert!(matches!(err, DeviceError::RingLacksCaps { .. }), "{err}");
        }
        checks.push((buf, expect));
    }
    for f in &fences {
        wait_ok(f);
    }
    for (buf, expect) in &checks {
        assert_eq!(buf.read_u32(WATCHDOG).unwrap(), vec![*expect; 64]);
    }
    drop((fences, checks, rings));
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn an_entity_spans_compute_rings_of_every_compute_family() {
    let Some(dev) = device() else { return };
    let rings: Vec<_> = dev
        .families_for(QueueCaps::COMPUTE)
        .iter()
        .flat_map(|f| [0, f.queue_count - 1].map(|q| (f.index, q)))
        .enumerate()
        .map(|(i, (f, q))| dev.ring_on(f, q, SchedulerConfig::new(format!("c{i}"))).unwrap())
        .collect();
    let refs: Vec<_> = rings.iter().collect();
    let e = VulkanDevice::entity(&refs, Priority::High, QueueCaps::COMPUTE).unwrap();
    let bufs: Vec<_> = (0..8).map(|_| dev.buffer(256 * 4).unwrap()).collect();
    let fences: Vec<_> = bufs
        .iter()
        .enumerate()
        .map(|(i, b)| VulkanDevice::submit(&e, fill_job(b, i as f32, 256)).unwrap())
        .collect();
    for f in &fences {
        wait_ok(f);
    }
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(b.read_f32(WATCHDOG).unwrap(), vec![i as f32; 256]);
    }
    drop((fences, bufs, e));
    drop(refs);
    drop(rings);
    assert_no_validation_errors();
    close(dev);
}

#[test]
fn bad_families_queues_and_empty_entities_are_typed_errors() {
    let Some(dev) = device() else { return };
    let families = dev.queue_families();
    let unused = (0..64).find(|i| families.iter().all(|f| f.index != *i)).unwrap();
    let err = dev.ring_on(unused, 0, SchedulerConfig::new("x")).unwrap_err();
    assert_eq!(err, DeviceError::NoSuchFamily { family: unused });
    for f in &families {
        let err = dev.ring_on(f.index, f.queue_count, SchedulerConfig::new("x")).unwrap_err();
        assert_eq!(err, DeviceError::NoSuchQueue { index: f.queue_count, count: f.queue_count });
    }
    let err = dev.ring(dev.queue_count(), SchedulerConfig::new("x")).unwrap_err();
    assert!(matches!(err, DeviceError::NoSuchQueue { .. }), "{err}");
    let err = VulkanDevice::entity(&[], Priority::Normal, QueueCaps::COMPUTE).unwrap_err();
    assert_eq!(err, DeviceError::Config(SchedError::NoSchedulers));
    // A graphics need on a family without graphics (never the case on lavapipe).
    for f in families.iter().filter(|f| !f.caps.graphics) {
        let ring = dev.ring_on(f.index, 0, SchedulerConfig::new("nog")).unwrap();
        let err =
            VulkanDevice::entity(&[&ring], Priority::Normal, QueueCaps::GRAPHICS).unwrap_err();
        assert_eq!(
            err,
            DeviceError::RingLacksCaps {
                ring: "nog".into(),
                family: f.index,
                has: f.caps,
                needs: QueueCaps::GRAPHICS
            }
        );
    }
    drop(families);
    close(dev);
}
