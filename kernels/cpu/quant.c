// SPDX-License-Identifier: MIT
/*
 * Scalar reference conversions (see quant.h).  Bit-level fp16 / bf16 code so
 * the result does not depend on the compiler's or the CPU's half support.
 */
#include "kernels/cpu/quant.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/*
 * ggml's reference rounds x * id and then adds 8.5 (Q4_0): a fused
 * multiply-add (GCC contracts by default in GNU C mode where the ISA has one)
 * would round once and could change a nibble.  Keep every operation rounded.
 */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "quant.c: block layouts assume a little-endian host"
#endif

static inline uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float f32_from_bits(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/*
 * Keep the top (32 - shift) bits of m, rounding the dropped bits to nearest,
 * ties to even, without a branch (random weights would mispredict one half
 * the time): adding half - 1, plus 1 when the kept part is odd, carries into
 * the kept bits exactly when the dropped part is above half, or equal to
 * half with an odd kept part.  1 <= shift <= 31, m < 2^31.
 */
static inline uint32_t rne_shift(uint32_t m, unsigned int shift)
{
	return (m + (1u << (shift - 1)) - 1 + ((m >> shift) & 1)) >> shift;
}

static inline uint16_t fp32_to_fp16(float f)
{
	uint32_t x = f32_bits(f);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
	uint32_t ax = x & 0x7fffffffu;
	uint32_t e = ax >> 23;

	if (ax > 0x7f800000u) /* NaN: quiet it, keep the top payload bits */
		return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff);
	if (e >= 143) /* |f| >= 2^16, or inf: beyond fp16's range */
		return sign | 0x7c00;
	if (e >= 113) {
		/*
		 * Normal in fp16: rebias the exponent (127 -> 15) and round the
		 * 23-bit mantissa to 10 bits.  A carry out of the mantissa bumps
		 * the exponent, which is the correct result, up to inf.
		 */
		return sign | (uint16_t)rne_shift(ax - (112u << 23), 13);
	}
	if (e < 102) /* below 2^-25, half the smallest subnormal: rounds to 0 */
		return sign;
	/*
	 * fp16 subnormal: value = m * 2^-24.  The float is mant * 2^(e - 150)
	 * with the implicit bit restored, so m = mant >> (126 - e), rounded.
	 * Rounding up to 0x400 yields the smallest normal, as it should.
	 */
	return sign | (uint16_t)rne_shift((ax & 0x7fffffu) | 0x800000u, 126 - e);
}

uint16_t quant_fp32_to_fp16(float f)
{
	return fp32_to_fp16(f);
}

float quant_fp16_to_fp32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f;
	uint32_t m = h & 0x3ff;

	if (e == 0x1f) /* inf / NaN, payload kept */
		return f32_from_bits(sign | 0x7f800000u | (m << 13));
	if (e == 0) {
		/* Zero or subnormal: m * 2^-24 is exact in fp32. */
		float v = (float)m * 0x1p-24f;

		return sign ? -v : v;
	}
	return f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t quant_fp32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);

	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

float quant_bf16_to_fp32(uint16_t h)
{
	return f32_from_bits((uint32_t)h << 16);
}

void quant_row_to_fp16(const float *src, uint16_t *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = fp32_to_fp16(src[i]);
}

void quant_row_from_fp16(const uint16_t *src, float *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = quant_fp16_to_fp32(src[i]);
}

void quant_row_to_bf16(const float *src, uint16_t *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = quant_fp32_to_bf16(src[i]);
}

void quant_row_from_bf16(const uint16_t *src, float *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = quant_bf16_to_fp32(src[i]);
}

/*
 * The operations below follow ggml's reference order exactly: the scale's
 * reciprocal is taken once in fp32 and every element is multiplied by it
 * (not divided by d), and d is stored rounded to fp16 while the elements are
 * quantized with the unrounded d.  Changing any of this changes bytes.
 */
/*
 * roundf(v) (half away from zero) for the values Q8_0 produces, |v| <= 127
 * and a little rounding; inline and branch-free where the libm call is
 * neither.  v - trunc(v) is exact for |v| < 2^23.  NaN gives 0, and beyond
 * +-127 clamps (roundf would give the same there).
 */
static inline int8_t q8_round(float v)
{
	if (!(v > -127.0f))
		return v != v ? 0 : -127;
	if (v >= 127.0f)
		return 127;

	int i = (int)v; /* trunc */
	float frac = v - (float)i;

	i += (frac >= 0.5f) - (frac <= -0.5f);
	return (int8_t)i;
}

int quant_row_q8_0(const float *src, struct quant_block_q8_0 *dst, size_t n)
{
	if (n % QUANT_QK8_0)
		return -EINVAL;
	for (size_t b = 0; b < n / QUANT_QK8_0; b++) {
		const float *x = src + b * QUANT_QK8_0;
		float amax = 0.0f;

		for (int j = 0; j < QUANT_QK8_0; j++) {
			const float a = fabsf(x[j]);

			amax = amax > a ? amax : a; /* ggml's MAX() */
		}

		const float d = amax / 127.0f;
		const float id = d != 0.0f ? 1.0f / d : 0.0f;

		dst[b].d = fp32_to_fp16(d);
		for (int j = 0; j < QUANT_QK8_0; j++)
			dst[b].qs[j] = q8_round(x[j] * id);
	}
	return 0;
}

int quant_dequant_row_q8_0(const struct quant_block_q8_0 *src, float *dst, size_t n)
{
	if (n % QUANT_QK8_0)
		return -EINVAL;
	for (size_t b = 0; b < n / QUANT_QK8_0; b++) {
		const float d = quant_fp16_to_fp32(src[b].d);

		for (int j = 0; j < QUANT_QK8_0; j++)
			dst[b * QUANT_QK8_0 + j] = (float)src[b].qs[j] * d;
	}
	return 0;
}

/* ggml: MIN(15, (int8_t)(v)) for v = x * id + 8.5 in [0.5, 16.5]; NaN -> 0. */
static inline uint8_t q4_nibble(float v)
{
	if (v >= 15.0f)
		return 15;
	if (v > 0.0f)
		return (uint8_t)(int)v;
	return 0;
}

int quant_row_q4_0(const float *src, struct quant_block_q4_0 *dst, size_t n)
{
	const int half = QUANT_QK4_0 / 2;

	if (n % QUANT_QK4_0)
		return -EINVAL;
	for (size_t b = 0; b < n / QUANT_QK4_0; b++) {
		const float *x = src + b * QUANT_QK4_0;
		float amax = 0.0f;
		float max = 0.0f; /* the first element of largest magnitude, signed */

		for (int j = 0; j < QUANT_QK4_0; j++) {
			if (amax < fabsf(x[j])) {
				amax = fabsf(x[j]);
				max = x[j];
			}
		}

		const float d = max / -8.0f;
		const float id = d != 0.0f ? 1.0f / d : 0.0f;

		dst[b].d = fp32_to_fp16(d);
		for (int j = 0; j < half; j++) {
			uint8_t lo = q4_nibble(x[j] * id + 8.5f);
			uint8_t hi = q4_nibble(x[half + j] * id + 8.5f);

			dst[b].qs[j] = (uint8_t)(lo | (hi << 4));
		}
	}
	return 0;
}

int quant_dequant_row_q4_0(const struct quant_block_q4_0 *src, float *dst, size_t n)
{
	const int half = QUANT_QK4_0 / 2;

	if (n % QUANT_QK4_0)
		return -EINVAL;
	for (size_t b = 0; b < n / QUANT_QK4_0; b++) {
		const float d = quant_fp16_to_fp32(src[b].d);
		float *y = dst + b * QUANT_QK4_0;

		for (int j = 0; j < half; j++) {
			y[j] = (float)((int)(src[b].qs[j] & 0x0f) - 8) * d;
			y[half + j] = (float)((int)(src[b].qs[j] >> 4) - 8) * d;
		}
	}
	return 0;
}
