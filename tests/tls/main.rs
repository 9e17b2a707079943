//! TLS transport: handshakes (TLS 1.2 and 1.3, mutual TLS), the readiness-driven data path under
//! backpressure, client identities, certificate loading errors and reloading.

mod load;
mod pki;

use std::future::poll_fn;
use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mqtt_server::transport::Transport;
use mqtt_server::transport::tls::{
    PeerIdentity, ReloadableTls, TlsTransport, TlsVersion, accept, load_server_config,
};
use pki::{Ca, TLS12, TLS13, TempDir, client_config, connect, dns, email, ip, settings, uri};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A listener whose accepted sockets inherit small buffers, so that big writes block.
fn listener() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(32 * 1024).unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(16).unwrap()
}

/// A client socket with small buffers.
async fn client_socket(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

type ServerSide = io::Result<(TlsTransport, Option<PeerIdentity>)>;
type ClientSide = io::Result<tokio_rustls::client::TlsStream<TcpStream>>;

/// Both sides of one handshake on `listener`.
async fn handshake_on(
    listener: &TcpListener,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (ServerSide, ClientSide) {
    let addr = listener.local_addr().unwrap();
    let server_side = async {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, server, HANDSHAKE_TIMEOUT).await
    };
    let client_side = async { connect(client_socket(addr).await, client).await };
    tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(server_side, client_side)
    })
    .await
    .unwrap()
}

async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (ServerSide, ClientSide) {
    handshake_on(&listener(), server, client).await
}

/// MQTT-sized frames (a PUBLISH-like fixed header and payload) of sizes from 2 bytes to 70 kB.
fn frames(count: usize) -> Vec<u8> {
    const SIZES: [usize; 11] = [0, 2, 5, 64, 127, 128, 1000, 4093, 16_384, 16_385, 70_000];
    let mut out = Vec::new();
    for i in 0..count {
        let len = SIZES[i % SIZES.len()];
        out.push(0x30);
        let mut rest = len;
        loop {
            let byte = (rest % 128) as u8;
            rest /= 128;
            out.push(if rest > 0 { byte | 0x80 } else { byte });
            if rest == 0 {
                break;
            }
        }
        out.extend((0..len).map(|j| (i * 31 + j * 7) as u8));
    }
    out
}

#[derive(Debug, Default)]
struct EchoStats {
    bytes: usize,
    reads: usize,
    /// Times the socket was full: write readiness pending with bytes to write.
    writes_blocked: usize,
    clean_close: bool,
}

/// Echoes what it reads through the `Transport` methods, from one loop selecting over read and
/// write readiness as the connection driver does: reads into buffers with only `room` bytes
/// free (so rustls keeps the rest of each record), stops reading while `high_water` bytes wait
/// to be written, and closes once the client has closed and everything is written.
async fn echo(t: &mut TlsTransport, room: usize, high_water: usize) -> io::Result<EchoStats> {
    let mut stats = EchoStats::default();
    let mut pending = BytesMut::new();
    let mut eof = false;
    loop {
        let writing = !pending.is_empty();
        if eof && !writing {
            break;
        }
        let reading = !eof && pending.len() < high_water;
        tokio::select! {
            r = poll_fn(|cx| {
                let ready = t.poll_write_ready(cx);
                if ready.is_pending() {
                    stats.writes_blocked += 1;
                }
                ready
            }), if writing => {
                r?;
                match t.try_write(&pending) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(n) => pending.advance(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            r = poll_fn(|cx| t.poll_read_ready(cx)), if reading => {
                r?;
                let mut buf = BytesMut::with_capacity(room);
                let room = buf.capacity();
                match t.try_read_buf(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        stats.clean_close = true;
                    }
                    Ok(n) => {
                        assert!(n <= room, "read {n} bytes into {room} free");
                        assert_eq!(n, buf.len());
                        stats.reads += 1;
                        stats.bytes += n;
                        pending.extend_from_slice(&buf);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    t.shutdown().await?;
    Ok(stats)
}

/// Sends `data` and reads the echo at the same time, starting to read late so that the server's
/// writes block.
async fn echo_client(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    data: &[u8],
) -> io::Result<Vec<u8>> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = async {
        wr.write_all(data).await?;
        // close_notify, then FIN.
        wr.shutdown().await
    };
    let reader = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut out = Vec::new();
        rd.read_to_end(&mut out).await?;
        Ok::<_, io::Error>(out)
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    r
}

async fn echo_roundtrip(
    versions: &[&'static rustls::SupportedProtocolVersion],
    expect: ProtocolVersion,
) {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let config = load_server_config(&settings(&dir, &ca.server("broker"), None)).unwrap();
    let (server, client) = handshake(config, client_config(&ca, versions, None)).await;
    let (mut server, identity) = server.unwrap();
    let client = client.unwrap();
    assert_eq!(identity, None, "no client certificate was presented");
    assert_eq!(client.get_ref().1.protocol_version(), Some(expect));

    let data = frames(330); // about 3.5 MB
    let run = async {
        tokio::join!(
            echo(&mut server, 1000, 256 * 1024),
            echo_client(client, &data)
        )
    };
    let (stats, echoed) = tokio::time::timeout(TEST_TIMEOUT, run).await.unwrap();
    let stats = stats.unwrap();
    let echoed = echoed.unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echo differs from what was sent");
    assert_eq!(stats.bytes, data.len());
    assert!(
        stats.clean_close,
        "the client's close_notify ends the stream with Ok(0)"
    );
    assert!(stats.reads >= data.len() / 1000, "partial reads: {stats:?}");
    assert!(stats.writes_blocked > 0, "writes never blocked: {stats:?}");
}

#[tokio::test]
async fn echo_through_readiness_loop_tls13() {
    echo_roundtrip(TLS13, ProtocolVersion::TLSv1_3).await;
}

#[tokio::test]
async fn echo_through_readiness_loop_tls12() {
    echo_roundtrip(TLS12, ProtocolVersion::TLSv1_2).await;
}

#[tokio::test]
async fn a_full_socket_stops_accepting_plaintext_until_it_drains() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let config = load_server_config(&settings(&dir, &ca.server("broker"), None)).unwrap();
    let (server, client) = handshake(config, client_config(&ca, TLS13, None)).await;
    let (server, _) = server.unwrap();
    let mut client = client.unwrap();

    // The client does not read: writes are accepted until the socket is full, then refused.
    let chunk = vec![0x5a_u8; 100_000];
    let mut accepted = 0usize;
    loop {
        match server.try_write(&chunk) {
            Ok(n) => {
                assert!(n > 0 && n <= 16 * 1024, "one record's worth at most: {n}");
                accepted += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted < 64 << 20, "the socket never filled");
    }
    // Nothing more is taken while the TLS bytes already made wait, and readiness says so.
    assert_eq!(
        server.try_write(&chunk).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    let ready = poll_fn(|cx| Poll::Ready(server.poll_write_ready(cx))).await;
    assert!(
        ready.is_pending(),
        "write readiness while the socket is full"
    );

    // Once the client reads, writing resumes and everything arrives.
    let total = accepted + 300_000;
    let reader = async {
        let mut got = vec![0u8; total];
        client.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&b| b == 0x5a));
    };
    let writer = async {
        let mut sent = accepted;
        while sent < total {
            poll_fn(|cx| server.poll_write_ready(cx)).await.unwrap();
            let end = chunk.len().min(total - sent);
            match server.try_write(&chunk[..end]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        // Flush what the last write left waiting.
        let mut server = server;
        server.flush().await.unwrap();
        server
    };
    tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(reader, writer) })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_tail_of_a_write_reaches_a_connection_gone_idle() {
    // The driver stops polling write readiness once `try_write` has taken all its bytes; the
    // TLS bytes the socket had no room for must still go out while it only waits to read.
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let config = load_server_config(&settings(&dir, &ca.server("broker"), None)).unwrap();
    let (server, client) = handshake(config, client_config(&ca, TLS13, None)).await;
    let (server, _) = server.unwrap();
    let mut client = client.unwrap();

    // Everything taken until the socket is full; the last chunk taken is partly unwritten.
    let chunk: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = Vec::new();
    loop {
        match server.try_write(&chunk) {
            Ok(n) => sent.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    // Idle: only read readiness is polled, until the client closes.
    let idle = async {
        loop {
            poll_fn(|cx| server.poll_read_ready(cx)).await.unwrap();
            let mut buf = BytesMut::with_capacity(64);
            match server.try_read_buf(&mut buf) {
                Ok(0) => break,
                Ok(n) => panic!("unexpected {n} bytes"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    let read = async {
        let mut got = vec![0u8; sent.len()];
        client.read_exact(&mut got).await.unwrap();
        assert!(got == sent, "received bytes differ");
        client.shutdown().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(idle, read) })
        .await
        .expect("the last bytes never arrived");
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls12_client() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), None);
    s.min_version = TlsVersion::V1_3;
    let config = load_server_config(&s).unwrap();
    let (server, client) = handshake(config.clone(), client_config(&ca, TLS12, None)).await;
    assert!(server.is_err());
    assert!(client.is_err());
    // A TLS 1.3 client is served.
    let (server, client) = handshake(config, client_config(&ca, TLS13, None)).await;
    server.unwrap();
    client.unwrap();
}

/// Writes `msg` from the client and reads it on the server through `AsyncRead`, then the other
/// way through `AsyncWrite` (the handshake code path of the broker).
async fn exchange(
    server: &mut TlsTransport,
    client: &mut tokio_rustls::client::TlsStream<TcpStream>,
    msg: &[u8],
) {
    client.write_all(msg).await.unwrap();
    client.flush().await.unwrap();
    let mut got = vec![0u8; msg.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, msg);
    server.write_all(msg).await.unwrap();
    server.flush().await.unwrap();
    let mut back = vec![0u8; msg.len()];
    client.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn mutual_tls_accepts_a_ca_signed_client_and_reports_its_identity() {
    let ca = Ca::new("fleet CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), Some(&ca));
    s.require_certificate = true;
    s.use_identity_as_username = true;
    let config = load_server_config(&s).unwrap();
    let client_leaf = ca.client(
        "sensor-17",
        vec![
            dns("sensor-17.example.com"),
            ip("10.1.2.3"),
            ip("fd00::17"),
            email("ops@example.com"),
            uri("spiffe://example.com/sensor/17"),
        ],
    );
    for versions in [TLS12, TLS13] {
        let (server, client) = handshake(
            config.clone(),
            client_config(&ca, versions, Some(&client_leaf)),
        )
        .await;
        let (mut server, identity) = server.unwrap();
        let mut client = client.unwrap();
        assert_eq!(
            identity,
            Some(PeerIdentity {
                common_name: Some("sensor-17".to_owned()),
                subject_alt_names: vec![
                    "sensor-17.example.com".to_owned(),
                    "10.1.2.3".to_owned(),
                    "fd00::17".to_owned(),
                    "ops@example.com".to_owned(),
                    "spiffe://example.com/sensor/17".to_owned(),
                ],
            })
        );
        exchange(
            &mut server,
            &mut client,
            b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
        )
        .await;
    }
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_certificate_when_required() {
    let ca = Ca::new("fleet CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), Some(&ca));
    s.require_certificate = true;
    let config = load_server_config(&s).unwrap();
    for versions in [TLS12, TLS13] {
        let (server, client) = handshake(config.clone(), client_config(&ca, versions, None)).await;
        let err = server.expect_err("handshake refused");
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        // A TLS 1.3 client completes its side before the server checks its certificate: it
        // learns of the refusal (the server's alert) when it reads.
        if let Ok(mut client) = client {
            let mut buf = [0u8; 16];
            assert!(!matches!(client.read(&mut buf).await, Ok(n) if n > 0));
        }
    }
}

#[tokio::test]
async fn mutual_tls_refuses_a_certificate_of_another_ca() {
    let ca = Ca::new("fleet CA");
    let rogue = Ca::new("rogue CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), Some(&ca));
    s.require_certificate = true;
    let config = load_server_config(&s).unwrap();
    let leaf = rogue.client("sensor-17", vec![]);
    let (server, _client) = handshake(config, client_config(&ca, TLS13, Some(&leaf))).await;
    assert!(server.is_err());
}

#[tokio::test]
async fn optional_client_certificate_is_verified_only_when_presented() {
    let ca = Ca::new("fleet CA");
    let dir = TempDir::new();
    let config = load_server_config(&settings(&dir, &ca.server("broker"), Some(&ca))).unwrap();
    let (server, client) = handshake(config.clone(), client_config(&ca, TLS13, None)).await;
    let (_, identity) = server.unwrap();
    client.unwrap();
    assert_eq!(identity, None);
    let leaf = ca.client("meter-3", vec![]);
    let (server, client) = handshake(config, client_config(&ca, TLS13, Some(&leaf))).await;
    let (_, identity) = server.unwrap();
    client.unwrap();
    assert_eq!(
        identity,
        Some(PeerIdentity {
            common_name: Some("meter-3".to_owned()),
            subject_alt_names: vec![],
        })
    );
}

#[tokio::test]
async fn handshake_times_out_on_a_silent_client() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let config = load_server_config(&settings(&dir, &ca.server("broker"), None)).unwrap();
    let listener = listener();
    let _silent = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let started = std::time::Instant::now();
    let err = accept(tcp, config, Duration::from_millis(200))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn end_of_stream_clean_and_unclean() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let config = load_server_config(&settings(&dir, &ca.server("broker"), None)).unwrap();

    // close_notify: Ok(0), after the data sent before it.
    let (server, client) = handshake(config.clone(), client_config(&ca, TLS13, None)).await;
    let (server, _) = server.unwrap();
    let mut client = client.unwrap();
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = BytesMut::new();
    let end = loop {
        poll_fn(|cx| server.poll_read_ready(cx)).await.unwrap();
        got.reserve(64);
        match server.try_read_buf(&mut got) {
            Ok(0) => break Ok(0),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => break Err(e),
        }
    };
    assert_eq!(&got[..], b"last words");
    assert_eq!(end.unwrap(), 0);

    // TCP closed without close_notify: an error, not a clean end.
    let (server, client) = handshake(config, client_config(&ca, TLS13, None)).await;
    let (mut server, _) = server.unwrap();
    let (mut tcp, _) = client.unwrap().into_inner();
    // FIN without close_notify (dropping the socket could reset it instead: the session
    // tickets the server sent are unread).
    tcp.shutdown().await.unwrap();
    let mut buf = [0u8; 16];
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn data_sent_with_the_handshake_finished_is_read_at_once() {
    // A client that sends its first packet in the same segment as its TLS 1.3 Finished: the
    // server decrypts the packet during the handshake and must hand it out afterwards.
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let config = load_server_config(&settings(&dir, &ca.server("broker"), None)).unwrap();
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let client_config = client_config(&ca, TLS13, None);
    let connect_packet = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00".to_vec();
    let sent = connect_packet.clone();
    let client = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(client_config, name).unwrap();
        while conn.is_handshaking() {
            while conn.wants_write() {
                conn.write_tls(&mut tcp).unwrap();
            }
            conn.read_tls(&mut tcp).unwrap();
            conn.process_new_packets().unwrap();
        }
        // Finished and the CONNECT packet, written together.
        conn.writer().write_all(&sent).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        tcp.write_all(&out).unwrap();
        // Read the server's answer.
        let mut answer = Vec::new();
        while answer.len() < 4 {
            if conn.read_tls(&mut tcp).unwrap() == 0 {
                break;
            }
            conn.process_new_packets().unwrap();
            let mut buf = [0u8; 64];
            match conn.reader().read(&mut buf) {
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        answer
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let (mut server, _) = accept(tcp, config, HANDSHAKE_TIMEOUT).await.unwrap();
    // Ready at once, without waiting for the socket.
    let ready = poll_fn(|cx| Poll::Ready(server.poll_read_ready(cx))).await;
    assert!(matches!(ready, Poll::Ready(Ok(()))));
    let mut buf = BytesMut::with_capacity(256);
    assert_eq!(server.try_read_buf(&mut buf).unwrap(), connect_packet.len());
    assert_eq!(&buf[..], &connect_packet[..]);
    server.write_all(b"\x20\x02\x00\x00").await.unwrap();
    let answer = tokio::time::timeout(TEST_TIMEOUT, client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, b"\x20\x02\x00\x00");
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_handshakes_only() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let first = ca.server("broker A");
    let tls = ReloadableTls::new(settings(&dir, &first, None)).unwrap();
    let listener = listener();
    let client = client_config(&ca, TLS13, None);

    let (server, c) = handshake_on(&listener, tls.current(), client.clone()).await;
    let (mut old_server, _) = server.unwrap();
    let mut old_client = c.unwrap();
    assert_eq!(
        old_client.get_ref().1.peer_certificates().unwrap()[0],
        first.cert_der
    );

    // Renewed certificate and key on disk, then a reload.
    let second = ca.server("broker B");
    dir.write("cert.pem", &second.cert_pem);
    dir.write("key.pem", &second.key_pem);
    let before = tls.current();
    tls.reload().unwrap();
    assert!(!Arc::ptr_eq(&before, &tls.current()));

    let (server, c) = handshake_on(&listener, tls.current(), client.clone()).await;
    let (mut new_server, _) = server.unwrap();
    let mut new_client = c.unwrap();
    assert_eq!(
        new_client.get_ref().1.peer_certificates().unwrap()[0],
        second.cert_der
    );
    // Both connections work.
    exchange(&mut old_server, &mut old_client, b"\xc0\x00").await;
    exchange(&mut new_server, &mut new_client, b"\xc0\x00").await;

    // A failed reload (key of another certificate) keeps the configuration in use.
    dir.write("key.pem", &first.key_pem);
    let before = tls.current();
    let err = tls.reload().unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(Arc::ptr_eq(&before, &tls.current()));
    let (server, c) = handshake_on(&listener, tls.current(), client).await;
    server.unwrap();
    assert_eq!(
        c.unwrap().get_ref().1.peer_certificates().unwrap()[0],
        second.cert_der
    );
    exchange(&mut old_server, &mut old_client, b"\xc0\x00").await;
}
