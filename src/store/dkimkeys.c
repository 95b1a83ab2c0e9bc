/*
 * DKIM key storage: one directory per domain under DATA_DIR/dkim, a .pem
 * and a .key (metadata) file per selector, and the signer's cache of the
 * parsed active keys of each domain. See dkimkeys.h.
 *
 * SECURITY: the private keys are created 0600 with O_EXCL in directories
 * made 0700; names are checked before they become paths; metadata is read
 * with a size limit and parsed strictly.
 */
#include "store/dkimkeys.h"
#include "lib/fileio.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *dkimkey_alg_name(enum dkim_keygen_alg alg)
{
	return alg == DKIM_KEYGEN_ED25519 ? "ed25519" : "rsa2048";
}

int dkimkey_alg_parse(const char *s, enum dkim_keygen_alg *alg_r)
{
	if (strcmp(s, "ed25519") == 0)
		*alg_r = DKIM_KEYGEN_ED25519;
	else if (strcmp(s, "rsa2048") == 0)
		*alg_r = DKIM_KEYGEN_RSA2048;
	else
		return -1;
	return 0;
}

const char *dkimkey_state_name(enum dkimkey_state st)
{
	return st == DKIMKEY_ACTIVE ? "active" : "retired";
}

bool dkimkeys_name_ok(const char *s, size_t max)
{
	size_t len = strlen(s), label = 0;
	if (len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
		if (c == '-' && label == 0)
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && s[len - 1] != '-';
}

static int check_names(const char *domain, const char *selector, char **error_r)
{
	if (!dkimkeys_name_ok(domain, 253)) {
		*error_r = xasprintf("invalid domain name: %s", domain);
		return -1;
	}
	if (selector != NULL && !dkimkeys_name_ok(selector, DKIMKEYS_MAX_SELECTOR)) {
		*error_r =
		    xasprintf("invalid selector (letters, digits, '-' and '.'): %s", selector);
		return -1;
	}
	return 0;
}

static int mkdir_ok(const char *path, char **error_r)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		*error_r = xasprintf("mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Write `data` to `path` through a temporary file of this process (O_EXCL,
 * 0600), fsync, then rename over `path`, or with `exclusive` link it to
 * `path`, which fails if `path` exists (two keygens racing for a selector).
 */
static int write_file(const char *path, const char *data, bool exclusive, char **error_r)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	(void)unlink(tmp); /* left by a crashed process with our pid */
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		*error_r = xasprintf("create %s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	if (write_full(fd, data, strlen(data)) < 0 || fsync(fd) < 0) {
		*error_r = xasprintf("write %s: %s", tmp, strerror(errno));
		close(fd);
		(void)unlink(tmp);
		free(tmp);
		return -1;
	}
	close(fd);
	int r = exclusive ? link(tmp, path) : rename(tmp, path);
	if (r < 0) {
		if (exclusive && errno == EEXIST)
			*error_r = xasprintf("%s already exists", path);
		else
			*error_r = xasprintf("%s %s: %s", exclusive ? "link" : "rename", tmp,
			                     strerror(errno));
		(void)unlink(tmp);
		free(tmp);
		return -1;
	}
	if (exclusive)
		(void)unlink(tmp);
	free(tmp);
	return 0;
}

/* Read a whole small file, and its stat() data into *st_r when not NULL;
   NULL with *error_r when missing, unreadable or too large. */
static char *read_file_st(const char *path, size_t max, struct stat *st_r, char **error_r)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		*error_r = xasprintf("open %s: %s", path, strerror(errno));
		return NULL;
	}
	if (st_r != NULL && fstat(fd, st_r) < 0) {
		*error_r = xasprintf("stat %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	char *buf = xmalloc(max + 1);
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, max + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*error_r = xasprintf("read %s: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			*error_r = xasprintf("%s: larger than %zu bytes", path, max);
			goto fail;
		}
	}
	close(fd);
	buf[len] = '\0';
	return buf;
fail:
	close(fd);
	explicit_bzero(buf, len); /* maybe a private key */
	free(buf);
	return NULL;
}

static char *read_file(const char *path, size_t max, char **error_r)
{
	return read_file_st(path, max, NULL, error_r);
}

static char *meta_text(const struct dkimkey *k)
{
	return xasprintf("algorithm=%s\ncreated=%lld\nstate=%s\ntxt=%s\n", dkimkey_alg_name(k->alg),
	                 (long long)k->created, dkimkey_state_name(k->state), k->txt);
}

/* Parse a metadata file into k (domain and selector already set). */
static int meta_parse(char *text, struct dkimkey *k, const char *path, char **error_r)
{
	bool have_alg = false, have_created = false, have_state = false;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');
		if (eq == NULL)
			goto bad;
		*eq = '\0';
		const char *v = eq + 1;
		if (strcmp(line, "algorithm") == 0) {
			if (dkimkey_alg_parse(v, &k->alg) < 0)
				goto bad;
			have_alg = true;
		} else if (strcmp(line, "created") == 0) {
			uint64_t t;
			if (parse_uint64(v, &t) < 0 || t > (uint64_t)INT64_MAX)
				goto bad;
			k->created = (time_t)t;
			have_created = true;
		} else if (strcmp(line, "state") == 0) {
			if (strcmp(v, "active") == 0)
				k->state = DKIMKEY_ACTIVE;
			else if (strcmp(v, "retired") == 0)
				k->state = DKIMKEY_RETIRED;
			else
				goto bad;
			have_state = true;
		} else if (strcmp(line, "txt") == 0) {
			if (k->txt != NULL || strncmp(v, "v=DKIM1;", 8) != 0)
				goto bad;
			k->txt = xstrdup(v);
		} else {
			goto bad;
		}
	}
	if (have_alg && have_created && have_state && k->txt != NULL)
		return 0;
bad:
	*error_r = xasprintf("%s: malformed key metadata", path);
	return -1;
}

bool dkimkeys_exists(const char *data_dir, const char *domain, const char *selector)
{
	char *pem = xasprintf("%s/dkim/%s/%s.pem", data_dir, domain, selector);
	char *key = xasprintf("%s/dkim/%s/%s.key", data_dir, domain, selector);
	bool exists = access(pem, F_OK) == 0 || access(key, F_OK) == 0;
	free(pem);
	free(key);
	return exists;
}

int dkimkeys_create(const char *data_dir, const char *domain, const char *selector,
                    enum dkim_keygen_alg alg, time_t now, struct dkimkey *key_r, char **error_r)
{
	memset(key_r, 0, sizeof(*key_r));
	if (check_names(domain, selector, error_r) < 0)
		return -1;
	char *dir = xasprintf("%s/dkim", data_dir);
	int ret = mkdir_ok(dir, error_r);
	free(dir);
	if (ret < 0)
		return -1;
	dir = xasprintf("%s/dkim/%s", data_dir, domain);
	ret = mkdir_ok(dir, error_r);
	free(dir);
	if (ret < 0)
		return -1;
	if (dkimkeys_exists(data_dir, domain, selector)) {
		*error_r = xasprintf("selector %s already exists for %s", selector, domain);
		return -1;
	}

	char *pem = NULL, *txt = NULL;
	const char *err = NULL;
	if (dkim_keygen(alg, &pem, &txt, &err) < 0) {
		*error_r = xasprintf("key generation failed: %s", err);
		return -1;
	}
	struct dkimkey k = {
	    .domain = xstrdup(domain),
	    .selector = xstrdup(selector),
	    .alg = alg,
	    .created = now,
	    .state = DKIMKEY_ACTIVE,
	    .txt = txt,
	};
	char *pem_path = xasprintf("%s/dkim/%s/%s.pem", data_dir, domain, selector);
	char *key_path = xasprintf("%s/dkim/%s/%s.key", data_dir, domain, selector);
	char *meta = meta_text(&k);
	ret = write_file(pem_path, pem, true, error_r);
	if (ret == 0) {
		ret = write_file(key_path, meta, true, error_r);
		if (ret < 0)
			(void)unlink(pem_path);
	}
	/* the private key does not stay in memory longer than needed */
	explicit_bzero(pem, strlen(pem));
	free(pem);
	free(meta);
	free(pem_path);
	free(key_path);
	if (ret < 0) {
		dkimkey_clear(&k);
		return -1;
	}
	*key_r = k;
	return 0;
}

static int key_cmp(const void *a, const void *b)
{
	const struct dkimkey *x = a, *y = b;
	int c = strcmp(x->domain, y->domain);
	if (c != 0)
		return c;
	if (x->created != y->created)
		return x->created < y->created ? -1 : 1;
	return strcmp(x->selector, y->selector);
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n > m && strcmp(s + n - m, suffix) == 0;
}

/* Load the keys of one domain directory into out. */
static int list_domain(const char *data_dir, const char *domain, bool active_only, bool with_pem,
                       struct dkimkey_list *out, char **error_r)
{
	char *dir_path = xasprintf("%s/dkim/%s", data_dir, domain);
	DIR *d = opendir(dir_path);
	if (d == NULL) {
		int e = errno;
		free(dir_path);
		if (e == ENOENT)
			return 0;
		*error_r = xasprintf("open %s/dkim/%s: %s", data_dir, domain, strerror(e));
		return -1;
	}
	int ret = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!has_suffix(de->d_name, ".key"))
			continue;
		char *selector = xstrndup(de->d_name, strlen(de->d_name) - 4);
		if (!dkimkeys_name_ok(selector, DKIMKEYS_MAX_SELECTOR)) {
			free(selector); /* not one of ours */
			continue;
		}
		char *path = xasprintf("%s/%s", dir_path, de->d_name);
		char *text = read_file(path, DKIMKEYS_MAX_META, error_r);
		struct dkimkey k = {.domain = xstrdup(domain), .selector = selector};
		if (text == NULL || meta_parse(text, &k, path, error_r) < 0) {
			free(text);
			free(path);
			dkimkey_clear(&k);
			ret = -1;
			break;
		}
		free(text);
		free(path);
		if (active_only && k.state != DKIMKEY_ACTIVE) {
			dkimkey_clear(&k);
			continue;
		}
		if (with_pem) {
			path = xasprintf("%s/%s.pem", dir_path, selector);
			k.pem = read_file(path, 64 * 1024, error_r);
			free(path);
			if (k.pem == NULL) {
				dkimkey_clear(&k);
				ret = -1;
				break;
			}
		}
		out->v = xgrow(out->v, &out->cap, out->n + 1, sizeof(*out->v));
		out->v[out->n++] = k;
	}
	closedir(d);
	free(dir_path);
	return ret;
}

int dkimkeys_list(const char *data_dir, const char *domain, bool active_only, bool with_pem,
                  struct dkimkey_list *out, char **error_r)
{
	memset(out, 0, sizeof(*out));
	int ret = 0;
	if (domain != NULL) {
		if (check_names(domain, NULL, error_r) < 0)
			return -1;
		ret = list_domain(data_dir, domain, active_only, with_pem, out, error_r);
	} else {
		char *top = xasprintf("%s/dkim", data_dir);
		DIR *d = opendir(top);
		if (d == NULL) {
			int e = errno;
			free(top);
			if (e == ENOENT)
				return 0;
			*error_r = xasprintf("open %s/dkim: %s", data_dir, strerror(e));
			return -1;
		}
		struct dirent *de;
		while (ret == 0 && (de = readdir(d)) != NULL) {
			if (!dkimkeys_name_ok(de->d_name, 253))
				continue;
			ret =
			    list_domain(data_dir, de->d_name, active_only, with_pem, out, error_r);
		}
		closedir(d);
		free(top);
	}
	if (ret < 0) {
		dkimkey_list_free(out);
		return -1;
	}
	if (out->n > 1)
		qsort(out->v, out->n, sizeof(*out->v), key_cmp);
	return 0;
}

int dkimkeys_load_active(const char *data_dir, const char *domain, struct dkimkey_list *out,
                         char **error_r)
{
	return dkimkeys_list(data_dir, domain, true, true, out, error_r);
}

int dkimkeys_set_state(const char *data_dir, const char *domain, const char *selector,
                       enum dkimkey_state state, char **error_r)
{
	if (check_names(domain, selector, error_r) < 0)
		return -1;
	char *path = xasprintf("%s/dkim/%s/%s.key", data_dir, domain, selector);
	char *text = read_file(path, DKIMKEYS_MAX_META, error_r);
	struct dkimkey k = {.domain = xstrdup(domain), .selector = xstrdup(selector)};
	int ret = -1;
	if (text != NULL && meta_parse(text, &k, path, error_r) == 0) {
		k.state = state;
		char *meta = meta_text(&k);
		ret = write_file(path, meta, false, error_r);
		free(meta);
	}
	free(text);
	free(path);
	dkimkey_clear(&k);
	return ret;
}

int dkimkeys_delete(const char *data_dir, const char *domain, const char *selector, char **error_r)
{
	if (check_names(domain, selector, error_r) < 0)
		return -1;
	if (!dkimkeys_exists(data_dir, domain, selector)) {
		*error_r = xasprintf("no key %s for %s", selector, domain);
		return -1;
	}
	/* metadata first: a key without it is never used */
	int ret = 0;
	const char *exts[] = {"key", "pem"};
	for (size_t i = 0; i < 2; i++) {
		char *path = xasprintf("%s/dkim/%s/%s.%s", data_dir, domain, selector, exts[i]);
		if (unlink(path) < 0 && errno != ENOENT && ret == 0) {
			*error_r = xasprintf("remove %s: %s", path, strerror(errno));
			ret = -1;
		}
		free(path);
	}
	return ret;
}

void dkimkey_clear(struct dkimkey *k)
{
	free(k->domain);
	free(k->selector);
	free(k->txt);
	if (k->pem != NULL) {
		explicit_bzero(k->pem, strlen(k->pem));
		free(k->pem);
	}
	memset(k, 0, sizeof(*k));
}

void dkimkey_list_free(struct dkimkey_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		dkimkey_clear(&l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* ---- the signer's cache ---- */

/* What stat() says of a file, enough to see it replaced or rewritten. */
struct stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim, ctim;
};

struct watched {
	char *path;
	struct stamp st;
};

/* A dkimkeys_set with what it was read from. Immutable once made. */
struct set_impl {
	struct dkimkeys_set pub; /* first: a dkimkeys_set pointer is a set_impl pointer */
	atomic_uint refs;
	struct dkimkeys_signkey *keys;
	bool dir_missing; /* no DATA_DIR/dkim/DOMAIN when read */
	struct stamp dir;
	struct watched *files; /* the .key files, and the .pem files of active keys */
	size_t nfiles, files_cap;
	bool stable;                    /* every time above was older than a clock tick when read */
	atomic_int_fast64_t checked_ns; /* CLOCK_MONOTONIC of the last lookup that used it */
};

struct entry {
	char *path; /* DATA_DIR/dkim/DOMAIN */
	uint64_t hash;
	struct set_impl *set;      /* the cache's reference */
	struct entry *hnext;       /* hash chain */
	struct entry *prev, *next; /* recency: head is the most recent */
};

struct dkimkeys_cache {
	pthread_mutex_t lock;
	size_t max, n, nbuckets;
	struct entry **buckets;
	struct entry *head, *tail;
	atomic_uint_fast64_t hits, loads, evictions;
};

static void stamp_of(const struct stat *st, struct stamp *out)
{
	memset(out, 0, sizeof(*out));
	out->dev = st->st_dev;
	out->ino = st->st_ino;
	out->size = st->st_size;
	out->mtim = st->st_mtim;
	out->ctim = st->st_ctim;
}

static bool stamp_same(const struct stamp *a, const struct stamp *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec &&
	       a->ctim.tv_sec == b->ctim.tv_sec && a->ctim.tv_nsec == b->ctim.tv_nsec;
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

static int64_t mono_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return ts_ns(&t);
}

/* A change later in the same clock tick would leave the times as they are: a time
   within a tick of `now` is not trusted yet (as src/store/mailbox.c does). Timestamps
   come from the kernel's coarse clock (a jiffy, at most 10 ms); a file system with
   whole-second timestamps (the nanoseconds are 0) gets a whole second. */
static bool stamp_settled(const struct stamp *s, int64_t now)
{
	const struct timespec *t[2] = {&s->mtim, &s->ctim};
	for (size_t i = 0; i < 2; i++) {
		int64_t tick = t[i]->tv_nsec == 0 ? 1000000000 : 100000000;
		if (now - ts_ns(t[i]) < tick)
			return false;
	}
	return true;
}

static void watch(struct set_impl *set, const char *path, const struct stat *st)
{
	set->files = xgrow(set->files, &set->files_cap, set->nfiles + 1, sizeof(*set->files));
	struct watched *w = &set->files[set->nfiles++];
	w->path = xstrdup(path);
	stamp_of(st, &w->st);
}

static void set_free(struct set_impl *set)
{
	for (size_t i = 0; i < set->pub.n; i++) {
		free((char *)set->keys[i].domain);
		free((char *)set->keys[i].selector);
		dkim_privkey_unref(&set->keys[i].key);
	}
	free(set->keys);
	for (size_t i = 0; i < set->nfiles; i++)
		free(set->files[i].path);
	free(set->files);
	free(set);
}

static struct set_impl *set_ref(struct set_impl *set)
{
	atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
	return set;
}

static void set_unref(struct set_impl *set)
{
	if (set != NULL && atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) == 1)
		set_free(set);
}

void dkimkeys_set_release(const struct dkimkeys_set **setp)
{
	const struct dkimkeys_set *set = *setp;
	*setp = NULL;
	if (set != NULL)
		set_unref((struct set_impl *)set);
}

static int signkey_cmp(const void *a, const void *b)
{
	const struct dkimkeys_signkey *x = a, *y = b;
	if (x->created != y->created)
		return x->created < y->created ? -1 : 1;
	return strcmp(x->selector, y->selector);
}

/*
 * Read the active keys of `domain` in `dir_path` and parse their private
 * keys, noting the stat() data of everything read. Returns the set (one
 * reference), or NULL with *error_r.
 */
static struct set_impl *set_load(const char *dir_path, const char *domain, char **error_r)
{
	struct set_impl *set = xcalloc(1, sizeof(*set));
	atomic_init(&set->refs, 1);
	atomic_init(&set->checked_ns, mono_ns());
	size_t keys_cap = 0;
	struct stat st;
	/* the directory first: a change after this is seen by the next check */
	if (stat(dir_path, &st) < 0) {
		if (errno == ENOENT) {
			set->dir_missing = true;
			set->stable = true;
			return set;
		}
		*error_r = xasprintf("stat %s: %s", dir_path, strerror(errno));
		set_free(set);
		return NULL;
	}
	stamp_of(&st, &set->dir);
	DIR *d = opendir(dir_path);
	if (d == NULL) {
		*error_r = xasprintf("open %s: %s", dir_path, strerror(errno));
		set_free(set);
		return NULL;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!has_suffix(de->d_name, ".key"))
			continue;
		char *selector = xstrndup(de->d_name, strlen(de->d_name) - 4);
		if (!dkimkeys_name_ok(selector, DKIMKEYS_MAX_SELECTOR)) {
			free(selector); /* not one of ours */
			continue;
		}
		char *path = xasprintf("%s/%s", dir_path, de->d_name);
		char *text = read_file_st(path, DKIMKEYS_MAX_META, &st, error_r);
		struct dkimkey k = {.domain = xstrdup(domain), .selector = selector};
		if (text == NULL || meta_parse(text, &k, path, error_r) < 0) {
			free(text);
			free(path);
			dkimkey_clear(&k);
			goto fail;
		}
		free(text);
		watch(set, path, &st);
		free(path);
		if (k.state != DKIMKEY_ACTIVE) {
			dkimkey_clear(&k);
			continue;
		}
		path = xasprintf("%s/%s.pem", dir_path, selector);
		char *pem = read_file_st(path, 64 * 1024, &st, error_r);
		if (pem == NULL) {
			free(path);
			dkimkey_clear(&k);
			goto fail;
		}
		watch(set, path, &st);
		free(path);
		set->keys = xgrow(set->keys, &keys_cap, set->pub.n + 1, sizeof(*set->keys));
		struct dkimkeys_signkey *sk = &set->keys[set->pub.n++];
		memset(sk, 0, sizeof(*sk));
		sk->alg = k.alg;
		sk->created = k.created;
		const char *perr = NULL;
		sk->key = dkim_privkey_parse(pem, &perr);
		sk->error = sk->key == NULL ? perr : NULL;
		explicit_bzero(pem, strlen(pem));
		free(pem);
		/* the names move over; the rest of k goes */
		sk->domain = k.domain;
		sk->selector = k.selector;
		k.domain = k.selector = NULL;
		dkimkey_clear(&k);
	}
	closedir(d);
	if (set->pub.n > 1)
		qsort(set->keys, set->pub.n, sizeof(*set->keys), signkey_cmp);
	set->pub.v = set->keys;
	struct timespec now_ts;
	clock_gettime(CLOCK_REALTIME, &now_ts);
	int64_t now = ts_ns(&now_ts);
	set->stable = stamp_settled(&set->dir, now);
	for (size_t i = 0; i < set->nfiles && set->stable; i++)
		set->stable = stamp_settled(&set->files[i].st, now);
	return set;
fail:
	closedir(d);
	set_free(set);
	return NULL;
}

/* Whether `set` still says what the disk says (a few stat() calls). */
static bool set_current(const struct set_impl *set, const char *dir_path)
{
	if (!set->stable)
		return false;
	struct stat st;
	struct stamp now;
	if (stat(dir_path, &st) < 0)
		return set->dir_missing && errno == ENOENT;
	if (set->dir_missing)
		return false;
	stamp_of(&st, &now);
	if (!stamp_same(&now, &set->dir))
		return false;
	for (size_t i = 0; i < set->nfiles; i++) {
		if (stat(set->files[i].path, &st) < 0)
			return false;
		stamp_of(&st, &now);
		if (!stamp_same(&now, &set->files[i].st))
			return false;
	}
	return true;
}

struct dkimkeys_cache *dkimkeys_cache_new(size_t max_domains)
{
	struct dkimkeys_cache *c = xcalloc(1, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	c->max = max_domains > 0 ? max_domains : DKIMKEYS_CACHE_DOMAINS;
	c->nbuckets = 16;
	while (c->nbuckets < c->max)
		c->nbuckets *= 2;
	c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
	atomic_init(&c->hits, 0);
	atomic_init(&c->loads, 0);
	atomic_init(&c->evictions, 0);
	return c;
}

void dkimkeys_cache_free(struct dkimkeys_cache **cp)
{
	struct dkimkeys_cache *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	for (struct entry *e = c->head, *next; e != NULL; e = next) {
		next = e->next;
		set_unref(e->set);
		free(e->path);
		free(e);
	}
	free(c->buckets);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static uint64_t path_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

/* With the lock held. */
static struct entry *entry_find(struct dkimkeys_cache *c, const char *path, uint64_t h)
{
	for (struct entry *e = c->buckets[h & (c->nbuckets - 1)]; e != NULL; e = e->hnext)
		if (e->hash == h && strcmp(e->path, path) == 0)
			return e;
	return NULL;
}

/* With the lock held: out of the recency list. */
static void lru_unlink(struct dkimkeys_cache *c, struct entry *e)
{
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

/* With the lock held: the most recent. */
static void lru_front(struct dkimkeys_cache *c, struct entry *e)
{
	e->next = c->head;
	e->prev = NULL;
	if (c->head != NULL)
		c->head->prev = e;
	c->head = e;
	if (c->tail == NULL)
		c->tail = e;
}

/* With the lock held: drop the least recently used; returns its set to release. */
static struct set_impl *evict_one(struct dkimkeys_cache *c)
{
	struct entry *e = c->tail;
	lru_unlink(c, e);
	struct entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	c->n--;
	struct set_impl *set = e->set;
	free(e->path);
	free(e);
	atomic_fetch_add_explicit(&c->evictions, 1, memory_order_relaxed);
	return set;
}

int dkimkeys_cache_get(struct dkimkeys_cache *c, const char *data_dir, const char *domain,
                       const struct dkimkeys_set **set_r, char **error_r)
{
	*set_r = NULL;
	if (check_names(domain, NULL, error_r) < 0)
		return -1;
	char *path = xasprintf("%s/dkim/%s", data_dir, domain);
	uint64_t h = path_hash(path);

	pthread_mutex_lock(&c->lock);
	struct entry *e = entry_find(c, path, h);
	struct set_impl *set = NULL;
	if (e != NULL) {
		set = set_ref(e->set);
		lru_unlink(c, e);
		lru_front(c, e);
	}
	pthread_mutex_unlock(&c->lock);

	/* the file system is looked at without the lock: one slow disk does not hold up
	   lookups of other domains */
	if (set != NULL && set_current(set, path)) {
		atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
		atomic_store_explicit(&set->checked_ns, mono_ns(), memory_order_relaxed);
		*set_r = &set->pub;
		free(path);
		return 0;
	}
	set_unref(set);
	set = set_load(path, domain, error_r);
	if (set == NULL) {
		free(path);
		return -1;
	}
	atomic_fetch_add_explicit(&c->loads, 1, memory_order_relaxed);

	/* publish it (a thread that loaded the same domain meanwhile: the later one stays) */
	struct set_impl *old = NULL, *evicted = NULL;
	pthread_mutex_lock(&c->lock);
	e = entry_find(c, path, h);
	if (e != NULL) {
		old = e->set;
		e->set = set_ref(set);
		lru_unlink(c, e);
		lru_front(c, e);
	} else {
		if (c->n >= c->max)
			evicted = evict_one(c);
		e = xcalloc(1, sizeof(*e));
		e->path = path;
		path = NULL;
		e->hash = h;
		e->set = set_ref(set);
		struct entry **b = &c->buckets[h & (c->nbuckets - 1)];
		e->hnext = *b;
		*b = e;
		lru_front(c, e);
		c->n++;
	}
	pthread_mutex_unlock(&c->lock);
	set_unref(old);
	set_unref(evicted);
	free(path);
	*set_r = &set->pub;
	return 0;
}

bool dkimkeys_cache_known_keyless(struct dkimkeys_cache *c, const char *data_dir,
                                  const char *domain, unsigned max_age_ms)
{
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/dkim/%s", data_dir, domain) >= (int)sizeof(path))
		return false;
	uint64_t h = path_hash(path);
	bool keyless = false;
	pthread_mutex_lock(&c->lock);
	struct entry *e = entry_find(c, path, h);
	if (e != NULL && e->set->pub.n == 0)
		keyless =
		    mono_ns() - atomic_load_explicit(&e->set->checked_ns, memory_order_relaxed) <
		    (int64_t)max_age_ms * 1000000;
	pthread_mutex_unlock(&c->lock);
	return keyless;
}

void dkimkeys_cache_get_stats(struct dkimkeys_cache *c, struct dkimkeys_cache_stats *out)
{
	out->hits = atomic_load(&c->hits);
	out->loads = atomic_load(&c->loads);
	out->evictions = atomic_load(&c->evictions);
	pthread_mutex_lock(&c->lock);
	out->domains = c->n;
	pthread_mutex_unlock(&c->lock);
}
