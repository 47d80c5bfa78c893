// SPDX-License-Identifier: MIT
/*
 * The serving benchmark's arithmetic (tests/bench/serve_lib.c) on synthetic
 * timelines with known answers: nearest-rank percentiles, TTFT / TPOT / ITL
 * of hand-made requests, SLO attainment, the goodput search over a synthetic
 * attainment curve (list and bisection), a list sweep's bound and its
 * names, the context probe's error messages, --sweep parsing, and the trace
 * generator: byte-identical files from one seed, the mean gap for Poisson
 * and gamma arrivals, rate scaling, profile lengths within the context, the
 * agent profile's shared prefixes, and a write/read round trip; the
 * server's per-phase times folded into a run (nulls and untimed requests
 * left out), the longest token gap, and trace truncation (--unloaded).
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

#include "tests/bench/serve_lib.h"

static void test_percentiles(void **state)
{
	double v[100], one = 7, three[] = { 3, 1, 2 };
	struct sv_stats s;

	for (int i = 0; i < 100; i++)
		v[i] = i + 1;
	assert_true(sv_pct_sorted(v, 100, 0.50) == 50);
	assert_true(sv_pct_sorted(v, 100, 0.90) == 90);
	assert_true(sv_pct_sorted(v, 100, 0.99) == 99);
	assert_true(sv_pct_sorted(v, 100, 1.00) == 100);
	assert_true(sv_pct_sorted(v, 100, 0.00) == 1);
	assert_true(sv_pct_sorted(v, 10, 0.99) == 10);
	assert_true(sv_pct_sorted(v, 10, 0.50) == 5);
	assert_true(sv_pct_sorted(&one, 1, 0.5) == 7);
	assert_true(isnan(sv_pct_sorted(v, 0, 0.5)));

	sv_stats_of(three, 3, &s);
	assert_true(s.n == 3 && s.p50 == 2 && s.p90 == 3 && s.p99 == 3 && s.mean == 2 &&
		    s.max == 3);
	assert_true(three[0] == 1 && three[2] == 3); /* sorted in place */
	sv_stats_of(NULL, 0, &s);
	assert_true(s.n == 0 && isnan(s.p50) && isnan(s.mean) && isnan(s.max));
}

/* A request sent at 0: first token at ttft, then n-1 more every gap seconds. */
struct fake {
	double tok[64];
	struct sv_rec r;
};

static void fake_req(struct fake *f, double ttft, double gap, int n)
{
	memset(f, 0, sizeof(*f));
	for (int i = 0; i < n; i++)
		f->tok[i] = ttft + i * gap;
	f->r = (struct sv_rec){ .ok = true,
				.t_sent = 0,
				.tok_t = f->tok,
				.n_tok = (size_t)n,
				.t_done = n ? f->tok[n - 1] + 0.001 : 0.5 };
}

static void test_request_figures(void **state)
{
	struct fake f;

	fake_req(&f, 0.100, 0.010, 11); /* 100 ms to the first token, then 10 ms each */
	assert_float_equal(sv_rec_ttft_ms(&f.r), 100, 1e-9);
	assert_float_equal(sv_rec_tpot_ms(&f.r), 10, 1e-9);
	assert_float_equal(sv_rec_e2e_ms(&f.r), 201, 1e-9);

	/* The usage count wins over frames: 11 frames carrying 21 tokens (2 per frame). */
	f.r.tokens = 21;
	assert_float_equal(sv_rec_tpot_ms(&f.r), 5, 1e-9);

	/* Uneven gaps: TPOT is the mean over the stream, not a gap. */
	fake_req(&f, 0.050, 0, 4);
	f.tok[1] = 0.060;
	f.tok[2] = 0.200;
	f.tok[3] = 0.210;
	assert_float_equal(sv_rec_tpot_ms(&f.r), 160.0 / 3, 1e-9);

	/* The longest gap of that stream: 200 - 60 ms. */
	assert_float_equal(sv_rec_max_itl_ms(&f.r), 140, 1e-9);

	fake_req(&f, 0.050, 0, 1);
	assert_true(isnan(sv_rec_tpot_ms(&f.r)));
	assert_true(isnan(sv_rec_max_itl_ms(&f.r)));
	fake_req(&f, 0, 0, 0);
	assert_true(isnan(sv_rec_ttft_ms(&f.r)));
}

/*
 * The server's phase times: over the ok requests that carried them, each
 * phase over the requests where it is not null (NaN); a failed request's
 * times and an untimed request (an older daemon) count in none.
 */
static void test_server_phases(void **state)
{
	const struct sv_slo slo = { .ttft_ms = 1000, .tpot_ms = 1000 };
	struct sv_run *run;
	struct sv_result res;
	struct fake f;

	assert_int_equal(sv_run_create(&slo, &run), 0);
	/* 4 split requests: queue 1 2 3 4, prefill 10 20 30 40, transfer 0.5 each, decode 100 .. 400. */
	for (int i = 1; i <= 4; i++) {
		fake_req(&f, 0.050, 0.010, 3);
		f.r.has_srv = true;
		f.r.srv = (struct sv_phases){ i, 10.0 * i, 0.5, 100.0 * i };
		assert_int_equal(sv_run_add(run, &f.r), 0);
	}
	/* One on a mixed partition: no transfer, and a null decode. */
	fake_req(&f, 0.050, 0.010, 3);
	f.r.has_srv = true;
	f.r.srv = (struct sv_phases){ 5, 50, NAN, NAN };
	assert_int_equal(sv_run_add(run, &f.r), 0);
	/* Untimed, and failed: neither counts. */
	fake_req(&f, 0.050, 0.010, 3);
	assert_int_equal(sv_run_add(run, &f.r), 0);
	fake_req(&f, 0.050, 0.010, 3);
	f.r.ok = false;
	f.r.has_srv = true;
	f.r.srv = (struct sv_phases){ 1e6, 1e6, 1e6, 1e6 };
	assert_int_equal(sv_run_add(run, &f.r), 0);

	sv_run_result(run, 1.0, &res);
	assert_int_equal(res.ok, 6);
	assert_int_equal(res.timed, 5);
	assert_int_equal(res.queue.n, 5);
	assert_float_equal(res.queue.mean, 3, 1e-12);
	assert_float_equal(res.queue.p50, 3, 1e-12);
	assert_float_equal(res.queue.p90, 5, 1e-12);
	assert_float_equal(res.queue.max, 5, 1e-12);
	assert_int_equal(res.prefill.n, 5);
	assert_float_equal(res.prefill.mean, 30, 1e-12);
	assert_float_equal(res.prefill.p99, 50, 1e-12);
	assert_int_equal(res.transfer.n, 4);
	assert_float_equal(res.transfer.mean, 0.5, 1e-12);
	assert_float_equal(res.transfer.p50, 0.5, 1e-12);
	assert_int_equal(res.decode.n, 4);
	assert_float_equal(res.decode.mean, 250, 1e-12);
	assert_float_equal(res.decode.p50, 200, 1e-12); /* nearest rank: 2nd of 4 */
	assert_float_equal(res.decode.p90, 400, 1e-12);
	sv_run_destroy(run);

	/* No timings at all: zero counts, NaN figures. */
	assert_int_equal(sv_run_create(&slo, &run), 0);
	fake_req(&f, 0.050, 0.010, 3);
	assert_int_equal(sv_run_add(run, &f.r), 0);
	sv_run_result(run, 1.0, &res);
	assert_true(res.timed == 0 && res.queue.n == 0 && isnan(res.queue.p50) &&
		    isnan(res.decode.mean));
	sv_run_destroy(run);
}

static void test_slo_and_run(void **state)
{
	const struct sv_slo slo = { .ttft_ms = 250, .tpot_ms = 15.625 }; /* exact in binary */
	struct sv_run *run;
	struct sv_result res;
	struct fake f;

	fake_req(&f, 0.25, 0.015625, 5); /* on both limits: meets */
	assert_true(sv_rec_meets(&f.r, &slo));
	fake_req(&f, 0.251, 0.010, 5); /* TTFT over */
	assert_false(sv_rec_meets(&f.r, &slo));
	fake_req(&f, 0.100, 0.0157, 5); /* TPOT over */
	assert_false(sv_rec_meets(&f.r, &slo));
	fake_req(&f, 0.100, 0, 1); /* one token: only TTFT counts */
	assert_true(sv_rec_meets(&f.r, &slo));
	f.r.ok = false; /* failed: never meets */
	assert_false(sv_rec_meets(&f.r, &slo));
	/* The same test on recorded figures (--rescore): NaN TTFT misses, NaN TPOT passes. */
	assert_true(sv_meets(true, 250, 15.625, &slo));
	assert_false(sv_meets(true, 250.001, 1, &slo));
	assert_false(sv_meets(true, 1, 15.626, &slo));
	assert_true(sv_meets(true, 1, NAN, &slo));
	assert_false(sv_meets(true, NAN, 1, &slo));
	assert_false(sv_meets(false, 1, 1, &slo));

	/* 10 requests: 6 meet, 2 miss TTFT, 1 misses TPOT, 1 fails. */
	assert_int_equal(sv_run_create(&slo, &run), 0);
	for (int i = 0; i < 6; i++) {
		fake_req(&f, 0.050 + 0.010 * i, 0.010, 3);
		assert_int_equal(sv_run_add(run, &f.r), 0);
	}
	for (int i = 0; i < 2; i++) {
		fake_req(&f, 0.500, 0.010, 3);
		assert_int_equal(sv_run_add(run, &f.r), 0);
	}
	fake_req(&f, 0.050, 0.050, 3);
	assert_int_equal(sv_run_add(run, &f.r), 0);
	fake_req(&f, 0.050, 0.010, 3);
	f.r.ok = false;
	assert_int_equal(sv_run_add(run, &f.r), 0);

	sv_run_result(run, 2.0, &res);
	assert_int_equal(res.sent, 10);
	assert_int_equal(res.ok, 9);
	assert_int_equal(res.failed, 1);
	assert_int_equal(res.slo_ok, 6);
	assert_float_equal(res.attainment, 0.6, 1e-12);
	assert_int_equal(res.out_tokens, 27);
	assert_float_equal(res.req_per_s, 4.5, 1e-12);
	assert_float_equal(res.out_tok_per_s, 13.5, 1e-12);
	/* TTFTs (ms): 50 60 70 80 90 100 500 500 50 -> sorted 50 50 60 70 80 90 100 500 500 */
	assert_int_equal(res.ttft.n, 9);
	assert_float_equal(res.ttft.p50, 80, 1e-9);
	assert_float_equal(res.ttft.p90, 500, 1e-9);
	assert_float_equal(res.ttft.max, 500, 1e-9);
	/* ITL: 2 gaps each: 16 of 10 ms and 2 of 50 ms. */
	assert_int_equal(res.itl.n, 18);
	assert_float_equal(res.itl.p50, 10, 1e-9);
	assert_float_equal(res.itl.p90, 50, 1e-9);
	assert_true(res.ttft.p50 <= res.ttft.p90 && res.ttft.p90 <= res.ttft.p99);
	sv_run_destroy(run);

	assert_int_equal(sv_run_create(&slo, &run), 0);
	sv_run_result(run, 0, &res);
	assert_true(res.sent == 0 && isnan(res.attainment) && isnan(res.req_per_s));
	sv_run_destroy(run);
}

/* A synthetic system: attainment 1 up to knee requests/s, then falling linearly to 0 at 2 knee. */
struct curve {
	double knee;
	int calls, fail_at; /* fail_at: the call that returns -EIO (0: none) */
};

static int curve_measure(void *ctx, double rate, double *att)
{
	struct curve *c = ctx;

	if (++c->calls == c->fail_at)
		return -EIO;
	*att = rate <= c->knee ? 1 : rate >= 2 * c->knee ? 0 : 2 - rate / c->knee;
	return 0;
}

static void test_goodput(void **state)
{
	/* knee 4: attainment >= 0.9 up to 4.4 requests/s. */
	const double rates[] = { 1, 2, 3, 4, 5, 6 };
	struct curve c = { .knee = 4 };
	struct sv_point pts[16];
	enum sv_bound bound;
	size_t n;
	double g;

	assert_int_equal(sv_sweep_list(rates, 6, 0.9, curve_measure, &c, pts, &g), 0);
	assert_int_equal(c.calls, 6);
	assert_float_equal(g, 4, 1e-12);
	assert_float_equal(pts[4].attainment, 0.75, 1e-12);

	/* A noisy pass above a failure does not raise goodput; order does not matter. */
	{
		struct sv_point p[] = { { 3, 0.95 }, { 1, 1 }, { 2, 0.85 }, { 4, 0.92 } };

		assert_float_equal(sv_goodput_of(p, 4, 0.9), 1, 1e-12);
		p[2].attainment = 0.9; /* exactly the target passes */
		assert_float_equal(sv_goodput_of(p, 4, 0.9), 4, 1e-12);
		p[1].attainment = 0.5;
		assert_float_equal(sv_goodput_of(p, 4, 0.9), 0, 1e-12);
		assert_true(isnan(sv_goodput_of(p, 0, 0.9)));
	}

	/* Bisection between 1 and 8 to 0.05: within tol below the true 4.4. */
	c = (struct curve){ .knee = 4 };
	assert_int_equal(
		sv_sweep_bisect(1, 8, 0.05, 16, 0.9, curve_measure, &c, pts, &n, &g, &bound), 0);
	assert_int_equal(bound, SV_EXACT);
	assert_true(g <= 4.4 && g > 4.4 - 0.05);
	assert_int_equal(n, (size_t)c.calls);
	assert_true(n == 2 + 8); /* 7/2^k <= 0.05 after k = 8 halvings */
	assert_float_equal(pts[0].rate, 1, 0);
	assert_float_equal(pts[1].rate, 8, 0);
	assert_float_equal(pts[2].rate, 4.5, 0);

	/* Capped by max_points: the best passing rate so far. */
	c = (struct curve){ .knee = 4 };
	assert_int_equal(
		sv_sweep_bisect(1, 8, 0.05, 3, 0.9, curve_measure, &c, pts, &n, &g, &bound), 0);
	assert_true(n == 3 && g == 1 && bound == SV_EXACT); /* 4.5 failed */

	c = (struct curve){ .knee = 0.5 };
	assert_int_equal(
		sv_sweep_bisect(1, 8, 0.05, 16, 0.9, curve_measure, &c, pts, &n, &g, &bound), 0);
	assert_true(n == 1 && g == 0 && bound == SV_BELOW);
	c = (struct curve){ .knee = 10 };
	assert_int_equal(
		sv_sweep_bisect(1, 8, 0.05, 16, 0.9, curve_measure, &c, pts, &n, &g, &bound), 0);
	assert_true(n == 2 && g == 8 && bound == SV_AT_LEAST);

	c = (struct curve){ .knee = 4, .fail_at = 3 };
	assert_int_equal(
		sv_sweep_bisect(1, 8, 0.05, 16, 0.9, curve_measure, &c, pts, &n, &g, &bound), -EIO);
	assert_int_equal(n, 2);
	c = (struct curve){ .knee = 4, .fail_at = 2 };
	assert_int_equal(sv_sweep_list(rates, 6, 0.9, curve_measure, &c, pts, &g), -EIO);
	assert_int_equal(
		sv_sweep_bisect(2, 1, 0.05, 16, 0.9, curve_measure, &c, pts, &n, &g, &bound),
		-EINVAL);
}

/* The bound of a list sweep's goodput, as bench_serve --json names it, and its names back. */
static void test_bound(void **state)
{
	const double rates[] = { 1, 2, 3, 4, 5, 6 };
	struct curve c = { .knee = 4 };
	struct sv_point pts[6];
	double g;

	assert_int_equal(sv_sweep_list(rates, 6, 0.9, curve_measure, &c, pts, &g), 0);
	assert_int_equal(sv_bound_of(pts, 6, g), SV_EXACT); /* 4: 5 failed */
	c = (struct curve){ .knee = 10 };
	assert_int_equal(sv_sweep_list(rates, 6, 0.9, curve_measure, &c, pts, &g), 0);
	assert_true(g == 6 && sv_bound_of(pts, 6, g) == SV_AT_LEAST);
	c = (struct curve){ .knee = 0.5 };
	assert_int_equal(sv_sweep_list(rates, 6, 0.9, curve_measure, &c, pts, &g), 0);
	assert_true(g == 0 && sv_bound_of(pts, 6, g) == SV_BELOW);
	assert_int_equal(sv_bound_of(pts, 0, sv_goodput_of(pts, 0, 0.9)), SV_BELOW); /* NaN */
	/* Any order: the highest rate, not the last point, makes "at least". */
	{
		struct sv_point p[] = { { 3, 1 }, { 1, 1 }, { 2, 1 } };

		assert_int_equal(sv_bound_of(p, 3, sv_goodput_of(p, 3, 0.9)), SV_AT_LEAST);
		p[0].attainment = 0.5;
		assert_int_equal(sv_bound_of(p, 3, sv_goodput_of(p, 3, 0.9)), SV_EXACT);
	}

	assert_string_equal(sv_bound_name(SV_EXACT), "exact");
	assert_string_equal(sv_bound_name(SV_AT_LEAST), "at_least");
	assert_string_equal(sv_bound_name(SV_BELOW), "below_lowest");
	assert_string_equal(sv_bound_name(-1), "?");
	assert_string_equal(sv_bound_name(3), "?");
	for (int b = SV_EXACT; b <= SV_BELOW; b++)
		assert_int_equal(sv_bound_parse(sv_bound_name(b)), b);
	assert_int_equal(sv_bound_parse("below"), -EINVAL);
	assert_int_equal(sv_bound_parse(""), -EINVAL);
}

/* The context probe's error answers (duetd's wording), and the prompt words. */
static void test_context_of_error(void **state)
{
	int cap = -1;

	assert_int_equal(sv_context_of_error("max_tokens: prompt (1 tokens) + max_tokens "
					     "(1048576) exceeds the context length 1024",
					     &cap),
			 1024);
	assert_int_equal(cap, -1);
	assert_int_equal(sv_context_of_error("max_tokens: must be an integer in [1, 4096], "
					     "got 1048576",
					     &cap),
			 0);
	assert_int_equal(cap, 4096);
	assert_int_equal(sv_context_of_error("max_tokens: must be an integer in [1, 512], got "
					     "1048576",
					     NULL),
			 0);
	assert_int_equal(sv_context_of_error("no partition is taking requests", &cap), 0);
	assert_int_equal(cap, 4096);
	assert_int_equal(sv_context_of_error(NULL, &cap), 0);

	for (int i = 0; i < SV_NWORDS; i++) {
		assert_non_null(sv_words[i]);
		assert_true(sv_words[i][0] && !strpbrk(sv_words[i], " \"\\"));
	}
}

static void test_rates_parse(void **state)
{
	double r[8], lo = 0, hi = 0;
	size_t n;

	assert_int_equal(sv_rates_parse("0.5,1,2.5", r, 8, &n, &lo, &hi), 0);
	assert_true(n == 3 && r[0] == 0.5 && r[1] == 1 && r[2] == 2.5);
	assert_int_equal(sv_rates_parse("4", r, 8, &n, &lo, &hi), 0);
	assert_true(n == 1 && r[0] == 4);
	assert_int_equal(sv_rates_parse("0.5..8", r, 8, &n, &lo, &hi), 0);
	assert_true(n == 0 && lo == 0.5 && hi == 8);
	assert_int_equal(sv_rates_parse("1..16", r, 8, &n, &lo, &hi), 0);
	assert_true(n == 0 && lo == 1 && hi == 16);
	assert_int_equal(sv_rates_parse("..4", r, 8, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("1x..4", r, 8, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("2,1", r, 8, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("1,,2", r, 8, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("1,2,", r, 8, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("0,1", r, 8, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("1,2,3", r, 2, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("8..2", r, 8, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("1..", r, 8, &n, &lo, &hi), -EINVAL);
	assert_int_equal(sv_rates_parse("x", r, 8, &n, &lo, &hi), -EINVAL);
}

/* The trace's JSONL in a malloc'd string. */
static char *trace_text(const struct sv_trace *t, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	assert_non_null(f);
	assert_int_equal(sv_trace_write(t, f), 0);
	fclose(f);
	return buf;
}

static struct sv_trace *gen(int profile, double rate, double burst, double dur, size_t max, int ctx,
			    uint64_t seed)
{
	struct sv_gen g = { .profile = profile,
			    .rate = rate,
			    .burstiness = burst,
			    .duration_s = dur,
			    .max_requests = max,
			    .max_context = ctx,
			    .seed = seed };
	struct sv_trace *t;

	assert_int_equal(sv_trace_generate(&g, &t), 0);
	return t;
}

static void test_trace_reproducible(void **state)
{
	for (int p = 0; p < SV_NPROF; p++) {
		struct sv_trace *a = gen(p, 3, 1, 60, 0, 2048, 42);
		struct sv_trace *b = gen(p, 3, 1, 60, 0, 2048, 42);
		struct sv_trace *c = gen(p, 3, 1, 60, 0, 2048, 43);
		size_t la, lb, lc;
		char *ta = trace_text(a, &la), *tb = trace_text(b, &lb), *tc = trace_text(c, &lc);

		assert_true(sv_trace_len(a) > 100);
		assert_true(la == lb && !memcmp(ta, tb, la));
		assert_false(la == lc && !memcmp(ta, tc, la));
		free(ta);
		free(tb);
		free(tc);
		sv_trace_destroy(a);
		sv_trace_destroy(b);
		sv_trace_destroy(c);
	}
}

/* Mean gap 1/rate within 3% over 20000 arrivals; coefficient of variation 1/sqrt(k). */
static void check_gaps(double k)
{
	const double rate = 5;
	struct sv_trace *t = gen(SV_PROF_CHAT, rate, k, 0, 20000, 2048, 7);
	double prev = 0, sum = 0, sq = 0, mean, cv;
	size_t n = sv_trace_len(t);

	assert_int_equal(n, 20000);
	for (size_t i = 0; i < n; i++) {
		double gap = sv_trace_at(t, i)->arrival_s - prev;

		assert_true(gap >= 0);
		prev += gap;
		sum += gap;
		sq += gap * gap;
	}
	mean = sum / (double)n;
	cv = sqrt(sq / (double)n - mean * mean) / mean;
	assert_true(fabs(mean * rate - 1) < 0.03);
	assert_true(fabs(cv - 1 / sqrt(k)) < 0.05 / sqrt(k));
	assert_float_equal(sv_trace_rate(t), rate, rate * 0.03);
	sv_trace_destroy(t);
}

static void test_trace_arrivals(void **state)
{
	check_gaps(1);	  /* Poisson */
	check_gaps(0.25); /* bursty */
	check_gaps(4);	  /* even */
}

/* The same seed at twice the rate: the same requests at half the times. */
static void test_trace_rate_scaling(void **state)
{
	struct sv_trace *a = gen(SV_PROF_MIXED, 2, 0.5, 0, 500, 1024, 9);
	struct sv_trace *b = gen(SV_PROF_MIXED, 4, 0.5, 0, 500, 1024, 9);

	assert_int_equal(sv_trace_len(a), sv_trace_len(b));
	for (size_t i = 0; i < sv_trace_len(a); i++) {
		const struct sv_treq *x = sv_trace_at(a, i), *y = sv_trace_at(b, i);

		assert_float_equal(x->arrival_s, 2 * y->arrival_s, 1e-9 * x->arrival_s);
		assert_true(x->prompt_tokens == y->prompt_tokens &&
			    x->max_tokens == y->max_tokens && x->group == y->group &&
			    x->cls == y->cls);
	}
	sv_trace_scale(b, 2);
	assert_float_equal(sv_trace_at(b, 499)->arrival_s, sv_trace_at(a, 499)->arrival_s, 1e-9);
	sv_trace_destroy(a);
	sv_trace_destroy(b);

	/* A duration limit: every arrival inside it. */
	a = gen(SV_PROF_CHAT, 10, 1, 3, 0, 1024, 1);
	assert_true(sv_trace_len(a) > 10 && sv_trace_at(a, sv_trace_len(a) - 1)->arrival_s < 3);
	sv_trace_destroy(a);
}

static void test_trace_profiles(void **state)
{
	static const int ctxs[] = { 256, 1024, 4096 };

	for (size_t c = 0; c < 3; c++) {
		int ctx = ctxs[c];

		for (int p = 0; p < SV_NPROF; p++) {
			struct sv_trace *t = gen(p, 1, 1, 0, 2000, ctx, 3);
			int seen[SV_NCLASS] = { 0 };
			double sum_p[SV_NCLASS] = { 0 }, sum_o[SV_NCLASS] = { 0 };

			for (size_t i = 0; i < sv_trace_len(t); i++) {
				const struct sv_treq *r = sv_trace_at(t, i);

				assert_true(r->prompt_tokens >= 1 && r->max_tokens >= 1);
				assert_true(r->prompt_tokens + r->max_tokens <= ctx - 2);
				assert_true(r->cls >= 0 && r->cls < SV_NCLASS);
				assert_true((r->group >= 0) == (r->cls == SV_AGENT));
				assert_true(p == SV_PROF_MIXED || r->cls == p);
				assert_null(r->prompt);
				seen[r->cls]++;
				sum_p[r->cls] += r->prompt_tokens;
				sum_o[r->cls] += r->max_tokens;
			}
			if (p == SV_PROF_MIXED) {
				/* 1/2, 1/4, 1/4 of 2000 */
				assert_true(abs(seen[SV_CHAT] - 1000) < 100);
				assert_true(abs(seen[SV_SUMMARIZE] - 500) < 75);
			}
			if (ctx == 4096 && p == SV_PROF_CHAT) { /* unscaled: means of the ranges */
				assert_float_equal(sum_p[SV_CHAT] / seen[SV_CHAT], 80, 4);
				assert_float_equal(sum_o[SV_CHAT] / seen[SV_CHAT], 256, 8);
			}
			if (ctx == 4096 && p == SV_PROF_SUMMARIZE) {
				assert_float_equal(sum_p[SV_SUMMARIZE] / seen[SV_SUMMARIZE], 1152,
						   30);
				assert_float_equal(sum_o[SV_SUMMARIZE] / seen[SV_SUMMARIZE], 40, 2);
			}
			if (seen[SV_SUMMARIZE] && seen[SV_CHAT]) /* prefill- vs decode-heavy */
				assert_true(sum_p[SV_SUMMARIZE] / seen[SV_SUMMARIZE] >
					    3 * sum_p[SV_CHAT] / seen[SV_CHAT]);
			sv_trace_destroy(t);
		}
	}
}

/* Agent turns of one group grow: each prompt is longer than the group's previous one. */
static void test_trace_agent_prefixes(void **state)
{
	struct sv_trace *t = gen(SV_PROF_AGENT, 1, 1, 0, 400, 2048, 5);
	int last_len[512], groups = 0, growing = 0;

	memset(last_len, 0, sizeof(last_len));
	for (size_t i = 0; i < sv_trace_len(t); i++) {
		const struct sv_treq *r = sv_trace_at(t, i);

		assert_true(r->group >= 0 && r->group < 512);
		if (!last_len[r->group])
			groups++;
		else if (r->prompt_tokens > last_len[r->group])
			growing++;
		else
			fail_msg("group %d shrank: %d after %d", r->group, r->prompt_tokens,
				 last_len[r->group]);
		last_len[r->group] = r->prompt_tokens;
	}
	/* At most 8 turns per conversation: at least 400 / 8 groups, most requests are continuations. */
	assert_true(groups >= 50 && growing > 200);
	sv_trace_destroy(t);
}

static void test_trace_file(void **state)
{
	static const char text[] =
		"# edited by hand\n"
		"{\"arrival_s\":0,\"prompt_tokens\":10,\"max_tokens\":5,\"class\":\"chat\"}\n"
		"\n"
		"{\"arrival_s\":0.5,\"prompt\":\"Hello \\\"you\\\"\",\"max_tokens\":3}\n"
		"{\"arrival_s\":0.5,\"prompt_tokens\":20,\"max_tokens\":2,\"prefix_group\":7}\n";
	struct sv_trace *t, *u;
	char err[128], *out;
	size_t len;
	FILE *f;

	f = fmemopen((void *)text, sizeof(text) - 1, "r");
	assert_int_equal(sv_trace_read(f, &t, err, sizeof(err)), 0);
	fclose(f);
	assert_int_equal(sv_trace_len(t), 3);
	assert_true(sv_trace_at(t, 0)->cls == SV_CHAT && sv_trace_at(t, 0)->prompt_tokens == 10);
	assert_string_equal(sv_trace_at(t, 1)->prompt, "Hello \"you\"");
	assert_true(sv_trace_at(t, 1)->cls == -1 && sv_trace_at(t, 1)->group == -1);
	assert_true(sv_trace_at(t, 2)->group == 7 && sv_trace_at(t, 2)->max_tokens == 2);
	assert_float_equal(sv_trace_rate(t), 6, 1e-12);
	out = trace_text(t, &len);
	assert_string_equal(
		out, "{\"arrival_s\":0.000000,\"prompt_tokens\":10,\"max_tokens\":5,"
		     "\"class\":\"chat\"}\n"
		     "{\"arrival_s\":0.500000,\"prompt\":\"Hello \\\"you\\\"\",\"max_tokens\":3}\n"
		     "{\"arrival_s\":0.500000,\"prompt_tokens\":20,\"max_tokens\":2,"
		     "\"prefix_group\":7}\n");
	free(out);
	sv_trace_destroy(t);

	/* A generated trace survives write + read (times to the microsecond). */
	t = gen(SV_PROF_MIXED, 2, 1, 0, 300, 1024, 11);
	out = trace_text(t, &len);
	f = fmemopen(out, len, "r");
	assert_int_equal(sv_trace_read(f, &u, err, sizeof(err)), 0);
	fclose(f);
	assert_int_equal(sv_trace_len(u), 300);
	for (size_t i = 0; i < 300; i++) {
		const struct sv_treq *x = sv_trace_at(t, i), *y = sv_trace_at(u, i);

		assert_float_equal(x->arrival_s, y->arrival_s, 1e-6);
		assert_true(x->prompt_tokens == y->prompt_tokens &&
			    x->max_tokens == y->max_tokens && x->group == y->group &&
			    x->cls == y->cls);
	}
	free(out);
	sv_trace_destroy(t);
	sv_trace_destroy(u);

	/* Bad lines are refused with their number. */
	{
		static const char *const bad[] = {
			"{\"arrival_s\":1,\"prompt_tokens\":1,\"max_tokens\":1}\n"
			"{\"arrival_s\":0.5,\"prompt_tokens\":1,\"max_tokens\":1}\n",
			"{\"arrival_s\":0,\"prompt_tokens\":1}\n",
			"{\"arrival_s\":0,\"max_tokens\":1}\n",
			"{\"arrival_s\":0,\"prompt_tokens\":0,\"max_tokens\":1}\n",
			"{\"arrival_s\":0,\"prompt_tokens\":2,\"prompt\":\"x\",\"max_tokens\":1}\n",
			"[1]\n",
			"{\"arrival_s\":0,\n",
			"{\"arrival_s\":\"0\",\"prompt_tokens\":1,\"max_tokens\":1}\n",
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			f = fmemopen((void *)bad[i], strlen(bad[i]), "r");
			err[0] = '\0';
			assert_int_equal(sv_trace_read(f, &t, err, sizeof(err)), -EINVAL);
			assert_null(t);
			assert_true(!strncmp(err, i ? "line 1:" : "line 2:", 7));
			fclose(f);
		}
	}
}

static void test_generate_bad_params(void **state)
{
	struct sv_gen g = {
		.profile = SV_PROF_CHAT, .rate = 1, .duration_s = 1, .max_context = 1024
	};
	struct sv_trace *t;

	g.rate = 0;
	assert_int_equal(sv_trace_generate(&g, &t), -EINVAL);
	g.rate = 1;
	g.duration_s = 0;
	assert_int_equal(sv_trace_generate(&g, &t), -EINVAL); /* no limit */
	g.duration_s = 1;
	g.max_context = 3;
	assert_int_equal(sv_trace_generate(&g, &t), -EINVAL);
	g.max_context = 1024;
	g.profile = SV_NPROF;
	assert_int_equal(sv_trace_generate(&g, &t), -EINVAL);
	g.profile = SV_PROF_AGENT;
	g.burstiness = -1;
	assert_int_equal(sv_trace_generate(&g, &t), -EINVAL);
	assert_int_equal(sv_profile_parse("mixed"), SV_PROF_MIXED);
	assert_int_equal(sv_profile_parse("chat"), SV_PROF_CHAT);
	assert_int_equal(sv_profile_parse("nope"), -EINVAL);
	assert_string_equal(sv_class_name(SV_AGENT), "agent");
}

/* --unloaded keeps a trace's first N requests: the same requests, the text prompts freed. */
static void test_trace_truncate(void **state)
{
	static const char file[] = "{\"arrival_s\":0,\"prompt\":\"a\",\"max_tokens\":1}\n"
				   "{\"arrival_s\":1,\"prompt_tokens\":7,\"max_tokens\":2}\n"
				   "{\"arrival_s\":2,\"prompt\":\"bc\",\"max_tokens\":3}\n";
	FILE *f = fmemopen((void *)file, sizeof(file) - 1, "r");
	struct sv_trace *t;
	char err[128];

	assert_non_null(f);
	assert_int_equal(sv_trace_read(f, &t, err, sizeof(err)), 0);
	fclose(f);
	sv_trace_truncate(t, 5); /* more than it has: unchanged */
	assert_int_equal(sv_trace_len(t), 3);
	sv_trace_truncate(t, 2); /* frees the third's prompt (a leak would show under ASan) */
	assert_int_equal(sv_trace_len(t), 2);
	assert_string_equal(sv_trace_at(t, 0)->prompt, "a");
	assert_int_equal(sv_trace_at(t, 1)->prompt_tokens, 7);
	assert_int_equal(sv_trace_at(t, 1)->max_tokens, 2);
	sv_trace_destroy(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_percentiles),    cmocka_unit_test(test_request_figures),
		cmocka_unit_test(test_slo_and_run),    cmocka_unit_test(test_goodput),
		cmocka_unit_test(test_rates_parse),    cmocka_unit_test(test_trace_reproducible),
		cmocka_unit_test(test_trace_arrivals), cmocka_unit_test(test_trace_rate_scaling),
		cmocka_unit_test(test_trace_profiles), cmocka_unit_test(test_trace_agent_prefixes),
		cmocka_unit_test(test_trace_file),     cmocka_unit_test(test_generate_bad_params),
		cmocka_unit_test(test_server_phases),  cmocka_unit_test(test_trace_truncate),
		cmocka_unit_test(test_bound),	       cmocka_unit_test(test_context_of_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
