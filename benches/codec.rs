//! Criterion micro-benchmarks of the wire codec: encode and decode of PUBLISH (QoS 0 and 1,
//! 64 B and 4 KiB payloads, MQTT 3.1.1 and 5.0) and CONNECT (3.1.1 with will, user name and
//! password; 5.0 with properties).
//!
//! Encode appends to a reused `BytesMut` that is cleared each iteration, as a connection's write
//! buffer is. Decode starts each iteration from a fresh `BytesMut` holding exactly one packet
//! (built outside the timed section with `iter_batched`), so no iteration sees a buffer a previous
//! one consumed; the decoded packet is dropped outside the timed section.
//!
//! Run with `cargo bench --bench codec`.

use std::hint::black_box;
use std::num::NonZeroU16;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use mqtt_server::codec::{
    Connect, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS, decode, encode,
    encoded_len,
};

/// The largest packet MQTT can express (fixed header included); the decoder's size limit.
const MAX_PACKET_SIZE: usize = 268_435_460;

/// A five-level topic of the kind the topic-match bench uses.
const TOPIC: &str = "s0042/b07/f03/d09/temperature";

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

fn publish(qos: QoS, payload_len: usize, v5: bool) -> Packet {
    let properties = v5.then(|| {
        Box::new(Properties {
            message_expiry_interval: Some(3600),
            content_type: Some(ByteString::from_static("application/json")),
            ..Properties::default()
        })
    });
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from_static(TOPIC),
        packet_id: (qos != QoS::AtMostOnce).then_some(NonZeroU16::MIN.saturating_add(4660)),
        payload: payload(payload_len),
        properties,
    })
}

fn connect_v311() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteString::from_static("sensor-gateway-0042-07"),
        will: Some(LastWill {
            topic: ByteString::from_static("s0042/b07/status/gateway"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
        }),
        username: Some(ByteString::from_static("gateway-0042")),
        password: Some(Bytes::from_static(b"correct horse battery staple")),
        properties: None,
    }))
}

fn connect_v5() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 60,
        client_id: ByteString::from_static("sensor-gateway-0042-07"),
        will: Some(LastWill {
            topic: ByteString::from_static("s0042/b07/status/gateway"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Some(Box::new(Properties {
                will_delay_interval: Some(30),
                content_type: Some(ByteString::from_static("text/plain")),
                ..Properties::default()
            })),
        }),
        username: Some(ByteString::from_static("gateway-0042")),
        password: Some(Bytes::from_static(b"correct horse battery staple")),
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(86_400),
            receive_maximum: Some(100),
            maximum_packet_size: Some(1 << 20),
            topic_alias_maximum: Some(16),
            user_properties: vec![(
                ByteString::from_static("site"),
                ByteString::from_static("s0042"),
            )],
            ..Properties::default()
        })),
    }))
}

/// Benchmarks encode and decode of `packet` at level `version` under the names
/// `encode/{name}` and `decode/{name}`.
fn bench_packet(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    packet: &Packet,
    version: ProtocolVersion,
) {
    let len = encoded_len(packet, version);
    let mut wire = BytesMut::with_capacity(len);
    if let Err(e) = encode(packet, version, &mut wire) {
        panic!("{name}: encode failed: {e}");
    }
    assert_eq!(wire.len(), len, "{name}: encoded_len disagrees with encode");
    // Sanity: the bytes decode back to the same packet, so the bench measures real work.
    let mut check = wire.clone();
    match decode(&mut check, version, MAX_PACKET_SIZE) {
        Ok(Some(p)) => assert_eq!(&p, packet, "{name}: round trip changed the packet"),
        other => panic!("{name}: decode failed: {other:?}"),
    }
    assert!(check.is_empty(), "{name}: decode left bytes behind");

    group.throughput(Throughput::Bytes(len as u64));

    let mut out = BytesMut::with_capacity(len);
    group.bench_function(format!("encode/{name}"), |b| {
        b.iter(|| {
            out.clear();
            let r = encode(black_box(packet), version, &mut out);
            black_box(&out);
            r
        })
    });

    let wire = wire.freeze();
    group.bench_function(format!("decode/{name}"), |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| decode(black_box(&mut buf), version, MAX_PACKET_SIZE),
            BatchSize::SmallInput,
        )
    });
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    for (version, tag, v5) in [
        (ProtocolVersion::V3_1_1, "v311", false),
        (ProtocolVersion::V5, "v5", true),
    ] {
        for (qos, q) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
            for (size, s) in [(64, "64B"), (4096, "4KiB")] {
                let packet = publish(qos, size, v5);
                bench_packet(
                    &mut group,
                    &format!("publish_{tag}_{q}_{s}"),
                    &packet,
                    version,
                );
            }
        }
    }
    bench_packet(
        &mut group,
        "connect_v311_will_user_pass",
        &connect_v311(),
        ProtocolVersion::V3_1_1,
    );
    bench_packet(
        &mut group,
        "connect_v5_props_will_user_pass",
        &connect_v5(),
        ProtocolVersion::V5,
    );
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
