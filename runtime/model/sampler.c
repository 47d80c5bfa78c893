// SPDX-License-Identifier: MIT
/* Token sampler and stop strings; the contract is in sampler.h. */
#include "runtime/model/sampler.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/mem.h"

/* Radix digits for the selects: 11 bits, 2048 buckets. */
#define SMP_RADIX_BITS 11
#define SMP_RADIX_SIZE (1u << SMP_RADIX_BITS)

struct sampler {
	struct smp_params p; /* logit_bias points at bias below */
	int n_vocab;
	uint64_t rng[4]; /* xoshiro256** state */

	struct smp_bias *bias; /* (n_logit_bias) */

	/* Penalty window: a ring of the last last_n accepted tokens and their counts. */
	bool penalize;
	int32_t *ring;	 /* (last_n) */
	int ring_len;	 /* tokens in the ring, <= last_n */
	int ring_head;	 /* next slot to write */
	int32_t *counts; /* (n_vocab) occurrences in the ring */

	/* Scratch for one smp_sample() call. */
	float *lg;	/* (n_vocab) working logits */
	uint64_t *cand; /* (n_vocab) candidates: sort key << 32 | token id */
	uint64_t *tmp;	/* (n_vocab) radix scratch */
	float *prob;	/* (n_vocab) weights, parallel to cand */
	float *ptmp;	/* (n_vocab) radix scratch for prob */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

struct smp_params smp_params_default(void)
{
	return (struct smp_params){
		.temperature = 0.8f,
		.top_k = 40,
		.top_p = 0.95f,
		.min_p = 0.05f,
		.repeat_penalty = 1.0f,
		.repeat_last_n = 64,
		.presence_penalty = 0.0f,
		.frequency_penalty = 0.0f,
		.seed = 0,
		.logit_bias = NULL,
		.n_logit_bias = 0,
	};
}

/* The comparisons are written so that NaN fails them. */
static bool in_range(float v, float lo, float hi)
{
	return v >= lo && v <= hi;
}

int smp_params_validate(const struct smp_params *p, int n_vocab, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	if (!p) {
		set_err(err, errlen, "params must not be NULL");
		return -EINVAL;
	}
	if (n_vocab < 1 || n_vocab > SMP_MAX_VOCAB) {
		set_err(err, errlen, "n_vocab must be in [1, %d] (got %d)", SMP_MAX_VOCAB, n_vocab);
		return -EINVAL;
	}
	if (!in_range(p->temperature, 0.0f, SMP_MAX_TEMPERATURE)) {
		set_err(err, errlen, "temperature must be in [0, %g] (got %g)",
			(double)SMP_MAX_TEMPERATURE, (double)p->temperature);
		return -EINVAL;
	}
	if (p->top_k < 0) {
		set_err(err, errlen, "top_k must be >= 0 (got %d)", p->top_k);
		return -EINVAL;
	}
	if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
		set_err(err, errlen, "top_p must be in (0, 1] (got %g)", (double)p->top_p);
		return -EINVAL;
	}
	if (!in_range(p->min_p, 0.0f, 1.0f)) {
		set_err(err, errlen, "min_p must be in [0, 1] (got %g)", (double)p->min_p);
		return -EINVAL;
	}
	if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= SMP_MAX_REPEAT_PENALTY)) {
		set_err(err, errlen, "repeat_penalty must be in (0, %g] (got %g)",
			(double)SMP_MAX_REPEAT_PENALTY, (double)p->repeat_penalty);
		return -EINVAL;
	}
	if (p->repeat_last_n < 0 || p->repeat_last_n > SMP_MAX_LAST_N) {
		set_err(err, errlen, "repeat_last_n must be in [0, %d] (got %d)", SMP_MAX_LAST_N,
			p->repeat_last_n);
		return -EINVAL;
	}
	if (!in_range(p->presence_penalty, -SMP_MAX_PENALTY, SMP_MAX_PENALTY)) {
		set_err(err, errlen, "presence_penalty must be in [-%g, %g] (got %g)",
			(double)SMP_MAX_PENALTY, (double)SMP_MAX_PENALTY,
			(double)p->presence_penalty);
		return -EINVAL;
	}
	if (!in_range(p->frequency_penalty, -SMP_MAX_PENALTY, SMP_MAX_PENALTY)) {
		set_err(err, errlen, "frequency_penalty must be in [-%g, %g] (got %g)",
			(double)SMP_MAX_PENALTY, (double)SMP_MAX_PENALTY,
			(double)p->frequency_penalty);
		return -EINVAL;
	}
	if (p->n_logit_bias < 0 || p->n_logit_bias > SMP_MAX_LOGIT_BIAS) {
		set_err(err, errlen, "n_logit_bias must be in [0, %d] (got %d)", SMP_MAX_LOGIT_BIAS,
			p->n_logit_bias);
		return -EINVAL;
	}
	if (p->n_logit_bias > 0 && !p->logit_bias) {
		set_err(err, errlen, "logit_bias must not be NULL when n_logit_bias is %d",
			p->n_logit_bias);
		return -EINVAL;
	}
	for (int i = 0; i < p->n_logit_bias; i++) {
		const struct smp_bias *b = &p->logit_bias[i];

		if (b->token < 0 || b->token >= n_vocab) {
			set_err(err, errlen, "logit_bias[%d] token must be in [0, %d) (got %d)", i,
				n_vocab, (int)b->token);
			return -EINVAL;
		}
		if (!in_range(b->bias, -SMP_MAX_BIAS, SMP_MAX_BIAS) && b->bias != -INFINITY) {
			set_err(err, errlen,
				"logit_bias[%d] bias must be in [-%g, %g] or -inf (got %g)", i,
				(double)SMP_MAX_BIAS, (double)SMP_MAX_BIAS, (double)b->bias);
			return -EINVAL;
		}
	}
	return 0;
}

/* --- PRNG: xoshiro256** seeded through splitmix64 ------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
	uint64_t r = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

static void rng_seed(uint64_t s[4], uint64_t seed)
{
	uint64_t x = seed;

	for (int i = 0; i < 4; i++)
		s[i] = splitmix64(&x);
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4])
{
	return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

/* --- life cycle ----------------------------------------------------------- */

int smp_create(const struct smp_params *p, int n_vocab, struct sampler **out)
{
	struct sampler *s;
	size_t nv;

	if (!out || smp_params_validate(p, n_vocab, NULL, 0))
		return -EINVAL;
	nv = (size_t)n_vocab;

	s = duet_calloc(1, sizeof(*s));
	if (!s)
		goto err;
	s->p = *p;
	s->n_vocab = n_vocab;
	s->penalize =
		p->repeat_last_n > 0 && (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f ||
					 p->frequency_penalty != 0.0f);

	if (p->n_logit_bias > 0) {
		s->bias = duet_malloc((size_t)p->n_logit_bias * sizeof(*s->bias));
		if (!s->bias)
			goto err_free;
		memcpy(s->bias, p->logit_bias, (size_t)p->n_logit_bias * sizeof(*s->bias));
	}
	s->p.logit_bias = s->bias;

	if (s->penalize) {
		s->ring = duet_malloc((size_t)p->repeat_last_n * sizeof(*s->ring));
		s->counts = duet_calloc(nv, sizeof(*s->counts));
		if (!s->ring || !s->counts)
			goto err_free;
	}

	s->lg = duet_malloc(nv * sizeof(*s->lg));
	s->cand = duet_malloc(nv * sizeof(*s->cand));
	s->tmp = duet_malloc(nv * sizeof(*s->tmp));
	s->prob = duet_malloc(nv * sizeof(*s->prob));
	s->ptmp = duet_malloc(nv * sizeof(*s->ptmp));
	if (!s->lg || !s->cand || !s->tmp || !s->prob || !s->ptmp)
		goto err_free;

	rng_seed(s->rng, p->seed);
	*out = s;
	return 0;

err_free:
	smp_destroy(s);
err:
	return -ENOMEM;
}

void smp_destroy(struct sampler *s)
{
	if (!s)
		return;
	duet_free(s->ptmp);
	duet_free(s->prob);
	duet_free(s->tmp);
	duet_free(s->cand);
	duet_free(s->lg);
	duet_free(s->counts);
	duet_free(s->ring);
	duet_free(s->bias);
	duet_free(s);
}

void smp_reset(struct sampler *s)
{
	if (!s)
		return;
	if (s->penalize)
		memset(s->counts, 0, (size_t)s->n_vocab * sizeof(*s->counts));
	s->ring_len = 0;
	s->ring_head = 0;
	rng_seed(s->rng, s->p.seed);
}

void smp_skip(struct sampler *s, int n)
{
	if (!s || s->p.temperature == 0.0f)
		return;
	for (int i = 0; i < n; i++)
		(void)rng_uniform(s->rng);
}

void smp_accept(struct sampler *s, int32_t token)
{
	int last_n;

	if (!s || !s->penalize || token < 0 || token >= s->n_vocab)
		return;
	last_n = s->p.repeat_last_n;
	if (s->ring_len == last_n)
		s->counts[s->ring[s->ring_head]]--;
	else
		s->ring_len++;
	s->ring[s->ring_head] = token;
	s->counts[token]++;
	s->ring_head = s->ring_head + 1 == last_n ? 0 : s->ring_head + 1;
}

/* --- sampling --------------------------------------------------------------- */

/*
 * Order-preserving map of a (non-NaN) float to uint32, inverted so that
 * ascending keys mean descending logits.
 */
static uint32_t desc_key(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	u ^= (u >> 31) ? 0xffffffffu : 0x80000000u;
	return ~u;
}

static int32_t cand_id(uint64_t c)
{
	return (int32_t)(uint32_t)c;
}

/* The largest of a[0..n), NaN ignored; -inf when there is none. */
static float max_of(const float *a, int n)
{
	float m[8];
	int i = 0;

	/* Eight independent lanes: no loop-carried dependency, and vectorizable. */
	for (int j = 0; j < 8; j++)
		m[j] = -INFINITY;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			m[j] = a[i + j] > m[j] ? a[i + j] : m[j];
	for (; i < n; i++)
		m[0] = a[i] > m[0] ? a[i] : m[0];
	for (int j = 1; j < 8; j++)
		m[0] = m[j] > m[0] ? m[j] : m[0];
	return m[0];
}

/*
 * Steps 1 to 3 of sampler.h, into s->lg; returns the largest logit.  NaN is
 * left in place (every later comparison treats it as -inf) and +inf, rare,
 * is clamped only when it occurs.
 */
static float prepare_logits(struct sampler *s, const float *logits)
{
	float *lg = s->lg;
	int n = s->n_vocab;
	float maxl;

	memcpy(lg, logits, (size_t)n * sizeof(*lg));
	for (int i = 0; i < s->p.n_logit_bias; i++)
		lg[s->bias[i].token] += s->bias[i].bias;

	if (s->penalize) {
		/*
		 * Each distinct token of the window once: its count is negated
		 * while it is penalized and restored in the second pass.
		 */
		for (int i = 0; i < s->ring_len; i++) {
			int32_t t = s->ring[i];
			int32_t c = s->counts[t];
			float v = lg[t];

			if (c <= 0)
				continue;
			if (s->p.repeat_penalty != 1.0f)
				v = v > 0.0f ? v / s->p.repeat_penalty : v * s->p.repeat_penalty;
			lg[t] = v - (s->p.presence_penalty + s->p.frequency_penalty * (float)c);
			s->counts[t] = -c;
		}
		for (int i = 0; i < s->ring_len; i++) {
			int32_t t = s->ring[i];

			if (s->counts[t] < 0)
				s->counts[t] = -s->counts[t];
		}
	}

	maxl = max_of(lg, n);
	if (maxl == INFINITY) {
		for (int i = 0; i < n; i++)
			if (lg[i] == INFINITY)
				lg[i] = FLT_MAX;
		maxl = FLT_MAX;
	}
	return maxl;
}

/*
 * MSD radix select over the 64-bit candidates a[0..n) with weights w: the
 * smallest value x such that the weights of the candidates <= x add up to
 * at least target (the largest candidate when rounding leaves the total
 * short).  With k-th-smallest semantics, w = 1 and target = k + 1.  a and w
 * are left as they are; tmp and wtmp (n entries) are scratch.  One pass over
 * the survivors per 11-bit digit, at most six.
 */
static uint64_t radix_select(const uint64_t *a, const float *w, size_t n, double target,
			     uint64_t *tmp, float *wtmp)
{
	double mass[SMP_RADIX_SIZE];
	uint32_t count[SMP_RADIX_SIZE];
	const uint64_t *src = a;
	const float *wsrc = w;
	uint64_t prefix = 0, pmask = 0;
	int shift = 64;

	while (shift > 0) {
		int bits = shift >= SMP_RADIX_BITS ? SMP_RADIX_BITS : shift;
		uint64_t dmask = (1ull << bits) - 1;
		uint32_t nb = 1u << bits, b, last = 0;
		double below = 0.0;
		size_t m = 0;

		shift -= bits;
		memset(mass, 0, nb * sizeof(*mass));
		memset(count, 0, nb * sizeof(*count));
		for (size_t i = 0; i < n; i++) {
			uint32_t d = (uint32_t)(src[i] >> shift) & (uint32_t)dmask;

			mass[d] += wsrc ? wsrc[i] : 1.0;
			count[d]++;
		}
		for (b = 0; b < nb; b++) {
			if (!count[b])
				continue;
			last = b;
			if (below + mass[b] >= target)
				break;
			below += mass[b];
		}
		if (b == nb) {
			b = last;
			below -= mass[b];
		}
		target -= below;
		prefix |= (uint64_t)b << shift;
		pmask |= dmask << shift;
		/* Keep only the chosen bucket, compacted into the scratch. */
		for (size_t i = 0; i < n; i++) {
			if ((src[i] & pmask) != prefix)
				continue;
			if (wsrc)
				wtmp[m] = wsrc[i];
			tmp[m++] = src[i];
		}
		src = tmp;
		wsrc = wsrc ? wtmp : NULL;
		n = m;
		if (n == 1)
			return tmp[0];
	}
	return prefix;
}

/* Keep the candidates <= x (and their weights), in their order; returns how many. */
static size_t keep_upto(uint64_t *cand, float *prob, size_t n, uint64_t x)
{
	size_t m = 0;

	for (size_t i = 0; i < n; i++) {
		if (cand[i] > x)
			continue;
		if (prob)
			prob[m] = prob[i];
		cand[m++] = cand[i];
	}
	return m;
}

int32_t smp_sample(struct sampler *s, const float *logits)
{
	const struct smp_params *p;
	uint64_t *cand;
	float *prob, maxl, inv_t, pmax = 0.0f;
	size_t n = 0, n_soft;
	double sum = 0.0, total, r, cum;

	if (!s || !logits)
		return -EINVAL;
	p = &s->p;
	cand = s->cand;
	prob = s->prob;
	maxl = prepare_logits(s, logits);
	if (!(maxl > -INFINITY))
		return -ERANGE;

	if (p->temperature == 0.0f) {
		/* The first (lowest) id that holds the maximum. */
		for (int i = 0;; i++)
			if (s->lg[i] == maxl)
				return i;
	}

	/* Candidates in ascending id order; banned (-inf or NaN) tokens never enter. */
	for (int i = 0; i < s->n_vocab; i++) {
		float v = s->lg[i];

		if (v > -INFINITY)
			cand[n++] = (uint64_t)desc_key(v) << 32 | (uint32_t)i;
	}

	/* Top-k: the k smallest candidates (largest logits, ties to the lower id). */
	if (p->top_k > 0 && (size_t)p->top_k < n)
		n = keep_upto(cand, NULL, n,
			      radix_select(cand, NULL, n, (double)p->top_k, s->tmp, s->ptmp));

	/* Softmax weights, not normalized: the largest is 1. */
	inv_t = 1.0f / p->temperature;
	for (size_t i = 0; i < n; i++) {
		float w = expf((s->lg[cand_id(cand[i])] - maxl) * inv_t);

		prob[i] = w;
		sum += w;
	}
	n_soft = n;

	/*
	 * Top-p: the smallest prefix in (probability, id) order whose mass
	 * reaches top_p is every candidate up to the one where the cumulative
	 * mass crosses the target: a weighted radix select finds it, no sort.
	 */
	if (p->top_p < 1.0f && n > 1)
		n = keep_upto(cand, prob, n,
			      radix_select(cand, prob, n, (double)p->top_p * sum, s->tmp, s->ptmp));

	/* Min-p, relative to the largest weight left. */
	if (p->min_p > 0.0f) {
		size_t m = 0;

		for (size_t i = 0; i < n; i++)
			if (prob[i] > pmax)
				pmax = prob[i];
		for (size_t i = 0; i < n; i++) {
			if (prob[i] < p->min_p * pmax)
				continue;
			cand[m] = cand[i];
			prob[m++] = prob[i];
		}
		n = m;
	}

	total = sum;
	if (n != n_soft) {
		total = 0.0;
		for (size_t i = 0; i < n; i++)
			total += prob[i];
	}
	r = rng_uniform(s->rng) * total;
	cum = 0.0;
	for (size_t i = 0; i < n; i++) {
		cum += prob[i];
		if (cum > r)
			return cand_id(cand[i]);
	}
	return cand_id(cand[n - 1]);
}

/* --- stop strings ------------------------------------------------------------ */

int smp_stop_init(struct smp_stop *st, const char *const *stops, int n, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	if (!st) {
		set_err(err, errlen, "stop matcher must not be NULL");
		return -EINVAL;
	}
	if (n < 0 || n > SMP_STOP_MAX) {
		set_err(err, errlen, "stop: at most %d stop strings (got %d)", SMP_STOP_MAX, n);
		return -EINVAL;
	}
	if (n > 0 && !stops) {
		set_err(err, errlen, "stop: strings must not be NULL when n is %d", n);
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		size_t len;

		if (!stops[i]) {
			set_err(err, errlen, "stop[%d] must not be NULL", i);
			return -EINVAL;
		}
		len = strnlen(stops[i], SMP_STOP_MAXLEN + 1);
		if (len == 0) {
			set_err(err, errlen, "stop[%d] must not be empty", i);
			return -EINVAL;
		}
		if (len > SMP_STOP_MAXLEN) {
			set_err(err, errlen, "stop[%d] must be at most %d bytes", i,
				SMP_STOP_MAXLEN);
			return -EINVAL;
		}
	}

	memset(st, 0, sizeof(*st));
	st->n = n;
	for (int i = 0; i < n; i++) {
		size_t len = strlen(stops[i]);
		uint16_t *fail = st->s[i].fail;
		const char *str = st->s[i].str;
		uint16_t k = 0;

		memcpy(st->s[i].str, stops[i], len);
		st->s[i].len = (uint16_t)len;
		/* fail[j]: longest proper prefix of str[0..j] that is also its suffix. */
		fail[0] = 0;
		for (size_t j = 1; j < len; j++) {
			while (k > 0 && str[j] != str[k])
				k = fail[k - 1];
			if (str[j] == str[k])
				k++;
			fail[j] = k;
		}
	}
	return 0;
}

void smp_stop_reset(struct smp_stop *st)
{
	if (!st)
		return;
	st->stopped = false;
	st->held = 0;
	for (int i = 0; i < st->n; i++)
		st->s[i].state = 0;
}

int smp_stop_feed(struct smp_stop *st, const char *text, size_t len, size_t *emit_len,
		  bool *stopped)
{
	size_t pending, hold = 0;

	if (!st || (!text && len) || !emit_len || !stopped)
		return -EINVAL;
	*emit_len = 0;
	*stopped = st->stopped;
	if (st->stopped)
		return 0;

	/* Positions count from the start of the caller's pending buffer. */
	pending = st->held;
	for (size_t i = 0; i < len; i++, pending++) {
		unsigned char c = (unsigned char)text[i];
		int best = -1;

		for (int j = 0; j < st->n; j++) {
			uint16_t k = st->s[j].state;
			const unsigned char *str = (const unsigned char *)st->s[j].str;

			while (k > 0 && str[k] != c)
				k = st->s[j].fail[k - 1];
			if (str[k] == c)
				k++;
			if (k == st->s[j].len) {
				/* Ends at this byte; the longest such stop wins. */
				if (best < 0 || st->s[j].len > st->s[best].len)
					best = j;
				k = st->s[j].fail[k - 1];
			}
			st->s[j].state = k;
		}
		if (best >= 0) {
			st->stopped = true;
			st->held = 0;
			*emit_len = pending + 1 - st->s[best].len;
			*stopped = true;
			return 0;
		}
	}

	for (int j = 0; j < st->n; j++)
		if (st->s[j].state > hold)
			hold = st->s[j].state;
	st->held = hold;
	*emit_len = pending - hold;
	return 0;
}
