//! The broker's resident memory and open file descriptors, read from `/proc/<pid>`.

use std::io;

use serde::Serialize;

/// One sample of a process.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ProcSample {
    /// Resident set size in KiB (`VmRSS`), if readable.
    pub rss_kb: Option<u64>,
    /// Open file descriptors (entries of `/proc/<pid>/fd`), if readable.
    pub fds: Option<u64>,
}

/// Samples process `pid`; fields it cannot read stay `None`.
pub fn sample(pid: u32) -> ProcSample {
    ProcSample {
        rss_kb: rss_kb(pid).ok(),
        fds: fd_count(pid).ok(),
    }
}

/// Resident memory of `pid` in KiB, from the `VmRSS:` line of `/proc/<pid>/status`.
pub fn rss_kb(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no VmRSS line in /proc/{pid}/status"),
        )
    })
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> io::Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// The value of `VmRSS:   1234 kB` in a status file, in KiB.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some("mB") => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tmqtt-server\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id());
        assert!(me.rss_kb.is_some_and(|kb| kb > 0), "{me:?}");
        assert!(me.fds.is_some_and(|n| n >= 3), "{me:?}");
        assert_eq!(sample(u32::MAX), ProcSample::default());
    }
}
