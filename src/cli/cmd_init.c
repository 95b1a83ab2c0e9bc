/*
 * `postern init`: create the data directory, the database and a
 * self-signed certificate; as root, the service user too. Idempotent: a
 * second run changes nothing, and an existing certificate or key is never
 * overwritten (the admin's own certificate is kept).
 *
 * SECURITY: runs as root in production. The private key is created with
 * O_EXCL and mode 0600; the data directory is handed to the service user
 * without following symbolic links.
 */
#include "cli/cli_common.h"
#include "lib/config.h"
#include "lib/xalloc.h"
#include "store/directory.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define CERT_DAYS 3650 /* ten years */

/* mkdir that is fine with an existing directory; *changes_r counts creations. */
static int make_dir(const char *path, mode_t mode, int *changes_r)
{
	if (mkdir(path, mode) == 0) {
		printf("created %s\n", path);
		(*changes_r)++;
		return 0;
	}
	if (errno == EEXIST) {
		struct stat st;
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
		cli_error("%s exists and is not a directory", path);
		return -1;
	}
	cli_error("cannot create %s: %s", path, strerror(errno));
	return -1;
}

/* Create `path` and its missing parents (parents 0755, the last `mode`). */
static int make_dir_parents(const char *path, mode_t mode, int *changes_r)
{
	char *p = xstrdup(path);
	for (char *s = strchr(p + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			cli_error("cannot create %s: %s", p, strerror(errno));
			free(p);
			return -1;
		}
		*s = '/';
	}
	free(p);
	return make_dir(path, mode, changes_r);
}

static void ssl_error(const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "unknown error";
	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	cli_error("%s: %s", what, buf);
	ERR_clear_error();
}

/* Add an extension given in OpenSSL's config syntax (a constant string). */
static bool add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext == NULL)
		return false;
	int ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1;
}

/* A self-signed P-256 certificate for `hostname`, valid for ten years. */
static X509 *make_cert(EVP_PKEY *pkey, const char *hostname)
{
	X509 *x = X509_new();
	BIGNUM *bn = BN_new();
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gen = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	bool ok = x != NULL && bn != NULL && gens != NULL && gen != NULL && ia5 != NULL;

	ok = ok && X509_set_version(x, X509_VERSION_3) == 1;
	/* RFC 5280 4.1.2.2: positive, at most 20 octets */
	ok = ok && BN_rand(bn, 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1;
	ok = ok && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), 0) != NULL;
	ok = ok && X509_time_adj_ex(X509_getm_notAfter(x), CERT_DAYS, 0, NULL) != NULL;
	ok = ok && X509_set_pubkey(x, pkey) == 1;
	X509_NAME *name = ok ? X509_get_subject_name(x) : NULL;
	ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					      (const unsigned char *)hostname, -1, -1, 0) == 1;
	ok = ok && X509_set_issuer_name(x, name) == 1;
	/* subjectAltName DNS:hostname, built directly so no hostname is parsed as config */
	ok = ok && ASN1_STRING_set(ia5, hostname, -1) == 1;
	if (ok) {
		GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);
		ia5 = NULL;
		ok = sk_GENERAL_NAME_push(gens, gen) > 0;
		if (ok)
			gen = NULL;
	}
	ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
	ok = ok && add_ext(x, NID_basic_constraints, "critical,CA:FALSE");
	ok = ok && add_ext(x, NID_key_usage, "critical,digitalSignature");
	ok = ok && add_ext(x, NID_ext_key_usage, "serverAuth");
	ok = ok && add_ext(x, NID_subject_key_identifier, "hash");
	ok = ok && X509_sign(x, pkey, EVP_sha256()) > 0;

	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(gen);
	GENERAL_NAMES_free(gens);
	BN_free(bn);
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Write a PEM file at `path` through a temporary file linked into place (never replacing). */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *pkey, X509 *cert)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) {
		cli_error("cannot create %s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	FILE *f = fdopen(fd, "w");
	if (f == NULL) {
		close(fd);
		unlink(tmp);
		free(tmp);
		return -1;
	}
	bool ok = pkey != NULL ? PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1
			       : PEM_write_X509(f, cert) == 1;
	ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
	if (fclose(f) != 0)
		ok = false;
	if (!ok) {
		cli_error("cannot write %s", tmp);
		unlink(tmp);
		free(tmp);
		return -1;
	}
	if (link(tmp, path) < 0) {
		cli_error("cannot create %s: %s", path, strerror(errno));
		unlink(tmp);
		free(tmp);
		return -1;
	}
	unlink(tmp);
	free(tmp);
	return 0;
}

static int make_certificate(const struct config *cfg, int *changes_r)
{
	bool have_cert = access(cfg->tls_cert, F_OK) == 0;
	bool have_key = access(cfg->tls_key, F_OK) == 0;
	if (have_cert && have_key)
		return 0; /* the admin's certificate, or ours from an earlier run: keep it */
	if (have_cert || have_key) {
		cli_error("%s exists but %s does not; refusing to replace either (remove the "
			  "other one to have a new self-signed certificate made)",
			  have_cert ? cfg->tls_cert : cfg->tls_key,
			  have_cert ? cfg->tls_key : cfg->tls_cert);
		return -1;
	}
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	if (pkey == NULL) {
		ssl_error("cannot generate a P-256 key");
		return -1;
	}
	X509 *cert = make_cert(pkey, cfg->hostname);
	if (cert == NULL) {
		ssl_error("cannot make the certificate");
		EVP_PKEY_free(pkey);
		return -1;
	}
	int ret = write_pem(cfg->tls_key, 0600, pkey, NULL);
	if (ret == 0) {
		ret = write_pem(cfg->tls_cert, 0644, NULL, cert);
		if (ret < 0)
			unlink(cfg->tls_key); /* we just made it: do not leave half a pair */
	}
	X509_free(cert);
	EVP_PKEY_free(pkey);
	if (ret == 0) {
		printf("created a self-signed certificate for %s (valid %d days): %s\n",
		       cfg->hostname, CERT_DAYS, cfg->tls_cert);
		printf("created its private key: %s\n", cfg->tls_key);
		(*changes_r)++;
	}
	return ret;
}

/* Create the service user with useradd(8), run without a shell. */
static int make_user(const struct config *cfg, int *changes_r)
{
	if (getpwnam(cfg->user) != NULL)
		return 0;
	pid_t pid = fork();
	if (pid < 0) {
		cli_error("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		char *const args[] = {"useradd",      "--system",	 "--home-dir",
				      cfg->data_dir, "--no-create-home", "--shell",
				      "/usr/sbin/nologin", cfg->user,	 NULL};
		execvp("useradd", args);
		fprintf(stderr, "postern: cannot run useradd: %s\n", strerror(errno));
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			cli_error("waitpid: %s", strerror(errno));
			return -1;
		}
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		cli_error("useradd %s failed", cfg->user);
		return -1;
	}
	printf("created the service user %s\n", cfg->user);
	(*changes_r)++;
	return 0;
}

/*
 * Warn when the service user cannot reach the data directory because a
 * directory above it is not searchable by it (say, a data_dir under /root
 * or a private temporary directory): the server would fail after dropping
 * its privileges.
 */
static void check_reachable(const struct config *cfg)
{
	struct passwd *pw = getpwnam(cfg->user);
	if (pw == NULL)
		return;
	char *p = xstrdup(cfg->data_dir);
	for (char *slash = strrchr(p, '/'); slash != NULL; slash = strrchr(p, '/')) {
		if (slash == p)
			slash[1] = '\0';
		else
			*slash = '\0';
		struct stat st;
		if (stat(p, &st) == 0) {
			mode_t bit = st.st_uid == pw->pw_uid   ? S_IXUSR
				     : st.st_gid == pw->pw_gid ? S_IXGRP
							       : S_IXOTH;
			if ((st.st_mode & bit) == 0) {
				cli_warn("the service user %s cannot enter %s, so the server "
					 "cannot use %s; move data_dir or open up that directory",
					 cfg->user, p, cfg->data_dir);
				break;
			}
		}
		if (strcmp(p, "/") == 0)
			break;
	}
	free(p);
}

static int run_init(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 0, 0, &npos, &ret))
		return ret;
	struct config *cfg = cli_config(cli);
	if (cfg == NULL)
		return CLI_EXIT_FAIL;
	int changes = 0;
	bool root = geteuid() == 0;
	cli->to_service_user = true;

	if (root && make_user(cfg, &changes) < 0)
		return CLI_EXIT_FAIL;
	if (make_dir_parents(cfg->data_dir, 0750, &changes) < 0)
		return CLI_EXIT_FAIL;
	static const char *const subdirs[] = {"spool", "mail", "log", "tls"};
	for (size_t i = 0; i < ARRAY_SIZE(subdirs); i++) {
		char *p = xasprintf("%s/%s", cfg->data_dir, subdirs[i]);
		int r = make_dir(p, 0750, &changes);
		free(p);
		if (r < 0)
			return CLI_EXIT_FAIL;
	}

	char *dbpath = xasprintf("%s/postern.db", cfg->data_dir);
	bool had_db = access(dbpath, F_OK) == 0;
	struct directory *dir = NULL;
	char *error = NULL;
	if (directory_open(cfg->data_dir, true, &dir, &error) < 0) {
		cli_error("cannot create the database %s: %s", dbpath,
			  error ? error : "unknown error");
		free(error);
		free(dbpath);
		return CLI_EXIT_FAIL;
	}
	directory_close(&dir);
	if (!had_db) {
		printf("created the database %s\n", dbpath);
		changes++;
	}
	free(dbpath);

	if (make_certificate(cfg, &changes) < 0)
		return CLI_EXIT_FAIL;

	if (root) {
		int n = cli_chown(cli, cfg->data_dir, true);
		if (n < 0)
			return CLI_EXIT_FAIL;
		if (n > 0) {
			printf("gave %d files in %s to %s\n", n, cfg->data_dir, cfg->user);
			changes++;
		}
		check_reachable(cfg);
	}

	if (changes == 0)
		printf("nothing to do: %s is already initialised\n", cfg->data_dir);
	if (strchr(cfg->hostname, '.') == NULL)
		printf("note: hostname '%s' is not a fully qualified name; other mail servers expect "
		       "one (set [server] hostname, e.g. mail.example.com)\n",
		       cfg->hostname);
	/* repeat -c FILE in the hints when the admin used it */
	char *c = cli->config_path ? xasprintf(" -c %s", cli->config_path) : xstrdup("");
	const char *p = cli->progname ? cli->progname : "postern";
	printf("\nNext steps:\n"
	       "  %s%s domain add example.com\n"
	       "  %s%s user add you@example.com\n"
	       "  %s%s serve\n",
	       p, c, p, c, p, c);
	free(c);
	return CLI_EXIT_OK;
}

const struct cli_cmd cmd_init_cmds[] = {
	{"init", NULL, "",
	 "Create the data directory, the database, a self-signed certificate and (as root) "
	 "the service user",
	 run_init},
	{0},
};
