"""Keep-alive with paho-mqtt: a client with keepalive=1 that stops its network loop is
disconnected by the broker after 1.5 s (its will shows when), while a client that keeps
sending stays connected."""

import queue
import time

from paho_common import Peer, TIMEOUT, check, describe, ok, parse_args

# [MQTT-3.1.2-24] the server disconnects after 1.5 x keep-alive without a packet. The client
# is entitled to the full keep-alive (1 s); allow up to 3 s for a loaded machine.
EARLIEST, LATEST = 1.0, 3.0


def main():
    args = parse_args(__doc__)
    watcher = Peer(args, "paho-ka-watcher")
    watcher.connect()
    watcher.subscribe([("paho/ka/#", 1)])

    active = Peer(args, "paho-ka-active", keepalive=1,
                  will=("paho/ka/active", b"active lost", 1, False))
    active.connect()
    # No loop thread: after its CONNACK this client never sends another byte.
    sleeper = Peer(args, "paho-ka-sleeper", keepalive=1,
                   will=("paho/ka/sleeper", b"sleeper lost", 1, False))
    sleeper.connect(loop=False)
    connected_at = time.monotonic()

    # The active client publishes every 0.25 s (the traffic under test, not synchronisation)
    # until the sleeper's will arrives.
    will = None
    deadline = connected_at + TIMEOUT
    while will is None:
        check(time.monotonic() < deadline,
              f"the silent client was not disconnected within {TIMEOUT}s")
        active.publish("paho/active/tick", b"tick", 1)
        try:
            will = watcher.messages.get(timeout=0.25)
        except queue.Empty:
            will = None
    elapsed = time.monotonic() - connected_at
    check(will.topic == "paho/ka/sleeper" and bytes(will.payload) == b"sleeper lost",
          f"expected the silent client's will first, got {describe(will)}")
    check(EARLIEST <= elapsed <= LATEST,
          f"[MQTT-3.1.2-24] silent client closed after {elapsed:.2f}s, expected "
          f"{EARLIEST}-{LATEST}s for keepalive=1")
    ok(f"silent client disconnected after {elapsed:.2f}s with keepalive=1")

    # Keep the active client busy until well past 1.5 s of its own keep-alive, then check
    # it is still connected: its will must not have been published before a barrier.
    until = connected_at + LATEST
    while time.monotonic() < until:
        active.publish("paho/active/tick", b"tick", 1)
        check(not active.disconnected.wait(0.25),
              f"the active client was disconnected: {active.disconnect_rc}")
    active.publish("paho/ka/barrier", b"barrier", 1)
    wrong = watcher.until("paho/ka/barrier", "active client barrier")
    check(not wrong, "active client's will published: " + ", ".join(describe(m) for m in wrong))
    ok("a client that keeps sending stays connected")
    active.disconnect()
    watcher.disconnect()


if __name__ == "__main__":
    main()
