/*
 * DKIM key storage: create, list, states, load for the signer, delete; names
 * that would leave the directory refused; malformed metadata reported; and
 * a message signed with a stored key verifies against its stored TXT record.
 * The signer's key cache: hits, a key added / retired / removed / edited in
 * place seen at the next lookup, a change within a clock tick not trusted,
 * LRU eviction, and many threads looking up while keys rotate.
 */
#include "store/dkimkeys.h"
#include "lib/xalloc.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
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

/* ---- the key cache ---- */

/* Longer than the clock tick the cache distrusts (100 ms), so what was just written counts
   as settled. */
static void settle(void)
{
	struct timespec ts = {0, 150 * 1000 * 1000};
	nanosleep(&ts, NULL);
}

static void create(const char *domain, const char *sel, enum dkim_keygen_alg alg, time_t when)
{
	struct dkimkey k;
	char *error = NULL;
	assert_int_equal(dkimkeys_create(tmpdir, domain, sel, alg, when, &k, &error), 0);
	dkimkey_clear(&k);
}

static struct dkimkeys_cache_stats stats(struct dkimkeys_cache *c)
{
	struct dkimkeys_cache_stats st;
	dkimkeys_cache_get_stats(c, &st);
	return st;
}

static const struct dkimkeys_set *get(struct dkimkeys_cache *c, const char *domain)
{
	const struct dkimkeys_set *set = NULL;
	char *error = NULL;
	int r = dkimkeys_cache_get(c, tmpdir, domain, &set, &error);
	if (r < 0)
		fail_msg("dkimkeys_cache_get %s: %s", domain, error);
	assert_non_null(set);
	return set;
}

/* Sign `message` with every key of the set; each verifies against the stored TXT records. */
static void set_sign_verify(const struct dkimkeys_set *set)
{
	struct dkimkey_list published;
	char *error = NULL;
	assert_int_equal(dkimkeys_list(tmpdir, NULL, false, false, &published, &error), 0);
	struct dkim_signer *s = dkim_signer_new_unkeyed();
	assert_int_equal(dkim_signer_push(s, message, strlen(message)), 0);
	for (size_t i = 0; i < set->n; i++) {
		assert_non_null(set->v[i].key);
		struct dkim_sign_params p = {.domain = set->v[i].domain,
		                             .selector = set->v[i].selector,
		                             .key = set->v[i].key,
		                             .timestamp = 1795387000};
		const char *err = NULL;
		char *h = dkim_signer_sign(s, &p, &err);
		assert_non_null(h);
		struct dkim_key_resolver res = {txt_from_list, &published};
		struct dkim_verifier *v = dkim_verifier_new(&res, 1795387100);
		assert_int_equal(dkim_verifier_push(v, h, strlen(h)), 0);
		assert_int_equal(dkim_verifier_push(v, message, strlen(message)), 0);
		const struct dkim_sig_result *r;
		assert_int_equal(dkim_verifier_finish(v, &r), 1);
		assert_int_equal(r[0].result, DKIM_PASS);
		assert_string_equal(r[0].selector, set->v[i].selector);
		dkim_verifier_free(&v);
		free(h);
	}
	dkim_signer_free(&s);
	dkimkey_list_free(&published);
}

static void test_cache_hit(void **state)
{
	(void)state;
	create("keys.test", "r1", DKIM_KEYGEN_RSA2048, 1000);
	create("keys.test", "e1", DKIM_KEYGEN_ED25519, 1001);
	settle();
	struct dkimkeys_cache *c = dkimkeys_cache_new(0);
	const struct dkimkeys_set *a = get(c, "keys.test");
	assert_int_equal(stats(c).loads, 1);
	assert_int_equal(a->n, 2);
	assert_string_equal(a->v[0].selector, "r1"); /* by creation time */
	assert_int_equal(a->v[0].alg, DKIM_KEYGEN_RSA2048);
	assert_false(dkim_privkey_is_ed25519(a->v[0].key));
	assert_string_equal(a->v[1].selector, "e1");
	assert_true(dkim_privkey_is_ed25519(a->v[1].key));
	assert_null(a->v[1].error);
	/* unchanged: the same parsed keys, without reading the files again */
	const struct dkimkeys_set *b = get(c, "keys.test");
	assert_ptr_equal(a, b);
	struct dkimkeys_cache_stats st = stats(c);
	assert_int_equal(st.loads, 1);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.domains, 1);
	set_sign_verify(b);
	dkimkeys_set_release(&b);
	assert_null(b);
	/* the cache goes, a holder's set stays usable */
	dkimkeys_cache_free(&c);
	set_sign_verify(a);
	dkimkeys_set_release(&a);

	/* a domain without keys (no directory): an empty set, cached; its first key is seen */
	c = dkimkeys_cache_new(0);
	a = get(c, "none.test");
	assert_int_equal(a->n, 0);
	dkimkeys_set_release(&a);
	a = get(c, "none.test");
	assert_int_equal(stats(c).hits, 1);
	dkimkeys_set_release(&a);
	create("none.test", "n1", DKIM_KEYGEN_ED25519, 5);
	a = get(c, "none.test");
	assert_int_equal(a->n, 1);
	assert_string_equal(a->v[0].selector, "n1");
	dkimkeys_set_release(&a);
	/* from memory: a domain found without keys just now is known keyless, until the
	   answer is older than asked for; one with keys, or not looked up, is not */
	dkimkeys_cache_free(&c);
	c = dkimkeys_cache_new(0);
	assert_false(dkimkeys_cache_known_keyless(c, tmpdir, "other.test", 1000));
	a = get(c, "other.test");
	dkimkeys_set_release(&a);
	assert_true(dkimkeys_cache_known_keyless(c, tmpdir, "other.test", 1000));
	settle();
	assert_false(dkimkeys_cache_known_keyless(c, tmpdir, "other.test", 100));
	a = get(c, "other.test"); /* a hit refreshes it */
	dkimkeys_set_release(&a);
	assert_true(dkimkeys_cache_known_keyless(c, tmpdir, "other.test", 100));
	a = get(c, "none.test");
	dkimkeys_set_release(&a);
	assert_false(dkimkeys_cache_known_keyless(c, tmpdir, "none.test", 1000));
	/* a key made since: not seen from memory, seen by the next lookup */
	create("other.test", "o1", DKIM_KEYGEN_ED25519, 6);
	assert_true(dkimkeys_cache_known_keyless(c, tmpdir, "other.test", 1000));
	a = get(c, "other.test");
	assert_int_equal(a->n, 1);
	dkimkeys_set_release(&a);
	assert_false(dkimkeys_cache_known_keyless(c, tmpdir, "other.test", 1000));
	/* bad names are refused before they become paths */
	char *error = NULL;
	assert_int_equal(dkimkeys_cache_get(c, tmpdir, "../x", &a, &error), -1);
	assert_null(a);
	xfree(&error);
	dkimkeys_cache_free(&c);
}

static void test_cache_invalidation(void **state)
{
	(void)state;
	create("keys.test", "e1", DKIM_KEYGEN_ED25519, 1000);
	settle();
	struct dkimkeys_cache *c = dkimkeys_cache_new(0);
	const struct dkimkeys_set *s = get(c, "keys.test");
	assert_int_equal(s->n, 1);
	dkimkeys_set_release(&s);

	/* rotation as `postern dkim rotate` does it: a new key, the old one retired */
	char *error = NULL;
	create("keys.test", "e2", DKIM_KEYGEN_ED25519, 2000);
	assert_int_equal(dkimkeys_set_state(tmpdir, "keys.test", "e1", DKIMKEY_RETIRED, &error), 0);
	s = get(c, "keys.test");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->v[0].selector, "e2");
	set_sign_verify(s);
	dkimkeys_set_release(&s);
	/* written just now: not trusted within a clock tick, read again */
	uint64_t loads = stats(c).loads;
	s = get(c, "keys.test");
	assert_int_equal(stats(c).loads, loads + 1);
	dkimkeys_set_release(&s);
	settle();
	s = get(c, "keys.test"); /* settled now: read once more, then hits */
	dkimkeys_set_release(&s);
	loads = stats(c).loads;
	s = get(c, "keys.test");
	assert_int_equal(stats(c).loads, loads);
	dkimkeys_set_release(&s);

	/* a retired key's metadata edited in place (same inode, same directory mtime) */
	char *path = xasprintf("%s/dkim/keys.test/e1.key", tmpdir);
	struct stat before, after;
	assert_int_equal(stat(path, &before), 0);
	FILE *f = fopen(path, "r+");
	assert_non_null(f);
	char buf[4096];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	char *st = strstr(buf, "state=retired");
	assert_non_null(st);
	memcpy(st, "state=active\n", 13); /* one byte shorter: a newline more */
	rewind(f);
	assert_int_equal(fwrite(buf, 1, n, f), n);
	fclose(f);
	assert_int_equal(stat(path, &after), 0);
	assert_int_equal(before.st_ino, after.st_ino);
	free(path);
	s = get(c, "keys.test");
	assert_int_equal(s->n, 2);
	assert_string_equal(s->v[0].selector, "e1");
	dkimkeys_set_release(&s);

	/* removal */
	assert_int_equal(dkimkeys_delete(tmpdir, "keys.test", "e1", &error), 0);
	s = get(c, "keys.test");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->v[0].selector, "e2");
	dkimkeys_set_release(&s);
	/* the private key replaced under the same name (rename): the new one is parsed */
	char *pem = NULL, *txt = NULL;
	const char *e = NULL;
	assert_int_equal(dkim_keygen(DKIM_KEYGEN_RSA2048, &pem, &txt, &e), 0);
	char *tmp = xasprintf("%s/dkim/keys.test/new.tmp", tmpdir);
	char *dst = xasprintf("%s/dkim/keys.test/e2.pem", tmpdir);
	f = fopen(tmp, "w");
	assert_non_null(f);
	fputs(pem, f);
	fclose(f);
	assert_int_equal(rename(tmp, dst), 0);
	s = get(c, "keys.test");
	assert_int_equal(s->n, 1);
	assert_false(dkim_privkey_is_ed25519(s->v[0].key));
	dkimkeys_set_release(&s);
	/* an unparseable private key: the key is listed with the reason, not used */
	f = fopen(tmp, "w");
	assert_non_null(f);
	fputs("not a key\n", f);
	fclose(f);
	assert_int_equal(rename(tmp, dst), 0);
	s = get(c, "keys.test");
	assert_int_equal(s->n, 1);
	assert_null(s->v[0].key);
	assert_string_equal(s->v[0].error, "cannot read the private key");
	dkimkeys_set_release(&s);
	/* metadata without its private key: an error, as for dkimkeys_load_active */
	assert_int_equal(unlink(dst), 0);
	assert_int_equal(dkimkeys_cache_get(c, tmpdir, "keys.test", &s, &error), -1);
	assert_null(s);
	assert_non_null(strstr(error, "e2.pem"));
	xfree(&error);
	free(tmp);
	free(dst);
	free(pem);
	free(txt);
	/* the whole directory removed */
	char *cmd = xasprintf("rm -rf '%s/dkim/keys.test'", tmpdir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	s = get(c, "keys.test");
	assert_int_equal(s->n, 0);
	dkimkeys_set_release(&s);
	dkimkeys_cache_free(&c);
}

static void test_cache_lru(void **state)
{
	(void)state;
	create("a.test", "s", DKIM_KEYGEN_ED25519, 1);
	create("b.test", "s", DKIM_KEYGEN_ED25519, 1);
	create("c.test", "s", DKIM_KEYGEN_ED25519, 1);
	settle();
	struct dkimkeys_cache *c = dkimkeys_cache_new(2);
	const char *order[] = {"a.test", "b.test", "a.test", "c.test"};
	for (size_t i = 0; i < 4; i++) {
		const struct dkimkeys_set *s = get(c, order[i]);
		assert_int_equal(s->n, 1);
		assert_string_equal(s->v[0].domain, order[i]);
		dkimkeys_set_release(&s);
	}
	struct dkimkeys_cache_stats st = stats(c);
	assert_int_equal(st.loads, 3);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.evictions, 1); /* b, the least recently used */
	assert_int_equal(st.domains, 2);
	const struct dkimkeys_set *s = get(c, "a.test");
	dkimkeys_set_release(&s);
	assert_int_equal(stats(c).hits, 2);
	s = get(c, "b.test");
	dkimkeys_set_release(&s);
	assert_int_equal(stats(c).loads, 4);
	dkimkeys_cache_free(&c);
}

#define THREADS 6
#define ROUNDS 150

struct thread_arg {
	struct dkimkeys_cache *c;
	unsigned seed;
	int failures, transient;
};

static void *lookup_thread(void *p)
{
	struct thread_arg *a = p;
	static const char *const domains[] = {"t1.test", "t2.test", "t3.test"};
	for (int i = 0; i < ROUNDS; i++) {
		const char *d = domains[rand_r(&a->seed) % 3];
		const struct dkimkeys_set *s = NULL;
		char *error = NULL;
		if (dkimkeys_cache_get(a->c, tmpdir, d, &s, &error) < 0) {
			/* a rotation between the directory listing and a file read */
			free(error);
			continue;
		}
		/* t2 and t3 do not change. t1 keeps an active key through its rotations, but a
		   listing made while a file is added or renamed may miss it (readdir(3)): such
		   a set is read again by the next lookup, which the end of the test checks */
		if (s->n == 0 && strcmp(d, "t1.test") == 0) {
			a->transient++;
		} else if (s->n < 1 || s->v[0].key == NULL || strcmp(s->v[0].domain, d) != 0) {
			a->failures++;
		} else {
			struct dkim_signer *sg = dkim_signer_new_unkeyed();
			dkim_signer_push(sg, message, strlen(message));
			struct dkim_sign_params sp = {.domain = d,
			                              .selector = s->v[0].selector,
			                              .key = s->v[0].key,
			                              .timestamp = 1};
			const char *err = NULL;
			char *h = dkim_signer_sign(sg, &sp, &err);
			if (h == NULL)
				a->failures++;
			free(h);
			dkim_signer_free(&sg);
		}
		dkimkeys_set_release(&s);
	}
	return NULL;
}

static void test_cache_threads(void **state)
{
	(void)state;
	create("t1.test", "k0", DKIM_KEYGEN_ED25519, 1);
	create("t2.test", "k0", DKIM_KEYGEN_ED25519, 1);
	create("t3.test", "k0", DKIM_KEYGEN_ED25519, 1);
	/* two domains' room for three: evictions under contention too */
	struct dkimkeys_cache *c = dkimkeys_cache_new(2);
	pthread_t th[THREADS];
	struct thread_arg args[THREADS];
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct thread_arg){.c = c, .seed = (unsigned)i + 1};
		assert_int_equal(pthread_create(&th[i], NULL, lookup_thread, &args[i]), 0);
	}
	/* meanwhile, rotate t1's key a few times: the new key first, then the old one retired */
	char *error = NULL;
	for (int r = 1; r <= 5; r++) {
		char sel[16], old[16];
		snprintf(sel, sizeof(sel), "k%d", r);
		snprintf(old, sizeof(old), "k%d", r - 1);
		create("t1.test", sel, DKIM_KEYGEN_ED25519, 1 + r);
		assert_int_equal(
		    dkimkeys_set_state(tmpdir, "t1.test", old, DKIMKEY_RETIRED, &error), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].failures, 0);
	}
	/* after the threads: the last rotation is what the cache answers */
	const struct dkimkeys_set *s = get(c, "t1.test");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->v[0].selector, "k5");
	dkimkeys_set_release(&s);
	struct dkimkeys_cache_stats st = stats(c);
	assert_true(st.domains <= 2);
	assert_true(st.evictions > 0);
	dkimkeys_cache_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test_setup_teardown(test_create_list_rotate_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_metadata, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_hit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_invalidation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_lru, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cache_threads, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
