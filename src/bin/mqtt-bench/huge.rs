//! huge-packet: connections whose fixed header announces a remaining length up to the protocol
//! maximum (268,435,455 bytes, MQTT 2.2.3) and then send the body slowly: even attackers as
//! their first packet (a CONNECT), odd ones after a proper CONNECT (a PUBLISH). A broker with a
//! maximum packet size must close them at the header, without allocating the announced size;
//! the broker's RSS peak is compared with what was announced, and a bystander is measured.
//! Each attacker attacks again, --interval-ms after the broker closed its previous attempt,
//! until --duration ends.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use mqtt_server::codec::{self, Connect, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::cli::HugePacketArgs;
use crate::client::VERSION;
use crate::ctx::{BenchError, Ctx};
use crate::overload::{self, Opening, finish};
use crate::probe::pause;
use crate::report::Report;

/// The least time an attempt is given to be closed by the broker.
const GRACE: Duration = Duration::from_secs(1);

/// What one attacker saw.
struct Attack {
    /// When the broker closed the connection, from the first header byte.
    closed_after: Option<Duration>,
    /// Body bytes written.
    body_sent: u64,
    /// A failure that is not the broker closing the connection (setup).
    error: Option<String>,
}

/// The fixed header of a packet of `first_byte` announcing `remaining` bytes (MQTT 2.2.3).
pub fn fixed_header(first_byte: u8, remaining: u32) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mut n = remaining;
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 || out.len() == 5 {
            break;
        }
    }
    out
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &HugePacketArgs) -> Result<Report, BenchError> {
    let attackers = args.attackers as usize;
    ctx.check_fds(attackers + 4)?;
    let Opening {
        sampler,
        mut o,
        mut by,
        before,
    } = overload::open(ctx, &args.probe).await?;

    let until = Instant::now() + ctx.duration();
    let mut set = JoinSet::new();
    for i in 0..attackers {
        let addr = ctx.endpoint.addr;
        let id = ctx.client_id("huge", i);
        let (announced, chunk) = (args.announced, args.chunk as usize);
        let interval = Duration::from_millis(args.interval_ms);
        let timeout = ctx.connect_timeout();
        set.spawn(async move {
            // attack again as soon as the broker closed the previous attempt, until the end
            let after_connect = i % 2 == 1;
            let mut attempts = Vec::new();
            loop {
                // each attempt gets at least GRACE to be closed, even near the end
                let deadline = until.max(Instant::now() + GRACE);
                let a = attack(
                    addr,
                    &id,
                    after_connect,
                    announced,
                    chunk,
                    interval,
                    deadline,
                    timeout,
                )
                .await;
                let again = a.closed_after.is_some() && a.error.is_none();
                attempts.push(a);
                if !again || Instant::now() + GRACE >= until {
                    break;
                }
                tokio::time::sleep(interval).await;
            }
            attempts
        });
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(a) => results.extend(a),
            Err(e) => errors.push(format!("attacker task: {e}")),
        }
    }
    let during = by.phase("during");
    o.sample("peak_during", sampler.take_peak());
    pause(args.probe.phase).await;
    let after = by.phase("after");
    o.sample("after", sampler.now());
    let (stream_errors, stream_msgs) = by.stop().await;
    errors.extend(stream_msgs);

    let attempts = results.len();
    let closed: Vec<Duration> = results.iter().filter_map(|a| a.closed_after).collect();
    let body: u64 = results.iter().map(|a| a.body_sent).sum();
    errors.extend(results.iter().filter_map(|a| a.error.clone()));
    let announced_total = u64::from(args.announced) * attempts as u64;
    o.figure("attackers", attackers as f64);
    o.figure("attempts", attempts as f64);
    o.figure("announced_bytes_each", f64::from(args.announced));
    o.figure("announced_bytes_total", announced_total as f64);
    o.figure("body_bytes_sent_total", body as f64);
    o.figure("closed_by_broker", closed.len() as f64);
    if let Some(max) = closed.iter().max() {
        o.figure(
            "close_after_max_ms",
            (max.as_secs_f64() * 1e6).round() / 1e3,
        );
    }
    o.check(
        "every attempt closed by the broker",
        attempts > 0 && closed.len() == attempts,
        format!(
            "{} of {attempts} attempts closed within {} s",
            closed.len(),
            ctx.common.duration
        ),
    );
    if let (Some(b), Some(p)) = (
        o.broker.get("with_bystander").and_then(|s| s.rss_kb),
        o.broker.get("peak_during").and_then(|s| s.rss_kb),
    ) {
        let growth = p.saturating_sub(b);
        o.figure("rss_peak_growth_kb", growth as f64);
        // a broker that allocated the announced sizes would grow by them as the body arrives;
        // the bound is what was actually sent plus the slack, far below what was announced
        let bound = body / 1024 + args.probe.rss_slack_kb();
        o.check(
            "RSS growth bounded by the bytes sent, not the sizes announced",
            growth <= bound,
            format!(
                "+{growth} KiB at peak (bound {bound} KiB; {} KiB announced)",
                announced_total / 1024
            ),
        );
    }
    o.check_bystander(&before, &during, args.probe.min_bystander_pct);
    o.phases = vec![before, during, after];
    finish(ctx, o, errors, stream_errors)
}

/// One attacker: optionally a proper CONNECT first, then the huge header and the body in
/// `chunk`-byte pieces every `interval` until the broker closes the connection or `until`.
#[allow(clippy::too_many_arguments)]
async fn attack(
    addr: std::net::SocketAddr,
    id: &str,
    after_connect: bool,
    announced: u32,
    chunk: usize,
    interval: Duration,
    until: Instant,
    timeout: Duration,
) -> Attack {
    let mut a = Attack {
        closed_after: None,
        body_sent: 0,
        error: None,
    };
    let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            a.error = Some(format!("{id}: TCP connect: {e}"));
            return a;
        }
        Err(_) => {
            a.error = Some(format!("{id}: TCP connect timed out"));
            return a;
        }
    };
    let first_byte = if after_connect {
        if let Err(e) = handshake(&mut stream, id, timeout).await {
            a.error = Some(format!("{id}: {e}"));
            return a;
        }
        0x30 // PUBLISH, QoS 0
    } else {
        0x10 // CONNECT
    };
    let started = Instant::now();
    let mut pending = fixed_header(first_byte, announced);
    // a plausible body start: a PUBLISH topic "a", or a CONNECT's protocol name "MQTT"
    pending.extend_from_slice(if after_connect {
        &[0, 1, b'a']
    } else {
        &[0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60]
    });
    let zeros = vec![0u8; chunk];
    let mut buf = [0u8; 256];
    while Instant::now() < until {
        if stream.write_all(&pending).await.is_err() {
            a.closed_after = Some(started.elapsed());
            return a;
        }
        a.body_sent += pending.len() as u64;
        pending.clear();
        pending.extend_from_slice(&zeros);
        let wait = interval.min(until.saturating_duration_since(Instant::now()));
        tokio::select! {
            r = stream.read(&mut buf) => {
                match r {
                    // bytes from the broker (a DISCONNECT for MQTT 5 only): keep reading
                    Ok(n) if n > 0 => continue,
                    _ => {
                        a.closed_after = Some(started.elapsed());
                        return a;
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    a
}

/// CONNECT (Clean Session 1) and a successful CONNACK.
async fn handshake(stream: &mut TcpStream, id: &str, timeout: Duration) -> Result<(), String> {
    let mut out = BytesMut::new();
    let connect = Connect {
        protocol: VERSION,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteString::from(id),
        will: None,
        username: None,
        password: None,
        properties: None,
    };
    codec::encode(&Packet::Connect(Box::new(connect)), VERSION, &mut out)
        .map_err(|e| e.to_string())?;
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut ack = [0u8; 4];
    match tokio::time::timeout(timeout, stream.read_exact(&mut ack)).await {
        Ok(Ok(_)) if ack == [0x20, 2, 0, 0] || ack == [0x20, 2, 1, 0] => Ok(()),
        Ok(Ok(_)) => Err(format!("unexpected CONNACK {ack:02x?}")),
        Ok(Err(e)) => Err(format!("reading CONNACK: {e}")),
        Err(_) => Err("no CONNACK in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_header_encodes_the_remaining_length() {
        // MQTT 2.2.3 examples: 127 = 0x7F, 128 = 0x80 0x01, 268 435 455 = 0xFF 0xFF 0xFF 0x7F
        assert_eq!(fixed_header(0x30, 127), vec![0x30, 0x7F]);
        assert_eq!(fixed_header(0x30, 128), vec![0x30, 0x80, 0x01]);
        assert_eq!(
            fixed_header(0x10, 268_435_455),
            vec![0x10, 0xFF, 0xFF, 0xFF, 0x7F]
        );
    }
}
