/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 server on a UNIX stream socket (api.sock, admin.sock), built on
 * libmicrohttpd in external-epoll mode.
 *
 * Threading: none of its own.  The owner (duetd's single-threaded supervisor
 * loop) watches http_server_fd() for EPOLLIN, calls http_server_run() when it
 * is readable or when http_server_timeout_ms() has passed, and every callback
 * runs inside http_server_run() on that thread.  Every function here must be
 * called from the owner thread; none of them blocks.
 *
 * Socket: created before listen with mode 0600 (umask), then chown'ed to the
 * configured group and chmod'ed to the configured mode.  A stale socket file
 * (nobody accepts on it) is replaced; a live one, or a path that is not a
 * socket, is refused.  The file is removed by http_server_destroy().
 *
 * Limits, applied before anything proportional to the request is allocated:
 * header bytes (libmicrohttpd's per-connection pool: 431 or 413), header
 * count (431), body bytes (a Content-Length over the limit gets 413 before
 * the body is read; a chunked body gets 413 as soon as it passes the limit),
 * connections (further ones are accepted and closed at once).
 *
 * Every connection's peer credentials (SO_PEERCRED) come with each request.
 */
#ifndef DUET_HTTP_H
#define DUET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_MAX_GROUPS 64 /* supplementary groups read per connection */

struct http_server;
struct http_resp;   /* the answer being built inside on_request */
struct http_stream; /* a deferred answer: a later reply or an SSE/chunked stream */

struct http_config {
	const char *path;	 /* socket path; its directory must exist and be writable */
	const char *group;	 /* group name or decimal gid for the socket; NULL/"": keep ours */
	unsigned mode;		 /* socket file mode, e.g. 0660; 0: 0660.  Never o+rwx. */
	bool is_admin;		 /* copied into every http_req (admin.sock) */
	size_t max_body;	 /* bytes; 0: 1 MiB */
	size_t max_header_bytes; /* whole request head; 0: 16 KiB */
	unsigned max_headers;	 /* header lines; 0: 64 */
	unsigned max_conns;	 /* simultaneous connections; 0: 256 */
	unsigned idle_timeout_s; /* idle or stalled connection; 0: 60 */
	size_t max_stream_buffer; /* bytes queued on a stream the client reads too slowly; 0: 1 MiB */
};

/* One request, valid only during on_request (copy what must outlive it). */
struct http_req {
	const char *method; /* "GET", "POST", ... as sent */
	const char *path;   /* decoded, without the query */
	const char *body;   /* NUL-terminated beyond body_len; "" when there is none */
	size_t body_len;
	uid_t uid; /* peer credentials of the connection (SO_PEERCRED) */
	gid_t gid;
	pid_t pid;
	const gid_t *groups; /* supplementary groups (SO_PEERGROUPS) */
	unsigned n_groups;
	uint64_t conn_id; /* per server, from 1; the same for keep-alive requests */
	bool is_admin;	  /* the server's http_config.is_admin */
	const void *priv; /* internal */
};

/* Header value (case-insensitive name) or query argument (decoded); NULL when absent. */
const char *http_req_header(const struct http_req *req, const char *name);
const char *http_req_query(const struct http_req *req, const char *key);

struct http_handler {
	void *ctx;
	/*
	 * Answer req: exactly one of http_resp_set() / http_resp_error() (and
	 * optionally http_resp_header()), http_resp_defer() or
	 * http_resp_stream().  Answering nothing sends 500.
	 */
	void (*on_request)(void *ctx, const struct http_req *req, struct http_resp *resp);
	/*
	 * Exactly once for every deferred answer, when it is over: completed
	 * is true when the whole answer (reply, or stream up to
	 * http_stream_end) went out, false when the client went away first,
	 * the connection broke or the server is being destroyed — the
	 * caller cancels the work behind it.  s is invalid once this returns.
	 * May be NULL.
	 */
	void (*on_close)(void *ctx, struct http_stream *s, void *user, bool completed);
};

/* Creates the socket and starts listening; logs the cause of a failure. */
int http_server_create(const struct http_config *cfg, const struct http_handler *h,
		       struct http_server **out);
/* Closes every connection (on_close(completed = false) for open streams), removes the socket. */
void http_server_destroy(struct http_server *srv);

/* One fd for the owner's epoll set (EPOLLIN, level-triggered). */
int http_server_fd(const struct http_server *srv);
/* Milliseconds until http_server_run() is due anyway; -1: only when the fd is readable. */
int http_server_timeout_ms(const struct http_server *srv);
/* Does all pending work without blocking; runs the callbacks. */
int http_server_run(struct http_server *srv);
/* Open connections. */
unsigned http_server_conns(const struct http_server *srv);

/* Immediate answer; body is copied.  -EALREADY if already answered, -ENOMEM. */
int http_resp_set(struct http_resp *r, int status, const char *content_type, const void *body,
		  size_t len);
/* Extra header on the answer set by http_resp_set()/http_resp_error() (-EINVAL before). */
int http_resp_header(struct http_resp *r, const char *name, const char *value);
/*
 * OpenAI-format error body {"error":{"message","type","param","code"}} with
 * the given status and stable upper-case code word (e.g. "NOTFOUND").
 */
int http_resp_error(struct http_resp *r, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* 404 NOTFOUND for req's path. */
int http_resp_not_found(struct http_resp *r, const struct http_req *req);
/* 405 METHOD with "Allow: <allow>" (e.g. "GET, POST"). */
int http_resp_bad_method(struct http_resp *r, const struct http_req *req, const char *allow);

/*
 * Answer later: the connection waits (without timing out) until
 * http_stream_reply() or http_stream_begin() on *out.  user comes back in
 * on_close.
 */
int http_resp_defer(struct http_resp *r, void *user, struct http_stream **out);
/* http_resp_defer() then http_stream_begin(). */
int http_resp_stream(struct http_resp *r, int status, const char *content_type, void *user,
		     struct http_stream **out);

/* The whole deferred answer (body copied).  -EALREADY after begin/reply, -EPIPE if the peer left. */
int http_stream_reply(struct http_stream *s, int status, const char *content_type, const void *body,
		      size_t len);
int http_stream_reply_error(struct http_stream *s, int status, const char *code, const char *fmt,
			    ...) __attribute__((format(printf, 4, 5)));
/*
 * Send the status line and headers of a chunked answer now ("text/event-stream"
 * also gets Cache-Control: no-cache).  Then http_stream_write() any number of
 * times (bytes are copied and sent as they can be; -ENOBUFS past
 * max_stream_buffer unsent bytes, -EPIPE once the client left) and
 * http_stream_end() once.
 */
int http_stream_begin(struct http_stream *s, int status, const char *content_type);
int http_stream_write(struct http_stream *s, const void *data, size_t len);
int http_stream_end(struct http_stream *s);

#endif /* DUET_HTTP_H */
