"""`postern reindex`: the mailbox index rebuilt from the Maildir files with the same UIDVALIDITY
and UIDs; `postern user del` forgets the account's index rows. CLI only (no server)."""
import os
import sqlite3

from conftest import DOMAIN, check_sanitizers


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    check_sanitizers(r.stderr.decode(errors="replace"), "cli")
    return r.stdout.decode()


def put(p, address, folder, name, body):
    d = os.path.join(p.maildir_path(address, folder), "new")
    with open(os.path.join(d, name), "wb") as f:
        f.write(body)


def uidlist(p, address, folder=""):
    with open(os.path.join(p.maildir_path(address, folder), "postern-uidlist")) as f:
        lines = f.read().splitlines()
    head = lines[0].split()
    assert head[0] == "V1", lines
    return int(head[1]), {l.split(" ", 1)[1]: int(l.split(" ", 1)[0]) for l in lines[1:]}


def index_files(p):
    idx = os.path.join(p.data_dir, "index")
    return [os.path.join(idx, f) for f in sorted(os.listdir(idx))]


def index_rows(p, address):
    """The rows of every account's index file (the tests here have one account)."""
    rows = []
    for path in index_files(p):
        if not path.endswith(".db"):
            continue
        db = sqlite3.connect(path)
        try:
            rows += db.execute(
                "SELECT f.name, f.uidvalidity, m.uid, m.basename, m.flags, c.subject FROM messages m "
                "JOIN folders f ON f.id = m.folder_id "
                "JOIN msgcache c ON c.folder_id = m.folder_id AND c.uid = m.uid "
                "ORDER BY f.name, m.uid").fetchall()
        finally:
            db.close()
    return rows


def test_reindex_keeps_uids(postern_factory):
    p = postern_factory(start=False, users=("r",))
    addr = "r@" + DOMAIN
    for i in range(3):
        put(p, addr, "", "170000000%d.Q%d.1.host,S=40" % (i, i),
            b"Subject: hello %d\r\nFrom: x@y.test\r\n\r\nbody\r\n" % i)
    put(p, addr, "Trash", "1700000009.T1.1.host,S=30", b"Subject: trashed\r\n\r\nbody\r\n")
    out = ok(p.cli("reindex", addr))
    assert "reindexed " + addr in out
    uv, uids = uidlist(p, addr)
    assert sorted(uids.values()) == [1, 2, 3]
    rows = index_rows(p, addr)
    assert [(r[0], r[2], r[5]) for r in rows] == [
        ("INBOX", 1, "hello 0"), ("INBOX", 2, "hello 1"), ("INBOX", 3, "hello 2"), ("Trash", 1, "trashed")]

    # a flag set by another program (in the file name), then the index lost: same UIDs and flags
    cur = os.path.join(p.maildir_path(addr), "new")
    name = sorted(os.listdir(cur))[1]
    os.rename(os.path.join(cur, name), os.path.join(p.maildir_path(addr), "cur", name + ":2,S"))
    for path in index_files(p):
        os.unlink(path)
    # a message that arrived meanwhile gets the next UID
    put(p, addr, "", "1700000005.Q5.1.host,S=40", b"Subject: later\r\n\r\nbody\r\n")
    ok(p.cli("reindex", addr))
    uv2, uids2 = uidlist(p, addr)
    assert uv2 == uv
    rows = index_rows(p, addr)
    inbox = [r for r in rows if r[0] == "INBOX"]
    assert all(r[1] == uv for r in inbox)
    assert [(r[2], r[5]) for r in inbox] == [(1, "hello 0"), (2, "hello 1"), (3, "hello 2"), (4, "later")]
    assert [r[4] for r in inbox] == [0, 1, 0, 0]  # \Seen on UID 2 only
    assert uids2[name] == 2

    r = p.cli("reindex", "nobody@" + DOMAIN)
    assert r.returncode == 1
    assert "no such account" in r.stderr.decode()

    # deleting the account forgets its rows
    ok(p.cli("user", "del", addr))
    assert index_rows(p, addr) == []


def test_user_add_creates_configured_folders(postern_factory):
    p = postern_factory(start=False, users=(),
                        extra={"mailbox": {"folders": "Entwürfe=drafts, Papierkorb=trash, Archiv/2024"}})
    addr = "k@" + DOMAIN
    p.add_user(addr)
    root = p.maildir_path(addr)
    for d in (".Entw&APw-rfe", ".Papierkorb", ".Archiv.2024"):
        assert os.path.isdir(os.path.join(root, d, "cur")), d
    assert not os.path.exists(os.path.join(root, ".Trash"))
    with open(os.path.join(root, "subscriptions"), encoding="utf-8") as f:
        assert f.read().split("\n")[:3] == ["Entwürfe", "Papierkorb", "Archiv/2024"]

    # a malformed knob is refused before anything is created
    p.write_config(extra={"mailbox": {"folders": "Junk=rubbish"}})
    r = p.cli("user", "add", "z@" + DOMAIN, "--password-stdin", input="pw-long-enough-1\n")
    assert r.returncode == 1
    assert "special use" in r.stderr.decode()
    assert not os.path.exists(p.maildir_path("z@" + DOMAIN))
