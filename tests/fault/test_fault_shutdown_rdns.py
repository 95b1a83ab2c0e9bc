"""
Regression test (found by the fault suite, fixed by FCrDNS on the cancellable async resolver).
SIGTERM must end `postern serve` within 10 s (conftest.Postern.stop). After 300 connections from
127.0.0.10-15 whose reverse lookups hang (the system resolver does not answer: here a UDP socket on
127.0.0.99:53 that never replies, bind-mounted as /etc/resolv.conf in a private mount namespace
of the server only), the clients are gone, yet the exit waits in worker_pool_free() for every
queued getnameinfo() of those sessions, 5 s per attempt each.
"""
import os
import socket
import stat
import time

import pytest

from faultlib import still_serves

SOURCES = ["127.0.0.%d" % i for i in range(10, 16)]


@pytest.mark.parametrize("n", [0, 300])   # 0: the control, the wrapper itself is fine
def test_sigterm_not_held_by_pending_reverse_lookups(postern_factory, tmp_path, n):
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.99", 53))          # receives queries, answers none
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.99\noptions timeout:5 attempts:2\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(conf, 0o644)
    p = postern_factory(limits={"max_connections_per_ip": "100", "max_connections": "1000"},
                        start=False)
    wrapper = tmp_path / "postern-blackhole-dns"
    wrapper.write_text("#!/bin/sh\nexec unshare -m sh -c 'mount --bind %s /etc/resolv.conf && "
                       "exec \"$0\" \"$@\"' %s \"$@\"\n" % (conf, p.bin))
    os.chmod(wrapper, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    p.bin = str(wrapper)
    p.start()
    try:
        socks = []
        for i in range(n):
            s = socket.socket()
            s.bind((SOURCES[i % len(SOURCES)], 0))
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", p.smtp_port))
            socks.append(s)
        time.sleep(2)
        for s in socks:
            s.close()
        time.sleep(0.5)
        still_serves(p)
        t0 = time.monotonic()
        rc = p.stop(timeout=10)   # raises if the exit takes longer
        assert rc == 0
        assert time.monotonic() - t0 < 10
    finally:
        hole.close()
