/*
 * The POP3 command line parser (RFC 1939, 2449, 2595, 5034): a pure
 * function from one line (without CRLF) to a verb and its arguments, so it
 * can be unit-tested and fuzzed apart from the session.
 */
#ifndef POSTERN_POP3_CMD_H
#define POSTERN_POP3_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 2449 4: a command line is at most 255 octets including the CRLF */
#define POP3_LINE_MAX 253
/* RFC 5034 4: AUTH and SASL responses may be longer */
#define POP3_SASL_LINE_MAX 1024

enum pop3_verb {
	POP3_USER,
	POP3_PASS,
	POP3_APOP,
	POP3_AUTH,
	POP3_STLS,
	POP3_CAPA,
	POP3_QUIT,
	POP3_STAT,
	POP3_LIST,
	POP3_RETR,
	POP3_DELE,
	POP3_NOOP,
	POP3_RSET,
	POP3_TOP,
	POP3_UIDL,
};

struct pop3_cmd {
	enum pop3_verb verb;
	const char *arg; /* USER, PASS, APOP, AUTH: the rest of the line (points into it) */
	size_t arg_len;
	unsigned nnum;   /* numeric arguments parsed (LIST, UIDL: 0 or 1; RETR, DELE: 1; TOP: 2) */
	uint32_t num[2];
};

enum pop3_parse_result {
	POP3_PARSE_OK = 0,
	POP3_PARSE_UNKNOWN = -1, /* no such command */
	POP3_PARSE_SYNTAX = -2,  /* known command, bad arguments */
	POP3_PARSE_BAD_CHAR = -3, /* NUL or other control octet in the line */
};

/* Parse one command line of `len` octets (may contain NULs). */
enum pop3_parse_result pop3_cmd_parse(const char *line, size_t len, struct pop3_cmd *c);

/*
 * A message file to the wire (RETR, TOP): bare LF becomes CRLF, a "."
 * that starts a line is doubled (RFC 1939 3), and TOP stops after the
 * header and `top` body lines. Fed chunk by chunk; the caller adds the
 * final CRLF when the file ends without one (!bol) and the ".\r\n".
 */
struct pop3_xform {
	bool bol;        /* at the start of a line */
	bool line_empty; /* nothing but CR on this line so far */
	bool in_body;    /* past the empty line that ends the header */
	bool done;       /* TOP: enough body lines sent; stop reading */
	bool prev_cr;    /* the previous octet was CR */
	int64_t top;     /* body lines wanted, -1 = the whole message */
	uint64_t body_lines;
};

void pop3_xform_init(struct pop3_xform *x, int64_t top);
/* Convert `n` octets into `out` (room for 2n); returns the octets written. */
size_t pop3_xform_run(struct pop3_xform *x, const unsigned char *in, size_t n, char *out);

/* "RETR" for POP3_RETR... */
const char *pop3_verb_name(enum pop3_verb v);

#endif
