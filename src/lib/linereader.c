#include "lib/linereader.h"

#include <event2/buffer.h>
#include <string.h>

void line_reader_init(struct line_reader *lr, size_t max)
{
	lr->max = max;
	lr->skipping = false;
}

enum line_status line_reader_read(struct line_reader *lr, struct evbuffer *in, char *buf,
				  size_t *len_r, unsigned *flags_r)
{
	for (;;) {
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			return LINE_MORE;
		/* Only look as far as a legal line can reach: max + CR + LF. */
		size_t window = lr->max + 2;
		struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
		if (lr->skipping) {
			if (lf.pos < 0) {
				evbuffer_drain(in, avail);
				return LINE_MORE;
			}
			evbuffer_drain(in, (size_t)lf.pos + 1);
			lr->skipping = false;
			continue;
		}
		if (lf.pos < 0 || (size_t)lf.pos >= window) {
			if (lf.pos < 0 && avail < window)
				return LINE_MORE;
			/* Too long: discard what we have and skip to the next LF. */
			if (lf.pos >= 0) {
				evbuffer_drain(in, (size_t)lf.pos + 1);
			} else {
				evbuffer_drain(in, avail);
				lr->skipping = true;
			}
			return LINE_TOO_LONG;
		}
		size_t n = (size_t)lf.pos; /* bytes before LF */
		unsigned flags = 0;
		if (n > 0) {
			evbuffer_copyout(in, buf, n);
		}
		evbuffer_drain(in, n + 1);
		if (n > 0 && buf[n - 1] == '\r')
			n--;
		else
			flags |= LINE_BARE_LF;
		if (n > lr->max)
			return LINE_TOO_LONG;
		if (memchr(buf, '\0', n) != NULL)
			flags |= LINE_HAS_NUL;
		buf[n] = '\0';
		*len_r = n;
		*flags_r = flags;
		return LINE_OK;
	}
}
