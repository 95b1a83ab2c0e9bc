"""Submission: STARTTLS, AUTH PLAIN/LOGIN only over TLS, implicit TLS, sender ownership, EHLO keywords."""
import base64
import smtplib
import ssl
import subprocess
import time

import pytest

from conftest import (DOMAIN, HOSTNAME, PASSWORD, make_message, queue_id_of, send,
                      tls_client_context)

BASE = {"PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "DSN"}
# Beyond the list; allowed because test_protocol.py::test_binarymime checks it really works.
OPTIONAL = {"BINARYMIME"}


@pytest.fixture(scope="module")
def srv(server):
    server.must("alias", "add", "sales@example.test", "a@example.test")
    server.must("alias", "add", "others@example.test", "b@example.test")
    server.must("domain", "add", "catchall.test")
    server.must("alias", "add", "@catchall.test", "a@example.test")
    return server


def ehlo_keywords(c):
    r = c.cmd("EHLO client.example.test")
    assert r.code == 250, r
    assert r.lines[0].split()[0] == HOSTNAME, r
    kw = {}
    for line in r.lines[1:]:
        parts = line.split(" ", 1)
        kw[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
    for k in OPTIONAL:
        kw.pop(k, None)
    return kw


def starttls(c):
    r = c.cmd("STARTTLS")
    assert r.code == 220 and r.lines[0].startswith("2.0.0"), r
    assert c.buf == b""
    c.sock = tls_client_context().wrap_socket(c.sock)


def test_ehlo_keywords_smtp(srv):
    c = srv.raw()
    kw = ehlo_keywords(c)
    assert set(kw) == BASE | {"STARTTLS"}, kw
    assert kw["SIZE"] == str(50 * 1024 * 1024), kw
    starttls(c)
    kw = ehlo_keywords(c)
    # No AUTH on the smtp listener unless auth_on_smtp = yes.
    assert set(kw) == BASE, kw


def test_ehlo_keywords_submission(srv):
    c = srv.raw(port=srv.submission_port)
    kw = ehlo_keywords(c)
    # AUTH is not offered before STARTTLS.
    assert set(kw) == BASE | {"STARTTLS"}, kw
    starttls(c)
    kw = ehlo_keywords(c)
    assert set(kw) == BASE | {"AUTH"}, kw
    assert set(kw["AUTH"].upper().split()) == {"PLAIN", "LOGIN"}, kw


def test_ehlo_keywords_submissions(srv):
    c = srv.raw(port=srv.submissions_port)
    kw = ehlo_keywords(c)
    assert set(kw) == BASE | {"AUTH"}, kw
    assert set(kw["AUTH"].upper().split()) == {"PLAIN", "LOGIN"}, kw


def test_helo_is_plain(srv):
    c = srv.raw()
    r = c.cmd("HELO client.example.test")
    assert r.code == 250 and len(r.lines) == 1, r


def test_starttls_twice_refused(srv):
    c = srv.raw(port=srv.submission_port)
    ehlo_keywords(c)
    starttls(c)
    ehlo_keywords(c)
    r = c.cmd("STARTTLS")
    assert r.code in (503, 554), r


def test_auth_refused_before_tls(srv):
    c = srv.raw(port=srv.submission_port)
    ehlo_keywords(c)
    cred = base64.b64encode(b"\0a@example.test\0" + PASSWORD.encode()).decode()
    r = c.cmd("AUTH PLAIN " + cred)
    # RFC 3207/4954: 538 5.7.11 (encryption required) or 503/530; never success.
    assert r.code in (503, 530, 538), r


def test_mail_before_auth_530(srv):
    for tls in (False, True):
        c = srv.raw(port=srv.submission_port)
        ehlo_keywords(c)
        if tls:
            starttls(c)
            ehlo_keywords(c)
        r = c.cmd("MAIL FROM:<a@example.test>")
        assert r.code == 530 and r.lines[0].startswith("5.7.0"), (tls, r)
    c = srv.raw(port=srv.submissions_port)
    ehlo_keywords(c)
    r = c.cmd("MAIL FROM:<a@example.test>")
    assert r.code == 530 and r.lines[0].startswith("5.7.0"), r


def test_auth_plain_after_starttls(srv):
    c = srv.smtp(port=srv.submission_port)
    c.ehlo()
    assert not c.has_extn("auth")
    c.starttls(context=tls_client_context())
    c.ehlo()
    assert c.has_extn("auth")
    c.user, c.password = "a@example.test", PASSWORD
    code, msg = c.auth("PLAIN", c.auth_plain, initial_response_ok=True)
    assert code == 235 and msg.startswith(b"2.7.0"), (code, msg)
    before = len(srv.maildir("b@example.test"))
    code, text = send(c, "a@example.test", ["b@example.test"], make_message("auth plain", sender="a@example.test"))
    assert code == 250, text
    msgs = srv.wait_for_delivery("b@example.test", before + 1)
    m = [m for m in msgs if b"auth plain" in m][0]
    # The Received header records an authenticated, encrypted session.
    assert b"ESMTPSA" in m or b"ESMTPS" in m, m[:600]


def test_auth_plain_without_initial_response(srv):
    c = srv.smtp(port=srv.submission_port)
    c.ehlo()
    c.starttls(context=tls_client_context())
    c.ehlo()
    c.user, c.password = "b@example.test", PASSWORD
    code, msg = c.auth("PLAIN", c.auth_plain, initial_response_ok=False)
    assert code == 235, (code, msg)


def test_auth_login_after_starttls(srv):
    c = srv.smtp(port=srv.submission_port)
    c.ehlo()
    c.starttls(context=tls_client_context())
    c.ehlo()
    c.user, c.password = "a@example.test", PASSWORD
    code, msg = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
    assert code == 235, (code, msg)


def test_wrong_password_535(srv):
    c = srv.smtp(port=srv.submission_port)
    c.ehlo()
    c.starttls(context=tls_client_context())
    c.ehlo()
    c.user, c.password = "a@example.test", "wrong password"
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        c.auth("PLAIN", c.auth_plain)
    assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8"), e.value
    # Unknown user: the same answer (no user enumeration).
    c.user, c.password = "nobody@example.test", "x"
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        c.auth("LOGIN", c.auth_login, initial_response_ok=False)
    assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8"), e.value
    # Still not authenticated.
    code, msg = c.mail("a@example.test")
    assert code == 530, (code, msg)


def test_auth_cancel_and_garbage(srv):
    c = srv.raw(port=srv.submissions_port)
    ehlo_keywords(c)
    r = c.cmd("AUTH LOGIN")
    assert r.code == 334, r
    r = c.cmd("*")
    assert r.code == 501, r
    r = c.cmd("AUTH PLAIN !!!notbase64!!!")
    assert r.code == 501, r
    r = c.cmd("AUTH CRAM-MD5")
    assert r.code == 504, r


def test_submissions_implicit_tls(srv):
    before = len(srv.maildir("b@example.test"))
    c = srv.submit(port=srv.submissions_port)
    code, text = send(c, "a@example.test", ["b@example.test"], make_message("over 465", sender="a@example.test"))
    assert code == 250, text
    queue_id_of(text)
    msgs = srv.wait_for_delivery("b@example.test", before + 1)
    assert [m for m in msgs if b"over 465" in m]


def test_double_auth_refused(srv):
    c = srv.submit(port=srv.submissions_port)
    c.user, c.password = "a@example.test", PASSWORD
    code, msg = c.auth("PLAIN", c.auth_plain)
    assert code == 503, (code, msg)


@pytest.mark.parametrize("sender,ok", [
    ("a@example.test", True),
    ("A@Example.Test", True),
    ("a+lists@example.test", True),
    ("sales@example.test", True),          # alias delivering to a
    ("b@example.test", False),             # someone else
    ("others@example.test", False),        # an alias of someone else
    ("anything@catchall.test", False),     # a catch-all is not ownership
    ("a@remote.test", False),              # not ours at all
])
def test_sender_ownership(srv, sender, ok):
    c = srv.submit()
    code, msg = c.mail(sender if sender else "<>")
    if ok:
        assert code == 250, (sender, code, msg)
    else:
        assert code == 553, (sender, code, msg)
        assert msg.startswith(b"5.7.1"), msg
        assert b"not owned" in msg, msg


def test_authenticated_relay_to_external(srv):
    c = srv.submit()
    code, text = send(c, "a@example.test", ["friend@remote.test"], make_message("auth relay", sender="a@example.test"))
    assert code == 250, text
    qid = queue_id_of(text)
    # remote.test has no mail server in the test DNS: attempted, deferred, still queued
    deadline = time.monotonic() + 15
    while "event=outbound_deferred queue_id=%s" % qid not in srv.log():
        assert time.monotonic() < deadline, "no outbound attempt for %s" % qid
        time.sleep(0.1)
    assert qid in srv.spool_files()


def test_auth_on_smtp_listener_not_offered(srv):
    c = srv.raw()
    ehlo_keywords(c)
    starttls(c)
    ehlo_keywords(c)
    cred = base64.b64encode(b"\0a@example.test\0" + PASSWORD.encode()).decode()
    r = c.cmd("AUTH PLAIN " + cred)
    assert r.code in (502, 503), r


def test_auth_on_smtp_when_configured(postern_factory):
    s = postern_factory(extra={"smtp": {"auth_on_smtp": "yes"}})
    c = s.raw()
    kw = ehlo_keywords(c)
    assert "AUTH" not in kw
    starttls(c)
    kw = ehlo_keywords(c)
    assert "AUTH" in kw, kw
    cred = base64.b64encode(b"\0a@example.test\0" + PASSWORD.encode()).decode()
    r = c.cmd("AUTH PLAIN " + cred)
    assert r.code == 235, r
    r = c.cmd("MAIL FROM:<a@example.test>")
    assert r.code == 250, r
    r = c.cmd("RCPT TO:<friend@remote.test>")
    assert r.code == 250, r


def test_openssl_s_client_starttls(srv):
    script = b"EHLO client.example.test\r\nQUIT\r\n"
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.submission_port,
                        "-starttls", "smtp", "-quiet", "-ign_eof"],
                       input=script, capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert "250-AUTH PLAIN LOGIN" in out or "250-AUTH LOGIN PLAIN" in out or "250 AUTH" in out, out
    assert "221" in out, out


def test_openssl_s_client_implicit_tls(srv):
    # Wait for the greeting before talking: the server refuses clients that talk first.
    p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.submissions_port,
                          "-quiet", "-ign_eof"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        first = p.stdout.readline().decode(errors="replace")
        assert first.startswith("220 "), first
        out, _ = p.communicate(b"EHLO client.example.test\r\nQUIT\r\n", timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = out.decode(errors="replace")
    assert "250-AUTH" in out or "250 AUTH" in out, out
    assert "221" in out, out


def test_certificate_names_hostname(srv):
    import socket
    ctx = tls_client_context()
    with socket.create_connection(("127.0.0.1", srv.submissions_port), timeout=10) as s:
        with ctx.wrap_socket(s) as t:
            der = t.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    r = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName"],
                       input=pem.encode(), capture_output=True, timeout=10)
    assert HOSTNAME.encode() in r.stdout, r.stdout
