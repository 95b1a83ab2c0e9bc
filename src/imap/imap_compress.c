/*
 * COMPRESS=DEFLATE (RFC 4978): a bufferevent filter that inflates what the
 * client sends and deflates what we send, raw deflate (no zlib header),
 * with a sync flush after each batch of output so every response reaches
 * the client at once.
 *
 * SECURITY: a few KiB of compressed input can inflate to gigabytes. The
 * input filter never writes more than the limit the bufferevent gives it
 * (its read high-water mark); the rest of the compressed input stays
 * where it is until the session has consumed what was inflated.
 */
#include "imap/imap_compress.h"

#include "lib/xalloc.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define CHUNK 16384

struct zctx {
	z_stream in, out;
	bool in_ok, out_ok;
};

static void zctx_free(void *arg)
{
	struct zctx *z = arg;
	if (z->in_ok)
		inflateEnd(&z->in);
	if (z->out_ok)
		deflateEnd(&z->out);
	free(z);
}

static enum bufferevent_filter_result z_inflate(struct evbuffer *src, struct evbuffer *dst,
						ev_ssize_t limit, enum bufferevent_flush_mode mode,
						void *arg)
{
	struct zctx *z = arg;
	size_t budget = limit > 0 ? (size_t)limit : CHUNK;
	size_t written = 0;
	while (evbuffer_get_length(src) > 0 && written < budget) {
		struct evbuffer_iovec in;
		if (evbuffer_peek(src, -1, NULL, &in, 1) < 1)
			break;
		struct evbuffer_iovec out;
		size_t want = budget - written < CHUNK ? budget - written : CHUNK;
		if (evbuffer_reserve_space(dst, want, &out, 1) < 1)
			return BEV_ERROR;
		z->in.next_in = in.iov_base;
		z->in.avail_in = (uInt)in.iov_len;
		z->in.next_out = out.iov_base;
		z->in.avail_out = (uInt)(out.iov_len < want ? out.iov_len : want);
		uInt before_out = z->in.avail_out;
		int r = inflate(&z->in, Z_SYNC_FLUSH);
		size_t consumed = in.iov_len - z->in.avail_in;
		size_t produced = before_out - z->in.avail_out;
		out.iov_len = produced;
		evbuffer_commit_space(dst, &out, 1);
		evbuffer_drain(src, consumed);
		written += produced;
		if (r == Z_STREAM_END || (r != Z_OK && r != Z_BUF_ERROR))
			return BEV_ERROR; /* corrupt stream, or the client ended it */
		if (consumed == 0 && produced == 0)
			break;
	}
	return written > 0 ? BEV_OK : BEV_NEED_MORE;
}

static enum bufferevent_filter_result z_deflate(struct evbuffer *src, struct evbuffer *dst,
						ev_ssize_t limit, enum bufferevent_flush_mode mode,
						void *arg)
{
	struct zctx *z = arg;
	if (evbuffer_get_length(src) == 0)
		return BEV_NEED_MORE;
	while (evbuffer_get_length(src) > 0) {
		struct evbuffer_iovec in;
		if (evbuffer_peek(src, -1, NULL, &in, 1) < 1)
			break;
		z->out.next_in = in.iov_base;
		z->out.avail_in = (uInt)in.iov_len;
		bool last = in.iov_len == evbuffer_get_length(src);
		do {
			struct evbuffer_iovec out;
			if (evbuffer_reserve_space(dst, CHUNK, &out, 1) < 1)
				return BEV_ERROR;
			z->out.next_out = out.iov_base;
			z->out.avail_out = (uInt)(out.iov_len < CHUNK ? out.iov_len : CHUNK);
			uInt before = z->out.avail_out;
			int r = deflate(&z->out, last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
			out.iov_len = before - z->out.avail_out;
			evbuffer_commit_space(dst, &out, 1);
			if (r == Z_STREAM_ERROR)
				return BEV_ERROR;
		} while (z->out.avail_out == 0);
		evbuffer_drain(src, in.iov_len);
	}
	return BEV_OK;
}

struct bufferevent *imap_compress_start(struct bufferevent *under)
{
	struct zctx *z = xcalloc(1, sizeof(*z));
	if (inflateInit2(&z->in, -15) != Z_OK) {
		free(z);
		return NULL;
	}
	z->in_ok = true;
	if (deflateInit2(&z->out, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) !=
	    Z_OK) {
		zctx_free(z);
		return NULL;
	}
	z->out_ok = true;
	struct bufferevent *bev =
		bufferevent_filter_new(under, z_inflate, z_deflate,
				       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS, zctx_free, z);
	if (bev == NULL)
		zctx_free(z);
	return bev;
}
