"""DKIM signing keys change while the server runs (src/store/dkimkeys.c, the signer's key cache):
the first key made with `postern dkim keygen`, a `rotate`, a `del --force` and a key edited in
place each decide how the very next submitted message is signed, without a restart. Every
signature is checked with dkimpy (python3-dkim) against the TXT record `postern dkim list` prints."""
import json
import os
import re
import time

import dkim

from conftest import DOMAIN, header, make_message, send

SENDER = "a@" + DOMAIN
RCPT = "b@" + DOMAIN


def keys(p):
    return {k["selector"]: k for k in json.loads(p.must("dkim", "list", "--json").stdout)}


def submit_one(p, subject):
    """Submit one message and return its delivered copy (bytes)."""
    before = len(p.maildir(RCPT))
    c = p.submit()
    code, text = send(c, SENDER, [RCPT], make_message(subject, sender=SENDER, to=RCPT))
    assert code == 250, (code, text)
    c.quit()
    got = [m for m in p.wait_for_delivery(RCPT, before + 1) if subject.encode() in m]
    assert len(got) == 1, got
    return got[0]


def signatures(msg, known):
    """{selector: algorithm} of the DKIM signatures of `msg`, each verified by dkimpy against
    the TXT record of that selector in `known` (postern dkim list)."""
    def dnsfunc(name, timeout=5):
        n = name.decode() if isinstance(name, bytes) else name
        m = re.match(r"^([^.]+)\._domainkey\.%s\.?$" % re.escape(DOMAIN), n)
        return known[m.group(1)]["txt"].encode() if m and m.group(1) in known else None

    sigs = header(msg, "DKIM-Signature")
    out = {}
    d = dkim.DKIM(msg)
    for i, s in enumerate(sigs):
        flat = re.sub(r"\s+", "", s)
        sel = re.search(r"(?:^|;)s=([^;]+)", flat).group(1)
        alg = re.search(r"(?:^|;)a=([^;]+)", flat).group(1)
        assert "d=%s;" % DOMAIN in flat + ";", s
        assert d.verify(idx=i, dnsfunc=dnsfunc), (sel, alg, d.logger)
        out[sel] = alg
    return out


def test_keys_changed_while_running_sign_the_next_message(postern_factory):
    p = postern_factory()
    # no key yet: not signed
    assert header(submit_one(p, "before any key"), "DKIM-Signature") == []
    # for a second after a lookup found no key the server does not even hash the messages of
    # that domain (src/smtp/auth_msg.c known_keyless): a domain's first key signs the messages
    # that start after that
    time.sleep(1.2)

    # the first keys (both algorithms), made while the server runs
    p.must("dkim", "keygen", DOMAIN, "--selector", "one")
    first = keys(p)
    assert sorted(k["algorithm"] for k in first.values()) == ["ed25519", "rsa2048"]
    got = signatures(submit_one(p, "first keys"), first)
    assert got == {s: ("rsa-sha256" if k["algorithm"] == "rsa2048" else "ed25519-sha256")
                   for s, k in first.items()}, got
    # and again, from the cache
    assert signatures(submit_one(p, "first keys again"), first) == got

    # rotate: the next message is signed with the new keys only
    p.must("dkim", "rotate", DOMAIN)
    rotated = keys(p)
    new = {s for s, k in rotated.items() if k["state"] == "active"}
    assert len(new) == 2 and not new & set(first), rotated
    got = signatures(submit_one(p, "after rotate"), rotated)
    assert set(got) == new, got

    # the new RSA key deleted (--force: it is active): only Ed25519 signs
    rsa = [s for s in new if rotated[s]["algorithm"] == "rsa2048"][0]
    p.must("dkim", "del", DOMAIN, rsa, "--force")
    got = signatures(submit_one(p, "after del"), keys(p))
    assert got == {s: "ed25519-sha256" for s in new - {rsa}}, got

    # a retired key made active again by editing its metadata in place (no rename, the
    # directory's mtime unchanged): picked up too
    old_rsa = [s for s, k in first.items() if k["algorithm"] == "rsa2048"][0]
    path = os.path.join(p.data_dir, "dkim", DOMAIN, old_rsa + ".key")
    with open(path, "r+b") as f:
        text = f.read()
        assert b"state=retired\n" in text
        f.seek(0)
        f.write(text.replace(b"state=retired\n", b"state=active\n\n"))
    assert keys(p)[old_rsa]["state"] == "active"
    got = signatures(submit_one(p, "after edit"), keys(p))
    assert set(got) == (new - {rsa}) | {old_rsa}, got

    # every message was signed on the auth worker; the log names the keys used
    log = p.log()
    assert re.search(r"dkim_signed=2 key=%s/\S+ key=%s/\S+" % (DOMAIN, DOMAIN), log), log
