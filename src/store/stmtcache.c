/* Prepared statements kept per connection (see stmtcache.h). */
#include "store/stmtcache.h"

#include <string.h>

static uint32_t sql_hash(const char *sql)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)sql; *p != '\0'; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

sqlite3_stmt *stmt_cache_get(struct stmt_cache *c, sqlite3 *db, const char *sql)
{
	uint32_t h = sql_hash(sql);
	for (size_t i = 0; i < c->n; i++) {
		struct stmt_cache_ent *e = &c->ents[i];
		if (e->hash == h && !e->in_use && strcmp(e->sql, sql) == 0) {
			e->in_use = true;
			return e->s;
		}
	}
	size_t max = c->max > 0 && c->max < STMT_CACHE_MAX ? c->max : STMT_CACHE_MAX;
	bool keep = c->n < max;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v3(db, sql, -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, &s, NULL) !=
	    SQLITE_OK) {
		sqlite3_finalize(s);
		return NULL;
	}
	if (keep)
		c->ents[c->n++] = (struct stmt_cache_ent){
		    .s = s, .sql = sqlite3_sql(s), .hash = h, .in_use = true};
	return s;
}

void stmt_cache_put(struct stmt_cache *c, sqlite3_stmt *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; c != NULL && i < c->n; i++)
		if (c->ents[i].s == s) {
			sqlite3_reset(s);
			sqlite3_clear_bindings(s);
			c->ents[i].in_use = false;
			return;
		}
	sqlite3_finalize(s);
}

void stmt_cache_clear(struct stmt_cache *c)
{
	for (size_t i = 0; i < c->n; i++)
		sqlite3_finalize(c->ents[i].s);
	c->n = 0;
}

void store_sqlite_init(void)
{
	/* SQLITE_MISUSE once SQLite is initialised: too late, harmless */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
