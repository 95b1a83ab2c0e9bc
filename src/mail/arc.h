/*
 * ARC (RFC 8617): validation of the chain of ARC sets a message carries.
 *
 * Pure code: no sockets. The message is pushed as received (CRLF or LF);
 * the header section is buffered (bounded as for DKIM), the body hash of
 * the newest ARC-Message-Signature is computed while the body streams. Key
 * records come through the blocking dkim_key_resolver interface.
 *
 * What is checked (RFC 8617 5.2): the sets are complete and numbered
 * 1..N (N <= ARC_MAX_INSTANCES), AS(1) says cv=none and every later AS
 * cv=pass, the newest AMS verifies (as a DKIM signature), and every AS
 * verifies, newest first. Older AMS are not required to verify.
 */
#ifndef POSTERN_ARC_H
#define POSTERN_ARC_H

#include "mail/dkim.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define ARC_MAX_INSTANCES 50 /* RFC 8617 4.2.1 */

enum arc_result { ARC_NONE, ARC_PASS, ARC_FAIL };

/* "none", "pass", "fail" (the cv= values, RFC 8617 4.1.3). */
const char *arc_result_name(enum arc_result r);

struct arc_verifier;

struct arc_verifier *arc_verifier_new(const struct dkim_key_resolver *resolver, time_t now);
/* Feed message bytes. Returns 0, or -1 when the header section is too large. */
int arc_verifier_push(struct arc_verifier *v, const void *data, size_t len);

struct arc_outcome {
	enum arc_result result;
	unsigned instances; /* N, the newest instance (0: no ARC set) */
	const char *reason; /* static text, "" on pass and none */
	char *domain;       /* d= of AS(N), NULL if none (for Authentication-Results) */
	bool temporary;     /* a key lookup failed temporarily (result is fail) */
};

/* End of message: look up keys and validate. Always fills *out (free with arc_outcome_clear). */
enum arc_result arc_verifier_finish(struct arc_verifier *v, struct arc_outcome *out);
void arc_outcome_clear(struct arc_outcome *out);
void arc_verifier_free(struct arc_verifier **v);

/* ---- sealing (RFC 8617 5.1) ---- */

/*
 * Adds an ARC set when we forward a message: ARC-Authentication-Results,
 * ARC-Message-Signature (relaxed/relaxed, no l=, never signing ARC-Seal)
 * and ARC-Seal, instance N = the newest instance the message carries + 1.
 * The message is pushed as it will be forwarded (CRLF or LF), without the
 * header fields the caller prepends itself; the header section is buffered
 * (bounded as for DKIM), the body is hashed as it streams.
 */
struct arc_seal_params {
	const char *domain;       /* d= */
	const char *selector;     /* s= */
	struct dkim_privkey *key; /* the private key (referenced), or NULL to parse key_pem */
	const char *key_pem;      /* private key, RSA (>= 1024 bits) or Ed25519, PEM */
	time_t timestamp;         /* t= */
};

struct arc_sealer;

/* Returns NULL with *error_r set (static string) on a bad key, domain or selector. */
struct arc_sealer *arc_sealer_new(const struct arc_seal_params *p, const char **error_r);
/* A sealer whose key is given at the end, with arc_sealer_seal() (the key
   lookup may touch the disk: it runs where the sealing does). */
struct arc_sealer *arc_sealer_new_unkeyed(void);
/* Feed message bytes. Returns 0, or -1 when the header section is too large. */
int arc_sealer_push(struct arc_sealer *s, const void *data, size_t len);
/*
 * End of message. `auth_results`: the results we computed for the message,
 * either an Authentication-Results value ("authserv-id; spf=pass ...") or
 * whole fields ("Authentication-Results: ...\r\n", the first one is used).
 * `cv`: what our own validation of the arriving chain found (ignored when
 * the message carries no ARC field: cv=none). A chain we found failed is
 * sealed cv=fail, its seal covering only the new set (RFC 8617 5.1.2).
 * Returns "ARC-Seal: ...\r\nARC-Message-Signature: ...\r\n
 * ARC-Authentication-Results: ...\r\n" to prepend (xmalloc'd), or NULL with
 * *error_r set: the header section is too large, the chain already has
 * ARC_MAX_INSTANCES sets, its newest seal already says cv=fail (nothing
 * to add, RFC 8617 5.1.2), no results were given, or signing failed.
 */
char *arc_sealer_finish(struct arc_sealer *s, const char *auth_results, enum arc_result cv,
			const char **error_r);
/* The same with the key and names of `p` (checked as by arc_sealer_new), for
   a sealer made by either constructor. Call one of the two once. */
char *arc_sealer_seal(struct arc_sealer *s, const struct arc_seal_params *p,
                      const char *auth_results, enum arc_result cv, const char **error_r);
void arc_sealer_free(struct arc_sealer **s);

#endif
