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
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PROG "duetctl"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char *sock_path;

static void usage(FILE *fp)
{
	fprintf(fp,
		"usage: " PROG " [-s SOCKET] COMMAND [ARGS]\n"
		"\n"
		"The CLI over duetd's API socket (HTTP/1.1 over a UNIX socket).\n"
		"\n"
		"Commands:\n"
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
		"  status [--json]            health plus the key gauges and counters of /metrics\n"
		"\n"
		"  drain, undrain, cancel, requests, reload, shutdown, partitions\n"
		"                             need the admin API, which duetd does not serve yet\n"
		"\n"
		"Options:\n"
		"  -s, --socket PATH          the API socket; else $DUET_SOCKET; else what duetd uses\n"
		"                             for api.socket_dir \"\": /run/duet/api.sock as root,\n"
		"                             else $XDG_RUNTIME_DIR/duet/api.sock, else build/run/api.sock\n"
		"  -h, --help                 this text\n"
		"\n"
		"Exit status: 0 ok, 1 the request failed (connection, HTTP or API error), 2 usage.\n"
		"The API socket is usually group duet (admin.sock: duet-admin).\n");
}

/* --- buffers ----------------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

/* Append N bytes (kept NUL-terminated). Returns 0 or -ENOMEM. */
static int buf_add(struct buf *b, const void *d, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (b->len + n + 1 > cap)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	*b = (struct buf){ 0 };
}

/* --- connection ---------------------------------------------------------------- */

/* The socket duetd would create with api.socket_dir "" (see socket_dir() in supervisor.c). */
static const char *default_socket(char *out, size_t cap)
{
	const char *env = getenv("DUET_SOCKET"), *xdg = getenv("XDG_RUNTIME_DIR");

	if (env && env[0])
		snprintf(out, cap, "%s", env);
	else if (geteuid() == 0)
		snprintf(out, cap, "/run/duet/api.sock");
	else if (xdg && xdg[0])
		snprintf(out, cap, "%s/duet/api.sock", xdg);
	else
		snprintf(out, cap, "build/run/api.sock");
	return out;
}

/* A connected socket, or -1 after saying why on stderr. */
static int conn_open(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err;

	if (strlen(sock_path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, PROG ": socket path too long: %s\n", sock_path);
		return -1;
	}
	strcpy(sa.sun_path, sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, PROG ": socket: %s\n", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	err = errno;
	close(fd);
	if (err == EACCES || err == EPERM)
		fprintf(stderr,
			PROG ": cannot connect to %s: %s (api.sock needs membership in group "
			     "duet, admin.sock in group duet-admin)\n",
			sock_path, strerror(err));
	else if (err == ENOENT || err == ECONNREFUSED || err == ENOTDIR)
		fprintf(stderr, PROG ": cannot connect to %s: %s (is duetd running? see -s)\n",
			sock_path, strerror(err));
	else
		fprintf(stderr, PROG ": cannot connect to %s: %s\n", sock_path, strerror(err));
	return -1;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* --- response reading ----------------------------------------------------------- */

struct rd {
	int fd;
	char buf[16384];
	size_t pos, len;
	bool eof;
};

/* Refill when empty. Returns bytes available (0 at EOF) or -errno. */
static ssize_t rd_fill(struct rd *r)
{
	ssize_t n;

	if (r->pos < r->len)
		return (ssize_t)(r->len - r->pos);
	if (r->eof)
		return 0;
	do
		n = read(r->fd, r->buf, sizeof(r->buf));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	r->pos = 0;
	r->len = (size_t)n;
	r->eof = n == 0;
	return n;
}

/* One CRLF- (or LF-) terminated line into OUT, without the terminator. 0, -EPROTO or -errno. */
static int rd_line(struct rd *r, char *out, size_t cap)
{
	size_t n = 0;

	for (;;) {
		ssize_t a = rd_fill(r);
		char c;

		if (a < 0)
			return (int)a;
		if (a == 0)
			return -EPROTO;
		c = r->buf[r->pos++];
		if (c == '\n')
			break;
		if (n + 1 < cap)
			out[n++] = c;
	}
	if (n && out[n - 1] == '\r')
		n--;
	out[n] = '\0';
	return 0;
}

/* Called with each piece of the body as it arrives; nonzero stops reading. */
typedef int (*body_fn)(void *ctx, const char *p, size_t n);

struct resp {
	int status;
	char content_type[128];
};

static int collect(void *ctx, const char *p, size_t n)
{
	return buf_add(ctx, p, n);
}

/*
 * Read the status line and headers, then hand the body (de-chunked) to FN
 * when the status is 200 and FN is given, else collect it into OUT.
 * Returns 0, -EPROTO on a malformed response, -errno, or FN's nonzero value.
 */
static int read_response(int fd, struct resp *rs, body_fn fn, void *ctx, struct buf *out)
{
	struct rd *r = calloc(1, sizeof(*r));
	char line[8192];
	long long clen = -1;
	bool chunked = false;
	int rc;

	if (!r)
		return -ENOMEM;
	r->fd = fd;
	rc = rd_line(r, line, sizeof(line));
	if (rc == 0 &&
	    (strncmp(line, "HTTP/1.", 7) != 0 || sscanf(line + 8, " %d", &rs->status) != 1))
		rc = -EPROTO;
	while (rc == 0) {
		char *v;

		rc = rd_line(r, line, sizeof(line));
		if (rc || !line[0])
			break;
		v = strchr(line, ':');
		if (!v)
			continue;
		*v++ = '\0';
		v += strspn(v, " \t");
		if (!strcasecmp(line, "Content-Length"))
			clen = strtoll(v, NULL, 10);
		else if (!strcasecmp(line, "Transfer-Encoding") && strcasestr(v, "chunked"))
			chunked = true;
		else if (!strcasecmp(line, "Content-Type"))
			snprintf(rs->content_type, sizeof(rs->content_type), "%s", v);
	}
	if (!fn || rs->status != 200) {
		fn = collect;
		ctx = out;
	}
	while (rc == 0) {
		long long want;

		if (chunked) {
			rc = rd_line(r, line, sizeof(line));
			if (rc)
				break;
			want = strtoll(line, NULL, 16);
			if (want <= 0) /* the last chunk; trailers are not needed */
				break;
		} else {
			want = clen;
			if (want == 0)
				break;
		}
		while (want != 0) {
			ssize_t a = rd_fill(r);
			size_t take;

			if (a < 0) {
				rc = (int)a;
				break;
			}
			if (a == 0) {
				if (want > 0) /* closed early */
					rc = -EPROTO;
				break;
			}
			take = (size_t)a;
			if (want > 0 && (long long)take > want)
				take = (size_t)want;
			rc = fn(ctx, r->buf + r->pos, take);
			r->pos += take;
			if (want > 0)
				want -= (long long)take;
			if (rc)
				break;
		}
		if (rc || !chunked)
			break;
		rc = rd_line(r, line, sizeof(line)); /* the CRLF after the chunk */
	}
	free(r);
	return rc;
}

/*
 * One request: METHOD PATH with an optional JSON BODY. A 200 response body
 * goes to FN as it arrives when FN is given; any other body into OUT.
 * Returns the HTTP status, or -1 after saying why.
 */
static int request(const char *method, const char *path, const char *body, body_fn fn, void *ctx,
		   struct buf *out)
{
	struct resp rs = { 0 };
	struct buf req = { 0 };
	char head[512];
	size_t blen = body ? strlen(body) : 0;
	int fd, rc;

	fd = conn_open();
	if (fd < 0)
		return -1;
	snprintf(head, sizeof(head),
		 "%s %s HTTP/1.1\r\nHost: duet\r\nUser-Agent: " PROG "\r\nConnection: close\r\n"
		 "%sContent-Length: %zu\r\n\r\n",
		 method, path, body ? "Content-Type: application/json\r\n" : "", blen);
	rc = buf_add(&req, head, strlen(head));
	rc = rc ?: buf_add(&req, body ? body : "", blen);
	rc = rc ?: write_all(fd, req.p, req.len);
	buf_free(&req);
	if (rc) {
		fprintf(stderr, PROG ": writing to %s: %s\n", sock_path, strerror(-rc));
		close(fd);
		return -1;
	}
	rc = read_response(fd, &rs, fn, ctx, out);
	close(fd);
	if (rc < 0) {
		fprintf(stderr, PROG ": reading from %s: %s\n", sock_path,
			rc == -EPROTO ? "malformed or truncated HTTP response" : strerror(-rc));
		return -1;
	}
	if (rc > 0) /* FN stopped the read and has said why */
		return -1;
	return rs.status;
}

/* The message of an OpenAI-style {"error":{"message":..}} body, or NULL. */
static const char *error_message(json_t *root)
{
	json_t *e = json_object_get(root, "error");

	return json_string_value(json_object_get(e, "message"));
}

/* Say why a non-2xx answer failed: the JSON error message when there is one. */
static int report_http_error(int status, const struct buf *body)
{
	json_t *root = body->p ? json_loads(body->p, 0, NULL) : NULL;
	const char *msg = error_message(root);

	if (msg)
		fprintf(stderr, PROG ": %s (HTTP %d)\n", msg, status);
	else
		fprintf(stderr, PROG ": HTTP %d%s%.*s\n", status, body->len ? ": " : "",
			(int)(body->len > 200 ? 200 : body->len), body->p ? body->p : "");
	json_decref(root);
	return EXIT_FAIL;
}

/* GET PATH; 0 with the body in OUT on 200, else the exit code after saying why. */
static int get_ok(const char *path, struct buf *out)
{
	int st = request("GET", path, NULL, NULL, NULL, out);

	if (st < 0)
		return EXIT_FAIL;
	if (st != 200)
		return report_http_error(st, out);
	return 0;
}

/* POST JSON to PATH; the parsed 200 answer in *OUT, else the exit code after saying why. */
static int post_json(const char *path, json_t *body, json_t **out)
{
	char *text = json_dumps(body, JSON_COMPACT);
	struct buf b = { 0 };
	json_error_t jerr;
	int st;

	if (!text) {
		fprintf(stderr, PROG ": out of memory\n");
		return EXIT_FAIL;
	}
	st = request("POST", path, text, NULL, NULL, &b);
	free(text);
	if (st < 0) {
		buf_free(&b);
		return EXIT_FAIL;
	}
	if (st != 200) {
		report_http_error(st, &b);
		buf_free(&b);
		return EXIT_FAIL;
	}
	*out = json_loads(b.p ? b.p : "", 0, &jerr);
	buf_free(&b);
	if (!*out) {
		fprintf(stderr, PROG ": %s answered invalid JSON: %s\n", path, jerr.text);
		return EXIT_FAIL;
	}
	return 0;
}

/* --- SSE ------------------------------------------------------------------------- */

struct sse {
	struct buf line;
	bool chat, done;
	int err; /* set when an error frame or a bad frame ended the stream */
};

/* One "data:" payload: print the text of the chunk, or stop on [DONE] / an error frame. */
static int sse_data(struct sse *s, const char *data)
{
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

	for (size_t i = 0; i < n; i++) {
		int rc;

		if (p[i] != '\n') {
			if (buf_add(&s->line, &p[i], 1))
				return -ENOMEM;
			continue;
		}
		if (s->line.len && s->line.p[s->line.len - 1] == '\r')
			s->line.p[--s->line.len] = '\0';
		rc = 0;
		if (s->line.len >= 5 && !strncmp(s->line.p, "data:", 5))
			rc = sse_data(s, s->line.p + 5 + (s->line.p[5] == ' '));
		s->line.len = 0;
		if (rc)
			return rc;
	}
	return 0;
}

/* --- commands ---------------------------------------------------------------------- */

static int cmd_health(void)
{
	struct buf b = { 0 };
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
	buf_free(&b);
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
	struct buf b = { 0 };
	json_t *root;
	const char *id;
	int rc = get_ok("/v1/models", &b);

	if (rc) {
		buf_free(&b);
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
	buf_free(&b);
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
		struct sse s = { .chat = chat };
		struct buf err = { 0 };
		char *body;
		int st;

		json_object_set_new(req, "stream", json_true());
		body = json_dumps(req, JSON_COMPACT);
		json_decref(req);
		if (!body)
			return EXIT_FAIL;
		/* A non-200 answer is a JSON error body, not SSE: it lands in ERR. */
		st = request("POST", path, body, sse_feed, &s, &err);
		if (st > 0 && st != 200) {
			report_http_error(st, &err);
			buf_free(&err);
			buf_free(&s.line);
			free(body);
			return EXIT_FAIL;
		}
		free(body);
		buf_free(&s.line);
		buf_free(&err);
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
	struct buf b = { 0 };
	json_t *root, *m;
	size_t i;
	int rc = get_ok("/v1/models", &b);

	if (!rc) {
		root = json_loads(b.p ? b.p : "", 0, NULL);
		json_array_foreach(json_object_get(root, "data"), i, m)
			printf("%s\n", json_string_value(json_object_get(m, "id")));
		json_decref(root);
	}
	buf_free(&b);
	return rc;
}

static int cmd_metrics(void)
{
	struct buf b = { 0 };
	int rc = get_ok("/metrics", &b);

	if (!rc && b.len)
		fwrite(b.p, 1, b.len, stdout);
	buf_free(&b);
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

static int cmd_status(bool as_json)
{
	struct buf h = { 0 }, m = { 0 };
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
	buf_free(&h);
	buf_free(&m);
	return st == 200 && mst == 200 ? EXIT_OK : EXIT_FAIL;
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
	static const char *const admin[] = { "drain",  "undrain",  "cancel",	"requests",
					     "reload", "shutdown", "partitions" };
	const char *cmd = argv[0];
	struct gen_opts o = { .max_tokens = -1, .seed = -1 };
	bool as_json = false, gen, chat;
	int c, nargs;
	char *end;

	for (size_t i = 0; i < sizeof(admin) / sizeof(admin[0]); i++) {
		if (!strcmp(cmd, admin[i])) {
			fprintf(stderr,
				PROG
				": '%s' needs the admin API, which this duetd does not serve yet\n",
				cmd);
			return EXIT_USAGE;
		}
	}
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
	return bad_usage("unknown command '%s'", cmd);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char def[512];
	int c;

	/* "+": stop at the command; its options are parsed by run_command(). */
	while ((c = getopt_long(argc, argv, "+s:h", lopts, NULL)) != -1) {
		switch (c) {
		case 's':
			sock_path = optarg;
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
	if (!sock_path)
		sock_path = default_socket(def, sizeof(def));
	return run_command(argc - optind, argv + optind);
}
