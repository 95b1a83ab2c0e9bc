/*
 * POP3 server sessions (RFC 1939, CAPA RFC 2449, STLS RFC 2595, SASL PLAIN
 * RFC 5034) and the state they share (struct pop3_server, owned by the
 * daemon in src/server/server.c). Messages are served from INBOX through
 * the mailbox store; UIDL is stable across sessions.
 */
#ifndef POSTERN_POP3_SESSION_H
#define POSTERN_POP3_SESSION_H

#include <event2/util.h>
#include <stdbool.h>
#include <sys/socket.h>

struct event_base;
struct mbox_store;
struct pop3_session;
struct ratelimit;
struct smtp_conf;
struct worker_pool;

struct pop3_server {
	struct event_base *base;
	struct smtp_conf *conf;      /* current config + TLS context; sessions keep a reference */
	struct worker_pool *workers; /* logins and every mailbox operation */
	struct mbox_store *store;
	struct ratelimit *limits;    /* shared with SMTP AUTH and IMAP: failed logins */
	unsigned nsessions;
	struct pop3_session *sessions; /* all live sessions */
	bool draining;
};

/* Take over an accepted socket; implicit_tls for the pop3s listener. */
void pop3_session_start(struct pop3_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
			socklen_t salen, bool implicit_tls);

/* Shutdown: every session gets "-ERR [SYS/TEMP] Server shutting down" and is closed
   (a session in the UPDATE state finishes it first). */
void pop3_sessions_close_all(struct pop3_server *srv);

#endif
