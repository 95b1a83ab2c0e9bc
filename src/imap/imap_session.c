/*
 * The IMAP server session: connection, TLS, command dispatch, login, IDLE.
 * RFC 9051 (IMAP4rev2) and RFC 3501 (IMAP4rev1) on one connection: the
 * client gets rev1 behaviour until it ENABLEs IMAP4rev2.
 *
 * SECURITY: network input, parsed on the event-loop thread with the
 * bounded reader (imap_parser.c): 8 KiB lines and no literals over 8 KiB
 * before login, [imap] max_line_length and max_message_size after. Logins
 * only over TLS (LOGINDISABLED before), failed logins rate-limited per IP
 * and per account together with SMTP AUTH and POP3. Plaintext pipelined
 * behind STARTTLS is discarded (CVE-2011-0411 family).
 *
 * Shape: a command table says in which states a command is allowed and
 * whether it runs on the loop (CAPABILITY, LOGOUT, STARTTLS, ENABLE, ID,
 * IDLE) or as a job on a worker thread (everything that touches the store).
 */
#include "imap/imap-private.h"

#include "imap/imap_compress.h"
#include "imap/imap_seqset.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/netaddr.h"
#include "lib/strutil.h"
#include "lib/worker.h"
#include "lib/xalloc.h"
#include "smtp/ratelimit.h"
#include "smtp/smtp_session.h"
#include "smtp/smtp_tls.h"
#include "store/directory.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define PREAUTH_MAX_LINE 8192
#define PREAUTH_MAX_LITERAL 8192
#define OUTPUT_HIGH_WATER (1024 * 1024) /* stop taking commands while this much output waits */
#define INPUT_HIGH_WATER (256 * 1024)
/* commands run on the loop thread: see runs_here() */
#define HERE_MAX_MESSAGES 2000
#define HERE_MAX_BODIES 16
#define HERE_SLOW_US 20000

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void process_input(struct imap_session *s);

void imap_reply(struct evbuffer *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

static struct evbuffer *output(struct imap_session *s)
{
	return bufferevent_get_output(s->bev);
}

/* [imap] plaintext_auth = loopback: a client on this host may log in without TLS. */
static bool plaintext_ok(const struct imap_session *s)
{
	return strcmp(s->cfg->imap_plaintext_auth, "loopback") == 0 &&
	       (strncmp(s->ip, "127.", 4) == 0 || strcmp(s->ip, "::1") == 0 ||
	        strncmp(s->ip, "::ffff:127.", 11) == 0);
}

void imap_capability_string(struct imap_session *s, struct evbuffer *out)
{
	evbuffer_add_printf(out, "CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE");
	if (s->state == IMAP_NOT_AUTH) {
		if (!s->tls && s->conf->tls != NULL)
			evbuffer_add_printf(out, " STARTTLS");
		if (s->tls || plaintext_ok(s))
			evbuffer_add_printf(out, " AUTH=PLAIN");
		else
			evbuffer_add_printf(out, " LOGINDISABLED");
		return;
	}
	evbuffer_add_printf(out, " NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE"
				 " CREATE-SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH SEARCHRES"
				 " STATUS=SIZE QUOTA QUOTA=RES-STORAGE SORT SORT=DISPLAY"
				 " THREAD=ORDEREDSUBJECT THREAD=REFERENCES CONDSTORE QRESYNC UTF8=ACCEPT MULTIAPPEND BINARY");
	if (!s->compressed)
		evbuffer_add_printf(out, " COMPRESS=DEFLATE");
}

/* ------------------------------------------------------------------ */
/* bookkeeping */

static void unwatch(struct imap_session *s)
{
	if (s->watch != NULL)
		mbox_unwatch(s->srv->store, &s->watch);
}

static void session_free(struct imap_session *s)
{
	imap_reader_free(&s->reader);
	free(s->user);
	free(s->maildir);
	free(s->idle_tag);
	free(s->auth_tag);
	free(s->auth_mech);
	/* the store objects: closing them may touch disk only trivially (no writes) */
	imap_view_clear(&s->view);
	mbox_account_close(&s->acct);
	smtp_conf_unref(&s->conf);
	free(s);
}

static void session_destroy(struct imap_session *s)
{
	if (s->dead)
		return;
	struct imap_server *srv = s->srv;
	s->dead = true;
	log_info("event=imap_disconnect client=%s user=%s", s->ip, s->user != NULL ? s->user : "-");
	unwatch(s);
	if (s->wake != NULL)
		event_free(s->wake);
	s->wake = NULL;
	if (s->close_timer != NULL)
		event_free(s->close_timer);
	s->close_timer = NULL;
	if (s->login_timer != NULL)
		event_free(s->login_timer);
	s->login_timer = NULL;
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	s->bev = NULL;
	char key[400];
	snprintf(key, sizeof(key), "ic:%s", s->ip);
	ratelimit_active(srv->limits, key, -1);
	if (s->user != NULL) {
		snprintf(key, sizeof(key), "i:%s:%s", s->user, s->ip);
		ratelimit_active(srv->limits, key, -1);
	}
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
	struct imap_session *s = arg;
	if (s->bev == NULL || output_pending(s->bev) == 0 || ++s->close_tries > 40) {
		session_destroy(s);
		return;
	}
	{ struct timeval tv50 = {0, 50000}; evtimer_add(s->close_timer, &tv50); }
}

static void on_write_drained(struct bufferevent *bev, void *arg)
{
	struct imap_session *s = arg;
	if (output_pending(bev) == 0) {
		session_destroy(s);
		return;
	}
	if (s->close_timer == NULL) {
		s->close_timer = evtimer_new(s->srv->base, on_close_timer, s);
		{ struct timeval tv50 = {0, 50000}; evtimer_add(s->close_timer, &tv50); }
	}
}

/* Send what is queued, then close. */
static void session_close(struct imap_session *s)
{
	if (s->dead)
		return;
	s->state = IMAP_LOGOUT;
	if (s->bev == NULL || output_pending(s->bev) == 0) {
		session_destroy(s);
		return;
	}
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setcb(s->bev, NULL, on_write_drained, on_event, s);
	on_write_drained(s->bev, s);
}

static bool count_error(struct imap_session *s)
{
	if (++s->errors < s->cfg->max_errors)
		return false;
	imap_reply(output(s), "* BYE Too many errors");
	log_info("event=imap_reject client=%s reason=too_many_errors", s->ip);
	session_close(s);
	return true;
}

static void set_timeout(struct imap_session *s)
{
	uint64_t secs = s->state == IMAP_NOT_AUTH ? s->cfg->idle_timeout : s->cfg->imap_autologout;
	bufferevent_set_timeouts(s->bev, &(struct timeval){(time_t)secs, 0}, NULL);
}

static void reader_limits(struct imap_session *s)
{
	imap_reader_free(&s->reader);
	if (s->state == IMAP_NOT_AUTH)
		imap_reader_init(&s->reader, PREAUTH_MAX_LINE, PREAUTH_MAX_LITERAL,
				 PREAUTH_MAX_LINE + PREAUTH_MAX_LITERAL);
	else
		imap_reader_init(&s->reader, s->cfg->imap_max_line_length,
				 s->cfg->max_message_size,
				 s->cfg->max_message_size + s->cfg->imap_max_line_length);
}

/* ------------------------------------------------------------------ */
/* jobs */

static void job_free(struct imap_job *j)
{
	imap_command_clear(&j->cmd);
	free(j->tag_copy);
	if (j->out != NULL)
		evbuffer_free(j->out);
	if (j->password != NULL) {
		explicit_bzero(j->password, strlen(j->password));
		free(j->password);
	}
	free(j->login);
	free(j->new_user);
	free(j->new_maildir);
	mbox_account_close(&j->new_acct);
	free(j);
}

static void job_work(void *arg)
{
	struct imap_job *j = arg;
	j->out = evbuffer_new();
	j->exec(j);
}

static void on_wake(evutil_socket_t fd, short what, void *arg);

static void watch_fn(void *arg)
{
	/* any thread: only schedule */
	struct event *ev = arg;
	event_active(ev, EV_READ, 0);
}

static void rewatch(struct imap_session *s)
{
	unwatch(s);
	if (s->selected && s->view.name != NULL && s->acct != NULL && s->wake != NULL)
		s->watch = mbox_watch(s->srv->store, s->maildir, s->view.name,
				      watch_fn, s->wake);
}

static void login_done(struct imap_session *s, struct imap_job *j);

/* On the loop, the job run: its response and results into the session. False when it closes. */
static bool job_finish(struct imap_session *s, struct imap_job *j)
{
	s->suspended = false;
	if (j->login != NULL)
		login_done(s, j);
	if (j->out != NULL) /* a response of many printf chains: few TLS records */
		smtp_tls_add_coalesced(output(s), j->out);
	if (j->watch_changed) {
		rewatch(s);
		s->here_off = false; /* another folder (or none) */
	}
	bool close_after = j->close_after;
	job_free(j);
	if (close_after) {
		session_close(s);
		return false;
	}
	if (s->idling && s->wake_pending) {
		s->wake_pending = false;
		event_active(s->wake, EV_READ, 0);
	}
	return true;
}

static void job_done(void *arg)
{
	struct imap_job *j = arg;
	struct imap_session *s = j->s;
	s->pending--;
	if (s->dead) {
		if (s->pending == 0)
			session_free(s);
		job_free(j);
		return;
	}
	if (job_finish(s, j))
		process_input(s);
}

/* A job for the command (taken over from *cmd); fill it, then job_submit(). */
static struct imap_job *job_new(struct imap_session *s, struct imap_command *cmd, bool uid,
				const char *name, const struct imap_arg *args, size_t nargs,
				void (*exec)(struct imap_job *), bool expunge_ok)
{
	struct imap_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	if (cmd->pool == NULL) {
		/* no parsed command: an AUTHENTICATE continuation (whose tag the
		   session kept) or an IDLE wake-up (no tag) */
		if (s->auth_tag != NULL && cmd->tag == s->auth_tag) {
			j->tag_copy = s->auth_tag;
			s->auth_tag = NULL;
		}
		j->tag = j->tag_copy;
	} else {
		j->cmd = *cmd;
		memset(cmd, 0, sizeof(*cmd));
		j->tag = j->cmd.tag;
	}
	j->uid = uid;
	j->name = name;
	j->args = args;
	j->nargs = nargs;
	j->exec = exec;
	j->expunge_ok = expunge_ok;
	return j;
}

/* Run the job on a worker; the session waits for it. */
static void job_submit(struct imap_job *j)
{
	struct imap_session *s = j->s;
	s->pending++;
	s->suspended = true;
	worker_submit(s->srv->workers, job_work, job_done, j);
}

/*
 * Run the job here, on the loop thread (see runs_here(), whose probe synced
 * the folder: the command's own sync is skipped). The store is told
 * this thread must not wait, so it leaves optional writes and checkpoints to
 * the workers. A command that still took long (a cold disk) sends the
 * session's later commands to the workers until it selects again.
 */
static void job_run_here(struct imap_job *j)
{
	struct imap_session *s = j->s;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	j->out = evbuffer_new();
	j->here = true;
	/* synced by mbox_sync_probe() in runs_here() */
	s->synced_before = true;
	mbox_thread_nowait(true);
	j->exec(j);
	mbox_thread_release(); /* the index connection, for the workers */
	mbox_thread_nowait(false);
	s->synced_before = false;
	if (j->again) {
		/* it would have had to wait for another thread: nothing was done */
		log_debug("event=imap_loop_busy client=%s command=%s", s->ip, j->name);
		evbuffer_free(j->out);
		j->out = NULL;
		j->here = j->again = false;
		job_submit(j);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	int64_t us = (t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000;
	if (us > HERE_SLOW_US) {
		s->here_off = true;
		log_debug("event=imap_slow_on_loop client=%s command=%s us=%lld", s->ip, j->name,
		          (long long)us);
	}
	job_finish(s, j);
}

/* ------------------------------------------------------------------ */
/* login */

static void login_work(struct imap_job *j)
{
	struct imap_session *s = j->s;
	const struct config *cfg = s->cfg;
	struct directory *dir = directory_thread(cfg->data_dir);
	struct account acc = {0};
	j->login_result = dir == NULL ? -1
				      : directory_authenticate(dir, j->login, j->password,
							       cfg->default_domain, &acc);
	explicit_bzero(j->password, strlen(j->password));
	if (j->login_result == 1) {
		char *err = NULL;
		j->new_acct = mbox_account_open(s->srv->store, acc.id, acc.address, acc.maildir,
						acc.quota, &err);
		if (j->new_acct == NULL) {
			char q[600];
			log_error("event=imap_mailbox_open_failed user=%s error=%s", acc.address,
				  log_quote(q, sizeof(q), err != NULL ? err : "?", 500));
			free(err);
			j->login_result = -1;
		} else {
			j->new_user = xstrdup(acc.address);
			j->new_maildir = xstrdup(acc.maildir);
			j->new_account_id = acc.id;
		}
	}
	account_free_fields(&acc);
}

static void login_done(struct imap_session *s, struct imap_job *j)
{
	struct evbuffer *out = output(s);
	char q[600];
	const char *ql = log_quote(q, sizeof(q), j->login, 200);
	if (j->login_result == 1) {
		char key[400];
		snprintf(key, sizeof(key), "i:%s:%s", j->new_user, s->ip);
		if (ratelimit_active(s->srv->limits, key, 0) >= s->cfg->imap_max_connections_per_user) {
			log_info("event=imap_login_refused client=%s user=%s reason=too_many_sessions",
				 s->ip, j->new_user);
			imap_reply(out, "%s NO [LIMIT] Too many sessions for this user from your address",
				   j->tag);
			return;
		}
		ratelimit_active(s->srv->limits, key, 1);
		s->user = j->new_user;
		j->new_user = NULL;
		s->maildir = j->new_maildir;
		j->new_maildir = NULL;
		s->account_id = j->new_account_id;
		s->acct = j->new_acct;
		j->new_acct = NULL;
		s->state = IMAP_AUTH;
		if (s->login_timer != NULL)
			event_free(s->login_timer); /* not needed after login */
		s->login_timer = NULL;
		reader_limits(s);
		set_timeout(s);
		log_info("event=imap_login client=%s user=%s tls=%s", s->ip, s->user,
			 s->tls ? "yes" : "no");
		evbuffer_add_printf(out, "%s OK [", j->tag);
		imap_capability_string(s, out);
		imap_reply(out, "] Logged in");
	} else if (j->login_result == 0) {
		time_t now = time(NULL);
		unsigned win = (unsigned)s->cfg->auth_failure_window;
		char key[400];
		snprintf(key, sizeof(key), "a:%s", s->ip);
		unsigned nip = ratelimit_hit(s->srv->limits, key, now, win);
		snprintf(key, sizeof(key), "u:%s", j->login);
		str_lower(key);
		unsigned nuser = ratelimit_hit(s->srv->limits, key, now, win);
		log_info("event=imap_auth_failed client=%s user=%s failures_ip=%u failures_user=%u",
			 s->ip, ql, nip, nuser);
		imap_reply(out, "%s NO [AUTHENTICATIONFAILED] Authentication failed.", j->tag);
		count_error(s);
	} else {
		imap_reply(out, "%s NO [UNAVAILABLE] Temporary authentication failure", j->tag);
	}
}

static bool login_allowed(struct imap_session *s, const char *tag, const char *login)
{
	struct evbuffer *out = output(s);
	if (!s->tls && !plaintext_ok(s)) {
		imap_reply(out, "%s NO [PRIVACYREQUIRED] Use STARTTLS or the imaps port to log in",
			   tag);
		return false;
	}
	time_t now = time(NULL);
	unsigned win = (unsigned)s->cfg->auth_failure_window;
	char key[400];
	snprintf(key, sizeof(key), "a:%s", s->ip);
	if (ratelimit_count(s->srv->limits, key, now, win) >= s->cfg->auth_max_failures) {
		log_info("event=imap_auth_failed client=%s reason=too_many_failures", s->ip);
		imap_reply(out, "%s NO [UNAVAILABLE] Too many authentication failures", tag);
		return false;
	}
	if (login != NULL) {
		snprintf(key, sizeof(key), "u:%s", login);
		str_lower(key);
		if (ratelimit_count(s->srv->limits, key, now, win) >= s->cfg->auth_max_failures) {
			char q[300];
			log_info("event=imap_auth_failed client=%s user=%s reason=too_many_failures",
				 s->ip, log_quote(q, sizeof(q), login, 200));
			imap_reply(out, "%s NO [UNAVAILABLE] Too many authentication failures", tag);
			return false;
		}
	}
	return true;
}

/* Check the limits, then verify login + password on a worker. */
static void login_start(struct imap_session *s, struct imap_command *cmd, const char *login,
			const char *password)
{
	if (!login_allowed(s, cmd->tag, login))
		return;
	char *l = xstrdup(login), *p = xstrdup(password);
	struct imap_job *j = job_new(s, cmd, false, "LOGIN", NULL, 0, login_work, false);
	j->login = l;
	j->password = p;
	job_submit(j);
}

/* ------------------------------------------------------------------ */
/* commands run on the loop */

static void cmd_capability(struct imap_session *s, struct imap_command *c)
{
	struct evbuffer *out = output(s);
	evbuffer_add_printf(out, "* ");
	imap_capability_string(s, out);
	evbuffer_add(out, "\r\n", 2);
	imap_reply(out, "%s OK Capability completed", c->tag);
}

static void cmd_logout(struct imap_session *s, struct imap_command *c)
{
	imap_reply(output(s), "* BYE Logging out");
	imap_reply(output(s), "%s OK Logout completed", c->tag);
	session_close(s);
}

/*
 * STARTTLS hands the socket over: once the plaintext OK has left, the plain
 * bufferevent is freed without closing the socket and an OpenSSL socket
 * bufferevent takes the descriptor, as for the imaps port. Not a filter over
 * the plain one: a filter keeps two bufferevents, and after every read
 * libevent's filter reserves another 16 KiB input chain (do_read from
 * consider_reading on the drain callback), which an idle connection then
 * holds for as long as it is open: 32 KiB of 50 per idle session.
 */
static void starttls_flushed(struct bufferevent *bev, void *arg)
{
	struct imap_session *s = arg;
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
	bufferevent_setwatermark(tls, EV_WRITE, 64 * 1024, 0);
	set_timeout(s);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void cmd_starttls(struct imap_session *s, struct imap_command *c)
{
	struct evbuffer *out = output(s);
	if (s->tls) {
		imap_reply(out, "%s BAD TLS is already active", c->tag);
		return;
	}
	if (s->conf->tls == NULL) {
		imap_reply(out, "%s NO TLS is not available", c->tag);
		return;
	}
	imap_reply(out, "%s OK Begin TLS negotiation now", c->tag);
	/* anything pipelined after STARTTLS in plaintext is discarded; nothing
	   more is read from the socket in plaintext (the ClientHello waits in
	   the kernel for the TLS bufferevent) */
	bufferevent_disable(s->bev, EV_READ);
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t junk = evbuffer_get_length(in);
	if (junk > 0) {
		log_info("event=imap_starttls_pipelining client=%s discarded=%zu", s->ip, junk);
		evbuffer_drain(in, junk);
	}
	imap_reader_reset(&s->reader);
	s->suspended = true; /* until the handshake completes */
	/* wait for the OK to leave (a client that does not read it meets the
	   write timeout), then hand the socket over */
	bufferevent_setcb(s->bev, NULL, starttls_flushed, on_event, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	bufferevent_set_timeouts(s->bev, NULL, &(struct timeval){(time_t)s->cfg->idle_timeout, 0});
	bufferevent_enable(s->bev, EV_WRITE);
}

/* RFC 4978: the OK goes out plain, everything after it compressed. */
static void cmd_compress(struct imap_session *s, struct imap_command *c)
{
	struct evbuffer *out = output(s);
	if (c->nargs != 1 || !imap_arg_atom_eq(&c->args[0], "DEFLATE")) {
		imap_reply(out, "%s BAD Syntax: COMPRESS DEFLATE", c->tag);
		count_error(s);
		return;
	}
	if (s->compressed) {
		imap_reply(out, "%s NO [COMPRESSIONACTIVE] Compression is already active", c->tag);
		return;
	}
	imap_reply(out, "%s OK DEFLATE active", c->tag);
	struct bufferevent *under = s->bev;
	struct bufferevent *z = imap_compress_start(under);
	if (z == NULL) {
		session_destroy(s);
		return;
	}
	s->bev = z;
	s->compressed = true;
	bufferevent_setcb(z, on_read, on_write, on_event, s);
	bufferevent_setwatermark(z, EV_READ, 0, INPUT_HIGH_WATER);
	bufferevent_setwatermark(z, EV_WRITE, 64 * 1024, 0);
	set_timeout(s);
	bufferevent_enable(z, EV_READ | EV_WRITE);
	/* the client compresses right after its command: what it sent already is deflated */
	if (evbuffer_get_length(bufferevent_get_input(under)) > 0)
		bufferevent_trigger(under, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
	log_debug("event=imap_compress client=%s", s->ip);
}

static void cmd_login(struct imap_session *s, struct imap_command *c)
{
	struct evbuffer *out = output(s);
	if (c->nargs != 2 || !imap_arg_is_string(&c->args[0]) ||
	    !imap_arg_is_string(&c->args[1])) {
		imap_reply(out, "%s BAD Syntax: LOGIN user password", c->tag);
		count_error(s);
		return;
	}
	login_start(s, c, c->args[0].str, c->args[1].str);
}

static void cmd_id(struct imap_session *s, struct imap_command *c)
{
	struct evbuffer *out = output(s);
	if (c->nargs != 1 || (c->args[0].type != IMAP_ARG_NIL && c->args[0].type != IMAP_ARG_LIST)) {
		imap_reply(out, "%s BAD Syntax: ID (params) or ID NIL", c->tag);
		count_error(s);
		return;
	}
	if (c->args[0].type == IMAP_ARG_LIST) {
		const struct imap_arg *l = c->args[0].list;
		size_t n = c->args[0].nlist;
		char buf[512];
		size_t used = 0;
		buf[0] = '\0';
		for (size_t i = 0; i + 1 < n && i < 60; i += 2) {
			const char *k = imap_arg_astring(&l[i]);
			const char *v = imap_arg_astring(&l[i + 1]);
			if (k == NULL)
				continue;
			int w = snprintf(buf + used, sizeof(buf) - used, "%s%s=%s",
					 used > 0 ? "," : "", k, v != NULL ? v : "NIL");
			if (w < 0 || (size_t)w >= sizeof(buf) - used)
				break;
			used += (size_t)w;
		}
		char q[600];
		log_info("event=imap_id client=%s id=%s", s->ip, log_quote(q, sizeof(q), buf, 400));
	}
	imap_reply(out, "* ID (\"name\" \"Postern\")");
	imap_reply(out, "%s OK ID completed", c->tag);
}

static void cmd_enable(struct imap_session *s, struct imap_command *c)
{
	struct evbuffer *out = output(s);
	if (c->nargs == 0) {
		imap_reply(out, "%s BAD Syntax: ENABLE capability...", c->tag);
		count_error(s);
		return;
	}
	struct evbuffer *en = evbuffer_new();
	for (size_t i = 0; i < c->nargs; i++) {
		if (c->args[i].type != IMAP_ARG_ATOM)
			continue;
		unsigned bit = 0;
		const char *name = NULL;
		if (imap_arg_atom_eq(&c->args[i], "CONDSTORE")) {
			bit = IMAP_EN_CONDSTORE;
			name = "CONDSTORE";
		} else if (imap_arg_atom_eq(&c->args[i], "UTF8=ACCEPT")) {
			bit = IMAP_EN_UTF8;
			name = "UTF8=ACCEPT";
		} else if (imap_arg_atom_eq(&c->args[i], "QRESYNC")) {
			bit = IMAP_EN_QRESYNC;
			name = "QRESYNC";
		} else if (imap_arg_atom_eq(&c->args[i], "IMAP4rev2")) {
			bit = IMAP_EN_REV2;
			name = "IMAP4rev2";
		}
		if (bit == 0 || (s->enabled & bit))
			continue;
		s->enabled |= bit;
		evbuffer_add_printf(en, " %s", name);
	}
	if (s->enabled & IMAP_EN_QRESYNC)
		s->enabled |= IMAP_EN_CONDSTORE; /* RFC 7162 3.2.3: QRESYNC implies CONDSTORE */
	if (s->enabled & IMAP_EN_CONDSTORE)
		s->condstore = true;
	evbuffer_add_printf(out, "* ENABLED");
	evbuffer_add_buffer(out, en);
	evbuffer_free(en);
	evbuffer_add(out, "\r\n", 2);
	imap_reply(out, "%s OK Enabled", c->tag);
}

/* AUTHENTICATE PLAIN with or without an initial response (RFC 4959). */
static void auth_plain_response(struct imap_session *s, struct imap_command *c, const char *b64,
				size_t len)
{
	struct evbuffer *out = output(s);
	if (len == 1 && b64[0] == '*') {
		imap_reply(out, "%s BAD Authentication cancelled", c->tag);
		return;
	}
	size_t n = 0;
	char *msg = xmalloc(3 * (len / 4) + 4);
	long r = (len == 1 && b64[0] == '=') ? 0 : base64_decode(b64, len, (unsigned char *)msg);
	if (r < 0) {
		free(msg);
		imap_reply(out, "%s BAD Invalid base64 in the response", c->tag);
		count_error(s);
		return;
	}
	n = (size_t)r;
	msg[n] = '\0';
	char *nul1 = memchr(msg, '\0', n);
	char *nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - msg)) : NULL;
	if (nul1 == NULL || nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - msg))) {
		explicit_bzero(msg, n);
		free(msg);
		imap_reply(out, "%s NO [AUTHENTICATIONFAILED] Malformed PLAIN response", c->tag);
		count_error(s);
		return;
	}
	const char *authz = msg, *authc = nul1 + 1, *pass = nul2 + 1;
	if (*authz != '\0' && strcmp(authz, authc) != 0) {
		explicit_bzero(msg, n);
		free(msg);
		imap_reply(out, "%s NO [AUTHORIZATIONFAILED] Proxy login is not allowed", c->tag);
		count_error(s);
		return;
	}
	login_start(s, c, authc, pass);
	explicit_bzero(msg, n);
	free(msg);
}

static void cmd_authenticate(struct imap_session *s, struct imap_command *c)
{
	struct evbuffer *out = output(s);
	if (c->nargs < 1 || c->nargs > 2 || c->args[0].type != IMAP_ARG_ATOM ||
	    (c->nargs == 2 && c->args[1].type != IMAP_ARG_ATOM)) {
		imap_reply(out, "%s BAD Syntax: AUTHENTICATE mechanism [initial-response]", c->tag);
		count_error(s);
		return;
	}
	if (!imap_arg_atom_eq(&c->args[0], "PLAIN")) {
		imap_reply(out, "%s NO Unsupported authentication mechanism", c->tag);
		return;
	}
	if (!login_allowed(s, c->tag, NULL))
		return;
	if (c->nargs == 2) {
		auth_plain_response(s, c, c->args[1].str, c->args[1].len);
		return;
	}
	/* wait for the response line */
	free(s->auth_tag);
	s->auth_tag = xstrdup(c->tag);
	imap_reply(out, "+ ");
}

/* The line answering "+ " of AUTHENTICATE. */
static void auth_continue(struct imap_session *s, const char *line, size_t len)
{
	/* a command without a parse pool: job_new() takes over s->auth_tag */
	struct imap_command c = {.tag = s->auth_tag};
	auth_plain_response(s, &c, line, len);
	/* refused without a job (the tag was used in the reply): forget it */
	xfree(&s->auth_tag);
}

/* ---- IDLE (RFC 2177) ---- */

static void idle_sync_work(struct imap_job *j)
{
	imap_view_sync(j->s, j->out, true);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct imap_session *s = arg;
	if (s->dead || !s->idling)
		return;
	if (s->suspended) {
		s->wake_pending = true;
		return;
	}
	struct imap_command none = {0};
	struct imap_job *j = job_new(s, &none, false, "IDLE", NULL, 0, idle_sync_work, true);
	job_submit(j);
}

static void cmd_idle(struct imap_session *s, struct imap_command *c)
{
	/* an idle session holds its view for as long as it idles: packed */
	imap_view_pack(&s->view);
	s->idling = true;
	free(s->idle_tag);
	s->idle_tag = xstrdup(c->tag);
	imap_reply(output(s), "+ idling");
	/* report what changed before IDLE started */
	on_wake(-1, 0, s);
}

static void idle_done(struct imap_session *s, const char *line, size_t len)
{
	s->idling = false;
	imap_view_unpack(&s->view);
	if (len == 4 && strncasecmp(line, "DONE", 4) == 0) {
		imap_reply(output(s), "%s OK Idle completed", s->idle_tag);
	} else {
		imap_reply(output(s), "%s BAD Expected DONE", s->idle_tag);
		count_error(s);
	}
	xfree(&s->idle_tag);
}

/* ------------------------------------------------------------------ */
/* dispatch */

#define ST_NOTAUTH 0x1
#define ST_AUTH 0x2
#define ST_SELECTED 0x4
#define ST_ANY (ST_NOTAUTH | ST_AUTH | ST_SELECTED)
#define ST_LOGGED (ST_AUTH | ST_SELECTED)

/* job flags */
#define J_EXPUNGE_OK 0x1 /* EXPUNGE responses may be sent at the end */
#define J_UID 0x2        /* takes the UID prefix */

struct command {
	const char *name;
	unsigned states;
	void (*loop)(struct imap_session *s, struct imap_command *c); /* runs on the loop */
	void (*exec)(struct imap_job *j);                             /* or as a job */
	unsigned flags;
};

static const struct command commands[] = {
	{"CAPABILITY", ST_ANY, cmd_capability, NULL, 0},
	{"LOGOUT", ST_ANY, cmd_logout, NULL, 0},
	{"ID", ST_ANY, cmd_id, NULL, 0},
	{"NOOP", ST_ANY, NULL, imap_cmd_noop, J_EXPUNGE_OK},
	{"STARTTLS", ST_NOTAUTH, cmd_starttls, NULL, 0},
	{"LOGIN", ST_NOTAUTH, cmd_login, NULL, 0},
	{"AUTHENTICATE", ST_NOTAUTH, cmd_authenticate, NULL, 0},
	{"ENABLE", ST_LOGGED, cmd_enable, NULL, 0},
	{"IDLE", ST_LOGGED, cmd_idle, NULL, 0},
	{"COMPRESS", ST_LOGGED, cmd_compress, NULL, 0},
	{"SELECT", ST_LOGGED, NULL, imap_cmd_select, 0},
	{"EXAMINE", ST_LOGGED, NULL, imap_cmd_select, 0},
	{"CREATE", ST_LOGGED, NULL, imap_cmd_create, J_EXPUNGE_OK},
	{"DELETE", ST_LOGGED, NULL, imap_cmd_delete, J_EXPUNGE_OK},
	{"RENAME", ST_LOGGED, NULL, imap_cmd_rename, J_EXPUNGE_OK},
	{"SUBSCRIBE", ST_LOGGED, NULL, imap_cmd_subscribe, J_EXPUNGE_OK},
	{"UNSUBSCRIBE", ST_LOGGED, NULL, imap_cmd_subscribe, J_EXPUNGE_OK},
	{"LIST", ST_LOGGED, NULL, imap_cmd_list, J_EXPUNGE_OK},
	{"LSUB", ST_LOGGED, NULL, imap_cmd_list, J_EXPUNGE_OK},
	{"NAMESPACE", ST_LOGGED, NULL, imap_cmd_namespace, J_EXPUNGE_OK},
	{"STATUS", ST_LOGGED, NULL, imap_cmd_status, J_EXPUNGE_OK},
	{"APPEND", ST_LOGGED, NULL, imap_cmd_append, J_EXPUNGE_OK},
	{"GETQUOTA", ST_LOGGED, NULL, imap_cmd_getquota, J_EXPUNGE_OK},
	{"GETQUOTAROOT", ST_LOGGED, NULL, imap_cmd_getquota, J_EXPUNGE_OK},
	{"CHECK", ST_SELECTED, NULL, imap_cmd_noop, J_EXPUNGE_OK},
	{"CLOSE", ST_SELECTED, NULL, imap_cmd_close, 0},
	{"UNSELECT", ST_SELECTED, NULL, imap_cmd_close, 0},
	{"EXPUNGE", ST_SELECTED, NULL, imap_cmd_expunge, J_EXPUNGE_OK | J_UID},
	{"SEARCH", ST_SELECTED, NULL, imap_cmd_search, J_UID},
	{"SORT", ST_SELECTED, NULL, imap_cmd_search, J_UID},
	{"THREAD", ST_SELECTED, NULL, imap_cmd_search, J_UID},
	{"FETCH", ST_SELECTED, NULL, imap_cmd_fetch, J_UID},
	{"STORE", ST_SELECTED, NULL, imap_cmd_store, J_UID},
	{"COPY", ST_SELECTED, NULL, imap_cmd_copy, J_UID},
	{"MOVE", ST_SELECTED, NULL, imap_cmd_copy, J_UID},
};

/*
 * Which commands run on the loop thread instead of a worker. A worker costs
 * two thread hand-offs per command (a futex wake there, an eventfd wake back:
 * two context switches, the largest cost of a short command on a virtual
 * machine), so a command that only reads a little runs here: NOOP/CHECK,
 * FETCH of cached data (flags, envelope, structure, sizes) or of at most
 * HERE_MAX_BODIES message files, SEARCH/SORT/THREAD without body, text or
 * header keys, SELECT/EXAMINE of the folder selected already -- in a selected
 * folder of at most HERE_MAX_MESSAGES messages whose sync needs no write
 * (mbox_sync_probe()). On this thread the store takes the folder and index
 * locks only if they are free: should the sync of a SELECT still have to write
 * (a change since the probe) and find them taken, nothing was done and the
 * command goes to a worker (j->again). Anything that writes (a FETCH that sets
 * \Seen, STORE, APPEND, EXPUNGE, COPY...), logs in, or may read much stays on
 * the workers, where waiting on the disk blocks only its own session. (STORE
 * of system flags on the loop was measured: 0.3 context switches fewer per
 * command of the mix, no less CPU, so it stays on the workers.)
 */
static bool fetch_items_light(const struct imap_arg *a, size_t depth, unsigned *bodies)
{
	if (a->type == IMAP_ARG_LIST) {
		if (depth > 0)
			return false;
		for (size_t i = 0; i < a->nlist; i++)
			if (!fetch_items_light(&a->list[i], depth + 1, bodies))
				return false;
		return true;
	}
	if (a->type != IMAP_ARG_ATOM)
		return false;
	const char *w = a->str;
	if (strncasecmp(w, "BODY[", 5) == 0 || strncasecmp(w, "BINARY[", 7) == 0 ||
	    strcasecmp(w, "RFC822") == 0 || strcasecmp(w, "RFC822.TEXT") == 0)
		return false; /* sets \Seen */
	if (strncasecmp(w, "BODY.PEEK[", 10) == 0 || strncasecmp(w, "BINARY.PEEK[", 12) == 0 ||
	    strncasecmp(w, "BINARY.SIZE[", 12) == 0 || strcasecmp(w, "RFC822.HEADER") == 0)
		(*bodies)++;
	return true;
}

static bool search_keys_light(const struct imap_arg *a, size_t n, size_t depth)
{
	for (size_t i = 0; i < n; i++) {
		if (a[i].type == IMAP_ARG_LIST) {
			if (depth > 8 || !search_keys_light(a[i].list, a[i].nlist, depth + 1))
				return false;
		} else if (imap_arg_atom_eq(&a[i], "BODY") || imap_arg_atom_eq(&a[i], "TEXT") ||
		           imap_arg_atom_eq(&a[i], "HEADER") || imap_arg_atom_eq(&a[i], "FUZZY")) {
			return false;
		}
	}
	return true;
}

static bool runs_here(struct imap_session *s, const struct command *cmd, bool uid,
                      const struct imap_arg *args, size_t nargs)
{
	if (s->state != IMAP_SELECTED || s->here_off || s->view.box == NULL || s->view.packed ||
	    s->view.n > HERE_MAX_MESSAGES)
		return false;
	if (cmd->exec == imap_cmd_fetch) {
		unsigned bodies = 0;
		if (nargs < 2 || args[0].type != IMAP_ARG_ATOM ||
		    !fetch_items_light(&args[1], 0, &bodies))
			return false;
		if (bodies > 0) {
			struct imap_seqset set;
			const char *err = NULL;
			uint32_t max = s->view.n == 0 ? 0
			               : uid          ? s->view.uids[s->view.n - 1]
			                              : (uint32_t)s->view.n;
			int r = imap_seqset_parse(args[0].str, max, &set, &err);
			uint64_t n = r == 0 && !set.saved ? imap_seqset_count(&set) : UINT64_MAX;
			imap_seqset_free(&set);
			if (n > s->view.n)
				n = s->view.n;
			if (n * bodies > HERE_MAX_BODIES)
				return false;
		}
	} else if (cmd->exec == imap_cmd_search) {
		if (!search_keys_light(args, nargs, 0))
			return false;
	} else if (cmd->exec == imap_cmd_select) {
		/* the selected folder again, as it is selected: the probe below tells
		   whether opening it anew needs a write */
		if (nargs != 1 || (strcasecmp(cmd->name, "EXAMINE") == 0) != s->view.readonly)
			return false;
		char *name = imap_mailbox_name(s, &args[0]);
		bool same = name != NULL && s->view.name != NULL && strcmp(name, s->view.name) == 0;
		free(name);
		if (!same)
			return false;
	} else if (cmd->exec != imap_cmd_noop) {
		return false;
	}
	/* quiet: job_run_here() follows, on the index connection the probe took;
	   else a worker runs the command, and the connection goes back for it */
	mbox_thread_nowait(true);
	bool quiet = mbox_sync_probe(s->view.box);
	if (!quiet)
		mbox_thread_release();
	mbox_thread_nowait(false);
	return quiet;
}

static unsigned state_bit(enum imap_state st)
{
	return st == IMAP_NOT_AUTH ? ST_NOTAUTH : st == IMAP_AUTH ? ST_AUTH : ST_SELECTED;
}

static void dispatch(struct imap_session *s, struct imap_command *c)
{
	struct evbuffer *out = output(s);
	const char *name = c->name;
	const struct imap_arg *args = c->args;
	size_t nargs = c->nargs;
	bool uid = false;
	if (strcmp(name, "UID") == 0) {
		if (nargs < 1 || args[0].type != IMAP_ARG_ATOM) {
			imap_reply(out, "%s BAD Syntax: UID command ...", c->tag);
			count_error(s);
			return;
		}
		uid = true;
		name = args[0].str;
		args++;
		nargs--;
	}
	const struct command *cmd = NULL;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcasecmp(commands[i].name, name) == 0) {
			cmd = &commands[i];
			break;
		}
	}
	if (cmd == NULL || (uid && !(cmd->flags & J_UID))) {
		char q[100];
		log_debug("event=imap_unknown_command client=%s command=%s", s->ip,
			  log_quote(q, sizeof(q), name, 50));
		imap_reply(out, "%s BAD Unknown command", c->tag);
		count_error(s);
		return;
	}
	if (!(cmd->states & state_bit(s->state))) {
		if (s->state == IMAP_NOT_AUTH)
			imap_reply(out, "%s BAD Log in first", c->tag);
		else if (cmd->states == ST_NOTAUTH)
			imap_reply(out, "%s BAD Already logged in", c->tag);
		else
			imap_reply(out, "%s BAD No mailbox selected", c->tag);
		count_error(s);
		return;
	}
	if (cmd->loop != NULL) {
		cmd->loop(s, c);
		return;
	}
	if (s->state == IMAP_NOT_AUTH) {
		/* NOOP before login: nothing to sync */
		imap_reply(out, "%s OK NOOP completed", c->tag);
		return;
	}
	/* the canonical command name outlives the parsed command */
	bool here = runs_here(s, cmd, uid, args, nargs);
	struct imap_job *j = job_new(s, c, uid, cmd->name, args, nargs, cmd->exec,
				     (cmd->flags & J_EXPUNGE_OK) || uid);
	if (here)
		job_run_here(j);
	else
		job_submit(j);
}

static void process_commands(struct imap_session *s);

/* Take commands from the input until one needs to wait. */
static void process_input(struct imap_session *s)
{
	/* hold the session: a command may destroy the connection, and the
	   struct must outlive this loop (freed here when that happened) */
	s->pending++;
	process_commands(s);
	if (--s->pending == 0 && s->dead)
		session_free(s);
}

static void process_commands(struct imap_session *s)
{
	while (!s->dead && !s->suspended && s->state != IMAP_LOGOUT) {
		if (output_pending(s->bev) > OUTPUT_HIGH_WATER)
			return; /* on_write resumes */
		struct evbuffer *in = bufferevent_get_input(s->bev);
		if (s->idling || s->auth_tag != NULL) {
			size_t len;
			char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
			if (line == NULL) {
				if (evbuffer_get_length(in) > PREAUTH_MAX_LINE) {
					imap_reply(output(s), "* BYE Line too long");
					session_close(s);
				}
				return;
			}
			if (s->idling)
				idle_done(s, line, len);
			else
				auth_continue(s, line, len);
			explicit_bzero(line, len);
			free(line);
			continue;
		}
		enum imap_reader_status st = imap_reader_feed(&s->reader, in);
		switch (st) {
		case IMAP_READ_MORE:
			return;
		case IMAP_READ_CONTINUE:
			imap_reply(output(s), "+ Ready for literal data");
			continue;
		case IMAP_READ_TOO_LONG:
			imap_reply(output(s), "%s BAD [TOOBIG] Command line or literal too long",
				   s->reader.tag[0] != '\0' ? s->reader.tag : "*");
			log_info("event=imap_reject client=%s reason=too_long", s->ip);
			if (count_error(s))
				return;
			continue;
		case IMAP_READ_BAD_LITERAL:
			imap_reply(output(s), "%s BAD [TOOBIG] Non-synchronizing literal too large",
				   s->reader.tag[0] != '\0' ? s->reader.tag : "*");
			if (count_error(s))
				return;
			continue;
		case IMAP_READ_COMMAND:
			break;
		}
		struct imap_command c = {0};
		const char *err = NULL;
		int r = imap_parse_command(s->reader.buf, s->reader.len, &c, &err);
		imap_reader_reset(&s->reader);
		if (r < 0) {
			imap_reply(output(s), "%s BAD %s", c.tag != NULL ? c.tag : "*",
				   err != NULL ? err : "Syntax error");
			imap_command_clear(&c);
			if (count_error(s))
				return;
			continue;
		}
		dispatch(s, &c);
		imap_command_clear(&c); /* no-op if a job took it over */
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct imap_session *s = arg;
	process_input(s);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct imap_session *s = arg;
	if (!s->suspended && !s->dead && evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		process_input(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct imap_session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		s->tls = true;
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		log_info("event=imap_tls client=%s version=%s cipher=%s", s->ip,
			 ssl != NULL ? SSL_get_version(ssl) : "?",
			 ssl != NULL ? SSL_get_cipher_name(ssl) : "?");
		s->suspended = false;
		process_input(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		log_info("event=imap_timeout client=%s user=%s", s->ip,
			 s->user != NULL ? s->user : "-");
		imap_reply(output(s), "* BYE Autologout; idle for too long");
		session_close(s);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		if (e != 0) {
			char buf[256];
			ERR_error_string_n(e, buf, sizeof(buf));
			char q[300];
			log_info("event=imap_tls_failed client=%s error=%s", s->ip,
				 log_quote(q, sizeof(q), buf, 200));
		}
	}
	session_destroy(s);
}

/* Slowloris: the read timeout is re-armed by every byte, so a client that
   dribbles a never-ending line would stay forever. Before login there is a
   deadline for the whole of it, as Dovecot's login processes have. */
static void on_login_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct imap_session *s = arg;
	if (s->dead || s->state != IMAP_NOT_AUTH)
		return;
	log_info("event=imap_timeout client=%s reason=no_login", s->ip);
	imap_reply(output(s), "* BYE Login timeout");
	session_close(s);
}

static void refuse(evutil_socket_t fd, const char *msg, const char *ip, const char *reason)
{
	log_info("event=imap_reject client=%s reason=%s", ip, reason);
	log_flush(); /* the line before the reply, as for every other one */
	/* best effort: the socket is fresh, the line fits in its buffer */
	ssize_t w = send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
	evutil_closesocket(fd);
}

void imap_session_start(struct imap_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
			socklen_t salen, bool implicit_tls)
{
	const struct config *cfg = srv->conf->cfg;
	char ip[64];
	sockaddr_ntop(sa, ip, sizeof(ip));
	if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.') != NULL)
		memmove(ip, ip + 7, strlen(ip + 7) + 1);
	if (srv->draining) {
		refuse(fd, "* BYE Server shutting down\r\n", ip, "shutting_down");
		return;
	}
	if (srv->nsessions >= cfg->max_connections) {
		refuse(fd, "* BYE Too many connections, try again later\r\n", ip, "max_connections");
		return;
	}
	char key[80];
	snprintf(key, sizeof(key), "ic:%s", ip);
	if (ratelimit_active(srv->limits, key, 0) >= cfg->max_connections_per_ip) {
		refuse(fd, "* BYE Too many connections from your address\r\n", ip,
		       "max_connections_per_ip");
		return;
	}
	struct bufferevent *bev;
	if (implicit_tls) {
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
	struct imap_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->conf = srv->conf;
	s->conf->refs++;
	s->cfg = s->conf->cfg;
	s->bev = bev;
	s->implicit_tls = implicit_tls;
	s->tls = implicit_tls; /* the greeting goes out once the handshake is done */
	s->state = IMAP_NOT_AUTH;
	snprintf(s->ip, sizeof(s->ip), "%s", ip);
	reader_limits(s);
	s->wake = event_new(srv->base, -1, 0, on_wake, s);
	s->login_timer = evtimer_new(srv->base, on_login_timeout, s);
	struct timeval ltv = {(time_t)cfg->idle_timeout, 0};
	evtimer_add(s->login_timer, &ltv);
	s->next = srv->sessions;
	if (srv->sessions != NULL)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;
	log_info("event=imap_connect client=%s tls=%s", s->ip, implicit_tls ? "yes" : "no");

	bufferevent_setcb(bev, on_read, on_write, on_event, s);
	bufferevent_setwatermark(bev, EV_READ, 0, INPUT_HIGH_WATER);
	bufferevent_setwatermark(bev, EV_WRITE, 64 * 1024, 0);
	set_timeout(s);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	if (implicit_tls)
		s->suspended = true; /* until the handshake completes */
	struct evbuffer *out = output(s);
	evbuffer_add_printf(out, "* OK [");
	imap_capability_string(s, out);
	imap_reply(out, "] Postern ready.");
}

void imap_sessions_close_all(struct imap_server *srv)
{
	struct imap_session *next;
	for (struct imap_session *s = srv->sessions; s != NULL; s = next) {
		next = s->next;
		if (s->state == IMAP_LOGOUT) {
			/* already closing (the first call): now it goes */
			session_destroy(s);
			continue;
		}
		if (s->bev != NULL)
			imap_reply(output(s), "* BYE Server shutting down");
		session_close(s);
	}
}
