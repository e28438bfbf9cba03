//! `gpusched`: a drm_sched-style GPU job scheduler. The scheduler itself is work in progress;
//! today this crate is the facade that re-exports the [`fence`] and [`resv`] crates.

pub use gpusched_fence as fence;
pub use gpusched_resv as resv;
