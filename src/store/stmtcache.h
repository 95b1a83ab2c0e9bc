/*
 * Prepared SQLite statements kept per connection: parsing SQL is a large part
 * of a short query's cost. A statement handed out is marked in use and is not
 * handed out again until it is given back, so a query nested in a loop over
 * the same SQL gets a fresh one (finalized when given back). Giving a
 * statement back resets it (its read transaction ends: a kept statement never
 * holds an old snapshot) and clears its bindings. One cache per connection,
 * used by one thread.
 */
#ifndef POSTERN_STMTCACHE_H
#define POSTERN_STMTCACHE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STMT_CACHE_MAX 64

struct stmt_cache {
	struct stmt_cache_ent {
		sqlite3_stmt *s;
		const char *sql; /* sqlite3_sql(s) */
		uint32_t hash;
		bool in_use;
	} ents[STMT_CACHE_MAX];
	size_t n;
	size_t max; /* how many to keep, at most STMT_CACHE_MAX (0: STMT_CACHE_MAX) */
};

/* A statement for `sql` on `db`, kept or freshly prepared; NULL if it does not prepare
   (sqlite3_errmsg(db) tells why). */
sqlite3_stmt *stmt_cache_get(struct stmt_cache *c, sqlite3 *db, const char *sql);

/* Give back a statement from stmt_cache_get() (NULL is fine). */
void stmt_cache_put(struct stmt_cache *c, sqlite3_stmt *s);

/* Finalize every kept statement (before the connection is closed). */
void stmt_cache_clear(struct stmt_cache *c);

/*
 * Process-wide SQLite settings, before the first connection opens: no
 * memory statistics (they serialise every allocation of every connection on
 * one global mutex, contended by the worker threads).
 */
void store_sqlite_init(void);

#endif
