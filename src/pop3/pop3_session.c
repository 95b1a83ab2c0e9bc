/*
 * The POP3 server session: RFC 1939 with CAPA and RESP-CODES (RFC 2449),
 * STLS (RFC 2595), SASL PLAIN (RFC 5034, 4616) and the AUTH-RESP-CODE
 * (RFC 3206) codes, on the mailbox store's INBOX.
 *
 * SECURITY: everything here parses network input and runs on the
 * event-loop thread. Nothing here blocks: the password check, opening the
 * mailbox, reading message files and the UPDATE state run on worker
 * threads. While such a job runs the session is suspended (no input is
 * processed; POP3 is strictly in order, so pipelined commands simply wait)
 * and a session with a job in flight is freed only after it reports back.
 * At most one job per session is in flight, so the session's mailbox
 * handles are used by one thread at a time.
 *
 * Logins only over TLS (STLS or pop3s): before it USER, PASS and AUTH are
 * refused with [AUTH] and CAPA does not offer them, as IMAP's
 * LOGINDISABLED. Anything the client pipelined after STLS is discarded
 * before the handshake (plaintext command injection, CVE-2011-0411).
 *
 * Messages are the INBOX as listed at login (a snapshot; RFC 1939 message
 * numbers never change during a session). UIDL is "UIDVALIDITY.UID",
 * stable across sessions. RETR and TOP stream the file in chunks read on a
 * worker thread, converting bare LF to CRLF and byte-stuffing lines that
 * begin with ".", never holding more than a few chunks in memory.
 */
#include "pop3/pop3_session.h"

#include "lib/config.h"
#include "lib/linereader.h"
#include "lib/log.h"
#include "lib/netaddr.h"
#include "lib/strutil.h"
#include "lib/worker.h"
#include "lib/xalloc.h"
#include "pop3/pop3_cmd.h"
#include "smtp/ratelimit.h"
#include "smtp/smtp_session.h"
#include "smtp/smtp_tls.h"
#include "store/directory.h"
#include "store/mailbox.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define POP3_AUTOLOGOUT 600           /* RFC 1939 3: at least 10 minutes */
#define INPUT_HIGH_WATER (64 * 1024)  /* stop reading while this much input waits */
#define CHUNK (64 * 1024)             /* message octets read per worker job */
#define OUTPUT_LOW (128 * 1024)       /* read the next chunk below this much queued output */

enum pop3_state {
	ST_AUTHORIZATION, /* greeted, not logged in */
	ST_SASL,          /* AUTH PLAIN sent "+ ", waiting for the response */
	ST_TLS,           /* STLS handshake in progress */
	ST_TRANSACTION,   /* logged in, mailbox open */
	ST_UPDATE,        /* QUIT in TRANSACTION: removing messages */
	ST_CLOSING,       /* final reply queued, closing after the flush */
};

static const char *const state_names[] = {
	"authorization", "sasl", "tls", "transaction", "update", "closing",
};

struct pop3_msg {
	uint32_t uid;
	uint64_t size;
	bool deleted;   /* DELE in this session */
	bool retrieved; /* RETR in this session: \Seen at QUIT */
};

struct pop3_session {
	struct pop3_session *next, *prev;
	struct pop3_server *srv;
	struct smtp_conf *conf;
	const struct config *cfg;
	struct bufferevent *bev;
	struct event *line_timer; /* a command line must be complete within the autologout */
	struct event *out_timer;  /* streaming: waiting for queued output to drain */
	struct event *close_timer;
	struct event *login_timer; /* the whole AUTHORIZATION state, against slowloris */
	unsigned close_tries;
	enum pop3_state state;
	char ip[64];
	bool tls;
	bool implicit_tls;
	char *user;      /* USER argument, until PASS */
	char *auth_user; /* logged-in account address */
	unsigned errors;
	unsigned pending;  /* worker jobs in flight (0 or 1) */
	bool suspended;    /* waiting for a job or the output: input is not processed */
	bool dead;         /* connection gone; free when pending == 0 */
	atomic_bool closing; /* set with dead: a worker finishing a job closes the mailbox */
	struct line_reader lr;
	char line[POP3_SASL_LINE_MAX + 1];

	/* TRANSACTION */
	struct mbox_account *acct;
	struct mbox *box;
	uint32_t uidvalidity;
	struct pop3_msg *msgs;
	size_t nmsgs;
	unsigned nretrieved, ndeleted_total;

	/* RETR/TOP in progress */
	bool streaming;
	bool stream_started; /* "+OK" sent */
	bool stream_retr;
	size_t stream_msg;   /* index into msgs */
	int fd;
	struct pop3_xform xf;
};

/* ------------------------------------------------------------------ */
/* bookkeeping */

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void process_input(struct pop3_session *s);

static void timer_add_ms(struct event *ev, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(ev, &tv);
}

static void enter_state(struct pop3_session *s, enum pop3_state st)
{
	if (s->state != st)
		log_debug("event=pop3_state client=%s old=%s new=%s", s->ip, state_names[s->state],
			  state_names[st]);
	s->state = st;
}

static void reply(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(struct pop3_session *s, const char *fmt, ...)
{
	if (s->bev == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	char *text = xvasprintf(fmt, ap);
	va_end(ap);
	struct evbuffer *out = bufferevent_get_output(s->bev);
	evbuffer_add_printf(out, "%s\r\n", text);
	if (text[0] == '-') {
		char q[600];
		log_info("event=pop3_reject client=%s reply=%s", s->ip,
			 log_quote(q, sizeof(q), text, 200));
	}
	free(text);
}

/* Multi-line response data (already CRLF-terminated lines). */
static void reply_raw(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply_raw(struct pop3_session *s, const char *fmt, ...)
{
	if (s->bev == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
	va_end(ap);
}

static bool delete_allowed(const struct pop3_session *s)
{
	return strcmp(s->cfg->pop3_delete, "keep") != 0;
}

struct close_job {
	struct mbox_account *acct;
	struct mbox *box;
};

static void close_work(void *arg)
{
	struct close_job *j = arg;
	mbox_close(&j->box);
	mbox_account_close(&j->acct);
	free(j);
}

/* A worker job ends: if the session died meanwhile, close its mailbox right here. */
static void job_work_end(struct pop3_session *s)
{
	if (atomic_load(&s->closing)) {
		mbox_close(&s->box);
		mbox_account_close(&s->acct);
	}
}

static void session_free(struct pop3_session *s)
{
	if ((s->box != NULL || s->acct != NULL) && s->srv->draining) {
		/* shutting down: the worker pool may already be stopping and
		   would never run a new job; blocking here is harmless now */
		mbox_close(&s->box);
		mbox_account_close(&s->acct);
	} else if (s->box != NULL || s->acct != NULL) {
		/* mailbox calls may block: close on a worker */
		struct close_job *j = xcalloc(1, sizeof(*j));
		j->acct = s->acct;
		j->box = s->box;
		s->acct = NULL;
		s->box = NULL;
		worker_submit(s->srv->workers, close_work, NULL, j);
	}
	if (s->fd >= 0)
		close(s->fd);
	free(s->msgs);
	if (s->user != NULL) {
		explicit_bzero(s->user, strlen(s->user));
		free(s->user);
	}
	free(s->auth_user);
	smtp_conf_unref(&s->conf);
	free(s);
}

/* Drop the connection now; the struct lives on while a job is pending. */
static void session_destroy(struct pop3_session *s)
{
	if (s->dead)
		return;
	struct pop3_server *srv = s->srv;
	s->dead = true;
	atomic_store(&s->closing, true);
	log_info("event=pop3_disconnect client=%s user=%s state=%s retrieved=%u deleted=%u", s->ip,
		 s->auth_user != NULL ? s->auth_user : "-", state_names[s->state], s->nretrieved,
		 s->ndeleted_total);
	if (s->line_timer != NULL)
		event_free(s->line_timer);
	s->line_timer = NULL;
	if (s->out_timer != NULL)
		event_free(s->out_timer);
	s->out_timer = NULL;
	if (s->close_timer != NULL)
		event_free(s->close_timer);
	s->close_timer = NULL;
	if (s->login_timer != NULL)
		event_free(s->login_timer);
	s->login_timer = NULL;
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	s->bev = NULL;
	char key[80];
	snprintf(key, sizeof(key), "pc:%s", s->ip);
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
	struct pop3_session *s = arg;
	/* bounded: give the peer about two seconds to take our last reply */
	if (s->bev == NULL || output_pending(s->bev) == 0 || ++s->close_tries > 40) {
		session_destroy(s);
		return;
	}
	timer_add_ms(s->close_timer, 50);
}

static void on_write_drained(struct bufferevent *bev, void *arg)
{
	struct pop3_session *s = arg;
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
static void session_close(struct pop3_session *s)
{
	if (s->dead)
		return;
	enter_state(s, ST_CLOSING);
	if (s->bev == NULL || output_pending(s->bev) == 0) {
		session_destroy(s);
		return;
	}
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(s->bev, NULL, on_write_drained, on_event, s);
	on_write_drained(s->bev, s);
}

/* Count a protocol error; true if the session was closed for too many. */
static bool count_error(struct pop3_session *s)
{
	if (++s->errors < s->cfg->max_errors)
		return false;
	reply(s, "-ERR Too many errors");
	log_info("event=pop3_reject client=%s reason=too_many_errors errors=%u", s->ip, s->errors);
	session_close(s);
	return true;
}

/* A job finished; true if the session is gone (the caller must stop). */
static bool job_done(struct pop3_session *s)
{
	s->pending--;
	if (s->dead) {
		if (s->pending == 0)
			session_free(s);
		return true;
	}
	return false;
}

static void resume(struct pop3_session *s)
{
	s->suspended = false;
	if (s->state == ST_CLOSING) {
		session_close(s);
		return;
	}
	process_input(s);
}

/* ------------------------------------------------------------------ */
/* login: password check and mailbox snapshot on a worker */

struct login_job {
	struct pop3_session *s;
	struct mbox_store *store;
	const char *data_dir, *default_domain;
	char *login, *password;
	int result; /* 1 ok, 0 bad credentials, -1 directory error */
	struct account acc;
	/* mailbox */
	int open_errno; /* 0: opened */
	char *error;
	struct mbox_account *acct;
	struct mbox *box;
	struct mbox_msg *msgs;
	size_t nmsgs;
	uint32_t uidvalidity;
};

static void login_work(void *arg)
{
	struct login_job *j = arg;
	struct directory *dir = directory_thread(j->data_dir);
	memset(&j->acc, 0, sizeof(j->acc));
	j->result = dir == NULL ? -1
				: directory_authenticate(dir, j->login, j->password, j->default_domain,
							 &j->acc);
	explicit_bzero(j->password, strlen(j->password));
	if (j->result != 1)
		return;
	errno = 0;
	j->acct = mbox_account_open(j->store, j->acc.id, j->acc.address, j->acc.maildir,
				    j->acc.quota, &j->error);
	if (j->acct == NULL ||
	    mbox_open(j->acct, "INBOX", false, &j->box, &j->error) < 0 ||
	    mbox_messages(j->box, &j->msgs, &j->nmsgs, &j->error) < 0) {
		j->open_errno = errno != 0 ? errno : EIO;
		mbox_close(&j->box);
		mbox_account_close(&j->acct);
		return;
	}
	struct mbox_status st;
	mbox_get_status(j->box, &st);
	j->uidvalidity = st.uidvalidity;
	if (atomic_load(&j->s->closing)) {
		mbox_close(&j->box);
		mbox_account_close(&j->acct);
	}
}

static void login_failed(struct pop3_session *s, const char *login)
{
	time_t now = time(NULL);
	unsigned win = (unsigned)s->cfg->auth_failure_window;
	char key[400];
	snprintf(key, sizeof(key), "a:%s", s->ip);
	unsigned nip = ratelimit_hit(s->srv->limits, key, now, win);
	snprintf(key, sizeof(key), "u:%s", login);
	str_lower(key);
	unsigned nuser = ratelimit_hit(s->srv->limits, key, now, win);
	char q[600];
	log_info("event=pop3_login_failed client=%s user=%s failures_ip=%u failures_user=%u", s->ip,
		 log_quote(q, sizeof(q), login, 200), nip, nuser);
	reply(s, "-ERR [AUTH] Authentication failed");
	count_error(s);
}

static void login_done(void *arg)
{
	struct login_job *j = arg;
	struct pop3_session *s = j->s;
	if (s->dead) {
		/* the session_free below closes what the job opened */
		if (j->acct != NULL) {
			s->acct = j->acct;
			s->box = j->box;
			j->acct = NULL;
			j->box = NULL;
		}
		job_done(s);
		goto out;
	}
	s->pending--;
	enter_state(s, ST_AUTHORIZATION);
	char q[600];
	if (j->result == 0) {
		login_failed(s, j->login);
	} else if (j->result < 0) {
		log_error("event=pop3_login_error client=%s user=%s error=directory", s->ip,
			  log_quote(q, sizeof(q), j->login, 200));
		reply(s, "-ERR [SYS/TEMP] Temporary authentication failure");
	} else if (j->box == NULL) {
		log_error("event=pop3_login_error client=%s user=%s error=%s", s->ip, j->acc.address,
			  log_quote(q, sizeof(q), j->error != NULL ? j->error : "?", 300));
		if (j->open_errno == EBUSY || j->open_errno == EAGAIN)
			reply(s, "-ERR [IN-USE] Mailbox is busy, try again later");
		else
			reply(s, "-ERR [SYS/TEMP] Cannot open the mailbox, try again later");
	} else {
		s->auth_user = xstrdup(j->acc.address);
		s->acct = j->acct;
		s->box = j->box;
		j->acct = NULL;
		j->box = NULL;
		s->uidvalidity = j->uidvalidity;
		s->nmsgs = j->nmsgs;
		s->msgs = xcalloc(j->nmsgs > 0 ? j->nmsgs : 1, sizeof(*s->msgs));
		uint64_t total = 0;
		for (size_t i = 0; i < j->nmsgs; i++) {
			s->msgs[i].uid = j->msgs[i].uid;
			s->msgs[i].size = j->msgs[i].size;
			total += j->msgs[i].size;
		}
		enter_state(s, ST_TRANSACTION);
		if (s->login_timer != NULL)
			event_free(s->login_timer); /* the autologout applies from here on */
		s->login_timer = NULL;
		log_info("event=pop3_login client=%s user=%s tls=%s messages=%zu size=%llu", s->ip,
			 s->auth_user, s->tls ? "yes" : "no", s->nmsgs, (unsigned long long)total);
		reply(s, "+OK Logged in, %zu messages (%llu octets)", s->nmsgs,
		      (unsigned long long)total);
	}
	if (!s->dead)
		resume(s);
out:
	account_free_fields(&j->acc);
	free(j->msgs);
	free(j->error);
	free(j->login);
	free(j->password);
	free(j);
}

/* Start the password check (rate limits first, as for SMTP AUTH). */
static void login_start(struct pop3_session *s, const char *login, const char *password)
{
	char key[400];
	snprintf(key, sizeof(key), "u:%s", login);
	str_lower(key);
	if (ratelimit_count(s->srv->limits, key, time(NULL), (unsigned)s->cfg->auth_failure_window) >=
	    s->cfg->auth_max_failures) {
		char q[300];
		log_info("event=pop3_login_failed client=%s user=%s reason=too_many_failures", s->ip,
			 log_quote(q, sizeof(q), login, 200));
		enter_state(s, ST_AUTHORIZATION);
		reply(s, "-ERR [SYS/TEMP] Too many authentication failures, try again later");
		return;
	}
	struct login_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->store = s->srv->store;
	j->data_dir = s->cfg->data_dir;
	j->default_domain = s->cfg->default_domain;
	j->login = xstrdup(login);
	j->password = xstrdup(password);
	s->pending++;
	s->suspended = true;
	worker_submit(s->srv->workers, login_work, login_done, j);
}

/* Too many failures from this address? (reply queued) */
static bool ip_blocked(struct pop3_session *s)
{
	char key[80];
	snprintf(key, sizeof(key), "a:%s", s->ip);
	if (ratelimit_count(s->srv->limits, key, time(NULL), (unsigned)s->cfg->auth_failure_window) <
	    s->cfg->auth_max_failures)
		return false;
	log_info("event=pop3_login_failed client=%s reason=too_many_failures", s->ip);
	reply(s, "-ERR [SYS/TEMP] Too many authentication failures, try again later");
	return true;
}

/* ------------------------------------------------------------------ */
/* RETR and TOP: the file streamed in chunks read on a worker */

struct chunk_job {
	struct pop3_session *s;
	uint32_t uid;
	int open_errno; /* opening failed */
	int read_errno; /* reading failed */
	char *error;
	char *out;
	size_t out_len;
	bool eof;
};

static void chunk_work(void *arg)
{
	struct chunk_job *j = arg;
	struct pop3_session *s = j->s;
	if (s->fd < 0) {
		errno = 0;
		if (mbox_msg_open(s->box, j->uid, &s->fd, &j->error) < 0) {
			j->open_errno = errno != 0 ? errno : EIO;
			s->fd = -1;
			job_work_end(s);
			return;
		}
	}
	unsigned char *in = xmalloc(CHUNK);
	ssize_t r;
	do
		r = read(s->fd, in, CHUNK);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		j->read_errno = errno;
	} else {
		size_t n = (size_t)r;
		j->out = xmalloc(2 * n + 8);
		j->out_len = pop3_xform_run(&s->xf, in, n, j->out);
		if (r == 0 || s->xf.done) {
			j->eof = true;
			if (!s->xf.bol && !s->xf.done) {
				/* the last line had no line end */
				j->out[j->out_len++] = '\r';
				j->out[j->out_len++] = '\n';
			}
		}
	}
	free(in);
	job_work_end(s);
}

static void stream_next(struct pop3_session *s);

static void stream_end(struct pop3_session *s)
{
	s->streaming = false;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (s->out_timer != NULL)
		evtimer_del(s->out_timer);
	resume(s);
}

static void chunk_done(void *arg)
{
	struct chunk_job *j = arg;
	struct pop3_session *s = j->s;
	if (job_done(s))
		goto out;
	struct pop3_msg *m = &s->msgs[s->stream_msg];
	char q[600];
	if (j->open_errno != 0) {
		if (j->open_errno == ENOENT) {
			reply(s, "-ERR Message %zu was removed by another session", s->stream_msg + 1);
		} else {
			log_error("event=pop3_read_failed client=%s user=%s uid=%u error=%s", s->ip,
				  s->auth_user, m->uid,
				  log_quote(q, sizeof(q), j->error != NULL ? j->error : "?", 300));
			reply(s, "-ERR [SYS/TEMP] Cannot read message %zu", s->stream_msg + 1);
		}
		stream_end(s);
		goto out;
	}
	if (j->read_errno != 0) {
		log_error("event=pop3_read_failed client=%s user=%s uid=%u error=\"%s\"", s->ip,
			  s->auth_user, m->uid, strerror(j->read_errno));
		if (!s->stream_started) {
			reply(s, "-ERR [SYS/TEMP] Cannot read message %zu", s->stream_msg + 1);
			stream_end(s);
		} else {
			/* the multi-line response cannot be taken back */
			session_destroy(s);
		}
		goto out;
	}
	if (!s->stream_started) {
		s->stream_started = true;
		reply(s, "+OK %llu octets", (unsigned long long)m->size);
	}
	if (j->out_len > 0)
		bufferevent_write(s->bev, j->out, j->out_len);
	if (j->eof) {
		reply_raw(s, ".\r\n");
		smtp_tls_coalesce(bufferevent_get_output(s->bev)); /* few TLS records */
		if (s->stream_retr && !m->retrieved) {
			m->retrieved = true;
			s->nretrieved++;
		}
		stream_end(s);
		goto out;
	}
	stream_next(s);
out:
	free(j->out);
	free(j->error);
	free(j);
}

static void stream_next(struct pop3_session *s)
{
	if (output_pending(s->bev) > OUTPUT_LOW) {
		/* on_write or the timer calls again when the client has taken some */
		timer_add_ms(s->out_timer, 20);
		return;
	}
	if (s->out_timer != NULL)
		evtimer_del(s->out_timer);
	struct chunk_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->uid = s->msgs[s->stream_msg].uid;
	s->pending++;
	worker_submit(s->srv->workers, chunk_work, chunk_done, j);
}

static void on_out_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_session *s = arg;
	if (s->streaming && s->pending == 0)
		stream_next(s);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct pop3_session *s = arg;
	if (s->streaming && s->pending == 0)
		stream_next(s);
}

static void stream_start(struct pop3_session *s, size_t idx, int64_t top)
{
	s->streaming = true;
	s->stream_started = false;
	s->stream_retr = top < 0;
	s->stream_msg = idx;
	s->fd = -1;
	pop3_xform_init(&s->xf, top);
	s->suspended = true;
	if (s->out_timer == NULL)
		s->out_timer = evtimer_new(s->srv->base, on_out_timer, s);
	stream_next(s);
}

/* ------------------------------------------------------------------ */
/* UPDATE (RFC 1939 6) */

struct update_job {
	struct pop3_session *s;
	uint32_t *del, *seen;
	size_t ndel, nseen;
	size_t removed;
	char *error;
	char *seen_error;
};

static void update_work(void *arg)
{
	struct update_job *j = arg;
	struct pop3_session *s = j->s;
	if (j->nseen > 0 &&
	    mbox_store(s->box, j->seen, j->nseen, MBOX_STORE_ADD, MBOX_F_SEEN, 0, 0, NULL, NULL,
		       NULL, NULL, &j->seen_error) < 0) {
		/* not worth failing the QUIT for */
	}
	if (j->ndel > 0) {
		uint32_t *expunged = NULL;
		if (mbox_store(s->box, j->del, j->ndel, MBOX_STORE_ADD, MBOX_F_DELETED, 0, 0, NULL,
			       NULL, NULL, NULL, &j->error) == 0 &&
		    mbox_expunge(s->box, j->del, j->ndel, &expunged, &j->removed, &j->error) == 0)
			free(expunged);
	}
	/* the session ends here: close the mailbox on this thread */
	mbox_close(&s->box);
	mbox_account_close(&s->acct);
}

static void update_done(void *arg)
{
	struct update_job *j = arg;
	struct pop3_session *s = j->s;
	char q[600];
	if (j->seen_error != NULL)
		log_warn("event=pop3_seen_failed client=%s user=%s error=%s", s->ip, s->auth_user,
			 log_quote(q, sizeof(q), j->seen_error, 300));
	if (j->error != NULL)
		log_error("event=pop3_update_failed client=%s user=%s error=%s", s->ip,
			  s->auth_user, log_quote(q, sizeof(q), j->error, 300));
	else
		log_info("event=pop3_update client=%s user=%s deleted=%zu", s->ip, s->auth_user,
			 j->removed);
	s->ndeleted_total = (unsigned)j->removed;
	if (job_done(s))
		goto out;
	if (j->error != NULL)
		reply(s, "-ERR [SYS/TEMP] Some deleted messages were not removed");
	else
		reply(s, "+OK Postern signing off (%zu messages deleted)", j->removed);
	session_close(s);
out:
	free(j->del);
	free(j->seen);
	free(j->error);
	free(j->seen_error);
	free(j);
}

static void update_start(struct pop3_session *s)
{
	struct update_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->del = xcalloc(s->nmsgs + 1, sizeof(uint32_t));
	j->seen = xcalloc(s->nmsgs + 1, sizeof(uint32_t));
	bool allow = delete_allowed(s);
	for (size_t i = 0; i < s->nmsgs; i++) {
		if (s->msgs[i].deleted && allow)
			j->del[j->ndel++] = s->msgs[i].uid;
		else if (s->msgs[i].retrieved && !s->msgs[i].deleted)
			j->seen[j->nseen++] = s->msgs[i].uid;
	}
	enter_state(s, ST_UPDATE);
	s->pending++;
	s->suspended = true;
	worker_submit(s->srv->workers, update_work, update_done, j);
}

/* ------------------------------------------------------------------ */
/* commands */

static bool login_allowed(struct pop3_session *s)
{
	if (s->tls)
		return true;
	reply(s, "-ERR [AUTH] TLS required");
	count_error(s);
	return false;
}

static void capa(struct pop3_session *s)
{
	reply(s, "+OK Capability list follows");
	reply_raw(s, "TOP\r\n");
	if (s->tls && s->state != ST_TRANSACTION)
		reply_raw(s, "USER\r\n");
	reply_raw(s, "UIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
	if (s->tls && s->state != ST_TRANSACTION)
		reply_raw(s, "SASL PLAIN\r\n");
	if (!s->tls && s->conf->tls != NULL && s->state != ST_TRANSACTION)
		reply_raw(s, "STLS\r\n");
	reply_raw(s, "IMPLEMENTATION Postern\r\n.\r\n");
}

/*
 * STLS hands the socket over, as IMAP's STARTTLS does (see there): the plain
 * bufferevent is freed without closing the socket and an OpenSSL socket
 * bufferevent takes the descriptor, as for pop3s. Not a filter over the plain
 * one: libevent's filter keeps two bufferevents and holds empty 16 KiB input
 * chains for as long as the connection is idle.
 */
static void stls_flushed(struct bufferevent *bev, void *arg)
{
	struct pop3_session *s = arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return; /* called again when the rest has gone */
	struct bufferevent *tls = smtp_tls_takeover(s->srv->base, s->conf->tls, bev);
	if (tls == NULL) {
		log_error("event=tls_failed client=%s reason=takeover", s->ip);
		session_destroy(s); /* closes the socket with the plain bufferevent */
		return;
	}
	s->bev = tls;
	bufferevent_setcb(tls, on_read, on_write, on_event, s);
	bufferevent_setwatermark(tls, EV_READ, 0, INPUT_HIGH_WATER);
	bufferevent_setwatermark(tls, EV_WRITE, OUTPUT_LOW, 0);
	bufferevent_set_timeouts(tls, &(struct timeval){POP3_AUTOLOGOUT, 0},
	                         &(struct timeval){POP3_AUTOLOGOUT, 0});
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void stls(struct pop3_session *s)
{
	if (s->tls) {
		reply(s, "-ERR TLS already active");
		count_error(s);
		return;
	}
	if (s->conf->tls == NULL) {
		reply(s, "-ERR TLS not available");
		count_error(s);
		return;
	}
	/*
	 * RFC 2595 / CVE-2011-0411: anything sent after STLS in plaintext must
	 * never be read as if it came over TLS: discard it.
	 */
	bufferevent_disable(s->bev, EV_READ); /* the ClientHello waits in the kernel */
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t extra = evbuffer_get_length(in);
	if (extra > 0) {
		log_info("event=pop3_stls_pipelining client=%s discarded=%zu", s->ip, extra);
		evbuffer_drain(in, extra);
	}
	line_reader_init(&s->lr, POP3_SASL_LINE_MAX);
	reply(s, "+OK Begin TLS negotiation");
	/* once the +OK has left (a client that does not read it meets the write
	   timeout), stls_flushed hands the socket over */
	bufferevent_setcb(s->bev, NULL, stls_flushed, on_event, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	bufferevent_set_timeouts(s->bev, NULL, &(struct timeval){POP3_AUTOLOGOUT, 0});
	bufferevent_enable(s->bev, EV_WRITE);
	/* RFC 2595 4: forget what the client said before TLS */
	if (s->user != NULL) {
		explicit_bzero(s->user, strlen(s->user));
		xfree(&s->user);
	}
	enter_state(s, ST_TLS);
	s->suspended = true; /* until the handshake completes */
}

/* Decode a SASL response; NULL (reply sent) if cancelled or bad. */
static char *sasl_decode(struct pop3_session *s, const char *in, size_t len, size_t *out_len)
{
	if (len == 1 && in[0] == '*') {
		reply(s, "-ERR Authentication cancelled");
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
		reply(s, "-ERR Cannot decode the response");
		count_error(s);
		return NULL;
	}
	out[n] = '\0';
	*out_len = (size_t)n;
	return out;
}

/* RFC 4616: [authzid] NUL authcid NUL passwd */
static void sasl_plain(struct pop3_session *s, const char *b64, size_t len)
{
	enter_state(s, ST_AUTHORIZATION);
	size_t n;
	char *msg = sasl_decode(s, b64, len, &n);
	if (msg == NULL)
		return;
	char *authz = msg;
	char *nul1 = memchr(msg, '\0', n);
	char *nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - msg)) : NULL;
	if (nul1 == NULL || nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - msg))) {
		explicit_bzero(msg, n);
		free(msg);
		reply(s, "-ERR Malformed PLAIN response");
		count_error(s);
		return;
	}
	const char *authc = nul1 + 1, *pass = nul2 + 1;
	if (*authz != '\0' && strcmp(authz, authc) != 0) {
		/* no proxy authorization */
		login_failed(s, authc);
		explicit_bzero(msg, n);
		free(msg);
		return;
	}
	login_start(s, authc, pass);
	explicit_bzero(msg, n);
	free(msg);
}

static void auth_cmd(struct pop3_session *s, const struct pop3_cmd *c)
{
	if (c->arg_len == 0) {
		/* RFC 1734 style: list the mechanisms */
		reply(s, "+OK Mechanisms follow");
		reply_raw(s, "PLAIN\r\n.\r\n");
		return;
	}
	size_t mlen = 0;
	while (mlen < c->arg_len && c->arg[mlen] != ' ')
		mlen++;
	if (mlen != 5 || strncasecmp(c->arg, "PLAIN", 5) != 0) {
		reply(s, "-ERR Unsupported authentication mechanism");
		count_error(s);
		return;
	}
	if (ip_blocked(s))
		return;
	if (mlen < c->arg_len) {
		sasl_plain(s, c->arg + mlen + 1, c->arg_len - mlen - 1);
		return;
	}
	enter_state(s, ST_SASL);
	reply(s, "+ ");
}

/* The message with 1-based number n, or NULL (reply sent). */
static struct pop3_msg *get_msg(struct pop3_session *s, uint32_t n)
{
	if (n == 0 || n > s->nmsgs) {
		reply(s, "-ERR No such message");
		return NULL;
	}
	struct pop3_msg *m = &s->msgs[n - 1];
	if (m->deleted) {
		reply(s, "-ERR Message %u is deleted", n);
		return NULL;
	}
	return m;
}

static void transaction_cmd(struct pop3_session *s, const struct pop3_cmd *c)
{
	switch (c->verb) {
	case POP3_STAT: {
		size_t n = 0;
		uint64_t size = 0;
		for (size_t i = 0; i < s->nmsgs; i++) {
			if (!s->msgs[i].deleted) {
				n++;
				size += s->msgs[i].size;
			}
		}
		reply(s, "+OK %zu %llu", n, (unsigned long long)size);
		break;
	}
	case POP3_LIST:
	case POP3_UIDL: {
		bool uidl = c->verb == POP3_UIDL;
		if (c->nnum == 1) {
			struct pop3_msg *m = get_msg(s, c->num[0]);
			if (m == NULL)
				break;
			if (uidl)
				reply(s, "+OK %u %u.%u", c->num[0], s->uidvalidity, m->uid);
			else
				reply(s, "+OK %u %llu", c->num[0], (unsigned long long)m->size);
			break;
		}
		reply(s, "+OK %s", uidl ? "Unique-ID listing follows" : "Scan listing follows");
		struct evbuffer *out = bufferevent_get_output(s->bev);
		for (size_t i = 0; i < s->nmsgs; i++) {
			if (s->msgs[i].deleted)
				continue;
			if (uidl)
				evbuffer_add_printf(out, "%zu %u.%u\r\n", i + 1, s->uidvalidity,
						    s->msgs[i].uid);
			else
				evbuffer_add_printf(out, "%zu %llu\r\n", i + 1,
						    (unsigned long long)s->msgs[i].size);
		}
		evbuffer_add(out, ".\r\n", 3);
		smtp_tls_coalesce(bufferevent_get_output(s->bev)); /* few TLS records */
		break;
	}
	case POP3_RETR:
	case POP3_TOP:
		if (get_msg(s, c->num[0]) == NULL)
			break;
		stream_start(s, c->num[0] - 1, c->verb == POP3_TOP ? (int64_t)c->num[1] : -1);
		break;
	case POP3_DELE: {
		struct pop3_msg *m = get_msg(s, c->num[0]);
		if (m == NULL)
			break;
		m->deleted = true;
		reply(s, "+OK Message %u deleted", c->num[0]);
		break;
	}
	case POP3_RSET:
		for (size_t i = 0; i < s->nmsgs; i++)
			s->msgs[i].deleted = false;
		reply(s, "+OK %zu messages", s->nmsgs);
		break;
	case POP3_NOOP:
		reply(s, "+OK");
		break;
	case POP3_QUIT:
		update_start(s);
		break;
	default:
		reply(s, "-ERR Command not valid in this state");
		count_error(s);
		break;
	}
}

static void authorization_cmd(struct pop3_session *s, const struct pop3_cmd *c)
{
	switch (c->verb) {
	case POP3_USER:
		if (!login_allowed(s))
			break;
		if (s->user != NULL) {
			explicit_bzero(s->user, strlen(s->user));
			free(s->user);
		}
		s->user = xstrndup(c->arg, c->arg_len);
		reply(s, "+OK");
		break;
	case POP3_PASS: {
		if (!login_allowed(s))
			break;
		if (s->user == NULL) {
			reply(s, "-ERR USER first");
			count_error(s);
			break;
		}
		char *user = s->user;
		s->user = NULL;
		if (!ip_blocked(s)) {
			char *pass = xstrndup(c->arg, c->arg_len);
			login_start(s, user, pass);
			explicit_bzero(pass, c->arg_len);
			free(pass);
		}
		explicit_bzero(user, strlen(user));
		free(user);
		break;
	}
	case POP3_AUTH:
		if (login_allowed(s))
			auth_cmd(s, c);
		break;
	case POP3_APOP:
		reply(s, "-ERR APOP not supported");
		count_error(s);
		break;
	case POP3_STLS:
		stls(s);
		break;
	case POP3_QUIT:
		reply(s, "+OK Postern signing off");
		session_close(s);
		break;
	default:
		reply(s, "-ERR Command not valid in this state");
		count_error(s);
		break;
	}
}

static void handle_line(struct pop3_session *s, const char *line, size_t len)
{
	if (s->state == ST_SASL) {
		sasl_plain(s, line, len);
		return;
	}
	struct pop3_cmd c;
	enum pop3_parse_result r = pop3_cmd_parse(line, len, &c);
	if (r == POP3_PARSE_OK && len > POP3_LINE_MAX && c.verb != POP3_AUTH) {
		reply(s, "-ERR Line too long");
		count_error(s);
		return;
	}
	switch (r) {
	case POP3_PARSE_OK:
		break;
	case POP3_PARSE_UNKNOWN:
		reply(s, "-ERR Unknown command");
		count_error(s);
		return;
	case POP3_PARSE_BAD_CHAR:
		reply(s, "-ERR Invalid characters in the command");
		count_error(s);
		return;
	case POP3_PARSE_SYNTAX:
	default:
		reply(s, "-ERR Syntax error in %s arguments", pop3_verb_name(c.verb));
		count_error(s);
		return;
	}
	if (c.verb == POP3_CAPA) {
		capa(s);
		return;
	}
	if (s->state == ST_AUTHORIZATION)
		authorization_cmd(s, &c);
	else
		transaction_cmd(s, &c);
}

/* ------------------------------------------------------------------ */
/* input */

/*
 * The line timer and the read timeout are the 10-minute autologout (RFC 1939),
 * and every byte re-arms the read timeout: a client dribbling bytes before
 * login would hold its connection for that long at least. The authorization
 * state as a whole gets idle_timeout, as IMAP's login does (and Dovecot's
 * login processes).
 */
static void on_login_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_session *s = arg;
	if (s->dead || s->state == ST_TRANSACTION || s->state == ST_CLOSING)
		return;
	log_info("event=pop3_timeout client=%s state=%s reason=no_login", s->ip,
		 state_names[s->state]);
	reply(s, "-ERR [SYS/TEMP] Login timeout");
	session_close(s);
}

static void on_line_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_session *s = arg;
	log_info("event=pop3_timeout client=%s user=%s state=%s reason=incomplete_command", s->ip,
		 s->auth_user != NULL ? s->auth_user : "-", state_names[s->state]);
	reply(s, "-ERR Autologout; idle for too long");
	session_close(s);
}

/*
 * The read timeout of the bufferevent is re-armed by every byte, so a
 * client dribbling a line that never ends would never time out: a command
 * line must also be complete within the autologout of the previous one.
 * A suspended session waits for us, not the client.
 */
static void line_timer_update(struct pop3_session *s, bool line_done)
{
	if (s->dead || s->line_timer == NULL)
		return;
	if (s->suspended) {
		evtimer_del(s->line_timer);
		return;
	}
	if (line_done || !evtimer_pending(s->line_timer, NULL))
		timer_add_ms(s->line_timer, POP3_AUTOLOGOUT * 1000);
}

static void process_input(struct pop3_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	bool line_done = false;
	/* bounded: each round consumes a line or stops */
	while (!s->dead && !s->suspended && s->state != ST_CLOSING) {
		size_t len;
		unsigned flags;
		enum line_status st = line_reader_read(&s->lr, in, s->line, &len, &flags);
		if (st == LINE_MORE)
			break;
		line_done = true;
		if (st == LINE_TOO_LONG) {
			if (s->state == ST_SASL)
				enter_state(s, ST_AUTHORIZATION);
			reply(s, "-ERR Line too long");
			count_error(s);
			continue;
		}
		handle_line(s, s->line, len);
		explicit_bzero(s->line, len);
	}
	line_timer_update(s, line_done);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct pop3_session *s = arg;
	if (!s->suspended)
		process_input(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct pop3_session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		/* TLS handshake done (STLS or implicit TLS) */
		s->tls = true;
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		log_info("event=tls client=%s protocol=pop3 version=%s cipher=%s", s->ip,
			 ssl != NULL ? SSL_get_version(ssl) : "?",
			 ssl != NULL ? SSL_get_cipher_name(ssl) : "?");
		if (s->state == ST_TLS) {
			enter_state(s, ST_AUTHORIZATION);
			resume(s);
		}
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		log_info("event=pop3_timeout client=%s user=%s state=%s", s->ip,
			 s->auth_user != NULL ? s->auth_user : "-", state_names[s->state]);
		if (s->state == ST_CLOSING) {
			session_destroy(s);
			return;
		}
		reply(s, "-ERR Autologout; idle for too long");
		session_close(s);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (e != 0) {
			char buf[256];
			ERR_error_string_n(e, buf, sizeof(buf));
			char q[300];
			log_info("event=tls_failed client=%s protocol=pop3 error=%s", s->ip,
				 log_quote(q, sizeof(q), buf, 200));
		}
	}
	session_destroy(s);
}

/* ------------------------------------------------------------------ */

static void refuse_connection(evutil_socket_t fd, const char *text, const char *ip,
			      const char *reason, bool tls)
{
	log_info("event=pop3_reject client=%s reason=%s", ip, reason);
	log_flush(); /* the line before the reply, as for every other one */
	if (!tls) {
		/* a short blocking-free attempt; the socket is fresh so this fits its buffer */
		ssize_t r = send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)r;
	}
	evutil_closesocket(fd);
}

void pop3_session_start(struct pop3_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
			socklen_t salen, bool implicit_tls)
{
	const struct config *cfg = srv->conf->cfg;
	char ip[64];
	sockaddr_ntop(sa, ip, sizeof(ip));
	/* v4-mapped v6 addresses are logged and counted as v4 */
	if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.') != NULL)
		memmove(ip, ip + 7, strlen(ip + 7) + 1);
	if (srv->draining) {
		refuse_connection(fd, "-ERR [SYS/TEMP] Server shutting down\r\n", ip,
				  "shutting_down", implicit_tls);
		return;
	}
	if (srv->nsessions >= cfg->max_connections) {
		refuse_connection(fd, "-ERR [SYS/TEMP] Too many connections, try again later\r\n", ip,
				  "max_connections", implicit_tls);
		return;
	}
	char key[80];
	snprintf(key, sizeof(key), "pc:%s", ip);
	if (ratelimit_active(srv->limits, key, 0) >= cfg->max_connections_per_ip) {
		refuse_connection(fd, "-ERR [SYS/TEMP] Too many connections from your address\r\n",
				  ip, "max_connections_per_ip", implicit_tls);
		return;
	}
	struct bufferevent *bev;
	if (implicit_tls) {
		SSL *ssl = srv->conf->tls != NULL ? SSL_new(srv->conf->tls) : NULL;
		if (ssl == NULL) {
			log_info("event=pop3_reject client=%s reason=no_tls_certificate", ip);
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
	struct pop3_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->conf = srv->conf;
	s->conf->refs++;
	s->cfg = s->conf->cfg;
	s->bev = bev;
	s->fd = -1;
	s->implicit_tls = implicit_tls;
	s->state = ST_AUTHORIZATION;
	atomic_init(&s->closing, false);
	snprintf(s->ip, sizeof(s->ip), "%s", ip);
	line_reader_init(&s->lr, POP3_SASL_LINE_MAX);
	s->next = srv->sessions;
	if (srv->sessions != NULL)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;
	log_info("event=connect client=%s listener=%s", s->ip, implicit_tls ? "pop3s" : "pop3");

	s->line_timer = evtimer_new(srv->base, on_line_timeout, s);
	s->login_timer = evtimer_new(srv->base, on_login_timeout, s);
	struct timeval ltv = {(time_t)s->cfg->idle_timeout, 0};
	evtimer_add(s->login_timer, &ltv);
	bufferevent_setcb(bev, on_read, on_write, on_event, s);
	bufferevent_setwatermark(bev, EV_READ, 0, INPUT_HIGH_WATER);
	bufferevent_setwatermark(bev, EV_WRITE, OUTPUT_LOW, 0);
	bufferevent_set_timeouts(bev, &(struct timeval){POP3_AUTOLOGOUT, 0},
				 &(struct timeval){POP3_AUTOLOGOUT, 0});
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	/* no version in the greeting; TLS sends it after the handshake */
	reply(s, "+OK Postern ready.");
	line_timer_update(s, true);
}

/* Send what a plain socket bufferevent has queued, without waiting (its
   output buffer is frozen for everyone but libevent: copy, do not drain). */
static void send_queued(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	size_t n = evbuffer_get_length(out);
	if (n == 0)
		return;
	unsigned char *p = evbuffer_pullup(out, (ssize_t)n);
	if (p != NULL) {
		ssize_t r = send(bufferevent_getfd(bev), p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)r;
	}
}

/* Push queued output towards the socket now (the loop may not run again). */
static void flush_now(struct pop3_session *s)
{
	if (s->bev == NULL)
		return;
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	if (under != NULL) {
		/* STLS: encrypt into the socket bufferevent below */
		bufferevent_flush(s->bev, EV_WRITE, BEV_FLUSH);
		send_queued(under);
	} else if (bufferevent_openssl_get_ssl(s->bev) == NULL) {
		send_queued(s->bev);
	} else {
		/* pop3s: the SSL object writes to the socket itself */
		SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
		struct evbuffer *out = bufferevent_get_output(s->bev);
		size_t n = evbuffer_get_length(out);
		unsigned char *p = n > 0 ? evbuffer_pullup(out, (ssize_t)n) : NULL;
		if (ssl != NULL && p != NULL && SSL_is_init_finished(ssl))
			(void)SSL_write(ssl, p, (int)n);
	}
}

void pop3_sessions_close_all(struct pop3_server *srv)
{
	while (srv->sessions != NULL) {
		struct pop3_session *s = srv->sessions;
		/* a session in the UPDATE state finishes it on its worker: only its
		   reply is lost */
		if (s->state != ST_UPDATE && s->state != ST_CLOSING && !s->streaming) {
			reply(s, "-ERR [SYS/TEMP] Server shutting down");
			flush_now(s);
		}
		log_info("event=pop3_shutdown client=%s state=%s", s->ip, state_names[s->state]);
		session_destroy(s);
	}
}
