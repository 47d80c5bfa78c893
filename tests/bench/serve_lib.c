// SPDX-License-Identifier: MIT
/*
 * Traces, latency figures and the goodput search of the serving benchmark
 * (see serve_lib.h for the contracts).
 */
#include "tests/bench/serve_lib.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ---------------------------------------------------------------------------
 * Random numbers.
 * ------------------------------------------------------------------------- */
uint64_t sv_rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

double sv_rng_unit(uint64_t *s)
{
	return ((double)(sv_rng_next(s) >> 11) + 1.0) / 9007199254740992.0;
}

static double rng_normal(uint64_t *s)
{
	double u = sv_rng_unit(s), v = sv_rng_unit(s);

	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* Marsaglia and Tsang (2000); shape < 1 through Gamma(shape + 1) * U^(1/shape). */
double sv_rng_gamma(uint64_t *s, double shape)
{
	double d, c, x, v, u;

	if (shape < 1) {
		double g = sv_rng_gamma(s, shape + 1);

		return g * pow(sv_rng_unit(s), 1.0 / shape);
	}
	d = shape - 1.0 / 3.0;
	c = 1.0 / sqrt(9.0 * d);
	for (;;) {
		do {
			x = rng_normal(s);
			v = 1.0 + c * x;
		} while (v <= 0);
		v = v * v * v;
		u = sv_rng_unit(s);
		if (u < 1.0 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1 - v + log(v)))
			return d * v;
	}
}

/* Uniform integer in [lo, hi]. */
static int rng_range(uint64_t *s, int lo, int hi)
{
	return lo + (int)(sv_rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* ---------------------------------------------------------------------------
 * Percentiles.
 * ------------------------------------------------------------------------- */
double sv_pct_sorted(const double *v, size_t n, double q)
{
	double r = ceil(q * (double)n);
	size_t i = r < 1 ? 0 : (size_t)r - 1;

	if (!n)
		return NAN;
	return v[i >= n ? n - 1 : i];
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

void sv_stats_of(double *v, size_t n, struct sv_stats *out)
{
	double sum = 0;

	*out = (struct sv_stats){ .n = n, .mean = NAN, .max = NAN };
	if (n)
		qsort(v, n, sizeof(*v), cmp_double);
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	out->p50 = sv_pct_sorted(v, n, 0.50);
	out->p90 = sv_pct_sorted(v, n, 0.90);
	out->p99 = sv_pct_sorted(v, n, 0.99);
	if (n) {
		out->mean = sum / (double)n;
		out->max = v[n - 1];
	}
}

/* ---------------------------------------------------------------------------
 * Traces.
 * ------------------------------------------------------------------------- */
static const char *const class_names[SV_NCLASS] = { "chat", "summarize", "agent" };
static const char *const profile_names[SV_NPROF] = { "chat", "summarize", "agent", "mixed" };

const char *sv_class_name(int cls)
{
	return cls >= 0 && cls < SV_NCLASS ? class_names[cls] : "?";
}

const char *sv_profile_name(int profile)
{
	return profile >= 0 && profile < SV_NPROF ? profile_names[profile] : "?";
}

int sv_profile_parse(const char *name)
{
	for (int i = 0; i < SV_NPROF; i++)
		if (!strcmp(name, profile_names[i]))
			return i;
	return -EINVAL;
}

struct sv_trace {
	struct sv_treq *req;
	size_t n, cap;
};

static int trace_push(struct sv_trace *t, const struct sv_treq *r)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 64;
		struct sv_treq *p = realloc(t->req, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		t->req = p;
		t->cap = cap;
	}
	t->req[t->n++] = *r;
	return 0;
}

void sv_trace_destroy(struct sv_trace *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->req[i].prompt);
	free(t->req);
	free(t);
}

void sv_trace_truncate(struct sv_trace *t, size_t n)
{
	for (size_t i = n; i < t->n; i++)
		free(t->req[i].prompt);
	if (n < t->n)
		t->n = n;
}

size_t sv_trace_len(const struct sv_trace *t)
{
	return t->n;
}

const struct sv_treq *sv_trace_at(const struct sv_trace *t, size_t i)
{
	return i < t->n ? &t->req[i] : NULL;
}

double sv_trace_rate(const struct sv_trace *t)
{
	double last = t->n ? t->req[t->n - 1].arrival_s : 0;

	return last > 0 ? (double)t->n / last : 0;
}

void sv_trace_scale(struct sv_trace *t, double factor)
{
	for (size_t i = 0; i < t->n; i++)
		t->req[i].arrival_s *= factor;
}

/* Nominal totals (prompt + output) of each class: lengths shrink by usable / nominal. */
static const int class_nominal[SV_NCLASS] = { 512, 1600, 2048 };

#define AGENT_SLOTS 4
#define AGENT_TURNS 8

struct gen_state {
	uint64_t rng; /* lengths (apart from the gaps' stream) */
	int usable;   /* prompt + output stay at or below it */
	double scale[SV_NCLASS];
	int next_group;
	struct {
		int group, turns, len, out; /* group -1: the slot is free */
	} slot[AGENT_SLOTS];
};

static int scaled(const struct gen_state *st, int cls, int x)
{
	int v = (int)lround(x * st->scale[cls]);

	return v < 1 ? 1 : v;
}

static void draw_class(struct gen_state *st, int cls, struct sv_treq *r)
{
	r->cls = cls;
	r->group = -1;
	switch (cls) {
	case SV_CHAT:
		r->prompt_tokens = scaled(st, cls, rng_range(&st->rng, 32, 128));
		r->max_tokens = scaled(st, cls, rng_range(&st->rng, 128, 384));
		break;
	case SV_SUMMARIZE:
		r->prompt_tokens = scaled(st, cls, rng_range(&st->rng, 768, 1536));
		r->max_tokens = scaled(st, cls, rng_range(&st->rng, 16, 64));
		break;
	default: { /* agent: continue the conversation of a random slot, or start one there */
		int k = (int)(sv_rng_next(&st->rng) % AGENT_SLOTS);
		int out = scaled(st, cls, rng_range(&st->rng, 16, 64));
		int more = scaled(st, cls, rng_range(&st->rng, 32, 128));
		int base = scaled(st, cls, rng_range(&st->rng, 256, 512));
		typeof(st->slot[0]) *s = &st->slot[k];
		int len = s->len + s->out + more;

		if (s->group < 0 || s->turns >= AGENT_TURNS || len + out > st->usable) {
			s->group = st->next_group++;
			s->turns = 0;
			len = base;
		}
		s->turns++;
		s->len = len;
		s->out = out;
		r->group = s->group;
		r->prompt_tokens = len;
		r->max_tokens = out;
		break;
	}
	}
	/* Rounding can still overshoot a tiny context: take it from the prompt. */
	if (r->prompt_tokens + r->max_tokens > st->usable) {
		if (r->max_tokens >= st->usable)
			r->max_tokens = st->usable > 1 ? st->usable / 2 : 1;
		r->prompt_tokens = st->usable - r->max_tokens;
		if (r->prompt_tokens < 1)
			r->prompt_tokens = 1;
	}
}

int sv_trace_generate(const struct sv_gen *g, struct sv_trace **out)
{
	double k = g->burstiness > 0 ? g->burstiness : 1, t = 0;
	uint64_t gaps = g->seed ^ 0x6761707300000000ull; /* "gaps" */
	struct gen_state st = { .rng = g->seed ^ 0x6C656E7300000000ull /* "lens" */ };
	struct sv_trace *tr;

	*out = NULL;
	if (g->profile < 0 || g->profile >= SV_NPROF || g->burstiness < 0 || !(g->rate > 0) ||
	    !isfinite(g->rate) || !(k > 0) || !isfinite(k) || g->duration_s < 0 ||
	    !isfinite(g->duration_s) || (!(g->duration_s > 0) && !g->max_requests) ||
	    g->max_context < 4)
		return -EINVAL;
	/* A margin of 2 for what the server may add (a BOS token). */
	st.usable = g->max_context - 2;
	for (int c = 0; c < SV_NCLASS; c++)
		st.scale[c] =
			st.usable >= class_nominal[c] ? 1.0 : (double)st.usable / class_nominal[c];
	for (int i = 0; i < AGENT_SLOTS; i++)
		st.slot[i].group = -1;
	tr = calloc(1, sizeof(*tr));
	if (!tr)
		return -ENOMEM;
	for (;;) {
		struct sv_treq r = { 0 };
		int cls;

		/* Gamma(k, 1/(k rate)): mean 1/rate; k = 1 is the exponential (Poisson). */
		t += (k == 1 ? -log(sv_rng_unit(&gaps)) : sv_rng_gamma(&gaps, k) / k) / g->rate;
		if ((g->duration_s > 0 && t >= g->duration_s) ||
		    (g->max_requests && tr->n >= g->max_requests))
			break;
		if (g->profile == SV_PROF_MIXED) {
			double u = sv_rng_unit(&st.rng);

			cls = u <= 0.5 ? SV_CHAT : u <= 0.75 ? SV_SUMMARIZE : SV_AGENT;
		} else {
			cls = g->profile;
		}
		draw_class(&st, cls, &r);
		r.arrival_s = t;
		if (trace_push(tr, &r)) {
			sv_trace_destroy(tr);
			return -ENOMEM;
		}
	}
	*out = tr;
	return 0;
}

int sv_trace_write(const struct sv_trace *t, FILE *f)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct sv_treq *r = &t->req[i];

		fprintf(f, "{\"arrival_s\":%.6f,", r->arrival_s);
		if (r->prompt) {
			json_t *s = json_string(r->prompt);
			char *js = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;

			json_decref(s);
			if (!js)
				return -EIO;
			fprintf(f, "\"prompt\":%s,", js);
			free(js);
		} else {
			fprintf(f, "\"prompt_tokens\":%d,", r->prompt_tokens);
		}
		fprintf(f, "\"max_tokens\":%d", r->max_tokens);
		if (r->cls >= 0 && r->cls < SV_NCLASS)
			fprintf(f, ",\"class\":\"%s\"", class_names[r->cls]);
		if (r->group >= 0)
			fprintf(f, ",\"prefix_group\":%d", r->group);
		fputs("}\n", f);
	}
	return ferror(f) ? -EIO : 0;
}

/* An integer member in [lo, hi]: 0 (absent: *v untouched) or -EINVAL. */
static int member_int(json_t *o, const char *key, long lo, long hi, int *v)
{
	json_t *m = json_object_get(o, key);
	json_int_t x;

	if (!m || json_is_null(m))
		return 0;
	if (!json_is_integer(m))
		return -EINVAL;
	x = json_integer_value(m);
	if (x < lo || x > hi)
		return -EINVAL;
	*v = (int)x;
	return 0;
}

int sv_trace_read(FILE *f, struct sv_trace **out, char *err, size_t errlen)
{
	struct sv_trace *tr = calloc(1, sizeof(*tr));
	char *line = NULL;
	size_t cap = 0, lineno = 0;
	double last = 0;
	ssize_t len;
	int ret = 0;

	*out = NULL;
	if (!tr)
		return -ENOMEM;
	while ((len = getline(&line, &cap, f)) >= 0) {
		struct sv_treq r = { .group = -1, .cls = -1 };
		json_error_t jerr;
		json_t *o, *m;
		const char *why = NULL;

		lineno++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
			       line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		if (!len || line[strspn(line, " \t")] == '#' || !line[strspn(line, " \t")])
			continue;
		o = json_loads(line, JSON_ALLOW_NUL, &jerr);
		if (!json_is_object(o)) {
			snprintf(err, errlen, "line %zu: not a JSON object%s%s", lineno,
				 o ? "" : ": ", o ? "" : jerr.text);
			json_decref(o);
			ret = -EINVAL;
			break;
		}
		m = json_object_get(o, "arrival_s");
		r.arrival_s = json_number_value(m);
		if (!json_is_number(m) || !isfinite(r.arrival_s) || r.arrival_s < last)
			why = "arrival_s: a number >= the previous line's";
		else if (member_int(o, "prompt_tokens", 1, 1 << 24, &r.prompt_tokens) ||
			 member_int(o, "max_tokens", 1, 1 << 24, &r.max_tokens) ||
			 member_int(o, "prefix_group", 0, 1 << 30, &r.group))
			why = "prompt_tokens, max_tokens, prefix_group: integers in range";
		else if (!r.max_tokens)
			why = "max_tokens is required";
		if (!why && (m = json_object_get(o, "prompt")) != NULL) {
			if (!json_is_string(m) || !json_string_length(m) || r.prompt_tokens)
				why = "prompt: a non-empty string, and not with prompt_tokens";
			else if (!(r.prompt = strdup(json_string_value(m))))
				ret = -ENOMEM;
		} else if (!why && !r.prompt_tokens) {
			why = "prompt_tokens or prompt is required";
		}
		m = json_object_get(o, "class");
		for (int c = 0; !why && json_is_string(m) && c < SV_NCLASS; c++)
			if (!strcmp(json_string_value(m), class_names[c]))
				r.cls = c;
		json_decref(o);
		if (why) {
			snprintf(err, errlen, "line %zu: %s", lineno, why);
			ret = -EINVAL;
		}
		if (!ret && (ret = trace_push(tr, &r)) != 0)
			free(r.prompt);
		if (ret) {
			if (ret == -ENOMEM)
				snprintf(err, errlen, "out of memory");
			break;
		}
		last = r.arrival_s;
	}
	free(line);
	if (!ret && ferror(f)) {
		snprintf(err, errlen, "read error");
		ret = -EIO;
	}
	if (ret) {
		sv_trace_destroy(tr);
		return ret;
	}
	*out = tr;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Prompts and the server's context.
 * ------------------------------------------------------------------------- */
const char *const sv_words[SV_NWORDS] = {
	"the",	   "river",   "stone",	 "quiet",    "morning", "engine",  "paper",  "window",
	"garden",  "silver",  "thunder", "village",  "ancient", "market",  "bridge", "orange",
	"winter",  "captain", "letter",	 "mountain", "forest",	"kitchen", "violin", "harbor",
	"lantern", "meadow",  "copper",	 "signal",   "desert",	"feather", "castle", "journey",
	"number",  "planet",  "shadow",	 "candle",   "ocean",	"machine", "puzzle", "rabbit",
	"station", "tower",   "valley",	 "whisper",  "yellow",	"zebra",   "anchor", "blanket",
};

int sv_context_of_error(const char *msg, int *cap)
{
	static const char ctx_at[] = "context length ", cap_at[] = "an integer in [1, ";
	const char *p;

	if (!msg)
		return 0;
	if (cap && (p = strstr(msg, cap_at)))
		*cap = atoi(p + sizeof(cap_at) - 1);
	p = strstr(msg, ctx_at);
	return p ? atoi(p + sizeof(ctx_at) - 1) : 0;
}

/* ---------------------------------------------------------------------------
 * Per-request figures and runs.
 * ------------------------------------------------------------------------- */
static int rec_tokens(const struct sv_rec *r)
{
	return r->tokens > 0 ? r->tokens : (int)r->n_tok;
}

double sv_rec_ttft_ms(const struct sv_rec *r)
{
	return r->n_tok ? (r->tok_t[0] - r->t_sent) * 1e3 : NAN;
}

double sv_rec_tpot_ms(const struct sv_rec *r)
{
	int tokens = rec_tokens(r);

	if (r->n_tok < 2 || tokens < 2)
		return NAN;
	return (r->tok_t[r->n_tok - 1] - r->tok_t[0]) * 1e3 / (tokens - 1);
}

double sv_rec_e2e_ms(const struct sv_rec *r)
{
	return (r->t_done - r->t_sent) * 1e3;
}

double sv_rec_max_itl_ms(const struct sv_rec *r)
{
	double m = NAN;

	for (size_t i = 1; i < r->n_tok; i++) {
		double gap = (r->tok_t[i] - r->tok_t[i - 1]) * 1e3;

		if (!(gap <= m))
			m = gap;
	}
	return m;
}

bool sv_meets(bool ok, double ttft_ms, double tpot_ms, const struct sv_slo *slo)
{
	return ok && ttft_ms <= slo->ttft_ms && (isnan(tpot_ms) || tpot_ms <= slo->tpot_ms);
}

bool sv_rec_meets(const struct sv_rec *r, const struct sv_slo *slo)
{
	return r->n_tok && sv_meets(r->ok, sv_rec_ttft_ms(r), sv_rec_tpot_ms(r), slo);
}

int sv_dvec_push(struct sv_dvec *d, double x)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 64;
		double *v = realloc(d->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	d->v[d->n++] = x;
	return 0;
}

void sv_dvec_free(struct sv_dvec *d)
{
	free(d->v);
	*d = (struct sv_dvec){ 0 };
}

struct sv_run {
	struct sv_slo slo;
	size_t sent, ok, slo_ok, timed;
	long out_tokens;
	struct sv_dvec ttft, tpot, itl, e2e; /* ms */
	struct sv_dvec phase[4];	     /* ms: queue, prefill, transfer, decode */
};

int sv_run_create(const struct sv_slo *slo, struct sv_run **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	(*out)->slo = *slo;
	return 0;
}

void sv_run_destroy(struct sv_run *run)
{
	if (!run)
		return;
	sv_dvec_free(&run->ttft);
	sv_dvec_free(&run->tpot);
	sv_dvec_free(&run->itl);
	sv_dvec_free(&run->e2e);
	for (int k = 0; k < 4; k++)
		sv_dvec_free(&run->phase[k]);
	free(run);
}

int sv_run_add(struct sv_run *run, const struct sv_rec *r)
{
	double tpot = sv_rec_tpot_ms(r);
	int ret = 0;

	run->sent++;
	if (!r->ok)
		return 0;
	run->ok++;
	run->out_tokens += rec_tokens(r);
	if (sv_rec_meets(r, &run->slo))
		run->slo_ok++;
	if (r->n_tok)
		ret = ret ?: sv_dvec_push(&run->ttft, sv_rec_ttft_ms(r));
	if (!isnan(tpot))
		ret = ret ?: sv_dvec_push(&run->tpot, tpot);
	for (size_t i = 1; i < r->n_tok; i++)
		ret = ret ?: sv_dvec_push(&run->itl, (r->tok_t[i] - r->tok_t[i - 1]) * 1e3);
	if (r->has_srv) {
		const double ph[4] = { r->srv.queue_ms, r->srv.prefill_ms, r->srv.transfer_ms,
				       r->srv.decode_ms };

		run->timed++;
		for (int k = 0; k < 4; k++)
			if (!isnan(ph[k]))
				ret = ret ?: sv_dvec_push(&run->phase[k], ph[k]);
	}
	return ret ?: sv_dvec_push(&run->e2e, sv_rec_e2e_ms(r));
}

void sv_run_result(struct sv_run *run, double duration_s, struct sv_result *out)
{
	*out = (struct sv_result){
		.sent = run->sent,
		.ok = run->ok,
		.failed = run->sent - run->ok,
		.slo_ok = run->slo_ok,
		.out_tokens = run->out_tokens,
		.duration_s = duration_s,
		.req_per_s = duration_s > 0 ? (double)run->ok / duration_s : NAN,
		.out_tok_per_s = duration_s > 0 ? (double)run->out_tokens / duration_s : NAN,
		.attainment = run->sent ? (double)run->slo_ok / (double)run->sent : NAN,
		.timed = run->timed,
	};
	sv_stats_of(run->ttft.v, run->ttft.n, &out->ttft);
	sv_stats_of(run->tpot.v, run->tpot.n, &out->tpot);
	sv_stats_of(run->itl.v, run->itl.n, &out->itl);
	sv_stats_of(run->e2e.v, run->e2e.n, &out->e2e);
	sv_stats_of(run->phase[0].v, run->phase[0].n, &out->queue);
	sv_stats_of(run->phase[1].v, run->phase[1].n, &out->prefill);
	sv_stats_of(run->phase[2].v, run->phase[2].n, &out->transfer);
	sv_stats_of(run->phase[3].v, run->phase[3].n, &out->decode);
}

/* ---------------------------------------------------------------------------
 * Goodput.
 * ------------------------------------------------------------------------- */
static int cmp_point(const void *a, const void *b)
{
	const struct sv_point *x = a, *y = b;

	return x->rate < y->rate ? -1 : x->rate > y->rate;
}

double sv_goodput_of(const struct sv_point *pts, size_t n, double target)
{
	struct sv_point *s;
	double best = 0;

	if (!n)
		return NAN;
	s = malloc(n * sizeof(*s));
	if (!s)
		return NAN;
	memcpy(s, pts, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_point);
	for (size_t i = 0; i < n && s[i].attainment >= target; i++)
		best = s[i].rate;
	free(s);
	return best;
}

int sv_sweep_list(const double *rates, size_t n, double target, sv_measure_fn f, void *ctx,
		  struct sv_point *pts, double *goodput)
{
	for (size_t i = 0; i < n; i++) {
		int ret;

		pts[i].rate = rates[i];
		ret = f(ctx, rates[i], &pts[i].attainment);
		if (ret)
			return ret;
	}
	*goodput = sv_goodput_of(pts, n, target);
	return 0;
}

int sv_sweep_bisect(double lo, double hi, double tol, size_t max_points, double target,
		    sv_measure_fn f, void *ctx, struct sv_point *pts, size_t *n_pts,
		    double *goodput, enum sv_bound *bound)
{
	size_t n = 0;
	int ret;

	*n_pts = 0;
	if (!(lo > 0) || !(hi > lo) || !(tol > 0) || max_points < 2)
		return -EINVAL;
#define MEASURE(r)                                                        \
	do {                                                              \
		pts[n].rate = (r);                                        \
		if ((ret = f(ctx, pts[n].rate, &pts[n].attainment)) != 0) \
			return ret;                                       \
		*n_pts = ++n;                                             \
	} while (0)
	MEASURE(lo);
	if (!(pts[0].attainment >= target)) {
		*goodput = 0;
		*bound = SV_BELOW;
		return 0;
	}
	MEASURE(hi);
	if (pts[1].attainment >= target) {
		*goodput = hi;
		*bound = SV_AT_LEAST;
		return 0;
	}
	while (hi - lo > tol && n < max_points) {
		double mid = (lo + hi) / 2;

		MEASURE(mid);
		if (pts[n - 1].attainment >= target)
			lo = mid;
		else
			hi = mid;
	}
#undef MEASURE
	*goodput = lo;
	*bound = SV_EXACT;
	return 0;
}

enum sv_bound sv_bound_of(const struct sv_point *pts, size_t n, double goodput)
{
	double top = 0;

	for (size_t i = 0; i < n; i++)
		if (pts[i].rate > top)
			top = pts[i].rate;
	return !(goodput > 0) ? SV_BELOW : goodput >= top ? SV_AT_LEAST : SV_EXACT;
}

static const char *const bound_names[] = {
	[SV_EXACT] = "exact",
	[SV_AT_LEAST] = "at_least",
	[SV_BELOW] = "below_lowest",
};

const char *sv_bound_name(int bound)
{
	return bound >= 0 && bound < (int)(sizeof(bound_names) / sizeof(bound_names[0]))
		       ? bound_names[bound]
		       : "?";
}

int sv_bound_parse(const char *name)
{
	for (int i = 0; i < (int)(sizeof(bound_names) / sizeof(bound_names[0])); i++)
		if (!strcmp(name, bound_names[i]))
			return i;
	return -EINVAL;
}

int sv_rates_parse(const char *s, double *rates, size_t cap, size_t *n, double *lo, double *hi)
{
	const char *dots = strstr(s, "..");
	char *end;

	*n = 0;
	if (dots) {
		char head[64];

		/* strtod would take "1." of "1..8": parse the part before ".." alone. */
		if ((size_t)(dots - s) >= sizeof(head))
			return -EINVAL;
		memcpy(head, s, (size_t)(dots - s));
		head[dots - s] = '\0';
		*lo = strtod(head, &end);
		if (end == head || *end || !(*lo > 0))
			return -EINVAL;
		*hi = strtod(dots + 2, &end);
		if (*end || end == dots + 2 || !(*hi > *lo) || !isfinite(*hi))
			return -EINVAL;
		return 0;
	}
	for (;;) {
		double r = strtod(s, &end);

		if (end == s || !(r > 0) || !isfinite(r) || *n == cap ||
		    (*n && !(r > rates[*n - 1])))
			return -EINVAL;
		rates[(*n)++] = r;
		if (!*end)
			return 0;
		if (*end != ',')
			return -EINVAL;
		s = end + 1;
	}
}
