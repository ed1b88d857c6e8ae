//! The two OS readers on this machine: the portable one (sysinfo) gives a report of the
//! same shape as procfs, within tolerances (the two read at slightly different instants
//! on a shared machine), and leaves absent what it cannot measure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use walrus_actors::reporter::os::{
    os_stats, HostReading, OsReader, OsSource, PortableReader, ProcReader,
};

#[test]
fn portable_and_procfs_readings_have_the_same_shape() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: procfs exists only on Linux");
        return;
    }
    let procfs = ProcReader::default();
    let mut portable = PortableReader::new().unwrap();
    let before = procfs.read().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after = procfs.read().unwrap();
    let p = portable.read().unwrap();
    let f = os_stats(&before, &after, Duration::from_millis(500));

    // Memory: the same totals; free figures within 10% of the total (other builders
    // allocate and free between the two reads).
    let total = f.total_virtual_bytes as f64;
    assert!(total > 0.0);
    let near = |a: u64, b: u64, tol: f64| (a as f64 - b as f64).abs() <= tol * total;
    assert!(
        near(p.total_virtual_bytes, f.total_virtual_bytes, 0.01),
        "{p:?} vs {f:?}"
    );
    assert!(
        near(p.free_virtual_bytes, f.free_virtual_bytes, 0.10),
        "{p:?} vs {f:?}"
    );
    assert!(
        near(p.mem_free_bytes, f.mem_free_bytes, 0.10),
        "{p:?} vs {f:?}"
    );
    assert!(
        near(p.swap_used_bytes, f.swap_used_bytes, 0.01),
        "{p:?} vs {f:?}"
    );
    // CPU idle: both fractions; the machine is shared, so only a loose agreement.
    assert!((0.0..=1.0).contains(&p.cpu_idle));
    assert!((p.cpu_idle - f.cpu_idle).abs() <= 0.5, "{p:?} vs {f:?}");
    // What sysinfo cannot measure is absent, never zero; procfs has all of it.
    assert_eq!(
        (p.cpu_user, p.cpu_system, p.pages_out_per_sec),
        (None, None, None)
    );
    assert!(f.cpu_user.is_some() && f.cpu_system.is_some() && f.pages_out_per_sec.is_some());
    // Process states: sysinfo reads them per process on Linux; at least this test runs.
    assert!(p.procs_running.is_some_and(|n| n >= 1), "{p:?}");
    assert!(f.procs_running.is_some_and(|n| n >= 1), "{f:?}");
}

#[test]
fn the_source_picks_the_reader() {
    let proc_root = std::path::PathBuf::from("/proc");
    let portable = OsReader::new(OsSource::Portable, proc_root.clone()).unwrap();
    assert_eq!(portable.name(), "sysinfo");
    let mut auto = OsReader::new(OsSource::Auto, proc_root).unwrap();
    if cfg!(target_os = "linux") {
        assert_eq!(auto.name(), "procfs");
        assert!(matches!(auto.read().unwrap().host, HostReading::Procfs(_)));
    } else {
        assert_eq!(auto.name(), "sysinfo");
    }
}
