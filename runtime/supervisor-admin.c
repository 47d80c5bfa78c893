// SPDX-License-Identifier: MIT
/*
 * The supervisor's operator side (docs/api.md): /health with canaries,
 * /v1/status, the admin routes on admin.sock with their authorization and
 * audit log, and the event stream.
 *
 * Authorization is by the connection's peer credentials only: root, the
 * daemon's own uid, or a member (primary or supplementary gid) of
 * api.admin_group.  Every request to an /admin/ route is audited, allowed
 * or not, with the HTTP status it got.
 *
 * Events live in a ring; subscribers remember the next sequence number they
 * need and are fed from sup_admin_tick() (never from inside a log call).
 */
#include "runtime/supervisor-impl.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#define SUB "admin"

static double wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- events --------------------------------------------------------------------- */

void sup_event(struct sup *S, const char *type, int part, int level, const char *fmt, ...)
{
	struct sup_event *e;
	va_list ap;

	if (!S->ev)
		return;
	e = &S->ev[S->ev_seq % SUP_EVENT_RING];
	e->seq = S->ev_seq++;
	e->time = wall_now();
	snprintf(e->type, sizeof(e->type), "%s", type);
	e->part = part;
	e->level = level;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

/* Warnings and errors of the supervisor become "log" events; a reload keeps its first error. */
static void log_tap(void *ctx, enum duet_log_level level, const char *subsys, const char *msg)
{
	struct sup *S = ctx;

	if (S->reloading && !S->reload_err[0] && level <= DUET_LOG_ERROR)
		snprintf(S->reload_err, sizeof(S->reload_err), "%s", msg);
	sup_event(S, "log", -1, (int)level, "%s: %s", subsys, msg);
}

static const char *level_name(int level)
{
	return level <= DUET_LOG_ALERT	 ? "alert"
	       : level <= DUET_LOG_ERROR ? "error"
	       : level <= DUET_LOG_WARN	 ? "warn"
	       : level <= DUET_LOG_INFO	 ? "info"
					 : "debug";
}

/* One event as an SSE frame into S->out. */
static int event_frame(struct sup *S, const struct sup_event *e)
{
	json_t *o = json_pack("{sI sf ss ss ss}", "seq", (json_int_t)e->seq, "time", e->time,
			      "type", e->type, "level", level_name(e->level), "message", e->msg);
	char *txt;
	int ret = -ENOMEM;

	if (!o)
		return -ENOMEM;
	if (e->part >= 0 && (unsigned)e->part < S->n_w)
		json_object_set_new(o, "partition", json_string(S->cfg->partitions[e->part].name));
	txt = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));
	json_decref(o);
	if (!txt)
		return -ENOMEM;
	oai_buf_reset(&S->out);
	if (!sup_buf_append(&S->out, "event: ", 7) &&
	    !sup_buf_append(&S->out, e->type, strlen(e->type)) &&
	    !sup_buf_append(&S->out, "\ndata: ", 7) && !sup_buf_append(&S->out, txt, strlen(txt)) &&
	    !sup_buf_append(&S->out, "\n\n", 2))
		ret = 0;
	free(txt);
	return ret;
}

static void subs_feed(struct sup *S, uint64_t now)
{
	uint64_t oldest = S->ev_seq > SUP_EVENT_RING ? S->ev_seq - SUP_EVENT_RING : 0;

	for (unsigned i = 0; i < SUP_MAX_SUBS; i++) {
		struct sup_sub *sub = S->subs[i];
		bool wrote = false;

		if (!sub || !sub->s)
			continue;
		if (sub->next_seq < oldest)
			sub->next_seq = oldest; /* a slow reader loses the overwritten ones */
		for (; sub->next_seq < S->ev_seq; sub->next_seq++) {
			if (event_frame(S, &S->ev[sub->next_seq % SUP_EVENT_RING]))
				break;
			if (http_stream_write(sub->s, S->out.data, S->out.len))
				break;
			wrote = true;
		}
		if (wrote) {
			sub->last_ms = now;
		} else if (now - sub->last_ms >= SUP_KEEPALIVE_MS) {
			http_stream_write(sub->s, ": keepalive\n\n", 13);
			sub->last_ms = now;
		}
	}
}

void sup_admin_close(struct sup *S, struct sup_sub *sub)
{
	for (unsigned i = 0; i < SUP_MAX_SUBS; i++)
		if (S->subs[i] == sub)
			S->subs[i] = NULL;
	duet_free(sub);
}

/* --- canaries, drains ----------------------------------------------------------- */

void sup_admin_tick(struct sup *S)
{
	uint64_t now = sup_now_ms();

	for (unsigned i = 0; i < S->n_w; i++) {
		struct sup_worker *w = &S->w[i];

		if (w->ready && !S->draining && S->cfg->api.canary_interval_ms &&
		    !w->canary_sent_ms && now >= w->canary_due_ms)
			sup_submit_canary(S, w);
		if (w->drain && !w->running && !w->drained_said) {
			w->drained_said = true;
			sup_event(S, "drained", (int)i, DUET_LOG_INFO,
				  "partition %s: drained (no requests left)",
				  S->cfg->partitions[i].name);
		}
	}
	subs_feed(S, now);
}

const char *sup_worker_state(const struct sup *S, const struct sup_worker *w)
{
	(void)S;
	if (!w->pid)
		return "down";
	if (!w->ready)
		return "starting";
	if (w->drain)
		return w->running ? "draining" : "drained";
	return "up";
}

const char *sup_health_why(struct sup *S, char *buf, size_t cap)
{
	uint64_t now = sup_now_ms(), iv = (uint64_t)S->cfg->api.canary_interval_ms;

	if (S->draining)
		return "shutting down";
	for (unsigned i = 0; i < S->n_w; i++) {
		const struct sup_worker *w = &S->w[i];
		const char *name = S->cfg->partitions[i].name;

		if (!w->ready)
			return w->why[0] ? w->why : "worker not ready";
		if (w->breaker_until_ms) {
			snprintf(buf, cap,
				 "partition %s: circuit breaker open after %u failures in a minute; "
				 "probing with canaries",
				 name, w->fails);
			return buf;
		}
		if (!iv)
			continue;
		if (w->canary_why[0]) {
			snprintf(buf, cap, "partition %s: %s", name, w->canary_why);
			return buf;
		}
		if (!w->canary_ok_ms) {
			snprintf(buf, cap, "partition %s: waiting for its first canary", name);
			return buf;
		}
		if (now - w->canary_ok_ms > 3 * iv) {
			snprintf(buf, cap, "partition %s: no canary went through for %.1f s", name,
				 (double)(now - w->canary_ok_ms) / 1000.0);
			return buf;
		}
	}
	for (unsigned i = 0; i < S->n_links; i++) {
		const struct sup_link *l = &S->links[i];

		if (!l->up) {
			snprintf(buf, cap, "KV link %s -> %s down: %s",
				 S->cfg->partitions[l->pre].name, S->cfg->partitions[l->dec].name,
				 l->why);
			return buf;
		}
	}
	return NULL;
}

/* --- records -------------------------------------------------------------------- */

static double ms_between(uint64_t a_ns, uint64_t b_ns)
{
	return (double)(b_ns - a_ns) / 1e6;
}

double sup_req_ttft_ms(const struct sup_req *r)
{
	return r->t_first_ns ? ms_between(r->t_submit_ns, r->t_first_ns) : -1;
}

double sup_req_tpot_ms(const struct sup_req *r)
{
	return r->n_gen > 1 ? ms_between(r->t_first_ns, r->t_last_ns) / (r->n_gen - 1) : -1;
}

void sup_record(struct sup *S, const struct sup_req *r, const char *state, const char *finish)
{
	const struct sup_resp *p = r->resp;
	uint64_t now = sup_now_ns();
	struct sup_rec *rec;
	struct sup_win *win;
	double ttft = sup_req_ttft_ms(r), tpot = sup_req_tpot_ms(r);
	double e2e = ms_between(r->t_submit_ns, now);

	if (!p)
		return;
	if (!strcmp(state, "done"))
		S->n_ok++;
	else if (!strcmp(state, "cancelled"))
		S->n_cancelled++;
	else
		S->n_failed++;
	S->prompt_tokens += r->index == 0 ? r->n_prompt : 0;
	S->gen_tokens += r->n_gen;

	rec = &S->recent[S->recent_head];
	S->recent_head = (S->recent_head + 1) % SUP_RECENT;
	if (S->n_recent < SUP_RECENT)
		S->n_recent++;
	*rec = (struct sup_rec){ .worker = r->worker,
				 .state = state,
				 .finish = finish,
				 .n_prompt = r->n_prompt,
				 .n_gen = r->n_gen,
				 .max_tokens = r->max_tokens,
				 .ttft_ms = ttft,
				 .tpot_ms = tpot,
				 .e2e_ms = e2e,
				 .queue_ms = r->queue_ms,
				 .prefill_ms = r->prefill_ms,
				 .decode_ms = r->decode_ms,
				 .xfer_ms = r->xfer_ms,
				 .pre = r->job ? r->pre : -1,
				 .t_done = wall_now() };
	snprintf(rec->tenant, sizeof(rec->tenant), "%s", p->tenant);
	if (p->n > 1)
		snprintf(rec->id, sizeof(rec->id), "%s/%u", p->idstr, r->index);
	else
		snprintf(rec->id, sizeof(rec->id), "%s", p->idstr);

	if (strcmp(state, "done"))
		return; /* the SLO window holds finished requests */
	win = &S->win[S->win_head];
	S->win_head = (S->win_head + 1) % SUP_WINDOW;
	if (S->n_win < SUP_WINDOW)
		S->n_win++;
	*win = (struct sup_win){ now / 1000000u, (float)ttft, (float)tpot, (float)e2e };
}

/* --- JSON helpers --------------------------------------------------------------- */

static json_t *num_or_null(double v)
{
	return v < 0 ? json_null() : json_real(v);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* {"p50","p90","p99"} of the window's values of one field (null each when none). */
static json_t *percentiles(struct sup *S, uint64_t since_ms, int field)
{
	size_t n = 0;
	const double qs[3] = { 0.50, 0.90, 0.99 };
	const char *names[3] = { "p50", "p90", "p99" };
	json_t *o = json_object();

	for (unsigned i = 0; i < S->n_win; i++) {
		const struct sup_win *w = &S->win[i];
		float v = field == 0 ? w->ttft_ms : field == 1 ? w->tpot_ms : w->e2e_ms;

		if (w->t_ms >= since_ms && v >= 0)
			S->scratch[n++] = v;
	}
	qsort(S->scratch, n, sizeof(double), cmp_double);
	for (int k = 0; k < 3; k++) {
		/* Nearest rank. */
		size_t rank = (size_t)(qs[k] * (double)n + 0.999999);

		json_object_set_new(o, names[k],
				    n ? json_real(S->scratch[rank ? rank - 1 : 0]) : json_null());
	}
	return o;
}

static json_t *window_json(struct sup *S)
{
	uint64_t now = sup_now_ms(),
		 since = now > SUP_WINDOW_S * 1000u ? now - SUP_WINDOW_S * 1000u : 0;
	double ttft_slo = S->cfg->slo.ttft_ms, tpot_slo = S->cfg->slo.tpot_ms;
	json_int_t n = 0, ttft_ok = 0, tpot_ok = 0, slo_ok = 0;

	for (unsigned i = 0; i < S->n_win; i++) {
		const struct sup_win *w = &S->win[i];
		bool a, b;

		if (w->t_ms < since)
			continue;
		n++;
		a = w->ttft_ms >= 0 && w->ttft_ms <= ttft_slo;
		b = w->tpot_ms < 0 || w->tpot_ms <= tpot_slo; /* one token: no TPOT to miss */
		ttft_ok += a;
		tpot_ok += b;
		slo_ok += a && b;
	}
	return json_pack("{si sI sI sI sI so so so}", "window_s", SUP_WINDOW_S, "requests", n,
			 "ttft_ok", ttft_ok, "tpot_ok", tpot_ok, "slo_ok", slo_ok, "ttft_ms",
			 percentiles(S, since, 0), "tpot_ms", percentiles(S, since, 1), "e2e_ms",
			 percentiles(S, since, 2));
}

static json_t *partition_json(struct sup *S, unsigned i)
{
	const struct sup_worker *w = &S->w[i];
	const struct cfg_partition *cp = &S->cfg->partitions[i];
	const struct ipc_stats *st = &w->st, *pv = &w->st_prev;
	double step_ms = 0, util = 0;
	uint32_t free_blocks = 0;
	json_t *o;

	if (st->t_ns && pv->t_ns && st->steps > pv->steps) {
		step_ms = (double)(st->step_ns_total - pv->step_ns_total) /
			  (double)(st->steps - pv->steps) / 1e6;
		if (st->t_ns > pv->t_ns)
			util = (double)(st->step_ns_total - pv->step_ns_total) /
			       (double)(st->t_ns - pv->t_ns);
		if (util > 1)
			util = 1;
	}
	if (st->kv_total >= st->kv_used + st->kv_cached + st->kv_leased)
		free_blocks = st->kv_total - st->kv_used - st->kv_cached - st->kv_leased;
	o = json_pack("{ss ss s[s] ss ss sI sI sI sI sI}", "name", cp->name, "role",
		      cfg_role_name(cp->role), "devices", cp->device, "cpus",
		      cp->cpus[0] ? cp->cpus : "all", "state", sup_worker_state(S, w), "pid",
		      (json_int_t)w->pid, "restarts", (json_int_t)w->restarts, "running",
		      (json_int_t)w->running, "waiting", (json_int_t)st->waiting, "batch",
		      (json_int_t)st->running);
	if (!o)
		return NULL;
	json_object_set_new(o, "why",
			    w->why[0]	       ? json_string(w->why)
			    : w->canary_why[0] ? json_string(w->canary_why)
					       : json_null());
	json_object_set_new(o, "kv",
			    json_pack("{sI sI sI sI sI sI}", "block_tokens",
				      (json_int_t)w->block_tokens, "total",
				      (json_int_t)st->kv_total, "used", (json_int_t)st->kv_used,
				      "cached", (json_int_t)st->kv_cached, "leased",
				      (json_int_t)st->kv_leased, "free", (json_int_t)free_blocks));
	json_object_set_new(o, "prefix_cache",
			    json_pack("{sI sI}", "queries", (json_int_t)st->prefix_queries, "hits",
				      (json_int_t)st->prefix_hits));
	json_object_set_new(o, "breaker",
			    json_pack("{sb sI}", "open", w->breaker_until_ms != 0, "failures",
				      (json_int_t)w->fails));
	json_object_set_new(o, "steps", json_integer((json_int_t)st->steps));
	json_object_set_new(o, "step_ms", json_real(step_ms));
	json_object_set_new(o, "utilization", json_real(util));
	return o;
}

static json_t *live_request_json(struct sup *S, const struct sup_resp *p)
{
	const struct sup_req *c0 = p->choice[0];
	uint64_t now = sup_now_ns();
	uint32_t out = 0;
	bool any = false;
	json_t *o;

	for (unsigned i = 0; i < p->n; i++) {
		out += p->choice[i]->n_gen;
		any |= p->choice[i]->n_gen > 0;
	}
	o = json_pack("{ss ss ss ss sI sI sI sf}", "id", p->idstr, "tenant", p->tenant, "state",
		      c0->phase == SUP_QUEUED	 ? "queued"
		      : c0->phase == SUP_LEASING || c0->phase == SUP_PREFILL ? "prefilling"
		      : c0->phase == SUP_DECODE && !any			       ? "transferring"
		      : any							       ? "decoding"
										       : "prefilling",
		      "partition",
		      S->cfg->partitions[c0->worker].name, "prompt_tokens",
		      (json_int_t)c0->n_prompt, "output_tokens", (json_int_t)out, "max_tokens",
		      (json_int_t)c0->max_tokens, "age_ms", ms_between(p->t_submit_ns, now));
	if (!o)
		return NULL;
	json_object_set_new(o, "ttft_ms", num_or_null(sup_req_ttft_ms(c0)));
	json_object_set_new(o, "tpot_ms", num_or_null(sup_req_tpot_ms(c0)));
	json_object_set_new(o, "e2e_ms", json_null());
	json_object_set_new(o, "queue_ms", json_null());
	json_object_set_new(o, "prefill_ms", json_null());
	json_object_set_new(o, "transfer_ms", json_null());
	json_object_set_new(o, "decode_ms", json_null());
	json_object_set_new(o, "finish_reason", json_null());
	if (p->n > 1)
		json_object_set_new(o, "n", json_integer(p->n));
	return o;
}

static json_t *recent_request_json(struct sup *S, const struct sup_rec *r)
{
	json_t *o;

	o = json_pack("{ss ss ss ss sI sI sI sf}", "id", r->id, "tenant", r->tenant, "state",
		      r->state, "partition", S->cfg->partitions[r->worker].name, "prompt_tokens",
		      (json_int_t)r->n_prompt, "output_tokens", (json_int_t)r->n_gen, "max_tokens",
		      (json_int_t)r->max_tokens, "age_ms",
		      (wall_now() - r->t_done) * 1000.0 + r->e2e_ms);
	if (!o)
		return NULL;
	json_object_set_new(o, "ttft_ms", num_or_null(r->ttft_ms));
	json_object_set_new(o, "tpot_ms", num_or_null(r->tpot_ms));
	json_object_set_new(o, "e2e_ms", num_or_null(r->e2e_ms));
	json_object_set_new(o, "queue_ms", num_or_null(r->queue_ms));
	json_object_set_new(o, "prefill_ms", num_or_null(r->prefill_ms));
	json_object_set_new(o, "transfer_ms", num_or_null(r->xfer_ms));
	json_object_set_new(o, "decode_ms", num_or_null(r->decode_ms));
	if (r->pre >= 0)
		json_object_set_new(o, "prefill_partition",
				    json_string(S->cfg->partitions[r->pre].name));
	json_object_set_new(o, "finish_reason", json_string(r->finish));
	return o;
}

/* In flight (each answer once), then the recent ones, newest first; at most max. */
static json_t *requests_json(struct sup *S, size_t max)
{
	json_t *a = json_array();

	for (const struct sup_req *r = S->reqs; a && r && json_array_size(a) < max; r = r->next) {
		const struct sup_resp *p = r->resp;
		bool first = true;

		if (!p)
			continue;
		/* The first choice of p still in the table stands for p. */
		for (const struct sup_req *q = S->reqs; q != r; q = q->next)
			first &= q->resp != p;
		if (first)
			json_array_append_new(a, live_request_json(S, p));
	}
	for (unsigned k = 0; a && k < S->n_recent && json_array_size(a) < max; k++) {
		unsigned i = (S->recent_head + SUP_RECENT - 1 - k) % SUP_RECENT;

		json_array_append_new(a, recent_request_json(S, &S->recent[i]));
	}
	return a;
}

/* The prefill -> decode KV links and what went over them. */
static json_t *links_json(struct sup *S)
{
	json_t *a = json_array();

	for (unsigned i = 0; a && i < S->n_links; i++) {
		const struct sup_link *l = &S->links[i];
		json_t *o = json_pack(
			"{ss ss ss ss sI sI sI sI}", "prefill", S->cfg->partitions[l->pre].name,
			"decode", S->cfg->partitions[l->dec].name, "transport",
			cfg_xfer_driver(S->cfg) ? cfg_xfer_driver(S->cfg) : "?", "state",
			l->up ? "up" : "down", "bytes", (json_int_t)l->bytes, "transfers",
			(json_int_t)l->transfers, "failures", (json_int_t)l->failures,
			"lease_expiries", (json_int_t)S->w[l->dec].leases_expired);

		if (o) {
			json_object_set_new(o, "why", l->up ? json_null() : json_string(l->why));
			/*
			 * Writes go layer by layer while the prompt is computed, so a
			 * transfer's window (first write -> last completion) spans its
			 * prefill: gbps is the rate KV flowed over those windows, and
			 * handoff_ms_mean what the transfer adds to TTFT after the prefill.
			 */
			json_object_set_new(o, "gbps",
					    json_real(l->xfer_ns ? (double)l->bytes / (double)l->xfer_ns
								 : 0.0));
			json_object_set_new(o, "transfer_ms_mean",
					    json_real(l->transfers ? (double)l->xfer_ns / 1e6 /
									     (double)l->transfers
								   : 0.0));
			json_object_set_new(o, "handoff_ms_mean",
					    json_real(l->handoffs ? l->handoff_ms / (double)l->handoffs
								  : 0.0));
		}
		json_array_append_new(a, o);
	}
	return a;
}

/* --- authorization and audit ---------------------------------------------------- */

static bool authorized(const struct sup *S, const struct http_req *req)
{
	if (req->uid == 0 || req->uid == geteuid())
		return true;
	if (S->admin_gid == (gid_t)-1)
		return false;
	if (req->gid == S->admin_gid)
		return true;
	for (unsigned i = 0; i < req->n_groups; i++)
		if (req->groups[i] == S->admin_gid)
			return true;
	return false;
}

static void audit(struct sup *S, const struct http_req *req, int status, const char *outcome)
{
	char line[768], ts[32];
	struct timespec now;
	struct tm tm;
	int n;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	n = snprintf(line, sizeof(line), "%s uid=%u gid=%u pid=%d socket=%s %s %.200s %d %s\n", ts,
		     (unsigned)req->uid, (unsigned)req->gid, (int)req->pid,
		     req->is_admin ? "admin" : "api", req->method, req->path, status, outcome);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1, line[n - 1] = '\n';
	log_info(SUB, "audit: %.*s", n - 1, line);
	if (S->audit_fd >= 0 && write(S->audit_fd, line, (size_t)n) != n)
		log_warn(SUB, "audit log write failed: %s", strerror(errno));
}

/* --- handlers ------------------------------------------------------------------- */

static void send_json(struct sup *S, struct http_resp *resp, int status, json_t *o)
{
	char *txt = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;

	json_decref(o);
	if (!txt) {
		http_resp_error(resp, 500, "NOMEM", "out of memory");
		return;
	}
	http_resp_set(resp, status, "application/json", txt, strlen(txt));
	free(txt);
}

static void handle_health(struct sup *S, struct http_resp *resp)
{
	char buf[384];
	const char *why = sup_health_why(S, buf, sizeof(buf));
	const char *status = S->draining ? "draining" : !S->up ? "loading" : "unavailable";

	if (!why) {
		http_resp_set(resp, 200, "application/json", "{\"status\":\"ok\"}\n", 16);
		return;
	}
	send_json(S, resp, 503, json_pack("{ss ss}", "status", status, "reason", why));
}

static void handle_status(struct sup *S, const struct http_req *req, struct http_resp *resp)
{
	char buf[384];
	const char *why = sup_health_why(S, buf, sizeof(buf));
	json_t *o, *parts;
	json_int_t restarts = 0;

	parts = json_array();
	for (unsigned i = 0; parts && i < S->n_w; i++)
		json_array_append_new(parts, partition_json(S, i));
	o = json_pack("{ss ss ss ss s{sb so} sf sf sb s{si si sf}}", "name", S->cfg->name,
		      "version", SUP_VERSION, "model", S->model_name, "state",
		      S->draining ? "draining"
		      : S->up	  ? "up"
				  : "starting",
		      "health", "ok", !why, "reason", why ? json_string(why) : json_null(),
		      "uptime_s", (double)(sup_now_ms() - S->start_ms) / 1000.0, "now", wall_now(),
		      "admin", req->is_admin && authorized(S, req), "slo", "ttft_ms",
		      S->cfg->slo.ttft_ms, "tpot_ms", S->cfg->slo.tpot_ms, "attainment",
		      S->cfg->slo.attainment);
	if (!o) {
		json_decref(parts);
		http_resp_error(resp, 500, "NOMEM", "out of memory");
		return;
	}
	for (unsigned i = 0; i < S->n_w; i++)
		restarts += S->w[i].restarts;
	json_object_set_new(
		o, "totals",
		json_pack("{sI sI sI sI sI sI sI}", "requests", (json_int_t)S->n_requests,
			  "requests_ok", (json_int_t)S->n_ok, "requests_failed",
			  (json_int_t)S->n_failed, "requests_cancelled", (json_int_t)S->n_cancelled,
			  "prompt_tokens", (json_int_t)S->prompt_tokens, "generation_tokens",
			  (json_int_t)S->gen_tokens, "worker_restarts", restarts));
	json_object_set_new(o, "window", window_json(S));
	json_object_set_new(o, "partitions", parts);
	json_object_set_new(o, "links", links_json(S));
	json_object_set_new(o, "requests", requests_json(S, SUP_RECENT));
	send_json(S, resp, 200, o);
}

/* The "partition" field of a JSON body: its index, or -1 with the answer set. */
static int body_partition(struct sup *S, const struct http_req *req, struct http_resp *resp,
			  int *status)
{
	json_error_t jerr;
	json_t *o = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	const char *name = o ? json_string_value(json_object_get(o, "partition")) : NULL;
	int idx = -1;

	if (!o) {
		*status = 400;
		http_resp_error(resp, 400, "BADJSON", "body: %s", jerr.text);
		return -1;
	}
	if (!name) {
		*status = 400;
		http_resp_error(resp, 400, "BADPARAM",
				"partition: a string naming a partition is required");
		json_decref(o);
		return -1;
	}
	for (unsigned i = 0; i < S->n_w; i++)
		if (!strcmp(S->cfg->partitions[i].name, name))
			idx = (int)i;
	if (idx < 0) {
		*status = 404;
		http_resp_error(resp, 404, "NOTFOUND", "partition: no partition named '%.64s'",
				name);
	}
	json_decref(o);
	return idx;
}

static int admin_drain(struct sup *S, const struct http_req *req, struct http_resp *resp,
		       bool drain, char *outcome, size_t cap)
{
	int status = 200, idx = body_partition(S, req, resp, &status);
	struct sup_worker *w;
	const char *name;

	if (idx < 0) {
		snprintf(outcome, cap, "refused");
		return status;
	}
	w = &S->w[idx];
	name = S->cfg->partitions[idx].name;
	if (w->drain != drain) {
		w->drain = drain;
		w->drained_said = false;
		log_info(SUB, "partition %s: %s by uid %u", name, drain ? "draining" : "undrained",
			 (unsigned)req->uid);
		sup_event(S, drain ? "drain" : "undrain", idx, DUET_LOG_INFO,
			  "partition %s: %s (uid %u)", name,
			  drain ? "draining" : "taking requests again", (unsigned)req->uid);
	}
	snprintf(outcome, cap, "ok partition=%s", name);
	send_json(S, resp, 200,
		  json_pack("{ss ss}", "partition", name, "state", sup_worker_state(S, w)));
	return 200;
}

static int admin_cancel(struct sup *S, const struct http_req *req, struct http_resp *resp,
			const char *id, char *outcome, size_t cap)
{
	struct sup_resp *p = NULL;

	for (struct sup_req *r = S->reqs; r && !p; r = r->next)
		if (r->resp && !strcmp(r->resp->idstr, id))
			p = r->resp;
	if (!p) {
		snprintf(outcome, cap, "not found id=%.64s", id);
		http_resp_error(resp, 404, "NOTFOUND", "no request '%.64s' is in flight", id);
		return 404;
	}
	for (unsigned i = 0; i < p->n; i++)
		sup_send_cancel(S, p->choice[i], IPC_CANCEL_ADMIN);
	log_info(SUB, "request %s cancelled by uid %u", p->idstr, (unsigned)req->uid);
	sup_event(S, "cancel", p->choice[0]->worker, DUET_LOG_INFO, "request %s cancelled (uid %u)",
		  p->idstr, (unsigned)req->uid);
	snprintf(outcome, cap, "ok id=%s", p->idstr);
	send_json(S, resp, 200, json_pack("{ss sb}", "id", p->idstr, "cancelled", 1));
	return 200;
}

static json_t *split_list(const struct oai_buf *b)
{
	json_t *a = json_array();
	const char *p = b->len ? b->data : NULL;

	while (a && p && *p) {
		const char *e = strstr(p, ", ");
		size_t n = e ? (size_t)(e - p) : strlen(p);

		json_array_append_new(a, json_stringn(p, n));
		p = e ? e + 2 : NULL;
	}
	return a;
}

static int admin_reload(struct sup *S, struct http_resp *resp, char *outcome, size_t cap)
{
	struct oai_buf applied = { 0 }, rejected = { 0 };
	int ret = sup_reload(S, &applied, &rejected), status = 200;

	if (ret) {
		status = 400;
		snprintf(outcome, cap, "failed");
		http_resp_error(resp, 400, "BADCONFIG", "reload: %s",
				S->reload_err[0] ? S->reload_err : duet_strerror(ret));
	} else {
		snprintf(outcome, cap, "ok%s%s", rejected.len ? " rejected=" : "",
			 rejected.len ? rejected.data : "");
		send_json(S, resp, 200,
			  json_pack("{sb so so}", "reloaded", 1, "applied", split_list(&applied),
				    "rejected", split_list(&rejected)));
	}
	oai_buf_free(&applied);
	oai_buf_free(&rejected);
	return status;
}

static int admin_events(struct sup *S, struct http_resp *resp, char *outcome, size_t cap)
{
	struct sup_sub *sub;
	unsigned slot = SUP_MAX_SUBS;

	for (unsigned i = 0; i < SUP_MAX_SUBS && slot == SUP_MAX_SUBS; i++)
		if (!S->subs[i])
			slot = i;
	if (slot == SUP_MAX_SUBS) {
		snprintf(outcome, cap, "refused: too many subscribers");
		http_resp_error(resp, 429, "TOOMANY", "at most %d event subscribers", SUP_MAX_SUBS);
		return 429;
	}
	sub = duet_calloc(1, sizeof(*sub));
	if (!sub) {
		http_resp_error(resp, 500, "NOMEM", "out of memory");
		return 500;
	}
	sub->tag = SUP_USER_SUB;
	sub->next_seq = S->ev_seq > SUP_EVENT_REPLAY ? S->ev_seq - SUP_EVENT_REPLAY : 0;
	if (http_resp_stream(resp, 200, "text/event-stream", sub, &sub->s)) {
		duet_free(sub);
		http_resp_error(resp, 500, "NOMEM", "out of memory");
		return 500;
	}
	S->subs[slot] = sub;
	subs_feed(S, sup_now_ms());
	snprintf(outcome, cap, "ok subscribed");
	return 200;
}

/* One /admin/ route: its answer and HTTP status; outcome says what happened for the audit. */
static int admin_dispatch(struct sup *S, const struct http_req *req, struct http_resp *resp,
			  char *outcome, size_t cap)
{
	const char *path = req->path + strlen("/admin/");
	bool get = !strcmp(req->method, "GET"), post = !strcmp(req->method, "POST");
	const char *allow = NULL;

	if (!strcmp(path, "drain") || !strcmp(path, "undrain")) {
		if (post)
			return admin_drain(S, req, resp, path[0] == 'd', outcome, cap);
		allow = "POST";
	} else if (!strcmp(path, "requests")) {
		if (get) {
			snprintf(outcome, cap, "ok");
			send_json(S, resp, 200,
				  json_pack("{so}", "requests", requests_json(S, 4096)));
			return 200;
		}
		allow = "GET";
	} else if (!strncmp(path, "requests/", 9) && strlen(path) > 16 &&
		   !strcmp(path + strlen(path) - 7, "/cancel")) {
		char id[64];
		size_t n = strlen(path) - 9 - 7;

		if (!post) {
			allow = "POST";
		} else if (n == 0 || n >= sizeof(id)) {
			snprintf(outcome, cap, "bad id");
			http_resp_error(resp, 404, "NOTFOUND", "no such request");
			return 404;
		} else {
			memcpy(id, path + 9, n);
			id[n] = '\0';
			return admin_cancel(S, req, resp, id, outcome, cap);
		}
	} else if (!strcmp(path, "reload")) {
		if (post)
			return admin_reload(S, resp, outcome, cap);
		allow = "POST";
	} else if (!strcmp(path, "shutdown")) {
		if (post) {
			snprintf(outcome, cap, "ok");
			send_json(S, resp, 202, json_pack("{sb}", "shutdown", 1));
			if (!S->draining) {
				char why[64];

				snprintf(why, sizeof(why), "POST /admin/shutdown by uid %u",
					 (unsigned)req->uid);
				sup_start_drain(S, why);
			}
			return 202;
		}
		allow = "POST";
	} else if (!strcmp(path, "events")) {
		if (get)
			return admin_events(S, resp, outcome, cap);
		allow = "GET";
	}
	if (allow) {
		snprintf(outcome, cap, "bad method");
		http_resp_bad_method(resp, req, allow);
		return 405;
	}
	snprintf(outcome, cap, "no such route");
	http_resp_not_found(resp, req);
	return 404;
}

bool sup_admin_route(struct sup *S, const struct http_req *req, struct http_resp *resp)
{
	bool get = !strcmp(req->method, "GET");
	char outcome[160] = "";
	int status;

	if (!strcmp(req->path, "/health") || !strcmp(req->path, "/v1/status")) {
		if (!get)
			http_resp_bad_method(resp, req, "GET");
		else if (req->path[1] == 'h')
			handle_health(S, resp);
		else
			handle_status(S, req, resp);
		return true;
	}
	if (strncmp(req->path, "/admin/", 7) != 0)
		return false;
	if (!req->is_admin) {
		http_resp_error(resp, 403, "PERMISSION",
				"admin routes are served on admin.sock only (%s)", S->admin_path);
		audit(S, req, 403, "denied: api.sock");
		return true;
	}
	if (!authorized(S, req)) {
		http_resp_error(resp, 403, "PERMISSION",
				"uid %u is not allowed to use the admin API (needs root, uid %u "
				"or group %s)",
				(unsigned)req->uid, (unsigned)geteuid(),
				S->cfg->api.admin_group[0] ? S->cfg->api.admin_group
							   : "(the daemon's)");
		audit(S, req, 403, "denied: not authorized");
		return true;
	}
	status = admin_dispatch(S, req, resp, outcome, sizeof(outcome));
	audit(S, req, status, outcome);
	return true;
}

/* --- set-up --------------------------------------------------------------------- */

int sup_admin_init(struct sup *S)
{
	const char *g = S->cfg->api.admin_group;
	char path[CFG_PATH_MAX + 32];
	struct group *gr = g[0] ? getgrnam(g) : NULL;

	S->win = duet_calloc(SUP_WINDOW, sizeof(*S->win));
	S->scratch = duet_calloc(SUP_WINDOW, sizeof(*S->scratch));
	S->ev = duet_calloc(SUP_EVENT_RING, sizeof(*S->ev));
	if (!S->win || !S->scratch || !S->ev)
		return -ENOMEM;
	/* The socket's group: the configured one when it exists, else ours. */
	S->admin_gid = gr ? gr->gr_gid : getegid();
	if (S->cfg->api.audit_log[0])
		snprintf(path, sizeof(path), "%s", S->cfg->api.audit_log);
	else
		snprintf(path, sizeof(path), "%s/audit.log", S->sock_dir);
	S->audit_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (S->audit_fd < 0) {
		int ret = -errno;

		log_error(SUB, "audit log %s: %s", path, strerror(-ret));
		return ret;
	}
	log_info(SUB, "admin requests are audited to %s", path);
	duet_log_set_tap(log_tap, S);
	return 0;
}

void sup_admin_fini(struct sup *S)
{
	duet_log_set_tap(NULL, NULL);
	if (S->audit_fd >= 0)
		close(S->audit_fd);
	S->audit_fd = -1;
	for (unsigned i = 0; i < SUP_MAX_SUBS; i++) {
		duet_free(S->subs[i]);
		S->subs[i] = NULL;
	}
	duet_free(S->win);
	duet_free(S->scratch);
	duet_free(S->ev);
	S->win = NULL;
	S->scratch = NULL;
	S->ev = NULL;
}
