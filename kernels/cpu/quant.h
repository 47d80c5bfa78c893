/* SPDX-License-Identifier: MIT */
/*
 * Scalar reference conversions between fp32 and the weight formats Duet reads
 * and writes: IEEE half (fp16), bfloat16, and ggml's Q8_0 and Q4_0 blocks.
 *
 * Every function here reproduces ggml's reference code bit for bit
 * (ggml_compute_fp32_to_fp16 / _bf16, quantize_row_q8_0_ref,
 * quantize_row_q4_0_ref and the matching dequantize_row_*), so that a tensor
 * quantized by Duet has exactly the bytes llama.cpp's quantizer writes for the
 * same fp32 input.  The quantizers rely on strict IEEE single-precision
 * arithmetic: never build this file with -ffast-math.
 *
 * These are the CPU backend's readable reference; SIMD variants must match
 * them.  Nothing here allocates.  Host byte order must be little-endian (the
 * block layouts are the on-disk layouts).
 */
#ifndef DUET_QUANT_H
#define DUET_QUANT_H

#include <stddef.h>
#include <stdint.h>

#define QUANT_QK8_0 32 /* elements per Q8_0 block */
#define QUANT_QK4_0 32 /* elements per Q4_0 block */

/* ggml's block_q8_0: x[i] = d * qs[i]. */
struct quant_block_q8_0 {
	uint16_t d;		/* fp16 scale: amax / 127 */
	int8_t qs[QUANT_QK8_0]; /* round(x * (1/d)), half away from zero */
} __attribute__((packed));

/*
 * ggml's block_q4_0: x[j] = d * ((qs[j] & 0xF) - 8) for j < 16,
 *                    x[j + 16] = d * ((qs[j] >> 4) - 8).
 */
struct quant_block_q4_0 {
	uint16_t d;		     /* fp16 scale: max / -8, max = the value of largest |x| */
	uint8_t qs[QUANT_QK4_0 / 2]; /* low nibble: element j, high nibble: element j + 16 */
} __attribute__((packed));

_Static_assert(sizeof(struct quant_block_q8_0) == 34, "block_q8_0 is 34 bytes on disk");
_Static_assert(sizeof(struct quant_block_q4_0) == 18, "block_q4_0 is 18 bytes on disk");

/*
 * fp32 -> fp16 rounds to nearest, ties to even; overflow gives +-inf,
 * values below half the smallest subnormal give +-0.  NaN stays NaN with its
 * sign, quieted, keeping the top 10 payload bits (what F16C's vcvtps2ph does).
 */
uint16_t quant_fp32_to_fp16(float f);
/* Exact (every fp16 value, subnormals included, is an fp32 value). */
float quant_fp16_to_fp32(uint16_t h);

/*
 * fp32 -> bf16 rounds to nearest, ties to even, subnormals kept (no flush);
 * NaN keeps its sign and top payload bits and is forced quiet (ggml's rule).
 */
uint16_t quant_fp32_to_bf16(float f);
float quant_bf16_to_fp32(uint16_t h); /* exact */

/* Rows of n elements; src and dst must not overlap. */
void quant_row_to_fp16(const float *src, uint16_t *dst, size_t n);
void quant_row_from_fp16(const uint16_t *src, float *dst, size_t n);
void quant_row_to_bf16(const float *src, uint16_t *dst, size_t n);
void quant_row_from_bf16(const uint16_t *src, float *dst, size_t n);

/*
 * Quantize n fp32 values into n / 32 blocks; dequantize n / 32 blocks into n
 * values.  n must be a multiple of 32 (else -EINVAL and nothing is written).
 * Return 0 on success.  Inputs must be finite (as in ggml, NaN or inf input
 * gives unspecified blocks, never undefined behaviour).
 */
int quant_row_q8_0(const float *src, struct quant_block_q8_0 *dst, size_t n);
int quant_dequant_row_q8_0(const struct quant_block_q8_0 *src, float *dst, size_t n);
int quant_row_q4_0(const float *src, struct quant_block_q4_0 *dst, size_t n);
int quant_dequant_row_q4_0(const struct quant_block_q4_0 *src, float *dst, size_t n);

#endif /* DUET_QUANT_H */
