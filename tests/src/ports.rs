//! Free TCP ports on 127.0.0.1.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// Ports this test process has already handed out; never handed out twice, so two servers
/// started by one test cannot be given the same port even when the first one is not listening
/// yet.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Chosen outside the kernel's ephemeral range ([`shardyard_dev::ports::unclaimed_port`]), so no
/// outgoing connection takes it as its source port, also while a server is down to be restarted
/// on it. Another server can still take it before the caller binds it; the servers started by
/// this crate retry with a new port when that happens. Within one process a port is never
/// returned twice.
///
/// # Panics
///
/// If no port can be bound at all (the loopback interface is unusable), which no test can survive.
pub fn free_port() -> u16 {
    let mut last_error = None;
    for _ in 0..100 {
        match shardyard_dev::ports::unclaimed_port() {
            Ok(port) => {
                let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
                if guard.get_or_insert_with(HashSet::new).insert(port) {
                    return port;
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    panic!("cannot find a free TCP port on 127.0.0.1 (last error: {last_error:?})");
}
