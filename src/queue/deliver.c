/*
 * The local delivery agent: the queue's delivery thread.
 *
 * It takes committed messages (and, every RETRY_SCAN_INTERVAL or on
 * queue_kick(), deferred local recipients that are due), resolves each
 * envelope recipient again with directory_resolve() (aliases may have
 * changed since RCPT), and writes one copy per account with
 * maildir_deliver(), named QUEUEID.ACCOUNTID so that after a crash
 * maildir_has() tells which copies exist. One message reaches an account
 * once, however many of its recipients lead there.
 *
 * Rounds are batched: for up to DELIVER_BATCH_MAX messages every copy is
 * written into its Maildir's tmp/, then all of them are made durable at
 * once (maildir_finish: files fsync'd side by side, renamed into new/, each
 * new/ fsync'd once), then one transaction records the outcome of the whole
 * batch, and one directory transaction the accounts' usage. Then spool
 * files of finished messages are removed. No transaction is open while
 * Maildirs are written (the commit thread is never blocked by them), and
 * rows are not marked 'delivering' first: a crash anywhere leaves rows
 * 'queued', and recovery treats every such row as maybe delivered, checking
 * maildir_has() before each copy, so nothing is delivered twice. A round
 * that fails to record its outcome is retried the same way by the next
 * periodic scan.
 *
 * External targets (alias targets outside our domains, relayed recipients)
 * get rows in state 'deferred' with last_error "awaiting outbound delivery":
 * they wait, with the spool file, for the outbound agent. They are never
 * dropped.
 */
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue-private.h"
#include "store/directory.h"
#include "store/mailbox.h"
#include "store/maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* What to write for one recipient row after this round. */
struct row_update {
	int64_t row;
	const char *state;
	char *error; /* last_error, or NULL */
	bool external;
	bool retry;   /* attempts++, next_attempt = now + backoff */
	int attempts; /* attempts before this one */
};

/* A new row for an external target found by alias expansion. */
struct row_insert {
	char queue_id[QUEUE_ID_MAX];
	int64_t idx;
	char *address;
	char *orig_rcpt;
	int notify;
	char *orcpt;
};

struct usage {
	int64_t account_id;
	int64_t delta;
};

struct rcpt_row {
	int64_t row;
	int64_t idx;
	char *address;
	int notify;
	char *orcpt;
	int attempts;
	bool fresh; /* never tried: no copy can exist yet (unless recovering) */
};

/* One copy for one account, written to tmp/ and waiting for maildir_finish(). */
struct copy {
	char id[QUEUE_ID_MAX];
	int64_t account_id;
	char *account; /* address, for logs */
	char *rcpt;    /* the recipient that led there, for logs */
	uint64_t quota, used;
};

/* A resolved recipient whose fate depends on copies still being made durable. */
struct pending_row {
	struct rcpt_row row; /* owns address and orcpt */
	char id[QUEUE_ID_MAX];
	time_t received;
	size_t *copies; /* indexes into round.copies */
	size_t ncopies, cap_copies;
	char **external; /* targets outside our domains, inserted when delivered */
	size_t nexternal;
	int error; /* a copy could not even be written */
};

struct round {
	struct row_update *updates;
	size_t nupdates, cap_updates;
	struct row_insert *inserts;
	size_t ninserts, cap_inserts;
	struct usage *usage;
	size_t nusage, cap_usage;
	/* copies of this round: mds[i] and copies[i]; [0, nfinished) went through maildir_finish() */
	struct maildir_delivery *mds;
	struct copy *copies;
	size_t ncopies, cap_mds, cap_copies, nfinished;
	struct pending_row *pending;
	size_t npending, cap_pending;
};

/* Copies written to tmp/ (each holding a descriptor) before they are flushed mid-round. */
#define COPIES_IN_FLIGHT_MAX 256

static void add_update(struct round *r, int64_t row, const char *state, const char *error,
		       bool external, bool retry, int attempts)
{
	r->updates = xgrow(r->updates, &r->cap_updates, r->nupdates + 1, sizeof(*r->updates));
	r->updates[r->nupdates++] = (struct row_update){
		.row = row,
		.state = state,
		.error = error != NULL ? xstrdup(error) : NULL,
		.external = external,
		.retry = retry,
		.attempts = attempts,
	};
}

static void add_usage(struct round *r, int64_t account_id, int64_t delta)
{
	for (size_t i = 0; i < r->nusage; i++)
		if (r->usage[i].account_id == account_id) {
			r->usage[i].delta += delta;
			return;
		}
	r->usage = xgrow(r->usage, &r->cap_usage, r->nusage + 1, sizeof(*r->usage));
	r->usage[r->nusage++] = (struct usage){account_id, delta};
}

static int64_t pending_usage(struct round *r, int64_t account_id)
{
	for (size_t i = 0; i < r->nusage; i++)
		if (r->usage[i].account_id == account_id)
			return r->usage[i].delta;
	return 0;
}

static void round_free(struct round *r)
{
	for (size_t i = 0; i < r->nupdates; i++)
		free(r->updates[i].error);
	for (size_t i = 0; i < r->ninserts; i++) {
		free(r->inserts[i].address);
		free(r->inserts[i].orig_rcpt);
		free(r->inserts[i].orcpt);
	}
	for (size_t i = 0; i < r->ncopies; i++) {
		maildir_delivery_clear(&r->mds[i]);
		free(r->copies[i].account);
		free(r->copies[i].rcpt);
	}
	for (size_t i = 0; i < r->npending; i++) {
		struct pending_row *p = &r->pending[i];
		free(p->row.address);
		free(p->row.orcpt);
		free(p->copies);
		for (size_t e = 0; e < p->nexternal; e++)
			free(p->external[e]);
		free(p->external);
	}
	free(r->updates);
	free(r->inserts);
	free(r->usage);
	free(r->mds);
	free(r->copies);
	free(r->pending);
	memset(r, 0, sizeof(*r));
}

/* A header value from the envelope: no CR, LF or other controls can get through. */
static char *header_safe(const char *s)
{
	char *o = xstrdup(s != NULL ? s : "");
	for (char *p = o; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return o;
}

static void load_rows(struct queue *q, const char *id, bool include_deferred,
		      struct rcpt_row **rows_r, size_t *n_r)
{
	sqlite3 *db = q->deliver_db;
	struct rcpt_row *rows = NULL;
	size_t n = 0, cap = 0;
	const char *sql = include_deferred
				  ? "SELECT id, idx, address, notify, orcpt, attempts FROM"
				    " recipients WHERE queue_id = ?1 AND external = 0 AND state IN"
				    " ('queued', 'delivering', 'deferred') ORDER BY idx, id"
				  : "SELECT id, idx, address, notify, orcpt, attempts FROM"
				    " recipients WHERE queue_id = ?1 AND external = 0 AND state IN"
				    " ('queued', 'delivering') ORDER BY idx, id";
	sqlite3_stmt *st = queue_stmt(db, q->deliver_st,
				      include_deferred ? QS_ROWS_DEFERRED : QS_ROWS, sql);
	if (st != NULL) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		while (sqlite3_step(st) == SQLITE_ROW) {
			rows = xgrow(rows, &cap, n + 1, sizeof(*rows));
			struct rcpt_row *r = &rows[n++];
			r->row = sqlite3_column_int64(st, 0);
			r->idx = sqlite3_column_int64(st, 1);
			r->address = xstrdup((const char *)sqlite3_column_text(st, 2));
			r->notify = sqlite3_column_int(st, 3);
			const char *o = (const char *)sqlite3_column_text(st, 4);
			r->orcpt = o != NULL ? xstrdup(o) : NULL;
			r->attempts = sqlite3_column_int(st, 5);
			r->fresh = r->attempts == 0;
		}
		sqlite3_reset(st);
	}
	*rows_r = rows;
	*n_r = n;
}

/* The session put "X-Postern-Quarantine:" first in the spool file (DMARC
   quarantine, src/smtp/auth_msg.c): only our own first line counts, a
   header of that name further down is the sender's and means nothing. */
#define QUARANTINE_MARK "X-Postern-Quarantine:"

/* The message to copy: in memory from the commit (src->mem), else the spool file (src->fd). */
struct source {
	const struct deliver_item *mem;
	int fd;
};

static bool spool_quarantined(const struct source *src)
{
	char b[sizeof(QUARANTINE_MARK) - 1];
	if (src->mem == NULL)
		return pread(src->fd, b, sizeof(b), 0) == (ssize_t)sizeof(b) &&
		       memcmp(b, QUARANTINE_MARK, sizeof(b)) == 0;
	const struct deliver_item *m = src->mem;
	size_t n = m->prefix_len < sizeof(b) ? m->prefix_len : sizeof(b);
	if (n > 0) /* no prefix: prefix may be NULL, which memcpy must not get even for 0 */
		memcpy(b, m->prefix, n);
	size_t more = m->body_len < sizeof(b) - n ? m->body_len : sizeof(b) - n;
	if (more > 0)
		memcpy(b + n, m->body, more);
	return n + more == sizeof(b) && memcmp(b, QUARANTINE_MARK, sizeof(b)) == 0;
}

static int write_copy(struct maildir_delivery *md, const char *maildir, const char *unique,
		      time_t received, const char *prefix, const struct source *src)
{
	if (src->mem == NULL)
		return maildir_write(md, maildir, unique, received, prefix, NULL, 0, src->fd);
	struct iovec iov[3] = {
	    {.iov_base = (void *)prefix, .iov_len = strlen(prefix)},
	    {.iov_base = src->mem->prefix, .iov_len = src->mem->prefix_len},
	    {.iov_base = src->mem->body, .iov_len = src->mem->body_len},
	};
	return maildir_writev(md, maildir, unique, received, iov, 3);
}

/*
 * Start the copy for one account: written into its Maildir's tmp/, made
 * durable later by finish_copies(). *copy_r gets the copy's index in the
 * round, or -1 when recovery found the copy already there. 0 / -1 errno.
 */
static int start_copy(struct round *rd, const char *id, time_t received, const char *prefix,
		      const struct source *src, const struct account *acct, const char *rcpt,
		      bool recheck, ssize_t *copy_r)
{
	char unique[QUEUE_ID_MAX + 24];
	snprintf(unique, sizeof(unique), "%s.%lld", id, (long long)acct->id);
	*copy_r = -1;
	char *junk = spool_quarantined(src) ? xasprintf("%s/.Junk", acct->maildir) : NULL;
	const char *maildir = junk != NULL ? junk : acct->maildir;
	if (recheck) {
		int h = maildir_has(maildir, unique);
		if (h < 0)
			return free(junk), -1;
		if (h == 1) {
			log_info("event=already_delivered queue_id=%s account=%s", id,
				 acct->address);
			return free(junk), 0;
		}
	}
	struct maildir_delivery md;
	int r = write_copy(&md, maildir, unique, received, prefix, src);
	if (r < 0 && errno == ENOENT) {
		/* the Maildir went missing (restored backup, manual cleanup): recreate it */
		maildir_delivery_clear(&md);
		if (maildir_create(maildir) == 0)
			r = write_copy(&md, maildir, unique, received, prefix, src);
		else
			md.error = ENOENT;
	}
	if (r < 0) {
		int e = md.error;
		maildir_delivery_clear(&md);
		errno = e;
		return free(junk), -1;
	}
	rd->mds = xgrow(rd->mds, &rd->cap_mds, rd->ncopies + 1, sizeof(*rd->mds));
	rd->copies = xgrow(rd->copies, &rd->cap_copies, rd->ncopies + 1, sizeof(*rd->copies));
	rd->mds[rd->ncopies] = md;
	struct copy *c = &rd->copies[rd->ncopies];
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->account_id = acct->id;
	c->account = xstrdup(acct->address);
	c->rcpt = xstrdup(rcpt);
	c->quota = acct->quota;
	c->used = acct->used;
	*copy_r = (ssize_t)rd->ncopies++;
	return free(junk), 0;
}

/* Make every copy written so far durable: files, then their new/ directories, side by side. */
static void finish_copies(struct round *rd)
{
	if (rd->nfinished == rd->ncopies)
		return;
	maildir_finish(&rd->mds[rd->nfinished], rd->ncopies - rd->nfinished);
	rd->nfinished = rd->ncopies;
}

static void note_outcome(struct queue *q, bool failed)
{
	pthread_mutex_lock(&q->lock);
	if (failed)
		q->stats.failed++;
	else
		q->stats.deferred++;
	pthread_mutex_unlock(&q->lock);
}

/* Defer a local recipient for a retry, or give up when it has waited too long. */
static void defer_row(struct queue *q, struct round *rd, const char *id, time_t received,
		      const struct rcpt_row *row, const char *error)
{
	char to[512];
	log_quote(to, sizeof(to), row->address, 256);
	if (time(NULL) - received > RETRY_GIVE_UP) {
		char *e = xasprintf("gave up after %d attempts: %s", row->attempts + 1, error);
		add_update(rd, row->row, "failed", e, false, true, row->attempts);
		log_error("event=delivery_failed queue_id=%s to=%s error=\"%s\"", id, to, e);
		free(e);
		note_outcome(q, true);
		return;
	}
	add_update(rd, row->row, "deferred", error, false, true, row->attempts);
	log_warn("event=delivery_deferred queue_id=%s to=%s error=\"%s\"", id, to, error);
	note_outcome(q, false);
}

static void deliver_message(struct queue *q, struct round *rd, const struct deliver_item *item,
			    bool include_deferred)
{
	const char *id = item->id;
	bool recovering = item->recovering;
	char *sender = NULL;
	time_t received = 0;
	sqlite3_stmt *st = queue_stmt(q->deliver_db, q->deliver_st, QS_MESSAGE,
				      "SELECT sender, received FROM messages WHERE id = ?1");
	int rc = SQLITE_ERROR;
	if (st != NULL) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW) {
			sender = header_safe((const char *)sqlite3_column_text(st, 0));
			received = (time_t)sqlite3_column_int64(st, 1);
		}
		rc = sqlite3_reset(st);
	}
	if (sender == NULL) {
		/* gone, or a database error: then the periodic scan retries it */
		if (rc != SQLITE_OK)
			q->deliver_retry_queued = true;
		return;
	}

	struct rcpt_row *rows;
	size_t nrows;
	load_rows(q, id, include_deferred, &rows, &nrows);
	if (nrows == 0) {
		free(sender);
		return;
	}

	/* the bytes: still in memory from the commit, else the spool file */
	struct source src = {.mem = item->in_memory ? item : NULL, .fd = -1};
	int open_errno = 0;
	if (src.mem == NULL) {
		char *path = xasprintf("%s/%s", q->spool_dir, id);
		src.fd = open(path, O_RDONLY | O_CLOEXEC);
		open_errno = errno;
		free(path);
	}
	bool have_src = src.mem != NULL || src.fd >= 0;
	struct directory *dir = have_src ? directory_thread(q->data_dir) : NULL;
	int64_t *done_ids = NULL; /* accounts this message reaches, and their copy (-1: there already) */
	ssize_t *done_copy = NULL;
	size_t ndone = 0, cap_done = 0, cap_done_copy = 0;

	for (size_t i = 0; i < nrows; i++) {
		struct rcpt_row *row = &rows[i];
		char to[512];
		log_quote(to, sizeof(to), row->address, 256);
		if (!have_src) {
			if (open_errno == ENOENT) {
				add_update(rd, row->row, "failed", "spool file missing", false,
					   false, row->attempts);
				log_error("event=delivery_failed queue_id=%s to=%s "
					  "error=\"spool file missing\"",
					  id, to);
				note_outcome(q, true);
			} else {
				defer_row(q, rd, id, received, row, strerror(open_errno));
			}
			continue;
		}
		if (dir == NULL) {
			defer_row(q, rd, id, received, row, "directory unavailable");
			continue;
		}
		struct resolved res;
		enum resolve_result rr = directory_resolve(dir, row->address, &res);
		switch (rr) {
		case RESOLVE_OK: {
			bool recheck = recovering || !row->fresh;
			char *rcpt = header_safe(row->address);
			char *prefix = xasprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n",
						 sender, rcpt);
			free(rcpt);
			rd->pending = xgrow(rd->pending, &rd->cap_pending, rd->npending + 1,
					    sizeof(*rd->pending));
			struct pending_row *pr = &rd->pending[rd->npending++];
			memset(pr, 0, sizeof(*pr));
			pr->row = *row;
			pr->row.address = xstrdup(row->address);
			pr->row.orcpt = row->orcpt != NULL ? xstrdup(row->orcpt) : NULL;
			snprintf(pr->id, sizeof(pr->id), "%s", id);
			pr->received = received;
			for (size_t a = 0; a < res.naccounts; a++) {
				struct account *acct = &res.accounts[a];
				ssize_t ci = -1;
				size_t k = 0;
				while (k < ndone && done_ids[k] != acct->id)
					k++;
				if (k < ndone) {
					/* an earlier recipient of this message leads there too */
					ci = done_copy[k];
				} else if (start_copy(rd, id, received, prefix, &src, acct,
						      row->address, recheck, &ci) < 0) {
					int err = errno != 0 ? errno : EIO;
					log_error("event=maildir_write_failed queue_id=%s account=%s "
						  "error=\"%s\"",
						  id, acct->address, strerror(err));
					pr->error = err;
					continue;
				} else {
					done_ids = xgrow(done_ids, &cap_done, ndone + 1,
							 sizeof(*done_ids));
					done_copy = xgrow(done_copy, &cap_done_copy, ndone + 1,
							  sizeof(*done_copy));
					done_copy[ndone] = ci;
					done_ids[ndone++] = acct->id;
				}
				if (ci >= 0) {
					pr->copies = xgrow(pr->copies, &pr->cap_copies,
							   pr->ncopies + 1, sizeof(*pr->copies));
					pr->copies[pr->ncopies++] = (size_t)ci;
				}
			}
			free(prefix);
			if (res.nexternal > 0) {
				pr->external = xcalloc(res.nexternal, sizeof(char *));
				for (size_t e = 0; e < res.nexternal; e++)
					pr->external[e] = xstrdup(res.external[e]);
				pr->nexternal = res.nexternal;
			}
			resolved_free(&res);
			if (rd->ncopies - rd->nfinished >= COPIES_IN_FLIGHT_MAX)
				finish_copies(rd);
			break;
		}
		case RESOLVE_NOT_LOCAL:
			/* a relayed recipient: the outbound agent takes it from here */
			add_update(rd, row->row, "deferred", AWAITING_OUTBOUND, true, false,
				   row->attempts);
			log_info("event=deferred queue_id=%s to=%s reason=\"%s\"", id, to,
				 AWAITING_OUTBOUND);
			break;
		case RESOLVE_UNKNOWN_USER:
			add_update(rd, row->row, "failed",
				   "5.1.1 recipient unknown at delivery time (the address or alias "
				   "was removed after the message was accepted)",
				   false, false, row->attempts);
			log_warn("event=delivery_failed queue_id=%s to=%s reason=unknown_recipient",
				 id, to);
			note_outcome(q, true);
			break;
		case RESOLVE_LOOP:
			add_update(rd, row->row, "failed",
				   "5.4.6 alias expansion loops or is too deep", false, false,
				   row->attempts);
			log_warn("event=delivery_failed queue_id=%s to=%s reason=alias_loop", id,
				 to);
			note_outcome(q, true);
			break;
		case RESOLVE_ERROR:
		default:
			defer_row(q, rd, id, received, row, "directory lookup failed");
			break;
		}
	}
	if (src.fd >= 0)
		close(src.fd);
	free(done_ids);
	free(done_copy);
	for (size_t i = 0; i < nrows; i++) {
		free(rows[i].address);
		free(rows[i].orcpt);
	}
	free(rows);
	free(sender);
}

/* A copy made durable: the account's usage, its IDLE sessions woken, the log line. */
static void copy_delivered(struct round *rd, const struct copy *c,
                           const struct maildir_delivery *md, bool direct)
{
	uint64_t used = c->used + (uint64_t)pending_usage(rd, c->account_id);
	if (c->quota != 0 && used + md->size > c->quota)
		log_warn("event=over_quota queue_id=%s account=%s quota=%llu used=%llu size=%llu",
		         c->id, c->account, (unsigned long long)c->quota, (unsigned long long)used,
		         (unsigned long long)md->size);
	add_usage(rd, c->account_id, (int64_t)md->size);
	/* wake IMAP IDLE sessions of the account's INBOX (md->newdir is MAILDIR/new) */
	char *root = xstrndup(md->newdir, strlen(md->newdir) - strlen("/new"));
	mbox_notify(root, "INBOX");
	free(root);
	char to[512];
	log_info("event=delivered queue_id=%s to=%s account=%s size=%llu%s", c->id,
	         log_quote(to, sizeof(to), c->rcpt, 256), c->account, (unsigned long long)md->size,
	         direct ? " direct=1" : "");
}

/*
 * After finish_copies(): log and count each copy, and settle each pending
 * recipient: delivered (with its external targets) only when every copy it
 * leads to is durable, else deferred (copies made are found by maildir_has()).
 */
static void settle_round(struct queue *q, struct round *rd)
{
	uint64_t ndelivered = 0;
	for (size_t i = 0; i < rd->ncopies; i++) {
		struct copy *c = &rd->copies[i];
		struct maildir_delivery *md = &rd->mds[i];
		if (md->error != 0) {
			log_error("event=maildir_write_failed queue_id=%s account=%s error=\"%s\"",
				  c->id, c->account, strerror(md->error));
			continue;
		}
		copy_delivered(rd, c, md, false);
		ndelivered++;
	}
	pthread_mutex_lock(&q->lock);
	q->stats.delivered += ndelivered;
	pthread_mutex_unlock(&q->lock);

	for (size_t i = 0; i < rd->npending; i++) {
		struct pending_row *pr = &rd->pending[i];
		int err = pr->error;
		for (size_t k = 0; k < pr->ncopies && err == 0; k++)
			err = rd->mds[pr->copies[k]].error;
		if (err != 0) {
			defer_row(q, rd, pr->id, pr->received, &pr->row, strerror(err));
			continue;
		}
		char to[512];
		log_quote(to, sizeof(to), pr->row.address, 256);
		for (size_t e = 0; e < pr->nexternal; e++) {
			rd->inserts = xgrow(rd->inserts, &rd->cap_inserts, rd->ninserts + 1,
					    sizeof(*rd->inserts));
			struct row_insert *ins = &rd->inserts[rd->ninserts++];
			snprintf(ins->queue_id, sizeof(ins->queue_id), "%s", pr->id);
			ins->idx = pr->row.idx;
			ins->address = xstrdup(pr->external[e]);
			ins->orig_rcpt = xstrdup(pr->row.address);
			ins->notify = pr->row.notify;
			ins->orcpt = pr->row.orcpt != NULL ? xstrdup(pr->row.orcpt) : NULL;
			char ext[512];
			log_info("event=deferred queue_id=%s to=%s orig_to=%s reason=\"%s\"", pr->id,
				 log_quote(ext, sizeof(ext), pr->external[e], 256), to,
				 AWAITING_OUTBOUND);
		}
		add_update(rd, pr->row.row, "delivered", NULL, false, false, pr->row.attempts);
	}
}

static int64_t backoff(int attempts)
{
	int64_t d = RETRY_MIN;
	for (int i = 0; i < attempts && d < RETRY_MAX; i++)
		d *= 2;
	return d < RETRY_MAX ? d : RETRY_MAX;
}

/* The round's usage counters in postern.db: one transaction. */
static void add_usage_counters(struct queue *q, struct round *rd)
{
	struct directory *dir = rd->nusage > 0 ? directory_thread(q->data_dir) : NULL;
	if (dir == NULL)
		return;
	int64_t *ids = xcalloc(rd->nusage, sizeof(*ids));
	int64_t *deltas = xcalloc(rd->nusage, sizeof(*deltas));
	for (size_t i = 0; i < rd->nusage; i++) {
		ids[i] = rd->usage[i].account_id;
		deltas[i] = rd->usage[i].delta;
	}
	if (directory_usage_add_many(dir, ids, deltas, rd->nusage) < 0)
		log_error("event=usage_update_failed accounts=%zu", rd->nusage);
	free(ids);
	free(deltas);
}

/* Write the round's outcome and finish messages with nothing left pending. */
static void apply_round(struct queue *q, struct round *rd, struct deliver_item *batch,
			size_t nbatch)
{
	sqlite3 *db = q->deliver_db;
	sqlite3_stmt *up = NULL, *ins = NULL, *pend = NULL, *del = NULL;
	char **finished = xcalloc(nbatch + 1, sizeof(char *));
	size_t nfinished = 0;
	time_t now = time(NULL);
	pthread_mutex_lock(&q->db_write_lock);
	if (queue_db_exec(db, "BEGIN IMMEDIATE") < 0) {
		pthread_mutex_unlock(&q->db_write_lock);
		goto fail;
	}
	if (sqlite3_prepare_v2(db,
			       "UPDATE recipients SET state = ?2, last_error = ?3, external = ?4,"
			       " attempts = attempts + ?5,"
			       " next_attempt = CASE WHEN ?5 THEN ?6 ELSE next_attempt END"
			       " WHERE id = ?1",
			       -1, &up, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
			       "INSERT INTO recipients(queue_id, idx, address, orig_rcpt, notify,"
			       " orcpt, local, external, state, last_error) VALUES"
			       " (?1, ?2, ?3, ?4, ?5, ?6, 0, 1, 'deferred', ?7)",
			       -1, &ins, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
			       "SELECT count(*), sum(state = 'failed') FROM recipients WHERE"
			       " queue_id = ?1 AND state IN ('queued', 'delivering', 'deferred',"
			       " 'failed')",
			       -1, &pend, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "DELETE FROM messages WHERE id = ?1", -1, &del, NULL) !=
		    SQLITE_OK)
		goto rollback;
	for (size_t i = 0; i < rd->nupdates; i++) {
		struct row_update *u = &rd->updates[i];
		sqlite3_reset(up);
		sqlite3_bind_int64(up, 1, u->row);
		sqlite3_bind_text(up, 2, u->state, -1, SQLITE_STATIC);
		if (u->error != NULL)
			sqlite3_bind_text(up, 3, u->error, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(up, 3);
		sqlite3_bind_int(up, 4, u->external);
		sqlite3_bind_int(up, 5, u->retry);
		sqlite3_bind_int64(up, 6, (int64_t)now + backoff(u->attempts));
		if (sqlite3_step(up) != SQLITE_DONE)
			goto rollback;
	}
	for (size_t i = 0; i < rd->ninserts; i++) {
		struct row_insert *r = &rd->inserts[i];
		sqlite3_reset(ins);
		sqlite3_bind_text(ins, 1, r->queue_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(ins, 2, r->idx);
		sqlite3_bind_text(ins, 3, r->address, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 4, r->orig_rcpt, -1, SQLITE_STATIC);
		sqlite3_bind_int(ins, 5, r->notify);
		if (r->orcpt != NULL)
			sqlite3_bind_text(ins, 6, r->orcpt, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(ins, 6);
		sqlite3_bind_text(ins, 7, AWAITING_OUTBOUND, -1, SQLITE_STATIC);
		if (sqlite3_step(ins) != SQLITE_DONE)
			goto rollback;
	}
	for (struct deliver_item *d = batch; d != NULL; d = d->next) {
		sqlite3_reset(pend);
		sqlite3_bind_text(pend, 1, d->id, -1, SQLITE_STATIC);
		if (sqlite3_step(pend) != SQLITE_ROW)
			goto rollback;
		int64_t open_or_failed = sqlite3_column_int64(pend, 0);
		int64_t failed = sqlite3_column_int64(pend, 1);
		if (open_or_failed - failed > 0)
			continue; /* still pending: the spool file stays */
		if (failed == 0) {
			/* everything delivered: nothing to keep */
			sqlite3_reset(del);
			sqlite3_bind_text(del, 1, d->id, -1, SQLITE_STATIC);
			if (sqlite3_step(del) != SQLITE_DONE)
				goto rollback;
		}
		/* failed rows stay in queue.db with last_error for the bounce generator */
		finished[nfinished++] = xstrdup(d->id);
	}
	if (queue_db_exec(db, "COMMIT") < 0)
		goto rollback;
	pthread_mutex_unlock(&q->db_write_lock);
	for (size_t i = 0; i < nfinished; i++) {
		char *p = xasprintf("%s/%s", q->spool_dir, finished[i]);
		if (unlink(p) < 0 && errno != ENOENT)
			log_error("event=spool_unlink_failed queue_id=%s error=\"%s\"", finished[i],
				  strerror(errno));
		free(p);
	}
	add_usage_counters(q, rd);
	goto out;
rollback:
	log_error("event=queue_update_failed error=\"%s\"", sqlite3_errmsg(db));
	queue_db_exec(db, "ROLLBACK");
	pthread_mutex_unlock(&q->db_write_lock);
fail:
	/* the rows stay queued; the next retry scan redelivers them with maildir_has() */
	log_error("event=delivery_round_failed messages=%zu", nbatch);
	q->deliver_retry_queued = true;
out:
	sqlite3_finalize(up);
	sqlite3_finalize(ins);
	sqlite3_finalize(pend);
	sqlite3_finalize(del);
	for (size_t i = 0; i < nfinished; i++)
		free(finished[i]);
	free(finished);
}

static void run_batch(struct queue *q, struct deliver_item *batch, bool include_deferred)
{
	size_t n = 0;
	for (struct deliver_item *d = batch; d != NULL; d = d->next)
		n++;
	struct round rd = {0};
	/*
	 * One read transaction for the round's lookups in queue.db: each
	 * statement on its own took and released a WAL read lock (fcntl()s on
	 * the -shm file) and rechecked the WAL. It ends before the round's
	 * write transaction; without it the statements simply run on their own.
	 */
	bool reading = queue_stmt_exec(q->deliver_db, q->deliver_st, QS_BEGIN, "BEGIN") == 0;
	/* and in postern.db for the recipients' lookups */
	struct directory *dir = directory_thread(q->data_dir);
	bool dir_reading = dir != NULL && directory_read_begin(dir) == 0;
	for (struct deliver_item *d = batch; d != NULL; d = d->next) {
		deliver_message(q, &rd, d, include_deferred);
	}
	if (dir_reading)
		directory_read_end(dir);
	if (reading && queue_stmt_exec(q->deliver_db, q->deliver_st, QS_COMMIT, "COMMIT") < 0)
		queue_db_exec(q->deliver_db, "ROLLBACK");
	/* every copy durable (file and new/ entry) before any row says delivered */
	finish_copies(&rd);
	settle_round(q, &rd);
	apply_round(q, &rd, batch, n);
	round_free(&rd);
}

/*
 * Messages with local rows to (re)try: deferred and due, or left 'delivering'
 * by an older version; with `queued`, also rows still 'queued' (after a
 * failed round; a message the delivery thread has not reached yet may come
 * twice, which only costs a maildir_has() check).
 */
static struct deliver_item *due_messages(struct queue *q, bool all_deferred, bool queued)
{
	sqlite3_stmt *st = NULL;
	struct deliver_item *head = NULL, *tail = NULL;
	const char *sql = "SELECT DISTINCT queue_id FROM recipients WHERE external = 0 AND"
			  " ((state = 'deferred' AND (?1 OR next_attempt <= ?2))"
			  " OR state = 'delivering' OR (?3 AND state = 'queued'))"
			  " ORDER BY queue_id LIMIT 1000";
	if (sqlite3_prepare_v2(q->deliver_db, sql, -1, &st, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_int(st, 3, queued);
	sqlite3_bind_int(st, 1, all_deferred);
	sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct deliver_item *d = xcalloc(1, sizeof(*d));
		snprintf(d->id, sizeof(d->id), "%s", (const char *)sqlite3_column_text(st, 0));
		d->recovering = true;
		if (tail != NULL)
			tail->next = d;
		else
			head = d;
		tail = d;
	}
	sqlite3_finalize(st);
	return head;
}

void *queue_deliver_main(void *arg)
{
	struct queue *q = arg;
	time_t next_scan = 0; /* scan once at start */
	pthread_mutex_lock(&q->lock);
	while (!q->stopping) {
		time_t now = time(NULL);
		if (q->dl_head == NULL && !q->kicked && now < next_scan) {
			struct timespec until = {.tv_sec = next_scan, .tv_nsec = 0};
			pthread_cond_timedwait(&q->deliver_cond, &q->lock, &until);
			continue;
		}
		/* take up to DELIVER_BATCH_MAX committed messages */
		struct deliver_item *batch = q->dl_head, *last = NULL;
		size_t n = 0;
		for (struct deliver_item *d = q->dl_head; d != NULL && n < DELIVER_BATCH_MAX;
		     d = d->next) {
			last = d;
			n++;
		}
		if (last != NULL) {
			q->dl_head = last->next;
			if (q->dl_head == NULL)
				q->dl_tail = NULL;
			last->next = NULL;
		}
		bool kicked = q->kicked;
		q->kicked = false;
		pthread_mutex_unlock(&q->lock);

		if (batch != NULL)
			run_batch(q, batch, false);
		queue_deliver_items_free(q, batch);
		if (kicked || now >= next_scan) {
			bool queued = q->deliver_retry_queued;
			q->deliver_retry_queued = false;
			struct deliver_item *due = due_messages(q, kicked, queued);
			while (due != NULL) {
				/* in chunks, so each transaction stays small */
				struct deliver_item *chunk = due, *p = due;
				for (int i = 1; i < DELIVER_BATCH_MAX && p->next != NULL; i++)
					p = p->next;
				due = p->next;
				p->next = NULL;
				run_batch(q, chunk, true);
				queue_deliver_items_free(q, chunk);
			}
			next_scan = time(NULL) + RETRY_SCAN_INTERVAL;
		}

		pthread_mutex_lock(&q->lock);
		q->stats.pending -= n;
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/*
 * ---- direct delivery, on the commit thread ----
 *
 * A message whose recipients are all local accounts does not need the
 * queue: writing it into the Maildirs and making those copies durable
 * before the 250 is as safe as making a spool file and its rows durable,
 * and saves the spool file (create, fsync, unlink), three queue.db
 * transactions and the hand-off to the delivery thread. A crash before the
 * 250 may leave copies in new/ of a message never acknowledged; the client
 * sends it again, which is the same as a crash after the spool file was
 * durable but before the 250 (RFC 1047). A crash after the 250 loses
 * nothing: every copy was durable before it.
 */
struct direct_round {
	struct round rd;
	bool *done; /* per copy: durable, and its message answered 250 */
};

static bool direct_eligible(const struct commit_item *it)
{
	const struct spool_msg *m = it->msg;
	if (it->env == NULL || it->env->nrcpts == 0 || m == NULL || m->error != 0 || m->fd >= 0 ||
	    m->buf == NULL || m->size < m->prefix_len)
		return false;
	for (size_t i = 0; i < it->env->nrcpts; i++)
		if (!it->env->rcpts[i].local)
			return false;
	return true;
}

static void drop_copies(struct round *rd, size_t first)
{
	for (size_t k = first; k < rd->ncopies; k++) {
		maildir_delivery_clear(&rd->mds[k]); /* removes the tmp/ file */
		free(rd->copies[k].account);
		free(rd->copies[k].rcpt);
	}
	rd->ncopies = first;
}

/*
 * Write the copies of one message into tmp/ (one per account, however many
 * recipients lead there). False, with nothing left behind, when the message
 * must take the queue: a recipient that no longer resolves to local
 * accounts only (unknown now, external alias targets, a lookup error), or
 * a copy that could not be written (the queue defers and retries it).
 */
static bool direct_start(struct round *rd, struct directory *dir, struct commit_item *it,
			 time_t now)
{
	const struct envelope *env = it->env;
	struct spool_msg *m = it->msg;
	struct deliver_item view = {
	    .in_memory = true,
	    .prefix = m->prefix,
	    .prefix_len = m->prefix_len,
	    .body = m->buf,
	    .body_len = (size_t)(m->size - m->prefix_len),
	};
	struct source src = {.mem = &view, .fd = -1};
	char *sender = header_safe(env->sender);
	size_t first = rd->ncopies;
	bool ok = true;
	for (size_t i = 0; i < env->nrcpts && ok; i++) {
		const char *addr = env->rcpts[i].address;
		struct resolved res;
		if (directory_resolve(dir, addr, &res) != RESOLVE_OK) {
			ok = false;
			break;
		}
		if (res.naccounts == 0 || res.nexternal > 0) {
			resolved_free(&res);
			ok = false;
			break;
		}
		char *rcpt = header_safe(addr);
		char *prefix = xasprintf("Return-Path: <%s>\r\nDelivered-To: %s\r\n", sender, rcpt);
		free(rcpt);
		for (size_t a = 0; a < res.naccounts && ok; a++) {
			const struct account *acct = &res.accounts[a];
			size_t k = first;
			while (k < rd->ncopies && rd->copies[k].account_id != acct->id)
				k++;
			if (k < rd->ncopies)
				continue; /* an earlier recipient of this message leads there too */
			ssize_t ci;
			if (start_copy(rd, m->id, now, prefix, &src, acct, addr, false, &ci) < 0) {
				log_warn("event=maildir_write_failed queue_id=%s account=%s "
					 "error=\"%s\" next=queue",
					 m->id, acct->address, strerror(errno));
				ok = false;
			}
		}
		free(prefix);
		resolved_free(&res);
	}
	free(sender);
	if (!ok) {
		drop_copies(rd, first);
		return false;
	}
	it->copy_first = first;
	it->ncopies = rd->ncopies - first;
	return true;
}

struct direct_round *queue_direct_deliver(struct queue *q, struct commit_item *batch, time_t now)
{
	struct direct_round *dr = NULL;
	struct directory *dir = NULL;
	bool reading = false;
	for (struct commit_item *it = batch; it != NULL; it = it->next) {
		it->direct = false;
		if (!direct_eligible(it))
			continue;
		if (dir == NULL) {
			if ((dir = directory_thread(q->data_dir)) == NULL)
				break;
			/* one read lock for the batch's lookups, not one per statement */
			reading = directory_read_begin(dir) == 0;
		}
		if (dr == NULL)
			dr = xcalloc(1, sizeof(*dr));
		it->direct = direct_start(&dr->rd, dir, it, now);
	}
	if (reading)
		directory_read_end(dir);
	if (dr == NULL)
		return NULL;
	struct round *rd = &dr->rd;
	/* every copy durable (file, then its new/ entry) before any 250 */
	finish_copies(rd);
	dr->done = xcalloc(rd->ncopies + 1, sizeof(*dr->done));
	for (struct commit_item *it = batch; it != NULL; it = it->next) {
		if (!it->direct)
			continue;
		size_t nok = 0;
		for (size_t k = it->copy_first; k < it->copy_first + it->ncopies; k++)
			if (rd->mds[k].error == 0)
				nok++;
		if (nok == it->ncopies) {
			for (size_t k = it->copy_first; k < it->copy_first + it->ncopies; k++)
				dr->done[k] = true;
			continue;
		}
		/* to the queue, which skips the copies that were made (maildir_has) */
		for (size_t k = it->copy_first; k < it->copy_first + it->ncopies; k++)
			if (rd->mds[k].error != 0)
				log_warn("event=maildir_write_failed queue_id=%s account=%s "
					 "error=\"%s\" next=queue",
					 it->msg->id, rd->copies[k].account,
					 strerror(rd->mds[k].error));
		it->direct = false;
		it->recovering = nok > 0;
	}
	return dr;
}

void queue_direct_settle(struct queue *q, struct direct_round *dr)
{
	if (dr == NULL)
		return;
	struct round *rd = &dr->rd;
	uint64_t ndelivered = 0;
	for (size_t k = 0; k < rd->ncopies; k++) {
		if (!dr->done[k])
			continue;
		copy_delivered(rd, &rd->copies[k], &rd->mds[k], true);
		ndelivered++;
	}
	pthread_mutex_lock(&q->lock);
	q->stats.delivered += ndelivered;
	pthread_mutex_unlock(&q->lock);
	add_usage_counters(q, rd);
	round_free(rd);
	free(dr->done);
	free(dr);
}
