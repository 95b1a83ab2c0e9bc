/* The directory: admin rules, resolution, authentication, sender ownership, listings. */
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store/directory.h"
#include "store/maildir.h"
#include "store/password.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char tmpdir[] = "/tmp/postern-test-directory-XXXXXX";
static struct directory *dir;
static char *hash_alice;

#define OK(call)                                                                                   \
	do {                                                                                       \
		char *error_ = NULL;                                                               \
		if ((call) != 0)                                                                   \
			fail_msg("%s: %s", #call, error_ != NULL ? error_ : "?");                  \
		free(error_);                                                                      \
	} while (0)

/* The call must fail with an error message (in *ep) containing `needle`. */
static char *e;
static void expect_error(int r, char **ep, const char *needle)
{
	char *error = *ep;
	if (r != -1)
		fail_msg("expected failure (%s)", needle);
	if (error == NULL || strstr(error, needle) == NULL)
		fail_msg("error '%s' does not contain '%s'", error != NULL ? error : "(null)",
			 needle);
	free(error);
	*ep = NULL;
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* Resolve and return accounts and externals as one sorted, comma-joined string. */
static char *resolve_str(const char *address, enum resolve_result *res_r)
{
	struct resolved r;
	*res_r = directory_resolve(dir, address, &r);
	char *out = xstrdup("");
	for (size_t i = 0; i < r.naccounts; i++) {
		char *n = xasprintf("%s%s%s", out, *out ? "," : "", r.accounts[i].address);
		free(out);
		out = n;
		char *want = maildir_path(tmpdir, r.accounts[i].address);
		assert_string_equal(r.accounts[i].maildir, want);
		free(want);
	}
	for (size_t i = 0; i < r.nexternal; i++) {
		char *n = xasprintf("%s%sext:%s", out, *out ? "," : "", r.external[i]);
		free(out);
		out = n;
	}
	resolved_free(&r);
	return out;
}

static void expect_resolve(const char *address, enum resolve_result want, const char *targets)
{
	enum resolve_result res;
	char *got = resolve_str(address, &res);
	if (res != want)
		fail_msg("resolve %s: result %d, want %d (%s)", address, res, want, got);
	if (targets != NULL && strcmp(got, targets) != 0)
		fail_msg("resolve %s: got '%s', want '%s'", address, got, targets);
	free(got);
}

static void test_domains(void **state)
{
	OK(directory_domain_add(dir, "Example.TEST", &error_));
	expect_error(directory_domain_add(dir, "example.test", &e), &e, "already exists");
	expect_error(directory_domain_add(dir, "bad_domain.test", &e), &e, "invalid domain");
	expect_error(directory_domain_add(dir, "-x.test", &e), &e, "invalid domain");
	expect_error(directory_domain_add(dir, "a..test", &e), &e, "empty label");
	expect_error(directory_domain_add(dir, "", &e), &e, "invalid domain");
	OK(directory_domain_add(dir, "other.test", &error_));
	OK(directory_domain_alias(dir, "alias.test", "example.test", &error_));
	expect_error(directory_domain_alias(dir, "alias2.test", "nowhere.test", &e), &e,
		     "not a local domain");
	expect_error(directory_domain_alias(dir, "other.test", "example.test", &e), &e,
		     "both local and an alias");
	expect_error(directory_domain_add(dir, "alias.test", &e), &e, "alias domain");
	expect_error(directory_domain_alias(dir, "x.test", "alias.test", &e), &e,
		     "itself an alias domain");
	assert_int_equal(directory_is_local_domain(dir, "EXAMPLE.test"), 1);
	assert_int_equal(directory_is_local_domain(dir, "alias.test"), 1);
	assert_int_equal(directory_is_local_domain(dir, "nowhere.test"), 0);
	expect_error(directory_domain_del(dir, "nowhere.test", &e), &e, "no such domain");
	expect_error(directory_domain_del(dir, "example.test", &e), &e, "alias domain(s) alias.test");
}

static void test_users(void **state)
{
	OK(directory_user_add(dir, "Alice@Example.test", hash_alice, "Alice A.", 0, &error_));
	char *path = maildir_path(tmpdir, "alice@example.test");
	char *cur = xasprintf("%s/.Sent/cur", path);
	assert_true(exists(cur));
	free(cur);
	expect_error(directory_user_add(dir, "alice@example.test", hash_alice, NULL, 0, &e), &e,
		     "already exists");
	expect_error(directory_user_add(dir, "bob@nowhere.test", hash_alice, NULL, 0, &e), &e,
		     "not a local domain");
	expect_error(directory_user_add(dir, "bob@alias.test", hash_alice, NULL, 0, &e), &e,
		     "alias domain");
	expect_error(directory_user_add(dir, "../x@example.test", hash_alice, NULL, 0, &e), &e,
		     "invalid address");
	expect_error(directory_user_add(dir, "a/b@example.test", hash_alice, NULL, 0, &e), &e,
		     "invalid address");
	expect_error(directory_user_add(dir, "noat", hash_alice, NULL, 0, &e), &e,
		     "invalid address");
	expect_error(directory_user_add(dir, "bob@example.test", "", NULL, 0, &e), &e,
		     "password hash");
	OK(directory_user_add(dir, "bob@example.test", hash_alice, NULL, 1024 * 1024, &error_));
	OK(directory_user_add(dir, "carol@other.test", hash_alice, "Carol", 0, &error_));
	OK(directory_user_add(dir, "postmaster@other.test", hash_alice, NULL, 0, &error_));
	OK(directory_user_quota(dir, "bob@example.test", 2048, &error_));
	expect_error(directory_user_quota(dir, "nobody@example.test", 1, &e), &e, "no such account");
	expect_error(directory_domain_del(dir, "other.test", &e), &e, "still has 2 account(s)");

	/* delete: row and Maildir go */
	OK(directory_user_add(dir, "temp@example.test", hash_alice, NULL, 0, &error_));
	char *tp = maildir_path(tmpdir, "temp@example.test");
	assert_true(exists(tp));
	OK(directory_user_del(dir, "TEMP@example.test", &error_));
	assert_false(exists(tp));
	expect_error(directory_user_del(dir, "temp@example.test", &e), &e, "no such account");
	free(tp);
	free(path);
}

static void test_aliases(void **state)
{
	OK(directory_alias_add(dir, "info@example.test", "alice@example.test", &error_));
	OK(directory_alias_add(dir, "team@example.test",
			       "alice@example.test, bob@example.test,Alice@EXAMPLE.test "
			       "Friend@Remote.test",
			       &error_));
	OK(directory_alias_add(dir, "nested@example.test", "team@example.test info@example.test",
			       &error_));
	OK(directory_alias_add(dir, "@other.test", "postmaster@other.test", &error_));
	expect_error(directory_alias_add(dir, "alice@example.test", "bob@example.test", &e), &e,
		     "cannot share");
	expect_error(directory_user_add(dir, "info@example.test", hash_alice, NULL, 0, &e), &e,
		     "cannot share");
	expect_error(directory_alias_add(dir, "x@example.test", "ghost@example.test", &e), &e,
		     "no such account or alias");
	expect_error(directory_alias_add(dir, "x@example.test", "x@example.test", &e), &e,
		     "cannot target itself");
	expect_error(directory_alias_add(dir, "x@example.test", "", &e), &e, "at least one target");
	expect_error(directory_alias_add(dir, "x@alias.test", "bob@example.test", &e), &e,
		     "alias domain");
	expect_error(directory_alias_add(dir, "info@example.test", "bob@example.test", &e), &e,
		     "already exists");
	/* a -> b exists via loop1 -> loop2; adding loop2 -> loop1 must be refused */
	OK(directory_alias_add(dir, "loop2@example.test", "bob@example.test", &error_));
	OK(directory_alias_add(dir, "loop1@example.test", "loop2@example.test", &error_));
	OK(directory_alias_del(dir, "loop2@example.test", &error_));
	expect_error(directory_alias_add(dir, "loop2@example.test", "loop1@example.test", &e), &e,
		     "loop");
	expect_error(directory_alias_del(dir, "loop2@example.test", &e), &e, "no such alias");
	OK(directory_alias_del(dir, "loop1@example.test", &error_));
}

static void test_resolve(void **state)
{
	expect_resolve("alice@example.test", RESOLVE_OK, "alice@example.test");
	expect_resolve("ALICE@Example.Test", RESOLVE_OK, "alice@example.test");
	expect_resolve("info@example.test", RESOLVE_OK, "alice@example.test");
	/* list: each account once, external kept with its local part's case */
	expect_resolve("team@example.test", RESOLVE_OK,
		       "alice@example.test,bob@example.test,ext:Friend@remote.test");
	expect_resolve("nested@example.test", RESOLVE_OK,
		       "alice@example.test,bob@example.test,ext:Friend@remote.test");
	/* plus-addressing, on accounts and aliases */
	expect_resolve("alice+news@example.test", RESOLVE_OK, "alice@example.test");
	expect_resolve("info+x@example.test", RESOLVE_OK, "alice@example.test");
	/* domain alias */
	expect_resolve("bob@alias.test", RESOLVE_OK, "bob@example.test");
	expect_resolve("team+x@alias.test", RESOLVE_OK,
		       "alice@example.test,bob@example.test,ext:Friend@remote.test");
	/* catch-all: only when nothing else matches */
	expect_resolve("carol@other.test", RESOLVE_OK, "carol@other.test");
	expect_resolve("anything@other.test", RESOLVE_OK, "postmaster@other.test");
	expect_resolve("nobody@example.test", RESOLVE_UNKNOWN_USER, NULL);
	expect_resolve("+x@example.test", RESOLVE_UNKNOWN_USER, NULL);
	expect_resolve("someone@remote.test", RESOLVE_NOT_LOCAL, NULL);
	expect_resolve("garbage", RESOLVE_UNKNOWN_USER, NULL);

	/* loops that reached the database anyway (e.g. edited by hand) are detected */
	char *path = xasprintf("%s/postern.db", tmpdir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db,
				      "INSERT INTO aliases(address, domain, targets, created) VALUES"
				      " ('l1@example.test', 'example.test', 'l2@example.test', 0),"
				      " ('l2@example.test', 'example.test', 'alice@example.test,"
				      "l1@alias.test', 0),"
				      " ('self@example.test', 'example.test', 'self+x@example.test', 0),"
				      " ('@example.test', 'example.test', 'nobody2@example.test', 0)",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	expect_resolve("l1@example.test", RESOLVE_LOOP, NULL);
	expect_resolve("self@example.test", RESOLVE_LOOP, NULL);
	/* a catch-all pointing at an address only the catch-all could resolve */
	expect_resolve("unknown@example.test", RESOLVE_LOOP, NULL);
	/* depth limit: a chain of 20 aliases */
	for (int i = 0; i < 20; i++) {
		char *sql = xasprintf("INSERT INTO aliases(address, domain, targets, created) VALUES"
				      " ('d%d@example.test', 'example.test', '%s%d@example.test', 0)",
				      i, i == 19 ? "alice" : "d", i + 1);
		if (i == 19) {
			free(sql);
			sql = xasprintf("INSERT INTO aliases(address, domain, targets, created) "
					"VALUES ('d19@example.test', 'example.test', "
					"'alice@example.test', 0)");
		}
		assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
		free(sql);
	}
	expect_resolve("d10@example.test", RESOLVE_OK, "alice@example.test");
	expect_resolve("d0@example.test", RESOLVE_LOOP, NULL);
	assert_int_equal(sqlite3_exec(db,
				      "DELETE FROM aliases WHERE address IN ('l1@example.test',"
				      " 'l2@example.test', 'self@example.test', '@example.test')"
				      " OR address LIKE 'd%@example.test'",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	free(path);
	expect_resolve("unknown@example.test", RESOLVE_UNKNOWN_USER, NULL);
}

static void test_auth(void **state)
{
	struct account a;
	assert_int_equal(directory_authenticate(dir, "alice@example.test", "Correct horse 1", NULL,
						&a),
			 1);
	assert_string_equal(a.address, "alice@example.test");
	assert_true(a.id > 0);
	account_free_fields(&a);
	assert_int_equal(directory_authenticate(dir, "Alice@ALIAS.test", "Correct horse 1", NULL,
						&a),
			 1);
	account_free_fields(&a);
	assert_int_equal(directory_authenticate(dir, "alice", "Correct horse 1", "example.test",
						&a),
			 1);
	account_free_fields(&a);
	assert_int_equal(directory_authenticate(dir, "alice", "Correct horse 1", NULL, &a), 0);
	assert_int_equal(directory_authenticate(dir, "alice@example.test", "wrong", NULL, &a), 0);
	assert_null(a.address);
	assert_int_equal(directory_authenticate(dir, "ghost@example.test", "x", NULL, &a), 0);
	assert_int_equal(directory_authenticate(dir, "info@example.test", "Correct horse 1", NULL,
						&a),
			 0); /* an alias is not a login */

	/* passwd */
	char *h = password_hash("new secret");
	OK(directory_user_passwd(dir, "alice@example.test", h, &error_));
	free(h);
	assert_int_equal(directory_authenticate(dir, "alice@example.test", "new secret", NULL, &a),
			 1);
	account_free_fields(&a);
	assert_int_equal(directory_authenticate(dir, "alice@example.test", "Correct horse 1", NULL,
						&a),
			 0);
	OK(directory_user_passwd(dir, "alice@example.test", hash_alice, &error_));
}

static void test_sender_owned(void **state)
{
	const char *alice = "alice@example.test";
	assert_int_equal(directory_sender_owned(dir, alice, "alice@example.test"), 1);
	assert_int_equal(directory_sender_owned(dir, alice, "ALICE@example.test"), 1);
	assert_int_equal(directory_sender_owned(dir, alice, "alice+tag@example.test"), 1);
	assert_int_equal(directory_sender_owned(dir, alice, "alice@alias.test"), 1);
	assert_int_equal(directory_sender_owned(dir, alice, "info@example.test"), 1);
	assert_int_equal(directory_sender_owned(dir, alice, "team@example.test"), 1);
	assert_int_equal(directory_sender_owned(dir, alice, "bob@example.test"), 0);
	assert_int_equal(directory_sender_owned(dir, alice, "alice@remote.test"), 0);
	assert_int_equal(directory_sender_owned(dir, alice, ""), 0);
	/* the catch-all delivers to postmaster, but does not let it send as anyone */
	assert_int_equal(directory_sender_owned(dir, "postmaster@other.test", "x@other.test"), 0);
	assert_int_equal(directory_sender_owned(dir, "carol@other.test", "carol@other.test"), 1);
}

static void test_usage(void **state)
{
	struct resolved r;
	assert_int_equal(directory_resolve(dir, "bob@example.test", &r), RESOLVE_OK);
	int64_t id = r.accounts[0].id;
	assert_int_equal(r.accounts[0].quota, 2048);
	assert_int_equal(r.accounts[0].used, 0);
	resolved_free(&r);
	assert_int_equal(directory_usage_add(dir, id, 1500), 0);
	assert_int_equal(directory_usage_add(dir, id, -500), 0);
	assert_int_equal(directory_resolve(dir, "bob@example.test", &r), RESOLVE_OK);
	assert_int_equal(r.accounts[0].used, 1000);
	resolved_free(&r);
	assert_int_equal(directory_usage_add(dir, id, -5000), 0);
	assert_int_equal(directory_resolve(dir, "bob@example.test", &r), RESOLVE_OK);
	assert_int_equal(r.accounts[0].used, 0);
	resolved_free(&r);
}

static char *capture(int (*fn)(struct directory *, FILE *, bool, char **), bool json)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (fn(dir, f, json, &e) != 0)
		fail_msg("list: %s", e);
	fclose(f);
	return buf;
}

static void test_lists(void **state)
{
	char *t = capture(directory_domain_list, false);
	assert_non_null(strstr(t, "DOMAIN        TYPE   ALIAS-OF      ACCOUNTS  ALIASES\n"));
	assert_non_null(strstr(t, "alias.test    alias  example.test  -         -\n"));
	assert_non_null(strstr(t, "example.test  local  -             2         3\n"));
	free(t);
	t = capture(directory_user_list, false);
	assert_non_null(strstr(t, "alice@example.test     unlimited  0     Alice A.\n"));
	assert_non_null(strstr(t, "bob@example.test       2K         0\n"));
	free(t);
	t = capture(directory_alias_list, false);
	assert_non_null(strstr(t, "@other.test          postmaster@other.test\n"));
	free(t);

	json_error_t je;
	t = capture(directory_user_list, true);
	json_t *j = json_loads(t, 0, &je);
	assert_non_null(j);
	assert_int_equal(json_array_size(j), 4);
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "address")),
			    "alice@example.test");
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "name")),
			    "Alice A.");
	json_decref(j);
	free(t);
	t = capture(directory_alias_list, true);
	j = json_loads(t, 0, &je);
	assert_non_null(j);
	json_t *team = NULL;
	for (size_t i = 0; i < json_array_size(j); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(j, i), "address")),
			   "team@example.test") == 0)
			team = json_array_get(j, i);
	assert_non_null(team);
	assert_int_equal(json_array_size(json_object_get(team, "targets")), 3);
	json_decref(j);
	free(t);
	t = capture(directory_domain_list, true);
	j = json_loads(t, 0, &je);
	assert_non_null(j);
	assert_int_equal(json_array_size(j), 3);
	json_decref(j);
	free(t);
}

static void *thread_lookup(void *arg)
{
	struct directory *d = directory_thread(tmpdir);
	struct directory *d2 = directory_thread(tmpdir);
	if (d == NULL || d != d2)
		return (void *)1;
	return (void *)(intptr_t)(directory_is_local_domain(d, "example.test") != 1);
}

static void test_thread(void **state)
{
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, thread_lookup, NULL), 0);
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(t[i], &r);
		assert_null(r);
	}
}

static void test_cleanup_domain(void **state)
{
	OK(directory_alias_del(dir, "@other.test", &error_));
	OK(directory_user_del(dir, "carol@other.test", &error_));
	OK(directory_user_del(dir, "postmaster@other.test", &error_));
	OK(directory_domain_del(dir, "other.test", &error_));
	char *p = xasprintf("%s/mail/other.test", tmpdir);
	assert_false(exists(p));
	free(p);
	OK(directory_domain_del(dir, "alias.test", &error_));
	expect_resolve("bob@alias.test", RESOLVE_NOT_LOCAL, NULL);
	/* schema version is checked on open */
	struct directory *d2;
	OK(directory_open(tmpdir, false, &d2, &error_));
	directory_close(&d2);
	char *empty = xasprintf("%s/empty", tmpdir);
	mkdir(empty, 0700);
	expect_error(directory_open(empty, false, &d2, &e), &e, "not initialised");
	free(empty);
}

static int setup(void **state)
{
	log_set_level(LOG_WARN);
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	/* mkpasswd -m yescrypt, password "Correct horse 1" */
	hash_alice = xstrdup(
		"$y$j9T$usbHZZwhzzogXGzFZKsvw/$40EAOmX.j1VXmxoTHELtW9tBW/c6OH6dBdBf1tyEl46");
	if (directory_open(tmpdir, true, &dir, &e) < 0) {
		fprintf(stderr, "%s\n", e);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	directory_close(&dir);
	free(hash_alice);
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);
	int r = system(cmd);
	free(cmd);
	return r == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_domains),      cmocka_unit_test(test_users),
		cmocka_unit_test(test_aliases),      cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_auth),         cmocka_unit_test(test_sender_owned),
		cmocka_unit_test(test_usage),        cmocka_unit_test(test_lists),
		cmocka_unit_test(test_thread),       cmocka_unit_test(test_cleanup_domain),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
