/*
 * DNS records: RDATA decoding (untrusted bytes from the network, checked
 * against their length before every read), results built from libunbound's
 * answers, MX ordering, reverse names. Pure code, usable on any thread.
 */
#include "dns/dns-private.h"

#include "lib/log.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>

/* RFC 1035 2.3.4 */
#define NAME_MAX_WIRE 255
#define LABEL_MAX 63

/*
 * Decode the uncompressed wire name at rdata[*pos..rdlen) into lowercase
 * text without the trailing dot ("." for the root). Bytes other than
 * letters, digits, '-' and '_' are written \DDD (RFC 1035 5.1), so a name
 * with odd bytes can never equal a plain host name. Returns NULL when the
 * name is malformed or runs past rdlen.
 */
static char *name_decode(const unsigned char *rdata, size_t rdlen, size_t *pos)
{
	/* Worst case: every byte as \DDD plus dots. */
	char buf[NAME_MAX_WIRE * 4 + 2];
	size_t out = 0, wire = 0, p = *pos;

	for (;;) {
		if (p >= rdlen)
			return NULL;
		unsigned len = rdata[p++];
		wire++;
		if (len == 0)
			break;
		if (len > LABEL_MAX) /* compression pointers or extended labels: not in RDATA here */
			return NULL;
		if (p + len > rdlen || wire + len > NAME_MAX_WIRE)
			return NULL;
		wire += len;
		if (out > 0)
			buf[out++] = '.';
		for (unsigned i = 0; i < len; i++) {
			unsigned char c = rdata[p + i];
			if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')
				buf[out++] = (char)c;
			else if (c >= 'A' && c <= 'Z')
				buf[out++] = (char)(c - 'A' + 'a');
			else
				out += (size_t)snprintf(buf + out, sizeof(buf) - out, "\\%03u", c);
		}
		p += len;
	}
	if (out == 0)
		buf[out++] = '.';
	buf[out] = '\0';
	*pos = p;
	return xstrdup(buf);
}

void dns_rr_clear(struct dns_rr *rr)
{
	switch (rr->type) {
	case DNS_T_MX:
		free(rr->u.mx.host);
		break;
	case DNS_T_PTR:
	case DNS_T_CNAME:
		free(rr->u.name);
		break;
	case DNS_T_TXT:
		free(rr->u.txt.text);
		break;
	default:
		break;
	}
	free((void *)rr->rdata);
	memset(rr, 0, sizeof(*rr));
}

int dns_rr_parse(uint16_t type, const unsigned char *rdata, size_t rdlen, struct dns_rr *rr)
{
	size_t pos = 0;

	memset(rr, 0, sizeof(*rr));
	switch (type) {
	case DNS_T_A:
		if (rdlen != 4)
			return -1;
		rr->u.addr.family = AF_INET;
		memcpy(rr->u.addr.addr, rdata, 4);
		break;
	case DNS_T_AAAA:
		if (rdlen != 16)
			return -1;
		rr->u.addr.family = AF_INET6;
		memcpy(rr->u.addr.addr, rdata, 16);
		break;
	case DNS_T_MX:
		/* RFC 1035 3.3.9: PREFERENCE, EXCHANGE */
		if (rdlen < 3)
			return -1;
		rr->u.mx.preference = (uint16_t)(rdata[0] << 8 | rdata[1]);
		pos = 2;
		rr->u.mx.host = name_decode(rdata, rdlen, &pos);
		if (rr->u.mx.host == NULL)
			return -1;
		if (pos != rdlen) {
			xfree(&rr->u.mx.host);
			return -1;
		}
		break;
	case DNS_T_PTR:
	case DNS_T_CNAME:
		rr->u.name = name_decode(rdata, rdlen, &pos);
		if (rr->u.name == NULL)
			return -1;
		if (pos != rdlen) {
			xfree(&rr->u.name);
			return -1;
		}
		break;
	case DNS_T_TXT: {
		/* RFC 1035 3.3.14: one or more <character-string>s */
		if (rdlen == 0)
			return -1;
		char *text = xmalloc(rdlen + 1);
		size_t len = 0;
		while (pos < rdlen) {
			size_t n = rdata[pos++];
			if (pos + n > rdlen) {
				free(text);
				return -1;
			}
			memcpy(text + len, rdata + pos, n);
			len += n;
			pos += n;
		}
		text[len] = '\0';
		rr->u.txt.text = text;
		rr->u.txt.len = len;
		break;
	}
	case DNS_T_TLSA:
		/* RFC 6698 2.1: usage, selector, matching type, data */
		if (rdlen < 3)
			return -1;
		break;
	default:
		break;
	}
	rr->type = type;
	unsigned char *copy = xmalloc(rdlen > 0 ? rdlen : 1);
	if (rdlen > 0)
		memcpy(copy, rdata, rdlen);
	rr->rdata = copy;
	rr->rdlen = rdlen;
	if (type == DNS_T_TLSA) {
		rr->u.tlsa.usage = copy[0];
		rr->u.tlsa.selector = copy[1];
		rr->u.tlsa.matching = copy[2];
		rr->u.tlsa.data = copy + 3;
		rr->u.tlsa.len = rdlen - 3;
	}
	return 0;
}

static int mx_pref_cmp(const void *a, const void *b)
{
	const struct dns_rr *x = a, *y = b;
	return (int)x->u.mx.preference - (int)y->u.mx.preference;
}

static uint32_t default_rand_below(uint32_t n)
{
	return arc4random_uniform(n);
}

void dns_mx_sort(struct dns_rr *rrs, size_t count, uint32_t (*rand_below)(uint32_t n))
{
	if (rand_below == NULL)
		rand_below = default_rand_below;
	if (count > 1)
		qsort(rrs, count, sizeof(*rrs), mx_pref_cmp);
	/* RFC 5321 5.1: hosts of equal preference are tried in random order. */
	for (size_t start = 0; start < count;) {
		size_t end = start + 1;
		while (end < count && rrs[end].u.mx.preference == rrs[start].u.mx.preference)
			end++;
		for (size_t i = end - start; i > 1; i--) {
			size_t j = rand_below((uint32_t)i);
			struct dns_rr tmp = rrs[start + i - 1];
			rrs[start + i - 1] = rrs[start + j];
			rrs[start + j] = tmp;
		}
		start = end;
	}
}

int dns_reverse_name(const struct sockaddr *sa, char *buf, size_t bufsize)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *a;

	if (sa->sa_family == AF_INET) {
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (!IN6_IS_ADDR_V4MAPPED(in6)) {
			size_t out = 0;
			if (bufsize < 73)
				return -1;
			for (int i = 15; i >= 0; i--) {
				buf[out++] = hex[in6->s6_addr[i] & 0xf];
				buf[out++] = '.';
				buf[out++] = hex[in6->s6_addr[i] >> 4];
				buf[out++] = '.';
			}
			memcpy(buf + out, "ip6.arpa", 9);
			return 0;
		}
		a = in6->s6_addr + 12;
	} else {
		return -1;
	}
	int n = snprintf(buf, bufsize, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
	return n > 0 && (size_t)n < bufsize ? 0 : -1;
}

const char *dns_status_name(enum dns_status s)
{
	switch (s) {
	case DNS_NOERROR:
		return "NOERROR";
	case DNS_NXDOMAIN:
		return "NXDOMAIN";
	case DNS_SERVFAIL:
		return "SERVFAIL";
	case DNS_TIMEOUT:
		return "TIMEOUT";
	}
	return "?";
}

void dns_result_free(struct dns_result **rp)
{
	struct dns_result *r = *rp;
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->count; i++)
		dns_rr_clear(&r->rrs[i]);
	free(r->rrs);
	free(r->qname);
	free(r->canonname);
	free(r->error);
	free(r);
	*rp = NULL;
}

struct dns_result *dns_result_fail(const char *qname, uint16_t qtype, enum dns_status status,
				   const char *error)
{
	struct dns_result *r = xcalloc(1, sizeof(*r));
	r->status = status;
	r->rcode = -1;
	r->qname = xstrdup(qname);
	r->qtype = qtype;
	r->error = error != NULL ? xstrdup(error) : NULL;
	return r;
}

/* Lowercase, without the trailing dot (except the root). */
static char *name_normalize(const char *s)
{
	char *n = str_lower(xstrdup(s));
	size_t len = strlen(n);
	if (len > 1 && n[len - 1] == '.')
		n[len - 1] = '\0';
	return n;
}

static void mx_finish(struct dns_result *r)
{
	size_t roots = 0;
	for (size_t i = 0; i < r->count; i++)
		if (strcmp(r->rrs[i].u.mx.host, ".") == 0)
			roots++;
	/*
	 * RFC 7505 3: a null MX is the domain's only MX, with exchange ".".
	 * Several "." and nothing else say the same thing; keep one.
	 */
	if (roots > 0 && roots == r->count) {
		for (size_t i = 1; i < r->count; i++)
			dns_rr_clear(&r->rrs[i]);
		r->count = 1;
		r->null_mx = true;
		return;
	}
	/* "." beside real MX hosts: no host to try, the others stand. */
	size_t kept = 0;
	for (size_t i = 0; i < r->count; i++) {
		if (strcmp(r->rrs[i].u.mx.host, ".") == 0)
			dns_rr_clear(&r->rrs[i]);
		else
			r->rrs[kept++] = r->rrs[i];
	}
	r->count = kept;
	dns_mx_sort(r->rrs, r->count, NULL);
}

struct dns_result *dns_result_from_ub(const char *qname, uint16_t qtype, int err,
				      struct ub_result *ub)
{
	struct dns_result *r;

	if (err != 0) {
		r = dns_result_fail(qname, qtype, DNS_SERVFAIL, ub_strerror(err));
		if (ub != NULL)
			ub_resolve_free(ub);
		return r;
	}
	r = dns_result_fail(qname, qtype, DNS_NOERROR, NULL);
	r->rcode = ub->rcode;
	r->secure = ub->secure != 0;
	r->bogus = ub->bogus != 0;
	r->ttl = ub->ttl > 0 ? (uint32_t)ub->ttl : 0;
	if (ub->canonname != NULL)
		r->canonname = name_normalize(ub->canonname);
	if (r->bogus) {
		/* Never hand out data that failed validation. */
		r->status = DNS_SERVFAIL;
		r->error = xasprintf("DNSSEC bogus: %s",
				     ub->why_bogus != NULL ? ub->why_bogus : "validation failed");
		ub_resolve_free(ub);
		return r;
	}
	switch (ub->rcode) {
	case 0:
		r->status = DNS_NOERROR;
		break;
	case 3:
		r->status = DNS_NXDOMAIN;
		break;
	default:
		r->status = DNS_SERVFAIL;
		r->error = xasprintf("rcode %d", ub->rcode);
		break;
	}
	if (r->status == DNS_NOERROR && ub->havedata) {
		size_t n = 0;
		while (ub->data[n] != NULL)
			n++;
		r->rrs = xcalloc(n > 0 ? n : 1, sizeof(*r->rrs));
		for (size_t i = 0; i < n; i++) {
			if (ub->len[i] < 0 ||
			    dns_rr_parse(qtype, (const unsigned char *)ub->data[i], (size_t)ub->len[i],
					 &r->rrs[r->count]) < 0) {
				char q[128];
				log_warn("event=dns_bad_rdata qname=%s qtype=%u len=%d",
					 log_quote(q, sizeof(q), qname, 100), qtype, ub->len[i]);
				continue;
			}
			r->count++;
		}
	}
	if (qtype == DNS_T_MX)
		mx_finish(r);
	ub_resolve_free(ub);
	return r;
}
