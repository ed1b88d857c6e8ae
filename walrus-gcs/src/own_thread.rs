//! A thread of its own for a member node's protocol or a client's link
//! ([`crate::GcsThread::Own`]): a named OS thread runs a current-thread tokio runtime from
//! the start of the node until its main task ends, whatever runtime the caller has.

use std::future::Future;
use tokio::sync::oneshot;

/// Runs `start` on a new thread named `name` with a current-thread runtime, and returns
/// what it returns. On success `start` also returns a receiver that fires (or closes) when
/// the started thing has stopped; the thread keeps its runtime, and so every task spawned
/// on it, until then. `thread_error` makes the caller's error from a failure to start the
/// thread or its runtime.
pub(crate) async fn start<T, E, F, Fut>(
    name: String,
    start: F,
    thread_error: fn(String) -> E,
) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(T, oneshot::Receiver<()>), E>>,
{
    let (ready_tx, ready_rx) = oneshot::channel();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(thread_error(e.to_string())));
                return;
            }
        };
        runtime.block_on(async move {
            match start().await {
                Ok((value, stopped)) => {
                    if ready_tx.send(Ok(value)).is_ok() {
                        let _ = stopped.await;
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
    });
    if let Err(e) = spawned {
        return Err(thread_error(e.to_string()));
    }
    ready_rx
        .await
        .unwrap_or_else(|_| Err(thread_error("the thread ended before it started".into())))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_thread_keeps_its_runtime_until_the_started_thing_stops() {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let (name, mut ticks) = super::start(
            "own-thread-test".into(),
            move || async move {
                let (tick_tx, tick_rx) = tokio::sync::mpsc::unbounded_channel();
                // A task spawned during the start runs on the thread's runtime.
                tokio::spawn(async move {
                    let _ = tick_tx.send(());
                    let _ = stop_rx.await;
                    let _ = tick_tx.send(());
                    let _ = stopped_tx.send(());
                });
                let name = std::thread::current().name().map(str::to_owned);
                Ok::<_, String>(((name, tick_rx), stopped_rx))
            },
            |e| e,
        )
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("own-thread-test"));
        assert_eq!(ticks.recv().await, Some(()));
        let _ = stop_tx.send(());
        assert_eq!(ticks.recv().await, Some(()));
        // The task ended, then the runtime went with the thread: the channel closes.
        assert_eq!(ticks.recv().await, None);
    }
}
