"""
IMAP commands that run on the event-loop thread instead of a worker (NOOP,
FETCH of cached data or a few bodies, SEARCH/SORT without body keys, SELECT of
the selected folder: see runs_here() in src/imap/imap_session.c). They take
the folder's sync from a read-only probe before they run; these tests check
that what other sessions, SMTP delivery and other programs change is still
announced, that anything needing a write still happens (on a worker), and that
messages indexed lazily (a bulk of files put in by another program) read right
without the cache records a worker would keep.

A folder changed less than 100 ms ago is not trusted to its directory mtimes (a
change in the same clock tick could hide), so its next sync scans and writes:
the tests pause that long where they want the next commands on the loop.
"""
import os
import re
import time

from conftest import DOMAIN, send, make_message
from test_imap import deliver, fresh_user, imap, wait_inbox


def untagged(c, name):
    return [x for x in (c.response(name)[1] or []) if x is not None]


def test_other_sessions_changes_reach_commands_run_on_the_loop(server):
    user = fresh_user(server, "loop1")
    deliver(server, 5, to=user, subject="loop")
    wait_inbox(server, 5, user)
    a = imap(server, user=user)
    b = imap(server, user=user)
    typ, data = a.select("INBOX")
    assert typ == "OK" and int(data[0]) == 5
    b.select("INBOX")
    time.sleep(0.15)

    # flags changed by another session: a NOOP (and a FETCH) announce them
    b.store("2", "+FLAGS", r"\Flagged")
    a.noop()
    fetches = untagged(a, "FETCH")
    assert any(re.match(rb"2 \(.*\\Flagged", f) for f in fetches), fetches
    typ, data = a.fetch("2", "(FLAGS)")
    assert b"\\Flagged" in data[0], data

    # a SEARCH announces the change (as every command does at its end), then sees it
    b.store("4", "+FLAGS", r"\Answered")
    typ, data = a.search(None, "ANSWERED")
    assert typ == "OK"
    assert any(re.match(rb"4 \(.*\\Answered", f) for f in untagged(a, "FETCH"))
    typ, data = a.search(None, "ANSWERED")
    assert typ == "OK" and data[0].split() == [b"4"], data

    # an expunge elsewhere: no EXPUNGE during FETCH/SEARCH (MSNs stay), then on NOOP
    b.store("1", "+FLAGS", r"\Deleted")
    b.expunge()
    typ, data = a.search(None, "ALL")
    assert data[0].split() == [b"1", b"2", b"3", b"4", b"5"], data
    typ, data = a.fetch("1:5", "(UID)")
    assert typ == "OK" and len([d for d in data if d]) == 5
    a.noop()
    assert untagged(a, "EXPUNGE") == [b"1"]

    # new mail by SMTP: EXISTS and RECENT on the next NOOP, and its envelope reads
    deliver(server, 1, to=user, subject="late")
    wait_inbox(server, 5, user)
    a.noop()
    assert untagged(a, "EXISTS")[-1] == b"5"
    typ, data = a.fetch("5", "(ENVELOPE)")
    assert b"late 0" in data[0], data

    # SELECT of the same folder again: counts and UIDNEXT as the store has them
    typ, data = a.select("INBOX")
    assert int(data[0]) == 5
    uidnext = int(untagged(a, "UIDNEXT")[0])
    typ, data = a.uid("FETCH", "1:*", "(UID)")
    uids = [int(re.search(rb"UID (\d+)", d).group(1)) for d in data if d]
    assert len(uids) == 5 and max(uids) < uidnext

    # FETCH BODY[] sets \Seen (a write): done, and seen by the other session
    typ, data = a.fetch("3", "(BODY[])")
    assert typ == "OK"
    typ, data = a.fetch("3", "(FLAGS)")
    assert b"\\Seen" in data[0], data
    b.noop()
    assert any(b"\\Seen" in f for f in untagged(b, "FETCH"))
    a.logout()
    b.logout()


def test_examine_then_select_takes_recent(server):
    """EXAMINE of the selected folder stays read-only; SELECT after it is not the same
    selection (it takes \\Recent) and runs where it may write."""
    user = fresh_user(server, "loop2")
    deliver(server, 2, to=user)
    wait_inbox(server, 2, user)
    a = imap(server, user=user)
    typ, data = a.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == 2
    typ, data = a.select("INBOX", readonly=True)
    assert typ == "OK" and untagged(a, "RECENT") == [b"0"]
    typ, data = a.select("INBOX")
    assert typ == "OK" and untagged(a, "RECENT") == [b"2"]
    typ, data = a.select("INBOX")
    assert typ == "OK" and untagged(a, "RECENT") == [b"0"]
    a.logout()


def test_lazily_indexed_messages_read_right_on_the_loop(server):
    """600 files put into new/ by another program are indexed from their names and stat()
    (no parsing); FETCH ENVELOPE and SEARCH SUBJECT run on the loop, which keeps no cache
    records: twice the same answer, right for every message."""
    user = fresh_user(server, "loop3")
    base = server.maildir_path(user)
    n = 600
    for i in range(1, n + 1):
        msg = ("From: s%d@example.test\r\nTo: %s\r\nSubject: lazy %d%s\r\n"
               "Message-ID: <l%d@example.test>\r\n\r\nbody %d\r\n"
               % (i, user, i, " needle" if i % 50 == 0 else "", i, i)).encode()
        name = "%d.M%dP2.host,S=%d" % (1700000000 + i, i, len(msg))
        with open(os.path.join(base, "new", name), "wb") as f:
            f.write(msg)
    c = imap(server, user=user)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) == n
    time.sleep(0.15)
    for _ in range(2):
        typ, data = c.fetch("1:*", "(ENVELOPE)")
        assert typ == "OK" and len([d for d in data if d]) == n
        got = sorted(int(re.search(rb'"lazy (\d+)', d).group(1)) for d in data if d)
        assert got == list(range(1, n + 1))
        typ, data = c.search(None, "SUBJECT", "needle")
        assert typ == "OK" and len(data[0].split()) == n // 50, data
    c.logout()


def test_smtp_delivery_while_fetching(server):
    """Mail arriving between reads is announced by the read that follows, never lost."""
    user = fresh_user(server, "loop4")
    deliver(server, 1, to=user)
    wait_inbox(server, 1, user)
    a = imap(server, user=user)
    a.select("INBOX")
    smtp = server.smtp()
    exists = 1
    for i in range(10):
        code, _ = send(smtp, "s@remote.test", [user], make_message("burst %d" % i, to=user))
        assert code == 250
        a.fetch("1", "(FLAGS)")
        a.noop()
        e = untagged(a, "EXISTS")
        if e:
            exists = int(e[-1])
    smtp.quit()
    wait_inbox(server, 11, user)
    a.noop()
    e = untagged(a, "EXISTS")
    if e:
        exists = int(e[-1])
    assert exists == 11
    typ, data = a.search(None, "SUBJECT", "burst")
    assert len(data[0].split()) == 10
    a.logout()


def test_reads_on_the_loop_while_other_threads_write_the_folder(server):
    """FETCH/NOOP/SELECT on the loop between STOREs, while another session's STOREs of keywords
    and APPENDs write the same folder from the workers: every STORE takes effect and every
    APPEND is there."""
    import threading
    user = fresh_user(server, "loop5")
    deliver(server, 5, to=user)
    wait_inbox(server, 5, user)
    a = imap(server, user=user)
    a.select("INBOX")
    time.sleep(0.15)
    body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 200
    errors = []
    stop = threading.Event()

    def other():
        try:
            b = imap(server, user=user)
            b.select("INBOX")
            i = 0
            while not stop.is_set() and i < 400:
                sign = "+" if i % 2 == 0 else "-"
                typ, _ = b.store("1:5", sign + "FLAGS.SILENT", "$Label%d" % (i % 3))
                if typ != "OK":
                    errors.append(typ)
                if i % 40 == 0:
                    typ, _ = b.append("INBOX", None, None, body)
                    if typ != "OK":
                        errors.append(typ)
                i += 1
            for k in range(3):
                b.store("1:5", "-FLAGS.SILENT", "$Label%d" % k)
            b.logout()
        except Exception as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    for i in range(150):
        flag = r"\Flagged" if i % 2 == 0 else r"\Answered"
        typ, _ = a.store("1:5", "+FLAGS.SILENT", flag)
        assert typ == "OK"
        typ, data = a.fetch("1:5", "(FLAGS)")
        assert typ == "OK"
        a.noop()
        if i % 30 == 0:
            typ, _ = a.select("INBOX")
            assert typ == "OK"
        typ, _ = a.store("1:5", "-FLAGS.SILENT", flag)
        assert typ == "OK"
    stop.set()
    typ, _ = a.store("2,4", "+FLAGS", r"(\Seen \Draft)")
    assert typ == "OK"
    t.join(60)
    assert not errors, errors
    appended = server.log().count("event=imap_append user=" + user)
    a.noop()
    a.response("FETCH")  # what the NOOP announced
    typ, data = a.fetch("1:5", "(FLAGS)")
    flags = [[f for f in re.search(rb"FLAGS \(([^)]*)\)", d).group(1).split()
              if f != b"\\Recent"] for d in data if d]
    assert [sorted(f) for f in flags] == [[], [b"\\Draft", b"\\Seen"], [],
                                          [b"\\Draft", b"\\Seen"], []], flags
    typ, data = a.select("INBOX")
    assert int(data[0]) == 5 + appended
    a.logout()
