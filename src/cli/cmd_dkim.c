/*
 * `postern dkim keygen|list|rotate|del`: the DKIM signing keys of the local
 * domains (stored by src/store/dkimkeys.c under DATA_DIR/dkim).
 *
 * SECURITY: runs as root in production. Private keys are written 0600 by
 * the store and then given to the service user; they are never printed.
 */
#include "cli/cli_common.h"
#include "lib/config.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"
#include "store/directory.h"
#include "store/dkimkeys.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Up to this many selectors tried for a default name in one month. */
#define DEFAULT_SELECTOR_TRIES 99

void dkim_txt_record_print(FILE *out, const char *domain, const char *selector, const char *txt)
{
	fprintf(out, "%s._domainkey.%s. IN TXT", selector, domain);
	/* RFC 1035 3.3.14: a character-string holds at most 255 octets; the
	   verifier joins them (RFC 6376 3.6.2.2). Base64 needs no escaping. */
	size_t len = strlen(txt);
	for (size_t off = 0; off < len; off += 255) {
		size_t n = len - off < 255 ? len - off : 255;
		fprintf(out, " \"%.*s\"", (int)n, txt + off);
	}
	fputc('\n', out);
}

/* The domain, lowercased, if it is one of ours; NULL after printing why. */
static char *local_domain(struct cli *cli, const char *arg)
{
	char *domain = str_lower(xstrdup(arg));
	size_t len = strlen(domain);
	if (len > 0 && domain[len - 1] == '.')
		domain[len - 1] = '\0';
	if (!dkimkeys_name_ok(domain, 253)) {
		cli_error("invalid domain name: %s", arg);
		free(domain);
		return NULL;
	}
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL) {
		free(domain);
		return NULL;
	}
	int local = directory_is_local_domain(dir, domain);
	cli_directory_close(cli, &dir);
	if (local <= 0) {
		if (local < 0)
			cli_error("cannot read the directory");
		else
			cli_error("%s is not a local domain (add it with `domain add`)", domain);
		free(domain);
		return NULL;
	}
	return domain;
}

/* "postern" + yyyymm + "r"/"e", with a number appended if taken. */
static char *default_selector(const char *data_dir, const char *domain, const char *base,
                              enum dkim_keygen_alg alg)
{
	char prefix[DKIMKEYS_MAX_SELECTOR + 1];
	if (base != NULL) {
		snprintf(prefix, sizeof(prefix), "%s", base);
	} else {
		time_t now = time(NULL);
		struct tm tm;
		gmtime_r(&now, &tm);
		snprintf(prefix, sizeof(prefix), "postern%04d%02d", tm.tm_year + 1900,
		         tm.tm_mon + 1);
	}
	const char *suffix = alg == DKIM_KEYGEN_ED25519 ? "e" : "r";
	for (int i = 1; i <= DEFAULT_SELECTOR_TRIES; i++) {
		char *s = i == 1 ? xasprintf("%s%s", prefix, suffix)
		                 : xasprintf("%s%s%d", prefix, suffix, i);
		if (!dkimkeys_exists(data_dir, domain, s))
			return s;
		free(s);
	}
	return NULL;
}

/* Make keys of the `n` algorithms; print them. Returns the number created or -1. */
static int create_keys(struct cli *cli, const char *domain, const char *selector, bool suffixed,
                       const enum dkim_keygen_alg *algs, size_t n)
{
	const char *data_dir = cli->cfg->data_dir;
	int created = 0;
	for (size_t i = 0; i < n; i++) {
		char *sel;
		if (selector != NULL && !suffixed)
			sel = xstrdup(selector);
		else
			sel = default_selector(data_dir, domain, selector, algs[i]);
		if (sel == NULL) {
			cli_error("no free selector for %s; give one with --selector", domain);
			return -1;
		}
		struct dkimkey k;
		char *error = NULL;
		int ret = dkimkeys_create(data_dir, domain, sel, algs[i], time(NULL), &k, &error);
		free(sel);
		if (ret < 0) {
			cli_error("%s", error);
			free(error);
			return -1;
		}
		printf("created %s key %s for %s\n", dkimkey_alg_name(k.alg), k.selector, domain);
		dkimkey_clear(&k);
		created++;
	}
	char *top = xasprintf("%s/dkim", data_dir);
	int r = cli_chown(cli, top, true);
	free(top);
	return r < 0 ? -1 : created;
}

/* Print the DNS records of the active keys of `domain`. */
static int print_active(struct cli *cli, const char *domain)
{
	struct dkimkey_list l;
	char *error = NULL;
	if (dkimkeys_list(cli->cfg->data_dir, domain, true, false, &l, &error) < 0) {
		cli_error("%s", error);
		free(error);
		return -1;
	}
	printf("\nPublish %s in DNS (zone-file syntax):\n",
	       l.n == 1 ? "this record" : "these records");
	for (size_t i = 0; i < l.n; i++)
		dkim_txt_record_print(stdout, l.v[i].domain, l.v[i].selector, l.v[i].txt);
	dkimkey_list_free(&l);
	return 0;
}

static int run_keygen(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *selector = NULL, *algorithm = NULL;
	const struct cli_opt opts[] = {
	    {"--selector", NULL, &selector}, {"--algorithm", NULL, &algorithm}, {0}};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 1, 1, &npos, &ret))
		return ret;
	enum dkim_keygen_alg algs[2] = {DKIM_KEYGEN_RSA2048, DKIM_KEYGEN_ED25519};
	size_t nalgs = 2;
	if (algorithm != NULL) {
		if (dkimkey_alg_parse(algorithm, &algs[0]) < 0) {
			cli_error("unknown algorithm %s (ed25519 or rsa2048)", algorithm);
			return CLI_EXIT_USAGE;
		}
		nalgs = 1;
	}
	if (selector != NULL) {
		/* two keys from one --selector get suffixes: room for them */
		size_t max = DKIMKEYS_MAX_SELECTOR - (nalgs > 1 ? 3 : 0);
		if (!dkimkeys_name_ok(selector, max)) {
			cli_error("invalid selector (lowercase letters, digits, '-' and '.'): %s",
			          selector);
			return CLI_EXIT_USAGE;
		}
	}
	if (cli_config(cli) == NULL)
		return CLI_EXIT_FAIL;
	char *domain = local_domain(cli, pos[0]);
	if (domain == NULL)
		return CLI_EXIT_FAIL;
	ret = create_keys(cli, domain, selector, nalgs > 1, algs, nalgs) < 0 ? CLI_EXIT_FAIL
	                                                                     : CLI_EXIT_OK;
	if (ret == CLI_EXIT_OK && print_active(cli, domain) < 0)
		ret = CLI_EXIT_FAIL;
	if (ret == CLI_EXIT_OK)
		printf("\nMail from %s is signed with the active keys from now on.\n", domain);
	free(domain);
	return ret;
}

static int run_rotate(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 1, 1, &npos, &ret))
		return ret;
	if (cli_config(cli) == NULL)
		return CLI_EXIT_FAIL;
	char *domain = local_domain(cli, pos[0]);
	if (domain == NULL)
		return CLI_EXIT_FAIL;
	struct dkimkey_list old;
	char *error = NULL;
	if (dkimkeys_list(cli->cfg->data_dir, domain, true, false, &old, &error) < 0) {
		cli_error("%s", error);
		free(error);
		free(domain);
		return CLI_EXIT_FAIL;
	}
	/* the same algorithms as before; both when there was no key */
	enum dkim_keygen_alg algs[2];
	size_t nalgs = 0;
	bool have_rsa = false, have_ed = false;
	for (size_t i = 0; i < old.n; i++) {
		if (old.v[i].alg == DKIM_KEYGEN_RSA2048)
			have_rsa = true;
		else
			have_ed = true;
	}
	if (have_rsa || old.n == 0)
		algs[nalgs++] = DKIM_KEYGEN_RSA2048;
	if (have_ed || old.n == 0)
		algs[nalgs++] = DKIM_KEYGEN_ED25519;
	/* new keys first: a failure in between leaves both signing, never none */
	ret = create_keys(cli, domain, NULL, true, algs, nalgs) < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	for (size_t i = 0; ret == CLI_EXIT_OK && i < old.n; i++) {
		if (dkimkeys_set_state(cli->cfg->data_dir, domain, old.v[i].selector,
		                       DKIMKEY_RETIRED, &error) < 0) {
			cli_error("%s", error);
			free(error);
			ret = CLI_EXIT_FAIL;
			break;
		}
		printf("retired %s key %s\n", dkimkey_alg_name(old.v[i].alg), old.v[i].selector);
	}
	if (ret == CLI_EXIT_OK && old.n > 0) {
		/* the rewritten metadata files are root's until given away */
		char *top = xasprintf("%s/dkim", cli->cfg->data_dir);
		if (cli_chown(cli, top, true) < 0)
			ret = CLI_EXIT_FAIL;
		free(top);
	}
	if (ret == CLI_EXIT_OK && print_active(cli, domain) < 0)
		ret = CLI_EXIT_FAIL;
	if (ret == CLI_EXIT_OK && old.n > 0) {
		printf(
		    "\nPublish the new records now; mail is signed with the new keys from now on.\n"
		    "Keep the old records published for a few days, so mail signed before the\n"
		    "rotation still verifies, then remove them:\n");
		for (size_t i = 0; i < old.n; i++)
			printf("  %s._domainkey.%s. IN TXT (%s, retired)\n", old.v[i].selector,
			       domain, dkimkey_alg_name(old.v[i].alg));
		printf("and delete the retired keys with `%s dkim del %s SELECTOR`.\n",
		       cli->progname, domain);
	}
	dkimkey_list_free(&old);
	free(domain);
	return ret;
}

static int run_list(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool json = false;
	const struct cli_opt opts[] = {{"--json", &json, NULL}, {0}};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 0, 1, &npos, &ret))
		return ret;
	if (cli_config(cli) == NULL)
		return CLI_EXIT_FAIL;
	char *domain = npos > 0 ? str_lower(xstrdup(pos[0])) : NULL;
	struct dkimkey_list l;
	char *error = NULL;
	if (dkimkeys_list(cli->cfg->data_dir, domain, false, false, &l, &error) < 0) {
		cli_error("%s", error);
		free(error);
		free(domain);
		return CLI_EXIT_FAIL;
	}
	free(domain);
	if (json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < l.n; i++) {
			const struct dkimkey *k = &l.v[i];
			char *name = xasprintf("%s._domainkey.%s", k->selector, k->domain);
			json_array_append_new(
			    arr, json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "domain",
			                   k->domain, "selector", k->selector, "algorithm",
			                   dkimkey_alg_name(k->alg), "state",
			                   dkimkey_state_name(k->state), "created",
			                   (json_int_t)k->created, "name", name, "txt", k->txt));
			free(name);
		}
		json_dumpf(arr, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(arr);
	} else {
		for (size_t i = 0; i < l.n; i++) {
			const struct dkimkey *k = &l.v[i];
			char when[32];
			struct tm tm;
			gmtime_r(&k->created, &tm);
			strftime(when, sizeof(when), "%Y-%m-%d", &tm);
			printf("%s %s %s %s %s\n", k->domain, k->selector, dkimkey_alg_name(k->alg),
			       dkimkey_state_name(k->state), when);
			printf("  %s\n", k->txt);
		}
	}
	dkimkey_list_free(&l);
	return CLI_EXIT_OK;
}

static int run_del(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	bool force = false;
	const struct cli_opt opts[] = {{"--force", &force, NULL}, {0}};
	const char *pos[2];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 2, 2, &npos, &ret))
		return ret;
	if (cli_config(cli) == NULL)
		return CLI_EXIT_FAIL;
	char *domain = str_lower(xstrdup(pos[0]));
	struct dkimkey_list l;
	char *error = NULL;
	ret = CLI_EXIT_FAIL;
	if (dkimkeys_list(cli->cfg->data_dir, domain, false, false, &l, &error) < 0) {
		cli_error("%s", error);
		free(error);
		free(domain);
		return ret;
	}
	const struct dkimkey *k = NULL;
	for (size_t i = 0; i < l.n; i++)
		if (strcmp(l.v[i].selector, pos[1]) == 0)
			k = &l.v[i];
	if (k == NULL) {
		cli_error("no key %s for %s", pos[1], domain);
	} else if (k->state == DKIMKEY_ACTIVE && !force) {
		cli_error("key %s of %s is active: rotate first (or --force)", pos[1], domain);
	} else if (dkimkeys_delete(cli->cfg->data_dir, domain, pos[1], &error) < 0) {
		cli_error("%s", error);
		free(error);
	} else {
		printf("deleted key %s for %s; remove %s._domainkey.%s from DNS\n", pos[1], domain,
		       pos[1], domain);
		ret = CLI_EXIT_OK;
	}
	dkimkey_list_free(&l);
	free(domain);
	return ret;
}

const struct cli_cmd cmd_dkim_cmds[] = {
    {"dkim", "keygen", "DOMAIN [--selector S] [--algorithm ed25519|rsa2048]",
     "Create DKIM signing keys (rsa2048 and ed25519 unless --algorithm) and print the DNS "
     "records",
     run_keygen},
    {"dkim", "list", "[DOMAIN] [--json]", "List the DKIM keys with their state and TXT record",
     run_list},
    {"dkim", "rotate", "DOMAIN", "Create new keys and retire the active ones", run_rotate},
    {"dkim", "del", "DOMAIN SELECTOR [--force]", "Delete a retired DKIM key", run_del},
    {0},
};
