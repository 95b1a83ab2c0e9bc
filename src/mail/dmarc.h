/*
 * DMARC: RFC 7489 policy records, identifier alignment and evaluation.
 *
 * Pure code: no sockets. The policy record comes through a small blocking
 * TXT interface (the same shape as DKIM's key resolver): the daemon
 * evaluates on a worker thread, the tests plug in a table.
 *
 * The organizational domain (RFC 7489 3.2) is found with libpsl and the
 * public suffix list of the system (Debian package publicsuffix), loaded
 * once per process.
 *
 * Peer input is bounded: a record longer than DMARC_MAX_RECORD is refused,
 * at most DMARC_MAX_TAGS tags are read, domains are at most 253 octets.
 */
#ifndef POSTERN_DMARC_H
#define POSTERN_DMARC_H

#include "mail/dkim.h"
#include "mail/spf.h"

#include <stdbool.h>
#include <stddef.h>

#define DMARC_MAX_RECORD 4096 /* octets of one policy record */
#define DMARC_MAX_TAGS 32     /* tags read from one record */
#define DMARC_MAX_DOMAIN 253

enum dmarc_policy { DMARC_POLICY_NONE, DMARC_POLICY_QUARANTINE, DMARC_POLICY_REJECT };
enum dmarc_align { DMARC_ALIGN_RELAXED, DMARC_ALIGN_STRICT };

/* "none", "quarantine", "reject". */
const char *dmarc_policy_name(enum dmarc_policy p);

/* A parsed policy record (RFC 7489 6.3). Reporting tags are not kept. */
struct dmarc_record {
	enum dmarc_policy p;
	enum dmarc_policy sp; /* equals p when the record has no sp= */
	bool has_sp;
	enum dmarc_align adkim, aspf;
	unsigned pct; /* 0..100 */
	bool has_rua;
};

/* True if the TXT record starts with "v=DMARC1" (RFC 7489 6.6.3 step 3). */
bool dmarc_is_record(const char *txt, size_t len);

/*
 * Parse a policy record. v=DMARC1 must come first; p= is required, except
 * that a record with a valid rua= and no or a bad p= is read as p=none
 * (RFC 7489 6.6.3 step 6). Unknown tags are ignored (6.3); a known tag with
 * an invalid value is an error, except the reporting tags, which are not
 * used here. Returns 0, or -1 with a static reason in *error_r.
 */
int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *rec,
		       const char **error_r);

/*
 * The registrable domain of `domain` according to the public suffix list
 * (lowercased, trailing dot ignored), written to buf; NULL when `domain` is
 * itself a public suffix, is empty, or the list cannot be loaded.
 */
const char *dmarc_registrable_domain(const char *domain, char *buf, size_t size);

/*
 * The organizational domain (RFC 7489 3.2): the registrable domain, or the
 * domain itself (lowercased) when it has none. buf >= DMARC_MAX_DOMAIN + 1.
 */
const char *dmarc_org_domain(const char *domain, char *buf, size_t size);

/* Identifier alignment (RFC 7489 3.1): strict = same name, relaxed = same
   organizational domain. Case-insensitive. */
bool dmarc_aligned(const char *from_domain, const char *auth_domain, enum dmarc_align mode);

enum dmarc_result { DMARC_NONE, DMARC_PASS, DMARC_FAIL, DMARC_TEMPERROR, DMARC_PERMERROR };

/* "none", "pass", "fail", "temperror", "permerror" (RFC 8601 2.7). */
const char *dmarc_result_name(enum dmarc_result r);

/* One DKIM outcome as DMARC needs it. */
struct dmarc_dkim {
	enum dkim_result result;
	const char *domain; /* d= */
};

struct dmarc_input {
	const char *from_domain;  /* RFC5322.From domain */
	enum spf_result spf;      /* result for the identity in spf_domain */
	const char *spf_domain;   /* MAIL FROM domain, or the HELO name for <> */
	const struct dmarc_dkim *dkim;
	size_t ndkim;
	/* pct sampling: a value in [0, 100); the policy applies when it is < pct */
	unsigned sample;
};

struct dmarc_outcome {
	enum dmarc_result result;
	/* What to do with the message: the policy that applies, after pct.
	   Always DMARC_POLICY_NONE unless result is DMARC_FAIL. */
	enum dmarc_policy disposition;
	enum dmarc_policy policy;  /* p= or sp= of the record used (for the header) */
	bool sampled_out;          /* pct made the disposition milder */
	bool spf_aligned, dkim_aligned;
	char record_domain[DMARC_MAX_DOMAIN + 1]; /* where the record was found, "" if none */
	const char *reason; /* static text for none/temperror/permerror */
};

/*
 * RFC 7489 6.6: find the policy for input->from_domain (at _dmarc.FROM,
 * then at _dmarc.ORGDOMAIN), check alignment of passing SPF and DKIM
 * identifiers, and give the result and disposition. Always fills *out.
 */
enum dmarc_result dmarc_evaluate(const struct dkim_key_resolver *res,
				 const struct dmarc_input *input, struct dmarc_outcome *out);

#endif
