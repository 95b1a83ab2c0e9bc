"""
Memory per idle SMTP connection after STARTTLS (as tests/test_imap_memory.py
for IMAP; docs/architecture.md "Memory per connection").

300 clients each connect to the smtp listener, say EHLO, STARTTLS, EHLO again
over TLS, and stay; the server's resident memory may grow by at most
PER_CONN_KIB per connection over what it used with a few warm-up connections
open (so one-time costs are not counted).

Measured (2026-11, release build): 51 KiB per connection when STARTTLS wrapped
the plain bufferevent in a libevent OpenSSL filter (two bufferevents, empty
16 KiB input chains held while idle); 29.8 KiB since STARTTLS hands the
socket to an OpenSSL socket bufferevent: OpenSSL's per-connection state (about
15 KiB, as for IMAP) and the session itself (13 KiB, of which 12 KiB is the
command line buffer, sized for AUTH lines). Under ASan (redzones, allocator
granularity; its quarantine off for this server) sessions are larger.
"""
import os
import resource
import socket
import time

from conftest import is_asan, recv_line, rss_kib, tls_client_context

N = 300
WARM = 10
PER_CONN_KIB = 38
ASAN_PER_CONN_KIB = 60


class Idler:
    """A raw client: EHLO, STARTTLS, EHLO over TLS; then it stays."""

    def __init__(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.s, self.buf = s, b""
        assert self.reply().startswith(b"220")
        assert self.cmd(b"EHLO idler.test").startswith(b"250")
        assert self.cmd(b"STARTTLS").startswith(b"220")
        self.s = tls_client_context().wrap_socket(s)
        self.buf = b""
        assert self.cmd(b"EHLO idler.test").startswith(b"250")

    def line(self):
        line, self.buf = recv_line(self.s, self.buf)
        return line

    def reply(self):
        """The last line of a (multiline) reply."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line

    def cmd(self, text):
        self.s.sendall(text + b"\r\n")
        return self.reply()

    def close(self):
        try:
            self.s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.s.close()


def test_idle_smtp_tls_connections_stay_small(postern_factory, monkeypatch):
    # ASan's quarantine would be measured instead of the sessions (see test_imap_memory)
    asan_opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan_opts + ":" if asan_opts else "") + "quarantine_size_mb=0")
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * (N + WARM) + 256
    if old[0] < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(old[1], want)))
    n = str(2 * (N + WARM))
    p = postern_factory(limits={"max_connections": n, "max_connections_per_ip": n},
                        extra={"smtp": {"pregreet_wait_ms": "0"}}, users=())
    pid = p.proc.pid
    idlers = []
    try:
        for _ in range(WARM):
            idlers.append(Idler(p.smtp_port))
        time.sleep(1)
        base = rss_kib(pid)
        for _ in range(N):
            idlers.append(Idler(p.smtp_port))
        time.sleep(2)
        after = rss_kib(pid)
        per = (after - base) / N
        bound = ASAN_PER_CONN_KIB if is_asan(pid) else PER_CONN_KIB
        print("rss %d -> %d KiB for %d idle SMTP TLS connections: %.1f KiB each (bound %d, asan %s)"
              % (base, after, N, per, bound, is_asan(pid)))
        assert per < bound, (base, after, per)
    finally:
        for c in idlers:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
