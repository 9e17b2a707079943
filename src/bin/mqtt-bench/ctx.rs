//! What every scenario of one run shares: options, the broker endpoint, the time origin, the
//! live counters; and the error type of a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use mqtt_server::QoS;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::Common;
use crate::client::{ClientError, Conn, Endpoint};
use crate::fdlimit;
use crate::proc::{self, ProcSample};
use crate::stats::Live;

/// Connection handshakes in progress at once while a scenario sets up its clients.
const SETUP_CONCURRENCY: usize = 128;

/// Why a run could not be carried out.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The options ask for something impossible here (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// A client failed during setup (exit status 1).
    #[error("client {who}: {source}")]
    Client {
        /// The client identifier.
        who: String,
        /// What went wrong.
        source: ClientError,
    },
    /// Anything else that stops the run (exit status 1).
    #[error("{0}")]
    Failed(String),
}

/// The run's shared context.
#[derive(Debug)]
pub struct Ctx {
    /// The common options.
    pub common: Common,
    /// The scenario's name (part of every topic).
    pub scenario: &'static str,
    /// Where to connect.
    pub endpoint: Arc<Endpoint>,
    /// Time origin of stamps and reports.
    pub origin: Instant,
    /// Live counters.
    pub live: Arc<Live>,
    /// Prefix of client identifiers and topics.
    pub prefix: String,
    /// Soft open-file limit in force.
    pub nofile: u64,
}

impl Ctx {
    /// A topic of this run: `bench/<prefix>/<scenario>/<suffix>`.
    pub fn topic(&self, suffix: &str) -> ByteString {
        ByteString::from(format!("bench/{}/{}/{suffix}", self.prefix, self.scenario))
    }

    /// A client identifier of this run: `<prefix>-<role>-<i>`.
    pub fn client_id(&self, role: &str, i: usize) -> String {
        format!("{}-{role}-{i}", self.prefix)
    }

    /// The QoS of publications and subscriptions.
    pub fn qos(&self) -> QoS {
        QoS::from_u8(self.common.qos).unwrap_or_default()
    }

    /// Time allowed for one connection handshake or SUBACK.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.common.connect_timeout)
    }

    /// The run's duration bound.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.common.duration)
    }

    /// Samples the broker process, if `--broker-pid` was given.
    pub fn sample_broker(&self) -> Option<ProcSample> {
        self.common.broker_pid.map(proc::sample)
    }

    /// Fails with advice when `sockets` client sockets would not fit the open-file limit.
    pub fn check_fds(&self, sockets: usize) -> Result<(), BenchError> {
        fdlimit::check(u64::try_from(sockets).unwrap_or(u64::MAX), self.nofile)
            .map_err(BenchError::Usage)
    }

    /// Nanoseconds from the origin to now.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A client to set up: its identifier and the filters it subscribes to (maybe none).
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Client identifier.
    pub id: String,
    /// Filters to subscribe to before the run starts.
    pub filters: Vec<ByteString>,
}

/// Connects (and subscribes) all `specs`, a bounded number at a time; the connections come
/// back in the order of `specs`. The first failure fails the whole setup.
pub async fn connect_all(ctx: &Ctx, specs: Vec<ClientSpec>) -> Result<Vec<Conn>, BenchError> {
    let total = specs.len();
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let endpoint = Arc::clone(&ctx.endpoint);
        let permits = Arc::clone(&permits);
        let qos = ctx.qos();
        let timeout = ctx.connect_timeout();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = async {
                let mut conn = endpoint.connect(&spec.id).await?;
                if !spec.filters.is_empty() {
                    conn.subscribe_all(&spec.filters, qos, timeout).await?;
                }
                Ok::<_, ClientError>(conn)
            }
            .await;
            (i, spec.id, result)
        });
    }
    let mut conns: Vec<Option<Conn>> = std::iter::repeat_with(|| None).take(total).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, _, Ok(conn))) => {
                if let Some(slot) = conns.get_mut(i) {
                    *slot = Some(conn);
                }
            }
            Ok((_, who, Err(source))) => {
                set.abort_all();
                return Err(BenchError::Client { who, source });
            }
            Err(e) => {
                set.abort_all();
                return Err(BenchError::Failed(format!("a setup task failed: {e}")));
            }
        }
    }
    let conns: Vec<Conn> = conns.into_iter().flatten().collect();
    if conns.len() != total {
        return Err(BenchError::Failed(format!(
            "only {} of {total} clients were set up",
            conns.len()
        )));
    }
    Ok(conns)
}
