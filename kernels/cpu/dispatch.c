/* SPDX-License-Identifier: MIT */
/*
 * Choosing a kernel table: the widest instruction set the CPU has, unless
 * DUET_ISA names another one it also has.  kcpu_best() reads the
 * environment and logs on every call: call it once, at start-up.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "kernels/cpu/kernels-impl.h"
#include "runtime/core/log.h"

static const char *const isa_names[KCPU_ISA_COUNT] = {
	[KCPU_ISA_SCALAR] = "scalar",
	[KCPU_ISA_AVX2] = "avx2",
	[KCPU_ISA_AVX512] = "avx512",
};

const char *kcpu_isa_name(enum kcpu_isa isa)
{
	return (unsigned)isa < KCPU_ISA_COUNT ? isa_names[isa] : "?";
}

#if defined(__x86_64__)
/* CPUID.1:ECX.F16C (clang's __builtin_cpu_supports does not know "f16c"). */
static bool has_f16c(void)
{
	unsigned int a, b, c, d;

	return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#endif

const struct kcpu_ops *kcpu_get(enum kcpu_isa isa)
{
	switch (isa) {
	case KCPU_ISA_SCALAR:
		return &kcpu_ops_scalar;
#if defined(__x86_64__)
	case KCPU_ISA_AVX2:
		__builtin_cpu_init();
		if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c())
			return &kcpu_ops_avx2;
		return NULL;
	case KCPU_ISA_AVX512:
		__builtin_cpu_init();
		/* The AVX-512 table also uses F16C for fp16 scalars. */
		if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512vl") && has_f16c() &&
		    __builtin_cpu_supports("fma"))
			return &kcpu_ops_avx512;
		return NULL;
#endif
	default:
		return NULL;
	}
}

const struct kcpu_ops *kcpu_best(void)
{
	const char *want = getenv("DUET_ISA");

	if (want && *want) {
		for (int i = 0; i < KCPU_ISA_COUNT; i++) {
			if (strcmp(want, isa_names[i]) == 0) {
				const struct kcpu_ops *ops = kcpu_get((enum kcpu_isa)i);

				if (ops)
					return ops;
				log_warn(
					"kernels",
					"DUET_ISA=%s: not supported by this CPU, using the best available",
					want);
				goto best;
			}
		}
		log_warn("kernels",
			 "DUET_ISA=%s: unknown (scalar, avx2, avx512), using the best available",
			 want);
	}
best:
	for (int i = KCPU_ISA_COUNT - 1; i > 0; i--) {
		const struct kcpu_ops *ops = kcpu_get((enum kcpu_isa)i);

		if (ops)
			return ops;
	}
	return &kcpu_ops_scalar;
}

enum kcpu_act kcpu_act_of(enum kcpu_wtype wt)
{
	return wt == KCPU_W_Q8_0 || wt == KCPU_W_Q4_0 ? KCPU_ACT_Q8_0 : KCPU_ACT_F32;
}

/* ggml type ids as in runtime/model/gguf.h's enum ggml_type (kernels do not depend on runtime/). */
int kcpu_wtype_of_ggml(int ggml_type)
{
	switch (ggml_type) {
	case 0:
		return KCPU_W_F32;
	case 1:
		return KCPU_W_F16;
	case 2:
		return KCPU_W_Q4_0;
	case 8:
		return KCPU_W_Q8_0;
	case 30:
		return KCPU_W_BF16;
	default:
		return -1;
	}
}
