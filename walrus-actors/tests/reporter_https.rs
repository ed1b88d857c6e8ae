//! The Reporter over https: a real nginx with a TLS listener (certificate made by the
//! test), its status page and a health probe read through rustls; a wrong CA or a wrong
//! name is a failure that ends in PANIC, never a silent success.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use walrus_actors::model::{ReportBody, Round, ServerName};
use walrus_actors::reporter::http::TlsOptions;
use walrus_actors::reporter::{Gatherer, ReporterConfig, WebSource};
use walrus_testkit::actors::reporter::{
    expect_stats, http_get, TempDir, WebServer, INTERVAL, PAGE_BODY,
};

const SITE: &str = "www.walrus.test";

fn config(web: WebSource, dir: &TempDir, ca_file: &str, name: &str) -> ReporterConfig {
    let mut c = ReporterConfig::new(ServerName::from("w1"), web);
    c.interval = INTERVAL;
    c.web_timeout = Some(Duration::from_secs(5));
    c.stale_after = Some(Duration::from_secs(30));
    c.bypass_file = dir.path().join("bypass");
    c.tls = TlsOptions {
        ca_file: Some(dir.path().join(ca_file)),
        server_name: Some(name.to_owned()),
        client_cert: None,
    };
    c
}

#[tokio::test]
async fn https_status_page_and_probe() {
    let dir = TempDir::new("reporter-https");
    let site = rcgen::generate_simple_self_signed(vec![SITE.to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec![SITE.to_owned()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), site.cert.pem()).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), other.cert.pem()).unwrap();
    let server = WebServer::start_nginx_tls(
        dir.path(),
        &site.cert.pem(),
        &site.signing_key.serialize_pem(),
    );
    let tls_port = server.tls_port.unwrap();

    // nginx stub_status over https: the hit count follows the requests made.
    let status = config(
        WebSource::Nginx {
            url: format!("https://127.0.0.1:{tls_port}/nginx_status"),
            max_workers: 128,
        },
        &dir,
        "ca.pem",
        SITE,
    );
    let (mut g, handle) =
        Gatherer::with_reader(status.clone(), status.web_reader().unwrap()).unwrap();
    g.gather_once().await;
    g.gather_once().await;
    assert_eq!(expect_stats(&handle.report(Round(1)).body).web.hits, 0);
    for _ in 0..12 {
        assert_eq!(
            http_get(&server.page_url()).unwrap(),
            (200, PAGE_BODY.into())
        );
    }
    g.gather_once().await;
    assert_eq!(expect_stats(&handle.report(Round(2)).body).web.hits, 12);

    // A health probe over https with a body match.
    let probe = |ca: &str, name: &str| {
        config(
            WebSource::Probe {
                url: format!("https://127.0.0.1:{tls_port}/index.html"),
                expect_status: Some(200),
                body_contains: Some("walrus-ok".into()),
                max_workers: 10,
            },
            &dir,
            ca,
            name,
        )
    };
    let good = probe("ca.pem", SITE);
    let (mut g, handle) = Gatherer::with_reader(good.clone(), good.web_reader().unwrap()).unwrap();
    g.gather_once().await;
    g.gather_once().await;
    expect_stats(&handle.report(Round(3)).body);

    // Planted faults: a CA that did not sign the certificate; a name it does not carry.
    for (ca, name, want) in [
        ("other-ca.pem", SITE, "invalid peer certificate"),
        ("ca.pem", "elsewhere.test", "not valid for name"),
    ] {
        let bad = probe(ca, name);
        let (mut g, handle) =
            Gatherer::with_reader(bad.clone(), bad.web_reader().unwrap()).unwrap();
        g.gather_once().await;
        match handle.report(Round(4)).body {
            ReportBody::TempFail { reason } => {
                assert!(reason.contains("TLS with 127.0.0.1:"), "{reason}");
                assert!(reason.contains(want), "{reason}");
            }
            other => panic!("expected TEMPFAIL for {ca}/{name}, got {other:?}"),
        }
        g.gather_once().await;
        g.gather_once().await;
        match handle.report(Round(5)).body {
            ReportBody::Panic { reason } => assert!(reason.contains(want), "{reason}"),
            other => panic!("expected PANIC for {ca}/{name}, got {other:?}"),
        }
    }
}
