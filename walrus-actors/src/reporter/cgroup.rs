//! The Reporter's cgroup v2 reader: inside a container the host's `/proc` figures are wrong
//! (issue 19, "OS statistics"), so when the process's cgroup has a CPU or memory limit the
//! Reporter reports against that limit.
//!
//! ```text
//!  /proc/self/mountinfo ──► cgroup2 mount ─┐
//!  /proc/self/cgroup ("0::/path") ─────────┴► cgroup dir ─► cpu.max, cpu.stat,
//!                                                          memory.max, memory.current
//!                                                             │ (each gathering)
//!  two CgroupSamples + the time between ─► cgroup_stats(host figures) ─► OsStats
//! ```
//!
//! Parsers are pure functions over the files' text, tested on captured text; [`CgroupReader`]
//! does the (size-limited) reads. CPU busy fraction = Δ`usage_usec` / (Δt × quota/period);
//! memory used fraction = `memory.current` / `memory.max` (carried as
//! `total_virtual_bytes = memory.max`, `free_virtual_bytes = memory.max − memory.current`).
//! A figure with no limit keeps the host reader's value; with neither limit set the cgroup
//! reader is not used at all. Only the process's own cgroup is read: a limit set on an
//! ancestor alone (not visible inside a cgroup namespace anyway) is not looked for.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::os::{read_limited, OsError, OsStats};

/// `cpu.max`: the CPU bandwidth limit, `$MAX $PERIOD` in microseconds (`max 100000`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    /// Microseconds of CPU time the group may use per period; None: `max` (no limit).
    pub quota_usec: Option<u64>,
    /// The period, microseconds (never zero).
    pub period_usec: u64,
}

impl CpuMax {
    /// The limit in CPUs (quota / period); None without a limit.
    pub fn cpus(&self) -> Option<f64> {
        self.quota_usec.map(|q| q as f64 / self.period_usec as f64)
    }
}

/// What the Reporter takes from `cpu.stat` (cumulative microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStat {
    /// All CPU time of the group (`usage_usec`).
    pub usage_usec: u64,
    /// User mode (`user_usec`).
    pub user_usec: u64,
    /// Kernel mode (`system_usec`).
    pub system_usec: u64,
}

/// The limits of the process's cgroup at one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupLimits {
    /// `cpu.max` when it sets a quota (None: no file, or `max`).
    pub cpu: Option<CpuMax>,
    /// `memory.max` in bytes when set (None: no file, or `max`).
    pub memory_max: Option<u64>,
}

impl CgroupLimits {
    /// True when a CPU or memory limit is set: only then are the cgroup figures used.
    pub fn any(&self) -> bool {
        self.cpu.is_some() || self.memory_max.is_some()
    }

    /// How the status page names the limits, e.g. `cpu.max 0.5 cpu, memory.max 512 MiB`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cpus) = self.cpu.and_then(|c| c.cpus()) {
            parts.push(format!("cpu.max {cpus} cpu"));
        }
        if let Some(max) = self.memory_max {
            parts.push(format!("memory.max {}", bytes(max)));
        }
        parts.join(", ")
    }
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n.is_multiple_of(1024 * MIB) {
        format!("{} GiB", n / (1024 * MIB))
    } else if n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// One reading of the cgroup files, taken only when a limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupSample {
    /// The limits at this reading (they may change: `docker update`).
    pub limits: CgroupLimits,
    /// `cpu.stat`.
    pub cpu: CpuStat,
    /// `memory.current` in bytes; read only when `memory.max` is set.
    pub memory_current: Option<u64>,
}

/// Parses `cpu.max` (`max 100000`, `50000 100000`; the period may be absent in old
/// kernels' echo but the kernel always writes it).
pub fn parse_cpu_max(text: &str) -> Result<CpuMax, OsError> {
    const FILE: &str = "cpu.max";
    let mut words = text.split_ascii_whitespace();
    let quota = words.next().ok_or(OsError::Missing {
        file: FILE,
        field: "max",
    })?;
    let period = words.next().ok_or(OsError::Missing {
        file: FILE,
        field: "period",
    })?;
    if let Some(extra) = words.next() {
        return Err(bad(FILE, "period", extra));
    }
    let period_usec = number(FILE, "period", period)?;
    if period_usec == 0 {
        return Err(bad(FILE, "period", period));
    }
    let quota_usec = match quota {
        "max" => None,
        q => match number(FILE, "max", q)? {
            0 => return Err(bad(FILE, "max", q)),
            n => Some(n),
        },
    };
    Ok(CpuMax {
        quota_usec,
        period_usec,
    })
}

/// Parses `cpu.stat` (`key value` lines) for `usage_usec`, `user_usec`, `system_usec`.
pub fn parse_cpu_stat(text: &str) -> Result<CpuStat, OsError> {
    const FILE: &str = "cpu.stat";
    let (mut usage, mut user, mut system) = (None, None, None);
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(key) = words.next() else { continue };
        let slot = match key {
            "usage_usec" => &mut usage,
            "user_usec" => &mut user,
            "system_usec" => &mut system,
            _ => continue,
        };
        *slot = Some(number(FILE, key, words.next().unwrap_or(""))?);
    }
    let need = |v: Option<u64>, field| v.ok_or(OsError::Missing { file: FILE, field });
    Ok(CpuStat {
        usage_usec: need(usage, "usage_usec")?,
        user_usec: need(user, "user_usec")?,
        system_usec: need(system, "system_usec")?,
    })
}

/// Parses `memory.max`: None for `max`, else bytes.
pub fn parse_memory_max(text: &str) -> Result<Option<u64>, OsError> {
    match text.trim() {
        "max" => Ok(None),
        t => number("memory.max", "memory.max", t).map(Some),
    }
}

/// Parses `memory.current` (bytes).
pub fn parse_memory_current(text: &str) -> Result<u64, OsError> {
    number("memory.current", "memory.current", text.trim())
}

/// The process's cgroup v2 path from `/proc/self/cgroup` (the `0::/path` line).
pub fn parse_self_cgroup(text: &str) -> Result<&str, OsError> {
    const FILE: &str = "/proc/self/cgroup";
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(OsError::Missing {
            file: FILE,
            field: "0::",
        })?;
    // A path outside our cgroup namespace reads as `/../..`: not ours to read.
    if !path.starts_with('/')
        || Path::new(path)
            .components()
            .any(|c| c == Component::ParentDir)
    {
        return Err(bad(FILE, "0::", path));
    }
    Ok(path)
}

/// The first cgroup2 mount in `/proc/self/mountinfo`: (root inside the hierarchy, mount
/// point). Fields: `id parent maj:min root mount-point options [optional…] - fstype …`.
pub fn parse_cgroup2_mount(text: &str) -> Result<(String, PathBuf), OsError> {
    const FILE: &str = "/proc/self/mountinfo";
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_ascii_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let mut f = left.split_ascii_whitespace().skip(3);
        let (Some(root), Some(point)) = (f.next(), f.next()) else {
            return Err(bad(FILE, "cgroup2", line));
        };
        return Ok((unescape(root), PathBuf::from(unescape(point))));
    }
    Err(OsError::Missing {
        file: FILE,
        field: "cgroup2",
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of the process's cgroup: the mount point plus the cgroup path, less the
/// mount's root when the hierarchy is mounted from a subtree (a container without a
/// cgroup namespace sees its full path in `/proc/self/cgroup`).
pub fn cgroup_dir(mountinfo: &str, self_cgroup: &str) -> Result<PathBuf, OsError> {
    let (root, point) = parse_cgroup2_mount(mountinfo)?;
    let path = parse_self_cgroup(self_cgroup)?;
    let rel = match path.strip_prefix(root.trim_end_matches('/')) {
        Some(r) if r.is_empty() || r.starts_with('/') => r,
        _ => path,
    };
    Ok(match rel.trim_start_matches('/') {
        "" => point,
        rel => point.join(rel),
    })
}

/// The figures over the period from `prev` to `cur`, against `cur`'s limits; figures with
/// no limit are `host`'s, and so is CPU when `prev` has no cgroup sample (the limit was
/// just set: one sample is no rate). Counters that went backwards count as zero.
pub fn cgroup_stats(
    prev: Option<&CgroupSample>,
    cur: &CgroupSample,
    period: Duration,
    host: OsStats,
) -> OsStats {
    let mut s = host;
    let cpus = cur.limits.cpu.and_then(|c| c.cpus());
    if let (Some(cpus), Some(prev)) = (cpus, prev) {
        let capacity = period.as_secs_f64() * 1e6 * cpus;
        let frac = |a: u64, b: u64| {
            if capacity > 0.0 {
                (b.saturating_sub(a) as f64 / capacity).clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let (a, b) = (&prev.cpu, &cur.cpu);
        s.cpu_user = Some(frac(a.user_usec, b.user_usec));
        s.cpu_system = Some(frac(a.system_usec, b.system_usec));
        // No time at all (a zero period): idle, as the host reader says.
        s.cpu_idle = if capacity > 0.0 {
            1.0 - frac(a.usage_usec, b.usage_usec)
        } else {
            1.0
        };
    }
    if let (Some(max), Some(current)) = (cur.limits.memory_max, cur.memory_current) {
        let free = max.saturating_sub(current);
        s.mem_free_bytes = free;
        s.free_virtual_bytes = free;
        s.total_virtual_bytes = max;
    }
    s
}

/// Reads [`CgroupSample`]s from the process's cgroup v2 directory.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    dir: PathBuf,
}

impl CgroupReader {
    /// A reader of `dir` (the cgroup's directory under the cgroup2 mount).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Finds the process's cgroup from `proc_root/self/mountinfo` and
    /// `proc_root/self/cgroup`.
    pub fn discover(proc_root: &Path) -> Result<Self, OsError> {
        let mountinfo = read_limited(&proc_root.join("self/mountinfo"))?;
        let own = read_limited(&proc_root.join("self/cgroup"))?;
        Ok(Self::new(cgroup_dir(&mountinfo, &own)?))
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits now: a missing `cpu.max`/`memory.max` (controller not enabled for this
    /// group, or the root group) is no limit; a malformed one is an error.
    pub fn limits(&self) -> Result<CgroupLimits, OsError> {
        let cpu = match self.optional("cpu.max")? {
            Some(t) => Some(parse_cpu_max(&t)?).filter(|c| c.quota_usec.is_some()),
            None => None,
        };
        let memory_max = match self.optional("memory.max")? {
            Some(t) => parse_memory_max(&t)?,
            None => None,
        };
        Ok(CgroupLimits { cpu, memory_max })
    }

    /// One reading; Ok(None) when no limit is set (the host figures stand).
    pub fn read(&self) -> Result<Option<CgroupSample>, OsError> {
        let limits = self.limits()?;
        if !limits.any() {
            return Ok(None);
        }
        let cpu = parse_cpu_stat(&read_limited(&self.dir.join("cpu.stat"))?)?;
        let memory_current = match limits.memory_max {
            Some(_) => Some(parse_memory_current(&read_limited(
                &self.dir.join("memory.current"),
            )?)?),
            None => None,
        };
        Ok(Some(CgroupSample {
            limits,
            cpu,
            memory_current,
        }))
    }

    fn optional(&self, name: &str) -> Result<Option<String>, OsError> {
        match read_limited(&self.dir.join(name)) {
            Ok(t) => Ok(Some(t)),
            Err(OsError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn number(file: &'static str, field: &str, text: &str) -> Result<u64, OsError> {
    text.parse().map_err(|_| bad(file, field, text))
}

fn bad(file: &'static str, field: &str, text: &str) -> OsError {
    OsError::BadValue {
        file,
        field: field.to_owned(),
        value: text.chars().take(64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::os::{HostReader, OsReader, ProcReader};
    use super::*;

    // The hybrid mountinfo and /proc/self/cgroup are this build machine's (cgroup v1 for
    // cpu and memory, an empty cgroup2 at .../unified). The others are written by hand in
    // the kernel's formats (Documentation/admin-guide/cgroup-v2.rst, proc(5)) for a
    // systemd host on unified cgroup v2 and a container limited to 0.5 CPU and 512 MiB:
    // no such machine was at hand to capture them from.
    const MOUNTINFO_HOST: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
";
    const CGROUP_HOST: &str = "0::/system.slice/walrus.service\n";
    const MOUNTINFO_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const CGROUP_HYBRID: &str = "4:memory:/process_api/2c5a\n1:cpu:/\n0::/\n";
    const CPU_STAT_1: &str = "\
usage_usec 1000000
user_usec 700000
system_usec 300000
nr_periods 10
nr_throttled 2
throttled_usec 5000
";
    const CPU_STAT_2: &str = "\
usage_usec 1400000
user_usec 1000000
system_usec 400000
nr_periods 20
nr_throttled 9
throttled_usec 90000
";

    fn sample(cpu_max: &str, stat: &str, mem_max: &str, current: &str) -> CgroupSample {
        let cpu = Some(parse_cpu_max(cpu_max).unwrap()).filter(|c| c.quota_usec.is_some());
        let memory_max = parse_memory_max(mem_max).unwrap();
        CgroupSample {
            limits: CgroupLimits { cpu, memory_max },
            cpu: parse_cpu_stat(stat).unwrap(),
            memory_current: Some(parse_memory_current(current).unwrap()),
        }
    }

    fn host() -> OsStats {
        OsStats {
            cpu_user: Some(0.01),
            cpu_system: Some(0.01),
            cpu_idle: 0.98,
            mem_free_bytes: 20 << 30,
            free_virtual_bytes: 20 << 30,
            total_virtual_bytes: 24 << 30,
            ..OsStats::default()
        }
    }

    #[test]
    fn parses_captured_files() {
        assert_eq!(
            parse_cpu_max("max 100000\n").unwrap(),
            CpuMax {
                quota_usec: None,
                period_usec: 100_000
            }
        );
        let half = parse_cpu_max("50000 100000\n").unwrap();
        assert_eq!(half.cpus(), Some(0.5));
        assert_eq!(
            parse_cpu_stat(CPU_STAT_1).unwrap(),
            CpuStat {
                usage_usec: 1_000_000,
                user_usec: 700_000,
                system_usec: 300_000
            }
        );
        assert_eq!(parse_memory_max("max\n").unwrap(), None);
        assert_eq!(parse_memory_max("536870912\n").unwrap(), Some(512 << 20));
        assert_eq!(parse_memory_current("268435456\n").unwrap(), 256 << 20);
    }

    #[test]
    fn finds_the_cgroup_directory() {
        assert_eq!(
            cgroup_dir(MOUNTINFO_HOST, CGROUP_HOST).unwrap(),
            PathBuf::from("/sys/fs/cgroup/system.slice/walrus.service")
        );
        // This machine's kind: a v1 hybrid with an empty cgroup2 at .../unified.
        assert_eq!(
            cgroup_dir(MOUNTINFO_HYBRID, CGROUP_HYBRID).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        // A container without a cgroup namespace: the mount's root is the container's
        // subtree and /proc/self/cgroup shows the full path.
        let sub = "50 40 0:30 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_dir(sub, "0::/docker/abc\n").unwrap(),
            PathBuf::from("/sys/fs/cgroup")
        );
        assert_eq!(
            cgroup_dir(sub, "0::/docker/abc/inner\n").unwrap(),
            PathBuf::from("/sys/fs/cgroup/inner")
        );
        // Escaped space in the mount point.
        let esc = "50 40 0:30 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_dir(esc, "0::/a\n").unwrap(),
            PathBuf::from("/mnt/cg two/a")
        );
    }

    #[test]
    fn figures_against_the_limits() {
        // 0.5 CPU; 0.4 s of CPU in 1 s = 0.8 of the limit. 384 MiB of 512 MiB used.
        let a = sample("50000 100000", CPU_STAT_1, "536870912", "268435456");
        let b = sample("50000 100000", CPU_STAT_2, "536870912", "402653184");
        let s = cgroup_stats(Some(&a), &b, Duration::from_secs(1), host());
        assert!((s.cpu_idle - 0.2).abs() < 1e-9, "{s:?}");
        assert!((s.cpu_user.unwrap_or(-1.0) - 0.6).abs() < 1e-9, "{s:?}");
        assert!((s.cpu_system.unwrap_or(-1.0) - 0.2).abs() < 1e-9, "{s:?}");
        assert_eq!(s.total_virtual_bytes, 512 << 20);
        assert_eq!(s.free_virtual_bytes, 128 << 20);
        assert_eq!(s.mem_free_bytes, 128 << 20);
        assert_eq!(b.limits.describe(), "cpu.max 0.5 cpu, memory.max 512 MiB");
        // Over the limit (a burst inside one period): clamped, never negative idle.
        let s = cgroup_stats(Some(&a), &b, Duration::from_millis(100), host());
        assert_eq!(s.cpu_idle, 0.0);
    }

    #[test]
    fn a_figure_without_a_limit_stays_the_hosts() {
        // Memory limit only: CPU figures are the host's.
        let a = sample("max 100000", CPU_STAT_1, "1073741824", "0");
        let b = sample("max 100000", CPU_STAT_2, "1073741824", "536870912");
        let s = cgroup_stats(Some(&a), &b, Duration::from_secs(1), host());
        assert_eq!((s.cpu_idle, s.cpu_user), (0.98, Some(0.01)));
        assert_eq!(s.total_virtual_bytes, 1 << 30);
        assert_eq!(b.limits.describe(), "memory.max 1 GiB");
        // CPU limit only: memory figures are the host's.
        let mut c = sample("200000 100000", CPU_STAT_2, "max", "0");
        c.memory_current = None;
        let s = cgroup_stats(Some(&a), &c, Duration::from_secs(1), host());
        assert!((s.cpu_idle - 0.8).abs() < 1e-9, "{s:?}");
        assert_eq!(s.total_virtual_bytes, 24 << 30);
        // The first sample with a limit: no CPU rate yet, so the host's.
        let s = cgroup_stats(None, &c, Duration::from_secs(1), host());
        assert_eq!(s.cpu_idle, 0.98);
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        for (text, want) in [
            ("", "cpu.max: field `max` is missing"),
            ("50000", "cpu.max: field `period` is missing"),
        ] {
            let got = parse_cpu_max(text).map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_owned()), "{text:?}");
        }
        assert!(parse_cpu_max("50000 0").is_err(), "zero period");
        assert!(parse_cpu_max("0 100000").is_err(), "zero quota");
        assert!(parse_cpu_max("-1 100000").is_err());
        assert!(parse_cpu_max("50000 100000 7").is_err());
        let e = parse_cpu_stat("user_usec 1\nsystem_usec 2\n").unwrap_err();
        assert_eq!(e.to_string(), "cpu.stat: field `usage_usec` is missing");
        assert!(parse_cpu_stat("usage_usec lots\n").is_err());
        let e = parse_memory_max("512M").unwrap_err();
        assert_eq!(
            e.to_string(),
            "memory.max: field `memory.max` has bad value \"512M\""
        );
        assert!(parse_memory_current("").is_err());
        assert!(parse_memory_current(&"9".repeat(40)).is_err());
        assert!(parse_self_cgroup("1:cpu:/\n").is_err());
        assert!(parse_self_cgroup("0::/../../x\n").is_err());
        assert!(parse_cgroup2_mount("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n").is_err());
        assert!(parse_cgroup2_mount("41 31 - cgroup2 cgroup2 rw\n").is_err());
        assert!(parse_cpu_max("\u{0}\u{ff}").is_err());
    }

    /// A temporary directory holding `files`, removed on drop.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new(name: &str, files: &[(&str, &str)]) -> Self {
            let dir = std::env::temp_dir().join(format!("walrus-cg-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            for (f, text) in files {
                std::fs::write(dir.join(f), text).unwrap();
            }
            Self(dir)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn reader(dir: &Path) -> OsReader {
        OsReader::with_cgroup(
            HostReader::Procfs(ProcReader::default()),
            CgroupReader::new(dir),
        )
    }

    #[test]
    fn reads_a_limited_cgroup_directory() {
        let fx = Fixture::new(
            "limited",
            &[
                ("cpu.max", "50000 100000\n"),
                ("cpu.stat", CPU_STAT_1),
                ("memory.max", "536870912\n"),
                ("memory.current", "268435456\n"),
            ],
        );
        let mut r = reader(&fx.0);
        let reading = r.read().unwrap();
        assert_eq!(
            reading.cgroup.map(|c| c.memory_current),
            Some(Some(256 << 20))
        );
        assert_eq!(
            r.name(),
            "procfs+cgroup2 (cpu.max 0.5 cpu, memory.max 512 MiB)"
        );
    }

    #[test]
    fn no_limit_or_malformed_files_fall_back_to_the_host() {
        // No limit: the root group has no cpu.max/memory.max at all.
        let fx = Fixture::new("nolimit", &[("cpu.stat", CPU_STAT_1)]);
        let mut r = reader(&fx.0);
        assert_eq!(r.read().unwrap().cgroup, None);
        assert_eq!(r.name(), "procfs");
        assert_eq!(
            r.cgroup_off.as_deref(),
            Some("no cpu.max or memory.max limit set")
        );
        // "max" everywhere: no limit either.
        let fx = Fixture::new(
            "max",
            &[
                ("cpu.max", "max 100000\n"),
                ("memory.max", "max\n"),
                ("cpu.stat", CPU_STAT_1),
            ],
        );
        assert_eq!(reader(&fx.0).read().unwrap().cgroup, None);
        // Malformed: the reading stands on the host figures, with the reason logged.
        for (name, files, reason) in [
            (
                "badmax",
                vec![("cpu.max", "half 100000\n"), ("cpu.stat", CPU_STAT_1)],
                "cgroup v2 unreadable: cpu.max: field `max` has bad value \"half\"",
            ),
            (
                "nostat",
                vec![("cpu.max", "50000 100000\n")],
                "cgroup v2 unreadable: cannot read",
            ),
            (
                "badcurrent",
                vec![
                    ("memory.max", "536870912\n"),
                    ("memory.current", "\u{0}\u{ff}"),
                    ("cpu.stat", CPU_STAT_1),
                ],
                "cgroup v2 unreadable: memory.current: field `memory.current` has bad value",
            ),
        ] {
            let fx = Fixture::new(name, &files);
            let mut r = reader(&fx.0);
            let reading = r.read().unwrap();
            assert_eq!(reading.cgroup, None, "{name}");
            assert!(matches!(
                reading.host,
                super::super::os::HostReading::Procfs(_)
            ));
            assert_eq!(r.name(), "procfs", "{name}");
            let off = r.cgroup_off.clone().unwrap_or_default();
            assert!(off.starts_with(reason), "{name}: {off}");
        }
    }

    /// Why a real cgroup v2 child with `cpu.max` cannot be made here; None when it can.
    fn real_cgroup_blocked(dir: &Path) -> Option<String> {
        let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", dir.display()));
        let controllers = match controllers {
            Ok(c) => c,
            Err(e) => return Some(e),
        };
        if !controllers.split_ascii_whitespace().any(|c| c == "cpu") {
            let v1 = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .find(|l| {
                    l.split_once(" - ").is_some_and(|(_, r)| {
                        r.starts_with("cgroup ") && r.split(',').any(|o| o == "cpu")
                    })
                })
                .and_then(|l| l.split_ascii_whitespace().nth(4).map(str::to_owned));
            return Some(format!(
                "the cgroup2 hierarchy offers controllers [{}] at {}: no `cpu` \
                 (cgroup.controllers){}",
                controllers.trim(),
                dir.display(),
                match v1 {
                    Some(m) =>
                        format!("; the cpu controller is bound to the cgroup v1 hierarchy at {m}"),
                    None => String::new(),
                }
            ));
        }
        let subtree = dir.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&subtree).unwrap_or_default();
        if !enabled.split_ascii_whitespace().any(|c| c == "cpu") {
            if let Err(e) = std::fs::write(&subtree, "+cpu") {
                return Some(format!(
                    "cannot enable cpu for children in {}: {e}",
                    subtree.display()
                ));
            }
        }
        None
    }

    /// Against a real cgroup v2: a child group with `cpu.max` 0.5 CPU and one spinning
    /// process in it; the reader must see the limit and a busy fraction measured against
    /// it. Skipped, with the precise reason printed, where the machine has no cgroup v2 cpu
    /// controller to give.
    #[test]
    fn real_cgroup_v2_child_with_cpu_max() {
        let parent = match CgroupReader::discover(Path::new("/proc")) {
            Ok(r) => r.dir().to_owned(),
            Err(e) => {
                println!("skipped: no cgroup v2 for this process: {e}");
                return;
            }
        };
        if let Some(reason) = real_cgroup_blocked(&parent) {
            println!("skipped: {reason}");
            return;
        }
        let child = parent.join(format!("walrus-test-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&child) {
            println!("skipped: cannot create {}: {e}", child.display());
            return;
        }
        // Removes the group after the spinner is gone (rmdir of a populated group fails).
        struct Group(PathBuf, Option<std::process::Child>);
        impl Drop for Group {
            fn drop(&mut self) {
                if let Some(mut c) = self.1.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                for _ in 0..50 {
                    if std::fs::remove_dir(&self.0).is_ok() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let mut group = Group(child.clone(), None);
        std::fs::write(child.join("cpu.max"), "50000 100000").unwrap();
        let spinner = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = spinner.id();
        group.1 = Some(spinner);
        if let Err(e) = std::fs::write(child.join("cgroup.procs"), pid.to_string()) {
            println!(
                "skipped: cannot move pid {pid} into {}: {e}",
                child.display()
            );
            return;
        }
        let reader = CgroupReader::new(&child);
        let a = reader.read().unwrap().expect("cpu.max was just set");
        let t0 = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(1500));
        let b = reader.read().unwrap().expect("cpu.max was just set");
        let period = t0.elapsed();
        assert_eq!(b.limits.describe(), "cpu.max 0.5 cpu");
        let used_cpus =
            b.cpu.usage_usec.saturating_sub(a.cpu.usage_usec) as f64 / 1e6 / period.as_secs_f64();
        let s = cgroup_stats(Some(&a), &b, period, OsStats::default());
        println!(
            "real cgroup: {used_cpus:.3} cpu used, busy {:.3} of the limit",
            1.0 - s.cpu_idle
        );
        // The kernel holds the spinner to 0.5 CPU (a little slack for period edges);
        // the busy fraction is measured against the limit, not the host's CPUs.
        assert!(used_cpus <= 0.55, "{used_cpus}");
        assert!(used_cpus > 0.0, "the spinner ran");
        assert!((1.0 - s.cpu_idle - used_cpus / 0.5).abs() < 1e-6, "{s:?}");
    }
}
