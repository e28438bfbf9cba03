//! The intercepted Vulkan commands, the error codes each may return, and the fault to inject.
//!
//! Rule: the layer only ever returns an error code that the Vulkan specification lists for
//! that command (the `errorcodes` of `vk.xml`, minus those that need a feature the caller
//! did not use, such as `VK_ERROR_INVALID_EXTERNAL_HANDLE` for imports). Arming any other
//! code is an [`ArmError`].

use ash::vk;

/// A Vulkan command the layer intercepts and can make fail.
///
/// The discriminant is the `call` number of the C control interface
/// ([`ffi`](crate::ffi)).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultCall {
    /// `vkCreateInstance`.
    CreateInstance = 0,
    /// `vkCreateDevice` (the first creation or a re-creation after a loss alike).
    CreateDevice = 1,
    /// `vkQueueSubmit`: a failed call submits none of its batches.
    QueueSubmit = 2,
    /// `vkQueueSubmit2` (and `vkQueueSubmit2KHR`): a failed call submits none of its batches.
    QueueSubmit2 = 3,
    /// `vkWaitSemaphores` (and `vkWaitSemaphoresKHR`): a failed call returns at once.
    WaitSemaphores = 4,
    /// `vkGetSemaphoreCounterValue` (and `vkGetSemaphoreCounterValueKHR`).
    GetSemaphoreCounterValue = 5,
    /// `vkAllocateMemory`.
    AllocateMemory = 6,
    /// `vkCreateBuffer`.
    CreateBuffer = 7,
    /// `vkMapMemory`.
    MapMemory = 8,
    /// `vkDeviceWaitIdle`: when it reports `VK_ERROR_DEVICE_LOST`, it first waits for the
    /// work already submitted to end (the driver under the layer still runs it), so that the
    /// application may destroy everything after the reported loss, as the specification
    /// allows.
    DeviceWaitIdle = 9,
    /// `vkQueueWaitIdle`: as [`FaultCall::DeviceWaitIdle`], for the queue's work.
    QueueWaitIdle = 10,
    /// `vkAllocateCommandBuffers`: a failed call sets every output handle to null, as the
    /// specification requires.
    AllocateCommandBuffers = 11,
    /// `vkCreateSemaphore`.
    CreateSemaphore = 12,
    /// `vkGetFenceStatus`.
    GetFenceStatus = 13,
    /// `vkWaitForFences`: a failed call returns at once.
    WaitForFences = 14,
}

impl FaultCall {
    /// The number of intercepted commands (one past the largest discriminant).
    pub const COUNT: usize = 15;

    /// Every intercepted command, in discriminant order.
    pub const ALL: [FaultCall; Self::COUNT] = [
        Self::CreateInstance,
        Self::CreateDevice,
        Self::QueueSubmit,
        Self::QueueSubmit2,
        Self::WaitSemaphores,
        Self::GetSemaphoreCounterValue,
        Self::AllocateMemory,
        Self::CreateBuffer,
        Self::MapMemory,
        Self::DeviceWaitIdle,
        Self::QueueWaitIdle,
        Self::AllocateCommandBuffers,
        Self::CreateSemaphore,
        Self::GetFenceStatus,
        Self::WaitForFences,
    ];

    /// The command with this `call` number, if any.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(raw).ok()?).copied()
    }

    /// The `call` number of the C control interface.
    pub fn as_raw(self) -> u32 {
        self as u32
    }

    /// The index of this command in per-command tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The Vulkan command name, such as `"vkQueueSubmit"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::CreateInstance => "vkCreateInstance",
            Self::CreateDevice => "vkCreateDevice",
            Self::QueueSubmit => "vkQueueSubmit",
            Self::QueueSubmit2 => "vkQueueSubmit2",
            Self::WaitSemaphores => "vkWaitSemaphores",
            Self::GetSemaphoreCounterValue => "vkGetSemaphoreCounterValue",
            Self::AllocateMemory => "vkAllocateMemory",
            Self::CreateBuffer => "vkCreateBuffer",
            Self::MapMemory => "vkMapMemory",
            Self::DeviceWaitIdle => "vkDeviceWaitIdle",
            Self::QueueWaitIdle => "vkQueueWaitIdle",
            Self::AllocateCommandBuffers => "vkAllocateCommandBuffers",
            Self::CreateSemaphore => "vkCreateSemaphore",
            Self::GetFenceStatus => "vkGetFenceStatus",
            Self::WaitForFences => "vkWaitForFences",
        }
    }

    /// The error codes the layer may return from this command: the specification's list
    /// (`vkGetFenceStatus`: `VK_ERROR_DEVICE_LOST` only, the one code every version lists).
    pub fn error_codes(self) -> &'static [vk::Result] {
        use vk::Result as R;
        const OOM: &[vk::Result] = &[R::ERROR_OUT_OF_HOST_MEMORY, R::ERROR_OUT_OF_DEVICE_MEMORY];
        const OOM_LOST: &[vk::Result] =
            &[R::ERROR_OUT_OF_HOST_MEMORY, R::ERROR_OUT_OF_DEVICE_MEMORY, R::ERROR_DEVICE_LOST];
        match self {
            Self::CreateInstance => &[
                R::ERROR_OUT_OF_HOST_MEMORY,
                R::ERROR_OUT_OF_DEVICE_MEMORY,
                R::ERROR_INITIALIZATION_FAILED,
                R::ERROR_LAYER_NOT_PRESENT,
                R::ERROR_EXTENSION_NOT_PRESENT,
                R::ERROR_INCOMPATIBLE_DRIVER,
            ],
            Self::CreateDevice => &[
                R::ERROR_OUT_OF_HOST_MEMORY,
                R::ERROR_OUT_OF_DEVICE_MEMORY,
                R::ERROR_INITIALIZATION_FAILED,
                R::ERROR_EXTENSION_NOT_PRESENT,
                R::ERROR_FEATURE_NOT_PRESENT,
                R::ERROR_TOO_MANY_OBJECTS,
                R::ERROR_DEVICE_LOST,
            ],
            Self::MapMemory => &[
                R::ERROR_OUT_OF_HOST_MEMORY,
                R::ERROR_OUT_OF_DEVICE_MEMORY,
                R::ERROR_MEMORY_MAP_FAILED,
            ],
            Self::GetFenceStatus => &[R::ERROR_DEVICE_LOST],
            Self::QueueSubmit
            | Self::QueueSubmit2
            | Self::WaitSemaphores
            | Self::GetSemaphoreCounterValue
            | Self::DeviceWaitIdle
            | Self::QueueWaitIdle
            | Self::WaitForFences => OOM_LOST,
            Self::AllocateMemory
            | Self::CreateBuffer
            | Self::AllocateCommandBuffers
            | Self::CreateSemaphore => OOM,
        }
    }

    /// Whether a lost device makes this command fail: it acts on an existing device and may
    /// return `VK_ERROR_DEVICE_LOST`. Only these commands accept [`Fault::LoseDevice`]; the
    /// others pass through on a lost device.
    pub fn fails_on_lost_device(self) -> bool {
        self != Self::CreateDevice && self.error_codes().contains(&vk::Result::ERROR_DEVICE_LOST)
    }
}

/// What an armed command does when its trigger fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Return this error code without calling down the chain (nothing is submitted, created
    /// or waited for). It must be one of [`FaultCall::error_codes`].
    Fail(vk::Result),
    /// Return `VK_ERROR_DEVICE_LOST` without calling down, and lose the device the call was
    /// made on: from then on every command of that device that can return
    /// `VK_ERROR_DEVICE_LOST` does (see [`FaultCall::fails_on_lost_device`]), until
    /// [`FaultLayer::reset`](crate::FaultLayer::reset).
    LoseDevice,
}

/// When an armed command fails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// Exactly the Nth call after arming (1 is the next call), once; then the command is
    /// disarmed.
    Nth(u64),
    /// Each call independently with this probability (`0.0..=1.0`), drawn from a generator
    /// seeded with `seed` that belongs to this command alone: the same seed and the same
    /// sequence of calls to this command fail the same calls.
    Random {
        /// The probability that one call fails.
        probability: f64,
        /// The seed of this command's generator.
        seed: u64,
    },
}

/// A rejected arming request: the layer state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum ArmError {
    /// No intercepted command has this `call` number.
    #[error("no intercepted Vulkan command has call number {0}")]
    UnknownCall(u32),
    /// The fault action number of the C interface is neither 0 (fail) nor 1 (lose the device).
    #[error("unknown fault action {0} (0: fail with the code, 1: lose the device)")]
    UnknownAction(u32),
    /// The specification does not list this error code for this command.
    #[error("{} cannot return {code:?}: the Vulkan specification does not list it", call.name())]
    CodeNotAllowed {
        /// The command.
        call: FaultCall,
        /// The rejected code.
        code: vk::Result,
    },
    /// [`Fault::LoseDevice`] on a command that cannot report a lost device.
    #[error("{} cannot lose the device (it does not return VK_ERROR_DEVICE_LOST for an existing device)", .0.name())]
    CannotLoseDevice(FaultCall),
    /// [`Trigger::Nth`] counts from 1.
    #[error("the call index of an Nth-call fault counts from 1, got 0")]
    ZeroIndex,
    /// A [`Trigger::Random`] probability outside `0.0..=1.0` (or NaN).
    #[error("fault probability {0} is not within 0.0..=1.0")]
    BadProbability(f64),
}

impl ArmError {
    /// Whether the request named a command, action or code that does not fit (as opposed to a
    /// bad trigger).
    pub fn is_bad_fault(&self) -> bool {
        matches!(
            self,
            Self::UnknownCall(_)
                | Self::UnknownAction(_)
                | Self::CodeNotAllowed { .. }
                | Self::CannotLoseDevice(_)
        )
    }

    /// The status the C control interface returns for this error (negative).
    pub fn status(&self) -> i32 {
        match self {
            Self::UnknownCall(_) => -1,
            Self::UnknownAction(_) => -2,
            Self::CodeNotAllowed { .. } => -3,
            Self::CannotLoseDevice(_) => -4,
            Self::ZeroIndex => -5,
            Self::BadProbability(_) => -6,
        }
    }
}

/// Checks that `fault` fits `call` and that `trigger` is well formed.
pub fn validate(call: FaultCall, trigger: Trigger, fault: Fault) -> Result<(), ArmError> {
    match fault {
        Fault::Fail(code) if !call.error_codes().contains(&code) => {
            return Err(ArmError::CodeNotAllowed { call, code });
        }
        Fault::LoseDevice if !call.fails_on_lost_device() => {
            return Err(ArmError::CannotLoseDevice(call));
        }
        _ => {}
    }
    match trigger {
        Trigger::Nth(0) => Err(ArmError::ZeroIndex),
        Trigger::Random { probability, .. } if !(0.0..=1.0).contains(&probability) => {
            Err(ArmError::BadProbability(probability))
        }
        _ => Ok(()),
    }
}

/// The C interface's `(action, code)` pair for a fault.
pub(crate) fn fault_to_raw(fault: Fault) -> (u32, i32) {
    match fault {
        Fault::Fail(code) => (0, code.as_raw()),
        Fault::LoseDevice => (1, vk::Result::ERROR_DEVICE_LOST.as_raw()),
    }
}

/// The fault of a C interface `(action, code)` pair.
pub(crate) fn fault_from_raw(action: u32, code: i32) -> Result<Fault, ArmError> {
    match action {
        0 => Ok(Fault::Fail(vk::Result::from_raw(code))),
        1 => Ok(Fault::LoseDevice),
        other => Err(ArmError::UnknownAction(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_numbers_round_trip() {
        for (i, call) in FaultCall::ALL.iter().enumerate() {
            assert_eq!(call.index(), i);
            assert_eq!(FaultCall::from_raw(call.as_raw()), Some(*call));
        }
        assert_eq!(FaultCall::from_raw(FaultCall::COUNT as u32), None);
        assert_eq!(FaultCall::from_raw(u32::MAX), None);
    }

    #[test]
    fn only_spec_codes_are_accepted() {
        let lost = Fault::Fail(vk::Result::ERROR_DEVICE_LOST);
        let oom = Fault::Fail(vk::Result::ERROR_OUT_OF_DEVICE_MEMORY);
        assert_eq!(
            validate(FaultCall::AllocateMemory, Trigger::Nth(1), lost),
            Err(ArmError::CodeNotAllowed {
                call: FaultCall::AllocateMemory,
                code: vk::Result::ERROR_DEVICE_LOST
            })
        );
        assert_eq!(validate(FaultCall::AllocateMemory, Trigger::Nth(1), oom), Ok(()));
        assert_eq!(validate(FaultCall::QueueSubmit, Trigger::Nth(1), lost), Ok(()));
        assert_eq!(
            validate(FaultCall::GetFenceStatus, Trigger::Nth(1), oom),
            Err(ArmError::CodeNotAllowed {
                call: FaultCall::GetFenceStatus,
                code: vk::Result::ERROR_OUT_OF_DEVICE_MEMORY
            })
        );
        let success = Fault::Fail(vk::Result::SUCCESS);
        assert!(validate(FaultCall::QueueSubmit, Trigger::Nth(1), success).is_err());
    }

    #[test]
    fn lose_device_only_where_a_device_can_be_lost() {
        let lose = Fault::LoseDevice;
        for call in FaultCall::ALL {
            let result = validate(call, Trigger::Nth(1), lose);
            assert_eq!(result.is_ok(), call.fails_on_lost_device(), "{call:?}");
        }
        assert!(FaultCall::QueueSubmit.fails_on_lost_device());
        assert!(FaultCall::WaitSemaphores.fails_on_lost_device());
        assert!(!FaultCall::AllocateMemory.fails_on_lost_device());
        assert!(!FaultCall::CreateDevice.fails_on_lost_device());
    }

    #[test]
    fn bad_triggers_are_rejected() {
        let oom = Fault::Fail(vk::Result::ERROR_OUT_OF_HOST_MEMORY);
        let call = FaultCall::CreateBuffer;
        assert_eq!(validate(call, Trigger::Nth(0), oom), Err(ArmError::ZeroIndex));
        for probability in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let trigger = Trigger::Random { probability, seed: 1 };
            assert!(matches!(validate(call, trigger, oom), Err(ArmError::BadProbability(_))));
        }
        for probability in [0.0, 0.5, 1.0] {
            assert_eq!(validate(call, Trigger::Random { probability, seed: 1 }, oom), Ok(()));
        }
    }

    #[test]
    fn faults_round_trip_through_the_c_pair() {
        for fault in [Fault::LoseDevice, Fault::Fail(vk::Result::ERROR_OUT_OF_HOST_MEMORY)] {
            let (action, code) = fault_to_raw(fault);
            assert_eq!(fault_from_raw(action, code), Ok(fault));
        }
        assert_eq!(fault_from_raw(2, 0), Err(ArmError::UnknownAction(2)));
    }
}
