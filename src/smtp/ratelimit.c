/* Per-key counters for connection and rate limits (see ratelimit.h). */
#include "smtp/ratelimit.h"
#include "lib/xalloc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 300

struct entry {
	struct entry *next;
	unsigned active;     /* concurrent users of the key */
	unsigned count;      /* events in the window starting at window_start */
	time_t window_start;
	unsigned window;
	char key[];
};

struct ratelimit {
	struct entry **buckets;
	size_t nbuckets, nentries, prune_at;
};

struct ratelimit *ratelimit_new(void)
{
	struct ratelimit *rl = xcalloc(1, sizeof(*rl));
	rl->nbuckets = 1024;
	rl->buckets = xcalloc(rl->nbuckets, sizeof(*rl->buckets));
	rl->prune_at = 4096;
	return rl;
}

void ratelimit_free(struct ratelimit **rlp)
{
	struct ratelimit *rl = *rlp;
	if (rl == NULL)
		return;
	for (size_t i = 0; i < rl->nbuckets; i++) {
		struct entry *e = rl->buckets[i];
		while (e != NULL) {
			struct entry *next = e->next;
			free(e);
			e = next;
		}
	}
	free(rl->buckets);
	free(rl);
	*rlp = NULL;
}

static size_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)h;
}

static bool expired(const struct entry *e, time_t now)
{
	return e->count == 0 || now - e->window_start >= (time_t)e->window;
}

static void prune(struct ratelimit *rl, time_t now)
{
	for (size_t i = 0; i < rl->nbuckets; i++) {
		struct entry **pp = &rl->buckets[i];
		while (*pp != NULL) {
			struct entry *e = *pp;
			if (e->active == 0 && expired(e, now)) {
				*pp = e->next;
				free(e);
				rl->nentries--;
			} else {
				pp = &e->next;
			}
		}
	}
	/* do not rescan on every insert when most entries are live */
	rl->prune_at = rl->nentries * 2 > 4096 ? rl->nentries * 2 : 4096;
}

static struct entry *lookup(struct ratelimit *rl, const char *key, bool create)
{
	size_t klen = strnlen(key, KEY_MAX);
	struct entry **pp = &rl->buckets[hash(key) % rl->nbuckets];
	for (struct entry *e = *pp; e != NULL; e = e->next)
		if (strncmp(e->key, key, klen) == 0 && e->key[klen] == '\0')
			return e;
	if (!create)
		return NULL;
	if (rl->nentries >= rl->prune_at)
		prune(rl, time(NULL));
	struct entry *e = xcalloc(1, sizeof(*e) + klen + 1);
	memcpy(e->key, key, klen);
	e->next = *pp;
	*pp = e;
	rl->nentries++;
	return e;
}

unsigned ratelimit_active(struct ratelimit *rl, const char *key, int delta)
{
	struct entry *e = lookup(rl, key, delta > 0);
	if (e == NULL)
		return 0;
	if (delta < 0 && e->active < (unsigned)-delta)
		e->active = 0;
	else
		e->active = (unsigned)((int)e->active + delta);
	return e->active;
}

unsigned ratelimit_count(struct ratelimit *rl, const char *key, time_t now, unsigned window)
{
	struct entry *e = lookup(rl, key, false);
	if (e == NULL || now - e->window_start >= (time_t)window)
		return 0;
	return e->count;
}

unsigned ratelimit_hit(struct ratelimit *rl, const char *key, time_t now, unsigned window)
{
	struct entry *e = lookup(rl, key, true);
	if (e->count == 0 || now - e->window_start >= (time_t)window) {
		e->window_start = now;
		e->count = 0;
	}
	e->window = window;
	e->count++;
	return e->count;
}
