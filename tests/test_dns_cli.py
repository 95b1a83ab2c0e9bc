"""`postern dns DOMAIN [--check] [--json]`: the records printed are pasted into a real NSD
(tests/dns/testdns.py) and --check reports them OK; a zone with each record broken reports
each as MISSING or WRONG and exits non-zero."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, check_sanitizers, postern_bin

sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
from testdns import DNSServer  # noqa: E402

DOMAIN = "example.test"
HOST = "mx.example.test"
IP = "192.0.2.10"
REVERSE = "2.0.192.in-addr.arpa"
LINE = re.compile(r"^(OK|MISSING|WRONG|ERROR) +(\S+) +(\S+): (.*)$")


def soa(origin):
    return ("$ORIGIN %s.\n$TTL 60\n@ SOA ns.%s. hostmaster.%s. 1 3600 600 86400 60\n"
            "@ NS ns.%s.\n" % (origin, DOMAIN, DOMAIN, DOMAIN))


class Site:
    """A data directory for example.test with DKIM keys, and a DNS server for it."""

    def __init__(self, tmp):
        self.dir = str(tmp)
        self.data_dir = os.path.join(self.dir, "data")
        self.conf = os.path.join(self.dir, "postern.conf")
        self.write_conf("127.0.0.1:1")
        self.ok("init")
        self.ok("domain", "add", DOMAIN)
        self.ok("dkim", "keygen", DOMAIN)
        self.dns = None

    def write_conf(self, resolver):
        with open(self.conf, "w") as f:
            f.write("[server]\nhostname = %s\ndata_dir = %s\n" % (HOST, self.data_dir))
            f.write("[listen]\nsmtp = 127.0.0.1:25\nsubmission = 127.0.0.1:587\n"
                    "submissions = \n")
            f.write("[dns]\nresolver = %s\n" % resolver)

    def run(self, *args):
        env = dict(os.environ)
        env.pop("POSTERN_CONFIG", None)
        r = subprocess.run([postern_bin(), "-c", self.conf] + list(args), capture_output=True,
                           timeout=180, env=env, cwd=self.dir)
        check_sanitizers(r.stderr.decode(errors="replace"), "postern " + " ".join(args))
        return r

    def ok(self, *args):
        r = self.run(*args)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout.decode()

    def serve(self, zone_lines, reverse_lines, extra=None):
        """Start NSD with the given records (zone-file lines with absolute names); `extra`:
        {origin: [lines]} for more zones."""
        fwd = soa(DOMAIN) + "ns A 127.0.0.1\n" + "\n".join(zone_lines) + "\n"
        rev = soa(REVERSE) + "\n".join(reverse_lines) + "\n"
        zones = {DOMAIN: fwd, REVERSE: rev}
        for origin, lines in (extra or {}).items():
            zones[origin] = soa(origin) + "\n".join(lines) + "\n"
        self.dns = DNSServer(os.path.join(self.dir, "dns"), zones=zones)
        self.dns.start()
        self.write_conf(self.dns.resolver)

    def check(self, *extra):
        r = self.run("dns", DOMAIN, "--check", "--ip", IP, *extra)
        return r.returncode, r.stdout.decode()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    if s.dns is not None:
        s.dns.stop()


def zone_of(text):
    """The record lines of `postern dns` output, split into the forward and the reverse zone."""
    fwd, rev = [], []
    for line in text.splitlines():
        if not line or line.startswith(";"):
            continue
        assert re.match(r"^\S+\. IN [A-Z]+ ", line), line
        (rev if line.split()[0].endswith(REVERSE + ".") else fwd).append(line)
    return fwd, rev


def results(out):
    """[(status, kind, name, found)] of --check output."""
    return [LINE.match(l).groups() for l in out.splitlines() if LINE.match(l)]


def test_print_zone(site):
    out = site.ok("dns", DOMAIN, "--ip", IP)
    keys = json.loads(site.ok("dkim", "list", "--json"))
    assert "%s. IN MX 10 %s." % (DOMAIN, HOST) in out
    assert "%s. IN A %s" % (HOST, IP) in out
    assert "10.%s. IN PTR %s." % (REVERSE, HOST) in out
    assert '%s. IN TXT "v=spf1 mx -all"' % DOMAIN in out
    assert '_dmarc.%s. IN TXT "v=DMARC1; p=none"' % DOMAIN in out
    assert "quarantine" in out and "reject" in out
    assert "_submission._tcp.%s. IN SRV 0 1 587 %s." % (DOMAIN, HOST) in out
    # submissions is off in [listen]; IMAP/POP3 are not provided yet
    for svc in ("_submissions", "_imap", "_imaps", "_pop3s"):
        assert "%s._tcp.%s. IN SRV 0 0 0 ." % (svc, DOMAIN) in out
    for k in keys:
        line = [l for l in out.splitlines() if l.startswith(k["name"] + ". IN TXT")]
        assert len(line) == 1
        assert "".join(re.findall(r'"([^"]*)"', line[0])) == k["txt"]
    # without an address: marked for the admin to fill in
    out = site.ok("dns", DOMAIN, "--ip", "")
    assert "<YOUR-IPV4>" in out
    # JSON
    data = json.loads(site.ok("dns", DOMAIN, "--ip", IP, "--json"))
    assert data["domain"] == DOMAIN and data["hostname"] == HOST and data["addresses"] == [IP]
    kinds = {r["kind"] for r in data["records"]}
    assert {"MX", "A", "PTR", "SPF", "DKIM", "DMARC", "SRV"} <= kinds
    # errors
    assert site.run("dns", "other.test").returncode == 1
    assert site.run("dns", DOMAIN, "--ip", "not-an-ip").returncode == 2


def test_check_correct_zone(site):
    fwd, rev = zone_of(site.ok("dns", DOMAIN, "--ip", IP))
    site.serve(fwd, rev)
    rc, out = site.check()
    res = results(out)
    assert rc == 0, out
    assert res and all(st == "OK" for st, _, _, _ in res), out
    kinds = [k for _, k, _, _ in res]
    for kind in ("MX", "A", "PTR", "SPF", "DKIM", "DMARC", "SRV"):
        assert kind in kinds, out
    assert kinds.count("DKIM") == 2
    assert "forward-confirmed" in out
    assert "All records" in out
    # JSON of the check
    rc, out = site.check("--json")
    data = json.loads(out)
    assert rc == 0 and data["ok"] is True
    assert all(r["status"] == "OK" for r in data["records"] if "status" in r)


def test_check_broken_zone(site):
    fwd, rev = zone_of(site.ok("dns", DOMAIN, "--ip", IP))
    keys = json.loads(site.ok("dkim", "list", "--json"))
    rsa = [k for k in keys if k["algorithm"] == "rsa2048"][0]
    ed = [k for k in keys if k["algorithm"] == "ed25519"][0]
    # a key that is not ours for the ed25519 selector
    site.ok("dkim", "keygen", DOMAIN, "--selector", "spare", "--algorithm", "ed25519")
    spare = [k for k in json.loads(site.ok("dkim", "list", "--json")) if k["selector"] == "spare"][0]
    site.ok("dkim", "del", DOMAIN, "spare", "--force")
    broken = []
    for line in fwd:
        name, _, rtype = line.split()[:3]
        if rtype == "MX":
            line = "%s. IN MX 10 elsewhere.example.net." % DOMAIN
        elif name.startswith("_dmarc."):
            continue  # missing
        elif name.startswith(rsa["selector"] + "."):
            continue  # missing
        elif name.startswith(ed["selector"] + "."):
            line = '%s. IN TXT "%s"' % (ed["name"], spare["txt"])  # another key
        elif name == DOMAIN + "." and "spf1" in line:
            line = '%s. IN TXT "v=spf1 ip4:198.51.100.1 -all"' % DOMAIN  # not covering us
        elif name.startswith("_submission._tcp."):
            continue  # missing
        elif name.startswith("_imaps._tcp."):
            line = "_imaps._tcp.%s. IN SRV 0 1 993 %s." % (DOMAIN, HOST)  # not offered here
        broken.append(line)
    broken.append("other.example.test. IN A 192.0.2.77")
    rev = ["10.%s. IN PTR other.example.test." % REVERSE]
    site.serve(broken, rev)
    rc, out = site.check()
    assert rc == 1, out
    got = {}
    for st, kind, name, found in results(out):
        got[(kind, name)] = (st, found)
    assert got[("MX", DOMAIN)][0] == "WRONG" and "elsewhere.example.net" in got[("MX", DOMAIN)][1]
    assert got[("A", HOST)][0] == "OK"
    ptr = got[("PTR", "10." + REVERSE)]
    assert ptr[0] == "WRONG" and "other.example.test" in ptr[1], out
    spf = got[("SPF", DOMAIN)]
    assert spf[0] == "WRONG" and "fail" in spf[1], out
    assert got[("SPF", HOST)][0] == "OK", out  # the HELO record is intact
    assert got[("DKIM", rsa["name"])][0] == "MISSING", out
    dk = got[("DKIM", ed["name"])]
    assert dk[0] == "WRONG" and "different key" in dk[1], out
    assert got[("DMARC", "_dmarc." + DOMAIN)][0] == "MISSING", out
    assert got[("SRV", "_submission._tcp." + DOMAIN)][0] == "MISSING", out
    assert got[("SRV", "_imaps._tcp." + DOMAIN)][0] == "WRONG", out
    assert got[("SRV", "_imap._tcp." + DOMAIN)][0] == "OK", out
    # every problem comes with the record to publish
    assert "publish: _dmarc.%s. IN TXT" % DOMAIN in out
    assert "ask your provider for: 10.%s. IN PTR %s." % (REVERSE, HOST) in out
    data = json.loads(site.check("--json")[1])
    assert data["ok"] is False
    st = {(r["kind"], r["name"]): r.get("status") for r in data["records"]}
    assert st[("DMARC", "_dmarc." + DOMAIN)] == "MISSING"
    assert st[("MX", DOMAIN)] == "WRONG"


def test_check_without_known_address_uses_dns(site):
    """No --ip and no public interface address: the A record found is used for PTR/SPF."""
    fwd, rev = zone_of(site.ok("dns", DOMAIN, "--ip", IP))
    site.serve(fwd, rev)
    r = site.run("dns", DOMAIN, "--check", "--ip", "")
    out = r.stdout.decode()
    res = {(k, n): (s, f) for s, k, n, f in results(out)}
    assert res[("A", HOST)][0] == "OK" and IP in res[("A", HOST)][1], out
    assert res[("PTR", "10." + REVERSE)][0] == "OK", out
    assert res[("SPF", DOMAIN)][0] == "OK", out
    assert r.returncode == 0, out


def test_check_no_dkim_key_and_dead_resolver(tmp_path):
    s = Site(tmp_path)
    for k in json.loads(s.ok("dkim", "list", "--json")):
        s.ok("dkim", "del", DOMAIN, k["selector"], "--force")
    out = s.ok("dns", DOMAIN, "--ip", IP)
    assert "postern dkim keygen %s" % DOMAIN in out
    # resolver 127.0.0.1:1 answers nothing: every record reported, exit 1, bounded time
    rc, out = s.check()
    assert rc == 1
    res = results(out)
    assert any(k == "DKIM" and st == "MISSING" for st, k, _, _ in res), out
    # lookups that fail are ERROR (not checked), never OK, and come with no advice to publish
    assert all(st == "ERROR" for st, k, _, _ in res if k != "DKIM"), out
    assert "publish:" not in out


def test_check_dnsbl(site):
    """--dnsbl: RFC 5782 lookups of the server's address; listed, clean, and refused answers."""
    fwd, rev = zone_of(site.ok("dns", DOMAIN, "--ip", IP))
    site.serve(fwd, rev, extra={
        "bl.test": ["10.2.0.192.bl.test. IN A 127.0.0.2",
                    '10.2.0.192.bl.test. IN TXT "listed for testing"'],
        "clean.test": ["2.0.0.127.clean.test. IN A 127.0.0.2"],
        "refusing.test": ["10.2.0.192.refusing.test. IN A 127.255.255.254"],
    })
    rc, out = site.check("--dnsbl", "clean.test")
    assert rc == 0, out
    res = {(k, n): (s, f) for s, k, n, f in results(out)}
    assert res[("DNSBL", "10.2.0.192.clean.test")][0] == "OK", out
    rc, out = site.check("--dnsbl", "bl.test,clean.test,refusing.test")
    assert rc == 1, out
    res = {(k, n): (s, f) for s, k, n, f in results(out)}
    st, found = res[("DNSBL", "10.2.0.192.bl.test")]
    assert st == "WRONG" and "127.0.0.2" in found and "listed for testing" in found, out
    assert "ask bl.test to remove" in out
    assert res[("DNSBL", "10.2.0.192.clean.test")][0] == "OK", out
    st, found = res[("DNSBL", "10.2.0.192.refusing.test")]
    assert st == "ERROR" and "refused" in found, out
    # every other record is still fine
    assert all(s == "OK" for s, k, _, _ in results(out) if k != "DNSBL"), out
    assert site.run("dns", DOMAIN, "--check", "--dnsbl", "bad zone/").returncode == 2


def test_check_ipv6(site):
    """Both address families: AAAA, the ip6.arpa PTR (forward-confirmed), SPF pass for both."""
    ip6, rev6 = "2001:db8::10", "8.b.d.0.1.0.0.2.ip6.arpa"
    text = site.ok("dns", DOMAIN, "--ip", "%s,%s" % (IP, ip6))
    assert "%s. IN AAAA %s" % (HOST, ip6) in text
    fwd, rev, rev6_lines = [], [], []
    for line in text.splitlines():
        if not line or line.startswith(";"):
            continue
        owner = line.split()[0]
        (rev6_lines if owner.endswith(rev6 + ".") else rev if owner.endswith(REVERSE + ".")
         else fwd).append(line)
    assert len(rev6_lines) == 1 and rev6_lines[0].startswith("0.1.0.0." + "0." * 20 + rev6 + ". IN PTR ")
    site.serve(fwd, rev, extra={rev6: rev6_lines})
    r = site.run("dns", DOMAIN, "--check", "--ip", "%s,%s" % (IP, ip6))
    out = r.stdout.decode()
    res = results(out)
    assert r.returncode == 0, out
    assert [k for _, k, _, _ in res].count("PTR") == 2, out
    assert ("OK", "AAAA") in [(s_, k) for s_, k, _, _ in res], out
    assert "pass for every address" in out
    # the AAAA record missing: MISSING, and the v6 PTR no longer forward-confirms
    site.dns.stop()
    site.serve([l for l in fwd if " AAAA " not in l], rev, extra={rev6: rev6_lines})
    r = site.run("dns", DOMAIN, "--check", "--ip", "%s,%s" % (IP, ip6))
    out = r.stdout.decode()
    got = {(k, n): (s_, f) for s_, k, n, f in results(out)}
    assert r.returncode == 1
    assert got[("AAAA", HOST)][0] == "MISSING", out
    ptr6 = [v for (k, n), v in got.items() if k == "PTR" and n.endswith(rev6)][0]
    assert ptr6[0] == "WRONG" and "does not resolve back" in ptr6[1], out
    spf = got[("SPF", DOMAIN)]
    assert spf[0] == "WRONG" and ip6 in spf[1], out
