/*
 * libFuzzer target: the outbound SMTP client reading replies from a hostile
 * server. The input is what the peer sends (greeting, EHLO reply, further
 * replies), fed through a socketpair whose sending side is then shut
 * down, so every read ends at once; the client reads replies until one
 * fails. The same bytes are also read as a message header (the Received:
 * for-clause the IDNA downgrade rewrites) and as a domain for IDNA.
 */
#include "queue/outbound.h"
#include "queue/smtp_client.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_INPUT_MAX 65536 /* below the socket buffer, so the write never blocks */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FUZZ_INPUT_MAX)
		return 0;
	size_t a = 0, b = 0;
	if (smtpc_trace_for((const char *)data, size, &a, &b) && !(a <= b && b < size))
		abort();
	if (size < 256) {
		char dom[256];
		memcpy(dom, data, size);
		dom[size] = '\0';
		const char *err = NULL;
		char *ascii = outbound_domain_ascii(dom, &err);
		if (ascii == NULL && err == NULL)
			abort();
		free(ascii);
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	int sz = 4 * FUZZ_INPUT_MAX;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	size_t off = 0;
	while (off < size) {
		ssize_t n = write(sv[1], data + off, size - off);
		if (n <= 0)
			abort();
		off += (size_t)n;
	}
	/* end of the peer's data; its side stays open to take our commands */
	shutdown(sv[1], SHUT_WR);
	struct smtpc *c = smtpc_from_fd(sv[0], 1000);
	struct smtpc_reply r;
	if (smtpc_read_reply(c, &r) && smtpc_ehlo(c, "fuzz.example", &r)) {
		(void)smtpc_ext(c);
		(void)smtpc_size_limit(c);
		for (int i = 0; i < 1000 && smtpc_read_reply(c, &r); i++)
			if (r.code < 200 || r.code > 599 || strlen(r.text) >= sizeof(r.text))
				abort();
	}
	smtpc_free(&c);
	close(sv[1]);
	return 0;
}
