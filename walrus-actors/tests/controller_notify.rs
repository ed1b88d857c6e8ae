//! Notification channels against real receivers: a tiny HTTP server on 127.0.0.1:0 in
//! this test, and a real shell script that writes its stdin to a file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use walrus_actors::controller::notify::{
    Incident, Notification, Notifier, NotifyConfig, NotifyError,
};
use walrus_actors::model::Round;

/// What the receiver saw: one entry per request (path, body).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A minimal HTTP/1.1 receiver. It answers `statuses[i]` to the i-th request (200 after
/// the list ends) and records every request.
async fn receiver(statuses: Vec<u16>) -> (String, Seen) {
    let (url, seen, _heads) = receiver_with(statuses, None).await;
    (url, seen)
}

/// [`receiver`], over TLS when `tls` is given (a real rustls server: `https://localhost`),
/// also recording every request's head.
async fn receiver_with(
    statuses: Vec<u16>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, Seen, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let (seen2, heads2) = (seen.clone(), heads.clone());
    let url = match &tls {
        Some(_) => format!("https://localhost:{}/hook", addr.port()),
        None => format!("http://{addr}/hook"),
    };
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let status = statuses.get(n).copied().unwrap_or(200);
            n += 1;
            let (head, path, body) = match &tls {
                Some(acceptor) => serve_one(acceptor.accept(sock).await.unwrap(), status).await,
                None => serve_one(sock, status).await,
            };
            heads2.lock().unwrap().push(head);
            seen2.lock().unwrap().push((path, body));
        }
    });
    (url, seen, heads)
}

/// Reads one POST (head, then Content-Length bytes of body), answers `status`; returns
/// (head, path, body).
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    status: u16,
) -> (String, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let (head_end, len) = loop {
        let k = sock.read(&mut chunk).await.unwrap();
        assert!(k > 0, "client closed early");
        buf.extend_from_slice(&chunk[..k]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let k = sock.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..k]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split(' ').nth(1).unwrap().to_owned();
    assert!(head.starts_with("POST "), "{head}");
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = sock.write_all(reply.as_bytes()).await;
    let _ = sock.shutdown().await;
    (head, path, body)
}

fn panic_raised(round: u64) -> Incident {
    Incident::PanicRaised {
        round: Round(round),
        server: "c1-s1".into(),
        cluster: "c1".into(),
        reason: "nginx exited".into(),
    }
}

fn config() -> NotifyConfig {
    NotifyConfig {
        site: "example.com".into(),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        timeout: Duration::from_secs(10),
        ..NotifyConfig::default()
    }
}

/// A temp dir of our own (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "walrus-notify-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A script that appends its stdin (plus a newline) to `out`, failing the first
/// `fail_first` times (counted in a file beside it).
fn script(dir: &TempDir, fail_first: u32) -> (Vec<String>, PathBuf) {
    let out = dir.0.join("events.jsonl");
    let count = dir.0.join("count");
    let path = dir.0.join("notify.sh");
    let body = format!(
        "#!/bin/sh\nn=$(cat '{count}' 2>/dev/null || echo 0)\necho $((n+1)) > '{count}'\n\
         if [ \"$n\" -lt {fail_first} ]; then exit 3; fi\ncat >> '{out}'\necho >> '{out}'\n",
        count = count.display(),
        out = out.display(),
    );
    std::fs::write(&path, body).unwrap();
    (vec!["/bin/sh".into(), path.display().to_string()], out)
}

fn parse(line: &str) -> Notification {
    serde_json::from_str(line).unwrap()
}

/// An `https://` webhook with an authorisation header and a Slack-style body template,
/// against a real TLS receiver whose certificate the test makes; a receiver whose
/// certificate is not from the configured CA gets nothing.
#[tokio::test]
async fn https_webhook_with_headers_and_a_body_template() {
    let dir = TempDir::new("https-hook");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = dir.0.join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let (url, seen, heads) = receiver_with(vec![], Some(acceptor)).await;
    let n = Notifier::start(&NotifyConfig {
        webhook: Some(url.clone()),
        webhook_ca: Some(ca),
        webhook_headers: vec![("Authorization".into(), "Bearer s3cret".into())],
        webhook_body: Some(r#"{"text": "Walrus {site}: {summary}"}"#.into()),
        ..config()
    })
    .unwrap();
    n.notify(panic_raised(7)).unwrap();
    n.close().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let body: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Walrus example.com: example.com: panic_raised")
            && text.contains("server=c1-s1")
            && text.contains("reason=nginx exited"),
        "{text}"
    );
    let head = heads.lock().unwrap()[0].clone();
    assert!(head.contains("Authorization: Bearer s3cret"), "{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");

    // Planted fault: a CA that did not sign the receiver's certificate — no delivery.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong_ca = dir.0.join("other.pem");
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap();
    let n = Notifier::start(&NotifyConfig {
        webhook: Some(url),
        webhook_ca: Some(wrong_ca),
        attempts: 2,
        ..config()
    })
    .unwrap();
    n.notify(panic_raised(8)).unwrap();
    n.close().await;
    assert_eq!(
        heads.lock().unwrap().len(),
        1,
        "a webhook with the wrong CA delivered"
    );
}

#[tokio::test]
async fn webhook_receives_the_event_as_json() {
    let (url, seen) = receiver(vec![]).await;
    let n = Notifier::start(&NotifyConfig {
        webhook: Some(url),
        ..config()
    })
    .unwrap();
    n.notify(panic_raised(3)).unwrap();
    n.close().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "/hook");
    assert_eq!(
        parse(&seen[0].1),
        Notification {
            site: "example.com".into(),
            incident: panic_raised(3)
        }
    );
}

#[tokio::test]
async fn webhook_failures_are_retried_with_backoff() {
    let (url, seen) = receiver(vec![500, 503]).await;
    let n = Notifier::start(&NotifyConfig {
        webhook: Some(url),
        ..config()
    })
    .unwrap();
    let t = std::time::Instant::now();
    n.notify(panic_raised(1)).unwrap();
    n.close().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two failures, then success");
    assert!(seen
        .iter()
        .all(|(_, b)| parse(b).incident == panic_raised(1)));
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "backoff 20 ms + 40 ms"
    );
}

#[tokio::test]
async fn webhook_gives_up_after_the_configured_attempts() {
    let (url, seen) = receiver(vec![500; 10]).await;
    let n = Notifier::start(&NotifyConfig {
        webhook: Some(url),
        attempts: 3,
        ..config()
    })
    .unwrap();
    n.notify(panic_raised(1)).unwrap();
    n.notify(panic_raised(2)).unwrap();
    n.close().await;
    let rounds: Vec<Round> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| match parse(b).incident {
            Incident::PanicRaised { round, .. } => round,
            e => panic!("{e:?}"),
        })
        .collect();
    // Three attempts at round 1 (all 500), then round 2 gets the 4th..6th statuses.
    assert_eq!(
        rounds,
        vec![Round(1); 3]
            .into_iter()
            .chain(vec![Round(2); 3])
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn unreachable_webhook_never_blocks_notify() {
    // A port nobody listens on (bound then dropped).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let n = Notifier::start(&NotifyConfig {
        webhook: Some(format!("http://127.0.0.1:{port}/")),
        queue: 2,
        initial_backoff: Duration::from_secs(30),
        ..config()
    })
    .unwrap();
    let t = std::time::Instant::now();
    let results: Vec<_> = (0..10).map(|r| n.notify(panic_raised(r))).collect();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "notify must not wait"
    );
    assert!(results
        .iter()
        .any(|r| matches!(r, Err(NotifyError::QueueFull { channel: "webhook" }))));
    drop(n); // the task is left retrying in the background; the runtime ends it.
}

#[tokio::test]
async fn command_gets_the_event_on_stdin() {
    let dir = TempDir::new("cmd");
    let (argv, out) = script(&dir, 0);
    let n = Notifier::start(&NotifyConfig {
        command: Some(argv),
        ..config()
    })
    .unwrap();
    n.notify(panic_raised(5)).unwrap();
    n.notify(Incident::PanicCleared {
        round: Round(9),
        server: "c1-s1".into(),
        cluster: "c1".into(),
    })
    .unwrap();
    n.close().await;
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Notification> = text.lines().filter(|l| !l.is_empty()).map(parse).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0].incident, panic_raised(5));
    assert!(matches!(
        lines[1].incident,
        Incident::PanicCleared {
            round: Round(9),
            ..
        }
    ));
}

#[tokio::test]
async fn failing_command_is_retried() {
    let dir = TempDir::new("retry");
    let (argv, out) = script(&dir, 2);
    let n = Notifier::start(&NotifyConfig {
        command: Some(argv),
        ..config()
    })
    .unwrap();
    n.notify(panic_raised(4)).unwrap();
    n.close().await;
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 1, "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.0.join("count")).unwrap().trim(),
        "3"
    );
}

#[tokio::test]
async fn both_channels_get_every_event() {
    let dir = TempDir::new("both");
    let (argv, out) = script(&dir, 0);
    let (url, seen) = receiver(vec![]).await;
    let n = Notifier::start(&NotifyConfig {
        command: Some(argv),
        webhook: Some(url),
        ..config()
    })
    .unwrap();
    n.notify(panic_raised(1)).unwrap();
    n.close().await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        1
    );
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    assert!(matches!(
        Notifier::start(&NotifyConfig {
            webhook: Some("ftp://hooks.example.com/x".into()),
            ..config()
        }),
        Err(NotifyError::BadWebhook { .. })
    ));
    assert!(matches!(
        Notifier::start(&NotifyConfig {
            webhook: Some("https://hooks.example.com/x".into()),
            webhook_body: Some("{\"text\": \"{sumary}\"}".into()),
            ..config()
        }),
        Err(NotifyError::BadTemplate(_))
    ));
    assert!(matches!(
        Notifier::start(&NotifyConfig {
            command: Some(vec![]),
            ..config()
        }),
        Err(NotifyError::EmptyCommand)
    ));
}

#[tokio::test]
async fn a_hanging_command_is_killed_at_the_timeout() {
    let dir = TempDir::new("hang");
    let path = dir.0.join("hang.sh");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 30\n").unwrap();
    let n = Notifier::start(&NotifyConfig {
        command: Some(vec!["/bin/sh".into(), path.display().to_string()]),
        attempts: 2,
        timeout: Duration::from_millis(200),
        ..config()
    })
    .unwrap();
    let t = std::time::Instant::now();
    n.notify(panic_raised(1)).unwrap();
    n.close().await;
    // Two attempts of 200 ms and one backoff of 20 ms: far below the script's 30 s.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
