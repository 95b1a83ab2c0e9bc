/* `postern config [check]`: print or validate the configuration. */
#include "cli/cli_common.h"
#include "lib/config.h"

#include <stdio.h>

static int run_print(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 0, 0, &npos, &ret))
		return ret;
	struct config *cfg = cli_config(cli);
	if (cfg == NULL)
		return CLI_EXIT_FAIL;
	config_print(stdout, cfg);
	return CLI_EXIT_OK;
}

static int run_check(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 0, 0, &npos, &ret))
		return ret;
	struct config *cfg = cli_config(cli);
	if (cfg == NULL)
		return CLI_EXIT_FAIL;
	printf("OK: %s\n", cfg->path ? cfg->path : "built-in defaults (no configuration file)");
	return CLI_EXIT_OK;
}

const struct cli_cmd cmd_config_cmds[] = {
	{"config", NULL, "", "Print the effective configuration, with every default and its help",
	 run_print},
	{"config", "check", "",
	 "Validate the configuration file: OK and exit 0, or the error with FILE:LINE and exit 1",
	 run_check},
	{0},
};
