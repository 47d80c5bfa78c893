// SPDX-License-Identifier: MIT
/*
 * kernels/cpu/quant: fp16 and bf16 conversions (exhaustive round trips,
 * rounding edge cases, an independent oracle where the compiler has
 * _Float16), Q8_0 / Q4_0 bytes for hand-computed blocks and error bounds,
 * and the real check: quantizing ../shared's tiny-bytes-f32.gguf reproduces
 * the bytes llama.cpp wrote into tiny-bytes-q8_0.gguf and tiny-bytes-f16.gguf.
 *
 * The GGUF files are read with a minimal parser here, so that this kernel
 * test depends on nothing in runtime/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/quant.h"
#include "tests/unit/testutil.h"

/* The reference formulas below must round every operation, like quant.c. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static uint32_t bits_of(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static float float_of(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static bool fp16_is_nan(uint16_t h)
{
	return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}

/* --- fp16 ---------------------------------------------------------------- */

static void test_fp16_exhaustive_round_trip(void **state)
{
	(void)state;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = quant_fp16_to_fp32((uint16_t)h);
		uint16_t back = quant_fp32_to_fp16(f);

		if (fp16_is_nan((uint16_t)h)) {
			/* NaN stays NaN with its sign; the payload comes back quieted. */
			assert_true(isnan(f));
			assert_int_equal(!!signbit(f), !!(h & 0x8000));
			assert_int_equal(back, h | 0x200);
			continue;
		}
		if (back != h)
			fail_msg("fp16 0x%04x -> %a -> 0x%04x", h, (double)f, back);
	}
}

static void test_fp16_known_values(void **state)
{
	static const struct {
		float f;
		uint16_t h;
	} cases[] = {
		{ 0.0f, 0x0000 },
		{ -0.0f, 0x8000 },
		{ 1.0f, 0x3c00 },
		{ -2.0f, 0xc000 },
		{ 0.5f, 0x3800 },
		{ 0.1f, 0x2e66 },
		{ 65504.0f, 0x7bff },  /* largest finite */
		{ 65519.99f, 0x7bff }, /* just below the midpoint to 2^16 */
		{ 65520.0f, 0x7c00 },  /* the midpoint: ties to even = inf */
		{ 1e6f, 0x7c00 },
		{ -1e6f, 0xfc00 },
		{ INFINITY, 0x7c00 },
		{ -INFINITY, 0xfc00 },
		{ 0x1p-14f, 0x0400 }, /* smallest normal */
		{ 0x1p-24f, 0x0001 }, /* smallest subnormal */
		{ -0x1p-24f, 0x8001 },
		{ 0x3ffp-24f, 0x03ff },	     /* largest subnormal */
		{ 0x1p-25f, 0x0000 },	     /* tie between 0 and 2^-24: even = 0 */
		{ 0x1.000002p-25f, 0x0001 }, /* just above the tie */
		{ 0x1.8p-24f, 0x0002 },	     /* 1.5 * 2^-24: tie, even = 2 */
		{ 0x1.4p-24f, 0x0001 },	     /* 1.25 * 2^-24 */
		{ 0x1p-26f, 0x0000 },
		{ 0x1p-130f, 0x0000 },	     /* an fp32 subnormal */
		{ 0x3ff.8p-24f, 0x0400 },    /* rounds up from subnormal to normal */
		{ 1.0f + 0x1p-11f, 0x3c00 }, /* tie: even = 1.0 */
		{ 1.0f + 0x3p-11f, 0x3c02 }, /* tie: even = 1 + 2^-9 */
		{ 1.0f + 0x1p-11f + 0x1p-20f, 0x3c01 },
		{ 2047.0f, 0x67ff },
		{ 2049.0f, 0x6800 }, /* tie between 2048 and 2050: even = 2048 */
		{ 2051.0f, 0x6802 }, /* tie: even = 2052 */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint16_t h = quant_fp32_to_fp16(cases[i].f);

		if (h != cases[i].h)
			fail_msg("case %zu: %a -> 0x%04x, want 0x%04x", i, (double)cases[i].f, h,
				 cases[i].h);
	}
	assert_true(quant_fp16_to_fp32(0x0001) == 0x1p-24f);
	assert_true(quant_fp16_to_fp32(0x7bff) == 65504.0f);
	assert_true(quant_fp16_to_fp32(0x3c00) == 1.0f);
	assert_true(quant_fp16_to_fp32(0x8000) == 0.0f && signbit(quant_fp16_to_fp32(0x8000)));
	assert_true(isinf(quant_fp16_to_fp32(0xfc00)) && quant_fp16_to_fp32(0xfc00) < 0);

	/* NaN: quiet, sign kept, top payload bits kept. */
	assert_int_equal(quant_fp32_to_fp16(float_of(0x7fc00000)), 0x7e00);
	assert_int_equal(quant_fp32_to_fp16(float_of(0xffc00000)), 0xfe00);
	assert_int_equal(quant_fp32_to_fp16(float_of(0x7f800001)), 0x7e00); /* signalling */
	assert_int_equal(quant_fp32_to_fp16(float_of(0x7fa02000)), 0x7f01);
}

/*
 * Against the compiler's own fp32 -> _Float16 conversion (IEEE, round to
 * nearest even) over a spread of 2^32 / 4099 bit patterns.
 */
static void test_fp16_oracle(void **state)
{
	(void)state;
#ifdef __FLT16_MAX__
	for (uint64_t u = 0; u < (1ull << 32); u += 4099) {
		float f = float_of((uint32_t)u);
		_Float16 ref = (_Float16)f;
		uint16_t want, got = quant_fp32_to_fp16(f);

		memcpy(&want, &ref, 2);
		if (isnan(f)) {
			assert_true(fp16_is_nan(got));
			continue;
		}
		if (got != want)
			fail_msg("fp32 0x%08x: got 0x%04x, _Float16 gives 0x%04x", (uint32_t)u, got,
				 want);
		/* And the widening direction, for every fp16 value reached. */
		assert_true(quant_fp16_to_fp32(got) == (float)ref);
	}
#else
	print_message("[  SKIP    ] %s: the compiler has no _Float16\n", __func__);
	skip();
#endif
}

static void test_fp16_rows(void **state)
{
	float src[7] = { 0.0f, 1.0f, -1.5f, 65504.0f, 0x1p-24f, 3.14159f, -0.0f };
	uint16_t h[7];
	float back[7];

	(void)state;
	quant_row_to_fp16(src, h, 7);
	quant_row_from_fp16(h, back, 7);
	for (int i = 0; i < 7; i++) {
		assert_int_equal(h[i], quant_fp32_to_fp16(src[i]));
		assert_true(fabsf(back[i] - src[i]) <= fabsf(src[i]) * 0x1p-11f);
	}
}

/* --- bf16 ---------------------------------------------------------------- */

static void test_bf16(void **state)
{
	static const struct {
		uint32_t f;
		uint16_t h;
	} cases[] = {
		{ 0x3f800000, 0x3f80 }, /* 1.0 */
		{ 0xbf800000, 0xbf80 }, /* -1.0 */
		{ 0x3f808000, 0x3f80 }, /* 1 + 2^-8: tie, even */
		{ 0x3f818000, 0x3f82 }, /* 1 + 3 * 2^-8: tie, even */
		{ 0x3f808001, 0x3f81 }, /* just above the tie */
		{ 0x3f807fff, 0x3f80 }, /* just below */
		{ 0x7f7fffff, 0x7f80 }, /* FLT_MAX rounds to inf */
		{ 0x7f800000, 0x7f80 }, /* inf */
		{ 0xff800000, 0xff80 }, /* -inf */
		{ 0x00000000, 0x0000 }, { 0x80000000, 0x8000 },
		{ 0x00010000, 0x0001 },				/* subnormals are kept */
		{ 0x00008000, 0x0000 },				/* tie: even = 0 */
		{ 0x00018000, 0x0002 },				/* tie: even = 2 */
		{ 0x7fc00000, 0x7fc0 },				/* quiet NaN */
		{ 0x7f800001, 0x7fc0 },				/* signalling NaN is quieted */
		{ 0xff800001, 0xffc0 }, { 0x7fff0000, 0x7fff }, /* payload kept */
		{ 0x7f80ffff, 0x7fc0 },				/* no rounding of a NaN into inf */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint16_t h = quant_fp32_to_bf16(float_of(cases[i].f));

		if (h != cases[i].h)
			fail_msg("case %zu: 0x%08x -> 0x%04x, want 0x%04x", i, cases[i].f, h,
				 cases[i].h);
	}
	/* Every bf16 value widens exactly and narrows back to itself. */
	for (uint32_t h = 0; h < 65536; h++) {
		float f = quant_bf16_to_fp32((uint16_t)h);

		assert_int_equal(bits_of(f), h << 16);
		if (!isnan(f))
			assert_int_equal(quant_fp32_to_bf16(f), h);
		else
			assert_int_equal(quant_fp32_to_bf16(f), h | 0x40);
	}

	float src[3] = { 1.0f, -2.5f, 1e-3f };
	uint16_t dst[3];
	float back[3];
	quant_row_to_bf16(src, dst, 3);
	quant_row_from_bf16(dst, back, 3);
	for (int i = 0; i < 3; i++)
		assert_true(fabsf(back[i] - src[i]) <= fabsf(src[i]) * 0x1p-8f);
}

/* --- Q8_0 / Q4_0 bytes --------------------------------------------------- */

/* amax 127: d = 1 exactly, q = round half away from zero. */
static void test_q8_0_hand_bytes(void **state)
{
	float x[64] = { 0 };
	struct quant_block_q8_0 b[2];
	float y[64];

	(void)state;
	x[0] = 127.0f;
	x[1] = -127.0f;
	x[2] = 2.5f;	/* -> 3 */
	x[3] = -2.5f;	/* -> -3 */
	x[4] = 0.49f;	/* -> 0 */
	x[5] = 0.5f;	/* -> 1 */
	x[6] = -100.4f; /* -> -100 */
	x[31] = 64.0f;
	/* the second block stays zero: d = 0, every q = 0 */

	memset(b, 0xaa, sizeof(b));
	assert_int_equal(quant_row_q8_0(x, b, 64), 0);
	const uint8_t *p = (const uint8_t *)b;
	assert_int_equal(p[0], 0x00); /* d = 0x3c00, little-endian */
	assert_int_equal(p[1], 0x3c);
	const int8_t want[8] = { 127, -127, 3, -3, 0, 1, -100, 0 };
	assert_memory_equal(b[0].qs, want, 8);
	assert_int_equal(b[0].qs[31], 64);
	for (int j = 7; j < 31; j++)
		assert_int_equal(b[0].qs[j], 0);
	for (int i = 0; i < 34; i++)
		assert_int_equal(p[34 + i], 0);

	assert_int_equal(quant_dequant_row_q8_0(b, y, 64), 0);
	assert_true(y[0] == 127.0f && y[2] == 3.0f && y[6] == -100.0f && y[40] == 0.0f);

	/* A scale that is not exact: amax 1 -> d = 1/127 stored as fp16. */
	float z[32];
	for (int j = 0; j < 32; j++)
		z[j] = (float)(j - 16) / 16.0f;
	assert_int_equal(quant_row_q8_0(z, b, 32), 0);
	assert_int_equal(b[0].d, quant_fp32_to_fp16(1.0f / 127.0f));
	assert_int_equal(b[0].qs[0], -127); /* -1 */
	assert_int_equal(b[0].qs[8], -64);  /* -0.5 * 127 = -63.5 (as rounded fp32) -> -64 */
	assert_int_equal(b[0].qs[16], 0);
	assert_int_equal(b[0].qs[31], 119); /* 15/16 * 127 = 119.06 */

	assert_int_equal(quant_row_q8_0(x, b, 33), -EINVAL);
	assert_int_equal(quant_dequant_row_q8_0(b, y, 31), -EINVAL);
}

/* max -8: d = 1 exactly, q = MIN(15, trunc(x + 8.5)). */
static void test_q4_0_hand_bytes(void **state)
{
	float x[96] = { 0 };
	struct quant_block_q4_0 b[3];
	float y[96];

	(void)state;
	/* Block 0: max |x| is -8 (first of the two 8s), so d = 1. */
	x[0] = -8.0f;  /* 0.5 -> 0 */
	x[1] = 7.0f;   /* 15.5 -> 15 */
	x[2] = -0.5f;  /* 8.0 -> 8 */
	x[3] = -0.6f;  /* 7.9 -> 7 */
	x[4] = 0.4f;   /* 8.9 -> 8 */
	x[16] = 8.0f;  /* 16.5 -> 16 -> clamped to 15 */
	x[17] = -3.0f; /* 5.5 -> 5 */
	x[31] = 2.2f;  /* 10.7 -> 10 */
	/* Block 1: max |x| is +8, so d = -1 and x -> -x + 8.5. */
	x[32] = 8.0f;  /* 0 */
	x[33] = -8.0f; /* 16.5 -> 15 */
	x[48] = 1.0f;  /* 7.5 -> 7 */
	/* Block 2: all zero: d = 0 / -8 = -0.0, every nibble 8. */

	assert_int_equal(quant_row_q4_0(x, b, 96), 0);
	assert_int_equal(b[0].d, 0x3c00);
	assert_int_equal(b[0].qs[0], 0x0 | (15 << 4));
	assert_int_equal(b[0].qs[1], 0xf | (5 << 4));
	assert_int_equal(b[0].qs[2], 0x8 | (8 << 4));
	assert_int_equal(b[0].qs[3], 0x7 | (8 << 4));
	assert_int_equal(b[0].qs[4], 0x8 | (8 << 4));
	assert_int_equal(b[0].qs[15], 0x8 | (10 << 4));

	assert_int_equal(b[1].d, 0xbc00);
	assert_int_equal(b[1].qs[0], 0x0 | (7 << 4));
	assert_int_equal(b[1].qs[1], 0xf | (8 << 4));

	const uint8_t zero_block[18] = { 0x00, 0x80, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88,
					 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88 };
	assert_memory_equal(&b[2], zero_block, 18);

	assert_int_equal(quant_dequant_row_q4_0(b, y, 96), 0);
	assert_true(y[0] == -8.0f && y[1] == 7.0f && y[16] == 7.0f && y[17] == -3.0f);
	assert_true(y[32] == 8.0f && y[33] == -7.0f && y[48] == 1.0f);
	assert_true(y[64] == 0.0f);

	assert_int_equal(quant_row_q4_0(x, b, 48), -EINVAL);
	assert_int_equal(quant_dequant_row_q4_0(b, y, 1), -EINVAL);
}

static uint64_t lcg(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}

/*
 * Round trip error: Q8_0 within d/2 plus the fp16 rounding of d (127 * d *
 * 2^-11); Q4_0 within |d| (the clamped -max side) plus the same.
 */
static void test_quant_error_bounds(void **state)
{
	enum { N = 32 * 257 };
	float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
	struct quant_block_q8_0 *b8 = malloc(N / 32 * sizeof(*b8));
	struct quant_block_q4_0 *b4 = malloc(N / 32 * sizeof(*b4));
	uint64_t s = 42;

	(void)state;
	assert_non_null(x);
	assert_non_null(y);
	assert_non_null(b8);
	assert_non_null(b4);
	for (int i = 0; i < N; i++) {
		/* Blocks with very different magnitudes, some tiny (subnormal fp16 d). */
		float scale = ldexpf(1.0f, (int)(i / 32 % 24) - 16);
		x[i] = ((float)lcg(&s) / 2147483648.0f * 2.0f - 1.0f) * scale;
	}

	assert_int_equal(quant_row_q8_0(x, b8, N), 0);
	assert_int_equal(quant_dequant_row_q8_0(b8, y, N), 0);
	for (int blk = 0; blk < N / 32; blk++) {
		float amax = 0.0f;
		for (int j = 0; j < 32; j++)
			amax = fmaxf(amax, fabsf(x[blk * 32 + j]));
		float d = amax / 127.0f;
		float d16 = quant_fp16_to_fp32(b8[blk].d);
		/* fp16 rounding of d: relative 2^-11, or absolute 2^-25 when subnormal */
		float dd = fmaxf(d * 0x1p-11f, 0x1p-25f);
		assert_true(fabsf(d16 - d) <= dd);
		for (int j = 0; j < 32; j++) {
			float e = fabsf(x[blk * 32 + j] - y[blk * 32 + j]);
			if (e > d * 0.5f * 1.0001f + 127.0f * dd)
				fail_msg("q8_0 block %d elem %d: error %g > bound (d %g)", blk, j,
					 (double)e, (double)d);
		}
	}

	assert_int_equal(quant_row_q4_0(x, b4, N), 0);
	assert_int_equal(quant_dequant_row_q4_0(b4, y, N), 0);
	for (int blk = 0; blk < N / 32; blk++) {
		float amax = 0.0f;
		for (int j = 0; j < 32; j++)
			amax = fmaxf(amax, fabsf(x[blk * 32 + j]));
		float d = amax / 8.0f;
		float dd = fmaxf(d * 0x1p-11f, 0x1p-25f);
		for (int j = 0; j < 32; j++) {
			float e = fabsf(x[blk * 32 + j] - y[blk * 32 + j]);
			if (e > d * 1.0001f + 8.0f * dd)
				fail_msg("q4_0 block %d elem %d: error %g > bound (d %g)", blk, j,
					 (double)e, (double)d);
		}
	}
	free(x);
	free(y);
	free(b8);
	free(b4);
}

/*
 * ggml's quantize_row_q8_0_ref and quantize_row_q4_0_ref, transcribed as
 * plainly as ggml writes them (libm roundf, MAX, MIN, an int8_t cast), as the
 * validator for the library's branch-free versions.
 */
#define REF_MAX(a, b) ((a) > (b) ? (a) : (b))
#define REF_MIN(a, b) ((a) < (b) ? (a) : (b))

static void ref_q8_0(const float *x, struct quant_block_q8_0 *y)
{
	float amax = 0.0f;

	for (int j = 0; j < 32; j++)
		amax = REF_MAX(amax, fabsf(x[j]));
	const float d = amax / ((1 << 7) - 1);
	const float id = d ? 1.0f / d : 0.0f;
	y->d = quant_fp32_to_fp16(d);
	for (int j = 0; j < 32; j++)
		y->qs[j] = (int8_t)roundf(x[j] * id);
}

static void ref_q4_0(const float *x, struct quant_block_q4_0 *y)
{
	float amax = 0.0f, max = 0.0f;

	for (int j = 0; j < 32; j++) {
		if (amax < fabsf(x[j])) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	}
	const float d = max / -8;
	const float id = d ? 1.0f / d : 0.0f;
	y->d = quant_fp32_to_fp16(d);
	for (int j = 0; j < 16; j++) {
		const float x0 = x[j] * id;
		const float x1 = x[16 + j] * id;
		const uint8_t xi0 = REF_MIN(15, (int8_t)(x0 + 8.5f));
		const uint8_t xi1 = REF_MIN(15, (int8_t)(x1 + 8.5f));
		y->qs[j] = xi0;
		y->qs[j] |= xi1 << 4;
	}
}

static void test_quant_matches_ggml_formula(void **state)
{
	enum { BLOCKS = 20000 };
	float x[32];
	struct quant_block_q8_0 a8, b8;
	struct quant_block_q4_0 a4, b4;
	uint64_t s = 1234;

	(void)state;
	for (int blk = 0; blk < BLOCKS; blk++) {
		int kind = blk % 6;
		float scale = ldexpf(1.0f, (int)(lcg(&s) % 40) - 20);

		for (int j = 0; j < 32; j++) {
			float u = (float)lcg(&s) / 2147483648.0f * 2.0f - 1.0f;

			if (kind == 0) /* uniform */
				x[j] = u * scale;
			else if (kind == 1) /* halves: exact .5 ties after scaling by 1 */
				x[j] = (float)((int)(lcg(&s) % 255) - 127) +
				       0.5f * (float)(lcg(&s) & 1);
			else if (kind == 2) /* small integers around the q4 boundaries */
				x[j] = (float)((int)(lcg(&s) % 17) - 8) +
				       0.5f * (float)(lcg(&s) & 1);
			else if (kind == 3) /* a few large values among tiny ones */
				x[j] = (lcg(&s) % 8 == 0) ? u * scale * 1000.0f : u * scale * 1e-3f;
			else if (kind == 5) /* Q4_0: x * id + 8.5 near an integer */
				x[j] = ((float)((int)(lcg(&s) % 16) - 8) + 0.5f) * scale * 1.1f;
			else /* near-ties of x / d at an inexact d: x * id and x / d differ */
				x[j] = ((float)((int)(lcg(&s) % 253) - 126) + 0.5f) * scale * 1.1f;
			if (kind >= 4) {
				int nudge = (int)(lcg(&s) % 5) - 2;
				for (; nudge > 0; nudge--)
					x[j] = nextafterf(x[j], INFINITY);
				for (; nudge < 0; nudge++)
					x[j] = nextafterf(x[j], -INFINITY);
			}
		}
		if (kind == 4)
			x[0] = 127.0f * scale * 1.1f;
		if (kind == 5)
			x[0] = -8.0f * scale * 1.1f; /* d = 1.1 * scale */
		if (kind == 1)
			x[lcg(&s) % 32] = (lcg(&s) & 1) ? 127.0f : -127.0f; /* d = 1 */
		if (kind == 2)
			x[lcg(&s) % 32] = (lcg(&s) & 1) ? 8.0f : -8.0f; /* d = -+1 for q4 */

		ref_q8_0(x, &a8);
		assert_int_equal(quant_row_q8_0(x, &b8, 32), 0);
		if (memcmp(&a8, &b8, sizeof(a8)) != 0)
			fail_msg("q8_0 block %d (kind %d) differs from ggml's formula", blk, kind);
		ref_q4_0(x, &a4);
		assert_int_equal(quant_row_q4_0(x, &b4, 32), 0);
		if (memcmp(&a4, &b4, sizeof(a4)) != 0)
			fail_msg("q4_0 block %d (kind %d) differs from ggml's formula", blk, kind);
	}
}

/* --- the shared GGUF files ---------------------------------------------- */

/* A minimal GGUF v3 reader: just tensor names, shapes, types and data. */
struct mini_tensor {
	char name[80];
	uint32_t n_dims, type;
	uint64_t ne[4], n, offset;
};

struct mini_gguf {
	uint8_t *buf;
	size_t len;
	uint64_t n_tensors;
	struct mini_tensor *t;
	size_t data_off;
};

static uint64_t rd(const struct mini_gguf *g, size_t *p, int bytes)
{
	uint64_t v = 0;

	assert_true(*p + (size_t)bytes <= g->len);
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)g->buf[*p + (size_t)i] << (8 * i);
	*p += (size_t)bytes;
	return v;
}

static void skip_value(const struct mini_gguf *g, size_t *p, uint32_t type)
{
	static const int size[13] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

	assert_true(type < 13);
	if (type == 8) {
		uint64_t n = rd(g, p, 8);
		assert_true(n <= g->len - *p);
		*p += n;
	} else if (type == 9) {
		uint32_t et = (uint32_t)rd(g, p, 4);
		uint64_t n = rd(g, p, 8);
		assert_true(et != 9);
		for (uint64_t i = 0; i < n; i++)
			skip_value(g, p, et);
	} else {
		*p += (size_t)size[type];
	}
}

static void mini_open(struct mini_gguf *g, const char *path)
{
	size_t p = 0;
	uint32_t alignment = 32;

	memset(g, 0, sizeof(*g));
	g->buf = tu_read_file(path, &g->len);
	assert_non_null(g->buf);
	assert_true(g->len > 24 && memcmp(g->buf, "GGUF", 4) == 0);
	p = 4;
	assert_int_equal(rd(g, &p, 4), 3);
	g->n_tensors = rd(g, &p, 8);
	uint64_t n_kv = rd(g, &p, 8);
	assert_true(g->n_tensors < 1000 && n_kv < 1000);
	for (uint64_t i = 0; i < n_kv; i++) {
		uint64_t klen = rd(g, &p, 8);
		assert_true(klen < 256 && p + klen <= g->len);
		bool is_align = klen == 17 && memcmp(g->buf + p, "general.alignment", 17) == 0;
		p += klen;
		uint32_t type = (uint32_t)rd(g, &p, 4);
		if (is_align && type == 4) {
			size_t q = p;
			alignment = (uint32_t)rd(g, &q, 4);
		}
		skip_value(g, &p, type);
	}
	g->t = calloc(g->n_tensors, sizeof(*g->t));
	assert_non_null(g->t);
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		struct mini_tensor *t = &g->t[i];
		uint64_t nlen = rd(g, &p, 8);
		assert_true(nlen < sizeof(t->name) && p + nlen <= g->len);
		memcpy(t->name, g->buf + p, nlen);
		p += nlen;
		t->n_dims = (uint32_t)rd(g, &p, 4);
		assert_true(t->n_dims >= 1 && t->n_dims <= 4);
		t->n = 1;
		for (uint32_t d = 0; d < t->n_dims; d++) {
			t->ne[d] = rd(g, &p, 8);
			t->n *= t->ne[d];
		}
		t->type = (uint32_t)rd(g, &p, 4);
		t->offset = rd(g, &p, 8);
	}
	g->data_off = (p + alignment - 1) / alignment * alignment;
}

static void mini_close(struct mini_gguf *g)
{
	free(g->t);
	free(g->buf);
}

static size_t mini_size(const struct mini_tensor *t)
{
	switch (t->type) {
	case 0:
		return t->n * 4;
	case 1:
		return t->n * 2;
	case 8:
		return t->n / 32 * 34;
	default:
		fail_msg("tensor %s: unexpected type %u", t->name, t->type);
		return 0;
	}
}

/* Data of tensor name, checked to lie inside the file. */
static const uint8_t *mini_find(const struct mini_gguf *g, const char *name,
				const struct mini_tensor **out)
{
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct mini_tensor *t = &g->t[i];

		if (strcmp(t->name, name) == 0) {
			assert_true(g->data_off + t->offset + mini_size(t) <= g->len);
			*out = t;
			return g->buf + g->data_off + t->offset;
		}
	}
	fail_msg("tensor %s not found", name);
	return NULL;
}

/*
 * Convert every tensor of the f32 file to the other file's type for that
 * tensor and compare bytes.  Returns how many tensors were converted (not
 * copied as F32).
 */
static int check_converted(const char *f32_path, const char *other_path, uint32_t want_type)
{
	struct mini_gguf a, b;
	int converted = 0;
	bool saw_attn_q = false;

	mini_open(&a, f32_path);
	mini_open(&b, other_path);
	assert_int_equal(a.n_tensors, b.n_tensors);
	for (uint64_t i = 0; i < b.n_tensors; i++) {
		const struct mini_tensor *tb = &b.t[i], *ta;
		const uint8_t *db = mini_find(&b, tb->name, &tb);
		const float *src = (const float *)mini_find(&a, tb->name, &ta);
		size_t size = mini_size(tb);
		uint8_t *mine = malloc(size);

		assert_non_null(mine);
		assert_int_equal(ta->type, 0);
		assert_int_equal(ta->n, tb->n);
		if (tb->type == 0) {
			memcpy(mine, src, size);
		} else {
			assert_int_equal(tb->type, want_type);
			if (want_type == 1)
				quant_row_to_fp16(src, (uint16_t *)mine, tb->n);
			else
				assert_int_equal(
					quant_row_q8_0(src, (struct quant_block_q8_0 *)mine, tb->n),
					0);
			converted++;
		}
		if (memcmp(mine, db, size) != 0) {
			size_t k = 0;
			while (mine[k] == db[k])
				k++;
			fail_msg("%s: %s differs from the file at byte %zu", other_path, tb->name,
				 k);
		}
		if (strcmp(tb->name, "blk.0.attn_q.weight") == 0)
			saw_attn_q = true;
		free(mine);
	}
	assert_true(saw_attn_q);
	mini_close(&a);
	mini_close(&b);
	return converted;
}

static void test_shared_q8_0_bytes(void **state)
{
	char f32[4096];
	const char *q8;

	(void)state;
	snprintf(f32, sizeof(f32), "%s", TU_SHARED_OR_SKIP("models/tiny-bytes-f32.gguf"));
	q8 = TU_SHARED_OR_SKIP("models/tiny-bytes-q8_0.gguf");
	/* 2 layers x 7 matrices + token_embd + output */
	assert_int_equal(check_converted(f32, q8, 8), 16);
}

static void test_shared_f16_bytes(void **state)
{
	char f32[4096];
	const char *f16;

	(void)state;
	snprintf(f32, sizeof(f32), "%s", TU_SHARED_OR_SKIP("models/tiny-bytes-f32.gguf"));
	f16 = TU_SHARED_OR_SKIP("models/tiny-bytes-f16.gguf");
	assert_int_equal(check_converted(f32, f16, 1), 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fp16_exhaustive_round_trip),
		cmocka_unit_test(test_fp16_known_values),
		cmocka_unit_test(test_fp16_oracle),
		cmocka_unit_test(test_fp16_rows),
		cmocka_unit_test(test_bf16),
		cmocka_unit_test(test_q8_0_hand_bytes),
		cmocka_unit_test(test_q4_0_hand_bytes),
		cmocka_unit_test(test_quant_error_bounds),
		cmocka_unit_test(test_quant_matches_ggml_formula),
		cmocka_unit_test(test_shared_q8_0_bytes),
		cmocka_unit_test(test_shared_f16_bytes),
	};

	return cmocka_run_group_tests_name("quant", tests, NULL, NULL);
}
