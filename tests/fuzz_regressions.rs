//! Regression tests for inputs found by the fuzz targets under `fuzz/` (see fuzz/README.md).
//! Each test replays the minimized input byte for byte.

mod common;

use common::*;
use mqtt_server::codec::{Packet, ProtocolVersion};

/// fuzz target `connection`, input `fuzz/regressions/connection/v5-second-connect-bad-protocol-name`:
/// an MQTT 5 CONNECT, then a second CONNECT whose protocol name is "\0\0\0\0". The broker
/// answered with DISCONNECT 0x84 (Unsupported Protocol Version), a reason code DISCONNECT
/// may not carry ([MQTT-3.14.2-1]); a second CONNECT is a Protocol Error, 0x82
/// ([MQTT-3.1.0-2]).
#[tokio::test]
async fn second_connect_with_an_unsupported_protocol_is_a_protocol_error_0x82() {
    const INPUT: &[u8] = &[
        // CONNECT, MQTT 5, Clean Start, keep-alive 60, no properties, client id "c7".
        0x10, 0x0f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x02,
        b'c', b'7', //
        // CONNECT whose protocol name is four NUL bytes.
        0x10, 0x0f, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        0xff, 0xff, 0x37,
    ];
    let b = TestBroker::start().await;
    let mut c = RawClient::open(b.addr).await;
    c.version = ProtocolVersion::V5;
    c.send_bytes(INPUT).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, 0, "the first CONNECT is accepted"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // RawClient::recv panics on a packet the codec cannot decode, such as DISCONNECT 0x84.
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(
            d.reason, 0x82,
            "[MQTT-3.1.0-2] a second CONNECT is a Protocol Error, whatever its protocol level"
        ),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    c.expect_closed().await;
    // Same with a second CONNECT at an unsupported protocol level (0x06).
    let mut c = RawClient::open(b.addr).await;
    c.version = ProtocolVersion::V5;
    let mut input = INPUT.to_vec();
    if let Some(second) = input.get_mut(19..27) {
        second.copy_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02]);
    }
    c.send_bytes(&input).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(ack)) if ack.code == 0));
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, 0x82, "[MQTT-3.1.0-2]"),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    b.stop().await;
}
