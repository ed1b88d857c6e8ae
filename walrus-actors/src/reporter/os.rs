//! The OS-specific piece of the Reporter (paper §4, "three pieces"): two readers.
//!
//! - **procfs** (Linux, the default there): parsers are pure functions over the text of
//!   `/proc/stat`, `/proc/meminfo` and `/proc/vmstat`, tested on captured text;
//!   [`ProcReader`] reads the three files (from `/proc`, or from another directory in
//!   tests) into one [`OsSample`]; [`os_stats`] turns two samples and the time between
//!   them into the figures a report carries. It alone has the user/system/idle split, the
//!   runnable/blocked process counts and the swap-out rate.
//! - **portable** ([`PortableReader`], on sysinfo; any OS, or `[reporter] os_stats =
//!   "portable"`): total CPU usage, memory and swap, and the process counts where sysinfo
//!   gives process states. What it cannot measure is absent from [`OsStats`] (`None`),
//!   never a made-up zero; the load formula does not use those figures (see
//!   [`crate::controller::load`]).
//!
//! [`OsSource`] picks the reader; [`OsReading`] is one reading of either, plus, on Linux,
//! the process's cgroup v2 files when its cgroup sets a CPU or memory limit: then
//! [`os_stats_between`] reports CPU and memory against those limits
//! ([`super::cgroup`]), and [`OsReader::name`] says `procfs+cgroup2 (…)`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cgroup::{cgroup_stats, CgroupReader, CgroupSample};

/// Largest procfs file we read (`/proc/stat` grows with the number of CPUs and interrupts;
/// a few hundred KiB on very large hosts). Anything bigger is refused, not truncated.
pub const MAX_PROC_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why an OS reading failed. A failed reading makes the report TEMPFAIL (transient).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OsError {
    /// A procfs file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A procfs file is larger than [`MAX_PROC_FILE_BYTES`].
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, bytes.
        limit: u64,
    },
    /// A required field is missing from a file.
    #[error("{file}: field `{field}` is missing")]
    Missing {
        /// Which file (`/proc/stat`, `/proc/meminfo`, `/proc/vmstat`).
        file: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field is present but its value is not what the kernel writes.
    #[error("{file}: field `{field}` has bad value {value:?}")]
    BadValue {
        /// Which file.
        file: &'static str,
        /// The field.
        field: String,
        /// The text found (cut to 64 characters).
        value: String,
    },
}

/// Cumulative CPU time of the whole host, in clock ticks (first `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Normal processes in user mode.
    pub user: u64,
    /// Niced processes in user mode.
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle waiting for I/O.
    pub iowait: u64,
    /// Servicing interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
}

impl CpuTimes {
    /// Every tick counted once (guest time is already inside user time).
    fn total(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system)
            .saturating_add(self.idle)
            .saturating_add(self.iowait)
            .saturating_add(self.irq)
            .saturating_add(self.softirq)
            .saturating_add(self.steal)
    }
}

/// What the Reporter takes from `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStat {
    /// Host CPU times (the aggregate `cpu` line).
    pub cpu: CpuTimes,
    /// Runnable processes now (`procs_running`).
    pub procs_running: u32,
    /// Processes blocked on I/O now (`procs_blocked`).
    pub procs_blocked: u32,
}

/// What the Reporter takes from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemFree`.
    pub free: u64,
    /// `MemAvailable` (free plus reclaimable cache).
    pub available: u64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// `SwapFree`.
    pub swap_free: u64,
}

/// What the Reporter takes from `/proc/vmstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmStat {
    /// Pages swapped out since boot (`pswpout`).
    pub pswpout: u64,
}

/// One reading of the three files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OsSample {
    /// From `/proc/stat`.
    pub stat: ProcStat,
    /// From `/proc/meminfo`.
    pub mem: MemInfo,
    /// From `/proc/vmstat`.
    pub vm: VmStat,
}

/// The OS part of a report: figures over one period (see `model::ServerStats`). `None`:
/// the reader cannot measure it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OsStats {
    /// Fraction of CPU time in user mode (user + nice), 0.0–1.0.
    pub cpu_user: Option<f64>,
    /// Fraction of CPU time in kernel mode (system + irq + softirq), 0.0–1.0.
    pub cpu_system: Option<f64>,
    /// Fraction of CPU time idle (idle + iowait), 0.0–1.0.
    pub cpu_idle: f64,
    /// Free physical memory, bytes.
    pub mem_free_bytes: u64,
    /// Swap in use, bytes.
    pub swap_used_bytes: u64,
    /// Pages swapped out per second over the period.
    pub pages_out_per_sec: Option<f64>,
    /// Available memory plus free swap, bytes.
    pub free_virtual_bytes: u64,
    /// Physical memory plus swap, bytes.
    pub total_virtual_bytes: u64,
    /// Runnable processes at the end of the period.
    pub procs_running: Option<u32>,
    /// Blocked processes at the end of the period.
    pub procs_blocked: Option<u32>,
}

/// Parses `/proc/stat`: the aggregate `cpu` line and `procs_running`/`procs_blocked`.
pub fn parse_proc_stat(text: &str) -> Result<ProcStat, OsError> {
    const FILE: &str = "/proc/stat";
    let mut cpu = None;
    let mut running = None;
    let mut blocked = None;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("cpu") => {
                // Older kernels write fewer columns; missing ones count as zero.
                let mut v = [0u64; 8];
                for (i, slot) in v.iter_mut().enumerate() {
                    match words.next() {
                        Some(w) => *slot = number(FILE, CPU_FIELDS[i], w)?,
                        None if i >= 4 => break,
                        None => {
                            return Err(OsError::Missing {
                                file: FILE,
                                field: CPU_FIELDS[i],
                            })
                        }
                    }
                }
                cpu = Some(CpuTimes {
                    user: v[0],
                    nice: v[1],
                    system: v[2],
                    idle: v[3],
                    iowait: v[4],
                    irq: v[5],
                    softirq: v[6],
                    steal: v[7],
                });
            }
            Some("procs_running") => running = Some(count(FILE, "procs_running", words.next())?),
            Some("procs_blocked") => blocked = Some(count(FILE, "procs_blocked", words.next())?),
            _ => {}
        }
    }
    Ok(ProcStat {
        cpu: cpu.ok_or(OsError::Missing {
            file: FILE,
            field: "cpu",
        })?,
        procs_running: running.ok_or(OsError::Missing {
            file: FILE,
            field: "procs_running",
        })?,
        procs_blocked: blocked.ok_or(OsError::Missing {
            file: FILE,
            field: "procs_blocked",
        })?,
    })
}

const CPU_FIELDS: [&str; 8] = [
    "cpu.user",
    "cpu.nice",
    "cpu.system",
    "cpu.idle",
    "cpu.iowait",
    "cpu.irq",
    "cpu.softirq",
    "cpu.steal",
];

/// Parses `/proc/meminfo` (`Key:   value kB` lines) into bytes.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, OsError> {
    const FILE: &str = "/proc/meminfo";
    let mut fields: [Option<u64>; 5] = [None; 5];
    const KEYS: [&str; 5] = [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "SwapTotal",
        "SwapFree",
    ];
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(i) = KEYS.iter().position(|k| *k == key) else {
            continue;
        };
        let mut words = rest.split_ascii_whitespace();
        let value = number(FILE, KEYS[i], words.next().unwrap_or(""))?;
        let multiplier = match words.next() {
            Some("kB") => 1024,
            None => 1,
            Some(unit) => {
                return Err(OsError::BadValue {
                    file: FILE,
                    field: KEYS[i].to_owned(),
                    value: cut(unit),
                })
            }
        };
        fields[i] = Some(value.saturating_mul(multiplier));
    }
    let get = |i: usize| {
        fields[i].ok_or(OsError::Missing {
            file: FILE,
            field: KEYS[i],
        })
    };
    Ok(MemInfo {
        total: get(0)?,
        free: get(1)?,
        available: get(2)?,
        swap_total: get(3)?,
        swap_free: get(4)?,
    })
}

/// Parses `/proc/vmstat` (`key value` lines) for `pswpout`.
pub fn parse_vmstat(text: &str) -> Result<VmStat, OsError> {
    const FILE: &str = "/proc/vmstat";
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        if words.next() == Some("pswpout") {
            return Ok(VmStat {
                pswpout: number(FILE, "pswpout", words.next().unwrap_or(""))?,
            });
        }
    }
    Err(OsError::Missing {
        file: FILE,
        field: "pswpout",
    })
}

/// The figures over the period from `prev` to `cur`. Counters that went backwards (they
/// never do on one boot; a restored snapshot could) count as zero.
pub fn os_stats(prev: &OsSample, cur: &OsSample, period: Duration) -> OsStats {
    let (a, b) = (&prev.stat.cpu, &cur.stat.cpu);
    let d = |x: u64, y: u64| y.saturating_sub(x);
    let user = d(a.user, b.user) + d(a.nice, b.nice);
    let system = d(a.system, b.system) + d(a.irq, b.irq) + d(a.softirq, b.softirq);
    let idle = d(a.idle, b.idle) + d(a.iowait, b.iowait);
    let total = d(a.total(), b.total());
    let frac = |x: u64| {
        if total == 0 {
            0.0
        } else {
            (x as f64 / total as f64).clamp(0.0, 1.0)
        }
    };
    let secs = period.as_secs_f64();
    let pages_out = d(prev.vm.pswpout, cur.vm.pswpout) as f64;
    let m = &cur.mem;
    OsStats {
        cpu_user: Some(frac(user)),
        cpu_system: Some(frac(system)),
        // No ticks at all (a zero period): call the host idle rather than busy.
        cpu_idle: if total == 0 { 1.0 } else { frac(idle) },
        mem_free_bytes: m.free,
        swap_used_bytes: m.swap_total.saturating_sub(m.swap_free),
        pages_out_per_sec: Some(if secs > 0.0 { pages_out / secs } else { 0.0 }),
        free_virtual_bytes: m.available.saturating_add(m.swap_free),
        total_virtual_bytes: m.total.saturating_add(m.swap_total),
        procs_running: Some(cur.stat.procs_running),
        procs_blocked: Some(cur.stat.procs_blocked),
    }
}

/// Which OS reader the Reporter uses (`[reporter] os_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsSource {
    /// procfs on Linux, sysinfo elsewhere. The default.
    #[default]
    Auto,
    /// procfs (Linux only).
    Procfs,
    /// sysinfo, on any OS.
    Portable,
}

impl OsSource {
    /// True when this source reads procfs on this OS.
    pub fn uses_procfs(self) -> bool {
        match self {
            OsSource::Auto => cfg!(target_os = "linux"),
            OsSource::Procfs => true,
            OsSource::Portable => false,
        }
    }
}

/// One reading of the host reader (procfs or sysinfo).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HostReading {
    /// Raw procfs counters (figures come from two readings, see [`os_stats`]).
    Procfs(OsSample),
    /// Figures the portable reader computed since its previous reading.
    Portable(OsStats),
}

/// One OS reading: the host reader's, and the cgroup v2 files' when the process's cgroup
/// sets a CPU or memory limit (see [`super::cgroup`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OsReading {
    /// The host reader's reading.
    pub host: HostReading,
    /// The cgroup's reading; None without a limit (or when it could not be read).
    pub cgroup: Option<CgroupSample>,
}

impl From<OsSample> for OsReading {
    fn from(s: OsSample) -> Self {
        OsReading {
            host: HostReading::Procfs(s),
            cgroup: None,
        }
    }
}

/// The figures over the period from `prev` to `cur`: the host's, replaced by the cgroup's
/// where `cur` has a cgroup limit.
pub fn os_stats_between(prev: &OsReading, cur: &OsReading, period: Duration) -> OsStats {
    let host = match (&prev.host, &cur.host) {
        (HostReading::Procfs(a), HostReading::Procfs(b)) => os_stats(a, b, period),
        // The portable reader measures CPU usage since its own previous refresh.
        (_, HostReading::Portable(s)) => *s,
        // A source never changes within one Reporter; measure from this reading alone.
        (HostReading::Portable(_), HostReading::Procfs(b)) => os_stats(b, b, period),
    };
    match &cur.cgroup {
        Some(c) => cgroup_stats(prev.cgroup.as_ref(), c, period, host),
        None => host,
    }
}

/// The portable OS reader on sysinfo. CPU usage is measured between two refreshes (the
/// first reading's is since the reader was made).
pub struct PortableReader {
    sys: sysinfo::System,
}

impl std::fmt::Debug for PortableReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortableReader").finish_non_exhaustive()
    }
}

impl PortableReader {
    /// A reader; Err where sysinfo does not support this OS.
    pub fn new() -> Result<Self, OsError> {
        let mut sys = sysinfo::System::new().map_err(portable_error)?;
        sys.refresh_cpu_usage();
        Ok(Self { sys })
    }

    /// Refreshes CPU, memory and process states and returns the figures. Process states
    /// are counted where sysinfo knows them (`Run`, `UninterruptibleDiskSleep`); with no
    /// process visible at all, both counts are absent.
    pub fn read(&mut self) -> Result<OsStats, OsError> {
        use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate};
        let s = &mut self.sys;
        s.refresh_cpu_usage();
        s.refresh_memory();
        s.refresh_processes_specifics(ProcessesToUpdate::All, true, ProcessRefreshKind::nothing());
        let usage = f64::from(s.global_cpu_usage()) / 100.0;
        if !usage.is_finite() {
            return Err(OsError::BadValue {
                file: "sysinfo",
                field: "global_cpu_usage".into(),
                value: usage.to_string(),
            });
        }
        let (mut running, mut blocked, mut seen) = (0u32, 0u32, false);
        for p in s.processes().values() {
            seen = true;
            match p.status() {
                ProcessStatus::Run => running = running.saturating_add(1),
                ProcessStatus::UninterruptibleDiskSleep => blocked = blocked.saturating_add(1),
                _ => {}
            }
        }
        let (total, available, free) = (s.total_memory(), s.available_memory(), s.free_memory());
        let (swap_total, swap_free) = (s.total_swap(), s.free_swap());
        Ok(OsStats {
            cpu_user: None,
            cpu_system: None,
            cpu_idle: (1.0 - usage).clamp(0.0, 1.0),
            mem_free_bytes: free,
            swap_used_bytes: swap_total.saturating_sub(swap_free),
            pages_out_per_sec: None,
            free_virtual_bytes: available.saturating_add(swap_free),
            total_virtual_bytes: total.saturating_add(swap_total),
            procs_running: seen.then_some(running),
            procs_blocked: seen.then_some(blocked),
        })
    }
}

fn portable_error(e: sysinfo::Error) -> OsError {
    OsError::Read {
        path: PathBuf::from("(sysinfo)"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The host reader, as [`OsSource`] picks it.
#[derive(Debug)]
pub enum HostReader {
    /// procfs.
    Procfs(ProcReader),
    /// sysinfo.
    Portable(Box<PortableReader>),
}

/// The Reporter's OS reader: the host reader, plus the cgroup v2 reader on Linux when the
/// process's cgroup can be found.
#[derive(Debug)]
pub struct OsReader {
    host: HostReader,
    cgroup: Option<CgroupReader>,
    /// Why the cgroup figures are not in use now, as last logged (logged on change only).
    pub(super) cgroup_off: Option<String>,
    /// The source as the status page shows it, updated at each reading.
    source: String,
}

impl OsReader {
    /// The reader for `source` (procfs and the process's cgroup from `proc_root`).
    pub fn new(source: OsSource, proc_root: PathBuf) -> Result<Self, OsError> {
        let host = if source.uses_procfs() {
            HostReader::Procfs(ProcReader::new(proc_root.clone()))
        } else {
            HostReader::Portable(Box::new(PortableReader::new()?))
        };
        let mut reader = Self {
            host,
            cgroup: None,
            cgroup_off: None,
            source: String::new(),
        };
        if cfg!(target_os = "linux") {
            match CgroupReader::discover(&proc_root) {
                Ok(r) => reader.cgroup = Some(r),
                Err(e) => reader.cgroup_off(format!("no cgroup v2 found: {e}")),
            }
        }
        reader.source = reader.host_name().to_owned();
        Ok(reader)
    }

    /// A reader of `host` with the cgroup v2 reader `cgroup` (for tests on fixture
    /// directories).
    pub fn with_cgroup(host: HostReader, cgroup: CgroupReader) -> Self {
        let source = match &host {
            HostReader::Procfs(_) => "procfs",
            HostReader::Portable(_) => "sysinfo",
        };
        Self {
            host,
            cgroup: Some(cgroup),
            cgroup_off: None,
            source: source.to_owned(),
        }
    }

    /// One reading. A cgroup that cannot be read is logged (once per reason) and the host
    /// figures stand: the host reader's error alone fails the reading.
    pub fn read(&mut self) -> Result<OsReading, OsError> {
        let host = match &mut self.host {
            HostReader::Procfs(r) => HostReading::Procfs(r.read()?),
            HostReader::Portable(r) => HostReading::Portable(r.read()?),
        };
        let cgroup = match self.cgroup.as_ref().map(CgroupReader::read) {
            None => None,
            Some(Ok(None)) => {
                self.cgroup_off("no cpu.max or memory.max limit set".into());
                None
            }
            Some(Ok(Some(s))) => {
                self.cgroup_off = None;
                Some(s)
            }
            Some(Err(e)) => {
                self.cgroup_off(format!("cgroup v2 unreadable: {e}"));
                None
            }
        };
        self.source = match &cgroup {
            Some(c) => format!("{}+cgroup2 ({})", self.host_name(), c.limits.describe()),
            None => self.host_name().to_owned(),
        };
        Ok(OsReading { host, cgroup })
    }

    /// The source as the status page shows it: "procfs" or "sysinfo", with
    /// "+cgroup2 (limits)" when the last reading used the cgroup's limits.
    pub fn name(&self) -> &str {
        &self.source
    }

    fn host_name(&self) -> &'static str {
        match self.host {
            HostReader::Procfs(_) => "procfs",
            HostReader::Portable(_) => "sysinfo",
        }
    }

    /// Logs why the cgroup figures are not used, when the reason changed.
    fn cgroup_off(&mut self, reason: String) {
        if self.cgroup_off.as_deref() != Some(reason.as_str()) {
            tracing::info!(%reason, "OS statistics: host figures, not the cgroup's");
            self.cgroup_off = Some(reason);
        }
    }
}

/// Reads [`OsSample`]s from a procfs directory (`/proc` on a real host).
#[derive(Debug, Clone)]
pub struct ProcReader {
    root: PathBuf,
}

impl Default for ProcReader {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcReader {
    /// A reader of `root/stat`, `root/meminfo` and `root/vmstat`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Reads and parses the three files. Blocking, but procfs reads never wait on a disk:
    /// a few microseconds, so the gatherer calls it on its own task without
    /// `spawn_blocking`.
    pub fn read(&self) -> Result<OsSample, OsError> {
        Ok(OsSample {
            stat: parse_proc_stat(&read_limited(&self.root.join("stat"))?)?,
            mem: parse_meminfo(&read_limited(&self.root.join("meminfo"))?)?,
            vm: parse_vmstat(&read_limited(&self.root.join("vmstat"))?)?,
        })
    }
}

pub(super) fn read_limited(path: &Path) -> Result<String, OsError> {
    let read_err = |source| OsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_PROC_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_PROC_FILE_BYTES {
        return Err(OsError::TooLarge {
            path: path.to_owned(),
            limit: MAX_PROC_FILE_BYTES,
        });
    }
    Ok(text)
}

fn number(file: &'static str, field: &str, text: &str) -> Result<u64, OsError> {
    text.parse().map_err(|_| OsError::BadValue {
        file,
        field: field.to_owned(),
        value: cut(text),
    })
}

fn count(file: &'static str, field: &'static str, text: Option<&str>) -> Result<u32, OsError> {
    let text = text.ok_or(OsError::Missing { file, field })?;
    text.parse().map_err(|_| OsError::BadValue {
        file,
        field: field.to_owned(),
        value: cut(text),
    })
}

fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_1: &str = include_str!("../../tests/fixtures/linux-proc-stat-1.txt");
    const STAT_2: &str = include_str!("../../tests/fixtures/linux-proc-stat-2.txt");
    const MEMINFO: &str = include_str!("../../tests/fixtures/linux-proc-meminfo.txt");
    const VMSTAT_1: &str = include_str!("../../tests/fixtures/linux-proc-vmstat-1.txt");

    #[test]
    fn parses_captured_proc_stat() {
        let s = parse_proc_stat(STAT_1).unwrap();
        assert_eq!(
            s.cpu,
            CpuTimes {
                user: 9335,
                nice: 0,
                system: 3186,
                idle: 54791,
                iowait: 557,
                irq: 0,
                softirq: 53,
                steal: 38,
            }
        );
        assert_eq!((s.procs_running, s.procs_blocked), (6, 0));
    }

    #[test]
    fn parses_captured_meminfo_in_bytes() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.total, 24_684_084 * 1024);
        assert_eq!(m.free, 22_471_364 * 1024);
        assert_eq!(m.available, 23_837_660 * 1024);
        assert_eq!((m.swap_total, m.swap_free), (0, 0));
    }

    #[test]
    fn parses_captured_vmstat() {
        assert_eq!(parse_vmstat(VMSTAT_1).unwrap(), VmStat { pswpout: 0 });
    }

    #[test]
    fn stats_from_two_captured_samples() {
        let mem = parse_meminfo(MEMINFO).unwrap();
        let a = OsSample {
            stat: parse_proc_stat(STAT_1).unwrap(),
            mem,
            vm: VmStat { pswpout: 100 },
        };
        let b = OsSample {
            stat: parse_proc_stat(STAT_2).unwrap(),
            mem,
            vm: VmStat { pswpout: 300 },
        };
        let s = os_stats(&a, &b, Duration::from_secs(2));
        // Between the captures: user +189, system +14, idle +0 ticks.
        assert!(
            (s.cpu_user.unwrap_or(-1.0) - 189.0 / 203.0).abs() < 1e-9,
            "{s:?}"
        );
        assert!(
            (s.cpu_system.unwrap_or(-1.0) - 14.0 / 203.0).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(s.cpu_idle, 0.0);
        assert_eq!(s.pages_out_per_sec, Some(100.0));
        assert_eq!(s.free_virtual_bytes, mem.available);
        assert_eq!(s.total_virtual_bytes, mem.total);
        assert_eq!(s.swap_used_bytes, 0);
    }

    #[test]
    fn swap_figures() {
        let cur = OsSample {
            mem: MemInfo {
                total: 1000,
                free: 100,
                available: 300,
                swap_total: 500,
                swap_free: 200,
            },
            ..OsSample::default()
        };
        let s = os_stats(&OsSample::default(), &cur, Duration::from_secs(1));
        assert_eq!(s.swap_used_bytes, 300);
        assert_eq!(s.free_virtual_bytes, 500);
        assert_eq!(s.total_virtual_bytes, 1500);
        assert_eq!(s.cpu_idle, 1.0, "no ticks: idle");
    }

    #[test]
    fn old_kernel_short_cpu_line() {
        let s = parse_proc_stat("cpu 1 2 3 4\nprocs_running 1\nprocs_blocked 2\n").unwrap();
        assert_eq!(s.cpu.idle, 4);
        assert_eq!(s.cpu.steal, 0);
    }

    #[test]
    fn malformed_inputs_are_clear_errors() {
        let e = parse_proc_stat("").unwrap_err();
        assert_eq!(e.to_string(), "/proc/stat: field `cpu` is missing");
        let e = parse_proc_stat("cpu 1 2\nprocs_running 1\nprocs_blocked 0\n").unwrap_err();
        assert_eq!(e.to_string(), "/proc/stat: field `cpu.system` is missing");
        let e = parse_proc_stat("cpu 1 2 x 4\nprocs_running 1\nprocs_blocked 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/stat: field `cpu.system` has bad value \"x\""
        );
        let e = parse_proc_stat("cpu 1 2 3 4\nprocs_running -1\nprocs_blocked 0\n").unwrap_err();
        assert!(e.to_string().contains("procs_running"), "{e}");
        let e = parse_proc_stat("cpu 1 2 3 4\nprocs_running 1\n").unwrap_err();
        assert!(e.to_string().contains("procs_blocked"), "{e}");
        let e = parse_meminfo("MemTotal: 12 kB\n").unwrap_err();
        assert_eq!(e.to_string(), "/proc/meminfo: field `MemFree` is missing");
        let e = parse_meminfo(&MEMINFO.replace("MemFree:", "MemFree: lots")).unwrap_err();
        assert!(e.to_string().contains("MemFree"), "{e}");
        let e = parse_meminfo(&MEMINFO.replace("SwapFree:              0 kB", "SwapFree: 1 MB"))
            .unwrap_err();
        assert!(e.to_string().contains("\"MB\""), "{e}");
        let e = parse_vmstat("pswpin 3\n").unwrap_err();
        assert_eq!(e.to_string(), "/proc/vmstat: field `pswpout` is missing");
        // Binary garbage: an error, never a panic.
        assert!(parse_proc_stat("\u{0}\u{ff}cpu \u{1}").is_err());
        let huge = format!(
            "cpu {} 0 0 0\nprocs_running 1\nprocs_blocked 0\n",
            "9".repeat(40)
        );
        assert!(parse_proc_stat(&huge).is_err());
    }

    #[test]
    fn reads_this_host() {
        let s = ProcReader::default().read().unwrap();
        assert!(s.mem.total > 0);
        assert!(s.stat.cpu.total() > 0);
    }

    #[test]
    fn reads_a_fixture_directory_and_names_missing_files() {
        let dir = std::env::temp_dir().join(format!("walrus-os-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stat"), STAT_1).unwrap();
        std::fs::write(dir.join("meminfo"), MEMINFO).unwrap();
        let e = ProcReader::new(&dir).read().unwrap_err();
        assert!(e.to_string().contains("vmstat"), "{e}");
        std::fs::write(dir.join("vmstat"), VMSTAT_1).unwrap();
        let s = ProcReader::new(&dir).read().unwrap();
        assert_eq!(s.stat.procs_running, 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
