"""
Slow clients (issue 6 item 2, the make-check size): 300 connections from six 127.0.0.x
addresses that dribble one byte a second, while a well-behaved client sends messages. The good
client's round trip stays bounded, the server's resident memory stays bounded, and the idle
timeout cuts the slow ones.
"""
import selectors
import socket
import threading
import time

from conftest import DOMAIN, make_message
from faultlib import raise_nofile, rss_kib, still_serves

N_SLOW = 300
SOURCES = ["127.0.0.%d" % i for i in range(10, 16)]   # 50 slow connections from each
GOOD_SOURCE = "127.0.0.20"
IDLE = 4                                               # idle_timeout, seconds
ROUND_TRIP_BOUND = 2.0
LIMITS = {
    "max_connections": str(N_SLOW + 50),
    "max_connections_per_ip": str(N_SLOW // len(SOURCES) + 5),
    "idle_timeout": "%ds" % IDLE,
    "data_timeout": "%ds" % IDLE,
}
# Resident memory: each connection holds a session, a libevent bufferevent with its input and
# output buffers and a line reader: a few KiB in a plain build. Under ASan (redzones, allocator
# granularity, quarantine of freed blocks) we allow 128 KiB per connection on top of what the
# idle server used (measured: ~60 KiB under ASan); 300 connections may add at most 37.5 MiB. A server that allocated per
# connection anything like a full line-length or message buffer up front would exceed it.
PER_CONN_KIB = 128


class Dribblers:
    """N_SLOW sockets; every second each open one gets one more byte of a line that never ends.
    All connect at once and start dribbling when their greeting has come (the server waits
    pregreet_wait_ms before it greets, and refuses bytes sent earlier)."""

    def __init__(self, port, payload=b"EHLO slow.example.test"):
        self.sel = selectors.DefaultSelector()
        self.socks = []
        self.opened = {}        # socket -> when its greeting came
        self.closed_at = {}
        self.payload = payload + b"x" * 4000
        self.pos = {}
        self.inbuf = {}
        # connect in batches of 50 so the listen backlog never overflows; a batch is greeted
        # (after pregreet_wait_ms) before the next one connects
        for first in range(0, N_SLOW, 50):
            batch = []
            for i in range(first, min(N_SLOW, first + 50)):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((SOURCES[i % len(SOURCES)], 0))
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                self.sel.register(s, selectors.EVENT_READ)
                self.socks.append(s)
                self.pos[s] = 0
                self.inbuf[s] = b""
                batch.append(s)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(s not in self.opened for s in batch):
                self._read(0.1)
            for s in batch:
                assert s in self.opened and s not in self.closed_at, (
                    "slow client not greeted: %r" % self.inbuf[s][:200])

    def open_count(self):
        return len(self.socks) - len(self.closed_at)

    def _read(self, timeout):
        for key, _ in self.sel.select(timeout):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self.closed_at[s] = time.monotonic()
                self.sel.unregister(s)
            else:
                self.inbuf[s] += data[:1024]
                if s not in self.opened and b"\r\n" in self.inbuf[s]:
                    assert self.inbuf[s].startswith(b"220 "), self.inbuf[s][:200]
                    self.opened[s] = time.monotonic()

    def tick(self):
        """One byte to every open socket, then read for up to a second."""
        for s in self.socks:
            if s in self.closed_at:
                continue
            try:
                s.send(self.payload[self.pos[s]:self.pos[s] + 1])
                self.pos[s] += 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.closed_at[s] = time.monotonic()
                self.sel.unregister(s)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            self._read(max(0.0, end - time.monotonic()))

    def close(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.sel.close()


def good_round_trip(p, i):
    t0 = time.monotonic()
    c = p.raw(source=GOOD_SOURCE, timeout=10)
    try:
        assert c.cmd("EHLO good.example.test").code == 250
        assert c.cmd("MAIL FROM:<s@remote.test>").code == 250
        assert c.cmd("RCPT TO:<a@%s>" % DOMAIN).code == 250
        assert c.cmd("DATA").code == 354
        c.send(make_message("good %d" % i) + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
        c.cmd("QUIT")
    finally:
        c.close()
    return time.monotonic() - t0


def test_slow_clients_do_not_starve_a_good_one(postern_factory):
    old = raise_nofile(4096)
    p = postern_factory(limits=LIMITS)
    pid = p.proc.pid
    still_serves(p, source=GOOD_SOURCE)
    time.sleep(0.5)
    base_rss = rss_kib(pid)
    drib = Dribblers(p.smtp_port)
    try:
        times, peak = [], base_rss
        results = []

        def good():
            try:
                for i in range(IDLE * 2):
                    times.append(good_round_trip(p, i))
                    time.sleep(0.2)
                results.append("ok")
            except BaseException as e:  # reported below
                results.append(e)

        t = threading.Thread(target=good, daemon=True)
        t.start()
        for _ in range(IDLE * 4):
            drib.tick()
            peak = max(peak, rss_kib(pid))
            if not t.is_alive() and drib.open_count() == 0:
                break
        t.join(timeout=30)
        assert results == ["ok"], results
        assert times and max(times) < ROUND_TRIP_BOUND, times
        assert peak - base_rss < N_SLOW * PER_CONN_KIB, (base_rss, peak)
        print("round trips %s, rss %d -> peak %d KiB, slow still open %d"
              % (["%.3f" % x for x in times], base_rss, peak, drib.open_count()))
        p.wait_for_delivery("a@" + DOMAIN, len(times))
    finally:
        drib.close()
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    still_serves(p, source=GOOD_SOURCE)
