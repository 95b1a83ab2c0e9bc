"""POP3 (RFC 1939, CAPA, UIDL, TOP, STLS, SASL PLAIN) against the real server, with poplib,
raw sockets and fetchmail. Messages arrive by SMTP and are compared with the Maildir files."""
import os
import poplib
import re
import socket
import ssl
import subprocess
import time

import pytest

from conftest import (DOMAIN, GENEROUS, PASSWORD, _make, check_sanitizers, dribble_until_closed,
                      finish, have, listening, make_message, send, tls_client_context)


def start_pop(p):
    p.start()
    deadline = time.monotonic() + 20
    while not (listening(p.pop3_port) and listening(p.pop3s_port)):
        assert p.alive(), p.stderr()
        assert time.monotonic() < deadline, "pop3 listeners not up:\n" + p.stderr()[-3000:]
        time.sleep(0.05)
    return p


def make_pop(tmp_path_factory, name, pop3=None, limits=None):
    lim = dict(GENEROUS)
    lim.update(limits or {})
    return _make(tmp_path_factory, name, limits=lim, extra={"pop3": dict(pop3)} if pop3 else None)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    p = start_pop(make_pop(tmp_path_factory, "pop3"))
    yield p
    finish(p)


_users = [0]


def new_user(p):
    """A fresh account for one test, so tests do not see each other's mail."""
    _users[0] += 1
    addr = "pop%d@%s" % (_users[0], DOMAIN)
    p.add_user(addr)
    return addr


def deliver(p, addr, msgs):
    """Deliver each message (bytes) by SMTP; returns the contents of the Maildir files."""
    before = len(p.maildir(addr))
    c = p.smtp()
    for m in msgs:
        code, text = send(c, "sender@remote.test", [addr], m)
        assert code == 250, text
        p.wait_for_delivery(addr, before + 1)
        before += 1
    c.quit()
    return p.maildir(addr)


def wait_log(p, pattern, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, p.log())
        if m or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def login(p, addr, mode="stls", password=PASSWORD):
    if mode == "pop3s":
        c = poplib.POP3_SSL("127.0.0.1", p.pop3s_port, timeout=30, context=tls_client_context())
    else:
        c = poplib.POP3("127.0.0.1", p.pop3_port, timeout=30)
        c.stls(context=tls_client_context())
    p.clients.append(c)
    c.user(addr)
    c.pass_(password)
    return c


class RawPOP:
    """A socket speaking POP3 by hand (exact bytes on the wire)."""

    def __init__(self, port, tls=False, timeout=15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            self.sock = tls_client_context().wrap_socket(self.sock)
        self.buf = b""
        self.timeout = timeout
        self.greeting = self.line()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete line; have %r" % self.buf[:200])
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed by server; have %r" % self.buf[:200])
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.line()

    def multi(self):
        """The lines of a multi-line response body up to the "." (still byte-stuffed)."""
        out = []
        for _ in range(1000000):
            ln = self.line()
            if ln == b".":
                return out
            out.append(ln)
        raise AssertionError("unterminated multi-line response")

    def stls(self):
        r = self.cmd("STLS")
        assert r.startswith(b"+OK"), r
        assert self.buf == b""
        self.sock = tls_client_context().wrap_socket(self.sock)

    def login(self, addr, password=PASSWORD):
        assert self.cmd("USER " + addr).startswith(b"+OK")
        r = self.cmd("PASS " + password)
        assert r.startswith(b"+OK"), r

    def closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                if not self.sock.recv(65536):
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionError, ssl.SSLError, OSError):
            return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def raw(p, tls=False, port=None):
    r = RawPOP(port or (p.pop3s_port if tls else p.pop3_port), tls=tls)
    p.clients.append(r)
    assert r.greeting == b"+OK Postern ready.", r.greeting
    return r


def plain_b64(authz, user, password):
    import base64
    return base64.b64encode(("%s\0%s\0%s" % (authz, user, password)).encode()).decode()


# ---------------------------------------------------------------- before TLS


def test_greeting_capa_and_plaintext_login_refused(srv):
    r = raw(srv)
    r.send("CAPA\r\n")
    assert r.line().startswith(b"+OK")
    caps = [c.split(b" ")[0] for c in r.multi()]
    for want in (b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"STLS"):
        assert want in caps, caps
    assert b"USER" not in caps and b"SASL" not in caps, caps
    assert r.cmd("USER a@example.test") == b"-ERR [AUTH] TLS required"
    assert r.cmd("PASS " + PASSWORD) == b"-ERR [AUTH] TLS required"
    assert r.cmd("AUTH PLAIN " + plain_b64("", "a@example.test", PASSWORD)) == b"-ERR [AUTH] TLS required"
    assert r.cmd("STAT").startswith(b"-ERR")
    assert r.cmd("QUIT").startswith(b"+OK")
    assert r.closed()


def test_capa_after_tls(srv):
    r = raw(srv)
    r.stls()
    r.send("CAPA\r\n")
    assert r.line().startswith(b"+OK")
    caps = r.multi()
    assert b"USER" in caps and b"SASL PLAIN" in caps, caps
    assert b"STLS" not in caps
    assert r.cmd("STLS").startswith(b"-ERR")
    # the implementation is named without a version
    impl = [c for c in caps if c.startswith(b"IMPLEMENTATION")]
    assert impl == [b"IMPLEMENTATION Postern"], caps


# ---------------------------------------------------------------- login


@pytest.mark.parametrize("mode", ["stls", "pop3s"])
def test_login_and_stat(srv, mode):
    addr = new_user(srv)
    files = deliver(srv, addr, [make_message("stat %s %d" % (mode, i)) for i in range(3)])
    c = login(srv, addr, mode)
    n, size = c.stat()
    assert n == 3
    assert size == sum(len(f) for f in files)
    c.quit()
    assert wait_log(srv, r"event=pop3_login client=127\.0\.0\.1 user=%s" % re.escape(addr))
    assert wait_log(srv, r"event=pop3_disconnect client=127\.0\.0\.1 user=%s" % re.escape(addr))


def test_wrong_password_then_right(srv):
    addr = new_user(srv)
    c = poplib.POP3("127.0.0.1", srv.pop3_port, timeout=30)
    srv.clients.append(c)
    c.stls(context=tls_client_context())
    c.user(addr)
    with pytest.raises(poplib.error_proto) as e:
        c.pass_("wrong password")
    assert e.value.args[0] == b"-ERR [AUTH] Authentication failed"
    with pytest.raises(poplib.error_proto):
        c.pass_(PASSWORD)  # PASS without USER
    c.user(addr)
    assert c.pass_(PASSWORD).startswith(b"+OK")
    c.quit()
    assert wait_log(srv, r"event=pop3_login_failed client=127\.0\.0\.1 user=%s" % re.escape(addr))


def test_bare_local_part_without_default_domain_fails(srv):
    addr = new_user(srv)
    r = raw(srv)
    r.stls()
    assert r.cmd("USER " + addr.split("@")[0]).startswith(b"+OK")
    assert r.cmd("PASS " + PASSWORD) == b"-ERR [AUTH] Authentication failed"


def test_auth_plain(srv):
    addr = new_user(srv)
    deliver(srv, addr, [make_message("auth plain")])
    # initial response
    r = raw(srv, tls=True)
    assert r.cmd("AUTH PLAIN " + plain_b64("", addr, PASSWORD)).startswith(b"+OK")
    assert r.cmd("STAT").startswith(b"+OK 1 ")
    assert r.cmd("QUIT").startswith(b"+OK")
    # continuation
    r = raw(srv)
    r.stls()
    assert r.cmd("AUTH PLAIN") == b"+ "
    assert r.cmd(plain_b64(addr, addr, PASSWORD)).startswith(b"+OK")
    assert r.cmd("STAT").startswith(b"+OK 1 ")
    # cancelled, bad base64, other authzid, unknown mechanism
    r = raw(srv, tls=True)
    assert r.cmd("AUTH PLAIN") == b"+ "
    assert r.cmd("*").startswith(b"-ERR")
    assert r.cmd("AUTH PLAIN !!!!").startswith(b"-ERR")
    assert r.cmd("AUTH PLAIN " + plain_b64("b@example.test", addr, PASSWORD)).startswith(b"-ERR [AUTH]")
    assert r.cmd("AUTH CRAM-MD5").startswith(b"-ERR")
    r.send("AUTH\r\n")
    assert r.line().startswith(b"+OK")
    assert r.multi() == [b"PLAIN"]
    assert r.cmd("AUTH PLAIN " + plain_b64("", addr, PASSWORD)).startswith(b"+OK")


def test_default_domain(tmp_path_factory):
    p = make_pop(tmp_path_factory, "pop3dd")
    p.extra["auth"] = {"default_domain": DOMAIN}
    p.write_config()
    start_pop(p)
    try:
        c = login(p, "a")
        assert c.stat()[0] == 0
        c.quit()
    finally:
        finish(p)


def test_failed_logins_rate_limited(tmp_path_factory):
    p = make_pop(tmp_path_factory, "pop3rl")
    p.extra["auth"] = {"max_failures": "3"}
    p.write_config()
    start_pop(p)
    try:
        r = raw(p, tls=True)
        for _ in range(3):
            assert r.cmd("USER a@example.test").startswith(b"+OK")
            assert r.cmd("PASS nope") == b"-ERR [AUTH] Authentication failed"
        r.close()
        r = raw(p, tls=True)
        assert r.cmd("USER a@example.test").startswith(b"+OK")
        # even the right password is refused while the address is over the limit
        assert r.cmd("PASS " + PASSWORD).startswith(b"-ERR [SYS/TEMP]")
    finally:
        finish(p)


# ---------------------------------------------------------------- transaction


def test_list_uidl_retr_top_exact(srv):
    addr = new_user(srv)
    bodies = [make_message("exact %d" % i, body="line %d\r\nsecond\r\nthird\r\n" % i) for i in range(3)]
    files = deliver(srv, addr, bodies)
    c = login(srv, addr)
    resp, listing, _ = c.list()
    sizes = [int(l.split()[1]) for l in listing]
    assert [int(l.split()[0]) for l in listing] == [1, 2, 3]
    got = []
    for i in range(1, 4):
        resp, lines, octets = c.retr(i)
        assert resp == b"+OK %d octets" % sizes[i - 1], resp
        msg = b"\r\n".join(lines) + b"\r\n"
        assert octets == len(msg) == sizes[i - 1]
        got.append(msg)
    assert sorted(got) == sorted(files)
    assert c.list(2).split()[2] == str(sizes[1]).encode()
    # TOP: the header, the empty line, n body lines
    head = got[0].split(b"\r\n\r\n", 1)[0]
    resp, lines, _ = c.top(1, 0)
    assert b"\r\n".join(lines) == head + b"\r\n"
    resp, lines, _ = c.top(1, 2)
    body = got[0].split(b"\r\n\r\n", 1)[1].split(b"\r\n")
    assert re.fullmatch(rb"line \d", body[0]) and body[1] == b"second"
    assert b"\r\n".join(lines) == head + b"\r\n\r\n" + body[0] + b"\r\nsecond"
    resp, lines, _ = c.top(1, 100)
    assert b"\r\n".join(lines) + b"\r\n" == got[0]
    # UIDL: unique, printable, single and listing agree
    resp, uidls, _ = c.uidl()
    ids = [l.split()[1] for l in uidls]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(rb"[\x21-\x7e]{1,70}", u) for u in ids)
    assert c.uidl(3).split()[2] == ids[2]
    for bad in ("RETR 0", "RETR 4", "TOP 9 1", "LIST 99", "UIDL 0", "DELE 4"):
        with pytest.raises(poplib.error_proto):
            c._shortcmd(bad)
    c.quit()


def test_dot_stuffing(srv):
    addr = new_user(srv)
    body = ".\r\n..two\r\n.three\r\nend.\r\n"
    files = deliver(srv, addr, [make_message("dots", body=body)])
    assert files[0].endswith(body.encode())
    r = raw(srv, tls=True)
    r.login(addr)
    assert r.cmd("RETR 1").startswith(b"+OK")
    lines = r.multi()
    assert lines[-4:] == [b"..", b"...two", b"..three", b"end."]
    c = login(srv, addr)
    assert b"\r\n".join(c.retr(1)[1]) + b"\r\n" == files[0]


def test_dele_quit_removes(srv):
    addr = new_user(srv)
    files = deliver(srv, addr, [make_message("dele %d" % i) for i in range(3)])
    c = login(srv, addr)
    gone = b"\r\n".join(c.retr(2)[1]) + b"\r\n"
    c.dele(2)
    assert c.stat()[0] == 2
    with pytest.raises(poplib.error_proto):
        c.retr(2)
    assert b"2 " not in b" ".join(c.list()[1])
    resp = c.quit()
    assert resp.startswith(b"+OK")
    left = srv.maildir(addr)
    assert len(left) == 2 and gone not in left
    assert sorted(left) == sorted(f for f in files if f != gone)
    c = login(srv, addr)
    assert c.stat()[0] == 2
    c.quit()


def test_dele_rset_keeps(srv):
    addr = new_user(srv)
    deliver(srv, addr, [make_message("rset %d" % i) for i in range(2)])
    c = login(srv, addr)
    c.dele(1)
    c.dele(2)
    assert c.stat()[0] == 0
    c.rset()
    assert c.stat()[0] == 2
    c.quit()
    assert len(srv.maildir(addr)) == 2
    # a connection dropped without QUIT removes nothing either
    c = login(srv, addr)
    c.dele(1)
    c.sock.close()
    time.sleep(0.5)
    assert len(srv.maildir(addr)) == 2


def test_delete_keep_policy(tmp_path_factory):
    p = start_pop(make_pop(tmp_path_factory, "pop3keep", pop3={"delete": "keep"}))
    try:
        deliver(p, "a@" + DOMAIN, [make_message("keep %d" % i) for i in range(2)])
        c = login(p, "a@" + DOMAIN)
        assert c.dele(1).startswith(b"+OK")
        assert c.stat()[0] == 1
        assert c.quit().startswith(b"+OK")
        assert len(p.maildir("a@" + DOMAIN)) == 2
        c = login(p, "a@" + DOMAIN)
        assert c.stat()[0] == 2
        c.quit()
    finally:
        finish(p)


def test_uidl_stable_across_sessions(srv):
    addr = new_user(srv)
    deliver(srv, addr, [make_message("uidl %d" % i) for i in range(3)])
    c = login(srv, addr)
    first = {}
    for l in c.uidl()[1]:
        n, u = l.split()
        first[u] = b"\r\n".join(c.retr(int(n))[1])
    c.quit()
    deliver(srv, addr, [make_message("uidl new")])
    c = login(srv, addr, mode="pop3s")
    second = {}
    for l in c.uidl()[1]:
        n, u = l.split()
        second[u] = b"\r\n".join(c.retr(int(n))[1])
    c.quit()
    assert len(second) == 4
    for u, m in first.items():
        assert second[u] == m  # same message, same UIDL
    # after a deletion the others keep theirs
    c = login(srv, addr)
    c.dele(1)
    c.quit()
    c = login(srv, addr)
    third = {l.split()[1] for l in c.uidl()[1]}
    c.quit()
    assert len(third) == 3 and third < set(second)


def test_retrieved_messages_marked_seen(srv):
    addr = new_user(srv)
    deliver(srv, addr, [make_message("seen %d" % i) for i in range(2)])
    c = login(srv, addr)
    c.retr(1)
    c.top(2, 0)
    c.quit()
    names = [os.path.basename(f) for f in srv.maildir_files(addr)]
    seen = [n for n in names if re.search(r":2,[A-Z]*S", n)]
    assert len(seen) == 1, names


def test_large_message(srv):
    addr = new_user(srv)
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    body = line * (5 * 1024 * 1024 // len(line) + 1)
    body = body.replace(b"\r\n0123", b"\r\n.123", 100)  # some lines to stuff
    msg = make_message("big", body=body.decode())
    files = deliver(srv, addr, [msg])
    assert len(files[0]) > 5 * 1024 * 1024
    for mode in ("stls", "pop3s"):
        c = login(srv, addr, mode)
        t = time.monotonic()
        resp, lines, octets = c.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == files[0]
        assert octets == len(files[0])
        assert time.monotonic() - t < 30
        c.quit()


def test_pipelined_commands(srv):
    addr = new_user(srv)
    files = deliver(srv, addr, [make_message("pipe %d" % i) for i in range(2)])
    r = raw(srv, tls=True)
    r.send("USER %s\r\nPASS %s\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nNOOP\r\nDELE 1\r\nSTAT\r\nRSET\r\nQUIT\r\n"
           % (addr, PASSWORD))
    assert r.line().startswith(b"+OK")  # USER
    assert r.line().startswith(b"+OK")  # PASS
    assert r.line() == b"+OK 2 %d" % sum(len(f) for f in files)
    assert r.line().startswith(b"+OK")
    assert len(r.multi()) == 2
    assert r.line().startswith(b"+OK")
    assert len(r.multi()) == 2
    assert r.line().startswith(b"+OK")
    assert b"\r\n".join(r.multi()) + b"\r\n" in files
    assert r.line().startswith(b"+OK")
    assert r.multi()[-1] == b""
    assert r.line() == b"+OK"
    assert r.line().startswith(b"+OK")  # DELE
    assert r.line().startswith(b"+OK 1 ")
    assert r.line().startswith(b"+OK")  # RSET
    assert r.line().startswith(b"+OK")  # QUIT
    assert r.closed()
    assert len(srv.maildir(addr)) == 2


def test_long_lines(srv):
    addr = new_user(srv)
    r = raw(srv, tls=True)
    assert r.cmd("NOOP " + "x" * 300).startswith(b"-ERR")
    assert r.cmd("USER " + "x" * 100000) == b"-ERR Line too long"
    r.login(addr)
    assert r.cmd("LIST " + "1" * 260).startswith(b"-ERR")
    assert r.cmd("NOOP") == b"+OK"
    assert r.cmd("QUIT").startswith(b"+OK")


def test_garbage_and_nuls(srv):
    addr = new_user(srv)
    deliver(srv, addr, [make_message("garbage", body="x\x00y\r\n")])
    junk = [b"\x00\x00\x00\r\n", b"\xff\xfe\xfd\r\n", b"USER \x00a\r\n", b"RETR \x00\r\n", b"\r\n",
            b"TOP 1 -1\r\n", b"LIST 1 2 3\r\n", b"APOP a b\r\n", b"\x16\x03\x01\x00\x05hello\r\n"]
    for tls in (False, True):
        r = raw(srv, tls=tls)
        for j in junk[:5]:
            r.send(j)
            assert r.line().startswith(b"-ERR"), j
        r.close()
    r = raw(srv, tls=True)
    r.login(addr)
    for j in junk:
        r.send(j)
        assert r.line().startswith(b"-ERR"), j
    assert r.cmd("RETR 1").startswith(b"+OK")
    assert r.multi()[-1] == b"x\x00y"
    # too many errors: disconnected
    r = raw(srv, tls=True)
    for i in range(10):
        r.send(b"BOGUS\r\n")
    lines = [r.line() for _ in range(11)]
    assert lines[-1] == b"-ERR Too many errors"
    assert r.closed()
    # a stream of random octets, then the server still serves
    r = raw(srv)
    r.send(os.urandom(200000))
    r.close()
    c = login(srv, addr)
    assert c.stat()[0] == 1
    c.quit()
    assert srv.alive()


def test_stls_discards_pipelined_plaintext(srv):
    addr = new_user(srv)
    r = raw(srv)
    # an injected command after STLS must never be run inside TLS
    r.send("STLS\r\nUSER %s\r\nPASS %s\r\n" % (addr, PASSWORD))
    assert r.line().startswith(b"+OK")
    assert r.buf == b""
    r.sock = tls_client_context().wrap_socket(r.sock)
    assert r.cmd("STAT").startswith(b"-ERR")  # not logged in
    assert r.cmd("NOOP").startswith(b"-ERR")
    assert wait_log(srv, r"event=pop3_stls_pipelining client=127\.0\.0\.1")


def test_message_removed_by_another_session(srv):
    addr = new_user(srv)
    deliver(srv, addr, [make_message("race %d" % i) for i in range(2)])
    a = login(srv, addr)
    b = login(srv, addr, "pop3s")
    b.dele(1)
    b.quit()
    with pytest.raises(poplib.error_proto) as e:
        a.retr(1)
    assert e.value.args[0].startswith(b"-ERR")
    assert len(a.retr(2)[1]) > 0
    a.dele(1)  # already gone: nothing to do at QUIT
    assert a.quit().startswith(b"+OK")
    assert len(srv.maildir(addr)) == 1


def test_sigterm_with_open_sessions(tmp_path_factory):
    p = start_pop(make_pop(tmp_path_factory, "pop3term"))
    deliver(p, "a@" + DOMAIN, [make_message("term")])
    r = raw(p, tls=True)
    r.login("a@" + DOMAIN)
    r2 = raw(p)
    r3 = raw(p, tls=True)
    r3.send("USER a@example.test\r\n")
    assert r3.line() == b"+OK"
    p.clients = []  # keep them open through the SIGTERM
    try:
        finish(p)  # exits 0 within the limit, no sanitizer report
        assert r2.line() == b"-ERR [SYS/TEMP] Server shutting down"
        assert r3.line() == b"-ERR [SYS/TEMP] Server shutting down"
        assert r.line() == b"-ERR [SYS/TEMP] Server shutting down"
        assert r.closed() and r2.closed() and r3.closed()
    finally:
        for c in (r, r2, r3):
            c.close()


# ---------------------------------------------------------------- fetchmail


def run_fetchmail(p, tmpdir, addr, name, keep, ssl_mode):
    out = os.path.join(tmpdir, name + ".mbox")
    rc = os.path.join(tmpdir, name + ".rc")
    port = p.pop3s_port if ssl_mode == "pop3s" else p.pop3_port
    tls = "ssl no sslcertck" if ssl_mode == "pop3s" else "sslproto tls1.2+ no sslcertck"
    with open(rc, "w") as f:
        f.write('set no bouncemail\n'
                'poll 127.0.0.1 service %d protocol pop3 uidl timeout 60\n'
                '  user "%s" there with password "%s" is root here\n'
                '  %s %s fetchall mda "cat >> %s"\n'
                % (port, addr, PASSWORD, tls, "keep" if keep else "nokeep", out))
    os.chmod(rc, 0o600)
    env = dict(os.environ, FETCHMAILHOME=tmpdir, HOME=tmpdir)
    r = subprocess.run(["fetchmail", "-f", rc, "--nosyslog", "-v"], capture_output=True, timeout=120,
                       env=env, cwd=tmpdir)
    text = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    # 0: mail retrieved, 1: no mail
    assert r.returncode in (0, 1), text
    try:
        with open(out, "rb") as f:
            return f.read(), text
    except FileNotFoundError:
        return b"", text


@pytest.mark.skipif(not have("fetchmail"), reason="fetchmail not installed (scripts/deps.sh check)")
@pytest.mark.parametrize("ssl_mode", ["stls", "pop3s"])
def test_fetchmail(srv, tmp_path, ssl_mode):
    addr = new_user(srv)
    n = 5
    deliver(srv, addr, [make_message("fetchmail %s %d" % (ssl_mode, i), body=".dot\r\nbody %d\r\n" % i)
                        for i in range(n)])
    d = str(tmp_path)
    # --keep: everything fetched, everything stays
    got, text = run_fetchmail(srv, d, addr, "keep", keep=True, ssl_mode=ssl_mode)
    assert len(re.findall(rb"^Subject: fetchmail %s \d$" % ssl_mode.encode(), got, re.M)) == n, text
    assert got.count(b"\n.dot\r\n") + got.count(b"\n.dot\n") == n
    assert len(srv.maildir(addr)) == n
    # without keep: fetched again (fetchall) and removed from the server
    got, text = run_fetchmail(srv, d, addr, "flush", keep=False, ssl_mode=ssl_mode)
    assert len(re.findall(rb"^Subject: fetchmail %s \d$" % ssl_mode.encode(), got, re.M)) == n, text
    assert srv.maildir(addr) == []
    check_sanitizers(srv.stderr(), "postern serve")


def test_maildir_file_with_lf_line_ends(srv):
    """A message put into the Maildir by another program (a Dovecot copy, LF line ends) is served
    with CRLF, and its octet count is the CRLF size."""
    addr = new_user(srv)
    deliver(srv, addr, [make_message("first")])
    lf = b"From: x@remote.test\nSubject: lf only\n\nline\n.dot\nlast"
    crlf = lf.replace(b"\n", b"\r\n") + b"\r\n"
    new = os.path.join(srv.maildir_path(addr), "new")
    with open(os.path.join(new, "1700000000.M1P1.otherhost"), "wb") as f:
        f.write(lf)
    c = login(srv, addr)
    resp, listing, _ = c.list()
    assert len(listing) == 2
    for l in listing:
        n, size = (int(x) for x in l.split())
        resp, lines, octets = c.retr(n)
        msg = b"\r\n".join(lines) + b"\r\n"
        if b"lf only" in msg:
            assert msg == crlf
            assert size in (len(crlf), len(crlf) - 2)  # the missing last line end may not count
    c.quit()


def test_uidl_survives_index_loss(tmp_path_factory):
    """The index is a cache: deleted while the server is down, UIDLs are the same afterwards."""
    p = start_pop(make_pop(tmp_path_factory, "pop3idx"))
    try:
        deliver(p, "a@" + DOMAIN, [make_message("idx %d" % i) for i in range(3)])
        c = login(p, "a@" + DOMAIN)
        before = {l.split()[1]: b"\r\n".join(c.retr(int(l.split()[0]))[1]) for l in c.uidl()[1]}
        c.quit()
        p.stop()
        removed = 0
        idx = os.path.join(p.data_dir, "index")  # every account's index file
        for name in os.listdir(idx):
            os.unlink(os.path.join(idx, name))
            removed += 1
        assert removed >= 1
        start_pop(p)
        c = login(p, "a@" + DOMAIN)
        after = {l.split()[1]: b"\r\n".join(c.retr(int(l.split()[0]))[1]) for l in c.uidl()[1]}
        c.quit()
        assert after == before
    finally:
        finish(p)


def test_slowloris_before_login_is_cut(tmp_path_factory):
    """A client that dribbles a never-ending line before login, a byte at a time, is closed within
    a bound of idle_timeout: every byte re-arms the 10-minute autologout, the login deadline is
    for the whole AUTHORIZATION state. A logged-in session keeps the autologout."""
    p = start_pop(make_pop(tmp_path_factory, "pop3-slow", limits={"idle_timeout": "2s"}))
    try:
        addr = new_user(p)
        closed, elapsed = dribble_until_closed(p.pop3_port, closed_marker=b"Login timeout",
                                               greeting=b"+OK")
        assert closed == 5, "slow pre-login clients still open after %.1fs" % elapsed
        assert elapsed < 8
        # a logged-in client idle for longer than idle_timeout is not cut (the autologout rules)
        c = login(p, addr)
        time.sleep(3)
        assert c.stat()[0] == 0
        c.quit()
    finally:
        finish(p)
