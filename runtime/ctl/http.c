// SPDX-License-Identifier: MIT
/*
 * HTTP/1.1 server on a UNIX socket over libmicrohttpd (MHD), external epoll.
 *
 * http_server_fd() is an epoll fd of our own that holds MHD's epoll fd and,
 * while a deferred answer waits, that connection's fd with EPOLLRDHUP: MHD
 * does not watch suspended connections, and a client that leaves while its
 * request is generating must cancel it at once, not at the next token.
 *
 * Life of a request (struct http_stream, MHD's per-request context):
 *   NEW      headers read; limits checked; body collected
 *   ANSWERED immediate response queued (also the 413/431 rejections)
 *   DEFERRED suspended, waiting for http_stream_reply/begin
 *   REPLIED  deferred answer queued, connection resumed
 *   STREAM   chunked answer; the content reader suspends when out of bytes
 * NOTIFY_COMPLETED frees it (after on_close when it was deferred).
 */
#include "runtime/ctl/http.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime/core/log.h"
#include "runtime/core/mem.h"
#include "runtime/ctl/openai.h"

#define HTTP_SUB "http"

enum http_state {
	HTTP_X_NEW,
	HTTP_X_ANSWERED,
	HTTP_X_DEFERRED,
	HTTP_X_REPLIED,
	HTTP_X_STREAM,
};

/* Per connection (MHD socket context). */
struct http_conn {
	uint64_t id;
	int fd;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	bool cred_ok;
	unsigned n_groups; /* supplementary groups (SO_PEERGROUPS), at most HTTP_MAX_GROUPS */
	gid_t groups[HTTP_MAX_GROUPS];
};

struct http_stream {
	struct http_server *srv;
	struct MHD_Connection *mc;
	struct http_conn *conn;
	struct http_stream *prev, *next; /* srv->live */
	enum http_state state;
	bool rejected; /* body no longer collected (413 queued) */
	bool too_big;  /* 413 owed at the end of the body, which is discarded meanwhile */
	size_t discarded, discard_max; /* past discard_max bytes: close instead */
	bool in_handler; /* inside on_request: queue without resuming */
	bool suspended;
	bool watched; /* conn->fd in srv->epfd */
	bool peer_gone;
	bool ended;	 /* http_stream_end() called */
	bool user_owned; /* deferred: on_close is owed */
	void *user;
	char *body; /* request body, NUL-terminated */
	size_t body_len, body_cap;
	char *out; /* stream bytes not yet handed to MHD: out[out_off, out_len) */
	size_t out_off, out_len, out_cap;
};

struct http_resp {
	struct http_stream *x;
	struct MHD_Response *mr;
	int status;
};

struct http_server {
	struct http_config cfg;
	struct http_handler h;
	char *path;
	int lfd;
	int epfd;
	struct MHD_Daemon *d;
	uint64_t next_conn_id;
	unsigned nconns;
	struct http_stream *live;
	bool stopping;
};

/* ------------------------------------------------------------------------- */
/* the socket */

static int http_group_parse(const char *name, gid_t *out)
{
	char *end;
	unsigned long v;
	struct group gr, *res = NULL;
	char buf[4096];
	int rc;

	errno = 0;
	v = strtoul(name, &end, 10);
	if (*name && !*end && !errno && v < (gid_t)-1) {
		*out = (gid_t)v;
		return 0;
	}
	rc = getgrnam_r(name, &gr, buf, sizeof(buf), &res);
	if (rc || !res) {
		log_error(HTTP_SUB, "group '%s' not found%s%s", name, rc ? ": " : "",
			  rc ? strerror(rc) : "");
		return -ENOENT;
	}
	*out = res->gr_gid;
	return 0;
}

/* Stale socket file: remove it.  Live one, or not a socket: refuse. */
static int http_clear_path(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, rc;

	if (lstat(path, &st)) {
		if (errno == ENOENT)
			return 0;
		rc = -errno;
		log_error(HTTP_SUB, "lstat %s: %s", path, strerror(errno));
		return rc;
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_error(HTTP_SUB, "%s exists and is not a socket; refusing to replace it", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		log_error(HTTP_SUB, "socket: %s", strerror(errno));
		return rc;
	}
	rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	close(fd);
	if (rc == 0) {
		log_error(HTTP_SUB, "%s: another server is listening on it; refusing to start",
			  path);
		return -EADDRINUSE;
	}
	if (unlink(path) && errno != ENOENT) {
		rc = -errno;
		log_error(HTTP_SUB, "unlink stale socket %s: %s", path, strerror(errno));
		return rc;
	}
	log_info(HTTP_SUB, "removed stale socket %s", path);
	return 0;
}

static int http_listen(struct http_server *srv)
{
	const struct http_config *c = &srv->cfg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *dir_copy;
	const char *dir;
	gid_t gid = (gid_t)-1;
	mode_t old;
	int fd, rc;

	if (!c->path || !*c->path || strlen(c->path) >= sizeof(sa.sun_path)) {
		log_error(HTTP_SUB, "socket path '%s' is empty or longer than %zu bytes",
			  c->path ? c->path : "", sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
	if (c->group && *c->group) {
		rc = http_group_parse(c->group, &gid);
		if (rc)
			return rc;
	}
	dir_copy = duet_strdup(c->path);
	if (!dir_copy)
		return -ENOMEM;
	dir = dirname(dir_copy);
	if (access(dir, W_OK | X_OK)) {
		rc = -errno;
		log_error(HTTP_SUB, "socket directory %s is missing or not writable: %s", dir,
			  strerror(errno));
		duet_free(dir_copy);
		return rc;
	}
	duet_free(dir_copy);
	rc = http_clear_path(c->path, &sa);
	if (rc)
		return rc;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		log_error(HTTP_SUB, "socket: %s", strerror(errno));
		return rc;
	}
	/* The umask is process-wide; this runs at start-up before other threads make files. */
	old = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc) {
		rc = -errno;
		log_error(HTTP_SUB, "bind %s: %s", c->path, strerror(errno));
		goto err_close;
	}
	if (gid != (gid_t)-1 && chown(c->path, (uid_t)-1, gid)) {
		rc = -errno;
		log_error(HTTP_SUB, "chown %s to group %s: %s", c->path, c->group, strerror(errno));
		goto err_unlink;
	}
	if (chmod(c->path, c->mode)) {
		rc = -errno;
		log_error(HTTP_SUB, "chmod %s %04o: %s", c->path, c->mode, strerror(errno));
		goto err_unlink;
	}
	if (listen(fd, 128)) {
		rc = -errno;
		log_error(HTTP_SUB, "listen %s: %s", c->path, strerror(errno));
		goto err_unlink;
	}
	srv->lfd = fd;
	return 0;

err_unlink:
	unlink(c->path);
err_close:
	close(fd);
	return rc;
}

/* ------------------------------------------------------------------------- */
/* suspended connections: watching for the client leaving */

static void http_watch(struct http_stream *x)
{
	struct epoll_event ev = { .events = EPOLLRDHUP, .data.ptr = x };

	if (x->watched || !x->conn || x->conn->fd < 0)
		return;
	if (epoll_ctl(x->srv->epfd, EPOLL_CTL_ADD, x->conn->fd, &ev) == 0)
		x->watched = true;
	else
		log_warn(HTTP_SUB, "epoll_ctl add conn %" PRIu64 ": %s", x->conn->id,
			 strerror(errno));
}

static void http_unwatch(struct http_stream *x)
{
	if (!x->watched)
		return;
	epoll_ctl(x->srv->epfd, EPOLL_CTL_DEL, x->conn->fd, NULL);
	x->watched = false;
}

static void http_suspend(struct http_stream *x)
{
	if (x->suspended)
		return;
	MHD_suspend_connection(x->mc);
	x->suspended = true;
	http_watch(x);
}

static void http_resume(struct http_stream *x)
{
	http_unwatch(x);
	if (!x->suspended)
		return;
	x->suspended = false;
	MHD_resume_connection(x->mc);
}

/* ------------------------------------------------------------------------- */
/* responses */

static struct MHD_Response *http_buf_response(const char *ctype, const void *body, size_t len)
{
	struct MHD_Response *mr;

	mr = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!mr)
		return NULL;
	if (ctype && MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES) {
		MHD_destroy_response(mr);
		return NULL;
	}
	return mr;
}

static int http_error_body(struct oai_buf *b, int status, const char *code, const char *fmt,
			   va_list ap)
{
	struct oai_error e;
	char msg[256];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	oai_error_set(&e, status, code, "", "%s", msg);
	return oai_write_error(b, &e);
}

/* Queue an immediate answer from inside the access handler. */
static enum MHD_Result http_queue_now(struct http_stream *x, int status, const char *code,
				      const char *fmt, ...)
{
	struct oai_buf b = { 0 };
	struct MHD_Response *mr = NULL;
	enum MHD_Result ok = MHD_NO;
	va_list ap;

	va_start(ap, fmt);
	if (http_error_body(&b, status, code, fmt, ap) == 0)
		mr = http_buf_response("application/json", b.data, b.len);
	va_end(ap);
	oai_buf_free(&b);
	if (!mr)
		return MHD_NO;
	ok = MHD_queue_response(x->mc, (unsigned)status, mr);
	MHD_destroy_response(mr);
	if (ok == MHD_YES)
		x->state = HTTP_X_ANSWERED;
	return ok;
}

int http_resp_set(struct http_resp *r, int status, const char *content_type, const void *body,
		  size_t len)
{
	if (r->mr || r->x->state != HTTP_X_NEW)
		return -EALREADY;
	r->mr = http_buf_response(content_type, body ? body : "", body ? len : 0);
	if (!r->mr)
		return -ENOMEM;
	r->status = status;
	return 0;
}

int http_resp_header(struct http_resp *r, const char *name, const char *value)
{
	if (!r->mr)
		return -EINVAL;
	return MHD_add_response_header(r->mr, name, value) == MHD_YES ? 0 : -EINVAL;
}

int http_resp_error(struct http_resp *r, int status, const char *code, const char *fmt, ...)
{
	struct oai_buf b = { 0 };
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = http_error_body(&b, status, code, fmt, ap);
	va_end(ap);
	if (rc == 0)
		rc = http_resp_set(r, status, "application/json", b.data, b.len);
	oai_buf_free(&b);
	return rc;
}

int http_resp_not_found(struct http_resp *r, const struct http_req *req)
{
	return http_resp_error(r, 404, "NOTFOUND", "no such path: %s", req->path);
}

int http_resp_bad_method(struct http_resp *r, const struct http_req *req, const char *allow)
{
	int rc = http_resp_error(r, 405, "METHOD", "%s does not allow %s (allowed: %s)", req->path,
				 req->method, allow);

	return rc ? rc : http_resp_header(r, MHD_HTTP_HEADER_ALLOW, allow);
}

int http_resp_defer(struct http_resp *r, void *user, struct http_stream **out)
{
	struct http_stream *x = r->x;

	if (r->mr || x->state != HTTP_X_NEW)
		return -EALREADY;
	x->state = HTTP_X_DEFERRED;
	x->user = user;
	x->user_owned = true;
	*out = x;
	return 0;
}

int http_resp_stream(struct http_resp *r, int status, const char *content_type, void *user,
		     struct http_stream **out)
{
	int rc = http_resp_defer(r, user, out);

	if (rc)
		return rc;
	rc = http_stream_begin(*out, status, content_type);
	if (rc) {
		/* Back to unanswered: the access handler sends 500. */
		r->x->state = HTTP_X_NEW;
		r->x->user_owned = false;
		*out = NULL;
	}
	return rc;
}

/* Queue mr on a deferred request and let MHD send it. */
static int http_stream_queue(struct http_stream *x, int status, struct MHD_Response *mr)
{
	enum MHD_Result ok = MHD_queue_response(x->mc, (unsigned)status, mr);

	MHD_destroy_response(mr);
	if (ok != MHD_YES)
		return -EIO;
	if (!x->in_handler)
		http_resume(x);
	return 0;
}

int http_stream_reply(struct http_stream *s, int status, const char *content_type, const void *body,
		      size_t len)
{
	struct MHD_Response *mr;
	int rc;

	if (s->state != HTTP_X_DEFERRED)
		return -EALREADY;
	if (s->peer_gone)
		return -EPIPE;
	mr = http_buf_response(content_type, body ? body : "", body ? len : 0);
	if (!mr)
		return -ENOMEM;
	rc = http_stream_queue(s, status, mr);
	if (rc == 0)
		s->state = HTTP_X_REPLIED;
	return rc;
}

int http_stream_reply_error(struct http_stream *s, int status, const char *code, const char *fmt,
			    ...)
{
	struct oai_buf b = { 0 };
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = http_error_body(&b, status, code, fmt, ap);
	va_end(ap);
	if (rc == 0)
		rc = http_stream_reply(s, status, "application/json", b.data, b.len);
	oai_buf_free(&b);
	return rc;
}

static ssize_t http_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct http_stream *x = cls;
	size_t n;

	if (x->peer_gone)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	n = x->out_len - x->out_off;
	if (n) {
		if (n > max)
			n = max;
		memcpy(buf, x->out + x->out_off, n);
		x->out_off += n;
		if (x->out_off == x->out_len)
			x->out_off = x->out_len = 0;
		return (ssize_t)n;
	}
	if (x->ended)
		return MHD_CONTENT_READER_END_OF_STREAM;
	http_suspend(x);
	return 0;
}

int http_stream_begin(struct http_stream *s, int status, const char *content_type)
{
	struct MHD_Response *mr;
	int rc;

	if (s->state != HTTP_X_DEFERRED)
		return -EALREADY;
	if (s->peer_gone)
		return -EPIPE;
	mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, http_reader, s, NULL);
	if (!mr)
		return -ENOMEM;
	if (content_type &&
	    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES)
		goto err_mr;
	if (content_type && !strcmp(content_type, "text/event-stream") &&
	    MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache") != MHD_YES)
		goto err_mr;
	rc = http_stream_queue(s, status, mr);
	if (rc == 0)
		s->state = HTTP_X_STREAM;
	return rc;

err_mr:
	MHD_destroy_response(mr);
	return -ENOMEM;
}

int http_stream_write(struct http_stream *s, const void *data, size_t len)
{
	size_t need;

	if (s->state != HTTP_X_STREAM || s->ended)
		return -EINVAL;
	if (s->peer_gone)
		return -EPIPE;
	if (!len)
		return 0;
	if (s->out_off && s->out_len + len > s->out_cap) {
		memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
		s->out_len -= s->out_off;
		s->out_off = 0;
	}
	if (s->out_len - s->out_off + len > s->srv->cfg.max_stream_buffer)
		return -ENOBUFS;
	need = s->out_len + len;
	if (need > s->out_cap) {
		size_t cap = s->out_cap ? s->out_cap : 4096;
		char *p;

		while (cap < need)
			cap *= 2;
		p = duet_realloc(s->out, cap);
		if (!p)
			return -ENOMEM;
		s->out = p;
		s->out_cap = cap;
	}
	memcpy(s->out + s->out_len, data, len);
	s->out_len += len;
	http_resume(s);
	return 0;
}

int http_stream_end(struct http_stream *s)
{
	if (s->state != HTTP_X_STREAM || s->ended)
		return -EINVAL;
	s->ended = true;
	http_resume(s);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* MHD callbacks */

const char *http_req_header(const struct http_req *req, const char *name)
{
	const struct http_stream *x = req->priv;

	return MHD_lookup_connection_value(x->mc, MHD_HEADER_KIND, name);
}

const char *http_req_query(const struct http_req *req, const char *key)
{
	const struct http_stream *x = req->priv;

	return MHD_lookup_connection_value(x->mc, MHD_GET_ARGUMENT_KIND, key);
}

static void http_notify_conn(void *cls, struct MHD_Connection *mc, void **socket_context,
			     enum MHD_ConnectionNotificationCode toe)
{
	struct http_server *srv = cls;
	struct http_conn *c;
	const union MHD_ConnectionInfo *ci;
	struct ucred cred;
	socklen_t clen = sizeof(cred), glen;

	if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		duet_free(*socket_context);
		*socket_context = NULL;
		srv->nconns--;
		return;
	}
	srv->nconns++;
	c = duet_calloc(1, sizeof(*c));
	*socket_context = c;
	if (!c)
		return; /* the access handler refuses the connection */
	c->id = ++srv->next_conn_id;
	c->fd = -1;
	ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (!ci)
		return;
	c->fd = ci->connect_fd;
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
		c->uid = cred.uid;
		c->gid = cred.gid;
		c->pid = cred.pid;
		c->cred_ok = true;
		glen = sizeof(c->groups);
		if (getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &glen) == 0)
			c->n_groups = glen / sizeof(gid_t);
		/* ERANGE: more than HTTP_MAX_GROUPS; the primary gid still counts. */
	} else {
		log_warn(HTTP_SUB, "getsockopt SO_PEERCRED on conn %" PRIu64 ": %s", c->id,
			 strerror(errno));
	}
}

static void http_x_free(struct http_stream *x)
{
	struct http_server *srv = x->srv;

	http_unwatch(x);
	if (x->prev)
		x->prev->next = x->next;
	else
		srv->live = x->next;
	if (x->next)
		x->next->prev = x->prev;
	duet_free(x->body);
	duet_free(x->out);
	duet_free(x);
}

static void http_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
			   enum MHD_RequestTerminationCode toe)
{
	struct http_server *srv = cls;
	struct http_stream *x = *req_cls;
	bool done;

	if (!x)
		return;
	*req_cls = NULL;
	x->suspended = false;
	http_unwatch(x);
	if (x->user_owned && srv->h.on_close) {
		done = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && !x->peer_gone &&
		       (x->state == HTTP_X_REPLIED || (x->state == HTTP_X_STREAM && x->ended));
		srv->h.on_close(srv->h.ctx, x, x->user, done);
	}
	http_x_free(x);
}

/* Adds a header line's size ("name: value\r\n") to *cls. */
static enum MHD_Result http_count_bytes(void *cls, enum MHD_ValueKind kind, const char *key,
					const char *value)
{
	(void)kind;
	*(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4;
	return MHD_YES;
}

/* First call for a request: headers are in.  Limits before any allocation for the body. */
static enum MHD_Result http_begin(struct http_server *srv, struct MHD_Connection *mc,
				  void **req_cls)
{
	const union MHD_ConnectionInfo *ci;
	struct http_conn *c = NULL;
	struct http_stream *x;
	const char *cl;
	unsigned long long len = 0;
	size_t head;
	char *end;
	int n;

	ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (ci)
		c = ci->socket_context;
	if (!c || !c->cred_ok)
		return MHD_NO; /* out of memory or no credentials: close */
	x = duet_calloc(1, sizeof(*x));
	if (!x)
		return MHD_NO;
	x->srv = srv;
	x->mc = mc;
	x->conn = c;
	x->next = srv->live;
	if (srv->live)
		srv->live->prev = x;
	srv->live = x;
	*req_cls = x;

	n = MHD_get_connection_values(mc, MHD_HEADER_KIND, NULL, NULL);
	if (n < 0 || (unsigned)n > srv->cfg.max_headers) {
		x->rejected = true;
		return http_queue_now(x, 431, "TOOBIG", "more than %u header lines",
				      srv->cfg.max_headers);
	}
	head = 0;
	MHD_get_connection_values(mc, MHD_HEADER_KIND, http_count_bytes, &head);
	if (head > srv->cfg.max_header_bytes) {
		x->rejected = true;
		return http_queue_now(x, 431, "TOOBIG", "request head of %zu bytes is over the limit of %zu",
				      head, srv->cfg.max_header_bytes);
	}
	cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		errno = 0;
		len = strtoull(cl, &end, 10);
		if (errno || end == cl || *end) {
			x->rejected = true;
			return http_queue_now(x, 400, "BADREQUEST", "bad Content-Length");
		}
		if (len > srv->cfg.max_body) {
			x->rejected = true;
			/*
			 * A body up to twice the limit is read and dropped, so that
			 * the 413 goes out after it: a reply sent while the client is
			 * still writing can be lost to the reset that closing with
			 * unread data causes.  A bigger one is refused at once and the
			 * connection closed.
			 */
			if (len - srv->cfg.max_body <= srv->cfg.max_body) {
				x->too_big = true;
				x->discard_max = (size_t)len;
				return MHD_YES;
			}
			return http_queue_now(x, 413, "TOOBIG",
					      "request body of %llu bytes is over the limit of %zu",
					      len, srv->cfg.max_body);
		}
	}
	x->body_cap = (size_t)len + 1;
	x->body = duet_malloc(x->body_cap);
	if (!x->body)
		return http_queue_now(x, 500, "NOMEM", "out of memory");
	x->body[0] = '\0';
	return MHD_YES;
}

static enum MHD_Result http_body(struct http_stream *x, const char *data, size_t *size)
{
	size_t n = *size, need;
	char *p;

	*size = 0;
	if (x->too_big) {
		/* 413 waits for the end of the body; do not read more than a second limit's worth. */
		x->discarded += n;
		return x->discarded > x->discard_max ? MHD_NO : MHD_YES;
	}
	if (x->rejected || x->state != HTTP_X_NEW)
		return MHD_YES;
	if (n > x->srv->cfg.max_body - x->body_len) {
		x->rejected = true;
		/* MHD may refuse an answer in the middle of a body: then at its end. */
		if (http_queue_now(x, 413, "TOOBIG", "request body is over the limit of %zu",
				   x->srv->cfg.max_body) != MHD_YES) {
			x->too_big = true;
			x->discarded = n;
			x->discard_max = x->srv->cfg.max_body;
		}
		duet_free(x->body);
		x->body = NULL;
		return MHD_YES;
	}
	need = x->body_len + n + 1;
	if (need > x->body_cap) {
		size_t cap = x->body_cap * 2;

		if (cap < need)
			cap = need;
		if (cap > x->srv->cfg.max_body + 1)
			cap = x->srv->cfg.max_body + 1;
		p = duet_realloc(x->body, cap);
		if (!p)
			return http_queue_now(x, 500, "NOMEM", "out of memory");
		x->body = p;
		x->body_cap = cap;
	}
	memcpy(x->body + x->body_len, data, n);
	x->body_len += n;
	x->body[x->body_len] = '\0';
	return MHD_YES;
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *mc, const char *url,
				   const char *method, const char *version, const char *upload,
				   size_t *upload_size, void **req_cls)
{
	struct http_server *srv = cls;
	struct http_stream *x = *req_cls;
	struct http_resp r = { 0 };
	struct http_req req;
	enum MHD_Result ok;

	if (!x)
		return http_begin(srv, mc, req_cls);
	if (*upload_size)
		return http_body(x, upload, upload_size);
	if (x->state == HTTP_X_DEFERRED)
		return MHD_NO; /* resumed without an answer: peer gone or shutting down */
	if (x->too_big) {
		x->too_big = false;
		return http_queue_now(x, 413, "TOOBIG", "request body is over the limit of %zu",
				      srv->cfg.max_body);
	}
	if (x->state != HTTP_X_NEW || x->rejected)
		return MHD_YES;

	req = (struct http_req){
		.method = method,
		.path = url,
		.body = x->body,
		.body_len = x->body_len,
		.uid = x->conn->uid,
		.gid = x->conn->gid,
		.pid = x->conn->pid,
		.groups = x->conn->groups,
		.n_groups = x->conn->n_groups,
		.conn_id = x->conn->id,
		.is_admin = srv->cfg.is_admin,
		.priv = x,
	};
	r.x = x;
	x->in_handler = true;
	srv->h.on_request(srv->h.ctx, &req, &r);
	x->in_handler = false;

	if (x->state == HTTP_X_DEFERRED) {
		http_suspend(x);
		return MHD_YES;
	}
	if (x->state == HTTP_X_STREAM || x->state == HTTP_X_REPLIED)
		return MHD_YES; /* queued inside the handler */
	if (!r.mr) {
		log_error(HTTP_SUB, "%s %s: handler gave no answer", method, url);
		return http_queue_now(x, 500, "INTERNAL", "no answer for %s %s", method, url);
	}
	x->state = HTTP_X_ANSWERED;
	ok = MHD_queue_response(mc, (unsigned)r.status, r.mr);
	MHD_destroy_response(r.mr);
	return ok;
}

static void http_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	log_debug(HTTP_SUB, "libmicrohttpd: %s", line);
}

/* ------------------------------------------------------------------------- */
/* the server */

int http_server_create(const struct http_config *cfg, const struct http_handler *h,
		       struct http_server **out)
{
	struct http_server *srv;
	struct epoll_event ev = { .events = EPOLLIN };
	const union MHD_DaemonInfo *di;
	int rc;

	if (!cfg || !h || !h->on_request || !out)
		return -EINVAL;
	if (cfg->mode & 0007) {
		log_error(HTTP_SUB, "socket mode %04o would give access to everyone", cfg->mode);
		return -EINVAL;
	}
	srv = duet_calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->cfg = *cfg;
	srv->h = *h;
	srv->lfd = -1;
	srv->epfd = -1;
	if (!srv->cfg.mode)
		srv->cfg.mode = 0660;
	if (!srv->cfg.max_body)
		srv->cfg.max_body = 1 << 20;
	if (!srv->cfg.max_header_bytes)
		srv->cfg.max_header_bytes = 16 << 10;
	if (!srv->cfg.max_headers)
		srv->cfg.max_headers = 64;
	if (!srv->cfg.max_conns)
		srv->cfg.max_conns = 256;
	if (!srv->cfg.idle_timeout_s)
		srv->cfg.idle_timeout_s = 60;
	if (!srv->cfg.max_stream_buffer)
		srv->cfg.max_stream_buffer = 1 << 20;
	srv->path = duet_strdup(cfg->path ? cfg->path : "");
	if (!srv->path) {
		rc = -ENOMEM;
		goto err_free;
	}
	srv->cfg.path = srv->path;
	rc = http_listen(srv);
	srv->cfg.group = NULL; /* not kept */
	if (rc)
		goto err_path;

	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv->epfd < 0) {
		rc = -errno;
		log_error(HTTP_SUB, "epoll_create1: %s", strerror(errno));
		goto err_listen;
	}
	/*
	 * The request head lives in MHD's per-connection pool; twice the head
	 * limit leaves room for the response headers and a write buffer.
	 */
	srv->d = MHD_start_daemon(
		MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL,
		http_access, srv, MHD_OPTION_LISTEN_SOCKET, srv->lfd, MHD_OPTION_CONNECTION_LIMIT,
		srv->cfg.max_conns, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
		(size_t)(2 * srv->cfg.max_header_bytes), MHD_OPTION_CONNECTION_TIMEOUT,
		srv->cfg.idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, http_completed, srv,
		MHD_OPTION_NOTIFY_CONNECTION, http_notify_conn, srv, MHD_OPTION_EXTERNAL_LOGGER,
		http_mhd_log, srv, MHD_OPTION_END);
	if (!srv->d) {
		rc = -EIO;
		log_error(HTTP_SUB, "MHD_start_daemon on %s failed", srv->path);
		goto err_ep;
	}
	di = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!di) {
		rc = -EIO;
		log_error(HTTP_SUB, "MHD_get_daemon_info(EPOLL_FD) failed");
		goto err_mhd;
	}
	ev.data.ptr = NULL;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, di->epoll_fd, &ev)) {
		rc = -errno;
		log_error(HTTP_SUB, "epoll_ctl add MHD fd: %s", strerror(errno));
		goto err_mhd;
	}
	log_info(HTTP_SUB, "listening on %s (mode %04o%s)", srv->path, srv->cfg.mode,
		 srv->cfg.is_admin ? ", admin" : "");
	*out = srv;
	return 0;

err_mhd:
	MHD_stop_daemon(srv->d);
err_ep:
	close(srv->epfd);
err_listen:
	close(srv->lfd);
	unlink(srv->path);
err_path:
	duet_free(srv->path);
err_free:
	duet_free(srv);
	return rc;
}

void http_server_destroy(struct http_server *srv)
{
	struct http_stream *x;

	if (!srv)
		return;
	srv->stopping = true;
	/* MHD must not be stopped with suspended connections. */
	for (x = srv->live; x; x = x->next) {
		x->peer_gone = true;
		http_resume(x);
	}
	MHD_run(srv->d);
	MHD_stop_daemon(srv->d);
	close(srv->epfd);
	close(srv->lfd);
	if (unlink(srv->path) && errno != ENOENT)
		log_warn(HTTP_SUB, "unlink %s: %s", srv->path, strerror(errno));
	duet_free(srv->path);
	duet_free(srv);
}

int http_server_fd(const struct http_server *srv)
{
	return srv->epfd;
}

int http_server_timeout_ms(const struct http_server *srv)
{
	MHD_UNSIGNED_LONG_LONG ms;

	if (MHD_get_timeout(srv->d, &ms) != MHD_YES)
		return -1;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

unsigned http_server_conns(const struct http_server *srv)
{
	return srv->nconns;
}

int http_server_run(struct http_server *srv)
{
	struct epoll_event ev[32];
	int i, n;

	n = epoll_wait(srv->epfd, ev, 32, 0);
	for (i = 0; i < n; i++) {
		struct http_stream *x = ev[i].data.ptr;

		if (!x)
			continue;
		/* A suspended connection's client left: let MHD see it and finish. */
		log_debug(HTTP_SUB, "conn %" PRIu64 ": client left while waiting", x->conn->id);
		x->peer_gone = true;
		http_resume(x);
	}
	return MHD_run(srv->d) == MHD_YES ? 0 : -EIO;
}
