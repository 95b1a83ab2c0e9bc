"""
Disk full for IMAP (issue 6 item 2): the data directory is a 4 MiB tmpfs. An APPEND on a full
disk fails with a clean tagged NO (nothing half-stored: no new UID, no stray file), STORE and
EXPUNGE keep the mailbox consistent, what was stored before is intact, and APPEND works again
once space returns.
"""
import imaplib
import os
import re

from conftest import DOMAIN, PASSWORD, tls_client_context
from faultlib import fill_disk, tmpfs_postern

USER = "a@" + DOMAIN


def connect(p):
    c = imaplib.IMAP4_SSL("127.0.0.1", p.imaps_port, ssl_context=tls_client_context(),
                          timeout=15)
    c.login(USER, PASSWORD)
    return c


def message(subject, size=2000):
    return ("From: me@example.test\r\nSubject: %s\r\n\r\n" % subject).encode() + \
        (b"y" * 70 + b"\r\n") * (size // 72 + 1)


def test_imap_append_on_full_disk(tmp_path):
    with tmpfs_postern() as p:
        c = connect(p)
        for i in range(3):
            typ, data = c.append("INBOX", None, None, message("before %d" % i))
            assert typ == "OK", data
        before = {}
        for path in p.maildir_files(USER):
            with open(path, "rb") as f:
                before[os.path.basename(path).split(":")[0]] = f.read()
        c.select("INBOX")
        uidnext = int(c.response("UIDNEXT")[1][0])
        filler = os.path.join(p.data_dir, "filler")
        fill_disk(filler)
        try:
            refused = 0
            for i in range(3):
                try:
                    typ, data = c.append("INBOX", None, None, message("full %d" % i, 200000))
                except imaplib.IMAP4.error as e:
                    typ, data = "NO", [str(e).encode()]
                if typ != "OK":
                    refused += 1
                    assert typ == "NO", (typ, data)
            assert refused == 3, "APPENDs on a full disk were accepted"
            # flags can still change (renames need no space), the session is alive
            typ, _ = c.store("1", "+FLAGS", r"\Flagged")
            assert typ in ("OK", "NO")
            typ, data = c.noop()
            assert typ == "OK"
            tmp = os.path.join(p.maildir_path(USER), "tmp")
            assert os.listdir(tmp) == [], "a refused APPEND left %r" % os.listdir(tmp)
        finally:
            os.unlink(filler)
        # nothing stored before changed, no message was half-added
        now = {}
        for path in p.maildir_files(USER):
            with open(path, "rb") as f:
                now[os.path.basename(path).split(":")[0]] = f.read()
        assert now == before
        c.select("INBOX")
        typ, data = c.fetch("1:*", "(UID)")
        assert len([d for d in data if d]) == 3
        typ, data = c.append("INBOX", None, None, message("after"))
        assert typ == "OK", data
        uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
        assert uid >= uidnext
        c.logout()
        assert p.alive()
