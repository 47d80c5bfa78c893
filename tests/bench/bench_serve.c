// SPDX-License-Identifier: MIT
/*
 * Serving benchmark: time to first token (TTFT), time per output token
 * (TPOT) and inter-token latency (ITL) over api.sock under a load that mixes
 * decoding clients with long prompts.
 *
 *   bench_serve SOCKET [options]      (bench_serve --help lists them)
 *   bench_serve SOCKET --sweep RATES --profile P --slo-ttft-ms X --slo-tpot-ms Y --json F
 *   bench_serve SOCKET --profile P --unloaded N --json F     (unloaded latency)
 *   bench_serve --overlay [LABEL=]SWEEP.json ... --plot-dir D  (configurations in one plot)
 *   bench_serve --selftest
 *
 * Two modes.  Trace mode (--profile, --trace, --rate, --sweep or
 * --write-trace): requests come from a trace (tests/bench/serve_lib.h:
 * generated from a named profile and a seed, or a JSONL file), each sent at
 * its arrival time, open loop; at each rate of a sweep the trace is run
 * whole (generated anew at that rate, or a file's arrivals scaled to it) and
 * reported as vLLM's and SGLang's serving benchmarks do: request and output
 * token throughput, TTFT / TPOT / ITL / e2e mean, p50, p90, p99, SLO
 * attainment; over the sweep, goodput (the highest rate at which --target
 * of the requests meet both SLOs).  JSON with --json; SVG plots with
 * gnuplot (attainment and TPOT p99 vs rate) next to it.  The context length
 * the lengths are scaled to is asked of the server (see probe_context).
 * Where the server reports its own per-phase times ("timings" next to
 * "usage": queue, prefill, transfer, decode), they are joined to each
 * request and summarized per rate; the JSON keeps one record per request.
 * --unloaded N sends a trace's first N requests one at a time (the latency
 * without load that SLOs are derived from); --overlay draws several sweeps'
 * JSON files in one figure each (bench_goodput.sh's configurations).
 *
 * Otherwise, the interference mode below.  Request classes, run side by side:
 *   decode  --decoders K closed-loop clients, each streaming one completion
 *           after another: a short prompt of random words (a different one
 *           every time, so that the prefix cache hides no work) and
 *           --decode-tokens output tokens;
 *   long    --long-rate R requests/s arriving open loop (Poisson, --seed),
 *           and/or --long-clients C closed-loop clients: prompts of exactly
 *           --long-tokens token ids (drawn from what POST /v1/tokenize makes
 *           of a word list, so they are valid for any vocabulary) and
 *           --long-out output tokens.
 * Every request is POST /v1/completions, streamed, temperature 0, on a
 * connection of its own.  The API has no ignore_eos; --ban-token ID (for
 * Duet's synthetic models the EOS id is 2) sends logit_bias {ID: -100}
 * instead, and requests that still stop early are counted.
 *
 * Timing: the load runs --warmup seconds, then a window of --duration
 * seconds; requests are written only before the window ends and those in
 * flight then are waited for.  A request counts when it was written inside
 * the window (an open-loop arrival: when it was due); output tokens/s counts
 * every token that arrived inside it.
 * Per request: the time of the write, of every SSE data frame carrying text
 * (a token's arrival) and of [DONE].  TTFT = first token - write; TPOT =
 * (last token - first token) / (tokens - 1), tokens from the usage chunk
 * (stream_options.include_usage); ITL = every gap between two frames with
 * text.  Percentiles are nearest-rank.
 *
 * Errors never stop the run: a refused connection, a non-200 answer, an SSE
 * error frame, a stream cut before [DONE] or a read that times out
 * (--timeout) is counted under its kind.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tests/bench/serve_lib.h"
#include "tui/client.h"

/* Outcomes of a request: name in the report and the JSON (0: it succeeded). */
#define BS_ERRORS(X)                                                                  \
	X(NONE, "ok")                                                                 \
	X(CONNECT, "connect")	      /* socket() or connect() failed */              \
	X(WRITE, "write")	      /* the request could not be written */          \
	X(TIMEOUT, "timeout")	      /* a read waited --timeout seconds */           \
	X(CUT, "cut")		      /* connection closed before the answer ended */ \
	X(PROTOCOL, "protocol")	      /* malformed HTTP or SSE, or no [DONE] */       \
	X(HTTP_429, "http_429")	      /* queue full */                                \
	X(HTTP_4XX, "http_4xx")	      /* other 4xx */                                 \
	X(HTTP_5XX, "http_5xx")	      /* 5xx (and any other non-200 status) */        \
	X(ERROR_FRAME, "error_frame") /* data: {"error":...} inside the stream */

enum bs_err {
#define X(id, name) BS_ERR_##id,
	BS_ERRORS(X)
#undef X
		BS_NERR
};

static const char *const bs_err_name[BS_NERR] = {
#define X(id, name) name,
	BS_ERRORS(X)
#undef X
};

enum { CLS_DECODE, CLS_LONG, NCLS };
static const char *const cls_name[NCLS] = { "decode", "long" };

struct opts {
	const char *sock;
	double duration, warmup;     /* s */
	int decoders, decode_tokens; /* clients, output tokens each request */
	double long_rate;	     /* requests/s, open loop; 0 = none */
	int long_clients;	     /* closed-loop long clients */
	int long_tokens, long_out;   /* prompt and output tokens of a long request */
	int long_pool;		     /* threads sending the open-loop arrivals */
	uint64_t seed;
	int ban_token;	/* -1 = none */
	double timeout; /* s, per read or write */
	const char *json_path;
	const char *model; /* NULL = the first of GET /v1/models */
	/* Trace mode (any of profile, trace, write_trace, sweep, rate): */
	const char *profile;	 /* chat, summarize, agent, mixed */
	const char *trace_path;	 /* replay this JSONL trace */
	const char *write_trace; /* write the generated trace here and exit */
	const char *sweep;	 /* "R1,R2,..." or "LO..HI" */
	const char *plot_dir;	 /* default: the directory of json_path */
	double rate;		 /* requests/s of a single run */
	double burstiness;	 /* gamma shape of the gaps, 1 = Poisson */
	double sweep_tol;	 /* bisection: stop when hi - lo <= this, requests/s */
	int sweep_max;		 /* bisection: at most this many rates */
	int max_context;	 /* tokens; 0 = ask the server */
	int num_requests;	 /* per rate, 0 = --duration decides */
	int senders;		 /* threads sending a trace's requests */
	int unloaded;		 /* > 0: this many requests one at a time (unloaded latency) */
	bool overlay;		 /* the arguments are sweep JSON files to overlay */
	bool rescore;		 /* the argument is a sweep JSON file to judge again */
	double slo_ttft_ms, slo_tpot_ms, target;
};

static struct opts O = {
	.duration = 30,
	.warmup = 5,
	.decoders = 4,
	.decode_tokens = 128,
	.long_tokens = 512,
	.long_out = 8,
	.long_pool = 64,
	.seed = 1,
	.ban_token = -1,
	.timeout = 120,
	.burstiness = 1,
	.sweep_tol = 0.1,
	.sweep_max = 8,
	.senders = 256,
	.target = 0.9,
};

static const char *profile_name(void)
{
	return O.profile ? O.profile : "mixed";
}

static bool trace_mode(void)
{
	return O.profile || O.trace_path || O.write_trace || O.sweep || O.rate > 0 || O.unloaded;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	double d = t - now_s();
	struct timespec ts;

	if (d <= 0)
		return;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* printf onto b (struct client_buf, tui/client.h); 0, -EOVERFLOW past 255 bytes, or -ENOMEM. */
__attribute__((format(printf, 2, 3))) static int buf_printf(struct client_buf *b, const char *fmt,
							    ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -EOVERFLOW;
	return client_buf_add(b, tmp, (size_t)n);
}

/* ---------------------------------------------------------------------------
 * One request and its stream of server-sent events.
 * ------------------------------------------------------------------------- */
struct req {
	int cls;
	double t_sched; /* when it was due (open loop) or written (closed loop) */
	double t_write, t_done;
	struct sv_dvec tok_t; /* arrival time of every data frame with text */
	int usage_tokens;  /* completion_tokens of the usage chunk; 0 = none seen */
	int usage_prompt;  /* its prompt_tokens; 0 = none seen */
	bool has_srv;	   /* the server sent "timings" for choice 0 */
	struct sv_phases srv;
	char part[32], pre_part[32]; /* its "partition" and "prefill_partition" ("": none) */
	bool done_seen;		     /* data: [DONE] */
	bool finish_stop;	     /* finish_reason "stop" */
	enum bs_err err;
	char err_code[128];	 /* what went wrong: the error object's code and message, ... */
	enum client_stage stage; /* how far the exchange got */
	int status;		 /* HTTP status; 0 = no answer */
	double t_read;		 /* when the body bytes being parsed were read */
	struct client_sse sse;	 /* a 200 answer's event stream */
	struct client_buf body;	 /* a non-200 (or not streamed) answer's body */
};

static void req_error_code(struct req *r, json_t *root)
{
	json_t *e = json_object_get(root, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));

	if (code || msg)
		snprintf(r->err_code, sizeof(r->err_code), "%s: %s", code ?: "-", msg ?: "");
}

static double jms(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

/*
 * The server's per-phase times of choice 0: a top-level "timings" array next
 * to "usage", one object per choice; any number may be null.  Older daemons
 * send none: has_srv stays false.
 */
static void req_timings(struct req *r, json_t *root)
{
	json_t *a = json_object_get(root, "timings"), *t = NULL;

	for (size_t i = 0; !t && i < json_array_size(a); i++)
		if (json_integer_value(json_object_get(json_array_get(a, i), "index")) == 0)
			t = json_array_get(a, i);
	if (!json_is_object(t))
		return;
	r->has_srv = true;
	r->srv = (struct sv_phases){ jms(t, "queue_ms"), jms(t, "prefill_ms"),
				     jms(t, "transfer_ms"), jms(t, "decode_ms") };
	snprintf(r->part, sizeof(r->part), "%s",
		 json_string_value(json_object_get(t, "partition")) ?: "");
	snprintf(r->pre_part, sizeof(r->pre_part), "%s",
		 json_string_value(json_object_get(t, "prefill_partition")) ?: "");
}

/* One complete SSE event: its data lines joined with '\n'. */
static void sse_event(struct req *r, const char *data, double t)
{
	json_t *root, *ch, *c0, *text, *usage;
	json_error_t jerr;
	const char *fin;

	if (r->done_seen || r->err)
		return; /* nothing may follow [DONE] or an error frame */
	if (!strcmp(data, "[DONE]")) {
		r->done_seen = true;
		r->t_done = t;
		return;
	}
	root = json_loads(data, JSON_ALLOW_NUL, &jerr);
	if (!root) {
		static int told;

		r->err = BS_ERR_PROTOCOL;
		snprintf(r->err_code, sizeof(r->err_code), "bad JSON in a data frame");
		if (!__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED))
			fprintf(stderr, "bench_serve: data frame is not JSON (%s): %.300s\n",
				jerr.text, data);
		return;
	}
	if (json_object_get(root, "error")) {
		r->err = BS_ERR_ERROR_FRAME;
		req_error_code(r, root);
		r->t_done = t;
		goto out;
	}
	ch = json_object_get(root, "choices");
	c0 = json_array_get(ch, 0);
	text = json_object_get(c0, "text");
	if (!text)
		text = json_object_get(json_object_get(c0, "delta"), "content");
	if (json_string_length(text))
		sv_dvec_push(&r->tok_t, t);
	fin = json_string_value(json_object_get(c0, "finish_reason"));
	if (fin && !strcmp(fin, "stop"))
		r->finish_stop = true;
	usage = json_object_get(root, "usage");
	if (json_is_object(usage)) {
		r->usage_tokens =
			(int)json_integer_value(json_object_get(usage, "completion_tokens"));
		r->usage_prompt = (int)json_integer_value(json_object_get(usage, "prompt_tokens"));
	}
	req_timings(r, root);
out:
	json_decref(root);
}

/* client_sse.on_event: every event with data, at the time of the read that completed it. */
static int req_event(void *ctx, const char *event, const char *data)
{
	struct req *r = ctx;

	if (data[0]) /* an event without data lines carries nothing */
		sse_event(r, data, r->t_read);
	return 0;
}

/* client_req.on_body of a stream: a 200 answer's body bytes, as they are read. */
static int req_body(void *ctx, const char *p, size_t n)
{
	struct req *r = ctx;

	r->t_read = now_s();
	return client_sse_feed(&r->sse, p, n);
}

static void req_init(struct req *r, int cls)
{
	memset(r, 0, sizeof(*r));
	r->cls = cls;
	r->sse.on_event = req_event;
	r->sse.ctx = r;
}

static void req_fini(struct req *r)
{
	sv_dvec_free(&r->tok_t);
	client_sse_free(&r->sse);
	client_buf_free(&r->body);
}

/* After the answer ended (or failed): classify what the request got. */
static void req_settle(struct req *r, int io_err)
{
	int s = r->status;

	if (r->err)
		return;
	if (io_err == -ETIMEDOUT) {
		r->err = BS_ERR_TIMEOUT;
		snprintf(r->err_code, sizeof(r->err_code), "no answer within %g s", O.timeout);
	} else if (io_err == -EPROTO) {
		r->err = BS_ERR_PROTOCOL;
		snprintf(r->err_code, sizeof(r->err_code), "malformed HTTP answer");
	} else if (io_err) {
		r->err = BS_ERR_CUT;
		snprintf(r->err_code, sizeof(r->err_code), "%s", strerror(-io_err));
	} else if (s != 200) {
		json_t *root = r->body.p ? json_loads(r->body.p, JSON_ALLOW_NUL, NULL) : NULL;

		r->err = s == 429	       ? BS_ERR_HTTP_429
			 : s >= 400 && s < 500 ? BS_ERR_HTTP_4XX
					       : BS_ERR_HTTP_5XX;
		snprintf(r->err_code, sizeof(r->err_code), "HTTP %d", s);
		if (root)
			req_error_code(r, root);
		json_decref(root);
	} else if (!r->done_seen) {
		r->err = BS_ERR_PROTOCOL;
		snprintf(r->err_code, sizeof(r->err_code), "stream ended without [DONE]");
	}
}

/* client_req.on_stage: the send time is taken right before the write. */
static void req_stage(void *ctx, enum client_stage stage)
{
	struct req *r = ctx;

	r->stage = stage;
	if (stage == CLIENT_SEND)
		r->t_write = now_s();
}

/*
 * One exchange on a connection of its own (tui/client.c): method, path and
 * body (NULL for none); --timeout bounds every wait, a cut answer is
 * -ECONNRESET.  ON_BODY (NULL: none) takes a 200 answer's body with r as its
 * context; any other body goes to r->body.  Returns the status (>= 100) or a
 * negative errno.
 */
static int req_call(struct req *r, const char *method, const char *path, const char *body,
		    client_body_fn on_body)
{
	const struct client_req q = {
		.sock = O.sock,
		.method = method,
		.path = path,
		.body = body,
		.idle_ms = O.timeout * 1e3 < INT_MAX ? (int)ceil(O.timeout * 1e3) : 0,
		.on_body = on_body,
		.ctx = r,
		.agent = "bench_serve",
		.status_out = &r->status,
		.on_stage = req_stage,
		.cut_reset = true,
	};

	r->t_write = now_s(); /* a request that cannot connect counts when it tried */
	return client_request(&q, &r->body);
}

/*
 * A streamed request: r->t_write is set just before the write; a 200 event
 * stream goes through the SSE parser.  A failed connect or write is
 * classified here.  Returns 0 or the negative errno of the answer
 * (-ETIMEDOUT when a read timed out, -ECONNRESET when it was cut short).
 */
static int exchange(struct req *r, const char *method, const char *path, const char *body)
{
	int ret = req_call(r, method, path, body, req_body);

	if (ret >= 100) {
		r->status = ret;
		ret = 0;
	} else if (ret == -ENOMEM && r->stage == CLIENT_CONNECT) { /* building the request */
		r->err = BS_ERR_WRITE;
		snprintf(r->err_code, sizeof(r->err_code), "out of memory");
	} else if (ret < 0 && r->stage != CLIENT_RECV) {
		r->err = r->stage == CLIENT_CONNECT ? BS_ERR_CONNECT : BS_ERR_WRITE;
		snprintf(r->err_code, sizeof(r->err_code), "%s", strerror(-ret));
	}
	if (!r->t_done)
		r->t_done = now_s();
	return ret;
}

/* ---------------------------------------------------------------------------
 * Prompts.
 * ------------------------------------------------------------------------- */
/* Token ids that make up long prompts (from POST /v1/tokenize of sv_words). */
static int32_t *pool_ids;
static size_t n_pool_ids;
static char *model_json; /* O.model as a JSON string */

static void add_sampling(struct client_buf *b, int max_tokens)
{
	buf_printf(b,
		   ",\"max_tokens\":%d,\"temperature\":0,\"stream\":true,"
		   "\"stream_options\":{\"include_usage\":true}",
		   max_tokens);
	if (O.ban_token >= 0)
		buf_printf(b, ",\"logit_bias\":{\"%d\":-100}", O.ban_token);
	client_buf_add(b, "}", 1);
}

/* The JSON body of a request of class cls; rng varies the prompt. */
static char *request_body(int cls, uint64_t *rng)
{
	struct client_buf b = { 0 };

	client_buf_add(&b, "{\"model\":", 9);
	client_buf_add(&b, model_json, strlen(model_json));
	if (cls == CLS_DECODE) {
		client_buf_add(&b, ",\"prompt\":\"", 11);
		for (int i = 0; i < 6; i++) {
			const char *w = sv_words[sv_rng_next(rng) % SV_NWORDS];

			if (i)
				client_buf_add(&b, " ", 1);
			client_buf_add(&b, w, strlen(w));
		}
		client_buf_add(&b, "\"", 1);
		add_sampling(&b, O.decode_tokens);
	} else {
		client_buf_add(&b, ",\"prompt\":[", 11);
		for (int i = 0; i < O.long_tokens; i++)
			buf_printf(&b, i ? ",%d" : "%d",
				   (int)pool_ids[sv_rng_next(rng) % n_pool_ids]);
		client_buf_add(&b, "]", 1);
		add_sampling(&b, O.long_out);
	}
	return b.p;
}

/* ---------------------------------------------------------------------------
 * Results per class, folded in as requests end.
 * ------------------------------------------------------------------------- */
struct cls_stats {
	pthread_mutex_t mu;
	struct sv_run *sv; /* the counted requests (no SLO: INFINITY) */
	long early_stop, late;
	long err[BS_NERR];
	char last_err[BS_NERR][128];
	long tokens_in_window; /* token frames that arrived inside the window */
	double late_max;       /* s an arrival waited for a sender thread */
};

static struct cls_stats stats[NCLS];
static double win_start, win_end;

static void record(struct req *r)
{
	struct cls_stats *s = &stats[r->cls];
	/* Open-loop arrivals count by when they were due, however late they went out. */
	bool counted = r->t_sched >= win_start && r->t_sched < win_end;
	const struct sv_rec rec = { .ok = !r->err,
				    .t_sent = r->t_write,
				    .t_done = r->t_done,
				    .tok_t = r->tok_t.v,
				    .n_tok = r->tok_t.n,
				    .tokens = r->usage_tokens,
				    .has_srv = r->has_srv,
				    .srv = r->srv };
	double wait = r->t_write - r->t_sched;

	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < rec.n_tok; i++)
		if (rec.tok_t[i] >= win_start && rec.tok_t[i] < win_end)
			s->tokens_in_window++;
	if (!counted)
		goto out;
	if (sv_run_add(s->sv, &rec))
		fprintf(stderr, "bench_serve: out of memory: a request's figures are lost\n");
	if (wait > s->late_max)
		s->late_max = wait;
	if (wait > 0.010)
		s->late++;
	if (r->err) {
		s->err[r->err]++;
		snprintf(s->last_err[r->err], sizeof(s->last_err[0]), "%s", r->err_code);
	} else if (r->finish_stop) {
		s->early_stop++;
	}
out:
	pthread_mutex_unlock(&s->mu);
}

/* Send one request of class cls due at t_sched, record it. */
static void run_one(int cls, uint64_t *rng, double t_sched)
{
	struct req r;
	char *body = request_body(cls, rng);
	int ret;

	req_init(&r, cls);
	if (!body) {
		fprintf(stderr, "bench_serve: out of memory\n");
		return;
	}
	ret = exchange(&r, "POST", "/v1/completions", body);
	r.t_sched = t_sched > 0 ? t_sched : r.t_write;
	req_settle(&r, ret);
	record(&r);
	free(body);
	req_fini(&r);
	/* A client whose requests fail must not spin on the failure. */
	if (r.err)
		usleep(50000);
}

/* ---------------------------------------------------------------------------
 * Load: closed-loop clients, and open-loop arrivals served by a thread pool.
 * ------------------------------------------------------------------------- */
struct client {
	pthread_t th;
	int cls;
	uint64_t rng;
};

static void *client_main(void *arg)
{
	struct client *c = arg;

	while (now_s() < win_end)
		run_one(c->cls, &c->rng, 0);
	return NULL;
}

/* Arrival times not yet taken by a sender thread. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct sv_dvec due;
	size_t head;
	bool closed;
	uint64_t next_rng; /* each arrival's prompt comes from its own seed */
} arrivals = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *arrival_main(void *arg)
{
	uint64_t rng = O.seed;
	double t = *(double *)arg;

	for (;;) {
		t += -log(sv_rng_unit(&rng)) / O.long_rate;
		if (t >= win_end)
			break;
		sleep_until(t);
		pthread_mutex_lock(&arrivals.mu);
		sv_dvec_push(&arrivals.due, t);
		pthread_cond_signal(&arrivals.cv);
		pthread_mutex_unlock(&arrivals.mu);
	}
	pthread_mutex_lock(&arrivals.mu);
	arrivals.closed = true;
	pthread_cond_broadcast(&arrivals.cv);
	pthread_mutex_unlock(&arrivals.mu);
	return NULL;
}

static void *sender_main(void *arg)
{
	for (;;) {
		double t;
		uint64_t rng;

		pthread_mutex_lock(&arrivals.mu);
		while (arrivals.head == arrivals.due.n && !arrivals.closed)
			pthread_cond_wait(&arrivals.cv, &arrivals.mu);
		if (arrivals.head == arrivals.due.n) {
			pthread_mutex_unlock(&arrivals.mu);
			return NULL;
		}
		t = arrivals.due.v[arrivals.head++];
		rng = sv_rng_next(&arrivals.next_rng);
		pthread_mutex_unlock(&arrivals.mu);
		run_one(CLS_LONG, &rng, t);
	}
}

/* ---------------------------------------------------------------------------
 * Set-up: the model name and the token ids for long prompts.
 * ------------------------------------------------------------------------- */
static json_t *get_json(const char *method, const char *path, const char *body)
{
	struct req r;
	json_t *j = NULL;
	int ret;

	req_init(&r, CLS_DECODE);
	ret = req_call(&r, method, path, body, NULL);
	if (ret < 0)
		fprintf(stderr, "bench_serve: %s %s: %s\n", method, path, strerror(-ret));
	else if (ret != 200)
		fprintf(stderr, "bench_serve: %s %s: HTTP %d: %.200s\n", method, path, ret,
			r.body.p ? r.body.p : "");
	else if (!(j = json_loads(r.body.p ? r.body.p : "", JSON_ALLOW_NUL, NULL)))
		fprintf(stderr, "bench_serve: %s %s: answer is not JSON\n", method, path);
	req_fini(&r);
	return j;
}

static int setup(void)
{
	static char model[128];
	struct client_buf text = { 0 };
	json_t *j, *toks;

	if (!O.model) {
		j = get_json("GET", "/v1/models", NULL);
		if (!j)
			return -EIO;
		snprintf(model, sizeof(model), "%s",
			 json_string_value(json_object_get(
				 json_array_get(json_object_get(j, "data"), 0), "id"))
				 ?: "m");
		json_decref(j);
		O.model = model;
	}
	j = json_string(O.model);
	model_json = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
	json_decref(j);
	if (!model_json) {
		fprintf(stderr, "bench_serve: --model must be UTF-8\n");
		return -EINVAL;
	}
	if (O.long_rate <= 0 && O.long_clients <= 0 && !trace_mode())
		return 0;
	client_buf_add(&text, "{\"add_special\":false,\"prompt\":\"", 31);
	for (size_t i = 0; i < SV_NWORDS; i++)
		buf_printf(&text, "%s%s", i ? " " : "", sv_words[i]);
	client_buf_add(&text, ".\"}", 3);
	j = get_json("POST", "/v1/tokenize", text.p);
	free(text.p);
	if (!j)
		return -EIO;
	toks = json_object_get(j, "tokens");
	n_pool_ids = json_array_size(toks);
	pool_ids = calloc(n_pool_ids ? n_pool_ids : 1, sizeof(*pool_ids));
	for (size_t i = 0; pool_ids && i < n_pool_ids; i++)
		pool_ids[i] = (int32_t)json_integer_value(json_array_get(toks, i));
	json_decref(j);
	if (!n_pool_ids || !pool_ids) {
		fprintf(stderr, "bench_serve: POST /v1/tokenize gave no tokens\n");
		return -EIO;
	}
	return 0;
}

/* ---------------------------------------------------------------------------
 * Report.
 * ------------------------------------------------------------------------- */
static json_t *jnum(double x)
{
	return isnan(x) ? json_null() : json_real(round(x * 1000) / 1000);
}

static json_t *jsummary(const struct sv_stats *s, bool with_max)
{
	json_t *o = json_pack("{s:I,s:o,s:o,s:o,s:o}", "n", (json_int_t)s->n, "p50", jnum(s->p50),
			      "p90", jnum(s->p90), "p99", jnum(s->p99), "mean", jnum(s->mean));

	if (with_max)
		json_object_set_new(o, "max", jnum(s->max));
	return o;
}

static long cls_errors(const struct cls_stats *s)
{
	long n = 0;

	for (int e = 1; e < BS_NERR; e++)
		n += s->err[e];
	return n;
}

static bool cls_active(int c)
{
	return c == CLS_DECODE ? O.decoders > 0 : O.long_rate > 0 || O.long_clients > 0;
}

static int report(double t_drained)
{
	struct sv_result res[NCLS];
	json_t *root = NULL, *classes;
	long total_ok = 0;
	int ret = 0;

	for (int c = 0; c < NCLS; c++) {
		sv_run_result(stats[c].sv, O.duration, &res[c]);
		total_ok += (long)res[c].ok;
	}
	printf("bench_serve: model %s on %s; %.1f s window after %.1f s warm-up (drained %.1f s "
	       "later); seed %llu\n",
	       O.model, O.sock, O.duration, O.warmup, t_drained - win_end,
	       (unsigned long long)O.seed);
	printf("load:");
	if (O.decoders)
		printf(" decode: %d closed-loop clients x %d output tokens;", O.decoders,
		       O.decode_tokens);
	if (O.long_rate > 0)
		printf(" long: %.3g/s Poisson arrivals", O.long_rate);
	if (O.long_clients)
		printf("%s%d closed-loop clients",
		       O.long_rate > 0 ? " + " : " long: ", O.long_clients);
	if (cls_active(CLS_LONG))
		printf(" x %d prompt tokens -> %d output tokens", O.long_tokens, O.long_out);
	if (O.ban_token >= 0)
		printf(" (logit_bias %d: -100)", O.ban_token);
	printf("\n");
	printf("%-7s %5s %4s %5s %8s | %-31s | %-23s | %s\n", "class", "done", "err", "stop",
	       "out tok/s", "TTFT ms  p50     p90     p99    mean", "TPOT ms p50   p90   p99",
	       "ITL ms p50   p90   p99   max");
	for (int c = 0; c < NCLS; c++) {
		struct cls_stats *s = &stats[c];

		if (!cls_active(c))
			continue;
		printf("%-7s %5ld %4ld %5ld %8.1f | %7.1f %7.1f %7.1f %7.1f | %7.2f %5.2f %5.2f | "
		       "%6.2f %5.2f %5.2f %6.1f\n",
		       cls_name[c], (long)res[c].ok, cls_errors(s), s->early_stop,
		       s->tokens_in_window / O.duration, res[c].ttft.p50, res[c].ttft.p90,
		       res[c].ttft.p99, res[c].ttft.mean, res[c].tpot.p50, res[c].tpot.p90,
		       res[c].tpot.p99, res[c].itl.p50, res[c].itl.p90, res[c].itl.p99,
		       res[c].itl.max);
		for (int e = 1; e < BS_NERR; e++)
			if (s->err[e])
				printf("  %s errors: %ld %s (last: %s)\n", cls_name[c], s->err[e],
				       bs_err_name[e], s->last_err[e]);
		if (s->late)
			printf("  %s: %ld requests written > 10 ms after they were due (max %.1f "
			       "ms): raise --long-pool\n",
			       cls_name[c], s->late, s->late_max * 1e3);
	}
	if (!O.json_path)
		goto out;
	classes = json_object();
	root = json_pack("{s:s,s:s,s:{s:f,s:f,s:i,s:i,s:f,s:i,s:i,s:i,s:I,s:i},s:o}", "model",
			 O.model, "socket", O.sock, "load", "duration_s", O.duration, "warmup_s",
			 O.warmup, "decoders", O.decoders, "decode_tokens", O.decode_tokens,
			 "long_rate", O.long_rate, "long_clients", O.long_clients, "long_tokens",
			 O.long_tokens, "long_out", O.long_out, "seed", (json_int_t)O.seed,
			 "ban_token", O.ban_token, "classes", classes);
	for (int c = 0; c < NCLS; c++) {
		struct cls_stats *s = &stats[c];
		json_t *errs = json_object();

		if (!cls_active(c))
			continue;
		for (int e = 1; e < BS_NERR; e++)
			json_object_set_new(errs, bs_err_name[e], json_integer(s->err[e]));
		json_object_set_new(
			classes, cls_name[c],
			json_pack("{s:I,s:I,s:I,s:o,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:I}", "sent",
				  (json_int_t)res[c].sent, "requests", (json_int_t)res[c].ok,
				  "errors", (json_int_t)cls_errors(s), "errors_by_kind", errs,
				  "early_stop", (json_int_t)s->early_stop, "output_tokens",
				  (json_int_t)res[c].out_tokens, "output_tokens_per_s",
				  jnum(s->tokens_in_window / O.duration), "ttft_ms",
				  jsummary(&res[c].ttft, false), "tpot_ms",
				  jsummary(&res[c].tpot, false), "itl_ms",
				  jsummary(&res[c].itl, true), "e2e_ms",
				  jsummary(&res[c].e2e, false), "late", (json_int_t)s->late));
	}
	if (!root ||
	    json_dump_file(root, O.json_path, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) != 0) {
		fprintf(stderr, "bench_serve: cannot write %s\n", O.json_path);
		ret = 1;
	}
out:
	json_decref(root);
	return ret ? ret : total_ok ? 0 : 1;
}

/* ---------------------------------------------------------------------------
 * Trace mode: requests from a trace (generated from a profile, or a JSONL
 * file), sent open loop at their arrival times; per rate, the figures of
 * serve_lib and SLO attainment; over a sweep of rates, goodput.
 * ------------------------------------------------------------------------- */

/* An exchange whose answer, whatever its status, is JSON: NULL when it is not. */
static json_t *call_json(const char *method, const char *path, const char *body, int *status)
{
	struct req r;
	json_t *j = NULL;
	int ret;

	req_init(&r, CLS_DECODE);
	ret = req_call(&r, method, path, body, NULL);
	if (ret >= 100) {
		*status = ret;
		j = json_loads(r.body.p ? r.body.p : "", JSON_ALLOW_NUL, NULL);
	}
	req_fini(&r);
	return j;
}

/* call_json, but a 503 (a daemon just started may take no requests yet) is retried for 10 s. */
static json_t *call_ready(const char *method, const char *path, const char *body, int *status)
{
	json_t *j;

	for (int tries = 0;; tries++) {
		*status = 0;
		j = call_json(method, path, body, status);
		if (*status != 503 || tries == 50)
			return j;
		json_decref(j);
		usleep(200000);
	}
}

/* An error answer's message, or NULL. */
static const char *error_message(json_t *j)
{
	return json_string_value(json_object_get(json_object_get(j, "error"), "message"));
}

/*
 * The model's context length, which the API does not state: a request with
 * max_tokens over any context is refused with a message that names it.  When
 * api.max_tokens caps max_tokens below that ("an integer in [1, CAP]"), a
 * prompt of CAP + 1 tokens with max_tokens 1 tells instead (or, accepted,
 * shows that the context exceeds CAP + 1, which then bounds the trace).
 */
static int probe_context(void)
{
	struct client_buf b = { 0 };
	json_t *j;
	const char *msg;
	int status = 0, ctx = 0, cap = 0;

	buf_printf(&b, "{\"model\":%s,\"prompt\":[%d],\"max_tokens\":1048576}", model_json,
		   (int)pool_ids[0]);
	j = b.p ? call_ready("POST", "/v1/completions", b.p, &status) : NULL;
	free(b.p);
	msg = error_message(j);
	ctx = sv_context_of_error(msg, &cap);
	if (!ctx && !cap)
		fprintf(stderr, "bench_serve: context probe: HTTP %d: %s\n", status,
			msg ? msg : "no error message");
	json_decref(j);
	if (ctx || cap < 1)
		return ctx;
	b = (struct client_buf){ 0 };
	buf_printf(&b, "{\"model\":%s,\"max_tokens\":1,\"prompt\":[", model_json);
	for (int i = 0; i <= cap; i++)
		buf_printf(&b, i ? ",%d" : "%d", (int)pool_ids[0]);
	client_buf_add(&b, "]}", 2);
	j = b.p ? call_ready("POST", "/v1/completions", b.p, &status) : NULL;
	free(b.p);
	msg = error_message(j);
	ctx = sv_context_of_error(msg, NULL);
	if (!ctx && status != 200)
		fprintf(stderr, "bench_serve: context probe (%d tokens): HTTP %d: %s\n", cap + 1,
			status, msg ? msg : "no error message");
	json_decref(j);
	if (!ctx && status == 200) {
		fprintf(stderr,
			"bench_serve: the context exceeds %d tokens (api.max_tokens); "
			"using that (--max-context sets it)\n",
			cap + 1);
		ctx = cap + 1;
	}
	return ctx;
}

/* The request's body: token ids from the word pool, or the trace's text prompt. */
static char *trace_body(const struct sv_treq *q, size_t i, unsigned run)
{
	/* Prompts differ between runs (else a sweep's later rates would hit the prefix
	 * cache); within a run, the requests of a prefix group share their group's stream. */
	uint64_t rng = O.seed * 0x100000001B3ull ^ ((uint64_t)run << 40) ^
		       (q->group >= 0 ? 0x8000000000000000ull | (uint64_t)q->group : (uint64_t)i);
	struct client_buf b = { 0 };

	client_buf_add(&b, "{\"model\":", 9);
	client_buf_add(&b, model_json, strlen(model_json));
	if (q->prompt) {
		json_t *s = json_string(q->prompt);
		char *js = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;

		json_decref(s);
		if (!js) {
			free(b.p);
			return NULL;
		}
		client_buf_add(&b, ",\"prompt\":", 10);
		client_buf_add(&b, js, strlen(js));
		free(js);
	} else {
		sv_rng_next(&rng);
		client_buf_add(&b, ",\"prompt\":[", 11);
		for (int k = 0; k < q->prompt_tokens; k++)
			buf_printf(&b, k ? ",%d" : "%d",
				   (int)pool_ids[sv_rng_next(&rng) % n_pool_ids]);
		client_buf_add(&b, "]", 1);
	}
	add_sampling(&b, q->max_tokens);
	return b.p;
}

/* One request of a run, for the JSON's "per_request" (times ms, NaN: none). */
struct reqrec {
	double arrival_s; /* offset in the trace (--unloaded: when it was written) */
	int cls;	  /* enum sv_class, -1 unknown */
	int prompt_tokens, out_tokens;
	enum bs_err err;
	double ttft, tpot, e2e, max_itl;
	bool has_srv;
	struct sv_phases srv;
	char part[32], pre_part[32];
};

/* One run of a trace. */
static struct {
	const struct sv_trace *tr;
	unsigned run; /* 0, 1, ... over a sweep */
	double t0;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t released, taken; /* requests due so far; taken by a sender */
	struct sv_run *sv;
	double t_last; /* the last answer */
	long err[BS_NERR], early_stop, late;
	char last_err[BS_NERR][128];
	double late_max;
	bool serial;	     /* --unloaded: one request after another, arrivals ignored */
	struct reqrec *recs; /* one per request of the trace */
} T = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void trace_one(size_t i)
{
	const struct sv_treq *q = sv_trace_at(T.tr, i);
	double due = T.t0 + q->arrival_s;
	char *body = trace_body(q, i, T.run);
	struct sv_rec rec;
	struct req r;
	int ret;

	req_init(&r, CLS_DECODE);
	if (body) {
		ret = exchange(&r, "POST", "/v1/completions", body);
	} else {
		r.t_write = r.t_done = now_s();
		r.err = BS_ERR_WRITE;
		snprintf(r.err_code, sizeof(r.err_code), "out of memory");
		ret = 0;
	}
	req_settle(&r, ret);
	rec = (struct sv_rec){ .ok = !r.err,
			       .t_sent = r.t_write,
			       .t_done = r.t_done,
			       .tok_t = r.tok_t.v,
			       .n_tok = r.tok_t.n,
			       .tokens = r.usage_tokens,
			       .has_srv = r.has_srv,
			       .srv = r.srv };
	if (T.recs) {
		struct reqrec *x = &T.recs[i];

		*x = (struct reqrec){
			.arrival_s = T.serial ? r.t_write - T.t0 : q->arrival_s,
			.cls = q->cls,
			.prompt_tokens = r.usage_prompt ?: q->prompt_tokens,
			.out_tokens = r.usage_tokens ?: (int)r.tok_t.n,
			.err = r.err,
			.ttft = sv_rec_ttft_ms(&rec),
			.tpot = sv_rec_tpot_ms(&rec),
			.e2e = sv_rec_e2e_ms(&rec),
			.max_itl = sv_rec_max_itl_ms(&rec),
			.has_srv = r.has_srv,
			.srv = r.srv,
		};
		memcpy(x->part, r.part, sizeof(x->part));
		memcpy(x->pre_part, r.pre_part, sizeof(x->pre_part));
	}
	pthread_mutex_lock(&T.mu);
	if (sv_run_add(T.sv, &rec))
		fprintf(stderr, "bench_serve: out of memory: a request's figures are lost\n");
	if (r.err) {
		T.err[r.err]++;
		snprintf(T.last_err[r.err], sizeof(T.last_err[0]), "%s", r.err_code);
	}
	if (!r.err && r.finish_stop)
		T.early_stop++;
	if (!T.serial && r.t_write - due > 0.010)
		T.late++;
	if (!T.serial && r.t_write - due > T.late_max)
		T.late_max = r.t_write - due;
	if (r.t_done > T.t_last)
		T.t_last = r.t_done;
	pthread_mutex_unlock(&T.mu);
	free(body);
	req_fini(&r);
}

static void *trace_sender(void *arg)
{
	for (;;) {
		size_t i;

		pthread_mutex_lock(&T.mu);
		while (T.taken == T.released && T.released < sv_trace_len(T.tr))
			pthread_cond_wait(&T.cv, &T.mu);
		if (T.taken == sv_trace_len(T.tr)) {
			pthread_mutex_unlock(&T.mu);
			return NULL;
		}
		i = T.taken++;
		pthread_mutex_unlock(&T.mu);
		trace_one(i);
	}
}

/* Run tr (arrivals from now), fill res; 0 or -ENOMEM / -EAGAIN. */
static int trace_run(const struct sv_trace *tr, unsigned run, const struct sv_slo *slo,
		     struct sv_result *res)
{
	size_t n = sv_trace_len(tr), n_th = n < (size_t)O.senders ? n : (size_t)O.senders;
	pthread_t *th = calloc(n_th ? n_th : 1, sizeof(*th));
	size_t started = 0;
	int ret = 0;

	memset(T.err, 0, sizeof(T.err));
	T.tr = tr;
	T.run = run;
	T.released = T.taken = 0;
	T.t_last = 0;
	T.early_stop = T.late = 0;
	T.late_max = 0;
	T.sv = NULL;
	if (!th || sv_run_create(slo, &T.sv)) {
		free(th);
		return -ENOMEM;
	}
	if (T.serial) {
		T.t0 = now_s();
		for (size_t i = 0; i < n; i++)
			trace_one(i);
		goto out;
	}
	for (; started < n_th; started++)
		if (pthread_create(&th[started], NULL, trace_sender, NULL))
			break;
	if (started < n_th)
		fprintf(stderr, "bench_serve: only %zu of %zu sender threads started\n", started,
			n_th);
	if (!started && n) {
		ret = -EAGAIN;
		goto out;
	}
	T.t0 = now_s();
	for (size_t i = 0; i < n; i++) {
		sleep_until(T.t0 + sv_trace_at(tr, i)->arrival_s);
		pthread_mutex_lock(&T.mu);
		T.released = i + 1;
		pthread_cond_signal(&T.cv);
		pthread_mutex_unlock(&T.mu);
	}
	pthread_mutex_lock(&T.mu);
	pthread_cond_broadcast(&T.cv);
	pthread_mutex_unlock(&T.mu);
out:
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	/* Like vLLM's benchmark: from the start of the trace to the last answer. */
	sv_run_result(T.sv, T.t_last > T.t0 ? T.t_last - T.t0 : 0, res);
	sv_run_destroy(T.sv);
	T.sv = NULL;
	return ret;
}

/* What a sweep measures: one trace per rate. */
struct sweep_ctx {
	struct sv_trace *file; /* --trace, scaled in place to each rate; NULL: generate */
	double file_rate;      /* its current mean rate */
	int max_context;
	struct sv_slo slo;
	bool has_slo;
	unsigned runs;
	json_t *rates; /* one object per measured rate */
};

static json_t *jstats(const struct sv_stats *s)
{
	return json_pack("{s:I,s:o,s:o,s:o,s:o,s:o}", "n", (json_int_t)s->n, "mean", jnum(s->mean),
			 "p50", jnum(s->p50), "p90", jnum(s->p90), "p99", jnum(s->p99), "max",
			 jnum(s->max));
}

/* The server's phase times of a run: null when no answer carried "timings". */
static json_t *jserver(const struct sv_result *r)
{
	if (!r->timed)
		return json_null();
	return json_pack("{s:I,s:o,s:o,s:o,s:o}", "timed", (json_int_t)r->timed, "queue_ms",
			 jstats(&r->queue), "prefill_ms", jstats(&r->prefill), "transfer_ms",
			 jstats(&r->transfer), "decode_ms", jstats(&r->decode));
}

static json_t *jstr_or_null(const char *s)
{
	return s[0] ? json_string(s) : json_null();
}

/* "per_request": one object per request of the run, in trace order. */
static json_t *jrecords(const struct reqrec *x, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++, x++) {
		json_t *o = json_pack(
			"{s:o,s:o,s:i,s:i,s:s,s:o,s:o,s:o,s:o}", "arrival_s", jnum(x->arrival_s),
			"class", x->cls >= 0 ? json_string(sv_class_name(x->cls)) : json_null(),
			"prompt_tokens", x->prompt_tokens, "output_tokens", x->out_tokens,
			"outcome", bs_err_name[x->err], "ttft_ms", jnum(x->ttft), "tpot_ms",
			jnum(x->tpot), "e2e_ms", jnum(x->e2e), "max_itl_ms", jnum(x->max_itl));

		if (o && x->has_srv) {
			json_object_set_new(o, "queue_ms", jnum(x->srv.queue_ms));
			json_object_set_new(o, "prefill_ms", jnum(x->srv.prefill_ms));
			json_object_set_new(o, "transfer_ms", jnum(x->srv.transfer_ms));
			json_object_set_new(o, "decode_ms", jnum(x->srv.decode_ms));
			json_object_set_new(o, "partition", jstr_or_null(x->part));
			json_object_set_new(o, "prefill_partition", jstr_or_null(x->pre_part));
		}
		if (!o || json_array_append_new(a, o)) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* "p50/p90/p99" of a phase, or "-" when no request had it. */
static const char *pct3(const struct sv_stats *s, char *buf, size_t len)
{
	if (!s->n)
		return "-";
	snprintf(buf, len, "%.1f/%.1f/%.1f", s->p50, s->p90, s->p99);
	return buf;
}

static int gen_trace(double rate, int max_context, struct sv_trace **out)
{
	struct sv_gen g = {
		.profile = sv_profile_parse(profile_name()),
		.rate = rate,
		.burstiness = O.burstiness,
		.duration_s = O.unloaded || O.num_requests ? 0 : O.duration,
		.max_requests = (size_t)(O.unloaded ?: O.num_requests),
		.max_context = max_context,
		.seed = O.seed,
	};

	return sv_trace_generate(&g, out);
}

static int sweep_measure(void *arg, double rate, double *attainment)
{
	struct sweep_ctx *c = arg;
	struct sv_trace *tr = c->file;
	struct sv_result r;
	json_t *o, *errs, *recs;
	char att[16] = "-", b[4][64];
	int ret;

	if (O.unloaded && c->file)
		sv_trace_truncate(c->file, (size_t)O.unloaded);
	if (c->file && rate > 0 && c->file_rate > 0) {
		sv_trace_scale(c->file, c->file_rate / rate);
		c->file_rate = rate;
	} else if (!c->file && (ret = gen_trace(rate, c->max_context, &tr)) != 0) {
		fprintf(stderr, "bench_serve: cannot generate a trace at %g/s: %s\n", rate,
			strerror(-ret));
		return ret;
	}
	if (!rate)
		rate = sv_trace_rate(tr);
	if (!sv_trace_len(tr)) {
		fprintf(stderr, "bench_serve: no arrivals within %g s at %g/s: raise --duration\n",
			O.duration, rate);
		if (tr != c->file)
			sv_trace_destroy(tr);
		return -ENODATA;
	}
	T.serial = O.unloaded > 0;
	T.recs = calloc(sv_trace_len(tr), sizeof(*T.recs));
	ret = T.recs ? trace_run(tr, c->runs++, &c->slo, &r) : -ENOMEM;
	recs = ret ? NULL : jrecords(T.recs, sv_trace_len(tr));
	free(T.recs);
	T.recs = NULL;
	if (tr != c->file)
		sv_trace_destroy(tr);
	if (ret) {
		fprintf(stderr, "bench_serve: run at %g/s failed: %s\n", rate, strerror(-ret));
		return ret;
	}
	if (!recs)
		return -ENOMEM;
	*attainment = isnan(r.attainment) ? 0 : r.attainment;
	if (c->has_slo && !isnan(r.attainment))
		snprintf(att, sizeof(att), "%5.1f%%", r.attainment * 100);
	if (O.unloaded)
		printf("%7s ", "1-by-1");
	else
		printf("%7.3f ", rate);
	printf("%5zu %5zu %4zu %6.2f %8.1f | %7.1f %7.1f %7.1f | %6.2f %6.2f %6.2f | %7.2f "
	       "| %8.1f | %s\n",
	       r.sent, r.ok, r.failed, r.req_per_s, r.out_tok_per_s, r.ttft.p50, r.ttft.p90,
	       r.ttft.p99, r.tpot.p50, r.tpot.p90, r.tpot.p99, r.itl.p99, r.e2e.p50, att);
	if (r.timed)
		printf("  server ms p50/p90/p99 (%zu of %zu timed): queue %s  prefill %s  transfer "
		       "%s  decode %s\n",
		       r.timed, r.ok, pct3(&r.queue, b[0], 64), pct3(&r.prefill, b[1], 64),
		       pct3(&r.transfer, b[2], 64), pct3(&r.decode, b[3], 64));
	fflush(stdout);
	for (int e = 1; e < BS_NERR; e++)
		if (T.err[e])
			printf("  errors: %ld %s (last: %s)\n", T.err[e], bs_err_name[e],
			       T.last_err[e]);
	if (T.late)
		printf("  %ld requests written > 10 ms after they were due (max %.1f ms): raise "
		       "--senders\n",
		       T.late, T.late_max * 1e3);
	errs = json_object();
	for (int e = 1; e < BS_NERR; e++)
		json_object_set_new(errs, bs_err_name[e], json_integer(T.err[e]));
	o = json_pack("{s:o,s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:I,s:I,s:o}",
		      "rate", jnum(rate), "requests", (json_int_t)r.sent, "ok", (json_int_t)r.ok,
		      "failed", (json_int_t)r.failed, "errors_by_kind", errs, "duration_s",
		      jnum(r.duration_s), "request_throughput", jnum(r.req_per_s),
		      "output_tokens_per_s", jnum(r.out_tok_per_s), "output_tokens",
		      (json_int_t)r.out_tokens, "slo_ok", (json_int_t)r.slo_ok, "attainment",
		      c->has_slo ? jnum(r.attainment) : json_null(), "ttft_ms", jstats(&r.ttft),
		      "tpot_ms", jstats(&r.tpot), "itl_ms", jstats(&r.itl), "e2e_ms",
		      jstats(&r.e2e), "early_stop", (json_int_t)T.early_stop, "late",
		      (json_int_t)T.late, "late_max_ms", jnum(T.late_max * 1e3));
	if (o && O.unloaded)
		json_object_set_new(o, "rate", json_null()); /* one at a time: no rate */
	if (o) {
		json_object_set_new(o, "server", jserver(&r));
		json_object_set_new(o, "per_request", recs);
		recs = NULL;
	}
	json_decref(recs);
	if (!o || json_array_append_new(c->rates, o))
		return -ENOMEM;
	return 0;
}

/*
 * SVG plots next to the data: BASE-attainment.svg (SLO attainment vs rate)
 * and BASE-tpot-p99.svg (TPOT p99 vs rate), drawn by gnuplot from BASE.dat
 * with BASE.gp (both kept, to redraw or combine by hand).  Without gnuplot
 * it says so and succeeds.  0, or -EIO when a file cannot be written.
 */
static int cmp_rate(const void *a, const void *b)
{
	double x = json_number_value(json_object_get(*(json_t *const *)a, "rate"));
	double y = json_number_value(json_object_get(*(json_t *const *)b, "rate"));

	return x < y ? -1 : x > y;
}

/* Run gnuplot on script in dir: its wait status (exit 127: not found), or -1 (said why). */
static int gnuplot(const char *dir, const char *script)
{
	pid_t pid;
	int st;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		if (chdir(dir) == 0)
			execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid) {
		fprintf(stderr, "bench_serve: plots skipped: cannot run gnuplot: %s\n",
			strerror(errno));
		return -1;
	}
	return st;
}

/* The rate objects of a sweep's "rates" that have a rate, sorted by it; NULL on ENOMEM. */
static json_t **sorted_rows(json_t *rates, size_t *n)
{
	size_t n_all = json_array_size(rates);
	json_t **rows = calloc(n_all ? n_all : 1, sizeof(*rows));

	*n = 0;
	if (!rows)
		return NULL;
	for (size_t i = 0; i < n_all; i++)
		if (json_is_number(json_object_get(json_array_get(rates, i), "rate")))
			rows[(*n)++] = json_array_get(rates, i);
	qsort(rows, *n, sizeof(*rows), cmp_rate);
	return rows;
}

/*
 * A plot's data file: the line HEAD, then a row per rate of RATES (sorted:
 * a bisection measures them out of order) of the columns COL, each a key
 * and a sub-key (NULL: none), '?' where there is no number.  0, or -1 with
 * errno set.
 */
static int write_dat(const char *path, const char *head, json_t *rates, const char *const col[][2],
		     size_t n_col)
{
	size_t n_rows;
	json_t **rows = sorted_rows(rates, &n_rows);
	FILE *f;
	int err;

	if (!rows) {
		errno = ENOMEM;
		return -1;
	}
	f = fopen(path, "w");
	if (!f) {
		err = errno;
		free(rows);
		errno = err;
		return -1;
	}
	fputs(head, f);
	for (size_t i = 0; i < n_rows; i++) {
		for (size_t k = 0; k < n_col; k++) {
			json_t *v = json_object_get(rows[i], col[k][0]);

			if (col[k][1])
				v = json_object_get(v, col[k][1]);
			fprintf(f, json_is_number(v) ? "%s%.6g" : "%s?", k ? " " : "",
				json_number_value(v));
		}
		fputc('\n', f);
	}
	free(rows);
	return fclose(f) ? -1 : 0;
}

/*
 * Run gnuplot on SCRIPT (a path in DIR) and say what came of it: "WHAT: SVGS",
 * or "WHAT skipped: ..." naming DATA (where the data and script are) when
 * gnuplot is missing, or SCRIPT when it failed.
 */
static void report_gnuplot(const char *dir, const char *script, const char *what, const char *data,
			   const char *svgs)
{
	int st = gnuplot(dir, script + strlen(dir) + 1);

	if (st < 0)
		return; /* gnuplot() said why */
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
		printf("%s skipped: gnuplot not found (apt-get install gnuplot-nox); the data and "
		       "script are %s\n",
		       what, data);
	else if (!WIFEXITED(st) || WEXITSTATUS(st))
		printf("%s skipped: gnuplot failed on %s\n", what, script);
	else
		printf("%s: %s\n", what, svgs);
}

static int plot(const char *dir, const char *base, json_t *rates, const struct sweep_ctx *c)
{
	static const char *const col[][2] = {
		{ "rate", NULL },
		{ "attainment", NULL },
		{ "ttft_ms", "p99" },
		{ "tpot_ms", "p50" },
		{ "tpot_ms", "p99" },
		{ "itl_ms", "p99" },
		{ "output_tokens_per_s", NULL },
	};
	char path[4096], title[256], data[4096 + 256], svgs[8192 + 64];
	FILE *f;

	if (strchr(base, '\'') || strchr(base, '/')) {
		fprintf(stderr, "bench_serve: plots: the name %s cannot go into a gnuplot script\n",
			base);
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "%s/%s.dat", dir, base);
	if (write_dat(path,
		      "# rate attainment ttft_p99_ms tpot_p50_ms tpot_p99_ms itl_p99_ms "
		      "output_tok_per_s  ('?' = no value)\n",
		      rates, col, sizeof(col) / sizeof(col[0])))
		goto io;
	snprintf(title, sizeof(title), "%s%s, %s", c->file ? "trace " : "profile ",
		 c->file ? O.trace_path : profile_name(), O.model);
	for (char *p = title; *p; p++)
		if (*p == '\'' || *p == '\\')
			*p = '_';
	snprintf(path, sizeof(path), "%s/%s.gp", dir, base);
	f = fopen(path, "w");
	if (!f)
		goto io;
	fprintf(f,
		"# Drawn by bench_serve from %s.dat: gnuplot %s.gp (in this directory)\n"
		"set terminal svg size 720,440 dynamic font 'sans,12' background '#ffffff'\n"
		"set datafile missing '?'\n"
		"set grid\nset key bottom left\n"
		"set xlabel 'request rate (requests/s)'\nset xrange [0:*]\n"
		"set output '%s-attainment.svg'\n"
		"set title 'SLO attainment (TTFT <= %g ms and TPOT <= %g ms): %s'\n"
		"set ylabel 'requests meeting both SLOs (%%)'\nset yrange [0:105]\n"
		"plot '%s.dat' using 1:($2*100) with linespoints lw 2 pt 7 title 'attainment', \\\n"
		"     %g with lines dt 2 lc rgb 'gray40' title 'target %g%%'\n"
		"set output '%s-tpot-p99.svg'\n"
		"set title 'TPOT p99: %s'\n"
		"set ylabel 'TPOT p99 (ms)'\nset yrange [0:*]\nset key top left\n"
		"plot '%s.dat' using 1:5 with linespoints lw 2 pt 7 title 'TPOT p99', \\\n"
		"     %g with lines dt 2 lc rgb 'gray40' title 'TPOT SLO'\n",
		base, base, base, c->slo.ttft_ms, c->slo.tpot_ms, title, base, O.target * 100,
		O.target * 100, base, title, base, c->slo.tpot_ms);
	if (fclose(f))
		goto io;
	snprintf(data, sizeof(data), "%s/%s.dat and %s.gp", dir, base, base);
	snprintf(svgs, sizeof(svgs), "%s/%s-attainment.svg %s/%s-tpot-p99.svg", dir, base, dir,
		 base);
	report_gnuplot(dir, path, "plots", data, svgs);
	return 0;
io:
	fprintf(stderr, "bench_serve: cannot write %s: %s\n", path, strerror(errno));
	return -EIO;
}

/*
 * --overlay [LABEL=]FILE.json ...: the sweeps of several configurations in
 * one figure each: PROFILE-attainment.svg (with the target),
 * PROFILE-tpot-p99.svg and PROFILE-ttft-p90.svg (with the SLOs of the first
 * file), in --plot-dir (default "."), drawn by gnuplot from
 * PROFILE-overlay-K.dat (K: the file's place) with PROFILE-overlay.gp; then
 * each file's goodput.  PROFILE is the first file's workload profile
 * ("trace" for a trace file).  0, or 1 when a file cannot be read or written.
 */
static int overlay_main(int n, char **args)
{
	const char *dir = O.plot_dir ? O.plot_dir : ".";
	char path[4096], base[64], label[64][128], data[4096], svgs[3 * 4096];
	double slo_ttft = NAN, slo_tpot = NAN, target = O.target;
	json_t *doc[64] = { 0 };
	int ret = 1;
	FILE *f = NULL;

	if (n < 1 || n > 64) {
		fprintf(stderr, "bench_serve: --overlay: 1 to 64 JSON files\n");
		return 2;
	}
	for (int k = 0; k < n; k++) {
		const char *eq = strchr(args[k], '='), *file = eq ? eq + 1 : args[k];
		const char *slash = strrchr(file, '/');
		json_error_t jerr;
		char *p;

		if (eq)
			snprintf(label[k], sizeof(label[k]), "%.*s", (int)(eq - args[k]), args[k]);
		else
			snprintf(label[k], sizeof(label[k]), "%s", slash ? slash + 1 : file);
		if (!eq && (p = strrchr(label[k], '.')) && p != label[k])
			*p = '\0';
		for (p = label[k]; *p; p++)
			if (*p == '\'' || *p == '\\' || *p == '"')
				*p = '_';
		doc[k] = json_load_file(file, 0, &jerr);
		if (!json_is_array(json_object_get(doc[k], "rates"))) {
			fprintf(stderr, "bench_serve: --overlay: %s: %s\n", file,
				doc[k] ? "no \"rates\" array" : jerr.text);
			goto out;
		}
	}
	snprintf(base, sizeof(base), "%s",
		 json_string_value(json_object_get(json_object_get(doc[0], "workload"), "profile"))
			 ?: "trace");
	if (strchr(base, '\'') || strchr(base, '/') || strchr(base, '\\')) {
		fprintf(stderr, "bench_serve: --overlay: bad profile name %s\n", base);
		goto out;
	}
	{
		json_t *slo = json_object_get(doc[0], "slo");

		if (json_is_object(slo)) {
			slo_ttft = jms(slo, "ttft_ms");
			slo_tpot = jms(slo, "tpot_ms");
			if (json_is_number(json_object_get(slo, "target")))
				target = jms(slo, "target");
		}
	}
	for (int k = 0; k < n; k++) {
		static const char *const col[][2] = {
			{ "rate", NULL },
			{ "attainment", NULL },
			{ "ttft_ms", "p90" },
			{ "tpot_ms", "p99" },
		};
		char head[256];

		snprintf(path, sizeof(path), "%s/%s-overlay-%d.dat", dir, base, k);
		snprintf(head, sizeof(head),
			 "# %s: rate attainment ttft_p90_ms tpot_p99_ms  ('?' = no value)\n",
			 label[k]);
		if (write_dat(path, head, json_object_get(doc[k], "rates"), col,
			      sizeof(col) / sizeof(col[0])))
			goto io;
	}
	snprintf(path, sizeof(path), "%s/%s-overlay.gp", dir, base);
	f = fopen(path, "w");
	if (!f)
		goto io;
	fprintf(f,
		"# Drawn by bench_serve --overlay from %s-overlay-*.dat: gnuplot %s-overlay.gp\n"
		"set terminal svg size 720,440 dynamic font 'sans,12' background '#ffffff'\n"
		"set datafile missing '?'\nset grid\n"
		"set xlabel 'request rate (requests/s)'\nset xrange [0:*]\n",
		base, base);
	static const struct {
		const char *svg, *title, *ylabel, *key, *using; /* using: the y column */
	} fig[] = {
		{ "attainment", "SLO attainment", "requests meeting both SLOs (%)", "bottom left",
		  "($2*100)" },
		{ "tpot-p99", "TPOT p99", "TPOT p99 (ms)", "top left", "4" },
		{ "ttft-p90", "TTFT p90", "TTFT p90 (ms)", "top left", "3" },
	};
	for (size_t g = 0; g < sizeof(fig) / sizeof(fig[0]); g++) {
		double line = g == 0 ? target * 100 : g == 1 ? slo_tpot : slo_ttft;
		char title[128];

		if (g == 0 && !isnan(slo_ttft) && !isnan(slo_tpot))
			snprintf(title, sizeof(title), "%s (TTFT <= %g ms and TPOT <= %g ms)",
				 fig[g].title, slo_ttft, slo_tpot);
		else
			snprintf(title, sizeof(title), "%s", fig[g].title);
		fprintf(f,
			"set output '%s-%s.svg'\nset title '%s: %s'\nset ylabel '%s'\n"
			"set key %s\nset yrange [0:%s]\nplot ",
			base, fig[g].svg, title, base, fig[g].ylabel, fig[g].key,
			g == 0 ? "105" : "*");
		/* Each file its own point shape, so curves that coincide still show. */
		for (int k = 0; k < n; k++)
			fprintf(f,
				"'%s-overlay-%d.dat' using 1:%s with linespoints lw 2 pt %d ps 1.3 "
				"title '%s', \\\n     ",
				base, k, fig[g].using, 5 + 2 * (k % 5), label[k]);
		if (isnan(line))
			fprintf(f, "1/0 notitle\n");
		else
			fprintf(f, "%g with lines dt 2 lc rgb 'gray40' title '%s %g%s'\n", line,
				g == 0 ? "target" : "SLO", line, g == 0 ? "%" : " ms");
	}
	if (fclose(f))
		goto io;
	snprintf(data, sizeof(data), "in %s", dir);
	snprintf(svgs, sizeof(svgs), "%s/%s-attainment.svg %s/%s-tpot-p99.svg %s/%s-ttft-p90.svg",
		 dir, base, dir, base, dir, base);
	report_gnuplot(dir, path, "overlay plots", data, svgs);
	for (int k = 0; k < n; k++) {
		json_t *gp = json_object_get(doc[k], "goodput");
		const char *name = json_string_value(json_object_get(doc[k], "goodput_bound"));
		int bound = name ? sv_bound_parse(name) : -EINVAL;

		if (bound == SV_BELOW)
			printf("%-16s goodput below the lowest rate swept\n", label[k]);
		else if (json_is_number(gp))
			printf("%-16s goodput %s%.3g req/s\n", label[k],
			       bound == SV_AT_LEAST ? ">= " : "", json_number_value(gp));
		else
			printf("%-16s goodput -\n", label[k]);
	}
	ret = 0;
	goto out;
io:
	fprintf(stderr, "bench_serve: cannot write %s: %s\n", path, strerror(errno));
out:
	for (int k = 0; k < n; k++)
		json_decref(doc[k]);
	return ret;
}

static int trace_main(void)
{
	struct sweep_ctx c = { .slo = { INFINITY, INFINITY } };
	double rates[64], lo = 0, hi = 0, goodput = NAN;
	struct sv_point pts[64];
	size_t n_rates = 0, n_pts = 0;
	enum sv_bound bound = SV_EXACT;
	const char *bound_name = NULL, *kind;
	json_t *root = NULL, *slo, *workload, *sweep;
	bool bisect;
	int ret = 1, rc;

	c.has_slo = O.slo_ttft_ms > 0 && O.slo_tpot_ms > 0;
	if (c.has_slo)
		c.slo = (struct sv_slo){ O.slo_ttft_ms, O.slo_tpot_ms };
	if (O.trace_path) {
		char err[256] = "";
		FILE *f = fopen(O.trace_path, "r");

		if (!f || sv_trace_read(f, &c.file, err, sizeof(err))) {
			fprintf(stderr, "bench_serve: %s: %s\n", O.trace_path,
				f ? err : strerror(errno));
			if (f)
				fclose(f);
			return 1;
		}
		fclose(f);
		c.file_rate = sv_trace_rate(c.file);
		if (!sv_trace_len(c.file)) {
			fprintf(stderr, "bench_serve: %s: no requests\n", O.trace_path);
			goto out;
		}
	} else if (sv_profile_parse(profile_name()) < 0) {
		fprintf(stderr, "bench_serve: --profile: chat, summarize, agent or mixed\n");
		return 2;
	}
	if (O.unloaded && O.sweep) {
		fprintf(stderr, "bench_serve: --unloaded measures no rates: drop --sweep\n");
		goto out;
	}
	if (O.unloaded) {
		/* Arrivals do not matter one at a time; a generated trace needs a rate. */
		rates[n_rates++] = c.file ? 0 : O.rate > 0 ? O.rate : 1;
	} else if (O.sweep) {
		if (sv_rates_parse(O.sweep, rates, 64, &n_rates, &lo, &hi)) {
			fprintf(stderr, "bench_serve: --sweep: R1,R2,... (increasing, > 0, at most "
					"64) or LO..HI\n");
			goto out;
		}
		if (!c.has_slo) {
			fprintf(stderr,
				"bench_serve: a sweep needs --slo-ttft-ms and --slo-tpot-ms\n");
			goto out;
		}
	} else if (O.rate > 0 || c.file) {
		rates[n_rates++] = O.rate; /* 0: a trace file as recorded */
	} else {
		fprintf(stderr, "bench_serve: give --rate R or --sweep RATES\n");
		goto out;
	}
	if (O.sock && setup())
		goto out;
	c.max_context = O.max_context;
	if (!c.max_context && !c.file) {
		if (O.sock)
			c.max_context = probe_context();
		if (!c.max_context) {
			fprintf(stderr, "bench_serve: the model's context length is unknown: give "
					"--max-context\n");
			goto out;
		}
	}
	if (O.write_trace) {
		struct sv_trace *tr = NULL;
		double r = n_rates ? rates[0] : lo;
		bool out_std = !strcmp(O.write_trace, "-");
		FILE *f;

		if (c.file) {
			fprintf(stderr,
				"bench_serve: --write-trace writes generated traces only\n");
			goto out;
		}
		if ((rc = gen_trace(r, c.max_context, &tr)) != 0) {
			fprintf(stderr, "bench_serve: cannot generate the trace: %s\n",
				strerror(-rc));
			goto out;
		}
		f = out_std ? stdout : fopen(O.write_trace, "w");
		rc = f ? sv_trace_write(tr, f) : -errno;
		if (f && !out_std && fclose(f))
			rc = -EIO;
		if (rc)
			fprintf(stderr, "bench_serve: cannot write %s\n", O.write_trace);
		else if (!out_std)
			fprintf(stderr,
				"bench_serve: %zu requests (%s at %g/s, context %d, seed "
				"%llu) written to %s\n",
				sv_trace_len(tr), profile_name(), r, c.max_context,
				(unsigned long long)O.seed, O.write_trace);
		sv_trace_destroy(tr);
		ret = rc ? 1 : 0;
		goto out;
	}
	if (!O.sock) {
		fprintf(stderr, "bench_serve: need a SOCKET to run against\n");
		goto out;
	}
	c.rates = json_array();
	printf("bench_serve: model %s on %s; %s %s; ", O.model, O.sock,
	       c.file ? "trace" : "profile", c.file ? O.trace_path : profile_name());
	if (O.unloaded)
		printf("unloaded: the first %d requests, one at a time", O.unloaded);
	else if (c.file)
		printf("%zu requests at %.3g/s as recorded", sv_trace_len(c.file), c.file_rate);
	else if (O.num_requests)
		printf("%d requests per rate", O.num_requests);
	else
		printf("%g s of arrivals per rate", O.duration);
	if (!c.file)
		printf(" (%s, seed %llu, context %d)", O.burstiness == 1 ? "Poisson" : "gamma gaps",
		       (unsigned long long)O.seed, c.max_context);
	printf("\n");
	if (c.has_slo)
		printf("SLO: TTFT <= %g ms and TPOT <= %g ms; goodput: highest rate with >= %g%% "
		       "meeting both\n",
		       c.slo.ttft_ms, c.slo.tpot_ms, O.target * 100);
	printf("%7s %5s %5s %4s %6s %8s | %-23s | %-20s | %7s | %8s | %s\n", "rate/s", "sent", "ok",
	       "fail", "req/s", "tok/s", "TTFT ms p50  p90  p99", "TPOT ms p50 p90 p99", "ITL p99",
	       "e2e p50", "SLO ok");
	if (O.sweep && !n_rates) {
		rc = sv_sweep_bisect(lo, hi, O.sweep_tol, (size_t)O.sweep_max, O.target,
				     sweep_measure, &c, pts, &n_pts, &goodput, &bound);
	} else {
		rc = sv_sweep_list(rates, n_rates, O.target, sweep_measure, &c, pts, &goodput);
		n_pts = n_rates;
		if (!rc && n_pts)
			bound = sv_bound_of(pts, n_pts, goodput);
	}
	if (rc)
		goto out;
	if (O.sweep) {
		bound_name = sv_bound_name(bound);
		if (bound == SV_BELOW)
			printf("goodput: below %g requests/s (the lowest rate misses the SLO "
			       "target)\n",
			       pts[0].rate);
		else
			printf("goodput: %s%.3g requests/s\n", bound == SV_AT_LEAST ? ">= " : "",
			       goodput);
	} else {
		goodput = NAN;
	}
	if (O.unloaded) {
		json_t *r0 = json_array_get(c.rates, 0);
		json_t *ttft = json_object_get(r0, "ttft_ms"),
		       *tpot = json_object_get(r0, "tpot_ms");

		printf("unloaded latency (%lld of %d requests ok): TTFT p50 %.1f p90 %.1f ms; "
		       "TPOT p50 %.2f p90 %.2f ms\n",
		       (long long)json_integer_value(json_object_get(r0, "ok")), O.unloaded,
		       jms(ttft, "p50"), jms(ttft, "p90"), jms(tpot, "p50"), jms(tpot, "p90"));
	}
	ret = 0;
	for (size_t i = 0; i < json_array_size(c.rates); i++)
		if (!json_integer_value(json_object_get(json_array_get(c.rates, i), "ok")))
			ret = 1; /* a rate where nothing went through */
	bisect = O.sweep && !n_rates;
	slo = c.has_slo ? json_pack("{s:f,s:f,s:f}", "ttft_ms", c.slo.ttft_ms, "tpot_ms",
				    c.slo.tpot_ms, "target", O.target)
			: json_null();
	workload = json_pack("{s:s?,s:s?,s:f,s:I,s:i,s:f,s:i,s:i}", "profile",
			     c.file ? NULL : profile_name(), "trace", O.trace_path, "burstiness",
			     O.burstiness, "seed", (json_int_t)O.seed, "max_context", c.max_context,
			     "duration_s", O.duration, "num_requests", O.num_requests, "ban_token",
			     O.ban_token);
	kind = O.unloaded ? "unloaded" : !O.sweep ? "single" : bisect ? "bisect" : "list";
	sweep = json_pack("{s:s,s:o,s:o,s:o}", "kind", kind, "lo", bisect ? jnum(lo) : json_null(),
			  "hi", bisect ? jnum(hi) : json_null(), "tol",
			  bisect ? jnum(O.sweep_tol) : json_null());
	root = json_pack("{s:s,s:s,s:o,s:o,s:o,s:O,s:o,s:s?}", "model", O.model, "socket", O.sock,
			 "workload", workload, "slo", slo, "sweep", sweep, "rates", c.rates,
			 "goodput", jnum(goodput), "goodput_bound", bound_name);
	if (root && O.unloaded) {
		json_t *r0 = json_array_get(c.rates, 0);

		json_object_set_new(root, "unloaded",
				    json_pack("{s:i,s:O,s:O,s:O,s:O}", "requests", O.unloaded, "ok",
					      json_object_get(r0, "ok"), "ttft_ms",
					      json_object_get(r0, "ttft_ms"), "tpot_ms",
					      json_object_get(r0, "tpot_ms"), "server",
					      json_object_get(r0, "server")));
	}
	if (!O.json_path)
		goto out;
	if (!root || json_dump_file(root, O.json_path, JSON_INDENT(2) | JSON_REAL_PRECISION(9))) {
		fprintf(stderr, "bench_serve: cannot write %s\n", O.json_path);
		ret = 1;
		goto out;
	}
	if (c.has_slo && !O.unloaded && (O.plot_dir || O.sweep)) {
		/* BASE: the JSON's file name less its extension; DIR: its directory. */
		const char *slash = strrchr(O.json_path, '/');
		char *jp = strdup(O.json_path), *base = strdup(slash ? slash + 1 : O.json_path);
		const char *dir = O.plot_dir;
		char *dot;

		if (!jp || !base) {
			ret = 1;
		} else {
			if (!dir && slash) {
				jp[slash - O.json_path] = '\0';
				dir = jp[0] ? jp : "/";
			}
			if (!dir)
				dir = ".";
			dot = strrchr(base, '.');
			if (dot && dot != base)
				*dot = '\0';
			if (plot(dir, base, c.rates, &c) == -EIO)
				ret = 1;
		}
		free(jp);
		free(base);
	}
out:
	json_decref(root);
	json_decref(c.rates);
	sv_trace_destroy(c.file);
	return ret;
}

/* ---------------------------------------------------------------------------
 * --selftest: percentiles; the SSE handling fed a canned stream in every
 * split; whole answers from a one-shot server over a UNIX socket.
 * ------------------------------------------------------------------------- */
struct canned {
	int lfd;
	const char *reply; /* written after the request, then the connection is closed */
	size_t len;
};

/* Accept once, read the whole request (head and Content-Length body), answer, close. */
static void *canned_main(void *arg)
{
	struct canned *c = arg;
	char in[65536];
	size_t n = 0;
	int fd = accept(c->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	for (;;) {
		char *end, *cl;
		ssize_t k;

		in[n] = '\0';
		end = strstr(in, "\r\n\r\n");
		cl = strcasestr(in, "\r\nContent-Length:");
		if (end && (!cl || n >= (size_t)(end + 4 - in) + strtoul(cl + 17, NULL, 10)))
			break;
		if (n >= sizeof(in) - 1)
			break;
		k = read(fd, in + n, sizeof(in) - 1 - n);
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	for (size_t off = 0; off < c->len;) {
		ssize_t w = write(fd, c->reply + off, c->len - off);

		if (w <= 0)
			break;
		off += (size_t)w;
	}
	close(fd);
	return NULL;
}

/* One streamed exchange with r against LFD's one-shot server answering REPLY; its return. */
static int canned_exchange(struct req *r, int lfd, const char *reply, size_t len)
{
	struct canned c = { .lfd = lfd, .reply = reply, .len = len };
	pthread_t th;
	int ret;

	if (pthread_create(&th, NULL, canned_main, &c))
		return -EAGAIN;
	ret = exchange(r, "POST", "/v1/completions", "{}");
	pthread_join(th, NULL);
	return ret;
}

static int selftest(void)
{
	/* Chunk boundaries cut through events on purpose. */
	static const char *const chunks[] = {
		"data: {\"choices\":[{\"text\":\"a\",\"index\":0}]}\n\n",
		"data: {\"choices\":[{\"text\":\"b\",\"index\":0}]}\r\n\r\ndata: {\"choi",
		"ces\":[{\"text\":\"\",\"finish_reason\":\"stop\"}]}\n",
		"\n: comment\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
		"\"completion_tokens\":3},\"timings\":[{\"index\":0,\"queue_ms\":1.25,"
		"\"prefill_ms\":50.5,\"transfer_ms\":0.25,\"decode_ms\":900,\"ttft_ms\":52,"
		"\"tpot_ms\":7.5,\"partition\":\"dec\",\"prefill_partition\":\"pre\"}]}\n\n",
		"data: [DONE]\n\n",
	};
	static const char refused[] = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 43\r\n\r\n"
				      "{\"error\":{\"message\":\"full\",\"code\":\"QFULL\"}}";
	static const char bad_size[] =
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
	static const char error_frame[] =
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
		"data: {\"choices\":[{\"text\":\"a\"}]}\n\n"
		"data: {\"error\":{\"message\":\"worker died\",\"code\":\"WORKER_LOST\"}}\n\n";
	struct client_buf sse = { 0 }, ans = { 0 };
	double three[] = { 3, 1, 2 };
	char dir[] = "/tmp/bench_serve-selftest-XXXXXX", sock[64];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fails = 0, lfd = -1;

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			fails++;                                                             \
		}                                                                            \
	} while (0)
/* What the canned stream must give, however it arrived. */
#define CHECK_STREAM(r)                                                                   \
	do {                                                                              \
		CHECK((r).status == 200 && (r).err == BS_ERR_NONE);                       \
		CHECK((r).tok_t.n == 2 && (r).usage_tokens == 3 && (r).finish_stop &&     \
		      (r).done_seen);                                                     \
		CHECK((r).tok_t.n == 2 && (r).tok_t.v[0] <= (r).tok_t.v[1] &&             \
		      (r).t_done >= (r).tok_t.v[1]);                                      \
		CHECK((r).usage_prompt == 5 && (r).has_srv && (r).srv.queue_ms == 1.25 && \
		      (r).srv.prefill_ms == 50.5 && (r).srv.transfer_ms == 0.25 &&        \
		      (r).srv.decode_ms == 900 && !strcmp((r).part, "dec") &&             \
		      !strcmp((r).pre_part, "pre"));                                      \
	} while (0)

	/* The percentiles themselves are serve_lib's, tested in test_serve. */
	{
		struct sv_stats s;

		sv_stats_of(three, 3, &s);
		CHECK(s.p50 == 2 && s.p90 == 3 && s.p99 == 3 && s.mean == 2 && s.max == 3);
	}

	/* The event stream in two reads, split everywhere (the HTTP framing is client_request's,
	 * tested in test_console, and below). */
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++)
		client_buf_add(&sse, chunks[i], strlen(chunks[i]));
	for (size_t split = 0; sse.p && split <= sse.len && !fails; split++) {
		struct req r;

		req_init(&r, CLS_DECODE);
		r.status = 200;
		CHECK(req_body(&r, sse.p, split) == 0);
		CHECK(req_body(&r, sse.p + split, sse.len - split) == 0);
		req_settle(&r, 0);
		CHECK_STREAM(r);
		req_fini(&r);
	}
	{
		/* One mixed partition: nulls and no prefill_partition; an older daemon: none. */
		struct req r;

		req_init(&r, CLS_DECODE);
		sse_event(&r,
			  "{\"choices\":[],\"usage\":{\"completion_tokens\":1},\"timings\":[{"
			  "\"index\":0,\"queue_ms\":0,\"prefill_ms\":2,\"transfer_ms\":null,"
			  "\"decode_ms\":null,\"partition\":\"mix\"}]}",
			  1.0);
		CHECK(r.has_srv && r.srv.queue_ms == 0 && r.srv.prefill_ms == 2 &&
		      isnan(r.srv.transfer_ms) && isnan(r.srv.decode_ms) &&
		      !strcmp(r.part, "mix") && !r.pre_part[0]);
		req_fini(&r);
		req_init(&r, CLS_DECODE);
		sse_event(&r, "{\"choices\":[],\"usage\":{\"completion_tokens\":1}}", 1.0);
		CHECK(!r.has_srv && r.usage_tokens == 1);
		req_fini(&r);
	}

	/* Whole answers over a socket, through exchange(). */
	buf_printf(&ans, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
			 "Transfer-Encoding: chunked\r\n\r\n");
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		buf_printf(&ans, "%zx\r\n", strlen(chunks[i]));
		client_buf_add(&ans, chunks[i], strlen(chunks[i]));
		client_buf_add(&ans, "\r\n", 2);
	}
	buf_printf(&ans, "0\r\nX-Trailer: 1\r\n\r\n");
	CHECK(mkdtemp(dir) != NULL);
	snprintf(sock, sizeof(sock), "%s/api.sock", dir);
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(lfd >= 0 && !bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) && !listen(lfd, 4));
	O.sock = sock;
	O.timeout = 10;
	if (!fails && ans.p) {
		struct req r;

		req_init(&r, CLS_DECODE);
		CHECK(canned_exchange(&r, lfd, ans.p, ans.len) == 0);
		req_settle(&r, 0);
		CHECK_STREAM(r);
		CHECK(r.t_write > 0 && r.stage == CLIENT_RECV);
		req_fini(&r);

		req_init(&r, CLS_DECODE);
		CHECK(canned_exchange(&r, lfd, refused, sizeof(refused) - 1) == 0);
		req_settle(&r, 0);
		CHECK(r.err == BS_ERR_HTTP_429 && !strcmp(r.err_code, "QFULL: full"));
		req_fini(&r);

		/* Cut short: a connection closed early is not a malformed answer. */
		req_init(&r, CLS_DECODE);
		CHECK(canned_exchange(&r, lfd, ans.p, ans.len / 2) == -ECONNRESET);
		req_settle(&r, -ECONNRESET);
		CHECK(r.err == BS_ERR_CUT);
		req_fini(&r);

		req_init(&r, CLS_DECODE);
		CHECK(canned_exchange(&r, lfd, bad_size, sizeof(bad_size) - 1) == -EPROTO);
		req_settle(&r, -EPROTO);
		CHECK(r.err == BS_ERR_PROTOCOL);
		req_fini(&r);

		/* No length, no chunking: the body runs to EOF. */
		req_init(&r, CLS_DECODE);
		CHECK(canned_exchange(&r, lfd, error_frame, sizeof(error_frame) - 1) == 0);
		req_settle(&r, 0);
		CHECK(r.err == BS_ERR_ERROR_FRAME &&
		      !strcmp(r.err_code, "WORKER_LOST: worker died"));
		CHECK(r.tok_t.n == 1);
		req_fini(&r);
	}
	if (lfd >= 0)
		close(lfd);
	unlink(sock);
	rmdir(dir);
	free(sse.p);
	free(ans.p);
#undef CHECK_STREAM
#undef CHECK
	printf("selftest: %s\n", fails ? "FAILED" : "ok");
	return fails ? 1 : 0;
}

/* ---------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------- */
/*
 * --rescore SWEEP.json --slo-ttft-ms X --slo-tpot-ms Y [--target F] [--json OUT]:
 * the same sweep judged against other SLOs, from its per-request records
 * (a request meets them by sv_meets, as during the run: it succeeded, its
 * TTFT is within X, and its TPOT, when it has one, within Y).  Prints attainment per rate
 * and the goodput; writes the sweep with "slo", each rate's "slo_ok" and
 * "attainment", "goodput" and "goodput_bound" replaced (and "rescored_from")
 * to OUT, which --overlay can draw.  0, 1 when the file cannot be read or has
 * no per-request records, 2 on bad usage.
 */
static int rescore_main(int n, char **args)
{
	const struct sv_slo slo = { O.slo_ttft_ms, O.slo_tpot_ms };
	struct sv_point pts[64];
	size_t n_rows, n_pts = 0;
	json_t *doc, **rows = NULL;
	json_error_t jerr;
	double goodput;
	enum sv_bound bound;
	int ret = 1;

	if (n != 1 || !(O.slo_ttft_ms > 0) || !(O.slo_tpot_ms > 0) ||
	    !(O.target > 0 && O.target <= 1)) {
		fprintf(stderr, "bench_serve: --rescore: one SWEEP.json, --slo-ttft-ms and "
				"--slo-tpot-ms > 0\n");
		return 2;
	}
	doc = json_load_file(args[0], 0, &jerr);
	if (!doc || !json_is_array(json_object_get(doc, "rates"))) {
		fprintf(stderr, "bench_serve: --rescore: %s: %s\n", args[0],
			doc ? "no \"rates\" array" : jerr.text);
		goto out;
	}
	rows = sorted_rows(json_object_get(doc, "rates"), &n_rows);
	if (!rows || !n_rows || n_rows > 64) {
		fprintf(stderr, "bench_serve: --rescore: %s: %s\n", args[0],
			!rows ? "out of memory" : "no rates, or more than 64");
		goto out;
	}
	printf("rescored %s: TTFT <= %g ms and TPOT <= %g ms, target %g%%\n", args[0],
	       O.slo_ttft_ms, O.slo_tpot_ms, O.target * 100);
	printf("%10s %9s %9s %11s\n", "rate", "requests", "slo_ok", "attainment");
	for (size_t i = 0; i < n_rows; i++) {
		json_t *recs = json_object_get(rows[i], "per_request"), *x;
		size_t k, sent = json_array_size(recs), ok = 0;

		if (!json_is_array(recs) || !sent) {
			fprintf(stderr,
				"bench_serve: --rescore: %s: rate %g has no per_request "
				"records (written by an older bench_serve?)\n",
				args[0], jms(rows[i], "rate"));
			goto out;
		}
		json_array_foreach(recs, k, x)
		{
			const char *outcome = json_string_value(json_object_get(x, "outcome"));

			ok += sv_meets(outcome && !strcmp(outcome, "ok"), jms(x, "ttft_ms"),
				       jms(x, "tpot_ms"), &slo);
		}
		pts[n_pts++] = (struct sv_point){ jms(rows[i], "rate"), (double)ok / (double)sent };
		json_object_set_new(rows[i], "slo_ok", json_integer((json_int_t)ok));
		json_object_set_new(rows[i], "attainment", jnum((double)ok / (double)sent));
		printf("%10.3g %9zu %9zu %10.1f%%\n", pts[n_pts - 1].rate, sent, ok,
		       pts[n_pts - 1].attainment * 100);
	}
	goodput = sv_goodput_of(pts, n_pts, O.target);
	bound = sv_bound_of(pts, n_pts, goodput);
	if (bound == SV_BELOW)
		printf("goodput: below the lowest rate swept (%g)\n", pts[0].rate);
	else
		printf("goodput: %s%g requests/s\n", bound == SV_AT_LEAST ? ">= " : "", goodput);
	json_object_set_new(doc, "slo",
			    json_pack("{s:f,s:f,s:f}", "ttft_ms", O.slo_ttft_ms, "tpot_ms",
				      O.slo_tpot_ms, "target", O.target));
	json_object_set_new(doc, "goodput", jnum(goodput <= 0 ? 0 : goodput));
	json_object_set_new(doc, "goodput_bound", json_string(sv_bound_name(bound)));
	json_object_set_new(doc, "rescored_from", json_string(args[0]));
	if (O.json_path && json_dump_file(doc, O.json_path, JSON_INDENT(1))) {
		fprintf(stderr, "bench_serve: --rescore: cannot write %s: %s\n", O.json_path,
			strerror(errno));
		goto out;
	}
	ret = 0;
out:
	free(rows);
	json_decref(doc);
	return ret;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_serve SOCKET [options]    load api.sock, report TTFT/TPOT/ITL\n"
		"       bench_serve --selftest\n"
		"  --duration S        measured window, seconds (30)\n"
		"  --warmup S          load before the window, seconds (5)\n"
		"  --decoders K        closed-loop decoding clients (4)\n"
		"  --decode-tokens M   output tokens of each decoding request (128)\n"
		"  --long-rate R       long-prompt arrivals per second, Poisson (0)\n"
		"  --long-clients C    closed-loop long-prompt clients (0)\n"
		"  --long-tokens L     prompt tokens of a long request (512)\n"
		"  --long-out N        output tokens of a long request (8)\n"
		"  --long-pool P       threads that send the Poisson arrivals (64)\n"
		"  --seed N            arrivals and prompts (1)\n"
		"  --ban-token ID      logit_bias ID: -100 on every request (instead of ignore_eos)\n"
		"  --timeout S         limit on each read and write, seconds (120)\n"
		"  --model NAME        model field of the requests (first of /v1/models)\n"
		"  --json FILE         also write the results as JSON\n"
		"Trace mode (open-loop requests from a trace; any of these options selects it):\n"
		"  --profile P         chat, summarize, agent or mixed (mixed)\n"
		"  --trace FILE        replay a JSONL trace (as recorded, or scaled to --rate/--sweep)\n"
		"  --rate R            one run at R requests/s\n"
		"  --sweep RATES       R1,R2,... (each measured) or LO..HI (bisection for goodput)\n"
		"  --write-trace FILE  write the trace of --rate (or the sweep's first rate) and exit\n"
		"                      (- = stdout; SOCKET optional with --max-context)\n"
		"  --burstiness K      gamma shape of the gaps: 1 Poisson, < 1 burstier (1)\n"
		"  --duration S        seconds of arrivals per rate (30)\n"
		"  --num-requests N    or N requests per rate\n"
		"  --max-context N     tokens the model takes (asked of the server)\n"
		"  --slo-ttft-ms X     TTFT SLO (needed by --sweep)\n"
		"  --slo-tpot-ms Y     TPOT SLO (needed by --sweep)\n"
		"  --target F          attainment that counts for goodput (0.9)\n"
		"  --sweep-tol R       bisection: stop when the bounds are R apart (0.1)\n"
		"  --sweep-max N       bisection: at most N rates (8)\n"
		"  --senders N         threads sending a trace's requests (256)\n"
		"  --plot-dir DIR      SVG plots with gnuplot of a sweep (default: next to --json)\n"
		"  --unloaded N        unloaded latency: the trace's first N requests, one at a time\n"
		"                      (TTFT and TPOT p50 / p90; no --sweep)\n"
		"       bench_serve --overlay [LABEL=]SWEEP.json ... [--plot-dir DIR]\n"
		"                      one plot per figure over several sweeps (attainment, TPOT p99,\n"
		"                      TTFT p90 vs rate; PROFILE-*.svg), and each sweep's goodput\n"
		"       bench_serve --rescore SWEEP.json --slo-ttft-ms X --slo-tpot-ms Y [--json OUT]\n"
		"                      the sweep's attainment and goodput under other SLOs, from its\n"
		"                      per-request records (OUT: the sweep rescored, for --overlay)\n");
}

/* Numeric and string options: --name VALUE sets *p. */
static const struct opt_def {
	const char *name;
	char kind; /* 'd' double, 'i' int, 'u' uint64_t, 's' string */
	void *p;
} opt_defs[] = {
	{ "duration", 'd', &O.duration },
	{ "warmup", 'd', &O.warmup },
	{ "decoders", 'i', &O.decoders },
	{ "decode-tokens", 'i', &O.decode_tokens },
	{ "long-rate", 'd', &O.long_rate },
	{ "long-clients", 'i', &O.long_clients },
	{ "long-tokens", 'i', &O.long_tokens },
	{ "long-out", 'i', &O.long_out },
	{ "long-pool", 'i', &O.long_pool },
	{ "seed", 'u', &O.seed },
	{ "ban-token", 'i', &O.ban_token },
	{ "timeout", 'd', &O.timeout },
	{ "model", 's', &O.model },
	{ "json", 's', &O.json_path },
	{ "profile", 's', &O.profile },
	{ "trace", 's', &O.trace_path },
	{ "write-trace", 's', &O.write_trace },
	{ "sweep", 's', &O.sweep },
	{ "plot-dir", 's', &O.plot_dir },
	{ "rate", 'd', &O.rate },
	{ "burstiness", 'd', &O.burstiness },
	{ "sweep-tol", 'd', &O.sweep_tol },
	{ "sweep-max", 'i', &O.sweep_max },
	{ "max-context", 'i', &O.max_context },
	{ "num-requests", 'i', &O.num_requests },
	{ "senders", 'i', &O.senders },
	{ "slo-ttft-ms", 'd', &O.slo_ttft_ms },
	{ "slo-tpot-ms", 'd', &O.slo_tpot_ms },
	{ "target", 'd', &O.target },
	{ "unloaded", 'i', &O.unloaded },
};
#define N_OPT_DEFS (sizeof(opt_defs) / sizeof(opt_defs[0]))

/* Returns 0, 1 for --selftest, 2 for --overlay, 3 for --rescore, or -1 on a bad command line. */
static int parse_opts(int argc, char **argv)
{
	struct option lo[N_OPT_DEFS + 5] = { { 0 } };
	int c, idx;

	for (size_t i = 0; i < N_OPT_DEFS; i++)
		lo[i] = (struct option){ opt_defs[i].name, required_argument, NULL, 0 };
	lo[N_OPT_DEFS] = (struct option){ "selftest", no_argument, NULL, 'S' };
	lo[N_OPT_DEFS + 1] = (struct option){ "help", no_argument, NULL, 'h' };
	lo[N_OPT_DEFS + 2] = (struct option){ "overlay", no_argument, NULL, 'O' };
	lo[N_OPT_DEFS + 3] = (struct option){ "rescore", no_argument, NULL, 'R' };
	while ((c = getopt_long(argc, argv, "h", lo, &idx)) != -1) {
		const struct opt_def *d;
		char *end;

		if (c == 'S')
			return 1;
		if (c == 'O' || c == 'R') {
			*(c == 'O' ? &O.overlay : &O.rescore) = true;
			continue;
		}
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		if (c != 0)
			return -1;
		d = &opt_defs[idx];
		errno = 0;
		switch (d->kind) {
		case 'd':
			*(double *)d->p = strtod(optarg, &end);
			break;
		case 'i': {
			long v = strtol(optarg, &end, 10);

			*(int *)d->p = v < INT32_MIN || v > INT32_MAX ? -1 : (int)v;
			break;
		}
		case 'u':
			*(uint64_t *)d->p = strtoull(optarg, &end, 0);
			break;
		default:
			*(const char **)d->p = optarg;
			end = optarg + strlen(optarg);
			break;
		}
		if (errno || end == optarg || *end) {
			fprintf(stderr, "bench_serve: --%s: not a number: %s\n", d->name, optarg);
			return -1;
		}
	}
	if (O.overlay)
		return 2; /* argv[optind..] are the files */
	if (O.rescore)
		return 3;
	if (optind == argc - 1) {
		O.sock = argv[optind];
	} else if (optind != argc || !O.write_trace) {
		fprintf(stderr, "bench_serve: need exactly one SOCKET\n");
		return -1;
	}
	if (trace_mode()) {
		if (O.rate < 0 || !(O.burstiness > 0) || !(O.sweep_tol > 0) || O.sweep_max < 2 ||
		    O.sweep_max > 64 || O.max_context < 0 || O.num_requests < 0 || O.senders < 1 ||
		    O.senders > 4096 || O.unloaded < 0 || O.slo_ttft_ms < 0 || O.slo_tpot_ms < 0 ||
		    !(O.target > 0 && O.target <= 1) || !(O.timeout > 0) || !(O.duration > 0)) {
			fprintf(stderr, "bench_serve: an option is out of range (see --help)\n");
			return -1;
		}
		return 0;
	}
	if (!(O.duration > 0) || O.warmup < 0 || O.decoders < 0 || O.decoders > 1024 ||
	    O.decode_tokens < 1 || O.long_rate < 0 || O.long_clients < 0 || O.long_clients > 1024 ||
	    O.long_tokens < 1 || O.long_out < 1 || O.long_pool < 1 || O.long_pool > 1024 ||
	    !(O.timeout > 0)) {
		fprintf(stderr, "bench_serve: an option is out of range (see --help)\n");
		return -1;
	}
	if (!O.decoders && !O.long_rate && !O.long_clients) {
		fprintf(stderr, "bench_serve: no load: give --decoders, --long-rate or "
				"--long-clients\n");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct client *cl = NULL;
	pthread_t arr, *senders = NULL;
	int n_cl, rc;
	double t0;

	rc = parse_opts(argc, argv);
	if (rc < 0) {
		fprintf(stderr, "usage: bench_serve SOCKET [options] (--help lists them)\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	json_object_seed(0); /* once, before any thread makes objects */
	if (rc == 1)
		return selftest();
	if (rc == 2)
		return overlay_main(argc - optind, argv + optind);
	if (rc == 3)
		return rescore_main(argc - optind, argv + optind);
	for (int c = 0; c < NCLS; c++)
		pthread_mutex_init(&stats[c].mu, NULL);
	if (trace_mode())
		return trace_main();
	if (setup())
		return 1;

	n_cl = O.decoders + O.long_clients;
	cl = calloc((size_t)n_cl + 1, sizeof(*cl));
	senders = calloc((size_t)O.long_pool, sizeof(*senders));
	if (!cl || !senders)
		return 1;
	for (int c = 0; c < NCLS; c++) {
		const struct sv_slo none = { INFINITY, INFINITY };

		if (sv_run_create(&none, &stats[c].sv)) {
			fprintf(stderr, "bench_serve: out of memory\n");
			return 1;
		}
	}
	t0 = now_s();
	win_start = t0 + O.warmup;
	win_end = win_start + O.duration;
	arrivals.next_rng = O.seed ^ 0x6C6F6E67ull;
	for (int i = 0; i < n_cl; i++) {
		cl[i].cls = i < O.decoders ? CLS_DECODE : CLS_LONG;
		cl[i].rng = O.seed * 1000003u + (uint64_t)i;
		pthread_create(&cl[i].th, NULL, client_main, &cl[i]);
	}
	if (O.long_rate > 0) {
		for (int i = 0; i < O.long_pool; i++)
			pthread_create(&senders[i], NULL, sender_main, NULL);
		pthread_create(&arr, NULL, arrival_main, &t0);
	}
	for (int i = 0; i < n_cl; i++)
		pthread_join(cl[i].th, NULL);
	if (O.long_rate > 0) {
		pthread_join(arr, NULL);
		for (int i = 0; i < O.long_pool; i++)
			pthread_join(senders[i], NULL);
	}
	rc = report(now_s());
	for (int c = 0; c < NCLS; c++)
		sv_run_destroy(stats[c].sv);
	sv_dvec_free(&arrivals.due);
	free(pool_ids);
	free(senders);
	free(cl);
	return rc;
}
