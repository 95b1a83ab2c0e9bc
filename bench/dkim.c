/*
 * bench-dkim: DKIM signing and verification throughput of Postern's DKIM
 * code (src/mail/dkim*.c), for RSA-2048 and Ed25519 keys, on a 4 KiB and a
 * 1 MiB message. Run by bench/dkim-bench, which puts dkimpy beside it on the
 * same messages and keys.
 *
 *   bench-dkim DIR SECONDS
 *
 * Writes DIR/msg-4k.eml, DIR/msg-1m.eml, DIR/{rsa,ed25519}.pem and .txt
 * (key and its TXT record), then prints one JSON object per line:
 *   {"alg": "rsa", "size": "4k", "op": "sign", "msgs_per_sec": ...}
 * Each measurement runs for about SECONDS (bounded in count and time).
 *
 * A signature is made the way the server makes one for each submitted
 * message (src/smtp/auth_msg.c sign_work): the keys are stored as `postern
 * dkim keygen` stores them (DIR/ALG-data/dkim/bench.example/s1.{pem,key}),
 * each message asks the key cache for them (the stat() checks that a key
 * has not changed, the parsed key when it has not), then an unkeyed signer
 * is fed the message and signs with the cached key.
 */
#include "mail/dkim.h"
#include "store/dkimkeys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_ITER 1000000

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *make_message(size_t body)
{
	const char *head = "From: Alice <alice@bench.example>\r\n"
			   "To: Bob <bob@example.org>\r\n"
			   "Subject: a benchmark message\r\n"
			   "Date: Mon, 23 Nov 2026 00:00:00 +0000\r\n"
			   "Message-ID: <bench@bench.example>\r\n"
			   "MIME-Version: 1.0\r\n"
			   "Content-Type: text/plain; charset=us-ascii\r\n\r\n";
	size_t hl = strlen(head);
	char *m = malloc(hl + body + 1);
	memcpy(m, head, hl);
	size_t w = hl;
	static const char line[] = "The quick brown fox jumps over the lazy dog, again and again.\r\n";
	while (w + sizeof(line) - 1 <= hl + body) {
		memcpy(m + w, line, sizeof(line) - 1);
		w += sizeof(line) - 1;
	}
	m[w] = '\0';
	return m;
}

static int write_file(const char *dir, const char *name, const char *data, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		return -1;
	int ok = fwrite(data, 1, len, f) == len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

struct resolver_ctx {
	const char *txt;
};

static int resolve(void *ctx, const char *name, struct dkim_txt *out)
{
	(void)name; /* one key for every name */
	struct resolver_ctx *r = ctx;
	dkim_txt_add(out, r->txt, strlen(r->txt));
	return 0; /* DKIM_DNS_OK */
}

static char *sign_once(struct dkimkeys_cache *cache, const char *data_dir, const char *msg,
                       size_t len)
{
	const struct dkimkeys_set *keys = NULL;
	char *error = NULL;
	if (dkimkeys_cache_get(cache, data_dir, "bench.example", &keys, &error) < 0 ||
	    keys->n != 1 || keys->v[0].key == NULL) {
		fprintf(stderr, "bench-dkim: keys: %s\n", error != NULL ? error : "unusable");
		exit(1);
	}
	struct dkim_sign_params p = {.domain = keys->v[0].domain,
	                             .selector = keys->v[0].selector,
	                             .key = keys->v[0].key,
	                             .timestamp = 1795392000};
	const char *err = NULL;
	struct dkim_signer *s = dkim_signer_new_unkeyed();
	dkim_signer_push(s, msg, len);
	char *sig = dkim_signer_sign(s, &p, &err);
	dkim_signer_free(&s);
	dkimkeys_set_release(&keys);
	if (sig == NULL) {
		fprintf(stderr, "bench-dkim: sign: %s\n", err);
		exit(1);
	}
	return sig;
}

static void bench(const char *alg, const char *size, struct dkimkeys_cache *cache,
                  const char *data_dir, const char *txt, const char *msg, double seconds)
{
	size_t len = strlen(msg);
	/* sign */
	long n = 0;
	double t0 = now_s(), t;
	char *sig = NULL;
	do {
		free(sig);
		sig = sign_once(cache, data_dir, msg, len);
		n++;
		t = now_s();
	} while (t - t0 < seconds && n < MAX_ITER);
	printf("{\"alg\": \"%s\", \"size\": \"%s\", \"op\": \"sign\", \"msgs_per_sec\": %.1f}\n",
	       alg, size, (double)n / (t - t0));
	/* verify the signed message */
	size_t sl = strlen(sig);
	char *signed_msg = malloc(sl + len + 1);
	memcpy(signed_msg, sig, sl);
	memcpy(signed_msg + sl, msg, len + 1);
	struct resolver_ctx rc = {.txt = txt};
	struct dkim_key_resolver res = {.txt = resolve, .ctx = &rc};
	n = 0;
	t0 = now_s();
	do {
		struct dkim_verifier *v = dkim_verifier_new(&res, 1795392000);
		dkim_verifier_push(v, signed_msg, sl + len);
		const struct dkim_sig_result *r;
		size_t nr = dkim_verifier_finish(v, &r);
		if (nr != 1 || r[0].result != DKIM_PASS) {
			fprintf(stderr, "bench-dkim: our own signature did not verify (%s)\n",
				nr > 0 ? r[0].reason : "no signature");
			exit(1);
		}
		dkim_verifier_free(&v);
		n++;
		t = now_s();
	} while (t - t0 < seconds && n < MAX_ITER);
	printf("{\"alg\": \"%s\", \"size\": \"%s\", \"op\": \"verify\", \"msgs_per_sec\": %.1f}\n",
	       alg, size, (double)n / (t - t0));
	fflush(stdout);
	free(signed_msg);
	free(sig);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: bench-dkim DIR SECONDS\n");
		return 2;
	}
	const char *dir = argv[1];
	double seconds = atof(argv[2]);
	if (seconds <= 0 || seconds > 60)
		seconds = 2;
	char *m4k = make_message(4096), *m1m = make_message(1024 * 1024);
	const struct {
		const char *name;
		enum dkim_keygen_alg alg;
	} algs[] = {{"rsa", DKIM_KEYGEN_RSA2048}, {"ed25519", DKIM_KEYGEN_ED25519}};
	if (write_file(dir, "msg-4k.eml", m4k, strlen(m4k)) < 0 ||
	    write_file(dir, "msg-1m.eml", m1m, strlen(m1m)) < 0) {
		fprintf(stderr, "bench-dkim: cannot write into %s\n", dir);
		return 1;
	}
	struct dkimkeys_cache *cache = dkimkeys_cache_new(0);
	for (size_t i = 0; i < 2; i++) {
		char data_dir[4096];
		snprintf(data_dir, sizeof(data_dir), "%s/%s-data", dir, algs[i].name);
		struct dkimkey k;
		struct dkimkey_list l;
		char *error = NULL;
		if (mkdir(data_dir, 0700) < 0 ||
		    dkimkeys_create(data_dir, "bench.example", "s1", algs[i].alg, time(NULL), &k,
		                    &error) < 0 ||
		    dkimkeys_list(data_dir, "bench.example", true, true, &l, &error) < 0 ||
		    l.n != 1) {
			fprintf(stderr, "bench-dkim: keygen: %s\n", error != NULL ? error : "?");
			return 1;
		}
		dkimkey_clear(&k);
		/* the key for dkimpy */
		char name[64];
		snprintf(name, sizeof(name), "%s.pem", algs[i].name);
		write_file(dir, name, l.v[0].pem, strlen(l.v[0].pem));
		snprintf(name, sizeof(name), "%s.txt", algs[i].name);
		write_file(dir, name, l.v[0].txt, strlen(l.v[0].txt));
		/* files written within the last clock tick are read again by the cache until
		   the tick is over (dkimkeys.h): a server's keys are older than that */
		struct timespec settle = {0, 200 * 1000 * 1000};
		nanosleep(&settle, NULL);
		bench(algs[i].name, "4k", cache, data_dir, l.v[0].txt, m4k, seconds);
		bench(algs[i].name, "1m", cache, data_dir, l.v[0].txt, m1m, seconds);
		dkimkey_list_free(&l);
	}
	dkimkeys_cache_free(&cache);
	free(m4k);
	free(m1m);
	return 0;
}
