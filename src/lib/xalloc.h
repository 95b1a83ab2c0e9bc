/*
 * Allocation helpers that never return NULL: running out of memory is a
 * broken invariant for a mail server, so these abort through fatal().
 */
#ifndef POSTERN_XALLOC_H
#define POSTERN_XALLOC_H

#include <stdarg.h>
#include <stddef.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Log the message at level "fatal" and abort(). */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Grow an array to hold at least `need` elements of `elem` bytes; doubles. */
void *xgrow(void *ptr, size_t *cap, size_t need, size_t elem);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* free(*p) and set *p to NULL. */
#define xfree(p)                                                                                   \
	do {                                                                                       \
		free(*(p));                                                                        \
		*(p) = NULL;                                                                       \
	} while (0)

#endif
