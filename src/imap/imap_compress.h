/*
 * COMPRESS=DEFLATE (RFC 4978) for an IMAP connection.
 */
#ifndef POSTERN_IMAP_COMPRESS_H
#define POSTERN_IMAP_COMPRESS_H

struct bufferevent;

/* A filter over `under` (which it takes over and frees with itself); NULL on failure. */
struct bufferevent *imap_compress_start(struct bufferevent *under);

#endif
