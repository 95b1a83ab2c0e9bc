/*
 * The daemon (`postern serve`): listeners, privileges, signals.
 *
 * SECURITY: started as root, this binds the ports, loads the TLS key and
 * opens the log file, then drops to the service user (setgroups, setgid,
 * setuid) before any network input is read or the queue is opened; it
 * refuses to go on as root. One process, one event-loop thread; blocking
 * work (SQLite, fsync, password hashing, reverse DNS) runs on worker threads.
 */
#include "server/server.h"

#include "dns/dns.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/netaddr.h"
#include "lib/strutil.h"
#include "lib/worker.h"
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "store/mailbox.h"
#include "imap/imap_session.h"
#include "pop3/pop3_session.h"
#include "smtp/ratelimit.h"
#include "smtp/smtp_session.h"
#include "smtp/smtp_tls.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_TIMEOUT_S 30
#define LISTEN_BACKLOG 511
/* Out of descriptors (EMFILE/ENFILE) or another accept() error: every listener pauses this
   long instead of spinning on a listening socket that stays readable. */
#define ACCEPT_BACKOFF_MS 200
/* Still out of descriptors after a pause: at most this many waiting connections per listener
   and pause are accepted on the reserve descriptor and refused with a temporary error. */
#define ACCEPT_REFUSE_MAX 64
/* At most one warning per this many seconds about accept() failing. */
#define ACCEPT_LOG_EVERY_S 10

enum listener_kind {
	L_SMTP,
	L_SUBMISSION,
	L_SUBMISSIONS,
	L_IMAP,
	L_IMAPS,
	L_POP3,
	L_POP3S,
};

static const char *const kind_names[] = {
	"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
};

struct listener {
	struct listener *next;
	struct evconnlistener *lev;
	struct server *server;
	enum listener_kind kind;
};

struct server {
	struct smtp_server smtp; /* base, conf, workers, limits are shared with IMAP and POP3 */
	struct imap_server imap;
	struct pop3_server pop3;
	struct mbox_store *store;
	struct listener *listeners;
	struct event *sig_term, *sig_int, *sig_hup, *drain_timer, *retention_timer;
	int exit_code;
	/* accept() failing (out of descriptors): listeners paused, see on_accept_error() */
	struct event *accept_timer; /* ends a pause */
	struct event *log_ev;       /* writes the lines logged in this round of callbacks */
	int reserve_fd;             /* /dev/null, given up to accept-and-refuse when out of fds */
	bool accept_paused;         /* listeners disabled until accept_timer fires */
	bool accept_retried;        /* a pause of this episode has ended and accept failed again */
	uint64_t episode_start_ms;  /* first failure of the episode (0: accept works) */
	bool episode_logged;        /* its start was logged: log its end too */
	uint64_t last_warn_ms;      /* rate limit of the accept_failed warning */
	uint64_t refused;           /* connections refused on the reserve fd, this episode */
	uint64_t failures_unlogged; /* failed accepts not yet reported in a warning */
};

static const char *kind_name(enum listener_kind k)
{
	return kind_names[k];
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* An accept succeeded: a descriptor shortage, if there was one, is over. */
static void accept_episode_end(struct server *srv)
{
	if (srv->episode_logged)
		log_info("event=accept_resumed paused_ms=%llu refused=%llu",
			 (unsigned long long)(now_ms() - srv->episode_start_ms),
			 (unsigned long long)srv->refused);
	srv->episode_start_ms = 0;
	srv->episode_logged = false;
	srv->accept_retried = false;
	srv->refused = 0;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	struct listener *l = arg;
	struct server *srv = l->server;
	if (srv->episode_start_ms != 0)
		accept_episode_end(srv);
	/* replies go out at once: without this a response split over two TLS
	   records waits for the peer's delayed ACK (~40 ms) */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	switch (l->kind) {
	case L_SMTP:
		smtp_session_start(&srv->smtp, fd, sa, (socklen_t)salen, SMTP_LISTENER_SMTP);
		break;
	case L_SUBMISSION:
		smtp_session_start(&srv->smtp, fd, sa, (socklen_t)salen, SMTP_LISTENER_SUBMISSION);
		break;
	case L_SUBMISSIONS:
		smtp_session_start(&srv->smtp, fd, sa, (socklen_t)salen, SMTP_LISTENER_SUBMISSIONS);
		break;
	case L_IMAP:
	case L_IMAPS:
		if (srv->imap.store == NULL) {
			evutil_closesocket(fd);
			break;
		}
		imap_session_start(&srv->imap, fd, sa, (socklen_t)salen, l->kind == L_IMAPS);
		break;
	case L_POP3:
	case L_POP3S:
		if (srv->pop3.store == NULL) {
			evutil_closesocket(fd);
			break;
		}
		pop3_session_start(&srv->pop3, fd, sa, (socklen_t)salen, l->kind == L_POP3S);
		break;
	}
}

/* What a connection refused for want of a descriptor is told; NULL on the implicit-TLS
   listeners, which cannot be answered in plain text (they are just closed). */
static const char *busy_reply(enum listener_kind kind)
{
	switch (kind) {
	case L_SMTP:
	case L_SUBMISSION:
		return "421 4.3.2 Server busy, try again later\r\n";
	case L_IMAP:
		return "* BYE [UNAVAILABLE] Server busy, try again later\r\n";
	case L_POP3:
		return "-ERR [SYS/TEMP] Server busy, try again later\r\n";
	default:
		return NULL;
	}
}

/* Accept up to ACCEPT_REFUSE_MAX connections waiting on one listener, tell each it is
   refused for now and close it; stops early when none is waiting (EAGAIN) or the free slot
   is gone (EMFILE). */
static void refuse_waiting_on(struct server *srv, struct listener *l)
{
	evutil_socket_t lfd = evconnlistener_get_fd(l->lev);
	const char *text = busy_reply(l->kind);
	for (int i = 0; i < ACCEPT_REFUSE_MAX; i++) {
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			break;
		if (text != NULL) {
			ssize_t w = send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
			(void)w;
		}
		char ip[64];
		sockaddr_ntop((struct sockaddr *)&ss, ip, sizeof(ip));
		log_debug("event=reject client=%s listener=%s reason=out_of_descriptors", ip,
			  kind_name(l->kind));
		close(fd);
		srv->refused++;
	}
}

/* Out of descriptors for longer than one pause: give up the reserve descriptor, refuse the
   connections waiting on every listener with it, then take the reserve back. Clients get a
   temporary error at once instead of hanging in the backlog until their own timeout (libuv
   and others do the same). A worker thread may take the freed slot first: then accept()
   fails again, nobody is refused this time, and the reserve is retaken after the next pause. */
static void refuse_waiting(struct server *srv)
{
	if (srv->reserve_fd >= 0) {
		close(srv->reserve_fd);
		srv->reserve_fd = -1;
	}
	for (struct listener *l = srv->listeners; l != NULL; l = l->next)
		refuse_waiting_on(srv, l);
	srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void pause_listeners(struct server *srv)
{
	for (struct listener *l = srv->listeners; l != NULL; l = l->next)
		evconnlistener_disable(l->lev);
	if (!srv->accept_paused) {
		srv->accept_paused = true;
		struct timeval tv = {0, ACCEPT_BACKOFF_MS * 1000};
		evtimer_add(srv->accept_timer, &tv);
	}
}

/* log_defer()'s wake: the flush runs after the callbacks already active in
   this round, before the loop waits again (and so before queued replies are sent) */
static void log_wake(void *arg)
{
	event_active(arg, 0, 0);
}

static void on_log_flush(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_flush();
}

static void on_accept_backoff(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	srv->accept_paused = false;
	if (srv->smtp.draining)
		return;
	if (srv->reserve_fd < 0)
		srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* a failure after this pause refuses waiting clients instead of keeping them */
	srv->accept_retried = true;
	for (struct listener *l = srv->listeners; l != NULL; l = l->next)
		evconnlistener_enable(l->lev);
}

/*
 * accept() failed with something other than EAGAIN/EINTR/ECONNABORTED (libevent retries
 * those itself). The listening socket stays readable, so returning here would make libevent
 * call accept() again at once, forever: 100 % CPU and a log line per try while the process is
 * out of descriptors. Instead every listener pauses for ACCEPT_BACKOFF_MS (connections wait
 * in the kernel's backlog); if accept() still fails after a pause, the waiting connections are
 * refused through the reserve descriptor. One warning per episode, at most one per
 * ACCEPT_LOG_EVERY_S; the episode ends with the next accepted connection.
 */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();
	struct listener *l = arg;
	struct server *srv = l->server;
	uint64_t now = now_ms();
	bool out_of_fds = e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
	srv->failures_unlogged++;
	if (srv->episode_start_ms == 0)
		srv->episode_start_ms = now;
	if (srv->last_warn_ms == 0 || now - srv->last_warn_ms >= ACCEPT_LOG_EVERY_S * 1000) {
		log_warn("event=accept_failed proto=%s error=\"%s\" failures=%llu "
			 "effect=\"listeners paused %d ms at a time%s\"",
			 kind_name(l->kind), evutil_socket_error_to_string(e),
			 (unsigned long long)srv->failures_unlogged, ACCEPT_BACKOFF_MS,
			 out_of_fds ? ", waiting clients refused with a temporary error" : "");
		srv->last_warn_ms = now;
		srv->failures_unlogged = 0;
		srv->episode_logged = true;
	}
	if (out_of_fds && srv->accept_retried)
		refuse_waiting(srv);
	pause_listeners(srv);
}

/* Bind one address; 0 ok, -1 with a logged error. */
static int bind_one(struct server *srv, enum listener_kind kind, const struct sockaddr *sa,
		    socklen_t salen, bool dual_stack)
{
	char ip[64];
	sockaddr_ntop(sa, ip, sizeof(ip));
	uint16_t port = sa->sa_family == AF_INET6
				? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
				: ntohs(((const struct sockaddr_in *)sa)->sin_port);
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? &zero : &one, sizeof(int));
	if (bind(fd, sa, salen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		log_error("event=listen_failed proto=%s addr=%s port=%u error=\"%s\"",
			  kind_name(kind), ip, port, strerror(errno));
		close(fd);
		return -1;
	}
	struct listener *l = xcalloc(1, sizeof(*l));
	l->server = srv;
	l->kind = kind;
	l->lev = evconnlistener_new(srv->smtp.base, on_accept, l, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (l->lev == NULL) {
		close(fd);
		free(l);
		return -1;
	}
	evconnlistener_set_error_cb(l->lev, on_accept_error);
	l->next = srv->listeners;
	srv->listeners = l;
	const char *shown = dual_stack ? "*" : ip;
	bool v6 = sa->sa_family == AF_INET6 && !dual_stack;
	log_info("event=listening proto=%s addr=%s%s%s:%u", kind_name(kind), v6 ? "[" : "", shown,
		 v6 ? "]" : "", port);
	printf("postern: %s on %s%s%s:%u\n", kind_name(kind), v6 ? "[" : "", shown, v6 ? "]" : "",
	       port);
	fflush(stdout);
	return 0;
}

/* Bind every host:port of a [listen] list; -1 if any fails. */
static int bind_list(struct server *srv, enum listener_kind kind, const char *list)
{
	size_t n;
	char **items = strv_split_list(list, &n);
	int ret = 0;
	for (size_t i = 0; i < n && ret == 0; i++) {
		char *host;
		uint16_t port;
		if (hostport_parse(items[i], &host, &port) < 0) {
			log_error("event=listen_failed proto=%s addr=%s error=\"bad host:port\"",
				  kind_name(kind), items[i]);
			ret = -1;
			break;
		}
		if (*host == '\0') {
			/* all addresses: IPv6 dual-stack where available, else IPv4 */
			struct sockaddr_in6 s6 = {.sin6_family = AF_INET6,
						  .sin6_port = htons(port),
						  .sin6_addr = in6addr_any};
			int fd = socket(AF_INET6, SOCK_STREAM, 0);
			bool have_v6 = fd >= 0;
			if (fd >= 0)
				close(fd);
			if (have_v6) {
				ret = bind_one(srv, kind, (struct sockaddr *)&s6, sizeof(s6), true);
			} else {
				struct sockaddr_in s4 = {.sin_family = AF_INET,
							 .sin_port = htons(port),
							 .sin_addr.s_addr = htonl(INADDR_ANY)};
				ret = bind_one(srv, kind, (struct sockaddr *)&s4, sizeof(s4), false);
			}
		} else {
			struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
						 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
			struct addrinfo *res = NULL;
			char portstr[8];
			snprintf(portstr, sizeof(portstr), "%u", port);
			int e = getaddrinfo(host, portstr, &hints, &res);
			if (e != 0) {
				log_error("event=listen_failed proto=%s addr=%s error=\"%s\"",
					  kind_name(kind), host, gai_strerror(e));
				ret = -1;
			}
			for (struct addrinfo *ai = res; ai != NULL && ret == 0; ai = ai->ai_next)
				ret = bind_one(srv, kind, ai->ai_addr, ai->ai_addrlen, false);
			if (res != NULL)
				freeaddrinfo(res);
		}
		free(host);
	}
	strv_free(&items);
	return ret;
}

static void close_listeners(struct server *srv)
{
	while (srv->listeners != NULL) {
		struct listener *l = srv->listeners;
		srv->listeners = l->next;
		evconnlistener_free(l->lev);
		free(l);
	}
}

static struct smtp_conf *conf_new(struct config *cfg)
{
	struct smtp_conf *c = xcalloc(1, sizeof(*c));
	c->cfg = cfg;
	c->refs = 1;
	char err[512];
	c->tls = smtp_tls_ctx_new(cfg->tls_cert, cfg->tls_key, err, sizeof(err));
	if (c->tls == NULL) {
		char q[600];
		log_warn("event=tls_unavailable reason=%s (STARTTLS and submissions are off)",
			 log_quote(q, sizeof(q), err, 500));
	}
	return c;
}

static void apply_log_level(const struct config *cfg)
{
	int lvl = log_level_parse(cfg->log_level);
	if (lvl >= 0)
		log_set_level((enum log_level)lvl);
}

static void on_drained(struct smtp_server *smtp)
{
	event_base_loopexit(smtp->base, NULL);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	log_warn("event=drain_timeout sessions=%u", srv->smtp.nsessions);
	smtp_sessions_close_all(&srv->smtp);
	event_base_loopexit(srv->smtp.base, NULL);
}

static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	if (srv->smtp.draining)
		return;
	log_info("event=shutdown signal=%d sessions=%u", (int)sig, srv->smtp.nsessions);
	close_listeners(srv);
	srv->smtp.draining = true;
	srv->imap.draining = true;
	srv->pop3.draining = true;
	imap_sessions_close_all(&srv->imap);
	pop3_sessions_close_all(&srv->pop3);
	srv->drain_timer = evtimer_new(srv->smtp.base, on_drain_timeout, srv);
	struct timeval tv = {DRAIN_TIMEOUT_S, 0};
	evtimer_add(srv->drain_timer, &tv);
	smtp_sessions_drain(&srv->smtp);
}

static void on_reload(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	const char *path = srv->smtp.conf->cfg->path;
	char *err = NULL;
	struct config *cfg = config_load(path, &err);
	if (cfg == NULL) {
		char q[600];
		log_error("event=reload_failed error=%s", log_quote(q, sizeof(q), err, 500));
		free(err);
		return;
	}
	/* sessions already running keep their reference to the old one */
	struct smtp_conf *old = srv->smtp.conf;
	srv->smtp.conf = conf_new(cfg);
	srv->imap.conf = srv->smtp.conf;
	srv->pop3.conf = srv->smtp.conf;
	smtp_conf_unref(&old);
	apply_log_level(cfg);
	log_info("event=reload config=%s", cfg->path != NULL ? cfg->path : "(defaults)");
}

static int drop_privileges(const struct config *cfg)
{
	if (geteuid() != 0)
		return 0;
	struct passwd *pw = getpwnam(cfg->user);
	if (pw == NULL) {
		log_error("event=fatal reason=\"service user %s does not exist\"", cfg->user);
		return -1;
	}
	if (pw->pw_uid == 0) {
		log_error("event=fatal reason=\"service user %s is root\"", cfg->user);
		return -1;
	}
	if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		log_error("event=fatal reason=\"cannot switch to %s: %s\"", cfg->user,
			  strerror(errno));
		return -1;
	}
	if (setuid(0) == 0 || geteuid() == 0 || getuid() == 0) {
		log_error("event=fatal reason=\"still root after dropping privileges\"");
		return -1;
	}
	log_info("event=privileges_dropped user=%s uid=%u", cfg->user, (unsigned)pw->pw_uid);
	return 0;
}

static void open_log(const struct config *cfg)
{
	if (cfg->log_file == NULL || *cfg->log_file == '\0')
		return;
	/* create the directory (one level; data_dir/log by default) */
	char *dir = xstrdup(cfg->log_file);
	char *slash = strrchr(dir, '/');
	if (slash != NULL && slash != dir) {
		*slash = '\0';
		mkdir(dir, 0750);
	}
	free(dir);
	if (log_open_file(cfg->log_file) < 0) {
		log_warn("event=log_open_failed path=%s error=\"%s\"", cfg->log_file,
			 strerror(errno));
		return;
	}
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam(cfg->user);
		if (pw != NULL && chown(cfg->log_file, pw->pw_uid, pw->pw_gid) < 0)
			log_warn("event=chown_failed path=%s", cfg->log_file);
	}
}

/* ---- retention: Trash and Junk emptied of old messages, at start and hourly ---- */

#define RETENTION_INTERVAL_S 3600

struct retention_job {
	struct server *srv;
	struct mbox_store *store;
	char *data_dir;
	uint64_t trash, junk;
};

static void retention_work(void *arg)
{
	struct retention_job *j = arg;
	size_t deleted = 0;
	char *err = NULL;
	if (mbox_expire_all(j->store, j->data_dir, j->trash, j->junk, &deleted, &err) < 0) {
		char q[600];
		log_warn("event=retention_failed error=%s", log_quote(q, sizeof(q), err, 500));
		free(err);
	} else if (deleted > 0) {
		log_info("event=retention deleted=%zu", deleted);
	}
}

static void retention_done(void *arg)
{
	struct retention_job *j = arg;
	free(j->data_dir);
	free(j);
}

static void on_retention(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	const struct config *cfg = srv->smtp.conf->cfg;
	if (srv->store != NULL && !srv->smtp.draining &&
	    (cfg->retention_trash > 0 || cfg->retention_junk > 0)) {
		struct retention_job *j = xcalloc(1, sizeof(*j));
		j->srv = srv;
		j->store = srv->store;
		j->data_dir = xstrdup(cfg->data_dir);
		j->trash = cfg->retention_trash;
		j->junk = cfg->retention_junk;
		worker_submit(srv->smtp.workers, retention_work, retention_done, j);
	}
	struct timeval tv = {RETENTION_INTERVAL_S, 0};
	evtimer_add(srv->retention_timer, &tv);
}

static void retention_start(struct server *srv)
{
	srv->retention_timer = evtimer_new(srv->smtp.base, on_retention, srv);
	/* first run shortly after start, not in the middle of it */
	struct timeval tv = {5, 0};
	evtimer_add(srv->retention_timer, &tv);
}

int server_run(struct config *cfg)
{
	struct server *srv = xcalloc(1, sizeof(*srv));
	int ret = 1;
	srv->reserve_fd = -1;
	signal(SIGPIPE, SIG_IGN);
	apply_log_level(cfg);
	evthread_use_pthreads();
	/* epoll changes batched per loop iteration: a bufferevent that enables and
	   disables writing around each reply costs one epoll_ctl, not two */
	struct event_config *ecfg = event_config_new();
	if (ecfg != NULL)
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	srv->smtp.base = ecfg != NULL ? event_base_new_with_config(ecfg) : NULL;
	if (ecfg != NULL)
		event_config_free(ecfg);
	if (srv->smtp.base == NULL)
		fatal("event=event_base_new_failed");
	/* the loop's log lines go out once per round of callbacks (log_defer()) */
	srv->log_ev = event_new(srv->smtp.base, -1, 0, on_log_flush, NULL);
	if (srv->log_ev == NULL)
		fatal("event=event_new_failed");
	log_defer(log_wake, srv->log_ev);
	srv->smtp.conf = conf_new(cfg);
	srv->smtp.limits = ratelimit_new();
	srv->smtp.drained = on_drained;

	/* Catch signals before the ports open: a service manager may send SIGHUP or
	   SIGTERM as soon as it sees us listening; they are handled once the loop runs. */
	srv->sig_term = evsignal_new(srv->smtp.base, SIGTERM, on_terminate, srv);
	srv->sig_int = evsignal_new(srv->smtp.base, SIGINT, on_terminate, srv);
	srv->sig_hup = evsignal_new(srv->smtp.base, SIGHUP, on_reload, srv);
	evsignal_add(srv->sig_term, NULL);
	evsignal_add(srv->sig_int, NULL);
	evsignal_add(srv->sig_hup, NULL);

	/* as root: bind, keys (above), log file; then drop privileges */
	if (bind_list(srv, L_SMTP, cfg->listen_smtp) < 0 ||
	    bind_list(srv, L_SUBMISSION, cfg->listen_submission) < 0 ||
	    bind_list(srv, L_IMAP, cfg->listen_imap) < 0 ||
	    bind_list(srv, L_POP3, cfg->listen_pop3) < 0)
		goto out;
	/* implicit-TLS listeners need a certificate */
	const struct {
		enum listener_kind kind;
		const char *list;
	} tls_listeners[] = {
		{L_SUBMISSIONS, cfg->listen_submissions},
		{L_IMAPS, cfg->listen_imaps},
		{L_POP3S, cfg->listen_pop3s},
	};
	for (size_t i = 0; i < sizeof(tls_listeners) / sizeof(tls_listeners[0]); i++) {
		if (*tls_listeners[i].list == '\0')
			continue;
		if (srv->smtp.conf->tls == NULL)
			log_warn("event=listener_disabled proto=%s reason=\"no TLS certificate\"",
				 kind_name(tls_listeners[i].kind));
		else if (bind_list(srv, tls_listeners[i].kind, tls_listeners[i].list) < 0)
			goto out;
	}
	open_log(cfg);
	if (drop_privileges(cfg) < 0)
		goto out;

	char *err = NULL;
	srv->smtp.queue = queue_open(srv->smtp.base, cfg, &err);
	if (srv->smtp.queue == NULL) {
		char q[600];
		log_error("event=queue_open_failed error=%s", log_quote(q, sizeof(q), err, 500));
		free(err);
		goto out;
	}
	/* the outbound agent: its own threads, stopped by queue_close() */
	if (queue_outbound_start(srv->smtp.queue, cfg, &err) < 0) {
		char q[600];
		log_error("event=outbound_start_failed error=%s", log_quote(q, sizeof(q), err, 500));
		free(err);
		goto out;
	}
	/* SMTP AUTH hashing and every IMAP/POP3 command run on this pool; IMAP jobs
	   wait on fsyncs (APPEND) and on the index write lock, so more threads than
	   cores keep readers going while some wait (4 made the IMAP mix queue here) */
	worker_set_after_job(mbox_thread_release); /* index connections back to their pool */
	srv->smtp.workers = worker_pool_new(srv->smtp.base, 16);
	/* FCrDNS of clients on the loop, cancellable: a dead DNS server delays nothing */
	struct dns_options dopts = {.resolver = cfg->dns_resolver, .timeout_ms = 5000};
	const char *derr = NULL;
	srv->smtp.dns = dns_resolver_new(srv->smtp.base, &dopts, &derr);
	if (srv->smtp.dns == NULL)
		log_warn("event=dns_unavailable error=\"%s\" effect=\"clients shown as unknown\"",
			 derr != NULL ? derr : "?");

	/* the mailbox store behind IMAP and POP3 */
	srv->store = mbox_store_new(cfg->data_dir, cfg->mailbox_folders, &err);
	if (srv->store == NULL) {
		char q[600];
		log_error("event=mailbox_store_failed error=%s effect=\"IMAP and POP3 refuse "
			  "connections\"",
			  log_quote(q, sizeof(q), err, 500));
		free(err);
		err = NULL;
	}
	srv->imap = (struct imap_server){.base = srv->smtp.base,
					 .conf = srv->smtp.conf,
					 .workers = srv->smtp.workers,
					 .store = srv->store,
					 .limits = srv->smtp.limits};
	/* POP3 { */
	srv->pop3 = (struct pop3_server){.base = srv->smtp.base,
					 .conf = srv->smtp.conf,
					 .workers = srv->smtp.workers,
					 .store = srv->store,
					 .limits = srv->smtp.limits};
	/* } POP3 */
	retention_start(srv);
	srv->accept_timer = evtimer_new(srv->smtp.base, on_accept_backoff, srv);
	srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	log_info("event=started hostname=%s data_dir=%s version=%s", cfg->hostname, cfg->data_dir,
		 POSTERN_VERSION);
	event_base_dispatch(srv->smtp.base);
	ret = 0;

out:
	log_defer(NULL, NULL);
	close_listeners(srv);
	smtp_sessions_close_all(&srv->smtp);
	/* the loop is over: a second call frees sessions still flushing their goodbye */
	imap_sessions_close_all(&srv->imap);
	imap_sessions_close_all(&srv->imap);
	pop3_sessions_close_all(&srv->pop3);
	pop3_sessions_close_all(&srv->pop3);
	if (srv->retention_timer != NULL)
		event_free(srv->retention_timer);
	/* finish worker jobs: their done callbacks free what sessions left */
	worker_pool_free(&srv->smtp.workers);
	mbox_store_free(&srv->store);
	dns_resolver_free(&srv->smtp.dns); /* after the sessions: they cancel their lookups */
	if (srv->smtp.queue != NULL)
		queue_close(&srv->smtp.queue);
	if (srv->sig_term != NULL) {
		event_free(srv->sig_term);
		event_free(srv->sig_int);
		event_free(srv->sig_hup);
	}
	if (srv->drain_timer != NULL)
		event_free(srv->drain_timer);
	if (srv->accept_timer != NULL)
		event_free(srv->accept_timer);
	if (srv->log_ev != NULL)
		event_free(srv->log_ev);
	if (srv->reserve_fd >= 0)
		close(srv->reserve_fd);
	ratelimit_free(&srv->smtp.limits);
	smtp_conf_unref(&srv->smtp.conf);
	/* a bufferevent freed above whose deferred callbacks were still queued is
	   released by them: run them (event_base_free() would cancel them, leaking it) */
	event_base_loop(srv->smtp.base, EVLOOP_NONBLOCK);
	event_base_free(srv->smtp.base);
	free(srv);
	log_info("event=stopped exit=%d", ret);
	log_close_file();
	return ret;
}
