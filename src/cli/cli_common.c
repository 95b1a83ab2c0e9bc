/*
 * Helpers shared by the `postern` subcommands: option parsing, config and
 * directory access, error output, password input and ownership fixes.
 *
 * SECURITY: admin commands usually run as root. Everything they create in
 * the data directory is handed to the service user (lchown, never through
 * a symbolic link), so the unprivileged server can keep writing it.
 */
#include "cli/cli_common.h"
#include "lib/config.h"
#include "lib/xalloc.h"
#include "store/directory.h"

#include <errno.h>
#include <ftw.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

void cli_usage(FILE *out, const struct cli_cmd *cmd)
{
	fprintf(out, "usage: postern [-c FILE] %s%s%s%s%s\n", cmd->group, cmd->name ? " " : "",
		cmd->name ? cmd->name : "", cmd->args[0] ? " " : "", cmd->args);
	fprintf(out, "  %s\n", cmd->summary);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("postern: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void cli_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("postern: warning: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static int usage_error(const struct cli_cmd *cmd, const char *what, const char *arg)
{
	if (what != NULL)
		cli_error("%s%s%s", what, arg ? ": " : "", arg ? arg : "");
	cli_usage(stderr, cmd);
	return CLI_EXIT_USAGE;
}

bool cli_parse(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv,
	       const struct cli_opt *opts, const char **pos, int min, int max, int *npos_r,
	       int *exit_r)
{
	int npos = 0;
	bool only_pos = false;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (only_pos || a[0] != '-' || a[1] == '\0') {
			if (npos >= max) {
				*exit_r = usage_error(cmd, "unexpected argument", a);
				return false;
			}
			pos[npos++] = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_pos = true;
			continue;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			cli_usage(stdout, cmd);
			*exit_r = CLI_EXIT_OK;
			return false;
		}
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc) {
				*exit_r = usage_error(cmd, "option needs a value", a);
				return false;
			}
			cli->config_path = argv[++i];
			continue;
		}
		if (strncmp(a, "--config=", 9) == 0) {
			cli->config_path = a + 9;
			continue;
		}
		const struct cli_opt *o = NULL;
		const char *eq = strchr(a, '=');
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
		for (const struct cli_opt *p = opts; p != NULL && p->name != NULL; p++) {
			if (strlen(p->name) == nlen && strncmp(p->name, a, nlen) == 0) {
				o = p;
				break;
			}
		}
		if (o == NULL) {
			*exit_r = usage_error(cmd, "unknown option", a);
			return false;
		}
		if (o->value_r == NULL) {
			if (eq != NULL) {
				*exit_r = usage_error(cmd, "option takes no value", a);
				return false;
			}
			*o->flag_r = true;
		} else if (eq != NULL) {
			*o->value_r = eq + 1;
		} else if (i + 1 < argc) {
			*o->value_r = argv[++i];
		} else {
			*exit_r = usage_error(cmd, "option needs a value", a);
			return false;
		}
	}
	if (npos < min) {
		*exit_r = usage_error(cmd, "missing argument", NULL);
		return false;
	}
	*npos_r = npos;
	return true;
}

struct config *cli_config(struct cli *cli)
{
	if (cli->cfg != NULL)
		return cli->cfg;
	char *error = NULL;
	const char *path = config_find(cli->config_path);
	cli->cfg = config_load(path, &error);
	if (cli->cfg == NULL) {
		cli_error("%s", error);
		free(error);
		return NULL;
	}
	return cli->cfg;
}

struct directory *cli_directory_open(struct cli *cli)
{
	struct config *cfg = cli_config(cli);
	if (cfg == NULL)
		return NULL;
	char *dbpath = xasprintf("%s/postern.db", cfg->data_dir);
	bool exists = access(dbpath, F_OK) == 0;
	free(dbpath);
	if (!exists) {
		cli_error("no database in %s; run `postern init` first", cfg->data_dir);
		return NULL;
	}
	struct directory *dir = NULL;
	char *error = NULL;
	if (directory_open(cfg->data_dir, false, &dir, &error) < 0) {
		cli_error("cannot open the directory in %s: %s", cfg->data_dir,
			  error ? error : "unknown error");
		free(error);
		return NULL;
	}
	cli_chown_db(cli);
	return dir;
}

void cli_directory_close(struct cli *cli, struct directory **dir)
{
	if (*dir == NULL)
		return;
	cli_chown_db(cli);
	directory_close(dir);
	cli_chown_db(cli);
}

int cli_directory_done(struct cli *cli, struct directory **dir, int ret, char *error)
{
	cli_directory_close(cli, dir);
	if (ret < 0) {
		cli_error("%s", error ? error : "failed");
		free(error);
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

int cli_run_list(struct cli *cli, const struct cli_cmd *cmd, int argc, char **argv,
		 int (*list)(struct directory *, FILE *, bool, char **))
{
	bool json = false;
	const struct cli_opt opts[] = {{"--json", &json, NULL}, {0}};
	const char *pos[1];
	int npos, ret;
	if (!cli_parse(cli, cmd, argc, argv, opts, pos, 0, 0, &npos, &ret))
		return ret;
	struct directory *dir = cli_directory_open(cli);
	if (dir == NULL)
		return CLI_EXIT_FAIL;
	char *error = NULL;
	ret = list(dir, stdout, json, &error);
	return cli_directory_done(cli, &dir, ret, error);
}

static bool owner_lookup(struct cli *cli)
{
	if (cli->owner_looked_up)
		return cli->owner_known;
	cli->owner_looked_up = true;
	struct config *cfg = cli_config(cli);
	if (cfg == NULL)
		return false;
	/*
	 * A data directory that belongs to an ordinary user (a server run
	 * without root) keeps its owner: handing its files to the service
	 * user would lock that server out.
	 */
	struct stat st;
	if (!cli->to_service_user && stat(cfg->data_dir, &st) == 0 && st.st_uid != 0) {
		cli->owner_uid = st.st_uid;
		cli->owner_gid = st.st_gid;
		cli->owner_known = true;
		return true;
	}
	struct passwd *pw = getpwnam(cfg->user);
	if (pw == NULL) {
		cli_warn("service user %s does not exist (run `postern init` as root); "
			 "files stay owned by root",
			 cfg->user);
		return false;
	}
	cli->owner_uid = pw->pw_uid;
	cli->owner_gid = pw->pw_gid;
	cli->owner_known = true;
	return true;
}

/* nftw() has no user data pointer; the walk is single-threaded. */
static uid_t walk_uid;
static gid_t walk_gid;
static int walk_changed;
static int walk_failed;

static int chown_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	if (st->st_uid == walk_uid && st->st_gid == walk_gid)
		return 0;
	if (lchown(path, walk_uid, walk_gid) < 0) {
		cli_error("chown %s: %s", path, strerror(errno));
		walk_failed = 1;
		return 1;
	}
	walk_changed++;
	return 0;
}

int cli_chown(struct cli *cli, const char *path, bool recursive)
{
	if (geteuid() != 0 || !owner_lookup(cli))
		return 0;
	walk_uid = cli->owner_uid;
	walk_gid = cli->owner_gid;
	walk_changed = 0;
	walk_failed = 0;
	if (recursive) {
		if (nftw(path, chown_entry, 32, FTW_PHYS) < 0 && !walk_failed) {
			if (errno == ENOENT)
				return 0;
			cli_error("%s: %s", path, strerror(errno));
			return -1;
		}
	} else {
		struct stat st;
		if (lstat(path, &st) < 0)
			return errno == ENOENT ? 0 : -1;
		chown_entry(path, &st, 0, NULL);
	}
	return walk_failed ? -1 : walk_changed;
}

void cli_chown_db(struct cli *cli)
{
	if (geteuid() != 0 || cli->cfg == NULL)
		return;
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
		char *p = xasprintf("%s/postern.db%s", cli->cfg->data_dir, suffixes[i]);
		cli_chown(cli, p, false);
		free(p);
	}
}

void cli_password_free(char **pw)
{
	if (*pw == NULL)
		return;
	explicit_bzero(*pw, strlen(*pw));
	xfree(pw);
}

/*
 * Read one line from `f` without its line end into *line_r.
 * 1 ok, 0 end of input, -1 the line holds a NUL byte.
 */
static int read_line(FILE *f, char **line_r)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);
	*line_r = NULL;
	if (n < 0) {
		if (line != NULL)
			explicit_bzero(line, cap);
		free(line);
		return 0;
	}
	if (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	if (strlen(line) != (size_t)n) {
		/* refuse rather than silently cut at the NUL */
		explicit_bzero(line, cap);
		free(line);
		return -1;
	}
	*line_r = line;
	return 1;
}

static int prompt_noecho(const char *prompt, char **line_r)
{
	struct termios old, quiet;
	*line_r = NULL;
	if (tcgetattr(STDIN_FILENO, &old) < 0)
		return 0;
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	fputs(prompt, stderr);
	fflush(stderr);
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) < 0)
		return 0;
	int ret = read_line(stdin, line_r);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	return ret;
}

char *cli_read_password(bool from_stdin)
{
	char *pw = NULL;
	int ret;
	if (from_stdin) {
		ret = read_line(stdin, &pw);
	} else if (isatty(STDIN_FILENO)) {
		ret = prompt_noecho("New password: ", &pw);
		if (ret > 0) {
			char *again = NULL;
			int ret2 = prompt_noecho("Repeat password: ", &again);
			bool same = ret2 > 0 && strcmp(pw, again) == 0;
			cli_password_free(&again);
			if (!same) {
				cli_password_free(&pw);
				cli_error("the passwords do not match");
				return NULL;
			}
		}
	} else {
		cli_error("no password: use --password-stdin, --password-hash, or run on a "
			  "terminal to be prompted");
		return NULL;
	}
	if (ret < 0) {
		cli_error("the password must not contain NUL bytes");
		return NULL;
	}
	if (ret == 0 || pw[0] == '\0') {
		cli_password_free(&pw);
		cli_error("the password must not be empty");
		return NULL;
	}
	return pw;
}
