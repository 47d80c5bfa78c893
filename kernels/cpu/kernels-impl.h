/* SPDX-License-Identifier: MIT */
/*
 * Internal to kernels/cpu: the per-ISA tables dispatch.c chooses from, and
 * the scalar reference ops that the SIMD tables reuse where they have no
 * faster version.  Tests include this header to reach the variants that
 * dispatch hides (the AVX-512 matmuls without VNNI).
 */
#ifndef DUET_KERNELS_IMPL_H
#define DUET_KERNELS_IMPL_H

#include "kernels/cpu/kernels.h"

extern const struct kcpu_ops kcpu_ops_scalar;
#if defined(__x86_64__)
extern const struct kcpu_ops kcpu_ops_avx2;
extern const struct kcpu_ops kcpu_ops_avx512;

/*
 * The AVX-512 Q8_0 / Q4_0 matmuls pick VNNI (vpdpbusd) when the CPU has it
 * and a maddubs path otherwise; both give bit-identical results.  These run
 * the maddubs path unconditionally, for tests on VNNI machines.
 */
void kcpu_avx512_matmul_q8_0_novnni(const struct kcpu_matmul_args *a, int r0, int r1);
void kcpu_avx512_matmul_q4_0_novnni(const struct kcpu_matmul_args *a, int r0, int r1);
/*
 * The AVX2 F16 / BF16 matmuls, which the AVX-512 table uses too: on Zen 4 the
 * 512-bit F16/BF16 decode path streams weights at ~21 GB/s against ~26 GB/s
 * for the 256-bit one (single thread), and decode is what these types are
 * bound by.  One function serves every batch size, so batch invariance holds.
 */
void kcpu_avx2_matmul_f16(const struct kcpu_matmul_args *a, int r0, int r1);
void kcpu_avx2_matmul_bf16(const struct kcpu_matmul_args *a, int r0, int r1);
/* The AVX-512 F16 / BF16 matmuls, kept for tests and benchmarks. */
void kcpu_avx512_matmul_f16(const struct kcpu_matmul_args *a, int r0, int r1);
void kcpu_avx512_matmul_bf16(const struct kcpu_matmul_args *a, int r0, int r1);
#endif

/* Scalar reference ops (ref.c). */
void kcpu_ref_matmul_f32(const struct kcpu_matmul_args *a, int r0, int r1);
void kcpu_ref_matmul_f16(const struct kcpu_matmul_args *a, int r0, int r1);
void kcpu_ref_matmul_bf16(const struct kcpu_matmul_args *a, int r0, int r1);
void kcpu_ref_matmul_q8_0(const struct kcpu_matmul_args *a, int r0, int r1);
void kcpu_ref_matmul_q4_0(const struct kcpu_matmul_args *a, int r0, int r1);
void kcpu_ref_quantize_q8_0(const float *x, void *dst, int k);
void kcpu_ref_get_row_f32(const void *row, float *dst, int k);
void kcpu_ref_get_row_f16(const void *row, float *dst, int k);
void kcpu_ref_get_row_bf16(const void *row, float *dst, int k);
void kcpu_ref_get_row_q8_0(const void *row, float *dst, int k);
void kcpu_ref_get_row_q4_0(const void *row, float *dst, int k);
void kcpu_ref_rmsnorm(const float *x, const float *w, float *y, int n, float eps);
void kcpu_ref_rope(float *x, int n_heads, int head_dim, int rope_dim, const float *cs, int neox);
void kcpu_ref_swiglu(const float *gate, const float *up, float *out, int n);
void kcpu_ref_add(float *y, const float *x, int n);
void kcpu_ref_to_f16(const float *x, uint16_t *y, int n);
void kcpu_ref_attn_head(const struct kcpu_attn_args *a);

#endif /* DUET_KERNELS_IMPL_H */
