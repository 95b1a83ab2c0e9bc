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


# ---- the remaining outbound items of issue 4: IDNA and SMTPUTF8, CHUNKING, TLS fallback ----

import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from conftest import ROOT, free_port_on, make_message, queue_id_of, send  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
from testdns import DNSServer  # noqa: E402

HEAD = "$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1\n"
PEER_HOSTS = ["127.0.0.2", "127.0.0.6", "127.0.0.7", "127.0.0.8"]
IDN_ZONES = {
    # bücher.test: an aiosmtpd sink that offers SMTPUTF8
    "xn--bcher-kva.test": HEAD + "@ MX 10 mx\nmx A 127.0.0.2\n",
    # café.test: a scripted peer without SMTPUTF8
    "xn--caf-dma.test": HEAD + "@ MX 10 mx\nmx A 127.0.0.6\n",
    "chunk.test": HEAD + "@ MX 10 mx\nmx A 127.0.0.7\n",
    "brokentls.test": HEAD + "@ MX 10 mx\nmx A 127.0.0.8\n",
}


@pytest.fixture(scope="module")
def idn_dns(tmp_path_factory):
    d = DNSServer(tmp_path_factory.mktemp("idndns"), zones=IDN_ZONES)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def peer_port():
    return free_port_on(PEER_HOSTS)


class ScriptPeer:
    """A scripted SMTP receiver on host:port: EHLO offers PIPELINING, 8BITMIME and SIZE, plus
    SMTPUTF8, CHUNKING (BDAT) and STARTTLS as asked. starttls="broken" answers 220 to STARTTLS
    and then sends plaintext instead of a TLS handshake. Records every session."""

    def __init__(self, host, port, smtputf8=False, chunking=False, starttls=None):
        self.smtputf8, self.chunking, self.starttls = smtputf8, chunking, starttls
        self.sessions = []   # dicts: commands (list of str), starttls (bool)
        self.messages = []   # dicts: mail, rcpts, content, via ("DATA"/"BDAT"), chunks
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                conn.settimeout(10)
                self._session(conn)
            except (OSError, ValueError):
                pass
            finally:
                conn.close()

    def _session(self, conn):
        f = conn.makefile("rb")
        s = {"commands": [], "starttls": False}
        self.sessions.append(s)
        conn.sendall(b"220 peer.test ESMTP scripted\r\n")
        mail, rcpts, chunks, content = None, [], [], b""
        for _ in range(1000):
            line = f.readline(4096)
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
            s["commands"].append(cmd)
            verb = cmd.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                ext = ["PIPELINING", "8BITMIME", "SIZE 10000000"]
                if self.smtputf8:
                    ext.append("SMTPUTF8")
                if self.chunking:
                    ext.append("CHUNKING")
                if self.starttls:
                    ext.append("STARTTLS")
                lines = ["peer.test"] + ext
                conn.sendall("".join("250%s%s\r\n" % ("-" if i < len(lines) - 1 else " ", l)
                                     for i, l in enumerate(lines)).encode())
            elif verb == "STARTTLS":
                s["starttls"] = True
                conn.sendall(b"220 2.0.0 go ahead\r\nthis is not a TLS handshake\r\n")
                return
            elif verb == "MAIL":
                mail, rcpts, chunks, content = cmd, [], [], b""
                conn.sendall(b"250 2.1.0 ok\r\n")
            elif verb == "RCPT":
                rcpts.append(cmd)
                conn.sendall(b"250 2.1.5 ok\r\n")
            elif verb == "DATA":
                conn.sendall(b"354 go on\r\n")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    more = f.readline(65536)
                    if not more:
                        return
                    data += more
                body = data[:-3].replace(b"\r\n..", b"\r\n.")
                if body.startswith(b".."):
                    body = body[1:]
                self.messages.append({"mail": mail, "rcpts": rcpts, "content": body,
                                      "via": "DATA", "chunks": []})
                conn.sendall(b"250 2.0.0 queued\r\n")
            elif verb == "BDAT":
                parts = cmd.split(" ")
                n = int(parts[1])
                content += f.read(n)
                chunks.append(n)
                if len(parts) > 2 and parts[2].upper() == "LAST":
                    if any("<refuse" in r for r in rcpts):
                        conn.sendall(b"554 5.6.0 content refused\r\n")
                        continue
                    self.messages.append({"mail": mail, "rcpts": rcpts, "content": content,
                                          "via": "BDAT", "chunks": chunks})
                    conn.sendall(b"250 2.0.0 queued in chunks\r\n")
                else:
                    conn.sendall(b"250 2.0.0 chunk taken\r\n")
            elif verb == "QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 2.0.0 ok\r\n")

    def wait(self, n, timeout=20):
        wait_until(lambda: len(self.messages) >= n, timeout, "%d message(s) at the peer" % n)
        return self.messages


def submit_utf8(p, rcpts, subject, to_header=None):
    c = p.submit()
    c.ehlo()
    assert c.mail(A, ["SMTPUTF8", "BODY=8BITMIME"])[0] == 250
    for r in rcpts:
        code, text = c.rcpt(r)
        assert code == 250, (r, code, text)
    to = to_header if to_header is not None else "<%s>" % rcpts[0]
    body = ("From: <%s>\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n" % (A, to, subject))
    code, text = c.data(body.encode("utf-8"))
    assert code == 250, text
    c.quit()
    return queue_id_of(text.decode())


def test_idn_domain_to_a_peer_with_smtputf8(postern_factory, idn_dns, peer_port):
    sink = Sink("127.0.0.2", peer_port, name="mx").start()
    p = outbound_server(postern_factory, idn_dns, peer_port)
    try:
        qid = submit_utf8(p, ["joe@bücher.test"], "idn with smtputf8")
        m = sink.wait(1)[0]
        # found through the A-label MX, sent as is with SMTPUTF8
        assert m["rcpt_tos"] == ["joe@bücher.test"]
        assert "SMTPUTF8" in m["mail_options"]
        wait_gone(p, qid)
    finally:
        finish(p)
        sink.stop()


def test_idn_domain_downgraded_to_a_peer_without_smtputf8(postern_factory, idn_dns, peer_port):
    peer = ScriptPeer("127.0.0.6", peer_port).start()
    p = outbound_server(postern_factory, idn_dns, peer_port)
    try:
        # only the domains are non-ASCII (the header is ASCII): A-labels, no SMTPUTF8
        undisclosed = "undisclosed-recipients:;"
        qid = submit_utf8(p, ["joe@café.test"], "idn downgraded", to_header=undisclosed)
        m = peer.wait(1)[0]
        assert m["mail"].startswith("MAIL FROM:<%s> " % A) and "SMTPUTF8" not in m["mail"]
        assert m["rcpts"] == ["RCPT TO:<joe@xn--caf-dma.test>"]
        # our Received: names the recipient in A-labels too, and the header is ASCII
        head = m["content"].split(b"\r\n\r\n")[0]
        assert max(head) < 0x80, head
        assert b"for <joe@xn--caf-dma.test>" in head, head
        wait_gone(p, qid)
        # a non-ASCII local part cannot go: that recipient bounces with 5.6.7, the other goes
        qid = submit_utf8(p, ["ann@café.test", "jörg@café.test"], "half", to_header=undisclosed)
        m = peer.wait(2)[1]
        assert m["rcpts"] == ["RCPT TO:<ann@xn--caf-dma.test>"]
        b = wait_bounces(p, "Undelivered Mail")[0]
        # a UTF-8 address: RFC 6533's message/global-delivery-status with a utf-8 address type
        assert b"Content-Type: message/global-delivery-status\r\n" in b
        report = b.split(b"Reporting-MTA:")[1]
        assert report.count(b"Final-Recipient:") == 1
        assert "Final-Recipient: utf-8; jörg@café.test\r\n".encode() in report
        assert b"Status: 5.6.7\r\n" in report
        assert b"Diagnostic-Code: smtp; 553 5.6.7 " in report
        wait_gone(p, qid)
        # a non-ASCII header needs SMTPUTF8: that message bounces whole
        qid = submit_utf8(p, ["joe@café.test"], "grüße", to_header=undisclosed)
        b = [m for m in wait_bounces(p, "Undelivered Mail", n=2) if b"Status: 5.6.7" in m
             and "grüße".encode() in m and b"ann@" not in m][0]
        # the returned original has a UTF-8 header: message/global (RFC 6532)
        assert b"Content-Type: message/global\r\n" in b
        wait_gone(p, qid)
        assert len(peer.messages) == 2
    finally:
        finish(p)
        peer.stop()


def test_chunking(postern_factory, idn_dns, peer_port):
    peer = ScriptPeer("127.0.0.7", peer_port, chunking=True).start()
    p = outbound_server(postern_factory, idn_dns, peer_port)
    try:
        c = p.submit()
        body = make_message("chunked", body=".starts with a dot\r\n" + ("x" * 70 + "\r\n") * 50,
                            sender=A, to="c@chunk.test")
        code, text = send(c, A, ["c@chunk.test"], body)
        assert code == 250, text
        c.quit()
        m = peer.wait(1)[0]
        assert m["via"] == "BDAT"
        assert len(m["content"]) == sum(m["chunks"])
        # BDAT is not dot-stuffed: the body arrives exactly as submitted
        assert m["content"].endswith(body.split(b"\r\n\r\n", 1)[1])
        assert not [x for x in peer.sessions[0]["commands"] if x.upper() == "DATA"]
        wait_gone(p, queue_id_of(text))
        # the last chunk refused: the message bounces with that reply, and RSET follows
        qid = submit_to(p, ["refuse@chunk.test"], "refused chunk")
        b = wait_bounces(p, "Undelivered Mail")[0]
        _, _, rcpts, _ = dsn_parts(b)
        assert [r["status"] for r in rcpts] == ["5.6.0"]
        assert "554 5.6.0 content refused" in rcpts[0]["diagnostic-code"]
        cmds = peer.sessions[-1]["commands"]
        last = max(i for i, x in enumerate(cmds) if x.startswith("BDAT"))
        assert cmds[last + 1] == "RSET", cmds
        wait_gone(p, qid)
        assert len(peer.messages) == 1
    finally:
        finish(p)
        peer.stop()


def test_plaintext_after_a_failed_starttls(postern_factory, idn_dns, peer_port):
    peer = ScriptPeer("127.0.0.8", peer_port, starttls="broken").start()
    p = outbound_server(postern_factory, idn_dns, peer_port)
    try:
        qid = submit_to(p, ["t@brokentls.test"], "tls fallback")
        m = peer.wait(1)[0]
        assert m["rcpts"] == ["RCPT TO:<t@brokentls.test>"]
        # first session: STARTTLS, broken handshake; second: the same MX in plaintext
        assert peer.sessions[0]["starttls"]
        assert not peer.sessions[1]["starttls"]
        assert not any(x.upper() == "STARTTLS" for x in peer.sessions[1]["commands"])
        wait_gone(p, qid)
        log = p.log()
        assert "event=outbound_tls_failed relay=mx.brokentls.test[127.0.0.8]" in log
        assert "event=outbound_tls_fallback domain=brokentls.test host=mx.brokentls.test" in log
        assert "event=delivered_remote queue_id=%s" % qid in log
    finally:
        finish(p)
        peer.stop()
