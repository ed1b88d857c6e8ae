//! Real web servers on loopback: nginx and Apache 2.4, each in the foreground in its own
//! directory, guarded (SIGKILL and reap on drop), restartable on the same address.
//!
//! - [`Nginx`]: one process (`master_process off`), so a SIGKILL stops serving at once and
//!   no orphan worker holds the port: what the failover and replication tests kill.
//! - [`WebServer`]: nginx with a master and a worker, or Apache, in a process group of its
//!   own (the kill takes the group): what the Reporter reads (`stub_status`,
//!   `server-status?auto`), with an optional https listener.

use crate::net::{free_tcp_port, http_get_url};
use crate::process::{need, ChildGuard};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The text every page of a test site serves (`index.html` written by the launchers).
pub const PAGE_BODY: &str = "walrus-ok\n";

/// One nginx `server` block.
#[derive(Debug, Clone)]
pub struct Site {
    /// Where it listens (TCP).
    pub listen: SocketAddr,
    /// Its document root.
    pub root: PathBuf,
    /// `stub_status` at `/nginx_status`.
    pub stub_status: bool,
    /// https with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Site {
    /// A plain http site with `stub_status`.
    pub fn new(listen: SocketAddr, root: &Path) -> Self {
        Site {
            listen,
            root: root.to_owned(),
            stub_status: true,
            tls: None,
        }
    }
}

/// The nginx configuration for `sites`, every temp and log path under `dir`; with
/// `single_process`, `master_process off`.
pub fn nginx_conf(dir: &Path, sites: &[Site], single_process: bool) -> String {
    let d = dir.display();
    let mut conf = String::new();
    if single_process {
        conf += "master_process off;\n";
    }
    conf += &format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  default_type application/octet-stream;\n\
         client_body_temp_path {d}/client; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n"
    );
    for s in sites {
        let (ssl, certs) = match &s.tls {
            Some((cert, key)) => (
                " ssl",
                format!(
                    " ssl_certificate {}; ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            ),
            None => ("", String::new()),
        };
        let status = if s.stub_status {
            " location = /nginx_status { stub_status; }"
        } else {
            ""
        };
        conf += &format!(
            "  server {{ listen {}{ssl};{certs} root {};{status} }}\n",
            s.listen,
            s.root.display()
        );
    }
    conf + "}\n"
}

/// Writes `PAGE_BODY` as `root/index.html`.
fn write_index(root: &Path) {
    std::fs::create_dir_all(root).expect("creating the document root");
    std::fs::write(root.join("index.html"), PAGE_BODY).expect("writing index.html");
}

/// nginx as one process, serving [`Site`]s; SIGKILLed on drop.
pub struct Nginx {
    guard: ChildGuard,
    dir: PathBuf,
    sites: Vec<Site>,
}

impl Nginx {
    /// nginx at `addr` serving `dir/www` (an `index.html` of [`PAGE_BODY`]) with
    /// `stub_status`; waits until it answers.
    pub fn serve(dir: &Path, addr: SocketAddr) -> Self {
        let root = dir.join("www");
        write_index(&root);
        Self::start(dir, vec![Site::new(addr, &root)])
    }

    /// nginx for `sites`, configuration and logs in `dir`; waits until every site accepts
    /// connections, or panics with the error log.
    pub fn start(dir: &Path, sites: Vec<Site>) -> Self {
        let nginx = need("nginx", "nginx");
        std::fs::create_dir_all(dir).expect("creating nginx's directory");
        std::fs::write(dir.join("nginx.conf"), nginx_conf(dir, &sites, true))
            .expect("writing nginx.conf");
        let what = format!(
            "nginx {}",
            sites
                .first()
                .map_or(String::new(), |s| s.listen.to_string())
        );
        let mut n = Nginx {
            guard: ChildGuard::start(
                what,
                Command::new(nginx)
                    .arg("-c")
                    .arg(dir.join("nginx.conf"))
                    .arg("-p")
                    .arg(dir)
                    .args(["-e", &dir.join("error.log").display().to_string()])
                    .args(["-g", "daemon off;"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            ),
            dir: dir.to_owned(),
            sites,
        };
        n.wait_ready();
        n
    }

    /// The first site's address.
    pub fn addr(&self) -> SocketAddr {
        self.sites[0].listen
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// Starts it again after a kill (same sites, same configuration).
    pub fn restart(&mut self) {
        self.guard.kill();
        *self = Nginx::start(&self.dir.clone(), self.sites.clone());
    }

    /// Its error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        for s in &self.sites {
            while TcpStream::connect_timeout(&s.listen, Duration::from_millis(200)).is_err() {
                if !self.guard.running() || start.elapsed() > Duration::from_secs(20) {
                    panic!(
                        "nginx on {} did not start; error.log:\n{}",
                        s.listen,
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Which web server a [`WebServer`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nginx 1.22+ (`stub_status`).
    Nginx,
    /// Apache 2.4 with `mod_status` (`server-status?auto`).
    Apache,
}

/// A running (or stopped) nginx or Apache on 127.0.0.1 in its own process group, killed
/// (the whole group) on drop.
pub struct WebServer {
    /// nginx or Apache.
    pub kind: Kind,
    /// Its http port.
    pub port: u16,
    /// nginx only: a second, https listener (certificate and key in `dir`).
    pub tls_port: Option<u16>,
    dir: PathBuf,
    guard: Option<ChildGuard>,
}

impl WebServer {
    /// Starts a server in `dir` on a free port (retrying with another port if it clashes).
    pub fn start(kind: Kind, dir: &Path) -> Self {
        Self::start_inner(kind, dir, false)
    }

    /// nginx with an https listener too, serving `cert_pem` (written to `dir`).
    pub fn start_nginx_tls(dir: &Path, cert_pem: &str, key_pem: &str) -> Self {
        std::fs::write(dir.join("cert.pem"), cert_pem).expect("writing cert.pem");
        std::fs::write(dir.join("key.pem"), key_pem).expect("writing key.pem");
        Self::start_inner(Kind::Nginx, dir, true)
    }

    fn start_inner(kind: Kind, dir: &Path, tls: bool) -> Self {
        let port = || free_tcp_port(Ipv4Addr::LOCALHOST);
        let mut last = String::new();
        for _ in 0..5 {
            let mut s = WebServer {
                kind,
                port: port(),
                tls_port: tls.then(port),
                dir: dir.to_owned(),
                guard: None,
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
        self.guard.as_ref().and_then(ChildGuard::id)
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

    /// SIGKILL to the whole process group (master and workers), then waits until nothing
    /// listens on the port any more.
    pub fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill();
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
        write_index(&html);
        let log = self.dir.join("server.log");
        let mut cmd;
        match self.kind {
            Kind::Nginx => {
                cmd = Command::new(need("nginx", "nginx"));
                let mut sites = vec![Site::new(([127, 0, 0, 1], self.port).into(), &html)];
                if let Some(p) = self.tls_port {
                    sites.push(Site {
                        tls: Some((self.dir.join("cert.pem"), self.dir.join("key.pem"))),
                        ..Site::new(([127, 0, 0, 1], p).into(), &html)
                    });
                }
                let conf = self.dir.join("nginx.conf");
                std::fs::write(&conf, nginx_conf(&self.dir, &sites, false))
                    .map_err(|e| e.to_string())?;
                cmd.arg("-c").arg(&conf).arg("-p").arg(&self.dir);
                cmd.args(["-g", "daemon off;"]);
            }
            Kind::Apache => {
                cmd = Command::new(need("apache2", "apache2"));
                let conf = self.dir.join("httpd.conf");
                std::fs::write(&conf, apache_conf(&self.dir, self.port))
                    .map_err(|e| e.to_string())?;
                cmd.arg("-f").arg(&conf).arg("-DFOREGROUND");
            }
        }
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut guard = ChildGuard::start_group(format!("{:?}", self.kind), &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = guard.exited() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let errors =
                    std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                return Err(format!("exited with {status}: {text}{errors}"));
            }
            if matches!(http_get_url(&self.status_url()), Ok((200, _))) {
                self.guard = Some(guard);
                return Ok(());
            }
            if Instant::now() > deadline {
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
