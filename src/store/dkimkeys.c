/*
 * DKIM key storage: one directory per domain under DATA_DIR/dkim, a .pem
 * and a .key (metadata) file per selector. See dkimkeys.h.
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

/* Read a whole small file; NULL with *error_r when missing, unreadable or too large. */
static char *read_file(const char *path, size_t max, char **error_r)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		*error_r = xasprintf("open %s: %s", path, strerror(errno));
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
	free(buf);
	return NULL;
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
