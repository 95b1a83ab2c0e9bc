"""The test DNS server helper (tests/dns/testdns.py) that integration tests point Postern at."""
import os
import socket
import struct

import pytest

from testdns import QTYPES, DNSServer


def test_default_zones(tmp_path):
    with DNSServer(tmp_path / "dns") as dns:
        assert dns.resolver == "127.0.0.1:%d" % dns.port
        rcode, aa, answers = dns.query("example.test", "MX")
        assert rcode == 0 and aa
        prefs = sorted(struct.unpack(">H", rdata[:2])[0] for t, rdata in answers if t == QTYPES["MX"])
        assert prefs == [10, 20, 30]
        rcode, aa, answers = dns.query("nosuch.example.test", "A")
        assert rcode == 3 and answers == []
        rcode, _, answers = dns.query("1.2.0.192.in-addr.arpa", "PTR")
        assert rcode == 0 and len(answers) == 1
        # not served: refused, the server does not recurse
        rcode, _, _ = dns.query("example.org", "A")
        assert rcode == 5


def test_zones_from_text(tmp_path):
    zone = """$ORIGIN relay.test.
$TTL 60
@   SOA ns hostmaster 1 3600 600 86400 60
@   NS  ns
ns  A   127.0.0.1
@   MX  10 mx
mx  A   127.0.0.5
"""
    with DNSServer(tmp_path / "dns", zones={"relay.test": zone}) as dns:
        rcode, _, answers = dns.query("mx.relay.test", "A")
        assert rcode == 0
        assert answers == [(QTYPES["A"], socket.inet_aton("127.0.0.5"))]


def test_signed_zone(tmp_path):
    dns = DNSServer(tmp_path / "dns")
    anchor = dns.sign("signed.test", os.path.join(os.path.dirname(__file__), "signed",
                                                 "signed.test.zone"))
    with open(anchor) as f:
        assert " DS " in f.read().replace("\t", " ")
    with dns:
        rcode, _, answers = dns.query("signed.test", "DNSKEY")
        assert rcode == 0 and any(t == QTYPES["DNSKEY"] for t, _ in answers)
        # the altered record is served as altered
        _, _, answers = dns.query("bad.signed.test", "A")
        assert answers == [(QTYPES["A"], socket.inet_aton("192.0.2.99"))]
        # the plain zones are still there
        rcode, _, _ = dns.query("example.test", "SOA")
        assert rcode == 0
    with pytest.raises(OSError):
        dns.query("example.test", "SOA", timeout=0.3)
