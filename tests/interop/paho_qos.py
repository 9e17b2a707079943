"""QoS 0/1/2 round trips between two paho-mqtt clients: payload, QoS and retain flag."""

from paho_common import Peer, ok, parse_args


def main():
    args = parse_args(__doc__)
    sub = Peer(args, "paho-qos-sub")
    sub.connect()
    sub.subscribe([("paho/qos/#", 2)])
    low = Peer(args, "paho-qos-low")
    low.connect()
    low.subscribe([("paho/qos/#", 0)])
    pub = Peer(args, "paho-qos-pub")
    pub.connect()

    binary = bytes(range(256))
    big = bytes(i % 251 for i in range(100_000))
    cases = [
        ("paho/qos/0", b"at most once", 0),
        ("paho/qos/1", b"at least once", 1),
        ("paho/qos/2", b"exactly once", 2),
        ("paho/qos/binary", binary, 1),
        ("paho/qos/empty", b"", 2),
        ("paho/qos/big", big, 2),
    ]
    # One message at a time: paho hands a QoS 2 message to the application only at PUBREL, so
    # a QoS 0 or 1 message published after it could otherwise overtake it.
    for topic, payload, qos in cases:
        pub.publish(topic, payload, qos)
        # [MQTT-3.8.4-6] delivered at the lower of the published and the granted QoS;
        # [MQTT-3.3.1-9] retain 0 on a live delivery.
        sub.expect(topic, payload, qos, False, f"QoS {qos} message on {topic}")
        low.expect(topic, payload, 0, False, f"QoS {qos} message downgraded to 0")
    ok(f"QoS 0/1/2 round trips (MQTT {args.protocol})")
    for peer in (pub, sub, low):
        peer.disconnect()


if __name__ == "__main__":
    main()
