/*
 * TLS for the SMTP listeners: one server SSL_CTX built from the configured
 * certificate chain and key. TLS 1.2 and later only; an unexpected EOF from
 * the peer is an ordinary close (SSL_OP_IGNORE_UNEXPECTED_EOF).
 */
#ifndef POSTERN_SMTP_TLS_H
#define POSTERN_SMTP_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* NULL with a static or allocated-into-buf reason in *error_r. */
SSL_CTX *smtp_tls_ctx_new(const char *cert_file, const char *key_file, char *errbuf,
			  size_t errbufsize);

struct bufferevent;
struct event_base;
struct evbuffer;

/*
 * STARTTLS (SMTP, IMAP) and STLS (POP3), once the plain bufferevent has sent
 * its last plaintext reply: a new OpenSSL socket bufferevent (server side,
 * accepting, closing the socket when freed) takes over the socket, and the
 * plain one is freed without closing it (a filter bufferevent over the plain
 * one would keep two 16 KiB input chains reserved while idle). NULL if the
 * SSL or the bufferevent cannot be made: `plain` is then untouched and still
 * owns the socket. The caller sets callbacks, watermarks and timeouts.
 */
struct bufferevent *smtp_tls_takeover(struct event_base *base, SSL_CTX *ctx,
				      struct bufferevent *plain);

/*
 * Output for a TLS bufferevent in few records: bufferevent_openssl writes each
 * evbuffer chain as a TLS record of its own (one system call each), and text
 * added with printf comes in ~1 KiB chains. smtp_tls_add_coalesced() moves src
 * to the end of dst in pieces of up to 64 KiB (a copy costs far less);
 * smtp_tls_coalesce() does the same to buf in place.
 */
void smtp_tls_add_coalesced(struct evbuffer *dst, struct evbuffer *src);
void smtp_tls_coalesce(struct evbuffer *buf);

/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" for Received. */
void smtp_tls_describe(SSL *ssl, char *buf, size_t bufsize);

#endif
