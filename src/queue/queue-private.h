/* Internals shared by the files of src/queue (not an interface for other layers). */
#ifndef POSTERN_QUEUE_PRIVATE_H
#define POSTERN_QUEUE_PRIVATE_H

#include "queue/queue.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <time.h>

/* Message bytes kept in memory up to this size, then spilled to spool/tmp. */
#define SPOOL_MEM_MAX (256 * 1024)
/* Messages taken by the delivery thread per database round. */
#define DELIVER_BATCH_MAX 64
/* Deferred local deliveries: first retry after this, doubling, capped. */
#define RETRY_MIN 60
#define RETRY_MAX 3600
/* Local deliveries still failing after this long are marked failed. */
#define RETRY_GIVE_UP (5 * 86400)
/* How often the delivery thread looks for deferred local rows that are due. */
#define RETRY_SCAN_INTERVAL 30

#define AWAITING_OUTBOUND "awaiting outbound delivery"

struct spool_msg {
	char *data_dir;
	char id[QUEUE_ID_MAX];
	char *buf; /* in memory while size <= SPOOL_MEM_MAX */
	size_t cap;
	int fd;         /* spilled: open on tmp_path */
	char *tmp_path; /* DATA_DIR/spool/tmp/ID once spilled */
	uint64_t size;
	int error; /* sticky errno of a failed write */
	char *prefix; /* spool_msg_prepend(): written before the rest at placing */
	size_t prefix_len;
};

struct commit_item {
	struct commit_item *next;
	struct spool_msg *msg;
	struct envelope *env;
	queue_commit_done_fn *done;
	void *arg;
	bool ok;
	int error;
	int fd; /* the spool file between writing and flushing */
	bool undo; /* its rows were committed but its spool file is not durable */
	/*
	 * Delivered straight into its Maildir(s) by the commit thread
	 * (queue_direct_deliver): no spool file, no rows. Its copies are
	 * [copy_first, copy_first + ncopies) of the direct round.
	 */
	bool direct;
	size_t copy_first, ncopies;
	/* some copies may exist already (a direct delivery that failed half-way) */
	bool recovering;
};

struct deliver_item {
	struct deliver_item *next;
	char id[QUEUE_ID_MAX];
	bool recovering; /* a crash or failure may have delivered some copies already */
	/*
	 * The spool file's bytes, still in memory from the commit (prefix, then
	 * body), so that delivery need not read the file back; else in_memory
	 * is false and delivery reads spool/ID.
	 */
	bool in_memory;
	char *prefix, *body;
	size_t prefix_len, body_len;
};

/* Bytes of message bodies the delivery queue may hold in memory (beyond: read from spool/) */
#define DELIVER_MEM_MAX (32 * 1024 * 1024)

/* Statements each queue thread keeps prepared (queue_stmt()), one set per connection. */
enum queue_stmt_slot {
	QS_BEGIN,
	QS_COMMIT,
	QS_SAVEPOINT,
	QS_RELEASE,
	QS_ROLLBACK_TO,
	QS_INSERT_MESSAGE,
	QS_INSERT_RCPT,
	QS_MESSAGE,
	QS_ROWS,
	QS_ROWS_DEFERRED,
	QS_MAX
};

struct queue {
	char *data_dir;
	char *spool_dir; /* DATA_DIR/spool */
	char *spool_tmp; /* DATA_DIR/spool/tmp */
	char *db_path;   /* DATA_DIR/queue.db */
	struct event_base *base;
	int efd;
	struct event *ev;

	pthread_mutex_t lock;
	/* held around every write transaction on queue.db by the queue's threads */
	pthread_mutex_t db_write_lock;
	pthread_cond_t commit_cond, deliver_cond;
	struct commit_item *wait_head, *wait_tail; /* waiting for the commit thread */
	struct commit_item *done_head, *done_tail; /* waiting for the event loop */
	struct deliver_item *dl_head, *dl_tail;    /* committed, waiting for delivery */
	size_t dl_mem; /* bytes held by deliver_items in memory (DELIVER_MEM_MAX) */
	bool stopping, kicked;
	bool deliver_retry_queued; /* delivery thread only: a round failed, rescan 'queued' rows */
	struct queue_stats stats;

	struct outbound *outbound; /* outbound.c, when started */

	int lock_fd; /* DATA_DIR/queue.lock, flock'd while the queue is open */

	pthread_t commit_thread, deliver_thread;
	bool threads_started;
	sqlite3 *commit_db, *deliver_db;
	/* prepared once, owned by the thread of the connection */
	sqlite3_stmt *commit_st[QS_MAX], *deliver_st[QS_MAX];
};

/* spool.c */
/*
 * Storing a batch of spool files, in phases: spool_msg_place() writes
 * DATA_DIR/spool/ID (or renames the spilled file there) without any fsync
 * and returns a descriptor to flush (-1 errno on failure); the caller
 * flushes them all at once (fsync_all) and then calls spool_msg_placed()
 * with that flush's result, which closes the descriptor and, on failure,
 * removes the file. 0 / -1 errno.
 */
int spool_msg_place(struct spool_msg *msg, const char *spool_dir);
int spool_msg_placed(struct spool_msg *msg, int fd, int sync_error);

/* queue.c */
int queue_db_exec(sqlite3 *db, const char *sql);
/*
 * cache[slot], prepared from sql at the first call (persistent), reset and
 * unbound at the next ones; NULL if it cannot be prepared. Reset it after
 * use (a SELECT left unreset keeps its read transaction), never finalize it.
 */
sqlite3_stmt *queue_stmt(sqlite3 *db, sqlite3_stmt **cache, enum queue_stmt_slot slot,
			 const char *sql);
/* Step a cached statement without rows (BEGIN, SAVEPOINT...). 0 / -1 (logged). */
int queue_stmt_exec(sqlite3 *db, sqlite3_stmt **cache, enum queue_stmt_slot slot,
		    const char *sql);
sqlite3 *queue_db_open(const char *path, char **error_r);
void queue_deliver_push(struct queue *q, const char *id, bool recovering);
/* Free a list of deliver_items (and the memory they hold). */
void queue_deliver_items_free(struct queue *q, struct deliver_item *d);
int fsync_path(const char *path);

/* queue_admin.c */
/*
 * Where `postern queue` changes are applied: by the CLI itself when no
 * server holds DATA_DIR/queue.lock (busy, dsn_queued and flushed NULL), or
 * by the outbound scheduler thread of the running server.
 */
struct admin_ctx {
	sqlite3 *db;
	const char *spool_dir;
	const char *hostname;
	pthread_mutex_t *write_lock; /* held around write transactions, or NULL */
	/* true while a delivery attempt of the message is in progress */
	bool (*busy)(void *arg, const char *queue_id);
	/* a DSN was queued (after COMMIT): hand it to the delivery thread */
	void (*dsn_queued)(void *arg, const char *dsn_id);
	/* deferred rows were made due: wake the delivery agents */
	void (*flushed)(void *arg);
	void *arg;
	time_t before; /* "--all": only messages received at or before this time (0: any) */
};

/*
 * Apply one action (QUEUE_ADMIN_*) to message `id`, or to every message
 * when `id` is NULL (flush, delete). 1 done with *result_r (a line of
 * text) or 0 when a message is busy (it is held meanwhile, and the caller
 * retries later; *count_r how many were done so far is still valid), -1
 * with *result_r the error.
 */
int queue_admin_apply(struct admin_ctx *ctx, int action, const char *id, int64_t *count_r,
		      char **result_r);
/* In the server: apply the pending requests that the CLI wrote to queue.db. */
void queue_admin_process(struct admin_ctx *ctx);

/* deliver.c */
void *queue_deliver_main(void *arg);
/*
 * On the commit thread, before the batch's spool files are written: every
 * message of `batch` whose recipients all resolve to local accounts only
 * (no external alias targets), held in memory, is written into those
 * Maildirs and made durable there (file, then new/) and gets it->direct;
 * no spool file or queue.db row is ever made for it. A message that
 * cannot go this way, or whose copies could not all be made durable,
 * keeps it->direct false and takes the queue (with it->recovering when
 * some of its copies are already in place: delivery skips them). Returns
 * the round to pass to queue_direct_settle() once the batch is answered,
 * or NULL.
 */
struct direct_round;
struct direct_round *queue_direct_deliver(struct queue *q, struct commit_item *batch,
					  time_t now);
/*
 * After the batch was handed to the loop (the round no longer looks at
 * it): log the durable copies, wake IMAP IDLE, count usage in postern.db.
 * Frees the round.
 */
void queue_direct_settle(struct queue *q, struct direct_round *dr);

#endif
