/*
 * The directory in SQLite: domains, domain aliases, accounts, aliases.
 *
 * One `struct directory` is one connection (WAL, busy_timeout 5 s, foreign
 * keys on), used by one thread. The CLI writes, the server reads; every
 * lookup goes to the database, so admin changes apply at once.
 *
 * Schema versions live in PRAGMA user_version; migrate() brings an older
 * file up to SCHEMA_VERSION inside one transaction and refuses a newer one.
 *
 * SECURITY: every address and domain is validated and canonicalised
 * (lowercase) before it is stored or looked up; account local parts never
 * contain '/' or start with '.', because they become directory names under
 * DATA_DIR/mail. directory_authenticate spends the time of a hash
 * verification even for unknown logins, so timing does not reveal which
 * accounts exist.
 */
#include "store/directory.h"
#include "mail/address.h"
#include "lib/log.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"
#include "store/maildir.h"
#include "store/password.h"
#include "store/stmtcache.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 1
#define RESOLVE_MAX_DEPTH 16
#define RESOLVE_MAX_TARGETS 1000 /* accounts + external, per expansion */
#define DOMAIN_MAX 253
#define LOCAL_MAX 64

/*
 * Statements are kept prepared per connection (store/stmtcache.h), as the
 * store's and the queue's are: a delivery resolves its recipients twice (at
 * RCPT and when it delivers) and sqlite3_prepare_v2 was most of the cost of
 * each lookup. A kept statement is reset when its user is done with it, so
 * none holds a read transaction (an old snapshot) between calls: what the CLI
 * changes applies at the next lookup.
 */
struct directory {
	sqlite3 *db;
	char *data_dir;
	struct stmt_cache stmts; /* at most 24 kept */
	bool nowait;             /* busy timeout 0: directory_thread_nowait() */
};

/* ---- helpers ---- */

static void set_error(char **error_r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char **error_r, const char *fmt, ...)
{
	if (error_r == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	*error_r = xvasprintf(fmt, ap);
	va_end(ap);
}

static void db_error(struct directory *dir, char **error_r, const char *what)
{
	set_error(error_r, "database error (%s): %s", what, sqlite3_errmsg(dir->db));
}

static int exec(struct directory *dir, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(dir->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_error("event=directory_sql_failed error=\"%s\"", msg != NULL ? msg : "?");
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static sqlite3_stmt *prepare(struct directory *dir, const char *sql)
{
	sqlite3_stmt *st = stmt_cache_get(&dir->stmts, dir->db, sql);
	if (st == NULL)
		log_error("event=directory_prepare_failed error=\"%s\"", sqlite3_errmsg(dir->db));
	return st;
}

/* Done with a statement from prepare(): reset (its read transaction ends) and
   kept, or finalized if it was not kept. */
static void unprep(struct directory *dir, sqlite3_stmt *st)
{
	stmt_cache_put(&dir->stmts, st);
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

/* Run a statement that returns at most one row with one integer. -1 on error. */
static int query_count(struct directory *dir, const char *sql, const char *a, const char *b,
		       int64_t *value_r)
{
	sqlite3_stmt *st = prepare(dir, sql);
	if (st == NULL)
		return -1;
	if (a != NULL)
		bind_text(st, 1, a);
	if (b != NULL)
		bind_text(st, 2, b);
	int rc = sqlite3_step(st);
	int ret = 0;
	if (rc == SQLITE_ROW)
		*value_r = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		*value_r = 0;
	else
		ret = -1;
	unprep(dir, st);
	return ret;
}

/* ---- syntax and canonical forms ---- */

/* RFC 1035 host name syntax (LDH labels), lowercased in place. */
static bool domain_valid(char *d, const char **why_r)
{
	size_t len = strlen(d);
	if (len > 0 && d[len - 1] == '.')
		d[--len] = '\0';
	if (len == 0 || len > DOMAIN_MAX) {
		*why_r = "must be 1 to 253 characters";
		return false;
	}
	str_lower(d);
	size_t label = 0;
	for (size_t i = 0; i <= len; i++) {
		char c = d[i];
		if (c == '.' || c == '\0') {
			if (label == 0) {
				*why_r = "has an empty label";
				return false;
			}
			if (d[i - 1] == '-' || d[i - label] == '-') {
				*why_r = "has a label starting or ending with '-'";
				return false;
			}
			label = 0;
			continue;
		}
		if ((unsigned char)c >= 0x80) {
			*why_r = "is not ASCII (use the A-label form, xn--...)";
			return false;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
			*why_r = "may contain only letters, digits, '-' and '.'";
			return false;
		}
		if (++label > 63) {
			*why_r = "has a label longer than 63 characters";
			return false;
		}
	}
	return true;
}

/* RFC 5322 dot-atom local part without '/' (it becomes a directory name). */
static bool local_valid(char *l, const char **why_r)
{
	size_t len = strlen(l);
	if (len == 0 || len > LOCAL_MAX) {
		*why_r = "local part must be 1 to 64 characters";
		return false;
	}
	if (l[0] == '.' || l[len - 1] == '.' || strstr(l, "..") != NULL) {
		*why_r = "local part has a leading, trailing or double '.'";
		return false;
	}
	/* RFC 6531 3.3: atext extended with UTF-8; it must be well-formed */
	if (!utf8_valid((const unsigned char *)l, len)) {
		*why_r = "local part is not valid UTF-8";
		return false;
	}
	for (char *p = l; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c >= 0x80 || strchr("!#$%&'*+-=?^_`{|}~.", c) != NULL)
			continue;
		*why_r = "local part may contain only letters, digits, UTF-8 and !#$%&'*+-=?^_`{|}~.";
		return false;
	}
	str_lower(l);
	return true;
}

/*
 * Split and canonicalise "local@domain" into allocated parts. With
 * allow_catchall, "@domain" is accepted and *local_r is "".
 */
static bool address_parse(const char *address, bool allow_catchall, char **local_r,
			  char **domain_r, const char **why_r)
{
	const char *at = address != NULL ? strrchr(address, '@') : NULL;
	if (at == NULL) {
		*why_r = "is not of the form local@domain";
		return false;
	}
	char *local = xstrndup(address, (size_t)(at - address));
	char *domain = xstrdup(at + 1);
	bool ok;
	if (*local == '\0' && allow_catchall)
		ok = domain_valid(domain, why_r);
	else
		ok = local_valid(local, why_r) && domain_valid(domain, why_r);
	if (!ok) {
		free(local);
		free(domain);
		return false;
	}
	*local_r = local;
	*domain_r = domain;
	return true;
}

/* ---- open, schema ---- */

static const char *const schema_v1 =
	"CREATE TABLE domains ("
	"  name TEXT PRIMARY KEY NOT NULL,"
	"  created INTEGER NOT NULL);"
	"CREATE TABLE domain_aliases ("
	"  alias TEXT PRIMARY KEY NOT NULL,"
	"  target TEXT NOT NULL REFERENCES domains(name) ON DELETE RESTRICT,"
	"  created INTEGER NOT NULL);"
	/* AUTOINCREMENT: account ids name deliveries (QUEUEID.ID) and must never be reused */
	"CREATE TABLE accounts ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  address TEXT NOT NULL UNIQUE,"
	"  domain TEXT NOT NULL REFERENCES domains(name) ON DELETE RESTRICT,"
	"  local TEXT NOT NULL,"
	"  name TEXT NOT NULL DEFAULT '',"
	"  password_hash TEXT NOT NULL,"
	"  quota INTEGER NOT NULL DEFAULT 0,"
	"  used INTEGER NOT NULL DEFAULT 0,"
	"  created INTEGER NOT NULL);"
	"CREATE TABLE aliases ("
	"  id INTEGER PRIMARY KEY,"
	"  address TEXT NOT NULL UNIQUE," /* local@domain, or @domain for the catch-all */
	"  domain TEXT NOT NULL REFERENCES domains(name) ON DELETE RESTRICT,"
	"  targets TEXT NOT NULL,"        /* canonical, comma-separated */
	"  created INTEGER NOT NULL);"
	"CREATE INDEX accounts_domain ON accounts(domain);"
	"CREATE INDEX aliases_domain ON aliases(domain);";

static int migrate(struct directory *dir, bool create, char **error_r)
{
	/*
	 * Up to date, the usual case: no write lock. Every server thread opens
	 * its own connection on first use, which must not wait for (or fail
	 * behind) a write transaction of the CLI.
	 */
	int64_t current;
	if (query_count(dir, "PRAGMA user_version", NULL, NULL, &current) == 0 &&
	    current == SCHEMA_VERSION)
		return 0;
	if (exec(dir, "BEGIN IMMEDIATE") < 0) {
		db_error(dir, error_r, "begin");
		return -1;
	}
	int64_t version;
	if (query_count(dir, "PRAGMA user_version", NULL, NULL, &version) < 0) {
		db_error(dir, error_r, "user_version");
		goto fail;
	}
	if (version > SCHEMA_VERSION) {
		set_error(error_r,
			  "database schema version %lld is newer than this postern supports (%d)",
			  (long long)version, SCHEMA_VERSION);
		goto fail;
	}
	if (version == 0 && !create) {
		set_error(error_r, "the directory database is not initialised (run postern init)");
		goto fail;
	}
	if (version < 1) {
		if (exec(dir, schema_v1) < 0) {
			db_error(dir, error_r, "create schema");
			goto fail;
		}
	}
	/* later: if (version < 2) { ALTER TABLE ... } */
	if (version < SCHEMA_VERSION) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SCHEMA_VERSION);
		if (exec(dir, sql) < 0) {
			db_error(dir, error_r, "user_version");
			goto fail;
		}
	}
	if (exec(dir, "COMMIT") < 0) {
		db_error(dir, error_r, "commit");
		goto fail;
	}
	return 0;
fail:
	exec(dir, "ROLLBACK");
	return -1;
}

int directory_open(const char *data_dir, bool create, struct directory **dir_r, char **error_r)
{
	struct directory *dir = xcalloc(1, sizeof(*dir));
	dir->stmts.max = 24;
	dir->data_dir = xstrdup(data_dir);
	char *path = xasprintf("%s/postern.db", data_dir);
	if (!create && access(path, F_OK) < 0 && errno == ENOENT) {
		set_error(error_r, "the directory database %s is not initialised (run postern init)",
			  path);
		goto fail;
	}
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
	int rc = sqlite3_open_v2(path, &dir->db, flags, NULL);
	if (rc != SQLITE_OK) {
		set_error(error_r, "cannot open %s: %s", path,
			  dir->db != NULL ? sqlite3_errmsg(dir->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_timeout(dir->db, 5000);
	/*
	 * synchronous=FULL: an admin change that was reported done survives a
	 * power loss. Writes are rare (CLI, usage counters batched by the queue).
	 */
	if (exec(dir, "PRAGMA journal_mode=WAL") < 0 || exec(dir, "PRAGMA synchronous=FULL") < 0 ||
	    exec(dir, "PRAGMA foreign_keys=ON") < 0) {
		db_error(dir, error_r, path);
		goto fail;
	}
	if (migrate(dir, create, error_r) < 0)
		goto fail;
	free(path);
	*dir_r = dir;
	return 0;
fail:
	free(path);
	directory_close(&dir);
	return -1;
}

void directory_close(struct directory **dirp)
{
	struct directory *dir = *dirp;
	if (dir == NULL)
		return;
	stmt_cache_clear(&dir->stmts);
	sqlite3_close_v2(dir->db);
	free(dir->data_dir);
	free(dir);
	*dirp = NULL;
}

static pthread_key_t thread_key;
static pthread_once_t thread_once = PTHREAD_ONCE_INIT;

static void thread_destroy(void *p)
{
	struct directory *dir = p;
	directory_close(&dir);
}

static void thread_key_init(void)
{
	if (pthread_key_create(&thread_key, thread_destroy) != 0)
		fatal("event=pthread_key_create_failed");
}

struct directory *directory_thread(const char *data_dir)
{
	pthread_once(&thread_once, thread_key_init);
	struct directory *dir = pthread_getspecific(thread_key);
	if (dir != NULL && strcmp(dir->data_dir, data_dir) == 0)
		return dir;
	if (dir != NULL) {
		pthread_setspecific(thread_key, NULL);
		directory_close(&dir);
	}
	char *error = NULL;
	if (directory_open(data_dir, true, &dir, &error) < 0) {
		log_error("event=directory_open_failed data_dir=%s error=\"%s\"", data_dir, error);
		free(error);
		return NULL;
	}
	/*
	 * The server's threads read, and write nothing but the usage counters, on
	 * every append, expunge and delivery: synchronous=NORMAL (WAL) keeps each
	 * update atomic and survives a crash of the process; a power loss may lose
	 * the last updates of a counter, which `postern reindex` recounts. FULL
	 * would fsync the WAL on every message.
	 */
	exec(dir, "PRAGMA synchronous=NORMAL");
	pthread_setspecific(thread_key, dir);
	return dir;
}

struct directory *directory_thread_nowait(const char *data_dir)
{
	struct directory *dir = directory_thread(data_dir);
	if (dir != NULL && !dir->nowait) {
		sqlite3_busy_timeout(dir->db, 0);
		dir->nowait = true;
	}
	return dir;
}

/* ---- lookups used by the admin functions ---- */

/* 1 local domain, 2 alias domain (*target_r allocated), 0 neither, -1 error. */
static int domain_kind(struct directory *dir, const char *domain, char **target_r)
{
	int64_t n;
	if (query_count(dir, "SELECT count(*) FROM domains WHERE name = ?1", domain, NULL, &n) < 0)
		return -1;
	if (n > 0)
		return 1;
	sqlite3_stmt *st = prepare(dir, "SELECT target FROM domain_aliases WHERE alias = ?1");
	if (st == NULL)
		return -1;
	bind_text(st, 1, domain);
	int rc = sqlite3_step(st), ret;
	if (rc == SQLITE_ROW) {
		if (target_r != NULL)
			*target_r = xstrdup((const char *)sqlite3_column_text(st, 0));
		ret = 2;
	} else {
		ret = rc == SQLITE_DONE ? 0 : -1;
	}
	unprep(dir, st);
	return ret;
}

static int account_exists(struct directory *dir, const char *address)
{
	int64_t n;
	if (query_count(dir, "SELECT count(*) FROM accounts WHERE address = ?1", address, NULL,
			&n) < 0)
		return -1;
	return n > 0;
}

static int alias_exists(struct directory *dir, const char *address)
{
	int64_t n;
	if (query_count(dir, "SELECT count(*) FROM aliases WHERE address = ?1", address, NULL, &n) <
	    0)
		return -1;
	return n > 0;
}

/* Run one modifying statement with up to 3 text binds; return changes or -1. */
static int run_change(struct directory *dir, const char *sql, const char *a, const char *b,
		      const char *c)
{
	sqlite3_stmt *st = prepare(dir, sql);
	if (st == NULL)
		return -1;
	if (a != NULL)
		bind_text(st, 1, a);
	if (b != NULL)
		bind_text(st, 2, b);
	if (c != NULL)
		bind_text(st, 3, c);
	int rc = sqlite3_step(st);
	unprep(dir, st);
	if (rc != SQLITE_DONE)
		return -1;
	return sqlite3_changes(dir->db);
}

static int begin(struct directory *dir, char **error_r)
{
	if (exec(dir, "BEGIN IMMEDIATE") < 0) {
		db_error(dir, error_r, "begin");
		return -1;
	}
	return 0;
}

static int commit(struct directory *dir, char **error_r)
{
	if (exec(dir, "COMMIT") < 0) {
		db_error(dir, error_r, "commit");
		exec(dir, "ROLLBACK");
		return -1;
	}
	return 0;
}

static int rollback(struct directory *dir)
{
	exec(dir, "ROLLBACK");
	return -1;
}

#define NOW_SQL "CAST(strftime('%s','now') AS INTEGER)"

/* ---- administration: domains ---- */

int directory_domain_add(struct directory *dir, const char *domain_in, char **error_r)
{
	char *domain = xstrdup(domain_in != NULL ? domain_in : "");
	char *target = NULL;
	const char *why;
	int ret = -1;
	if (!domain_valid(domain, &why)) {
		set_error(error_r, "invalid domain '%s': %s", domain_in, why);
		goto out;
	}
	if (begin(dir, error_r) < 0)
		goto out;
	int kind = domain_kind(dir, domain, &target);
	if (kind != 0) {
		if (kind == 1)
			set_error(error_r, "domain %s already exists", domain);
		else if (kind == 2)
			set_error(error_r, "domain %s is already an alias domain of %s", domain,
				  target);
		else
			db_error(dir, error_r, "lookup");
		ret = rollback(dir);
		goto out;
	}
	if (run_change(dir, "INSERT INTO domains(name, created) VALUES (?1, " NOW_SQL ")", domain,
		       NULL, NULL) < 0) {
		db_error(dir, error_r, "add domain");
		ret = rollback(dir);
		goto out;
	}
	if (commit(dir, error_r) < 0)
		goto out;
	log_info("event=domain_added domain=%s", domain);
	ret = 0;
out:
	free(target);
	free(domain);
	return ret;
}

/* Comma-separated list of a query's first column (one text bind), or NULL if no rows. */
static char *query_join(struct directory *dir, const char *sql, const char *a)
{
	sqlite3_stmt *st = prepare(dir, sql);
	if (st == NULL)
		return NULL;
	bind_text(st, 1, a);
	char *out = NULL;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *v = (const char *)sqlite3_column_text(st, 0);
		char *n = out == NULL ? xstrdup(v) : xasprintf("%s, %s", out, v);
		free(out);
		out = n;
	}
	unprep(dir, st);
	return out;
}

int directory_domain_del(struct directory *dir, const char *domain_in, char **error_r)
{
	char *domain = xstrdup(domain_in != NULL ? domain_in : "");
	char *target = NULL, *aliases = NULL;
	const char *why;
	int ret = -1;
	if (!domain_valid(domain, &why)) {
		set_error(error_r, "invalid domain '%s': %s", domain_in, why);
		goto out;
	}
	if (begin(dir, error_r) < 0)
		goto out;
	int kind = domain_kind(dir, domain, &target);
	if (kind == 0) {
		set_error(error_r, "no such domain: %s", domain);
		ret = rollback(dir);
		goto out;
	}
	if (kind < 0) {
		db_error(dir, error_r, "lookup");
		ret = rollback(dir);
		goto out;
	}
	if (kind == 2) {
		if (run_change(dir, "DELETE FROM domain_aliases WHERE alias = ?1", domain, NULL,
			       NULL) < 0) {
			db_error(dir, error_r, "delete alias domain");
			ret = rollback(dir);
			goto out;
		}
	} else {
		int64_t naccounts, naliases;
		if (query_count(dir, "SELECT count(*) FROM accounts WHERE domain = ?1", domain,
				NULL, &naccounts) < 0 ||
		    query_count(dir, "SELECT count(*) FROM aliases WHERE domain = ?1", domain, NULL,
				&naliases) < 0) {
			db_error(dir, error_r, "lookup");
			ret = rollback(dir);
			goto out;
		}
		if (naccounts > 0 || naliases > 0) {
			set_error(error_r,
				  "domain %s still has %lld account(s) and %lld alias(es); delete "
				  "them first",
				  domain, (long long)naccounts, (long long)naliases);
			ret = rollback(dir);
			goto out;
		}
		aliases = query_join(dir,
				     "SELECT alias FROM domain_aliases WHERE target = ?1 ORDER BY alias",
				     domain);
		if (aliases != NULL) {
			set_error(error_r,
				  "domain %s is the target of alias domain(s) %s; delete them first",
				  domain, aliases);
			ret = rollback(dir);
			goto out;
		}
		if (run_change(dir, "DELETE FROM domains WHERE name = ?1", domain, NULL, NULL) < 0) {
			db_error(dir, error_r, "delete domain");
			ret = rollback(dir);
			goto out;
		}
	}
	if (commit(dir, error_r) < 0)
		goto out;
	if (kind == 1) {
		/* the domain's mail directory is empty now (its accounts are gone) */
		char *p = xasprintf("%s/mail/%s", dir->data_dir, domain);
		(void)rmdir(p);
		free(p);
	}
	log_info("event=domain_deleted domain=%s", domain);
	ret = 0;
out:
	free(aliases);
	free(target);
	free(domain);
	return ret;
}

int directory_domain_alias(struct directory *dir, const char *alias_in, const char *target_in,
			   char **error_r)
{
	char *alias = xstrdup(alias_in != NULL ? alias_in : "");
	char *target = xstrdup(target_in != NULL ? target_in : "");
	char *cur = NULL;
	const char *why;
	int ret = -1;
	if (!domain_valid(alias, &why)) {
		set_error(error_r, "invalid domain '%s': %s", alias_in, why);
		goto out;
	}
	if (!domain_valid(target, &why)) {
		set_error(error_r, "invalid domain '%s': %s", target_in, why);
		goto out;
	}
	if (strcmp(alias, target) == 0) {
		set_error(error_r, "a domain cannot be an alias of itself");
		goto out;
	}
	if (begin(dir, error_r) < 0)
		goto out;
	int kt = domain_kind(dir, target, &cur);
	if (kt != 1) {
		if (kt == 2)
			set_error(error_r,
				  "%s is itself an alias domain (of %s); point the alias at %s",
				  target, cur, cur);
		else if (kt == 0)
			set_error(error_r, "target domain %s is not a local domain (add it first)",
				  target);
		else
			db_error(dir, error_r, "lookup");
		ret = rollback(dir);
		goto out;
	}
	free(cur);
	cur = NULL;
	int ka = domain_kind(dir, alias, &cur);
	if (ka != 0) {
		if (ka == 1)
			set_error(error_r,
				  "%s is a local domain; a domain cannot be both local and an alias",
				  alias);
		else if (ka == 2)
			set_error(error_r, "%s is already an alias domain of %s", alias, cur);
		else
			db_error(dir, error_r, "lookup");
		ret = rollback(dir);
		goto out;
	}
	if (run_change(dir,
		       "INSERT INTO domain_aliases(alias, target, created) VALUES (?1, ?2, " NOW_SQL
		       ")",
		       alias, target, NULL) < 0) {
		db_error(dir, error_r, "add alias domain");
		ret = rollback(dir);
		goto out;
	}
	if (commit(dir, error_r) < 0)
		goto out;
	log_info("event=domain_alias_added alias=%s target=%s", alias, target);
	ret = 0;
out:
	free(cur);
	free(alias);
	free(target);
	return ret;
}

/* ---- administration: accounts ---- */

/*
 * Parse an account or alias address and check its domain is a local (not
 * alias) domain. Fills canonical *address_r, *local_r, *domain_r.
 */
static int admin_address(struct directory *dir, const char *in, bool allow_catchall,
			 char **address_r, char **local_r, char **domain_r, char **error_r)
{
	char *local, *domain, *target = NULL;
	const char *why;
	if (!address_parse(in, allow_catchall, &local, &domain, &why)) {
		set_error(error_r, "invalid address '%s': %s", in != NULL ? in : "", why);
		return -1;
	}
	int kind = domain_kind(dir, domain, &target);
	if (kind != 1) {
		if (kind == 0)
			set_error(error_r, "domain %s is not a local domain (add it first)", domain);
		else if (kind == 2)
			set_error(error_r, "%s is an alias domain of %s; use an address in %s",
				  domain, target, target);
		else
			db_error(dir, error_r, "lookup");
		free(target);
		free(local);
		free(domain);
		return -1;
	}
	*address_r = xasprintf("%s@%s", local, domain);
	*local_r = local;
	*domain_r = domain;
	return 0;
}

static bool hash_plausible(const char *h)
{
	return h != NULL && (h[0] == '$' || h[0] == '{') && strlen(h) < 1024;
}

int directory_user_add(struct directory *dir, const char *address_in, const char *password_hash,
		       const char *name, uint64_t quota, char **error_r)
{
	char *address = NULL, *local = NULL, *domain = NULL, *path = NULL;
	int ret = -1;
	if (!hash_plausible(password_hash)) {
		set_error(error_r, "invalid password hash");
		return -1;
	}
	if (quota > INT64_MAX) {
		set_error(error_r, "quota too large");
		return -1;
	}
	if (begin(dir, error_r) < 0)
		return -1;
	if (admin_address(dir, address_in, false, &address, &local, &domain, error_r) < 0) {
		ret = rollback(dir);
		goto out;
	}
	int a = account_exists(dir, address), b = alias_exists(dir, address);
	if (a != 0 || b != 0) {
		if (a < 0 || b < 0)
			db_error(dir, error_r, "lookup");
		else if (a > 0)
			set_error(error_r, "account %s already exists", address);
		else
			set_error(error_r,
				  "%s is an alias; an account and an alias cannot share an address",
				  address);
		ret = rollback(dir);
		goto out;
	}
	sqlite3_stmt *st = prepare(dir, "INSERT INTO accounts(address, domain, local, name, "
					"password_hash, quota, used, created) VALUES "
					"(?1, ?2, ?3, ?4, ?5, ?6, 0, " NOW_SQL ")");
	if (st == NULL) {
		db_error(dir, error_r, "add account");
		ret = rollback(dir);
		goto out;
	}
	bind_text(st, 1, address);
	bind_text(st, 2, domain);
	bind_text(st, 3, local);
	bind_text(st, 4, name != NULL ? name : "");
	bind_text(st, 5, password_hash);
	sqlite3_bind_int64(st, 6, (int64_t)quota);
	int rc = sqlite3_step(st);
	unprep(dir, st);
	if (rc != SQLITE_DONE) {
		db_error(dir, error_r, "add account");
		ret = rollback(dir);
		goto out;
	}
	/* The Maildir exists before the account becomes visible. */
	path = maildir_path(dir->data_dir, address);
	if (maildir_create(path) < 0) {
		set_error(error_r, "cannot create Maildir %s: %s", path, strerror(errno));
		ret = rollback(dir);
		goto out;
	}
	if (commit(dir, error_r) < 0)
		goto out; /* the empty Maildir is left; a later add reuses it */
	log_info("event=user_added address=%s", address);
	ret = 0;
out:
	free(path);
	free(address);
	free(local);
	free(domain);
	return ret;
}

/* Canonical address of an existing account, or NULL with *error_r. */
static char *existing_account(struct directory *dir, const char *in, char **error_r)
{
	char *local, *domain;
	const char *why;
	if (!address_parse(in, false, &local, &domain, &why)) {
		set_error(error_r, "invalid address '%s': %s", in != NULL ? in : "", why);
		return NULL;
	}
	char *address = xasprintf("%s@%s", local, domain);
	free(local);
	free(domain);
	int e = account_exists(dir, address);
	if (e <= 0) {
		if (e == 0)
			set_error(error_r, "no such account: %s", address);
		else
			db_error(dir, error_r, "lookup");
		free(address);
		return NULL;
	}
	return address;
}

int directory_user_del(struct directory *dir, const char *address_in, char **error_r)
{
	if (begin(dir, error_r) < 0)
		return -1;
	char *address = existing_account(dir, address_in, error_r);
	if (address == NULL)
		return rollback(dir);
	if (run_change(dir, "DELETE FROM accounts WHERE address = ?1", address, NULL, NULL) < 0) {
		db_error(dir, error_r, "delete account");
		free(address);
		return rollback(dir);
	}
	if (commit(dir, error_r) < 0) {
		free(address);
		return -1;
	}
	log_info("event=user_deleted address=%s", address);
	char *path = maildir_path(dir->data_dir, address);
	int ret = 0;
	if (maildir_remove(path) < 0) {
		set_error(error_r, "account %s deleted, but its Maildir %s could not be removed: %s",
			  address, path, strerror(errno));
		ret = -1;
	}
	free(path);
	free(address);
	return ret;
}

int directory_user_passwd(struct directory *dir, const char *address_in, const char *hash,
			  char **error_r)
{
	if (!hash_plausible(hash)) {
		set_error(error_r, "invalid password hash");
		return -1;
	}
	if (begin(dir, error_r) < 0)
		return -1;
	char *address = existing_account(dir, address_in, error_r);
	if (address == NULL)
		return rollback(dir);
	int ret = 0;
	if (run_change(dir, "UPDATE accounts SET password_hash = ?2 WHERE address = ?1", address,
		       hash, NULL) < 0) {
		db_error(dir, error_r, "update");
		ret = rollback(dir);
	} else if (commit(dir, error_r) < 0) {
		ret = -1;
	} else {
		log_info("event=user_password_changed address=%s", address);
	}
	free(address);
	return ret;
}

int directory_user_quota(struct directory *dir, const char *address_in, uint64_t quota,
			 char **error_r)
{
	if (quota > INT64_MAX) {
		set_error(error_r, "quota too large");
		return -1;
	}
	if (begin(dir, error_r) < 0)
		return -1;
	char *address = existing_account(dir, address_in, error_r);
	if (address == NULL)
		return rollback(dir);
	sqlite3_stmt *st = prepare(dir, "UPDATE accounts SET quota = ?2 WHERE address = ?1");
	int ret = 0;
	if (st != NULL) {
		bind_text(st, 1, address);
		sqlite3_bind_int64(st, 2, (int64_t)quota);
	}
	if (st == NULL || sqlite3_step(st) != SQLITE_DONE) {
		db_error(dir, error_r, "update");
		ret = rollback(dir);
	} else if (commit(dir, error_r) < 0) {
		ret = -1;
	} else {
		log_info("event=user_quota_changed address=%s quota=%llu", address,
			 (unsigned long long)quota);
	}
	unprep(dir, st);
	free(address);
	return ret;
}

/* ---- resolution ---- */

void account_free_fields(struct account *a)
{
	xfree(&a->address);
	xfree(&a->maildir);
}

void resolved_free(struct resolved *r)
{
	for (size_t i = 0; i < r->naccounts; i++)
		account_free_fields(&r->accounts[i]);
	xfree(&r->accounts);
	for (size_t i = 0; i < r->nexternal; i++)
		free(r->external[i]);
	xfree(&r->external);
	r->naccounts = r->nexternal = 0;
}

struct expand {
	struct directory *dir;
	struct resolved *r;
	size_t cap_accounts, cap_external;
	/* keys on the current expansion path, for loop detection */
	char *path[RESOLVE_MAX_DEPTH + 2];
	size_t npath;
	bool loop, error;
};

static bool on_path(struct expand *x, const char *key)
{
	for (size_t i = 0; i < x->npath; i++)
		if (strcmp(x->path[i], key) == 0)
			return true;
	return false;
}

static bool too_many(struct expand *x)
{
	if (x->r->naccounts + x->r->nexternal < RESOLVE_MAX_TARGETS)
		return false;
	log_warn("event=resolve_too_many_targets limit=%d", RESOLVE_MAX_TARGETS);
	x->loop = true;
	return true;
}

static void add_external(struct expand *x, const char *address)
{
	for (size_t i = 0; i < x->r->nexternal; i++)
		if (strcmp(x->r->external[i], address) == 0)
			return;
	if (too_many(x))
		return;
	x->r->external = xgrow(x->r->external, &x->cap_external, x->r->nexternal + 1,
			       sizeof(char *));
	x->r->external[x->r->nexternal++] = xstrdup(address);
}

static void fill_account(struct directory *dir, sqlite3_stmt *st, struct account *a)
{
	a->id = sqlite3_column_int64(st, 0);
	a->address = xstrdup((const char *)sqlite3_column_text(st, 1));
	a->maildir = maildir_path(dir->data_dir, a->address);
	int64_t q = sqlite3_column_int64(st, 2), u = sqlite3_column_int64(st, 3);
	a->quota = q > 0 ? (uint64_t)q : 0;
	a->used = u > 0 ? (uint64_t)u : 0;
}

#define ACCOUNT_COLS "id, address, quota, used"

/* Look up an account by canonical address. 1 found, 0 not, -1 error. */
static int account_get(struct directory *dir, const char *address, struct account *a,
		       char **hash_r)
{
	sqlite3_stmt *st = prepare(dir, "SELECT " ACCOUNT_COLS
					", password_hash FROM accounts WHERE address = ?1");
	if (st == NULL)
		return -1;
	bind_text(st, 1, address);
	int rc = sqlite3_step(st), ret = 0;
	if (rc == SQLITE_ROW) {
		if (a != NULL)
			fill_account(dir, st, a);
		if (hash_r != NULL)
			*hash_r = xstrdup((const char *)sqlite3_column_text(st, 4));
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		ret = -1;
	}
	unprep(dir, st);
	return ret;
}

int directory_accounts(struct directory *dir, struct account **list_r, size_t *n_r,
		       char **error_r)
{
	*list_r = NULL;
	*n_r = 0;
	sqlite3_stmt *st = prepare(dir, "SELECT " ACCOUNT_COLS " FROM accounts ORDER BY id");
	if (st == NULL) {
		db_error(dir, error_r, "list accounts");
		return -1;
	}
	size_t cap = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n_r == cap) {
			cap = cap == 0 ? 16 : cap * 2;
			*list_r = xrealloc(*list_r, cap * sizeof(**list_r));
		}
		struct account *a = &(*list_r)[(*n_r)++];
		memset(a, 0, sizeof(*a));
		fill_account(dir, st, a);
	}
	unprep(dir, st);
	if (rc != SQLITE_DONE) {
		db_error(dir, error_r, "list accounts");
		directory_accounts_free(list_r, *n_r);
		*n_r = 0;
		return -1;
	}
	return 0;
}

void directory_accounts_free(struct account **list, size_t n)
{
	if (*list == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		account_free_fields(&(*list)[i]);
	free(*list);
	*list = NULL;
}

int directory_account(struct directory *dir, const char *address, struct account *a)
{
	return account_get(dir, address, a, NULL);
}

/* Alias targets of canonical `key` (allocated) or NULL; *err set on db error. */
static char *alias_targets(struct directory *dir, const char *key, bool *err)
{
	sqlite3_stmt *st = prepare(dir, "SELECT targets FROM aliases WHERE address = ?1");
	if (st == NULL) {
		*err = true;
		return NULL;
	}
	bind_text(st, 1, key);
	int rc = sqlite3_step(st);
	char *t = NULL;
	if (rc == SQLITE_ROW)
		t = xstrdup((const char *)sqlite3_column_text(st, 0));
	else if (rc != SQLITE_DONE)
		*err = true;
	unprep(dir, st);
	return t;
}

static enum resolve_result expand_address(struct expand *x, const char *address, bool top);

/* Expand the alias list `targets` reached through `key`. */
static void expand_targets(struct expand *x, const char *key, const char *targets)
{
	if (x->npath > RESOLVE_MAX_DEPTH) {
		log_warn("event=alias_too_deep alias=%s limit=%d", key, RESOLVE_MAX_DEPTH);
		x->loop = true;
		return;
	}
	x->path[x->npath++] = xstrdup(key);
	size_t n;
	char **v = strv_split_list(targets, &n);
	for (size_t i = 0; i < n && !x->loop && !x->error; i++) {
		enum resolve_result res = expand_address(x, v[i], false);
		if (res == RESOLVE_UNKNOWN_USER)
			log_warn("event=alias_target_unknown alias=%s target=%s", key, v[i]);
	}
	strv_free(&v);
	free(x->path[--x->npath]);
}

/*
 * Exact lookup of canonical local@domain: an alias or an account.
 * 1 found (and expanded), 0 not found; errors and loops go into x.
 */
static int expand_exact(struct expand *x, const char *canon)
{
	if (on_path(x, canon)) {
		log_warn("event=alias_loop address=%s", canon);
		x->loop = true;
		return 1;
	}
	bool err = false;
	char *targets = alias_targets(x->dir, canon, &err);
	if (err) {
		x->error = true;
		return 1;
	}
	if (targets != NULL) {
		expand_targets(x, canon, targets);
		free(targets);
		return 1;
	}
	struct account a = {0};
	int r = account_get(x->dir, canon, &a, NULL);
	if (r < 0) {
		x->error = true;
		return 1;
	}
	if (r == 0)
		return 0;
	for (size_t i = 0; i < x->r->naccounts; i++) {
		if (x->r->accounts[i].id == a.id) {
			account_free_fields(&a);
			return 1;
		}
	}
	if (too_many(x)) {
		account_free_fields(&a);
		return 1;
	}
	x->r->accounts = xgrow(x->r->accounts, &x->cap_accounts, x->r->naccounts + 1,
			       sizeof(struct account));
	x->r->accounts[x->r->naccounts++] = a;
	return 1;
}

/*
 * Split and lowercase an address for lookup, mapping an alias domain to its
 * target. Returns 1 local (*local_r, *domain_r set), 0 not local, -1 error,
 * -2 not an address.
 */
static int lookup_parts(struct directory *dir, const char *address, char **local_r,
			char **domain_r)
{
	const char *at = strrchr(address, '@');
	if (at == NULL || at == address || at[1] == '\0')
		return -2;
	char *domain = str_lower(xstrdup(at + 1));
	size_t dl = strlen(domain);
	if (dl > 0 && domain[dl - 1] == '.')
		domain[dl - 1] = '\0';
	char *target = NULL;
	int kind = domain_kind(dir, domain, &target);
	if (kind <= 0) {
		free(domain);
		return kind;
	}
	if (kind == 2) {
		free(domain);
		domain = target;
	}
	*local_r = str_lower(xstrndup(address, (size_t)(at - address)));
	*domain_r = domain;
	return 1;
}

static enum resolve_result expand_address(struct expand *x, const char *address, bool top)
{
	char *local, *domain;
	int k = lookup_parts(x->dir, address, &local, &domain);
	if (k == -1) {
		x->error = true;
		return RESOLVE_ERROR;
	}
	if (k == -2)
		return RESOLVE_UNKNOWN_USER;
	if (k == 0) {
		if (top)
			return RESOLVE_NOT_LOCAL;
		/* an alias target outside our domains: keep it, domain lowercased */
		const char *at = strrchr(address, '@');
		char *ext = xasprintf("%.*s@%s", (int)(at - address), address, at + 1);
		str_lower(strrchr(ext, '@'));
		add_external(x, ext);
		free(ext);
		return RESOLVE_OK;
	}
	enum resolve_result res = RESOLVE_OK;
	char *canon = xasprintf("%s@%s", local, domain);
	int found = expand_exact(x, canon);
	if (found == 0) {
		/* plus-addressing: user+tag@domain reaches user@domain */
		char *plus = strchr(local, '+');
		if (plus != NULL && plus != local) {
			char *base = xasprintf("%.*s@%s", (int)(plus - local), local, domain);
			found = expand_exact(x, base);
			free(base);
		}
	}
	if (found == 0) {
		/* the domain's catch-all, last */
		char *key = xasprintf("@%s", domain);
		bool err = false;
		char *targets = NULL;
		if (on_path(x, key)) {
			log_warn("event=alias_loop address=%s via=%s", canon, key);
			x->loop = true;
			found = 1;
		} else {
			targets = alias_targets(x->dir, key, &err);
		}
		if (err)
			x->error = true;
		else if (targets != NULL) {
			expand_targets(x, key, targets);
			found = 1;
		}
		free(targets);
		free(key);
	}
	if (found == 0)
		res = RESOLVE_UNKNOWN_USER;
	free(canon);
	free(local);
	free(domain);
	return res;
}

enum resolve_result directory_resolve(struct directory *dir, const char *address,
				      struct resolved *r)
{
	memset(r, 0, sizeof(*r));
	struct expand x = {.dir = dir, .r = r};
	enum resolve_result res = expand_address(&x, address != NULL ? address : "", true);
	if (x.error)
		res = RESOLVE_ERROR;
	else if (x.loop)
		res = RESOLVE_LOOP;
	else if (res == RESOLVE_OK && r->naccounts == 0 && r->nexternal == 0)
		res = RESOLVE_UNKNOWN_USER; /* every target of the alias is gone */
	if (res != RESOLVE_OK)
		resolved_free(r);
	return res;
}

int directory_read_begin(struct directory *dir)
{
	sqlite3_stmt *st = prepare(dir, "BEGIN");
	if (st == NULL)
		return -1;
	int rc = sqlite3_step(st);
	unprep(dir, st);
	return rc == SQLITE_DONE ? 0 : -1;
}

void directory_read_end(struct directory *dir)
{
	if (sqlite3_get_autocommit(dir->db))
		return; /* never begun */
	sqlite3_stmt *st = prepare(dir, "COMMIT");
	int rc = st != NULL ? sqlite3_step(st) : SQLITE_ERROR;
	unprep(dir, st);
	if (rc != SQLITE_DONE)
		exec(dir, "ROLLBACK");
}

int directory_is_local_domain(struct directory *dir, const char *domain_in)
{
	char *domain = str_lower(xstrdup(domain_in));
	int k = domain_kind(dir, domain, NULL);
	free(domain);
	return k < 0 ? -1 : k > 0;
}

/* ---- administration: aliases ---- */

int directory_alias_add(struct directory *dir, const char *address_in, const char *targets_in,
			char **error_r)
{
	char *address = NULL, *local = NULL, *domain = NULL, *joined = NULL;
	char **v = NULL;
	int ret = -1;
	if (begin(dir, error_r) < 0)
		return -1;
	if (admin_address(dir, address_in, true, &address, &local, &domain, error_r) < 0)
		goto fail;
	bool catchall = *local == '\0';
	if (!catchall) {
		int a = account_exists(dir, address);
		if (a != 0) {
			if (a > 0)
				set_error(error_r,
					  "%s is an account; an account and an alias cannot share "
					  "an address",
					  address);
			else
				db_error(dir, error_r, "lookup");
			goto fail;
		}
	}
	int e = alias_exists(dir, address);
	if (e != 0) {
		if (e > 0)
			set_error(error_r, "alias %s already exists (delete it first)", address);
		else
			db_error(dir, error_r, "lookup");
		goto fail;
	}
	size_t n;
	v = strv_split_list(targets_in != NULL ? targets_in : "", &n);
	if (n == 0) {
		set_error(error_r, "alias %s needs at least one target", address);
		goto fail;
	}
	if (n > RESOLVE_MAX_TARGETS) {
		set_error(error_r, "too many targets (at most %d)", RESOLVE_MAX_TARGETS);
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		char *tl, *td;
		const char *why;
		if (!address_parse(v[i], false, &tl, &td, &why)) {
			set_error(error_r, "invalid target '%s': %s", v[i], why);
			goto fail;
		}
		int kind = domain_kind(dir, td, NULL);
		char *canon;
		if (kind == 0) {
			/* external: keep the local part as written */
			const char *at = strrchr(v[i], '@');
			canon = xasprintf("%.*s@%s", (int)(at - v[i]), v[i], td);
		} else {
			canon = xasprintf("%s@%s", tl, td);
		}
		free(tl);
		free(td);
		if (kind < 0) {
			free(canon);
			db_error(dir, error_r, "lookup");
			goto fail;
		}
		if (strcmp(canon, address) == 0) {
			set_error(error_r, "alias %s cannot target itself", address);
			free(canon);
			goto fail;
		}
		free(v[i]);
		v[i] = canon;
	}
	/* deduplicate, keep order */
	for (size_t i = 0; i < n; i++) {
		bool dup = false;
		for (size_t j = 0; j < i && !dup; j++)
			dup = strcmp(v[i], v[j]) == 0;
		if (dup)
			continue;
		char *nj = joined == NULL ? xstrdup(v[i]) : xasprintf("%s,%s", joined, v[i]);
		free(joined);
		joined = nj;
	}
	if (run_change(dir,
		       "INSERT INTO aliases(address, domain, targets, created) VALUES (?1, ?2, ?3, "
		       NOW_SQL ")",
		       address, domain, joined) < 0) {
		db_error(dir, error_r, "add alias");
		goto fail;
	}
	/* Every local target must exist, and the new alias must not close a loop. */
	for (size_t i = 0; v[i] != NULL; i++) {
		struct resolved r;
		enum resolve_result res = directory_resolve(dir, v[i], &r);
		resolved_free(&r);
		if (res == RESOLVE_NOT_LOCAL || res == RESOLVE_OK)
			continue;
		if (res == RESOLVE_UNKNOWN_USER)
			set_error(error_r, "target %s: no such account or alias", v[i]);
		else if (res == RESOLVE_LOOP)
			set_error(error_r, "alias %s -> %s would make alias expansion loop",
				  address, v[i]);
		else
			db_error(dir, error_r, "resolve");
		goto fail;
	}
	if (commit(dir, error_r) < 0)
		goto out;
	log_info("event=alias_added address=%s targets=%s", address, joined);
	ret = 0;
	goto out;
fail:
	rollback(dir);
out:
	strv_free(&v);
	free(joined);
	free(address);
	free(local);
	free(domain);
	return ret;
}

int directory_alias_del(struct directory *dir, const char *address_in, char **error_r)
{
	char *local, *domain;
	const char *why;
	if (!address_parse(address_in, true, &local, &domain, &why)) {
		set_error(error_r, "invalid address '%s': %s", address_in != NULL ? address_in : "",
			  why);
		return -1;
	}
	char *address = xasprintf("%s@%s", local, domain);
	free(local);
	free(domain);
	int ret = -1;
	if (begin(dir, error_r) < 0)
		goto out;
	int n = run_change(dir, "DELETE FROM aliases WHERE address = ?1", address, NULL, NULL);
	if (n <= 0) {
		if (n == 0)
			set_error(error_r, "no such alias: %s", address);
		else
			db_error(dir, error_r, "delete alias");
		rollback(dir);
		goto out;
	}
	if (commit(dir, error_r) < 0)
		goto out;
	log_info("event=alias_deleted address=%s", address);
	ret = 0;
out:
	free(address);
	return ret;
}

/* ---- authentication, sender ownership, usage ---- */

/*
 * Verified when a login names no account, so that an unknown login costs
 * as much as a wrong password. A yescrypt hash (default cost, like ours)
 * of random bytes, made with `mkpasswd -m yescrypt`; no password matches.
 */
static const char dummy_hash[] =
	"$y$j9T$sfWsZCir2/0mIZ1wm8Vg71$JHppOpgUtOO8lqlyO5zV0d07OKaJ0BB4HfbLTB5d8x5";

int directory_authenticate(struct directory *dir, const char *login, const char *password,
			   const char *default_domain, struct account *account_r)
{
	char *full, *local = NULL, *domain = NULL, *hash = NULL;
	memset(account_r, 0, sizeof(*account_r));
	if (login == NULL || password == NULL)
		return 0;
	if (strchr(login, '@') == NULL && default_domain != NULL && *default_domain != '\0')
		full = xasprintf("%s@%s", login, default_domain);
	else
		full = xstrdup(login);
	int ret = 0, found = 0;
	int k = lookup_parts(dir, full, &local, &domain);
	if (k == -1) {
		ret = -1;
		goto out;
	}
	if (k == 1) {
		char *canon = xasprintf("%s@%s", local, domain);
		found = account_get(dir, canon, account_r, &hash);
		free(canon);
		if (found < 0) {
			ret = -1;
			goto out;
		}
	}
	if (found == 1 && password_verify(password, hash)) {
		ret = 1;
	} else {
		if (found != 1)
			(void)password_verify(password, dummy_hash);
		account_free_fields(account_r);
		memset(account_r, 0, sizeof(*account_r));
	}
out:
	free(hash);
	free(full);
	free(local);
	free(domain);
	return ret;
}

int directory_sender_owned(struct directory *dir, const char *account_address,
			   const char *sender)
{
	char *local, *domain;
	int k = lookup_parts(dir, sender != NULL ? sender : "", &local, &domain);
	if (k < 0)
		return k == -1 ? -1 : 0;
	if (k == 0)
		return 0;
	char *acct = str_lower(xstrdup(account_address));
	char *cands[2];
	size_t nc = 0;
	cands[nc++] = xasprintf("%s@%s", local, domain);
	char *plus = strchr(local, '+');
	if (plus != NULL && plus != local)
		cands[nc++] = xasprintf("%.*s@%s", (int)(plus - local), local, domain);
	int ret = 0;
	for (size_t i = 0; i < nc && ret == 0; i++) {
		if (strcmp(cands[i], acct) == 0) {
			ret = 1;
			break;
		}
		/* an alias (not the catch-all) that delivers to the account */
		bool err = false;
		char *targets = alias_targets(dir, cands[i], &err);
		if (err) {
			ret = -1;
			break;
		}
		if (targets == NULL)
			continue;
		struct resolved r = {0};
		struct expand x = {.dir = dir, .r = &r};
		expand_targets(&x, cands[i], targets);
		free(targets);
		if (x.error)
			ret = -1;
		for (size_t j = 0; j < r.naccounts && ret == 0; j++)
			if (strcmp(r.accounts[j].address, acct) == 0)
				ret = 1;
		resolved_free(&r);
	}
	for (size_t i = 0; i < nc; i++)
		free(cands[i]);
	free(acct);
	free(local);
	free(domain);
	return ret;
}

/*
 * Usage updates come from many threads at once (appends, expunges,
 * deliveries): they queue on a mutex, woken when it is free, rather than in
 * SQLite's busy handler, which sleeps in steps of up to 100 ms.
 */
static pthread_mutex_t usage_mu = PTHREAD_MUTEX_INITIALIZER;

int directory_usage_add(struct directory *dir, int64_t account_id, int64_t delta)
{
	sqlite3_stmt *st =
		prepare(dir, "UPDATE accounts SET used = max(0, used + ?2) WHERE id = ?1");
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, account_id);
	sqlite3_bind_int64(st, 2, delta);
	pthread_mutex_lock(&usage_mu);
	int rc = sqlite3_step(st);
	pthread_mutex_unlock(&usage_mu);
	unprep(dir, st);
	if (rc != SQLITE_DONE) {
		log_error("event=usage_update_failed account_id=%lld error=\"%s\"",
			  (long long)account_id, sqlite3_errmsg(dir->db));
		return -1;
	}
	return 0;
}

int directory_usage_add_many(struct directory *dir, const int64_t *account_ids,
			     const int64_t *deltas, size_t n)
{
	if (n == 0)
		return 0;
	if (n == 1)
		return directory_usage_add(dir, account_ids[0], deltas[0]);
	pthread_mutex_lock(&usage_mu);
	if (exec(dir, "BEGIN IMMEDIATE") < 0) {
		pthread_mutex_unlock(&usage_mu);
		return -1;
	}
	sqlite3_stmt *st =
		prepare(dir, "UPDATE accounts SET used = max(0, used + ?2) WHERE id = ?1");
	if (st == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, account_ids[i]);
		sqlite3_bind_int64(st, 2, deltas[i]);
		if (sqlite3_step(st) != SQLITE_DONE) {
			log_error("event=usage_update_failed account_id=%lld error=\"%s\"",
				  (long long)account_ids[i], sqlite3_errmsg(dir->db));
			goto fail;
		}
	}
	unprep(dir, st);
	st = NULL;
	if (exec(dir, "COMMIT") == 0) {
		pthread_mutex_unlock(&usage_mu);
		return 0;
	}
fail:
	unprep(dir, st);
	exec(dir, "ROLLBACK");
	pthread_mutex_unlock(&usage_mu);
	return -1;
}

/* ---- listings ---- */

struct table {
	size_t ncols, nrows, cap;
	char **cells; /* nrows * ncols */
};

static void table_add(struct table *t, const char *const *row)
{
	t->cells = xgrow(t->cells, &t->cap, (t->nrows + 1) * t->ncols, sizeof(char *));
	for (size_t i = 0; i < t->ncols; i++)
		t->cells[t->nrows * t->ncols + i] = xstrdup(row[i] != NULL ? row[i] : "");
	t->nrows++;
}

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	xfree(&t->cells);
	t->nrows = 0;
}

/* Aligned columns, two spaces apart; the last column is not padded. */
static void table_print(struct table *t, FILE *out)
{
	size_t width[8] = {0};
	for (size_t r = 0; r < t->nrows; r++)
		for (size_t c = 0; c < t->ncols; c++) {
			size_t l = strlen(t->cells[r * t->ncols + c]);
			if (l > width[c])
				width[c] = l;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		char *line = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&line, &len);
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = t->cells[r * t->ncols + c];
			if (c + 1 < t->ncols)
				fprintf(f, "%-*s  ", (int)width[c], s);
			else
				fputs(s, f);
		}
		fclose(f);
		while (len > 0 && line[len - 1] == ' ')
			line[--len] = '\0';
		fprintf(out, "%s\n", line);
		free(line);
	}
	table_free(t);
}

static int json_dump(json_t *arr, FILE *out, char **error_r)
{
	int r = json_dumpf(arr, out, JSON_INDENT(2));
	json_decref(arr);
	if (r < 0) {
		set_error(error_r, "cannot write output");
		return -1;
	}
	fputc('\n', out);
	return 0;
}

/*
 * End of a listing: finalize `st` (whose last step returned `rc`), then
 * print the JSON array `arr` (when not NULL) or the table, and free both.
 */
static int list_finish(struct directory *dir, sqlite3_stmt *st, int rc, json_t *arr,
		       struct table *t, FILE *out, char **error_r)
{
	unprep(dir, st);
	if (rc != SQLITE_DONE) {
		db_error(dir, error_r, "list");
		json_decref(arr);
		table_free(t);
		return -1;
	}
	if (arr != NULL) {
		table_free(t);
		return json_dump(arr, out, error_r);
	}
	table_print(t, out);
	return 0;
}

int directory_domain_list(struct directory *dir, FILE *out, bool json, char **error_r)
{
	sqlite3_stmt *st = prepare(
		dir, "SELECT name, 'local', NULL,"
		     " (SELECT count(*) FROM accounts a WHERE a.domain = d.name),"
		     " (SELECT count(*) FROM aliases l WHERE l.domain = d.name) FROM domains d"
		     " UNION ALL SELECT alias, 'alias', target, NULL, NULL FROM domain_aliases"
		     " ORDER BY 1");
	if (st == NULL) {
		db_error(dir, error_r, "list");
		return -1;
	}
	json_t *arr = json ? json_array() : NULL;
	struct table t = {.ncols = 5};
	const char *hdr[] = {"DOMAIN", "TYPE", "ALIAS-OF", "ACCOUNTS", "ALIASES"};
	table_add(&t, hdr);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		const char *type = (const char *)sqlite3_column_text(st, 1);
		const char *target = (const char *)sqlite3_column_text(st, 2);
		bool local = strcmp(type, "local") == 0;
		int64_t na = sqlite3_column_int64(st, 3), nl = sqlite3_column_int64(st, 4);
		if (json) {
			json_t *o = json_pack("{s:s, s:s}", "domain", name, "type", type);
			if (local) {
				json_object_set_new(o, "accounts", json_integer(na));
				json_object_set_new(o, "aliases", json_integer(nl));
			} else {
				json_object_set_new(o, "target", json_string(target));
			}
			json_array_append_new(arr, o);
		} else {
			char a[32] = "-", l[32] = "-";
			if (local) {
				snprintf(a, sizeof(a), "%lld", (long long)na);
				snprintf(l, sizeof(l), "%lld", (long long)nl);
			}
			const char *row[] = {name, type, local ? "-" : target, a, l};
			table_add(&t, row);
		}
	}
	return list_finish(dir, st, rc, arr, &t, out, error_r);
}

int directory_user_list(struct directory *dir, FILE *out, bool json, char **error_r)
{
	sqlite3_stmt *st = prepare(dir, "SELECT address, name, quota, used, created FROM accounts"
					" ORDER BY domain, local");
	if (st == NULL) {
		db_error(dir, error_r, "list");
		return -1;
	}
	json_t *arr = json ? json_array() : NULL;
	struct table t = {.ncols = 4};
	const char *hdr[] = {"ADDRESS", "QUOTA", "USED", "NAME"};
	table_add(&t, hdr);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *address = (const char *)sqlite3_column_text(st, 0);
		const char *name = (const char *)sqlite3_column_text(st, 1);
		int64_t quota = sqlite3_column_int64(st, 2), used = sqlite3_column_int64(st, 3);
		if (json) {
			json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I, s:I}", "address",
							     address, "name", name, "quota",
							     (json_int_t)quota, "used",
							     (json_int_t)used, "created",
							     (json_int_t)sqlite3_column_int64(st, 4)));
		} else {
			char q[32], u[32];
			if (quota == 0)
				strcpy(q, "unlimited");
			else
				format_size((uint64_t)quota, q, sizeof(q));
			snprintf(u, sizeof(u), "%lld", (long long)used);
			const char *row[] = {address, q, u, name};
			table_add(&t, row);
		}
	}
	return list_finish(dir, st, rc, arr, &t, out, error_r);
}

int directory_alias_list(struct directory *dir, FILE *out, bool json, char **error_r)
{
	sqlite3_stmt *st =
		prepare(dir, "SELECT address, targets FROM aliases ORDER BY domain, address");
	if (st == NULL) {
		db_error(dir, error_r, "list");
		return -1;
	}
	json_t *arr = json ? json_array() : NULL;
	struct table t = {.ncols = 2};
	const char *hdr[] = {"ADDRESS", "TARGETS"};
	table_add(&t, hdr);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *address = (const char *)sqlite3_column_text(st, 0);
		const char *targets = (const char *)sqlite3_column_text(st, 1);
		if (json) {
			json_t *ta = json_array();
			char **v = strv_split_list(targets, NULL);
			for (char **p = v; *p != NULL; p++)
				json_array_append_new(ta, json_string(*p));
			strv_free(&v);
			json_array_append_new(arr, json_pack("{s:s, s:o, s:b}", "address", address,
							     "targets", ta, "catchall",
							     address[0] == '@'));
		} else {
			const char *row[] = {address, targets};
			table_add(&t, row);
		}
	}
	return list_finish(dir, st, rc, arr, &t, out, error_r);
}
