/* DATA decoder: see smtp_data.h. */
#include "smtp/smtp_data.h"

#include <string.h>

enum {
	D_BOL,      /* start of a line that followed a real CRLF */
	D_BOL_BARE, /* start of a line that followed a bare LF/CR: never special */
	D_TEXT,     /* inside a line */
	D_CR,       /* saw CR inside a line */
	D_DOT,      /* saw "." at D_BOL */
	D_DOT_CR,   /* saw ".\r" at D_BOL */
};

void smtp_data_init(struct smtp_data *d, size_t max_line, bool normalize)
{
	d->state = D_BOL;
	d->line_len = 0;
	d->max_line = max_line;
	d->normalize = normalize;
	d->flags = 0;
}

/* Count one octet of line text; lines are limited including CRLF. */
static void count(struct smtp_data *d)
{
	d->line_len++;
	if (d->line_len + 2 > d->max_line)
		d->flags |= SMTP_DATA_LINE_TOO_LONG;
}

size_t smtp_data_decode(struct smtp_data *d, const char *in, size_t len, char *out,
			size_t *out_len_r, bool *done_r)
{
	size_t o = 0, i = 0;
	*done_r = false;
	while (i < len) {
		if (d->state == D_TEXT) {
			/*
			 * Inside a line: copy the run up to the next CR or LF at
			 * once (memchr), not octet by octet through the switch,
			 * which cost ~25 instructions per octet of every message.
			 */
			const char *cr = memchr(in + i, '\r', len - i);
			size_t end = cr != NULL ? (size_t)(cr - in) : len;
			const char *lf = memchr(in + i, '\n', end - i);
			if (lf != NULL)
				end = (size_t)(lf - in);
			if (end > i) {
				size_t run = end - i;
				memcpy(out + o, in + i, run);
				o += run;
				i = end;
				d->line_len += run;
				if (d->line_len + 2 > d->max_line)
					d->flags |= SMTP_DATA_LINE_TOO_LONG;
				continue;
			}
		}
		char ch = in[i++];
		switch (d->state) {
		case D_BOL:
			d->line_len = 0;
			if (ch == '.') {
				d->state = D_DOT;
				continue;
			}
			goto text;
		case D_BOL_BARE:
			d->line_len = 0;
			goto text;
		case D_DOT:
			if (ch == '\r') {
				d->state = D_DOT_CR;
				continue;
			}
			if (ch == '\n') {
				/* ".\n": not an end marker; keep the dot as text */
				out[o++] = '.';
				count(d);
				goto text;
			}
			/* transparency: the leading dot is dropped (RFC 5321 4.5.2) */
			count(d);
			goto text;
		case D_DOT_CR:
			if (ch == '\n') {
				d->state = D_BOL;
				*done_r = true;
				*out_len_r = o;
				return i;
			}
			/* ".\r" + something: a bare CR after a lone dot */
			out[o++] = '.';
			count(d);
			d->flags |= SMTP_DATA_BARE_CR;
			if (d->normalize) {
				out[o++] = '\r';
				out[o++] = '\n';
			} else {
				out[o++] = '\r';
			}
			d->state = D_BOL_BARE;
			d->line_len = 0;
			goto text;
		case D_CR:
			if (ch == '\n') {
				out[o++] = '\r';
				out[o++] = '\n';
				d->state = D_BOL;
				continue;
			}
			d->flags |= SMTP_DATA_BARE_CR;
			if (d->normalize) {
				out[o++] = '\r';
				out[o++] = '\n';
			} else {
				out[o++] = '\r';
			}
			d->state = D_BOL_BARE;
			d->line_len = 0;
			goto text;
		case D_TEXT:
		default:
			goto text;
		}
	text:
		/* `ch` is an ordinary octet of the current line, or a line ending */
		if (ch == '\r') {
			d->state = D_CR;
		} else if (ch == '\n') {
			d->flags |= SMTP_DATA_BARE_LF;
			if (d->normalize)
				out[o++] = '\r';
			out[o++] = '\n';
			d->state = D_BOL_BARE;
		} else {
			out[o++] = ch;
			count(d);
			d->state = D_TEXT;
		}
	}
	*out_len_r = o;
	return i;
}
