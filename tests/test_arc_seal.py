"""ARC sealing of forwarded mail (issue 5, item 5; RFC 8617 5.1).

Mail from the internet for an alias of ours that forwards to an external address leaves with
an ARC set of the alias's domain on top: ARC-Authentication-Results carrying the results our
SMTP session computed, ARC-Message-Signature and ARC-Seal, signed with the domain's RSA DKIM
key (the domain also has an Ed25519 key: RSA is the one every ARC verifier understands). The
external domain's MX is a conftest Sink on 127.0.0.2, found through a private NSD
(tests/dns/testdns.py) that also publishes the sender's keys and ours; what the sink receives
must verify with dkimpy's ARC verifier (python3-dkim), the keys looked up in that NSD.
Submitted mail forwarded the same way is DKIM-signed, not sealed.

Helpers (rsa_key, zone, txt_rdata) are copied from tests/test_auth_inbound.py."""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from conftest import (DOMAIN, HOSTNAME, ROOT, Sink, _make, base_dir, finish, free_port_on, header,
                      make_message, send)

import dkim

sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
from testdns import DNSServer  # noqa: E402

SENDER_DOMAIN = "auth.test"
SELECTOR = "sel"
EXTERNAL = "fwd.test"
SINK_HOST = "127.0.0.2"
ARC_SUITE = os.path.join(ROOT, "..", "shared", "vectors", "arc-valimail",
                         "arc-draft-validation-tests.yml")


def txt_rdata(value):
    """A TXT value as zone-file character-strings of at most 255 octets."""
    return " ".join('"%s"' % value[i:i + 255] for i in range(0, len(value), 255))


def rsa_key(tmp):
    """(private PEM, TXT value) of a fresh RSA-2048 key, made with openssl."""
    pem_path = os.path.join(tmp, "sender.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", pem_path], check=True, capture_output=True, timeout=60)
    der = subprocess.run(["openssl", "pkey", "-in", pem_path, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=60).stdout
    with open(pem_path, "rb") as f:
        pem = f.read()
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def zone(origin, records):
    text = ("$ORIGIN %s.\n$TTL 300\n@ SOA ns.%s. hostmaster.%s. 1 3600 600 86400 60\n"
            "@ NS ns.%s.\nns A 127.0.0.1\n" % (origin, origin, origin, origin))
    for name, rtype, value in records:
        text += "%s %s %s\n" % (name, rtype, txt_rdata(value) if rtype == "TXT" else value)
    return text


def arc_vectors():
    """{test name: test} and the TXT records of the ValiMail ARC suite's first document."""
    import yaml
    with open(ARC_SUITE) as f:
        doc = next(yaml.safe_load_all(f))
    return doc["tests"], doc["txt-records"]


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env()
    tmp = tempfile.mkdtemp(prefix="arcseal-", dir=base_dir())
    e.sender_pem, sender_txt = rsa_key(tmp)
    e.port = free_port_on([SINK_HOST])
    p = _make(tmp_path_factory, "arcseal", limits={"messages_per_ip_per_minute": "100000"})
    p.must("dkim", "keygen", DOMAIN, "--selector", "ed", "--algorithm", "ed25519")
    p.must("dkim", "keygen", DOMAIN, "--selector", "rsa", "--algorithm", "rsa2048")
    keys = json.loads(p.must("dkim", "list", "--json").stdout)
    own = {k["selector"]: k["txt"] for k in keys}
    assert set(own) == {"ed", "rsa"}, keys
    p.must("alias", "add", "fwd@" + DOMAIN, "friend@" + EXTERNAL)
    p.must("alias", "add", "both@" + DOMAIN, "b@%s,pal@%s" % (DOMAIN, EXTERNAL))
    zones = {
        SENDER_DOMAIN: zone(SENDER_DOMAIN, [
            ("@", "TXT", "v=spf1 ip4:127.0.0.0/8 -all"),
            ("%s._domainkey" % SELECTOR, "TXT", sender_txt),
            ("_dmarc", "TXT", "v=DMARC1; p=reject"),
            ("quar", "TXT", "v=spf1 -all"),
            ("_dmarc.quar", "TXT", "v=DMARC1; p=quarantine"),
        ]),
        # the sealer of the ValiMail suite's chains (its author domain has no DMARC here)
        "example.org": zone("example.org", [
            (name.replace(".example.org", ""), "TXT", value)
            for name, value in arc_vectors()[1].items()]),
        DOMAIN: zone(DOMAIN, [
            ("@", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
        ] + [("%s._domainkey" % s, "TXT", t) for s, t in own.items()]),
        EXTERNAL: zone(EXTERNAL, [("@", "MX", "10 mx"), ("mx", "A", SINK_HOST)]),
    }
    e.dns = DNSServer(os.path.join(tmp, "dns"), zones=zones).start()
    p.write_config(extra={"dns": {"resolver": e.dns.resolver},
                          "queue": {"remote_port": str(e.port), "retry_min": "1s",
                                    "retry_max": "2s", "connect_timeout": "3s",
                                    "command_timeout": "10s"}})
    e.sink = Sink(SINK_HOST, e.port, name="fwd").start()
    p.start()
    e.p = p
    yield e
    try:
        finish(p)
    finally:
        e.sink.stop()
        e.dns.stop()


def dnsfunc_of(env):
    """dkimpy's TXT lookup, answered by the test NSD."""
    def txt(name, timeout=5):
        rcode, _aa, answers = env.dns.query(name.decode().rstrip("."), "TXT")
        for rtype, rdata in answers:
            if rtype != 16:
                continue
            out, i = b"", 0
            while i < len(rdata):
                n = rdata[i]
                out += rdata[i + 1:i + 1 + n]
                i += 1 + n
            return out
        return None
    return txt


def message(subject, sender, to, extra=""):
    return make_message(subject, body="Hello from %s.\r\n" % sender, sender=sender, to=to,
                        extra_headers="Date: Mon, 23 Nov 2026 01:00:00 +0000\r\n" + extra)


def signed(msg, pem):
    sig = dkim.sign(msg, SELECTOR.encode(), SENDER_DOMAIN.encode(), pem,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + msg


def forwarded(env, msg, mail_from, rcpt, marker, smtp=None):
    """Send `msg` to our alias `rcpt`; the copy the external MX (the sink) receives."""
    before = len(env.sink.messages)
    c = smtp or env.p.smtp()
    code, text = send(c, mail_from, [rcpt], msg)
    assert code == 250, (code, text)
    c.quit()
    msgs = env.sink.wait(before + 1, timeout=30)
    mine = [m for m in msgs[before:] if marker in m["content"]]
    assert mine, [m["content"][:200] for m in msgs[before:]]
    return mine[0]


def arc_fields(content, name):
    return header(content, name)


def test_forwarded_mail_is_sealed_and_verifies_with_dkimpy(env):
    msg = signed(message("sealed one", "alice@" + SENDER_DOMAIN, "fwd@" + DOMAIN),
                 env.sender_pem)
    got = forwarded(env, msg, "alice@" + SENDER_DOMAIN, "fwd@" + DOMAIN, b"sealed one")
    assert got["rcpt_tos"] == ["friend@" + EXTERNAL]
    content = got["content"]
    seal = arc_fields(content, "ARC-Seal")
    ams = arc_fields(content, "ARC-Message-Signature")
    aar = arc_fields(content, "ARC-Authentication-Results")
    assert len(seal) == len(ams) == len(aar) == 1, (seal, ams, aar)
    assert re.search(r"i=1; a=rsa-sha256; cv=none; d=example\.test; s=rsa;", seal[0]), seal
    assert "i=1;" in ams[0] and "c=relaxed/relaxed;" in ams[0] and " l=" not in ams[0], ams
    assert "arc-seal" not in ams[0].lower(), ams
    # the AAR carries the results our session put in Authentication-Results
    ar = [v for v in header(content, "Authentication-Results") if v.startswith(HOSTNAME + ";")]
    assert len(ar) == 1, header(content, "Authentication-Results")
    assert aar[0] == "i=1; " + ar[0], (aar, ar)
    assert "spf=pass" in ar[0] and "dkim=pass" in ar[0] and "dmarc=pass" in ar[0], ar
    # the set is on top of the message
    names = [k.lower() for k, _ in __import__("conftest").headers_of(content)]
    assert names[:3] == ["arc-seal", "arc-message-signature", "arc-authentication-results"], names
    cv, results, reason = dkim.arc_verify(content, dnsfunc=dnsfunc_of(env))
    assert cv == dkim.CV_Pass, (cv, results, reason)
    assert [r["instance"] for r in results] == [1], results
    # the sender's own DKIM signature still verifies after forwarding
    assert dkim.verify(content, dnsfunc=dnsfunc_of(env))
    assert re.search(r"event=arc_sealed key=example\.test/rsa cv=none", env.p.log())


def test_arriving_chain_gets_the_next_instance(env):
    # a two-hop chain sealed by example.org (ValiMail suite, cv_pass_i2_1) arrives for the alias:
    # our verifier finds it passing, so we add i=3 with cv=pass
    tests, _ = arc_vectors()
    msg = tests["cv_pass_i2_1"]["message"].replace("\n", "\r\n").encode()
    got = forwarded(env, msg, "bounce@other." + SENDER_DOMAIN, "fwd@" + DOMAIN,
                    b"This is a test message")
    content = got["content"]
    seal = arc_fields(content, "ARC-Seal")
    assert len(seal) == 3, seal
    assert re.search(r"i=3; a=rsa-sha256; cv=pass; d=example\.test; s=rsa;", seal[0]), seal
    aar = arc_fields(content, "ARC-Authentication-Results")
    assert aar[0].startswith("i=3; %s;" % HOSTNAME) and "arc=pass (i=2 d=example.org)" in aar[0]
    cv, results, reason = dkim.arc_verify(content, dnsfunc=dnsfunc_of(env))
    assert cv == dkim.CV_Pass, (cv, results, reason)
    assert sorted(r["instance"] for r in results) == [1, 2, 3], results


def test_broken_arriving_chain_is_sealed_fail(env):
    tests, _ = arc_vectors()
    msg = tests["cv_pass_i2_1"]["message"].replace("\n", "\r\n").encode()
    msg = msg.replace(b"This is a test", b"This is a tost")
    got = forwarded(env, msg, "bounce@other." + SENDER_DOMAIN, "fwd@" + DOMAIN,
                    b"This is a tost message")
    seal = arc_fields(got["content"], "ARC-Seal")
    assert len(seal) == 3 and re.search(r"i=3; a=rsa-sha256; cv=fail;", seal[0]), seal
    # dkimpy: None, "the chain is terminated" by our cv=fail; our own AMS verifies. (dkimpy
    # checks a cv=fail seal over all sets; RFC 8617 5.1.2 has it sign only its own set, as
    # ours does, so dkimpy's as-valid is not asserted: no verifier needs it, cv=fail ends
    # the chain, RFC 8617 5.2 step 2)
    cv, results, reason = dkim.arc_verify(got["content"], dnsfunc=dnsfunc_of(env))
    assert cv is None and "ARC-Seal[3] reported failure" in reason, (cv, reason)
    assert results[0]["instance"] == 3 and results[0]["ams-valid"], results


def test_local_copy_and_external_copy_carry_the_same_set(env):
    msg = signed(message("sealed both", "alice@" + SENDER_DOMAIN, "both@" + DOMAIN),
                 env.sender_pem)
    b = "b@" + DOMAIN
    before = len(env.p.maildir(b))
    got = forwarded(env, msg, "alice@" + SENDER_DOMAIN, "both@" + DOMAIN, b"sealed both")
    assert got["rcpt_tos"] == ["pal@" + EXTERNAL]
    local = [m for m in env.p.wait_for_delivery(b, before + 1) if b"sealed both" in m]
    assert local
    assert header(local[0], "ARC-Seal") == header(got["content"], "ARC-Seal")
    cv, _results, reason = dkim.arc_verify(got["content"], dnsfunc=dnsfunc_of(env))
    assert cv == dkim.CV_Pass, reason


def test_submitted_mail_is_not_sealed(env):
    # our own user's mail to the alias: DKIM-signed for example.test, no ARC set
    msg = message("submitted fwd", "a@" + DOMAIN, "fwd@" + DOMAIN)
    got = forwarded(env, msg, "a@" + DOMAIN, "fwd@" + DOMAIN, b"submitted fwd",
                    smtp=env.p.submit())
    content = got["content"]
    assert not arc_fields(content, "ARC-Seal"), content[:600]
    assert not arc_fields(content, "ARC-Message-Signature")
    assert header(content, "DKIM-Signature")
    assert dkim.verify(content, dnsfunc=dnsfunc_of(env))


def test_mail_for_a_local_user_is_not_sealed(env):
    b = "b@" + DOMAIN
    before = len(env.p.maildir(b))
    c = env.p.smtp()
    code, text = send(c, "alice@" + SENDER_DOMAIN, [b],
                      signed(message("plain local", "alice@" + SENDER_DOMAIN, b), env.sender_pem))
    assert code == 250, text
    c.quit()
    local = [m for m in env.p.wait_for_delivery(b, before + 1) if b"plain local" in m]
    assert local and not header(local[0], "ARC-Seal")


def test_quarantined_and_forwarded_keeps_the_mark_first(env):
    # DMARC p=quarantine fails: the local copy goes to Junk (the mark stays the spool's first
    # line, above our ARC set) and the forwarded copy is sealed with the dmarc=fail results
    sender = "bob@quar." + SENDER_DOMAIN
    b = "b@" + DOMAIN
    before = len(env.p.maildir(b, "Junk"))
    got = forwarded(env, message("quarantined both", sender, "both@" + DOMAIN), sender,
                    "both@" + DOMAIN, b"quarantined both")
    import time
    deadline = time.monotonic() + 15
    while len(env.p.maildir(b, "Junk")) <= before:
        assert time.monotonic() < deadline, "not delivered to %s .Junk" % b
        time.sleep(0.05)
    # in Junk: the delivery agent found the mark on the spool file's first line
    local = [m for m in env.p.maildir(b, "Junk") if b"quarantined both" in m]
    assert local and header(local[0], "X-Postern-Quarantine"), local
    assert header(local[0], "ARC-Seal") == header(got["content"], "ARC-Seal")
    aar = arc_fields(got["content"], "ARC-Authentication-Results")
    assert len(aar) == 1 and "dmarc=fail" in aar[0], aar
    cv, _results, reason = dkim.arc_verify(got["content"], dnsfunc=dnsfunc_of(env))
    assert cv == dkim.CV_Pass, reason
