"""paho-mqtt 2.x over TLS, run by tests/interop_tls.rs against a broker on an ephemeral port with
a `[listener.tls]` listener whose certificates the test generated into a temporary directory.

    python3 paho_tls.py --port N --ca CA.pem [--cert C.pem --key K.pem] <check> [options]

Checks:
  identity  --protocol 3.1.1|5 --user U [--claim NAME]: the certificate's identity U is the
            user name the ACL (`pattern readwrite users/%u/#`) sees, whatever user name the
            CONNECT claims; users/U/x is allowed, users/bob/x refused.
  unsafe    --user U --filter F [--topic T]: U (from the certificate) contains '/', '+' or
            '#', so no %u pattern applies to it (MQTT 5): SUBSCRIBE F and PUBLISH T, which
            textually match users/%u/# with U substituted, are refused.
  refused   --protocol 3.1.1|5: the TLS handshake succeeds, the CONNACK refuses; prints its code.
  version   --tls-max 1.2|1.3 --expect accepted|refused: a client limited to that TLS version.

Every wait is an event with a timeout; each passed check prints "OK ..." on stdout, a failure
prints "FAIL: ..." on stderr and exits 1, a missing paho-mqtt exits 3 (see paho_common.py).
"""

import argparse
import queue
import ssl
import threading
import time

from paho_common import TIMEOUT, check, fail, mqtt, ok

PROTOCOLS = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}

# SUBACK / PUBACK codes.
GRANTED_QOS_1 = 1
SUBACK_FAILURE_311 = 0x80  # [MQTT-3.9.3] 3.1.1: 0x80 Failure
NOT_AUTHORIZED_5 = 0x87  # MQTT 5.0 section 3.9.3 / 3.4.2.1: 0x87 Not authorized


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="3.1.1")
    parser.add_argument("--user", help="the identity in the client certificate")
    parser.add_argument("--claim", help="a user name to send in CONNECT (must be ignored)")
    parser.add_argument("--filter", help="unsafe: the filter to subscribe to")
    parser.add_argument("--topic", help="unsafe: the topic to publish to")
    parser.add_argument("--tls-max", choices=["1.2", "1.3"], default="1.3")
    parser.add_argument("--expect", choices=["accepted", "refused"], default="accepted")
    parser.add_argument("check", choices=["identity", "unsafe", "refused", "version"])
    return parser.parse_args()


class TlsPeer:
    """A paho client over TLS whose callbacks are recorded for the script to wait on."""

    def __init__(self, args, client_id, protocol, context=None):
        self.args = args
        self.name = client_id
        self.v5 = protocol == "5"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=PROTOCOLS[protocol],
            reconnect_on_failure=False,
        )
        if context is None:
            # The way the paho documentation configures TLS; verifies the server certificate
            # and its host name (127.0.0.1 is an IP SAN of the test server certificate).
            self.client.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.key)
        else:
            self.client.tls_set_context(context)
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.connack = None
        self._done = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties):
        self.connack = reason_code
        self.connected.set()

    def _complete(self, kind, mid, value):
        with self._cond:
            self._done[(kind, mid)] = value
            self._cond.notify_all()

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties):
        self._complete("sub", mid, [rc.value for rc in reason_codes])

    def _on_publish(self, _client, _userdata, mid, reason_code, _properties):
        self._complete("pub", mid, reason_code.value)

    def _wait_done(self, kind, mid, what):
        deadline = time.monotonic() + TIMEOUT
        with self._cond:
            while (kind, mid) not in self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    fail(f"{self.name}: {what} not acknowledged within {TIMEOUT}s")
                self._cond.wait(left)
            return self._done.pop((kind, mid))

    def connect(self):
        """TLS handshake and CONNECT; fails unless the CONNACK accepts."""
        rc = self.client.connect(self.args.host, self.args.port, keepalive=30)
        check(rc == mqtt.MQTT_ERR_SUCCESS, f"{self.name}: connect() returned {rc}")
        self.client.loop_start()
        check(self.connected.wait(TIMEOUT), f"{self.name}: no CONNACK within {TIMEOUT}s")
        check(not self.connack.is_failure, f"{self.name}: CONNACK refused: {self.connack}")

    def tls_version(self):
        """The negotiated TLS version ("TLSv1.2", "TLSv1.3")."""
        sock = self.client.socket()
        check(isinstance(sock, ssl.SSLSocket), f"{self.name}: not a TLS socket: {sock!r}")
        return sock.version()

    def subscribe(self, topic_filter):
        """Subscribes at QoS 1; returns the SUBACK code."""
        rc, mid = self.client.subscribe([(topic_filter, 1)])
        check(rc == mqtt.MQTT_ERR_SUCCESS, f"{self.name}: subscribe() returned {rc}")
        [code] = self._wait_done("sub", mid, f"SUBSCRIBE {topic_filter!r}")
        return code

    def publish(self, topic, payload):
        """Publishes at QoS 1; returns the PUBACK reason code (always 0 for 3.1.1)."""
        info = self.client.publish(topic, payload, qos=1)
        check(info.rc == mqtt.MQTT_ERR_SUCCESS, f"{self.name}: publish() returned {info.rc}")
        return self._wait_done("pub", info.mid, f"PUBLISH {topic!r}")

    def expect(self, topic, payload, what):
        try:
            msg = self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            fail(f"{self.name}: no message ({what}) within {TIMEOUT}s")
        got = (msg.topic, bytes(msg.payload))
        check(got == (topic, payload), f"{self.name}: {what}: got {got}, expected {(topic, payload)}")

    def disconnect(self):
        self.client.disconnect()
        self.client.loop_stop()


def identity(args):
    """The certificate's identity is the ACL's %u; a user name claimed in CONNECT is not."""
    check(args.user and args.cert and args.key, "identity needs --user, --cert and --key")
    peer = TlsPeer(args, f"paho-tls-{args.protocol}", args.protocol)
    if args.claim:
        # Without use_identity_as_username this would be the user name (a label: no password
        # file); the certificate must win.
        peer.client.username_pw_set(args.claim)
    peer.connect()
    own = f"users/{args.user}/x"
    denied_code = NOT_AUTHORIZED_5 if peer.v5 else SUBACK_FAILURE_311

    code = peer.subscribe(own)
    check(code == GRANTED_QOS_1, f"SUBSCRIBE {own!r}: SUBACK {code:#04x}, expected 0x01")
    code = peer.subscribe("users/bob/x")
    check(code == denied_code,
          f"SUBSCRIBE 'users/bob/x': SUBACK {code:#04x}, expected {denied_code:#04x}")
    ok(f"SUBACK grants {own} and refuses users/bob/x (MQTT {args.protocol})")

    # The denied message first: the Rust side's in-process subscriber to users/# then sees
    # only the allowed one (messages of one publisher are routed in order).
    code = peer.publish("users/bob/x", b"not for bob")
    if peer.v5:
        check(code == NOT_AUTHORIZED_5,
              f"PUBLISH 'users/bob/x': PUBACK {code:#04x}, expected 0x87")
    else:
        # [MQTT-3.3.5-2] 3.1.1 cannot report the refusal: acknowledged as usual, not delivered.
        check(code == 0, f"PUBLISH 'users/bob/x': PUBACK {code:#04x}, expected 0x00")
    code = peer.publish(own, b"mine")
    check(code == 0, f"PUBLISH {own!r}: PUBACK {code:#04x}, expected 0x00")
    peer.expect(own, b"mine", f"own message on {own}")
    ok(f"PUBLISH to {own} delivered, to users/bob/x refused (MQTT {args.protocol})")
    peer.disconnect()


def unsafe(args):
    """A certificate identity with '/', '+' or '#' matches no %u pattern."""
    check(args.user and args.cert and args.key and args.filter,
          "unsafe needs --user, --cert, --key and --filter")
    peer = TlsPeer(args, "paho-tls-unsafe", "5")
    peer.connect()
    code = peer.subscribe(args.filter)
    check(code == NOT_AUTHORIZED_5,
          f"user {args.user!r}: SUBSCRIBE {args.filter!r}: SUBACK {code:#04x}, expected 0x87")
    if args.topic:
        code = peer.publish(args.topic, b"escalation")
        check(code == NOT_AUTHORIZED_5,
              f"user {args.user!r}: PUBLISH {args.topic!r}: PUBACK {code:#04x}, expected 0x87")
    ok(f"identity {args.user!r} gets no %u pattern")
    peer.disconnect()


def refused(args):
    """The handshake completes but the CONNACK refuses the client."""
    peer = TlsPeer(args, f"paho-tls-refused-{args.protocol}", args.protocol)
    rc = peer.client.connect(args.host, args.port, keepalive=30)
    check(rc == mqtt.MQTT_ERR_SUCCESS, f"{peer.name}: connect() returned {rc}")
    peer.client.loop_start()
    check(peer.connected.wait(TIMEOUT), f"{peer.name}: no CONNACK within {TIMEOUT}s")
    peer.client.loop_stop()
    check(peer.connack.is_failure, f"{peer.name}: CONNACK accepted the client")
    ok(f"CONNACK {peer.connack.value:#04x} (MQTT {args.protocol})")


def version(args):
    """A client limited to TLS <= --tls-max: accepted (and which version) or refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=args.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = (ssl.TLSVersion.TLSv1_2 if args.tls_max == "1.2"
                               else ssl.TLSVersion.TLSv1_3)
    if args.cert:
        context.load_cert_chain(args.cert, args.key)
    peer = TlsPeer(args, f"paho-tls-max-{args.tls_max}", args.protocol, context)
    if args.expect == "refused":
        try:
            peer.client.connect(args.host, args.port, keepalive=30)
        except ssl.SSLError as exc:
            print(f"INFO handshake refused: {exc}", flush=True)
            ok(f"TLS <= {args.tls_max} client refused in the handshake")
            return
        fail(f"a client limited to TLS {args.tls_max} completed the handshake "
             f"({peer.tls_version()})")
    peer.connect()
    ok(f"TLS <= {args.tls_max} client accepted with {peer.tls_version()}")
    peer.disconnect()


def main():
    args = parse_args()
    checks = {"identity": identity, "unsafe": unsafe, "refused": refused, "version": version}
    checks[args.check](args)


if __name__ == "__main__":
    main()
