/*
 * Asynchronous DNS resolver over libunbound, on the event loop.
 *
 * struct dns_resolver owns one ub_ctx whose background thread does the
 * network work; its result pipe (ub_fd) is watched by a libevent event and
 * drained with ub_process() on the loop thread. Every lookup has a deadline
 * of its own (dns_options.timeout_ms), so a dead server costs a bounded time
 * and ends as DNS_TIMEOUT.
 *
 * Where answers come from ([dns] resolver):
 *   ""              forward to the nameservers of /etc/resolv.conf
 *   "ip", "ip:port", "[v6]:port"
 *                   forward everything to that server. It may be a recursive
 *                   resolver or an authoritative server that does not
 *                   recurse (tests): loopback servers are allowed, and the
 *                   zones unbound answers locally by default (test.,
 *                   documentation and private reverse zones) are passed to it.
 *                   Limitation with a non-recursive server: a referral (a
 *                   name delegated below one of its zones) reads as NOERROR
 *                   without records, so a test zone should not rely on
 *                   delegations; point a resolver at a socket that never
 *                   answers to test timeouts (test-dns.c does).
 * Callers pass the config's [dns] resolver as dns_options.resolver.
 * DNSSEC: answers are validated only when dns_options.trust_anchor_file is
 * set (e.g. /usr/share/dns/root.key from dns-root-data); without it every
 * answer is insecure and none is bogus, so unsigned test zones are usable.
 * A bogus answer (validation failed) is never returned as data: it comes
 * back as DNS_SERVFAIL with bogus = true.
 *
 * Threading contract:
 * - A dns_resolver belongs to the thread that runs its event base. Every
 *   dns_* function taking a dns_resolver or dns_query must be called on
 *   that thread, and every callback runs on it (from inside the loop).
 * - A callback is called exactly once per lookup, unless the lookup was
 *   cancelled first; after dns_cancel() returns, its callback never runs.
 *   Callbacks may start new lookups and cancel other lookups; they must not
 *   free the resolver.
 * - A dns_sync is for one worker thread at a time (SPF and other code that
 *   runs on a worker); it has its own ub_ctx and shares nothing with the
 *   loop's resolver. Make one per thread and do not share it.
 * - libunbound starts its thread with the first lookup: create the resolver
 *   after any fork(), and free it in the process that made it.
 * - dns_result and the pure helpers (dns_mx_sort, dns_reverse_name) may be
 *   used from any thread.
 */
#ifndef POSTERN_DNS_H
#define POSTERN_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct dns_resolver;
struct dns_query;
struct dns_sync;

/* RR types we read (RFC 1035, 3596, 6698). */
#define DNS_T_A 1
#define DNS_T_CNAME 5
#define DNS_T_PTR 12
#define DNS_T_MX 15
#define DNS_T_TXT 16
#define DNS_T_AAAA 28
#define DNS_T_TLSA 52

/* Per lookup, when dns_options.timeout_ms is 0. */
#define DNS_DEFAULT_TIMEOUT_MS 10000
/* FCrDNS: PTR names forward-checked at most (as RFC 7208 5.5 limits "ptr"). */
#define DNS_FCRDNS_MAX_NAMES 10

struct dns_options {
	const char *resolver;          /* [dns] resolver, see above; NULL = "" */
	const char *trust_anchor_file; /* NULL or "" = no DNSSEC validation */
	unsigned timeout_ms;           /* deadline of each lookup; 0 = default */
	const char *resolv_conf;       /* NULL = /etc/resolv.conf (for tests) */
};

enum dns_status {
	DNS_NOERROR,  /* answered; count may be 0 (the name exists, no such data) */
	DNS_NXDOMAIN, /* the name does not exist */
	DNS_SERVFAIL, /* SERVFAIL, REFUSED, another rcode, bogus or a local error: temporary */
	DNS_TIMEOUT,  /* no answer within the deadline: temporary */
};

struct dns_rr {
	uint16_t type;
	/* The record data as received (RFC 1035 RDATA, names uncompressed). */
	const unsigned char *rdata;
	size_t rdlen;
	union {
		struct {
			uint16_t preference;
			char *host; /* lowercase, no trailing dot; "." for the null MX */
		} mx;
		struct {
			int family; /* AF_INET (4 bytes used) or AF_INET6 */
			unsigned char addr[16];
		} addr;
		char *name; /* PTR, CNAME: lowercase, no trailing dot */
		struct {
			char *text; /* the character-strings of one RR concatenated, NUL-terminated */
			size_t len; /* may contain NUL bytes: use len */
		} txt;
		struct {
			uint8_t usage, selector, matching;
			const unsigned char *data; /* certificate association data (points into rdata) */
			size_t len;
		} tlsa;
	} u;
};

struct dns_result {
	enum dns_status status;
	int rcode;        /* DNS rcode of the answer; -1 for a timeout or local error */
	bool secure;      /* DNSSEC-validated (only possible with a trust anchor) */
	bool bogus;       /* validation failed; status is DNS_SERVFAIL and count 0 */
	uint32_t ttl;     /* of the answer; the smallest when results were merged */
	char *qname;      /* as asked */
	uint16_t qtype;   /* DNS_T_*; DNS_T_A for dns_lookup_addr */
	char *canonname;  /* after CNAMEs (lowercase, no trailing dot), or NULL */
	char *error;      /* why, for anything but NOERROR/NXDOMAIN, or NULL */
	bool null_mx;     /* MX: the domain publishes a null MX (RFC 7505) */
	size_t count;
	struct dns_rr *rrs;
};

/* Called on the loop thread with a result the callee owns (dns_result_free). */
typedef void dns_callback(struct dns_result *res, void *arg);

/*
 * Make a resolver on `base`. Returns NULL with *error_r (static text) when
 * the options are invalid (bad resolver address, unreadable trust anchor or
 * resolv.conf).
 */
struct dns_resolver *dns_resolver_new(struct event_base *base, const struct dns_options *opts,
				      const char **error_r);
/* Cancel every pending lookup (their callbacks never run) and free. */
void dns_resolver_free(struct dns_resolver **res);
/* Lookups started and not yet completed or cancelled. */
unsigned dns_resolver_pending(const struct dns_resolver *res);

/*
 * Start a lookup of `name` (a domain, trailing dot optional) for `qtype`.
 * The result's records are all of type qtype (CNAMEs followed). For MX,
 * records are sorted by preference, equal preferences in random order
 * (RFC 5321 5.1), and a null MX (RFC 7505: the only MX, exchange ".") sets
 * null_mx with that one record kept (also when "." is there several times
 * and nothing else); "." among other MX is dropped.
 * Returns a handle valid until the callback runs or dns_cancel().
 */
struct dns_query *dns_lookup(struct dns_resolver *res, const char *name, uint16_t qtype,
			     dns_callback *cb, void *arg);
struct dns_query *dns_lookup_mx(struct dns_resolver *res, const char *domain, dns_callback *cb,
				void *arg);
struct dns_query *dns_lookup_txt(struct dns_resolver *res, const char *name, dns_callback *cb,
				 void *arg);
struct dns_query *dns_lookup_tlsa(struct dns_resolver *res, const char *name, dns_callback *cb,
				  void *arg);
/*
 * AAAA and A together, merged into one result: AAAA records first, then A.
 * NOERROR if either has records (or both answered with none); else a
 * temporary failure of either wins over NXDOMAIN.
 */
struct dns_query *dns_lookup_addr(struct dns_resolver *res, const char *name, dns_callback *cb,
				  void *arg);
/* PTR of an address (AF_INET/AF_INET6 sockaddr; v4-mapped v6 asked as v4). */
struct dns_query *dns_lookup_ptr(struct dns_resolver *res, const struct sockaddr *sa,
				 dns_callback *cb, void *arg);

/* Cancel a lookup whose callback has not run yet; NULL is ignored. */
void dns_cancel(struct dns_query **q);

/*
 * FCrDNS (forward-confirmed reverse DNS, issue 5 item 7): PTR of the
 * address, then A (or AAAA) of up to DNS_FCRDNS_MAX_NAMES of the names; a
 * name whose addresses include the client's confirms it.
 */
enum dns_fcrdns_status {
	DNS_FCRDNS_PASS,      /* `name` is a confirmed PTR name */
	DNS_FCRDNS_FAIL,      /* PTR names exist, none resolves back to the address */
	DNS_FCRDNS_NONE,      /* no PTR record (NXDOMAIN or no data) */
	DNS_FCRDNS_TEMPERROR, /* a lookup failed temporarily and nothing confirmed */
};
struct dns_fcrdns_result {
	enum dns_fcrdns_status status;
	char *name;     /* PASS: the first confirmed name (in PTR order); else NULL */
	char **ptr_names; /* every PTR name, NULL-terminated (may be empty) */
	size_t ptr_count;
};
typedef void dns_fcrdns_callback(struct dns_fcrdns_result *fr, void *arg);
struct dns_query *dns_fcrdns(struct dns_resolver *res, const struct sockaddr *sa,
			     dns_fcrdns_callback *cb, void *arg);
void dns_fcrdns_result_free(struct dns_fcrdns_result **fr);
const char *dns_fcrdns_status_name(enum dns_fcrdns_status s);

void dns_result_free(struct dns_result **r);
/* "NOERROR", "NXDOMAIN", "SERVFAIL", "TIMEOUT". */
const char *dns_status_name(enum dns_status s);

/*
 * Synchronous lookups for worker threads: its own ub_ctx, a blocking wait
 * bounded by the same deadline. Returns NULL with *error_r like
 * dns_resolver_new.
 */
struct dns_sync *dns_sync_new(const struct dns_options *opts, const char **error_r);
void dns_sync_free(struct dns_sync **s);
/* Same result as dns_lookup (MX sorted, null MX detected); never NULL. */
struct dns_result *dns_sync_lookup(struct dns_sync *s, const char *name, uint16_t qtype);

/*
 * Sort MX records by preference, equal preferences shuffled with
 * rand_below(n) returning a uniform value in [0, n) (NULL: arc4random).
 */
void dns_mx_sort(struct dns_rr *rrs, size_t count, uint32_t (*rand_below)(uint32_t n));

/*
 * "4.3.2.1.in-addr.arpa" or the nibble form under ip6.arpa for an address
 * (v4-mapped v6 as v4). Returns 0, or -1 for another family. buf >= 80.
 */
int dns_reverse_name(const struct sockaddr *sa, char *buf, size_t bufsize);

/*
 * Decode one RR's RDATA of `type` into `rr` (rdata is copied). Returns 0,
 * or -1 when the RDATA is malformed. Untrusted input: exposed for the
 * fuzzer and the tests.
 */
int dns_rr_parse(uint16_t type, const unsigned char *rdata, size_t rdlen, struct dns_rr *rr);
void dns_rr_clear(struct dns_rr *rr);

#endif
