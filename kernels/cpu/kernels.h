/* SPDX-License-Identifier: MIT */
/*
 * CPU compute kernels.  One table of function pointers per instruction set:
 * a plain scalar reference (kernels/cpu/ref.c) that every other variant is
 * tested against, and AVX2/FMA and AVX-512 variants compiled with function
 * target attributes, so one binary runs everywhere and picks at run time.
 *
 * Kernels are single-threaded and allocate nothing; the CPU backend splits
 * work across its thread pool by calling them on disjoint ranges (rows of a
 * weight matrix, tokens, heads).  Every output element is computed in an
 * order that does not depend on how the work was split or batched, so the
 * same inputs give bit-identical results whatever the thread count and batch
 * composition (DESIGN.md: batch invariance).
 */
#ifndef DUET_KERNELS_H
#define DUET_KERNELS_H

#include <stddef.h>
#include <stdint.h>

enum kcpu_isa {
	KCPU_ISA_SCALAR,
	KCPU_ISA_AVX2,   /* AVX2 + FMA + F16C */
	KCPU_ISA_AVX512, /* AVX-512 F/BW/VL (+ VNNI when present) */
	KCPU_ISA_COUNT
};

/* Weight types the engine computes with (ggml block layouts). */
enum kcpu_wtype {
	KCPU_W_F32,
	KCPU_W_F16,
	KCPU_W_BF16,
	KCPU_W_Q8_0,
	KCPU_W_Q4_0,
	KCPU_W_COUNT
};

/*
 * Activations as a matmul consumes them: F32 rows for F32/F16/BF16 weights,
 * Q8_0 blocks (quantized on the fly by quantize_q8_0) for Q8_0/Q4_0 weights.
 */
enum kcpu_act {
	KCPU_ACT_F32,
	KCPU_ACT_Q8_0,
};

/* Bytes of one Q8_0-quantized activation row of k elements (k % 32 == 0). */
#define KCPU_Q8_0_ROW_BYTES(k) ((size_t)(k) / 32 * 34)

/*
 * y[i * ldy + r] = sum_j W[r][j] * x[i][j]  for tokens i in [0, n), rows r in [r0, r1).
 * W row r starts at w + r * w_row_bytes and holds k elements of the weight
 * type; x row i starts at x + i * x_row_bytes in the weight type's
 * activation form (f32, or Q8_0 blocks).  k is a multiple of 32 for block
 * types.  y must not alias x or W.
 */
struct kcpu_matmul_args {
	const void *w;
	size_t w_row_bytes;
	const void *x;
	size_t x_row_bytes;
	float *y;
	size_t ldy; /* elements between output rows (tokens) */
	int n;      /* tokens */
	int k;      /* input features */
};

/*
 * Attention of one query head over a paged KV cache (DESIGN.md "KV cache"):
 * the layer region holds blocks of `block_bytes`; in each block K rows come
 * first and V rows start at v_offset; within K or V, token slot s of this KV
 * head starts at s * row_stride bytes from the head's base.  k_head points
 * at this KV head's K row of slot 0 of block 0 (region + head * head_dim *
 * elem size); the block of the t-th context token is block_table[t /
 * block_tokens], slot t % block_tokens.
 */
struct kcpu_attn_args {
	const float *q;          /* [head_dim] */
	const uint8_t *k_head;   /* see above */
	size_t v_offset;         /* bytes from a block's K rows to its V rows */
	size_t block_bytes;
	size_t row_stride;       /* bytes between token slots within K (and within V) */
	const int32_t *block_table;
	int block_tokens;
	int n_kv;                /* context tokens to attend over (causal: up to and including self) */
	int head_dim;
	int kv_f16;              /* 1: K/V elements are fp16, 0: f32 */
	float scale;             /* 1 / sqrt(head_dim) */
	float *scores;           /* scratch, [n_kv] */
	float *out;              /* [head_dim] */
};

struct kcpu_ops {
	enum kcpu_isa isa;
	const char *name; /* "scalar", "avx2", "avx512" */

	/* C = A x B^T as above, for each weight type. */
	void (*matmul[KCPU_W_COUNT])(const struct kcpu_matmul_args *a, int r0, int r1);
	/* Quantize one row of k f32 activations (k % 32 == 0) into Q8_0 blocks. */
	void (*quantize_q8_0)(const float *x, void *dst, int k);
	/* Dequantize one weight row of k elements to f32 (embedding lookup). */
	void (*get_row[KCPU_W_COUNT])(const void *row, float *dst, int k);

	/* y = x / sqrt(mean(x^2) + eps) * w, one row of n; y may equal x. */
	void (*rmsnorm)(const float *x, const float *w, float *y, int n, float eps);
	/*
	 * Rotate n_heads heads of head_dim in place; the first rope_dim dims of
	 * each head rotate by cs[2i] = cos, cs[2i+1] = sin of pair i.
	 * neox = 0: pairs (2i, 2i+1) (Llama); neox = 1: pairs (i, i + rope_dim/2) (Qwen2).
	 */
	void (*rope)(float *x, int n_heads, int head_dim, int rope_dim, const float *cs, int neox);
	/* out = silu(gate) * up, n elements; out may equal gate or up. */
	void (*swiglu)(const float *gate, const float *up, float *out, int n);
	/* y += x, n elements. */
	void (*add)(float *y, const float *x, int n);
	/* f32 -> fp16 row (KV store), n elements. */
	void (*to_f16)(const float *x, uint16_t *y, int n);
	/* One query head's attention output. */
	void (*attn_head)(const struct kcpu_attn_args *a);
};

/* The best table the CPU supports (or the one DUET_ISA=scalar|avx2|avx512 names). */
const struct kcpu_ops *kcpu_best(void);
/* A given table, or NULL when this CPU (or this build) lacks it. */
const struct kcpu_ops *kcpu_get(enum kcpu_isa isa);
const char *kcpu_isa_name(enum kcpu_isa isa);
enum kcpu_act kcpu_act_of(enum kcpu_wtype wt);
/* ggml type id -> kernel weight type; -1 when unsupported. */
int kcpu_wtype_of_ggml(int ggml_type);

#endif /* DUET_KERNELS_H */
