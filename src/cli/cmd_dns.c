/*
 * `postern dns DOMAIN [--check] [--json] [--ip ADDR,...]`: the DNS records
 * an admin must publish for a domain served here, in zone-file syntax, and
 * with --check a live comparison of what DNS says against them.
 *
 * The expected records come from the configuration ([server] hostname,
 * [listen]), the server's public addresses (--ip, else the literal listen
 * addresses, else the global addresses of the local interfaces) and the
 * active DKIM keys (src/store/dkimkeys.c). The check uses the blocking
 * resolver (dns_sync, honouring [dns] resolver), the SPF evaluator of
 * src/mail/spf.c and the DKIM key parser of src/mail/dkim.c.
 *
 * SECURITY: reads DNS answers (untrusted): they go through the parsers of
 * src/dns and src/mail only, and are printed escaped.
 */
#include "cli/cli_common.h"
#include "dns/dns.h"
#include "lib/config.h"
#include "lib/netaddr.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"
#include "mail/dkim.h"
#include "mail/spf.h"
#include "store/directory.h"
#include "store/dkimkeys.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <jansson.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DNS_T_SRV 33     /* RFC 2782 */
#define MAX_SERVER_IPS 8 /* public addresses considered */
#define CHECK_TIMEOUT_MS 5000

/* ERROR: the lookup failed (timeout, SERVFAIL), so the record could not be checked. */
enum status { ST_NONE, ST_OK, ST_MISSING, ST_WRONG, ST_ERROR };
static const char *const status_names[] = {"", "OK", "MISSING", "WRONG", "ERROR"};

/* One record to publish, and after --check what was found. */
struct rec {
	const char *kind; /* MX, A, AAAA, PTR, SPF, DKIM, DMARC, SRV, CNAME */
	char *name;       /* owner, no trailing dot */
	const char *type; /* zone-file type */
	char *value;      /* zone-file RDATA as printed */
	char *note;       /* advice shown as a comment, or NULL */
	bool commented;   /* printed as a comment, not checked (not applicable yet) */
	bool provider;    /* published by the address's provider, not in the zone */
	enum status status;
	char *found;
};

struct ip {
	int family;
	unsigned char addr[16];
	char text[INET6_ADDRSTRLEN];
};

struct dnscmd {
	struct config *cfg;
	const char *domain;
	const char *host;
	struct ip ips[MAX_SERVER_IPS];
	size_t nips;
	bool ips_from_dns; /* no address known locally: taken from the A/AAAA check */
	struct dkimkey_list keys, retired;
	struct rec *recs;
	size_t nrecs, cap;
	struct dns_sync *dns;
	char **dnsbls; /* --dnsbl zones */
	size_t ndnsbls;
};

static struct rec *rec_add(struct dnscmd *d, const char *kind, const char *type, char *name,
                           char *value)
{
	d->recs = xgrow(d->recs, &d->cap, d->nrecs + 1, sizeof(*d->recs));
	struct rec *r = &d->recs[d->nrecs++];
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->type = type;
	r->name = name;
	r->value = value;
	return r;
}

static void set_status(struct rec *r, enum status st, char *found)
{
	r->status = st;
	free(r->found);
	r->found = found;
}

/* ---- the server's public addresses ---- */

bool dnscmd_ip_global(int family, const unsigned char *a)
{
	if (family == AF_INET) {
		uint32_t v =
		    (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
		static const struct {
			uint32_t net;
			int bits;
		} special[] = {
		    {0x00000000, 8},  {0x0A000000, 8},  {0x64400000, 10}, {0x7F000000, 8},
		    {0xA9FE0000, 16}, {0xAC100000, 12}, {0xC0000000, 24}, {0xC0000200, 24},
		    {0xC0A80000, 16}, {0xC6120000, 15}, {0xC6336400, 24}, {0xCB007100, 24},
		    {0xE0000000, 3},
		};
		for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++) {
			uint32_t mask = 0xFFFFFFFFu << (32 - special[i].bits);
			if ((v & mask) == special[i].net)
				return false;
		}
		return true;
	}
	/* 2000::/3 is global unicast; 2001:db8::/32 is documentation */
	if ((a[0] & 0xE0) != 0x20)
		return false;
	return !(a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8);
}

static void ip_add(struct dnscmd *d, int family, const void *addr)
{
	size_t len = family == AF_INET ? 4 : 16;
	for (size_t i = 0; i < d->nips; i++)
		if (d->ips[i].family == family && memcmp(d->ips[i].addr, addr, len) == 0)
			return;
	if (d->nips == MAX_SERVER_IPS)
		return;
	struct ip *ip = &d->ips[d->nips++];
	memset(ip, 0, sizeof(*ip));
	ip->family = family;
	memcpy(ip->addr, addr, len);
	inet_ntop(family, addr, ip->text, sizeof(ip->text));
}

static int ip_parse(const char *s, int *family_r, unsigned char *addr)
{
	if (inet_pton(AF_INET, s, addr) == 1)
		*family_r = AF_INET;
	else if (inet_pton(AF_INET6, s, addr) == 1)
		*family_r = AF_INET6;
	else
		return -1;
	return 0;
}

/* Literal global addresses of the listeners; true if any listens on all addresses. */
static bool listen_addrs(struct dnscmd *d)
{
	const char *lists[] = {d->cfg->listen_smtp, d->cfg->listen_submission,
	                       d->cfg->listen_submissions};
	bool wildcard = false;
	for (size_t l = 0; l < 3; l++) {
		size_t n;
		char **items = strv_split_list(lists[l], &n);
		for (size_t i = 0; i < n; i++) {
			char *host;
			uint16_t port;
			if (hostport_parse(items[i], &host, &port) < 0)
				continue;
			unsigned char a[16];
			int family;
			if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 ||
			    strcmp(host, "::") == 0)
				wildcard = true;
			else if (ip_parse(host, &family, a) == 0 && dnscmd_ip_global(family, a))
				ip_add(d, family, a);
			free(host);
		}
		strv_free(&items);
	}
	return wildcard;
}

static void interface_addrs(struct dnscmd *d)
{
	struct ifaddrs *ifa;
	if (getifaddrs(&ifa) < 0)
		return;
	for (struct ifaddrs *i = ifa; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL || (i->ifa_flags & IFF_LOOPBACK))
			continue;
		if (i->ifa_addr->sa_family == AF_INET) {
			const struct sockaddr_in *sin = (const void *)i->ifa_addr;
			if (dnscmd_ip_global(AF_INET, (const unsigned char *)&sin->sin_addr))
				ip_add(d, AF_INET, &sin->sin_addr);
		} else if (i->ifa_addr->sa_family == AF_INET6) {
			const struct sockaddr_in6 *sin6 = (const void *)i->ifa_addr;
			if (dnscmd_ip_global(AF_INET6, sin6->sin6_addr.s6_addr))
				ip_add(d, AF_INET6, &sin6->sin6_addr);
		}
	}
	freeifaddrs(ifa);
}

static int find_ips(struct dnscmd *d, const char *opt)
{
	if (opt != NULL) {
		size_t n;
		char **items = strv_split_list(opt, &n);
		for (size_t i = 0; i < n; i++) {
			unsigned char a[16];
			int family;
			if (ip_parse(items[i], &family, a) < 0) {
				cli_error("--ip: not an IP address: %s", items[i]);
				strv_free(&items);
				return -1;
			}
			ip_add(d, family, a);
		}
		strv_free(&items);
		return 0;
	}
	if (listen_addrs(d))
		interface_addrs(d);
	return 0;
}

/* Port of the first listener of a [listen] list; 0 when off. */
static unsigned listen_port(const char *list)
{
	size_t n;
	char **items = strv_split_list(list, &n);
	unsigned port = 0;
	if (n > 0) {
		char *host;
		uint16_t p;
		if (hostport_parse(items[0], &host, &p) == 0) {
			port = p;
			free(host);
		}
	}
	strv_free(&items);
	return port;
}

static char *reverse_name(const struct ip *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (ip->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, ip->addr, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, ip->addr, 16);
	}
	char buf[128];
	if (dns_reverse_name((struct sockaddr *)&ss, buf, sizeof(buf)) < 0)
		return xstrdup("?");
	return xstrdup(buf);
}

/* ---- the records to publish ---- */

static void build(struct dnscmd *d)
{
	const char *D = d->domain, *H = d->host;
	struct rec *r;

	r = rec_add(d, "MX", "MX", xstrdup(D), xasprintf("10 %s.", H));
	unsigned smtp_port = listen_port(d->cfg->listen_smtp);
	if (smtp_port == 0)
		r->note =
		    xstrdup("[listen] smtp is off: this server cannot receive mail from others");
	else if (smtp_port != 25)
		r->note = xasprintf("[listen] smtp is on port %u; other servers deliver to port 25 "
		                    "only",
		                    smtp_port);

	bool have4 = false, have6 = false;
	for (size_t i = 0; i < d->nips; i++) {
		bool v4 = d->ips[i].family == AF_INET;
		rec_add(d, v4 ? "A" : "AAAA", v4 ? "A" : "AAAA", xstrdup(H),
		        xstrdup(d->ips[i].text));
		have4 |= v4;
		have6 |= !v4;
	}
	if (!have4 && !have6) {
		r = rec_add(d, "A", "A", xstrdup(H), xstrdup("<YOUR-IPV4>"));
		r->note = xstrdup("no public address found: fill in the server's IPv4 address "
		                  "(and an AAAA record with its IPv6 address, if it has one), or "
		                  "pass --ip");
	} else if (!have6) {
		/* nothing to publish; said in the header comment */
	}
	for (size_t i = 0; i < d->nips; i++) {
		r = rec_add(d, "PTR", "PTR", reverse_name(&d->ips[i]), xasprintf("%s.", H));
		r->provider = true;
		r->note = xasprintf("reverse DNS: ask the provider of %s to set this PTR",
		                    d->ips[i].text);
	}
	if (d->nips == 0) {
		r = rec_add(d, "PTR", "PTR", xstrdup("<YOUR-IPV4-REVERSED>.in-addr.arpa"),
		            xasprintf("%s.", H));
		r->provider = true;
		r->note = xstrdup("reverse DNS: ask the provider of your address to set this PTR");
	}

	rec_add(d, "SPF", "TXT", xstrdup(D), xstrdup("\"v=spf1 mx -all\""));
	if (strcmp(D, H) != 0) {
		r = rec_add(d, "SPF", "TXT", xstrdup(H), xstrdup("\"v=spf1 a -all\""));
		r->note = xstrdup("SPF for the HELO name, which receivers check too");
	}

	for (size_t i = 0; i < d->keys.n; i++) {
		const struct dkimkey *k = &d->keys.v[i];
		r = rec_add(d, "DKIM", "TXT", xasprintf("%s._domainkey.%s", k->selector, D), NULL);
		/* the value as dkim_txt_record_print splits it */
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);
		dkim_txt_record_print(f, D, k->selector, k->txt);
		fclose(f);
		const char *v = strstr(buf, " IN TXT ");
		r->value = xstrndup(v + 8, strlen(v + 8) - 1);
		free(buf);
	}
	if (d->keys.n == 0) {
		r = rec_add(d, "DKIM", "TXT", xasprintf("<SELECTOR>._domainkey.%s", D),
		            xstrdup("\"v=DKIM1; ...\""));
		r->commented = true;
		r->note = xasprintf("no DKIM key yet: create one with `postern dkim keygen %s`", D);
	}

	r = rec_add(d, "DMARC", "TXT", xasprintf("_dmarc.%s", D), xstrdup("\"v=DMARC1; p=none\""));
	r->note = xstrdup("p=none only reports; once SPF and DKIM pass for all your mail, move to "
	                  "p=quarantine, then p=reject");

	/* RFC 6186 (and RFC 8314 for _submissions): where clients find us */
	struct {
		const char *svc;
		const char *listen; /* NULL: not provided by Postern yet */
	} srv[] = {
	    {"_submission._tcp", d->cfg->listen_submission},
	    {"_submissions._tcp", d->cfg->listen_submissions},
	    {"_imap._tcp", NULL},
	    {"_imaps._tcp", NULL},
	    {"_pop3s._tcp", NULL},
	};
	for (size_t i = 0; i < sizeof(srv) / sizeof(srv[0]); i++) {
		unsigned port = srv[i].listen != NULL ? listen_port(srv[i].listen) : 0;
		char *name = xasprintf("%s.%s", srv[i].svc, D);
		if (port != 0) {
			rec_add(d, "SRV", "SRV", name, xasprintf("0 1 %u %s.", port, H));
		} else {
			r = rec_add(d, "SRV", "SRV", name, xstrdup("0 0 0 ."));
			r->note = xstrdup(srv[i].listen != NULL
			                      ? "service off in [listen]: \".\" tells clients it "
			                        "is not available (RFC 6186)"
			                      : "not provided by Postern yet: \".\" tells clients "
			                        "it is not available (RFC 6186)");
		}
	}
	/* Autoconfig needs an HTTPS server; Postern has none yet. */
	const char *cn[] = {"autoconfig", "autodiscover"};
	for (size_t i = 0; i < 2; i++) {
		r = rec_add(d, "CNAME", "CNAME", xasprintf("%s.%s", cn[i], D), xasprintf("%s.", H));
		r->commented = true;
		r->note = xstrdup("for mail client autoconfiguration; publish it once Postern "
		                  "serves it over HTTPS (not yet)");
	}
}

/* ---- the check ---- */

static char *join_found(struct dns_result *res, char *(*fmt)(const struct dns_rr *))
{
	char *out = xstrdup("");
	for (size_t i = 0; i < res->count; i++) {
		char *one = fmt(&res->rrs[i]);
		char *n = xasprintf("%s%s%s", out, i > 0 ? ", " : "", one);
		free(one);
		free(out);
		out = n;
	}
	return out;
}

static char *fmt_addr(const struct dns_rr *rr)
{
	char buf[INET6_ADDRSTRLEN];
	inet_ntop(rr->u.addr.family, rr->u.addr.addr, buf, sizeof(buf));
	return xstrdup(buf);
}

static char *fmt_mx(const struct dns_rr *rr)
{
	return xasprintf("%u %s", rr->u.mx.preference, rr->u.mx.host);
}

static char *fmt_name(const struct dns_rr *rr)
{
	return xstrdup(rr->u.name);
}

/* Printable copy of peer text: controls and non-ASCII as \xNN, at most 300 octets. */
static char *printable(const char *s, size_t len)
{
	size_t max = len > 300 ? 300 : len;
	char *out = xmalloc(max * 4 + 4);
	size_t o = 0;
	for (size_t i = 0; i < max; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			o += (size_t)sprintf(out + o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	if (max < len) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

static char *fmt_txt(const struct dns_rr *rr)
{
	char *p = printable(rr->u.txt.text, rr->u.txt.len);
	char *q = xasprintf("\"%s\"", p);
	free(p);
	return q;
}

/* The result of a lookup that is not usable data: "temporary failure ..." */
static bool lookup_failed(struct rec *r, struct dns_result *res)
{
	if (res->status == DNS_NXDOMAIN || (res->status == DNS_NOERROR && res->count == 0)) {
		set_status(r, ST_MISSING,
		           xstrdup(res->status == DNS_NXDOMAIN ? "no such name" : "no record"));
		return true;
	}
	if (res->status != DNS_NOERROR) {
		set_status(r, ST_ERROR,
		           xasprintf("lookup failed: %s%s%s", dns_status_name(res->status),
		                     res->error ? ": " : "", res->error ? res->error : ""));
		return true;
	}
	return false;
}

static void check_mx(struct dnscmd *d, struct rec *r)
{
	struct dns_result *res = dns_sync_lookup(d->dns, d->domain, DNS_T_MX);
	if (!lookup_failed(r, res)) {
		char *found = join_found(res, fmt_mx);
		bool ok = false;
		for (size_t i = 0; i < res->count; i++)
			if (strcmp(res->rrs[i].u.mx.host, d->host) == 0)
				ok = true;
		if (res->null_mx)
			set_status(r, ST_WRONG,
			           xasprintf("null MX (the domain refuses mail): %s", found));
		else if (ok)
			set_status(r, ST_OK, xasprintf("%s", found));
		else
			set_status(r, ST_WRONG, xasprintf("points elsewhere: %s", found));
		free(found);
	}
	dns_result_free(&res);
}

static void check_addr(struct dnscmd *d, struct rec *r)
{
	bool v4 = strcmp(r->type, "A") == 0;
	struct dns_result *res = dns_sync_lookup(d->dns, d->host, v4 ? DNS_T_A : DNS_T_AAAA);
	if (!lookup_failed(r, res)) {
		char *found = join_found(res, fmt_addr);
		if (r->value[0] == '<') {
			/* address unknown here: take DNS's word for the other checks */
			for (size_t i = 0; i < res->count; i++)
				ip_add(d, res->rrs[i].u.addr.family, res->rrs[i].u.addr.addr);
			d->ips_from_dns = true;
			set_status(
			    r, ST_OK,
			    xasprintf("%s (not compared: no public address known here)", found));
		} else {
			unsigned char a[16];
			int family;
			bool ok = false;
			if (ip_parse(r->value, &family, a) == 0)
				for (size_t i = 0; i < res->count; i++)
					if (memcmp(res->rrs[i].u.addr.addr, a,
					           family == AF_INET ? 4 : 16) == 0)
						ok = true;
			set_status(r, ok ? ST_OK : ST_WRONG,
			           ok ? xstrdup(found)
			              : xasprintf("%s is not among %s", r->value, found));
		}
		free(found);
	}
	dns_result_free(&res);
}

static const struct ip *ip_of_ptr_rec(struct dnscmd *d, const struct rec *r)
{
	for (size_t i = 0; i < d->nips; i++) {
		char *n = reverse_name(&d->ips[i]);
		bool same = strcmp(n, r->name) == 0;
		free(n);
		if (same)
			return &d->ips[i];
	}
	return NULL;
}

/* FCrDNS of one address: the PTR names hostname, and hostname resolves back. */
static void check_ptr(struct dnscmd *d, struct rec *r, const struct ip *ip)
{
	char *rname = reverse_name(ip);
	struct dns_result *res = dns_sync_lookup(d->dns, rname, DNS_T_PTR);
	free(rname);
	if (!lookup_failed(r, res)) {
		char *found = join_found(res, fmt_name);
		bool named = false;
		for (size_t i = 0; i < res->count; i++)
			if (strcmp(res->rrs[i].u.name, d->host) == 0)
				named = true;
		if (!named) {
			set_status(r, ST_WRONG, xasprintf("%s points to %s", ip->text, found));
		} else {
			struct dns_result *fwd = dns_sync_lookup(
			    d->dns, d->host, ip->family == AF_INET ? DNS_T_A : DNS_T_AAAA);
			bool back = false;
			for (size_t i = 0; fwd->status == DNS_NOERROR && i < fwd->count; i++)
				if (memcmp(fwd->rrs[i].u.addr.addr, ip->addr,
				           ip->family == AF_INET ? 4 : 16) == 0)
					back = true;
			if (back)
				set_status(r, ST_OK, xasprintf("%s (forward-confirmed)", found));
			else
				set_status(r, ST_WRONG,
				           xasprintf("%s, but %s does not resolve back to %s",
				                     found, d->host, ip->text));
			dns_result_free(&fwd);
		}
		free(found);
	}
	dns_result_free(&res);
}

/* spf_resolver over dns_sync */
static void spf_lookup(void *ctx, enum spf_rrtype type, const char *name, struct spf_answer *a)
{
	struct dns_sync *s = ctx;
	struct dns_result *res = dns_sync_lookup(s, name, (uint16_t)type);
	if (res->status == DNS_NXDOMAIN)
		a->rcode = SPF_DNS_NXDOMAIN;
	else if (res->status != DNS_NOERROR)
		a->rcode = SPF_DNS_TEMPFAIL;
	for (size_t i = 0; res->status == DNS_NOERROR && i < res->count; i++) {
		const struct dns_rr *rr = &res->rrs[i];
		switch (type) {
		case SPF_RR_A:
		case SPF_RR_AAAA:
			spf_answer_add_addr(a, rr->u.addr.addr, type == SPF_RR_A ? 4 : 16);
			break;
		case SPF_RR_MX:
			if (strcmp(rr->u.mx.host, ".") != 0)
				spf_answer_add_name(a, rr->u.mx.host);
			break;
		case SPF_RR_PTR:
			spf_answer_add_name(a, rr->u.name);
			break;
		case SPF_RR_TXT: {
			const char *strs[1] = {rr->u.txt.text};
			size_t lens[1] = {rr->u.txt.len};
			spf_answer_add_txt(a, strs, lens, 1);
			break;
		}
		}
	}
	dns_result_free(&res);
}

/* The SPF record of `name` passes every server address (HELO identity if `helo`). */
static void check_spf(struct dnscmd *d, struct rec *r, bool helo)
{
	struct dns_result *res = dns_sync_lookup(d->dns, r->name, DNS_T_TXT);
	if (lookup_failed(r, res)) {
		dns_result_free(&res);
		return;
	}
	char *found = NULL;
	size_t nspf = 0;
	for (size_t i = 0; i < res->count; i++) {
		if (spf_is_record(res->rrs[i].u.txt.text, res->rrs[i].u.txt.len)) {
			nspf++;
			free(found);
			found = fmt_txt(&res->rrs[i]);
		}
	}
	dns_result_free(&res);
	if (nspf == 0) {
		set_status(r, ST_MISSING, xstrdup("no SPF record among the TXT records"));
		return;
	}
	if (nspf > 1) {
		/* RFC 7208 4.5: permerror */
		set_status(r, ST_WRONG, xasprintf("%zu SPF records (only one is allowed)", nspf));
		free(found);
		return;
	}
	if (d->nips == 0) {
		set_status(r, ST_WRONG,
		           xasprintf("%s, but no server address is known to evaluate it (publish "
		                     "the A record or pass --ip)",
		                     found));
		free(found);
		return;
	}
	struct spf_resolver sr = {spf_lookup, d->dns};
	char *bad = NULL;
	bool temp = false;
	for (size_t i = 0; i < d->nips; i++) {
		struct spf_request req = {.family = d->ips[i].family,
		                          .helo = d->host,
		                          .receiver = NULL,
		                          .now = time(NULL)};
		memcpy(req.ip, d->ips[i].addr, 16);
		struct spf_outcome out;
		char *sender = xasprintf("postmaster@%s", r->name);
		req.sender = sender;
		enum spf_result sres = helo ? spf_check_helo(&sr, &req, &out)
		                            : spf_check_host(&sr, &req, r->name, &out);
		free(sender);
		if (sres == SPF_TEMPERROR && bad == NULL)
			temp = true;
		if (sres != SPF_PASS && bad == NULL)
			bad = xasprintf("%s for %s%s%s", spf_result_name(sres), d->ips[i].text,
			                out.reason ? ": " : "", out.reason ? out.reason : "");
		spf_outcome_free(&out);
	}
	if (bad != NULL)
		set_status(r, temp ? ST_ERROR : ST_WRONG, xasprintf("%s gives %s", found, bad));
	else
		set_status(r, ST_OK,
		           xasprintf("%s (pass for %s)", found,
		                     d->nips == 1 ? d->ips[0].text : "every address"));
	free(bad);
	free(found);
}

static void check_dkim(struct dnscmd *d, struct rec *r, const struct dkimkey *k)
{
	struct dns_result *res = dns_sync_lookup(d->dns, r->name, DNS_T_TXT);
	if (lookup_failed(r, res)) {
		dns_result_free(&res);
		return;
	}
	struct dkim_key ours = {0};
	const char *err = NULL;
	if (dkim_key_parse(k->txt, strlen(k->txt), &ours, &err) < 0) {
		set_status(r, ST_WRONG, xasprintf("our own key record does not parse: %s", err));
		dns_result_free(&res);
		return;
	}
	char *found = join_found(res, fmt_txt);
	if (res->count > 1) {
		set_status(r, ST_WRONG,
		           xasprintf("%zu TXT records (one expected): %s", res->count, found));
	} else {
		struct dkim_key theirs = {0};
		const struct dns_rr *rr = &res->rrs[0];
		if (dkim_key_parse(rr->u.txt.text, rr->u.txt.len, &theirs, &err) < 0)
			set_status(r, ST_WRONG,
			           xasprintf("not a valid key record (%s): %s", err, found));
		else if (theirs.type != ours.type || theirs.p_len != ours.p_len ||
		         memcmp(theirs.p, ours.p, ours.p_len) != 0)
			set_status(r, ST_WRONG, xasprintf("a different key: %s", found));
		else if (theirs.testing)
			set_status(r, ST_OK,
			           xstrdup("matches (t=y: receivers treat failures as "
			                   "testing)"));
		else
			set_status(r, ST_OK, xstrdup("matches the key"));
		dkim_key_clear(&theirs);
	}
	free(found);
	dkim_key_clear(&ours);
	dns_result_free(&res);
}

int dnscmd_dmarc_parse(const char *txt, size_t len, const char **policy_r)
{
	*policy_r = NULL;
	/* RFC 7489 6.4: "v=DMARC1" then optional WSP, then ";" or the end */
	if (len < 8 || memcmp(txt, "v=DMARC1", 8) != 0)
		return 0;
	size_t i = 8;
	while (i < len && (txt[i] == ' ' || txt[i] == '\t'))
		i++;
	if (i < len && txt[i] != ';')
		return 0;
	if (i < len)
		i++;
	/* RFC 7489 6.3: p= is required and comes right after v= */
	while (i < len && (txt[i] == ' ' || txt[i] == '\t'))
		i++;
	/* dmarc-request = "p" *WSP "=" *WSP policy */
	if (i == len || txt[i] != 'p')
		return 1;
	i++;
	while (i < len && (txt[i] == ' ' || txt[i] == '\t'))
		i++;
	if (i == len || txt[i] != '=')
		return 1;
	i++;
	while (i < len && (txt[i] == ' ' || txt[i] == '\t'))
		i++;
	size_t start = i;
	while (i < len && txt[i] != ';' && txt[i] != ' ' && txt[i] != '\t')
		i++;
	size_t vlen = i - start;
	while (i < len && (txt[i] == ' ' || txt[i] == '\t'))
		i++;
	if (i < len && txt[i] != ';')
		return 1;
	static const char *const policies[] = {"none", "quarantine", "reject"};
	for (size_t k = 0; k < 3; k++)
		if (vlen == strlen(policies[k]) && strncasecmp(txt + start, policies[k], vlen) == 0)
			*policy_r = policies[k];
	return 1;
}

static void check_dmarc(struct dnscmd *d, struct rec *r)
{
	struct dns_result *res = dns_sync_lookup(d->dns, r->name, DNS_T_TXT);
	if (lookup_failed(r, res)) {
		dns_result_free(&res);
		return;
	}
	size_t n = 0;
	const struct dns_rr *rec = NULL;
	const char *policy = NULL;
	for (size_t i = 0; i < res->count; i++) {
		/* RFC 7489 6.6.3: records not starting with "v=DMARC1" are discarded */
		const struct dns_rr *rr = &res->rrs[i];
		const char *p;
		if (dnscmd_dmarc_parse(rr->u.txt.text, rr->u.txt.len, &p) == 1) {
			n++;
			rec = rr;
			policy = p;
		}
	}
	if (n == 0) {
		char *found = join_found(res, fmt_txt);
		set_status(r, ST_MISSING, xasprintf("no DMARC record among %s", found));
		free(found);
	} else if (n > 1) {
		set_status(r, ST_WRONG, xasprintf("%zu DMARC records (policy discovery fails)", n));
	} else {
		char *found = fmt_txt(rec);
		if (policy == NULL)
			set_status(r, ST_WRONG,
			           xasprintf("no valid p= policy after v=DMARC1: %s", found));
		else if (strcmp(policy, "none") == 0)
			set_status(r, ST_OK,
			           xasprintf("%s (p=none: consider quarantine/reject)", found));
		else
			set_status(r, ST_OK, xstrdup(found));
		free(found);
	}
	dns_result_free(&res);
}

/*
 * A name in uncompressed wire format (RFC 1035 3.1) that fills `len` to
 * text, lowercase, other octets than [a-z0-9_-] as \DDD (as src/dns does);
 * NULL if malformed.
 */
static char *wire_name(const unsigned char *p, size_t len)
{
	char out[255 * 4 + 2];
	size_t o = 0, i = 0;
	while (i < len && p[i] != 0) {
		size_t n = p[i++];
		if (n > 63 || i + n > len || i + n >= 255) /* RFC 1035 2.3.4: 255 octets */
			return NULL;
		if (o > 0)
			out[o++] = '.';
		for (size_t j = 0; j < n; j++) {
			unsigned char c = p[i + j];
			if (c >= 'A' && c <= 'Z')
				c = (unsigned char)(c + 32);
			if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			    c == '_')
				out[o++] = (char)c;
			else
				o += (size_t)snprintf(out + o, sizeof(out) - o, "\\%03u", c);
		}
		i += n;
	}
	if (i >= len || i + 1 != len)
		return NULL;
	out[o] = '\0';
	return o == 0 ? xstrdup(".") : xstrdup(out);
}

char *dnscmd_srv_parse(const unsigned char *rdata, size_t len, unsigned *prio_r, unsigned *weight_r,
                       unsigned *port_r)
{
	/* RFC 2782: priority, weight, port (16 bits each), target */
	if (len < 7)
		return NULL;
	*prio_r = (unsigned)(rdata[0] << 8 | rdata[1]);
	*weight_r = (unsigned)(rdata[2] << 8 | rdata[3]);
	*port_r = (unsigned)(rdata[4] << 8 | rdata[5]);
	return wire_name(rdata + 6, len - 6);
}

static void check_srv(struct dnscmd *d, struct rec *r)
{
	bool offered = strcmp(r->value, "0 0 0 .") != 0;
	struct dns_result *res = dns_sync_lookup(d->dns, r->name, DNS_T_SRV);
	if (!offered && res->status != DNS_NOERROR && res->status != DNS_NXDOMAIN) {
		lookup_failed(r, res);
		dns_result_free(&res);
		return;
	}
	if (!offered && (res->status == DNS_NXDOMAIN || res->count == 0)) {
		set_status(r, ST_OK, xstrdup("absent (fine: the service is not offered)"));
		dns_result_free(&res);
		return;
	}
	if (lookup_failed(r, res)) {
		dns_result_free(&res);
		return;
	}
	char *found = xstrdup("");
	bool ok = false, points_here = false;
	unsigned want_port = 0;
	if (offered)
		sscanf(r->value, "0 1 %u", &want_port);
	for (size_t i = 0; i < res->count; i++) {
		const struct dns_rr *rr = &res->rrs[i];
		unsigned prio = 0, weight = 0, port = 0;
		char *target = dnscmd_srv_parse(rr->rdata, rr->rdlen, &prio, &weight, &port);
		char *n = xasprintf("%s%s%u %u %u %s", found, i > 0 ? ", " : "", prio, weight, port,
		                    target ? target : "(malformed)");
		free(found);
		found = n;
		if (target != NULL) {
			if (offered && strcmp(target, d->host) == 0 && port == want_port)
				ok = true;
			if (!offered && strcmp(target, ".") == 0)
				ok = true;
			if (strcmp(target, d->host) == 0)
				points_here = true;
		}
		free(target);
	}
	if (ok)
		set_status(r, ST_OK, xstrdup(found));
	else if (!offered && !points_here)
		set_status(r, ST_OK, xasprintf("%s (served elsewhere)", found));
	else if (!offered)
		set_status(r, ST_WRONG, xasprintf("%s, but this server does not offer it", found));
	else
		set_status(r, ST_WRONG, xasprintf("%s (expected %s)", found, r->value));
	free(found);
	dns_result_free(&res);
}

/*
 * Is the address listed in the DNSBL `zone`? (RFC 5782: A record of the
 * reversed address under the zone; 127.0.0.0/8 answers mean listed, except
 * 127.255.255.0/24, which lists such as Spamhaus use to refuse a query, for
 * example one that came through a public resolver.)
 */
static void check_dnsbl(struct dnscmd *d, const struct ip *ip, const char *zone)
{
	char *rev = reverse_name(ip);
	char *dot = strstr(rev, ip->family == AF_INET ? ".in-addr.arpa" : ".ip6.arpa");
	if (dot != NULL)
		*dot = '\0';
	struct rec *r = rec_add(d, "DNSBL", "A", xasprintf("%s.%s", rev, zone), xstrdup(zone));
	free(rev);
	struct dns_result *res = dns_sync_lookup(d->dns, r->name, DNS_T_A);
	if (res->status == DNS_NXDOMAIN || (res->status == DNS_NOERROR && res->count == 0)) {
		set_status(r, ST_OK, xasprintf("%s is not listed", ip->text));
	} else if (res->status != DNS_NOERROR) {
		lookup_failed(r, res);
	} else {
		char *found = join_found(res, fmt_addr);
		const unsigned char *a = res->rrs[0].u.addr.addr;
		if (res->rrs[0].u.addr.family != AF_INET || a[0] != 127) {
			set_status(
			    r, ST_ERROR,
			    xasprintf("unexpected answer %s (not a DNSBL, or a resolver that "
			              "rewrites NXDOMAIN)",
			              found));
		} else if (a[1] == 255 && a[2] == 255) {
			set_status(
			    r, ST_ERROR,
			    xasprintf("the list refused the query (%s); query it through your "
			              "own resolver, not a public one",
			              found));
		} else {
			/* the reason, if the list gives one (RFC 5782 2.1) */
			struct dns_result *txt = dns_sync_lookup(d->dns, r->name, DNS_T_TXT);
			char *why = txt->status == DNS_NOERROR && txt->count > 0
			                ? fmt_txt(&txt->rrs[0])
			                : xstrdup("no reason given");
			set_status(r, ST_WRONG,
			           xasprintf("%s is listed (%s): %s", ip->text, found, why));
			free(why);
			dns_result_free(&txt);
		}
		free(found);
	}
	dns_result_free(&res);
}

static int check(struct dnscmd *d)
{
	struct dns_options opts = {.resolver = d->cfg->dns_resolver,
	                           .timeout_ms = CHECK_TIMEOUT_MS};
	const char *err = NULL;
	d->dns = dns_sync_new(&opts, &err);
	if (d->dns == NULL) {
		cli_error("resolver: %s", err);
		return -1;
	}
	size_t dkim_i = 0, n = d->nrecs; /* PTR records added on the way are checked when added */
	for (size_t i = 0; i < n; i++) {
		struct rec *r = &d->recs[i];
		if (r->commented && strcmp(r->kind, "DKIM") == 0) {
			set_status(r, ST_MISSING,
			           xasprintf("no DKIM key on this server: run `postern dkim keygen "
			                     "%s`",
			                     d->domain));
			continue;
		}
		if (r->commented)
			continue;
		if (strcmp(r->kind, "MX") == 0) {
			check_mx(d, r);
		} else if (strcmp(r->kind, "A") == 0 || strcmp(r->kind, "AAAA") == 0) {
			check_addr(d, r);
		} else if (strcmp(r->kind, "PTR") == 0) {
			const struct ip *ip = ip_of_ptr_rec(d, r);
			if (ip != NULL) {
				check_ptr(d, r, ip);
			} else if (d->nips > 0) {
				/* the placeholder: check the addresses DNS gave instead */
				free(r->name);
				r->name = reverse_name(&d->ips[0]);
				check_ptr(d, r, &d->ips[0]);
				for (size_t j = 1; j < d->nips; j++) {
					char *name = reverse_name(&d->ips[j]);
					struct rec *nr = rec_add(d, "PTR", "PTR", name,
					                         xasprintf("%s.", d->host));
					nr->provider = true;
					r = &d->recs[i]; /* rec_add may move the array */
					check_ptr(d, nr, &d->ips[j]);
				}
			} else {
				set_status(r, ST_MISSING, xstrdup("no server address to check"));
			}
		} else if (strcmp(r->kind, "SPF") == 0) {
			check_spf(d, r,
			          strcmp(r->name, d->host) == 0 && strcmp(d->host, d->domain) != 0);
		} else if (strcmp(r->kind, "DKIM") == 0) {
			check_dkim(d, r, &d->keys.v[dkim_i++]);
		} else if (strcmp(r->kind, "DMARC") == 0) {
			check_dmarc(d, r);
		} else if (strcmp(r->kind, "SRV") == 0) {
			check_srv(d, r);
		}
	}
	size_t nips = d->nips;
	for (size_t z = 0; z < d->ndnsbls; z++)
		for (size_t i = 0; i < nips; i++)
			check_dnsbl(d, &d->ips[i], d->dnsbls[z]);
	dns_sync_free(&d->dns);
	return 0;
}

/* ---- output ---- */

static void print_zone(struct dnscmd *d)
{
	printf("; DNS records for %s, served by %s.\n", d->domain, d->host);
	printf("; Zone-file syntax: paste into your DNS provider's zone for %s.\n", d->domain);
	printf("; Fill in anything in <ANGLE BRACKETS>; lines starting with ';' are advice.\n");
	bool have6 = false;
	for (size_t i = 0; i < d->nips; i++)
		have6 |= d->ips[i].family == AF_INET6;
	if (d->nips > 0 && !have6)
		printf(
		    "; No public IPv6 address found: add an AAAA record if the server has one.\n");
	const char *last_kind = "";
	for (size_t i = 0; i < d->nrecs; i++) {
		const struct rec *r = &d->recs[i];
		if (strcmp(r->kind, last_kind) != 0)
			putchar('\n');
		last_kind = r->kind;
		if (r->note != NULL)
			printf("; %s\n", r->note);
		printf("%s%s. IN %s %s\n", r->commented ? "; " : "", r->name, r->type, r->value);
	}
	for (size_t i = 0; i < d->retired.n; i++) {
		const struct dkimkey *k = &d->retired.v[i];
		if (i == 0)
			printf(
			    "\n; Retired DKIM keys: keep their records a few days after the "
			    "rotation\n"
			    "; (mail signed before it still verifies), then remove them from DNS\n"
			    "; and delete the keys with `postern dkim del %s SELECTOR`:\n",
			    d->domain);
		dkim_txt_record_print(stdout, d->domain, k->selector, k->txt);
	}
}

static size_t print_check(struct dnscmd *d)
{
	size_t problems = 0;
	for (size_t i = 0; i < d->nrecs; i++) {
		const struct rec *r = &d->recs[i];
		if (r->status == ST_NONE)
			continue;
		printf("%-7s %-5s %s: %s\n", status_names[r->status], r->kind, r->name,
		       r->found ? r->found : "");
		if (r->status != ST_OK) {
			problems++;
			if (r->status == ST_WRONG && strcmp(r->kind, "DNSBL") == 0)
				printf("        fix the cause, then ask %s to remove the address\n",
				       r->value);
			else if (!r->commented && r->status != ST_ERROR)
				printf("        %s: %s. IN %s %s\n",
				       r->provider ? "ask your provider for" : "publish", r->name,
				       r->type, r->value);
		}
	}
	if (problems == 0)
		printf("\nAll records of %s are in place.\n", d->domain);
	else
		printf("\n%zu problem%s: fix the records above (`%s dns %s` prints them all); DNS "
		       "changes can take up to the record's TTL to be seen.\n",
		       problems, problems == 1 ? "" : "s", "postern", d->domain);
	return problems;
}

static size_t print_json(struct dnscmd *d, bool checked)
{
	json_t *arr = json_array();
	size_t problems = 0;
	for (size_t i = 0; i < d->nrecs; i++) {
		const struct rec *r = &d->recs[i];
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b}", "kind", r->kind, "name",
		                      r->name, "type", r->type, "value", r->value, "publish",
		                      !r->commented && strcmp(r->kind, "DNSBL") != 0, "provider",
		                      r->provider);
		if (r->note != NULL)
			json_object_set_new(o, "note", json_string(r->note));
		if (checked && r->status != ST_NONE) {
			json_object_set_new(o, "status", json_string(status_names[r->status]));
			json_object_set_new(o, "found", json_string(r->found ? r->found : ""));
			if (r->status != ST_OK)
				problems++;
		}
		json_array_append_new(arr, o);
	}
	json_t *ips = json_array();
	for (size_t i = 0; i < d->nips; i++)
		json_array_append_new(ips, json_string(d->ips[i].text));
	json_t *top = json_pack("{s:s, s:s, s:o, s:o}", "domain", d->domain, "hostname", d->host,
	                        "addresses", ips, "records", arr);
	if (checked)
		json_object_set_new(top, "ok", json_boolean(problems == 0));
	json_dumpf(top, stdout, JSON_INDENT(2));
	fputc('\n', stdout);
	json_decref(top);
	return problems;
}

static int run_dns(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool do_check = false, json = false;
	const char *ipopt = NULL, *dnsblopt = NULL;
	const struct cli_opt opts[] = {{"--check", &do_check, NULL},
	                               {"--json", &json, NULL},
	                               {"--ip", NULL, &ipopt},
	                               {"--dnsbl", NULL, &dnsblopt},
	                               {0}};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 1, 1, &npos, &ret))
		return ret;
	struct dnscmd d = {0};
	d.cfg = cli_config(cli);
	if (d.cfg == NULL)
		return CLI_EXIT_FAIL;
	char *domain = str_lower(xstrdup(pos[0]));
	size_t dl = strlen(domain);
	if (dl > 0 && domain[dl - 1] == '.')
		domain[dl - 1] = '\0';
	char *host = str_lower(xstrdup(d.cfg->hostname));
	d.domain = domain;
	d.host = host;
	ret = CLI_EXIT_FAIL;
	if (!dkimkeys_name_ok(domain, 253)) {
		cli_error("invalid domain name: %s", pos[0]);
		goto out;
	}
	if (!dkimkeys_name_ok(host, 253) || strchr(host, '.') == NULL) {
		cli_error("[server] hostname must be the server's full DNS name, not '%s'", host);
		goto out;
	}
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		goto out;
	int local = directory_is_local_domain(dir, domain);
	cli_directory_close(cli, &dir);
	if (local <= 0) {
		if (local < 0)
			cli_error("cannot read the directory");
		else
			cli_error("%s is not a local domain (add it with `domain add`)", domain);
		goto out;
	}
	char *error = NULL;
	if (dkimkeys_list(d.cfg->data_dir, domain, false, false, &d.keys, &error) < 0) {
		cli_error("%s", error);
		free(error);
		goto out;
	}
	/* split off the retired keys */
	size_t w = 0;
	for (size_t i = 0; i < d.keys.n; i++) {
		if (d.keys.v[i].state == DKIMKEY_ACTIVE) {
			d.keys.v[w++] = d.keys.v[i];
		} else {
			d.retired.v = xgrow(d.retired.v, &d.retired.cap, d.retired.n + 1,
			                    sizeof(*d.retired.v));
			d.retired.v[d.retired.n++] = d.keys.v[i];
		}
	}
	d.keys.n = w;
	if (find_ips(&d, ipopt) < 0) {
		ret = CLI_EXIT_USAGE;
		goto out;
	}
	if (dnsblopt != NULL) {
		d.dnsbls = strv_split_list(dnsblopt, &d.ndnsbls);
		for (size_t i = 0; i < d.ndnsbls; i++) {
			str_lower(d.dnsbls[i]);
			if (!dkimkeys_name_ok(d.dnsbls[i], 200)) {
				cli_error("--dnsbl: not a DNS zone: %s", d.dnsbls[i]);
				ret = CLI_EXIT_USAGE;
				goto out;
			}
		}
	}
	build(&d);
	if (!do_check) {
		if (json)
			print_json(&d, false);
		else
			print_zone(&d);
		ret = CLI_EXIT_OK;
		goto out;
	}
	if (check(&d) < 0)
		goto out;
	size_t problems = json ? print_json(&d, true) : print_check(&d);
	ret = problems == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
out:
	for (size_t i = 0; i < d.nrecs; i++) {
		free(d.recs[i].name);
		free(d.recs[i].value);
		free(d.recs[i].note);
		free(d.recs[i].found);
	}
	free(d.recs);
	dkimkey_list_free(&d.keys);
	dkimkey_list_free(&d.retired);
	if (d.dnsbls != NULL)
		strv_free(&d.dnsbls);
	free(domain);
	free(host);
	return ret;
}

const struct cli_cmd cmd_dns_cmds[] = {
    {"dns", NULL, "DOMAIN [--check] [--json] [--ip ADDR,...] [--dnsbl ZONE,...]",
     "Print the DNS records to publish for DOMAIN; --check compares them with live DNS", run_dns},
    {0},
};
