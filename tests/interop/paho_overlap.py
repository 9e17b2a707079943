"""Overlapping subscriptions with paho-mqtt: one copy, at the highest matching QoS."""

from paho_common import Peer, check, describe, ok, parse_args


def main():
    args = parse_args(__doc__)
    pub = Peer(args, "paho-overlap-pub")
    pub.connect()
    sub = Peer(args, "paho-overlap-sub")
    sub.connect()
    sub.subscribe([("paho/ov/#", 1), ("paho/ov/+", 0), ("paho/ov/x", 2), ("paho/+/x", 1),
                   ("#", 0), ("paho/barrier", 2)])
    pub.publish("paho/ov/x", b"once", 2)
    pub.publish("paho/ov/y", b"also once", 1)
    # A QoS 2 barrier: paho delivers QoS 2 messages at PUBREL, and PUBRELs go out in the order
    # of the PUBRECs [MQTT-4.6.0-3], so every copy sent before it is seen before it.
    pub.publish("paho/barrier", b"barrier", 2)
    got = sub.until("paho/barrier", "overlapping subscriptions")
    check(len(got) == 2, "expected one copy of each message, got "
          f"{len(got)}: " + ", ".join(describe(m) for m in got))
    # [MQTT-3.3.5-1] delivered respecting the maximum QoS of all matching subscriptions.
    # Sorted: paho hands the QoS 2 message over at PUBREL, possibly after the QoS 1 one.
    want = [("paho/ov/x", b"once", 2), ("paho/ov/y", b"also once", 1)]
    have = sorted((m.topic, bytes(m.payload), m.qos) for m in got)
    check(have == want, f"got {have}, expected {want} (the highest matching QoS)")
    ok("overlapping subscriptions deliver one copy at the highest QoS")
    pub.disconnect()
    sub.disconnect()


if __name__ == "__main__":
    main()
