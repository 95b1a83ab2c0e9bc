/*
 * The DATA phase decoder (RFC 5321 4.1.1.4, 4.5.2): removes dot-stuffing,
 * finds the end of data, and watches for the things that make SMTP
 * smuggling possible. A resumable byte-at-a-time state machine, so the
 * socket, the tests and the fuzzer drive the same code.
 *
 * Only <CRLF>.<CRLF> ends the data. A bare LF or bare CR is never part of an
 * end-of-data marker: it is flagged (reject mode) or turned into CRLF
 * (normalize mode), and a line that starts after such a bare line ending is
 * never unstuffed nor taken as the end.
 */
#ifndef POSTERN_SMTP_DATA_H
#define POSTERN_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>

/* smtp_data.flags */
#define SMTP_DATA_BARE_LF 0x1
#define SMTP_DATA_BARE_CR 0x2
#define SMTP_DATA_LINE_TOO_LONG 0x4

struct smtp_data {
	int state;
	size_t line_len;      /* octets in the current line so far */
	size_t max_line;      /* longest line, octets including CRLF */
	bool normalize;       /* bare LF/CR become CRLF (else only flagged) */
	unsigned flags;       /* SMTP_DATA_* seen so far */
};

void smtp_data_init(struct smtp_data *d, size_t max_line, bool normalize);

/*
 * Decode up to `len` octets of `in` into `out`, which must hold 2 * len + 4
 * octets. Stops right after the end-of-data marker. Returns the number of
 * input octets consumed; *out_len_r gets the octets written; *done_r is set
 * when the end of data was reached (the rest of the input belongs to the
 * next command).
 */
size_t smtp_data_decode(struct smtp_data *d, const char *in, size_t len, char *out,
			size_t *out_len_r, bool *done_r);

#endif
