//! Fault injection with the feature off: the crate-internal API of `enabled.rs`, as
//! zero-sized types and `#[inline(always)]` functions that do nothing and return `None` or
//! `false`. Call sites stay unconditional; once inlined they fold away, so no fault state
//! exists and no fault branch is left on the hot paths. The public items of `enabled.rs`
//! (`FaultPlan`, `JobFault`, ...) have no counterpart: their users are behind the feature.

use std::mem::size_of;

use ash::vk;

use crate::device::DeviceCore;
use crate::error::{InitError, RecordError};

// Every build without the feature checks that no fault state exists.
const _: () = assert!(
    size_of::<FaultState>() == 0
        && size_of::<JobFaults>() == 0
        && size_of::<PendingHang>() == 0
        && size_of::<DeviceFaults>() == 0,
    "without the `fault-injection` feature fault state is zero-sized"
);

/// Whether fault injection is compiled in (guards loops that only look for injected state).
pub(crate) const ENABLED: bool = false;

/// A device handle's fault state: none.
#[derive(Debug, Default)]
pub(crate) struct FaultState;

impl FaultState {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        FaultState
    }

    #[inline(always)]
    pub(crate) fn arm(&self, _job: &mut JobFaults) {}

    #[inline(always)]
    pub(crate) fn count_recording(
        &self,
        _job: &JobFaults,
        _recorded: &Result<vk::CommandBuffer, RecordError>,
    ) {
    }

    #[inline(always)]
    pub(crate) fn fail_buffer_alloc(&self) -> bool {
        false
    }

    #[inline(always)]
    pub(crate) fn submit_failure(&self, _job: &JobFaults) -> Option<vk::Result> {
        None
    }

    #[inline(always)]
    pub(crate) fn count_failed_submit(&self, _code: vk::Result) {}
}

/// One job's injected fault: none.
#[derive(Debug, Default)]
pub(crate) struct JobFaults;

impl JobFaults {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        JobFaults
    }

    #[inline(always)]
    pub(crate) fn slow_groups(&self, _core: &DeviceCore) -> Option<u32> {
        None
    }

    #[inline(always)]
    pub(crate) fn drops_recording(&self) -> bool {
        false
    }

    #[inline(always)]
    pub(crate) fn hangs(&self) -> bool {
        false
    }

    #[inline(always)]
    pub(crate) fn releasable_hang(&self) -> Option<u64> {
        None
    }

    #[inline(always)]
    pub(crate) fn take_releasable_hang(&mut self) -> Option<u64> {
        None
    }

    #[inline(always)]
    pub(crate) fn pending_hang(&self) -> PendingHang {
        PendingHang
    }
}

/// The injected hang a ring's submission waits for: none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingHang;

impl PendingHang {
    pub(crate) const NONE: PendingHang = PendingHang;

    #[inline(always)]
    pub(crate) fn value(self) -> Option<u64> {
        None
    }

    #[inline(always)]
    pub(crate) fn set_orphan(&mut self) {}

    #[inline(always)]
    pub(crate) fn orphan(self) -> Option<u64> {
        None
    }
}

/// A device generation's hang semaphores and busy-kernel calibration: none.
#[derive(Debug)]
pub(crate) struct DeviceFaults;

impl DeviceFaults {
    #[inline(always)]
    pub(crate) fn create(_d: &ash::Device) -> Result<DeviceFaults, InitError> {
        Ok(DeviceFaults)
    }

    /// Nothing to destroy.
    ///
    /// # Safety
    /// None needed; `unsafe` to match `enabled.rs`.
    #[inline(always)]
    pub(crate) unsafe fn destroy(&self, _d: &ash::Device) {}

    #[inline(always)]
    pub(crate) fn hang_wait(
        &self,
        _job: &mut JobFaults,
        _counts: &FaultState,
    ) -> Option<(vk::Semaphore, u64)> {
        None
    }

    #[inline(always)]
    pub(crate) fn release_hang(&self, _d: &ash::Device, _value: u64) {}

    #[inline(always)]
    pub(crate) fn release_injected(&self, _d: &ash::Device, _wedges: bool) {}

    #[inline(always)]
    pub(crate) fn inherit_calibration(&self, _old: &DeviceFaults) {}
}

/// No busy-kernel calibration.
#[inline(always)]
pub(crate) fn calibrate_busy(_core: &DeviceCore) {}
