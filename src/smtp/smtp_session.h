/*
 * One SMTP server session per connection (smtp_session.c), and the state
 * they share (struct smtp_server, owned by server.c).
 */
#ifndef POSTERN_SMTP_SESSION_H
#define POSTERN_SMTP_SESSION_H

#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <sys/socket.h>

struct config;
struct event_base;
struct queue;
struct ratelimit;
struct smtp_session;
struct worker_pool;

struct dns_resolver;

enum smtp_listener {
	SMTP_LISTENER_SMTP,        /* port 25: MX traffic */
	SMTP_LISTENER_SUBMISSION,  /* port 587: STARTTLS + AUTH required */
	SMTP_LISTENER_SUBMISSIONS, /* port 465: implicit TLS + AUTH required */
};

/* A configuration shared by the sessions started while it was current. */
struct smtp_conf {
	struct config *cfg;
	SSL_CTX *tls; /* NULL: no usable certificate, STARTTLS not offered */
	unsigned refs;
};

void smtp_conf_unref(struct smtp_conf **conf);

struct smtp_server {
	struct event_base *base;
	struct smtp_conf *conf;       /* current; sessions hold their own reference */
	struct worker_pool *workers;  /* directory lookups, password checks */
	/* SPF/DKIM/DMARC/ARC DNS work and DKIM signing (smtp_session.c makes it on first
	   use, smtp_sessions_close_all frees it), so slow DNS never holds up logins */
	struct worker_pool *auth_workers;
	struct dns_resolver *dns;     /* FCrDNS of clients; NULL if it could not start */
	struct queue *queue;
	struct ratelimit *limits;     /* connections, message rate, auth failures */
	unsigned nsessions;
	unsigned commits;              /* queue commits in flight */
	struct smtp_session *sessions; /* all live sessions */
	bool draining;                 /* SIGTERM: finish transactions, then close */
	/* RCPT lookups go to the workers until then (CLOCK_MONOTONIC s): one was slow */
	time_t rcpt_here_off_until;
	/* called when draining and the last session is gone */
	void (*drained)(struct smtp_server *srv);
};

/*
 * Take over the accepted socket `fd` and run a session on it. Connection
 * limits are checked here (421 and close when exceeded).
 */
void smtp_session_start(struct smtp_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
			socklen_t salen, enum smtp_listener kind);

/* Start draining: idle sessions get 421 4.3.2 now, busy ones after their transaction. */
void smtp_sessions_drain(struct smtp_server *srv);
/* Call srv->drained if draining and no session or commit is left. */
void smtp_server_check_drained(struct smtp_server *srv);
/* Close every remaining session at once (the drain timeout expired, or the end);
   also finishes the auth_workers jobs. */
void smtp_sessions_close_all(struct smtp_server *srv);

#endif
