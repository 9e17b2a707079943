"""Will messages with paho-mqtt: published when the connection drops without DISCONNECT,
not after a DISCONNECT."""

from paho_common import Peer, check, describe, ok, parse_args


def main():
    args = parse_args(__doc__)
    watcher = Peer(args, "paho-will-watcher")
    watcher.connect()
    watcher.subscribe([("paho/will/#", 2)])

    polite = Peer(args, "paho-will-polite",
                  will=("paho/will/polite", b"polite vanished", 1, False))
    polite.connect()
    polite.disconnect()

    crashed = Peer(args, "paho-will-crashed",
                   will=("paho/will/crashed", b"crashed vanished", 2, False))
    crashed.connect()
    crashed.drop_connection()

    # [MQTT-3.1.2-8] the will is published when the network connection closes without
    # DISCONNECT; [MQTT-3.1.2-10] it was deleted when the polite client sent DISCONNECT, so
    # the first (and only) will must be the crashed client's.
    msg = watcher.expect_message("will of the crashed client")
    check(msg.topic == "paho/will/crashed",
          f"[MQTT-3.1.2-10] got {describe(msg)} first, expected the crashed client's will")
    check(bytes(msg.payload) == b"crashed vanished" and msg.qos == 2 and not msg.retain,
          f"will delivered as {describe(msg)}, expected QoS 2, retain 0")
    ok("will published on abrupt close, not after DISCONNECT")
    watcher.disconnect()


if __name__ == "__main__":
    main()
