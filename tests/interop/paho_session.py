"""Offline queueing with paho-mqtt and clean_session=False: subscribe, disconnect, messages
published meanwhile arrive on reconnect, with the session present flag."""

from paho_common import Peer, check, describe, ok, parse_args

CLIENT_ID = "paho-persistent"


def main():
    args = parse_args(__doc__)
    first = Peer(args, CLIENT_ID, clean_session=False)
    check(not first.connect(), "[MQTT-3.2.2-3] session present 1 without a stored session")
    first.subscribe([("paho/session/#", 2)])
    first.disconnect()

    pub = Peer(args, "paho-session-pub")
    pub.connect()
    pub.publish("paho/session/one", b"offline one", 1)
    pub.publish("paho/session/zero", b"offline qos0", 0)
    pub.publish("paho/session/two", b"offline two", 2)
    # Barrier for the QoS 0 message, which has no acknowledgement: the broker has routed it
    # once this QoS 1 publication from the same connection is acknowledged.
    pub.publish("paho/session/last", b"offline last", 1)

    again = Peer(args, CLIENT_ID, clean_session=False)
    check(again.connect(), "[MQTT-3.2.2-2] session present must be 1 on resuming a session")
    # [MQTT-3.1.2-5] QoS 1 and 2 messages were stored for the offline session; QoS 0 ones
    # are not (the broker's default, as Mosquitto). paho hands a QoS 2 message to the
    # application at PUBREL, so only the QoS 1 messages keep their relative order here.
    got = [again.expect_message(f"queued message {i + 1} of 3") for i in range(3)]
    have = [(m.topic, bytes(m.payload), m.qos, bool(m.retain)) for m in got]
    want = [("paho/session/one", b"offline one", 1, False),
            ("paho/session/two", b"offline two", 2, False),
            ("paho/session/last", b"offline last", 1, False)]
    check(sorted(have) == sorted(want), f"queued messages: got {have}, expected {want}")
    qos1 = [t for t, _, q, _ in have if q == 1]
    check(qos1 == ["paho/session/one", "paho/session/last"],
          f"[MQTT-4.6.0-6] QoS 1 messages out of order: {qos1}")
    ok("messages queued while offline delivered on reconnect")

    # The subscription survived too: a live message arrives without subscribing again.
    pub.publish("paho/session/live", b"live", 1)
    msg = again.expect_message("live message after reconnect")
    check(msg.topic == "paho/session/live",
          f"got {describe(msg)} (the QoS 0 message must not have been queued)")
    again.disconnect()
    ok("subscription kept in the persistent session")

    # Clean Session 1 discards the session, so the next persistent connection starts afresh.
    clean = Peer(args, CLIENT_ID, clean_session=True)
    check(not clean.connect(), "[MQTT-3.2.2-1] session present with Clean Session 1")
    clean.disconnect()
    fresh = Peer(args, CLIENT_ID, clean_session=False)
    check(not fresh.connect(), "[MQTT-3.1.2-6] a clean session must not leave state behind")
    fresh.disconnect()
    ok("clean session discards the stored session")
    pub.disconnect()


if __name__ == "__main__":
    main()
