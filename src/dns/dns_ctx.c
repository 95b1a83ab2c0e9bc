/*
 * One place that turns dns_options into a configured libunbound context,
 * shared by the event-loop resolver and the synchronous one.
 */
#include "dns/dns-private.h"

#include "lib/netaddr.h"
#include "lib/xalloc.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>
#include <unistd.h>

/*
 * Zones unbound answers itself by default (RFC 6761, RFC 6303). When the
 * admin names a resolver, that server is the authority for them: test
 * setups serve test. and documentation reverse zones, and a site resolver
 * may serve its private reverse zones.
 */
static const char *const passed_zones[] = {
	"test.",
	"127.in-addr.arpa.",
	"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
	"2.0.192.in-addr.arpa.",
	"100.51.198.in-addr.arpa.",
	"113.0.203.in-addr.arpa.",
	"8.b.d.0.1.0.0.2.ip6.arpa.",
};

unsigned dns_timeout_ms(const struct dns_options *opts)
{
	return opts->timeout_ms > 0 ? opts->timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
}

/* "ip", "ip:port" or "[v6]:port" -> "ip@port" for ub_ctx_set_fwd. */
static char *forwarder(const char *s)
{
	unsigned char buf[16];
	char *host;
	uint16_t port;

	if (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1)
		return xasprintf("%s@53", s);
	if (hostport_parse(s, &host, &port) < 0)
		return NULL;
	if (port == 0 ||
	    (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1)) {
		free(host);
		return NULL;
	}
	char *fwd = xasprintf("%s@%u", host, port);
	free(host);
	return fwd;
}

static bool set(struct ub_ctx *ctx, const char *opt, const char *val)
{
	return ub_ctx_set_option(ctx, opt, val) == 0;
}

struct ub_ctx *dns_ctx_new(const struct dns_options *opts, const char **error_r)
{
	const char *resolver = opts->resolver != NULL ? opts->resolver : "";
	struct ub_ctx *ctx = ub_ctx_create();
	char rtt[32];

	if (ctx == NULL) {
		*error_r = "dns: cannot create a libunbound context";
		return NULL;
	}
	/* A thread, not a forked process, does the network work. */
	if (ub_ctx_async(ctx, 1) != 0)
		goto fail_opt;
	/*
	 * The resolver may be on loopback (a local unbound, a test server); a
	 * server that stopped answering is probed again rather than shunned for
	 * the infra cache's lifetime; unbound's own retries stay within our
	 * deadline.
	 */
	snprintf(rtt, sizeof(rtt), "%u", dns_timeout_ms(opts));
	if (!set(ctx, "do-not-query-localhost:", "no") || !set(ctx, "infra-keep-probing:", "yes") ||
	    !set(ctx, "infra-cache-max-rtt:", rtt) || !set(ctx, "prefetch:", "no"))
		goto fail_opt;

	if (resolver[0] == '\0') {
		if (ub_ctx_resolvconf(ctx, opts->resolv_conf) != 0) {
			*error_r = "dns: cannot read resolv.conf";
			goto fail;
		}
	} else {
		char *fwd = forwarder(resolver);
		if (fwd == NULL) {
			*error_r = "[dns] resolver: expected ip or ip:port";
			goto fail;
		}
		int rc = ub_ctx_set_fwd(ctx, fwd);
		free(fwd);
		if (rc != 0) {
			*error_r = "[dns] resolver: libunbound refused the address";
			goto fail;
		}
		for (size_t i = 0; i < ARRAY_SIZE(passed_zones); i++) {
			/*
			 * "transparent" rather than "nodefault": libunbound's
			 * ub_ctx_set_option keeps the whole value as the name of a
			 * nodefault zone, so nodefault never matches (1.17).
			 */
			char *zone = xasprintf("%s transparent", passed_zones[i]);
			bool ok = set(ctx, "local-zone:", zone);
			free(zone);
			if (!ok)
				goto fail_opt;
		}
		if (!set(ctx, "unblock-lan-zones:", "yes") || !set(ctx, "insecure-lan-zones:", "yes"))
			goto fail_opt;
	}

	if (opts->trust_anchor_file != NULL && opts->trust_anchor_file[0] != '\0') {
		if (access(opts->trust_anchor_file, R_OK) != 0 ||
		    ub_ctx_add_ta_file(ctx, opts->trust_anchor_file) != 0) {
			*error_r = "dns: cannot read the trust anchor file";
			goto fail;
		}
	} else if (!set(ctx, "module-config:", "iterator")) {
		/* No anchor: nothing to validate, answers are insecure, never bogus. */
		goto fail_opt;
	}
	return ctx;

fail_opt:
	*error_r = "dns: libunbound refused an option";
fail:
	ub_ctx_delete(ctx);
	return NULL;
}
