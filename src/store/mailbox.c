/*
 * The mailbox store (see mailbox.h for the contract): Maildir++ folders,
 * their "postern-uidlist" / "postern-keywords" files, and the index, a
 * SQLite file per account: DATA_DIR/index/ACCOUNT-ID.db.
 *
 * On-disk files per folder (the folder's Maildir directory):
 *   postern-uidlist   "V1 UIDVALIDITY UIDNEXT\n" then "UID BASENAME\n" lines,
 *                     appended and fsync'd before a UID is given out; the
 *                     lines of expunged messages are dropped by compaction
 *                     (rewrite + rename) when they outnumber the live ones.
 *   postern-keywords  "INDEX NAME\n" lines, INDEX 0-25 = letters a-z in the
 *                     ":2,FLAGS" suffix (the dovecot-keywords format).
 * At the Maildir root: "subscriptions" (one UTF-8 name per line) and
 * "postern-special-use" ("NAME\tBITS" lines: SPECIAL-USE set by CREATE).
 *
 * The index is a cache. Folder rows record the mtimes (ns) of new/ and cur/
 * as of the last scan, so a sync with nothing changed is two stat() calls
 * and one SELECT; a directory whose mtime is within 100 ms of now (a second on a
 * file system with whole-second timestamps) is not
 * trusted (a change in the same clock tick would go unseen) and is scanned
 * again next time. Our own changes to cur/ record its mtime after them as
 * "carried" (see mtime_vouches()), so they cost no scan. A scan or change
 * holds the folder's lock (folder_lock()), then the account's index write lock
 * (BEGIN IMMEDIATE) for short transactions, which also serialise UID allocation
 * between threads and processes.
 *
 * Quota: delivery counts what it writes into new/; the store counts what it
 * writes (append, copy) and removes (expunge, delete, retention), and files
 * that appear in cur/ or vanish behind its back (other programs). A rebuilt
 * index changes no counter.
 */
#include "lib/fsync_pool.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "mail/mutf7.h"
#include "store/directory.h"
#include "store/mailbox-private.h"
#include "store/maildir.h"
#include "store/stmtcache.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define UIDLIST_NAME "postern-uidlist"
#define KEYWORDS_NAME "postern-keywords"
#define SPECIAL_NAME "postern-special-use"
#define SUBS_NAME "subscriptions"

struct std_folder {
	char *name;
	unsigned special;
};

struct mbox_store {
	char *data_dir;
	struct std_folder *std;
	size_t nstd;
};

struct mbox_account {
	struct mbox_store *st;
	int64_t id;
	char *address;
	char *maildir;
	uint64_t quota;
};

struct mbox {
	struct mbox_account *acct;
	char *name;
	char *path;
	int64_t folder_id;
	bool readonly;
	struct mbox_status status;
	char **keywords;
	size_t nkeywords;
	struct timespec kw_mtime;
	/* UID ranges [lo, hi) this box took \Recent for */
	uint32_t *recent;
	size_t nrecent, recent_cap;
	bool synced; /* status computed at least once */
	/* the counts (messages, unseen, deleted, recent, size) are computed when asked
	   for (mbox_get_status()), not at every sync: a session's view needs only
	   HIGHESTMODSEQ, and counting is a scan of the folder's rows */
	bool counts_stale;
	uint32_t counts_first_recent;
};

/* ---- errors ---- */

static int fail(char **error_r, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char **error_r, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	if (error_r != NULL) {
		free(*error_r);
		*error_r = msg;
	} else {
		free(msg);
	}
	errno = err;
	return -1;
}

static int fail_db(char **error_r, sqlite3 *db, const char *what)
{
	return fail(error_r, EIO, "index: %s: %s", what, sqlite3_errmsg(db));
}

/* ---- the index: a file per account, its connections pooled ---- */

/*
 * Each account has its own index file, DATA_DIR/index/ID.db: a write to one
 * account's index neither waits for another account's writers nor empties
 * the page cache of connections reading another account (SQLite drops a
 * connection's cached pages whenever any other connection has written to the
 * file).
 *
 * Connections are pooled per file. A thread takes one for an account the
 * first time it needs it (conn_db()) and keeps it until mbox_thread_release(),
 * which the worker threads call after each job and the IMAP loop after each
 * command it ran itself; it then goes back to the pool, idle, for whichever
 * thread needs that account next. So an account busy on one thread at a time
 * uses one connection whose cache its own writes keep valid. The pool keeps
 * at most IDLE_MAX idle connections, the least recently used closed first.
 */

/* Statements are prepared once per connection and kept (prep() / unprep(),
   store/stmtcache.h): parsing the SQL was a sixth of the CPU of an IMAP command. */
/* This thread must not wait (the event loop): see mbox_thread_nowait(). */
static _Thread_local bool thread_nowait;

/* how long a writer waits for another process (the command line) to finish */
#define BUSY_TIMEOUT_MS 10000
/* idle connections kept open across all accounts */
#define IDLE_MAX 64
/* connections a thread holds before it gives back the idle ones (a command-line
   run over many accounts, which never calls mbox_thread_release()) */
#define BOUND_MAX 8

/* One index file: its write lock and checkpoint flag. Lives as long as the process. */
struct ifile {
	char *data_dir;
	int64_t account_id;
	pthread_mutex_t write_mu;
	atomic_bool checkpoint_due;
	struct ifile *next;
};

struct conn {
	struct ifile *f;
	sqlite3 *db;
	/* statements run once per message by FETCH, SEARCH and SORT: prepared once */
	sqlite3_stmt *cache_sel;
	struct stmt_cache stmts;
	bool nowait;              /* busy timeout 0 (set while the thread must not wait) */
	struct conn *prev, *next; /* in the idle list, most recently used first */
};

#define IFILE_BUCKETS 256
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ifile *ifiles[IFILE_BUCKETS];
static struct conn *idle_head, *idle_tail;
static size_t nidle;
/* serialises moving rows out of the server-wide index of older versions */
static pthread_mutex_t legacy_mu = PTHREAD_MUTEX_INITIALIZER;

/* the connections this thread holds */
struct tconns {
	struct conn **v;
	size_t n, cap;
};
static pthread_key_t conn_key;
static pthread_once_t conn_once = PTHREAD_ONCE_INIT;

static void conn_close(struct conn *c)
{
	if (c == NULL)
		return;
	sqlite3_finalize(c->cache_sel);
	stmt_cache_clear(&c->stmts);
	sqlite3_close_v2(c->db);
	free(c);
}

static void idle_unlink(struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		idle_head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		idle_tail = c->prev;
	c->prev = c->next = NULL;
	nidle--;
}

/* No transaction open, not even the read transaction of a statement still
   stepping: the connection may change threads. */
static bool conn_quiet(struct conn *c)
{
	if (c->cache_sel != NULL)
		sqlite3_reset(c->cache_sel);
	return sqlite3_txn_state(c->db, NULL) == SQLITE_TXN_NONE;
}

/* Close a chain of connections (linked through `next`). */
static void conns_close(struct conn *c)
{
	while (c != NULL) {
		struct conn *next = c->next;
		conn_close(c);
		c = next;
	}
}

/* Into the idle pool, closing the least recently used beyond IDLE_MAX -- but not
   on a thread that must not wait: closing the last connection to a file
   checkpoints it, fsyncs included (the next thread that may wait closes them). */
static void conn_put(struct conn *c)
{
	struct conn *evict = NULL;
	pthread_mutex_lock(&pool_mu);
	c->prev = NULL;
	c->next = idle_head;
	if (idle_head != NULL)
		idle_head->prev = c;
	idle_head = c;
	if (idle_tail == NULL)
		idle_tail = c;
	nidle++;
	while (!thread_nowait && nidle > IDLE_MAX) {
		struct conn *t = idle_tail;
		idle_unlink(t);
		t->next = evict;
		evict = t;
	}
	pthread_mutex_unlock(&pool_mu);
	conns_close(evict);
}

/* Give back the quiet ones of this thread's connections. */
static void tconns_release(struct tconns *t)
{
	size_t j = 0;
	for (size_t i = 0; i < t->n; i++) {
		struct conn *c = t->v[i];
		if (conn_quiet(c))
			conn_put(c);
		else
			t->v[j++] = c;
	}
	t->n = j;
}

static void tconns_free(void *p)
{
	struct tconns *t = p;
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		if (conn_quiet(t->v[i]))
			conn_put(t->v[i]);
		else
			conn_close(t->v[i]);
	}
	free(t->v);
	free(t);
}

static void conn_key_init(void)
{
	if (pthread_key_create(&conn_key, tconns_free) != 0)
		fatal("pthread_key_create failed");
}

static struct tconns *tconns_get(void)
{
	pthread_once(&conn_once, conn_key_init);
	struct tconns *t = pthread_getspecific(conn_key);
	if (t == NULL) {
		t = xcalloc(1, sizeof(*t));
		pthread_setspecific(conn_key, t);
	}
	return t;
}

void mbox_thread_release(void)
{
	pthread_once(&conn_once, conn_key_init);
	struct tconns *t = pthread_getspecific(conn_key);
	if (t != NULL)
		tconns_release(t);
}

static struct ifile *ifile_get(const char *data_dir, int64_t account_id)
{
	uint32_t h = (uint32_t)account_id * 2654435761u;
	for (const char *p = data_dir; *p != '\0'; p++)
		h = h * 31 + (unsigned char)*p;
	struct ifile **b = &ifiles[h % IFILE_BUCKETS];
	pthread_mutex_lock(&pool_mu);
	struct ifile *f = *b;
	while (f != NULL && (f->account_id != account_id || strcmp(f->data_dir, data_dir) != 0))
		f = f->next;
	if (f == NULL) {
		f = xcalloc(1, sizeof(*f));
		f->data_dir = xstrdup(data_dir);
		f->account_id = account_id;
		pthread_mutex_init(&f->write_mu, NULL);
		f->next = *b;
		*b = f;
	}
	pthread_mutex_unlock(&pool_mu);
	return f;
}

/*
 * Message rows are kept narrow (SELECT and STATUS scan them); the cache
 * columns live in msgcache, deleted with their message by a trigger.
 * The index is a cache: a database of another schema version is dropped
 * and rebuilt from the files.
 */
#define SCHEMA_VERSION 3
static const char schema[] =
    "CREATE TABLE IF NOT EXISTS folders ("
    "  id INTEGER PRIMARY KEY,"
    "  account_id INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  uidvalidity INTEGER NOT NULL,"
    "  uidnext INTEGER NOT NULL,"
    "  highestmodseq INTEGER NOT NULL DEFAULT 1,"
    "  first_recent_uid INTEGER NOT NULL DEFAULT 1,"
    "  new_mtime INTEGER NOT NULL DEFAULT 0,"
    "  cur_mtime INTEGER NOT NULL DEFAULT 0,"
    "  uidlist_off INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (account_id, name));"
    "CREATE TABLE IF NOT EXISTS messages ("
    "  folder_id INTEGER NOT NULL,"
    "  uid INTEGER NOT NULL,"
    "  basename TEXT NOT NULL,"
    "  filename TEXT NOT NULL,"
    "  in_new INTEGER NOT NULL DEFAULT 0,"
    "  flags INTEGER NOT NULL,"
    "  keywords INTEGER NOT NULL,"
    "  modseq INTEGER NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  phys_size INTEGER NOT NULL,"
    "  internaldate INTEGER NOT NULL,"
    "  savedate INTEGER NOT NULL,"
    "  PRIMARY KEY (folder_id, uid)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS messages_modseq ON messages (folder_id, modseq);"
    /* what SELECT lists (mbox_messages()), read from this index alone: a seventh of the
       table's pages (its rows hold the file names), so a 100,000-message folder fits the
       page cache */
    "CREATE INDEX IF NOT EXISTS messages_list ON messages (folder_id, uid, flags, keywords, "
    "modseq, size);"
    /* the big columns last: a scan of the header values stops before them */
    "CREATE TABLE IF NOT EXISTS msgcache ("
    "  folder_id INTEGER NOT NULL,"
    "  uid INTEGER NOT NULL,"
    "  date INTEGER, date_tz INTEGER,"
    "  subject TEXT, hfrom TEXT, hto TEXT, hcc TEXT, hbcc TEXT,"
    "  message_id TEXT, in_reply_to TEXT, refs TEXT,"
    "  sort_from TEXT, sort_to TEXT, sort_cc TEXT, display_from TEXT, display_to TEXT,"
    "  envelope TEXT, bodystructure TEXT, body TEXT,"
    "  PRIMARY KEY (folder_id, uid));"
    /* SORT (DATE), SORT (SUBJECT) and SEARCH SUBJECT read this index alone: the table's
       rows, with ENVELOPE and BODYSTRUCTURE, are a B-tree lookup each and many pages */
    "CREATE INDEX IF NOT EXISTS msgcache_sort ON msgcache (folder_id, uid, date, date_tz, "
    "subject);"
    "CREATE TRIGGER IF NOT EXISTS messages_delete AFTER DELETE ON messages BEGIN"
    "  DELETE FROM msgcache WHERE folder_id = old.folder_id AND uid = old.uid; END;"
    "CREATE TABLE IF NOT EXISTS expunged ("
    "  folder_id INTEGER NOT NULL,"
    "  uid INTEGER NOT NULL,"
    "  modseq INTEGER NOT NULL,"
    "  PRIMARY KEY (folder_id, uid)) WITHOUT ROWID;"
    /* mbox_changes() (every sync after a change, QRESYNC): the records since a MODSEQ,
       not all of a folder's, which only grow */
    "CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (folder_id, modseq);";

/* qualified: an unqualified DROP would find the attached legacy index's tables */
static const char drop_all[] =
    "DROP TABLE IF EXISTS main.folders; DROP TABLE IF EXISTS main.messages;"
    "DROP TABLE IF EXISTS main.msgcache; DROP TABLE IF EXISTS main.expunged;";

/* PRAGMA user_version of the database `name` ("main", "legacy"); -1 on error. */
static int user_version(sqlite3 *db, const char *name)
{
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA %s.user_version", name);
	sqlite3_stmt *s = NULL;
	int version = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return version;
}

/* In the schema's transaction of a new index file: the account's rows from the
   server-wide index.db of earlier versions, attached as "legacy". */
static int legacy_copy(sqlite3 *db, int64_t account_id)
{
	if (user_version(db, "legacy") != SCHEMA_VERSION)
		return 0; /* of another schema: it would have been rebuilt anyway */
	char sql[1024];
	long long id = (long long)account_id;
	snprintf(sql, sizeof(sql),
	         "INSERT INTO main.folders SELECT * FROM legacy.folders WHERE account_id = %lld;"
	         "INSERT INTO main.messages SELECT * FROM legacy.messages WHERE folder_id IN "
	         "(SELECT id FROM legacy.folders WHERE account_id = %lld);"
	         "INSERT INTO main.msgcache SELECT * FROM legacy.msgcache WHERE folder_id IN "
	         "(SELECT id FROM legacy.folders WHERE account_id = %lld);"
	         "INSERT INTO main.expunged SELECT * FROM legacy.expunged WHERE folder_id IN "
	         "(SELECT id FROM legacy.folders WHERE account_id = %lld);",
	         id, id, id, id);
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 1 : -1;
}

/* After legacy_copy() committed: the rows leave index.db, and index.db goes once empty. */
static void legacy_forget(sqlite3 *db, const char *data_dir, int64_t account_id)
{
	char sql[1024];
	long long id = (long long)account_id;
	snprintf(sql, sizeof(sql),
	         "BEGIN IMMEDIATE;"
	         "DELETE FROM legacy.messages WHERE folder_id IN "
	         "(SELECT id FROM legacy.folders WHERE account_id = %lld);"
	         "DELETE FROM legacy.expunged WHERE folder_id IN "
	         "(SELECT id FROM legacy.folders WHERE account_id = %lld);"
	         "DELETE FROM legacy.folders WHERE account_id = %lld; COMMIT",
	         id, id, id);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		/* left behind, harmless: this account's file is never filled from it again */
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return;
	}
	sqlite3_stmt *s = NULL;
	bool empty = sqlite3_prepare_v2(db, "SELECT 1 FROM legacy.folders LIMIT 1", -1, &s, NULL) ==
	                 SQLITE_OK &&
	             sqlite3_step(s) == SQLITE_DONE;
	sqlite3_finalize(s);
	if (sqlite3_exec(db, "DETACH legacy", NULL, NULL, NULL) != SQLITE_OK || !empty)
		return;
	static const char *const suffix[] = {"", "-wal", "-shm"};
	for (size_t i = 0; i < ARRAY_SIZE(suffix); i++) {
		char *p = xasprintf("%s/index.db%s", data_dir, suffix[i]);
		unlink(p);
		free(p);
	}
	log_info("event=mailbox_index_split data_dir=%s", data_dir);
}

/* The schema, in a new file (or one of another version: dropped and made anew);
   1 if rows were taken from the legacy index, 0 if not, -1 on error. */
static int schema_setup(sqlite3 *db, int64_t account_id, bool legacy)
{
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return -1;
	int version = user_version(db, "main");
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA main.user_version = %d", SCHEMA_VERSION);
	int copied = 0;
	if (version < 0 ||
	    (version != SCHEMA_VERSION &&
	     (sqlite3_exec(db, drop_all, NULL, NULL, NULL) != SQLITE_OK ||
	      sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)) ||
	    sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK ||
	    (version != SCHEMA_VERSION && legacy && (copied = legacy_copy(db, account_id)) < 0) ||
	    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	if (version != SCHEMA_VERSION && version > 0)
		log_info("event=mailbox_index_rebuilt reason=schema_version old=%d new=%d", version,
		         SCHEMA_VERSION);
	return copied;
}

#define CACHE_COLS                                                                                 \
	"envelope, bodystructure, body, subject, hfrom, hto, hcc, hbcc, message_id, in_reply_to, " \
	"refs, sort_from, sort_to, sort_cc, display_from, display_to, date, date_tz"

static int index_wal_hook(void *arg, sqlite3 *db, const char *name, int pages);

static sqlite3 *index_open(struct ifile *f, char **error_r)
{
	char *path = xasprintf("%s/index/%lld.db", f->data_dir, (long long)f->account_id);
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(
	    path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		fail(error_r, EIO, "index: cannot open %s: %s", path,
		     db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close_v2(db);
		free(path);
		return NULL;
	}
	sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
	sqlite3_wal_hook(db, index_wal_hook, f);
	bool ok = sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL,
	                       NULL, NULL) == SQLITE_OK;
	if (ok && user_version(db, "main") != SCHEMA_VERSION) {
		/* a new file: made under legacy_mu, taking the account's rows from the
		   server-wide index.db of earlier versions if there is one */
		pthread_mutex_lock(&legacy_mu);
		char *old = xasprintf("%s/index.db", f->data_dir);
		bool legacy = false;
		if (access(old, F_OK) == 0) {
			sqlite3_stmt *s = NULL;
			legacy = sqlite3_prepare_v2(db, "ATTACH ?1 AS legacy", -1, &s, NULL) ==
			             SQLITE_OK &&
			         sqlite3_bind_text(s, 1, old, -1, SQLITE_STATIC) == SQLITE_OK &&
			         sqlite3_step(s) == SQLITE_DONE;
			sqlite3_finalize(s);
		}
		int copied = schema_setup(db, f->account_id, legacy);
		ok = copied >= 0;
		if (copied > 0)
			legacy_forget(db, f->data_dir, f->account_id);
		else if (legacy)
			sqlite3_exec(db, "DETACH legacy", NULL, NULL, NULL);
		free(old);
		pthread_mutex_unlock(&legacy_mu);
	}
	if (!ok) {
		fail(error_r, EIO, "index: %s: %s", path, sqlite3_errmsg(db));
		sqlite3_close_v2(db);
		free(path);
		return NULL;
	}
	free(path);
	return db;
}

/*
 * This thread's connection to the index of the account: one it holds already,
 * else an idle one from the pool, else a new one (not on a thread that must
 * not wait: EWOULDBLOCK, and the caller runs again on a worker).
 */
static sqlite3 *conn_db(struct mbox_store *st, int64_t account_id, char **error_r)
{
	struct tconns *t = tconns_get();
	struct conn *c = NULL;
	for (size_t i = 0; i < t->n && c == NULL; i++)
		if (t->v[i]->f->account_id == account_id &&
		    strcmp(t->v[i]->f->data_dir, st->data_dir) == 0)
			c = t->v[i];
	if (c == NULL) {
		struct ifile *f = ifile_get(st->data_dir, account_id);
		pthread_mutex_lock(&pool_mu);
		for (struct conn *i = idle_head; i != NULL && c == NULL; i = i->next)
			if (i->f == f)
				c = i;
		if (c != NULL)
			idle_unlink(c);
		pthread_mutex_unlock(&pool_mu);
		if (c == NULL && thread_nowait) {
			/* opening a file (making it, moving rows out of index.db under
			   legacy_mu) is disk work: for a thread that may wait */
			fail(error_r, EWOULDBLOCK, "index: no idle connection");
			return NULL;
		}
		if (c == NULL) {
			sqlite3 *db = index_open(f, error_r);
			if (db == NULL)
				return NULL;
			c = xcalloc(1, sizeof(*c));
			c->f = f;
			c->db = db;
			c->nowait = thread_nowait;
		}
		if (t->n >= BOUND_MAX)
			tconns_release(t);
		t->v = xgrow(t->v, &t->cap, t->n + 1, sizeof(*t->v));
		t->v[t->n++] = c;
	}
	if (c->nowait != thread_nowait) {
		/* a thread that must not wait gets SQLITE_BUSY at once, even from a
		   write that takes no transaction of ours */
		c->nowait = thread_nowait;
		sqlite3_busy_timeout(c->db, thread_nowait ? 0 : BUSY_TIMEOUT_MS);
	}
	return c->db;
}

static struct conn *conn_of(sqlite3 *db)
{
	pthread_once(&conn_once, conn_key_init);
	struct tconns *t = pthread_getspecific(conn_key);
	for (size_t i = 0; t != NULL && i < t->n; i++)
		if (t->v[i]->db == db)
			return t->v[i];
	return NULL;
}

/* A prepared statement for `sql`, from the connection's cache; give it back with unprep(). */
static sqlite3_stmt *prep(sqlite3 *db, const char *sql, char **error_r)
{
	struct conn *c = conn_of(db);
	sqlite3_stmt *s = NULL;
	if (c != NULL)
		s = stmt_cache_get(&c->stmts, db, sql);
	else if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
		sqlite3_finalize(s);
		s = NULL;
	}
	if (s == NULL)
		fail_db(error_r, db, "prepare");
	return s;
}

/* Done with a statement from prep(): reset and kept, or finalized if it was not kept. */
static void unprep(sqlite3_stmt *s)
{
	if (s == NULL)
		return;
	struct conn *c = conn_of(sqlite3_db_handle(s));
	stmt_cache_put(c != NULL ? &c->stmts : NULL, s);
}

/*
 * Each index file has one write lock. Our own threads queue for it on the
 * file's mutex, taken by BEGIN and given back once the transaction has ended
 * (COMMIT, ROLLBACK, or a failed BEGIN): a thread waiting in SQLite's busy
 * handler would sleep in steps of up to 100 ms instead of being woken when
 * the lock is free. Other processes (the CLI) still meet SQLite's busy timeout.
 */
static _Thread_local pthread_mutex_t *index_write_held;
/* this thread's commit leaves a due checkpoint to the next writer (a bulk scan's) */
static _Thread_local bool index_checkpoint_defer;

/*
 * Instead of SQLite's automatic checkpoint (run by the committing thread while
 * it still holds the write lock, fsyncs included, stalling every writer), a
 * commit that leaves 1,000 pages or more in the WAL marks a checkpoint due, and
 * the next thread to let go of the file's write lock runs it (PASSIVE: writers
 * go on meanwhile) -- unless it is a thread that must not wait on the disk.
 */
static int index_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct ifile *f = arg;
	(void)db;
	(void)name;
	if (pages >= 1000)
		atomic_store(&f->checkpoint_due, true);
	return SQLITE_OK;
}

static void index_write_release(sqlite3 *db)
{
	if (index_write_held != NULL && sqlite3_get_autocommit(db)) {
		pthread_mutex_unlock(index_write_held);
		index_write_held = NULL;
	}
	struct conn *c = conn_of(db);
	if (c != NULL && index_write_held == NULL && !thread_nowait && !index_checkpoint_defer &&
	    atomic_load(&c->f->checkpoint_due) && atomic_exchange(&c->f->checkpoint_due, false))
		sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

static int exec(sqlite3 *db, const char *sql, char **error_r)
{
	bool begin = strncmp(sql, "BEGIN", 5) == 0;
	if (begin && index_write_held == NULL) {
		struct conn *c = conn_of(db);
		if (c != NULL) {
			if (!thread_nowait)
				pthread_mutex_lock(&c->f->write_mu);
			else if (pthread_mutex_trylock(&c->f->write_mu) != 0)
				return fail(error_r, EWOULDBLOCK, "index: busy");
			index_write_held = &c->f->write_mu;
		}
	}
	int rc;
	bool txn = strcmp(sql, "BEGIN IMMEDIATE") == 0 || strcmp(sql, "COMMIT") == 0 ||
	           strcmp(sql, "ROLLBACK") == 0;
	sqlite3_stmt *st = txn ? prep(db, sql, NULL) : NULL;
	if (st != NULL) {
		/* one statement (BEGIN, COMMIT...): prepared once */
		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
			;
		rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
		if (rc != SQLITE_OK)
			fail_db(error_r, db, sql);
		unprep(st);
	} else {
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			fail_db(error_r, db, sql);
	}
	if (begin && thread_nowait && rc == SQLITE_BUSY)
		fail(error_r, EWOULDBLOCK, "index: busy"); /* another process writes */
	if (rc != SQLITE_OK) {
		/* a COMMIT that failed leaves the transaction open: end it here, so that
		   no path can keep the write lock */
		if (strcmp(sql, "COMMIT") == 0 && !sqlite3_get_autocommit(db))
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		index_write_release(db);
		return -1;
	}
	index_write_release(db);
	return 0;
}

static void rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	index_write_release(db);
}

static char *col_dup(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return xstrdup(t != NULL ? (const char *)t : "");
}

/* ---- watchers (process-wide) ---- */

struct mbox_watch {
	char *maildir;
	char *name;
	void (*fn)(void *arg);
	void *arg;
	struct mbox_watch *next;
};

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mbox_watch *watchers;

static bool is_inbox(const char *name)
{
	return strcasecmp(name, "INBOX") == 0;
}

static bool watch_matches(const struct mbox_watch *w, const char *maildir, const char *name)
{
	if (strcmp(w->maildir, maildir) != 0)
		return false;
	return is_inbox(name) ? is_inbox(w->name) : strcmp(w->name, name) == 0;
}

struct mbox_watch *mbox_watch(struct mbox_store *st, const char *maildir, const char *name,
                              void (*fn)(void *arg), void *arg)
{
	struct mbox_watch *w = xcalloc(1, sizeof(*w));
	w->maildir = xstrdup(maildir);
	w->name = xstrdup(name);
	w->fn = fn;
	w->arg = arg;
	pthread_mutex_lock(&watch_lock);
	w->next = watchers;
	watchers = w;
	pthread_mutex_unlock(&watch_lock);
	return w;
}

void mbox_unwatch(struct mbox_store *st, struct mbox_watch **wp)
{
	struct mbox_watch *w = *wp;
	if (w == NULL)
		return;
	pthread_mutex_lock(&watch_lock);
	for (struct mbox_watch **p = &watchers; *p != NULL; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	pthread_mutex_unlock(&watch_lock);
	free(w->maildir);
	free(w->name);
	free(w);
	*wp = NULL;
}

void mbox_notify(const char *maildir, const char *name)
{
	/* callbacks run under the lock, so an unwatched arg is never used after mbox_unwatch() */
	pthread_mutex_lock(&watch_lock);
	for (struct mbox_watch *w = watchers; w != NULL; w = w->next)
		if (watch_matches(w, maildir, name))
			w->fn(w->arg);
	pthread_mutex_unlock(&watch_lock);
}

/* ---- names and paths ---- */

/* Canonical form of a folder name (INBOX uppercased), or NULL if invalid. */
static char *name_canon(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > 512 || name[0] == '/' || name[len - 1] == '/' ||
	    strstr(name, "//") != NULL)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
		/* "." is the Maildir++ hierarchy separator on disk */
		if (*p < 0x20 || *p == 0x7f || *p == '.')
			return NULL;
	char *enc = mutf7_encode(name); /* validates UTF-8 */
	if (enc == NULL)
		return NULL;
	free(enc);
	char *c = xstrdup(name);
	if (strncasecmp(c, "INBOX", 5) == 0 && (c[5] == '\0' || c[5] == '/'))
		memcpy(c, "INBOX", 5);
	return c;
}

/* Maildir directory of a canonical name. */
static char *folder_path(const struct mbox_account *a, const char *canon)
{
	if (strcmp(canon, "INBOX") == 0)
		return xstrdup(a->maildir);
	char *enc = mutf7_encode(canon);
	for (char *p = enc; *p != '\0'; p++)
		if (*p == '/')
			*p = '.';
	char *path = xasprintf("%s/.%s", a->maildir, enc);
	free(enc);
	return path;
}

/* Folder name of a root directory entry ".X.Y" (mUTF-7), or NULL if not one of ours. */
static char *dir_to_name(const char *entry)
{
	if (entry[0] != '.' || entry[1] == '\0' || strcmp(entry, "..") == 0)
		return NULL;
	char *dec = mutf7_decode(entry + 1);
	if (dec == NULL)
		return NULL;
	for (char *p = dec; *p != '\0'; p++)
		if (*p == '.')
			*p = '/';
	char *c = name_canon(dec);
	free(dec);
	return c;
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

static int fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return r;
}

static int fsync_dir(const char *path)
{
	return fsync_path(path, O_RDONLY | O_DIRECTORY);
}

/* Write a small file atomically (tmp + fsync + rename + fsync dir). */
static int write_atomic(const char *dir, const char *name, const char *content, size_t len)
{
	char *tmp = xasprintf("%s/%s.tmp.%d", dir, name, (int)getpid());
	char *final = xasprintf("%s/%s", dir, name);
	int ret = -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		size_t off = 0;
		while (off < len) {
			ssize_t n = write(fd, content + off, len - off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		if (off == len && fsync(fd) == 0 && close(fd) == 0) {
			fd = -1;
			if (rename(tmp, final) == 0 && fsync_dir(dir) == 0)
				ret = 0;
		}
	}
	int saved = errno;
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		unlink(tmp);
	free(tmp);
	free(final);
	errno = saved;
	return ret;
}

/* Whole file into a NUL-terminated buffer; NULL + errno. */
static char *read_file(const char *path, size_t *len_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat sb;
	if (fstat(fd, &sb) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return NULL;
	}
	size_t cap = (size_t)sb.st_size + 1, len = 0;
	char *buf = xmalloc(cap + 1);
	for (;;) {
		if (len == cap) {
			cap *= 2;
			buf = xrealloc(buf, cap + 1);
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;
			free(buf);
			close(fd);
			errno = saved;
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	if (len_r != NULL)
		*len_r = len;
	return buf;
}

static int make_folder_dirs(const char *path, bool mark)
{
	static const char *const sub[] = {"cur", "new", "tmp"};
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(sub); i++) {
		char *p = xasprintf("%s/%s", path, sub[i]);
		int r = mkdir(p, 0700);
		int saved = errno;
		free(p);
		if (r < 0 && saved != EEXIST) {
			errno = saved;
			return -1;
		}
	}
	if (mark) {
		char *m = xasprintf("%s/maildirfolder", path);
		int fd = open(m, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		free(m);
		if (fd >= 0)
			close(fd);
	}
	return 0;
}

/* ---- store ---- */

static int special_parse(const char *s, unsigned *bits_r)
{
	static const struct {
		const char *name;
		unsigned bit;
	} uses[] = {{"drafts", MBOX_SPECIAL_DRAFTS},   {"sent", MBOX_SPECIAL_SENT},
	            {"junk", MBOX_SPECIAL_JUNK},       {"trash", MBOX_SPECIAL_TRASH},
	            {"archive", MBOX_SPECIAL_ARCHIVE}, {"none", 0}};
	for (size_t i = 0; i < ARRAY_SIZE(uses); i++)
		if (strcasecmp(s, uses[i].name) == 0) {
			*bits_r = uses[i].bit;
			return 0;
		}
	return -1;
}

/* The [mailbox] folders knob: "Name=special, ..." (special: drafts|sent|junk|trash|archive|none).
 */
static int folders_parse(const char *folders, struct std_folder **std_r, size_t *n_r,
                         char **error_r)
{
	struct std_folder *std = NULL;
	size_t nstd = 0;
	char *list = xstrdup(folders != NULL ? folders : "");
	char *save = NULL;
	int ret = 0;
	for (char *tok = strtok_r(list, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		while (isspace((unsigned char)*tok))
			tok++;
		char *e = tok + strlen(tok);
		while (e > tok && isspace((unsigned char)e[-1]))
			*--e = '\0';
		if (*tok == '\0')
			continue;
		unsigned special = 0;
		char *eq = strchr(tok, '=');
		if (eq != NULL) {
			*eq = '\0';
			char *use = eq + 1;
			while (isspace((unsigned char)*use))
				use++;
			char *ne = eq;
			while (ne > tok && isspace((unsigned char)ne[-1]))
				*--ne = '\0';
			if (special_parse(use, &special) < 0) {
				ret = fail(error_r, EINVAL,
				           "[mailbox] folders: unknown special use \"%s\"", use);
				break;
			}
		}
		char *canon = name_canon(tok);
		if (canon == NULL || strcmp(canon, "INBOX") == 0) {
			free(canon);
			ret =
			    fail(error_r, EINVAL, "[mailbox] folders: bad folder name \"%s\"", tok);
			break;
		}
		std = xrealloc(std, (nstd + 1) * sizeof(*std));
		std[nstd].name = canon;
		std[nstd].special = special;
		nstd++;
	}
	free(list);
	if (ret < 0) {
		for (size_t i = 0; i < nstd; i++)
			free(std[i].name);
		free(std);
		return -1;
	}
	*std_r = std;
	*n_r = nstd;
	return 0;
}

static void folders_to_maildir(const struct std_folder *std, size_t n)
{
	const char **names = xcalloc(n + 1, sizeof(*names));
	for (size_t i = 0; i < n; i++)
		names[i] = std[i].name;
	maildir_set_folders(names, n);
	free(names);
}

int mbox_folders_configure(const char *folders, char **error_r)
{
	struct std_folder *std;
	size_t n;
	if (folders_parse(folders, &std, &n, error_r) < 0)
		return -1;
	folders_to_maildir(std, n);
	for (size_t i = 0; i < n; i++)
		free(std[i].name);
	free(std);
	return 0;
}

struct mbox_store *mbox_store_new(const char *data_dir, const char *folders, char **error_r)
{
	struct mbox_store *st = xcalloc(1, sizeof(*st));
	st->data_dir = xstrdup(data_dir);
	if (folders_parse(folders, &st->std, &st->nstd, error_r) < 0) {
		mbox_store_free(&st);
		return NULL;
	}
	/* the accounts' index files */
	char *dir = xasprintf("%s/index", data_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fail(error_r, errno == ENOSPC ? ENOSPC : EIO, "index: cannot create %s: %s", dir,
		     strerror(errno));
		free(dir);
		mbox_store_free(&st);
		return NULL;
	}
	free(dir);
	/* accounts created from now on (and Maildirs recreated by delivery) get these folders */
	folders_to_maildir(st->std, st->nstd);
	return st;
}

void mbox_store_free(struct mbox_store **stp)
{
	struct mbox_store *st = *stp;
	if (st == NULL)
		return;
	/* this thread's connections to the store's files, and the idle ones (other
	   threads give theirs back when they exit) */
	pthread_once(&conn_once, conn_key_init);
	struct tconns *t = pthread_getspecific(conn_key);
	size_t j = 0;
	for (size_t i = 0; t != NULL && i < t->n; i++) {
		if (strcmp(t->v[i]->f->data_dir, st->data_dir) == 0)
			conn_close(t->v[i]);
		else
			t->v[j++] = t->v[i];
	}
	if (t != NULL)
		t->n = j;
	struct conn *gone = NULL;
	pthread_mutex_lock(&pool_mu);
	for (struct conn *c = idle_head, *next; c != NULL; c = next) {
		next = c->next;
		if (strcmp(c->f->data_dir, st->data_dir) == 0) {
			idle_unlink(c);
			c->next = gone;
			gone = c;
		}
	}
	pthread_mutex_unlock(&pool_mu);
	conns_close(gone);
	for (size_t i = 0; i < st->nstd; i++)
		free(st->std[i].name);
	free(st->std);
	free(st->data_dir);
	free(st);
	*stp = NULL;
}

/* ---- accounts ---- */

static void usage_add(struct mbox_account *a, int64_t delta)
{
	if (delta == 0 || a->id <= 0)
		return;
	struct directory *dir = directory_thread(a->st->data_dir);
	if (dir == NULL || directory_usage_add(dir, a->id, delta) < 0)
		log_error("event=usage_update_failed account=%s delta=%lld", a->address,
		          (long long)delta);
}

static int account_used(struct mbox_account *a, uint64_t *used_r, char **error_r)
{
	*used_r = 0;
	struct directory *dir = directory_thread(a->st->data_dir);
	if (dir == NULL)
		return fail(error_r, EIO, "cannot open the directory database");
	struct account acc = {0};
	int r = directory_account(dir, a->address, &acc);
	if (r < 0)
		return fail(error_r, EIO, "directory lookup failed");
	if (r == 1 && acc.id == a->id)
		*used_r = acc.used;
	account_free_fields(&acc);
	return 0;
}

static char *special_file_read(const struct mbox_account *a)
{
	char *path = xasprintf("%s/" SPECIAL_NAME, a->maildir);
	char *s = read_file(path, NULL);
	free(path);
	return s;
}

static unsigned folder_special(const struct mbox_account *a, const char *canon, const char *file)
{
	if (file != NULL) {
		size_t n = strlen(canon);
		for (const char *p = file; *p != '\0';) {
			const char *e = strchr(p, '\n');
			size_t ll = e != NULL ? (size_t)(e - p) : strlen(p);
			if (ll > n && memcmp(p, canon, n) == 0 && p[n] == '\t')
				return (unsigned)strtoul(p + n + 1, NULL, 10);
			p += ll + (e != NULL);
		}
	}
	for (size_t i = 0; i < a->st->nstd; i++)
		if (strcmp(a->st->std[i].name, canon) == 0)
			return a->st->std[i].special;
	return 0;
}

static int special_file_set(const struct mbox_account *a, const char *canon, unsigned special,
                            const char *rename_to)
{
	char *old = special_file_read(a);
	size_t cap = (old != NULL ? strlen(old) : 0) + strlen(canon) + 64 +
	             (rename_to != NULL ? strlen(rename_to) * 64 : 0);
	char *out = xmalloc(cap + 1);
	size_t olen = 0;
	size_t n = strlen(canon);
	if (old != NULL) {
		for (const char *p = old; *p != '\0';) {
			const char *e = strchr(p, '\n');
			size_t ll = e != NULL ? (size_t)(e - p) : strlen(p);
			bool same = ll > n && memcmp(p, canon, n) == 0 && p[n] == '\t';
			bool child = ll > n && memcmp(p, canon, n) == 0 && p[n] == '/';
			if (rename_to != NULL && (same || child)) {
				char *line = xasprintf("%s%.*s\n", rename_to, (int)(ll - n), p + n);
				out = xgrow(out, &cap, olen + strlen(line) + 1, 1);
				memcpy(out + olen, line, strlen(line));
				olen += strlen(line);
				free(line);
			} else if (!same) {
				out = xgrow(out, &cap, olen + ll + 2, 1);
				memcpy(out + olen, p, ll);
				olen += ll;
				out[olen++] = '\n';
			}
			p += ll + (e != NULL);
		}
	}
	if (rename_to == NULL && special != 0) {
		char *line = xasprintf("%s\t%u\n", canon, special);
		out = xgrow(out, &cap, olen + strlen(line) + 1, 1);
		memcpy(out + olen, line, strlen(line));
		olen += strlen(line);
		free(line);
	}
	int r = write_atomic(a->maildir, SPECIAL_NAME, out, olen);
	free(out);
	free(old);
	return r;
}

/* subscriptions: one name per line ("V\t2" header lines of Dovecot are skipped) */
static char **subs_read(const struct mbox_account *a, size_t *n_r)
{
	char *path = xasprintf("%s/" SUBS_NAME, a->maildir);
	char *s = read_file(path, NULL);
	free(path);
	char **v = NULL;
	size_t n = 0;
	if (s != NULL) {
		char *save = NULL;
		for (char *l = strtok_r(s, "\r\n", &save); l != NULL;
		     l = strtok_r(NULL, "\r\n", &save)) {
			if (strncmp(l, "V\t", 2) == 0 || *l == '\0')
				continue;
			char *c = name_canon(l);
			if (c == NULL)
				continue;
			v = xrealloc(v, (n + 1) * sizeof(*v));
			v[n++] = c;
		}
		free(s);
	}
	*n_r = n;
	return v;
}

static void strv_free_n(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static int subs_write(const struct mbox_account *a, char **v, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += strlen(v[i]) + 1;
	char *buf = xmalloc(len + 1), *o = buf;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(v[i]);
		memcpy(o, v[i], l);
		o[l] = '\n';
		o += l + 1;
	}
	int r = write_atomic(a->maildir, SUBS_NAME, buf, len);
	free(buf);
	return r;
}

struct mbox_account *mbox_account_open(struct mbox_store *st, int64_t account_id,
                                       const char *address, const char *maildir, uint64_t quota,
                                       char **error_r)
{
	/* the root's parents (DATA_DIR/mail/DOMAIN) */
	char *p = xstrdup(maildir);
	for (char *s = strchr(p + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST) {
			fail(error_r, errno == ENOSPC ? ENOSPC : EIO, "cannot create %s: %s", p,
			     strerror(errno));
			free(p);
			return NULL;
		}
		*s = '/';
	}
	free(p);
	struct mbox_account *a = xcalloc(1, sizeof(*a));
	a->st = st;
	a->id = account_id;
	a->address = xstrdup(address);
	a->maildir = xstrdup(maildir);
	a->quota = quota;
	if (make_folder_dirs(maildir, false) < 0)
		goto fail_errno;
	char *subs = xasprintf("%s/" SUBS_NAME, maildir);
	bool have_subs = access(subs, F_OK) == 0;
	free(subs);
	for (size_t i = 0; i < st->nstd; i++) {
		char *fp = folder_path(a, st->std[i].name);
		int r = make_folder_dirs(fp, true);
		free(fp);
		if (r < 0)
			goto fail_errno;
	}
	if (!have_subs) {
		char **v = xcalloc(st->nstd + 1, sizeof(*v));
		for (size_t i = 0; i < st->nstd; i++)
			v[i] = st->std[i].name;
		int r = subs_write(a, v, st->nstd);
		free(v);
		if (r < 0)
			goto fail_errno;
	}
	return a;
fail_errno:
	fail(error_r, errno == ENOSPC ? ENOSPC : EIO, "cannot create the mailbox %s: %s", maildir,
	     strerror(errno));
	mbox_account_close(&a);
	return NULL;
}

void mbox_account_close(struct mbox_account **ap)
{
	struct mbox_account *a = *ap;
	if (a == NULL)
		return;
	free(a->address);
	free(a->maildir);
	free(a);
	*ap = NULL;
}

int mbox_quota(struct mbox_account *acct, uint64_t *used_r, uint64_t *limit_r, char **error_r)
{
	*limit_r = acct->quota;
	return account_used(acct, used_r, error_r);
}

static int quota_check(struct mbox_account *a, uint64_t add, char **error_r)
{
	if (a->quota == 0)
		return 0;
	uint64_t used;
	if (account_used(a, &used, error_r) < 0)
		return -1;
	if (used + add > a->quota)
		return fail(error_r, EDQUOT, "quota exceeded (%llu of %llu bytes used)",
		            (unsigned long long)used, (unsigned long long)a->quota);
	return 0;
}

/* ---- file names and flags ---- */

static void parse_flags(const char *filename, uint32_t *flags_r, uint32_t *kw_r)
{
	uint32_t f = 0, k = 0;
	const char *p = strstr(filename, ":2,");
	if (p != NULL)
		for (p += 3; *p != '\0'; p++) {
			switch (*p) {
			case 'D':
				f |= MBOX_F_DRAFT;
				break;
			case 'F':
				f |= MBOX_F_FLAGGED;
				break;
			case 'R':
				f |= MBOX_F_ANSWERED;
				break;
			case 'S':
				f |= MBOX_F_SEEN;
				break;
			case 'T':
				f |= MBOX_F_DELETED;
				break;
			default:
				if (*p >= 'a' && *p <= 'z')
					k |= 1u << (*p - 'a');
			}
		}
	*flags_r = f;
	*kw_r = k;
}

static char *base_of(const char *filename)
{
	const char *c = strchr(filename, ':');
	return c != NULL ? xstrndup(filename, (size_t)(c - filename)) : xstrdup(filename);
}

/* "BASE:2,FLAGS" with the letters in ASCII order, as Maildir requires. */
static char *make_filename(const char *base, uint32_t flags, uint32_t kw)
{
	char fl[40], *o = fl;
	if (flags & MBOX_F_DRAFT)
		*o++ = 'D';
	if (flags & MBOX_F_FLAGGED)
		*o++ = 'F';
	if (flags & MBOX_F_ANSWERED)
		*o++ = 'R';
	if (flags & MBOX_F_SEEN)
		*o++ = 'S';
	if (flags & MBOX_F_DELETED)
		*o++ = 'T';
	for (int i = 0; i < MBOX_MAX_KEYWORDS; i++)
		if (kw & (1u << i))
			*o++ = (char)('a' + i);
	*o = '\0';
	return xasprintf("%s:2,%s", base, fl);
}

static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static char host_escaped[256 * 4 + 1];

/* The host name in file names, '/' and ':' escaped as Dovecot does (\057, \072). */
static void host_init(void)
{
	char h[256];
	if (gethostname(h, sizeof(h) - 1) < 0)
		strcpy(h, "localhost");
	h[sizeof(h) - 1] = '\0';
	char *o = host_escaped;
	for (const char *p = h; *p != '\0'; p++) {
		if (*p == '/' || *p == ':') {
			o += sprintf(o, "\\%03o", (unsigned char)*p);
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

/* A new unique base name for a message of `size` bytes. */
static char *new_basename(uint64_t size)
{
	static unsigned counter;
	pthread_once(&host_once, host_init);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	unsigned q = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
	return xasprintf("%lld.M%ldP%dQ%u.%s,S=%llu", (long long)now.tv_sec, now.tv_nsec / 1000,
	                 (int)getpid(), q, host_escaped, (unsigned long long)size);
}

/* ---- uidlist ---- */

struct uident {
	char *base;
	uint32_t uid;
};

static int uident_cmp(const void *a, const void *b)
{
	return strcmp(((const struct uident *)a)->base, ((const struct uident *)b)->base);
}

/*
 * Read the uidlist: header (if off == 0) and the entries from byte `off`.
 * ENOENT if missing. Entries sorted by base name.
 */
static int uidlist_read(const char *path, int64_t off, uint32_t *uidvalidity_r, uint32_t *uidnext_r,
                        struct uident **ents_r, size_t *n_r, int64_t *size_r)
{
	size_t len;
	char *s = read_file(path, &len);
	*ents_r = NULL;
	*n_r = 0;
	if (s == NULL)
		return -1;
	*size_r = (int64_t)len;
	if ((int64_t)len < off)
		off = 0; /* rewritten (compacted) meanwhile */
	uint32_t v = 0, next = 1;
	char *p = s;
	if (sscanf(s, "V1 %u %u", &v, &next) == 2 && v != 0) {
		*uidvalidity_r = v;
		*uidnext_r = next;
	} else {
		*uidvalidity_r = 0;
	}
	if (off > 0)
		p = s + off;
	size_t cap = 0;
	struct uident *ents = NULL;
	size_t n = 0;
	for (char *save = NULL, *l = strtok_r(p, "\n", &save); l != NULL;
	     l = strtok_r(NULL, "\n", &save)) {
		if (l[0] == 'V')
			continue;
		char *sp = strchr(l, ' ');
		if (sp == NULL)
			continue;
		unsigned long u = strtoul(l, NULL, 10);
		if (u == 0 || u > UINT32_MAX)
			continue;
		ents = xgrow(ents, &cap, n + 1, sizeof(*ents));
		ents[n].uid = (uint32_t)u;
		ents[n].base = xstrdup(sp + 1);
		n++;
		if (u >= *uidnext_r)
			*uidnext_r = (uint32_t)u + 1;
	}
	free(s);
	if (n > 0)
		qsort(ents, n, sizeof(*ents), uident_cmp);
	*ents_r = ents;
	*n_r = n;
	return 0;
}

static void uidents_free(struct uident *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i].base);
	free(e);
}

static uint32_t new_uidvalidity(void)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static uint32_t last;
	pthread_mutex_lock(&lock);
	uint32_t v = (uint32_t)time(NULL);
	if (v <= last)
		v = last + 1;
	last = v;
	pthread_mutex_unlock(&lock);
	return v;
}

static int uidlist_write_fd(int fd, const char *text, size_t len, int64_t *size_r, int *fd_r);

/*
 * Append lines and fsync. 0 / -1 errno. *size_r: the file size after. A
 * missing (or empty) uidlist first gets its header, with the folder's
 * UIDVALIDITY and a UIDNEXT no smaller than any UID given out before.
 */
static int uidlist_append(const char *path, uint32_t uidvalidity, uint32_t uidnext,
                          const char *lines, size_t nlines, int64_t *size_r, int *fd_r)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	struct stat hs;
	char *text;
	size_t len;
	if (fstat(fd, &hs) == 0 && hs.st_size == 0) {
		text = xasprintf("V1 %u %u\n%.*s", uidvalidity, uidnext, (int)nlines, lines);
		len = strlen(text);
	} else {
		text = xstrndup(lines, nlines);
		len = nlines;
	}
	int ret = uidlist_write_fd(fd, text, len, size_r, fd_r);
	free(text);
	return ret;
}

/* uidlist_append(): write, then fsync and close, or (fd_r) hand the open fd over unsynced. */
static int uidlist_write_fd(int fd, const char *text, size_t len, int64_t *size_r, int *fd_r)
{
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;
			/* a partial line would be misread: cut it off again */
			struct stat sb;
			if (fstat(fd, &sb) == 0 && off > 0)
				(void)!ftruncate(fd, sb.st_size - (off_t)off);
			close(fd);
			errno = saved;
			return -1;
		}
		off += (size_t)n;
	}
	struct stat sb;
	if ((fd_r == NULL && fsync(fd) < 0) || fstat(fd, &sb) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	*size_r = sb.st_size;
	if (fd_r != NULL) {
		*fd_r = fd;
		return 0;
	}
	return close(fd);
}

/* ---- keywords file ---- */

static void kw_free(char **names, size_t n)
{
	strv_free_n(names, n);
}

/* Names by index (gaps filled with placeholder names). */
static char **kw_load(const char *dir, size_t *n_r, struct timespec *mtime_r)
{
	char *path = xasprintf("%s/" KEYWORDS_NAME, dir);
	struct stat sb;
	if (mtime_r != NULL) {
		if (stat(path, &sb) == 0)
			*mtime_r = sb.st_mtim;
		else
			memset(mtime_r, 0, sizeof(*mtime_r));
	}
	char *s = read_file(path, NULL);
	free(path);
	char *slot[MBOX_MAX_KEYWORDS] = {0};
	size_t n = 0;
	if (s != NULL) {
		char *save = NULL;
		for (char *l = strtok_r(s, "\n", &save); l != NULL;
		     l = strtok_r(NULL, "\n", &save)) {
			char *sp = strchr(l, ' ');
			if (sp == NULL || sp[1] == '\0')
				continue;
			unsigned long i = strtoul(l, NULL, 10);
			if (i >= MBOX_MAX_KEYWORDS || slot[i] != NULL)
				continue;
			slot[i] = xstrdup(sp + 1);
			if (i + 1 > n)
				n = i + 1;
		}
		free(s);
	}
	char **names = xcalloc(n + 1, sizeof(*names));
	for (size_t i = 0; i < n; i++)
		names[i] = slot[i] != NULL ? slot[i] : xasprintf("$Unnamed%zu", i);
	*n_r = n;
	return names;
}

/*
 * Index of keyword `name` in folder `dir`, created if `create` (under the
 * index write lock, so two sessions do not pick the same letter).
 */
static int kw_index_dir(sqlite3 *db, const char *dir, const char *name, bool create)
{
	size_t n;
	char **names = kw_load(dir, &n, NULL);
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(names[i], name) == 0) {
			kw_free(names, n);
			return (int)i;
		}
	kw_free(names, n);
	if (!create) {
		errno = ENOENT;
		return -1;
	}
	if (exec(db, "BEGIN IMMEDIATE", NULL) < 0) {
		errno = EIO;
		return -1;
	}
	names = kw_load(dir, &n, NULL);
	int ret = -1;
	for (size_t i = 0; i < n && ret < 0; i++)
		if (strcasecmp(names[i], name) == 0)
			ret = (int)i;
	if (ret < 0 && n >= MBOX_MAX_KEYWORDS) {
		errno = EMLINK;
	} else if (ret < 0) {
		size_t len = 0;
		for (size_t i = 0; i < n; i++)
			len += strlen(names[i]) + 16;
		len += strlen(name) + 16;
		char *buf = xmalloc(len), *o = buf;
		for (size_t i = 0; i < n; i++)
			o += sprintf(o, "%zu %s\n", i, names[i]);
		o += sprintf(o, "%zu %s\n", n, name);
		if (write_atomic(dir, KEYWORDS_NAME, buf, (size_t)(o - buf)) == 0)
			ret = (int)n;
		free(buf);
	}
	int saved = errno;
	exec(db, "COMMIT", NULL);
	kw_free(names, n);
	errno = saved;
	return ret;
}

/* ---- folder locks ---- */

/*
 * One mutex per folder (by path), for this process's threads: held by whoever
 * changes a folder's files or its uidlist — a scan, an append, a store, an
 * expunge — so that the slow part of an append (the uidlist and directory
 * fsyncs) runs outside the index's write lock, which is one for the whole
 * server, while no other thread of ours sees the folder half done. Taken
 * before the index write lock, never after it. Other processes (the CLI) are
 * kept in order by the index write lock alone, as before.
 */
struct folder_lock {
	struct folder_lock *next;
	char *path;
	unsigned refs;
	pthread_mutex_t mu;
};

#define FOLDER_LOCK_BUCKETS 64
static pthread_mutex_t folder_locks_mu = PTHREAD_MUTEX_INITIALIZER;
static struct folder_lock *folder_locks[FOLDER_LOCK_BUCKETS];

static struct folder_lock **folder_lock_bucket(const char *path)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++)
		h = (h ^ *p) * 16777619u;
	return &folder_locks[h % FOLDER_LOCK_BUCKETS];
}

static void folder_unref(struct folder_lock *l)
{
	pthread_mutex_lock(&folder_locks_mu);
	if (--l->refs == 0) {
		struct folder_lock **pp = folder_lock_bucket(l->path);
		while (*pp != l)
			pp = &(*pp)->next;
		*pp = l->next;
		pthread_mutex_destroy(&l->mu);
		free(l->path);
		free(l);
	}
	pthread_mutex_unlock(&folder_locks_mu);
}

/*
 * The folder's lock. On a thread that must not wait (mbox_thread_nowait())
 * only if it is free: NULL when another thread holds it.
 */
static struct folder_lock *folder_lock(const char *path)
{
	pthread_mutex_lock(&folder_locks_mu);
	struct folder_lock **b = folder_lock_bucket(path), *l = *b;
	while (l != NULL && strcmp(l->path, path) != 0)
		l = l->next;
	if (l == NULL) {
		l = xcalloc(1, sizeof(*l));
		l->path = xstrdup(path);
		pthread_mutex_init(&l->mu, NULL);
		l->next = *b;
		*b = l;
	}
	l->refs++;
	pthread_mutex_unlock(&folder_locks_mu);
	if (!thread_nowait) {
		pthread_mutex_lock(&l->mu);
		return l;
	}
	if (pthread_mutex_trylock(&l->mu) == 0)
		return l;
	/* held by another thread: this one must not wait (mbox_thread_nowait()) */
	folder_unref(l);
	return NULL;
}

static void folder_unlock(struct folder_lock *l)
{
	if (l == NULL)
		return;
	pthread_mutex_unlock(&l->mu);
	folder_unref(l);
}

/* ---- folder rows and sync ---- */

struct frow {
	int64_t id;
	uint32_t uidvalidity, uidnext, first_recent;
	uint64_t hms;
	int64_t new_mtime, cur_mtime, uidlist_off;
};

/* 1 found, 0 not, -1 error */
static int frow_get(sqlite3 *db, int64_t account_id, const char *name, struct frow *r,
                    char **error_r)
{
	sqlite3_stmt *s = prep(db,
	                       "SELECT id, uidvalidity, uidnext, first_recent_uid, highestmodseq, "
	                       "new_mtime, cur_mtime, uidlist_off FROM folders "
	                       "WHERE account_id = ?1 AND name = ?2",
	                       error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, account_id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s), ret = 0;
	if (rc == SQLITE_ROW) {
		r->id = sqlite3_column_int64(s, 0);
		r->uidvalidity = (uint32_t)sqlite3_column_int64(s, 1);
		r->uidnext = (uint32_t)sqlite3_column_int64(s, 2);
		r->first_recent = (uint32_t)sqlite3_column_int64(s, 3);
		r->hms = (uint64_t)sqlite3_column_int64(s, 4);
		r->new_mtime = sqlite3_column_int64(s, 5);
		r->cur_mtime = sqlite3_column_int64(s, 6);
		r->uidlist_off = sqlite3_column_int64(s, 7);
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		ret = fail_db(error_r, db, "folder lookup");
	}
	unprep(s);
	return ret;
}

/*
 * A Maildir copied from Dovecot: take its UIDs and keywords (dovecot-uidlist
 * versions 1 and 3, dovecot-keywords) so clients see the same UIDVALIDITY
 * and UIDs. 0 if imported, -1 if there is nothing (usable) to import.
 */
static int dovecot_import(const char *path)
{
	char *dp = xasprintf("%s/dovecot-uidlist", path);
	char *s = read_file(dp, NULL);
	free(dp);
	if (s == NULL)
		return -1;
	uint32_t v = 0, next = 1;
	char *save = NULL;
	char *line = strtok_r(s, "\n", &save);
	if (line != NULL && strncmp(line, "3 ", 2) == 0) {
		for (char *t = line + 2; *t != '\0';) {
			while (*t == ' ')
				t++;
			if (*t == 'V')
				v = (uint32_t)strtoul(t + 1, NULL, 10);
			else if (*t == 'N')
				next = (uint32_t)strtoul(t + 1, NULL, 10);
			while (*t != '\0' && *t != ' ')
				t++;
		}
	} else if (line != NULL && strncmp(line, "1 ", 2) == 0) {
		unsigned long vv = 0, nn = 1;
		if (sscanf(line + 2, "%lu %lu", &vv, &nn) == 2) {
			v = (uint32_t)vv;
			next = (uint32_t)nn;
		}
	}
	if (v == 0) {
		free(s);
		return -1;
	}
	size_t cap = 64, len = 0;
	char *out = xmalloc(cap);
	while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
		unsigned long uid = strtoul(line, NULL, 10);
		const char *name = strstr(line, " :");
		if (name != NULL) {
			name += 2;
		} else {
			name = strchr(line, ' ');
			name = name != NULL ? name + 1 : NULL;
		}
		if (uid == 0 || uid > UINT32_MAX || name == NULL || *name == '\0' ||
		    strchr(name, '/') != NULL)
			continue;
		char *base = base_of(name);
		out = xgrow(out, &cap, len + strlen(base) + 16, 1);
		len += (size_t)sprintf(out + len, "%lu %s\n", uid, base);
		free(base);
		if (uid >= next)
			next = (uint32_t)uid + 1;
	}
	free(s);
	char *head = xasprintf("V1 %u %u\n", v, next);
	char *all = xmalloc(strlen(head) + len + 1);
	memcpy(all, head, strlen(head));
	memcpy(all + strlen(head), out, len);
	size_t total = strlen(head) + len;
	int r = write_atomic(path, UIDLIST_NAME, all, total);
	free(head);
	free(all);
	free(out);
	if (r < 0)
		return -1;
	/* dovecot-keywords has our format ("INDEX NAME" lines) */
	char *kp = xasprintf("%s/" KEYWORDS_NAME, path),
	     *dk = xasprintf("%s/dovecot-keywords", path);
	size_t klen;
	char *kw = access(kp, F_OK) != 0 ? read_file(dk, &klen) : NULL;
	if (kw != NULL && write_atomic(path, KEYWORDS_NAME, kw, klen) < 0)
		log_error("event=dovecot_keywords_import_failed folder=%s error=\"%s\"", path,
		          strerror(errno));
	free(kw);
	free(kp);
	free(dk);
	log_info("event=dovecot_uidlist_imported folder=%s uidvalidity=%u uidnext=%u", path, v,
	         next);
	return 0;
}

/* In a write transaction: the folder's row from its uidlist (created if missing). */
static int frow_create(sqlite3 *db, int64_t account_id, const char *name, const char *path,
                       struct frow *r, char **error_r)
{
	char *ul = xasprintf("%s/" UIDLIST_NAME, path);
	uint32_t v = 0, next = 1;
	struct uident *ents;
	size_t n;
	int64_t size;
	if (uidlist_read(ul, 0, &v, &next, &ents, &n, &size) < 0 && errno != ENOENT) {
		fail(error_r, EIO, "cannot read %s: %s", ul, strerror(errno));
		free(ul);
		return -1;
	}
	uidents_free(ents, n);
	if (v == 0 && dovecot_import(path) == 0 &&
	    uidlist_read(ul, 0, &v, &next, &ents, &n, &size) == 0)
		uidents_free(ents, n);
	if (v == 0) {
		/* a new folder (or a lost uidlist: UIDs start over under a new UIDVALIDITY) */
		v = new_uidvalidity();
		next = 1;
		char *head = xasprintf("V1 %u 1\n", v);
		char *dir = xstrdup(path);
		int w = write_atomic(dir, UIDLIST_NAME, head, strlen(head));
		free(dir);
		free(head);
		if (w < 0) {
			fail(error_r, errno == ENOSPC ? ENOSPC : EIO, "cannot write %s: %s", ul,
			     strerror(errno));
			free(ul);
			return -1;
		}
	}
	free(ul);
	sqlite3_stmt *s = prep(db,
	                       "INSERT INTO folders (account_id, name, uidvalidity, uidnext, "
	                       "first_recent_uid) VALUES (?1, ?2, ?3, ?4, ?4)",
	                       error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, account_id);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, v);
	sqlite3_bind_int64(s, 4, next);
	int rc = sqlite3_step(s);
	unprep(s);
	if (rc != SQLITE_DONE)
		return fail_db(error_r, db, "folder insert");
	memset(r, 0, sizeof(*r));
	r->id = sqlite3_last_insert_rowid(db);
	r->uidvalidity = v;
	r->uidnext = next;
	r->first_recent = next;
	r->hms = 1;
	return 0;
}

struct dent {
	char *base; /* in file's allocation */
	char *file;
	bool in_new;
	bool delivered; /* moved from new/ by this sync */
};

struct ient {
	char *base;
	char *file;
	uint32_t uid;
	bool in_new;
	uint64_t phys;
};

static int dent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dent *)a)->base, ((const struct dent *)b)->base);
}

static int ient_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ient *)a)->base, ((const struct ient *)b)->base);
}

static int read_dir(const char *dir, bool in_new, struct dent **v, size_t *n, size_t *cap)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		*v = xgrow(*v, cap, *n + 1, sizeof(**v));
		/* the name and its base in one allocation (dents_free()): 200,000
		   mallocs and frees were a tenth of scanning 100,000 files */
		size_t len = strlen(de->d_name);
		const char *colon = memchr(de->d_name, ':', len);
		size_t blen = colon != NULL ? (size_t)(colon - de->d_name) : len;
		char *file = xmalloc(len + blen + 2);
		memcpy(file, de->d_name, len + 1);
		memcpy(file + len + 1, de->d_name, blen);
		file[len + 1 + blen] = '\0';
		(*v)[*n].file = file;
		(*v)[*n].base = file + len + 1;
		(*v)[*n].in_new = in_new;
		(*v)[*n].delivered = in_new;
		(*n)++;
	}
	closedir(d);
	return 0;
}

static int str_ptr_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Move everything in new/ to cur/ with ":2," (bounded retries while
 * deliveries arrive). The cur/ names of the moved files, sorted.
 */
static char **move_new(const char *path, size_t *n_r)
{
	char *newdir = xasprintf("%s/new", path);
	char **moved = NULL;
	size_t n = 0, cap = 0;
	for (int round = 0; round < 4; round++) {
		DIR *d = opendir(newdir);
		if (d == NULL)
			break;
		size_t before = n;
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			char *from = xasprintf("%s/%s", newdir, de->d_name);
			char *name = strchr(de->d_name, ':') != NULL
			                 ? xstrdup(de->d_name)
			                 : xasprintf("%s:2,", de->d_name);
			char *to = xasprintf("%s/cur/%s", path, name);
			if (rename(from, to) == 0) {
				moved = xgrow(moved, &cap, n + 1, sizeof(*moved));
				moved[n++] = name;
			} else {
				free(name);
			}
			free(from);
			free(to);
		}
		closedir(d);
		if (n == before)
			break;
	}
	free(newdir);
	if (n > 1)
		qsort(moved, n, sizeof(*moved), str_ptr_cmp);
	*n_r = n;
	return moved;
}

/*
 * The cache record of the message file open on fd (size bytes; closed here).
 * A small file is read in one go: mmap + munmap costs more, the munmap above
 * all, which in a process of many threads flushes the TLB of every CPU that
 * runs one of them.
 */
static void cache_compute_fd(int fd, size_t size, struct mbox_cache *c, uint64_t *vsize_r)
{
	if (size <= 256 * 1024) {
		char *buf = xmalloc(size + 1);
		size_t got = 0;
		while (got < size) {
			ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		close(fd);
		mbox_cache_compute(buf, got, c, vsize_r);
		free(buf);
		return;
	}
	void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		mbox_cache_compute("", 0, c, vsize_r);
		return;
	}
	mbox_cache_compute(map, size, c, vsize_r);
	munmap(map, size);
}

/*
 * Read a message file (`file` in the directory open on dfd, which may be
 * AT_FDCWD) and compute its cache record (an empty message if it cannot be read).
 */
static void cache_file(int dfd, const char *file, struct mbox_cache *c, uint64_t *vsize_r,
                       uint64_t *phys_r, int64_t *mtime_r, int64_t *ctime_r)
{
	int fd = openat(dfd, file, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) < 0) {
		if (fd >= 0)
			close(fd);
		mbox_cache_compute("", 0, c, vsize_r);
		*phys_r = 0;
		*mtime_r = *ctime_r = time(NULL);
		return;
	}
	*phys_r = (uint64_t)sb.st_size;
	*mtime_r = sb.st_mtim.tv_sec;
	*ctime_r = sb.st_ctim.tv_sec;
	cache_compute_fd(fd, (size_t)sb.st_size, c, vsize_r);
}

/*
 * INTERNALDATE and save date not read yet: a scan that finds many new files
 * at once takes them from the file's stat() only when a command first needs
 * them (resolve_dates()). A file whose mtime really is -1 is stat'd each time,
 * which is slow, not wrong.
 */
#define DATE_UNKNOWN (-1)

/* A decimal number at s (as in ",S=123"), or -1 if there is none. */
static int64_t name_number(const char *s, const char *end)
{
	int64_t v = 0;
	const char *p = s;
	for (; p < end && *p >= '0' && *p <= '9' && v < INT64_MAX / 10 - 9; p++)
		v = v * 10 + (*p - '0');
	return p == s ? -1 : v;
}

/*
 * The sizes and dates of a message file without parsing it, for a scan that
 * finds many new files at once (a Maildir copied in). A name with ",S=" and
 * ",W=" (Dovecot's; ours have ",S=" alone) gives the physical size and the size with CRLF
 * line ends (RFC822.SIZE) without touching the file, and the dates are left
 * DATE_UNKNOWN: 100,000 stat() calls were a third of a first SELECT's time
 * (Dovecot does not stat either). Otherwise the size and dates come from
 * stat(), and the CRLF size by counting the line ends not preceded by CR, as
 * the MIME parser does. The cache row is made when the message is first asked
 * for (mbox_msg_caches()), which also corrects a size a name got wrong.
 */
static void file_sizes(int dfd, const char *file, const char *name, uint64_t *vsize_r,
                       uint64_t *phys_r, int64_t *mtime_r, int64_t *ctime_r)
{
	const char *colon = strchr(name, ':');
	const char *bend = colon != NULL ? colon : name + strlen(name);
	const char *sp = memmem(name, (size_t)(bend - name), ",S=", 3);
	const char *wp = memmem(name, (size_t)(bend - name), ",W=", 3);
	int64_t s = sp != NULL ? name_number(sp + 3, bend) : -1;
	int64_t w = wp != NULL ? name_number(wp + 3, bend) : -1;
	if (s >= 0 && w >= s) {
		*phys_r = (uint64_t)s;
		*vsize_r = (uint64_t)w;
		*mtime_r = *ctime_r = DATE_UNKNOWN;
		return;
	}
	struct stat sb;
	*vsize_r = *phys_r = 0;
	*mtime_r = *ctime_r = time(NULL);
	if (fstatat(dfd, file, &sb, 0) < 0)
		return;
	*phys_r = (uint64_t)sb.st_size;
	*mtime_r = sb.st_mtim.tv_sec;
	*ctime_r = sb.st_ctim.tv_sec;
	int fd = openat(dfd, file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*vsize_r = *phys_r;
		return;
	}
	uint64_t bare = 0;
	unsigned char buf[65536], last = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (const unsigned char *q = buf, *end = buf + n;
		     (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
			if ((q == buf ? last : q[-1]) != '\r')
				bare++;
		last = buf[n - 1];
	}
	close(fd);
	*vsize_r = *phys_r + bare;
}

#define LAZY_SCAN 256

static void bind_cache(sqlite3_stmt *s, int first, const struct mbox_cache *c)
{
	const char *v[] = {c->envelope,    c->bodystructure, c->body,
	                   c->subject,     c->from,          c->to,
	                   c->cc,          c->bcc,           c->message_id,
	                   c->in_reply_to, c->references,    c->sort_from,
	                   c->sort_to,     c->sort_cc,       c->display_from,
	                   c->display_to};
	for (size_t i = 0; i < ARRAY_SIZE(v); i++)
		sqlite3_bind_text(s, first + (int)i, v[i], -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, first + (int)ARRAY_SIZE(v), c->date);
	sqlite3_bind_int64(s, first + (int)ARRAY_SIZE(v) + 1, c->date_tz);
}

#define INSERT_MSG                                                                                 \
	"INSERT OR REPLACE INTO messages (folder_id, uid, basename, filename, in_new, flags, "     \
	"keywords, modseq, size, phys_size, internaldate, savedate) VALUES "                       \
	"(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
/* INSERT_MSG of BULK_ROWS rows (12 parameters each) */
#define BULK_ROWS 32
static pthread_once_t bulk_once = PTHREAD_ONCE_INIT;
static char bulk_sql[256 + BULK_ROWS * 40];

static void bulk_sql_init(void)
{
	const char *head = INSERT_MSG; /* "INSERT OR REPLACE INTO ..." */
	const char *cols = strstr(head, " INTO ");
	size_t o = (size_t)snprintf(bulk_sql, sizeof(bulk_sql), "INSERT OR IGNORE%.*s",
	                            (int)(strstr(head, "VALUES") + 6 - cols), cols);
	for (int r = 0; r < BULK_ROWS; r++)
		o += (size_t)snprintf(bulk_sql + o, sizeof(bulk_sql) - o,
		                      "%s(?,?,?,?,?,?,?,?,?,?,?,?)", r > 0 ? "," : " ");
}

static const char *bulk_insert_sql(void)
{
	pthread_once(&bulk_once, bulk_sql_init);
	return bulk_sql;
}

/* A row of messages as INSERT_MSG takes it (base and file borrowed). */
struct msgrow {
	int64_t folder_id, uid;
	const char *base, *file;
	bool in_new;
	uint32_t flags, keywords;
	uint64_t modseq, size, phys;
	int64_t internaldate, savedate;
};

static void bind_msgrow(sqlite3_stmt *s, int off, const struct msgrow *m)
{
	sqlite3_bind_int64(s, off + 1, m->folder_id);
	sqlite3_bind_int64(s, off + 2, m->uid);
	sqlite3_bind_text(s, off + 3, m->base, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, off + 4, m->file, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, off + 5, m->in_new);
	sqlite3_bind_int64(s, off + 6, m->flags);
	sqlite3_bind_int64(s, off + 7, m->keywords);
	sqlite3_bind_int64(s, off + 8, (int64_t)m->modseq);
	sqlite3_bind_int64(s, off + 9, (int64_t)m->size);
	sqlite3_bind_int64(s, off + 10, (int64_t)m->phys);
	sqlite3_bind_int64(s, off + 11, m->internaldate);
	sqlite3_bind_int64(s, off + 12, m->savedate);
}

/*
 * Insert n rows: with `bulk` (BULK_ROWS rows, INSERT OR IGNORE) in one
 * statement, whose B-tree cursors stay open from one row to the next so that
 * SQLite appends to the leaf without seeking from the root (the rows come in
 * UID order): 45 % fewer instructions for a first scan of 100,000 files. OR
 * IGNORE, because a statement that can abort half way needs a statement
 * journal, a temporary file that got a copy of every page it changed (59,000
 * pwrite()s). A row it ignored (a UID the index has: not expected) is then
 * written by `one` (INSERT OR REPLACE), as every row without `bulk`.
 */
static int bulk_insert(sqlite3 *db, sqlite3_stmt *bulk, sqlite3_stmt *one,
                       const struct msgrow *rows, size_t n)
{
	if (bulk != NULL) {
		sqlite3_reset(bulk);
		for (size_t i = 0; i < n; i++)
			bind_msgrow(bulk, (int)i * 12, &rows[i]);
		if (sqlite3_step(bulk) != SQLITE_DONE)
			return -1;
		if (sqlite3_changes(db) == (int)n)
			return 0;
	}
	for (size_t i = 0; i < n; i++) {
		sqlite3_reset(one);
		bind_msgrow(one, 0, &rows[i]);
		if (sqlite3_step(one) != SQLITE_DONE)
			return -1;
	}
	return 0;
}

#define INSERT_CACHE                                                                               \
	"INSERT OR REPLACE INTO msgcache (folder_id, uid, " CACHE_COLS ") VALUES "                 \
	"(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, "  \
	"?20)"

/*
 * A change later in the same clock tick would leave a directory's mtime as it
 * is. Timestamps come from the kernel's coarse clock (one jiffy, at most
 * 10 ms): a tick is surely over 100 ms later; a file system with whole-second
 * timestamps (the nanoseconds are 0) gets a whole second.
 */
static bool mtime_settled(int64_t mtime_ns)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t tick = mtime_ns % 1000000000 == 0 ? 1000000000 : 100000000;
	return ts_ns(&now) - mtime_ns >= tick;
}

/*
 * What a scan records: the mtime it saw, or -mtime while its tick may go on.
 * Like our own change (mtime_vouches()), the index is in step with what the
 * scan read; only another program's change later in the same tick could hide
 * behind it, and the first sync once the tick is over scans again to see.
 * (Recording "scan again at once" instead made every sync of a busy folder a
 * scan: each one ran within 100 ms of the last change and could vouch for
 * nothing.)
 */
static int64_t mtime_to_store(int64_t mtime_ns)
{
	return mtime_settled(mtime_ns) ? mtime_ns : -mtime_ns;
}

/*
 * Does the recorded mtime `rec` vouch for a directory whose mtime is `m`?
 * rec > 0: a scan saw the directory at rec, in a settled tick. rec < -1: our
 * own change (store, expunge, append under the folder lock) or a scan left it
 * at -rec with the index in step; trusted while that tick lasts, since only
 * another program's change in the very same tick can hide behind it; once the
 * tick is over the next sync scans once to make sure (and records a settled
 * mtime). Own changes made one after another thus cost no scan at all.
 */
static bool mtime_vouches(int64_t rec, int64_t m)
{
	if (m <= 0)
		return false;
	if (rec == m)
		return true;
	return rec < -1 && -rec == m && !mtime_settled(m);
}

static int64_t dir_mtime(const char *path, const char *sub)
{
	char *d = xasprintf("%s/%s", path, sub);
	struct stat sb;
	int r = stat(d, &sb);
	free(d);
	return r == 0 ? ts_ns(&sb.st_mtim) : 0;
}

/*
 * After our own change to cur/ (under the index write lock, the rows already
 * changed to match): the value to record for cur/. If the index was in step
 * with the directory before the change (rec vouched for `pre`), it still is;
 * otherwise leave rec, and the next sync scans.
 */
static int64_t mtime_carry(int64_t rec, int64_t pre, int64_t post)
{
	if (post <= 0 || !mtime_vouches(rec, pre))
		return rec;
	return post == rec ? rec : -post;
}

/* mtime_carry() for changes that do not otherwise rewrite the folder row. */
static int cur_carry(sqlite3 *db, int64_t folder_id, int64_t rec, int64_t pre, const char *path,
                     char **error_r)
{
	int64_t v = mtime_carry(rec, pre, dir_mtime(path, "cur"));
	if (v == rec)
		return 0;
	sqlite3_stmt *s = prep(db, "UPDATE folders SET cur_mtime = ?2 WHERE id = ?1", error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, folder_id);
	sqlite3_bind_int64(s, 2, v);
	int rc = sqlite3_step(s);
	unprep(s);
	return rc == SQLITE_DONE ? 0 : fail_db(error_r, db, "folder update");
}

static void dents_free(struct dent *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(d[i].file); /* base is in the same allocation (read_dir()) */
	free(d);
}

static void ients_free(struct ient *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(d[i].base);
		free(d[i].file);
	}
	free(d);
}

static int update_folder_row(sqlite3 *db, const struct frow *r, char **error_r)
{
	sqlite3_stmt *s =
	    prep(db,
	         "UPDATE folders SET uidnext = ?2, highestmodseq = ?3, new_mtime = ?4, "
	         "cur_mtime = ?5, uidlist_off = ?6, first_recent_uid = ?7 WHERE id = ?1",
	         error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, r->id);
	sqlite3_bind_int64(s, 2, r->uidnext);
	sqlite3_bind_int64(s, 3, (int64_t)r->hms);
	sqlite3_bind_int64(s, 4, r->new_mtime);
	sqlite3_bind_int64(s, 5, r->cur_mtime);
	sqlite3_bind_int64(s, 6, r->uidlist_off);
	sqlite3_bind_int64(s, 7, r->first_recent);
	int rc = sqlite3_step(s);
	unprep(s);
	return rc == SQLITE_DONE ? 0 : fail_db(error_r, db, "folder update");
}

/*
 * Let the page cache hold a bulk insert of n messages (~200 octets of pages
 * each, up to 256 MiB); returns the cache size (PRAGMA cache_size) to go back
 * to with cache_shrink(), which also frees the pages.
 */
static int64_t cache_grow(sqlite3 *db, size_t n)
{
	sqlite3_stmt *q = NULL;
	int64_t old = 0;
	if (sqlite3_prepare_v2(db, "PRAGMA cache_size", -1, &q, NULL) == SQLITE_OK &&
	    sqlite3_step(q) == SQLITE_ROW)
		old = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	int64_t want = (int64_t)(n < 1310720 ? n : 1310720) / 5 + 4096;
	if (old == 0 || (old < 0 ? -old : old * 4) >= want)
		return 0;
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA cache_size = -%lld", (long long)want);
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? old : 0;
}

static void cache_shrink(sqlite3 *db, int64_t old)
{
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA cache_size = %lld", (long long)old);
	sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_db_release_memory(db);
}

/* `v` in decimal at buf (no NUL); its length */
static size_t fmt_u32(char *buf, uint32_t v)
{
	char tmp[10];
	size_t k = sizeof(tmp);
	do {
		tmp[--k] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	memcpy(buf, tmp + k, sizeof(tmp) - k);
	return sizeof(tmp) - k;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* (uid, position) pairs, to find the first of equal UIDs */
static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * The UIDs the uidlist gives the new files fresh[0..n) (an index rebuilt, or
 * files a crash left unindexed): uids[k] is the uidlist's UID for the name,
 * or 0 where the file needs a new one -- a name the uidlist does not know, a
 * UID not below uidnext, one the index already has (a copy under another
 * name), or one an earlier file of the list took. Sorted lookups: checking
 * each against the whole index and the list before it was quadratic (an index
 * lost on a 100,000-message folder: minutes).
 */
static uint32_t *fresh_uids(struct dent **fresh, size_t n, const struct uident *ul, size_t nul,
                            const struct ient *ix, size_t ni, uint32_t uidnext)
{
	uint32_t *uids = xcalloc(n, sizeof(*uids));
	if (nul == 0)
		return uids;
	uint32_t *have = xmalloc((ni + 1) * sizeof(*have));
	for (size_t q = 0; q < ni; q++)
		have[q] = ix[q].uid;
	if (ni > 1)
		qsort(have, ni, sizeof(*have), u32_cmp);
	uint64_t *taken = xmalloc(n * sizeof(*taken));
	size_t nt = 0;
	for (size_t k = 0; k < n; k++) {
		struct uident key = {.base = fresh[k]->base};
		const struct uident *hit = bsearch(&key, ul, nul, sizeof(*ul), uident_cmp);
		if (hit == NULL || hit->uid >= uidnext || hit->uid == 0 ||
		    (ni > 0 && bsearch(&hit->uid, have, ni, sizeof(*have), u32_cmp) != NULL))
			continue;
		uids[k] = hit->uid;
		taken[nt++] = (uint64_t)hit->uid << 32 | k;
	}
	if (nt > 1)
		qsort(taken, nt, sizeof(*taken), u64_cmp);
	for (size_t q = 1; q < nt; q++)
		if (taken[q] >> 32 == taken[q - 1] >> 32)
			uids[(uint32_t)taken[q]] = 0; /* the earlier file keeps it */
	free(taken);
	free(have);
	return uids;
}

/*
 * Bring the index of folder `name` (directory `path`) up to date with its
 * files. *row_r gets the folder row after it.
 */
/* Write a folder's uidlist from its index rows (header + live messages), atomically. */
static int uidlist_from_index(sqlite3 *db, const char *path, const struct frow *r, size_t *len_r)
{
	sqlite3_stmt *s = prep(db,
	                       "SELECT uid, basename FROM messages WHERE folder_id = ?1 "
	                       "ORDER BY uid",
	                       NULL);
	if (s == NULL) {
		errno = EIO;
		return -1;
	}
	sqlite3_bind_int64(s, 1, r->id);
	size_t cap = 64, len = 0;
	char *buf = xmalloc(cap);
	len += (size_t)sprintf(buf, "V1 %u %u\n", r->uidvalidity, r->uidnext);
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *b = (const char *)sqlite3_column_text(s, 1);
		buf = xgrow(buf, &cap, len + strlen(b) + 16, 1);
		len +=
		    (size_t)sprintf(buf + len, "%u %s\n", (uint32_t)sqlite3_column_int64(s, 0), b);
	}
	unprep(s);
	int ret = write_atomic(path, UIDLIST_NAME, buf, len);
	free(buf);
	*len_r = len;
	return ret;
}

static int folder_sync_ex(struct mbox_account *a, const char *name, const char *path, bool readonly,
                          bool reindex, struct frow *row_r, char **error_r)
{
	sqlite3 *db = conn_db(a->st, a->id, error_r);
	if (db == NULL)
		return -1;
	index_checkpoint_defer = false;
	char *newdir = xasprintf("%s/new", path), *curdir = xasprintf("%s/cur", path);
	struct stat sn, sc;
	int ret = -1;
	struct dent *d = NULL;
	size_t nd = 0, dcap = 0;
	struct ient *ix = NULL;
	size_t ni = 0, icap = 0;
	struct uident *ul = NULL;
	size_t nul = 0;
	struct dent **fresh = NULL;
	size_t freshcap = 0;
	size_t nfresh = 0;
	char *ulbuf = NULL;
	int64_t usage_delta = 0;
	bool changed = false;
	sqlite3_stmt *s = NULL;
	struct folder_lock *flock = NULL;
	int64_t cache_kib = 0; /* the cache size to go back to, if a bulk insert grew it */

	if (stat(newdir, &sn) < 0 || stat(curdir, &sc) < 0) {
		fail(error_r, errno == ENOENT ? ENOENT : EIO, "folder %s: %s", name,
		     errno == ENOENT ? "does not exist" : strerror(errno));
		goto out;
	}
	int f = frow_get(db, a->id, name, row_r, error_r);
	if (f < 0)
		goto out;
	if (f == 1 && !reindex && mtime_vouches(row_r->new_mtime, ts_ns(&sn.st_mtim)) &&
	    mtime_vouches(row_r->cur_mtime, ts_ns(&sc.st_mtim))) {
		ret = 0; /* nothing changed: two stat() calls */
		goto out;
	}
	flock = folder_lock(path);
	if (flock == NULL) {
		fail(error_r, EWOULDBLOCK, "folder %s: busy", name);
		goto out;
	}
	if (exec(db, "BEGIN IMMEDIATE", error_r) < 0)
		goto out;
	f = frow_get(db, a->id, name, row_r, error_r);
	if (f < 0)
		goto out;
	/* another thread's change or scan, which we waited for, may have brought the
	   index in step */
	if (f == 1 && !reindex && stat(newdir, &sn) == 0 && stat(curdir, &sc) == 0 &&
	    mtime_vouches(row_r->new_mtime, ts_ns(&sn.st_mtim)) &&
	    mtime_vouches(row_r->cur_mtime, ts_ns(&sc.st_mtim))) {
		rollback(db);
		ret = 0;
		goto out;
	}
	bool rebuild = f == 0;
	if (rebuild && frow_create(db, a->id, name, path, row_r, error_r) < 0)
		goto out;
	if (!rebuild && !reindex) {
		/* the uidlist deleted behind our back: the index still knows the UIDs */
		char *ulf = xasprintf("%s/" UIDLIST_NAME, path);
		bool have_ul = access(ulf, F_OK) == 0;
		free(ulf);
		size_t ullen;
		if (!have_ul) {
			if (uidlist_from_index(db, path, row_r, &ullen) < 0) {
				fail(error_r, EIO, "cannot write the uid list: %s",
				     strerror(errno));
				goto out;
			}
			row_r->uidlist_off = (int64_t)ullen;
			log_warn("event=uidlist_rewritten folder=%s reason=missing", path);
		}
	}
	if (!rebuild && reindex) {
		/*
		 * postern reindex: the rows go and come back from the files and the
		 * uidlist in this one transaction (same folder id, UIDs, UIDVALIDITY;
		 * MODSEQs go on rising, so CONDSTORE clients see every message as changed)
		 */
		char *ulf = xasprintf("%s/" UIDLIST_NAME, path);
		bool have_ul = access(ulf, F_OK) == 0;
		free(ulf);
		size_t ullen;
		if (!have_ul && uidlist_from_index(db, path, row_r, &ullen) < 0) {
			/* the uidlist was lost: the index still knows the UIDs */
			fail(error_r, EIO, "cannot write the uid list: %s", strerror(errno));
			goto out;
		}
		char sql[128];
		snprintf(sql, sizeof(sql), "DELETE FROM messages WHERE folder_id = %lld",
		         (long long)row_r->id);
		if (exec(db, sql, error_r) < 0)
			goto out;
		row_r->uidlist_off = 0;
		rebuild = true;
		/* a uidlist restored from elsewhere brings its own UIDVALIDITY and UIDs */
		char *ulp = xasprintf("%s/" UIDLIST_NAME, path);
		uint32_t v = 0, next = 1;
		struct uident *e;
		size_t ne;
		int64_t sz;
		if (uidlist_read(ulp, 0, &v, &next, &e, &ne, &sz) == 0 && v != 0 &&
		    v != row_r->uidvalidity) {
			snprintf(sql, sizeof(sql), "DELETE FROM expunged WHERE folder_id = %lld",
			         (long long)row_r->id);
			row_r->uidvalidity = v;
			row_r->uidnext = next;
			row_r->first_recent = next;
			sqlite3_stmt *u =
			    prep(db, "UPDATE folders SET uidvalidity = ?2 WHERE id = ?1", error_r);
			int rc = SQLITE_ERROR;
			if (u != NULL) {
				sqlite3_bind_int64(u, 1, row_r->id);
				sqlite3_bind_int64(u, 2, v);
				rc = sqlite3_step(u);
				unprep(u);
			}
			if (rc != SQLITE_DONE || exec(db, sql, error_r) < 0) {
				uidents_free(e, ne);
				free(ulp);
				if (rc != SQLITE_DONE)
					fail_db(error_r, db, "reindex");
				goto out;
			}
		}
		uidents_free(e, ne);
		free(ulp);
	}
	struct frow r = *row_r;

	/* the directories, each stat'd before it is read */
	size_t nmoved = 0;
	char **moved = readonly ? NULL : move_new(path, &nmoved);
	if (stat(newdir, &sn) < 0 || read_dir(newdir, true, &d, &nd, &dcap) < 0 ||
	    stat(curdir, &sc) < 0 || read_dir(curdir, false, &d, &nd, &dcap) < 0) {
		fail(error_r, EIO, "folder %s: cannot read: %s", name, strerror(errno));
		strv_free_n(moved, nmoved);
		goto out;
	}
	for (size_t k = 0; k < nd && nmoved > 0; k++)
		if (!d[k].in_new &&
		    bsearch(&d[k].file, moved, nmoved, sizeof(*moved), str_ptr_cmp) != NULL)
			d[k].delivered = true;
	strv_free_n(moved, nmoved);
	if (nd > 1)
		qsort(d, nd, sizeof(*d), dent_cmp);

	s = prep(db,
	         "SELECT uid, basename, filename, in_new, phys_size FROM messages "
	         "WHERE folder_id = ?1",
	         error_r);
	if (s == NULL)
		goto out;
	sqlite3_bind_int64(s, 1, r.id);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		ix = xgrow(ix, &icap, ni + 1, sizeof(*ix));
		ix[ni].uid = (uint32_t)sqlite3_column_int64(s, 0);
		ix[ni].base = col_dup(s, 1);
		ix[ni].file = col_dup(s, 2);
		ix[ni].in_new = sqlite3_column_int(s, 3) != 0;
		ix[ni].phys = (uint64_t)sqlite3_column_int64(s, 4);
		ni++;
	}
	unprep(s);
	s = NULL;
	if (rc != SQLITE_DONE) {
		fail_db(error_r, db, "message list");
		goto out;
	}
	if (ni > 1)
		qsort(ix, ni, sizeof(*ix), ient_cmp);

	uint64_t modseq = r.hms + 1;
	sqlite3_stmt *upd = prep(db,
	                         "UPDATE messages SET filename = ?3, in_new = ?4, flags = ?5, "
	                         "keywords = ?6, modseq = ?7 WHERE folder_id = ?1 AND uid = ?2",
	                         error_r);
	sqlite3_stmt *del =
	    prep(db, "DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2", error_r);
	sqlite3_stmt *exp = prep(db,
	                         "INSERT OR REPLACE INTO expunged (folder_id, uid, modseq) "
	                         "VALUES (?1, ?2, ?3)",
	                         error_r);
	bool dberr = upd == NULL || del == NULL || exp == NULL;
	size_t i = 0, j = 0;
	while (!dberr && (i < nd || j < ni)) {
		int c = i == nd ? 1 : j == ni ? -1 : strcmp(d[i].base, ix[j].base);
		if (c == 0 && i + 1 < nd && strcmp(d[i + 1].base, d[i].base) == 0) {
			i++; /* the same message twice (new/ and cur/ in a race): take the later */
			continue;
		}
		if (c < 0) {
			fresh = xgrow(fresh, &freshcap, nfresh + 1, sizeof(*fresh));
			fresh[nfresh++] = &d[i++];
		} else if (c > 0) {
			/* gone */
			sqlite3_reset(del);
			sqlite3_bind_int64(del, 1, r.id);
			sqlite3_bind_int64(del, 2, ix[j].uid);
			sqlite3_reset(exp);
			sqlite3_bind_int64(exp, 1, r.id);
			sqlite3_bind_int64(exp, 2, ix[j].uid);
			sqlite3_bind_int64(exp, 3, (int64_t)modseq);
			if (sqlite3_step(del) != SQLITE_DONE || sqlite3_step(exp) != SQLITE_DONE)
				dberr = true;
			usage_delta -= (int64_t)ix[j].phys;
			changed = true;
			j++;
		} else {
			if (strcmp(d[i].file, ix[j].file) != 0 || d[i].in_new != ix[j].in_new) {
				uint32_t fl, kw;
				parse_flags(d[i].file, &fl, &kw);
				sqlite3_reset(upd);
				sqlite3_bind_int64(upd, 1, r.id);
				sqlite3_bind_int64(upd, 2, ix[j].uid);
				sqlite3_bind_text(upd, 3, d[i].file, -1, SQLITE_STATIC);
				sqlite3_bind_int(upd, 4, d[i].in_new);
				sqlite3_bind_int64(upd, 5, fl);
				sqlite3_bind_int64(upd, 6, kw);
				sqlite3_bind_int64(upd, 7, (int64_t)modseq);
				if (sqlite3_step(upd) != SQLITE_DONE)
					dberr = true;
				changed = true;
			}
			i++;
			j++;
		}
	}
	unprep(upd);
	unprep(del);
	unprep(exp);
	if (dberr) {
		fail_db(error_r, db, "sync");
		goto out;
	}

	if (nfresh > 0) {
		/* UIDs: the uidlist's for names it knows (index rebuilt), else new ones */
		char *ulpath = xasprintf("%s/" UIDLIST_NAME, path);
		uint32_t v, next = r.uidnext;
		int64_t ulsize = 0;
		if (uidlist_read(ulpath, r.uidlist_off, &v, &next, &ul, &nul, &ulsize) < 0 &&
		    errno != ENOENT) {
			fail(error_r, EIO, "cannot read %s: %s", ulpath, strerror(errno));
			free(ulpath);
			goto out;
		}
		if (next > r.uidnext)
			r.uidnext = next;
		/* new UIDs in delivery order: by the time that starts the name, then by name
		   (plain byte order: names start with fixed-width seconds and our queue ids
		   are fixed-width and sortable; strverscmp would read "80" > "9" inside
		   them), which is the order of d[], so fresh[] (taken from d[] in order) is
		   sorted already */
		uint32_t hdr_next = r.uidnext;
		uint32_t *uids = fresh_uids(fresh, nfresh, ul, nul, ix, ni, r.uidnext);
		size_t ulcap = 0, ullen = 0;
		for (size_t k = 0; k < nfresh; k++) {
			if (uids[k] != 0)
				continue;
			uids[k] = r.uidnext++;
			size_t blen = strlen(fresh[k]->base);
			ulbuf = xgrow(ulbuf, &ulcap, ullen + blen + 13, 1);
			ullen += fmt_u32(ulbuf + ullen, uids[k]);
			ulbuf[ullen++] = ' ';
			memcpy(ulbuf + ullen, fresh[k]->base, blen);
			ullen += blen;
			ulbuf[ullen++] = '\n';
		}
		if (ullen > 0 && uidlist_append(ulpath, r.uidvalidity, hdr_next, ulbuf, ullen,
		                                &ulsize, NULL) < 0) {
			fail(error_r, errno == ENOSPC ? ENOSPC : EIO, "cannot write %s: %s", ulpath,
			     strerror(errno));
			free(ulpath);
			free(uids);
			goto out;
		}
		free(ulpath);
		r.uidlist_off = ulsize;
		s = prep(db, INSERT_MSG, error_r);
		sqlite3_stmt *sc2 = s != NULL ? prep(db, INSERT_CACHE, error_r) : NULL;
		if (sc2 == NULL) {
			free(uids);
			goto out;
		}
		/* many new files at once (a Maildir copied in): their cache rows are made when
		   they are first asked for, so the first SELECT does not parse them all */
		bool lazy = nfresh > LAZY_SCAN;
		/* the transaction's pages stay in memory until COMMIT: with the default
		   cache (2 MB) SQLite spilled them into the WAL and read them back, 24,000
		   pwrite()s and pread()s for 100,000 messages; given back after the sync */
		if (lazy && cache_kib == 0)
			cache_kib = cache_grow(db, nfresh);
		/* files looked up in their directory, not each by its whole path */
		int dfd_new = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int dfd_cur = open(curdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		/* a bulk insert goes BULK_ROWS rows a statement (bulk_insert()) */
		sqlite3_stmt *sb = lazy ? prep(db, bulk_insert_sql(), error_r) : NULL;
		size_t nbatched = nfresh - nfresh % BULK_ROWS;
		struct msgrow batch[BULK_ROWS];
		if (lazy && sb == NULL) {
			free(uids);
			unprep(sc2);
			goto out;
		}
		for (size_t k = 0; k < nfresh && !dberr; k++) {
			int dfd = fresh[k]->in_new ? dfd_new : dfd_cur;
			char *file = dfd >= 0
			                 ? NULL
			                 : xasprintf("%s/%s", fresh[k]->in_new ? newdir : curdir,
			                             fresh[k]->file);
			if (dfd < 0)
				dfd = AT_FDCWD;
			const char *fname = file != NULL ? file : fresh[k]->file;
			struct mbox_cache c = {0};
			uint64_t vsize, phys;
			int64_t mtime, ctime;
			if (lazy)
				file_sizes(dfd, fname, fresh[k]->file, &vsize, &phys, &mtime,
				           &ctime);
			else
				cache_file(dfd, fname, &c, &vsize, &phys, &mtime, &ctime);
			free(file);
			uint32_t fl, kw;
			parse_flags(fresh[k]->file, &fl, &kw);
			struct msgrow row = {.folder_id = r.id,
			                     .uid = uids[k],
			                     .base = fresh[k]->base,
			                     .file = fresh[k]->file,
			                     .in_new = fresh[k]->in_new,
			                     .flags = fl,
			                     .keywords = kw,
			                     .modseq = modseq,
			                     .size = vsize,
			                     .phys = phys,
			                     .internaldate = mtime,
			                     .savedate = ctime};
			/* rows of a batch go into the batch statement, the rest one by one */
			if (sb != NULL && k < nbatched) {
				batch[k % BULK_ROWS] = row;
				if (k % BULK_ROWS == BULK_ROWS - 1 &&
				    bulk_insert(db, sb, s, batch, BULK_ROWS) < 0)
					dberr = true;
			} else if (bulk_insert(db, NULL, s, &row, 1) < 0) {
				dberr = true;
			}
			if (!lazy && !dberr) {
				sqlite3_reset(sc2);
				sqlite3_bind_int64(sc2, 1, r.id);
				sqlite3_bind_int64(sc2, 2, uids[k]);
				bind_cache(sc2, 3, &c);
				if (sqlite3_step(sc2) != SQLITE_DONE)
					dberr = true;
			}
			mbox_cache_clear(&c);
			/* delivery counted what it put into new/; a rebuild counts nothing */
			if (!rebuild && !fresh[k]->in_new && !fresh[k]->delivered)
				usage_delta += (int64_t)phys;
		}
		if (dfd_new >= 0)
			close(dfd_new);
		if (dfd_cur >= 0)
			close(dfd_cur);
		free(uids);
		unprep(sb);
		unprep(sc2);
		unprep(s);
		s = NULL;
		if (dberr) {
			fail_db(error_r, db, "message insert");
			goto out;
		}
		changed = true;
	}
	if (changed)
		r.hms = modseq;
	r.new_mtime = mtime_to_store(ts_ns(&sn.st_mtim));
	r.cur_mtime = mtime_to_store(ts_ns(&sc.st_mtim));
	/* the checkpoint of a bulk insert (copying ~20 MB of WAL into the index file for
	   100,000 messages, a tenth of a first SELECT) is left to another command's
	   write: the SELECT that found the files (its \Recent update included, until
	   box_refresh() ends) answers without waiting for it */
	index_checkpoint_defer = nfresh > LAZY_SCAN;
	if (update_folder_row(db, &r, error_r) < 0 || exec(db, "COMMIT", error_r) < 0)
		goto out;
	*row_r = r;
	ret = 0;
out:
	if (ret < 0)
		rollback(db);
	if (cache_kib != 0)
		cache_shrink(db, cache_kib);
	folder_unlock(flock);
	unprep(s);
	free(newdir);
	free(curdir);
	dents_free(d, nd);
	ients_free(ix, ni);
	uidents_free(ul, nul);
	free(fresh);
	free(ulbuf);
	if (ret == 0) {
		usage_add(a, usage_delta);
		if (changed)
			mbox_notify(a->maildir, name);
	}
	return ret;
}

static int folder_sync(struct mbox_account *a, const char *name, const char *path, bool readonly,
                       struct frow *row_r, char **error_r)
{
	return folder_sync_ex(a, name, path, readonly, false, row_r, error_r);
}

/* ---- folders ---- */

static int cmp_folder(const void *a, const void *b)
{
	const struct mbox_folder *x = a, *y = b;
	bool xi = strcmp(x->name, "INBOX") == 0, yi = strcmp(y->name, "INBOX") == 0;
	if (xi != yi)
		return xi ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Canonical names of the existing folders, INBOX first. */
static char **folder_names(const struct mbox_account *a, size_t *n_r)
{
	char **v = xcalloc(1, sizeof(*v));
	size_t n = 0, cap = 1;
	v[n++] = xstrdup("INBOX");
	DIR *d = opendir(a->maildir);
	if (d != NULL) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			char *name = dir_to_name(de->d_name);
			if (name == NULL)
				continue;
			char *p = xasprintf("%s/%s/cur", a->maildir, de->d_name);
			struct stat sb;
			bool ok = stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
			free(p);
			if (!ok || strcmp(name, "INBOX") == 0) {
				free(name);
				continue;
			}
			v = xgrow(v, &cap, n + 1, sizeof(*v));
			v[n++] = name;
		}
		closedir(d);
	}
	*n_r = n;
	return v;
}

static struct mbox_folder *folder_find(struct mbox_folder *list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i].name, name) == 0)
			return &list[i];
	return NULL;
}

int mbox_folders(struct mbox_account *acct, struct mbox_folder **list_r, size_t *n_r,
                 char **error_r)
{
	size_t nn, ns;
	char **names = folder_names(acct, &nn);
	char **subs = subs_read(acct, &ns);
	char *special = special_file_read(acct);
	struct mbox_folder *list = NULL;
	size_t n = 0, cap = 0;
	for (size_t i = 0; i < nn; i++) {
		list = xgrow(list, &cap, n + 1, sizeof(*list));
		memset(&list[n], 0, sizeof(list[n]));
		list[n].name = names[i];
		list[n].special =
		    strcmp(names[i], "INBOX") == 0 ? 0 : folder_special(acct, names[i], special);
		n++;
	}
	free(names);
	/* parents that do not exist themselves */
	for (size_t i = 0; i < n; i++) {
		char *parent = xstrdup(list[i].name);
		char *slash;
		while ((slash = strrchr(parent, '/')) != NULL) {
			*slash = '\0';
			if (folder_find(list, n, parent) == NULL) {
				list = xgrow(list, &cap, n + 1, sizeof(*list));
				memset(&list[n], 0, sizeof(list[n]));
				list[n].name = xstrdup(parent);
				list[n].nonexistent = true;
				n++;
			}
		}
		free(parent);
	}
	for (size_t i = 0; i < ns; i++) {
		struct mbox_folder *f = folder_find(list, n, subs[i]);
		if (f == NULL) {
			list = xgrow(list, &cap, n + 1, sizeof(*list));
			memset(&list[n], 0, sizeof(list[n]));
			list[n].name = xstrdup(subs[i]);
			list[n].nonexistent = true;
			f = &list[n++];
		}
		f->subscribed = true;
	}
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(list[i].name);
		for (size_t k = 0; k < n && !list[i].has_children; k++)
			/* RFC 3348: an existing folder below (a subscription alone is not a child)
			 */
			if (!list[k].nonexistent && strncmp(list[k].name, list[i].name, l) == 0 &&
			    list[k].name[l] == '/')
				list[i].has_children = true;
	}
	qsort(list, n, sizeof(*list), cmp_folder);
	strv_free_n(subs, ns);
	free(special);
	*list_r = list;
	*n_r = n;
	(void)error_r;
	return 0;
}

void mbox_folders_free(struct mbox_folder **list, size_t n)
{
	if (*list == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free((*list)[i].name);
	xfree(list);
}

static bool folder_exists(const struct mbox_account *a, const char *canon)
{
	char *p = folder_path(a, canon);
	char *cur = xasprintf("%s/cur", p);
	struct stat sb;
	bool ok = stat(cur, &sb) == 0 && S_ISDIR(sb.st_mode);
	free(cur);
	free(p);
	return ok;
}

int mbox_folder_create(struct mbox_account *acct, const char *name, unsigned special,
                       char **error_r)
{
	char *canon = name_canon(name);
	if (canon == NULL)
		return fail(error_r, EINVAL, "invalid folder name");
	int ret = -1;
	if (strcmp(canon, "INBOX") == 0 || folder_exists(acct, canon)) {
		fail(error_r, EEXIST, "folder %s exists", canon);
		goto out;
	}
	/* parents first (RFC 9051 6.3.4: "create the superior hierarchical names") */
	for (char *s = strchr(canon, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (strcmp(canon, "INBOX") != 0 && !folder_exists(acct, canon)) {
			char *pp = folder_path(acct, canon);
			int r = make_folder_dirs(pp, true);
			free(pp);
			if (r < 0) {
				*s = '/';
				fail(error_r, errno == ENOSPC ? ENOSPC : EIO, "cannot create: %s",
				     strerror(errno));
				goto out;
			}
		}
		*s = '/';
	}
	char *p = folder_path(acct, canon);
	int r = make_folder_dirs(p, true);
	free(p);
	if (r < 0) {
		fail(error_r, errno == ENOSPC ? ENOSPC : EIO, "cannot create: %s", strerror(errno));
		goto out;
	}
	if (special != 0 && special_file_set(acct, canon, special, NULL) < 0) {
		fail(error_r, EIO, "cannot record the special use: %s", strerror(errno));
		goto out;
	}
	ret = 0;
out:
	free(canon);
	return ret;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	if (flag == FTW_DP || flag == FTW_D)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Drop the index rows of a folder; *phys_r = bytes its messages took. */
static int forget_folder(sqlite3 *db, int64_t account_id, const char *canon, int64_t *phys_r,
                         char **error_r)
{
	*phys_r = 0;
	struct frow r;
	int f = frow_get(db, account_id, canon, &r, error_r);
	if (f <= 0)
		return f;
	sqlite3_stmt *s = prep(db,
	                       "SELECT coalesce(sum(phys_size), 0) FROM messages "
	                       "WHERE folder_id = ?1",
	                       error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, r.id);
	if (sqlite3_step(s) == SQLITE_ROW)
		*phys_r = sqlite3_column_int64(s, 0);
	unprep(s);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "DELETE FROM messages WHERE folder_id = %lld; DELETE FROM expunged WHERE "
	         "folder_id = %lld; DELETE FROM folders WHERE id = %lld",
	         (long long)r.id, (long long)r.id, (long long)r.id);
	return exec(db, sql, error_r);
}

int mbox_folder_delete(struct mbox_account *acct, const char *name, char **error_r)
{
	char *canon = name_canon(name);
	if (canon == NULL)
		return fail(error_r, EINVAL, "invalid folder name");
	int ret = -1;
	char *p = NULL;
	sqlite3 *db = NULL;
	if (strcmp(canon, "INBOX") == 0) {
		fail(error_r, EPERM, "INBOX cannot be deleted");
		goto out;
	}
	if (!folder_exists(acct, canon)) {
		fail(error_r, ENOENT, "no folder %s", canon);
		goto out;
	}
	p = folder_path(acct, canon);
	struct frow r;
	/* sync first so that the bytes of every message are known for the quota */
	if (folder_sync(acct, canon, p, true, &r, error_r) < 0 ||
	    (db = conn_db(acct->st, acct->id, error_r)) == NULL ||
	    exec(db, "BEGIN IMMEDIATE", error_r) < 0)
		goto out;
	int64_t phys;
	if (forget_folder(db, acct->id, canon, &phys, error_r) < 0)
		goto out;
	if (nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0) {
		fail(error_r, EIO, "cannot remove %s: %s", p, strerror(errno));
		goto out;
	}
	if (exec(db, "COMMIT", error_r) < 0)
		goto out;
	usage_add(acct, -phys);
	special_file_set(acct, canon, 0, NULL);
	mbox_notify(acct->maildir, canon);
	ret = 0;
out:
	if (ret < 0 && db != NULL)
		rollback(db);
	free(p);
	free(canon);
	return ret;
}

int mbox_folder_subscribe(struct mbox_account *acct, const char *name, bool subscribe,
                          char **error_r)
{
	char *canon = name_canon(name);
	if (canon == NULL)
		return fail(error_r, EINVAL, "invalid folder name");
	size_t n;
	char **v = subs_read(acct, &n);
	size_t k = 0;
	bool found = false;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i], canon) == 0) {
			found = true;
			if (!subscribe) {
				free(v[i]);
				continue;
			}
		}
		v[k++] = v[i];
	}
	n = k;
	int r = 0;
	if (subscribe && !found) {
		v = xrealloc(v, (n + 1) * sizeof(*v));
		v[n++] = canon;
		canon = NULL;
	}
	if ((subscribe && !found) || (!subscribe && found))
		r = subs_write(acct, v, n);
	strv_free_n(v, n);
	free(canon);
	if (r < 0)
		return fail(error_r, EIO, "cannot write the subscriptions: %s", strerror(errno));
	return 0;
}

/* ---- folder state ---- */

static int status_query(sqlite3 *db, const struct frow *r, struct mbox_status *st, char **error_r)
{
	memset(st, 0, sizeof(*st));
	sqlite3_stmt *s = prep(db,
	                       "SELECT count(*), coalesce(sum((flags & 1) = 0), 0), "
	                       "coalesce(sum((flags & 8) != 0), 0), coalesce(sum(uid >= ?2), 0), "
	                       "coalesce(sum(size), 0) FROM messages WHERE folder_id = ?1",
	                       error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, r->id);
	sqlite3_bind_int64(s, 2, r->first_recent);
	if (sqlite3_step(s) != SQLITE_ROW) {
		unprep(s);
		return fail_db(error_r, db, "status");
	}
	st->messages = (uint32_t)sqlite3_column_int64(s, 0);
	st->unseen = (uint32_t)sqlite3_column_int64(s, 1);
	st->deleted = (uint32_t)sqlite3_column_int64(s, 2);
	st->recent = (uint32_t)sqlite3_column_int64(s, 3);
	st->size = (uint64_t)sqlite3_column_int64(s, 4);
	unprep(s);
	st->uidvalidity = r->uidvalidity;
	st->uidnext = r->uidnext;
	st->highestmodseq = r->hms;
	return 0;
}

int mbox_folder_status(struct mbox_account *acct, const char *name, struct mbox_status *st_r,
                       char **error_r)
{
	char *canon = name_canon(name);
	if (canon == NULL)
		return fail(error_r, EINVAL, "invalid folder name");
	char *p = folder_path(acct, canon);
	struct frow r;
	int ret = -1;
	sqlite3 *db;
	if (folder_sync(acct, canon, p, false, &r, error_r) == 0 &&
	    (db = conn_db(acct->st, acct->id, error_r)) != NULL)
		ret = status_query(db, &r, st_r, error_r);
	free(p);
	free(canon);
	return ret;
}

static void box_keywords_reload(struct mbox *box)
{
	char *kp = xasprintf("%s/" KEYWORDS_NAME, box->path);
	struct stat sb;
	struct timespec m = {0};
	if (stat(kp, &sb) == 0)
		m = sb.st_mtim;
	free(kp);
	if (box->keywords != NULL && ts_ns(&m) == ts_ns(&box->kw_mtime))
		return;
	kw_free(box->keywords, box->nkeywords);
	box->keywords = kw_load(box->path, &box->nkeywords, &box->kw_mtime);
}

/* \Recent: this box takes the messages no session has taken yet. */
static int take_recent(struct mbox *box, sqlite3 *db, struct frow *r, char **error_r)
{
	if (box->readonly || r->first_recent >= r->uidnext)
		return 0;
	if (exec(db, "BEGIN IMMEDIATE", error_r) < 0)
		return -1;
	struct frow cur;
	if (frow_get(db, box->acct->id, box->name, &cur, error_r) <= 0) {
		rollback(db);
		return fail(error_r, ENOENT, "folder %s vanished", box->name);
	}
	if (cur.first_recent < cur.uidnext) {
		sqlite3_stmt *s =
		    prep(db, "UPDATE folders SET first_recent_uid = ?2 WHERE id = ?1", error_r);
		if (s == NULL) {
			rollback(db);
			return -1;
		}
		sqlite3_bind_int64(s, 1, cur.id);
		sqlite3_bind_int64(s, 2, cur.uidnext);
		int rc = sqlite3_step(s);
		unprep(s);
		if (rc != SQLITE_DONE) {
			rollback(db);
			return fail_db(error_r, db, "recent");
		}
		box->recent =
		    xgrow(box->recent, &box->recent_cap, box->nrecent + 2, sizeof(*box->recent));
		box->recent[box->nrecent++] = cur.first_recent;
		box->recent[box->nrecent++] = cur.uidnext;
		cur.first_recent = cur.uidnext;
	}
	if (exec(db, "COMMIT", error_r) < 0)
		return -1;
	*r = cur;
	return 0;
}

static bool box_recent(const struct mbox *box, uint32_t uid)
{
	for (size_t i = 0; i + 1 < box->nrecent; i += 2)
		if (uid >= box->recent[i] && uid < box->recent[i + 1])
			return true;
	return false;
}

/* The folder row after a sync, into the box's status. */
static void box_take_row(struct mbox *box, const struct frow *r, size_t nrecent_before)
{
	/* every change raises HIGHESTMODSEQ: same value and UIDNEXT, same state (no COUNT(*)
	   scan) */
	if (box->synced && r->hms == box->status.highestmodseq &&
	    r->uidnext == box->status.uidnext && nrecent_before == box->nrecent)
		return;
	box->status.uidvalidity = r->uidvalidity;
	box->status.uidnext = r->uidnext;
	box->status.highestmodseq = r->hms;
	box->counts_first_recent = r->first_recent;
	box->counts_stale = true;
	box->synced = true;
}

static int box_refresh_sync(struct mbox *box, char **error_r)
{
	struct frow r;
	if (folder_sync(box->acct, box->name, box->path, box->readonly, &r, error_r) < 0)
		return -1;
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	if (box->folder_id != 0 && r.id != box->folder_id)
		return fail(error_r, ENOENT, "folder %s was deleted", box->name);
	box->folder_id = r.id;
	size_t nrecent = box->nrecent;
	if (take_recent(box, db, &r, error_r) < 0)
		return -1;
	box_keywords_reload(box);
	box_take_row(box, &r, nrecent);
	return 0;
}

static int box_refresh(struct mbox *box, char **error_r)
{
	int r = box_refresh_sync(box, error_r);
	index_checkpoint_defer = false; /* a bulk scan's (folder_sync_ex()) ends here */
	return r;
}

/* The counts of the status, from the index (a scan of the folder's rows). */
static int box_counts(struct mbox *box, char **error_r)
{
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	struct frow r = {.id = box->folder_id,
	                 .uidvalidity = box->status.uidvalidity,
	                 .uidnext = box->status.uidnext,
	                 .first_recent = box->counts_first_recent,
	                 .hms = box->status.highestmodseq};
	struct mbox_status st;
	if (status_query(db, &r, &st, error_r) < 0)
		return -1;
	/* \Recent as this session sees it */
	st.recent = 0;
	for (size_t i = 0; i + 1 < box->nrecent; i += 2) {
		sqlite3_stmt *s = prep(db,
		                       "SELECT count(*) FROM messages WHERE folder_id = ?1 AND "
		                       "uid >= ?2 AND uid < ?3",
		                       error_r);
		if (s == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, r.id);
		sqlite3_bind_int64(s, 2, box->recent[i]);
		sqlite3_bind_int64(s, 3, box->recent[i + 1]);
		if (sqlite3_step(s) == SQLITE_ROW)
			st.recent += (uint32_t)sqlite3_column_int64(s, 0);
		unprep(s);
	}
	if (box->readonly)
		st.recent = 0;
	box->status = st;
	box->counts_stale = false;
	return 0;
}

int mbox_open(struct mbox_account *acct, const char *name, bool readonly, struct mbox **box_r,
              char **error_r)
{
	*box_r = NULL;
	char *canon = name_canon(name);
	if (canon == NULL)
		return fail(error_r, EINVAL, "invalid folder name");
	struct mbox *box = xcalloc(1, sizeof(*box));
	box->acct = acct;
	box->name = canon;
	box->path = folder_path(acct, canon);
	box->readonly = readonly;
	if (box_refresh(box, error_r) < 0) {
		mbox_close(&box);
		return -1;
	}
	*box_r = box;
	return 0;
}

void mbox_close(struct mbox **bp)
{
	struct mbox *box = *bp;
	if (box == NULL)
		return;
	kw_free(box->keywords, box->nkeywords);
	free(box->recent);
	free(box->name);
	free(box->path);
	free(box);
	*bp = NULL;
}

void mbox_thread_nowait(bool on)
{
	thread_nowait = on;
}

bool mbox_sync_probe(struct mbox *box)
{
	if (!box->synced || box->folder_id == 0)
		return false;
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, NULL);
	if (db == NULL)
		return false;
	char *newdir = xasprintf("%s/new", box->path), *curdir = xasprintf("%s/cur", box->path);
	struct stat sn, sc;
	struct frow r;
	bool quiet = stat(newdir, &sn) == 0 && stat(curdir, &sc) == 0 &&
	             frow_get(db, box->acct->id, box->name, &r, NULL) == 1 &&
	             r.id == box->folder_id && mtime_vouches(r.new_mtime, ts_ns(&sn.st_mtim)) &&
	             mtime_vouches(r.cur_mtime, ts_ns(&sc.st_mtim)) &&
	             (box->readonly || r.first_recent >= r.uidnext);
	free(newdir);
	free(curdir);
	if (quiet) {
		/* what mbox_sync() would have done */
		box_keywords_reload(box);
		box_take_row(box, &r, box->nrecent);
	}
	return quiet;
}

int mbox_sync(struct mbox *box, char **error_r)
{
	return box_refresh(box, error_r);
}

void mbox_get_status(struct mbox *box, struct mbox_status *st_r)
{
	char *err = NULL;
	if (box->counts_stale && box_counts(box, &err) < 0) {
		/* the identity fields stay right; the counts are those of the last success */
		log_warn("event=mailbox_status_failed folder=%s error=\"%s\"", box->path,
		         err != NULL ? err : "?");
		free(err);
	}
	*st_r = box->status;
}

void mbox_get_ids(const struct mbox *box, uint32_t *uidvalidity_r, uint32_t *uidnext_r,
                  uint64_t *highestmodseq_r)
{
	*uidvalidity_r = box->status.uidvalidity;
	*uidnext_r = box->status.uidnext;
	*highestmodseq_r = box->status.highestmodseq;
}

/* One row of messages (uid, flags, keywords, modseq, size[, internaldate, savedate]) into *m. */
static void msg_from_row(const struct mbox *box, sqlite3_stmt *s, struct mbox_msg *m, bool dates)
{
	m->uid = (uint32_t)sqlite3_column_int64(s, 0);
	m->flags = (uint32_t)sqlite3_column_int64(s, 1);
	m->keywords = (uint32_t)sqlite3_column_int64(s, 2);
	m->modseq = (uint64_t)sqlite3_column_int64(s, 3);
	m->size = (uint64_t)sqlite3_column_int64(s, 4);
	if (dates) {
		m->internaldate = sqlite3_column_int64(s, 5);
		m->savedate = sqlite3_column_int64(s, 6);
	}
	if (!box->readonly && box_recent(box, m->uid))
		m->flags |= MBOX_F_RECENT;
}

/* A record whose dates a bulk scan left for later (file_sizes()), as found by a query. */
struct late_date {
	size_t i; /* into the records */
	char *file;
	bool in_new;
};

/*
 * The dates of msgs[late[k].i] that are DATE_UNKNOWN, from stat() of the
 * files (INTERNALDATE the mtime, the save date the ctime, as a scan would
 * have taken them), then kept in the index in one transaction (best effort;
 * not on a thread that must not wait). A file not found (renamed or removed
 * behind our back) gives now for this time, and is not kept.
 */
static void resolve_dates(struct mbox *box, sqlite3 *db, struct mbox_msg *msgs,
                          struct late_date *late, size_t nlate)
{
	int dfd[2] = {-1, -1};
	bool *keep = xcalloc(nlate + 1, sizeof(*keep));
	size_t nkeep = 0;
	time_t now = time(NULL);
	for (size_t k = 0; k < nlate; k++) {
		int w = late[k].in_new ? 1 : 0;
		if (dfd[w] < 0) {
			char *d = xasprintf("%s/%s", box->path, w ? "new" : "cur");
			dfd[w] = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			free(d);
		}
		struct mbox_msg *m = &msgs[late[k].i];
		struct stat sb;
		if (dfd[w] < 0 || fstatat(dfd[w], late[k].file, &sb, 0) < 0) {
			if (m->internaldate == DATE_UNKNOWN)
				m->internaldate = now;
			if (m->savedate == DATE_UNKNOWN)
				m->savedate = now;
			continue;
		}
		if (m->internaldate == DATE_UNKNOWN)
			m->internaldate = sb.st_mtim.tv_sec;
		if (m->savedate == DATE_UNKNOWN)
			m->savedate = sb.st_ctim.tv_sec;
		keep[k] = true;
		nkeep++;
	}
	for (int w = 0; w < 2; w++)
		if (dfd[w] >= 0)
			close(dfd[w]);
	if (nkeep > 0 && !thread_nowait && exec(db, "BEGIN IMMEDIATE", NULL) == 0) {
		/* only what is still unknown: a concurrent resolver or change wins */
		sqlite3_stmt *u =
		    prep(db,
		         "UPDATE messages SET internaldate = CASE internaldate WHEN -1 THEN ?3 "
		         "ELSE internaldate END, savedate = CASE savedate WHEN -1 THEN ?4 ELSE "
		         "savedate END WHERE folder_id = ?1 AND uid = ?2",
		         NULL);
		bool ok = u != NULL;
		for (size_t k = 0; ok && k < nlate; k++) {
			if (!keep[k])
				continue;
			const struct mbox_msg *m = &msgs[late[k].i];
			sqlite3_reset(u);
			sqlite3_bind_int64(u, 1, box->folder_id);
			sqlite3_bind_int64(u, 2, m->uid);
			sqlite3_bind_int64(u, 3, m->internaldate);
			sqlite3_bind_int64(u, 4, m->savedate);
			ok = sqlite3_step(u) == SQLITE_DONE;
		}
		unprep(u);
		if (!ok || exec(db, "COMMIT", NULL) < 0)
			rollback(db);
	}
	free(keep);
}

static void late_dates_free(struct late_date *late, size_t n)
{
	for (size_t k = 0; k < n; k++)
		free(late[k].file);
	free(late);
}

/* A row of mbox_messages_get()'s query into msgs[i]; its file noted if a date is unknown. */
static void take_row(const struct mbox *box, sqlite3_stmt *s, struct mbox_msg *msgs, size_t i,
                     struct late_date **late, size_t *nlate, size_t *cap)
{
	struct mbox_msg *m = &msgs[i];
	msg_from_row(box, s, m, true);
	if (m->internaldate != DATE_UNKNOWN && m->savedate != DATE_UNKNOWN)
		return;
	*late = xgrow(*late, cap, *nlate + 1, sizeof(**late));
	(*late)[*nlate].i = i;
	(*late)[*nlate].file = col_dup(s, 7);
	(*late)[*nlate].in_new = sqlite3_column_int(s, 8) != 0;
	(*nlate)++;
}

static int select_msgs(struct mbox *box, const char *indexed, const char *where, uint64_t since,
                       struct mbox_msg **msgs_r, size_t *n_r, char **error_r)
{
	*msgs_r = NULL;
	*n_r = 0;
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	char *sql = xasprintf("SELECT uid, flags, keywords, modseq, size "
	                      "FROM messages %s WHERE folder_id = ?1 %s ORDER BY uid",
	                      indexed, where);
	sqlite3_stmt *s = prep(db, sql, error_r);
	free(sql);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box->folder_id);
	if (strstr(where, "?2") != NULL)
		sqlite3_bind_int64(s, 2, (int64_t)since);
	struct mbox_msg *v = NULL;
	size_t n = 0, cap = 0;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		v = xgrow(v, &cap, n + 1, sizeof(*v));
		memset(&v[n], 0, sizeof(v[n]));
		msg_from_row(box, s, &v[n++], false);
	}
	unprep(s);
	if (rc != SQLITE_DONE) {
		free(v);
		return fail_db(error_r, db, "messages");
	}
	*msgs_r = v;
	*n_r = n;
	return 0;
}

int mbox_messages(struct mbox *box, struct mbox_msg **msgs_r, size_t *n_r, char **error_r)
{
	return select_msgs(box, "", "", 0, msgs_r, n_r, error_r);
}

int mbox_messages_get(struct mbox *box, const uint32_t *uids, size_t n, struct mbox_msg *msgs_r,
                      char **error_r)
{
	if (n == 0)
		return 0;
	memset(msgs_r, 0, n * sizeof(*msgs_r));
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	/* a dense set (FETCH 1:*, SORT of a whole folder) in one range scan, a sparse
	   one (FETCH 17, a SEARCH hit list) by primary-key lookups */
	uint64_t span = (uint64_t)uids[n - 1] - uids[0] + 1;
	bool range = span <= 4 * (uint64_t)n;
	sqlite3_stmt *s = prep(db,
	                       range ? "SELECT uid, flags, keywords, modseq, size, internaldate, "
	                               "savedate, filename, in_new FROM messages WHERE folder_id = "
	                               "?1 AND uid >= ?2 AND uid <= ?3 ORDER BY uid"
	                             : "SELECT uid, flags, keywords, modseq, size, internaldate, "
	                               "savedate, filename, in_new FROM messages WHERE folder_id = "
	                               "?1 AND uid = ?2",
	                       error_r);
	if (s == NULL)
		return -1;
	int rc = SQLITE_DONE;
	struct late_date *late = NULL;
	size_t nlate = 0, latecap = 0;
	sqlite3_bind_int64(s, 1, box->folder_id);
	if (range) {
		sqlite3_bind_int64(s, 2, uids[0]);
		sqlite3_bind_int64(s, 3, uids[n - 1]);
		size_t i = 0;
		while (i < n && (rc = sqlite3_step(s)) == SQLITE_ROW) {
			uint32_t uid = (uint32_t)sqlite3_column_int64(s, 0);
			while (i < n && uids[i] < uid)
				i++;
			if (i < n && uids[i] == uid)
				take_row(box, s, msgs_r, i++, &late, &nlate, &latecap);
		}
	} else {
		for (size_t i = 0; i < n && (rc == SQLITE_DONE || rc == SQLITE_ROW); i++) {
			sqlite3_reset(s);
			sqlite3_bind_int64(s, 2, uids[i]);
			rc = sqlite3_step(s);
			if (rc == SQLITE_ROW)
				take_row(box, s, msgs_r, i, &late, &nlate, &latecap);
		}
	}
	if (rc == SQLITE_ROW)
		rc = SQLITE_DONE;
	unprep(s);
	if (rc != SQLITE_DONE) {
		late_dates_free(late, nlate);
		return fail_db(error_r, db, "messages");
	}
	if (nlate > 0)
		resolve_dates(box, db, msgs_r, late, nlate);
	late_dates_free(late, nlate);
	return 0;
}

int mbox_changes(struct mbox *box, uint64_t since, struct mbox_msg **changed_r, size_t *nchanged_r,
                 uint32_t **expunged_r, size_t *nexpunged_r, char **error_r)
{
	*expunged_r = NULL;
	*nexpunged_r = 0;
	/* Through the MODSEQ indexes: without them SQLite's planner walks every row of
	   the folder in UID order (no sort needed) to keep the few above `since`; that
	   walk was an eighth of the server's CPU in the IMAP mix, where every command
	   after a change syncs. Since 0 is every message: the UID-ordered scan. */
	if (select_msgs(box, since > 0 ? "INDEXED BY messages_modseq" : "", "AND modseq > ?2",
	                since, changed_r, nchanged_r, error_r) < 0)
		return -1;
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	sqlite3_stmt *s = db != NULL ? prep(db,
	                                    "SELECT uid FROM expunged INDEXED BY expunged_modseq "
	                                    "WHERE folder_id = ?1 AND modseq > ?2 ORDER BY uid",
	                                    error_r)
	                             : NULL;
	if (s == NULL) {
		xfree(changed_r);
		return -1;
	}
	sqlite3_bind_int64(s, 1, box->folder_id);
	sqlite3_bind_int64(s, 2, (int64_t)since);
	uint32_t *v = NULL;
	size_t n = 0, cap = 0;
	while (sqlite3_step(s) == SQLITE_ROW) {
		v = xgrow(v, &cap, n + 1, sizeof(*v));
		v[n++] = (uint32_t)sqlite3_column_int64(s, 0);
	}
	unprep(s);
	*expunged_r = v;
	*nexpunged_r = n;
	return 0;
}

const char *const *mbox_keywords(struct mbox *box, size_t *n_r)
{
	box_keywords_reload(box);
	*n_r = box->nkeywords;
	return (const char *const *)box->keywords;
}

int mbox_keyword_index(struct mbox *box, const char *name, bool create)
{
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, NULL);
	if (db == NULL) {
		errno = EIO;
		return -1;
	}
	int i = kw_index_dir(db, box->path, name, create);
	int saved = errno;
	box_keywords_reload(box);
	errno = saved;
	return i;
}

/* ---- changes ---- */

static bool uid_in(const uint32_t *uids, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (uids[mid] == uid)
			return true;
		if (uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Raise HIGHESTMODSEQ; *cur_mtime_r: the recorded mtime of cur/ (see mtime_carry()). */
static int folder_bump(sqlite3 *db, int64_t folder_id, uint64_t *modseq_r, int64_t *cur_mtime_r,
                       char **error_r)
{
	sqlite3_stmt *s = prep(db,
	                       "UPDATE folders SET highestmodseq = highestmodseq + 1 "
	                       "WHERE id = ?1 RETURNING highestmodseq, cur_mtime",
	                       error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, folder_id);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*modseq_r = (uint64_t)sqlite3_column_int64(s, 0);
		*cur_mtime_r = sqlite3_column_int64(s, 1);
	}
	unprep(s);
	if (rc != SQLITE_ROW)
		return fail(error_r, ENOENT, "folder vanished");
	return 0;
}

/*
 * A read transaction of this thread's connection, for a batch of lookups that
 * should see one snapshot and pay for one start (a statement outside any
 * transaction starts its own, and re-reads its pages whenever another
 * connection wrote meanwhile). Not the index write lock: writers go on.
 */
static bool read_begin(sqlite3 *db)
{
	return sqlite3_get_autocommit(db) &&
	       sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
}

static void read_end(sqlite3 *db, bool began)
{
	if (began && !sqlite3_get_autocommit(db) &&
	    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

/* The second step of a change: the index write lock, and the change's MODSEQ. */
static int change_begin(sqlite3 *db, struct mbox *box, uint64_t *modseq_r, int64_t *cur_rec_r,
                        char **error_r)
{
	if (exec(db, "BEGIN IMMEDIATE", error_r) < 0)
		return -1;
	return folder_bump(db, box->folder_id, modseq_r, cur_rec_r, error_r);
}

/* A STORE's change to one message, made on disk before its row is updated. */
struct flag_change {
	uint32_t uid, flags, keywords;
	uint64_t size;
	char *file; /* the new cur/ file name */
};

/*
 * Two steps, so that the renames do not hold the index write lock (one for
 * the account's every folder), only the folder's: (1) the rows are read and the files
 * renamed to their new flags; (2) one short transaction gives the changes a
 * MODSEQ and updates the rows. Under the folder lock no other change of ours
 * touches these messages in between. A reader that meets a renamed file under
 * its old row name finds it again (mbox_msg_open()); a crash between the steps
 * leaves files whose names carry the new flags, which the next scan of cur/
 * (its mtime changed) puts in the rows -- as if the change had been
 * committed, unanswered.
 */
int mbox_store(struct mbox *box, const uint32_t *uids, size_t n, enum mbox_store_mode mode,
               uint32_t flags, uint32_t keywords, uint64_t unchanged_since,
               struct mbox_msg **changed_r, size_t *nchanged_r, uint32_t **failed_r,
               size_t *nfailed_r, char **error_r)
{
	struct flag_change *fc = NULL;
	struct mbox_msg *ch = NULL;
	uint32_t *fl = NULL;
	size_t nfc = 0, fccap = 0, nfl = 0, flcap = 0;
	flags &= ~(uint32_t)MBOX_F_RECENT;
	if (thread_nowait) /* it changes files before it may wait for the index */
		return fail(error_r, EWOULDBLOCK, "index: store needs a thread that may wait");
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	struct folder_lock *flock = folder_lock(box->path);
	if (flock == NULL)
		return fail(error_r, EWOULDBLOCK, "folder %s: busy", box->name);
	sqlite3_stmt *sel = NULL, *upd = NULL;
	int ret = -1, rename_errno = 0;
	int64_t cur_pre = dir_mtime(box->path, "cur");
	sel = prep(db,
	           "SELECT filename, in_new, flags, keywords, modseq, size, basename "
	           "FROM messages WHERE folder_id = ?1 AND uid = ?2",
	           error_r);
	if (sel == NULL)
		goto out;
	bool rd = read_begin(db);
	for (size_t i = 0; i < n; i++) {
		sqlite3_reset(sel);
		sqlite3_bind_int64(sel, 1, box->folder_id);
		sqlite3_bind_int64(sel, 2, uids[i]);
		if (sqlite3_step(sel) != SQLITE_ROW)
			continue;
		uint32_t of = (uint32_t)sqlite3_column_int64(sel, 2);
		uint32_t ok = (uint32_t)sqlite3_column_int64(sel, 3);
		uint64_t oms = (uint64_t)sqlite3_column_int64(sel, 4);
		if (unchanged_since != 0 && oms > unchanged_since) {
			fl = xgrow(fl, &flcap, nfl + 1, sizeof(*fl));
			fl[nfl++] = uids[i];
			continue;
		}
		uint32_t nf = mode == MBOX_STORE_SET   ? flags
		              : mode == MBOX_STORE_ADD ? of | flags
		                                       : of & ~flags;
		uint32_t nk = mode == MBOX_STORE_SET   ? keywords
		              : mode == MBOX_STORE_ADD ? ok | keywords
		                                       : ok & ~keywords;
		if (nf == of && nk == ok)
			continue;
		const char *ofile = (const char *)sqlite3_column_text(sel, 0);
		bool in_new = sqlite3_column_int(sel, 1) != 0;
		char *nfile = make_filename((const char *)sqlite3_column_text(sel, 6), nf, nk);
		char *from = xasprintf("%s/%s/%s", box->path, in_new ? "new" : "cur", ofile);
		char *to = xasprintf("%s/cur/%s", box->path, nfile);
		int r = rename(from, to);
		int saved = errno;
		free(from);
		free(to);
		if (r < 0) {
			free(nfile);
			if (saved == ENOENT) {
				/* renamed or removed behind our back: the next sync sees it */
				cur_pre = 0;
				continue;
			}
			rename_errno = saved;
			break;
		}
		fc = xgrow(fc, &fccap, nfc + 1, sizeof(*fc));
		fc[nfc++] = (struct flag_change){.uid = uids[i],
		                                 .flags = nf,
		                                 .keywords = nk,
		                                 .size = (uint64_t)sqlite3_column_int64(sel, 5),
		                                 .file = nfile};
	}
	unprep(sel); /* reset: no statement of the read transaction still running */
	sel = NULL;
	read_end(db, rd);
	if (nfc == 0) {
		/* nothing changed: leave HIGHESTMODSEQ alone */
		ret = rename_errno != 0 ? fail(error_r, EIO, "rename: %s", strerror(rename_errno))
		                        : 0;
		goto out;
	}
	/* the files renamed before a rename failed still get their rows */
	uint64_t modseq;
	int64_t cur_rec;
	if (change_begin(db, box, &modseq, &cur_rec, error_r) < 0)
		goto out_txn;
	upd = prep(db,
	           "UPDATE messages SET filename = ?3, in_new = 0, flags = ?4, keywords = ?5, "
	           "modseq = ?6 WHERE folder_id = ?1 AND uid = ?2",
	           error_r);
	if (upd == NULL)
		goto out_txn;
	ch = xcalloc(nfc, sizeof(*ch));
	for (size_t i = 0; i < nfc; i++) {
		sqlite3_reset(upd);
		sqlite3_bind_int64(upd, 1, box->folder_id);
		sqlite3_bind_int64(upd, 2, fc[i].uid);
		sqlite3_bind_text(upd, 3, fc[i].file, -1, SQLITE_STATIC);
		sqlite3_bind_int64(upd, 4, fc[i].flags);
		sqlite3_bind_int64(upd, 5, fc[i].keywords);
		sqlite3_bind_int64(upd, 6, (int64_t)modseq);
		if (sqlite3_step(upd) != SQLITE_DONE) {
			fail_db(error_r, db, "store");
			goto out_txn;
		}
		struct mbox_msg *m = &ch[i];
		m->uid = fc[i].uid;
		m->flags = fc[i].flags |
		           (box_recent(box, fc[i].uid) && !box->readonly ? MBOX_F_RECENT : 0);
		m->keywords = fc[i].keywords;
		m->modseq = modseq;
		m->size = fc[i].size;
		m->internaldate = m->savedate = 0; /* as mbox_changes() (mailbox.h) */
	}
	unprep(upd);
	upd = NULL;
	if (cur_carry(db, box->folder_id, cur_rec, cur_pre, box->path, error_r) < 0 ||
	    exec(db, "COMMIT", error_r) < 0)
		goto out_txn;
	box->status.highestmodseq = modseq;
	box->synced = false; /* counts changed: recomputed by the next sync */
	mbox_notify(box->acct->maildir, box->name);
	ret = rename_errno != 0 ? fail(error_r, EIO, "rename: %s", strerror(rename_errno)) : 0;
	goto out;
out_txn:
	unprep(upd);
	upd = NULL;
	rollback(db);
out:
	unprep(sel);
	folder_unlock(flock);
	for (size_t i = 0; i < nfc; i++)
		free(fc[i].file);
	free(fc);
	if (ret < 0) {
		free(ch);
		free(fl);
		return -1;
	}
	if (changed_r != NULL)
		*changed_r = ch;
	else
		free(ch);
	if (nchanged_r != NULL)
		*nchanged_r = nfc;
	if (failed_r != NULL)
		*failed_r = fl;
	else
		free(fl);
	if (nfailed_r != NULL)
		*nfailed_r = nfl;
	return 0;
}

/*
 * Rewrite a folder's uidlist with only the live messages once expunged
 * lines make up most of it (under the index write lock; atomic rename).
 */
static void uidlist_compact(struct mbox *box, sqlite3 *db)
{
	char *ul = xasprintf("%s/" UIDLIST_NAME, box->path);
	struct stat sb;
	if (stat(ul, &sb) < 0 || sb.st_size < 64 * 1024) {
		free(ul);
		return;
	}
	free(ul);
	sqlite3_stmt *s = NULL;
	if (exec(db, "BEGIN IMMEDIATE", NULL) < 0)
		return;
	struct frow r;
	if (frow_get(db, box->acct->id, box->name, &r, NULL) <= 0 || r.id != box->folder_id)
		goto out;
	s = prep(db,
	         "SELECT coalesce(sum(length(basename) + 12), 0) FROM messages "
	         "WHERE folder_id = ?1",
	         NULL);
	if (s == NULL)
		goto out;
	sqlite3_bind_int64(s, 1, r.id);
	int64_t live = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	unprep(s);
	s = NULL;
	if (sb.st_size <= 2 * live + 64 * 1024)
		goto out;
	size_t len;
	if (uidlist_from_index(db, box->path, &r, &len) < 0) {
		log_error("event=uidlist_compact_failed folder=%s error=\"%s\"", box->path,
		          strerror(errno));
		goto out;
	}
	r.uidlist_off = (int64_t)len;
	if (update_folder_row(db, &r, NULL) < 0)
		goto out;
	exec(db, "COMMIT", NULL);
	log_info("event=uidlist_compacted folder=%s size=%lld->%zu", box->path,
	         (long long)sb.st_size, len);
out:
	rollback(db);
	unprep(s);
}

/*
 * Remove messages: those in uids (if not NULL) and, if require_deleted,
 * flagged \Deleted. Two steps, as mbox_store(): the rows are read and the
 * files unlinked under the folder lock alone (an unlink frees the file's
 * blocks: slow, and no business of the other folders waiting for the index
 * write lock), then one short transaction removes the rows and records the
 * expunges. A crash between the steps leaves rows without files, which the
 * next scan of cur/ (its mtime changed) expunges: the expunge completes.
 */
static int expunge_uids(struct mbox *box, const uint32_t *uids, size_t n, bool require_deleted,
                        uint32_t **expunged_r, size_t *n_r, char **error_r)
{
	uint32_t *out = NULL;
	size_t nout = 0, cap = 0;
	int64_t freed = 0;
	int ret = -1, unlink_errno = 0;
	if (thread_nowait) /* it changes files before it may wait for the index */
		return fail(error_r, EWOULDBLOCK, "index: expunge needs a thread that may wait");
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	struct folder_lock *flock = folder_lock(box->path);
	if (flock == NULL)
		return fail(error_r, EWOULDBLOCK, "folder %s: busy", box->name);
	sqlite3_stmt *sel = NULL, *del = NULL, *ins = NULL;
	int64_t cur_pre = dir_mtime(box->path, "cur");
	sel = prep(db,
	           require_deleted ? "SELECT uid, filename, in_new, phys_size FROM messages WHERE "
	                             "folder_id = ?1 AND (flags & 8) != 0 ORDER BY uid"
	                           : "SELECT uid, filename, in_new, phys_size FROM messages WHERE "
	                             "folder_id = ?1 ORDER BY uid",
	           error_r);
	if (sel == NULL)
		goto out;
	bool rd = read_begin(db);
	sqlite3_bind_int64(sel, 1, box->folder_id);
	while (sqlite3_step(sel) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(sel, 0);
		if (uids != NULL && !uid_in(uids, n, uid))
			continue;
		char *file =
		    xasprintf("%s/%s/%s", box->path, sqlite3_column_int(sel, 2) ? "new" : "cur",
		              (const char *)sqlite3_column_text(sel, 1));
		int r = unlink(file);
		int saved = errno;
		free(file);
		if (r < 0 && saved != ENOENT) {
			unlink_errno = saved;
			break;
		}
		if (r < 0)
			cur_pre = 0; /* gone behind our back: the next sync scans */
		freed += sqlite3_column_int64(sel, 3);
		out = xgrow(out, &cap, nout + 1, sizeof(*out));
		out[nout++] = uid;
	}
	unprep(sel); /* reset: no statement of the read transaction still running */
	sel = NULL;
	read_end(db, rd);
	if (nout == 0) {
		ret = unlink_errno != 0 ? fail(error_r, EIO, "unlink: %s", strerror(unlink_errno))
		                        : 0;
		goto out;
	}
	/* the files unlinked before an unlink failed still lose their rows */
	uint64_t modseq;
	int64_t cur_rec;
	if (change_begin(db, box, &modseq, &cur_rec, error_r) < 0)
		goto out_txn;
	del = prep(db, "DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2", error_r);
	ins =
	    prep(db, "INSERT OR REPLACE INTO expunged (folder_id, uid, modseq) VALUES (?1, ?2, ?3)",
	         error_r);
	if (del == NULL || ins == NULL)
		goto out_txn;
	for (size_t i = 0; i < nout; i++) {
		sqlite3_reset(del);
		sqlite3_bind_int64(del, 1, box->folder_id);
		sqlite3_bind_int64(del, 2, out[i]);
		sqlite3_reset(ins);
		sqlite3_bind_int64(ins, 1, box->folder_id);
		sqlite3_bind_int64(ins, 2, out[i]);
		sqlite3_bind_int64(ins, 3, (int64_t)modseq);
		if (sqlite3_step(del) != SQLITE_DONE || sqlite3_step(ins) != SQLITE_DONE) {
			fail_db(error_r, db, "expunge");
			goto out_txn;
		}
	}
	unprep(del);
	unprep(ins);
	del = ins = NULL;
	if (cur_carry(db, box->folder_id, cur_rec, cur_pre, box->path, error_r) < 0 ||
	    exec(db, "COMMIT", error_r) < 0)
		goto out_txn;
	usage_add(box->acct, -freed);
	box->status.highestmodseq = modseq;
	box->synced = false;
	uidlist_compact(box, db);
	folder_unlock(flock);
	mbox_notify(box->acct->maildir, box->name);
	if (unlink_errno != 0) {
		/* the messages before it are gone; the client hears of them at the next sync */
		free(out);
		return fail(error_r, EIO, "unlink: %s", strerror(unlink_errno));
	}
	if (expunged_r != NULL)
		*expunged_r = out;
	else
		free(out);
	if (n_r != NULL)
		*n_r = nout;
	return 0;
out_txn:
	/* files already unlinked are found missing by the next sync */
	unprep(del);
	unprep(ins);
	rollback(db);
out:
	unprep(sel);
	folder_unlock(flock);
	if (ret < 0) {
		free(out);
		return -1;
	}
	free(out);
	if (expunged_r != NULL)
		*expunged_r = NULL;
	if (n_r != NULL)
		*n_r = 0;
	return 0;
}

int mbox_expunge(struct mbox *box, const uint32_t *uids, size_t n, uint32_t **expunged_r,
                 size_t *n_r, char **error_r)
{
	return expunge_uids(box, uids, n, true, expunged_r, n_r, error_r);
}

/* ---- append and copy ---- */

static int fsync_cur(const char *path, char **error_r)
{
	char *cur = xasprintf("%s/cur", path);
	int r = fsync_dir(cur);
	free(cur);
	if (r < 0)
		return fail(error_r, EIO, "fsync: %s", strerror(errno));
	return 0;
}

struct newmsg {
	char *base; /* new base name */
	char *file; /* cur/ file name */
	uint32_t flags, kw;
	uint64_t phys, vsize;
	int64_t internaldate;
	struct mbox_cache cache;
	uint32_t src_uid; /* copy */
	bool placed;      /* moved from tmp/BASE to cur/FILE */
	bool has_fd;      /* fd: the tmp/ file, written but not yet fsync'd (index_new does) */
	int fd;
};

static void newmsgs_free(struct newmsg *m, size_t n, const char *path, bool unlink_files)
{
	for (size_t i = 0; i < n; i++) {
		if (m[i].has_fd)
			close(m[i].fd);
		if (unlink_files && m[i].file != NULL) {
			char *p = m[i].placed ? xasprintf("%s/cur/%s", path, m[i].file)
			                      : xasprintf("%s/tmp/%s", path, m[i].base);
			unlink(p);
			free(p);
		}
		free(m[i].base);
		free(m[i].file);
		mbox_cache_clear(&m[i].cache);
	}
	free(m);
}

/*
 * The files are in dest tmp/ (and fsync'd): give them UIDs, move them into
 * cur/ and index them, under the folder's lock, so that no scan of ours sees
 * them in cur/ without their rows. Three steps, so that the fsyncs do not
 * hold the index write lock (one for the account's every folder) for other folders:
 * (1) a short transaction raises UIDNEXT past the new UIDs; (2) outside it,
 * the uidlist lines are appended and fsync'd (a UID is never handed out before
 * its line is on disk), the files renamed into cur/ and cur/ fsync'd; (3) a
 * second short transaction adds the rows. A crash between the steps leaves
 * unused UIDs (a gap, allowed) and files the next scan indexes under the UIDs
 * their uidlist lines give them. `src_folder` > 0: copy the cache rows from
 * there.
 */
static int index_new(struct mbox_account *a, const char *canon, const char *path, struct newmsg *m,
                     size_t n, int64_t src_folder, uint32_t *uidvalidity_r, uint32_t *uids_r,
                     char **error_r)
{
	struct frow r;
	if (folder_sync(a, canon, path, false, &r, error_r) < 0)
		return -1;
	sqlite3 *db = conn_db(a->st, a->id, error_r);
	if (db == NULL)
		return -1;
	struct folder_lock *flock = folder_lock(path);
	if (flock == NULL)
		return fail(error_r, EWOULDBLOCK, "folder %s: busy", canon);
	int ret = -1;
	char *buf = NULL;
	sqlite3_stmt *s = NULL, *sc = NULL;

	/* (1) the UIDs */
	if (exec(db, "BEGIN IMMEDIATE", error_r) < 0)
		goto out;
	if (frow_get(db, a->id, canon, &r, error_r) <= 0) {
		fail(error_r, ENOENT, "folder %s vanished", canon);
		goto out;
	}
	int64_t cur_rec = r.cur_mtime, cur_pre = dir_mtime(path, "cur");
	size_t cap = 0, len = 0;
	uint32_t hdr_next = r.uidnext;
	for (size_t i = 0; i < n; i++) {
		uids_r[i] = r.uidnext++;
		buf = xgrow(buf, &cap, len + strlen(m[i].base) + 16, 1);
		len += (size_t)sprintf(buf + len, "%u %s\n", uids_r[i], m[i].base);
	}
	s = prep(db, "UPDATE folders SET uidnext = ?2 WHERE id = ?1", error_r);
	if (s == NULL)
		goto out;
	sqlite3_bind_int64(s, 1, r.id);
	sqlite3_bind_int64(s, 2, r.uidnext);
	if (sqlite3_step(s) != SQLITE_DONE) {
		fail_db(error_r, db, "folder update");
		goto out;
	}
	unprep(s);
	s = NULL;
	if (exec(db, "COMMIT", error_r) < 0)
		goto out;

	/* (2) the uidlist and the files, no index lock held */
	char *ul = xasprintf("%s/" UIDLIST_NAME, path);
	int64_t size;
	int ulfd = -1;
	int w = uidlist_append(ul, r.uidvalidity, hdr_next, buf, len, &size, &ulfd);
	free(ul);
	if (w < 0) {
		fail(error_r, errno == ENOSPC ? ENOSPC : EIO, "cannot write the uid list: %s",
		     strerror(errno));
		goto out;
	}
	/* the uidlist lines and the messages' data flushed side by side (one wait, not two),
	   both before any file is renamed into cur/ and before a UID is handed out */
	int *fds = xmalloc((n + 1) * sizeof(int)), *errs = xmalloc((n + 1) * sizeof(int));
	size_t nfds = 0;
	fds[nfds++] = ulfd;
	for (size_t i = 0; i < n; i++)
		if (m[i].has_fd)
			fds[nfds++] = m[i].fd;
	size_t bad = fsync_all(fds, nfds, false, errs);
	int ferr = 0;
	for (size_t i = 0; i < nfds; i++)
		if (errs[i] != 0 && ferr == 0)
			ferr = errs[i];
	free(fds);
	free(errs);
	close(ulfd);
	for (size_t i = 0; i < n; i++)
		if (m[i].has_fd) {
			close(m[i].fd);
			m[i].has_fd = false;
		}
	if (bad > 0) {
		fail(error_r, ferr == ENOSPC || ferr == EDQUOT ? ferr : EIO, "fsync: %s",
		     strerror(ferr));
		goto out;
	}
	int64_t ul_before = r.uidlist_off;
	for (size_t i = 0; i < n; i++) {
		char *from = xasprintf("%s/tmp/%s", path, m[i].base);
		char *to = xasprintf("%s/cur/%s", path, m[i].file);
		int rr = rename(from, to);
		int saved = errno;
		free(from);
		free(to);
		if (rr < 0) {
			fail(error_r, saved == ENOSPC ? ENOSPC : EIO, "rename: %s",
			     strerror(saved));
			goto out;
		}
		m[i].placed = true;
	}
	if (fsync_cur(path, error_r) < 0)
		goto out;
	int64_t cur_post = dir_mtime(path, "cur");

	/* (3) the rows */
	if (exec(db, "BEGIN IMMEDIATE", error_r) < 0)
		goto out;
	if (frow_get(db, a->id, canon, &r, error_r) <= 0) {
		fail(error_r, ENOENT, "folder %s vanished", canon);
		goto out;
	}
	/* the uidlist grew by our lines only if nobody else appended: else re-read it next time */
	if (r.uidlist_off == ul_before && ul_before + (int64_t)len == size)
		r.uidlist_off = size;
	/* nobody else recorded a scan meanwhile (the folder lock keeps our threads out) */
	if (r.cur_mtime == cur_rec)
		r.cur_mtime = mtime_carry(cur_rec, cur_pre, cur_post);
	r.hms++;
	time_t now = time(NULL);
	if (src_folder > 0) {
		s = prep(
		    db,
		    "INSERT OR REPLACE INTO messages (folder_id, uid, basename, filename, in_new, "
		    "flags, keywords, modseq, size, phys_size, internaldate, savedate) "
		    "SELECT ?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, size, phys_size, internaldate, ?8 "
		    "FROM messages WHERE folder_id = ?9 AND uid = ?10",
		    error_r);
		sc = prep(db,
		          "INSERT OR REPLACE INTO msgcache (folder_id, uid, " CACHE_COLS ") "
		          "SELECT ?1, ?2, " CACHE_COLS
		          " FROM msgcache WHERE folder_id = ?3 AND uid = ?4",
		          error_r);
	} else {
		s = prep(db, INSERT_MSG, error_r);
		sc = prep(db, INSERT_CACHE, error_r);
	}
	if (s == NULL || sc == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, r.id);
		sqlite3_bind_int64(s, 2, uids_r[i]);
		sqlite3_bind_text(s, 3, m[i].base, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 4, m[i].file, -1, SQLITE_STATIC);
		if (src_folder > 0) {
			sqlite3_bind_int64(s, 5, m[i].flags);
			sqlite3_bind_int64(s, 6, m[i].kw);
			sqlite3_bind_int64(s, 7, (int64_t)r.hms);
			sqlite3_bind_int64(s, 8, now);
			sqlite3_bind_int64(s, 9, src_folder);
			sqlite3_bind_int64(s, 10, m[i].src_uid);
		} else {
			sqlite3_bind_int(s, 5, 0);
			sqlite3_bind_int64(s, 6, m[i].flags);
			sqlite3_bind_int64(s, 7, m[i].kw);
			sqlite3_bind_int64(s, 8, (int64_t)r.hms);
			sqlite3_bind_int64(s, 9, (int64_t)m[i].vsize);
			sqlite3_bind_int64(s, 10, (int64_t)m[i].phys);
			sqlite3_bind_int64(s, 11, m[i].internaldate);
			sqlite3_bind_int64(s, 12, now);
		}
		sqlite3_reset(sc);
		sqlite3_bind_int64(sc, 1, r.id);
		sqlite3_bind_int64(sc, 2, uids_r[i]);
		if (src_folder > 0) {
			sqlite3_bind_int64(sc, 3, src_folder);
			sqlite3_bind_int64(sc, 4, m[i].src_uid);
		} else {
			bind_cache(sc, 3, &m[i].cache);
		}
		if (sqlite3_step(s) != SQLITE_DONE || sqlite3_changes(db) != 1 ||
		    sqlite3_step(sc) != SQLITE_DONE) {
			fail_db(error_r, db, "message insert");
			goto out;
		}
	}
	if (update_folder_row(db, &r, error_r) < 0 || exec(db, "COMMIT", error_r) < 0)
		goto out;
	*uidvalidity_r = r.uidvalidity;
	ret = 0;
out:
	unprep(s);
	unprep(sc);
	free(buf);
	if (ret < 0) {
		rollback(db);
		/* out of cur/ again before any scan of ours can index them (their UIDs stay
		   unused) */
		for (size_t i = 0; i < n; i++) {
			if (!m[i].placed)
				continue;
			char *p = xasprintf("%s/cur/%s", path, m[i].file);
			unlink(p);
			free(p);
			m[i].placed = false;
		}
	}
	folder_unlock(flock);
	if (ret == 0)
		mbox_notify(a->maildir, canon);
	return ret;
}

/* Map keyword names to the folder's letters (created as needed). */
static int kw_bits(sqlite3 *db, const char *path, const char *const *names, size_t n,
                   uint32_t *bits_r, char **error_r)
{
	uint32_t bits = 0;
	for (size_t i = 0; i < n; i++) {
		int k = kw_index_dir(db, path, names[i], true);
		if (k < 0)
			return fail(error_r, errno == EMLINK ? EMLINK : EIO,
			            "cannot create keyword %s: %s", names[i], strerror(errno));
		bits |= 1u << k;
	}
	*bits_r = bits;
	return 0;
}

#define APPEND_OPEN_MAX 16

int mbox_append(struct mbox_account *acct, const char *folder, const struct mbox_append *msgs,
                size_t n, uint32_t *uidvalidity_r, uint32_t *uids_r, char **error_r)
{
	char *canon = name_canon(folder);
	if (canon == NULL)
		return fail(error_r, EINVAL, "invalid folder name");
	char *path = folder_path(acct, canon);
	struct newmsg *m = xcalloc(n + 1, sizeof(*m));
	size_t nm = 0;
	int ret = -1;
	sqlite3 *db = conn_db(acct->st, acct->id, error_r);
	if (db == NULL)
		goto out;
	if (!folder_exists(acct, canon)) {
		fail(error_r, ENOENT, "no folder %s", canon);
		goto out;
	}
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += msgs[i].len;
	if (quota_check(acct, total, error_r) < 0)
		goto out;
	for (size_t i = 0; i < n; i++, nm++) {
		struct newmsg *x = &m[i];
		if (kw_bits(db, path, msgs[i].keywords, msgs[i].nkeywords, &x->kw, error_r) < 0)
			goto out;
		x->flags = msgs[i].flags & ~(uint32_t)MBOX_F_RECENT;
		x->phys = msgs[i].len;
		x->internaldate = msgs[i].internaldate != 0 ? msgs[i].internaldate : time(NULL);
		x->base = new_basename(msgs[i].len);
		char *tmp = xasprintf("%s/tmp/%s", path, x->base);
		char *file = make_filename(x->base, x->flags, x->kw);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		int err = 0;
		if (fd < 0) {
			err = errno;
		} else {
			size_t off = 0;
			const char *d = msgs[i].data;
			while (off < msgs[i].len && err == 0) {
				ssize_t w = write(fd, d + off, msgs[i].len - off);
				if (w < 0 && errno != EINTR)
					err = errno;
				else if (w > 0)
					off += (size_t)w;
			}
			struct timespec times[2] = {{.tv_sec = x->internaldate},
			                            {.tv_sec = x->internaldate}};
			if (err == 0 && futimens(fd, times) < 0)
				err = errno;
			/* a few messages stay open, fsync'd by index_new() together with the
			   uidlist line; a large MULTIAPPEND does not hold a descriptor each */
			if (err == 0 && n > APPEND_OPEN_MAX && fsync(fd) < 0)
				err = errno;
			if (err != 0 || n > APPEND_OPEN_MAX) {
				if (close(fd) < 0 && err == 0)
					err = errno;
				if (err != 0)
					unlink(tmp);
			} else {
				x->has_fd = true;
				x->fd = fd;
			}
		}
		free(tmp);
		if (err != 0) {
			free(file);
			fail(error_r, err == ENOSPC || err == EDQUOT ? err : EIO,
			     "cannot write the message: %s", strerror(err));
			goto out;
		}
		x->file = file;
		mbox_cache_compute(msgs[i].data, msgs[i].len, &x->cache, &x->vsize);
	}
	if (index_new(acct, canon, path, m, nm, 0, uidvalidity_r, uids_r, error_r) < 0)
		goto out;
	usage_add(acct, (int64_t)total);
	ret = 0;
out:
	newmsgs_free(m, nm + 1, path, ret < 0); /* m[nm]: a message half written */
	free(path);
	free(canon);
	return ret;
}

static int copy_file(const char *from, const char *to)
{
	int in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -1;
	int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		int saved = errno;
		close(in);
		errno = saved;
		return -1;
	}
	char buf[65536];
	int err = 0;
	for (;;) {
		ssize_t r = read(in, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = errno;
			break;
		}
		if (r == 0)
			break;
		for (ssize_t off = 0; off < r && err == 0;) {
			ssize_t w = write(out, buf + off, (size_t)(r - off));
			if (w < 0 && errno != EINTR)
				err = errno;
			else if (w > 0)
				off += w;
		}
		if (err != 0)
			break;
	}
	struct stat sb;
	if (err == 0 && fstat(in, &sb) == 0) {
		struct timespec times[2] = {sb.st_atim, sb.st_mtim};
		futimens(out, times);
	}
	if (err == 0 && fsync(out) < 0)
		err = errno;
	close(in);
	if (close(out) < 0 && err == 0)
		err = errno;
	if (err != 0) {
		unlink(to);
		errno = err;
		return -1;
	}
	return 0;
}

int mbox_copy(struct mbox *box, const uint32_t *uids, size_t n, const char *dest, bool move,
              uint32_t *dest_uidvalidity_r, uint32_t **src_uids_r, uint32_t **dest_uids_r,
              size_t *n_r, char **error_r)
{
	*src_uids_r = *dest_uids_r = NULL;
	*n_r = 0;
	char *canon = name_canon(dest);
	if (canon == NULL)
		return fail(error_r, EINVAL, "invalid folder name");
	struct mbox_account *a = box->acct;
	char *path = folder_path(a, canon);
	struct newmsg *m = NULL;
	size_t nm = 0, cap = 0;
	uint32_t *src = NULL, *dst = NULL;
	int ret = -1;
	bool indexed = false;
	sqlite3_stmt *s = NULL;
	sqlite3 *db = conn_db(a->st, a->id, error_r);
	if (db == NULL)
		goto out;
	if (!folder_exists(a, canon)) {
		fail(error_r, ENOENT, "no folder %s", canon);
		goto out;
	}
	size_t nsrc_kw = 0;
	char **src_kw = kw_load(box->path, &nsrc_kw, NULL);
	uint32_t kw_map[MBOX_MAX_KEYWORDS] = {0};
	bool kw_mapped[MBOX_MAX_KEYWORDS] = {0};
	s = prep(db,
	         "SELECT filename, in_new, flags, keywords, phys_size FROM messages "
	         "WHERE folder_id = ?1 AND uid = ?2",
	         error_r);
	if (s == NULL) {
		kw_free(src_kw, nsrc_kw);
		goto out;
	}
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, box->folder_id);
		sqlite3_bind_int64(s, 2, uids[i]);
		if (sqlite3_step(s) != SQLITE_ROW)
			continue;
		m = xgrow(m, &cap, nm + 1, sizeof(*m));
		struct newmsg *x = &m[nm];
		memset(x, 0, sizeof(*x));
		x->src_uid = uids[i];
		x->flags = (uint32_t)sqlite3_column_int64(s, 2);
		uint32_t skw = (uint32_t)sqlite3_column_int64(s, 3);
		x->phys = (uint64_t)sqlite3_column_int64(s, 4);
		total += x->phys;
		/* keywords by name in the destination (each looked up once per call) */
		for (size_t k = 0; k < nsrc_kw; k++)
			if (skw & (1u << k)) {
				if (!kw_mapped[k]) {
					const char *nm1[1] = {src_kw[k]};
					if (kw_bits(db, path, nm1, 1, &kw_map[k], error_r) < 0) {
						kw_free(src_kw, nsrc_kw);
						goto out;
					}
					kw_mapped[k] = true;
				}
				x->kw |= kw_map[k];
			}
		char *from =
		    xasprintf("%s/%s/%s", box->path, sqlite3_column_int(s, 1) ? "new" : "cur",
		              (const char *)sqlite3_column_text(s, 0));
		x->base = new_basename(x->phys);
		x->file = make_filename(x->base, x->flags, x->kw);
		char *to = xasprintf("%s/tmp/%s", path, x->base);
		int r = link(from, to);
		if (r < 0 && errno != ENOENT)
			r = copy_file(from, to);
		int saved = errno;
		free(from);
		free(to);
		if (r < 0) {
			xfree(&x->file);
			free(x->base);
			if (saved == ENOENT)
				continue; /* expunged meanwhile */
			kw_free(src_kw, nsrc_kw);
			fail(error_r, saved == ENOSPC ? ENOSPC : EIO, "copy: %s", strerror(saved));
			goto out;
		}
		nm++;
	}
	kw_free(src_kw, nsrc_kw);
	unprep(s);
	s = NULL;
	if (!move && quota_check(a, total, error_r) < 0)
		goto out;
	src = xcalloc(nm + 1, sizeof(*src));
	dst = xcalloc(nm + 1, sizeof(*dst));
	uint32_t uv = 0;
	if (nm > 0 && index_new(a, canon, path, m, nm, box->folder_id, &uv, dst, error_r) < 0)
		goto out;
	indexed = true;
	if (nm == 0) {
		struct frow r;
		if (folder_sync(a, canon, path, false, &r, error_r) < 0)
			goto out;
		uv = r.uidvalidity;
	}
	usage_add(a, (int64_t)total);
	for (size_t i = 0; i < nm; i++)
		src[i] = m[i].src_uid;
	/* the copies are durable: now the originals go (a crash in between leaves both) */
	if (move && nm > 0 && expunge_uids(box, src, nm, false, NULL, NULL, error_r) < 0)
		goto out;
	*dest_uidvalidity_r = uv;
	*src_uids_r = src;
	*dest_uids_r = dst;
	*n_r = nm;
	src = dst = NULL;
	ret = 0;
out:
	unprep(s);
	newmsgs_free(m, nm, path, !indexed);
	free(src);
	free(dst);
	free(path);
	free(canon);
	return ret;
}

int mbox_folder_rename(struct mbox_account *acct, const char *from, const char *to, char **error_r)
{
	char *f = name_canon(from), *t = name_canon(to);
	int ret = -1;
	char **names = NULL;
	size_t nn = 0;
	sqlite3 *db = NULL;
	if (f == NULL || t == NULL) {
		fail(error_r, EINVAL, "invalid folder name");
		goto out;
	}
	if (strcmp(t, "INBOX") == 0 || folder_exists(acct, t)) {
		fail(error_r, EEXIST, "folder %s exists", t);
		goto out;
	}
	if (!folder_exists(acct, f)) {
		fail(error_r, ENOENT, "no folder %s", f);
		goto out;
	}
	size_t fl = strlen(f);
	if (strncmp(t, f, fl) == 0 && t[fl] == '/') {
		fail(error_r, EINVAL, "cannot rename a folder into itself");
		goto out;
	}
	if (strcmp(f, "INBOX") == 0) {
		/* RFC 9051 6.3.6: INBOX's messages move to the new folder, INBOX stays */
		if (mbox_folder_create(acct, t, 0, error_r) < 0)
			goto out;
		struct mbox *box;
		if (mbox_open(acct, "INBOX", true, &box, error_r) < 0)
			goto out;
		struct mbox_msg *msgs;
		size_t n;
		int r = mbox_messages(box, &msgs, &n, error_r);
		if (r == 0) {
			uint32_t *uids = xcalloc(n + 1, sizeof(*uids));
			for (size_t i = 0; i < n; i++)
				uids[i] = msgs[i].uid;
			free(msgs);
			uint32_t uv, *su, *du;
			size_t nc;
			r = mbox_copy(box, uids, n, t, true, &uv, &su, &du, &nc, error_r);
			if (r == 0) {
				free(su);
				free(du);
			}
			free(uids);
		}
		mbox_close(&box);
		ret = r;
		goto out;
	}
	/* the folder and its children; none of the new names may exist (no half-done rename) */
	names = folder_names(acct, &nn);
	for (size_t i = 0; i < nn; i++) {
		if (strcmp(names[i], f) != 0 &&
		    !(strncmp(names[i], f, fl) == 0 && names[i][fl] == '/'))
			continue;
		char *nt = xasprintf("%s%s", t, names[i] + fl);
		bool taken = folder_exists(acct, nt);
		if (taken)
			fail(error_r, EEXIST, "folder %s exists", nt);
		free(nt);
		if (taken)
			goto out;
	}
	db = conn_db(acct->st, acct->id, error_r);
	if (db == NULL || exec(db, "BEGIN IMMEDIATE", error_r) < 0)
		goto out;
	sqlite3_stmt *s =
	    prep(db, "UPDATE folders SET name = ?3 WHERE account_id = ?1 AND name = ?2", error_r);
	if (s == NULL)
		goto out;
	for (size_t i = 0; i < nn; i++) {
		if (strcmp(names[i], f) != 0 &&
		    !(strncmp(names[i], f, fl) == 0 && names[i][fl] == '/'))
			continue;
		char *nt = xasprintf("%s%s", t, names[i] + fl);
		char *op = folder_path(acct, names[i]), *np = folder_path(acct, nt);
		int r = rename(op, np);
		int saved = errno;
		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, acct->id);
		sqlite3_bind_text(s, 2, names[i], -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, nt, -1, SQLITE_TRANSIENT);
		int rc = r == 0 ? sqlite3_step(s) : SQLITE_DONE;
		free(op);
		free(np);
		if (r < 0 || rc != SQLITE_DONE) {
			free(nt);
			unprep(s);
			if (r < 0)
				fail(error_r, saved == EEXIST || saved == ENOTEMPTY ? EEXIST : EIO,
				     "rename: %s", strerror(saved));
			else
				fail_db(error_r, db, "rename");
			goto out;
		}
		mbox_notify(acct->maildir, names[i]);
		free(nt);
	}
	unprep(s);
	if (exec(db, "COMMIT", error_r) < 0)
		goto out;
	special_file_set(acct, f, 0, t);
	ret = 0;
out:
	if (ret < 0 && db != NULL)
		rollback(db);
	if (names != NULL)
		strv_free_n(names, nn);
	free(f);
	free(t);
	return ret;
}

/* ---- message content ---- */

int mbox_msg_open(struct mbox *box, uint32_t uid, int *fd_r, char **error_r)
{
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	for (int attempt = 0; attempt < 2; attempt++) {
		sqlite3_stmt *s = prep(db,
		                       "SELECT filename, in_new FROM messages WHERE folder_id = ?1 "
		                       "AND uid = ?2",
		                       error_r);
		if (s == NULL)
			return -1;
		sqlite3_bind_int64(s, 1, box->folder_id);
		sqlite3_bind_int64(s, 2, uid);
		if (sqlite3_step(s) != SQLITE_ROW) {
			unprep(s);
			return fail(error_r, ENOENT, "message %u has been expunged", uid);
		}
		char *p = xasprintf("%s/%s/%s", box->path, sqlite3_column_int(s, 1) ? "new" : "cur",
		                    (const char *)sqlite3_column_text(s, 0));
		unprep(s);
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		int saved = errno;
		free(p);
		if (fd >= 0) {
			*fd_r = fd;
			return 0;
		}
		if (saved != ENOENT)
			return fail(error_r, EIO, "open: %s", strerror(saved));
		/* on a thread that must not wait, no writes: the row again (another session
		   of ours renames and updates the row together), then gone for now; a rename
		   by another program changed cur/, so the next command's sync finds it */
		if (thread_nowait)
			continue;
		/* renamed behind our back (another program changed its flags): scan and retry;
		   the recorded mtimes may vouch for the directory (a change in the tick of our
		   own), so they are forgotten first */
		sqlite3_stmt *u =
		    prep(db, "UPDATE folders SET cur_mtime = 0 WHERE id = ?1", error_r);
		if (u == NULL)
			return -1;
		sqlite3_bind_int64(u, 1, box->folder_id);
		int rc = sqlite3_step(u);
		unprep(u);
		if (rc != SQLITE_DONE)
			return fail_db(error_r, db, "folder update");
		struct frow r;
		if (folder_sync(box->acct, box->name, box->path, box->readonly, &r, error_r) < 0)
			return -1;
	}
	return fail(error_r, ENOENT, "message %u has been expunged", uid);
}

/* The cache record of a message computed from its file. */
static int cache_from_file(struct mbox *box, uint32_t uid, struct mbox_cache *c, char **error_r)
{
	int fd;
	if (mbox_msg_open(box, uid, &fd, error_r) < 0)
		return -1;
	struct stat sb;
	uint64_t vsize;
	if (fstat(fd, &sb) < 0)
		sb.st_size = 0;
	cache_compute_fd(fd, (size_t)sb.st_size, c, &vsize);
	c->found = true;
	return 0;
}

/*
 * Keep computed cache records, in one transaction, for the messages that
 * still have their row (an expunge may have come in between). Best effort:
 * the cache is made again next time if this fails.
 */
static void cache_store(sqlite3 *db, int64_t folder_id, const uint32_t *uids,
                        struct mbox_cache *const *cs, size_t n)
{
	/* a thread that must not wait leaves it to the next reader on a worker */
	if (n == 0 || thread_nowait || exec(db, "BEGIN IMMEDIATE", NULL) < 0)
		return;
	sqlite3_stmt *q =
	    prep(db, "SELECT 1 FROM messages WHERE folder_id = ?1 AND uid = ?2", NULL);
	sqlite3_stmt *ins = q != NULL ? prep(db, INSERT_CACHE, NULL) : NULL;
	bool ok = ins != NULL;
	for (size_t i = 0; ok && i < n; i++) {
		sqlite3_reset(q);
		sqlite3_bind_int64(q, 1, folder_id);
		sqlite3_bind_int64(q, 2, uids[i]);
		if (sqlite3_step(q) != SQLITE_ROW)
			continue;
		sqlite3_reset(ins);
		sqlite3_bind_int64(ins, 1, folder_id);
		sqlite3_bind_int64(ins, 2, uids[i]);
		bind_cache(ins, 3, cs[i]);
		ok = sqlite3_step(ins) == SQLITE_DONE;
	}
	unprep(q);
	unprep(ins);
	if (!ok || exec(db, "COMMIT", NULL) < 0)
		rollback(db);
}

int mbox_msg_cache(struct mbox *box, uint32_t uid, struct mbox_cache *c, char **error_r)
{
	memset(c, 0, sizeof(*c));
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	struct conn *cn = conn_of(db);
	if (cn->cache_sel == NULL &&
	    sqlite3_prepare_v3(db,
	                       "SELECT " CACHE_COLS " FROM msgcache WHERE folder_id = ?1 AND "
	                       "uid = ?2",
	                       -1, SQLITE_PREPARE_PERSISTENT, &cn->cache_sel, NULL) != SQLITE_OK)
		return fail_db(error_r, db, "prepare");
	sqlite3_stmt *s = cn->cache_sel;
	sqlite3_reset(s);
	sqlite3_bind_int64(s, 1, box->folder_id);
	sqlite3_bind_int64(s, 2, uid);
	/* no cache row: computed from the file below (ENOENT there if the message is gone) */
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
		char **v[] = {&c->envelope,    &c->bodystructure, &c->body,
		              &c->subject,     &c->from,          &c->to,
		              &c->cc,          &c->bcc,           &c->message_id,
		              &c->in_reply_to, &c->references,    &c->sort_from,
		              &c->sort_to,     &c->sort_cc,       &c->display_from,
		              &c->display_to};
		for (size_t i = 0; i < ARRAY_SIZE(v); i++)
			*v[i] = col_dup(s, (int)i);
		c->date = sqlite3_column_int64(s, (int)ARRAY_SIZE(v));
		c->date_tz = sqlite3_column_int(s, (int)ARRAY_SIZE(v) + 1);
		c->found = true;
		sqlite3_reset(s); /* ends the read transaction */
		return 0;
	}
	sqlite3_reset(s);
	/* not cached yet (a large scan leaves them for later): parse the file now and keep it */
	if (cache_from_file(box, uid, c, error_r) < 0)
		return -1;
	cache_store(db, box->folder_id, &uid, &c, 1);
	return 0;
}

int mbox_msg_caches(struct mbox *box, const uint32_t *uids, size_t n, unsigned fields,
                    struct mbox_cache *caches_r, char **error_r)
{
	memset(caches_r, 0, n * sizeof(*caches_r));
	if (n == 0)
		return 0;
	sqlite3 *db = conn_db(box->acct->st, box->acct->id, error_r);
	if (db == NULL)
		return -1;
	bool hd = fields & MBOX_CACHE_HEADERS;
	/* the columns in the order of v[] below; a column not asked for is read as NULL */
	static const struct {
		const char *col;
		unsigned bit;
	} cols[] = {
	    {"envelope", MBOX_CACHE_ENVELOPE},
	    {"bodystructure", MBOX_CACHE_BODYSTRUCTURE},
	    {"body", MBOX_CACHE_BODYSTRUCTURE},
	    {"subject", MBOX_CACHE_SUBJECT},
	    {"hfrom", MBOX_CACHE_FROM},
	    {"hto", MBOX_CACHE_TO},
	    {"hcc", MBOX_CACHE_CC},
	    {"hbcc", MBOX_CACHE_BCC},
	    {"message_id", MBOX_CACHE_MESSAGE_ID},
	    {"in_reply_to", MBOX_CACHE_IN_REPLY_TO},
	    {"refs", MBOX_CACHE_REFERENCES},
	    {"sort_from", 0},
	    {"sort_to", 0},
	    {"sort_cc", 0},
	    {"display_from", 0},
	    {"display_to", 0},
	};
	char sql[640];
	size_t o = (size_t)snprintf(sql, sizeof(sql), "SELECT uid");
	bool want[ARRAY_SIZE(cols)];
	for (size_t k = 0; k < ARRAY_SIZE(cols); k++) {
		want[k] =
		    (fields & cols[k].bit) != 0 || (hd && cols[k].bit != MBOX_CACHE_ENVELOPE &&
		                                    cols[k].bit != MBOX_CACHE_BODYSTRUCTURE);
		o += (size_t)snprintf(sql + o, sizeof(sql) - o, ", %s",
		                      want[k] ? cols[k].col : "NULL");
	}
	snprintf(sql + o, sizeof(sql) - o,
	         ", %s FROM msgcache WHERE folder_id = ?1 AND uid >= ?2 AND uid <= ?3 ORDER BY uid",
	         hd || (fields & MBOX_CACHE_DATE) ? "date, date_tz" : "0, 0");
	sqlite3_stmt *s = prep(db, sql, error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, box->folder_id);
	sqlite3_bind_int64(s, 2, uids[0]);
	sqlite3_bind_int64(s, 3, uids[n - 1]);
	size_t i = 0;
	int rc;
	while (i < n && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(s, 0);
		while (i < n && uids[i] < uid)
			i++;
		if (i == n || uids[i] != uid)
			continue;
		struct mbox_cache *c = &caches_r[i];
		char **v[] = {&c->envelope,    &c->bodystructure, &c->body,
		              &c->subject,     &c->from,          &c->to,
		              &c->cc,          &c->bcc,           &c->message_id,
		              &c->in_reply_to, &c->references,    &c->sort_from,
		              &c->sort_to,     &c->sort_cc,       &c->display_from,
		              &c->display_to};
		/* only the columns asked for: sqlite3_column_type() of the 16 columns of a
		   SORT (DATE) was a tenth of its time */
		for (size_t k = 0; k < ARRAY_SIZE(v); k++)
			if (want[k] && sqlite3_column_type(s, (int)k + 1) != SQLITE_NULL)
				*v[k] = col_dup(s, (int)k + 1);
		c->date = sqlite3_column_int64(s, (int)ARRAY_SIZE(v) + 1);
		c->date_tz = sqlite3_column_int(s, (int)ARRAY_SIZE(v) + 2);
		c->found = true;
		i++;
	}
	unprep(s);
	/* messages without a cache row yet (a large scan left them for later; or expunged
	   meanwhile): computed from their files now and kept, a window at a time */
	uint32_t *mu = NULL;
	struct mbox_cache **mc = NULL;
	size_t nm = 0;
	for (size_t k = 0; k < n; k++) {
		if (caches_r[k].found)
			continue;
		char *err = NULL;
		if (cache_from_file(box, uids[k], &caches_r[k], &err) < 0) {
			free(err); /* gone: stays not found */
			mbox_cache_clear(&caches_r[k]);
			memset(&caches_r[k], 0, sizeof(caches_r[k]));
			continue;
		}
		if (mu == NULL) {
			mu = xmalloc(n * sizeof(*mu));
			mc = xmalloc(n * sizeof(*mc));
		}
		mu[nm] = uids[k];
		mc[nm++] = &caches_r[k];
	}
	if (nm > 0)
		cache_store(db, box->folder_id, mu, mc, nm);
	free(mu);
	free(mc);
	return 0;
}

/* ---- maintenance ---- */

static int forget_account(sqlite3 *db, int64_t account_id, char **error_r)
{
	char sql[512];
	snprintf(sql, sizeof(sql),
	         "DELETE FROM messages WHERE folder_id IN (SELECT id FROM folders WHERE "
	         "account_id = %lld); DELETE FROM expunged WHERE folder_id IN (SELECT id FROM "
	         "folders WHERE account_id = %lld); DELETE FROM folders WHERE account_id = %lld",
	         (long long)account_id, (long long)account_id, (long long)account_id);
	if (exec(db, "BEGIN IMMEDIATE", error_r) < 0)
		return -1;
	if (exec(db, sql, error_r) < 0 || exec(db, "COMMIT", error_r) < 0) {
		rollback(db);
		return -1;
	}
	return 0;
}

int mbox_forget(struct mbox_store *st, int64_t account_id, char **error_r)
{
	/* nothing indexed: no file of its own, and no index.db it would be taken from
	   (the file stays otherwise: the server may have it open, and emptied it is
	   what a new account of the same id starts from) */
	char *own = xasprintf("%s/index/%lld.db", st->data_dir, (long long)account_id);
	char *legacy = xasprintf("%s/index.db", st->data_dir);
	bool none = access(own, F_OK) < 0 && access(legacy, F_OK) < 0;
	free(own);
	free(legacy);
	if (none)
		return 0;
	sqlite3 *db = conn_db(st, account_id, error_r);
	if (db == NULL)
		return -1;
	return forget_account(db, account_id, error_r);
}

/*
 * Set the account's usage counter to the bytes its indexed messages take
 * (other programs moving files around can make the counter drift).
 */
static int usage_recount(struct mbox_account *a, sqlite3 *db, char **error_r)
{
	sqlite3_stmt *s = prep(db,
	                       "SELECT coalesce(sum(phys_size), 0) FROM messages WHERE "
	                       "folder_id IN (SELECT id FROM folders WHERE account_id = ?1)",
	                       error_r);
	if (s == NULL)
		return -1;
	sqlite3_bind_int64(s, 1, a->id);
	int64_t real = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
	unprep(s);
	if (real < 0)
		return fail_db(error_r, db, "usage");
	uint64_t used;
	if (account_used(a, &used, error_r) < 0)
		return -1;
	if ((uint64_t)real != used) {
		log_info("event=usage_recounted account=%s was=%llu now=%lld", a->address,
		         (unsigned long long)used, (long long)real);
		usage_add(a, real - (int64_t)used);
	}
	return 0;
}

int mbox_reindex(struct mbox_store *st, int64_t account_id, const char *address,
                 const char *maildir, char **error_r)
{
	sqlite3 *db = conn_db(st, account_id, error_r);
	if (db == NULL)
		return -1;
	struct mbox_account a = {
	    .st = st, .id = account_id, .address = (char *)address, .maildir = (char *)maildir};
	size_t nn;
	char **names = folder_names(&a, &nn);
	int ret = 0;
	/* rows of folders that no longer exist */
	sqlite3_stmt *s = prep(db, "SELECT name FROM folders WHERE account_id = ?1", error_r);
	if (s == NULL)
		ret = -1;
	char **gone = NULL;
	size_t ngone = 0, cap = 0;
	if (s != NULL) {
		sqlite3_bind_int64(s, 1, account_id);
		while (sqlite3_step(s) == SQLITE_ROW) {
			const char *nm = (const char *)sqlite3_column_text(s, 0);
			bool found = false;
			for (size_t i = 0; i < nn && !found; i++)
				found = strcmp(names[i], nm) == 0;
			if (!found) {
				gone = xgrow(gone, &cap, ngone + 1, sizeof(*gone));
				gone[ngone++] = xstrdup(nm);
			}
		}
		unprep(s);
	}
	for (size_t i = 0; i < ngone && ret == 0; i++) {
		int64_t phys;
		if (exec(db, "BEGIN IMMEDIATE", error_r) < 0 ||
		    forget_folder(db, account_id, gone[i], &phys, error_r) < 0 ||
		    exec(db, "COMMIT", error_r) < 0) {
			rollback(db);
			ret = -1;
		}
	}
	strv_free_n(gone, ngone);
	for (size_t i = 0; i < nn && ret == 0; i++) {
		char *p = folder_path(&a, names[i]);
		struct frow r;
		/* read-only: a rebuild moves no file (new/ stays new/ for the next session) */
		ret = folder_sync_ex(&a, names[i], p, true, true, &r, error_r);
		free(p);
	}
	strv_free_n(names, nn);
	if (ret == 0)
		ret = usage_recount(&a, db, error_r);
	return ret;
}

static void tmp_cleanup(const char *folder)
{
	char *tmp = xasprintf("%s/tmp", folder);
	DIR *d = opendir(tmp);
	if (d == NULL) {
		free(tmp);
		return;
	}
	time_t limit = time(NULL) - 36 * 3600;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char *p = xasprintf("%s/%s", tmp, de->d_name);
		struct stat sb;
		if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_mtime < limit &&
		    sb.st_atime < limit && unlink(p) == 0)
			log_info("event=maildir_tmp_removed file=%s", p);
		free(p);
	}
	closedir(d);
	free(tmp);
}

int mbox_expire(struct mbox_store *st, int64_t account_id, const char *address, const char *maildir,
                uint64_t trash_age, uint64_t junk_age, size_t *deleted_r, char **error_r)
{
	*deleted_r = 0;
	struct mbox_account a = {
	    .st = st, .id = account_id, .address = (char *)address, .maildir = (char *)maildir};
	size_t nn;
	char **names = folder_names(&a, &nn);
	/* Maildir: what a crash left in tmp/ goes after 36 hours (the hourly job passes here) */
	for (size_t i = 0; i < nn; i++) {
		char *fp = folder_path(&a, names[i]);
		tmp_cleanup(fp);
		free(fp);
	}
	if (trash_age == 0 && junk_age == 0) {
		strv_free_n(names, nn);
		return 0;
	}
	char *special = special_file_read(&a);
	int ret = 0;
	time_t now = time(NULL);
	for (size_t i = 0; i < nn && ret == 0; i++) {
		unsigned sp =
		    strcmp(names[i], "INBOX") == 0 ? 0 : folder_special(&a, names[i], special);
		uint64_t age = (sp & MBOX_SPECIAL_TRASH) && trash_age != 0 ? trash_age
		               : (sp & MBOX_SPECIAL_JUNK) && junk_age != 0 ? junk_age
		                                                           : 0;
		if (age == 0)
			continue;
		struct mbox *box;
		if (mbox_open(&a, names[i], true, &box, error_r) < 0) {
			ret = -1;
			break;
		}
		struct mbox_msg *msgs;
		size_t n;
		/* the save dates: mbox_messages_get() (mbox_messages() has no dates) */
		if (mbox_messages(box, &msgs, &n, error_r) < 0) {
			mbox_close(&box);
			ret = -1;
			break;
		}
		uint32_t *old = xcalloc(n + 1, sizeof(*old));
		for (size_t k = 0; k < n; k++)
			old[k] = msgs[k].uid;
		if (mbox_messages_get(box, old, n, msgs, error_r) < 0) {
			free(msgs);
			free(old);
			mbox_close(&box);
			ret = -1;
			break;
		}
		size_t nold = 0;
		for (size_t k = 0; k < n; k++)
			if (msgs[k].uid != 0 && msgs[k].savedate < (int64_t)now - (int64_t)age)
				old[nold++] = msgs[k].uid;
		free(msgs);
		size_t nexp = 0;
		if (nold > 0 && expunge_uids(box, old, nold, false, NULL, &nexp, error_r) < 0)
			ret = -1;
		if (nexp > 0)
			log_info("event=retention_expunged account=%s folder=%s messages=%zu",
			         address, names[i], nexp);
		*deleted_r += nexp;
		free(old);
		mbox_close(&box);
	}
	free(special);
	strv_free_n(names, nn);
	return ret;
}
