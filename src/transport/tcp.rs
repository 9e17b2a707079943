//! Plain TCP listeners.

use std::sync::Arc;
use std::time::Duration;

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

use crate::broker::BrokerCore;
use crate::connection;
use crate::metrics::Metrics;
use crate::transport::ListenerContext;
use crate::transport::tls::{self, ReloadableTls};

/// Pending connections the kernel queues before `accept`. The default of tokio/mio (128) makes
/// connect bursts of a few hundred clients (a fleet reconnecting after an outage) hit
/// one-second SYN retransmissions; Mosquitto and most servers use 1024 or more.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a listening socket on `addr` (with `SO_REUSEADDR`, so a restarted broker does not
/// wait for old connections in TIME_WAIT).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections until the broker shuts down. Each connection takes a slot of
/// `max_connections`; a connection over the limit is closed at once (and counted) rather than
/// left waiting in the backlog.
pub(crate) async fn accept_loop(
    core: Arc<BrokerCore>,
    listener: TcpListener,
    context: Arc<ListenerContext>,
    tls: Option<Arc<ReloadableTls>>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = core.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                // Usually EMFILE/ENFILE: out of file descriptors. Back off instead of spinning;
                // established connections keep being served meanwhile.
                tracing::warn!(error = %e, listener = %context.local_addr, "accept failed; backing off");
                tokio::select! {
                    _ = core.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = core.connection_slots.clone().try_acquire_owned() else {
            Metrics::inc(&core.metrics.connections_refused);
            tracing::warn!(%peer, max = core.config.limits.max_connections, "max_connections reached; connection closed");
            drop(stream);
            continue;
        };
        Metrics::inc(&core.metrics.connections_total);
        // Small MQTT packets must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let core2 = core.clone();
        let context = context.clone();
        // The configuration current at accept time: a reload affects later handshakes only.
        let tls = tls.as_ref().map(|tls| tls.current());
        core.tasks.spawn(async move {
            match tls {
                None => connection::run(core2, context, stream, Some(peer), None).await,
                Some(config) => {
                    let timeout = core2.config.limits.connect_timeout();
                    let accepted = tokio::select! {
                        biased;
                        _ = core2.shutdown.cancelled() => None,
                        r = tls::accept(stream, config, timeout) => Some(r),
                    };
                    match accepted {
                        Some(Ok((stream, identity))) => {
                            let user = identity
                                .filter(|_| context.use_identity_as_username)
                                .and_then(|i| {
                                    i.common_name
                                        .or_else(|| i.subject_alt_names.into_iter().next())
                                });
                            connection::run(core2, context, stream, Some(peer), user).await;
                        }
                        Some(Err(e)) => {
                            // Scanners and misconfigured clients: not worth more than debug,
                            // but counted.
                            Metrics::inc(&core2.metrics.tls_handshake_failures);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        None => {}
                    }
                }
            }
            drop(permit);
        });
    }
}
