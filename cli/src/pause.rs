//! `shardyard pause`: a pod sandbox's first process, the pause image's entrypoint. It holds the
//! pod's namespaces for the containers that join them and does nothing else until it is told to
//! stop (SIGTERM or SIGINT), then exits 0.

pub(crate) fn run() -> anyhow::Result<()> {
    let runtime = crate::runtime::build(1)?;
    runtime.block_on(crate::signal::shutdown_signal());
    Ok(())
}
