// SPDX-License-Identifier: MIT
/*
 * Synthetic Llama models (see synth.h).  The tensor list is built once from
 * the parameters; the GGUF writer calls fill_tensor() for each tensor while
 * it writes, which regenerates that tensor's PRNG stream row by row into the
 * writer's buffer, converting each fp32 row to the target type.
 */
#include "runtime/model/synth.h"
#include "runtime/model/gguf_write.h"
#include "runtime/model/model.h"
#include "kernels/cpu/quant.h"
#include "runtime/core/log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Norm weights are 1 + u * 0.1: a fused multiply-add would round once and
 * change bits on hosts that contract by default.  Same rule as quant.c.
 */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

_Static_assert(SYNTH_MAX_DIM <= MODEL_MAX_DIM && SYNTH_MAX_LAYERS <= MODEL_MAX_LAYERS &&
		       SYNTH_MAX_HEADS <= MODEL_MAX_HEADS &&
		       SYNTH_MAX_HEAD_DIM <= MODEL_MAX_HEAD_DIM && SYNTH_MAX_FFN <= MODEL_MAX_FFN &&
		       SYNTH_MAX_CTX <= MODEL_MAX_CTX && SYNTH_MAX_VOCAB <= MODEL_MAX_VOCAB,
	       "every synthetic model must be loadable");

#define SYNTH_NORM_SPREAD 0.1f	/* norm weights in [1 - spread, 1 + spread) */
#define SYNTH_EXTRA_SCORE -1e9f /* score of the <extra_N> filler tokens */
#define SYNTH_PIECE_MAX 24	/* bytes of the longest piece, with its NUL */

/* llama.cpp's token types (llama_token_type / LLAMA_TOKEN_TYPE_*). */
enum {
	TOK_NORMAL = 1,
	TOK_UNKNOWN = 2,
	TOK_CONTROL = 3,
	TOK_UNUSED = 5,
	TOK_BYTE = 6,
};

struct synth_tensor {
	struct synth_gen *g;
	char name[GGUF_WRITER_MAX_NAME + 1];
	uint32_t n_dims;     /* 1 for norms, 2 for matrices */
	uint64_t ne[2];	     /* ggml order; ne[1] = 1 for norms */
	enum ggml_type type; /* F32 for norms and biases */
	bool norm;
	bool bias; /* a 1-D bias: values around 0, not 1 */
};

struct synth_gen {
	struct synth_params p; /* defaults resolved */
	struct synth_tensor *tensors;
	size_t n_tensors;
	float *row; /* one fp32 row: max ne[0] floats */
};

/* --- parameters ------------------------------------------------------------ */

void synth_params_init(struct synth_params *p)
{
	*p = (struct synth_params){
		.dim = 128,
		.n_layers = 4,
		.n_heads = 4,
		.n_kv_heads = 2,
		.ffn = 352,
		.ctx = 1024,
		.vocab = SYNTH_VOCAB_BASE,
		.type = GGML_TYPE_F16,
		.seed = 1,
		.tied = false,
		.name = NULL,
		.rope_base = 0,
		.rms_eps = 0,
	};
}

int synth_file_type(enum ggml_type type)
{
	switch (type) {
	case GGML_TYPE_F32:
		return 0; /* LLAMA_FTYPE_ALL_F32 */
	case GGML_TYPE_F16:
		return 1; /* LLAMA_FTYPE_MOSTLY_F16 */
	case GGML_TYPE_Q4_0:
		return 2; /* LLAMA_FTYPE_MOSTLY_Q4_0 */
	case GGML_TYPE_Q8_0:
		return 7; /* LLAMA_FTYPE_MOSTLY_Q8_0 */
	case GGML_TYPE_BF16:
		return 32; /* LLAMA_FTYPE_MOSTLY_BF16 */
	default:
		return -EINVAL;
	}
}

static void resolve(const struct synth_params *in, struct synth_params *out)
{
	*out = *in;
	if (!out->vocab)
		out->vocab = SYNTH_VOCAB_BASE;
	if (!out->name)
		out->name = SYNTH_DEFAULT_NAME;
	if (out->rope_base == 0.0f)
		out->rope_base = SYNTH_DEFAULT_ROPE_BASE;
	if (out->rms_eps == 0.0f)
		out->rms_eps = SYNTH_DEFAULT_RMS_EPS;
}

static int range(const char *what, uint64_t v, uint64_t max)
{
	if (v == 0 || v > max) {
		log_error("synth", "%s %llu is out of range [1, %llu]", what, (unsigned long long)v,
			  (unsigned long long)max);
		return -EINVAL;
	}
	return 0;
}

/* Elements of all tensors; p resolved and its dimensions within the caps. */
static uint64_t count_params(const struct synth_params *p)
{
	uint64_t dim = p->dim, head_dim = p->dim / p->n_heads;
	uint64_t kv_dim = head_dim * p->n_kv_heads;
	uint64_t layer = dim + dim * dim + 2 * dim * kv_dim + dim * dim + dim + 3 * dim * p->ffn;

	if (p->qwen2)
		layer += dim + 2 * kv_dim; /* q, k, v biases */

	return dim * p->vocab * (p->tied ? 1 : 2) + dim + layer * p->n_layers;
}

static int validate(const struct synth_params *p)
{
	uint32_t blck;

	if (range("dim", p->dim, SYNTH_MAX_DIM) || range("layers", p->n_layers, SYNTH_MAX_LAYERS) ||
	    range("heads", p->n_heads, SYNTH_MAX_HEADS) ||
	    range("kv-heads", p->n_kv_heads, SYNTH_MAX_HEADS) ||
	    range("ffn", p->ffn, SYNTH_MAX_FFN) || range("ctx", p->ctx, SYNTH_MAX_CTX) ||
	    range("vocab", p->vocab, SYNTH_MAX_VOCAB))
		return -EINVAL;
	if (p->vocab < SYNTH_VOCAB_BASE) {
		log_error("synth", "vocab %u is smaller than the %d byte-level tokens", p->vocab,
			  SYNTH_VOCAB_BASE);
		return -EINVAL;
	}
	if (p->dim % p->n_heads) {
		log_error("synth", "dim %u is not a multiple of heads %u", p->dim, p->n_heads);
		return -EINVAL;
	}
	if (p->dim / p->n_heads > SYNTH_MAX_HEAD_DIM) {
		log_error("synth", "head size dim/heads = %u/%u = %u is above %d", p->dim,
			  p->n_heads, p->dim / p->n_heads, SYNTH_MAX_HEAD_DIM);
		return -EINVAL;
	}
	if ((p->dim / p->n_heads) % 2) {
		log_error("synth", "head size dim/heads = %u/%u = %u is odd (RoPE rotates pairs)",
			  p->dim, p->n_heads, p->dim / p->n_heads);
		return -EINVAL;
	}
	if (p->n_kv_heads > p->n_heads || p->n_heads % p->n_kv_heads) {
		log_error("synth", "heads %u is not a multiple of kv-heads %u", p->n_heads,
			  p->n_kv_heads);
		return -EINVAL;
	}
	if (synth_file_type(p->type) < 0) {
		log_error("synth",
			  "weight type %s (%d) is not supported (F32, F16, BF16, Q8_0, Q4_0)",
			  ggml_type_name(p->type) ? ggml_type_name(p->type) : "?", (int)p->type);
		return -EINVAL;
	}
	blck = ggml_blck_size(p->type);
	if (p->dim % blck || p->ffn % blck) {
		log_error("synth", "type %s needs dim and ffn multiples of %u (dim %u, ffn %u)",
			  ggml_type_name(p->type), blck, p->dim, p->ffn);
		return -EINVAL;
	}
	if (!(p->rope_base > 0.0f) || !isfinite(p->rope_base)) {
		log_error("synth", "rope base %g must be positive and finite",
			  (double)p->rope_base);
		return -EINVAL;
	}
	if (!(p->rms_eps > 0.0f) || !(p->rms_eps < 1.0f)) {
		log_error("synth", "rms epsilon %g must be in (0, 1)", (double)p->rms_eps);
		return -EINVAL;
	}
	if (strlen(p->name) == 0 || strlen(p->name) > SYNTH_MAX_NAME) {
		log_error("synth", "name must be 1..%d bytes (got %zu)", SYNTH_MAX_NAME,
			  strlen(p->name));
		return -EINVAL;
	}
	if (count_params(p) > SYNTH_MAX_PARAMS) {
		log_error("synth", "%llu parameters is more than the limit of %llu",
			  (unsigned long long)count_params(p),
			  (unsigned long long)SYNTH_MAX_PARAMS);
		return -EINVAL;
	}
	return 0;
}

int synth_validate(const struct synth_params *p)
{
	struct synth_params r;

	resolve(p, &r);
	return validate(&r);
}

uint64_t synth_param_count(const struct synth_params *p)
{
	struct synth_params r;

	resolve(p, &r);
	return count_params(&r);
}

/* --- tensor list ----------------------------------------------------------- */

static struct synth_tensor *add_spec(struct synth_gen *g, const char *name, uint64_t ne0,
				     uint64_t ne1)
{
	struct synth_tensor *t = &g->tensors[g->n_tensors++];
	const bool norm = ne1 == 0;

	t->g = g;
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->norm = norm;
	t->n_dims = norm ? 1 : 2;
	t->ne[0] = ne0;
	t->ne[1] = norm ? 1 : ne1;
	t->type = norm ? GGML_TYPE_F32 : g->p.type;
	return t;
}

/* Fill g->tensors in file order from g->p (resolved and valid). */
static int build_specs(struct synth_gen *g)
{
	const struct synth_params *p = &g->p;
	const uint64_t dim = p->dim, kv_dim = (uint64_t)p->dim / p->n_heads * p->n_kv_heads;
	char name[GGUF_WRITER_MAX_NAME + 1];
	static const char *const attn[] = { "attn_q", "attn_k", "attn_v", "attn_output" };
	static const char *const ffn[] = { "ffn_gate", "ffn_up", "ffn_down" };

	g->tensors = calloc(3 + 12 * (size_t)p->n_layers, sizeof(*g->tensors));
	if (!g->tensors)
		return -ENOMEM;
	add_spec(g, "token_embd.weight", dim, p->vocab);
	add_spec(g, "output_norm.weight", dim, 0);
	if (!p->tied)
		add_spec(g, "output.weight", dim, p->vocab);
	for (uint32_t l = 0; l < p->n_layers; l++) {
		snprintf(name, sizeof(name), "blk.%u.attn_norm.weight", l);
		add_spec(g, name, dim, 0);
		for (int i = 0; i < 4; i++) {
			snprintf(name, sizeof(name), "blk.%u.%s.weight", l, attn[i]);
			add_spec(g, name, dim, i == 1 || i == 2 ? kv_dim : dim);
		}
		for (int i = 0; p->qwen2 && i < 3; i++) {
			snprintf(name, sizeof(name), "blk.%u.%s.bias", l, attn[i]);
			add_spec(g, name, i == 0 ? dim : kv_dim, 0)->bias = true;
		}
		snprintf(name, sizeof(name), "blk.%u.ffn_norm.weight", l);
		add_spec(g, name, dim, 0);
		for (int i = 0; i < 3; i++) {
			snprintf(name, sizeof(name), "blk.%u.%s.weight", l, ffn[i]);
			if (i == 2)
				add_spec(g, name, p->ffn, dim);
			else
				add_spec(g, name, dim, p->ffn);
		}
	}
	return 0;
}

static void gen_free(struct synth_gen *g)
{
	free(g->tensors);
	free(g->row);
}

/* Resolve, validate, list the tensors and allocate the row buffer. */
static int gen_init(struct synth_gen *g, const struct synth_params *p)
{
	int ret;

	memset(g, 0, sizeof(*g));
	resolve(p, &g->p);
	ret = validate(&g->p);
	if (ret)
		return ret;
	ret = build_specs(g);
	if (ret)
		goto free_gen;
	ret = -ENOMEM;
	g->row = malloc((size_t)(g->p.dim > g->p.ffn ? g->p.dim : g->p.ffn) * sizeof(float));
	if (!g->row)
		goto free_gen;
	return 0;

free_gen:
	gen_free(g);
	return ret;
}

/* --- weights --------------------------------------------------------------- */

/* xoshiro256** seeded through splitmix64 (Vigna's recommended seeding). */
struct prng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t prng_next(struct prng *r)
{
	uint64_t *s = r->s;
	const uint64_t out = rotl(s[1] * 5, 7) * 9;
	const uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* The stream of tensor name under seed: FNV-1a of the name mixed into the seed. */
static void prng_seed(struct prng *r, uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull, x = seed;

	for (const unsigned char *c = (const unsigned char *)name; *c; c++)
		h = (h ^ *c) * 0x100000001b3ull;
	x = splitmix64(&x) ^ h;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

/*
 * The next n values of t's stream: 24 random bits k give
 * (k - 2^23) * a / 2^23, uniform in [-a, a] (the top may round up to a);
 * norms add 1.
 */
static void gen_values(struct prng *r, const struct synth_tensor *t, float *dst, uint64_t n)
{
	const float a = t->bias	  ? 0.5f
			: t->norm ? SYNTH_NORM_SPREAD
				  : 1.0f / sqrtf((float)t->ne[0]);
	const float scale = a / 8388608.0f;
	const float bias = t->norm && !t->bias ? 1.0f : 0.0f;

	for (uint64_t i = 0; i < n; i++) {
		const int32_t k = (int32_t)(prng_next(r) >> 40) - 8388608;

		dst[i] = (float)k * scale + bias;
	}
}

/* One fp32 row of n elements into the row's bytes in type. */
static void convert_row(enum ggml_type type, const float *src, void *dst, uint64_t n)
{
	switch (type) {
	case GGML_TYPE_F16:
		quant_row_to_fp16(src, dst, n);
		break;
	case GGML_TYPE_BF16:
		quant_row_to_bf16(src, dst, n);
		break;
	case GGML_TYPE_Q8_0:
		quant_row_q8_0(src, dst, n); /* n % 32 == 0: validated */
		break;
	case GGML_TYPE_Q4_0:
		quant_row_q4_0(src, dst, n);
		break;
	default: /* F32 */
		memcpy(dst, src, n * sizeof(float));
		break;
	}
}

/* gguf_writer_fill_fn: regenerate tensor ctx into dst, row by row. */
static int fill_tensor(void *ctx, const struct gguf_writer_tensor *info, void *dst)
{
	const struct synth_tensor *t = ctx;
	const uint64_t row_bytes = info->size / t->ne[1];
	struct prng r;

	prng_seed(&r, t->g->p.seed, t->name);
	for (uint64_t row = 0; row < t->ne[1]; row++) {
		gen_values(&r, t, t->g->row, t->ne[0]);
		convert_row(t->type, t->g->row, (uint8_t *)dst + row * row_bytes, t->ne[0]);
	}
	return 0;
}

int synth_tensor_values(const struct synth_params *p, const char *name, float *dst, uint64_t n)
{
	struct synth_gen g;
	struct prng r;
	int ret;

	ret = gen_init(&g, p);
	if (ret)
		return ret;
	ret = -ENOENT;
	for (size_t i = 0; i < g.n_tensors; i++) {
		const struct synth_tensor *t = &g.tensors[i];

		if (strcmp(t->name, name) != 0)
			continue;
		if (n != t->ne[0] * t->ne[1]) {
			log_error("synth", "%s has %llu elements, not %llu", name,
				  (unsigned long long)(t->ne[0] * t->ne[1]), (unsigned long long)n);
			ret = -EINVAL;
			break;
		}
		prng_seed(&r, g.p.seed, t->name);
		gen_values(&r, t, dst, n);
		ret = 0;
		break;
	}
	gen_free(&g);
	return ret;
}

/* --- vocabulary ------------------------------------------------------------ */

int synth_vocab_token(uint32_t vocab, uint32_t id, char *piece, size_t piece_len, float *score,
		      int32_t *type)
{
	static const char *const special[] = { "<unk>", "<s>", "</s>" };
	int n;

	if (vocab < SYNTH_VOCAB_BASE || id >= vocab || piece_len < SYNTH_PIECE_MAX)
		return -EINVAL;
	if (id < 3) {
		n = snprintf(piece, piece_len, "%s", special[id]);
		*score = 0.0f;
		*type = id == 0 ? TOK_UNKNOWN : TOK_CONTROL;
	} else if (id < 3 + 256) {
		n = snprintf(piece, piece_len, "<0x%02X>", id - 3);
		*score = 0.0f;
		*type = TOK_BYTE;
	} else if (id == 259) {
		n = snprintf(piece, piece_len, "\xe2\x96\x81"); /* U+2581, SentencePiece's space */
		*score = 0.0f;
		*type = TOK_NORMAL;
	} else if (id < SYNTH_VOCAB_BASE) {
		n = snprintf(piece, piece_len, "%c", (char)(0x21 + (id - 260)));
		*score = -(float)(id - 259);
		*type = TOK_NORMAL;
	} else {
		n = snprintf(piece, piece_len, "<extra_%u>", id);
		*score = SYNTH_EXTRA_SCORE;
		*type = TOK_UNUSED;
	}
	return n > 0 && (size_t)n < piece_len ? 0 : -EINVAL;
}

/* tokenizer.ggml.tokens / scores / token_type for p->vocab ids. */
static int add_vocab(struct gguf_writer *w, uint32_t vocab)
{
	char *buf;
	const char **pieces;
	float *scores;
	int32_t *types;
	int ret = -ENOMEM;

	buf = malloc((size_t)vocab * SYNTH_PIECE_MAX);
	pieces = malloc((size_t)vocab * sizeof(*pieces));
	scores = malloc((size_t)vocab * sizeof(*scores));
	types = malloc((size_t)vocab * sizeof(*types));
	if (!buf || !pieces || !scores || !types)
		goto free_all;
	for (uint32_t id = 0; id < vocab; id++) {
		pieces[id] = buf + (size_t)id * SYNTH_PIECE_MAX;
		ret = synth_vocab_token(vocab, id, buf + (size_t)id * SYNTH_PIECE_MAX,
					SYNTH_PIECE_MAX, &scores[id], &types[id]);
		DUET_ASSERT(ret == 0);
	}
	ret = gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", pieces, vocab);
	if (!ret)
		ret = gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores,
					  vocab);
	if (!ret)
		ret = gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
					  vocab);
free_all:
	free(types);
	free(scores);
	free(pieces);
	free(buf);
	return ret;
}

/* --- the file -------------------------------------------------------------- */

/* Every key/value, in the order llama.cpp's converter writes them. */
static int add_metadata(struct gguf_writer *w, const struct synth_params *p)
{
	int ret = 0;

#define ADD(call)                     \
	do {                          \
		if (!ret)             \
			ret = (call); \
	} while (0)
	const char *arch = p->qwen2 ? "qwen2" : "llama";
	char k[64];
#define KEY(suffix) (snprintf(k, sizeof(k), "%s.%s", arch, suffix), k)
	ADD(gguf_writer_add_str(w, "general.architecture", arch));
	ADD(gguf_writer_add_str(w, "general.name", p->name));
	ADD(gguf_writer_set_alignment(w, GGUF_DEFAULT_ALIGNMENT));
	ADD(gguf_writer_add_u32(w, "general.file_type", (uint32_t)synth_file_type(p->type)));
	if (ggml_blck_size(p->type) > 1)
		ADD(gguf_writer_add_u32(w, "general.quantization_version", 2));
	ADD(gguf_writer_add_u32(w, KEY("context_length"), p->ctx));
	ADD(gguf_writer_add_u32(w, KEY("embedding_length"), p->dim));
	ADD(gguf_writer_add_u32(w, KEY("block_count"), p->n_layers));
	ADD(gguf_writer_add_u32(w, KEY("feed_forward_length"), p->ffn));
	ADD(gguf_writer_add_u32(w, KEY("attention.head_count"), p->n_heads));
	ADD(gguf_writer_add_u32(w, KEY("attention.head_count_kv"), p->n_kv_heads));
	ADD(gguf_writer_add_u32(w, KEY("rope.dimension_count"), p->dim / p->n_heads));
	ADD(gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), p->rms_eps));
	ADD(gguf_writer_add_f32(w, KEY("rope.freq_base"), p->rope_base));
	ADD(gguf_writer_add_u32(w, KEY("vocab_size"), p->vocab));
#undef KEY
	ADD(gguf_writer_add_str(w, "tokenizer.ggml.model", "llama"));
	ADD(add_vocab(w, p->vocab));
	ADD(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1));
	ADD(gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2));
	ADD(gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0));
	ADD(gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true));
	ADD(gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false));
#undef ADD
	return ret;
}

/* A writer holding the whole model of g, tensors as fill callbacks into g. */
static int build_writer(struct synth_gen *g, struct gguf_writer **out)
{
	struct gguf_writer *w;
	int ret;

	ret = gguf_writer_create(&w);
	if (ret)
		return ret;
	ret = add_metadata(w, &g->p);
	for (size_t i = 0; !ret && i < g->n_tensors; i++) {
		struct synth_tensor *t = &g->tensors[i];

		ret = gguf_writer_add_tensor_fill(w, t->name, t->type, t->n_dims, t->ne,
						  fill_tensor, t);
	}
	if (ret) {
		gguf_writer_destroy(w);
		return ret;
	}
	*out = w;
	return 0;
}

int synth_write_file(const struct synth_params *p, const char *path, uint64_t *file_size)
{
	struct gguf_writer *w;
	struct synth_gen g;
	int ret;

	ret = gen_init(&g, p);
	if (ret)
		return ret;
	ret = build_writer(&g, &w);
	if (ret)
		goto free_gen;
	ret = gguf_writer_write_file(w, path);
	if (!ret && file_size)
		*file_size = gguf_writer_file_size(w);
	gguf_writer_destroy(w);
free_gen:
	gen_free(&g);
	return ret;
}

int synth_write_mem(const struct synth_params *p, void **buf, size_t *len)
{
	struct gguf_writer *w;
	struct synth_gen g;
	int ret;

	*buf = NULL;
	*len = 0;
	ret = gen_init(&g, p);
	if (ret)
		return ret;
	ret = build_writer(&g, &w);
	if (ret)
		goto free_gen;
	ret = gguf_writer_write_mem(w, buf, len);
	gguf_writer_destroy(w);
free_gen:
	gen_free(&g);
	return ret;
}
