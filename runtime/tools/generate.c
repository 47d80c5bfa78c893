// SPDX-License-Identifier: MIT
/*
 * duet-generate: offline single-process inference on a model file.
 *
 *   duet-generate -m MODEL.gguf -p PROMPT [-n N] [sampling options] [--json] [--logits]
 *   duet-generate -m MODEL.gguf --bench [-p 512] [-n 128] [-r 5] [--json]
 *   duet-generate -m MODEL.gguf --requests TRACE.jsonl [--out FILE] [batch options]
 *   duet-generate -m MODEL.gguf --make-requests N [trace options] [--out FILE]
 *
 * Text mode streams the generated text to stdout as it is produced.
 * Exit codes: 0 done, 1 runtime error (bad model, prompt too long ...), 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drivers/backend.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/kv/kv.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/model.h"
#include "runtime/model/sampler.h"
#include "runtime/model/tokenizer.h"
#include "runtime/tools/batch.h"

#define PROG "duet-generate"
#define EXIT_USAGE 2
#define MAX_STOPS SMP_STOP_MAX

struct opts {
	const char *model;
	const char *prompt;
	int n_predict;
	int threads;
	int ctx;
	int reps;
	int bench_p;
	const char *isa;
	enum ggml_type kv;
	bool no_bos, json, logits, bench, ignore_eos, parse_special;
	struct smp_params sp;
	const char *stops[MAX_STOPS];
	int n_stops;
	/* Batch mode (--requests) and trace generation (--make-requests). */
	const char *requests, *out;
	int max_batch_tokens, max_batch_seqs, kv_blocks;
	bool no_prefix_cache;
	struct batch_gen_options gen; /* n_requests > 0: write a trace */
};

static void usage(FILE *fp)
{
	fprintf(fp,
		"Usage: " PROG " -m MODEL.gguf -p PROMPT [options]\n"
		"       " PROG " -m MODEL.gguf --bench [-p TOKENS] [-n TOKENS] [-r REPS] [--json]\n"
		"       " PROG " -m MODEL.gguf --requests TRACE.jsonl [--out FILE] [options]\n"
		"       " PROG " -m MODEL.gguf --make-requests N [trace options] [--out FILE]\n"
		"\n"
		"Generation:\n"
		"  -m, --model FILE       GGUF model (llama or qwen2 architecture)\n"
		"  -p, --prompt TEXT      prompt text (with --bench: prompt length in tokens [512])\n"
		"  -n, --n-predict N      tokens to generate [128]\n"
		"      --no-bos           do not add BOS even if the model asks for it\n"
		"      --special          parse control-token text (\"<|im_end|>\") in the prompt\n"
		"      --ignore-eos       keep generating past end-of-generation tokens\n"
		"      --stop S           stop when the output contains S (repeatable, up to %d)\n"
		"Sampling (defaults: greedy):\n"
		"      --temp T           temperature, 0 = greedy [0]\n"
		"      --top-k K          keep the K most likely tokens, 0 = off [0]\n"
		"      --top-p P          nucleus sampling, 1 = off [1]\n"
		"      --min-p P          drop tokens below P x the top probability, 0 = off [0]\n"
		"      --repeat-penalty R penalty on recent tokens, 1 = off [1]\n"
		"      --repeat-last-n N  window of the penalties [64]\n"
		"      --presence-penalty F, --frequency-penalty F   OpenAI-style, [-2, 2] [0]\n"
		"      --seed S           sampling seed [0]\n"
		"Engine:\n"
		"  -t, --threads N        compute threads, pinned to the CPUs this process may use\n"
		"                         [one per such CPU]\n"
		"  -c, --ctx N            context length, 0 = the model's [0]\n"
		"      --kv-type T        KV cache type: f16 or f32 [f16]\n"
		"      --isa NAME         kernels: scalar, avx2, avx512 [best available]\n"
		"Output:\n"
		"      --json             one JSON object: prompt_ids, generated_ids, text, timings\n"
		"      --logits           also print the logits of the first generated position\n"
		"      --bench            measure prompt processing and decode tokens/s\n"
		"  -r, --reps N           benchmark repetitions [5]\n"
		"Batch mode (continuous batching; sampling options and -n are per-request defaults):\n"
		"      --requests FILE    replay a JSONL trace of requests in real time (\"-\" = stdin);\n"
		"                         one JSON result per request, then a summary line\n"
		"                         (keys: prompt | prompt_ids, max_tokens, temperature, top_k,\n"
		"                         top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,\n"
		"                         frequency_penalty, seed, stop, arrival_ms, tenant, priority, id)\n"
		"      --out FILE         write the results (or the trace) to FILE [stdout]\n"
		"      --max-batch-tokens N  tokens per step, all sequences [512]\n"
		"      --max-batch-seqs N    sequences per step [64]\n"
		"      --kv-blocks N      KV pool in blocks of 16 tokens, 0 = max-batch-seqs full\n"
		"                         contexts, at most 2 GiB of KV (at least one context) [0]\n"
		"      --no-prefix-cache  do not reuse the KV of earlier prompts\n"
		"Trace generation (prompt_ids, no text needed; --seed seeds it):\n"
		"      --make-requests N  write N synthetic requests as JSONL and exit\n"
		"      --prompt-len A-B   prompt tokens, uniform in [A, B] [128-512]\n"
		"      --max-tokens C-D   tokens to generate, uniform in [C, D] [64-256]\n"
		"      --shared-prefix P  leading prompt tokens common to all requests [0]\n"
		"      --rate R           Poisson arrivals, requests/s; 0 = all at once [0]\n"
		"  -h, --help             this text\n",
		MAX_STOPS);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(see " PROG " --help)\n");
	return EXIT_USAGE;
}

static int parse_int(const char *opt, const char *s, long min, long max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, PROG ": --%s: '%s' is not an integer in [%ld, %ld]\n", opt, s, min,
			max);
		return EXIT_USAGE;
	}
	*out = (int)v;
	return 0;
}

static int parse_float(const char *opt, const char *s, float *out)
{
	char *end;
	float v;

	errno = 0;
	v = strtof(s, &end);
	if (errno || end == s || *end || !isfinite(v)) {
		fprintf(stderr, PROG ": --%s: '%s' is not a number\n", opt, s);
		return EXIT_USAGE;
	}
	*out = v;
	return 0;
}

enum {
	OPT_NO_BOS = 256,
	OPT_SPECIAL,
	OPT_IGNORE_EOS,
	OPT_STOP,
	OPT_TEMP,
	OPT_TOP_K,
	OPT_TOP_P,
	OPT_MIN_P,
	OPT_REPEAT_PENALTY,
	OPT_REPEAT_LAST_N,
	OPT_PRESENCE,
	OPT_FREQUENCY,
	OPT_SEED,
	OPT_KV_TYPE,
	OPT_ISA,
	OPT_JSON,
	OPT_LOGITS,
	OPT_BENCH,
	OPT_REQUESTS,
	OPT_OUT,
	OPT_MAX_BATCH_TOKENS,
	OPT_MAX_BATCH_SEQS,
	OPT_KV_BLOCKS,
	OPT_NO_PREFIX_CACHE,
	OPT_MAKE_REQUESTS,
	OPT_PROMPT_LEN,
	OPT_MAX_TOKENS,
	OPT_SHARED_PREFIX,
	OPT_RATE,
};

/* "A-B" (or "A") with min <= A <= B <= max. */
static int parse_range(const char *opt, const char *s, int min, int max, int *lo, int *hi)
{
	char *end;
	long a, b;

	errno = 0;
	a = strtol(s, &end, 10);
	b = a;
	if (!errno && end != s && *end == '-') {
		const char *t = end + 1;

		b = strtol(t, &end, 10);
		if (end == t)
			errno = EINVAL;
	}
	if (errno || end == s || *end || a < min || b < a || b > max) {
		fprintf(stderr, PROG ": --%s: '%s' is not a range A-B with %d <= A <= B <= %d\n",
			opt, s, min, max);
		return EXIT_USAGE;
	}
	*lo = (int)a;
	*hi = (int)b;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "prompt", required_argument, NULL, 'p' },
		{ "n-predict", required_argument, NULL, 'n' },
		{ "threads", required_argument, NULL, 't' },
		{ "ctx", required_argument, NULL, 'c' },
		{ "reps", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ "no-bos", no_argument, NULL, OPT_NO_BOS },
		{ "special", no_argument, NULL, OPT_SPECIAL },
		{ "ignore-eos", no_argument, NULL, OPT_IGNORE_EOS },
		{ "stop", required_argument, NULL, OPT_STOP },
		{ "temp", required_argument, NULL, OPT_TEMP },
		{ "top-k", required_argument, NULL, OPT_TOP_K },
		{ "top-p", required_argument, NULL, OPT_TOP_P },
		{ "min-p", required_argument, NULL, OPT_MIN_P },
		{ "repeat-penalty", required_argument, NULL, OPT_REPEAT_PENALTY },
		{ "repeat-last-n", required_argument, NULL, OPT_REPEAT_LAST_N },
		{ "presence-penalty", required_argument, NULL, OPT_PRESENCE },
		{ "frequency-penalty", required_argument, NULL, OPT_FREQUENCY },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "kv-type", required_argument, NULL, OPT_KV_TYPE },
		{ "isa", required_argument, NULL, OPT_ISA },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "logits", no_argument, NULL, OPT_LOGITS },
		{ "bench", no_argument, NULL, OPT_BENCH },
		{ "requests", required_argument, NULL, OPT_REQUESTS },
		{ "out", required_argument, NULL, OPT_OUT },
		{ "max-batch-tokens", required_argument, NULL, OPT_MAX_BATCH_TOKENS },
		{ "max-batch-seqs", required_argument, NULL, OPT_MAX_BATCH_SEQS },
		{ "kv-blocks", required_argument, NULL, OPT_KV_BLOCKS },
		{ "no-prefix-cache", no_argument, NULL, OPT_NO_PREFIX_CACHE },
		{ "make-requests", required_argument, NULL, OPT_MAKE_REQUESTS },
		{ "prompt-len", required_argument, NULL, OPT_PROMPT_LEN },
		{ "max-tokens", required_argument, NULL, OPT_MAX_TOKENS },
		{ "shared-prefix", required_argument, NULL, OPT_SHARED_PREFIX },
		{ "rate", required_argument, NULL, OPT_RATE },
		{ NULL, 0, NULL, 0 },
	};
	cpu_set_t aff;
	long nproc = sched_getaffinity(0, sizeof(aff), &aff) == 0 ? CPU_COUNT(&aff)
								  : sysconf(_SC_NPROCESSORS_ONLN);
	int c, ret = 0;

	memset(o, 0, sizeof(*o));
	o->n_predict = -1;
	o->threads = nproc > 0 ? (int)nproc : 1;
	o->reps = 5;
	o->kv = GGML_TYPE_F16;
	/* Greedy unless asked otherwise: exact, reproducible, comparable with references. */
	o->sp = smp_params_default();
	o->sp.temperature = 0.0f;
	o->sp.top_k = 0;
	o->sp.top_p = 1.0f;
	o->sp.min_p = 0.0f;
	o->max_batch_tokens = 512;
	o->max_batch_seqs = 64;
	o->gen.prompt_min = 128;
	o->gen.prompt_max = 512;
	o->gen.max_tokens_min = 64;
	o->gen.max_tokens_max = 256;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:p:n:t:c:r:h", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			o->model = optarg;
			break;
		case 'p':
			o->prompt = optarg;
			break;
		case 'n':
			ret = parse_int("n-predict", optarg, 0, 1 << 24, &o->n_predict);
			break;
		case 't':
			ret = parse_int("threads", optarg, 1, 1024, &o->threads);
			break;
		case 'c':
			ret = parse_int("ctx", optarg, 0, 1 << 24, &o->ctx);
			break;
		case 'r':
			ret = parse_int("reps", optarg, 1, 1000, &o->reps);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case OPT_NO_BOS:
			o->no_bos = true;
			break;
		case OPT_SPECIAL:
			o->parse_special = true;
			break;
		case OPT_IGNORE_EOS:
			o->ignore_eos = true;
			break;
		case OPT_STOP:
			if (o->n_stops == MAX_STOPS)
				return usage_error("--stop: at most %d stop strings", MAX_STOPS);
			o->stops[o->n_stops++] = optarg;
			break;
		case OPT_TEMP:
			ret = parse_float("temp", optarg, &o->sp.temperature);
			break;
		case OPT_TOP_K:
			ret = parse_int("top-k", optarg, 0, 1 << 24, &o->sp.top_k);
			break;
		case OPT_TOP_P:
			ret = parse_float("top-p", optarg, &o->sp.top_p);
			break;
		case OPT_MIN_P:
			ret = parse_float("min-p", optarg, &o->sp.min_p);
			break;
		case OPT_REPEAT_PENALTY:
			ret = parse_float("repeat-penalty", optarg, &o->sp.repeat_penalty);
			break;
		case OPT_REPEAT_LAST_N:
			ret = parse_int("repeat-last-n", optarg, 0, SMP_MAX_LAST_N,
					&o->sp.repeat_last_n);
			break;
		case OPT_PRESENCE:
			ret = parse_float("presence-penalty", optarg, &o->sp.presence_penalty);
			break;
		case OPT_FREQUENCY:
			ret = parse_float("frequency-penalty", optarg, &o->sp.frequency_penalty);
			break;
		case OPT_SEED: {
			char *end;
			errno = 0;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end)
				return usage_error("--seed: '%s' is not an unsigned integer",
						   optarg);
			o->sp.seed = v;
			break;
		}
		case OPT_KV_TYPE:
			if (strcmp(optarg, "f16") == 0)
				o->kv = GGML_TYPE_F16;
			else if (strcmp(optarg, "f32") == 0)
				o->kv = GGML_TYPE_F32;
			else
				return usage_error("--kv-type: '%s' is not f16 or f32", optarg);
			break;
		case OPT_ISA:
			o->isa = optarg;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_LOGITS:
			o->logits = true;
			break;
		case OPT_BENCH:
			o->bench = true;
			break;
		case OPT_REQUESTS:
			o->requests = optarg;
			break;
		case OPT_OUT:
			o->out = optarg;
			break;
		case OPT_MAX_BATCH_TOKENS:
			ret = parse_int("max-batch-tokens", optarg, 1, 1 << 20,
					&o->max_batch_tokens);
			break;
		case OPT_MAX_BATCH_SEQS:
			ret = parse_int("max-batch-seqs", optarg, 1, 4096, &o->max_batch_seqs);
			break;
		case OPT_KV_BLOCKS:
			ret = parse_int("kv-blocks", optarg, 0, 1 << 24, &o->kv_blocks);
			break;
		case OPT_NO_PREFIX_CACHE:
			o->no_prefix_cache = true;
			break;
		case OPT_MAKE_REQUESTS:
			ret = parse_int("make-requests", optarg, 1, 1 << 24, &o->gen.n_requests);
			break;
		case OPT_PROMPT_LEN:
			ret = parse_range("prompt-len", optarg, 1, 1 << 24, &o->gen.prompt_min,
					  &o->gen.prompt_max);
			break;
		case OPT_MAX_TOKENS:
			ret = parse_range("max-tokens", optarg, 1, 1 << 24, &o->gen.max_tokens_min,
					  &o->gen.max_tokens_max);
			break;
		case OPT_SHARED_PREFIX:
			ret = parse_int("shared-prefix", optarg, 0, 1 << 24, &o->gen.shared_prefix);
			break;
		case OPT_RATE: {
			float rate;

			ret = parse_float("rate", optarg, &rate);
			if (ret == 0 && rate < 0)
				return usage_error("--rate: '%s' is negative", optarg);
			o->gen.rate = rate;
			break;
		}
		case ':':
			return usage_error("option %s needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
		if (ret)
			return ret;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!o->model)
		return usage_error("no model (-m FILE)");
	if ((o->bench != 0) + (o->requests != NULL) + (o->gen.n_requests > 0) +
		    (o->prompt != NULL && !o->bench) >
	    1)
		return usage_error(
			"-p, --bench, --requests and --make-requests exclude each other");
	if (o->gen.n_requests > 0) {
		o->gen.seed = o->sp.seed;
		return 0;
	}
	if (o->requests) {
		if (o->n_stops)
			return usage_error("--stop applies to -p; give each request its \"stop\"");
		if (o->n_predict < 0)
			o->n_predict = 128;
		if (o->max_batch_seqs > o->max_batch_tokens)
			return usage_error("--max-batch-seqs %d exceeds --max-batch-tokens %d",
					   o->max_batch_seqs, o->max_batch_tokens);
		return 0;
	}
	if (o->bench) {
		o->bench_p = 512;
		if (o->prompt && parse_int("prompt", o->prompt, 0, 1 << 20, &o->bench_p))
			return EXIT_USAGE;
		if (o->n_predict < 0)
			o->n_predict = 128;
	} else {
		if (!o->prompt)
			return usage_error("no prompt (-p TEXT)");
		if (o->n_predict < 0)
			o->n_predict = 128;
	}
	return 0;
}

/* --- the engine, opened once -------------------------------------------------- */

struct engine {
	struct gguf_file *f;
	struct model_desc *m;
	struct tokenizer *tok;
	struct backend *be;
	struct llm *llm;
	struct llm_seq seq;
	float *logits;
	int n_vocab;
};

/* The CPUs this process may run on, for pinning the compute threads. */
static int allowed_cpus(int *cpus, int max)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return 0;
	for (int c = 0; c < CPU_SETSIZE && n < max; c++) {
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	}
	return n;
}

static int engine_open(struct engine *e, const struct opts *o)
{
	char err[768], desc[256];
	static int cpus[1024];
	struct be_options bo = { .threads = o->threads, .isa = o->isa };
	struct llm_options lo = { .kv_dtype = o->kv, .n_ctx = o->ctx, .max_tokens = 512 };
	struct be_step_limits lim = { .max_tokens = 512, .max_seqs = 1 };
	int ret;

	memset(e, 0, sizeof(*e));
	/* One thread per allowed CPU, pinned, like a partition's pool. */
	bo.n_cpus = allowed_cpus(cpus, 1024);
	bo.cpus = bo.n_cpus > 0 ? cpus : NULL;
	ret = gguf_open(o->model, &e->f, err, sizeof(err));
	if (ret) {
		log_error("generate", "%s", err);
		return ret;
	}
	ret = model_desc_load(e->f, 0, &e->m, err, sizeof(err));
	if (ret) {
		log_error("generate", "%s: %s", o->model, err);
		return ret;
	}
	ret = tok_create(e->f, e->m, &e->tok, err, sizeof(err));
	if (ret) {
		log_error("generate", "%s: tokenizer: %s", o->model, err);
		return ret;
	}
	int n_ctx = o->ctx > 0 ? o->ctx : (int)e->m->n_ctx;
	int ctx_blocks = (n_ctx + 15) / 16;
	lim.max_table = ctx_blocks + 1;
	if (o->requests) {
		/* Continuous batching: steps of many sequences over one shared pool. */
		lo.max_tokens = lim.max_tokens = o->max_batch_tokens;
		lo.max_seqs = lo.max_out = lim.max_seqs = o->max_batch_seqs;
		lim.max_table = o->max_batch_seqs * (ctx_blocks + 1);
		lo.block_tokens = 16;
		lo.n_blocks = o->kv_blocks;
		if (lo.n_blocks == 0) {
			/* Every sequence's full context, within 2 GiB, but at least one context. */
			size_t bb = 0;
			long want = (long)o->max_batch_seqs * ctx_blocks, cap = want;

			if (kv_block_bytes(16, (int)e->m->n_kv_heads, (int)e->m->head_dim,
					   o->kv == GGML_TYPE_F32 ? 4 : 2, (int)e->m->n_layers,
					   &bb) == 0 &&
			    bb > 0)
				cap = (long)((2ull << 30) / bb);
			if (cap < ctx_blocks + 1)
				cap = ctx_blocks + 1;
			lo.n_blocks = (int)(want < cap ? want : cap);
		}
	}
	ret = backend_open("cpu", &bo, &lim, &e->be);
	if (ret)
		return ret;
	ret = llm_create(e->be, e->m, &lo, &e->llm);
	if (ret)
		return ret;
	if (!o->requests) {
		ret = llm_seq_init(&e->seq, e->llm);
		if (ret)
			return ret;
	}
	e->n_vocab = (int)e->m->n_vocab;
	e->logits = calloc((size_t)e->n_vocab, sizeof(float));
	if (!e->logits)
		return -ENOMEM;
	model_desc_summary(e->m, err, sizeof(err));
	backend_describe(e->be, desc, sizeof(desc));
	log_info("generate", "%s; %s; context %d, KV %s, %d blocks of %d tokens", err, desc,
		 llm_n_ctx(e->llm), ggml_type_name(o->kv), llm_n_blocks(e->llm),
		 llm_block_tokens(e->llm));
	return 0;
}

static void engine_close(struct engine *e)
{
	free(e->logits);
	if (e->seq.llm)
		llm_seq_free(&e->seq);
	llm_destroy(e->llm);
	backend_close(e->be);
	tok_destroy(e->tok);
	model_desc_free(e->m);
	gguf_close(e->f);
}

/* --- JSON helpers --------------------------------------------------------------- */

static void json_ids(FILE *fp, const int32_t *ids, int n)
{
	fputc('[', fp);
	for (int i = 0; i < n; i++)
		fprintf(fp, "%s%d", i ? ", " : "", ids[i]);
	fputc(']', fp);
}

/* --- generation ------------------------------------------------------------------ */

struct text {
	char *buf;
	size_t len, cap;
};

static int text_add(struct text *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t cap = (t->cap ? t->cap * 2 : 4096) + n;
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

static int generate(struct engine *e, const struct opts *o)
{
	char err[256];
	struct sampler *smp = NULL;
	struct smp_stop stop;
	struct tok_stream ts;
	struct text out = { 0 };
	int32_t *prompt = NULL, *gen = NULL;
	size_t n_prompt = 0, plen = strlen(o->prompt), emitted = 0;
	size_t cap = tok_stream_max(e->tok) + 8;
	char *piece = malloc(cap);
	double t0, t_prefill = 0, t_decode = 0;
	int n_gen = 0, ret;
	bool stopped = false;
	const char *why = "length";

	ret = smp_params_validate(&o->sp, e->n_vocab, err, sizeof(err));
	if (ret) {
		log_error("generate", "sampling: %s", err);
		goto out;
	}
	ret = smp_stop_init(&stop, o->stops, o->n_stops, err, sizeof(err));
	if (ret) {
		log_error("generate", "--stop: %s", err);
		goto out;
	}
	prompt = malloc(sizeof(int32_t) * (plen + 8));
	gen = malloc(sizeof(int32_t) * ((size_t)o->n_predict + 1));
	if (!piece || !prompt || !gen) {
		ret = -ENOMEM;
		goto out;
	}
	ret = tok_encode(e->tok, o->prompt, plen, !o->no_bos, o->parse_special, prompt, plen + 8,
			 &n_prompt);
	if (ret) {
		log_error("generate", "cannot tokenize the prompt: %s", duet_strerror(ret));
		goto out;
	}
	/* With --no-bos an empty prompt has no tokens at all. */
	if (n_prompt == 0) {
		log_error("generate", "the prompt is empty and the model adds no BOS; nothing to "
				      "condition on");
		ret = -EINVAL;
		goto out;
	}
	if ((int)n_prompt + o->n_predict > llm_n_ctx(e->llm)) {
		log_error("generate",
			  "prompt (%zu tokens) + %d to generate exceeds the context of %d tokens",
			  n_prompt, o->n_predict, llm_n_ctx(e->llm));
		ret = -ENOSPC;
		goto out;
	}
	ret = smp_create(&o->sp, e->n_vocab, &smp);
	if (ret)
		goto out;
	for (size_t i = 0; i < n_prompt; i++)
		smp_accept(smp, prompt[i]);

	t0 = now_ms();
	ret = llm_seq_eval(&e->seq, prompt, (int)n_prompt, e->logits, NULL);
	t_prefill = now_ms() - t0;
	if (ret) {
		log_error("generate", "prefill failed: %s", duet_strerror(ret));
		goto out;
	}
	if (o->logits && !o->json) {
		printf("logits of the first generated position (%d values):\n", e->n_vocab);
		for (int i = 0; i < e->n_vocab; i++)
			printf("%d %.9g\n", i, (double)e->logits[i]);
	}
	float *first_logits = NULL;
	if (o->logits && o->json) {
		first_logits = malloc(sizeof(float) * (size_t)e->n_vocab);
		if (!first_logits) {
			ret = -ENOMEM;
			goto out;
		}
		memcpy(first_logits, e->logits, sizeof(float) * (size_t)e->n_vocab);
	}

	tok_stream_init(&ts);
	t0 = now_ms();
	while (n_gen < o->n_predict) {
		int32_t id = smp_sample(smp, e->logits);
		size_t emit;
		int n;

		if (id < 0) {
			log_error("generate", "sampling failed: %s (every token banned?)",
				  duet_strerror(id));
			ret = id;
			break;
		}
		gen[n_gen++] = id;
		smp_accept(smp, id);
		if (!o->ignore_eos && tok_is_eog(e->tok, id)) {
			why = "eos";
			break;
		}
		n = tok_stream_push(e->tok, &ts, id, piece, cap);
		if (n < 0) {
			ret = n;
			break;
		}
		if ((ret = text_add(&out, piece, (size_t)n)))
			break;
		smp_stop_feed(&stop, piece, (size_t)n, &emit, &stopped);
		if (!o->json && emit) {
			fwrite(out.buf + emitted, 1, emit, stdout);
			fflush(stdout);
		}
		emitted += emit;
		if (stopped) {
			why = "stop";
			break;
		}
		if (n_gen == o->n_predict)
			break;
		ret = llm_seq_eval(&e->seq, &id, 1, e->logits, NULL);
		if (ret) {
			log_error("generate", "decode failed: %s", duet_strerror(ret));
			break;
		}
	}
	t_decode = now_ms() - t0;
	size_t printed = emitted, final_len = emitted;
	if (!stopped) {
		int n = tok_stream_flush(e->tok, &ts, piece, cap);
		if (n > 0)
			text_add(&out, piece, (size_t)n);
		final_len = out.len;
	}
	if (!o->json) {
		if (final_len > printed)
			fwrite(out.buf + printed, 1, final_len - printed, stdout);
		fputc('\n', stdout);
	}
	if (o->json) {
		printf("{\"prompt_ids\": ");
		json_ids(stdout, prompt, (int)n_prompt);
		printf(", \"generated_ids\": ");
		json_ids(stdout, gen, n_gen);
		printf(", \"text\": ");
		batch_json_str(stdout, out.buf ? out.buf : "", final_len);
		printf(", \"finish_reason\": \"%s\"", why);
		printf(", \"timings\": {\"prefill_ms\": %.3f, \"prefill_tokens\": %zu, "
		       "\"prefill_tokens_per_s\": %.2f, \"decode_ms\": %.3f, \"decode_tokens\": %d, "
		       "\"decode_tokens_per_s\": %.2f}",
		       t_prefill, n_prompt, n_prompt / (t_prefill / 1e3), t_decode, n_gen,
		       n_gen > 1 ? (n_gen - 1) / (t_decode / 1e3) : 0.0);
		if (first_logits) {
			printf(", \"logits\": [");
			for (int i = 0; i < e->n_vocab; i++)
				printf("%s%.9g", i ? ", " : "", (double)first_logits[i]);
			printf("]");
		}
		printf("}\n");
	} else {
		log_info(
			"generate",
			"prompt %zu tokens in %.1f ms (%.1f tok/s); generated %d tokens in %.1f ms "
			"(%.1f tok/s); stopped by %s",
			n_prompt, t_prefill, n_prompt / (t_prefill / 1e3), n_gen, t_decode,
			n_gen > 1 ? (n_gen - 1) / (t_decode / 1e3) : 0.0, why);
	}
	free(first_logits);
out:
	smp_destroy(smp);
	free(prompt);
	free(gen);
	free(piece);
	free(out.buf);
	return ret;
}

/* --- benchmark ------------------------------------------------------------------- */

struct stat_acc {
	double sum, sq;
	int n;
};

static void acc_add(struct stat_acc *a, double v)
{
	a->sum += v;
	a->sq += v * v;
	a->n++;
}

static double acc_mean(const struct stat_acc *a)
{
	return a->n ? a->sum / a->n : 0;
}

static double acc_sd(const struct stat_acc *a)
{
	double m = acc_mean(a);

	return a->n > 1 ? sqrt(fmax(0, (a->sq - a->n * m * m) / (a->n - 1))) : 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Like llama-bench: ppP (prompt of P random tokens) and tgN (N single-token steps). */
static int bench(struct engine *e, const struct opts *o)
{
	struct stat_acc pp = { 0 }, tg = { 0 };
	int32_t *ids = malloc(sizeof(int32_t) * (size_t)(o->bench_p > 0 ? o->bench_p : 1));
	double *pp_ms = calloc((size_t)o->reps + 1, sizeof(double)); /* for the percentiles */
	uint64_t x = 0x9E3779B97F4A7C15ull;
	char desc[256];
	int ret = 0;

	if (!ids || !pp_ms) {
		free(ids);
		free(pp_ms);
		return -ENOMEM;
	}
	if (o->bench_p + o->n_predict > llm_n_ctx(e->llm)) {
		log_error("generate", "--bench: %d + %d tokens exceed the context of %d",
			  o->bench_p, o->n_predict, llm_n_ctx(e->llm));
		free(ids);
		return -ENOSPC;
	}
	for (int i = 0; i < o->bench_p; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		ids[i] = (int32_t)(x % (uint64_t)e->n_vocab);
	}
	/* One warm-up round of each, then the measured repetitions. */
	for (int r = -1; r < o->reps && ret == 0; r++) {
		if (o->bench_p > 0) {
			llm_seq_reset(&e->seq);
			double t0 = now_ms();
			ret = llm_seq_eval(&e->seq, ids, o->bench_p, e->logits, NULL);
			double dt = now_ms() - t0;
			if (r >= 0) {
				acc_add(&pp, o->bench_p / (dt / 1e3));
				pp_ms[r] = dt;
			}
		}
		if (ret == 0 && o->n_predict > 0) {
			int32_t tok = (int32_t)(ids[0] % e->n_vocab);
			llm_seq_reset(&e->seq);
			double t0 = now_ms();
			for (int i = 0; i < o->n_predict && ret == 0; i++) {
				ret = llm_seq_eval(&e->seq, &tok, 1, e->logits, NULL);
				tok = 0;
				for (int j = 1; j < e->n_vocab; j++) {
					if (e->logits[j] > e->logits[tok])
						tok = j;
				}
			}
			double dt = now_ms() - t0;
			if (r >= 0)
				acc_add(&tg, o->n_predict / (dt / 1e3));
		}
	}
	free(ids);
	if (ret) {
		log_error("generate", "--bench failed: %s", duet_strerror(ret));
		free(pp_ms);
		return ret;
	}
	qsort(pp_ms, (size_t)o->reps, sizeof(double), cmp_double);
	backend_describe(e->be, desc, sizeof(desc));
	double wbytes = (double)e->m->weight_bytes;
	if (o->json) {
		printf("{\"model\": ");
		batch_json_str(stdout, e->m->name, strlen(e->m->name));
		printf(", \"weights\": \"%s\", \"params\": %llu, \"weight_bytes\": %.0f, \"backend\": ",
		       ggml_type_name(e->m->wtype), (unsigned long long)e->m->n_params, wbytes);
		batch_json_str(stdout, desc, strlen(desc));
		printf(", \"threads\": %d, \"reps\": %d, \"pp_tokens\": %d, \"pp_tokens_per_s\": %.2f, "
		       "\"pp_sd\": %.2f, \"tg_tokens\": %d, \"tg_tokens_per_s\": %.2f, \"tg_sd\": %.2f, "
		       "\"tg_weight_gb_per_s\": %.2f, \"pp_ms_p50\": %.4f, \"pp_ms_p99\": %.4f}\n",
		       o->threads, o->reps, o->bench_p, acc_mean(&pp), acc_sd(&pp), o->n_predict,
		       acc_mean(&tg), acc_sd(&tg), acc_mean(&tg) * wbytes / 1e9,
		       pp_ms[(o->reps - 1) / 2], pp_ms[(o->reps * 99 + 99) / 100 - 1]);
	} else {
		printf("| model | weights | backend | test | tokens/s |\n");
		printf("|---|---|---|---|---|\n");
		if (o->bench_p > 0)
			printf("| %s | %s | %s | pp%d | %.2f ± %.2f |\n", e->m->name,
			       ggml_type_name(e->m->wtype), desc, o->bench_p, acc_mean(&pp),
			       acc_sd(&pp));
		if (o->n_predict > 0)
			printf("| %s | %s | %s | tg%d | %.2f ± %.2f (weights %.2f GB/s) |\n",
			       e->m->name, ggml_type_name(e->m->wtype), desc, o->n_predict,
			       acc_mean(&tg), acc_sd(&tg), acc_mean(&tg) * wbytes / 1e9);
	}
	free(pp_ms);
	return 0;
}

/* --- batch mode ----------------------------------------------------------------- */

static int run_batch(struct engine *e, const struct opts *o)
{
	struct batch_options bo = {
		.requests = o->requests,
		.out = o->out,
		.max_batch_tokens = o->max_batch_tokens,
		.max_batch_seqs = o->max_batch_seqs,
		.prefix_cache = !o->no_prefix_cache,
		.add_bos = !o->no_bos,
		.parse_special = o->parse_special,
		.ignore_eos = o->ignore_eos,
		.max_tokens = o->n_predict,
		.sp = o->sp,
	};

	return batch_run(e->llm, e->tok, &bo);
}

/* --make-requests: needs only the vocabulary size, so the weights stay unloaded. */
static int make_requests(struct opts *o)
{
	struct gguf_file *f = NULL;
	struct model_desc *m = NULL;
	FILE *fp = stdout;
	char err[512];
	int ret;

	ret = gguf_open(o->model, &f, err, sizeof(err));
	if (ret) {
		log_error("generate", "%s", err);
		return ret;
	}
	ret = model_desc_load(f, MODEL_LOAD_VOCAB_ONLY, &m, err, sizeof(err));
	if (ret) {
		log_error("generate", "%s: %s", o->model, err);
		goto out_gguf;
	}
	o->gen.n_vocab = (int)m->n_vocab;
	if (o->out && strcmp(o->out, "-") != 0) {
		fp = fopen(o->out, "w");
		if (!fp) {
			ret = -errno;
			log_error("generate", "%s: %s", o->out, strerror(errno));
			goto out_model;
		}
	}
	ret = batch_make_requests(&o->gen, fp);
	if (ret)
		log_error("generate", "--make-requests: %s", duet_strerror(ret));
	if (fp != stdout && fclose(fp) != 0 && ret == 0) {
		ret = -errno;
		log_error("generate", "%s: %s", o->out, strerror(errno));
	}
out_model:
	model_desc_free(m);
out_gguf:
	gguf_close(f);
	return ret;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct engine e;
	int ret;

	duet_log_set_ident(PROG);
	ret = parse_args(argc, argv, &o);
	if (ret)
		return ret;
	if (o.gen.n_requests > 0)
		return make_requests(&o) ? 1 : 0;
	if (o.json || o.bench)
		duet_log_set_level(DUET_LOG_WARN);
	ret = engine_open(&e, &o);
	if (ret == 0 && o.requests)
		ret = run_batch(&e, &o);
	else if (ret == 0)
		ret = o.bench ? bench(&e, &o) : generate(&e, &o);
	engine_close(&e);
	return ret ? 1 : 0;
}
