"""Relay control: no open relay through any address trick; trusted networks and AUTH may relay."""
import time

import pytest

from conftest import make_message, queue_id_of, send

TRICKS = [
    "user@remote.test",
    "user%remote.test@example.test",
    "remote.test!user@example.test",
    "@example.test:user@remote.test",
    "@example.test,@other.test:user@remote.test",
    '"user@remote.test"@example.test',
    '"user%remote.test"@example.test',
    "user@[127.0.0.1]",
    "user@example.test.remote.test",
]


@pytest.mark.parametrize("rcpt", TRICKS)
def test_relay_refused(server, rcpt):
    c = server.raw()
    assert c.cmd("EHLO client.example.test").code == 250
    assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
    r = c.cmd("RCPT TO:<%s>" % rcpt)
    assert r.code == 554, (rcpt, r)
    assert r.lines[0].startswith("5.7.1"), (rcpt, r)
    # The transaction has no recipient: DATA must not start.
    r = c.cmd("DATA")
    assert r.code // 100 == 5, r
    assert c.cmd("QUIT").code == 221


def test_double_at_is_a_syntax_error(server):
    # "user@local@remote": RFC 5321's grammar allows no unquoted '@' in a local part, so this is
    # refused as bad syntax (501 5.1.3, as Postfix does) before any relay decision: it can never be
    # routed to remote.test, whoever the client is.
    for source in (None, "127.0.0.2"):  # untrusted, then trusted
        c = server.raw(source=source)
        assert c.cmd("EHLO client.example.test").code == 250
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<user@example.test@remote.test>")
        assert r.code == 501 and r.lines[0].startswith("5.1.3"), (source, r)
        assert c.cmd("DATA").code // 100 == 5
        assert c.cmd("QUIT").code == 221


def test_relay_refusal_logged_with_ip(server):
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    assert c.cmd("RCPT TO:<logcheck@relay-refused.test>").code == 554
    c.cmd("QUIT")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = [l for l in server.log().splitlines() if "relay-refused.test" in l]
        if lines:
            break
        time.sleep(0.1)
    assert any("127.0.0.1" in l for l in lines), lines


def test_relay_refused_with_null_sender_and_local_sender(server):
    c = server.raw()
    c.cmd("EHLO client.example.test")
    # Pretending to be a local user does not open the relay either.
    assert c.cmd("MAIL FROM:<a@example.test>").code == 250
    r = c.cmd("RCPT TO:<user@remote.test>")
    assert r.code == 554 and r.lines[0].startswith("5.7.1"), r
    c.cmd("RSET")
    assert c.cmd("MAIL FROM:<>").code == 250
    r = c.cmd("RCPT TO:<user@remote.test>")
    assert r.code == 554 and r.lines[0].startswith("5.7.1"), r


def test_relay_refused_on_submission_without_auth(server):
    # Submission requires AUTH before MAIL at all.
    c = server.raw(port=server.submission_port)
    c.cmd("EHLO client.example.test")
    r = c.cmd("MAIL FROM:<sender@remote.test>")
    assert r.code == 530 and r.lines[0].startswith("5.7.0"), r


def test_trusted_network_may_relay(server):
    before = set(server.spool_files())
    c = server.smtp(source="127.0.0.2")
    code, text = send(c, "app@example.test", ["someone@remote.test"], make_message("trusted relay"))
    assert code == 250, text
    qid = queue_id_of(text)
    # remote.test has no mail server in the test DNS (conftest): the outbound agent defers it;
    # it must stay queued, never be dropped.
    deadline = time.monotonic() + 15
    while "event=outbound_deferred queue_id=%s" % qid not in server.log():
        assert time.monotonic() < deadline, "no outbound attempt for %s" % qid
        time.sleep(0.1)
    assert qid in server.spool_files(), (qid, before, server.spool_files())


def test_trusted_network_still_refuses_unknown_local(server):
    c = server.smtp(source="127.0.0.2")
    c.ehlo()
    assert c.mail("app@example.test")[0] == 250
    code, msg = c.rcpt("nobody@example.test")
    assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)


def test_untrusted_other_loopback_address(server):
    # 127.0.0.3 is not in trusted_networks (127.0.0.2/32).
    c = server.raw(source="127.0.0.3")
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    r = c.cmd("RCPT TO:<user@remote.test>")
    assert r.code == 554, r
