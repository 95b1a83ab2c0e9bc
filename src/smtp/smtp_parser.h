/*
 * SMTP command syntax (RFC 5321 4.1, with the ESMTP parameters of RFC 1870
 * SIZE, 6152 8BITMIME, 3030 BINARYMIME, 6531 SMTPUTF8, 3461 DSN and 4954
 * AUTH). Pure functions over one complete command line (without CRLF, as
 * lib/linereader delivers it); no I/O, no allocation.
 */
#ifndef POSTERN_SMTP_PARSER_H
#define POSTERN_SMTP_PARSER_H

#include "mail/address.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.4: 512 octets per command line, including CRLF; ESMTP
   parameters may extend it (RFC 1869 4.1.2); RFC 4954 4: 12288 for AUTH. */
#define SMTP_COMMAND_LINE_MAX 2048
#define SMTP_AUTH_LINE_MAX 12288
#define SMTP_DSN_ENVID_MAX 100 /* RFC 3461 4.4 */
#define SMTP_DSN_ORCPT_MAX 500 /* RFC 3461 4.2 */
#define SMTP_AUTH_PARAM_MAX 500

enum smtp_verb {
	SMTP_UNKNOWN = 0,
	SMTP_HELO,
	SMTP_EHLO,
	SMTP_MAIL,
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_BDAT,
	SMTP_RSET,
	SMTP_NOOP,
	SMTP_QUIT,
	SMTP_VRFY,
	SMTP_EXPN,
	SMTP_HELP,
	SMTP_STARTTLS,
	SMTP_AUTH,
	SMTP_VERB_COUNT
};

struct smtp_command {
	enum smtp_verb verb;
	const char *arg; /* points into the line after the verb and one SP; "" if none */
	size_t arg_len;
};

/*
 * Split `line` (len octets) into verb and argument. Verbs are matched
 * without regard to case. MAIL and RCPT are recognised by "MAIL FROM:" and
 * "RCPT TO:"; their arg starts after the colon (one optional space skipped).
 * Returns 0, or -1 for a line that is not a command at all (empty, NUL
 * octets, bad separator); an unknown verb is 0 with SMTP_UNKNOWN.
 */
int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd_r);

/* Name of a verb for logs ("MAIL", "?" for unknown). */
const char *smtp_verb_name(enum smtp_verb verb);

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };

/* What went wrong, as an SMTP reply: code, enhanced code and text. */
struct smtp_error {
	int code;
	const char *enhanced;
	const char *text;
};

struct smtp_mail_args {
	struct address addr;
	bool has_size;
	uint64_t size;
	enum smtp_body body;
	bool smtputf8;
	char ret[5]; /* "FULL", "HDRS" or "" */
	char envid[SMTP_DSN_ENVID_MAX + 1];
	char auth[SMTP_AUTH_PARAM_MAX + 1]; /* AUTH= value, xtext as received, or "" */
};

struct smtp_rcpt_args {
	struct address addr;
	unsigned notify; /* DSN_NOTIFY_* values of queue.h: NEVER 1, SUCCESS 2, FAILURE 4, DELAY 8 */
	char orcpt[SMTP_DSN_ORCPT_MAX + 1];
};

#define SMTP_NOTIFY_NEVER 0x1
#define SMTP_NOTIFY_SUCCESS 0x2
#define SMTP_NOTIFY_FAILURE 0x4
#define SMTP_NOTIFY_DELAY 0x8

/*
 * Parse the argument of MAIL FROM: (after the colon): reverse-path and
 * parameters. `allow_utf8` is whether SMTPUTF8 was advertised; the path
 * may then carry UTF-8 only when the SMTPUTF8 parameter is present.
 * Unknown or duplicated parameters are 555 5.5.4 (RFC 5321 4.1.1.11).
 * 0 ok, -1 with *err_r.
 */
int smtp_parse_mail(const char *arg, size_t len, bool allow_utf8, struct smtp_mail_args *args_r,
		    struct smtp_error *err_r);

/* Same for RCPT TO:; `utf8` is whether the transaction is SMTPUTF8. */
int smtp_parse_rcpt(const char *arg, size_t len, bool utf8, struct smtp_rcpt_args *args_r,
		    struct smtp_error *err_r);

/*
 * Parse the argument of BDAT: chunk-size [SP "LAST"] (RFC 3030 3).
 * 0 ok, -1 syntax error.
 */
int smtp_parse_bdat(const char *arg, size_t len, uint64_t *size_r, bool *last_r);

/* RFC 3461 4 xtext: "+" two uppercase hex digits, or %d33-42 / %d44-60 / %d62-126. */
bool smtp_xtext_valid(const char *s, size_t len);

#endif
