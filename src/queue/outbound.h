/*
 * The outbound agent (outbound.c) and the delivery status notifications it
 * sends (bounce.c). Internal to src/queue; the daemon starts the agent
 * through queue_outbound_start() in queue.h.
 */
#ifndef POSTERN_OUTBOUND_H
#define POSTERN_OUTBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct dns_result;

/*
 * Seconds to wait before the next attempt after `attempts` failed ones:
 * retry_min doubled per attempt, capped at retry_max, then shortened by up
 * to 20% (jitter = rnd / 2^32 of that 20%) but never below retry_min.
 */
uint64_t outbound_backoff(unsigned attempts, uint64_t retry_min, uint64_t retry_max, uint32_t rnd);

enum outbound_route {
	ROUTE_OK,   /* *hosts_r: the hosts to try, in order */
	ROUTE_TEMP, /* DNS failed for now: defer */
	ROUTE_PERM, /* no such domain, or a null MX: fail at once */
};
/*
 * The hosts to try for `domain` from its MX answer (already sorted by
 * dns: preference, equal ones shuffled): the MX hosts in order; the domain
 * itself when it has no MX (RFC 5321 5.1 implicit MX); none for a null MX
 * (RFC 7505) or NXDOMAIN. *error_r: an enhanced status and text for the
 * failure ("5.1.10 ..."), static.
 */
enum outbound_route outbound_route(const struct dns_result *mx, const char *domain,
				   char ***hosts_r, size_t *nhosts_r, const char **error_r);
void outbound_hosts_free(char ***hosts, size_t n);

/*
 * IDNA (RFC 5890-5891, UTS #46 non-transitional): the A-label form of
 * `domain` ("xn--bcher-kva.example" for "bücher.example"), as is when it is
 * ASCII; NULL with *error_r (static) when it is not a valid IDN. Allocated.
 */
char *outbound_domain_ascii(const char *domain, const char **error_r);
/* `address` with its domain in A-labels (the local part unchanged). Allocated, or NULL. */
char *outbound_address_ascii(const char *address, const char **error_r);
/* The local part (before the last '@') is ASCII. */
bool outbound_local_part_ascii(const char *address);

/* "5.1.1" from "550 5.1.1 text"; else "5.0.0"/"4.0.0" from the code (0 -> 4.4.1). */
void outbound_status(int code, const char *text, char status[16]);

/* ---- delivery status notifications (RFC 3464) ---- */

struct bounce_rcpt {
	const char *address;    /* final recipient (rfc822;...) */
	const char *orcpt;      /* ORCPT as received ("rfc822;..." xtext) or NULL */
	const char *status;     /* "5.1.1" */
	const char *diagnostic; /* the remote reply or our reason */
	const char *remote_mta; /* host that answered, or NULL */
	bool delayed;           /* Action: delayed (a delay notice), else failed */
};

struct bounce_input {
	const char *hostname;   /* reporting MTA */
	const char *queue_id;   /* of the original message */
	const char *sender;     /* original envelope sender: the DSN's recipient */
	const char *envid;      /* ENVID (xtext as received) or NULL */
	bool full;              /* RET=FULL: the whole message, else its header */
	time_t arrival;
	time_t now;
	const struct bounce_rcpt *rcpts;
	size_t nrcpts;
	int fd;                 /* the original message (spool file), or -1 */
	uint64_t max_return;    /* at most this many octets of the original are returned */
};

/*
 * The DSN message, CRLF lines: multipart/report; report-type=delivery-status
 * with a human-readable part, message/delivery-status, and the original
 * message (message/rfc822) or its header (text/rfc822-headers). To be sent
 * with the null envelope sender. Returns a new string; *len_r its length.
 */
char *bounce_build(const struct bounce_input *in, size_t *len_r);

/* ---- queuing a DSN (outbound.c), shared with the queue administration ---- */

struct sqlite3;

/* A recipient reported in a DSN. */
struct dsn_row {
	int64_t row;
	char *address, *orcpt, *error; /* error: "550 5.1.1 ..." or "5.0.0 ..." */
	int notify;
	const char *mta; /* not owned; NULL if none */
};

/* The original message a DSN reports on. */
struct dsn_source {
	const char *spool_dir;
	const char *hostname; /* reporting MTA */
	const char *queue_id;
	const char *sender;   /* the DSN goes there */
	const char *dsn_ret, *dsn_envid;
	time_t received;
};

/*
 * Build the DSN about `rows` of `src`, write it to the spool (durable: file
 * and directory fsync'd) and insert its rows (state 'queued', null sender)
 * in the caller's transaction on `db`. *id_r gets its queue id; the caller
 * hands it to the delivery thread after COMMIT, or removes the spool file
 * after a ROLLBACK. 0 / -1.
 */
int outbound_dsn_inject(struct sqlite3 *db, const struct dsn_source *src,
			const struct dsn_row *rows, size_t n, bool delayed, char id_r[24]);

#endif
