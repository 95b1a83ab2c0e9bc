/*
 * Password hashing and verification.
 *
 * New hashes are yescrypt from libxcrypt with its default cost. Verification
 * accepts the hashes a migration from Dovecot or a Unix passwd file brings:
 * crypt(3) strings ($y$, $6$, $5$, $2a$/$2b$/$2y$), the same behind Dovecot's
 * {SCHEME} prefixes, and Argon2 ($argon2id$/$argon2i$, bare or as
 * {ARGON2ID}/{ARGON2I}). Weak legacy schemes (DES crypt, MD5-CRYPT, plain
 * text, unsalted digests) are deliberately not accepted: they never match.
 *
 * SECURITY: the computed hash is compared with the stored one in constant
 * time; scratch memory holding password material is wiped before it is
 * freed. Both calls cost tens of milliseconds on purpose: run them on a
 * worker thread.
 */
#include "store/password.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <argon2.h>
#include <crypt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *password_hash(const char *password)
{
	if (password == NULL)
		return NULL;
	char *setting = crypt_gensalt_ra("$y$", 0, NULL, 0);
	if (setting == NULL)
		return NULL;
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	const char *h = crypt_rn(password, setting, cd, sizeof(*cd));
	char *result = NULL;
	/* libxcrypt reports failure with NULL or a string starting with '*' */
	if (h != NULL && h[0] == '$')
		result = xstrdup(h);
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	free(setting);
	return result;
}

/* crypt(3) prefixes we verify through libxcrypt. */
static bool crypt_scheme_allowed(const char *hash)
{
	static const char *const prefixes[] = {"$y$", "$6$", "$5$", "$2a$", "$2b$", "$2y$"};
	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
		if (strncmp(hash, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

static bool verify_crypt(const char *password, const char *hash)
{
	if (!crypt_scheme_allowed(hash))
		return false;
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	const char *h = crypt_rn(password, hash, cd, sizeof(*cd));
	bool ok = false;
	if (h != NULL && h[0] == '$') {
		size_t n = strlen(hash);
		/* lengths are public (they follow from the scheme); contents are not */
		ok = strlen(h) == n && mem_equal_ct(h, hash, n);
	}
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return ok;
}

static bool verify_argon2(const char *password, const char *hash)
{
	/* argon2_verify() recomputes and compares in constant time */
	size_t len = strlen(password);
	if (strncmp(hash, "$argon2id$", 10) == 0)
		return argon2id_verify(hash, password, len) == ARGON2_OK;
	if (strncmp(hash, "$argon2i$", 9) == 0)
		return argon2i_verify(hash, password, len) == ARGON2_OK;
	return false;
}

/* Dovecot's {SCHEME} prefixes and the hash formats each may carry. */
static const struct {
	const char *scheme;
	const char *must_start; /* NULL: any accepted crypt(3) string */
	bool argon2;
} dovecot_schemes[] = {
	{"{SHA512-CRYPT}", "$6$", false}, {"{SHA256-CRYPT}", "$5$", false},
	{"{BLF-CRYPT}", "$2", false},     {"{CRYPT}", NULL, false},
	{"{ARGON2ID}", "$argon2id$", true}, {"{ARGON2I}", "$argon2i$", true},
};

bool password_verify(const char *password, const char *hash)
{
	if (password == NULL || hash == NULL || *hash == '\0')
		return false;
	if (hash[0] == '{') {
		for (size_t i = 0; i < ARRAY_SIZE(dovecot_schemes); i++) {
			size_t n = strlen(dovecot_schemes[i].scheme);
			if (strncasecmp(hash, dovecot_schemes[i].scheme, n) != 0)
				continue;
			const char *rest = hash + n;
			const char *want = dovecot_schemes[i].must_start;
			if (want != NULL && strncmp(rest, want, strlen(want)) != 0)
				return false;
			return dovecot_schemes[i].argon2 ? verify_argon2(password, rest)
							 : verify_crypt(password, rest);
		}
		return false; /* unknown or weak scheme */
	}
	if (strncmp(hash, "$argon2", 7) == 0)
		return verify_argon2(password, hash);
	return verify_crypt(password, hash);
}
