"""
Delivery status notifications from the outbound agent (issue 4): 5xx bounces, null MX,
expiry after max_lifetime, the delay notice after warn_after, never a bounce of a bounce.
The DSNs land in the local sender's INBOX and are parsed back with the email module.
"""
import time

from conftest import DOMAIN, Sink, finish, header, make_message, queue_id_of, send
from test_outbound import (dns, dsn_parts, outbound_server, port, submit_to,  # noqa: F401
                           wait_gone)

A = "a@" + DOMAIN


def bounces(p, subject_part):
    return [m for m in p.maildir(A) if subject_part.encode() in m.split(b"\r\n\r\n", 1)[0]]


def wait_bounces(p, subject_part, n=1, timeout=30):
    deadline = time.monotonic() + timeout
    while len(bounces(p, subject_part)) < n:
        if time.monotonic() > deadline:
            raise AssertionError("no DSN (%s) in %s's INBOX; log tail:\n%s"
                                 % (subject_part, A, p.log()[-3000:]))
        time.sleep(0.1)
    return bounces(p, subject_part)


def test_5xx_bounce_with_dsn(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port)
    try:
        qid = submit_to(p, ["reject@ok.test", "fine@ok.test"], "half rejected",
                        mail_options=["RET=HDRS", "ENVID=env+2B1"])
        assert sink.wait(1)[0]["rcpt_tos"] == ["fine@ok.test"]
        msgs = wait_bounces(p, "Undelivered Mail")
        assert len(msgs) == 1
        b = msgs[0]
        assert header(b, "Return-Path") == ["<>"]
        assert header(b, "Auto-Submitted") == ["auto-replied"]
        m, per_msg, rcpts, returned = dsn_parts(b)
        assert per_msg["reporting-mta"] == "dns; mx.example.test"
        assert per_msg["original-envelope-id"] == "env+2B1"
        assert len(rcpts) == 1
        r = rcpts[0]
        assert r["final-recipient"] == "rfc822; reject@ok.test"
        assert r["action"] == "failed"
        assert r["status"] == "5.1.1"
        assert r["remote-mta"] == "dns; mx1.ok.test[127.0.0.2]"
        assert r["diagnostic-code"].startswith("smtp; 550 5.1.1")
        # RET=HDRS: the header only
        assert returned.get_content_type() == "text/rfc822-headers"
        text = returned.get_payload()
        assert "Subject: half rejected" in text and "hello" not in text
        wait_gone(p, qid)
    finally:
        finish(p)
        sink.stop()


def test_null_mx_bounces_at_once(postern_factory, dns, port):  # noqa: F811
    p = outbound_server(postern_factory, dns, port)
    try:
        qid = submit_to(p, ["z@nullmx.test"], "to a null mx")
        b = wait_bounces(p, "Undelivered Mail", timeout=15)[0]
        m, per_msg, rcpts, returned = dsn_parts(b)
        assert rcpts[0]["status"] == "5.1.10"
        assert rcpts[0]["action"] == "failed"
        # no RET: the whole message comes back
        assert returned.get_content_type() == "message/rfc822"
        assert returned.get_payload()[0]["Subject"] == "to a null mx"
        wait_gone(p, qid)
        assert "attempts=" not in [l for l in p.log().splitlines() if qid in l and "deferred" in l]
    finally:
        finish(p)


def test_lifetime_expiry_bounce(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port, queue={"max_lifetime": "5s"})
    try:
        t0 = time.monotonic()
        qid = submit_to(p, ["defer99@ok.test"], "never accepted")
        b = wait_bounces(p, "Undelivered Mail", timeout=30)[0]
        assert time.monotonic() - t0 >= 4
        m, per_msg, rcpts, returned = dsn_parts(b)
        assert rcpts[0]["status"] == "4.4.7"
        assert rcpts[0]["action"] == "failed"
        assert "450 4.2.0" in rcpts[0]["diagnostic-code"]
        assert sink.rcpt_seen["defer99@ok.test"] >= 2
        wait_gone(p, qid)
        assert sink.messages == []
    finally:
        finish(p)
        sink.stop()


def test_delay_notice_once(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port, queue={"warn_after": "2s", "max_lifetime": "1h"})
    try:
        submit_to(p, ["defer99@ok.test"], "slow one")
        b = wait_bounces(p, "Delayed Mail", timeout=20)[0]
        m, per_msg, rcpts, returned = dsn_parts(b)
        assert rcpts[0]["action"] == "delayed"
        assert rcpts[0]["status"] == "4.2.0"
        # still retried, but no second notice
        seen = sink.rcpt_seen["defer99@ok.test"]
        deadline = time.monotonic() + 15
        while sink.rcpt_seen["defer99@ok.test"] < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.rcpt_seen["defer99@ok.test"] >= seen + 2
        assert len(bounces(p, "Delayed Mail")) == 1
        assert not bounces(p, "Undelivered Mail")
    finally:
        finish(p)
        sink.stop()


def test_no_bounce_of_a_bounce(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port)
    try:
        # a trusted client relays a message with the null sender to a recipient that is refused
        c = p.smtp(source="127.0.0.2")
        code, text = send(c, "<>", ["reject@ok.test"], make_message("a bounce itself", sender=""))
        assert code == 250, text
        qid = queue_id_of(text)
        wait_gone(p, qid)
        assert "event=bounce_suppressed queue_id=%s" % qid in p.log()
        time.sleep(1.0)
        assert p.maildir(A) == []
        assert sink.messages == []
    finally:
        finish(p)
        sink.stop()
