"""`postern dkim keygen|list|rotate|del`: keys on disk, their state, and that the printed TXT
record matches the private key (checked by dkimpy, python3-dkim, signing with the stored key)."""
import base64
import json
import os
import re
import stat
import subprocess
import time

import pytest

from conftest import check_sanitizers, postern_bin

import dkim

DOMAIN = "keys.test"
MESSAGE = (b"From: Alice <alice@keys.test>\r\nTo: bob@example.org\r\nSubject: key check\r\n"
           b"Date: Sun, 22 Nov 2026 12:00:00 +0000\r\nMessage-ID: <k1@keys.test>\r\n\r\n"
           b"Hello, this message is signed.\r\n")


class Cli:
    """A data directory with one domain, and the postern command pointed at it."""

    def __init__(self, tmp):
        self.dir = str(tmp)
        self.data_dir = os.path.join(self.dir, "data")
        self.conf = os.path.join(self.dir, "postern.conf")
        with open(self.conf, "w") as f:
            f.write("[server]\nhostname = mx.keys.test\ndata_dir = %s\n" % self.data_dir)
        self.ok("init")
        self.ok("domain", "add", DOMAIN)

    def run(self, *args):
        env = dict(os.environ)
        env.pop("POSTERN_CONFIG", None)
        r = subprocess.run([postern_bin(), "-c", self.conf] + list(args), capture_output=True,
                           timeout=120, env=env, cwd=self.dir)
        check_sanitizers(r.stderr.decode(errors="replace"), "postern " + " ".join(args))
        return r

    def ok(self, *args):
        r = self.run(*args)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout.decode()

    def fails(self, *args, code=1):
        r = self.run(*args)
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        return r.stderr.decode()

    def keys(self):
        return json.loads(self.ok("dkim", "list", "--json"))

    def pem(self, selector, domain=DOMAIN):
        with open(os.path.join(self.data_dir, "dkim", domain, selector + ".pem"), "rb") as f:
            return f.read()


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path)


def published(out):
    """{name: joined TXT value} from the zone-file lines a command printed."""
    recs = {}
    for line in out.splitlines():
        m = re.match(r'^(\S+)\. IN TXT ((?:"[^"]*" ?)+)$', line)
        if m:
            recs[m.group(1)] = "".join(re.findall(r'"([^"]*)"', m.group(2)))
    return recs


def sign_and_verify(pem, selector, alg, txt, domain=DOMAIN):
    """Sign MESSAGE with dkimpy using our stored private key; verify against `txt`."""
    if alg == "ed25519":
        # PKCS#8 Ed25519: the 32-byte seed ends the DER (RFC 8410 7); dkimpy takes it in base64
        der = base64.b64decode(b"".join(l for l in pem.splitlines() if not l.startswith(b"-----")))
        key, sigalg = base64.b64encode(der[-32:]), b"ed25519-sha256"
    else:
        key, sigalg = pem, b"rsa-sha256"
    sig = dkim.sign(MESSAGE, selector.encode(), domain.encode(), key,
                    include_headers=[b"from", b"to", b"subject", b"date"], signature_algorithm=sigalg)
    name = "%s._domainkey.%s." % (selector, domain)

    def dnsfunc(qname, timeout=5):
        q = qname.decode() if isinstance(qname, bytes) else qname
        return txt.encode() if q.rstrip(".") == name.rstrip(".") else None

    return dkim.verify(sig + MESSAGE, dnsfunc=dnsfunc)


def test_keygen_both_algorithms_and_the_txt_verifies(cli):
    out = cli.ok("dkim", "keygen", DOMAIN)
    recs = published(out)
    keys = cli.keys()
    assert sorted(k["algorithm"] for k in keys) == ["ed25519", "rsa2048"]
    month = time.strftime("%Y%m", time.gmtime())
    for k in keys:
        assert k["domain"] == DOMAIN and k["state"] == "active"
        assert k["selector"] == "postern%s%s" % (month, "e" if k["algorithm"] == "ed25519" else "r")
        # the record printed is the record listed, and it is the key on disk
        assert recs[k["name"]] == k["txt"]
        assert k["txt"].startswith("v=DKIM1; k=%s; p=" % ("ed25519" if k["algorithm"] == "ed25519"
                                                           else "rsa"))
        path = os.path.join(cli.data_dir, "dkim", DOMAIN, k["selector"] + ".pem")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert sign_and_verify(cli.pem(k["selector"]), k["selector"], k["algorithm"], k["txt"])
    # a record of another key does not verify the signature
    rsa = [k for k in keys if k["algorithm"] == "rsa2048"][0]
    ed = [k for k in keys if k["algorithm"] == "ed25519"][0]
    cli.ok("dkim", "keygen", DOMAIN, "--selector", "other", "--algorithm", "rsa2048")
    other = [k for k in cli.keys() if k["selector"] == "other"][0]
    assert not sign_and_verify(cli.pem(rsa["selector"]), rsa["selector"], "rsa2048", other["txt"])
    assert not sign_and_verify(cli.pem(ed["selector"]), ed["selector"], "ed25519", rsa["txt"])
    # RSA record longer than 255 octets: split into several strings on one line
    rsa_line = [l for l in out.splitlines() if l.startswith(rsa["selector"] + ".")][0]
    assert rsa_line.count('" "') >= 1


def test_keygen_options_and_refusals(cli):
    out = cli.ok("dkim", "keygen", DOMAIN, "--selector", "sel1", "--algorithm", "ed25519")
    assert "sel1._domainkey.%s." % DOMAIN in out
    keys = cli.keys()
    assert [(k["selector"], k["algorithm"]) for k in keys] == [("sel1", "ed25519")]
    assert sign_and_verify(cli.pem("sel1"), "sel1", "ed25519", keys[0]["txt"])
    # the same selector again, an unknown domain, a bad selector or algorithm
    assert "already exists" in cli.fails("dkim", "keygen", DOMAIN, "--selector", "sel1",
                                         "--algorithm", "rsa2048")
    assert "not a local domain" in cli.fails("dkim", "keygen", "other.test")
    cli.fails("dkim", "keygen", DOMAIN, "--selector", "../x", code=2)
    cli.fails("dkim", "keygen", DOMAIN, "--selector", "a/b", code=2)
    cli.fails("dkim", "keygen", DOMAIN, "--algorithm", "rsa1024", code=2)
    assert len(cli.keys()) == 1
    # --selector without --algorithm: both keys, with suffixes
    cli.ok("dkim", "keygen", DOMAIN, "--selector", "s2")
    assert {k["selector"] for k in cli.keys()} == {"sel1", "s2r", "s2e"}


def test_rotate_retires_and_del(cli):
    cli.ok("dkim", "keygen", DOMAIN)
    before = {k["selector"]: k for k in cli.keys()}
    out = cli.ok("dkim", "rotate", DOMAIN)
    assert "few days" in out
    after = cli.keys()
    assert len(after) == 4
    for k in after:
        if k["selector"] in before:
            assert k["state"] == "retired"
            assert k["txt"] == before[k["selector"]]["txt"]
        else:
            assert k["state"] == "active"
    active = [k for k in after if k["state"] == "active"]
    assert sorted(k["algorithm"] for k in active) == ["ed25519", "rsa2048"]
    recs = published(out)
    for k in active:
        assert recs[k["name"]] == k["txt"]
        assert sign_and_verify(cli.pem(k["selector"]), k["selector"], k["algorithm"], k["txt"])
    # the retired keys are still there (old mail verifies) and can then be deleted
    old = sorted(before)[0]
    assert os.path.exists(os.path.join(cli.data_dir, "dkim", DOMAIN, old + ".pem"))
    cli.ok("dkim", "del", DOMAIN, old)
    assert old not in {k["selector"] for k in cli.keys()}
    assert not os.path.exists(os.path.join(cli.data_dir, "dkim", DOMAIN, old + ".pem"))
    # an active key is not deleted without --force
    assert "active" in cli.fails("dkim", "del", DOMAIN, active[0]["selector"])
    cli.fails("dkim", "del", DOMAIN, "nosuch")
    # list as text
    text = cli.ok("dkim", "list")
    for k in cli.keys():
        assert "%s %s %s %s" % (DOMAIN, k["selector"], k["algorithm"], k["state"]) in text
        assert k["txt"] in text


def test_rotate_keeps_the_algorithms(cli):
    cli.ok("dkim", "keygen", DOMAIN, "--algorithm", "ed25519", "--selector", "only")
    cli.ok("dkim", "rotate", DOMAIN)
    keys = cli.keys()
    assert [(k["algorithm"], k["state"]) for k in keys if k["selector"] == "only"] == [
        ("ed25519", "retired")]
    assert [k["algorithm"] for k in keys if k["state"] == "active"] == ["ed25519"]


def test_list_empty(cli):
    assert cli.keys() == []
    assert cli.ok("dkim", "list") == ""
