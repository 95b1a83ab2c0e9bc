"""Limits: SIZE, recipients, errors, line length, connections per IP, messages per IP per minute,
idle timeout, failed logins."""
import re
import socket
import time

import pytest

from conftest import make_message, queue_id_of, send


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    from conftest import _make, finish
    p = _make(tmp_path_factory, "lim", limits={
        "max_message_size": "10K",
        "max_recipients": "3",
        "max_errors": "3",
        "max_messages_per_session": "2",
        "messages_per_ip_per_minute": "1000000",
        "max_connections_per_ip": "50",
    })
    p.start()
    yield p
    finish(p)


def test_size_advertised_and_declared_too_big(limited):
    c = limited.raw()
    r = c.cmd("EHLO client.example.test")
    assert "SIZE 10240" in r.lines, r
    r = c.cmd("MAIL FROM:<sender@remote.test> SIZE=20000")
    assert r.code == 552 and r.lines[0].startswith("5.3.4"), r
    r = c.cmd("MAIL FROM:<sender@remote.test> SIZE=1000")
    assert r.code == 250, r


def test_size_exceeded_while_streaming(limited):
    c = limited.smtp()
    c.ehlo()
    assert c.mail("sender@remote.test")[0] == 250
    assert c.rcpt("a@example.test")[0] == 250
    big = make_message("too big token-toobig") + (b"y" * 78 + b"\r\n") * 200  # ~16 KiB
    code, msg = c.data(big)
    assert code == 552 and msg.startswith(b"5.3.4"), (code, msg)
    # The session goes on.
    assert c.noop()[0] == 250
    time.sleep(1.0)
    assert not [m for m in limited.maildir("a@example.test") if b"token-toobig" in m]


def test_size_exceeded_bdat(limited):
    c = limited.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    c.cmd("RCPT TO:<a@example.test>")
    chunk = b"x" * 8000 + b"\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    r1 = c.reply()
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    r2 = c.reply()
    assert r1.code == 552 or r2.code == 552, (r1, r2)
    assert c.cmd("NOOP").code == 250


def test_message_of_exactly_the_limit_fits(limited):
    before = len(limited.maildir("b@example.test"))
    c = limited.smtp()
    msg = make_message("at limit token-atlimit")
    msg += (b"z" * 98 + b"\r\n") * ((9000 - len(msg)) // 100)
    code, text = send(c, "sender@remote.test", ["b@example.test"], msg)
    assert code == 250, text
    limited.wait_for_delivery("b@example.test", before + 1)


def test_max_recipients(limited):
    c = limited.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    for _ in range(3):
        assert c.cmd("RCPT TO:<a@example.test>").code == 250
    r = c.cmd("RCPT TO:<b@example.test>")
    assert r.code == 452 and r.lines[0].startswith("4.5.3"), r


def test_max_messages_per_session(limited):
    c = limited.smtp()
    for i in range(2):
        code, text = send(c, "sender@remote.test", ["c@example.test"], make_message("per session %d" % i))
        assert code == 250, text
    code, msg = c.docmd("MAIL FROM:<sender@remote.test>")
    assert code == 421, (code, msg)


def test_max_errors_disconnects(limited):
    c = limited.raw()
    codes = []
    closed = False
    for i in range(8):
        try:
            r = c.cmd("FROB%d" % i)
        except (EOFError, ConnectionError):
            closed = True
            break
        codes.append(r.code)
        if r.code == 421:
            closed = c.closed_by_peer()
            break
    assert 421 in codes, codes
    assert len(codes) <= 4, codes  # max_errors = 3: disconnected at the latest on the 4th
    assert closed


def test_accepted_commands_are_not_errors(limited):
    """Only refusals count towards max_errors: more accepted RCPTs (looked up on the loop
    or on a worker) than the limit, in transactions of their own, keep the session."""
    c = limited.raw()
    c.cmd("EHLO client.example.test")
    for i in range(3):
        assert c.cmd("MAIL FROM:<s@remote.test>").code == 250
        for u in ("a", "b", "c"):
            r = c.cmd("RCPT TO:<%s@example.test>" % u)
            assert r.code == 250, (i, u, r)
        assert c.cmd("RSET").code == 250
    assert c.cmd("NOOP").code == 250


def test_command_line_too_long(limited):
    c = limited.raw()
    c.cmd("EHLO client.example.test")
    r = c.cmd("NOOP " + "x" * 2000)
    assert r.code == 500 and r.lines[0].startswith("5.5.2"), r
    # MAIL/RCPT may be longer than 512 (RFC 5321 4.5.3.1.4: extensions add parameters), not unbounded.
    r = c.cmd("MAIL FROM:<" + "a" * 20000 + "@remote.test>")
    assert r.code == 500 and r.lines[0].startswith("5.5.2"), r


def test_data_line_too_long(limited):
    c = limited.smtp()
    c.ehlo()
    c.mail("sender@remote.test")
    c.rcpt("a@example.test")
    msg = make_message("long line token-longline") + b"w" * 3000 + b"\r\n"
    code, text = c.data(msg)
    assert code // 100 == 5, (code, text)
    time.sleep(1.0)
    assert not [m for m in limited.maildir("a@example.test") if b"token-longline" in m]


def test_max_connections_per_ip(postern_factory):
    s = postern_factory(limits={"max_connections_per_ip": "3"})
    conns = [s.raw() for _ in range(3)]
    c = s.raw(greeting=False)
    r = c.reply()
    assert r.code == 421, r
    assert c.closed_by_peer()
    # Another IP is not affected.
    other = s.raw(source="127.0.0.3")
    assert other.cmd("NOOP").code == 250
    # A slot frees up when a connection closes.
    conns[0].cmd("QUIT")
    conns[0].close()
    deadline = time.monotonic() + 5
    while True:
        c = s.raw(greeting=False)
        r = c.reply()
        if r.code == 220 or time.monotonic() > deadline:
            break
        c.close()
        time.sleep(0.2)
    assert r.code == 220, r


def test_max_connections_total(postern_factory):
    s = postern_factory(limits={"max_connections": "2"})
    a = s.raw()
    b = s.raw(source="127.0.0.3")
    c = s.raw(source="127.0.0.4", greeting=False)
    r = c.reply()
    assert r.code == 421, r


def test_messages_per_ip_per_minute(postern_factory):
    s = postern_factory(limits={"messages_per_ip_per_minute": "3"})
    c = s.smtp()
    for i in range(3):
        code, text = send(c, "sender@remote.test", ["a@example.test"], make_message("rate %d" % i))
        assert code == 250, text
    c.ehlo()
    code, msg = c.mail("sender@remote.test")
    if code == 250:
        code, msg = c.rcpt("a@example.test")
    assert code == 450 and msg.startswith(b"4.7.1"), (code, msg)
    # A new connection from the same IP is limited too.
    c2 = s.smtp()
    c2.ehlo()
    code, msg = c2.mail("sender@remote.test")
    if code == 250:
        code, msg = c2.rcpt("a@example.test")
    assert code == 450, (code, msg)
    # Another IP is not.
    c3 = s.smtp(source="127.0.0.3")
    code, text = send(c3, "sender@remote.test", ["a@example.test"], make_message("rate other ip"))
    assert code == 250, text
    # Trusted networks are exempt.
    c4 = s.smtp(source="127.0.0.2")
    for i in range(5):
        code, text = send(c4, "app@example.test", ["b@example.test"], make_message("rate trusted %d" % i))
        assert code == 250, text
    # Authenticated users are exempt, even from the limited IP.
    c5 = s.submit()
    for i in range(5):
        code, text = send(c5, "a@example.test", ["b@example.test"], make_message("rate auth %d" % i,
                                                                              sender="a@example.test"))
        assert code == 250, text


def test_auth_failures_rate_limited(postern_factory):
    import smtplib
    s = postern_factory(extra={"auth": {"max_failures": "3"}})
    failures = 0
    c = s.smtp(port=s.submissions_port)
    c.ehlo()
    for i in range(3):
        c.user, c.password = "a@example.test", "bad %d" % i
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.auth("PLAIN", c.auth_plain)
        failures += 1
    # Now even the right password is refused for a while from this IP (or the session is dropped).
    try:
        c.user, c.password = "a@example.test", "correct horse battery"
        code, msg = c.auth("PLAIN", c.auth_plain)
        ok = code == 235
    except smtplib.SMTPAuthenticationError as e:
        ok = False
        assert e.smtp_code in (421, 454, 535), e
    except smtplib.SMTPServerDisconnected:
        ok = False
    assert not ok, "login allowed after max_failures failed attempts"


def test_idle_timeout_closes_with_421(postern_factory):
    # RFC 5321 4.5.3.2.7: the server may close an idle session; it says 421 first.
    s = postern_factory(limits={"idle_timeout": "1s"})
    c = s.raw()
    assert c.cmd("EHLO client.example.test").code == 250
    time.sleep(2.5)
    r = c.reply(timeout=5)
    assert r.code == 421 and r.lines[0].startswith("4.4.2"), r
    assert c.closed_by_peer()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and "idle" not in s.log() and "timeout" not in s.log():
        time.sleep(0.1)
    assert re.search(r"client=127\.0\.0\.1.*(timeout|idle)|(timeout|idle).*client=127\.0\.0\.1", s.log())


def test_auth_failures_rate_limited_per_account(postern_factory):
    # Failures for one account from several addresses lock that account, not the others.
    import smtplib
    s = postern_factory(extra={"auth": {"max_failures": "3"}})
    for i, src in enumerate(("127.0.0.3", "127.0.0.4", "127.0.0.5")):
        c = s.smtp(port=s.submissions_port, source=src)
        c.ehlo()
        c.user, c.password = "a@example.test", "bad %d" % i
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.auth("PLAIN", c.auth_plain)
        c.close()
    c = s.smtp(port=s.submissions_port, source="127.0.0.6")
    c.ehlo()
    c.user, c.password = "a@example.test", "correct horse battery"
    with pytest.raises((smtplib.SMTPAuthenticationError, smtplib.SMTPServerDisconnected)):
        c.auth("PLAIN", c.auth_plain)
    c.close()
    # another account from a fresh address still logs in
    c = s.smtp(port=s.submissions_port, source="127.0.0.7")
    c.ehlo()
    c.user, c.password = "b@example.test", "correct horse battery"
    code, _ = c.auth("PLAIN", c.auth_plain)
    assert code == 235
    c.close()
