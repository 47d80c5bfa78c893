/* SPDX-License-Identifier: MIT */
/*
 * AVX2 + FMA + F16C kernels, compiled with function target attributes so the
 * file builds with the project's plain flags and only runs where dispatch.c
 * found the instructions.
 *
 * Batch invariance: every matmul output element is one ymm accumulator fed
 * with the same chunks of k in the same order (8 floats, or one 32-quant
 * block, at a time; a zero-padded last chunk), then one fixed horizontal sum
 * (hsum8).  Tiles of 4 tokens x 3 rows for prefill (12 accumulators, 3
 * weight vectors and one activation fill the 16 registers), 1 x 8 for
 * decode, and the 1-token / 1-row tails differ only in how many
 * accumulators run side by side, so y[i][r] is the same bits whatever n,
 * the token's place in a tile, or the r0..r1 split.
 *
 * Q8_0 / Q4_0: exact integer dot products (vpmaddubsw + vpmaddwd, four int8
 * pairs per 32-bit lane), then lane * (d_w * d_x) accumulated in float.
 */
#include "kernels/cpu/kernels-impl.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/quant.h"

#define T2 __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline))

#define ROW(base, i, bytes) ((const uint8_t *)(base) + (size_t)(i) * (bytes))

#define TN 4 /* tokens per tile */
#define TR 3 /* rows per tile */
#define DR 8 /* rows per decode tile (1 token) */

/* The fixed reduction order of every accumulator: halves, then pairs, then lanes. */
T2 INL float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* --- f32 / f16 / bf16 weights ------------------------------------------------ */

/* 8 weights at element j of a row, as f32. */
T2 INL __m256 load_w8(int wt, const uint8_t *w, int j)
{
	switch (wt) {
	case KCPU_W_F16:
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * (size_t)j)));
	case KCPU_W_BF16:
		return _mm256_castsi256_ps(
			_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(
						  (const __m128i *)(w + 2 * (size_t)j))),
					  16));
	default:
		return _mm256_loadu_ps((const float *)(w + 4 * (size_t)j));
	}
}

/* The same for `left` (1..8) weights, the lanes above them zero. */
T2 INL __m256 load_w(int wt, const uint8_t *w, int j, int left)
{
	const size_t es = wt == KCPU_W_F32 ? 4 : 2;
	uint8_t buf[32] = { 0 };

	if (left >= 8)
		return load_w8(wt, w, j);
	memcpy(buf, w + es * (size_t)j, es * (size_t)left);
	return load_w8(wt, buf, 0);
}

T2 INL __m256 load_x(const float *x, int j, int left)
{
	float buf[8] = { 0 };

	if (left >= 8)
		return _mm256_loadu_ps(x + j);
	memcpy(buf, x + j, sizeof(float) * (size_t)left);
	return _mm256_loadu_ps(buf);
}

/*
 * Decode streams each weight row once, and rows are short (13 cache lines
 * for a Q8_0 row of 768): too short for the hardware prefetcher to ramp up
 * on each.  So every row in flight asks for the bytes [off, off + len) of
 * the row 2 tr rows further on, into L2 (prefetcht1: measured on Zen 4, it
 * is 1.5-2x faster than prefetcht0, whose L1 misses queue up, and 2 tr rows
 * ahead beats tr and 4 tr).  Prefetches never fault, past the end or not.
 */
T2 INL void prefetch_next(const uint8_t *const *w, int tr, size_t row_bytes, size_t off, size_t len)
{
#pragma GCC unroll 8
	for (int r = 0; r < tr; r++) {
		const char *p = (const char *)(w[r] + (size_t)(2 * tr) * row_bytes + off);

		_mm_prefetch(p, _MM_HINT_T1);
		if (len > 64) /* chunks of <= 64 bytes in a row touch every line */
			_mm_prefetch(p + len - 1, _MM_HINT_T1);
	}
}

/* y for tokens i0..i0+tn-1 and rows r0..r0+tr-1 (constants after inlining). */
T2 INL void tile_f(int wt, const struct kcpu_matmul_args *a, int i0, int tn, int r0, int tr)
{
	const int k = a->k;
	const float *x[TN];
	const uint8_t *w[DR];
	__m256 acc[TN][DR];
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
			acc[t][r] = _mm256_setzero_ps();

	/* Full chunks, then the zero-padded last one: the same order for every tile shape. */
	for (; j + 8 <= k; j += 8) {
		__m256 wv[DR];

		/* The first token tile over these rows fetches the rows after them. */
		if (i0 == 0)
			prefetch_next(w, tr, a->w_row_bytes, (size_t)j * (wt == KCPU_W_F32 ? 4 : 2),
				      8 * (wt == KCPU_W_F32 ? 4 : 2));
#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			wv[r] = load_w8(wt, w[r], j);
#pragma GCC unroll 4
		for (int t = 0; t < tn; t++) {
			const __m256 xv = _mm256_loadu_ps(x[t] + j);

#pragma GCC unroll 8
			for (int r = 0; r < tr; r++)
				acc[t][r] = _mm256_fmadd_ps(wv[r], xv, acc[t][r]);
		}
	}
	if (j < k) {
		__m256 wv[DR];

#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			wv[r] = load_w(wt, w[r], j, k - j);
#pragma GCC unroll 4
		for (int t = 0; t < tn; t++) {
			const __m256 xv = load_x(x[t], j, k - j);

#pragma GCC unroll 8
			for (int r = 0; r < tr; r++)
				acc[t][r] = _mm256_fmadd_ps(wv[r], xv, acc[t][r]);
		}
	}
#pragma GCC unroll 4
	for (int t = 0; t < tn; t++)
#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			a->y[(size_t)(i0 + t) * a->ldy + r0 + r] = hsum8(acc[t][r]);
}

/* Rows outermost: a block of weight rows stays in L1 while every token passes over it. */
T2 INL void matmul_f(int wt, const struct kcpu_matmul_args *a, int r0, int r1)
{
	int r = r0;

	/* Decode: no token tile, so more rows in flight. */
	if (a->n < TN)
		for (; r + DR <= r1; r += DR)
			for (int i = 0; i < a->n; i++)
				tile_f(wt, a, i, 1, r, DR);

	for (; r + TR <= r1; r += TR) {
		int i = 0;

		for (; i + TN <= a->n; i += TN)
			tile_f(wt, a, i, TN, r, TR);
		for (; i < a->n; i++)
			tile_f(wt, a, i, 1, r, TR);
	}
	for (; r < r1; r++) {
		int i = 0;

		for (; i + TN <= a->n; i += TN)
			tile_f(wt, a, i, TN, r, 1);
		for (; i < a->n; i++)
			tile_f(wt, a, i, 1, r, 1);
	}
}

T2 static void matmul_f32(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_f(KCPU_W_F32, a, r0, r1);
}

/* Also used by the AVX-512 table: see kcpu_ops_avx512. */
T2 void kcpu_avx2_matmul_f16(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_f(KCPU_W_F16, a, r0, r1);
}

T2 void kcpu_avx2_matmul_bf16(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_f(KCPU_W_BF16, a, r0, r1);
}

/* --- Q8_0 / Q4_0 weights x Q8_0 activations ---------------------------------- */

#define QB 34  /* bytes of a Q8_0 block */
#define Q4B 18 /* bytes of a Q4_0 block */

T2 INL float load_d(const uint8_t *row, size_t bs, int b)
{
	uint16_t h;

	memcpy(&h, row + (size_t)b * bs, 2);
	return _cvtsh_ss(h);
}

/*
 * Q8_0 weights: |w| (<= 128, unsigned) times x with w's sign (|x| <= 127:
 * our quantizer clamps), no vpmaddubsw saturation.  Q4_0: the raw nibble
 * 0..15 times x, minus xb = 8 * x summed the same way (once per token).
 */
T2 INL __m256i qdot(int q4, __m256i w, __m256i x, __m256i xb)
{
	const __m256i ones = _mm256_set1_epi16(1);

	if (q4)
		return _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones), xb);
	return _mm256_madd_epi16(
		_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), ones);
}

T2 INL void tile_q(int q4, const struct kcpu_matmul_args *a, int i0, int tn, int r0, int tr)
{
	const int nb = a->k / 32;
	const size_t wbs = q4 ? Q4B : QB;
	const uint8_t *x[TN], *w[DR];
	__m256 acc[TN][DR];

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
			acc[t][r] = _mm256_setzero_ps();

	for (int b = 0; b < nb; b++) {
		__m256i wq[DR];
		float wd[DR];

		if (i0 == 0) /* the first token tile over these rows fetches the next ones */
			prefetch_next(w, tr, a->w_row_bytes, (size_t)b * wbs, wbs);

#pragma GCC unroll 8
		for (int r = 0; r < tr; r++) {
			if (q4) {
				const __m128i q = _mm_loadu_si128(
					(const __m128i *)(w[r] + (size_t)b * Q4B + 2));

				wq[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q),
							 _mm256_set1_epi8(0x0f));
			} else {
				wq[r] = _mm256_loadu_si256(
					(const __m256i *)(w[r] + (size_t)b * QB + 2));
			}
			wd[r] = load_d(w[r], wbs, b);
		}
#pragma GCC unroll 4
		for (int t = 0; t < tn; t++) {
			const __m256i xq =
				_mm256_loadu_si256((const __m256i *)(x[t] + (size_t)b * QB + 2));
			const float xd = load_d(x[t], QB, b);
			__m256i xb = _mm256_setzero_si256();

			if (q4)
				xb = _mm256_madd_epi16(
					_mm256_maddubs_epi16(_mm256_set1_epi8(8), xq),
					_mm256_set1_epi16(1));
#pragma GCC unroll 8
			for (int r = 0; r < tr; r++)
				acc[t][r] =
					_mm256_fmadd_ps(_mm256_cvtepi32_ps(qdot(q4, wq[r], xq, xb)),
							_mm256_set1_ps(wd[r] * xd), acc[t][r]);
		}
	}
#pragma GCC unroll 4
	for (int t = 0; t < tn; t++)
#pragma GCC unroll 8
		for (int r = 0; r < tr; r++)
			a->y[(size_t)(i0 + t) * a->ldy + r0 + r] = hsum8(acc[t][r]);
}

T2 INL void matmul_q(int q4, const struct kcpu_matmul_args *a, int r0, int r1)
{
	int r = r0;

	/* Decode: no token tile, so more rows in flight. */
	if (a->n < TN)
		for (; r + DR <= r1; r += DR)
			for (int i = 0; i < a->n; i++)
				tile_q(q4, a, i, 1, r, DR);

	for (; r + TR <= r1; r += TR) {
		int i = 0;

		for (; i + TN <= a->n; i += TN)
			tile_q(q4, a, i, TN, r, TR);
		for (; i < a->n; i++)
			tile_q(q4, a, i, 1, r, TR);
	}
	for (; r < r1; r++) {
		int i = 0;

		for (; i + TN <= a->n; i += TN)
			tile_q(q4, a, i, TN, r, 1);
		for (; i < a->n; i++)
			tile_q(q4, a, i, 1, r, 1);
	}
}

T2 static void matmul_q8_0(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_q(0, a, r0, r1);
}

T2 static void matmul_q4_0(const struct kcpu_matmul_args *a, int r0, int r1)
{
	matmul_q(1, a, r0, r1);
}

/* --- element-wise ops -------------------------------------------------------- */

/* ggml's Q8_0 quantizer, bit for bit (see quant.c's q8_round). */
T2 static void quantize_q8_0(const float *x, void *dst, int k)
{
	const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
	uint8_t *out = dst;

	for (int b = 0; b < k / 32; b++, x += 32, out += QB) {
		__m256 v[4], mx;
		__m256i q[4];

		for (int c = 0; c < 4; c++)
			v[c] = _mm256_loadu_ps(x + 8 * c);
		mx = _mm256_max_ps(
			_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
			_mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));

		__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));

		m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
		m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));

		const float d = _mm_cvtss_f32(m4) / 127.0f;
		const float id = d != 0.0f ? 1.0f / d : 0.0f;
		const uint16_t h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);

		memcpy(out, &h, 2);
		for (int c = 0; c < 4; c++) {
			__m256 s = _mm256_mul_ps(v[c], _mm256_set1_ps(id));

			s = _mm256_min_ps(_mm256_max_ps(s, _mm256_set1_ps(-127.0f)),
					  _mm256_set1_ps(127.0f));

			const __m256 t = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
			const __m256 f = _mm256_sub_ps(s, t);
			const __m256 up = _mm256_and_ps(
				_mm256_cmp_ps(f, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one);
			const __m256 dn = _mm256_and_ps(
				_mm256_cmp_ps(f, _mm256_set1_ps(-0.5f), _CMP_LE_OQ), one);

			q[c] = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(t, up), dn));
		}

		const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]),
						     _mm256_packs_epi32(q[2], q[3]));

		_mm256_storeu_si256(
			(__m256i *)(out + 2),
			_mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
	}
}

/*
 * exp(x) for float lanes, within about 2 ulp of expf: x = n ln2 + r
 * (Cody-Waite), |r| <= ln2 / 2, a degree-7 Taylor polynomial (truncation
 * < 0.1 ulp), times 2^n applied as two exact powers of two so that results
 * round correctly into the subnormals and overflow to inf.  NaN stays NaN.
 */
T2 INL __m256 exp256(__m256 x)
{
	x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x); /* NaN: second operand */
	x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);

	const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
					 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);

	__m256 p = _mm256_set1_ps(1.0f / 5040);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));

	const __m256i ni = _mm256_cvtps_epi32(n); /* -150..129 */
	const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
	const __m256i bias = _mm256_set1_epi32(127);
	const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
	const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));

	return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* 8 floats from x + j, or the `left` < 8 there and zeros; store likewise. */
T2 INL __m256 ld8(const float *x, int left)
{
	return load_x(x, 0, left);
}

T2 INL void st8(float *y, __m256 v, int left)
{
	float buf[8];

	if (left >= 8) {
		_mm256_storeu_ps(y, v);
		return;
	}
	_mm256_storeu_ps(buf, v);
	memcpy(y, buf, sizeof(float) * (size_t)left);
}

T2 static void swiglu(const float *gate, const float *up, float *out, int n)
{
	for (int j = 0; j < n; j += 8) {
		const int left = n - j;
		const __m256 g = ld8(gate + j, left);
		const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
		const __m256 s = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));

		st8(out + j, _mm256_mul_ps(s, ld8(up + j, left)), left);
	}
}

T2 static void add(float *y, const float *x, int n)
{
	for (int j = 0; j < n; j += 8)
		st8(y + j, _mm256_add_ps(ld8(y + j, n - j), ld8(x + j, n - j)), n - j);
}

T2 static void to_f16(const float *x, uint16_t *y, int n)
{
	for (int j = 0; j < n; j += 8) {
		const __m128i h = _mm256_cvtps_ph(ld8(x + j, n - j),
						  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		uint16_t buf[8];

		if (n - j >= 8) {
			_mm_storeu_si128((__m128i *)(y + j), h);
		} else {
			_mm_storeu_si128((__m128i *)buf, h);
			memcpy(y + j, buf, 2 * (size_t)(n - j));
		}
	}
}

/* As the reference: float squares summed in double (two 4-lane accumulators). */
T2 static void rmsnorm(const float *x, const float *w, float *y, int n, float eps)
{
	__m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();

	for (int j = 0; j < n; j += 8) {
		const __m256 v = ld8(x + j, n - j);
		const __m256 sq = _mm256_mul_ps(v, v);

		s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
		s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
	}

	const __m256d s = _mm256_add_pd(s0, s1);
	__m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));

	s2 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));

	const float mean = (float)(_mm_cvtsd_f64(s2) / n);
	const __m256 scale = _mm256_set1_ps(1.0f / sqrtf(mean + eps));

	for (int j = 0; j < n; j += 8) {
		const __m256 v = _mm256_mul_ps(ld8(x + j, n - j), scale);

		st8(y + j, _mm256_mul_ps(v, ld8(w + j, n - j)), n - j);
	}
}

/* --- attention ---------------------------------------------------------------- */

T2 INL const uint8_t *attn_row(const struct kcpu_attn_args *a, int t)
{
	const size_t blk = (size_t)a->block_table[t / a->block_tokens];

	return a->k_head + blk * a->block_bytes + (size_t)(t % a->block_tokens) * a->row_stride;
}

T2 INL __m256 load_kv(const uint8_t *row, int j, int left, int f16)
{
	return load_w(f16 ? KCPU_W_F16 : KCPU_W_F32, row, j, left);
}

/*
 * Scores, then a softmax with vector exp (see exp256), then out accumulated
 * over the context 32 dimensions at a time in four independent registers.
 */
T2 INL void attn(const struct kcpu_attn_args *a, int f16)
{
	const int hd = a->head_dim, nkv = a->n_kv;
	float mx = -INFINITY;
	__m256 vsum = _mm256_setzero_ps();

	for (int t = 0; t < nkv; t++) {
		const uint8_t *k = attn_row(a, t);
		__m256 acc = _mm256_setzero_ps();

		for (int j = 0; j < hd; j += 8)
			acc = _mm256_fmadd_ps(ld8(a->q + j, hd - j), load_kv(k, j, hd - j, f16),
					      acc);
		a->scores[t] = hsum8(acc) * a->scale;
		mx = a->scores[t] > mx ? a->scores[t] : mx;
	}
	for (int t = 0; t < nkv; t += 8) {
		const __m256 e =
			exp256(_mm256_sub_ps(ld8(a->scores + t, nkv - t), _mm256_set1_ps(mx)));
		/* lanes past the end hold exp(0 - mx): keep them out of the sum */
		const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
		const __m256 live =
			_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(nkv - t), lane));

		st8(a->scores + t, e, nkv - t);
		vsum = _mm256_add_ps(vsum, _mm256_and_ps(e, live));
	}

	const __m256 inv = _mm256_set1_ps(1.0f / hsum8(vsum));

	for (int t = 0; t < nkv; t += 8)
		st8(a->scores + t, _mm256_mul_ps(ld8(a->scores + t, nkv - t), inv), nkv - t);
	for (int j0 = 0; j0 < hd; j0 += 32) {
		__m256 acc[4];

#pragma GCC unroll 4
		for (int c = 0; c < 4; c++)
			acc[c] = _mm256_setzero_ps();
		for (int t = 0; t < nkv; t++) {
			const uint8_t *v = attn_row(a, t) + a->v_offset;
			const __m256 p = _mm256_set1_ps(a->scores[t]);

#pragma GCC unroll 4
			for (int c = 0; c < 4; c++) {
				const int j = j0 + 8 * c;

				if (j < hd)
					acc[c] = _mm256_fmadd_ps(p, load_kv(v, j, hd - j, f16),
								 acc[c]);
			}
		}
#pragma GCC unroll 4
		for (int c = 0; c < 4; c++) {
			const int j = j0 + 8 * c;

			if (j < hd)
				st8(a->out + j, acc[c], hd - j);
		}
	}
}

T2 static void attn_head(const struct kcpu_attn_args *a)
{
	if (a->kv_f16)
		attn(a, 1);
	else
		attn(a, 0);
}

const struct kcpu_ops kcpu_ops_avx2 = {
	.isa = KCPU_ISA_AVX2,
	.name = "avx2",
	.matmul = {
		[KCPU_W_F32] = matmul_f32,
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
