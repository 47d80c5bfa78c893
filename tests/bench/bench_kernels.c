// SPDX-License-Identifier: MIT
/*
 * Matmul microbenchmark, single thread: for each kernel table this CPU has
 * and each weight type, the matmul shapes of a ~110M-parameter Llama (dim
 * 768, FFN 2048, vocab 32000) at decode (n = 1: weight streaming, reported
 * as GB/s of weight bytes, from copies cycled so they come from memory, not
 * cache) and at prefill (n = 64: reported as GFLOP/s, 2 n m k flops).
 *
 *   bench_kernels [isa] [wtype]   restrict to one table and/or weight type
 * DUET_BENCH_SECONDS sets the time per figure (default 0.3); DUET_BENCH_HOT=1
 * reuses one weight copy at decode too (cache-resident: the compute bound).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant.h"

static const char *const wt_names[KCPU_W_COUNT] = { "f32", "f16", "bf16", "q8_0", "q4_0" };

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
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

/* Random weights, encoded row by row into a fresh buffer of m rows. */
static uint8_t *make_weights(enum kcpu_wtype wt, int m, int k)
{
	const size_t rb = row_bytes(wt, k);
	uint8_t *w = malloc((size_t)m * rb);
	float *tmp = malloc((size_t)k * sizeof(float));

	if (!w || !tmp) {
		fprintf(stderr, "bench_kernels: out of memory\n");
		exit(1);
	}
	for (int r = 0; r < m; r++) {
		uint8_t *row = w + (size_t)r * rb;

		for (int j = 0; j < k; j++)
			tmp[j] = (float)((r * 31 + j * 17) % 101 - 50) / 50.0f;
		switch (wt) {
		case KCPU_W_F32:
			memcpy(row, tmp, rb);
			break;
		case KCPU_W_F16:
			quant_row_to_fp16(tmp, (uint16_t *)row, (size_t)k);
			break;
		case KCPU_W_BF16:
			quant_row_to_bf16(tmp, (uint16_t *)row, (size_t)k);
			break;
		case KCPU_W_Q8_0:
			quant_row_q8_0(tmp, (struct quant_block_q8_0 *)row, (size_t)k);
			break;
		default:
			quant_row_q4_0(tmp, (struct quant_block_q4_0 *)row, (size_t)k);
			break;
		}
	}
	free(tmp);
	return w;
}

static double secs = 0.3;
static int hot;

/* Seconds per call of one matmul, cycling over weight copies totalling >= 256 MiB at n = 1. */
static double time_matmul(const struct kcpu_ops *ops, enum kcpu_wtype wt, int n, int m, int k)
{
	const size_t wbytes = (size_t)m * row_bytes(wt, k);
	int copies = n == 1 && !hot ? (int)((256u << 20) / wbytes) + 1 : 1;
	uint8_t *w[512];
	float *xf = malloc((size_t)n * k * sizeof(float)),
	      *y = malloc((size_t)n * m * sizeof(float));
	uint8_t *x = malloc((size_t)n * k * sizeof(float));
	const size_t xrb = kcpu_act_of(wt) == KCPU_ACT_F32 ? (size_t)k * 4 : KCPU_Q8_0_ROW_BYTES(k);
	long calls = 0;
	double t0, t, best = 1e30;

	if (copies > 512)
		copies = 512;
	for (int c = 0; c < copies; c++)
		w[c] = make_weights(wt, m, k);
	for (size_t j = 0; j < (size_t)n * k; j++)
		xf[j] = (float)((j * 7) % 13) / 13.0f - 0.5f;
	for (int i = 0; i < n; i++) {
		if (kcpu_act_of(wt) == KCPU_ACT_F32)
			memcpy(x + (size_t)i * xrb, xf + (size_t)i * k, xrb);
		else
			ops->quantize_q8_0(xf + (size_t)i * k, x + (size_t)i * xrb, k);
	}

	struct kcpu_matmul_args a = {
		.w_row_bytes = row_bytes(wt, k),
		.x = x,
		.x_row_bytes = xrb,
		.y = y,
		.ldy = (size_t)m,
		.n = n,
		.k = k,
	};

	a.w = w[0];
	ops->matmul[wt](&a, 0, m); /* warm up */
	/* Best of 5 trials: the machine may be shared, and interference only slows. */
	for (int trial = 0; trial < 5; trial++) {
		calls = 0;
		t0 = now_s();
		do {
			a.w = w[(calls + trial) % copies];
			ops->matmul[wt](&a, 0, m);
			calls++;
			t = now_s() - t0;
		} while (t < secs / 5);
		if (t / (double)calls < best)
			best = t / (double)calls;
	}
	for (int c = 0; c < copies; c++)
		free(w[c]);
	free(xf);
	free(x);
	free(y);
	return best;
}

int main(int argc, char **argv)
{
	static const int shapes[][2] = {
		{ 768, 768 }, { 768, 2048 }, { 2048, 768 }, { 768, 32000 }
	};
	const char *want_isa = argc > 1 ? argv[1] : NULL, *want_wt = argc > 2 ? argv[2] : NULL;

	if (getenv("DUET_BENCH_SECONDS"))
		secs = atof(getenv("DUET_BENCH_SECONDS"));
	hot = getenv("DUET_BENCH_HOT") && atoi(getenv("DUET_BENCH_HOT"));
	printf("bench_kernels: single-thread matmul; decode n=1 in GB/s of weights (and GFLOP/s), "
	       "prefill n=64 in GFLOP/s\n");
	printf("%-7s %-5s %6s %6s | %9s %8s %8s | %9s %8s\n", "isa", "wtype", "k", "m", "dec us",
	       "GB/s", "GFLOP/s", "pre64 us", "GFLOP/s");
	for (int isa = 0; isa < KCPU_ISA_COUNT; isa++) {
		const struct kcpu_ops *ops = kcpu_get((enum kcpu_isa)isa);

		if (!ops || (want_isa && strcmp(want_isa, ops->name)))
			continue;
		for (int wt = 0; wt < KCPU_W_COUNT; wt++) {
			if (want_wt && strcmp(want_wt, wt_names[wt]))
				continue;
			for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
				const int k = shapes[s][0], m = shapes[s][1];
				const double td = time_matmul(ops, (enum kcpu_wtype)wt, 1, m, k);
				/* The scalar reference would take minutes on the vocabulary matrix. */
				const int skip = isa == KCPU_ISA_SCALAR && (long)m * k > 2000000;
				const double tp =
					skip ? 0.0
					     : time_matmul(ops, (enum kcpu_wtype)wt, 64, m, k);
				const double wb = (double)m * row_bytes((enum kcpu_wtype)wt, k);

				printf("%-7s %-5s %6d %6d | %9.1f %8.2f %8.2f | ", ops->name,
				       wt_names[wt], k, m, td * 1e6, wb / td * 1e-9,
				       2.0 * m * k / td * 1e-9);
				if (skip)
					printf("%9s %8s\n", "-", "-");
				else
					printf("%9.1f %8.2f\n", tp * 1e6,
					       2.0 * 64 * m * k / tp * 1e-9);
				fflush(stdout);
			}
		}
	}
	return 0;
}
