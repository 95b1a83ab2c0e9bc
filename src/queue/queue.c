/*
 * The queue: group commit of accepted messages, recovery after a crash.
 *
 * A message is acknowledged (the SMTP 250) only after its spool file was
 * fdatasync'd, the spool directory fsync'd and its rows committed to
 * queue.db (WAL, synchronous=FULL). The commit thread takes every message
 * waiting at that moment and does all of this once for the whole batch, so
 * under load one directory fsync and one WAL fsync serve many messages.
 *
 * A message whose recipients are all local accounts skips all of that: the
 * commit thread writes it into the Maildirs and makes the copies durable
 * before the 250 (queue_direct_deliver() in deliver.c); it never has a spool
 * file or rows. Anything else, or a direct delivery that failed, takes the
 * queue as described above.
 *
 * Threads: queue_commit(), queue_kick() and the done callbacks belong to the
 * event-loop thread; the commit thread and the delivery thread (deliver.c)
 * each have their own SQLite connection. Shared lists are under q->lock.
 *
 * Crash safety: a spool file without a messages row was never acknowledged
 * and is removed at the next queue_open(); spool/tmp holds only messages
 * still being received and is emptied; rows still queued or delivering are
 * delivered again, with maildir_has() skipping the copies already made.
 */
#include "lib/config.h"
#include "lib/fsync_pool.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue-private.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define QUEUE_SCHEMA_VERSION 3

static const char *const queue_schema_v1 =
	"CREATE TABLE messages ("
	"  id TEXT PRIMARY KEY NOT NULL,"
	"  sender TEXT NOT NULL," /* '' for the null sender */
	"  dsn_ret TEXT,"
	"  dsn_envid TEXT,"
	"  smtputf8 INTEGER NOT NULL DEFAULT 0,"
	"  eightbit INTEGER NOT NULL DEFAULT 0,"
	"  auth_user TEXT,"
	"  client_ip TEXT,"
	"  helo TEXT,"
	"  protocol TEXT,"
	"  received INTEGER NOT NULL," /* unix time */
	"  size INTEGER NOT NULL);"
	"CREATE TABLE recipients ("
	"  id INTEGER PRIMARY KEY,"
	"  queue_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
	"  idx INTEGER NOT NULL,"       /* position in the envelope */
	"  address TEXT NOT NULL,"
	"  orig_rcpt TEXT,"             /* rows made by alias expansion: the RCPT they came from */
	"  notify INTEGER NOT NULL DEFAULT 0," /* DSN_NOTIFY_* */
	"  orcpt TEXT,"
	"  local INTEGER NOT NULL DEFAULT 0,"    /* resolved locally at RCPT time */
	"  external INTEGER NOT NULL DEFAULT 0," /* waits for the outbound agent */
	"  state TEXT NOT NULL CHECK (state IN"
	"    ('queued', 'delivering', 'deferred', 'delivered', 'failed')),"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  next_attempt INTEGER NOT NULL DEFAULT 0,"
	"  last_error TEXT);"
	"CREATE INDEX recipients_queue ON recipients(queue_id);"
	"CREATE INDEX recipients_state ON recipients(state, next_attempt);";

/* v2: the outbound agent's delay notice is sent once per message */
static const char *const queue_schema_v2 =
	"ALTER TABLE messages ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;";

/*
 * v3: `postern queue hold` (held messages are not attempted) and the
 * requests the CLI leaves for the running server (queue_admin.c)
 */
static const char *const queue_schema_v3 =
	"ALTER TABLE messages ADD COLUMN held INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE admin_requests ("
	"  id INTEGER PRIMARY KEY,"
	"  action INTEGER NOT NULL,"   /* enum queue_admin_action */
	"  queue_id TEXT,"             /* NULL: every message */
	"  created INTEGER NOT NULL,"  /* unix time */
	"  done INTEGER NOT NULL DEFAULT 0,"
	"  count INTEGER NOT NULL DEFAULT 0," /* messages done so far */
	"  result TEXT);";

int queue_db_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_error("event=queue_sql_failed error=\"%s\"", msg != NULL ? msg : "?");
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

sqlite3_stmt *queue_stmt(sqlite3 *db, sqlite3_stmt **cache, enum queue_stmt_slot slot,
			 const char *sql)
{
	sqlite3_stmt *st = cache[slot];
	if (st != NULL) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		return st;
	}
	if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		log_error("event=queue_sql_failed error=\"%s\"", sqlite3_errmsg(db));
		sqlite3_finalize(st);
		return NULL;
	}
	cache[slot] = st;
	return st;
}

int queue_stmt_exec(sqlite3 *db, sqlite3_stmt **cache, enum queue_stmt_slot slot,
		    const char *sql)
{
	sqlite3_stmt *st = queue_stmt(db, cache, slot, sql);
	if (st == NULL)
		return -1;
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		log_error("event=queue_sql_failed error=\"%s\"", sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

static int db_user_version(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int v = -1;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

sqlite3 *queue_db_open(const char *path, char **error_r)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		*error_r = xasprintf("cannot open %s: %s", path,
				     db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close_v2(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, 5000);
	if (queue_db_exec(db, "PRAGMA journal_mode=WAL") < 0 ||
	    queue_db_exec(db, "PRAGMA synchronous=FULL") < 0 ||
	    queue_db_exec(db, "PRAGMA foreign_keys=ON") < 0 ||
	    queue_db_exec(db, "BEGIN IMMEDIATE") < 0) {
		*error_r = xasprintf("cannot set up %s: %s", path, sqlite3_errmsg(db));
		sqlite3_close_v2(db);
		return NULL;
	}
	int v = db_user_version(db);
	const char *err = NULL;
	if (v < 0)
		err = "cannot read schema version";
	else if (v > QUEUE_SCHEMA_VERSION)
		err = "schema version is newer than this postern supports";
	else if (v < 1 && (queue_db_exec(db, queue_schema_v1) < 0 ||
			   queue_db_exec(db, "PRAGMA user_version = 1") < 0))
		err = "cannot create schema";
	else if (v < 2 && (queue_db_exec(db, queue_schema_v2) < 0 ||
			   queue_db_exec(db, "PRAGMA user_version = 2") < 0))
		err = "cannot migrate schema to version 2";
	else if (v < 3 && (queue_db_exec(db, queue_schema_v3) < 0 ||
			   queue_db_exec(db, "PRAGMA user_version = 3") < 0))
		err = "cannot migrate schema to version 3";
	/* later migrations: if (v < 4) ... */
	if (err == NULL && queue_db_exec(db, "COMMIT") < 0)
		err = "cannot commit schema";
	if (err != NULL) {
		*error_r = xasprintf("%s: %s", path, err);
		queue_db_exec(db, "ROLLBACK");
		sqlite3_close_v2(db);
		return NULL;
	}
	return db;
}

int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return r;
}

static void deliver_push(struct queue *q, const char *id, bool recovering, struct spool_msg *msg)
{
	struct deliver_item *d = xcalloc(1, sizeof(*d));
	snprintf(d->id, sizeof(d->id), "%s", id);
	d->recovering = recovering;
	pthread_mutex_lock(&q->lock);
	/*
	 * A message placed from memory: its bytes go along (no copy), so the
	 * delivery thread need not open and read the spool file it was written
	 * to a moment ago. Bounded: past DELIVER_MEM_MAX it reads the file.
	 */
	size_t bytes = msg != NULL ? (size_t)msg->size : 0;
	if (msg != NULL && msg->fd < 0 && msg->buf != NULL && msg->size >= msg->prefix_len &&
	    q->dl_mem + bytes <= DELIVER_MEM_MAX) {
		d->in_memory = true;
		d->prefix = msg->prefix;
		d->prefix_len = msg->prefix_len;
		d->body = msg->buf;
		d->body_len = (size_t)(msg->size - msg->prefix_len);
		msg->prefix = msg->buf = NULL;
		msg->prefix_len = msg->cap = 0;
		q->dl_mem += bytes;
	}
	if (q->dl_tail != NULL)
		q->dl_tail->next = d;
	else
		q->dl_head = d;
	q->dl_tail = d;
	q->stats.pending++;
	pthread_cond_signal(&q->deliver_cond);
	pthread_mutex_unlock(&q->lock);
}

void queue_deliver_push(struct queue *q, const char *id, bool recovering)
{
	deliver_push(q, id, recovering, NULL);
}

void queue_deliver_items_free(struct queue *q, struct deliver_item *d)
{
	size_t bytes = 0;
	while (d != NULL) {
		struct deliver_item *next = d->next;
		if (d->in_memory)
			bytes += d->prefix_len + d->body_len;
		free(d->prefix);
		free(d->body);
		free(d);
		d = next;
	}
	if (bytes > 0) {
		pthread_mutex_lock(&q->lock);
		q->dl_mem -= bytes;
		pthread_mutex_unlock(&q->lock);
	}
}

/* ---- recovery ---- */

static bool looks_like_id(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n >= QUEUE_ID_MAX)
		return false;
	for (const char *p = name; *p != '\0'; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z')))
			return false;
	return true;
}

static int message_row_exists(sqlite3 *db, const char *id)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, "SELECT 1 FROM messages WHERE id = ?1", -1, &st, NULL) !=
	    SQLITE_OK)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Delete a message and its recipients (in the caller's transaction). */
static int remove_message_rows(sqlite3 *db, const char *id)
{
	static const char *const sql[] = {"DELETE FROM recipients WHERE queue_id = ?1",
					  "DELETE FROM messages WHERE id = ?1"};
	for (size_t i = 0; i < 2; i++) {
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(db, sql[i], -1, &st, NULL) != SQLITE_OK)
			return -1;
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return -1;
	}
	return 0;
}

/*
 * A committed message with no delivery progress yet whose spool file is
 * missing or differs in size from its row: the crash came after the rows were durable but before the file was,
 * so no 250 was sent (the 250 waits for both). Returns 1 if it was removed.
 */
static int drop_if_unacknowledged(struct queue *q, const char *id, int64_t size)
{
	char *path = xasprintf("%s/%s", q->spool_dir, id);
	struct stat st;
	bool whole = stat(path, &st) == 0 && st.st_size == size;
	if (whole) {
		free(path);
		return 0;
	}
	if (remove_message_rows(q->commit_db, id) < 0) {
		free(path);
		return -1;
	}
	unlink(path);
	free(path);
	log_info("event=unacknowledged_removed queue_id=%s reason=\"spool file not durable\"", id);
	return 1;
}

static int recover(struct queue *q, char **error_r)
{
	/* 1. messages that were still being received: never acknowledged */
	DIR *d = opendir(q->spool_tmp);
	if (d == NULL) {
		*error_r = xasprintf("cannot open %s: %s", q->spool_tmp, strerror(errno));
		return -1;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			log_info("event=spool_tmp_removed queue_id=%s", de->d_name);
	}
	closedir(d);

	/* 2. spool files with no row: the crash came before the commit, no 250 was sent */
	d = opendir(q->spool_dir);
	if (d == NULL) {
		*error_r = xasprintf("cannot open %s: %s", q->spool_dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (!looks_like_id(de->d_name))
			continue;
		int e = message_row_exists(q->commit_db, de->d_name);
		if (e < 0) {
			closedir(d);
			*error_r = xasprintf("queue.db: %s", sqlite3_errmsg(q->commit_db));
			return -1;
		}
		if (e == 0 && unlinkat(dirfd(d), de->d_name, 0) == 0)
			log_info("event=orphan_spool_removed queue_id=%s", de->d_name);
	}
	closedir(d);

	/*
	 * 3. messages committed without a durable spool file: never
	 * acknowledged (see drop_if_unacknowledged)
	 */
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(q->commit_db,
			       "SELECT id, size FROM messages m WHERE NOT EXISTS (SELECT 1 FROM"
			       " recipients r WHERE r.queue_id = m.id AND r.state != 'queued')",
			       -1, &st, NULL) != SQLITE_OK) {
		*error_r = xasprintf("queue.db: %s", sqlite3_errmsg(q->commit_db));
		return -1;
	}
	struct fresh {
		char id[QUEUE_ID_MAX];
		int64_t size;
	} *fresh = NULL;
	size_t nfresh = 0, capfresh = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		fresh = xgrow(fresh, &capfresh, nfresh + 1, sizeof(*fresh));
		snprintf(fresh[nfresh].id, QUEUE_ID_MAX, "%s",
			 (const char *)sqlite3_column_text(st, 0));
		fresh[nfresh++].size = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	st = NULL;
	bool txn_ok = nfresh == 0 || queue_db_exec(q->commit_db, "BEGIN IMMEDIATE") == 0;
	for (size_t i = 0; i < nfresh && txn_ok; i++)
		if (drop_if_unacknowledged(q, fresh[i].id, fresh[i].size) < 0)
			txn_ok = false;
	free(fresh);
	if (nfresh > 0 && (!txn_ok || queue_db_exec(q->commit_db, "COMMIT") < 0)) {
		*error_r = xasprintf("queue.db: %s", sqlite3_errmsg(q->commit_db));
		queue_db_exec(q->commit_db, "ROLLBACK");
		return -1;
	}

	/*
	 * 4. messages with rows still queued or delivering, and messages with
	 * nothing pending whose spool file a crash left behind: hand them to
	 * the delivery thread, which delivers (skipping copies already made)
	 * and cleans up.
	 */
	const char *sql =
		"SELECT id FROM messages m WHERE EXISTS (SELECT 1 FROM recipients r WHERE"
		" r.queue_id = m.id AND r.state IN ('queued', 'delivering')) OR NOT EXISTS"
		" (SELECT 1 FROM recipients r WHERE r.queue_id = m.id AND r.state IN"
		" ('queued', 'delivering', 'deferred')) ORDER BY id";
	if (sqlite3_prepare_v2(q->commit_db, sql, -1, &st, NULL) != SQLITE_OK) {
		*error_r = xasprintf("queue.db: %s", sqlite3_errmsg(q->commit_db));
		return -1;
	}
	unsigned n = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		queue_deliver_push(q, (const char *)sqlite3_column_text(st, 0), true);
		n++;
	}
	sqlite3_finalize(st);
	if (n > 0)
		log_info("event=queue_recovery messages=%u", n);
	return 0;
}

/* ---- group commit ---- */

static void bind_opt(sqlite3_stmt *st, int i, const char *s)
{
	if (s != NULL)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static int insert_rows(struct queue *q, struct commit_item *it, time_t now)
{
	sqlite3 *db = q->commit_db;
	struct envelope *env = it->env;
	int ret = -1;
	sqlite3_stmt *st = queue_stmt(
	    db, q->commit_st, QS_INSERT_MESSAGE,
	    "INSERT INTO messages(id, sender, dsn_ret, dsn_envid, smtputf8,"
	    " eightbit, auth_user, client_ip, helo, protocol, received, size)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, it->msg->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, env->sender != NULL ? env->sender : "", -1, SQLITE_STATIC);
	bind_opt(st, 3, env->dsn_ret);
	bind_opt(st, 4, env->dsn_envid);
	sqlite3_bind_int(st, 5, env->smtputf8);
	sqlite3_bind_int(st, 6, env->eightbit);
	bind_opt(st, 7, env->auth_user);
	bind_opt(st, 8, env->client_ip);
	bind_opt(st, 9, env->client_helo);
	bind_opt(st, 10, env->protocol);
	sqlite3_bind_int64(st, 11, (int64_t)now);
	sqlite3_bind_int64(st, 12, (int64_t)it->msg->size);
	if (sqlite3_step(st) != SQLITE_DONE)
		goto out;
	sqlite3_reset(st);
	st = queue_stmt(db, q->commit_st, QS_INSERT_RCPT,
			"INSERT INTO recipients(queue_id, idx, address, notify, orcpt, local,"
			" state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued')");
	if (st == NULL)
		goto out;
	for (size_t i = 0; i < env->nrcpts; i++) {
		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, it->msg->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (int64_t)i);
		sqlite3_bind_text(st, 3, env->rcpts[i].address, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 4, (int)env->rcpts[i].notify);
		bind_opt(st, 5, env->rcpts[i].orcpt);
		sqlite3_bind_int(st, 6, env->rcpts[i].local);
		if (sqlite3_step(st) != SQLITE_DONE)
			goto out;
	}
	ret = 0;
out:
	if (st != NULL)
		sqlite3_reset(st);
	return ret;
}

static void fail_item(struct commit_item *it, int error)
{
	it->ok = false;
	it->error = error != 0 ? error : EIO;
}

/* The row-writing half of a batch commit, run while the pool flushes the files. */
struct insert_job {
	struct queue *q;
	struct commit_item *batch;
	time_t now;
};

static void insert_batch(void *arg)
{
	struct insert_job *ij = arg;
	struct queue *q = ij->q;
	/* writers of queue.db wait here, not in SQLite's sleeping busy handler */
	pthread_mutex_lock(&q->db_write_lock);
	bool txn_ok = queue_db_exec(q->commit_db, "BEGIN IMMEDIATE") == 0;
	for (struct commit_item *it = ij->batch; it != NULL && txn_ok; it = it->next) {
		if (!it->ok || it->fd < 0)
			continue;
		sqlite3 *db = q->commit_db;
		queue_stmt_exec(db, q->commit_st, QS_SAVEPOINT, "SAVEPOINT msg");
		if (insert_rows(q, it, ij->now) < 0) {
			log_error("event=queue_insert_failed queue_id=%s error=\"%s\"", it->msg->id,
				  sqlite3_errmsg(db));
			queue_stmt_exec(db, q->commit_st, QS_ROLLBACK_TO, "ROLLBACK TO msg");
			fail_item(it, EIO);
		}
		queue_stmt_exec(db, q->commit_st, QS_RELEASE, "RELEASE msg");
	}
	if (txn_ok && queue_db_exec(q->commit_db, "COMMIT") < 0) {
		queue_db_exec(q->commit_db, "ROLLBACK");
		txn_ok = false;
	}
	pthread_mutex_unlock(&q->db_write_lock);
	if (!txn_ok) {
		int e = sqlite3_system_errno(q->commit_db);
		log_error("event=queue_commit_failed error=\"%s\"", sqlite3_errmsg(q->commit_db));
		for (struct commit_item *it = ij->batch; it != NULL; it = it->next)
			if (it->ok && it->fd >= 0)
				fail_item(it, e);
	}
}

/*
 * Remove the rows of the messages marked `undo`: their rows were committed
 * but their spool files could not be made durable, so they are refused
 * (4xx). Should this fail too, recovery finds rows without a valid spool
 * file at the next start and removes them.
 */
static void undo_rows(struct queue *q, struct commit_item *batch)
{
	pthread_mutex_lock(&q->db_write_lock);
	if (queue_db_exec(q->commit_db, "BEGIN IMMEDIATE") == 0) {
		for (struct commit_item *it = batch; it != NULL; it = it->next) {
			if (!it->undo)
				continue;
			if (remove_message_rows(q->commit_db, it->msg->id) < 0)
				log_error("event=queue_undo_failed queue_id=%s error=\"%s\"",
					  it->msg->id, sqlite3_errmsg(q->commit_db));
		}
		if (queue_db_exec(q->commit_db, "COMMIT") < 0)
			queue_db_exec(q->commit_db, "ROLLBACK");
	}
	pthread_mutex_unlock(&q->db_write_lock);
}

static void commit_batch(struct queue *q, struct commit_item *batch)
{
	size_t n = 0;
	time_t now = time(NULL);
	/* the batch's log lines in one write per sink, before the 250s */
	log_hold();

	/*
	 * 0. Messages for local accounts only: straight into their Maildirs,
	 * durable there, no spool file and no rows (deliver.c). The others, and
	 * any that could not be delivered so, take the queue below.
	 */
	struct direct_round *direct = queue_direct_deliver(q, batch, now);

	/* 1. every spool file written (no fsync yet) */
	for (struct commit_item *it = batch; it != NULL; it = it->next)
		n++;
	int *fds = xcalloc(n + 1, sizeof(*fds));
	int *errs = xcalloc(n + 1, sizeof(*errs));
	size_t nfds = 0;
	for (struct commit_item *it = batch; it != NULL; it = it->next) {
		it->ok = true;
		it->fd = -1;
		if (it->direct)
			continue;
		if (it->env == NULL || it->env->nrcpts == 0) {
			fail_item(it, EINVAL);
			continue;
		}
		it->fd = spool_msg_place(it->msg, q->spool_dir);
		if (it->fd < 0) {
			fail_item(it, errno);
			log_error("event=spool_write_failed queue_id=%s error=\"%s\"", it->msg->id,
				  strerror(it->error));
			continue;
		}
		fds[nfds++] = it->fd;
	}
	/*
	 * 2. The files, their directory entries and their rows durable, all at
	 * once: the pool flushes the files and spool/ side by side while this
	 * thread writes the rows in one transaction, so the batch waits for
	 * about one journal commit and one WAL fsync running in parallel. No
	 * 250 is sent before all three are done; a crash in between leaves a row
	 * whose spool file is missing or short, which recovery removes (it was
	 * never acknowledged), or a file without a row, likewise.
	 */
	if (nfds > 0) {
		int dfd = open(q->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int derr = dfd < 0 ? errno : 0;
		if (dfd >= 0)
			fds[nfds] = dfd;
		struct insert_job ij = {.q = q, .batch = batch, .now = now};
		fsync_all_while(fds, nfds + (dfd >= 0), false, errs, insert_batch, &ij);
		if (dfd >= 0) {
			derr = errs[nfds];
			close(dfd);
		}
		if (derr != 0)
			log_error("event=spool_fsync_failed error=\"%s\"", strerror(derr));
		size_t i = 0, nundo = 0;
		for (struct commit_item *it = batch; it != NULL; it = it->next) {
			if (it->fd < 0)
				continue;
			int e = errs[i++];
			if (e != 0)
				log_error("event=spool_write_failed queue_id=%s error=\"%s\"",
					  it->msg->id, strerror(e));
			else
				e = derr;
			if (!it->ok)
				e = it->error; /* its row could not be written */
			if (spool_msg_placed(it->msg, it->fd, e) < 0) {
				if (it->ok) {
					/* its row is in, its file is not durable */
					it->undo = true;
					nundo++;
				}
				fail_item(it, errno);
			}
			it->fd = -1;
		}
		if (nundo > 0)
			undo_rows(q, batch);
	}
	free(fds);
	free(errs);

	size_t nok = 0;
	for (struct commit_item *it = batch; it != NULL; it = it->next) {
		if (!it->ok)
			continue;
		nok++;
		char sender[512];
		log_info("event=committed queue_id=%s from=%s nrcpt=%zu size=%llu%s", it->msg->id,
			 log_quote(sender, sizeof(sender), it->env->sender, 256), it->env->nrcpts,
			 (unsigned long long)it->msg->size, it->direct ? " direct=1" : "");
		if (!it->direct)
			deliver_push(q, it->msg->id, it->recovering, it->msg);
	}
	log_debug("event=group_commit batch=%zu ok=%zu", n, nok);
	/* written before the loop can see the batch (it may answer it on an earlier wake-up) */
	log_flush();

	pthread_mutex_lock(&q->lock);
	q->stats.batches++;
	if (n > q->stats.max_batch)
		q->stats.max_batch = n;
	q->stats.committed += nok;
	q->stats.commit_failed += n - nok;
	struct commit_item *last = batch;
	while (last->next != NULL)
		last = last->next;
	if (q->done_tail != NULL)
		q->done_tail->next = batch;
	else
		q->done_head = batch;
	q->done_tail = last;
	pthread_mutex_unlock(&q->lock);
	uint64_t one = 1;
	if (write(q->efd, &one, sizeof(one)) < 0) {
		/* an eventfd counter cannot overflow here */
	}
	/* after the 250s: log the direct copies, wake IDLE, count usage */
	log_hold();
	queue_direct_settle(q, direct);
	log_flush();
}

static void *commit_main(void *arg)
{
	struct queue *q = arg;
	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (q->wait_head == NULL && !q->stopping)
			pthread_cond_wait(&q->commit_cond, &q->lock);
		if (q->wait_head == NULL)
			break; /* stopping, and every commit is done */
		struct commit_item *batch = q->wait_head;
		q->wait_head = q->wait_tail = NULL;
		pthread_mutex_unlock(&q->lock);
		commit_batch(q, batch);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* On the event-loop thread: answer the committed messages. */
static void run_done(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	struct commit_item *it = q->done_head;
	q->done_head = q->done_tail = NULL;
	pthread_mutex_unlock(&q->lock);
	while (it != NULL) {
		struct commit_item *next = it->next;
		if (it->done != NULL)
			it->done(it->arg, it->ok, it->ok ? 0 : it->error);
		spool_msg_free(&it->msg);
		envelope_free_fields(it->env);
		free(it->env);
		free(it);
		it = next;
	}
}

static void on_eventfd(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0) {
		/* spurious wakeup */
	}
	run_done(arg);
}

void queue_commit(struct queue *q, struct spool_msg *msg, struct envelope *env,
		  queue_commit_done_fn *done, void *arg)
{
	struct commit_item *it = xcalloc(1, sizeof(*it));
	it->msg = msg;
	it->env = xmalloc(sizeof(*it->env));
	*it->env = *env;
	memset(env, 0, sizeof(*env));
	it->done = done;
	it->arg = arg;
	pthread_mutex_lock(&q->lock);
	if (q->wait_tail != NULL)
		q->wait_tail->next = it;
	else
		q->wait_head = it;
	q->wait_tail = it;
	pthread_cond_signal(&q->commit_cond);
	pthread_mutex_unlock(&q->lock);
}

void queue_kick(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->kicked = true;
	pthread_cond_signal(&q->deliver_cond);
	pthread_mutex_unlock(&q->lock);
	queue_outbound_kick(q);
}

void queue_get_stats(struct queue *q, struct queue_stats *stats_r)
{
	pthread_mutex_lock(&q->lock);
	*stats_r = q->stats;
	pthread_mutex_unlock(&q->lock);
}

/* ---- open / close ---- */

int queue_lock_try(const char *data_dir)
{
	char *path = xasprintf("%s/queue.lock", data_dir);
	/* read-only is enough for flock: the CLI run as root and the server share the file */
	int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
	free(path);
	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int mkdir_ok(const char *path)
{
	return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

struct queue *queue_open(struct event_base *base, const struct config *cfg, char **error_r)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	q->data_dir = xstrdup(cfg->data_dir);
	q->spool_dir = xasprintf("%s/spool", q->data_dir);
	q->spool_tmp = xasprintf("%s/spool/tmp", q->data_dir);
	q->db_path = xasprintf("%s/queue.db", q->data_dir);
	q->base = base;
	q->efd = -1;
	q->lock_fd = -1;
	pthread_mutex_init(&q->lock, NULL);
	pthread_mutex_init(&q->db_write_lock, NULL);
	pthread_cond_init(&q->commit_cond, NULL);
	pthread_cond_init(&q->deliver_cond, NULL);

	if (mkdir_ok(q->data_dir) < 0 || mkdir_ok(q->spool_dir) < 0 ||
	    mkdir_ok(q->spool_tmp) < 0) {
		*error_r = xasprintf("cannot create %s: %s", q->spool_tmp, strerror(errno));
		goto fail;
	}
	/* one server per data directory; `postern queue` waits a moment at most */
	for (int i = 0; i < 100 && q->lock_fd < 0; i++) {
		q->lock_fd = queue_lock_try(q->data_dir);
		if (q->lock_fd < 0 && errno != EWOULDBLOCK)
			break;
		if (q->lock_fd < 0)
			usleep(50 * 1000);
	}
	if (q->lock_fd < 0) {
		*error_r = errno == EWOULDBLOCK
				   ? xasprintf("%s/queue.lock: the queue is in use by another"
					       " postern process",
					       q->data_dir)
				   : xasprintf("%s/queue.lock: %s", q->data_dir, strerror(errno));
		goto fail;
	}
	q->commit_db = queue_db_open(q->db_path, error_r);
	if (q->commit_db == NULL)
		goto fail;
	q->deliver_db = queue_db_open(q->db_path, error_r);
	if (q->deliver_db == NULL)
		goto fail;
	if (recover(q, error_r) < 0)
		goto fail;
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->efd < 0) {
		*error_r = xasprintf("eventfd: %s", strerror(errno));
		goto fail;
	}
	q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_eventfd, q);
	if (q->ev == NULL || event_add(q->ev, NULL) < 0) {
		*error_r = xstrdup("cannot add the queue event");
		goto fail;
	}
	if (pthread_create(&q->commit_thread, NULL, commit_main, q) != 0)
		fatal("event=pthread_create_failed what=queue_commit");
	pthread_setname_np(q->commit_thread, "commit");
	if (pthread_create(&q->deliver_thread, NULL, queue_deliver_main, q) != 0)
		fatal("event=pthread_create_failed what=queue_deliver");
	pthread_setname_np(q->deliver_thread, "deliver");
	q->threads_started = true;
	log_info("event=queue_open data_dir=%s", q->data_dir);
	return q;
fail:
	queue_close(&q);
	return NULL;
}

void queue_close(struct queue **qp)
{
	struct queue *q = *qp;
	if (q == NULL)
		return;
	/* first: its workers write queue.db and push DSNs to the delivery thread */
	queue_outbound_stop(q);
	if (q->threads_started) {
		pthread_mutex_lock(&q->lock);
		q->stopping = true;
		pthread_cond_broadcast(&q->commit_cond);
		pthread_cond_broadcast(&q->deliver_cond);
		pthread_mutex_unlock(&q->lock);
		/* the commit thread drains every waiting commit before it exits */
		pthread_join(q->commit_thread, NULL);
		pthread_join(q->deliver_thread, NULL);
		run_done(q);
	}
	/* committed but undelivered messages are picked up again by recovery */
	queue_deliver_items_free(q, q->dl_head);
	q->dl_head = q->dl_tail = NULL;
	if (q->ev != NULL)
		event_free(q->ev);
	if (q->efd >= 0)
		close(q->efd);
	for (int i = 0; i < QS_MAX; i++) {
		sqlite3_finalize(q->commit_st[i]);
		sqlite3_finalize(q->deliver_st[i]);
	}
	sqlite3_close_v2(q->commit_db);
	sqlite3_close_v2(q->deliver_db);
	if (q->lock_fd >= 0)
		close(q->lock_fd);
	pthread_mutex_destroy(&q->lock);
	pthread_mutex_destroy(&q->db_write_lock);
	pthread_cond_destroy(&q->commit_cond);
	pthread_cond_destroy(&q->deliver_cond);
	free(q->data_dir);
	free(q->spool_dir);
	free(q->spool_tmp);
	free(q->db_path);
	free(q);
	*qp = NULL;
}
