// SPDX-License-Identifier: MIT
/*
 * kernels/cpu: every SIMD table this CPU has against the scalar reference
 * (matmul for each weight type over odd shapes and row ranges, the element
 * ops, paged attention), the reference itself against hand-computed values
 * and quant.h, and batch invariance: an output element has the same bits
 * whatever the batch size, its token's place in the batch and the row split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/kernels-impl.h"
#include "kernels/cpu/quant.h"
#include "tests/unit/testutil.h"

/* --- helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

/* Uniform in [-1, 1). */
static float frnd(void)
{
	return (float)(rnd() & 0xffffff) / 8388608.0f - 1.0f;
}

static const char *const wt_names[KCPU_W_COUNT] = { "f32", "f16", "bf16", "q8_0", "q4_0" };

/* A kernel table under test; the AVX-512 table also once with its non-VNNI matmuls. */
struct variant {
	const char *name;
	struct kcpu_ops ops;
};

static int variants(struct variant *v)
{
	int n = 0;

	for (int isa = 0; isa < KCPU_ISA_COUNT; isa++) {
		const struct kcpu_ops *ops = kcpu_get((enum kcpu_isa)isa);

		if (!ops) {
			print_message("[  INFO    ] %s not supported here: not tested\n",
				      kcpu_isa_name((enum kcpu_isa)isa));
			continue;
		}
		v[n].name = ops->name;
		v[n++].ops = *ops;
#if defined(__x86_64__)
		if (isa == KCPU_ISA_AVX512) {
			v[n].name = "avx512-novnni";
			v[n].ops = *ops;
			v[n].ops.matmul[KCPU_W_Q8_0] = kcpu_avx512_matmul_q8_0_novnni;
			v[n++].ops.matmul[KCPU_W_Q4_0] = kcpu_avx512_matmul_q4_0_novnni;
			/* The 512-bit F16/BF16 matmuls the table does not use (kernels-impl.h). */
			v[n].name = "avx512-f16-512bit";
			v[n].ops = *ops;
			v[n].ops.matmul[KCPU_W_F16] = kcpu_avx512_matmul_f16;
			v[n++].ops.matmul[KCPU_W_BF16] = kcpu_avx512_matmul_bf16;
		}
#endif
	}
	return n;
}

static size_t row_bytes(enum kcpu_wtype wt, int k)
{
	switch (wt) {
	case KCPU_W_F32:
		return (size_t)k * 4;
	case KCPU_W_F16:
	case KCPU_W_BF16:
		return (size_t)k * 2;
	case KCPU_W_Q8_0:
		return (size_t)k / 32 * 34;
	default:
		return (size_t)k / 32 * 18;
	}
}

static void encode_row(enum kcpu_wtype wt, const float *src, void *dst, int k)
{
	switch (wt) {
	case KCPU_W_F32:
		memcpy(dst, src, (size_t)k * 4);
		break;
	case KCPU_W_F16:
		quant_row_to_fp16(src, dst, (size_t)k);
		break;
	case KCPU_W_BF16:
		quant_row_to_bf16(src, dst, (size_t)k);
		break;
	case KCPU_W_Q8_0:
		assert_int_equal(quant_row_q8_0(src, dst, (size_t)k), 0);
		break;
	default:
		assert_int_equal(quant_row_q4_0(src, dst, (size_t)k), 0);
		break;
	}
}

/*
 * A random problem: m weight rows and n activation rows of k, in the
 * layouts the matmul reads, with padding after each row (so strides are
 * not the packed size) and a y of ldy = m + 3.  Each block gets its own
 * magnitude so block scales differ.
 */
struct problem {
	enum kcpu_wtype wt;
	int m, n, k;
	size_t wrb, xrb, ldy;
	uint8_t *w, *x;
	float *wf, *xf; /* the f32 values before encoding */
};

static void problem_make(struct problem *p, enum kcpu_wtype wt, int m, int n, int k)
{
	float *tmp = malloc((size_t)k * sizeof(float));

	p->wt = wt;
	p->m = m;
	p->n = n;
	p->k = k;
	p->wrb = row_bytes(wt, k) + 8;
	p->xrb = kcpu_act_of(wt) == KCPU_ACT_F32 ? (size_t)k * 4 + 12 : KCPU_Q8_0_ROW_BYTES(k) + 6;
	p->ldy = (size_t)m + 3;
	p->w = calloc((size_t)m, p->wrb);
	p->x = calloc((size_t)n, p->xrb);
	p->wf = malloc((size_t)m * k * sizeof(float));
	p->xf = malloc((size_t)n * k * sizeof(float));
	assert_non_null(tmp);
	assert_non_null(p->w);
	assert_non_null(p->x);
	for (int r = 0; r < m; r++) {
		for (int j = 0; j < k; j++) {
			const float s = (j % 32 == 0 || k < 32) ? (float)(1 + rnd() % 8) : 1.0f;

			tmp[j] = frnd() * (j % 32 == 0 ? s : 1.0f) * (float)(1 + (r + j / 32) % 5);
		}
		memcpy(p->wf + (size_t)r * k, tmp, (size_t)k * sizeof(float));
		encode_row(wt, tmp, p->w + (size_t)r * p->wrb, k);
	}
	for (int i = 0; i < n; i++) {
		for (int j = 0; j < k; j++)
			tmp[j] = frnd() * (float)(1 + (i + j / 32) % 3);
		memcpy(p->xf + (size_t)i * k, tmp, (size_t)k * sizeof(float));
		if (kcpu_act_of(wt) == KCPU_ACT_F32)
			memcpy(p->x + (size_t)i * p->xrb, tmp, (size_t)k * 4);
		else
			kcpu_ref_quantize_q8_0(tmp, p->x + (size_t)i * p->xrb, k);
	}
	free(tmp);
}

static void problem_free(struct problem *p)
{
	free(p->w);
	free(p->x);
	free(p->wf);
	free(p->xf);
}

static float *ybuf(const struct problem *p)
{
	float *y = malloc((size_t)p->n * p->ldy * sizeof(float));

	assert_non_null(y);
	memset(y, 0xa5, (size_t)p->n * p->ldy * sizeof(float)); /* sentinel */
	return y;
}

static void run_mm(const struct kcpu_ops *ops, const struct problem *p, float *y, int i0, int n,
		   int r0, int r1)
{
	const struct kcpu_matmul_args a = {
		.w = p->w,
		.w_row_bytes = p->wrb,
		.x = p->x + (size_t)i0 * p->xrb,
		.x_row_bytes = p->xrb,
		.y = y + (size_t)i0 * p->ldy,
		.ldy = p->ldy,
		.n = n,
		.k = p->k,
	};

	ops->matmul[p->wt](&a, r0, r1);
}

/*
 * The error bound for y[i][r] between two summation orders.  Float types:
 * every product w*x and each of at most k + 16 additions (the reference's
 * k - 1 sequential ones, a SIMD variant's k / 8 per lane plus 4 reduction
 * levels) rounds by at most 2^-24 relative to the sum of |w*x| so far, so
 * |y_a - y_b| <= 2 (k + 17) 2^-24 sum|w x|.  Block types: the integer dots
 * are exact and d = d_w * d_x rounds identically on both sides, so the
 * terms are isum_b * d (reference) or lane_l * d (SIMD, 8 lanes per block),
 * and the bound is the same formula over nb * 8 + 16 terms of sum_b |d| sum|qw qx|.
 */
static double mm_tol(const struct problem *p, int i, int r)
{
	const uint8_t *wr = p->w + (size_t)r * p->wrb;
	const uint8_t *xr = p->x + (size_t)i * p->xrb;
	double mag = 0.0;
	int terms;

	if (kcpu_act_of(p->wt) == KCPU_ACT_F32) {
		float *wf = malloc((size_t)p->k * sizeof(float));

		assert_non_null(wf);
		kcpu_ops_scalar.get_row[p->wt](wr, wf, p->k);
		for (int j = 0; j < p->k; j++)
			mag += fabs((double)wf[j] * ((const float *)xr)[j]);
		free(wf);
		terms = p->k + 17;
	} else {
		const struct quant_block_q8_0 *xb = (const void *)xr;

		for (int b = 0; b < p->k / 32; b++) {
			uint16_t hw;
			double s = 0.0;

			memcpy(&hw, wr + (size_t)b * (p->wt == KCPU_W_Q8_0 ? 34 : 18), 2);
			for (int j = 0; j < 32; j++) {
				int q;

				if (p->wt == KCPU_W_Q8_0) {
					q = ((const int8_t *)wr)[b * 34 + 2 + j];
				} else {
					const uint8_t byte = wr[b * 18 + 2 + j % 16];

					q = (j < 16 ? byte & 0xf : byte >> 4) - 8;
				}
				s += fabs((double)q * xb[b].qs[j]);
			}
			mag += s *
			       fabs((double)quant_fp16_to_fp32(hw) * quant_fp16_to_fp32(xb[b].d));
		}
		terms = p->k / 32 * 8 + 17;
	}
	return 2.0 * terms * ldexp(mag, -24) + 1e-30;
}

/* --- matmul ------------------------------------------------------------------- */

static const int k_float[] = { 1, 7, 16, 32, 33, 64, 65, 96, 131, 160, 768, 800 };
static const int k_block[] = { 32, 64, 96, 160, 768, 800 };

static void check_matmul(const struct variant *v, enum kcpu_wtype wt, int k)
{
	const int m = 11;
	const int ns[] = { 1, 2, 3, 4, 5, 7, 8, 13 };

	for (size_t in = 0; in < sizeof(ns) / sizeof(ns[0]); in++) {
		struct problem p;
		const int r0 = (int)(rnd() % 4) | 1, r1 = m - (int)(rnd() % 3);
		float *yr, *yv;

		problem_make(&p, wt, m, ns[in], k);
		yr = ybuf(&p);
		yv = ybuf(&p);
		run_mm(&kcpu_ops_scalar, &p, yr, 0, p.n, 0, m);
		run_mm(&v->ops, &p, yv, 0, p.n, r0, r1);
		for (int i = 0; i < p.n; i++) {
			for (size_t r = 0; r < p.ldy; r++) {
				const float a = yr[i * p.ldy + r], b = yv[i * p.ldy + r];
				uint32_t ub;

				memcpy(&ub, &b, 4);
				if ((int)r < r0 || (int)r >= r1) {
					if (ub != 0xa5a5a5a5u)
						fail_msg(
							"%s %s k=%d n=%d: wrote y[%d][%zu] outside rows %d..%d",
							v->name, wt_names[wt], k, p.n, i, r, r0,
							r1);
					continue;
				}
				if (!(fabs((double)a - b) <= mm_tol(&p, i, (int)r)))
					fail_msg(
						"%s %s k=%d n=%d: y[%d][%zu] = %.9g, reference %.9g (tol %.3g)",
						v->name, wt_names[wt], k, p.n, i, r, b, a,
						mm_tol(&p, i, (int)r));
			}
		}
		free(yr);
		free(yv);
		problem_free(&p);
	}
}

static void test_matmul_vs_reference(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);

	(void)state;
	for (int iv = 1; iv < nv; iv++) {
		for (int wt = 0; wt < KCPU_W_COUNT; wt++) {
			const int block = kcpu_act_of((enum kcpu_wtype)wt) == KCPU_ACT_Q8_0;
			const int *ks = block ? k_block : k_float;
			const size_t nk = block ? sizeof(k_block) / sizeof(int)
						: sizeof(k_float) / sizeof(int);

			for (size_t ik = 0; ik < nk; ik++)
				check_matmul(&v[iv], (enum kcpu_wtype)wt, ks[ik]);
		}
	}
}

/*
 * Hand examples through every table.  Float types: row 0 = 0 1 2 3 0 1 ...
 * against x = +1 (first half), -1 (second half) gives 24 - 24 = 0; row 1
 * = 7 at j = 5 gives 7 (Q8_0 holds 7 as 127 * fp16(7 / 127): 7 within 4e-3).
 * Block types from hand-made blocks: Q8_0 w = 2 * 0.5, x = j * 0.25 gives
 * sum 0.25 j = 124; Q4_0 nibbles 8 (low: 0) and 9 (high: 1) at d = 1 against
 * x = j - 16 gives sum_{j >= 16} (j - 16) = 120.
 */
static void test_matmul_by_hand(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);
	float wf[2][32], xf[32];
	uint8_t w[2][128], x[128], xq[34];
	struct quant_block_q8_0 bq8 = { .d = 0x3800 /* 0.5 */ };
	struct quant_block_q4_0 bq4 = { .d = 0x3c00 /* 1 */ };

	(void)state;
	for (int j = 0; j < 32; j++) {
		wf[0][j] = (float)(j % 4);
		wf[1][j] = j == 5 ? 7.0f : 0.0f;
		xf[j] = j < 16 ? 1.0f : -1.0f;
		bq8.qs[j] = 2;
		xq[2 + j] = (uint8_t)(j - 16);
	}
	memset(bq4.qs, 0x98, sizeof(bq4.qs));
	xq[0] = 0x00;
	xq[1] = 0x3c; /* x scale 1 */
	for (int iv = 0; iv < nv; iv++) {
		for (int wt = 0; wt < KCPU_W_COUNT; wt++) {
			float y[2] = { -1, -1 };
			const struct kcpu_matmul_args a = {
				.w = w,
				.w_row_bytes = 128,
				.x = x,
				.x_row_bytes = 128,
				.y = y,
				.ldy = 2,
				.n = 1,
				.k = 32,
			};

			if (wt == KCPU_W_Q4_0) {
				memcpy(w[0], &bq4, sizeof(bq4));
				memcpy(x, xq, sizeof(xq));
				v[iv].ops.matmul[wt](&a, 0, 1);
				assert_true(y[0] == 120.0f);
				continue;
			}
			encode_row((enum kcpu_wtype)wt, wf[0], w[0], 32);
			encode_row((enum kcpu_wtype)wt, wf[1], w[1], 32);
			if (kcpu_act_of((enum kcpu_wtype)wt) == KCPU_ACT_F32)
				memcpy(x, xf, sizeof(xf));
			else
				v[iv].ops.quantize_q8_0(xf, x, 32);
			v[iv].ops.matmul[wt](&a, 0, 2);
			assert_true(y[0] == 0.0f);
			assert_float_equal(y[1], 7.0f, 4e-3);
			if (wt == KCPU_W_Q8_0) {
				memcpy(w[0], &bq8, sizeof(bq8));
				for (int j = 0; j < 32; j++)
					x[2 + j] = (uint8_t)j;
				x[0] = 0x00;
				x[1] = 0x34; /* 0.25 */
				v[iv].ops.matmul[wt](&a, 0, 1);
				assert_true(y[0] == 124.0f);
			}
		}
	}
}

/*
 * Batch invariance, bit for bit: 13 tokens in one call; each token alone;
 * tokens in odd-sized groups at odd offsets; rows split at odd places.
 */
static void test_matmul_batch_invariance(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);
	const int m = 13, n = 13;

	(void)state;
	for (int iv = 0; iv < nv; iv++) {
		for (int wt = 0; wt < KCPU_W_COUNT; wt++) {
			const int block = kcpu_act_of((enum kcpu_wtype)wt) == KCPU_ACT_Q8_0;
			const int *ks = block ? k_block : k_float;
			const size_t nk = block ? sizeof(k_block) / sizeof(int)
						: sizeof(k_float) / sizeof(int);

			for (size_t ik = 0; ik < nk; ik++) {
				struct problem p;
				float *yall, *y1, *yg, *ys;
				const int groups[] = { 3, 1, 5, 4 }; /* 13 tokens */
				const int splits[] = { 0, 1, 6, 7, 12, 13 };

				problem_make(&p, (enum kcpu_wtype)wt, m, n, ks[ik]);
				yall = ybuf(&p);
				y1 = ybuf(&p);
				yg = ybuf(&p);
				ys = ybuf(&p);
				run_mm(&v[iv].ops, &p, yall, 0, n, 0, m);
				for (int i = 0; i < n; i++)
					run_mm(&v[iv].ops, &p, y1, i, 1, 0, m);
				for (int g = 0, i = 0; g < 4; i += groups[g++])
					run_mm(&v[iv].ops, &p, yg, i, groups[g], 0, m);
				for (int s = 0; s + 1 < 6; s++)
					run_mm(&v[iv].ops, &p, ys, 0, n, splits[s], splits[s + 1]);
				for (int i = 0; i < n; i++) {
					const size_t off = (size_t)i * p.ldy, len = (size_t)m * 4;

					if (memcmp(yall + off, y1 + off, len) ||
					    memcmp(yall + off, yg + off, len) ||
					    memcmp(yall + off, ys + off, len))
						fail_msg(
							"%s %s k=%d: token %d differs across batch shapes",
							v[iv].name, wt_names[wt], ks[ik], i);
				}
				free(yall);
				free(y1);
				free(yg);
				free(ys);
				problem_free(&p);
			}
		}
	}
}

/* The VNNI and maddubs AVX-512 paths compute the same integers: same bits. */
static void test_matmul_vnni_same_bits(void **state)
{
#if defined(__x86_64__)
	const struct kcpu_ops *ops = kcpu_get(KCPU_ISA_AVX512);

	(void)state;
	if (!ops || !__builtin_cpu_supports("avx512vnni")) {
		print_message("[  SKIP    ] no AVX-512 VNNI on this CPU\n");
		skip();
	}
	for (int q4 = 0; q4 < 2; q4++) {
		struct problem p;
		float *ya, *yb;

		problem_make(&p, q4 ? KCPU_W_Q4_0 : KCPU_W_Q8_0, 9, 6, 800);
		/* extremes: weights of -128 (possible in a Q8_0 file) and +-127 */
		if (!q4) {
			p.w[2] = (uint8_t)-128;
			p.w[3] = 127;
			p.w[p.wrb + 4] = (uint8_t)-127;
		}
		ya = ybuf(&p);
		yb = ybuf(&p);
		run_mm(ops, &p, ya, 0, p.n, 0, p.m);
		if (q4)
			kcpu_avx512_matmul_q4_0_novnni(&(struct kcpu_matmul_args){ p.w, p.wrb, p.x,
										   p.xrb, yb, p.ldy,
										   p.n, p.k },
						       0, p.m);
		else
			kcpu_avx512_matmul_q8_0_novnni(&(struct kcpu_matmul_args){ p.w, p.wrb, p.x,
										   p.xrb, yb, p.ldy,
										   p.n, p.k },
						       0, p.m);
		assert_memory_equal(ya, yb, (size_t)p.n * p.ldy * 4);
		free(ya);
		free(yb);
		problem_free(&p);
	}
#else
	(void)state;
	skip();
#endif
}

/* --- quantize, get_row ------------------------------------------------------- */

static void test_quantize_q8_0_bytes(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);
	enum { K = 32 * 12 };
	float x[K];
	uint8_t want[K / 32 * 34], got[K / 32 * 34 + 1];

	(void)state;
	for (int round = 0; round < 50; round++) {
		for (int j = 0; j < K; j++)
			x[j] = frnd() * ldexpf(1.0f, (int)(rnd() % 20) - 10);
		for (int j = 0; j < 32; j++) {
			x[j] = 0.0f;			    /* an all-zero block: d = 0 */
			x[32 + j] = (float)(j - 16) + 0.5f; /* ties (amax 16.5) */
			x[64 + j] = j == 0 ? 127.0f : (float)j - 0.5f; /* id = 1: exact ties */
		}
		x[96] = -1e-30f;
		quant_row_q8_0(x, (struct quant_block_q8_0 *)want, K);
		for (int iv = 0; iv < nv; iv++) {
			memset(got, 0x5a, sizeof(got));
			v[iv].ops.quantize_q8_0(x, got, K);
			if (memcmp(got, want, sizeof(want)))
				fail_msg("%s quantize_q8_0 differs from quant_row_q8_0",
					 v[iv].name);
			assert_int_equal(got[sizeof(want)], 0x5a);
		}
	}
}

static void test_get_row(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);
	enum { K = 96 };
	float x[K], want[K], got[K + 1];
	uint8_t enc[K * 4];

	(void)state;
	for (int j = 0; j < K; j++)
		x[j] = frnd() * 3.0f;
	for (int wt = 0; wt < KCPU_W_COUNT; wt++) {
		encode_row((enum kcpu_wtype)wt, x, enc, K);
		switch (wt) {
		case KCPU_W_F32:
			memcpy(want, x, sizeof(x));
			break;
		case KCPU_W_F16:
			quant_row_from_fp16((const uint16_t *)enc, want, K);
			break;
		case KCPU_W_BF16:
			quant_row_from_bf16((const uint16_t *)enc, want, K);
			break;
		case KCPU_W_Q8_0:
			quant_dequant_row_q8_0((const void *)enc, want, K);
			break;
		default:
			quant_dequant_row_q4_0((const void *)enc, want, K);
			break;
		}
		for (int iv = 0; iv < nv; iv++) {
			got[K] = 12345.0f;
			v[iv].ops.get_row[wt](enc, got, K);
			assert_memory_equal(got, want, sizeof(want));
			assert_true(got[K] == 12345.0f);
		}
	}
}

/* --- element ops --------------------------------------------------------------- */

static void test_rope_by_hand(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);
	/* pair 0 turns by 90 degrees, pair 1 by atan2(0.8, 0.6) */
	const float cs[4] = { 0.0f, 1.0f, 0.6f, 0.8f };
	/* two heads of 6, rope_dim 4: dims 4, 5 stay */
	const float x0[12] = { 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, -5, -6 };
	const float want_norm[6] = { -2, 1, -1.4f, 4.8f, 5, 6 };
	const float want_neox[6] = { -3, -2, 1, 4, 5, 6 };

	(void)state;
	for (int iv = 0; iv < nv; iv++) {
		for (int neox = 0; neox < 2; neox++) {
			float x[12];

			memcpy(x, x0, sizeof(x));
			v[iv].ops.rope(x, 2, 6, 4, cs, neox);
			for (int h = 0; h < 2; h++)
				for (int j = 0; j < 6; j++) {
					float w = (neox ? want_neox : want_norm)[j];

					if (h == 1 && j >= 4)
						w = -w;
					assert_float_equal(x[h * 6 + j], w, 1e-6);
				}
		}
	}
}

static void test_rmsnorm(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);
	const float x[4] = { 1, 2, 3, 4 }, w[4] = { 1, 1, 2, 0.5f };

	(void)state;
	for (int iv = 0; iv < nv; iv++) {
		float y[4];
		const double s = 1.0 / sqrt(7.5 + 1e-5); /* mean of squares 30 / 4 */

		v[iv].ops.rmsnorm(x, w, y, 4, 1e-5f);
		for (int j = 0; j < 4; j++)
			assert_float_equal(y[j], x[j] * s * w[j], 1e-6);
	}
	/* Against the reference, in place, odd lengths: the double sums differ only in order. */
	for (int n = 1; n <= 800; n += (n < 40 ? 1 : 97)) {
		float *xs = malloc(n * 4), *ws = malloc(n * 4), *yr = malloc(n * 4),
		      *yv = malloc(n * 4);

		for (int j = 0; j < n; j++) {
			xs[j] = frnd() * 10.0f;
			ws[j] = frnd();
		}
		kcpu_ref_rmsnorm(xs, ws, yr, n, 1e-6f);
		for (int iv = 1; iv < nv; iv++) {
			memcpy(yv, xs, n * 4);
			v[iv].ops.rmsnorm(yv, ws, yv, n, 1e-6f);
			for (int j = 0; j < n; j++)
				if (!(fabsf(yv[j] - yr[j]) <= 2.5e-7f * fabsf(yr[j])))
					fail_msg("%s rmsnorm n=%d [%d]: %.9g vs %.9g", v[iv].name,
						 n, j, yv[j], yr[j]);
		}
		free(xs);
		free(ws);
		free(yr);
		free(yv);
	}
}

/*
 * swiglu with a vector exp: within 1e-6 relative of expf-based reference
 * (a few ulp), over ordinary values and the tails where exp under- or
 * overflows.  add and to_f16 must be exact.
 */
static void test_elementwise(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);
	enum { N = 1000 };
	static float g[N], u[N], yr[N], yv[N];
	static uint16_t hr[N], hv[N + 1];

	(void)state;
	for (int j = 0; j < N; j++) {
		g[j] = frnd() * (j < 500 ? 12.0f : 120.0f);
		u[j] = frnd() * 4.0f;
	}
	g[0] = 0.0f;
	g[1] = -0.0f;
	g[2] = 88.5f;
	g[3] = -88.5f;
	g[4] = 1e-20f;
	g[5] = -104.5f;
	g[6] = 1e5f;
	g[7] = -1e5f;
	for (int n = 1; n <= N; n += (n < 40 ? 1 : 331)) {
		kcpu_ref_swiglu(g, u, yr, n);
		kcpu_ref_to_f16(g, hr, n);
		for (int iv = 1; iv < nv; iv++) {
			memcpy(yv, g, n * 4);
			v[iv].ops.swiglu(yv, u, yv, n); /* in place over gate */
			for (int j = 0; j < n; j++)
				if (!(fabsf(yv[j] - yr[j]) <= 1e-6f * fabsf(yr[j]) + 1e-37f))
					fail_msg("%s swiglu(%.9g) = %.9g, reference %.9g",
						 v[iv].name, g[j], yv[j], yr[j]);
			memcpy(yv, u, n * 4);
			v[iv].ops.add(yv, g, n);
			for (int j = 0; j < n; j++)
				assert_true(yv[j] == u[j] + g[j]);
			hv[n] = 0x1234;
			v[iv].ops.to_f16(g, hv, n);
			assert_memory_equal(hv, hr, n * 2);
			assert_int_equal(hv[n], 0x1234);
		}
	}
}

/* --- attention ---------------------------------------------------------------- */

/*
 * A paged layout: n_blocks blocks of block_tokens slots, K rows then V rows
 * per block, n_kv_heads heads per slot, blocks in shuffled order; the test
 * head is head 1.  Contiguous copies kc/vc hold the same values (as
 * converted to the storage type), for a plain double reference.
 */
static void check_attn(const struct variant *v, int f16, int head_dim, int n_kv, int block_tokens,
		       int equal_scores)
{
	const int n_heads = 3, head = 1, es = f16 ? 2 : 4;
	const int n_blocks = (n_kv + block_tokens - 1) / block_tokens + 2;
	const size_t row_stride = (size_t)n_heads * head_dim * es;
	const size_t v_offset = row_stride * block_tokens;
	const size_t block_bytes = 2 * v_offset + 64;
	uint8_t *region = calloc((size_t)n_blocks, block_bytes);
	int32_t *table = malloc(sizeof(int32_t) * n_blocks);
	float *q = malloc(head_dim * 4), *kc = malloc((size_t)n_kv * head_dim * 4);
	float *vc = malloc((size_t)n_kv * head_dim * 4), *out = malloc((head_dim + 1) * 4);
	float *scores = malloc((n_kv + 1) * 4);
	double *want = calloc(head_dim, sizeof(double)), *p = malloc(n_kv * sizeof(double));
	double *mag = malloc(n_kv * sizeof(double)), ptol = 0.0;

	for (int b = 0; b < n_blocks; b++)
		table[b] = b;
	for (int b = n_blocks - 1; b > 0; b--) {
		const int o = (int)(rnd() % (b + 1));
		const int32_t t = table[b];

		table[b] = table[o];
		table[o] = t;
	}
	for (int j = 0; j < head_dim; j++)
		q[j] = equal_scores ? 0.0f : frnd();
	for (int t = 0; t < n_kv; t++) {
		uint8_t *kr = region + (size_t)table[t / block_tokens] * block_bytes +
			      (size_t)(t % block_tokens) * row_stride +
			      (size_t)head * head_dim * es;

		for (int j = 0; j < head_dim; j++) {
			float kv = frnd() * 3.0f, vv = frnd();

			if (f16) {
				const uint16_t hk = quant_fp32_to_fp16(kv),
					       hvv = quant_fp32_to_fp16(vv);

				kv = quant_fp16_to_fp32(hk);
				vv = quant_fp16_to_fp32(hvv);
				memcpy(kr + 2 * j, &hk, 2);
				memcpy(kr + v_offset + 2 * j, &hvv, 2);
			} else {
				memcpy(kr + 4 * j, &kv, 4);
				memcpy(kr + v_offset + 4 * j, &vv, 4);
			}
			kc[(size_t)t * head_dim + j] = kv;
			vc[(size_t)t * head_dim + j] = vv;
		}
	}

	const float scale = 1.0f / sqrtf((float)head_dim);
	double mx = -INFINITY, sum = 0.0;

	for (int t = 0; t < n_kv; t++) {
		double d = 0.0;

		mag[t] = 0.0;
		for (int j = 0; j < head_dim; j++) {
			d += (double)q[j] * kc[(size_t)t * head_dim + j];
			mag[t] += fabs((double)q[j] * kc[(size_t)t * head_dim + j]) * scale;
		}
		p[t] = d * scale;
		mx = p[t] > mx ? p[t] : mx;
	}
	/*
	 * Each float score is off by at most (head_dim + 8) 2^-24 mag_t, and the
	 * max by as much: p_t's relative error is bounded by twice the largest
	 * of those (exp turns absolute into relative error) plus a few ulp of
	 * exp and of the normalisation.
	 */
	for (int t = 0; t < n_kv; t++)
		ptol = fmax(ptol, 2.0 * (head_dim + 8) * ldexp(mag[t], -24));
	ptol = 2.0 * ptol + 1e-6;
	for (int t = 0; t < n_kv; t++)
		sum += (p[t] = exp(p[t] - mx));
	for (int t = 0; t < n_kv; t++) {
		p[t] /= sum;
		for (int j = 0; j < head_dim; j++)
			want[j] += p[t] * vc[(size_t)t * head_dim + j];
	}

	const struct kcpu_attn_args a = {
		.q = q,
		.k_head = region + (size_t)head * head_dim * es,
		.v_offset = v_offset,
		.block_bytes = block_bytes,
		.row_stride = row_stride,
		.block_table = table,
		.block_tokens = block_tokens,
		.n_kv = n_kv,
		.head_dim = head_dim,
		.kv_f16 = f16,
		.scale = scale,
		.scores = scores,
		.out = out,
	};

	out[head_dim] = 777.0f;
	v->ops.attn_head(&a);
	assert_true(out[head_dim] == 777.0f);
	/*
	 * |V| < 1 and sum p = 1: float accumulation over n_kv terms and a few
	 * ulp in exp bound the error by ~ (n_kv + 8) 2^-23 absolutely.
	 */
	for (int j = 0; j < head_dim; j++) {
		const double tol = (n_kv + 8) * ldexp(1.0, -23) + ptol;

		if (equal_scores) {
			double mean = 0.0;

			for (int t = 0; t < n_kv; t++)
				mean += vc[(size_t)t * head_dim + j];
			want[j] = mean / n_kv;
		}
		if (!(fabs(out[j] - want[j]) <= tol))
			fail_msg("%s attn f16=%d hd=%d n_kv=%d bt=%d: out[%d] = %.9g, want %.9g",
				 v->name, f16, head_dim, n_kv, block_tokens, j, out[j], want[j]);
	}
	for (int t = 0; t < n_kv; t++)
		if (!(fabs(scores[t] - p[t]) <= ptol * p[t] + 1e-30))
			fail_msg("%s attn: p[%d] = %.9g, want %.9g", v->name, t, scores[t], p[t]);
	free(region);
	free(table);
	free(q);
	free(kc);
	free(vc);
	free(out);
	free(scores);
	free(want);
	free(p);
	free(mag);
}

static void test_attention(void **state)
{
	struct variant v[KCPU_ISA_COUNT + 2];
	const int nv = variants(v);
	const int hds[] = { 4, 16, 24, 64, 80, 128 };
	const int nkvs[] = { 1, 2, 15, 16, 17, 100, 300 };

	(void)state;
	for (int iv = 0; iv < nv; iv++)
		for (int f16 = 0; f16 < 2; f16++)
			for (size_t h = 0; h < sizeof(hds) / sizeof(int); h++)
				for (size_t t = 0; t < sizeof(nkvs) / sizeof(int); t++) {
					check_attn(&v[iv], f16, hds[h], nkvs[t], 16, 0);
					check_attn(&v[iv], f16, hds[h], nkvs[t], 3, t % 2);
				}
}

/* --- dispatch ---------------------------------------------------------------- */

static void test_dispatch(void **state)
{
	const struct kcpu_ops *best;

	(void)state;
	unsetenv("DUET_ISA"); /* the run's own choice must not steer this test */
	best = kcpu_best();
	assert_non_null(best);
	assert_ptr_equal(kcpu_get(KCPU_ISA_SCALAR), &kcpu_ops_scalar);
	for (int isa = 0; isa < KCPU_ISA_COUNT; isa++) {
		const struct kcpu_ops *ops = kcpu_get((enum kcpu_isa)isa);

		if (ops) {
			assert_int_equal(ops->isa, isa);
			assert_string_equal(ops->name, kcpu_isa_name((enum kcpu_isa)isa));
			assert_true(best->isa >= ops->isa);
		}
	}
	setenv("DUET_ISA", "scalar", 1);
	assert_ptr_equal(kcpu_best(), &kcpu_ops_scalar);
	if (kcpu_get(KCPU_ISA_AVX2)) {
		setenv("DUET_ISA", "avx2", 1);
		assert_ptr_equal(kcpu_best(), kcpu_get(KCPU_ISA_AVX2));
	}
	setenv("DUET_ISA", "nonsense", 1);
	assert_ptr_equal(kcpu_best(), best);
	unsetenv("DUET_ISA");
	assert_int_equal(kcpu_wtype_of_ggml(0), KCPU_W_F32);
	assert_int_equal(kcpu_wtype_of_ggml(1), KCPU_W_F16);
	assert_int_equal(kcpu_wtype_of_ggml(2), KCPU_W_Q4_0);
	assert_int_equal(kcpu_wtype_of_ggml(8), KCPU_W_Q8_0);
	assert_int_equal(kcpu_wtype_of_ggml(30), KCPU_W_BF16);
	assert_int_equal(kcpu_wtype_of_ggml(12), -1);
	assert_int_equal(kcpu_act_of(KCPU_W_Q4_0), KCPU_ACT_Q8_0);
	assert_int_equal(kcpu_act_of(KCPU_W_BF16), KCPU_ACT_F32);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dispatch),
		cmocka_unit_test(test_matmul_by_hand),
		cmocka_unit_test(test_matmul_vs_reference),
		cmocka_unit_test(test_matmul_batch_invariance),
		cmocka_unit_test(test_matmul_vnni_same_bits),
		cmocka_unit_test(test_quantize_q8_0_bytes),
		cmocka_unit_test(test_get_row),
		cmocka_unit_test(test_rope_by_hand),
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_elementwise),
		cmocka_unit_test(test_attention),
	};

	return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
