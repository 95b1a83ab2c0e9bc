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

#endif
