/* Internals shared by the mailbox store's files (mailbox.c, mailbox_cache.c). */
#ifndef POSTERN_MAILBOX_PRIVATE_H
#define POSTERN_MAILBOX_PRIVATE_H

#include "store/mailbox.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Parse a message (as stored) into the cache record; *vsize_r gets its size
 * with CRLF line ends (RFC822.SIZE). Never fails on content.
 */
void mbox_cache_compute(const void *data, size_t len, struct mbox_cache *c_r, uint64_t *vsize_r);

/*
 * RFC 5322 3.3 date-time, obsolete forms included (4.3: two- and three-digit
 * years, alphabetic and military zones, comments, missing seconds or day
 * name). 0 with *t_r (UTC seconds) and *tz_r (minutes east), -1 if unparsable.
 */
int mbox_parse_date(const char *s, int64_t *t_r, int *tz_r);

#endif
