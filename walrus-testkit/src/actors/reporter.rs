//! The Reporter's shared scenarios (feature `actors`): what the nginx and Apache tests both
//! check of a Reporter reading a real web server ([`crate::web::WebServer`]).

pub use crate::dir::TempDir;
pub use crate::net::http_get_url as http_get;
pub use crate::wait::poll_until_async as poll_until;
pub use crate::web::{Kind, WebServer, PAGE_BODY};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use walrus_actors::model::{ReportBody, Round, ServerName, ServerStats};
use walrus_actors::reporter::{self, Gatherer, ReporterConfig, WebSource};

/// The interval the tests gather at.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// Generous: the machine is shared with several builds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A Reporter configuration for `server`, bypass file in `dir`.
pub fn config_for(server: &WebServer, dir: &Path) -> ReporterConfig {
    let web = match server.kind {
        Kind::Nginx => WebSource::Nginx {
            url: server.status_url(),
            max_workers: 128,
        },
        Kind::Apache => WebSource::Apache {
            url: server.status_url(),
            max_workers: None,
        },
    };
    let mut c = ReporterConfig::new(ServerName::from("w1"), web);
    c.interval = INTERVAL;
    // The web timeout stays generous: a loaded machine may be slow to answer.
    c.web_timeout = Some(Duration::from_secs(5));
    c.stale_after = Some(Duration::from_secs(30));
    c.bypass_file = dir.join("bypass");
    c
}

/// The statistics of a report, if it has them.
pub fn stats(body: &ReportBody) -> Option<&ServerStats> {
    match body {
        ReportBody::Stats(s) => Some(s),
        _ => None,
    }
}

/// The statistics of a report, or a panic naming what it was.
pub fn expect_stats(body: &ReportBody) -> &ServerStats {
    stats(body).unwrap_or_else(|| panic!("expected statistics, got {body:?}"))
}

/// The TEMPFAIL reason of a report, or a panic naming what it was.
pub fn expect_tempfail(body: &ReportBody) -> &str {
    match body {
        ReportBody::TempFail { reason } => reason,
        other => panic!("expected TEMPFAIL, got {other:?}"),
    }
}

/// TEMPFAIL at start-up, then the hit count follows the requests the test makes, exactly
/// (the Reporter's own status requests are not counted), and held-open connections show
/// as busy workers.
pub async fn hits_follow_traffic(kind: Kind) {
    let dir = TempDir::new("reporter-hits");
    let server = WebServer::start(kind, dir.path());
    let config = config_for(&server, dir.path());
    let reader = config.web_reader().unwrap();
    let (mut gatherer, handle) = Gatherer::with_reader(config, reader).unwrap();

    let r = handle.report(Round(1));
    assert_eq!(expect_tempfail(&r.body), "no statistics yet (just started)");
    gatherer.gather_once().await;
    let r = handle.report(Round(2));
    assert!(expect_tempfail(&r.body).contains("a period needs two"));

    gatherer.gather_once().await;
    let idle = handle.report(Round(3));
    assert_eq!(expect_stats(&idle.body).web.hits, 0, "no traffic yet");

    for _ in 0..37 {
        assert_eq!(
            http_get(&server.page_url()).unwrap(),
            (200, PAGE_BODY.into())
        );
    }
    gatherer.gather_once().await;
    let busy = handle.report(Round(4));
    let s = expect_stats(&busy.body);
    assert_eq!(s.web.hits, 37, "{s:?}");
    assert!(s.period > Duration::ZERO);
    // procfs on Linux: the split is measured.
    let (user, system) = (s.cpu_user.unwrap(), s.cpu_system.unwrap());
    assert!(user + system + s.cpu_idle <= 1.0 + 1e-9);
    assert!(s.mem_free_bytes > 0 && s.total_virtual_bytes > 0);
    assert!(s.web.max_workers > 0);
    gatherer.gather_once().await;
    let after = handle.report(Round(5));
    assert_eq!(expect_stats(&after.body).web.hits, 0, "no new traffic");

    // Connections that sent half a request are being served: busy workers.
    let held: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            c.write_all(b"GET /index.html HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    let mut seen = 0;
    let deadline = Instant::now() + PATIENCE;
    while seen < 5 {
        assert!(Instant::now() < deadline, "busy workers stayed at {seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        gatherer.gather_once().await;
        seen = stats(&handle.report(Round(6)).body).map_or(0, |s| s.web.busy_workers);
    }
    assert_eq!(seen, 5, "exactly the held connections");
    // (Apache counts these connections as requests once they close: no hit check after.)
    drop(held);
}

/// With the gatherer running every 200 ms: stopping the server (SIGKILL to its process
/// group) gives PANIC with the reason within two gatherings; starting it again gives
/// statistics again.
pub async fn panic_on_stop_then_recover(kind: Kind) {
    let dir = TempDir::new("reporter-panic");
    let mut server = WebServer::start(kind, dir.path());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle, task) = reporter::spawn(config_for(&server, dir.path()), async {
        let _ = stop_rx.await;
    })
    .unwrap();
    poll_until("statistics", PATIENCE, || {
        stats(&handle.report(Round(1)).body).cloned()
    })
    .await;

    // Live traffic raises the figures while the task runs.
    let page = server.page_url();
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop_load.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http_get(&page);
            }
        })
    };
    poll_until("hits from live traffic", PATIENCE, || {
        stats(&handle.report(Round(2)).body)
            .filter(|s| s.web.hits >= 5)
            .cloned()
    })
    .await;
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();

    let before = handle.snapshot().gatherings;
    let stopped = Instant::now();
    server.stop();
    let (reason, since) = poll_until("PANIC", PATIENCE, || {
        let snapshot = handle.snapshot();
        match handle.report(Round(3)).body {
            ReportBody::Panic { reason } => Some((reason, snapshot.condition_since)),
            _ => None,
        }
    })
    .await;
    eprintln!(
        "{kind:?}: PANIC seen {} ms after the stop, at gathering {} after it: {reason}",
        stopped.elapsed().as_millis(),
        since - before
    );
    // The gathering under way at the stop may still have read the server; the next did not.
    assert!(
        since - before <= 2,
        "PANIC only at gathering {} after the stop",
        since - before
    );
    assert!(reason.contains("web server down"), "{reason}");
    assert!(reason.contains("refused"), "{reason}");
    assert!(reason.contains(&server.port.to_string()), "{reason}");

    server.restart();
    let back = handle.snapshot().gatherings;
    let since = poll_until("statistics after restart", PATIENCE, || {
        let snapshot = handle.snapshot();
        stats(&handle.report(Round(4)).body).map(|_| snapshot.condition_since)
    })
    .await;
    // One reading starts a period, the next gives statistics (plus one under way).
    assert!(
        since.saturating_sub(back) <= 3,
        "statistics only at gathering {} after the restart",
        since.saturating_sub(back)
    );

    stop_tx.send(()).unwrap();
    task.await.unwrap();
}
