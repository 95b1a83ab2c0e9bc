/*
 * Password hashing. New hashes are yescrypt ($y$, libxcrypt). Verification
 * also accepts what migrations bring along: crypt(3) hashes ($y$, $6$, $5$,
 * $2b$/$2y$), Dovecot-style {SCHEME} prefixes ({SHA512-CRYPT}, {BLF-CRYPT},
 * {SHA256-CRYPT}, {ARGON2ID}, {ARGON2I}, {CRYPT}) and bare $argon2id$ hashes.
 * Comparison is constant-time. Both calls are slow by design (~50-100 ms):
 * never call them on the event-loop thread.
 */
#ifndef POSTERN_PASSWORD_H
#define POSTERN_PASSWORD_H

#include <stdbool.h>

/* Allocated yescrypt hash, or NULL on failure. */
char *password_hash(const char *password);
/* True if `password` matches `hash`. Unknown schemes never match. */
bool password_verify(const char *password, const char *hash);

#endif
