"""
Malformed input on the IMAP and POP3 listeners (issue 6 item 2): the SMTP fault corpus and a set of
IMAP-specific attacks (huge literal announcements, deep nesting, enormous sequence sets and SEARCH
programs, section paths thousands of parts deep, NULs and broken UTF-8 in mailbox names), sent
before login and after login. Each gets error replies or a close, never a crash (ASan checks the
server at the end), and a well-behaved client is still served afterwards.
"""
import glob
import imaplib
import os
import socket
import time

from conftest import DOMAIN, PASSWORD, make_message, send, tls_client_context

CORPUS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "corpus", "*.*")))
USER = "a@" + DOMAIN

IMAP_ATTACKS = [
    b"a LOGIN {4294967295}\r\n",
    b"a LOGIN {18446744073709551616}\r\n",
    b"a LOGIN {99999999999999999999999}\r\n",
    b"a NOOP " + b"(" * 5000 + b"\r\n",
    b"a NOOP " + b")" * 5000 + b"\r\n",
    b"a " + b"X" * 100000 + b"\r\n",
    b"\x00\x00\x00\r\n",
    b"a SELECT \"\xff\xfe\x00INBOX\"\r\n",
    b"a SELECT &AMk-&-&\r\n",
    b"a LIST \"\" \"%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%*\"\r\n",
    b"a FETCH 1:* BODY[" + b"1." * 3000 + b"1]\r\n",
    b"a FETCH " + b",".join(b"%d" % i for i in range(1, 40000, 2)) + b" FLAGS\r\n",
    b"a SEARCH " + b"NOT " * 3000 + b"ALL\r\n",
    b"a SEARCH " + b"OR ALL " * 3000 + b"ALL\r\n",
    b"a SEARCH " + b" ".join([b"SUBJECT x"] * 20000) + b"\r\n",
    b"a STORE 1 +FLAGS (" + b" ".join(b"kw%d" % i for i in range(200)) + b")\r\n",
    b"a APPEND INBOX {5+}\r\nab\r\n",
    b"a APPEND INBOX ~{3+}\r\n\x00\x00\x00\r\n",
    b"a UID FETCH 4294967295:* (BODY.PEEK[HEADER.FIELDS (" + b"X " * 5000 + b")])\r\n",
    b"a SORT (" + b"REVERSE " * 1000 + b"DATE) UTF-8 ALL\r\n",
    b"a THREAD REFERENCES UTF-8 " + b"(" * 100 + b"ALL" + b")" * 100 + b"\r\n",
    b"a ENABLE " + b"QRESYNC " * 2000 + b"\r\n",
    b"a IDLE\r\nnot done\r\n",
    b"a AUTHENTICATE PLAIN\r\n" + b"A" * 20000 + b"\r\n",
    b"a COMPRESS DEFLATE\r\n\xff\xff\xff\xff garbage that is not deflate\r\n",
]

POP3_ATTACKS = [
    b"USER " + b"x" * 10000 + b"\r\n",
    b"\x00\x00\xff\r\n",
    b"AUTH PLAIN " + b"A" * 5000 + b"\r\n",
    b"RETR 99999999999999999999\r\n",
    b"TOP 1 -1\r\n",
    b"LIST " + b"9" * 300 + b"\r\n",
]


def blast(port, tls, payload, login=None, greeting=True):
    """Send payload on a fresh connection (after an optional login line); read until quiet or close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        s = tls_client_context().wrap_socket(s)
    try:
        if greeting:
            s.recv(4096)
        if login:
            s.sendall(login)
            time.sleep(0.3)
            s.recv(65536)
        s.sendall(payload)
        deadline = time.time() + 1.5
        while time.time() < deadline:
            s.settimeout(0.3)
            try:
                if not s.recv(65536):
                    break
            except socket.timeout:
                break
            except OSError:
                break
    except OSError:
        pass
    finally:
        s.close()


def still_serves_imap(p):
    c = imaplib.IMAP4_SSL("127.0.0.1", p.imaps_port, ssl_context=tls_client_context(), timeout=15)
    c.login(USER, PASSWORD)
    typ, data = c.select("INBOX")
    assert typ == "OK"
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert typ == "OK"
    c.logout()


def test_malformed_input_on_imap_and_pop3(postern_factory):
    p = postern_factory(limits={"max_errors": "1000"})
    c = p.smtp()
    assert send(c, "s@remote.test", [USER], make_message("keep me"))[0] == 250
    c.quit()
    p.wait_for_delivery(USER, 1)
    login = b'x LOGIN "%s" "%s"\r\n' % (USER.encode(), PASSWORD.encode())
    corpus = [open(f, "rb").read() for f in CORPUS]
    for payload in corpus + IMAP_ATTACKS:
        blast(p.imap_port, False, payload)                    # before login, plain
        assert p.alive(), "postern died on %r" % payload[:80]
    for payload in IMAP_ATTACKS:
        blast(p.imaps_port, True, b"s SELECT INBOX\r\n" + payload, login=login)  # selected
        assert p.alive(), "postern died on %r" % payload[:80]
    pop_login = b"USER %s\r\nPASS %s\r\n" % (USER.encode(), PASSWORD.encode())
    for payload in corpus:
        blast(p.pop3_port, False, payload)
    for payload in POP3_ATTACKS:
        blast(p.pop3s_port, True, payload, login=pop_login)
        assert p.alive(), "postern died on %r" % payload[:80]
    still_serves_imap(p)
    # the message stored before is intact (a well-formed binary APPEND among the attacks may add one)
    msgs = p.maildir(USER)
    keep = [m for m in msgs if b"Subject: keep me" in m]
    assert len(keep) == 1 and keep[0].endswith(b"\r\nhello\r\n")
    assert all(m == b"\x00\x00\x00" for m in msgs if m is not keep[0])
