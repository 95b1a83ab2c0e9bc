"""
Real IMAP clients against the real server: mbsync (isync) syncing a whole
account both ways over IMAPS, as a user with a laptop would.
"""
import imaplib
import os
import subprocess

import pytest

from conftest import DOMAIN, PASSWORD, have, make_message, send, tls_client_context

pytestmark = pytest.mark.skipif(not have("mbsync"), reason="mbsync (isync) not installed")


def mbsync(p, workdir, user):
    conf = os.path.join(workdir, "mbsyncrc")
    local = os.path.join(workdir, "mail")
    os.makedirs(local, exist_ok=True)
    with open(conf, "w") as f:
        f.write(
            "IMAPAccount t\nHost 127.0.0.1\nPort %d\nUser %s\nPass \"%s\"\nSSLType IMAPS\n"
            "CertificateFile %s\n\n"
            "IMAPStore remote\nAccount t\n\n"
            "MaildirStore local\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\n"
            "Channel t\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\n"
            "SyncState *\n"
            % (p.imaps_port, user, PASSWORD, os.path.join(p.data_dir, "tls", "cert.pem"), local,
               local))
    r = subprocess.run(["mbsync", "-c", conf, "-a"], capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return local


def local_files(local, folder):
    out = []
    for sub in ("cur", "new"):
        d = os.path.join(local, folder, sub)
        if os.path.isdir(d):
            out.extend(os.path.join(d, n) for n in sorted(os.listdir(d)))
    return out


def test_mbsync_two_way(postern_factory, tmp_path):
    p = postern_factory()
    user = "a@" + DOMAIN
    c = p.smtp()
    for i in range(5):
        assert send(c, "s@remote.test", [user], make_message("sync %d" % i, to=user))[0] == 250
    c.quit()
    p.wait_for_delivery(user, 5)
    local = mbsync(p, str(tmp_path), user)
    files = local_files(local, "INBOX")
    assert len(files) == 5
    # mbsync stores LF line ends and adds its X-TUID header
    def norm(b):
        b = b.replace(b"\r\n", b"\n")
        return b"\n".join(ln for ln in b.split(b"\n") if not ln.startswith(b"X-TUID: "))
    server_msgs = sorted(norm(m) for m in p.maildir(user))
    assert sorted(norm(open(f, "rb").read()) for f in files) == server_msgs
    # the standard folders came over too
    for folder in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
        assert os.path.isdir(os.path.join(local, folder)), folder
    # local changes: flag one, delete one (trashed + expunged), then sync up
    f0 = files[0]
    base = f0.rsplit(":2,", 1)[0] if ":2," in f0 else f0
    os.rename(f0, base.replace("/new/", "/cur/") + ":2,FS")
    os.unlink(files[1])
    local = mbsync(p, str(tmp_path), user)
    imap = imaplib.IMAP4_SSL("127.0.0.1", p.imaps_port, ssl_context=tls_client_context())
    imap.login(user, PASSWORD)
    typ, data = imap.select("INBOX")
    assert data == [b"4"]
    typ, data = imap.search(None, "FLAGGED")
    assert len(data[0].split()) == 1
    # a new message on the server arrives locally; a local new folder reaches the server
    c = p.smtp()
    assert send(c, "s@remote.test", [user], make_message("later", to=user))[0] == 250
    c.quit()
    p.wait_for_delivery(user, 5)
    os.makedirs(os.path.join(local, "Projects", "cur"))
    os.makedirs(os.path.join(local, "Projects", "new"))
    os.makedirs(os.path.join(local, "Projects", "tmp"))
    with open(os.path.join(local, "Projects", "new", "1.local.test"), "wb") as f:
        f.write(b"From: me@example.test\r\nSubject: local draft\r\n\r\nhi\r\n")
    local = mbsync(p, str(tmp_path), user)
    assert len(local_files(local, "INBOX")) == 5
    typ, data = imap.list('""', "Projects")
    assert typ == "OK" and data[0] is not None and b"Projects" in data[0]
    typ, data = imap.select("Projects")
    assert data == [b"1"]
    imap.logout()
