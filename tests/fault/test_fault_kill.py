"""
kill -9 during a mixed load with outbound delivery (issue 6 item 2; issue 2 item 7): clients
send messages for local accounts, for a remote domain whose MX is a scripted receiver (a Sink
on 127.0.0.2, found through the private test DNS), and for both; the server is killed at a
moment when messages are in every stage; after the restart every acknowledged message is in its
mailbox exactly once and accepted by the sink exactly once.
"""
import os
import re
import sys
import threading
import time

from conftest import (DOMAIN, ROOT, RawSMTP, Sink, finish, free_port_on, make_message)

sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
from testdns import DNSServer  # noqa: E402

HEAD = "$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1\n"
ZONES = {"sink.test": HEAD + "@ MX 10 mx\nmx A 127.0.0.2\n"}
TRUSTED = "127.0.0.2"          # conftest's trusted_networks: may relay
LOCAL = ["a@" + DOMAIN, "b@" + DOMAIN]
TOTAL = 3000
KILL_AFTER = 60
THREADS = 4
TOKEN_RE = re.compile(rb"Subject: (k9-\d{5})")


class Load:
    def __init__(self, p):
        self.p = p
        self.lock = threading.Lock()
        self.next = 0
        self.acked = {}
        self.stop = threading.Event()

    def rcpts(self, i):
        kind = i % 3
        if kind == 0:
            return [LOCAL[i % 2]]
        if kind == 1:
            return ["r%d@sink.test" % i]
        return [LOCAL[i % 2], "r%d@sink.test" % i]

    def take(self):
        with self.lock:
            if self.next >= TOTAL or self.stop.is_set():
                return None
            self.next += 1
            return self.next - 1

    def worker(self):
        while not self.stop.is_set():
            try:
                c = RawSMTP(self.p.smtp_port, source=TRUSTED, timeout=10)
            except OSError:
                return
            try:
                if c.reply().code != 220 or c.cmd("EHLO load.example.test").code != 250:
                    return
                for _ in range(10):
                    i = self.take()
                    if i is None:
                        return
                    token = "k9-%05d" % i
                    rc = self.rcpts(i)
                    if c.cmd("MAIL FROM:<load@remote.test>").code != 250:
                        return
                    for r in rc:
                        if c.cmd("RCPT TO:<%s>" % r).code != 250:
                            return
                    if c.cmd("DATA").code != 354:
                        return
                    body = ("%s line\r\n" % token) * (1 + i % 50)
                    c.send(make_message(token, body=body) + b".\r\n")
                    if c.reply().code != 250:
                        return
                    with self.lock:
                        self.acked[token] = rc
                c.cmd("QUIT")
            except (OSError, EOFError, AssertionError):
                return
            finally:
                c.close()


def tokens_in(msgs):
    out = []
    for m in msgs:
        mm = TOKEN_RE.search(m)
        if mm:
            out.append(mm.group(1).decode())
    return out


def test_kill9_mixed_load_with_outbound(tmp_path_factory, postern_factory):
    dns = DNSServer(str(tmp_path_factory.mktemp("k9dns")), zones=ZONES).start()
    port = free_port_on([TRUSTED])
    sink = Sink(TRUSTED, port, name="mx").start()
    p = None
    try:
        p = postern_factory(extra={"dns": {"resolver": dns.resolver},
                                   "queue": {"remote_port": str(port), "retry_min": "1s",
                                             "retry_max": "2s", "connect_timeout": "3s",
                                             "command_timeout": "10s"}})
        load = Load(p)
        seen_at = {}   # token -> when the sink was first seen holding it (polled every 10 ms)
        polling = threading.Event()

        def poll():
            while not polling.is_set():
                now = time.monotonic()
                for t in tokens_in([m["content"] for m in list(sink.messages)]):
                    seen_at.setdefault(t, now)
                time.sleep(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        threads = [threading.Thread(target=load.worker, daemon=True) for _ in range(THREADS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while (len(load.acked) < KILL_AFTER or len(sink.messages) < 10) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(load.acked) >= KILL_AFTER and sink.messages, "the load did not get going"
        # what the sink accepted a second before the kill the server has had time to record:
        # sending any of it again is a duplicate the server could have avoided. A message the
        # sink accepted in the last moment before the kill may come again (RFC 1047: the
        # sender cannot know its 250 arrived); at most one per outbound connection.
        early = set(tokens_in([m["content"] for m in list(sink.messages)]))
        time.sleep(1.0)
        p.kill9()
        killed_at = time.monotonic()
        polling.set()
        poller.join(timeout=10)
        at_kill = tokens_in([m["content"] for m in list(sink.messages)])
        load.stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        acked = dict(load.acked)
        assert len(acked) < TOTAL, "the kill came after the load was over"
        p.start()

        want_local = {a: set() for a in LOCAL}
        want_remote = set()
        for token, rc in acked.items():
            for r in rc:
                if r.endswith("@sink.test"):
                    want_remote.add(token)
                else:
                    want_local[r].add(token)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            have_local = {a: set(tokens_in(p.maildir(a))) for a in LOCAL}
            have_remote = set(tokens_in([m["content"] for m in list(sink.messages)]))
            if all(want_local[a] <= have_local[a] for a in LOCAL) and want_remote <= have_remote:
                break
            time.sleep(0.3)
        time.sleep(2.0)  # let a duplicate show up
        for a in LOCAL:
            got = tokens_in(p.maildir(a))
            missing = want_local[a] - set(got)
            assert not missing, "%s lost acknowledged messages: %s" % (a, sorted(missing)[:10])
            dups = sorted(t for t in set(got) if got.count(t) > 1)
            assert not dups, "%s got duplicates: %s" % (a, dups[:10])
        got = tokens_in([m["content"] for m in list(sink.messages)])
        missing = want_remote - set(got)
        assert not missing, "the sink never got acknowledged messages: %s" % sorted(missing)[:10]
        all_dups = sorted(t for t in set(got) if got.count(t) > 1)
        dups = [t for t in all_dups if t in early]
        assert len(all_dups) <= 20, "more duplicates than outbound workers: %s" % all_dups
        dups_before = sorted(t for t in set(at_kill) if at_kill.count(t) > 1)
        assert not dups, ("the sink accepted these more than once: %s (%d of %d accepted before "
                          "the kill; already duplicated then: %s)"
                          % (dups[:10], len(at_kill), len(got), dups_before[:10]))
        # and the queue drained: nothing acknowledged is left behind
        deadline = time.monotonic() + 30
        while p.spool_files() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert p.spool_files() == [], "queue not drained: %r" % p.spool_files()[:5]
        ages = ["%.3f" % (killed_at - seen_at[t]) for t in all_dups if t in seen_at]
        print("acked %d (local %d, remote %d) before the kill; sink duplicates of messages "
              "accepted in the last second before it: %d, accepted that many s before the "
              "kill: %s" % (len(acked), sum(len(v) for v in want_local.values()),
                            len(want_remote), len(all_dups), ages))
    finally:
        if p is not None:
            finish(p)
        sink.stop()
        dns.stop()
