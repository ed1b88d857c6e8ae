//! The Replicator's test helpers (feature `actors`): a primary serving over TCP loopback,
//! replicas that follow its announcements, tree comparison, log capture.

pub use crate::net::wait_port;
pub use crate::process::{need, ChildGuard};
pub use crate::rsync::RsyncDaemon;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use walrus_actors::model::Generation;
use walrus_actors::replicator::manifest::{Kind, Limits, Scanner};
use walrus_actors::replicator::store::{ReplicaStore, StoreConfig};
use walrus_actors::replicator::transfer::{
    pull, serve, PrimarySource, PullReport, ServeOptions, TransferError,
};

/// A primary serving `source` on a TCP loopback port until dropped.
pub struct Server {
    /// Where it serves.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `source` to every connection on a free loopback port.
pub async fn serve_tcp(source: Arc<PrimarySource>, opts: ServeOptions) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let source = source.clone();
            tokio::spawn(async move {
                let (r, w) = s.into_split();
                if let Err(e) = serve(&source, r, w, opts).await {
                    tracing::warn!(error = %e, "test primary: connection ended");
                }
            });
        }
    });
    Server { addr, task }
}

/// A primary for the tree at `root` with generation 1 scanned and published, and the
/// scanner that scans the next ones.
pub fn primary_at_generation_1(root: &Path) -> (Arc<PrimarySource>, Scanner) {
    let source = Arc::new(PrimarySource::new(root).expect("opening the primary source"));
    let mut scanner = Scanner::new();
    source.publish(
        scanner
            .scan(root, Generation(1), &Limits::default())
            .expect("scanning generation 1"),
    );
    (source, scanner)
}

/// One pull over a fresh TCP connection.
pub async fn pull_tcp(
    store: &mut ReplicaStore,
    addr: SocketAddr,
) -> Result<PullReport, TransferError> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, w) = s.into_split();
    pull(store, r, w).await
}

/// A replica that pulls whenever the primary announces a generation (the in-process
/// stand-in for the `Replicators` group), until dropped.
pub struct Follower {
    /// Where its store is.
    pub store_dir: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a [`Follower`] of `source` (served at `addr`) into `store_dir`.
pub fn follow(source: &PrimarySource, addr: SocketAddr, store_dir: &Path) -> Follower {
    let mut announce = source.subscribe();
    let dir = store_dir.to_path_buf();
    let task = tokio::spawn(async move {
        let mut store = ReplicaStore::open(&dir, StoreConfig::default()).unwrap();
        loop {
            let want = *announce.borrow_and_update();
            while store.current_generation() < want {
                if let Err(e) = pull_tcp(&mut store, addr).await {
                    tracing::info!(error = %e, "follower: pull failed, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if announce.changed().await.is_err() {
                return;
            }
        }
    });
    Follower {
        store_dir: store_dir.to_path_buf(),
        task,
    }
}

/// A comparable view of a tree: path → (kind/content, mode & 0o777, file mtime).
pub type Tree = BTreeMap<String, (String, u32, i64)>;

/// The [`Tree`] of `root`, scanned.
pub fn tree(root: &Path) -> Tree {
    let m = Scanner::new()
        .scan(root, Generation(0), &Limits::default())
        .unwrap();
    m.entries
        .into_iter()
        .map(|e| {
            let (what, mtime) = match &e.kind {
                Kind::Dir => ("dir".to_owned(), e.mtime.secs),
                Kind::File { hash, .. } => (format!("file {} {hash:?}", e.size), e.mtime.secs),
                Kind::Symlink { target } => (format!("link {target}"), 0),
            };
            (e.path.to_string(), (what, e.mode & 0o777, mtime))
        })
        .collect()
}

/// Polls until `replica` shows the same tree as `root`; panics with the difference.
pub async fn wait_same(root: &Path, replica: &Path, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let want = tree(root);
        let got = if replica.exists() {
            tree(replica)
        } else {
            Tree::new()
        };
        if want == got {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let diff: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .chain(got.keys().filter(|k| !want.contains_key(*k)).cloned())
                .collect();
            panic!(
                "{what}: {} differs from {}: {diff:?}",
                replica.display(),
                root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets `p`'s permission bits.
pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Captures tracing output (for "refused and logged" checks).
#[derive(Clone, Default)]
pub struct LogBuf(
    /// The bytes.
    pub Arc<Mutex<Vec<u8>>>,
);

impl LogBuf {
    /// What was captured.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a subscriber writing into the returned buffer for this thread.
pub fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    let buf = LogBuf::default();
    let b = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || b.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (buf, tracing::subscriber::set_default(sub))
}
