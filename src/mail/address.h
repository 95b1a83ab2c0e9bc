/*
 * RFC 5321 Path and Mailbox syntax (section 4.1.2), with the RFC 6531
 * SMTPUTF8 extension. A pure parser: no sockets, no allocation; every
 * buffer is bounded by the RFC 5321 4.5.3.1 limits below.
 *
 * The result carries the facts the relay policy needs to refuse address
 * tricks (percent hack, bang paths, source routes, quoted '@', literals).
 */
#ifndef POSTERN_ADDRESS_H
#define POSTERN_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1.1-3 */
#define ADDRESS_LOCAL_MAX 64   /* local part, octets */
#define ADDRESS_DOMAIN_MAX 255 /* domain, octets */
#define ADDRESS_PATH_MAX 256   /* whole path including < > and route */
/* address_format() output: a fully escaped local part, '@', domain, NUL */
#define ADDRESS_FORMAT_SIZE (2 * ADDRESS_LOCAL_MAX + 2 + 1 + ADDRESS_DOMAIN_MAX + 1)

/* struct address.flags */
#define ADDRESS_NULL 0x001        /* the null reverse-path <> */
#define ADDRESS_POSTMASTER 0x002  /* <Postmaster> without a domain (RFC 5321 4.5.1) */
#define ADDRESS_QUOTED 0x004      /* local part was a quoted string */
#define ADDRESS_ROUTE 0x008       /* a source route was given (and ignored) */
#define ADDRESS_LITERAL 0x010     /* the domain is an address literal [..] */
#define ADDRESS_PERCENT 0x020     /* '%' in the local part */
#define ADDRESS_BANG 0x040        /* '!' in the local part */
#define ADDRESS_QUOTED_AT 0x080   /* '@' inside the quoted local part */
#define ADDRESS_UTF8 0x100        /* non-ASCII (UTF-8) octets in local part or domain */

/* Flags that make a recipient suspicious for relay decisions. */
#define ADDRESS_TRICKS                                                                             \
	(ADDRESS_ROUTE | ADDRESS_LITERAL | ADDRESS_PERCENT | ADDRESS_BANG | ADDRESS_QUOTED_AT)

/* address_parse_path() options */
#define ADDRESS_ALLOW_NULL 0x1       /* accept <> (MAIL FROM) */
#define ADDRESS_ALLOW_UTF8 0x2       /* accept UTF-8 (SMTPUTF8 transaction) */
#define ADDRESS_ALLOW_POSTMASTER 0x4 /* accept <Postmaster> (RCPT TO) */

struct address {
	/* local part in unquoted form (quoted-pairs resolved), NUL-terminated */
	char local[ADDRESS_LOCAL_MAX + 1];
	/* domain, ASCII letters lowercased; for literals the whole "[...]" */
	char domain[ADDRESS_DOMAIN_MAX + 1];
	unsigned flags;
};

/*
 * Parse a Path ("<" [ A-d-l ":" ] Mailbox ">") or, with ADDRESS_ALLOW_NULL,
 * "<>", from the start of `s` (`len` octets, need not be NUL-terminated).
 * On success returns 0, fills *addr_r and sets *consumed_r to the number of
 * octets up to and including the '>'. On failure returns -1 with a short
 * static reason in *error_r.
 */
int address_parse_path(const char *s, size_t len, unsigned options, struct address *addr_r,
		       size_t *consumed_r, const char **error_r);

/*
 * Write "local@domain" (the local part re-quoted when it is not a
 * dot-string; "" for the null path; "Postmaster" alone) into buf.
 * buf should hold ADDRESS_FORMAT_SIZE octets. Returns buf.
 */
char *address_format(const struct address *addr, char *buf, size_t bufsize);

/* True if `s` (len octets) is well-formed UTF-8 without overlongs or surrogates. */
bool utf8_valid(const unsigned char *s, size_t len);

#endif
