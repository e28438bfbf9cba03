//! Resources that take part in implicit synchronisation: anything with a [`Resv`] that a
//! job reads or writes, whoever created it ([`GpuResource`]).
//!
//! gpusched's own [`Buffer`](crate::Buffer) and [`Image`](crate::Image) implement the trait,
//! and so can an engine's objects: a job declares them with
//! [`VulkanJob::reads`](crate::VulkanJob::reads) / [`writes`](crate::VulkanJob::writes), and
//! [`VulkanDevice::submit`](crate::VulkanDevice::submit) orders it after their earlier users
//! through their `Resv`s, records it only if they belong to the generation it records for,
//! and keeps them alive until the hardware has passed it.
//!
//! # An engine's own resource
//! An engine that creates its `VkBuffer`s and `VkImage`s itself (with the raw device,
//! [`VulkanDevice::ash_device`](crate::VulkanDevice::ash_device)) wraps each with a `Resv`
//! and the [`GenerationId`] of the device generation it was created on:
//!
//! ```
//! use std::sync::Arc;
//! use gpusched::resv::Resv;
//! use gpusched_vulkan::{GenerationId, GpuResource};
//!
//! struct TextureInner {
//!     // image: ash::vk::Image, memory: ...  (destroyed in its `Drop`)
//!     resv: Resv,
//!     owner: GenerationId,
//! }
//!
//! #[derive(Clone)]
//! struct Texture(Arc<TextureInner>);
//!
//! impl GpuResource for Texture {
//!     fn resv(&self) -> &Resv {
//!         &self.0.resv
//!     }
//!     fn owner(&self) -> GenerationId {
//!         self.0.owner
//!     }
//!     fn keep_alive(&self) -> Arc<dyn GpuResource> {
//!         Arc::new(self.clone())
//!     }
//! }
//! ```
//!
//! Its `Drop` may destroy the Vulkan objects without waiting: gpusched holds
//! [`keep_alive`](GpuResource::keep_alive)'s handle until the hardware has passed every job
//! that declared the resource. It must be destroyed before its device generation, and is
//! lost with it (jobs using it after a loss are refused with
//! [`RecordError::LostGeneration`]).

use std::sync::Arc;

use gpusched::resv::Resv;

use crate::device::DeviceCore;
use crate::error::RecordError;

/// The device generation a resource belongs to: the device handle (all its generations)
/// and the generation. [`VulkanDevice::generation_id`](crate::VulkanDevice::generation_id)
/// gives the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GenerationId {
    /// The device handle (shared by all its generations): process-unique.
    pub device: u64,
    /// The generation: process-unique.
    pub generation: u64,
}

/// A GPU resource with a reservation object, which jobs declare to be ordered against its
/// other users (implicit synchronisation) and to keep it alive while the hardware uses it.
///
/// Two declarations are the same resource when they return the same `Resv` (by address).
pub trait GpuResource: Send + Sync + 'static {
    /// The reservation object: the fences of the jobs that read and write the resource.
    fn resv(&self) -> &Resv;

    /// The device generation the resource was created on. A job records only with
    /// resources of the generation it records for ([`RecordError::WrongDevice`] for another
    /// device, [`RecordError::LostGeneration`] for a lost generation of the same device).
    fn owner(&self) -> GenerationId;

    /// An owned handle that keeps the resource (its Vulkan objects, its memory and its
    /// `Resv`) alive. A job holds it until the hardware has passed the job (even one whose
    /// fence was force-completed). Usually `Arc::new(self.clone())` of a cheap handle.
    fn keep_alive(&self) -> Arc<dyn GpuResource>;
}

/// A shared resource is its own keep-alive handle: an engine may implement the trait on its
/// inner type and declare the `Arc` (whose `keep_alive` is a clone of it).
impl<T: GpuResource> GpuResource for Arc<T> {
    fn resv(&self) -> &Resv {
        (**self).resv()
    }

    fn owner(&self) -> GenerationId {
        (**self).owner()
    }

    fn keep_alive(&self) -> Arc<dyn GpuResource> {
        self.clone()
    }
}

impl GpuResource for Arc<dyn GpuResource> {
    fn resv(&self) -> &Resv {
        (**self).resv()
    }

    fn owner(&self) -> GenerationId {
        (**self).owner()
    }

    fn keep_alive(&self) -> Arc<dyn GpuResource> {
        self.clone()
    }
}

/// Whether `a` and `b` are the same resource (the same `Resv`).
pub(crate) fn same(a: &(impl GpuResource + ?Sized), b: &(impl GpuResource + ?Sized)) -> bool {
    std::ptr::eq(a.resv(), b.resv())
}

/// A resource recorded for `core` must belong to it: one of a lost generation of the same
/// device is [`RecordError::LostGeneration`], one of another device
/// [`RecordError::WrongDevice`].
pub(crate) fn check_owner(
    r: &(impl GpuResource + ?Sized),
    core: &DeviceCore,
) -> Result<(), RecordError> {
    let owner = r.owner();
    if owner.device == core.device_id && owner.generation == core.generation {
        return Ok(());
    }
    if owner.device == core.device_id {
        Err(RecordError::LostGeneration { buffer: owner.generation, device: core.generation })
    } else {
        Err(RecordError::WrongDevice { buffer: owner.generation, device: core.generation })
    }
}

impl DeviceCore {
    /// This generation's id.
    pub(crate) fn generation_id(&self) -> GenerationId {
        GenerationId { device: self.device_id, generation: self.generation }
    }
}

impl crate::VulkanDevice {
    /// The current generation's id: what an engine's own [`GpuResource`] created now
    /// reports as its [`owner`](GpuResource::owner).
    pub fn generation_id(&self) -> GenerationId {
        self.core().generation_id()
    }
}
