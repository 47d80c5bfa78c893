/* SPDX-License-Identifier: MIT */
/*
 * AVX-512 (F, BW, VL; VNNI when present) kernels, compiled with function
 * target attributes so the file builds with the project's plain flags and
 * only runs where dispatch.c found the instructions.
 *
 * Batch invariance: every matmul output element is one zmm accumulator fed
 * with the same chunks of k in the same order (full 16-float or 64-quant
 * chunks, then one masked or half chunk), then one _mm512_reduce_add_ps.
 * The tiles (4 tokens x 4 rows for prefill, 1 x 8 for decode, and the 1 x 4,
 * 4 x 1 and 1 x 1 tails) differ only in how many such accumulators run side
 * by side, so y[i][r] is the same bits whatever n, the token's place in a
 * tile, or the r0..r1 split.
 *
 * Q8_0 / Q4_0: the integer dot products are exact, four int8 pairs per
 * 32-bit lane either way (vpdpbusd, or vpmaddubsw + vpmaddwd), so the VNNI
 * and non-VNNI paths give identical bits.  Only the float accumulation of
 * lane * (d_w * d_x) differs from the reference's per-block order.
 */
#include "kernels/cpu/kernels-impl.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/quant.h"

/*
 * One target for the whole file, VNNI included, because the VNNI and maddubs
 * matmuls share their always_inline tile code (and GCC inlines only into
 * functions with a superset of the callee's target).  Only *_vnni functions
 * use VNNI instructions; the rest must run on AVX-512 CPUs without it
 * (Skylake-SP): check with objdump -d that vpdpbusd/vpdpwssd appear in
 * matmul_q*_vnni alone after changing this file.
 */
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))
#define INL static inline __attribute__((always_inline))

#define ROW(base, i, bytes) ((const uint8_t *)(base) + (size_t)(i) * (bytes))

/* --- f32 / f16 / bf16 weights ------------------------------------------------ */

/* 16 weights from element j of a row, as f32; the masked form zeroes the lanes off m. */
T512 INL __m512 load_w(int wt, const uint8_t *w, int j)
{
	switch (wt) {
	case KCPU_W_F16:
		return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 2 * (size_t)j)));
	case KCPU_W_BF16:
		return _mm512_castsi512_ps(
			_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
						  (const __m256i *)(w + 2 * (size_t)j))),
					  16));
	default:
		return _mm512_loadu_ps(w + 4 * (size_t)j);
	}
}

T512 INL __m512 load_w_mask(int wt, const uint8_t *w, int j, __mmask16 m)
{
	switch (wt) {
	case KCPU_W_F16:
		return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + 2 * (size_t)j));
	case KCPU_W_BF16:
		return _mm512_castsi512_ps(_mm512_slli_epi32(
			_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + 2 * (size_t)j)), 16));
	default:
		return _mm512_maskz_loadu_ps(m, w + 4 * (size_t)j);
	}
}

/*
 * Decode streams each weight row once, and rows are short (13 cache lines
 * for a Q8_0 row of 768): too short for the hardware prefetcher to ramp up
 * on each.  So every row in flight asks for the bytes [off, off + len) of
 * the row 2 tr rows further on, into L2 (prefetcht1: measured on Zen 4, it
 * is 1.5-2x faster than prefetcht0, whose L1 misses queue up, and 2 tr rows
 * ahead beats tr and 4 tr).  Prefetches never fault, past the end or not.
 */
T512 INL void prefetch_next(const uint8_t *const *w, int tr, size_t row_bytes, size_t off,
			    size_t len)
{
#pragma GCC unroll 8
	for (int r = 0; r < tr; r++) {
		const char *p = (const char *)(w[r] + (size_t)(2 * tr) * row_bytes + off);

		_mm_prefetch(p, _MM_HINT_T1);
		if (len > 64) /* chunks of <= 64 bytes in a row touch every line */
			_mm_prefetch(p + len - 1, _MM_HINT_T1);
	}
}

/* y for tokens i0..i0+tn-1 and rows r0..r0+tr-1 (tn, tr <= 4, constants after inlining). */
T512 INL void tile_f(int wt, const struct kcpu_matmul_args *a, int i0, int tn, int r0, int tr)
{
	const int k = a->k;
	const float *x[4];
	const uint8_t *w[8];
	__m512 acc[4][8];
	int j = 0;

#pragma GCC unroll 4
	for (int t = 0; t < tn; t++)
		x[t] = (const float *)ROW(a->x, i0 + t, a->x_row_bytes);
#pragma GCC unroll 8
	for (int r = 0; r < tr; r++)
		w[r] = ROW(a->w, r0 + r, a->w_row_bytes);
#pragma GCC unroll 4
	for (int t = 0; t < tn; t++)
#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			acc[t][r] = _mm512_setzero_ps();

	for (; j + 16 <= k; j += 16) {
		__m512 xv[4], wv[8];

		if (i0 == 0) /* the first token tile over these rows fetches the next ones */
			prefetch_next(w, tr, a->w_row_bytes, (size_t)j * (wt == KCPU_W_F32 ? 4 : 2),
				      16 * (wt == KCPU_W_F32 ? 4 : 2));

#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			wv[r] = load_w(wt, w[r], j);
#pragma GCC unroll 4
		for (int t = 0; t < tn; t++) {
			xv[t] = _mm512_loadu_ps(x[t] + j);
#pragma GCC unroll 8
			for (int r = 0; r < tr; r++)
				acc[t][r] = _mm512_fmadd_ps(wv[r], xv[t], acc[t][r]);
		}
	}
	if (j < k) {
		const __mmask16 m = (__mmask16)((1u << (k - j)) - 1);
		__m512 xv[4], wv[8];

#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			wv[r] = load_w_mask(wt, w[r], j, m);
#pragma GCC unroll 4
		for (int t = 0; t < tn; t++) {
			xv[t] = _mm512_maskz_loadu_ps(m, x[t] + j);
#pragma GCC unroll 8
			for (int r = 0; r < tr; r++)
				acc[t][r] = _mm512_fmadd_ps(wv[r], xv[t], acc[t][r]);
		}
	}
#pragma GCC unroll 4
	for (int t = 0; t < tn; t++)
#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			a->y[(size_t)(i0 + t) * a->ldy + r0 + r] = _mm512_reduce_add_ps(acc[t][r]);
}

/*
 * Rows outermost: a block of 4 weight rows stays in L1 while every token
 * passes over it, so prefill streams the weights from memory once.
 */
T512 INL void matmul_f(int wt, const struct kcpu_matmul_args *a, int r0, int r1)
{
	int r = r0;

	/* Decode: no token tile, so eight rows in flight. */
	if (a->n < 4)
		for (; r + 8 <= r1; r += 8)
			for (int i = 0; i < a->n; i++)
				tile_f(wt, a, i, 1, r, 8);

	for (; r + 4 <= r1; r += 4) {
		int i = 0;

		for (; i + 4 <= a->n; i += 4)
			tile_f(wt, a, i, 4, r, 4);
		for (; i < a->n; i++)
			tile_f(wt, a, i, 1, r, 4);
	}
	for (; r < r1; r++) {
		int i = 0;

		for (; i + 4 <= a->n; i += 4)
			tile_f(wt, a, i, 4, r, 1);
		for (; i < a->n; i++)
			tile_f(wt, a, i, 1, r, 1);
	}
}

T512 static void matmul_f32(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_f(KCPU_W_F32, a, r0, r1);
}

T512 void kcpu_avx512_matmul_f16(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_f(KCPU_W_F16, a, r0, r1);
}

T512 void kcpu_avx512_matmul_bf16(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_f(KCPU_W_BF16, a, r0, r1);
}

/* --- Q8_0 / Q4_0 weights x Q8_0 activations ---------------------------------- */

#define QB 34  /* bytes of a Q8_0 block */
#define Q4B 18 /* bytes of a Q4_0 block */

/* Quants of blocks b and b + 1 (or b alone, zero above, when two == 0) of a Q8_0 row. */
T512 INL __m512i load_q8(const uint8_t *row, int b, int two)
{
	const __m256i lo = _mm256_loadu_si256((const __m256i *)(row + (size_t)b * QB + 2));

	if (!two)
		return _mm512_zextsi256_si512(lo);
	return _mm512_inserti64x4(
		_mm512_castsi256_si512(lo),
		_mm256_loadu_si256((const __m256i *)(row + (size_t)(b + 1) * QB + 2)), 1);
}

/*
 * Q4_0 nibbles of blocks b, b + 1 as unsigned bytes 0..15, in the order
 * [b: 0..15 | b+1: 0..15 | b: 16..31 | b+1: 16..31] (one shift for both
 * blocks); q4_x() puts the activation quants in the same order.
 */
T512 INL __m512i load_q4(const uint8_t *row, int b, int two)
{
	__m256i v = _mm256_zextsi128_si256(
		_mm_loadu_si128((const __m128i *)(row + (size_t)b * Q4B + 2)));

	if (two)
		v = _mm256_inserti128_si256(
			v, _mm_loadu_si128((const __m128i *)(row + (size_t)(b + 1) * Q4B + 2)), 1);
	return _mm512_and_si512(
		_mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1),
		_mm512_set1_epi8(0x0f));
}

T512 INL __m512i q4_x(__m512i x)
{
	return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), x);
}

/*
 * Scales d of blocks b, b + 1 of a row with block size bs, as f32 lanes:
 * block b + 1 in the lanes of `mask` (0xff00 for the Q8_0 order, 0xf0f0 for
 * the Q4_0 order), block b in the others.
 */
T512 INL __m512 load_d(const uint8_t *row, size_t bs, int b, int two, __mmask16 mask)
{
	uint16_t h0, h1 = 0;

	memcpy(&h0, row + (size_t)b * bs, 2);
	if (two)
		memcpy(&h1, row + (size_t)(b + 1) * bs, 2);
	return _mm512_cvtph_ps(_mm256_mask_blend_epi16(mask, _mm256_set1_epi16((short)h0),
						       _mm256_set1_epi16((short)h1)));
}

/*
 * Per-lane sums of 4 products w[j] * x[j] (w from load_q8 / load_q4, x the
 * activation quants in the same order).  nxb is minus the token's bias
 * term, computed once per chunk: VNNI feeds vpdpbusd unsigned w + 128 (Q8_0)
 * or the raw nibble (Q4_0), starting from -(128 or 8) * x summed the same
 * way.  Without VNNI, Q8_0 uses |w| and x with w's sign (|w| <= 128 and
 * |x| <= 127: no vpmaddubsw saturation; x is never -128 since our quantizer
 * clamps to +-127), Q4_0 the nibble and x, plus the bias.
 */
T512 INL __m512i xbias(int q4, int vnni, __m512i x)
{
	const __m512i c = _mm512_set1_epi8(q4 ? 8 : (char)0x80);
	__m512i s;

	if (vnni)
		s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c, x);
	else if (q4)
		s = _mm512_madd_epi16(_mm512_maddubs_epi16(c, x), _mm512_set1_epi16(1));
	else
		return _mm512_setzero_si512();
	return _mm512_sub_epi32(_mm512_setzero_si512(), s);
}

T512 INL __m512i qdot(int q4, int vnni, __m512i w, __m512i x, __m512i nxb)
{
	const __m512i ones = _mm512_set1_epi16(1);

	if (vnni) {
		if (!q4)
			w = _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
		return _mm512_dpbusd_epi32(nxb, w, x);
	}
	if (q4)
		return _mm512_add_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(w, x), ones), nxb);

	const __m512i xs =
		_mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);

	return _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(w), xs), ones);
}

T512 INL void tile_q(int q4, int vnni, const struct kcpu_matmul_args *a, int i0, int tn, int r0,
		     int tr)
{
	const int nb = a->k / 32;
	const size_t wbs = q4 ? Q4B : QB;
	const __mmask16 dmask = q4 ? 0xf0f0 : 0xff00;
	const uint8_t *x[4], *w[8];
	__m512 acc[4][8];

#pragma GCC unroll 4
	for (int t = 0; t < tn; t++)
		x[t] = ROW(a->x, i0 + t, a->x_row_bytes);
#pragma GCC unroll 8
	for (int r = 0; r < tr; r++)
		w[r] = ROW(a->w, r0 + r, a->w_row_bytes);
#pragma GCC unroll 4
	for (int t = 0; t < tn; t++)
#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			acc[t][r] = _mm512_setzero_ps();

	for (int b = 0; b < nb; b += 2) {
		const int two = b + 1 < nb;
		__m512i xq[4], xb[4], wq[8];
		__m512 xd[4], wd[8];

		if (i0 == 0) /* the first token tile over these rows fetches the next ones */
			prefetch_next(w, tr, a->w_row_bytes, (size_t)b * wbs, 2 * wbs);

#pragma GCC unroll 4
		for (int t = 0; t < tn; t++) {
			xq[t] = load_q8(x[t], b, two);
			if (q4)
				xq[t] = q4_x(xq[t]);
			xb[t] = xbias(q4, vnni, xq[t]);
			xd[t] = load_d(x[t], QB, b, two, dmask);
		}
#pragma GCC unroll 8
		for (int r = 0; r < tr; r++) {
			wq[r] = q4 ? load_q4(w[r], b, two) : load_q8(w[r], b, two);
			wd[r] = load_d(w[r], wbs, b, two, dmask);
		}
#pragma GCC unroll 4
		for (int t = 0; t < tn; t++)
#pragma GCC unroll 8
			for (int r = 0; r < tr; r++) {
				const __m512i s = qdot(q4, vnni, wq[r], xq[t], xb[t]);

				acc[t][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
							    _mm512_mul_ps(wd[r], xd[t]), acc[t][r]);
			}
	}
#pragma GCC unroll 4
	for (int t = 0; t < tn; t++)
#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			a->y[(size_t)(i0 + t) * a->ldy + r0 + r] = _mm512_reduce_add_ps(acc[t][r]);
}

T512 INL void matmul_q(int q4, int vnni, const struct kcpu_matmul_args *a, int r0, int r1)
{
	int r = r0;

	/* Decode: no token tile, so eight rows in flight. */
	if (a->n < 4)
		for (; r + 8 <= r1; r += 8)
			for (int i = 0; i < a->n; i++)
				tile_q(q4, vnni, a, i, 1, r, 8);

	for (; r + 4 <= r1; r += 4) {
		int i = 0;

		for (; i + 4 <= a->n; i += 4)
			tile_q(q4, vnni, a, i, 4, r, 4);
		for (; i < a->n; i++)
			tile_q(q4, vnni, a, i, 1, r, 4);
	}
	for (; r < r1; r++) {
		int i = 0;

		for (; i + 4 <= a->n; i += 4)
			tile_q(q4, vnni, a, i, 4, r, 1);
		for (; i < a->n; i++)
			tile_q(q4, vnni, a, i, 1, r, 1);
	}
}

T512 void kcpu_avx512_matmul_q8_0_novnni(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_q(0, 0, a, r0, r1);
}

T512 void kcpu_avx512_matmul_q4_0_novnni(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_q(1, 0, a, r0, r1);
}

T512 static void matmul_q8_0_vnni(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_q(0, 1, a, r0, r1);
}

T512 static void matmul_q4_0_vnni(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_q(1, 1, a, r0, r1);
}

static void matmul_q8_0(const struct kcpu_matmul_args *a, int r0, int r1)
{
	if (__builtin_cpu_supports("avx512vnni"))
		matmul_q8_0_vnni(a, r0, r1);
	else
		kcpu_avx512_matmul_q8_0_novnni(a, r0, r1);
}

static void matmul_q4_0(const struct kcpu_matmul_args *a, int r0, int r1)
{
	if (__builtin_cpu_supports("avx512vnni"))
		matmul_q4_0_vnni(a, r0, r1);
	else
		kcpu_avx512_matmul_q4_0_novnni(a, r0, r1);
}

/* --- element-wise ops -------------------------------------------------------- */

T512 INL __mmask16 tail_mask(int left)
{
	return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* ggml's Q8_0 quantizer, bit for bit (see quant.c's q8_round). */
T512 static void quantize_q8_0(const float *x, void *dst, int k)
{
	uint8_t *out = dst;

	for (int b = 0; b < k / 32; b++, x += 32, out += QB) {
		const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
		const float amax =
			_mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
		const float d = amax / 127.0f;
		const float id = d != 0.0f ? 1.0f / d : 0.0f;
		const uint16_t h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
		__m128i q[2];

		memcpy(out, &h, 2);
		for (int c = 0; c < 2; c++) {
			__m512 v = _mm512_mul_ps(c ? v1 : v0, _mm512_set1_ps(id));

			v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)),
					  _mm512_set1_ps(127.0f));

			const __m512 t =
				_mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
			const __m512 f = _mm512_sub_ps(v, t);
			const __mmask16 up =
				_mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
			const __mmask16 dn =
				_mm512_cmp_ps_mask(f, _mm512_set1_ps(-0.5f), _CMP_LE_OQ);
			__m512 r = _mm512_mask_add_ps(t, up, t, _mm512_set1_ps(1.0f));

			r = _mm512_mask_sub_ps(r, dn, r, _mm512_set1_ps(1.0f));
			q[c] = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r));
		}
		_mm_storeu_si128((__m128i *)(out + 2), q[0]);
		_mm_storeu_si128((__m128i *)(out + 18), q[1]);
	}
}

/*
 * exp(x) for float lanes, within about 2 ulp of expf over the normal range:
 * x = n ln2 + r (Cody-Waite), |r| <= ln2 / 2, a degree-7 Taylor polynomial
 * (truncation < 0.1 ulp), scaled by 2^n with vscalefps, which also rounds
 * subnormal results and overflows to inf.  NaN stays NaN.
 */
T512 INL __m512 exp512(__m512 x)
{
	x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x); /* NaN: second operand */
	x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);

	const __m512 n =
		_mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
				     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);

	__m512 p = _mm512_set1_ps(1.0f / 5040);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	return _mm512_scalef_ps(p, n);
}

T512 static void swiglu(const float *gate, const float *up, float *out, int n)
{
	for (int j = 0; j < n; j += 16) {
		const __mmask16 m = tail_mask(n - j);
		const __m512 g = _mm512_maskz_loadu_ps(m, gate + j);
		const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
		const __m512 s = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e));

		_mm512_mask_storeu_ps(out + j, m,
				      _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, up + j)));
	}
}

T512 static void add(float *y, const float *x, int n)
{
	for (int j = 0; j < n; j += 16) {
		const __mmask16 m = tail_mask(n - j);

		_mm512_mask_storeu_ps(y + j, m,
				      _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + j),
						    _mm512_maskz_loadu_ps(m, x + j)));
	}
}

T512 static void to_f16(const float *x, uint16_t *y, int n)
{
	for (int j = 0; j < n; j += 16) {
		const __mmask16 m = tail_mask(n - j);
		const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + j),
						  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);

		_mm256_mask_storeu_epi16(y + j, m, h);
	}
}

/* As the reference: float squares summed in double (two 8-lane accumulators). */
T512 static void rmsnorm(const float *x, const float *w, float *y, int n, float eps)
{
	__m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();

	for (int j = 0; j < n; j += 16) {
		const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - j), x + j);
		const __m512 sq = _mm512_mul_ps(v, v);

		s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
		s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(
					       _mm512_extractf64x4_pd(_mm512_castps_pd(sq), 1))));
	}

	const float mean = (float)(_mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) / n);
	const __m512 scale = _mm512_set1_ps(1.0f / sqrtf(mean + eps));

	for (int j = 0; j < n; j += 16) {
		const __mmask16 m = tail_mask(n - j);
		const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), scale);

		_mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + j)));
	}
}

/* --- attention ---------------------------------------------------------------- */

T512 INL const uint8_t *attn_row(const struct kcpu_attn_args *a, int t)
{
	const size_t blk = (size_t)a->block_table[t / a->block_tokens];

	return a->k_head + blk * a->block_bytes + (size_t)(t % a->block_tokens) * a->row_stride;
}

T512 INL __m512 load_kv(const uint8_t *row, int j, __mmask16 m, int f16)
{
	if (f16)
		return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * (size_t)j));
	return _mm512_maskz_loadu_ps(m, row + 4 * (size_t)j);
}

/*
 * Scores, then a softmax with vector exp (see exp512), then out accumulated
 * over the context 64 dimensions at a time in four independent registers.
 */
T512 INL void attn(const struct kcpu_attn_args *a, int f16)
{
	const int hd = a->head_dim, nkv = a->n_kv;
	__m512 vmax = _mm512_set1_ps(-INFINITY), vsum = _mm512_setzero_ps();

	for (int t = 0; t < nkv; t++) {
		const uint8_t *k = attn_row(a, t);
		__m512 acc = _mm512_setzero_ps();

		for (int j = 0; j < hd; j += 16) {
			const __mmask16 m = tail_mask(hd - j);

			acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a->q + j),
					      load_kv(k, j, m, f16), acc);
		}
		a->scores[t] = _mm512_reduce_add_ps(acc) * a->scale;
	}
	for (int t = 0; t < nkv; t += 16)
		vmax = _mm512_mask_max_ps(vmax, tail_mask(nkv - t), vmax,
					  _mm512_maskz_loadu_ps(tail_mask(nkv - t), a->scores + t));

	const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));

	for (int t = 0; t < nkv; t += 16) {
		const __mmask16 m = tail_mask(nkv - t);
		const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, a->scores + t), mx));

		_mm512_mask_storeu_ps(a->scores + t, m, e);
		vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
	}

	const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));

	for (int t = 0; t < nkv; t += 16) {
		const __mmask16 m = tail_mask(nkv - t);

		_mm512_mask_storeu_ps(a->scores + t, m,
				      _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a->scores + t), inv));
	}
	for (int j0 = 0; j0 < hd; j0 += 64) {
		__mmask16 m[4];
		__m512 acc[4];

#pragma GCC unroll 4
		for (int c = 0; c < 4; c++) {
			const int left = hd - j0 - 16 * c;

			m[c] = left <= 0 ? 0 : tail_mask(left);
			acc[c] = _mm512_setzero_ps();
		}
		for (int t = 0; t < nkv; t++) {
			const uint8_t *v = attn_row(a, t) + a->v_offset;
			const __m512 p = _mm512_set1_ps(a->scores[t]);

#pragma GCC unroll 4
			for (int c = 0; c < 4; c++)
				if (m[c])
					acc[c] = _mm512_fmadd_ps(
						p, load_kv(v, j0 + 16 * c, m[c], f16), acc[c]);
		}
#pragma GCC unroll 4
		for (int c = 0; c < 4; c++)
			_mm512_mask_storeu_ps(a->out + j0 + 16 * c, m[c], acc[c]);
	}
}

T512 static void attn_head(const struct kcpu_attn_args *a)
{
	if (a->kv_f16)
		attn(a, 1);
	else
		attn(a, 0);
}

const struct kcpu_ops kcpu_ops_avx512 = {
	.isa = KCPU_ISA_AVX512,
	.name = "avx512",
	.matmul = {
		[KCPU_W_F32] = matmul_f32,
		/* 256-bit F16/BF16 kernels: faster decode on Zen 4 (kernels-impl.h). */
		[KCPU_W_F16] = kcpu_avx2_matmul_f16,
		[KCPU_W_BF16] = kcpu_avx2_matmul_bf16,
		[KCPU_W_Q8_0] = matmul_q8_0,
		[KCPU_W_Q4_0] = matmul_q4_0,
	},
	.quantize_q8_0 = quantize_q8_0,
	.get_row = {
		[KCPU_W_F32] = kcpu_ref_get_row_f32,
		[KCPU_W_F16] = kcpu_ref_get_row_f16,
		[KCPU_W_BF16] = kcpu_ref_get_row_bf16,
		[KCPU_W_Q8_0] = kcpu_ref_get_row_q8_0,
		[KCPU_W_Q4_0] = kcpu_ref_get_row_q4_0,
	},
	.rmsnorm = rmsnorm,
	.rope = kcpu_ref_rope,
	.swiglu = swiglu,
	.add = add,
	.to_f16 = to_f16,
	.attn_head = attn_head,
};
#endif /* __x86_64__ */
