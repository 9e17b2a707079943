"""paho-mqtt connects, reconnects and disconnects (MQTT 3.1.1, or 3.1 with --protocol 3.1)."""

from paho_common import Peer, check, ok, parse_args


def main():
    args = parse_args(__doc__)
    first = Peer(args, "paho-connect")
    check(not first.connect(), "[MQTT-3.2.2-1] Clean Session 1: session present must be 0")
    first.disconnect()
    ok("connect and disconnect")

    again = Peer(args, "paho-connect")
    check(not again.connect(), "[MQTT-3.2.2-1] session present on a clean reconnect")
    # A round trip proves the connection is usable, not just accepted.
    again.subscribe([("paho/connect/echo", 1)])
    again.publish("paho/connect/echo", b"echo", 1)
    again.expect("paho/connect/echo", b"echo", 1, False, "own message echoed")
    again.disconnect()
    ok(f"reconnect with the same client id (MQTT {args.protocol})")


if __name__ == "__main__":
    main()
