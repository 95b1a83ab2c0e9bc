/*
 * `postern [-c FILE] COMMAND [SUBCOMMAND] [ARGS]`: find the command in the
 * tables of the cmd_*.c files and run it. Invoked through a symlink named
 * `sendmail`, the program behaves as `postern sendmail`.
 */
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "lib/config.h"
#include "store/stmtcache.h"

#include <stdlib.h>
#include <string.h>

static int run_version(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv);
static int run_help(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv);

static const struct cli_cmd version_cmds[] = {
	{"version", NULL, "", "Print the version of postern", run_version},
	{0},
};

static const struct cli_cmd help_cmds[] = {
	{"help", NULL, "[COMMAND]", "List every command, or show the usage of one", run_help},
	{0},
};

/* Every command group, in the order `postern help` lists them. */
static const struct cli_cmd *const groups[] = {
	cmd_init_cmds,	 cmd_serve_cmds,    cmd_domain_cmds, cmd_user_cmds, cmd_alias_cmds,
	cmd_dkim_cmds,	 cmd_dns_cmds,	    cmd_config_cmds, cmd_sendmail_cmds, cmd_queue_cmds,
	cmd_reindex_cmds, version_cmds,
	help_cmds,
};

static const struct cli_cmd *group_find(const char *name)
{
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
		if (strcmp(groups[i][0].group, name) == 0)
			return groups[i];
	return NULL;
}

static void short_usage(void)
{
	fprintf(stderr, "usage: postern [-c FILE] COMMAND [ARGS]\n"
			"`postern help` lists the commands; `postern COMMAND --help` shows one.\n");
}

static void list_commands(FILE *out)
{
	fprintf(out, "usage: postern [-c FILE] COMMAND [ARGS]\n\n"
		     "The configuration file is FILE, else $POSTERN_CONFIG, else ./postern.conf,\n"
		     "else /etc/postern/postern.conf, else built-in defaults.\n\n"
		     "Commands:\n");
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
		for (const struct cli_cmd *c = groups[i]; c->run != NULL; c++) {
			char head[128];
			snprintf(head, sizeof(head), "%s%s%s%s%s", c->group, c->name ? " " : "",
				 c->name ? c->name : "", c->args[0] ? " " : "", c->args);
			fprintf(out, "  %s\n      %s\n", head, c->summary);
		}
	}
	fprintf(out, "\nEvery command accepts --help and -c FILE.\n");
}

/* Usage of every subcommand of a group. */
static void group_usage(FILE *out, const struct cli_cmd *cmds)
{
	for (const struct cli_cmd *c = cmds; c->run != NULL; c++)
		cli_usage(out, c);
}

static int run_version(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 0, 0, &npos, &ret))
		return ret;
	printf("postern %s\n", POSTERN_VERSION);
	return CLI_EXIT_OK;
}

static int run_help(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 0, 1, &npos, &ret))
		return ret;
	if (npos == 0) {
		list_commands(stdout);
		return CLI_EXIT_OK;
	}
	const struct cli_cmd *g = group_find(pos[0]);
	if (g == NULL) {
		cli_error("unknown command: %s", pos[0]);
		short_usage();
		return CLI_EXIT_USAGE;
	}
	group_usage(stdout, g);
	return CLI_EXIT_OK;
}

/* Run `group` with the arguments that follow its name. */
static int run_group(struct cli *cli, const struct cli_cmd *cmds, int argc, char **argv)
{
	const struct cli_cmd *deflt = NULL;
	for (const struct cli_cmd *c = cmds; c->run != NULL; c++)
		if (c->name == NULL)
			deflt = c;
	/* -c FILE may also come between the group and its subcommand */
	while (argc > 0 && (strcmp(argv[0], "-c") == 0 || strcmp(argv[0], "--config") == 0 ||
			    strncmp(argv[0], "--config=", 9) == 0)) {
		if (argv[0][1] == '-' && argv[0][8] == '=') {
			cli->config_path = argv[0] + 9;
			argc--;
			argv++;
		} else if (argc >= 2) {
			cli->config_path = argv[1];
			argc -= 2;
			argv += 2;
		} else {
			break; /* the command's own parser reports the missing value */
		}
	}
	/* the subcommand word is the first argument, unless it is an option */
	if (argc > 0 && argv[0][0] != '-') {
		for (const struct cli_cmd *c = cmds; c->run != NULL; c++)
			if (c->name != NULL && strcmp(c->name, argv[0]) == 0)
				return c->run(cli, c, argc - 1, argv + 1);
		if (deflt == NULL) {
			cli_error("unknown command: %s %s", cmds[0].group, argv[0]);
			group_usage(stderr, cmds);
			return CLI_EXIT_USAGE;
		}
	}
	if (deflt != NULL)
		return deflt->run(cli, deflt, argc, argv);
	/* a group needing a subcommand: only -c and --help make sense here */
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			group_usage(stdout, cmds);
			return CLI_EXIT_OK;
		}
	}
	cli_error("%s needs a subcommand", cmds[0].group);
	group_usage(stderr, cmds);
	return CLI_EXIT_USAGE;
}

int cli_main(int argc, char **argv)
{
	struct cli cli = {0};
	int ret;

	store_sqlite_init();

	const char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
	base = base ? base + 1 : (argc > 0 ? argv[0] : "postern");
	cli.progname = (argc > 0 && strchr(argv[0], '/') != NULL) ? argv[0] : "postern";
	if (strcmp(base, "sendmail") == 0) {
		ret = run_group(&cli, cmd_sendmail_cmds, argc - 1, argv + 1);
		config_free(&cli.cfg);
		return ret;
	}

	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc) {
				cli_error("option needs a value: %s", a);
				short_usage();
				return CLI_EXIT_USAGE;
			}
			cli.config_path = argv[++i];
		} else if (strncmp(a, "--config=", 9) == 0) {
			cli.config_path = a + 9;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			list_commands(stdout);
			return CLI_EXIT_OK;
		} else if (strcmp(a, "--version") == 0) {
			printf("postern %s\n", POSTERN_VERSION);
			return CLI_EXIT_OK;
		} else {
			cli_error("unknown option: %s", a);
			short_usage();
			return CLI_EXIT_USAGE;
		}
	}
	if (i >= argc) {
		short_usage();
		return CLI_EXIT_USAGE;
	}
	const struct cli_cmd *g = group_find(argv[i]);
	if (g == NULL) {
		cli_error("unknown command: %s", argv[i]);
		short_usage();
		return CLI_EXIT_USAGE;
	}
	ret = run_group(&cli, g, argc - i - 1, argv + i + 1);
	config_free(&cli.cfg);
	return ret;
}
