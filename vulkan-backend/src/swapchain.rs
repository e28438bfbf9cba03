//! Window surfaces ([`Surface`]) and swapchains ([`Swapchain`]) for presenting frames
//! (`present.rs` orders them with the scheduler).
//!
//! A surface belongs to the process's instance (which lives as long as the process), so it
//! outlives device generations: after a device loss the presenter makes a new swapchain for
//! the new generation from the same surface. A swapchain belongs to one generation (its
//! `DeviceCore`, which it keeps alive) and is destroyed only once the device has passed
//! every submission and present that used it (the presenter's job).

use std::sync::Arc;

use ash::vk;
use raw_window_handle::{RawDisplayHandle, RawWindowHandle};

use crate::device::DeviceCore;
use crate::instance::InstanceShared;
use crate::present::PresentError;
use crate::VulkanDevice;

/// A `VkSurfaceKHR` of a window, made on the device's instance
/// (`ash_window::create_surface`). Destroyed on drop, after every swapchain made from it.
pub struct Surface {
    inst: Arc<InstanceShared>,
    loader: ash::khr::surface::Instance,
    raw: vk::SurfaceKHR,
}

impl std::fmt::Debug for Surface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Surface").field("raw", &self.raw).finish_non_exhaustive()
    }
}

impl Surface {
    /// A surface for the window `window` of the display `display` (winit's
    /// `display_handle()` / `window_handle()`, `raw-window-handle` 0.6).
    ///
    /// # Errors
    /// [`PresentError::NoSurfaceSupport`] when the instance lacks the window-system
    /// extensions (a headless loader) or the platform's; [`PresentError::Vulkan`] when
    /// surface creation fails.
    ///
    /// # Safety
    /// The handles are valid, and the window and its display outlive the surface (and
    /// every presenter using it).
    pub unsafe fn new(
        device: &VulkanDevice,
        display: RawDisplayHandle,
        window: RawWindowHandle,
    ) -> Result<Surface, PresentError> {
        let inst = device.core().instance.clone();
        let needed = ash_window::enumerate_required_extensions(display)
            .map_err(|c| PresentError::vulkan("ash_window::enumerate_required_extensions", c))?;
        // SAFETY: `enumerate_required_extensions` returns pointers to static C strings.
        let missing = needed
            .iter()
            .map(|p| unsafe { std::ffi::CStr::from_ptr(*p) })
            .find(|n| !inst.surface_exts.contains(n));
        if let Some(name) = missing {
            return Err(PresentError::NoSurfaceSupport(name.to_string_lossy().into_owned()));
        }
        // SAFETY: the caller's contract on the handles; the instance was created with the
        // extensions this display needs (checked above).
        let raw = unsafe {
            ash_window::create_surface(&inst.entry, &inst.instance, display, window, None)
        }
        .map_err(|c| PresentError::vulkan("vkCreate*SurfaceKHR", c))?;
        let loader = ash::khr::surface::Instance::new(&inst.entry, &inst.instance);
        Ok(Surface { inst, loader, raw })
    }

    /// The raw `VkSurfaceKHR`.
    pub fn raw(&self) -> vk::SurfaceKHR {
        self.raw
    }
}

impl Drop for Surface {
    fn drop(&mut self) {
        // SAFETY: every swapchain made from it is gone (a presenter owns both and drops its
        // swapchain first); the instance is alive (`inst`).
        unsafe { self.loader.destroy_surface(self.raw, None) };
        let _ = &self.inst;
    }
}

/// A `VkSwapchainKHR` of one device generation: FIFO present mode, 2 or 3 images (what the
/// surface allows closest to that), an 8-bit UNORM format (so pixels read back equal those
/// rendered), and one binary semaphore per image for its present to wait on (an image's
/// semaphore is reused only once the image is acquired again, which a present
/// engine allows only after that image's earlier present consumed it).
pub struct Swapchain {
    pub(crate) core: Arc<DeviceCore>,
    pub(crate) loader: ash::khr::swapchain::Device,
    pub(crate) raw: vk::SwapchainKHR,
    images: Vec<vk::Image>,
    pub(crate) present_sems: Vec<vk::Semaphore>,
    format: vk::Format,
    extent: vk::Extent2D,
}

impl std::fmt::Debug for Swapchain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swapchain")
            .field("images", &self.images.len())
            .field("format", &self.format)
            .field("extent", &self.extent)
            .field("generation", &self.core.generation)
            .finish_non_exhaustive()
    }
}

/// The formats tried, in order (8-bit UNORM, either byte order).
const FORMATS: [vk::Format; 2] = [vk::Format::B8G8R8A8_UNORM, vk::Format::R8G8B8A8_UNORM];

impl Swapchain {
    /// A swapchain for `surface` on the current generation of `device`, sized `fallback`
    /// when the surface leaves the extent to the application.
    ///
    /// # Errors
    /// [`PresentError::NoSwapchainSupport`] (the device has no `VK_KHR_swapchain`, its main
    /// queue family cannot present to the surface, or no 8-bit UNORM format);
    /// [`PresentError::Vulkan`] for a failed call.
    pub(crate) fn new(
        core: Arc<DeviceCore>,
        surface: &Surface,
        fallback: vk::Extent2D,
    ) -> Result<Swapchain, PresentError> {
        if !core.swapchain {
            return Err(PresentError::NoSwapchainSupport("the device has no VK_KHR_swapchain"));
        }
        let (sl, phys, s) = (&surface.loader, core.physical, surface.raw);
        let supported =
            // SAFETY: valid physical device and surface of one instance (as below).
            unsafe { sl.get_physical_device_surface_support(phys, core.queue_family, s) }
                .map_err(|c| PresentError::vulkan("vkGetPhysicalDeviceSurfaceSupportKHR", c))?;
        if !supported {
            return Err(PresentError::NoSwapchainSupport(
                "the device's main queue family cannot present to this surface",
            ));
        }
        // SAFETY: as above.
        let caps = unsafe { sl.get_physical_device_surface_capabilities(phys, s) }
            .map_err(|c| PresentError::vulkan("vkGetPhysicalDeviceSurfaceCapabilitiesKHR", c))?;
        // SAFETY: as above.
        let formats = unsafe { sl.get_physical_device_surface_formats(phys, s) }
            .map_err(|c| PresentError::vulkan("vkGetPhysicalDeviceSurfaceFormatsKHR", c))?;
        let Some(format) =
            FORMATS.iter().find_map(|f| formats.iter().find(|sf| sf.format == *f)).copied()
        else {
            return Err(PresentError::NoSwapchainSupport("no 8-bit UNORM surface format"));
        };
        let extent = if caps.current_extent.width == u32::MAX {
            vk::Extent2D {
                width: fallback
                    .width
                    .clamp(caps.min_image_extent.width, caps.max_image_extent.width),
                height: fallback
                    .height
                    .clamp(caps.min_image_extent.height, caps.max_image_extent.height),
            }
        } else {
            caps.current_extent
        };
        let mut count = caps.min_image_count.max(2) + 1;
        count = count.min(3).max(caps.min_image_count);
        if caps.max_image_count != 0 {
            count = count.min(caps.max_image_count);
        }
        let usage = vk::ImageUsageFlags::TRANSFER_DST
            | (caps.supported_usage_flags & vk::ImageUsageFlags::TRANSFER_SRC);
        let info = vk::SwapchainCreateInfoKHR::default()
            .surface(s)
            .min_image_count(count)
            .image_format(format.format)
            .image_color_space(format.color_space)
            .image_extent(extent)
            .image_array_layers(1)
            .image_usage(usage)
            .image_sharing_mode(vk::SharingMode::EXCLUSIVE)
            .pre_transform(caps.current_transform)
            .composite_alpha(vk::CompositeAlphaFlagsKHR::OPAQUE)
            .present_mode(vk::PresentModeKHR::FIFO)
            .clipped(true);
        let loader = ash::khr::swapchain::Device::new(&core.instance.instance, &core.device);
        // SAFETY: the device has VK_KHR_swapchain (checked); `info` lives across the call; the
        // surface has no other live swapchain (the presenter destroys the old one first).
        let raw = unsafe { loader.create_swapchain(&info, None) }
            .map_err(|c| PresentError::vulkan("vkCreateSwapchainKHR", c))?;
        let mut sc = Swapchain {
            core,
            loader,
            raw,
            images: Vec::new(),
            present_sems: Vec::new(),
            format: format.format,
            extent,
        };
        // SAFETY: a live swapchain of this device.
        sc.images = unsafe { sc.loader.get_swapchain_images(raw) }
            .map_err(|c| PresentError::vulkan("vkGetSwapchainImagesKHR", c))?;
        for _ in 0..sc.images.len() {
            // SAFETY: a plain object creation on a live device.
            let sem = unsafe { sc.core.device.create_semaphore(&Default::default(), None) }
                .map_err(|c| PresentError::vulkan("vkCreateSemaphore", c))?;
            sc.present_sems.push(sem);
        }
        Ok(sc)
    }

    /// The swapchain's images (owned by it).
    pub fn images(&self) -> &[vk::Image] {
        &self.images
    }

    /// The image format.
    pub fn format(&self) -> vk::Format {
        self.format
    }

    /// The image size.
    pub fn extent(&self) -> vk::Extent2D {
        self.extent
    }

    /// The device generation it belongs to.
    pub fn generation(&self) -> u64 {
        self.core.generation
    }
}

impl Drop for Swapchain {
    fn drop(&mut self) {
        // SAFETY: the presenter drops a swapchain only after its queue went idle (under the
        // queue lock) with nothing of its left to submit: no semaphore or image is in use.
        unsafe {
            for s in self.present_sems.drain(..) {
                self.core.device.destroy_semaphore(s, None);
            }
            self.loader.destroy_swapchain(self.raw, None);
        }
    }
}
