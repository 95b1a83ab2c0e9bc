/*
 * The queue: every accepted message is a spool file plus a row per
 * recipient in DATA_DIR/queue.db, made durable before the SMTP 250.
 *
 *   DATA_DIR/spool/QUEUEID      the message as received (with our Received
 *                               header on top), CRLF line endings
 *   queue.db: messages(id, sender, envelope, ...), recipients(queue id,
 *             address, state, attempts, next_attempt, last_error, DSN params)
 *
 * Commit is grouped: the commit thread takes every message waiting, writes
 * their spool files, fsyncs them and the spool directory side by side
 * (lib/fsync_pool) and writes all their rows in one SQLite transaction (one
 * WAL fsync), then answers them all. Local recipients are then delivered by
 * the delivery thread into their Maildirs, a batch at a time (maildir_write,
 * maildir_finish), and marked done; a crash between the two is detected on
 * restart with maildir_has(), so a message is never delivered twice. Recipients outside our domains wait in the queue (state
 * "deferred") for the outbound delivery agent.
 *
 * Threads: queue_commit() and queue_kick() are called on the event-loop
 * thread; done callbacks run there too. Everything that touches disk runs on
 * the queue's own threads.
 */
#ifndef POSTERN_QUEUE_H
#define POSTERN_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;

#define QUEUE_ID_MAX 24 /* including the NUL */

/* A fresh queue id, unique on this host (time-ordered base32, 16 chars). Thread-safe. */
void queue_id_new(char id[QUEUE_ID_MAX]);

/* ---- the message being received ---- */

/*
 * Message bytes as they arrive. Kept in memory up to a threshold (256 KiB),
 * then spilled to a temporary file in DATA_DIR/spool/tmp. spool_msg_write()
 * never blocks for long (page cache only; no fsync).
 */
struct spool_msg;

struct spool_msg *spool_msg_new(const char *data_dir, const char *queue_id);
/* 0 ok, -1 on write error (errno: ENOSPC...): the transaction must be refused with 452. */
int spool_msg_write(struct spool_msg *msg, const void *data, size_t len);
/*
 * Put header fields above everything written so far (trace and
 * authentication headers known only at the end of the message). Cheap in
 * memory; for a spilled message the file is rewritten once, on the commit
 * thread, when it is placed. spool_msg_size() includes them.
 */
void spool_msg_prepend(struct spool_msg *msg, const void *data, size_t len);
uint64_t spool_msg_size(const struct spool_msg *msg);
const char *spool_msg_id(const struct spool_msg *msg);
/* Discard (RSET, error, disconnect): removes any temporary file. */
void spool_msg_free(struct spool_msg **msg);

/* ---- the envelope ---- */

#define DSN_NOTIFY_NEVER 0x1
#define DSN_NOTIFY_SUCCESS 0x2
#define DSN_NOTIFY_FAILURE 0x4
#define DSN_NOTIFY_DELAY 0x8

struct envelope_rcpt {
	char *address;     /* as given in RCPT TO, without <> */
	unsigned notify;   /* DSN_NOTIFY_* bits; 0 = not given */
	char *orcpt;       /* ORCPT= value (xtext, as received) or NULL */
	bool local;        /* resolved to at least one local account at RCPT time */
};

struct envelope {
	char *sender;       /* MAIL FROM without <>, "" for the null sender */
	struct envelope_rcpt *rcpts;
	size_t nrcpts;
	char *dsn_ret;      /* "FULL", "HDRS" or NULL */
	char *dsn_envid;    /* ENVID= (xtext, as received) or NULL */
	bool smtputf8;
	bool eightbit;      /* BODY=8BITMIME (or BINARYMIME) */
	char *auth_user;    /* authenticated account, or NULL */
	char *client_ip;    /* numeric address, "local" for sendmail */
	char *client_helo;
	char *protocol;     /* "ESMTP", "ESMTPSA", ... as in Received */
};

void envelope_free_fields(struct envelope *env);

/* ---- the queue ---- */

struct queue;

/*
 * Open the queue for DATA_DIR (creating queue.db and spool/ if needed),
 * recover what a crash left behind (partial temporary files are removed,
 * committed messages resume delivery), and start the commit and delivery
 * threads, which report to `base`.
 */
struct queue *queue_open(struct event_base *base, const struct config *cfg, char **error_r);
/* Finish in-flight commits, stop the threads, close. */
void queue_close(struct queue **q);

/*
 * Make the message durable and queue it for delivery. `msg` is taken over
 * by the queue; so are the fields of `*env`, which is left zeroed (the
 * struct itself stays the caller's: embedded or freed by the caller). When the message is on stable storage (or could
 * not be stored), `done(arg, ok)` is called on the event-loop thread:
 * ok=true means the 250 may be sent; ok=false means nothing was kept and
 * the client must get a 4xx (451 4.3.0 or 452 4.3.1 on a full disk).
 */
typedef void queue_commit_done_fn(void *arg, bool ok, int error_number);
void queue_commit(struct queue *q, struct spool_msg *msg, struct envelope *env,
		  queue_commit_done_fn *done, void *arg);

/* Wake the delivery thread (and the outbound agent) now (e.g. after a CLI change). */
void queue_kick(struct queue *q);

/*
 * Start the outbound agent (outbound.c): worker threads that send the
 * recipients outside our domains to their MX hosts ([queue] and [dns]
 * settings of `cfg`), retry, and send DSNs. Stopped by queue_close().
 * 0, or -1 with *error_r.
 */
int queue_outbound_start(struct queue *q, const struct config *cfg, char **error_r);
void queue_outbound_stop(struct queue *q);
void queue_outbound_kick(struct queue *q);

/* ---- administration: `postern queue` ---- */

/*
 * DATA_DIR/queue.lock is flock'd by queue_open() for as long as the queue
 * is open, so the CLI can tell whether a server runs on DATA_DIR.
 * queue_lock_try(): an open descriptor holding the lock (no server runs:
 * keep it while changing the queue, then close it), or -1 with errno
 * EWOULDBLOCK when a server holds it, or another errno.
 */
int queue_lock_try(const char *data_dir);

enum queue_admin_action {
	QUEUE_ADMIN_HOLD = 1, /* no more delivery attempts until released */
	QUEUE_ADMIN_RELEASE,  /* undo hold, and try now */
	QUEUE_ADMIN_FLUSH,    /* deferred recipients are due now */
	QUEUE_ADMIN_DELETE,   /* removed without any notification */
	QUEUE_ADMIN_BOUNCE,   /* returned to the sender now, with a DSN (5.0.0) */
};

/*
 * Apply `action` to message `id` (NULL: every message, for FLUSH and
 * DELETE). Without a running server (queue_lock_try() succeeds) it is done
 * here and now; a DSN made by BOUNCE then waits in the queue for the next
 * start. With a running server, a request row goes into queue.db and the
 * server's outbound scheduler applies it within about a second, but only
 * once no delivery attempt of the message is in progress (the message is
 * held meanwhile): an attempt in progress is never cut off, so a message
 * is never sent twice and a DSN is never lost. Waits up to `wait_ms`.
 * Returns 1 when done (*result_r: what was done, one line), 0 when the
 * server has not applied it within wait_ms (it still will), -1 on error
 * (*result_r: the error). *result_r is allocated.
 */
int queue_admin_request(const char *data_dir, const char *hostname, enum queue_admin_action action,
			const char *id, unsigned wait_ms, char **result_r);

/* One recipient row, as `postern queue list/show` print it. */
struct queue_info_rcpt {
	char *address;
	char *orig_rcpt;  /* alias expansion: the RCPT it came from, or NULL */
	char *state;      /* queued, delivering, deferred, delivered, failed */
	bool external;    /* waits for the outbound agent */
	int attempts;
	int64_t next_attempt;
	char *last_error; /* or NULL */
};

struct queue_info {
	char id[QUEUE_ID_MAX];
	char *sender;
	int64_t received;
	uint64_t size;
	bool held, warned;
	char *protocol, *client_ip, *auth_user; /* or NULL */
	struct queue_info_rcpt *rcpts;
	size_t nrcpts;
};

/*
 * The messages in the queue (oldest first), or only message `id`, read
 * from DATA_DIR/queue.db (read-only; safe while the server runs). 0 (with
 * *n_r == 0 when `id` is not queued), or -1 with *error_r.
 */
int queue_info_list(const char *data_dir, const char *id, struct queue_info **list_r, size_t *n_r,
		    char **error_r);
void queue_info_free(struct queue_info **list, size_t n);

/* Counters since queue_open(), for tests, benchmarks and logs. Thread-safe. */
struct queue_stats {
	uint64_t committed;     /* messages made durable and acknowledged */
	uint64_t commit_failed; /* messages refused at commit (write, fsync, database) */
	uint64_t batches;       /* commit transactions (group commits) */
	uint64_t max_batch;     /* most messages in one commit transaction */
	uint64_t delivered;     /* copies delivered into Maildirs (one per account) */
	uint64_t deferred;      /* local deliveries postponed for a retry */
	uint64_t failed;        /* recipients marked failed */
	uint64_t pending;       /* committed messages waiting for the delivery thread */
};
void queue_get_stats(struct queue *q, struct queue_stats *stats_r);

#endif
