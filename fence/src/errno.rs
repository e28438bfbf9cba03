//! The kernel errno values a `dma_fence` carries, negated as the kernel stores them
//! (`dma_fence_set_error(fence, -EIO)`), for [`FenceError::Driver`](crate::FenceError::Driver)
//! codes and [`FenceError::errno`](crate::FenceError::errno). Linux's generic values
//! (`include/uapi/asm-generic/errno-base.h`, `errno.h`), the same on every architecture
//! Linux GPU drivers run on.

/// `-ESRCH`: no such process (a killed entity).
pub const ESRCH: i32 = -3;
/// `-EIO`: an I/O error (a generic hardware or driver failure).
pub const EIO: i32 = -5;
/// `-ENOMEM`: out of memory (host or device).
pub const ENOMEM: i32 = -12;
/// `-EFAULT`: a bad address (a job touched memory it may not).
pub const EFAULT: i32 = -14;
/// `-ENODEV`: no such device (the device was lost).
pub const ENODEV: i32 = -19;
/// `-EINVAL`: an invalid argument (a job that cannot be recorded as given).
pub const EINVAL: i32 = -22;
/// `-EPIPE`: a broken pipe (the producer went away without signalling).
pub const EPIPE: i32 = -32;
/// `-ETIME`: a timer expired (a job blamed for a hang).
pub const ETIME: i32 = -62;
/// `-ECANCELED`: the operation was cancelled.
pub const ECANCELED: i32 = -125;
/// `-ERESTARTSYS`: interrupted, to be restarted (kernel-internal, never seen by user space).
pub const ERESTARTSYS: i32 = -512;
