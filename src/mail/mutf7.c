/* Modified UTF-7 (RFC 3501 5.1.3) <-> UTF-8. */
#include "mail/mutf7.h"
#include "lib/xalloc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64_value(char c)
{
	const char *p = c != '\0' ? strchr(b64, c) : NULL;
	return p != NULL ? (int)(p - b64) : -1;
}

/* Next code point of UTF-8 at *s (advanced); -1 if invalid. */
static int32_t utf8_next(const unsigned char **s)
{
	const unsigned char *p = *s;
	uint32_t c = p[0];
	int n;
	if (c < 0x80)
		n = 0;
	else if ((c & 0xe0) == 0xc0)
		n = 1, c &= 0x1f;
	else if ((c & 0xf0) == 0xe0)
		n = 2, c &= 0x0f;
	else if ((c & 0xf8) == 0xf0)
		n = 3, c &= 0x07;
	else
		return -1;
	for (int i = 1; i <= n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -1;
		c = (c << 6) | (p[i] & 0x3f);
	}
	static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
	if (c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return -1;
	*s = p + n + 1;
	return (int32_t)c;
}

static size_t utf8_put(char *o, uint32_t c)
{
	if (c < 0x80) {
		o[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		o[0] = (char)(0xc0 | (c >> 6));
		o[1] = (char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		o[0] = (char)(0xe0 | (c >> 12));
		o[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		o[2] = (char)(0x80 | (c & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (c >> 18));
	o[1] = (char)(0x80 | ((c >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((c >> 6) & 0x3f));
	o[3] = (char)(0x80 | (c & 0x3f));
	return 4;
}

char *mutf7_encode(const char *utf8)
{
	size_t len = strlen(utf8);
	/* worst case: every 3-byte character -> 1 UTF-16 unit -> ~3 base64 chars + "&-" */
	char *out = xmalloc(len * 4 + 8);
	char *o = out;
	const unsigned char *s = (const unsigned char *)utf8;
	while (*s != '\0') {
		if (*s >= 0x20 && *s < 0x7f) {
			*o++ = (char)*s;
			if (*s++ == '&')
				*o++ = '-';
			continue;
		}
		/* a run of characters outside printable ASCII */
		*o++ = '&';
		uint32_t bits = 0;
		int nbits = 0;
		while (*s != '\0' && !(*s >= 0x20 && *s < 0x7f)) {
			int32_t c = utf8_next(&s);
			if (c < 0) {
				free(out);
				return NULL;
			}
			uint16_t units[2];
			int nu = 0;
			if (c >= 0x10000) {
				units[nu++] = (uint16_t)(0xd800 + ((c - 0x10000) >> 10));
				units[nu++] = (uint16_t)(0xdc00 + ((c - 0x10000) & 0x3ff));
			} else {
				units[nu++] = (uint16_t)c;
			}
			for (int i = 0; i < nu; i++) {
				bits = (bits << 16) | units[i];
				nbits += 16;
				while (nbits >= 6) {
					nbits -= 6;
					*o++ = b64[(bits >> nbits) & 0x3f];
				}
			}
		}
		if (nbits > 0)
			*o++ = b64[(bits << (6 - nbits)) & 0x3f];
		*o++ = '-';
	}
	*o = '\0';
	return out;
}

char *mutf7_decode(const char *in)
{
	size_t len = strlen(in);
	char *out = xmalloc(len * 2 + 4);
	char *o = out;
	const char *s = in;
	while (*s != '\0') {
		unsigned char ch = (unsigned char)*s;
		if (ch < 0x20 || ch >= 0x7f)
			goto bad;
		if (ch != '&') {
			*o++ = *s++;
			continue;
		}
		s++;
		if (*s == '-') {
			*o++ = '&';
			s++;
			continue;
		}
		uint32_t bits = 0, high = 0;
		int nbits = 0;
		size_t nunits = 0;
		while (*s != '-') {
			int v = b64_value(*s);
			if (v < 0)
				goto bad;
			s++;
			bits = (bits << 6) | (uint32_t)v;
			nbits += 6;
			if (nbits < 16)
				continue;
			nbits -= 16;
			uint32_t u = (bits >> nbits) & 0xffff;
			nunits++;
			if (high != 0) {
				if (u < 0xdc00 || u > 0xdfff)
					goto bad;
				o += utf8_put(o, 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00));
				high = 0;
			} else if (u >= 0xd800 && u <= 0xdbff) {
				high = u;
			} else if (u >= 0xdc00 && u <= 0xdfff) {
				goto bad;
			} else if (u >= 0x20 && u < 0x7f) {
				goto bad; /* printable ASCII must not be encoded */
			} else {
				o += utf8_put(o, u);
			}
		}
		s++; /* '-' */
		/* leftover bits must be zero padding of fewer than 6 bits */
		if (high != 0 || nunits == 0 || nbits >= 6 || (bits & ((1u << nbits) - 1)) != 0)
			goto bad;
	}
	*o = '\0';
	return out;
bad:
	free(out);
	return NULL;
}
