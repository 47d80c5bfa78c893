/* SPDX-License-Identifier: MIT */
/*
 * The JSON layer of the OpenAI-compatible API on api.sock: request bodies of
 * /v1/completions, /v1/chat/completions, /v1/tokenize and /v1/detokenize in,
 * validated C structs out; results out as response bodies and SSE chunks.
 * No sockets, no HTTP, no model: the control server owns those.
 *
 * Parsing contract (every oai_parse_*):
 *   - returns 0 and fills *out, which then owns all its memory (one arena,
 *     released by the matching oai_*_free(); free is safe on a zeroed or
 *     already freed struct);
 *   - or returns -EINVAL (bad request; *err says why) or -ENOMEM (*err is a
 *     500 NOMEM), and *out is left zeroed with nothing to free.
 *   - Every string handed out is NUL-terminated, valid UTF-8 (jansson checks
 *     it), contains no U+0000 (rejected: the tokenizer and stop matching work
 *     on C strings) and comes with its length in bytes.
 *   - Optional fields given as JSON null count as absent (clients send that).
 *   - Unknown top-level fields are ignored, as OpenAI does for fields it
 *     does not know of in practice; their names are recorded in
 *     oai_params.unknown so the server can log them at debug level.
 *     Duplicate keys in one object are rejected (BADJSON).
 *   - Token ids are checked to be integers in [0, INT32_MAX]; the server
 *     checks them against the vocabulary, and prompt + max_tokens against
 *     the context length.
 *
 * Limits chosen here, OpenAI's where it has one:
 *   stop: a string or an array of at most OAI_MAX_STOP (4, like OpenAI)
 *   non-empty strings of at most OAI_MAX_STOP_LEN bytes; logit_bias: at most
 *   OAI_MAX_LOGIT_BIAS entries; messages: at most OAI_MAX_MESSAGES; JSON
 *   nesting at most OAI_MAX_DEPTH (checked before jansson sees the body, so
 *   nesting bombs cost one linear scan); user: at most OAI_MAX_USER bytes.
 */
#ifndef DUET_OAI_H
#define DUET_OAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OAI_MAX_STOP 4
#define OAI_MAX_STOP_LEN 256
#define OAI_MAX_LOGIT_BIAS 1024
#define OAI_MAX_MESSAGES 4096
#define OAI_MAX_DEPTH 32
#define OAI_MAX_USER 256

/*
 * A rejected request.  code is the stable upper-case word clients and
 * statistics switch on:
 *   BADJSON      body is not JSON (message has jansson's line and column)
 *   BADTYPE      a field has the wrong JSON type
 *   BADPARAM     a field is out of range or malformed
 *   MISSING      a required field is absent
 *   UNSUPPORTED  valid OpenAI, not supported by Duet (n > 1, logprobs, images, ...)
 *   TOOBIG       body larger than the caller's limit (http_status 413)
 *   NOMEM        out of memory (http_status 500)
 * param names the field as a path ("messages[2].content[0].type"), empty
 * when the whole body is at fault; message starts with that path.
 */
struct oai_error {
	int http_status;
	const char *type; /* "invalid_request_error" (4xx) or "server_error" (5xx); static */
	char code[32];
	char param[64];
	char message[256];
};

/* Fill *e (printf-style message); type follows from status.  For the server's own errors. */
void oai_error_set(struct oai_error *e, int status, const char *code, const char *param,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* What the caller allows; one per server, read-only while parsing. */
struct oai_limits {
	size_t max_body;	     /* bytes; a longer body is 413 TOOBIG; 0: no limit */
	uint32_t default_max_tokens; /* when the request has none; >= 1 */
	uint32_t max_tokens_cap;     /* max_tokens above it is BADPARAM; 0: no cap */
	uint32_t max_n;		     /* n above it is BADPARAM; 0: only n = 1 */
	uint32_t max_logprobs;	     /* top logprobs above it are BADPARAM; 0: no logprobs */
};

/* Memory owned by a parsed request; opaque to callers. */
struct oai_arena {
	void *head;
};

struct oai_logit_bias {
	int32_t token;
	float bias; /* [-100, 100] */
};

/* Sampling fields shared by completions and chat; defaults in brackets. */
struct oai_sampling {
	float temperature;	  /* [0, 2]       [1]; 0 means greedy */
	float top_p;		  /* (0, 1]       [1] */
	int32_t top_k;		  /* >= 0         [0 = off]   (extension) */
	float min_p;		  /* [0, 1]       [0]         (extension) */
	float presence_penalty;	  /* [-2, 2]      [0] */
	float frequency_penalty;  /* [-2, 2]      [0] */
	float repetition_penalty; /* (0, 10]      [1]         (extension) */
	bool has_seed;
	int64_t seed;
	struct oai_logit_bias *logit_bias; /* sorted by token, no duplicates */
	size_t n_logit_bias;
};

struct oai_str {
	char *ptr; /* NUL-terminated, no NUL inside */
	size_t len;
};

/* Fields shared by completions and chat. */
struct oai_params {
	struct oai_str model;
	uint32_t max_tokens; /* >= 1; limits->default_max_tokens when absent */
	struct oai_sampling sampling;
	struct oai_str stop[OAI_MAX_STOP];
	unsigned n_stop;
	bool stream;
	bool include_usage; /* stream_options.include_usage */
	uint32_t n;	    /* choices, [1, limits->max_n]; 1 when absent */
	bool logprobs;	    /* chat "logprobs": true, or completions "logprobs": k present */
	uint32_t top_logprobs; /* alternatives per token, [0, limits->max_logprobs] */
	unsigned n_unknown; /* unknown top-level fields seen */
	char unknown[128];  /* their names, comma-separated, cut with "..." */
};

/* POST /v1/completions.  Exactly one of prompt / prompt_tokens is set. */
struct oai_completion {
	struct oai_params p;
	bool has_prompt_tokens;
	struct oai_str prompt;	/* may be empty ("" is a valid prompt) */
	int32_t *prompt_tokens; /* n_prompt_tokens >= 1 */
	size_t n_prompt_tokens;
	struct oai_arena arena;
};

enum oai_role {
	OAI_ROLE_SYSTEM, /* also "developer" */
	OAI_ROLE_USER,
	OAI_ROLE_ASSISTANT,
};

/* One chat message; text parts of an array content are concatenated with no separator. */
struct oai_message {
	enum oai_role role;
	struct oai_str content; /* an assistant's null content reads as "" */
};

/* POST /v1/chat/completions.  max_completion_tokens wins over max_tokens. */
struct oai_chat {
	struct oai_params p;
	struct oai_message *messages; /* n_messages in [1, OAI_MAX_MESSAGES] */
	size_t n_messages;
	struct oai_arena arena;
};

/*
 * POST /v1/tokenize: {"model", "prompt" | "content" (exactly one),
 * "add_special" or "add_special_tokens" [true]}.  model is optional for both
 * tokenize and detokenize ("" when absent: the server's default model).
 */
struct oai_tokenize {
	struct oai_str model;
	struct oai_str text;
	bool add_special;
	struct oai_arena arena;
};

/* POST /v1/detokenize: {"model", "tokens": [ids]} (tokens may be empty). */
struct oai_detokenize {
	struct oai_str model;
	int32_t *tokens;
	size_t n_tokens;
	struct oai_arena arena;
};

int oai_parse_completion(const char *body, size_t len, const struct oai_limits *lim,
			 struct oai_completion *out, struct oai_error *err);
int oai_parse_chat(const char *body, size_t len, const struct oai_limits *lim, struct oai_chat *out,
		   struct oai_error *err);
int oai_parse_tokenize(const char *body, size_t len, const struct oai_limits *lim,
		       struct oai_tokenize *out, struct oai_error *err);
int oai_parse_detokenize(const char *body, size_t len, const struct oai_limits *lim,
			 struct oai_detokenize *out, struct oai_error *err);

void oai_completion_free(struct oai_completion *c);
void oai_chat_free(struct oai_chat *c);
void oai_tokenize_free(struct oai_tokenize *t);
void oai_detokenize_free(struct oai_detokenize *d);

const char *oai_role_name(enum oai_role role); /* "system", "user", "assistant" */

/*
 * Output.  A growable buffer the serializers append to; data is always
 * NUL-terminated once anything was written.  Reuse one per stream
 * (oai_buf_reset keeps the memory) so steady-state chunks allocate nothing.
 * Every writer returns 0 or -ENOMEM; after -ENOMEM the buffer content is
 * unspecified (reset it).  Text from the model is written as JSON strings;
 * bytes that are not valid UTF-8 become U+FFFD (the detokenizer should never
 * produce them; this is the defensive last line).
 */
struct oai_buf {
	char *data;
	size_t len;
	size_t cap;
};

void oai_buf_reset(struct oai_buf *b);
void oai_buf_free(struct oai_buf *b);

enum oai_kind {
	OAI_KIND_COMPLETION, /* object "text_completion" */
	OAI_KIND_CHAT,	     /* "chat.completion" / "chat.completion.chunk" */
};

enum oai_finish {
	OAI_FINISH_STOP,   /* "stop": EOS or a stop string */
	OAI_FINISH_LENGTH, /* "length": max_tokens or the context ran out */
};

/* Identity of one response, the same on every chunk of a stream. */
struct oai_meta {
	enum oai_kind kind;
	const char *id;	    /* from oai_format_id() */
	const char *model;  /* as the client named it */
	int64_t created;    /* Unix seconds */
	bool include_usage; /* streaming: every chunk carries "usage": null, then oai_sse_usage */
};

/*
 * Where one choice's time went, as the server measured it (Duet's extension,
 * "timings" next to "usage").  A negative or non-finite time is written as
 * null; a NULL partition name is left out.
 */
struct oai_timing {
	double queue_ms, prefill_ms, transfer_ms, decode_ms, ttft_ms, tpot_ms;
	const char *partition;	       /* where it decoded */
	const char *prefill_partition; /* split requests: where it was prefilled */
};

struct oai_usage {
	uint32_t prompt_tokens;
	uint32_t completion_tokens;
	uint32_t cached_tokens; /* prompt tokens served from the prefix cache */
	/* n_timings > 0: "timings":[...] after "usage", one object per choice */
	const struct oai_timing *timings;
	size_t n_timings;
};

#define OAI_MAX_TOP_LOGPROBS 20

/* One generated token's log-probability and the most likely alternatives. */
struct oai_logprob {
	int32_t token;
	float logprob;
	uint32_t n_top; /* <= OAI_MAX_TOP_LOGPROBS */
	struct {
		int32_t token;
		float logprob;
	} top[OAI_MAX_TOP_LOGPROBS];
};

/* A token's text for logprobs: at most cap bytes into buf; returns the length. */
typedef size_t (*oai_piece_fn)(void *ctx, int32_t token, char *buf, size_t cap);

/* One choice of an answer (or the part of it in one stream chunk). */
struct oai_choice {
	unsigned index;
	const char *text; /* may be NULL when len is 0 */
	size_t len;
	enum oai_finish finish;	      /* whole answers and finish chunks */
	const struct oai_logprob *lp; /* NULL: "logprobs": null */
	size_t n_lp;
	size_t text_offset;   /* completions: offset of text in the choice's whole output */
	oai_piece_fn piece;   /* needed when lp is set */
	void *piece_ctx;
};

/* "cmpl-<16 hex>" or "chatcmpl-<16 hex>" from seq; cap >= 32.  Returns buf. */
char *oai_format_id(char *buf, size_t cap, enum oai_kind kind, uint64_t seq);

/* Whole non-streaming body: text_completion or chat.completion with usage. */
int oai_write_response(struct oai_buf *b, const struct oai_meta *m, const char *text, size_t len,
		       enum oai_finish finish, const struct oai_usage *u);

/*
 * SSE frames, each exactly "data: <one-line JSON>\n\n".  A stream is:
 * oai_sse_role (chat: delta {"role":"assistant","content":""}; writes nothing
 * for completions, so callers need not branch),
 * oai_sse_text per piece (delta {"content"} / choices[{text}]), oai_sse_finish
 * (empty delta / text with finish_reason), oai_sse_usage when
 * include_usage (choices [] and usage), oai_sse_done ("data: [DONE]\n\n").
 */
int oai_sse_role(struct oai_buf *b, const struct oai_meta *m);
/* Whole non-streaming body with n choices (each with its logprobs when lp is set). */
int oai_write_choices(struct oai_buf *b, const struct oai_meta *m, const struct oai_choice *c,
		      size_t n, const struct oai_usage *u);
/*
 * One stream chunk of choice c: its text (and its logprobs when lp is set),
 * or, with finish, an empty delta with c->finish.  oai_sse_text and
 * oai_sse_finish are this for choice 0 without logprobs.
 */
int oai_sse_choice(struct oai_buf *b, const struct oai_meta *m, const struct oai_choice *c,
		   bool finish);
/* oai_sse_role for choice index (n > 1 sends one per choice). */
int oai_sse_role_at(struct oai_buf *b, const struct oai_meta *m, unsigned index);
int oai_sse_text(struct oai_buf *b, const struct oai_meta *m, const char *text, size_t len);
int oai_sse_finish(struct oai_buf *b, const struct oai_meta *m, enum oai_finish finish);
int oai_sse_usage(struct oai_buf *b, const struct oai_meta *m, const struct oai_usage *u);
int oai_sse_done(struct oai_buf *b);

/* {"error":{"message","type","param" (null when empty),"code"}}. */
int oai_write_error(struct oai_buf *b, const struct oai_error *e);
/* The same object as an SSE frame, for a stream that fails after its headers went out. */
int oai_sse_error(struct oai_buf *b, const struct oai_error *e);

struct oai_model_info {
	const char *id;
	int64_t created;
	const char *owned_by; /* NULL: "duet" */
};

/* GET /v1/models: {"object":"list","data":[{"id","object":"model","created","owned_by"}]}. */
int oai_write_models(struct oai_buf *b, const struct oai_model_info *models, size_t n);
/* /v1/tokenize answer: {"tokens":[...],"count":n}. */
int oai_write_tokens(struct oai_buf *b, const int32_t *tokens, size_t n);
/* /v1/detokenize answer: {"prompt": text}. */
int oai_write_text(struct oai_buf *b, const char *text, size_t len);

#endif /* DUET_OAI_H */
