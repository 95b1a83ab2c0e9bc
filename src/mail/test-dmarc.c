/*
 * Unit tests for DMARC (RFC 7489): the policy record parser, the
 * organizational domain (libpsl, checked against the PSL project's own test
 * list in ../shared/vectors/psl-tests), alignment and evaluation.
 */
#include "mail/dmarc.h"
#include "lib/xalloc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

static int parse(const char *s, struct dmarc_record *r)
{
	const char *err = NULL;
	int rc = dmarc_record_parse(s, strlen(s), r, &err);
	if (rc < 0)
		assert_non_null(err);
	return rc;
}

static void test_record_parse(void **state)
{
	(void)state;
	struct dmarc_record r;
	assert_int_equal(parse("v=DMARC1; p=reject", &r), 0);
	assert_int_equal(r.p, DMARC_POLICY_REJECT);
	assert_int_equal(r.sp, DMARC_POLICY_REJECT);
	assert_false(r.has_sp);
	assert_int_equal(r.pct, 100);
	assert_int_equal(r.adkim, DMARC_ALIGN_RELAXED);
	assert_int_equal(r.aspf, DMARC_ALIGN_RELAXED);

	assert_int_equal(parse("v=DMARC1; p=quarantine; sp=none; adkim=s; aspf=s; pct=25; "
			       "rua=mailto:d@example.com; ruf=mailto:f@example.com; fo=1; ri=3600",
			       &r),
			 0);
	assert_int_equal(r.p, DMARC_POLICY_QUARANTINE);
	assert_int_equal(r.sp, DMARC_POLICY_NONE);
	assert_true(r.has_sp);
	assert_int_equal(r.adkim, DMARC_ALIGN_STRICT);
	assert_int_equal(r.aspf, DMARC_ALIGN_STRICT);
	assert_int_equal(r.pct, 25);
	assert_true(r.has_rua);

	/* WSP around '=' and ';' (RFC 7489 6.4), trailing ';', case of values */
	assert_int_equal(parse("v = DMARC1 ;  p = NONE ;", &r), 0);
	assert_int_equal(r.p, DMARC_POLICY_NONE);
	/* unknown tags are ignored */
	assert_int_equal(parse("v=DMARC1; p=reject; future=yes", &r), 0);
	/* p= missing or bad: only a valid rua= rescues the record, as p=none */
	assert_int_equal(parse("v=DMARC1; rua=mailto:x@example.com", &r), 0);
	assert_int_equal(r.p, DMARC_POLICY_NONE);
	assert_int_equal(parse("v=DMARC1; p=bogus; rua=mailto:x@example.com", &r), 0);
	assert_int_equal(r.p, DMARC_POLICY_NONE);
	assert_int_equal(parse("v=DMARC1; p=bogus", &r), -1);
	assert_int_equal(parse("v=DMARC1", &r), -1);
	/* v= must be first and exact */
	assert_int_equal(parse("p=reject; v=DMARC1", &r), -1);
	assert_int_equal(parse("v=DMARC2; p=reject", &r), -1);
	assert_int_equal(parse("v=dmarc1; p=reject", &r), -1);
	assert_int_equal(parse("v=DMARC1x; p=reject", &r), -1);
	/* bad values of known tags */
	assert_int_equal(parse("v=DMARC1; p=reject; pct=101", &r), -1);
	assert_int_equal(parse("v=DMARC1; p=reject; pct=-1", &r), -1);
	assert_int_equal(parse("v=DMARC1; p=reject; pct=", &r), -1);
	assert_int_equal(parse("v=DMARC1; p=reject; adkim=x", &r), -1);
	assert_int_equal(parse("v=DMARC1; p=reject; sp=maybe", &r), -1);
	assert_int_equal(parse("v=DMARC1; p=reject; pct=0", &r), 0);
	assert_int_equal(r.pct, 0);
	/* duplicate tags */
	assert_int_equal(parse("v=DMARC1; p=none; p=reject", &r), -1);
	/* length bound */
	char *big = xmalloc(DMARC_MAX_RECORD + 100);
	memset(big, 'a', DMARC_MAX_RECORD + 99);
	memcpy(big, "v=DMARC1; p=none; x=", 20);
	big[DMARC_MAX_RECORD + 99] = '\0';
	assert_int_equal(parse(big, &r), -1);
	free(big);
}

static void test_is_record(void **state)
{
	(void)state;
	assert_true(dmarc_is_record("v=DMARC1", 8));
	assert_true(dmarc_is_record("v=DMARC1;p=none", 15));
	assert_true(dmarc_is_record("v =\tDMARC1 ; p=none", 19));
	assert_false(dmarc_is_record("v=spf1 -all", 11));
	assert_false(dmarc_is_record("", 0));
	assert_false(dmarc_is_record("v=DMARC10", 9));
}

/* ../shared/vectors/psl-tests/test_psl.txt: checkPublicSuffix('in', 'expected'|null); */
static void test_psl_vectors(void **state)
{
	(void)state;
	const char *src = getenv("POSTERN_SOURCE_DIR");
	assert_non_null(src);
	char path[4096];
	snprintf(path, sizeof(path), "%s/../shared/vectors/psl-tests/test_psl.txt", src);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char line[1024];
	unsigned checks = 0, failures = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "checkPublicSuffix(", 18) != 0)
			continue;
		char in[512] = "", want[512] = "";
		bool in_null = false, want_null = false;
		const char *p = line + 18;
		if (strncmp(p, "null", 4) == 0) {
			in_null = true;
			p += 4;
		} else {
			assert_true(*p == '\'');
			const char *e = strchr(p + 1, '\'');
			assert_non_null(e);
			snprintf(in, sizeof(in), "%.*s", (int)(e - p - 1), p + 1);
			p = e + 1;
		}
		assert_true(p[0] == ',' && p[1] == ' ');
		p += 2;
		if (strncmp(p, "null", 4) == 0) {
			want_null = true;
		} else {
			const char *e = strchr(p + 1, '\'');
			assert_non_null(e);
			snprintf(want, sizeof(want), "%.*s", (int)(e - p - 1), p + 1);
		}
		char buf[DMARC_MAX_DOMAIN + 1];
		const char *got = dmarc_registrable_domain(in_null ? NULL : in, buf, sizeof(buf));
		checks++;
		bool ok = want_null ? got == NULL : (got != NULL && strcmp(got, want) == 0);
		if (!ok) {
			failures++;
			printf("psl: %s -> %s, expected %s\n", in_null ? "null" : in,
			       got != NULL ? got : "null", want_null ? "null" : want);
		}
	}
	fclose(f);
	printf("psl vectors: %u checks, %u failures\n", checks, failures);
	assert_true(checks >= 70);
	assert_int_equal(failures, 0);
}

static void test_org_domain_and_alignment(void **state)
{
	(void)state;
	char buf[DMARC_MAX_DOMAIN + 1];
	assert_string_equal(dmarc_org_domain("Mail.Example.COM.", buf, sizeof(buf)),
			    "example.com");
	assert_string_equal(dmarc_org_domain("a.b.example.co.uk", buf, sizeof(buf)),
			    "example.co.uk");
	/* a public suffix is its own organizational domain */
	assert_string_equal(dmarc_org_domain("co.uk", buf, sizeof(buf)), "co.uk");
	assert_string_equal(dmarc_org_domain("test", buf, sizeof(buf)), "test");
	assert_string_equal(dmarc_org_domain("auth.test", buf, sizeof(buf)), "auth.test");
	assert_null(dmarc_org_domain("", buf, sizeof(buf)));
	assert_null(dmarc_org_domain("a..b", buf, sizeof(buf)));

	assert_true(dmarc_aligned("example.com", "EXAMPLE.com", DMARC_ALIGN_STRICT));
	assert_false(dmarc_aligned("example.com", "mail.example.com", DMARC_ALIGN_STRICT));
	assert_true(dmarc_aligned("example.com", "mail.example.com", DMARC_ALIGN_RELAXED));
	assert_true(dmarc_aligned("news.example.com", "bounce.example.com", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.com", "example.net", DMARC_ALIGN_RELAXED));
	/* different registrants under one public suffix never align */
	assert_false(dmarc_aligned("a.co.uk", "b.co.uk", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("one.github.io", "two.github.io", DMARC_ALIGN_RELAXED));
	assert_false(dmarc_aligned("example.com", NULL, DMARC_ALIGN_RELAXED));
}

/* ---- evaluation over a table of TXT records ---- */

struct txt_rr {
	const char *name, *value; /* value "TEMPFAIL": a timeout */
};

struct zone {
	const struct txt_rr *rrs;
	size_t n;
	unsigned queries;
};

static int zone_txt(void *ctx, const char *name, struct dkim_txt *out)
{
	struct zone *z = ctx;
	bool exists = false;
	z->queries++;
	for (size_t i = 0; i < z->n; i++) {
		if (strcasecmp(z->rrs[i].name, name) != 0)
			continue;
		if (strcmp(z->rrs[i].value, "TEMPFAIL") == 0)
			return DKIM_DNS_TEMPFAIL;
		exists = true;
		dkim_txt_add(out, z->rrs[i].value, strlen(z->rrs[i].value));
	}
	return exists ? DKIM_DNS_OK : DKIM_DNS_NXDOMAIN;
}

static const struct txt_rr rrs[] = {
    {"_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine"},
    {"_dmarc.example.com", "some other TXT record"},
    {"_dmarc.strict.test", "v=DMARC1; p=reject; adkim=s; aspf=s"},
    {"_dmarc.half.test", "v=DMARC1; p=reject; pct=50"},
    {"_dmarc.quar.test", "v=DMARC1; p=quarantine; pct=50"},
    {"_dmarc.two.test", "v=DMARC1; p=reject"},
    {"_dmarc.two.test", "v=DMARC1; p=none"},
    {"_dmarc.bad.test", "v=DMARC1; p=sometimes"},
    {"_dmarc.temp.test", "TEMPFAIL"},
    {"_dmarc.own.example.com", "v=DMARC1; p=none"},
};

static enum dmarc_result eval(const char *from, enum spf_result spf, const char *spf_domain,
			      const char *dkim_domain, unsigned sample, struct dmarc_outcome *out)
{
	struct zone z = {rrs, sizeof(rrs) / sizeof(rrs[0]), 0};
	struct dkim_key_resolver res = {zone_txt, &z};
	struct dmarc_dkim dk[2] = {{DKIM_FAIL, "example.com"}, {DKIM_PASS, dkim_domain}};
	struct dmarc_input in = {
	    .from_domain = from,
	    .spf = spf,
	    .spf_domain = spf_domain,
	    .dkim = dk,
	    .ndkim = dkim_domain != NULL ? 2 : 1,
	    .sample = sample,
	};
	return dmarc_evaluate(&res, &in, out);
}

static void test_evaluate(void **state)
{
	(void)state;
	struct dmarc_outcome o;
	/* SPF pass, relaxed alignment with a subdomain of the envelope */
	assert_int_equal(eval("example.com", SPF_PASS, "bounce.example.com", NULL, 0, &o),
			 DMARC_PASS);
	assert_true(o.spf_aligned);
	assert_false(o.dkim_aligned);
	assert_string_equal(o.record_domain, "example.com");
	assert_int_equal(o.disposition, DMARC_POLICY_NONE);
	/* DKIM pass of an aligned domain; the failed signature of the same domain does not count */
	assert_int_equal(eval("example.com", SPF_FAIL, "example.com", "mail.example.com", 0, &o),
			 DMARC_PASS);
	assert_true(o.dkim_aligned);
	assert_false(o.spf_aligned);
	/* nothing aligned: p=reject */
	assert_int_equal(eval("example.com", SPF_PASS, "evil.test", "evil.test", 0, &o),
			 DMARC_FAIL);
	assert_int_equal(o.disposition, DMARC_POLICY_REJECT);
	assert_int_equal(o.policy, DMARC_POLICY_REJECT);
	/* softfail is not pass */
	assert_int_equal(eval("example.com", SPF_SOFTFAIL, "example.com", NULL, 0, &o),
			 DMARC_FAIL);
	/* subdomain without its own record: the org domain's sp= applies */
	assert_int_equal(eval("x.example.com", SPF_NONE, "evil.test", NULL, 0, &o), DMARC_FAIL);
	assert_int_equal(o.disposition, DMARC_POLICY_QUARANTINE);
	assert_string_equal(o.record_domain, "example.com");
	/* a subdomain with its own record uses its p= */
	assert_int_equal(eval("own.example.com", SPF_NONE, "evil.test", NULL, 0, &o), DMARC_FAIL);
	assert_int_equal(o.disposition, DMARC_POLICY_NONE);
	assert_string_equal(o.record_domain, "own.example.com");
	/* strict alignment */
	assert_int_equal(eval("strict.test", SPF_PASS, "mail.strict.test", "mail.strict.test", 0,
			      &o),
			 DMARC_FAIL);
	assert_int_equal(eval("strict.test", SPF_PASS, "STRICT.test", NULL, 0, &o), DMARC_PASS);
	/* pct: sampled in, or the next milder policy */
	assert_int_equal(eval("half.test", SPF_FAIL, "half.test", NULL, 49, &o), DMARC_FAIL);
	assert_int_equal(o.disposition, DMARC_POLICY_REJECT);
	assert_false(o.sampled_out);
	assert_int_equal(eval("half.test", SPF_FAIL, "half.test", NULL, 50, &o), DMARC_FAIL);
	assert_int_equal(o.disposition, DMARC_POLICY_QUARANTINE);
	assert_true(o.sampled_out);
	assert_int_equal(eval("quar.test", SPF_FAIL, "quar.test", NULL, 99, &o), DMARC_FAIL);
	assert_int_equal(o.disposition, DMARC_POLICY_NONE);
	/* no record anywhere */
	assert_int_equal(eval("nothing.test", SPF_FAIL, "x.test", NULL, 0, &o), DMARC_NONE);
	assert_int_equal(o.disposition, DMARC_POLICY_NONE);
	/* several records, a broken record, a DNS failure */
	assert_int_equal(eval("two.test", SPF_FAIL, "x.test", NULL, 0, &o), DMARC_PERMERROR);
	assert_int_equal(eval("bad.test", SPF_FAIL, "x.test", NULL, 0, &o), DMARC_PERMERROR);
	assert_int_equal(o.disposition, DMARC_POLICY_NONE);
	assert_int_equal(eval("temp.test", SPF_FAIL, "x.test", NULL, 0, &o), DMARC_TEMPERROR);
	assert_int_equal(o.disposition, DMARC_POLICY_NONE);
	/* no From domain */
	assert_int_equal(eval("", SPF_PASS, "x.test", NULL, 0, &o), DMARC_PERMERROR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_record_parse),
	    cmocka_unit_test(test_is_record),
	    cmocka_unit_test(test_psl_vectors),
	    cmocka_unit_test(test_org_domain_and_alignment),
	    cmocka_unit_test(test_evaluate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
