//! The open-file limit: raised to the hard limit at start (with the `rlimit` crate), and
//! checked against the sockets a scenario needs.

/// File descriptors kept free for everything that is not a client socket.
pub const RESERVED_FDS: u64 = 100;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Checks that `sockets` client sockets plus [`RESERVED_FDS`] fit under `limit`.
pub fn check(sockets: u64, limit: u64) -> Result<(), String> {
    let needed = sockets.saturating_add(RESERVED_FDS);
    if needed <= limit {
        return Ok(());
    }
    let per_process = limit.saturating_sub(RESERVED_FDS).max(1);
    Err(format!(
        "{sockets} connections need {needed} file descriptors, but the open-file limit is \
         {limit} (already raised to the hard limit). Split the load across processes: run \
         {} mqtt-bench processes with --connections {} (or fewer clients) each, with distinct \
         --client-prefix values, or raise the hard limit (ulimit -Hn, limits.conf)",
        sockets.div_ceil(per_process),
        sockets.div_ceil(sockets.div_ceil(per_process)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts_the_reserve() {
        assert!(check(900, 1000).is_ok());
        let Err(msg) = check(901, 1000) else {
            panic!("901 + 100 > 1000 accepted");
        };
        assert!(msg.contains("Split the load across processes"), "{msg}");
        assert!(msg.contains("run 2 mqtt-bench processes"), "{msg}");
        assert!(msg.contains("--connections 451"), "{msg}");
    }

    #[test]
    fn raise_returns_at_least_the_old_soft_limit() {
        let before = rlimit::Resource::NOFILE.get_soft().unwrap_or(0);
        let after = raise().unwrap_or(0);
        assert!(after >= before);
    }
}
