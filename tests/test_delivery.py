"""Local delivery: users, aliases, lists, plus-addressing, catch-all, domain aliases, quota, queueing."""
import os
import re
import sqlite3
import time

import pytest

from conftest import DOMAIN, HOSTNAME, header, make_message, queue_id_of, send


@pytest.fixture(scope="module")
def srv(server):
    """The module server plus the directory data these tests use, added while it runs."""
    s = server
    s.must("alias", "add", "sales@example.test", "b@example.test")
    s.must("alias", "add", "team@example.test", "a@example.test,b@example.test, c@example.test")
    s.must("alias", "add", "dup@example.test", "a@example.test,a@example.test,sales@example.test,b@example.test")
    s.must("alias", "add", "ext@example.test", "someone@remote.test")
    s.must("alias", "add", "mixed@example.test", "c@example.test,other@remote.test")
    s.must("domain", "add", "catchall.test")
    s.must("alias", "add", "@catchall.test", "c@example.test")
    s.must("domain", "add", "target.test")
    s.add_user("t@target.test")
    s.must("domain", "alias", "alias.test", "target.test")
    return s


def count(s, addr):
    return len(s.maildir(addr))


def settle():
    # Deliveries are asynchronous after the 250; give a wrong extra delivery time to show up.
    time.sleep(1.0)


def test_deliver_to_user_headers(srv):
    c = srv.smtp()
    before = count(srv, "a@example.test")
    code, text = send(c, "sender@remote.test", ["a@example.test"],
                      make_message("plain delivery 1", body="line one\r\n.leading dot\r\n"))
    assert code == 250, text
    qid = queue_id_of(text)
    msgs = srv.wait_for_delivery("a@example.test", before + 1)
    msg = [m for m in msgs if b"plain delivery 1" in m]
    assert len(msg) == 1
    msg = msg[0]
    # Added headers come first, before the client's header block.
    assert header(msg, "Return-Path") == ["<sender@remote.test>"]
    assert header(msg, "Delivered-To") == ["a@example.test"]
    received = header(msg, "Received")
    assert received, msg[:500]
    ours = received[0]
    assert qid in ours, "queue id %s not in Received: %s" % (qid, ours)
    assert HOSTNAME in ours
    assert "from " in ours and "by " in ours and ";" in ours, ours
    assert "127.0.0.1" in ours, ours
    # RFC 5321 4.4: the trace headers precede the original header block.
    first = msg.split(b"\r\n", 1)[0]
    assert first.startswith((b"Return-Path:", b"Delivered-To:", b"Received:")), first
    assert msg.index(b"Received:") < msg.index(b"Subject: plain delivery 1")
    # Dot-stuffing undone, CRLF kept.
    assert b"\r\n.leading dot\r\n" in msg
    assert msg.endswith(b"line one\r\n.leading dot\r\n")


def test_queue_id_follows_message_in_log(srv):
    c = srv.smtp()
    before = count(srv, "b@example.test")
    code, text = send(c, "sender@remote.test", ["b@example.test"], make_message("log follow"))
    assert code == 250
    qid = queue_id_of(text)
    srv.wait_for_delivery("b@example.test", before + 1)
    deadline = time.monotonic() + 5
    while True:
        lines = [l for l in srv.log().splitlines() if qid in l]
        if len(lines) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) >= 2, "queue id %s should appear on acceptance and delivery lines: %r" % (qid, lines)
    assert all("event=" in l for l in lines), lines
    # The same lines are in the log file in the data directory.
    assert qid in srv.log_file()


def test_queue_ids_are_unique(srv):
    c = srv.smtp()
    ids = set()
    for i in range(5):
        code, text = send(c, "sender@remote.test", ["c@example.test"], make_message("unique %d" % i))
        assert code == 250
        ids.add(queue_id_of(text))
    assert len(ids) == 5


def test_alias(srv):
    before = count(srv, "b@example.test")
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["sales@example.test"], make_message("to alias sales"))
    assert code == 250, text
    msgs = srv.wait_for_delivery("b@example.test", before + 1)
    m = [m for m in msgs if b"to alias sales" in m]
    assert len(m) == 1
    # Delivered-To names the final mailbox (as Postfix does) or the address the mail was sent to.
    assert header(m[0], "Delivered-To") in (["b@example.test"], ["sales@example.test"]), m[0][:300]


def test_distribution_list_each_member_once(srv):
    addrs = ["a@example.test", "b@example.test", "c@example.test"]
    before = {a: count(srv, a) for a in addrs}
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["team@example.test"], make_message("to list team"))
    assert code == 250, text
    for a in addrs:
        srv.wait_for_delivery(a, before[a] + 1)
    settle()
    for a in addrs:
        got = [m for m in srv.maildir(a) if b"to list team" in m]
        assert len(got) == 1, (a, len(got))


def test_list_duplicates_deduplicated(srv):
    # dup -> a, a, sales(->b), b  and the envelope names a and dup again.
    addrs = ["a@example.test", "b@example.test"]
    before = {a: count(srv, a) for a in addrs}
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["dup@example.test", "a@example.test", "A@Example.Test"],
                      make_message("dedup check"))
    assert code == 250, text
    for a in addrs:
        srv.wait_for_delivery(a, before[a] + 1)
    settle()
    for a in addrs:
        got = [m for m in srv.maildir(a) if b"dedup check" in m]
        assert len(got) == 1, "%s got %d copies" % (a, len(got))
    assert not [m for m in srv.maildir("c@example.test") if b"dedup check" in m]


def test_plus_address(srv):
    before = count(srv, "a@example.test")
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["a+news@example.test"], make_message("plus tag"))
    assert code == 250, text
    msgs = srv.wait_for_delivery("a@example.test", before + 1)
    m = [m for m in msgs if b"plus tag" in m]
    assert len(m) == 1
    # Delivered-To names the address the mail was sent to or the account; either way the account gets it.
    assert header(m[0], "Delivered-To"), m[0][:300]


def test_catch_all(srv):
    before = count(srv, "c@example.test")
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["whoever-123@catchall.test"], make_message("catch all"))
    assert code == 250, text
    msgs = srv.wait_for_delivery("c@example.test", before + 1)
    assert len([m for m in msgs if b"catch all" in m]) == 1


def test_catch_all_does_not_exist_for_other_domain(srv):
    c = srv.smtp()
    c.ehlo()
    assert c.mail("sender@remote.test")[0] == 250
    code, msg = c.rcpt("whoever-123@example.test")
    assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)


def test_domain_alias(srv):
    before = count(srv, "t@target.test")
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["t@alias.test"], make_message("domain alias"))
    assert code == 250, text
    msgs = srv.wait_for_delivery("t@target.test", before + 1)
    assert len([m for m in msgs if b"domain alias" in m]) == 1


def test_unknown_user_550(srv):
    c = srv.smtp()
    c.ehlo()
    assert c.mail("sender@remote.test")[0] == 250
    code, msg = c.rcpt("nobody@example.test")
    assert code == 550, (code, msg)
    assert msg.startswith(b"5.1.1"), msg
    # The transaction continues for a good recipient.
    assert c.rcpt("a@example.test")[0] == 250


def test_alias_loop_refused_not_delivered(srv):
    srv.must("alias", "add", "loop1@example.test", "a@example.test")
    srv.must("alias", "add", "loop2@example.test", "loop1@example.test")
    # Point loop1 back at loop2: the CLI may refuse the loop outright ...
    r = srv.cli("alias", "add", "loop1@example.test", "loop2@example.test")
    if r.returncode != 0:
        r = srv.cli("alias", "del", "loop1@example.test")
        assert r.returncode == 0, r
        r = srv.cli("alias", "add", "loop1@example.test", "loop2@example.test")
        if r.returncode != 0:
            return  # loops cannot be made at all
    # ... else mail to it is refused at RCPT, never accepted and lost.
    c = srv.smtp()
    c.ehlo()
    assert c.mail("sender@remote.test")[0] == 250
    code, msg = c.rcpt("loop1@example.test")
    assert code // 100 in (4, 5), (code, msg)


def test_case_insensitive_local_part(srv):
    before = count(srv, "b@example.test")
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["B@EXAMPLE.TEST"], make_message("upper case rcpt"))
    assert code == 250, text
    srv.wait_for_delivery("b@example.test", before + 1)


def test_local_only_delivered_before_the_250(srv):
    # Every recipient a local account: the copies are written and made durable in the
    # Maildirs before the 250 (direct delivery), once per account, with no spool file.
    before = {a: count(srv, a) for a in ("a@example.test", "b@example.test", "c@example.test")}
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["team@example.test", "b@example.test"],
                      make_message("direct delivery"))
    assert code == 250, text
    qid = queue_id_of(text)
    for a in before:  # no waiting: already there when the 250 came
        got = [m for m in srv.maildir(a) if b"direct delivery" in m]
        assert len(got) == 1, (a, len(got))
        assert count(srv, a) == before[a] + 1
    assert qid not in srv.spool_files()
    assert "event=committed queue_id=%s" % qid in srv.log()  # written before the 250
    want = re.compile(r"event=delivered queue_id=%s to=\S+ account=b@example.test .*direct=1" % qid)
    deadline = time.monotonic() + 10  # the copies' lines follow the 250
    while not want.search(srv.log()):
        assert time.monotonic() < deadline, "no delivered line for %s" % qid
        time.sleep(0.05)


def test_external_alias_target_stays_queued(srv):
    # remote.test has no mail server in the test DNS (conftest): the outbound agent tries the
    # external target, defers it, and the message waits in the spool for the next attempt.
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["ext@example.test"], make_message("external alias"))
    assert code == 250, text
    qid = queue_id_of(text)
    deadline = time.monotonic() + 15
    while "event=outbound_deferred queue_id=%s to=someone@remote.test" % qid not in srv.log():
        assert time.monotonic() < deadline, "no outbound attempt for %s" % qid
        time.sleep(0.1)
    assert qid in srv.spool_files(), "spool file for %s gone: %r" % (qid, srv.spool_files())
    with open(os.path.join(srv.data_dir, "spool", qid), "rb") as f:
        assert b"external alias" in f.read()
    for a in ("a@example.test", "b@example.test", "c@example.test"):
        assert not [m for m in srv.maildir(a) if b"external alias" in m]


def test_mixed_local_and_external_alias(srv):
    before = count(srv, "c@example.test")
    c = srv.smtp()
    code, text = send(c, "sender@remote.test", ["mixed@example.test"], make_message("mixed alias"))
    assert code == 250, text
    qid = queue_id_of(text)
    srv.wait_for_delivery("c@example.test", before + 1)
    # The local copy is delivered; the external one is attempted (remote.test has no mail
    # server in the test DNS), deferred, and waits in the spool.
    deadline = time.monotonic() + 15
    while "event=outbound_deferred queue_id=%s to=other@remote.test" % qid not in srv.log():
        assert time.monotonic() < deadline, "no outbound attempt for %s" % qid
        time.sleep(0.1)
    assert qid in srv.spool_files(), srv.spool_files()


def test_utf8_address_and_8bit_body(srv):
    # SMTPUTF8 is advertised, so a UTF-8 local part must be usable end to end.
    srv.must("alias", "add", "jürgen@example.test", "a@example.test")
    before = count(srv, "a@example.test")
    c = srv.smtp()
    c.ehlo()
    assert c.has_extn("smtputf8") and c.has_extn("8bitmime")
    code, msg = c.mail("sénder@remote.test", ["SMTPUTF8", "BODY=8BITMIME"])
    assert code == 250, (code, msg)
    code, msg = c.rcpt("jürgen@example.test")
    assert code == 250, (code, msg)
    body = ("From: <sénder@remote.test>\r\nTo: <jürgen@example.test>\r\nSubject: utf8 grüße\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße aus Köln – ☃\r\n").encode("utf-8")
    code, text = c.data(body)
    assert code == 250, text
    msgs = srv.wait_for_delivery("a@example.test", before + 1)
    m = [m for m in msgs if "utf8 grüße".encode() in m]
    assert len(m) == 1
    assert "Grüße aus Köln – ☃\r\n".encode() in m[0]
    assert header(m[0], "Return-Path") == ["<sénder@remote.test>"]


def test_utf8_sender_to_ascii_recipient(srv):
    before = count(srv, "b@example.test")
    c = srv.smtp()
    c.ehlo()
    code, msg = c.mail("sénder@bücher.test", ["SMTPUTF8", "BODY=8BITMIME"])
    assert code == 250, (code, msg)
    assert c.rcpt("b@example.test")[0] == 250
    code, text = c.data("Subject: utf8 sender token-u8s\r\n\r\nKöln ☃\r\n".encode())
    assert code == 250, text
    msgs = srv.wait_for_delivery("b@example.test", before + 1)
    m = [m for m in msgs if b"token-u8s" in m]
    assert len(m) == 1 and "Köln ☃\r\n".encode() in m[0]
    assert header(m[0], "Return-Path") == ["<sénder@bücher.test>"]


def test_utf8_address_without_smtputf8_refused(srv):
    c = srv.smtp()
    c.ehlo()
    # Raw UTF-8 in MAIL FROM without the SMTPUTF8 parameter is a syntax error (RFC 6531 3.4).
    c.command_encoding = "utf-8"
    code, msg = c.docmd("MAIL FROM:<sénder@remote.test>")
    assert code // 100 == 5, (code, msg)


def test_dsn_parameters_accepted(srv):
    before = count(srv, "b@example.test")
    c = srv.smtp()
    c.ehlo()
    assert c.has_extn("dsn"), c.esmtp_features
    code, text = send(c, "sender@remote.test", ["b@example.test"], make_message("dsn params"),
                      mail_options=["RET=HDRS", "ENVID=QQ314159+2Bx"],
                      rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@example.test"])
    assert code == 250, text
    msgs = srv.wait_for_delivery("b@example.test", before + 1)
    assert [m for m in msgs if b"dsn params" in m]


def test_dsn_bad_parameters_refused(srv):
    c = srv.smtp()
    c.ehlo()
    assert c.mail("sender@remote.test", ["RET=SOMETIMES"])[0] == 501
    c.rset()
    assert c.mail("sender@remote.test")[0] == 250
    assert c.rcpt("b@example.test", ["NOTIFY=NEVER,SUCCESS"])[0] == 501
    code, msg = c.rcpt("b@example.test", ["FROBNICATE=1"])
    assert code == 555, (code, msg)


def test_null_sender_accepted(srv):
    before = count(srv, "c@example.test")
    c = srv.smtp()
    code, text = send(c, "<>", ["c@example.test"], make_message("null sender bounce"))
    assert code == 250, text
    msgs = srv.wait_for_delivery("c@example.test", before + 1)
    m = [m for m in msgs if b"null sender bounce" in m]
    assert header(m[0], "Return-Path") == ["<>"]


def test_swaks_delivery(srv):
    import subprocess
    before = count(srv, "c@example.test")
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(srv.smtp_port), "--helo", "swaks.test",
                        "--from", "swaks@remote.test", "--to", "c@example.test",
                        "--header", "Subject: via swaks", "--body", "swaks body"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    out = r.stdout.decode(errors="replace")
    assert re.search(r"<[-~]\s+250 2\.0\.0 .*queued as [A-Za-z0-9]+", out), out
    msgs = srv.wait_for_delivery("c@example.test", before + 1)
    assert [m for m in msgs if b"via swaks" in m]


class TestQuota:
    """Quota: 452 4.2.2 at DATA when the message would exceed it, at RCPT when full; nothing half-written."""

    def test_quota(self, postern_factory):
        s = postern_factory()
        s.add_user("q@example.test", quota="40K")
        c = s.smtp()
        big = make_message("quota fits", body="x" * 70 + "\r\n") + (("y" * 78 + "\r\n") * 300).encode()  # ~24 KiB
        code, text = send(c, "sender@remote.test", ["q@example.test"], big)
        assert code == 250, text
        s.wait_for_delivery("q@example.test", 1)
        s.wait_for_usage("q@example.test")

        # A second 24 KiB would exceed 40K: refused at DATA, and nothing of it stored.
        big2 = make_message("quota exceeded", body="x\r\n") + (("z" * 78 + "\r\n") * 300).encode()
        assert c.mail("sender@remote.test")[0] == 250
        code, msg = c.rcpt("q@example.test")
        assert code == 250, (code, msg)
        code, msg = c.data(big2)
        assert code == 452 and msg.startswith(b"4.2.2"), (code, msg)
        time.sleep(1.0)
        assert len(s.maildir("q@example.test")) == 1
        assert s.maildir_files("q@example.test", subdirs=("tmp",)) == []
        assert s.spool_tmp_files() == []

        # A small one still fits.
        code, text = send(c, "sender@remote.test", ["q@example.test"], make_message("quota small"))
        assert code == 250, text
        s.wait_for_delivery("q@example.test", 2)
        s.wait_for_usage("q@example.test")

        # Lower the quota below what is stored: the mailbox is full, RCPT says 452 4.2.2 at once.
        s.must("user", "quota", "q@example.test", "10K")
        assert c.mail("sender@remote.test")[0] == 250
        code, msg = c.rcpt("q@example.test")
        assert code == 452 and msg.startswith(b"4.2.2"), (code, msg)
        # Another recipient in the same transaction is unaffected.
        assert c.rcpt("a@example.test")[0] == 250
        c.rset()
        time.sleep(0.5)
        assert len(s.maildir("q@example.test")) == 2

    def test_quota_multi_recipient_data(self, postern_factory):
        s = postern_factory()
        s.add_user("q@example.test", quota="20K")
        c = s.smtp()
        c.ehlo()
        big = make_message("multi quota", body="x\r\n") + (("y" * 78 + "\r\n") * 300).encode()
        assert c.mail("sender@remote.test")[0] == 250
        assert c.rcpt("q@example.test")[0] == 250
        assert c.rcpt("a@example.test")[0] == 250
        code, msg = c.data(big)
        # SMTP has one DATA reply for all recipients: the message must be refused with
        # 452 4.2.2 (the client retries later) rather than half-delivered or lost for q.
        assert code == 452 and msg.startswith(b"4.2.2"), (code, msg)
        time.sleep(1.5)
        assert s.maildir("q@example.test") == []
        assert s.maildir("a@example.test") == []
        assert s.maildir_files("q@example.test", subdirs=("tmp",)) == []
        assert s.spool_tmp_files() == []


def test_rcpt_lookup_error_goes_to_a_worker_then_recovers(postern_factory):
    """RCPT lookups run on the event loop, without waiting for locks; one that fails there
    is run again on a worker (which waits for locks), and only a failure there is a 451."""
    p = postern_factory()
    db = sqlite3.connect(os.path.join(p.data_dir, "postern.db"), timeout=10, isolation_level=None)
    try:
        db.execute("ALTER TABLE accounts RENAME TO accounts_gone")
        try:
            c = p.smtp()
            c.ehlo_or_helo_if_needed()
            assert c.mail("sender@remote.test")[0] == 250
            code, msg = c.rcpt("a@example.test")
            assert (code, msg[:5]) == (451, b"4.3.0"), (code, msg)
            # the session goes on: the next one is answered too
            code, msg = c.rcpt("b@example.test")
            assert code == 451, (code, msg)
        finally:
            db.execute("ALTER TABLE accounts_gone RENAME TO accounts")
        code, msg = c.rcpt("a@example.test")
        assert code == 250, (code, msg)
        code, msg = c.data(make_message("after the lookup errors"))
        assert code == 250, (code, msg)
        c.quit()
        p.wait_for_delivery("a@example.test", 1)
        assert "event=rcpt_lookup_slow" not in p.log()
    finally:
        db.close()


def test_rcpt_answered_while_the_directory_is_written(postern_factory):
    """A writer holding the directory's write lock (the CLI, a usage update) does not hold
    up the lookups on the event loop (WAL readers do not wait for writers)."""
    p = postern_factory()
    db = sqlite3.connect(os.path.join(p.data_dir, "postern.db"), timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE accounts SET used = used + 0")
        c = p.smtp()
        c.ehlo_or_helo_if_needed()
        assert c.mail("sender@remote.test")[0] == 250
        t0 = time.monotonic()
        for rcpt in ("a@example.test", "b@example.test"):
            code, msg = c.rcpt(rcpt)
            assert code == 250, (code, msg)
        code, msg = c.rcpt("nobody@example.test")
        assert code == 550, (code, msg)
        assert time.monotonic() - t0 < 3.0
        db.execute("COMMIT")
        code, msg = c.data(make_message("while written"))
        assert code == 250, (code, msg)
        c.quit()
    finally:
        db.close()


def test_direct_delivery_partial_failure_takes_the_queue(postern_factory):
    """Direct delivery (every recipient local: copies made durable before the 250) where one
    account's copy cannot be put into new/: the 250 still comes, the copies already made stay,
    and the queue delivers the missing one later, without a second copy for the others."""
    p = postern_factory()
    c = p.smtp()
    # both Maildirs exist (a first message each)
    for rcpt in ("a@example.test", "b@example.test"):
        code, text = send(c, "sender@remote.test", [rcpt], make_message("warm " + rcpt, to=rcpt))
        assert code == 250, text
        p.wait_for_delivery(rcpt, 1)
    bnew = os.path.join(p.maildir_path("b@example.test"), "new")
    os.chmod(bnew, 0o500)  # the server (not root) cannot rename a copy into it
    try:
        code, text = send(c, "sender@remote.test", ["a@example.test", "b@example.test"],
                          make_message("partial direct"))
        assert code == 250, text
        qid = queue_id_of(text)
        p.wait_for_delivery("a@example.test", 2)
        deadline = time.monotonic() + 10
        while "event=maildir_write_failed queue_id=%s account=b@example.test" % qid not in p.log():
            assert time.monotonic() < deadline, p.log()[-3000:]
            time.sleep(0.1)
        assert len(p.maildir("b@example.test")) == 1
    finally:
        os.chmod(bnew, 0o700)
    p.must("queue", "flush")
    p.wait_for_delivery("b@example.test", 2, timeout=30)
    time.sleep(1.0)  # a wrong second copy for a would show up by now
    for rcpt in ("a@example.test", "b@example.test"):
        got = [m for m in p.maildir(rcpt) if b"partial direct" in m]
        assert len(got) == 1, (rcpt, len(got))
    # a's copy was made before the 250 and the queue knew it (no second one)
    assert "event=already_delivered queue_id=%s account=a@example.test" % qid in p.log()
    c.quit()
