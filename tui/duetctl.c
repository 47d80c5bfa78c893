// SPDX-License-Identifier: MIT
/*
 * duetctl — the command-line client of duetd's UNIX-socket HTTP API.
 *
 *   duetctl [-s SOCKET] COMMAND [ARGS]
 *
 * Speaks HTTP/1.1 itself over AF_UNIX (one request per connection,
 * "Connection: close"); reads Content-Length, chunked and until-EOF bodies,
 * and parses SSE "data:" frames as they arrive for --stream.  JSON through
 * jansson.  `profile` and `plan` measure and use the planner's cost model
 * (tui/plan.h, docs/benchmarks.md "Planning").  Exit codes: 0 ok, 1 the
 * request failed, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tui/client.h"
#include "tui/plan.h"

#define PROG "duetctl"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char *sock_path;	    /* api.sock: the OpenAI routes, status */
static const char *admin_sock_path; /* admin.sock: the /admin routes */

static void usage(FILE *fp)
{
	fprintf(fp,
		"usage: " PROG " [-s SOCKET] [--admin-socket SOCKET] COMMAND [ARGS]\n"
		"\n"
		"The CLI over duetd's sockets (HTTP/1.1 over UNIX sockets).\n"
		"\n"
		"Commands (api.sock):\n"
		"  health                     GET /health; prints ok or the reason (exit 0 only on 200)\n"
		"  generate PROMPT [options]  POST /v1/completions; prints the generated text\n"
		"      -n, --max-tokens N     tokens to generate (default: api.default_max_tokens)\n"
		"      --temp T               sampling temperature (0 = greedy)\n"
		"      --seed S               sampling seed\n"
		"      --stream               print tokens as the SSE frames arrive\n"
		"      -m, --model NAME       model name (default: the first of GET /v1/models)\n"
		"  chat MESSAGE [options]     POST /v1/chat/completions; prints the reply\n"
		"      -n N, --temp T, --seed S, --stream, -m NAME as for generate\n"
		"      --system S             a system message before MESSAGE\n"
		"  tokenize TEXT              POST /v1/tokenize; prints the token ids and count\n"
		"  models                     GET /v1/models; prints one model id per line\n"
		"  metrics                    GET /metrics; prints the Prometheus text\n"
		"  status [--json]            GET /v1/status as a summary and a partition table\n"
		"                             (--json: the JSON as the daemon sent it)\n"
		"  partitions                 the partition table of /v1/status\n"
		"  profile [options]          measure the planner's cost model (seconds): prefill\n"
		"                             time per prompt length, decode step per batch size,\n"
		"                             KV transfer; JSON to stdout or --out\n"
		"      --out FILE             write the JSON there and print a summary\n"
		"      --cores N              cores of each partition (default: its cpus)\n"
		"      --ban-token ID         logit_bias -100 on ID (an EOS) so answers run full\n"
		"      --max-context N        the model's context (default: asked of the server)\n"
		"      --decode-tokens N      tokens per decode request (default 24)\n"
		"      --decode-batches LIST  batch sizes of the decode table (default 1,2,4,8)\n"
		"\n"
		"Planning (no daemon needed):\n"
		"  plan --profile FILE --slo-ttft-ms X --slo-tpot-ms Y [options]\n"
		"                             simulate a trace on every split of the cores (mixed N,\n"
		"                             1p(N-1)d, ...); print predicted goodput, recommend one\n"
		"      --cores N              cores to split (default: the profiled machine's)\n"
		"      --trace-profile P      chat (default), summarize, agent or mixed\n"
		"      --trace FILE           a JSONL trace (bench_serve's format) instead\n"
		"      --duration S           seconds of generated arrivals at each rate (default 60)\n"
		"      --requests N           at most N requests (with --duration 0: exactly N)\n"
		"      --seed S, --burstiness K (1: Poisson), --max-context N   as bench_serve's\n"
		"      --max-seqs N, --max-batch-tokens N   partitions' limits (default 64, 2048)\n"
		"      --target F             attainment goodput asks for (default 0.9)\n"
		"      --prefill-exp E, --decode-exp E   speed vs cores: time x (c0/c)^E\n"
		"  plan --compare --profile FILE --split S [options] SWEEP.json...\n"
		"                             predict each rate of bench_serve --json sweeps (same\n"
		"                             trace, SLOs) on split S (mixed, mixed N, NpMd) and print\n"
		"                             measured vs predicted attainment and goodput\n"
		"      --trace FILE           the trace a replayed sweep used (default: its path)\n"
		"      --json                 the comparison as JSON\n"
		"\n"
		"Commands (admin.sock; group duet-admin):\n"
		"  drain NAME                 stop routing new requests to partition NAME\n"
		"  undrain NAME               route to partition NAME again\n"
		"  cancel ID                  cancel the in-flight request ID (e.g. cmpl-1f)\n"
		"  requests                   the in-flight and recent requests (GET /admin/requests)\n"
		"  reload                     re-read the configuration; prints what was applied\n"
		"  shutdown                   drain and stop duetd\n"
		"  events                     follow the event log (GET /admin/events) until Ctrl-C\n"
		"\n"
		"Options:\n"
		"  -s, --socket PATH          the socket for every command; else $DUET_SOCKET (api\n"
		"                             commands) or --admin-socket (admin commands); else the\n"
		"                             socket dir duetd uses for api.socket_dir \"\": /run/duet as\n"
		"                             root, else $XDG_RUNTIME_DIR/duet, else build/run\n"
		"  --admin-socket PATH        admin.sock for the admin commands; else $DUET_ADMIN_SOCKET,\n"
		"                             else admin.sock in the socket dir\n"
		"  -h, --help                 this text\n"
		"\n"
		"Exit status: 0 ok, 1 the request failed (connection, HTTP or API error) or a file\n"
		"was bad, 2 usage.\n"
		"api.sock is usually group duet, admin.sock group duet-admin.\n");
}

/* --- requests ------------------------------------------------------------------ */

/* Whole-request limits: quick questions, and generation (which may take long but not stall). */
#define CTL_TIMEOUT_MS (30 * 1000)
#define CTL_GEN_IDLE_MS (300 * 1000)

/* Say why a request could not be made, in terms of what the operator can do. */
static void report_conn_error(const char *sock, int err)
{
	bool admin = strstr(sock, "admin") != NULL;

	if (err == -ENOENT || err == -ECONNREFUSED || err == -ENOTDIR)
		fprintf(stderr, PROG ": no daemon at %s (is duetd running?)\n", sock);
	else if (err == -EACCES || err == -EPERM)
		fprintf(stderr, PROG ": permission denied on %s: your user needs group %s\n", sock,
			admin ? "duet-admin" : "duet (or duet-admin)");
	else
		fprintf(stderr, PROG ": %s: %s\n", sock, client_strerror(err));
}

/*
 * One request to SOCK.  A 200 body goes to FN as it arrives when FN is
 * given; any other body into OUT.  Returns the HTTP status, or -1 after
 * saying why.
 */
static int request_on(const char *sock, const char *method, const char *path, const char *body,
		      client_body_fn fn, void *ctx, struct client_buf *out)
{
	struct client_req req = {
		.sock = sock,
		.method = method,
		.path = path,
		.body = body,
		.agent = PROG,
		.on_body = fn,
		.ctx = ctx,
	};
	int st;

	if (fn) { /* a stream: no deadline, but no endless silence either */
		req.idle_ms = CTL_GEN_IDLE_MS;
	} else {
		req.timeout_ms = CTL_TIMEOUT_MS;
	}
	st = client_request(&req, out);
	if (st >= 0)
		return st;
	if (fn && st == -ECANCELED) /* FN stopped the read and has said why */
		return -1;
	report_conn_error(sock, st);
	return -1;
}

static int request(const char *method, const char *path, const char *body, client_body_fn fn,
		   void *ctx, struct client_buf *out)
{
	return request_on(sock_path, method, path, body, fn, ctx, out);
}

/* The message of an OpenAI-style {"error":{"message":..}} body, or NULL. */
static const char *error_message(json_t *root)
{
	json_t *e = json_object_get(root, "error");

	return json_string_value(json_object_get(e, "message"));
}

/* Say why a non-2xx answer failed: the JSON error message when there is one. */
static int report_http_error(int status, const struct client_buf *body)
{
	char msg[512];

	if (client_error_message(body->p, msg, sizeof(msg)))
		fprintf(stderr, PROG ": %s (HTTP %d)\n", msg, status);
	else
		fprintf(stderr, PROG ": HTTP %d%s%.*s\n", status, body->len ? ": " : "",
			(int)(body->len > 200 ? 200 : body->len), body->p ? body->p : "");
	return EXIT_FAIL;
}

/* GET PATH on SOCK; 0 with the body in OUT on 200, else the exit code after saying why. */
static int get_ok_on(const char *sock, const char *path, struct client_buf *out)
{
	int st = request_on(sock, "GET", path, NULL, NULL, NULL, out);

	if (st < 0)
		return EXIT_FAIL;
	if (st != 200)
		return report_http_error(st, out);
	return 0;
}

static int get_ok(const char *path, struct client_buf *out)
{
	return get_ok_on(sock_path, path, out);
}

/*
 * METHOD PATH on SOCK with an optional JSON BODY; the parsed 2xx answer in
 * *OUT, else the exit code after saying why.
 */
static int call_json_on(const char *sock, const char *method, const char *path, json_t *body,
			json_t **out)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	struct client_buf b = { 0 };
	json_error_t jerr;
	int st;

	if (body && !text) {
		fprintf(stderr, PROG ": out of memory\n");
		return EXIT_FAIL;
	}
	st = request_on(sock, method, path, text, NULL, NULL, &b);
	free(text);
	if (st < 0) {
		client_buf_free(&b);
		return EXIT_FAIL;
	}
	if (st < 200 || st > 299) {
		report_http_error(st, &b);
		client_buf_free(&b);
		return EXIT_FAIL;
	}
	*out = json_loads(b.p ? b.p : "", JSON_ALLOW_NUL, &jerr);
	client_buf_free(&b);
	if (!*out) {
		fprintf(stderr, PROG ": %s answered invalid JSON: %s\n", path, jerr.text);
		return EXIT_FAIL;
	}
	return 0;
}

static int post_json(const char *path, json_t *body, json_t **out)
{
	return call_json_on(sock_path, "POST", path, body, out);
}

/* --- SSE ------------------------------------------------------------------------- */

struct sse {
	struct client_sse p;
	bool chat, done;
	int err; /* set when an error frame or a bad frame ended the stream */
};

/* One completion event: print the text of the chunk, or stop on [DONE] / an error frame. */
static int sse_data(void *ctx, const char *event, const char *data)
{
	struct sse *s = ctx;
	json_t *root, *choice, *text;
	const char *msg;

	if (!strcmp(data, "[DONE]")) {
		s->done = true;
		return 0;
	}
	root = json_loads(data, JSON_ALLOW_NUL, NULL);
	if (!root) {
		fprintf(stderr, PROG ": bad SSE frame: %.200s\n", data);
		s->err = EXIT_FAIL;
		return 1;
	}
	msg = error_message(root);
	if (msg) {
		fflush(stdout);
		fprintf(stderr, "\n" PROG ": %s\n", msg);
		json_decref(root);
		s->err = EXIT_FAIL;
		return 1;
	}
	choice = json_array_get(json_object_get(root, "choices"), 0);
	text = s->chat ? json_object_get(json_object_get(choice, "delta"), "content")
		       : json_object_get(choice, "text");
	if (json_is_string(text)) {
		fwrite(json_string_value(text), 1, json_string_length(text), stdout);
		fflush(stdout);
	}
	json_decref(root);
	return 0;
}

static int sse_feed(void *ctx, const char *p, size_t n)
{
	struct sse *s = ctx;

	return client_sse_feed(&s->p, p, n);
}

/* --- commands ---------------------------------------------------------------------- */

static int cmd_health(void)
{
	struct client_buf b = { 0 };
	int st = request("GET", "/health", NULL, NULL, NULL, &b);
	json_t *root = NULL;
	const char *msg;

	if (st < 0)
		return EXIT_FAIL;
	root = b.p ? json_loads(b.p, JSON_ALLOW_NUL, NULL) : NULL;
	msg = error_message(root);
	if (st == 200)
		printf("ok\n");
	else
		printf("unavailable (HTTP %d): %s\n", st, msg ? msg : "no reason given");
	json_decref(root);
	client_buf_free(&b);
	return st == 200 ? EXIT_OK : EXIT_FAIL;
}

struct gen_opts {
	const char *text, *system, *model;
	long max_tokens; /* -1: the server's default */
	double temp;	 /* < 0: the server's default */
	long long seed;	 /* < 0: none */
	bool stream, have_temp;
};

/* The first id of GET /v1/models into OUT; 0 or the exit code. */
static int first_model(char *out, size_t cap)
{
	struct client_buf b = { 0 };
	json_t *root;
	const char *id;
	int rc = get_ok("/v1/models", &b);

	if (rc) {
		client_buf_free(&b);
		return rc;
	}
	root = json_loads(b.p ? b.p : "", JSON_ALLOW_NUL, NULL);
	id = json_string_value(
		json_object_get(json_array_get(json_object_get(root, "data"), 0), "id"));
	if (id)
		snprintf(out, cap, "%s", id);
	else
		fprintf(stderr, PROG ": /v1/models names no model; give -m NAME\n");
	json_decref(root);
	client_buf_free(&b);
	return id ? 0 : EXIT_FAIL;
}

static int cmd_generate(const struct gen_opts *o, bool chat)
{
	const char *path = chat ? "/v1/chat/completions" : "/v1/completions";
	char model[256];
	json_t *req, *resp = NULL, *choice, *text;
	int rc;

	if (o->model)
		snprintf(model, sizeof(model), "%s", o->model);
	else if ((rc = first_model(model, sizeof(model))))
		return rc;
	req = json_pack("{s:s}", "model", model);
	if (!req)
		return EXIT_FAIL;
	if (chat) {
		json_t *msgs = json_array();

		if (o->system)
			json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system",
							      "content", o->system));
		json_array_append_new(msgs,
				      json_pack("{s:s,s:s}", "role", "user", "content", o->text));
		json_object_set_new(req, "messages", msgs);
	} else {
		json_object_set_new(req, "prompt", json_string(o->text));
	}
	if (o->max_tokens >= 0)
		json_object_set_new(req, "max_tokens", json_integer(o->max_tokens));
	if (o->have_temp)
		json_object_set_new(req, "temperature", json_real(o->temp));
	if (o->seed >= 0)
		json_object_set_new(req, "seed", json_integer(o->seed));

	if (o->stream) {
		struct sse s = { .p = { .on_event = sse_data }, .chat = chat };
		struct client_buf err = { 0 };
		char *body;
		int st;

		s.p.ctx = &s;
		json_object_set_new(req, "stream", json_true());
		body = json_dumps(req, JSON_COMPACT);
		json_decref(req);
		if (!body)
			return EXIT_FAIL;
		/* A non-200 answer is a JSON error body, not SSE: it lands in ERR. */
		st = request("POST", path, body, sse_feed, &s, &err);
		if (st > 0 && st != 200) {
			report_http_error(st, &err);
			client_buf_free(&err);
			client_sse_free(&s.p);
			free(body);
			return EXIT_FAIL;
		}
		free(body);
		client_sse_free(&s.p);
		client_buf_free(&err);
		if (st < 0)
			return s.err ? s.err : EXIT_FAIL;
		printf("\n");
		if (!s.done) {
			fprintf(stderr, PROG ": the stream ended without data: [DONE]\n");
			return EXIT_FAIL;
		}
		return EXIT_OK;
	}

	rc = post_json(path, req, &resp);
	json_decref(req);
	if (rc)
		return rc;
	choice = json_array_get(json_object_get(resp, "choices"), 0);
	text = chat ? json_object_get(json_object_get(choice, "message"), "content")
		    : json_object_get(choice, "text");
	if (!json_is_string(text)) {
		fprintf(stderr, PROG ": %s answered without choices[0] text\n", path);
		json_decref(resp);
		return EXIT_FAIL;
	}
	fwrite(json_string_value(text), 1, json_string_length(text), stdout);
	printf("\n");
	json_decref(resp);
	return EXIT_OK;
}

static int cmd_tokenize(const char *text)
{
	json_t *req = json_pack("{s:s}", "prompt", text), *resp = NULL, *toks, *v;
	size_t i;
	int rc;

	if (!req)
		return EXIT_FAIL;
	rc = post_json("/v1/tokenize", req, &resp);
	json_decref(req);
	if (rc)
		return rc;
	toks = json_object_get(resp, "tokens");
	json_array_foreach(toks, i, v) printf(
		i ? " %" JSON_INTEGER_FORMAT : "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	printf("\n%zu tokens\n", json_array_size(toks));
	json_decref(resp);
	return EXIT_OK;
}

static int cmd_models(void)
{
	struct client_buf b = { 0 };
	json_t *root, *m;
	size_t i;
	int rc = get_ok("/v1/models", &b);

	if (!rc) {
		root = json_loads(b.p ? b.p : "", JSON_ALLOW_NUL, NULL);
		json_array_foreach(json_object_get(root, "data"), i, m)
			printf("%s\n", json_string_value(json_object_get(m, "id")));
		json_decref(root);
	}
	client_buf_free(&b);
	return rc;
}

static int cmd_metrics(void)
{
	struct client_buf b = { 0 };
	int rc = get_ok("/metrics", &b);

	if (!rc && b.len)
		fwrite(b.p, 1, b.len, stdout);
	client_buf_free(&b);
	return rc;
}

/* The families `status` shows, summed over their label sets (partitions, reasons). */
static const struct {
	const char *name, *label;
} status_rows[] = {
	{ "duet_up", "up" },
	{ "duet_requests_running", "requests running" },
	{ "duet_requests_waiting", "requests waiting" },
	{ "duet_kv_blocks_used", "KV blocks used" },
	{ "duet_kv_blocks_total", "KV blocks total" },
	{ "duet_prompt_tokens_total", "prompt tokens" },
	{ "duet_generation_tokens_total", "generated tokens" },
	{ "duet_request_success_total", "requests finished" },
	{ "duet_preemptions_total", "preemptions" },
	{ "duet_worker_restarts_total", "worker restarts" },
};

#define N_STATUS_ROWS (sizeof(status_rows) / sizeof(status_rows[0]))

/* Sum each status_rows family's samples in the Prometheus TEXT; SEEN marks those present. */
static void parse_metrics(char *text, double *val, bool *seen)
{
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		size_t nl = strcspn(line, "{ ");
		char *v;

		if (line[0] == '#')
			continue;
		v = strrchr(line, ' ');
		if (!v)
			continue;
		for (size_t i = 0; i < N_STATUS_ROWS; i++) {
			if (strlen(status_rows[i].name) == nl &&
			    !strncmp(line, status_rows[i].name, nl)) {
				val[i] += strtod(v + 1, NULL);
				seen[i] = true;
			}
		}
	}
}

/* The summary of /health and /metrics, for a duetd without /v1/status. */
static int status_from_metrics(bool as_json)
{
	struct client_buf h = { 0 }, m = { 0 };
	double val[N_STATUS_ROWS] = { 0 };
	bool seen[N_STATUS_ROWS] = { 0 };
	json_t *hj;
	const char *why;
	int st, mst;

	st = request("GET", "/health", NULL, NULL, NULL, &h);
	if (st < 0)
		return EXIT_FAIL;
	hj = h.p ? json_loads(h.p, JSON_ALLOW_NUL, NULL) : NULL;
	why = st == 200 ? NULL : error_message(hj);
	mst = request("GET", "/metrics", NULL, NULL, NULL, &m);
	if (mst == 200 && m.p)
		parse_metrics(m.p, val, seen);

	if (as_json) {
		json_t *o = json_object(), *mo = json_object();

		json_object_set_new(o, "socket", json_string(sock_path));
		json_object_set_new(o, "healthy", json_boolean(st == 200));
		json_object_set_new(o, "health_status", json_integer(st));
		if (st != 200)
			json_object_set_new(o, "reason", json_string(why ? why : ""));
		for (size_t i = 0; i < N_STATUS_ROWS; i++)
			if (seen[i])
				json_object_set_new(mo, status_rows[i].name, json_real(val[i]));
		json_object_set_new(o, "metrics", mo);
		json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
		printf("\n");
		json_decref(o);
	} else {
		printf("%-20s %s\n", "socket", sock_path);
		if (st == 200)
			printf("%-20s ok\n", "health");
		else
			printf("%-20s unavailable (HTTP %d): %s\n", "health", st,
			       why ? why : "no reason given");
		for (size_t i = 0; i < N_STATUS_ROWS; i++)
			if (seen[i])
				printf("%-20s %.15g\n", status_rows[i].label, val[i]);
		if (mst != 200)
			printf("%-20s unavailable (HTTP %d)\n", "metrics", mst);
	}
	json_decref(hj);
	client_buf_free(&h);
	client_buf_free(&m);
	return st == 200 && mst == 200 ? EXIT_OK : EXIT_FAIL;
}

/* --- /v1/status ----------------------------------------------------------------- */

static double num(json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

static const char *str(json_t *o, const char *key, const char *dflt)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : dflt;
}

/* "1h02m", "3m05s", "12.5s" */
static void fmt_duration(char *out, size_t cap, double s)
{
	long t = (long)s;

	if (s < 60)
		snprintf(out, cap, "%.1fs", s);
	else if (t < 3600)
		snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
	else if (t < 86400)
		snprintf(out, cap, "%ldh%02ldm", t / 3600, t % 3600 / 60);
	else
		snprintf(out, cap, "%ldd%02ldh", t / 86400, t % 86400 / 3600);
}

/* A number of ms, or "-" for JSON null / absent. */
static void fmt_ms(char *out, size_t cap, json_t *v)
{
	if (json_is_number(v))
		snprintf(out, cap, "%.1f", json_number_value(v));
	else
		snprintf(out, cap, "-");
}

/* "12/256": KV blocks in use (used + leased) of the total. */
static void print_partitions(json_t *parts)
{
	json_t *p;
	size_t i;

	printf("%-12s %-8s %-10s %-8s %-9s %4s %4s %5s %11s %5s %7s %5s\n", "PARTITION", "ROLE",
	       "DEVICES", "CPUS", "STATE", "RUN", "WAIT", "BATCH", "KV USED", "HIT%", "STEP ms",
	       "UTIL%");
	json_array_foreach(parts, i, p)
	{
		json_t *kv = json_object_get(p, "kv"), *pc = json_object_get(p, "prefix_cache"), *d;
		char devs[64] = "", kvs[32], hit[16];
		size_t j, o = 0;

		json_array_foreach(json_object_get(p, "devices"), j, d)
		{
			int w = snprintf(devs + o, sizeof(devs) - o, "%s%s", j ? "," : "",
					 json_string_value(d) ? json_string_value(d) : "?");

			if (w < 0 || (size_t)w >= sizeof(devs) - o)
				break;
			o += (size_t)w;
		}
		snprintf(kvs, sizeof(kvs), "%.0f/%.0f", num(kv, "used") + num(kv, "leased"),
			 num(kv, "total"));
		if (num(pc, "queries") > 0)
			snprintf(hit, sizeof(hit), "%.0f",
				 100.0 * num(pc, "hits") / num(pc, "queries"));
		else
			snprintf(hit, sizeof(hit), "-");
		printf("%-12s %-8s %-10s %-8s %-9s %4.0f %4.0f %5.0f %11s %5s %7.1f %5.0f\n",
		       str(p, "name", "?"), str(p, "role", "?"), devs[0] ? devs : "-",
		       str(p, "cpus", "")[0] ? str(p, "cpus", "") : "all", str(p, "state", "?"),
		       num(p, "running"), num(p, "waiting"), num(p, "batch"), kvs, hit,
		       num(p, "step_ms"), 100.0 * num(p, "utilization"));
		if (json_is_string(json_object_get(p, "why")))
			printf("%-12s   why: %s\n", "", str(p, "why", ""));
	}
}

/* GET /v1/status on SOCK, parsed into *OUT; 0, -1 when the route is missing, else the exit code. */
static int get_status(const char *sock, json_t **out, struct client_buf *raw)
{
	json_error_t jerr;
	int st = request_on(sock, "GET", "/v1/status", NULL, NULL, NULL, raw);

	if (st < 0)
		return EXIT_FAIL;
	if (st == 404)
		return -1;
	if (st != 200)
		return report_http_error(st, raw);
	*out = json_loads(raw->p ? raw->p : "", JSON_ALLOW_NUL, &jerr);
	if (!*out) {
		fprintf(stderr, PROG ": /v1/status answered invalid JSON: %s\n", jerr.text);
		return EXIT_FAIL;
	}
	return 0;
}

static int cmd_status(bool as_json)
{
	struct client_buf raw = { 0 };
	json_t *root = NULL, *h, *tot, *win, *slo;
	char up[32];
	int rc = get_status(sock_path, &root, &raw);

	if (rc < 0) { /* an older duetd: what /health and /metrics say */
		client_buf_free(&raw);
		return status_from_metrics(as_json);
	}
	if (rc) {
		client_buf_free(&raw);
		return rc;
	}
	if (as_json) {
		fwrite(raw.p, 1, raw.len, stdout);
		if (raw.len && raw.p[raw.len - 1] != '\n')
			printf("\n");
		goto out;
	}
	h = json_object_get(root, "health");
	tot = json_object_get(root, "totals");
	win = json_object_get(root, "window");
	slo = json_object_get(root, "slo");
	fmt_duration(up, sizeof(up), num(root, "uptime_s"));
	printf("%-20s %s\n", "socket", sock_path);
	printf("%-20s %s (model %s, version %s)\n", "appliance", str(root, "name", "?"),
	       str(root, "model", "?"), str(root, "version", "?"));
	printf("%-20s %s, up %s\n", "state", str(root, "state", "?"), up);
	if (json_is_true(json_object_get(h, "ok")))
		printf("%-20s ok\n", "health");
	else
		printf("%-20s unhealthy: %s\n", "health", str(h, "reason", "no reason given"));
	printf("%-20s %s\n", "access",
	       json_is_true(json_object_get(root, "admin")) ? "admin" : "read-only");
	printf("%-20s %.0f (%.0f ok, %.0f failed, %.0f cancelled)\n", "requests",
	       num(tot, "requests"), num(tot, "requests_ok"), num(tot, "requests_failed"),
	       num(tot, "requests_cancelled"));
	printf("%-20s %.0f\n", "prompt tokens", num(tot, "prompt_tokens"));
	printf("%-20s %.0f\n", "generated tokens", num(tot, "generation_tokens"));
	printf("%-20s %.0f\n", "worker restarts", num(tot, "worker_restarts"));
	if (num(win, "requests") > 0) {
		double n = num(win, "requests");
		json_t *tt = json_object_get(win, "ttft_ms"), *tp = json_object_get(win, "tpot_ms");

		printf("%-20s TTFT<=%.0fms %.0f%%, TPOT<=%.0fms %.0f%%, both %.0f%% (target %.0f%%) "
		       "over %.0f requests in %.0fs\n",
		       "SLO attainment", num(slo, "ttft_ms"), 100 * num(win, "ttft_ok") / n,
		       num(slo, "tpot_ms"), 100 * num(win, "tpot_ok") / n,
		       100 * num(win, "slo_ok") / n, 100 * num(slo, "attainment"), n,
		       num(win, "window_s"));
		printf("%-20s p50 %.1f  p90 %.1f  p99 %.1f ms\n", "TTFT", num(tt, "p50"),
		       num(tt, "p90"), num(tt, "p99"));
		printf("%-20s p50 %.1f  p90 %.1f  p99 %.1f ms\n", "TPOT", num(tp, "p50"),
		       num(tp, "p90"), num(tp, "p99"));
	} else {
		printf("%-20s no requests finished in the last %.0fs\n", "SLO attainment",
		       num(win, "window_s"));
	}
	printf("\n");
	print_partitions(json_object_get(root, "partitions"));
	rc = json_is_true(json_object_get(h, "ok")) ? EXIT_OK : EXIT_FAIL;
out:
	json_decref(root);
	client_buf_free(&raw);
	return rc;
}

static int cmd_partitions(void)
{
	struct client_buf raw = { 0 };
	json_t *root = NULL;
	int rc = get_status(sock_path, &root, &raw);

	if (rc < 0) {
		fprintf(stderr, PROG ": this duetd does not serve /v1/status (HTTP 404)\n");
		rc = EXIT_FAIL;
	} else if (rc == 0) {
		print_partitions(json_object_get(root, "partitions"));
	}
	json_decref(root);
	client_buf_free(&raw);
	return rc;
}

/* --- admin commands ----------------------------------------------------------------- */

static int cmd_drain(const char *name, bool drain)
{
	json_t *req = json_pack("{s:s}", "partition", name), *resp = NULL;
	int rc;

	if (!req)
		return EXIT_FAIL;
	rc = call_json_on(admin_sock_path, "POST", drain ? "/admin/drain" : "/admin/undrain", req,
			  &resp);
	json_decref(req);
	if (rc)
		return rc;
	printf("%s: %s\n", str(resp, "partition", name), str(resp, "state", "?"));
	json_decref(resp);
	return EXIT_OK;
}

static int cmd_cancel(const char *id)
{
	char path[512];
	json_t *resp = NULL;
	int rc;

	/* Ids are the daemon's own ("cmpl-1f"); refuse what would need escaping in a path. */
	if (!id[0] || strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				 "0123456789-_.:") != strlen(id)) {
		fprintf(stderr, PROG ": bad request id '%s'\n", id);
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "/admin/requests/%s/cancel", id);
	rc = call_json_on(admin_sock_path, "POST", path, NULL, &resp);
	if (rc)
		return rc;
	printf("%s: %s\n", str(resp, "id", id),
	       json_is_true(json_object_get(resp, "cancelled")) ? "cancelled" : "not cancelled");
	json_decref(resp);
	return EXIT_OK;
}

static int cmd_requests(void)
{
	json_t *resp = NULL, *r;
	size_t i;
	int rc = call_json_on(admin_sock_path, "GET", "/admin/requests", NULL, &resp);

	if (rc)
		return rc;
	printf("%-24s %-12s %-12s %-10s %6s %6s %8s %8s %9s %s\n", "ID", "TENANT", "STATE",
	       "PARTITION", "PROMPT", "OUTPUT", "TTFT ms", "TPOT ms", "AGE s", "FINISH");
	json_array_foreach(json_object_get(resp, "requests"), i, r)
	{
		char ttft[32], tpot[32];

		fmt_ms(ttft, sizeof(ttft), json_object_get(r, "ttft_ms"));
		fmt_ms(tpot, sizeof(tpot), json_object_get(r, "tpot_ms"));
		printf("%-24s %-12s %-12s %-10s %6.0f %6.0f %8s %8s %9.1f %s\n", str(r, "id", "?"),
		       str(r, "tenant", "-"), str(r, "state", "?"), str(r, "partition", "-"),
		       num(r, "prompt_tokens"), num(r, "output_tokens"), ttft, tpot,
		       num(r, "age_ms") / 1000.0, str(r, "finish_reason", "-"));
	}
	json_decref(resp);
	return EXIT_OK;
}

static void print_list(const char *label, json_t *arr)
{
	json_t *v;
	size_t i;

	if (!json_array_size(arr))
		return;
	printf("%s:", label);
	json_array_foreach(arr, i, v) printf("%s %s", i ? "," : "", json_string_value(v));
	printf("\n");
}

static int cmd_reload(void)
{
	json_t *resp = NULL;
	int rc = call_json_on(admin_sock_path, "POST", "/admin/reload", NULL, &resp);

	if (rc)
		return rc;
	printf("reloaded\n");
	print_list("applied", json_object_get(resp, "applied"));
	print_list("rejected", json_object_get(resp, "rejected"));
	json_decref(resp);
	return EXIT_OK;
}

static int cmd_shutdown(void)
{
	json_t *resp = NULL;
	int rc = call_json_on(admin_sock_path, "POST", "/admin/shutdown", NULL, &resp);

	if (rc)
		return rc;
	printf("shutting down\n");
	json_decref(resp);
	return EXIT_OK;
}

/* One event as a line: "2026-11-28T12:00:00.500 error worker_exit p0: message". */
static int print_event(void *ctx, const char *event, const char *data)
{
	json_t *e = json_loads(data, JSON_ALLOW_NUL, NULL);
	char when[64] = "-";
	double t;
	time_t sec;
	struct tm tm;

	if (!e) {
		printf("%s %s\n", event, data);
		fflush(stdout);
		return 0;
	}
	t = num(e, "time");
	sec = (time_t)t;
	if (t > 0 && localtime_r(&sec, &tm)) {
		size_t k = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);

		snprintf(when + k, sizeof(when) - k, ".%03d", (int)((t - (double)sec) * 1000));
	}
	printf("%s %-5s %-12s %s%s%s\n", when, str(e, "level", "info"), str(e, "type", event),
	       str(e, "partition", ""), json_object_get(e, "partition") ? ": " : "",
	       str(e, "message", ""));
	fflush(stdout);
	json_decref(e);
	return 0;
}

static int events_feed(void *ctx, const char *p, size_t n)
{
	return client_sse_feed(ctx, p, n);
}

static int cmd_events(void)
{
	struct client_sse sse = { .on_event = print_event };
	struct client_buf err = { 0 };
	struct client_req req = {
		.sock = admin_sock_path,
		.method = "GET",
		.path = "/admin/events",
		.agent = PROG,
		.on_body = events_feed,
		.ctx = &sse,
		.idle_ms = 60 * 1000, /* the daemon sends a keepalive every 15 s */
	};
	int st = client_request(&req, &err);
	int rc = EXIT_FAIL;

	if (st < 0)
		report_conn_error(admin_sock_path, st);
	else if (st != 200)
		report_http_error(st, &err);
	else
		rc = EXIT_OK; /* the daemon closed the stream (it stopped) */
	client_sse_free(&sse);
	client_buf_free(&err);
	return rc;
}

/* --- arguments --------------------------------------------------------------------- */

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" PROG " --help'.\n");
	return EXIT_USAGE;
}

/* --- profile: the planner's cost model, measured ------------------------------------ */

/*
 * Every figure comes from the daemon's own per-request record (GET
 * /v1/status "requests": prefill_ms, transfer_ms, tpot_ms), found by the
 * completion's id; the client's clock is not used.  Prompts are random
 * token ids (from what /v1/tokenize makes of serve_lib's word list, so valid
 * for any vocabulary), drawn from a seed that changes each run so that the
 * prefix cache holds none of them.
 */
struct prof {
	char model[256];
	int32_t *pool; /* token ids prompts are drawn from */
	size_t n_pool;
	int ban_token; /* -1: none */
	uint64_t rng;
	pthread_mutex_t lock; /* rng, from the decode threads */
};

/* One completion, not streamed, greedy: its id into ID.  0 or the exit code. */
static int prof_complete(struct prof *p, int n_prompt, int max_tokens, char *id, size_t cap)
{
	json_t *req, *ids = json_array(), *resp = NULL;
	int rc;

	pthread_mutex_lock(&p->lock);
	for (int i = 0; ids && i < n_prompt; i++)
		json_array_append_new(ids, json_integer(p->pool[sv_rng_next(&p->rng) % p->n_pool]));
	pthread_mutex_unlock(&p->lock);
	req = json_pack("{ss so si sf}", "model", p->model, "prompt", ids, "max_tokens", max_tokens,
			"temperature", 0.0);
	if (!req)
		return EXIT_FAIL;
	if (p->ban_token >= 0) {
		char k[16];

		snprintf(k, sizeof(k), "%d", p->ban_token);
		json_object_set_new(req, "logit_bias", json_pack("{si}", k, -100));
	}
	rc = post_json("/v1/completions", req, &resp);
	json_decref(req);
	if (rc)
		return rc;
	snprintf(id, cap, "%s", str(resp, "id", ""));
	json_decref(resp);
	if (!id[0]) {
		fprintf(stderr, PROG ": /v1/completions answered without an id\n");
		return EXIT_FAIL;
	}
	return 0;
}

/* The record of request ID in a /v1/status answer, or NULL. */
static json_t *prof_record(json_t *status, const char *id)
{
	json_t *r;
	size_t i;

	json_array_foreach(json_object_get(status, "requests"), i, r)
	{
		if (!strcmp(str(r, "id", ""), id))
			return r;
	}
	return NULL;
}

/* CPUs in a partition's "cpus" ("0-1,3"; "all": this machine's). */
static int prof_count_cpus(const char *s)
{
	int n = 0;

	if (!s || !strcmp(s, "all") || !s[0]) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);

		return c > 0 ? (int)c : 1;
	}
	while (*s) {
		char *end;
		long a = strtol(s, &end, 10), b = a;

		if (end == s)
			break;
		if (*end == '-')
			b = strtol(end + 1, &end, 10);
		n += b >= a ? (int)(b - a + 1) : 1;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			break;
	}
	return n > 0 ? n : 1;
}

/* Cores of the partition NAME in a /v1/status answer. */
static int prof_cores(json_t *status, const char *name)
{
	json_t *p;
	size_t i;

	json_array_foreach(json_object_get(status, "partitions"), i, p)
	{
		if (!strcmp(str(p, "name", ""), name))
			return prof_count_cpus(str(p, "cpus", "all"));
	}
	return 1;
}

/* sv_context_of_error of an error answer's message. */
static int prof_context_in(const struct client_buf *b, int *cap)
{
	char msg[512];

	if (!client_error_message(b->p, msg, sizeof(msg)))
		return 0;
	return sv_context_of_error(msg, cap);
}

/*
 * The model's context, which the API does not state (as bench_serve finds
 * it): max_tokens 2^20 is refused naming it, or naming api.max_tokens' cap,
 * and then a prompt of cap + 1 tokens is (or, accepted, bounds it).  0 unknown.
 */
static int prof_context(struct prof *p)
{
	struct client_buf b = { 0 };
	json_t *js = json_string(p->model);
	char *model = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL; /* a JSON string */
	char *body = NULL;
	size_t len, o;
	int st, ctx = 0, cap = 0;

	json_decref(js);
	if (!model)
		return 0;
	len = strlen(model) + 512;
	body = malloc(len);
	if (!body)
		goto out;
	snprintf(body, len, "{\"model\":%s,\"prompt\":[%d],\"max_tokens\":1048576}", model,
		 (int)p->pool[0]);
	st = request("POST", "/v1/completions", body, NULL, NULL, &b);
	free(body);
	body = NULL;
	ctx = st >= 400 ? prof_context_in(&b, &cap) : 0;
	client_buf_free(&b);
	if (ctx || cap < 1 || cap > 1 << 20)
		goto out;
	len = strlen(model) + 512 + (size_t)(cap + 1) * 12;
	body = malloc(len);
	if (!body)
		goto out;
	o = (size_t)snprintf(body, len, "{\"model\":%s,\"max_tokens\":1,\"prompt\":[", model);
	for (int i = 0; i <= cap; i++)
		o += (size_t)snprintf(body + o, len - o, i ? ",%d" : "%d", (int)p->pool[0]);
	snprintf(body + o, len - o, "]}");
	st = request("POST", "/v1/completions", body, NULL, NULL, &b);
	ctx = st >= 400 ? prof_context_in(&b, NULL) : st == 200 ? cap + 1 : 0;
	client_buf_free(&b);
out:
	free(body);
	free(model);
	return ctx;
}

struct prof_job {
	struct prof *p;
	int n_prompt, max_tokens, rc;
	char id[128];
};

static void *prof_thread(void *arg)
{
	struct prof_job *j = arg;

	j->rc = prof_complete(j->p, j->n_prompt, j->max_tokens, j->id, sizeof(j->id));
	return NULL;
}

/* Sums for a least-squares line of transfer_ms on prompt tokens. */
struct prof_fit {
	double n, sx, sy, sxx, sxy;
};

static void fit_add(struct prof_fit *f, json_t *rec, int n_prompt)
{
	json_t *x = json_object_get(rec, "transfer_ms");

	if (!json_is_number(x))
		return;
	f->n++;
	f->sx += n_prompt;
	f->sy += json_number_value(x);
	f->sxx += (double)n_prompt * n_prompt;
	f->sxy += n_prompt * json_number_value(x);
}

/*
 * K concurrent requests of n_prompt tokens and max_tokens each: the least
 * of their tpot_ms into *tpot (the requests admitted first decode beside
 * the later ones' prefill chunks, seconds long for long prompts; the last
 * admitted decodes beside the others only, which is the step time sought), their transfers into fit, and the decode
 * partition's name into dec when it is still empty.  0 or the exit code.
 */
static int prof_batch(struct prof *p, int k, int n_prompt, int max_tokens, double *tpot, char *dec,
		      size_t dec_cap, struct prof_fit *fit)
{
	struct prof_job jobs[16];
	pthread_t th[16];
	struct client_buf raw = { 0 };
	json_t *status = NULL;
	double least = INFINITY;
	int rc = 0, started = 0;

	for (int i = 0; i < k; i++) {
		jobs[i] =
			(struct prof_job){ .p = p, .n_prompt = n_prompt, .max_tokens = max_tokens };
		if (pthread_create(&th[i], NULL, prof_thread, &jobs[i])) {
			fprintf(stderr, PROG ": pthread_create failed\n");
			rc = EXIT_FAIL;
			break;
		}
		started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		rc = rc ?: jobs[i].rc;
	}
	if (rc)
		return rc;
	rc = get_status(sock_path, &status, &raw);
	client_buf_free(&raw);
	if (rc)
		return rc < 0 ? EXIT_FAIL : rc;
	for (int i = 0; i < k; i++) {
		json_t *r = prof_record(status, jobs[i].id);
		json_t *t = json_object_get(r, "tpot_ms");

		if (json_is_number(t) && json_number_value(t) > 0 && json_number_value(t) < least)
			least = json_number_value(t);
		if (r && dec[0] == '\0')
			snprintf(dec, dec_cap, "%s", str(r, "partition", ""));
		fit_add(fit, r, n_prompt);
	}
	json_decref(status);
	if (least == INFINITY) {
		fprintf(stderr, PROG ": /v1/status has no tpot_ms for the decode requests "
				     "(do they stop early? try --ban-token)\n");
		return EXIT_FAIL;
	}
	*tpot = least;
	return 0;
}

/* One max_tokens-1 request of n tokens: its prefill_ms, the prefill partition's name. */
static int prof_prefill(struct prof *p, int n, double *ms, char *pre, size_t pre_cap,
			struct prof_fit *fit)
{
	struct client_buf raw = { 0 };
	json_t *status = NULL, *r, *x;
	char id[128];
	int rc = prof_complete(p, n, 1, id, sizeof(id));

	if (rc)
		return rc;
	rc = get_status(sock_path, &status, &raw);
	client_buf_free(&raw);
	if (rc)
		return rc < 0 ? EXIT_FAIL : rc;
	r = prof_record(status, id);
	x = json_object_get(r, "prefill_ms");
	if (!json_is_number(x)) {
		fprintf(stderr, PROG ": /v1/status has no prefill_ms for %s\n", id);
		json_decref(status);
		return EXIT_FAIL;
	}
	*ms = json_number_value(x);
	snprintf(pre, pre_cap, "%s", str(r, "prefill_partition", str(r, "partition", "")));
	fit_add(fit, r, n);
	json_decref(status);
	return 0;
}

#define PROF_DECODE_PROMPT 16
#define PROF_MAX_BATCHES 8 /* also the largest batch: prof_batch's threads */

/* "1,2,4,8": increasing, in [1, PROF_MAX_BATCHES], at most PROF_MAX_BATCHES of them.  0 or -EINVAL. */
static int prof_batches_parse(const char *s, int *out, int *n)
{
	int k = 0, prev = 0;

	while (*s) {
		char *end;
		long v = strtol(s, &end, 10);

		if (end == s || v <= prev || v > PROF_MAX_BATCHES || k == PROF_MAX_BATCHES ||
		    (*end && *end != ','))
			return -EINVAL;
		out[k++] = (int)v;
		prev = (int)v;
		s = *end ? end + 1 : end;
	}
	if (!k)
		return -EINVAL;
	*n = k;
	return 0;
}

static int cmd_profile(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "cores", required_argument, NULL, 'c' },
		{ "ban-token", required_argument, NULL, 'b' },
		{ "max-context", required_argument, NULL, 'x' },
		{ "decode-tokens", required_argument, NULL, 'd' },
		{ "decode-batches", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static const int lens[] = { 16, 64, 256, 512, 1024 };
	int batches[PROF_MAX_BATCHES] = { 1, 2, 4, 8 }, n_batches = 4, prompts[PLAN_MAX_CTX];
	struct prof p = { .ban_token = -1, .lock = PTHREAD_MUTEX_INITIALIZER };
	struct plan_model m;
	struct prof_fit fit = { 0 };
	const char *out = NULL;
	long cores = 0, ctx = 0, dtok = 24, v;
	char pre[128] = "", dec[128] = "", words[512], *end;
	struct client_buf raw = { 0 };
	json_t *tok = NULL, *status = NULL, *o;
	struct timespec ts;
	int c, rc, n_prompts = 0;
	FILE *f;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
		if (c == 'o') {
			out = optarg;
			continue;
		}
		if (c == 'h') {
			usage(stdout);
			return EXIT_OK;
		}
		if (c == '?' || c == ':')
			return bad_usage("'profile': unknown option or missing value: %s",
					 argv[optind - 1]);
		if (c == 'B') {
			if (prof_batches_parse(optarg, batches, &n_batches))
				return bad_usage(
					"bad --decode-batches '%s' (increasing batch sizes "
					"1-%d, at most %d of them)",
					optarg, PROF_MAX_BATCHES, PROF_MAX_BATCHES);
			continue;
		}
		errno = 0;
		v = strtol(optarg, &end, 10);
		if (errno || *end || v < (c == 'b' ? 0 : 1) || v > 1 << 20)
			return bad_usage("bad --%s '%s'",
					 c == 'c'   ? "cores"
					 : c == 'b' ? "ban-token"
					 : c == 'x' ? "max-context"
						    : "decode-tokens",
					 optarg);
		if (c == 'c')
			cores = v;
		else if (c == 'b')
			p.ban_token = (int)v;
		else if (c == 'x')
			ctx = v;
		else
			dtok = v < 2 ? 2 : v;
	}
	if (optind != argc)
		return bad_usage("'profile' takes no arguments");

	if ((rc = first_model(p.model, sizeof(p.model))))
		return rc;
	for (size_t i = 0, n = 0; i < SV_NWORDS && n < sizeof(words); i++)
		n += (size_t)snprintf(words + n, sizeof(words) - n, "%s%s", i ? " " : "",
				      sv_words[i]);
	tok = json_pack("{sb ss}", "add_special", 0, "prompt", words);
	if (!tok)
		return EXIT_FAIL;
	rc = post_json("/v1/tokenize", tok, &o);
	json_decref(tok);
	if (rc)
		return rc;
	p.n_pool = json_array_size(json_object_get(o, "tokens"));
	p.pool = calloc(p.n_pool ? p.n_pool : 1, sizeof(*p.pool));
	for (size_t i = 0; p.pool && i < p.n_pool; i++)
		p.pool[i] = (int32_t)json_integer_value(
			json_array_get(json_object_get(o, "tokens"), i));
	json_decref(o);
	if (!p.pool || !p.n_pool) {
		fprintf(stderr, PROG ": /v1/tokenize gave no tokens to make prompts of\n");
		free(p.pool);
		return EXIT_FAIL;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	p.rng = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
	if (!ctx)
		ctx = prof_context(&p);
	if (!ctx) {
		fprintf(stderr,
			PROG ": the model's context length is unknown: give --max-context\n");
		rc = EXIT_FAIL;
		goto out;
	}

	plan_model_defaults(&m);
	m.max_context = (int)ctx;
	/* Prefill: one request per length (the better of two), up to half the context. */
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		double a, b;

		if (i && lens[i] > ctx / 2)
			break;
		if ((rc = prof_prefill(&p, lens[i], &a, pre, sizeof(pre), &fit)) ||
		    (rc = prof_prefill(&p, lens[i], &b, pre, sizeof(pre), &fit)))
			goto out;
		m.prefill.x[m.prefill.n] = lens[i];
		m.prefill.y[m.prefill.n++] = (a < b ? a : b) > 0.001 ? (a < b ? a : b) : 0.001;
		fprintf(stderr, "profile: prefill %d tokens: %.3f ms\n", lens[i],
			m.prefill.y[m.prefill.n - 1]);
	}
	/*
	 * Decode: a table of K requests at once (batches) by their context while
	 * decoding (prompt + dtok / 2): a short prompt, then prompts that put it
	 * at about 1/4 and 1/2 of the model's context.
	 */
	prompts[n_prompts++] = PROF_DECODE_PROMPT;
	for (int q = 4; q >= 2; q -= 2) {
		long pr = ctx / q - dtok / 2;

		if (pr > 2 * prompts[n_prompts - 1] && pr + dtok < ctx)
			prompts[n_prompts++] = (int)pr;
	}
	for (int j = 0; j < n_prompts; j++) {
		m.decode_ctxs[j] = prompts[j] + dtok / 2.0;
		for (int i = 0; i < n_batches; i++) {
			double t;

			if ((rc = prof_batch(&p, batches[i], prompts[j], (int)dtok, &t, dec,
					     sizeof(dec), &fit)))
				goto out;
			m.decode_grid[j][i] = t;
			fprintf(stderr, "profile: decode batch %d at context %.0f: %.3f ms/step\n",
				batches[i], m.decode_ctxs[j], t);
		}
	}
	m.decode_n_ctx = (size_t)n_prompts;
	m.decode.n = (size_t)n_batches;
	for (int i = 0; i < n_batches; i++) {
		m.decode.x[i] = batches[i];
		m.decode.y[i] = m.decode_grid[0][i];
	}
	/* v1's context term, for older readers: batch 1, first to last context. */
	m.decode_ctx = m.decode_ctxs[0];
	if (n_prompts > 1) {
		m.decode_ms_per_ctx = (m.decode_grid[n_prompts - 1][0] - m.decode_grid[0][0]) /
				      (m.decode_ctxs[n_prompts - 1] - m.decode_ctxs[0]);
		if (m.decode_ms_per_ctx < 0)
			m.decode_ms_per_ctx = 0;
	}
	/* Transfer: least squares of transfer_ms on prompt tokens, when the daemon splits. */
	if (fit.n > 0) {
		double den = fit.n * fit.sxx - fit.sx * fit.sx;
		double slope = den > 0 ? (fit.n * fit.sxy - fit.sx * fit.sy) / den : 0;

		if (slope < 0)
			slope = 0;
		m.transfer_ms_per_token = slope;
		m.transfer_ms = (fit.sy - slope * fit.sx) / fit.n;
		if (m.transfer_ms < 0)
			m.transfer_ms = 0;
	}
	if ((rc = get_status(sock_path, &status, &raw)) != 0) {
		rc = rc < 0 ? EXIT_FAIL : rc;
		goto out;
	}
	m.prefill_cores = cores ? (int)cores : prof_cores(status, pre);
	m.decode_cores = cores ? (int)cores : prof_cores(status, dec);

	o = plan_model_json(&m);
	if (!o) {
		rc = EXIT_FAIL;
		goto out;
	}
	json_object_set_new(o, "model", json_string(p.model));
	json_object_set_new(json_object_get(o, "prefill"), "partition", json_string(pre));
	json_object_set_new(json_object_get(o, "decode"), "partition", json_string(dec));
	json_object_set_new(json_object_get(o, "transfer"), "measured", json_boolean(fit.n > 0));
	json_object_set_new(json_object_get(o, "scaling"), "assumed", json_true());
	json_object_set_new(o, "cores_total",
			    json_integer(sysconf(_SC_NPROCESSORS_ONLN) > 0
						 ? sysconf(_SC_NPROCESSORS_ONLN)
						 : 1));
	f = out ? fopen(out, "w") : stdout;
	if (!f) {
		fprintf(stderr, PROG ": %s: %s\n", out, strerror(errno));
		json_decref(o);
		rc = EXIT_FAIL;
		goto out;
	}
	rc = json_dumpf(o, f, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) || fputc('\n', f) == EOF;
	if (out)
		rc |= fclose(f) != 0;
	json_decref(o);
	if (rc) {
		fprintf(stderr, PROG ": writing %s failed\n", out ? out : "stdout");
		rc = EXIT_FAIL;
		goto out;
	}
	if (out) {
		printf("profile of %s written to %s\n", p.model, out);
		printf("prefill (%s, %d cores):", pre, m.prefill_cores);
		for (size_t i = 0; i < m.prefill.n; i++)
			printf(" %g tok %.2f ms%s", m.prefill.x[i], m.prefill.y[i],
			       i + 1 < m.prefill.n ? "," : "\n");
		for (size_t j = 0; j < m.decode_n_ctx; j++) {
			printf("decode (%s, %d cores), context %.0f:", dec, m.decode_cores,
			       m.decode_ctxs[j]);
			for (size_t i = 0; i < m.decode.n; i++)
				printf(" batch %g %.2f ms%s", m.decode.x[i], m.decode_grid[j][i],
				       i + 1 < m.decode.n ? "," : "\n");
		}
		if (fit.n > 0)
			printf("transfer: %.3f ms + %.5f ms/token\n", m.transfer_ms,
			       m.transfer_ms_per_token);
		else
			printf("transfer: not measured (no split partitions): 0 assumed\n");
	}
out:
	json_decref(status);
	client_buf_free(&raw);
	free(p.pool);
	return rc;
}

/* --- plan: predicted goodput per split ------------------------------------------------ */

static int read_file(const char *path, char **out)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f) {
		fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
		return EXIT_FAIL;
	}
	do {
		if (len + 4096 + 1 > cap) {
			char *b = realloc(buf, cap = cap ? 2 * cap : 8192);

			if (!b) {
				free(buf);
				fclose(f);
				fprintf(stderr, PROG ": out of memory\n");
				return EXIT_FAIL;
			}
			buf = b;
		}
		n = fread(buf + len, 1, 4096, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	*out = buf;
	return 0;
}

struct plan_opts {
	const char *profile, *trace, *split;
	bool compare, json;
	int trace_profile, cores, max_context, max_seqs, max_batch_tokens;
	long requests;
	double duration;
	unsigned long long seed;
	double ttft, tpot, target, burstiness, prefill_exp, decode_exp;
};

/* A trace file's requests and mean rate; 0 or EXIT_FAIL (said, naming the file). */
static int plan_read_trace(const char *path, struct plan_req **reqs, size_t *n, double *rate)
{
	struct sv_trace *tr = NULL;
	char err[256];
	FILE *f = fopen(path, "r");
	int ret;

	if (!f) {
		fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
		return EXIT_FAIL;
	}
	ret = sv_trace_read(f, &tr, err, sizeof(err));
	fclose(f);
	if (ret) {
		fprintf(stderr, PROG ": %s: %s\n", path, ret == -ENOMEM ? "out of memory" : err);
		return EXIT_FAIL;
	}
	*rate = sv_trace_rate(tr);
	ret = *rate > 0 ? plan_reqs_of_trace(tr, reqs, n) : -EINVAL;
	sv_trace_destroy(tr);
	if (ret) {
		fprintf(stderr, PROG ": %s: %s\n", path,
			ret == -ENOMEM ? "out of memory"
				       : "no requests, or no arrivals spread over time");
		return EXIT_FAIL;
	}
	return 0;
}

/* "0.5 req/s (exact)", "< 0.25 req/s (below the lowest rate)", ">= 2 req/s (...)" */
static void fmt_goodput(char *out, size_t cap, double g, enum sv_bound b, double lowest)
{
	if (isnan(g))
		snprintf(out, cap, "none (not a sweep)");
	else if (b == SV_BELOW)
		snprintf(out, cap, "< %.3g req/s (the lowest rate misses the target)", lowest);
	else if (b == SV_AT_LEAST)
		snprintf(out, cap, ">= %.3g req/s (a bound: the highest rate passed)", g);
	else
		snprintf(out, cap, "%.3g req/s (exact)", g);
}

/*
 * One sweep file predicted on o->split: a table to stdout, or its JSON
 * object into *js.  0, or EXIT_FAIL with a message naming the file.
 */
static int plan_compare_one(const struct plan_model *m, const struct plan_opts *o, const char *path,
			    json_t **js)
{
	struct plan_sweep s;
	struct plan_config cfg;
	struct plan_cmp_row rows[PLAN_SWEEP_MAX];
	struct plan_workload w;
	struct plan_req *reqs = NULL;
	struct sv_gen g;
	enum sv_bound pbound;
	char *text = NULL, err[256], cname[32], mg[96], pg[96];
	const char *trace = NULL;
	double pgood, lowest = INFINITY, base_rate = 1, gerr = NAN;
	size_t n = 0;
	int rc;

	if ((rc = read_file(path, &text)))
		return rc;
	rc = EXIT_FAIL;
	if (plan_sweep_from_json(text, &s, err, sizeof(err))) {
		fprintf(stderr, PROG ": %s: %s\n", path, err);
		goto out;
	}
	if (s.profile < 0) {
		trace = o->trace ? o->trace : s.trace;
		if (plan_read_trace(trace, &reqs, &n, &base_rate)) {
			fprintf(stderr,
				PROG ": %s: the sweep replayed trace %s: give it with --trace\n",
				path, trace);
			goto out;
		}
		w = (struct plan_workload){ .reqs = reqs, .n = n, .base_rate = base_rate };
	} else {
		plan_sweep_gen(&s, &g);
		w = (struct plan_workload){ .gen = &g, .as_bench = true };
	}
	plan_config_parse(o->split, o->cores, &cfg);
	plan_config_name(&cfg, cname, sizeof(cname));
	if (plan_compare(m, &cfg, &s, &w, rows, &pgood, &pbound)) {
		fprintf(stderr, PROG ": %s: the simulation failed (no arrivals at a rate?)\n",
			path);
		goto out;
	}
	for (size_t i = 0; i < s.n; i++)
		lowest = s.rate[i] < lowest ? s.rate[i] : lowest;
	if (s.goodput > 0 && pgood > 0)
		gerr = pgood / s.goodput - 1;
	rc = EXIT_OK;
	if (o->json) {
		json_t *arr = json_array();

		for (size_t i = 0; arr && i < s.n; i++)
			json_array_append_new(
				arr,
				json_pack("{sf sI sI sf sf sf sf sf sf}", "rate", rows[i].rate,
					  "requests_measured", (json_int_t)rows[i].measured_n,
					  "requests_predicted", (json_int_t)rows[i].predicted_n,
					  "attainment_measured", rows[i].measured,
					  "attainment_predicted", rows[i].predicted,
					  "ttft_p50_ms_predicted", rows[i].pred.ttft.p50,
					  "ttft_p90_ms_predicted", rows[i].pred.ttft.p90,
					  "tpot_p50_ms_predicted", rows[i].pred.tpot.p50,
					  "tpot_p90_ms_predicted", rows[i].pred.tpot.p90));
		*js = json_pack(
			"{ss ss ss* so so ss so ss so}", "file", path, "split", cname, "trace",
			trace, "rates", arr ? arr : json_null(), "goodput_measured",
			isnan(s.goodput) ? json_null() : json_real(s.goodput),
			"goodput_measured_bound", sv_bound_name(s.bound), "goodput_predicted",
			json_real(pgood), "goodput_predicted_bound", sv_bound_name(pbound),
			"goodput_error", isnan(gerr) ? json_null() : json_real(gerr));
		if (*js && s.profile >= 0)
			json_object_set_new(*js, "profile",
					    json_string(sv_profile_name(s.profile)));
		rc = *js ? EXIT_OK : EXIT_FAIL;
		goto out;
	}
	if (s.profile >= 0 && s.num_requests)
		printf("%s: %s profile, %d requests at each rate, %s arrivals, seed %llu, context "
		       "%d\n",
		       path, sv_profile_name(s.profile), s.num_requests,
		       s.burstiness == 1 || s.burstiness == 0 ? "Poisson" : "gamma", s.seed,
		       s.max_context);
	else if (s.profile >= 0)
		printf("%s: %s profile, %g s of arrivals at each rate, %s, seed %llu, context %d\n",
		       path, sv_profile_name(s.profile), s.duration_s,
		       s.burstiness == 1 || s.burstiness == 0 ? "Poisson" : "gamma", s.seed,
		       s.max_context);
	else
		printf("%s: trace %s (%zu requests) at each rate\n", path, trace, n);
	printf("SLO: TTFT <= %g ms and TPOT <= %g ms for %g%%; predicted on %s\n", s.slo.ttft_ms,
	       s.slo.tpot_ms, 100 * s.target, cname);
	printf("%8s %9s %9s %9s %9s %8s %12s %12s\n", "rate/s", "req meas", "req pred", "att meas",
	       "att pred", "diff", "TTFT p90 ms", "TPOT p90 ms");
	for (size_t i = 0; i < s.n; i++)
		printf("%8.3f %9zu %9zu %8.1f%% %8.1f%% %+7.1f%% %12.1f %12.1f\n", rows[i].rate,
		       rows[i].measured_n, rows[i].predicted_n, 100 * rows[i].measured,
		       100 * rows[i].predicted, 100 * (rows[i].predicted - rows[i].measured),
		       rows[i].pred.ttft.p90, rows[i].pred.tpot.p90);
	fmt_goodput(mg, sizeof(mg), s.goodput, s.bound, lowest);
	fmt_goodput(pg, sizeof(pg), pgood, pbound, lowest);
	printf("goodput measured:  %s\ngoodput predicted: %s\n", mg, pg);
	if (isnan(gerr) && s.goodput > 0 && !(pgood > 0))
		printf("goodput error: < %+.1f%% (the predicted goodput is below the lowest rate)\n",
		       100 * (lowest / s.goodput - 1));
	else if (isnan(gerr))
		printf("goodput error: none (the measured goodput is below the lowest rate, or "
		       "none was measured)\n");
	else
		printf("goodput error: %+.1f%% (predicted / measured - 1%s)\n", 100 * gerr,
		       s.bound == SV_AT_LEAST ? "; the measured goodput is a lower bound" : "");
	printf("(TTFT and TPOT p90 are predicted; diff is attainment points)\n\n");
out:
	free(reqs);
	free(text);
	return rc;
}

/* plan --compare: every file; exit 1 if any was bad (the others are still reported). */
static int plan_compare_files(const struct plan_model *m, const struct plan_opts *o, char **files,
			      int n)
{
	json_t *all = o->json ? json_array() : NULL;
	int rc = EXIT_OK;

	for (int i = 0; i < n; i++) {
		json_t *js = NULL;

		if (plan_compare_one(m, o, files[i], &js))
			rc = EXIT_FAIL;
		else if (all)
			json_array_append_new(all, js);
	}
	if (all) {
		json_t *root = json_pack("{ss so}", "profile", o->profile, "sweeps", all);

		if (!root || json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) ||
		    putchar('\n') == EOF)
			rc = EXIT_FAIL;
		json_decref(root);
	}
	return rc;
}

static int cmd_plan(int argc, char **argv)
{
	enum {
		P_PROFILE = 400,
		P_TPROF,
		P_TRACE,
		P_TTFT,
		P_TPOT,
		P_CORES,
		P_REQS,
		P_SEED,
		P_TARGET,
		P_BURST,
		P_CTX,
		P_PEXP,
		P_DEXP,
		P_DUR,
		P_SEQS,
		P_MBT,
		P_COMPARE,
		P_SPLIT,
		P_JSON
	};
	static const struct option lopts[] = {
		{ "profile", required_argument, NULL, P_PROFILE },
		{ "trace-profile", required_argument, NULL, P_TPROF },
		{ "trace", required_argument, NULL, P_TRACE },
		{ "slo-ttft-ms", required_argument, NULL, P_TTFT },
		{ "slo-tpot-ms", required_argument, NULL, P_TPOT },
		{ "cores", required_argument, NULL, P_CORES },
		{ "requests", required_argument, NULL, P_REQS },
		{ "seed", required_argument, NULL, P_SEED },
		{ "target", required_argument, NULL, P_TARGET },
		{ "burstiness", required_argument, NULL, P_BURST },
		{ "max-context", required_argument, NULL, P_CTX },
		{ "prefill-exp", required_argument, NULL, P_PEXP },
		{ "decode-exp", required_argument, NULL, P_DEXP },
		{ "duration", required_argument, NULL, P_DUR },
		{ "max-seqs", required_argument, NULL, P_SEQS },
		{ "max-batch-tokens", required_argument, NULL, P_MBT },
		{ "compare", no_argument, NULL, P_COMPARE },
		{ "split", required_argument, NULL, P_SPLIT },
		{ "json", no_argument, NULL, P_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct plan_opts o = { .trace_profile = SV_PROF_CHAT,
			       .duration = 60,
			       .seed = 1,
			       .target = 0.9,
			       .burstiness = 1,
			       .prefill_exp = -1,
			       .decode_exp = -1 };
	struct plan_model m;
	struct sv_trace *tr = NULL;
	struct plan_req *reqs = NULL;
	struct plan_eval *ev = NULL;
	struct sv_slo slo;
	struct sv_gen g;
	struct plan_workload w;
	json_t *prof = NULL;
	char *text = NULL, err[256], *end;
	size_t n = 0, best = 0;
	double base_rate = 1, d;
	int c, rc, ret;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		const char *name = c >= P_PROFILE ? lopts[c - P_PROFILE].name : "";

		switch (c) {
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case P_PROFILE:
			o.profile = optarg;
			continue;
		case P_TRACE:
			o.trace = optarg;
			continue;
		case P_COMPARE:
			o.compare = true;
			continue;
		case P_SPLIT:
			o.split = optarg;
			continue;
		case P_JSON:
			o.json = true;
			continue;
		case P_TPROF:
			o.trace_profile = sv_profile_parse(optarg);
			if (o.trace_profile < 0)
				return bad_usage(
					"bad --trace-profile '%s' (chat, summarize, agent, "
					"mixed)",
					optarg);
			continue;
		case '?':
		case ':':
			return bad_usage("'plan': unknown option or missing value: %s",
					 argv[optind - 1]);
		}
		errno = 0;
		d = strtod(optarg, &end);
		if (errno || *end || end == optarg || !isfinite(d) || d < 0)
			return bad_usage("bad --%s '%s' (want a number >= 0)", name, optarg);
		switch (c) {
		case P_TTFT:
			o.ttft = d;
			break;
		case P_TPOT:
			o.tpot = d;
			break;
		case P_TARGET:
			if (!(d > 0 && d <= 1))
				return bad_usage("bad --target '%s' (want (0, 1])", optarg);
			o.target = d;
			break;
		case P_BURST:
			o.burstiness = d;
			break;
		case P_PEXP:
			o.prefill_exp = d;
			break;
		case P_DEXP:
			o.decode_exp = d;
			break;
		case P_DUR:
			o.duration = d;
			break;
		default: /* counts */
			if (d != floor(d) || d < 1 || d > 1e7)
				return bad_usage("bad --%s '%s' (want a whole number >= 1)", name,
						 optarg);
			if (c == P_CORES && d > 256)
				return bad_usage("bad --cores '%s' (at most 256)", optarg);
			if (c == P_CORES)
				o.cores = (int)d;
			else if (c == P_REQS)
				o.requests = (long)d;
			else if (c == P_SEED)
				o.seed = (unsigned long long)d;
			else if (c == P_SEQS)
				o.max_seqs = (int)d;
			else if (c == P_MBT)
				o.max_batch_tokens = (int)d;
			else
				o.max_context = (int)d;
		}
	}
	if (o.compare && optind == argc)
		return bad_usage("'plan --compare' needs one or more sweep JSON files "
				 "(bench_serve --json)");
	if (o.compare && !o.split)
		return bad_usage("'plan --compare' needs --split (mixed, mixed N, NpMd): the "
				 "configuration the sweep ran on");
	if (!o.compare && (optind != argc || o.split || o.json))
		return bad_usage("'plan' takes no arguments (--split, --json and files go with "
				 "--compare)");
	if (!o.profile)
		return bad_usage("'plan' needs --profile FILE (from '" PROG
				 " profile --out FILE')");
	if (o.compare) {
		struct plan_config cfg;

		if (plan_config_parse(o.split, o.cores ? o.cores : 2, &cfg))
			return bad_usage("bad --split '%s' (mixed, mixed N, NpMd)", o.split);
	}
	if (!o.compare && (!(o.ttft > 0) || !(o.tpot > 0)))
		return bad_usage("'plan' needs --slo-ttft-ms and --slo-tpot-ms (> 0)");
	slo = (struct sv_slo){ .ttft_ms = o.ttft, .tpot_ms = o.tpot };

	if ((rc = read_file(o.profile, &text)))
		return rc;
	rc = EXIT_FAIL;
	if (plan_model_from_json(text, &m, err, sizeof(err))) {
		fprintf(stderr, PROG ": %s: %s\n", o.profile, err);
		goto out;
	}
	prof = json_loads(text, JSON_ALLOW_NUL, NULL);
	if (o.prefill_exp >= 0)
		m.prefill_exp = o.prefill_exp;
	if (o.decode_exp >= 0)
		m.decode_exp = o.decode_exp;
	if (o.max_seqs)
		m.max_seqs = o.max_seqs;
	if (o.max_batch_tokens)
		m.max_batch_tokens = o.max_batch_tokens;
	if (m.max_seqs > m.max_batch_tokens) {
		fprintf(stderr, PROG ": max_seqs %d is more than max_batch_tokens %d\n", m.max_seqs,
			m.max_batch_tokens);
		goto out;
	}
	if (!o.cores)
		o.cores = json_is_integer(json_object_get(prof, "cores_total"))
				  ? (int)json_integer_value(json_object_get(prof, "cores_total"))
				  : 2;
	if (o.cores < 1 || o.cores > 256)
		o.cores = 2;
	if (!o.max_context)
		o.max_context = m.max_context ? m.max_context : 2048;
	if (o.compare) {
		rc = plan_compare_files(&m, &o, argv + optind, argc - optind);
		goto out;
	}

	if (o.trace) {
		if ((rc = plan_read_trace(o.trace, &reqs, &n, &base_rate)))
			goto out;
		w = (struct plan_workload){ .reqs = reqs, .n = n, .base_rate = base_rate };
	} else {
		g = (struct sv_gen){ .profile = o.trace_profile,
				     .rate = 1,
				     .burstiness = o.burstiness,
				     .duration_s = o.duration,
				     .max_requests = (size_t)o.requests,
				     .max_context = o.max_context,
				     .seed = o.seed };
		if (!(o.duration > 0) && !o.requests) {
			rc = bad_usage("'plan' needs --duration > 0 or --requests");
			goto out;
		}
		/* Only a check of g: plan_recommend makes the trace at each rate. */
		if (sv_trace_generate(&g, &tr)) {
			fprintf(stderr, PROG ": cannot generate the trace (bad --burstiness or "
					     "--max-context?)\n");
			goto out;
		}
		w = (struct plan_workload){ .gen = &g };
	}
	ev = calloc((size_t)o.cores, sizeof(*ev));
	ret = ev ? plan_recommend(&m, o.cores, &w, &slo, o.target, ev, &best) : -ENOMEM;
	if (ret) {
		fprintf(stderr, PROG ": the simulation failed: %s\n",
			ret == -ENOMEM ? "out of memory"
				       : "the profile gives no positive capacity for this trace");
		goto out;
	}

	if (o.trace)
		printf("trace %s: %zu requests, replayed at each rate\n", o.trace, n);
	else if (o.duration > 0)
		printf("trace: %s profile, %g s of %s arrivals at each rate%s, seed %llu, context %d\n",
		       sv_profile_name(o.trace_profile), o.duration,
		       o.burstiness == 1 || o.burstiness == 0 ? "Poisson" : "gamma",
		       o.requests ? " (capped by --requests)" : "", o.seed, o.max_context);
	else
		printf("trace: %s profile, %ld requests at each rate, %s arrivals, seed %llu, "
		       "context %d\n",
		       sv_profile_name(o.trace_profile), o.requests,
		       o.burstiness == 1 || o.burstiness == 0 ? "Poisson" : "gamma", o.seed,
		       o.max_context);
	printf("SLO: TTFT <= %g ms and TPOT <= %g ms for %g%% of requests; %d cores\n", o.ttft,
	       o.tpot, 100 * o.target, o.cores);
	printf("model: prefill measured on %d core(s), decode on %d; time x (measured/cores)^exp, "
	       "exp %.2f prefill, %.2f decode%s\n",
	       m.prefill_cores, m.decode_cores, m.prefill_exp, m.decode_exp,
	       o.prefill_exp < 0 && o.decode_exp < 0 ? " (assumed)" : "");
	printf("\n%-10s %7s %6s %14s %12s %12s %14s\n", "CONFIG", "PREFILL", "DECODE",
	       "GOODPUT req/s", "TTFT p90 ms", "TPOT p90 ms", "CAPACITY req/s");
	for (int i = 0; i < o.cores; i++) {
		char name[32], gp[32];

		plan_config_name(&ev[i].cfg, name, sizeof(name));
		snprintf(gp, sizeof(gp), "%s%.3g",
			 ev[i].bound == SV_AT_LEAST ? ">="
			 : ev[i].bound == SV_BELOW  ? "<"
						    : "",
			 ev[i].bound == SV_BELOW ? ev[i].capacity / 1000 : ev[i].goodput);
		printf("%-10s %7d %6d %14s %12.1f %12.1f %14.3g%s\n", name,
		       ev[i].cfg.prefill ? ev[i].cfg.prefill : ev[i].cfg.decode, ev[i].cfg.decode,
		       gp, ev[i].at_goodput.ttft.p90, ev[i].at_goodput.tpot.p90, ev[i].capacity,
		       i == (int)best && ev[best].goodput > 0 ? "  *" : "");
	}
	printf("(TTFT and TPOT p90 at the goodput; * the recommendation)\n\n");
	if (ev[best].goodput > 0) {
		char name[32];

		plan_config_name(&ev[best].cfg, name, sizeof(name));
		printf("recommendation: %s, predicted goodput %.3g req/s\n", name,
		       ev[best].goodput);
	} else {
		printf("recommendation: none: no split meets the SLOs for %g%% of requests even at "
		       "the lowest rate tried\n",
		       100 * o.target);
	}
	rc = EXIT_OK;
out:
	free(ev);
	free(reqs);
	sv_trace_destroy(tr);
	json_decref(prof);
	free(text);
	return rc;
}

enum { OPT_TEMP = 256, OPT_SEED, OPT_STREAM, OPT_SYSTEM, OPT_JSON };

/* Parse a command's own options from ARGV (ARGV[0] is the command). */
static int run_command(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "max-tokens", required_argument, NULL, 'n' },
		{ "model", required_argument, NULL, 'm' },
		{ "temp", required_argument, NULL, OPT_TEMP },
		{ "temperature", required_argument, NULL, OPT_TEMP },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "stream", no_argument, NULL, OPT_STREAM },
		{ "system", required_argument, NULL, OPT_SYSTEM },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *cmd = argv[0];
	struct gen_opts o = { .max_tokens = -1, .seed = -1 };
	bool as_json = false, gen, chat;
	int c, nargs;
	char *end;

	if (!strcmp(cmd, "profile"))
		return cmd_profile(argc, argv);
	if (!strcmp(cmd, "plan"))
		return cmd_plan(argc, argv);
	gen = !strcmp(cmd, "generate");
	chat = !strcmp(cmd, "chat");
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "n:m:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			errno = 0;
			o.max_tokens = strtol(optarg, &end, 10);
			if (errno || *end || o.max_tokens < 0)
				return bad_usage("bad -n '%s' (want a count >= 0)", optarg);
			break;
		case 'm':
			o.model = optarg;
			break;
		case OPT_TEMP:
			errno = 0;
			o.temp = strtod(optarg, &end);
			if (errno || *end || o.temp < 0)
				return bad_usage("bad --temp '%s' (want a number >= 0)", optarg);
			o.have_temp = true;
			break;
		case OPT_SEED:
			errno = 0;
			o.seed = strtoll(optarg, &end, 10);
			if (errno || *end || o.seed < 0)
				return bad_usage("bad --seed '%s' (want an integer >= 0)", optarg);
			break;
		case OPT_STREAM:
			o.stream = true;
			break;
		case OPT_SYSTEM:
			o.system = optarg;
			break;
		case OPT_JSON:
			as_json = true;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default: /* opterr is 0: say it here, under our name */
			return bad_usage("'%s': unknown option or missing value: %s", cmd,
					 argv[optind - 1]);
		}
		if (c != 'h' && c != OPT_JSON && !gen && !chat)
			return bad_usage("'%s' takes no such option", cmd);
		if (c == OPT_JSON && strcmp(cmd, "status"))
			return bad_usage("--json is an option of 'status', not of '%s'", cmd);
		if (c == OPT_SYSTEM && !chat)
			return bad_usage("--system is an option of 'chat', not of '%s'", cmd);
	}
	nargs = argc - optind;
	if (gen || chat || !strcmp(cmd, "tokenize")) {
		if (nargs != 1)
			return bad_usage("'%s' takes exactly one text argument", cmd);
		o.text = argv[optind];
		if (gen || chat)
			return cmd_generate(&o, chat);
		return cmd_tokenize(o.text);
	}
	if (!strcmp(cmd, "drain") || !strcmp(cmd, "undrain") || !strcmp(cmd, "cancel")) {
		if (nargs != 1)
			return bad_usage("'%s' takes exactly one %s", cmd,
					 cmd[0] == 'c' ? "request id" : "partition name");
		if (cmd[0] == 'c')
			return cmd_cancel(argv[optind]);
		return cmd_drain(argv[optind], cmd[0] == 'd');
	}
	if (nargs != 0)
		return bad_usage("'%s' takes no arguments", cmd);
	if (!strcmp(cmd, "health"))
		return cmd_health();
	if (!strcmp(cmd, "models"))
		return cmd_models();
	if (!strcmp(cmd, "metrics"))
		return cmd_metrics();
	if (!strcmp(cmd, "status"))
		return cmd_status(as_json);
	if (!strcmp(cmd, "partitions"))
		return cmd_partitions();
	if (!strcmp(cmd, "requests"))
		return cmd_requests();
	if (!strcmp(cmd, "reload"))
		return cmd_reload();
	if (!strcmp(cmd, "shutdown"))
		return cmd_shutdown();
	if (!strcmp(cmd, "events"))
		return cmd_events();
	return bad_usage("unknown command '%s'", cmd);
}

enum { OPT_ADMIN_SOCKET = 300 };

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "admin-socket", required_argument, NULL, OPT_ADMIN_SOCKET },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *env_api = getenv("DUET_SOCKET"), *env_admin = getenv("DUET_ADMIN_SOCKET");
	const char *sock_opt = NULL;
	char dir[400], def_api[512], def_admin[512];
	int c;

	/* "+": stop at the command; its options are parsed by run_command(). */
	while ((c = getopt_long(argc, argv, "+s:h", lopts, NULL)) != -1) {
		switch (c) {
		case 's':
			sock_opt = optarg;
			break;
		case OPT_ADMIN_SOCKET:
			admin_sock_path = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	client_socket_dir(dir, sizeof(dir));
	snprintf(def_api, sizeof(def_api), "%s/api.sock", dir);
	snprintf(def_admin, sizeof(def_admin), "%s/admin.sock", dir);
	/* -s names the one socket every command uses; admin commands need it to be admin.sock. */
	sock_path = sock_opt ? sock_opt : env_api && env_api[0] ? env_api : def_api;
	if (!admin_sock_path)
		admin_sock_path = sock_opt		      ? sock_opt
				  : env_admin && env_admin[0] ? env_admin
							      : def_admin;
	return run_command(argc - optind, argv + optind);
}
