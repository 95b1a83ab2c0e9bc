/*
 * IMAP sequence sets: parsing (bounded number of ranges), membership by
 * binary search, and formatting numbers back into compact ranges.
 */
#include "imap/imap_seqset.h"

#include "lib/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int range_cmp(const void *a, const void *b)
{
	const struct imap_range *x = a, *y = b;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return x->hi < y->hi ? -1 : x->hi > y->hi;
}

/* Sort and merge overlapping or adjacent ranges. */
static void normalise(struct imap_seqset *set)
{
	if (set->n < 2)
		return;
	qsort(set->ranges, set->n, sizeof(*set->ranges), range_cmp);
	size_t out = 0;
	for (size_t i = 1; i < set->n; i++) {
		struct imap_range *last = &set->ranges[out];
		const struct imap_range *r = &set->ranges[i];
		if (last->hi == UINT32_MAX || r->lo <= last->hi + 1) {
			if (r->hi > last->hi)
				last->hi = r->hi;
		} else {
			set->ranges[++out] = *r;
		}
	}
	set->n = out + 1;
}

/* seq-number: nz-number or "*". Advances *p. */
static bool parse_number(const char **p, uint32_t max, uint32_t *n_r)
{
	const char *s = *p;
	if (*s == '*') {
		*n_r = max;
		*p = s + 1;
		return true;
	}
	if (*s < '1' || *s > '9')
		return false;
	uint64_t n = 0;
	while (*s >= '0' && *s <= '9') {
		n = n * 10 + (uint64_t)(*s - '0');
		if (n > UINT32_MAX)
			return false;
		s++;
	}
	*n_r = (uint32_t)n;
	*p = s;
	return true;
}

int imap_seqset_parse(const char *s, uint32_t max, struct imap_seqset *set_r,
		      const char **error_r)
{
	memset(set_r, 0, sizeof(*set_r));
	if (strcmp(s, "$") == 0) {
		set_r->saved = true;
		return 0;
	}
	size_t cap = 0;
	const char *p = s;
	for (;;) {
		uint32_t a, b;
		if (!parse_number(&p, max, &a))
			goto bad;
		b = a;
		if (*p == ':') {
			p++;
			if (!parse_number(&p, max, &b))
				goto bad;
		}
		if (set_r->n >= IMAP_SEQSET_MAX_RANGES) {
			*error_r = "Too many ranges in sequence set";
			imap_seqset_free(set_r);
			return -1;
		}
		set_r->ranges = xgrow(set_r->ranges, &cap, set_r->n + 1, sizeof(*set_r->ranges));
		set_r->ranges[set_r->n].lo = a < b ? a : b;
		set_r->ranges[set_r->n].hi = a < b ? b : a;
		set_r->n++;
		if (*p == '\0')
			break;
		if (*p != ',')
			goto bad;
		p++;
	}
	normalise(set_r);
	return 0;
bad:
	*error_r = "Invalid sequence set";
	imap_seqset_free(set_r);
	return -1;
}

bool imap_seqset_syntax(const char *s)
{
	struct imap_seqset set;
	const char *error;
	/* parse without storing: cheap enough, and one grammar to maintain */
	if (imap_seqset_parse(s, 1, &set, &error) < 0)
		return false;
	imap_seqset_free(&set);
	return true;
}

void imap_seqset_free(struct imap_seqset *set)
{
	free(set->ranges);
	memset(set, 0, sizeof(*set));
}

void imap_seqset_add(struct imap_seqset *set, uint32_t lo, uint32_t hi)
{
	if (lo > hi) {
		uint32_t t = lo;
		lo = hi;
		hi = t;
	}
	size_t cap = set->n;
	set->ranges = xgrow(set->ranges, &cap, set->n + 1, sizeof(*set->ranges));
	set->ranges[set->n].lo = lo;
	set->ranges[set->n].hi = hi;
	set->n++;
	normalise(set);
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n)
{
	size_t lo = 0, hi = set->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct imap_range *r = &set->ranges[mid];
		if (n < r->lo)
			hi = mid;
		else if (n > r->hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

uint64_t imap_seqset_count(const struct imap_seqset *set)
{
	uint64_t c = 0;
	for (size_t i = 0; i < set->n; i++)
		c += (uint64_t)set->ranges[i].hi - set->ranges[i].lo + 1;
	return c;
}

uint32_t imap_seqset_last(const struct imap_seqset *set)
{
	return set->n > 0 ? set->ranges[set->n - 1].hi : 0;
}

bool imap_seqset_next(const struct imap_seqset *set, uint64_t *it, uint32_t *n_r)
{
	/* it = range index << 32 | offset within the range */
	size_t i = (size_t)(*it >> 32);
	uint64_t off = *it & 0xffffffffu;
	if (i >= set->n)
		return false;
	const struct imap_range *r = &set->ranges[i];
	*n_r = r->lo + (uint32_t)off;
	if (*n_r == r->hi)
		*it = (uint64_t)(i + 1) << 32;
	else
		*it = (uint64_t)i << 32 | (off + 1);
	return true;
}

size_t imap_seqset_filter(const struct imap_seqset *set, const uint32_t *sorted, size_t n,
			  bool indexes, uint32_t *out)
{
	size_t k = 0, r = 0;
	for (size_t i = 0; i < n && r < set->n; i++) {
		while (r < set->n && set->ranges[r].hi < sorted[i])
			r++;
		if (r < set->n && sorted[i] >= set->ranges[r].lo)
			out[k++] = indexes ? (uint32_t)i : sorted[i];
	}
	return k;
}

struct str {
	char *s;
	size_t len, cap;
};

static void put_range(struct str *b, uint32_t lo, uint32_t hi)
{
	b->s = xgrow(b->s, &b->cap, b->len + 24, 1);
	int w = lo == hi ? snprintf(b->s + b->len, 24, "%s%u", b->len ? "," : "", lo)
			 : snprintf(b->s + b->len, 24, "%s%u:%u", b->len ? "," : "", lo, hi);
	b->len += (size_t)w;
}

char *imap_seqset_format(const uint32_t *nums, size_t n)
{
	struct str b = {0};
	b.s = xgrow(NULL, &b.cap, 1, 1);
	b.s[0] = '\0';
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && nums[j] != UINT32_MAX && nums[j + 1] == nums[j] + 1)
			j++;
		put_range(&b, nums[i], nums[j]);
		i = j + 1;
	}
	return b.s;
}

char *imap_seqset_string(const struct imap_seqset *set)
{
	struct str b = {0};
	b.s = xgrow(NULL, &b.cap, 1, 1);
	b.s[0] = '\0';
	for (size_t i = 0; i < set->n; i++)
		put_range(&b, set->ranges[i].lo, set->ranges[i].hi);
	return b.s;
}
