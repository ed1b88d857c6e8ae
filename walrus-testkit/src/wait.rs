//! Polling with a deadline: the one way tests wait for a distributed system to settle.
//! The panic names what was awaited and, where given, the state that explains it.

use std::time::{Duration, Instant};

/// Generous on a loaded 2-core machine shared by several builds.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// Polls `f` every 50 ms until it gives `Some`; panics after `timeout` naming `what`.
pub fn poll_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until_with(what, timeout, String::new, f)
}

/// [`poll_until`], with `context()` (the logs, the last answer) in the panic.
pub fn poll_until_with<T>(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    poll_until_ok(what, timeout, || f().ok_or_else(&context))
}

/// Polls `f` every 50 ms until it gives `Ok`; panics after `timeout` with `what` and the
/// last `Err` (the state `f` saw).
pub fn poll_until_ok<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for: {what}\n{last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// [`poll_until`] inside a tokio runtime (sleeps with `tokio::time`).
pub async fn poll_until_async<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() <= timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` every 50 ms until it is true or `timeout` passes; whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
