/* SPDX-License-Identifier: MIT */
/*
 * The serving benchmark's arithmetic, apart from its sockets so that it can
 * be unit-tested (tests/unit/test_serve.c): seeded request traces (named
 * profiles, Poisson or gamma arrivals, JSONL files), per-request latency
 * figures, their percentiles, SLO attainment, and the goodput search over
 * request rates.  Prefix sv_.  Times are seconds unless a name says _ms.
 * Nothing here is thread-safe: bench_serve locks around sv_run_add().
 */
#ifndef DUET_SERVE_LIB_H
#define DUET_SERVE_LIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- random numbers: splitmix64, one uint64_t of state per stream ---- */
uint64_t sv_rng_next(uint64_t *s);
double sv_rng_unit(uint64_t *s);		/* uniform in (0, 1] */
double sv_rng_gamma(uint64_t *s, double shape); /* Gamma(shape, scale 1): mean shape */

/* ---- percentiles (nearest rank) ---- */
/* The smallest value with at least q of the n sorted values at or below it; NaN when n is 0. */
double sv_pct_sorted(const double *v, size_t n, double q);

struct sv_stats {
	size_t n;
	double mean, p50, p90, p99, max; /* NaN when n is 0 */
};

/* Sorts v[0, n) in place. */
void sv_stats_of(double *v, size_t n, struct sv_stats *out);

/* ---- traces ---- */
enum sv_class { SV_CHAT, SV_SUMMARIZE, SV_AGENT, SV_NCLASS };
/* Profiles: one class each, or SV_PROF_MIXED (chat 1/2, summarize 1/4, agent 1/4). */
enum sv_profile { SV_PROF_CHAT, SV_PROF_SUMMARIZE, SV_PROF_AGENT, SV_PROF_MIXED, SV_NPROF };

const char *sv_class_name(int cls);	  /* "chat", ...; "?" out of range */
const char *sv_profile_name(int profile); /* "chat", ..., "mixed" */
int sv_profile_parse(const char *name);	  /* enum sv_profile, or -EINVAL */

/* One request of a trace. */
struct sv_treq {
	double arrival_s;  /* offset from the start of the trace, non-decreasing */
	int prompt_tokens; /* prompt length; 0 when the prompt is text */
	int max_tokens;	   /* >= 1 */
	int group;	   /* shared-prefix group, -1 none: requests of one group share the
			    * first min(prompt_tokens) tokens of the group's token stream */
	int cls;	   /* enum sv_class, -1 when a trace file did not say */
	char *prompt;	   /* a trace file's text prompt (owned by the trace), else NULL */
};

struct sv_gen {
	int profile;	     /* enum sv_profile */
	double rate;	     /* mean arrivals per second, > 0 */
	double burstiness;   /* shape k of the gamma-distributed gaps (mean 1/rate, CV 1/sqrt(k)):
			    * 1 (or 0) = Poisson, < 1 burstier, > 1 more even */
	double duration_s;   /* arrivals in [0, duration_s); 0 = no limit */
	size_t max_requests; /* 0 = no limit; at least one of the two limits is needed */
	int max_context;     /* tokens: every prompt_tokens + max_tokens stays below it */
	uint64_t seed;
};

struct sv_trace;

/*
 * Generate a trace.  Same parameters, same trace.  Gaps and lengths come
 * from separate streams of the seed, so the same seed at another rate gives
 * the same requests with every arrival time scaled by the ratio of the rates.
 * Profile lengths (tokens, for a context of at least the "nominal" total;
 * scaled down in proportion for a smaller max_context):
 *   chat       prompt 32-128, output 128-384                  (nominal 512)
 *   summarize  prompt 768-1536, output 16-64                  (nominal 1600)
 *   agent      4 conversations at a time, up to 8 turns each; turn 1's
 *              prompt 256-512, each later turn's prompt the previous one
 *              plus its output plus 32-128 new tokens; output 16-64  (nominal 2048)
 * 0, -EINVAL (bad parameters) or -ENOMEM.
 */
int sv_trace_generate(const struct sv_gen *g, struct sv_trace **out);

/*
 * JSONL, one request per line:
 *   {"arrival_s":0.125000,"prompt_tokens":57,"max_tokens":200,"class":"chat"}
 * plus "prefix_group":N when it has one.  A file may give "prompt":"text"
 * in place of prompt_tokens; blank lines and lines starting with '#' are
 * skipped.  sv_trace_write returns 0 or -EIO; sv_trace_read 0, -EINVAL
 * (with a message naming the line in err) or -ENOMEM.
 */
int sv_trace_write(const struct sv_trace *t, FILE *f);
int sv_trace_read(FILE *f, struct sv_trace **out, char *err, size_t errlen);

size_t sv_trace_len(const struct sv_trace *t);
const struct sv_treq *sv_trace_at(const struct sv_trace *t, size_t i);
/* Mean arrival rate: requests / last arrival time (0 when that is 0). */
double sv_trace_rate(const struct sv_trace *t);
/* Multiply every arrival time by factor (> 0): factor r0/r replays a rate-r0 trace at r. */
void sv_trace_scale(struct sv_trace *t, double factor);
/* Keep the first n requests (all when it has no more). */
void sv_trace_truncate(struct sv_trace *t, size_t n);
void sv_trace_destroy(struct sv_trace *t);

/* ---- prompts and the server's context ---- */
/* Common words that any tokenizer makes tokens of: the text of prompts, and (as one
 * space-separated text through /v1/tokenize) the pool of token ids prompts are drawn from. */
#define SV_NWORDS 48
extern const char *const sv_words[SV_NWORDS];

/*
 * The model's context length from the message of an error answer (the API
 * does not state it; a request with max_tokens over any context is refused
 * naming it): N of "... context length N", else 0.  When cap is not NULL and
 * the message says "an integer in [1, CAP]" (api.max_tokens caps max_tokens
 * below the context), *cap = CAP; else *cap is left as it is.  msg NULL: 0.
 */
int sv_context_of_error(const char *msg, int *cap);

/* ---- per-request figures ---- */
struct sv_slo {
	double ttft_ms, tpot_ms; /* a request meets the SLO when it meets both */
};

/* The server's own per-phase times of one request (the answer's "timings"
 * object), ms; NaN where the server gave null or nothing. */
struct sv_phases {
	double queue_ms, prefill_ms, transfer_ms, decode_ms;
};

/* What the client saw of one request (times on one clock, seconds). */
struct sv_rec {
	bool ok;	     /* the stream ended with [DONE] and no error */
	double t_sent;	     /* the request was written */
	double t_done;	     /* the answer ended */
	const double *tok_t; /* arrival of each frame with text, n_tok of them */
	size_t n_tok;
	int tokens;   /* output tokens (the usage chunk's count; 0: use n_tok) */
	bool has_srv; /* srv holds the server's timings (older servers send none) */
	struct sv_phases srv;
};

double sv_rec_ttft_ms(const struct sv_rec *r); /* first token - sent; NaN without tokens */
/* (last token - first token) / (tokens - 1); NaN below 2 tokens. */
double sv_rec_tpot_ms(const struct sv_rec *r);
double sv_rec_e2e_ms(const struct sv_rec *r);
/* The longest gap between two consecutive token frames; NaN below 2 frames. */
double sv_rec_max_itl_ms(const struct sv_rec *r);
/* ok, TTFT within slo (NaN: no token, a miss), and TPOT within slo (NaN: a
 * one-token request has no TPOT to miss). */
bool sv_meets(bool ok, double ttft_ms, double tpot_ms, const struct sv_slo *slo);
/* sv_meets of what the client saw of r. */
bool sv_rec_meets(const struct sv_rec *r, const struct sv_slo *slo);

/* ---- a growable array of doubles ---- */
struct sv_dvec {
	double *v;
	size_t n, cap;
};
int sv_dvec_push(struct sv_dvec *d, double x); /* 0 or -ENOMEM */
void sv_dvec_free(struct sv_dvec *d);	       /* and empty again */

/* ---- one run: requests folded in as they end ---- */
struct sv_result {
	size_t sent, ok, failed, slo_ok;
	long out_tokens;   /* of the ok requests */
	double duration_s; /* as given to sv_run_result */
	double req_per_s;  /* ok / duration */
	double out_tok_per_s;
	double attainment; /* slo_ok / sent (failed requests miss); NaN when none was sent */
	struct sv_stats ttft, tpot, itl, e2e; /* ms, over the ok requests */
	/* The server's phase times, ms, over the ok requests with has_srv (timed of
	 * them); each over the requests where that phase is not NaN. */
	size_t timed;
	struct sv_stats queue, prefill, transfer, decode;
};

struct sv_run;
int sv_run_create(const struct sv_slo *slo, struct sv_run **out); /* 0 or -ENOMEM */
int sv_run_add(struct sv_run *run, const struct sv_rec *r);	  /* 0 or -ENOMEM */
/* duration_s: the run's length for the rates (bench_serve: trace start to last answer).
 * Sorts the run's samples. */
void sv_run_result(struct sv_run *run, double duration_s, struct sv_result *out);
void sv_run_destroy(struct sv_run *run);

/* ---- goodput: the highest rate at which attainment >= target ---- */
struct sv_point {
	double rate, attainment;
};

/* Measure attainment at rate: 0 or a negative errno (which stops the search). */
typedef int (*sv_measure_fn)(void *ctx, double rate, double *attainment);

/*
 * Goodput of measured points (any order): the highest rate r such that every
 * point at a rate <= r reaches target (a noisy pass above a failure does not
 * count).  0 when the lowest rate already fails; NaN with no points.
 */
double sv_goodput_of(const struct sv_point *pts, size_t n, double target);

/* Measure every rate of the list (in increasing order; pts holds n); goodput as above. */
int sv_sweep_list(const double *rates, size_t n, double target, sv_measure_fn f, void *ctx,
		  struct sv_point *pts, double *goodput);

enum sv_bound { SV_EXACT, SV_AT_LEAST, SV_BELOW };
/*
 * Bisection between lo and hi for a curve that falls with the rate: lo is
 * measured first (failing: goodput 0, SV_BELOW), then hi (passing: goodput
 * hi, SV_AT_LEAST), then midpoints until hi - lo <= tol or max_points are
 * used (goodput: the highest passing rate, SV_EXACT).  pts holds up to
 * max_points (>= 2) measured points; *n_pts says how many.  0, -EINVAL, or
 * the measurement's error.
 */
int sv_sweep_bisect(double lo, double hi, double tol, size_t max_points, double target,
		    sv_measure_fn f, void *ctx, struct sv_point *pts, size_t *n_pts,
		    double *goodput, enum sv_bound *bound);

/*
 * The bound of a goodput of pts[0, n) (sv_goodput_of's, or a list sweep's):
 * SV_BELOW when it is not > 0 (the lowest rate fails; NaN: no points),
 * SV_AT_LEAST when it is >= the highest rate of pts (every rate passed),
 * else SV_EXACT.
 */
enum sv_bound sv_bound_of(const struct sv_point *pts, size_t n, double goodput);
/* As --json's "goodput_bound": "exact", "at_least", "below_lowest"; "?" out of range. */
const char *sv_bound_name(int bound);
int sv_bound_parse(const char *name); /* enum sv_bound, or -EINVAL */

/*
 * A --sweep argument: "1,2,4" (a list: *n rates into rates[cap], increasing)
 * or "LO..HI" (bisection: *n = 0, *lo and *hi set).  0 or -EINVAL.
 */
int sv_rates_parse(const char *s, double *rates, size_t cap, size_t *n, double *lo, double *hi);

#endif /* DUET_SERVE_LIB_H */
