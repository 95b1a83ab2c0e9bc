r"""
kill -9 of the server during mailbox traffic (issue 6 item 2): SMTP delivers into INBOX while an
IMAP client APPENDs to a folder, another reads and flags, and a third appends to Drafts, flags
\Deleted and expunges. The server is killed three times at moments when all of that is in
flight. After each restart:
  - UIDVALIDITY is unchanged and UIDs never go backwards (UIDNEXT is above every UID seen);
  - every acknowledged APPEND is there exactly once, under the UID its APPENDUID named;
  - every acknowledged SMTP message is in INBOX exactly once;
  - an acknowledged EXPUNGE stays done (nothing expunged comes back);
  - the index agrees with the files (IMAP lists exactly the messages the Maildir holds).
"""
import imaplib
import os
import re
import threading
import time

from conftest import DOMAIN, PASSWORD, RawSMTP, make_message, tls_client_context

USER = "a@" + DOMAIN
ROUNDS = 20 if os.environ.get("POSTERN_SOAK") else 3  # make soak: many more kills
TOKEN_RE = re.compile(rb"Subject: (k[aie]-\d+-\d+)")


def tokens(msgs):
    out = []
    for m in msgs:
        mm = TOKEN_RE.search(m)
        if mm:
            out.append(mm.group(1).decode())
    return out


def connect(p):
    c = imaplib.IMAP4_SSL("127.0.0.1", p.imaps_port, ssl_context=tls_client_context(),
                          timeout=10)
    c.login(USER, PASSWORD)
    return c


class Traffic:
    def __init__(self, p, rnd):
        self.p = p
        self.rnd = rnd
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.smtp_acked = set()
        self.appended = {}      # token -> uid
        self.max_uid = {}       # folder -> highest UID seen
        self.uidvalidity = {}
        self.counter = 0
        self.expunged = set()   # tokens whose EXPUNGE was acknowledged

    def seen(self, folder, uid, validity=None):
        with self.lock:
            self.max_uid[folder] = max(self.max_uid.get(folder, 0), uid)
            if validity is not None:
                self.uidvalidity[folder] = validity

    def smtp(self):
        while not self.stop.is_set():
            try:
                c = RawSMTP(self.p.smtp_port, timeout=10)
                if c.reply().code != 220 or c.cmd("EHLO load.example.test").code != 250:
                    return
                while not self.stop.is_set():
                    with self.lock:
                        self.counter += 1
                        token = "ki-%d-%d" % (self.rnd, self.counter)
                    if c.cmd("MAIL FROM:<load@remote.test>").code != 250 or \
                            c.cmd("RCPT TO:<%s>" % USER).code != 250 or \
                            c.cmd("DATA").code != 354:
                        return
                    c.send(make_message(token, to=USER) + b".\r\n")
                    if c.reply().code != 250:
                        return
                    with self.lock:
                        self.smtp_acked.add(token)
            except (OSError, EOFError, AssertionError):
                return

    def append(self):
        i = 0
        try:
            c = connect(self.p)
            while not self.stop.is_set():
                token = "ka-%d-%d" % (self.rnd, i)
                i += 1
                msg = ("From: me@example.test\r\nSubject: %s\r\n\r\nappended %d\r\n"
                       % (token, i)).encode()
                typ, data = c.append("Archive", r"(\Seen)", None, msg)
                if typ != "OK":
                    return
                m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
                with self.lock:
                    self.appended[token] = int(m.group(2))
                self.seen("Archive", int(m.group(2)), int(m.group(1)))
        except (OSError, EOFError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
            return

    def expunger(self):
        """APPEND to Drafts, STORE \\Deleted, EXPUNGE: the two-step expunge (files, then rows)."""
        i = 0
        try:
            c = connect(self.p)
            c.select("Drafts")
            while not self.stop.is_set():
                token = "ke-%d-%d" % (self.rnd, i)
                i += 1
                msg = ("From: me@example.test\r\nSubject: %s\r\n\r\ndraft %d\r\n"
                       % (token, i)).encode()
                typ, data = c.append("Drafts", None, None, msg)
                if typ != "OK":
                    return
                uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
                self.seen("Drafts", uid)
                if i % 2:
                    continue  # every other draft stays
                c.noop()
                typ, _ = c.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
                if typ != "OK":
                    return
                typ, _ = c.expunge()
                if typ != "OK":
                    return
                with self.lock:
                    self.expunged.add(token)
        except (OSError, EOFError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
            return

    def reader(self):
        try:
            c = connect(self.p)
            c.select("INBOX")
            validity = int(c.response("UIDVALIDITY")[1][0])
            while not self.stop.is_set():
                typ, data = c.fetch("1:*", "(UID FLAGS)")
                uids = [int(x) for d in data if d for x in re.findall(rb"UID (\d+)", d)]
                if uids:
                    self.seen("INBOX", max(uids), validity)
                    c.store("1", "+FLAGS", r"(\Seen $Read)")
                c.noop()
        except (OSError, EOFError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
            return


def check(p, t):
    c = connect(p)
    for folder in ("INBOX", "Archive", "Drafts"):
        typ, data = c.select(folder)
        assert typ == "OK", (folder, data)
        validity = int(c.response("UIDVALIDITY")[1][0])
        uidnext = int(c.response("UIDNEXT")[1][0])
        if folder in t.uidvalidity:
            assert validity == t.uidvalidity[folder], "%s: UIDVALIDITY changed" % folder
        assert uidnext > t.max_uid.get(folder, 0), "%s: UIDs went backwards" % folder
        typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        listed = {}
        for d in data:
            if isinstance(d, tuple):
                uid = int(re.search(rb"UID (\d+)", d[0]).group(1))
                mm = re.search(rb"Subject: (\S+)", d[1])
                if mm:
                    listed.setdefault(mm.group(1).decode(), []).append(uid)
        files = tokens(p.maildir(USER, "" if folder == "INBOX" else folder))
        dups = sorted(x for x in set(files) if files.count(x) > 1)
        assert not dups, "%s: duplicate files %s" % (folder, dups[:5])
        assert sorted(listed) == sorted(set(files)), \
            "%s: index and files disagree: %s" % (folder, sorted(set(listed) ^ set(files))[:5])
        if folder == "INBOX":
            missing = t.smtp_acked - set(files)
            assert not missing, "lost acknowledged SMTP messages: %s" % sorted(missing)[:5]
        elif folder == "Drafts":
            back = t.expunged & set(files)
            assert not back, "expunged messages came back: %s" % sorted(back)[:5]
        else:
            for token, uid in t.appended.items():
                assert token in listed, "lost an acknowledged APPEND: %s" % token
                assert listed[token] == [uid], "%s: UID %s, APPENDUID said %d" % (
                    token, listed[token], uid)
    c.logout()


def test_kill9_during_mailbox_traffic(postern_factory):
    p = postern_factory()
    history = []
    for rnd in range(ROUNDS):
        t = Traffic(p, rnd)
        # what earlier rounds established must hold in this one too
        for prev in history:
            with t.lock:
                t.smtp_acked |= prev.smtp_acked
                t.appended.update(prev.appended)
                for f, u in prev.max_uid.items():
                    t.max_uid[f] = max(t.max_uid.get(f, 0), u)
                t.uidvalidity.update(prev.uidvalidity)
                t.expunged |= prev.expunged
        threads = [threading.Thread(target=f, daemon=True)
                   for f in (t.smtp, t.smtp, t.append, t.reader, t.expunger)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with t.lock:
                new_smtp = len(t.smtp_acked) - sum(len(h.smtp_acked) for h in history[-1:])
                new_app = len(t.appended) - sum(len(h.appended) for h in history[-1:])
            if new_smtp >= 20 and new_app >= 10:
                break
            time.sleep(0.05)
        time.sleep(0.3 + 0.2 * rnd)
        p.kill9()
        t.stop.set()
        for th in threads:
            th.join(timeout=30)
        assert not any(th.is_alive() for th in threads)
        p.start()
        p.wait_for_delivery(USER, len(t.smtp_acked), timeout=30)
        check(p, t)
        history.append(t)
    print("rounds %d: smtp acked %d, appends acked %d, expunges acked %d" % (
        ROUNDS, len(history[-1].smtp_acked), len(history[-1].appended),
        len(history[-1].expunged)))
