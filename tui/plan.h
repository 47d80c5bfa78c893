/* SPDX-License-Identifier: MIT */
/*
 * plan — predict goodput for each way of splitting a node's cores into
 * prefill and decode partitions, by a discrete-event simulation of a trace
 * against a cost model measured on the appliance (`duetctl profile`), and
 * recommend the best split (`duetctl plan`).  Prefix plan_.  Times are
 * milliseconds in the model and seconds on the simulated clock, as names say.
 *
 * The simulated server mirrors duetd's scheduler (runtime/sched): one
 * continuous-batching loop per partition; each step carries every decoding
 * sequence's next token first, then chunks of prompts in arrival order
 * within max_batch_tokens (chunked prefill); at most max_seqs sequences are
 * admitted at once, the rest wait in arrival order.  A step lasts
 *
 *     step = sum over prompt chunks [P(done + chunk) - P(done)]   (prefill part)
 *          + D(batch, context of the batch)                        (decode part, if any)
 *
 * with P and D below, each scaled to the partition's cores.  A prompt's
 * first token is out at the end of the step that finishes its prompt, every
 * later token at the end of a decode step.
 *   mixed N:  one such server on N cores does both.
 *   P p + D d: a prefill server on P cores (every request there ends at its
 *             first token, as duetd's prefill partitions run max_tokens 1)
 *             feeding a decode server on D cores; a request enters the
 *             decode server transfer(prompt) after its first token.
 * Prefix cache: each partition remembers, per prefix group, the prompt of
 * the group's latest request whose prefill finished there; a later request
 * of that group admitted there skips its shared tokens (min of the two
 * prompts, less one, rounded down to PLAN_KV_BLOCK) and, in a split, only
 * its uncached tokens are transferred.
 * Not modelled: preemption and cache eviction (the KV pool is assumed big
 * enough), early stops (every request produces its max_tokens), the
 * router's own time.
 *
 * Thread-safe as long as callers do not share a plan_model being written.
 */
#ifndef DUET_TUI_PLAN_H
#define DUET_TUI_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "tests/bench/serve_lib.h"

#define PLAN_MAX_POINTS 16
#define PLAN_MAX_CTX 8	 /* contexts of the v2 decode table */
#define PLAN_KV_BLOCK 16 /* tokens: the prefix cache's granularity */

/* Points (x[i], y[i]) with x strictly increasing. */
struct plan_curve {
	size_t n;
	double x[PLAN_MAX_POINTS], y[PLAN_MAX_POINTS];
};

/*
 * The cost model.  A time measured on c0 cores becomes, on c cores,
 *     t * (c0 / c)^exp
 * (exp 1: perfect scaling; 0: none).  On a 2-core x86 appliance with the
 * 110M model, 2 threads ran 1.64x (decode) and 1.77x (prefill) faster than 1
 * (docs/benchmarks.md), i.e. exp ~0.7-0.8; profiles measured on one core
 * count cannot tell, so the exponents are stated, and assumed unless given.
 */
struct plan_model {
	/* P(x): ms to prefill an x-token prompt alone on prefill_cores; piecewise
	 * linear through (0, 0) and the points, extended along the last segment. */
	struct plan_curve prefill;
	int prefill_cores;
	/* D(b): ms per decode step of b sequences at a mean context of
	 * decode_ctx tokens, on decode_cores; piecewise linear in b, flat below
	 * the first point, extended along the last segment, never below the
	 * least of its times.
	 * v1 (decode_n_ctx 0), a context term:
	 *   D(b, sum_ctx) = D(b) + decode_ms_per_ctx * (sum_ctx - b * decode_ctx),
	 *   never below D(b) / 2.
	 * v2 (decode_n_ctx >= 1), a table: decode_grid[j][i] ms per step of
	 * decode.x[i] sequences of decode_ctxs[j] tokens of context each
	 * (decode.y is row 0).  With c = sum_ctx / b, D(b, c) is bilinear:
	 * piecewise linear in b within each row (as above), then linear in c
	 * between rows, flat below the first context, extended along the last
	 * segment above the last; never below half of row 0's value. */
	struct plan_curve decode;
	int decode_cores;
	double decode_ctx;
	double decode_ms_per_ctx;
	size_t decode_n_ctx;
	double decode_ctxs[PLAN_MAX_CTX];		   /* increasing, > 0 */
	double decode_grid[PLAN_MAX_CTX][PLAN_MAX_POINTS]; /* (context, batch) ms */
	double prefill_exp, decode_exp;
	/* KV hand-off in a split: transfer_ms + transfer_ms_per_token * prompt tokens. */
	double transfer_ms, transfer_ms_per_token;
	/* duetd's partitions.max_batch_tokens / max_seqs (defaults 2048 / 64). */
	int max_batch_tokens, max_seqs;
	int max_context; /* tokens (for generated traces); 0 unknown */
};

/* Defaults for what a profile may leave out (exponents 0.8, limits 2048 / 64, no transfer cost). */
void plan_model_defaults(struct plan_model *m);

/* The model's times for one partition of `cores` cores. */
double plan_prefill_ms(const struct plan_model *m, double tokens, int cores);
double plan_decode_ms(const struct plan_model *m, int batch, double sum_ctx, int cores);

/*
 * Profile JSON (written by `duetctl profile`, see docs/benchmarks.md):
 *   {"version":1,
 *    "prefill":{"cores":1,"points":[[16,2.1],[128,9.8]]},
 *    "decode":{"cores":1,"context":48,"ms_per_context_token":0.0001,
 *              "points":[[1,1.2],[4,2.0]]},
 *    "transfer":{"ms":0.4,"ms_per_token":0.002},
 *    "scaling":{"prefill_exp":0.8,"decode_exp":0.8},
 *    "limits":{"max_batch_tokens":2048,"max_seqs":64,"max_context":1024}}
 * Version 2 adds the decode table: "decode":{..., "contexts":[40,272,528],
 * "grid":[[ms at each batch of points, at contexts[0]], ...]} (one row per
 * context, as long as "points"; "points" is row 0, so v1 readers still work).
 * "transfer", "scaling", "limits", the context fields and the table are optional
 * (plan_model_defaults).  0, or -EINVAL with a message in err.
 */
int plan_model_from_json(const char *text, struct plan_model *m, char *err, size_t errlen);
/* The JSON above as a new object (the caller may add fields, and owns it); NULL: no memory. */
json_t *plan_model_json(const struct plan_model *m);
/* plan_model_json, indented, and a newline; 0 or -EIO. */
int plan_model_write(const struct plan_model *m, FILE *f);

/* A configuration: prefill == 0 is mixed on `decode` cores, else prefill + decode cores. */
struct plan_config {
	int prefill, decode;
};

/* "mixed 2", "1p1d" */
void plan_config_name(const struct plan_config *c, char *out, size_t cap);

/* One request to simulate; arrivals non-decreasing. */
struct plan_req {
	double arrival_s;
	int prompt; /* tokens, >= 1 */
	int output; /* tokens, >= 1 */
	int group;  /* prefix group + 1 (requests of one group share their first tokens); 0 none */
};

/* What the simulation says of one request (seconds on the trace's clock). */
struct plan_out {
	double t_first_s; /* first token */
	double t_last_s;  /* last token (== t_first_s for one token) */
};

/*
 * Simulate reqs[0, n) on configuration c; out holds n.  0, -EINVAL (bad
 * model, configuration or requests) or -ENOMEM.
 */
int plan_simulate(const struct plan_model *m, const struct plan_config *c,
		  const struct plan_req *reqs, size_t n, struct plan_out *out);

/* The requests of a trace (owned by the caller, free()); text prompts count 1 token per
 * 4 bytes; prefix groups kept.  0, -EINVAL (an empty trace) or -ENOMEM. */
int plan_reqs_of_trace(const struct sv_trace *t, struct plan_req **out, size_t *n);

/*
 * The requests of a run at a given rate, as bench_serve makes them: with
 * gen, sv_trace_generate at that rate (gen->rate ignored; with a duration,
 * more requests at higher rates, all within the same window, like
 * bench_serve --duration; a window of at least 50 mean gaps at low
 * rates); else reqs[0, n), recorded at base_rate
 * requests/s, with every arrival scaled by base_rate / rate (--trace FILE).
 */
struct plan_workload {
	const struct sv_gen *gen;
	const struct plan_req *reqs;
	size_t n;
	double base_rate;
	/* gen: the window exactly as bench_serve makes it (no 50-gap minimum), for --compare */
	bool as_bench;
};

/*
 * Simulate the workload at `rate` and fold its requests into a serve_lib
 * run: the figures bench_serve would report (attainment over all requests,
 * TTFT / TPOT statistics; ITL is not simulated).  0, -EINVAL or -ENOMEM.
 */
int plan_run_at(const struct plan_model *m, const struct plan_config *c,
		const struct plan_workload *w, double rate, const struct sv_slo *slo,
		struct sv_result *res);

#define PLAN_MAX_SWEEP 40

/* One configuration's prediction. */
struct plan_eval {
	struct plan_config cfg;
	double goodput; /* req/s: the highest rate with attainment >= target */
	enum sv_bound bound;
	double capacity; /* req/s: the rate at which its busiest server would be always busy */
	struct sv_result
		at_goodput; /* the figures at the goodput (at the lowest rate tried when 0) */
	size_t n_pts;
	struct sv_point pts[PLAN_MAX_SWEEP];
};

/*
 * Goodput of c: serve_lib's bisection (sv_sweep_bisect) between capacity
 * / 1000 and 2 x capacity, to 0.5% of capacity (capacity from the mix of
 * requests at rate 1).  0, -EINVAL or -ENOMEM.
 */
int plan_goodput(const struct plan_model *m, const struct plan_config *c,
		 const struct plan_workload *w, const struct sv_slo *slo, double target,
		 struct plan_eval *ev);

/*
 * Every split of `cores` cores (mixed, then 1p(N-1)d ... (N-1)p1d): evals
 * holds `cores` entries; *best the index of the highest goodput (the
 * earlier one on a tie: mixed before splits, fewer prefill cores first).
 * 0, -EINVAL or -ENOMEM.
 */
int plan_recommend(const struct plan_model *m, int cores, const struct plan_workload *w,
		   const struct sv_slo *slo, double target, struct plan_eval *evals, size_t *best);

/* ---- comparing with a measured sweep (bench_serve --json) ---- */
#define PLAN_SWEEP_MAX 64

/* What a sweep JSON says that a prediction needs. */
struct plan_sweep {
	int profile;	 /* enum sv_profile; -1: a trace file (trace) */
	char trace[512]; /* the trace file's path as bench_serve was given it, "" none */
	double burstiness, duration_s;
	unsigned long long seed;
	int max_context, num_requests;
	struct sv_slo slo;
	double target;
	double goodput; /* the measured goodput (NaN: none in the file) */
	enum sv_bound bound;
	size_t n; /* rates, in the file's order */
	double rate[PLAN_SWEEP_MAX], attainment[PLAN_SWEEP_MAX];
	size_t requests[PLAN_SWEEP_MAX];
};

/*
 * Read the fields above from a bench_serve --json document: "workload"
 * (profile or trace, burstiness, seed, max_context, duration_s,
 * num_requests), "slo" (ttft_ms, tpot_ms, target), "rates"[] (rate,
 * requests, attainment), "goodput" and "goodput_bound" (optional).  0, or
 * -EINVAL with what is wrong in err.
 */
int plan_sweep_from_json(const char *text, struct plan_sweep *s, char *err, size_t errlen);

/* The sweep's workload at a rate, for a generated trace (the caller keeps g). */
void plan_sweep_gen(const struct plan_sweep *s, struct sv_gen *g);

/* One rate of a comparison. */
struct plan_cmp_row {
	double rate;
	double measured, predicted;	/* attainment */
	size_t measured_n, predicted_n; /* requests */
	struct sv_result pred;
};

/*
 * Predict every rate of s with m on c for workload w (plan_sweep_gen, or the
 * trace file's requests), into rows[s->n]; *goodput and *bound: the
 * predicted goodput over the same rates, by the measured sweep's rule
 * (sv_goodput_of; SV_BELOW when the lowest fails, SV_AT_LEAST when the
 * highest passes).  0, -EINVAL or -ENOMEM.
 */
int plan_compare(const struct plan_model *m, const struct plan_config *c,
		 const struct plan_sweep *s, const struct plan_workload *w,
		 struct plan_cmp_row *rows, double *goodput, enum sv_bound *bound);

/* "mixed", "mixed N", "NpMd" (N, M >= 1) into c; mixed alone takes `cores`.  0 or -EINVAL. */
int plan_config_parse(const char *s, int cores, struct plan_config *c);

#endif /* DUET_TUI_PLAN_H */
