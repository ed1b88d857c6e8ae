//! A reader that gives up when its peer stops sending: a replica's pull must not hang on a
//! primary that is alive (so QUIC's idle timeout never fires) but sends nothing more.
//!
//! Only time spent *waiting* for bytes counts: while the puller is busy with local work
//! (hashing, linking) it does not poll the reader, and that time is not the peer's fault.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

/// How long a pull waits for the primary's next bytes before it gives up (and retries).
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Wraps a reader: a read that has waited `limit` without a byte fails with
/// [`io::ErrorKind::TimedOut`].
pub struct StallGuard<R> {
    inner: R,
    limit: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<R> StallGuard<R> {
    /// `inner`, failing any read that waits longer than `limit`.
    pub fn new(inner: R, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            waiting: None,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for StallGuard<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.waiting = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = this.limit;
                let sleep = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the primary sent nothing for {limit:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_fails_the_read_after_the_limit_and_a_slow_one_does_not() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut r = StallGuard::new(ours, Duration::from_secs(10));
        let mut buf = [0u8; 4];
        // Bytes every 9 s: each wait is under the limit, so the whole read succeeds.
        let writer = tokio::spawn(async move {
            for b in [1u8, 2, 3, 4] {
                tokio::time::sleep(Duration::from_secs(9)).await;
                peer.write_all(&[b]).await.unwrap();
            }
            peer // kept open, silent from now on
        });
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        let _peer = writer.await.unwrap();
        // Then silence: the next read fails once it has waited 10 s.
        let start = tokio::time::Instant::now();
        let e = r.read_u8().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
