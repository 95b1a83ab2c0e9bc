"""SMTP protocol on the wire: commands, BDAT, pipelining, pre-greeting, STARTTLS injection, smuggling."""
import socket
import ssl
import time

import pytest

from conftest import RawSMTP, header, make_message, queue_id_of, tls_client_context


def mailbox_has(srv, addr, token):
    return [m for m in srv.maildir(addr) if token in m]


def test_greeting(server):
    c = server.raw(greeting=False)
    r = c.reply()
    assert r.code == 220, r
    assert r.lines[0].startswith("mx.example.test ESMTP"), r


def test_vrfy_252(server):
    c = server.raw()
    c.cmd("EHLO client.example.test")
    for arg in ("a@example.test", "nobody@example.test", "a"):
        r = c.cmd("VRFY " + arg)
        assert r.code == 252, r
        assert r.lines[0].startswith("2."), r


def test_help_214(server):
    c = server.raw()
    r = c.cmd("HELP")
    assert r.code == 214, r
    r = c.cmd("HELP MAIL")
    assert r.code in (214, 504), r


def test_noop_rset_quit(server):
    c = server.raw()
    assert c.cmd("NOOP").code == 250
    assert c.cmd("NOOP with an argument").code == 250
    assert c.cmd("EHLO client.example.test").code == 250
    assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
    assert c.cmd("RCPT TO:<a@example.test>").code == 250
    r = c.cmd("RSET")
    assert r.code == 250 and r.lines[0].startswith("2.0.0"), r
    # After RSET there is no transaction.
    r = c.cmd("RCPT TO:<a@example.test>")
    assert r.code == 503 and r.lines[0].startswith("5.5.1"), r
    r = c.cmd("QUIT")
    assert r.code == 221, r
    assert c.closed_by_peer()


def test_bad_sequence_and_syntax(server):
    c = server.raw()
    r = c.cmd("MAIL FROM:<sender@remote.test>")
    assert r.code == 503, r  # before EHLO/HELO
    c.cmd("EHLO client.example.test")
    assert c.cmd("DATA").code == 503
    # A refused BDAT still carries its chunk, which must be skipped, not read as commands.
    c.send(b"BDAT 10 LAST\r\nNOOP\r\nNOOP")
    assert c.reply().code == 503
    assert c.cmd("NOOP").code == 250
    assert c.cmd("MAIL FROM:sender@remote.test").code in (250, 501)
    c.cmd("RSET")
    r = c.cmd("MAIL FROM:<sender@remote.test")
    assert r.code == 501, r
    assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
    r = c.cmd("MAIL FROM:<sender@remote.test>")
    assert r.code == 503, r  # nested MAIL
    r = c.cmd("FROB")
    assert r.code == 500 and r.lines[0].startswith("5.5."), r
    r = c.cmd("RCPT TO:<>")
    assert r.code == 501, r
    r = c.cmd("EHLO")
    assert r.code == 501, r


def test_case_insensitive_commands(server):
    c = server.raw()
    assert c.cmd("ehlo client.example.test").code == 250
    assert c.cmd("mail from:<sender@remote.test>").code == 250
    assert c.cmd("rcpt to:<a@example.test>").code == 250
    assert c.cmd("rset").code == 250


def test_data_message(server):
    before = len(server.maildir("a@example.test"))
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    c.cmd("RCPT TO:<a@example.test>")
    r = c.cmd("DATA")
    assert r.code == 354, r
    c.send(b"Subject: raw data\r\n\r\n..two dots\r\n.\r\n")
    r = c.reply()
    assert r.code == 250, r
    queue_id_of(r.lines[0])
    msgs = server.wait_for_delivery("a@example.test", before + 1)
    m = [m for m in msgs if b"raw data" in m][0]
    assert m.endswith(b"\r\n\r\n.two dots\r\n")


def test_bdat(server):
    before = len(server.maildir("b@example.test"))
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test> BODY=8BITMIME")
    c.cmd("RCPT TO:<b@example.test>")
    chunk1 = b"Subject: bdat token-bdat-1\r\n\r\nfirst line\r\n.\r\n"  # a lone dot is data in BDAT
    chunk2 = b"..not stuffed\r\n\xff\xfe\x80 eight bit \x01\x7f\r\nQUIT\r\n"  # command-looking data
    chunk3 = b"last\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
    r = c.reply()
    assert r.code == 250, r
    # Split a chunk across writes, with pauses, to exercise the byte counting.
    c.send(b"BDAT %d\r\n" % len(chunk2) + chunk2[:5])
    time.sleep(0.2)
    c.send(chunk2[5:20])
    time.sleep(0.2)
    c.send(chunk2[20:])
    r = c.reply()
    assert r.code == 250, r
    c.send(b"BDAT %d LAST\r\n" % len(chunk3) + chunk3)
    r = c.reply()
    assert r.code == 250, r
    queue_id_of(r.lines[0])
    assert c.cmd("NOOP").code == 250  # "QUIT" inside the chunk was data
    msgs = server.wait_for_delivery("b@example.test", before + 1)
    m = [m for m in msgs if b"token-bdat-1" in m]
    assert len(m) == 1
    assert m[0].endswith(chunk1 + chunk2 + chunk3), m[0][-200:]


def test_binarymime(server):
    c = server.raw()
    r = c.cmd("EHLO client.example.test")
    if "BINARYMIME" not in r.lines:
        return  # not advertised: nothing to check
    before = len(server.maildir("a@example.test"))
    assert c.cmd("MAIL FROM:<sender@remote.test> BODY=BINARYMIME").code == 250
    assert c.cmd("RCPT TO:<a@example.test>").code == 250
    # DATA cannot carry binary (RFC 3030 3): 503 (or 5xx) for DATA.
    r = c.cmd("DATA")
    assert r.code // 100 == 5, r
    body = (b"Subject: binary token-binarymime\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n" + bytes(range(256)) + b"\n.\n\r.\r\n\x00end")
    c.send(b"BDAT %d LAST\r\n" % len(body) + body)
    r = c.reply()
    assert r.code == 250, r
    msgs = server.wait_for_delivery("a@example.test", before + 1)
    m = [m for m in msgs if b"token-binarymime" in m]
    assert len(m) == 1
    # Binary content is stored exactly as sent.
    assert m[0].endswith(bytes(range(256)) + b"\n.\n\r.\r\n\x00end"), m[0][-300:]


def test_bdat_zero_last_and_pipelined(server):
    before = len(server.maildir("c@example.test"))
    c = server.raw()
    c.cmd("EHLO client.example.test")
    body = b"Subject: bdat token-bdat-2\r\n\r\nbody\r\n"
    c.send(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<c@example.test>\r\nBDAT %d\r\n" % len(body)
           + body + b"BDAT 0 LAST\r\n")
    codes = [c.reply().code for _ in range(4)]
    assert codes == [250, 250, 250, 250], codes
    msgs = server.wait_for_delivery("c@example.test", before + 1)
    m = [m for m in msgs if b"token-bdat-2" in m]
    assert len(m) == 1 and m[0].endswith(body)


def test_bdat_without_rcpt_and_mixed_with_data(server):
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    # No valid recipient: the chunk must be read and discarded, then 554/503.
    c.send(b"BDAT 5 LAST\r\nhello")
    r = c.reply()
    assert r.code in (503, 554), r
    assert c.cmd("NOOP").code == 250  # the 5 octets were not read as a command
    c.cmd("RSET")
    c.cmd("MAIL FROM:<sender@remote.test>")
    c.cmd("RCPT TO:<a@example.test>")
    c.send(b"BDAT 5\r\nabc\r\n")
    assert c.reply().code == 250
    # DATA after BDAT in the same transaction is a sequence error (RFC 3030 2).
    r = c.cmd("DATA")
    assert r.code == 503, r


def test_bdat_bad_size(server):
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    c.cmd("RCPT TO:<a@example.test>")
    # The chunk size cannot be known, so the server cannot find the next command: either a 501 or
    # a 421 and disconnect is right.
    r = c.cmd("BDAT notanumber")
    assert r.code in (501, 421), r
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    c.cmd("RCPT TO:<a@example.test>")
    r = c.cmd("BDAT 99999999999999999999999 LAST")
    assert r.code in (501, 552, 421), r
    if r.code == 421:
        assert c.closed_by_peer()


def test_pipelining(server):
    before_a = len(server.maildir("a@example.test"))
    c = server.raw()
    r = c.cmd("EHLO client.example.test")
    assert any(l.startswith("PIPELINING") for l in r.lines)
    c.send(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<a@example.test>\r\n"
           b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n")
    codes = [c.reply().code for _ in range(5)]
    assert codes == [250, 250, 550, 554, 354], codes
    c.send(b"Subject: pipelined token-pipe-1\r\n\r\nbody\r\n.\r\nMAIL FROM:<s2@remote.test>\r\n"
           b"RCPT TO:<a@example.test>\r\nDATA\r\n")
    codes = [c.reply().code for _ in range(4)]
    assert codes == [250, 250, 250, 354], codes
    c.send(b"Subject: pipelined token-pipe-2\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert c.reply().code == 250
    assert c.reply().code == 221
    msgs = server.wait_for_delivery("a@example.test", before_a + 2)
    assert len([m for m in msgs if b"token-pipe-1" in m]) == 1
    assert len([m for m in msgs if b"token-pipe-2" in m]) == 1


def test_pipelining_before_ehlo_reply_refused(server):
    # Commands sent behind EHLO before its reply came (the client cannot know PIPELINING yet):
    # improper pipelining, the DATA must not be accepted.
    c = server.raw()
    c.send(b"EHLO client.example.test\r\nMAIL FROM:<sender@remote.test>\r\nRCPT TO:<a@example.test>\r\n"
           b"DATA\r\n")
    replies = c.replies_until_quiet(quiet=1.5)
    assert replies and replies[0].code == 250, replies
    assert 354 not in [r.code for r in replies], replies


def test_pipelined_data_without_valid_rcpt(server):
    # RFC 2920 3.1: DATA after all RCPTs failed gets 554 (or 503), and the message text that follows
    # is then read as commands -- which must not deliver anything.
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.send(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n")
    codes = [c.reply().code for _ in range(3)]
    assert codes[:2] == [250, 550] and codes[2] in (503, 554), codes


def test_commands_before_greeting_refused(server):
    s = socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10)
    server.clients.append(s)
    s.sendall(b"EHLO early.example.test\r\nMAIL FROM:<x@remote.test>\r\n")
    data = b""
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = s.recv(4096)
        except (socket.timeout, ConnectionError):
            break
        if not chunk:
            break
        data += chunk
    lines = data.split(b"\r\n")
    # The early EHLO must not be served: no 250 to it, no 220 followed by business as usual.
    assert not any(l.startswith(b"250") for l in lines), data
    assert any(l[:1] in (b"4", b"5") for l in lines) or data == b"", data


def test_starttls_injection(server):
    for port in (server.smtp_port, server.submission_port):
        c = server.raw(port=port)
        c.cmd("EHLO client.example.test")
        c.send(b"STARTTLS\r\nNOOP\r\nRSET\r\n")
        try:
            r = c.reply()
        except (EOFError, ConnectionError):
            continue  # dropped: acceptable
        if r.code != 220:
            # Refused outright because of the pipelined plaintext: fine, as long as nothing else
            # is answered in plaintext and TLS is not started.
            continue
        assert c.buf == b"", "plaintext reply after 220 to STARTTLS: %r" % c.buf
        try:
            c.sock = tls_client_context().wrap_socket(c.sock)
        except (ssl.SSLError, ConnectionError, OSError):
            continue  # dropped during the handshake: acceptable
        # Nothing may now arrive in answer to the injected NOOP/RSET.
        c.sock.settimeout(1.5)
        try:
            data = c.sock.recv(4096)
        except (socket.timeout, TimeoutError):
            data = None
        except (ssl.SSLError, ConnectionError, OSError):
            continue
        if data == b"":
            continue  # closed
        assert data is None, "injected plaintext command answered inside TLS: %r" % data
        # The session works normally inside TLS afterwards.
        r = c.cmd("EHLO client.example.test")
        assert r.code == 250, r
        assert not any(l.startswith("STARTTLS") for l in r.lines)


def test_injection_before_starttls_reply_split(server):
    # Same, with the injected command sent in a separate packet right after STARTTLS
    # but before the client reads the 220: it is still plaintext that must be discarded.
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.send(b"STARTTLS\r\n")
    c.send(b"NOOP\r\n")
    try:
        r = c.reply()
    except (EOFError, ConnectionError):
        return
    if r.code != 220:
        return
    time.sleep(0.2)
    try:
        c.sock = tls_client_context().wrap_socket(c.sock)
        c.sock.settimeout(1.5)
        data = c.sock.recv(4096)
    except (socket.timeout, TimeoutError):
        data = None
    except (ssl.SSLError, ConnectionError, OSError):
        return
    assert data in (None, b""), data


SMUGGLE = (b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
           b"Subject: smuggled token-smuggled\r\n\r\nsmuggled body\r\n")

SEQUENCES = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"]


@pytest.mark.parametrize("seq", SEQUENCES, ids=[repr(s) for s in SEQUENCES])
def test_smuggling_rejected(server, seq):
    token = b"token-smuggle-%d" % SEQUENCES.index(seq)
    before = {a: len(server.maildir(a)) for a in ("a@example.test", "b@example.test")}
    c = server.raw()
    c.cmd("EHLO client.example.test")
    assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
    assert c.cmd("RCPT TO:<a@example.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"Subject: outer " + token + b"\r\n\r\nouter body" + seq + SMUGGLE + b".\r\n")
    replies = c.replies_until_quiet(quiet=2.0)
    # One reply for the whole message, and it refuses it (bare CR/LF in DATA, bare_newline = reject).
    assert len(replies) == 1, replies
    assert replies[0].code == 554, replies
    assert replies[0].lines[0].startswith("5."), replies
    r = c.cmd("QUIT")
    assert r.code == 221, r
    time.sleep(1.0)
    assert len(server.maildir("b@example.test")) == before["b@example.test"]
    assert not mailbox_has(server, "b@example.test", b"token-smuggled")
    assert not mailbox_has(server, "a@example.test", token)


@pytest.fixture(scope="module")
def normalizing(tmp_path_factory):
    from conftest import GENEROUS, _make, finish
    p = _make(tmp_path_factory, "norm", limits=dict(GENEROUS), extra={"smtp": {"bare_newline": "normalize"}})
    p.start()
    yield p
    finish(p)


@pytest.mark.parametrize("seq", SEQUENCES, ids=[repr(s) for s in SEQUENCES])
def test_smuggling_normalized(normalizing, seq):
    srv = normalizing
    token = b"token-norm-%d" % SEQUENCES.index(seq)
    before_a = len(srv.maildir("a@example.test"))
    before_b = len(srv.maildir("b@example.test"))
    c = srv.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    c.cmd("RCPT TO:<a@example.test>")
    assert c.cmd("DATA").code == 354
    c.send(b"Subject: outer " + token + b"\r\n\r\nouter body" + seq + SMUGGLE + b".\r\n")
    replies = c.replies_until_quiet(quiet=2.0)
    # Normalised: still exactly one message, the smuggled commands are body text.
    assert len(replies) == 1 and replies[0].code == 250, replies
    assert c.cmd("QUIT").code == 221
    msgs = srv.wait_for_delivery("a@example.test", before_a + 1)
    m = [m for m in msgs if token in m]
    assert len(m) == 1
    assert b"MAIL FROM:<evil@remote.test>" in m[0]
    # Normalised consistently: no bare CR or LF is stored.
    assert b"\r" not in m[0].replace(b"\r\n", b"") and b"\n" not in m[0].replace(b"\r\n", b"")
    time.sleep(0.5)
    assert len(srv.maildir("b@example.test")) == before_b


def test_bare_lf_line_ending_data_not_terminated_by_lf_dot_lf(server):
    # A client using bare LF throughout: "\n.\n" is not the end of data; the real end is.
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    c.cmd("RCPT TO:<a@example.test>")
    c.cmd("DATA")
    c.send(b"Subject: lf only\n\nbody\n.\n")
    # No reply yet: the message is not over.
    with pytest.raises((socket.timeout, TimeoutError)):
        c.reply(timeout=1.5)
    c.send(b"\r\n.\r\n")
    r = c.reply()
    assert r.code == 554, r


def test_drop_mid_data_leaves_nothing(server):
    before = len(server.maildir("c@example.test"))
    c = server.raw()
    c.cmd("EHLO client.example.test")
    c.cmd("MAIL FROM:<sender@remote.test>")
    c.cmd("RCPT TO:<c@example.test>")
    c.cmd("DATA")
    c.send(b"Subject: dropped token-dropped\r\n\r\n" + b"x" * 300000)
    c.close()
    time.sleep(1.5)
    assert not mailbox_has(server, "c@example.test", b"token-dropped")
    assert len(server.maildir("c@example.test")) == before
    assert server.spool_tmp_files() == []


def test_long_garbage_without_crlf(server):
    c = server.raw()
    try:
        c.send(b"x" * 70000)
        r = c.reply(timeout=5)
        assert r.code == 500 and r.lines[0].startswith("5.5.2"), r
    except (EOFError, ConnectionError):
        pass  # dropping such a client is fine too
    # The server is still alive and serving.
    c2 = server.raw()
    assert c2.cmd("NOOP").code == 250


def test_byte_at_a_time(server):
    before = len(server.maildir("a@example.test"))
    c = server.raw()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    script = b"EHLO client.example.test\r\n"
    for i in range(len(script)):
        c.send(script[i:i + 1])
    assert c.reply().code == 250
    # After the EHLO reply, pipelining is allowed.
    script = b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n"
    for i in range(len(script)):
        c.send(script[i:i + 1])
    codes = [c.reply().code for _ in range(3)]
    assert codes == [250, 250, 354], codes
    body = b"Subject: byte at a time token-bytes\r\n\r\nbody\r\n.\r\n"
    for i in range(len(body)):
        c.send(body[i:i + 1])
    r = c.reply()
    assert r.code == 250, r
    msgs = server.wait_for_delivery("a@example.test", before + 1)
    assert [m for m in msgs if b"token-bytes" in m]
