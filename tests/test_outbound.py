"""
Outbound delivery (issue 4): Postern sends mail for remote recipients to the MX hosts that a
private NSD (tests/dns/testdns.py) names, where scripted aiosmtpd receivers (conftest.Sink)
listen on 127.0.0.x at one high port ([queue] remote_port).
"""
import email
import email.policy
import os
import sqlite3
import sys
import time

import pytest

from conftest import (DOMAIN, PASSWORD, ROOT, Sink, finish, free_port_on, make_message,
                      queue_id_of, send)

sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
from testdns import DNSServer  # noqa: E402

HEAD = "$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1\n"
ZONES = {
    # one MX with a receiver
    "ok.test": HEAD + "@ MX 10 mx1\nmx1 A 127.0.0.2\n",
    # the best MX does not answer (nothing listens on 127.0.0.3), the second does, the third
    # must not be needed
    "fallback.test": HEAD + "@ MX 10 dead\n@ MX 20 second\n@ MX 30 third\n"
                            "dead A 127.0.0.3\nsecond A 127.0.0.4\nthird A 127.0.0.5\n",
    # no MX: the domain's own address (RFC 5321 5.1)
    "amx.test": HEAD + "@ A 127.0.0.2\n",
    # RFC 7505 null MX
    "nullmx.test": HEAD + "@ MX 0 .\n",
}
SINK_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = DNSServer(tmp_path_factory.mktemp("outdns"), zones=ZONES)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def port():
    return free_port_on(SINK_HOSTS)


def outbound_server(postern_factory, dns, port, queue=None, start=True):
    q = {"remote_port": str(port), "retry_min": "1s", "retry_max": "2s",
         "connect_timeout": "3s", "command_timeout": "10s"}
    q.update(queue or {})
    return postern_factory(extra={"dns": {"resolver": dns.resolver}, "queue": q}, start=start)


def cert_of(p):
    return (os.path.join(p.data_dir, "tls", "cert.pem"), os.path.join(p.data_dir, "tls", "key.pem"))


def submit_to(p, rcpts, subject, sender="a@" + DOMAIN, mail_options=(), rcpt_options=()):
    c = p.submit()
    code, text = send(c, sender, rcpts, make_message(subject, sender=sender, to=rcpts[0]),
                      mail_options=mail_options, rcpt_options=rcpt_options)
    assert code == 250, text
    c.quit()
    return queue_id_of(text)


def wait_until(pred, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def queue_rows(p, qid):
    db = sqlite3.connect(os.path.join(p.data_dir, "queue.db"), timeout=10)
    try:
        return db.execute("SELECT address, state, attempts, last_error FROM recipients WHERE "
                          "queue_id = ?", (qid,)).fetchall()
    finally:
        db.close()


def wait_gone(p, qid, timeout=20):
    wait_until(lambda: qid not in p.spool_files() and not queue_rows(p, qid), timeout,
               "queue entry %s to be finished: %r" % (qid, queue_rows(p, qid)))


def dsn_parts(msg_bytes):
    """(message, [per-recipient field dicts], returned part) of a DSN parsed by the email module."""
    m = email.message_from_bytes(msg_bytes, policy=email.policy.compat32)
    assert m.get_content_type() == "multipart/report", m.get_content_type()
    assert m.get_param("report-type") == "delivery-status"
    parts = m.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()  # [per-message, per-recipient...] as Message objects
    per_rcpt = [dict((k.lower(), v) for k, v in b.items()) for b in blocks[1:]]
    returned = parts[2] if len(parts) > 2 else None
    return m, dict((k.lower(), v) for k, v in blocks[0].items()), per_rcpt, returned


def test_delivered_with_starttls(postern_factory, dns, port):
    p = outbound_server(postern_factory, dns, port, start=False)
    cert, key = cert_of(p)
    sink = Sink("127.0.0.2", port, tls_cert=cert, tls_key=key, name="mx1").start()
    try:
        p.start()
        qid = submit_to(p, ["friend@ok.test", "other@ok.test"], "outbound one")
        msgs = sink.wait(1)
        assert len(msgs) == 1
        m = msgs[0]
        assert m["mail_from"] == "a@" + DOMAIN
        assert sorted(m["rcpt_tos"]) == ["friend@ok.test", "other@ok.test"]
        assert b"Subject: outbound one" in m["content"]
        assert m["tls"], "STARTTLS was offered, so it must be used"
        assert any(o.startswith("SIZE=") for o in m["mail_options"]), m["mail_options"]
        wait_gone(p, qid)
        log = p.log()
        assert "event=outbound_tls relay=mx1.ok.test[127.0.0.2] verified=no" in log
        assert "event=delivered_remote queue_id=%s" % qid in log
        assert "tls=yes" in log
    finally:
        finish(p)
        sink.stop()


def test_mx_fallback_order(postern_factory, dns, port):
    second = Sink("127.0.0.4", port, name="second").start()
    third = Sink("127.0.0.5", port, name="third").start()
    p = outbound_server(postern_factory, dns, port)
    try:
        qid = submit_to(p, ["x@fallback.test"], "fallback")
        second.wait(1)
        wait_gone(p, qid)
        assert third.messages == []
        log = p.log()
        dead = log.index("event=outbound_connect_failed domain=fallback.test relay=dead.fallback.test[127.0.0.3]")
        done = log.index("event=delivered_remote queue_id=%s" % qid)
        assert dead < done
        assert "relay=second.fallback.test[127.0.0.4]" in log[done:].split("\n")[0]
    finally:
        finish(p)
        second.stop()
        third.stop()


def test_no_mx_uses_the_address_record(postern_factory, dns, port):
    sink = Sink("127.0.0.2", port, name="amx").start()
    p = outbound_server(postern_factory, dns, port)
    try:
        qid = submit_to(p, ["y@amx.test"], "implicit mx")
        assert sink.wait(1)[0]["rcpt_tos"] == ["y@amx.test"]
        wait_gone(p, qid)
    finally:
        finish(p)
        sink.stop()


def test_defer_then_success(postern_factory, dns, port):
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port)
    try:
        qid = submit_to(p, ["defer2@ok.test"], "deferred twice")
        msgs = sink.wait(1, timeout=30)
        assert msgs[0]["rcpt_tos"] == ["defer2@ok.test"]
        assert sink.rcpt_seen["defer2@ok.test"] == 3
        wait_gone(p, qid)
        log = p.log()
        assert log.count("event=outbound_deferred queue_id=%s" % qid) == 2, log[-3000:]
        assert "450 4.2.0" in log
        # no bounce and no delay notice (warn_after is 4h)
        time.sleep(0.5)
        assert not [m for m in p.maildir("a@" + DOMAIN)]
    finally:
        finish(p)
        sink.stop()


def test_connection_reused_for_several_messages(postern_factory, dns, port):
    sink = Sink("127.0.0.2", port, name="mx1").start()
    # the queue fills while the outbound agent cannot reach anyone (remote_port unused), then
    # one restart later every message goes over one connection
    p = outbound_server(postern_factory, dns, port, queue={"remote_port": "1"})
    try:
        qids = [submit_to(p, ["r%d@ok.test" % i], "reuse %d" % i) for i in range(3)]
        wait_until(lambda: all(queue_rows(p, q) and queue_rows(p, q)[0][2] >= 1 for q in qids),
                   20, "first attempts")
        assert p.stop() == 0
        time.sleep(2.5)  # every row due (retry_max = 2s) when the server comes back
        p.write_config(extra=dict(p.extra, queue=dict(p.extra["queue"], remote_port=str(port),
                                                      max_per_domain="1")))
        p.start()
        sink.wait(3)
        for q in qids:
            wait_gone(p, q)
        assert p.log().count("event=delivered_remote") == 3
        # max_per_domain = 1: one job, one connection, one EHLO for the three messages
        assert sink.ehlos == 1, sink.ehlos
        assert sorted(r for m in sink.messages for r in m["rcpt_tos"]) == \
            ["r0@ok.test", "r1@ok.test", "r2@ok.test"]
    finally:
        finish(p)
        sink.stop()


def test_kill9_during_outbound_loses_nothing(postern_factory, dns, port):
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port)
    try:
        qid = submit_to(p, ["stall@ok.test"], "kill during data")
        wait_until(lambda: sink.stalled, 20, "the message to reach DATA")
        p.kill9()
        sink.release = True
        p.start()
        msgs = sink.wait(1, timeout=30)
        assert msgs[0]["rcpt_tos"] == ["stall@ok.test"]
        wait_gone(p, qid)
        assert len(sink.messages) == 1
    finally:
        finish(p)
        sink.stop()


def test_dsn_parameters_passed_on(postern_factory, dns, port):
    sink = Sink("127.0.0.2", port, name="mx1", dsn=True).start()
    p = outbound_server(postern_factory, dns, port)
    try:
        qid = submit_to(p, ["dsn@ok.test"], "with dsn", mail_options=["RET=HDRS", "ENVID=abc+2Bdef"],
                        rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;dsn@ok.test"])
        sink.wait(1)
        wait_gone(p, qid)
        mail = [ps for cmd, ps in sink.dsn_params if cmd == "MAIL"]
        rcpt = [ps for cmd, ps in sink.dsn_params if cmd == "RCPT"]
        assert mail == [["RET=HDRS", "ENVID=abc+2Bdef"]], sink.dsn_params
        assert rcpt == [["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;dsn@ok.test"]], sink.dsn_params
    finally:
        finish(p)
        sink.stop()


def test_utf8_message_needs_smtputf8(postern_factory, dns, port):
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port)
    try:
        c = p.submit()
        c.ehlo()
        assert c.mail("a@" + DOMAIN, ["SMTPUTF8", "BODY=8BITMIME"])[0] == 250
        assert c.rcpt("jörg@ok.test")[0] == 250
        body = ("From: <a@example.test>\r\nTo: <jörg@ok.test>\r\nSubject: grüße\r\n\r\n"
                "Grüße\r\n").encode("utf-8")
        code, text = c.data(body)
        assert code == 250, text
        qid = queue_id_of(text.decode())
        m = sink.wait(1)[0]
        assert m["rcpt_tos"] == ["jörg@ok.test"]
        assert "SMTPUTF8" in m["mail_options"] and "BODY=8BITMIME" in m["mail_options"]
        assert "Grüße".encode() in m["content"]
        wait_gone(p, qid)
    finally:
        finish(p)
        sink.stop()


# ---- smarthost ----

def smarthost_server(postern_factory, dns, port, relay, start=True):
    p = postern_factory(extra={"dns": {"resolver": dns.resolver},
                               "queue": {"retry_min": "1s", "retry_max": "2s",
                                         "connect_timeout": "3s", "command_timeout": "10s"},
                               "relay": dict(relay, smarthost="127.0.0.2:%d" % port)},
                        start=start)
    return p


def test_smarthost_starttls_auth_rewrite(postern_factory, dns, port):
    p = smarthost_server(postern_factory, dns, port, {
        "smarthost_tls": "starttls", "smarthost_user": "acct@provider.test",
        "smarthost_password": "s3cret pw", "rewrite_sender": "acct@provider.test"}, start=False)
    cert, key = cert_of(p)
    sink = Sink("127.0.0.2", port, tls_cert=cert, tls_key=key, name="smarthost",
                auth=("acct@provider.test", "s3cret pw")).start()
    try:
        p.start()
        # the MX of nullmx.test does not matter: everything remote goes to the smarthost;
        # b@example.test is local and never goes there
        qid = submit_to(p, ["friend@ok.test", "x@nullmx.test", "b@" + DOMAIN], "via smarthost")
        m = sink.wait(1)[0]
        assert sorted(m["rcpt_tos"]) == ["friend@ok.test", "x@nullmx.test"]
        assert m["mail_from"] == "acct@provider.test"
        assert m["tls"]
        assert sink.auth_ok == ["acct@provider.test"]
        head = m["content"].split(b"\r\n\r\n", 1)[0]
        assert b"\r\nFrom: <acct@provider.test>\r\n" in head
        assert b"From: <a@example.test>" not in head
        assert b"Subject: via smarthost" in head
        p.wait_for_delivery("b@" + DOMAIN, 1)
        wait_gone(p, qid)
        assert "s3cret" not in p.log()
        out = p.cli("config").stdout.decode()
        assert "s3cret" not in out and "smarthost_password = (set, not shown)" in out
    finally:
        finish(p)
        sink.stop()


def test_smarthost_implicit_tls(postern_factory, dns, port):
    p = smarthost_server(postern_factory, dns, port, {"smarthost_tls": "tls"}, start=False)
    cert, key = cert_of(p)
    sink = Sink("127.0.0.2", port, tls_cert=cert, tls_key=key, name="smarthost",
                implicit_tls=True).start()
    try:
        p.start()
        qid = submit_to(p, ["friend@ok.test"], "implicit tls")
        m = sink.wait(1)[0]
        assert m["mail_from"] == "a@" + DOMAIN
        wait_gone(p, qid)
        assert "event=outbound_tls relay=127.0.0.2[127.0.0.2] verified=no" in p.log()
    finally:
        finish(p)
        sink.stop()


def test_smarthost_no_tls(postern_factory, dns, port):
    p = smarthost_server(postern_factory, dns, port, {"smarthost_tls": "none"}, start=False)
    cert, key = cert_of(p)
    sink = Sink("127.0.0.2", port, tls_cert=cert, tls_key=key, name="smarthost").start()
    try:
        p.start()
        qid = submit_to(p, ["friend@ok.test"], "plain smarthost")
        m = sink.wait(1)[0]
        assert not m["tls"]
        wait_gone(p, qid)
    finally:
        finish(p)
        sink.stop()


def test_smarthost_requires_starttls_and_good_credentials(postern_factory, dns, port):
    # no STARTTLS offered: deferred, never sent in plaintext
    sink = Sink("127.0.0.2", port, name="smarthost").start()
    p = smarthost_server(postern_factory, dns, port, {"smarthost_tls": "starttls"})
    try:
        qid = submit_to(p, ["friend@ok.test"], "needs tls")
        wait_until(lambda: queue_rows(p, qid) and queue_rows(p, qid)[0][2] >= 1, 20, "an attempt")
        rows = queue_rows(p, qid)
        assert rows[0][1] == "deferred" and "does not offer STARTTLS" in rows[0][3], rows
        assert sink.messages == []
    finally:
        finish(p)
        sink.stop()
    # a wrong password: deferred (not bounced), nothing sent
    p2 = smarthost_server(postern_factory, dns, port, {
        "smarthost_user": "acct@provider.test", "smarthost_password": "wrong"}, start=False)
    cert, key = cert_of(p2)
    sink2 = Sink("127.0.0.2", port, tls_cert=cert, tls_key=key, name="smarthost",
                 auth=("acct@provider.test", "right")).start()
    try:
        p2.start()
        qid = submit_to(p2, ["friend@ok.test"], "bad password")
        wait_until(lambda: queue_rows(p2, qid) and queue_rows(p2, qid)[0][2] >= 1, 20, "an attempt")
        rows = queue_rows(p2, qid)
        assert rows[0][1] == "deferred" and "AUTH" in rows[0][3], rows
        assert sink2.messages == [] and sink2.auth_ok == []
        assert p2.maildir("a@" + DOMAIN) == []
    finally:
        finish(p2)
        sink2.stop()


# ---- bad peers ----

class RawPeer:
    """A hand-written SMTP peer on 127.0.0.2:port that misbehaves as told (one thread per
    connection, every wait bounded)."""

    def __init__(self, port, mode, cert=None):
        import socket
        import threading
        self.mode, self.cert = mode, cert
        self.connections = 0
        self.delivered = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.2", port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        import threading
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        import ssl
        c.settimeout(15)
        f = None
        try:
            if self.mode == "garbage":
                c.sendall(b"hello, I am not an SMTP server\r\n")
                c.recv(100)
                return
            if self.mode == "endless":
                line = b"220-" + b"x" * 70 + b"\r\n"
                for _ in range(20000):
                    if self.stopping:
                        return
                    c.sendall(line)
                return
            if self.mode == "longline":
                c.sendall(b"220 " + b"y" * 5000)
                c.recv(100)
                return
            if self.mode == "stall":
                for _ in range(100):
                    if self.stopping:
                        return
                    time.sleep(0.1)
                return
            c.sendall(b"220 raw.peer ESMTP\r\n")
            f = c.makefile("rb")
            tls = False
            while True:
                line = f.readline(2000)
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith(b"EHLO"):
                    ext = b"" if tls or self.mode != "inject" else b"250-STARTTLS\r\n"
                    c.sendall(b"250-raw.peer\r\n" + ext + b"250 8BITMIME\r\n")
                elif cmd == b"STARTTLS":
                    # RFC 3207 5: the injected reply must be thrown away by the client
                    c.sendall(b"220 2.0.0 Ready\r\n250 injected\r\n")
                    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    ctx.load_cert_chain(*self.cert)
                    c = ctx.wrap_socket(c, server_side=True)
                    f = c.makefile("rb")
                    tls = True
                elif cmd.startswith(b"MAIL") or cmd.startswith(b"RCPT") or cmd == b"RSET":
                    c.sendall(b"250 ok\r\n")
                elif cmd == b"DATA":
                    c.sendall(b"354 go\r\n")
                    data = b""
                    if self.mode == "dropdata":
                        f.read(10)
                        return  # the connection drops in the middle of the data
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = f.readline(5000)
                        if not chunk:
                            return
                        data += chunk
                    self.delivered.append((tls, data))
                    c.sendall(b"250 2.0.0 queued\r\n")
                elif cmd == b"QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    c.sendall(b"502 what\r\n")
        except (OSError, ValueError):
            return
        finally:
            try:
                if f is not None:
                    f.close()
                c.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(5)


@pytest.mark.parametrize("mode,error", [
    ("garbage", "malformed reply"),
    ("endless", "too many lines"),
    ("longline", "too long"),
    ("stall", "timeout"),
    ("dropdata", "connection lost"),
])
def test_bad_peer_is_recorded_and_retried(postern_factory, dns, port, mode, error):
    peer = RawPeer(port, mode)
    p = outbound_server(postern_factory, dns, port, queue={"command_timeout": "2s"})
    try:
        qid = submit_to(p, ["bad@ok.test"], "to a bad peer " + mode)
        wait_until(lambda: queue_rows(p, qid) and queue_rows(p, qid)[0][2] >= 2, 30,
                   "two attempts: %r" % (queue_rows(p, qid),))
        rows = queue_rows(p, qid)
        assert rows[0][1] == "deferred", rows
        assert error in rows[0][3], rows
        assert peer.connections >= 2
        assert p.alive()
        # the queue is not blocked: other mail still goes out meanwhile
        other = submit_to(p, ["z@nullmx.test"], "meanwhile")
        wait_gone(p, other)
    finally:
        finish(p)
        peer.stop()


def test_starttls_injection_discarded(postern_factory, dns, port):
    p = outbound_server(postern_factory, dns, port, start=False)
    peer = RawPeer(port, "inject", cert=cert_of(p))
    try:
        p.start()
        qid = submit_to(p, ["inj@ok.test"], "injection")
        wait_gone(p, qid)
        assert len(peer.delivered) == 1 and peer.delivered[0][0], peer.delivered
        assert "discarded_plaintext=%d" % len(b"250 injected\r\n") in p.log()
    finally:
        finish(p)
        peer.stop()
