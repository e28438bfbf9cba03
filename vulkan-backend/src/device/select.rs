//! Physical-device selection: which device a [`VulkanDevice`](crate::VulkanDevice) opens
//! ([`DeviceSelector`], `GPUSCHED_DEVICE`), whether it qualifies (Vulkan 1.2,
//! `VK_KHR_push_descriptor`, a compute queue family) and which queue family is its main one
//! (the families themselves are planned in [`queues`](super::queues)).

use ash::vk;

use super::queues::plan_queues;
use crate::error::{map_init, InitError};
use crate::instance::InstanceShared;

/// Which physical device to use.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DeviceSelector {
    /// `GPUSCHED_DEVICE` if set (an index, or a substring of the device name), else
    /// [`Best`](DeviceSelector::Best).
    #[default]
    FromEnv,
    /// A discrete GPU, else an integrated one, else a virtual one, else the CPU (lavapipe).
    Best,
    /// The device at this index of `vkEnumeratePhysicalDevices`.
    Index(usize),
    /// The first device whose name contains this (case-insensitive).
    Name(String),
}

/// How to create a [`VulkanDevice`](crate::VulkanDevice).
#[derive(Clone, Debug, Default)]
pub struct DeviceConfig {
    /// Which device.
    pub selector: DeviceSelector,
    /// Enable the Khronos validation layer. `None`: only when `GPUSCHED_VALIDATION=1`.
    pub validation: Option<bool>,
}

impl DeviceConfig {
    /// Selects the device.
    pub fn selector(mut self, selector: DeviceSelector) -> Self {
        self.selector = selector;
        self
    }

    /// Forces validation on or off.
    pub fn validation(mut self, on: bool) -> Self {
        self.validation = Some(on);
        self
    }
}

/// Whether `GPUSCHED_VALIDATION=1` asks for the validation layer.
pub(super) fn env_validation() -> bool {
    std::env::var("GPUSCHED_VALIDATION").is_ok_and(|v| v == "1")
}

/// Preference order of device types under [`DeviceSelector::Best`] (lower first).
fn type_rank(t: vk::PhysicalDeviceType) -> u32 {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => 0,
        vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
        vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
        vk::PhysicalDeviceType::CPU => 3,
        _ => 4,
    }
}

/// The physical device chosen by `selector` on `inst`.
pub(super) struct Chosen {
    pub(super) physical: vk::PhysicalDevice,
    /// `VkPhysicalDeviceProperties::deviceName`.
    pub(super) name: String,
    /// The main queue family (see [`plan_queues`]): the one [`VulkanDevice::ring`] uses.
    ///
    /// [`VulkanDevice::ring`]: crate::VulkanDevice::ring
    pub(super) family: u32,
}

impl DeviceSelector {
    /// Resolves [`FromEnv`](DeviceSelector::FromEnv): `GPUSCHED_DEVICE` as an index if it
    /// parses as one, else as a name substring; unset or empty: [`Best`](DeviceSelector::Best).
    fn resolve(self) -> DeviceSelector {
        match self {
            DeviceSelector::FromEnv => match std::env::var("GPUSCHED_DEVICE") {
                Ok(s) if !s.is_empty() => match s.parse::<usize>() {
                    Ok(i) => DeviceSelector::Index(i),
                    Err(_) => DeviceSelector::Name(s),
                },
                _ => DeviceSelector::Best,
            },
            s => s,
        }
    }
}

/// Every queue family of `physical` as `(queue_flags, queue_count)`, in the driver's order:
/// the input of [`plan_queues`].
pub(super) fn queue_families(
    inst: &InstanceShared,
    physical: vk::PhysicalDevice,
) -> Vec<(vk::QueueFlags, u32)> {
    // SAFETY: a valid physical device of `inst`.
    let families = unsafe { inst.instance.get_physical_device_queue_family_properties(physical) };
    families.iter().map(|f| (f.queue_flags, f.queue_count)).collect()
}

/// Picks the physical device and its main queue family.
///
/// # Errors
/// [`InitError::NoDevice`] when none qualifies (the reasons, per device),
/// [`InitError::SelectorMismatch`] when an index or name selects nothing.
pub(super) fn select(inst: &InstanceShared, selector: DeviceSelector) -> Result<Chosen, InitError> {
    let instance = &inst.instance;
    // SAFETY: a plain enumeration on a live instance.
    let physicals = unsafe { instance.enumerate_physical_devices() }
        .map_err(|c| map_init("vkEnumeratePhysicalDevices", c))?;
    if physicals.is_empty() {
        return Err(InitError::NoDevice("the loader reports no physical device".into()));
    }
    let props: Vec<vk::PhysicalDeviceProperties> = physicals
        .iter()
        // SAFETY: handles from the enumeration above.
        .map(|p| unsafe { instance.get_physical_device_properties(*p) })
        .collect();
    let name_of = |i: usize| {
        props[i]
            .device_name_as_c_str()
            .map_or_else(|_| "?".into(), |n| n.to_string_lossy().into_owned())
    };
    let available =
        (0..props.len()).map(|i| format!("{i}: {}", name_of(i))).collect::<Vec<_>>().join(", ");
    let selector = selector.resolve();
    // Qualification: API 1.2, push descriptors, a compute queue.
    let mut reasons = Vec::new();
    let qualifies = |i: usize, reasons: &mut Vec<String>| -> Option<u32> {
        let p = physicals[i];
        if props[i].api_version < vk::API_VERSION_1_2 {
            reasons.push(format!(
                "{}: vulkan {} < 1.2",
                name_of(i),
                vk::api_version_minor(props[i].api_version)
            ));
            return None;
        }
        // SAFETY: a valid physical device.
        let exts = unsafe { instance.enumerate_device_extension_properties(p) }.unwrap_or_default();
        let has_push = exts.iter().any(|e| {
            e.extension_name_as_c_str().is_ok_and(|n| n == ash::khr::push_descriptor::NAME)
        });
        if !has_push {
            reasons.push(format!("{}: no VK_KHR_push_descriptor", name_of(i)));
            return None;
        }
        let family = plan_queues(&queue_families(inst, p)).map(|plan| plan[0].index);
        if family.is_none() {
            reasons.push(format!("{}: no compute queue", name_of(i)));
        }
        family
    };
    let chosen = match &selector {
        DeviceSelector::Index(i) => {
            if *i >= physicals.len() {
                return Err(InitError::SelectorMismatch { selector: i.to_string(), available });
            }
            qualifies(*i, &mut reasons).map(|f| (*i, f))
        }
        DeviceSelector::Name(n) => {
            let lower = n.to_lowercase();
            let Some(i) =
                (0..physicals.len()).find(|i| name_of(*i).to_lowercase().contains(&lower))
            else {
                return Err(InitError::SelectorMismatch { selector: n.clone(), available });
            };
            qualifies(i, &mut reasons).map(|f| (i, f))
        }
        _ => {
            let mut order: Vec<usize> = (0..physicals.len()).collect();
            order.sort_by_key(|i| type_rank(props[*i].device_type));
            order.into_iter().find_map(|i| qualifies(i, &mut reasons).map(|f| (i, f)))
        }
    };
    let Some((index, family)) = chosen else {
        return Err(InitError::NoDevice(reasons.join("; ")));
    };
    Ok(Chosen { physical: physicals[index], name: name_of(index), family })
}
