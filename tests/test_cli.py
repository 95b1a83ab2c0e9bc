"""The postern command: directory administration, config check, help, version, sendmail."""
import json
import os
import re
import subprocess
import time

import pytest

from conftest import PASSWORD, Postern, check_sanitizers, header, make_message, postern_bin, send, tls_client_context


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    check_sanitizers(r.stderr.decode(errors="replace"), "cli")
    return r.stdout.decode()


def fails(r, code=None):
    assert r.returncode != 0, (r.stdout, r.stderr)
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    check_sanitizers(r.stderr.decode(errors="replace"), "cli")
    return r.stderr.decode()


def listed_json(s, what):
    out = ok(s.cli(what, "list", "--json"))
    data = json.loads(out)
    assert isinstance(data, list), data
    return data


def json_has(data, value):
    return any(value in json.dumps(item, ensure_ascii=False) for item in data)


def test_domain_add_del_list(server):
    s = server
    ok(s.cli("domain", "add", "cli-domain.test"))
    assert "cli-domain.test" in ok(s.cli("domain", "list")).split()
    assert json_has(listed_json(s, "domain"), "cli-domain.test")
    # Adding twice is an error; so is a bad name.
    fails(s.cli("domain", "add", "cli-domain.test"))
    fails(s.cli("domain", "add", "not a domain"))
    # Case-insensitive: the domain is canonical.
    fails(s.cli("domain", "add", "CLI-Domain.TEST"))
    ok(s.cli("domain", "del", "cli-domain.test"))
    assert "cli-domain.test" not in ok(s.cli("domain", "list"))
    assert not json_has(listed_json(s, "domain"), "cli-domain.test")
    fails(s.cli("domain", "del", "cli-domain.test"))


def test_domain_del_refused_while_in_use(server):
    s = server
    ok(s.cli("domain", "add", "busy.test"))
    s.add_user("u@busy.test")
    fails(s.cli("domain", "del", "busy.test"))
    ok(s.cli("user", "del", "u@busy.test"))
    ok(s.cli("domain", "del", "busy.test"))


def test_user_add_del_list(server):
    s = server
    s.add_user("newbie@example.test")
    assert "newbie@example.test" in ok(s.cli("user", "list"))
    assert json_has(listed_json(s, "user"), "newbie@example.test")
    assert os.path.isdir(os.path.join(s.maildir_path("newbie@example.test"), "new"))
    for folder in ("Drafts", "Sent", "Junk", "Trash", "Archive"):
        assert os.path.isdir(s.maildir_path("newbie@example.test", folder)), folder
    # Duplicate, unknown domain, bad address.
    fails(s.cli("user", "add", "newbie@example.test", "--password-stdin", input=PASSWORD + "\n"))
    fails(s.cli("user", "add", "x@unknown-domain.test", "--password-stdin", input=PASSWORD + "\n"))
    fails(s.cli("user", "add", "no-at-sign", "--password-stdin", input=PASSWORD + "\n"))
    # Mail reaches the new user at once (no restart).
    c = s.smtp()
    code, text = send(c, "sender@remote.test", ["newbie@example.test"], make_message("to newbie"))
    assert code == 250, text
    s.wait_for_delivery("newbie@example.test", 1)
    ok(s.cli("user", "del", "newbie@example.test"))
    assert "newbie@example.test" not in ok(s.cli("user", "list"))
    # Deleted: RCPT is refused at once.
    c = s.smtp()
    c.ehlo()
    c.mail("sender@remote.test")
    code, msg = c.rcpt("newbie@example.test")
    assert code == 550, (code, msg)


def test_user_add_with_name_and_quota(server):
    s = server
    ok(s.cli("user", "add", "named@example.test", "--password-stdin", "--name", "Named Person",
             "--quota", "2G", input=PASSWORD + "\n"))
    data = listed_json(s, "user")
    entry = [d for d in data if "named@example.test" in json.dumps(d)]
    assert entry, data
    assert str(2 * 1024 ** 3) in json.dumps(entry[0]) or "2G" in json.dumps(entry[0]), entry
    ok(s.cli("user", "quota", "named@example.test", "10M"))
    entry = [d for d in listed_json(s, "user") if "named@example.test" in json.dumps(d)]
    assert str(10 * 1024 ** 2) in json.dumps(entry[0]) or "10M" in json.dumps(entry[0]), entry
    fails(s.cli("user", "quota", "named@example.test", "lots"))


def test_user_passwd_then_auth(server):
    import smtplib
    s = server
    s.add_user("pw@example.test", password="old password 1")
    ok(s.cli("user", "passwd", "pw@example.test", "--password-stdin", input="new password 2\n"))
    c = s.smtp(port=s.submissions_port)
    c.ehlo()
    c.user, c.password = "pw@example.test", "old password 1"
    with pytest.raises(smtplib.SMTPAuthenticationError):
        c.auth("PLAIN", c.auth_plain)
    c2 = s.smtp(port=s.submissions_port)
    c2.login("pw@example.test", "new password 2")
    fails(s.cli("user", "passwd", "ghost@example.test", "--password-stdin", input="x\n"))


def test_user_dovecot_hash_migration(server):
    import smtplib
    s = server
    # A Dovecot {SHA512-CRYPT} hash made with crypt(3): "$6$" scheme.
    r = subprocess.run(["openssl", "passwd", "-6", "-salt", "saltsalt", "migrated pw"], capture_output=True)
    h = "{SHA512-CRYPT}" + r.stdout.decode().strip()
    ok(s.cli("user", "add", "migrated@example.test", "--password-hash", h))
    c = s.smtp(port=s.submissions_port)
    c.login("migrated@example.test", "migrated pw")
    c2 = s.smtp(port=s.submissions_port)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        c2.login("migrated@example.test", "not it")


def test_alias_add_del_list(server):
    s = server
    ok(s.cli("alias", "add", "info@example.test", "a@example.test,b@example.test"))
    out = ok(s.cli("alias", "list"))
    assert "info@example.test" in out and "a@example.test" in out and "b@example.test" in out
    data = listed_json(s, "alias")
    assert json_has(data, "info@example.test")
    ok(s.cli("alias", "add", "@example.test", "c@example.test"))  # catch-all
    assert json_has(listed_json(s, "alias"), "@example.test")
    fails(s.cli("alias", "add", "a@example.test", "b@example.test"))  # an account's address
    fails(s.cli("alias", "add", "x@unknown-domain.test", "a@example.test"))
    ok(s.cli("alias", "del", "info@example.test"))
    ok(s.cli("alias", "del", "@example.test"))
    assert not json_has(listed_json(s, "alias"), "info@example.test")
    fails(s.cli("alias", "del", "info@example.test"))


def test_domain_alias_cli(server):
    s = server
    ok(s.cli("domain", "alias", "other-name.test", "example.test"))
    assert "other-name.test" in ok(s.cli("domain", "list"))
    assert json_has(listed_json(s, "domain"), "other-name.test")
    before = len(s.maildir("a@example.test"))
    c = s.smtp()
    code, text = send(c, "sender@remote.test", ["a@other-name.test"], make_message("via domain alias cli"))
    assert code == 250, text
    s.wait_for_delivery("a@example.test", before + 1)


def test_config_prints_effective(server):
    out = ok(server.cli("config"))
    assert "[limits]" in out and "max_message_size" in out
    assert "mx.example.test" in out
    assert "127.0.0.2/32" in out


def test_config_check_good_and_bad(server, tmp_path):
    ok(server.cli("config", "check"))
    bad = tmp_path / "bad.conf"
    bad.write_text("[server]\nhostname = x.example.test\n\n[limits]\nmax_recipients = 5\nno_such_knob = 1\n")
    r = subprocess.run([postern_bin(), "-c", str(bad), "config", "check"], capture_output=True, timeout=30)
    assert r.returncode == 1, r
    err = (r.stderr + r.stdout).decode()
    assert "%s:6" % bad in err, err
    bad.write_text("[limits]\nmax_message_size = huge\n")
    r = subprocess.run([postern_bin(), "-c", str(bad), "config", "check"], capture_output=True, timeout=30)
    assert r.returncode == 1 and ("%s:2" % bad).encode() in r.stderr + r.stdout, r
    bad.write_text("[nosuchsection]\nx = 1\n")
    r = subprocess.run([postern_bin(), "-c", str(bad), "config", "check"], capture_output=True, timeout=30)
    assert r.returncode == 1 and ("%s:1" % bad).encode() in r.stderr + r.stdout, r
    # POSTERN_CONFIG selects the file too.
    env = dict(os.environ, POSTERN_CONFIG=str(bad))
    r = subprocess.run([postern_bin(), "config", "check"], capture_output=True, timeout=30, env=env)
    assert r.returncode == 1, r
    env = dict(os.environ, POSTERN_CONFIG=server.conf)
    r = subprocess.run([postern_bin(), "config", "check"], capture_output=True, timeout=30, env=env)
    assert r.returncode == 0, r


def test_serve_refuses_bad_config(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[limits]\nmax_errors = 0\n")
    r = subprocess.run([postern_bin(), "-c", str(bad), "serve"], capture_output=True, timeout=30)
    assert r.returncode != 0
    assert ("%s:2" % bad).encode() in r.stderr + r.stdout, r


COMMANDS = [
    [], ["serve"], ["init"], ["domain"], ["domain", "add"], ["domain", "del"], ["domain", "list"],
    ["domain", "alias"], ["user"], ["user", "add"], ["user", "del"], ["user", "list"], ["user", "passwd"],
    ["user", "quota"], ["alias"], ["alias", "add"], ["alias", "del"], ["alias", "list"], ["config"],
    ["config", "check"], ["sendmail"], ["version"], ["help"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=[" ".join(c) or "postern" for c in COMMANDS])
def test_help(cmd, tmp_path):
    r = subprocess.run([postern_bin()] + cmd + ["--help"], capture_output=True, timeout=30, cwd=str(tmp_path))
    assert r.returncode == 0, r
    out = r.stdout.decode()
    assert "usage" in out.lower(), out
    check_sanitizers(r.stderr.decode(errors="replace"), "help")
    # --help never does the thing: no data directory appears.
    assert not os.path.exists(tmp_path / "postern-data"), cmd


def test_help_command_lists_everything(tmp_path):
    r = subprocess.run([postern_bin(), "help"], capture_output=True, timeout=30, cwd=str(tmp_path))
    assert r.returncode == 0
    out = r.stdout.decode()
    for word in ("serve", "init", "domain", "user", "alias", "config", "sendmail", "version"):
        assert word in out, word


def test_version(tmp_path):
    r = subprocess.run([postern_bin(), "version"], capture_output=True, timeout=30, cwd=str(tmp_path))
    assert r.returncode == 0
    assert re.match(r"^postern \d+\.\d+\.\d+", r.stdout.decode()), r.stdout


def test_unknown_command_usage_error(tmp_path):
    r = subprocess.run([postern_bin(), "frobnicate"], capture_output=True, timeout=30, cwd=str(tmp_path))
    assert r.returncode == 2, r


def test_init_keeps_existing_and_is_idempotent(server):
    cert = os.path.join(server.data_dir, "tls", "cert.pem")
    assert os.path.exists(cert)
    before = open(cert, "rb").read()
    ok(server.cli("init"))
    assert open(cert, "rb").read() == before
    # The domain and users survive a second init.
    assert "a@example.test" in ok(server.cli("user", "list"))


# ---- sendmail ----

def sendmail(s, args, message, env=None):
    return s.cli("sendmail", *args, input=message, env=env)


def test_sendmail_t(server):
    before = len(server.maildir("b@example.test"))
    msg = b"From: App <app@example.test>\nTo: Bee <b@example.test>\nSubject: sendmail -t token-sm1\n\nbody line\n.\nafter dot\n"
    r = sendmail(server, ["-t", "-i"], msg)
    assert r.returncode == 0, r
    msgs = server.wait_for_delivery("b@example.test", before + 1)
    m = [m for m in msgs if b"token-sm1" in m]
    assert len(m) == 1
    # With -i a lone dot is just text; line endings are CRLF in the store.
    assert b"\r\n.\r\nafter dot\r\n" in m[0], m[0]
    assert header(m[0], "Delivered-To") == ["b@example.test"]
    assert header(m[0], "Received"), m[0][:400]


def test_sendmail_t_cc_bcc(server):
    before_a = len(server.maildir("a@example.test"))
    before_c = len(server.maildir("c@example.test"))
    msg = (b"From: app@example.test\nTo: a@example.test\nBcc: c@example.test\n"
           b"Subject: sendmail bcc token-sm2\n\nhello\n")
    r = sendmail(server, ["-t"], msg)
    assert r.returncode == 0, r
    ma = server.wait_for_delivery("a@example.test", before_a + 1)
    mc = server.wait_for_delivery("c@example.test", before_c + 1)
    for box in (ma, mc):
        m = [m for m in box if b"token-sm2" in m]
        assert len(m) == 1
        # Bcc is removed from what is delivered.
        assert not header(m[0], "Bcc"), m[0]


def test_sendmail_recipients_on_command_line_and_f(server):
    before = len(server.maildir("c@example.test"))
    msg = b"Subject: sendmail args token-sm3\n\nbody\n"
    r = sendmail(server, ["-f", "bounces@example.test", "c@example.test"], msg)
    assert r.returncode == 0, r
    msgs = server.wait_for_delivery("c@example.test", before + 1)
    m = [m for m in msgs if b"token-sm3" in m]
    assert len(m) == 1
    assert header(m[0], "Return-Path") == ["<bounces@example.test>"]


def test_sendmail_without_i_stops_at_dot(server):
    before = len(server.maildir("a@example.test"))
    msg = b"Subject: sendmail dot token-sm4\n\nfirst\n.\nnot part of it\n"
    r = sendmail(server, ["a@example.test"], msg)
    assert r.returncode == 0, r
    msgs = server.wait_for_delivery("a@example.test", before + 1)
    m = [m for m in msgs if b"token-sm4" in m]
    assert len(m) == 1 and b"not part of it" not in m[0]


def test_sendmail_no_recipient_is_error(server):
    r = sendmail(server, ["-t"], b"Subject: nobody\n\nbody\n")
    assert r.returncode != 0, r


def test_sendmail_symlink(server, tmp_path):
    link = tmp_path / "sendmail"
    os.symlink(postern_bin(), str(link))
    before = len(server.maildir("b@example.test"))
    env = dict(os.environ, POSTERN_CONFIG=server.conf)
    r = subprocess.run([str(link), "-t", "-i"], input=b"To: b@example.test\nSubject: symlink token-sm5\n\nx\n",
                       capture_output=True, timeout=60, env=env)
    assert r.returncode == 0, r
    msgs = server.wait_for_delivery("b@example.test", before + 1)
    assert [m for m in msgs if b"token-sm5" in m]
