/*
 * DKIM signing keys of the local domains, stored as files in the data
 * directory so a new or rotated key takes effect without a restart (the
 * signer reads them when it needs them):
 *
 *   DATA_DIR/dkim/DOMAIN/SELECTOR.pem   the private key (PKCS#8 PEM, 0600)
 *   DATA_DIR/dkim/DOMAIN/SELECTOR.key   its metadata, "name=value" lines:
 *                                       algorithm, created, state, txt
 *
 * The .pem file is written first, the .key file last (both through a
 * temporary file and rename), so a key without metadata is never used.
 * The signer does not read these per message: it asks a dkimkeys_cache
 * (below) for the domain's parsed keys, which checks them against the
 * files' stat() data and reads them again only when they changed.
 * Directories are 0700. Giving the files to the service user is the
 * caller's business (the CLI runs as root).
 *
 * Domain and selector are checked as DNS names (RFC 6376 3.1: the selector
 * is a sub-domain), so neither can name a path outside DATA_DIR/dkim.
 */
#ifndef POSTERN_DKIMKEYS_H
#define POSTERN_DKIMKEYS_H

#include "mail/dkim.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Longest selector we create or accept (a DNS label is 63 octets). */
#define DKIMKEYS_MAX_SELECTOR 63
/* Metadata files larger than this are refused (an RSA-4096 TXT is ~800). */
#define DKIMKEYS_MAX_META 8192

enum dkimkey_state { DKIMKEY_ACTIVE, DKIMKEY_RETIRED };

struct dkimkey {
	char *domain;
	char *selector;
	enum dkim_keygen_alg alg;
	time_t created;
	enum dkimkey_state state;
	char *txt; /* the TXT value to publish at SELECTOR._domainkey.DOMAIN */
	char *pem; /* the private key; only when loaded with it, else NULL */
};

struct dkimkey_list {
	struct dkimkey *v;
	size_t n, cap;
};

/* "ed25519" / "rsa2048"; parse returns -1 for anything else. */
const char *dkimkey_alg_name(enum dkim_keygen_alg alg);
int dkimkey_alg_parse(const char *s, enum dkim_keygen_alg *alg_r);
/* "active" / "retired". */
const char *dkimkey_state_name(enum dkimkey_state st);

/* True if `s` is a syntactically valid domain / selector (lowercase
   letters, digits, '-' and '.' between non-empty labels). */
bool dkimkeys_name_ok(const char *s, size_t max);

/*
 * Generate a key of `alg` for `domain` under `selector` and store it as
 * active, created at `now`. Fails if the selector exists for the domain.
 * On success *key_r is filled (with pem NULL; free with dkimkey_clear).
 * Returns 0, or -1 with an allocated *error_r.
 */
int dkimkeys_create(const char *data_dir, const char *domain, const char *selector,
                    enum dkim_keygen_alg alg, time_t now, struct dkimkey *key_r, char **error_r);

/* True if the selector is already used for the domain (any state). */
bool dkimkeys_exists(const char *data_dir, const char *domain, const char *selector);

/*
 * Every key of `domain` (NULL: of every domain), sorted by domain, then
 * creation time, then selector; with the private keys if `with_pem`.
 * `active_only` leaves out retired keys. A missing dkim directory is an
 * empty list. Returns 0, or -1 with an allocated *error_r (a metadata file
 * that cannot be read or parsed is an error, not skipped).
 */
int dkimkeys_list(const char *data_dir, const char *domain, bool active_only, bool with_pem,
                  struct dkimkey_list *out, char **error_r);

/*
 * For the signer: the active keys of `domain` with their private keys
 * (both algorithms may sign together, RFC 8463). *out is empty when the
 * domain has none. Same return as dkimkeys_list.
 */
int dkimkeys_load_active(const char *data_dir, const char *domain, struct dkimkey_list *out,
                         char **error_r);

/* Change the state of one key (rewrites its metadata atomically). */
int dkimkeys_set_state(const char *data_dir, const char *domain, const char *selector,
                       enum dkimkey_state state, char **error_r);

/* Remove one key (its .pem and .key files). */
int dkimkeys_delete(const char *data_dir, const char *domain, const char *selector, char **error_r);

void dkimkey_clear(struct dkimkey *k);
void dkimkey_list_free(struct dkimkey_list *l);

/* ---- the signer's cache of parsed keys ---- */

/* Domains a cache holds at most; the least recently used goes first. */
#define DKIMKEYS_CACHE_DOMAINS 1024

/* One active key, parsed. */
struct dkimkeys_signkey {
	const char *domain, *selector;
	enum dkim_keygen_alg alg; /* from the metadata */
	time_t created;
	struct dkim_privkey *key; /* NULL when the private key did not parse: */
	const char *error;        /* why (static string), else NULL */
};

/*
 * The active keys of one domain as of one reading of its directory, sorted
 * by creation time then selector (as dkimkeys_load_active). Immutable and
 * shared between threads: each holder has a reference.
 */
struct dkimkeys_set {
	size_t n; /* 0: the domain has no active key */
	const struct dkimkeys_signkey *v;
};

struct dkimkeys_cache;

/* A cache of at most `max_domains` domains (0: DKIMKEYS_CACHE_DOMAINS). */
struct dkimkeys_cache *dkimkeys_cache_new(size_t max_domains);
/* Sets still referenced stay valid until released. */
void dkimkeys_cache_free(struct dkimkeys_cache **c);

/*
 * The active keys of `domain` under `data_dir`, with their private keys
 * parsed. A cached set is used while DATA_DIR/dkim/DOMAIN, every .key file
 * in it and the .pem files of its active keys have the same inode, size,
 * mtime and ctime (ns) as when they were read, and the set was read more
 * than a clock tick after the last of those changed (100 ms; a second on a
 * file system with whole-second timestamps: a change in the same tick would
 * leave the times as they are); else the directory is read again. So a key
 * added, retired or removed (`postern dkim`), or a file edited in place, is
 * used from the next message on, without a restart.
 *
 * Blocks on the file system (at least a few stat() calls): call it on a
 * worker thread, never on the event loop. Thread-safe.
 *
 * Returns 0 with *set_r (an empty set when the domain has no active key or
 * no key directory; give it back with dkimkeys_set_release), or -1 with an
 * allocated *error_r, as dkimkeys_load_active (an error is not cached).
 */
int dkimkeys_cache_get(struct dkimkeys_cache *c, const char *data_dir, const char *domain,
                       const struct dkimkeys_set **set_r, char **error_r);
void dkimkeys_set_release(const struct dkimkeys_set **set);

/*
 * From memory only (no file system access: fit for the event loop): true
 * when a lookup of `domain` less than `max_age_ms` ago found no active key.
 * The signer uses it to skip hashing messages nobody will sign; a key made
 * since that lookup is not seen here (dkimkeys_cache_get sees it).
 */
bool dkimkeys_cache_known_keyless(struct dkimkeys_cache *c, const char *data_dir,
                                  const char *domain, unsigned max_age_ms);

struct dkimkeys_cache_stats {
	uint64_t hits;      /* answered from the cache (after the stat() checks) */
	uint64_t loads;     /* directory read and keys parsed */
	uint64_t evictions; /* domains dropped for room */
	size_t domains;     /* held now */
};
void dkimkeys_cache_get_stats(struct dkimkeys_cache *c, struct dkimkeys_cache_stats *out);

#endif
