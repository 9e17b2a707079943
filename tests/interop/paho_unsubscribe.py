"""UNSUBSCRIBE with paho-mqtt: delivery stops for that filter only."""

from paho_common import Peer, check, ok, parse_args


def main():
    args = parse_args(__doc__)
    pub = Peer(args, "paho-unsub-pub")
    pub.connect()
    sub = Peer(args, "paho-unsub-sub")
    sub.connect()
    sub.subscribe([("paho/unsub/a", 1), ("paho/unsub/+", 0), ("paho/unsub/b", 1),
                   ("paho/barrier", 1)])
    pub.publish("paho/unsub/a", b"before", 1)
    sub.expect("paho/unsub/a", b"before", 1, False, "message before unsubscribing")
    sub.unsubscribe(["paho/unsub/a", "paho/unsub/+"])
    # [MQTT-3.10.4-5] UNSUBACK even for a filter that matches no subscription.
    sub.unsubscribe(["paho/never/subscribed"])
    pub.publish("paho/unsub/a", b"after", 1)
    pub.publish("paho/unsub/b", b"still", 1)
    pub.publish("paho/barrier", b"barrier", 1)
    got = [(m.topic, bytes(m.payload), m.qos) for m in sub.until("paho/barrier", "unsubscribe")]
    # [MQTT-3.10.4-1] the subscriptions are deleted; the others are untouched.
    check(got == [("paho/unsub/b", b"still", 1)], f"after unsubscribing received {got}")
    ok("unsubscribe stops delivery for that filter only")
    pub.disconnect()
    sub.disconnect()


if __name__ == "__main__":
    main()
