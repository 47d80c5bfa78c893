/* SPDX-License-Identifier: MIT */
/*
 * client — HTTP/1.1 over duetd's UNIX sockets, shared by duetctl and
 * duet-console.  One request per connection ("Connection: close"); bodies
 * with Content-Length, chunked, or until EOF; server-sent events parsed as
 * they arrive.  Every wait is bounded: a request has a deadline for the
 * whole exchange and, for streams, an idle limit between bytes.
 *
 * Errors are negative errno values; client_strerror() names the ones this
 * module makes up (-ETIMEDOUT: the deadline passed, -EPROTO: not HTTP).
 */
#ifndef DUET_TUI_CLIENT_H
#define DUET_TUI_CLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* A growable byte buffer, always NUL-terminated when p is not NULL. */
struct client_buf {
	char *p;
	size_t len, cap;
};

int client_buf_add(struct client_buf *b, const void *d, size_t n); /* 0 or -ENOMEM */
void client_buf_free(struct client_buf *b);

/* Called with each piece of a 200 response's body as it arrives; nonzero stops the read. */
typedef int (*client_body_fn)(void *ctx, const char *p, size_t n);

/* How far a request got: an error is in the last stage entered. */
enum client_stage {
	CLIENT_CONNECT, /* connecting (the stage a request starts in) */
	CLIENT_SEND,	/* connected; the request is about to be written */
	CLIENT_RECV,	/* written; the answer is being read */
};

struct client_req {
	const char *sock;   /* path of the UNIX socket */
	const char *method; /* "GET", "POST" */
	const char *path;   /* "/v1/status" */
	const char *body;   /* JSON, or NULL for none */
	int timeout_ms;	    /* whole exchange; <= 0: no deadline */
	int idle_ms;	    /* most silence between two reads; <= 0: no limit */
	/* Streaming: a 200 body goes to on_body as it arrives (else into out). */
	client_body_fn on_body;
	void *ctx;
	/* Set from another thread to end a stream early (-ECANCELED). May be NULL. */
	const atomic_bool *cancel;
	const char *agent; /* User-Agent */
	int *status_out;   /* set to the HTTP status once the headers are read (streams) */
	/* Called with ctx on entering CLIENT_SEND (right before the write: a
	 * benchmark's send time) and CLIENT_RECV. May be NULL. */
	void (*on_stage)(void *ctx, enum client_stage stage);
	/* An answer cut short by EOF returns -ECONNRESET instead of -EPROTO, for a
	 * caller that counts a dropped connection apart from a malformed answer. */
	bool cut_reset;
};

/*
 * Run one request.  Returns the HTTP status (>= 100) with the body of a
 * non-streamed or non-200 answer in OUT (which the caller frees), or a
 * negative errno: -ENOENT / -ECONNREFUSED no daemon, -EACCES no permission
 * on the socket, -ETIMEDOUT, -EPROTO (-ECONNRESET for a cut answer with
 * cut_reset), -ECANCELED (the cancel flag, or on_body returned a positive
 * value), or on_body's negative value.  A full listen backlog is waited out
 * within the deadline and the idle limit.
 */
int client_request(const struct client_req *req, struct client_buf *out);

/* Text for a negative code from client_request(). */
const char *client_strerror(int err);

/*
 * The directory duetd uses for api.socket_dir "": /run/duet as root, else
 * $XDG_RUNTIME_DIR/duet, else build/run.  Written into OUT.
 */
void client_socket_dir(char *out, size_t cap);

/* The message of an OpenAI-style {"error":{"message":..}} body, into OUT; false if none. */
bool client_error_message(const char *body, char *out, size_t cap);

/*
 * Server-sent events: feed bytes as they arrive; each complete event (ended
 * by a blank line) goes to on_event with its "event:" name ("message" when
 * absent) and its "data:" lines joined with '\n'.  Comments (": ...") are
 * passed as on_comment when set.  on_event's nonzero return stops the feed
 * and is returned.
 */
struct client_sse {
	int (*on_event)(void *ctx, const char *event, const char *data);
	void (*on_comment)(void *ctx, const char *text);
	void *ctx;
	/* private */
	struct client_buf line, data;
	char event[64];
};

int client_sse_feed(struct client_sse *s, const char *p, size_t n);
void client_sse_free(struct client_sse *s);

#endif /* DUET_TUI_CLIENT_H */
