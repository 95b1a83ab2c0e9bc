/*
 * libFuzzer target: command lines (split at LF, as the line reader does)
 * through the verb, MAIL, RCPT and BDAT parsers, and the whole input through
 * the DATA decoder in both bare-newline modes, checking its invariants.
 */
#include "smtp/smtp_data.h"
#include "smtp/smtp_parser.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void one_line(const char *line, size_t len)
{
	struct smtp_command cmd;
	if (smtp_command_parse(line, len, &cmd) < 0)
		return;
	if (cmd.arg < line || cmd.arg + cmd.arg_len > line + len)
		abort();
	struct smtp_error e;
	if (cmd.verb == SMTP_MAIL) {
		struct smtp_mail_args m;
		smtp_parse_mail(cmd.arg, cmd.arg_len, true, &m, &e);
		smtp_parse_mail(cmd.arg, cmd.arg_len, false, &m, &e);
	} else if (cmd.verb == SMTP_RCPT) {
		struct smtp_rcpt_args r;
		smtp_parse_rcpt(cmd.arg, cmd.arg_len, true, &r, &e);
		smtp_parse_rcpt(cmd.arg, cmd.arg_len, false, &r, &e);
	} else if (cmd.verb == SMTP_BDAT) {
		uint64_t n;
		bool last;
		smtp_parse_bdat(cmd.arg, cmd.arg_len, &n, &last);
	}
	smtp_xtext_valid(line, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	size_t start = 0;
	for (size_t i = 0; i <= size; i++) {
		if (i == size || s[i] == '\n') {
			size_t end = i;
			if (end > start && s[end - 1] == '\r')
				end--;
			if (end - start <= SMTP_COMMAND_LINE_MAX)
				one_line(s + start, end - start);
			start = i + 1;
		}
	}
	for (int norm = 0; norm < 2; norm++) {
		struct smtp_data d;
		smtp_data_init(&d, 100, norm);
		char *out = malloc(2 * size + 4 + 1);
		size_t olen;
		bool done;
		size_t used = smtp_data_decode(&d, s, size, out, &olen, &done);
		if (used > size || olen > 2 * size + 4)
			abort();
		/* only CRLF.CRLF (or . CRLF at the very start) ends the data */
		if (done && !(used >= 3 && memcmp(s + used - 3, ".\r\n", 3) == 0 &&
			      (used == 3 || (used >= 5 && memcmp(s + used - 5, "\r\n", 2) == 0))))
			abort();
		/* normalize mode never leaves a bare CR or LF */
		if (norm) {
			for (size_t k = 0; k < olen; k++) {
				if (out[k] == '\n' && (k == 0 || out[k - 1] != '\r'))
					abort();
				if (out[k] == '\r' && k + 1 < olen && out[k + 1] != '\n')
					abort();
			}
		}
		free(out);
	}
	return 0;
}
