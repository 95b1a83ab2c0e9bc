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
