/*
 * IMAP SEARCH programs (RFC 9051 6.4.4, RFC 3501 6.4.4): parsing the
 * search keys of SEARCH, SORT and THREAD into a program, and evaluating the
 * program on one message at a time. Also ESEARCH return options (RFC 4731),
 * SEARCHRES "$" (RFC 5182), MODSEQ (RFC 7162 3.1.5), OLDER/YOUNGER
 * (RFC 5032) and SAVEDBEFORE/SAVEDON/SAVEDSINCE/SAVEDATESUPPORTED (RFC 8514).
 *
 * String keys match as substrings under the i;unicode-casemap comparator
 * (RFC 5051) approximated by a fixed table: each character becomes
 * NFKD(casefold(NFKD(c))) for Latin, Greek, Cyrillic, their extended
 * blocks, letterlike symbols, ligatures and fullwidth ASCII (generated
 * from Unicode 14 data, so it never depends on the locale); other
 * characters compare as they are. So "strasse" finds "Straße", "cafe"
 * finds "Café", "ΣΟΦΊΑ" finds "σοφία".
 *
 * Dates: BEFORE/ON/SINCE and SAVED* compare the UTC day of INTERNALDATE /
 * the save date (Dovecot uses the server's local zone; Postern servers run
 * in UTC, so we state it). SENT* compare the day of the Date: header in
 * its own zone (RFC 9051: "disregarding time and timezone"); a message
 * without a usable Date: uses its INTERNALDATE, as for SORT (RFC 5256).
 *
 * BODY and TEXT decode every "text" part (and parts without Content-Type):
 * base64 and quoted-printable, then the charset to UTF-8; headers are
 * RFC 2047-decoded. Non-text parts are not searched. TEXT covers the
 * message header too; BODY covers the headers of enclosed messages.
 */
#ifndef POSTERN_IMAP_SEARCH_H
#define POSTERN_IMAP_SEARCH_H

#include "imap/imap_parser.h"
#include "imap/imap_seqset.h"
#include "store/mailbox.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting of parentheses, NOT and OR in a program. */
#define IMAP_SEARCH_MAX_DEPTH 32
/* Keys in one program. */
#define IMAP_SEARCH_MAX_KEYS 10000

/* ESEARCH RETURN options (RFC 4731 3.1, RFC 5182 SAVE) */
#define IMAP_SEARCH_RET_MIN 0x01
#define IMAP_SEARCH_RET_MAX 0x02
#define IMAP_SEARCH_RET_COUNT 0x04
#define IMAP_SEARCH_RET_ALL 0x08
#define IMAP_SEARCH_RET_SAVE 0x10

struct imap_search_options {
	bool esearch;     /* RETURN (...) was given: answer with ESEARCH */
	unsigned ret;     /* IMAP_SEARCH_RET_*; "RETURN ()" means ALL */
};

enum imap_search_error {
	IMAP_SEARCH_ERR_SYNTAX,     /* tagged BAD */
	IMAP_SEARCH_ERR_BADCHARSET, /* tagged NO [BADCHARSET (UTF-8 US-ASCII)] */
};

struct imap_search;

/*
 * Parse the arguments of SEARCH (after "UID" and "SEARCH"):
 * [RETURN (opts)] [CHARSET name] key *(key). Charsets: UTF-8 and US-ASCII.
 * 0 with *search_r and *opts_r set; -1 with *error_r (static text) and
 * *code_r.
 */
int imap_search_parse(const struct imap_arg *args, size_t nargs, struct imap_search **search_r,
		      struct imap_search_options *opts_r, const char **error_r,
		      enum imap_search_error *code_r);

/* Parse keys only (SORT and THREAD give their charset separately). */
int imap_search_parse_keys(const struct imap_arg *args, size_t nargs,
			   struct imap_search **search_r, const char **error_r);

/* True for a charset we search in (UTF-8, US-ASCII; case-insensitive). */
bool imap_search_charset_ok(const char *charset);

void imap_search_free(struct imap_search **search);

/* True if the program has a MODSEQ key (the reply then carries (MODSEQ n), RFC 7162 3.1.5). */
bool imap_search_has_modseq(const struct imap_search *search);

/* True if the program reads a record's size, dates or MODSEQ (not only UID, flags, keywords). */
bool imap_search_needs_record(const struct imap_search *search);

/* The MBOX_CACHE_* fields the program reads from the cache (0: none). */
unsigned imap_search_cache_fields(const struct imap_search *search);
/* True if the program uses "$" (the saved result). */
bool imap_search_uses_saved(const struct imap_search *search);

/*
 * What evaluation needs from the session. The callbacks are only called
 * when a key needs them, cheap keys first, and at most once per message
 * and match call.
 */
struct imap_search_ctx {
	void *arg;
	uint32_t max_msn; /* "*" in message-number sets */
	uint32_t max_uid; /* "*" in UID sets */
	const struct imap_seqset *saved; /* "$": the saved result as UIDs; NULL = empty */
	int64_t now;      /* OLDER/YOUNGER reference (seconds since the epoch) */
	/* Keyword index (bit of mbox_msg.keywords) by name, case-insensitive; -1 if none. */
	int (*keyword_index)(void *arg, const char *name);
	/* The cached header values; NULL if unavailable (the key does not match). */
	const struct mbox_cache *(*cache)(void *arg, const struct mbox_msg *msg);
	/* The whole message; 0 with *data_r and *len_r (valid until the next call), or -1. */
	int (*content)(void *arg, const struct mbox_msg *msg, const void **data_r, size_t *len_r);
};

/*
 * Resolve the program against a mailbox state: "*" in sets, keyword names.
 * Call once before matching (again if the mailbox changed). Syntax was
 * checked by the parse; this does not fail.
 */
void imap_search_prepare(struct imap_search *search, const struct imap_search_ctx *ctx);

/* Does message `msn` (record `msg`) match? */
bool imap_search_match(struct imap_search *search, const struct imap_search_ctx *ctx,
		       uint32_t msn, const struct mbox_msg *msg);

/* ---- responses ---- */

/*
 * "* SEARCH 2 5 9" for the matches nums[0..n) (MSNs or UIDs, in order),
 * with " (MODSEQ m)" when modseq != 0 (RFC 7162 3.1.5; give the highest
 * mod-sequence of the matches, and 0 when nothing matched). No CRLF.
 * Allocated.
 */
char *imap_search_response(const uint32_t *nums, size_t n, uint64_t modseq);

/*
 * The ESEARCH response (RFC 4731 3.1) for `ret`, the matches nums[0..n)
 * ascending (UIDs when `uid`): "* ESEARCH (TAG "a1") UID MIN 2 MAX 9 COUNT 3
 * ALL 2,5,9 MODSEQ 7". MIN, MAX, ALL and MODSEQ are left out when nothing
 * matched (COUNT 0 stays). NULL when no response is due: ret is SAVE alone
 * (RFC 5182 2.4). No CRLF. Allocated.
 */
char *imap_search_esearch_response(const char *tag, bool uid, unsigned ret, const uint32_t *nums,
				   size_t n, uint64_t modseq);

/*
 * What RETURN (SAVE ...) stores (RFC 5182 2.4): every match, or only the
 * first and/or last when MIN and/or MAX are given without ALL or COUNT.
 * uids[0..n) ascending; *saved_r is replaced (free the old one first).
 */
void imap_search_save_result(unsigned ret, const uint32_t *uids, size_t n,
			     struct imap_seqset *saved_r);

/* ---- i;unicode-casemap (shared with SORT) ---- */

/* Fold UTF-8 text as described above (invalid UTF-8 octets kept). Allocated. */
char *imap_casemap(const char *s, size_t len);
/* Substring test under i;unicode-casemap; `needle_folded` from imap_casemap(). */
bool imap_casemap_contains(const char *haystack, size_t len, const char *needle_folded);

#endif
