/* SPDX-License-Identifier: MIT */
/*
 * The scalar reference kernels: plain C, one readable loop per op, the
 * yardstick every SIMD variant is tested against.
 *
 * Matmuls accumulate each output in one float, in index order.  Q8_0 and
 * Q4_0 follow ggml: per 32-element block an exact integer dot product of the
 * weight quants with the Q8_0 activation quants, scaled by d_w * d_x and
 * summed in float, block by block.  The result of every element depends only
 * on its weight row and its activation row, never on n, r0 or r1.
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/kernels-impl.h"
#include "kernels/cpu/quant.h"

#define ROW(base, i, bytes) ((const uint8_t *)(base) + (size_t)(i) * (bytes))

void kcpu_ref_matmul_f32(const struct kcpu_matmul_args *a, int r0, int r1)
{
	for (int i = 0; i < a->n; i++) {
		const float *x = (const float *)ROW(a->x, i, a->x_row_bytes);

		for (int r = r0; r < r1; r++) {
			const float *w = (const float *)ROW(a->w, r, a->w_row_bytes);
			float sum = 0.0f;

			for (int j = 0; j < a->k; j++)
				sum += w[j] * x[j];
			a->y[(size_t)i * a->ldy + r] = sum;
		}
	}
}

void kcpu_ref_matmul_f16(const struct kcpu_matmul_args *a, int r0, int r1)
{
	for (int i = 0; i < a->n; i++) {
		const float *x = (const float *)ROW(a->x, i, a->x_row_bytes);

		for (int r = r0; r < r1; r++) {
			const uint16_t *w = (const uint16_t *)ROW(a->w, r, a->w_row_bytes);
			float sum = 0.0f;

			for (int j = 0; j < a->k; j++)
				sum += quant_fp16_to_fp32(w[j]) * x[j];
			a->y[(size_t)i * a->ldy + r] = sum;
		}
	}
}

void kcpu_ref_matmul_bf16(const struct kcpu_matmul_args *a, int r0, int r1)
{
	for (int i = 0; i < a->n; i++) {
		const float *x = (const float *)ROW(a->x, i, a->x_row_bytes);

		for (int r = r0; r < r1; r++) {
			const uint16_t *w = (const uint16_t *)ROW(a->w, r, a->w_row_bytes);
			float sum = 0.0f;

			for (int j = 0; j < a->k; j++)
				sum += quant_bf16_to_fp32(w[j]) * x[j];
			a->y[(size_t)i * a->ldy + r] = sum;
		}
	}
}

void kcpu_ref_matmul_q8_0(const struct kcpu_matmul_args *a, int r0, int r1)
{
	const int nb = a->k / QUANT_QK8_0;

	for (int i = 0; i < a->n; i++) {
		const struct quant_block_q8_0 *x =
			(const struct quant_block_q8_0 *)ROW(a->x, i, a->x_row_bytes);

		for (int r = r0; r < r1; r++) {
			const struct quant_block_q8_0 *w =
				(const struct quant_block_q8_0 *)ROW(a->w, r, a->w_row_bytes);
			float sum = 0.0f;

			for (int b = 0; b < nb; b++) {
				int32_t isum = 0;

				for (int j = 0; j < QUANT_QK8_0; j++)
					isum += w[b].qs[j] * x[b].qs[j];
				sum += (float)isum *
				       (quant_fp16_to_fp32(w[b].d) * quant_fp16_to_fp32(x[b].d));
			}
			a->y[(size_t)i * a->ldy + r] = sum;
		}
	}
}

void kcpu_ref_matmul_q4_0(const struct kcpu_matmul_args *a, int r0, int r1)
{
	const int nb = a->k / QUANT_QK4_0;
	const int half = QUANT_QK4_0 / 2;

	for (int i = 0; i < a->n; i++) {
		const struct quant_block_q8_0 *x =
			(const struct quant_block_q8_0 *)ROW(a->x, i, a->x_row_bytes);

		for (int r = r0; r < r1; r++) {
			const struct quant_block_q4_0 *w =
				(const struct quant_block_q4_0 *)ROW(a->w, r, a->w_row_bytes);
			float sum = 0.0f;

			for (int b = 0; b < nb; b++) {
				int32_t isum = 0;

				for (int j = 0; j < half; j++) {
					isum += ((w[b].qs[j] & 0xf) - 8) * x[b].qs[j];
					isum += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + half];
				}
				sum += (float)isum *
				       (quant_fp16_to_fp32(w[b].d) * quant_fp16_to_fp32(x[b].d));
			}
			a->y[(size_t)i * a->ldy + r] = sum;
		}
	}
}

void kcpu_ref_quantize_q8_0(const float *x, void *dst, int k)
{
	quant_row_q8_0(x, dst, (size_t)k);
}

void kcpu_ref_get_row_f32(const void *row, float *dst, int k)
{
	memcpy(dst, row, (size_t)k * sizeof(float));
}

void kcpu_ref_get_row_f16(const void *row, float *dst, int k)
{
	quant_row_from_fp16(row, dst, (size_t)k);
}

void kcpu_ref_get_row_bf16(const void *row, float *dst, int k)
{
	quant_row_from_bf16(row, dst, (size_t)k);
}

void kcpu_ref_get_row_q8_0(const void *row, float *dst, int k)
{
	quant_dequant_row_q8_0(row, dst, (size_t)k);
}

void kcpu_ref_get_row_q4_0(const void *row, float *dst, int k)
{
	quant_dequant_row_q4_0(row, dst, (size_t)k);
}

/* ggml's rms_norm: the float squares summed in double, then (x * scale) * w. */
void kcpu_ref_rmsnorm(const float *x, const float *w, float *y, int n, float eps)
{
	double ss = 0.0;

	for (int j = 0; j < n; j++)
		ss += (double)(x[j] * x[j]);

	const float mean = (float)(ss / n);
	const float scale = 1.0f / sqrtf(mean + eps);

	for (int j = 0; j < n; j++)
		y[j] = (x[j] * scale) * w[j];
}

void kcpu_ref_rope(float *x, int n_heads, int head_dim, int rope_dim, const float *cs, int neox)
{
	const int half = rope_dim / 2;

	for (int h = 0; h < n_heads; h++) {
		float *v = x + (size_t)h * head_dim;

		for (int i = 0; i < half; i++) {
			const int ia = neox ? i : 2 * i;
			const int ib = neox ? i + half : 2 * i + 1;
			const float c = cs[2 * i], s = cs[2 * i + 1];
			const float va = v[ia], vb = v[ib];

			v[ia] = va * c - vb * s;
			v[ib] = va * s + vb * c;
		}
	}
}

void kcpu_ref_swiglu(const float *gate, const float *up, float *out, int n)
{
	for (int j = 0; j < n; j++) {
		const float g = gate[j];

		out[j] = g / (1.0f + expf(-g)) * up[j];
	}
}

void kcpu_ref_add(float *y, const float *x, int n)
{
	for (int j = 0; j < n; j++)
		y[j] += x[j];
}

void kcpu_ref_to_f16(const float *x, uint16_t *y, int n)
{
	quant_row_to_fp16(x, y, (size_t)n);
}

/* Byte address of context token t's K row (V row: add a->v_offset). */
static const uint8_t *attn_k_row(const struct kcpu_attn_args *a, int t)
{
	const size_t blk = (size_t)a->block_table[t / a->block_tokens];

	return a->k_head + blk * a->block_bytes + (size_t)(t % a->block_tokens) * a->row_stride;
}

static float kv_elem(const uint8_t *row, int j, int f16)
{
	return f16 ? quant_fp16_to_fp32(((const uint16_t *)row)[j]) : ((const float *)row)[j];
}

void kcpu_ref_attn_head(const struct kcpu_attn_args *a)
{
	float max = -INFINITY, sum = 0.0f;

	for (int t = 0; t < a->n_kv; t++) {
		const uint8_t *k = attn_k_row(a, t);
		float dot = 0.0f;

		for (int j = 0; j < a->head_dim; j++)
			dot += a->q[j] * kv_elem(k, j, a->kv_f16);
		a->scores[t] = dot * a->scale;
		if (a->scores[t] > max)
			max = a->scores[t];
	}
	for (int t = 0; t < a->n_kv; t++) {
		a->scores[t] = expf(a->scores[t] - max);
		sum += a->scores[t];
	}

	const float inv = 1.0f / sum;

	for (int j = 0; j < a->head_dim; j++)
		a->out[j] = 0.0f;
	for (int t = 0; t < a->n_kv; t++) {
		const uint8_t *v = attn_k_row(a, t) + a->v_offset;
		const float p = a->scores[t] * inv;

		a->scores[t] = p;
		for (int j = 0; j < a->head_dim; j++)
			a->out[j] += p * kv_elem(v, j, a->kv_f16);
	}
}

const struct kcpu_ops kcpu_ops_scalar = {
	.isa = KCPU_ISA_SCALAR,
	.name = "scalar",
	.matmul = {
		[KCPU_W_F32] = kcpu_ref_matmul_f32,
		[KCPU_W_F16] = kcpu_ref_matmul_f16,
		[KCPU_W_BF16] = kcpu_ref_matmul_bf16,
		[KCPU_W_Q8_0] = kcpu_ref_matmul_q8_0,
		[KCPU_W_Q4_0] = kcpu_ref_matmul_q4_0,
	},
	.quantize_q8_0 = kcpu_ref_quantize_q8_0,
	.get_row = {
		[KCPU_W_F32] = kcpu_ref_get_row_f32,
		[KCPU_W_F16] = kcpu_ref_get_row_f16,
		[KCPU_W_BF16] = kcpu_ref_get_row_bf16,
		[KCPU_W_Q8_0] = kcpu_ref_get_row_q8_0,
		[KCPU_W_Q4_0] = kcpu_ref_get_row_q4_0,
	},
	.rmsnorm = kcpu_ref_rmsnorm,
	.rope = kcpu_ref_rope,
	.swiglu = kcpu_ref_swiglu,
	.add = kcpu_ref_add,
	.to_f16 = kcpu_ref_to_f16,
	.attn_head = kcpu_ref_attn_head,
};
