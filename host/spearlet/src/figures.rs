//! Real resource figures of this node, read from `/proc` and `statvfs(3)`: what registration
//! declares as capacity and what heartbeats report as available.

use std::path::Path;

use spear_proto::v1;

/// CPU time counters from `/proc/stat` (all cores): busy and total jiffies.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

/// Read the aggregate CPU line of `/proc/stat`.
pub fn cpu_times() -> CpuTimes {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return CpuTimes::default();
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    // idle and iowait are fields 4 and 5.
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    }
}

/// CPU load between two readings, in thousandths (1000 = every core busy).
pub fn load_permille(before: CpuTimes, after: CpuTimes) -> u32 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0;
    }
    (after.busy.saturating_sub(before.busy) * 1000 / total) as u32
}

/// Number of cores this process may use.
pub fn cores() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// `(total, available)` memory in bytes from `/proc/meminfo`.
pub fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// `(total, available)` bytes of the file system holding `path`.
pub fn disk(path: &Path) -> (u64, u64) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return (0, 0);
    };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return (0, 0);
    }
    let frsize = s.f_frsize;
    (s.f_blocks * frsize, s.f_bavail * frsize)
}

const MIB: u64 = 1024 * 1024;

/// What this node offers SMS.
pub fn capacity(data_dir: &Path) -> v1::Resources {
    v1::Resources {
        cpu_millis: cores() * 1000,
        memory_mb: memory().0 / MIB,
        disk_mb: disk(data_dir).0 / MIB,
    }
}

/// What is free now, given the CPU load.
pub fn available(data_dir: &Path, load_permille: u32) -> v1::Resources {
    let cpu = cores() * 1000;
    v1::Resources {
        cpu_millis: cpu.saturating_sub(cpu * u64::from(load_permille.min(1000)) / 1000),
        memory_mb: memory().1 / MIB,
        disk_mb: disk(data_dir).1 / MIB,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_real_and_consistent() {
        let (total, avail) = memory();
        assert!(total > 0 && avail > 0 && avail <= total);
        let (dt, da) = disk(Path::new("/"));
        assert!(dt > 0 && da <= dt);
        let a = cpu_times();
        // Burn a little CPU so the counters move.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = cpu_times();
        assert!(b.total > a.total);
        assert!(load_permille(a, b) <= 1000);
        let c = capacity(Path::new("/"));
        assert_eq!(c.cpu_millis, cores() * 1000);
        assert!(available(Path::new("/"), 0).memory_mb <= c.memory_mb);
    }
}
