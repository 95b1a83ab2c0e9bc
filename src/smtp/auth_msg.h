/*
 * Mail authentication of one message in the SMTP session: what the
 * receiving side checks (SPF, DKIM, DMARC -> Authentication-Results,
 * RFC 8601) and what the sending side adds (DKIM signatures).
 *
 * The message bytes (after our Received header) pass through
 * auth_msg_push() on the loop thread: the header section is held back
 * until it is complete (bounded by AUTH_MAX_HEADER), Authentication-Results
 * fields that carry our authserv-id are dropped from it (RFC 8601 5: a
 * forged result must not reach the user), the From domains are noted, and
 * the bytes go on to the spool through the writer; DKIM body hashes are
 * computed while the bytes stream, nothing is copied.
 *
 * At the end of the message the DNS work (SPF, DKIM keys, the DMARC
 * record) and the signing run in auth_msg_work() on a worker thread, with
 * a blocking resolver of that thread (dns_sync); the session is suspended
 * meanwhile. The loop thread then reads the verdict and the header fields
 * to put on top of the spooled message.
 *
 * Our own keys (DKIM signing, ARC sealing) are looked up there too, in a
 * process-wide cache of parsed keys (dkimkeys_cache, src/store/dkimkeys.h):
 * the signing domain is known only at the end of the header section, and
 * no key is needed before the end of the message (the signer and the sealer
 * hash the message without one), so the loop thread never reads a key file
 * or decodes a PEM key.
 */
#ifndef POSTERN_SMTP_AUTH_MSG_H
#define POSTERN_SMTP_AUTH_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Longest header section we hold back; longer is refused (552 5.3.4). */
#define AUTH_MAX_HEADER (256 * 1024)
/* Distinct From domains evaluated by DMARC. */
#define AUTH_MAX_FROM 4

enum auth_mode {
	AUTH_MODE_VERIFY, /* mail from the internet: check and add Authentication-Results */
	AUTH_MODE_SIGN,   /* submitted or trusted: sign with our keys */
};

enum auth_verdict {
	AUTH_ACCEPT,
	AUTH_QUARANTINE, /* deliver to Junk */
	AUTH_REJECT,     /* 550 5.7.1 */
};

struct auth_params {
	const char *hostname;     /* authserv-id, [server] hostname */
	const char *data_dir;     /* DKIM keys */
	const char *dns_resolver; /* [dns] resolver */
	const char *dmarc_reject; /* [policy] dmarc_reject: reject|quarantine|mark */
	const char *arc_trusted;  /* [policy] arc_trusted_sealers */
	const char *arc_seal_domain; /* verify mode: forwarded outside, add an ARC set (RFC 8617
				      5.1) signed with this domain's DKIM key; NULL: none */
	/* the SMTP transaction */
	struct sockaddr_storage client;
	const char *helo;
	const char *mail_from; /* "" for <> */
	/* the client's FCrDNS for iprev (RFC 8601 2.7.3): "pass", "fail", "permerror",
	   "temperror", or NULL when not known yet; the confirmed name or NULL */
	const char *iprev;
	const char *iprev_name;
};

struct auth_msg;

/* `p`'s strings are copied. `write` receives the bytes to spool, in order. */
struct auth_msg *auth_msg_new(enum auth_mode mode, const struct auth_params *p,
			      void (*write)(void *ctx, const char *data, size_t len), void *ctx);
void auth_msg_free(struct auth_msg **m);

/* Message bytes as received (after dot-unstuffing). */
void auth_msg_push(struct auth_msg *m, const char *data, size_t len);
/* End of the message bytes (loop thread); flushes a header section without
   a body. False when the header section was too large: refuse the message. */
bool auth_msg_end(struct auth_msg *m);

/* On a worker thread: DNS lookups, verification, signing. */
void auth_msg_work(struct auth_msg *m);

/*
 * After auth_msg_end, on the loop thread: true when there is nothing to do
 * on a worker, and the results below are ready as auth_msg_work would have
 * left them: mail to sign (submitted, or from a trusted client) whose
 * domains that may sign were all found without DKIM keys moments ago (the
 * keyless shortcut), or that has no domain that could sign. False: call
 * auth_msg_work (mail to check always needs DNS).
 */
bool auth_msg_done_early(struct auth_msg *m);

/* After auth_msg_work, on the loop thread. */
enum auth_verdict auth_msg_verdict(const struct auth_msg *m);
/* The SMTP reply text for AUTH_REJECT ("550 5.7.1 ..."). */
const char *auth_msg_reject_text(const struct auth_msg *m);
/* Header fields to put on top of the spooled message ("" if none). */
const char *auth_msg_prefix(const struct auth_msg *m);
/* One line summary for the log ("spf=pass dkim=none dmarc=none"). */
const char *auth_msg_summary(const struct auth_msg *m);

#endif
