//! The Rust side: finding the built layer, writing its manifest, pointing the Vulkan loader at
//! it ([`LayerSetup`]), and arming faults in the loaded layer ([`FaultLayer`]).
//!
//! Rule: the layer's state lives in the library the Vulkan loader loaded. [`FaultLayer`]
//! opens that same file with `dlopen`, which returns the already loaded copy (the dynamic
//! linker matches the path and the file's identity), so both see one state. The statics of
//! this rlib, linked into a test, are never used for control.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use ash::vk;

use crate::call::{fault_to_raw, validate, ArmError, Fault, FaultCall, Trigger};
use crate::ffi::ABI_VERSION;

/// The layer's name, to put in `VkInstanceCreateInfo::ppEnabledLayerNames`.
pub const LAYER_NAME: &core::ffi::CStr = c"VK_LAYER_GPUSCHED_fault";

/// The file name of the layer manifest [`LayerSetup`] writes.
pub const MANIFEST_FILE: &str = "VkLayer_gpusched_fault.json";

/// The environment variable that overrides where [`LayerSetup::locate`] looks for the layer
/// library: the path of `libvk_fault_layer.so` itself.
pub const LIBRARY_ENV: &str = "GPUSCHED_FAULT_LAYER_LIB";

/// The loader's environment variable [`LayerSetup::install_env`] sets: extra directories
/// searched for explicit layer manifests, on top of the system ones (where the validation
/// layer lives). `VK_LAYER_PATH` would replace the system directories instead.
pub const LAYER_PATH_ENV: &str = "VK_ADD_LAYER_PATH";

/// The loader's environment variable listing explicit layers to enable in every instance
/// ([`LayerSetup::install_env_enabled`]).
pub const ENABLE_ENV: &str = "VK_INSTANCE_LAYERS";

/// Why the layer could not be set up or opened.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The layer library is not built where it was looked for.
    #[error(
        "the fault layer library is not built (looked for {}); run `cargo build -p vk-fault-layer` \
         or set {LIBRARY_ENV}",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    LibraryMissing(Vec<PathBuf>),
    /// Reading the executable's path, resolving the library's or writing the manifest failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The library path is not UTF-8, which a JSON manifest cannot name.
    #[error("the layer library path {} is not UTF-8", .0.display())]
    NonUtf8Path(PathBuf),
    /// `dlopen` of the library failed.
    #[error("opening the fault layer library failed: {0}")]
    Open(#[source] libloading::Error),
    /// The library lacks a control function (not a fault layer library).
    #[error("the fault layer library has no `{name}`: {source}")]
    MissingSymbol {
        /// The symbol name.
        name: &'static str,
        /// The error.
        #[source]
        source: libloading::Error,
    },
    /// The library was built with another control interface version.
    #[error("the fault layer library speaks control interface {found}, this crate {expected}")]
    AbiMismatch {
        /// The library's version.
        found: u32,
        /// This crate's, [`ABI_VERSION`].
        expected: u32,
    },
}

impl SetupError {
    /// Whether the layer library is simply not built (the case a developer without the
    /// build may skip; CI must not).
    pub fn is_library_missing(&self) -> bool {
        matches!(self, Self::LibraryMissing(_))
    }
}

/// The layer library's file name, `libvk_fault_layer.so` on Linux.
fn library_file_name() -> String {
    format!("{}vk_fault_layer{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// The built layer library, its manifest directory, and the loader environment that finds it.
#[derive(Clone, Debug)]
pub struct LayerSetup {
    library: PathBuf,
    manifest_dir: PathBuf,
}

impl LayerSetup {
    /// Finds the layer library ([`LIBRARY_ENV`] if set; else next to the running executable or
    /// in its parent directory, which is `target/<profile>/` for a test in
    /// `target/<profile>/deps/`) and writes its manifest (see [`LayerSetup::with_library`]).
    pub fn locate() -> Result<Self, SetupError> {
        if let Some(path) = std::env::var_os(LIBRARY_ENV) {
            return Self::with_library(PathBuf::from(path));
        }
        let exe = std::env::current_exe().map_err(|source| SetupError::Io {
            what: "finding the running executable",
            path: PathBuf::new(),
            source,
        })?;
        let name = library_file_name();
        let candidates: Vec<PathBuf> =
            exe.ancestors().skip(1).take(2).map(|dir| dir.join(&name)).collect();
        match candidates.iter().find(|path| path.is_file()) {
            Some(found) => Self::with_library(found.clone()),
            None => Err(SetupError::LibraryMissing(candidates)),
        }
    }

    /// Uses the layer library at `library` and writes its manifest, with the absolute
    /// library path, to `vk-fault-layer-manifest/` beside it. The manifest is written to a
    /// temporary file and renamed into place, so that concurrent test processes never read a
    /// partial one.
    pub fn with_library(library: impl Into<PathBuf>) -> Result<Self, SetupError> {
        let library = library.into();
        if !library.is_file() {
            return Err(SetupError::LibraryMissing(vec![library]));
        }
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| SetupError::Io { what, path, source }
        };
        let library =
            library.canonicalize().map_err(io("resolving the layer library path", &library))?;
        let dir = library.parent().unwrap_or(Path::new("/")).join("vk-fault-layer-manifest");
        std::fs::create_dir_all(&dir).map_err(io("creating the manifest directory", &dir))?;
        let library_str =
            library.to_str().ok_or_else(|| SetupError::NonUtf8Path(library.clone()))?;
        let manifest = serde_json::json!({
            "file_format_version": "1.2.0",
            "layer": {
                "name": LAYER_NAME.to_str().unwrap_or_default(),
                "type": "INSTANCE",
                "library_path": library_str,
                "api_version": "1.3.0",
                "implementation_version": "1",
                "description": "gpusched fault injection: makes chosen Vulkan calls fail \
                                the way real drivers fail"
            }
        });
        let text = format!("{manifest:#}\n");
        let path = dir.join(MANIFEST_FILE);
        let temp = dir.join(format!("{MANIFEST_FILE}.{}.tmp", std::process::id()));
        std::fs::write(&temp, text).map_err(io("writing the layer manifest", &temp))?;
        std::fs::rename(&temp, &path).map_err(io("installing the layer manifest", &path))?;
        Ok(Self { library, manifest_dir: dir })
    }

    /// The absolute path of the layer library.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The directory holding the manifest ([`MANIFEST_FILE`]).
    pub fn manifest_dir(&self) -> &Path {
        &self.manifest_dir
    }

    /// The value for [`LAYER_PATH_ENV`]: the manifest directory, then the variable's current
    /// value (unchanged if it already names the directory).
    pub fn layer_path(&self) -> OsString {
        let current = std::env::var_os(LAYER_PATH_ENV).unwrap_or_default();
        if std::env::split_paths(&current).any(|dir| dir == self.manifest_dir) {
            return current;
        }
        let dirs = std::iter::once(self.manifest_dir.clone())
            .chain(std::env::split_paths(&current).filter(|d| !d.as_os_str().is_empty()));
        // Joining fails only on a directory containing the separator, which these paths
        // (from the file system and the variable itself) do not; keep the old value then.
        std::env::join_paths(dirs).unwrap_or(current)
    }

    /// Sets [`LAYER_PATH_ENV`] to [`LayerSetup::layer_path`] in this process. The loader
    /// reads it when it scans for layers (`vkCreateInstance`,
    /// `vkEnumerateInstanceLayerProperties`), so call this before that, while no other
    /// thread reads the environment (first thing in a test, under the test's lock).
    pub fn install_env(&self) {
        std::env::set_var(LAYER_PATH_ENV, self.layer_path());
    }

    /// Like [`LayerSetup::install_env`], and also enables the layer in every instance of the
    /// process through the loader's [`ENABLE_ENV`] (`VK_INSTANCE_LAYERS`), so that code which
    /// creates its own instance (a backend under test) gets it without naming it. The loader
    /// puts layers enabled this way above those the application names, so the fault layer
    /// stays above the validation layer. Same threading caveat as `install_env`.
    pub fn install_env_enabled(&self) {
        self.install_env();
        let name = LAYER_NAME.to_str().unwrap_or_default();
        let current = std::env::var(ENABLE_ENV).unwrap_or_default();
        if !current.split(':').any(|layer| layer == name) {
            let value =
                if current.is_empty() { name.to_owned() } else { format!("{name}:{current}") };
            std::env::set_var(ENABLE_ENV, value);
        }
    }

    /// Opens the layer library for control (see [`FaultLayer::open`]).
    pub fn open(&self) -> Result<FaultLayer, SetupError> {
        FaultLayer::open(&self.library)
    }
}

/// The control functions, copied out of the library (valid while it stays loaded).
#[derive(Clone, Copy)]
struct ControlFns {
    arm_nth: extern "C" fn(u32, u64, u32, i32) -> i32,
    arm_random: extern "C" fn(u32, f64, u64, u32, i32) -> i32,
    disarm: extern "C" fn(u32) -> i32,
    reset: extern "C" fn(),
    lose_device: extern "C" fn() -> u64,
    calls: extern "C" fn(u32) -> u64,
    injected: extern "C" fn(u32) -> u64,
    live_instances: extern "C" fn() -> u64,
    live_devices: extern "C" fn() -> u64,
    lost_devices: extern "C" fn() -> u64,
}

/// A handle on the loaded fault layer's process-global state.
///
/// Every handle on the same library controls the same state: arm, count and reset through
/// any of them. The handle keeps the library loaded, so that the state survives an instance
/// destroyed and created again (the loader unloads a layer with its last instance).
pub struct FaultLayer {
    fns: ControlFns,
    path: PathBuf,
    // Last: the function pointers above must not outlive it.
    _library: libloading::Library,
}

impl fmt::Debug for FaultLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayer").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FaultLayer {
    /// Opens the layer library at `path` (the manifest's `library_path`: if the loader has
    /// loaded it, this is the loader's copy) and checks its control interface version.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SetupError> {
        let path = path.as_ref().to_path_buf();
        // SAFETY: loading our own layer library runs no initialisers beyond Rust's (it has
        // no constructors of its own).
        let library = unsafe { libloading::Library::new(&path) }.map_err(SetupError::Open)?;
        macro_rules! get {
            ($name:literal: $ty:ty) => {{
                // SAFETY: the library exports `$name` with type `$ty` (defined in
                // `crate::ffi`, the same source); the pointer is copied out and used only
                // while `library` is kept alive in the returned handle.
                let symbol = unsafe { library.get::<$ty>(concat!($name, "\0").as_bytes()) };
                *symbol.map_err(|source| SetupError::MissingSymbol { name: $name, source })?
            }};
        }
        let abi_version = get!("gpusched_fault_layer_abi_version": extern "C" fn() -> u32);
        let found = abi_version();
        if found != ABI_VERSION {
            return Err(SetupError::AbiMismatch { found, expected: ABI_VERSION });
        }
        let fns = ControlFns {
            arm_nth: get!("gpusched_fault_layer_arm_nth": extern "C" fn(u32, u64, u32, i32) -> i32),
            arm_random: get!(
                "gpusched_fault_layer_arm_random": extern "C" fn(u32, f64, u64, u32, i32) -> i32
            ),
            disarm: get!("gpusched_fault_layer_disarm": extern "C" fn(u32) -> i32),
            reset: get!("gpusched_fault_layer_reset": extern "C" fn()),
            lose_device: get!("gpusched_fault_layer_lose_device": extern "C" fn() -> u64),
            calls: get!("gpusched_fault_layer_calls": extern "C" fn(u32) -> u64),
            injected: get!("gpusched_fault_layer_injected": extern "C" fn(u32) -> u64),
            live_instances: get!("gpusched_fault_layer_live_instances": extern "C" fn() -> u64),
            live_devices: get!("gpusched_fault_layer_live_devices": extern "C" fn() -> u64),
            lost_devices: get!("gpusched_fault_layer_lost_devices": extern "C" fn() -> u64),
        };
        Ok(Self { fns, path, _library: library })
    }

    /// The library path this handle opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Arms `call`: `trigger` says which calls fail, `fault` how. Replaces the command's
    /// previous rule. The request is validated first (only the specification's error codes,
    /// [`Fault::LoseDevice`] only where a device can be lost, a well-formed trigger).
    pub fn arm(&self, call: FaultCall, trigger: Trigger, fault: Fault) -> Result<(), ArmError> {
        validate(call, trigger, fault)?;
        let (action, code) = fault_to_raw(fault);
        let status = match trigger {
            Trigger::Nth(n) => (self.fns.arm_nth)(call.as_raw(), n, action, code),
            Trigger::Random { probability, seed } => {
                (self.fns.arm_random)(call.as_raw(), probability, seed, action, code)
            }
        };
        // The library validates with the same code, so it cannot refuse what passed above.
        debug_assert_eq!(status, 0, "the layer refused a validated fault");
        Ok(())
    }

    /// Arms `call` to return `code` at exactly its `n`th call from now (1: the next), once.
    pub fn fail_nth(&self, call: FaultCall, n: u64, code: vk::Result) -> Result<(), ArmError> {
        self.arm(call, Trigger::Nth(n), Fault::Fail(code))
    }

    /// Arms `call` to return `code` at each call with `probability`, from a generator seeded
    /// with `seed` that only this command's calls advance.
    pub fn fail_random(
        &self,
        call: FaultCall,
        probability: f64,
        seed: u64,
        code: vk::Result,
    ) -> Result<(), ArmError> {
        self.arm(call, Trigger::Random { probability, seed }, Fault::Fail(code))
    }

    /// Disarms `call` (its counters stay).
    pub fn disarm(&self, call: FaultCall) {
        (self.fns.disarm)(call.as_raw());
    }

    /// Disarms everything, zeroes the counters and makes every device healthy again: the
    /// layer passes every call through.
    pub fn reset(&self) {
        (self.fns.reset)();
    }

    /// Loses every live device: from now on each of its commands that can return
    /// `VK_ERROR_DEVICE_LOST` ([`FaultCall::fails_on_lost_device`]) does, at once (waits
    /// included), without calling down; the others pass through. Devices created later are
    /// healthy (a re-created device works). Returns the number of devices lost.
    pub fn lose_device(&self) -> u64 {
        (self.fns.lose_device)()
    }

    /// Calls of `call` since the last reset, passed through or failed.
    pub fn calls(&self, call: FaultCall) -> u64 {
        (self.fns.calls)(call.as_raw())
    }

    /// Calls of `call` the layer failed since the last reset.
    pub fn injected(&self, call: FaultCall) -> u64 {
        (self.fns.injected)(call.as_raw())
    }

    /// Instances created through the layer and not destroyed (process-wide).
    pub fn live_instances(&self) -> u64 {
        (self.fns.live_instances)()
    }

    /// Devices created through the layer and not destroyed (process-wide).
    pub fn live_devices(&self) -> u64 {
        (self.fns.live_devices)()
    }

    /// Live devices that are lost.
    pub fn lost_devices(&self) -> u64 {
        (self.fns.lost_devices)()
    }
}
