// SPDX-License-Identifier: MIT
/*
 * The CPU backend: buffers are host memory, weights are used in place from
 * the memory-mapped model file (ggml block layouts are what the kernels
 * read), and each op is one parallel region of the thread pool over
 * disjoint output ranges.  Work too small to amortize waking the workers
 * runs on the calling thread alone.  Scratch (quantized activations,
 * attention scores, RoPE tables) is sized when weights and KV pools are
 * created, so a forward step allocates nothing.
 */
#include "drivers/backend.h"
#include "drivers/cpu/threadpool.h"
#include "kernels/cpu/kernels.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"
#include "runtime/model/model.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Below this many multiply-adds (or elements for cheap ops) an op runs on one thread. */
#define PAR_MIN_MACS (1 << 15)
#define PAR_MIN_ELEMS (1 << 14)

struct be_buf {
	void *p;
	size_t size;
	bool mapped; /* mmap'd (huge pages) rather than malloc'd */
};

struct be_weight {
	int ggml_type;
	int wt; /* enum kcpu_wtype; -1 for vectors (F32 only) */
	const void *data;
	int rows, cols; /* 1-D tensors: rows = 1 */
	size_t row_bytes;
};

struct be_kv {
	struct be_kv_layout l;
	uint8_t *mem;
	size_t block_bytes;
	size_t layer_bytes;
	size_t elem;
	bool mapped;
	size_t map_bytes;
	enum be_mem_kind kind; /* what the pool really is (after any fallback) */
	int fd;		       /* shared kinds: the memfd; else -1 */
};

struct cpu {
	struct tp *pool;
	int nth;
	const struct kcpu_ops *k;
	int *cpus;
	int n_cpus;
	struct be_step_limits lim;

	/* The current step's metadata (copies). */
	int n_tokens, n_seqs, n_out, n_table;
	int32_t *tokens, *pos, *seq, *slot, *table_start, *tables, *out_rows;

	/* Scratch. */
	uint8_t *qact;	 /* quantized activations [max_tokens][Q8_0 row of max_cols] */
	size_t qact_row; /* bytes per row of qact */
	int max_cols;
	float *scores; /* attention scores [nth][max_ctx] */
	int max_ctx;
	float *cs;  /* RoPE cos/sin [max_tokens][rope_dim] */
	int cs_cap; /* largest rope_dim cs has room for (the KV head_dim) */
	int cs_dim; /* rope_dim the table was built for; 0 = stale */
	float cs_base;
	uint64_t step_id, cs_step;
};

/* --- parallel helpers ------------------------------------------------------- */

/* [lo, hi) of n items for thread ith of nth, in chunks aligned to align. */
static void split(int n, int ith, int nth, int align, int *lo, int *hi)
{
	int chunks = (n + align - 1) / align;
	int per = chunks / nth, extra = chunks % nth;
	int c0 = ith * per + (ith < extra ? ith : extra);
	int c1 = c0 + per + (ith < extra);

	*lo = c0 * align < n ? c0 * align : n;
	*hi = c1 * align < n ? c1 * align : n;
}

static int threads_for(const struct cpu *c, double work, double min_work)
{
	int nth = (int)(work / min_work);

	if (nth < 1)
		return 1;
	return nth < c->nth ? nth : c->nth;
}

/* --- memory ----------------------------------------------------------------- */

static int cpu_buf_alloc(void *priv, size_t bytes, enum be_mem_kind kind, struct be_buf **out)
{
	struct be_buf *b;

	(void)priv;
	*out = NULL;
	if (kind == BE_MEM_DEVICE)
		return -EOPNOTSUPP;
	b = duet_calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->size = bytes ? bytes : 1;
	b->p = duet_calloc(1, b->size);
	if (!b->p) {
		duet_free(b);
		return -ENOMEM;
	}
	*out = b;
	return 0;
}

static void cpu_buf_free(void *priv, struct be_buf *b)
{
	(void)priv;
	duet_free(b->p);
	duet_free(b);
}

static int cpu_upload(void *priv, struct be_buf *dst, size_t off, const void *src, size_t n)
{
	(void)priv;
	if (off > dst->size || n > dst->size - off)
		return -ERANGE;
	memcpy((uint8_t *)dst->p + off, src, n);
	return 0;
}

static int cpu_download(void *priv, const struct be_buf *src, size_t off, void *dst, size_t n)
{
	(void)priv;
	if (off > src->size || n > src->size - off)
		return -ERANGE;
	memcpy(dst, (const uint8_t *)src->p + off, n);
	return 0;
}

/* --- weights ---------------------------------------------------------------- */

static int cpu_weight_load(void *priv, const struct gguf_tensor *t, struct be_weight **out)
{
	struct cpu *c = priv;
	struct be_weight *w;
	int wt = kcpu_wtype_of_ggml(t->type);

	*out = NULL;
	if (t->n_dims > 2 || t->ne[0] > INT32_MAX || t->ne[1] > INT32_MAX)
		return -EINVAL;
	if (t->n_dims == 1 && t->type != GGML_TYPE_F32) {
		log_error("cpu", "vector '%s' must be F32, not %s", t->name,
			  ggml_type_name(t->type));
		return -EINVAL;
	}
	if (wt < 0) {
		log_error("cpu", "'%s': weight type %s is not supported by the CPU backend",
			  t->name, ggml_type_name(t->type));
		return -EOPNOTSUPP;
	}
	w = duet_calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->ggml_type = t->type;
	w->wt = wt;
	w->data = t->data;
	w->cols = (int)t->ne[0];
	w->rows = t->n_dims == 2 ? (int)t->ne[1] : 1;
	w->row_bytes = t->size / (size_t)w->rows;

	/* Grow the quantized-activation scratch to this matrix's input width. */
	if (kcpu_act_of(wt) == KCPU_ACT_Q8_0 && w->cols > c->max_cols) {
		size_t row = KCPU_Q8_0_ROW_BYTES(w->cols);
		uint8_t *q = duet_calloc((size_t)c->lim.max_tokens, row);
		if (!q) {
			duet_free(w);
			return -ENOMEM;
		}
		duet_free(c->qact);
		c->qact = q;
		c->qact_row = row;
		c->max_cols = w->cols;
	}
	*out = w;
	return 0;
}

static void cpu_weight_free(void *priv, struct be_weight *w)
{
	(void)priv;
	duet_free(w);
}

/* --- KV pool ---------------------------------------------------------------- */

/*
 * The pool in a memfd mapped MAP_SHARED, so that a transfer driver can hand
 * the fd to a peer process (the prefill side maps the decode side's pool).
 * Huge pages when asked and available, else normal pages with a warning.
 */
static int kv_shared_map(struct be_kv *kv, size_t total, bool huge)
{
	int fd = -1;
	void *m;

	if (huge) {
		fd = memfd_create("duet-kv", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
		if (fd >= 0 && ftruncate(fd, (off_t)total) != 0) {
			close(fd);
			fd = -1;
		}
		if (fd >= 0) {
			m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (m == MAP_FAILED) {
				close(fd);
				fd = -1;
			} else {
				kv->kind = BE_MEM_HOST_SHARED_HUGE;
				goto mapped;
			}
		}
		log_warn("cpu", "no huge pages for a %zu MiB shared KV pool; using normal pages",
			 total >> 20);
	}
	fd = memfd_create("duet-kv", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		int ret = -errno;

		log_error("cpu", "memfd_create for a %zu MiB KV pool: %s", total >> 20,
			  strerror(errno));
		return ret;
	}
	if (ftruncate(fd, (off_t)total) != 0 ||
	    (m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		int ret = -errno;

		log_error("cpu", "a %zu MiB shared KV pool: %s", total >> 20, strerror(errno));
		close(fd);
		return ret;
	}
	kv->kind = BE_MEM_HOST_SHARED;
mapped:
	/* A peer that maps it relies on its size: sealed against shrinking and growing. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
		log_warn("cpu", "sealing the shared KV pool: %s", strerror(errno));
	kv->mem = m;
	kv->mapped = true;
	kv->map_bytes = total;
	kv->fd = fd;
	return 0;
}

static int cpu_kv_create(void *priv, const struct be_kv_layout *l, enum be_mem_kind kind,
			 struct be_kv **out)
{
	struct cpu *c = priv;
	struct be_kv *kv;
	size_t total;
	int ctx;

	*out = NULL;
	if (l->n_layers < 1 || l->n_blocks < 1 || l->block_tokens < 1 || l->n_kv_heads < 1 ||
	    l->head_dim < 1 || (l->dtype != GGML_TYPE_F16 && l->dtype != GGML_TYPE_F32))
		return -EINVAL;
	if (kind == BE_MEM_DEVICE)
		return -EOPNOTSUPP;
	kv = duet_calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	kv->l = *l;
	kv->elem = l->dtype == GGML_TYPE_F16 ? 2 : 4;
	kv->block_bytes = 2 * (size_t)l->block_tokens * l->n_kv_heads * l->head_dim * kv->elem;
	kv->layer_bytes = kv->block_bytes * (size_t)l->n_blocks;
	if (__builtin_mul_overflow(kv->layer_bytes, (size_t)l->n_layers, &total))
		goto nomem;
	kv->fd = -1;
	kv->kind = BE_MEM_HOST;
	if (kind == BE_MEM_HOST_HUGE) {
		void *m = mmap(NULL, total, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (m != MAP_FAILED) {
			kv->mem = m;
			kv->mapped = true;
			kv->map_bytes = total;
			kv->kind = BE_MEM_HOST_HUGE;
		} else {
			log_warn("cpu", "no huge pages for a %zu MiB KV pool; using normal pages",
				 total >> 20);
		}
	} else if (kind == BE_MEM_HOST_SHARED || kind == BE_MEM_HOST_SHARED_HUGE) {
		int ret = kv_shared_map(kv, total, kind == BE_MEM_HOST_SHARED_HUGE);

		if (ret) {
			duet_free(kv);
			return ret;
		}
	}
	if (!kv->mem)
		kv->mem = duet_calloc(1, total);
	if (!kv->mem)
		goto nomem;

	/* Attention scores scratch: one row of the longest possible context per thread. */
	ctx = l->n_blocks * l->block_tokens;
	if (ctx > c->max_ctx) {
		float *s = duet_calloc((size_t)c->nth * (size_t)ctx, sizeof(float));
		if (!s)
			goto free_mem;
		duet_free(c->scores);
		c->scores = s;
		c->max_ctx = ctx;
	}
	/* RoPE tables: rope_dim <= head_dim. */
	if (l->head_dim > c->cs_cap) {
		float *cs =
			duet_calloc((size_t)c->lim.max_tokens * (size_t)l->head_dim, sizeof(float));
		if (!cs)
			goto free_mem;
		duet_free(c->cs);
		c->cs = cs;
		c->cs_cap = l->head_dim;
		c->cs_step = 0;
	}
	*out = kv;
	return 0;

free_mem:
	if (kv->mapped)
		munmap(kv->mem, kv->map_bytes);
	else
		duet_free(kv->mem);
	if (kv->fd >= 0)
		close(kv->fd);
nomem:
	duet_free(kv);
	return -ENOMEM;
}

static void cpu_kv_destroy(void *priv, struct be_kv *kv)
{
	(void)priv;
	if (kv->mapped)
		munmap(kv->mem, kv->map_bytes);
	else
		duet_free(kv->mem);
	if (kv->fd >= 0)
		close(kv->fd);
	duet_free(kv);
}

static int cpu_kv_region(void *priv, const struct be_kv *kv, int layer, struct be_region *out)
{
	(void)priv;
	if (layer < 0 || layer >= kv->l.n_layers)
		return -EINVAL;
	out->base = kv->mem + (size_t)layer * kv->layer_bytes;
	out->bytes = kv->layer_bytes;
	out->kind = kv->kind;
	out->fd = kv->fd;
	out->fd_offset = (size_t)layer * kv->layer_bytes;
	return 0;
}

static int cpu_kv_copy(void *priv, struct be_kv *kv, int32_t src, int32_t dst, int n_tokens)
{
	const struct be_kv_layout *l = &kv->l;
	size_t rows = (size_t)n_tokens * l->n_kv_heads * l->head_dim * kv->elem;
	size_t half = kv->block_bytes / 2;

	(void)priv;
	if (src < 0 || src >= l->n_blocks || dst < 0 || dst >= l->n_blocks || src == dst ||
	    n_tokens < 0 || n_tokens > l->block_tokens)
		return -EINVAL;
	for (int layer = 0; layer < l->n_layers; layer++) {
		uint8_t *base = kv->mem + (size_t)layer * kv->layer_bytes;
		uint8_t *s = base + (size_t)src * kv->block_bytes;
		uint8_t *d = base + (size_t)dst * kv->block_bytes;
		memcpy(d, s, rows);
		memcpy(d + half, s + half, rows);
	}
	return 0;
}

/* --- step ------------------------------------------------------------------- */

static int cpu_step_begin(void *priv, const struct be_step *s)
{
	struct cpu *c = priv;

	if (s->n_tokens < 1 || s->n_tokens > c->lim.max_tokens || s->n_seqs < 1 ||
	    s->n_seqs > c->lim.max_seqs || s->n_table < 0 || s->n_table > c->lim.max_table ||
	    s->n_out < 0 || s->n_out > s->n_tokens)
		return -EINVAL;
	for (int i = 0; i < s->n_tokens; i++) {
		if (s->seq[i] < 0 || s->seq[i] >= s->n_seqs || s->pos[i] < 0)
			return -EINVAL;
	}
	for (int i = 0; i < s->n_out; i++) {
		if (s->out_rows[i] < 0 || s->out_rows[i] >= s->n_tokens)
			return -EINVAL;
	}
	/* Tables are concatenated in sequence order: starts ascend and stay inside. */
	for (int i = 0; i < s->n_seqs; i++) {
		if (s->table_start[i] < 0 || s->table_start[i] > s->n_table ||
		    (i > 0 && s->table_start[i] < s->table_start[i - 1]))
			return -EINVAL;
	}
	memcpy(c->tokens, s->tokens, sizeof(int32_t) * (size_t)s->n_tokens);
	memcpy(c->pos, s->pos, sizeof(int32_t) * (size_t)s->n_tokens);
	memcpy(c->seq, s->seq, sizeof(int32_t) * (size_t)s->n_tokens);
	memcpy(c->slot, s->slot, sizeof(int32_t) * (size_t)s->n_tokens);
	memcpy(c->table_start, s->table_start, sizeof(int32_t) * (size_t)s->n_seqs);
	memcpy(c->tables, s->block_tables, sizeof(int32_t) * (size_t)s->n_table);
	memcpy(c->out_rows, s->out_rows, sizeof(int32_t) * (size_t)s->n_out);
	c->n_tokens = s->n_tokens;
	c->n_seqs = s->n_seqs;
	c->n_table = s->n_table;
	c->n_out = s->n_out;
	c->step_id++;
	return 0;
}

/* --- ops ---------------------------------------------------------------------- */

struct embed_job {
	struct cpu *c;
	const struct be_weight *w;
	float *out;
};

static void embed_fn(void *p, int ith, int nth)
{
	struct embed_job *j = p;
	int lo, hi;

	split(j->c->n_tokens, ith, nth, 1, &lo, &hi);
	for (int i = lo; i < hi; i++) {
		int32_t t = j->c->tokens[i];
		float *dst = j->out + (size_t)i * j->w->cols;
		if (t < 0 || t >= j->w->rows) {
			/* Token ids are validated by the caller; never read out of bounds. */
			memset(dst, 0, sizeof(float) * (size_t)j->w->cols);
			continue;
		}
		j->c->k->get_row[j->w->wt](
			(const uint8_t *)j->w->data + (size_t)t * j->w->row_bytes, dst, j->w->cols);
	}
}

static int cpu_embed(void *priv, const struct be_weight *table, struct be_buf *out)
{
	struct cpu *c = priv;
	struct embed_job j = { c, table, out->p };

	if (out->size < sizeof(float) * (size_t)c->n_tokens * table->cols)
		return -ERANGE;
	tp_run(c->pool, embed_fn, &j,
	       threads_for(c, (double)c->n_tokens * table->cols, PAR_MIN_ELEMS));
	return 0;
}

struct norm_job {
	struct cpu *c;
	const float *in;
	const float *w;
	float *out;
	int n_rows, cols;
	float eps;
};

static void rmsnorm_fn(void *p, int ith, int nth)
{
	struct norm_job *j = p;
	int lo, hi;

	split(j->n_rows, ith, nth, 1, &lo, &hi);
	for (int i = lo; i < hi; i++)
		j->c->k->rmsnorm(j->in + (size_t)i * j->cols, j->w, j->out + (size_t)i * j->cols,
				 j->cols, j->eps);
}

static int cpu_rmsnorm(void *priv, const struct be_buf *in, const struct be_weight *w,
		       struct be_buf *out, int n_rows, int cols, float eps)
{
	struct cpu *c = priv;
	struct norm_job j = { c, in->p, w->data, out->p, n_rows, cols, eps };
	size_t need = sizeof(float) * (size_t)n_rows * cols;

	if (w->cols != cols || in->size < need || out->size < need)
		return -ERANGE;
	tp_run(c->pool, rmsnorm_fn, &j, threads_for(c, (double)n_rows * cols, PAR_MIN_ELEMS));
	return 0;
}

struct mm_job {
	struct cpu *c;
	const struct be_weight *w;
	const struct be_weight *bias;
	const float *in;
	float *out;
	int n;
	struct kcpu_matmul_args a;
};

static void quantize_fn(void *p, int ith, int nth)
{
	struct mm_job *j = p;
	int lo, hi;

	split(j->n, ith, nth, 1, &lo, &hi);
	for (int i = lo; i < hi; i++)
		j->c->k->quantize_q8_0(j->in + (size_t)i * j->w->cols,
				       j->c->qact + (size_t)i * j->c->qact_row, j->w->cols);
}

static void matmul_fn(void *p, int ith, int nth)
{
	struct mm_job *j = p;
	int lo, hi;

	/* Rows in multiples of 16 so that kernels keep their row tiles whole. */
	split(j->w->rows, ith, nth, 16, &lo, &hi);
	if (lo >= hi)
		return;
	j->c->k->matmul[j->w->wt](&j->a, lo, hi);
	if (j->bias) {
		const float *b = j->bias->data;
		for (int i = 0; i < j->n; i++) {
			float *y = j->out + (size_t)i * j->w->rows;
			for (int r = lo; r < hi; r++)
				y[r] += b[r];
		}
	}
}

static int cpu_matmul(void *priv, const struct be_buf *in, const struct be_weight *w,
		      const struct be_weight *bias, struct be_buf *out, int n_rows)
{
	struct cpu *c = priv;
	struct mm_job j = { c, w, bias, in->p, out->p, n_rows, { 0 } };
	double macs = (double)n_rows * w->rows * w->cols;

	if (n_rows < 1 || n_rows > c->lim.max_tokens ||
	    in->size < sizeof(float) * (size_t)n_rows * w->cols ||
	    out->size < sizeof(float) * (size_t)n_rows * w->rows || (bias && bias->cols != w->rows))
		return -ERANGE;
	j.a.w = w->data;
	j.a.w_row_bytes = w->row_bytes;
	j.a.y = out->p;
	j.a.ldy = (size_t)w->rows;
	j.a.n = n_rows;
	j.a.k = w->cols;
	if (kcpu_act_of(w->wt) == KCPU_ACT_Q8_0) {
		tp_run(c->pool, quantize_fn, &j,
		       threads_for(c, (double)n_rows * w->cols, PAR_MIN_ELEMS));
		j.a.x = c->qact;
		j.a.x_row_bytes = c->qact_row;
	} else {
		j.a.x = in->p;
		j.a.x_row_bytes = sizeof(float) * (size_t)w->cols;
	}
	tp_run(c->pool, matmul_fn, &j, threads_for(c, macs, PAR_MIN_MACS));
	return 0;
}

struct rope_job {
	struct cpu *c;
	float *q, *k;
	int n_heads, n_kv_heads, head_dim, rope_dim;
	bool neox;
};

static void rope_table(struct cpu *c, int rope_dim, float base)
{
	if (c->cs_step == c->step_id && c->cs_dim == rope_dim && c->cs_base == base)
		return;
	/* theta_i = pos * base^(-2i / rope_dim), in double for accuracy at long positions. */
	double inv_freq[MODEL_MAX_HEAD_DIM / 2];
	for (int i = 0; i < rope_dim / 2; i++)
		inv_freq[i] = pow((double)base, -2.0 * i / rope_dim);
	for (int t = 0; t < c->n_tokens; t++) {
		float *cs = c->cs + (size_t)t * rope_dim;
		for (int i = 0; i < rope_dim / 2; i++) {
			double theta = (double)c->pos[t] * inv_freq[i];
			cs[2 * i] = (float)cos(theta);
			cs[2 * i + 1] = (float)sin(theta);
		}
	}
	c->cs_step = c->step_id;
	c->cs_dim = rope_dim;
	c->cs_base = base;
}

static void rope_fn(void *p, int ith, int nth)
{
	struct rope_job *j = p;
	int lo, hi;

	split(j->c->n_tokens, ith, nth, 1, &lo, &hi);
	for (int t = lo; t < hi; t++) {
		const float *cs = j->c->cs + (size_t)t * j->rope_dim;
		j->c->k->rope(j->q + (size_t)t * j->n_heads * j->head_dim, j->n_heads, j->head_dim,
			      j->rope_dim, cs, j->neox);
		j->c->k->rope(j->k + (size_t)t * j->n_kv_heads * j->head_dim, j->n_kv_heads,
			      j->head_dim, j->rope_dim, cs, j->neox);
	}
}

static int cpu_rope(void *priv, struct be_buf *q, struct be_buf *k, int n_heads, int n_kv_heads,
		    int head_dim, int rope_dim, float base, bool neox)
{
	struct cpu *c = priv;
	struct rope_job j = { c, q->p, k->p, n_heads, n_kv_heads, head_dim, rope_dim, neox };

	if (rope_dim > head_dim || rope_dim % 2 || rope_dim > c->cs_cap ||
	    rope_dim > MODEL_MAX_HEAD_DIM)
		return -EINVAL;
	rope_table(c, rope_dim, base);
	tp_run(c->pool, rope_fn, &j,
	       threads_for(c, (double)c->n_tokens * (n_heads + n_kv_heads) * rope_dim,
			   PAR_MIN_ELEMS));
	return 0;
}

struct kv_job {
	struct cpu *c;
	struct be_kv *kv;
	int layer;
	const float *k, *v;
};

static void kv_store_fn(void *p, int ith, int nth)
{
	struct kv_job *j = p;
	const struct be_kv_layout *l = &j->kv->l;
	int row = l->n_kv_heads * l->head_dim;
	size_t half = j->kv->block_bytes / 2;
	uint8_t *layer = j->kv->mem + (size_t)j->layer * j->kv->layer_bytes;
	int lo, hi;

	split(j->c->n_tokens, ith, nth, 1, &lo, &hi);
	for (int t = lo; t < hi; t++) {
		int32_t slot = j->c->slot[t];
		uint8_t *blk = layer + (size_t)(slot / l->block_tokens) * j->kv->block_bytes;
		size_t at = (size_t)(slot % l->block_tokens) * row * j->kv->elem;
		const float *ks = j->k + (size_t)t * row, *vs = j->v + (size_t)t * row;

		if (j->kv->elem == 2) {
			j->c->k->to_f16(ks, (uint16_t *)(blk + at), row);
			j->c->k->to_f16(vs, (uint16_t *)(blk + half + at), row);
		} else {
			memcpy(blk + at, ks, sizeof(float) * (size_t)row);
			memcpy(blk + half + at, vs, sizeof(float) * (size_t)row);
		}
	}
}

static int cpu_kv_store(void *priv, struct be_kv *kv, int layer, const struct be_buf *k,
			const struct be_buf *v)
{
	struct cpu *c = priv;
	struct kv_job j = { c, kv, layer, k->p, v->p };
	int row = kv->l.n_kv_heads * kv->l.head_dim;
	int n_slots = kv->l.n_blocks * kv->l.block_tokens;

	if (layer < 0 || layer >= kv->l.n_layers ||
	    k->size < sizeof(float) * (size_t)c->n_tokens * row ||
	    v->size < sizeof(float) * (size_t)c->n_tokens * row)
		return -ERANGE;
	for (int t = 0; t < c->n_tokens; t++) {
		if (c->slot[t] < 0 || c->slot[t] >= n_slots)
			return -ERANGE;
	}
	tp_run(c->pool, kv_store_fn, &j,
	       threads_for(c, (double)c->n_tokens * row * 2, PAR_MIN_ELEMS));
	return 0;
}

struct attn_job {
	struct cpu *c;
	const float *q;
	const struct be_kv *kv;
	int layer, n_heads;
	float *out;
};

static void attention_fn(void *p, int ith, int nth)
{
	struct attn_job *j = p;
	struct cpu *c = j->c;
	const struct be_kv_layout *l = &j->kv->l;
	int group = j->n_heads / l->n_kv_heads;
	int pairs = c->n_tokens * j->n_heads;
	const uint8_t *layer = j->kv->mem + (size_t)j->layer * j->kv->layer_bytes;
	struct kcpu_attn_args a = {
		.v_offset = j->kv->block_bytes / 2,
		.block_bytes = j->kv->block_bytes,
		.row_stride = (size_t)l->n_kv_heads * l->head_dim * j->kv->elem,
		.block_tokens = l->block_tokens,
		.head_dim = l->head_dim,
		.kv_f16 = j->kv->elem == 2,
		.scale = 1.0f / sqrtf((float)l->head_dim),
		.scores = c->scores + (size_t)ith * c->max_ctx,
	};
	int lo, hi;

	split(pairs, ith, nth, 1, &lo, &hi);
	for (int pi = lo; pi < hi; pi++) {
		int t = pi / j->n_heads, h = pi % j->n_heads;
		a.q = j->q + ((size_t)t * j->n_heads + h) * l->head_dim;
		a.out = j->out + ((size_t)t * j->n_heads + h) * l->head_dim;
		a.k_head = layer + (size_t)(h / group) * l->head_dim * j->kv->elem;
		a.block_table = c->tables + c->table_start[c->seq[t]];
		a.n_kv = c->pos[t] + 1;
		c->k->attn_head(&a);
	}
}

static int cpu_attention(void *priv, const struct be_buf *q, const struct be_kv *kv, int layer,
			 struct be_buf *out, int n_heads)
{
	struct cpu *c = priv;
	struct attn_job j = { c, q->p, kv, layer, n_heads, out->p };
	size_t need = sizeof(float) * (size_t)c->n_tokens * n_heads * kv->l.head_dim;
	double work = 0;

	if (layer < 0 || layer >= kv->l.n_layers || n_heads % kv->l.n_kv_heads || q->size < need ||
	    out->size < need)
		return -ERANGE;
	/* Every context position a token reads must be inside its block table. */
	for (int t = 0; t < c->n_tokens; t++) {
		int s = c->seq[t];
		int end = s + 1 < c->n_seqs ? c->table_start[s + 1] : c->n_table;
		int blocks = (c->pos[t] + kv->l.block_tokens) / kv->l.block_tokens;
		if (c->pos[t] + 1 > c->max_ctx || c->table_start[s] < 0 ||
		    c->table_start[s] + blocks > end)
			return -ERANGE;
		for (int b = 0; b < blocks; b++) {
			int32_t id = c->tables[c->table_start[s] + b];
			if (id < 0 || id >= kv->l.n_blocks)
				return -ERANGE;
		}
		work += (double)(c->pos[t] + 1) * n_heads * kv->l.head_dim * 2;
	}
	tp_run(c->pool, attention_fn, &j, threads_for(c, work, PAR_MIN_MACS));
	return 0;
}

struct elem_job {
	struct cpu *c;
	float *x;
	const float *a, *b;
	size_t n;
	int op; /* 0 add, 1 swiglu */
};

static void elem_fn(void *p, int ith, int nth)
{
	struct elem_job *j = p;
	int lo, hi;

	/* Split in whole 64-element chunks so vector tails never depend on the split. */
	split((int)((j->n + 63) / 64), ith, nth, 1, &lo, &hi);
	size_t s = (size_t)lo * 64, e = (size_t)hi * 64 < j->n ? (size_t)hi * 64 : j->n;
	if (s >= e)
		return;
	if (j->op == 0)
		j->c->k->add(j->x + s, j->a + s, (int)(e - s));
	else
		j->c->k->swiglu(j->a + s, j->b + s, j->x + s, (int)(e - s));
}

static int cpu_swiglu(void *priv, const struct be_buf *gate, const struct be_buf *up,
		      struct be_buf *out, int cols)
{
	struct cpu *c = priv;
	size_t n = (size_t)c->n_tokens * cols;
	struct elem_job j = { c, out->p, gate->p, up->p, n, 1 };

	if (gate->size < n * sizeof(float) || up->size < n * sizeof(float) ||
	    out->size < n * sizeof(float))
		return -ERANGE;
	tp_run(c->pool, elem_fn, &j, threads_for(c, (double)n, PAR_MIN_ELEMS));
	return 0;
}

static int cpu_add(void *priv, struct be_buf *x, const struct be_buf *y, int cols)
{
	struct cpu *c = priv;
	size_t n = (size_t)c->n_tokens * cols;
	struct elem_job j = { c, x->p, y->p, NULL, n, 0 };

	if (x->size < n * sizeof(float) || y->size < n * sizeof(float))
		return -ERANGE;
	tp_run(c->pool, elem_fn, &j, threads_for(c, (double)n, PAR_MIN_ELEMS * 4));
	return 0;
}

static int cpu_gather_out(void *priv, const struct be_buf *in, struct be_buf *out, int cols)
{
	struct cpu *c = priv;
	size_t row = sizeof(float) * (size_t)cols;

	if (in->size < row * (size_t)c->n_tokens || out->size < row * (size_t)c->n_out)
		return -ERANGE;
	for (int i = 0; i < c->n_out; i++)
		memmove((uint8_t *)out->p + (size_t)i * row,
			(const uint8_t *)in->p + (size_t)c->out_rows[i] * row, row);
	return 0;
}

static int cpu_sync(void *priv)
{
	(void)priv; /* ops run synchronously */
	return 0;
}

/* --- life cycle --------------------------------------------------------------- */

static void cpu_destroy(void *priv)
{
	struct cpu *c = priv;

	if (!c)
		return;
	tp_destroy(c->pool);
	duet_free(c->qact);
	duet_free(c->scores);
	duet_free(c->cs);
	duet_free(c->tokens);
	duet_free(c->pos);
	duet_free(c->seq);
	duet_free(c->slot);
	duet_free(c->table_start);
	duet_free(c->tables);
	duet_free(c->out_rows);
	duet_free(c->cpus);
	duet_free(c);
}

static const struct kcpu_ops *pick_isa(const char *isa)
{
	if (!isa || !*isa)
		return kcpu_best();
	for (int i = 0; i < KCPU_ISA_COUNT; i++) {
		if (strcmp(isa, kcpu_isa_name(i)) == 0)
			return kcpu_get(i);
	}
	return NULL;
}

static int cpu_create(const struct be_options *o, const struct be_step_limits *lim, void **priv)
{
	struct cpu *c;
	int ret = -ENOMEM;

	*priv = NULL;
	if (lim->max_tokens < 1 || lim->max_seqs < 1 || lim->max_table < 1)
		return -EINVAL;
	c = duet_calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->lim = *lim;
	c->k = pick_isa(o->isa);
	if (!c->k) {
		log_error("cpu", "instruction set '%s' is not available on this CPU or build",
			  o->isa);
		ret = -EOPNOTSUPP;
		goto destroy;
	}
	c->nth = o->threads > 0 ? o->threads : (o->n_cpus > 0 ? o->n_cpus : 1);
	if (o->cpus && o->n_cpus > 0) {
		c->cpus = duet_calloc((size_t)o->n_cpus, sizeof(int));
		if (!c->cpus)
			goto destroy;
		memcpy(c->cpus, o->cpus, sizeof(int) * (size_t)o->n_cpus);
		c->n_cpus = o->n_cpus;
	}
	c->tokens = duet_calloc((size_t)lim->max_tokens, sizeof(int32_t));
	c->pos = duet_calloc((size_t)lim->max_tokens, sizeof(int32_t));
	c->seq = duet_calloc((size_t)lim->max_tokens, sizeof(int32_t));
	c->slot = duet_calloc((size_t)lim->max_tokens, sizeof(int32_t));
	c->out_rows = duet_calloc((size_t)lim->max_tokens, sizeof(int32_t));
	c->table_start = duet_calloc((size_t)lim->max_seqs, sizeof(int32_t));
	c->tables = duet_calloc((size_t)lim->max_table, sizeof(int32_t));
	if (!c->tokens || !c->pos || !c->seq || !c->slot || !c->out_rows || !c->table_start ||
	    !c->tables)
		goto destroy;
	ret = tp_create(c->nth, c->cpus, c->n_cpus, &c->pool);
	if (ret)
		goto destroy;
	*priv = c;
	return 0;

destroy:
	cpu_destroy(c);
	return ret;
}

static void cpu_describe(void *priv, char *buf, size_t len)
{
	struct cpu *c = priv;

	snprintf(buf, len, "cpu %s, %d thread%s%s", c->k->name, c->nth, c->nth == 1 ? "" : "s",
		 c->n_cpus ? ", pinned" : "");
}

const struct backend_ops cpu_backend_ops = {
	.name = "cpu",
	.create = cpu_create,
	.destroy = cpu_destroy,
	.describe = cpu_describe,
	.buf_alloc = cpu_buf_alloc,
	.buf_free = cpu_buf_free,
	.upload = cpu_upload,
	.download = cpu_download,
	.weight_load = cpu_weight_load,
	.weight_free = cpu_weight_free,
	.kv_create = cpu_kv_create,
	.kv_destroy = cpu_kv_destroy,
	.kv_region = cpu_kv_region,
	.kv_copy = cpu_kv_copy,
	.step_begin = cpu_step_begin,
	.embed = cpu_embed,
	.rmsnorm = cpu_rmsnorm,
	.matmul = cpu_matmul,
	.rope = cpu_rope,
	.kv_store = cpu_kv_store,
	.attention = cpu_attention,
	.swiglu = cpu_swiglu,
	.add = cpu_add,
	.gather_out = cpu_gather_out,
	.sync = cpu_sync,
};
