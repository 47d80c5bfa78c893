// SPDX-License-Identifier: MIT
/*
 * duetctl — the command-line client of duetd's UNIX-socket HTTP API.
 *
 *   duetctl [-s SOCKET] COMMAND [ARGS]
 *
 * Speaks HTTP/1.1 itself over AF_UNIX (one request per connection,
 * "Connection: close"); reads Content-Length, chunked and until-EOF bodies,
 * and parses SSE "data:" frames as they arrive for --stream.  JSON through
 * jansson.  Exit codes: 0 ok, 1 the request failed, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
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
		"Exit status: 0 ok, 1 the request failed (connection, HTTP or API error), 2 usage.\n"
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
	*out = json_loads(b.p ? b.p : "", 0, &jerr);
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
	root = json_loads(data, 0, NULL);
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
	root = b.p ? json_loads(b.p, 0, NULL) : NULL;
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
	root = json_loads(b.p ? b.p : "", 0, NULL);
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
		root = json_loads(b.p ? b.p : "", 0, NULL);
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
	hj = h.p ? json_loads(h.p, 0, NULL) : NULL;
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
	*out = json_loads(raw->p ? raw->p : "", 0, &jerr);
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
	json_t *e = json_loads(data, 0, NULL);
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
