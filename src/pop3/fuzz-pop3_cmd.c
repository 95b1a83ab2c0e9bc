/*
 * libFuzzer target: command lines (split at LF, as the line reader does)
 * through the POP3 command parser, and the whole input through the RETR/TOP
 * wire conversion in random chunk sizes, checking its invariants: only
 * CRLF line ends, no line starting with a single ".", output within 2n.
 */
#include "pop3/pop3_cmd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void one_line(const char *line, size_t len)
{
	struct pop3_cmd c;
	if (pop3_cmd_parse(line, len, &c) != POP3_PARSE_OK)
		return;
	if (c.arg != NULL && (c.arg < line || c.arg + c.arg_len > line + len))
		abort();
	if (c.nnum > 2)
		abort();
	if (pop3_verb_name(c.verb)[0] == '?')
		abort();
}

static void check_xform(const uint8_t *data, size_t size, int64_t top, size_t step)
{
	struct pop3_xform x;
	pop3_xform_init(&x, top);
	char *out = malloc(2 * size + 2);
	size_t o = 0;
	for (size_t i = 0; i < size && !x.done; i += step) {
		size_t n = size - i < step ? size - i : step;
		o += pop3_xform_run(&x, data + i, n, out + o);
		if (o > 2 * size)
			abort();
	}
	/* every LF preceded by CR; a "." after CRLF (or at the start) is doubled */
	for (size_t i = 0; i < o; i++) {
		if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
			abort();
		bool bol = i == 0 || out[i - 1] == '\n';
		if (bol && out[i] == '.' && (i + 1 >= o || out[i + 1] != '.'))
			abort();
		if (bol && out[i] == '.')
			i++;
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	size_t start = 0;
	for (size_t i = 0; i <= size; i++) {
		if (i == size || s[i] == '\n') {
			size_t len = i - start;
			if (len > 0 && s[start + len - 1] == '\r')
				len--;
			one_line(s + start, len);
			start = i + 1;
		}
	}
	size_t step = size > 0 ? (size_t)data[0] % 7 + 1 : 1;
	check_xform(data, size, -1, step);
	check_xform(data, size, size > 1 ? data[1] % 4 : 0, 4096);
	return 0;
}
