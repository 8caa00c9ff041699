//! The async runtime a service runs on.

use anyhow::Context as _;

/// One thread (a current-thread runtime) when `threads` is 1, else a multi-thread runtime with
/// `threads` workers. One thread is the default of the services: handing work between runtime
/// threads cost the gateway a third more CPU per event than everything else it does
/// (`BENCHMARKS.md`), and one thread carries far more than a pod usually sees.
pub(crate) fn build(threads: u16) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(usize::from(threads));
        builder
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}
