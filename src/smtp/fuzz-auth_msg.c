/*
 * libFuzzer target: the header filter of auth_msg (src/smtp/auth_msg.c),
 * which holds back the client's header section and drops the
 * Authentication-Results fields carrying our authserv-id. The first input
 * octet chooses the chunk size. Properties: nothing is added, and filtering
 * the output again changes nothing (every forged field went in one pass).
 * No DNS: auth_msg_work() is not called.
 */
#include "smtp/auth_msg.h"
#include "lib/xalloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct out {
	char *buf;
	size_t len, cap;
};

static void collect(void *ctx, const char *data, size_t len)
{
	struct out *o = ctx;
	o->buf = xgrow(o->buf, &o->cap, o->len + len + 1, 1);
	memcpy(o->buf + o->len, data, len);
	o->len += len;
}

static bool run(const char *in, size_t len, size_t step, struct out *o)
{
	struct auth_params p = {.hostname = "mx.example.test", .data_dir = "/nonexistent",
				.helo = "h", .mail_from = ""};
	struct auth_msg *m = auth_msg_new(AUTH_MODE_VERIFY, &p, collect, o);
	for (size_t off = 0; off < len;) {
		size_t n = step > len - off ? len - off : step;
		auth_msg_push(m, in + off, n);
		off += n;
	}
	bool ok = auth_msg_end(m);
	auth_msg_free(&m);
	return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] + 1;
	const char *in = (const char *)data + 1;
	size_t len = size - 1;
	struct out a = {0}, b = {0};
	bool ok = run(in, len, step, &a);
	if (a.len > len)
		abort();
	if (ok) {
		if (!run(a.buf != NULL ? a.buf : "", a.len, 4096, &b))
			abort();
		if (a.len != b.len || (a.len > 0 && memcmp(a.buf, b.buf, a.len) != 0))
			abort();
	}
	free(a.buf);
	free(b.buf);
	return 0;
}
