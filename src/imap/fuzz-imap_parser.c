/*
 * libFuzzer target: the input (after a 4-byte seed for the split points) is
 * fed to the IMAP command reader in pseudo-random pieces, with small limits
 * and LITERAL- on or off; each command collected is parsed and its argument
 * tree walked. Invariants: the reader never holds more than max_command +
 * 2 octets, every input octet is consumed, and the same input fed whole
 * gives the same sequence of results (statuses, tags and commands).
 */
#include "imap/imap_parser.h"

#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 200
#define MAX_LITERAL 300
#define MAX_COMMAND 1000

static size_t walk(const struct imap_arg *args, size_t n, unsigned depth)
{
	size_t count = n;
	if (depth > IMAP_MAX_DEPTH)
		abort();
	for (size_t i = 0; i < n; i++) {
		const struct imap_arg *a = &args[i];
		if (a->type == IMAP_ARG_LIST) {
			count += walk(a->list, a->nlist, depth + 1);
		} else {
			if (a->str == NULL || a->str[a->len] != '\0')
				abort();
			if (a->type != IMAP_ARG_LITERAL && memchr(a->str, '\0', a->len) != NULL)
				abort();
		}
	}
	return count;
}

struct transcript {
	unsigned char *s;
	size_t len, cap;
};

static void t_add(struct transcript *t, const void *data, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2;
		t->s = realloc(t->s, t->cap);
		if (t->s == NULL)
			abort();
	}
	memcpy(t->s + t->len, data, n);
	t->len += n;
}

/* Feed data in pieces (whole when `split` is false); record what the reader said. */
static void run(const uint8_t *data, size_t size, uint32_t seed, bool split, struct transcript *t)
{
	struct evbuffer *in = evbuffer_new();
	struct imap_reader r;
	imap_reader_init(&r, MAX_LINE, MAX_LITERAL, MAX_COMMAND);
	r.literal_minus = seed & 1;
	size_t pos = 0;
	int guard = 0;
	while (pos < size || evbuffer_get_length(in) > 0) {
		if (pos < size) {
			seed = seed * 1103515245u + 12345u;
			size_t chunk = split ? 1 + (seed >> 16) % 64 : size;
			if (chunk > size - pos)
				chunk = size - pos;
			evbuffer_add(in, data + pos, chunk);
			pos += chunk;
		}
		for (;;) {
			if (++guard > 1000000)
				abort();
			enum imap_reader_status st = imap_reader_feed(&r, in);
			if (r.len > MAX_COMMAND + 2 && !r.skipping)
				abort();
			if (st == IMAP_READ_MORE)
				break;
			unsigned char code = (unsigned char)st;
			t_add(t, &code, 1);
			if (st == IMAP_READ_TOO_LONG || st == IMAP_READ_BAD_LITERAL)
				t_add(t, r.tag, strlen(r.tag) + 1);
			if (st != IMAP_READ_COMMAND)
				continue;
			t_add(t, r.buf, r.len + 1);
			if (r.buf[r.len] != '\0')
				abort();
			struct imap_command cmd;
			const char *error;
			if (imap_parse_command(r.buf, r.len, &cmd, &error) == 0) {
				walk(cmd.args, cmd.nargs, 1);
				if (cmd.tag == NULL || cmd.name == NULL)
					abort();
			} else if (error == NULL) {
				abort();
			}
			imap_command_clear(&cmd);
			imap_reader_reset(&r);
		}
		if (pos >= size && evbuffer_get_length(in) > 0)
			abort(); /* MORE with unconsumed input */
	}
	imap_reader_free(&r);
	evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint32_t seed = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
			(uint32_t)data[3] << 24;
	data += 4;
	size -= 4;
	struct transcript a = {0}, b = {0};
	run(data, size, seed, true, &a);
	run(data, size, seed, false, &b);
	if (a.len != b.len || (a.len > 0 && memcmp(a.s, b.s, a.len) != 0))
		abort();
	free(a.s);
	free(b.s);

	/* the whole input as one command text */
	struct imap_command cmd;
	const char *error;
	if (imap_parse_command((const char *)data, size, &cmd, &error) == 0)
		walk(cmd.args, cmd.nargs, 1);
	imap_command_clear(&cmd);
	return 0;
}
