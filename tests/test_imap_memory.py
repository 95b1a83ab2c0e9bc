"""
Memory per idle IMAP connection (issue 6: at most 10 KiB each is the goal; see
docs/architecture.md "Memory per connection" for what bounds it over TLS).

300 sessions each do STARTTLS, LOGIN, SELECT INBOX (a few messages) and IDLE,
and stay; the server's resident memory may grow by at most PER_CONN_KIB per
session over what it used with a few warm-up sessions open (so one-time costs,
the store's per-worker SQLite caches and the like, are not counted).

The plaintext variant holds the goal itself: the same without TLS ([imap]
plaintext_auth = loopback) and with a 200-message INBOX, so the selected
view counts (8 bytes a message, UIDs as runs while idling): at most
PLAIN_PER_CONN_KIB (10) each. Measured (2026-11-23): 2.8-3.6 KiB in a release
build, 6-24 KiB under ASan (it varies from run to run).

Measured (2026-11): about 17 KiB per session in a release build with this
small INBOX, of which OpenSSL's per-connection state is about 14.5 KiB; under
ASan (redzones, allocator granularity; its quarantine off for this server)
about 33 KiB. The bounds catch the regression that was fixed: STARTTLS through
a libevent filter bufferevent kept two empty 16 KiB input chains per idle
connection (46 KiB per session here in a release build).
"""
import imaplib
import os
import random
import resource
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import (DOMAIN, PASSWORD, is_asan, make_message, recv_line, rss_kib,
                      tls_client_context)

# sessions measured; the slope is taken over the second half. 600, not 300: with the index
# connections pooled and handed between worker threads, ASan's RSS moves in steps of a MiB or
# more (its size-class regions), and over 150 sessions one step was 7 KiB a session (a TLS slope
# of 10-61 KiB across runs of the same build, against 16.7 in release); over 300 it is half
N = 600
# warm-up sessions, opened 32 at a time: every one of the server's 16 worker threads then has
# its index and directory connections open (~10 MiB in all, a fixed cost that would otherwise
# land in the measurement when a worker first serves a session)
WARM = 64
MESSAGES = 5
PER_CONN_KIB = 28
ASAN_PER_CONN_KIB = 56
PLAIN_MESSAGES = 200
PLAIN_PER_CONN_KIB = 10
# under ASan a session's few KiB come from size-class regions ASan maps a MiB or more at a
# time, so the slope over 150 sessions jumps (6-24 KiB measured): a loose bound there, the
# goal itself is held by the release build
ASAN_PLAIN_PER_CONN_KIB = 40
USERS = ("a", "b", "c")


class Idler:
    """A raw client: STARTTLS (unless tls=False), LOGIN, SELECT INBOX, IDLE; then it stays."""

    def __init__(self, port, user, tls=True):
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.s, self.buf = s, b""
        assert self.line().startswith(b"* OK")
        if tls:
            self.cmd(b"s STARTTLS")
            self.s = tls_client_context().wrap_socket(s)
            self.buf = b""
        self.cmd(b'l LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
        self.cmd(b"x SELECT INBOX")
        self.s.sendall(b"i IDLE\r\n")
        line = self.line()
        assert line.startswith(b"+"), line

    def line(self):
        line, self.buf = recv_line(self.s, self.buf)
        return line

    def cmd(self, text):
        tag = text.split(b" ", 1)[0]
        self.s.sendall(text + b"\r\n")
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), line
                return

    def close(self):
        try:
            self.s.sendall(b"DONE\r\nz LOGOUT\r\n")
        except OSError:
            pass
        self.s.close()


def fill_inbox(p, user, n):
    """n messages straight into the INBOX's cur/ (70 % \\Seen), owned as the server's files."""
    cur = os.path.join(p.maildir_path(user), "cur")
    st = os.stat(cur)
    rng = random.Random(user)
    for i in range(n):
        path = os.path.join(cur, "%d.M%dP1.memtest:2,%s" % (1600000000 + i, i,
                                                            "S" if rng.random() < 0.7 else ""))
        with open(path, "wb") as f:
            f.write(make_message("m %d" % i, to=user))
        os.chown(path, st.st_uid, st.st_gid)


def test_idle_tls_sessions_stay_small(postern_factory, monkeypatch):
    measure(postern_factory, monkeypatch, True, MESSAGES, PER_CONN_KIB, ASAN_PER_CONN_KIB)


def test_idle_plaintext_sessions_within_the_goal(postern_factory, monkeypatch):
    measure(postern_factory, monkeypatch, False, PLAIN_MESSAGES, PLAIN_PER_CONN_KIB,
            ASAN_PLAIN_PER_CONN_KIB)


def measure(postern_factory, monkeypatch, tls, messages, release_bound, asan_bound):
    # ASan keeps freed blocks in a quarantine (256 MiB): every TLS handshake frees
    # hundreds of KiB, so with it RSS would measure the quarantine (~600 KiB a
    # session), not what a session holds. Only this test's server goes without it.
    asan_opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan_opts + ":" if asan_opts else "") + "quarantine_size_mb=0")
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * (N + WARM) + 256
    if old[0] < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(old[1], want)))
    n = str(2 * (N + WARM))
    imap_conf = {"max_connections_per_user": n}
    if not tls:
        imap_conf["plaintext_auth"] = "loopback"
    p = postern_factory(limits={"max_connections": n, "max_connections_per_ip": n},
                        extra={"imap": imap_conf}, users=())
    # SHA-256-crypt: 310 yescrypt logins would take most of a minute
    fast = subprocess.run(["openssl", "passwd", "-5", "-salt", "memtest0", PASSWORD],
                          check=True, capture_output=True, text=True).stdout.strip()
    for u in USERS:
        p.must("user", "add", "%s@%s" % (u, DOMAIN), "--password-hash", fast)
    for u in USERS:
        c = imaplib.IMAP4("127.0.0.1", p.imap_port, timeout=20)
        c.starttls(ssl_context=tls_client_context())
        c.login("%s@%s" % (u, DOMAIN), PASSWORD)
        if messages > 20:
            fill_inbox(p, "%s@%s" % (u, DOMAIN), messages)
        else:
            for i in range(messages):
                msg = make_message("m %d" % i, to="%s@%s" % (u, DOMAIN))
                assert c.append("INBOX", None, None, msg)[0] == "OK"
        assert c.select("INBOX")[1] == [str(messages).encode()]
        c.logout()
    pid = p.proc.pid
    idlers = []
    try:
        with ThreadPoolExecutor(max_workers=32) as ex:
            idlers.extend(ex.map(lambda i: Idler(p.imap_port, "%s@%s" % (
                USERS[i % len(USERS)], DOMAIN), tls), range(WARM)))
        time.sleep(1)
        base = rss_kib(pid)
        # the slope over the second half: a worker thread serving its first session opens its
        # database connections (~600 KiB each); the warm-up and the first half take those
        for i in range(N // 2):
            idlers.append(Idler(p.imap_port, "%s@%s" % (USERS[i % len(USERS)], DOMAIN), tls))
        time.sleep(1)
        mid = rss_kib(pid)
        for i in range(N // 2, N):
            idlers.append(Idler(p.imap_port, "%s@%s" % (USERS[i % len(USERS)], DOMAIN), tls))
        time.sleep(2)
        after = rss_kib(pid)
        per = (after - mid) / (N - N // 2)
        bound = asan_bound if is_asan(pid) else release_bound
        print("rss %d -> %d -> %d KiB for %d idle %s sessions (%d messages): %.1f KiB each over "
              "the last %d (bound %d, asan %s)" % (base, mid, after, N, "TLS" if tls else "plaintext",
                                                   messages, per, N - N // 2, bound, is_asan(pid)))
        assert per < bound, (base, mid, after, per)
    finally:
        for c in idlers:
            c.close()
        # let the server finish those LOGOUTs before the fixture stops it: a bufferevent freed
        # just before the loop exits is still queued for its deferred free (LeakSanitizer then
        # reports it; seen with 364 plaintext sessions logging out at once)
        time.sleep(2)
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
