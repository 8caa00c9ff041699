//! A stand-in "test process" for the harness's watchdog test: starts `sleep 300` under a
//! `ProcessGuard`, prints its pid, and waits to be killed with SIGKILL (so no destructor runs
//! and only the watchdog can clean up).

use std::process::Command;
use std::time::Duration;

use shardyard_tests::ProcessGuard;

fn main() -> anyhow::Result<()> {
    let mut command = Command::new("sleep");
    command.arg("300");
    let guard = ProcessGuard::spawn("orphan-to-be", command)?;
    println!("orphan={}", guard.pid());
    std::thread::sleep(Duration::from_secs(300));
    Ok(())
}
