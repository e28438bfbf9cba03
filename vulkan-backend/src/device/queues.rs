//! Queue families as rings: what a family can run ([`QueueCaps`]), which families a device
//! creates queues on ([`plan_queues`]: a pure function over the families' flags and counts,
//! so that the several-family path is tested without a GPU) and the check that every ring of
//! an entity can run the entity's work ([`check_ring_caps`]).
//!
//! A device creates one `VkQueue` per queue of each family it uses, and a ring runs on one of
//! them. The families, by capability, each the first of its kind the driver lists:
//! - the *main* family: graphics and compute (else the first compute family): the family of
//!   [`VulkanDevice::ring`](crate::VulkanDevice::ring), always first;
//! - an *async compute* family: compute without graphics;
//! - a *transfer* family: transfer without graphics or compute (a copy engine).
//!
//! Families of other kinds (video, optical flow) are not used. Graphics and compute families
//! can always run transfer commands, whether or not the driver reports the transfer bit.

use std::fmt;
use std::ops::BitOr;

use ash::vk;

use crate::error::DeviceError;

/// What a queue family can run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueueCaps {
    /// Graphics commands (draws, render passes).
    pub graphics: bool,
    /// Compute dispatches (every built-in kernel).
    pub compute: bool,
    /// Transfer commands (copies and fills).
    pub transfer: bool,
}

impl QueueCaps {
    /// Nothing: every ring can run work that needs no capability (empty jobs, barriers).
    pub const NONE: QueueCaps = QueueCaps { graphics: false, compute: false, transfer: false };
    /// Graphics (with transfer, which every graphics family can run).
    pub const GRAPHICS: QueueCaps = QueueCaps { graphics: true, compute: false, transfer: true };
    /// Compute (with transfer, which every compute family can run).
    pub const COMPUTE: QueueCaps = QueueCaps { graphics: false, compute: true, transfer: true };
    /// Transfer only.
    pub const TRANSFER: QueueCaps = QueueCaps { graphics: false, compute: false, transfer: true };

    /// The capabilities of a family with `flags` (graphics and compute imply transfer, as
    /// the Vulkan specification says of such families).
    pub fn from_flags(flags: vk::QueueFlags) -> QueueCaps {
        let graphics = flags.contains(vk::QueueFlags::GRAPHICS);
        let compute = flags.contains(vk::QueueFlags::COMPUTE);
        QueueCaps {
            graphics,
            compute,
            transfer: graphics || compute || flags.contains(vk::QueueFlags::TRANSFER),
        }
    }

    /// Whether these capabilities include all of `needs`.
    pub fn contains(self, needs: QueueCaps) -> bool {
        (self.graphics || !needs.graphics)
            && (self.compute || !needs.compute)
            && (self.transfer || !needs.transfer)
    }

    /// How many capabilities are set (a family with fewer is more dedicated).
    fn count(self) -> u32 {
        u32::from(self.graphics) + u32::from(self.compute) + u32::from(self.transfer)
    }
}

impl BitOr for QueueCaps {
    type Output = QueueCaps;

    fn bitor(self, rhs: QueueCaps) -> QueueCaps {
        QueueCaps {
            graphics: self.graphics || rhs.graphics,
            compute: self.compute || rhs.compute,
            transfer: self.transfer || rhs.transfer,
        }
    }
}

impl fmt::Display for QueueCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names =
            [(self.graphics, "graphics"), (self.compute, "compute"), (self.transfer, "transfer")];
        let mut first = true;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str("|")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// A queue family a device created queues on (see
/// [`VulkanDevice::queue_families`](crate::VulkanDevice::queue_families)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueFamilyInfo {
    /// The family index (`VkDeviceQueueCreateInfo::queueFamilyIndex`).
    pub index: u32,
    /// What its queues can run.
    pub caps: QueueCaps,
    /// How many queues of it the device created (all the family offers).
    pub queue_count: u32,
}

impl fmt::Display for QueueFamilyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "family {} ({}) x{}", self.index, self.caps, self.queue_count)
    }
}

/// The families a device creates queues on, given every family's `(queue_flags,
/// queue_count)` in the driver's order: the main family first (graphics and compute, else
/// the first compute family), then the first async compute family (compute, no graphics) and
/// the first transfer-only family, where they exist. Families with no queue are skipped.
/// `None` when no family can compute (the device does not qualify).
pub fn plan_queues(families: &[(vk::QueueFlags, u32)]) -> Option<Vec<QueueFamilyInfo>> {
    let info = |i: usize| QueueFamilyInfo {
        index: i as u32,
        caps: QueueCaps::from_flags(families[i].0),
        queue_count: families[i].1,
    };
    let first = |pred: &dyn Fn(usize, QueueCaps) -> bool| {
        (0..families.len()).find(|&i| families[i].1 > 0 && pred(i, info(i).caps))
    };
    let main = first(&|_, c| c.graphics && c.compute).or_else(|| first(&|_, c| c.compute))?;
    let mut plan = vec![info(main)];
    if let Some(i) = first(&|i, c| i != main && c.compute && !c.graphics) {
        plan.push(info(i));
    }
    if let Some(i) = first(&|_, c| c.transfer && !c.compute && !c.graphics) {
        plan.push(info(i));
    }
    Some(plan)
}

/// The families of `plan` that can run `needs`, the most dedicated first (fewest other
/// capabilities; the driver's order among equals): transfer work lands on a copy engine
/// before a compute or graphics family, compute work on an async compute family before the
/// main one.
pub(crate) fn families_for(plan: &[QueueFamilyInfo], needs: QueueCaps) -> Vec<QueueFamilyInfo> {
    let mut out: Vec<QueueFamilyInfo> =
        plan.iter().copied().filter(|f| f.caps.contains(needs)).collect();
    out.sort_by_key(|f| f.caps.count());
    out
}

/// Checks that every ring (its name and family) can run `needs`.
///
/// # Errors
/// [`DeviceError::RingLacksCaps`] for the first ring that cannot.
pub(crate) fn check_ring_caps<'a>(
    rings: impl IntoIterator<Item = (&'a str, QueueFamilyInfo)>,
    needs: QueueCaps,
) -> Result<(), DeviceError> {
    for (name, family) in rings {
        if !family.caps.contains(needs) {
            return Err(DeviceError::RingLacksCaps {
                ring: name.to_owned(),
                family: family.index,
                has: family.caps,
                needs,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: vk::QueueFlags = vk::QueueFlags::GRAPHICS;
    const C: vk::QueueFlags = vk::QueueFlags::COMPUTE;
    const T: vk::QueueFlags = vk::QueueFlags::TRANSFER;
    const SPARSE: vk::QueueFlags = vk::QueueFlags::SPARSE_BINDING;
    const VIDEO: vk::QueueFlags = vk::QueueFlags::VIDEO_DECODE_KHR;

    fn fam(index: u32, caps: QueueCaps, queue_count: u32) -> QueueFamilyInfo {
        QueueFamilyInfo { index, caps, queue_count }
    }

    const GCT: QueueCaps = QueueCaps { graphics: true, compute: true, transfer: true };

    /// NVIDIA H100 (and other recent NVIDIA GPUs): a universal family of 16, a copy family of
    /// 2, an async compute family of 8, then video and optical-flow families.
    fn nvidia() -> Vec<(vk::QueueFlags, u32)> {
        vec![
            (G | C | T | SPARSE, 16),
            (T | SPARSE, 2),
            (C | T | SPARSE, 8),
            (VIDEO | T, 1),
            (vk::QueueFlags::OPTICAL_FLOW_NV | T, 1),
        ]
    }

    /// AMD (radv): one graphics queue, 4 async compute queues, a sparse-only family, and
    /// a transfer family listed after it.
    fn amd() -> Vec<(vk::QueueFlags, u32)> {
        vec![(G | C | T | SPARSE, 1), (C | T | SPARSE, 4), (SPARSE, 1), (T, 2)]
    }

    #[test]
    fn nvidia_gets_main_async_compute_and_copy_families() {
        let plan = plan_queues(&nvidia()).unwrap();
        assert_eq!(
            plan,
            vec![fam(0, GCT, 16), fam(2, QueueCaps::COMPUTE, 8), fam(1, QueueCaps::TRANSFER, 2)]
        );
        let total: u32 = plan.iter().map(|f| f.queue_count).sum();
        assert_eq!(total, 26);
    }

    #[test]
    fn amd_skips_sparse_only_and_finds_the_later_transfer_family() {
        let plan = plan_queues(&amd()).unwrap();
        assert_eq!(
            plan,
            vec![fam(0, GCT, 1), fam(1, QueueCaps::COMPUTE, 4), fam(3, QueueCaps::TRANSFER, 2)]
        );
    }

    #[test]
    fn lavapipe_has_one_family_of_one_queue() {
        assert_eq!(plan_queues(&[(G | C | T, 1)]).unwrap(), vec![fam(0, GCT, 1)]);
    }

    #[test]
    fn a_compute_only_device_uses_its_first_compute_family_as_main() {
        let plan = plan_queues(&[(T, 1), (C, 2), (C | T, 4)]).unwrap();
        // Compute implies transfer; the main family is not repeated as async compute.
        assert_eq!(
            plan,
            vec![
                fam(1, QueueCaps::COMPUTE, 2),
                fam(2, QueueCaps::COMPUTE, 4),
                fam(0, QueueCaps::TRANSFER, 1)
            ]
        );
    }

    #[test]
    fn no_compute_family_or_no_queue_does_not_qualify() {
        assert_eq!(plan_queues(&[(G | T, 1), (T, 2)]), None);
        assert_eq!(plan_queues(&[(G | C | T, 0)]), None);
        assert_eq!(plan_queues(&[]), None);
        // An empty family is skipped, the next one used.
        assert_eq!(
            plan_queues(&[(G | C, 0), (C, 3)]).unwrap(),
            vec![fam(1, QueueCaps::COMPUTE, 3)]
        );
    }

    #[test]
    fn families_for_prefers_dedicated_families() {
        let plan = plan_queues(&nvidia()).unwrap();
        let idx = |needs| families_for(&plan, needs).iter().map(|f| f.index).collect::<Vec<_>>();
        assert_eq!(idx(QueueCaps::TRANSFER), vec![1, 2, 0]);
        assert_eq!(idx(QueueCaps::COMPUTE), vec![2, 0]);
        assert_eq!(idx(QueueCaps::GRAPHICS), vec![0]);
        assert_eq!(idx(QueueCaps::GRAPHICS | QueueCaps::COMPUTE), vec![0]);
        assert_eq!(idx(QueueCaps::NONE), vec![1, 2, 0]);
    }

    #[test]
    fn caps_from_flags_contains_and_display() {
        assert_eq!(QueueCaps::from_flags(C), QueueCaps::COMPUTE);
        assert_eq!(QueueCaps::from_flags(G), QueueCaps::GRAPHICS);
        assert_eq!(QueueCaps::from_flags(T | SPARSE), QueueCaps::TRANSFER);
        assert_eq!(QueueCaps::from_flags(VIDEO), QueueCaps::NONE);
        assert!(GCT.contains(QueueCaps::COMPUTE));
        assert!(!QueueCaps::TRANSFER.contains(QueueCaps::COMPUTE));
        assert!(QueueCaps::TRANSFER.contains(QueueCaps::NONE));
        assert!(!QueueCaps::COMPUTE.contains(QueueCaps::GRAPHICS));
        assert_eq!(GCT.to_string(), "graphics|compute|transfer");
        assert_eq!(QueueCaps::NONE.to_string(), "none");
        assert_eq!(fam(2, QueueCaps::COMPUTE, 8).to_string(), "family 2 (compute|transfer) x8");
    }

    #[test]
    fn an_entity_over_a_copy_ring_is_refused_for_compute_work() {
        let plan = plan_queues(&nvidia()).unwrap();
        let (main, copy) = (plan[0], plan[2]);
        assert_eq!(
            check_ring_caps([("gfx", main), ("async", plan[1])], QueueCaps::COMPUTE),
            Ok(())
        );
        assert_eq!(check_ring_caps([("gfx", main), ("copy", copy)], QueueCaps::TRANSFER), Ok(()));
        let err = check_ring_caps([("gfx", main), ("copy", copy)], QueueCaps::COMPUTE).unwrap_err();
        assert_eq!(
            err,
            DeviceError::RingLacksCaps {
                ring: "copy".into(),
                family: 1,
                has: QueueCaps::TRANSFER,
                needs: QueueCaps::COMPUTE
            }
        );
        assert_eq!(
            err.to_string(),
            "ring \"copy\" is on queue family 1 (transfer), which cannot run compute|transfer work"
        );
    }
}
