"""
A private authoritative DNS server (NSD) for integration tests.

It serves zone files on 127.0.0.1 at a free port and does not recurse; point
Postern at it with `[dns] resolver = <server.resolver>` (the resolver forwards
everything there, see src/dns/dns.h). The work is done by testdns.sh beside
this file, which src/dns/test-dns.c uses too.

    import sys; sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
    from testdns import DNSServer

    with DNSServer(tmp_path / "dns", zones={"relay.test": ZONE_TEXT}) as dns:
        anchor = None  # or dns.sign("signed.test") before start() for DNSSEC
        ... config "[dns]\\nresolver = %s\\n" % dns.resolver ...

Zones come from a directory of <origin>.zone files (default: tests/dns/zones)
or a dict {origin: zone text}. Every wait is bounded; only 127.0.0.1 is used.
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "testdns.sh")
DEFAULT_ZONES = os.path.join(HERE, "zones")

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
          "AAAA": 28, "DS": 43, "RRSIG": 46, "DNSKEY": 48, "TLSA": 52}


def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port for the test DNS server")


def _skip_name(msg, pos):
    for _ in range(128):
        n = msg[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + n
    raise ValueError("name too long")


class DNSServer:
    def __init__(self, rundir, zones=None):
        self.rundir = os.path.abspath(str(rundir))
        self.zonedir = os.path.join(self.rundir, "zones")
        os.makedirs(self.zonedir, exist_ok=True)
        if zones is None:
            zones = DEFAULT_ZONES
        if isinstance(zones, dict):
            for origin, text in zones.items():
                with open(os.path.join(self.zonedir, origin.rstrip(".") + ".zone"), "w") as f:
                    f.write(text)
        else:
            for name in os.listdir(str(zones)):
                if name.endswith(".zone"):
                    shutil.copy(os.path.join(str(zones), name), self.zonedir)
        self.port = None
        self.proc = None

    @property
    def resolver(self):
        """The value for [dns] resolver."""
        return "127.0.0.1:%d" % self.port

    def sign(self, origin, zonefile=None):
        """DNSSEC-sign zone `origin` (zonefile, default the one already here) with a fresh key;
        names starting with "bad." get a broken signature. Call before start(). Returns the
        trust anchor file (the key's DS)."""
        origin = origin.rstrip(".")
        src = zonefile or os.path.join(self.zonedir, origin + ".zone")
        if os.path.dirname(os.path.abspath(src)) == self.zonedir:
            keep = os.path.join(self.rundir, origin + ".unsigned")
            shutil.move(src, keep)
            src = keep
        subprocess.run(["sh", SCRIPT, "sign", src, origin, self.zonedir], check=True, timeout=60)
        return os.path.join(self.zonedir, origin + ".ds")

    def start(self):
        zones = sorted(n[:-5] for n in os.listdir(self.zonedir) if n.endswith(".zone"))
        if not zones:
            raise RuntimeError("no zones to serve in %s" % self.zonedir)
        for _ in range(5):
            self.port = _free_port()
            log = open(os.path.join(self.rundir, "nsd.out"), "ab")
            self.proc = subprocess.Popen(
                ["sh", SCRIPT, "run", self.rundir, str(self.port), self.zonedir],
                stdout=log, stderr=log, start_new_session=True)
            log.close()
            r = subprocess.run(["sh", SCRIPT, "wait", str(self.port), zones[0]], timeout=30)
            if r.returncode == 0:
                return self
            self.stop()
        raise RuntimeError("the test DNS server did not start; see %s/nsd.log" % self.rundir)

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # NSD's server processes are in the same group; wait until they are gone.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def query(self, name, qtype, timeout=2.0):
        """Ask the server directly (RD=0). Returns (rcode, aa, [(type, rdata bytes), ...])."""
        qid = int.from_bytes(os.urandom(2), "big")
        q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
        for label in name.rstrip(".").split("."):
            q += bytes([len(label)]) + label.encode()
        q += b"\0" + struct.pack(">HH", QTYPES.get(qtype, qtype) if isinstance(qtype, str)
                                 else qtype, 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            s.sendto(q, ("127.0.0.1", self.port))
            deadline = time.monotonic() + timeout
            while True:
                msg, _ = s.recvfrom(65535)
                if msg[:2] == q[:2] or time.monotonic() > deadline:
                    break
        finally:
            s.close()
        flags, qd, an = struct.unpack(">HHH", msg[2:8])
        pos = 12
        for _ in range(qd):
            pos = _skip_name(msg, pos) + 4
        answers = []
        for _ in range(an):
            pos = _skip_name(msg, pos)
            rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
            pos += 10
            answers.append((rtype, msg[pos:pos + rdlen]))
            pos += rdlen
        return flags & 0xF, bool(flags & 0x0400), answers
