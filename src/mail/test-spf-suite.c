/*
 * The public SPF conformance suites against check_host():
 *   ../shared/vectors/spf-rfc7208/rfc7208-tests.yml   (openspf/pyspf, 203 cases)
 *   ../shared/vectors/spf-blitiri-extra/blitirispf-tests.yml (21 cases)
 * Each scenario's zonedata becomes an in-memory zone behind the resolver
 * interface, with the pyspf test driver's conventions: SPF entries double as
 * TXT unless the name has a TXT entry ("TXT: NONE" only suppresses that);
 * TIMEOUT answers a query with a timeout unless a record of the queried type
 * came before it; names not in the zone are NXDOMAIN; CNAMEs are followed.
 *
 * The YAML is read with libyaml (Debian libyaml-dev), which unit tests link.
 */
#include "mail/spf.h"
#include "lib/xalloc.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <yaml.h>

static bool is_scalar(const yaml_node_t *n)
{
	return n != NULL && n->type == YAML_SCALAR_NODE;
}

static const char *sval(const yaml_node_t *n)
{
	return is_scalar(n) ? (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
	if (map == NULL || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		if (is_scalar(k) && strcmp(sval(k), key) == 0)
			return yaml_document_get_node(doc, p->value);
	}
	return NULL;
}

/* ---- the in-memory zone ---- */

enum zkind { Z_RECORD, Z_TIMEOUT, Z_SERVFAIL };

struct zentry {
	enum zkind kind;
	char type[12];
	bool none;    /* "TXT: NONE" */
	bool timeout; /* "TXT: TIMEOUT" */
	char **strs;
	size_t *lens;
	size_t n;
};

struct zname {
	char *name;
	struct zentry *e;
	size_t n;
};

struct zone {
	struct zname *names;
	size_t n;
};

static char *dns_key(const char *s, size_t len)
{
	if (len > 0 && s[len - 1] == '.')
		len--;
	char *k = malloc(len + 1);
	assert_non_null(k);
	for (size_t i = 0; i < len; i++)
		k[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
	k[len] = '\0';
	return k;
}

static struct zentry *zentry_add(struct zname *zn)
{
	zn->e = realloc(zn->e, (zn->n + 1) * sizeof(*zn->e));
	assert_non_null(zn->e);
	struct zentry *e = &zn->e[zn->n++];
	memset(e, 0, sizeof(*e));
	return e;
}

static void zentry_str(struct zentry *e, const yaml_node_t *n)
{
	e->strs = realloc(e->strs, (e->n + 1) * sizeof(char *));
	e->lens = realloc(e->lens, (e->n + 1) * sizeof(size_t));
	assert_true(e->strs != NULL && e->lens != NULL);
	e->lens[e->n] = n->data.scalar.length;
	e->strs[e->n] = malloc(n->data.scalar.length + 1);
	assert_non_null(e->strs[e->n]);
	memcpy(e->strs[e->n], n->data.scalar.value, n->data.scalar.length + 1);
	e->n++;
}

static void zone_load(struct zone *z, yaml_document_t *doc, yaml_node_t *zd)
{
	memset(z, 0, sizeof(*z));
	assert_true(zd != NULL && zd->type == YAML_MAPPING_NODE);
	for (yaml_node_pair_t *p = zd->data.mapping.pairs.start; p < zd->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
		assert_true(is_scalar(k) && v != NULL && v->type == YAML_SEQUENCE_NODE);
		z->names = realloc(z->names, (z->n + 1) * sizeof(*z->names));
		assert_non_null(z->names);
		struct zname *zn = &z->names[z->n++];
		memset(zn, 0, sizeof(*zn));
		zn->name = dns_key(sval(k), k->data.scalar.length);
		bool has_txt = false;
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top; it++) {
			yaml_node_t *item = yaml_document_get_node(doc, *it);
			struct zentry *e = zentry_add(zn);
			if (is_scalar(item)) {
				assert_string_equal(sval(item), "TIMEOUT");
				e->kind = Z_TIMEOUT;
				continue;
			}
			assert_true(item->type == YAML_MAPPING_NODE &&
				    item->data.mapping.pairs.top - item->data.mapping.pairs.start ==
					    1);
			yaml_node_pair_t *pp = item->data.mapping.pairs.start;
			const char *type = sval(yaml_document_get_node(doc, pp->key));
			yaml_node_t *val = yaml_document_get_node(doc, pp->value);
			assert_non_null(type);
			if (strcmp(type, "TIMEOUT") == 0) {
				e->kind = Z_TIMEOUT;
				continue;
			}
			if (strcmp(type, "SERVFAIL") == 0) {
				e->kind = Z_SERVFAIL;
				continue;
			}
			assert_true(strlen(type) < sizeof(e->type));
			strcpy(e->type, type);
			if (strcmp(type, "TXT") == 0)
				has_txt = true;
			if (is_scalar(val)) {
				if (strcmp(sval(val), "NONE") == 0)
					e->none = true;
				else if (strcmp(sval(val), "TIMEOUT") == 0)
					e->timeout = true;
				else
					zentry_str(e, val);
			} else {
				assert_true(val->type == YAML_SEQUENCE_NODE);
				for (yaml_node_item_t *s = val->data.sequence.items.start;
				     s < val->data.sequence.items.top; s++) {
					yaml_node_t *sn = yaml_document_get_node(doc, *s);
					assert_true(is_scalar(sn));
					zentry_str(e, sn);
				}
			}
		}
		/* SPF records double as TXT unless TXT is given explicitly */
		if (!has_txt) {
			size_t n = zn->n;
			for (size_t i = 0; i < n; i++) {
				if (zn->e[i].kind != Z_RECORD || strcmp(zn->e[i].type, "SPF") != 0)
					continue;
				struct zentry *e = zentry_add(zn);
				const struct zentry *src = &zn->e[i];
				strcpy(e->type, "TXT");
				e->none = src->none;
				e->timeout = src->timeout;
				for (size_t j = 0; j < src->n; j++) {
					yaml_node_t fake;
					fake.type = YAML_SCALAR_NODE;
					fake.data.scalar.value = (yaml_char_t *)src->strs[j];
					fake.data.scalar.length = src->lens[j];
					zentry_str(e, &fake);
				}
			}
		}
	}
}

static void zone_free(struct zone *z)
{
	for (size_t i = 0; i < z->n; i++) {
		for (size_t j = 0; j < z->names[i].n; j++) {
			struct zentry *e = &z->names[i].e[j];
			for (size_t k = 0; k < e->n; k++)
				free(e->strs[k]);
			free(e->strs);
			free(e->lens);
		}
		free(z->names[i].e);
		free(z->names[i].name);
	}
	free(z->names);
}

static const struct zname *zone_find(const struct zone *z, const char *name)
{
	for (size_t i = 0; i < z->n; i++)
		if (strcmp(z->names[i].name, name) == 0)
			return &z->names[i];
	return NULL;
}

static const char *type_name(enum spf_rrtype t)
{
	switch (t) {
	case SPF_RR_A:
		return "A";
	case SPF_RR_AAAA:
		return "AAAA";
	case SPF_RR_MX:
		return "MX";
	case SPF_RR_PTR:
		return "PTR";
	case SPF_RR_TXT:
		return "TXT";
	}
	return "?";
}

static void add_record(struct spf_answer *a, enum spf_rrtype type, const struct zentry *e)
{
	unsigned char addr[16];
	switch (type) {
	case SPF_RR_A:
		assert_int_equal(inet_pton(AF_INET, e->strs[0], addr), 1);
		spf_answer_add_addr(a, addr, 4);
		break;
	case SPF_RR_AAAA:
		assert_int_equal(inet_pton(AF_INET6, e->strs[0], addr), 1);
		spf_answer_add_addr(a, addr, 16);
		break;
	case SPF_RR_MX: /* [preference, exchange] */
	case SPF_RR_PTR:
		spf_answer_add_name(a, e->strs[e->n - 1]);
		break;
	case SPF_RR_TXT:
		spf_answer_add_txt(a, (const char *const *)e->strs, e->lens, e->n);
		break;
	}
}

static void stub_lookup(void *ctx, enum spf_rrtype type, const char *name, struct spf_answer *a)
{
	const struct zone *z = ctx;
	const char *tname = type_name(type);
	char *cur = dns_key(name, strlen(name));
	for (int hops = 0; hops < 8; hops++) {
		const struct zname *zn = zone_find(z, cur);
		if (zn == NULL) {
			a->rcode = SPF_DNS_NXDOMAIN;
			free(cur);
			return;
		}
		bool seen = false;
		const char *cname = NULL;
		for (size_t i = 0; i < zn->n; i++) {
			const struct zentry *e = &zn->e[i];
			if (e->kind == Z_SERVFAIL || (e->kind == Z_TIMEOUT && !seen)) {
				a->rcode = SPF_DNS_TEMPFAIL;
				free(cur);
				return;
			}
			if (e->kind == Z_TIMEOUT)
				break;
			if (strcmp(e->type, "CNAME") == 0 && e->n > 0) {
				cname = e->strs[0];
				continue;
			}
			/* "TXT: NONE" is no record: it does not stop a later TIMEOUT */
			if (strcmp(e->type, tname) != 0 || e->none)
				continue;
			seen = true;
			if (e->timeout) {
				a->rcode = SPF_DNS_TEMPFAIL;
				free(cur);
				return;
			}
			add_record(a, type, e);
		}
		if (cname == NULL || seen) {
			free(cur);
			return;
		}
		char *next = dns_key(cname, strlen(cname));
		free(cur);
		cur = next;
	}
	a->rcode = SPF_DNS_TEMPFAIL; /* CNAME loop: SERVFAIL from a real resolver */
	free(cur);
}

/* ---- running the suites ---- */

/* Cases where the implementation follows RFC 7208 and the suite does not. */
static const struct {
	const char *file, *test, *why;
} deviations[] = {
	{"blitirispf-tests.yml", "resolution-with-10-lookups",
	 "include:d11 has no '.' toplabel: RFC 7208 7.1 domain-end makes it a syntax error "
	 "(the RFC suite's a-only-toplabel requires exactly that), so permerror"},
	{"blitirispf-tests.yml", "mx-resolution-10-terms",
	 "sender domain mx10 is a single label: RFC 7208 4.3 returns none"},
	{"blitirispf-tests.yml", "mx-resolution-11-terms",
	 "sender domain mx11 is a single label: RFC 7208 4.3 returns none"},
	{"blitirispf-tests.yml", "one-mx-not-found",
	 "sender domain d00 is a single label: RFC 7208 4.3 returns none"},
	{"blitirispf-tests.yml", "all-mx-not-found",
	 "sender domain d01 is a single label: RFC 7208 4.3 returns none"},
	{"blitirispf-tests.yml", "include-not-found",
	 "sender domain d02 is a single label: RFC 7208 4.3 returns none"},
	{"blitirispf-tests.yml", "redirect-not-found",
	 "sender domain d03 is a single label: RFC 7208 4.3 returns none"},
};

static const char *deviation(const char *file, const char *test)
{
	for (size_t i = 0; i < ARRAY_SIZE(deviations); i++) {
		const char *base = strrchr(file, '/');
		base = base != NULL ? base + 1 : file;
		if (strcmp(deviations[i].file, base) == 0 && strcmp(deviations[i].test, test) == 0)
			return deviations[i].why;
	}
	return NULL;
}

struct tally {
	unsigned cases, passed, failed, deviated, stale;
};

static bool result_ok(yaml_document_t *doc, yaml_node_t *want, enum spf_result got)
{
	const char *g = spf_result_name(got);
	if (is_scalar(want))
		return strcmp(sval(want), g) == 0;
	assert_true(want != NULL && want->type == YAML_SEQUENCE_NODE);
	for (yaml_node_item_t *it = want->data.sequence.items.start;
	     it < want->data.sequence.items.top; it++) {
		const char *w = sval(yaml_document_get_node(doc, *it));
		if (w != NULL && strcmp(w, g) == 0)
			return true;
	}
	return false;
}

static void run_case(const char *file, yaml_document_t *doc, struct zone *z, const char *name,
		     yaml_node_t *t, struct tally *tally)
{
	const char *host = sval(map_get(doc, t, "host"));
	const char *helo = sval(map_get(doc, t, "helo"));
	const char *mailfrom = sval(map_get(doc, t, "mailfrom"));
	yaml_node_t *want = map_get(doc, t, "result");
	const char *want_exp = sval(map_get(doc, t, "explanation"));
	struct spf_resolver res = {.lookup = stub_lookup, .ctx = z};
	struct spf_request req = {.helo = helo != NULL ? helo : "", .now = 1700000000};
	struct spf_outcome out;

	assert_non_null(host);
	assert_non_null(want);
	if (inet_pton(AF_INET, host, req.ip) == 1)
		req.family = AF_INET;
	else if (inet_pton(AF_INET6, host, req.ip) == 1)
		req.family = AF_INET6;
	else
		fail_msg("%s: bad host %s", name, host);

	spf_check_mailfrom(&res, &req, mailfrom != NULL ? mailfrom : "", &out);
	bool ok = result_ok(doc, want, out.result);
	if (ok && want_exp != NULL) {
		if (strcmp(want_exp, "DEFAULT") == 0)
			ok = out.explanation == NULL;
		else
			ok = out.explanation != NULL && strcmp(out.explanation, want_exp) == 0;
	}
	const char *why = deviation(file, name);
	tally->cases++;
	if (ok && why == NULL) {
		tally->passed++;
	} else if (!ok && why != NULL) {
		tally->deviated++;
		printf("deviation %s: got %s; %s\n", name, spf_result_name(out.result), why);
	} else if (ok) {
		tally->stale++;
		printf("STALE deviation %s: now passes\n", name);
	} else {
		tally->failed++;
		printf("FAIL %s: got %s (%s; %s) explanation %s%s%s\n", name,
		       spf_result_name(out.result), out.mechanism ? out.mechanism : "-",
		       out.reason ? out.reason : "-", out.explanation ? "\"" : "",
		       out.explanation ? out.explanation : "(none)", out.explanation ? "\"" : "");
	}
	spf_outcome_free(&out);
}

static char *read_file(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		fail_msg("cannot open %s", path);
	char *buf = NULL;
	size_t len = 0;
	for (;;) {
		buf = realloc(buf, len + 65536);
		assert_non_null(buf);
		size_t n = fread(buf + len, 1, 65536, f);
		len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	*len_r = len;
	return buf;
}

static void run_suite(const char *rel, unsigned expect_cases, struct tally *total)
{
	char path[4096];
	const char *src = getenv("POSTERN_SOURCE_DIR");
	snprintf(path, sizeof(path), "%s/../shared/vectors/%s", src != NULL ? src : ".", rel);
	size_t len;
	char *text = read_file(path, &len);
	yaml_parser_t parser;
	assert_int_equal(yaml_parser_initialize(&parser), 1);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	struct tally t = {0};
	for (;;) {
		yaml_document_t doc;
		if (!yaml_parser_load(&parser, &doc))
			fail_msg("%s: YAML error: %s", path, parser.problem ? parser.problem : "?");
		yaml_node_t *root = yaml_document_get_root_node(&doc);
		if (root == NULL) {
			yaml_document_delete(&doc);
			break;
		}
		struct zone z;
		zone_load(&z, &doc, map_get(&doc, root, "zonedata"));
		yaml_node_t *tests = map_get(&doc, root, "tests");
		assert_true(tests != NULL && tests->type == YAML_MAPPING_NODE);
		for (yaml_node_pair_t *p = tests->data.mapping.pairs.start;
		     p < tests->data.mapping.pairs.top; p++)
			run_case(path, &doc, &z, sval(yaml_document_get_node(&doc, p->key)),
				 yaml_document_get_node(&doc, p->value), &t);
		zone_free(&z);
		yaml_document_delete(&doc);
	}
	yaml_parser_delete(&parser);
	free(text);
	printf("%s: %u cases, %u passed, %u failed, %u documented deviations\n", rel, t.cases,
	       t.passed, t.failed + t.stale, t.deviated);
	assert_int_equal(t.cases, expect_cases);
	total->cases += t.cases;
	total->passed += t.passed;
	total->failed += t.failed;
	total->deviated += t.deviated;
	total->stale += t.stale;
}

static void test_suites(void **state)
{
	struct tally t = {0};
	run_suite("spf-rfc7208/rfc7208-tests.yml", 203, &t);
	run_suite("spf-blitiri-extra/blitirispf-tests.yml", 21, &t);
	printf("SPF suite: %u passed, %u failed (%u documented deviations)\n", t.passed,
	       t.failed + t.stale, t.deviated);
	assert_int_equal(t.failed, 0);
	assert_int_equal(t.stale, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_suites),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
