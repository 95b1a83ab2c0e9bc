"""
The selected-mailbox view (src/imap/imap-private.h): a session keeps only the
UID and the announced flags of each message and reads sizes, dates and
MODSEQs from the index when a command needs them. These tests pin what the
view must still get right: EXPUNGE message numbers as the view shrinks,
VANISHED for QRESYNC sessions, FETCH FLAGS pushed to an IDLE session for
another session's STORE (once, and not echoed back to the session that made
it), \\Recent, the record items (RFC822.SIZE, INTERNALDATE, MODSEQ) in FETCH,
SEARCH and SORT, and a FETCH of a message expunged by another session but
not yet announced.
"""
import re

from test_imap import PASSWORD, Raw, deliver, fresh_user, login_raw, raw_factory, wait_inbox  # noqa: F401


def fetches(lines):
    return [ln for ln in lines if re.match(r"\* \d+ FETCH ", ln)]


def uid_map(r, tag):
    """{msn: uid} from FETCH 1:* (UID)."""
    out = {}
    for ln in fetches(r.cmd(tag, "FETCH 1:* (UID)")):
        m = re.match(r"\* (\d+) FETCH \(UID (\d+)[ )]", ln)
        assert m, ln
        out[int(m.group(1))] = int(m.group(2))
    return out


def test_expunge_msns_as_the_view_shrinks(server, raw_factory):
    user = fresh_user(server, "view1")
    deliver(server, 6, to=user)
    wait_inbox(server, 6, user)
    a = login_raw(server, user, raw_factory)
    b = login_raw(server, user, raw_factory)
    c = login_raw(server, user, raw_factory)
    assert c.cmd("e", "ENABLE QRESYNC")[0].startswith("* ENABLED")
    for r in (a, b, c):
        assert r.cmd("s", "SELECT INBOX")[-1].startswith("s OK")
    uids = uid_map(b, "u")
    assert sorted(uids) == [1, 2, 3, 4, 5, 6]
    # a expunges messages 2, 4 and 6
    a.cmd("d", "STORE 2,4,6 +FLAGS.SILENT (\\Deleted)")
    lines = a.cmd("x", "EXPUNGE")
    assert [ln for ln in lines if ln.endswith(" EXPUNGE")] == \
        ["* 2 EXPUNGE", "* 3 EXPUNGE", "* 4 EXPUNGE"], lines
    # b learns the same, each MSN as it stands after the ones before it
    lines = b.cmd("n", "NOOP")
    assert [ln for ln in lines if ln.endswith(" EXPUNGE")] == \
        ["* 2 EXPUNGE", "* 3 EXPUNGE", "* 4 EXPUNGE"], lines
    assert uid_map(b, "u2") == {1: uids[1], 2: uids[3], 3: uids[5]}
    # the QRESYNC session gets VANISHED with the UIDs instead
    lines = c.cmd("n", "NOOP")
    assert "* VANISHED %d,%d,%d" % (uids[2], uids[4], uids[6]) in lines, lines
    assert not any(ln.endswith(" EXPUNGE") for ln in lines), lines
    assert uid_map(c, "u") == {1: uids[1], 2: uids[3], 3: uids[5]}
    # MSN addressing after the shrink: message 2 is the old message 3
    lines = b.cmd("f", "FETCH 2 (UID FLAGS)")
    assert fetches(lines) == ["* 2 FETCH (UID %d FLAGS ())" % uids[3]], lines
    assert b.cmd("g", "FETCH 4 (UID)")[-1].startswith("g BAD"), "MSN beyond the view"


def test_idle_gets_other_sessions_store_once(server, raw_factory):
    user = fresh_user(server, "view2")
    deliver(server, 3, to=user)
    wait_inbox(server, 3, user)
    a = login_raw(server, user, raw_factory)
    b = login_raw(server, user, raw_factory)
    a.cmd("s", "SELECT INBOX")
    b.cmd("s", "SELECT INBOX")
    uid3 = uid_map(b, "u")[3]
    b.send("i IDLE\r\n")
    assert b.line().startswith("+ ")
    lines = a.cmd("t", "STORE 3 +FLAGS (\\Flagged $Work)")
    assert len(fetches(lines)) == 1 and "\\Flagged" in fetches(lines)[0], lines
    # the keyword is new: the idler gets FLAGS first, then the one FETCH
    got = []
    while not any(" FETCH " in ln for ln in got):
        got.append(b.line(timeout=10))
    assert any(ln.startswith("* FLAGS (") and "$Work" in ln for ln in got), got
    assert got[-1] == "* 3 FETCH (UID %d FLAGS (\\Flagged $Work))" % uid3, got
    b.send("DONE\r\n")
    lines = b.until_tagged("i")
    assert lines[-1].startswith("i OK") and not fetches(lines), lines
    # neither session hears about it again
    assert not fetches(a.cmd("n", "NOOP")), "own STORE echoed"
    assert not fetches(b.cmd("n", "NOOP")), "announced twice"
    # a change back is a change: announced again
    a.cmd("t2", "STORE 3 -FLAGS.SILENT (\\Flagged)")
    lines = b.cmd("n2", "NOOP")
    assert fetches(lines) == ["* 3 FETCH (UID %d FLAGS ($Work))" % uid3], lines


def test_recent_is_this_sessions(server, raw_factory):
    user = fresh_user(server, "view3")
    deliver(server, 2, to=user)
    wait_inbox(server, 2, user)
    a = login_raw(server, user, raw_factory)
    lines = a.cmd("s", "SELECT INBOX")
    assert "* 2 RECENT" in lines, lines
    lines = a.cmd("f", "FETCH 1:* (FLAGS)")
    assert all("\\Recent" in ln for ln in fetches(lines)) and len(fetches(lines)) == 2, lines
    # another session does not get them as \Recent
    b = login_raw(server, user, raw_factory)
    assert "* 0 RECENT" in b.cmd("s", "SELECT INBOX")
    # a delivery while a idles: EXISTS and RECENT, and the new one is \Recent to a
    a.send("i IDLE\r\n")
    assert a.line().startswith("+ ")
    deliver(server, 1, to=user)
    assert a.line(timeout=10) == "* 3 EXISTS"
    assert a.line(timeout=10) == "* 3 RECENT"
    a.send("DONE\r\n")
    a.until_tagged("i")
    lines = a.cmd("f2", "FETCH 3 (FLAGS RFC822.SIZE)")
    assert len(fetches(lines)) == 1 and "\\Recent" in fetches(lines)[0], lines
    # \Recent survives a flag change made by the session itself
    lines = a.cmd("t", "STORE 3 +FLAGS (\\Seen)")
    assert fetches(lines) == ["* 3 FETCH (FLAGS (\\Seen \\Recent))"], lines


def test_record_items_come_from_the_index(server, raw_factory):
    user = fresh_user(server, "view4")
    deliver(server, 1, to=user, body="short\r\n")
    deliver(server, 1, to=user, body=("x" * 70 + "\r\n") * 70)
    deliver(server, 1, to=user, body=("y" * 70 + "\r\n") * 7)
    wait_inbox(server, 3, user)
    r = login_raw(server, user, raw_factory)
    r.cmd("s", "SELECT INBOX")
    lines = r.cmd("f", "FETCH 1:* (RFC822.SIZE INTERNALDATE)")
    sizes = {}
    for ln in fetches(lines):
        m = re.match(r'\* (\d+) FETCH \(RFC822\.SIZE (\d+) INTERNALDATE "[^"]+"\)$', ln)
        assert m, ln
        sizes[int(m.group(1))] = int(m.group(2))
    assert len(sizes) == 3 and sizes[1] < sizes[3] < sizes[2], sizes
    # the sizes are those of the messages as FETCH RFC822 sends them
    body = r.cmd("b", "FETCH 2 (RFC822.SIZE BODY.PEEK[])")
    assert "{%d}" % sizes[2] in body[0], body[0]
    lines = r.cmd("l", "SEARCH LARGER %d" % (sizes[3] - 1))
    assert "* SEARCH 2 3" in lines, lines
    lines = r.cmd("m", "SEARCH SMALLER %d UNSEEN" % (sizes[3]))
    assert "* SEARCH 1" in lines, lines
    lines = r.cmd("o", "SEARCH SINCE 1-Jan-2000 YOUNGER 3600")
    assert "* SEARCH 1 2 3" in lines, lines
    lines = r.cmd("z", "SORT (REVERSE SIZE) UTF-8 ALL")
    assert "* SORT 2 3 1" in lines, lines
    lines = r.cmd("y", "SORT (ARRIVAL) UTF-8 ALL")
    assert "* SORT 1 2 3" in lines, lines
    # MODSEQ: FETCH, a conditional STORE, SEARCH
    lines = r.cmd("c", "FETCH 1:* (MODSEQ)")
    mods = {}
    for ln in fetches(lines):
        m = re.match(r"\* (\d+) FETCH \(MODSEQ \((\d+)\)\)$", ln)
        assert m, ln
        mods[int(m.group(1))] = int(m.group(2))
    assert len(mods) == 3 and all(v > 0 for v in mods.values()), mods
    top = max(mods.values())
    assert r.cmd("e", "ENABLE CONDSTORE")[0] == "* ENABLED CONDSTORE"
    lines = r.cmd("t", "STORE 1 +FLAGS (\\Seen)")
    new1 = int(re.search(r"MODSEQ \((\d+)\)", fetches(lines)[0]).group(1))
    assert new1 > top, lines
    # a message already in the requested state: its unchanged MODSEQ is reported
    lines = r.cmd("t2", "STORE 1:2 +FLAGS (\\Seen)")
    got = {int(re.match(r"\* (\d+) ", ln).group(1)): int(re.search(r"MODSEQ \((\d+)\)", ln).group(1))
           for ln in fetches(lines)}
    assert got[1] == new1 and got[2] > new1, lines
    lines = r.cmd("q", "SEARCH MODSEQ %d" % (new1 + 1))
    assert any(ln.startswith("* SEARCH 2 (MODSEQ %d)" % got[2]) for ln in lines), lines
    lines = r.cmd("q2", "FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % new1)
    assert [re.match(r"\* (\d+) ", ln).group(1) for ln in fetches(lines)] == ["2"], lines


def test_fetch_of_a_message_expunged_meanwhile(server, raw_factory):
    user = fresh_user(server, "view5")
    deliver(server, 3, to=user)
    wait_inbox(server, 3, user)
    a = login_raw(server, user, raw_factory)
    b = login_raw(server, user, raw_factory)
    a.cmd("s", "SELECT INBOX")
    b.cmd("s", "SELECT INBOX")
    a.cmd("d", "STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.cmd("x", "EXPUNGE")
    # b has not been told: FETCH may not announce the expunge (RFC 9051 7.5.1)
    lines = b.cmd("f", "FETCH 1:3 (UID FLAGS)")
    assert len(fetches(lines)) == 3 and lines[-1].startswith("f OK"), lines
    assert not any(ln.endswith(" EXPUNGE") for ln in lines), lines
    # its size and date are gone with it: the others are sent, the command says so
    lines = b.cmd("g", "FETCH 1:3 (RFC822.SIZE)")
    assert [re.match(r"\* (\d+) ", ln).group(1) for ln in fetches(lines)] == ["1", "3"], lines
    assert lines[-1].startswith("g NO [EXPUNGEISSUED]"), lines
    assert not any(ln.endswith(" EXPUNGE") for ln in lines), lines
    lines = b.cmd("n", "NOOP")
    assert "* 2 EXPUNGE" in lines, lines


def test_plaintext_auth_loopback_knob(server, postern_factory):
    """[imap] plaintext_auth = loopback (bench-imap-load -T measures sessions without TLS):
    LOGIN without TLS from 127.0.0.1; the default refuses it."""
    # default: LOGINDISABLED and PRIVACYREQUIRED
    r = Raw(server.imap_port)
    try:
        r.line()
        caps = r.cmd("c", "CAPABILITY")[0]
        assert "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps, caps
        lines = r.cmd("l", 'LOGIN "%s" "%s"' % ("a@example.test", PASSWORD))
        assert lines[-1].startswith("l NO [PRIVACYREQUIRED]"), lines
    finally:
        r.close()
    p = postern_factory(extra={"imap": {"plaintext_auth": "loopback"}})
    r = Raw(p.imap_port)
    try:
        r.line()
        caps = r.cmd("c", "CAPABILITY")[0]
        assert "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps and "STARTTLS" in caps, caps
        assert r.cmd("l", 'LOGIN "%s" "%s"' % ("a@example.test", PASSWORD))[-1].startswith("l OK")
        assert r.cmd("s", "SELECT INBOX")[-1].startswith("s OK")
    finally:
        r.close()


def read_until(r, pred, timeout=10):
    got = []
    while not got or not pred(got[-1]):
        got.append(r.line(timeout=timeout))
    return got


def test_idle_with_a_packed_view(server, raw_factory):
    """An idling session keeps its UIDs as runs (1-3, 5-7, 9-12 here); changes while it
    idles and the commands after DONE see the right numbers."""
    user = fresh_user(server, "view6")
    deliver(server, 12, to=user)
    wait_inbox(server, 12, user)
    a = login_raw(server, user, raw_factory)
    a.cmd("s", "SELECT INBOX")
    a.cmd("d", "UID STORE 4,8 +FLAGS.SILENT (\\Deleted)")
    a.cmd("x", "EXPUNGE")
    b = login_raw(server, user, raw_factory)
    b.cmd("s", "SELECT INBOX")
    assert list(uid_map(b, "u").values()) == [1, 2, 3, 5, 6, 7, 9, 10, 11, 12]
    for rnd in range(2):  # a second IDLE packs the view again
        b.send("i%d IDLE\r\n" % rnd)
        assert b.line().startswith("+ ")
        a.cmd("t", "UID STORE %d FLAGS (\\Flagged)" % (9 + rnd))
        got = read_until(b, lambda ln: " FETCH " in ln)
        assert got[-1] == "* %d FETCH (UID %d FLAGS (\\Flagged))" % (7 + rnd, 9 + rnd), got
        b.send("DONE\r\n")
        assert b.until_tagged("i%d" % rnd)[-1].startswith("i%d OK" % rnd)
    b.send("i IDLE\r\n")
    assert b.line().startswith("+ ")
    a.cmd("d2", "UID STORE 6 +FLAGS.SILENT (\\Deleted)")
    a.cmd("x2", "EXPUNGE")
    got = read_until(b, lambda ln: ln.endswith(" EXPUNGE"))
    assert got[-1] == "* 5 EXPUNGE", got
    deliver(server, 1, to=user)
    got = read_until(b, lambda ln: ln.endswith(" EXISTS"))
    assert got[-1] == "* 10 EXISTS", got
    b.send("DONE\r\n")
    assert b.until_tagged("i")[-1].startswith("i OK")
    assert list(uid_map(b, "u2").values()) == [1, 2, 3, 5, 7, 9, 10, 11, 12, 13]
    lines = b.cmd("f", "UID FETCH 9:10 (FLAGS)")
    assert fetches(lines) == ["* 6 FETCH (UID 9 FLAGS (\\Flagged))",
                              "* 7 FETCH (UID 10 FLAGS (\\Flagged))"], lines
    # flags in runs (\Seen on 1-5, \Flagged in the middle of them): changes while idling,
    # then every message's flags as a session that never idled sees them
    a.cmd("t3", "STORE 1:5 +FLAGS.SILENT (\\Seen)")
    b.cmd("n", "NOOP")
    b.send("j IDLE\r\n")
    assert b.line().startswith("+ ")
    a.cmd("t4", "STORE 3 +FLAGS (\\Answered)")
    got = read_until(b, lambda ln: " FETCH " in ln)
    assert got[-1] == "* 3 FETCH (UID 3 FLAGS (\\Seen \\Answered))", got
    b.send("DONE\r\n")
    assert b.until_tagged("j")[-1].startswith("j OK")

    def flag_lines(r, tag):
        return [ln.replace(" \\Recent", "").replace("\\Recent ", "").replace("\\Recent", "")
                for ln in fetches(r.cmd(tag, "FETCH 1:* (UID FLAGS)"))]
    assert flag_lines(b, "g") == flag_lines(a, "g"), (flag_lines(b, "g"), flag_lines(a, "g"))


def test_sort_date_falls_back_to_internaldate(server, raw_factory):
    """SORT (DATE) reads records only for messages without a Date: (their INTERNALDATE)."""
    user = fresh_user(server, "view7")
    r = login_raw(server, user, raw_factory)
    msgs = [
        ("15-Mar-2024 00:00:00 +0000", "Date: 3 Jan 2024 10:00:00 +0000\r\n"),
        ("01-Jan-2020 00:00:00 +0000", ""),  # no Date: sorts by its INTERNALDATE, first
        ("10-Mar-2024 00:00:00 +0000", "Date: 2 Jan 2024 10:00:00 +0000\r\n"),
        ("01-Feb-2024 00:00:00 +0000", ""),  # no Date: 1 Feb 2024, after both dated ones
    ]
    for i, (idate, date) in enumerate(msgs):
        body = ("From: <x@remote.test>\r\nTo: <%s>\r\nSubject: s%d\r\n%s\r\nbody\r\n"
                % (user, i, date)).encode()
        r.send(('a%d APPEND INBOX "%s" {%d+}\r\n' % (i, idate, len(body))).encode() + body + b"\r\n")
        assert r.until_tagged("a%d" % i)[-1].startswith("a%d OK" % i)
    r.cmd("s", "SELECT INBOX")
    assert "* SORT 2 3 1 4" in r.cmd("d", "SORT (DATE) UTF-8 ALL")
    assert "* SORT 2 4 3 1" in r.cmd("e", "SORT (ARRIVAL) UTF-8 ALL")
    assert "* SORT 4 1 3 2" in r.cmd("f", "SORT (REVERSE DATE) UTF-8 ALL")
