//! `spn_job`: a cancellation handle for one running call.
use crate::boundary::{boundary, invalid, quiet, spn_status};
use crate::handles::Registry;
use spn_core::sampler::CancelToken;
use std::sync::Arc;

pub struct SpnJob {
    pub token: CancelToken,
}

pub static JOBS: Registry<SpnJob> = Registry::new("job");

/// The job a call was given (NULL: none).
pub fn job_ref(j: *const SpnJob) -> Result<Option<Arc<SpnJob>>, crate::boundary::Fail> {
    if j.is_null() {
        return Ok(None);
    }
    JOBS.get(j).map(Some)
}

/// # Safety
/// `out_job` is NULL or points to writable storage for a handle.
#[no_mangle]
pub unsafe extern "C" fn spn_job_new(out_job: *mut *mut SpnJob) -> spn_status {
    boundary("spn_job_new", || {
        if out_job.is_null() {
            return Err(invalid("out_job is NULL"));
        }
        let job = JOBS.insert(SpnJob {
            token: CancelToken::new(),
        })?;
        // SAFETY: non-null, and writable by the caller's contract.
        unsafe { *out_job = job };
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn spn_job_cancel(job: *mut SpnJob) -> spn_status {
    boundary("spn_job_cancel", || {
        JOBS.get(job)?.token.cancel();
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn spn_job_free(job: *mut SpnJob) {
    quiet(|| JOBS.remove(job))
}
