#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int parse_uint64(const char *s, uint64_t *value_r)
{
	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	uint64_t v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (*s != '\0')
		return -1;
	*value_r = v;
	return 0;
}

static int parse_with_suffix(const char *s, const char *suffixes, const uint64_t *mult,
			     uint64_t *value_r)
{
	char num[32];
	size_t len = strlen(s);
	if (len == 0 || len >= sizeof(num))
		return -1;
	memcpy(num, s, len + 1);
	uint64_t m = 1;
	char last = (char)tolower((unsigned char)num[len - 1]);
	const char *p = strchr(suffixes, last);
	if (last != '\0' && p != NULL) {
		m = mult[p - suffixes];
		num[--len] = '\0';
		/* accept "10MB", "10KiB"-less forms only; keep it strict */
	}
	uint64_t v;
	if (parse_uint64(num, &v) < 0)
		return -1;
	if (v != 0 && m > UINT64_MAX / v)
		return -1;
	*value_r = v * m;
	return 0;
}

int parse_size(const char *s, uint64_t *value_r)
{
	static const uint64_t mult[] = {1, 1024, 1024 * 1024, 1024 * 1024 * 1024,
					1024ULL * 1024 * 1024 * 1024};
	return parse_with_suffix(s, "bkmgt", mult, value_r);
}

int parse_duration(const char *s, uint64_t *seconds_r)
{
	static const uint64_t mult[] = {1, 60, 3600, 86400, 7 * 86400};
	return parse_with_suffix(s, "smhdw", mult, seconds_r);
}

void format_size(uint64_t v, char *buf, size_t bufsize)
{
	static const char suffix[] = "KMGT";
	int i = -1;
	while (v != 0 && v % 1024 == 0 && i < 3) {
		v /= 1024;
		i++;
	}
	if (i < 0)
		snprintf(buf, bufsize, "%llu", (unsigned long long)v);
	else
		snprintf(buf, bufsize, "%llu%c", (unsigned long long)v, suffix[i]);
}

void format_duration(uint64_t secs, char *buf, size_t bufsize)
{
	if (secs != 0 && secs % 86400 == 0)
		snprintf(buf, bufsize, "%llud", (unsigned long long)(secs / 86400));
	else if (secs != 0 && secs % 3600 == 0)
		snprintf(buf, bufsize, "%lluh", (unsigned long long)(secs / 3600));
	else if (secs != 0 && secs % 60 == 0)
		snprintf(buf, bufsize, "%llum", (unsigned long long)(secs / 60));
	else
		snprintf(buf, bufsize, "%llus", (unsigned long long)secs);
}

char *str_lower(char *s)
{
	for (char *p = s; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	return s;
}

char *str_trim(char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
			 s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

bool str_has_prefix_ci(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

char **strv_split_list(const char *s, size_t *count_r)
{
	size_t n = 0, cap = 0;
	char **v = NULL;
	const char *p = s;
	while (p != NULL && *p != '\0') {
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		const char *start = p;
		while (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t')
			p++;
		if (p > start) {
			v = xgrow(v, &cap, n + 2, sizeof(*v));
			v[n++] = xstrndup(start, (size_t)(p - start));
		}
	}
	v = xgrow(v, &cap, n + 1, sizeof(*v));
	v[n] = NULL;
	if (count_r != NULL)
		*count_r = n;
	return v;
}

void strv_free(char ***v)
{
	if (*v == NULL)
		return;
	for (char **p = *v; *p != NULL; p++)
		free(*p);
	xfree(v);
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

bool mem_equal_ct(const void *a, const void *b, size_t n)
{
	const volatile unsigned char *x = a, *y = b;
	unsigned char d = 0;
	for (size_t i = 0; i < n; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long base64_decode(const char *in, size_t len, unsigned char *out)
{
	size_t o = 0;
	unsigned acc = 0;
	int bits = 0, pad = 0;
	for (size_t i = 0; i < len; i++) {
		int c = (unsigned char)in[i];
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad > 0)
			return -1; /* data after padding */
		int v = b64val(c);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (pad > 2 || (len % 4) != 0)
		return -1;
	return (long)o;
}

size_t base64_encode(const unsigned char *in, size_t len, char *out)
{
	static const char tbl[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0, i = 0;
	for (; i + 2 < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[o++] = tbl[v >> 18];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = tbl[(v >> 6) & 63];
		out[o++] = tbl[v & 63];
	}
	if (i < len) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < len)
			v |= (unsigned)in[i + 1] << 8;
		out[o++] = tbl[v >> 18];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}
