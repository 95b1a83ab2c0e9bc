/*
 * A blocking SMTP client for the outbound agent's worker threads
 * (RFC 5321, 3207 STARTTLS, 2920 PIPELINING, 1870 SIZE, 6152 8BITMIME,
 * 6531 SMTPUTF8, 3461 DSN).
 *
 * Every read and write is bounded: a connect timeout, a per-command
 * timeout that is a deadline for the whole reply (a peer trickling bytes
 * cannot extend it), at most SMTPC_LINE_MAX octets per reply line and
 * SMTPC_REPLY_LINES_MAX lines per reply. Anything else (garbage, overlong
 * lines, a dropped connection) ends the session with an error; nothing the
 * peer sends chooses an allocation size.
 *
 * Threads: one smtpc per thread at a time; smtpc_abort() may be called from
 * another thread to make a blocked call return (used at shutdown).
 */
#ifndef POSTERN_SMTP_CLIENT_H
#define POSTERN_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SMTPC_LINE_MAX 1000      /* RFC 5321 4.5.3.1.5: reply line incl. CRLF */
#define SMTPC_REPLY_LINES_MAX 64 /* lines in one multi-line reply */
#define SMTPC_TEXT_MAX 512       /* reply text kept for logs and DSNs */

/* EHLO keywords we use. */
#define SMTPC_EXT_STARTTLS 0x01
#define SMTPC_EXT_PIPELINING 0x02
#define SMTPC_EXT_SIZE 0x04
#define SMTPC_EXT_8BITMIME 0x08
#define SMTPC_EXT_SMTPUTF8 0x10
#define SMTPC_EXT_DSN 0x20
#define SMTPC_EXT_AUTH_PLAIN 0x40 /* AUTH with the PLAIN mechanism */
#define SMTPC_EXT_CHUNKING 0x80   /* BDAT (RFC 3030) */

struct smtpc;

struct smtpc_reply {
	int code;                   /* 200..599, or 0 for a local/connection error */
	char text[SMTPC_TEXT_MAX];  /* "250 2.0.0 Ok" style first line (code included) or the error */
};

/*
 * Connect to `sa` within connect_ms; I/O after that is bounded by
 * command_ms per reply. NULL with *error_r (static text or strerror) on
 * failure.
 */
struct smtpc *smtpc_connect(const struct sockaddr *sa, socklen_t salen, unsigned connect_ms,
			    unsigned command_ms, const char **error_r);
/* Take over a connected socket (tests, fuzzing); it is made non-blocking. */
struct smtpc *smtpc_from_fd(int fd, unsigned command_ms);
void smtpc_free(struct smtpc **c);
/* From any thread: make the current and every later blocking call fail. */
void smtpc_abort(struct smtpc *c);

/* Read one complete reply. false on a connection error / timeout / garbage (r->code 0). */
bool smtpc_read_reply(struct smtpc *c, struct smtpc_reply *r);
/* Queue bytes for sending (sent by smtpc_flush or before the next read). */
void smtpc_write(struct smtpc *c, const void *data, size_t len);
void smtpc_printf(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool smtpc_flush(struct smtpc *c);

/* EHLO (HELO if EHLO is refused with 5xx); the reply in *r. Extensions in smtpc_ext(). */
bool smtpc_ehlo(struct smtpc *c, const char *helo_name, struct smtpc_reply *r);
unsigned smtpc_ext(const struct smtpc *c);
uint64_t smtpc_size_limit(const struct smtpc *c); /* SIZE n, 0 = none given */

/*
 * STARTTLS: send it, expect 220, drop anything the peer sent after the
 * 220 in plaintext (RFC 3207 5: it must be discarded), then the TLS
 * handshake with SNI `servername`. The certificate is verified against the
 * system's CAs and `servername`; the result is in *verified_r and
 * *verify_error_r, but an unverified certificate does not fail the
 * handshake (opportunistic TLS). The caller must EHLO again.
 * 1 ok, 0 the peer refused STARTTLS (reply in *r, still plaintext),
 * -1 failure (connection unusable).
 */
int smtpc_starttls(struct smtpc *c, const char *servername, struct smtpc_reply *r,
		   bool *verified_r, const char **verify_error_r);
bool smtpc_tls(const struct smtpc *c);
/*
 * The TLS handshake alone, at once (implicit TLS, a smarthost on port 465).
 * Same verification reporting as smtpc_starttls. 0 ok, -1 failure.
 */
int smtpc_tls_handshake(struct smtpc *c, const char *servername, bool *verified_r,
			const char **verify_error_r);
/* AUTH PLAIN (RFC 4616) with user and password; the reply in *r. false on I/O error. */
bool smtpc_auth_plain(struct smtpc *c, const char *user, const char *password,
		      struct smtpc_reply *r);
/* Bytes of plaintext discarded after the STARTTLS 220. */
size_t smtpc_injected(const struct smtpc *c);

/*
 * Send the message in `fd` (CRLF lines, as in the spool) as DATA content:
 * dot-stuffed, a final CRLF added if missing, then ".". Does not read the
 * reply. false on I/O error.
 */
bool smtpc_send_body(struct smtpc *c, int fd, const char *from_rewrite);
/*
 * With from_rewrite (an address), the message's From: header field (with
 * its continuation lines) is replaced by "From: <from_rewrite>" on the
 * way out (one is added when there is none); the header must end within
 * SMTPC_HEADER_MAX octets, else the message is sent unchanged.
 */
#define SMTPC_HEADER_MAX (256 * 1024)
/* Octets per BDAT command. */
#define SMTPC_CHUNK_SIZE (1024 * 1024)

/* How smtpc_send_content() sends a message. */
struct smtpc_content {
	const char *from_rewrite; /* as for smtpc_send_body(), or NULL */
	/* the address in the for-clause of the first Received: field in A-labels
	   (a message going without SMTPUTF8: RFC 6531 downgrade of our own trace) */
	bool idna_trace;
	bool bdat; /* BDAT chunks (CHUNKING, RFC 3030) instead of DATA */
};
/*
 * Send the message in `fd` as smtpc_send_body() does (after DATA's 354,
 * reply not read), or with o->bdat as BDAT chunks, each answered before
 * the next, the last one with LAST; then *r is the reply to the last chunk
 * sent (the transaction's outcome), or to the first chunk refused. false
 * on I/O error (then *r may say why).
 */
bool smtpc_send_content(struct smtpc *c, int fd, const struct smtpc_content *o,
			struct smtpc_reply *r);
/*
 * The address of the for-clause ("for <address>") of the first Received:
 * field of the header in h[0..len): true with its offsets [*start_r,
 * *end_r), else false.
 */
bool smtpc_trace_for(const char *h, size_t len, size_t *start_r, size_t *end_r);

/* Dot-stuff `in` (len bytes) for DATA; `*at_bol` carries line state across calls. Returns bytes written to out (out >= 2*len). */
size_t smtpc_dot_stuff(const char *in, size_t len, char *out, bool *at_bol);

#endif
