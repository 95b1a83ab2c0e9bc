"""
Queue administration (issue 4): `postern queue list|show|flush|delete|hold|release|bounce`
against a running server whose outbound agent talks to a scripted aiosmtpd sink (conftest.Sink)
through the private test DNS, and with the server stopped.
"""
import json
import subprocess
import time

from conftest import DOMAIN, Sink, finish
from test_bounce import wait_bounces
from test_outbound import (dns, dsn_parts, outbound_server, port, queue_rows,  # noqa: F401
                           submit_to, wait_gone, wait_until)

A = "a@" + DOMAIN


def qlist(p):
    r = p.must("queue", "list", "--json")
    return json.loads(r.stdout)


def entry(p, qid):
    found = [m for m in qlist(p) if m["id"] == qid]
    return found[0] if found else None


def attempts(p, qid):
    rows = queue_rows(p, qid)
    return rows[0][2] if rows else -1


def test_list_and_show(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port, queue={"retry_min": "1h", "retry_max": "2h"})
    try:
        assert p.must("queue", "list").stdout.decode() == "the queue is empty\n"
        assert qlist(p) == []
        qid = submit_to(p, ["defer99@ok.test", "later@ok.test"], "listed message")
        wait_until(lambda: attempts(p, qid) >= 1, 20, "the first attempt")
        m = entry(p, qid)
        assert m is not None, qlist(p)
        assert m["sender"] == A
        assert m["size"] > 0 and m["age"] >= 0 and not m["held"]
        rcpts = {r["address"]: r for r in m["recipients"]}
        # the other recipient was accepted in the same transaction: not listed any more
        assert list(rcpts) == ["defer99@ok.test"], rcpts
        r = rcpts["defer99@ok.test"]
        assert r["state"] == "deferred" and r["remote"] and r["attempts"] == 1
        assert r["last_error_code"] == 450 and r["last_error_status"] == "4.2.0"
        assert "try again later" in r["last_error_text"]
        # retry_min = 1h: the next attempt is about an hour away
        assert 2400 < r["next_attempt_in"] <= 3600, r
        text = p.must("queue", "list").stdout.decode()
        assert qid in text and "<%s>" % A in text
        assert "defer99@ok.test  deferred (remote)  attempts=1  next attempt in" in text
        assert "450 4.2.0" in text and "-- 1 message(s)" in text
        show = p.must("queue", "show", qid).stdout.decode()
        assert "Subject: listed message" in show
        assert "later@ok.test  delivered" in show, show
        assert "authenticated as %s" % A in show
        js = json.loads(p.must("queue", "show", "--json", qid).stdout)
        assert {r["address"]: r["state"] for r in js["recipients"]} == {
            "defer99@ok.test": "deferred", "later@ok.test": "delivered"}
        r = p.cli("queue", "show", "NOSUCHID")
        assert r.returncode == 1 and b"no such message" in r.stderr
        r = p.cli("queue", "hold", "../etc")
        assert r.returncode == 1 and b"not a queue id" in r.stderr
    finally:
        finish(p)
        sink.stop()


def test_hold_and_release(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port)  # retry_min 1s, retry_max 2s
    try:
        qid = submit_to(p, ["defer4@ok.test"], "held message")
        wait_until(lambda: sink.rcpt_seen.get("defer4@ok.test", 0) >= 1, 20, "the first attempt")
        out = p.must("queue", "hold", qid).stdout.decode()
        assert out == "held %s\n" % qid
        assert entry(p, qid)["held"]
        assert "HELD" in p.must("queue", "list").stdout.decode()
        # an attempt already running when the hold came may finish; after that, none
        time.sleep(1.5)
        seen = sink.rcpt_seen["defer4@ok.test"]
        time.sleep(4)  # two retry_max periods
        assert sink.rcpt_seen["defer4@ok.test"] == seen
        assert entry(p, qid)["recipients"][0]["next_attempt"] is None
        r = p.cli("queue", "flush", qid)
        assert r.returncode == 1 and b"on hold" in r.stderr
        assert p.must("queue", "release", qid).stdout.decode() == "released %s\n" % qid
        sink.wait(1, timeout=30)
        wait_gone(p, qid)
        assert "event=queue_admin_held queue_id=%s" % qid in p.log()
    finally:
        finish(p)
        sink.stop()


def test_flush(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port, queue={"retry_min": "1h", "retry_max": "2h"})
    try:
        q1 = submit_to(p, ["defer1@ok.test"], "flush one")
        q2 = submit_to(p, ["defer1x@ok.test"], "flush all")
        wait_until(lambda: attempts(p, q1) >= 1 and attempts(p, q2) >= 1, 20, "first attempts")
        time.sleep(1.5)
        assert sink.messages == []
        out = p.must("queue", "flush", q1).stdout.decode()
        assert out == "1 deferred recipient(s) due now\n"
        msgs = sink.wait(1, timeout=10)
        assert msgs[0]["rcpt_tos"] == ["defer1@ok.test"]
        wait_gone(p, q1)
        assert entry(p, q2) is not None
        assert p.must("queue", "flush").stdout.decode() == "1 deferred recipient(s) due now\n"
        sink.wait(2, timeout=10)
        wait_gone(p, q2)
    finally:
        finish(p)
        sink.stop()


def test_delete_one_and_all(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port, queue={"retry_min": "2s", "retry_max": "3s"})
    try:
        qids = [submit_to(p, ["defer99@ok.test"], "delete %d" % i) for i in range(3)]
        wait_until(lambda: all(attempts(p, q) >= 1 for q in qids), 20, "first attempts")
        assert p.must("queue", "delete", qids[0]).stdout.decode() == "deleted 1 message(s)\n"
        wait_gone(p, qids[0], timeout=2)
        assert sorted(m["id"] for m in qlist(p)) == sorted(qids[1:])
        r = p.cli("queue", "delete", qids[0])
        assert r.returncode == 1 and b"no such message" in r.stderr
        r = p.cli("queue", "delete")
        assert r.returncode == 2
        assert p.must("queue", "delete", "--all").stdout.decode() == "deleted 2 message(s)\n"
        for q in qids:
            wait_gone(p, q, timeout=2)
        assert qlist(p) == []
        # deleted quietly: no DSN for the sender, no more attempts
        n = sink.rcpt_seen["defer99@ok.test"]
        time.sleep(4)
        assert sink.rcpt_seen["defer99@ok.test"] == n
        assert p.maildir(A) == []
    finally:
        finish(p)
        sink.stop()


def test_delete_waits_for_the_delivery_in_progress(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port)
    try:
        qid = submit_to(p, ["stall@ok.test"], "deleted during data")
        wait_until(lambda: sink.stalled, 20, "the message to reach DATA")
        cli = subprocess.Popen([p.bin, "-c", p.conf, "queue", "delete", qid],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=p.dir)
        time.sleep(2.5)
        # the transfer is not cut off, and the request waits for it
        assert cli.poll() is None
        assert entry(p, qid)["held"]
        sink.release = True  # the stalled DATA ends with 451
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 0, err
        assert out.decode() == "deleted 1 message(s)\n"
        wait_gone(p, qid, timeout=2)
        log = p.log()
        # the attempt was recorded before the delete, and nothing was tried after it
        assert log.index("event=outbound_deferred queue_id=%s" % qid) < \
            log.index("event=queue_admin_deleted queue_id=%s" % qid)
        n = sink.rcpt_seen["stall@ok.test"]
        time.sleep(3)
        assert sink.rcpt_seen["stall@ok.test"] == n == 1
        assert sink.messages == []
    finally:
        finish(p)
        sink.stop()


def test_bounce(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port, queue={"retry_min": "1h", "retry_max": "2h"})
    try:
        qid = submit_to(p, ["defer99@ok.test", "ok@ok.test"], "returned by the admin")
        wait_until(lambda: attempts(p, qid) >= 1, 20, "the first attempt")
        out = p.must("queue", "bounce", qid).stdout.decode()
        assert out.startswith("returned %s to <%s>: 1 recipient(s), DSN " % (qid, A)), out
        wait_gone(p, qid, timeout=2)
        b = wait_bounces(p, "Undelivered Mail")[0]
        m, per_msg, rcpts, returned = dsn_parts(b)
        assert len(rcpts) == 1
        r = rcpts[0]
        assert r["final-recipient"] == "rfc822; defer99@ok.test"
        assert r["action"] == "failed" and r["status"] == "5.0.0"
        assert "administrator" in r["diagnostic-code"]
        assert "Subject: returned by the admin" in str(returned)
        assert "event=queue_admin_bounced queue_id=%s" % qid in p.log()
    finally:
        finish(p)
        sink.stop()


def test_commands_with_the_server_stopped(postern_factory, dns, port):  # noqa: F811
    sink = Sink("127.0.0.2", port, name="mx1").start()
    p = outbound_server(postern_factory, dns, port, queue={"retry_min": "1h", "retry_max": "2h"})
    try:
        q1 = submit_to(p, ["defer99@ok.test"], "offline hold")
        q2 = submit_to(p, ["defer99@ok.test"], "offline delete")
        q3 = submit_to(p, ["defer99@ok.test"], "offline bounce")
        wait_until(lambda: all(attempts(p, q) >= 1 for q in (q1, q2, q3)), 20, "first attempts")
        assert p.stop() == 0
        assert p.must("queue", "hold", q1).stdout.decode() == "held %s\n" % q1
        assert p.must("queue", "delete", q2).stdout.decode() == "deleted 1 message(s)\n"
        assert p.must("queue", "bounce", q3).stdout.decode().startswith("returned %s" % q3)
        ids = [m["id"] for m in qlist(p)]
        assert q1 in ids and q2 not in ids and q3 not in ids
        assert p.must("queue", "flush").stdout.decode() == "0 deferred recipient(s) due now\n"
        # the DSN made offline is delivered at the next start; the held message waits
        p.start()
        wait_bounces(p, "Undelivered Mail")
        assert entry(p, q1)["held"]
        assert p.must("queue", "release", q1).stdout.decode() == "released %s\n" % q1
        wait_until(lambda: attempts(p, q1) >= 2, 20, "the attempt after the release")
    finally:
        finish(p)
        sink.stop()
