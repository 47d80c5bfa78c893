/* SPDX-License-Identifier: MIT */
/*
 * Compute backends (DESIGN.md "Compute backends").
 *
 * The model code (runtime/model) is written once against this interface and
 * never touches activations or KV on the host: ops take opaque buffers and
 * run in order on the backend's stream; only be_upload / be_download / the
 * step metadata cross.  A backend is a `const struct backend_ops` with a
 * private context; ops it lacks are NULL and the wrappers return
 * -EOPNOTSUPP.  Backends are registered in one table (backend.c) and looked
 * up by name.
 *
 * Shapes: an activation buffer holds rows of f32 (one row per token of the
 * current step, unless an op says otherwise); `cols` is the row width.
 * Weights are 2-D [rows = output features][cols = input features] (ggml's
 * ne = [cols, rows]) in their file type, prepared once by be_weight_load.
 */
#ifndef DUET_BACKEND_H
#define DUET_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/model/gguf.h"

struct backend;	  /* an open backend instance */
struct be_buf;	  /* backend memory (host for CPU, device for CUDA) */
struct be_weight; /* a weight tensor prepared for the backend */
struct be_kv;	  /* a paged KV pool */

enum be_mem_kind {
	BE_MEM_HOST,
	BE_MEM_HOST_HUGE, /* host memory on huge pages */
	BE_MEM_DEVICE,
	BE_MEM_HOST_SHARED,	 /* host memory in a memfd another process can map */
	BE_MEM_HOST_SHARED_HUGE, /* the same on huge pages (falls back with a warning) */
};

/* A registered memory range, for transfer drivers to register with a NIC or peer. */
struct be_region {
	void *base;
	size_t bytes;
	enum be_mem_kind kind;
	int fd;		   /* shared kinds: the memfd of the whole pool; else -1 */
	size_t fd_offset;  /* where base is in the fd's mapping */
};

struct be_options {
	int threads;	 /* compute threads; 0 = one per CPU in cpus */
	const int *cpus; /* CPUs to pin threads to, n_cpus of them; NULL = no pinning */
	int n_cpus;
	const char *isa; /* CPU: NULL = best supported, or "scalar", "avx2", "avx512" */
	int device;	 /* CUDA: device index */
};

/*
 * One paged KV pool: per layer one contiguous region of n_blocks blocks laid
 * out [block][K|V][block_tokens][n_kv_heads][head_dim] in dtype.
 */
struct be_kv_layout {
	int n_layers;
	int n_blocks;
	int block_tokens;
	int n_kv_heads;
	int head_dim;
	enum ggml_type dtype; /* GGML_TYPE_F16 or GGML_TYPE_F32 */
};

/*
 * A forward step's batch metadata, built on the host by the caller and
 * uploaded once by be_step_begin.  Tokens of several sequences may be mixed:
 * a prefill chunk (many tokens of one sequence) and decode tokens (one token
 * of many sequences).  Token i attends over positions 0..pos[i] of its
 * sequence, whose K/V rows are found through that sequence's block table
 * (the K/V of all tokens of this step are stored before attention runs).
 */
struct be_step {
	int n_tokens;
	const int32_t *tokens; /* [n_tokens] token ids */
	const int32_t *pos;    /* [n_tokens] position within its sequence */
	const int32_t *seq;    /* [n_tokens] sequence index in [0, n_seqs) */
	const int32_t *slot;   /* [n_tokens] KV slot: block * block_tokens + offset */
	int n_seqs;
	const int32_t *table_start;  /* [n_seqs] offset of each sequence's table in block_tables;
				      * ascending: tables are concatenated in sequence order */
	const int32_t *block_tables; /* concatenated block tables */
	int n_table;		     /* entries in block_tables */
	int n_out;
	const int32_t *out_rows; /* [n_out] tokens whose final hidden state becomes logits */
};

/* Limits a backend instance is created for (sizes of its staging buffers). */
struct be_step_limits {
	int max_tokens; /* tokens per step */
	int max_seqs;
	int max_table; /* block table entries per step, all sequences */
};

struct backend_ops {
	const char *name;
	int (*create)(const struct be_options *o, const struct be_step_limits *lim, void **priv);
	void (*destroy)(void *priv);
	/* Human-readable description: "cpu avx512, 2 threads pinned to 0-1". */
	void (*describe)(void *priv, char *buf, size_t len);

	int (*buf_alloc)(void *priv, size_t bytes, enum be_mem_kind kind, struct be_buf **out);
	void (*buf_free)(void *priv, struct be_buf *b);
	int (*upload)(void *priv, struct be_buf *dst, size_t off, const void *src, size_t n);
	int (*download)(void *priv, const struct be_buf *src, size_t off, void *dst, size_t n);

	/* Prepare a weight (2-D matrix or 1-D vector) once: repack or upload. */
	int (*weight_load)(void *priv, const struct gguf_tensor *t, struct be_weight **out);
	void (*weight_free)(void *priv, struct be_weight *w);

	int (*kv_create)(void *priv, const struct be_kv_layout *l, enum be_mem_kind kind,
			 struct be_kv **out);
	void (*kv_destroy)(void *priv, struct be_kv *kv);
	int (*kv_region)(void *priv, const struct be_kv *kv, int layer, struct be_region *out);

	/*
	 * Copy the first n_tokens token slots of block src to block dst in every
	 * layer (K and V): copy-on-write of a shared, partially filled block.
	 */
	int (*kv_copy)(void *priv, struct be_kv *kv, int32_t src, int32_t dst, int n_tokens);

	/* Upload the step's metadata; the ops below use it until the next step. */
	int (*step_begin)(void *priv, const struct be_step *s);

	/* out[i] = table row tokens[i], for every token of the step; out cols = table cols. */
	int (*embed)(void *priv, const struct be_weight *table, struct be_buf *out);
	/* out[i] = rmsnorm(in[i]) * w for n_rows rows of cols; out may be in. */
	int (*rmsnorm)(void *priv, const struct be_buf *in, const struct be_weight *w,
		       struct be_buf *out, int n_rows, int cols, float eps);
	/* out[i] = W in[i] (+ bias) for n_rows rows; out cols = W rows, in cols = W cols. */
	int (*matmul)(void *priv, const struct be_buf *in, const struct be_weight *w,
		      const struct be_weight *bias, struct be_buf *out, int n_rows);
	/*
	 * RoPE on q [tokens][n_heads * head_dim] and k [tokens][n_kv_heads * head_dim]
	 * at each token's position: theta_i = pos * base^(-2i / rope_dim).
	 */
	int (*rope)(void *priv, struct be_buf *q, struct be_buf *k, int n_heads, int n_kv_heads,
		    int head_dim, int rope_dim, float base, bool neox);
	/* Store each token's k and v rows into its KV slot of layer. */
	int (*kv_store)(void *priv, struct be_kv *kv, int layer, const struct be_buf *k,
			const struct be_buf *v);
	/* out [tokens][n_heads * head_dim]: causal attention of q over layer's paged KV. */
	int (*attention)(void *priv, const struct be_buf *q, const struct be_kv *kv, int layer,
			 struct be_buf *out, int n_heads);
	/* out[i] = silu(gate[i]) * up[i], tokens rows of cols; out may be gate. */
	int (*swiglu)(void *priv, const struct be_buf *gate, const struct be_buf *up,
		      struct be_buf *out, int cols);
	/* x[i] += y[i], tokens rows of cols. */
	int (*add)(void *priv, struct be_buf *x, const struct be_buf *y, int cols);
	/* out[j] = in[out_rows[j]] for the step's n_out rows of cols. */
	int (*gather_out)(void *priv, const struct be_buf *in, struct be_buf *out, int cols);
	/* Wait until every op issued so far has finished. */
	int (*sync)(void *priv);
};

/* Registered backends, by name ("cpu"); NULL when unknown. */
const struct backend_ops *backend_find(const char *name);

int backend_open(const char *name, const struct be_options *o, const struct be_step_limits *lim,
		 struct backend **out);
void backend_close(struct backend *be);
const char *backend_name(const struct backend *be);
void backend_describe(const struct backend *be, char *buf, size_t len);

/* Thin wrappers over the ops: -EOPNOTSUPP when the backend lacks the op. */
int be_buf_alloc(struct backend *be, size_t bytes, enum be_mem_kind kind, struct be_buf **out);
void be_buf_free(struct backend *be, struct be_buf *b);
int be_upload(struct backend *be, struct be_buf *dst, size_t off, const void *src, size_t n);
int be_download(struct backend *be, const struct be_buf *src, size_t off, void *dst, size_t n);
int be_weight_load(struct backend *be, const struct gguf_tensor *t, struct be_weight **out);
void be_weight_free(struct backend *be, struct be_weight *w);
int be_kv_create(struct backend *be, const struct be_kv_layout *l, enum be_mem_kind kind,
		 struct be_kv **out);
void be_kv_destroy(struct backend *be, struct be_kv *kv);
int be_kv_region(struct backend *be, const struct be_kv *kv, int layer, struct be_region *out);
int be_kv_copy(struct backend *be, struct be_kv *kv, int32_t src, int32_t dst, int n_tokens);
int be_step_begin(struct backend *be, const struct be_step *s);
int be_embed(struct backend *be, const struct be_weight *table, struct be_buf *out);
int be_rmsnorm(struct backend *be, const struct be_buf *in, const struct be_weight *w,
	       struct be_buf *out, int n_rows, int cols, float eps);
int be_matmul(struct backend *be, const struct be_buf *in, const struct be_weight *w,
	      const struct be_weight *bias, struct be_buf *out, int n_rows);
int be_rope(struct backend *be, struct be_buf *q, struct be_buf *k, int n_heads, int n_kv_heads,
	    int head_dim, int rope_dim, float base, bool neox);
int be_kv_store(struct backend *be, struct be_kv *kv, int layer, const struct be_buf *k,
		const struct be_buf *v);
int be_attention(struct backend *be, const struct be_buf *q, const struct be_kv *kv, int layer,
		 struct be_buf *out, int n_heads);
int be_swiglu(struct backend *be, const struct be_buf *gate, const struct be_buf *up,
	      struct be_buf *out, int cols);
int be_add(struct backend *be, struct be_buf *x, const struct be_buf *y, int cols);
int be_gather_out(struct backend *be, const struct be_buf *in, struct be_buf *out, int cols);
int be_sync(struct backend *be);

extern const struct backend_ops cpu_backend_ops;

#endif /* DUET_BACKEND_H */
