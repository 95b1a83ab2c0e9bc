/* Unit tests for the SPF record parser, macro expander and check_host() limits. */
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
#include <sys/socket.h>

#include <cmocka.h>

/* ---- a tiny zone: name, type, value ("TEMPFAIL" answers a timeout) ---- */

struct rr {
	const char *name;
	enum spf_rrtype type;
	const char *value;
};

struct zone {
	const struct rr *rrs;
	size_t n;
	unsigned queries;
};

static void lookup(void *ctx, enum spf_rrtype type, const char *name, struct spf_answer *a)
{
	struct zone *z = ctx;
	bool exists = false;
	z->queries++;
	assert_true(strlen(name) <= 253);
	assert_true(name[0] != '\0' && name[strlen(name) - 1] != '.');
	for (size_t i = 0; i < z->n; i++) {
		const struct rr *r = &z->rrs[i];
		if (strcasecmp(r->name, name) != 0)
			continue;
		exists = true;
		if (r->type != type)
			continue;
		if (strcmp(r->value, "TEMPFAIL") == 0) {
			a->rcode = SPF_DNS_TEMPFAIL;
			return;
		}
		unsigned char addr[16];
		size_t len;
		switch (type) {
		case SPF_RR_A:
			assert_int_equal(inet_pton(AF_INET, r->value, addr), 1);
			spf_answer_add_addr(a, addr, 4);
			break;
		case SPF_RR_AAAA:
			assert_int_equal(inet_pton(AF_INET6, r->value, addr), 1);
			spf_answer_add_addr(a, addr, 16);
			break;
		case SPF_RR_TXT:
			len = strlen(r->value);
			spf_answer_add_txt(a, &r->value, &len, 1);
			break;
		default:
			spf_answer_add_name(a, r->value);
			break;
		}
	}
	if (!exists)
		a->rcode = SPF_DNS_NXDOMAIN;
}

static struct spf_request req4(const char *ip, const char *sender)
{
	struct spf_request r = {.family = AF_INET, .sender = sender, .helo = "mx.example.org",
				.now = 1234567890};
	assert_int_equal(inet_pton(AF_INET, ip, r.ip), 1);
	return r;
}

static struct spf_request req6(const char *ip, const char *sender)
{
	struct spf_request r = {.family = AF_INET6, .sender = sender, .helo = "mx.example.org",
				.now = 1234567890};
	assert_int_equal(inet_pton(AF_INET6, ip, r.ip), 1);
	return r;
}

static enum spf_result check(const struct rr *rrs, size_t n, const struct spf_request *req,
			     const char *domain, struct spf_outcome *out, unsigned *queries_r)
{
	struct zone z = {.rrs = rrs, .n = n};
	struct spf_resolver res = {.lookup = lookup, .ctx = &z};
	enum spf_result r = spf_check_host(&res, req, domain, out);
	if (queries_r != NULL)
		*queries_r = z.queries;
	assert_int_equal(out->queries, z.queries);
	return r;
}

static char *expand(const struct spf_request *req, const char *domain, const char *s,
		    bool explain)
{
	const char *err = NULL;
	return spf_macro_expand(NULL, req, domain, s, strlen(s), explain, &err);
}

static void assert_expands(const struct spf_request *req, const char *s, const char *want)
{
	char *x = expand(req, "email.example.com", s, false);
	if (x == NULL || strcmp(x, want) != 0)
		fail_msg("%s -> %s, want %s", s, x ? x : "(error)", want);
	free(x);
}

/* RFC 7208 7.4 */
static void test_macro_rfc_examples(void **state)
{
	struct spf_request r = req4("192.0.2.3", "strong-bad@email.example.com");
	assert_expands(&r, "%{s}", "strong-bad@email.example.com");
	assert_expands(&r, "%{o}", "email.example.com");
	assert_expands(&r, "%{d}", "email.example.com");
	assert_expands(&r, "%{d4}", "email.example.com");
	assert_expands(&r, "%{d3}", "email.example.com");
	assert_expands(&r, "%{d2}", "example.com");
	assert_expands(&r, "%{d1}", "com");
	assert_expands(&r, "%{dr}", "com.example.email");
	assert_expands(&r, "%{d2r}", "example.email");
	assert_expands(&r, "%{l}", "strong-bad");
	assert_expands(&r, "%{l-}", "strong.bad");
	assert_expands(&r, "%{lr}", "strong-bad");
	assert_expands(&r, "%{lr-}", "bad.strong");
	assert_expands(&r, "%{l1r-}", "strong");
	assert_expands(&r, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com");
	assert_expands(&r, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com");
	assert_expands(&r, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
		       "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
	assert_expands(&r, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
		       "3.2.0.192.in-addr.strong.lp._spf.example.com");
	assert_expands(&r, "%{d2}.trusted-domains.example.net",
		       "example.com.trusted-domains.example.net");
	struct spf_request r6 = req6("2001:db8::cb01", "strong-bad@email.example.com");
	assert_expands(&r6, "%{ir}.%{v}._spf.%{d2}",
		       "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf."
		       "example.com");
}

static void test_macro_escapes_and_exp_letters(void **state)
{
	struct spf_request r = req4("192.0.2.3", "a b&c@example.com");
	assert_expands(&r, "%%%_%-", "% %20");
	assert_expands(&r, "%{L}", "a%20b%26c");
	assert_expands(&r, "%{S}", "a%20b%26c%40example.com");
	assert_expands(&r, "%{h}", "mx.example.org");
	assert_expands(&r, "%{p}", "unknown"); /* no resolver: no validated name */
	assert_expands(&r, "%{l+-=}", "a b&c");
	assert_expands(&r, "%{d128}", "email.example.com");

	/* no local part: postmaster (RFC 7208 4.3) */
	struct spf_request pm = req4("192.0.2.3", "@example.com");
	assert_expands(&pm, "%{l}.%{o}", "postmaster.example.com");

	char *x = expand(&r, "example.com", "%{c} %{r} %{t} %{v}", true);
	assert_string_equal(x, "192.0.2.3 unknown 1234567890 in-addr");
	free(x);
	r.receiver = "mx.postern.test";
	x = expand(&r, "example.com", "%{r}", true);
	assert_string_equal(x, "mx.postern.test");
	free(x);
	struct spf_request r6 = req6("2001:DB8::CB01", "x@example.com");
	x = expand(&r6, "example.com", "%{c} %{v}", true);
	assert_string_equal(x, "2001:db8::cb01 ip6");
	free(x);
	/* IPv4-mapped IPv6 is IPv4 */
	struct spf_request m = req6("::ffff:192.0.2.3", "x@example.com");
	x = expand(&m, "example.com", "%{i} %{v}", false);
	assert_null(x); /* a space is not allowed outside explanations */
	x = expand(&m, "example.com", "%{i}.%{v}", false);
	assert_string_equal(x, "192.0.2.3.in-addr");
	free(x);
}

static void test_macro_syntax_errors(void **state)
{
	struct spf_request r = req4("192.0.2.3", "a@example.com");
	const char *bad[] = {
		"%", "%a", "%{", "%{d", "%{}", "%{x}", "%{d0}", "%{d2rr}", "%{d2r!}",
		"%{c}", "%{r}", "%{t}", /* explanation-only letters */
		"a b", "\x01", "caf\xc3\xa9",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *x = expand(&r, "example.com", bad[i], false);
		if (x != NULL)
			fail_msg("accepted %s", bad[i]);
	}
	/* explanation strings allow spaces and c r t, still not bad macros */
	char *x = expand(&r, "example.com", "%{x} here", true);
	assert_null(x);
}

static void test_macro_expansion_limit(void **state)
{
	char local[65];
	memset(local, 'a', 64);
	local[64] = '\0';
	char *sender = xasprintf("%s@example.com", local);
	struct spf_request r = req4("192.0.2.3", sender);
	char spec[400] = "";
	for (int i = 0; i < 70; i++)
		strcat(spec, "%{s}");
	char *x = expand(&r, "example.com", spec, false);
	assert_null(x); /* 70 * 76 > SPF_MAX_EXPAND */
	spec[4 * 40] = '\0';
	x = expand(&r, "example.com", spec, false);
	assert_non_null(x);
	assert_int_equal(strlen(x), 40 * 76);
	free(x);
	free(sender);

	/* a value longer than the whole budget is refused before splitting */
	char *huge = xmalloc(SPF_MAX_EXPAND + 32);
	memset(huge, 'a', SPF_MAX_EXPAND + 1);
	strcpy(huge + SPF_MAX_EXPAND + 1, "@example.com");
	r.sender = huge;
	assert_null(expand(&r, "example.com", "%{l}", false));
	free(huge);
}

static int parse(const char *s, const char **err)
{
	struct spf_record *rec = NULL;
	int r = spf_record_parse(s, strlen(s), &rec, err);
	spf_record_free(&rec);
	assert_null(rec);
	return r;
}

static void test_record_syntax(void **state)
{
	const char *err;
	const char *good[] = {
		"v=spf1",
		"V=SPF1 -ALL",
		"v=spf1 a mx ptr -all",
		"v=spf1 a:example.com/24//64 mx:example.com//0 a/0 mx/32",
		"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ip4:0.0.0.0/0 ip6:::/0",
		"v=spf1 include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d} ~all",
		"v=spf1 redirect=_spf.example.com",
		"v=spf1 -all exp=explain._spf.%{d}",
		"v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all",
		"v=spf1 a:foo:bar/baz.example.com a:%{d}",
		"v=spf1 ptr:example.com. ?all ",
		"v=spf1  +a  ~mx   ?ptr",
		"v=spf1 a:example.xn--zckzah a:x.123-4",
		"v=spf1 default=+",
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		if (parse(good[i], &err) < 0)
			fail_msg("rejected %s: %s", good[i], err);
	}
	const char *bad[] = {
		"v=spf10",
		"v=spf1mx",
		"spf1 -all",
		"v=spf1 -all.",
		"v=spf1 -all:foo",
		"v=spf1 all/8",
		"v=spf1 moo",
		"v=spf1 a:museum",
		"v=spf1 a:museum.",
		"v=spf1 a:abc.123",
		"v=spf1 a:example.-com",
		"v=spf1 a:foo-bar",
		"v=spf1 a:",
		"v=spf1 a/33",
		"v=spf1 a//129",
		"v=spf1 a/24/64",
		"v=spf1 a/032",
		"v=spf1 ip4",
		"v=spf1 ip4:1.2.3",
		"v=spf1 ip4:1.2.3.4:8080",
		"v=spf1 ip4:1.2.3.04",
		"v=spf1 ip4:256.2.3.4",
		"v=spf1 ip4:1.2.3.4//32",
		"v=spf1 ip4:1.2.3.4/33",
		"v=spf1 ip6",
		"v=spf1 ip6::CAFE::BABE",
		"v=spf1 ip6:::1/129",
		"v=spf1 ip6:::1//64",
		"v=spf1 include",
		"v=spf1 include:",
		"v=spf1 include:example.com/24",
		"v=spf1 exists",
		"v=spf1 ptr/0",
		"v=spf1 ptr:",
		"v=spf1 redirect:example.com",
		"v=spf1 redirect=",
		"v=spf1 redirect=-all",
		"v=spf1 exp=",
		"v=spf1 exp=%{r}.example.com",
		"v=spf1 redirect=a.example.com redirect=a.example.com",
		"v=spf1 exp=a.example.com exp=b.example.com",
		"v=spf1 -redirect=a.example.com",
		"v=spf1 =all",
		"v=spf1 1up=foo",
		"v=spf1 foo=%abc",
		"v=spf1 a:%{a}.example.com",
		"v=spf1 exists:%(ir).example.com",
		"v=spf1 a\tmx",
		"v=spf1 a:ctrl.example.com\rptr",
		"v=spf1 \x80\x61",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (parse(bad[i], &err) == 0)
			fail_msg("accepted %s", bad[i]);
	}
	/* an embedded NUL is a character like any other control */
	assert_int_equal(spf_record_parse("v=spf1 a\0 -all", 14, &(struct spf_record *){NULL}, &err),
			 -1);
}

static void test_record_limits(void **state)
{
	const char *err;
	struct spf_record *rec = NULL;
	char *big = xmalloc(SPF_MAX_RECORD + 16);
	strcpy(big, "v=spf1");
	while (strlen(big) + 3 <= SPF_MAX_RECORD)
		strcat(big, " a");
	/* at the length limit but with too many terms */
	assert_int_equal(spf_record_parse(big, strlen(big), &rec, &err), -1);
	assert_string_equal(err, "too many terms in SPF record");
	strcat(big, " mx");
	assert_int_equal(spf_record_parse(big, strlen(big), &rec, &err), -1);
	assert_string_equal(err, "SPF record too long");

	strcpy(big, "v=spf1");
	for (int i = 0; i < SPF_MAX_TERMS; i++)
		strcat(big, " a");
	assert_int_equal(spf_record_parse(big, strlen(big), &rec, &err), 0);
	assert_int_equal(spf_record_terms(rec), SPF_MAX_TERMS);
	assert_string_equal(spf_record_term_text(rec, 0), "a");
	assert_null(spf_record_term_text(rec, SPF_MAX_TERMS));
	spf_record_free(&rec);
	free(big);

	/* every prefix of a record is handled without reading past it */
	const char *s = "v=spf1 a:%{d}.example.com/24//64 include:%{l1r-}.x.example ip6:::1/0 "
			"exp=%{r}";
	for (size_t n = 0; n <= strlen(s); n++) {
		char *copy = xstrndup(s, n);
		if (spf_record_parse(copy, n, &rec, &err) == 0)
			spf_record_free(&rec);
		free(copy);
	}
}

static void test_answer_limits(void **state)
{
	struct spf_answer a = {0};
	unsigned char ip[4] = {192, 0, 2, 1};
	for (int i = 0; i < SPF_MAX_ANSWER_RR + 5; i++)
		spf_answer_add_addr(&a, ip, 4);
	assert_int_equal(a.count, SPF_MAX_ANSWER_RR);
	assert_true(a.overflow);
	spf_answer_clear(&a);
	assert_int_equal(a.count, 0);

	const char *parts[2] = {"v=spf1 ", "-all"};
	size_t lens[2] = {7, 4};
	spf_answer_add_txt(&a, parts, lens, 2);
	assert_int_equal(a.rrs[0].len, 11);
	assert_string_equal(a.rrs[0].data, "v=spf1 -all");
	spf_answer_add_name(&a, "mx.example.com.");
	assert_string_equal(a.rrs[1].data, "mx.example.com");
	size_t huge = SPF_MAX_ANSWER_BYTES + 1;
	spf_answer_add_txt(&a, parts, &huge, 1);
	assert_true(a.overflow);
	assert_int_equal(a.count, 2);
	spf_answer_clear(&a);
}

static void test_results_and_explanation(void **state)
{
	static const struct rr z[] = {
		{"example.com", SPF_RR_TXT, "v=spf1 ip4:192.0.2.0/24 ~ip6:2001:db8::/32 "
					    "-all exp=why.example.com"},
		{"example.com", SPF_RR_TXT, "some other text"},
		{"why.example.com", SPF_RR_TXT, "%{i} may not send for %{d} (%{c}, %{v})"},
		{"neutral.example.com", SPF_RR_TXT, "v=spf1 ?all"},
		{"nothing.example.com", SPF_RR_TXT, "v=spf1"},
		{"nospf.example.com", SPF_RR_A, "192.0.2.1"},
		{"temp.example.com", SPF_RR_TXT, "TEMPFAIL"},
	};
	struct spf_outcome o;
	struct spf_request r = req4("192.0.2.9", "user@example.com");
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "example.com", &o, NULL), SPF_PASS);
	assert_string_equal(o.mechanism, "ip4:192.0.2.0/24");
	assert_null(o.explanation);
	spf_outcome_free(&o);

	r = req4("198.51.100.1", "user@example.com");
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "example.com", &o, NULL), SPF_FAIL);
	assert_string_equal(o.mechanism, "-all");
	assert_string_equal(o.explanation,
			    "198.51.100.1 may not send for example.com (198.51.100.1, in-addr)");
	spf_outcome_free(&o);

	r = req6("2001:db8::25", "user@example.com");
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "example.com", &o, NULL), SPF_SOFTFAIL);
	assert_null(o.explanation);
	spf_outcome_free(&o);

	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "neutral.example.com", &o, NULL),
			 SPF_NEUTRAL);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "nothing.example.com", &o, NULL),
			 SPF_NEUTRAL);
	assert_null(o.mechanism);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "nospf.example.com", &o, NULL), SPF_NONE);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "nxdomain.example.com", &o, NULL), SPF_NONE);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "temp.example.com", &o, NULL),
			 SPF_TEMPERROR);
	spf_outcome_free(&o);
	/* RFC 7208 4.3: malformed domains are none without a query */
	unsigned q;
	const char *malformed[] = {"com", "a..example.com", "[192.0.2.1]", "", ".",
				   "x.a123456789012345678901234567890123456789012345678901234567890123.com"};
	for (size_t i = 0; i < ARRAY_SIZE(malformed); i++) {
		assert_int_equal(check(z, ARRAY_SIZE(z), &r, malformed[i], &o, &q), SPF_NONE);
		assert_int_equal(q, 0);
		spf_outcome_free(&o);
	}
	assert_string_equal(spf_result_name(SPF_SOFTFAIL), "softfail");
	assert_string_equal(spf_result_name(SPF_TEMPERROR), "temperror");
}

static void test_mailfrom_and_helo(void **state)
{
	static const struct rr z[] = {
		{"example.com", SPF_RR_TXT, "v=spf1 a:mx.%{d} -all"},
		{"mx.example.com", SPF_RR_A, "192.0.2.10"},
		{"mx.example.org", SPF_RR_TXT, "v=spf1 exists:%{l}.%{o}.x.example.net -all"},
		{"postmaster.mx.example.org.x.example.net", SPF_RR_A, "127.0.0.2"},
	};
	struct zone zz = {.rrs = z, .n = ARRAY_SIZE(z)};
	struct spf_resolver res = {.lookup = lookup, .ctx = &zz};
	struct spf_request r = req4("192.0.2.10", NULL);
	struct spf_outcome o;
	assert_int_equal(spf_check_mailfrom(&res, &r, "someone@example.com", &o), SPF_PASS);
	spf_outcome_free(&o);
	assert_int_equal(spf_check_mailfrom(&res, &r, "someone@EXAMPLE.COM.", &o), SPF_PASS);
	spf_outcome_free(&o);
	/* null reverse-path: the HELO identity, sender postmaster@helo */
	assert_int_equal(spf_check_mailfrom(&res, &r, "", &o), SPF_PASS);
	assert_string_equal(o.mechanism, "exists:%{l}.%{o}.x.example.net");
	spf_outcome_free(&o);
	assert_int_equal(spf_check_helo(&res, &r, &o), SPF_PASS);
	spf_outcome_free(&o);
	r.helo = "unknown.example.org";
	assert_int_equal(spf_check_helo(&res, &r, &o), SPF_NONE);
	spf_outcome_free(&o);
	r.helo = "localhost";
	assert_int_equal(spf_check_helo(&res, &r, &o), SPF_NONE); /* not multi-label */
	spf_outcome_free(&o);
}

static void test_dns_limits(void **state)
{
	static const struct rr z[] = {
		/* 10 DNS terms pass, the 11th is a permerror */
		{"ten.example.com", SPF_RR_TXT, "v=spf1 a a a a a a a a a a ip4:192.0.2.1 -all"},
		{"eleven.example.com", SPF_RR_TXT, "v=spf1 a a a a a a a a a a a ip4:192.0.2.1"},
		{"ten.example.com", SPF_RR_A, "198.51.100.1"},
		{"eleven.example.com", SPF_RR_A, "198.51.100.1"},
		/* include loop: stopped by the 10-term limit */
		{"loop1.example.com", SPF_RR_TXT, "v=spf1 include:loop2.example.com"},
		{"loop2.example.com", SPF_RR_TXT, "v=spf1 include:loop1.example.com"},
		{"self.example.com", SPF_RR_TXT, "v=spf1 redirect=self.example.com"},
		/* voids: 2 are fine, the 3rd is a permerror */
		{"void2.example.com", SPF_RR_TXT, "v=spf1 a:n1.example.com mx:n2.example.com ?all"},
		{"void3.example.com", SPF_RR_TXT,
		 "v=spf1 a:n1.example.com mx:n2.example.com exists:n3.example.com ?all"},
		/* more than 10 MX names: permerror; 10 are checked */
		{"mx11.example.com", SPF_RR_TXT, "v=spf1 mx -all"},
		{"mx10.example.com", SPF_RR_TXT, "v=spf1 mx -all"},
		{"mx11.example.com", SPF_RR_MX, "m1.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m2.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m3.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m4.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m5.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m6.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m7.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m8.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m9.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m10.example.com"},
		{"mx11.example.com", SPF_RR_MX, "m11.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m1.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m2.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m3.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m4.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m5.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m6.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m7.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m8.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m9.example.com"},
		{"mx10.example.com", SPF_RR_MX, "m10.example.com"},
		{"m10.example.com", SPF_RR_A, "192.0.2.1"},
		/* an MX host that times out is a temperror */
		{"mxtemp.example.com", SPF_RR_TXT, "v=spf1 mx -all"},
		{"mxtemp.example.com", SPF_RR_MX, "slow.example.com"},
		{"slow.example.com", SPF_RR_A, "TEMPFAIL"},
		/* a ptr whose forward lookup times out just does not match */
		{"ptr.example.com", SPF_RR_TXT, "v=spf1 ptr ~all"},
		{"1.2.0.192.in-addr.arpa", SPF_RR_PTR, "slow.ptr.example.com"},
		{"2.2.0.192.in-addr.arpa", SPF_RR_PTR, "host.ptr.example.com"},
		{"slow.ptr.example.com", SPF_RR_A, "TEMPFAIL"},
		{"host.ptr.example.com", SPF_RR_A, "192.0.2.2"},
	};
	struct spf_outcome o;
	unsigned q;
	struct spf_request r = req4("192.0.2.1", "x@example.com");
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "ten.example.com", &o, NULL), SPF_PASS);
	assert_int_equal(o.dns_mechanisms, 10);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "eleven.example.com", &o, NULL),
			 SPF_PERMERROR);
	assert_string_equal(o.reason, "more than 10 DNS-querying mechanisms");
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "loop1.example.com", &o, &q), SPF_PERMERROR);
	assert_true(q <= 12);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "self.example.com", &o, &q), SPF_PERMERROR);
	assert_true(q <= 12);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "void2.example.com", &o, NULL), SPF_NEUTRAL);
	assert_int_equal(o.void_lookups, 2);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "void3.example.com", &o, NULL),
			 SPF_PERMERROR);
	assert_string_equal(o.reason, "more than 2 void DNS lookups");
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "mx11.example.com", &o, &q), SPF_PERMERROR);
	assert_int_equal(q, 2); /* TXT, MX: no address lookups */
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "mx10.example.com", &o, &q), SPF_PASS);
	assert_int_equal(q, 12);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "mxtemp.example.com", &o, NULL),
			 SPF_TEMPERROR);
	spf_outcome_free(&o);
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "ptr.example.com", &o, NULL), SPF_SOFTFAIL);
	spf_outcome_free(&o);
	r = req4("192.0.2.2", "x@example.com");
	assert_int_equal(check(z, ARRAY_SIZE(z), &r, "ptr.example.com", &o, NULL), SPF_PASS);
	spf_outcome_free(&o);
}

/* The worst record an attacker can publish stays within a fixed number of queries. */
static void test_query_bound(void **state)
{
	static struct rr z[1 + 1 + 10 + 10];
	static char names[10][32];
	size_t n = 0;
	z[n++] = (struct rr){"evil.example.com", SPF_RR_TXT,
			     "v=spf1 mx mx mx mx mx mx mx mx mx mx mx -all exp=%{p}.example.com"};
	for (int i = 0; i < 10; i++) {
		snprintf(names[i], sizeof(names[i]), "h%d.example.com", i);
		z[n++] = (struct rr){"evil.example.com", SPF_RR_MX, names[i]};
		z[n++] = (struct rr){names[i], SPF_RR_A, "198.51.100.1"};
	}
	struct spf_outcome o;
	unsigned q;
	struct spf_request r = req4("192.0.2.1", "x@example.com");
	assert_int_equal(check(z, n, &r, "evil.example.com", &o, &q), SPF_PERMERROR);
	assert_int_equal(q, 1 + 10 * 11);
	spf_outcome_free(&o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_macro_rfc_examples),
		cmocka_unit_test(test_macro_escapes_and_exp_letters),
		cmocka_unit_test(test_macro_syntax_errors),
		cmocka_unit_test(test_macro_expansion_limit),
		cmocka_unit_test(test_record_syntax),
		cmocka_unit_test(test_record_limits),
		cmocka_unit_test(test_answer_limits),
		cmocka_unit_test(test_results_and_explanation),
		cmocka_unit_test(test_mailfrom_and_helo),
		cmocka_unit_test(test_dns_limits),
		cmocka_unit_test(test_query_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
