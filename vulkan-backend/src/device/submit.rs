//! Implicit synchronisation of a submission (`drm_sched_job_add_implicit_dependencies`):
//! lock every resource ([`GpuResource`]: buffers, images, an engine's own objects) a job
//! declared in one [`Exec`] transaction, add their fences as the job's dependencies, arm it,
//! and add its finished fence to each resource.

use std::sync::Arc;

use gpusched::resv::{Exec, Usage};
use gpusched::{Access, ArmError, ArmFailure, ArmedJob, Entity};

use crate::error::SubmitError;
use crate::resource::{same, GpuResource};
use crate::ring::VulkanRing;
use crate::VulkanJob;

/// [`VulkanDevice::arm`](crate::VulkanDevice::arm).
pub(super) fn arm(
    entity: &Entity<VulkanRing>,
    mut job: VulkanJob,
) -> Result<ArmedJob<VulkanRing>, SubmitError> {
    // Distinct resources (by `Resv`), each with its strongest access.
    let mut objects: Vec<(Arc<dyn GpuResource>, Access)> =
        Vec::with_capacity(job.writes.len() + job.reads.len());
    for (b, a) in job
        .writes
        .iter()
        .map(|b| (b, Access::Write))
        .chain(job.reads.iter().map(|b| (b, Access::Read)))
    {
        if !objects.iter().any(|(o, _)| same(&**o, &**b)) {
            objects.push((b.clone(), a));
        }
    }
    let resvs: Vec<&gpusched::resv::Resv> = objects.iter().map(|(b, _)| b.resv()).collect();
    let mut exec = Exec::new();
    let armed = exec
        .lock_all(&resvs, |guards| {
            let deps = std::mem::take(&mut job.deps);
            let mut builder = entity.job(job).dependencies(deps);
            for (g, (_, access)) in guards.iter_mut().zip(&objects) {
                builder = builder.resv_dependencies(g, *access);
                if g.reserve_fences(1).is_err() {
                    return Err(SubmitError::Reserve);
                }
            }
            let armed = builder.arm().map_err(|ArmError { error, .. }| match error {
                ArmFailure::Backend(e) => SubmitError::Record(e),
                ArmFailure::Sched(e) => SubmitError::Sched(e),
            })?;
            let finished = armed.finished().clone();
            for (g, (_, access)) in guards.iter_mut().zip(&objects) {
                let usage = match access {
                    Access::Write => Usage::Write,
                    Access::Read => Usage::Read,
                };
                g.add_fence(finished.clone(), usage);
            }
            Ok(armed)
        })
        .map_err(SubmitError::Lock)??;
    Ok(armed)
}
