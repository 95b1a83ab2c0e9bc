/*
 * DKIM signing (RFC 6376 5, RFC 8463) and key generation.
 *
 * Input: a message we are about to send, pushed in chunks; the header
 * section is buffered (bounded), the body is canonicalized (relaxed) and
 * hashed as it arrives, once for every key that signs it. Output: the
 * DKIM-Signature field to prepend, folded at 78 columns. The private key is
 * the caller's, parsed once (struct dkim_privkey) and shared read-only
 * between threads; nothing here reads files.
 */
#include "mail/dkim.h"
#include "mail/dkim-private.h"
#include "lib/strutil.h"
#include "lib/xalloc.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Current practice (RFC 6376 5.4.1, M3AAWG): what a mailing list or a
   forwarder should not change. From is signed once more than it appears
   so that a From added later breaks the signature. */
static const char *const signed_headers[] = {
    "From",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
};

size_t dkim_sign_h_names(const struct dkim_msg *m, const char *also,
                         const char *hnames[DKIM_MAX_H_ENTRIES])
{
	size_t nh = 0;
	for (size_t k = 0; k <= ARRAY_SIZE(signed_headers); k++) {
		const char *name = k < ARRAY_SIZE(signed_headers) ? signed_headers[k] : also;
		if (name == NULL)
			break;
		size_t cnt = k == 0 ? 1 : 0; /* From once more than it appears */
		for (size_t i = 0; i < m->nfields; i++)
			if (dkim_field_is(m, &m->fields[i], name))
				cnt++;
		for (size_t c = 0; c < cnt && nh < DKIM_MAX_H_ENTRIES; c++)
			hnames[nh++] = name;
	}
	return nh;
}

struct dkim_privkey {
	atomic_uint refs;
	EVP_PKEY *pkey;
	bool ed25519;
};

struct dkim_signer {
	/* the key of dkim_signer_new; all NULL for an unkeyed signer */
	char *domain, *selector, *identity;
	time_t timestamp;
	uint64_t expire;
	struct dkim_privkey *key;
	/* the message, shared by every signature made over it */
	struct dkim_msg msg;
	struct dkim_body_canon bc;
	EVP_MD_CTX *bh_ctx;
	bool ended; /* the body hash is final: bh */
	unsigned char bh[EVP_MAX_MD_SIZE];
	unsigned bh_len;
};

static bool plain_name(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 253)
		return false;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != '_')
			return false;
	return true;
}

struct dkim_privkey *dkim_privkey_parse(const char *pem, const char **error_r)
{
	BIO *bio = pem != NULL ? BIO_new_mem_buf(pem, -1) : NULL;
	EVP_PKEY *pkey = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (pkey == NULL) {
		*error_r = "cannot read the private key";
		return NULL;
	}
	int id = EVP_PKEY_get_base_id(pkey);
	if (id != EVP_PKEY_ED25519 && id != EVP_PKEY_RSA) {
		EVP_PKEY_free(pkey);
		*error_r = "the key is neither RSA nor Ed25519";
		return NULL;
	}
	if (id == EVP_PKEY_RSA && EVP_PKEY_get_bits(pkey) < DKIM_MIN_RSA_BITS) {
		EVP_PKEY_free(pkey);
		*error_r = "RSA key shorter than 1024 bits";
		return NULL;
	}
	struct dkim_privkey *k = xcalloc(1, sizeof(*k));
	atomic_init(&k->refs, 1);
	k->pkey = pkey;
	k->ed25519 = id == EVP_PKEY_ED25519;
	return k;
}

struct dkim_privkey *dkim_privkey_ref(struct dkim_privkey *k)
{
	atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
	return k;
}

void dkim_privkey_unref(struct dkim_privkey **kp)
{
	struct dkim_privkey *k = *kp;
	if (k == NULL)
		return;
	*kp = NULL;
	if (atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

bool dkim_privkey_is_ed25519(const struct dkim_privkey *k)
{
	return k->ed25519;
}

int dkim_privkey_sign(const struct dkim_privkey *k, const unsigned char *hash, size_t hash_len,
                      unsigned char **sig_r, size_t *sig_len_r)
{
	unsigned char *sig = NULL;
	size_t sig_len = 0;
	if (k->ed25519) {
		EVP_MD_CTX *mctx = EVP_MD_CTX_new();
		if (mctx != NULL && EVP_DigestSignInit(mctx, NULL, NULL, NULL, k->pkey) == 1 &&
		    EVP_DigestSign(mctx, NULL, &sig_len, hash, hash_len) == 1) {
			sig = xmalloc(sig_len);
			if (EVP_DigestSign(mctx, sig, &sig_len, hash, hash_len) != 1)
				sig_len = 0;
		}
		EVP_MD_CTX_free(mctx);
	} else {
		EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(k->pkey, NULL);
		if (pctx != NULL && EVP_PKEY_sign_init(pctx) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) == 1 &&
		    EVP_PKEY_sign(pctx, NULL, &sig_len, hash, hash_len) == 1) {
			sig = xmalloc(sig_len);
			if (EVP_PKEY_sign(pctx, sig, &sig_len, hash, hash_len) != 1)
				sig_len = 0;
		}
		EVP_PKEY_CTX_free(pctx);
	}
	if (sig_len == 0) {
		free(sig);
		return -1;
	}
	*sig_r = sig;
	*sig_len_r = sig_len;
	return 0;
}

static void sign_emit(void *ctx, const char *data, size_t len)
{
	struct dkim_signer *s = ctx;
	if (EVP_DigestUpdate(s->bh_ctx, data, len) != 1)
		fatal("EVP_DigestUpdate failed");
}

/* The names of a signature: NULL, or the reason they cannot be used. */
static const char *check_names(const struct dkim_sign_params *p)
{
	if (!plain_name(p->domain) || !plain_name(p->selector))
		return "bad domain or selector";
	if (p->identity != NULL) {
		const char *at = strrchr(p->identity, '@');
		size_t dl = strlen(p->domain), il;
		if (at == NULL || strchr(p->identity, ';') != NULL || (il = strlen(at + 1)) < dl ||
		    strcasecmp(at + 1 + il - dl, p->domain) != 0 || (il > dl && at[il - dl] != '.'))
			return "identity is not within the domain";
		for (const char *c = p->identity; *c != '\0'; c++)
			if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || *c == '=')
				return "identity needs quoting";
	}
	return NULL;
}

struct dkim_signer *dkim_signer_new_unkeyed(void)
{
	struct dkim_signer *s = xcalloc(1, sizeof(*s));
	dkim_msg_init(&s->msg);
	dkim_body_canon_init(&s->bc, DKIM_CANON_RELAXED, sign_emit, s);
	s->bh_ctx = EVP_MD_CTX_new();
	if (s->bh_ctx == NULL || EVP_DigestInit_ex(s->bh_ctx, EVP_sha256(), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	return s;
}

struct dkim_signer *dkim_signer_new(const struct dkim_sign_params *p, const char **error_r)
{
	const char *bad = check_names(p);
	if (bad != NULL) {
		*error_r = bad;
		return NULL;
	}
	struct dkim_privkey *key =
	    p->key != NULL ? dkim_privkey_ref(p->key) : dkim_privkey_parse(p->key_pem, error_r);
	if (key == NULL)
		return NULL;
	struct dkim_signer *s = dkim_signer_new_unkeyed();
	s->domain = xstrdup(p->domain);
	s->selector = xstrdup(p->selector);
	s->identity = p->identity ? xstrdup(p->identity) : NULL;
	s->timestamp = p->timestamp;
	s->expire = p->expire;
	s->key = key;
	return s;
}

int dkim_signer_push(struct dkim_signer *s, const void *data, size_t len)
{
	const char *p = data;
	if (!s->msg.in_body) {
		size_t used = dkim_msg_push(&s->msg, p, len);
		p += used;
		len -= used;
	}
	if (s->msg.overflow)
		return -1;
	if (s->msg.in_body && len > 0)
		dkim_body_canon_push(&s->bc, p, len);
	return 0;
}

/* Append `piece` to the field, starting a new folded line when the current
   one would pass 78 columns. */
static void fold_add(char **out, size_t *len, size_t *cap, size_t *col, const char *piece,
                     bool space)
{
	size_t n = strlen(piece);
	if (*col + n + (space ? 1 : 0) > 78) {
		*out = xgrow(*out, cap, *len + 4 + n, 1);
		memcpy(*out + *len, "\r\n\t", 3);
		*len += 3;
		*col = 8; /* a tab counts as 8 columns for most readers */
	} else if (space) {
		*out = xgrow(*out, cap, *len + 2 + n, 1);
		(*out)[(*len)++] = ' ';
		(*col)++;
	}
	*out = xgrow(*out, cap, *len + n + 1, 1);
	memcpy(*out + *len, piece, n);
	*len += n;
	*col += n;
	(*out)[*len] = '\0';
}

/* The signature of the whole message with `key` and the names of `p` (checked). */
static char *sign_with(struct dkim_signer *s, const struct dkim_sign_params *p,
                       const struct dkim_privkey *key, const char **error_r)
{
	struct dkim_msg *m = &s->msg;
	char *f = NULL, *canon = NULL, *ret = NULL;
	size_t flen = 0, fcap = 0, col = 0, clen = 0, ccap = 0;
	unsigned char hh[EVP_MAX_MD_SIZE], *sig = NULL;
	unsigned hh_len;
	char tmp[512];
	EVP_MD_CTX *hctx = NULL;
	bool *used = NULL;

	dkim_msg_end_headers(m);
	if (m->overflow) {
		*error_r = "header section too large";
		return NULL;
	}
	size_t from = 0;
	for (size_t i = 0; i < m->nfields; i++)
		if (dkim_field_is(m, &m->fields[i], "From"))
			from++;
	if (from == 0) {
		*error_r = "message has no From header";
		return NULL;
	}
	if (!s->ended) {
		dkim_body_canon_finish(&s->bc);
		if (EVP_DigestFinal_ex(s->bh_ctx, s->bh, &s->bh_len) != 1)
			fatal("EVP_DigestFinal_ex failed");
		s->ended = true;
	}

	/* the field without the b= value */
	fold_add(&f, &flen, &fcap, &col, "DKIM-Signature:", false);
	fold_add(&f, &flen, &fcap, &col, "v=1;", true);
	fold_add(&f, &flen, &fcap, &col, key->ed25519 ? "a=ed25519-sha256;" : "a=rsa-sha256;",
	         true);
	fold_add(&f, &flen, &fcap, &col, "c=relaxed/relaxed;", true);
	snprintf(tmp, sizeof(tmp), "d=%s;", p->domain);
	fold_add(&f, &flen, &fcap, &col, tmp, true);
	snprintf(tmp, sizeof(tmp), "s=%s;", p->selector);
	fold_add(&f, &flen, &fcap, &col, tmp, true);
	if (p->identity != NULL) {
		snprintf(tmp, sizeof(tmp), "i=%s;", p->identity);
		fold_add(&f, &flen, &fcap, &col, tmp, true);
	}
	snprintf(tmp, sizeof(tmp), "t=%" PRIu64 ";", (uint64_t)p->timestamp);
	fold_add(&f, &flen, &fcap, &col, tmp, true);
	if (p->expire > 0) {
		snprintf(tmp, sizeof(tmp), "x=%" PRIu64 ";", (uint64_t)p->timestamp + p->expire);
		fold_add(&f, &flen, &fcap, &col, tmp, true);
	}
	/* h=: each name as often as it appears, From once more; folded at colons */
	const char *hnames[DKIM_MAX_H_ENTRIES];
	size_t nh = dkim_sign_h_names(m, NULL, hnames);
	for (size_t i = 0; i < nh; i++) {
		snprintf(tmp, sizeof(tmp), "%s%s%s", i == 0 ? "h=" : "", hnames[i],
		         i + 1 == nh ? ";" : ":");
		fold_add(&f, &flen, &fcap, &col, tmp, i == 0);
	}
	char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
	base64_encode(s->bh, s->bh_len, b64);
	snprintf(tmp, sizeof(tmp), "bh=%s;", b64);
	fold_add(&f, &flen, &fcap, &col, tmp, true);
	fold_add(&f, &flen, &fcap, &col, "b=", true);

	/* header hash: the signed fields bottom-up (RFC 6376 5.4.2), then this field */
	hctx = EVP_MD_CTX_new();
	if (hctx == NULL || EVP_DigestInit_ex(hctx, EVP_sha256(), NULL) != 1)
		fatal("EVP_DigestInit_ex failed");
	used = xcalloc(m->nfields ? m->nfields : 1, sizeof(*used));
	for (size_t h = 0; h < nh; h++) {
		for (size_t k = m->nfields; k-- > 0;) {
			struct dkim_field *fd = &m->fields[k];
			if (used[k] || !dkim_field_is(m, fd, hnames[h]))
				continue;
			used[k] = true;
			clen = 0;
			dkim_header_canon(DKIM_CANON_RELAXED, m->hdr + fd->off, fd->len, true,
			                  &canon, &clen, &ccap);
			EVP_DigestUpdate(hctx, canon, clen);
			break;
		}
	}
	clen = 0;
	dkim_header_canon(DKIM_CANON_RELAXED, f, flen, false, &canon, &clen, &ccap);
	EVP_DigestUpdate(hctx, canon, clen);
	if (EVP_DigestFinal_ex(hctx, hh, &hh_len) != 1)
		fatal("EVP_DigestFinal_ex failed");

	size_t sig_len = 0;
	if (dkim_privkey_sign(key, hh, hh_len, &sig, &sig_len) < 0) {
		*error_r = "signing failed";
		goto out;
	}
	char *bsig = xmalloc(4 * ((sig_len + 2) / 3) + 1);
	size_t bl = base64_encode(sig, sig_len, bsig);
	/* b= folded: fill each line to 78 columns */
	for (size_t i = 0; i < bl;) {
		size_t room = col < 78 ? 78 - col : 0;
		if (room == 0) {
			f = xgrow(f, &fcap, flen + 4, 1);
			memcpy(f + flen, "\r\n\t", 4);
			flen += 3;
			col = 8;
			continue;
		}
		size_t n = bl - i < room ? bl - i : room;
		f = xgrow(f, &fcap, flen + n + 1, 1);
		memcpy(f + flen, bsig + i, n);
		flen += n;
		col += n;
		i += n;
	}
	free(bsig);
	f = xgrow(f, &fcap, flen + 3, 1);
	memcpy(f + flen, "\r\n", 3);
	ret = f;
	f = NULL;
out:
	EVP_MD_CTX_free(hctx);
	free(used);
	free(sig);
	free(canon);
	free(f);
	return ret;
}

char *dkim_signer_finish(struct dkim_signer *s, const char **error_r)
{
	if (s->key == NULL) {
		*error_r = "the signer has no key";
		return NULL;
	}
	struct dkim_sign_params p = {
	    .domain = s->domain,
	    .selector = s->selector,
	    .identity = s->identity,
	    .timestamp = s->timestamp,
	    .expire = s->expire,
	};
	return sign_with(s, &p, s->key, error_r);
}

char *dkim_signer_sign(struct dkim_signer *s, const struct dkim_sign_params *p,
                       const char **error_r)
{
	const char *bad = check_names(p);
	if (bad != NULL) {
		*error_r = bad;
		return NULL;
	}
	if (p->key != NULL)
		return sign_with(s, p, p->key, error_r);
	struct dkim_privkey *key = dkim_privkey_parse(p->key_pem, error_r);
	if (key == NULL)
		return NULL;
	char *sig = sign_with(s, p, key, error_r);
	dkim_privkey_unref(&key);
	return sig;
}

void dkim_signer_free(struct dkim_signer **sp)
{
	struct dkim_signer *s = *sp;
	if (s == NULL)
		return;
	free(s->domain);
	free(s->selector);
	free(s->identity);
	dkim_privkey_unref(&s->key);
	EVP_MD_CTX_free(s->bh_ctx);
	dkim_msg_clear(&s->msg);
	free(s);
	*sp = NULL;
}

int dkim_keygen(enum dkim_keygen_alg alg, char **pem_r, char **txt_r, const char **error_r)
{
	EVP_PKEY *pk = alg == DKIM_KEYGEN_ED25519
	                   ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
	                   : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	unsigned char *pub = NULL;
	size_t pub_len = 0;
	BIO *bio = NULL;
	int ret = -1;

	if (pk == NULL) {
		*error_r = "key generation failed";
		return -1;
	}
	if (alg == DKIM_KEYGEN_ED25519) {
		/* RFC 8463 4.2: p= is the raw 32-octet public key */
		pub = xmalloc(32);
		pub_len = 32;
		if (EVP_PKEY_get_raw_public_key(pk, pub, &pub_len) != 1)
			goto out;
	} else {
		int n = i2d_PUBKEY(pk, NULL);
		if (n <= 0)
			goto out;
		pub = xmalloc((size_t)n);
		unsigned char *pp = pub;
		if (i2d_PUBKEY(pk, &pp) != n)
			goto out;
		pub_len = (size_t)n;
	}
	bio = BIO_new(BIO_s_mem());
	if (bio == NULL || PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) != 1)
		goto out;
	char *data;
	long dl = BIO_get_mem_data(bio, &data);
	if (dl <= 0)
		goto out;
	*pem_r = xstrndup(data, (size_t)dl);
	char *b64 = xmalloc(4 * ((pub_len + 2) / 3) + 1);
	base64_encode(pub, pub_len, b64);
	*txt_r =
	    xasprintf("v=DKIM1; k=%s; p=%s", alg == DKIM_KEYGEN_ED25519 ? "ed25519" : "rsa", b64);
	free(b64);
	ret = 0;
out:
	if (ret < 0)
		*error_r = "key encoding failed";
	BIO_free(bio);
	free(pub);
	EVP_PKEY_free(pk);
	return ret;
}
