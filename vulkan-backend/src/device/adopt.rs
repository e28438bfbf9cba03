//! Running on an engine's device: [`VulkanDevice::adopt`] takes an `ash` device, instance
//! and the queues an engine lends ([`AdoptedDevice`]), checks what gpusched needs, and builds
//! a generation (`DeviceCore`) on it that owns only what gpusched creates. Queue access is
//! shared through one [`QueueLock`] per lent queue; a lost adopted device gets its next
//! generation from the engine's [`Recreate`] callback, never from `vkCreateDevice`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use ash::vk;

use super::core::Setup;
use super::queues::{QueueCaps, QueueFamilyInfo};
use super::recovery::Notify;
use super::{DeviceCore, DeviceShared, VulkanDevice};
use crate::error::InitError;
use crate::instance::InstanceShared;
use crate::sync::lock;

/// The lock that serialises access to one `VkQueue` shared by an engine and gpusched
/// (`vkQueueSubmit`, `vkQueuePresentKHR`, `vkQueueWaitIdle` and `vkQueueBindSparse` need the
/// queue externally synchronised). gpusched holds it for every `vkQueueSubmit` of its rings
/// on the queue, and only for the call (never while waiting for anything, except once at the
/// end of a generation: a `vkQueueWaitIdle` before it destroys its objects); the engine holds
/// it for each of its own calls on the queue ([`QueueLock::lock`]). Share it with
/// `Arc<QueueLock>` ([`LentQueue::lock`]).
#[derive(Debug, Default)]
pub struct QueueLock {
    m: Mutex<()>,
}

/// Holds a [`QueueLock`]: the queue is the holder's until it drops.
#[derive(Debug)]
pub struct QueueGuard<'a> {
    _g: MutexGuard<'a, ()>,
}

impl QueueLock {
    /// A new, unlocked queue lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the queue (blocking while gpusched or another engine thread holds it) until the
    /// guard drops. Hold it only across the queue call itself: a ring on the queue cannot
    /// submit meanwhile, so waiting for a gpusched fence while holding it can deadlock.
    pub fn lock(&self) -> QueueGuard<'_> {
        QueueGuard { _g: lock(&self.m) }
    }
}

/// A locked queue (`QueueSlot::lock`): derefs to the `VkQueue`.
pub(crate) struct LockedQueue<'a> {
    pub(crate) _guard: QueueGuard<'a>,
    pub(crate) queue: vk::Queue,
}

impl std::ops::Deref for LockedQueue<'_> {
    type Target = vk::Queue;

    fn deref(&self) -> &vk::Queue {
        &self.queue
    }
}

/// A queue an engine lends to gpusched: queue `index` of family `family` of the adopted
/// device, and the lock both sides take to use it.
#[derive(Clone, Debug)]
pub struct LentQueue {
    /// The queue family index.
    pub family: u32,
    /// The queue index in the family (`vkGetDeviceQueue`'s `queueIndex`).
    pub index: u32,
    /// Taken by gpusched for each of its submissions on the queue and by the engine for
    /// each of its own calls on it.
    pub lock: Arc<QueueLock>,
}

/// What the engine *enabled* when it created the device (a `VkDevice` handle does not tell):
/// its statement, checked against what gpusched needs and against what the physical device
/// supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnabledFeatures {
    /// `VkPhysicalDeviceVulkan12Features::timelineSemaphore` (required: every ring's
    /// hardware fence is a timeline semaphore).
    pub timeline_semaphore: bool,
    /// The `VK_KHR_push_descriptor` extension (required: kernels bind their buffers with it).
    pub push_descriptor: bool,
    /// `VkPhysicalDeviceVulkan13Features::synchronization2` (graphics work only).
    pub synchronization2: bool,
    /// `VkPhysicalDeviceVulkan13Features::dynamicRendering` (graphics work only).
    pub dynamic_rendering: bool,
}

/// Called once gpusched no longer uses an adopted `VkDevice` and every object it created on
/// it is destroyed (the generation ended: the device was closed, or replaced after a loss;
/// or its set-up failed after the checks passed): from then on the engine may destroy it.
pub type ReleaseFn = Box<dyn FnOnce() + Send>;

/// An engine's device handed to [`VulkanDevice::adopt`] (or returned by its [`Recreate`]
/// callback). The engine keeps ownership of every handle in it.
pub struct AdoptedDevice {
    /// The loader the instance was created with.
    pub entry: ash::Entry,
    /// The engine's instance (Vulkan 1.2 or newer).
    pub instance: ash::Instance,
    /// The physical device `device` was created on.
    pub physical: vk::PhysicalDevice,
    /// The engine's logical device.
    pub device: ash::Device,
    /// The queues lent to gpusched, at least one; the first one's family (which must run
    /// compute) is the device's main family ([`VulkanDevice::queue_family`]).
    pub queues: Vec<LentQueue>,
    /// What the engine enabled on `device`.
    pub enabled: EnabledFeatures,
    /// Whether the engine enabled the validation layer on its instance (reported by
    /// [`VulkanDevice::validation`]; gpusched cannot see it).
    pub validation: bool,
    /// Called when gpusched is done with `device` (see [`ReleaseFn`]); `None` if the engine
    /// does not need to know (it destroys the device after closing gpusched).
    pub on_release: Option<ReleaseFn>,
}

impl fmt::Debug for AdoptedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdoptedDevice")
            .field("physical", &self.physical)
            .field("device", &self.device.handle())
            .field("queues", &self.queues)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// The engine's device re-creation after a loss: a new `VkDevice` (and its lent queues),
/// called on gpusched's recovery thread (never inside a signalling section), up to three
/// times per loss. An error leaves the adopted device lost for good. A returned device that
/// fails [`VulkanDevice::adopt`]'s checks is handed straight back (its `on_release` runs) and
/// counts as a failed attempt.
pub type Recreate =
    Box<dyn Fn() -> Result<AdoptedDevice, Box<dyn std::error::Error + Send + Sync>> + Send + Sync>;

/// Why [`VulkanDevice::adopt`] refused a device. Nothing was created and no callback of the
/// [`AdoptedDevice`] ran, except with [`AdoptError::Init`] (set-up failed after the checks:
/// its objects are destroyed and `on_release` ran).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdoptError {
    /// The engine did not enable a feature gpusched needs (its [`EnabledFeatures`] says so).
    #[error("the adopted device lacks {feature}: gpusched needs it enabled")]
    NotEnabled {
        /// The feature or extension.
        feature: &'static str,
    },
    /// The engine states it enabled a feature the physical device does not support.
    #[error("the physical device does not support {feature}, which the engine says it enabled")]
    Unsupported {
        /// The feature or extension.
        feature: &'static str,
    },
    /// The physical device is older than Vulkan 1.2.
    #[error("the physical device supports vulkan {major}.{minor}: gpusched needs 1.2")]
    ApiVersion {
        /// Its major version.
        major: u32,
        /// Its minor version.
        minor: u32,
    },
    /// No queue was lent.
    #[error("no queue lent: gpusched needs at least one")]
    NoQueue,
    /// A lent queue family does not exist on the physical device.
    #[error("lent queue family {family} does not exist (the device has {families})")]
    NoSuchFamily {
        /// The family as lent.
        family: u32,
        /// How many families the device has.
        families: u32,
    },
    /// A lent queue index is past its family's queues.
    #[error("lent queue {index} of family {family} does not exist (the family has {count})")]
    NoSuchQueue {
        /// The family.
        family: u32,
        /// The index as lent.
        index: u32,
        /// The family's queue count.
        count: u32,
    },
    /// The same queue was lent twice.
    #[error("queue {index} of family {family} was lent twice")]
    DuplicateQueue {
        /// The family.
        family: u32,
        /// The queue index.
        index: u32,
    },
    /// The first lent queue's family cannot run compute.
    #[error("the first lent queue's family {family} cannot run compute")]
    NoCompute {
        /// The family.
        family: u32,
    },
    /// The device is lost and the engine gave no [`Recreate`] callback (re-creation only).
    #[error("the adopted device was lost and the engine supplied no re-creation callback")]
    NoRecreate,
    /// The engine's re-creation callback failed (re-creation only).
    #[error("the engine's device re-creation failed: {0}")]
    Recreate(String),
    /// gpusched's own set-up on the device failed (kernels, memory).
    #[error(transparent)]
    Init(#[from] InitError),
}

/// Whether a core created its `VkDevice` or adopted an engine's.
pub(crate) enum Ownership {
    /// Created by gpusched: destroyed with the core.
    Owned,
    /// An engine's: never destroyed here; its release callback runs once the core's own
    /// objects are gone.
    Adopted(Mutex<Option<ReleaseFn>>),
}

impl Ownership {
    /// Whether the core destroys the `VkDevice`.
    pub(crate) fn owned(&self) -> bool {
        matches!(self, Ownership::Owned)
    }

    /// gpusched is done with an adopted device: runs its release callback (once).
    pub(crate) fn released(&self) {
        if let Ownership::Adopted(f) = self {
            let f = lock(f).take();
            if let Some(f) = f {
                f();
            }
        }
    }
}

/// What an adopted shared device keeps: the engine's re-creation callback.
pub(crate) struct Adoption {
    pub(crate) recreate: Option<Recreate>,
}

impl VulkanDevice {
    /// Runs gpusched on an engine's device: its rings submit to the queues the engine lends,
    /// its buffers, images, kernels and command pools are created on the engine's
    /// `VkDevice`. Graphics work ([`supports_graphics`](VulkanDevice::supports_graphics)) is
    /// on when the engine enabled `synchronization2` and `dynamicRendering` and the main
    /// lent family runs graphics, off otherwise.
    ///
    /// Ring queue indices ([`ring`](VulkanDevice::ring), [`ring_on`](VulkanDevice::ring_on))
    /// count the queues lent of each family, in the order lent: `ring(0, ..)` runs on the
    /// first lent queue, whatever its index in the family;
    /// [`queue_families`](VulkanDevice::queue_families) reports the lent counts.
    ///
    /// On device loss every unfinished fence signals `DeviceLost` as usual; the next
    /// generation comes from `recreate` (on the recovery thread). Without it the device stays
    /// lost: [`submit`](VulkanDevice::submit) fails [`SubmitError::is_device_lost`](crate::SubmitError::is_device_lost),
    /// [`buffer`](VulkanDevice::buffer) fails `DeviceLost`, and
    /// [`wait_generation`](VulkanDevice::wait_generation) fails `DeviceLost`.
    ///
    /// # Safety
    /// The engine keeps ownership of the instance, the physical device, the device and its
    /// queues; gpusched never destroys them. It destroys only what it created, after waiting
    /// for its own work (`vkQueueWaitIdle` on each lent queue, under its lock: the engine's
    /// work on those queues is waited for too; never `vkDeviceWaitIdle`), when the generation
    /// ends ([`close`](VulkanDevice::close), or replacement after a
    /// loss), then calls `on_release`. The caller promises:
    /// - `entry`, `instance`, `physical` and `device` belong together, `device` was created
    ///   on `physical` with every lent queue (family, index) and with the features and
    ///   extensions `enabled` states (gpusched cannot see enabled features: a false statement
    ///   is undefined behaviour in the driver), on an instance of Vulkan 1.2 or newer;
    /// - all of them stay valid until gpusched is done with the device: after
    ///   [`close`](VulkanDevice::close) returned `Ok`, or `on_release` ran (a device dropped
    ///   without `close` may be destroyed on a gpusched thread later);
    /// - the engine calls `vkQueueSubmit`/`vkQueuePresentKHR`/`vkQueueWaitIdle` on a lent
    ///   queue only while holding its [`QueueLock`], and does not call `vkDeviceWaitIdle`
    ///   concurrently with gpusched's use of the queues unless it holds every lent lock;
    /// - the engine does not destroy or reset objects gpusched created (reached through
    ///   [`ash_device`](VulkanDevice::ash_device) or [`Buffer::raw`](crate::Buffer)).
    ///
    /// # Errors
    /// [`AdoptError`]: a required feature not stated enabled (`timelineSemaphore`,
    /// `VK_KHR_push_descriptor`) or not supported, a graphics feature stated but unsupported,
    /// Vulkan below 1.2, no queue, a lent queue that does not exist or is lent twice, a main
    /// family without compute: nothing was created. [`AdoptError::Init`]: gpusched's own
    /// set-up failed (what it made is destroyed, `on_release` ran).
    pub unsafe fn adopt(
        device: AdoptedDevice,
        recreate: Option<Recreate>,
    ) -> Result<VulkanDevice, AdoptError> {
        let id = DeviceShared::next_id();
        let notify = Arc::new(Notify::default());
        let (core, inst, physical) = adopt_core(device, id, notify.clone(), Refused::Keep)?;
        let adoption = Adoption { recreate };
        Ok(DeviceShared::start(inst, physical, core, notify, Some(adoption)))
    }
}

impl DeviceShared {
    /// The next generation's core (recovery thread): a new `VkDevice` for an owned device,
    /// the engine's re-creation for an adopted one.
    pub(crate) fn next_core(&self) -> Result<Arc<DeviceCore>, AdoptError> {
        let Some(adoption) = &self.adoption else {
            return Ok(DeviceCore::create(
                self.instance.clone(),
                self.physical,
                self.name.clone(),
                self.family,
                self.id,
                self.notify.clone(),
            )?);
        };
        let Some(recreate) = &adoption.recreate else {
            return Err(AdoptError::NoRecreate);
        };
        let device = recreate().map_err(|e| AdoptError::Recreate(e.to_string()))?;
        adopt_core(device, self.id, self.notify.clone(), Refused::Release).map(|(core, _, _)| core)
    }
}

/// What a refused device's `on_release` does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Not called: [`VulkanDevice::adopt`] returns the error to the engine.
    Keep,
    /// Called: a re-created device gpusched refused goes back to the engine at once (the
    /// error only reaches the log).
    Release,
}

/// Checks `dev` and builds a core on it.
fn adopt_core(
    dev: AdoptedDevice,
    device_id: u64,
    notify: Arc<Notify>,
    refused: Refused,
) -> Result<(Arc<DeviceCore>, Arc<InstanceShared>, vk::PhysicalDevice), AdoptError> {
    let AdoptedDevice {
        entry,
        instance,
        physical,
        device,
        queues,
        enabled,
        validation,
        on_release,
    } = dev;
    let checked = check(&instance, physical, enabled, &queues);
    let (name, families, lent) = match checked {
        Ok(c) => c,
        Err(e) => {
            if let (Refused::Release, Some(f)) = (refused, on_release) {
                f();
            }
            return Err(e);
        }
    };
    let graphics_queue = families[0].caps.graphics;
    let graphics = crate::graphics::Support {
        features: enabled.synchronization2 && enabled.dynamic_rendering,
        queue: enabled.synchronization2 && enabled.dynamic_rendering && graphics_queue,
    };
    let inst = Arc::new(InstanceShared::borrowed(entry, instance, validation));
    // An engine presents itself: gpusched's swapchains need a device it created.
    let swapchain = false;
    let setup = Setup {
        inst: inst.clone(),
        physical,
        name,
        families,
        lent,
        graphics,
        swapchain,
        device_id,
        notify,
    };
    let core = DeviceCore::assemble(setup, device, Ownership::Adopted(Mutex::new(on_release)))?;
    Ok((core, inst, physical))
}

/// Every check of an adopted device, before anything is created: its name, the lent
/// queues' families and the lent queues (see [`lent_families`]).
#[allow(clippy::type_complexity)]
fn check(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
    enabled: EnabledFeatures,
    queues: &[LentQueue],
) -> Result<(String, Vec<QueueFamilyInfo>, Vec<(u32, u32, Arc<QueueLock>)>), AdoptError> {
    // SAFETY: the caller of `adopt` promised a valid physical device of `instance`.
    let props = unsafe { instance.get_physical_device_properties(physical) };
    if props.api_version < vk::API_VERSION_1_2 {
        return Err(AdoptError::ApiVersion {
            major: vk::api_version_major(props.api_version),
            minor: vk::api_version_minor(props.api_version),
        });
    }
    let name = props
        .device_name_as_c_str()
        .map_or_else(|_| "(unnamed)".into(), |n| n.to_string_lossy().into_owned());
    check_features(instance, physical, enabled)?;
    let (families, lent) = lent_families(instance, physical, queues)?;
    Ok((name, families, lent))
}

/// Checks the engine's statement against what gpusched needs and the device supports.
fn check_features(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
    enabled: EnabledFeatures,
) -> Result<(), AdoptError> {
    if !enabled.timeline_semaphore {
        return Err(AdoptError::NotEnabled { feature: "timelineSemaphore (Vulkan 1.2)" });
    }
    if !enabled.push_descriptor {
        return Err(AdoptError::NotEnabled { feature: "VK_KHR_push_descriptor" });
    }
    let mut f12 = vk::PhysicalDeviceVulkan12Features::default();
    let mut f13 = vk::PhysicalDeviceVulkan13Features::default();
    // SAFETY: a valid physical device (the caller's promise).
    let api = unsafe { instance.get_physical_device_properties(physical) }.api_version;
    let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f12);
    if api >= vk::API_VERSION_1_3 {
        f2 = f2.push_next(&mut f13);
    }
    // SAFETY: valid physical device; the chain lives across the call.
    unsafe { instance.get_physical_device_features2(physical, &mut f2) };
    if f12.timeline_semaphore != vk::TRUE {
        return Err(AdoptError::Unsupported { feature: "timelineSemaphore (Vulkan 1.2)" });
    }
    if enabled.synchronization2 && f13.synchronization2 != vk::TRUE {
        return Err(AdoptError::Unsupported { feature: "synchronization2 (Vulkan 1.3)" });
    }
    if enabled.dynamic_rendering && f13.dynamic_rendering != vk::TRUE {
        return Err(AdoptError::Unsupported { feature: "dynamicRendering (Vulkan 1.3)" });
    }
    // SAFETY: a valid physical device.
    let exts = unsafe { instance.enumerate_device_extension_properties(physical) }
        .map_err(|code| InitError::Vk { op: "vkEnumerateDeviceExtensionProperties", code })?;
    let push = ash::khr::push_descriptor::NAME;
    if !exts.iter().any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == push)) {
        return Err(AdoptError::Unsupported { feature: "VK_KHR_push_descriptor" });
    }
    Ok(())
}

/// The lent queues' families (the first lent queue's first) with their lent counts, and the
/// queues grouped family after family in that order (lending order within a family).
#[allow(clippy::type_complexity)]
fn lent_families(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
    queues: &[LentQueue],
) -> Result<(Vec<QueueFamilyInfo>, Vec<(u32, u32, Arc<QueueLock>)>), AdoptError> {
    // SAFETY: a valid physical device.
    let props = unsafe { instance.get_physical_device_queue_family_properties(physical) };
    let mut families: Vec<QueueFamilyInfo> = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let Some(p) = props.get(q.family as usize) else {
            return Err(AdoptError::NoSuchFamily {
                family: q.family,
                families: props.len() as u32,
            });
        };
        if q.index >= p.queue_count {
            return Err(AdoptError::NoSuchQueue {
                family: q.family,
                index: q.index,
                count: p.queue_count,
            });
        }
        if queues[..i].iter().any(|o| o.family == q.family && o.index == q.index) {
            return Err(AdoptError::DuplicateQueue { family: q.family, index: q.index });
        }
        match families.iter_mut().find(|f| f.index == q.family) {
            Some(f) => f.queue_count += 1,
            None => families.push(QueueFamilyInfo {
                index: q.family,
                caps: QueueCaps::from_flags(p.queue_flags),
                queue_count: 1,
            }),
        }
    }
    let Some(main) = families.first() else { return Err(AdoptError::NoQueue) };
    if !main.caps.compute {
        return Err(AdoptError::NoCompute { family: main.index });
    }
    let lent = families
        .iter()
        .flat_map(|f| queues.iter().filter(move |q| q.family == f.index))
        .map(|q| (q.family, q.index, q.lock.clone()))
        .collect();
    Ok((families, lent))
}
