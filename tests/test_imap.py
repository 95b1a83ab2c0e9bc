"""
IMAP against the real server with Python's imaplib (and raw sockets where
imaplib would hide the protocol): login rules, mailbox selection, FETCH of
every kind, STORE, SEARCH, COPY/MOVE/EXPUNGE with UIDPLUS, folders, APPEND,
IDLE pushed by SMTP delivery, two sessions on one mailbox, bad input.
"""
import imaplib
import os
import re
import shutil
import socket
import ssl
import time

import pytest

from conftest import DOMAIN, PASSWORD, dribble_until_closed, make_message, send, tls_client_context

USER = "a@" + DOMAIN


def imap(server, user=USER, password=PASSWORD, tls=True):
    c = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=15)
    server.clients.append(c)
    if tls:
        c.starttls(ssl_context=tls_client_context())
    if user:
        c.login(user, password)
    return c


def imaps(server, user=USER, password=PASSWORD):
    c = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=tls_client_context(),
                          timeout=15)
    server.clients.append(c)
    if user:
        c.login(user, password)
    return c


def deliver(server, n, to=USER, subject="msg", body="hello\r\n"):
    c = server.smtp()
    for i in range(n):
        code, _ = send(c, "sender@remote.test", [to],
                       make_message("%s %d" % (subject, i), body=body, to=to))
        assert code == 250
    c.quit()


def wait_inbox(server, n, user=USER, timeout=15):
    server.wait_for_delivery(user, n, timeout=timeout)


class Raw:
    """A line-level IMAP client for what imaplib hides."""

    def __init__(self, port, tls=False, timeout=10):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            s = tls_client_context().wrap_socket(s)
        self.s = s
        self.buf = b""

    def starttls(self):
        self.s = tls_client_context().wrap_socket(self.s)

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self, timeout=10):
        deadline = time.time() + timeout
        while b"\r\n" not in self.buf:
            self.s.settimeout(max(0.05, deadline - time.time()))
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed; buffer %r" % self.buf)
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def until_tagged(self, tag, timeout=10):
        lines = []
        while True:
            ln = self.line(timeout)
            lines.append(ln)
            if ln.startswith(tag + " "):
                return lines

    def cmd(self, tag, text, timeout=10):
        self.send("%s %s\r\n" % (tag, text))
        return self.until_tagged(tag, timeout)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


@pytest.fixture
def raw_factory(server):
    made = []

    def make(**kw):
        r = Raw(server.imap_port, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def fresh_user(server, name):
    addr = "%s@%s" % (name, DOMAIN)
    server.add_user(addr)
    return addr


# ---------------------------------------------------------------- login


def test_greeting_and_capabilities_before_tls(server, raw_factory):
    r = raw_factory()
    g = r.line()
    assert g.startswith("* OK [CAPABILITY ")
    assert "STARTTLS" in g and "LOGINDISABLED" in g and "IMAP4rev2" in g
    assert "AUTH=PLAIN" not in g
    lines = r.cmd("a1", 'LOGIN "%s" "%s"' % (USER, PASSWORD))
    assert lines[-1].startswith("a1 NO [PRIVACYREQUIRED]")
    lines = r.cmd("a2", "AUTHENTICATE PLAIN AGFAYg==")
    assert lines[-1].startswith("a2 NO")
    lines = r.cmd("a3", "SELECT INBOX")
    assert lines[-1].startswith("a3 BAD")
    lines = r.cmd("a4", "LOGOUT")
    assert lines[0].startswith("* BYE") and lines[-1].startswith("a4 OK")


def test_login_starttls_imaps_and_failures(server):
    c = imap(server)
    typ, caps = c.capability()
    caps = caps[0].decode()
    for cap in ("IMAP4rev1", "IMAP4rev2", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "NAMESPACE",
                "ENABLE", "LITERAL+", "CONDSTORE", "QUOTA"):
        assert cap in caps.split(), cap
    assert "LOGINDISABLED" not in caps and "STARTTLS" not in caps
    c.logout()
    c = imaps(server)
    assert c.select("INBOX")[0] == "OK"
    c.logout()
    c = imap(server, user=None)
    with pytest.raises(imaplib.IMAP4.error) as e:
        c.login(USER, "wrong password")
    assert "AUTHENTICATIONFAILED" in str(e.value)
    c.login(USER, PASSWORD)
    c.logout()
    assert re.search(r"event=imap_auth_failed client=127\.0\.0\.1 user=a@example\.test",
                     server.log())


def test_authenticate_plain_with_and_without_initial_response(server):
    c = imap(server, user=None)
    c.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (USER, PASSWORD)).encode())
    assert c.state == "AUTH"
    c.logout()
    r = Raw(server.imaps_port, tls=True)
    try:
        r.line()
        import base64
        ir = base64.b64encode(("\0%s\0%s" % (USER, PASSWORD)).encode()).decode()
        lines = r.cmd("t1", "AUTHENTICATE PLAIN " + ir)
        assert lines[-1].startswith("t1 OK [CAPABILITY"), lines
        lines = r.cmd("t2", "AUTHENTICATE PLAIN")
        assert lines[-1].startswith("t2 BAD Already logged in")
    finally:
        r.close()


def test_bare_local_part_login_with_default_domain(postern_factory):
    p = postern_factory(extra={"auth": {"default_domain": DOMAIN}})
    c = imaps(p, user="a")
    assert c.select("INBOX")[0] == "OK"
    c.logout()


# ---------------------------------------------------------------- select + fetch


def test_select_fetch_and_flags(server):
    user = fresh_user(server, "fetch1")
    deliver(server, 3, to=user, subject="hello")
    wait_inbox(server, 3, user)
    c = imap(server, user=user)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"3"]
    uidvalidity = int(c.response("UIDVALIDITY")[1][0])
    assert uidvalidity > 0
    typ, data = c.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    assert typ == "OK"
    metas = [d for d in data if isinstance(d, bytes)]
    assert len(metas) == 3
    files = server.maildir(user)
    sizes = sorted(len(f) for f in files)
    got_sizes = sorted(int(re.search(rb"RFC822\.SIZE (\d+)", m).group(1)) for m in metas)
    assert got_sizes == sizes
    assert all(b'"hello ' in m for m in metas)
    uids = [int(re.search(rb"UID (\d+)", m).group(1)) for m in metas]
    assert uids == sorted(uids) and len(set(uids)) == 3
    # the whole message, byte for byte, and \Seen set by a non-PEEK fetch
    typ, data = c.fetch("1", "(BODY[])")
    body = data[0][1]
    assert body in files
    assert b"\\Seen" in data[0][0] or b"\\Seen" in b"".join(
        x if isinstance(x, bytes) else b"" for x in data)
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]
    # PEEK does not set \Seen
    typ, data = c.fetch("2", "(BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert data[0][1] == b"Subject: hello 1\r\n\r\n"
    typ, data = c.fetch("2", "(FLAGS)")
    assert b"\\Seen" not in data[0]
    # partial fetch
    typ, data = c.fetch("3", "(BODY.PEEK[]<0.10>)")
    assert b"BODY[]<0>" in data[0][0] and len(data[0][1]) == 10
    typ, data = c.fetch("3", "(BODY.PEEK[TEXT])")
    assert data[0][1] == b"hello\r\n"
    typ, data = c.fetch("3", "(RFC822.HEADER)")
    assert data[0][1].endswith(b"\r\n\r\n") and b"Subject: hello 2" in data[0][1]
    c.logout()


def test_bodystructure_multipart_and_sections(server):
    user = fresh_user(server, "mime1")
    msg = (
        "From: <s@remote.test>\r\nTo: <%s>\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
        "preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
        "--XX\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "PGI+aGk8L2I+\r\n--XX--\r\n" % user
    ).encode()
    c = server.smtp()
    assert send(c, "s@remote.test", [user], msg)[0] == 250
    c.quit()
    wait_inbox(server, 1, user)
    c = imap(server, user=user)
    c.select("INBOX")
    typ, data = c.fetch("1", "(BODYSTRUCTURE)")
    bs = data[0]
    assert b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 0 ' in bs
    assert b'"mixed" ("boundary" "XX")' in bs
    typ, data = c.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[2])")
    parts = {d[0].split(b" ")[-2] if False else None: None for d in data if isinstance(d, tuple)}
    del parts
    blobs = [d[1] for d in data if isinstance(d, tuple)]
    assert blobs[0] == b"first part"
    assert blobs[1].startswith(b"Content-Type: text/html")
    assert blobs[2] == b"PGI+aGk8L2I+"
    typ, data = c.fetch("1", "(BODY)")
    assert b"BODY (" in data[0]
    c.logout()


def test_store_flags_and_keywords_reach_the_files(server):
    user = fresh_user(server, "store1")
    deliver(server, 2, to=user)
    wait_inbox(server, 2, user)
    c = imap(server, user=user)
    c.select("INBOX")
    typ, data = c.store("1", "+FLAGS", r"(\Flagged \Answered $Important)")
    assert typ == "OK"
    assert b"\\Flagged" in data[0] and b"$Important" in data[0]
    typ, data = c.store("1", "-FLAGS", r"(\Answered)")
    assert b"\\Answered" not in data[0]
    typ, data = c.store("2", "FLAGS.SILENT", r"(\Deleted)")
    assert typ == "OK" and data == [None]
    names = [os.path.basename(p) for p in server.maildir_files(user, subdirs=("cur",))]
    assert any(n.endswith(":2,Fa") or re.search(r":2,F[a-z]+$", n) for n in names), names
    assert any(re.search(r":2,T$", n) for n in names), names
    with pytest.raises(imaplib.IMAP4.error):
        c.store("1", "+FLAGS", r"(\Recent)")
    c.logout()


def test_search_basic(server):
    user = fresh_user(server, "search1")
    deliver(server, 3, to=user, subject="alpha")
    deliver(server, 2, to=user, subject="beta", body="needle in the body\r\n")
    wait_inbox(server, 5, user)
    c = imap(server, user=user)
    c.select("INBOX")
    assert c.search(None, "ALL")[1][0].split() == [b"1", b"2", b"3", b"4", b"5"]
    assert c.search(None, "SUBJECT", "beta")[1][0].split() == [b"4", b"5"]
    assert c.search(None, "BODY", "needle")[1][0].split() == [b"4", b"5"]
    assert c.search(None, "NOT", "SUBJECT", "beta")[1][0].split() == [b"1", b"2", b"3"]
    c.store("2", "+FLAGS", r"\Seen")
    assert c.search(None, "UNSEEN")[1][0].split() == [b"1", b"3", b"4", b"5"]
    assert c.search(None, "OR", "SEEN", "SUBJECT", "alpha")[1][0].split() == [b"1", b"2", b"3"]
    typ, data = c.uid("SEARCH", "SUBJECT", "alpha")
    assert typ == "OK" and len(data[0].split()) == 3
    assert c.search(None, "FROM", "sender@remote.test")[1][0].split() == [b"1", b"2", b"3", b"4", b"5"]
    assert c.search(None, "LARGER", "1")[1][0].split() == [b"1", b"2", b"3", b"4", b"5"]
    assert c.search(None, "2:3")[1][0].split() == [b"2", b"3"]
    typ, _ = c.search("ISO-8859-99", "ALL")
    c.logout()


def test_search_over_many_messages(server):
    """SEARCH reads the header cache in windows of 1,024 messages and only the columns its keys
    use: 2,500 messages (put into the Maildir by another program, as an external MDA would),
    keys on the record, on one or two cached headers and on the sent date, each checked against
    what the files say."""
    user = fresh_user(server, "search-many")
    base = server.maildir_path(user)
    n = 2500
    expect = {"needle": set(), "seen": set(), "from_bob": set(), "old": set()}
    sizes = {}
    for i in range(1, n + 1):
        subject = "needle %d" % i if i % 7 == 0 else "hay %d" % i
        sender = "bob@example.test" if i % 5 == 0 else "carol@example.test"
        year = 2001 if i % 11 == 0 else 2024
        msg = ("From: %s\r\nTo: %s\r\nSubject: %s\r\n"
               "Date: Mon, 1 Jan %d 10:00:00 +0000\r\nMessage-ID: <m%d@example.test>\r\n\r\n"
               "body %d\r\n" % (sender, user, subject, year, i, i)).encode()
        if i % 13 == 0:
            msg = msg.replace(b"\r\n", b"\n")  # bare LF line ends: RFC822.SIZE counts CRLF
        sizes[i] = len(msg) + msg.count(b"\n") - msg.count(b"\r\n")
        seen = i % 3 == 0
        name = "%d.M%dP1.host,S=%d" % (1700000000 + i, i, len(msg))
        path = os.path.join(base, "cur", name + ":2,S") if seen else os.path.join(base, "new", name)
        with open(path, "wb") as f:
            f.write(msg)
        if i % 7 == 0:
            expect["needle"].add(i)
        if seen:
            expect["seen"].add(i)
        if i % 5 == 0:
            expect["from_bob"].add(i)
        if year == 2001:
            expect["old"].add(i)
    c = imap(server, user=user)
    typ, data = c.select("INBOX")
    assert typ == "OK" and int(data[0]) == n

    def search(*keys):
        typ, data = c.uid("SEARCH", *keys)
        assert typ == "OK", data
        return {int(x) for x in data[0].split()}

    # UIDs follow the order of the names the scan gave them; map them back to i by FETCH
    typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    uid_to_i = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            uid_to_i[uid] = int(re.search(rb"<m(\d+)@", item[1]).group(1))
    assert len(uid_to_i) == n

    def as_i(uids):
        return {uid_to_i[u] for u in uids}

    # so many new files at once are indexed without parsing them (sizes from stat() and the
    # line ends); RFC822.SIZE must still count CRLF, and ENVELOPE comes when first asked for
    typ, data = c.uid("FETCH", "1:*", "(RFC822.SIZE)")
    got = {int(re.search(rb"UID (\d+)", d).group(1)): int(re.search(rb"RFC822.SIZE (\d+)", d).group(1))
           for d in data}
    assert {uid_to_i[u]: v for u, v in got.items()} == sizes
    typ, data = c.uid("FETCH", "1:30", "(ENVELOPE)")
    assert typ == "OK" and b"hay 1" in data[0] and len(data) == 30

    assert as_i(search("SUBJECT", "needle")) == expect["needle"]
    assert as_i(search("OR", "SEEN", "SUBJECT", "needle")) == expect["seen"] | expect["needle"]
    assert as_i(search("SEEN", "SUBJECT", "needle")) == expect["seen"] & expect["needle"]
    assert as_i(search("FROM", "bob", "SUBJECT", "needle")) == expect["from_bob"] & expect["needle"]
    assert as_i(search("NOT", "FROM", "carol")) == expect["from_bob"]
    assert as_i(search("SENTBEFORE", "1-Jan-2010")) == expect["old"]
    assert as_i(search("SENTBEFORE", "1-Jan-2010", "SUBJECT", "needle")) == \
        expect["old"] & expect["needle"]
    # SORT by date reads the dates in windows too: the 2001 messages first, ties by UID order
    typ, data = c.uid("SORT", "(DATE)", "UTF-8", "ALL")
    assert typ == "OK", data
    got = [int(x) for x in data[0].split()]
    uids = sorted(uid_to_i)
    old = [u for u in uids if uid_to_i[u] in expect["old"]]
    assert got == old + [u for u in uids if uid_to_i[u] not in expect["old"]]
    typ, data = c.uid("SORT", "(REVERSE DATE)", "UTF-8", "SUBJECT", "needle")
    assert typ == "OK", data
    got = [int(x) for x in data[0].split()]
    want = [u for u in uids if uid_to_i[u] in expect["needle"]]
    newer = [u for u in want if uid_to_i[u] not in expect["old"]]
    older = [u for u in want if uid_to_i[u] in expect["old"]]
    # REVERSE reverses the key; ties stay in mailbox order (RFC 5256 section 3)
    assert got == newer + older
    c.logout()


# ---------------------------------------------------------------- folders


def test_list_special_use_and_folder_lifecycle(server):
    user = fresh_user(server, "folders1")
    c = imap(server, user=user)
    typ, data = c.list()
    lines = [d.decode() for d in data]
    names = {re.search(r'"/" "?([^"]*)"?$', ln).group(1): ln for ln in lines}
    assert set(names) >= {"INBOX", "Drafts", "Sent", "Junk", "Trash", "Archive"}
    assert "\\Sent" in names["Sent"] and "\\Trash" in names["Trash"] and "\\Junk" in names["Junk"]
    assert c.create("Work/Projects")[0] == "OK"
    assert os.path.isdir(server.maildir_path(user, "Work.Projects"))
    typ, data = c.list('""', "Work/*")
    assert any(b"Work/Projects" in d for d in data)
    typ, data = c.list('""', "%")
    assert any(b'"Work"' in d and b"\\HasChildren" in d for d in data)
    assert c.rename("Work/Projects", "Work/Done")[0] == "OK"
    assert os.path.isdir(server.maildir_path(user, "Work.Done"))
    assert c.subscribe("Work/Done")[0] == "OK"
    typ, data = c.lsub('""', "*")
    assert any(b"Work/Done" in d for d in data)
    assert c.delete("Work/Done")[0] == "OK"
    assert not os.path.exists(server.maildir_path(user, "Work.Done"))
    assert c.delete("INBOX")[0] == "NO"
    # a non-ASCII name travels as modified UTF-7 and is stored that way on disk
    assert c.create("&AMk-t&AOk-")[0] == "OK"  # "Été"
    assert os.path.isdir(server.maildir_path(user, "&AMk-t&AOk-"))
    typ, data = c.list('""', "*t&AOk-")
    assert any(b"&AMk-t&AOk-" in d for d in data)
    # CREATE-SPECIAL-USE
    typ, data = c._simple_command("CREATE", "Old", "(USE (\\Archive))")
    assert typ == "OK"
    typ, data = c.list('""', "Old")
    assert b"\\Archive" in data[0]
    c.logout()


def test_status_append_copy_move_expunge(server):
    user = fresh_user(server, "ops1")
    deliver(server, 3, to=user)
    wait_inbox(server, 3, user)
    c = imap(server, user=user)
    typ, data = c.status("INBOX", "(MESSAGES UIDNEXT UNSEEN SIZE UIDVALIDITY)")
    st = data[0].decode()
    assert "MESSAGES 3" in st and "UNSEEN 3" in st
    size = int(re.search(r"SIZE (\d+)", st).group(1))
    assert size == sum(len(m) for m in server.maildir(user))
    msg = b"From: me@example.test\r\nSubject: appended\r\n\r\nbody\r\n"
    typ, data = c.append("Drafts", r"(\Draft \Seen)", '"01-Jan-2024 10:00:00 +0100"', msg)
    assert typ == "OK"
    m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    assert m
    c.select("Drafts")
    typ, data = c.uid("FETCH", m.group(2).decode(), "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert data[0] is not None, (m.group(0), c.fetch("1:*", "(UID)"))
    assert data[0][1] == msg
    assert b"\\Draft" in data[0][0] and b"01-Jan-2024 09:00:00 +0000" in data[0][0]
    typ, data = c.append("NoSuchFolder", None, None, msg)
    assert typ == "NO" and b"TRYCREATE" in data[0]
    c.select("INBOX")
    typ, data = c.copy("1:2", "Archive")
    assert typ == "OK" and b"COPYUID" in data[0]
    typ, data = c._simple_command("MOVE", "3", "Trash")
    assert typ == "OK"
    assert len(server.maildir(user, "Trash")) == 1
    assert len(server.maildir(user, "Archive")) == 2
    assert len(server.maildir(user)) == 2
    typ, data = c.select("INBOX")
    assert data == [b"2"]
    c.store("1", "+FLAGS", r"\Deleted")
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"1"]
    assert len(server.maildir(user)) == 1
    # UID EXPUNGE only removes the listed \Deleted messages
    c.select("Archive")
    c.store("1:2", "+FLAGS", r"\Deleted")
    typ, data = c.fetch("1:2", "(UID)")
    uids = [re.search(rb"UID (\d+)", d).group(1).decode() for d in data]
    typ, data = c.uid("EXPUNGE", uids[1])
    assert typ == "OK"
    assert len(server.maildir(user, "Archive")) == 1
    c.logout()


def test_quota(postern_factory):
    p = postern_factory()
    p.add_user("q@" + DOMAIN, quota="10K")
    c = imaps(p, user="q@" + DOMAIN)
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK"
    flat = b" ".join(x for x in data[0] + data[1] if isinstance(x, bytes)) \
        if isinstance(data[0], list) else b" ".join(d for d in data if isinstance(d, bytes))
    assert b"STORAGE 0 10" in flat, data
    big = b"Subject: big\r\n\r\n" + b"x" * 20000 + b"\r\n"
    typ, data = c.append("INBOX", None, None, big)
    assert typ == "NO" and b"OVERQUOTA" in data[0]
    c.logout()


# ---------------------------------------------------------------- sessions


def test_idle_sees_delivery(server, raw_factory):
    user = fresh_user(server, "idle1")
    r = raw_factory(tls=False)
    r.line()
    r.cmd("s", "STARTTLS")
    r.starttls()
    assert r.cmd("l", 'LOGIN "%s" "%s"' % (user, PASSWORD))[-1].startswith("l OK")
    assert r.cmd("x", "SELECT INBOX")[-1].startswith("x OK")
    r.send("i IDLE\r\n")
    assert r.line().startswith("+ ")
    deliver(server, 1, to=user)
    ln = r.line(timeout=10)
    assert ln == "* 1 EXISTS", ln
    r.send("DONE\r\n")
    lines = r.until_tagged("i")
    assert lines[-1].startswith("i OK")


def test_two_sessions_flags_and_expunge(server):
    user = fresh_user(server, "multi1")
    deliver(server, 3, to=user)
    wait_inbox(server, 3, user)
    a = imap(server, user=user)
    b = imap(server, user=user)
    a.select("INBOX")
    b.select("INBOX")
    a.store("2", "+FLAGS", r"\Flagged")
    typ, data = b.noop()
    fetches = b.response("FETCH")[1]
    assert any(f and b"\\Flagged" in f for f in fetches), fetches
    a.store("1", "+FLAGS", r"\Deleted")
    a.expunge()
    # b must not see EXPUNGE during FETCH; MSNs stay as they were
    typ, data = b.fetch("1:3", "(UID)")
    assert typ == "OK" and len([d for d in data if d]) == 3
    b.noop()
    assert b.response("EXPUNGE")[1] == [b"1"]
    typ, data = b.fetch("1:*", "(UID)")
    assert len(data) == 2
    a.logout()
    b.logout()


def test_uids_survive_index_loss(postern_factory):
    p = postern_factory()
    deliver(p, 3)
    wait_inbox(p, 3)
    c = imaps(p)
    c.select("INBOX")
    v1 = c.response("UIDVALIDITY")[1][0]
    _, data = c.fetch("1:*", "(UID)")
    u1 = [re.search(rb"UID (\d+)", d).group(1) for d in data]
    c.store("2", "+FLAGS", r"(\Seen $Label1)")
    c.logout()
    p.stop()
    idx = os.path.join(p.data_dir, "index")  # every account's index file
    assert os.listdir(idx)
    shutil.rmtree(idx)
    p.proc = None
    p.start()
    c = imaps(p)
    c.select("INBOX")
    assert c.response("UIDVALIDITY")[1][0] == v1
    _, data = c.fetch("1:*", "(UID FLAGS)")
    assert [re.search(rb"UID (\d+)", d).group(1) for d in data] == u1
    assert b"$Label1" in data[1] and b"\\Seen" in data[1]
    c.logout()


# ---------------------------------------------------------------- bad input


def test_bad_input_never_crashes(server, raw_factory):
    r = raw_factory()
    r.line()
    # a literal larger than allowed before login is refused without reading it
    lines = r.cmd("a", "LOGIN {999999999}")
    assert lines[-1].startswith("a BAD [TOOBIG]"), lines
    r.send("b NOOP\r\n")
    assert r.until_tagged("b")[-1].startswith("b OK")
    r.send("c " + "x" * 20000 + "\r\n")
    r.send("d NOOP\r\n")
    lines = r.until_tagged("d")
    assert any("BAD" in ln for ln in lines)
    r.send("e LOGIN " + "(" * 100 + "\r\n")
    assert "BAD" in r.until_tagged("e")[-1]
    r.send("f \x00\xff\xfe NOOP\r\n")
    r.send("g CAPABILITY\r\n")
    assert r.until_tagged("g")[-1].startswith("g OK")


def test_starttls_plaintext_injection_discarded(server, raw_factory):
    r = raw_factory()
    r.line()
    r.send("s STARTTLS\r\nx LOGIN injected injected\r\n")
    assert r.line().startswith("s OK")
    r.starttls()
    lines = r.cmd("c", "CAPABILITY")
    assert not any(ln.startswith("x ") for ln in lines)
    assert lines[-1].startswith("c OK")


def test_index_of_earlier_version_moves(postern_factory):
    """An index.db left by an earlier version, one file for every account: the account's rows
    move into the account's own file when it is first used (MODSEQs kept, so CONDSTORE clients
    see nothing changed), and index.db goes once empty."""
    p = postern_factory()
    deliver(p, 3)
    wait_inbox(p, 3)
    c = imaps(p)
    c.select("INBOX")
    c.store("1", "+FLAGS", r"(\Flagged)")
    c.store("1", "-FLAGS", r"(\Flagged)")
    c.store("1", "+FLAGS", r"(\Flagged)")
    before = c.status("INBOX", "(HIGHESTMODSEQ UIDVALIDITY MESSAGES)")[1][0]
    c.logout()
    p.stop()
    idx = os.path.join(p.data_dir, "index")
    files = sorted(os.listdir(idx))
    dbs = [f for f in files if f.endswith(".db")]
    assert len(dbs) == 1, files  # the one account used
    for f in files:  # as an earlier version kept it (a WAL left behind included)
        if f.startswith(dbs[0]):
            os.rename(os.path.join(idx, f), os.path.join(p.data_dir, "index" + f[len(dbs[0]) - 3:]))
    assert os.path.exists(os.path.join(p.data_dir, "index.db"))
    p.proc = None
    p.start()
    c = imaps(p)
    assert c.status("INBOX", "(HIGHESTMODSEQ UIDVALIDITY MESSAGES)")[1][0] == before
    c.select("INBOX")
    _, data = c.fetch("1", "(FLAGS)")
    assert b"\\Flagged" in data[0]
    c.logout()
    assert not any(f.startswith("index.db") for f in os.listdir(p.data_dir))
    assert os.path.exists(os.path.join(idx, dbs[0]))


def login_raw(server, user, raw_factory):
    r = raw_factory()
    r.line()
    r.cmd("s", "STARTTLS")
    r.starttls()
    assert r.cmd("l", 'LOGIN "%s" "%s"' % (user, PASSWORD))[-1].startswith("l OK")
    return r


def test_condstore_and_qresync(server, raw_factory):
    user = fresh_user(server, "qr1")
    deliver(server, 4, to=user)
    wait_inbox(server, 4, user)
    r = login_raw(server, user, raw_factory)
    lines = r.cmd("a", "SELECT INBOX (CONDSTORE)")
    hms = [ln for ln in lines if "HIGHESTMODSEQ" in ln]
    assert hms, lines
    modseq0 = int(re.search(r"HIGHESTMODSEQ (\d+)", hms[0]).group(1))
    uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", " ".join(lines)).group(1))
    lines = r.cmd("b", "UID STORE 1 +FLAGS (\\Seen)")
    assert any("MODSEQ (" in ln for ln in lines), lines
    lines = r.cmd("c", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % modseq0)
    fetches = [ln for ln in lines if ln.startswith("* ") and " FETCH " in ln]
    assert len(fetches) == 1 and "UID 1" in fetches[0] and "MODSEQ" in fetches[0], lines
    # conditional store: a message changed since the given modseq is not touched
    lines = r.cmd("d", "UID STORE 1 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)" % modseq0)
    assert "MODIFIED 1" in lines[-1], lines
    lines = r.cmd("e", "SEARCH MODSEQ %d" % (modseq0 + 1))
    assert any(ln.startswith("* SEARCH 1 (MODSEQ") for ln in lines), lines
    # expunge message 2, then resynchronise a fresh session with QRESYNC
    r.cmd("f", "UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    r.cmd("g", "UID EXPUNGE 2")
    r2 = login_raw(server, user, raw_factory)
    assert r2.cmd("h", "ENABLE QRESYNC")[0].startswith("* ENABLED")
    lines = r2.cmd("i", "SELECT INBOX (QRESYNC (%d %d 1:4))" % (uidvalidity, modseq0))
    assert "* VANISHED (EARLIER) 2" in lines, lines
    assert any(" FETCH (UID 1 " in ln and "\\Seen" in ln for ln in lines), lines
    # live expunges are VANISHED for a QRESYNC session
    r.cmd("j", "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    r.cmd("k", "UID EXPUNGE 3")
    lines = r2.cmd("l", "NOOP")
    assert "* VANISHED 3" in lines, lines
    lines = r2.cmd("m", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % modseq0)
    assert "* VANISHED (EARLIER) 2:3" in lines, lines


def test_esearch_and_searchres(server, raw_factory):
    user = fresh_user(server, "es1")
    deliver(server, 5, to=user, subject="es")
    wait_inbox(server, 5, user)
    r = login_raw(server, user, raw_factory)
    r.cmd("a", "SELECT INBOX")
    lines = r.cmd("b", "SEARCH RETURN (MIN MAX COUNT) ALL")
    assert '* ESEARCH (TAG "b") MIN 1 MAX 5 COUNT 5' in lines, lines
    lines = r.cmd("c", "UID SEARCH RETURN (ALL) 2:4")
    assert any(ln.startswith('* ESEARCH (TAG "c") UID ALL ') for ln in lines), lines
    lines = r.cmd("d", "SEARCH RETURN (SAVE) 1:2")
    assert lines[-1].startswith("d OK") and not any("ESEARCH" in ln for ln in lines)
    lines = r.cmd("e", "FETCH $ (UID)")
    assert len([ln for ln in lines if ln.startswith("* ") and " FETCH " in ln]) == 2, lines


def test_sort_and_thread(server, raw_factory):
    user = fresh_user(server, "sort1")
    c = server.smtp()
    msgs = [
        ("Re: Banana", "2 Jan 2024 10:00:00 +0000", "<b1@x>", "<a1@x>", "zed@remote.test"),
        ("apple", "1 Jan 2024 10:00:00 +0000", "<a1@x>", None, "amy@remote.test"),
        ("Cherry", "3 Jan 2024 10:00:00 +0000", "<c1@x>", None, "bob@remote.test"),
        ("Re: apple", "4 Jan 2024 10:00:00 +0000", "<a2@x>", "<a1@x>", "cat@remote.test"),
    ]
    for subj, date, mid, irt, frm in msgs:
        body = "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: %s\r\n%s\r\nx\r\n" % (
            frm, user, subj, date, mid, ("In-Reply-To: %s\r\n" % irt) if irt else "")
        assert send(c, frm, [user], body.encode())[0] == 250
    c.quit()
    wait_inbox(server, 4, user)
    r = login_raw(server, user, raw_factory)
    r.cmd("a", "SELECT INBOX")
    lines = r.cmd("b", "SORT (DATE) UTF-8 ALL")
    assert "* SORT 2 1 3 4" in lines, lines
    lines = r.cmd("c", "SORT (SUBJECT REVERSE DATE) UTF-8 ALL")
    assert "* SORT 4 2 1 3" in lines, lines
    lines = r.cmd("d", "SORT (FROM) UTF-8 NOT SUBJECT cherry")
    assert "* SORT 2 4 1" in lines, lines
    lines = r.cmd("e", "THREAD REFERENCES UTF-8 ALL")
    assert "* THREAD (2 (1)(4))(3)" in lines, lines
    lines = r.cmd("f", "THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert any(ln.startswith("* THREAD (") for ln in lines), lines
    lines = r.cmd("g", "SORT (DATE) ISO-8859-99 ALL")
    assert "BADCHARSET" in lines[-1]


def test_compress_deflate(server):
    import zlib
    user = fresh_user(server, "z1")
    deliver(server, 2, to=user, body=("compressible " * 20 + "\r\n") * 10)
    wait_inbox(server, 2, user)
    r = Raw(server.imaps_port, tls=True)
    try:
        r.line()
        assert r.cmd("l", 'LOGIN "%s" "%s"' % (user, PASSWORD))[-1].startswith("l OK")
        caps = " ".join(r.cmd("c", "CAPABILITY"))
        assert "COMPRESS=DEFLATE" in caps
        # the client compresses right after its command's CRLF: pipeline a compressed NOOP
        comp = zlib.compressobj(wbits=-15)
        first = comp.compress(b"n NOOP\r\n") + comp.flush(zlib.Z_SYNC_FLUSH)
        r.send(b"z COMPRESS DEFLATE\r\n" + first)
        assert r.line() == "z OK DEFLATE active"
        dec = zlib.decompressobj(wbits=-15)
        plain = dec.decompress(r.buf)
        r.buf = b""

        def zline(plain):
            deadline = time.time() + 10
            while b"\r\n" not in plain:
                r.s.settimeout(max(0.05, deadline - time.time()))
                d = r.s.recv(65536)
                assert d, "closed"
                plain += dec.decompress(d)
            ln, rest = plain.split(b"\r\n", 1)
            return ln.decode(), rest

        ln, plain = zline(plain)
        assert ln.startswith("n OK"), ln

        def zcmd(tag, text, plain):
            r.send(comp.compress(("%s %s\r\n" % (tag, text)).encode()) +
                   comp.flush(zlib.Z_SYNC_FLUSH))
            lines = []
            while True:
                ln, plain = zline(plain)
                lines.append(ln)
                if ln.startswith(tag + " "):
                    return lines, plain

        lines, plain = zcmd("s", "SELECT INBOX", plain)
        assert "* 2 EXISTS" in lines
        lines, plain = zcmd("f", "FETCH 1 BODY.PEEK[TEXT]", plain)
        assert lines[-1].startswith("f OK")
        lines, plain = zcmd("c2", "COMPRESS DEFLATE", plain)
        assert "COMPRESSIONACTIVE" in lines[-1]
    finally:
        r.close()


def test_binary_fetch(server, raw_factory):
    import base64
    user = fresh_user(server, "bin1")
    payload = bytes(range(256)) * 4
    b64 = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    msg = (
        "From: <s@remote.test>\r\nTo: <%s>\r\nSubject: bin\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n"
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        "caf=C3=A9 soft=\r\nbreak\r\n--B\r\nContent-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n%s--B\r\n"
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: x-unknown\r\n\r\nzzz\r\n--B--\r\n"
        % (user, b64)).encode()
    c = server.smtp()
    assert send(c, "s@remote.test", [user], msg)[0] == 250
    c.quit()
    wait_inbox(server, 1, user)
    im = imap(server, user=user)
    im.select("INBOX")
    typ, data = im.fetch("1", "(BINARY.PEEK[1] BINARY.SIZE[2])")
    assert typ == "OK"
    assert data[0][1] == "café softbreak".encode()
    assert b"BINARY.SIZE[2] 1024" in data[-1] or b"BINARY.SIZE[2] 1024" in data[0][0]
    typ, data = im.fetch("1", "(BINARY.PEEK[2])")
    assert data[0][1] == payload and b"~{1024}" in data[0][0]
    typ, data = im.fetch("1", "(BINARY.PEEK[2]<10.5>)")
    assert data[0][1] == payload[10:15]
    typ, data = im.fetch("1", "(BINARY.PEEK[3])")
    assert typ == "NO" and b"UNKNOWN-CTE" in data[-1]
    im.logout()


def test_malformed_messages_are_served(server):
    """Broken MIME, NULs, 8-bit headers, absurd nesting and 100k parts: served, never a crash."""
    user = fresh_user(server, "bad1")
    deep = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(1, 300):
        deep += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
    deep += b"x\r\n"
    many = b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + b"--p\r\n\r\nx\r\n" * 100000 + b"--p--\r\n"
    msgs = [
        b"Subject: nul\x00inside\r\nFrom: a\x00b@x\r\n\r\nbody\x00with nul\r\n",
        b"Subject: \xff\xfe 8-bit \xe9t\xe9\r\nFrom: \xc3(\r\n\r\n\xff\xff\r\n",
        b"Content-Type: multipart/alternative\r\n\r\nno boundary at all\r\n",
        b"Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x--\r\n",
        b"no header at all, just text\r\n",
        b"Subject: =?utf-8?B?broken?= =?x-unknown?Q?=ZZ?=\r\n\r\nx\r\n",
        deep,
        many,
    ]
    c = imap(server, user=user)
    for m in msgs:
        typ, data = c.append("INBOX", None, None, m)
        assert typ == "OK", data
    c.select("INBOX")
    typ, data = c.fetch("1:*", "(ENVELOPE BODYSTRUCTURE RFC822.SIZE)")
    assert typ == "OK"
    assert len([d for d in data if d]) >= len(msgs)
    for i in range(1, len(msgs) + 1):
        typ, data = c.fetch(str(i), "(BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[HEADER])")
        assert typ == "OK", (i, data)
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == msgs[0]
    typ, data = c.search(None, "TEXT", "nul")
    assert typ == "OK"
    typ, data = c.search(None, "BODY", "zzz-not-there")
    assert typ == "OK" and data == [b""]
    typ, data = c.sort("(SUBJECT)", "UTF-8", "ALL")
    assert typ == "OK"
    typ, data = c.thread("REFERENCES", "UTF-8", "ALL")
    assert typ == "OK"
    c.logout()


def test_retention_empties_old_trash(postern_factory):
    p = postern_factory(extra={"retention": {"trash": "1s", "junk": "0"}}, start=False)
    p.start()
    deliver(p, 2)
    wait_inbox(p, 2)
    c = imaps(p)
    c.select("INBOX")
    c._simple_command("MOVE", "1", "Trash")
    c._simple_command("MOVE", "1", "Junk")
    c.logout()
    assert len(p.maildir(USER, "Trash")) == 1
    # the first retention run is 5 s after start
    deadline = time.time() + 20
    while time.time() < deadline and p.maildir(USER, "Trash"):
        time.sleep(0.5)
    assert p.maildir(USER, "Trash") == []
    assert len(p.maildir(USER, "Junk")) == 1  # junk = 0: kept


def test_slowloris_before_login_is_cut(postern_factory):
    """A pre-login client that dribbles a never-ending line, a byte at a time, is closed within a
    bound of idle_timeout (every byte re-arms the read timeout, the login deadline does not)."""
    p = postern_factory(limits={"idle_timeout": "2s"})
    closed, elapsed = dribble_until_closed(p.imap_port, closed_marker=b"BYE", greeting=b"* OK")
    assert closed == 5, "slow pre-login clients still open after %.1fs" % elapsed
    assert elapsed < 8
    # a well-behaved client is still served
    c = imaps(p)
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_multiappend_and_literal8(server, raw_factory):
    user = fresh_user(server, "multi2")
    r = login_raw(server, user, raw_factory)
    m1 = b"Subject: one\r\n\r\nfirst\r\n"
    m2 = b"Subject: two\r\n\r\nsecond \x00 with a NUL\r\n"
    r.send(b"a APPEND Archive {%d+}\r\n%s (\\Seen) ~{%d+}\r\n%s\r\n" % (len(m1), m1, len(m2), m2))
    lines = r.until_tagged("a")
    m = re.match(r"a OK \[APPENDUID (\d+) (\d+):(\d+)\]", lines[-1])
    assert m and int(m.group(3)) == int(m.group(2)) + 1, lines
    # all or nothing: a bad second message stores neither
    r.send(b"b APPEND Archive {%d+}\r\n%s (\\Bogus) {%d+}\r\n%s\r\n" % (len(m1), m1, len(m1), m1))
    assert r.until_tagged("b")[-1].startswith("b BAD")
    lines = r.cmd("c", "STATUS Archive (MESSAGES)")
    assert '* STATUS "Archive" (MESSAGES 2)' in lines, lines
    lines = r.cmd("d", "SELECT Archive")
    r.send(b"e FETCH 2 (FLAGS BINARY.PEEK[])\r\n")
    data = b""
    deadline = time.time() + 10
    while b"e OK" not in data and time.time() < deadline:
        r.s.settimeout(1)
        try:
            data += r.s.recv(65536)
        except socket.timeout:
            pass
    assert b"~{%d}\r\n%s" % (len(m2), m2) in r.buf + data, data
