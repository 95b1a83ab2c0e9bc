/*
 * SORT and THREAD (RFC 5256, and DISPLAYFROM/DISPLAYTO of RFC 5957):
 * base subject extraction, sort programs, and the ORDEREDSUBJECT and
 * REFERENCES threading algorithms with their wire output. Pure functions
 * over small records the session fills from struct mbox_msg and struct
 * mbox_cache; strings compare under i;unicode-casemap (imap_casemap()).
 */
#ifndef POSTERN_IMAP_SORT_H
#define POSTERN_IMAP_SORT_H

#include "imap/imap_parser.h"
#include "store/mailbox.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct imap_sort_msg {
	uint32_t msn, uid;
	uint64_t size;    /* RFC822.SIZE */
	int64_t arrival;  /* INTERNALDATE */
	int64_t date;     /* Date: header in UTC seconds; 0 if absent or unparsable */
	/* decoded UTF-8 values, NULL or "" when absent (mbox_cache fields) */
	const char *subject;
	const char *from, *to, *cc;           /* first address's mailbox (sort_from, ...) */
	const char *display_from, *display_to; /* RFC 5957 */
	const char *message_id, *in_reply_to, *references;
};

/* Fill a record from the store's data (pointers into `c`, which must outlive it). */
void imap_sort_msg_fill(struct imap_sort_msg *m_r, uint32_t msn, const struct mbox_msg *msg,
			const struct mbox_cache *c);

enum imap_sort_key {
	IMAP_SORT_ARRIVAL,
	IMAP_SORT_CC,
	IMAP_SORT_DATE, /* sent date; INTERNALDATE when there is no usable Date: (RFC 5256 2.2) */
	IMAP_SORT_FROM,
	IMAP_SORT_SIZE,
	IMAP_SORT_SUBJECT, /* base subject */
	IMAP_SORT_TO,
	IMAP_SORT_DISPLAYFROM,
	IMAP_SORT_DISPLAYTO,
};

#define IMAP_SORT_MAX_CRITERIA 16

struct imap_sort_program {
	struct {
		enum imap_sort_key key;
		bool reverse;
	} crit[IMAP_SORT_MAX_CRITERIA];
	size_t n;
};

/* Parse a sort-criteria list argument "(REVERSE DATE SUBJECT)". 0 or -1 with *error_r. */
int imap_sort_parse(const struct imap_arg *list, struct imap_sort_program *prog_r,
		    const char **error_r);

/*
 * Sort msgs in place by the program; messages equal under every criterion
 * keep UID order (RFC 5256 3: "sorted in the order given by their
 * sequence number").
 */
void imap_sort(const struct imap_sort_program *prog, struct imap_sort_msg *msgs, size_t n);

/*
 * RFC 5256 2.1 base subject of a decoded subject (not casemapped).
 * *reply_r (may be NULL) tells whether extraction removed a reply or
 * forward marker (subj-refwd, "(fwd)" trailer or "[fwd: ...]"). Allocated.
 */
char *imap_base_subject(const char *subject, bool *reply_r);

enum imap_thread_alg {
	IMAP_THREAD_ORDEREDSUBJECT,
	IMAP_THREAD_REFERENCES,
};

/* "ORDEREDSUBJECT" / "REFERENCES" (case-insensitive). 0 or -1. */
int imap_thread_alg_parse(const char *name, enum imap_thread_alg *alg_r);

/*
 * Thread the messages (given in mailbox order) and return the THREAD
 * response data without "* THREAD ": "(1 2)(3 (4)(5))", "" when n is 0.
 * Messages are named by UID when `by_uid`, else by MSN. Allocated.
 * A References chain deeper than IMAP_THREAD_MAX_DEPTH is cut there
 * (bounds the loop checks on hostile headers).
 */
#define IMAP_THREAD_MAX_DEPTH 4096
char *imap_thread(enum imap_thread_alg alg, const struct imap_sort_msg *msgs, size_t n,
		  bool by_uid);

#endif
