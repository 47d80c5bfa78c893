// SPDX-License-Identifier: MIT
/*
 * model — the console's data, apart from drawing (see model.h).
 */
#include "tui/model.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- rings --------------------------------------------------------------------- */

void model_ring_push(struct model_ring *r, double t, double v)
{
	r->t[r->head] = t;
	r->v[r->head] = v;
	r->head = (r->head + 1) % MODEL_RING;
	if (r->count < MODEL_RING)
		r->count++;
}

bool model_ring_get(const struct model_ring *r, unsigned i, double *t, double *v)
{
	unsigned k;

	if (i >= r->count)
		return false;
	k = (r->head + MODEL_RING - 1 - i) % MODEL_RING;
	if (t)
		*t = r->t[k];
	if (v)
		*v = r->v[k];
	return true;
}

size_t model_ring_tail(const struct model_ring *r, double *out, size_t n)
{
	size_t k = n < r->count ? n : r->count;

	for (size_t i = 0; i < k; i++)
		model_ring_get(r, (unsigned)(k - 1 - i), NULL, &out[i]);
	return k;
}

double model_ring_rate(const struct model_ring *r, double span)
{
	double t_new, v_new, t_old = 0, v_prev, sum = 0;
	unsigned i;

	if (!model_ring_get(r, 0, &t_new, &v_new) || r->count < 2)
		return NAN;
	/* Walk back while the older sample is within the span, summing increments. */
	v_prev = v_new;
	for (i = 1; i < r->count; i++) {
		double t, v;

		model_ring_get(r, i, &t, &v);
		if (i > 1 && t_new - t > span + 1e-9) /* the previous sample always counts */
			break;
		sum += v_prev >= v ? v_prev - v : v_prev; /* a decrease: counted from 0 */
		v_prev = v;
		t_old = t;
	}
	if (t_new - t_old <= 0)
		return NAN;
	return sum / (t_new - t_old);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double model_percentile(double *v, size_t n, double p)
{
	double pos, frac;
	size_t lo;

	if (n == 0)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	if (p <= 0)
		return v[0];
	if (p >= 100)
		return v[n - 1];
	pos = p / 100.0 * (double)(n - 1);
	lo = (size_t)pos;
	frac = pos - (double)lo;
	if (lo + 1 >= n)
		return v[n - 1];
	return v[lo] + (v[lo + 1] - v[lo]) * frac;
}

/* --- parsing -------------------------------------------------------------------- */

static double jnum(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A number that defaults to 0 (counters and gauges a daemon may leave out). */
static double jnum0(json_t *o, const char *key)
{
	double v = jnum(o, key);

	return isnan(v) ? 0 : v;
}

static void jstr(json_t *o, const char *key, char *out, size_t cap)
{
	const char *v = json_string_value(json_object_get(o, key));

	snprintf(out, cap, "%s", v ? v : "");
}

static void jquant(json_t *o, struct model_quantiles *q)
{
	q->p50 = jnum(o, "p50");
	q->p90 = jnum(o, "p90");
	q->p99 = jnum(o, "p99");
}

static void parse_partition(json_t *p, struct model_partition *out)
{
	json_t *kv = json_object_get(p, "kv"), *pc = json_object_get(p, "prefix_cache"), *d;
	size_t i, o = 0;

	memset(out, 0, sizeof(*out));
	jstr(p, "name", out->name, sizeof(out->name));
	jstr(p, "role", out->role, sizeof(out->role));
	jstr(p, "cpus", out->cpus, sizeof(out->cpus));
	jstr(p, "state", out->state, sizeof(out->state));
	jstr(p, "why", out->why, sizeof(out->why));
	json_array_foreach(json_object_get(p, "devices"), i, d)
	{
		const char *s = json_string_value(d);
		int w;

		if (!s)
			continue;
		w = snprintf(out->devices + o, sizeof(out->devices) - o, "%s%s", o ? "," : "", s);
		if (w < 0 || (size_t)w >= sizeof(out->devices) - o)
			break;
		o += (size_t)w;
	}
	out->pid = jnum(p, "pid");
	out->restarts = jnum0(p, "restarts");
	out->running = jnum0(p, "running");
	out->waiting = jnum0(p, "waiting");
	out->batch = jnum0(p, "batch");
	out->kv_block_tokens = jnum0(kv, "block_tokens");
	out->kv_total = jnum0(kv, "total");
	out->kv_used = jnum0(kv, "used");
	out->kv_cached = jnum0(kv, "cached");
	out->kv_leased = jnum0(kv, "leased");
	out->kv_free = jnum0(kv, "free");
	out->pc_queries = jnum0(pc, "queries");
	out->pc_hits = jnum0(pc, "hits");
	out->steps = jnum0(p, "steps");
	out->step_ms = jnum(p, "step_ms");
	out->utilization = jnum(p, "utilization");
}

static void parse_request(json_t *r, struct model_request *out)
{
	memset(out, 0, sizeof(*out));
	jstr(r, "id", out->id, sizeof(out->id));
	jstr(r, "tenant", out->tenant, sizeof(out->tenant));
	jstr(r, "state", out->state, sizeof(out->state));
	jstr(r, "partition", out->partition, sizeof(out->partition));
	jstr(r, "finish_reason", out->finish, sizeof(out->finish));
	out->prompt_tokens = jnum0(r, "prompt_tokens");
	out->output_tokens = jnum0(r, "output_tokens");
	out->max_tokens = jnum(r, "max_tokens");
	out->age_ms = jnum(r, "age_ms");
	out->ttft_ms = jnum(r, "ttft_ms");
	out->tpot_ms = jnum(r, "tpot_ms");
	out->e2e_ms = jnum(r, "e2e_ms");
	out->queue_ms = jnum(r, "queue_ms");
	out->prefill_ms = jnum(r, "prefill_ms");
	out->transfer_ms = jnum(r, "transfer_ms");
	out->decode_ms = jnum(r, "decode_ms");
}

int model_parse_status(const char *json, struct model_status *out, char *err, size_t errcap)
{
	json_error_t jerr;
	json_t *root = json_loads(json ? json : "", JSON_ALLOW_NUL, &jerr), *o, *v;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(root)) {
		snprintf(err, errcap, "/v1/status: %s", root ? "not a JSON object" : jerr.text);
		json_decref(root);
		return -EINVAL;
	}
	if (!json_is_array(json_object_get(root, "partitions"))) {
		snprintf(err, errcap, "/v1/status: no \"partitions\" array");
		json_decref(root);
		return -EINVAL;
	}
	jstr(root, "name", out->name, sizeof(out->name));
	jstr(root, "version", out->version, sizeof(out->version));
	jstr(root, "model", out->model, sizeof(out->model));
	jstr(root, "state", out->state, sizeof(out->state));
	o = json_object_get(root, "health");
	out->healthy = json_is_true(json_object_get(o, "ok"));
	jstr(o, "reason", out->reason, sizeof(out->reason));
	out->uptime_s = jnum0(root, "uptime_s");
	out->now = jnum0(root, "now");
	out->admin = json_is_true(json_object_get(root, "admin"));
	o = json_object_get(root, "slo");
	out->slo_ttft_ms = jnum(o, "ttft_ms");
	out->slo_tpot_ms = jnum(o, "tpot_ms");
	out->slo_attainment = jnum(o, "attainment");
	o = json_object_get(root, "totals");
	out->requests = jnum0(o, "requests");
	out->requests_ok = jnum0(o, "requests_ok");
	out->requests_failed = jnum0(o, "requests_failed");
	out->requests_cancelled = jnum0(o, "requests_cancelled");
	out->prompt_tokens = jnum0(o, "prompt_tokens");
	out->generation_tokens = jnum0(o, "generation_tokens");
	out->worker_restarts = jnum0(o, "worker_restarts");
	o = json_object_get(root, "window");
	out->window_s = jnum(o, "window_s");
	out->win_requests = jnum0(o, "requests");
	out->win_ttft_ok = jnum0(o, "ttft_ok");
	out->win_tpot_ok = jnum0(o, "tpot_ok");
	out->win_slo_ok = jnum0(o, "slo_ok");
	jquant(json_object_get(o, "ttft_ms"), &out->ttft);
	jquant(json_object_get(o, "tpot_ms"), &out->tpot);
	jquant(json_object_get(o, "e2e_ms"), &out->e2e);
	json_array_foreach(json_object_get(root, "partitions"), i, v)
	{
		if (out->n_parts == MODEL_MAX_PARTS)
			break;
		if (json_is_object(v))
			parse_partition(v, &out->parts[out->n_parts++]);
	}
	json_array_foreach(json_object_get(root, "links"), i, v)
	{
		struct model_link *l;

		if (out->n_links == MODEL_MAX_LINKS)
			break;
		if (!json_is_object(v))
			continue;
		l = &out->links[out->n_links++];
		jstr(v, "prefill", l->prefill, sizeof(l->prefill));
		jstr(v, "decode", l->decode, sizeof(l->decode));
		jstr(v, "transport", l->transport, sizeof(l->transport));
		l->bytes = jnum0(v, "bytes");
		l->transfers = jnum0(v, "transfers");
		l->failures = jnum0(v, "failures");
		l->lease_expiries = jnum0(v, "lease_expiries");
	}
	json_array_foreach(json_object_get(root, "requests"), i, v)
	{
		if (out->n_reqs == MODEL_MAX_REQS)
			break;
		if (json_is_object(v))
			parse_request(v, &out->reqs[out->n_reqs++]);
	}
	json_decref(root);
	return 0;
}

int model_parse_event(const char *json, struct model_event *e)
{
	json_t *root = json_loads(json ? json : "", JSON_ALLOW_NUL, NULL);
	double seq;

	memset(e, 0, sizeof(*e));
	if (!json_is_object(root)) {
		json_decref(root);
		return -EINVAL;
	}
	seq = jnum(root, "seq");
	e->seq = isnan(seq) ? -1 : (long long)seq;
	e->time = jnum0(root, "time");
	jstr(root, "type", e->type, sizeof(e->type));
	jstr(root, "level", e->level, sizeof(e->level));
	jstr(root, "partition", e->partition, sizeof(e->partition));
	jstr(root, "message", e->message, sizeof(e->message));
	if (!e->level[0])
		snprintf(e->level, sizeof(e->level), "info");
	json_decref(root);
	return 0;
}

/* --- the model ------------------------------------------------------------------ */

void model_init(struct model *m)
{
	memset(m, 0, sizeof(*m));
	/* Nothing known yet: the numbers that may be absent read as such. */
	m->cur.slo_ttft_ms = m->cur.slo_tpot_ms = m->cur.slo_attainment = NAN;
	m->cur.window_s = NAN;
	m->cur.ttft = m->cur.tpot = m->cur.e2e = (struct model_quantiles){ NAN, NAN, NAN };
	m->conn = MODEL_CONNECTING;
	m->ev_last_seq = -1;
	m->sort = MODEL_SORT_AGE;
}

static struct model_link_hist *link_hist(struct model *m, const struct model_link *l)
{
	struct model_link_hist *h;

	for (unsigned i = 0; i < m->n_lh; i++)
		if (!strcmp(m->lh[i].prefill, l->prefill) && !strcmp(m->lh[i].decode, l->decode))
			return &m->lh[i];
	if (m->n_lh == MODEL_MAX_LINKS)
		return NULL;
	h = &m->lh[m->n_lh++];
	memset(h, 0, sizeof(*h));
	snprintf(h->prefill, sizeof(h->prefill), "%s", l->prefill);
	snprintf(h->decode, sizeof(h->decode), "%s", l->decode);
	return h;
}

/* Push the value of a counter, and the per-second rate since the previous sample into RATE. */
static void push_counter(struct model_ring *c, struct model_ring *rate, double t, double v,
			 double scale)
{
	double t0, v0;

	if (model_ring_get(c, 0, &t0, &v0) && t > t0 && rate)
		model_ring_push(rate, t, (v >= v0 ? v - v0 : v) / (t - t0) * scale);
	model_ring_push(c, t, v);
}

void model_update(struct model *m, const struct model_status *s, double t)
{
	if (&m->cur != s)
		m->cur = *s;
	m->have = true;
	m->t_cur = t;
	push_counter(&m->c_requests, &m->rps, t, s->requests, 1);
	push_counter(&m->c_gen_tokens, &m->tps, t, s->generation_tokens, 1);
	model_ring_push(&m->ttft_p50, t, s->ttft.p50);
	model_ring_push(&m->ttft_p90, t, s->ttft.p90);
	model_ring_push(&m->ttft_p99, t, s->ttft.p99);
	model_ring_push(&m->tpot_p50, t, s->tpot.p50);
	model_ring_push(&m->tpot_p90, t, s->tpot.p90);
	model_ring_push(&m->tpot_p99, t, s->tpot.p99);
	model_ring_push(&m->att_ttft, t, model_attainment_ttft(m));
	model_ring_push(&m->att_tpot, t, model_attainment_tpot(m));
	for (unsigned i = 0; i < s->n_links; i++) {
		struct model_link_hist *h = link_hist(m, &s->links[i]);

		if (!h)
			continue;
		push_counter(&h->bytes, &h->gbps, t, s->links[i].bytes, 1e-9);
		push_counter(&h->transfers, NULL, t, s->links[i].transfers, 1);
	}
}

void model_set_conn(struct model *m, enum model_conn c, const char *sock, const char *err, double t)
{
	if (c != m->conn) {
		if (c == MODEL_UP && m->conn == MODEL_DOWN)
			m->reconnects++;
		m->conn = c;
		m->conn_since = t;
	}
	if (sock)
		snprintf(m->sock, sizeof(m->sock), "%s", sock);
	snprintf(m->conn_err, sizeof(m->conn_err), "%s", err ? err : "");
}

void model_add_event(struct model *m, const struct model_event *e)
{
	if (e->seq >= 0 && e->seq <= m->ev_last_seq)
		return;
	if (e->seq >= 0)
		m->ev_last_seq = e->seq;
	m->ev[m->ev_head] = *e;
	m->ev_head = (m->ev_head + 1) % MODEL_MAX_EVENTS;
	if (m->ev_count < MODEL_MAX_EVENTS)
		m->ev_count++;
}

const struct model_event *model_event_get(const struct model *m, unsigned i)
{
	if (i >= m->ev_count)
		return NULL;
	return &m->ev[(m->ev_head + MODEL_MAX_EVENTS - 1 - i) % MODEL_MAX_EVENTS];
}

double model_rps(const struct model *m, double span)
{
	return model_ring_rate(&m->c_requests, span);
}

double model_tps(const struct model *m, double span)
{
	return model_ring_rate(&m->c_gen_tokens, span);
}

double model_attainment_ttft(const struct model *m)
{
	if (!m->have || m->cur.win_requests <= 0)
		return NAN;
	return m->cur.win_ttft_ok / m->cur.win_requests;
}

double model_attainment_tpot(const struct model *m)
{
	if (!m->have || m->cur.win_requests <= 0)
		return NAN;
	return m->cur.win_tpot_ok / m->cur.win_requests;
}

double model_hit_rate(const struct model_partition *p)
{
	return p->pc_queries > 0 ? p->pc_hits / p->pc_queries : NAN;
}

const struct model_link_hist *model_link_hist(const struct model *m, const struct model_link *l)
{
	for (unsigned i = 0; i < m->n_lh; i++)
		if (!strcmp(m->lh[i].prefill, l->prefill) && !strcmp(m->lh[i].decode, l->decode))
			return &m->lh[i];
	return NULL;
}

double model_link_gbps(const struct model_link_hist *h, double span)
{
	return h ? model_ring_rate(&h->bytes, span) * 1e-9 : NAN;
}

double model_link_tps(const struct model_link_hist *h, double span)
{
	return h ? model_ring_rate(&h->transfers, span) : NAN;
}

const char *model_part_state(const struct model_partition *p)
{
	if (!strcmp(p->state, "circuit_open") ||
	    (!strcmp(p->state, "down") && strcasestr(p->why, "circuit")))
		return "circuit open";
	return p->state[0] ? p->state : "?";
}

/* --- the requests table ------------------------------------------------------------- */

const char *model_sort_name(enum model_sort k)
{
	static const char *const names[MODEL_SORT_COUNT] = {
		[MODEL_SORT_AGE] = "age",	  [MODEL_SORT_ID] = "id",
		[MODEL_SORT_TENANT] = "tenant",	  [MODEL_SORT_STATE] = "state",
		[MODEL_SORT_PROMPT] = "prompt",	  [MODEL_SORT_OUTPUT] = "output",
		[MODEL_SORT_TTFT] = "ttft",	  [MODEL_SORT_TPOT] = "tpot",
		[MODEL_SORT_PARTITION] = "where",
	};

	return k < MODEL_SORT_COUNT ? names[k] : "?";
}

bool model_request_matches(const struct model_request *r, const char *filter)
{
	if (!filter || !filter[0])
		return true;
	return strcasestr(r->id, filter) || strcasestr(r->tenant, filter) ||
	       strcasestr(r->state, filter) || strcasestr(r->partition, filter) ||
	       strcasestr(r->finish, filter);
}

/* In-flight states sort before finished ones when sorting by state. */
static int state_rank(const char *s)
{
	static const char *const order[] = { "queued", "prefilling", "transferring", "decoding",
					     "done",   "failed",     "cancelled" };

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (!strcmp(s, order[i]))
			return (int)i;
	return 99;
}

/* NAN sorts last whichever the direction. */
static int cmp_num(double a, double b)
{
	if (isnan(a) || isnan(b))
		return isnan(a) - isnan(b);
	return a < b ? -1 : a > b;
}

static int cmp_req(const void *pa, const void *pb, void *ctx)
{
	const struct model *m = ctx;
	const struct model_request *a = &m->cur.reqs[*(const unsigned *)pa];
	const struct model_request *b = &m->cur.reqs[*(const unsigned *)pb];
	int c = 0, nan_last = 0;

	switch (m->sort) {
	case MODEL_SORT_AGE:
		c = cmp_num(a->age_ms, b->age_ms);
		break;
	case MODEL_SORT_ID:
		c = strcmp(a->id, b->id);
		break;
	case MODEL_SORT_TENANT:
		c = strcmp(a->tenant, b->tenant);
		break;
	case MODEL_SORT_STATE:
		c = state_rank(a->state) - state_rank(b->state);
		break;
	case MODEL_SORT_PROMPT:
		c = cmp_num(a->prompt_tokens, b->prompt_tokens);
		break;
	case MODEL_SORT_OUTPUT:
		c = cmp_num(a->output_tokens, b->output_tokens);
		break;
	case MODEL_SORT_TTFT:
		nan_last = isnan(a->ttft_ms) - isnan(b->ttft_ms);
		c = cmp_num(a->ttft_ms, b->ttft_ms);
		break;
	case MODEL_SORT_TPOT:
		nan_last = isnan(a->tpot_ms) - isnan(b->tpot_ms);
		c = cmp_num(a->tpot_ms, b->tpot_ms);
		break;
	case MODEL_SORT_PARTITION:
		c = strcmp(a->partition, b->partition);
		break;
	default:
		break;
	}
	if (nan_last)
		return nan_last;
	if (m->sort_desc)
		c = -c;
	if (c == 0) /* stable: keep the daemon's order (in flight first, newest first) */
		c = (int)*(const unsigned *)pa - (int)*(const unsigned *)pb;
	return c;
}

size_t model_requests_view(const struct model *m, unsigned *idx, size_t max)
{
	size_t n = 0;

	for (unsigned i = 0; i < m->cur.n_reqs && n < max; i++)
		if (model_request_matches(&m->cur.reqs[i], m->filter))
			idx[n++] = i;
	qsort_r(idx, n, sizeof(*idx), cmp_req, (void *)m);
	return n;
}

double model_request_percentile(const struct model *m, int which, double p)
{
	double v[MODEL_MAX_REQS];
	size_t n = 0;

	for (unsigned i = 0; i < m->cur.n_reqs; i++) {
		double x = which ? m->cur.reqs[i].tpot_ms : m->cur.reqs[i].ttft_ms;

		if (!isnan(x))
			v[n++] = x;
	}
	return model_percentile(v, n, p);
}

const struct model_partition *model_find_partition(const struct model *m, const char *name)
{
	for (unsigned i = 0; i < m->cur.n_parts; i++)
		if (!strcmp(m->cur.parts[i].name, name))
			return &m->cur.parts[i];
	return NULL;
}

const struct model_request *model_find_request(const struct model *m, const char *id)
{
	for (unsigned i = 0; i < m->cur.n_reqs; i++)
		if (!strcmp(m->cur.reqs[i].id, id))
			return &m->cur.reqs[i];
	return NULL;
}
