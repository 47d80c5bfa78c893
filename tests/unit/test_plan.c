// SPDX-License-Identifier: MIT
/*
 * The planner (tui/plan.c) against hand-computed cases: the cost model's
 * interpolation and core scaling; an M/D/1 queue (Poisson arrivals, fixed
 * prefill time: mean wait rho / (2 mu (1 - rho)) at rho 0.5 and 0.8, on
 * the prefill partition of a split and on a mixed partition); a saturated
 * decode batch (TPOT = the step time of a batch of K, throughput K / step);
 * three requests whose TTFTs and TPOTs are worked out by hand, mixed (with
 * chunked prefill) and split; the recommendation in a case built for each
 * side to win; the profile JSON round trip and its refusals; the v2
 * decode table (bilinear in batch and context, at its points and between,
 * clamped, extended and floored); the prefix cache (a later turn prefills
 * and transfers only its uncached, block-rounded tokens); --compare on a
 * hand-built sweep JSON, and its refusals.
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

#include "tui/plan.h"

/* A model with one point per curve: P(x) = pre_ms_per_token * x, D(b) = step_ms. */
static void simple_model(struct plan_model *m, double pre_ms_per_token, double step_ms)
{
	plan_model_defaults(m);
	m->prefill.n = 1;
	m->prefill.x[0] = 100;
	m->prefill.y[0] = 100 * pre_ms_per_token;
	m->decode.n = 1;
	m->decode.x[0] = 1;
	m->decode.y[0] = step_ms;
}

static void test_cost_model(void **state)
{
	struct plan_model m;

	plan_model_defaults(&m);
	m.prefill = (struct plan_curve){ .n = 2, .x = { 100, 200 }, .y = { 10, 30 } };
	m.decode = (struct plan_curve){ .n = 2, .x = { 1, 8 }, .y = { 10, 24 } };
	assert_float_equal(plan_prefill_ms(&m, 50, 1), 5, 1e-12); /* through the origin */
	assert_float_equal(plan_prefill_ms(&m, 150, 1), 20, 1e-12);
	assert_float_equal(plan_prefill_ms(&m, 300, 1), 50, 1e-12); /* along the last segment */
	assert_float_equal(plan_decode_ms(&m, 1, 0, 1), 10, 1e-12);
	assert_float_equal(plan_decode_ms(&m, 4, 0, 1), 16, 1e-12);
	assert_float_equal(plan_decode_ms(&m, 15, 0, 1), 38, 1e-12);
	/* Cores: (c0 / c)^exp. */
	m.prefill_exp = 1;
	m.decode_exp = 0.5;
	assert_float_equal(plan_prefill_ms(&m, 150, 2), 10, 1e-12);
	assert_float_equal(plan_decode_ms(&m, 1, 0, 4), 5, 1e-12);
	/* Context: 0.01 ms per token over decode_ctx, floored at half the step. */
	m.decode_ctx = 100;
	m.decode_ms_per_ctx = 0.01;
	assert_float_equal(plan_decode_ms(&m, 2, 2 * 600, 1), (10 + 14.0 / 7) + 10, 1e-9);
	assert_float_equal(plan_decode_ms(&m, 1, 0, 1), 9, 1e-12); /* 10 - 1 */
	m.decode_ms_per_ctx = 1;
	assert_float_equal(plan_decode_ms(&m, 1, 0, 1), 5, 1e-12); /* floor */
}

/* Poisson arrivals at rate, n requests of `prompt` tokens and one output token. */
static struct plan_req *poisson(size_t n, double rate, int prompt, uint64_t seed)
{
	struct plan_req *r = calloc(n, sizeof(*r));
	double t = 0;

	assert_non_null(r);
	for (size_t i = 0; i < n; i++) {
		t += -log(sv_rng_unit(&seed)) / rate;
		r[i] = (struct plan_req){ .arrival_s = t, .prompt = prompt, .output = 1 };
	}
	return r;
}

/* Mean wait of M/D/1 at rho, simulated on configuration c, over the formula. */
static double md1_ratio(const struct plan_config *c, double rho)
{
	const size_t n = 400000;
	const double s = 0.010, mu = 1 / s; /* 100 tokens at 0.1 ms each: 10 ms */
	struct plan_model m;
	struct plan_req *r = poisson(n, rho * mu, 100, 42);
	struct plan_out *o = calloc(n, sizeof(*o));
	double wait = 0;

	simple_model(&m, 0.1, 1);
	m.max_batch_tokens = 100; /* one prompt per step: a single FCFS server */
	assert_non_null(o);
	assert_int_equal(plan_simulate(&m, c, r, n, o), 0);
	for (size_t i = 0; i < n; i++)
		wait += o[i].t_first_s - r[i].arrival_s - s;
	free(r);
	free(o);
	return (wait / n) / (rho / (2 * mu * (1 - rho)));
}

static void test_md1(void **state)
{
	struct plan_config split = { .prefill = 1, .decode = 1 },
			   mixed = { .prefill = 0, .decode = 1 };
	double rhos[] = { 0.5, 0.8 };

	for (size_t i = 0; i < 2; i++) {
		double a = md1_ratio(&split, rhos[i]), b = md1_ratio(&mixed, rhos[i]);

		print_message(
			"M/D/1 rho %.1f: simulated / formula mean wait: split %.4f, mixed %.4f\n",
			rhos[i], a, b);
		assert_true(fabs(a - 1) < 0.04);
		assert_true(fabs(b - 1) < 0.04);
	}
}

static void test_saturated_decode(void **state)
{
	enum { K = 4, OUT = 101 };
	struct plan_config cfgs[] = { { .prefill = 1, .decode = 1 },
				      { .prefill = 0, .decode = 1 } };
	struct plan_model m;
	struct plan_req r[K];
	struct plan_out o[K];
	struct sv_slo slo = { .ttft_ms = 1e9, .tpot_ms = 1e9 };
	struct sv_result res;

	simple_model(&m, 0.1, 0);
	m.decode = (struct plan_curve){ .n = 2, .x = { 1, 8 }, .y = { 10, 24 } }; /* D(4) = 16 */
	for (int i = 0; i < K; i++)
		r[i] = (struct plan_req){ .arrival_s = 0, .prompt = 10, .output = OUT };
	for (size_t c = 0; c < 2; c++) {
		double tokens = 0, span;

		assert_int_equal(plan_simulate(&m, &cfgs[c], r, K, o), 0);
		for (int i = 0; i < K; i++) {
			/* One step prefills all four prompts (4 x 1 ms), then 100 steps of D(4). */
			assert_float_equal(o[i].t_first_s, 0.004, 1e-12);
			assert_float_equal((o[i].t_last_s - o[i].t_first_s) * 1e3 / (OUT - 1), 16,
					   1e-9);
			tokens += OUT - 1;
		}
		span = o[0].t_last_s - o[0].t_first_s;
		assert_float_equal(tokens / span, K / 0.016, 1e-6); /* K per step */
		{
			struct plan_workload w = { .reqs = r, .n = K, .base_rate = 1 };

			assert_int_equal(plan_run_at(&m, &cfgs[c], &w, 1, &slo, &res), 0);
		}
		assert_float_equal(res.tpot.p50, 16, 1e-9);
		assert_float_equal(res.tpot.max, 16, 1e-9);
		assert_true(res.attainment == 1);
	}
	/* max_seqs 2: two waves of two, each at D(2) = 12 ms; the second waits for the first. */
	m.max_seqs = 2;
	assert_int_equal(plan_simulate(&m, &cfgs[0], r, K, o), 0);
	assert_float_equal((o[0].t_last_s - o[0].t_first_s) * 1e3 / (OUT - 1), 12, 1e-9);
	assert_float_equal(o[2].t_first_s, 0.002 + 0.002, 1e-12);
	assert_float_equal(o[3].t_last_s, 0.002 + 200 * 0.012, 1e-9);
}

/*
 * P(x) = x ms, D(1) = 5, D(2) = 8, 100 tokens a step.
 *   A at 0 ms: 100 tokens, 2 out;  B at 50 ms: 50 tokens, 1 out;  C at 60 ms: 100 tokens, 1 out.
 * mixed 1:  [0, 100] A's prompt: A's first token at 100.
 *           [100, 204] A decodes (budget 99 left, 5 ms), B's 50 tokens, C's first 49:
 *                      A's last token and B's first at 204.
 *           [204, 255] C's last 51 tokens.
 *   TTFT A 100, B 154, C 195; A's TPOT 104.
 * 1p1d, transfer 2 ms: prefill [0, 100] A; [100, 200] B 50 + C 50; [200, 250] C 50.
 *   TTFT A 100, B 150, C 190; A enters decode at 102, one step of 5: TPOT 7.
 */
static void test_hand_case(void **state)
{
	struct plan_model m;
	struct plan_req r[] = { { 0, 100, 2, 0 }, { 0.050, 50, 1, 0 }, { 0.060, 100, 1, 0 } };
	struct plan_out o[3];
	struct plan_config mixed = { 0, 1 }, split = { 1, 1 };

	simple_model(&m, 1, 5);
	m.decode = (struct plan_curve){ .n = 2, .x = { 1, 2 }, .y = { 5, 8 } };
	m.max_batch_tokens = 100;
	assert_int_equal(plan_simulate(&m, &mixed, r, 3, o), 0);
	assert_float_equal((o[0].t_first_s - r[0].arrival_s) * 1e3, 100, 1e-9);
	assert_float_equal((o[1].t_first_s - r[1].arrival_s) * 1e3, 154, 1e-9);
	assert_float_equal((o[2].t_first_s - r[2].arrival_s) * 1e3, 195, 1e-9);
	assert_float_equal((o[0].t_last_s - o[0].t_first_s) * 1e3, 104, 1e-9);
	assert_float_equal(o[1].t_last_s, o[1].t_first_s, 0);

	m.transfer_ms = 2;
	assert_int_equal(plan_simulate(&m, &split, r, 3, o), 0);
	assert_float_equal((o[0].t_first_s - r[0].arrival_s) * 1e3, 100, 1e-9);
	assert_float_equal((o[1].t_first_s - r[1].arrival_s) * 1e3, 150, 1e-9);
	assert_float_equal((o[2].t_first_s - r[2].arrival_s) * 1e3, 190, 1e-9);
	assert_float_equal((o[0].t_last_s - o[0].t_first_s) * 1e3, 7, 1e-9);

	/* Refusals: arrivals out of order, an empty prompt, no decode cores. */
	r[1].arrival_s = 0.5;
	assert_int_equal(plan_simulate(&m, &split, r, 3, o), -EINVAL);
	r[1].arrival_s = 0.05;
	r[2].prompt = 0;
	assert_int_equal(plan_simulate(&m, &split, r, 3, o), -EINVAL);
	r[2].prompt = 100;
	split.decode = 0;
	assert_int_equal(plan_simulate(&m, &split, r, 3, o), -EINVAL);
}

/* n requests of prompt / output tokens, Poisson at 1/s. */
static struct plan_req *fixed_trace(size_t n, int prompt, int output)
{
	struct plan_req *r = poisson(n, 1, prompt, 9);

	for (size_t i = 0; i < n; i++)
		r[i].output = output;
	return r;
}

static void print_evals(const struct plan_eval *ev, size_t n, size_t best)
{
	for (size_t i = 0; i < n; i++) {
		char name[32];

		plan_config_name(&ev[i].cfg, name, sizeof(name));
		print_message("%-8s goodput %7.3f req/s (capacity %7.3f)%s\n", name, ev[i].goodput,
			      ev[i].capacity, i == best ? "  <- best" : "");
	}
}

static void test_recommend(void **state)
{
	const size_t n = 400;
	struct plan_model m;
	struct plan_eval ev[2];
	struct sv_slo slo;
	struct plan_req *r;
	struct plan_workload w;
	size_t best = 99;
	char name[32];

	/*
	 * Split wins: 200-token prompts (0.5 ms a token on one core, scaling
	 * with cores) stall every running decode of a mixed partition, and the
	 * TPOT SLO (8 ms over a 5 ms step that does not scale) tolerates two
	 * such stalls per request; a decode partition never stalls.
	 */
	simple_model(&m, 0.5, 5);
	m.prefill_exp = 1;
	m.decode_exp = 0;
	slo = (struct sv_slo){ .ttft_ms = 2000, .tpot_ms = 8 };
	r = fixed_trace(n, 200, 50);
	w = (struct plan_workload){ .reqs = r, .n = n, .base_rate = 1 };
	assert_int_equal(plan_recommend(&m, 2, &w, &slo, 0.9, ev, &best), 0);
	print_evals(ev, 2, best);
	plan_config_name(&ev[best].cfg, name, sizeof(name));
	assert_string_equal(name, "1p1d");
	assert_true(ev[1].goodput > 1.5 * ev[0].goodput);
	assert_true(ev[0].bound == SV_EXACT && ev[1].bound == SV_EXACT);
	assert_true(ev[1].at_goodput.attainment >= 0.9);
	free(r);

	/*
	 * Mixed wins: short prompts, decode scales with cores, and a TPOT SLO
	 * (9 ms) that one core's 10 ms step cannot meet.
	 */
	simple_model(&m, 1, 10);
	m.prefill_exp = 1;
	m.decode_exp = 1;
	slo = (struct sv_slo){ .ttft_ms = 100, .tpot_ms = 9 };
	r = fixed_trace(n, 10, 20);
	w = (struct plan_workload){ .reqs = r, .n = n, .base_rate = 1 };
	assert_int_equal(plan_recommend(&m, 2, &w, &slo, 0.9, ev, &best), 0);
	print_evals(ev, 2, best);
	assert_int_equal(best, 0);
	assert_true(ev[0].goodput > 0 && ev[1].goodput == 0 && ev[1].bound == SV_BELOW);
	free(r);
}

/* plan_model_from_json refuses json with -EINVAL, its message naming why (NULL: not checked). */
static void model_refused(const char *json, const char *why)
{
	struct plan_model m;
	char err[256];

	assert_int_equal(plan_model_from_json(json, &m, err, sizeof(err)), -EINVAL);
	if (why)
		assert_non_null(strstr(err, why));
}

static void test_profile_json(void **state)
{
	struct plan_model m, back;
	char err[256], *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	simple_model(&m, 0.25, 3);
	m.prefill = (struct plan_curve){ .n = 3, .x = { 16, 128, 512 }, .y = { 2, 9, 40 } };
	m.prefill_cores = 1;
	m.decode_cores = 2;
	m.decode_ctx = 48;
	m.decode_ms_per_ctx = 0.0005;
	m.transfer_ms = 0.5;
	m.max_context = 1024;
	assert_non_null(f);
	assert_int_equal(plan_model_write(&m, f), 0);
	fclose(f);
	assert_int_equal(plan_model_from_json(buf, &back, err, sizeof(err)), 0);
	assert_int_equal(back.prefill.n, 3);
	assert_float_equal(back.prefill.y[2], 40, 1e-9);
	assert_int_equal(back.decode_cores, 2);
	assert_float_equal(back.decode_ms_per_ctx, 0.0005, 1e-12);
	assert_float_equal(back.transfer_ms, 0.5, 1e-12);
	assert_int_equal(back.max_context, 1024);
	assert_int_equal(back.max_seqs, 64);
	free(buf);

	/* Optional parts default. */
	assert_int_equal(plan_model_from_json("{\"prefill\":{\"points\":[[10,1]]},"
					      "\"decode\":{\"points\":[[1,2]]}}",
					      &back, err, sizeof(err)),
			 0);
	assert_float_equal(back.prefill_exp, 0.8, 0);
	assert_int_equal(back.max_batch_tokens, 2048);
	/* Refusals name the problem. */
	model_refused("{", NULL);
	model_refused("{\"prefill\":{\"points\":[[10,1]]}}", NULL);
	model_refused("{\"prefill\":{\"points\":[[10,1],[5,2]]},\"decode\":{\"points\":[[1,2]]}}",
		      "increasing");
	model_refused("{\"prefill\":{\"points\":[[10,1]]},"
		      "\"decode\":{\"points\":[[1,2]],\"cores\":\"x\"}}",
		      NULL);
}

/* Batches {1, 4} x contexts {100, 300}: 10, 16 / 20, 40 ms. */
static void grid_model(struct plan_model *m)
{
	simple_model(m, 1, 10);
	m->decode = (struct plan_curve){ .n = 2, .x = { 1, 4 }, .y = { 10, 16 } };
	m->decode_n_ctx = 2;
	m->decode_ctxs[0] = 100;
	m->decode_ctxs[1] = 300;
	m->decode_grid[0][0] = 10;
	m->decode_grid[0][1] = 16;
	m->decode_grid[1][0] = 20;
	m->decode_grid[1][1] = 40;
}

static void test_decode_grid(void **state)
{
	struct plan_model m;

	grid_model(&m);
	/* The table's points: D(b, b * c). */
	assert_float_equal(plan_decode_ms(&m, 1, 100, 1), 10, 1e-12);
	assert_float_equal(plan_decode_ms(&m, 4, 400, 1), 16, 1e-12);
	assert_float_equal(plan_decode_ms(&m, 1, 300, 1), 20, 1e-12);
	assert_float_equal(plan_decode_ms(&m, 4, 1200, 1), 40, 1e-12);
	/* Between: b 2 is 12 at c 100 and 26.67 at 300; c 200 halfway: 19.33. */
	assert_float_equal(plan_decode_ms(&m, 2, 2 * 200, 1), (12 + 20 + 20.0 / 3) / 2, 1e-9);
	/* Below the first context: row 0; beyond the last: along the last segment. */
	assert_float_equal(plan_decode_ms(&m, 1, 10, 1), 10, 1e-12);
	assert_float_equal(plan_decode_ms(&m, 1, 500, 1), 30, 1e-12);
	/* b 8: 24 at c 100, 66.67 at 300; at 500: 24 + 2 x 42.67 */
	assert_float_equal(plan_decode_ms(&m, 8, 8 * 500, 1), 400.0 / 3 - 24, 1e-9);
	/* Cores scale it as before. */
	m.decode_exp = 1;
	assert_float_equal(plan_decode_ms(&m, 4, 1200, 2), 20, 1e-12);
	/* Floor: a row that falls with the context stops at half of row 0. */
	m.decode_exp = 0.8;
	m.decode_grid[1][0] = 6;
	assert_float_equal(plan_decode_ms(&m, 1, 300, 1), 6, 1e-12);
	assert_float_equal(plan_decode_ms(&m, 1, 1000, 1), 5, 1e-12);
	/* A row whose last segment falls (noise) stays at its least time at large batches. */
	m.decode_grid[0][1] = 4;
	assert_float_equal(plan_decode_ms(&m, 64, 64 * 100, 1), 4, 1e-12);
	m.decode_n_ctx = 0;
	m.decode.y[1] = 4;
	assert_float_equal(plan_decode_ms(&m, 64, 0, 1), 4, 1e-12);
}

static void test_grid_json(void **state)
{
	struct plan_model m, back;
	char err[256], *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	grid_model(&m);
	assert_non_null(f);
	assert_int_equal(plan_model_write(&m, f), 0);
	fclose(f);
	assert_non_null(strstr(buf, "\"version\": 2"));
	assert_int_equal(plan_model_from_json(buf, &back, err, sizeof(err)), 0);
	assert_int_equal(back.decode_n_ctx, 2);
	assert_float_equal(back.decode_ctxs[1], 300, 0);
	assert_float_equal(back.decode_grid[1][1], 40, 0);
	assert_float_equal(plan_decode_ms(&back, 2, 400, 1), plan_decode_ms(&m, 2, 400, 1), 1e-12);
	free(buf);
	/* A row per context, as long as the points; contexts increasing. */
	model_refused("{\"prefill\":{\"points\":[[10,1]]},"
		      "\"decode\":{\"points\":[[1,2],[2,3]],"
		      "\"contexts\":[10,20],\"grid\":[[2,3],[4]]}}",
		      "grid[1]");
	model_refused("{\"prefill\":{\"points\":[[10,1]]},"
		      "\"decode\":{\"points\":[[1,2]],"
		      "\"contexts\":[20,10],\"grid\":[[2],[4]]}}",
		      NULL);
	model_refused("{\"prefill\":{\"points\":[[10,1]]},"
		      "\"decode\":{\"points\":[[1,2]],\"contexts\":[20]}}",
		      NULL);
}

/*
 * Prefill 1 ms/token, decode step 10 ms.  A (group 1, 100 tokens) at 0; B
 * (group 1, 150 tokens, its first 100 A's) at 1 s finds 100 cached, 96
 * after rounding to 16-token blocks: it prefills 54 tokens, 54 ms.  C
 * (group 2, 150 tokens) at 2 s has nothing cached: 150 ms.  Split, transfer
 * 0.1 ms/token: B sends its 54 computed tokens (5.4 ms), C all 150 (15 ms),
 * then one 10 ms decode step each.
 */
static void test_prefix_cache(void **state)
{
	struct plan_model m;
	struct plan_req r[] = { { 0, 100, 2, 1 }, { 1, 150, 2, 1 }, { 2, 150, 2, 2 } };
	struct plan_out o[3];
	struct plan_config mixed = { 0, 1 }, split = { 1, 1 };

	simple_model(&m, 1, 10);
	assert_int_equal(plan_simulate(&m, &mixed, r, 3, o), 0);
	assert_float_equal(o[0].t_first_s * 1e3, 100, 1e-9);
	assert_float_equal((o[1].t_first_s - 1) * 1e3, 54, 1e-9);
	assert_float_equal((o[2].t_first_s - 2) * 1e3, 150, 1e-9);
	assert_float_equal((o[1].t_last_s - o[1].t_first_s) * 1e3, 10, 1e-9);

	m.transfer_ms_per_token = 0.1;
	assert_int_equal(plan_simulate(&m, &split, r, 3, o), 0);
	assert_float_equal((o[1].t_first_s - 1) * 1e3, 54, 1e-9);
	assert_float_equal((o[1].t_last_s - o[1].t_first_s) * 1e3, 5.4 + 10, 1e-9);
	assert_float_equal((o[2].t_last_s - o[2].t_first_s) * 1e3, 15 + 10, 1e-9);
	/* No group, no cache. */
	r[1].group = 0;
	assert_int_equal(plan_simulate(&m, &mixed, r, 3, o), 0);
	assert_float_equal((o[1].t_first_s - 1) * 1e3, 150, 1e-9);
}

/*
 * A replayed trace: 10 requests of 100 tokens (1 output token) at 1..10 s
 * (1 req/s as recorded); prefill 1 ms/token; TTFT SLO 120 ms.  At 1/s and
 * 5/s nothing queues: every TTFT is 100 ms.  At 20/s (gaps 50 ms) every
 * request after the first queues behind a prefill: only the first meets
 * the SLO, attainment 0.1.  The
 * "measured" sweep says 1, 0.95, 0.2 and goodput 5 (exact): predicted goodput 5,
 * error 0.
 */
static void test_compare(void **state)
{
	static const char sweep[] =
		"{\"model\":\"m\",\"workload\":{\"profile\":null,\"trace\":\"t.jsonl\","
		"\"burstiness\":1,\"seed\":1,\"max_context\":0,\"duration_s\":60,"
		"\"num_requests\":0},\"slo\":{\"ttft_ms\":120,\"tpot_ms\":50,\"target\":0.9},"
		"\"rates\":[{\"rate\":1,\"requests\":10,\"attainment\":1},"
		"{\"rate\":5,\"requests\":10,\"attainment\":0.95},"
		"{\"rate\":20,\"requests\":10,\"attainment\":0.2}],"
		"\"goodput\":5,\"goodput_bound\":\"exact\"}";
	struct plan_req reqs[10];
	struct plan_model m;
	struct plan_sweep s;
	struct plan_cmp_row rows[PLAN_SWEEP_MAX];
	struct plan_config c;
	struct plan_workload w = { .reqs = reqs, .n = 10, .base_rate = 1 };
	enum sv_bound b;
	char err[256];
	double g;

	for (int i = 0; i < 10; i++)
		reqs[i] = (struct plan_req){ .arrival_s = i + 1, .prompt = 100, .output = 1 };
	simple_model(&m, 1, 10);
	assert_int_equal(plan_sweep_from_json(sweep, &s, err, sizeof(err)), 0);
	assert_int_equal(s.profile, -1);
	assert_string_equal(s.trace, "t.jsonl");
	assert_int_equal(s.n, 3);
	assert_float_equal(s.slo.ttft_ms, 120, 0);
	assert_float_equal(s.goodput, 5, 0);
	assert_int_equal(s.bound, SV_EXACT);
	assert_int_equal(plan_config_parse("mixed", 1, &c), 0);
	assert_int_equal(plan_compare(&m, &c, &s, &w, rows, &g, &b), 0);
	assert_float_equal(rows[0].predicted, 1, 1e-12);
	assert_float_equal(rows[1].predicted, 1, 1e-12);
	assert_float_equal(rows[2].predicted, 0.1, 1e-12);
	assert_int_equal(rows[2].predicted_n, 10);
	assert_float_equal(g, 5, 0);
	assert_int_equal(b, SV_EXACT);

	/* A generated workload names its profile; the generator gets bench_serve's window. */
	assert_int_equal(
		plan_sweep_from_json("{\"workload\":{\"profile\":\"agent\",\"burstiness\":0.5,"
				     "\"seed\":7,\"max_context\":1024,\"duration_s\":20},"
				     "\"slo\":{\"ttft_ms\":1,\"tpot_ms\":2},"
				     "\"rates\":[{\"rate\":0.5,\"requests\":9,"
				     "\"attainment\":0}],"
				     "\"goodput\":0,\"goodput_bound\":\"below_lowest\"}",
				     &s, err, sizeof(err)),
		0);
	assert_int_equal(s.profile, SV_PROF_AGENT);
	assert_int_equal(s.bound, SV_BELOW);
	assert_float_equal(s.target, 0.9, 0);
	{
		struct sv_gen gen;

		plan_sweep_gen(&s, &gen);
		assert_int_equal(gen.seed, 7);
		assert_float_equal(gen.duration_s, 20, 0);
		assert_int_equal(gen.max_context, 1024);
	}

	/* Refusals say what is wrong. */
	assert_int_equal(plan_sweep_from_json("[1", &s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not JSON"));
	assert_int_equal(plan_sweep_from_json("{\"rates\":[]}", &s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "workload"));
	assert_int_equal(
		plan_sweep_from_json("{\"workload\":{\"profile\":\"chat\",\"burstiness\":1,"
				     "\"seed\":1,\"max_context\":512,\"duration_s\":2},"
				     "\"slo\":{\"ttft_ms\":1,\"tpot_ms\":2},"
				     "\"rates\":[{\"rate\":1,\"requests\":2}]}",
				     &s, err, sizeof(err)),
		-EINVAL);
	assert_non_null(strstr(err, "rates[0]: \"attainment\": missing"));

	/* Splits by name. */
	assert_int_equal(plan_config_parse("mixed 3", 1, &c), 0);
	assert_int_equal(c.decode, 3);
	assert_int_equal(plan_config_parse("1p2d", 1, &c), 0);
	assert_true(c.prefill == 1 && c.decode == 2);
	assert_int_equal(plan_config_parse("1p", 1, &c), -EINVAL);
	assert_int_equal(plan_config_parse("1p1dx", 1, &c), -EINVAL);
}

static void test_trace_requests(void **state)
{
	struct sv_gen g = { .profile = SV_PROF_CHAT,
			    .rate = 2,
			    .max_requests = 50,
			    .max_context = 1024,
			    .seed = 3 };
	struct sv_trace *t = NULL;
	struct plan_req *r = NULL;
	size_t n = 0;

	assert_int_equal(sv_trace_generate(&g, &t), 0);
	assert_int_equal(plan_reqs_of_trace(t, &r, &n), 0);
	assert_int_equal(n, 50);
	for (size_t i = 0; i < n; i++) {
		assert_true(r[i].prompt == sv_trace_at(t, i)->prompt_tokens);
		assert_true(r[i].output == sv_trace_at(t, i)->max_tokens);
		assert_true(r[i].arrival_s == sv_trace_at(t, i)->arrival_s);
	}
	free(r);
	sv_trace_destroy(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cost_model),	 cmocka_unit_test(test_md1),
		cmocka_unit_test(test_saturated_decode), cmocka_unit_test(test_hand_case),
		cmocka_unit_test(test_recommend),	 cmocka_unit_test(test_profile_json),
		cmocka_unit_test(test_trace_requests),	 cmocka_unit_test(test_decode_grid),
		cmocka_unit_test(test_grid_json),	 cmocka_unit_test(test_prefix_cache),
		cmocka_unit_test(test_compare),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
