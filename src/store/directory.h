/*
 * The directory: domains, domain aliases, accounts and aliases, stored in
 * SQLite at DATA_DIR/postern.db (WAL). Admin commands and the running server
 * share the file; every lookup reads the database, so changes made with the
 * CLI take effect at once, without a reload.
 *
 * A `struct directory` is one SQLite connection and is NOT thread-safe: each
 * thread opens its own (see directory_thread()). All calls may block on disk:
 * never call them on the event-loop thread, but for the one exception of
 * directory_thread_nowait().
 *
 * Addresses are handled in canonical form: the domain lowercased (A-label
 * for IDNs), the local part lowercased (local parts are matched without
 * regard to case, as Dovecot and Postfix virtual domains do).
 */
#ifndef POSTERN_DIRECTORY_H
#define POSTERN_DIRECTORY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct directory;

/* Open DATA_DIR/postern.db, creating the schema if `create`. 0 / -1 + *error_r (allocated). */
int directory_open(const char *data_dir, bool create, struct directory **dir_r, char **error_r);
void directory_close(struct directory **dir);

/*
 * A per-thread connection opened lazily for `data_dir`, closed when the
 * thread exits. NULL (and a logged error) if the database cannot be opened.
 */
struct directory *directory_thread(const char *data_dir);
/*
 * The same for the event-loop thread's address lookups (SMTP RCPT): SQLite
 * does not wait for locks on it (busy timeout 0), so a lookup fails at once
 * where another would wait; the caller runs a failed one again on a worker.
 * Only for reads; it still reads pages from disk when they are not cached,
 * which the caller bounds by timing the lookups.
 */
struct directory *directory_thread_nowait(const char *data_dir);

/* ---- administration (CLI). Each returns 0, or -1 with *error_r (allocated, human text). ---- */

int directory_domain_add(struct directory *dir, const char *domain, char **error_r);
/* Deleting a domain fails while accounts or aliases remain in it. */
int directory_domain_del(struct directory *dir, const char *domain, char **error_r);
/* Mail to anything@alias_domain is handled as anything@target_domain. */
int directory_domain_alias(struct directory *dir, const char *alias_domain,
			   const char *target_domain, char **error_r);

/* quota: bytes, 0 = unlimited. password_hash: from password_hash(). */
int directory_user_add(struct directory *dir, const char *address, const char *password_hash,
		       const char *name, uint64_t quota, char **error_r);
int directory_user_del(struct directory *dir, const char *address, char **error_r);
int directory_user_passwd(struct directory *dir, const char *address, const char *password_hash,
			  char **error_r);
int directory_user_quota(struct directory *dir, const char *address, uint64_t quota,
			 char **error_r);

/* address: local@domain or @domain (catch-all). targets: comma/space list. */
int directory_alias_add(struct directory *dir, const char *address, const char *targets,
			char **error_r);
int directory_alias_del(struct directory *dir, const char *address, char **error_r);

/* Listings, as text lines or a JSON array, to `out`. */
int directory_domain_list(struct directory *dir, FILE *out, bool json, char **error_r);
int directory_user_list(struct directory *dir, FILE *out, bool json, char **error_r);
int directory_alias_list(struct directory *dir, FILE *out, bool json, char **error_r);

/* ---- lookups (server) ---- */

struct account {
	int64_t id;
	char *address;  /* canonical local@domain */
	char *maildir;  /* absolute path of the Maildir++ root */
	uint64_t quota; /* bytes, 0 = unlimited */
	uint64_t used;  /* bytes currently stored */
};

void account_free_fields(struct account *a);

enum resolve_result {
	RESOLVE_OK,           /* targets filled */
	RESOLVE_NOT_LOCAL,    /* the domain is not one of ours */
	RESOLVE_UNKNOWN_USER, /* local domain, no such account/alias/catch-all */
	RESOLVE_LOOP,         /* alias expansion loops or is too deep */
	RESOLVE_ERROR,        /* temporary failure (database) */
};

struct resolved {
	/* local accounts the mail is delivered to (deduplicated) */
	struct account *accounts;
	size_t naccounts;
	/* external addresses (alias targets outside our domains) */
	char **external;
	size_t nexternal;
};

void resolved_free(struct resolved *r);

/* True if `domain` (or a domain alias of it) is one of ours. -1 on error. */
int directory_is_local_domain(struct directory *dir, const char *domain);

/*
 * Several lookups in one read transaction: each statement on its own takes
 * and drops SQLite's WAL read lock (two fcntl() calls on postern.db-shm);
 * between these they share one snapshot. Lookups only: end it before any
 * change through the same handle. begin: 0 / -1 (then the lookups simply
 * run on their own; end is a no-op).
 */
int directory_read_begin(struct directory *dir);
void directory_read_end(struct directory *dir);

/*
 * Expand a recipient: domain aliases, exact aliases (recursively, loops
 * detected, depth <= 16), accounts, plus-addressing (user+tag@ -> user@),
 * then the domain's catch-all. `address` is local@domain as received.
 */
enum resolve_result directory_resolve(struct directory *dir, const char *address,
				      struct resolved *r);

/*
 * Verify a login. `login` is local@domain (or a bare local part, when
 * default_domain is not NULL/empty). Returns 1 with *account_r filled on
 * success, 0 for a wrong login or password, -1 on error. Slow on purpose
 * (password hashing): call from a worker thread.
 */
int directory_authenticate(struct directory *dir, const char *login, const char *password,
			   const char *default_domain, struct account *account_r);

/*
 * May the account `account_address` use `sender` as MAIL FROM? True for its
 * own address, plus-variants of it, and any alias (including a domain's
 * catch-all is NOT enough) whose expansion delivers to the account.
 * 1 yes, 0 no, -1 error.
 */
int directory_sender_owned(struct directory *dir, const char *account_address,
			   const char *sender);

/* Every account (ascending id), allocated; free with directory_accounts_free(). 0 / -1. */
int directory_accounts(struct directory *dir, struct account **list_r, size_t *n_r,
		       char **error_r);
void directory_accounts_free(struct account **list, size_t n);

/* The account with canonical address `address`: 1 found (filled), 0 not, -1 error. */
int directory_account(struct directory *dir, const char *address, struct account *a);

/* Add `delta` (may be negative) to the account's stored-bytes counter. */
int directory_usage_add(struct directory *dir, int64_t account_id, int64_t delta);
/* The same for n accounts in one transaction (one fsync): all or none. 0 / -1. */
int directory_usage_add_many(struct directory *dir, const int64_t *account_ids,
			     const int64_t *deltas, size_t n);

#endif
