/*
 * SPF: RFC 7208 check_host(), the record parser and the macro expander.
 *
 * Pure code: no sockets. DNS comes through a small blocking resolver
 * interface (struct spf_resolver). The daemon runs a check on a worker
 * thread, where a blocking call into the libunbound resolver (src/dns/) is
 * fine; the tests plug in an in-memory zone. A blocking interface keeps the
 * evaluation a plain recursive function that mirrors the RFC text, instead of
 * a continuation per DNS query.
 *
 * Everything the peer controls is bounded: record length and term count,
 * macro expansion length, include/redirect depth, DNS mechanisms (10), void
 * lookups (2), MX and PTR names (10 each), records per DNS answer.
 */
#ifndef POSTERN_SPF_H
#define POSTERN_SPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* RFC 7208 4.6.4 */
#define SPF_MAX_DNS_MECH 10 /* include a mx ptr exists redirect per check */
#define SPF_MAX_VOID 2      /* lookups answering NXDOMAIN or no records */
#define SPF_MAX_MX_NAMES 10 /* more MX records than this: permerror */
#define SPF_MAX_PTR_NAMES 10 /* PTR names beyond this are ignored */
/* Our own limits on peer input. */
#define SPF_MAX_RECORD 4096  /* octets of one SPF record (TXT strings joined) */
#define SPF_MAX_TERMS 256    /* terms in one record */
#define SPF_MAX_EXPAND 4096  /* octets of one macro expansion */
#define SPF_MAX_DEPTH 16     /* nesting of include/redirect */
#define SPF_MAX_EXPLAIN 1024 /* octets of an explanation (longer is ignored) */
#define SPF_MAX_ANSWER_RR 256          /* records kept from one DNS answer */
#define SPF_MAX_ANSWER_BYTES (64 * 1024) /* TXT/name octets kept from one answer */

enum spf_result {
	SPF_NONE,
	SPF_NEUTRAL,
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_TEMPERROR,
	SPF_PERMERROR,
};

/* "none", "neutral", "pass", ... as in RFC 7208 2.6 and RFC 8601. */
const char *spf_result_name(enum spf_result r);

/* ---- DNS interface ---- */

enum spf_rrtype {
	SPF_RR_A = 1,
	SPF_RR_PTR = 12,
	SPF_RR_MX = 15,
	SPF_RR_TXT = 16,
	SPF_RR_AAAA = 28,
};

enum spf_rcode {
	SPF_DNS_OK,       /* RCODE 0; count may be 0 (no data) */
	SPF_DNS_NXDOMAIN, /* RCODE 3 */
	SPF_DNS_TEMPFAIL, /* timeout, SERVFAIL, any other RCODE, DNSSEC bogus */
};

struct spf_rr {
	unsigned char addr[16]; /* A: 4 octets, AAAA: 16 */
	char *data;             /* MX exchange / PTR name (NUL-terminated), TXT strings joined */
	size_t len;             /* length of data */
};

struct spf_answer {
	enum spf_rcode rcode;
	struct spf_rr *rrs;
	size_t count, cap;
	size_t bytes;  /* data octets held */
	bool overflow; /* records were dropped (SPF_MAX_ANSWER_RR/BYTES) */
};

/*
 * Resolver. lookup() answers one query and returns when it has the answer
 * (it may block; timeouts are its business and answer SPF_DNS_TEMPFAIL).
 * `name` has no trailing dot and is at most 253 octets. CNAMEs are followed
 * by the resolver. *answer arrives zeroed with rcode SPF_DNS_OK; fill it with
 * the spf_answer_add_*() helpers below. The SPF code frees it.
 * For MX the preference does not matter to SPF (every MX is checked).
 */
struct spf_resolver {
	void (*lookup)(void *ctx, enum spf_rrtype type, const char *name,
		       struct spf_answer *answer);
	void *ctx;
};

void spf_answer_add_addr(struct spf_answer *a, const unsigned char *addr, size_t addr_len);
/* MX exchange or PTR target; a trailing dot is removed. */
void spf_answer_add_name(struct spf_answer *a, const char *name);
/* One TXT record given as its character-strings, joined without separator (RFC 7208 3.3). */
void spf_answer_add_txt(struct spf_answer *a, const char *const *strings, const size_t *lens,
			size_t n);
void spf_answer_clear(struct spf_answer *a);

/* ---- check_host() ---- */

struct spf_request {
	/* <ip>: AF_INET (4 octets) or AF_INET6 (16); an IPv4-mapped IPv6
	   address is evaluated as IPv4 (RFC 7208 5/9/2). */
	int family;
	unsigned char ip[16];
	/* <sender>: "local@domain", or "@domain" / "domain" (local part
	   becomes "postmaster", RFC 7208 4.3). */
	const char *sender;
	const char *helo;     /* %{h}; "" if unknown */
	const char *receiver; /* %{r}; NULL means "unknown" */
	time_t now;           /* %{t} */
};

struct spf_outcome {
	enum spf_result result;
	/* Explanation from the domain's exp= (RFC 7208 6.2), expanded, for a
	   fail result only; NULL when the domain gives none: the caller uses
	   its own default text then. */
	char *explanation;
	/* The term that decided the result ("-all", "include:x", ...) or NULL. */
	char *mechanism;
	/* Why for none/neutral defaults, temperror and permerror (static). */
	const char *reason;
	unsigned dns_mechanisms; /* terms that caused DNS queries */
	unsigned void_lookups;
	unsigned queries; /* DNS queries made */
};

/*
 * RFC 7208 4 check_host(<ip>, <domain>, <sender>). Always fills *out (free
 * with spf_outcome_free) and returns out->result.
 */
enum spf_result spf_check_host(const struct spf_resolver *res, const struct spf_request *req,
			       const char *domain, struct spf_outcome *out);

/*
 * The MAIL FROM identity (RFC 7208 2.4): the domain of `mailfrom`; for the
 * null reverse-path ("" or "<>") the HELO identity, "postmaster@<helo>".
 * req->sender is ignored (set from mailfrom).
 */
enum spf_result spf_check_mailfrom(const struct spf_resolver *res, const struct spf_request *req,
				   const char *mailfrom, struct spf_outcome *out);
/* The HELO identity (RFC 7208 2.3): check_host(ip, helo, "postmaster@helo"). */
enum spf_result spf_check_helo(const struct spf_resolver *res, const struct spf_request *req,
			       struct spf_outcome *out);

void spf_outcome_free(struct spf_outcome *out);

/* ---- parts exposed for tests and the fuzzer ---- */

struct spf_record;

/*
 * Parse an SPF record (RFC 7208 4.6, 12): "v=spf1" followed by terms. The
 * whole record is checked, so a syntax error anywhere fails it. 0 ok, -1
 * with a static reason in *error_r.
 */
int spf_record_parse(const char *txt, size_t len, struct spf_record **rec_r,
		     const char **error_r);
/* Number of terms; text of term i as parsed (for diagnostics). */
size_t spf_record_terms(const struct spf_record *rec);
const char *spf_record_term_text(const struct spf_record *rec, size_t i);
void spf_record_free(struct spf_record **rec);

/* True if the TXT record is an SPF version 1 record (RFC 7208 4.5). */
bool spf_is_record(const char *txt, size_t len);

/*
 * Expand a macro-string (RFC 7208 7) for `domain` (%{d}) and the request.
 * With `explain`, the string is an explain-string: spaces and the macros
 * c, r, t are allowed. %{p} needs DNS and uses `res` (may be NULL: then p
 * is "unknown"). Returns an allocated string, or NULL with *error_r on a
 * syntax error or when the result exceeds SPF_MAX_EXPAND.
 */
char *spf_macro_expand(const struct spf_resolver *res, const struct spf_request *req,
		       const char *domain, const char *s, size_t len, bool explain,
		       const char **error_r);

#endif
