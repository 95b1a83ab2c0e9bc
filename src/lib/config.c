#include "lib/config.h"
#include "lib/log.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum knob_type {
	K_STRING, /* free text */
	K_PATH,   /* file or directory; relative paths resolved after load */
	K_BOOL,   /* yes/no/true/false/on/off/1/0 */
	K_UINT,   /* plain integer within bounds */
	K_SIZE,   /* 10M */
	K_DURATION, /* 30s 5m 4h 4d */
	K_LISTEN, /* list of host:port */
	K_NETLIST, /* list of address[/prefix] */
	K_ENUM,   /* one of `choices`; stored as a string */
};

struct knob {
	const char *section;
	const char *name;
	enum knob_type type;
	size_t offset;
	const char *def;
	uint64_t min, max;   /* K_UINT, K_SIZE, K_DURATION */
	const char *choices; /* K_ENUM: "a|b|c" */
	const char *help;
};

#define F(field) offsetof(struct config, field)

/* The one declaration of every knob. Keep docs/configuration.md in step. */
static const struct knob knobs[] = {
    {"server", "hostname", K_STRING, F(hostname), "", 0, 0, NULL,
     "Fully qualified name of this server, used in the greeting, Received headers and the "
     "certificate; empty = the system's name"},
    {"server", "data_dir", K_PATH, F(data_dir), "./postern-data", 0, 0, NULL,
     "Directory holding the database, spool, mailboxes, keys and logs"},
    {"server", "user", K_STRING, F(user), "postern", 0, 0, NULL,
     "Service user the server switches to after binding its ports when started as root"},
    {"server", "log_level", K_ENUM, F(log_level), "info", 0, 0, "debug|info|warn|error",
     "Least severe level that is logged"},
    {"server", "log_file", K_PATH, F(log_file), "log/postern.log", 0, 0, NULL,
     "Log file (relative to data_dir); empty = stderr only"},

    {"listen", "smtp", K_LISTEN, F(listen_smtp), ":2525", 0, 0, NULL,
     "SMTP for other mail servers (port 25 in production); host:port list, empty = off"},
    {"listen", "submission", K_LISTEN, F(listen_submission), ":2587", 0, 0, NULL,
     "Submission with STARTTLS for mail clients (port 587 in production)"},
    {"listen", "submissions", K_LISTEN, F(listen_submissions), ":2465", 0, 0, NULL,
     "Submission over implicit TLS for mail clients (port 465 in production)"},
    {"listen", "imap", K_LISTEN, F(listen_imap), ":2143", 0, 0, NULL,
     "IMAP with STARTTLS for mail clients (port 143 in production)"},
    {"listen", "imaps", K_LISTEN, F(listen_imaps), ":2993", 0, 0, NULL,
     "IMAP over implicit TLS (port 993 in production)"},
    {"listen", "pop3", K_LISTEN, F(listen_pop3), ":2110", 0, 0, NULL,
     "POP3 with STLS (port 110 in production)"},
    {"listen", "pop3s", K_LISTEN, F(listen_pop3s), ":2995", 0, 0, NULL,
     "POP3 over implicit TLS (port 995 in production)"},

    {"tls", "cert", K_PATH, F(tls_cert), "tls/cert.pem", 0, 0, NULL,
     "PEM certificate chain (relative to data_dir); `postern init` makes a self-signed one"},
    {"tls", "key", K_PATH, F(tls_key), "tls/key.pem", 0, 0, NULL,
     "PEM private key (relative to data_dir)"},

    {"dns", "resolver", K_STRING, F(dns_resolver), "", 0, 0, NULL,
     "Recursive resolver to query as ip[:port]; empty = the system's /etc/resolv.conf"},

    {"queue", "remote_port", K_UINT, F(remote_port), "25", 1, 65535, NULL,
     "TCP port of remote mail servers for outbound delivery (25; tests use high ports)"},
    {"queue", "retry_min", K_DURATION, F(retry_min), "5m", 1, 86400, NULL,
     "First retry of a deferred outbound recipient after this long, doubling per attempt"},
    {"queue", "retry_max", K_DURATION, F(retry_max), "1h", 1, 7 * 86400, NULL,
     "Longest wait between two outbound attempts (with up to 20% jitter below it)"},
    {"queue", "warn_after", K_DURATION, F(warn_after), "4h", 1, 30 * 86400, NULL,
     "Send the sender one delay notice when a recipient is still deferred after this long"},
    {"queue", "max_lifetime", K_DURATION, F(max_lifetime), "4d", 1, 30 * 86400, NULL,
     "Give up on a deferred outbound recipient after this long and bounce it to the sender"},
    {"queue", "max_connections", K_UINT, F(queue_max_connections), "20", 1, 64, NULL,
     "Outbound SMTP connections open at the same time, in total"},
    {"queue", "max_per_domain", K_UINT, F(max_per_domain), "5", 1, 64, NULL,
     "Outbound SMTP connections open at the same time to one destination domain"},
    {"queue", "connect_timeout", K_DURATION, F(connect_timeout), "30s", 1, 3600, NULL,
     "Time allowed to connect to a remote mail server"},
    {"queue", "command_timeout", K_DURATION, F(command_timeout), "5m", 1, 3600, NULL,
     "Time allowed for each reply of a remote mail server (and each block of DATA)"},

    {"relay", "smarthost", K_STRING, F(smarthost), "", 0, 0, NULL,
     "Send all outbound mail through this server (host:port, [ip]:port); empty = by MX"},
    {"relay", "smarthost_tls", K_ENUM, F(smarthost_tls), "starttls", 0, 0, "starttls|tls|none",
     "TLS to the smarthost: STARTTLS required, implicit TLS (port 465), or none"},
    {"relay", "smarthost_user", K_STRING, F(smarthost_user), "", 0, 0, NULL,
     "Account for AUTH PLAIN at the smarthost (sent only over TLS); empty = no AUTH"},
    {"relay", "smarthost_password", K_STRING, F(smarthost_password), "", 0, 0, NULL,
     "Password for smarthost_user"},
    {"relay", "rewrite_sender", K_STRING, F(rewrite_sender), "", 0, 0, NULL,
     "Through the smarthost, use this address as envelope sender and From (the null "
     "sender of DSNs is kept); empty = unchanged"},
    {"relay", "trusted_networks", K_NETLIST, F(trusted_networks), "127.0.0.0/8, ::1", 0, 0, NULL,
     "Clients in these networks may relay without authentication"},

    {"smtp", "auth_on_smtp", K_BOOL, F(auth_on_smtp), "no", 0, 0, NULL,
     "Also offer AUTH (over TLS) on the smtp listener, not only on submission"},
    {"smtp", "bare_newline", K_ENUM, F(bare_newline_reject), "reject", 0, 0, "reject|normalize",
     "A bare LF or CR in DATA: reject the message (554) or normalise it to CRLF"},
    {"smtp", "pregreet_wait_ms", K_UINT, F(pregreet_wait_ms), "300", 0, 10000, NULL,
     "Milliseconds the greeting is held back from untrusted clients on the smtp listener; "
     "a client that talks first is refused (trusted networks and submission: no wait)"},

    {"policy", "dmarc_reject", K_ENUM, F(dmarc_reject), "reject", 0, 0, "reject|quarantine|mark",
     "Mail failing DMARC whose domain asks for p=reject: refuse it (550 5.7.1), deliver it to "
     "Junk, or only mark it in Authentication-Results"},
    {"policy", "arc_trusted_sealers", K_STRING, F(arc_trusted_sealers), "", 0, 0, NULL,
     "Forwarders and mailing lists (domains of their ARC seal) whose valid ARC chain lets "
     "mail through that fails DMARC; comma separated, empty = none"},
    {"policy", "require_fcrdns", K_ENUM, F(require_fcrdns), "no", 0, 0, "no|log|reject",
     "SMTP clients without forward-confirmed reverse DNS: accept, log, or refuse at RCPT "
     "(450 4.7.25 when DNS failed temporarily, 550 5.7.25 when definitive)"},
    {"policy", "helo_checks", K_ENUM, F(helo_checks), "no", 0, 0, "no|log|reject",
     "HELO/EHLO names that are not a FQDN, do not resolve, or claim our own name or "
     "address: accept, log, or refuse at RCPT"},

    {"auth", "default_domain", K_STRING, F(default_domain), "", 0, 0, NULL,
     "Domain appended to logins given without @domain; empty = require full address"},
    {"auth", "max_failures", K_UINT, F(auth_max_failures), "10", 1, 100000, NULL,
     "Failed logins allowed per client IP and per account within failure_window"},
    {"auth", "failure_window", K_DURATION, F(auth_failure_window), "15m", 1, 86400, NULL,
     "Window over which failed logins are counted"},

    {"imap", "max_line_length", K_SIZE, F(imap_max_line_length), "64K", 1024, 16 * 1024 * 1024,
     NULL, "Longest IMAP command line in octets, literals not counted (before login: 8K)"},
    {"imap", "autologout", K_DURATION, F(imap_autologout), "30m", 60, 86400, NULL,
     "Inactivity after which a logged-in IMAP session is closed (RFC 9051: at least 30m)"},
    {"imap", "max_connections_per_user", K_UINT, F(imap_max_connections_per_user), "20", 1, 100000,
     NULL, "Concurrent IMAP sessions of one account from one client IP"},
    {"imap", "plaintext_auth", K_ENUM, F(imap_plaintext_auth), "no", 0, 0, "no|loopback",
     "loopback: LOGIN/AUTHENTICATE without TLS from 127.0.0.0/8 and ::1 (measurements)"},

    {"pop3", "delete", K_ENUM, F(pop3_delete), "allow", 0, 0, "allow|keep",
     "allow: DELE removes messages at QUIT; keep: DELE is accepted, nothing is removed"},

    {"mailbox", "folders", K_STRING, F(mailbox_folders),
     "Drafts=drafts, Sent=sent, Junk=junk, Trash=trash, Archive=archive", 0, 0, NULL,
     "Folders created with every account, each with its special use "
     "(drafts|sent|junk|trash|archive|none)"},

    {"retention", "trash", K_DURATION, F(retention_trash), "30d", 0, 3650 * 86400ULL, NULL,
     "Messages in Trash older than this are deleted; 0 = never"},
    {"retention", "junk", K_DURATION, F(retention_junk), "10d", 0, 3650 * 86400ULL, NULL,
     "Messages in Junk older than this are deleted; 0 = never"},

    {"limits", "max_message_size", K_SIZE, F(max_message_size), "50M", 1024,
     2ULL * 1024 * 1024 * 1024, NULL, "Largest message accepted (advertised in SIZE)"},
    {"limits", "max_recipients", K_UINT, F(max_recipients), "100", 1, 100000, NULL,
     "Recipients per message; more get 452 4.5.3"},
    {"limits", "max_messages_per_session", K_UINT, F(max_messages_per_session), "100", 1, 1000000,
     NULL, "Messages per SMTP connection before 421"},
    {"limits", "max_connections", K_UINT, F(max_connections), "1000", 1, 1000000, NULL,
     "Concurrent connections in total, for each of SMTP, IMAP and POP3"},
    {"limits", "max_connections_per_ip", K_UINT, F(max_connections_per_ip), "20", 1, 1000000, NULL,
     "Concurrent connections from one client IP, for each of SMTP, IMAP and POP3"},
    {"limits", "messages_per_ip_per_minute", K_UINT, F(messages_per_ip_per_minute), "60", 1,
     10000000, NULL,
     "Messages accepted per client IP per minute (trusted networks and authenticated users "
     "are exempt)"},
    {"limits", "max_errors", K_UINT, F(max_errors), "10", 1, 1000, NULL,
     "Protocol errors in one SMTP session before it is disconnected"},
    {"limits", "max_line_length", K_SIZE, F(max_line_length), "1000", 100, 1024 * 1024, NULL,
     "Longest DATA text line in octets including CRLF (RFC 5321 4.5.3.1.6: 1000)"},
    {"limits", "idle_timeout", K_DURATION, F(idle_timeout), "5m", 1, 3600, NULL,
     "Idle time allowed between SMTP commands (RFC 5321 4.5.3.2.7: 5m)"},
    {"limits", "data_timeout", K_DURATION, F(data_timeout), "10m", 1, 3600, NULL,
     "Time allowed between blocks of DATA (RFC 5321 4.5.3.2.6: 3m at least)"},
};

#define FIELD(cfg, k, type) ((type *)((char *)(cfg) + (k)->offset))

static bool parse_bool(const char *v, bool *b)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*b = true;
			return true;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*b = false;
			return true;
		}
	}
	return false;
}

static bool enum_has(const char *choices, const char *v)
{
	size_t n = strlen(v);
	for (const char *p = choices; p != NULL && *p != '\0';) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, v, n) == 0)
			return true;
		p = bar ? bar + 1 : NULL;
	}
	return false;
}

/* Set one knob from text. Returns NULL or a static error message. */
static const char *knob_set(struct config *cfg, const struct knob *k, const char *v)
{
	uint64_t n;
	switch (k->type) {
	case K_STRING:
	case K_PATH:
		free(*FIELD(cfg, k, char *));
		*FIELD(cfg, k, char *) = xstrdup(v);
		return NULL;
	case K_BOOL:
		if (!parse_bool(v, FIELD(cfg, k, bool)))
			return "expected yes or no";
		return NULL;
	case K_UINT:
		if (parse_uint64(v, &n) < 0)
			return "expected a whole number";
		break;
	case K_SIZE:
		if (parse_size(v, &n) < 0)
			return "expected a size such as 1024, 512K, 10M or 2G";
		break;
	case K_DURATION:
		if (parse_duration(v, &n) < 0)
			return "expected a duration such as 30s, 5m, 4h or 4d";
		break;
	case K_LISTEN: {
		size_t count;
		char **items = strv_split_list(v, &count);
		for (size_t i = 0; i < count; i++) {
			char *host;
			uint16_t port;
			if (hostport_parse(items[i], &host, &port) < 0) {
				strv_free(&items);
				return "expected host:port, [ipv6]:port or :port (empty = off)";
			}
			free(host);
		}
		strv_free(&items);
		free(*FIELD(cfg, k, char *));
		*FIELD(cfg, k, char *) = xstrdup(v);
		return NULL;
	}
	case K_NETLIST: {
		struct netlist l;
		const char *err;
		if (netlist_parse(v, &l, &err) < 0)
			return err;
		netlist_free(&cfg->trusted);
		cfg->trusted = l;
		free(*FIELD(cfg, k, char *));
		*FIELD(cfg, k, char *) = xstrdup(v);
		return NULL;
	}
	case K_ENUM:
		if (!enum_has(k->choices, v))
			return "not one of the allowed values";
		if (k->offset == F(bare_newline_reject)) {
			cfg->bare_newline_reject = strcmp(v, "reject") == 0;
		} else {
			free(*FIELD(cfg, k, char *));
			*FIELD(cfg, k, char *) = xstrdup(v);
		}
		return NULL;
	}
	if (n < k->min || n > k->max)
		return "out of range";
	*FIELD(cfg, k, uint64_t) = n;
	return NULL;
}

static const struct knob *knob_find(const char *section, const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++)
		if (strcmp(knobs[i].section, section) == 0 && strcmp(knobs[i].name, name) == 0)
			return &knobs[i];
	return NULL;
}

static bool section_known(const char *section)
{
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++)
		if (strcmp(knobs[i].section, section) == 0)
			return true;
	return false;
}

static char *abs_path(const char *base, const char *p)
{
	if (p[0] == '/' || p[0] == '\0')
		return xstrdup(p);
	if (p[0] == '.' && p[1] == '/')
		p += 2;
	return xasprintf("%s/%s", base, p);
}

static char *system_hostname(void)
{
	char name[256];
	if (gethostname(name, sizeof(name)) < 0)
		return xstrdup("localhost");
	name[sizeof(name) - 1] = '\0';
	if (strchr(name, '.') == NULL) {
		struct addrinfo hints = {.ai_flags = AI_CANONNAME}, *res = NULL;
		if (getaddrinfo(name, NULL, &hints, &res) == 0 && res != NULL &&
		    res->ai_canonname != NULL && strchr(res->ai_canonname, '.') != NULL) {
			char *fq = xstrdup(res->ai_canonname);
			freeaddrinfo(res);
			return str_lower(fq);
		}
		if (res != NULL)
			freeaddrinfo(res);
	}
	return str_lower(xstrdup(name));
}

static const char *finish(struct config *cfg)
{
	char cwd[PATH_MAX];
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return "cannot determine the current directory";
	char *d = abs_path(cwd, cfg->data_dir);
	free(cfg->data_dir);
	cfg->data_dir = d;
	size_t dl = strlen(d);
	while (dl > 1 && d[dl - 1] == '/')
		d[--dl] = '\0';
	char **paths[] = {&cfg->tls_cert, &cfg->tls_key, &cfg->log_file};
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
		char *p = abs_path(cfg->data_dir, *paths[i]);
		free(*paths[i]);
		*paths[i] = p;
	}
	if (cfg->hostname[0] == '\0') {
		free(cfg->hostname);
		cfg->hostname = system_hostname();
	}
	str_lower(cfg->hostname);
	if (cfg->smarthost[0] != '\0') {
		char *host;
		uint16_t port;
		if (hostport_parse(cfg->smarthost, &host, &port) < 0)
			return "[relay] smarthost: expected host:port or [ip]:port";
		bool empty = host[0] == '\0';
		free(host);
		if (empty)
			return "[relay] smarthost: expected host:port or [ip]:port";
	}
	if (cfg->dns_resolver[0] != '\0') {
		/* ip or ip:port */
		char *host;
		uint16_t port;
		if (hostport_parse(cfg->dns_resolver, &host, &port) == 0)
			free(host);
		else if (strchr(cfg->dns_resolver, ' ') != NULL)
			return "[dns] resolver: expected ip or ip:port";
	}
	return NULL;
}

struct config *config_load(const char *path, char **error_r)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		const char *err = knob_set(cfg, &knobs[i], knobs[i].def);
		if (err != NULL)
			fatal("event=config_default_invalid knob=%s.%s", knobs[i].section,
			      knobs[i].name);
	}
	*error_r = NULL;
	if (path != NULL) {
		cfg->path = xstrdup(path);
		FILE *f = fopen(path, "r");
		if (f == NULL) {
			*error_r = xasprintf("%s: %s", path, strerror(errno));
			config_free(&cfg);
			return NULL;
		}
		char *line = NULL, section[64] = "";
		size_t cap = 0;
		unsigned lineno = 0;
		while (getline(&line, &cap, f) > 0) {
			lineno++;
			char *s = str_trim(line);
			if (*s == '\0' || *s == '#' || *s == ';')
				continue;
			if (*s == '[') {
				char *end = strchr(s, ']');
				if (end == NULL || end[1] != '\0' || (size_t)(end - s) >= sizeof(section)) {
					*error_r = xasprintf("%s:%u: malformed section header", path,
							     lineno);
					break;
				}
				*end = '\0';
				snprintf(section, sizeof(section), "%s", str_trim(s + 1));
				if (!section_known(section)) {
					*error_r = xasprintf("%s:%u: unknown section [%s]", path,
							     lineno, section);
					break;
				}
				continue;
			}
			char *eq = strchr(s, '=');
			if (eq == NULL) {
				*error_r = xasprintf("%s:%u: expected key = value", path, lineno);
				break;
			}
			*eq = '\0';
			char *key = str_trim(s), *val = str_trim(eq + 1);
			size_t vl = strlen(val);
			if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
				val[vl - 1] = '\0';
				val++;
			}
			if (section[0] == '\0') {
				*error_r = xasprintf("%s:%u: key %s outside of any section", path,
						     lineno, key);
				break;
			}
			const struct knob *k = knob_find(section, key);
			if (k == NULL) {
				*error_r = xasprintf("%s:%u: unknown key %s in [%s]", path, lineno,
						     key, section);
				break;
			}
			const char *err = knob_set(cfg, k, val);
			if (err != NULL) {
				*error_r = xasprintf("%s:%u: [%s] %s = %s: %s", path, lineno,
						     section, key, val, err);
				break;
			}
		}
		free(line);
		fclose(f);
		if (*error_r != NULL) {
			config_free(&cfg);
			return NULL;
		}
	}
	const char *err = finish(cfg);
	if (err != NULL) {
		*error_r = xasprintf("%s: %s", path ? path : "(defaults)", err);
		config_free(&cfg);
		return NULL;
	}
	return cfg;
}

void config_free(struct config **cfgp)
{
	struct config *cfg = *cfgp;
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		const struct knob *k = &knobs[i];
		if (k->type == K_STRING || k->type == K_PATH || k->type == K_LISTEN ||
		    k->type == K_NETLIST || (k->type == K_ENUM && k->offset != F(bare_newline_reject)))
			free(*FIELD(cfg, k, char *));
	}
	netlist_free(&cfg->trusted);
	free(cfg->path);
	free(cfg);
	*cfgp = NULL;
}

const char *config_find(const char *explicit_path)
{
	if (explicit_path != NULL)
		return explicit_path;
	const char *env = getenv("POSTERN_CONFIG");
	if (env != NULL && *env != '\0')
		return env;
	if (access("postern.conf", F_OK) == 0)
		return "postern.conf";
	if (access("/etc/postern/postern.conf", F_OK) == 0)
		return "/etc/postern/postern.conf";
	return NULL;
}

static void knob_value(const struct config *cfg, const struct knob *k, char *buf, size_t size)
{
	switch (k->type) {
	case K_BOOL:
		snprintf(buf, size, "%s", *FIELD(cfg, k, bool) ? "yes" : "no");
		break;
	case K_UINT:
		snprintf(buf, size, "%llu", (unsigned long long)*FIELD(cfg, k, uint64_t));
		break;
	case K_SIZE:
		format_size(*FIELD(cfg, k, uint64_t), buf, size);
		break;
	case K_DURATION:
		format_duration(*FIELD(cfg, k, uint64_t), buf, size);
		break;
	case K_ENUM:
		if (k->offset == F(bare_newline_reject)) {
			snprintf(buf, size, "%s", cfg->bare_newline_reject ? "reject" : "normalize");
			break;
		}
		/* fall through */
	default:
		snprintf(buf, size, "%s", *FIELD(cfg, k, char *));
	}
}

void config_print(FILE *out, const struct config *cfg)
{
	fprintf(out, "# Effective configuration (%s)\n", cfg->path ? cfg->path : "built-in defaults");
	const char *section = "";
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		const struct knob *k = &knobs[i];
		if (strcmp(section, k->section) != 0) {
			section = k->section;
			fprintf(out, "\n[%s]\n", section);
		}
		char val[1024];
		knob_value(cfg, k, val, sizeof(val));
		/* a secret is not printed, only whether it is set */
		if (k->offset == F(smarthost_password) && val[0] != '\0')
			snprintf(val, sizeof(val), "(set, not shown)");
		fprintf(out, "# %s (default: %s)\n%s = %s\n", k->help,
			k->def[0] ? k->def : "empty", k->name, val);
	}
}

void config_print_table(FILE *out)
{
	static const char *const type_names[] = {"string", "path", "bool", "integer", "size",
						 "duration", "listen", "networks", "enum"};
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		const struct knob *k = &knobs[i];
		fprintf(out, "%s.%s\t%s\t%s\t%s\n", k->section, k->name, type_names[k->type],
			k->def, k->help);
	}
}
