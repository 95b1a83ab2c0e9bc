/*
 * The Mail::DKIM verifier corpus (../shared/vectors/dkim-mail-dkim-corpus):
 * every message against EXPECTED.tsv, keys from FAKE_DNS.dat.
 *
 * Mail::DKIM's "pass" is our pass, "fail" our fail (or neutral when the key
 * is in testing mode, t=y: RFC 6376 3.6.1 says such a failure must not count
 * against the message), "invalid" our permerror or temperror. The overall
 * result of a message is its best signature's, as Mail::DKIM reports it.
 *
 * Two profiles:
 *   compat  - RSA keys from 512 bits and rsa-sha1 counted as pass: the
 *             parsing, canonicalization and cryptography against Mail::DKIM.
 *   default - what Postern does (RFC 8301): keys under 1024 bits are
 *             permerror, a valid rsa-sha1 signature is "policy".
 * Every deviation is listed below with its reason; the test fails when a
 * message deviates in a way not listed, or a listed deviation disappears.
 */
#include "mail/dkim.h"
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

#define NOW ((time_t)1732000000) /* fixed: 2024-11-19 */

static char *corpus_dir;

static char *slurp(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		fail_msg("cannot open %s", path);
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	do {
		buf = xgrow(buf, &cap, len + 4097, 1);
		n = fread(buf + len, 1, 4096, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	*len_r = len;
	return buf;
}

/* ---- FAKE_DNS.dat: "<name> <TXT value>" / NXDOMAIN / ~~error~~ ---- */

struct zone {
	char **names, **values;
	size_t n, cap;
};

static struct zone zone;

static void zone_load(const char *path)
{
	size_t len;
	char *data = slurp(path, &len);
	for (char *line = strtok(data, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		size_t l = strlen(line);
		while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t'))
			line[--l] = '\0';
		if (l == 0 || line[0] == '#' || line[0] == ';')
			continue;
		char *sp = line + strcspn(line, " \t");
		if (*sp == '\0')
			continue;
		*sp++ = '\0';
		sp += strspn(sp, " \t");
		size_t cap = zone.cap;
		zone.names = xgrow(zone.names, &cap, zone.n + 1, sizeof(char *));
		cap = zone.cap;
		zone.values = xgrow(zone.values, &cap, zone.n + 1, sizeof(char *));
		zone.cap = cap;
		zone.names[zone.n] = xstrdup(line);
		/* a quoted value is a TXT string: "" is an empty record */
		size_t vl = strlen(sp);
		if (vl >= 2 && sp[0] == '"' && sp[vl - 1] == '"')
			zone.values[zone.n] = xstrndup(sp + 1, vl - 2);
		else
			zone.values[zone.n] = xstrdup(sp);
		zone.n++;
	}
	free(data);
}

static int zone_txt(void *ctx, const char *name, struct dkim_txt *out)
{
	for (size_t i = 0; i < zone.n; i++) {
		if (strcasecmp(zone.names[i], name) != 0)
			continue;
		const char *v = zone.values[i];
		if (strcmp(v, "NXDOMAIN") == 0)
			return DKIM_DNS_NXDOMAIN;
		if (strncmp(v, "~~", 2) == 0)
			return DKIM_DNS_TEMPFAIL;
		dkim_txt_add(out, v, strlen(v));
		return DKIM_DNS_OK;
	}
	return DKIM_DNS_NXDOMAIN;
}

/* ---- mapping ---- */

static const char *mdkim_name(const struct dkim_sig_result *r, bool compat)
{
	switch (r->result) {
	case DKIM_PASS:
		return "pass";
	case DKIM_POLICY:
		return compat ? "pass" : "policy";
	case DKIM_FAIL:
		return "fail";
	case DKIM_NEUTRAL:
		return r->testing ? "fail" : "neutral";
	case DKIM_PERMERROR:
	case DKIM_TEMPERROR:
		return "invalid";
	case DKIM_NONE:
		return "none";
	}
	return "?";
}

static int rank(const char *r)
{
	static const char *const order[] = {"pass", "policy", "fail", "neutral", "invalid", "none"};
	for (size_t i = 0; i < ARRAY_SIZE(order); i++)
		if (strcmp(order[i], r) == 0)
			return (int)i;
	return 99;
}

/*
 * Deviations from EXPECTED.tsv. `got` is our overall result, `why` the reason
 * we report for the deciding signature (checked too, so a deviation cannot
 * hide a different bug).
 */
struct deviation {
	const char *file;
	const char *got;
	const char *why;
	const char *justification;
};

#define DK "DomainKeys (RFC 4870, historic) only: no DKIM-Signature field, nothing to verify"
#define DRAFT                                                                                      \
	"pre-RFC 4871 draft signature without v=: RFC 6376 6.1.1 requires PERMFAIL for a missing " \
	"required tag"
#define V05 "draft signature with v=0.5: RFC 6376 6.1.1 requires PERMFAIL for another version"

static const struct deviation deviations[] = {
    {"good_dk_gmail.txt", "none", NULL, DK},
    {"good_dk_yahoo.txt", "none", NULL, DK},
    {"good_dk_1.txt", "none", NULL, DK},
    {"good_dk_2.txt", "none", NULL, DK},
    {"good_dk_3.txt", "none", NULL, DK},
    {"good_dk_4.txt", "none", NULL, DK},
    {"good_dk_5.txt", "none", NULL, DK},
    {"good_dk_6.txt", "none", NULL, DK},
    {"good_dk_7.txt", "none", NULL, DK},
    {"dk_headers_1.txt", "none", NULL, DK},
    {"dk_headers_2.txt", "none", NULL, DK},
    {"bad_dk_1.txt", "none", NULL, DK},
    {"bad_dk_2.txt", "none", NULL, DK},
    {"bad_dk_3.txt", "none", NULL, DK},
    {"bad_dk_4.txt", "none", NULL, DK},
    {"bad_dk_5.txt", "none", NULL, DK},
    {"dk_multiple_1.txt", "none", NULL, DK},
    {"good_ietf00_1.txt", "invalid", "missing v= tag", DRAFT},
    {"good_ietf00_2.txt", "invalid", "missing v= tag", DRAFT},
    {"good_ietf00_3.txt", "invalid", "missing v= tag", DRAFT},
    {"good_ietf00_4.txt", "invalid", "missing v= tag", DRAFT},
    {"good_ietf00_5.txt", "invalid", "missing v= tag", DRAFT},
    {"mine_ietf01_1.txt", "invalid", "missing v= tag", DRAFT},
    {"mine_ietf01_2.txt", "invalid", "missing v= tag", DRAFT},
    {"mine_ietf01_3.txt", "invalid", "missing v= tag", DRAFT},
    {"mine_ietf01_4.txt", "invalid", "missing v= tag", DRAFT},
    {"good_ietf01_1.txt", "invalid", "missing v= tag", DRAFT},
    {"good_ietf01_2.txt", "invalid", "missing v= tag", DRAFT},
    {"bad_ietf01_1.txt", "invalid", "missing v= tag", DRAFT},
    {"bad_ietf01_2.txt", "invalid", "missing v= tag", DRAFT},
    {"bad_ietf01_3.txt", "invalid", "missing v= tag", DRAFT},
    {"bad_1.txt", "invalid", "missing v= tag", DRAFT},
    {"multiple_1.txt", "invalid", "missing v= tag", DRAFT},
    {"mine_ietf05_1.txt", "invalid", "unsupported version (v=)", V05},
    {"no_body_1.txt", "invalid", "unsupported version (v=)", V05},
    {"no_body_2.txt", "invalid", "unsupported version (v=)", V05},
    {"no_body_3.txt", "invalid", "unsupported version (v=)", V05},
};

/*
 * In the default profile two RFC 8301 rules change results on top of the
 * deviations above: a key under 1024 bits is permerror (most of this
 * corpus uses 512- and 768-bit keys), and a valid rsa-sha1 signature is
 * reported as "policy", never "pass".
 */
static bool rfc8301_deviation(const char *got, const char *why)
{
	return (strcmp(got, "invalid") == 0 && why != NULL &&
	        strcmp(why, "RSA key too short") == 0) ||
	       (strcmp(got, "policy") == 0 && why != NULL &&
	        strcmp(why, "rsa-sha1 is not accepted (RFC 8301)") == 0);
}

static const struct deviation *find_deviation(const char *file)
{
	for (size_t i = 0; i < ARRAY_SIZE(deviations); i++)
		if (strcmp(deviations[i].file, file) == 0)
			return &deviations[i];
	return NULL;
}

static void run_corpus(bool compat)
{
	char *tsvp = xasprintf("%s/EXPECTED.tsv", corpus_dir);
	size_t len;
	char *tsv = slurp(tsvp, &len);
	struct dkim_key_resolver res = {.txt = zone_txt};
	size_t total = 0, match = 0, deviated = 0, rfc8301 = 0, unexpected = 0;
	char *save = NULL;

	for (char *line = strtok_r(tsv, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#')
			continue;
		char *file = line, *exp = strchr(line, '\t');
		if (exp == NULL)
			continue;
		*exp++ = '\0';
		char *tab = strchr(exp, '\t');
		if (tab != NULL)
			*tab = '\0';
		char *mp = xasprintf("%s/corpus/%s", corpus_dir, file);
		size_t ml;
		char *msg = slurp(mp, &ml);
		free(mp);
		struct dkim_verifier *v = dkim_verifier_new(&res, NOW);
		if (compat)
			dkim_verifier_set_min_rsa_bits(v, 512);
		/* stream in odd-sized chunks, as from a socket */
		for (size_t i = 0; i < ml; i += 509)
			dkim_verifier_push(v, msg + i, ml - i < 509 ? ml - i : 509);
		const struct dkim_sig_result *r;
		size_t n = dkim_verifier_finish(v, &r);
		const char *got = "none", *why = NULL;
		char detail[1024] = "";
		size_t dl = 0;
		for (size_t i = 0; i < n; i++) {
			const char *g = mdkim_name(&r[i], compat);
			if (rank(g) < rank(got)) {
				got = g;
				why = r[i].reason;
			}
			dl += (size_t)snprintf(detail + dl, sizeof(detail) - dl, " [%s %s: %s]",
			                       r[i].algorithm ? r[i].algorithm : "-",
			                       dkim_result_name(r[i].result), r[i].reason);
			if (dl >= sizeof(detail))
				dl = sizeof(detail) - 1;
		}
		/* multiple_2.txt: expected invalid / pass / fail per signature (SOURCE.md);
		   its fourth field, "DKIM-Signature: synerr", is invalid too */
		if (strcmp(file, "multiple_2.txt") == 0) {
			assert_int_equal(n, 4);
			assert_string_equal(mdkim_name(&r[3], compat), "invalid");
			assert_string_equal(mdkim_name(&r[0], compat), "invalid");
			assert_string_equal(mdkim_name(&r[1], compat), compat ? "pass" : "policy");
			assert_string_equal(mdkim_name(&r[2], compat), "fail");
		}
		total++;
		const struct deviation *d = find_deviation(file);
		if (d == NULL && strcmp(got, exp) == 0) {
			match++;
		} else if (d != NULL && strcmp(got, d->got) == 0 &&
		           (d->why == NULL || (why != NULL && strcmp(why, d->why) == 0))) {
			deviated++;
		} else if (d == NULL && !compat && rfc8301_deviation(got, why)) {
			rfc8301++;
		} else {
			unexpected++;
			printf("UNEXPECTED %s %s: expected %s, got %s%s\n",
			       compat ? "compat" : "default", file, exp, got, detail);
		}
		dkim_verifier_free(&v);
		free(msg);
	}
	printf("Mail::DKIM corpus, %s profile: %zu/%zu as expected, %zu pre-RFC 6376 formats, "
	       "%zu changed by RFC 8301, %zu unexpected\n",
	       compat ? "compat" : "default", match, total, deviated, rfc8301, unexpected);
	assert_int_equal(total, 79);
	assert_int_equal(unexpected, 0);
	free(tsv);
	free(tsvp);
}

static void test_corpus_compat(void **state)
{
	run_corpus(true);
}

static void test_corpus_default(void **state)
{
	run_corpus(false);
}

int main(void)
{
	const char *src = getenv("POSTERN_SOURCE_DIR");
	corpus_dir = xasprintf("%s/../shared/vectors/dkim-mail-dkim-corpus", src ? src : ".");
	char *dns = xasprintf("%s/FAKE_DNS.dat", corpus_dir);
	zone_load(dns);
	free(dns);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_corpus_compat),
	    cmocka_unit_test(test_corpus_default),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	for (size_t i = 0; i < zone.n; i++) {
		free(zone.names[i]);
		free(zone.values[i]);
	}
	free(zone.names);
	free(zone.values);
	free(corpus_dir);
	return rc;
}
