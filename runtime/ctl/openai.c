// SPDX-License-Identifier: MIT
/*
 * OpenAI-compatible request parsing and response writing (see openai.h for
 * the contract).  jansson does the JSON syntax; everything else -- types,
 * ranges, what Duet supports -- is checked here, field by field, so every
 * rejection names its field.  The parsed structs copy what they keep into
 * one arena and never point into the jansson tree, which is freed before
 * returning.
 */
#include "runtime/ctl/openai.h"

#include "runtime/core/mem.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OAI_MAX_MODEL 256

/* ---------------------------------------------------------------------------
 * Arena: a list of separately allocated blocks, freed together.
 * ------------------------------------------------------------------------- */
struct arena_block {
	struct arena_block *next;
	max_align_t data[];
};

static void *arena_alloc(struct oai_arena *a, size_t size)
{
	struct arena_block *blk;

	if (size > SIZE_MAX - sizeof(*blk))
		return NULL;
	blk = duet_malloc(sizeof(*blk) + size);
	if (!blk)
		return NULL;
	blk->next = a->head;
	a->head = blk;
	return blk->data;
}

static void arena_free(struct oai_arena *a)
{
	struct arena_block *blk = a->head;

	while (blk) {
		struct arena_block *next = blk->next;

		duet_free(blk);
		blk = next;
	}
	a->head = NULL;
}

/* ---------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------- */
__attribute__((format(printf, 5, 0))) static void error_vset(struct oai_error *e, int status,
							     const char *code, const char *param,
							     const char *fmt, va_list ap)
{
	e->http_status = status;
	e->type = status >= 500 ? "server_error" : "invalid_request_error";
	snprintf(e->code, sizeof(e->code), "%s", code);
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
}

void oai_error_set(struct oai_error *e, int status, const char *code, const char *param,
		   const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_vset(e, status, code, param, fmt, ap);
	va_end(ap);
}

/* Parsing state for one request. */
struct pctx {
	const struct oai_limits *lim;
	struct oai_error *err;
	struct oai_arena *arena;
};

/* 400 with message "<param>: <fmt>"; returns -EINVAL. */
__attribute__((format(printf, 4, 5))) static int fail(struct pctx *c, const char *code,
						      const char *param, const char *fmt, ...)
{
	char what[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	oai_error_set(c->err, 400, code, param, "%s: %s", param[0] ? param : "body", what);
	return -EINVAL;
}

static int nomem(struct pctx *c)
{
	oai_error_set(c->err, 500, "NOMEM", "", "server: out of memory");
	return -ENOMEM;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
		return "integer";
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	case JSON_NULL:
		return "null";
	}
	return "?";
}

/* A short description of a value for messages: the number itself, else its type. */
static const char *got(const json_t *v, char *buf, size_t cap)
{
	if (json_is_integer(v))
		snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_real(v))
		snprintf(buf, cap, "%g", json_real_value(v));
	else
		snprintf(buf, cap, "%s", type_name(v));
	return buf;
}

/* ---------------------------------------------------------------------------
 * Field readers.  An absent or null optional field leaves *out untouched
 * and returns 0 with *present (when asked) false.
 * ------------------------------------------------------------------------- */
static json_t *field(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_null(v) ? NULL : v;
}

/* A number in [lo, hi] (lo excluded when lo_open). */
static int get_number(struct pctx *c, const json_t *obj, const char *key, double lo, double hi,
		      bool lo_open, float *out)
{
	json_t *v = field(obj, key);
	char g[48];
	double x;

	if (!v)
		return 0;
	if (!json_is_number(v))
		return fail(c, "BADTYPE", key, "must be a number in %c%g, %g], got %s",
			    lo_open ? '(' : '[', lo, hi, got(v, g, sizeof(g)));
	x = json_number_value(v);
	if (x < lo || x > hi || (lo_open && x == lo))
		return fail(c, "BADPARAM", key, "must be a number in %c%g, %g], got %s",
			    lo_open ? '(' : '[', lo, hi, got(v, g, sizeof(g)));
	*out = (float)x;
	return 0;
}

static void describe_int_range(char *buf, size_t cap, int64_t lo, int64_t hi)
{
	if (hi == INT64_MAX && lo == INT64_MIN)
		snprintf(buf, cap, "an integer");
	else if (hi == INT64_MAX)
		snprintf(buf, cap, "an integer >= %" PRId64, lo);
	else
		snprintf(buf, cap, "an integer in [%" PRId64 ", %" PRId64 "]", lo, hi);
}

/* An integer value (an integral real such as 5.0 counts) in [lo, hi], for v itself. */
static int int_value(struct pctx *c, const json_t *v, const char *param, int64_t lo, int64_t hi,
		     int64_t *out)
{
	char range[64], g[48];
	int64_t x;

	describe_int_range(range, sizeof(range), lo, hi);
	if (json_is_integer(v)) {
		x = json_integer_value(v);
	} else if (json_is_real(v)) {
		double d = json_real_value(v);

		/* 2^63 as a double is exactly representable; reject it and beyond. */
		if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) ||
		    d != (double)(int64_t)d)
			return fail(c, "BADTYPE", param, "must be %s, got %s", range,
				    got(v, g, sizeof(g)));
		x = (int64_t)d;
	} else {
		return fail(c, "BADTYPE", param, "must be %s, got %s", range, got(v, g, sizeof(g)));
	}
	if (x < lo || x > hi)
		return fail(c, "BADPARAM", param, "must be %s, got %s", range,
			    got(v, g, sizeof(g)));
	*out = x;
	return 0;
}

static int get_int(struct pctx *c, const json_t *obj, const char *key, int64_t lo, int64_t hi,
		   int64_t *out, bool *present)
{
	json_t *v = field(obj, key);

	*present = false;
	if (!v)
		return 0;
	*present = true;
	return int_value(c, v, key, lo, hi, out);
}

static int get_bool(struct pctx *c, const json_t *obj, const char *key, bool *out)
{
	json_t *v = field(obj, key);

	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return fail(c, "BADTYPE", key, "must be a boolean, got %s", type_name(v));
	*out = json_is_true(v);
	return 0;
}

/* Copy string value v into the arena; no NUL inside, at most max bytes (0: no limit). */
static int str_value(struct pctx *c, const json_t *v, const char *param, size_t max,
		     struct oai_str *out)
{
	size_t len = json_string_length(v);
	const char *s = json_string_value(v);
	char *p;

	if (memchr(s, '\0', len))
		return fail(c, "BADPARAM", param, "must not contain NUL characters (\\u0000)");
	if (max && len > max)
		return fail(c, "BADPARAM", param, "must be at most %zu bytes, got %zu", max, len);
	p = arena_alloc(c->arena, len + 1);
	if (!p)
		return nomem(c);
	memcpy(p, s, len);
	p[len] = '\0';
	out->ptr = p;
	out->len = len;
	return 0;
}

static int get_string(struct pctx *c, const json_t *obj, const char *key, bool required, size_t max,
		      struct oai_str *out)
{
	json_t *v = field(obj, key);

	if (!v) {
		if (required)
			return fail(c, "MISSING", key, "is required");
		return 0;
	}
	if (!json_is_string(v))
		return fail(c, "BADTYPE", key, "must be a string, got %s", type_name(v));
	return str_value(c, v, key, max, out);
}

/* Token id array: integers in [0, INT32_MAX]; empty allowed when allow_empty. */
static int token_array(struct pctx *c, const json_t *arr, const char *param, bool allow_empty,
		       int32_t **out, size_t *n_out)
{
	size_t n = json_array_size(arr);
	char elem[64];
	int32_t *t;
	int64_t x;
	int rc;

	if (!n && !allow_empty)
		return fail(c, "BADPARAM", param, "must not be an empty array");
	if (n > SIZE_MAX / sizeof(*t))
		return nomem(c);
	t = arena_alloc(c->arena, n ? n * sizeof(*t) : 1);
	if (!t)
		return nomem(c);
	for (size_t i = 0; i < n; i++) {
		snprintf(elem, sizeof(elem), "%s[%zu]", param, i);
		rc = int_value(c, json_array_get(arr, i), elem, 0, INT32_MAX, &x);
		if (rc)
			return rc;
		t[i] = (int32_t)x;
	}
	*out = t;
	*n_out = n;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Body: size, nesting depth, syntax, top-level object.
 * ------------------------------------------------------------------------- */

/*
 * Deepest nesting of [ and { outside strings exceeds max?  One linear pass,
 * so a body of 10^6 '[' costs no recursion.  Malformed input is left for
 * jansson to reject.
 */
static bool too_deep(const char *s, size_t n, unsigned max)
{
	unsigned depth = 0;
	bool in_str = false;

	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (in_str) {
			if (ch == '\\')
				i++;
			else if (ch == '"')
				in_str = false;
			continue;
		}
		if (ch == '"') {
			in_str = true;
		} else if (ch == '[' || ch == '{') {
			if (++depth > max)
				return true;
		} else if ((ch == ']' || ch == '}') && depth) {
			depth--;
		}
	}
	return false;
}

static int load_body(struct pctx *c, const char *body, size_t len, json_t **root)
{
	json_error_t jerr;
	json_t *j;

	*root = NULL;
	if (c->lim->max_body && len > c->lim->max_body) {
		oai_error_set(c->err, 413, "TOOBIG", "",
			      "body: %zu bytes is over the limit of %zu bytes", len,
			      c->lim->max_body);
		return -EINVAL;
	}
	if (too_deep(body, len, OAI_MAX_DEPTH))
		return fail(c, "BADJSON", "", "JSON nested deeper than %d levels", OAI_MAX_DEPTH);
	/* ALLOW_NUL so that \u0000 reaches str_value() and gets a clear message. */
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!j)
		return fail(c, "BADJSON", "", "invalid JSON at line %d column %d (byte %d): %s",
			    jerr.line, jerr.column, jerr.position, jerr.text);
	if (!json_is_object(j)) {
		char g[48];

		fail(c, "BADTYPE", "", "must be a JSON object, got %s", got(j, g, sizeof(g)));
		json_decref(j);
		return -EINVAL;
	}
	*root = j;
	return 0;
}

/* ---------------------------------------------------------------------------
 * Fields shared by completions and chat.
 * ------------------------------------------------------------------------- */
static const char *const common_keys[] = {
	"model",
	"max_tokens",
	"temperature",
	"top_p",
	"top_k",
	"min_p",
	"presence_penalty",
	"frequency_penalty",
	"repetition_penalty",
	"seed",
	"stop",
	"stream",
	"stream_options",
	"logit_bias",
	"n",
	"user",
	"metadata",
	"store",
	"service_tier",
	NULL,
};

static bool in_list(const char *const *list, const char *key)
{
	for (; *list; list++)
		if (!strcmp(*list, key))
			return true;
	return false;
}

/* Record keys of obj in neither list into p->unknown (names only, for a debug log). */
static void note_unknown(struct oai_params *p, const json_t *obj, const char *const *extra)
{
	size_t used = 0;

	p->n_unknown = 0;
	p->unknown[0] = '\0';
	for (void *it = json_object_iter((json_t *)obj); it;
	     it = json_object_iter_next((json_t *)obj, it)) {
		const char *key = json_object_iter_key(it);
		size_t klen = strlen(key);
		size_t need = klen + (used ? 1 : 0);

		if (in_list(common_keys, key) || in_list(extra, key))
			continue;
		p->n_unknown++;
		if (used == SIZE_MAX)
			continue;
		if (used + need + 4 >= sizeof(p->unknown)) {
			if (used + 4 < sizeof(p->unknown))
				memcpy(p->unknown + used, "...", 4);
			used = SIZE_MAX; /* full */
			continue;
		}
		if (used)
			p->unknown[used++] = ',';
		memcpy(p->unknown + used, key, klen + 1);
		used += klen;
	}
}

static int cmp_bias(const void *a, const void *b)
{
	const struct oai_logit_bias *x = a, *y = b;

	return (x->token > y->token) - (x->token < y->token);
}

static int parse_logit_bias(struct pctx *c, const json_t *obj, struct oai_sampling *s)
{
	json_t *lb = field(obj, "logit_bias");
	struct oai_logit_bias *out;
	char g[48];
	size_t n, i = 0;

	if (!lb)
		return 0;
	if (!json_is_object(lb))
		return fail(c, "BADTYPE", "logit_bias",
			    "must be an object of \"token id\": bias, got %s", type_name(lb));
	n = json_object_size(lb);
	if (n > OAI_MAX_LOGIT_BIAS)
		return fail(c, "BADPARAM", "logit_bias", "at most %d entries, got %zu",
			    OAI_MAX_LOGIT_BIAS, n);
	if (!n)
		return 0;
	out = arena_alloc(c->arena, n * sizeof(*out));
	if (!out)
		return nomem(c);
	for (void *it = json_object_iter(lb); it; it = json_object_iter_next(lb, it)) {
		const char *key = json_object_iter_key(it);
		json_t *v = json_object_iter_value(it);
		size_t klen = strlen(key);
		unsigned long long id = 0;
		double bias;

		if (!klen || klen > 10 || strspn(key, "0123456789") != klen)
			return fail(c, "BADPARAM", "logit_bias",
				    "key \"%.32s\" is not a token id (decimal digits)", key);
		for (size_t k = 0; k < klen; k++)
			id = id * 10 + (unsigned)(key[k] - '0');
		if (id > INT32_MAX)
			return fail(c, "BADPARAM", "logit_bias", "token id %llu is out of range",
				    id);
		if (!json_is_number(v))
			return fail(c, "BADTYPE", "logit_bias",
				    "value for token %llu must be a number in [-100, 100], got %s",
				    id, got(v, g, sizeof(g)));
		bias = json_number_value(v);
		if (bias < -100 || bias > 100)
			return fail(c, "BADPARAM", "logit_bias",
				    "value for token %llu must be a number in [-100, 100], got %s",
				    id, got(v, g, sizeof(g)));
		out[i].token = (int32_t)id;
		out[i].bias = (float)bias;
		i++;
	}
	qsort(out, n, sizeof(*out), cmp_bias);
	for (i = 1; i < n; i++)
		if (out[i].token == out[i - 1].token)
			return fail(c, "BADPARAM", "logit_bias", "token %d appears twice",
				    (int)out[i].token);
	s->logit_bias = out;
	s->n_logit_bias = n;
	return 0;
}

static int parse_stop(struct pctx *c, const json_t *obj, struct oai_params *p)
{
	json_t *v = field(obj, "stop");
	char param[32];
	size_t n;
	int rc;

	if (!v)
		return 0;
	if (json_is_string(v)) {
		if (!json_string_length(v))
			return fail(c, "BADPARAM", "stop", "must not be an empty string");
		rc = str_value(c, v, "stop", OAI_MAX_STOP_LEN, &p->stop[0]);
		if (rc)
			return rc;
		p->n_stop = 1;
		return 0;
	}
	if (!json_is_array(v))
		return fail(c, "BADTYPE", "stop", "must be a string or an array of strings, got %s",
			    type_name(v));
	n = json_array_size(v);
	if (n > OAI_MAX_STOP)
		return fail(c, "BADPARAM", "stop", "at most %d strings, got %zu", OAI_MAX_STOP, n);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(v, i);

		snprintf(param, sizeof(param), "stop[%zu]", i);
		if (!json_is_string(e))
			return fail(c, "BADTYPE", param, "must be a string, got %s", type_name(e));
		if (!json_string_length(e))
			return fail(c, "BADPARAM", param, "must not be an empty string");
		rc = str_value(c, e, param, OAI_MAX_STOP_LEN, &p->stop[i]);
		if (rc)
			return rc;
	}
	p->n_stop = (unsigned)n;
	return 0;
}

/* Fields that Duet rejects unless they hold their default ("not supported"). */
static int parse_n(struct pctx *c, const json_t *obj, uint32_t *out)
{
	int64_t n;
	bool present;
	int rc;

	rc = get_int(c, obj, "n", 1, INT64_MAX, &n, &present);
	if (rc)
		return rc;
	if (present && n > (c->lim->max_n ? c->lim->max_n : 1))
		return fail(c, "BADPARAM", "n", "at most %u, got %" PRId64,
			    c->lim->max_n ? c->lim->max_n : 1, n);
	*out = present ? (uint32_t)n : 1;
	return 0;
}

static int parse_params(struct pctx *c, const json_t *obj, struct oai_params *p)
{
	struct oai_sampling *s = &p->sampling;
	int64_t x;
	bool present;
	json_t *so;
	uint32_t cap = c->lim->max_tokens_cap;
	int rc;

	s->temperature = 1.0f;
	s->top_p = 1.0f;
	s->repetition_penalty = 1.0f;
	p->max_tokens = c->lim->default_max_tokens ? c->lim->default_max_tokens : 1;

	rc = get_string(c, obj, "model", true, OAI_MAX_MODEL, &p->model);
	if (!rc && !p->model.len)
		rc = fail(c, "BADPARAM", "model", "must not be empty");
	if (!rc) {
		rc = get_int(c, obj, "max_tokens", 1, cap ? cap : INT32_MAX, &x, &present);
		if (!rc && present)
			p->max_tokens = (uint32_t)x;
	}
	rc = rc ?: get_number(c, obj, "temperature", 0, 2, false, &s->temperature);
	rc = rc ?: get_number(c, obj, "top_p", 0, 1, true, &s->top_p);
	if (!rc) {
		rc = get_int(c, obj, "top_k", 0, INT32_MAX, &x, &present);
		if (!rc && present)
			s->top_k = (int32_t)x;
	}
	rc = rc ?: get_number(c, obj, "min_p", 0, 1, false, &s->min_p);
	rc = rc ?: get_number(c, obj, "presence_penalty", -2, 2, false, &s->presence_penalty);
	rc = rc ?: get_number(c, obj, "frequency_penalty", -2, 2, false, &s->frequency_penalty);
	rc = rc ?: get_number(c, obj, "repetition_penalty", 0, 10, true, &s->repetition_penalty);
	if (!rc) {
		rc = get_int(c, obj, "seed", INT64_MIN, INT64_MAX, &x, &present);
		if (!rc && present) {
			s->has_seed = true;
			s->seed = x;
		}
	}
	rc = rc ?: parse_stop(c, obj, p);
	rc = rc ?: get_bool(c, obj, "stream", &p->stream);
	if (!rc && (so = field(obj, "stream_options"))) {
		if (!json_is_object(so))
			rc = fail(c, "BADTYPE", "stream_options", "must be an object, got %s",
				  type_name(so));
		else if (field(so, "include_usage") && !json_is_boolean(field(so, "include_usage")))
			rc = fail(c, "BADTYPE", "stream_options.include_usage",
				  "must be a boolean, got %s",
				  type_name(field(so, "include_usage")));
		else
			p->include_usage = json_is_true(field(so, "include_usage"));
	}
	rc = rc ?: parse_logit_bias(c, obj, s);
	rc = rc ?: parse_n(c, obj, &p->n);
	/* user: accepted for compatibility, length-checked, not kept. */
	if (!rc && field(obj, "user")) {
		json_t *u = field(obj, "user");

		if (!json_is_string(u))
			rc = fail(c, "BADTYPE", "user", "must be a string, got %s", type_name(u));
		else if (json_string_length(u) > OAI_MAX_USER)
			rc = fail(c, "BADPARAM", "user", "must be at most %d bytes, got %zu",
				  OAI_MAX_USER, json_string_length(u));
	}
	return rc;
}

/* ---------------------------------------------------------------------------
 * /v1/completions
 * ------------------------------------------------------------------------- */
static const char *const completion_keys[] = { "prompt",  "echo",   "logprobs",
					       "best_of", "suffix", NULL };

static int parse_prompt(struct pctx *c, const json_t *obj, struct oai_completion *out)
{
	json_t *v = field(obj, "prompt"), *e;
	size_t n;

	if (!v)
		return fail(c, "MISSING", "prompt", "is required");
	if (json_is_string(v))
		return str_value(c, v, "prompt", 0, &out->prompt);
	if (!json_is_array(v))
		return fail(c, "BADTYPE", "prompt",
			    "must be a string, an array of token ids or an array of one string, "
			    "got %s",
			    type_name(v));
	n = json_array_size(v);
	if (!n)
		return fail(c, "BADPARAM", "prompt", "must not be an empty array");
	e = json_array_get(v, 0);
	if (json_is_string(e) || json_is_array(e)) {
		/* A list of prompts (strings or token arrays): only one is supported. */
		if (n > 1)
			return fail(c, "UNSUPPORTED", "prompt",
				    "batched prompts not supported (got %zu); send one request "
				    "per prompt",
				    n);
		if (json_is_string(e))
			return str_value(c, e, "prompt[0]", 0, &out->prompt);
		out->has_prompt_tokens = true;
		return token_array(c, e, "prompt[0]", false, &out->prompt_tokens,
				   &out->n_prompt_tokens);
	}
	out->has_prompt_tokens = true;
	return token_array(c, v, "prompt", false, &out->prompt_tokens, &out->n_prompt_tokens);
}

static int parse_completion_only(struct pctx *c, const json_t *obj, struct oai_completion *out)
{
	json_t *v;
	char g[48];
	int64_t x;
	bool present;
	int rc;

	if ((v = field(obj, "echo"))) {
		if (!json_is_boolean(v))
			return fail(c, "BADTYPE", "echo", "must be a boolean, got %s",
				    type_name(v));
		if (json_is_true(v))
			return fail(c, "UNSUPPORTED", "echo", "echo is not supported");
	}
	if ((v = field(obj, "logprobs")) && !json_is_null(v)) {
		if (!json_is_integer(v))
			return fail(c, "BADTYPE", "logprobs", "must be an integer, got %s",
				    got(v, g, sizeof(g)));
		x = json_integer_value(v);
		if (x < 0 || x > (int64_t)c->lim->max_logprobs)
			return fail(c, "BADPARAM", "logprobs", "must be in [0, %u], got %" PRId64,
				    c->lim->max_logprobs, x);
		out->p.logprobs = true;
		out->p.top_logprobs = (uint32_t)x;
	}
	rc = get_int(c, obj, "best_of", 1, INT64_MAX, &x, &present);
	if (rc)
		return rc;
	if (present && x != 1)
		return fail(c, "UNSUPPORTED", "best_of",
			    "only best_of = 1 is supported, got %" PRId64, x);
	if ((v = field(obj, "suffix"))) {
		if (!json_is_string(v))
			return fail(c, "BADTYPE", "suffix", "must be a string, got %s",
				    type_name(v));
		if (json_string_length(v))
			return fail(c, "UNSUPPORTED", "suffix",
				    "suffix (insertion) is not supported");
	}
	return 0;
}

int oai_parse_completion(const char *body, size_t len, const struct oai_limits *lim,
			 struct oai_completion *out, struct oai_error *err)
{
	struct pctx c = { .lim = lim, .err = err, .arena = &out->arena };
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = load_body(&c, body, len, &root);
	if (rc)
		return rc;
	rc = parse_params(&c, root, &out->p);
	rc = rc ?: parse_prompt(&c, root, out);
	rc = rc ?: parse_completion_only(&c, root, out);
	if (!rc)
		note_unknown(&out->p, root, completion_keys);
	json_decref(root);
	if (rc)
		oai_completion_free(out);
	return rc;
}

void oai_completion_free(struct oai_completion *c)
{
	arena_free(&c->arena);
	memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------------------
 * /v1/chat/completions
 * ------------------------------------------------------------------------- */
static const char *const chat_keys[] = {
	"messages",
	"max_completion_tokens",
	"logprobs",
	"top_logprobs",
	"tools",
	"functions",
	"function_call",
	"tool_choice",
	"parallel_tool_calls",
	"response_format",
	NULL,
};

static const char *const role_names[] = {
	[OAI_ROLE_SYSTEM] = "system",
	[OAI_ROLE_USER] = "user",
	[OAI_ROLE_ASSISTANT] = "assistant",
};

const char *oai_role_name(enum oai_role role)
{
	if ((unsigned)role < sizeof(role_names) / sizeof(role_names[0]))
		return role_names[role];
	return "?";
}

static int parse_role(struct pctx *c, const json_t *msg, size_t i, enum oai_role *role)
{
	json_t *v = field(msg, "role");
	char param[64];
	const char *r;

	snprintf(param, sizeof(param), "messages[%zu].role", i);
	if (!v)
		return fail(c, "MISSING", param, "is required");
	if (!json_is_string(v))
		return fail(c, "BADTYPE", param, "must be a string, got %s", type_name(v));
	r = json_string_value(v);
	if (!strcmp(r, "system") || !strcmp(r, "developer"))
		*role = OAI_ROLE_SYSTEM;
	else if (!strcmp(r, "user"))
		*role = OAI_ROLE_USER;
	else if (!strcmp(r, "assistant"))
		*role = OAI_ROLE_ASSISTANT;
	else if (!strcmp(r, "tool") || !strcmp(r, "function"))
		return fail(c, "UNSUPPORTED", param,
			    "\"%s\" messages are not supported (no tool calls)", r);
	else
		return fail(c, "BADPARAM", param,
			    "must be one of system, developer, user, assistant, got \"%.32s\"", r);
	return 0;
}

/* content given as an array of parts: text parts concatenated, others rejected. */
static int parse_parts(struct pctx *c, const json_t *parts, size_t i, struct oai_str *out)
{
	size_t n = json_array_size(parts), total = 0, off = 0;
	char param[64];
	char *p;

	for (size_t j = 0; j < n; j++) {
		json_t *part = json_array_get(parts, j), *type, *text;
		const char *t;

		snprintf(param, sizeof(param), "messages[%zu].content[%zu]", i, j);
		if (!json_is_object(part))
			return fail(c, "BADTYPE", param, "must be an object, got %s",
				    type_name(part));
		type = field(part, "type");
		snprintf(param, sizeof(param), "messages[%zu].content[%zu].type", i, j);
		if (!type)
			return fail(c, "MISSING", param, "is required");
		if (!json_is_string(type))
			return fail(c, "BADTYPE", param, "must be a string, got %s",
				    type_name(type));
		t = json_string_value(type);
		if (!strcmp(t, "image_url") || !strcmp(t, "image") || !strcmp(t, "input_image"))
			return fail(c, "UNSUPPORTED", param,
				    "image parts are not supported (text-only model)");
		if (!strcmp(t, "input_audio") || !strcmp(t, "audio") || !strcmp(t, "file"))
			return fail(c, "UNSUPPORTED", param, "\"%s\" parts are not supported", t);
		if (strcmp(t, "text"))
			return fail(c, "BADPARAM", param, "must be \"text\", got \"%.32s\"", t);
		text = field(part, "text");
		snprintf(param, sizeof(param), "messages[%zu].content[%zu].text", i, j);
		if (!text)
			return fail(c, "MISSING", param, "is required");
		if (!json_is_string(text))
			return fail(c, "BADTYPE", param, "must be a string, got %s",
				    type_name(text));
		if (memchr(json_string_value(text), '\0', json_string_length(text)))
			return fail(c, "BADPARAM", param,
				    "must not contain NUL characters (\\u0000)");
		if (json_string_length(text) > SIZE_MAX - 1 - total)
			return nomem(c);
		total += json_string_length(text);
	}
	p = arena_alloc(c->arena, total + 1);
	if (!p)
		return nomem(c);
	for (size_t j = 0; j < n; j++) {
		json_t *text = json_object_get(json_array_get(parts, j), "text");
		size_t l = json_string_length(text);

		memcpy(p + off, json_string_value(text), l);
		off += l;
	}
	p[total] = '\0';
	out->ptr = p;
	out->len = total;
	return 0;
}

static int parse_message(struct pctx *c, const json_t *msg, size_t i, struct oai_message *m)
{
	char param[64];
	json_t *v;
	int rc;

	snprintf(param, sizeof(param), "messages[%zu]", i);
	if (!json_is_object(msg))
		return fail(c, "BADTYPE", param, "must be an object, got %s", type_name(msg));
	rc = parse_role(c, msg, i, &m->role);
	if (rc)
		return rc;
	v = field(msg, "tool_calls");
	if (v && (!json_is_array(v) || json_array_size(v))) {
		snprintf(param, sizeof(param), "messages[%zu].tool_calls", i);
		return fail(c, "UNSUPPORTED", param, "tool calls are not supported");
	}
	v = field(msg, "content");
	snprintf(param, sizeof(param), "messages[%zu].content", i);
	if (!v) {
		if (m->role != OAI_ROLE_ASSISTANT)
			return fail(c, "MISSING", param, "is required");
		m->content.ptr = arena_alloc(c->arena, 1);
		if (!m->content.ptr)
			return nomem(c);
		m->content.ptr[0] = '\0';
		m->content.len = 0;
		return 0;
	}
	if (json_is_string(v))
		return str_value(c, v, param, 0, &m->content);
	if (json_is_array(v))
		return parse_parts(c, v, i, &m->content);
	return fail(c, "BADTYPE", param, "must be a string or an array of content parts, got %s",
		    type_name(v));
}

static int parse_messages(struct pctx *c, const json_t *obj, struct oai_chat *out)
{
	json_t *v = field(obj, "messages");
	size_t n;
	int rc;

	if (!v)
		return fail(c, "MISSING", "messages", "is required");
	if (!json_is_array(v))
		return fail(c, "BADTYPE", "messages", "must be an array of messages, got %s",
			    type_name(v));
	n = json_array_size(v);
	if (!n)
		return fail(c, "BADPARAM", "messages", "must not be empty");
	if (n > OAI_MAX_MESSAGES)
		return fail(c, "BADPARAM", "messages", "at most %d messages, got %zu",
			    OAI_MAX_MESSAGES, n);
	out->messages = arena_alloc(c->arena, n * sizeof(*out->messages));
	if (!out->messages)
		return nomem(c);
	memset(out->messages, 0, n * sizeof(*out->messages));
	for (size_t i = 0; i < n; i++) {
		rc = parse_message(c, json_array_get(v, i), i, &out->messages[i]);
		if (rc)
			return rc;
	}
	out->n_messages = n;
	return 0;
}

static int parse_chat_only(struct pctx *c, const json_t *obj, struct oai_chat *out)
{
	json_t *v;
	int64_t x;
	bool present, lp = false;
	uint32_t cap = c->lim->max_tokens_cap;
	int rc;

	rc = get_int(c, obj, "max_completion_tokens", 1, cap ? cap : INT32_MAX, &x, &present);
	if (rc)
		return rc;
	if (present)
		out->p.max_tokens = (uint32_t)x;
	rc = get_bool(c, obj, "logprobs", &lp);
	if (rc)
		return rc;
	if (lp && !c->lim->max_logprobs)
		return fail(c, "UNSUPPORTED", "logprobs", "logprobs are turned off (api.max_logprobs)");
	out->p.logprobs = lp;
	rc = get_int(c, obj, "top_logprobs", 0, INT64_MAX, &x, &present);
	if (rc)
		return rc;
	if (present && x > (int64_t)c->lim->max_logprobs)
		return fail(c, "BADPARAM", "top_logprobs", "must be in [0, %u], got %" PRId64,
			    c->lim->max_logprobs, x);
	if (present && !lp)
		return fail(c, "BADPARAM", "top_logprobs", "needs \"logprobs\": true");
	out->p.top_logprobs = present ? (uint32_t)x : 0;
	v = field(obj, "tools");
	if (v && (!json_is_array(v) || json_array_size(v)))
		return fail(c, "UNSUPPORTED", "tools", "tool calling is not supported");
	v = field(obj, "functions");
	if (v && (!json_is_array(v) || json_array_size(v)))
		return fail(c, "UNSUPPORTED", "functions", "function calling is not supported");
	if ((v = field(obj, "response_format"))) {
		json_t *t = json_is_object(v) ? field(v, "type") : NULL;

		if (!json_is_object(v))
			return fail(c, "BADTYPE", "response_format", "must be an object, got %s",
				    type_name(v));
		if (!json_is_string(t) || strcmp(json_string_value(t), "text"))
			return fail(c, "UNSUPPORTED", "response_format",
				    "only {\"type\": \"text\"} is supported");
	}
	return 0;
}

int oai_parse_chat(const char *body, size_t len, const struct oai_limits *lim, struct oai_chat *out,
		   struct oai_error *err)
{
	struct pctx c = { .lim = lim, .err = err, .arena = &out->arena };
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = load_body(&c, body, len, &root);
	if (rc)
		return rc;
	rc = parse_params(&c, root, &out->p);
	rc = rc ?: parse_messages(&c, root, out);
	rc = rc ?: parse_chat_only(&c, root, out);
	if (!rc)
		note_unknown(&out->p, root, chat_keys);
	json_decref(root);
	if (rc)
		oai_chat_free(out);
	return rc;
}

void oai_chat_free(struct oai_chat *c)
{
	arena_free(&c->arena);
	memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------------------
 * /v1/tokenize and /v1/detokenize
 * ------------------------------------------------------------------------- */
static int get_model_optional(struct pctx *c, const json_t *obj, struct oai_str *model)
{
	int rc = get_string(c, obj, "model", false, OAI_MAX_MODEL, model);

	if (rc || model->ptr)
		return rc;
	model->ptr = arena_alloc(c->arena, 1);
	if (!model->ptr)
		return nomem(c);
	model->ptr[0] = '\0';
	model->len = 0;
	return 0;
}

int oai_parse_tokenize(const char *body, size_t len, const struct oai_limits *lim,
		       struct oai_tokenize *out, struct oai_error *err)
{
	struct pctx c = { .lim = lim, .err = err, .arena = &out->arena };
	json_t *root;
	bool has_prompt, has_content;
	int rc;

	memset(out, 0, sizeof(*out));
	out->add_special = true;
	rc = load_body(&c, body, len, &root);
	if (rc)
		return rc;
	rc = get_model_optional(&c, root, &out->model);
	has_prompt = field(root, "prompt") != NULL;
	has_content = field(root, "content") != NULL;
	if (!rc && has_prompt && has_content)
		rc = fail(&c, "BADPARAM", "content", "give either prompt or content, not both");
	else if (!rc && !has_prompt && !has_content)
		rc = fail(&c, "MISSING", "prompt", "is required (or content)");
	rc = rc ?: get_string(&c, root, has_prompt ? "prompt" : "content", true, 0, &out->text);
	if (!rc && field(root, "add_special") && field(root, "add_special_tokens"))
		rc = fail(&c, "BADPARAM", "add_special_tokens",
			  "give either add_special or add_special_tokens, not both");
	rc = rc ?: get_bool(&c, root, "add_special", &out->add_special);
	rc = rc ?: get_bool(&c, root, "add_special_tokens", &out->add_special);
	json_decref(root);
	if (rc)
		oai_tokenize_free(out);
	return rc;
}

void oai_tokenize_free(struct oai_tokenize *t)
{
	arena_free(&t->arena);
	memset(t, 0, sizeof(*t));
}

int oai_parse_detokenize(const char *body, size_t len, const struct oai_limits *lim,
			 struct oai_detokenize *out, struct oai_error *err)
{
	struct pctx c = { .lim = lim, .err = err, .arena = &out->arena };
	json_t *root, *v;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = load_body(&c, body, len, &root);
	if (rc)
		return rc;
	rc = get_model_optional(&c, root, &out->model);
	v = field(root, "tokens");
	if (!rc && !v)
		rc = fail(&c, "MISSING", "tokens", "is required");
	else if (!rc && !json_is_array(v))
		rc = fail(&c, "BADTYPE", "tokens", "must be an array of token ids, got %s",
			  type_name(v));
	rc = rc ?: token_array(&c, v, "tokens", true, &out->tokens, &out->n_tokens);
	json_decref(root);
	if (rc)
		oai_detokenize_free(out);
	return rc;
}

void oai_detokenize_free(struct oai_detokenize *d)
{
	arena_free(&d->arena);
	memset(d, 0, sizeof(*d));
}

/* ---------------------------------------------------------------------------
 * Output buffer and JSON writing.
 * ------------------------------------------------------------------------- */
void oai_buf_reset(struct oai_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void oai_buf_free(struct oai_buf *b)
{
	duet_free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* A writer: failures are sticky, checked once at the end. */
struct wr {
	struct oai_buf *b;
	bool oom;
};

/* Room for extra bytes plus the NUL. */
static bool wr_reserve(struct wr *w, size_t extra)
{
	struct oai_buf *b = w->b;
	size_t need, cap;
	char *p;

	if (w->oom)
		return false;
	if (extra > SIZE_MAX - 1 - b->len)
		goto oom;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = duet_realloc(b->data, cap);
	if (!p)
		goto oom;
	b->data = p;
	b->cap = cap;
	return true;
oom:
	w->oom = true;
	return false;
}

static void wr_put(struct wr *w, const char *s, size_t n)
{
	if (!wr_reserve(w, n))
		return;
	memcpy(w->b->data + w->b->len, s, n);
	w->b->len += n;
	w->b->data[w->b->len] = '\0';
}

static void wr_puts(struct wr *w, const char *s)
{
	wr_put(w, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void wr_printf(struct wr *w, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	/* Only short numeric fields go through here. */
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		w->oom = true;
		return;
	}
	wr_put(w, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	unsigned lo = 0x80, hi = 0xBF;
	size_t len;

	if (c < 0x80)
		return 1;
	if (c < 0xC2 || c > 0xF4)
		return 0;
	len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	if (n < len)
		return 0;
	if (c == 0xE0)
		lo = 0xA0; /* overlong */
	else if (c == 0xED)
		hi = 0x9F; /* surrogates */
	else if (c == 0xF0)
		lo = 0x90; /* overlong */
	else if (c == 0xF4)
		hi = 0x8F; /* > U+10FFFF */
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

/* s as a JSON string literal; invalid UTF-8 bytes become U+FFFD. */
static void wr_str(struct wr *w, const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, run = 0;

	wr_put(w, "\"", 1);
	while (i < n) {
		unsigned char ch = s[i];
		size_t l;
		char esc[8];

		if (ch >= 0x20 && ch != '"' && ch != '\\' && ch < 0x80) {
			run++;
			i++;
			continue;
		}
		if (ch >= 0x80 && (l = utf8_seq(s + i, n - i))) {
			run += l;
			i += l;
			continue;
		}
		wr_put(w, (const char *)s + i - run, run);
		run = 0;
		switch (ch) {
		case '"':
			wr_put(w, "\\\"", 2);
			break;
		case '\\':
			wr_put(w, "\\\\", 2);
			break;
		case '\n':
			wr_put(w, "\\n", 2);
			break;
		case '\r':
			wr_put(w, "\\r", 2);
			break;
		case '\t':
			wr_put(w, "\\t", 2);
			break;
		default:
			if (ch < 0x20) {
				snprintf(esc, sizeof(esc), "\\u%04x", ch);
				wr_put(w, esc, 6);
			} else {
				wr_put(w, "\xEF\xBF\xBD", 3); /* U+FFFD */
			}
		}
		i++;
	}
	wr_put(w, (const char *)s + i - run, run);
	wr_put(w, "\"", 1);
}

static void wr_cstr(struct wr *w, const char *s)
{
	wr_str(w, s ? s : "", s ? strlen(s) : 0);
}

static int wr_end(struct wr *w)
{
	return w->oom ? -ENOMEM : 0;
}

static const char *finish_name(enum oai_finish f)
{
	return f == OAI_FINISH_LENGTH ? "length" : "stop";
}

/* {"id":..,"object":..,"created":..,"model":.., -- the caller continues with "choices". */
static void wr_head(struct wr *w, const struct oai_meta *m, const char *object)
{
	wr_puts(w, "{\"id\":");
	wr_cstr(w, m->id);
	wr_puts(w, ",\"object\":\"");
	wr_puts(w, object);
	wr_printf(w, "\",\"created\":%" PRId64 ",\"model\":", m->created);
	wr_cstr(w, m->model);
	wr_puts(w, ",");
}

static void wr_ms(struct wr *w, const char *key, double ms)
{
	if (isfinite(ms) && ms >= 0)
		wr_printf(w, ",\"%s\":%.3f", key, ms);
	else
		wr_printf(w, ",\"%s\":null", key);
}

static void wr_timings(struct wr *w, const struct oai_timing *t, size_t n)
{
	wr_puts(w, ",\"timings\":[");
	for (size_t i = 0; i < n; i++) {
		wr_printf(w, "%s{\"index\":%zu", i ? "," : "", i);
		wr_ms(w, "queue_ms", t[i].queue_ms);
		wr_ms(w, "prefill_ms", t[i].prefill_ms);
		wr_ms(w, "transfer_ms", t[i].transfer_ms);
		wr_ms(w, "decode_ms", t[i].decode_ms);
		wr_ms(w, "ttft_ms", t[i].ttft_ms);
		wr_ms(w, "tpot_ms", t[i].tpot_ms);
		if (t[i].partition) {
			wr_puts(w, ",\"partition\":");
			wr_cstr(w, t[i].partition);
		}
		if (t[i].prefill_partition) {
			wr_puts(w, ",\"prefill_partition\":");
			wr_cstr(w, t[i].prefill_partition);
		}
		wr_puts(w, "}");
	}
	wr_puts(w, "]");
}

static void wr_usage(struct wr *w, const struct oai_usage *u)
{
	uint64_t total = (uint64_t)u->prompt_tokens + u->completion_tokens;

	wr_printf(w,
		  "\"usage\":{\"prompt_tokens\":%" PRIu32 ",\"completion_tokens\":%" PRIu32
		  ",\"total_tokens\":%" PRIu64 ",\"prompt_tokens_details\":{\"cached_tokens\":%" PRIu32
		  "}}",
		  u->prompt_tokens, u->completion_tokens, total, u->cached_tokens);
	if (u->n_timings)
		wr_timings(w, u->timings, u->n_timings);
}

char *oai_format_id(char *buf, size_t cap, enum oai_kind kind, uint64_t seq)
{
	snprintf(buf, cap, "%s-%016" PRIx64, kind == OAI_KIND_CHAT ? "chatcmpl" : "cmpl", seq);
	return buf;
}

/* A logprob as JSON: finite numbers as they are, -inf as the most negative float. */
static void wr_logprob(struct wr *w, float lp)
{
	wr_printf(w, "%.9g", isfinite(lp) ? (double)lp : -3.4028234663852886e38);
}

/* The token's text as a JSON string, then (chat) its bytes. */
static void wr_token(struct wr *w, const struct oai_choice *c, int32_t token, bool chat)
{
	char buf[1024] = "";
	size_t n = c->piece ? c->piece(c->piece_ctx, token, buf, sizeof(buf)) : 0;

	if (n > sizeof(buf))
		n = sizeof(buf);
	wr_str(w, buf, n);
	if (chat) {
		wr_puts(w, ",\"bytes\":[");
		for (size_t i = 0; i < n; i++)
			wr_printf(w, i ? ",%u" : "%u", (unsigned char)buf[i]);
		wr_puts(w, "]");
	}
}

/*
 * "logprobs": null, or chat's {"content":[{token, logprob, bytes,
 * top_logprobs:[...]}]}, or completions' {"tokens","token_logprobs",
 * "top_logprobs":[{text: lp}],"text_offset"}.
 */
static void wr_logprobs(struct wr *w, const struct oai_meta *m, const struct oai_choice *c)
{
	const struct oai_logprob *lp = c->lp;
	size_t off = c->text_offset;
	char buf[1024];

	wr_puts(w, "\"logprobs\":");
	if (!lp) {
		wr_puts(w, "null");
		return;
	}
	if (m->kind == OAI_KIND_CHAT) {
		wr_puts(w, "{\"content\":[");
		for (size_t i = 0; i < c->n_lp; i++) {
			wr_puts(w, i ? ",{\"token\":" : "{\"token\":");
			wr_token(w, c, lp[i].token, true);
			wr_puts(w, ",\"logprob\":");
			wr_logprob(w, lp[i].logprob);
			wr_puts(w, ",\"top_logprobs\":[");
			for (uint32_t k = 0; k < lp[i].n_top; k++) {
				wr_puts(w, k ? ",{\"token\":" : "{\"token\":");
				wr_token(w, c, lp[i].top[k].token, true);
				wr_puts(w, ",\"logprob\":");
				wr_logprob(w, lp[i].top[k].logprob);
				wr_puts(w, "}");
			}
			wr_puts(w, "]}");
		}
		wr_puts(w, "],\"refusal\":null}");
		return;
	}
	wr_puts(w, "{\"tokens\":[");
	for (size_t i = 0; i < c->n_lp; i++) {
		if (i)
			wr_puts(w, ",");
		wr_token(w, c, lp[i].token, false);
	}
	wr_puts(w, "],\"token_logprobs\":[");
	for (size_t i = 0; i < c->n_lp; i++) {
		if (i)
			wr_puts(w, ",");
		wr_logprob(w, lp[i].logprob);
	}
	wr_puts(w, "],\"top_logprobs\":[");
	for (size_t i = 0; i < c->n_lp; i++) {
		wr_puts(w, i ? ",{" : "{");
		for (uint32_t k = 0; k < lp[i].n_top; k++) {
			if (k)
				wr_puts(w, ",");
			wr_token(w, c, lp[i].top[k].token, false);
			wr_puts(w, ":");
			wr_logprob(w, lp[i].top[k].logprob);
		}
		wr_puts(w, "}");
	}
	wr_puts(w, "],\"text_offset\":[");
	for (size_t i = 0; i < c->n_lp; i++) {
		size_t n = c->piece ? c->piece(c->piece_ctx, lp[i].token, buf, sizeof(buf)) : 0;

		wr_printf(w, i ? ",%zu" : "%zu", off);
		off += n;
	}
	wr_puts(w, "]}");
}

int oai_write_choices(struct oai_buf *b, const struct oai_meta *m, const struct oai_choice *c,
		      size_t n, const struct oai_usage *u)
{
	struct wr w = { .b = b };
	bool chat = m->kind == OAI_KIND_CHAT;

	wr_head(&w, m, chat ? "chat.completion" : "text_completion");
	wr_puts(&w, "\"choices\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			wr_puts(&w, ",");
		if (chat) {
			wr_printf(&w, "{\"index\":%u,\"message\":{\"role\":\"assistant\",\"content\":",
				  c[i].index);
			wr_str(&w, c[i].text ? c[i].text : "", c[i].text ? c[i].len : 0);
			wr_puts(&w, "},");
		} else {
			wr_puts(&w, "{\"text\":");
			wr_str(&w, c[i].text ? c[i].text : "", c[i].text ? c[i].len : 0);
			wr_printf(&w, ",\"index\":%u,", c[i].index);
		}
		wr_logprobs(&w, m, &c[i]);
		wr_puts(&w, ",\"finish_reason\":\"");
		wr_puts(&w, finish_name(c[i].finish));
		wr_puts(&w, "\"}");
	}
	wr_puts(&w, "],");
	wr_usage(&w, u);
	wr_puts(&w, "}");
	return wr_end(&w);
}

int oai_write_response(struct oai_buf *b, const struct oai_meta *m, const char *text, size_t len,
		       enum oai_finish finish, const struct oai_usage *u)
{
	struct oai_choice c = { .text = text, .len = len, .finish = finish };

	return oai_write_choices(b, m, &c, 1, u);
}

/* One chunk: choice c with its delta or text (role: the role delta), finish_reason or null. */
static int sse_chunk(struct oai_buf *b, const struct oai_meta *m, bool role,
		     const struct oai_choice *c, const char *finish)
{
	struct wr w = { .b = b };
	const char *text = c->text ? c->text : "";
	size_t len = c->text ? c->len : 0;

	wr_puts(&w, "data: ");
	if (m->kind == OAI_KIND_CHAT) {
		wr_head(&w, m, "chat.completion.chunk");
		wr_printf(&w, "\"choices\":[{\"index\":%u,\"delta\":{", c->index);
		if (role)
			wr_puts(&w, "\"role\":\"assistant\",\"content\":\"\"");
		else if (!finish) {
			wr_puts(&w, "\"content\":");
			wr_str(&w, text, len);
		}
		wr_puts(&w, "},");
	} else {
		wr_head(&w, m, "text_completion");
		wr_puts(&w, "\"choices\":[{\"text\":");
		wr_str(&w, finish ? "" : text, finish ? 0 : len);
		wr_printf(&w, ",\"index\":%u,", c->index);
	}
	wr_logprobs(&w, m, c);
	wr_puts(&w, ",\"finish_reason\":");
	if (finish) {
		wr_puts(&w, "\"");
		wr_puts(&w, finish);
		wr_puts(&w, "\"");
	} else {
		wr_puts(&w, "null");
	}
	wr_puts(&w, "}]");
	if (m->include_usage)
		wr_puts(&w, ",\"usage\":null");
	wr_puts(&w, "}\n\n");
	return wr_end(&w);
}

int oai_sse_role_at(struct oai_buf *b, const struct oai_meta *m, unsigned index)
{
	struct oai_choice c = { .index = index };

	if (m->kind != OAI_KIND_CHAT)
		return 0;
	return sse_chunk(b, m, true, &c, NULL);
}

int oai_sse_role(struct oai_buf *b, const struct oai_meta *m)
{
	return oai_sse_role_at(b, m, 0);
}

int oai_sse_choice(struct oai_buf *b, const struct oai_meta *m, const struct oai_choice *c,
		   bool finish)
{
	return sse_chunk(b, m, false, c, finish ? finish_name(c->finish) : NULL);
}

int oai_sse_text(struct oai_buf *b, const struct oai_meta *m, const char *text, size_t len)
{
	struct oai_choice c = { .text = text, .len = len };

	return sse_chunk(b, m, false, &c, NULL);
}

int oai_sse_finish(struct oai_buf *b, const struct oai_meta *m, enum oai_finish finish)
{
	struct oai_choice c = { .finish = finish };

	return sse_chunk(b, m, false, &c, finish_name(finish));
}

int oai_sse_usage(struct oai_buf *b, const struct oai_meta *m, const struct oai_usage *u)
{
	struct wr w = { .b = b };

	wr_puts(&w, "data: ");
	wr_head(&w, m, m->kind == OAI_KIND_CHAT ? "chat.completion.chunk" : "text_completion");
	wr_puts(&w, "\"choices\":[],");
	wr_usage(&w, u);
	wr_puts(&w, "}\n\n");
	return wr_end(&w);
}

int oai_sse_done(struct oai_buf *b)
{
	struct wr w = { .b = b };

	wr_puts(&w, "data: [DONE]\n\n");
	return wr_end(&w);
}

static void wr_error(struct wr *w, const struct oai_error *e)
{
	wr_puts(w, "{\"error\":{\"message\":");
	wr_cstr(w, e->message);
	wr_puts(w, ",\"type\":");
	wr_cstr(w, e->type ? e->type
			   : (e->http_status >= 500 ? "server_error" : "invalid_request_error"));
	wr_puts(w, ",\"param\":");
	if (e->param[0])
		wr_cstr(w, e->param);
	else
		wr_puts(w, "null");
	wr_puts(w, ",\"code\":");
	wr_cstr(w, e->code);
	wr_puts(w, "}}");
}

int oai_write_error(struct oai_buf *b, const struct oai_error *e)
{
	struct wr w = { .b = b };

	wr_error(&w, e);
	return wr_end(&w);
}

int oai_sse_error(struct oai_buf *b, const struct oai_error *e)
{
	struct wr w = { .b = b };

	wr_puts(&w, "data: ");
	wr_error(&w, e);
	wr_puts(&w, "\n\n");
	return wr_end(&w);
}

int oai_write_models(struct oai_buf *b, const struct oai_model_info *models, size_t n)
{
	struct wr w = { .b = b };

	wr_puts(&w, "{\"object\":\"list\",\"data\":[");
	for (size_t i = 0; i < n; i++) {
		wr_puts(&w, i ? ",{\"id\":" : "{\"id\":");
		wr_cstr(&w, models[i].id);
		wr_printf(&w, ",\"object\":\"model\",\"created\":%" PRId64 ",\"owned_by\":",
			  models[i].created);
		wr_cstr(&w, models[i].owned_by ? models[i].owned_by : "duet");
		wr_puts(&w, "}");
	}
	wr_puts(&w, "]}");
	return wr_end(&w);
}

int oai_write_tokens(struct oai_buf *b, const int32_t *tokens, size_t n)
{
	struct wr w = { .b = b };

	wr_puts(&w, "{\"tokens\":[");
	for (size_t i = 0; i < n; i++)
		wr_printf(&w, i ? ",%" PRId32 : "%" PRId32, tokens[i]);
	wr_printf(&w, "],\"count\":%zu}", n);
	return wr_end(&w);
}

int oai_write_text(struct oai_buf *b, const char *text, size_t len)
{
	struct wr w = { .b = b };

	wr_puts(&w, "{\"prompt\":");
	wr_str(&w, text, len);
	wr_puts(&w, "}");
	return wr_end(&w);
}
