#!/usr/bin/env python3
"""Independent malformed-input and overload audit of an MQTT broker (MQTT 3.1, 3.1.1, 5.0).

Written from the OASIS specifications, not from the broker's source: every case opens a fresh
TCP connection, optionally sends a valid CONNECT, then malformed (or odd but legal) bytes, and
checks the broker's answer against what the specification allows, citing the normative
statement. Meanwhile a bystander (a QoS 1 publisher and subscriber pair on their own topic)
exchanges a numbered message every 20 ms; it must see no gap and no stall over 1 s. With
--broker-pid the broker's resident memory is sampled before and after and must stay bounded.

Usage: python3 malformed_audit.py --port N [--host 127.0.0.1] [--only SUBSTR] [--broker-pid PID]
                                  [--jobs N]

Pure Python 3.11 standard library (raw sockets): no paho, no pip packages. Prints one line per
case, "PASS <name> [statement]" or "FAIL <name> [statement]: expected ..., got ...", then a
summary; exits 1 if any case failed, the bystander stalled or memory grew beyond the bound.

Limits the cases depend on (Maximum Packet Size, Receive Maximum, Topic Alias Maximum, Server
Keep Alive) are read from the broker's MQTT 5 CONNACK, never hard-coded.
"""

import argparse
import concurrent.futures
import os
import socket
import struct
import sys
import threading
import time

# Longest wait for anything the broker should do promptly: the cap of every case.
TIMEOUT = 5.0
# Resident memory the broker may gain over the whole run.
RSS_BOUND_KIB = 32 * 1024
# Bystander: one message every PERIOD seconds; no gap may exceed STALL seconds.
PERIOD = 0.020
STALL = 1.0

RUN_ID = f"{os.getpid()}-{int(time.time() * 1000) % 100000}"

# Packet types (fixed header byte 1, high nibble).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)
TYPE_NAMES = {0: "RESERVED0", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK",
              5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK",
              10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
              14: "DISCONNECT", 15: "AUTH"}

# MQTT 5 reason codes for "Malformed Packet" and "Protocol Error" (5.0 section 4.13.1).
MALFORMED = frozenset({0x81, 0x82})

# Ill-formed UTF-8 (1.5.3 / 1.5.4) and U+0000.
BAD_UTF8 = {
    "0xFF": b"\xff",
    "U+0000": b"\x00",
    "surrogate U+D800": b"\xed\xa0\x80",
    "overlong '/'": b"\xc0\xaf",
    "truncated sequence": b"\xe2\x82",
}


# ------------------------------------------------------------------------------------------
# Encoding


def vbi(n):
    """Variable Byte Integer (1.5.5 / 2.2.3)."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def u16(n):
    return struct.pack(">H", n)


def u32(n):
    return struct.pack(">I", n)


def s(value):
    """UTF-8 Encoded String / Binary Data: 2-byte length then the bytes (given as bytes)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return u16(len(value)) + value


def packet(first_byte, body):
    return bytes([first_byte]) + vbi(len(body)) + body


# MQTT 5 properties: (identifier, encoded value).
def p_byte(pid, v):
    return bytes([pid, v])


def p_u16(pid, v):
    return bytes([pid]) + u16(v)


def p_u32(pid, v):
    return bytes([pid]) + u32(v)


def p_vbi(pid, v):
    return bytes([pid]) + vbi(v)


def p_str(pid, v):
    return bytes([pid]) + s(v)


def p_pair(k, v):
    return bytes([0x26]) + s(k) + s(v)


def props(*items):
    body = b"".join(items)
    return vbi(len(body)) + body


PROTOCOLS = {3: (b"MQIsdp", 3), 4: (b"MQTT", 4), 5: (b"MQTT", 5)}


def connect_pkt(version=4, cid=None, clean=True, ka=60, will=None, user=None, pw=None,
                cprops=b"", name=None, level=None, flags_or=0, flags=None, extra=b"",
                header=0x10, raw_props=None, will_raw_props=None):
    """A CONNECT. `will` = (topic, payload, qos, retain[, will props bytes])."""
    pname, plevel = PROTOCOLS[version]
    if name is not None:
        pname = name
    if level is not None:
        plevel = level
    if cid is None:
        cid = new_id("c")
    f = 0
    if clean:
        f |= 0x02
    payload = s(cid)
    if will is not None:
        topic, message, qos, retain = will[:4]
        f |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if version == 5:
            payload += will_raw_props if will_raw_props is not None else props(
                *(will[4:5] or []))
        payload += s(topic) + s(message)
    if user is not None:
        f |= 0x80
        payload += s(user)
    if pw is not None:
        f |= 0x40
        payload += s(pw)
    f |= flags_or
    if flags is not None:
        f = flags
    var = s(pname) + bytes([plevel, f]) + u16(ka)
    if version == 5:
        var += raw_props if raw_props is not None else props(cprops) if cprops else b"\x00"
    return packet(header, var + payload + extra)


def publish_pkt(topic, payload=b"", qos=0, pid=None, dup=False, retain=False, version=4,
                pprops=None, header=None):
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    if header is not None:
        first = header
    body = s(topic)
    if qos > 0 or pid is not None:
        body += u16(pid if pid is not None else 1)
    if version == 5:
        body += pprops if pprops is not None else b"\x00"
    return packet(first, body + payload)


def subscribe_pkt(pid, filters, version=4, sprops=None, header=0x82):
    """`filters` = [(filter, options byte)]."""
    body = u16(pid)
    if version == 5:
        body += sprops if sprops is not None else b"\x00"
    for f, opts in filters:
        body += s(f) + bytes([opts])
    return packet(header, body)


def unsubscribe_pkt(pid, filters, version=4, uprops=None, header=0xA2):
    body = u16(pid)
    if version == 5:
        body += uprops if uprops is not None else b"\x00"
    for f in filters:
        body += s(f)
    return packet(header, body)


def ack_pkt(ptype, pid, version=4, reason=None):
    first = (ptype << 4) | (0x02 if ptype == PUBREL else 0)
    body = u16(pid)
    if version == 5 and reason is not None:
        body += bytes([reason])
    return packet(first, body)


PINGREQ_PKT = b"\xc0\x00"


def disconnect_pkt(version=4, reason=None, dprops=None):
    body = b""
    if version == 5 and (reason is not None or dprops is not None):
        body = bytes([reason or 0]) + (dprops if dprops is not None else b"")
    return packet(0xE0, body)


_ids = iter(range(1, 1 << 30))
_ids_lock = threading.Lock()


def new_id(tag):
    with _ids_lock:
        return f"audit-{RUN_ID}-{tag}{next(_ids)}"


# ------------------------------------------------------------------------------------------
# Decoding what the broker sends


class Pkt:
    """A packet received from the broker."""

    def __init__(self, first, body, version):
        self.first = first
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body
        self.version = version

    def name(self):
        return TYPE_NAMES.get(self.type, "?")

    def reason(self):
        """CONNACK return/reason code, MQTT 5 DISCONNECT / ack reason code (0 if absent)."""
        if self.type == CONNACK:
            return self.body[1] if len(self.body) >= 2 else None
        if self.type == DISCONNECT:
            return self.body[0] if self.body else 0
        if self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            return self.body[2] if len(self.body) >= 3 else 0
        return None

    def packet_id(self):
        if self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK):
            return struct.unpack(">H", self.body[:2])[0] if len(self.body) >= 2 else None
        return None

    def connack_props(self):
        """MQTT 5 CONNACK properties as {id: [values]}."""
        if self.type != CONNACK or self.version != 5 or len(self.body) < 3:
            return {}
        return parse_props(self.body, 2)[0]

    def suback_codes(self):
        body = self.body[2:]
        if self.version == 5:
            n, i = read_vbi(body, 0)
            body = body[i + n:]
        return list(body)

    def publish_fields(self):
        """(topic bytes, qos, packet id, props dict, payload) of a PUBLISH."""
        qos = (self.flags >> 1) & 3
        tl = struct.unpack(">H", self.body[:2])[0]
        topic = self.body[2:2 + tl]
        i = 2 + tl
        pid = None
        if qos:
            pid = struct.unpack(">H", self.body[i:i + 2])[0]
            i += 2
        pr = {}
        if self.version == 5:
            pr, i = parse_props(self.body, i)
        return topic, qos, pid, pr, self.body[i:]

    def __repr__(self):
        extra = ""
        r = self.reason()
        if self.type in (CONNACK, DISCONNECT) or (self.version == 5 and r):
            extra = f" reason=0x{r:02X}" if r is not None else ""
        if self.type == PUBLISH:
            topic, qos, pid, _, payload = self.publish_fields()
            extra = f" topic={topic!r} qos={qos} id={pid} payload={payload[:40]!r}"
        elif self.packet_id() is not None:
            extra += f" id={self.packet_id()}"
        if self.type == SUBACK:
            extra += f" codes={[hex(c) for c in self.suback_codes()]}"
        return f"{self.name()}{extra}"


def read_vbi(buf, i):
    """(value, index after it) or raises IndexError/ValueError."""
    mult, value = 1, 0
    for n in range(4):
        b = buf[i + n]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, i + n + 1
        mult *= 128
    raise ValueError("variable byte integer longer than 4 bytes")


PROP_KIND = {0x01: "b", 0x02: "4", 0x03: "s", 0x08: "s", 0x09: "d", 0x0B: "v", 0x11: "4",
             0x12: "s", 0x13: "2", 0x15: "s", 0x16: "d", 0x17: "b", 0x18: "4", 0x19: "b",
             0x1A: "s", 0x1C: "s", 0x1F: "s", 0x21: "2", 0x22: "2", 0x23: "2", 0x24: "b",
             0x25: "b", 0x26: "p", 0x27: "4", 0x28: "b", 0x29: "b", 0x2A: "b"}


def parse_props(buf, i):
    length, i = read_vbi(buf, i)
    end = i + length
    out = {}
    while i < end:
        pid = buf[i]
        i += 1
        kind = PROP_KIND.get(pid)
        if kind == "b":
            v = buf[i]
            i += 1
        elif kind == "2":
            v = struct.unpack(">H", buf[i:i + 2])[0]
            i += 2
        elif kind == "4":
            v = struct.unpack(">I", buf[i:i + 4])[0]
            i += 4
        elif kind == "v":
            v, i = read_vbi(buf, i)
        elif kind in ("s", "d"):
            n = struct.unpack(">H", buf[i:i + 2])[0]
            v = bytes(buf[i + 2:i + 2 + n])
            i += 2 + n
        elif kind == "p":
            n = struct.unpack(">H", buf[i:i + 2])[0]
            k = bytes(buf[i + 2:i + 2 + n])
            i += 2 + n
            m = struct.unpack(">H", buf[i:i + 2])[0]
            v = (k, bytes(buf[i + 2:i + 2 + m]))
            i += 2 + m
        else:
            raise ValueError(f"unknown property 0x{pid:02X} from the broker")
        out.setdefault(pid, []).append(v)
    return out, end


class Conn:
    """One raw TCP connection to the broker."""

    def __init__(self, env, version=4):
        self.version = version
        self.buf = bytearray()
        self.closed = False
        self.sock = socket.create_connection((env.host, env.port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data):
        """Sends bytes; False if the broker already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def recv(self, timeout=TIMEOUT):
        """The next packet, "closed", or "timeout"."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._parse()
            if got is not None:
                return got
            if self.closed:
                return "closed"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return "timeout"
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
            else:
                self.buf += chunk

    def _parse(self):
        if len(self.buf) < 2:
            return None
        try:
            length, i = read_vbi(self.buf, 1)
        except IndexError:
            return None
        if len(self.buf) < i + length:
            return None
        p = Pkt(self.buf[0], bytes(self.buf[i:i + length]), self.version)
        del self.buf[:i + length]
        return p

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def do_connect(env, version=4, **kw):
    """Opens a connection and completes a valid CONNECT; returns (conn, connack)."""
    c = Conn(env, version)
    c.send(connect_pkt(version, **kw))
    p = c.recv()
    if not isinstance(p, Pkt) or p.type != CONNACK or p.reason() != 0:
        c.close()
        raise Setup(f"valid CONNECT (MQTT {version}) not accepted: got {p!r}")
    return c, p


class Setup(Exception):
    """The case could not be set up (reported as a failure)."""


class Skip(Exception):
    """The case does not apply to this broker (a limit it does not announce); not a failure."""


def ping_barrier(c, allow=lambda p: False, timeout=TIMEOUT):
    """Sends PINGREQ and collects packets until PINGRESP: (ok, packets, what ended it)."""
    if not c.send(PINGREQ_PKT):
        return False, [], "closed (the PINGREQ could not be sent)"
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        p = c.recv(max(0.0, deadline - time.monotonic()))
        if not isinstance(p, Pkt):
            return False, seen, p
        if p.type == PINGRESP:
            return True, seen, "PINGRESP"
        seen.append(p)


# ------------------------------------------------------------------------------------------
# Expectations


class Expect:
    """What the specification allows the broker to do with a case's bytes.

    kind: "close"    the broker closes the connection;
          "continue" the session continues (a PINGREQ gets its PINGRESP);
          "either"   the specification allows both.
    connack: CONNACK codes allowed before the close (None: no CONNACK allowed);
    need_connack: a CONNACK (with a code from `connack`) is required;
    disconnect: MQTT 5 DISCONNECT reason codes allowed before the close (None: none allowed);
    allow: predicate for other packets allowed before the close / the PINGRESP;
    check: extra check on a continuing session, (conn, packets) -> error text or None.
    """

    def __init__(self, kind, connack=None, need_connack=False, disconnect=None,
                 allow=None, check=None):
        self.kind = kind
        self.connack = connack
        self.need_connack = need_connack
        self.disconnect = disconnect
        self.allow = allow or (lambda p: False)
        self.check = check

    def describe(self):
        parts = []
        if self.kind in ("close", "either"):
            d = "close"
            if self.connack is not None:
                codes = "/".join(f"0x{c:02X}" for c in sorted(self.connack))
                d = (f"CONNACK {codes} then close" if self.need_connack
                     else f"close (optionally after CONNACK {codes})")
            elif self.disconnect is not None:
                codes = "/".join(f"0x{c:02X}" for c in sorted(self.disconnect))
                d = f"close (optionally after DISCONNECT {codes})"
            else:
                d = "close without any answer"
            parts.append(d)
        if self.kind in ("continue", "either"):
            parts.append("the session continues")
        return " or ".join(parts)


def close_v4():
    return Expect("close")


def close_v5(*codes):
    return Expect("close", disconnect=frozenset(codes) if codes else MALFORMED)


def close_connect_v5(*codes):
    return Expect("close", connack=frozenset(codes) if codes else MALFORMED)


def cont(allow=None, check=None):
    return Expect("continue", allow=allow, check=check)


def evaluate(c, exp):
    """Checks what the broker does next on `c` against `exp`: None if allowed, else
    "expected ..., got ..."."""
    err = _evaluate(c, exp)
    return None if err is None else f"expected {exp.describe()}, got {err}"


def _evaluate(c, exp):
    got = []
    connack_seen = None

    def packet_ok(p):
        nonlocal connack_seen
        if p.type == CONNACK and exp.connack is not None:
            connack_seen = p.reason()
            return p.reason() in exp.connack
        if p.type == DISCONNECT and c.version == 5 and exp.disconnect is not None:
            return p.reason() in exp.disconnect
        return exp.allow(p)

    if exp.kind == "close":
        deadline = time.monotonic() + TIMEOUT
        while True:
            p = c.recv(max(0.0, deadline - time.monotonic()))
            if p == "closed":
                if exp.need_connack and connack_seen is None:
                    return f"closed without the required CONNACK (after {got})"
                return None
            if p == "timeout":
                return f"connection still open after {TIMEOUT:.0f}s (received {got})"
            got.append(p)
            if not packet_ok(p):
                return f"{p!r} (received {got})"
    # continue / either
    ok, seen, end = ping_barrier(c, allow=exp.allow)
    for p in seen:
        if not packet_ok(p):
            return f"{p!r} before the PINGRESP (received {seen})"
    if not ok:
        if exp.kind == "either" and end == "closed":
            return None
        if end == "closed" and seen and seen[-1].type == DISCONNECT:
            return f"DISCONNECT 0x{seen[-1].reason():02X} and close (received {seen})"
        return f"{end} instead of PINGRESP (received {seen})"
    if exp.check is not None:
        return exp.check(c, seen)
    return None


# ------------------------------------------------------------------------------------------
# Cases


class Case:
    """One audit case: a name, the statement it checks, and a function returning None (pass)
    or the observed deviation."""

    def __init__(self, name, statement, fn):
        self.name = name
        self.statement = statement
        self.fn = fn


CASES = []


def case(name, statement):
    def wrap(fn):
        CASES.append(Case(name, statement, fn))
        return fn
    return wrap


def table(name, statement, version, data, exp, connect_kw=None, will=False):
    """A table case: optional valid CONNECT (version 3/4/5, or None: no CONNECT), then
    `data` (bytes or a function of env -> bytes), then `exp`. With will=True the CONNECT
    carries a will that must be published after the close."""

    def run(env):
        watcher = None
        will_topic = None
        kw = dict(connect_kw or {})
        if will:
            will_topic = new_id("will/")
            watcher = Watcher(env, will_topic)
            kw["will"] = (will_topic, b"will-" + will_topic.encode(), 0, False)
        try:
            if version is None:
                c = Conn(env, 4)
            else:
                c, _ = do_connect(env, version, **kw)
            try:
                payload = data(env) if callable(data) else data
                if isinstance(payload, (bytes, bytearray)):
                    payload = [payload]
                for chunk in payload:
                    if not c.send(chunk):
                        break
                err = evaluate(c, exp)
            finally:
                c.close()
            if err is None and watcher is not None:
                if not watcher.wait_for(will_topic):
                    err = ("connection closed but the will message was not published "
                           "(a close for a protocol error is not a normal DISCONNECT)")
            return err
        finally:
            if watcher is not None:
                watcher.close()

    CASES.append(Case(name, statement, run))


class Watcher:
    """A 3.1.1 subscriber (QoS 0) to one topic, in its own thread of control (polled)."""

    def __init__(self, env, topic, version=4):
        self.c, _ = do_connect(env, version)
        self.c.send(subscribe_pkt(1, [(topic, 0)], version))
        p = self.c.recv()
        if not isinstance(p, Pkt) or p.type != SUBACK:
            raise Setup(f"watcher SUBSCRIBE to {topic} failed: {p!r}")

    def wait_for(self, topic, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            p = self.c.recv(max(0.0, deadline - time.monotonic()))
            if not isinstance(p, Pkt):
                return None
            if p.type == PUBLISH and p.publish_fields()[0] == topic.encode():
                return p

    def wait_for_any(self, timeout=TIMEOUT):
        """The next PUBLISH, or None."""
        deadline = time.monotonic() + timeout
        while True:
            p = self.c.recv(max(0.0, deadline - time.monotonic()))
            if not isinstance(p, Pkt):
                return None
            if p.type == PUBLISH:
                return p

    def close(self):
        self.c.send(disconnect_pkt())
        self.c.close()


def s311(n, text=""):
    return f"[MQTT-{n}]" + (f" {text}" if text else "")


# ---- fixed-header flags ----------------------------------------------------------------------

FLAGS_311 = s311("2.2.2-2", "If invalid flags are received, the receiver MUST close the "
                 "Network Connection")
FLAGS_5 = ("[MQTT-2.1.3-1] reserved flag bits MUST be set to the listed value; otherwise "
           "Malformed Packet (5.0 2.1.3) -> [MQTT-4.13.1-1] close")

for label, first, body in [
    ("PUBACK flags 0010", 0x42, u16(1)),
    ("PUBREC flags 0001", 0x51, u16(1)),
    ("PUBREL flags 0000", 0x60, u16(1)),
    ("PUBREL flags 0011", 0x63, u16(1)),
    ("PUBCOMP flags 1000", 0x78, u16(1)),
    ("SUBSCRIBE flags 0000", 0x80, u16(1) + s("a/b") + b"\x00"),
    ("SUBSCRIBE flags 1010", 0x8A, u16(1) + s("a/b") + b"\x00"),
    ("UNSUBSCRIBE flags 0000", 0xA0, u16(1) + s("a/b")),
    ("PINGREQ flags 0100", 0xC4, b""),
    ("DISCONNECT flags 0010", 0xE2, b""),
]:
    table(f"3.1.1 {label}", FLAGS_311, 4, packet(first, body), close_v4())

table("3.1.1 DISCONNECT flags 0001 publishes the will", s311(
    "3.14.1-1", "The Server MUST validate that reserved bits are set to zero and disconnect "
    "the Client if they are not zero") + " + [MQTT-3.1.2-8] will published unless a DISCONNECT",
    4, b"\xe1\x00", close_v4(), will=True)
table("3.1.1 CONNECT flags 0001 as first packet", FLAGS_311 + "; " + s311(
    "3.1.4-1", "close the Network Connection without sending a CONNACK"),
    None, connect_pkt(4, header=0x11), close_v4())

for label, first, body in [
    ("PUBACK flags 0001", 0x41, u16(1)),
    ("PUBREL flags 0000", 0x60, u16(1)),
    ("SUBSCRIBE flags 0011", 0x83, u16(1) + b"\x00" + s("a/b") + b"\x00"),
    ("UNSUBSCRIBE flags 0000", 0xA0, u16(1) + b"\x00" + s("a/b")),
    ("PINGREQ flags 0001", 0xC1, b""),
    ("AUTH flags 0010", 0xF2, b"\x00"),
]:
    table(f"5.0 {label}", FLAGS_5, 5, packet(first, body), close_v5())
table("5.0 DISCONNECT flags 1000 publishes the will", FLAGS_5 + "; [MQTT-3.1.2-8] the "
      "will is published unless deleted on receipt of a DISCONNECT with Reason Code 0x00", 5,
      b"\xe8\x00", close_v5(), will=True)
table("5.0 CONNECT flags 0100 as first packet", FLAGS_5 + "; [MQTT-3.1.4-1] close (CONNACK "
      ">= 0x80 optional)", None, connect_pkt(5, header=0x14), close_connect_v5())

# ---- remaining length ------------------------------------------------------------------------

RL5 = ("5.0 1.5.5 / 3.1.1 2.2.3: the Remaining Length is at most 4 bytes; a longer one is "
       "malformed -> [MQTT-4.8.0-1]/[MQTT-4.13.1-1] close")
FIVE = b"\xff\xff\xff\xff\x7f"
table("3.1.1 CONNECT remaining length of 5 bytes", RL5, None, b"\x10" + FIVE + b"\x00" * 16,
      close_v4())
for label, first in [("PUBLISH", 0x30), ("SUBSCRIBE", 0x82), ("UNSUBSCRIBE", 0xA2),
                     ("PUBACK", 0x40), ("PINGREQ", 0xC0)]:
    table(f"3.1.1 {label} remaining length of 5 bytes", RL5, 4,
          bytes([first]) + FIVE + b"\x00" * 16, close_v4())
table("5.0 PUBLISH remaining length of 5 bytes", RL5, 5, b"\x30" + FIVE + b"\x00" * 16,
      close_v5(0x81, 0x82, 0x95))
table("5.0 PUBLISH remaining length 0x80 0x80 0x80 0x80 0x00", RL5, 5,
      b"\x30\x80\x80\x80\x80\x00", close_v5(0x81, 0x82, 0x95))


def truncated(pkt_bytes):
    """The packet with its last byte dropped and the Remaining Length reduced to match
    (single-byte Remaining Length only)."""
    assert pkt_bytes[1] < 128
    return bytes([pkt_bytes[0], pkt_bytes[1] - 1]) + pkt_bytes[2:-1]


def padded(pkt_bytes, extra=b"\x00"):
    """The packet with `extra` appended inside its Remaining Length."""
    assert pkt_bytes[1] + len(extra) < 128
    return bytes([pkt_bytes[0], pkt_bytes[1] + len(extra)]) + pkt_bytes[2:] + extra


SHORT = ("Remaining Length too short for the packet's fields: malformed -> "
         "[MQTT-4.8.0-1] close (5.0: [MQTT-4.13.1-1])")
LONG = ("Remaining Length covers bytes the packet cannot contain: malformed -> "
        "[MQTT-4.8.0-1] close (5.0: [MQTT-4.13.1-1])")
table("3.1.1 CONNECT too short (client id cut)", SHORT + "; " + s311("3.1.4-1", "no CONNACK"),
      None, truncated(connect_pkt(4, cid="short-cid")), close_v4())
table("3.1.1 CONNECT too long (trailing byte)", LONG + "; " + s311("3.1.4-1", "no CONNACK"),
      None, connect_pkt(4, extra=b"\x00"), close_v4())
table("3.1.1 PUBLISH too short (topic cut)", SHORT, 4, truncated(publish_pkt("a/b")),
      close_v4())
table("3.1.1 PUBLISH QoS 1 too short (packet id cut)", SHORT, 4,
      truncated(publish_pkt("a/b", qos=1, pid=7)), close_v4())
table("3.1.1 SUBSCRIBE too short (QoS byte missing)", SHORT, 4,
      truncated(subscribe_pkt(3, [("a/b", 0)])), close_v4())
table("3.1.1 SUBSCRIBE too long (dangling byte)", LONG, 4,
      padded(subscribe_pkt(3, [("a/b", 0)])), close_v4())
table("3.1.1 UNSUBSCRIBE too short (filter cut)", SHORT, 4,
      truncated(unsubscribe_pkt(3, ["a/b"])), close_v4())
table("3.1.1 UNSUBSCRIBE too long (dangling byte)", LONG, 4,
      padded(unsubscribe_pkt(3, ["a/b"])), close_v4())
for t in (PUBACK, PUBREC, PUBREL, PUBCOMP):
    table(f"3.1.1 {TYPE_NAMES[t]} too short (1 byte)", SHORT, 4, truncated(ack_pkt(t, 9)),
          close_v4())
    table(f"3.1.1 {TYPE_NAMES[t]} too long (3 bytes)", LONG + "; 3.1.1: its Remaining Length "
          "is 2", 4, padded(ack_pkt(t, 9)), close_v4())
table("3.1.1 PUBACK empty", SHORT, 4, b"\x40\x00", close_v4())
table("3.1.1 PINGREQ with a payload byte", LONG + "; 3.1.1 3.12: PINGREQ has no variable "
      "header and no payload", 4, b"\xc0\x01\x00", close_v4())
table("3.1.1 DISCONNECT with a payload byte publishes the will", LONG + "; 3.14: DISCONNECT "
      "has no payload; a malformed DISCONNECT is not a DISCONNECT ([MQTT-3.1.2-8])", 4,
      b"\xe0\x01\x00", close_v4(), will=True)
table("5.0 CONNECT too long (trailing byte)", LONG + "; [MQTT-3.1.4-1]", None,
      connect_pkt(5, extra=b"\x00"), close_connect_v5())
table("5.0 PUBLISH too short (property length cut)", SHORT, 5,
      truncated(publish_pkt("a/b", version=5)), close_v5())
table("5.0 SUBSCRIBE too short (options byte missing)", SHORT, 5,
      truncated(subscribe_pkt(3, [("a/b", 0)], version=5)), close_v5())
table("5.0 PUBACK too short (1 byte)", SHORT, 5, b"\x40\x01\x00", close_v5())
table("5.0 PINGREQ with a payload byte", LONG, 5, b"\xc0\x01\x00", close_v5())
table("5.0 PUBACK with reason code and no properties (length 3) for an unknown id",
      "5.0 3.4.2.1: PUBACK may carry a Reason Code and omit the Property Length; an unknown "
      "id is no error: the session continues", 5, ack_pkt(PUBACK, 77, 5, 0x00), cont())
table("5.0 PUBACK with empty properties (length 4)", "5.0 3.4.2.2", 5,
      packet(0x40, u16(78) + b"\x00\x00"), cont())

# ---- packets before CONNECT, second CONNECT --------------------------------------------------

BEFORE = s311("3.1.0-1", "the first Packet sent from the Client to the Server MUST be a "
              "CONNECT Packet") + " -> [MQTT-4.8.0-1] close"
for label, data in [
    ("PUBLISH", publish_pkt("a/b", b"x")),
    ("PUBLISH QoS 1", publish_pkt("a/b", b"x", qos=1, pid=1)),
    ("SUBSCRIBE", subscribe_pkt(1, [("a/#", 1)])),
    ("UNSUBSCRIBE", unsubscribe_pkt(1, ["a/#"])),
    ("PINGREQ", PINGREQ_PKT),
    ("PUBREL", ack_pkt(PUBREL, 1)),
    ("AUTH (5.0 layout)", packet(0xF0, b"\x18\x00")),
]:
    table(f"{label} before CONNECT", BEFORE, None, data, close_v4())

SECOND = s311("3.1.0-2", "The Server MUST process a second CONNECT Packet sent from a Client "
              "as a protocol violation and disconnect the Client")
table("3.1.1 second CONNECT publishes the will", SECOND, 4,
      lambda env: connect_pkt(4), close_v4(), will=True)
table("3.1 second CONNECT", SECOND, 3, lambda env: connect_pkt(3), close_v4())
table("5.0 second CONNECT", SECOND + " (5.0: Protocol Error)", 5,
      lambda env: connect_pkt(5), close_v5(0x82))

# ---- protocol name / level -------------------------------------------------------------------

LEVEL = s311("3.1.2-2", "The Server MUST respond to the CONNECT Packet with a CONNACK return "
             "code 0x01 (unacceptable protocol level) and then disconnect the Client if the "
             "Protocol Level is not supported") + " (5.0 [MQTT-3.1.2-2]: 0x84)"
NAME = s311("3.1.2-1", "If the protocol name is incorrect the Server MAY disconnect the "
            "Client, or ... MUST NOT continue to process the CONNECT packet in line with this "
            "specification")
for lvl in (0, 2, 6, 255):
    table(f"CONNECT 'MQTT' level {lvl}", LEVEL, None, connect_pkt(4, level=lvl),
          Expect("close", connack=frozenset({0x01, 0x84}), need_connack=True))
for label, name, lvl in [("'MQTT' with level 3", b"MQTT", 3),
                         ("'MQIsdp' with level 4", b"MQIsdp", 4),
                         ("'MQIsdp' with level 5", b"MQIsdp", 5),
                         ("'mqtt' (lower case)", b"mqtt", 4),
                         ("'MQTX'", b"MQTX", 4),
                         ("empty protocol name", b"", 4)]:
    table(f"CONNECT {label}", NAME + "; " + LEVEL, None, connect_pkt(4, name=name, level=lvl),
          Expect("close", connack=frozenset({0x01, 0x84})))
table("CONNECT protocol name with invalid UTF-8", NAME + "; [MQTT-1.5.3-1]", None,
      connect_pkt(4, name=b"MQ\xffT"), Expect("close", connack=frozenset({0x01, 0x84})))

# ---- CONNECT flags ---------------------------------------------------------------------------

NOCONNACK = s311("3.1.4-1", "close the Network Connection without sending a CONNACK if it "
                 "does not conform")
table("3.1.1 CONNECT reserved flag set", s311(
    "3.1.2-3", "The Server MUST validate that the reserved flag in the CONNECT Control Packet "
    "is set to zero and disconnect the Client if it is not zero"), None,
    connect_pkt(4, flags_or=0x01), close_v4())
table("5.0 CONNECT reserved flag set", "[MQTT-3.1.2-3] reserved flag not 0: Malformed Packet",
      None, connect_pkt(5, flags_or=0x01), close_connect_v5())
table("3.1.1 will QoS 1 without will flag", s311(
    "3.1.2-13", "If the Will Flag is set to 0, then the Will QoS MUST be set to 0") + "; "
    + NOCONNACK, None, connect_pkt(4, flags_or=0x08), close_v4())
table("3.1.1 will retain without will flag", s311(
    "3.1.2-15", "If the Will Flag is set to 0, then the Will Retain Flag MUST be set to 0")
    + "; " + NOCONNACK, None, connect_pkt(4, flags_or=0x20), close_v4())
table("3.1.1 will QoS 3", s311("3.1.2-14", "[Will QoS] MUST NOT be 3") + "; " + NOCONNACK,
      None, connect_pkt(4, will=("w/t", b"m", 3, False)), close_v4())
table("3.1.1 will flag without will topic and message", NOCONNACK + " (payload ends after "
      "the client id)", None, connect_pkt(4, flags_or=0x04), close_v4())
table("3.1.1 password flag without user name flag", s311(
    "3.1.2-22", "If the User Name Flag is set to 0, the Password Flag MUST be set to 0") + "; "
    + NOCONNACK, None, connect_pkt(4, pw=b"secret"), close_v4())
table("3.1.1 user name flag without a user name", s311(
    "3.1.2-19", "If the User Name Flag is set to 1, a user name MUST be present in the "
    "payload") + "; " + NOCONNACK, None, connect_pkt(4, flags_or=0x80), close_v4())
table("3.1.1 will topic with a wildcard", s311("3.3.2-2") + " (the Will Topic is a Topic "
      "Name); " + NOCONNACK, None, connect_pkt(4, will=("w/#", b"m", 0, False)), close_v4())
table("3.1.1 empty will topic", s311("4.7.3-1", "All Topic Names and Topic Filters MUST be at "
      "least one character long") + "; " + NOCONNACK, None,
      connect_pkt(4, will=("", b"m", 0, False)), close_v4())
table("5.0 will topic with a wildcard", "[MQTT-4.7.0-1] wildcards MUST NOT be used within a "
      "Topic Name; [MQTT-3.1.4-1] close (CONNACK 0x81/0x82/0x90 optional)", None,
      connect_pkt(5, will=("w/+", b"m", 0, False)), close_connect_v5(0x81, 0x82, 0x90))
table("3.1 will QoS 3", "MQTT 3.1 / [MQTT-3.1.2-14]", None,
      connect_pkt(3, will=("w/t", b"m", 3, False)), close_v4())
table("5.0 will QoS 2 without will flag", "[MQTT-3.1.2-11] If the Will Flag is set to 0, "
      "then the Will QoS MUST be set to 0: Malformed Packet", None,
      connect_pkt(5, flags_or=0x10), close_connect_v5())
table("5.0 will QoS 3", "[MQTT-3.1.2-12] If the Will Flag is set to 1, "
      "the value of Will QoS can be 0, 1, or 2; a value of 3 is a Malformed Packet", None,
      connect_pkt(5, will=("w/t", b"m", 3, False)), close_connect_v5())
table("5.0 will retain without will flag", "[MQTT-3.1.2-13] If the Will Flag is set to 0, "
      "then Will Retain MUST be set to 0: Malformed Packet", None, connect_pkt(5, flags_or=0x20),
      close_connect_v5())


@case("5.0 password without user name is legal", "5.0 3.1.2.9: this version allows a "
      "Password with no User Name (3.1.1 did not): a CONNACK must answer")
def _(env):
    c = Conn(env, 5)
    c.send(connect_pkt(5, pw=b"pw"))
    p = c.recv()
    c.close()
    if isinstance(p, Pkt) and p.type == CONNACK:
        return None
    return f"expected a CONNACK (any code), got {p!r}"


# ---- client identifiers ----------------------------------------------------------------------

table("3.1.1 zero-length client id with clean session 0",
      s311("3.1.3-8", "If the Client supplies a zero-byte ClientId with CleanSession set to 0, "
           "the Server MUST respond to the CONNECT Packet with a CONNACK return code 0x02 "
           "(Identifier rejected) and then close the Network Connection"), None,
      connect_pkt(4, cid=b"", clean=False),
      Expect("close", connack=frozenset({0x02}), need_connack=True))


def connack_case(name, statement, version, pkt, ok_codes, then_continue=True, check=None):
    """A CONNECT whose CONNACK code must be in ok_codes (0 = accepted: the session then
    continues; another code: the connection then closes)."""

    def run(env):
        c = Conn(env, version)
        try:
            c.send(pkt(env) if callable(pkt) else pkt)
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != CONNACK:
                return f"expected CONNACK {sorted(ok_codes)}, got {p!r}"
            if p.reason() not in ok_codes:
                return f"expected CONNACK {sorted(ok_codes)}, got {p!r}"
            if p.reason() == 0:
                if check is not None:
                    err = check(p)
                    if err:
                        return err
                return evaluate(c, cont()) if then_continue else None
            return evaluate(c, Expect("close"))
        finally:
            c.close()

    CASES.append(Case(name, statement, run))


connack_case("3.1.1 zero-length client id with clean session 1", s311(
    "3.1.3-6", "A Server MAY allow a Client to supply a ClientId that has a length of zero "
    "bytes ... MUST treat this as a special case and assign a unique ClientId") + " (or "
    "CONNACK 0x02 [MQTT-3.1.3-9])", 4, connect_pkt(4, cid=b"", clean=True), {0x00, 0x02})


def assigned_id(p):
    if 0x12 not in p.connack_props():
        return "CONNACK 0x00 without an Assigned Client Identifier [MQTT-3.2.2-16]"
    return None


connack_case("5.0 zero-length client id with clean start 0", "[MQTT-3.1.3-6]/[MQTT-3.2.2-16] "
             "the Server assigns a ClientID and returns it in Assigned Client Identifier (or "
             "CONNACK 0x85 [MQTT-3.1.3-8])", 5, connect_pkt(5, cid=b"", clean=False),
             {0x00, 0x85}, check=assigned_id)
connack_case("3.1.1 client id of 200 characters", s311(
    "3.1.3-5", "The Server MAY allow ClientId's that contain more than 23 encoded bytes") +
    " (else CONNACK 0x02)", 4, lambda env: connect_pkt(4, cid=new_id("long-") + "x" * 180),
    {0x00, 0x02})
connack_case("3.1.1 client id with '/', '+', '#', spaces", s311(
    "3.1.3-5", "The Server MAY allow ... characters not included in the list") +
    " (else CONNACK 0x02)", 4, lambda env: connect_pkt(4, cid=new_id("a/+#") + " x"),
    {0x00, 0x02})
connack_case("3.1.1 binary password that is not UTF-8", "3.1.3.5: the Password is binary "
             "data; a CONNACK must answer (0x00, or 0x04/0x05 if the server refuses it)", 4,
             lambda env: connect_pkt(4, user="u", pw=b"\xff\xfe\x00\x80"), {0x00, 0x04, 0x05})
connack_case("3.1.1 will payload that is not UTF-8", "3.1.3.3: the Will Message is binary "
             "data", 4, connect_pkt(4, will=("w/binary", b"\xff\x00\xfe", 1, False)), {0x00})
connack_case("5.0 Request Problem Information 0 is legal", "5.0 3.1.2.11.7: value 0 or 1",
             5, connect_pkt(5, cprops=p_byte(0x17, 0)), {0x00})

# ---- ill-formed UTF-8 in every string field --------------------------------------------------

UTF = s311("1.5.3-1", "The character data in a UTF-8 encoded string MUST be well-formed ... "
           "MUST NOT include encodings of code points between U+D800 and U+DFFF. If a Server "
           "or Client receives a Control Packet containing ill-formed UTF-8 it MUST close the "
           "Network Connection")
NUL = s311("1.5.3-2", "A UTF-8 encoded string MUST NOT include an encoding of the null "
           "character U+0000. If a receiver (Server or Client) receives a Control Packet "
           "containing U+0000 it MUST close the Network Connection")


def utf_statement(label):
    return NUL if label == "U+0000" else UTF


for label, bad in BAD_UTF8.items():
    st = utf_statement(label)
    table(f"3.1.1 client id with {label}", st + "; " + NOCONNACK, None,
          connect_pkt(4, cid=b"cid" + bad + b"x"), close_v4())
    table(f"3.1.1 PUBLISH topic with {label}", st, 4, publish_pkt(b"a/" + bad + b"/b", b"x"),
          close_v4())
    table(f"3.1.1 SUBSCRIBE filter with {label}", st, 4,
          subscribe_pkt(2, [(b"f/" + bad, 0)]), close_v4())
for label in ("0xFF", "U+0000", "surrogate U+D800"):
    bad = BAD_UTF8[label]
    st = utf_statement(label)
    table(f"3.1.1 will topic with {label}", st + "; " + NOCONNACK, None,
          connect_pkt(4, will=(b"w/" + bad, b"m", 0, False)), close_v4())
    table(f"3.1.1 user name with {label}", st + "; " + NOCONNACK, None,
          connect_pkt(4, user=b"u" + bad), close_v4())
    table(f"3.1.1 UNSUBSCRIBE filter with {label}", st, 4,
          unsubscribe_pkt(2, [b"f/" + bad]), close_v4())
table("3.1.1 PUBLISH QoS 1 topic with U+0000 (no PUBACK)", NUL, 4,
      publish_pkt(b"a\x00b", b"x", qos=1, pid=5), close_v4())
table("3.1 PUBLISH topic with 0xFF", UTF + " (MQTT 3.1 strings are UTF-8 too)", 3,
      publish_pkt(b"a\xff", b"x"), close_v4())

table("5.0 client id with 0xFF", UTF + " (5.0 [MQTT-1.5.4-1])", None,
      connect_pkt(5, cid=b"c\xff"), close_connect_v5(0x81, 0x82, 0x85))
table("5.0 will topic with U+0000", NUL + " (5.0 [MQTT-1.5.4-2])", None,
      connect_pkt(5, will=(b"w\x00", b"m", 0, False)), close_connect_v5())
table("5.0 user name with a surrogate", UTF + " (5.0 [MQTT-1.5.4-1])", None,
      connect_pkt(5, user=b"u\xed\xbf\xbf"), close_connect_v5())
table("5.0 CONNECT user property key with 0xFF", UTF + " (5.0 [MQTT-1.5.4-1], UTF-8 String "
      "Pair 1.5.7)", None, connect_pkt(5, cprops=p_pair(b"k\xff", b"v")), close_connect_v5())
table("5.0 CONNECT Authentication Method with U+0000", NUL + " (5.0 [MQTT-1.5.4-2])", None,
      connect_pkt(5, cprops=p_str(0x15, b"m\x00")), close_connect_v5(0x81, 0x82, 0x8C))
table("5.0 will Content Type with a surrogate", UTF + " (5.0 [MQTT-1.5.4-1])", None,
      connect_pkt(5, will=("w/ct", b"m", 0, False, p_str(0x03, b"t\xed\xa0\x80"))),
      close_connect_v5())
table("5.0 PUBLISH topic with 0xFF", UTF + " (5.0 [MQTT-1.5.4-1])", 5,
      publish_pkt(b"a\xff", b"x", version=5), close_v5())
table("5.0 PUBLISH topic with U+0000", NUL + " (5.0 [MQTT-1.5.4-2])", 5,
      publish_pkt(b"a\x00", b"x", qos=1, pid=3, version=5), close_v5())
table("5.0 PUBLISH Content Type with 0xFF", UTF, 5,
      publish_pkt("a/ct", b"x", version=5, pprops=props(p_str(0x03, b"\xff"))), close_v5())
table("5.0 PUBLISH Response Topic with U+0000", NUL, 5,
      publish_pkt("a/rt", b"x", version=5, pprops=props(p_str(0x08, b"r\x00"))), close_v5())
table("5.0 PUBLISH user property key with a surrogate", UTF, 5,
      publish_pkt("a/up", b"x", version=5, pprops=props(p_pair(b"\xed\xa0\x80", b"v"))),
      close_v5())
table("5.0 PUBLISH user property value with an overlong encoding", UTF, 5,
      publish_pkt("a/up", b"x", version=5, pprops=props(p_pair(b"k", b"\xc0\xaf"))),
      close_v5())
table("5.0 SUBSCRIBE filter with U+0000", NUL, 5,
      subscribe_pkt(4, [(b"f\x00", 0)], version=5), close_v5())
table("5.0 SUBSCRIBE user property with 0xFF", UTF, 5,
      subscribe_pkt(4, [("f/ok", 0)], version=5, sprops=props(p_pair(b"k", b"\xff"))),
      close_v5())
table("5.0 UNSUBSCRIBE filter with 0xFF", UTF, 5, unsubscribe_pkt(4, [b"f\xff"], version=5),
      close_v5())
table("5.0 DISCONNECT Reason String with 0xFF publishes the will", UTF + "; an invalid "
      "DISCONNECT does not delete the will", 5,
      disconnect_pkt(5, 0x00, props(p_str(0x1F, b"\xff"))), close_v5(), will=True)

# ---- odd but legal strings -------------------------------------------------------------------


def roundtrip(name, statement, version, topic, payload=b"p", sub_filter=None, pprops=None,
              expect_props=None):
    """Subscribes to `sub_filter` (default: the topic), publishes `topic`, and requires the
    message back unchanged: the session continues."""

    def run(env):
        c, _ = do_connect(env, version)
        try:
            t = topic(env) if callable(topic) else topic
            f = sub_filter(t) if callable(sub_filter) else (sub_filter or t)
            c.send(subscribe_pkt(1, [(f, 0)], version))
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != SUBACK or p.suback_codes() != [0]:
                return f"SUBSCRIBE {f!r}: expected SUBACK [0x00], got {p!r}"
            c.send(publish_pkt(t, payload, version=version, pprops=pprops))
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != PUBLISH:
                return f"expected the PUBLISH back, got {p!r}"
            got_topic, _, _, pr, got_payload = p.publish_fields()
            want = t if isinstance(t, bytes) else t.encode()
            if got_topic != want or got_payload != payload:
                return (f"expected topic {want[:60]!r} payload {payload[:40]!r} unchanged, "
                        f"got {got_topic[:60]!r} {got_payload[:40]!r}")
            if expect_props is not None:
                err = expect_props(pr)
                if err:
                    return err
            return evaluate(c, cont())
        finally:
            c.close()

    CASES.append(Case(name, statement, run))


roundtrip("3.1.1 BOM (U+FEFF) in a topic is kept", s311(
    "1.5.3-3", "A UTF-8 encoded sequence 0xEF 0xBB 0xBF is always to be interpreted to mean "
    "U+FEFF ... MUST NOT be skipped over or stripped off by a packet receiver"), 4,
    lambda env: b"\xef\xbb\xbf" + new_id("bom/").encode())
roundtrip("3.1.1 4-byte UTF-8 (U+1F600) in a topic", "1.5.3: well-formed UTF-8 is legal",
          4, lambda env: new_id("emoji/").encode() + "/\U0001F600".encode())
roundtrip("3.1.1 empty payload is delivered", "3.3.3: a zero length payload is valid", 4,
          lambda env: new_id("empty/"), payload=b"")
roundtrip("3.1.1 empty levels ('//x//')", "4.7.1.1: adjacent separators are zero-length "
          "levels; topics are valid", 4, lambda env: new_id("lvl/") + "//x//")
roundtrip("3.1.1 '$' inside a topic, spaces", "4.7: '$' is special only at the start; "
          "spaces are valid", 4, lambda env: new_id("sp/") + "/a b/c$d")
roundtrip("3.1.1 '+' filter matches an empty level", "4.7.1.3: '+' matches a single level, "
          "which may be empty", 4, lambda env: new_id("plus/") + "//z",
          sub_filter=lambda t: t.rsplit("//", 1)[0] + "/+/z")
roundtrip("3.1 BOM in a topic is kept", "[MQTT-1.5.3-3]", 3,
          lambda env: b"\xef\xbb\xbf" + new_id("bom31/").encode())


def either_topic(label, raw):
    table(f"3.1.1 topic with {label} (MAY close)", "3.1.1 1.5.3: control characters and "
          "non-characters SHOULD NOT be included; a receiver MAY close the Network Connection",
          4, lambda env: publish_pkt(new_id("odd/").encode() + raw, b"x"),
          Expect("either"))


either_topic("U+0001", b"\x01")
either_topic("U+007F", b"\x7f")
either_topic("non-character U+FFFF", b"\xef\xbf\xbf")


def user_props_order(pr):
    want = [(b"k", b"1"), (b"k", b"2"), (b"\xef\xbb\xbfk", b"3")]
    if pr.get(0x26) != want:
        return f"user properties not forwarded unaltered and in order: got {pr.get(0x26)}"
    return None


roundtrip("5.0 repeated user property keys forwarded in order", "[MQTT-3.3.2-17]/"
          "[MQTT-3.3.2-18] the Server MUST send all User Properties unaltered, maintaining "
          "their order (a name may appear more than once)", 5,
          lambda env: new_id("up/"), pprops=props(p_pair("k", "1"), p_pair("k", "2"),
                                                  p_pair(b"\xef\xbb\xbfk", "3")),
          expect_props=user_props_order)

# ---- topic names and filters -----------------------------------------------------------------

WILD = s311("3.3.2-2", "The Topic Name in the PUBLISH Packet MUST NOT contain wildcard "
            "characters") + " -> [MQTT-4.8.0-1] close"
for t in ("a/+", "a/#", "#", "+", "a+b", "sport/ten#"):
    table(f"3.1.1 PUBLISH to '{t}'", WILD, 4, publish_pkt(t, b"x"), close_v4())
table("3.1.1 PUBLISH QoS 1 to 'a/#' (no PUBACK)", WILD, 4, publish_pkt("a/#", b"x", 1, 4),
      close_v4())
table("5.0 PUBLISH to 'a/+'", WILD + " (5.0: Protocol Error; 0x90 Topic Name invalid)", 5,
      publish_pkt("a/+", b"x", version=5), close_v5(0x81, 0x82, 0x90))
table("5.0 PUBLISH QoS 1 to '#'", WILD + " (5.0: Protocol Error; 0x90 Topic Name invalid)", 5,
      publish_pkt("#", b"x", 1, 4, version=5), close_v5(0x81, 0x82, 0x90))
table("3.1.1 PUBLISH with an empty topic", s311("4.7.3-1", "All Topic Names and Topic Filters "
      "MUST be at least one character long"), 4, publish_pkt("", b"x"), close_v4())
table("5.0 PUBLISH with an empty topic and no alias", "5.0 3.3.2.1: It is a Protocol Error "
      "if the Topic Name is zero length and there is no Topic Alias", 5,
      publish_pkt("", b"x", version=5), close_v5())
table("5.0 PUBLISH Response Topic with a wildcard", "[MQTT-3.3.2-14] The Response Topic MUST "
      "NOT contain wildcard characters", 5,
      publish_pkt("a/rt", b"x", version=5, pprops=props(p_str(0x08, "r/#"))), close_v5())

BADF = (s311("4.7.1-2", "The multi-level wildcard character MUST be specified either on its "
             "own or following a topic level separator. In either case it MUST be the last "
             "character") + "; " + s311("4.7.1-3", "The single-level wildcard MUST occupy an "
                                        "entire level") + "; " + s311("4.7.3-1", "at least "
                                                                      "one character"))


def bad_filter(version, f, statement=BADF, opts=0):
    """An invalid filter: SUBACK failure (0x80 / 5.0 0x8F) and the session continues, or a
    close ([MQTT-4.8.0-1] / 5.0 DISCONNECT 0x81/0x82/0x8F)."""
    fail_code = 0x80 if version != 5 else 0x8F

    def run(env):
        c, _ = do_connect(env, version)
        try:
            c.send(subscribe_pkt(6, [(f, opts)], version))
            p = c.recv()
            if p == "closed":
                return None
            if not isinstance(p, Pkt):
                return f"expected SUBACK 0x{fail_code:02X} or close, got {p!r}"
            if p.type == DISCONNECT and version == 5:
                if p.reason() in (0x81, 0x82, 0x8F):
                    return evaluate(c, Expect("close"))
                return f"DISCONNECT with unexpected reason {p!r}"
            if p.type != SUBACK or p.suback_codes() != [fail_code]:
                return f"expected SUBACK [0x{fail_code:02X}] or close, got {p!r}"
            return evaluate(c, cont())
        finally:
            c.close()

    name = f"{'5.0' if version == 5 else '3.1.1'} SUBSCRIBE invalid filter {f!r}"
    if opts:
        name += f" options 0x{opts:02X}"
    CASES.append(Case(name, statement, run))


for f in ("a/#/b", "a+", "#x", "a/b#", "+a/b", "", "a/#/"):
    bad_filter(4, f)
for f in ("a/#/b", "x+/y", "##", ""):
    bad_filter(5, f)
SHARE = ("[MQTT-4.8.2-1] a Shared Subscription's Topic Filter MUST start with $share/ and "
         "MUST contain a ShareName at least one character long; [MQTT-4.8.2-2] The ShareName "
         "MUST NOT contain '/', '+' or '#', but MUST be followed by a '/' ... followed by a "
         "Topic Filter")
for f in ("$share/grp", "$share//a", "$share/g+/a", "$share/g#/a", "$share/g/", "$share/g/a/#/b"):
    bad_filter(5, f, SHARE)
bad_filter(4, "$share/g+/a", BADF + " (also an invalid shared subscription)")
table("5.0 shared subscription with No Local", "[MQTT-3.8.3-4] It is a Protocol Error to set "
      "the No Local bit to 1 on a Shared Subscription", 5,
      subscribe_pkt(5, [("$share/g/nl", 0x04)], 5), close_v5(0x81, 0x82))


def suback_case(name, statement, version, filters, want, allow=None):
    def run(env):
        c, _ = do_connect(env, version)
        try:
            c.send(subscribe_pkt(9, filters, version))
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != SUBACK or p.packet_id() != 9:
                return f"expected SUBACK id 9, got {p!r}"
            if p.suback_codes() != want:
                return f"expected codes {[hex(x) for x in want]}, got {p!r}"
            return evaluate(c, cont(allow=allow))
        finally:
            c.close()

    CASES.append(Case(name, statement, run))


suback_case("3.1.1 SUBSCRIBE '#', '+/+/#', '+' granted", "4.7.1: valid wildcard filters; "
            "[MQTT-3.9.3-1] one return code per filter, in order", 4,
            [("#", 0), ("+/+/#", 1), ("+", 2)], [0, 1, 2],
            # These filters match the other cases' traffic.
            allow=lambda p: p.type == PUBLISH)
suback_case("3.1.1 the same filter twice in one SUBSCRIBE", s311(
    "3.8.4-3", "a Topic Filter identical to an existing Subscription's ... MUST completely "
    "replace") + "; one code per filter", 4, [("dup/f", 0), ("dup/f", 1)], [0, 1])


def unsuback_case(name, statement, version, want_reason):
    def run(env):
        c, _ = do_connect(env, version)
        try:
            c.send(unsubscribe_pkt(12, ["never/subscribed"], version))
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != UNSUBACK or p.packet_id() != 12:
                return f"expected UNSUBACK id 12, got {p!r}"
            if version == 5:
                n, i = read_vbi(p.body, 2)
                codes = list(p.body[i + n:])
                if codes != [want_reason]:
                    return f"expected UNSUBACK reason [0x{want_reason:02X}], got {codes}"
            return evaluate(c, cont())
        finally:
            c.close()

    CASES.append(Case(name, statement, run))


unsuback_case("3.1.1 UNSUBSCRIBE of a filter never subscribed", s311(
    "3.10.4-5", "Even where no Topic Subscriptions are deleted, the Server MUST respond with "
    "an UNSUBACK"), 4, None)
unsuback_case("5.0 UNSUBSCRIBE of a filter never subscribed", "[MQTT-3.10.4-5]; 5.0 3.11.3: "
              "0x11 No subscription existed", 5, 0x11)

# ---- SUBSCRIBE / UNSUBSCRIBE structure, packet ids, QoS, DUP ---------------------------------

table("3.1.1 SUBSCRIBE with no filters", s311(
    "3.8.3-3", "The payload of a SUBSCRIBE packet MUST contain at least one Topic Filter / QoS "
    "pair. A SUBSCRIBE packet with no payload is a protocol violation"), 4,
    packet(0x82, u16(1)), close_v4())
SUBQ = s311("3.8.3-4", "The Server MUST treat a SUBSCRIBE packet as malformed and close the "
            "Network Connection if any of Reserved bits in the payload are non-zero, or QoS is "
            "not 0,1 or 2")
table("3.1.1 SUBSCRIBE with QoS 3", SUBQ, 4, subscribe_pkt(1, [("q/3", 3)]), close_v4())
table("3.1.1 SUBSCRIBE with reserved option bit 2", SUBQ, 4, subscribe_pkt(1, [("q/r", 0x04)]),
      close_v4())
table("3.1.1 SUBSCRIBE with reserved option bit 7", SUBQ, 4, subscribe_pkt(1, [("q/r", 0x81)]),
      close_v4())
table("3.1.1 SUBSCRIBE second filter with QoS 3 (no SUBACK)", SUBQ, 4,
      subscribe_pkt(1, [("q/ok", 0), ("q/bad", 3)]), close_v4())
table("3.1 SUBSCRIBE with QoS 3", SUBQ + " (MQTT 3.1 too)", 3, subscribe_pkt(1, [("q/3", 3)]),
      close_v4())
table("5.0 SUBSCRIBE with no filters", "[MQTT-3.8.3-2] at least one Topic Filter and "
      "Subscription Options pair; none is a Protocol Error", 5, packet(0x82, u16(1) + b"\x00"),
      close_v5())
table("5.0 SUBSCRIBE with QoS 3", "5.0 3.8.3.1: It is a Protocol Error if the Maximum QoS "
      "field has the value 3", 5, subscribe_pkt(1, [("q/3", 3)], 5), close_v5())
table("5.0 SUBSCRIBE with Retain Handling 3", "5.0 3.8.3.1: It is a Protocol Error to send a "
      "Retain Handling value of 3", 5, subscribe_pkt(1, [("q/rh", 0x30)], 5), close_v5())
table("5.0 SUBSCRIBE with reserved option bits 6-7", "[MQTT-3.8.3-5] The Server MUST treat a "
      "SUBSCRIBE packet as malformed if any of Reserved bits in the Payload are non-zero", 5,
      subscribe_pkt(1, [("q/r", 0xC0)], 5), close_v5())
table("3.1.1 UNSUBSCRIBE with no filters", s311(
    "3.10.3-2", "The Payload of an UNSUBSCRIBE packet MUST contain at least one Topic Filter. "
    "An UNSUBSCRIBE packet with no payload is a protocol violation"), 4, packet(0xA2, u16(1)),
    close_v4())
table("5.0 UNSUBSCRIBE with no filters", "[MQTT-3.10.3-2] (5.0): Protocol Error", 5,
      packet(0xA2, u16(1) + b"\x00"), close_v5())

PID0 = s311("2.3.1-1", "SUBSCRIBE, UNSUBSCRIBE, and PUBLISH (in cases where QoS > 0) Control "
            "Packets MUST contain a non-zero 16-bit Packet Identifier")
table("3.1.1 PUBLISH QoS 1 with packet id 0", PID0, 4, publish_pkt("p/0", b"x", 1, 0),
      close_v4())
table("3.1.1 PUBLISH QoS 2 with packet id 0", PID0, 4, publish_pkt("p/0", b"x", 2, 0),
      close_v4())
table("3.1.1 SUBSCRIBE with packet id 0", PID0, 4, subscribe_pkt(0, [("p/0", 0)]), close_v4())
table("3.1.1 UNSUBSCRIBE with packet id 0", PID0, 4, unsubscribe_pkt(0, ["p/0"]), close_v4())
table("5.0 PUBLISH QoS 1 with packet id 0", PID0 + " (5.0 [MQTT-2.2.1-3])", 5,
      publish_pkt("p/0", b"x", 1, 0, version=5), close_v5())
table("5.0 SUBSCRIBE with packet id 0", PID0 + " (5.0 [MQTT-2.2.1-3])", 5,
      subscribe_pkt(0, [("p/0", 0)], 5), close_v5())
table("5.0 UNSUBSCRIBE with packet id 0", PID0 + " (5.0 [MQTT-2.2.1-3])", 5,
      unsubscribe_pkt(0, ["p/0"], 5), close_v5())

QOS3 = s311("3.3.1-4", "A PUBLISH Packet MUST NOT have both QoS bits set to 1. If a Server or "
            "Client receives a PUBLISH Packet which has both QoS bits set to 1 it MUST close "
            "the Network Connection")
table("3.1.1 PUBLISH QoS 3", QOS3, 4, publish_pkt("q/3", b"x", header=0x36, pid=1),
      close_v4())
table("3.1 PUBLISH QoS 3", QOS3, 3, publish_pkt("q/3", b"x", header=0x36, pid=1), close_v4())
table("5.0 PUBLISH QoS 3", QOS3 + " (5.0: Malformed Packet)", 5,
      publish_pkt("q/3", b"x", header=0x36, pid=1, version=5), close_v5())
DUP0 = s311("3.3.1-2", "The DUP flag MUST be set to 0 for all QoS 0 messages") + \
    " -> " + s311("4.8.0-1", "if either the Server or Client encounters a protocol violation, "
                  "it MUST close the Network Connection")
table("3.1.1 PUBLISH QoS 0 with DUP", DUP0, 4, publish_pkt("d/0", b"x", dup=True), close_v4())
table("5.0 PUBLISH QoS 0 with DUP", DUP0 + " (5.0 [MQTT-3.3.1-2]: Malformed Packet)", 5,
      publish_pkt("d/0", b"x", dup=True, version=5), close_v5())
table("3.1.1 PUBLISH QoS 1 with DUP on first delivery", "3.3.1.1: DUP is a hint; a PUBACK "
      "answers [MQTT-4.3.2-2]", 4, publish_pkt("d/1", b"x", 1, 31, dup=True),
      cont(allow=lambda p: p.type == PUBACK and p.packet_id() == 31,
           check=lambda c, seen: None if any(p.type == PUBACK for p in seen)
           else f"no PUBACK for packet id 31 (got {seen})"))

# ---- server-only packets, reserved types -----------------------------------------------------

SERVER_ONLY = ("3.1.1 2.2.1 Table 2.1: this packet type flows Server to Client only; from a "
               "Client it is a protocol violation -> " + s311("4.8.0-1"))
for label, data in [("CONNACK", b"\x20\x02\x00\x00"), ("SUBACK", b"\x90\x03\x00\x01\x00"),
                    ("UNSUBACK", b"\xb0\x02\x00\x01"), ("PINGRESP", b"\xd0\x00"),
                    ("reserved type 0", b"\x00\x00"), ("reserved type 15", b"\xf0\x00")]:
    table(f"3.1.1 client sends {label}", SERVER_ONLY, 4, data, close_v4())
for label, data in [("CONNACK", b"\x20\x03\x00\x00\x00"), ("SUBACK", b"\x90\x04\x00\x01\x00\x00"),
                    ("PINGRESP", b"\xd0\x00"), ("reserved type 0", b"\x00\x00")]:
    table(f"5.0 client sends {label}", SERVER_ONLY.replace("3.1.1 2.2.1 Table 2.1",
                                                           "5.0 2.1.2 Table 2-1") +
          " (5.0 4.13)", 5, data, close_v5())
table("3.1 client sends reserved type 15", SERVER_ONLY, 3, b"\xf0\x00", close_v4())

# ---- acknowledgements for unknown packet ids -------------------------------------------------

table("3.1.1 PUBACK for an unknown id", "3.1.1 4.3.2: acknowledging an id that is not "
      "outstanding is no protocol violation; the session continues", 4, ack_pkt(PUBACK, 4242),
      cont())
table("3.1.1 PUBREC for an unknown id", "3.1.1 4.3.3: the session continues (a PUBREL reply "
      "is allowed)", 4, ack_pkt(PUBREC, 4243),
      cont(allow=lambda p: p.type == PUBREL and p.packet_id() == 4243))
table("3.1.1 PUBCOMP for an unknown id", "3.1.1 4.3.3: the session continues", 4,
      ack_pkt(PUBCOMP, 4244), cont())
table("5.0 PUBACK for an unknown id", "5.0 4.3.2: the session continues", 5,
      ack_pkt(PUBACK, 4245, 5), cont())
table("5.0 PUBREC for an unknown id", "5.0 4.3.3: the session continues; a PUBREL with 0x92 "
      "(Packet Identifier not found) is allowed", 5, ack_pkt(PUBREC, 4246, 5),
      cont(allow=lambda p: p.type == PUBREL and p.packet_id() == 4246
           and p.reason() in (0x00, 0x92)))
table("5.0 PUBCOMP for an unknown id", "5.0 4.3.3: the session continues", 5,
      ack_pkt(PUBCOMP, 4247, 5), cont())


def pubrel_unknown(version):
    want = {0x00} if version != 5 else {0x92, 0x00}

    def check(c, seen):
        comps = [p for p in seen if p.type == PUBCOMP]
        if len(comps) != 1 or comps[0].packet_id() != 4250:
            return f"expected one PUBCOMP for packet id 4250, got {seen}"
        return None

    table(f"{'5.0' if version == 5 else '3.1.1'} PUBREL for an unknown id gets PUBCOMP",
          s311("4.3.3-11", "MUST respond to a PUBREL packet by sending a PUBCOMP packet "
               "containing the same Packet Identifier as the PUBREL") +
          (" (5.0: Reason Code 0x92 Packet Identifier not found)" if version == 5 else ""),
          version, ack_pkt(PUBREL, 4250, version),
          cont(allow=lambda p: p.type == PUBCOMP and p.packet_id() == 4250
               and p.reason() in want, check=check))


pubrel_unknown(4)
pubrel_unknown(5)


@case("3.1.1 QoS 2 resent with DUP is delivered once", s311(
    "4.3.3-2", "... MUST send a PUBREC") + "; the receiver MUST NOT cause duplicate delivery "
    "to onward recipients of a re-sent PUBLISH before PUBREL (3.1.1 4.3.3 method B)")
def _(env):
    c, _ = do_connect(env, 4)
    try:
        topic = new_id("q2dup/")
        c.send(subscribe_pkt(1, [(topic, 0)]))
        p = c.recv()
        if not isinstance(p, Pkt) or p.type != SUBACK:
            return f"SUBACK expected, got {p!r}"
        c.send(publish_pkt(topic, b"once", 2, 77))
        c.send(publish_pkt(topic, b"once", 2, 77, dup=True))
        c.send(ack_pkt(PUBREL, 77))
        c.send(publish_pkt(topic, b"marker"))
        copies, recs, comps = 0, 0, 0
        while True:
            p = c.recv()
            if not isinstance(p, Pkt):
                return f"{p} before the marker (copies={copies} PUBRECs={recs})"
            if p.type == PUBREC and p.packet_id() == 77:
                recs += 1
            elif p.type == PUBCOMP and p.packet_id() == 77:
                comps += 1
            elif p.type == PUBLISH:
                payload = p.publish_fields()[4]
                if payload == b"marker":
                    break
                copies += 1
            else:
                return f"unexpected {p!r}"
        if copies != 1 or recs != 2:
            return f"expected 1 delivery and 2 PUBRECs, got {copies} deliveries, {recs} PUBRECs"
        if comps != 1:
            ok, seen, _ = ping_barrier(c)
            comps += sum(1 for x in seen if x.type == PUBCOMP)
            if comps != 1:
                return f"expected one PUBCOMP, got {comps}"
        return evaluate(c, cont())
    finally:
        c.close()


# ---- MQTT 5 properties -----------------------------------------------------------------------

DUPPROP = "5.0 2.2.2.2 / 3.x property text: It is a Protocol Error to include {} more than once"
BADPROP = ("5.0 2.2.2.2: A Control Packet which contains an Identifier which is not valid for "
           "its packet type ... is a Malformed Packet")
PLEN = ("5.0 2.2.2.1: the Property Length is the length of the properties; properties running "
        "past the packet are a Malformed Packet")
for label, cp, st in [
    ("duplicate Session Expiry Interval", p_u32(0x11, 10) + p_u32(0x11, 20),
     DUPPROP.format("the Session Expiry Interval")),
    ("duplicate Receive Maximum", p_u16(0x21, 10) + p_u16(0x21, 10),
     DUPPROP.format("the Receive Maximum value")),
    ("Receive Maximum 0", p_u16(0x21, 0), "5.0 3.1.2.11.3: It is a Protocol Error to include "
     "the Receive Maximum value more than once or for it to have the value 0"),
    ("Maximum Packet Size 0", p_u32(0x27, 0), "5.0 3.1.2.11.4: It is a Protocol Error to "
     "include the Maximum Packet Size more than once, or for the value to be set to zero"),
    ("Request Problem Information 2", p_byte(0x17, 2), "5.0 3.1.2.11.7: It is a Protocol "
     "Error to include Request Problem Information more than once, or to have a value other "
     "than 0 or 1"),
    ("Request Response Information 2", p_byte(0x19, 2), "5.0 3.1.2.11.6: It is Protocol Error "
     "to include the Request Response Information more than once, or to have a value other "
     "than 0 or 1"),
    ("Topic Alias property", p_u16(0x23, 1), BADPROP),
    ("Subscription Identifier property", p_vbi(0x0B, 1), BADPROP),
    ("unknown property 0x05", b"\x05\x00", BADPROP),
    ("Authentication Data without Method", p_str(0x16, b"data"), "5.0 3.1.2.11.10: It is a "
     "Protocol Error to include Authentication Data if there is no Authentication Method"),
    ("duplicate Authentication Method", p_str(0x15, "A") + p_str(0x15, "B"),
     DUPPROP.format("Authentication Method")),
]:
    table(f"5.0 CONNECT {label}", st + "; [MQTT-3.1.4-1] close (CONNACK >= 0x80 optional)",
          None, connect_pkt(5, cprops=cp), close_connect_v5())
table("5.0 CONNECT property length past the packet", PLEN, None,
      connect_pkt(5, raw_props=b"\x14" + p_u32(0x11, 5)), close_connect_v5())
table("5.0 CONNECT Session Expiry Interval cut short", PLEN + " (a Four Byte Integer in 3 "
      "bytes)", None, connect_pkt(5, raw_props=b"\x04\x11\x00\x00\x05"), close_connect_v5())
table("5.0 will properties with a Topic Alias", BADPROP + " (3.1.3.2 Will Properties)", None,
      connect_pkt(5, will=("w/ta", b"m", 0, False, p_u16(0x23, 1))), close_connect_v5())
table("5.0 will properties with duplicate Message Expiry", DUPPROP.format(
    "the Message Expiry Interval"), None,
    connect_pkt(5, will=("w/me", b"m", 0, False, p_u32(0x02, 1) + p_u32(0x02, 2))),
    close_connect_v5())
table("5.0 CONNECT unknown Authentication Method", "[MQTT-4.12.0-1] If the Server does not "
      "support the Authentication Method supplied by the Client, it MAY send a CONNACK with "
      "a Reason Code of 0x8C (Bad authentication method) or 0x87 (Not Authorized) ... and "
      "MUST close the Network Connection", None,
      connect_pkt(5, cprops=p_str(0x15, "X-AUDIT-NO-SUCH-METHOD")),
      Expect("close", connack=frozenset({0x8C, 0x87})))

for label, pp, st in [
    ("duplicate Payload Format Indicator", p_byte(0x01, 0) + p_byte(0x01, 1),
     DUPPROP.format("the Payload Format Indicator")),
    ("duplicate Topic Alias", p_u16(0x23, 1) + p_u16(0x23, 1), DUPPROP.format("Topic Alias")),
    ("Session Expiry Interval property", p_u32(0x11, 5), BADPROP),
    ("Receive Maximum property", p_u16(0x21, 5), BADPROP),
    ("unknown property 0x7F", b"\x7f\x00", BADPROP),
    ("Subscription Identifier from the client", p_vbi(0x0B, 3), "[MQTT-3.3.4-6] A PUBLISH "
     "packet sent from a Client to a Server MUST NOT contain a Subscription Identifier"),
]:
    table(f"5.0 PUBLISH {label}", st, 5,
          publish_pkt("p/props", b"x", version=5, pprops=props(pp)), close_v5())
table("5.0 PUBLISH property length past the packet", PLEN, 5,
      publish_pkt("p/plen", b"", version=5, pprops=b"\x20" + p_byte(0x01, 0)), close_v5())
table("5.0 PUBLISH Message Expiry cut short", PLEN, 5,
      publish_pkt("p/mei", b"", version=5, pprops=b"\x03\x02\x00\x00"), close_v5())

table("5.0 SUBSCRIBE Subscription Identifier 0", "5.0 3.8.2.1.2: The Subscription Identifier "
      "can have the value of 1 to 268,435,455. It is a Protocol Error if the Subscription "
      "Identifier has a value of 0", 5,
      subscribe_pkt(1, [("s/0", 0)], 5, sprops=props(p_vbi(0x0B, 0))), close_v5())
table("5.0 SUBSCRIBE duplicate Subscription Identifier", DUPPROP.format(
    "the Subscription Identifier"), 5,
    subscribe_pkt(1, [("s/2", 0)], 5, sprops=props(p_vbi(0x0B, 1), p_vbi(0x0B, 2))),
    close_v5())
table("5.0 SUBSCRIBE with a Topic Alias property", BADPROP, 5,
      subscribe_pkt(1, [("s/ta", 0)], 5, sprops=props(p_u16(0x23, 1))), close_v5())
table("5.0 UNSUBSCRIBE with a Subscription Identifier property", BADPROP + " (UNSUBSCRIBE "
      "allows User Properties only)", 5,
      unsubscribe_pkt(1, ["s/x"], 5, uprops=props(p_vbi(0x0B, 1))), close_v5())


def with_limits(fn):
    """Wraps a data function needing the broker's CONNACK limits."""
    return lambda env: fn(env.limits)


table("5.0 PUBLISH Topic Alias 0", "[MQTT-3.3.2-8] A sender MUST NOT send a PUBLISH packet "
      "containing a Topic Alias which has the value 0; 5.0 3.3.2.3.4: Protocol Error, DISCONNECT "
      "0x94 (Topic Alias invalid)", 5,
      publish_pkt("ta/0", b"x", version=5, pprops=props(p_u16(0x23, 0))),
      close_v5(0x94, 0x82))
table("5.0 PUBLISH Topic Alias above the server's maximum", "[MQTT-3.2.2-17]/[MQTT-3.3.2-9] A "
      "Client MUST NOT send a Topic Alias greater than the Topic Alias Maximum returned in "
      "CONNACK; 0x94 Topic Alias invalid (limit read from CONNACK)", 5,
      with_limits(lambda lim: publish_pkt("ta/max", b"x", version=5,
                                          pprops=props(p_u16(0x23, lim.topic_alias_max + 1)))),
      close_v5(0x94))
table("5.0 PUBLISH empty topic with an unknown Topic Alias", "5.0 3.3.2.3.4: an empty Topic "
      "Name with a Topic Alias that has no mapping is a Protocol Error", 5,
      with_limits(lambda lim: publish_pkt(
          "", b"x", version=5, pprops=props(p_u16(0x23, max(1, lim.topic_alias_max))))),
      close_v5(0x82, 0x94))


@case("5.0 Topic Alias set then used with an empty topic", "5.0 3.3.2.3.4: a Topic Alias "
      "with a non-empty topic sets the mapping; later PUBLISHes may use the alias with a zero "
      "length Topic Name (limit read from CONNACK)")
def _(env):
    if env.limits.topic_alias_max < 1:
        raise Skip("the broker accepts no Topic Aliases")
    c, _ = do_connect(env, 5)
    try:
        topic = new_id("alias/")
        c.send(subscribe_pkt(1, [(topic, 0)], 5))
        p = c.recv()
        if not isinstance(p, Pkt) or p.type != SUBACK:
            return f"SUBACK expected, got {p!r}"
        alias = env.limits.topic_alias_max
        c.send(publish_pkt(topic, b"first", version=5, pprops=props(p_u16(0x23, alias))))
        c.send(publish_pkt("", b"second", version=5, pprops=props(p_u16(0x23, alias))))
        got = []
        for _ in range(2):
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != PUBLISH:
                return f"expected two PUBLISHes, got {got} then {p!r}"
            got.append(p.publish_fields()[4])
        if got != [b"first", b"second"]:
            return f"expected payloads first, second; got {got}"
        return evaluate(c, cont())
    finally:
        c.close()


@case("5.0 Payload Format Indicator 1 with a payload that is not UTF-8", "5.0 3.3.2.3.2: The "
      "receiver MAY validate that the Payload is of the format indicated, and if it is not "
      "send a PUBACK, PUBREC, or DISCONNECT with Reason Code of 0x99 (Payload format invalid)")
def _(env):
    c, _ = do_connect(env, 5)
    try:
        c.send(publish_pkt(new_id("pfi/"), b"\xff\xfe", 1, 21, version=5,
                           pprops=props(p_byte(0x01, 1))))
        p = c.recv()
        if p == "closed":
            return None
        if not isinstance(p, Pkt):
            return f"expected PUBACK or DISCONNECT 0x99, got {p!r}"
        if p.type == DISCONNECT:
            return None if p.reason() == 0x99 else f"DISCONNECT {p!r}, 0x99 expected"
        if p.type == PUBACK and p.packet_id() == 21 and p.reason() in (0x00, 0x10, 0x99):
            return evaluate(c, cont())
        return f"expected PUBACK 0x00/0x10/0x99 or DISCONNECT 0x99, got {p!r}"
    finally:
        c.close()


table("5.0 AUTH without enhanced authentication", "5.0 4.12: AUTH is only used after a "
      "CONNECT with an Authentication Method; 3.15.2.2.2: It is a Protocol Error to omit the "
      "Authentication Method", 5, packet(0xF0, b"\x19\x00"), close_v5(0x81, 0x82, 0x8C))
table("5.0 AUTH with no body", "5.0 3.15: AUTH outside enhanced authentication is a Protocol "
      "Error", 5, b"\xf0\x00", close_v5(0x81, 0x82, 0x8C))


@case("5.0 exceeding the server's Receive Maximum", "[MQTT-3.3.4-7] The Client MUST NOT send "
      "more than Receive Maximum QoS 1 and QoS 2 PUBLISH packets for which it has not "
      "received PUBACK, PUBCOMP, or PUBREC with a Reason Code of 128 or greater; 3.2.2.3.3: "
      "DISCONNECT 0x93 (Receive Maximum exceeded) (limit read from CONNACK)")
def _(env):
    rm = env.limits.receive_max
    if rm > 5000:
        raise Skip(f"Receive Maximum {rm} too large to exceed in a test")
    c, _ = do_connect(env, 5)
    try:
        topic = new_id("rm/")
        data = b"".join(publish_pkt(topic, b"x", 2, i + 1, version=5) for i in range(rm + 1))
        c.send(data)
        recs = 0
        deadline = time.monotonic() + TIMEOUT
        while True:
            p = c.recv(max(0.0, deadline - time.monotonic()))
            if p == "closed":
                return None
            if p == "timeout":
                return (f"still connected {TIMEOUT:.0f}s after {rm + 1} unreleased QoS 2 "
                        f"PUBLISHes (Receive Maximum {rm}); {recs} PUBRECs")
            if p.type == PUBREC and p.reason() < 0x80:
                recs += 1
                if recs > rm:
                    return f"PUBREC #{recs} beyond Receive Maximum {rm}"
            elif p.type == DISCONNECT:
                if p.reason() != 0x93:
                    return f"DISCONNECT {p!r}, expected 0x93"
            else:
                return f"unexpected {p!r}"
    finally:
        c.close()


@case("5.0 packet larger than the server's Maximum Packet Size", "[MQTT-3.2.2-15] The Client "
      "MUST NOT send packets exceeding Maximum Packet Size to the Server; 3.2.2.3.6: a "
      "Protocol Error, DISCONNECT 0x95 (Packet too large) (limit read from CONNACK)")
def _(env):
    mps = env.limits.max_packet
    if mps is None or mps > 64 * 1024 * 1024:
        raise Skip(f"Maximum Packet Size {mps}: none announced or too large to test")
    c, _ = do_connect(env, 5)
    try:
        topic = new_id("big/").encode()
        head = len(s(topic)) + 1
        # Total size = 1 + len(vbi(rl)) + rl = mps + 1.
        rl = mps + 1 - 1 - 4
        if len(vbi(rl)) != 4:
            rl = mps + 1 - 1 - len(vbi(rl))
        pkt = b"\x30" + vbi(rl) + s(topic) + b"\x00" + b"x" * (rl - head)
        assert len(pkt) == mps + 1
        c.send(pkt)
        return evaluate(c, close_v5(0x95))
    finally:
        c.close()


def huge_rl(lim):
    if lim.max_packet is None:
        raise Skip("no Maximum Packet Size announced: a 256 MiB packet is legal")
    return b"\x30\xff\xff\xff\x7f" + b"\x00" * 64


table("5.0 Remaining Length of 268435455 on a small connection", "[MQTT-3.2.2-15] and "
      "3.2.2.3.6: DISCONNECT 0x95 (Packet too large); memory must not be reserved for it "
      "(limit read from CONNACK)", 5, with_limits(huge_rl), close_v5(0x95))

table("5.0 DISCONNECT setting Session Expiry after 0 publishes the will",
      "5.0 3.14.2.2.2: If the Session Expiry Interval in the CONNECT packet "
      "was zero, then it is a Protocol Error to set a non-zero Session Expiry Interval in the "
      "DISCONNECT packet; the Server does not treat it as a valid DISCONNECT (DISCONNECT 0x82)",
      5, disconnect_pkt(5, 0x00, props(p_u32(0x11, 60))), close_v5(0x82), will=True)
table("5.0 DISCONNECT with an undefined reason code 0x03", "5.0 3.14.2.1: the reason code "
      "must be one of Table 3-10; an undefined value is a Malformed Packet (the connection "
      "closes either way)", 5, disconnect_pkt(5, 0x03), close_v5())
table("5.0 DISCONNECT 0x04 (with will) publishes the will", "5.0 3.14.2.1: 0x04 Disconnect "
      "with Will Message: the Server publishes the will", 5, disconnect_pkt(5, 0x04),
      close_v5(), will=True)


@case("5.0 normal DISCONNECT deletes the will", "[MQTT-3.14.4-3] On receipt of DISCONNECT "
      "with a Reason Code of 0x00 the Server MUST discard any Will Message without publishing")
def _(env):
    topic = new_id("will/")
    w = Watcher(env, topic)
    try:
        c, _ = do_connect(env, 5, will=(topic, b"must-not", 0, False))
        c.send(disconnect_pkt(5, 0x00))
        err = evaluate(c, Expect("close"))
        c.close()
        if err:
            return err
        # Barrier: a marker published after the close arrives after any will would have.
        m, _ = do_connect(env, 4)
        m.send(publish_pkt(topic, b"marker"))
        m.send(disconnect_pkt())
        m.close()
        p = w.wait_for(topic)
        if p is None:
            return "the marker was not received"
        if p.publish_fields()[4] != b"marker":
            return f"the will was published after a normal DISCONNECT: {p!r}"
        return None
    finally:
        w.close()


# ---- stream handling, pipelining, boundaries -------------------------------------------------


@case("3.1.1 CONNECT, SUBSCRIBE, PUBLISH, PINGREQ in one write", "3.1.4 (non-normative): "
      "Clients are allowed to send further Control Packets immediately after sending a "
      "CONNECT Packet; Clients need not wait for a CONNACK")
def _(env):
    c = Conn(env, 4)
    try:
        topic = new_id("pipe/")
        c.send(connect_pkt(4) + subscribe_pkt(1, [(topic, 0)]) + publish_pkt(topic, b"p")
               + PINGREQ_PKT)
        got = []
        for _ in range(4):
            p = c.recv()
            if not isinstance(p, Pkt):
                return f"expected CONNACK then SUBACK, PUBLISH, PINGRESP; got {got} then {p}"
            got.append(p)
        # [MQTT-3.2.0-1] (5.0; 3.1.1 3.2) CONNACK comes first; a PINGRESP may overtake the
        # PUBLISH routed back to this client (no ordering rule between them, 4.6).
        if got[0].type != CONNACK or sorted(p.type for p in got[1:]) != [PUBLISH, SUBACK,
                                                                          PINGRESP]:
            return f"expected CONNACK then SUBACK, PUBLISH, PINGRESP in any order; got {got}"
        return None
    finally:
        c.close()


def dripped(name, statement, version, make):
    """Sends a CONNECT then `make(topic)` (a PUBLISH to the connection's own subscription)
    one byte per write: the broker must reassemble packets from any segmentation."""

    def run(env):
        c = Conn(env, version)
        try:
            for b in connect_pkt(version):
                c.send(bytes([b]))
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != CONNACK or p.reason() != 0:
                return f"CONNACK 0x00 expected after a one-byte-per-write CONNECT, got {p!r}"
            topic = new_id("drip/")
            c.send(subscribe_pkt(1, [(topic, 0)], version))
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != SUBACK:
                return f"SUBACK expected, got {p!r}"
            data, payload = make(topic)
            for b in data:
                c.send(bytes([b]))
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != PUBLISH or p.publish_fields()[4] != payload:
                return f"the PUBLISH sent one byte per write did not come back: {p!r}"
            return evaluate(c, cont())
        finally:
            c.close()

    CASES.append(Case(name, statement, run))


STREAM = ("MQTT runs over an ordered byte stream (4.2): packet boundaries are independent of "
          "TCP segments")
dripped("3.1.1 packets sent one byte per write", STREAM, 4,
        lambda t: (publish_pkt(t, b"d" * 200), b"d" * 200))
dripped("5.0 packets sent one byte per write", STREAM, 5,
        lambda t: (publish_pkt(t, b"e" * 130, version=5,
                               pprops=props(p_str(0x03, "text/plain"))), b"e" * 130))


@case("3.1.1 100 PINGREQs in one write", STREAM + "; [MQTT-3.12.4-1] the Server MUST send a "
      "PINGRESP in response to a PINGREQ")
def _(env):
    c, _ = do_connect(env, 4)
    try:
        c.send(PINGREQ_PKT * 100)
        for i in range(100):
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != PINGRESP:
                return f"PINGRESP #{i + 1} expected, got {p!r}"
        return None
    finally:
        c.close()


def rl_boundary(total):
    """A QoS 0 PUBLISH whose Remaining Length is exactly `total`, routed back unchanged."""

    @case(f"3.1.1 Remaining Length {total} (variable length boundary)", "3.1.1 2.2.3 Table "
          "2.4: 1 to 4 byte Remaining Length encodings (sizes above the broker's announced "
          "Maximum Packet Size are skipped)")
    def _(env):
        if env.limits.max_packet is not None and total + 5 > env.limits.max_packet:
            raise Skip(f"above the broker's Maximum Packet Size {env.limits.max_packet}")
        c, _ = do_connect(env, 4)
        try:
            topic = new_id("rl/").encode()
            payload = b"r" * (total - 2 - len(topic))
            c.send(subscribe_pkt(1, [(topic, 0)]))
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != SUBACK:
                return f"SUBACK expected, got {p!r}"
            pkt = publish_pkt(topic, payload)
            c.send(pkt)
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != PUBLISH:
                return f"expected the PUBLISH back, got {p!r}"
            if p.publish_fields()[4] != payload or len(p.body) != total:
                return f"PUBLISH came back altered: {p!r}"
            return evaluate(c, cont())
        finally:
            c.close()


for total in (127, 128, 16383, 16384, 2097151, 2097152):
    rl_boundary(total)


@case("5.0 PUBLISH of exactly the server's Maximum Packet Size", "3.2.2.3.6: the Maximum "
      "Packet Size is the largest packet the Server will accept; one of exactly that size "
      "is legal (limit read from CONNACK)")
def _(env):
    mps = env.limits.max_packet
    if mps is None or mps > 64 * 1024 * 1024:
        raise Skip(f"Maximum Packet Size {mps}: none announced or too large to test")
    c, _ = do_connect(env, 5)
    try:
        topic = new_id("exact/").encode()
        rl = mps - 1 - 4
        if len(vbi(rl)) != 4:
            rl = mps - 1 - len(vbi(rl))
        body = s(topic) + u16(5) + b"\x00"
        pkt = b"\x32" + vbi(rl) + body + b"y" * (rl - len(body))
        if len(pkt) != mps:
            return f"test bug: built {len(pkt)} bytes for {mps}"
        c.send(pkt)
        return evaluate(c, cont(allow=lambda p: p.type == PUBACK and p.packet_id() == 5
                                and p.reason() < 0x80,
                                check=lambda c2, seen: None if seen else "no PUBACK"))
    finally:
        c.close()


roundtrip("3.1.1 topic of 65535 bytes (the longest string)", "1.5.3: a UTF-8 string is up "
          "to 65,535 bytes; a Topic Name of that length is legal", 4,
          lambda env: new_id("long/").ljust(65535, "t"))


@case("3.1.1 QoS 1 PUBLISH to a topic of 300 levels", s311(
    "3.3.5-2", "If a Server implementation does not authorize a PUBLISH ... It MUST either "
    "make a positive acknowledgement, according to the normal QoS rules, or close the Network "
    "Connection"))
def _(env):
    c, _ = do_connect(env, 4)
    try:
        c.send(publish_pkt(new_id("deep/") + "/l" * 300, b"x", 1, 8))
        p = c.recv()
        if p == "closed":
            return None
        if isinstance(p, Pkt) and p.type == PUBACK and p.packet_id() == 8:
            return evaluate(c, cont())
        return f"expected PUBACK id 8 or close, got {p!r}"
    finally:
        c.close()


suback_case("3.1.1 SUBSCRIBE with 500 filters", "3.8.3: the payload is a list of filters; "
            "[MQTT-3.9.3-1] one return code per filter, in order", 4,
            [(f"many/{i}", i % 3) for i in range(500)], [i % 3 for i in range(500)])


def bad_unsub_filter(version, f):
    def run(env):
        c, _ = do_connect(env, version)
        try:
            c.send(unsubscribe_pkt(13, [f], version))
            p = c.recv()
            if p == "closed":
                return None
            if not isinstance(p, Pkt):
                return f"expected UNSUBACK or close, got {p!r}"
            if p.type == DISCONNECT and version == 5 and p.reason() in (0x81, 0x82, 0x8F):
                return evaluate(c, Expect("close"))
            if p.type != UNSUBACK or p.packet_id() != 13:
                return f"expected UNSUBACK id 13 or close, got {p!r}"
            if version == 5:
                n, i = read_vbi(p.body, 2)
                codes = list(p.body[i + n:])
                if codes not in ([0x8F], [0x11], [0x80]):
                    return f"UNSUBACK reason {codes}: 0x8F (Topic Filter invalid) expected"
            return evaluate(c, cont())
        finally:
            c.close()

    CASES.append(Case(f"{'5.0' if version == 5 else '3.1.1'} UNSUBSCRIBE invalid filter {f!r}",
                      s311("4.7.1-2") + "/" + s311("4.7.3-1") + ": an invalid filter is a "
                      "protocol violation (close) or is refused (5.0 UNSUBACK 0x8F)", run))


for f in ("a/#/b", ""):
    bad_unsub_filter(4, f)
    bad_unsub_filter(5, f)

suback_case("5.0 SUBSCRIBE with a user property", "5.0 3.8.2.1.3: User Property is allowed "
            "in SUBSCRIBE", 5, [("up/sub", 1)], [1])


@case("5.0 UNSUBSCRIBE with a user property", "5.0 3.10.2.1.2: User Property is allowed in "
      "UNSUBSCRIBE")
def _(env):
    c, _ = do_connect(env, 5)
    try:
        c.send(unsubscribe_pkt(14, ["up/unsub"], 5, uprops=props(p_pair("k", "v"))))
        p = c.recv()
        if not isinstance(p, Pkt) or p.type != UNSUBACK or p.packet_id() != 14:
            return f"UNSUBACK id 14 expected, got {p!r}"
        return evaluate(c, cont())
    finally:
        c.close()


def forwarded_props(pr):
    want = {0x01: [1], 0x03: [b"text/plain"], 0x08: [b"reply/to"], 0x09: [b"\x00\xffcorr"]}
    for k, v in want.items():
        if pr.get(k) != v:
            return f"property 0x{k:02X} not forwarded unaltered: got {pr.get(k)}, want {v}"
    if 0x23 in pr:
        return ("a Topic Alias was sent to a client that allowed none [MQTT-3.1.2-27] "
                "(Topic Alias Maximum absent)")
    return None


roundtrip("5.0 PUBLISH properties forwarded unaltered", "[MQTT-3.3.2-4] payload format "
          "indicator, [MQTT-3.3.2-20] content type, [MQTT-3.3.2-15] response topic, "
          "[MQTT-3.3.2-16] correlation data: the Server MUST send them unaltered to all "
          "subscribers; no Topic Alias to a client that set no Topic Alias Maximum", 5,
          lambda env: new_id("props/"), payload=b"text",
          pprops=props(p_byte(0x01, 1), p_str(0x03, "text/plain"), p_str(0x08, "reply/to"),
                       p_str(0x09, b"\x00\xffcorr")),
          expect_props=forwarded_props)


@case("5.0 the server respects the client's Maximum Packet Size", "[MQTT-3.1.2-24] The "
      "Server MUST NOT send packets exceeding Maximum Packet Size to the Client; "
      "[MQTT-3.1.2-25] where a Packet is too large to send, the Server MUST discard it")
def _(env):
    topic = new_id("cmps/")
    c, _ = do_connect(env, 5, cprops=p_u32(0x27, 128))
    try:
        c.send(subscribe_pkt(1, [(topic, 0)], 5))
        p = c.recv()
        if not isinstance(p, Pkt) or p.type != SUBACK:
            return f"SUBACK expected, got {p!r}"
        pub, _ = do_connect(env, 4)
        pub.send(publish_pkt(topic, b"B" * 300) + publish_pkt(topic, b"small"))
        pub.send(disconnect_pkt())
        pub.close()
        p = c.recv()
        if not isinstance(p, Pkt) or p.type != PUBLISH:
            return f"expected the small PUBLISH, got {p!r}"
        if p.publish_fields()[4] != b"small":
            return f"a {len(p.body) + 2}-byte PUBLISH was sent past Maximum Packet Size 128"
        return evaluate(c, cont())
    finally:
        c.close()


@case("5.0 the server respects the client's Receive Maximum", "[MQTT-3.3.4-9] The Server "
      "MUST NOT send more than Receive Maximum QoS 1 and QoS 2 PUBLISH packets for which it "
      "has not received PUBACK, PUBCOMP, or PUBREC with a Reason Code of 128 or greater")
def _(env):
    topic = new_id("crm/")
    c, _ = do_connect(env, 5, cprops=p_u16(0x21, 1))
    try:
        c.send(subscribe_pkt(1, [(topic, 1)], 5))
        p = c.recv()
        if not isinstance(p, Pkt) or p.type != SUBACK:
            return f"SUBACK expected, got {p!r}"
        pub, _ = do_connect(env, 4)
        for i in range(3):
            pub.send(publish_pkt(topic, str(i).encode(), 1, i + 1))
        for i in range(3):
            a = pub.recv()
            if not isinstance(a, Pkt) or a.type != PUBACK:
                return f"publisher PUBACK expected, got {a!r}"
        pub.send(disconnect_pkt())
        pub.close()
        got = []
        for i in range(3):
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != PUBLISH:
                return f"PUBLISH {i} expected, got {p!r} (after {got})"
            got.append(p.publish_fields()[4])
            # Negative check: with one unacknowledged, nothing else may arrive; a bounded
            # window is the only way to observe an absence.
            q = c.recv(0.3)
            if isinstance(q, Pkt):
                return f"{q!r} arrived while PUBLISH {got[-1]!r} was unacknowledged"
            c.send(ack_pkt(PUBACK, p.publish_fields()[2], 5))
        if got != [b"0", b"1", b"2"]:
            return f"expected 0, 1, 2 in order, got {got}"
        return evaluate(c, cont())
    finally:
        c.close()


@case("5.0 Request Problem Information 0: no Reason String on SUBACK", "[MQTT-3.1.2-29] "
      "If the value of Request Problem Information is 0, the Server ... MUST NOT send a "
      "Reason String or User Properties on any packet other than PUBLISH, CONNACK, or "
      "DISCONNECT")
def _(env):
    c, _ = do_connect(env, 5, cprops=p_byte(0x17, 0))
    try:
        c.send(subscribe_pkt(3, [("ok/x", 0), ("bad/#/x", 0)], 5))
        p = c.recv()
        if p == "closed":
            return None
        if not isinstance(p, Pkt):
            return f"SUBACK or close expected, got {p!r}"
        if p.type == DISCONNECT:
            return evaluate(c, Expect("close"))
        if p.type != SUBACK:
            return f"SUBACK expected, got {p!r}"
        pr, _ = parse_props(p.body, 2)
        if 0x1F in pr or 0x26 in pr:
            return f"SUBACK carries a Reason String / User Property: {pr}"
        return evaluate(c, cont())
    finally:
        c.close()


@case("3.1.1 session take-over closes only the old connection", s311(
    "3.1.4-2", "If the ClientId represents a Client already connected to the Server then the "
    "Server MUST disconnect the existing Client"))
def _(env):
    cid = new_id("takeover-")
    old, _ = do_connect(env, 4, cid=cid)
    try:
        new, _ = do_connect(env, 4, cid=cid)
        try:
            err = evaluate(old, Expect("close"))
            if err:
                return f"old connection: {err}"
            return evaluate(new, cont())
        finally:
            new.close()
    finally:
        old.close()


@case("5.0 session take-over sends DISCONNECT 0x8E to the old connection", "[MQTT-3.1.4-3] "
      "the Server sends a DISCONNECT packet to the existing Client with Reason Code of 0x8E "
      "(Session taken over) and MUST close the Network Connection of the existing Client")
def _(env):
    cid = new_id("takeover5-")
    old, _ = do_connect(env, 5, cid=cid)
    try:
        new, _ = do_connect(env, 5, cid=cid)
        try:
            err = evaluate(old, close_v5(0x8E))
            if err:
                return f"old connection: {err}"
            return evaluate(new, cont())
        finally:
            new.close()
    finally:
        old.close()


connack_case("3.1 zero-length client id", "MQTT 3.1 (IBM) 3.1: the Client Identifier is "
             "between 1 and 23 characters; otherwise CONNACK 2 (identifier rejected)", 3,
             connect_pkt(3, cid=b""), {0x02})
connack_case("3.1 client id of 23 characters", "MQTT 3.1: 1 to 23 characters are accepted",
             3, lambda env: connect_pkt(3, cid=new_id("").ljust(23, "z")[-23:]), {0x00})


# ---- more structure: empty bodies, string lengths past the packet, more UTF-8 ----------------

for label, data in [("PUBLISH", b"\x30\x00"), ("PUBLISH QoS 1", b"\x32\x00"),
                    ("SUBSCRIBE", b"\x82\x00"), ("UNSUBSCRIBE", b"\xa2\x00"),
                    ("PUBREL", b"\x62\x00"), ("PUBREC", b"\x50\x00")]:
    table(f"3.1.1 {label} with Remaining Length 0", SHORT, 4, data, close_v4())
table("CONNECT with Remaining Length 0", SHORT + "; " + NOCONNACK, None, b"\x10\x00",
      close_v4())
STRLEN = ("1.5.3: a string's 2-byte length that runs past the Remaining Length is a malformed "
          "packet -> [MQTT-4.8.0-1] / [MQTT-4.13.1-1] close")
table("3.1.1 PUBLISH topic length 65535 in a 7-byte packet", STRLEN, 4,
      packet(0x30, b"\xff\xffabcde"), close_v4())
table("3.1.1 SUBSCRIBE filter length past the packet", STRLEN, 4,
      packet(0x82, u16(1) + b"\x00\x10ab\x00"), close_v4())
table("3.1.1 CONNECT client id length past the packet", STRLEN + "; " + NOCONNACK, None,
      packet(0x10, s("MQTT") + b"\x04\x02\x00\x3c" + b"\x00\x40abc"), close_v4())
table("5.0 PUBLISH property length of 5 bytes", RL5.replace("Remaining Length",
                                                             "Property Length"), 5,
      packet(0x30, s("p/vbi") + b"\xff\xff\xff\xff\x01"), close_v5())
table("5.0 SUBSCRIBE Subscription Identifier of 5 bytes", "1.5.5: a Variable Byte Integer "
      "is at most 4 bytes (268,435,455): Malformed Packet", 5,
      subscribe_pkt(1, [("s/5", 0)], 5, sprops=b"\x06\x0b\xff\xff\xff\xff\x01"), close_v5())

MORE_BAD_UTF8 = {
    "overlong 3-byte": b"\xe0\x80\xaf",
    "code point above U+10FFFF": b"\xf4\x90\x80\x80",
    "byte 0xF8": b"\xf8\x88\x80\x80\x80",
    "lone continuation byte": b"\x80",
    "surrogate U+DFFF": b"\xed\xbf\xbf",
}
for label, bad in MORE_BAD_UTF8.items():
    table(f"3.1.1 PUBLISH topic with {label}", UTF, 4, publish_pkt(b"m/" + bad, b"x"),
          close_v4())
    table(f"5.0 SUBSCRIBE filter with {label}", UTF + " (5.0 [MQTT-1.5.4-1])", 5,
          subscribe_pkt(2, [(b"m/" + bad, 0)], 5), close_v5())
for label, pp in [("Content Type", p_str(0x03, "a") + p_str(0x03, "b")),
                  ("Response Topic", p_str(0x08, "r/1") + p_str(0x08, "r/2")),
                  ("Correlation Data", p_str(0x09, b"1") + p_str(0x09, b"2")),
                  ("Message Expiry Interval", p_u32(0x02, 5) + p_u32(0x02, 6))]:
    table(f"5.0 PUBLISH duplicate {label}", DUPPROP.format(f"the {label}"), 5,
          publish_pkt("p/dup", b"x", version=5, pprops=props(pp)), close_v5())
table("5.0 will properties with duplicate Will Delay Interval", DUPPROP.format(
    "the Will Delay Interval"), None,
    connect_pkt(5, will=("w/wd", b"m", 0, False, p_u32(0x18, 1) + p_u32(0x18, 2))),
    close_connect_v5())


# ---- nothing after a violation is processed --------------------------------------------------


def not_processed(name, statement, version, build, exp, will_allowed=True):
    """`build(topic, will_topic)` returns bytes that end in a violation followed by a valid
    PUBLISH to `topic` (and may carry a will on `will_topic`); the broker must answer per
    `exp` and deliver neither the PUBLISH nor (unless will_allowed) the will. A marker
    published afterwards by another client proves nothing was delivered before it."""

    def run(env):
        topic = new_id("after/")
        w = Watcher(env, topic + "/#")
        try:
            c = Conn(env, version)
            try:
                c.send(build(topic + "/data", topic + "/will"))
                err = evaluate(c, exp)
            finally:
                c.close()
            if err:
                return err
            m, _ = do_connect(env, 4)
            m.send(publish_pkt(topic + "/marker", b"marker"))
            m.send(disconnect_pkt())
            m.close()
            while True:
                p = w.wait_for_any()
                if p is None:
                    return "the marker was not received"
                t = p.publish_fields()[0]
                if t.endswith(b"/marker"):
                    return None
                if t.endswith(b"/will") and will_allowed:
                    continue
                return f"{p!r} was delivered: data after the violation was processed"
        finally:
            w.close()

    CASES.append(Case(name, statement, run))


not_processed("3.1.1 PUBLISH after a rejected CONNECT (bad level) is not processed", s311(
    "3.1.4-5", "If the Server rejects the CONNECT, it MUST NOT process any data sent by the "
    "Client after the CONNECT Packet"), 4,
    lambda t, w: connect_pkt(4, level=9) + publish_pkt(t, b"x"),
    Expect("close", connack=frozenset({0x01, 0x84}), need_connack=True))
not_processed("3.1.1 rejected CONNECT (zero-length id, clean 0): no will, no PUBLISH", s311(
    "3.1.4-5") + "; " + s311("3.1.2-8") + " a will is stored only if the Connect request is "
    "accepted", 4,
    lambda t, w: connect_pkt(4, cid=b"", clean=False, will=(w, b"will", 0, False))
    + publish_pkt(t, b"x"),
    Expect("close", connack=frozenset({0x02}), need_connack=True), will_allowed=False)
not_processed("5.0 PUBLISH after a rejected CONNECT (bad auth method) is not processed",
              "[MQTT-3.1.4-6] If the Server rejects the CONNECT, it MUST NOT process any "
              "data sent by the Client after the CONNECT packet except AUTH packets", 5,
              lambda t, w: connect_pkt(5, cprops=p_str(0x15, "X-NO-SUCH"),
                                       will=(w, b"will", 0, False))
              + publish_pkt(t, b"x", version=5),
              Expect("close", connack=frozenset({0x8C, 0x87})), will_allowed=False)
not_processed("3.1.1 PUBLISH after a QoS 3 PUBLISH is not processed", QOS3 + "; the "
              "connection is closed at the violation", 4,
              lambda t, w: connect_pkt(4) + publish_pkt("q/3", b"x", header=0x36, pid=1)
              + publish_pkt(t, b"x"),
              Expect("close", connack=frozenset({0x00})))
not_processed("5.0 PUBLISH after a malformed SUBSCRIBE is not processed", "[MQTT-4.13.1-1] "
              "the connection is closed at the Malformed Packet", 5,
              lambda t, w: connect_pkt(5) + subscribe_pkt(1, [("x", 3)], 5)
              + publish_pkt(t, b"x", version=5),
              Expect("close", connack=frozenset({0x00}), disconnect=MALFORMED))


@case("5.0 Topic Alias mappings do not carry over to a new connection", "[MQTT-3.3.2-7] A "
      "receiver MUST NOT carry forward any Topic Alias mappings from one Network Connection "
      "to another; an empty topic with an unmapped alias is a Protocol Error")
def _(env):
    if env.limits.topic_alias_max < 1:
        raise Skip("the broker accepts no Topic Aliases")
    cid = new_id("alias-carry-")
    c, _ = do_connect(env, 5, cid=cid, clean=False)
    c.send(publish_pkt(new_id("ac/"), b"x", version=5, pprops=props(p_u16(0x23, 1))))
    ok, seen, end = ping_barrier(c)
    c.send(disconnect_pkt(5, 0x00))
    c.close()
    if not ok:
        return f"first connection: {end} ({seen})"
    c, _ = do_connect(env, 5, cid=cid, clean=True)
    try:
        c.send(publish_pkt("", b"y", version=5, pprops=props(p_u16(0x23, 1))))
        return evaluate(c, close_v5(0x82, 0x94))
    finally:
        c.close()


@case("5.0 largest Subscription Identifier is returned with the message", "5.0 3.8.2.1.2: 1 "
      "to 268,435,455; [MQTT-3.3.4-3] the Server MUST send the Subscription Identifiers in the "
      "message published as the result of the subscription")
def _(env):
    c, _ = do_connect(env, 5)
    try:
        topic = new_id("subid/")
        c.send(subscribe_pkt(1, [(topic, 0)], 5, sprops=props(p_vbi(0x0B, 268435455))))
        p = c.recv()
        if not isinstance(p, Pkt) or p.type != SUBACK or p.suback_codes() != [0]:
            return f"SUBACK [0x00] expected, got {p!r}"
        c.send(publish_pkt(topic, b"s", version=5))
        p = c.recv()
        if not isinstance(p, Pkt) or p.type != PUBLISH:
            return f"PUBLISH expected, got {p!r}"
        ids = p.publish_fields()[3].get(0x0B)
        if ids != [268435455]:
            return f"Subscription Identifier {ids}, expected [268435455]"
        return evaluate(c, cont())
    finally:
        c.close()


@case("5.0 will properties are forwarded with the will", "[MQTT-3.1.3-10] The Server MUST "
      "maintain the order of User Properties when publishing the Will Message; Content Type "
      "and Payload Format Indicator are sent unaltered ([MQTT-3.3.2-4], [MQTT-3.3.2-20])")
def _(env):
    topic = new_id("willprops/")
    w = Watcher(env, topic, version=5)
    try:
        c, _ = do_connect(env, 5, will=(topic, b"bye", 0, False,
                                        p_byte(0x01, 1) + p_str(0x03, "text/x")
                                        + p_pair("a", "1") + p_pair("a", "2")))
        c.send(b"\x36\x00")  # QoS 3 PUBLISH: malformed, the will must go out
        err = evaluate(c, close_v5())
        c.close()
        if err:
            return err
        p = w.wait_for(topic)
        if p is None:
            return "the will was not published"
        pr = p.publish_fields()[3]
        want = {0x01: [1], 0x03: [b"text/x"], 0x26: [(b"a", b"1"), (b"a", b"2")]}
        for k, v in want.items():
            if pr.get(k) != v:
                return f"will property 0x{k:02X}: got {pr.get(k)}, want {v}"
        return None
    finally:
        w.close()


# ---- keep alive ------------------------------------------------------------------------------


def keepalive_case(version):
    name = (f"{'5.0' if version == 5 else '3.1.1'} keep alive 1 s expires after 1.5 s and "
            f"publishes the will")

    @case(name, s311("3.1.2-24", "If the Keep Alive value is non-zero and the Server does not "
                     "receive a Control Packet from the Client within one and a half times "
                     "the Keep Alive time period, it MUST disconnect the Network Connection")
          + (" (5.0 [MQTT-3.1.2-22]; Server Keep Alive from CONNACK applies; DISCONNECT "
             "0x8D allowed)"
             if version == 5 else ""))
    def _(env):
        will_topic = new_id("kawill/")
        w = Watcher(env, will_topic)
        c = Conn(env, version)
        try:
            c.send(connect_pkt(version, ka=1, will=(will_topic, b"ka", 0, False)))
            sent = time.monotonic()
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != CONNACK or p.reason() != 0:
                return f"CONNACK 0x00 expected, got {p!r}"
            ka = 1
            if version == 5:
                ka = p.connack_props().get(0x13, [1])[0]
            if ka == 0 or ka > 2:
                raise Skip(f"the server chose Server Keep Alive {ka}")
            p = c.recv(ka * 1.5 + 3.0)
            while isinstance(p, Pkt) and version == 5 and p.type == DISCONNECT:
                if p.reason() != 0x8D:
                    return f"DISCONNECT {p!r}, expected 0x8D (Keep Alive timeout)"
                p = c.recv(3.0)
            took = time.monotonic() - sent
            if p != "closed":
                return f"expected the close, got {p!r} after {took:.2f}s"
            # The client must send within the keep alive ([MQTT-3.1.2-22]); the server must
            # close after 1.5 times it. Allow 1.2 s for a loaded machine.
            if not (ka - 0.05 <= took <= ka * 1.5 + 1.2):
                return (f"closed after {took:.2f}s, expected between {ka:.1f}s and "
                        f"{ka * 1.5:.1f}s")
            # 3.1.1 3.1.2.5 / 5.0 3.1.2.5: the will is published when the server closes
            # the connection for a keep alive timeout.
            if w.wait_for(will_topic) is None:
                return "closed for keep alive, but the will was not published"
            return None
        finally:
            c.close()
            w.close()


keepalive_case(4)
keepalive_case(5)

# ---- overload --------------------------------------------------------------------------------


@case("overload: 200 connections that never finish CONNECT", "5.0 4.13 / 3.1.1 4.8: only "
      "the offending connections are affected; a new client still connects at once")
def _(env):
    socks = []
    try:
        for _ in range(200):
            sk = socket.create_connection((env.host, env.port), timeout=TIMEOUT)
            sk.sendall(b"\x10\x20\x00\x04MQ")
            socks.append(sk)
        start = time.monotonic()
        c, _ = do_connect(env, 4)
        took = time.monotonic() - start
        err = evaluate(c, cont())
        c.close()
        if err:
            return err
        if took > 1.0:
            return f"a new client waited {took:.2f}s for its CONNACK"
        return None
    finally:
        for sk in socks:
            sk.close()


@case("overload: slow consumer flooded with 5 MB", "memory stays bounded and the publisher "
      "keeps its session (the bystander must not stall)")
def _(env):
    topic = new_id("flood/")
    slow = Conn(env, 4)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.send(connect_pkt(4))
    p = slow.recv()
    if not isinstance(p, Pkt) or p.type != CONNACK:
        return f"slow consumer CONNACK expected, got {p!r}"
    slow.send(subscribe_pkt(1, [(topic, 0)]))
    p = slow.recv()
    if not isinstance(p, Pkt) or p.type != SUBACK:
        return f"slow consumer SUBACK expected, got {p!r}"
    pub, _ = do_connect(env, 4)
    try:
        msg = publish_pkt(topic, b"z" * 1024)
        chunk = msg * 100
        pub.sock.settimeout(TIMEOUT)
        start = time.monotonic()
        for _ in range(50):
            try:
                pub.sock.sendall(chunk)
            except OSError as e:
                return f"publisher cut off while flooding: {e}"
        err = evaluate(pub, cont())
        if err:
            return f"publisher: {err}"
        took = time.monotonic() - start
        if took > TIMEOUT:
            return f"5 MB took {took:.1f}s"
        return None
    finally:
        pub.close()
        slow.close()


@case("overload: a '#' subscriber that never reads while 5 MB is published", "only the "
      "slow client is affected: other publishers (the bystander) keep their flow, memory "
      "stays bounded")
def _(env):
    slow = Conn(env, 4)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        slow.send(connect_pkt(4))
        p = slow.recv()
        if not isinstance(p, Pkt) or p.type != CONNACK:
            return f"slow subscriber CONNACK expected, got {p!r}"
        slow.send(subscribe_pkt(1, [("#", 1)]))
        while True:
            p = slow.recv()
            if not isinstance(p, Pkt):
                return f"slow subscriber SUBACK expected, got {p!r}"
            if p.type == SUBACK:
                break
        pub, _ = do_connect(env, 4)
        try:
            chunk = publish_pkt(new_id("flood-all/"), b"z" * 1024) * 100
            start = time.monotonic()
            for _ in range(50):
                pub.sock.sendall(chunk)
            err = evaluate(pub, cont())
            if err:
                return f"publisher: {err}"
            took = time.monotonic() - start
            if took > TIMEOUT:
                return f"5 MB took {took:.1f}s"
            return None
        finally:
            pub.close()
    finally:
        slow.close()


def start_flood(env, prefix, stop, errs):
    """Starts a thread publishing 1 KiB QoS 0 messages to a topic of its own as fast as the
    socket takes them, until `stop`; a failure is appended to `errs`. Returns the thread."""
    def flood():
        try:
            pub, _ = do_connect(env, 4)
            chunk = publish_pkt(new_id(prefix), b"z" * 1024) * 20
            pub.sock.settimeout(TIMEOUT)
            while not stop.is_set():
                pub.sock.sendall(chunk)
            pub.close()
        except (OSError, Setup) as e:
            errs.append(f"the flooding publisher failed: {e}")

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    return thread


def pair_kept_half_its_rate(pair, took, report):
    """None if the pair sent at least half its nominal messages over `took` seconds."""
    nominal = took / PERIOD
    if pair.sent < nominal / 2:
        return (f"expected at least {nominal / 2:.0f} of the pair's {nominal:.0f} nominal "
                f"messages, got {pair.sent} in {took:.1f}s "
                f"({100 * pair.sent / nominal:.0f}%; {report})")
    return None


@case("overload: slow '#' subscribers joining one after another during a flood",
      "Issue 7: a bystander client must keep its message flow; only the slow clients may "
      "suffer. A private QoS 1 pair (one message per 20 ms) must keep at least half its rate "
      "while 8 never-reading '#' subscribers join 0.45 s apart")
def _(env):
    pair = Bystander(env)
    stop = threading.Event()
    flood_err = []
    slows = []
    start = time.monotonic()
    flooder = start_flood(env, "flood-stream/", stop, flood_err)
    try:
        for _ in range(8):
            stop.wait(0.45)
            slow = Conn(env, 4)
            slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.send(connect_pkt(4) + subscribe_pkt(1, [("#", 0)]))
            slows.append(slow)
        stop.wait(0.4)
    finally:
        stop.set()
        took = time.monotonic() - start
        ok, report = pair.finish()
        flooder.join(TIMEOUT)
        for slow in slows:
            slow.close()
    if flood_err:
        return flood_err[0]
    if not ok:
        return f"the pair's flow broke: {report}"
    return pair_kept_half_its_rate(pair, took, report)


@case("overload: a '#' subscriber that reads slowly during a flood",
      "Issue 7: a bystander client must keep its message flow. A '#' subscriber that keeps "
      "reading, but only 4 KiB every 10 ms, while a publisher floods: a private QoS 1 pair "
      "(one message per 20 ms) must keep at least half its rate and never wait 0.3 s")
def _(env):
    pair = Bystander(env)
    stop = threading.Event()
    errs = []

    def slow_reader():
        try:
            slow = Conn(env, 4)
            slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.send(connect_pkt(4) + subscribe_pkt(1, [("#", 0)]))
            slow.sock.settimeout(TIMEOUT)
            got = 0
            while not stop.is_set():
                chunk = slow.sock.recv(4096)
                if not chunk:
                    errs.append("the slow reader was disconnected")
                    return
                got += len(chunk)
                stop.wait(0.010)
            slow.close()
            if got == 0:
                errs.append("the slow reader received nothing")
        except (OSError, Setup) as e:
            errs.append(f"the slow reader failed: {e}")

    reader = threading.Thread(target=slow_reader, daemon=True)
    start = time.monotonic()
    threads = [start_flood(env, "flood-slowread/", stop, errs), reader]
    try:
        reader.start()
        stop.wait(4.0)
    finally:
        stop.set()
        took = time.monotonic() - start
        ok, report = pair.finish()
        for t in threads:
            t.join(TIMEOUT)
    if errs:
        return errs[0]
    if not ok:
        return f"the pair's flow broke: {report}"
    if pair.max_gap > 0.3 or pair.max_ack_wait > 0.3:
        return f"the pair waited too long: {report}"
    return pair_kept_half_its_rate(pair, took, report)


@case("overload: 300 connections sending malformed packets at once", "5.0 4.13 / 3.1.1 4.8: "
      "each offending connection is closed; the others (and the bystander) are unaffected")
def _(env):
    garbage = [b"\x36\x00", b"\x00\x00", b"\xf0\x00", b"\x62\x00", b"\x30" + FIVE,
               b"\xc0\x01\x00", subscribe_pkt(1, [("x", 3)]), publish_pkt("a/#", b"x")]
    conns = []
    try:
        for i in range(300):
            sk = socket.create_connection((env.host, env.port), timeout=TIMEOUT)
            sk.sendall(connect_pkt(4, cid=new_id("storm-")) + garbage[i % len(garbage)])
            conns.append(sk)
        deadline = time.monotonic() + TIMEOUT
        open_left = 0
        for sk in conns:
            buf = b""
            while True:
                sk.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = sk.recv(4096)
                except socket.timeout:
                    open_left += 1
                    break
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
            if not buf.startswith(b"\x20\x02\x00\x00"):
                return f"a storm connection got {buf[:8]!r} instead of CONNACK 0x00"
        if open_left:
            return f"{open_left} of 300 offending connections still open after {TIMEOUT:.0f}s"
        c, _ = do_connect(env, 4)
        err = evaluate(c, cont())
        c.close()
        return err
    finally:
        for sk in conns:
            sk.close()


@case("robustness: 400 seeded random byte strings after CONNECT", "4.8 / 4.13: whatever "
      "arrives, the broker closes or keeps serving that one connection; it never stops "
      "serving others (seed 7, reproducible)")
def _(env):
    import random
    rng = random.Random(7)
    for i in range(400):
        version = (4, 5)[i % 2]
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        c = Conn(env, version)
        try:
            c.send(connect_pkt(version, cid=new_id("fuzz-")) + junk)
            p = c.recv()
            if not isinstance(p, Pkt) or p.type != CONNACK:
                return f"random case {i} ({junk.hex()}): CONNACK expected, got {p!r}"
        finally:
            c.close()
    c, _ = do_connect(env, 4)
    err = evaluate(c, cont())
    c.close()
    return err


# ------------------------------------------------------------------------------------------
# Bystander


class Bystander:
    """A QoS 1 publisher and subscriber pair (MQTT 3.1.1) on their own topic, exchanging a
    numbered message every PERIOD seconds for the whole run."""

    def __init__(self, env):
        self.topic = new_id("bystander/")
        self.sub, _ = do_connect(env, 4, cid=new_id("bys-sub-"))
        self.sub.send(subscribe_pkt(1, [(self.topic, 1)]))
        p = self.sub.recv()
        if not isinstance(p, Pkt) or p.type != SUBACK or p.suback_codes() != [1]:
            raise Setup(f"bystander SUBSCRIBE failed: {p!r}")
        self.pub, _ = do_connect(env, 4, cid=new_id("bys-pub-"))
        self.stop = threading.Event()
        self.published_all = threading.Event()
        self.errors = []
        self.sent = 0
        self.received = []
        self.max_ack_wait = 0.0
        self.max_gap = 0.0
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._publish, daemon=True),
                        threading.Thread(target=self._subscribe, daemon=True)]
        for t in self.threads:
            t.start()

    def _publish(self):
        pid = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            pid = pid % 65535 + 1
            seq = self.sent + 1
            t0 = time.monotonic()
            if not self.pub.send(publish_pkt(self.topic, str(seq).encode(), 1, pid)):
                self.errors.append(f"publisher connection lost at message {seq}")
                return
            while True:
                p = self.pub.recv(TIMEOUT)
                if not isinstance(p, Pkt):
                    self.errors.append(f"publisher: {p} waiting for PUBACK of message {seq}")
                    return
                if p.type == PUBACK and p.packet_id() == pid:
                    break
                if p.type != PINGRESP:
                    self.errors.append(f"publisher: unexpected {p!r}")
                    return
            self.sent = seq
            self.max_ack_wait = max(self.max_ack_wait, time.monotonic() - t0)
            next_at += PERIOD
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                next_at = time.monotonic()

    def _subscribe(self):
        last = time.monotonic()
        while True:
            p = self.sub.recv(0.5)
            now = time.monotonic()
            if p == "timeout":
                if self.published_all.is_set() and len(self.received) >= self.sent:
                    return
                if now - last > TIMEOUT + 1:
                    self.errors.append("subscriber: no message for over 6 s")
                    return
                continue
            if not isinstance(p, Pkt):
                self.errors.append(f"subscriber connection {p} after "
                                   f"{len(self.received)} messages")
                return
            if p.type != PUBLISH:
                self.errors.append(f"subscriber: unexpected {p!r}")
                return
            _, qos, pid, _, payload = p.publish_fields()
            if qos == 1:
                self.sub.send(ack_pkt(PUBACK, pid))
            if self.received:
                self.max_gap = max(self.max_gap, now - last)
            last = now
            self.received.append(int(payload))

    def finish(self):
        """Stops the flow and returns (ok, report)."""
        self.stop.set()
        self.threads[0].join(TIMEOUT + 1)
        self.published_all.set()
        self.threads[1].join(TIMEOUT + 2)
        for c in (self.pub, self.sub):
            c.send(disconnect_pkt())
            c.close()
        want = list(range(1, self.sent + 1))
        problems = list(self.errors)
        if self.received != want:
            missing = sorted(set(want) - set(self.received))
            problems.append(f"received {len(self.received)} of {self.sent} messages "
                            f"(missing {missing[:10]}, order ok: "
                            f"{self.received == sorted(self.received)})")
        if self.max_gap > STALL:
            problems.append(f"delivery stalled for {self.max_gap:.2f}s")
        if self.max_ack_wait > STALL:
            problems.append(f"a PUBACK took {self.max_ack_wait:.2f}s")
        nominal = (time.monotonic() - self.started) / PERIOD
        report = (f"{self.sent} messages ({100 * self.sent / max(nominal, 1):.0f}% of the "
                  f"nominal rate), longest delivery gap {self.max_gap:.3f}s, slowest PUBACK "
                  f"{self.max_ack_wait:.3f}s")
        if problems:
            return False, "; ".join(problems) + f" ({report})"
        return True, report


# ------------------------------------------------------------------------------------------
# Main


class Limits:
    """The broker's limits as announced in an MQTT 5 CONNACK (spec defaults when absent)."""

    def __init__(self, env):
        c, p = do_connect(env, 5)
        pr = p.connack_props()
        c.send(disconnect_pkt(5, 0))
        c.close()
        self.receive_max = pr.get(0x21, [65535])[0]  # 3.2.2.3.3: absent = 65,535
        self.max_packet = pr.get(0x27, [None])[0]  # 3.2.2.3.6: absent = no limit
        self.topic_alias_max = pr.get(0x22, [0])[0]  # 3.2.2.3.8: absent = 0
        self.server_keep_alive = pr.get(0x13, [None])[0]

    def __str__(self):
        return (f"Receive Maximum {self.receive_max}, Maximum Packet Size {self.max_packet}, "
                f"Topic Alias Maximum {self.topic_alias_max}, Server Keep Alive "
                f"{self.server_keep_alive}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def run_case(env, c):
    start = time.monotonic()
    try:
        err = c.fn(env)
    except Skip as e:
        err = Skip(str(e))
    except Setup as e:
        err = f"setup failed: {e}"
    except Exception as e:  # noqa: BLE001 - a crashing case is a failed case
        err = f"the case raised {type(e).__name__}: {e}"
    return err, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--only", default=None, help="run only cases whose name contains this")
    parser.add_argument("--broker-pid", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=8, help="cases run concurrently")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    env = parser.parse_args()
    cases = [c for c in CASES if env.only is None or env.only.lower() in c.name.lower()]
    names = [c.name for c in CASES]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        print(f"FAIL duplicate case names: {sorted(dupes)}")
        return 1
    if env.list:
        for c in cases:
            print(c.name)
        return 0
    started = time.monotonic()
    env.limits = Limits(env)
    print(f"broker limits from CONNACK: {env.limits}", flush=True)
    rss_before = rss_kib(env.broker_pid) if env.broker_pid else None
    bystander = Bystander(env)
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, env.jobs)) as pool:
        futures = {pool.submit(run_case, env, c): c for c in cases}
        for f in concurrent.futures.as_completed(futures):
            results[futures[f].name] = f.result()
    passed = failed = skipped = 0
    for c in cases:
        err, took = results[c.name]
        if isinstance(err, Skip):
            skipped += 1
            print(f"SKIP {c.name} [{c.statement}]: {err}")
        elif err is None:
            passed += 1
            print(f"PASS {c.name} [{c.statement}]")
        else:
            failed += 1
            if not err.startswith("expected"):
                err = f"expected what the statement says, got {err}"
            print(f"FAIL {c.name} [{c.statement}]: {err} ({took:.2f}s)")
    ok, report = bystander.finish()
    print(f"{'PASS' if ok else 'FAIL'} bystander [4.8/4.13: only the offending connection is "
          f"closed; QoS 1 flow every {PERIOD * 1000:.0f} ms, no gap, no stall > {STALL}s]: "
          f"{report}")
    rss_ok = True
    if env.broker_pid:
        rss_after = rss_kib(env.broker_pid)
        grown = rss_after - rss_before
        rss_ok = grown < RSS_BOUND_KIB
        print(f"{'PASS' if rss_ok else 'FAIL'} broker memory [bounded]: RSS {rss_before} KiB "
              f"-> {rss_after} KiB ({grown:+d} KiB, bound +{RSS_BOUND_KIB} KiB)")
    took = time.monotonic() - started
    print(f"summary: {len(cases)} cases, {passed} passed, {failed} failed, {skipped} skipped; "
          f"bystander "
          f"{'ok' if ok else 'FAILED'}; {took:.1f}s")
    sys.stdout.flush()
    return 0 if failed == 0 and ok and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
