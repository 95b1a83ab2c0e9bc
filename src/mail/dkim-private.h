/* Internal to the DKIM module: the header/body splitter shared by the
   verifier (dkim_verify.c) and the signer (dkim_sign.c). */
#ifndef POSTERN_DKIM_PRIVATE_H
#define POSTERN_DKIM_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>

struct dkim_field {
	size_t off, len; /* in dkim_msg.hdr, without the final CRLF */
	size_t name_len; /* 0 when the line has no colon */
};

struct dkim_msg {
	char *hdr; /* header section, line ends normalised to CRLF */
	size_t hdr_len, hdr_cap;
	struct dkim_field *fields;
	size_t nfields;
	bool in_body;    /* the empty line was seen */
	bool line_start; /* at the start of a header line */
	bool pending_cr;
	bool overflow; /* DKIM_MAX_HEADER_BYTES or _FIELDS exceeded */
};

void dkim_msg_init(struct dkim_msg *m);
void dkim_msg_clear(struct dkim_msg *m);
/* Consume header bytes; returns how many were used. When m->in_body turns
   true, the rest of the chunk is body. */
size_t dkim_msg_push(struct dkim_msg *m, const char *data, size_t len);
/* End of message without a body separator. */
void dkim_msg_end_headers(struct dkim_msg *m);
bool dkim_field_is(const struct dkim_msg *m, const struct dkim_field *f, const char *name);

/*
 * The h= names a signature of ours covers (dkim_sign.c's list: what a list or
 * forwarder should not change), each as often as the message has it, From
 * once more (RFC 6376 5.4.2), then `also` (NULL: none) the same way. Returns
 * how many were put into hnames.
 */
size_t dkim_sign_h_names(const struct dkim_msg *m, const char *also,
                         const char *hnames[DKIM_MAX_H_ENTRIES]);

#endif
