"""Mail authentication on the SMTP path (issue 5): SPF, DKIM and DMARC of mail from the internet
(Authentication-Results, p=reject -> 550 5.7.1, p=quarantine -> Junk, forged results removed) and
DKIM signing of submitted mail (verified by dkimpy, python3-dkim, and by our own inbound check).

A private NSD server (tests/dns/testdns.py) serves the zones: auth.test (a sender with SPF, a
DKIM key made here and DMARC p=reject, and subdomains with other policies) and example.test (our
own domain, with the TXT records of the keys `postern dkim keygen` made). The client connects
from 127.0.0.1, which the test configuration does not trust, so its mail is checked."""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from conftest import (DOMAIN, HOSTNAME, ROOT, PASSWORD, _make, base_dir, finish, header,
                      make_message, send)

import dkim

sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
from testdns import DNSServer  # noqa: E402

SENDER_DOMAIN = "auth.test"
SELECTOR = "sel"


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


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env()
    tmp = tempfile.mkdtemp(prefix="auth-", dir=base_dir())
    e.sender_pem, sender_txt = rsa_key(tmp)
    # our server, with keys for its own domain (both algorithms sign, RFC 8463)
    p = _make(tmp_path_factory, "auth", limits={"messages_per_ip_per_minute": "100000"})
    p.must("dkim", "keygen", DOMAIN, "--selector", "ed", "--algorithm", "ed25519")
    p.must("dkim", "keygen", DOMAIN, "--selector", "rsa", "--algorithm", "rsa2048")
    keys = json.loads(p.must("dkim", "list", "--json").stdout)
    e.own_keys = {k["selector"]: k["txt"] for k in keys}
    assert set(e.own_keys) == {"ed", "rsa"}, keys
    zones = {
        SENDER_DOMAIN: zone(SENDER_DOMAIN, [
            ("@", "TXT", "v=spf1 ip4:127.0.0.0/8 -all"),
            ("%s._domainkey" % SELECTOR, "TXT", sender_txt),
            ("_dmarc", "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@auth.test"),
            ("quar", "TXT", "v=spf1 -all"),
            ("_dmarc.quar", "TXT", "v=DMARC1; p=quarantine"),
            ("client", "A", "127.0.0.1"),
            ("forged", "A", "127.0.0.9"),
            ("lax", "TXT", "v=spf1 -all"),
            ("_dmarc.lax", "TXT", "v=DMARC1; p=none"),
        ]),
        # FCrDNS: .1 confirmed, .3 a PTR name that does not point back, .4 no PTR,
        # .5 a PTR lookup that fails (CNAME into a zone nobody serves: REFUSED)
        "127.in-addr.arpa": zone("127.in-addr.arpa", [
            ("1.0.0", "PTR", "client.auth.test."),
            ("3.0.0", "PTR", "forged.auth.test."),
            ("5.0.0", "CNAME", "x.elsewhere.example."),
        ]),
        # the key of the ValiMail ARC suite's sealer
        "example.org": zone("example.org", [
            (name.replace(".example.org", ""), "TXT", value)
            for name, value in arc_vectors()[1].items()] + [
            # the suite's author domain asks for p=reject: its mail arrives only through
            # the forwarder, without a signature of its own
            ("_dmarc.d1", "TXT", "v=DMARC1; p=reject"),
        ]),
        DOMAIN: zone(DOMAIN, [
            ("@", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
            ("_dmarc", "TXT", "v=DMARC1; p=reject"),
        ] + [("%s._domainkey" % s, "TXT", t) for s, t in e.own_keys.items()]),
    }
    e.dns = DNSServer(os.path.join(tmp, "dns"), zones=zones).start()
    p.write_config(extra={"dns": {"resolver": e.dns.resolver}})
    p.start()
    e.p = p
    yield e
    try:
        finish(p)
    finally:
        e.dns.stop()


def message(subject, sender, to="a@" + DOMAIN, extra=""):
    return make_message(subject, body="Hello from %s.\r\n" % sender, sender=sender, to=to,
                        extra_headers="Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n" + extra)


def signed(msg, pem, domain=SENDER_DOMAIN, selector=SELECTOR):
    sig = dkim.sign(msg, selector.encode(), domain.encode(), pem,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return sig + msg


def deliver(p, msg, mail_from, to="a@" + DOMAIN, folder="", marker=None):
    """Send on the smtp listener from 127.0.0.1; return the delivered copy (bytes)."""
    before = len(p.maildir(to, folder))
    c = p.smtp()
    code, text = send(c, mail_from, [to], msg)
    assert code == 250, (code, text)
    c.quit()
    import time
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        msgs = p.maildir(to, folder)
        if len(msgs) > before:
            subj = marker or re.search(rb"Subject: ([^\r\n]*)", msg).group(1)
            mine = [m for m in msgs if subj in m]
            if mine:
                return mine[-1]
        time.sleep(0.05)
    raise AssertionError("not delivered to %s %s" % (to, folder))


def ar_of(msg):
    """Our Authentication-Results (unfolded) of a delivered message."""
    return [v for v in header(msg, "Authentication-Results") if v.startswith(HOSTNAME + ";")]


def test_spf_dkim_dmarc_pass(env):
    msg = signed(message("pass all", "alice@auth.test"), env.sender_pem)
    got = deliver(env.p, msg, "alice@auth.test")
    ar = ar_of(got)
    assert len(ar) == 1, header(got, "Authentication-Results")
    assert re.search(r"spf=pass .*smtp\.mailfrom=alice@auth\.test", ar[0]), ar
    assert re.search(r"dkim=pass .*header\.d=auth\.test header\.s=sel header\.b=\S{8}", ar[0]), ar
    assert re.search(r"dmarc=pass \(p=reject dis=none\) header\.from=auth\.test", ar[0]), ar
    # the HELO identity is checked too (client.example.test: no SPF record there)
    assert re.search(r"spf=none .*smtp\.helo=client\.example\.test", ar[0]), ar
    # the client's FCrDNS (127.0.0.1 -> client.auth.test -> 127.0.0.1)
    assert "iprev=pass (client.auth.test) policy.iprev=127.0.0.1" in ar[0], ar
    # above our Received header, which is above the sender's signature
    names = [k.lower() for k, _ in __import__("conftest").headers_of(got)]
    assert names.index("authentication-results") < names.index("received") < \
        names.index("dkim-signature")
    assert not header(got, "X-Postern-Quarantine")
    assert "event=auth_results" in env.p.log()


def test_dkim_fails_when_body_changed_spf_still_aligns(env):
    msg = signed(message("tampered", "alice@auth.test"), env.sender_pem)
    msg = msg.replace(b"Hello from", b"Hullo from")
    got = deliver(env.p, msg, "alice@auth.test")
    ar = ar_of(got)[0]
    assert "dkim=fail" in ar and "spf=pass" in ar and "dmarc=pass" in ar, ar


def test_forged_from_with_p_reject_is_refused(env):
    c = env.p.smtp()
    before = len(env.p.maildir("a@" + DOMAIN))
    code, text = send(c, "bounce@other.auth.test", ["a@" + DOMAIN],
                      message("forged ceo", "ceo@auth.test"))
    assert code == 550, (code, text)
    assert text.startswith("5.7.1") and "DMARC" in text and "auth.test" in text, text
    # the session goes on: a good message right after is accepted
    code, text = send(c, "alice@auth.test", ["a@" + DOMAIN], message("after refusal",
                                                                     "alice@auth.test"))
    assert code == 250, (code, text)
    c.quit()
    env.p.wait_for_delivery("a@" + DOMAIN, before + 1)
    assert not any(b"forged ceo" in m for m in env.p.maildir("a@" + DOMAIN))


def test_forged_from_with_p_reject_through_bdat(env):
    c = env.p.raw()
    c.cmd("EHLO client.example.test")
    c.replies_until_quiet(quiet=0.5)
    body = message("forged bdat", "ceo@auth.test")
    c.send(b"MAIL FROM:<bounce@other.auth.test>\r\nRCPT TO:<a@example.test>\r\n")
    assert c.reply().code == 250
    assert c.reply().code == 250
    c.send(b"BDAT %d LAST\r\n" % len(body) + body)
    r = c.reply()
    assert r.code == 550 and "5.7.1" in r.text, r


def test_p_quarantine_lands_in_junk(env):
    got = deliver(env.p, message("quarantined", "news@quar.auth.test"), "news@quar.auth.test",
                  folder="Junk")
    ar = ar_of(got)[0]
    assert "spf=fail" in ar and "dmarc=fail (p=quarantine dis=quarantine)" in ar, ar
    assert header(got, "X-Postern-Quarantine")
    assert not any(b"quarantined" in m for m in env.p.maildir("a@" + DOMAIN))


def test_p_none_is_only_marked(env):
    got = deliver(env.p, message("lax policy", "x@lax.auth.test"), "x@lax.auth.test")
    assert "dmarc=fail (p=none dis=none)" in ar_of(got)[0]


def test_quarantine_header_from_the_sender_means_nothing(env):
    msg = message("fake quarantine", "alice@auth.test",
                  extra="X-Postern-Quarantine: dmarc policy=quarantine domain=x\r\n")
    got = deliver(env.p, signed(msg, env.sender_pem), "alice@auth.test")
    assert "dmarc=pass" in ar_of(got)[0]


def test_forged_authentication_results_removed(env):
    forged = ("Authentication-Results: %s; spf=pass smtp.mailfrom=ceo@auth.test;\r\n"
              "\tdkim=pass header.d=auth.test; dmarc=pass header.from=auth.test\r\n"
              "Authentication-Results: (comment) %s;\r\n dkim=pass\r\n"
              "Authentication-Results: other.example; spf=pass\r\n" % (HOSTNAME, HOSTNAME.upper()))
    msg = message("forged results", "alice@auth.test", extra=forged)
    got = deliver(env.p, msg, "alice@auth.test")
    ars = header(got, "Authentication-Results")
    ours = ar_of(got)
    assert len(ours) == 1 and "spf=pass" in ours[0] and "dkim=none" in ours[0], ars
    assert "other.example; spf=pass" in ars, ars
    assert not any(v.upper().startswith("(COMMENT)") for v in ars), ars
    assert b"header.d=auth.test; dmarc=pass header.from=auth.test" not in got


def test_null_sender_uses_helo_identity(env):
    # <>: SPF checks the HELO name (no SPF there); DKIM carries DMARC
    got = deliver(env.p, signed(message("null sender", "alice@auth.test"), env.sender_pem), "")
    ar = ar_of(got)[0]
    assert re.search(r"spf=none .*smtp\.helo=client\.example\.test", ar), ar
    assert "dmarc=pass" in ar, ar


def own_dns(name):
    m = re.match(r"^([a-z0-9]+)\._domainkey\.%s\.?$" % re.escape(DOMAIN), name.decode())
    if not m:
        return None
    return env_keys[m.group(1)].encode()


env_keys = {}


def test_submitted_mail_is_signed_and_verifies(env):
    env_keys.update(env.own_keys)
    c = env.p.submit()
    msg = make_message("signed by us", sender="a@" + DOMAIN, to="b@" + DOMAIN,
                       extra_headers="Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n")
    code, text = send(c, "a@" + DOMAIN, ["b@" + DOMAIN], msg)
    assert code == 250, (code, text)
    c.quit()
    got = env.p.wait_for_delivery("b@" + DOMAIN, 1)[-1]
    sigs = header(got, "DKIM-Signature")
    assert len(sigs) == 2, sigs
    assert {re.search(r"a=([a-z0-9-]+)", s).group(1) for s in sigs} == {"ed25519-sha256",
                                                                       "rsa-sha256"}
    for s in sigs:
        assert "d=%s" % DOMAIN in s
        assert re.search(r"h=from:", s.replace(" ", "").lower()), s
    # dkimpy verifies the RSA signature (its Ed25519 needs python3-nacl, not installed here)
    d = dkim.DKIM(got)
    rsa_idx = [i for i, s in enumerate(sigs) if "rsa-sha256" in s][0]
    assert d.verify(idx=rsa_idx, dnsfunc=lambda name, timeout=5: own_dns(name)), d.logger
    # and our own inbound check verifies both, found through DNS, with DMARC aligned
    body = re.sub(rb"^(Return-Path|Delivered-To):[^\r\n]*\r\n", b"", got, flags=re.M)
    body = body.replace(b"Subject: signed by us", b"Subject: signed by us")
    back = deliver(env.p, body, "a@" + DOMAIN)
    ar = [v for v in ar_of(back) if "header.d=example.test" in v][0]
    assert ar.count("dkim=pass") == 2, ar
    assert "header.s=ed" in ar and "header.s=rsa" in ar, ar
    assert "dmarc=pass" in ar, ar


def test_trusted_network_mail_is_signed(env):
    c = env.p.smtp(source="127.0.0.2")
    msg = make_message("signed from trusted", sender="c@" + DOMAIN, to="c@" + DOMAIN)
    code, text = send(c, "c@" + DOMAIN, ["c@" + DOMAIN], msg)
    assert code == 250, (code, text)
    c.quit()
    got = env.p.wait_for_delivery("c@" + DOMAIN, 1)[-1]
    assert len(header(got, "DKIM-Signature")) == 2
    assert not ar_of(got)


def test_mail_for_a_domain_without_keys_is_not_signed(env):
    c = env.p.submit()
    msg = make_message("no keys", sender="someone@" + SENDER_DOMAIN, to="b@" + DOMAIN)
    # a@ may send as itself only; the From header names another domain without keys here
    code, text = send(c, "a@" + DOMAIN, ["b@" + DOMAIN], msg)
    assert code == 250, (code, text)
    c.quit()
    got = [m for m in env.p.wait_for_delivery("b@" + DOMAIN, 2) if b"no keys" in m]
    assert got
    sigs = header(got[0], "DKIM-Signature")
    # the envelope domain has keys: signed for it (not aligned with From, but a valid signature)
    assert all("d=%s" % DOMAIN in s for s in sigs) and len(sigs) == 2, sigs


@pytest.mark.parametrize("mode,folder,code", [("quarantine", "Junk", 250), ("mark", "", 250)])
def test_dmarc_reject_knob(env, tmp_path_factory, mode, folder, code):
    p = _make(tmp_path_factory, "knob", limits={"messages_per_ip_per_minute": "100000"},
              extra={"dns": {"resolver": env.dns.resolver}, "policy": {"dmarc_reject": mode}})
    p.start()
    try:
        got = deliver(p, message("knob %s" % mode, "ceo@auth.test"), "bounce@other.auth.test",
                      folder=folder)
        assert "dmarc=fail (p=reject dis=reject)" in ar_of(got)[0]
        assert bool(header(got, "X-Postern-Quarantine")) == (mode == "quarantine")
    finally:
        finish(p)


def test_large_message_spilled_to_disk_gets_its_results_on_top(env):
    # past the 256 KiB held in memory: the spool file is rewritten once with the fields on top
    body = "".join("line %06d of a long message, to spill the spool to disk\r\n" % i
                   for i in range(8000))
    msg = signed(message("large signed", "alice@auth.test").replace(
        b"Hello from alice@auth.test.\r\n", body.encode()), env.sender_pem)
    assert len(msg) > 300 * 1024
    got = deliver(env.p, msg, "alice@auth.test")
    ar = ar_of(got)[0]
    assert "dkim=pass" in ar and "dmarc=pass" in ar, ar
    assert got.endswith(body.encode()[-200:])
    assert got.index(b"Authentication-Results:") < got.index(b"Received:")


def rcpt_reply(p, source, helo):
    c = p.raw(source=source)
    r = c.cmd("EHLO " + helo)
    assert r.code == 250, r
    assert c.cmd("MAIL FROM:<alice@auth.test>").code == 250
    r = c.cmd("RCPT TO:<a@example.test>")
    c.cmd("QUIT")
    c.close()
    return r


@pytest.fixture(scope="module")
def strict(env, tmp_path_factory):
    p = _make(tmp_path_factory, "policy", limits={"messages_per_ip_per_minute": "100000"},
              extra={"dns": {"resolver": env.dns.resolver}, "smtp": {"pregreet_wait_ms": "0"},
                     "policy": {"require_fcrdns": "reject", "helo_checks": "reject"}})
    p.start()
    yield p
    finish(p)


@pytest.mark.parametrize("source,code,enhanced", [
    ("127.0.0.1", 250, "2.1.5"),   # PTR client.auth.test -> 127.0.0.1
    ("127.0.0.3", 550, "5.7.25"),  # PTR name does not resolve back
    ("127.0.0.4", 550, "5.7.25"),  # no PTR at all
    ("127.0.0.5", 450, "4.7.25"),  # PTR lookup fails: temporary
])
def test_require_fcrdns(strict, source, code, enhanced):
    r = rcpt_reply(strict, source, "client.auth.test")
    assert r.code == code and r.text.startswith(enhanced), r
    if code != 250:
        assert "cannot find your hostname, [%s]" % source in r.text


@pytest.mark.parametrize("helo,code,text", [
    ("client.auth.test", 250, "2.1.5"),
    ("[127.0.0.9]", 250, "2.1.5"),                   # a literal that is not ours is valid
    ("nodots", 504, "need fully-qualified hostname"),
    ("127.0.0.1", 504, "need fully-qualified hostname"),
    ("mx.example.test", 550, "that is my name"),
    ("[127.0.0.1]", 550, "that is my address"),
    ("nothere.auth.test", 550, "Host not found"),
    ("x.elsewhere.example", 450, "Host not found"),
])
def test_helo_checks(strict, helo, code, text):
    r = rcpt_reply(strict, "127.0.0.1", helo)
    assert r.code == code and text in r.text, r


def test_policy_log_only(env, tmp_path_factory):
    p = _make(tmp_path_factory, "policylog", limits={"messages_per_ip_per_minute": "100000"},
              extra={"dns": {"resolver": env.dns.resolver},
                     "policy": {"require_fcrdns": "log", "helo_checks": "log"}})
    p.start()
    try:
        r = rcpt_reply(p, "127.0.0.3", "nodots")
        assert r.code == 250, r
        log = p.log()
        assert re.search(r"event=policy check=fcrdns client=127\.0\.0\.3 result=\S+ action=log",
                         log), log[-3000:]
        assert "event=policy check=helo client=127.0.0.3 helo=nodots result=not_fqdn action=log" \
            in log
    finally:
        finish(p)


def test_policy_not_applied_to_trusted_or_submission(strict):
    # 127.0.0.2 is trusted: no PTR there, any HELO
    r = rcpt_reply(strict, "127.0.0.2", "nodots")
    assert r.code == 250, r



ARC_SUITE = os.path.join(ROOT, "..", "shared", "vectors", "arc-valimail",
                         "arc-draft-validation-tests.yml")


def arc_vectors():
    """{test name: message} and the TXT records of the ValiMail ARC suite's first document."""
    import yaml
    with open(ARC_SUITE) as f:
        doc = next(yaml.safe_load_all(f))
    return doc["tests"], doc["txt-records"]


def arc_message(name):
    tests, _ = arc_vectors()
    return tests[name]["message"].replace("\n", "\r\n").encode()


@pytest.fixture(scope="module")
def arc_trusting(env, tmp_path_factory):
    p = _make(tmp_path_factory, "arctrust", limits={"messages_per_ip_per_minute": "100000"},
              extra={"dns": {"resolver": env.dns.resolver},
                     "policy": {"arc_trusted_sealers": "lists.example.net, EXAMPLE.org"}})
    p.start()
    yield p
    finish(p)


def test_arc_chain_lets_a_dmarc_failure_through_a_trusted_sealer(arc_trusting):
    # a two-hop chain sealed by example.org (ValiMail suite, cv_pass_i2_1); the author's
    # domain d1.example.org publishes p=reject and the message has no signature of its own
    got = deliver(arc_trusting, arc_message("cv_pass_i2_1"), "bounce@other.auth.test",
                  marker=b"This is a test message")
    ar = ar_of(got)[0]
    assert "arc=pass (i=2 d=example.org)" in ar, ar
    assert "dmarc=fail (p=reject dis=none arc-override) header.from=d1.example.org" in ar, ar
    assert "arc_override=yes" in arc_trusting.log()


def test_arc_chain_of_an_untrusted_sealer_does_not_help(env):
    c = env.p.smtp()
    code, text = send(c, "bounce@other.auth.test", ["a@" + DOMAIN], arc_message("cv_pass_i2_1"))
    assert code == 550 and "d1.example.org" in text, (code, text)
    assert re.search(r"arc=pass dmarc=fail \S+ verdict=reject", env.p.log()), env.p.log()[-2000:]


def test_arc_chain_broken(arc_trusting):
    msg = arc_message("cv_pass_i2_1").replace(b"This is a test", b"This is a tost")
    c = arc_trusting.smtp()
    code, text = send(c, "bounce@other.auth.test", ["a@" + DOMAIN], msg)
    assert code == 550, (code, text)
    assert re.search(r"arc=fail dmarc=fail \S+ verdict=reject", arc_trusting.log())


def test_no_arc(env):
    got = deliver(env.p, message("no arc", "alice@auth.test"), "alice@auth.test")
    assert "arc=none" in ar_of(got)[0]


def test_dead_dns_is_temperror_within_the_budget(env, tmp_path_factory):
    import socket
    import time
    # a DNS "server" that never answers: every lookup times out
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    p = _make(tmp_path_factory, "deaddns", limits={"messages_per_ip_per_minute": "100000"},
              extra={"dns": {"resolver": "127.0.0.1:%d" % dead.getsockname()[1]}})
    p.start()
    try:
        t0 = time.monotonic()
        c = p.smtp(timeout=30)
        code, text = send(c, "alice@auth.test", ["a@" + DOMAIN],
                          message("dead dns", "alice@auth.test"))
        took = time.monotonic() - t0
        assert code == 250, (code, text)
        assert took < 12, took
        c.quit()
        got = p.wait_for_delivery("a@" + DOMAIN, 1)[0]
        ar = ar_of(got)[0]
        assert "spf=temperror" in ar and "dmarc=temperror" in ar, ar
    finally:
        finish(p)
        dead.close()
