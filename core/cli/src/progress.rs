//! Progress bars and Ctrl-C for long work.
use indicatif::{ProgressBar, ProgressStyle};
use spn::sampler::{CancelToken, SampleProgress};

pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Cancels on Ctrl-C.
pub fn cancel_on_ctrl_c() -> CancelToken {
    let token = CancelToken::new();
    let t = token.clone();
    let _ = ctrlc::set_handler(move || t.cancel());
    token
}

pub fn sample_bar(pb: &ProgressBar) -> impl FnMut(&SampleProgress) -> bool + '_ {
    sample_bar_part(pb, 0, 1)
}

/// Progress of sampler call `part` of `parts` equal ones, on one bar.
pub fn sample_bar_part(
    pb: &ProgressBar,
    part: usize,
    parts: usize,
) -> impl FnMut(&SampleProgress) -> bool + '_ {
    move |p| {
        pb.set_length(p.total * parts as u64);
        pb.set_position(p.total * part as u64 + p.done);
        pb.set_message(format!(
            "batch {}/{} stage {} slice {}",
            part * p.batches + p.batch + 1,
            parts * p.batches,
            p.stage,
            p.slice
        ));
        true
    }
}
