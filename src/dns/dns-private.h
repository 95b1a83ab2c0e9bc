/* Shared between the dns layer's files; not an interface for other layers. */
#ifndef POSTERN_DNS_PRIVATE_H
#define POSTERN_DNS_PRIVATE_H

#include "dns/dns.h"

struct ub_ctx;
struct ub_result;

/* A configured ub_ctx (threaded background worker), or NULL with *error_r. */
struct ub_ctx *dns_ctx_new(const struct dns_options *opts, const char **error_r);
unsigned dns_timeout_ms(const struct dns_options *opts);

/* A result for a query that produced no answer (timeout, local error). */
struct dns_result *dns_result_fail(const char *qname, uint16_t qtype, enum dns_status status,
				   const char *error);
/*
 * Build our result from libunbound's callback arguments (err, ub) and free
 * ub. Records that do not parse are dropped (and logged).
 */
struct dns_result *dns_result_from_ub(const char *qname, uint16_t qtype, int err,
				      struct ub_result *ub);

#endif
