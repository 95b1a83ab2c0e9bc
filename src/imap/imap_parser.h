/*
 * IMAP command syntax (RFC 9051 section 9, RFC 3501 section 9): turning
 * the octets of one command - its line and the literals it announces -
 * into a tree of arguments.
 *
 * The session collects a command incrementally with struct imap_reader:
 * each line is examined for a trailing literal announcement ({N}, {N+},
 * ~{N} for BINARY, {N-}); the reader tells the session whether to send a
 * "+" continuation, and how many literal octets to read before the next
 * line. Nothing about the literal size chooses an allocation: the reader
 * enforces `max_literal` and `max_command` (sum of line and literals) and
 * reports too-long commands so the session can answer BAD and skip them.
 *
 * Once complete, imap_parse_command() parses the collected text into a
 * tag, a command name and a list of struct imap_arg. Atoms are parsed in
 * the "fetch-att" friendly way: an atom containing '[' extends to the
 * matching ']' (spaces and parentheses inside included), then any <...>
 * partial range, so BODY[HEADER.FIELDS (From To)]<0.100> is one atom.
 * A '[' without a matching ']' on the line is an ordinary ATOM-CHAR.
 * Parenthesised lists nest up to IMAP_MAX_DEPTH.
 */
#ifndef POSTERN_IMAP_PARSER_H
#define POSTERN_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAP_MAX_DEPTH 32  /* nesting of parenthesised lists */
#define IMAP_MAX_ARGS 100000 /* arguments in one command, all levels */

enum imap_arg_type {
	IMAP_ARG_ATOM,    /* atom (includes numbers, flags like \Seen, sequence sets) */
	IMAP_ARG_STRING,  /* quoted string (unescaped) */
	IMAP_ARG_LITERAL, /* {N} literal; also literal8 ~{N} (flag `binary`) */
	IMAP_ARG_NIL,     /* the atom NIL */
	IMAP_ARG_LIST,    /* ( ... ) */
};

struct imap_arg {
	enum imap_arg_type type;
	const char *str; /* ATOM/STRING/LITERAL: NUL-terminated (may contain NULs for LITERAL) */
	size_t len;
	struct imap_arg *list; /* LIST: the elements */
	size_t nlist;
	bool binary; /* literal8 */
};

/* True for ATOM, STRING and LITERAL (an "astring" or "nstring" value). */
bool imap_arg_is_string(const struct imap_arg *a);
/* The value of an astring (ATOM/STRING/LITERAL, and NIL, whose str is "NIL":
   RFC 9051 astring includes the atom NIL, e.g. a folder named NIL), else NULL. */
const char *imap_arg_astring(const struct imap_arg *a);
/* Case-insensitive comparison of an ATOM with `word`. */
bool imap_arg_atom_eq(const struct imap_arg *a, const char *word);

struct imap_command {
	char *tag;
	char *name; /* upper-cased; "UID FETCH" etc. are given as name "UID" + args */
	struct imap_arg *args;
	size_t nargs;
	/* private: storage */
	void *pool;
};

/*
 * Parse one complete command: `text` is the line(s) as collected by the
 * reader (literal contents inline, each preceded by its announcement and
 * CRLF exactly as sent). 0 on success; -1 with *error_r (static text) for a
 * syntax error, with cmd->tag set if a tag could be read (for a tagged BAD).
 * Exactly one SP separates arguments; one trailing SP is tolerated (as
 * Dovecot does). Quoted strings accept \\ and \" escapes only, and 8-bit
 * (UTF-8) octets; atoms are 7-bit. NUL is refused except inside literals.
 * Call imap_command_clear() after either result.
 */
int imap_parse_command(const char *text, size_t len, struct imap_command *cmd,
		       const char **error_r);
void imap_command_clear(struct imap_command *cmd);

/* ---- collecting a command from the wire ---- */

enum imap_reader_status {
	IMAP_READ_MORE,      /* need more input */
	IMAP_READ_COMMAND,   /* a whole command is in reader->buf[0..len), without its
				final CRLF, NUL-terminated; valid until the next feed/reset */
	IMAP_READ_CONTINUE,  /* a synchronising literal was announced: send "+ ..." */
	IMAP_READ_TOO_LONG,  /* line or literal over the limit: command skipped, answer BAD */
	IMAP_READ_BAD_LITERAL, /* non-synchronising literal over 4096 with LITERAL- */
};

#define IMAP_READER_TAG_MAX 64

struct imap_reader {
	size_t max_line;    /* one line (without literals) */
	size_t max_literal; /* one literal */
	size_t max_command; /* line(s) + literals */
	char *buf;          /* the command so far */
	size_t len, size;
	uint64_t literal_left; /* octets of literal still to read */
	bool skipping;      /* discarding a too-long command until its end */
	bool line_start;    /* next input starts a new line of the command */
	bool literal_minus; /* LITERAL- only: {N+} limited to 4096 */
	size_t line_begin;  /* offset in buf of the current line */
	bool have_command;  /* buf holds a complete command (the next feed resets) */
	/* after TOO_LONG / BAD_LITERAL: the tag of the refused command when its
	   start could be read (for a tagged BAD), else "" (answer "* BAD") */
	char tag[IMAP_READER_TAG_MAX + 1];
};

void imap_reader_init(struct imap_reader *r, size_t max_line, size_t max_literal,
		      size_t max_command);
void imap_reader_free(struct imap_reader *r);
/* Forget the collected command (after IMAP_READ_COMMAND has been handled; the
   next feed does it too). A skip in progress after TOO_LONG is kept. */
void imap_reader_reset(struct imap_reader *r);

/*
 * Consume input from `in` (an evbuffer). Returns as soon as something
 * needs the session's attention. After IMAP_READ_TOO_LONG the reader
 * discards the rest of that command by itself (including announced literal
 * octets that a non-synchronising literal makes the client send anyway).
 */
struct evbuffer;
enum imap_reader_status imap_reader_feed(struct imap_reader *r, struct evbuffer *in);

#endif
