/*
 * The mailbox store: UIDs, flags in file names, the index as a rebuildable
 * cache, changes and MODSEQs, append/copy/move, folders, subscriptions,
 * quota, retention, watchers, and a 10,000-message folder with timings.
 */
#include "lib/xalloc.h"
#include "store/directory.h"
#include "store/mailbox-private.h"
#include "store/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char tmpdir[] = "/tmp/postern-test-mailbox-XXXXXX";
static struct directory *dir;
static struct mbox_store *st;
static const char *folders = "Drafts=drafts, Sent=sent, Junk=junk, Trash=trash, Archive=archive";

#define OK(call)                                                                                   \
	do {                                                                                       \
		char *error_ = NULL;                                                               \
		if ((call) != 0)                                                                   \
			fail_msg("%s: %s", #call, error_ != NULL ? error_ : "?");                  \
		free(error_);                                                                      \
	} while (0)

#define FAILS(call, err)                                                                           \
	do {                                                                                       \
		char *error_ = NULL;                                                               \
		if ((call) != -1)                                                                  \
			fail_msg("%s succeeded", #call);                                           \
		assert_non_null(error_);                                                           \
		assert_int_equal(errno, err);                                                      \
		free(error_);                                                                      \
	} while (0)

struct user {
	int64_t id;
	char *address;
	char *maildir;
	struct mbox_account *acct;
};

static void user_make(struct user *u, const char *address, uint64_t quota)
{
	char *error = NULL;
	if (directory_user_add(dir, address, "{PLAIN}x", "", quota, &error) != 0)
		fail_msg("user_add: %s", error);
	struct resolved r;
	assert_int_equal(directory_resolve(dir, address, &r), RESOLVE_OK);
	assert_int_equal(r.naccounts, 1);
	u->id = r.accounts[0].id;
	u->address = xstrdup(r.accounts[0].address);
	u->maildir = xstrdup(r.accounts[0].maildir);
	resolved_free(&r);
	u->acct = mbox_account_open(st, u->id, u->address, u->maildir, quota, &error);
	if (u->acct == NULL)
		fail_msg("account_open: %s", error);
}

static void user_free(struct user *u)
{
	mbox_account_close(&u->acct);
	free(u->address);
	free(u->maildir);
}

static void deliver(const struct user *u, int n, int start)
{
	for (int i = 0; i < n; i++) {
		char unique[64], msg[256];
		snprintf(unique, sizeof(unique), "Q%d.%lld", start + i, (long long)u->id);
		snprintf(msg, sizeof(msg),
		         "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
		         "Subject: message %d\r\nDate: Mon, 2 Jan 2023 10:00:00 +0100\r\n"
		         "Message-ID: <m%d@example.test>\r\n\r\nbody %d\r\n",
		         start + i, start + i, start + i);
		uint64_t size;
		assert_int_equal(maildir_deliver(u->maildir, unique, 1700000000 + start + i, NULL,
		                                 msg, strlen(msg), -1, &size),
		                 0);
	}
}

/* Many messages into new/ at once, without fsync (as fast as possible; for timings). */
static void deliver_fast(const struct user *u, int n, int start)
{
	for (int i = 0; i < n; i++) {
		char msg[256];
		int len = snprintf(msg, sizeof(msg),
		                   "From: Alice <alice@example.test>\r\nSubject: message %d\r\n"
		                   "Date: Mon, 2 Jan 2023 10:00:00 +0100\r\n\r\nbody %d\r\n",
		                   start + i, start + i);
		char *p = xasprintf("%s/new/%d.Q%d.%lld.host,S=%d", u->maildir, 1700000000 + i,
		                    start + i, (long long)u->id, len);
		int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, msg, (size_t)len), len);
		close(fd);
		free(p);
	}
}

static size_t count_dir(const char *path)
{
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* The name of the only file in `dir` whose name contains `needle`, or NULL. */
static char *find_file(const char *path, const char *needle)
{
	DIR *d = opendir(path);
	if (d == NULL)
		return NULL;
	char *found = NULL;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strstr(de->d_name, needle) != NULL) {
			free(found);
			found = xstrdup(de->d_name);
		}
	closedir(d);
	return found;
}

static void reopen_store_without_index(void)
{
	mbox_store_free(&st);
	/* every account's index file */
	char *idx = xasprintf("%s/index", tmpdir);
	DIR *d = opendir(idx);
	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d)) != NULL;) {
		if (de->d_name[0] == '.')
			continue;
		char *p = xasprintf("%s/%s", idx, de->d_name);
		unlink(p);
		free(p);
	}
	closedir(d);
	free(idx);
	char *error = NULL;
	st = mbox_store_new(tmpdir, folders, &error);
	if (st == NULL)
		fail_msg("store_new: %s", error);
}

static void test_basics(void **state)
{
	struct user u;
	user_make(&u, "basic@example.test", 0);
	char *p = xasprintf("%s/.Trash/cur", u.maildir);
	struct stat sb;
	assert_int_equal(stat(p, &sb), 0);
	free(p);
	deliver(&u, 3, 1);
	struct mbox *box;
	OK(mbox_open(u.acct, "inbox", false, &box, &error_));
	struct mbox_status s;
	mbox_get_status(box, &s);
	assert_int_equal(s.messages, 3);
	assert_int_equal(s.uidnext, 4);
	assert_int_equal(s.unseen, 3);
	assert_int_equal(s.recent, 3);
	assert_true(s.uidvalidity > 0);
	struct mbox_msg *m;
	size_t n;
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, 3);
	uint32_t three[3];
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(m[i].uid, i + 1);
		assert_int_equal(m[i].flags, MBOX_F_RECENT);
		assert_int_equal(m[i].internaldate, 0); /* no dates here: mbox_messages_get() */
		three[i] = m[i].uid;
	}
	OK(mbox_messages_get(box, three, 3, m, &error_));
	for (size_t i = 0; i < n; i++) {
		/* INTERNALDATE: the file's mtime, as Dovecot */
		assert_true(m[i].internaldate > time(NULL) - 60);
		assert_true(m[i].savedate > time(NULL) - 60);
	}
	free(m);
	/* new/ -> cur/ with ":2," */
	char *newdir = xasprintf("%s/new", u.maildir), *curdir = xasprintf("%s/cur", u.maildir);
	assert_int_equal(count_dir(newdir), 0);
	assert_int_equal(count_dir(curdir), 3);
	char *f = find_file(curdir, "Q2.");
	assert_non_null(f);
	assert_non_null(strstr(f, ":2,"));
	free(f);

	/* cache */
	struct mbox_cache c;
	OK(mbox_msg_cache(box, 2, &c, &error_));
	assert_string_equal(c.subject, "message 2");
	assert_string_equal(c.sort_from, "alice");
	assert_string_equal(c.display_from, "Alice");
	assert_string_equal(c.message_id, "<m2@example.test>");
	assert_int_equal(c.date, 1672650000);
	assert_int_equal(c.date_tz, 60);
	assert_non_null(strstr(c.envelope, "\"message 2\""));
	assert_non_null(strcasestr(c.bodystructure, "\"TEXT\""));
	mbox_cache_clear(&c);
	int fd;
	OK(mbox_msg_open(box, 3, &fd, &error_));
	char buf[16];
	assert_int_equal(read(fd, buf, 5), 5);
	assert_memory_equal(buf, "From:", 5);
	close(fd);
	FAILS(mbox_msg_open(box, 9, &fd, &error_), ENOENT);

	/* a second read-write session takes no \Recent; a new delivery is recent for it */
	struct mbox *box2;
	OK(mbox_open(u.acct, "INBOX", false, &box2, &error_));
	mbox_get_status(box2, &s);
	assert_int_equal(s.recent, 0);
	deliver(&u, 1, 4);
	OK(mbox_sync(box2, &error_));
	mbox_get_status(box2, &s);
	assert_int_equal(s.messages, 4);
	assert_int_equal(s.recent, 1);
	OK(mbox_messages(box2, &m, &n, &error_));
	assert_int_equal(m[3].flags, MBOX_F_RECENT);
	assert_int_equal(m[0].flags, 0);
	free(m);
	mbox_close(&box2);
	mbox_close(&box);

	/* STATUS, and an unknown folder */
	OK(mbox_folder_status(u.acct, "INBOX", &s, &error_));
	assert_int_equal(s.messages, 4);
	assert_int_equal(s.recent, 0);
	FAILS(mbox_folder_status(u.acct, "Nope", &s, &error_), ENOENT);
	FAILS(mbox_open(u.acct, "a.b", false, &box, &error_), EINVAL);

	/* the uidlist deleted behind our back is written again from the index */
	char *ulp = xasprintf("%s/postern-uidlist", u.maildir);
	assert_int_equal(unlink(ulp), 0);
	deliver(&u, 1, 5);
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	mbox_close(&box);
	reopen_store_without_index();
	mbox_account_close(&u.acct);
	char *error = NULL;
	u.acct = mbox_account_open(st, u.id, u.address, u.maildir, 0, &error);
	assert_non_null(u.acct);
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, 5);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(m[i].uid, i + 1);
	free(m);
	mbox_close(&box);
	free(ulp);
	free(newdir);
	free(curdir);
	user_free(&u);
}

static void test_flags_rebuild(void **state)
{
	struct user u;
	user_make(&u, "flags@example.test", 0);
	deliver(&u, 4, 1);
	struct mbox *box;
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	struct mbox_status s0;
	mbox_get_status(box, &s0);
	int junk = mbox_keyword_index(box, "$Junk", true);
	int work = mbox_keyword_index(box, "Work", true);
	assert_int_equal(junk, 0);
	assert_int_equal(work, 1);
	assert_int_equal(mbox_keyword_index(box, "$junk", false), 0);
	assert_int_equal(mbox_keyword_index(box, "absent", false), -1);
	uint32_t uids[] = {2, 3};
	struct mbox_msg *ch;
	size_t nch;
	OK(mbox_store(box, uids, 2, MBOX_STORE_ADD, MBOX_F_SEEN | MBOX_F_FLAGGED, 1u << work, 0,
	              &ch, &nch, NULL, NULL, &error_));
	assert_int_equal(nch, 2);
	assert_int_equal(ch[0].uid, 2);
	assert_int_equal(ch[0].flags & ~MBOX_F_RECENT, MBOX_F_SEEN | MBOX_F_FLAGGED);
	assert_int_equal(ch[0].keywords, 1u << work);
	assert_true(ch[0].modseq > s0.highestmodseq);
	uint64_t ms = ch[0].modseq;
	free(ch);
	/* no-op store: nothing changes */
	OK(mbox_store(box, uids, 2, MBOX_STORE_ADD, MBOX_F_SEEN, 0, 0, &ch, &nch, NULL, NULL,
	              &error_));
	assert_int_equal(nch, 0);
	free(ch);
	uint32_t u4[] = {4};
	OK(mbox_store(box, u4, 1, MBOX_STORE_SET, MBOX_F_ANSWERED | MBOX_F_DELETED, 1u << junk, 0,
	              NULL, NULL, NULL, NULL, &error_));
	/* CONDSTORE: UNCHANGEDSINCE older than the message's modseq fails */
	uint32_t *failed;
	size_t nfailed;
	OK(mbox_store(box, uids, 2, MBOX_STORE_REMOVE, MBOX_F_SEEN, 0, ms - 1, &ch, &nch, &failed,
	              &nfailed, &error_));
	assert_int_equal(nch, 0);
	assert_int_equal(nfailed, 2);
	assert_int_equal(failed[0], 2);
	free(failed);
	free(ch);
	mbox_close(&box);

	/* in the file names */
	char *curdir = xasprintf("%s/cur", u.maildir);
	char *f = find_file(curdir, "Q2.");
	assert_non_null(strstr(f, ":2,FSb"));
	free(f);
	f = find_file(curdir, "Q4.");
	assert_non_null(strstr(f, ":2,RTa"));
	free(f);

	/* the index is only a cache */
	reopen_store_without_index();
	mbox_account_close(&u.acct);
	char *error = NULL;
	u.acct = mbox_account_open(st, u.id, u.address, u.maildir, 0, &error);
	assert_non_null(u.acct);
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	struct mbox_status s1;
	mbox_get_status(box, &s1);
	assert_int_equal(s1.uidvalidity, s0.uidvalidity);
	assert_int_equal(s1.uidnext, 5);
	assert_int_equal(s1.messages, 4);
	struct mbox_msg *m;
	size_t n;
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(m[i].uid, i + 1);
	assert_int_equal(m[1].flags & ~MBOX_F_RECENT, MBOX_F_SEEN | MBOX_F_FLAGGED);
	assert_int_equal(m[1].keywords, 2);
	assert_int_equal(m[3].flags & ~MBOX_F_RECENT, MBOX_F_ANSWERED | MBOX_F_DELETED);
	assert_int_equal(m[3].keywords, 1);
	free(m);
	size_t nkw;
	const char *const *kw = mbox_keywords(box, &nkw);
	assert_int_equal(nkw, 2);
	assert_string_equal(kw[0], "$Junk");
	assert_string_equal(kw[1], "Work");

	/* an external program (mutt) marks message 1 seen */
	mbox_get_status(box, &s0);
	f = find_file(curdir, "Q1.");
	char *from = xasprintf("%s/%s", curdir, f);
	char *to = xasprintf("%s/%sS", curdir, f);
	assert_int_equal(rename(from, to), 0);
	free(from);
	free(to);
	free(f);
	OK(mbox_sync(box, &error_));
	uint32_t *ex;
	size_t nex;
	OK(mbox_changes(box, s0.highestmodseq, &m, &n, &ex, &nex, &error_));
	assert_int_equal(n, 1);
	assert_int_equal(m[0].uid, 1);
	assert_int_equal(m[0].flags & ~MBOX_F_RECENT, MBOX_F_SEEN);
	assert_true(m[0].modseq > s0.highestmodseq);
	assert_int_equal(nex, 0);
	free(m);
	free(ex);

	/* expunge: only \Deleted, and only those listed for UID EXPUNGE */
	mbox_get_status(box, &s0);
	uint32_t u3[] = {3};
	OK(mbox_store(box, u3, 1, MBOX_STORE_ADD, MBOX_F_DELETED, 0, 0, NULL, NULL, NULL, NULL,
	              &error_));
	OK(mbox_expunge(box, u3, 1, &ex, &nex, &error_));
	assert_int_equal(nex, 1);
	assert_int_equal(ex[0], 3);
	free(ex);
	OK(mbox_expunge(box, NULL, 0, &ex, &nex, &error_));
	assert_int_equal(nex, 1);
	assert_int_equal(ex[0], 4);
	free(ex);
	OK(mbox_changes(box, s0.highestmodseq, &m, &n, &ex, &nex, &error_));
	assert_int_equal(nex, 2);
	assert_int_equal(ex[0], 3);
	assert_int_equal(ex[1], 4);
	free(m);
	free(ex);
	assert_int_equal(count_dir(curdir), 2);
	/* a file removed behind our back is expunged by the next sync */
	f = find_file(curdir, "Q2.");
	char *gone = xasprintf("%s/%s", curdir, f);
	unlink(gone);
	free(gone);
	free(f);
	mbox_get_status(box, &s0);
	OK(mbox_sync(box, &error_));
	OK(mbox_changes(box, s0.highestmodseq, &m, &n, &ex, &nex, &error_));
	assert_int_equal(nex, 1);
	assert_int_equal(ex[0], 2);
	free(m);
	free(ex);

	/* a lost uidlist is written again from the index by a reindex */
	char *ulp = xasprintf("%s/postern-uidlist", u.maildir);
	assert_int_equal(unlink(ulp), 0);
	OK(mbox_reindex(st, u.id, u.address, u.maildir, &error_));
	struct stat usb;
	assert_int_equal(stat(ulp, &usb), 0);
	free(ulp);

	/* postern reindex under an open session: same UIDs, the session goes on, MODSEQs rise */
	mbox_get_status(box, &s0);
	OK(mbox_reindex(st, u.id, u.address, u.maildir, &error_));
	OK(mbox_sync(box, &error_));
	mbox_get_status(box, &s1);
	assert_int_equal(s1.uidvalidity, s0.uidvalidity);
	assert_int_equal(s1.uidnext, s0.uidnext);
	assert_int_equal(s1.messages, 1);
	OK(mbox_changes(box, s0.highestmodseq, &m, &n, &ex, &nex, &error_));
	assert_int_equal(n, 1);
	assert_int_equal(m[0].uid, 1);
	assert_int_equal(m[0].flags & ~MBOX_F_RECENT, MBOX_F_SEEN);
	assert_int_equal(nex, 0);
	free(m);
	free(ex);
	mbox_close(&box);
	free(curdir);
	user_free(&u);
}

static void test_append_copy(void **state)
{
	struct user u;
	user_make(&u, "append@example.test", 0);
	const char *kws[] = {"$Forwarded", "Important"};
	const char *text = "Subject: appended\r\n\r\nhi\r\n";
	struct mbox_append ap[2] = {
	    {.data = text,
	     .len = strlen(text),
	     .flags = MBOX_F_SEEN,
	     .keywords = kws,
	     .nkeywords = 2,
	     .internaldate = 1600000000},
	    {.data = "Subject: two\n\nbare LF\n", .len = 22, .flags = 0},
	};
	uint32_t uv, uids[2];
	OK(mbox_append(u.acct, "Drafts", ap, 2, &uv, uids, &error_));
	assert_int_equal(uids[0], 1);
	assert_int_equal(uids[1], 2);
	FAILS(mbox_append(u.acct, "NoSuch", ap, 1, &uv, uids, &error_), ENOENT);
	struct mbox *box;
	OK(mbox_open(u.acct, "Drafts", false, &box, &error_));
	struct mbox_status s;
	mbox_get_status(box, &s);
	assert_int_equal(s.uidvalidity, uv);
	assert_int_equal(s.messages, 2);
	struct mbox_msg *m;
	size_t n;
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(m[0].flags & ~MBOX_F_RECENT, MBOX_F_SEEN);
	assert_int_equal(m[0].keywords, 3);
	uint32_t first = m[0].uid;
	struct mbox_msg rec;
	OK(mbox_messages_get(box, &first, 1, &rec, &error_));
	assert_int_equal(rec.internaldate, 1600000000);
	assert_int_equal(m[0].size, strlen(text));
	assert_int_equal(m[1].size, 22 + 3); /* RFC822.SIZE counts CRLF */
	free(m);
	char *dd = xasprintf("%s/.Drafts/cur", u.maildir);
	char *f = find_file(dd, ":2,Sab");
	assert_non_null(f);
	free(f);
	free(dd);

	/* copy to Archive: UID pairs, keywords by name */
	uint32_t both[] = {1, 2}, *su, *du;
	size_t nc;
	OK(mbox_copy(box, both, 2, "Archive", false, &uv, &su, &du, &nc, &error_));
	assert_int_equal(nc, 2);
	assert_int_equal(su[0], 1);
	assert_int_equal(du[0], 1);
	assert_int_equal(su[1], 2);
	assert_int_equal(du[1], 2);
	free(su);
	free(du);
	struct mbox *arch;
	OK(mbox_open(u.acct, "Archive", false, &arch, &error_));
	mbox_get_status(arch, &s);
	assert_int_equal(s.uidvalidity, uv);
	assert_int_equal(s.messages, 2);
	size_t nkw;
	const char *const *kw = mbox_keywords(arch, &nkw);
	assert_int_equal(nkw, 2);
	assert_string_equal(kw[0], "$Forwarded");
	struct mbox_cache c;
	OK(mbox_msg_cache(arch, 1, &c, &error_));
	assert_string_equal(c.subject, "appended");
	mbox_cache_clear(&c);

	/* move back one: the source is expunged */
	uint32_t one[] = {2};
	OK(mbox_copy(arch, one, 1, "Drafts", true, &uv, &su, &du, &nc, &error_));
	assert_int_equal(nc, 1);
	assert_int_equal(su[0], 2);
	assert_int_equal(du[0], 3);
	free(su);
	free(du);
	uint32_t *ex;
	size_t nex;
	OK(mbox_changes(arch, 0, &m, &n, &ex, &nex, &error_));
	assert_int_equal(n, 1);
	assert_int_equal(nex, 1);
	assert_int_equal(ex[0], 2);
	free(m);
	free(ex);
	/* copy into the same folder */
	OK(mbox_copy(arch, (uint32_t[]){1}, 1, "Archive", false, &uv, &su, &du, &nc, &error_));
	assert_int_equal(du[0], 3);
	free(su);
	free(du);
	mbox_close(&arch);
	mbox_close(&box);
	user_free(&u);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* A folder copied from a Dovecot server keeps its UIDVALIDITY, UIDs and keywords. */
static void test_dovecot_copy(void **state)
{
	struct user u;
	user_make(&u, "dovecot@example.test", 0);
	char *f = xasprintf("%s/.Imported", u.maildir);
	char *sub[] = {"cur", "new", "tmp"};
	assert_int_equal(mkdir(f, 0700), 0);
	for (size_t i = 0; i < 3; i++) {
		char *p = xasprintf("%s/%s", f, sub[i]);
		assert_int_equal(mkdir(p, 0700), 0);
		free(p);
	}
	char *p = xasprintf("%s/dovecot-uidlist", f);
	write_text(p, "3 V1234567 N43 Gabcdef\n"
	              "7 W30 :1600000000.M1P1.old,S=28,W=30\n"
	              "41 :1600000001.M2P1.old,S=20\n");
	free(p);
	p = xasprintf("%s/dovecot-keywords", f);
	write_text(p, "0 $Junk\n1 NonJunk\n");
	free(p);
	p = xasprintf("%s/cur/1600000000.M1P1.old,S=28,W=30:2,Sb", f);
	write_text(p, "Subject: one\n\nfirst body\n");
	free(p);
	p = xasprintf("%s/cur/1600000001.M2P1.old,S=20:2,", f);
	write_text(p, "Subject: two\n\nsecond\n");
	free(p);
	p = xasprintf("%s/new/1600000002.M3P1.old,S=20", f);
	write_text(p, "Subject: new\n\nthird\n");
	free(p);
	struct mbox *box;
	OK(mbox_open(u.acct, "Imported", false, &box, &error_));
	struct mbox_status s;
	mbox_get_status(box, &s);
	assert_int_equal(s.uidvalidity, 1234567);
	assert_int_equal(s.uidnext, 44);
	struct mbox_msg *m;
	size_t n;
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, 3);
	assert_int_equal(m[0].uid, 7);
	assert_int_equal(m[0].flags & ~MBOX_F_RECENT, MBOX_F_SEEN);
	assert_int_equal(m[0].keywords, 2);
	assert_int_equal(m[0].size, 25 + 3); /* LF files: RFC822.SIZE with CRLF */
	assert_int_equal(m[1].uid, 41);
	assert_int_equal(m[2].uid, 43);
	free(m);
	size_t nkw;
	const char *const *kw = mbox_keywords(box, &nkw);
	assert_int_equal(nkw, 2);
	assert_string_equal(kw[1], "NonJunk");
	mbox_close(&box);
	free(f);
	user_free(&u);
}

static bool folder_listed(struct mbox_folder *l, size_t n, const char *name, bool *nonexistent_r,
                          bool *children_r, bool *subscribed_r, unsigned *special_r)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i].name, name) == 0) {
			if (nonexistent_r)
				*nonexistent_r = l[i].nonexistent;
			if (children_r)
				*children_r = l[i].has_children;
			if (subscribed_r)
				*subscribed_r = l[i].subscribed;
			if (special_r)
				*special_r = l[i].special;
			return true;
		}
	return false;
}

static void test_folders(void **state)
{
	struct user u;
	user_make(&u, "folders@example.test", 0);
	struct mbox_folder *l;
	size_t n;
	OK(mbox_folders(u.acct, &l, &n, &error_));
	assert_int_equal(n, 6);
	assert_string_equal(l[0].name, "INBOX");
	unsigned sp;
	bool sub, ne, ch;
	assert_true(folder_listed(l, n, "Trash", NULL, NULL, &sub, &sp));
	assert_int_equal(sp, MBOX_SPECIAL_TRASH);
	assert_true(sub);
	mbox_folders_free(&l, n);

	OK(mbox_folder_create(u.acct, "Projects/2024/Q1", 0, &error_));
	OK(mbox_folder_create(u.acct, "Entwürfe/Ärger", 0, &error_));
	OK(mbox_folder_create(u.acct, "Stuff", MBOX_SPECIAL_ARCHIVE, &error_));
	FAILS(mbox_folder_create(u.acct, "Stuff", 0, &error_), EEXIST);
	FAILS(mbox_folder_create(u.acct, "inbox", 0, &error_), EEXIST);
	FAILS(mbox_folder_create(u.acct, "a.b", 0, &error_), EINVAL);
	FAILS(mbox_folder_create(u.acct, "x//y", 0, &error_), EINVAL);
	FAILS(mbox_folder_create(u.acct, "bad\xff", 0, &error_), EINVAL);
	/* mUTF-7 on disk, as Dovecot */
	char *p = xasprintf("%s/.Entw&APw-rfe.&AMQ-rger/cur", u.maildir);
	struct stat sb;
	assert_int_equal(stat(p, &sb), 0);
	free(p);
	OK(mbox_folders(u.acct, &l, &n, &error_));
	assert_true(folder_listed(l, n, "Entwürfe/Ärger", &ne, NULL, NULL, NULL));
	assert_false(ne);
	assert_true(folder_listed(l, n, "Projects", &ne, &ch, NULL, NULL));
	assert_false(ne); /* parents are created */
	assert_true(ch);
	assert_true(folder_listed(l, n, "Stuff", NULL, NULL, NULL, &sp));
	assert_int_equal(sp, MBOX_SPECIAL_ARCHIVE);
	mbox_folders_free(&l, n);

	/* rename with children; the special use follows */
	deliver(&u, 0, 0);
	uint32_t uv, uid;
	struct mbox_append ap = {.data = "Subject: x\r\n\r\n", .len = 14};
	OK(mbox_append(u.acct, "Projects/2024", &ap, 1, &uv, &uid, &error_));
	OK(mbox_folder_rename(u.acct, "Projects", "Work/Old", &error_));
	OK(mbox_folder_rename(u.acct, "Stuff", "Things", &error_));
	FAILS(mbox_folder_rename(u.acct, "Projects", "X", &error_), ENOENT);
	FAILS(mbox_folder_rename(u.acct, "Things", "Trash", &error_), EEXIST);
	/* a child's new name taken: nothing is renamed */
	OK(mbox_folder_create(u.acct, "Mv/Sub", 0, &error_));
	OK(mbox_folder_create(u.acct, "Dst/Sub", 0, &error_));
	OK(mbox_folder_delete(u.acct, "Dst", &error_));
	FAILS(mbox_folder_rename(u.acct, "Mv", "Dst", &error_), EEXIST);
	struct mbox_status smv;
	OK(mbox_folder_status(u.acct, "Mv", &smv, &error_));
	OK(mbox_folder_status(u.acct, "Mv/Sub", &smv, &error_));
	struct mbox_status s;
	OK(mbox_folder_status(u.acct, "Work/Old/2024", &s, &error_));
	assert_int_equal(s.messages, 1);
	assert_int_equal(s.uidvalidity, uv); /* kept by a rename */
	OK(mbox_folders(u.acct, &l, &n, &error_));
	assert_false(folder_listed(l, n, "Projects", NULL, NULL, NULL, NULL));
	assert_true(folder_listed(l, n, "Work/Old/2024/Q1", NULL, NULL, NULL, NULL));
	assert_true(folder_listed(l, n, "Work", &ne, &ch, NULL, NULL));
	assert_true(ne);
	assert_true(ch);
	assert_true(folder_listed(l, n, "Things", NULL, NULL, NULL, &sp));
	assert_int_equal(sp, MBOX_SPECIAL_ARCHIVE);
	mbox_folders_free(&l, n);

	/* delete: the children stay; INBOX cannot go */
	OK(mbox_folder_delete(u.acct, "Work/Old/2024", &error_));
	FAILS(mbox_folder_delete(u.acct, "Work/Old/2024", &error_), ENOENT);
	FAILS(mbox_folder_delete(u.acct, "INBOX", &error_), EPERM);
	OK(mbox_folders(u.acct, &l, &n, &error_));
	assert_true(folder_listed(l, n, "Work/Old/2024", &ne, NULL, NULL, NULL));
	assert_true(ne);
	assert_true(folder_listed(l, n, "Work/Old/2024/Q1", &ne, NULL, NULL, NULL));
	assert_false(ne);
	mbox_folders_free(&l, n);

	/* INBOX rename: its messages move, INBOX stays (empty) */
	deliver(&u, 2, 1);
	OK(mbox_folder_rename(u.acct, "INBOX", "Old Inbox", &error_));
	OK(mbox_folder_status(u.acct, "INBOX", &s, &error_));
	assert_int_equal(s.messages, 0);
	OK(mbox_folder_status(u.acct, "Old Inbox", &s, &error_));
	assert_int_equal(s.messages, 2);

	/* subscriptions */
	OK(mbox_folder_subscribe(u.acct, "Things", true, &error_));
	OK(mbox_folder_subscribe(u.acct, "Gone/Away", true, &error_));
	OK(mbox_folder_subscribe(u.acct, "Trash", false, &error_));
	OK(mbox_folders(u.acct, &l, &n, &error_));
	assert_true(folder_listed(l, n, "Things", NULL, NULL, &sub, NULL));
	assert_true(sub);
	assert_true(folder_listed(l, n, "Trash", NULL, NULL, &sub, NULL));
	assert_false(sub);
	assert_true(folder_listed(l, n, "Gone/Away", &ne, NULL, &sub, NULL));
	assert_true(ne);
	assert_true(sub);
	mbox_folders_free(&l, n);
	char *sf = xasprintf("%s/subscriptions", u.maildir);
	FILE *fp = fopen(sf, "r");
	char buf[512] = "";
	size_t got = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[got] = '\0';
	fclose(fp);
	free(sf);
	assert_non_null(strstr(buf, "Things\n"));
	assert_null(strstr(buf, "Trash\n"));
	user_free(&u);

	/* the [mailbox] folders knob decides what maildir_create() makes */
	FAILS(mbox_folders_configure("Junk=rubbish", &error_), EINVAL);
	FAILS(mbox_folders_configure("A.B=junk", &error_), EINVAL);
	FAILS(mbox_folders_configure("INBOX", &error_), EINVAL);
	OK(mbox_folders_configure("Brouillons=drafts, Projets/\xc3\x89t\xc3\xa9", &error_));
	char *md = xasprintf("%s/mail/other/knob", tmpdir);
	assert_int_equal(maildir_create(md), 0);
	static const char *const want[] = {"/.Brouillons/cur", "/.Projets.&AMk-t&AOk-/new"};
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		char *wp = xasprintf("%s%s", md, want[i]);
		assert_int_equal(stat(wp, &sb), 0);
		free(wp);
	}
	char *trash = xasprintf("%s/.Trash", md);
	assert_int_equal(stat(trash, &sb), -1);
	free(trash);
	free(md);
	OK(mbox_folders_configure(folders, &error_));
}

static void test_quota(void **state)
{
	struct user u;
	user_make(&u, "quota@example.test", 1000);
	char big[600];
	memset(big, 'x', sizeof(big));
	memcpy(big, "Subject: q\r\n\r\n", 14);
	struct mbox_append ap = {.data = big, .len = sizeof(big)};
	uint32_t uv, uid;
	OK(mbox_append(u.acct, "INBOX", &ap, 1, &uv, &uid, &error_));
	uint64_t used, limit;
	OK(mbox_quota(u.acct, &used, &limit, &error_));
	assert_int_equal(used, 600);
	assert_int_equal(limit, 1000);
	FAILS(mbox_append(u.acct, "INBOX", &ap, 1, &uv, &uid, &error_), EDQUOT);
	struct mbox *box;
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	uint32_t *su, *du;
	size_t nc;
	FAILS(mbox_copy(box, &uid, 1, "Trash", false, &uv, &su, &du, &nc, &error_), EDQUOT);
	/* a move does not add */
	OK(mbox_copy(box, &uid, 1, "Trash", true, &uv, &su, &du, &nc, &error_));
	free(su);
	free(du);
	OK(mbox_quota(u.acct, &used, &limit, &error_));
	assert_int_equal(used, 600);
	mbox_close(&box);
	/* deleting a folder frees its bytes */
	OK(mbox_folder_delete(u.acct, "Trash", &error_));
	OK(mbox_quota(u.acct, &used, &limit, &error_));
	assert_int_equal(used, 0);
	/* a counter that drifted is set right by a reindex */
	OK(mbox_append(u.acct, "INBOX", &ap, 1, &uv, &uid, &error_));
	assert_int_equal(directory_usage_add(dir, u.id, 5000), 0);
	OK(mbox_reindex(st, u.id, u.address, u.maildir, &error_));
	OK(mbox_quota(u.acct, &used, &limit, &error_));
	assert_int_equal(used, 600);
	user_free(&u);
}

/* An account's index database, opened as another program would (close with sqlite3_close()). */
static sqlite3 *index_db(int64_t account_id)
{
	sqlite3 *db;
	char *p = xasprintf("%s/index/%lld.db", tmpdir, (long long)account_id);
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	free(p);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static void age_messages(int64_t account_id, const char *folder_like, int64_t savedate)
{
	sqlite3 *db = index_db(account_id);
	char *sql = sqlite3_mprintf("UPDATE messages SET savedate = %lld WHERE folder_id IN "
	                            "(SELECT id FROM folders WHERE name = %Q)",
	                            (long long)savedate, folder_like);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_free(sql);
	sqlite3_close(db);
}

static void test_retention(void **state)
{
	struct user u;
	user_make(&u, "retention@example.test", 0);
	struct mbox_append ap = {.data = "Subject: r\r\n\r\n", .len = 14};
	uint32_t uv, uid;
	static const char *const fs[] = {"Trash", "Junk", "Sent", "INBOX"};
	for (size_t i = 0; i < ARRAY_SIZE(fs); i++) {
		OK(mbox_append(u.acct, fs[i], &ap, 1, &uv, &uid, &error_));
		OK(mbox_append(u.acct, fs[i], &ap, 1, &uv, &uid, &error_));
	}
	time_t now = time(NULL);
	for (size_t i = 0; i < ARRAY_SIZE(fs); i++)
		age_messages(u.id, fs[i], now - 40 * 86400);
	/* one fresh message in Trash */
	OK(mbox_append(u.acct, "Trash", &ap, 1, &uv, &uid, &error_));
	size_t deleted;
	OK(mbox_expire(st, u.id, u.address, u.maildir, 30 * 86400, 0, &deleted, &error_));
	assert_int_equal(deleted, 2);
	struct mbox_status s;
	OK(mbox_folder_status(u.acct, "Trash", &s, &error_));
	assert_int_equal(s.messages, 1);
	OK(mbox_folder_status(u.acct, "Junk", &s, &error_));
	assert_int_equal(s.messages, 2);
	OK(mbox_expire(st, u.id, u.address, u.maildir, 30 * 86400, 50 * 86400, &deleted, &error_));
	assert_int_equal(deleted, 0);
	/* a file a crash left in tmp/ two days ago goes, a fresh one stays */
	char *old_tmp = xasprintf("%s/.Sent/tmp/crashed", u.maildir);
	char *new_tmp = xasprintf("%s/.Sent/tmp/writing", u.maildir);
	write_text(old_tmp, "x");
	write_text(new_tmp, "y");
	struct timespec two_days[2] = {{.tv_sec = now - 2 * 86400}, {.tv_sec = now - 2 * 86400}};
	assert_int_equal(utimensat(AT_FDCWD, old_tmp, two_days, 0), 0);
	OK(mbox_expire(st, u.id, u.address, u.maildir, 0, 0, &deleted, &error_));
	assert_int_equal(deleted, 0);
	assert_int_equal(access(old_tmp, F_OK), -1);
	assert_int_equal(access(new_tmp, F_OK), 0);
	free(old_tmp);
	free(new_tmp);
	OK(mbox_expire(st, u.id, u.address, u.maildir, 30 * 86400, 10 * 86400, &deleted, &error_));
	assert_int_equal(deleted, 2);
	OK(mbox_folder_status(u.acct, "Sent", &s, &error_));
	assert_int_equal(s.messages, 2);
	OK(mbox_folder_status(u.acct, "INBOX", &s, &error_));
	assert_int_equal(s.messages, 2);
	user_free(&u);
}

static int fired[4];
static void on_change(void *arg)
{
	fired[(intptr_t)arg]++;
}

static void test_watch_two_sessions(void **state)
{
	struct user u;
	user_make(&u, "watch@example.test", 0);
	struct mbox_watch *w0 = mbox_watch(st, u.maildir, "INBOX", on_change, (void *)0);
	struct mbox_watch *w1 = mbox_watch(st, u.maildir, "Sent", on_change, (void *)1);
	mbox_notify(u.maildir, "inbox");
	assert_int_equal(fired[0], 1);
	assert_int_equal(fired[1], 0);
	mbox_notify("/elsewhere", "INBOX");
	assert_int_equal(fired[0], 1);

	deliver(&u, 2, 1);
	struct mbox *a, *b;
	OK(mbox_open(u.acct, "INBOX", false, &a, &error_));
	assert_true(fired[0] >= 2); /* the sync that found the deliveries */
	OK(mbox_open(u.acct, "INBOX", false, &b, &error_));
	struct mbox_status sb;
	mbox_get_status(b, &sb);
	int before = fired[0];
	uint32_t uid = 2;
	OK(mbox_store(a, &uid, 1, MBOX_STORE_ADD, MBOX_F_SEEN, 0, 0, NULL, NULL, NULL, NULL,
	              &error_));
	assert_int_equal(fired[0], before + 1);
	OK(mbox_sync(b, &error_));
	struct mbox_msg *m;
	size_t n;
	uint32_t *ex;
	size_t nex;
	OK(mbox_changes(b, sb.highestmodseq, &m, &n, &ex, &nex, &error_));
	assert_int_equal(n, 1);
	assert_int_equal(m[0].uid, 2);
	assert_int_equal(m[0].flags, MBOX_F_SEEN);
	free(m);
	free(ex);
	struct mbox_append ap = {.data = "Subject: s\r\n\r\n", .len = 14};
	uint32_t uv;
	OK(mbox_append(u.acct, "Sent", &ap, 1, &uv, &uid, &error_));
	assert_int_equal(fired[1], 1);
	mbox_unwatch(st, &w0);
	assert_null(w0);
	mbox_notify(u.maildir, "INBOX");
	assert_int_equal(fired[0], before + 1);
	mbox_unwatch(st, &w1);
	mbox_close(&a);
	mbox_close(&b);
	user_free(&u);
}

struct worker_arg {
	struct user *u;
	int which;
	int fails;
};

static void *worker(void *p)
{
	struct worker_arg *w = p;
	char *error = NULL;
	struct mbox_account *acct =
	    mbox_account_open(st, w->u->id, w->u->address, w->u->maildir, 0, &error);
	if (acct == NULL) {
		w->fails++;
		free(error);
		return NULL;
	}
	for (int i = 0; i < 25; i++) {
		if (w->which == 2) {
			/* a delivery into new/, then a session's sync */
			deliver(w->u, 1, 1000 + i);
			struct mbox *box;
			if (mbox_open(acct, "INBOX", false, &box, &error) < 0) {
				w->fails++;
				xfree(&error);
				continue;
			}
			mbox_close(&box);
		} else {
			struct mbox_append ap = {.data = "Subject: t\r\n\r\nx\r\n", .len = 18};
			uint32_t uv, uid;
			if (mbox_append(acct, "INBOX", &ap, 1, &uv, &uid, &error) < 0) {
				w->fails++;
				xfree(&error);
			}
		}
	}
	mbox_account_close(&acct);
	return NULL;
}

static void test_threads(void **state)
{
	struct user u;
	user_make(&u, "threads@example.test", 0);
	pthread_t t[3];
	struct worker_arg args[3];
	for (int i = 0; i < 3; i++) {
		args[i] = (struct worker_arg){.u = &u, .which = i};
		assert_int_equal(pthread_create(&t[i], NULL, worker, &args[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(args[i].fails, 0);
	}
	struct mbox *box;
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	struct mbox_msg *m;
	size_t n;
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, 75);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(m[i].uid, i + 1); /* each UID given once, none skipped */
	free(m);
	mbox_close(&box);
	/* and the uidlist agrees after the index is lost */
	reopen_store_without_index();
	mbox_account_close(&u.acct);
	char *error = NULL;
	u.acct = mbox_account_open(st, u.id, u.address, u.maildir, 0, &error);
	assert_non_null(u.acct);
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, 75);
	assert_int_equal(m[74].uid, 75);
	free(m);
	mbox_close(&box);
	user_free(&u);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static uint32_t flags_of(struct mbox *box, uint32_t uid)
{
	struct mbox_msg *m;
	size_t n;
	uint32_t f = UINT32_MAX;
	OK(mbox_messages(box, &m, &n, &error_));
	for (size_t i = 0; i < n; i++)
		if (m[i].uid == uid)
			f = m[i].flags & ~MBOX_F_RECENT;
	free(m);
	return f;
}

/* Another program adds a flag letter to the name of the cur/ file whose name holds needle. */
static void foreign_flag(const char *curdir, const char *needle, char letter)
{
	char *f = find_file(curdir, needle);
	assert_non_null(f);
	const char *fl = strstr(f, ":2,");
	assert_non_null(fl);
	assert_null(strchr(fl, letter));
	char *from = xasprintf("%s/%s", curdir, f);
	char *to = xasprintf("%s/%s%c", curdir, f, letter);
	assert_int_equal(rename(from, to), 0);
	free(from);
	free(to);
	free(f);
}

/*
 * Our own changes keep the index in step with cur/ without a scan; another
 * program's change made right after one of ours (in the same clock tick, where
 * the directory's mtime cannot show it) is still found once the tick is over.
 */
static void test_own_changes(void **state)
{
	struct user u;
	user_make(&u, "own@example.test", 0);
	deliver(&u, 4, 1);
	struct mbox *box;
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	sleep_ms(150);
	OK(mbox_sync(box, &error_));
	char *curdir = xasprintf("%s/cur", u.maildir);
	static const uint32_t pairs[][2] = {{1, 2}, {3, 4}, {2, 1}};
	for (int round = 0; round < 3; round++) {
		uint32_t mine = pairs[round][0], theirs = pairs[round][1];
		uint32_t uid[] = {mine};
		OK(mbox_store(box, uid, 1, round % 2 ? MBOX_STORE_REMOVE : MBOX_STORE_ADD,
		              MBOX_F_FLAGGED, 0, 0, NULL, NULL, NULL, NULL, &error_));
		/* another program sets \Seen on the next message, at once */
		char needle[16];
		snprintf(needle, sizeof(needle), "Q%u.", theirs);
		foreign_flag(curdir, needle, 'S');
		/* ours shows at once; theirs at the latest once the tick is surely over */
		OK(mbox_sync(box, &error_));
		assert_int_equal(flags_of(box, mine) & MBOX_F_FLAGGED,
		                 round % 2 ? 0 : MBOX_F_FLAGGED);
		sleep_ms(150);
		OK(mbox_sync(box, &error_));
		assert_true(flags_of(box, theirs) & MBOX_F_SEEN);
	}
	/* an append followed at once by another program's unlink */
	static const char msg[] = "Subject: x\r\n\r\nbody\r\n";
	struct mbox_append a = {.data = msg, .len = sizeof(msg) - 1};
	uint32_t uv, nu;
	OK(mbox_append(u.acct, "INBOX", &a, 1, &uv, &nu, &error_));
	char *f = find_file(curdir, "Q4.");
	assert_non_null(f);
	char *gone = xasprintf("%s/%s", curdir, f);
	assert_int_equal(unlink(gone), 0);
	free(gone);
	free(f);
	sleep_ms(150);
	OK(mbox_sync(box, &error_));
	assert_int_equal(flags_of(box, 4), UINT32_MAX); /* expunged */
	assert_true(flags_of(box, nu) != UINT32_MAX);
	free(curdir);
	mbox_close(&box);
	user_free(&u);
}

/* folders.cur_mtime of an account's INBOX, as the index has it */
static int64_t cur_mtime_of(int64_t account_id)
{
	sqlite3 *db = index_db(account_id);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "SELECT cur_mtime FROM folders WHERE account_id = ?1 "
	                                    "AND name = 'INBOX'",
	                                    -1, &s, NULL),
	                 SQLITE_OK);
	sqlite3_bind_int64(s, 1, account_id);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

/*
 * A scan made while cur/'s clock tick may still go on vouches for the
 * directory until the tick is over (it used to vouch for nothing, so that
 * every sync of a busy folder scanned again); another program's change later
 * in the same tick is found by the first sync after it.
 */
static void test_scan_in_tick(void **state)
{
	struct user u;
	user_make(&u, "tick@example.test", 0);
	deliver(&u, 3, 1);
	struct mbox *box;
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	sleep_ms(150);
	OK(mbox_sync(box, &error_));
	char *curdir = xasprintf("%s/cur", u.maildir);
	for (uint32_t uid = 1; uid <= 3; uid++) {
		/* another program sets \Seen: our next sync scans, in the tick of that change */
		char needle[16];
		snprintf(needle, sizeof(needle), "Q%u.", uid);
		foreign_flag(curdir, needle, 'S');
		OK(mbox_sync(box, &error_));
		assert_true(flags_of(box, uid) & MBOX_F_SEEN);
		struct stat sb;
		assert_int_equal(stat(curdir, &sb), 0);
		int64_t m = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
		int64_t rec = cur_mtime_of(u.id);
		/* in the tick: -mtime (trusted while it lasts); a slow machine may be past it */
		assert_true(rec == -m || rec == m);
		if (uid == 3) {
			/* and another change at once, possibly in the very same tick */
			foreign_flag(curdir, "Q1.", 'F');
		}
	}
	sleep_ms(150);
	OK(mbox_sync(box, &error_));
	assert_true(flags_of(box, 1) & MBOX_F_FLAGGED);
	/* once the tick is over a scan records the settled mtime */
	struct stat sb;
	assert_int_equal(stat(curdir, &sb), 0);
	assert_int_equal(cur_mtime_of(u.id),
	                 (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec);
	free(curdir);
	mbox_close(&box);
	user_free(&u);
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void test_large_folder(void **state)
{
	struct user u;
	user_make(&u, "large@example.test", 0);
	/* POSTERN_TEST_MBOX_N=100000 for the full-size measurement (default 10,000) */
	const char *env = getenv("POSTERN_TEST_MBOX_N");
	const int N = env != NULL && atoi(env) >= 1000 && atoi(env) <= 1000000 ? atoi(env) : 10000;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	deliver_fast(&u, N, 1);
	double t_deliver = ms_since(&t0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct mbox *box;
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	double t_first = ms_since(&t0);
	mbox_close(&box);
	/* let the directory mtimes age past the one-second distrust window */
	sleep(2);
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	mbox_close(&box);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	struct mbox_msg *m;
	size_t n;
	OK(mbox_messages(box, &m, &n, &error_));
	double t_warm = ms_since(&t0);
	assert_int_equal(n, N);
	assert_int_equal(m[N - 1].uid, N);
	free(m);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	OK(mbox_sync(box, &error_));
	double t_sync = ms_since(&t0);
	/* what SEARCH SUBJECT / SORT read: the cache of every message, no file opened */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	size_t hits = 0;
	for (int i = 1; i <= N; i++) {
		struct mbox_cache c;
		OK(mbox_msg_cache(box, (uint32_t)i, &c, &error_));
		if (strstr(c.subject, "message 77") != NULL)
			hits++;
		mbox_cache_clear(&c);
	}
	double t_cache = ms_since(&t0);
	assert_true(hits >= 1);
	/* the same in one scan, header values only */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct mbox_cache *cs = xcalloc((size_t)N, sizeof(*cs));
	uint32_t *want = xcalloc((size_t)N, sizeof(*want));
	for (int i = 0; i < N; i++)
		want[i] = (uint32_t)i + 1;
	OK(mbox_msg_caches(box, want, (size_t)N, MBOX_CACHE_HEADERS, cs, &error_));
	size_t hits2 = 0;
	for (int i = 0; i < N; i++) {
		assert_non_null(cs[i].subject);
		assert_null(cs[i].envelope);
		if (strstr(cs[i].subject, "message 77") != NULL)
			hits2++;
		mbox_cache_clear(&cs[i]);
	}
	double t_caches = ms_since(&t0);
	assert_int_equal(hits2, hits);
	free(cs);
	free(want);
	uint32_t *all = xcalloc(N, sizeof(*all));
	for (uint32_t i = 0; i < N; i++)
		all[i] = i + 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	OK(mbox_store(box, all, N, MBOX_STORE_ADD, MBOX_F_SEEN, 0, 0, NULL, NULL, NULL, NULL,
	              &error_));
	double t_store = ms_since(&t0);
	/* expunging most of them compacts the uidlist; the UIDs survive a lost index */
	char *ul = xasprintf("%s/postern-uidlist", u.maildir);
	struct stat sb0, sb1;
	assert_int_equal(stat(ul, &sb0), 0);
	OK(mbox_store(box, all, N - 100, MBOX_STORE_ADD, MBOX_F_DELETED, 0, 0, NULL, NULL, NULL,
	              NULL, &error_));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	uint32_t *ex;
	size_t nex;
	OK(mbox_expunge(box, NULL, 0, &ex, &nex, &error_));
	double t_expunge = ms_since(&t0);
	assert_int_equal(nex, N - 100);
	free(ex);
	assert_int_equal(stat(ul, &sb1), 0);
	assert_true(sb1.st_size * 10 < sb0.st_size);
	free(ul);
	free(all);
	mbox_close(&box);
	reopen_store_without_index();
	mbox_account_close(&u.acct);
	char *error = NULL;
	u.acct = mbox_account_open(st, u.id, u.address, u.maildir, 0, &error);
	assert_non_null(u.acct);
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, 100);
	assert_int_equal(m[0].uid, N - 99);
	assert_int_equal(m[99].uid, N);
	assert_int_equal(m[0].flags & ~MBOX_F_RECENT, MBOX_F_SEEN);
	free(m);
	struct mbox_status s;
	mbox_get_status(box, &s);
	assert_int_equal(s.uidnext, N + 1);
	mbox_close(&box);
	printf(
	    "# %d messages: deliver %.0f ms, first open (index) %.0f ms, warm open+messages "
	    "%.1f ms, unchanged sync %.2f ms, cache of every message %.0f ms (one scan: %.0f ms), "
	    "store \\Seen on all %.0f ms, expunge all but 100 %.0f ms\n",
	    N, t_deliver, t_first, t_warm, t_sync, t_cache, t_caches, t_store, t_expunge);
	user_free(&u);
}

/*
 * A Maildir copied in (more than LAZY_SCAN files, Dovecot's names with ",S="
 * and ",W="): the first scan takes sizes from the names and no dates; the
 * dates come from the files when first asked for, and are kept. An index
 * lost after the uidlist was written (a kill during that scan) gives the
 * same UIDs back.
 */
static void test_bulk_import(void **state)
{
	struct user u;
	user_make(&u, "import@example.test", 0);
	enum { N = 600 };
	char *cur = xasprintf("%s/cur", u.maildir);
	for (int i = 0; i < N; i++) {
		char msg[128];
		int len = snprintf(msg, sizeof(msg), "Subject: imported %d\n\nline\n", i);
		/* RFC822.SIZE counts CRLF: 3 bare LFs */
		char *p = xasprintf("%s/%d.M%dP1.old,S=%d,W=%d:2,%s", cur, 1500000000 + i, i, len,
		                    len + 3, i % 3 == 0 ? "S" : "");
		write_text(p, msg);
		struct timespec t[2] = {{.tv_sec = 1500000000 + i}, {.tv_sec = 1500000000 + i}};
		assert_int_equal(utimensat(AT_FDCWD, p, t, 0), 0);
		free(p);
	}
	struct mbox *box;
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	struct mbox_msg *m;
	size_t n;
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, N);
	uint32_t *uids = xcalloc(N, sizeof(*uids));
	for (int i = 0; i < N; i++) {
		assert_int_equal(m[i].uid, i + 1); /* in the order of the names */
		assert_int_equal(m[i].flags & MBOX_F_SEEN, i % 3 == 0 ? MBOX_F_SEEN : 0);
		assert_int_equal(m[i].internaldate, 0);
		uids[i] = m[i].uid;
	}
	/* a file renamed by another program before its dates were read */
	int len1 = snprintf(NULL, 0, "Subject: imported %d\n\nline\n", 1);
	char *from = xasprintf("%s/1500000001.M1P1.old,S=%d,W=%d:2,", cur, len1, len1 + 3);
	char *to = xasprintf("%s/1500000001.M1P1.old,S=%d,W=%d:2,F", cur, len1, len1 + 3);
	assert_int_equal(rename(from, to), 0);
	sleep(1); /* out of the directory's mtime tick */
	OK(mbox_sync(box, &error_));
	OK(mbox_messages_get(box, uids, N, m, &error_));
	for (int i = 0; i < N; i++) {
		assert_int_equal(m[i].uid, i + 1);
		assert_int_equal(m[i].internaldate, 1500000000 + i);
		assert_true(m[i].savedate > time(NULL) - 60); /* the files' ctime */
		int len = snprintf(NULL, 0, "Subject: imported %d\n\nline\n", i);
		assert_int_equal(m[i].size, len + 3);
	}
	assert_int_equal(m[1].flags & MBOX_F_FLAGGED, MBOX_F_FLAGGED);
	/* kept: a later change of the file's mtime is not seen */
	struct timespec t[2] = {{.tv_sec = 1}, {.tv_sec = 1}};
	assert_int_equal(utimensat(AT_FDCWD, to, t, 0), 0);
	OK(mbox_messages_get(box, uids, 2, m, &error_));
	assert_int_equal(m[1].internaldate, 1500000001);
	free(from);
	free(to);
	free(m);
	mbox_close(&box);
	/* the index lost: every file gets its UID back from the uidlist */
	reopen_store_without_index();
	mbox_account_close(&u.acct);
	char *error = NULL;
	u.acct = mbox_account_open(st, u.id, u.address, u.maildir, 0, &error);
	assert_non_null(u.acct);
	OK(mbox_open(u.acct, "INBOX", false, &box, &error_));
	OK(mbox_messages(box, &m, &n, &error_));
	assert_int_equal(n, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(m[i].uid, i + 1);
	free(m);
	struct mbox_status s;
	mbox_get_status(box, &s);
	assert_int_equal(s.uidnext, N + 1);
	mbox_close(&box);
	free(uids);
	free(cur);
	user_free(&u);
}

static void test_date(void **state)
{
	int64_t t;
	int tz;
	assert_int_equal(mbox_parse_date("Mon, 2 Jan 2023 10:00:00 +0100", &t, &tz), 0);
	assert_int_equal(t, 1672650000);
	assert_int_equal(tz, 60);
	assert_int_equal(mbox_parse_date("2 Jan 23 10:00 EST", &t, &tz), 0);
	assert_int_equal(t, 1672671600);
	assert_int_equal(tz, -300);
	assert_int_equal(
	    mbox_parse_date(" (comment) Fri, 21 Nov 1997 09:55:06 -0600 (MDT)", &t, &tz), 0);
	assert_int_equal(t, 880127706);
	assert_int_equal(mbox_parse_date("1 Jan 99 00:00:00 GMT", &t, &tz), 0);
	assert_int_equal(t, 915148800);
	assert_int_equal(mbox_parse_date("garbage", &t, &tz), -1);
	assert_int_equal(mbox_parse_date("32 Jan 2020 00:00 +0000", &t, &tz), -1);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int setup(void **state)
{
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	char *error = NULL;
	if (directory_open(tmpdir, true, &dir, &error) < 0 ||
	    directory_domain_add(dir, "example.test", &error) < 0) {
		fprintf(stderr, "%s\n", error);
		return -1;
	}
	st = mbox_store_new(tmpdir, folders, &error);
	if (st == NULL) {
		fprintf(stderr, "%s\n", error);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	mbox_store_free(&st);
	directory_close(&dir);
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* An account's INBOX: HIGHESTMODSEQ, and the flags of UID 1. */
static uint64_t inbox_hms(struct user *u, uint32_t *flags1_r)
{
	struct mbox *box;
	OK(mbox_open(u->acct, "INBOX", false, &box, &error_));
	uint32_t uv, next;
	uint64_t hms;
	mbox_get_ids(box, &uv, &next, &hms);
	*flags1_r = flags_of(box, 1);
	mbox_close(&box);
	return hms;
}

static void exec_sql(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
}

/*
 * The one index.db of earlier versions: an account's rows move from it into
 * the account's own file the first time the account is used, MODSEQs and
 * flags with them, and index.db goes once the last account has moved.
 */
static void test_legacy_index(void **state)
{
	struct user a, b;
	user_make(&a, "legacy-a@example.test", 0);
	user_make(&b, "legacy-b@example.test", 0);
	deliver(&a, 3, 1);
	deliver(&b, 2, 1);
	struct user *us[] = {&a, &b};
	uint64_t hms[2];
	uint32_t f1[2];
	for (size_t i = 0; i < 2; i++) {
		struct mbox *box;
		OK(mbox_open(us[i]->acct, "INBOX", false, &box, &error_));
		uint32_t one = 1;
		for (int k = 0; k < 3; k++) /* MODSEQs a rebuild would not have */
			OK(mbox_store(box, &one, 1, k % 2 ? MBOX_STORE_REMOVE : MBOX_STORE_ADD,
			              MBOX_F_FLAGGED, 0, 0, NULL, NULL, NULL, NULL, &error_));
		mbox_close(&box);
		hms[i] = inbox_hms(us[i], &f1[i]);
		assert_true(hms[i] > 3);
		assert_int_equal(f1[i] & MBOX_F_FLAGGED, MBOX_F_FLAGGED);
		mbox_account_close(&us[i]->acct);
	}
	mbox_store_free(&st);

	/* the legacy file: a's rows as they are, b's with folder ids moved clear of a's */
	char *pa = xasprintf("%s/index/%lld.db", tmpdir, (long long)a.id);
	char *pb = xasprintf("%s/index/%lld.db", tmpdir, (long long)b.id);
	char *legacy = xasprintf("%s/index.db", tmpdir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(pb, &db), SQLITE_OK);
	exec_sql(db, "UPDATE folders SET id = id + 1000; UPDATE messages SET folder_id = "
	             "folder_id + 1000; UPDATE msgcache SET folder_id = folder_id + 1000; "
	             "UPDATE expunged SET folder_id = folder_id + 1000; "
	             "PRAGMA wal_checkpoint(TRUNCATE)");
	sqlite3_close(db);
	assert_int_equal(sqlite3_open(pa, &db), SQLITE_OK);
	exec_sql(db, "PRAGMA wal_checkpoint(TRUNCATE)");
	sqlite3_close(db);
	assert_int_equal(rename(pa, legacy), 0);
	assert_int_equal(sqlite3_open(legacy, &db), SQLITE_OK);
	char *sql = sqlite3_mprintf("ATTACH %Q AS b; INSERT INTO folders SELECT * FROM b.folders; "
	                            "INSERT INTO messages SELECT * FROM b.messages; "
	                            "INSERT INTO msgcache SELECT * FROM b.msgcache; "
	                            "INSERT INTO expunged SELECT * FROM b.expunged; DETACH b",
	                            pb);
	exec_sql(db, sql);
	sqlite3_free(sql);
	sqlite3_close(db);
	reopen_store_without_index();

	for (size_t i = 0; i < 2; i++) {
		char *error = NULL;
		us[i]->acct =
		    mbox_account_open(st, us[i]->id, us[i]->address, us[i]->maildir, 0, &error);
		assert_non_null(us[i]->acct);
		uint32_t flags;
		assert_int_equal(inbox_hms(us[i], &flags), hms[i]);
		assert_int_equal(flags, f1[i]);
		/* index.db stays while b's rows are in it */
		assert_int_equal(access(legacy, F_OK) == 0, i == 0);
	}
	free(pa);
	free(pb);
	free(legacy);
	user_free(&a);
	user_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_date),          cmocka_unit_test(test_basics),
	    cmocka_unit_test(test_flags_rebuild), cmocka_unit_test(test_append_copy),
	    cmocka_unit_test(test_folders),       cmocka_unit_test(test_quota),
	    cmocka_unit_test(test_retention),     cmocka_unit_test(test_watch_two_sessions),
	    cmocka_unit_test(test_dovecot_copy),  cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_large_folder),  cmocka_unit_test(test_own_changes),
	    cmocka_unit_test(test_scan_in_tick),  cmocka_unit_test(test_bulk_import),
	    cmocka_unit_test(test_legacy_index),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
