/*
 * The bounded line reader shared by every line protocol (SMTP, later IMAP,
 * POP3, ManageSieve). It never grows beyond its limit: a line longer than
 * `max` octets is reported once as LINE_TOO_LONG and the rest of it, up to
 * and including its LF, is discarded.
 */
#ifndef POSTERN_LINEREADER_H
#define POSTERN_LINEREADER_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

enum line_status {
	LINE_OK,       /* a whole line is in buf */
	LINE_MORE,     /* need more input */
	LINE_TOO_LONG, /* the current line exceeds max; it is being discarded */
};

/* flags_r bits for LINE_OK */
#define LINE_BARE_LF 0x1 /* ended in LF without CR */
#define LINE_HAS_NUL 0x2 /* contains a NUL octet */

struct line_reader {
	size_t max;    /* longest line accepted, excluding the CRLF */
	bool skipping; /* discarding the rest of a too-long line */
};

void line_reader_init(struct line_reader *lr, size_t max);

/*
 * Take the next line from `in` into `buf` (at least lr->max + 1 bytes),
 * without its CRLF or LF, NUL-terminated; *len_r gets its length. The line
 * is removed from `in`. Bytes of an incomplete line stay in `in`.
 */
enum line_status line_reader_read(struct line_reader *lr, struct evbuffer *in, char *buf,
				  size_t *len_r, unsigned *flags_r);

#endif
