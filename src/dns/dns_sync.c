/*
 * Blocking lookups for worker threads (SPF and other checks that run off
 * the event loop). Each dns_sync has its own libunbound context; a lookup
 * is an asynchronous one waited for with poll() on ub_fd, so that it has
 * the same deadline as on the loop (ub_resolve alone has none).
 */
#include "dns/dns-private.h"

#include "lib/xalloc.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>
#include <unbound.h>

struct dns_sync {
	struct ub_ctx *ctx;
	unsigned timeout_ms;
};

struct sync_wait {
	const char *name;
	uint16_t qtype;
	struct dns_result *res;
};

struct dns_sync *dns_sync_new(const struct dns_options *opts, const char **error_r)
{
	struct ub_ctx *ctx = dns_ctx_new(opts, error_r);
	if (ctx == NULL)
		return NULL;
	struct dns_sync *s = xcalloc(1, sizeof(*s));
	s->ctx = ctx;
	s->timeout_ms = dns_timeout_ms(opts);
	return s;
}

void dns_sync_free(struct dns_sync **sp)
{
	struct dns_sync *s = *sp;
	if (s == NULL)
		return;
	ub_ctx_delete(s->ctx);
	free(s);
	*sp = NULL;
}

static void on_answer(void *data, int err, struct ub_result *ub)
{
	struct sync_wait *w = data;
	w->res = dns_result_from_ub(w->name, w->qtype, err, ub);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct dns_result *dns_sync_lookup(struct dns_sync *s, const char *name, uint16_t qtype)
{
	struct sync_wait w = {name, qtype, NULL};
	int id;
	int rc = ub_resolve_async(s->ctx, name, qtype, 1 /* IN */, &w, on_answer, &id);
	if (rc != 0)
		return dns_result_fail(name, qtype, DNS_SERVFAIL, ub_strerror(rc));

	long long deadline = now_ms() + s->timeout_ms;
	while (w.res == NULL) {
		long long left = deadline - now_ms();
		if (left <= 0) {
			(void)ub_cancel(s->ctx, id);
			return dns_result_fail(name, qtype, DNS_TIMEOUT, "no answer in time");
		}
		struct pollfd pfd = {.fd = ub_fd(s->ctx), .events = POLLIN};
		int n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno != EINTR) {
			(void)ub_cancel(s->ctx, id);
			return dns_result_fail(name, qtype, DNS_SERVFAIL, "poll failed");
		}
		if (n > 0 && (rc = ub_process(s->ctx)) != 0) {
			(void)ub_cancel(s->ctx, id);
			return dns_result_fail(name, qtype, DNS_SERVFAIL, ub_strerror(rc));
		}
	}
	return w.res;
}
