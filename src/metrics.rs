//! Broker-wide counters. Every part of the broker updates them with relaxed atomic adds, which
//! cost a few nanoseconds; `$SYS` topics and a Prometheus endpoint will read them later.

use std::sync::atomic::{AtomicU64, Ordering};

/// The broker's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) connections_current: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) acl_denied: AtomicU64,
    pub(crate) tls_handshake_failures: AtomicU64,
    /// Second (since the Unix epoch) of the last "queue full" warning.
    last_drop_warning: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Clients connected now (network and in-process).
    pub connections_current: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections refused: over `max_connections`, or CONNACK with a failure code.
    pub connections_refused: u64,
    /// Connections closed for a protocol violation or malformed packet.
    pub protocol_errors: u64,
    /// PUBLISH packets received from clients (and in-process publishes).
    pub messages_received: u64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: u64,
    /// Messages dropped because a client's queue was full (or QoS 0 for an offline client).
    pub messages_dropped: u64,
    /// Bytes read from client sockets.
    pub bytes_received: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// PUBLISH, SUBSCRIBE and deliveries refused by the ACL.
    pub acl_denied: u64,
    /// TLS handshakes that failed (wrong CA, no client certificate, timeouts, scanners).
    pub tls_handshake_failures: u64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// True at most once per second: whether a "queue full" warning may be logged now.
    pub(crate) fn drop_warning_due(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_drop_warning.load(Ordering::Relaxed);
        last != now
            && self
                .last_drop_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub(crate) fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_current: r(&self.connections_current),
            connections_total: r(&self.connections_total),
            connections_refused: r(&self.connections_refused),
            protocol_errors: r(&self.protocol_errors),
            messages_received: r(&self.messages_received),
            messages_sent: r(&self.messages_sent),
            messages_dropped: r(&self.messages_dropped),
            bytes_received: r(&self.bytes_received),
            bytes_sent: r(&self.bytes_sent),
            acl_denied: r(&self.acl_denied),
            tls_handshake_failures: r(&self.tls_handshake_failures),
        }
    }
}
