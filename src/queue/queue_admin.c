/*
 * Queue administration (`postern queue`): list, show, hold, release,
 * flush, delete and bounce, safe while the server runs.
 *
 * The CLI and the server share queue.db (WAL). Reading is always done by
 * the CLI directly. Changes go through queue_admin_apply(), run either
 *
 *   - by the CLI itself, when no server holds DATA_DIR/queue.lock (the
 *     server flocks it from queue_open() to queue_close(), and a server
 *     starting meanwhile waits for the CLI to let go), or
 *   - by the running server's outbound scheduler thread, which picks up
 *     the request rows the CLI writes into admin_requests every second and
 *     writes the result back for the waiting CLI.
 *
 * In the server, a change never races a delivery: the scheduler is the
 * only thread that hands rows to the outbound workers, and it applies the
 * requests between two scans. A message with a delivery attempt in
 * progress (its rows in a job, or in the local delivery thread) is first
 * held, so that no new attempt starts, and the delete or bounce waits
 * until the attempt has ended and recorded its outcome: recipients that
 * the remote server accepted in the meantime are not bounced, and nothing
 * is sent twice. Hold only stops new attempts; one in progress finishes.
 *
 * Trust: the CLI runs as root or the service user; queue ids given on the
 * command line are bound as SQL parameters and checked before they become
 * file names.
 */
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/outbound.h"
#include "queue/queue-private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Text of an administrative bounce (RFC 3463 5.0.0: other undefined status). */
#define ADMIN_BOUNCE_ERROR "5.0.0 message returned to the sender by the mail administrator"
/* Answered requests nobody collected are removed after this long. */
#define ADMIN_REQUEST_KEEP 3600
/* How often the CLI looks for the server's answer. */
#define ADMIN_POLL_MS 100

static bool valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n >= QUEUE_ID_MAX)
		return false;
	for (const char *p = id; *p != '\0'; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z')))
			return false;
	return true;
}

static bool step_ok(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE;
}

/* Run `sql` with ?1 bound to `id` (or NULL); the number of rows changed, or -1. */
static int64_t exec_id(sqlite3 *db, const char *sql, const char *id)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (id != NULL)
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 1);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? sqlite3_changes64(db) : -1;
}

static int message_exists(sqlite3 *db, const char *id, bool *held_r)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, "SELECT held FROM messages WHERE id = ?1", -1, &st, NULL) !=
	    SQLITE_OK)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && held_r != NULL)
		*held_r = sqlite3_column_int(st, 0) != 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

static void wlock(struct admin_ctx *ctx)
{
	if (ctx->write_lock != NULL)
		pthread_mutex_lock(ctx->write_lock);
}

static void wunlock(struct admin_ctx *ctx)
{
	if (ctx->write_lock != NULL)
		pthread_mutex_unlock(ctx->write_lock);
}

/* Run one statement in its own write transaction. Changed rows or -1. */
static int64_t write_one(struct admin_ctx *ctx, const char *sql, const char *id)
{
	wlock(ctx);
	int64_t n = -1;
	if (queue_db_exec(ctx->db, "BEGIN IMMEDIATE") == 0) {
		n = exec_id(ctx->db, sql, id);
		if (n < 0 || queue_db_exec(ctx->db, "COMMIT") < 0) {
			queue_db_exec(ctx->db, "ROLLBACK");
			n = -1;
		}
	}
	wunlock(ctx);
	return n;
}

static void unlink_spool(struct admin_ctx *ctx, const char *id)
{
	char *p = xasprintf("%s/%s", ctx->spool_dir, id);
	if (unlink(p) < 0 && errno != ENOENT)
		log_error("event=spool_unlink_failed queue_id=%s error=\"%s\"", id, strerror(errno));
	free(p);
}

static const char *const sql_remove[] = {
	"DELETE FROM recipients WHERE queue_id = ?1",
	"DELETE FROM messages WHERE id = ?1",
};

/* Messages deleted per transaction by delete_now(). */
#define ADMIN_DELETE_BATCH 500

/*
 * Delete the messages ids[0..n) now (none is busy), up to
 * ADMIN_DELETE_BATCH per transaction. The number deleted (ids not there
 * any more are skipped), or -1 on a database error.
 */
static int64_t delete_now(struct admin_ctx *ctx, char (*ids)[QUEUE_ID_MAX], size_t n)
{
	int64_t total = 0;
	bool *gone = xcalloc(ADMIN_DELETE_BATCH, sizeof(*gone));
	for (size_t base = 0; base < n; base += ADMIN_DELETE_BATCH) {
		size_t k = n - base < ADMIN_DELETE_BATCH ? n - base : ADMIN_DELETE_BATCH;
		bool ok = false;
		wlock(ctx);
		if (queue_db_exec(ctx->db, "BEGIN IMMEDIATE") == 0) {
			ok = true;
			for (size_t i = 0; i < k && ok; i++) {
				int64_t r = exec_id(ctx->db, sql_remove[0], ids[base + i]);
				int64_t m = r < 0 ? -1 : exec_id(ctx->db, sql_remove[1], ids[base + i]);
				ok = m >= 0;
				gone[i] = m > 0;
			}
			if (!ok || queue_db_exec(ctx->db, "COMMIT") < 0) {
				queue_db_exec(ctx->db, "ROLLBACK");
				ok = false;
			}
		}
		wunlock(ctx);
		if (!ok) {
			free(gone);
			return -1;
		}
		/* after the COMMIT: a crash before an unlink leaves an orphan spool file, removed at start */
		for (size_t i = 0; i < k; i++) {
			if (!gone[i])
				continue;
			unlink_spool(ctx, ids[base + i]);
			log_info("event=queue_admin_deleted queue_id=%s", ids[base + i]);
			total++;
		}
	}
	free(gone);
	return total;
}

/* A message with a delivery in progress: hold it so no new attempt starts. */
static bool busy_hold(struct admin_ctx *ctx, const char *id)
{
	if (ctx->busy == NULL || !ctx->busy(ctx->arg, id))
		return false;
	write_one(ctx, "UPDATE messages SET held = 1 WHERE id = ?1", id);
	return true;
}

static void dsn_rows_free(struct dsn_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rows[i].address);
		free(rows[i].orcpt);
		free(rows[i].error);
	}
	free(rows);
}

/*
 * Return message `id` to its sender now: every recipient not delivered
 * yet is reported as failed (5.0.0, or its own error if it had already
 * failed) in one DSN, and the message is removed, all in one transaction.
 */
static int bounce_now(struct admin_ctx *ctx, const char *id, char **result_r)
{
	sqlite3 *db = ctx->db;
	sqlite3_stmt *st = NULL;
	struct dsn_row *rows = NULL;
	size_t n = 0, cap = 0, nreported = 0;
	char *sender = NULL, *ret_ = NULL, *envid = NULL;
	time_t received = 0;
	char dsn_id[QUEUE_ID_MAX] = "";
	int ret = -1;
	bool dsn = false;

	wlock(ctx);
	if (queue_db_exec(db, "BEGIN IMMEDIATE") < 0)
		goto unlock;
	if (sqlite3_prepare_v2(db,
			       "SELECT sender, dsn_ret, dsn_envid, received FROM messages WHERE id = ?1",
			       -1, &st, NULL) != SQLITE_OK)
		goto rollback;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		*result_r = xasprintf("no such message in the queue: %s", id);
		goto rollback;
	}
	if (rc != SQLITE_ROW)
		goto rollback;
	sender = xstrdup((const char *)sqlite3_column_text(st, 0));
	const char *s = (const char *)sqlite3_column_text(st, 1);
	ret_ = s != NULL ? xstrdup(s) : NULL;
	s = (const char *)sqlite3_column_text(st, 2);
	envid = s != NULL ? xstrdup(s) : NULL;
	received = (time_t)sqlite3_column_int64(st, 3);
	sqlite3_finalize(st);
	st = NULL;

	if (sqlite3_prepare_v2(db,
			       "SELECT id, address, orcpt, notify, state, last_error FROM recipients"
			       " WHERE queue_id = ?1 AND state != 'delivered' ORDER BY idx, id",
			       -1, &st, NULL) != SQLITE_OK)
		goto rollback;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		int notify = sqlite3_column_int(st, 3);
		const char *state = (const char *)sqlite3_column_text(st, 4);
		const char *e = (const char *)sqlite3_column_text(st, 5);
		const char *o = (const char *)sqlite3_column_text(st, 2);
		n++;
		/* RFC 3461 4.1: NOTIFY without FAILURE (or NEVER) asks for no failure DSN */
		if (notify != 0 && !(notify & DSN_NOTIFY_FAILURE))
			continue;
		rows = xgrow(rows, &cap, nreported + 1, sizeof(*rows));
		rows[nreported++] = (struct dsn_row){
			.row = sqlite3_column_int64(st, 0),
			.address = xstrdup((const char *)sqlite3_column_text(st, 1)),
			.orcpt = o != NULL ? xstrdup(o) : NULL,
			.error = xstrdup(strcmp(state, "failed") == 0 && e != NULL
						 ? e
						 : ADMIN_BOUNCE_ERROR),
			.notify = notify,
		};
	}
	sqlite3_finalize(st);
	st = NULL;
	/* never bounce a bounce (RFC 5321 6.1) */
	if (nreported > 0 && sender[0] != '\0') {
		struct dsn_source src = {
			.spool_dir = ctx->spool_dir,
			.hostname = ctx->hostname,
			.queue_id = id,
			.sender = sender,
			.dsn_ret = ret_,
			.dsn_envid = envid,
			.received = received,
		};
		if (outbound_dsn_inject(db, &src, rows, nreported, false, dsn_id) < 0)
			goto rollback;
		dsn = true;
	}
	if (exec_id(db, sql_remove[0], id) < 0 || exec_id(db, sql_remove[1], id) < 0)
		goto rollback;
	if (queue_db_exec(db, "COMMIT") < 0)
		goto rollback;
	ret = 1;
	goto unlock;
rollback:
	sqlite3_finalize(st);
	st = NULL;
	queue_db_exec(db, "ROLLBACK");
	if (dsn) {
		unlink_spool(ctx, dsn_id);
		dsn = false;
	}
unlock:
	wunlock(ctx);
	if (ret == 1) {
		unlink_spool(ctx, id);
		char from[512];
		log_info("event=queue_admin_bounced queue_id=%s from=%s recipients=%zu dsn_id=%s", id,
			 log_quote(from, sizeof(from), sender, 256), n, dsn ? dsn_id : "none");
		if (dsn) {
			*result_r = xasprintf("returned %s to <%s>: %zu recipient(s), DSN %s", id,
					      sender, nreported, dsn_id);
			if (ctx->dsn_queued != NULL)
				ctx->dsn_queued(ctx->arg, dsn_id);
		} else {
			*result_r = xasprintf("removed %s without a DSN (%s)", id,
					      sender[0] == '\0' ? "null sender"
								: "no recipient asked for one");
		}
	} else if (*result_r == NULL) {
		*result_r = xasprintf("cannot bounce %s: %s", id, sqlite3_errmsg(db));
	}
	free(sender);
	free(ret_);
	free(envid);
	dsn_rows_free(rows, nreported);
	return ret;
}

/* The ids of every queued message received at or before `before` (0: all). */
static int all_ids(sqlite3 *db, time_t before, char (**ids_r)[QUEUE_ID_MAX], size_t *n_r)
{
	sqlite3_stmt *st = NULL;
	size_t n = 0, cap = 0;
	char(*ids)[QUEUE_ID_MAX] = NULL;
	if (sqlite3_prepare_v2(db,
			       "SELECT id FROM messages WHERE ?1 = 0 OR received <= ?1 ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(st, 1, (int64_t)before);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		ids = xgrow(ids, &cap, n + 1, sizeof(*ids));
		snprintf(ids[n++], QUEUE_ID_MAX, "%s", (const char *)sqlite3_column_text(st, 0));
	}
	sqlite3_finalize(st);
	*ids_r = ids;
	*n_r = n;
	return rc == SQLITE_DONE ? 0 : -1;
}

int queue_admin_apply(struct admin_ctx *ctx, int action, const char *id, int64_t *count_r,
		      char **result_r)
{
	sqlite3 *db = ctx->db;
	*result_r = NULL;
	if (id != NULL && !valid_id(id)) {
		*result_r = xasprintf("not a queue id: %s", id);
		return -1;
	}
	if (id == NULL && action != QUEUE_ADMIN_FLUSH && action != QUEUE_ADMIN_DELETE) {
		*result_r = xstrdup("this action needs a queue id");
		return -1;
	}
	bool held = false;
	if (id != NULL) {
		int e = message_exists(db, id, &held);
		if (e < 0) {
			*result_r = xasprintf("queue.db: %s", sqlite3_errmsg(db));
			return -1;
		}
		if (e == 0) {
			*result_r = xasprintf("no such message in the queue: %s", id);
			return -1;
		}
	}
	switch (action) {
	case QUEUE_ADMIN_HOLD:
		if (write_one(ctx, "UPDATE messages SET held = 1 WHERE id = ?1", id) < 0)
			break;
		log_info("event=queue_admin_held queue_id=%s", id);
		*result_r = xasprintf("held %s", id);
		return 1;
	case QUEUE_ADMIN_RELEASE: {
		wlock(ctx);
		bool ok = queue_db_exec(db, "BEGIN IMMEDIATE") == 0 &&
			  exec_id(db, "UPDATE messages SET held = 0 WHERE id = ?1", id) >= 0 &&
			  exec_id(db,
				  "UPDATE recipients SET next_attempt = 0 WHERE queue_id = ?1 AND"
				  " state = 'deferred'",
				  id) >= 0 &&
			  queue_db_exec(db, "COMMIT") == 0;
		if (!ok)
			queue_db_exec(db, "ROLLBACK");
		wunlock(ctx);
		if (!ok)
			break;
		if (ctx->flushed != NULL)
			ctx->flushed(ctx->arg);
		log_info("event=queue_admin_released queue_id=%s", id);
		*result_r = xasprintf("released %s%s", id, held ? "" : " (it was not on hold)");
		return 1;
	}
	case QUEUE_ADMIN_FLUSH: {
		if (id != NULL && held) {
			*result_r = xasprintf("%s is on hold: release it instead", id);
			return -1;
		}
		int64_t n = write_one(ctx,
				      "UPDATE recipients SET next_attempt = 0 WHERE state = 'deferred'"
				      " AND (?1 IS NULL OR queue_id = ?1) AND queue_id NOT IN (SELECT"
				      " id FROM messages WHERE held = 1)",
				      id);
		if (n < 0)
			break;
		if (ctx->flushed != NULL)
			ctx->flushed(ctx->arg);
		log_info("event=queue_admin_flushed queue_id=%s recipients=%lld",
			 id != NULL ? id : "all", (long long)n);
		*count_r += n;
		*result_r = xasprintf("%lld deferred recipient(s) due now", (long long)*count_r);
		return 1;
	}
	case QUEUE_ADMIN_DELETE: {
		char(*ids)[QUEUE_ID_MAX] = NULL;
		size_t n = 0;
		if (id != NULL) {
			ids = xcalloc(1, sizeof(*ids));
			snprintf(ids[0], QUEUE_ID_MAX, "%s", id);
			n = 1;
		} else if (all_ids(db, ctx->before, &ids, &n) < 0) {
			free(ids);
			break;
		}
		/* the busy ones are held and left for a later pass; the rest go now */
		size_t busy = 0, nfree = 0;
		for (size_t i = 0; i < n; i++) {
			if (busy_hold(ctx, ids[i]))
				busy++;
			else
				memmove(ids[nfree++], ids[i], QUEUE_ID_MAX);
		}
		int64_t deleted = delete_now(ctx, ids, nfree);
		free(ids);
		if (deleted < 0)
			break;
		*count_r += deleted;
		if (busy > 0)
			return 0;
		*result_r = xasprintf("deleted %lld message(s)", (long long)*count_r);
		return 1;
	}
	case QUEUE_ADMIN_BOUNCE:
		if (busy_hold(ctx, id))
			return 0;
		if (bounce_now(ctx, id, result_r) < 0)
			return -1;
		*count_r += 1;
		return 1;
	default:
		*result_r = xasprintf("unknown queue action %d", action);
		return -1;
	}
	free(*result_r);
	*result_r = xasprintf("queue.db: %s", sqlite3_errmsg(db));
	return -1;
}

/* ---- requests to the running server ---- */

struct request {
	int64_t id;
	int action;
	char *queue_id;
	time_t created;
	int64_t count;
	bool waited; /* an earlier pass found the message busy */
};

void queue_admin_process(struct admin_ctx *ctx)
{
	sqlite3 *db = ctx->db;
	sqlite3_stmt *st = NULL;
	struct request *reqs = NULL;
	size_t n = 0, cap = 0;
	if (sqlite3_prepare_v2(db,
			       "SELECT id, action, queue_id, created, count, result IS NOT NULL FROM"
			       " admin_requests WHERE done = 0 ORDER BY id LIMIT 100",
			       -1, &st, NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(st) == SQLITE_ROW) {
		reqs = xgrow(reqs, &cap, n + 1, sizeof(*reqs));
		const char *q = (const char *)sqlite3_column_text(st, 2);
		reqs[n++] = (struct request){
			.id = sqlite3_column_int64(st, 0),
			.action = sqlite3_column_int(st, 1),
			.queue_id = q != NULL ? xstrdup(q) : NULL,
			.created = (time_t)sqlite3_column_int64(st, 3),
			.count = sqlite3_column_int64(st, 4),
			.waited = sqlite3_column_int(st, 5) != 0,
		};
	}
	sqlite3_finalize(st);
	st = NULL;
	for (size_t i = 0; i < n; i++) {
		struct request *r = &reqs[i];
		char *result = NULL;
		ctx->before = r->created;
		int64_t count = r->count;
		int rc = queue_admin_apply(ctx, r->action, r->queue_id, &count, &result);
		if (rc < 0 && r->waited && r->queue_id != NULL && result != NULL &&
		    strncmp(result, "no such message", 15) == 0) {
			/* the attempt we waited for finished it: delivered, or bounced */
			free(result);
			result = xasprintf("%s left the queue during the delivery attempt that was in"
					   " progress (delivered or bounced; see the log)",
					   r->queue_id);
		}
		if (rc == 0 && result == NULL)
			result = xstrdup("waiting for the delivery attempt in progress");
		wlock(ctx);
		if (sqlite3_prepare_v2(db,
				       "UPDATE admin_requests SET done = ?2, count = ?3, result = ?4"
				       " WHERE id = ?1",
				       -1, &st, NULL) == SQLITE_OK) {
			sqlite3_bind_int64(st, 1, r->id);
			sqlite3_bind_int(st, 2, rc > 0 ? 1 : rc < 0 ? 2 : 0);
			sqlite3_bind_int64(st, 3, count);
			if (result != NULL)
				sqlite3_bind_text(st, 4, result, -1, SQLITE_STATIC);
			else
				sqlite3_bind_null(st, 4);
			if (!step_ok(st))
				log_error("event=queue_sql_failed error=\"%s\"", sqlite3_errmsg(db));
			sqlite3_finalize(st);
			st = NULL;
		}
		wunlock(ctx);
		if (rc == 0)
			log_debug("event=queue_admin_waiting request=%lld queue_id=%s reason=\"delivery"
				  " in progress\"",
				  (long long)r->id, r->queue_id != NULL ? r->queue_id : "all");
		free(result);
	}
	if (n > 0) {
		/* answers the CLI gave up waiting for */
		wlock(ctx);
		if (sqlite3_prepare_v2(db,
				       "DELETE FROM admin_requests WHERE done != 0 AND created < ?1", -1,
				       &st, NULL) == SQLITE_OK) {
			sqlite3_bind_int64(st, 1, (int64_t)time(NULL) - ADMIN_REQUEST_KEEP);
			step_ok(st);
			sqlite3_finalize(st);
		}
		wunlock(ctx);
	}
	for (size_t i = 0; i < n; i++)
		free(reqs[i].queue_id);
	free(reqs);
}

/* Done by the CLI itself: no server holds the queue (`lock_fd` is ours). */
static int apply_here(sqlite3 *db, const char *data_dir, const char *hostname, int action,
		      const char *id, int64_t count, char **result_r)
{
	char *spool = xasprintf("%s/spool", data_dir);
	struct admin_ctx ctx = {.db = db, .spool_dir = spool, .hostname = hostname};
	int rc = queue_admin_apply(&ctx, action, id, &count, result_r);
	free(spool);
	return rc;
}

static int open_db(const char *data_dir, sqlite3 **db_r, char **error_r)
{
	char *spool = xasprintf("%s/spool", data_dir);
	char *path = xasprintf("%s/queue.db", data_dir);
	*db_r = NULL;
	if (access(data_dir, F_OK) < 0 || (mkdir(spool, 0700) < 0 && errno != EEXIST))
		*error_r = xasprintf("%s: %s", errno == ENOENT ? data_dir : spool,
				     strerror(errno));
	else
		*db_r = queue_db_open(path, error_r);
	free(spool);
	free(path);
	return *db_r != NULL ? 0 : -1;
}

int queue_admin_request(const char *data_dir, const char *hostname, enum queue_admin_action action,
			const char *id, unsigned wait_ms, char **result_r)
{
	*result_r = NULL;
	if (id != NULL && !valid_id(id)) {
		*result_r = xasprintf("not a queue id: %s", id);
		return -1;
	}
	sqlite3 *db = NULL;
	int lock_fd = queue_lock_try(data_dir);
	if (lock_fd < 0 && errno != EWOULDBLOCK) {
		*result_r = xasprintf("%s/queue.lock: %s", data_dir, strerror(errno));
		return -1;
	}
	if (open_db(data_dir, &db, result_r) < 0) {
		if (lock_fd >= 0)
			close(lock_fd);
		return -1;
	}
	int rc = -1;
	if (lock_fd >= 0) {
		rc = apply_here(db, data_dir, hostname, (int)action, id, 0, result_r);
		goto out;
	}
	/* a server runs: leave it a request and wait for its answer */
	sqlite3_stmt *st = NULL;
	int64_t req = -1;
	if (queue_db_exec(db, "BEGIN IMMEDIATE") == 0 &&
	    sqlite3_prepare_v2(db,
			       "INSERT INTO admin_requests(action, queue_id, created) VALUES (?1, ?2,"
			       " ?3)",
			       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int(st, 1, (int)action);
		if (id != NULL)
			sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 2);
		sqlite3_bind_int64(st, 3, (int64_t)time(NULL));
		if (sqlite3_step(st) == SQLITE_DONE && queue_db_exec(db, "COMMIT") == 0)
			req = sqlite3_last_insert_rowid(db);
	}
	sqlite3_finalize(st);
	st = NULL;
	if (req < 0) {
		queue_db_exec(db, "ROLLBACK");
		*result_r = xasprintf("queue.db: %s", sqlite3_errmsg(db));
		goto out;
	}
	rc = 0;
	for (unsigned waited = 0;; waited += ADMIN_POLL_MS) {
		int done = -1;
		int64_t count = 0;
		if (sqlite3_prepare_v2(db, "SELECT done, result, count FROM admin_requests WHERE id = ?1",
				       -1, &st, NULL) == SQLITE_OK) {
			sqlite3_bind_int64(st, 1, req);
			if (sqlite3_step(st) == SQLITE_ROW) {
				done = sqlite3_column_int(st, 0);
				count = sqlite3_column_int64(st, 2);
				const char *t = (const char *)sqlite3_column_text(st, 1);
				if (done != 0)
					*result_r = xstrdup(t != NULL ? t : "done");
			}
			sqlite3_finalize(st);
			st = NULL;
		}
		if (done < 0) {
			*result_r = xstrdup("the request disappeared from queue.db");
			rc = -1;
			break;
		}
		if (done != 0) {
			rc = done == 1 ? 1 : -1;
			break;
		}
		/* the server stopped meanwhile: finish the request here */
		lock_fd = queue_lock_try(data_dir);
		if (lock_fd >= 0) {
			rc = apply_here(db, data_dir, hostname, (int)action, id, count, result_r);
			break;
		}
		if (waited >= wait_ms) {
			*result_r = xstrdup("not applied yet: a delivery attempt of the message is in"
					    " progress; the server applies the request when it ends");
			break;
		}
		usleep(ADMIN_POLL_MS * 1000);
	}
	/* an answered or locally applied request is not kept */
	if (rc != 0 && sqlite3_prepare_v2(db, "DELETE FROM admin_requests WHERE id = ?1", -1, &st,
					  NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, req);
		sqlite3_step(st);
		sqlite3_finalize(st);
	}
out:
	sqlite3_close_v2(db);
	if (lock_fd >= 0)
		close(lock_fd);
	return rc;
}

/* ---- list, show ---- */

static char *dup_col(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);
	return s != NULL ? xstrdup(s) : NULL;
}

int queue_info_list(const char *data_dir, const char *id, struct queue_info **list_r, size_t *n_r,
		    char **error_r)
{
	*list_r = NULL;
	*n_r = 0;
	if (id != NULL && !valid_id(id))
		return 0;
	char *path = xasprintf("%s/queue.db", data_dir);
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		free(path);
		return 0; /* no queue yet: nothing queued */
	}
	free(path);
	sqlite3 *db = NULL;
	if (open_db(data_dir, &db, error_r) < 0)
		return -1;
	struct queue_info *list = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *st = NULL, *rs = NULL;
	int ret = -1;
	/* one read transaction: a consistent picture while the server works */
	if (queue_db_exec(db, "BEGIN") < 0 ||
	    sqlite3_prepare_v2(db,
			       "SELECT id, sender, received, size, held, warned, protocol, client_ip,"
			       " auth_user FROM messages WHERE ?1 IS NULL OR id = ?1 ORDER BY"
			       " received, id",
			       -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
			       "SELECT address, orig_rcpt, state, external, attempts, next_attempt,"
			       " last_error FROM recipients WHERE queue_id = ?1 ORDER BY idx, id",
			       -1, &rs, NULL) != SQLITE_OK)
		goto out;
	if (id != NULL)
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		list = xgrow(list, &cap, n + 1, sizeof(*list));
		struct queue_info *m = &list[n++];
		memset(m, 0, sizeof(*m));
		snprintf(m->id, sizeof(m->id), "%s", (const char *)sqlite3_column_text(st, 0));
		m->sender = xstrdup((const char *)sqlite3_column_text(st, 1));
		m->received = sqlite3_column_int64(st, 2);
		m->size = (uint64_t)sqlite3_column_int64(st, 3);
		m->held = sqlite3_column_int(st, 4) != 0;
		m->warned = sqlite3_column_int(st, 5) != 0;
		m->protocol = dup_col(st, 6);
		m->client_ip = dup_col(st, 7);
		m->auth_user = dup_col(st, 8);
		size_t rcap = 0;
		sqlite3_reset(rs);
		sqlite3_bind_text(rs, 1, m->id, -1, SQLITE_TRANSIENT);
		while (sqlite3_step(rs) == SQLITE_ROW) {
			m->rcpts = xgrow(m->rcpts, &rcap, m->nrcpts + 1, sizeof(*m->rcpts));
			struct queue_info_rcpt *r = &m->rcpts[m->nrcpts++];
			r->address = dup_col(rs, 0);
			r->orig_rcpt = dup_col(rs, 1);
			r->state = dup_col(rs, 2);
			r->external = sqlite3_column_int(rs, 3) != 0;
			r->attempts = sqlite3_column_int(rs, 4);
			r->next_attempt = sqlite3_column_int64(rs, 5);
			r->last_error = dup_col(rs, 6);
		}
	}
	if (rc == SQLITE_DONE)
		ret = 0;
out:
	if (ret < 0)
		*error_r = xasprintf("queue.db: %s", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	sqlite3_finalize(rs);
	queue_db_exec(db, "COMMIT");
	sqlite3_close_v2(db);
	if (ret < 0) {
		queue_info_free(&list, n);
		n = 0;
	}
	*list_r = list;
	*n_r = n;
	return ret;
}

void queue_info_free(struct queue_info **list, size_t n)
{
	if (*list == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		struct queue_info *m = &(*list)[i];
		for (size_t k = 0; k < m->nrcpts; k++) {
			free(m->rcpts[k].address);
			free(m->rcpts[k].orig_rcpt);
			free(m->rcpts[k].state);
			free(m->rcpts[k].last_error);
		}
		free(m->rcpts);
		free(m->sender);
		free(m->protocol);
		free(m->client_ip);
		free(m->auth_user);
	}
	free(*list);
	*list = NULL;
}
