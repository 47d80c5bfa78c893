// SPDX-License-Identifier: MIT
/* Backend registry and the thin wrappers every model-code call goes through. */
#include "drivers/backend.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct backend {
	const struct backend_ops *ops;
	void *priv;
};

static const struct backend_ops *const backends[] = {
	&cpu_backend_ops,
};

const struct backend_ops *backend_find(const char *name)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (strcmp(backends[i]->name, name) == 0)
			return backends[i];
	}
	return NULL;
}

int backend_open(const char *name, const struct be_options *o, const struct be_step_limits *lim,
		 struct backend **out)
{
	const struct backend_ops *ops = backend_find(name);
	struct backend *be;
	int ret;

	*out = NULL;
	if (!ops) {
		log_error("backend", "unknown backend '%s' (built in: cpu)", name);
		return -ENOENT;
	}
	be = duet_calloc(1, sizeof(*be));
	if (!be)
		return -ENOMEM;
	be->ops = ops;
	ret = ops->create(o, lim, &be->priv);
	if (ret) {
		duet_free(be);
		return ret;
	}
	*out = be;
	return 0;
}

void backend_close(struct backend *be)
{
	if (!be)
		return;
	be->ops->destroy(be->priv);
	duet_free(be);
}

const char *backend_name(const struct backend *be)
{
	return be->ops->name;
}

void backend_describe(const struct backend *be, char *buf, size_t len)
{
	if (be->ops->describe)
		be->ops->describe(be->priv, buf, len);
	else
		snprintf(buf, len, "%s", be->ops->name);
}

#define CALL(op, ...) (be->ops->op ? be->ops->op(be->priv, __VA_ARGS__) : -EOPNOTSUPP)

int be_buf_alloc(struct backend *be, size_t bytes, enum be_mem_kind kind, struct be_buf **out)
{
	return CALL(buf_alloc, bytes, kind, out);
}

void be_buf_free(struct backend *be, struct be_buf *b)
{
	if (b)
		be->ops->buf_free(be->priv, b);
}

int be_upload(struct backend *be, struct be_buf *dst, size_t off, const void *src, size_t n)
{
	return CALL(upload, dst, off, src, n);
}

int be_download(struct backend *be, const struct be_buf *src, size_t off, void *dst, size_t n)
{
	return CALL(download, src, off, dst, n);
}

int be_weight_load(struct backend *be, const struct gguf_tensor *t, struct be_weight **out)
{
	return CALL(weight_load, t, out);
}

void be_weight_free(struct backend *be, struct be_weight *w)
{
	if (w)
		be->ops->weight_free(be->priv, w);
}

int be_kv_create(struct backend *be, const struct be_kv_layout *l, enum be_mem_kind kind,
		 struct be_kv **out)
{
	return CALL(kv_create, l, kind, out);
}

void be_kv_destroy(struct backend *be, struct be_kv *kv)
{
	if (kv)
		be->ops->kv_destroy(be->priv, kv);
}

int be_kv_region(struct backend *be, const struct be_kv *kv, int layer, struct be_region *out)
{
	return CALL(kv_region, kv, layer, out);
}

int be_kv_copy(struct backend *be, struct be_kv *kv, int32_t src, int32_t dst, int n_tokens)
{
	return CALL(kv_copy, kv, src, dst, n_tokens);
}

int be_step_begin(struct backend *be, const struct be_step *s)
{
	return CALL(step_begin, s);
}

int be_embed(struct backend *be, const struct be_weight *table, struct be_buf *out)
{
	return CALL(embed, table, out);
}

int be_rmsnorm(struct backend *be, const struct be_buf *in, const struct be_weight *w,
	       struct be_buf *out, int n_rows, int cols, float eps)
{
	return CALL(rmsnorm, in, w, out, n_rows, cols, eps);
}

int be_matmul(struct backend *be, const struct be_buf *in, const struct be_weight *w,
	      const struct be_weight *bias, struct be_buf *out, int n_rows)
{
	return CALL(matmul, in, w, bias, out, n_rows);
}

int be_rope(struct backend *be, struct be_buf *q, struct be_buf *k, int n_heads, int n_kv_heads,
	    int head_dim, int rope_dim, float base, bool neox)
{
	return CALL(rope, q, k, n_heads, n_kv_heads, head_dim, rope_dim, base, neox);
}

int be_kv_store(struct backend *be, struct be_kv *kv, int layer, const struct be_buf *k,
		const struct be_buf *v)
{
	return CALL(kv_store, kv, layer, k, v);
}

int be_attention(struct backend *be, const struct be_buf *q, const struct be_kv *kv, int layer,
		 struct be_buf *out, int n_heads)
{
	return CALL(attention, q, kv, layer, out, n_heads);
}

int be_swiglu(struct backend *be, const struct be_buf *gate, const struct be_buf *up,
	      struct be_buf *out, int cols)
{
	return CALL(swiglu, gate, up, out, cols);
}

int be_add(struct backend *be, struct be_buf *x, const struct be_buf *y, int cols)
{
	return CALL(add, x, y, cols);
}

int be_gather_out(struct backend *be, const struct be_buf *in, struct be_buf *out, int cols)
{
	return CALL(gather_out, in, out, cols);
}

int be_sync(struct backend *be)
{
	return be->ops->sync ? be->ops->sync(be->priv) : 0;
}
