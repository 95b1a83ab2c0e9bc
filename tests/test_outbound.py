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
        p.write_config(extra=dict(p.extra, queue=dict(p.extra["queue"], remote_port=str(port),
                                                      max_per_domain="1")))
        p.start()
        sink.wait(3)
        for q in qids:
            wait_gone(p, q)
        log = p.log()
        relay_lines = [line for line in log.splitlines() if "event=outbound_tls" in line
                       or "event=delivered_remote" in line]
        assert len([line for line in relay_lines if "delivered_remote" in line]) == 3
        assert sink.controller.server is not None
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
