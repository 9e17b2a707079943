"""Retained messages with paho-mqtt: replaced, delivered to new subscribers with the retain
flag, and cleared by an empty retained payload."""

from paho_common import Peer, check, describe, ok, parse_args


def main():
    args = parse_args(__doc__)
    pub = Peer(args, "paho-retained-pub")
    pub.connect()
    pub.publish("paho/retained/a", b"first", 1, retain=True)
    pub.publish("paho/retained/a", b"second", 1, retain=True)
    pub.publish("paho/retained/b", b"other", 0, retain=True)

    early = Peer(args, "paho-retained-early")
    early.connect()
    early.subscribe([("paho/retained/a", 2)])
    # [MQTT-3.3.1-5] only the latest retained message is kept; [MQTT-3.3.1-8] sent with
    # retain 1 to a new subscription, at the QoS it was published with.
    early.expect("paho/retained/a", b"second", 1, True, "retained message on subscribe")
    ok("retained message delivered to a new subscriber")

    # [MQTT-3.3.1-9] a message that matches an established subscription goes out with retain 0,
    # even if it was published retained.
    pub.publish("paho/retained/a", b"third", 1, retain=True)
    early.expect("paho/retained/a", b"third", 1, False, "live retained publication")
    # [MQTT-3.3.1-10] a retained message with an empty payload is forwarded as normal...
    pub.publish("paho/retained/a", b"", 1, retain=True)
    early.expect("paho/retained/a", b"", 1, False, "empty retained publication")
    pub.publish("paho/retained/b", b"", 1, retain=True)
    ok("live publications carry retain 0")

    # ...and [MQTT-3.3.1-11] removes the retained message: a new subscriber gets nothing.
    late = Peer(args, "paho-retained-late")
    late.connect()
    late.subscribe([("paho/retained/#", 1), ("paho/retained-barrier", 1)])
    late.publish("paho/retained-barrier", b"barrier", 1)
    stale = late.until("paho/retained-barrier", "cleared retained messages")
    check(not stale, "cleared retained messages were still delivered: "
          + ", ".join(describe(m) for m in stale))
    ok("empty retained payload clears the retained message")
    for peer in (pub, early, late):
        peer.disconnect()


if __name__ == "__main__":
    main()
