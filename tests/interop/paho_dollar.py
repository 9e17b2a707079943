"""'$' topics with paho-mqtt: routed to explicit subscriptions, never matched by a filter
starting with a wildcard."""

from paho_common import Peer, check, describe, ok, parse_args


def main():
    args = parse_args(__doc__)
    pub = Peer(args, "paho-dollar-pub")
    pub.connect()
    wild = Peer(args, "paho-dollar-wild")
    wild.connect()
    wild.subscribe([("#", 1), ("+/status", 1), ("+/+", 1)])
    explicit = Peer(args, "paho-dollar-explicit")
    explicit.connect()
    explicit.subscribe([("$paho/#", 1)])

    pub.publish("$paho/status", b"dollar", 1)
    pub.publish("$paho/retained", b"dollar retained", 1, retain=True)
    pub.publish("plain/status", b"plain", 1)
    # The '$' topics are routed: an explicit subscription receives them...
    explicit.expect("$paho/status", b"dollar", 1, False, "'$' topic, explicit filter")
    explicit.expect("$paho/retained", b"dollar retained", 1, False, "'$' retained topic")
    # ...but [MQTT-4.7.2-1] '#' and '+' at the first level must not match them. The plain
    # message was published last, so anything before it is a wrong delivery.
    wrong = wild.until("plain/status", "plain topic through the wildcards")
    check(not wrong, "[MQTT-4.7.2-1] wildcard filters matched: "
          + ", ".join(describe(m) for m in wrong))
    ok("'$' topics not matched by '#' or '+' (live)")

    # The same for retained messages sent to a new subscription.
    late = Peer(args, "paho-dollar-late")
    late.connect()
    late.subscribe([("#", 1)])
    late.publish("barrier/dollar", b"barrier", 1)
    stale = late.until("barrier/dollar", "retained '$' topic")
    check(not stale, "[MQTT-4.7.2-1] '#' received retained: "
          + ", ".join(describe(m) for m in stale))
    ok("'$' topics not matched by '#' (retained)")
    for peer in (pub, wild, explicit, late):
        peer.disconnect()


if __name__ == "__main__":
    main()
