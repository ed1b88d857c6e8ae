//! The Reporter's health probe against a real nginx, failures counted to PANIC, and the
//! operator's bypass file (on, off, expiry) with the gatherer running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};
use walrus_actors::model::{ReportBody, Round, ServerName};
use walrus_actors::reporter::bypass::{clear_bypass, read_bypass, write_bypass, Bypass};
use walrus_actors::reporter::{self, Gatherer, ReporterConfig, WebSource};
use walrus_testkit::actors::reporter::{
    expect_stats, expect_tempfail, poll_until, stats, Kind, TempDir, WebServer, INTERVAL, PATIENCE,
};

fn probe_config(url: String, body_contains: Option<&str>, dir: &TempDir) -> ReporterConfig {
    let mut c = ReporterConfig::new(
        ServerName::from("w1"),
        WebSource::Probe {
            url,
            expect_status: None,
            body_contains: body_contains.map(str::to_owned),
            max_workers: 40,
        },
    );
    c.interval = INTERVAL;
    c.web_timeout = Some(Duration::from_secs(5));
    c.stale_after = Some(Duration::from_secs(30));
    c.bypass_file = dir.path().join("bypass");
    c
}

fn panic_reason(body: &ReportBody) -> &str {
    match body {
        ReportBody::Panic { reason } => reason,
        other => panic!("expected PANIC, got {other:?}"),
    }
}

#[tokio::test]
async fn probe_reports_and_failing_probe_panics_after_three() {
    let dir = TempDir::new("reporter-probe");
    let mut server = WebServer::start(Kind::Nginx, dir.path());

    let config = probe_config(server.page_url(), Some("walrus-ok"), &dir);
    let (mut g, handle) =
        Gatherer::with_reader(config.clone(), config.web_reader().unwrap()).unwrap();
    g.gather_once().await;
    g.gather_once().await;
    let s = expect_stats(&handle.report(Round(1)).body).clone();
    assert_eq!(
        (s.web.hits, s.web.busy_workers, s.web.max_workers),
        (0, 0, 40)
    );

    // Planted fault: the page does not say what the probe looks for.
    let bad = probe_config(server.page_url(), Some("database: up"), &dir);
    let (mut g, handle) = Gatherer::with_reader(bad.clone(), bad.web_reader().unwrap()).unwrap();
    for n in 1..=2 {
        g.gather_once().await;
        let body = handle.report(Round(2)).body;
        assert!(
            expect_tempfail(&body).contains(&format!("({n} of 3 before PANIC)")),
            "{body:?}"
        );
    }
    g.gather_once().await;
    let body = handle.report(Round(3)).body;
    assert!(
        panic_reason(&body).starts_with("web server failed 3 readings in a row: http://127.0.0.1:"),
        "{body:?}"
    );
    assert!(panic_reason(&body).ends_with("body does not contain \"database: up\""));

    // Planted fault: a page that is not there (404 where 2xx is expected).
    let missing = probe_config(
        format!("http://127.0.0.1:{}/health-missing", server.port),
        None,
        &dir,
    );
    let (mut g, handle) =
        Gatherer::with_reader(missing.clone(), missing.web_reader().unwrap()).unwrap();
    for _ in 0..3 {
        g.gather_once().await;
    }
    let body = handle.report(Round(4)).body;
    assert!(
        panic_reason(&body).ends_with("status 404, expected 2xx"),
        "{body:?}"
    );

    // The server stops: PANIC at the first reading.
    let (mut g, handle) =
        Gatherer::with_reader(config.clone(), config.web_reader().unwrap()).unwrap();
    server.stop();
    g.gather_once().await;
    let body = handle.report(Round(5)).body;
    assert!(panic_reason(&body).contains("refused"), "{body:?}");
}

#[tokio::test]
async fn hung_server_times_out_to_tempfail_then_panic() {
    let dir = TempDir::new("reporter-hung");
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut config = probe_config(url, None, &dir);
    config.web_timeout = Some(Duration::from_millis(300));
    let (mut g, handle) =
        Gatherer::with_reader(config.clone(), config.web_reader().unwrap()).unwrap();
    g.gather_once().await;
    let body = handle.report(Round(1)).body;
    assert!(expect_tempfail(&body).contains("within 300ms"), "{body:?}");
    g.gather_once().await;
    g.gather_once().await;
    let body = handle.report(Round(2)).body;
    assert!(panic_reason(&body).contains("no answer"), "{body:?}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_on_off_and_expiry_with_the_gatherer_running() {
    let dir = TempDir::new("reporter-bypass");
    let mut server = WebServer::start(Kind::Nginx, dir.path());
    let config = walrus_testkit::actors::reporter::config_for(&server, dir.path());
    let bypass_file = config.bypass_file.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle, task) = reporter::spawn(config, async {
        let _ = stop_rx.await;
    })
    .unwrap();
    poll_until("statistics", PATIENCE, || {
        stats(&handle.report(Round(1)).body).cloned()
    })
    .await;

    // On, without expiry.
    write_bypass(
        &bypass_file,
        &Bypass::new("kernel upgrade", None, SystemTime::now()),
    )
    .unwrap();
    let reason = poll_until("BYPASS", PATIENCE, || match handle.report(Round(2)).body {
        ReportBody::Bypass { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, "kernel upgrade (bypass until cleared)");

    // BYPASS wins over PANIC: a server taken down for maintenance pages nobody.
    server.stop();
    let before = handle.snapshot().gatherings;
    poll_until("two gatherings with the server down", PATIENCE, || {
        (handle.snapshot().gatherings >= before + 2).then_some(())
    })
    .await;
    assert!(matches!(
        handle.report(Round(3)).body,
        ReportBody::Bypass { .. }
    ));

    // Off: the real condition shows again.
    assert!(clear_bypass(&bypass_file).unwrap());
    poll_until("PANIC after bypass off", PATIENCE, || {
        matches!(handle.report(Round(4)).body, ReportBody::Panic { .. }).then_some(())
    })
    .await;
    server.restart();
    poll_until("statistics after restart", PATIENCE, || {
        stats(&handle.report(Round(5)).body).cloned()
    })
    .await;

    // On for a few seconds: it ends by itself (the file stays; its `until` has passed).
    // Long enough that a gathering sees it on a loaded 2-core machine.
    write_bypass(
        &bypass_file,
        &Bypass::new(
            "quick check",
            Some(Duration::from_secs(4)),
            SystemTime::now(),
        ),
    )
    .unwrap();
    poll_until("BYPASS with expiry", PATIENCE, || {
        matches!(handle.report(Round(6)).body, ReportBody::Bypass { .. }).then_some(())
    })
    .await;
    // Deterministically: the same snapshot five seconds later is no bypass.
    let later = handle.report_at(
        Round(7),
        std::time::Instant::now(),
        SystemTime::now() + Duration::from_secs(5),
    );
    assert!(stats(&later.body).is_some(), "{later:?}");
    // And for real, on the wall clock.
    poll_until("bypass expiry", PATIENCE, || {
        stats(&handle.report(Round(8)).body).cloned()
    })
    .await;
    assert!(read_bypass(&bypass_file).unwrap().is_some());

    stop_tx.send(()).unwrap();
    task.await.unwrap();
}
