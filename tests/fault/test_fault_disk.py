"""
Disk full (issue 6 item 2): the data directory is a 4 MiB tmpfs that the test fills. SMTP must
answer 4xx (452 4.3.1) and acknowledge nothing, keep what was stored before byte for byte, keep
running, and accept and deliver again once space returns.
"""
import os
import time

from conftest import DOMAIN, make_message
from faultlib import fill_disk, free_bytes, still_serves, tmpfs_postern

RCPT = "a@" + DOMAIN


def deliver_one(p, subject, n_before):
    c = p.smtp()
    c.ehlo()
    assert c.mail("s@remote.test")[0] == 250
    assert c.rcpt(RCPT)[0] == 250
    code, text = c.data(make_message(subject))
    assert code == 250, (code, text)
    c.quit()
    msgs = p.wait_for_delivery(RCPT, n_before + 1)
    # the delivery round ends after the Maildir file appears: rows marked delivered, spool file
    # removed. Wait for that, so the disk is not filled under its bookkeeping.
    deadline = time.monotonic() + 15
    while p.spool_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.spool_files() == [], "queue not drained: %r" % p.spool_files()
    assert len(p.maildir(RCPT)) == n_before + 1, "duplicate delivery"
    return msgs


def snapshot(p):
    out = {}
    for path in p.maildir_files(RCPT):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


def same_messages(before, p):
    """Every message stored before is still there with the same bytes (it may have moved from
    new/ to cur/, which keeps the base name up to the ':2,' suffix)."""
    now = {}
    for k, v in snapshot(p).items():
        now[k.split(":")[0]] = v
    for k, v in before.items():
        assert k.split(":")[0] in now, "stored message %s vanished" % k
        assert now[k.split(":")[0]] == v, "stored message %s changed" % k


def try_transaction(p, body):
    """MAIL, RCPT and DATA on a full disk; returns the codes (None where not reached)."""
    c = p.raw()
    codes = {"mail": None, "rcpt": None, "data": None, "end": None}
    try:
        assert c.cmd("EHLO client.example.test").code == 250
        codes["mail"] = c.cmd("MAIL FROM:<s@remote.test>").code
        if codes["mail"] != 250:
            return codes
        codes["rcpt"] = c.cmd("RCPT TO:<%s>" % RCPT).code
        if codes["rcpt"] != 250:
            return codes
        r = c.cmd("DATA")
        codes["data"] = r.code
        if r.code != 354:
            return codes
        c.send(body + b".\r\n")
        r = c.reply(timeout=30)
        codes["end"] = (r.code, r.text)
        c.cmd("QUIT")
    finally:
        c.close()
    return codes


def check_full_disk_refusals(p, body):
    before = snapshot(p)
    spool_before = p.spool_files()
    filler = os.path.join(p.data_dir, "filler")
    fill_disk(filler)
    try:
        assert free_bytes(p.data_dir) < 64 * 1024
        codes = try_transaction(p, body)
        # refused at MAIL or RCPT (a free-space check) is fine too, but with a 4xx, never a 5xx
        # and never a 250 at the end of data
        refused = [v for v in (codes["mail"], codes["rcpt"]) if v not in (None, 250)]
        if refused:
            assert 400 <= refused[0] < 500, codes
        else:
            assert codes["data"] == 354, codes
            code, text = codes["end"]
            assert 400 <= code < 500, "end of data on a full disk answered %r" % (codes["end"],)
            assert code == 452 and text.startswith("4.3.1"), codes["end"]
        time.sleep(1.0)  # let a wrongly acknowledged message reach the mailbox
        assert len(p.maildir(RCPT)) == len(before), "a refused message was delivered"
        assert p.spool_files() == spool_before, "a refused message left a spool file"
        same_messages(before, p)
        still_serves(p)
    finally:
        os.unlink(filler)
    return codes


def test_disk_full_small_message(tmp_path):
    with tmpfs_postern() as p:
        deliver_one(p, "before the disk filled", 0)
        codes = check_full_disk_refusals(p, make_message("on a full disk"))
        print("full disk, small message:", codes)
        # space is back: accepted and delivered
        msgs = deliver_one(p, "after space returned", 1)
        assert any(b"Subject: after space returned" in m for m in msgs)
        assert p.spool_tmp_files() == []


def test_disk_full_large_message_spills(tmp_path):
    """A message above the in-memory limit (256 KiB) spills into spool/tmp while streaming:
    the write fails there instead of at commit."""
    with tmpfs_postern() as p:
        deliver_one(p, "before the disk filled", 0)
        big = make_message("big on a full disk", body=("x" * 76 + "\r\n") * 5000)  # ~390 KiB
        codes = check_full_disk_refusals(p, big)
        print("full disk, large message:", codes)
        assert p.spool_tmp_files() == [], "the refused message's spill file stayed"
        msgs = deliver_one(p, "after space returned", 1)
        assert any(b"Subject: after space returned" in m for m in msgs)


def test_disk_full_repeatedly_keeps_store(tmp_path):
    """Several refused transactions in a row, then recovery; earlier messages intact throughout."""
    with tmpfs_postern() as p:
        for i in range(3):
            deliver_one(p, "stored %d" % i, i)
        for i in range(3):
            check_full_disk_refusals(p, make_message("refused %d" % i))
        msgs = deliver_one(p, "after space returned", 3)
        assert len(msgs) == 4


def test_disk_full_bdat(tmp_path):
    """The same through BDAT (RFC 3030): the LAST chunk on a full disk gets 452 4.3.1."""
    with tmpfs_postern() as p:
        deliver_one(p, "before the disk filled", 0)
        before = snapshot(p)
        filler = os.path.join(p.data_dir, "filler")
        fill_disk(filler)
        try:
            body = make_message("bdat on a full disk")
            c = p.raw()
            try:
                assert c.cmd("EHLO client.example.test").code == 250
                assert c.cmd("MAIL FROM:<s@remote.test>").code == 250
                assert c.cmd("RCPT TO:<%s>" % RCPT).code == 250
                half = len(body) // 2
                c.send(b"BDAT %d\r\n" % half + body[:half])
                r = c.reply(timeout=30)
                if r.code == 250:
                    c.send(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
                    r = c.reply(timeout=30)
                assert r.code == 452 and r.text.startswith("4.3.1"), r
            finally:
                c.close()
            time.sleep(1.0)
            assert len(p.maildir(RCPT)) == 1
            same_messages(before, p)
            still_serves(p)
        finally:
            os.unlink(filler)
        msgs = deliver_one(p, "after space returned", 1)
        assert len(msgs) == 2


def test_disk_fills_right_after_the_250(tmp_path):
    """The disk fills the moment a message is acknowledged, under the delivery that follows
    (Maildir copy, rows marked delivered, spool file removed). Whatever step that hits, once
    space returns the message is in the mailbox exactly once and the queue drains."""
    with tmpfs_postern() as p:
        deliver_one(p, "before the disk filled", 0)
        filler = os.path.join(p.data_dir, "filler")
        c = p.smtp()
        c.ehlo()
        assert c.mail("s@remote.test")[0] == 250
        assert c.rcpt(RCPT)[0] == 250
        code, text = c.data(make_message("acked then full"))
        fill_disk(filler)
        try:
            assert code == 250, (code, text)
            time.sleep(1.0)
            still_serves(p)
        finally:
            os.unlink(filler)
        c.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msgs = p.maildir(RCPT)
            if len(msgs) >= 2 and not p.spool_files():
                break
            time.sleep(0.2)
        msgs = p.maildir(RCPT)
        assert sum(b"Subject: acked then full" in m for m in msgs) == 1, len(msgs)
        assert p.spool_files() == [], "queue not drained 60 s after space returned"
        time.sleep(1.0)
        assert len(p.maildir(RCPT)) == 2
