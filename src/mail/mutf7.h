/*
 * Modified UTF-7 (RFC 3501 5.1.3), the encoding of IMAP4rev1 mailbox names
 * on the wire and of Maildir++ folder names on disk (as Dovecot stores
 * them): printable US-ASCII stands for itself except "&", written "&-";
 * everything else is UTF-16 in modified base64 ("," for "/") between "&"
 * and "-".
 */
#ifndef POSTERN_MUTF7_H
#define POSTERN_MUTF7_H

/* UTF-8 -> modified UTF-7 (control characters are encoded like any
   non-ASCII character). NULL if `utf8` is not valid UTF-8. Allocated. */
char *mutf7_encode(const char *utf8);

/* Modified UTF-7 -> UTF-8. NULL if malformed (bad base64, unpaired
   surrogate, non-canonical form such as an encoded printable ASCII). Allocated. */
char *mutf7_decode(const char *mutf7);

#endif
