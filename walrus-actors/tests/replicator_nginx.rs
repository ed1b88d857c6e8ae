//! A real nginx serving a replica's `current` never returns a mixed or torn state while a
//! client fetches continuously during 50 generation switches. The same checker, pointed at
//! a directory updated in place, catches the torn files it serves (the planted fault).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use walrus_actors::model::Generation;
use walrus_actors::replicator::manifest::Limits;
use walrus_actors::replicator::store::{ReplicaStore, StoreConfig};
use walrus_actors::replicator::transfer::ServeOptions;
use walrus_testkit::actors::replicator::*;
use walrus_testkit::web::{Nginx, Site};

const PATHS: [&str; 3] = ["a.html", "b/c.html", "big.bin"];

/// The content of `name` in generation `g`: a header naming both, then filler that depends
/// on both, so any torn or mixed body is detectable from the body alone.
fn body(g: u64, name: &str) -> Vec<u8> {
    let len = 64 * 1024 + (g as usize * 7919) % (192 * 1024);
    let mut b = format!("gen={g:06} name={name}\n").into_bytes();
    let seed = g as usize * 31 + name.len();
    b.extend((b.len()..len).map(|i| b'a' + ((seed + i) % 26) as u8));
    b
}

fn write_generation(root: &Path, g: u64) {
    fs::create_dir_all(root.join("b")).unwrap();
    for p in PATHS {
        fs::write(root.join(p), body(g, p)).unwrap();
    }
}

/// Checks one HTTP response: 200 and a body that is exactly `body(g, name)` for the `g`
/// it announces. Returns that generation.
fn check_response(name: &str, resp: &[u8]) -> Result<u64, String> {
    let sep = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    let head = String::from_utf8_lossy(&resp[..sep]);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{name}: {}", head.lines().next().unwrap_or("")));
    }
    let b = &resp[sep + 4..];
    let g: u64 = std::str::from_utf8(b.get(4..10).ok_or("short body")?)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{name}: no generation in body"))?;
    if b != body(g, name).as_slice() {
        return Err(format!(
            "{name}: torn or mixed body of {} bytes claiming gen {g}",
            b.len()
        ));
    }
    Ok(g)
}

fn get(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: walrus\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

#[derive(Default)]
struct Seen {
    fetches: usize,
    errors: Vec<String>,
    last: [u64; 3],
    generations: std::collections::BTreeSet<u64>,
}

/// Fetches every path in turn until `stop`, checking each response and that each path's
/// generation never goes backwards.
fn fetcher(
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for (i, p) in PATHS.iter().enumerate() {
                let r = get(port, p)
                    .map_err(|e| e.to_string())
                    .and_then(|r| check_response(p, &r));
                let mut s = seen.lock().unwrap();
                s.fetches += 1;
                match r {
                    Ok(g) if g < s.last[i] => {
                        let e = format!("{p}: gen {g} after {}", s.last[i]);
                        s.errors.push(e)
                    }
                    Ok(g) => {
                        s.last[i] = g;
                        s.generations.insert(g);
                    }
                    Err(e) => s.errors.push(e),
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_never_serves_a_mixed_state_during_50_switches() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("site");
    let store_dir = t.path().join("replica");
    write_generation(&root, 1);
    let (source, mut scanner) = primary_at_generation_1(&root);
    let server = serve_tcp(source.clone(), ServeOptions::default()).await;
    let mut store = ReplicaStore::open(&store_dir, StoreConfig::default()).unwrap();
    pull_tcp(&mut store, server.addr).await.unwrap();

    let port = walrus_testkit::free_tcp_port(std::net::Ipv4Addr::LOCALHOST);
    let _nginx = Nginx::start(
        &t.path().join("nginx"),
        vec![Site::new(
            ([127, 0, 0, 1], port).into(),
            &store_dir.join("current"),
        )],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let f = fetcher(port, stop.clone(), seen.clone());
    for g in 2..=51 {
        write_generation(&root, g);
        source.publish(
            scanner
                .scan(&root, Generation(g), &Limits::default())
                .unwrap(),
        );
        let rep = pull_tcp(&mut store, server.addr).await.unwrap();
        assert_eq!(rep.generation, Generation(g));
        // Let the fetcher see this generation for a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    f.join().unwrap();
    let s = seen.lock().unwrap();
    assert!(
        s.errors.is_empty(),
        "{} bad responses: {:?}",
        s.errors.len(),
        &s.errors[..s.errors.len().min(5)]
    );
    assert!(s.fetches >= 150, "only {} fetches", s.fetches);
    assert!(
        s.generations.len() >= 10,
        "saw only generations {:?}",
        s.generations
    );
    assert_eq!(s.last, [51, 51, 51]);
    eprintln!(
        "{} fetches over {} generations, none mixed",
        s.fetches,
        s.generations.len()
    );
}

/// Planted fault: files rewritten in place (truncate, then write in pieces) in a served
/// directory. The checker must catch a torn response.
#[test]
fn the_checker_catches_in_place_updates() {
    let t = tempfile::tempdir().unwrap();
    let naive = t.path().join("naive");
    write_generation(&naive, 1);
    let port = walrus_testkit::free_tcp_port(std::net::Ipv4Addr::LOCALHOST);
    let _nginx = Nginx::start(
        &t.path().join("nginx"),
        vec![Site::new(([127, 0, 0, 1], port).into(), &naive)],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let f = fetcher(port, stop.clone(), seen.clone());
    let mut g = 1;
    while seen.lock().unwrap().errors.is_empty() && g < 2000 {
        g += 1;
        for p in PATHS {
            let mut file = fs::File::create(naive.join(p)).unwrap();
            for piece in body(g, p).chunks(4096) {
                file.write_all(piece).unwrap();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    f.join().unwrap();
    assert!(
        !seen.lock().unwrap().errors.is_empty(),
        "{g} in-place updates went unnoticed"
    );
}
