/*
 * libFuzzer target: the SPF record parser, the macro expander (domain-spec
 * and explanation modes) and check_host() over a resolver that answers
 * every TXT query with the input, so include/redirect recursion, the DNS
 * limits and exp= all run on hostile records.
 */
#include "mail/spf.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct fuzz_ctx {
	const char *data;
	size_t size;
	unsigned queries;
};

static unsigned name_hash(const char *name)
{
	unsigned h = 5381;
	for (const char *p = name; *p != '\0'; p++)
		h = h * 33 + (unsigned char)*p;
	return h;
}

static void fuzz_lookup(void *ctx, enum spf_rrtype type, const char *name, struct spf_answer *a)
{
	struct fuzz_ctx *f = ctx;
	unsigned h = name_hash(name);
	size_t n = strlen(name);
	if (n == 0 || n > 253 || name[n - 1] == '.')
		abort(); /* the interface promises a clean name */
	f->queries++;
	switch (h % 5) {
	case 0:
		a->rcode = SPF_DNS_NXDOMAIN;
		return;
	case 1:
		a->rcode = SPF_DNS_TEMPFAIL;
		return;
	default:
		break;
	}
	unsigned char ip4[4] = {192, 0, 2, (unsigned char)(h & 3)};
	unsigned char ip6[16] = {0x20, 0x01, 0x0d, 0xb8};
	ip6[15] = (unsigned char)(h & 3);
	switch (type) {
	case SPF_RR_TXT:
		spf_answer_add_txt(a, &f->data, &f->size, 1);
		break;
	case SPF_RR_A:
		spf_answer_add_addr(a, ip4, 4);
		break;
	case SPF_RR_AAAA:
		spf_answer_add_addr(a, ip6, 16);
		break;
	case SPF_RR_MX:
	case SPF_RR_PTR:
		for (unsigned i = 0; i < (h >> 4) % 13; i++)
			spf_answer_add_name(a, i % 2 ? "mx.example.com." : "host.example.org");
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	const char *err;
	struct spf_record *rec = NULL;
	if (spf_record_parse(s, size, &rec, &err) == 0) {
		if (size > SPF_MAX_RECORD || spf_record_terms(rec) > SPF_MAX_TERMS)
			abort();
		for (size_t i = 0; i < spf_record_terms(rec); i++)
			if (spf_record_term_text(rec, i) == NULL)
				abort();
		spf_record_free(&rec);
	}

	struct fuzz_ctx f = {.data = s, .size = size};
	struct spf_resolver res = {.lookup = fuzz_lookup, .ctx = &f};
	struct spf_request req = {.family = AF_INET, .sender = "first.last-x+y@Example.COM",
				  .helo = "mx.example.org", .receiver = "postern.test",
				  .now = 1700000000};
	inet_pton(AF_INET, "192.0.2.1", req.ip);
	for (int explain = 0; explain < 2; explain++) {
		char *x = spf_macro_expand(&res, &req, "example.com", s, size, explain, &err);
		if (x != NULL && strlen(x) > SPF_MAX_EXPAND)
			abort();
		free(x);
	}

	struct spf_outcome out;
	for (int v6 = 0; v6 < 2; v6++) {
		if (v6) {
			req.family = AF_INET6;
			inet_pton(AF_INET6, "2001:db8::1", req.ip);
		}
		f.queries = 0;
		spf_check_host(&res, &req, "example.com", &out);
		if (f.queries > 200 || out.dns_mechanisms > SPF_MAX_DNS_MECH + 1 ||
		    out.void_lookups > SPF_MAX_VOID + 1)
			abort();
		if (out.explanation != NULL &&
		    (out.result != SPF_FAIL || strlen(out.explanation) > SPF_MAX_EXPLAIN))
			abort();
		spf_outcome_free(&out);
	}
	return 0;
}
