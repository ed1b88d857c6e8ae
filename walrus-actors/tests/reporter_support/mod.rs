//! Real nginx 1.22 and Apache 2.4 on loopback for the Reporter's tests and its cost
//! example: each server runs in the foreground in its own temp directory, in its own
//! process group, and is killed (the whole group, SIGKILL) when its guard drops.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("walrus-{tag}-{}-{n}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Apache,
}

/// A running (or stopped) nginx or Apache, killed on drop.
pub struct WebServer {
    pub kind: Kind,
    pub port: u16,
    /// nginx only: a second, https listener (certificate and key in `dir`).
    pub tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

/// The text every page of the test site serves.
pub const PAGE_BODY: &str = "walrus-ok\n";

impl WebServer {
    /// Starts a server in `dir` on a free port (retrying with another port if it clashes).
    pub fn start(kind: Kind, dir: &Path) -> Self {
        Self::start_inner(kind, dir, false)
    }

    /// nginx with an https listener too, serving `cert_pem` (written to `dir`).
    pub fn start_nginx_tls(dir: &Path, cert_pem: &str, key_pem: &str) -> Self {
        std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), key_pem).unwrap();
        Self::start_inner(Kind::Nginx, dir, true)
    }

    fn start_inner(kind: Kind, dir: &Path, tls: bool) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = WebServer {
                kind,
                port: free_port(),
                tls_port: tls.then(free_port),
                dir: dir.to_owned(),
                child: None,
            };
            match s.try_start() {
                Ok(()) => return s,
                Err(e) => last = e,
            }
        }
        panic!("{kind:?} did not start: {last}");
    }

    /// The process group of the server (master and workers), while it runs.
    pub fn process_group(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The status page the Reporter reads.
    pub fn status_url(&self) -> String {
        match self.kind {
            Kind::Nginx => format!("http://127.0.0.1:{}/nginx_status", self.port),
            Kind::Apache => format!("http://127.0.0.1:{}/server-status?auto", self.port),
        }
    }

    /// A page of the site.
    pub fn page_url(&self) -> String {
        format!("http://127.0.0.1:{}/index.html", self.port)
    }

    /// SIGKILL to the whole process group (master and workers), then reap.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            // Workers are reaped by init; wait until nothing listens any more.
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                assert!(Instant::now() < deadline, "port {} still open", self.port);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_start() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("restart failed: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        let html = self.dir.join("html");
        std::fs::create_dir_all(&html).unwrap();
        std::fs::write(html.join("index.html"), PAGE_BODY).unwrap();
        let (binary, package) = match self.kind {
            Kind::Nginx => ("/usr/sbin/nginx", "nginx"),
            Kind::Apache => ("/usr/sbin/apache2", "apache2"),
        };
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: install the Debian package `{package}`"
        );
        let log = self.dir.join("server.log");
        let mut cmd = Command::new(binary);
        match self.kind {
            Kind::Nginx => {
                let conf = self.dir.join("nginx.conf");
                std::fs::write(&conf, nginx_conf(&self.dir, self.port, self.tls_port)).unwrap();
                cmd.arg("-c").arg(&conf).arg("-p").arg(&self.dir);
                cmd.args(["-g", "daemon off;"]);
            }
            Kind::Apache => {
                let conf = self.dir.join("httpd.conf");
                std::fs::write(&conf, apache_conf(&self.dir, self.port)).unwrap();
                cmd.arg("-f").arg(&conf).arg("-DFOREGROUND");
            }
        }
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().map_err(|e| format!("spawn {binary}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let errors =
                    std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                return Err(format!("exited with {status}: {text}{errors}"));
            }
            if matches!(http_get(&self.status_url()), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err("not ready within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nginx_conf(dir: &Path, port: u16, tls_port: Option<u16>) -> String {
    let d = dir.display();
    let tls = tls_port.map_or_else(String::new, |p| {
        format!(
            "  server {{
    listen 127.0.0.1:{p} ssl;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    root {d}/html;
    location = /nginx_status {{ stub_status; }}
  }}
"
        )
    });
    format!(
        "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 128; }}
http {{
  access_log off;
  client_body_temp_path {d}/cbt;
  proxy_temp_path {d}/pt;
  fastcgi_temp_path {d}/ft;
  uwsgi_temp_path {d}/ut;
  scgi_temp_path {d}/st;
  server {{
    listen 127.0.0.1:{port};
    root {d}/html;
    location = /nginx_status {{ stub_status; }}
  }}
{tls}}}
"
    )
}

fn apache_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "ServerRoot \"{d}\"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {d}/httpd.pid
DefaultRuntimeDir {d}
ErrorLog {d}/error.log
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule authz_host_module /usr/lib/apache2/modules/mod_authz_host.so
LoadModule status_module /usr/lib/apache2/modules/mod_status.so
ExtendedStatus On
StartServers 1
ServerLimit 2
ThreadsPerChild 8
MaxRequestWorkers 16
DocumentRoot {d}/html
<Location \"/server-status\">
  SetHandler server-status
  Require ip 127.0.0.1
</Location>
"
    )
}

/// A blocking HTTP/1.0 GET (traffic for the servers; independent of the code under test).
pub fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(authority)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Polls `f` every 20 ms until it returns Some, or panics after `timeout` with `what`.
pub async fn poll_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- Scenarios shared by the nginx and Apache tests ----

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

pub fn stats(body: &ReportBody) -> Option<&ServerStats> {
    match body {
        ReportBody::Stats(s) => Some(s),
        _ => None,
    }
}

pub fn expect_stats(body: &ReportBody) -> &ServerStats {
    stats(body).unwrap_or_else(|| panic!("expected statistics, got {body:?}"))
}

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
