"""
Integration test harness: starts the real `postern` binary on free
127.0.0.1 ports with a private data directory, and gives tests helpers to
talk SMTP to it and to look into its Maildirs.

The binary is $POSTERN_BIN, else build-tests/postern, else build/postern.
Nothing here talks to anything but 127.0.0.0/8; every wait is bounded.
"""
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "correct horse battery"
DOMAIN = "example.test"
HOSTNAME = "mx.example.test"
CLIENT_NAME = "client.example.test"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test (load, kill -9); deselect with -m 'not slow'")


def postern_bin():
    env = os.environ.get("POSTERN_BIN")
    if env:
        return env
    for d in ("build-tests", "build-check", "build"):
        p = os.path.join(ROOT, d, "postern")
        if os.access(p, os.X_OK):
            return p
    pytest.exit("postern binary not found: build it or set POSTERN_BIN", returncode=2)


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (bind to port 0, keep all open until done)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def listening(port):
    """True if something listens on 127.0.0.1:port (read from /proc, no connection made)."""
    want_local = {"0100007F:%04X" % port, "00000000:%04X" % port}
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1] in want_local and fields[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def tls_client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Reply:
    """One SMTP reply: code and the text lines (without the code)."""

    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def text(self):
        return "\n".join(self.lines)

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class RawSMTP:
    """A plain socket speaking SMTP by hand, for tests that need exact bytes on the wire."""

    def __init__(self, port, source=None, timeout=10.0, tls=False):
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        if tls:
            self.sock = tls_client_context().wrap_socket(self.sock)
        self.buf = b""
        self.timeout = timeout

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by server")
        self.buf += data

    def readline(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete reply line")
            self._fill(left)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self, timeout=None):
        lines = []
        while True:
            line = self.readline(timeout)
            m = re.match(r"^(\d{3})([ -])(.*)$", line)
            assert m, "malformed reply line %r" % line
            lines.append(m.group(3))
            if m.group(2) == " ":
                return Reply(int(m.group(1)), lines)

    def replies_until_quiet(self, quiet=1.5, limit=50):
        """Every reply that arrives until nothing more comes for `quiet` seconds (or EOF)."""
        out = []
        for _ in range(limit):
            try:
                out.append(self.reply(timeout=quiet))
            except (socket.timeout, TimeoutError, EOFError, ConnectionError):
                break
        return out

    def closed_by_peer(self, timeout=3.0):
        """True if the server closes the connection within `timeout` (data before EOF is ignored)."""
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


class Postern:
    """One running Postern instance with its own data directory and ports."""

    def __init__(self, tmpdir, limits=None, extra=None, users=("a", "b", "c")):
        self.bin = postern_bin()
        self.dir = tmpdir
        self.data_dir = os.path.join(tmpdir, "data")
        self.conf = os.path.join(tmpdir, "postern.conf")
        self.stderr_path = os.path.join(tmpdir, "stderr.log")
        (self.smtp_port, self.submission_port, self.submissions_port, self.imap_port,
         self.imaps_port, self.pop3_port, self.pop3s_port) = free_ports(7)
        self.limits = dict(limits or {})
        self.extra = dict(extra or {})
        self.proc = None
        self.stderr_file = None
        self.clients = []
        self.write_config()
        self.must("init")
        self.must("domain", "add", DOMAIN)
        for u in users:
            self.add_user("%s@%s" % (u, DOMAIN))

    # ---- configuration and CLI ----

    def write_config(self, limits=None, extra=None):
        if limits is not None:
            self.limits = dict(limits)
        if extra is not None:
            self.extra = dict(extra)
        sections = {
            "server": {"hostname": HOSTNAME, "data_dir": self.data_dir, "log_level": "debug"},
            "listen": {
                "smtp": "127.0.0.1:%d" % self.smtp_port,
                "submission": "127.0.0.1:%d" % self.submission_port,
                "submissions": "127.0.0.1:%d" % self.submissions_port,
                "imap": "127.0.0.1:%d" % self.imap_port,
                "imaps": "127.0.0.1:%d" % self.imaps_port,
                "pop3": "127.0.0.1:%d" % self.pop3_port,
                "pop3s": "127.0.0.1:%d" % self.pop3s_port,
            },
            "relay": {"trusted_networks": "127.0.0.2/32"},
            "limits": dict(self.limits),
            # outbound delivery resolves through the private test DNS, never the real network
            "dns": {"resolver": test_dns().resolver},
        }
        for sec, kv in self.extra.items():
            sections.setdefault(sec, {}).update(kv)
        with open(self.conf + ".tmp", "w") as f:
            for sec, kv in sections.items():
                if not kv:
                    continue
                f.write("[%s]\n" % sec)
                for k, v in kv.items():
                    f.write("%s = %s\n" % (k, v))
                f.write("\n")
        os.rename(self.conf + ".tmp", self.conf)

    def cli(self, *args, input=None, timeout=60, env=None):
        e = dict(os.environ)
        e.pop("POSTERN_CONFIG", None)
        if env:
            e.update(env)
        return subprocess.run(
            [self.bin, "-c", self.conf] + [str(a) for a in args],
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True,
            timeout=timeout,
            env=e,
            cwd=self.dir,
        )

    def must(self, *args, input=None):
        r = self.cli(*args, input=input)
        assert r.returncode == 0, "postern %s failed (%d): %s %s" % (
            " ".join(map(str, args)), r.returncode, r.stdout.decode(errors="replace"),
            r.stderr.decode(errors="replace"))
        check_sanitizers(r.stderr.decode(errors="replace"), "postern " + " ".join(map(str, args)))
        return r

    def add_user(self, address, password=PASSWORD, quota=None):
        args = ["user", "add", address, "--password-stdin"]
        if quota is not None:
            args += ["--quota", quota]
        return self.must(*args, input=password + "\n")

    # ---- the daemon ----

    def start(self, timeout=20):
        assert self.proc is None
        self.stderr_file = open(self.stderr_path, "ab")
        env = dict(os.environ)
        env.pop("POSTERN_CONFIG", None)
        self.proc = subprocess.Popen(
            [self.bin, "-c", self.conf, "serve"],
            stdin=subprocess.DEVNULL,
            stdout=self.stderr_file,
            stderr=self.stderr_file,
            cwd=self.dir,
            env=env,
        )
        deadline = time.monotonic() + timeout
        ports = [self.smtp_port, self.submission_port, self.submissions_port]
        while not all(listening(p) for p in ports):
            if self.proc.poll() is not None:
                raise AssertionError(
                    "postern serve exited with %d during startup:\n%s" % (self.proc.returncode, self.stderr())
                )
            if time.monotonic() > deadline:
                raise AssertionError("postern serve did not listen within %ds:\n%s" % (timeout, self.stderr()))
            time.sleep(0.05)
        return self

    def close_clients(self):
        for c in self.clients:
            try:
                if isinstance(c, smtplib.SMTP):
                    c.close()
                else:
                    c.close()
            except Exception:
                pass
        self.clients = []

    def stop(self, timeout=10):
        """SIGTERM; the server must exit 0 within `timeout` seconds. Returns the exit code."""
        self.close_clients()
        if self.proc is None:
            return 0
        early = self.proc.poll()
        if early is not None:
            self.proc = None
            self.stderr_file.close()
            raise AssertionError("postern serve had already exited (rc %d) before SIGTERM" % early)
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
            raise AssertionError("postern serve did not exit within %ds of SIGTERM" % timeout)
        self.proc = None
        self.stderr_file.close()
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        self.stderr_file.close()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log(self):
        """Everything the server logged (stderr, which carries every log line)."""
        return self.stderr()

    def log_file(self):
        p = os.path.join(self.data_dir, "log", "postern.log")
        try:
            with open(p, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # ---- clients ----

    def port(self, name):
        return {"smtp": self.smtp_port, "submission": self.submission_port,
                "submissions": self.submissions_port, "imap": self.imap_port,
                "imaps": self.imaps_port, "pop3": self.pop3_port,
                "pop3s": self.pop3s_port}[name]

    def smtp(self, port=None, source=None, timeout=15):
        """smtplib client on `port` (default: the smtp listener), optionally from 127.0.0.x."""
        port = port or self.smtp_port
        kw = dict(local_hostname=CLIENT_NAME, timeout=timeout)
        if source:
            kw["source_address"] = (source, 0)
        if port == self.submissions_port:
            c = smtplib.SMTP_SSL("127.0.0.1", port, context=tls_client_context(), **kw)
        else:
            c = smtplib.SMTP("127.0.0.1", port, **kw)
        self.clients.append(c)
        return c

    def submit(self, user="a@" + DOMAIN, password=PASSWORD, port=None):
        """An authenticated smtplib session on submission (STARTTLS) or submissions."""
        port = port or self.submission_port
        c = self.smtp(port)
        c.ehlo()
        if port != self.submissions_port:
            c.starttls(context=tls_client_context())
            c.ehlo()
        c.login(user, password)
        return c

    def raw(self, port=None, source=None, timeout=10.0, tls=None, greeting=True):
        port = port or self.smtp_port
        if tls is None:
            tls = port == self.submissions_port
        r = RawSMTP(port, source=source, timeout=timeout, tls=tls)
        self.clients.append(r)
        if greeting:
            g = r.reply()
            assert g.code == 220, g
        return r

    # ---- mailboxes and queue ----

    def maildir_path(self, address, folder=""):
        local, domain = address.rsplit("@", 1)
        p = os.path.join(self.data_dir, "mail", domain.lower(), local.lower())
        if folder:
            p = os.path.join(p, "." + folder)
        return p

    def maildir_files(self, address, folder="", subdirs=("new", "cur")):
        base = self.maildir_path(address, folder)
        out = []
        for sub in subdirs:
            d = os.path.join(base, sub)
            try:
                names = sorted(os.listdir(d))
            except FileNotFoundError:
                continue
            out.extend(os.path.join(d, n) for n in names)
        return out

    def maildir(self, address, folder=""):
        """Every message (bytes) in new/ and cur/ of the account's folder."""
        msgs = []
        for p in self.maildir_files(address, folder):
            try:
                with open(p, "rb") as f:
                    msgs.append(f.read())
            except FileNotFoundError:
                pass
        return msgs

    def wait_for_delivery(self, address, n, timeout=15):
        """Wait until the mailbox holds at least n messages; returns them (fails on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.maildir(address)
            if len(msgs) >= n:
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError(
                    "%s has %d message(s), expected %d within %ss" % (address, len(msgs), n, timeout)
                )
            time.sleep(0.05)

    def wait_for_usage(self, address, timeout=15):
        """Wait until the account's quota usage counts every stored message (the counter is
        updated just after the files appear); returns the usage in bytes."""
        import json
        deadline = time.monotonic() + timeout
        while True:
            stored = sum(len(m) for m in self.maildir(address))
            users = json.loads(self.must("user", "list", "--json").stdout)
            used = [u["used"] for u in users if u["address"] == address][0]
            if used >= stored:
                return used
            if time.monotonic() > deadline:
                raise AssertionError("%s: usage %d, stored %d" % (address, used, stored))
            time.sleep(0.05)

    def spool_files(self):
        d = os.path.join(self.data_dir, "spool")
        try:
            return sorted(n for n in os.listdir(d) if os.path.isfile(os.path.join(d, n)))
        except FileNotFoundError:
            return []

    def spool_tmp_files(self):
        d = os.path.join(self.data_dir, "spool", "tmp")
        try:
            return sorted(os.listdir(d))
        except FileNotFoundError:
            return []


def check_sanitizers(text, what):
    for marker in SANITIZER_MARKERS:
        if marker in text:
            i = text.index(marker)
            pytest.fail("%s: sanitizer report:\n%s" % (what, text[max(0, i - 2000): i + 6000]))


def finish(p, expect_clean_exit=True):
    """Stop a Postern (if running) and check the exit code and stderr."""
    rc = 0
    err = None
    try:
        rc = p.stop()
    except AssertionError as e:
        err = e
    text = p.stderr()
    check_sanitizers(text, "postern serve")
    if err:
        raise err
    if expect_clean_exit:
        assert rc == 0, "postern serve exited with %d after SIGTERM; stderr tail:\n%s" % (rc, text[-4000:])


_BASE = []


def base_dir():
    """One directory per test run for every instance. World-traversable (0755), because run as
    root the server drops to the service user, who must reach its data directory; pytest's own
    temp dirs are 0700."""
    if not _BASE:
        d = tempfile.mkdtemp(prefix="postern-tests-")
        os.chmod(d, 0o755)
        _BASE.append(d)
    return _BASE[0]


# ---- the session's private DNS server, for outbound delivery ----

_DNS = []
# Default zones: the remote domains the tests send to have no mail server, so mail for them
# stays deferred in the queue (a test that wants delivery starts its own DNS with
# MX records pointing at a Sink and passes extra={"dns": {"resolver": ...}}).
DEFAULT_ZONES = {
    "remote.test": "$ORIGIN remote.test.\n$TTL 300\n"
                   "@ SOA ns.remote.test. hostmaster.remote.test. 1 3600 600 86400 60\n"
                   "@ NS ns.remote.test.\nns A 127.0.0.1\n",
}


def test_dns():
    """The session-wide DNSServer (tests/dns/testdns.py), started on first use."""
    if not _DNS:
        import sys
        sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
        from testdns import DNSServer
        d = tempfile.mkdtemp(prefix="dns-", dir=base_dir())
        _DNS.append(DNSServer(d, zones=DEFAULT_ZONES).start())
    return _DNS[0]


test_dns.__test__ = False  # a helper, not a test


# ---- a scripted SMTP receiver (aiosmtpd) for outbound tests ----

class Sink:
    """An aiosmtpd server on 127.0.0.x:port that records what it receives. The recipient's
    local part scripts the answer: reject* -> 550 5.1.1, deferN* -> 450 4.2.0 for the first N
    RCPTs of that address (defer99 = always), stall* -> DATA hangs until released, anything
    else -> accepted. With tls_cert/tls_key it offers STARTTLS."""

    def __init__(self, host, port, tls_cert=None, tls_key=None, name="sink", dsn=False,
                 implicit_tls=False, auth=None):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP
        self.host, self.port, self.name = host, port, name
        self.messages = []      # dicts: mail_from, rcpt_tos, content, mail_options, rcpt_options, tls
        self.rcpt_seen = {}     # address -> RCPT count
        self.stalled = []       # addresses whose DATA is stalling
        self.release = False
        self.ehlos = 0          # EHLO commands seen (two per STARTTLS session)
        self.dsn = dsn          # offer DSN (RFC 3461) and record its parameters
        self.dsn_params = []    # (command, [params]) of MAIL/RCPT
        self.auth_ok = []       # logins that succeeded (auth=(user, password) offers AUTH)
        ctx = None
        if tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(tls_cert, tls_key)
        sink = self

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                sink.ehlos += 1
                session.host_name = hostname
                if sink.dsn:
                    responses.insert(len(responses) - 1, "250-DSN")
                return responses

            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                local = address.split("@")[0].lower()
                n = sink.rcpt_seen.get(address, 0)
                sink.rcpt_seen[address] = n + 1
                if local.startswith("reject"):
                    return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
                m = re.match(r"defer(\d+)", local)
                if m and n < int(m.group(1)):
                    return "450 4.2.0 <%s>: try again later (%d)" % (address, n + 1)
                envelope.rcpt_tos.append(address)
                envelope.rcpt_options.extend(rcpt_options)
                return "250 2.1.5 Ok"

            async def handle_DATA(self, server, session, envelope):
                import asyncio
                stall = [r for r in envelope.rcpt_tos if r.split("@")[0].lower().startswith("stall")]
                if stall and not sink.release:
                    sink.stalled.extend(stall)
                    for _ in range(400):
                        if sink.release:
                            break
                        await asyncio.sleep(0.05)
                    return "451 4.3.0 stalled"
                sink.messages.append({
                    "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                    "content": envelope.original_content or envelope.content,
                    "mail_options": list(envelope.mail_options),
                    "rcpt_options": list(envelope.rcpt_options),
                    "tls": session.ssl is not None,
                })
                return "250 2.0.0 Ok: queued as %s%d" % (sink.name, len(sink.messages))

        class DSNSMTP(SMTP):
            """aiosmtpd knows no DSN parameters: record them and pass the rest on."""

            def _take_dsn(self, cmd, arg, names):
                if not sink.dsn or arg is None:
                    return arg
                words = arg.split(" ")
                keep = [w for w in words if w.split("=")[0].upper() not in names]
                sink.dsn_params.append((cmd, [w for w in words if w not in keep]))
                return " ".join(keep)

            async def smtp_MAIL(self, arg):
                return await super().smtp_MAIL(self._take_dsn("MAIL", arg, ("RET", "ENVID")))

            async def smtp_RCPT(self, arg):
                return await super().smtp_RCPT(self._take_dsn("RCPT", arg, ("NOTIFY", "ORCPT")))

        kw = dict(hostname=host, port=port, server_hostname="%s.sink.test" % name,
                  decode_data=False, enable_SMTPUTF8=True)
        if ctx is not None and implicit_tls:
            kw.update(ssl_context=ctx)
        elif ctx is not None:
            kw.update(tls_context=ctx, require_starttls=False)
        if auth is not None:
            from aiosmtpd.smtp import AuthResult

            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = (auth_data.login.decode(), auth_data.password.decode()) == tuple(auth)
                if ok:
                    sink.auth_ok.append(auth_data.login.decode())
                return AuthResult(success=ok)

            kw.update(authenticator=authenticator, auth_require_tls=True, auth_required=False)

        class DSNController(Controller):
            def factory(self):
                return DSNSMTP(self.handler, **self.SMTP_kwargs)

        self.controller = DSNController(Handler(), **kw)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        try:
            self.controller.stop()
        except Exception:
            pass

    def wait(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            if time.monotonic() > deadline:
                raise AssertionError("%s got %d message(s), expected %d within %ss"
                                     % (self.name, len(self.messages), n, timeout))
            time.sleep(0.05)
        return self.messages


def free_port_on(hosts):
    """A TCP port free on every 127.0.0.x address in `hosts`."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for h in hosts:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.bind((h, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise RuntimeError("no common free port")


def pytest_sessionfinish(session, exitstatus):
    for d in _DNS:
        d.stop()
    if _BASE:
        if session.testsfailed == 0:
            shutil.rmtree(_BASE[0], ignore_errors=True)
        else:
            print("\npostern test instances kept in %s" % _BASE[0])


def _make(tmp_path_factory, name, **kw):
    d = tempfile.mkdtemp(prefix="%s-" % name, dir=base_dir())
    os.chmod(d, 0o755)
    return Postern(d, **kw)


GENEROUS = {"messages_per_ip_per_minute": "1000000", "max_connections_per_ip": "200"}


@pytest.fixture
def postern_factory(tmp_path_factory):
    """Function-scoped: make(limits=..., extra=..., start=True) -> a running Postern, stopped after the test."""
    made = []

    def make(limits=None, extra=None, start=True, users=("a", "b", "c")):
        lim = dict(GENEROUS)
        lim.update(limits or {})
        p = _make(tmp_path_factory, "t", limits=lim, extra=extra, users=users)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    errors = []
    for p in made:
        try:
            finish(p)
        except BaseException as e:  # report every instance's problems
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A module-scoped running Postern with users a, b, c @example.test and generous rate limits."""
    p = _make(tmp_path_factory, "m", limits=dict(GENEROUS))
    p.start()
    yield p
    finish(p)


@pytest.fixture(autouse=True)
def _close_clients_after_test(request):
    yield
    for name in ("server",):
        if name in request.fixturenames:
            request.getfixturevalue(name).close_clients()


def send(c, sender, rcpts, body, mail_options=(), rcpt_options=()):
    """MAIL/RCPT/DATA on an smtplib connection; returns the (code, text) of the DATA reply.
    Asserts that MAIL and every RCPT were accepted."""
    c.ehlo_or_helo_if_needed()
    code, msg = c.mail(sender, list(mail_options))
    assert code == 250, (code, msg)
    for r in rcpts if isinstance(rcpts, (list, tuple)) else [rcpts]:
        code, msg = c.rcpt(r, list(rcpt_options))
        assert code == 250, (r, code, msg)
    code, msg = c.data(body)
    return code, msg.decode("utf-8", "replace")


QUEUED_RE = re.compile(r"^2\.0\.0 .*queued as ([A-Za-z0-9]+)")


def queue_id_of(text):
    m = QUEUED_RE.match(text)
    assert m, "DATA reply does not say 'queued as ID': %r" % text
    return m.group(1)


def make_message(subject, body="hello\r\n", sender="sender@remote.test", to="a@example.test",
                 extra_headers=""):
    return (
        "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@test>\r\n%s\r\n%s"
        % (sender, to, subject, re.sub(r"[^A-Za-z0-9.-]", "", subject) or "x", extra_headers, body)
    ).encode()


def headers_of(msg):
    """The header block of a delivered message as a list of unfolded (name, value) pairs."""
    head = msg.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in msg else msg.split(b"\n\n", 1)[0]
    lines = re.split(rb"\r?\n", head)
    out = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip().decode("utf-8", "replace"))
        elif b":" in line:
            k, v = line.split(b":", 1)
            out.append((k.decode("utf-8", "replace"), v.strip().decode("utf-8", "replace")))
    return out


def header(msg, name):
    vals = [v for k, v in headers_of(msg) if k.lower() == name.lower()]
    return vals


def have(cmd):
    return shutil.which(cmd) is not None


def dribble_until_closed(port, n=5, closed_marker=b"", limit=10.0, greeting=b""):
    """n connections to port that each send one byte every half second of a line that never
    ends, until the server closes them (EOF, an error, or a reply containing closed_marker).
    Returns (how many were closed, seconds it took)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert s.recv(4096).startswith(greeting)
        socks.append(s)
    start = time.time()
    closed = set()
    try:
        while time.time() - start < limit and len(closed) < len(socks):
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    s.sendall(b"x")
                except OSError:
                    closed.add(i)
                    continue
                s.settimeout(0.01)
                try:
                    d = s.recv(4096)
                    if d == b"" or (closed_marker and closed_marker in d):
                        closed.add(i)
                except socket.timeout:
                    pass
                except OSError:
                    closed.add(i)
            time.sleep(0.5)
    finally:
        for s in socks:
            s.close()
    return len(closed), time.time() - start


def recv_line(sock, buf):
    """The next CRLF-ended line from sock (without the CRLF), after what buf already holds:
    (line, what came after it)."""
    while b"\r\n" not in buf:
        data = sock.recv(4096)
        assert data, "connection closed"
        buf += data
    line, rest = buf.split(b"\r\n", 1)
    return line, rest


def rss_kib(pid):
    """VmRSS of a process in KiB, from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def is_asan(pid):
    """Whether the process runs an AddressSanitizer build."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()
