/*
 * libFuzzer target: the MIME parser, fed whole and in pieces, and the IMAP
 * structure built from it (BODYSTRUCTURE, ENVELOPE, every section).
 * Small limits make the depth, part and header limits reachable.
 */
#include "mail/mime.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(const struct mime_part *m, uint64_t size)
{
	if (m->header_offset + m->header_size != m->body_offset)
		abort();
	if (m->body_offset + m->body_size > size || m->body_vsize < m->body_size)
		abort();
	for (const struct mime_part *c = m->children; c != NULL; c = c->next) {
		if (c->parent != m || c->header_offset < m->body_offset)
			abort();
		check(c, size);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mime_limits lim;
	mime_limits_default(&lim);
	if (size > 0) {
		/* first byte picks small limits sometimes */
		if (data[0] & 1) {
			lim.max_depth = 1 + data[0] % 5;
			lim.max_parts = 1 + data[0] % 7;
			lim.max_header_field = 1 + data[0] % 40;
			lim.max_header_block = 1 + data[0] % 90;
			lim.max_params = data[0] % 4;
			lim.max_boundary = 1 + data[0] % 9;
		}
	}

	/* the event stream, in chunks of varying size */
	struct mime_parser *p = mime_parser_new(&lim);
	struct mime_event ev;
	size_t pos = 0, step = size > 0 ? 1 + data[size - 1] % 13 : 1;
	uint64_t body = 0;
	while (pos < size) {
		size_t n = step < size - pos ? step : size - pos;
		mime_parser_push(p, data + pos, n);
		pos += n;
		while (mime_parser_next(p, &ev) == 1) {
			if (ev.type == MIME_EVENT_BODY) {
				if (ev.len == 0 || ev.offset + ev.len > size)
					abort();
				body += ev.len;
			}
		}
	}
	mime_parser_push(p, NULL, 0);
	while (mime_parser_next(p, &ev) == 1)
		if (ev.type == MIME_EVENT_BODY)
			body += ev.len;
	if (!mime_parser_done(p) || body > size)
		abort();
	check(mime_parser_root(p), size);
	mime_parser_free(&p);

	/* the structure for IMAP */
	struct mime_part *root = mime_message_parse(data, size, &lim);
	check(root, size);
	char *s = mime_bodystructure(root, true);
	free(s);
	s = mime_bodystructure(root, false);
	free(s);
	s = mime_envelope_string(root);
	free(s);
	static const char *const specs[] = {"",         "1",        "2",        "1.1",
	                                    "1.MIME",   "1.2.MIME", "HEADER",   "TEXT",
	                                    "1.HEADER", "1.TEXT",   "2.1.TEXT", "3.2.1"};
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct mime_section sec;
		const char *err;
		if (mime_section_find(root, specs[i], &sec, &err) == 0) {
			if (sec.offset + sec.size > size)
				abort();
			unsigned char out[64];
			mime_copy_crlf(data, sec.offset, sec.size, sec.size / 3, out, sizeof(out));
		}
	}
	mime_part_free(&root);

	/* the header decoders on the raw input */
	size_t n = size < 4096 ? size : 4096;
	s = mime_decode_header(data, n);
	free(s);
	struct mime_address *a = mime_address_parse((const char *)data, n, 100);
	mime_address_free(&a);
	char *type, *subtype;
	struct mime_param *params;
	unsigned np;
	mime_parse_content_value((const char *)data, n, true, 16, &type, &subtype, &params, &np);
	for (unsigned i = 0; i < np; i++) {
		s = mime_decode_param(params[i].name, params[i].value);
		free(s);
	}
	free(type);
	free(subtype);
	mime_params_free(&params, np);
	return 0;
}
