//! A minimal MQTT 3.1.1 client over a tokio `TcpStream`, on the project's codec.
//!
//! One read buffer and one write buffer per connection. The hot loops (publisher, subscriber)
//! queue packets into the write buffer, write it with non-blocking `try_write`, and read with
//! `try_read` whenever the socket is ready, so a whole batch of packets costs one system call in
//! each direction. Setup and churn use the simpler awaiting helpers ([`Conn::flush`],
//! [`Conn::recv`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use mqtt_server::QoS;
use mqtt_server::codec::{
    self, Connect, DecodeError, EncodeError, Packet, ProtocolVersion, Publish, Subscribe,
    SubscriptionOptions,
};
use thiserror::Error;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::sessions::SessionLog;

/// Protocol level of every connection.
pub const VERSION: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Largest packet accepted from the broker: the MQTT maximum (2.2.3) plus its fixed header.
const MAX_PACKET: usize = 268_435_455 + 5;

/// Bytes reserved in the read buffer before a read, at first: small, so that thousands of
/// idle connections cost little.
const MIN_READ_CHUNK: usize = 512;

/// The most the read reservation grows to on a busy connection.
const MAX_READ_CHUNK: usize = 64 * 1024;

/// Why a connection failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// TCP connect failed.
    #[error("TCP connect to {addr} failed: {source}")]
    Connect {
        /// Broker address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Binding the client socket to a source address failed.
    #[error("cannot bind a client socket to {addr}: {source}")]
    Bind {
        /// The source address.
        addr: IpAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The broker refused the connection in CONNACK.
    #[error("the broker refused the connection: CONNACK return code {code} ({})", connack_reason(*.code))]
    Refused {
        /// The CONNACK return code.
        code: u8,
    },
    /// Something did not arrive in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The broker closed the connection.
    #[error("the broker closed the connection")]
    Closed,
    /// A socket error.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The broker sent bytes that are not a valid MQTT packet.
    #[error("the broker sent an invalid packet: {0}")]
    Decode(#[from] DecodeError),
    /// A packet could not be encoded (for example a payload too large for MQTT).
    #[error("cannot encode a packet: {0}")]
    Encode(#[from] EncodeError),
    /// The broker sent a packet that makes no sense here.
    #[error("unexpected {0} from the broker")]
    Unexpected(&'static str),
    /// SUBACK refused a subscription.
    #[error("the broker refused a subscription (SUBACK return code {0:#04x})")]
    SubscribeRefused(u8),
}

/// The meaning of a 3.1.1 CONNACK return code (3.2.2.3).
pub fn connack_reason(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

/// Where and how to connect: shared by every client of a run.
#[derive(Debug)]
pub struct Endpoint {
    /// Broker address.
    pub addr: SocketAddr,
    /// User name for CONNECT.
    pub username: Option<String>,
    /// Password for CONNECT.
    pub password: Option<String>,
    /// Keep-alive for CONNECT, seconds.
    pub keep_alive: u16,
    /// Time allowed for TCP connect + CONNACK.
    pub connect_timeout: Duration,
    /// Source addresses used round-robin (none: let the OS choose).
    pub bind_addrs: Vec<IpAddr>,
    /// With `--persistent-sessions`: clients connect with Clean Session 0, and their
    /// identifiers are logged here so that their sessions can be discarded at the end.
    pub sessions: Option<SessionLog>,
    next_bind: AtomicUsize,
}

impl Endpoint {
    /// An endpoint for `addr`.
    pub fn new(
        addr: SocketAddr,
        username: Option<String>,
        password: Option<String>,
        keep_alive: u16,
        connect_timeout: Duration,
        bind_addrs: Vec<IpAddr>,
        persistent_sessions: bool,
    ) -> Endpoint {
        Endpoint {
            addr,
            username,
            password,
            keep_alive,
            connect_timeout,
            bind_addrs,
            sessions: persistent_sessions.then(SessionLog::default),
            next_bind: AtomicUsize::new(0),
        }
    }

    /// Opens a TCP connection (from the next source address, if any), sends CONNECT and waits
    /// for a successful CONNACK, each connection attempt within the connect timeout.
    ///
    /// Clean Session 1, unless the endpoint uses persistent sessions: then Clean Session 0, and
    /// a session the broker already held for `client_id` (left by an earlier run with the same
    /// `--client-prefix`) is discarded first, so that the run starts from empty sessions.
    pub async fn connect(&self, client_id: &str) -> Result<Conn, ClientError> {
        let Some(log) = &self.sessions else {
            return Ok(self.connect_once(client_id, true).await?.0);
        };
        // logged before CONNECT goes out: a broker may create the session even if the CONNACK
        // never reaches us
        log.remember(client_id);
        let (conn, present) = self.connect_once(client_id, false).await?;
        if !present {
            return Ok(conn);
        }
        // [MQTT-3.2.2-2] Session Present 1: the broker resumed a stored session, whose
        // subscriptions and queued messages would skew this run's counts
        conn.disconnect().await;
        self.discard_session(client_id).await?;
        Ok(self.connect_once(client_id, false).await?.0)
    }

    /// Discards the broker's session of `client_id`, if it holds one: connects with Clean
    /// Session 1 ([MQTT-3.1.2-6] the server discards any previous session) and disconnects,
    /// which ends the new session too.
    pub async fn discard_session(&self, client_id: &str) -> Result<(), ClientError> {
        let (conn, _) = self.connect_once(client_id, true).await?;
        conn.disconnect().await;
        Ok(())
    }

    /// One connection attempt within the connect timeout, with the given Clean Session flag;
    /// returns the connection and CONNACK's Session Present flag.
    async fn connect_once(
        &self,
        client_id: &str,
        clean: bool,
    ) -> Result<(Conn, bool), ClientError> {
        match tokio::time::timeout(self.connect_timeout, self.connect_inner(client_id, clean)).await
        {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout("TCP connect and CONNACK")),
        }
    }

    async fn connect_inner(
        &self,
        client_id: &str,
        clean: bool,
    ) -> Result<(Conn, bool), ClientError> {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if !self.bind_addrs.is_empty() {
            let i = self.next_bind.fetch_add(1, Ordering::Relaxed) % self.bind_addrs.len();
            if let Some(&ip) = self.bind_addrs.get(i) {
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .map_err(|source| ClientError::Bind { addr: ip, source })?;
            }
        }
        let stream = socket
            .connect(self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr,
                source,
            })?;
        stream.set_nodelay(true)?;
        let keep_alive = Duration::from_secs(u64::from(self.keep_alive));
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            read_chunk: MIN_READ_CHUNK,
            last_write: Instant::now(),
            ping_every: (self.keep_alive > 0).then(|| keep_alive / 2),
        };
        let connect = Connect {
            protocol: VERSION,
            // [MQTT-3.1.2-6] Clean Session 1: the session lasts as long as the connection;
            // [MQTT-3.1.2-4] Clean Session 0: the broker keeps it after the disconnection
            clean_start: clean,
            keep_alive: self.keep_alive,
            client_id: ByteString::from(client_id),
            will: None,
            username: self.username.as_deref().map(ByteString::from),
            password: self
                .password
                .as_ref()
                .map(|p| Bytes::copy_from_slice(p.as_bytes())),
            properties: None,
        };
        conn.queue(&Packet::Connect(Box::new(connect)))?;
        conn.flush().await?;
        // [MQTT-3.2.0-1] the first packet from the server is CONNACK
        match conn.recv().await? {
            Packet::ConnAck(ack) if ack.code == 0 => Ok((conn, ack.session_present)),
            Packet::ConnAck(ack) => Err(ClientError::Refused { code: ack.code }),
            other => Err(ClientError::Unexpected(other.name())),
        }
    }
}

/// One connected client.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    /// Bytes to reserve before the next read: doubles while reads fill it.
    read_chunk: usize,
    wbuf: BytesMut,
    last_write: Instant,
    ping_every: Option<Duration>,
}

impl Conn {
    /// Appends `packet` to the write buffer.
    pub fn queue(&mut self, packet: &Packet) -> Result<(), ClientError> {
        codec::encode(packet, VERSION, &mut self.wbuf)?;
        Ok(())
    }

    /// Appends a PUBLISH whose payload ends the packet, and lets `fill` write into the copy of
    /// the payload in the write buffer (to stamp it without allocating a payload per message).
    pub fn queue_publish(
        &mut self,
        publish: &Packet,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), ClientError> {
        codec::encode(publish, VERSION, &mut self.wbuf)?;
        let end = self.wbuf.len();
        if let Some(payload) = self.wbuf.get_mut(end.saturating_sub(payload_len)..end) {
            fill(payload);
        }
        Ok(())
    }

    /// Bytes queued but not yet written.
    pub fn pending(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes as much of the write buffer as the socket takes without waiting.
    pub fn try_flush(&mut self) -> Result<(), ClientError> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                    self.last_write = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        if self.wbuf.is_empty() {
            // keeps the allocation for the next batch
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Reads what the socket has without waiting: `Ok(true)` if bytes arrived, `Ok(false)` if
    /// none were ready.
    pub fn try_read(&mut self) -> Result<bool, ClientError> {
        self.rbuf.reserve(self.read_chunk);
        let spare = self.rbuf.capacity() - self.rbuf.len();
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Err(ClientError::Closed),
            Ok(n) => {
                if n >= spare {
                    self.read_chunk = (self.read_chunk * 2).min(MAX_READ_CHUNK);
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The next whole packet in the read buffer, if any.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, ClientError> {
        Ok(codec::decode(&mut self.rbuf, VERSION, MAX_PACKET)?)
    }

    /// Waits until the socket is readable, or writable too when `write` is set.
    pub async fn ready(&self, write: bool) -> Result<(), ClientError> {
        let interest = if write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.stream.ready(interest).await?;
        Ok(())
    }

    /// When the next PINGREQ is due (half the keep-alive after the last write), if ever.
    pub fn ping_at(&self) -> Option<Instant> {
        self.ping_every.map(|every| self.last_write + every)
    }

    /// Queues a PINGREQ if one is due at `now` ([MQTT-3.1.2-23]: the client must send a control
    /// packet within each keep-alive period).
    pub fn ping_if_due(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.ping_at().is_some_and(|at| now >= at) && self.wbuf.is_empty() {
            self.queue(&Packet::PingReq)?;
            // counts as written once queued, so a blocked socket does not queue one per wake-up
            self.last_write = now;
        }
        Ok(())
    }

    /// Writes the whole write buffer, waiting as needed.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            self.last_write = Instant::now();
        }
        Ok(())
    }

    /// Waits for the next packet.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(p) = self.next_packet()? {
                return Ok(p);
            }
            self.ready(false).await?;
            self.try_read()?;
        }
    }

    /// Subscribes to `filters` (in SUBSCRIBE packets of at most 100 filters) with packet ids
    /// from `first_id`, and waits for every SUBACK, failing on a refused filter ([MQTT-3.9.3]
    /// return code 0x80). PUBLISH packets arriving meanwhile are acknowledged and dropped.
    pub async fn subscribe_all(
        &mut self,
        filters: &[ByteString],
        qos: QoS,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let mut id: u16 = 1;
        for chunk in filters.chunks(100) {
            let packet_id = NonZeroU16::new(id).unwrap_or(NonZeroU16::MIN);
            id = id.checked_add(1).unwrap_or(1);
            let subscribe = Subscribe {
                packet_id,
                filters: chunk
                    .iter()
                    .map(|f| {
                        (
                            f.clone(),
                            SubscriptionOptions {
                                qos,
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
                properties: None,
            };
            self.queue(&Packet::Subscribe(subscribe))?;
            self.flush().await?;
            let codes = self.await_reply(packet_id, true, timeout).await?;
            if let Some(&bad) = codes.iter().find(|&&c| c >= 0x80) {
                return Err(ClientError::SubscribeRefused(bad));
            }
        }
        Ok(())
    }

    /// Waits for the SUBACK (`suback`) or UNSUBACK with `packet_id`, returning SUBACK's codes.
    /// PUBLISH packets that arrive first are acknowledged and dropped.
    pub async fn await_reply(
        &mut self,
        packet_id: NonZeroU16,
        suback: bool,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        self.await_reply_with(packet_id, suback, timeout, |_| {})
            .await
    }

    /// [`Conn::await_reply`], calling `on_publish` for each PUBLISH received meanwhile.
    pub async fn await_reply_with(
        &mut self,
        packet_id: NonZeroU16,
        suback: bool,
        timeout: Duration,
        mut on_publish: impl FnMut(&Publish),
    ) -> Result<Vec<u8>, ClientError> {
        let what = if suback { "SUBACK" } else { "UNSUBACK" };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let packet = match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(p) => p?,
                Err(_) => return Err(ClientError::Timeout(what)),
            };
            match packet {
                Packet::SubAck(s) if suback && s.packet_id == packet_id => return Ok(s.codes),
                Packet::UnsubAck(u) if !suback && u.packet_id == packet_id => return Ok(u.codes),
                Packet::Publish(p) => {
                    on_publish(&p);
                    self.ack_incoming(&p)?;
                    self.flush().await?;
                }
                Packet::PubRel(ack) => {
                    // [MQTT-4.3.3-2] answer PUBREL with PUBCOMP
                    self.queue(&Packet::PubComp(codec::Ack::new(ack.packet_id)))?;
                    self.flush().await?;
                }
                Packet::PingResp => {}
                other => return Err(ClientError::Unexpected(other.name())),
            }
        }
    }

    /// Queues the acknowledgement an incoming PUBLISH needs: PUBACK for QoS 1
    /// ([MQTT-4.3.2-2]), PUBREC for QoS 2 ([MQTT-4.3.3-2]), nothing for QoS 0.
    pub fn ack_incoming(&mut self, publish: &Publish) -> Result<(), ClientError> {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.queue(&Packet::PubAck(codec::Ack::new(id))),
            (QoS::ExactlyOnce, Some(id)) => self.queue(&Packet::PubRec(codec::Ack::new(id))),
            _ => Ok(()),
        }
    }

    /// Holds the connection idle until `stop`: answers nothing, sends PINGREQ when due, and
    /// returns an error if the broker closes it or sends something unexpected.
    pub async fn hold_idle(&mut self, stop: &CancellationToken) -> Result<(), ClientError> {
        loop {
            let ping_at = self.ping_at().map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = self.ready(!self.wbuf.is_empty()) => r?,
                _ = sleep_until_opt(ping_at) => {}
            }
            self.ping_if_due(Instant::now())?;
            self.try_flush()?;
            if self.try_read()? {
                while let Some(packet) = self.next_packet()? {
                    match packet {
                        Packet::PingResp => {}
                        other => return Err(ClientError::Unexpected(other.name())),
                    }
                }
            }
        }
    }

    /// Sends DISCONNECT and closes the socket, ignoring errors (the run is over).
    pub async fn disconnect(mut self) {
        if self.queue(&Packet::Disconnect(Default::default())).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.flush()).await;
        }
        let _ = self.stream.shutdown().await;
    }
}

/// Sleeps until `at`, or forever when `None`.
pub async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connack_reasons_cover_the_311_codes() {
        assert_eq!(connack_reason(5), "not authorized");
        assert_eq!(connack_reason(4), "bad user name or password");
        assert_eq!(connack_reason(99), "unknown return code");
        let e = ClientError::Refused { code: 5 };
        assert_eq!(
            e.to_string(),
            "the broker refused the connection: CONNACK return code 5 (not authorized)"
        );
    }
}
