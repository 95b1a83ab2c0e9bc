/* Small string and number helpers shared by every layer. */
#ifndef POSTERN_STRUTIL_H
#define POSTERN_STRUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "10M", "2G", "512k", "1000" -> bytes (binary multiples). 0 ok, -1 bad. */
int parse_size(const char *s, uint64_t *value_r);
/* "30s", "5m", "4h", "4d", "1w", plain seconds -> seconds. 0 ok, -1 bad. */
int parse_duration(const char *s, uint64_t *seconds_r);
/* Decimal unsigned integer, whole string. 0 ok, -1 bad or overflow. */
int parse_uint64(const char *s, uint64_t *value_r);
/* Format a size the way parse_size reads it back ("10M" when exact). */
void format_size(uint64_t v, char *buf, size_t bufsize);
void format_duration(uint64_t secs, char *buf, size_t bufsize);

/* ASCII lowercase in place; returns s. */
char *str_lower(char *s);
/* Strip leading/trailing ASCII whitespace in place; returns the start. */
char *str_trim(char *s);
bool str_has_prefix_ci(const char *s, const char *prefix);

/*
 * Split a comma- and/or whitespace-separated list. Returns a NULL-terminated
 * array of strings (free with strv_free); *count_r gets the length.
 */
char **strv_split_list(const char *s, size_t *count_r);
void strv_free(char ***v);

/* Join `n` bytes as lowercase hex into `out` (2n+1 bytes). */
void hex_encode(const unsigned char *in, size_t n, char *out);

/* Constant-time comparison of two equal-length buffers. */
bool mem_equal_ct(const void *a, const void *b, size_t n);

/* Base64 (RFC 4648) decode; returns decoded length or -1 on bad input.
   `out` must hold at least 3*(len/4)+3 bytes. */
long base64_decode(const char *in, size_t len, unsigned char *out);
/* Base64 encode; `out` must hold 4*((len+2)/3)+1 bytes. Returns length. */
size_t base64_encode(const unsigned char *in, size_t len, char *out);

#endif
