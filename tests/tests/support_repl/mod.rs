//! Support of the replication end-to-end test, beside the deployment support in
//! `../support` (temp dirs, ports, `need` come from there): child processes killed
//! (SIGKILL) on drop, nginx serving a replica's `current`, plain HTTP GET, polling with the
//! last state, the `walrus-node` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::support::{free_dns_port, free_udp_port, need, TempDir};

/// A free TCP port on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    crate::support::free_tcp_port(std::net::Ipv4Addr::LOCALHOST)
}

/// The `walrus-node` binary Cargo built for this test crate (`[[bin]] walrus-node-e2e` in
/// tests/Cargo.toml: the same `main.rs`, never a stale copy).
pub fn walrus_node_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_walrus-node-e2e"))
}

/// A child process, SIGKILLed and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// SIGKILL now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A response: status code and body.
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` over HTTP/1.0 from `addr`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

/// Polls `f` every 100 ms until it gives `Some`, or panics after `timeout` with `what` and
/// the last state `f` described.
pub fn poll_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Waits until something listens on `port`.
pub fn wait_port(port: u16, what: &str) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    poll_until(what, Duration::from_secs(20), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

/// One nginx process (`master_process off`, so a SIGKILL leaves no orphan worker) serving
/// `root` on `port`, with `stub_status` at `/nginx_status`.
pub fn start_nginx(dir: &Path, port: u16, root: &Path) -> ChildGuard {
    let nginx = need("nginx", "nginx");
    std::fs::create_dir_all(dir).unwrap();
    let conf = format!(
        "master_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  default_type text/plain;\n\
         client_body_temp_path {d}/client; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; root {r};\n    location = /nginx_status {{ stub_status; }} }}\n}}\n",
        d = dir.display(),
        r = root.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    wait_port(port, "nginx");
    guard
}
