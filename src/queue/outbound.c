/*
 * The outbound agent: sends queued mail for recipients outside our domains
 * to their MX hosts, records the outcome per recipient, retries on a
 * backoff schedule and sends delivery status notifications (bounce.c).
 *
 * Threads: one scheduler thread and [queue] max_connections worker threads.
 * The scheduler looks, every second or on queue_kick(), for external
 * recipient rows that are due (state 'deferred', external = 1,
 * next_attempt <= now), groups them by destination domain into jobs
 * (at most [queue] max_per_domain jobs per domain at once) and hands the
 * jobs to idle workers. A worker resolves the domain (MX, then the
 * addresses of each host, through its own dns_sync), and talks SMTP to
 * the hosts in turn with blocking sockets bounded by connect_timeout and
 * command_timeout (smtp_client.c); one connection carries every message of
 * the job. Nothing here runs on the event-loop thread.
 *
 * Durability: rows are never marked 'delivering'; a recipient becomes
 * 'delivered' in a transaction committed right after the remote server's
 * 250 to the end of DATA. A crash between that 250 and the commit sends the
 * message again at the next attempt: this is the one duplicate window (RFC
 * 1047), as in every MTA. A failed recipient's DSN is written to the spool
 * and fsync'd before the transaction that inserts it and deletes the failed
 * rows, so a crash leaves either the failed rows (and the DSN is made
 * again) or the DSN queued.
 *
 * Trust: replies of remote servers are untrusted and bounded (smtp_client);
 * they reach logs through log_quote() and DSNs with controls removed.
 */
#include "dns/dns.h"
#include "lib/config.h"
#include "lib/fsync_pool.h"
#include "lib/log.h"
#include "lib/netaddr.h"
#include "lib/xalloc.h"
#include "queue/outbound.h"
#include "queue/queue-private.h"
#include "queue/smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <idn2.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

/* Rows taken per scan, messages per job (one connection), DNS deadline. */
#define OB_SCAN_MAX 1000
#define OB_JOB_MSGS_MAX 50
#define OB_DNS_TIMEOUT_MS 5000
#define OB_ADDRS_MAX 8           /* addresses tried per MX host */
#define OB_HOSTS_MAX 10          /* MX hosts tried per attempt */
#define OB_BOUNCE_RETURN_MAX (1024 * 1024)

/* ---- pure helpers (unit-tested) ---- */

uint64_t outbound_backoff(unsigned attempts, uint64_t retry_min, uint64_t retry_max, uint32_t rnd)
{
	if (retry_max < retry_min)
		retry_max = retry_min;
	uint64_t d = retry_min;
	for (unsigned i = 0; i < attempts && d < retry_max; i++)
		d *= 2;
	if (d > retry_max)
		d = retry_max;
	uint64_t jitter = (d / 5) * (uint64_t)rnd >> 32;
	d -= jitter;
	return d < retry_min ? retry_min : d;
}

enum outbound_route outbound_route(const struct dns_result *mx, const char *domain,
				   char ***hosts_r, size_t *nhosts_r, const char **error_r)
{
	*hosts_r = NULL;
	*nhosts_r = 0;
	*error_r = NULL;
	switch (mx->status) {
	case DNS_NXDOMAIN:
		*error_r = "5.1.2 the recipient's domain does not exist";
		return ROUTE_PERM;
	case DNS_SERVFAIL:
	case DNS_TIMEOUT:
		*error_r = "4.4.3 temporary DNS failure looking up the MX of the recipient's domain";
		return ROUTE_TEMP;
	case DNS_NOERROR:
		break;
	}
	if (mx->null_mx) {
		*error_r = "5.1.10 the recipient's domain does not accept mail (null MX, RFC 7505)";
		return ROUTE_PERM;
	}
	size_t n = 0;
	char **hosts = xcalloc(mx->count + 1, sizeof(char *));
	for (size_t i = 0; i < mx->count && n < OB_HOSTS_MAX; i++) {
		if (mx->rrs[i].type != DNS_T_MX || strcmp(mx->rrs[i].u.mx.host, ".") == 0)
			continue;
		hosts[n++] = xstrdup(mx->rrs[i].u.mx.host);
	}
	if (n == 0)
		hosts[n++] = xstrdup(domain); /* RFC 5321 5.1: the implicit MX */
	*hosts_r = hosts;
	*nhosts_r = n;
	return ROUTE_OK;
}

void outbound_hosts_free(char ***hosts, size_t n)
{
	if (*hosts == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free((*hosts)[i]);
	free(*hosts);
	*hosts = NULL;
}

void outbound_status(int code, const char *text, char status[16])
{
	const char *p = text;
	if (strlen(p) > 4 && p[0] >= '2' && p[0] <= '5' && p[3] == ' ')
		p += 4;
	/* enhanced status code: class.subject.detail (RFC 3463) */
	unsigned a, b2, c;
	int used = 0;
	if (sscanf(p, "%1u.%3u.%3u%n", &a, &b2, &c, &used) == 3 && (a == 2 || a == 4 || a == 5) &&
	    (p[used] == ' ' || p[used] == '\0') && (code == 0 || (unsigned)code / 100 == a)) {
		snprintf(status, 16, "%u.%u.%u", a, b2, c);
		return;
	}
	if (code >= 500)
		snprintf(status, 16, "5.0.0");
	else if (code >= 400)
		snprintf(status, 16, "4.0.0");
	else
		snprintf(status, 16, "4.4.1");
}

static bool is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

char *outbound_domain_ascii(const char *domain, const char **error_r)
{
	*error_r = NULL;
	if (is_ascii(domain) || domain[0] == '[')
		return xstrdup(domain);
	char *out = NULL;
	/* IDNA2008 with the UTS #46 mapping, non-transitional (RFC 5891, TR46) */
	int rc = idn2_to_ascii_8z(domain, &out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	if (rc != IDN2_OK) {
		*error_r = idn2_strerror(rc);
		return NULL;
	}
	char *r = xstrdup(out);
	idn2_free(out);
	return r;
}

char *outbound_address_ascii(const char *address, const char **error_r)
{
	const char *at = strrchr(address, '@');
	if (at == NULL)
		return xstrdup(address);
	char *d = outbound_domain_ascii(at + 1, error_r);
	if (d == NULL)
		return NULL;
	char *r = xasprintf("%.*s@%s", (int)(at - address), address, d);
	free(d);
	return r;
}

bool outbound_local_part_ascii(const char *address)
{
	const char *at = strrchr(address, '@');
	size_t n = at != NULL ? (size_t)(at - address) : strlen(address);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)address[i] >= 0x80)
			return false;
	return true;
}

/* ---- jobs ---- */

enum rcpt_state { R_OPEN, R_DELIVERED, R_FAILED };

struct ob_rcpt {
	int64_t row;
	char *address;
	int notify;
	char *orcpt;
	int attempts;
	enum rcpt_state state;
	bool recorded;
	char *error;  /* last reply or reason */
	char *mta;    /* host that gave it, or NULL */
};

struct ob_msg {
	char id[QUEUE_ID_MAX];
	struct ob_rcpt *rcpts;
	size_t nrcpts;
	/* from the messages row */
	char *sender;
	char *dsn_ret, *dsn_envid;
	bool smtputf8, eightbit, warned, loaded;
	/* SMTPUTF8 is really needed: a non-ASCII header or sender local part (RFC 6531 3.6);
	   otherwise A-labels let the message go to a peer without SMTPUTF8 */
	bool needs_utf8;
	time_t received;
	uint64_t size;
};

struct ob_job {
	struct ob_job *next;
	char *domain;
	struct ob_msg *msgs;
	size_t nmsgs;
};

struct ob_domain_count {
	char *domain;
	unsigned n;
};

struct ob_worker {
	struct outbound *ob;
	pthread_t thread;
	struct smtpc *conn; /* under ob->lock: aborted at shutdown */
	sqlite3 *db;
	struct dns_sync *dns;
};

struct outbound {
	struct queue *q;
	char *hostname;
	char *resolver;
	uint16_t port;
	uint64_t retry_min, retry_max, warn_after, max_lifetime;
	unsigned max_conns, max_per_domain;
	unsigned connect_ms, command_ms;
	/* [relay] smarthost: every job goes there instead of to the MX hosts */
	char *sh_host;        /* NULL = by MX */
	uint16_t sh_port;
	enum { SH_STARTTLS, SH_TLS, SH_NONE } sh_tls;
	char *sh_user, *sh_password; /* NULL = no AUTH */
	char *rewrite_sender;        /* NULL = unchanged */

	pthread_mutex_t lock;
	pthread_cond_t sched_cond, work_cond;
	bool stopping, kicked;
	struct ob_job *jobs_head, *jobs_tail;
	unsigned busy;          /* jobs taken or waiting */
	int64_t *inflight;      /* rows in some job */
	size_t ninflight, cap_inflight;
	struct ob_domain_count *domains;
	size_t ndomains, cap_domains;

	pthread_t sched_thread;
	sqlite3 *sched_db;
	struct ob_worker *workers;
	size_t nworkers;
};

static uint32_t rand32(void)
{
	uint32_t r = 0;
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint32_t)rand();
	return r;
}

static void job_free(struct ob_job *j)
{
	for (size_t m = 0; m < j->nmsgs; m++) {
		struct ob_msg *msg = &j->msgs[m];
		for (size_t i = 0; i < msg->nrcpts; i++) {
			free(msg->rcpts[i].address);
			free(msg->rcpts[i].orcpt);
			free(msg->rcpts[i].error);
			free(msg->rcpts[i].mta);
		}
		free(msg->rcpts);
		free(msg->sender);
		free(msg->dsn_ret);
		free(msg->dsn_envid);
	}
	free(j->msgs);
	free(j->domain);
	free(j);
}

static const char *domain_of(const char *address)
{
	const char *at = strrchr(address, '@');
	return at != NULL ? at + 1 : "";
}

/* Rows are grouped into jobs by destination: the domain, or the smarthost for everything. */
static const char *job_key(const struct outbound *ob, const char *address)
{
	return ob->sh_host != NULL ? ob->sh_host : domain_of(address);
}

static bool inflight_has(struct outbound *ob, int64_t row)
{
	for (size_t i = 0; i < ob->ninflight; i++)
		if (ob->inflight[i] == row)
			return true;
	return false;
}

static struct ob_domain_count *domain_count(struct outbound *ob, const char *domain, bool add)
{
	for (size_t i = 0; i < ob->ndomains; i++)
		if (strcasecmp(ob->domains[i].domain, domain) == 0)
			return &ob->domains[i];
	if (!add)
		return NULL;
	ob->domains = xgrow(ob->domains, &ob->cap_domains, ob->ndomains + 1, sizeof(*ob->domains));
	ob->domains[ob->ndomains] = (struct ob_domain_count){xstrdup(domain), 0};
	return &ob->domains[ob->ndomains++];
}

/* A job is done: its rows may be scheduled again, its domain has one connection less. */
static void job_release(struct outbound *ob, struct ob_job *j)
{
	pthread_mutex_lock(&ob->lock);
	for (size_t m = 0; m < j->nmsgs; m++)
		for (size_t i = 0; i < j->msgs[m].nrcpts; i++)
			for (size_t k = 0; k < ob->ninflight; k++)
				if (ob->inflight[k] == j->msgs[m].rcpts[i].row) {
					ob->inflight[k] = ob->inflight[--ob->ninflight];
					break;
				}
	struct ob_domain_count *dc = domain_count(ob, j->domain, false);
	if (dc != NULL && dc->n > 0 && --dc->n == 0) {
		free(dc->domain);
		*dc = ob->domains[--ob->ndomains];
	}
	ob->busy--;
	pthread_cond_signal(&ob->sched_cond);
	pthread_mutex_unlock(&ob->lock);
}

/* ---- the scheduler ---- */

struct due_row {
	int64_t row;
	char queue_id[QUEUE_ID_MAX];
	char *address;
	int notify;
	char *orcpt;
	int attempts;
};

static struct ob_msg *job_msg(struct ob_job *j, const char *id, size_t *cap)
{
	for (size_t m = 0; m < j->nmsgs; m++)
		if (strcmp(j->msgs[m].id, id) == 0)
			return &j->msgs[m];
	if (j->nmsgs >= OB_JOB_MSGS_MAX)
		return NULL;
	j->msgs = xgrow(j->msgs, cap, j->nmsgs + 1, sizeof(*j->msgs));
	struct ob_msg *msg = &j->msgs[j->nmsgs++];
	memset(msg, 0, sizeof(*msg));
	snprintf(msg->id, sizeof(msg->id), "%s", id);
	return msg;
}

/* Look for due rows and make jobs of them, as far as the limits allow. */
static void schedule(struct outbound *ob)
{
	sqlite3_stmt *st = NULL;
	struct due_row *rows = NULL;
	size_t n = 0, cap = 0;
	if (sqlite3_prepare_v2(ob->sched_db,
			       "SELECT id, queue_id, address, notify, orcpt, attempts FROM recipients"
			       " WHERE state = 'deferred' AND external = 1 AND next_attempt <= ?1"
			       " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = queue_id AND"
			       " m.held = 1) ORDER BY next_attempt, queue_id LIMIT ?2",
			       -1, &st, NULL) != SQLITE_OK) {
		log_error("event=queue_sql_failed error=\"%s\"", sqlite3_errmsg(ob->sched_db));
		return;
	}
	sqlite3_bind_int64(st, 1, (int64_t)time(NULL));
	sqlite3_bind_int(st, 2, OB_SCAN_MAX);
	pthread_mutex_lock(&ob->lock);
	while (sqlite3_step(st) == SQLITE_ROW) {
		int64_t row = sqlite3_column_int64(st, 0);
		if (inflight_has(ob, row))
			continue;
		rows = xgrow(rows, &cap, n + 1, sizeof(*rows));
		struct due_row *r = &rows[n++];
		r->row = row;
		snprintf(r->queue_id, sizeof(r->queue_id), "%s",
			 (const char *)sqlite3_column_text(st, 1));
		r->address = xstrdup((const char *)sqlite3_column_text(st, 2));
		r->notify = sqlite3_column_int(st, 3);
		const char *o = (const char *)sqlite3_column_text(st, 4);
		r->orcpt = o != NULL ? xstrdup(o) : NULL;
		r->attempts = sqlite3_column_int(st, 5);
	}
	sqlite3_finalize(st);

	/* one pass per domain: rows of that domain go into up to (max_per_domain - active) jobs */
	bool *taken = xcalloc(n + 1, sizeof(bool));
	for (size_t i = 0; i < n && ob->busy < ob->nworkers; i++) {
		if (taken[i])
			continue;
		const char *domain = job_key(ob, rows[i].address);
		struct ob_domain_count *dc = domain_count(ob, domain, true);
		unsigned room = ob->max_per_domain > dc->n ? ob->max_per_domain - dc->n : 0;
		unsigned free_workers = (unsigned)ob->nworkers - ob->busy;
		if (room > free_workers)
			room = free_workers;
		if (room == 0) {
			if (dc->n == 0) {
				free(dc->domain);
				*dc = ob->domains[--ob->ndomains];
			}
			for (size_t k = i; k < n; k++)
				if (strcasecmp(job_key(ob, rows[k].address), domain) == 0)
					taken[k] = true;
			continue;
		}
		/* count this domain's messages to spread them over the jobs */
		struct ob_job **jobs = xcalloc(room, sizeof(*jobs));
		size_t *caps = xcalloc(room, sizeof(*caps));
		unsigned njobs = 0;
		char last_id[QUEUE_ID_MAX] = "";
		unsigned next = 0;
		for (size_t k = i; k < n; k++) {
			if (taken[k] || strcasecmp(job_key(ob, rows[k].address), domain) != 0)
				continue;
			taken[k] = true;
			if (strcmp(last_id, rows[k].queue_id) != 0) {
				/* a new message: next job, round robin */
				snprintf(last_id, sizeof(last_id), "%s", rows[k].queue_id);
				next = njobs < room ? njobs : (next + 1) % room;
			}
			if (next >= njobs) {
				jobs[njobs] = xcalloc(1, sizeof(struct ob_job));
				jobs[njobs]->domain = xstrdup(domain);
				next = njobs++;
			}
			struct ob_msg *msg = job_msg(jobs[next], rows[k].queue_id, &caps[next]);
			if (msg == NULL)
				continue; /* job full: next scan */
			msg->rcpts = xrealloc(msg->rcpts, (msg->nrcpts + 1) * sizeof(*msg->rcpts));
			struct ob_rcpt *rc = &msg->rcpts[msg->nrcpts++];
			memset(rc, 0, sizeof(*rc));
			rc->row = rows[k].row;
			rc->address = rows[k].address;
			rows[k].address = NULL;
			rc->orcpt = rows[k].orcpt;
			rows[k].orcpt = NULL;
			rc->notify = rows[k].notify;
			rc->attempts = rows[k].attempts;
			ob->inflight = xgrow(ob->inflight, &ob->cap_inflight, ob->ninflight + 1,
					     sizeof(*ob->inflight));
			ob->inflight[ob->ninflight++] = rc->row;
		}
		for (unsigned k = 0; k < njobs; k++) {
			dc = domain_count(ob, domain, true);
			dc->n++;
			ob->busy++;
			if (ob->jobs_tail != NULL)
				ob->jobs_tail->next = jobs[k];
			else
				ob->jobs_head = jobs[k];
			ob->jobs_tail = jobs[k];
		}
		free(jobs);
		free(caps);
	}
	pthread_cond_broadcast(&ob->work_cond);
	pthread_mutex_unlock(&ob->lock);
	for (size_t i = 0; i < n; i++) {
		free(rows[i].address);
		free(rows[i].orcpt);
	}
	free(rows);
	free(taken);
}

/* ---- queue administration (queue_admin.c) in the running server ---- */

/* A message is busy while a job holds one of its rows or the delivery thread has it. */
static bool admin_busy(void *arg, const char *queue_id)
{
	struct outbound *ob = arg;
	sqlite3_stmt *st = NULL;
	bool busy = false;
	if (sqlite3_prepare_v2(ob->sched_db,
			       "SELECT id, state FROM recipients WHERE queue_id = ?1", -1, &st,
			       NULL) != SQLITE_OK)
		return true;
	sqlite3_bind_text(st, 1, queue_id, -1, SQLITE_STATIC);
	pthread_mutex_lock(&ob->lock);
	while (!busy && sqlite3_step(st) == SQLITE_ROW) {
		const char *state = (const char *)sqlite3_column_text(st, 1);
		busy = inflight_has(ob, sqlite3_column_int64(st, 0)) ||
		       (state != NULL &&
			(strcmp(state, "queued") == 0 || strcmp(state, "delivering") == 0));
	}
	pthread_mutex_unlock(&ob->lock);
	sqlite3_finalize(st);
	return busy;
}

static void admin_dsn_queued(void *arg, const char *dsn_id)
{
	struct outbound *ob = arg;
	queue_deliver_push(ob->q, dsn_id, false);
}

static void admin_flushed(void *arg)
{
	struct outbound *ob = arg;
	/* the delivery thread rescans its deferred local rows at once */
	pthread_mutex_lock(&ob->q->lock);
	ob->q->kicked = true;
	pthread_cond_signal(&ob->q->deliver_cond);
	pthread_mutex_unlock(&ob->q->lock);
}

static void admin_requests(struct outbound *ob)
{
	struct admin_ctx ctx = {
		.db = ob->sched_db,
		.spool_dir = ob->q->spool_dir,
		.hostname = ob->hostname,
		.write_lock = &ob->q->db_write_lock,
		.busy = admin_busy,
		.dsn_queued = admin_dsn_queued,
		.flushed = admin_flushed,
		.arg = ob,
	};
	queue_admin_process(&ctx);
}

static void *sched_main(void *arg)
{
	struct outbound *ob = arg;
	pthread_mutex_lock(&ob->lock);
	while (!ob->stopping) {
		if (!ob->kicked) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += 1;
			pthread_cond_timedwait(&ob->sched_cond, &ob->lock, &until);
		}
		ob->kicked = false;
		if (ob->stopping)
			break;
		pthread_mutex_unlock(&ob->lock);
		/* `postern queue` requests: applied here, between two scans, so that
		   no job takes rows of a message while it is being changed */
		admin_requests(ob);
		pthread_mutex_lock(&ob->lock);
		if (ob->stopping || ob->busy >= ob->nworkers)
			continue;
		pthread_mutex_unlock(&ob->lock);
		schedule(ob);
		pthread_mutex_lock(&ob->lock);
	}
	pthread_mutex_unlock(&ob->lock);
	return NULL;
}

/* ---- one attempt ---- */

static void rcpt_set(struct ob_rcpt *rc, enum rcpt_state st, const char *error, const char *mta)
{
	/* error or mta may be the recipient's own strings: copy before freeing */
	char *e = xstrdup(error), *m = mta != NULL ? xstrdup(mta) : NULL;
	rc->state = st;
	free(rc->error);
	rc->error = e;
	free(rc->mta);
	rc->mta = m;
}

/* Every open recipient of the job gets this error (it stays open, or fails when perm). */
static void job_set_all(struct ob_job *j, enum rcpt_state st, const char *error, const char *mta)
{
	for (size_t m = 0; m < j->nmsgs; m++)
		for (size_t i = 0; i < j->msgs[m].nrcpts; i++)
			if (j->msgs[m].rcpts[i].state == R_OPEN)
				rcpt_set(&j->msgs[m].rcpts[i], st, error, mta);
}

static size_t open_count(const struct ob_msg *msg)
{
	size_t n = 0;
	for (size_t i = 0; i < msg->nrcpts; i++)
		n += msg->rcpts[i].state == R_OPEN;
	return n;
}

static size_t job_open_count(const struct ob_job *j)
{
	size_t n = 0;
	for (size_t m = 0; m < j->nmsgs; m++)
		if (j->msgs[m].loaded)
			n += open_count(&j->msgs[m]);
	return n;
}

/*
 * Octets above 127 in the header of the spool file (unreadable, or longer
 * than SMTPC_HEADER_MAX: true), apart from the address in the for-clause
 * of our own Received: field, which goes in A-labels when downgraded.
 */
static bool header_has_8bit(const char *spool_dir, const char *id)
{
	char *path = xasprintf("%s/%s", spool_dir, id);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return true;
	char *h = xmalloc(SMTPC_HEADER_MAX + 1);
	size_t len = 0;
	while (len < SMTPC_HEADER_MAX) {
		ssize_t n = read(fd, h + len, SMTPC_HEADER_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	char *end = memmem(h, len, "\r\n\r\n", 4);
	bool found = end == NULL;
	if (end != NULL) {
		size_t hl = (size_t)(end - h) + 2, a = 0, b = 0;
		if (!smtpc_trace_for(h, hl, &a, &b))
			a = b = 0;
		for (size_t i = 0; i < hl && !found; i++)
			found = (unsigned char)h[i] >= 0x80 && (i < a || i >= b);
	}
	free(h);
	return found;
}

static void load_message(struct ob_worker *w, struct ob_msg *msg)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(w->db,
			       "SELECT sender, dsn_ret, dsn_envid, smtputf8, eightbit, received, size,"
			       " warned FROM messages WHERE id = ?1 AND held = 0",
			       -1, &st, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_text(st, 1, msg->id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		msg->sender = xstrdup((const char *)sqlite3_column_text(st, 0));
		const char *s = (const char *)sqlite3_column_text(st, 1);
		msg->dsn_ret = s != NULL ? xstrdup(s) : NULL;
		s = (const char *)sqlite3_column_text(st, 2);
		msg->dsn_envid = s != NULL ? xstrdup(s) : NULL;
		msg->smtputf8 = sqlite3_column_int(st, 3) != 0;
		msg->eightbit = sqlite3_column_int(st, 4) != 0;
		msg->received = (time_t)sqlite3_column_int64(st, 5);
		msg->size = (uint64_t)sqlite3_column_int64(st, 6);
		msg->warned = sqlite3_column_int(st, 7) != 0;
		msg->loaded = true;
		if (msg->smtputf8)
			msg->needs_utf8 = !outbound_local_part_ascii(msg->sender) ||
					  header_has_8bit(w->ob->q->spool_dir, msg->id);
	}
	sqlite3_finalize(st);
}

static void reply_to_rcpt(struct ob_rcpt *rc, const struct smtpc_reply *r, const char *mta)
{
	if (r->code / 100 == 5)
		rcpt_set(rc, R_FAILED, r->text, mta);
	else
		rcpt_set(rc, R_OPEN, r->text, mta);
}

static void notify_param(int notify, char *buf, size_t size)
{
	if (notify & DSN_NOTIFY_NEVER) {
		snprintf(buf, size, " NOTIFY=NEVER");
		return;
	}
	snprintf(buf, size, " NOTIFY=%s%s%s%s%s", notify & DSN_NOTIFY_SUCCESS ? "SUCCESS" : "",
		 (notify & DSN_NOTIFY_SUCCESS) && (notify & (DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY))
			 ? ","
			 : "",
		 notify & DSN_NOTIFY_FAILURE ? "FAILURE" : "",
		 (notify & DSN_NOTIFY_FAILURE) && (notify & DSN_NOTIFY_DELAY) ? "," : "",
		 notify & DSN_NOTIFY_DELAY ? "DELAY" : "");
}

static void record(struct ob_worker *w, struct ob_job *j, struct ob_msg *msg, bool final);

/*
 * One SMTP transaction for `msg` on an open session. Returns false when
 * the connection is no longer usable.
 */
static bool transaction(struct ob_worker *w, struct smtpc *c, struct ob_msg *msg, const char *mta)
{
	struct outbound *ob = w->ob;
	unsigned ext = smtpc_ext(c);
	struct smtpc_reply r = {0};
	/* SMTPUTF8 on the wire only when the message has it and the peer offers it */
	bool utf8 = msg->smtputf8 && (ext & SMTPC_EXT_SMTPUTF8);
	if (msg->smtputf8 && !utf8) {
		/*
		 * RFC 6531 3.6: no downgrade of a message that needs SMTPUTF8
		 * (553 5.6.7); a message whose only non-ASCII is in domains goes
		 * with A-labels, and only recipients with a non-ASCII local part fail.
		 */
		char *e = xasprintf("553 5.6.7 the message needs SMTPUTF8, which %s does not offer",
				    mta);
		for (size_t i = 0; i < msg->nrcpts; i++)
			if (msg->rcpts[i].state == R_OPEN &&
			    (msg->needs_utf8 || !outbound_local_part_ascii(msg->rcpts[i].address)))
				rcpt_set(&msg->rcpts[i], R_FAILED, e, mta);
		free(e);
		if (open_count(msg) == 0)
			return true;
	}
	uint64_t limit = smtpc_size_limit(c);
	if ((ext & SMTPC_EXT_SIZE) && limit > 0 && msg->size > limit) {
		char *e = xasprintf("5.3.4 message size %llu exceeds the limit of %s (%llu)",
				    (unsigned long long)msg->size, mta, (unsigned long long)limit);
		for (size_t i = 0; i < msg->nrcpts; i++)
			if (msg->rcpts[i].state == R_OPEN)
				rcpt_set(&msg->rcpts[i], R_FAILED, e, mta);
		free(e);
		return true;
	}
	char *path = xasprintf("%s/%s", ob->q->spool_dir, msg->id);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0) {
		log_error("event=outbound_spool_missing queue_id=%s error=\"%s\"", msg->id,
			  strerror(errno));
		for (size_t i = 0; i < msg->nrcpts; i++)
			if (msg->rcpts[i].state == R_OPEN)
				rcpt_set(&msg->rcpts[i], R_OPEN, "4.3.0 spool file unreadable", NULL);
		return true;
	}
	bool pipelining = (ext & SMTPC_EXT_PIPELINING) != 0;
	bool dsn = (ext & SMTPC_EXT_DSN) != 0;
	/* RFC 3030: BDAT chunks when offered (no dot-stuffing, no 354 round trip) */
	bool bdat = (ext & SMTPC_EXT_CHUNKING) != 0;
	/* rewrite_sender: not for the null sender, which must stay null (DSNs) */
	const char *rewrite = ob->sh_host != NULL && ob->rewrite_sender != NULL &&
					      msg->sender[0] != '\0'
				      ? ob->rewrite_sender
				      : NULL;
	const char *from = rewrite != NULL ? rewrite : msg->sender;
	const char *ierr = NULL;
	char *from_ascii = utf8 ? NULL : outbound_address_ascii(from, &ierr);
	smtpc_printf(c, "MAIL FROM:<%s>", from_ascii != NULL ? from_ascii : from);
	free(from_ascii);
	if (ext & SMTPC_EXT_SIZE)
		smtpc_printf(c, " SIZE=%llu", (unsigned long long)msg->size);
	if (msg->eightbit && (ext & SMTPC_EXT_8BITMIME))
		smtpc_printf(c, " BODY=8BITMIME");
	if (utf8)
		smtpc_printf(c, " SMTPUTF8");
	if (dsn && msg->dsn_ret != NULL)
		smtpc_printf(c, " RET=%s", msg->dsn_ret);
	if (dsn && msg->dsn_envid != NULL)
		smtpc_printf(c, " ENVID=%s", msg->dsn_envid);
	smtpc_printf(c, "\r\n");
	bool ok = true;
	struct smtpc_reply mail_r = {0};
	if (!pipelining) {
		if (!smtpc_read_reply(c, &mail_r))
			goto broken;
		if (mail_r.code / 100 != 2) {
			for (size_t i = 0; i < msg->nrcpts; i++)
				if (msg->rcpts[i].state == R_OPEN)
					reply_to_rcpt(&msg->rcpts[i], &mail_r, mta);
			smtpc_printf(c, "RSET\r\n");
			ok = smtpc_read_reply(c, &r);
			goto out;
		}
	}
	size_t *idx = xcalloc(msg->nrcpts + 1, sizeof(*idx));
	bool *accepted = xcalloc(msg->nrcpts + 1, sizeof(*accepted));
	size_t nsent = 0, naccepted = 0;
	for (size_t i = 0; i < msg->nrcpts; i++) {
		struct ob_rcpt *rc = &msg->rcpts[i];
		if (rc->state != R_OPEN)
			continue;
		char np[64] = "";
		if (dsn && rc->notify != 0)
			notify_param(rc->notify, np, sizeof(np));
		/* without SMTPUTF8, the domain as A-labels (RFC 5890) */
		char *to_ascii = utf8 ? NULL : outbound_address_ascii(rc->address, &ierr);
		smtpc_printf(c, "RCPT TO:<%s>%s%s%s\r\n", to_ascii != NULL ? to_ascii : rc->address,
			     np, dsn && rc->orcpt != NULL ? " ORCPT=" : "",
			     dsn && rc->orcpt != NULL ? rc->orcpt : "");
		free(to_ascii);
		idx[nsent] = i;
		if (!pipelining) {
			if (!smtpc_read_reply(c, &r))
				goto broken_free;
			if (r.code / 100 == 2) {
				accepted[nsent] = true;
				naccepted++;
			} else {
				reply_to_rcpt(rc, &r, mta);
			}
		}
		nsent++;
	}
	if (pipelining) {
		/* RFC 2920: MAIL, every RCPT and DATA in one write, then the replies in order */
		if (!bdat)
			smtpc_printf(c, "DATA\r\n");
		if (!smtpc_read_reply(c, &mail_r))
			goto broken_free;
		for (size_t k = 0; k < nsent; k++) {
			if (!smtpc_read_reply(c, &r))
				goto broken_free;
			struct ob_rcpt *rc = &msg->rcpts[idx[k]];
			if (mail_r.code / 100 != 2)
				reply_to_rcpt(rc, &mail_r, mta);
			else if (r.code / 100 == 2)
				accepted[k] = true, naccepted++;
			else
				reply_to_rcpt(rc, &r, mta);
		}
	} else if (naccepted > 0 && !bdat) {
		smtpc_printf(c, "DATA\r\n");
	}
	if (naccepted == 0) {
		if (pipelining && !bdat) {
			if (!smtpc_read_reply(c, &r))
				goto broken_free;
			if (r.code == 354) {
				/* a server that takes DATA without recipients: send an empty message */
				smtpc_printf(c, ".\r\n");
				if (!smtpc_read_reply(c, &r))
					goto broken_free;
			}
		}
		smtpc_printf(c, "RSET\r\n");
		ok = smtpc_read_reply(c, &r);
		goto out_free;
	}
	if (!bdat && !smtpc_read_reply(c, &r))
		goto broken_free;
	if (!bdat && r.code != 354) {
		for (size_t k = 0; k < nsent; k++)
			if (accepted[k])
				reply_to_rcpt(&msg->rcpts[idx[k]], &r, mta);
		smtpc_printf(c, "RSET\r\n");
		ok = smtpc_read_reply(c, &r);
		goto out_free;
	}
	struct smtpc_content content = {.from_rewrite = rewrite,
					.idna_trace = msg->smtputf8 && !utf8,
					.bdat = bdat};
	if (!smtpc_send_content(c, fd, &content, &r) || (!bdat && !smtpc_read_reply(c, &r)))
		goto broken_free;
	if (bdat && r.code / 100 != 2) {
		/* a refused chunk ends the transaction (RFC 3030 4.2); RSET makes sure of it */
		struct smtpc_reply rr = {0};
		smtpc_printf(c, "RSET\r\n");
		ok = smtpc_read_reply(c, &rr);
	}
	for (size_t k = 0; k < nsent; k++) {
		if (!accepted[k])
			continue;
		struct ob_rcpt *rc = &msg->rcpts[idx[k]];
		if (r.code / 100 == 2) {
			rcpt_set(rc, R_DELIVERED, r.text, mta);
			char to[512], rep[600];
			log_info("event=delivered_remote queue_id=%s to=%s relay=%s tls=%s reply=%s",
				 msg->id, log_quote(to, sizeof(to), rc->address, 256), mta,
				 smtpc_tls(c) ? "yes" : "no", log_quote(rep, sizeof(rep), r.text, 256));
		} else {
			reply_to_rcpt(rc, &r, mta);
		}
	}
	goto out_free;
broken_free:
	free(idx);
	free(accepted);
broken:
	close(fd);
	for (size_t i = 0; i < msg->nrcpts; i++)
		if (msg->rcpts[i].state == R_OPEN) {
			const char *why = r.code == 0 && r.text[0] != '\0'	    ? r.text
					  : mail_r.code == 0 && mail_r.text[0] != '\0' ? mail_r.text
											: "connection lost";
			char *e = xasprintf("4.4.2 %s: %s", mta, why);
			rcpt_set(&msg->rcpts[i], R_OPEN, e, mta);
			free(e);
		}
	return false;
out_free:
	free(idx);
	free(accepted);
out:
	close(fd);
	return ok;
}

static void set_conn(struct ob_worker *w, struct smtpc *c)
{
	pthread_mutex_lock(&w->ob->lock);
	w->conn = c;
	if (c != NULL && w->ob->stopping)
		smtpc_abort(c);
	pthread_mutex_unlock(&w->ob->lock);
}

/*
 * One connection to one address of `host`: every message of the job with
 * open recipients. `no_tls`: do not use STARTTLS (the plaintext retry after
 * a failed handshake); *tls_failed_r: an opportunistic STARTTLS handshake
 * failed, and the caller may try the same address again without TLS.
 */
static void session(struct ob_worker *w, struct ob_job *j, const char *host,
		    const struct sockaddr *sa, socklen_t salen, bool no_tls, bool *tls_failed_r)
{
	*tls_failed_r = false;
	struct outbound *ob = w->ob;
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
	char *mta = xasprintf("%s[%s]", host, ip);
	const char *err = NULL;
	struct smtpc *c = smtpc_connect(sa, salen, ob->connect_ms, ob->command_ms, &err);
	if (c == NULL) {
		unsigned port = ntohs(sa->sa_family == AF_INET
					      ? ((const struct sockaddr_in *)sa)->sin_port
					      : ((const struct sockaddr_in6 *)sa)->sin6_port);
		char *e = xasprintf("4.4.1 connect to %s:%u: %s", mta, port, err);
		log_info("event=outbound_connect_failed domain=%s relay=%s error=\"%s\"", j->domain,
			 mta, err);
		job_set_all(j, R_OPEN, e, mta);
		free(e);
		free(mta);
		return;
	}
	set_conn(w, c);
	struct smtpc_reply r = {0};
	char rep[600];
	bool smarthost = ob->sh_host != NULL;
	if (smarthost && ob->sh_tls == SH_TLS) {
		/* implicit TLS: the handshake before the greeting */
		bool verified;
		const char *verr;
		if (smtpc_tls_handshake(c, host, &verified, &verr) < 0) {
			char *e = xasprintf("4.4.2 %s: TLS handshake failed", mta);
			job_set_all(j, R_OPEN, e, mta);
			free(e);
			goto out;
		}
		log_info("event=outbound_tls relay=%s verified=%s verify_result=\"%s\" "
			 "discarded_plaintext=0",
			 mta, verified ? "yes" : "no", verr);
	}
	if (!smtpc_read_reply(c, &r) || r.code != 220) {
		char *e = xasprintf("4.4.2 %s greeting: %s", mta, r.text);
		job_set_all(j, R_OPEN, e, mta);
		free(e);
		goto quit;
	}
	if (!smtpc_ehlo(c, ob->hostname, &r) || r.code != 250) {
		char *e = xasprintf("4.4.2 %s EHLO: %s", mta, r.text);
		job_set_all(j, R_OPEN, e, mta);
		free(e);
		goto quit;
	}
	if (smarthost && ob->sh_tls == SH_STARTTLS && !(smtpc_ext(c) & SMTPC_EXT_STARTTLS)) {
		char *e = xasprintf("4.7.0 smarthost %s does not offer STARTTLS", mta);
		job_set_all(j, R_OPEN, e, mta);
		free(e);
		goto quit;
	}
	if ((smtpc_ext(c) & SMTPC_EXT_STARTTLS) && !smtpc_tls(c) && !no_tls &&
	    !(smarthost && ob->sh_tls == SH_NONE)) {
		bool verified;
		const char *verr;
		int t = smtpc_starttls(c, host, &r, &verified, &verr);
		if (t < 0) {
			char *e = xasprintf("4.4.2 %s STARTTLS: %s", mta, r.text);
			job_set_all(j, R_OPEN, e, mta);
			free(e);
			/* opportunistic TLS only: a smarthost with starttls requires it */
			*tls_failed_r = !smarthost;
			log_info("event=outbound_tls_failed relay=%s error=%s", mta,
				 log_quote(rep, sizeof(rep), r.text, 256));
			goto out; /* the TLS session is unusable: no QUIT */
		}
		if (t == 1) {
			log_info("event=outbound_tls relay=%s verified=%s verify_result=\"%s\" "
				 "discarded_plaintext=%zu",
				 mta, verified ? "yes" : "no", verr, smtpc_injected(c));
			if (!smtpc_ehlo(c, ob->hostname, &r) || r.code != 250) {
				char *e = xasprintf("4.4.2 %s EHLO after STARTTLS: %s", mta, r.text);
				job_set_all(j, R_OPEN, e, mta);
				free(e);
				goto quit;
			}
		} else {
			log_info("event=outbound_starttls_refused relay=%s reply=%s", mta,
				 log_quote(rep, sizeof(rep), r.text, 256));
		}
	}
	if (smarthost && ob->sh_user != NULL) {
		const char *why = NULL;
		if (!smtpc_tls(c))
			why = "not sending credentials without TLS";
		else if (!(smtpc_ext(c) & SMTPC_EXT_AUTH_PLAIN))
			why = "AUTH PLAIN not offered";
		else if (!smtpc_auth_plain(c, ob->sh_user, ob->sh_password, &r))
			why = r.text;
		else if (r.code != 235)
			why = r.text;
		if (why != NULL) {
			/* a configuration problem: the mail waits, it does not bounce */
			char *e = xasprintf("4.7.0 smarthost %s AUTH: %s", mta, why);
			log_error("event=smarthost_auth_failed relay=%s error=%s", mta,
				  log_quote(rep, sizeof(rep), why, 256));
			job_set_all(j, R_OPEN, e, mta);
			free(e);
			goto quit;
		}
		log_info("event=smarthost_auth relay=%s user=%s", mta,
			 log_quote(rep, sizeof(rep), ob->sh_user, 256));
	}
	for (size_t m = 0; m < j->nmsgs; m++) {
		struct ob_msg *msg = &j->msgs[m];
		if (!msg->loaded || open_count(msg) == 0)
			continue;
		bool alive = transaction(w, c, msg, mta);
		/* delivered and failed recipients are recorded at once: the duplicate window is this short */
		record(w, j, msg, false);
		if (!alive)
			goto out;
	}
quit:
	smtpc_printf(c, "QUIT\r\n");
	smtpc_read_reply(c, &r);
out:
	set_conn(w, NULL);
	smtpc_free(&c);
	free(mta);
}

static bool worker_stopping(struct outbound *ob)
{
	pthread_mutex_lock(&ob->lock);
	bool s = ob->stopping;
	pthread_mutex_unlock(&ob->lock);
	return s;
}

/* The addresses of `host` (AAAA first, then A), or of an address literal. */
static size_t host_addrs(struct ob_worker *w, const char *host, uint16_t port_h,
			 struct sockaddr_storage *out, size_t max, bool *temp_r)
{
	size_t n = 0;
	uint16_t port = htons(port_h);
	*temp_r = false;
	struct in6_addr probe;
	if (host[0] == '[' || inet_pton(AF_INET, host, &probe) == 1 ||
	    inet_pton(AF_INET6, host, &probe) == 1) {
		char lit[128];
		snprintf(lit, sizeof(lit), "%s", host[0] == '[' ? host + 1 : host);
		char *end = strchr(lit, ']');
		if (end != NULL)
			*end = '\0';
		const char *a = strncasecmp(lit, "IPv6:", 5) == 0 ? lit + 5 : lit;
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out[0];
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out[0];
		memset(&out[0], 0, sizeof(out[0]));
		if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			s4->sin_port = port;
			return 1;
		}
		if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			s6->sin6_port = port;
			return 1;
		}
		return 0;
	}
	static const uint16_t types[] = {DNS_T_AAAA, DNS_T_A};
	for (size_t t = 0; t < 2; t++) {
		/* at shutdown, no new lookup: each may take up to OB_DNS_TIMEOUT_MS */
		if (worker_stopping(w->ob))
			break;
		struct dns_result *res = dns_sync_lookup(w->dns, host, types[t]);
		if (res->status == DNS_SERVFAIL || res->status == DNS_TIMEOUT)
			*temp_r = true;
		for (size_t i = 0; i < res->count && n < max; i++) {
			struct dns_rr *rr = &res->rrs[i];
			memset(&out[n], 0, sizeof(out[n]));
			if (rr->type == DNS_T_A && rr->u.addr.family == AF_INET) {
				struct sockaddr_in *s4 = (struct sockaddr_in *)&out[n];
				s4->sin_family = AF_INET;
				s4->sin_port = port;
				memcpy(&s4->sin_addr, rr->u.addr.addr, 4);
				n++;
			} else if (rr->type == DNS_T_AAAA && rr->u.addr.family == AF_INET6) {
				struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out[n];
				s6->sin6_family = AF_INET6;
				s6->sin6_port = port;
				memcpy(&s6->sin6_addr, rr->u.addr.addr, 16);
				n++;
			}
		}
		dns_result_free(&res);
	}
	return n;
}

static void run_job(struct ob_worker *w, struct ob_job *j)
{
	for (size_t m = 0; m < j->nmsgs; m++)
		load_message(w, &j->msgs[m]);
	if (job_open_count(j) == 0)
		return;
	char **hosts = NULL;
	size_t nhosts = 0;
	const char *err = NULL;
	enum outbound_route route;
	uint16_t port = w->ob->port;
	if (w->ob->sh_host != NULL) {
		hosts = xcalloc(2, sizeof(char *));
		hosts[0] = xstrdup(w->ob->sh_host);
		nhosts = 1;
		route = ROUTE_OK;
		port = w->ob->sh_port;
	} else if (j->domain[0] == '[') {
		hosts = xcalloc(2, sizeof(char *));
		hosts[0] = xstrdup(j->domain);
		nhosts = 1;
		route = ROUTE_OK;
	} else {
		/* IDNA: the DNS knows the domain by its A-labels */
		const char *ierr = NULL;
		char *ascii = outbound_domain_ascii(j->domain, &ierr);
		if (ascii == NULL) {
			log_info("event=outbound_idna_failed domain=%s error=\"%s\"", j->domain, ierr);
			err = "5.1.2 the recipient's domain is not a valid internationalized domain name";
			route = ROUTE_PERM;
		} else {
			struct dns_result *mx = dns_sync_lookup(w->dns, ascii, DNS_T_MX);
			route = outbound_route(mx, ascii, &hosts, &nhosts, &err);
			dns_result_free(&mx);
			free(ascii);
		}
	}
	if (route != ROUTE_OK) {
		log_info("event=outbound_route_failed domain=%s error=\"%s\"", j->domain, err);
		job_set_all(j, route == ROUTE_PERM ? R_FAILED : R_OPEN, err, NULL);
	}
	for (size_t h = 0; h < nhosts && job_open_count(j) > 0 && !worker_stopping(w->ob); h++) {
		struct sockaddr_storage addrs[OB_ADDRS_MAX];
		bool temp;
		size_t naddrs = host_addrs(w, hosts[h], port, addrs, OB_ADDRS_MAX, &temp);
		if (naddrs == 0) {
			char *e = xasprintf("4.4.4 %s: no address for the mail server %s",
					    temp ? "temporary DNS failure" : "DNS", hosts[h]);
			log_info("event=outbound_no_address domain=%s host=%s", j->domain, hosts[h]);
			job_set_all(j, R_OPEN, e, NULL);
			free(e);
			continue;
		}
		for (size_t a = 0; a < naddrs && job_open_count(j) > 0 && !worker_stopping(w->ob);
		     a++) {
			socklen_t len = addrs[a].ss_family == AF_INET ? sizeof(struct sockaddr_in)
								      : sizeof(struct sockaddr_in6);
			bool tls_failed = false;
			session(w, j, hosts[h], (struct sockaddr *)&addrs[a], len, false,
				&tls_failed);
			/*
			 * Opportunistic TLS (as Postfix's smtp_tls_security_level =
			 * may): after a failed handshake, the same address again in
			 * plaintext rather than no delivery at all.
			 */
			if (tls_failed && job_open_count(j) > 0 && !worker_stopping(w->ob)) {
				log_info("event=outbound_tls_fallback domain=%s host=%s", j->domain,
					 hosts[h]);
				session(w, j, hosts[h], (struct sockaddr *)&addrs[a], len, true,
					&tls_failed);
			}
		}
	}
	outbound_hosts_free(&hosts, nhosts);
}

static void *worker_main(void *arg)
{
	struct ob_worker *w = arg;
	struct outbound *ob = w->ob;
	pthread_mutex_lock(&ob->lock);
	for (;;) {
		while (ob->jobs_head == NULL && !ob->stopping)
			pthread_cond_wait(&ob->work_cond, &ob->lock);
		if (ob->stopping)
			break;
		struct ob_job *j = ob->jobs_head;
		ob->jobs_head = j->next;
		if (ob->jobs_head == NULL)
			ob->jobs_tail = NULL;
		pthread_mutex_unlock(&ob->lock);

		if (w->db == NULL) {
			char *err = NULL;
			w->db = queue_db_open(ob->q->db_path, &err);
			if (w->db == NULL) {
				log_error("event=outbound_db_failed error=\"%s\"", err);
				free(err);
			}
		}
		if (w->dns == NULL) {
			struct dns_options o = {.resolver = ob->resolver,
						.timeout_ms = OB_DNS_TIMEOUT_MS};
			const char *err = NULL;
			w->dns = dns_sync_new(&o, &err);
			if (w->dns == NULL)
				log_error("event=outbound_dns_failed error=\"%s\"", err);
		}
		if (w->db != NULL && w->dns != NULL) {
			run_job(w, j);
			/* a stop in the middle leaves the rest as it was: retried after restart */
			if (!worker_stopping(ob))
				for (size_t m = 0; m < j->nmsgs; m++)
					if (j->msgs[m].loaded)
						record(w, j, &j->msgs[m], true);
		}
		job_release(ob, j);
		job_free(j);
		pthread_mutex_lock(&ob->lock);
	}
	pthread_mutex_unlock(&ob->lock);
	return NULL;
}

/* ---- recording outcomes, DSNs ---- */

static bool step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE;
}

/* Write a DSN into the spool, durable (file and directory), before its rows go in. */
static int spool_dsn(const char *spool_dir, const char *id, const char *text, size_t len)
{
	char *path = xasprintf("%s/%s", spool_dir, id);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int ret = -1;
	if (fd >= 0) {
		size_t off = 0;
		while (off < len) {
			ssize_t n = write(fd, text + off, len - off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		if (off == len && fdatasync(fd) == 0 && fsync_path(spool_dir) == 0)
			ret = 0;
		close(fd);
		if (ret < 0)
			unlink(path);
	}
	free(path);
	return ret;
}

int outbound_dsn_inject(sqlite3 *db, const struct dsn_source *src, const struct dsn_row *rows,
			size_t n, bool delayed, char id_r[QUEUE_ID_MAX])
{
	struct bounce_rcpt *br = xcalloc(n + 1, sizeof(*br));
	char (*status)[16] = xcalloc(n + 1, sizeof(*status));
	for (size_t i = 0; i < n; i++) {
		const char *e = rows[i].error != NULL ? rows[i].error : "4.0.0 unknown error";
		int code = 0;
		if (e[0] >= '2' && e[0] <= '5' && e[1] >= '0' && e[1] <= '9' && e[2] >= '0' &&
		    e[2] <= '9' && e[3] == ' ')
			code = (e[0] - '0') * 100 + (e[1] - '0') * 10 + (e[2] - '0');
		outbound_status(code, e, status[i]);
		br[i].address = rows[i].address;
		br[i].orcpt = rows[i].orcpt;
		br[i].status = status[i];
		br[i].diagnostic = e;
		br[i].delayed = delayed;
		br[i].remote_mta = rows[i].mta;
	}
	char *path = xasprintf("%s/%s", src->spool_dir, src->queue_id);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	struct bounce_input in = {
		.hostname = src->hostname,
		.queue_id = src->queue_id,
		.sender = src->sender,
		.envid = src->dsn_envid,
		.full = src->dsn_ret == NULL || strcasecmp(src->dsn_ret, "FULL") == 0,
		.arrival = src->received,
		.now = time(NULL),
		.rcpts = br,
		.nrcpts = n,
		.fd = fd,
		.max_return = OB_BOUNCE_RETURN_MAX,
	};
	size_t len;
	char *text = bounce_build(&in, &len);
	if (fd >= 0)
		close(fd);
	free(br);
	free(status);
	queue_id_new(id_r);
	int ret = -1;
	sqlite3_stmt *st = NULL;
	if (spool_dsn(src->spool_dir, id_r, text, len) < 0) {
		log_error("event=dsn_spool_failed queue_id=%s error=\"%s\"", src->queue_id,
			  strerror(errno));
		goto out;
	}
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO messages(id, sender, client_ip, protocol, received, size,"
			       " smtputf8, eightbit) VALUES (?1, '', 'local', 'DSN', ?2, ?3, ?4, ?5)",
			       -1, &st, NULL) != SQLITE_OK)
		goto unlink;
	sqlite3_bind_text(st, 1, id_r, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
	sqlite3_bind_int64(st, 3, (int64_t)len);
	/* UTF-8 in the DSN (RFC 6533): SMTPUTF8 for a UTF-8 sender address, 8BITMIME for the rest */
	bool eightbit = false;
	for (size_t i = 0; i < len && !eightbit; i++)
		eightbit = (unsigned char)text[i] >= 0x80;
	sqlite3_bind_int(st, 4, !is_ascii(src->sender));
	sqlite3_bind_int(st, 5, eightbit);
	if (!step_done(st))
		goto unlink;
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO recipients(queue_id, idx, address, state)"
			       " VALUES (?1, 0, ?2, 'queued')",
			       -1, &st, NULL) != SQLITE_OK)
		goto unlink;
	sqlite3_bind_text(st, 1, id_r, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, src->sender, -1, SQLITE_STATIC);
	if (!step_done(st))
		goto unlink;
	char to[512];
	log_info("event=%s queue_id=%s dsn_id=%s to=%s recipients=%zu",
		 delayed ? "delay_notice" : "bounce", src->queue_id, id_r,
		 log_quote(to, sizeof(to), src->sender, 256), n);
	ret = 0;
	goto out;
unlink:
	{
		char *p = xasprintf("%s/%s", src->spool_dir, id_r);
		unlink(p);
		free(p);
	}
out:
	sqlite3_finalize(st);
	free(text);
	return ret;
}

/*
 * Inject a DSN about `rows` of `msg` (in the caller's transaction): spool
 * file first, then its rows, addressed to the original sender with the
 * null sender. *id_r gets its queue id. 0 / -1.
 */
static int inject_dsn(struct ob_worker *w, struct ob_msg *msg, struct dsn_row *rows, size_t n,
		      bool delayed, char id_r[QUEUE_ID_MAX])
{
	struct outbound *ob = w->ob;
	for (size_t i = 0; i < n; i++)
		for (size_t m = 0; m < msg->nrcpts; m++)
			if (msg->rcpts[m].row == rows[i].row)
				rows[i].mta = msg->rcpts[m].mta;
	struct dsn_source src = {
		.spool_dir = ob->q->spool_dir,
		.hostname = ob->hostname,
		.queue_id = msg->id,
		.sender = msg->sender,
		.dsn_ret = msg->dsn_ret,
		.dsn_envid = msg->dsn_envid,
		.received = msg->received,
	};
	return outbound_dsn_inject(w->db, &src, rows, n, delayed, id_r);
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
 * Record the outcome of `msg`'s recipients in one transaction. Always:
 * delivered and failed ones. With `final` (the attempt is over): the open
 * ones become deferred with a backoff (or failed after max_lifetime), a
 * delay notice goes out once after warn_after, failed rows are bounced and
 * removed, and a message with nothing left is removed with its spool file.
 */
static void record(struct ob_worker *w, struct ob_job *j, struct ob_msg *msg, bool final)
{
	struct outbound *ob = w->ob;
	struct queue *q = ob->q;
	sqlite3 *db = w->db;
	time_t now = time(NULL);
	sqlite3_stmt *up = NULL, *sel = NULL, *del = NULL;
	struct dsn_row *failed = NULL, *delayed = NULL;
	size_t nfailed = 0, capf = 0, ndelayed = 0, capd = 0;
	char dsn_ids[2][QUEUE_ID_MAX];
	size_t ndsn = 0;
	bool finished = false;

	if (final) {
		for (size_t i = 0; i < msg->nrcpts; i++) {
			struct ob_rcpt *rc = &msg->rcpts[i];
			if (rc->state != R_OPEN || now - msg->received < (time_t)ob->max_lifetime)
				continue;
			/* RFC 3463 4.4.7: delivery time expired */
			char *e = xasprintf("4.4.7 message expired after %d attempts; last error: %s",
					    rc->attempts + 1, rc->error != NULL ? rc->error : "none");
			rcpt_set(rc, R_FAILED, e, rc->mta);
			free(e);
		}
	}
	pthread_mutex_lock(&q->db_write_lock);
	if (queue_db_exec(db, "BEGIN IMMEDIATE") < 0)
		goto unlock;
	if (sqlite3_prepare_v2(db,
			       "UPDATE recipients SET state = ?2, last_error = ?3, attempts = attempts"
			       " + 1, next_attempt = ?4 WHERE id = ?1",
			       -1, &up, NULL) != SQLITE_OK)
		goto rollback;
	for (size_t i = 0; i < msg->nrcpts; i++) {
		struct ob_rcpt *rc = &msg->rcpts[i];
		if (rc->recorded || (rc->state == R_OPEN && !final))
			continue;
		const char *state = rc->state == R_DELIVERED ? "delivered"
				    : rc->state == R_FAILED  ? "failed"
							     : "deferred";
		uint64_t wait = outbound_backoff((unsigned)rc->attempts, ob->retry_min,
						 ob->retry_max, rand32());
		sqlite3_bind_int64(up, 1, rc->row);
		sqlite3_bind_text(up, 2, state, -1, SQLITE_STATIC);
		if (rc->state == R_DELIVERED || rc->error == NULL)
			sqlite3_bind_null(up, 3);
		else
			sqlite3_bind_text(up, 3, rc->error, -1, SQLITE_STATIC);
		sqlite3_bind_int64(up, 4, (int64_t)now + (int64_t)wait);
		if (!step_done(up))
			goto rollback;
		if (rc->state == R_OPEN && !msg->warned && msg->sender[0] != '\0' &&
		    now - msg->received >= (time_t)ob->warn_after &&
		    (rc->notify == 0 || (rc->notify & DSN_NOTIFY_DELAY))) {
			delayed = xgrow(delayed, &capd, ndelayed + 1, sizeof(*delayed));
			delayed[ndelayed++] = (struct dsn_row){
				rc->row, xstrdup(rc->address),
				rc->orcpt != NULL ? xstrdup(rc->orcpt) : NULL,
				xstrdup(rc->error != NULL ? rc->error : "4.0.0 deferred"), rc->notify, NULL};
		}
		if (rc->state == R_FAILED) {
			char to[512], e[600];
			log_warn("event=outbound_failed queue_id=%s to=%s error=%s", msg->id,
				 log_quote(to, sizeof(to), rc->address, 256),
				 log_quote(e, sizeof(e), rc->error, 300));
		} else if (rc->state == R_OPEN) {
			char to[512], e[600];
			log_info("event=outbound_deferred queue_id=%s to=%s attempts=%d retry_in=%llu "
				 "error=%s",
				 msg->id, log_quote(to, sizeof(to), rc->address, 256),
				 rc->attempts + 1, (unsigned long long)wait,
				 log_quote(e, sizeof(e), rc->error != NULL ? rc->error : "", 300));
		}
	}
	if (final) {
		/* every failed row of the message (ours and the local agent's) is reported once */
		if (sqlite3_prepare_v2(db,
				       "SELECT id, address, orcpt, last_error, notify FROM recipients"
				       " WHERE queue_id = ?1 AND state = 'failed' ORDER BY idx, id",
				       -1, &sel, NULL) != SQLITE_OK)
			goto rollback;
		sqlite3_bind_text(sel, 1, msg->id, -1, SQLITE_STATIC);
		while (sqlite3_step(sel) == SQLITE_ROW) {
			int notify = sqlite3_column_int(sel, 4);
			if (notify != 0 && !(notify & DSN_NOTIFY_FAILURE))
				continue;
			const char *o = (const char *)sqlite3_column_text(sel, 2);
			const char *e = (const char *)sqlite3_column_text(sel, 3);
			failed = xgrow(failed, &capf, nfailed + 1, sizeof(*failed));
			failed[nfailed++] = (struct dsn_row){
				sqlite3_column_int64(sel, 0),
				xstrdup((const char *)sqlite3_column_text(sel, 1)),
				o != NULL ? xstrdup(o) : NULL, xstrdup(e != NULL ? e : "5.0.0 failed"),
				notify, NULL};
		}
		sqlite3_finalize(sel);
		sel = NULL;
		if (nfailed > 0 && msg->sender[0] == '\0') {
			/* never bounce a bounce (RFC 5321 6.1) */
			log_info("event=bounce_suppressed queue_id=%s reason=\"null sender\" "
				 "recipients=%zu",
				 msg->id, nfailed);
		} else if (nfailed > 0) {
			if (inject_dsn(w, msg, failed, nfailed, false, dsn_ids[ndsn]) < 0)
				goto rollback;
			ndsn++;
		}
		if (ndelayed > 0) {
			if (inject_dsn(w, msg, delayed, ndelayed, true, dsn_ids[ndsn]) < 0)
				goto rollback;
			ndsn++;
			if (sqlite3_prepare_v2(db, "UPDATE messages SET warned = 1 WHERE id = ?1", -1,
					       &del, NULL) != SQLITE_OK)
				goto rollback;
			sqlite3_bind_text(del, 1, msg->id, -1, SQLITE_STATIC);
			if (!step_done(del))
				goto rollback;
			sqlite3_finalize(del);
			del = NULL;
		}
		/* reported (or never to be): the failed rows go */
		if (sqlite3_prepare_v2(db,
				       "DELETE FROM recipients WHERE queue_id = ?1 AND state = 'failed'",
				       -1, &del, NULL) != SQLITE_OK)
			goto rollback;
		sqlite3_bind_text(del, 1, msg->id, -1, SQLITE_STATIC);
		if (!step_done(del))
			goto rollback;
		sqlite3_finalize(del);
		del = NULL;
		if (sqlite3_prepare_v2(db,
				       "SELECT count(*) FROM recipients WHERE queue_id = ?1 AND state"
				       " IN ('queued', 'delivering', 'deferred')",
				       -1, &sel, NULL) != SQLITE_OK)
			goto rollback;
		sqlite3_bind_text(sel, 1, msg->id, -1, SQLITE_STATIC);
		if (sqlite3_step(sel) != SQLITE_ROW)
			goto rollback;
		finished = sqlite3_column_int64(sel, 0) == 0;
		sqlite3_finalize(sel);
		sel = NULL;
		if (finished) {
			if (sqlite3_prepare_v2(db, "DELETE FROM messages WHERE id = ?1", -1, &del,
					       NULL) != SQLITE_OK)
				goto rollback;
			sqlite3_bind_text(del, 1, msg->id, -1, SQLITE_STATIC);
			if (!step_done(del))
				goto rollback;
		}
	}
	if (queue_db_exec(db, "COMMIT") < 0)
		goto rollback;
	pthread_mutex_unlock(&q->db_write_lock);
	for (size_t i = 0; i < msg->nrcpts; i++)
		if (msg->rcpts[i].state != R_OPEN || final)
			msg->rcpts[i].recorded = true;
	if (ndelayed > 0)
		msg->warned = true;
	if (finished) {
		char *p = xasprintf("%s/%s", q->spool_dir, msg->id);
		if (unlink(p) < 0 && errno != ENOENT)
			log_error("event=spool_unlink_failed queue_id=%s error=\"%s\"", msg->id,
				  strerror(errno));
		free(p);
		log_info("event=outbound_done queue_id=%s", msg->id);
	}
	for (size_t i = 0; i < ndsn; i++)
		queue_deliver_push(q, dsn_ids[i], false);
	goto out;
rollback:
	log_error("event=outbound_record_failed queue_id=%s error=\"%s\"", msg->id,
		  sqlite3_errmsg(db));
	queue_db_exec(db, "ROLLBACK");
	for (size_t i = 0; i < ndsn; i++) {
		char *p = xasprintf("%s/%s", q->spool_dir, dsn_ids[i]);
		unlink(p);
		free(p);
	}
unlock:
	pthread_mutex_unlock(&q->db_write_lock);
out:
	sqlite3_finalize(up);
	sqlite3_finalize(sel);
	sqlite3_finalize(del);
	dsn_rows_free(failed, nfailed);
	dsn_rows_free(delayed, ndelayed);
}

/* ---- start, stop ---- */

static void outbound_free_settings(struct outbound *ob)
{
	free(ob->hostname);
	free(ob->resolver);
	free(ob->sh_host);
	free(ob->sh_user);
	if (ob->sh_password != NULL)
		explicit_bzero(ob->sh_password, strlen(ob->sh_password));
	free(ob->sh_password);
	free(ob->rewrite_sender);
}

int queue_outbound_start(struct queue *q, const struct config *cfg, char **error_r)
{
	struct outbound *ob = xcalloc(1, sizeof(*ob));
	ob->q = q;
	pthread_mutex_init(&ob->lock, NULL);
	pthread_cond_init(&ob->sched_cond, NULL);
	pthread_cond_init(&ob->work_cond, NULL);
	ob->hostname = xstrdup(cfg->hostname);
	ob->resolver = xstrdup(cfg->dns_resolver != NULL ? cfg->dns_resolver : "");
	ob->port = (uint16_t)cfg->remote_port;
	ob->retry_min = cfg->retry_min;
	ob->retry_max = cfg->retry_max;
	ob->warn_after = cfg->warn_after;
	ob->max_lifetime = cfg->max_lifetime;
	ob->max_per_domain = (unsigned)cfg->max_per_domain;
	ob->connect_ms = (unsigned)cfg->connect_timeout * 1000;
	ob->command_ms = (unsigned)cfg->command_timeout * 1000;
	ob->nworkers = (size_t)cfg->queue_max_connections;
	if (cfg->smarthost != NULL && cfg->smarthost[0] != '\0') {
		if (hostport_parse(cfg->smarthost, &ob->sh_host, &ob->sh_port) < 0) {
			*error_r = xstrdup("[relay] smarthost: expected host:port");
			goto fail;
		}
		ob->sh_tls = strcmp(cfg->smarthost_tls, "tls") == 0    ? SH_TLS
			     : strcmp(cfg->smarthost_tls, "none") == 0 ? SH_NONE
								       : SH_STARTTLS;
		if (cfg->smarthost_user[0] != '\0') {
			ob->sh_user = xstrdup(cfg->smarthost_user);
			ob->sh_password = xstrdup(cfg->smarthost_password);
		}
		if (cfg->rewrite_sender[0] != '\0')
			ob->rewrite_sender = xstrdup(cfg->rewrite_sender);
	}
	/* the options are checked here, where an error can still be reported */
	struct dns_options o = {.resolver = ob->resolver, .timeout_ms = OB_DNS_TIMEOUT_MS};
	const char *derr = NULL;
	struct dns_sync *probe = dns_sync_new(&o, &derr);
	if (probe == NULL) {
		*error_r = xasprintf("outbound resolver: %s", derr);
		goto fail;
	}
	dns_sync_free(&probe);
	ob->sched_db = queue_db_open(q->db_path, error_r);
	if (ob->sched_db == NULL)
		goto fail;
	ob->workers = xcalloc(ob->nworkers, sizeof(*ob->workers));
	for (size_t i = 0; i < ob->nworkers; i++) {
		ob->workers[i].ob = ob;
		if (pthread_create(&ob->workers[i].thread, NULL, worker_main, &ob->workers[i]) != 0)
			fatal("event=pthread_create_failed what=outbound_worker");
		pthread_setname_np(ob->workers[i].thread, "outbound");
	}
	if (pthread_create(&ob->sched_thread, NULL, sched_main, ob) != 0)
		fatal("event=pthread_create_failed what=outbound_scheduler");
	pthread_setname_np(ob->sched_thread, "out-sched");
	q->outbound = ob;
	log_info("event=outbound_start workers=%zu per_domain=%u remote_port=%u smarthost=%s",
		 ob->nworkers, ob->max_per_domain, (unsigned)ob->port,
		 ob->sh_host != NULL ? cfg->smarthost : "none");
	return 0;
fail:
	sqlite3_close_v2(ob->sched_db);
	pthread_mutex_destroy(&ob->lock);
	pthread_cond_destroy(&ob->sched_cond);
	pthread_cond_destroy(&ob->work_cond);
	outbound_free_settings(ob);
	free(ob);
	return -1;
}

void queue_outbound_kick(struct queue *q)
{
	struct outbound *ob = q->outbound;
	if (ob == NULL)
		return;
	pthread_mutex_lock(&ob->lock);
	ob->kicked = true;
	pthread_cond_signal(&ob->sched_cond);
	pthread_mutex_unlock(&ob->lock);
}

void queue_outbound_stop(struct queue *q)
{
	struct outbound *ob = q->outbound;
	if (ob == NULL)
		return;
	pthread_mutex_lock(&ob->lock);
	ob->stopping = true;
	/* wake workers blocked on a peer; DNS lookups end within their deadline */
	for (size_t i = 0; i < ob->nworkers; i++)
		if (ob->workers[i].conn != NULL)
			smtpc_abort(ob->workers[i].conn);
	pthread_cond_broadcast(&ob->sched_cond);
	pthread_cond_broadcast(&ob->work_cond);
	pthread_mutex_unlock(&ob->lock);
	pthread_join(ob->sched_thread, NULL);
	for (size_t i = 0; i < ob->nworkers; i++) {
		pthread_join(ob->workers[i].thread, NULL);
		sqlite3_close_v2(ob->workers[i].db);
		dns_sync_free(&ob->workers[i].dns);
	}
	/* jobs never started: their rows stay due and are taken after the next start */
	while (ob->jobs_head != NULL) {
		struct ob_job *j = ob->jobs_head;
		ob->jobs_head = j->next;
		job_free(j);
	}
	for (size_t i = 0; i < ob->ndomains; i++)
		free(ob->domains[i].domain);
	free(ob->domains);
	free(ob->inflight);
	free(ob->workers);
	sqlite3_close_v2(ob->sched_db);
	pthread_mutex_destroy(&ob->lock);
	pthread_cond_destroy(&ob->sched_cond);
	pthread_cond_destroy(&ob->work_cond);
	outbound_free_settings(ob);
	free(ob);
	q->outbound = NULL;
	log_info("event=outbound_stop");
}
