"""Shared helpers for the paho-mqtt interoperability scripts (tests/interop_paho.rs runs them).

Every wait is an event with a timeout; a failure prints "FAIL: ..." on stderr and exits 1. A
missing paho-mqtt exits 3 with a message saying to run scripts/test (the tests never skip).
"""

import argparse
import queue
import socket
import struct
import sys
import threading
import time

try:
    import paho.mqtt.client as mqtt
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(
        f"FAIL: paho-mqtt is not installed ({exc}): run scripts/test, which installs it",
        file=sys.stderr,
    )
    sys.exit(3)

# Longest wait for anything the broker should do promptly.
TIMEOUT = 5.0

PROTOCOLS = {"3.1": mqtt.MQTTv31, "3.1.1": mqtt.MQTTv311}


def fail(message):
    """Reports a failure on stderr and exits non-zero."""
    print(f"FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition, message):
    """Fails with `message` unless `condition` holds."""
    if not condition:
        fail(message)


def ok(message):
    """Reports a passed check on stdout (the Rust test asserts these lines)."""
    print(f"OK {message}", flush=True)


def parse_args(description):
    """--port N (required), --host, --protocol 3.1|3.1.1."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="3.1.1")
    return parser.parse_args()


def describe(msg):
    """A readable form of a received message for failure reports."""
    return f"{msg.topic!r} qos={msg.qos} retain={int(msg.retain)} payload={msg.payload!r}"


class Peer:
    """A paho client whose callbacks are all recorded for the script to wait on."""

    def __init__(self, args, client_id, clean_session=True, keepalive=60, will=None,
                 protocol=None):
        self.args = args
        self.name = client_id
        self.keepalive = keepalive
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=PROTOCOLS[protocol or args.protocol],
            reconnect_on_failure=False,
        )
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos=qos, retain=retain)
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack = None
        self.disconnect_rc = None
        self._done = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_publish = self._on_publish

    # Callbacks (network thread).

    def _on_connect(self, _client, _userdata, flags, reason_code, _properties):
        self.connack = (flags.session_present, reason_code)
        self.connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties):
        self.disconnect_rc = reason_code
        self.disconnected.set()

    def _on_message(self, _client, _userdata, msg):
        self.messages.put(msg)

    def _complete(self, kind, mid, value):
        with self._cond:
            self._done[(kind, mid)] = value
            self._cond.notify_all()

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties):
        self._complete("sub", mid, [rc.value for rc in reason_codes])

    def _on_unsubscribe(self, _client, _userdata, mid, reason_codes, _properties):
        self._complete("unsub", mid, reason_codes)

    def _on_publish(self, _client, _userdata, mid, reason_code, _properties):
        self._complete("pub", mid, reason_code)

    def _wait_done(self, kind, mid, what):
        deadline = time.monotonic() + TIMEOUT
        with self._cond:
            while (kind, mid) not in self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    fail(f"{self.name}: {what} not acknowledged within {TIMEOUT}s")
                self._cond.wait(left)
            return self._done.pop((kind, mid))

    # Operations (script thread).

    def connect(self, loop=True):
        """Connects; with `loop` runs the network loop in a thread. Returns session_present."""
        rc = self.client.connect(self.args.host, self.args.port, keepalive=self.keepalive)
        check(rc == mqtt.MQTT_ERR_SUCCESS, f"{self.name}: connect() returned {rc}")
        if loop:
            self.client.loop_start()
            check(self.connected.wait(TIMEOUT), f"{self.name}: no CONNACK within {TIMEOUT}s")
        else:
            deadline = time.monotonic() + TIMEOUT
            while not self.connected.is_set():
                check(time.monotonic() < deadline, f"{self.name}: no CONNACK within {TIMEOUT}s")
                self.client.loop(timeout=0.05)
        session_present, reason_code = self.connack
        check(not reason_code.is_failure, f"{self.name}: CONNACK refused: {reason_code}")
        return bool(session_present)

    def subscribe(self, filters):
        """Subscribes to [(filter, qos)] and checks every requested QoS was granted."""
        rc, mid = self.client.subscribe(filters)
        check(rc == mqtt.MQTT_ERR_SUCCESS, f"{self.name}: subscribe() returned {rc}")
        granted = self._wait_done("sub", mid, f"SUBSCRIBE {filters}")
        wanted = [qos for _, qos in filters]
        check(granted == wanted, f"{self.name}: SUBACK granted {granted}, expected {wanted}")

    def unsubscribe(self, filters):
        """Unsubscribes and waits for the UNSUBACK."""
        rc, mid = self.client.unsubscribe(filters)
        check(rc == mqtt.MQTT_ERR_SUCCESS, f"{self.name}: unsubscribe() returned {rc}")
        self._wait_done("unsub", mid, f"UNSUBSCRIBE {filters}")

    def publish(self, topic, payload, qos, retain=False):
        """Publishes and waits until the flow completed (sent for QoS 0, PUBACK for 1,
        PUBCOMP for 2)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        check(info.rc == mqtt.MQTT_ERR_SUCCESS, f"{self.name}: publish() returned {info.rc}")
        self._wait_done("pub", info.mid, f"PUBLISH {topic!r} QoS {qos}")

    def expect_message(self, what, timeout=TIMEOUT):
        """The next received message; fails after `timeout` seconds."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            fail(f"{self.name}: no message ({what}) within {timeout}s")
            raise  # unreachable: fail exits

    def expect(self, topic, payload, qos, retain, what):
        """The next message must have exactly these properties."""
        msg = self.expect_message(what)
        got = (msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
        want = (topic, payload, qos, retain)
        check(got == want, f"{self.name}: {what}: got {describe(msg)}, expected {want}")
        return msg

    def until(self, topic, what):
        """Messages received before the first one on `topic` (a barrier), which is consumed."""
        before = []
        while True:
            msg = self.expect_message(f"barrier {topic!r} for {what}")
            if msg.topic == topic:
                return before
            before.append(msg)

    def disconnect(self):
        """Sends DISCONNECT and stops the network loop."""
        self.client.disconnect()
        check(self.disconnected.wait(TIMEOUT), f"{self.name}: disconnect not completed")
        self.client.loop_stop()
        check(not self.disconnect_rc.is_failure,
              f"{self.name}: disconnect reported {self.disconnect_rc}")

    def drop_connection(self):
        """Closes the TCP connection abruptly (RST, no DISCONNECT), as a crashed client."""
        self.client.loop_stop()
        sock = self.client.socket()
        check(sock is not None, f"{self.name}: no socket to drop")
        # SO_LINGER with a zero timeout: close() resets the connection.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
