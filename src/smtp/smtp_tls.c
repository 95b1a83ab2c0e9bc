/* Server TLS context (see smtp_tls.h). */
#include "smtp/smtp_tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <stdio.h>
#include <unistd.h>

static void ssl_error(char *buf, size_t size, const char *what, const char *file)
{
	unsigned long e = ERR_get_error();
	char detail[256] = "";
	if (e != 0)
		ERR_error_string_n(e, detail, sizeof(detail));
	snprintf(buf, size, "%s %s: %s", what, file, detail);
	ERR_clear_error();
}

SSL_CTX *smtp_tls_ctx_new(const char *cert_file, const char *key_file, char *errbuf,
			  size_t errbufsize)
{
	if (cert_file == NULL || *cert_file == '\0' || key_file == NULL || *key_file == '\0') {
		snprintf(errbuf, errbufsize, "no certificate or key configured");
		return NULL;
	}
	if (access(cert_file, R_OK) < 0 || access(key_file, R_OK) < 0) {
		snprintf(errbuf, errbufsize, "cannot read %s or %s", cert_file, key_file);
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		ssl_error(errbuf, errbufsize, "SSL_CTX_new", "");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		ssl_error(errbuf, errbufsize, "cannot load certificate", cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		ssl_error(errbuf, errbufsize, "cannot load key", key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_error(errbuf, errbufsize, "key does not match certificate", cert_file);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

void smtp_tls_describe(SSL *ssl, char *buf, size_t bufsize)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	int alg_bits = 0;
	int bits = c != NULL ? SSL_CIPHER_get_bits(c, &alg_bits) : 0;
	snprintf(buf, bufsize, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl),
		 c != NULL ? SSL_CIPHER_get_name(c) : "unknown", bits, alg_bits);
}

struct bufferevent *smtp_tls_takeover(struct event_base *base, SSL_CTX *ctx,
				      struct bufferevent *plain)
{
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL)
		return NULL;
	struct bufferevent *tls = bufferevent_openssl_socket_new(
		base, bufferevent_getfd(plain), ssl, BUFFEREVENT_SSL_ACCEPTING,
		BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tls == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* the socket belongs to tls now: freeing the plain one must not close it (a
	   socket bufferevent closes only the descriptor it holds) */
	bufferevent_setfd(plain, -1);
	bufferevent_free(plain);
	return tls;
}

#define TLS_PIECE (64 * 1024)

void smtp_tls_add_coalesced(struct evbuffer *dst, struct evbuffer *src)
{
	size_t len = evbuffer_get_length(src);
	if (len <= TLS_PIECE) {
		evbuffer_pullup(src, -1);
		evbuffer_add_buffer(dst, src);
		return;
	}
	while (len > 0) {
		size_t n = len < TLS_PIECE ? len : TLS_PIECE;
		struct evbuffer_iovec v;
		if (evbuffer_reserve_space(dst, (ev_ssize_t)n, &v, 1) != 1 || v.iov_len < n)
			break;
		int got = evbuffer_remove(src, v.iov_base, n);
		v.iov_len = got > 0 ? (size_t)got : 0;
		evbuffer_commit_space(dst, &v, 1);
		if (got <= 0)
			break;
		len -= (size_t)got;
	}
	evbuffer_add_buffer(dst, src); /* anything left (out of memory above) */
}

void smtp_tls_coalesce(struct evbuffer *buf)
{
	if (evbuffer_get_length(buf) <= TLS_PIECE) {
		evbuffer_pullup(buf, -1);
		return;
	}
	struct evbuffer *tmp = evbuffer_new();
	if (tmp == NULL)
		return;
	evbuffer_add_buffer(tmp, buf); /* moves the chains, no copy */
	smtp_tls_add_coalesced(buf, tmp);
	evbuffer_free(tmp);
}
