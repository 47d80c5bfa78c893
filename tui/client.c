// SPDX-License-Identifier: MIT
/*
 * client — HTTP/1.1 over AF_UNIX with bounded waits (see client.h).
 *
 * The socket is nonblocking; every connect, write and read first polls with
 * what is left of the deadline (and of the idle limit), in slices of at most
 * 200 ms so that a cancel flag set by another thread is seen promptly.
 */
#include "tui/client.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CLIENT_SLICE_MS 200
#define CLIENT_RETRY_MS 5 /* between connects while the listen backlog is full */

int client_buf_add(struct client_buf *b, const void *d, size_t n)
{
	if (n > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
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
	if (n)
		memcpy(b->p + b->len, d, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

void client_buf_free(struct client_buf *b)
{
	free(b->p);
	*b = (struct client_buf){ 0 };
}

const char *client_strerror(int err)
{
	switch (err) {
	case -ETIMEDOUT:
		return "no answer in time";
	case -EPROTO:
		return "malformed or truncated HTTP response";
	case -ECANCELED:
		return "cancelled";
	case -ENOENT:
		return "no such socket";
	default:
		return strerror(-err);
	}
}

void client_socket_dir(char *out, size_t cap)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	if (geteuid() == 0)
		snprintf(out, cap, "/run/duet");
	else if (xdg && xdg[0])
		snprintf(out, cap, "%s/duet", xdg);
	else
		snprintf(out, cap, "build/run");
}

bool client_error_message(const char *body, char *out, size_t cap)
{
	json_t *root = body ? json_loads(body, JSON_ALLOW_NUL, NULL) : NULL;
	const char *msg =
		json_string_value(json_object_get(json_object_get(root, "error"), "message"));

	if (msg)
		snprintf(out, cap, "%s", msg);
	json_decref(root);
	return msg != NULL;
}

/* --- waiting ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct conn {
	int fd;
	int64_t deadline; /* 0: none */
	int idle_ms;
	const atomic_bool *cancel;
	int eof_err; /* for an EOF before the answer ends: -EPROTO or -ECONNRESET */
	/* read buffer */
	char buf[16384];
	size_t pos, len;
	bool eof;
};

/* Wait for EVENTS on the connection; 0, -ETIMEDOUT, -ECANCELED or -errno. */
static int conn_wait(struct conn *c, short events)
{
	int64_t idle_end = c->idle_ms > 0 ? now_ms() + c->idle_ms : 0;

	for (;;) {
		struct pollfd pfd = { .fd = c->fd, .events = events };
		int64_t t = now_ms(), left = CLIENT_SLICE_MS;
		int n;

		if (c->cancel && atomic_load(c->cancel))
			return -ECANCELED;
		if (c->deadline && c->deadline - t < left)
			left = c->deadline - t;
		if (idle_end && idle_end - t < left)
			left = idle_end - t;
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0)
			return 0;
	}
}

/* Sleep a moment before the next connect; 0, -ETIMEDOUT or -ECANCELED. */
static int conn_pause(const struct conn *c, int64_t idle_end)
{
	int64_t t = now_ms(), left = CLIENT_RETRY_MS;

	if (c->cancel && atomic_load(c->cancel))
		return -ECANCELED;
	if (c->deadline && c->deadline - t < left)
		left = c->deadline - t;
	if (idle_end && idle_end - t < left)
		left = idle_end - t;
	if (left <= 0)
		return -ETIMEDOUT;
	poll(NULL, 0, (int)left);
	return 0;
}

static int conn_open(struct conn *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t idle_end = c->idle_ms > 0 ? now_ms() + c->idle_ms : 0;
	socklen_t len = sizeof(int);
	int err = 0, rc;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0)
		return -errno;
	/* A full listen backlog fails a nonblocking AF_UNIX connect with EAGAIN
	 * (nothing to poll for): try again until the daemon accepts, within the
	 * deadline and the idle limit. */
	for (;;) {
		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return 0;
		if (errno == EINPROGRESS)
			break;
		if (errno != EAGAIN)
			return -errno;
		rc = conn_pause(c, idle_end);
		if (rc)
			return rc;
	}
	rc = conn_wait(c, POLLOUT);
	if (rc)
		return rc;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

static int conn_write(struct conn *c, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		int rc;

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN)
			return -errno;
		rc = conn_wait(c, POLLOUT);
		if (rc)
			return rc;
	}
	return 0;
}

/* Refill when empty. Returns bytes available (0 at EOF) or a negative code. */
static ssize_t conn_fill(struct conn *c)
{
	if (c->pos < c->len)
		return (ssize_t)(c->len - c->pos);
	if (c->eof)
		return 0;
	for (;;) {
		ssize_t n = read(c->fd, c->buf, sizeof(c->buf));
		int rc;

		if (n >= 0) {
			c->pos = 0;
			c->len = (size_t)n;
			c->eof = n == 0;
			return n;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		rc = conn_wait(c, POLLIN);
		if (rc)
			return rc;
	}
}

/* One CRLF- (or LF-) terminated line into OUT, without the terminator. */
static int conn_line(struct conn *c, char *out, size_t cap)
{
	size_t n = 0;

	for (;;) {
		ssize_t a = conn_fill(c);
		char ch;

		if (a < 0)
			return (int)a;
		if (a == 0)
			return c->eof_err;
		ch = c->buf[c->pos++];
		if (ch == '\n')
			break;
		if (n + 1 < cap)
			out[n++] = ch;
	}
	if (n && out[n - 1] == '\r')
		n--;
	out[n] = '\0';
	return 0;
}

static int collect(void *ctx, const char *p, size_t n)
{
	return client_buf_add(ctx, p, n);
}

/*
 * Status line, headers, then the body (de-chunked) to FN.  Returns the
 * status, a negative code, or -ECANCELED when FN stopped the read.
 */
static int read_response(struct conn *c, client_body_fn fn, void *ctx, struct client_buf *out,
			 int *status_out)
{
	char line[8192];
	long long clen = -1;
	bool chunked = false;
	int status = 0, rc;

	rc = conn_line(c, line, sizeof(line));
	if (rc)
		return rc;
	if (strncmp(line, "HTTP/1.", 7) != 0 || sscanf(line + 8, " %d", &status) != 1 ||
	    status < 100 || status > 999)
		return -EPROTO;
	for (;;) {
		char *v;

		rc = conn_line(c, line, sizeof(line));
		if (rc)
			return rc;
		if (!line[0])
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
	}
	if (status_out)
		*status_out = status;
	if (!fn || status != 200) {
		fn = collect;
		ctx = out;
	}
	for (;;) {
		long long want;

		if (chunked) {
			char *e;

			rc = conn_line(c, line, sizeof(line));
			if (rc)
				return rc;
			want = strtoll(line, &e, 16); /* hex size [; extensions] */
			if (e == line || want < 0 || (*e && *e != ';'))
				return -EPROTO;
			if (want == 0) /* the last chunk; trailers are not needed */
				return status;
		} else {
			want = clen;
			if (want == 0)
				return status;
		}
		while (want != 0) {
			ssize_t a = conn_fill(c);
			size_t take;

			if (a < 0)
				return (int)a;
			if (a == 0) {
				if (want > 0 || chunked) /* closed early */
					return c->eof_err;
				return status;
			}
			take = (size_t)a;
			if (want > 0 && (long long)take > want)
				take = (size_t)want;
			rc = fn(ctx, c->buf + c->pos, take);
			c->pos += take;
			if (want > 0)
				want -= (long long)take;
			if (rc)
				return rc > 0 ? -ECANCELED : rc;
		}
		if (!chunked)
			return status;
		rc = conn_line(c, line, sizeof(line)); /* the CRLF after the chunk */
		if (rc)
			return rc;
	}
}

int client_request(const struct client_req *req, struct client_buf *out)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct client_buf msg = { 0 };
	size_t blen = req->body ? strlen(req->body) : 0;
	char head[768];
	int rc;

	if (!c)
		return -ENOMEM;
	c->fd = -1;
	c->deadline = req->timeout_ms > 0 ? now_ms() + req->timeout_ms : 0;
	c->idle_ms = req->idle_ms;
	c->cancel = req->cancel;
	c->eof_err = req->cut_reset ? -ECONNRESET : -EPROTO;
	rc = conn_open(c, req->sock);
	if (rc)
		goto out_close;
	snprintf(head, sizeof(head),
		 "%s %s HTTP/1.1\r\nHost: duet\r\nUser-Agent: %s\r\nConnection: close\r\n"
		 "%sContent-Length: %zu\r\n\r\n",
		 req->method, req->path, req->agent ? req->agent : "duet-client",
		 req->body ? "Content-Type: application/json\r\n" : "", blen);
	rc = client_buf_add(&msg, head, strlen(head));
	rc = rc ?: client_buf_add(&msg, req->body ? req->body : "", blen);
	if (!rc && req->on_stage)
		req->on_stage(req->ctx, CLIENT_SEND);
	rc = rc ?: conn_write(c, msg.p, msg.len);
	client_buf_free(&msg);
	if (rc)
		goto out_close;
	if (req->on_stage)
		req->on_stage(req->ctx, CLIENT_RECV);
	rc = read_response(c, req->on_body, req->ctx, out, req->status_out);
out_close:
	if (c->fd >= 0)
		close(c->fd);
	free(c);
	return rc;
}

/* --- server-sent events ---------------------------------------------------------- */

static int sse_line(struct client_sse *s, char *line, size_t len)
{
	const char *v;
	size_t vlen;
	int rc = 0;

	if (len == 0) { /* dispatch */
		if (s->data.len || s->event[0])
			rc = s->on_event(s->ctx, s->event[0] ? s->event : "message",
					 s->data.p ? s->data.p : "");
		s->data.len = 0;
		if (s->data.p)
			s->data.p[0] = '\0';
		s->event[0] = '\0';
		return rc;
	}
	if (line[0] == ':') {
		if (s->on_comment)
			s->on_comment(s->ctx, line + 1 + (line[1] == ' '));
		return 0;
	}
	v = memchr(line, ':', len);
	if (v) {
		size_t k = (size_t)(v - line);

		line[k] = '\0';
		v++;
		if (*v == ' ')
			v++;
		vlen = len - (size_t)(v - line);
	} else {
		v = "";
		vlen = 0;
	}
	if (!strcmp(line, "data")) {
		if (s->data.len && client_buf_add(&s->data, "\n", 1))
			return -ENOMEM;
		if (client_buf_add(&s->data, v, vlen))
			return -ENOMEM;
	} else if (!strcmp(line, "event")) {
		snprintf(s->event, sizeof(s->event), "%.*s", (int)vlen, v);
	}
	return 0;
}

int client_sse_feed(struct client_sse *s, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc;

		if (p[i] != '\n') {
			if (client_buf_add(&s->line, &p[i], 1))
				return -ENOMEM;
			continue;
		}
		if (s->line.len && s->line.p[s->line.len - 1] == '\r')
			s->line.p[--s->line.len] = '\0';
		if (!s->line.p && client_buf_add(&s->line, "", 0))
			return -ENOMEM;
		rc = sse_line(s, s->line.p, s->line.len);
		s->line.len = 0;
		s->line.p[0] = '\0';
		if (rc)
			return rc;
	}
	return 0;
}

void client_sse_free(struct client_sse *s)
{
	client_buf_free(&s->line);
	client_buf_free(&s->data);
}
