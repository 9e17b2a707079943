//! The broker over TLS, end to end: rumqttc 0.24 clients (rustls 0.22) publish and subscribe
//! through a `[listener.tls]` listener, with payloads big enough that the connection driver's
//! writes block; a reload swaps the certificate for new connections.

mod common;
#[path = "tls/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::time::Duration;

use common::TestBroker;
use mqtt_server::config::Config;
use pki::{Ca, TempDir, settings};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};

const WAIT: Duration = Duration::from_secs(20);

fn tls_config(dir: &TempDir, ca: &Ca) -> Config {
    let mut config = common::test_config();
    config.listeners[0].tls = Some(settings(dir, &ca.server("broker"), None));
    config.limits.max_packet_size = 4 * 1024 * 1024;
    config
}

fn options(b: &TestBroker, ca: &Ca, id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(id, "localhost", b.addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca.pem().into_bytes(),
        alpn: None,
        client_auth: None,
    }));
    options
}

async fn until_connack(eventloop: &mut EventLoop) {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.unwrap() {
            return;
        }
    }
}

#[tokio::test]
async fn publish_and_subscribe_over_tls_with_large_payloads() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let b = TestBroker::start_with(tls_config(&dir, &ca)).await;

    let (sub, mut sub_loop) = AsyncClient::new(options(&b, &ca, "sub"), 64);
    until_connack(&mut sub_loop).await;
    sub.subscribe("big/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
            break;
        }
    }

    let (publisher, mut pub_loop) = AsyncClient::new(options(&b, &ca, "pub"), 64);
    until_connack(&mut pub_loop).await;
    let payloads: Vec<Vec<u8>> = (0..24)
        .map(|i| (0..(i * 37_000 + 1)).map(|j| (i + j) as u8).collect())
        .collect();
    let pub_task = tokio::spawn({
        let payloads = payloads.clone();
        async move {
            for (i, p) in payloads.into_iter().enumerate() {
                publisher
                    .publish(format!("big/{i}"), QoS::AtLeastOnce, false, p)
                    .await
                    .unwrap();
            }
            // Drive the publisher until every PUBACK is in.
            let mut acks = 0;
            while acks < 24 {
                if let Event::Incoming(Packet::PubAck(_)) = pub_loop.poll().await.unwrap() {
                    acks += 1;
                }
            }
        }
    });
    let received = tokio::time::timeout(WAIT, async {
        let mut got = Vec::new();
        while got.len() < payloads.len() {
            if let Event::Incoming(Packet::Publish(p)) = sub_loop.poll().await.unwrap() {
                // The subscriber is slow at first, so the broker's writes to it block.
                if got.is_empty() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                got.push((p.topic.clone(), p.payload.to_vec()));
            }
        }
        got
    })
    .await
    .expect("every message arrives");
    tokio::time::timeout(WAIT, pub_task).await.unwrap().unwrap();
    for (i, (topic, payload)) in received.iter().enumerate() {
        assert_eq!(topic, &format!("big/{i}"));
        assert!(payload == &payloads[i], "payload {i} differs");
    }
    b.stop().await;
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_clients() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let b = TestBroker::start_with(tls_config(&dir, &ca)).await;
    let (c1, mut l1) = AsyncClient::new(options(&b, &ca, "before"), 16);
    until_connack(&mut l1).await;

    // Certificate from another CA on disk: after the reload, clients trusting only the old CA
    // are refused, those trusting the new one are served, the old connection stays.
    let other = Ca::new("other CA");
    let leaf = other.server("broker");
    dir.write("cert.pem", &leaf.cert_pem);
    dir.write("key.pem", &leaf.key_pem);
    b.broker.reload().unwrap();

    let (_c2, mut l2) = AsyncClient::new(options(&b, &ca, "old-trust"), 16);
    assert!(
        tokio::time::timeout(WAIT, l2.poll())
            .await
            .unwrap()
            .is_err()
    );
    let (_c3, mut l3) = AsyncClient::new(options(&b, &other, "new-trust"), 16);
    tokio::time::timeout(WAIT, until_connack(&mut l3))
        .await
        .unwrap();

    c1.subscribe("still/here", QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = l1.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .unwrap();
    b.stop().await;
}
