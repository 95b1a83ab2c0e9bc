/*
 * DKIM: RFC 6376 signatures with the RFC 8301 and RFC 8463 algorithm updates.
 *
 * Pure code: no sockets. Verification and signing both take the message as
 * a byte stream (dkim_verifier_push / dkim_signer_push), exactly as it is
 * received, with CRLF or bare LF line ends. The header section is buffered
 * (bounded by DKIM_MAX_HEADER_BYTES); the body is canonicalized and hashed
 * chunk by chunk, so a large body is never copied.
 *
 * Key records come through a small blocking interface (struct
 * dkim_key_resolver): the daemon verifies on a worker thread, where a
 * blocking call into the libunbound resolver is fine; tests plug in records
 * read from files.
 *
 * Everything the peer controls is bounded: signature header size, number of
 * tags, h= list length, number of signatures evaluated, key record size.
 */
#ifndef POSTERN_DKIM_H
#define POSTERN_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define DKIM_MAX_SIG_BYTES (16 * 1024)      /* one DKIM-Signature field */
#define DKIM_MAX_TAGS 64                    /* tags in a signature or key record */
#define DKIM_MAX_H_ENTRIES 128              /* header names in one h= list */
#define DKIM_MAX_SIGNATURES 16              /* signatures evaluated per message */
#define DKIM_MAX_KEY_BYTES 8192             /* one key record (TXT strings joined) */
#define DKIM_MAX_HEADER_BYTES (1024 * 1024) /* header section buffered */
#define DKIM_MAX_HEADER_FIELDS 1000         /* fields in the header section */
#define DKIM_MIN_RSA_BITS 1024              /* RFC 8301 3.2 */
#define DKIM_MAX_RSA_BITS 8192              /* a bigger key costs seconds per signature: refused */

enum dkim_result {
	DKIM_NONE,      /* no signature */
	DKIM_PASS,      /* RFC 8601 2.7.1 */
	DKIM_FAIL,      /* signature or body hash does not match */
	DKIM_NEUTRAL,   /* failed, but the key is in testing mode (t=y) */
	DKIM_POLICY,    /* valid, but not acceptable: rsa-sha1 (RFC 8301) */
	DKIM_TEMPERROR, /* key lookup failed temporarily */
	DKIM_PERMERROR, /* signature or key unusable: syntax, revoked, expired... */
};

/* "none", "pass", "fail", ... as in RFC 8601. */
const char *dkim_result_name(enum dkim_result r);

/* ---- tag lists (RFC 6376 3.2) ---- */

struct dkim_tag {
	char name[32];
	size_t name_len;
	const char *value; /* points into the parsed text; not NUL-terminated */
	size_t value_len;  /* surrounding FWS excluded */
	size_t value_off;  /* offset of the first octet after '=' */
	size_t end_off;    /* offset of the ';' ending the tag, or of the end */
};

struct dkim_taglist {
	struct dkim_tag tags[DKIM_MAX_TAGS];
	size_t count;
};

/*
 * Parse a tag-list. Strict: tag names are ALPHA *(ALNUM / "_"), values are
 * printable ASCII except ';' with internal FWS, a duplicate tag is an error.
 * Returns 0, or -1 with *error_r set (static string).
 */
int dkim_taglist_parse(const char *s, size_t len, struct dkim_taglist *tl, const char **error_r);
/* The tag named `name`, or NULL. */
const struct dkim_tag *dkim_taglist_get(const struct dkim_taglist *tl, const char *name);

/* ---- DKIM-Signature (RFC 6376 3.5) ---- */

enum dkim_alg { DKIM_ALG_RSA_SHA1, DKIM_ALG_RSA_SHA256, DKIM_ALG_ED25519_SHA256 };
enum dkim_canon { DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED };

struct dkim_signature {
	enum dkim_alg alg;
	enum dkim_canon header_canon, body_canon;
	char *domain;   /* d=, lowercased */
	char *selector; /* s= */
	char *identity; /* i= decoded, or "@" + d= when absent */
	char **headers; /* h= names as given, `header_count` of them */
	size_t header_count;
	unsigned char *bh; /* body hash (decoded) */
	size_t bh_len;
	unsigned char *b; /* signature (decoded) */
	size_t b_len;
	char *b_text; /* b= as written, FWS removed (for RFC 6008 header.b) */
	bool has_l;
	uint64_t l;
	bool has_t, has_x;
	uint64_t t, x;
	size_t b_value_off, b_value_end; /* the b= value in the field, for hashing */
};

/*
 * Parse the value of a DKIM-Signature field (everything after the colon).
 * `now` checks x= (0: do not check expiry). Returns 0, or -1 with *error_r
 * set (static string); on error *sig is left empty (nothing to free).
 */
int dkim_signature_parse(const char *value, size_t len, time_t now, struct dkim_signature *sig,
                         const char **error_r);
void dkim_signature_clear(struct dkim_signature *sig);

/* ---- key records (RFC 6376 3.6.1) ---- */

enum dkim_key_type { DKIM_KEY_RSA, DKIM_KEY_ED25519 };

struct dkim_key {
	enum dkim_key_type type;
	bool revoked;                /* empty p= */
	bool testing;                /* t=y */
	bool strict;                 /* t=s: i= domain must equal d= */
	bool hash_sha1, hash_sha256; /* h=, both true when absent */
	bool has_g;                  /* g= (RFC 4871, honoured for compatibility) */
	char *g;
	unsigned char *p; /* decoded p= */
	size_t p_len;
};

/* Parse a key record. Returns 0, or -1 with *error_r set (static string). */
int dkim_key_parse(const char *rec, size_t len, struct dkim_key *key, const char **error_r);
void dkim_key_clear(struct dkim_key *key);

/* ---- key lookup ---- */

enum dkim_dns_rcode {
	DKIM_DNS_OK,       /* records found (count may be 0: no TXT) */
	DKIM_DNS_NXDOMAIN, /* no such name */
	DKIM_DNS_TEMPFAIL, /* timeout, SERVFAIL, bogus */
};

struct dkim_txt {
	char **records; /* each TXT record, its strings joined */
	size_t *lens;
	size_t count, cap;
};

/* Add one TXT record to an answer (called by resolvers); copies `data`. */
void dkim_txt_add(struct dkim_txt *out, const char *data, size_t len);
void dkim_txt_clear(struct dkim_txt *out);

struct dkim_key_resolver {
	/*
	 * Look up the TXT records of `name` ("selector._domainkey.domain"),
	 * adding each with dkim_txt_add(). May block. Returns a dkim_dns_rcode.
	 */
	int (*txt)(void *ctx, const char *name, struct dkim_txt *out);
	void *ctx;
};

/* ---- canonicalization (RFC 6376 3.4) ---- */

/*
 * Streaming body canonicalizer. Bytes go in as received (CRLF or LF line
 * ends); canonical bytes come out through `emit`. Trailing empty lines are
 * held back until non-empty content follows them, so memory stays constant.
 */
struct dkim_body_canon {
	enum dkim_canon canon;
	size_t pending_crlf; /* empty lines not yet emitted */
	bool pending_wsp;    /* relaxed: whitespace run not yet emitted */
	bool pending_cr;     /* a CR whose LF may come in the next chunk */
	bool emitted;        /* any content emitted */
	void (*emit)(void *ctx, const char *data, size_t len);
	void *ctx;
};

void dkim_body_canon_init(struct dkim_body_canon *bc, enum dkim_canon canon,
                          void (*emit)(void *ctx, const char *data, size_t len), void *ctx);
void dkim_body_canon_push(struct dkim_body_canon *bc, const char *data, size_t len);
void dkim_body_canon_finish(struct dkim_body_canon *bc);

/*
 * Canonicalize one header field (name, colon, value, folded lines, without
 * the final CRLF; CRLF or LF inside) and append it to *out (xrealloc'd) with
 * a final CRLF when `crlf`.
 */
void dkim_header_canon(enum dkim_canon canon, const char *field, size_t len, bool crlf, char **out,
                       size_t *out_len, size_t *out_cap);

/* ---- verification ---- */

struct dkim_sig_result {
	enum dkim_result result;
	const char *reason;     /* static string, "" on pass */
	char *domain;           /* d= (NULL when unparseable) */
	char *selector;         /* s= */
	char *identity;         /* i= */
	const char *algorithm;  /* "rsa-sha256", ... or NULL */
	char *b_prefix;         /* first 8 characters of b= (RFC 6008), NULL if none */
	unsigned key_bits;      /* RSA modulus size, 256 for Ed25519, 0 when no key was loaded */
	bool testing;           /* key has t=y */
	bool has_l;             /* l= was given */
	uint64_t body_length;   /* canonical body octets */
	uint64_t body_unsigned; /* canonical body octets after l= (not covered) */
};

struct dkim_verifier;

/*
 * A verifier for one message. `now` is the time for x= checks. The
 * resolver is used in dkim_verifier_finish().
 */
struct dkim_verifier *dkim_verifier_new(const struct dkim_key_resolver *resolver, time_t now);
/* Accept RSA keys from `bits` (default DKIM_MIN_RSA_BITS). */
void dkim_verifier_set_min_rsa_bits(struct dkim_verifier *v, unsigned bits);
/* Feed message bytes. Returns 0, or -1 when the header section is too
   large (the message is then evaluated as unverifiable: permerror). */
int dkim_verifier_push(struct dkim_verifier *v, const void *data, size_t len);
/*
 * End of message: look up keys, check every signature (up to
 * DKIM_MAX_SIGNATURES, top to bottom). Returns the number of results,
 * *results_r points into the verifier (valid until dkim_verifier_free).
 */
size_t dkim_verifier_finish(struct dkim_verifier *v, const struct dkim_sig_result **results_r);
void dkim_verifier_free(struct dkim_verifier **v);

/* ---- signing ---- */

/*
 * A parsed private key: RSA (>= DKIM_MIN_RSA_BITS) or Ed25519. Immutable
 * once made, so one key may sign on several threads at once; refcounted
 * (a signer or a key cache holds a reference). Parsing PEM costs more than
 * an Ed25519 signature: a server parses each key once and keeps it.
 */
struct dkim_privkey;

/* PKCS#8 or traditional PEM. Returns NULL with *error_r set (static string). */
struct dkim_privkey *dkim_privkey_parse(const char *pem, const char **error_r);
/* Another reference to `k` (thread-safe). */
struct dkim_privkey *dkim_privkey_ref(struct dkim_privkey *k);
/* Drop a reference (thread-safe); the last one frees the key. Sets *k to NULL. */
void dkim_privkey_unref(struct dkim_privkey **k);
bool dkim_privkey_is_ed25519(const struct dkim_privkey *k);
/*
 * Sign a SHA-256 `hash` as DKIM and ARC do (RSASSA-PKCS1-v1_5 with SHA-256,
 * RFC 6376 3.3.1; PureEdDSA over the hash, RFC 8463 3). Returns 0 with
 * *sig_r (xmalloc'd) and *sig_len_r, or -1.
 */
int dkim_privkey_sign(const struct dkim_privkey *k, const unsigned char *hash, size_t hash_len,
                      unsigned char **sig_r, size_t *sig_len_r);

struct dkim_sign_params {
	const char *domain;       /* d= */
	const char *selector;     /* s= */
	struct dkim_privkey *key; /* the private key, or NULL to parse key_pem */
	const char
	    *key_pem; /* PKCS#8 or traditional PEM private key: RSA (>= 1024 bits) or Ed25519 */
	const char *identity; /* i=, NULL for none */
	time_t timestamp;     /* t= */
	uint64_t expire;      /* seconds until x=, 0 for no x= */
};

struct dkim_signer;

/* Returns NULL with *error_r set (static string) on a bad key or domain.
   A `key` given is referenced, not copied. */
struct dkim_signer *dkim_signer_new(const struct dkim_sign_params *params, const char **error_r);
/*
 * A signer whose keys are chosen once the message is complete (the From
 * domain is known only at the end of the header section, the key lookup
 * may touch the disk): feed it, then call dkim_signer_sign() once per key.
 * The header section is buffered and the body hashed once for all keys
 * (every signature is relaxed/relaxed SHA-256).
 */
struct dkim_signer *dkim_signer_new_unkeyed(void);
/* Feed message bytes (as for the verifier). Returns 0, or -1 when the header
   section is too large. */
int dkim_signer_push(struct dkim_signer *s, const void *data, size_t len);
/*
 * End of message: returns the "DKIM-Signature: ...\r\n" field to prepend
 * (xmalloc'd, folded at 78 columns, relaxed/relaxed) made with the key of
 * dkim_signer_new, or NULL with *error_r set (no From header, header
 * section too large, signing failed, an unkeyed signer).
 */
char *dkim_signer_finish(struct dkim_signer *s, const char **error_r);
/*
 * End of message (after the last push): the same with the key and names of
 * `params`, which are checked as by dkim_signer_new. May be called several
 * times, one signature per key.
 */
char *dkim_signer_sign(struct dkim_signer *s, const struct dkim_sign_params *params,
                       const char **error_r);
void dkim_signer_free(struct dkim_signer **s);

/* ---- keys ---- */

enum dkim_keygen_alg { DKIM_KEYGEN_ED25519, DKIM_KEYGEN_RSA2048 };

/*
 * Generate a key pair. *pem_r: the PKCS#8 PEM private key; *txt_r: the TXT
 * record value to publish ("v=DKIM1; k=ed25519; p=..."). Both xmalloc'd.
 * Returns 0, or -1 with *error_r set.
 */
int dkim_keygen(enum dkim_keygen_alg alg, char **pem_r, char **txt_r, const char **error_r);

#endif
