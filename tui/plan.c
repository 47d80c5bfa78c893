// SPDX-License-Identifier: MIT
/*
 * The planner's cost model, its discrete-event simulation of duetd's
 * partitions, and the goodput search per split (see plan.h for the model
 * and its assumptions).
 */
#include "tui/plan.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ---------------------------------------------------------------------------
 * The cost model.
 * ------------------------------------------------------------------------- */
void plan_model_defaults(struct plan_model *m)
{
	*m = (struct plan_model){
		.prefill_cores = 1,
		.decode_cores = 1,
		.prefill_exp = 0.8,
		.decode_exp = 0.8,
		.max_batch_tokens = 2048,
		.max_seqs = 64,
	};
}

/* Linear through points i and i + 1 of c, at x. */
static double seg(const struct plan_curve *c, size_t i, double x)
{
	return c->y[i] + (c->y[i + 1] - c->y[i]) * (x - c->x[i]) / (c->x[i + 1] - c->x[i]);
}

/* Piecewise linear; extended along the last segment; below x[0]: through (0, 0) or flat. */
static double curve_at(const struct plan_curve *c, double x, bool origin)
{
	size_t i;

	if (x <= c->x[0])
		return origin ? c->y[0] * x / c->x[0] : c->y[0];
	if (c->n == 1)
		return origin ? c->y[0] * x / c->x[0] : c->y[0];
	for (i = 0; i + 2 < c->n && x > c->x[i + 1]; i++)
		;
	return seg(c, i, x);
}

/* A decode curve at batch b: curve_at, flat below, never below its least time (a noisy
 * last segment that falls must not reach 0 at large batches). */
static double decode_curve_at(const struct plan_curve *c, double b)
{
	double t = curve_at(c, b, false), least = c->y[0];

	for (size_t i = 1; i < c->n; i++)
		least = c->y[i] < least ? c->y[i] : least;
	return t < least ? least : t;
}

/* Row j of the v2 decode table at batch b. */
static double grid_row_at(const struct plan_model *m, size_t j, double b)
{
	struct plan_curve row = { .n = m->decode.n };

	memcpy(row.x, m->decode.x, sizeof(row.x));
	memcpy(row.y, m->decode_grid[j], sizeof(row.y));
	return decode_curve_at(&row, b);
}

/* The v2 table at batch b and per-sequence context c (plan.h: bilinear, floored). */
static double grid_at(const struct plan_model *m, double b, double c)
{
	size_t j, n = m->decode_n_ctx;
	double y0 = grid_row_at(m, 0, b), lo, hi, t;

	if (n == 1 || c <= m->decode_ctxs[0])
		return y0;
	for (j = 0; j + 2 < n && c > m->decode_ctxs[j + 1]; j++)
		;
	lo = j ? grid_row_at(m, j, b) : y0;
	hi = grid_row_at(m, j + 1, b);
	t = lo + (hi - lo) * (c - m->decode_ctxs[j]) / (m->decode_ctxs[j + 1] - m->decode_ctxs[j]);
	return t < y0 / 2 ? y0 / 2 : t;
}

static double scale(int c0, int c, double e)
{
	return pow((double)c0 / (double)c, e);
}

double plan_prefill_ms(const struct plan_model *m, double tokens, int cores)
{
	double t = curve_at(&m->prefill, tokens, true);

	return (t > 0 ? t : 0) * scale(m->prefill_cores, cores, m->prefill_exp);
}

double plan_decode_ms(const struct plan_model *m, int batch, double sum_ctx, int cores)
{
	double base, t;

	if (m->decode_n_ctx)
		return grid_at(m, batch, batch > 0 ? sum_ctx / batch : 0) *
		       scale(m->decode_cores, cores, m->decode_exp);
	base = decode_curve_at(&m->decode, batch);
	t = base + m->decode_ms_per_ctx * (sum_ctx - batch * m->decode_ctx);
	if (t < base / 2)
		t = base / 2;
	return t * scale(m->decode_cores, cores, m->decode_exp);
}

static bool curve_ok(const struct plan_curve *c)
{
	if (c->n < 1 || c->n > PLAN_MAX_POINTS)
		return false;
	for (size_t i = 0; i < c->n; i++) {
		if (!(c->x[i] > 0) || !(c->y[i] > 0) || !isfinite(c->x[i]) || !isfinite(c->y[i]))
			return false;
		if (i && !(c->x[i] > c->x[i - 1]))
			return false;
	}
	return true;
}

static const char *model_bad(const struct plan_model *m)
{
	if (!curve_ok(&m->prefill))
		return "prefill points: 1-16 of them, tokens increasing, times > 0";
	if (!curve_ok(&m->decode))
		return "decode points: 1-16 of them, batch sizes increasing, times > 0";
	if (m->prefill_cores < 1 || m->decode_cores < 1)
		return "cores must be >= 1";
	if (!(m->prefill_exp >= 0 && m->prefill_exp <= 2) ||
	    !(m->decode_exp >= 0 && m->decode_exp <= 2))
		return "scaling exponents must be in [0, 2]";
	if (!(m->decode_ctx >= 0) || !(m->decode_ms_per_ctx >= 0) || !(m->transfer_ms >= 0) ||
	    !(m->transfer_ms_per_token >= 0))
		return "context and transfer figures must be >= 0";
	if (m->max_batch_tokens < 1 || m->max_seqs < 1 || m->max_context < 0)
		return "limits must be >= 1";
	if (m->decode_n_ctx > PLAN_MAX_CTX)
		return "decode contexts: at most 8";
	for (size_t j = 0; j < m->decode_n_ctx; j++) {
		if (!(m->decode_ctxs[j] > 0) || !isfinite(m->decode_ctxs[j]) ||
		    (j && !(m->decode_ctxs[j] > m->decode_ctxs[j - 1])))
			return "decode contexts: increasing, > 0";
		for (size_t i = 0; i < m->decode.n; i++)
			if (!(m->decode_grid[j][i] > 0) || !isfinite(m->decode_grid[j][i]))
				return "decode grid: times > 0";
	}
	return NULL;
}

/* ---------------------------------------------------------------------------
 * Profile JSON.
 * ------------------------------------------------------------------------- */
__attribute__((format(printf, 3, 4))) static int bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int read_curve(json_t *arr, const char *what, struct plan_curve *c, char *err, size_t errlen)
{
	json_t *p;
	size_t i;

	if (!json_is_array(arr) || !json_array_size(arr) || json_array_size(arr) > PLAN_MAX_POINTS)
		return bad(err, errlen, "%s.points: want an array of 1-%d [x, ms] pairs", what,
			   PLAN_MAX_POINTS);
	c->n = json_array_size(arr);
	json_array_foreach(arr, i, p)
	{
		if (json_array_size(p) != 2 || !json_is_number(json_array_get(p, 0)) ||
		    !json_is_number(json_array_get(p, 1)))
			return bad(err, errlen, "%s.points[%zu]: want [x, ms]", what, i);
		c->x[i] = json_number_value(json_array_get(p, 0));
		c->y[i] = json_number_value(json_array_get(p, 1));
	}
	return 0;
}

/* An optional number field: *v unchanged when absent; false when present but not a number. */
static bool opt_num(json_t *o, const char *key, double *v)
{
	json_t *x = json_object_get(o, key);

	if (!x)
		return true;
	if (!json_is_number(x))
		return false;
	*v = json_number_value(x);
	return true;
}

static bool opt_int(json_t *o, const char *key, int *v)
{
	double d = *v;

	if (!opt_num(o, key, &d) || d != floor(d) || fabs(d) > 1e9)
		return false;
	*v = (int)d;
	return true;
}

/* The v2 decode table, when "decode" has one ("contexts" and "grid" together). */
static int read_grid(json_t *dec, struct plan_model *m, char *err, size_t errlen)
{
	json_t *ctxs = json_object_get(dec, "contexts"), *grid = json_object_get(dec, "grid"), *row;
	size_t j, i;

	if (!ctxs && !grid)
		return 0;
	if (!json_is_array(ctxs) || !json_array_size(ctxs) ||
	    json_array_size(ctxs) > PLAN_MAX_CTX || !json_is_array(grid) ||
	    json_array_size(grid) != json_array_size(ctxs))
		return bad(err, errlen,
			   "decode.contexts and decode.grid: want 1-%d contexts and as many rows",
			   PLAN_MAX_CTX);
	m->decode_n_ctx = json_array_size(ctxs);
	for (j = 0; j < m->decode_n_ctx; j++) {
		if (!json_is_number(json_array_get(ctxs, j)))
			return bad(err, errlen, "decode.contexts[%zu]: not a number", j);
		m->decode_ctxs[j] = json_number_value(json_array_get(ctxs, j));
		row = json_array_get(grid, j);
		if (json_array_size(row) != m->decode.n)
			return bad(err, errlen, "decode.grid[%zu]: want %zu times, one per batch",
				   j, m->decode.n);
		for (i = 0; i < m->decode.n; i++) {
			if (!json_is_number(json_array_get(row, i)))
				return bad(err, errlen, "decode.grid[%zu][%zu]: not a number", j,
					   i);
			m->decode_grid[j][i] = json_number_value(json_array_get(row, i));
		}
	}
	return 0;
}

int plan_model_from_json(const char *text, struct plan_model *m, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loads(text, JSON_ALLOW_NUL, &jerr), *pre, *dec, *xf, *sc, *lim;
	const char *why;
	int ret = -EINVAL;

	plan_model_defaults(m);
	if (!root)
		return bad(err, errlen, "not JSON: line %d: %s", jerr.line, jerr.text);
	pre = json_object_get(root, "prefill");
	dec = json_object_get(root, "decode");
	xf = json_object_get(root, "transfer");
	sc = json_object_get(root, "scaling");
	lim = json_object_get(root, "limits");
	if (!json_is_object(pre) || !json_is_object(dec)) {
		bad(err, errlen, "no \"prefill\" and \"decode\" objects");
		goto out;
	}
	if ((ret = read_curve(json_object_get(pre, "points"), "prefill", &m->prefill, err,
			      errlen)) ||
	    (ret = read_curve(json_object_get(dec, "points"), "decode", &m->decode, err, errlen)))
		goto out;
	if ((ret = read_grid(dec, m, err, errlen)))
		goto out;
	ret = -EINVAL;
	if (!opt_int(pre, "cores", &m->prefill_cores) || !opt_int(dec, "cores", &m->decode_cores) ||
	    !opt_num(dec, "context", &m->decode_ctx) ||
	    !opt_num(dec, "ms_per_context_token", &m->decode_ms_per_ctx) ||
	    !opt_num(xf, "ms", &m->transfer_ms) ||
	    !opt_num(xf, "ms_per_token", &m->transfer_ms_per_token) ||
	    !opt_num(sc, "prefill_exp", &m->prefill_exp) ||
	    !opt_num(sc, "decode_exp", &m->decode_exp) ||
	    !opt_int(lim, "max_batch_tokens", &m->max_batch_tokens) ||
	    !opt_int(lim, "max_seqs", &m->max_seqs) ||
	    !opt_int(lim, "max_context", &m->max_context)) {
		bad(err, errlen, "a field that should be a number is not");
		goto out;
	}
	why = model_bad(m);
	if (why) {
		bad(err, errlen, "%s", why);
		goto out;
	}
	ret = 0;
out:
	json_decref(root);
	return ret;
}

static json_t *curve_json(const struct plan_curve *c)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < c->n; i++)
		json_array_append_new(a, json_pack("[f f]", c->x[i], c->y[i]));
	return a;
}

json_t *plan_model_json(const struct plan_model *m)
{
	json_t *o, *ctxs, *grid;

	o = json_pack("{si s{si so} s{si sf sf so} s{sf sf} s{sf sf} s{si si si}}", "version",
		      m->decode_n_ctx ? 2 : 1, "prefill", "cores", m->prefill_cores, "points",
		      curve_json(&m->prefill), "decode", "cores", m->decode_cores, "context",
		      m->decode_ctx, "ms_per_context_token", m->decode_ms_per_ctx, "points",
		      curve_json(&m->decode), "transfer", "ms", m->transfer_ms, "ms_per_token",
		      m->transfer_ms_per_token, "scaling", "prefill_exp", m->prefill_exp,
		      "decode_exp", m->decode_exp, "limits", "max_batch_tokens",
		      m->max_batch_tokens, "max_seqs", m->max_seqs, "max_context", m->max_context);
	if (!o || !m->decode_n_ctx)
		return o;
	ctxs = json_array();
	grid = json_array();
	for (size_t j = 0; ctxs && grid && j < m->decode_n_ctx; j++) {
		json_t *row = json_array();

		json_array_append_new(ctxs, json_real(m->decode_ctxs[j]));
		for (size_t i = 0; row && i < m->decode.n; i++)
			json_array_append_new(row, json_real(m->decode_grid[j][i]));
		json_array_append_new(grid, row);
	}
	if (!ctxs || !grid) {
		json_decref(ctxs);
		json_decref(grid);
		json_decref(o);
		return NULL;
	}
	json_object_set_new(json_object_get(o, "decode"), "contexts", ctxs);
	json_object_set_new(json_object_get(o, "decode"), "grid", grid);
	return o;
}

int plan_model_write(const struct plan_model *m, FILE *f)
{
	json_t *o = plan_model_json(m);
	int ret;

	if (!o)
		return -EIO;
	ret = json_dumpf(o, f, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) || fputc('\n', f) == EOF
		      ? -EIO
		      : 0;
	json_decref(o);
	return ret;
}

void plan_config_name(const struct plan_config *c, char *out, size_t cap)
{
	if (c->prefill == 0)
		snprintf(out, cap, "mixed %d", c->decode);
	else
		snprintf(out, cap, "%dp%dd", c->prefill, c->decode);
}

/* ---------------------------------------------------------------------------
 * The simulation: one continuous-batching server.
 * ------------------------------------------------------------------------- */

/* One request as one server sees it. */
struct eng_item {
	double arrival; /* s: enters this server */
	int prompt;	/* prompt tokens (its context when it arrives prefilled) */
	int output;	/* tokens it ends with */
	bool prefilled; /* arrives with its prompt computed and one token out */
	int group;	/* prefix group + 1, 0 none */
	int cached;	/* prompt tokens found in this server's prefix cache */
	int done, gen;	/* prompt tokens computed, tokens out */
	double t_first; /* s: first token (from this server) */
	double t_last;	/* s: last token */
};

/* Tokens of a prompt that its group's cached prompt of `cached` tokens saves: all of
 * those, at most all but the prompt's last token, rounded down to PLAN_KV_BLOCK. */
static int cache_hit(int cached, int prompt)
{
	int hit = cached < prompt - 1 ? cached : prompt - 1;

	return hit / PLAN_KV_BLOCK * PLAN_KV_BLOCK;
}

/*
 * Serve it[order[0..n)] (arrival order) on `cores` cores: each step takes the
 * decoding sequences, then prompt chunks in admission order within the
 * token budget; at most max_seqs admitted at once.  Groups are 1..n_groups;
 * the server's prefix cache holds, per group, the prompt length of the
 * latest of its requests whose prefill finished here.  0 or -ENOMEM.
 */
static int engine_run(const struct plan_model *m, int cores, struct eng_item *it,
		      const size_t *order, size_t n, int n_groups)
{
	size_t cap = (size_t)m->max_seqs, n_act = 0, admit = 0, finished = 0;
	size_t *act = calloc(cap, sizeof(*act));
	int *chunk = calloc(cap, sizeof(*chunk)); /* this step: -1 decoding, else prompt tokens */
	int *cache = calloc((size_t)n_groups + 1, sizeof(*cache)); /* tokens, by group */
	double t = 0;

	if (!act || !chunk || !cache) {
		free(act);
		free(chunk);
		free(cache);
		return -ENOMEM;
	}
	while (finished < n) {
		double pre_ms = 0, sum_ctx = 0, step_ms;
		long budget = m->max_batch_tokens;
		int batch = 0;
		size_t k = 0;

		while (n_act < cap && admit < n && it[order[admit]].arrival <= t) {
			struct eng_item *r = &it[order[admit++]];

			r->done = r->prefilled ? r->prompt : 0;
			r->gen = r->prefilled ? 1 : 0;
			if (!r->prefilled && r->group > 0 && r->group <= n_groups) {
				r->cached = cache_hit(cache[r->group], r->prompt);
				r->done = r->cached;
			}
			act[n_act++] = (size_t)(r - it);
		}
		if (!n_act) { /* idle until the next arrival */
			t = it[order[admit]].arrival;
			continue;
		}
		for (size_t a = 0; a < n_act; a++) {
			struct eng_item *r = &it[act[a]];

			chunk[a] = 0;
			if (r->done == r->prompt) {
				chunk[a] = -1;
				batch++;
				sum_ctx += r->prompt + r->gen;
			}
		}
		budget -= batch;
		for (size_t a = 0; a < n_act && budget > 0; a++) {
			struct eng_item *r = &it[act[a]];
			long c = r->prompt - r->done;

			if (chunk[a] < 0)
				continue;
			if (c > budget)
				c = budget;
			chunk[a] = (int)c;
			budget -= c;
			/* a noisy prefill curve may fall: a chunk never costs less than 0 */
			pre_ms += fmax(0, plan_prefill_ms(m, r->done + c, cores) -
						  plan_prefill_ms(m, r->done, cores));
		}
		step_ms = pre_ms + (batch ? plan_decode_ms(m, batch, sum_ctx, cores) : 0);
		t += step_ms / 1e3;
		for (size_t a = 0; a < n_act; a++) {
			struct eng_item *r = &it[act[a]];

			if (chunk[a] < 0) {
				r->gen++;
			} else if (chunk[a] > 0) {
				r->done += chunk[a];
				if (r->done == r->prompt) {
					r->gen = 1;
					r->t_first = t;
					if (r->group > 0 && r->group <= n_groups)
						cache[r->group] = r->prompt;
				}
			}
			if (r->gen >= r->output) {
				r->t_last = t;
				finished++;
			} else {
				act[k++] = act[a];
			}
		}
		n_act = k;
	}
	free(act);
	free(chunk);
	free(cache);
	return 0;
}

/* qsort_r order of indices by keys[i], then by index (stable). */
static int by_arrival(const void *a, const void *b, void *keys)
{
	const double *k = keys;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;

	if (k[i] != k[j])
		return k[i] < k[j] ? -1 : 1;
	return i < j ? -1 : i > j;
}

static bool reqs_ok(const struct plan_req *reqs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!(reqs[i].arrival_s >= 0) || !isfinite(reqs[i].arrival_s) ||
		    reqs[i].prompt < 1 || reqs[i].output < 1 || reqs[i].group < 0)
			return false;
		if (i && reqs[i].arrival_s < reqs[i - 1].arrival_s)
			return false;
	}
	return true;
}

int plan_simulate(const struct plan_model *m, const struct plan_config *c,
		  const struct plan_req *reqs, size_t n, struct plan_out *out)
{
	struct eng_item *it = NULL;
	size_t *order = NULL, nd = 0;
	double *keys = NULL;
	int ret = -ENOMEM, n_groups = 0;

	if (model_bad(m) || c->decode < 1 || c->prefill < 0 || !reqs_ok(reqs, n))
		return -EINVAL;
	if (!n)
		return 0;
	for (size_t i = 0; i < n; i++)
		n_groups = reqs[i].group > n_groups ? reqs[i].group : n_groups;
	it = calloc(n, sizeof(*it));
	order = calloc(n, sizeof(*order));
	keys = calloc(n, sizeof(*keys));
	if (!it || !order || !keys)
		goto out;
	for (size_t i = 0; i < n; i++) {
		it[i] = (struct eng_item){ .arrival = reqs[i].arrival_s,
					   .prompt = reqs[i].prompt,
					   .output = c->prefill ? 1 : reqs[i].output,
					   .group = reqs[i].group };
		order[i] = i;
	}
	/* mixed: everything here; split: the prefill partition, every request to its first token */
	ret = engine_run(m, c->prefill ? c->prefill : c->decode, it, order, n, n_groups);
	if (ret)
		goto out;
	for (size_t i = 0; i < n; i++)
		out[i] = (struct plan_out){ .t_first_s = it[i].t_first, .t_last_s = it[i].t_last };
	if (!c->prefill)
		goto out;

	/* The decode partition: the requests with more to say, after the hand-off of what
	 * the prefill partition computed (its uncached tokens). */
	for (size_t i = 0; i < n; i++) {
		int sent = reqs[i].prompt - it[i].cached;

		if (reqs[i].output < 2)
			continue;
		it[nd] = (struct eng_item){
			.arrival = out[i].t_first_s +
				   (m->transfer_ms + m->transfer_ms_per_token * sent) / 1e3,
			.prompt = reqs[i].prompt,
			.output = reqs[i].output,
			.prefilled = true,
		};
		keys[nd] = it[nd].arrival;
		order[nd] = i; /* for now: which request it is */
		nd++;
	}
	{
		size_t *which = calloc(nd ? nd : 1, sizeof(*which));

		if (!which) {
			ret = -ENOMEM;
			goto out;
		}
		memcpy(which, order, nd * sizeof(*which));
		for (size_t k = 0; k < nd; k++)
			order[k] = k;
		qsort_r(order, nd, sizeof(*order), by_arrival, keys);
		ret = engine_run(m, c->decode, it, order, nd, 0);
		for (size_t k = 0; !ret && k < nd; k++)
			out[which[k]].t_last_s = it[k].t_last;
		free(which);
	}
out:
	free(it);
	free(order);
	free(keys);
	return ret;
}

int plan_reqs_of_trace(const struct sv_trace *t, struct plan_req **out, size_t *n)
{
	size_t len = sv_trace_len(t);
	struct plan_req *r;

	*out = NULL;
	*n = 0;
	if (!len)
		return -EINVAL;
	r = calloc(len, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		const struct sv_treq *q = sv_trace_at(t, i);
		size_t toks = q->prompt_tokens > 0 ? (size_t)q->prompt_tokens
			      : q->prompt	   ? strlen(q->prompt) / 4
						   : 1;

		r[i] = (struct plan_req){ .arrival_s = q->arrival_s,
					  .prompt = toks < 1	     ? 1
						    : toks > 1 << 24 ? 1 << 24
								     : (int)toks,
					  .output = q->max_tokens,
					  .group = q->group >= 0 && q->group < 1 << 24
							   ? q->group + 1
							   : 0 };
	}
	*out = r;
	*n = len;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Attainment and goodput, through serve_lib.
 * ------------------------------------------------------------------------- */
/* The workload's requests at rate (owned by the caller). */
static int workload_at(const struct plan_workload *w, double rate, struct plan_req **out, size_t *n)
{
	struct sv_trace *t = NULL;
	struct sv_gen g;
	double f;
	int ret;

	if (!(rate > 0) || !isfinite(rate))
		return -EINVAL;
	if (w->gen) {
		g = *w->gen;
		g.rate = rate;
		/* Low rates: a window of at least 50 mean gaps, so there is something to measure. */
		if (!w->as_bench && g.duration_s > 0 && g.duration_s < 50 / rate)
			g.duration_s = 50 / rate;
		if ((ret = sv_trace_generate(&g, &t)))
			return ret;
		ret = plan_reqs_of_trace(t, out, n);
		sv_trace_destroy(t);
		return ret;
	}
	if (!w->n || !(w->base_rate > 0))
		return -EINVAL;
	*out = calloc(w->n, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	f = w->base_rate / rate;
	for (size_t i = 0; i < w->n; i++) {
		(*out)[i] = w->reqs[i];
		(*out)[i].arrival_s = w->reqs[i].arrival_s * f;
	}
	*n = w->n;
	return 0;
}

int plan_run_at(const struct plan_model *m, const struct plan_config *c,
		const struct plan_workload *w, double rate, const struct sv_slo *slo,
		struct sv_result *res)
{
	struct plan_req *reqs = NULL;
	struct plan_out *out = NULL;
	struct sv_run *run = NULL;
	double end = 0;
	size_t n = 0;
	int ret = workload_at(w, rate, &reqs, &n);

	if (ret)
		return ret;
	ret = -ENOMEM;
	out = calloc(n ? n : 1, sizeof(*out));
	if (!out || sv_run_create(slo, &run))
		goto out;
	ret = plan_simulate(m, c, reqs, n, out);
	for (size_t i = 0; !ret && i < n; i++) {
		/* First and last token stand for the stream: TTFT and TPOT exact, ITL not. */
		double tok[2] = { out[i].t_first_s, out[i].t_last_s };
		struct sv_rec r = { .ok = true,
				    .t_sent = reqs[i].arrival_s,
				    .t_done = out[i].t_last_s,
				    .tok_t = tok,
				    .n_tok = reqs[i].output > 1 ? 2 : 1,
				    .tokens = reqs[i].output };

		ret = sv_run_add(run, &r);
		if (out[i].t_last_s > end)
			end = out[i].t_last_s;
	}
	if (!ret)
		sv_run_result(run, end, res);
out:
	sv_run_destroy(run);
	free(reqs);
	free(out);
	return ret;
}

struct measure_ctx {
	const struct plan_model *m;
	const struct plan_config *c;
	const struct plan_workload *w;
	const struct sv_slo *slo;
	double target;
	/* The figures of the goodput as sv_sweep_bisect will have it: the latest rate
	 * that passed, else the first rate measured. */
	size_t n_measured;
	double kept_rate;
	struct sv_result kept;
};

static int measure(void *ctx, double rate, double *attainment)
{
	struct measure_ctx *x = ctx;
	struct sv_result res;
	int ret = plan_run_at(x->m, x->c, x->w, rate, x->slo, &res);

	*attainment = ret ? NAN : res.attainment;
	if (!ret && (x->n_measured == 0 || res.attainment >= x->target)) {
		x->kept_rate = rate;
		x->kept = res;
	}
	x->n_measured++;
	return ret;
}

/* req/s at which c's busiest server is always busy, decode batches at max_seqs. */
static double capacity(const struct plan_model *m, const struct plan_config *c,
		       const struct plan_req *reqs, size_t n)
{
	int pc = c->prefill ? c->prefill : c->decode, b = m->max_seqs, n_groups = 0, *last;
	double pre = 0, dec_tokens = 0, ctx = 0, tok_ms, pre_cap, dec_cap;

	for (size_t i = 0; i < n; i++)
		n_groups = reqs[i].group > n_groups ? reqs[i].group : n_groups;
	/* The prefix cache as the simulation has it, each group's previous prompt cached
	 * (without memory for it: every prompt whole, a lower capacity). */
	last = calloc((size_t)n_groups + 1, sizeof(*last));
	for (size_t i = 0; i < n; i++) {
		int g = last ? reqs[i].group : 0, hit = 0;

		if (g) {
			hit = cache_hit(last[g], reqs[i].prompt);
			last[g] = reqs[i].prompt;
		}
		pre += fmax(0,
			    plan_prefill_ms(m, reqs[i].prompt, pc) - plan_prefill_ms(m, hit, pc));
		dec_tokens += reqs[i].output - 1;
		ctx += reqs[i].prompt + reqs[i].output / 2.0;
	}
	pre /= (double)n;
	dec_tokens /= (double)n;
	ctx /= (double)n;
	free(last);
	tok_ms = plan_decode_ms(m, b, b * ctx, c->decode) / b; /* per token at a full batch */
	if (!c->prefill)
		return 1e3 / (pre + dec_tokens * tok_ms);
	pre_cap = 1e3 / pre;
	dec_cap = dec_tokens > 0 ? 1e3 / (dec_tokens * tok_ms) : INFINITY;
	return pre_cap < dec_cap ? pre_cap : dec_cap;
}

/*
 * plan_goodput, with the workload's requests at rate 1 (for the capacity) in
 * *reqs1: made here when *reqs1 is NULL, and kept there for the next
 * configuration (the caller frees them).
 */
static int goodput_of(const struct plan_model *m, const struct plan_config *c,
		      const struct plan_workload *w, struct plan_req **reqs1, size_t *n1,
		      const struct sv_slo *slo, double target, struct plan_eval *ev)
{
	struct measure_ctx x = { .m = m, .c = c, .w = w, .slo = slo, .target = target };
	double cap, at;
	int ret;

	memset(ev, 0, sizeof(*ev));
	ev->cfg = *c;
	if (model_bad(m) || c->decode < 1 || c->prefill < 0)
		return -EINVAL;
	if (!*reqs1 && (ret = workload_at(w, 1, reqs1, n1)))
		return ret;
	cap = *n1 ? capacity(m, c, *reqs1, *n1) : NAN;
	if (!(cap > 0) || !isfinite(cap))
		return -EINVAL;
	ev->capacity = cap;
	ret = sv_sweep_bisect(cap / 1000, 2 * cap, cap / 200, PLAN_MAX_SWEEP, target, measure, &x,
			      ev->pts, &ev->n_pts, &ev->goodput, &ev->bound);
	if (ret)
		return ret;
	/* The search measured this rate already (the simulation is deterministic). */
	at = ev->goodput > 0 ? ev->goodput : cap / 1000;
	if (x.n_measured && x.kept_rate == at) {
		ev->at_goodput = x.kept;
		return 0;
	}
	return plan_run_at(m, c, w, at, slo, &ev->at_goodput);
}

int plan_goodput(const struct plan_model *m, const struct plan_config *c,
		 const struct plan_workload *w, const struct sv_slo *slo, double target,
		 struct plan_eval *ev)
{
	struct plan_req *reqs1 = NULL;
	size_t n1 = 0;
	int ret = goodput_of(m, c, w, &reqs1, &n1, slo, target, ev);

	free(reqs1);
	return ret;
}

int plan_recommend(const struct plan_model *m, int cores, const struct plan_workload *w,
		   const struct sv_slo *slo, double target, struct plan_eval *evals, size_t *best)
{
	struct plan_req *reqs1 = NULL;
	size_t n1 = 0;
	int ret = 0;

	if (cores < 1)
		return -EINVAL;
	*best = 0;
	for (int i = 0; i < cores && !ret; i++) {
		struct plan_config c = { .prefill = i, .decode = i ? cores - i : cores };

		ret = goodput_of(m, &c, w, &reqs1, &n1, slo, target, &evals[i]);
		if (!ret && evals[i].goodput > evals[*best].goodput)
			*best = (size_t)i;
	}
	free(reqs1);
	return ret;
}

/* ---------------------------------------------------------------------------
 * Comparing with a measured sweep.
 * ------------------------------------------------------------------------- */
/* A required number field of o: false (and a message naming where) when absent or not one. */
static bool need_num(json_t *o, const char *where, const char *key, double *v, char *err,
		     size_t errlen)
{
	json_t *x = json_object_get(o, key);

	if (!json_is_number(x)) {
		bad(err, errlen, "%s\"%s\": %s", where, key, x ? "not a number" : "missing");
		return false;
	}
	*v = json_number_value(x);
	return true;
}

int plan_sweep_from_json(const char *text, struct plan_sweep *s, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loads(text, JSON_ALLOW_NUL, &jerr), *wl, *slo, *rates, *r, *x;
	double seed = 0, ctx = 0, nreq = 0;
	const char *bound;
	size_t i;
	int ret = -EINVAL;

	memset(s, 0, sizeof(*s));
	s->goodput = NAN;
	if (!root)
		return bad(err, errlen, "not JSON: line %d: %s", jerr.line, jerr.text);
	wl = json_object_get(root, "workload");
	slo = json_object_get(root, "slo");
	rates = json_object_get(root, "rates");
	if (!json_is_object(wl) || !json_is_object(slo) || !json_is_array(rates)) {
		bad(err, errlen,
		    "not a bench_serve --json sweep: want \"workload\", \"slo\" (a "
		    "run with SLOs) and \"rates\"");
		goto out;
	}
	x = json_object_get(wl, "trace");
	if (json_is_string(x)) {
		s->profile = -1;
		snprintf(s->trace, sizeof(s->trace), "%s", json_string_value(x));
	} else {
		x = json_object_get(wl, "profile");
		s->profile = json_is_string(x) ? sv_profile_parse(json_string_value(x)) : -1;
		if (s->profile < 0) {
			bad(err, errlen, "workload: no known \"profile\" and no \"trace\"");
			goto out;
		}
	}
	if (!need_num(wl, "workload: ", "burstiness", &s->burstiness, err, errlen) ||
	    !need_num(wl, "workload: ", "seed", &seed, err, errlen) ||
	    !need_num(wl, "workload: ", "max_context", &ctx, err, errlen) ||
	    !need_num(wl, "workload: ", "duration_s", &s->duration_s, err, errlen) ||
	    !need_num(slo, "slo: ", "ttft_ms", &s->slo.ttft_ms, err, errlen) ||
	    !need_num(slo, "slo: ", "tpot_ms", &s->slo.tpot_ms, err, errlen))
		goto out;
	if (!opt_num(wl, "num_requests", &nreq) || nreq < 0 || nreq > 1e7 || seed < 0 || ctx < 0 ||
	    ctx > 1 << 24 || !(s->burstiness >= 0) || !(s->duration_s >= 0)) {
		bad(err, errlen,
		    "workload: a bad seed, max_context, duration_s, burstiness or "
		    "num_requests");
		goto out;
	}
	s->seed = (unsigned long long)seed;
	s->max_context = (int)ctx;
	s->num_requests = (int)nreq;
	s->target = 0.9;
	if (!opt_num(slo, "target", &s->target) || !(s->target > 0 && s->target <= 1) ||
	    !(s->slo.ttft_ms > 0) || !(s->slo.tpot_ms > 0)) {
		bad(err, errlen, "slo: want ttft_ms and tpot_ms > 0 and target in (0, 1]");
		goto out;
	}
	if (!json_array_size(rates) || json_array_size(rates) > PLAN_SWEEP_MAX) {
		bad(err, errlen, "\"rates\": want 1-%d measured rates", PLAN_SWEEP_MAX);
		goto out;
	}
	json_array_foreach(rates, i, r)
	{
		char where[32];
		double n;

		snprintf(where, sizeof(where), "rates[%zu]: ", i);
		if (!need_num(r, where, "rate", &s->rate[i], err, errlen) ||
		    !need_num(r, where, "attainment", &s->attainment[i], err, errlen) ||
		    !need_num(r, where, "requests", &n, err, errlen))
			goto out;
		if (!(s->rate[i] > 0) || !isfinite(s->rate[i]) || !(s->attainment[i] >= 0) ||
		    s->attainment[i] > 1 || n < 0 || n > 1e9) {
			bad(err, errlen,
			    "rates[%zu]: want rate > 0, attainment in [0, 1], "
			    "requests >= 0",
			    i);
			goto out;
		}
		s->requests[i] = (size_t)n;
	}
	s->n = json_array_size(rates);
	x = json_object_get(root, "goodput");
	bound = json_string_value(json_object_get(root, "goodput_bound"));
	if (json_is_number(x) && bound) {
		int b = sv_bound_parse(bound);

		s->goodput = json_number_value(x);
		s->bound = b < 0 ? SV_EXACT : (enum sv_bound)b;
	}
	ret = 0;
out:
	json_decref(root);
	return ret;
}

void plan_sweep_gen(const struct plan_sweep *s, struct sv_gen *g)
{
	/* As bench_serve's gen_trace: a request count replaces the window. */
	*g = (struct sv_gen){ .profile = s->profile,
			      .rate = 1,
			      .burstiness = s->burstiness,
			      .duration_s = s->num_requests ? 0 : s->duration_s,
			      .max_requests = (size_t)s->num_requests,
			      .max_context = s->max_context,
			      .seed = s->seed };
}

int plan_compare(const struct plan_model *m, const struct plan_config *c,
		 const struct plan_sweep *s, const struct plan_workload *w,
		 struct plan_cmp_row *rows, double *goodput, enum sv_bound *bound)
{
	struct sv_point pts[PLAN_SWEEP_MAX];
	int ret;

	if (!s->n || s->n > PLAN_SWEEP_MAX)
		return -EINVAL;
	for (size_t i = 0; i < s->n; i++) {
		rows[i] = (struct plan_cmp_row){ .rate = s->rate[i],
						 .measured = s->attainment[i],
						 .measured_n = s->requests[i] };
		ret = plan_run_at(m, c, w, s->rate[i], &s->slo, &rows[i].pred);
		if (ret)
			return ret;
		rows[i].predicted = rows[i].pred.attainment;
		rows[i].predicted_n = rows[i].pred.sent;
		pts[i] = (struct sv_point){ s->rate[i], rows[i].predicted };
	}
	*goodput = sv_goodput_of(pts, s->n, s->target);
	*bound = sv_bound_of(pts, s->n, *goodput);
	return 0;
}

int plan_config_parse(const char *s, int cores, struct plan_config *c)
{
	int p, d, used = 0;

	if (!strcmp(s, "mixed")) {
		*c = (struct plan_config){ .prefill = 0, .decode = cores };
		return cores >= 1 ? 0 : -EINVAL;
	}
	if (sscanf(s, "mixed %d%n", &d, &used) == 1 && !s[used] && d >= 1 && d <= 256) {
		*c = (struct plan_config){ .prefill = 0, .decode = d };
		return 0;
	}
	if (sscanf(s, "%dp%dd%n", &p, &d, &used) == 2 && !s[used] && p >= 1 && d >= 1 && p <= 256 &&
	    d <= 256) {
		*c = (struct plan_config){ .prefill = p, .decode = d };
		return 0;
	}
	return -EINVAL;
}
