/* `postern serve`: run the daemon in the foreground (see server/server.h). */
#include "cli/cli_common.h"
#include "lib/config.h"
#include "server/server.h"

#include <stddef.h>

static int run_serve(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, NULL, pos, 0, 0, &npos, &ret))
		return ret;
	struct config *cfg = cli_config(cli);
	if (cfg == NULL)
		return CLI_EXIT_FAIL;
	cli->cfg = NULL; /* server_run() takes it over */
	return server_run(cfg);
}

const struct cli_cmd cmd_serve_cmds[] = {
	{"serve", NULL, "",
	 "Run the mail server in the foreground (SIGTERM drains and exits, SIGHUP reloads)",
	 run_serve},
	{0},
};
