"""
Malformed input replayed on every listener (issue 6 item 2): smtp in the clear, submission after
STARTTLS and AUTH, submissions over TLS after AUTH. For each input: error replies or a close, never
a crash; a good client is served afterwards; the sanitizer check of the server's stderr at
teardown (conftest.finish) stays clean.
"""
import base64
import os
import socket
import ssl
import time

import pytest

from conftest import DOMAIN, PASSWORD, _make, finish, make_message, tls_client_context
from faultlib import still_serves

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = sorted(os.listdir(os.path.join(HERE, "corpus")))
CORPUS = [n for n in CORPUS if n != "README"]
LISTENERS = ["smtp", "submission", "submissions"]
IDLE = 4
USER = "a@" + DOMAIN


@pytest.fixture(scope="module")
def srv():
    p = _make(None, "fault", limits={"messages_per_ip_per_minute": "1000000",
                                     "max_connections_per_ip": "200",
                                     "idle_timeout": "%ds" % IDLE},
              # no greeting pause: it would only add 300 ms to each of the ~130 connections
              extra={"smtp": {"pregreet_wait_ms": "0"}})
    p.start()
    yield p
    finish(p)


def session(p, listener, auth=True):
    """A RawSMTP after EHLO on `listener`: STARTTLS first on submission, AUTH on both
    submission listeners (MAIL needs it there)."""
    c = p.raw(port=p.port(listener))
    assert c.cmd("EHLO client.example.test").code == 250
    if listener == "submission":
        assert c.cmd("STARTTLS").code == 220
        c.sock = tls_client_context().wrap_socket(c.sock)
        c.buf = b""
        assert c.cmd("EHLO client.example.test").code == 250
    if auth and listener != "smtp":
        tok = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode()).decode()
        r = c.cmd("AUTH PLAIN " + tok)
        assert r.code == 235, r
    return c


def sender_for(listener):
    return "s@remote.test" if listener == "smtp" else USER


def error_or_close(c, quiet=0.8):
    """Read what comes until quiet or EOF: every reply must be well formed (RawSMTP.reply asserts
    the syntax); returns (replies, closed)."""
    replies = c.replies_until_quiet(quiet=quiet, limit=5000)
    closed = False
    try:
        closed = c.closed_by_peer(timeout=0.2)
    except Exception:
        closed = True
    return replies, closed


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("name", CORPUS)
def test_corpus(srv, listener, name):
    with open(os.path.join(HERE, "corpus", name), "rb") as f:
        data = f.read()
    c = session(srv, listener)
    try:
        try:
            c.send(data)
        except (ConnectionError, ssl.SSLError):
            pass  # closed while we were still sending: a close is an answer
        replies, closed = error_or_close(c)
        errors = [r for r in replies if r.code >= 400]
        assert errors or closed, "no error and no close for %s: %r" % (name, replies)
    finally:
        c.close()
    still_serves(srv, port=srv.port(listener) if listener == "smtp" else None)


@pytest.mark.parametrize("listener", LISTENERS)
def test_long_line_without_crlf(srv, listener):
    c = session(srv, listener)
    try:
        try:
            c.send(b"MAIL FROM:<" + b"A" * 70000)
        except (ConnectionError, ssl.SSLError):
            pass
        replies, closed = error_or_close(c)
        if replies:
            assert replies[0].code == 500 and replies[0].text.startswith("5.5.2"), replies
        else:
            assert closed, "70,000 bytes without CRLF got neither a reply nor a close"
    finally:
        c.close()
    still_serves(srv)


@pytest.mark.parametrize("listener", LISTENERS)
def test_ten_thousand_recipients(srv, listener):
    """10,000 RCPTs, pipelined in batches: at most max_recipients (100) are accepted, the rest
    are refused (452 4.5.3) or the connection is closed; the transaction still completes."""
    c = session(srv, listener)
    try:
        assert c.cmd("MAIL FROM:<%s>" % sender_for(listener)).code == 250
        accepted, refused, closed = 0, 0, False
        for first in range(0, 10000, 500):
            batch = "".join("RCPT TO:<a+%d@%s>\r\n" % (i, DOMAIN) for i in range(first, first + 500))
            try:
                c.send(batch)
                for _ in range(500):
                    r = c.reply(timeout=20)
                    if r.code == 250:
                        accepted += 1
                    else:
                        assert 400 <= r.code < 600, r
                        refused += 1
            except (EOFError, ConnectionError, ssl.SSLError):
                closed = True
                break
        assert accepted <= 100, accepted
        assert accepted >= 1
        if not closed:
            assert refused == 10000 - accepted
            r = c.cmd("DATA")
            assert r.code == 354, r
            c.send(make_message("ten thousand") + b".\r\n")
            r = c.reply(timeout=30)
            assert r.code == 250, r
            c.cmd("QUIT")
    finally:
        c.close()
    still_serves(srv)


def nested_mime(depth):
    head, tail = [], []
    for i in range(depth):
        head.append("Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n" % (i, i))
        tail.append("\r\n--b%d--\r\n" % i)
    body = "".join(head) + "Content-Type: text/plain\r\n\r\ninnermost\r\n" + "".join(reversed(tail))
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n" % (USER, USER)
            + body).encode()


@pytest.mark.parametrize("listener", LISTENERS)
def test_deeply_nested_mime_stored_as_is(srv, listener):
    msg = nested_mime(2000)
    marker = ("nested-%s" % listener).encode()
    msg = msg.replace(b"Subject: nested", b"Subject: " + marker)
    before = len(srv.maildir(USER))
    c = session(srv, listener)
    try:
        assert c.cmd("MAIL FROM:<%s>" % sender_for(listener)).code == 250
        assert c.cmd("RCPT TO:<%s>" % USER).code == 250
        assert c.cmd("DATA").code == 354
        c.send(msg + b".\r\n")
        r = c.reply(timeout=30)
        assert r.code == 250, r
        c.cmd("QUIT")
    finally:
        c.close()
    msgs = srv.wait_for_delivery(USER, before + 1)
    mine = [m for m in msgs if marker in m]
    assert len(mine) == 1
    # our trace headers go on top; what the client sent follows unchanged (DKIM signing of
    # submissions may add a header too, so compare from the From: line on)
    sent = msg[msg.index(b"From:"):]
    assert mine[0].endswith(sent), "the nested MIME message was not stored as sent"


@pytest.mark.parametrize("listener", LISTENERS)
def test_bdat_huge_size_then_disconnect(srv, listener):
    """BDAT 4000000000 LAST, 2 MiB of it, then the client goes away. The declared size chooses no
    allocation (the server's memory grows by far less than what was sent), the half-received
    chunk leaves no file in spool/tmp, and the server goes on serving. (No reply is due before
    the chunk's bytes have arrived: RFC 3030 keeps the stream in step by its size.)"""
    from faultlib import rss_kib
    rss0 = rss_kib(srv.proc.pid)
    c = session(srv, listener)
    try:
        assert c.cmd("MAIL FROM:<%s>" % sender_for(listener)).code == 250
        assert c.cmd("RCPT TO:<%s>" % USER).code == 250
        try:
            c.send(b"BDAT 4000000000 LAST\r\n")
            for _ in range(32):
                c.send(b"x" * 65536)
        except (ConnectionError, ssl.SSLError):
            pass
        time.sleep(0.5)
    finally:
        c.close()
    deadline = time.monotonic() + 10
    while srv.spool_tmp_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert srv.spool_tmp_files() == [], "the abandoned BDAT left %r" % srv.spool_tmp_files()
    assert rss_kib(srv.proc.pid) - rss0 < 64 * 1024
    still_serves(srv)


def half_client_hello():
    ctx = tls_client_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="mx.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    assert len(hello) > 100
    return hello[: len(hello) // 2]


@pytest.mark.parametrize("how", ["disconnect", "stall"])
@pytest.mark.parametrize("listener", ["smtp", "submission", "submissions"])
def test_half_tls_handshake(srv, listener, how):
    s = socket.create_connection(("127.0.0.1", srv.port(listener)), timeout=10)
    try:
        if listener != "submissions":
            f = s.makefile("rb")
            assert f.readline().startswith(b"220")
            s.sendall(b"EHLO client.example.test\r\n")
            while True:
                line = f.readline()
                assert line.startswith(b"250"), line
                if line[3:4] == b" ":
                    break
            s.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
        s.sendall(half_client_hello())
        if how == "stall":
            # the server must give up on its own within a bound of the idle timeout
            s.settimeout(IDLE * 2 + 3)
            t0 = time.monotonic()
            try:
                while s.recv(4096):
                    pass
            except ConnectionError:
                pass
            except socket.timeout:
                pytest.fail("half a TLS handshake still open after %d s (idle_timeout=%ds)"
                            % (IDLE * 2 + 3, IDLE))
            assert time.monotonic() - t0 <= IDLE * 2 + 3
    finally:
        s.close()
    still_serves(srv)
    still_serves(srv, port=srv.submissions_port)
