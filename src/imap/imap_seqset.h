/*
 * IMAP sequence sets (RFC 9051 9 "sequence-set"): "1:5,7,9:*" parsed into
 * sorted, merged ranges with "*" resolved, membership and iteration, and
 * the reverse: a list of numbers formatted into compact ranges (COPYUID,
 * ESEARCH ALL, VANISHED).
 */
#ifndef POSTERN_IMAP_SEQSET_H
#define POSTERN_IMAP_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Ranges accepted in one set; a longer set is a syntax error. */
#define IMAP_SEQSET_MAX_RANGES 10000

struct imap_range {
	uint32_t lo, hi; /* lo <= hi */
};

struct imap_seqset {
	struct imap_range *ranges; /* ascending, disjoint, not adjacent */
	size_t n;
	bool saved; /* the set was "$" (RFC 5182 SEARCHRES): ranges empty, use the saved result */
};

/*
 * Parse a sequence-set. "*" stands for `max`, the largest message number
 * or UID in use (0 in an empty mailbox: a range ending in "*" then covers
 * nothing but 0, which no message has). "a:b" is the same as "b:a", so
 * for UIDs "n:*" with n > max includes max (RFC 9051 6.4.8). Numbers are
 * nz-number (1..4294967295); the set is not checked against max, so an
 * MSN set naming a message that does not exist is left to the caller
 * (imap_seqset_last()). "$" alone sets `saved`. 0 on success; -1 with
 * *error_r (static text). set_r is always initialised (free it).
 */
int imap_seqset_parse(const char *s, uint32_t max, struct imap_seqset *set_r,
		      const char **error_r);
/* True if `s` has sequence-set syntax ("$" included); for SEARCH keys. */
bool imap_seqset_syntax(const char *s);

void imap_seqset_free(struct imap_seqset *set);

/* Add a range (any order; merged with neighbours). */
void imap_seqset_add(struct imap_seqset *set, uint32_t lo, uint32_t hi);

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n);
/* How many numbers the set holds. */
uint64_t imap_seqset_count(const struct imap_seqset *set);
/* Largest number in the set, 0 if empty. */
uint32_t imap_seqset_last(const struct imap_seqset *set);

/*
 * Iterate: `*it` starts at 0; each call stores the next number of the set
 * in *n_r and returns true, false at the end. it encodes the position.
 */
bool imap_seqset_next(const struct imap_seqset *set, uint64_t *it, uint32_t *n_r);

/*
 * The elements of sorted[0..n) (ascending, e.g. the UIDs of a mailbox)
 * that are in the set, written to out (room for n); returns how many.
 * With `indexes`, out gets their positions in `sorted` instead.
 * O(n + ranges).
 */
size_t imap_seqset_filter(const struct imap_seqset *set, const uint32_t *sorted, size_t n,
			  bool indexes, uint32_t *out);

/*
 * Format numbers as a sequence-set, in the order given, joining runs of
 * consecutive ascending numbers: {1,2,3,5,9,8} -> "1:3,5,9,8". The order
 * is kept because COPYUID pairs its two sets by position (RFC 4315 3).
 * "" for n == 0. Allocated.
 */
char *imap_seqset_format(const uint32_t *nums, size_t n);
/* A set as a string ("1:3,5"). Allocated. */
char *imap_seqset_string(const struct imap_seqset *set);

#endif
