// SPDX-License-Identifier: MIT
/*
 * Batch mode of duet-generate (see batch.h): parse and validate a JSONL
 * trace, replay its arrivals in real time through the scheduler, detokenize
 * and apply stop strings per request, and report latencies.
 *
 * Times: one CLOCK_MONOTONIC nanosecond clock for the driver and the
 * scheduler.  A request is submitted with its intended arrival time (start +
 * arrival_ms), not the moment the driver got round to it, so that a long step
 * shows up in its TTFT as it would for a real client.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/kv/kv.h"
#include "runtime/sched/sched.h"
#include "runtime/tools/batch.h"

#define SUB "batch"
#define MAX_LINE_TOKENS (1 << 24)
#define STALL_STEPS 100000 /* consecutive empty steps while busy: the scheduler is stuck */

struct text {
	char *buf;
	size_t len, cap;
};

/* One line of the trace: what it asks for, then what became of it. */
struct breq {
	int line;
	char *id_json; /* the "id" value as JSON text; NULL = use the line number */
	int32_t *prompt;
	int n_prompt;
	int max_tokens;
	struct smp_params sp;
	char *stops[SMP_STOP_MAX];
	int n_stops;
	double arrival_ms;
	uint64_t salt;
	int priority;

	/* Run state. */
	uint64_t sid;
	uint64_t t_arrival;
	struct smp_stop *stop; /* NULL without stop strings */
	struct tok_stream ts;
	struct text text;
	size_t emitted; /* bytes of text cleared by the stop matcher */
	int n_seen;	/* tokens detokenized */
	bool stopped, eog, done;

	/* Results. */
	int32_t *gen;
	int n_gen;
	const char *finish;
	double ttft_ms, tpot_ms, itl_p50_ms, itl_p99_ms, e2e_ms; /* NAN when not defined */
	int n_cached, n_preempted;
};

struct batch {
	const struct batch_options *o;
	const struct tokenizer *tok;
	struct llm *llm;
	struct sched *s;
	struct breq *reqs; /* [n] in file order */
	int n;
	char *piece; /* one tok_stream_push() worth */
	size_t piece_cap;
	double *scratch; /* [max(n, longest generation)] for percentiles */
	size_t scratch_cap;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool eog_tok(void *ctx, int32_t t)
{
	return tok_is_eog(((struct batch *)ctx)->tok, t);
}

static bool eog_never(void *ctx, int32_t t)
{
	return false;
}

static int text_add(struct text *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t cap = (t->cap ? t->cap * 2 : 256) + n;
		char *p = realloc(t->buf, cap);

		if (!p)
			return -ENOMEM;
		t->buf = p;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, s, n);
	t->len += n;
	t->buf[t->len] = '\0';
	return 0;
}

/* --- parsing and validation --------------------------------------------------- */

static const char *const known_keys[] = {
	"prompt",
	"prompt_ids",
	"max_tokens",
	"temperature",
	"top_k",
	"top_p",
	"min_p",
	"repeat_penalty",
	"repeat_last_n",
	"presence_penalty",
	"frequency_penalty",
	"seed",
	"stop",
	"arrival_ms",
	"tenant",
	"priority",
	"id",
};

__attribute__((format(printf, 4, 5))) static int bad(const char *path, int line, const char *key,
						     const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (key)
		log_error(SUB, "%s line %d: \"%s\": %s", path, line, key, msg);
	else
		log_error(SUB, "%s line %d: %s", path, line, msg);
	return -EINVAL;
}

static int get_int(const char *path, int line, json_t *obj, const char *key, long long min,
		   long long max, long long *out)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return 1;
	if (!json_is_integer(v))
		return bad(path, line, key, "must be an integer");
	if (json_integer_value(v) < min || json_integer_value(v) > max)
		return bad(path, line, key, "%lld is out of range [%lld, %lld]",
			   (long long)json_integer_value(v), min, max);
	*out = json_integer_value(v);
	return 0;
}

/* Sets *out when the key is present; range checks are smp_params_validate()'s. */
static int get_float(const char *path, int line, json_t *obj, const char *key, float *out)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return 0;
	if (!json_is_number(v))
		return bad(path, line, key, "must be a number");
	if (!isfinite(json_number_value(v)) || fabs(json_number_value(v)) > 1e30)
		return bad(path, line, key, "must be a finite number");
	*out = (float)json_number_value(v);
	return 0;
}

static int parse_prompt(struct batch *b, const char *path, struct breq *r, json_t *obj)
{
	json_t *text = json_object_get(obj, "prompt");
	json_t *ids = json_object_get(obj, "prompt_ids");
	int n_vocab = (int)tok_n_vocab(b->tok);
	int n_ctx = llm_n_ctx(b->llm);

	if (!text == !ids)
		return bad(path, r->line, NULL,
			   "needs exactly one of \"prompt\" and \"prompt_ids\"");
	if (ids) {
		size_t n = json_array_size(ids), i;
		json_t *v;

		if (!json_is_array(ids))
			return bad(path, r->line, "prompt_ids", "must be an array of token ids");
		if (n == 0 || n > (size_t)n_ctx)
			return bad(path, r->line, "prompt_ids", "needs 1 to %d ids (got %zu)",
				   n_ctx, n);
		r->prompt = malloc(n * sizeof(int32_t));
		if (!r->prompt)
			return -ENOMEM;
		json_array_foreach(ids, i, v)
		{
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) >= n_vocab)
				return bad(path, r->line, "prompt_ids",
					   "element %zu is not a token id in [0, %d)", i, n_vocab);
			r->prompt[i] = (int32_t)json_integer_value(v);
		}
		r->n_prompt = (int)n;
		return 0;
	}
	if (!json_is_string(text))
		return bad(path, r->line, "prompt", "must be a string");

	size_t len = json_string_length(text), cap = len + 8, n_ids = 0;
	int ret;

	if (len > MAX_LINE_TOKENS)
		return bad(path, r->line, "prompt", "longer than %d bytes", MAX_LINE_TOKENS);
	r->prompt = malloc(cap * sizeof(int32_t));
	if (!r->prompt)
		return -ENOMEM;
	ret = tok_encode(b->tok, json_string_value(text), len, b->o->add_bos, b->o->parse_special,
			 r->prompt, cap, &n_ids);
	if (ret)
		return bad(path, r->line, "prompt", "cannot tokenize: %s", duet_strerror(ret));
	if (n_ids == 0)
		return bad(path, r->line, "prompt",
			   "empty, and the model adds no BOS: nothing to condition on");
	if (n_ids > (size_t)n_ctx)
		return bad(path, r->line, "prompt", "%zu tokens exceed the context of %d", n_ids,
			   n_ctx);
	r->n_prompt = (int)n_ids;
	return 0;
}

static int parse_stops(const char *path, struct breq *r, json_t *obj, struct smp_stop *scratch)
{
	json_t *a = json_object_get(obj, "stop"), *v;
	char err[256];
	size_t i;

	if (!a)
		return 0;
	if (!json_is_array(a))
		return bad(path, r->line, "stop", "must be an array of strings");
	if (json_array_size(a) > SMP_STOP_MAX)
		return bad(path, r->line, "stop", "at most %d stop strings (got %zu)", SMP_STOP_MAX,
			   json_array_size(a));
	json_array_foreach(a, i, v)
	{
		if (!json_is_string(v))
			return bad(path, r->line, "stop", "element %zu is not a string", i);
		if (memchr(json_string_value(v), 0, json_string_length(v)))
			return bad(path, r->line, "stop", "element %zu contains a NUL", i);
		r->stops[i] = strdup(json_string_value(v));
		if (!r->stops[i])
			return -ENOMEM;
		r->n_stops = (int)i + 1;
	}
	if (smp_stop_init(scratch, (const char *const *)r->stops, r->n_stops, err, sizeof(err)))
		return bad(path, r->line, "stop", "%s", err);
	return 0;
}

/* Fill r from obj; every error names the line and the key. */
static int parse_request(struct batch *b, const char *path, struct breq *r, json_t *obj,
			 struct smp_stop *scratch)
{
	const struct batch_options *o = b->o;
	long long v = 0;
	const char *key;
	json_t *val;
	char err[256];
	int ret;

	json_object_foreach(obj, key, val)
	{
		size_t k;

		for (k = 0; k < sizeof(known_keys) / sizeof(known_keys[0]); k++) {
			if (strcmp(key, known_keys[k]) == 0)
				break;
		}
		if (k == sizeof(known_keys) / sizeof(known_keys[0]))
			return bad(path, r->line, key, "unknown key");
	}
	ret = parse_prompt(b, path, r, obj);
	if (ret)
		return ret;

	r->max_tokens = o->max_tokens;
	if ((ret = get_int(path, r->line, obj, "max_tokens", 1, MAX_LINE_TOKENS, &v)) < 0)
		return ret;
	if (ret == 0)
		r->max_tokens = (int)v;
	if (r->n_prompt + r->max_tokens > llm_n_ctx(b->llm))
		return bad(path, r->line, "max_tokens",
			   "prompt (%d tokens) + %d to generate exceeds the context of %d tokens",
			   r->n_prompt, r->max_tokens, llm_n_ctx(b->llm));

	r->sp = o->sp;
	if ((ret = get_float(path, r->line, obj, "temperature", &r->sp.temperature)) ||
	    (ret = get_float(path, r->line, obj, "top_p", &r->sp.top_p)) ||
	    (ret = get_float(path, r->line, obj, "min_p", &r->sp.min_p)) ||
	    (ret = get_float(path, r->line, obj, "repeat_penalty", &r->sp.repeat_penalty)) ||
	    (ret = get_float(path, r->line, obj, "presence_penalty", &r->sp.presence_penalty)) ||
	    (ret = get_float(path, r->line, obj, "frequency_penalty", &r->sp.frequency_penalty)))
		return ret;
	if ((ret = get_int(path, r->line, obj, "top_k", 0, MAX_LINE_TOKENS, &v)) < 0)
		return ret;
	if (ret == 0)
		r->sp.top_k = (int)v;
	if ((ret = get_int(path, r->line, obj, "repeat_last_n", 0, SMP_MAX_LAST_N, &v)) < 0)
		return ret;
	if (ret == 0)
		r->sp.repeat_last_n = (int)v;
	if ((ret = get_int(path, r->line, obj, "seed", 0, INT64_MAX, &v)) < 0)
		return ret;
	if (ret == 0)
		r->sp.seed = (uint64_t)v;
	if (smp_params_validate(&r->sp, (int)tok_n_vocab(b->tok), err, sizeof(err)))
		return bad(path, r->line, NULL, "sampling: %s", err);

	if ((ret = get_int(path, r->line, obj, "priority", -1000000, 1000000, &v)) < 0)
		return ret;
	if (ret == 0)
		r->priority = (int)v;

	val = json_object_get(obj, "arrival_ms");
	if (val) {
		if (!json_is_number(val))
			return bad(path, r->line, "arrival_ms", "must be a number");
		r->arrival_ms = json_number_value(val);
		if (!(r->arrival_ms >= 0 && r->arrival_ms <= 1e9))
			return bad(path, r->line, "arrival_ms", "%g is out of range [0, 1e9]",
				   r->arrival_ms);
	}

	val = json_object_get(obj, "tenant");
	if (val) {
		if (!json_is_string(val) || json_string_length(val) == 0)
			return bad(path, r->line, "tenant", "must be a non-empty string");
		r->salt = kv_salt_from_bytes(json_string_value(val), json_string_length(val));
	}

	val = json_object_get(obj, "id");
	if (val) {
		r->id_json = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT);
		if (!r->id_json)
			return -ENOMEM;
	}
	return parse_stops(path, r, obj, scratch);
}

static bool blank(const char *s)
{
	for (; *s; s++) {
		if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
			return false;
	}
	return true;
}

static int load_trace(struct batch *b, const char *path)
{
	FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	struct smp_stop *scratch = malloc(sizeof(*scratch));
	char *line = NULL;
	size_t cap = 0, n_alloc = 0;
	ssize_t len;
	int lineno = 0, ret = 0;

	if (!fp) {
		ret = -errno;
		log_error(SUB, "%s: %s", path, strerror(errno));
		free(scratch);
		return ret;
	}
	if (!scratch) {
		ret = -ENOMEM;
		goto out;
	}
	while ((len = getline(&line, &cap, fp)) >= 0) {
		json_error_t jerr;
		json_t *obj;

		lineno++;
		if (blank(line))
			continue;
		if (b->n == (int)n_alloc) {
			size_t na = n_alloc ? n_alloc * 2 : 64;
			struct breq *p = realloc(b->reqs, na * sizeof(*p));

			if (!p) {
				ret = -ENOMEM;
				goto out;
			}
			b->reqs = p;
			n_alloc = na;
		}
		struct breq *r = &b->reqs[b->n++];

		memset(r, 0, sizeof(*r));
		r->line = lineno;
		obj = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
		if (!obj) {
			ret = bad(path, lineno, NULL, "invalid JSON at column %d: %s", jerr.column,
				  jerr.text);
			goto out;
		}
		if (!json_is_object(obj)) {
			json_decref(obj);
			ret = bad(path, lineno, NULL, "not a JSON object");
			goto out;
		}
		ret = parse_request(b, path, r, obj, scratch);
		json_decref(obj);
		if (ret)
			goto out;
	}
	if (ferror(fp)) {
		ret = -EIO;
		log_error(SUB, "%s: read error", path);
	} else if (b->n == 0) {
		ret = -EINVAL;
		log_error(SUB, "%s: no requests", path);
	}
out:
	free(line);
	free(scratch);
	if (fp != stdin)
		fclose(fp);
	return ret;
}

/* --- the replay ---------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of v[0..n), sorted in place; NAN when n == 0. */
static double pct(double *v, size_t n, double p, bool sorted)
{
	size_t k;

	if (n == 0)
		return NAN;
	if (!sorted)
		qsort(v, n, sizeof(*v), cmp_double);
	k = (size_t)ceil(p / 100.0 * (double)n);
	return v[k ? k - 1 : 0];
}

static int scratch_reserve(struct batch *b, size_t n)
{
	if (n <= b->scratch_cap)
		return 0;
	double *p = realloc(b->scratch, n * sizeof(*p));

	if (!p)
		return -ENOMEM;
	b->scratch = p;
	b->scratch_cap = n;
	return 0;
}

/* Detokenize the tokens produced since the last call; apply the stop strings. */
static int absorb(struct batch *b, struct breq *r, const struct sched_info *in)
{
	for (; r->n_seen < in->n_gen && !r->stopped && !r->eog; r->n_seen++) {
		int32_t id = in->tokens[r->n_seen];
		size_t emit;
		int n, ret;

		if (!b->o->ignore_eos && tok_is_eog(b->tok, id)) {
			r->eog = true; /* the scheduler finishes it; nothing to show */
			continue;
		}
		n = tok_stream_push(b->tok, &r->ts, id, b->piece, b->piece_cap);
		if (n < 0)
			return n;
		ret = text_add(&r->text, b->piece, (size_t)n);
		if (ret)
			return ret;
		if (!r->stop)
			continue;
		smp_stop_feed(r->stop, b->piece, (size_t)n, &emit, &r->stopped);
		r->emitted += emit;
		if (r->stopped) {
			r->n_gen = r->n_seen + 1;
			/* Frees its blocks now; it shows up as finished below. */
			sched_cancel(b->s, r->sid, mono_ns());
		}
	}
	return 0;
}

static const char *finish_name(enum sched_finish f)
{
	switch (f) {
	case SCHED_FINISH_LENGTH:
		return "length";
	case SCHED_FINISH_EOG:
		return "eos";
	case SCHED_FINISH_CONTEXT:
		return "context";
	case SCHED_FINISH_CANCELLED:
		return "cancelled";
	case SCHED_FINISH_NONE:
	case SCHED_FINISH_ERROR:
		break;
	}
	return "error";
}

/* Copy the outcome of a finished request out of the scheduler. */
static int settle(struct batch *b, struct breq *r, const struct sched_info *in)
{
	int n, ret;

	if (!r->stopped) {
		r->n_gen = in->n_gen;
		n = tok_stream_flush(b->tok, &r->ts, b->piece, b->piece_cap);
		if (n > 0 && (ret = text_add(&r->text, b->piece, (size_t)n)))
			return ret;
		r->emitted = r->text.len;
	}
	r->finish = r->stopped ? "stop" : finish_name(in->finish);
	r->gen = malloc(sizeof(int32_t) * (size_t)(r->n_gen ? r->n_gen : 1));
	if (!r->gen)
		return -ENOMEM;
	memcpy(r->gen, in->tokens, sizeof(int32_t) * (size_t)r->n_gen);
	r->n_cached = in->n_cached;
	r->n_preempted = in->n_preempted;
	r->ttft_ms = r->tpot_ms = r->itl_p50_ms = r->itl_p99_ms = NAN;
	if (r->n_gen > 0) {
		const uint64_t *t = in->t_tokens;
		uint64_t end = t[r->n_gen - 1];

		r->ttft_ms = (double)(t[0] - r->t_arrival) / 1e6;
		r->e2e_ms = (double)(end - r->t_arrival) / 1e6;
		if (r->n_gen > 1) {
			r->tpot_ms = (double)(end - t[0]) / 1e6 / (r->n_gen - 1);
			if ((ret = scratch_reserve(b, (size_t)r->n_gen)))
				return ret;
			for (int i = 1; i < r->n_gen; i++)
				b->scratch[i - 1] = (double)(t[i] - t[i - 1]) / 1e6;
			r->itl_p50_ms = pct(b->scratch, (size_t)r->n_gen - 1, 50, false);
			r->itl_p99_ms = pct(b->scratch, (size_t)r->n_gen - 1, 99, true);
		}
	} else {
		r->e2e_ms = in->t_finish ? (double)(in->t_finish - r->t_arrival) / 1e6 : NAN;
	}
	r->done = true;
	return 0;
}

static int submit(struct batch *b, struct breq *r, uint64_t at)
{
	struct sched_request q = {
		.prompt = r->prompt,
		.n_prompt = r->n_prompt,
		.max_tokens = r->max_tokens,
		.sampling = r->sp,
		.salt = r->salt,
		.priority = r->priority,
	};
	int ret;

	if (r->n_stops) {
		r->stop = malloc(sizeof(*r->stop));
		if (!r->stop)
			return -ENOMEM;
		smp_stop_init(r->stop, (const char *const *)r->stops, r->n_stops, NULL, 0);
	}
	tok_stream_init(&r->ts);
	r->t_arrival = at;
	ret = sched_submit(b->s, &q, at, &r->sid);
	if (ret) {
		free(r->stop);
		r->stop = NULL;
	}
	return ret;
}

static int cmp_arrival(const void *a, const void *b)
{
	const struct breq *x = *(struct breq *const *)a, *y = *(struct breq *const *)b;

	if (x->arrival_ms != y->arrival_ms)
		return x->arrival_ms < y->arrival_ms ? -1 : 1;
	return x->line - y->line;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = { .tv_sec = (time_t)(t / 1000000000u),
			       .tv_nsec = (long)(t % 1000000000u) };

	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/*
 * The driver: submit what has arrived, step while busy, collect finished
 * requests, sleep until the next arrival when idle.  *t_end receives the
 * time the last request finished.
 */
static int replay(struct batch *b, uint64_t t0, uint64_t *t_end)
{
	struct breq **order = malloc(sizeof(*order) * (size_t)b->n);
	struct breq **active = malloc(sizeof(*active) * (size_t)b->n);
	int next = 0, n_active = 0, empty = 0, ret = 0;
	bool warned = false;

	if (!order || !active) {
		ret = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < b->n; i++)
		order[i] = &b->reqs[i];
	qsort(order, (size_t)b->n, sizeof(*order), cmp_arrival);

	while (next < b->n || n_active > 0) {
		uint64_t now = mono_ns();

		while (next < b->n) {
			struct breq *r = order[next];
			uint64_t at = t0 + (uint64_t)llround(r->arrival_ms * 1e6);

			if (at > now)
				break;
			ret = submit(b, r, at);
			if (ret == -EBUSY && n_active > 0)
				break; /* full: retry once something finished */
			if (ret) {
				log_error(SUB, "line %d: sched_submit: %s", r->line,
					  duet_strerror(ret));
				goto out;
			}
			active[n_active++] = r;
			next++;
		}
		if (sched_busy(b->s)) {
			int k = sched_step(b->s, mono_ns);

			if (k < 0 && !warned) {
				log_warn(SUB, "sched_step: %s (the affected requests fail)",
					 duet_strerror(k));
				warned = true;
			}
			empty = k == 0 ? empty + 1 : 0;
			if (empty > STALL_STEPS) {
				log_error(SUB,
					  "the scheduler makes no progress (%d requests "
					  "active); is the KV pool too small?",
					  n_active);
				ret = -EDEADLK;
				goto out;
			}
		} else if (n_active == 0 && next < b->n) {
			sleep_until(t0 + (uint64_t)llround(order[next]->arrival_ms * 1e6));
			continue;
		}
		for (int i = 0; i < n_active;) {
			struct breq *r = active[i];
			const struct sched_info *in = sched_get(b->s, r->sid);

			if (!in) {
				log_alert(SUB, "line %d: the scheduler lost request %llu", r->line,
					  (unsigned long long)r->sid);
				ret = -EFAULT;
				goto out;
			}
			if ((ret = absorb(b, r, in)))
				goto out;
			if (in->state != SCHED_FINISHED) {
				i++;
				continue;
			}
			if ((ret = settle(b, r, in)))
				goto out;
			if (in->t_finish > *t_end)
				*t_end = in->t_finish;
			sched_release(b->s, r->sid);
			active[i] = active[--n_active];
		}
		if (n_active > 0 && !sched_busy(b->s)) {
			log_alert(SUB, "%d requests neither finished nor waiting", n_active);
			ret = -EFAULT;
			goto out;
		}
	}
out:
	free(order);
	free(active);
	return ret;
}

/* --- output -------------------------------------------------------------------- */

void batch_json_str(FILE *fp, const char *s, size_t n)
{
	fputc('"', fp);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(fp, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", fp);
		else if (ch == '\r')
			fputs("\\r", fp);
		else if (ch == '\t')
			fputs("\\t", fp);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(fp, "\\u%04x", ch);
		else
			fputc(ch, fp);
	}
	fputc('"', fp);
}

static void json_ms(FILE *fp, const char *key, double v)
{
	if (isnan(v))
		fprintf(fp, ", \"%s\": null", key);
	else
		fprintf(fp, ", \"%s\": %.3f", key, v);
}

static void write_request(FILE *fp, const struct breq *r)
{
	if (r->id_json)
		fprintf(fp, "{\"id\": %s", r->id_json);
	else
		fprintf(fp, "{\"id\": %d", r->line);
	fprintf(fp, ", \"line\": %d, \"prompt_tokens\": %d, \"generated_tokens\": %d", r->line,
		r->n_prompt, r->n_gen);
	fputs(", \"generated_ids\": [", fp);
	for (int i = 0; i < r->n_gen; i++)
		fprintf(fp, "%s%d", i ? ", " : "", r->gen[i]);
	fputs("], \"text\": ", fp);
	batch_json_str(fp, r->text.buf ? r->text.buf : "", r->emitted);
	fprintf(fp, ", \"finish_reason\": \"%s\"", r->finish);
	json_ms(fp, "ttft_ms", r->ttft_ms);
	json_ms(fp, "tpot_ms", r->tpot_ms);
	json_ms(fp, "itl_p50_ms", r->itl_p50_ms);
	json_ms(fp, "itl_p99_ms", r->itl_p99_ms);
	json_ms(fp, "e2e_ms", r->e2e_ms);
	fprintf(fp, ", \"cached_tokens\": %d, \"preemptions\": %d}\n", r->n_cached, r->n_preempted);
}

static void write_dist(FILE *fp, const char *key, double *v, size_t n)
{
	double sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += v[i];
	fprintf(fp, ", \"%s\": {", key);
	if (isnan(pct(v, n, 50, false)))
		fputs("\"p50\": null", fp);
	else
		fprintf(fp, "\"p50\": %.3f", pct(v, n, 50, true));
	json_ms(fp, "p90", pct(v, n, 90, true));
	json_ms(fp, "p99", pct(v, n, 99, true));
	json_ms(fp, "mean", n ? sum / (double)n : NAN);
	fputs("}", fp);
}

static int write_summary(struct batch *b, FILE *fp, double duration_s)
{
	struct sched_stats st;
	uint64_t prompt = 0, out = 0, cached = 0;
	size_t n_ttft = 0, n_tpot = 0;
	int failed = 0, ret;

	if ((ret = scratch_reserve(b, 2 * (size_t)b->n)))
		return ret;
	double *ttft = b->scratch, *tpot = b->scratch + b->n;

	sched_get_stats(b->s, &st);
	for (int i = 0; i < b->n; i++) {
		const struct breq *r = &b->reqs[i];

		prompt += (uint64_t)r->n_prompt;
		out += (uint64_t)r->n_gen;
		cached += (uint64_t)r->n_cached;
		failed += strcmp(r->finish, "error") == 0;
		if (!isnan(r->ttft_ms))
			ttft[n_ttft++] = r->ttft_ms;
		if (!isnan(r->tpot_ms))
			tpot[n_tpot++] = r->tpot_ms;
	}
	/* The brace-and-comma layout gives "sched_overhead" etc. a fixed order for greps. */
	fprintf(fp, "{\"summary\": true, \"requests\": %d, \"failed\": %d, \"duration_s\": %.3f",
		b->n, failed, duration_s);
	fprintf(fp, ", \"requests_per_s\": %.3f, \"prompt_tokens\": %llu, \"output_tokens\": %llu",
		duration_s > 0 ? b->n / duration_s : 0.0, (unsigned long long)prompt,
		(unsigned long long)out);
	fprintf(fp, ", \"output_tokens_per_s\": %.2f", duration_s > 0 ? out / duration_s : 0.0);
	write_dist(fp, "ttft_ms", ttft, n_ttft);
	write_dist(fp, "tpot_ms", tpot, n_tpot);
	fprintf(fp, ", \"cached_tokens\": %llu, \"prefix_cache_hit_rate\": %.4f",
		(unsigned long long)cached, prompt ? (double)cached / (double)prompt : 0.0);
	fprintf(fp,
		", \"preemptions\": %llu, \"steps\": %llu, \"prefill_tokens\": %llu, "
		"\"decode_tokens\": %llu",
		(unsigned long long)st.preemptions, (unsigned long long)st.steps,
		(unsigned long long)st.prefill_tokens, (unsigned long long)st.decode_tokens);
	fprintf(fp,
		", \"step_ms\": %.3f, \"sched_ms\": %.3f, \"sched_us_per_step\": %.2f, "
		"\"sched_overhead\": %.4f}\n",
		st.step_ns / 1e6, st.sched_ns / 1e6,
		st.steps ? st.sched_ns / 1e3 / (double)st.steps : 0.0,
		st.step_ns + st.sched_ns ? (double)st.sched_ns / (double)(st.step_ns + st.sched_ns)
					 : 0.0);
	return 0;
}

static void batch_free(struct batch *b)
{
	for (int i = 0; i < b->n; i++) {
		struct breq *r = &b->reqs[i];

		free(r->id_json);
		free(r->prompt);
		for (int k = 0; k < r->n_stops; k++)
			free(r->stops[k]);
		free(r->stop);
		free(r->text.buf);
		free(r->gen);
	}
	free(b->reqs);
	free(b->piece);
	free(b->scratch);
}

int batch_run(struct llm *llm, const struct tokenizer *tok, const struct batch_options *o)
{
	struct batch b = { .o = o, .tok = tok, .llm = llm };
	struct sched_config sc = {
		.max_batch_tokens = o->max_batch_tokens,
		.max_batch_seqs = o->max_batch_seqs,
		.prefix_cache = o->prefix_cache,
	};
	bool to_stdout = !o->out || strcmp(o->out, "-") == 0;
	uint64_t t0, t_end = 0;
	FILE *fp = NULL;
	int ret;

	ret = load_trace(&b, o->requests);
	if (ret)
		goto out;
	b.piece_cap = tok_stream_max(tok) + 8;
	b.piece = malloc(b.piece_cap);
	if (!b.piece) {
		ret = -ENOMEM;
		goto out;
	}
	fp = to_stdout ? stdout : fopen(o->out, "w");
	if (!fp) {
		ret = -errno;
		log_error(SUB, "%s: %s", o->out, strerror(errno));
		goto out;
	}
	/* Room for every sequence a step can hold, several times over, for queueing. */
	sc.max_requests = b.n < 8 * o->max_batch_seqs ? b.n : 8 * o->max_batch_seqs;
	if (sc.max_requests < 256)
		sc.max_requests = b.n < 256 ? b.n : 256;
	ret = sched_create(llm, &sc, o->ignore_eos ? eog_never : eog_tok, &b, &b.s);
	if (ret) {
		log_error(SUB, "sched_create: %s", duet_strerror(ret));
		goto out;
	}
	log_info(SUB,
		 "%d requests from %s; batches of up to %d tokens, %d sequences; prefix "
		 "cache %s",
		 b.n, o->requests, o->max_batch_tokens, o->max_batch_seqs,
		 o->prefix_cache ? "on" : "off");
	t0 = mono_ns();
	ret = replay(&b, t0, &t_end);
	if (ret)
		goto out_sched;
	if (t_end < t0)
		t_end = mono_ns();
	for (int i = 0; i < b.n; i++)
		write_request(fp, &b.reqs[i]);
	ret = write_summary(&b, fp, (double)(t_end - t0) / 1e9);
	if (ret == 0 && fflush(fp) != 0) {
		ret = -errno;
		log_error(SUB, "%s: %s", to_stdout ? "stdout" : o->out, strerror(errno));
	}
out_sched:
	sched_destroy(b.s);
out:
	if (fp && !to_stdout && fclose(fp) != 0 && ret == 0) {
		ret = -errno;
		log_error(SUB, "%s: %s", o->out, strerror(errno));
	}
	batch_free(&b);
	return ret;
}

/* --- synthetic traces ------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *x)
{
	/* splitmix64: any seed, 0 included, gives a full-period stream. */
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static int rng_range(uint64_t *x, int lo, int hi)
{
	return lo + (int)(rng_next(x) % (uint64_t)(hi - lo + 1));
}

int batch_make_requests(const struct batch_gen_options *g, FILE *fp)
{
	uint64_t x = g->seed;
	int32_t *prefix;
	double t_ms = 0;

	if (g->n_requests < 1 || g->prompt_min < 1 || g->prompt_max < g->prompt_min ||
	    g->max_tokens_min < 1 || g->max_tokens_max < g->max_tokens_min ||
	    g->shared_prefix < 0 || g->n_vocab < 1 || !(g->rate >= 0) || isinf(g->rate))
		return -EINVAL;
	prefix = malloc(sizeof(int32_t) * (size_t)(g->shared_prefix ? g->shared_prefix : 1));
	if (!prefix)
		return -ENOMEM;
	for (int i = 0; i < g->shared_prefix; i++)
		prefix[i] = (int32_t)(rng_next(&x) % (uint64_t)g->n_vocab);
	for (int r = 0; r < g->n_requests; r++) {
		int len = rng_range(&x, g->prompt_min, g->prompt_max);
		int max_tokens = rng_range(&x, g->max_tokens_min, g->max_tokens_max);

		if (g->rate > 0 && r > 0) {
			/* Exponential gaps: a Poisson process of rate requests/s. */
			double u = (double)(rng_next(&x) >> 11) * 0x1.0p-53;

			t_ms += -log1p(-u) / g->rate * 1e3;
		}
		fprintf(fp, "{\"id\": %d, \"prompt_ids\": [", r);
		for (int i = 0; i < len; i++) {
			int32_t t = i < g->shared_prefix
					    ? prefix[i]
					    : (int32_t)(rng_next(&x) % (uint64_t)g->n_vocab);

			fprintf(fp, "%s%d", i ? ", " : "", t);
		}
		fprintf(fp, "], \"max_tokens\": %d, \"arrival_ms\": %.3f}\n", max_tokens, t_ms);
	}
	free(prefix);
	return ferror(fp) || fflush(fp) ? -EIO : 0;
}
