//! Prints what the Vulkan loader offers and what gpusched makes of it: every physical device
//! (name, type, API version, driver name and info, queue families), then the device
//! `VulkanDevice::new()` picks (`GPUSCHED_DEVICE` to choose) with the queue families it uses as
//! rings. `scripts/gpu-check.sh` bundles it as the device probe of a GPU run.
//!
//! Run: `cargo run -p gpusched-vulkan --example gpu_probe`. Exits 1 when no device can be
//! created, 2 when the device picked is a CPU one and `GPU_CHECK_ALLOW_CPU=1` is not set.

use std::ffi::CStr;
use std::process::ExitCode;
use std::time::Duration;

use gpusched_vulkan::ash::{self, vk};
use gpusched_vulkan::VulkanDevice;

/// A fixed-size C string field as text.
fn text(raw: &[std::ffi::c_char]) -> String {
    // SAFETY: `c_char` and `u8` have the same layout; the slice is borrowed as bytes.
    let bytes = unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len()) };
    CStr::from_bytes_until_nul(bytes).map_or_else(|_| "?".into(), |s| s.to_string_lossy().into())
}

fn version(v: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(v),
        vk::api_version_minor(v),
        vk::api_version_patch(v)
    )
}

/// Lists every physical device through a plain instance of our own; returns each one's name
/// and type.
fn list_devices() -> Result<Vec<(String, vk::PhysicalDeviceType)>, String> {
    // SAFETY: loads the system's Vulkan loader; its symbols are only used through `ash`.
    let entry = unsafe { ash::Entry::load() }.map_err(|e| format!("no Vulkan loader: {e}"))?;
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_2);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: a valid create info that lives across the call.
    let instance = unsafe { entry.create_instance(&info, None) }
        .map_err(|e| format!("vkCreateInstance: {e}"))?;
    // SAFETY: a live instance; every handle used below comes from it, and it is destroyed
    // last.
    unsafe {
        let physicals = instance.enumerate_physical_devices().unwrap_or_default();
        println!("physical devices: {}", physicals.len());
        let mut out = Vec::new();
        for (i, p) in physicals.iter().enumerate() {
            let mut driver = vk::PhysicalDeviceDriverProperties::default();
            let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver);
            instance.get_physical_device_properties2(*p, &mut props2);
            let props = props2.properties;
            out.push((text(&props.device_name), props.device_type));
            println!(
                "  {i}: {} ({:?}), api {}, driver {} {} (version {:#x}), vendor {:#06x} device {:#06x}",
                text(&props.device_name),
                props.device_type,
                version(props.api_version),
                text(&driver.driver_name),
                text(&driver.driver_info),
                props.driver_version,
                props.vendor_id,
                props.device_id,
            );
            let families = instance.get_physical_device_queue_family_properties(*p);
            for (f, fam) in families.iter().enumerate() {
                println!("     queue family {f}: {:?} x{}", fam.queue_flags, fam.queue_count);
            }
        }
        instance.destroy_instance(None);
        Ok(out)
    }
}

fn main() -> ExitCode {
    let devices = match list_devices() {
        Ok(d) => d,
        Err(e) => {
            println!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let dev = match VulkanDevice::new() {
        Ok(d) => d,
        Err(e) => {
            println!("error: gpusched cannot create a device: {e}");
            return ExitCode::from(1);
        }
    };
    println!("vulkan device: {}", dev.name());
    for f in dev.queue_families() {
        println!("ring family: {f}");
    }
    let cpu = devices.iter().any(|(n, t)| n == dev.name() && *t == vk::PhysicalDeviceType::CPU);
    if dev.close(Duration::from_secs(30)).is_err() {
        println!("warning: the device was still referenced at exit");
    }
    if cpu && std::env::var("GPU_CHECK_ALLOW_CPU").map_or(true, |v| v != "1") {
        println!("error: the device is a CPU driver (set GPU_CHECK_ALLOW_CPU=1 to accept it)");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
