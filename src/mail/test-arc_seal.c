/*
 * ARC sealing: seal messages with fresh RSA and Ed25519 keys and check the
 * result with our own chain validator (arc.c), one and two hops deep;
 * tampering after the seal, a failed chain and the refusals.
 */
#include "mail/arc.h"
#include "lib/xalloc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char msg_crlf[] =
    "Received: from a.example by b.example; Mon, 23 Nov 2026 01:00:00 +0000\r\n"
    "From: Alice <alice@sender.example>\r\n"
    "To: list@forward.example\r\n"
    "Subject: ARC  sealing\r\n"
    "Date: Mon, 23 Nov 2026 01:00:00 +0000\r\n"
    "Message-ID: <seal-1@sender.example>\r\n"
    "\r\n"
    "Hello,\r\n"
    "  a body  with spaces \r\n"
    "\r\n\r\n";

static const char results[] =
    "Authentication-Results: mx.forward.example;\r\n"
    "\tspf=pass smtp.mailfrom=sender.example;\r\n"
    "\tdkim=none;\r\n\tdmarc=none header.from=sender.example;\r\n\tarc=none\r\n";

struct keys {
	char *txt[2]; /* rsa, ed25519 */
	char *pem[2];
	unsigned queries;
};

static struct keys K;

static int txt(void *ctx, const char *name, struct dkim_txt *out)
{
	struct keys *k = ctx;
	k->queries++;
	if (strcmp(name, "rsa._domainkey.forward.example") == 0)
		dkim_txt_add(out, k->txt[0], strlen(k->txt[0]));
	else if (strcmp(name, "ed._domainkey.forward.example") == 0)
		dkim_txt_add(out, k->txt[1], strlen(k->txt[1]));
	else if (strcmp(name, "rsa._domainkey.second.example") == 0)
		dkim_txt_add(out, k->txt[0], strlen(k->txt[0]));
	else
		return DKIM_DNS_NXDOMAIN;
	return DKIM_DNS_OK;
}

static const struct dkim_key_resolver resolver = {txt, &K};

static int setup(void **state)
{
	(void)state;
	const char *err = NULL;
	if (dkim_keygen(DKIM_KEYGEN_RSA2048, &K.pem[0], &K.txt[0], &err) < 0 ||
	    dkim_keygen(DKIM_KEYGEN_ED25519, &K.pem[1], &K.txt[1], &err) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < 2; i++) {
		free(K.txt[i]);
		free(K.pem[i]);
	}
	return 0;
}

/* Seal `msg` (fed in uneven chunks) as d=`domain`; returns the fields or NULL. */
static char *seal(const char *msg, const char *domain, const char *selector, int key,
                  const char *ar, enum arc_result cv, const char **err)
{
	struct arc_seal_params p = {
	    .domain = domain, .selector = selector, .key_pem = K.pem[key], .timestamp = 1795000000};
	struct arc_sealer *s = arc_sealer_new(&p, err);
	assert_non_null(s);
	size_t len = strlen(msg);
	for (size_t off = 0, step = 7; off < len; off += step, step = step * 3 % 61 + 1)
		assert_int_equal(arc_sealer_push(s, msg + off, off + step > len ? len - off : step),
		                 0);
	char *out = arc_sealer_finish(s, ar, cv, err);
	arc_sealer_free(&s);
	assert_null(s);
	return out;
}

static char *cat(const char *a, const char *b)
{
	return xasprintf("%s%s", a, b);
}

static enum arc_result verify(const char *msg, struct arc_outcome *o)
{
	struct arc_verifier *v = arc_verifier_new(&resolver, 1795000100);
	assert_int_equal(arc_verifier_push(v, msg, strlen(msg)), 0);
	enum arc_result r = arc_verifier_finish(v, o);
	arc_verifier_free(&v);
	return r;
}

static void seal_one(int key, const char *selector)
{
	const char *err = NULL;
	char *set = seal(msg_crlf, "forward.example", selector, key, results, ARC_NONE, &err);
	assert_non_null(set);
	assert_non_null(strstr(set, "ARC-Seal: i=1; "));
	assert_non_null(strstr(set, "cv=none;"));
	assert_non_null(strstr(set, "\r\nARC-Message-Signature: i=1; "));
	assert_non_null(strstr(set, "\r\nARC-Authentication-Results: i=1; mx.forward.example;\r\n"
	                            "\tspf=pass smtp.mailfrom=sender.example;"));
	assert_non_null(strstr(set, key == 0 ? "a=rsa-sha256;" : "a=ed25519-sha256;"));
	assert_null(strstr(set, " l="));
	char *msg = cat(set, msg_crlf);
	struct arc_outcome o;
	assert_int_equal(verify(msg, &o), ARC_PASS);
	assert_int_equal(o.instances, 1);
	assert_string_equal(o.domain, "forward.example");
	arc_outcome_clear(&o);

	/* a changed body or a changed Subject breaks the AMS */
	char *bad = xstrdup(msg);
	char *b = strstr(bad, "Hello");
	b[0] = 'J';
	assert_int_equal(verify(bad, &o), ARC_FAIL);
	arc_outcome_clear(&o);
	free(bad);
	bad = xstrdup(msg);
	b = strstr(bad, "ARC  sealing");
	b[0] = 'a';
	assert_int_equal(verify(bad, &o), ARC_FAIL);
	arc_outcome_clear(&o);
	free(bad);
	/* a changed AAR breaks the seal */
	bad = xstrdup(msg);
	b = strstr(bad, "dkim=none");
	memcpy(b, "dkim=pass", 9);
	assert_int_equal(verify(bad, &o), ARC_FAIL);
	assert_string_equal(o.reason, "signature does not verify");
	arc_outcome_clear(&o);
	free(bad);
	free(msg);
	free(set);
}

static void test_seal_rsa(void **state)
{
	(void)state;
	seal_one(0, "rsa");
}

static void test_seal_ed25519(void **state)
{
	(void)state;
	seal_one(1, "ed");
}

/* Two hops: the second sealer found the chain passing and seals i=2 cv=pass. */
static void test_seal_two_hops(void **state)
{
	(void)state;
	const char *err = NULL;
	char *set1 = seal(msg_crlf, "forward.example", "ed", 1, results, ARC_NONE, &err);
	assert_non_null(set1);
	char *hop1 = cat(set1, msg_crlf);
	/* the second hop adds its own trace and results above; only the AR value is sealed */
	char *hop1b = cat("Received: from forward.example by second.example; x\r\n", hop1);
	char *set2 = seal(hop1b, "second.example", "rsa", 0,
	                  "mx.second.example; arc=pass (i=1 d=forward.example)", ARC_PASS, &err);
	assert_non_null(set2);
	assert_non_null(strstr(set2, "ARC-Seal: i=2; a=rsa-sha256; cv=pass;"));
	assert_non_null(
	    strstr(set2, "ARC-Authentication-Results: i=2; mx.second.example; arc=pass"));
	char *hop2 = cat(set2, hop1b);
	struct arc_outcome o;
	assert_int_equal(verify(hop2, &o), ARC_PASS);
	assert_int_equal(o.instances, 2);
	assert_string_equal(o.domain, "second.example");
	arc_outcome_clear(&o);

	/* a chain the second hop found failed is sealed cv=fail, and then stays failed */
	char *set3 =
	    seal(hop1b, "second.example", "rsa", 0, "mx.second.example; arc=fail", ARC_FAIL, &err);
	assert_non_null(set3);
	assert_non_null(strstr(set3, "ARC-Seal: i=2; a=rsa-sha256; cv=fail;"));
	char *hop3 = cat(set3, hop1b);
	assert_int_equal(verify(hop3, &o), ARC_FAIL);
	arc_outcome_clear(&o);
	/* nothing is added after a cv=fail seal */
	assert_null(seal(hop3, "forward.example", "rsa", 0, results, ARC_FAIL, &err));
	assert_string_equal(err, "the newest ARC-Seal already says cv=fail");
	free(set1);
	free(hop1);
	free(hop1b);
	free(set2);
	free(hop2);
	free(set3);
	free(hop3);
}

/* LF line ends in, the same seal as CRLF (the verifier sees the CRLF form). */
static void test_seal_lf_input(void **state)
{
	(void)state;
	char *lf = xstrdup(msg_crlf);
	size_t o = 0;
	for (size_t i = 0; lf[i] != '\0'; i++)
		if (lf[i] != '\r')
			lf[o++] = lf[i];
	lf[o] = '\0';
	const char *err = NULL;
	char *set = seal(lf, "forward.example", "rsa", 0, results, ARC_NONE, &err);
	assert_non_null(set);
	char *msg = cat(set, msg_crlf);
	struct arc_outcome out;
	assert_int_equal(verify(msg, &out), ARC_PASS);
	arc_outcome_clear(&out);
	free(msg);
	free(set);
	free(lf);
}

static void test_refusals(void **state)
{
	(void)state;
	const char *err = NULL;
	assert_null(seal(msg_crlf, "forward.example", "rsa", 0, NULL, ARC_NONE, &err));
	assert_string_equal(err, "no authentication results to seal");
	assert_null(seal(msg_crlf, "forward.example", "rsa", 0, "Authentication-Results: \r\n",
	                 ARC_NONE, &err));
	struct arc_seal_params p = {.domain = "bad domain", .selector = "s", .key_pem = K.pem[0]};
	assert_null(arc_sealer_new(&p, &err));
	p.domain = "forward.example";
	p.key_pem = "not a key";
	assert_null(arc_sealer_new(&p, &err));
	assert_string_equal(err, "cannot read the private key");

	/* instance 50 already there: no room for another set */
	char *m50 =
	    xasprintf("ARC-Seal: i=50; a=rsa-sha256; cv=pass; d=x.example; s=s; b=AA==\r\n"
	              "ARC-Message-Signature: i=50; a=rsa-sha256; d=x.example; s=s; h=from; "
	              "bh=AA==; b=AA==\r\n"
	              "ARC-Authentication-Results: i=50; x.example; none\r\n%s",
	              msg_crlf);
	assert_null(seal(m50, "forward.example", "rsa", 0, results, ARC_PASS, &err));
	assert_string_equal(err, "the chain already has the most ARC sets allowed");
	free(m50);

	/* an incomplete set (or anything we did not validate) is sealed cv=fail */
	char *inc = xasprintf("ARC-Authentication-Results: i=1; x.example; none\r\n%s", msg_crlf);
	char *set = seal(inc, "forward.example", "rsa", 0, results, ARC_PASS, &err);
	assert_non_null(set);
	assert_non_null(strstr(set, "ARC-Seal: i=2; a=rsa-sha256; cv=fail;"));
	free(set);
	free(inc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_seal_rsa),      cmocka_unit_test(test_seal_ed25519),
	    cmocka_unit_test(test_seal_two_hops), cmocka_unit_test(test_seal_lf_input),
	    cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
