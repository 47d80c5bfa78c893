// SPDX-License-Identifier: MIT
/* Token sampler and stop strings. */
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
#include <time.h>

#include "runtime/core/mem.h"
#include "runtime/model/sampler.h"
#include "tests/unit/testutil.h"

/* Parameters for plain temperature sampling: every filter off. */
static struct smp_params plain(float temperature, uint64_t seed)
{
	struct smp_params p = smp_params_default();

	p.temperature = temperature;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.seed = seed;
	return p;
}

static struct sampler *make(const struct smp_params *p, int n_vocab)
{
	struct sampler *s = NULL;
	char err[128];

	assert_int_equal(smp_params_validate(p, n_vocab, err, sizeof(err)), 0);
	assert_int_equal(smp_create(p, n_vocab, &s), 0);
	assert_non_null(s);
	return s;
}

/* Logits whose softmax (temperature 1) is exactly probs. */
static void logits_from_probs(float *lg, const double *probs, int n)
{
	for (int i = 0; i < n; i++)
		lg[i] = probs[i] > 0 ? (float)log(probs[i]) : -INFINITY;
}

/* Small deterministic generator for test data, independent of the sampler's. */
static uint64_t tr_state = 88172645463325252ull;

static uint32_t tr_next(void)
{
	tr_state ^= tr_state << 13;
	tr_state ^= tr_state >> 7;
	tr_state ^= tr_state << 17;
	return (uint32_t)(tr_state >> 32);
}

static float tr_float(float lo, float hi)
{
	return lo + (hi - lo) * (float)(tr_next() >> 8) * (1.0f / 16777216.0f);
}

/*
 * Draw n tokens and check the counts against expected probabilities (0 where
 * the token must never appear) with Pearson's chi-square: the bound is far in
 * the tail (p < 1e-6 for the degrees of freedom used here).
 */
static void check_frequencies(struct sampler *s, const float *lg, const double *expect, int n_vocab,
			      int n)
{
	int counts[64] = { 0 };
	double chi2 = 0.0;
	int dof = -1;

	assert_true(n_vocab <= 64);
	for (int i = 0; i < n; i++) {
		int32_t t = smp_sample(s, lg);

		assert_in_range(t, 0, n_vocab - 1);
		counts[t]++;
	}
	for (int t = 0; t < n_vocab; t++) {
		if (expect[t] == 0.0) {
			assert_int_equal(counts[t], 0);
			continue;
		}
		double e = expect[t] * n;

		chi2 += (counts[t] - e) * (counts[t] - e) / e;
		dof++;
	}
	/* chi-square 1e-6 tail: dof 1: 23.9, 2: 27.6, 4: 33.4, 7: 39.3. */
	print_message("    chi2 = %.2f with %d degrees of freedom\n", chi2, dof);
	assert_true(chi2 < 24.0 + 2.5 * dof);
}

/* --- parameters ------------------------------------------------------------- */

static void test_defaults(void **state)
{
	struct smp_params p = smp_params_default();
	struct sampler *s;
	char err[128];

	(void)state;
	assert_int_equal(smp_params_validate(&p, 32000, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_true(p.temperature > 0 && p.top_k == 40);
	assert_true(p.repeat_penalty == 1.0f && p.top_p <= 1.0f);
	s = make(&p, 32000);
	smp_destroy(s);
	smp_destroy(NULL);
	assert_int_equal(smp_create(&p, 0, &s), -EINVAL);
	assert_int_equal(smp_create(NULL, 10, &s), -EINVAL);
	assert_int_equal(smp_create(&p, 10, NULL), -EINVAL);
}

/* Every allocation of smp_create() failing in turn: -ENOMEM, nothing leaked (ASan checks). */
static void test_create_enomem(void **state)
{
	static const struct smp_bias bias[] = { { 3, 1.0f } };
	struct smp_params p = smp_params_default();
	struct sampler *s = NULL;
	unsigned long n;
	int ret;

	(void)state;
	p.repeat_penalty = 1.2f;
	p.logit_bias = bias;
	p.n_logit_bias = 1;
	for (n = 1;; n++) {
		duet_mem_fail_at(n);
		ret = smp_create(&p, 1000, &s);
		duet_mem_fail_at(0);
		if (ret == 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_null(s);
	}
	assert_true(n > 5); /* the sampler, bias, ring, counts, scratch... */
	smp_destroy(s);
}

struct bad_case {
	const char *what; /* substring the message must contain */
	void (*mutate)(struct smp_params *p);
};

static const struct smp_bias bias_bad_token[] = { { 10, 1.0f } };
static const struct smp_bias bias_neg_token[] = { { 0, 1.0f }, { -1, 1.0f } };
static const struct smp_bias bias_too_big[] = { { 1, 100.5f } };
static const struct smp_bias bias_pos_inf[] = { { 1, INFINITY } };
static const struct smp_bias bias_nan[] = { { 1, NAN } };

#define MUT(name, stmt)                        \
	static void name(struct smp_params *p) \
	{                                      \
		stmt;                          \
	}
MUT(m_temp_neg, p->temperature = -0.1f)
MUT(m_temp_big, p->temperature = 100.5f)
MUT(m_temp_nan, p->temperature = NAN)
MUT(m_topk_neg, p->top_k = -1)
MUT(m_topp_zero, p->top_p = 0.0f)
MUT(m_topp_big, p->top_p = 1.01f)
MUT(m_topp_nan, p->top_p = NAN)
MUT(m_minp_neg, p->min_p = -0.01f)
MUT(m_minp_big, p->min_p = 1.5f)
MUT(m_minp_nan, p->min_p = NAN)
MUT(m_rep_zero, p->repeat_penalty = 0.0f)
MUT(m_rep_neg, p->repeat_penalty = -1.0f)
MUT(m_rep_big, p->repeat_penalty = 11.0f)
MUT(m_rep_nan, p->repeat_penalty = NAN)
MUT(m_lastn_neg, p->repeat_last_n = -1)
MUT(m_lastn_big, p->repeat_last_n = SMP_MAX_LAST_N + 1)
MUT(m_pres_low, p->presence_penalty = -2.5f)
MUT(m_pres_high, p->presence_penalty = 2.01f)
MUT(m_pres_nan, p->presence_penalty = NAN)
MUT(m_freq_low, p->frequency_penalty = -2.01f)
MUT(m_freq_high, p->frequency_penalty = 3.0f)
MUT(m_freq_nan, p->frequency_penalty = NAN)
MUT(m_nbias_neg, p->n_logit_bias = -1)
MUT(m_bias_null, p->n_logit_bias = 1)
MUT(m_bias_token, (p->logit_bias = bias_bad_token, p->n_logit_bias = 1))
MUT(m_bias_negtok, (p->logit_bias = bias_neg_token, p->n_logit_bias = 2))
MUT(m_bias_big, (p->logit_bias = bias_too_big, p->n_logit_bias = 1))
MUT(m_bias_inf, (p->logit_bias = bias_pos_inf, p->n_logit_bias = 1))
MUT(m_bias_nan, (p->logit_bias = bias_nan, p->n_logit_bias = 1))

static const struct bad_case bad_cases[] = {
	{ "temperature", m_temp_neg },
	{ "temperature", m_temp_big },
	{ "temperature", m_temp_nan },
	{ "top_k", m_topk_neg },
	{ "top_p", m_topp_zero },
	{ "top_p", m_topp_big },
	{ "top_p", m_topp_nan },
	{ "min_p", m_minp_neg },
	{ "min_p", m_minp_big },
	{ "min_p", m_minp_nan },
	{ "repeat_penalty", m_rep_zero },
	{ "repeat_penalty", m_rep_neg },
	{ "repeat_penalty", m_rep_big },
	{ "repeat_penalty", m_rep_nan },
	{ "repeat_last_n", m_lastn_neg },
	{ "repeat_last_n", m_lastn_big },
	{ "presence_penalty", m_pres_low },
	{ "presence_penalty", m_pres_high },
	{ "presence_penalty", m_pres_nan },
	{ "frequency_penalty", m_freq_low },
	{ "frequency_penalty", m_freq_high },
	{ "frequency_penalty", m_freq_nan },
	{ "n_logit_bias", m_nbias_neg },
	{ "logit_bias", m_bias_null },
	{ "logit_bias[0] token", m_bias_token },
	{ "logit_bias[1] token", m_bias_negtok },
	{ "logit_bias[0] bias", m_bias_big },
	{ "logit_bias[0] bias", m_bias_inf },
	{ "logit_bias[0] bias", m_bias_nan },
};

static void test_validate_rejects(void **state)
{
	char err[128];

	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct smp_params p = smp_params_default();
		struct sampler *s = NULL;

		bad_cases[i].mutate(&p);
		assert_int_equal(smp_params_validate(&p, 10, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad_cases[i].what))
			fail_msg("case %zu: '%s' does not name '%s'", i, err, bad_cases[i].what);
		assert_int_equal(smp_create(&p, 10, &s), -EINVAL);
		assert_null(s);
	}

	/* The edges of every range are accepted. */
	static const struct smp_bias edge_bias[] = { { 0, -100.0f },
						     { 9, 100.0f },
						     { 3, -INFINITY } };
	struct smp_params p = smp_params_default();

	p.temperature = 100.0f;
	p.top_p = 1.0f;
	p.min_p = 1.0f;
	p.repeat_penalty = 10.0f;
	p.repeat_last_n = 0;
	p.presence_penalty = -2.0f;
	p.frequency_penalty = 2.0f;
	p.logit_bias = edge_bias;
	p.n_logit_bias = 3;
	assert_int_equal(smp_params_validate(&p, 10, err, sizeof(err)), 0);
	p.temperature = 0.0f;
	p.min_p = 0.0f;
	p.top_p = 1e-6f;
	assert_int_equal(smp_params_validate(&p, 10, err, sizeof(err)), 0);

	/* n_vocab, NULL params and a tiny or absent message buffer. */
	assert_int_equal(smp_params_validate(&p, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "n_vocab"));
	assert_int_equal(smp_params_validate(NULL, 10, err, sizeof(err)), -EINVAL);
	p.top_k = -5;
	assert_int_equal(smp_params_validate(&p, 10, NULL, 0), -EINVAL);
	assert_int_equal(smp_params_validate(&p, 10, err, 4), -EINVAL);
	assert_string_equal(err, "top");
}

/* --- greedy ----------------------------------------------------------------- */

static void test_greedy_ties(void **state)
{
	struct smp_params p = plain(0.0f, 1);
	float lg[6] = { 1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 3.0f };
	float flat[6] = { 0 };
	float nan_first[6] = { NAN, 0.5f, 0.5f, NAN, 0.1f, 0.2f };
	struct sampler *s;

	(void)state;
	p.top_k = 3; /* ignored when greedy */
	p.top_p = 0.1f;
	p.min_p = 0.9f;
	s = make(&p, 6);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(smp_sample(s, lg), 1);
		assert_int_equal(smp_sample(s, flat), 0);
		assert_int_equal(smp_sample(s, nan_first), 1);
	}
	/* Logits are not modified. */
	assert_true(lg[1] == 3.0f && lg[3] == 3.0f && isnan(nan_first[0]));
	lg[5] = INFINITY;
	assert_int_equal(smp_sample(s, lg), 5);
	assert_int_equal(smp_sample(NULL, lg), -EINVAL);
	assert_int_equal(smp_sample(s, NULL), -EINVAL);
	smp_destroy(s);
}

static void test_all_banned(void **state)
{
	static const struct smp_bias ban[] = { { 0, -INFINITY }, { 1, -INFINITY } };
	float lg[3] = { 1.0f, 2.0f, -INFINITY };
	float nans[3] = { NAN, NAN, NAN };

	(void)state;
	for (int greedy = 0; greedy < 2; greedy++) {
		struct smp_params p = plain(greedy ? 0.0f : 1.0f, 3);
		struct sampler *s;

		s = make(&p, 3);
		assert_int_equal(smp_sample(s, nans), -ERANGE);
		smp_destroy(s);
		p.logit_bias = ban;
		p.n_logit_bias = 2;
		s = make(&p, 3);
		assert_int_equal(smp_sample(s, lg), -ERANGE);
		smp_destroy(s);
	}
}

static void test_logit_bias(void **state)
{
	static const struct smp_bias ban_max[] = { { 2, -INFINITY } };
	static const struct smp_bias boost[] = { { 0, 1.0f }, { 0, 1.5f }, { 1, -0.5f } };
	float lg[4] = { 0.0f, 2.0f, 5.0f, 1.0f };
	struct smp_params p = plain(0.0f, 5);
	struct sampler *s;

	(void)state;
	p.logit_bias = ban_max;
	p.n_logit_bias = 1;
	s = make(&p, 4);
	assert_int_equal(smp_sample(s, lg), 1);
	smp_destroy(s);

	/* Sampling: the banned argmax never comes up, even at high temperature. */
	p.temperature = 5.0f;
	s = make(&p, 4);
	for (int i = 0; i < 5000; i++)
		assert_int_not_equal(smp_sample(s, lg), 2);
	smp_destroy(s);

	/* Entries add up: token 0 gets 2.5 > 2 - 0.5; still < 5. */
	lg[2] = 2.4f;
	p = plain(0.0f, 5);
	p.logit_bias = boost;
	p.n_logit_bias = 3;
	s = make(&p, 4);
	assert_int_equal(smp_sample(s, lg), 0);
	smp_destroy(s);
}

/* --- temperature, seeds, top-k, top-p, min-p --------------------------------- */

static void test_temperature_frequencies(void **state)
{
	static const double probs[5] = { 0.4, 0.25, 0.2, 0.1, 0.05 };
	static const float temps[3] = { 1.0f, 0.5f, 2.0f };
	float lg[5];

	(void)state;
	logits_from_probs(lg, probs, 5);
	for (int ti = 0; ti < 3; ti++) {
		struct smp_params p = plain(temps[ti], 1234 + ti);
		struct sampler *s = make(&p, 5);
		double expect[5], sum = 0.0;

		/* softmax(logit / T) = probs^(1/T), renormalized. */
		for (int i = 0; i < 5; i++)
			sum += expect[i] = pow(probs[i], 1.0 / temps[ti]);
		for (int i = 0; i < 5; i++)
			expect[i] /= sum;
		check_frequencies(s, lg, expect, 5, 20000);
		smp_destroy(s);
	}
}

static void test_seed_determinism(void **state)
{
	enum { V = 300, N = 200 };
	static float lg[V];
	int32_t a[N], b[N];
	int differ = 0;

	(void)state;
	for (int i = 0; i < V; i++)
		lg[i] = tr_float(-3.0f, 3.0f);
	for (int run = 0; run < 3; run++) {
		struct smp_params p = smp_params_default();
		struct sampler *s;

		p.seed = run == 2 ? 43 : 42;
		p.repeat_penalty = 1.1f;
		s = make(&p, V);
		for (int i = 0; i < N; i++) {
			int32_t t = smp_sample(s, lg);

			assert_in_range(t, 0, V - 1);
			smp_accept(s, t);
			if (run == 0)
				a[i] = t;
			else if (run == 1)
				b[i] = t;
			else
				differ += t != a[i];
		}
		if (run == 1) {
			assert_memory_equal(a, b, sizeof(a));
			/* smp_reset() restarts the same stream with an empty window. */
			smp_reset(s);
			for (int i = 0; i < N; i++) {
				int32_t t = smp_sample(s, lg);

				assert_int_equal(t, a[i]);
				smp_accept(s, t);
			}
		}
		smp_destroy(s);
	}
	assert_true(differ > N / 2);
}

static void test_top_k(void **state)
{
	enum { V = 2000 };
	static float lg[V];
	struct smp_params p = plain(1.5f, 7);
	struct smp_params g = plain(0.0f, 7);
	struct sampler *s, *gs;

	(void)state;
	/* top_k = 1 is greedy, ties to the lowest id included. */
	p.top_k = 1;
	s = make(&p, V);
	gs = make(&g, V);
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < V; i++)
			lg[i] = (float)(int)tr_float(-50.0f, 8.0f); /* many ties */
		int32_t want = smp_sample(gs, lg);

		for (int i = 0; i < want; i++)
			assert_true(lg[i] < lg[want]);
		assert_int_equal(smp_sample(s, lg), want);
	}
	smp_destroy(s);
	smp_destroy(gs);

	/* top_k = 3 on a hand example: only the three largest, in softmax proportion. */
	static const double probs[8] = { 0.05, 0.3, 0.02, 0.2, 0.1, 0.08, 0.15, 0.1 };
	double expect[8] = { 0 };
	float small[8];

	logits_from_probs(small, probs, 8);
	expect[1] = 0.3 / 0.65;
	expect[3] = 0.2 / 0.65;
	expect[6] = 0.15 / 0.65;
	p = plain(1.0f, 99);
	p.top_k = 3;
	s = make(&p, 8);
	check_frequencies(s, small, expect, 8, 20000);
	smp_destroy(s);

	/* Ties at the cut go to the lower ids: 4, 5 and 7 tie for the last two places. */
	static const float tied[8] = { 0.0f, 3.0f, 0.0f, 0.0f, 1.0f, 1.0f, 0.0f, 1.0f };
	double expect_tied[8] = { 0 };

	expect_tied[1] = exp(3.0) / (exp(3.0) + 2 * exp(1.0));
	expect_tied[4] = expect_tied[5] = exp(1.0) / (exp(3.0) + 2 * exp(1.0));
	s = make(&p, 8);
	check_frequencies(s, tied, expect_tied, 8, 20000);
	smp_destroy(s);
}

static void test_top_p_hand(void **state)
{
	/* Sorted: 0.5 (id 3), 0.2 (id 0), 0.15 (id 4), 0.1 (id 1), 0.05 (id 2). */
	static const double probs[5] = { 0.2, 0.1, 0.05, 0.5, 0.15 };
	float lg[5];

	(void)state;
	logits_from_probs(lg, probs, 5);
	{
		/* 0.5 + 0.2 = 0.7 < 0.8 <= 0.85: three tokens. */
		struct smp_params p = plain(1.0f, 11);
		double expect[5] = { 0.2 / 0.85, 0, 0, 0.5 / 0.85, 0.15 / 0.85 };
		struct sampler *s;

		p.top_p = 0.8f;
		s = make(&p, 5);
		check_frequencies(s, lg, expect, 5, 20000);
		smp_destroy(s);
	}
	{
		/* 0.69: two tokens; 0.3: only the first (at least one is kept). */
		struct smp_params p = plain(1.0f, 12);
		double expect2[5] = { 0.2 / 0.7, 0, 0, 0.5 / 0.7, 0 };
		double expect1[5] = { 0, 0, 0, 1.0, 0 };
		struct sampler *s;

		p.top_p = 0.69f;
		s = make(&p, 5);
		check_frequencies(s, lg, expect2, 5, 20000);
		smp_destroy(s);
		p.top_p = 0.3f;
		s = make(&p, 5);
		check_frequencies(s, lg, expect1, 5, 2000);
		smp_destroy(s);
	}
	{
		/* Equal probabilities: the prefix takes the lower ids. */
		static const float flat[5] = { 1.0f, 1.0f, 1.0f, 1.0f, -INFINITY };
		struct smp_params p = plain(1.0f, 13);
		double expect[5] = { 0.5, 0.5, 0, 0, 0 };
		struct sampler *s;

		p.top_p = 0.5f;
		s = make(&p, 5);
		check_frequencies(s, flat, expect, 5, 20000);
		smp_destroy(s);
	}
}

/*
 * Top-p on a vocabulary large enough for the radix sort: every draw lies in
 * the nucleus a double-precision reference computes, and with 40 large
 * logits in a sea of small ones the nucleus is exactly those 40.
 */
static int cmp_desc(const void *a, const void *b)
{
	const float *x = a, *y = b;

	return (*x < *y) - (*x > *y);
}

static void test_top_p_large(void **state)
{
	enum { V = 50000 };
	static float lg[V], sorted[V];
	struct smp_params p = plain(0.9f, 21);
	struct sampler *s;
	double sum = 0.0, cum = 0.0;
	float cut = 0.0f;
	int seen_distinct = 0;
	static unsigned char seen[V];

	(void)state;
	for (int i = 0; i < V; i++)
		lg[i] = tr_float(-4.0f, 4.0f);
	memcpy(sorted, lg, sizeof(lg));
	qsort(sorted, V, sizeof(float), cmp_desc);
	for (int i = 0; i < V; i++)
		sum += exp((sorted[i] - sorted[0]) / 0.9);
	for (int i = 0; i < V; i++) {
		cum += exp((sorted[i] - sorted[0]) / 0.9);
		if (cum >= 0.5 * sum) {
			cut = sorted[i];
			break;
		}
	}
	p.top_p = 0.5f;
	s = make(&p, V);
	for (int i = 0; i < 20000; i++) {
		int32_t t = smp_sample(s, lg);

		assert_in_range(t, 0, V - 1);
		/* A small tolerance for float versus double at the edge. */
		assert_true(lg[t] >= cut - 1e-4f);
		seen_distinct += !seen[t];
		seen[t] = 1;
	}
	assert_true(seen_distinct > 1000);
	smp_destroy(s);

	/* 40 tokens at 14, the rest at 0: their mass is 40e^14/(40e^14 + V) ~ 0.999. */
	for (int i = 0; i < V; i++)
		lg[i] = (i % 1000 == 7 && i < 40000) ? 14.0f : 0.0f;
	p = plain(1.0f, 22);
	p.top_p = 0.99f;
	s = make(&p, V);
	memset(seen, 0, sizeof(seen));
	seen_distinct = 0;
	for (int i = 0; i < 4000; i++) {
		int32_t t = smp_sample(s, lg);

		assert_true(lg[t] == 14.0f);
		seen_distinct += !seen[t];
		seen[t] = 1;
	}
	assert_int_equal(seen_distinct, 40);
	smp_destroy(s);
}

static void test_min_p_hand(void **state)
{
	static const double probs[6] = { 0.06, 0.5, 0.04, 0.3, 0.1, 0.0 };
	float lg[6];
	struct smp_params p = plain(1.0f, 31);
	double expect[6] = { 0, 0.5 / 0.9, 0, 0.3 / 0.9, 0.1 / 0.9, 0 };
	struct sampler *s;

	(void)state;
	logits_from_probs(lg, probs, 6);
	/* Threshold 0.15 * 0.5 = 0.075: 0.06 and 0.04 go, 0.1 stays. */
	p.min_p = 0.15f;
	s = make(&p, 6);
	check_frequencies(s, lg, expect, 6, 20000);
	smp_destroy(s);

	/* min_p after top-p: top_p 0.85 keeps {0.5, 0.3, 0.1}; min_p 0.5 keeps {0.5, 0.3}. */
	double expect2[6] = { 0, 0.5 / 0.8, 0, 0.3 / 0.8, 0, 0 };

	p.top_p = 0.85f;
	p.min_p = 0.5f;
	s = make(&p, 6);
	check_frequencies(s, lg, expect2, 6, 20000);
	smp_destroy(s);
}

/* Top-k on a large vocabulary: every draw is among the k largest (ties to the lower ids). */
static int cmp_desc(const void *a, const void *b);

static void test_top_k_large(void **state)
{
	enum { V = 60000, K = 100 };
	static float lg[V], sorted[V];
	static unsigned char seen[V];
	struct smp_params p = plain(3.0f, 41);
	struct sampler *s;
	int distinct = 0, n_above = 0;
	float kth;

	(void)state;
	for (int i = 0; i < V; i++)
		lg[i] = (float)(int)tr_float(0.0f, 3000.0f) * 0.01f; /* ties */
	memcpy(sorted, lg, sizeof(lg));
	qsort(sorted, V, sizeof(float), cmp_desc);
	kth = sorted[K - 1];
	for (int i = 0; i < V; i++)
		n_above += lg[i] > kth;
	p.top_k = K;
	s = make(&p, V);
	for (int i = 0; i < 20000; i++) {
		int32_t t = smp_sample(s, lg);
		int rank_among_ties = 0;

		assert_in_range(t, 0, V - 1);
		assert_true(lg[t] >= kth);
		if (lg[t] == kth) {
			for (int j = 0; j < t; j++)
				rank_among_ties += lg[j] == kth;
			assert_true(n_above + rank_among_ties < K);
		}
		distinct += !seen[t];
		seen[t] = 1;
	}
	assert_int_equal(distinct, K);
	smp_destroy(s);
}

/* Non-finite logits while sampling: NaN is never drawn, +inf always is. */
static void test_nonfinite_logits(void **state)
{
	float lg[5] = { NAN, 1.0f, INFINITY, 0.0f, NAN };
	float two_inf[5] = { 0.0f, INFINITY, NAN, INFINITY, 0.0f };
	struct smp_params p = plain(1.0f, 51);
	struct sampler *s = make(&p, 5);
	int c1 = 0;

	(void)state;
	for (int i = 0; i < 100; i++)
		assert_int_equal(smp_sample(s, lg), 2);
	for (int i = 0; i < 2000; i++) {
		int32_t t = smp_sample(s, two_inf);

		assert_true(t == 1 || t == 3);
		c1 += t == 1;
	}
	assert_in_range(c1, 800, 1200);
	lg[2] = 2.0f;
	for (int i = 0; i < 2000; i++) {
		int32_t t = smp_sample(s, lg);

		assert_true(t == 1 || t == 2 || t == 3);
	}
	smp_destroy(s);
}

/*
 * The penalty window over many wrap-arounds: all logits 0 and frequency
 * penalty 1 make the greedy choice the lowest id of least count among the
 * last repeat_last_n accepted tokens.
 */
static void test_penalty_window(void **state)
{
	enum { V = 8, LAST = 7, STEPS = 2000 };
	static const float zero[V];
	int32_t hist[STEPS];
	struct smp_params p = plain(0.0f, 1);
	struct sampler *s;

	(void)state;
	p.frequency_penalty = 1.0f;
	p.repeat_last_n = LAST;
	s = make(&p, V);
	for (int step = 0; step < STEPS; step++) {
		int count[V] = { 0 }, want = 0;

		for (int i = step - LAST < 0 ? 0 : step - LAST; i < step; i++)
			count[hist[i]]++;
		for (int t = 1; t < V; t++)
			if (count[t] < count[want])
				want = t;
		assert_int_equal(smp_sample(s, zero), want);
		/* Mostly low ids, so that counts above one occur. */
		hist[step] = (int32_t)(tr_next() % 3 ? tr_next() % 3 : tr_next() % V);
		smp_accept(s, hist[step]);
	}
	smp_destroy(s);
}

/* --- penalties ----------------------------------------------------------------- */

static int32_t greedy2(const struct smp_params *p, const int32_t *hist, int nh, float l0, float l1)
{
	float lg[8] = { l0, l1, -5.0f, -5.0f, -5.0f, -5.0f, -5.0f, -5.0f };
	struct sampler *s = make(p, 8);
	int32_t t;

	for (int i = 0; i < nh; i++)
		smp_accept(s, hist[i]);
	t = smp_sample(s, lg);
	smp_destroy(s);
	return t;
}

static void test_repeat_penalty(void **state)
{
	struct smp_params p = plain(0.0f, 1);
	static const int32_t h0[] = { 0 };
	static const int32_t h000[] = { 0, 0, 0 };
	static const int32_t evicted[] = { 0, 5, 6 };
	static const int32_t junk[] = { -1, 8, 1000, 0 };

	(void)state;
	p.repeat_penalty = 1.5f;
	p.repeat_last_n = 2;
	/* Positive logit divided: 2 / 1.5 = 1.333. */
	assert_int_equal(greedy2(&p, h0, 1, 2.0f, 1.34f), 1);
	assert_int_equal(greedy2(&p, h0, 1, 2.0f, 1.32f), 0);
	/* Negative logit multiplied: -1 * 1.5 = -1.5. */
	assert_int_equal(greedy2(&p, h0, 1, -1.0f, -1.49f), 1);
	assert_int_equal(greedy2(&p, h0, 1, -1.0f, -1.51f), 0);
	/* Applied once however often the token occurs. */
	assert_int_equal(greedy2(&p, h000, 3, 2.0f, 1.32f), 0);
	/* Token 0 has left the two-token window. */
	assert_int_equal(greedy2(&p, evicted, 3, 2.0f, 1.9f), 0);
	/* Ids outside the vocabulary are ignored; 0 still counts. */
	assert_int_equal(greedy2(&p, junk, 4, 2.0f, 1.34f), 1);
	/* repeat_last_n = 0 turns penalties off. */
	p.repeat_last_n = 0;
	assert_int_equal(greedy2(&p, h0, 1, 2.0f, 1.34f), 0);
}

static void test_presence_frequency(void **state)
{
	struct smp_params p = plain(0.0f, 1);
	static const int32_t h00[] = { 0, 0 };
	static const int32_t h0000[] = { 0, 0, 0, 0 };

	(void)state;
	p.repeat_last_n = 64;
	p.presence_penalty = 0.5f;
	p.frequency_penalty = 0.3f;
	/* 3 - 0.5 - 2 * 0.3 = 1.9. */
	assert_int_equal(greedy2(&p, h00, 2, 3.0f, 1.91f), 1);
	assert_int_equal(greedy2(&p, h00, 2, 3.0f, 1.89f), 0);
	/* Four occurrences: 3 - 0.5 - 1.2 = 1.3. */
	assert_int_equal(greedy2(&p, h0000, 4, 3.0f, 1.31f), 1);
	assert_int_equal(greedy2(&p, h0000, 4, 3.0f, 1.29f), 0);
	/* Negative penalties encourage repetition: 1 + 0.5 + 0.6 = 2.1. */
	p.presence_penalty = -0.5f;
	p.frequency_penalty = -0.3f;
	assert_int_equal(greedy2(&p, h00, 2, 1.0f, 2.09f), 0);
	assert_int_equal(greedy2(&p, h00, 2, 1.0f, 2.11f), 1);
	/* Repeat penalty first, then presence and frequency: 3 / 2 - 0.5 - 0.3 = 0.7. */
	p.repeat_penalty = 2.0f;
	p.presence_penalty = 0.5f;
	p.frequency_penalty = 0.15f;
	assert_int_equal(greedy2(&p, h00, 2, 3.0f, 0.71f), 1);
	assert_int_equal(greedy2(&p, h00, 2, 3.0f, 0.69f), 0);
}

/* --- big vocabularies: no allocation, timing ------------------------------------ */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void time_case(const char *name, int V, const struct smp_params *p, const float *lg, int n)
{
	struct sampler *s = make(p, V);
	double t0;
	unsigned long allocs;

	for (int i = 0; i < 64; i++)
		smp_accept(s, (int32_t)(tr_next() % (uint32_t)V));
	duet_mem_fail_at(1); /* any allocation from here on fails */
	t0 = now_s();
	for (int i = 0; i < n; i++) {
		int32_t t = smp_sample(s, lg);

		assert_in_range(t, 0, V - 1);
		smp_accept(s, t);
	}
	t0 = now_s() - t0;
	allocs = duet_mem_fail_at(0);
	assert_int_equal(allocs, 0);
	print_message("    vocab %6d %-34s %8.1f us/token\n", V, name, t0 * 1e6 / n);
	/* Loose: sanitizer builds and busy hosts must pass too. */
	assert_true(t0 / n < 0.05);
	smp_destroy(s);
}

static void test_big_vocab(void **state)
{
	static const int vocabs[2] = { 32000, 150000 };
	static float lg[150000];

	(void)state;
	for (int vi = 0; vi < 2; vi++) {
		int V = vocabs[vi];
		struct smp_params p;

		/* Flat logits: the nucleus is most of the vocabulary (the worst case). */
		for (int i = 0; i < V; i++)
			lg[i] = tr_float(-2.0f, 2.0f);
		p = plain(1.0f, 5);
		p.top_p = 0.95f;
		time_case("flat, top-p 0.95", V, &p, lg, 200);
		p = smp_params_default();
		p.repeat_penalty = 1.1f;
		time_case("flat, defaults + repeat penalty", V, &p, lg, 200);
		/* Peaked logits, as a trained model gives. */
		for (int i = 0; i < V; i++) {
			float u = tr_float(0.0f, 1.0f);

			lg[i] = 12.0f * u * u * u * u * u * u - 4.0f;
		}
		p = plain(0.8f, 5);
		p.top_p = 0.95f;
		time_case("peaked, top-p 0.95", V, &p, lg, 200);
		p = plain(0.0f, 5);
		time_case("greedy", V, &p, lg, 200);
	}
}

/* --- stop strings ---------------------------------------------------------------- */

/*
 * The engine's side of the contract: a pending buffer, text fed in pieces of
 * the given sizes (cycled), what was emitted collected in out.  Returns
 * whether a stop string was hit.
 */
static bool run_stop(struct smp_stop *st, const char *text, const size_t *pieces, int npieces,
		     char *out, size_t outcap)
{
	char pending[4096];
	size_t plen = 0, olen = 0, off = 0, tlen = strlen(text);
	bool stopped = false;

	for (int k = 0; off < tlen && !stopped; k++) {
		size_t n = pieces[k % npieces], emit;

		if (n > tlen - off)
			n = tlen - off;
		assert_true(plen + n <= sizeof(pending));
		memcpy(pending + plen, text + off, n);
		plen += n;
		assert_int_equal(smp_stop_feed(st, text + off, n, &emit, &stopped), 0);
		off += n;
		assert_true(emit <= plen);
		assert_true(olen + emit < outcap);
		memcpy(out + olen, pending, emit);
		olen += emit;
		memmove(pending, pending + emit, plen - emit);
		plen -= emit;
		if (!stopped)
			assert_true(plen < SMP_STOP_MAXLEN);
	}
	if (!stopped) {
		/* End of generation: everything pending goes out. */
		memcpy(out + olen, pending, plen);
		olen += plen;
	}
	out[olen] = '\0';
	return stopped;
}

/* Reference: cut before the stop that ends first (the longest among equals). */
static bool ref_stop(const char *text, const char *const *stops, int n, char *out)
{
	size_t tlen = strlen(text);

	for (size_t end = 1; end <= tlen; end++) {
		size_t best = 0;

		for (int j = 0; j < n; j++) {
			size_t l = strlen(stops[j]);

			if (l <= end && !memcmp(text + end - l, stops[j], l) && l > best)
				best = l;
		}
		if (best) {
			memcpy(out, text, end - best);
			out[end - best] = '\0';
			return true;
		}
	}
	strcpy(out, text);
	return false;
}

static void test_stop_basic(void **state)
{
	static const char *const stops[] = { "</s>", "\nUser:" };
	static const size_t one[] = { 1 }, big[] = { 1000 }, mix[] = { 3, 1, 2, 5 };
	struct smp_stop st;
	char out[512], err[128];
	size_t emit;
	bool stopped;

	(void)state;
	assert_int_equal(smp_stop_init(&st, stops, 2, err, sizeof(err)), 0);

	/* The header's example. */
	assert_int_equal(smp_stop_feed(&st, "Hi <", 4, &emit, &stopped), 0);
	assert_false(stopped);
	assert_int_equal(emit, 3);
	assert_int_equal(smp_stop_feed(&st, "/s> x", 5, &emit, &stopped), 0);
	assert_true(stopped);
	assert_int_equal(emit, 0);
	/* Sticky until reset. */
	assert_int_equal(smp_stop_feed(&st, "more", 4, &emit, &stopped), 0);
	assert_true(stopped);
	assert_int_equal(emit, 0);

	/* A held-back partial match released when the text goes another way. */
	smp_stop_reset(&st);
	assert_int_equal(smp_stop_feed(&st, "a\nUs", 4, &emit, &stopped), 0);
	assert_false(stopped);
	assert_int_equal(emit, 1); /* "\nUs" held */
	assert_int_equal(smp_stop_feed(&st, "e", 1, &emit, &stopped), 0);
	assert_int_equal(emit, 0); /* "\nUse" held */
	assert_int_equal(smp_stop_feed(&st, "d it", 4, &emit, &stopped), 0);
	assert_false(stopped);
	assert_int_equal(emit, 8); /* all of "\nUsed it" */
	assert_int_equal(smp_stop_feed(&st, "", 0, &emit, &stopped), 0);
	assert_int_equal(emit, 0);

	/* Same result whatever the pieces. */
	const size_t *piecesets[3] = { one, big, mix };
	const int npieces[3] = { 1, 1, 4 };

	for (int k = 0; k < 3; k++) {
		smp_stop_reset(&st);
		assert_true(run_stop(&st, "Sure.\nUser: hi", piecesets[k], npieces[k], out,
				     sizeof(out)));
		assert_string_equal(out, "Sure.");
		smp_stop_reset(&st);
		assert_true(run_stop(&st, "a < b </s", piecesets[k], npieces[k], out,
				     sizeof(out)) == false);
		assert_string_equal(out, "a < b </s");
		smp_stop_reset(&st);
		assert_true(run_stop(&st, "x</s></s>", piecesets[k], npieces[k], out, sizeof(out)));
		assert_string_equal(out, "x");
	}

	/* No false positives: near misses, case, split markers. */
	smp_stop_reset(&st);
	assert_false(run_stop(&st, "<</ s> </S> \nuser: \nUser </s", big, 1, out, sizeof(out)));
	assert_string_equal(out, "<</ s> </S> \nuser: \nUser </s");

	/* Zero stops: everything goes out at once. */
	assert_int_equal(smp_stop_init(&st, NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(smp_stop_feed(&st, "abc", 3, &emit, &stopped), 0);
	assert_int_equal(emit, 3);
	assert_false(stopped);
	assert_int_equal(smp_stop_feed(NULL, "abc", 3, &emit, &stopped), -EINVAL);
	assert_int_equal(smp_stop_feed(&st, NULL, 3, &emit, &stopped), -EINVAL);
	assert_int_equal(smp_stop_feed(&st, "abc", 3, NULL, &stopped), -EINVAL);
}

static void test_stop_overlaps(void **state)
{
	static const char *const stops[] = { "abcd", "bc", "aab", "zzz" };
	static const size_t one[] = { 1 }, big[] = { 1000 };
	struct smp_stop st;
	char out[256];

	(void)state;
	assert_int_equal(smp_stop_init(&st, stops, 4, NULL, 0), 0);
	/* "bc" ends before "abcd" does: it wins, "a" comes out. */
	assert_true(run_stop(&st, "xabcd", one, 1, out, sizeof(out)));
	assert_string_equal(out, "xa");
	/* KMP fallback: "aaab" contains "aab" starting at 1. */
	smp_stop_reset(&st);
	assert_true(run_stop(&st, "aaab", big, 1, out, sizeof(out)));
	assert_string_equal(out, "a");
	smp_stop_reset(&st);
	assert_true(run_stop(&st, "yzzzzz", one, 1, out, sizeof(out)));
	assert_string_equal(out, "y");
}

/* Random texts over a small alphabet, random stops and random pieces, against the reference. */
static void test_stop_random(void **state)
{
	char text[200], out[256], want[256], stopbuf[4][8];
	const char *stops[4];
	struct smp_stop st;

	(void)state;
	for (int round = 0; round < 3000; round++) {
		int n = 1 + (int)(tr_next() % 4);
		int tl = (int)(tr_next() % 60);
		size_t pieces[5];
		bool want_stop;

		for (int j = 0; j < n; j++) {
			int l = 1 + (int)(tr_next() % 5);

			for (int i = 0; i < l; i++)
				stopbuf[j][i] = (char)('a' + tr_next() % 3);
			stopbuf[j][l] = '\0';
			stops[j] = stopbuf[j];
		}
		for (int i = 0; i < tl; i++)
			text[i] = (char)('a' + tr_next() % 3);
		text[tl] = '\0';
		for (int i = 0; i < 5; i++)
			pieces[i] = 1 + tr_next() % 7;
		assert_int_equal(smp_stop_init(&st, stops, n, NULL, 0), 0);
		want_stop = ref_stop(text, stops, n, want);
		assert_int_equal(run_stop(&st, text, pieces, 5, out, sizeof(out)), want_stop);
		if (strcmp(out, want))
			fail_msg("text '%s' stops '%s' ...: got '%s', want '%s'", text, stops[0],
				 out, want);
	}
}

static void test_stop_init_rejects(void **state)
{
	char long_stop[SMP_STOP_MAXLEN + 2];
	char max_stop[SMP_STOP_MAXLEN + 1];
	const char *many[SMP_STOP_MAX + 1];
	const char *bad[2] = { "ok", "" };
	const char *with_null[2] = { "ok", NULL };
	struct smp_stop st;
	char err[128];
	char out[1024], text[600];
	static const size_t one[] = { 1 };

	(void)state;
	memset(long_stop, 'x', sizeof(long_stop) - 1);
	long_stop[sizeof(long_stop) - 1] = '\0';
	memset(max_stop, 'y', sizeof(max_stop) - 1);
	max_stop[sizeof(max_stop) - 1] = '\0';
	for (int i = 0; i <= SMP_STOP_MAX; i++)
		many[i] = "s";

	assert_int_equal(smp_stop_init(&st, bad, 2, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "stop[1]"));
	assert_non_null(strstr(err, "empty"));
	assert_int_equal(smp_stop_init(&st, with_null, 2, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "stop[1]"));
	assert_int_equal(smp_stop_init(&st, many, SMP_STOP_MAX + 1, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "16"));
	assert_int_equal(smp_stop_init(&st, many, -1, err, sizeof(err)), -EINVAL);
	assert_int_equal(smp_stop_init(&st, NULL, 1, err, sizeof(err)), -EINVAL);
	const char *lp[1] = { long_stop };
	assert_int_equal(smp_stop_init(&st, lp, 1, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "256"));
	assert_int_equal(smp_stop_init(NULL, many, 1, err, sizeof(err)), -EINVAL);

	/* 16 stops of the maximum length work; the longest one holds back 255 bytes. */
	assert_int_equal(smp_stop_init(&st, many, SMP_STOP_MAX, err, sizeof(err)), 0);
	const char *mp[2] = { max_stop, "q" };
	assert_int_equal(smp_stop_init(&st, mp, 2, err, sizeof(err)), 0);
	memset(text, 'y', 300);
	text[300] = '\0';
	assert_true(run_stop(&st, text, one, 1, out, sizeof(out)));
	assert_int_equal(strlen(out), 0);
	smp_stop_reset(&st);
	memset(text, 'y', 255);
	strcpy(text + 255, "q tail");
	assert_true(run_stop(&st, text, one, 1, out, sizeof(out)));
	assert_int_equal(strlen(out), 255);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_create_enomem),
		cmocka_unit_test(test_validate_rejects),
		cmocka_unit_test(test_greedy_ties),
		cmocka_unit_test(test_all_banned),
		cmocka_unit_test(test_logit_bias),
		cmocka_unit_test(test_temperature_frequencies),
		cmocka_unit_test(test_seed_determinism),
		cmocka_unit_test(test_top_k),
		cmocka_unit_test(test_top_k_large),
		cmocka_unit_test(test_nonfinite_logits),
		cmocka_unit_test(test_penalty_window),
		cmocka_unit_test(test_top_p_hand),
		cmocka_unit_test(test_top_p_large),
		cmocka_unit_test(test_min_p_hand),
		cmocka_unit_test(test_repeat_penalty),
		cmocka_unit_test(test_presence_frequency),
		cmocka_unit_test(test_big_vocab),
		cmocka_unit_test(test_stop_basic),
		cmocka_unit_test(test_stop_overlaps),
		cmocka_unit_test(test_stop_random),
		cmocka_unit_test(test_stop_init_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
