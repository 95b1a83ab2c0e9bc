"""
Postfix as a real remote MTA (issue 4): a private Postfix instance (its own config directory,
queue and data directory, on 127.0.0.9 at a high port; never the system's Postfix service)
receives from Postern's outbound agent through the private test DNS, and relays mail for
Postern's domain to Postern. Mail from Postern arrives in Postfix's Maildir (over STARTTLS and
BDAT, which Postfix offers), a 5xx from Postfix comes back as a DSN, and mail from Postfix
arrives in Postern's Maildir.

Skipped only when postfix is not installed (scripts/deps.sh check installs it).
"""
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import sys
import time

import pytest

from conftest import DOMAIN, ROOT, finish, free_port_on, header
from test_bounce import wait_bounces
from test_outbound import dsn_parts, outbound_server, submit_to, wait_gone, wait_until

sys.path.insert(0, os.path.join(ROOT, "tests", "dns"))
from testdns import DNSServer  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("postfix") is None, reason="postfix is not installed")

A = "a@" + DOMAIN
PF_HOST = "127.0.0.9"
HEAD = "$TTL 60\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 127.0.0.1\n"
ZONES = {"pf.test": HEAD + "@ MX 10 mx\nmx A %s\n" % PF_HOST}

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PrivatePostfix:
    """Postfix with everything under `d`: `postfix -c ETC start/stop`, never the system instance.
    pf.test is its virtual mailbox domain (bob@pf.test exists); mail for example.test goes to
    Postern at 127.0.0.1:postern_port."""

    def __init__(self, d, port, postern_port, cert, key):
        self.dir, self.port = d, port
        self.etc = os.path.join(d, "etc")
        self.queue = os.path.join(d, "queue")
        self.data = os.path.join(d, "data")
        self.mail = os.path.join(d, "mail")
        for x in (self.etc, self.queue, self.data, self.mail):
            os.makedirs(x)
        os.chmod(d, 0o755)
        nobody = pwd.getpwnam("nobody")
        pf = pwd.getpwnam("postfix")
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        shutil.copy(cert, os.path.join(self.etc, "cert.pem"))
        shutil.copy(key, os.path.join(self.etc, "key.pem"))
        os.chmod(os.path.join(self.etc, "key.pem"), 0o600)
        with open(os.path.join(self.etc, "vmailbox"), "w") as f:
            f.write("bob@pf.test pf.test/bob/\n")
        with open(os.path.join(self.etc, "transport"), "w") as f:
            f.write("%s smtp:[127.0.0.1]:%d\n" % (DOMAIN, postern_port))
        self.log = os.path.join(d, "postfix.log")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            # smtpd listens on PF_HOST (master.cf); this must be an interface address
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "mx.pf.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": "",
            "relay_domains": DOMAIN,
            "transport_maps": "texthash:%s/transport" % self.etc,
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "virtual_mailbox_domains": "pf.test",
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": "texthash:%s/vmailbox" % self.etc,
            "virtual_uid_maps": "static:%d" % nobody.pw_uid,
            "virtual_gid_maps": "static:%d" % nobody.pw_gid,
            "virtual_minimum_uid": "1",
            "maillog_file": self.log,
            "maillog_file_prefixes": d,
            "smtpd_banner": "$myhostname ESMTP",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "smtputf8_enable": "yes",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": os.path.join(self.etc, "cert.pem"),
            "smtpd_tls_key_file": os.path.join(self.etc, "key.pem"),
            "smtp_tls_security_level": "none",
            # the test is quick: no 1 s+ waits between Postfix's internal steps
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            for k, v in main.items():
                f.write("%s = %s\n" % (k, v))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen="%s:%d" % (PF_HOST, port)))
        self.started = False

    def start(self):
        r = subprocess.run(["postfix", "-c", self.etc, "start"], capture_output=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("postfix start: %s%s" % (r.stdout.decode(), r.stderr.decode()))
        self.started = True
        deadline = time.monotonic() + 30
        while not listening_on(PF_HOST, self.port):
            if time.monotonic() > deadline:
                raise AssertionError("private postfix not listening:\n" + self.log_text())
            time.sleep(0.1)
        return self

    def stop(self):
        if self.started:
            subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True, timeout=120)
            self.started = False

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def maildir(self, local):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.mail, "pf.test", local, sub)
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    with open(os.path.join(d, name), "rb") as f:
                        out.append(f.read())
        return out


def listening_on(host, port):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture(scope="module")
def pf_dns(tmp_path_factory):
    d = DNSServer(tmp_path_factory.mktemp("pfdns"), zones=ZONES)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def pair(postern_factory, pf_dns):
    """(postern, postfix): Postern's remote_port is Postfix's port; Postfix relays
    example.test to Postern's SMTP port."""
    if os.geteuid() != 0:
        pytest.fail("the private Postfix must be started as root")
    port = free_port_on([PF_HOST])
    p = outbound_server(postern_factory, pf_dns, port, start=False)
    d = os.path.join(p.dir, "postfix")
    pf = PrivatePostfix(d, port, p.smtp_port, os.path.join(p.data_dir, "tls", "cert.pem"),
                        os.path.join(p.data_dir, "tls", "key.pem"))
    p.start()
    pf.start()
    try:
        yield p, pf
    finally:
        pf.stop()
        finish(p)


def test_postern_to_postfix(pair):
    p, pf = pair
    qid = submit_to(p, ["bob@pf.test"], "to postfix")
    wait_until(lambda: pf.maildir("bob"), 30, "the message in Postfix's Maildir; postfix log:\n"
               + pf.log_text()[-3000:])
    m = pf.maildir("bob")[0]
    assert header(m, "Subject") == ["to postfix"]
    received = header(m, "Received")
    # Postfix's own trace on top (with TLS), then Postern's
    assert "mx.pf.test" in received[0] and "ESMTPS" in received[0], received
    assert any("(Postern)" in r for r in received[1:]), received
    wait_gone(p, qid)
    log = p.log()
    assert "event=delivered_remote queue_id=%s to=bob@pf.test relay=mx.pf.test[%s] tls=yes" \
        % (qid, PF_HOST) in log
    # Postfix offers CHUNKING: the message went as BDAT (Postfix counts the commands)
    wait_until(lambda: "bdat=1" in pf.log_text(), 10, "Postfix's command counts")
    assert "starttls=1" in pf.log_text()


def test_postfix_rejects_unknown_user(pair):
    p, pf = pair
    qid = submit_to(p, ["nobody-here@pf.test"], "unknown at postfix")
    b = wait_bounces(p, "Undelivered Mail")[0]
    _, _, rcpts, _ = dsn_parts(b)
    assert [r["status"] for r in rcpts] == ["5.1.1"]
    assert rcpts[0]["remote-mta"] == "dns; mx.pf.test[%s]" % PF_HOST
    assert "550 5.1.1" in rcpts[0]["diagnostic-code"]
    wait_gone(p, qid)


def test_postfix_to_postern(pair):
    p, pf = pair
    s = smtplib.SMTP(PF_HOST, pf.port, timeout=15)
    try:
        s.ehlo("client.pf.test")
        msg = ("From: <someone@pf.test>\r\nTo: <%s>\r\nSubject: from postfix\r\n"
               "Message-ID: <frompostfix@pf.test>\r\n\r\nhello from postfix\r\n" % A)
        s.sendmail("someone@pf.test", [A], msg.encode())
    finally:
        s.quit()
    msgs = p.wait_for_delivery(A, 1, timeout=30)
    assert b"hello from postfix" in msgs[0]
    received = header(msgs[0], "Received")
    # Postern's trace names Postfix as the client; Postfix's is below it
    assert "mx.pf.test" in received[0] and "(Postern)" in received[0], received
    assert any("by mx.pf.test" in r for r in received[1:]), received
    # Postern delivers local mail before its 250, so the message can be in the
    # Maildir before Postfix has read the reply and logged it
    wait_until(lambda: "status=sent" in pf.log_text(), 10, "Postfix's status=sent")
