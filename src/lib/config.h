/*
 * Configuration: one INI file, every knob declared once in the table in
 * config.c (section, name, type, default, bounds, help). `postern config`
 * prints the table with the effective values; docs/configuration.md is
 * checked against it by a test.
 */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include "lib/netaddr.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct config {
	char *path; /* file it was read from, NULL for built-in defaults */

	/* [server] */
	char *hostname; /* FQDN; defaults to the system's name */
	char *data_dir; /* absolute after load */
	char *user;     /* service user when started as root */
	char *log_level;
	char *log_file; /* absolute after load; "" = no file */

	/* [listen]: lists of host:port, "" = off */
	char *listen_smtp;
	char *listen_submission;
	char *listen_submissions;
	char *listen_imap;
	char *listen_imaps;
	char *listen_pop3;
	char *listen_pop3s;

	/* [tls] (absolute after load) */
	char *tls_cert;
	char *tls_key;

	/* [dns] */
	char *dns_resolver;

	/* [queue]: outbound delivery */
	uint64_t remote_port;     /* port of remote MX hosts (25; tests use high ports) */
	uint64_t retry_min;       /* seconds */
	uint64_t retry_max;       /* seconds */
	uint64_t warn_after;      /* seconds */
	uint64_t max_lifetime;    /* seconds */
	uint64_t queue_max_connections;
	uint64_t max_per_domain;
	uint64_t connect_timeout; /* seconds */
	uint64_t command_timeout; /* seconds */

	/* [relay] */
	char *smarthost;          /* host:port, "" = deliver by MX */
	char *smarthost_tls;      /* starttls | tls | none */
	char *smarthost_user;     /* "" = no AUTH */
	char *smarthost_password;
	char *rewrite_sender;     /* "" = keep the sender */
	char *trusted_networks;
	struct netlist trusted; /* parsed trusted_networks */

	/* [smtp] */
	bool auth_on_smtp;     /* offer AUTH on the port-25 listener too */
	bool bare_newline_reject; /* bare_newline = reject (else normalize) */
	uint64_t pregreet_wait_ms; /* hold the 220 back this long for untrusted SMTP clients */

	/* [policy]: checks of mail from the smtp listener (untrusted clients) */
	char *dmarc_reject;   /* reject | quarantine | mark: what p=reject gets */
	char *arc_trusted_sealers; /* ARC sealer domains whose pass overrides a DMARC fail */
	char *require_fcrdns; /* no | log | reject */
	char *helo_checks;    /* no | log | reject */

	/* [auth] */
	char *default_domain;
	uint64_t auth_max_failures;   /* per IP and per account in auth_failure_window */
	uint64_t auth_failure_window; /* seconds */

	/* [imap] */
	uint64_t imap_max_line_length; /* command line octets, literals excluded */
	uint64_t imap_autologout;      /* seconds of inactivity after login */
	uint64_t imap_max_connections_per_user; /* per account and client IP */
	char *imap_plaintext_auth; /* no | loopback (login without TLS from 127/8, ::1) */

	/* [pop3] */
	char *pop3_delete; /* allow | keep (DELE accepted, nothing removed) */

	/* [mailbox] */
	char *mailbox_folders; /* "Name=special, ..." created with every account */

	/* [retention]: 0 = keep forever */
	uint64_t retention_trash; /* seconds */
	uint64_t retention_junk;  /* seconds */

	/* [limits] */
	uint64_t max_message_size;
	uint64_t max_recipients;
	uint64_t max_messages_per_session;
	uint64_t max_connections;
	uint64_t max_connections_per_ip;
	uint64_t messages_per_ip_per_minute;
	uint64_t max_errors;
	uint64_t max_line_length; /* DATA text line, octets incl. CRLF */
	uint64_t idle_timeout;    /* seconds */
	uint64_t data_timeout;    /* seconds */
};

/*
 * Read `path` (NULL: built-in defaults only) over the defaults and check
 * every value. Returns NULL with an allocated "FILE:LINE: message" in
 * *error_r on any unknown section or key, or bad value.
 */
struct config *config_load(const char *path, char **error_r);
void config_free(struct config **cfg);

/*
 * Find the config file to use: `explicit` if given, else $POSTERN_CONFIG,
 * else ./postern.conf if it exists, else /etc/postern/postern.conf if it
 * exists, else NULL (built-in defaults).
 */
const char *config_find(const char *explicit_path);

/* Print the effective configuration in INI syntax, with each knob's help. */
void config_print(FILE *out, const struct config *cfg);

/* Describe every knob as a JSON-ish table for docs generation: one line per knob
   "section.name<TAB>type<TAB>default<TAB>help". */
void config_print_table(FILE *out);

#endif
