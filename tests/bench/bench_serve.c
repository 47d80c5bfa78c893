// SPDX-License-Identifier: MIT
/*
 * Serving benchmark: time to first token (TTFT), time per output token
 * (TPOT) and inter-token latency (ITL) over api.sock under a load that mixes
 * decoding clients with long prompts.
 *
 *   bench_serve SOCKET [options]      (bench_serve --help lists them)
 *   bench_serve --selftest
 *
 * Request classes, run side by side:
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
#include <getopt.h>
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
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

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
};

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

/* splitmix64: small, seedable, one state per thread. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* Uniform in (0, 1]. */
static double rng_unit(uint64_t *s)
{
	return ((double)(rng_next(s) >> 11) + 1.0) / 9007199254740992.0;
}

/* ---------------------------------------------------------------------------
 * Growable arrays of doubles and text.
 * ------------------------------------------------------------------------- */
struct dvec {
	double *v;
	size_t n, cap;
};

static int dvec_push(struct dvec *d, double x)
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

static void dvec_free(struct dvec *d)
{
	free(d->v);
	*d = (struct dvec){ 0 };
}

struct sbuf {
	char *p;
	size_t len, cap;
};

static int sbuf_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

__attribute__((format(printf, 2, 3))) static int sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -EOVERFLOW;
	return sbuf_add(b, tmp, (size_t)n);
}

/* ---------------------------------------------------------------------------
 * Percentiles (nearest rank) over a sorted array.
 * ------------------------------------------------------------------------- */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The smallest value with at least q of the n values at or below it; NaN when n is 0. */
static double pct_sorted(const double *v, size_t n, double q)
{
	double r = ceil(q * (double)n);
	size_t i = r < 1 ? 0 : (size_t)r - 1;

	if (!n)
		return NAN;
	return v[i >= n ? n - 1 : i];
}

struct summary {
	size_t n;
	double p50, p90, p99, mean, max; /* NaN when n is 0 */
};

/* Sorts d in place. */
static struct summary summarize(struct dvec *d)
{
	struct summary s = { .n = d->n, .mean = NAN, .max = NAN };
	double sum = 0;

	qsort(d->v, d->n, sizeof(double), cmp_double);
	for (size_t i = 0; i < d->n; i++)
		sum += d->v[i];
	s.p50 = pct_sorted(d->v, d->n, 0.50);
	s.p90 = pct_sorted(d->v, d->n, 0.90);
	s.p99 = pct_sorted(d->v, d->n, 0.99);
	if (d->n) {
		s.mean = sum / (double)d->n;
		s.max = d->v[d->n - 1];
	}
	return s;
}

/* ---------------------------------------------------------------------------
 * HTTP/1.1 answer, pushed in as it is read: head, then the body de-chunked
 * (Transfer-Encoding: chunked), by Content-Length, or up to EOF.  Body bytes
 * go to on_body with the time of the read that brought them.
 * ------------------------------------------------------------------------- */
enum hp_state { HP_HEAD, HP_SIZE, HP_DATA, HP_DATA_END, HP_TRAILER, HP_BODY, HP_DONE, HP_BAD };

struct hparse {
	enum hp_state st;
	char head[8192];
	size_t head_len;
	int status;
	bool chunked;
	long long left; /* HP_DATA: bytes of this chunk; HP_BODY: Content-Length left, -1 = EOF */
	char line[64];	/* chunk-size or trailer line */
	size_t line_len;
	void (*on_body)(void *ctx, const char *p, size_t n, double t);
	void *ctx;
};

static void hp_init(struct hparse *h, void (*on_body)(void *, const char *, size_t, double),
		    void *ctx)
{
	memset(h, 0, sizeof(*h));
	h->on_body = on_body;
	h->ctx = ctx;
}

static int hp_head_done(struct hparse *h)
{
	const char *te, *cl;

	h->head[h->head_len] = '\0';
	if (sscanf(h->head, "HTTP/1.%*d %d", &h->status) != 1)
		return -EPROTO;
	te = strcasestr(h->head, "\r\nTransfer-Encoding:");
	cl = strcasestr(h->head, "\r\nContent-Length:");
	if (te) {
		char v[64];

		snprintf(v, sizeof(v), "%.*s", (int)strcspn(te + 2, "\r"), te + 2);
		h->chunked = strcasestr(v, "chunked") != NULL;
	}
	if (h->chunked) {
		h->st = HP_SIZE;
	} else {
		h->left = cl ? strtoll(cl + 17, NULL, 10) : -1;
		h->st = h->left == 0 ? HP_DONE : HP_BODY;
	}
	return 0;
}

/* Consume p[0, n); returns 0 (HP_DONE once the answer is complete) or -EPROTO. */
static int hp_feed(struct hparse *h, const char *p, size_t n, double t)
{
	const char *end = p + n;

	while (p < end && h->st != HP_DONE && h->st != HP_BAD) {
		switch (h->st) {
		case HP_HEAD:
			if (h->head_len + 1 >= sizeof(h->head))
				goto bad;
			h->head[h->head_len++] = *p++;
			if (h->head_len >= 4 && !memcmp(h->head + h->head_len - 4, "\r\n\r\n", 4) &&
			    hp_head_done(h))
				goto bad;
			break;
		case HP_SIZE: /* hex size [; extensions] CRLF */
			if (*p == '\n') {
				char *e;

				if (h->line_len && h->line[h->line_len - 1] == '\r')
					h->line_len--;
				h->line[h->line_len] = '\0';
				h->left = strtoll(h->line, &e, 16);
				if (e == h->line || h->left < 0 || (*e && *e != ';'))
					goto bad;
				h->st = h->left ? HP_DATA : HP_TRAILER;
				h->line_len = 0;
			} else if (h->line_len + 1 >= sizeof(h->line)) {
				goto bad;
			} else {
				h->line[h->line_len++] = *p;
			}
			p++;
			break;
		case HP_TRAILER: /* header lines up to an empty one; line_len: 0 empty, 1 "\r", 2 more */
			if (*p == '\n') {
				if (h->line_len < 2)
					h->st = HP_DONE;
				h->line_len = 0;
			} else {
				h->line_len = !h->line_len && *p == '\r' ? 1 : 2;
			}
			p++;
			break;
		case HP_DATA:
		case HP_BODY: {
			size_t k = (size_t)(end - p);

			if (h->left >= 0 && (unsigned long long)h->left < k)
				k = (size_t)h->left;
			h->on_body(h->ctx, p, k, t);
			p += k;
			if (h->left >= 0) {
				h->left -= (long long)k;
				if (!h->left)
					h->st = h->st == HP_DATA ? HP_DATA_END : HP_DONE;
			}
			break;
		}
		case HP_DATA_END: /* the CRLF after a chunk's data */
			if (*p == '\n')
				h->st = HP_SIZE;
			else if (*p != '\r')
				goto bad;
			p++;
			break;
		default:
			goto bad;
		}
	}
	return 0;
bad:
	h->st = HP_BAD;
	return -EPROTO;
}

/* The connection reached EOF: true when that ends the answer. */
static bool hp_eof_ok(const struct hparse *h)
{
	return h->st == HP_DONE || (h->st == HP_BODY && h->left < 0);
}

/* ---------------------------------------------------------------------------
 * One request and its stream of server-sent events.
 * ------------------------------------------------------------------------- */
struct req {
	int cls;
	double t_sched; /* when it was due (open loop) or written (closed loop) */
	double t_write, t_done;
	struct dvec tok_t; /* arrival time of every data frame with text */
	int usage_tokens;  /* completion_tokens of the usage chunk; 0 = none seen */
	bool done_seen;	   /* data: [DONE] */
	bool finish_stop;  /* finish_reason "stop" */
	enum bs_err err;
	char err_code[128]; /* what went wrong: the error object's code and message, ... */
	struct hparse hp;
	struct sbuf line; /* the SSE line being read */
	struct sbuf data; /* the event's data lines */
	struct sbuf body; /* a non-200 answer's body (first 4 KiB) */
};

static void req_error_code(struct req *r, json_t *root)
{
	json_t *e = json_object_get(root, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));

	if (code || msg)
		snprintf(r->err_code, sizeof(r->err_code), "%s: %s", code ?: "-", msg ?: "");
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
		dvec_push(&r->tok_t, t);
	fin = json_string_value(json_object_get(c0, "finish_reason"));
	if (fin && !strcmp(fin, "stop"))
		r->finish_stop = true;
	usage = json_object_get(root, "usage");
	if (json_is_object(usage))
		r->usage_tokens =
			(int)json_integer_value(json_object_get(usage, "completion_tokens"));
out:
	json_decref(root);
}

/* SSE body bytes: lines end in LF or CRLF; "data:" lines accumulate; an empty line ends an event. */
static void sse_body(void *ctx, const char *p, size_t n, double t)
{
	struct req *r = ctx;

	if (r->hp.status != 200) {
		if (r->body.len < 4096)
			sbuf_add(&r->body, p, n < 4096 - r->body.len ? n : 4096 - r->body.len);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const char *l;

		if (p[i] != '\n') {
			sbuf_add(&r->line, p + i, 1);
			continue;
		}
		if (r->line.len && r->line.p[r->line.len - 1] == '\r')
			r->line.p[--r->line.len] = '\0';
		l = r->line.p ? r->line.p : "";
		if (!r->line.len) {
			if (r->data.len)
				sse_event(r, r->data.p, t);
			r->data.len = 0;
		} else if (!strncmp(l, "data:", 5)) {
			l += 5 + (l[5] == ' ');
			if (r->data.len)
				sbuf_add(&r->data, "\n", 1);
			sbuf_add(&r->data, l, strlen(l));
		} /* comments (":") and other fields are ignored */
		r->line.len = 0;
	}
}

static void req_init(struct req *r, int cls)
{
	memset(r, 0, sizeof(*r));
	r->cls = cls;
	hp_init(&r->hp, sse_body, r);
}

static void req_fini(struct req *r)
{
	dvec_free(&r->tok_t);
	free(r->line.p);
	free(r->data.p);
	free(r->body.p);
}

/* After the answer ended (or failed): classify what the request got. */
static void req_settle(struct req *r, int io_err)
{
	int s = r->hp.status;

	if (r->err)
		return;
	if (io_err == -ETIMEDOUT) {
		r->err = BS_ERR_TIMEOUT;
		snprintf(r->err_code, sizeof(r->err_code), "no answer within %g s", O.timeout);
	} else if (io_err == -EPROTO || r->hp.st == HP_BAD) {
		r->err = BS_ERR_PROTOCOL;
		snprintf(r->err_code, sizeof(r->err_code), "malformed HTTP answer");
	} else if (io_err) {
		r->err = BS_ERR_CUT;
		snprintf(r->err_code, sizeof(r->err_code), "%s", strerror(-io_err));
	} else if (s != 200) {
		json_t *root = r->body.p ? json_loads(r->body.p, 0, NULL) : NULL;

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

static int conn_open(const char *path, double timeout)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = (time_t)timeout,
			      .tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6) };
	int fd, err;

	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	memcpy(a.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT
										  : -EPIPE;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * One exchange on a connection of its own: method, path and body (NULL for
 * none).  r->t_write is set just before the write; the answer goes through
 * r->hp (and for a 200 event stream, the SSE parser).  Returns 0 or the
 * negative errno of the connection (-ETIMEDOUT when a read timed out).
 */
static int exchange(struct req *r, const char *method, const char *path, const char *body)
{
	struct sbuf msg = { 0 };
	char buf[16384];
	int fd, ret;

	r->t_write = now_s(); /* a request that cannot connect counts when it tried */
	fd = conn_open(O.sock, O.timeout);
	if (fd < 0) {
		r->err = BS_ERR_CONNECT;
		snprintf(r->err_code, sizeof(r->err_code), "%s", strerror(-fd));
		return fd;
	}
	ret = sbuf_printf(&msg, "%s %s HTTP/1.1\r\nHost: duet\r\nConnection: close\r\n", method,
			  path);
	if (!ret && body)
		ret = sbuf_printf(&msg, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
				  strlen(body));
	ret = ret ?: sbuf_add(&msg, "\r\n", 2);
	ret = ret ?: body ? sbuf_add(&msg, body, strlen(body)) : 0;
	if (ret) {
		r->err = BS_ERR_WRITE;
		snprintf(r->err_code, sizeof(r->err_code), "out of memory");
		goto out;
	}
	r->t_write = now_s();
	ret = send_all(fd, msg.p, msg.len);
	if (ret) {
		r->err = BS_ERR_WRITE;
		snprintf(r->err_code, sizeof(r->err_code), "%s", strerror(-ret));
		goto out;
	}
	while (r->hp.st != HP_DONE) {
		ssize_t n = read(fd, buf, sizeof(buf));
		double t = now_s();

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
			break;
		}
		if (n == 0) {
			ret = hp_eof_ok(&r->hp) ? 0 : -ECONNRESET;
			break;
		}
		ret = hp_feed(&r->hp, buf, (size_t)n, t);
		if (ret)
			break;
	}
	if (!r->t_done)
		r->t_done = now_s();
out:
	free(msg.p);
	close(fd);
	return ret;
}

/* ---------------------------------------------------------------------------
 * Prompts.
 * ------------------------------------------------------------------------- */
static const char *const words[] = {
	"the",	   "river",   "stone",	 "quiet",    "morning", "engine",  "paper",  "window",
	"garden",  "silver",  "thunder", "village",  "ancient", "market",  "bridge", "orange",
	"winter",  "captain", "letter",	 "mountain", "forest",	"kitchen", "violin", "harbor",
	"lantern", "meadow",  "copper",	 "signal",   "desert",	"feather", "castle", "journey",
	"number",  "planet",  "shadow",	 "candle",   "ocean",	"machine", "puzzle", "rabbit",
	"station", "tower",   "valley",	 "whisper",  "yellow",	"zebra",   "anchor", "blanket",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

/* Token ids that make up long prompts (from POST /v1/tokenize of the word list). */
static int32_t *pool_ids;
static size_t n_pool_ids;
static char *model_json; /* O.model as a JSON string */

static void add_sampling(struct sbuf *b, int max_tokens)
{
	sbuf_printf(b,
		    ",\"max_tokens\":%d,\"temperature\":0,\"stream\":true,"
		    "\"stream_options\":{\"include_usage\":true}",
		    max_tokens);
	if (O.ban_token >= 0)
		sbuf_printf(b, ",\"logit_bias\":{\"%d\":-100}", O.ban_token);
	sbuf_add(b, "}", 1);
}

/* The JSON body of a request of class cls; rng varies the prompt. */
static char *request_body(int cls, uint64_t *rng)
{
	struct sbuf b = { 0 };

	sbuf_add(&b, "{\"model\":", 9);
	sbuf_add(&b, model_json, strlen(model_json));
	if (cls == CLS_DECODE) {
		sbuf_add(&b, ",\"prompt\":\"", 11);
		for (int i = 0; i < 6; i++) {
			const char *w = words[rng_next(rng) % NWORDS];

			if (i)
				sbuf_add(&b, " ", 1);
			sbuf_add(&b, w, strlen(w));
		}
		sbuf_add(&b, "\"", 1);
		add_sampling(&b, O.decode_tokens);
	} else {
		sbuf_add(&b, ",\"prompt\":[", 11);
		for (int i = 0; i < O.long_tokens; i++)
			sbuf_printf(&b, i ? ",%d" : "%d",
				    (int)pool_ids[rng_next(rng) % n_pool_ids]);
		sbuf_add(&b, "]", 1);
		add_sampling(&b, O.long_out);
	}
	return b.p;
}

/* ---------------------------------------------------------------------------
 * Results per class, folded in as requests end.
 * ------------------------------------------------------------------------- */
struct cls_stats {
	pthread_mutex_t mu;
	long sent, ok, early_stop, late;
	long err[BS_NERR];
	char last_err[BS_NERR][128];
	long tokens_in_window;		  /* token frames that arrived inside the window */
	long usage_tokens;		  /* output tokens of the counted requests */
	struct dvec ttft, tpot, itl, e2e; /* ms */
	double late_max;		  /* s an arrival waited for a sender thread */
};

static struct cls_stats stats[NCLS];
static double win_start, win_end;

static void record(struct req *r)
{
	struct cls_stats *s = &stats[r->cls];
	/* Open-loop arrivals count by when they were due, however late they went out. */
	bool counted = r->t_sched >= win_start && r->t_sched < win_end;
	size_t nt = r->tok_t.n;
	int tokens = r->usage_tokens > 0 ? r->usage_tokens : (int)nt;
	double wait = r->t_write - r->t_sched;

	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < nt; i++)
		if (r->tok_t.v[i] >= win_start && r->tok_t.v[i] < win_end)
			s->tokens_in_window++;
	if (!counted)
		goto out;
	s->sent++;
	if (wait > s->late_max)
		s->late_max = wait;
	if (wait > 0.010)
		s->late++;
	if (r->err) {
		s->err[r->err]++;
		snprintf(s->last_err[r->err], sizeof(s->last_err[0]), "%s", r->err_code);
		goto out;
	}
	s->ok++;
	s->usage_tokens += tokens;
	if (r->finish_stop)
		s->early_stop++;
	if (nt)
		dvec_push(&s->ttft, (r->tok_t.v[0] - r->t_write) * 1e3);
	if (nt >= 2 && tokens >= 2)
		dvec_push(&s->tpot, (r->tok_t.v[nt - 1] - r->tok_t.v[0]) * 1e3 / (tokens - 1));
	for (size_t i = 1; i < nt; i++)
		dvec_push(&s->itl, (r->tok_t.v[i] - r->tok_t.v[i - 1]) * 1e3);
	dvec_push(&s->e2e, (r->t_done - r->t_write) * 1e3);
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
	struct dvec due;
	size_t head;
	bool closed;
	uint64_t next_rng; /* each arrival's prompt comes from its own seed */
} arrivals = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *arrival_main(void *arg)
{
	uint64_t rng = O.seed;
	double t = *(double *)arg;

	for (;;) {
		t += -log(rng_unit(&rng)) / O.long_rate;
		if (t >= win_end)
			break;
		sleep_until(t);
		pthread_mutex_lock(&arrivals.mu);
		dvec_push(&arrivals.due, t);
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
		rng = rng_next(&arrivals.next_rng);
		pthread_mutex_unlock(&arrivals.mu);
		run_one(CLS_LONG, &rng, t);
	}
}

/* ---------------------------------------------------------------------------
 * Set-up: the model name and the token ids for long prompts.
 * ------------------------------------------------------------------------- */
/* For get_json: every answer's body goes to r->body (sse_body keeps only non-200 ones). */
static void keep_body(void *ctx, const char *p, size_t n, double t)
{
	struct req *r = ctx;

	sbuf_add(&r->body, p, n);
}

static json_t *get_json(const char *method, const char *path, const char *body)
{
	struct req r;
	json_t *j = NULL;
	int ret;

	req_init(&r, CLS_DECODE);
	r.hp.on_body = keep_body;
	ret = exchange(&r, method, path, body);
	if (r.err || ret)
		fprintf(stderr, "bench_serve: %s %s: %s\n", method, path,
			r.err ? r.err_code : strerror(-ret));
	else if (r.hp.status != 200)
		fprintf(stderr, "bench_serve: %s %s: HTTP %d: %.200s\n", method, path, r.hp.status,
			r.body.p ? r.body.p : "");
	else if (!(j = json_loads(r.body.p ? r.body.p : "", 0, NULL)))
		fprintf(stderr, "bench_serve: %s %s: answer is not JSON\n", method, path);
	req_fini(&r);
	return j;
}

static int setup(void)
{
	static char model[128];
	struct sbuf text = { 0 };
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
	if (O.long_rate <= 0 && O.long_clients <= 0)
		return 0;
	sbuf_add(&text, "{\"add_special\":false,\"prompt\":\"", 31);
	for (size_t i = 0; i < NWORDS; i++)
		sbuf_printf(&text, "%s%s", i ? " " : "", words[i]);
	sbuf_add(&text, ".\"}", 3);
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

static json_t *jsummary(const struct summary *s, bool with_max)
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
	struct summary ttft[NCLS], tpot[NCLS], itl[NCLS], e2e[NCLS];
	json_t *root = NULL, *classes;
	long total_ok = 0;
	int ret = 0;

	for (int c = 0; c < NCLS; c++) {
		ttft[c] = summarize(&stats[c].ttft);
		tpot[c] = summarize(&stats[c].tpot);
		itl[c] = summarize(&stats[c].itl);
		e2e[c] = summarize(&stats[c].e2e);
		total_ok += stats[c].ok;
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
		       cls_name[c], s->ok, cls_errors(s), s->early_stop,
		       s->tokens_in_window / O.duration, ttft[c].p50, ttft[c].p90, ttft[c].p99,
		       ttft[c].mean, tpot[c].p50, tpot[c].p90, tpot[c].p99, itl[c].p50, itl[c].p90,
		       itl[c].p99, itl[c].max);
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
				  (json_int_t)s->sent, "requests", (json_int_t)s->ok, "errors",
				  (json_int_t)cls_errors(s), "errors_by_kind", errs, "early_stop",
				  (json_int_t)s->early_stop, "output_tokens",
				  (json_int_t)s->usage_tokens, "output_tokens_per_s",
				  jnum(s->tokens_in_window / O.duration), "ttft_ms",
				  jsummary(&ttft[c], false), "tpot_ms", jsummary(&tpot[c], false),
				  "itl_ms", jsummary(&itl[c], true), "e2e_ms",
				  jsummary(&e2e[c], false), "late", (json_int_t)s->late));
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
 * --selftest: percentiles, and the HTTP + SSE parser fed a canned answer in
 * every split.
 * ------------------------------------------------------------------------- */
static int selftest(void)
{
	/* Chunk boundaries cut through events on purpose. */
	static const char *const chunks[] = {
		"data: {\"choices\":[{\"text\":\"a\",\"index\":0}]}\n\n",
		"data: {\"choices\":[{\"text\":\"b\",\"index\":0}]}\r\n\r\ndata: {\"choi",
		"ces\":[{\"text\":\"\",\"finish_reason\":\"stop\"}]}\n",
		"\n: comment\ndata: {\"choices\":[],\"usage\":{\"completion_tokens\":3}}\n\n",
		"data: [DONE]\n\n",
	};
	static const char refused[] = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 45\r\n\r\n"
				      "{\"error\":{\"message\":\"full\",\"code\":\"QFULL\"}}";
	static const char bad_size[] =
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
	static const char error_frame[] =
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
		"data: {\"choices\":[{\"text\":\"a\"}]}\n\n"
		"data: {\"error\":{\"message\":\"worker died\",\"code\":\"WORKER_LOST\"}}\n\n";
	struct sbuf ans = { 0 };
	double v[100], one = 7, three[] = { 3, 1, 2 };
	struct dvec d = { .v = three, .n = 3 };
	int fails = 0;

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			fails++;                                                             \
		}                                                                            \
	} while (0)

	for (int i = 0; i < 100; i++)
		v[i] = i + 1;
	CHECK(pct_sorted(v, 100, 0.50) == 50);
	CHECK(pct_sorted(v, 100, 0.90) == 90);
	CHECK(pct_sorted(v, 100, 0.99) == 99);
	CHECK(pct_sorted(v, 100, 1.00) == 100);
	CHECK(pct_sorted(v, 100, 0.00) == 1);
	CHECK(pct_sorted(v, 10, 0.99) == 10);
	CHECK(pct_sorted(v, 10, 0.50) == 5);
	CHECK(pct_sorted(&one, 1, 0.5) == 7);
	CHECK(isnan(pct_sorted(v, 0, 0.5)));
	{
		struct summary s = summarize(&d);

		CHECK(s.p50 == 2 && s.p90 == 3 && s.p99 == 3 && s.mean == 2 && s.max == 3);
	}

	sbuf_printf(&ans, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
			  "Transfer-Encoding: chunked\r\n\r\n");
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		sbuf_printf(&ans, "%zx\r\n", strlen(chunks[i]));
		sbuf_add(&ans, chunks[i], strlen(chunks[i]));
		sbuf_add(&ans, "\r\n", 2);
	}
	sbuf_printf(&ans, "0\r\nX-Trailer: 1\r\n\r\n");
	for (size_t split = 0; ans.p && split <= ans.len && !fails; split++) {
		struct req r;

		req_init(&r, CLS_DECODE);
		CHECK(hp_feed(&r.hp, ans.p, split, 1.0) == 0);
		CHECK(hp_feed(&r.hp, ans.p + split, ans.len - split, 2.0) == 0);
		req_settle(&r, 0);
		CHECK(r.hp.st == HP_DONE && r.hp.status == 200 && r.err == BS_ERR_NONE);
		CHECK(r.tok_t.n == 2 && r.usage_tokens == 3 && r.finish_stop && r.done_seen);
		CHECK(r.tok_t.n == 2 && r.tok_t.v[0] <= r.tok_t.v[1] && r.t_done >= r.tok_t.v[1]);
		req_fini(&r);
	}
	{
		struct req r;

		req_init(&r, CLS_DECODE);
		for (size_t i = 0; i < sizeof(refused) - 1; i++)
			hp_feed(&r.hp, refused + i, 1, 1.0);
		req_settle(&r, 0);
		CHECK(r.err == BS_ERR_HTTP_429 && !strcmp(r.err_code, "QFULL: full"));
		req_fini(&r);

		req_init(&r, CLS_DECODE);
		hp_feed(&r.hp, ans.p, ans.len / 2, 1.0);
		CHECK(!hp_eof_ok(&r.hp));
		req_settle(&r, -ECONNRESET);
		CHECK(r.err == BS_ERR_CUT);
		req_fini(&r);

		req_init(&r, CLS_DECODE);
		CHECK(hp_feed(&r.hp, bad_size, sizeof(bad_size) - 1, 1.0) == -EPROTO);
		req_settle(&r, -EPROTO);
		CHECK(r.err == BS_ERR_PROTOCOL);
		req_fini(&r);

		/* No length, no chunking: the body runs to EOF. */
		req_init(&r, CLS_DECODE);
		CHECK(hp_feed(&r.hp, error_frame, sizeof(error_frame) - 1, 1.0) == 0);
		CHECK(hp_eof_ok(&r.hp));
		req_settle(&r, 0);
		CHECK(r.err == BS_ERR_ERROR_FRAME &&
		      !strcmp(r.err_code, "WORKER_LOST: worker died"));
		CHECK(r.tok_t.n == 1);
		req_fini(&r);
	}
	free(ans.p);
#undef CHECK
	printf("selftest: %s\n", fails ? "FAILED" : "ok");
	return fails ? 1 : 0;
}

/* ---------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------- */
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
		"  --json FILE         also write the results as JSON\n");
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
};
#define N_OPT_DEFS (sizeof(opt_defs) / sizeof(opt_defs[0]))

/* Returns 0, 1 for --selftest, or -1 on a bad command line. */
static int parse_opts(int argc, char **argv)
{
	struct option lo[N_OPT_DEFS + 3] = { { 0 } };
	int c, idx;

	for (size_t i = 0; i < N_OPT_DEFS; i++)
		lo[i] = (struct option){ opt_defs[i].name, required_argument, NULL, 0 };
	lo[N_OPT_DEFS] = (struct option){ "selftest", no_argument, NULL, 'S' };
	lo[N_OPT_DEFS + 1] = (struct option){ "help", no_argument, NULL, 'h' };
	while ((c = getopt_long(argc, argv, "h", lo, &idx)) != -1) {
		const struct opt_def *d;
		char *end;

		if (c == 'S')
			return 1;
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
	if (optind != argc - 1) {
		fprintf(stderr, "bench_serve: need exactly one SOCKET\n");
		return -1;
	}
	O.sock = argv[optind];
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
	for (int c = 0; c < NCLS; c++)
		pthread_mutex_init(&stats[c].mu, NULL);
	if (setup())
		return 1;

	n_cl = O.decoders + O.long_clients;
	cl = calloc((size_t)n_cl + 1, sizeof(*cl));
	senders = calloc((size_t)O.long_pool, sizeof(*senders));
	if (!cl || !senders)
		return 1;
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
	for (int c = 0; c < NCLS; c++) {
		dvec_free(&stats[c].ttft);
		dvec_free(&stats[c].tpot);
		dvec_free(&stats[c].itl);
		dvec_free(&stats[c].e2e);
	}
	dvec_free(&arrivals.due);
	free(pool_ids);
	free(senders);
	free(cl);
	return rc;
}
