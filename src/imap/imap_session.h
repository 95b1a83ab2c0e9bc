/*
 * IMAP server sessions (RFC 9051 IMAP4rev2 and RFC 3501 IMAP4rev1) and the
 * state they share (struct imap_server, owned by the daemon in
 * src/server/server.c).
 */
#ifndef POSTERN_IMAP_SESSION_H
#define POSTERN_IMAP_SESSION_H

#include <event2/util.h>
#include <stdbool.h>
#include <sys/socket.h>

struct event_base;
struct imap_session;
struct mbox_store;
struct ratelimit;
struct smtp_conf;
struct worker_pool;

struct imap_server {
	struct event_base *base;
	struct smtp_conf *conf;      /* current config + TLS context; sessions keep a reference */
	struct worker_pool *workers; /* logins and every mailbox operation */
	struct mbox_store *store;
	struct ratelimit *limits;    /* shared with SMTP AUTH and POP3: failed logins */
	unsigned nsessions;
	struct imap_session *sessions; /* all live sessions */
	bool draining;
};

/* Take over an accepted socket; implicit_tls for the imaps listener. */
void imap_session_start(struct imap_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
			socklen_t salen, bool implicit_tls);

/* Shutdown: every session gets "* BYE" and is closed once its command in flight returns. */
void imap_sessions_close_all(struct imap_server *srv);

#endif
