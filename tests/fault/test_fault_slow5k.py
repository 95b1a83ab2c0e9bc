"""
5,000 slow clients (issue 6 item 2): 2,000 SMTP, 2,000 IMAP and 1,000 POP3 connections from
250 loopback addresses (127.0.2.1-250: 8 SMTP, 8 IMAP and 4 POP3 each, under the default
max_connections_per_ip of 20; max_connections raised to fit), all open at once, each sending one
byte a second of a command line that never ends. Meanwhile a well-behaved client sends mail
by SMTP and another logs in by IMAP and reads its mailbox. Asserted:

- every slow connection is greeted (nobody refused: the limits fit), all are open together;
- the good clients, running from the first slow connection to the last cut, are served: SMTP
  connect, EHLO, MAIL, RCPT, DATA up to the 354 within LOOP_BOUND (what the event loop does),
  with the end of data (mail authentication lookups, durable commit) within ROUND_TRIP_BOUND;
  IMAP over TLS: connect, LOGIN, SELECT, FETCH, LOGOUT within IMAP_BOUND; every message sent
  is delivered;
- the server's resident memory grows by less than PER_CONN_KIB_PLAIN per slow connection in a
  plain build (measured ~13 KiB), PER_CONN_KIB_ASAN under ASan;
- the timeouts cut the slow ones: every SMTP, IMAP and POP3 slow connection is closed by the
  server within CUT_BOUND of its greeting (the SMTP per-line deadline and the IMAP and POP3 login
  deadlines are idle_timeout; POP3's RFC 1939 autologout of 10 minutes applies after login).

make soak (POSTERN_SOAK=1) runs 10,000 connections (4,000 + 4,000 + 2,000 from 500 addresses)
with a longer idle_timeout, and more good round trips.
"""
import imaplib
import os
import selectors
import socket
import threading
import time

from conftest import DOMAIN, PASSWORD, is_asan, make_message, tls_client_context
from faultlib import raise_nofile, rss_kib, still_serves

SOAK = bool(os.environ.get("POSTERN_SOAK"))
SCALE = 2 if SOAK else 1
N = {"smtp": 2000 * SCALE, "imap": 2000 * SCALE, "pop3": 1000 * SCALE}
N_ALL = sum(N.values())
SOURCES = ["127.0.%d.%d" % (2 + i // 250, 1 + i % 250) for i in range(250 * SCALE)]
GOOD_SOURCE = "127.0.0.22"
# idle_timeout: long enough for all to be open together (connecting them took 7-12 s for
# 5,000 and 18 s for 10,000 here; the first ones are cut IDLE after their greeting)
IDLE = 45 if SOAK else 20
CUT_BOUND = IDLE + 5             # from greeting to the server's close
# Bounds on the good clients, generous for a loaded 2-core machine under ASan (their job is to
# catch starvation: a client that waits for the slow ones, or for a timeout, takes 10 s or more).
# SMTP: connect to the 354 to DATA (300 ms of it: the pregreet wait). Every second all slow
# connections send their byte at once, and the one loop thread reads them all before it gets to
# the good client: measured 0.3-0.6 s (5,000) and up to 1.5 s (10,000, ASan) with a load of 6-9.
LOOP_BOUND = 2.0 * SCALE
# SMTP in all: the end of data waits for SPF/DKIM/DMARC lookups (6 s budget) on the resolver
# that is also answering the slow clients' PTR queries (up to 2.5 s under ASan while they
# connect, 0.03 s after), then for the durable commit.
ROUND_TRIP_BOUND = 6.0
# IMAP: TLS connect, LOGIN (the password hash: ~0.7 s under ASan on a loaded machine), SELECT,
# FETCH, LOGOUT; measured 0.2-1.9 s, once 3.7 s with a load of 9.
IMAP_BOUND = 6.0
BATCH = 500                      # connections made per step (~170 per listener: < backlog)
LIMITS = {
    "max_connections": str(max(N.values()) + 100),
    "max_connections_per_ip": "20",      # the default
    "idle_timeout": "%ds" % IDLE,
    "data_timeout": "%ds" % IDLE,
    "messages_per_ip_per_minute": "1000000",
}
PAYLOAD = {
    "smtp": b"EHLO slow.example.test" + b"x" * 400,
    "imap": b"a1 LOGIN slow@example.test " + b"x" * 400,
    "pop3": b"USER slow@example.test" + b"x" * 200,
}
GREETING = {"smtp": b"220 ", "imap": b"* OK", "pop3": b"+OK"}
# Resident memory per slow connection. Measured with 5,000 (RelWithDebInfo): see
# docs/operations.md "Connection and descriptor limits". Under ASan (redzones, quarantine)
# the existing test_fault_slow allows 128 KiB; the same here.
PER_CONN_KIB_PLAIN = 32
PER_CONN_KIB_ASAN = 128


class Crowd:
    """The slow connections, on one selector. Each remembers its protocol, when it was greeted
    and when the server closed it; every open greeted one gets one more byte a second."""

    def __init__(self, ports):
        self.ports = ports
        self.sel = selectors.DefaultSelector()
        self.st = {}             # socket -> dict(proto, greeted, closed, pos, buf)
        # the protocols interleaved, so that every batch loads every listener
        per = {proto: [(proto, SOURCES[i % len(SOURCES)]) for i in range(n)]
               for proto, n in N.items()}
        self.plan = []
        for i in range(max(N.values())):
            self.plan.extend(per[proto][i] for proto in N if i < N[proto])
        self.next = 0
        self.last_tick = 0.0

    def connect_batch(self):
        for proto, src in self.plan[self.next:self.next + BATCH]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((src, 0))
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.ports[proto]))
            self.sel.register(s, selectors.EVENT_READ)
            self.st[s] = {"proto": proto, "greeted": None, "closed": None, "pos": 0, "buf": b""}
        self.next += BATCH

    def all_made(self):
        return self.next >= len(self.plan)

    def open_count(self, proto=None):
        return sum(1 for v in self.st.values()
                   if v["closed"] is None and (proto is None or v["proto"] == proto))

    def greeted_count(self):
        return sum(1 for v in self.st.values() if v["greeted"] is not None)

    def read(self, timeout):
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            v = self.st[s]
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                v["closed"] = time.monotonic()
                self.sel.unregister(s)
                continue
            if v["greeted"] is None:
                v["buf"] += data[:512]
                if b"\r\n" in v["buf"]:
                    assert v["buf"].startswith(GREETING[v["proto"]]), v
                    v["greeted"] = time.monotonic()

    def dribble(self):
        """One byte to every greeted, open connection (at most once a second)."""
        now = time.monotonic()
        if now - self.last_tick < 1.0:
            return
        self.last_tick = now
        for s, v in self.st.items():
            if v["closed"] is not None or v["greeted"] is None:
                continue
            try:
                s.send(PAYLOAD[v["proto"]][v["pos"]:v["pos"] + 1])
                v["pos"] += 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                v["closed"] = time.monotonic()
                self.sel.unregister(s)

    def close(self):
        for s in self.st:
            try:
                s.close()
            except OSError:
                pass
        self.sel.close()


def smtp_round_trip(p, i):
    """One message by SMTP from the good address; returns (seconds until the 354 to DATA,
    seconds in all). The first part is the event loop's (and the 300 ms pregreet wait); the
    rest adds the durable commit (spool file, fsync, SQLite), which the disk decides."""
    t0 = time.monotonic()
    c = p.raw(source=GOOD_SOURCE, timeout=10)
    try:
        assert c.cmd("EHLO good.example.test").code == 250
        assert c.cmd("MAIL FROM:<s@remote.test>").code == 250
        assert c.cmd("RCPT TO:<a@%s>" % DOMAIN).code == 250
        assert c.cmd("DATA").code == 354
        t_354 = time.monotonic() - t0
        c.send(make_message("good %d" % i) + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
        c.cmd("QUIT")
    finally:
        c.close()
        p.clients.remove(c)
    return t_354, time.monotonic() - t0


def imap_round_trip(p):
    t0 = time.monotonic()
    c = imaplib.IMAP4_SSL("127.0.0.1", p.imaps_port, ssl_context=tls_client_context(),
                          timeout=10)
    done = False
    try:
        c.login("a@" + DOMAIN, PASSWORD)
        typ, _ = c.select("INBOX")
        assert typ == "OK"
        typ, data = c.fetch("1:*", "(FLAGS RFC822.SIZE)")
        assert typ == "OK", data
        c.logout()
        done = True
    finally:
        if not done:
            try:
                c.shutdown()
            except OSError:
                pass
    return time.monotonic() - t0


def test_5000_slow_clients(postern_factory):
    old = raise_nofile(N_ALL + 2000)     # the server inherits it: N_ALL sockets and its own
    p = postern_factory(limits=LIMITS)
    pid = p.proc.pid
    asan = is_asan(pid)
    per_conn = PER_CONN_KIB_ASAN if asan else PER_CONN_KIB_PLAIN
    still_serves(p, source=GOOD_SOURCE)
    assert smtp_round_trip(p, -1)[1] < 10
    p.wait_for_delivery("a@" + DOMAIN, 1)
    assert imap_round_trip(p) < 10       # warm: the mailbox index exists
    time.sleep(0.5)
    base_rss = rss_kib(pid)
    crowd = Crowd({"smtp": p.smtp_port, "imap": p.imap_port, "pop3": p.pop3_port})
    smtp_times, imap_times, results, when = [], [], [], []
    stop = threading.Event()

    def good():
        try:
            i = 0
            while not stop.is_set() and i < 200:
                smtp_times.append(smtp_round_trip(p, i))
                imap_times.append(imap_round_trip(p))
                when.append(time.monotonic())
                i += 1
                stop.wait(0.3)
            results.append("ok")
        except BaseException as e:  # reported below
            results.append(e)

    t = threading.Thread(target=good, daemon=True)
    try:
        t_start = time.monotonic()
        t.start()                        # the good clients run from the first slow connection
        peak = base_rss
        max_open = 0
        # connect in batches; each batch is greeted before the next (the backlog never
        # overflows); those already open dribble meanwhile
        while not crowd.all_made():
            crowd.connect_batch()
            deadline = time.monotonic() + 20
            while crowd.greeted_count() < min(crowd.next, N_ALL) and time.monotonic() < deadline:
                crowd.read(0.1)
                crowd.dribble()
            assert crowd.greeted_count() == min(crowd.next, N_ALL), (
                "%d of %d slow connections greeted" % (crowd.greeted_count(), crowd.next))
            max_open = max(max_open, crowd.open_count())
            peak = max(peak, rss_kib(pid))
        t_connected = time.monotonic() - t_start
        # everyone dribbles until the server has cut every SMTP and IMAP one
        deadline = time.monotonic() + CUT_BOUND + 5
        while time.monotonic() < deadline:
            crowd.dribble()
            crowd.read(0.2)
            max_open = max(max_open, crowd.open_count())
            peak = max(peak, rss_kib(pid))
            if crowd.open_count("smtp") + crowd.open_count("imap") + crowd.open_count("pop3") == 0:
                break
        stop.set()
        t.join(timeout=60)
        assert results == ["ok"], results
        open_left = {proto: crowd.open_count(proto) for proto in N}
        grow = peak - base_rss
        worst_cut = max(v["closed"] - v["greeted"] for v in crowd.st.values()
                        if v["closed"] is not None)
        print("%d slow connections (%s) greeted in %.1f s, %d open at once; good SMTP round "
              "trips %d, worst %.3f s to the 354, %.3f s in all; IMAP %d, worst %.3f s; "
              "rss %d -> peak %d KiB (%.1f KiB per connection, %s build); "
              "worst cut %.1f s after greeting; still open %s"
              % (N_ALL, ", ".join("%d %s" % (n, k) for k, n in N.items()), t_connected,
                 max_open, len(smtp_times), max(t[0] for t in smtp_times),
                 max(t[1] for t in smtp_times), len(imap_times), max(imap_times),
                 base_rss, peak, grow / N_ALL, "ASan" if asan else "plain", worst_cut,
                 open_left))
        assert max_open == N_ALL, "only %d of %d slow connections were open together" % (
            max_open, N_ALL)
        print("good round trips (at s, smtp, imap): %s" % " ".join(
            "%.1f:%.2f+%.2f/%.2f" % (w - t_start, a[0], a[1] - a[0], b)
            for w, a, b in zip(when, smtp_times, imap_times)))
        assert smtp_times and max(t[0] for t in smtp_times) < LOOP_BOUND, smtp_times
        assert max(t[1] for t in smtp_times) < ROUND_TRIP_BOUND, smtp_times
        assert imap_times and max(imap_times) < IMAP_BOUND, imap_times
        assert grow < N_ALL * per_conn, "rss grew %d KiB for %d connections (%.1f each)" % (
            grow, N_ALL, grow / N_ALL)
        assert open_left["smtp"] == 0 and open_left["imap"] == 0 and open_left["pop3"] == 0, open_left
        assert worst_cut <= CUT_BOUND, worst_cut
        p.wait_for_delivery("a@" + DOMAIN, len(smtp_times) + 1)
    finally:
        stop.set()
        crowd.close()
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    still_serves(p, source=GOOD_SOURCE)
