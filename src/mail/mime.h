/*
 * MIME (RFC 2045-2049) parsing: a single-pass, streaming, pull-style parser
 * for untrusted messages, and on top of it the message structure IMAP needs
 * (ENVELOPE, BODYSTRUCTURE, section offsets).
 *
 * The parser never fails on message content: broken MIME (missing or
 * misplaced boundaries, NULs, 8-bit headers, headers without a blank line,
 * absurd nesting) always yields a sane part tree, the way Dovecot's
 * message parser treats the same input. Every limit is in struct
 * mime_limits; hitting one degrades the structure (a container that would
 * be too deep becomes opaque data; after the last part allowed, boundaries
 * are no longer looked for, so that part runs to the end; an oversized
 * header field is truncated) and sets a flag; it never allocates more.
 *
 * Offsets are byte offsets in the input as pushed ("physical"). Sizes are
 * given twice: physical, and "virtual" (as if every bare LF were CRLF), which
 * is what IMAP counts (RFC 3501 2.3.4, 6.4.5).
 */
#ifndef POSTERN_MIME_H
#define POSTERN_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mime_limits {
	unsigned max_depth;      /* nesting of parts; deeper multiparts become leaves (100) */
	unsigned max_parts;      /* parts per message, root included (10,000) */
	size_t max_header_field; /* one header field incl. folding; longer is truncated (64 KiB) */
	size_t max_header_block; /* fields kept per header block; the rest is skipped (1 MiB) */
	unsigned max_params;     /* Content-Type/-Disposition parameters kept per field (64) */
	size_t max_boundary;     /* longest boundary honoured; RFC 2046 5.1.1 says 70 (200) */
};

/* Fill in the defaults listed above. */
void mime_limits_default(struct mime_limits *limits_r);

struct mime_param {
	char *name;  /* as in the header, RFC 2231 continuations merged ("title*" if encoded) */
	char *value; /* unquoted; for "name*" still in RFC 2231 charset'lang'%XX form */
};

/* struct mime_part.flags */
#define MIME_PART_MULTIPART 0x01        /* has children separated by a boundary */
#define MIME_PART_MESSAGE 0x02          /* message/rfc822: one child, the enclosed message */
#define MIME_PART_HEADER_TRUNCATED 0x04 /* a field or the header block hit a limit */
#define MIME_PART_TOO_DEEP 0x08         /* would have been a container; max_depth reached */
#define MIME_PART_NO_BOUNDARY 0x10      /* multipart without a usable boundary parameter */
#define MIME_PART_HAS_NUL 0x20          /* a NUL byte in the header or body */
#define MIME_PART_HEADER_8BIT 0x40      /* 8-bit bytes in the header */
#define MIME_PART_CONTENT_TYPE_BAD 0x80 /* Content-Type present but not type/subtype */

/*
 * One node of the part tree. The root is the whole message. A multipart's
 * children are its body parts; a message/rfc822 part has exactly one child,
 * the enclosed message (header and body). All fields are read-only for users.
 */
struct mime_part {
	struct mime_part *parent, *children, *next;
	unsigned depth; /* root 0 */
	unsigned flags; /* MIME_PART_* */
	unsigned nchildren;

	/* Content-* fields of this part's header, raw (NULL when absent). */
	char *type, *subtype; /* "" when Content-Type was unparsable; NULL when absent */
	struct mime_param *params;
	unsigned nparams;
	char *encoding;    /* Content-Transfer-Encoding token */
	char *id;          /* Content-ID */
	char *description; /* Content-Description */
	char *disposition; /* Content-Disposition type */
	struct mime_param *disp_params;
	unsigned ndisp_params;
	char *language; /* Content-Language, raw (a list) */
	char *location; /* Content-Location, unfolded */
	char *md5;      /* Content-MD5 */
	char *boundary; /* multipart boundary (points into params) */

	/* Where it is. The header includes the blank line that ends it. */
	uint64_t header_offset, header_size, header_vsize, header_lines;
	uint64_t body_offset, body_size, body_vsize, body_lines;

	/* Set by the structure builder for the root and message/rfc822 children. */
	char *envelope;
};

struct mime_parser;

enum mime_event_type {
	MIME_EVENT_PART_BEGIN, /* a part starts; header_offset is known */
	MIME_EVENT_HEADER,     /* one header field of the current part */
	MIME_EVENT_HEADER_END, /* header done: Content-* fields and flags are set */
	MIME_EVENT_BODY,       /* body bytes of the innermost open part */
	MIME_EVENT_PART_END,   /* the part is complete: sizes are final */
};

struct mime_event {
	enum mime_event_type type;
	struct mime_part *part;
	uint64_t offset; /* HEADER: start of the field; BODY: of data[0] */
	/* HEADER: name without the colon, value after the colon and leading
	   whitespace, raw (folding kept, final newline removed). Not
	   NUL-terminated. name_len is 0 for a line without a colon, whose
	   whole text is then the value. */
	const char *name;
	size_t name_len;
	const unsigned char *value;
	size_t value_len;
	bool truncated; /* HEADER: the field was longer than max_header_field */
	/* BODY */
	const unsigned char *data;
	size_t len;
};

/* A parser for one message. limits may be NULL for the defaults. */
struct mime_parser *mime_parser_new(const struct mime_limits *limits);

/*
 * Append input. push(p, NULL, 0) marks the end of the message; pushing
 * after that is an error (-1). Returns 0. The parser copies what it cannot
 * consume yet; it never holds more than one header field or one boundary
 * line's worth of unparsed input beyond what was pushed but not yet pulled.
 */
int mime_parser_push(struct mime_parser *p, const void *data, size_t len);

/*
 * Pull the next event. 1: *event_r is filled; its pointers stay valid until
 * the next push or free. 0: more input is needed, or, after the end was
 * pushed, the message is complete (mime_parser_done() tells which).
 * -1: misuse (never because of message content).
 */
int mime_parser_next(struct mime_parser *p, struct mime_event *event_r);

/* True once the end was pushed and every event has been pulled. */
bool mime_parser_done(const struct mime_parser *p);

/* The part tree (root first; grows while parsing). */
struct mime_part *mime_parser_root(struct mime_parser *p);

/* Take ownership of the part tree: mime_parser_free() will not free it. */
struct mime_part *mime_parser_steal_root(struct mime_parser *p);

/* True if any limit was hit for this message. */
bool mime_parser_limited(const struct mime_parser *p);

void mime_parser_free(struct mime_parser **p);

/* Free a tree from mime_parser_steal_root() or mime_message_parse(). */
void mime_part_free(struct mime_part **root);

/* Case-insensitive value of a parameter by name, NULL if absent. */
const char *mime_param_get(const struct mime_param *params, unsigned n, const char *name);

/* ---- header decoding (mime-header.c) ---- */

/*
 * Decode an unstructured header value (RFC 2047 encoded-words) into UTF-8,
 * unfolding it (RFC 5322 2.2.3). Invalid encoded words are left as they
 * are; bytes that are not UTF-8 are taken as ISO-8859-1 (best effort, never
 * fails). Returns a new string.
 */
char *mime_decode_header(const void *value, size_t len);

/*
 * Decode one RFC 2231 parameter to UTF-8: `name` is the merged parameter
 * name (ends with '*' when encoded) and value its value as in struct
 * mime_param. Unknown charsets and bad %XX are decoded best-effort.
 * Returns a new string.
 */
char *mime_decode_param(const char *name, const char *value);

/* Convert len bytes in `charset` to UTF-8 through iconv. Bytes that do not
   convert become U+FFFD. Unknown charset: ISO-8859-1 if not UTF-8-valid. */
char *mime_charset_to_utf8(const char *charset, const void *data, size_t len);

/*
 * Parse a structured Content-Type/-Disposition style value:
 * "token[/token] *(; name=value)" with comments and quoted strings,
 * RFC 2231 continuations merged (RFC 2231 3). Returns false if the leading
 * token(s) are not there; parameters are parsed anyway.
 */
bool mime_parse_content_value(const char *value, size_t len, bool with_subtype, unsigned max_params,
                              char **type_r, char **subtype_r, struct mime_param **params_r,
                              unsigned *nparams_r);
void mime_params_free(struct mime_param **params, unsigned n);

/* ---- RFC 5322 addresses (mime-address.c) ---- */

struct mime_address {
	char *name;    /* display name, raw (phrase unquoted, or a comment), NULL if none */
	char *route;   /* obsolete source route "@a,@b", NULL if none */
	char *mailbox; /* local part; group start: group name; group end: NULL */
	char *domain;  /* NULL for group start/end */
	bool group_start, group_end;
	bool invalid; /* missing local part or domain (filled with MISSING_*) */
	struct mime_address *next;
};

/* Parse an address-list header value (groups included), best effort, at
   most max addresses. Returns NULL for an empty list. */
struct mime_address *mime_address_parse(const char *value, size_t len, unsigned max);
void mime_address_free(struct mime_address **list);

/* ---- message structure (mime-struct.c) ---- */

/*
 * Parse a whole message and build what IMAP needs. The envelope of the root
 * and of every message/rfc822 part is stored in part->envelope.
 */
struct mime_part *mime_message_parse(const void *data, size_t len,
                                     const struct mime_limits *limits);

/* Builder form of the same for messages read in pieces. */
struct mime_builder;
struct mime_builder *mime_builder_new(const struct mime_limits *limits);
void mime_builder_push(struct mime_builder *b, const void *data, size_t len);
/* Ends the input, frees the builder and returns the tree. */
struct mime_part *mime_builder_finish(struct mime_builder **b);

/* IMAP ENVELOPE of a message part (the root or a message/rfc822 child), as
   sent on the wire without the "ENVELOPE " keyword. Allocated. */
char *mime_envelope_string(const struct mime_part *message);

/* IMAP BODYSTRUCTURE (extended true) or BODY (false) of a part. Allocated. */
char *mime_bodystructure(const struct mime_part *part, bool extended);

/* RFC 3501 6.4.5 section parts. */
enum mime_section_kind {
	MIME_SECTION_ALL,           /* BODY[] / BODY[1.2] (the part's content) */
	MIME_SECTION_HEADER,        /* BODY[HEADER] / BODY[1.2.HEADER]: message header */
	MIME_SECTION_TEXT,          /* BODY[TEXT] / BODY[1.2.TEXT]: message body */
	MIME_SECTION_MIME,          /* BODY[1.2.MIME]: the part's MIME header */
	MIME_SECTION_HEADER_FIELDS, /* HEADER.FIELDS (...): the header range; caller filters */
};

struct mime_section {
	const struct mime_part *part; /* the part the section names */
	uint64_t offset, size;        /* physical range in the message */
	uint64_t vsize;               /* its size with CRLF line ends */
};

/*
 * Resolve an IMAP section spec ("", "1.2", "1.2.MIME", "HEADER", "2.TEXT",
 * "1.HEADER.FIELDS (From)" - the field list is left to the caller). Returns
 * 0 and fills *section_r; -1 with *error_r if the spec is malformed, or
 * the part does not exist (IMAP then returns an empty string or NIL).
 */
int mime_section_find(const struct mime_part *root, const char *spec,
                      struct mime_section *section_r, const char **error_r);

/*
 * Copy [offset, offset+size) of the message with bare LFs turned into CRLF,
 * starting `skip` bytes into that converted stream and producing at most
 * `max` bytes into out (for partial fetches, BODY[...]<skip.max>). Returns
 * the bytes written.
 */
size_t mime_copy_crlf(const unsigned char *msg, uint64_t offset, uint64_t size, uint64_t skip,
                      unsigned char *out, size_t max);

#endif
