/*
 * DKIM key storage: create, list, states, load for the signer, delete; names
 * that would leave the directory refused; malformed metadata reported; and
 * a message signed with a stored key verifies against its stored TXT record.
 */
#include "store/dkimkeys.h"
#include "lib/xalloc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char tmpdir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/postern-dkimkeys-XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	int r = system(cmd);
	free(cmd);
	return r == 0 ? 0 : -1;
}

static void test_names(void **state)
{
	(void)state;
	assert_true(dkimkeys_name_ok("example.test", 253));
	assert_true(dkimkeys_name_ok("postern202611r", 63));
	assert_true(dkimkeys_name_ok("a-b.c1", 63));
	assert_false(dkimkeys_name_ok("", 63));
	assert_false(dkimkeys_name_ok("..", 63));
	assert_false(dkimkeys_name_ok("a..b", 63));
	assert_false(dkimkeys_name_ok(".a", 63));
	assert_false(dkimkeys_name_ok("a.", 63));
	assert_false(dkimkeys_name_ok("a/b", 63));
	assert_false(dkimkeys_name_ok("../etc", 63));
	assert_false(dkimkeys_name_ok("-a", 63));
	assert_false(dkimkeys_name_ok("a-", 63));
	assert_false(dkimkeys_name_ok("A", 63));
	assert_false(dkimkeys_name_ok("abcd", 3));
	char label[70];
	memset(label, 'a', 64);
	label[64] = '\0';
	assert_false(dkimkeys_name_ok(label, 253));
	enum dkim_keygen_alg alg;
	assert_int_equal(dkimkey_alg_parse("ed25519", &alg), 0);
	assert_int_equal(alg, DKIM_KEYGEN_ED25519);
	assert_int_equal(dkimkey_alg_parse("rsa2048", &alg), 0);
	assert_int_equal(alg, DKIM_KEYGEN_RSA2048);
	assert_int_equal(dkimkey_alg_parse("rsa", &alg), -1);
}

static int txt_from_list(void *ctx, const char *name, struct dkim_txt *out)
{
	const struct dkimkey_list *l = ctx;
	for (size_t i = 0; i < l->n; i++) {
		char *n = xasprintf("%s._domainkey.%s", l->v[i].selector, l->v[i].domain);
		bool same = strcmp(n, name) == 0;
		free(n);
		if (same) {
			dkim_txt_add(out, l->v[i].txt, strlen(l->v[i].txt));
			return DKIM_DNS_OK;
		}
	}
	return DKIM_DNS_NXDOMAIN;
}

static const char message[] = "From: a@keys.test\r\nTo: b@example.org\r\nSubject: hi\r\n"
                              "Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n\r\nbody\r\n";

/* Sign with every loaded key; verify each signature against `published`. */
static void sign_verify(const struct dkimkey_list *keys, const struct dkimkey_list *published,
                        enum dkim_result want)
{
	for (size_t i = 0; i < keys->n; i++) {
		struct dkim_sign_params p = {.domain = keys->v[i].domain,
		                             .selector = keys->v[i].selector,
		                             .key_pem = keys->v[i].pem,
		                             .timestamp = 1795387000};
		const char *err = NULL;
		struct dkim_signer *s = dkim_signer_new(&p, &err);
		assert_non_null(s);
		assert_int_equal(dkim_signer_push(s, message, strlen(message)), 0);
		char *h = dkim_signer_finish(s, &err);
		assert_non_null(h);
		dkim_signer_free(&s);

		struct dkim_key_resolver res = {txt_from_list, (void *)published};
		struct dkim_verifier *v = dkim_verifier_new(&res, 1795387100);
		assert_int_equal(dkim_verifier_push(v, h, strlen(h)), 0);
		assert_int_equal(dkim_verifier_push(v, message, strlen(message)), 0);
		const struct dkim_sig_result *r;
		assert_int_equal(dkim_verifier_finish(v, &r), 1);
		assert_int_equal(r[0].result, want);
		dkim_verifier_free(&v);
		free(h);
	}
}

static void test_create_list_rotate_delete(void **state)
{
	(void)state;
	struct dkimkey k;
	char *error = NULL;
	assert_int_equal(
	    dkimkeys_create(tmpdir, "keys.test", "r1", DKIM_KEYGEN_RSA2048, 1000, &k, &error), 0);
	assert_string_equal(k.selector, "r1");
	assert_int_equal(strncmp(k.txt, "v=DKIM1; k=rsa; p=", 18), 0);
	assert_null(k.pem);
	dkimkey_clear(&k);
	assert_int_equal(
	    dkimkeys_create(tmpdir, "keys.test", "e1", DKIM_KEYGEN_ED25519, 1001, &k, &error), 0);
	dkimkey_clear(&k);
	/* same selector again: refused; paths outside: refused */
	assert_int_equal(
	    dkimkeys_create(tmpdir, "keys.test", "e1", DKIM_KEYGEN_ED25519, 1002, &k, &error), -1);
	assert_non_null(strstr(error, "already exists"));
	xfree(&error);
	assert_int_equal(dkimkeys_create(tmpdir, "..", "x", DKIM_KEYGEN_ED25519, 1, &k, &error),
	                 -1);
	xfree(&error);
	assert_int_equal(
	    dkimkeys_create(tmpdir, "keys.test", "../x", DKIM_KEYGEN_ED25519, 1, &k, &error), -1);
	xfree(&error);

	/* the private key is 0600 in a 0700 directory */
	char *path = xasprintf("%s/dkim/keys.test/e1.pem", tmpdir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(path);
	path = xasprintf("%s/dkim/keys.test", tmpdir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	free(path);

	/* a key of another domain */
	assert_int_equal(
	    dkimkeys_create(tmpdir, "other.test", "o1", DKIM_KEYGEN_ED25519, 900, &k, &error), 0);
	dkimkey_clear(&k);

	struct dkimkey_list all;
	assert_int_equal(dkimkeys_list(tmpdir, NULL, false, false, &all, &error), 0);
	assert_int_equal(all.n, 3);
	/* sorted by domain, then age */
	assert_string_equal(all.v[0].domain, "keys.test");
	assert_string_equal(all.v[0].selector, "r1");
	assert_int_equal(all.v[0].alg, DKIM_KEYGEN_RSA2048);
	assert_int_equal(all.v[0].created, 1000);
	assert_string_equal(all.v[1].selector, "e1");
	assert_string_equal(all.v[2].domain, "other.test");
	assert_null(all.v[0].pem);

	/* the signer's view: active keys with their private keys; they verify */
	struct dkimkey_list active;
	assert_int_equal(dkimkeys_load_active(tmpdir, "keys.test", &active, &error), 0);
	assert_int_equal(active.n, 2);
	assert_non_null(active.v[0].pem);
	assert_non_null(strstr(active.v[0].pem, "PRIVATE KEY"));
	sign_verify(&active, &all, DKIM_PASS);

	/* against another key's record: fails */
	struct dkimkey_list swapped = {0};
	assert_int_equal(dkimkeys_list(tmpdir, "keys.test", false, false, &swapped, &error), 0);
	char *t = swapped.v[0].txt;
	swapped.v[0].txt = swapped.v[1].txt;
	swapped.v[1].txt = t;
	sign_verify(&active, &swapped, DKIM_PERMERROR);
	dkimkey_list_free(&swapped);
	dkimkey_list_free(&active);

	/* retire one: no longer loaded for signing, still listed */
	assert_int_equal(dkimkeys_set_state(tmpdir, "keys.test", "r1", DKIMKEY_RETIRED, &error), 0);
	assert_int_equal(dkimkeys_load_active(tmpdir, "keys.test", &active, &error), 0);
	assert_int_equal(active.n, 1);
	assert_string_equal(active.v[0].selector, "e1");
	dkimkey_list_free(&active);
	dkimkey_list_free(&all);
	assert_int_equal(dkimkeys_list(tmpdir, "keys.test", false, false, &all, &error), 0);
	assert_int_equal(all.n, 2);
	assert_int_equal(all.v[0].state, DKIMKEY_RETIRED);
	assert_int_equal(all.v[1].state, DKIMKEY_ACTIVE);
	dkimkey_list_free(&all);
	assert_int_equal(dkimkeys_set_state(tmpdir, "keys.test", "nosuch", DKIMKEY_RETIRED, &error),
	                 -1);
	xfree(&error);

	/* delete */
	assert_int_equal(dkimkeys_delete(tmpdir, "keys.test", "r1", &error), 0);
	assert_false(dkimkeys_exists(tmpdir, "keys.test", "r1"));
	assert_int_equal(dkimkeys_delete(tmpdir, "keys.test", "r1", &error), -1);
	xfree(&error);
	assert_int_equal(dkimkeys_list(tmpdir, "keys.test", false, false, &all, &error), 0);
	assert_int_equal(all.n, 1);
	dkimkey_list_free(&all);

	/* a domain without keys, and a data dir without a dkim directory */
	assert_int_equal(dkimkeys_load_active(tmpdir, "none.test", &active, &error), 0);
	assert_int_equal(active.n, 0);
	assert_int_equal(dkimkeys_list("/nonexistent-postern", NULL, false, false, &all, &error),
	                 0);
	assert_int_equal(all.n, 0);
}

static void write_meta(const char *sel, const char *text)
{
	char *path = xasprintf("%s/dkim/bad.test/%s.key", tmpdir, sel);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	free(path);
}

static void test_malformed_metadata(void **state)
{
	(void)state;
	char *dir = xasprintf("%s/dkim", tmpdir);
	mkdir(dir, 0700);
	free(dir);
	dir = xasprintf("%s/dkim/bad.test", tmpdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	free(dir);
	const char *bad[] = {
	    "algorithm=ed25519\ncreated=1\nstate=active\n",                          /* no txt */
	    "algorithm=dsa\ncreated=1\nstate=active\ntxt=v=DKIM1; p=x\n",            /* alg */
	    "algorithm=ed25519\ncreated=-1\nstate=active\ntxt=v=DKIM1; p=x\n",       /* created */
	    "algorithm=ed25519\ncreated=1\nstate=maybe\ntxt=v=DKIM1; p=x\n",         /* state */
	    "algorithm=ed25519\ncreated=1\nstate=active\ntxt=v=DKIM1; p=x\nfoo=1\n", /* unknown */
	    "algorithm=ed25519\ncreated=1\nstate=active\ntxt=hello\n",               /* txt */
	    "garbage\n",
	};
	struct dkimkey_list l;
	char *error = NULL;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_meta("s", bad[i]);
		assert_int_equal(dkimkeys_list(tmpdir, "bad.test", false, false, &l, &error), -1);
		assert_non_null(strstr(error, "malformed"));
		xfree(&error);
	}
	/* well-formed metadata without its private key: listed, but not loadable */
	write_meta("s",
	           "algorithm=ed25519\ncreated=5\nstate=active\ntxt=v=DKIM1; k=ed25519; p=x\n");
	assert_int_equal(dkimkeys_list(tmpdir, "bad.test", false, false, &l, &error), 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.v[0].created, 5);
	dkimkey_list_free(&l);
	assert_int_equal(dkimkeys_load_active(tmpdir, "bad.test", &l, &error), -1);
	xfree(&error);
	/* too large */
	char *big = xmalloc(DKIMKEYS_MAX_META + 100);
	memset(big, 'a', DKIMKEYS_MAX_META + 99);
	big[DKIMKEYS_MAX_META + 99] = '\0';
	write_meta("s", big);
	free(big);
	assert_int_equal(dkimkeys_list(tmpdir, "bad.test", false, false, &l, &error), -1);
	assert_non_null(strstr(error, "larger"));
	xfree(&error);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test_setup_teardown(test_create_list_rotate_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_metadata, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
