/*
 * The SMTP server session (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
 * ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING, BINARYMIME, DSN, STARTTLS, AUTH).
 *
 * SECURITY: everything here parses network input and runs as the
 * unprivileged service user, on the event-loop thread. Nothing here blocks:
 * directory lookups, password checks and reverse DNS run on worker threads,
 * the spool commit on the queue's threads. While such a job runs the session
 * is suspended (no input is processed) and a session with jobs in flight is
 * freed only after the last one reports back.
 *
 * Shape: one state enum with enter_state(); a command table whose flags say
 * where a command is allowed and whether it may be pipelined; each command
 * has a check step (sequence, syntax, policy) and an act step.
 */
#include "smtp/smtp_session.h"

#include "lib/config.h"
#include "lib/linereader.h"
#include "lib/log.h"
#include "lib/netaddr.h"
#include "lib/strutil.h"
#include "lib/worker.h"
#include "lib/xalloc.h"
#include "dns/dns.h"
#include "mail/address.h"
#include "queue/queue.h"
#include "smtp/auth_msg.h"
#include "smtp/ratelimit.h"
#include "smtp/smtp_data.h"
#include "smtp/smtp_parser.h"
#include "smtp/smtp_tls.h"
#include "store/directory.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <strings.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define INPUT_HIGH_WATER (256 * 1024) /* stop reading while this much input waits */
#define DATA_CHUNK 16384              /* octets decoded per step */
#define AUTH_WORKERS 4                /* threads for SPF/DKIM/DMARC DNS work and signing */

enum smtp_state {
	STATE_PREGREET, /* connected, greeting not yet sent */
	STATE_INIT,     /* greeted, waiting for HELO/EHLO */
	STATE_READY,    /* HELO/EHLO done, no transaction */
	STATE_MAIL,     /* MAIL accepted, no recipient yet */
	STATE_RCPT,     /* at least one recipient accepted */
	STATE_DATA,     /* reading DATA text */
	STATE_BDAT,     /* reading a BDAT chunk */
	STATE_AUTH,     /* SASL exchange in progress */
	STATE_TLS,      /* TLS handshake in progress */
	STATE_CLOSING,  /* final reply queued, closing after the flush */
};

static const char *const state_names[] = {
	"pregreet", "init", "ready", "mail", "rcpt", "data", "bdat", "auth", "tls", "closing",
};

enum auth_step { AUTH_NONE, AUTH_PLAIN, AUTH_LOGIN_USER, AUTH_LOGIN_PASS };

struct quota_check {
	int64_t account_id;
	uint64_t quota, used;
};

struct smtp_session {
	struct smtp_session *next, *prev;
	struct smtp_server *srv;
	struct smtp_conf *conf;
	const struct config *cfg;
	struct bufferevent *bev;
	struct event *pregreet_timer;
	struct dns_query *ptr_query; /* FCrDNS of the client, in flight */
	int fcrdns;                  /* enum dns_fcrdns_status; -1 while ptr_query runs */
	struct dns_query *helo_query; /* A/AAAA of the HELO name ([policy] helo_checks) */
	int helo_dns;                /* enum dns_status of helo_query; -1 while it runs or unasked */
	bool policy_wait;            /* RCPT in s->line waits for those lookups */
	size_t policy_len;
	struct event *line_timer; /* a command line must be complete within idle_timeout */
	enum smtp_listener kind;
	enum smtp_state state;
	char ip[64];
	char ptr[256]; /* verified reverse name, "unknown" until known */
	struct sockaddr_storage sa;
	bool trusted;        /* client in trusted_networks */
	bool tls;            /* TLS is up */
	bool esmtp;          /* EHLO (not HELO) */
	char *helo;
	char *auth_user;     /* authenticated account address */
	unsigned errors;
	unsigned messages;
	unsigned pending;    /* worker/queue jobs in flight */
	bool suspended;      /* waiting for a job: input is not processed */
	bool dead;           /* connection gone; free when pending == 0 */
	bool draining;       /* close after the current transaction */
	bool improper_pipelining; /* sent commands ahead of time without PIPELINING */
	struct evbuffer *replies; /* queued until the input is drained (PIPELINING) */
	struct line_reader lr;
	char line[SMTP_AUTH_LINE_MAX + 1];

	/* transaction */
	struct smtp_mail_args mail;
	struct envelope env;
	size_t rcpt_cap;
	struct quota_check *quota;
	size_t nquota, quota_cap;
	unsigned rejected_rcpts;
	char queue_id[QUEUE_ID_MAX];
	struct spool_msg *msg;
	struct auth_msg *auth; /* SPF/DKIM/DMARC or DKIM signing of this message */
	char *arc_domain;      /* an accepted alias of it forwards outside: ARC-seal as it */
	struct smtp_data data;
	char *dbuf;          /* DATA decode output, 2 * DATA_CHUNK + 4; only during DATA */
	uint64_t size;       /* message octets after our Received header */
	bool too_big, write_failed, bdat_started, bdat_last;
	const char *chunk_refusal;  /* this BDAT chunk is read and discarded, then refused */
	enum smtp_state chunk_prev; /* state to return to after a refused chunk */
	struct event *close_timer;  /* waiting for TLS output to reach the socket */
	unsigned close_tries;
	int write_errno;
	uint64_t bdat_remaining;

	/* AUTH */
	enum auth_step auth_step;
	char *auth_login;
};

/* ------------------------------------------------------------------ */
/* bookkeeping */

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static void timer_add_ms(struct event *ev, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(ev, &tv);
}

void smtp_server_check_drained(struct smtp_server *srv)
{
	if (srv->draining && srv->nsessions == 0 && srv->commits == 0 && srv->drained != NULL)
		srv->drained(srv);
}

static void enter_state(struct smtp_session *s, enum smtp_state st)
{
	if (s->state != st)
		log_debug("event=smtp_state client=%s old=%s new=%s", s->ip, state_names[s->state],
			  state_names[st]);
	s->state = st;
}

void smtp_conf_unref(struct smtp_conf **confp)
{
	struct smtp_conf *c = *confp;
	*confp = NULL;
	if (c == NULL || --c->refs > 0)
		return;
	if (c->tls != NULL)
		SSL_CTX_free(c->tls);
	config_free(&c->cfg);
	free(c);
}

static const char *listener_name(enum smtp_listener k)
{
	return k == SMTP_LISTENER_SMTP ? "smtp"
	       : k == SMTP_LISTENER_SUBMISSION ? "submission"
					       : "submissions";
}

static void reply(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = xvasprintf(fmt, ap);
	va_end(ap);
	evbuffer_add_printf(s->replies, "%s\r\n", text);
	if (text[0] == '5' || (text[0] == '4' && strncmp(text, "421", 3) != 0)) {
		/* every refusal is logged with the client IP */
		char q[600];
		log_info("event=reject client=%s reply=%s", s->ip, log_quote(q, sizeof(q), text, 200));
	}
	free(text);
}

static void flush(struct smtp_session *s)
{
	if (s->bev == NULL || evbuffer_get_length(s->replies) == 0)
		return;
	/*
	 * A plain socket with nothing queued before us: write now. Through the
	 * bufferevent every reply cost two epoll_ctl() (EPOLLOUT on, then off)
	 * and an extra loop iteration before its writev(). Whatever the socket
	 * does not take now, and everything on TLS, goes the usual way.
	 */
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
	    bufferevent_get_underlying(s->bev) == NULL &&
	    bufferevent_openssl_get_ssl(s->bev) == NULL) {
		evutil_socket_t fd = bufferevent_getfd(s->bev);
		log_flush(); /* the lines before the replies they describe (log_defer()) */
		if (fd >= 0 && evbuffer_write(s->replies, fd) < 0) {
			/* EAGAIN, or an error the bufferevent reports through on_event */
		}
	}
	if (evbuffer_get_length(s->replies) > 0)
		bufferevent_write_buffer(s->bev, s->replies);
}

static void transaction_reset(struct smtp_session *s)
{
	envelope_free_fields(&s->env);
	memset(&s->env, 0, sizeof(s->env));
	s->rcpt_cap = 0;
	free(s->quota);
	s->quota = NULL;
	s->nquota = s->quota_cap = 0;
	s->rejected_rcpts = 0;
	memset(&s->mail, 0, sizeof(s->mail));
	spool_msg_free(&s->msg);
	auth_msg_free(&s->auth);
	xfree(&s->arc_domain);
	s->queue_id[0] = '\0';
	s->size = 0;
	s->too_big = s->write_failed = s->bdat_started = s->bdat_last = false;
	s->chunk_refusal = NULL;
	s->write_errno = 0;
	s->bdat_remaining = 0;
	xfree(&s->dbuf); /* idle sessions keep no DATA buffer */
}

static void session_free(struct smtp_session *s)
{
	transaction_reset(s);
	free(s->helo);
	free(s->auth_user);
	free(s->auth_login);
	free(s->dbuf);
	evbuffer_free(s->replies);
	smtp_conf_unref(&s->conf);
	free(s);
}

/* Drop the connection now; the struct lives on while jobs are pending. */
static void session_destroy(struct smtp_session *s)
{
	if (s->dead)
		return;
	struct smtp_server *srv = s->srv;
	s->dead = true;
	log_info("event=disconnect client=%s messages=%u", s->ip, s->messages);
	if (s->pregreet_timer != NULL)
		event_free(s->pregreet_timer);
	s->pregreet_timer = NULL;
	if (s->line_timer != NULL)
		event_free(s->line_timer);
	s->line_timer = NULL;
	dns_cancel(&s->ptr_query); /* its callback never runs after this */
	dns_cancel(&s->helo_query);
	if (s->close_timer != NULL)
		event_free(s->close_timer);
	s->close_timer = NULL;
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	s->bev = NULL;
	char key[80];
	snprintf(key, sizeof(key), "c:%s", s->ip);
	ratelimit_active(srv->limits, key, -1);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	srv->nsessions--;
	if (s->pending == 0)
		session_free(s);
	smtp_server_check_drained(srv);
}

/* Bytes still on their way to the socket (a TLS filter keeps them below it). */
static size_t output_pending(struct bufferevent *bev)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(bev));
	struct bufferevent *under = bufferevent_get_underlying(bev);
	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

static void on_close_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	/* bounded: give the peer about two seconds to take our last reply */
	if (s->bev == NULL || output_pending(s->bev) == 0 || ++s->close_tries > 40) {
		session_destroy(s);
		return;
	}
	timer_add_ms(s->close_timer, 50);
}

static void on_write_drained(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	if (output_pending(bev) == 0) {
		session_destroy(s);
		return;
	}
	if (s->close_timer == NULL) {
		s->close_timer = evtimer_new(s->srv->base, on_close_timer, s);
		timer_add_ms(s->close_timer, 50);
	}
}

/* Send what is queued, then close. */
static void session_close(struct smtp_session *s)
{
	if (s->dead)
		return;
	enter_state(s, STATE_CLOSING);
	flush(s);
	if (s->bev == NULL || output_pending(s->bev) == 0) {
		session_destroy(s);
		return;
	}
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setcb(s->bev, NULL, on_write_drained, on_event, s);
	on_write_drained(s->bev, s);
}

/* Count a protocol error; true if the session was closed for too many. */
static bool count_error(struct smtp_session *s)
{
	if (++s->errors < s->cfg->max_errors)
		return false;
	reply(s, "421 4.7.0 Too many errors");
	log_info("event=reject client=%s reason=too_many_errors errors=%u", s->ip, s->errors);
	session_close(s);
	return true;
}

/* A job finished; true if the session is gone (the caller must stop). */
static bool job_done(struct smtp_session *s)
{
	s->pending--;
	if (s->dead) {
		if (s->pending == 0)
			session_free(s);
		return true;
	}
	return false;
}

static void process_input(struct smtp_session *s);

static void resume(struct smtp_session *s)
{
	s->suspended = false;
	if (s->state == STATE_CLOSING) {
		session_close(s);
		return;
	}
	process_input(s);
}

/* After a transaction ended: honour a pending shutdown. */
static bool maybe_drain(struct smtp_session *s)
{
	if (!s->draining)
		return false;
	reply(s, "421 4.3.2 Shutting down");
	session_close(s);
	return true;
}

/* ------------------------------------------------------------------ */
/* jobs on the worker pool */

struct rcpt_job {
	struct smtp_session *s;
	const char *data_dir;
	char address[ADDRESS_FORMAT_SIZE];
	struct smtp_rcpt_args args;
	enum resolve_result result;
	struct resolved res;
	int local_domain;
};

static void rcpt_work(void *arg)
{
	struct rcpt_job *j = arg;
	struct directory *dir = directory_thread(j->data_dir);
	memset(&j->res, 0, sizeof(j->res));
	if (dir == NULL) {
		j->result = RESOLVE_ERROR;
		return;
	}
	j->result = directory_resolve(dir, j->address, &j->res);
}

static bool rcpt_may_relay(const struct smtp_session *s)
{
	return s->trusted || s->auth_user != NULL;
}

static void rcpt_add(struct smtp_session *s, const char *address, const struct smtp_rcpt_args *a,
		     bool local)
{
	s->env.rcpts = xgrow(s->env.rcpts, &s->rcpt_cap, s->env.nrcpts + 1, sizeof(*s->env.rcpts));
	struct envelope_rcpt *r = &s->env.rcpts[s->env.nrcpts++];
	memset(r, 0, sizeof(*r));
	r->address = xstrdup(address);
	r->notify = a->notify;
	r->orcpt = a->orcpt[0] != '\0' ? xstrdup(a->orcpt) : NULL;
	r->local = local;
	enter_state(s, STATE_RCPT);
}

/* The reply to a RCPT whose lookup is done (here or on a worker). */
static void rcpt_apply(struct smtp_session *s, struct rcpt_job *j)
{
	char q[600];
	const char *qa = log_quote(q, sizeof(q), j->address, 300);
	switch (j->result) {
	case RESOLVE_OK: {
		for (size_t i = 0; i < j->res.naccounts; i++) {
			const struct account *acc = &j->res.accounts[i];
			if (acc->quota > 0 && acc->used >= acc->quota) {
				reply(s, "452 4.2.2 Mailbox full");
				goto refused;
			}
		}
		for (size_t i = 0; i < j->res.naccounts; i++) {
			const struct account *acc = &j->res.accounts[i];
			if (acc->quota == 0)
				continue;
			s->quota = xgrow(s->quota, &s->quota_cap, s->nquota + 1, sizeof(*s->quota));
			s->quota[s->nquota++] = (struct quota_check){acc->id, acc->quota, acc->used};
		}
		rcpt_add(s, j->address, &j->args, j->res.naccounts > 0);
		/* forwarded outside: the copies carry an ARC set of the alias's domain */
		const char *at = strrchr(j->address, '@');
		if (j->res.nexternal > 0 && s->arc_domain == NULL && at != NULL)
			s->arc_domain = str_lower(xstrdup(at + 1));
		log_info("event=rcpt client=%s to=%s local=%s", s->ip, qa,
			 j->res.naccounts > 0 ? "yes" : "no");
		reply(s, "250 2.1.5 Ok");
		break;
	}
	case RESOLVE_NOT_LOCAL:
		if (rcpt_may_relay(s)) {
			rcpt_add(s, j->address, &j->args, false);
			log_info("event=rcpt client=%s to=%s local=no relay=yes", s->ip, qa);
			reply(s, "250 2.1.5 Ok");
		} else {
			log_info("event=relay_denied client=%s to=%s", s->ip, qa);
			reply(s, "554 5.7.1 Relay access denied");
			s->rejected_rcpts++;
			count_error(s);
		}
		break;
	case RESOLVE_UNKNOWN_USER:
		reply(s, "550 5.1.1 Recipient address rejected: User unknown");
		s->rejected_rcpts++;
		count_error(s);
		break;
	case RESOLVE_LOOP:
		reply(s, "550 5.4.6 Recipient address rejected: alias loop");
		s->rejected_rcpts++;
		break;
	case RESOLVE_ERROR:
	default:
		reply(s, "451 4.3.0 Temporary lookup failure");
		break;
	}
	return;
refused:
	s->rejected_rcpts++;
}

static void rcpt_done(void *arg)
{
	struct rcpt_job *j = arg;
	struct smtp_session *s = j->s;
	if (!job_done(s)) {
		rcpt_apply(s, j);
		if (!s->dead)
			resume(s);
	}
	resolved_free(&j->res);
	free(j);
}

/*
 * The lookup on the loop thread, without the two thread hand-offs of a
 * worker job (~10 % of the CPU of a message at 16 connections): it is a few
 * indexed reads of pages SQLite or the kernel has cached. False if it must go
 * to a worker instead: it failed (a lock taken, say; the worker waits for
 * it), or lookups here were slow lately (a cold cache, a busy disk), when the
 * loop must not wait for them.
 */
#define RCPT_HERE_SLOW_NS (20 * 1000000LL)
#define RCPT_HERE_OFF_S 10

static bool rcpt_here(struct smtp_session *s, struct rcpt_job *j)
{
	struct smtp_server *srv = s->srv;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (t0.tv_sec < srv->rcpt_here_off_until)
		return false;
	struct directory *dir = directory_thread_nowait(j->data_dir);
	if (dir == NULL)
		return false;
	memset(&j->res, 0, sizeof(j->res));
	/* one WAL read lock for the lookup's statements, not one each (two fcntl) */
	bool reading = directory_read_begin(dir) == 0;
	j->result = directory_resolve(dir, j->address, &j->res);
	if (reading)
		directory_read_end(dir);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	if (ns > RCPT_HERE_SLOW_NS) {
		log_warn("event=rcpt_lookup_slow ms=%lld effect=\"lookups on workers for %d s\"",
			 ns / 1000000, RCPT_HERE_OFF_S);
		srv->rcpt_here_off_until = t1.tv_sec + RCPT_HERE_OFF_S;
	}
	if (j->result == RESOLVE_ERROR) {
		resolved_free(&j->res);
		return false;
	}
	return true;
}

struct sender_job {
	struct smtp_session *s;
	const char *data_dir;
	char *user;
	char sender[ADDRESS_FORMAT_SIZE];
	int owned;
};

static void sender_work(void *arg)
{
	struct sender_job *j = arg;
	struct directory *dir = directory_thread(j->data_dir);
	j->owned = dir == NULL ? -1 : directory_sender_owned(dir, j->user, j->sender);
}

static void mail_accepted(struct smtp_session *s)
{
	char buf[ADDRESS_FORMAT_SIZE];
	s->env.sender = xstrdup(address_format(&s->mail.addr, buf, sizeof(buf)));
	char q[600];
	log_info("event=mail client=%s from=%s size=%llu", s->ip,
		 log_quote(q, sizeof(q), s->env.sender, 300), (unsigned long long)s->mail.size);
	enter_state(s, STATE_MAIL);
	reply(s, "250 2.1.0 Ok");
}

static void sender_done(void *arg)
{
	struct sender_job *j = arg;
	struct smtp_session *s = j->s;
	if (job_done(s))
		goto out;
	if (j->owned == 1) {
		mail_accepted(s);
	} else if (j->owned == 0) {
		char q[600];
		log_info("event=sender_not_owned client=%s user=%s from=%s", s->ip, j->user,
			 log_quote(q, sizeof(q), j->sender, 300));
		reply(s, "553 5.7.1 Sender address rejected: not owned by user");
		count_error(s);
	} else {
		reply(s, "451 4.3.0 Temporary lookup failure");
	}
	if (!s->dead)
		resume(s);
out:
	free(j->user);
	free(j);
}

struct auth_job {
	struct smtp_session *s;
	const char *data_dir, *default_domain;
	char *login, *password;
	int result;
	struct account acc;
};

static void auth_work(void *arg)
{
	struct auth_job *j = arg;
	struct directory *dir = directory_thread(j->data_dir);
	memset(&j->acc, 0, sizeof(j->acc));
	j->result = dir == NULL ? -1
				: directory_authenticate(dir, j->login, j->password, j->default_domain,
							 &j->acc);
	explicit_bzero(j->password, strlen(j->password));
}

static void auth_done(void *arg)
{
	struct auth_job *j = arg;
	struct smtp_session *s = j->s;
	if (job_done(s))
		goto out;
	enter_state(s, STATE_READY);
	char q[600];
	const char *ql = log_quote(q, sizeof(q), j->login, 200);
	if (j->result == 1) {
		s->auth_user = xstrdup(j->acc.address);
		log_info("event=auth client=%s user=%s", s->ip, s->auth_user);
		reply(s, "235 2.7.0 Authentication successful");
	} else if (j->result == 0) {
		time_t now = time(NULL);
		unsigned win = (unsigned)s->cfg->auth_failure_window;
		char key[400];
		snprintf(key, sizeof(key), "a:%s", s->ip);
		unsigned nip = ratelimit_hit(s->srv->limits, key, now, win);
		snprintf(key, sizeof(key), "u:%s", j->login);
		str_lower(key);
		unsigned nuser = ratelimit_hit(s->srv->limits, key, now, win);
		log_info("event=auth_failed client=%s user=%s failures_ip=%u failures_user=%u", s->ip,
			 ql, nip, nuser);
		reply(s, "535 5.7.8 Authentication credentials invalid");
		count_error(s);
	} else {
		reply(s, "454 4.7.0 Temporary authentication failure");
	}
	if (!s->dead)
		resume(s);
out:
	account_free_fields(&j->acc);
	free(j->login);
	free(j->password);
	free(j);
}

/* FCrDNS of the client (RFC 8601's iprev): the name shown in Received is
   "unknown" unless the PTR name resolves back to the client's address. */
static void policy_lookup_done(struct smtp_session *s);

/*
 * The FCrDNS answers of the last FCRDNS_CACHE_MS per client address (loop
 * thread only, direct-mapped): a client that opens one connection per
 * message (most MTAs) had each one wait for libunbound's thread, about 35
 * system calls and two thread wake-ups for an answer its cache already
 * held. Temporary errors are not kept.
 */
#define FCRDNS_CACHE_SLOTS 256
#define FCRDNS_CACHE_MS 10000
struct fcrdns_cached {
	const struct dns_resolver *res; /* answers of another resolver do not count */
	char ip[64];
	int status;
	char name[256];
	uint64_t until_ms;
};
static struct fcrdns_cached fcrdns_cache[FCRDNS_CACHE_SLOTS];

static uint64_t loop_now_ms(struct smtp_server *srv)
{
	struct timeval tv;
	event_base_gettimeofday_cached(srv->base, &tv);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static struct fcrdns_cached *fcrdns_slot(const char *ip)
{
	uint32_t h = 2166136261u;
	for (const char *p = ip; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return &fcrdns_cache[h % FCRDNS_CACHE_SLOTS];
}

/* The cached answer for the session's client, if any: then no lookup is needed. */
static bool fcrdns_from_cache(struct smtp_session *s)
{
	struct fcrdns_cached *c = fcrdns_slot(s->ip);
	if (c->res != s->srv->dns || strcmp(c->ip, s->ip) != 0 ||
	    c->until_ms <= loop_now_ms(s->srv))
		return false;
	s->fcrdns = c->status;
	if (c->status == DNS_FCRDNS_PASS)
		snprintf(s->ptr, sizeof(s->ptr), "%s", c->name);
	log_debug("event=fcrdns client=%s result=%s name=%s cached=1", s->ip,
		  dns_fcrdns_status_name((enum dns_fcrdns_status)c->status), s->ptr);
	return true;
}

static void on_fcrdns(struct dns_fcrdns_result *fr, void *arg)
{
	struct smtp_session *s = arg;
	s->ptr_query = NULL;
	s->fcrdns = (int)fr->status;
	if (fr->status == DNS_FCRDNS_PASS && fr->name != NULL)
		snprintf(s->ptr, sizeof(s->ptr), "%s", fr->name);
	if (fr->status != DNS_FCRDNS_TEMPERROR) {
		struct fcrdns_cached *c = fcrdns_slot(s->ip);
		c->res = s->srv->dns;
		snprintf(c->ip, sizeof(c->ip), "%s", s->ip);
		c->status = (int)fr->status;
		snprintf(c->name, sizeof(c->name), "%s", s->ptr);
		c->until_ms = loop_now_ms(s->srv) + FCRDNS_CACHE_MS;
	}
	log_debug("event=fcrdns client=%s result=%s name=%s", s->ip,
		  dns_fcrdns_status_name(fr->status), s->ptr);
	dns_fcrdns_result_free(&fr);
	policy_lookup_done(s);
}

static void on_helo_addr(struct dns_result *res, void *arg)
{
	struct smtp_session *s = arg;
	s->helo_query = NULL;
	s->helo_dns = res->status == DNS_NOERROR && res->count == 0 ? DNS_NXDOMAIN
								    : (int)res->status;
	dns_result_free(&res);
	policy_lookup_done(s);
}

/* ------------------------------------------------------------------ */
/* commit */

static void commit_done(void *arg, bool ok, int error_number)
{
	struct smtp_session *s = arg;
	struct smtp_server *srv = s->srv;
	srv->commits--;
	if (job_done(s)) {
		smtp_server_check_drained(srv);
		return;
	}
	if (ok) {
		s->messages++;
		if (!s->trusted && s->auth_user == NULL) {
			char key[80];
			snprintf(key, sizeof(key), "m:%s", s->ip);
			ratelimit_hit(s->srv->limits, key, time(NULL), 60);
		}
		log_info("event=queued client=%s queue_id=%s size=%llu", s->ip, s->queue_id,
			 (unsigned long long)s->size);
		reply(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
	} else if (error_number == ENOSPC || error_number == EDQUOT) {
		reply(s, "452 4.3.1 Insufficient system storage");
	} else {
		reply(s, "451 4.3.0 Error: queue file write error");
	}
	transaction_reset(s);
	enter_state(s, STATE_READY);
	if (maybe_drain(s))
		return;
	resume(s);
}

static const char *protocol_name(const struct smtp_session *s)
{
	static const char *const names[] = {"ESMTP",    "ESMTPS",    "ESMTPA",    "ESMTPSA",
					    "UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA"};
	if (!s->esmtp)
		return "SMTP";
	int i = (s->tls ? 1 : 0) + (s->auth_user != NULL ? 2 : 0) + (s->mail.smtputf8 ? 4 : 0);
	return names[i];
}

/* Our Received header (RFC 5321 4.4), first in the spooled message. */
static void write_received(struct smtp_session *s)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	char tlsinfo[200] = "";
	if (s->tls) {
		SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
		if (ssl != NULL) {
			char d[160];
			smtp_tls_describe(ssl, d, sizeof(d));
			snprintf(tlsinfo, sizeof(tlsinfo), "\r\n\t(using %s)", d);
		}
	}
	char forpart[ADDRESS_FORMAT_SIZE + 16] = "";
	if (s->env.nrcpts == 1)
		snprintf(forpart, sizeof(forpart), "\r\n\tfor <%s>", s->env.rcpts[0].address);
	/* the HELO name is client data: keep only printable ASCII in the header */
	char helo[256];
	size_t o = 0;
	for (const char *p = s->helo; *p != '\0' && o + 1 < sizeof(helo); p++)
		helo[o++] = (*p > 32 && *p < 127 && *p != '(' && *p != ')') ? *p : '?';
	helo[o] = '\0';
	char *hdr = xasprintf("Received: from %s (%s [%s])%s\r\n\tby %s (Postern) with %s id %s%s;"
			      "\r\n\t%s\r\n",
			      helo, s->ptr, s->ip, tlsinfo, s->cfg->hostname, protocol_name(s),
			      s->queue_id, forpart, date);
	if (spool_msg_write(s->msg, hdr, strlen(hdr)) < 0) {
		s->write_failed = true;
		s->write_errno = errno;
	}
	free(hdr);
}

/* auth_msg's writer: the bytes to spool, after the header filter. */
static void spool_write(void *arg, const char *p, size_t n)
{
	struct smtp_session *s = arg;
	if (s->write_failed)
		return;
	if (spool_msg_write(s->msg, p, n) < 0) {
		s->write_failed = true;
		s->write_errno = errno;
	}
}

/*
 * Mail from the internet (smtp listener, untrusted, not authenticated) is
 * checked; mail from our users and trusted networks is signed.
 */
static bool inbound(const struct smtp_session *s)
{
	return s->kind == SMTP_LISTENER_SMTP && !s->trusted && s->auth_user == NULL;
}

static void message_begin(struct smtp_session *s)
{
	queue_id_new(s->queue_id);
	s->msg = spool_msg_new(s->cfg->data_dir, s->queue_id);
	s->size = 0;
	write_received(s);
	struct auth_params ap = {
	    .hostname = s->cfg->hostname,
	    .data_dir = s->cfg->data_dir,
	    .dns_resolver = s->cfg->dns_resolver,
	    .dmarc_reject = s->cfg->dmarc_reject,
	    .arc_trusted = s->cfg->arc_trusted_sealers,
	    .arc_seal_domain = inbound(s) ? s->arc_domain : NULL,
	    .client = s->sa,
	    .helo = s->helo,
	    .mail_from = s->env.sender,
	    .iprev = s->fcrdns == DNS_FCRDNS_PASS	   ? "pass"
		     : s->fcrdns == DNS_FCRDNS_FAIL	   ? "fail"
		     : s->fcrdns == DNS_FCRDNS_NONE	   ? "permerror"
		     : s->fcrdns == DNS_FCRDNS_TEMPERROR ? "temperror"
							   : NULL,
	    .iprev_name = s->fcrdns == DNS_FCRDNS_PASS ? s->ptr : NULL,
	};
	s->auth = auth_msg_new(inbound(s) ? AUTH_MODE_VERIFY : AUTH_MODE_SIGN, &ap, spool_write, s);
}

static void message_write(struct smtp_session *s, const char *p, size_t n)
{
	if (n == 0)
		return;
	s->size += n;
	if (s->size > s->cfg->max_message_size)
		s->too_big = true;
	if (s->too_big || s->write_failed)
		return; /* keep reading to the end, store nothing more */
	auth_msg_push(s->auth, p, n);
}

/*
 * The whole message has arrived (DATA end or BDAT LAST): refuse it, or hand
 * it to the queue and answer from the commit callback.
 */
static void message_commit(struct smtp_session *s);

struct authres_job {
	struct smtp_session *s;
	struct auth_msg *auth;
};

static void authres_job_work(void *arg)
{
	struct authres_job *j = arg;
	auth_msg_work(j->auth);
}

/* The results of auth_msg_work (or auth_msg_done_early): refuse, or commit. */
static void authres_apply(struct smtp_session *s, const struct auth_msg *auth)
{
	log_info("event=auth_results client=%s queue_id=%s %s", s->ip, s->queue_id,
	         auth_msg_summary(auth));
	if (auth_msg_verdict(auth) == AUTH_REJECT) {
		reply(s, "%s", auth_msg_reject_text(auth));
		transaction_reset(s);
		enter_state(s, STATE_READY);
		if (!maybe_drain(s))
			resume(s);
		return;
	}
	const char *prefix = auth_msg_prefix(auth);
	spool_msg_prepend(s->msg, prefix, strlen(prefix));
	s->suspended = false;
	message_commit(s);
}

static void authres_job_done(void *arg)
{
	struct authres_job *j = arg;
	struct smtp_session *s = j->s;
	if (!job_done(s))
		authres_apply(s, j->auth);
	auth_msg_free(&j->auth);
	free(j);
}

static void message_end(struct smtp_session *s, bool data_phase)
{
	const char *refusal = NULL;
	bool header_ok = s->too_big || s->write_failed || auth_msg_end(s->auth);
	if (data_phase && (s->data.flags & SMTP_DATA_LINE_TOO_LONG))
		refusal = "500 5.5.2 Line too long";
	else if (data_phase && (s->data.flags & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR)) &&
		 s->cfg->bare_newline_reject)
		refusal = "554 5.5.0 Bare LF or CR not allowed, use CRLF line endings";
	else if (s->too_big)
		refusal = "552 5.3.4 Message size exceeds fixed maximum message size";
	else if (!header_ok)
		refusal = "552 5.3.4 Message header section too large";
	else if (s->write_failed)
		refusal = s->write_errno == ENOSPC ? "452 4.3.1 Insufficient system storage"
						   : "451 4.3.0 Error: queue file write error";
	if (refusal == NULL) {
		for (size_t i = 0; i < s->nquota; i++) {
			if (s->quota[i].used + s->size > s->quota[i].quota) {
				refusal = "452 4.2.2 Mailbox full";
				break;
			}
		}
	}
	if (refusal != NULL) {
		reply(s, "%s", refusal);
		transaction_reset(s);
		enter_state(s, STATE_READY);
		maybe_drain(s);
		return;
	}
	/*
	 * Nothing to check or sign (mail of a trusted or authenticated client
	 * whose domain has no DKIM key): commit now, without the round trip to an
	 * auth worker (two thread wake-ups and an eventfd per message).
	 */
	if (auth_msg_done_early(s->auth)) {
		struct auth_msg *auth = s->auth;
		s->auth = NULL;
		authres_apply(s, auth);
		auth_msg_free(&auth);
		return;
	}
	/* DNS lookups, verification and signing on a worker; then the commit */
	struct authres_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->auth = s->auth;
	s->auth = NULL;
	s->pending++;
	s->suspended = true;
	flush(s);
	if (s->srv->auth_workers == NULL)
		s->srv->auth_workers = worker_pool_new(s->srv->base, AUTH_WORKERS);
	worker_submit(s->srv->auth_workers, authres_job_work, authres_job_done, j);
}

/* Hand the message to the queue; the commit callback answers. */
static void message_commit(struct smtp_session *s)
{
	/* queue_commit() takes the fields over and clears the struct */
	struct envelope envelope = s->env;
	struct envelope *env = &envelope;
	memset(&s->env, 0, sizeof(s->env));
	s->rcpt_cap = 0;
	env->dsn_ret = s->mail.ret[0] != '\0' ? xstrdup(s->mail.ret) : NULL;
	env->dsn_envid = s->mail.envid[0] != '\0' ? xstrdup(s->mail.envid) : NULL;
	env->smtputf8 = s->mail.smtputf8;
	env->eightbit = s->mail.body == SMTP_BODY_8BITMIME || s->mail.body == SMTP_BODY_BINARYMIME;
	env->auth_user = s->auth_user != NULL ? xstrdup(s->auth_user) : NULL;
	env->client_ip = xstrdup(s->ip);
	env->client_helo = xstrdup(s->helo != NULL ? s->helo : "");
	env->protocol = xstrdup(protocol_name(s));
	struct spool_msg *msg = s->msg;
	s->msg = NULL;
	s->suspended = true;
	s->pending++;
	s->srv->commits++;
	flush(s);
	queue_commit(s->srv->queue, msg, env, commit_done, s);
}

/* ------------------------------------------------------------------ */
/* commands */

#define CMD_BEFORE_HELO 0x01 /* allowed before HELO/EHLO */
#define CMD_BEFORE_AUTH 0x02 /* allowed on submission before AUTH */
#define CMD_PIPELINE 0x04    /* may be followed by more commands in the same packet */
#define CMD_ESMTP 0x08       /* only after EHLO */

struct smtp_cmd {
	enum smtp_verb verb;
	unsigned flags;
	size_t max_line; /* longest line, without CRLF */
	/* false: refused, the reply is queued */
	bool (*check)(struct smtp_session *s, const struct smtp_command *c);
	void (*act)(struct smtp_session *s, const struct smtp_command *c);
};

static bool no_arg(struct smtp_session *s, const struct smtp_command *c)
{
	if (c->arg_len > 0) {
		reply(s, "501 5.5.4 Syntax error: no parameters allowed");
		return false;
	}
	return true;
}

static bool helo_check(struct smtp_session *s, const struct smtp_command *c)
{
	if (c->arg_len == 0) {
		reply(s, "501 5.5.4 Syntax: %s hostname", c->verb == SMTP_EHLO ? "EHLO" : "HELO");
		return false;
	}
	/* RFC 5321 4.1.1.1: a domain or an address literal; we are lenient about its syntax
	   (as Postfix is by default) but not about control octets or malformed UTF-8 */
	const unsigned char *a = (const unsigned char *)c->arg;
	bool ok = utf8_valid(a, c->arg_len);
	for (size_t i = 0; ok && i < c->arg_len; i++)
		if (a[i] < 0x20 || a[i] == 0x7f)
			ok = false;
	if (!ok) {
		log_info("event=reject client=%s reason=bad_helo", s->ip);
		reply(s, "501 5.5.2 Invalid %s name", c->verb == SMTP_EHLO ? "EHLO" : "HELO");
		return false;
	}
	return true;
}

static bool auth_offered(const struct smtp_session *s)
{
	return s->tls && s->auth_user == NULL &&
	       (s->kind != SMTP_LISTENER_SMTP || s->cfg->auth_on_smtp);
}

static bool starttls_offered(const struct smtp_session *s)
{
	return !s->tls && s->conf->tls != NULL && s->kind != SMTP_LISTENER_SUBMISSIONS;
}

/* [policy] applies to mail from the internet: smtp listener, untrusted, not authenticated. */
static bool policy_applies(const struct smtp_session *s)
{
	return s->kind == SMTP_LISTENER_SMTP && !s->trusted && s->auth_user == NULL;
}

/* A domain name with a dot inside, not an address (RFC 5321 4.1.1.1 wants a FQDN). */
static bool helo_is_fqdn(const char *h)
{
	unsigned char tmp[16];
	size_t n = strlen(h);
	if (n == 0 || h[0] == '[' || h[0] == '.' || strchr(h, '.') == NULL ||
	    strstr(h, "..") != NULL)
		return false;
	if (h[n - 1] == '.')
		n--;
	char *copy = xstrndup(h, n);
	bool ip = inet_pton(AF_INET, copy, tmp) == 1 || inet_pton(AF_INET6, copy, tmp) == 1;
	free(copy);
	return !ip && strchr(h, '.') < h + n;
}

/* An address literal naming the address the client connected to. */
static bool helo_is_our_address(const struct smtp_session *s)
{
	const char *h = s->helo;
	size_t n = strlen(h);
	if (n < 3 || h[0] != '[' || h[n - 1] != ']')
		return false;
	char lit[64];
	const char *in = h + 1;
	size_t len = n - 2;
	if (len > 5 && strncasecmp(in, "IPv6:", 5) == 0) {
		in += 5;
		len -= 5;
	}
	if (len >= sizeof(lit))
		return false;
	memcpy(lit, in, len);
	lit[len] = '\0';
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (s->bev == NULL || getsockname(bufferevent_getfd(s->bev), (struct sockaddr *)&ss, &sl) < 0)
		return false;
	unsigned char a[16];
	if (ss.ss_family == AF_INET)
		return inet_pton(AF_INET, lit, a) == 1 &&
		       memcmp(a, &((struct sockaddr_in *)&ss)->sin_addr, 4) == 0;
	if (ss.ss_family == AF_INET6) {
		const unsigned char *me = (const unsigned char *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
		if (inet_pton(AF_INET6, lit, a) == 1)
			return memcmp(a, me, 16) == 0;
		/* a v4-mapped listener address and an IPv4 literal */
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		return inet_pton(AF_INET, lit, a) == 1 && memcmp(me, mapped, 12) == 0 &&
		       memcmp(me + 12, a, 4) == 0;
	}
	return false;
}

/*
 * [policy] require_fcrdns and helo_checks, at RCPT. Returns the refusal, or
 * NULL to go on (with `log`, what would have been refused is only logged).
 * As Postfix's reject_unknown_client_hostname / reject_unknown_helo_hostname:
 * 4xx while DNS fails temporarily, 5xx when the answer is definitive.
 */
static const char *client_policy(struct smtp_session *s, char *buf, size_t size)
{
	const char *fc = s->cfg->require_fcrdns, *hc = s->cfg->helo_checks;
	const char *refusal = NULL;
	char q[300];
	if (strcmp(fc, "no") != 0 && s->fcrdns != DNS_FCRDNS_PASS) {
		bool temp = s->fcrdns == DNS_FCRDNS_TEMPERROR || s->fcrdns < 0;
		snprintf(buf, size, "%s Client host rejected: cannot find your hostname, [%s]",
			 temp ? "450 4.7.25" : "550 5.7.25", s->ip);
		log_info("event=policy check=fcrdns client=%s result=%s action=%s", s->ip,
			 s->fcrdns < 0 ? "none"
				       : dns_fcrdns_status_name((enum dns_fcrdns_status)s->fcrdns),
			 fc);
		if (strcmp(fc, "reject") == 0)
			return buf;
	}
	if (strcmp(hc, "no") == 0)
		return NULL;
	const char *h = s->helo != NULL ? s->helo : "";
	const char *why = NULL;
	if (helo_is_our_address(s)) {
		snprintf(buf, size, "550 5.7.1 <%s>: Helo command rejected: that is my address", h);
		why = "our_address";
	} else if (h[0] == '[') {
		/* another address literal is a valid HELO (RFC 5321 4.1.3) */
	} else if (!helo_is_fqdn(h)) {
		snprintf(buf, size, "504 5.5.2 <%s>: Helo command rejected: need fully-qualified "
				    "hostname", h);
		why = "not_fqdn";
	} else if (strcasecmp(h, s->cfg->hostname) == 0) {
		snprintf(buf, size, "550 5.7.1 <%s>: Helo command rejected: that is my name", h);
		why = "our_name";
	} else if (s->helo_dns != DNS_NOERROR) {
		bool temp = s->helo_dns != DNS_NXDOMAIN;
		snprintf(buf, size, "%s <%s>: Helo command rejected: Host not found",
			 temp ? "450 4.7.1" : "550 5.7.1", h);
		why = temp ? "lookup_failed" : "not_found";
	}
	if (why != NULL) {
		log_info("event=policy check=helo client=%s helo=%s result=%s action=%s", s->ip,
			 log_quote(q, sizeof(q), h, 100), why, hc);
		if (strcmp(hc, "reject") == 0)
			refusal = buf;
	}
	return refusal;
}

static void handle_line(struct smtp_session *s, const char *line, size_t len);

/* A lookup the policy waits for has answered: take the held RCPT up again. */
static void policy_lookup_done(struct smtp_session *s)
{
	if (!s->policy_wait || s->ptr_query != NULL || s->helo_query != NULL || s->dead)
		return;
	s->policy_wait = false;
	s->suspended = false;
	handle_line(s, s->line, s->policy_len);
	if (s->dead)
		return;
	if (!s->suspended)
		process_input(s);
	else
		flush(s);
}

static void helo_act(struct smtp_session *s, const struct smtp_command *c)
{
	transaction_reset(s);
	free(s->helo);
	/* the first word only: RFC 5321 4.1.1.1 */
	size_t n = 0;
	while (n < c->arg_len && c->arg[n] != ' ')
		n++;
	if (n > 255)
		n = 255;
	s->helo = xstrndup(c->arg, n);
	s->esmtp = c->verb == SMTP_EHLO;
	dns_cancel(&s->helo_query);
	s->helo_dns = -1;
	if (policy_applies(s) && strcmp(s->cfg->helo_checks, "no") != 0 && helo_is_fqdn(s->helo) &&
	    s->srv->dns != NULL)
		s->helo_query = dns_lookup_addr(s->srv->dns, s->helo, on_helo_addr, s);
	enter_state(s, STATE_READY);
	char q[300];
	log_info("event=helo client=%s helo=%s esmtp=%s tls=%s", s->ip,
		 log_quote(q, sizeof(q), s->helo, 100), s->esmtp ? "yes" : "no",
		 s->tls ? "yes" : "no");
	if (!s->esmtp) {
		reply(s, "250 %s", s->cfg->hostname);
		return;
	}
	reply(s, "250-%s", s->cfg->hostname);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %llu", (unsigned long long)s->cfg->max_message_size);
	reply(s, "250-8BITMIME");
	reply(s, "250-BINARYMIME");
	reply(s, "250-CHUNKING");
	reply(s, "250-DSN");
	if (starttls_offered(s))
		reply(s, "250-STARTTLS");
	if (auth_offered(s))
		reply(s, "250-AUTH PLAIN LOGIN");
	reply(s, "250-SMTPUTF8");
	reply(s, "250 ENHANCEDSTATUSCODES");
}

static bool in_transaction(const struct smtp_session *s)
{
	return s->state == STATE_MAIL || s->state == STATE_RCPT;
}

static bool mail_check(struct smtp_session *s, const struct smtp_command *c)
{
	if (in_transaction(s)) {
		reply(s, "503 5.5.1 Error: nested MAIL command");
		return false;
	}
	if (s->draining) {
		reply(s, "421 4.3.2 Shutting down");
		session_close(s);
		return false;
	}
	if (s->messages >= s->cfg->max_messages_per_session) {
		reply(s, "421 4.7.0 Too many messages in this session");
		log_info("event=reject client=%s reason=messages_per_session", s->ip);
		session_close(s);
		return false;
	}
	struct smtp_error e;
	/* ESMTP parameters only after EHLO */
	if (!s->esmtp) {
		size_t end = 0;
		while (end < c->arg_len && c->arg[end] != '>')
			end++;
		if (end + 1 < c->arg_len) {
			reply(s, "555 5.5.4 Unsupported parameter: send EHLO first");
			return false;
		}
	}
	if (smtp_parse_mail(c->arg, c->arg_len, s->esmtp, &s->mail, &e) < 0) {
		reply(s, "%d %s %s", e.code, e.enhanced, e.text);
		return false;
	}
	if (s->mail.has_size && s->mail.size > s->cfg->max_message_size) {
		reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
		return false;
	}
	if (!s->trusted && s->auth_user == NULL) {
		char key[80];
		snprintf(key, sizeof(key), "m:%s", s->ip);
		if (ratelimit_count(s->srv->limits, key, time(NULL), 60) >=
		    s->cfg->messages_per_ip_per_minute) {
			log_info("event=reject client=%s reason=rate_limit", s->ip);
			reply(s, "450 4.7.1 Rate limit exceeded");
			return false;
		}
	}
	return true;
}

static void mail_act(struct smtp_session *s, const struct smtp_command *c)
{
	if (s->auth_user != NULL && !(s->mail.addr.flags & ADDRESS_NULL)) {
		struct sender_job *j = xcalloc(1, sizeof(*j));
		j->s = s;
		j->data_dir = s->cfg->data_dir;
		j->user = xstrdup(s->auth_user);
		address_format(&s->mail.addr, j->sender, sizeof(j->sender));
		s->pending++;
		s->suspended = true;
		worker_submit(s->srv->workers, sender_work, sender_done, j);
		return;
	}
	mail_accepted(s);
}

static bool rcpt_check(struct smtp_session *s, const struct smtp_command *c)
{
	if (!in_transaction(s)) {
		reply(s, "503 5.5.1 Error: need MAIL command");
		return false;
	}
	if (s->env.nrcpts >= s->cfg->max_recipients) {
		reply(s, "452 4.5.3 Too many recipients");
		return false;
	}
	struct smtp_rcpt_args a;
	struct smtp_error e;
	if (smtp_parse_rcpt(c->arg, c->arg_len, s->mail.smtputf8, &a, &e) < 0) {
		reply(s, "%d %s %s", e.code, e.enhanced, e.text);
		return false;
	}
	if (!s->esmtp && (a.notify != 0 || a.orcpt[0] != '\0')) {
		reply(s, "555 5.5.4 Unsupported parameter: send EHLO first");
		return false;
	}
	if (policy_applies(s) &&
	    (strcmp(s->cfg->require_fcrdns, "no") != 0 || strcmp(s->cfg->helo_checks, "no") != 0)) {
		if (s->ptr_query != NULL || s->helo_query != NULL) {
			/* wait for the client's DNS (bounded by the lookups' deadline), then again */
			s->policy_wait = true;
			s->suspended = true;
			return false;
		}
		char buf[600];
		const char *refusal = client_policy(s, buf, sizeof(buf));
		if (refusal != NULL) {
			reply(s, "%s", refusal);
			s->rejected_rcpts++;
			return false;
		}
	}
	/* address tricks (percent hack, bang path, source route, quoted '@', literal) */
	if ((a.addr.flags & ADDRESS_TRICKS) && !rcpt_may_relay(s)) {
		char buf[ADDRESS_FORMAT_SIZE], q[600];
		log_info("event=relay_denied client=%s to=%s reason=address_trick flags=0x%x", s->ip,
			 log_quote(q, sizeof(q), address_format(&a.addr, buf, sizeof(buf)), 300),
			 a.addr.flags);
		reply(s, "554 5.7.1 Relay access denied");
		s->rejected_rcpts++;
		return false;
	}
	struct rcpt_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->data_dir = s->cfg->data_dir;
	j->args = a;
	if (a.addr.flags & ADDRESS_POSTMASTER) {
		/* RFC 5321 4.5.1: <Postmaster> is the postmaster of this host's domain */
		const char *dom = s->cfg->default_domain != NULL && *s->cfg->default_domain != '\0'
					  ? s->cfg->default_domain
					  : s->cfg->hostname;
		snprintf(j->address, sizeof(j->address), "postmaster@%s", dom);
	} else {
		address_format(&a.addr, j->address, sizeof(j->address));
	}
	if (rcpt_here(s, j)) {
		rcpt_apply(s, j); /* replies, and counts a refusal as an error itself */
		resolved_free(&j->res);
		free(j);
		return true; /* RCPT has no act() */
	}
	s->pending++;
	s->suspended = true;
	worker_submit(s->srv->workers, rcpt_work, rcpt_done, j);
	return false; /* the job replies */
}

static bool data_check(struct smtp_session *s, const struct smtp_command *c)
{
	if (!no_arg(s, c))
		return false;
	if (s->bdat_started) {
		reply(s, "503 5.5.1 Error: DATA cannot be mixed with BDAT");
		return false;
	}
	if (s->state == STATE_MAIL && s->rejected_rcpts > 0) {
		reply(s, "554 5.5.1 Error: no valid recipients");
		return false;
	}
	if (s->state != STATE_RCPT) {
		reply(s, s->state == STATE_MAIL ? "503 5.5.1 Error: need RCPT command"
						: "503 5.5.1 Error: need MAIL command");
		return false;
	}
	if (s->mail.body == SMTP_BODY_BINARYMIME) {
		reply(s, "503 5.5.1 Error: BODY=BINARYMIME requires BDAT");
		return false;
	}
	return true;
}

static void data_act(struct smtp_session *s, const struct smtp_command *c)
{
	message_begin(s);
	smtp_data_init(&s->data, s->cfg->max_line_length, !s->cfg->bare_newline_reject);
	enter_state(s, STATE_DATA);
	bufferevent_set_timeouts(s->bev, &(struct timeval){(time_t)s->cfg->data_timeout, 0}, NULL);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/*
 * RFC 3030 3: a BDAT chunk is always read, even when it is refused, so the
 * client and server stay in step. Returns false (connection closed) when
 * the chunk size cannot be parsed.
 */
static bool bdat_begin(struct smtp_session *s, const struct smtp_command *c, const char *refusal)
{
	bool last;
	uint64_t n;
	if (smtp_parse_bdat(c->arg, c->arg_len, &n, &last) < 0) {
		reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]");
		reply(s, "421 4.7.0 Closing: cannot resynchronise after a bad BDAT");
		session_close(s);
		return false;
	}
	s->bdat_remaining = n;
	s->bdat_last = last;
	s->chunk_refusal = refusal;
	s->chunk_prev = s->state;
	if (refusal == NULL && !s->bdat_started) {
		s->bdat_started = true;
		message_begin(s);
	}
	enter_state(s, STATE_BDAT);
	bufferevent_set_timeouts(s->bev, &(struct timeval){(time_t)s->cfg->data_timeout, 0}, NULL);
	return true;
}

static void bdat_chunk_end(struct smtp_session *s)
{
	bufferevent_set_timeouts(s->bev, &(struct timeval){(time_t)s->cfg->idle_timeout, 0}, NULL);
	if (s->chunk_refusal != NULL) {
		reply(s, "%s", s->chunk_refusal);
		s->chunk_refusal = NULL;
		enter_state(s, s->chunk_prev);
		count_error(s);
		return;
	}
	enter_state(s, STATE_RCPT);
	if (!s->bdat_last) {
		if (s->too_big)
			reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
		else
			reply(s, "250 2.0.0 Ok: %llu octets received", (unsigned long long)s->size);
		return;
	}
	message_end(s, false);
}

static void bdat_act(struct smtp_session *s, const struct smtp_command *c)
{
	const char *refusal = NULL;
	if (s->state != STATE_RCPT)
		refusal = s->state == STATE_MAIL && s->rejected_rcpts > 0
				  ? "554 5.5.1 Error: no valid recipients"
				  : s->state == STATE_MAIL ? "503 5.5.1 Error: need RCPT command"
							   : "503 5.5.1 Error: need MAIL command";
	if (!bdat_begin(s, c, refusal))
		return;
	if (s->bdat_remaining == 0)
		bdat_chunk_end(s);
}

static void rset_act(struct smtp_session *s, const struct smtp_command *c)
{
	transaction_reset(s);
	if (s->state != STATE_INIT)
		enter_state(s, STATE_READY);
	reply(s, "250 2.0.0 Ok");
	maybe_drain(s);
}

static void noop_act(struct smtp_session *s, const struct smtp_command *c)
{
	reply(s, "250 2.0.0 Ok");
}

static void quit_act(struct smtp_session *s, const struct smtp_command *c)
{
	reply(s, "221 2.0.0 Bye");
	session_close(s);
}

static void vrfy_act(struct smtp_session *s, const struct smtp_command *c)
{
	reply(s, "252 2.5.2 VRFY is disabled; send some mail and we will try our best");
}

static void expn_act(struct smtp_session *s, const struct smtp_command *c)
{
	reply(s, "502 5.5.1 EXPN is not implemented");
}

static void help_act(struct smtp_session *s, const struct smtp_command *c)
{
	reply(s, "214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP%s%s",
	      starttls_offered(s) ? " STARTTLS" : "", auth_offered(s) ? " AUTH" : "");
	reply(s, "214 2.0.0 See RFC 5321");
}

static bool starttls_check(struct smtp_session *s, const struct smtp_command *c)
{
	if (!no_arg(s, c))
		return false;
	if (s->tls) {
		reply(s, "503 5.5.1 Error: TLS already active");
		return false;
	}
	if (!starttls_offered(s)) {
		reply(s, "454 4.7.0 TLS not available");
		return false;
	}
	if (in_transaction(s)) {
		reply(s, "503 5.5.1 Error: STARTTLS inside a mail transaction");
		return false;
	}
	return true;
}

/*
 * STARTTLS hands the socket over, as IMAP's STARTTLS and POP3's STLS do: once
 * the plaintext 220 has left, the plain bufferevent is freed without closing
 * the socket and an OpenSSL socket bufferevent takes the descriptor, as on
 * the submissions listener. Not a filter over the plain one: libevent's
 * filter keeps two bufferevents and holds empty 16 KiB input chains for as
 * long as the connection is idle (51 KiB per idle connection, 30 without).
 */
static void starttls_flushed(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return; /* called again when the rest has gone */
	struct bufferevent *tls = smtp_tls_takeover(s->srv->base, s->conf->tls, bev);
	if (tls == NULL) {
		log_error("event=tls_failed client=%s reason=takeover", s->ip);
		session_destroy(s); /* closes the socket with the plain bufferevent */
		return;
	}
	s->bev = tls;
	bufferevent_setcb(tls, on_read, NULL, on_event, s);
	bufferevent_setwatermark(tls, EV_READ, 0, INPUT_HIGH_WATER);
	bufferevent_set_timeouts(tls, &(struct timeval){(time_t)s->cfg->idle_timeout, 0}, NULL);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void starttls_act(struct smtp_session *s, const struct smtp_command *c)
{
	/* nothing more is read in plaintext: the ClientHello waits in the kernel
	   for the TLS bufferevent */
	bufferevent_disable(s->bev, EV_READ);
	/*
	 * CVE-2011-0411: anything the client sent after STARTTLS in plaintext
	 * must never be read as if it came over TLS. The dispatcher refused
	 * input already buffered; look once more now.
	 */
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		log_info("event=reject client=%s reason=starttls_pipelining", s->ip);
		session_destroy(s);
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	/*
	 * Through the bufferevent, not flush()'s direct write: starttls_flushed
	 * runs once the 220 has left (a client that does not read it meets the
	 * write timeout) and hands the socket over.
	 */
	bufferevent_setcb(s->bev, NULL, starttls_flushed, on_event, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	bufferevent_set_timeouts(s->bev, NULL, &(struct timeval){(time_t)s->cfg->idle_timeout, 0});
	bufferevent_enable(s->bev, EV_WRITE);
	bufferevent_write_buffer(s->bev, s->replies);
	/* RFC 3207 4.2: forget everything learned before TLS */
	transaction_reset(s);
	free(s->helo);
	s->helo = NULL;
	s->esmtp = false;
	enter_state(s, STATE_TLS);
	s->suspended = true; /* until the handshake completes */
}

static bool auth_check(struct smtp_session *s, const struct smtp_command *c)
{
	if (s->auth_user != NULL) {
		reply(s, "503 5.5.1 Error: already authenticated");
		return false;
	}
	if (in_transaction(s)) {
		reply(s, "503 5.5.1 Error: AUTH not allowed during a mail transaction");
		return false;
	}
	if (s->kind == SMTP_LISTENER_SMTP && !s->cfg->auth_on_smtp) {
		reply(s, "503 5.5.1 Error: authentication not enabled");
		return false;
	}
	if (!s->tls) {
		reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		return false;
	}
	char key[80];
	snprintf(key, sizeof(key), "a:%s", s->ip);
	if (ratelimit_count(s->srv->limits, key, time(NULL), (unsigned)s->cfg->auth_failure_window) >=
	    s->cfg->auth_max_failures) {
		log_info("event=auth_failed client=%s reason=too_many_failures", s->ip);
		reply(s, "454 4.7.0 Too many authentication failures");
		return false;
	}
	return true;
}

static void auth_verify(struct smtp_session *s, const char *login, const char *password)
{
	char key[400];
	snprintf(key, sizeof(key), "u:%s", login);
	str_lower(key);
	if (ratelimit_count(s->srv->limits, key, time(NULL), (unsigned)s->cfg->auth_failure_window) >=
	    s->cfg->auth_max_failures) {
		char q[300];
		log_info("event=auth_failed client=%s user=%s reason=too_many_failures", s->ip,
			 log_quote(q, sizeof(q), login, 200));
		enter_state(s, STATE_READY);
		reply(s, "454 4.7.0 Too many authentication failures");
		return;
	}
	struct auth_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->data_dir = s->cfg->data_dir;
	j->default_domain = s->cfg->default_domain;
	j->login = xstrdup(login);
	j->password = xstrdup(password);
	s->pending++;
	s->suspended = true;
	worker_submit(s->srv->workers, auth_work, auth_done, j);
}

/* Decode a SASL response line; NULL (reply sent) if cancelled or bad. */
static char *auth_decode(struct smtp_session *s, const char *in, size_t len, size_t *out_len)
{
	if (len == 1 && in[0] == '*') {
		enter_state(s, STATE_READY);
		reply(s, "501 5.0.0 Authentication cancelled");
		return NULL;
	}
	if (len == 1 && in[0] == '=') {
		*out_len = 0;
		return xcalloc(1, 1);
	}
	char *out = xmalloc(3 * (len / 4) + 4);
	long n = base64_decode(in, len, (unsigned char *)out);
	if (n < 0) {
		free(out);
		enter_state(s, STATE_READY);
		reply(s, "501 5.5.2 Cannot decode response");
		count_error(s);
		return NULL;
	}
	out[n] = '\0';
	*out_len = (size_t)n;
	return out;
}

/* RFC 4616: [authzid] NUL authcid NUL passwd */
static void auth_plain(struct smtp_session *s, const char *b64, size_t len)
{
	size_t n;
	char *msg = auth_decode(s, b64, len, &n);
	if (msg == NULL)
		return;
	char *authz = msg;
	char *nul1 = memchr(msg, '\0', n);
	char *nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - msg)) : NULL;
	if (nul1 == NULL || nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - msg))) {
		explicit_bzero(msg, n);
		free(msg);
		enter_state(s, STATE_READY);
		reply(s, "501 5.5.2 Malformed PLAIN response");
		count_error(s);
		return;
	}
	const char *authc = nul1 + 1, *pass = nul2 + 1;
	if (*authz != '\0' && strcmp(authz, authc) != 0) {
		explicit_bzero(msg, n);
		free(msg);
		enter_state(s, STATE_READY);
		reply(s, "535 5.7.8 Authentication credentials invalid");
		count_error(s);
		return;
	}
	auth_verify(s, authc, pass);
	explicit_bzero(msg, n);
	free(msg);
}

static void auth_act(struct smtp_session *s, const struct smtp_command *c)
{
	size_t mlen = 0;
	while (mlen < c->arg_len && c->arg[mlen] != ' ')
		mlen++;
	const char *ir = mlen < c->arg_len ? c->arg + mlen + 1 : NULL;
	size_t irlen = ir != NULL ? c->arg_len - mlen - 1 : 0;
	if (mlen == 5 && strncasecmp(c->arg, "PLAIN", 5) == 0) {
		enter_state(s, STATE_AUTH);
		if (ir != NULL) {
			auth_plain(s, ir, irlen);
			return;
		}
		s->auth_step = AUTH_PLAIN;
		reply(s, "334 ");
	} else if (mlen == 5 && strncasecmp(c->arg, "LOGIN", 5) == 0) {
		enter_state(s, STATE_AUTH);
		if (ir != NULL) {
			size_t n;
			char *user = auth_decode(s, ir, irlen, &n);
			if (user == NULL)
				return;
			free(s->auth_login);
			s->auth_login = user;
			s->auth_step = AUTH_LOGIN_PASS;
			reply(s, "334 UGFzc3dvcmQ6");
			return;
		}
		s->auth_step = AUTH_LOGIN_USER;
		reply(s, "334 VXNlcm5hbWU6");
	} else if (mlen == 0) {
		reply(s, "501 5.5.4 Syntax: AUTH mechanism");
		count_error(s);
	} else {
		reply(s, "504 5.5.4 Unrecognized authentication type");
		count_error(s);
	}
}

/* A line during the SASL exchange. */
static void auth_continue(struct smtp_session *s, const char *line, size_t len)
{
	enum auth_step step = s->auth_step;
	s->auth_step = AUTH_NONE;
	if (step == AUTH_PLAIN) {
		auth_plain(s, line, len);
		return;
	}
	size_t n;
	char *v = auth_decode(s, line, len, &n);
	if (v == NULL) {
		free(s->auth_login);
		s->auth_login = NULL;
		return;
	}
	if (step == AUTH_LOGIN_USER) {
		free(s->auth_login);
		s->auth_login = v;
		s->auth_step = AUTH_LOGIN_PASS;
		reply(s, "334 UGFzc3dvcmQ6");
		return;
	}
	auth_verify(s, s->auth_login != NULL ? s->auth_login : "", v);
	explicit_bzero(v, n);
	free(v);
	free(s->auth_login);
	s->auth_login = NULL;
}

static const struct smtp_cmd commands[] = {
	{SMTP_HELO, CMD_BEFORE_HELO | CMD_BEFORE_AUTH, 512, helo_check, helo_act},
	{SMTP_EHLO, CMD_BEFORE_HELO | CMD_BEFORE_AUTH, 512, helo_check, helo_act},
	{SMTP_MAIL, CMD_PIPELINE, SMTP_COMMAND_LINE_MAX, mail_check, mail_act},
	{SMTP_RCPT, CMD_PIPELINE, SMTP_COMMAND_LINE_MAX, rcpt_check, NULL},
	{SMTP_DATA, 0, 512, data_check, data_act},
	{SMTP_BDAT, CMD_PIPELINE | CMD_ESMTP, 512, NULL, bdat_act},
	{SMTP_RSET, CMD_BEFORE_HELO | CMD_BEFORE_AUTH | CMD_PIPELINE, 512, no_arg, rset_act},
	{SMTP_NOOP, CMD_BEFORE_HELO | CMD_BEFORE_AUTH | CMD_PIPELINE, 512, NULL, noop_act},
	{SMTP_QUIT, CMD_BEFORE_HELO | CMD_BEFORE_AUTH | CMD_PIPELINE, 512, no_arg, quit_act},
	{SMTP_VRFY, CMD_BEFORE_HELO | CMD_BEFORE_AUTH | CMD_PIPELINE, 512, NULL, vrfy_act},
	{SMTP_EXPN, CMD_BEFORE_HELO | CMD_BEFORE_AUTH | CMD_PIPELINE, 512, NULL, expn_act},
	{SMTP_HELP, CMD_BEFORE_HELO | CMD_BEFORE_AUTH | CMD_PIPELINE, 512, NULL, help_act},
	{SMTP_STARTTLS, CMD_BEFORE_AUTH | CMD_ESMTP, 512, starttls_check, starttls_act},
	{SMTP_AUTH, CMD_BEFORE_AUTH | CMD_ESMTP, SMTP_AUTH_LINE_MAX, auth_check, auth_act},
};

static void handle_line(struct smtp_session *s, const char *line, size_t len)
{
	if (s->state == STATE_AUTH) {
		auth_continue(s, line, len);
		return;
	}
	struct smtp_command c;
	s->policy_len = len; /* a RCPT held for [policy] lookups is handled again from s->line */
	if (smtp_command_parse(line, len, &c) < 0) {
		reply(s, "500 5.5.2 Error: bad syntax");
		count_error(s);
		return;
	}
	const struct smtp_cmd *def = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (commands[i].verb == c.verb)
			def = &commands[i];
	if (def == NULL) {
		reply(s, "500 5.5.2 Error: command not recognized");
		count_error(s);
		return;
	}
	if (len > def->max_line) {
		reply(s, "500 5.5.2 Line too long");
		count_error(s);
		return;
	}
	/*
	 * RFC 2920 3.1: EHLO, DATA, STARTTLS... end a group and the client must
	 * wait for their reply; without PIPELINING advertised nothing may be
	 * sent ahead. Like Postfix's reject_unauth_pipelining, such a session
	 * is noted and refused at DATA/BDAT, so no message text can be taken
	 * for commands; STARTTLS refuses at once (CVE-2011-0411).
	 */
	bool ahead = evbuffer_get_length(bufferevent_get_input(s->bev)) > 0;
	if (ahead && (!(def->flags & CMD_PIPELINE) || !s->esmtp) && !s->improper_pipelining) {
		s->improper_pipelining = true;
		log_info("event=improper_pipelining client=%s command=%s", s->ip,
			 smtp_verb_name(c.verb));
	}
	if ((c.verb == SMTP_DATA || c.verb == SMTP_BDAT || c.verb == SMTP_STARTTLS) &&
	    (s->improper_pipelining || (ahead && c.verb != SMTP_BDAT))) {
		log_info("event=reject client=%s reason=improper_pipelining command=%s", s->ip,
			 smtp_verb_name(c.verb));
		reply(s, "554 5.5.0 Error: improper command pipelining");
		session_close(s);
		return;
	}
	const char *refusal = NULL;
	if (s->state == STATE_INIT && !(def->flags & CMD_BEFORE_HELO))
		refusal = "503 5.5.1 Error: send HELO/EHLO first";
	else if ((def->flags & CMD_ESMTP) && !s->esmtp)
		refusal = "503 5.5.1 Error: send EHLO first";
	else if (s->kind != SMTP_LISTENER_SMTP && s->auth_user == NULL &&
		 !(def->flags & CMD_BEFORE_AUTH))
		refusal = "530 5.7.0 Authentication required";
	if (refusal != NULL) {
		if (c.verb == SMTP_BDAT) {
			/* the chunk is read and discarded before the refusal */
			bdat_begin(s, &c, refusal);
			if (!s->dead && s->state == STATE_BDAT && s->bdat_remaining == 0)
				bdat_chunk_end(s);
			return;
		}
		reply(s, "%s", refusal);
		count_error(s);
		return;
	}
	if (def->check != NULL && !def->check(s, &c)) {
		if (!s->dead && s->state != STATE_CLOSING && !s->suspended)
			count_error(s);
		return;
	}
	if (def->act != NULL)
		def->act(s, &c);
}

/* ------------------------------------------------------------------ */
/* input */

/* Stream DATA text; true when more input is needed. */
static bool read_data(struct smtp_session *s, struct evbuffer *in)
{
	if (s->dbuf == NULL)
		s->dbuf = xmalloc(2 * DATA_CHUNK + 4);
	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, DATA_CHUNK, NULL, &v, 1) < 1)
			return true;
		size_t n = v.iov_len > DATA_CHUNK ? DATA_CHUNK : v.iov_len;
		size_t olen;
		bool done;
		size_t used = smtp_data_decode(&s->data, v.iov_base, n, s->dbuf, &olen, &done);
		bool refuse = s->cfg->bare_newline_reject &&
			      (s->data.flags & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR));
		if (!refuse && !(s->data.flags & SMTP_DATA_LINE_TOO_LONG))
			message_write(s, s->dbuf, olen);
		else
			s->size += olen;
		evbuffer_drain(in, used);
		if (done) {
			bufferevent_set_timeouts(
				s->bev, &(struct timeval){(time_t)s->cfg->idle_timeout, 0}, NULL);
			enter_state(s, STATE_RCPT);
			message_end(s, true);
			return false;
		}
	}
	return true;
}

static bool read_bdat(struct smtp_session *s, struct evbuffer *in)
{
	while (s->bdat_remaining > 0 && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, DATA_CHUNK, NULL, &v, 1) < 1)
			return true;
		size_t n = v.iov_len;
		if (n > s->bdat_remaining)
			n = (size_t)s->bdat_remaining;
		if (s->chunk_refusal == NULL)
			message_write(s, v.iov_base, n);
		evbuffer_drain(in, n);
		s->bdat_remaining -= n;
	}
	if (s->bdat_remaining > 0)
		return true;
	bdat_chunk_end(s);
	return false;
}

static void on_line_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	log_info("event=timeout client=%s state=%s reason=incomplete_command", s->ip,
		 state_names[s->state]);
	reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
	session_close(s);
}

/*
 * The read timeout of the bufferevent is re-armed by every byte, so a
 * client dribbling a line that never ends (slowloris) would never time
 * out. Commands therefore also have a deadline: a line must be complete
 * within idle_timeout of the previous one. DATA and BDAT keep only the
 * per-read data_timeout (RFC 5321 4.5.3.2); a suspended session waits for
 * us, not the client.
 */
static void line_timer_update(struct smtp_session *s, bool line_done)
{
	if (s->dead || s->line_timer == NULL)
		return;
	if (s->state == STATE_DATA || s->state == STATE_BDAT || s->suspended) {
		evtimer_del(s->line_timer);
		return;
	}
	if (line_done || !evtimer_pending(s->line_timer, NULL))
		timer_add_ms(s->line_timer, (int)(s->cfg->idle_timeout * 1000));
}

static void process_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	bool line_done = false;
	/* a QUIT whose reply went out at once destroys the session inside the loop:
	   the struct stays until the loop has looked at it */
	s->pending++;
	/* bounded: each round consumes input or stops */
	while (!s->dead && !s->suspended && s->state != STATE_CLOSING) {
		if (s->state == STATE_DATA) {
			if (read_data(s, in))
				break;
			continue;
		}
		if (s->state == STATE_BDAT) {
			if (read_bdat(s, in))
				break;
			continue;
		}
		size_t len;
		unsigned flags;
		enum line_status st = line_reader_read(&s->lr, in, s->line, &len, &flags);
		if (st == LINE_MORE)
			break;
		line_done = true;
		if (st == LINE_TOO_LONG) {
			if (s->state == STATE_AUTH) {
				s->auth_step = AUTH_NONE;
				enter_state(s, STATE_READY);
			}
			reply(s, "500 5.5.2 Line too long");
			count_error(s);
			continue;
		}
		handle_line(s, s->line, len);
	}
	if (--s->pending == 0 && s->dead) {
		session_free(s);
		return;
	}
	if (s->dead)
		return;
	line_timer_update(s, line_done);
	flush(s);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	if (s->state == STATE_PREGREET) {
		/* RFC 5321 4.3.1: the client must wait for the greeting */
		log_info("event=reject client=%s reason=pregreet", s->ip);
		reply(s, "554 5.5.0 Protocol error: command sent before the greeting");
		session_close(s);
		return;
	}
	process_input(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		/* TLS handshake done (STARTTLS or implicit TLS) */
		s->tls = true;
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		log_info("event=tls client=%s version=%s cipher=%s", s->ip,
			 ssl != NULL ? SSL_get_version(ssl) : "?",
			 ssl != NULL ? SSL_get_cipher_name(ssl) : "?");
		if (s->state == STATE_TLS) {
			enter_state(s, STATE_INIT);
			resume(s);
		}
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		log_info("event=timeout client=%s state=%s", s->ip, state_names[s->state]);
		reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
		session_close(s);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (e != 0) {
			char buf[256];
			ERR_error_string_n(e, buf, sizeof(buf));
			char q[300];
			log_info("event=tls_failed client=%s error=%s", s->ip,
				 log_quote(q, sizeof(q), buf, 200));
		}
	}
	if (s->state == STATE_DATA || s->state == STATE_BDAT)
		log_info("event=lost_in_data client=%s queue_id=%s", s->ip, s->queue_id);
	session_destroy(s);
}

static void send_greeting(struct smtp_session *s)
{
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		on_read(s->bev, s);
		return;
	}
	enter_state(s, STATE_INIT);
	reply(s, "220 %s ESMTP Postern", s->cfg->hostname);
	flush(s);
}

static void on_pregreet_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	event_free(s->pregreet_timer);
	s->pregreet_timer = NULL;
	if (s->state == STATE_PREGREET)
		send_greeting(s);
}

/* ------------------------------------------------------------------ */

static void refuse_connection(evutil_socket_t fd, const char *text, const char *ip,
			      const char *reason)
{
	log_info("event=reject client=%s reason=%s", ip, reason);
	log_flush(); /* the line before the reply, as for every other one */
	/* a short blocking-free attempt; the socket is fresh so this fits its buffer */
	ssize_t r = send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)r;
	evutil_closesocket(fd);
}

void smtp_session_start(struct smtp_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
			socklen_t salen, enum smtp_listener kind)
{
	const struct config *cfg = srv->conf->cfg;
	char ip[64];
	sockaddr_ntop(sa, ip, sizeof(ip));
	/* v4-mapped v6 addresses are logged and counted as v4 */
	if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.') != NULL)
		memmove(ip, ip + 7, strlen(ip + 7) + 1);
	if (srv->draining) {
		refuse_connection(fd, "421 4.3.2 Shutting down\r\n", ip, "shutting_down");
		return;
	}
	if (srv->nsessions >= cfg->max_connections) {
		refuse_connection(fd, "421 4.7.0 Too many connections, try again later\r\n", ip,
				  "max_connections");
		return;
	}
	char key[80];
	snprintf(key, sizeof(key), "c:%s", ip);
	if (ratelimit_active(srv->limits, key, 0) >= cfg->max_connections_per_ip) {
		refuse_connection(fd, "421 4.7.0 Too many connections from your address\r\n", ip,
				  "max_connections_per_ip");
		return;
	}
	struct bufferevent *bev;
	if (kind == SMTP_LISTENER_SUBMISSIONS) {
		SSL *ssl = srv->conf->tls != NULL ? SSL_new(srv->conf->tls) : NULL;
		if (ssl == NULL) {
			evutil_closesocket(fd);
			return;
		}
		bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
						     BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	} else {
		bev = bufferevent_socket_new(srv->base, fd,
					     BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	}
	if (bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	ratelimit_active(srv->limits, key, 1);
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->conf = srv->conf;
	s->conf->refs++;
	s->cfg = s->conf->cfg;
	s->bev = bev;
	s->kind = kind;
	s->state = STATE_PREGREET;
	snprintf(s->ip, sizeof(s->ip), "%s", ip);
	snprintf(s->ptr, sizeof(s->ptr), "unknown");
	s->fcrdns = DNS_FCRDNS_TEMPERROR; /* no resolver: as a failed lookup */
	s->helo_dns = -1;
	memcpy(&s->sa, sa, salen < sizeof(s->sa) ? salen : sizeof(s->sa));
	s->trusted = netlist_match(&s->cfg->trusted, sa);
	s->replies = evbuffer_new();
	line_reader_init(&s->lr, SMTP_AUTH_LINE_MAX);
	s->next = srv->sessions;
	if (srv->sessions != NULL)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;
	log_info("event=connect client=%s listener=%s trusted=%s", s->ip, listener_name(kind),
		 s->trusted ? "yes" : "no");

	s->line_timer = evtimer_new(srv->base, on_line_timeout, s);
	bufferevent_setcb(bev, on_read, NULL, on_event, s);
	bufferevent_setwatermark(bev, EV_READ, 0, INPUT_HIGH_WATER);
	bufferevent_set_timeouts(bev, &(struct timeval){(time_t)s->cfg->idle_timeout, 0}, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);

	if (srv->dns != NULL && !fcrdns_from_cache(s)) {
		s->fcrdns = -1;
		s->ptr_query = dns_fcrdns(srv->dns, (const struct sockaddr *)&s->sa, on_fcrdns, s);
	}

	/*
	 * Pregreet test (as Postfix's postscreen): an MTA waits for the 220, many
	 * spam bots do not. Only untrusted clients on the MX listener wait; the
	 * greeting still checks for input that arrived before it.
	 */
	uint64_t ms = (kind == SMTP_LISTENER_SMTP && !s->trusted) ? s->cfg->pregreet_wait_ms : 0;
	s->pregreet_timer = evtimer_new(srv->base, on_pregreet_timer, s);
	timer_add_ms(s->pregreet_timer, (int)ms);
}

void smtp_sessions_drain(struct smtp_server *srv)
{
	struct smtp_session *s = srv->sessions;
	while (s != NULL) {
		struct smtp_session *next = s->next;
		s->draining = true;
		bool idle = !s->suspended && (s->state == STATE_INIT || s->state == STATE_READY ||
					      s->state == STATE_PREGREET);
		if (idle) {
			reply(s, "421 4.3.2 Shutting down");
			session_close(s);
		}
		s = next;
	}
	smtp_server_check_drained(srv);
}

void smtp_sessions_close_all(struct smtp_server *srv)
{
	while (srv->sessions != NULL) {
		struct smtp_session *s = srv->sessions;
		log_info("event=drain_timeout client=%s state=%s", s->ip, state_names[s->state]);
		session_destroy(s);
	}
	/* their done callbacks free the sessions that waited for them */
	worker_pool_free(&srv->auth_workers);
}
