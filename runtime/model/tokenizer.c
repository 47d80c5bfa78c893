/* SPDX-License-Identifier: MIT */
/*
 * SPM and byte-level BPE tokenizers; see tokenizer.h.
 *
 * Written against llama.cpp's observable behaviour (src/llama-vocab.cpp,
 * src/unicode.cpp) and its tokenizer test vectors, not its code.  Where
 * llama.cpp runs a pre-tokenizer regex through std::regex on a "collapsed"
 * text (every non-ASCII code point replaced by one byte for its class), the
 * classes below follow that collapse: a non-ASCII code point that is not
 * whitespace, a number or punctuation counts as a letter (cL()).  Where it
 * runs a hand-written matcher (the GPT-2 and Llama 3 patterns), the true
 * Unicode categories are used (tL()).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/err.h"
#include "runtime/model/tokenizer.h"
#include "runtime/model/unicode.h"

#define TOK_MAX_EOG 16
#define TOK_MAX_TEXT (256u << 20) /* bytes of one tok_encode() text */
#define SPM_SPACE "\xe2\x96\x81"  /* U+2581 LOWER ONE EIGHTH BLOCK */
#define SPM_SPACE_LEN 3

enum tok_pre {
	PRE_NONE, /* SPM */
	PRE_DEFAULT,
	PRE_GPT2,
	PRE_LLAMA3,
	PRE_QWEN2,
	PRE_DEEPSEEK_LLM,
	PRE_DEEPSEEK_CODER,
	PRE_FALCON,
	PRE_STARCODER,
};

/* tokenizer.ggml.pre names and the pre-tokenizer each selects (llama.cpp's grouping). */
static const struct {
	const char *name;
	enum tok_pre pre;
} pre_names[] = {
	{ "default", PRE_DEFAULT },
	{ "gpt-2", PRE_GPT2 },
	{ "mpt", PRE_GPT2 },
	{ "olmo", PRE_GPT2 },
	{ "phi-2", PRE_GPT2 },
	{ "roberta-bpe", PRE_GPT2 },
	{ "llama3", PRE_LLAMA3 },
	{ "llama-v3", PRE_LLAMA3 },
	{ "llama-bpe", PRE_LLAMA3 },
	{ "dbrx", PRE_LLAMA3 },
	{ "smaug-bpe", PRE_LLAMA3 },
	{ "falcon3", PRE_LLAMA3 },
	{ "qwen2", PRE_QWEN2 },
	{ "deepseek-r1-qwen", PRE_QWEN2 },
	{ "deepseek-llm", PRE_DEEPSEEK_LLM },
	{ "deepseek-coder", PRE_DEEPSEEK_CODER },
	{ "falcon", PRE_FALCON },
	{ "starcoder", PRE_STARCODER },
	{ "refact", PRE_STARCODER },
	{ "smollm", PRE_STARCODER },
	{ "codeshell", PRE_STARCODER },
	{ "command-r", PRE_STARCODER },
};

struct tok_entry {
	const char *text; /* into the gguf mapping */
	uint32_t len;
	float score;
	uint8_t type; /* enum tok_type */
};

struct tok_merge {
	const char *left, *right;
	uint32_t nl, nr;
};

struct tokenizer {
	enum model_tokenizer kind;
	enum tok_pre pre;
	char pre_name[32];
	uint32_t n;
	struct tok_entry *tok; /* [n] */
	uint32_t *tok_hash;    /* open addressing: id + 1, 0 = empty */
	uint32_t tok_mask;
	struct tok_merge *merges; /* [n_merges], index = rank */
	uint32_t n_merges;
	uint32_t *merge_hash; /* rank + 1 */
	uint32_t merge_mask;
	int32_t *special; /* CONTROL / USER_DEFINED / UNKNOWN ids, longest piece first */
	uint32_t n_special;
	int32_t byte_tok[256]; /* SPM byte fallback, -1 = none */
	int32_t bos, eos, eot, unk, pad;
	int32_t eog[TOK_MAX_EOG];
	uint32_t n_eog;
	bool add_bos, add_eos, add_space_prefix;
	bool ignore_merges;    /* BPE: a whole pre-token in the vocabulary is taken as is */
	uint32_t max_piece;    /* bytes */
	uint16_t byte_cp[256]; /* GPT-2 alphabet: byte -> code point */
	int16_t cp_byte[512];  /* and back; -1 = not in the alphabet */
};

/* ---------------------------------------------------------------- hashing */

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

#define HASH_SEED 0xcbf29ce484222325ull

static uint64_t hash_pair(const char *a, size_t na, const char *b, size_t nb)
{
	/* The 0xff separator cannot occur in UTF-8, so (a, b) splits are distinct. */
	uint64_t h = hash_bytes(HASH_SEED, a, na);

	h = hash_bytes(h, "\xff", 1);
	return hash_bytes(h, b, nb);
}

static uint32_t table_size(uint32_t n)
{
	uint32_t sz = 16;

	while (sz < 2 * (uint64_t)n)
		sz <<= 1;
	return sz;
}

int32_t tok_lookup(const struct tokenizer *t, const char *s, size_t len)
{
	uint64_t h = hash_bytes(HASH_SEED, s, len);

	for (uint32_t i = (uint32_t)h & t->tok_mask;; i = (i + 1) & t->tok_mask) {
		uint32_t v = t->tok_hash[i];
		const struct tok_entry *e;

		if (!v)
			return -1;
		e = &t->tok[v - 1];
		if (e->len == len && memcmp(e->text, s, len) == 0)
			return (int32_t)(v - 1);
	}
}

/* Insert id; a duplicate piece is taken over by the later id (as llama.cpp does). */
static void tok_hash_insert(struct tokenizer *t, uint32_t id)
{
	const struct tok_entry *e = &t->tok[id];
	uint64_t h = hash_bytes(HASH_SEED, e->text, e->len);

	for (uint32_t i = (uint32_t)h & t->tok_mask;; i = (i + 1) & t->tok_mask) {
		uint32_t v = t->tok_hash[i];

		if (!v || (t->tok[v - 1].len == e->len &&
			   memcmp(t->tok[v - 1].text, e->text, e->len) == 0)) {
			t->tok_hash[i] = id + 1;
			return;
		}
	}
}

/* Rank of the merge (a, b), or -1. */
static int64_t merge_rank(const struct tokenizer *t, const char *a, size_t na, const char *b,
			  size_t nb)
{
	uint64_t h = hash_pair(a, na, b, nb);

	for (uint32_t i = (uint32_t)h & t->merge_mask;; i = (i + 1) & t->merge_mask) {
		uint32_t v = t->merge_hash[i];
		const struct tok_merge *m;

		if (!v)
			return -1;
		m = &t->merges[v - 1];
		if (m->nl == na && m->nr == nb && memcmp(m->left, a, na) == 0 &&
		    memcmp(m->right, b, nb) == 0)
			return v - 1;
	}
}

/* A repeated merge keeps its first (highest-priority) rank. */
static void merge_hash_insert(struct tokenizer *t, uint32_t rank)
{
	const struct tok_merge *m = &t->merges[rank];
	uint64_t h = hash_pair(m->left, m->nl, m->right, m->nr);

	for (uint32_t i = (uint32_t)h & t->merge_mask;; i = (i + 1) & t->merge_mask) {
		uint32_t v = t->merge_hash[i];
		const struct tok_merge *o;

		if (!v) {
			t->merge_hash[i] = rank + 1;
			return;
		}
		o = &t->merges[v - 1];
		if (o->nl == m->nl && o->nr == m->nr && memcmp(o->left, m->left, m->nl) == 0 &&
		    memcmp(o->right, m->right, m->nr) == 0)
			return;
	}
}

/* ------------------------------------------------------------ loading */

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* A per-token array: absent (*kv = -1) unless required, else elem-typed and n long. */
static int token_array(const struct gguf_file *f, const char *key, enum gguf_type elem,
		       bool required, uint32_t n, int64_t *kv, char *err, size_t errlen)
{
	char msg[256] = "";
	uint64_t len;
	int ret = gguf_get_arr(f, key, elem, &len, msg, sizeof(msg));

	*kv = -1;
	if (ret == -ENOENT && !required)
		return 0;
	if (ret == -ENOENT)
		return fail(err, errlen, -DUET_EMODELKEY, "required key '%s' is missing", key);
	if (ret)
		return fail(err, errlen, ret, "%s", msg);
	if (len != n)
		return fail(err, errlen, -DUET_EMODELKEY,
			    "'%s' has %llu entries but there are %u tokens", key,
			    (unsigned long long)len, n);
	*kv = gguf_find_key(f, key);
	return 0;
}

static int opt_id(const struct gguf_file *f, const char *key, uint32_t n, int32_t *out, char *err,
		  size_t errlen)
{
	char msg[256] = "";
	uint32_t v;
	int ret = gguf_get_u32(f, key, &v, msg, sizeof(msg));

	*out = -1;
	if (ret == -ENOENT)
		return 0;
	if (ret)
		return fail(err, errlen, ret, "%s", msg);
	if (v >= n)
		return fail(err, errlen, -DUET_EHPARAM,
			    "'%s' = %u is not below the vocabulary size %u", key, v, n);
	*out = (int32_t)v;
	return 0;
}

static int opt_bool(const struct gguf_file *f, const char *key, bool def, bool *out, char *err,
		    size_t errlen)
{
	char msg[256] = "";
	int ret = gguf_get_bool(f, key, out, msg, sizeof(msg));

	if (ret == -ENOENT) {
		*out = def;
		return 0;
	}
	return ret ? fail(err, errlen, ret, "%s", msg) : 0;
}

/* GPT-2's reversible byte <-> printable code point mapping. */
static void init_byte_alphabet(struct tokenizer *t)
{
	uint32_t next = 256;

	for (int i = 0; i < 512; i++)
		t->cp_byte[i] = -1;
	for (int b = 0; b < 256; b++) {
		bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;

		t->byte_cp[b] = (uint16_t)(printable ? (uint32_t)b : next++);
		t->cp_byte[t->byte_cp[b]] = (int16_t)b;
	}
}

static int cmp_special(const void *a, const void *b, void *arg)
{
	const struct tokenizer *t = arg;
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

	if (t->tok[x].len != t->tok[y].len)
		return t->tok[x].len > t->tok[y].len ? -1 : 1;
	return x < y ? -1 : x > y;
}

static bool piece_is(const struct tok_entry *e, const char *s)
{
	size_t n = strlen(s);

	return e->len == n && memcmp(e->text, s, n) == 0;
}

static void init_specials(struct tokenizer *t)
{
	static const char *const eog_names[] = {
		"<|eot_id|>", "<|eom_id|>",	 "<|im_end|>",	  "<|endoftext|>",
		"<|end|>",    "<|end_of_text|>", "<end_of_turn>", "<|return|>",
	};
	char name[8];

	t->n_special = 0;
	for (uint32_t i = 0; i < t->n; i++) {
		uint8_t ty = t->tok[i].type;

		if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED ||
		     ty == TOK_TYPE_UNKNOWN) &&
		    t->tok[i].len > 0)
			t->special[t->n_special++] = (int32_t)i;
	}
	qsort_r(t->special, t->n_special, sizeof(*t->special), cmp_special, t);

	t->n_eog = 0;
	if (t->eos >= 0)
		t->eog[t->n_eog++] = t->eos;
	if (t->eot >= 0 && t->eot != t->eos)
		t->eog[t->n_eog++] = t->eot;
	for (uint32_t i = 0; i < t->n_special && t->n_eog < TOK_MAX_EOG; i++) {
		int32_t id = t->special[i];

		if (t->tok[id].type != TOK_TYPE_CONTROL || id == t->eos || id == t->eot)
			continue;
		for (size_t k = 0; k < sizeof(eog_names) / sizeof(eog_names[0]); k++)
			if (piece_is(&t->tok[id], eog_names[k]))
				t->eog[t->n_eog++] = id;
	}

	for (int b = 0; b < 256; b++) {
		snprintf(name, sizeof(name), "<0x%02X>", b);
		t->byte_tok[b] = tok_lookup(t, name, 6);
		if (t->byte_tok[b] < 0) {
			name[0] = (char)b;
			t->byte_tok[b] = tok_lookup(t, name, 1);
		}
	}
}

static int load_merges(const struct gguf_file *f, struct tokenizer *t, char *err, size_t errlen)
{
	char msg[256] = "";
	uint64_t n;
	int64_t kv;
	int ret = gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &n, msg, sizeof(msg));

	if (ret == -ENOENT)
		return fail(err, errlen, -DUET_EMODELKEY,
			    "BPE vocabulary without 'tokenizer.ggml.merges'");
	if (ret)
		return fail(err, errlen, ret, "%s", msg);
	if (n > MODEL_MAX_VOCAB * 4ull)
		return fail(err, errlen, -DUET_EHPARAM, "%llu merges is out of range",
			    (unsigned long long)n);
	kv = gguf_find_key(f, "tokenizer.ggml.merges");
	t->n_merges = (uint32_t)n;
	t->merges = calloc(n ? n : 1, sizeof(*t->merges));
	t->merge_mask = table_size(t->n_merges) - 1;
	t->merge_hash = calloc((size_t)t->merge_mask + 1, sizeof(*t->merge_hash));
	if (!t->merges || !t->merge_hash)
		return fail(err, errlen, -ENOMEM, "out of memory for %u merges", t->n_merges);
	for (uint32_t i = 0; i < t->n_merges; i++) {
		const char *s, *sp;
		size_t len;

		ret = gguf_arr_str(f, (uint64_t)kv, i, &s, &len);
		if (ret)
			return fail(err, errlen, -DUET_EMODELKEY,
				    "tokenizer.ggml.merges[%u] unreadable", i);
		/* "left right": the separator is the first space after the first byte. */
		sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
		if (!sp || sp + 1 == s + len)
			return fail(
				err, errlen, -DUET_EMODELKEY,
				"tokenizer.ggml.merges[%u] = '%.*s' is not of the form 'left right'",
				i, (int)(len > 64 ? 64 : len), s);
		t->merges[i] = (struct tok_merge){ .left = s,
						   .nl = (uint32_t)(sp - s),
						   .right = sp + 1,
						   .nr = (uint32_t)(s + len - sp - 1) };
		merge_hash_insert(t, i);
	}
	return 0;
}

static int load(const struct gguf_file *f, struct tokenizer *t, char *err, size_t errlen)
{
	char msg[256] = "";
	const char *s;
	size_t len;
	uint64_t n;
	int64_t tokens_kv, scores_kv, types_kv;
	int ret;

	ret = gguf_get_str(f, "tokenizer.ggml.model", &s, &len, msg, sizeof(msg));
	if (ret == -ENOENT)
		return fail(err, errlen, -DUET_EMODELKEY,
			    "required key 'tokenizer.ggml.model' is missing");
	if (ret)
		return fail(err, errlen, ret, "%s", msg);
	if (len == 5 && memcmp(s, "llama", 5) == 0)
		t->kind = MODEL_TOK_SPM;
	else if (len == 4 && memcmp(s, "gpt2", 4) == 0)
		t->kind = MODEL_TOK_BPE;
	else
		return fail(err, errlen, -DUET_EARCH,
			    "tokenizer '%.*s' is not supported (supported: llama, gpt2)",
			    (int)(len > 32 ? 32 : len), s);

	t->pre = PRE_NONE;
	if (t->kind == MODEL_TOK_BPE) {
		ret = gguf_get_str(f, "tokenizer.ggml.pre", &s, &len, msg, sizeof(msg));
		if (ret == -ENOENT) {
			s = "default";
			len = 7;
		} else if (ret) {
			return fail(err, errlen, ret, "%s", msg);
		}
		for (size_t i = 0; i < sizeof(pre_names) / sizeof(pre_names[0]); i++)
			if (strlen(pre_names[i].name) == len &&
			    memcmp(pre_names[i].name, s, len) == 0)
				t->pre = pre_names[i].pre;
		if (t->pre == PRE_NONE)
			return fail(err, errlen, -DUET_EARCH,
				    "pre-tokenizer '%.*s' is not supported",
				    (int)(len > 32 ? 32 : len), s);
		snprintf(t->pre_name, sizeof(t->pre_name), "%.*s", (int)len, s);
		t->ignore_merges = t->pre == PRE_LLAMA3;
	}

	ret = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &n, msg, sizeof(msg));
	if (ret == -ENOENT)
		return fail(err, errlen, -DUET_EMODELKEY,
			    "required key 'tokenizer.ggml.tokens' is missing");
	if (ret)
		return fail(err, errlen, ret, "%s", msg);
	if (n == 0 || n > MODEL_MAX_VOCAB)
		return fail(err, errlen, -DUET_EHPARAM,
			    "vocabulary of %llu tokens is out of range [1, %u]",
			    (unsigned long long)n, MODEL_MAX_VOCAB);
	t->n = (uint32_t)n;
	tokens_kv = gguf_find_key(f, "tokenizer.ggml.tokens");
	if ((ret = token_array(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32,
			       t->kind == MODEL_TOK_SPM, t->n, &scores_kv, err, errlen)) ||
	    (ret = token_array(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, false, t->n,
			       &types_kv, err, errlen)))
		return ret;

	t->tok = calloc(t->n, sizeof(*t->tok));
	t->special = calloc(t->n, sizeof(*t->special));
	t->tok_mask = table_size(t->n) - 1;
	t->tok_hash = calloc((size_t)t->tok_mask + 1, sizeof(*t->tok_hash));
	if (!t->tok || !t->special || !t->tok_hash)
		return fail(err, errlen, -ENOMEM, "out of memory for %u tokens", t->n);
	for (uint32_t i = 0; i < t->n; i++) {
		struct tok_entry *e = &t->tok[i];
		int64_t ty = TOK_TYPE_NORMAL;

		if (gguf_arr_str(f, (uint64_t)tokens_kv, i, &s, &len))
			return fail(err, errlen, -DUET_EMODELKEY,
				    "tokenizer.ggml.tokens[%u] unreadable", i);
		e->text = s;
		e->len = (uint32_t)len;
		e->score =
			scores_kv >= 0 ? (float)gguf_arr_get_float(f, (uint64_t)scores_kv, i) : 0;
		if (types_kv >= 0)
			ty = gguf_arr_get_int(f, (uint64_t)types_kv, i);
		if (ty < TOK_TYPE_UNDEFINED || ty > TOK_TYPE_BYTE)
			return fail(
				err, errlen, -DUET_EMODELKEY,
				"tokenizer.ggml.token_type[%u] = %lld is not a token type (0..6)",
				i, (long long)ty);
		e->type = (uint8_t)ty;
		if (e->len > t->max_piece)
			t->max_piece = e->len;
		tok_hash_insert(t, i);
	}

	if ((ret = opt_id(f, "tokenizer.ggml.bos_token_id", t->n, &t->bos, err, errlen)) ||
	    (ret = opt_id(f, "tokenizer.ggml.eos_token_id", t->n, &t->eos, err, errlen)) ||
	    (ret = opt_id(f, "tokenizer.ggml.eot_token_id", t->n, &t->eot, err, errlen)) ||
	    (ret = opt_id(f, "tokenizer.ggml.unknown_token_id", t->n, &t->unk, err, errlen)) ||
	    (ret = opt_id(f, "tokenizer.ggml.padding_token_id", t->n, &t->pad, err, errlen)) ||
	    (ret = opt_bool(f, "tokenizer.ggml.add_bos_token", t->kind == MODEL_TOK_SPM,
			    &t->add_bos, err, errlen)) ||
	    (ret = opt_bool(f, "tokenizer.ggml.add_eos_token", false, &t->add_eos, err, errlen)) ||
	    (ret = opt_bool(f, "tokenizer.ggml.add_space_prefix", t->kind == MODEL_TOK_SPM,
			    &t->add_space_prefix, err, errlen)))
		return ret;
	/* Without unknown_token_id, the first UNKNOWN-type token (SPM <unk>) stands in. */
	for (uint32_t i = 0; i < t->n && t->unk < 0; i++)
		if (t->tok[i].type == TOK_TYPE_UNKNOWN)
			t->unk = (int32_t)i;
	if (t->kind == MODEL_TOK_BPE) {
		t->add_space_prefix = false;
		ret = load_merges(f, t, err, errlen);
		if (ret)
			return ret;
	}
	init_byte_alphabet(t);
	init_specials(t);
	return 0;
}

int tok_create_from_gguf(const struct gguf_file *f, struct tokenizer **out, char *err,
			 size_t errlen)
{
	struct tokenizer *t;
	int ret;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	t = calloc(1, sizeof(*t));
	if (!t)
		return fail(err, errlen, -ENOMEM, "out of memory");
	ret = load(f, t, err, errlen);
	if (ret) {
		tok_destroy(t);
		return ret;
	}
	*out = t;
	return 0;
}

int tok_create(const struct gguf_file *f, const struct model_desc *m, struct tokenizer **out,
	       char *err, size_t errlen)
{
	int ret = tok_create_from_gguf(f, out, err, errlen);

	if (ret)
		return ret;
	if (tok_n_vocab(*out) != m->vocab.n_tokens || tok_kind(*out) != m->vocab.kind) {
		tok_destroy(*out);
		*out = NULL;
		return fail(err, errlen, -DUET_EHPARAM,
			    "model description does not match the file's vocabulary");
	}
	return 0;
}

void tok_destroy(struct tokenizer *t)
{
	if (!t)
		return;
	free(t->merge_hash);
	free(t->merges);
	free(t->special);
	free(t->tok_hash);
	free(t->tok);
	free(t);
}

/* ----------------------------------------------------------- accessors */

int tok_piece(const struct tokenizer *t, int32_t id, const char **ptr, size_t *len)
{
	if (id < 0 || (uint32_t)id >= t->n)
		return -EINVAL;
	*ptr = t->tok[id].text;
	*len = t->tok[id].len;
	return 0;
}

enum tok_type tok_token_type(const struct tokenizer *t, int32_t id)
{
	if (id < 0 || (uint32_t)id >= t->n)
		return TOK_TYPE_UNDEFINED;
	return (enum tok_type)t->tok[id].type;
}

uint32_t tok_n_vocab(const struct tokenizer *t)
{
	return t->n;
}

enum model_tokenizer tok_kind(const struct tokenizer *t)
{
	return t->kind;
}

const char *tok_pre_name(const struct tokenizer *t)
{
	return t->pre_name;
}

int32_t tok_bos(const struct tokenizer *t)
{
	return t->bos;
}

int32_t tok_eos(const struct tokenizer *t)
{
	return t->eos;
}

int32_t tok_eot(const struct tokenizer *t)
{
	return t->eot;
}

bool tok_add_bos(const struct tokenizer *t)
{
	return t->add_bos;
}

bool tok_add_space_prefix(const struct tokenizer *t)
{
	return t->add_space_prefix;
}

bool tok_is_eog(const struct tokenizer *t, int32_t id)
{
	for (uint32_t i = 0; i < t->n_eog; i++)
		if (t->eog[i] == id)
			return true;
	return false;
}

/* -------------------------------------------------------- work buffers */

struct out_ids {
	int32_t *ids;
	size_t max, n;
};

static void emit(struct out_ids *o, int32_t id)
{
	if (o->n < o->max)
		o->ids[o->n] = id;
	o->n++;
}

/* A growable array; grow() keeps *p valid on failure. */
static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t nc = *cap ? *cap : 64;
	void *np;

	if (need <= *cap)
		return 0;
	while (nc < need)
		nc *= 2;
	np = realloc(*p, nc * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = nc;
	return 0;
}

struct sym {
	uint32_t off, n; /* bytes in the work string; n = 0 once merged away */
	int32_t prev, next;
};

struct bigram {
	double prio; /* lower first: -score (SPM) or rank (BPE) */
	uint32_t left, right, size;
};

struct work {
	struct sym *sym;
	size_t sym_cap;
	struct bigram *heap;
	size_t heap_n, heap_cap;
	char *buf; /* the string being merged */
	size_t buf_cap;
	uint32_t *cp; /* code points (BPE) */
	size_t cp_cap;
	size_t *bnd, *bnd2; /* pre-token boundaries (BPE) */
	size_t bnd_cap, bnd2_cap, n_bnd;
};

static void work_free(struct work *w)
{
	free(w->sym);
	free(w->heap);
	free(w->buf);
	free(w->cp);
	free(w->bnd);
	free(w->bnd2);
}

static bool bigram_before(const struct bigram *a, const struct bigram *b)
{
	return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(struct work *w, struct bigram bg)
{
	size_t i;

	if (grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof(*w->heap)))
		return -ENOMEM;
	i = w->heap_n++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!bigram_before(&bg, &w->heap[parent]))
			break;
		w->heap[i] = w->heap[parent];
		i = parent;
	}
	w->heap[i] = bg;
	return 0;
}

static struct bigram heap_pop(struct work *w)
{
	struct bigram top = w->heap[0], last = w->heap[--w->heap_n];
	size_t i = 0, n = w->heap_n;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c]))
			c++;
		if (!bigram_before(&w->heap[c], &last))
			break;
		w->heap[i] = w->heap[c];
		i = c;
	}
	if (n)
		w->heap[i] = last;
	return top;
}

/* Symbols of w->buf[0..len): one per character (clen gives its length). */
static int split_symbols(struct work *w, size_t len, size_t (*clen)(const uint8_t *, size_t),
			 size_t *n_sym)
{
	size_t n = 0;

	for (size_t off = 0; off < len; n++) {
		size_t l = clen((const uint8_t *)w->buf + off, len - off);

		if (grow((void **)&w->sym, &w->sym_cap, n + 1, sizeof(*w->sym)))
			return -ENOMEM;
		w->sym[n] = (struct sym){ .off = (uint32_t)off,
					  .n = (uint32_t)l,
					  .prev = (int32_t)n - 1,
					  .next = off + l < len ? (int32_t)n + 1 : -1 };
		off += l;
	}
	*n_sym = n;
	return 0;
}

/* --------------------------------------------------------------- SPM */

/* llama.cpp's SPM character split: length from the lead byte's high nibble only. */
static size_t spm_char_len(const uint8_t *s, size_t len)
{
	static const uint8_t lens[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
	size_t l = lens[s[0] >> 4];

	return l < len ? l : len;
}

static int spm_try_bigram(const struct tokenizer *t, struct work *w, int32_t left, int32_t right)
{
	const struct sym *a, *b;
	int32_t id;

	if (left < 0 || right < 0)
		return 0;
	a = &w->sym[left];
	b = &w->sym[right];
	id = tok_lookup(t, w->buf + a->off, a->n + b->n);
	if (id < 0)
		return 0;
	return heap_push(w, (struct bigram){ .prio = -(double)t->tok[id].score,
					     .left = (uint32_t)left,
					     .right = (uint32_t)right,
					     .size = a->n + b->n });
}

static void spm_emit_symbol(const struct tokenizer *t, const struct work *w, const struct sym *s,
			    struct out_ids *o)
{
	int32_t id = tok_lookup(t, w->buf + s->off, s->n);

	if (id >= 0) {
		emit(o, id);
		return;
	}
	/* Merged symbols are always in the vocabulary: only single characters get here. */
	for (uint32_t i = 0; i < s->n; i++) {
		int32_t b = t->byte_tok[(uint8_t)w->buf[s->off + i]];

		if (b >= 0)
			emit(o, b);
		else if (t->unk >= 0)
			emit(o, t->unk);
	}
}

/* SentencePiece merge of text (spaces not yet escaped), with the space prefix if asked. */
static int spm_encode(const struct tokenizer *t, struct work *w, const char *text, size_t len,
		      bool prefix, struct out_ids *o)
{
	size_t n = 0, n_sym;
	int ret;

	if (grow((void **)&w->buf, &w->buf_cap, (len + 1) * SPM_SPACE_LEN, 1))
		return -ENOMEM;
	if (prefix) {
		memcpy(w->buf, SPM_SPACE, SPM_SPACE_LEN);
		n = SPM_SPACE_LEN;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(w->buf + n, SPM_SPACE, SPM_SPACE_LEN);
			n += SPM_SPACE_LEN;
		} else {
			w->buf[n++] = text[i];
		}
	}
	ret = split_symbols(w, n, spm_char_len, &n_sym);
	if (ret)
		return ret;
	w->heap_n = 0;
	for (size_t i = 1; i < n_sym; i++)
		if ((ret = spm_try_bigram(t, w, (int32_t)i - 1, (int32_t)i)))
			return ret;
	while (w->heap_n) {
		struct bigram bg = heap_pop(w);
		struct sym *a = &w->sym[bg.left], *b = &w->sym[bg.right];

		if (a->n == 0 || b->n == 0 || a->n + b->n != bg.size)
			continue; /* stale: one side was merged since */
		a->n += b->n;
		b->n = 0;
		a->next = b->next;
		if (b->next >= 0)
			w->sym[b->next].prev = (int32_t)bg.left;
		if ((ret = spm_try_bigram(t, w, a->prev, (int32_t)bg.left)) ||
		    (ret = spm_try_bigram(t, w, (int32_t)bg.left, a->next)))
			return ret;
	}
	for (int32_t i = n_sym ? 0 : -1; i >= 0; i = w->sym[i].next)
		spm_emit_symbol(t, w, &w->sym[i], o);
	return 0;
}

/* ------------------------------------------------- BPE pre-tokenizers */

/* True Unicode classes (llama.cpp's hand-written GPT-2 / Llama 3 matchers). */
static bool tL(uint32_t c)
{
	return uni_category(c) == UNI_LETTER;
}

static bool tN(uint32_t c)
{
	return uni_category(c) == UNI_NUMBER;
}

static bool sp(uint32_t c)
{
	return uni_is_space(c);
}

static bool is_nl(uint32_t c)
{
	return c == '\r' || c == '\n';
}

/* Collapsed classes (llama.cpp's std::regex path): see the file comment. */
static bool cL(uint32_t c)
{
	enum uni_cat k;

	if (c < 0x80)
		return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
	if (sp(c))
		return false;
	k = uni_category(c);
	return k != UNI_NUMBER && k != UNI_PUNCT;
}

static bool cN(uint32_t c)
{
	if (c < 0x80)
		return c >= '0' && c <= '9';
	return !sp(c) && uni_category(c) == UNI_NUMBER;
}

static bool cP(uint32_t c)
{
	if (c < 0x80)
		return c > ' ' && c < 0x7F && uni_category(c) == UNI_PUNCT;
	return !sp(c) && uni_category(c) == UNI_PUNCT;
}

struct cp_range {
	uint32_t lo, hi;
};

static bool in_ranges(uint32_t c, const struct cp_range *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (c >= r[i].lo && c <= r[i].hi)
			return true;
	return false;
}

#define N_RANGES(a) (sizeof(a) / sizeof((a)[0]))

/* deepseek-llm's explicit letter class (from its tokenizer.json). */
static const struct cp_range ds_letters[] = {
	{ 0x41, 0x5A },	      { 0x61, 0x7A },	    { 0xB5, 0xB5 },	  { 0xC0, 0xD6 },
	{ 0xD8, 0xF6 },	      { 0xF8, 0x1BA },	    { 0x1BC, 0x1BF },	  { 0x1C4, 0x293 },
	{ 0x295, 0x2AF },     { 0x370, 0x373 },	    { 0x376, 0x377 },	  { 0x37B, 0x37D },
	{ 0x37F, 0x37F },     { 0x386, 0x386 },	    { 0x388, 0x38A },	  { 0x38C, 0x38C },
	{ 0x38E, 0x3A1 },     { 0x3A3, 0x3F5 },	    { 0x3F7, 0x481 },	  { 0x48A, 0x52F },
	{ 0x531, 0x556 },     { 0x10A0, 0x10C5 },   { 0x13A0, 0x13F5 },	  { 0x13F8, 0x13FD },
	{ 0x1C90, 0x1CBA },   { 0x1CBD, 0x1CBF },   { 0x1D00, 0x1D2B },	  { 0x1D6B, 0x1D77 },
	{ 0x1D79, 0x1D9A },   { 0x1E00, 0x1F15 },   { 0x1F18, 0x1F1D },	  { 0x1F20, 0x1F45 },
	{ 0x1F48, 0x1F4D },   { 0x1F50, 0x1F57 },   { 0x1F59, 0x1F59 },	  { 0x1F5B, 0x1F5B },
	{ 0x1F5D, 0x1F5D },   { 0x1F5F, 0x1F7D },   { 0x1F80, 0x1FB4 },	  { 0x1FB6, 0x1FBC },
	{ 0x1FBE, 0x1FBE },   { 0x1FC2, 0x1FC4 },   { 0x1FC6, 0x1FCC },	  { 0x1FD0, 0x1FD3 },
	{ 0x1FD6, 0x1FDB },   { 0x1FE0, 0x1FEC },   { 0x1FF2, 0x1FF4 },	  { 0x1FF6, 0x1FFC },
	{ 0x2102, 0x2102 },   { 0x2107, 0x2107 },   { 0x210A, 0x2113 },	  { 0x2115, 0x2115 },
	{ 0x2119, 0x211D },   { 0x2124, 0x2124 },   { 0x2126, 0x2126 },	  { 0x2128, 0x2128 },
	{ 0x212A, 0x212D },   { 0x212F, 0x2134 },   { 0x2139, 0x2139 },	  { 0x213C, 0x213F },
	{ 0x2145, 0x2149 },   { 0x214E, 0x214E },   { 0x2183, 0x2184 },	  { 0x2C00, 0x2C7B },
	{ 0x2C7E, 0x2CE4 },   { 0x2CEB, 0x2CEE },   { 0x2CF2, 0x2CF3 },	  { 0xA640, 0xA66D },
	{ 0xA680, 0xA69B },   { 0xA722, 0xA76F },   { 0xA771, 0xA787 },	  { 0xA78B, 0xA78E },
	{ 0xAB70, 0xABBF },   { 0xFB00, 0xFB06 },   { 0xFB13, 0xFB17 },	  { 0xFF21, 0xFF3A },
	{ 0xFF41, 0xFF5A },   { 0x10400, 0x1044F }, { 0x104B0, 0x104D3 }, { 0x104D8, 0x104FB },
	{ 0x10C80, 0x10CB2 }, { 0x10CC0, 0x10CF2 }, { 0x118A0, 0x118DF }, { 0x1E900, 0x1E943 },
};

/* deepseek-llm's punctuation class: ASCII !-/ :-~, fullwidth forms, quotes, CJK marks. */
static const struct cp_range ds_punct[] = {
	{ 0x21, 0x2F },	    { 0x3A, 0x7E },	{ 0xFF01, 0xFF0F },
	{ 0xFF1A, 0xFF5E }, { 0x2018, 0x201F }, { 0x3000, 0x3002 },
};

/* CJK ideographs, U+0800..U+4E00 and Hangul (deepseek's [一-龥ࠀ-一가-퟿]). */
static const struct cp_range ds_cjk[] = {
	{ 0x4E00, 0x9FA5 },
	{ 0x800, 0x4E00 },
	{ 0xAC00, 0xD7FF },
};

/*
 * A matcher tries one alternative set at cp[pos] (pos < end, the end of the
 * current fragment) and returns the match length, or 0 with *skip set to how
 * many positions from pos are known not to match (at least 1).
 */
typedef size_t (*match_fn)(const uint32_t *cp, size_t pos, size_t end, size_t *skip);

static size_t run(const uint32_t *cp, size_t pos, size_t end, bool (*cls)(uint32_t))
{
	size_t r = pos;

	while (r < end && cls(cp[r]))
		r++;
	return r - pos;
}

static bool not_sLN(uint32_t c)
{
	return !sp(c) && !tL(c) && !tN(c);
}

static bool not_sLN_c(uint32_t c)
{
	return !sp(c) && !cL(c) && !cN(c);
}

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive. */
static size_t contraction(const uint32_t *cp, size_t pos, size_t end, bool icase)
{
	uint32_t a, b;

	if (cp[pos] != '\'' || pos + 1 >= end)
		return 0;
	a = icase ? uni_ascii_lower(cp[pos + 1]) : cp[pos + 1];
	if (a == 's' || a == 't' || a == 'm' || a == 'd')
		return 2;
	if (pos + 2 >= end)
		return 0;
	b = icase ? uni_ascii_lower(cp[pos + 2]) : cp[pos + 2];
	if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
		return 3;
	return 0;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t m_gpt2(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	size_t n, off = 0, r;
	uint32_t c;

	(void)skip;
	if ((n = contraction(cp, pos, end, false)))
		return n;
	if (cp[pos] == ' ' && pos + 1 < end && !sp(cp[pos + 1]))
		off = 1;
	c = cp[pos + off];
	if (tL(c))
		return off + run(cp, pos + off, end, tL);
	if (tN(c))
		return off + run(cp, pos + off, end, tN);
	if (!sp(c))
		return off + run(cp, pos + off, end, not_sLN);
	r = pos + run(cp, pos, end, sp);
	if (r - pos > 1 && r < end)
		return r - pos - 1;
	return r - pos;
}

/*
 * Llama 3 (digits 3, true classes) and Qwen2 (digits 1, collapsed classes):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 */
static size_t m_llama3_like(const uint32_t *cp, size_t pos, size_t end, size_t max_digits,
			    bool (*L)(uint32_t), bool (*N)(uint32_t), bool (*notSLN)(uint32_t))
{
	size_t n, off = 0, r, last_nl;
	uint32_t c = cp[pos];

	if ((n = contraction(cp, pos, end, true)))
		return n;
	if (!is_nl(c) && !L(c) && !N(c) && pos + 1 < end && L(cp[pos + 1]))
		return 1 + run(cp, pos + 1, end, L);
	if (L(c))
		return run(cp, pos, end, L);
	if (N(c)) {
		n = run(cp, pos, end, N);
		return n < max_digits ? n : max_digits;
	}
	if (c == ' ' && pos + 1 < end && notSLN(cp[pos + 1]))
		off = 1;
	if (notSLN(cp[pos + off])) {
		r = pos + off + run(cp, pos + off, end, notSLN);
		while (r < end && is_nl(cp[r]))
			r++;
		return r - pos;
	}
	/* Whitespace from here on. */
	r = pos;
	last_nl = SIZE_MAX;
	while (r < end && sp(cp[r])) {
		if (is_nl(cp[r]))
			last_nl = r;
		r++;
	}
	if (last_nl != SIZE_MAX)
		return last_nl + 1 - pos;
	if (r - pos > 1 && r < end)
		return r - pos - 1;
	return r - pos;
}

static size_t m_llama3(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return m_llama3_like(cp, pos, end, 3, tL, tN, not_sLN);
}

static size_t m_qwen2(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return m_llama3_like(cp, pos, end, 1, cL, cN, not_sLN_c);
}

/* [\r\n] */
static size_t m_newline(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)end;
	(void)skip;
	return is_nl(cp[pos]);
}

/* \s?X+ for a class X. */
static size_t opt_space_run(const uint32_t *cp, size_t pos, size_t end, bool (*cls)(uint32_t))
{
	if (cls(cp[pos]))
		return run(cp, pos, end, cls);
	if (sp(cp[pos]) && pos + 1 < end && cls(cp[pos + 1]))
		return 1 + run(cp, pos + 1, end, cls);
	return 0;
}

static size_t m_space_letters_c(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return opt_space_run(cp, pos, end, cL);
}

static size_t m_space_punct_c(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return opt_space_run(cp, pos, end, cP);
}

static bool ds_letter(uint32_t c)
{
	return in_ranges(c, ds_letters, N_RANGES(ds_letters));
}

static bool ds_punc(uint32_t c)
{
	return in_ranges(c, ds_punct, N_RANGES(ds_punct));
}

static bool ds_cjk_cp(uint32_t c)
{
	return in_ranges(c, ds_cjk, N_RANGES(ds_cjk));
}

static size_t m_ds_letters(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return opt_space_run(cp, pos, end, ds_letter);
}

static size_t m_ds_punct(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return opt_space_run(cp, pos, end, ds_punc);
}

static size_t m_ds_cjk(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return run(cp, pos, end, ds_cjk_cp);
}

/* \s+$ (end of the fragment). */
static size_t m_trailing_space(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	size_t n = run(cp, pos, end, sp);

	if (n && pos + n == end)
		return n;
	*skip = n ? n : 1;
	return 0;
}

/* \p{N} and \p{N}+ (collapsed). */
static size_t m_digit_c(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)end;
	(void)skip;
	return cN(cp[pos]);
}

static size_t m_digits_c(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return run(cp, pos, end, cN);
}

/* [0-9][0-9][0-9] */
static size_t m_ascii3(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	for (size_t i = 0; i < 3; i++)
		if (pos + i >= end || cp[pos + i] < '0' || cp[pos + i] > '9')
			return 0;
	return 3;
}

static bool falcon_punct(uint32_t c)
{
	return cP(c) || (c && c < 0x80 && strchr("$+<=>^~|`", (int)c));
}

static bool default_punct(uint32_t c)
{
	return cP(c) || (c && c < 0x80 && strchr("$+<=>^~|", (int)c));
}

/* [\p{P}\$\+<=>\^~\|`]+ (falcon) and [\p{P}\$\+<=>\^~\|]+ (default), collapsed. */
static size_t m_falcon_punct(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return run(cp, pos, end, falcon_punct);
}

static size_t m_default_punct(const uint32_t *cp, size_t pos, size_t end, size_t *skip)
{
	(void)skip;
	return run(cp, pos, end, default_punct);
}

#define MAX_STAGES 6

/* The split stages of each pre-tokenizer, applied in order (llama.cpp's regex lists). */
static const match_fn pre_stages[][MAX_STAGES] = {
	[PRE_DEFAULT] = { m_default_punct, m_gpt2, m_digits_c, m_ascii3 },
	[PRE_GPT2] = { m_gpt2 },
	[PRE_LLAMA3] = { m_llama3 },
	[PRE_QWEN2] = { m_qwen2 },
	[PRE_DEEPSEEK_LLM] = { m_newline, m_ds_letters, m_ds_punct, m_trailing_space, m_ds_cjk,
			       m_digits_c },
	[PRE_DEEPSEEK_CODER] = { m_newline, m_space_letters_c, m_space_punct_c, m_ds_cjk,
				 m_digit_c },
	[PRE_FALCON] = { m_falcon_punct, m_gpt2, m_ascii3 },
	[PRE_STARCODER] = { m_digit_c, m_gpt2 },
};

static int bnd_add(size_t **b, size_t *cap, size_t *n, size_t v)
{
	if (grow((void **)b, cap, *n + 1, sizeof(**b)))
		return -ENOMEM;
	(*b)[(*n)++] = v;
	return 0;
}

/*
 * Split w->cp[0..n_cp) into pre-tokens: w->bnd[0..n_bnd) are ascending
 * boundaries from 0 to n_cp.  Each stage splits every current piece into
 * its matches and the unmatched runs between them.
 */
static int pre_split(const struct tokenizer *t, struct work *w, size_t n_cp)
{
	w->n_bnd = 0;
	if (bnd_add(&w->bnd, &w->bnd_cap, &w->n_bnd, 0) ||
	    bnd_add(&w->bnd, &w->bnd_cap, &w->n_bnd, n_cp))
		return -ENOMEM;
	for (int st = 0; st < MAX_STAGES && pre_stages[t->pre][st]; st++) {
		match_fn m = pre_stages[t->pre][st];
		size_t n2 = 0, *tb, tc;

		if (bnd_add(&w->bnd2, &w->bnd2_cap, &n2, 0))
			return -ENOMEM;
		for (size_t f = 0; f + 1 < w->n_bnd; f++) {
			size_t pos = w->bnd[f], end = w->bnd[f + 1];

			while (pos < end) {
				size_t skip = 1, len = m(w->cp, pos, end, &skip);

				if (!len) {
					pos += skip;
					continue;
				}
				/* Close the unmatched run before the match, then the match. */
				if (pos != w->bnd2[n2 - 1] &&
				    bnd_add(&w->bnd2, &w->bnd2_cap, &n2, pos))
					return -ENOMEM;
				pos += len;
				if (bnd_add(&w->bnd2, &w->bnd2_cap, &n2, pos))
					return -ENOMEM;
			}
			if (end != w->bnd2[n2 - 1] && bnd_add(&w->bnd2, &w->bnd2_cap, &n2, end))
				return -ENOMEM;
		}
		tb = w->bnd;
		w->bnd = w->bnd2;
		w->bnd2 = tb;
		tc = w->bnd_cap;
		w->bnd_cap = w->bnd2_cap;
		w->bnd2_cap = tc;
		w->n_bnd = n2;
	}
	return 0;
}

/* ---------------------------------------------------------------- BPE */

static size_t utf8_char_len(const uint8_t *s, size_t len)
{
	uint32_t cp;

	return uni_decode(s, len, &cp);
}

static int bpe_try_bigram(const struct tokenizer *t, struct work *w, int32_t left, int32_t right)
{
	const struct sym *a, *b;
	int64_t rank;

	if (left < 0 || right < 0)
		return 0;
	a = &w->sym[left];
	b = &w->sym[right];
	rank = merge_rank(t, w->buf + a->off, a->n, w->buf + b->off, b->n);
	if (rank < 0)
		return 0;
	return heap_push(w, (struct bigram){ .prio = (double)rank,
					     .left = (uint32_t)left,
					     .right = (uint32_t)right,
					     .size = a->n + b->n });
}

/* Merge one pre-token, already in the byte alphabet in w->buf[0..len). */
static int bpe_word(const struct tokenizer *t, struct work *w, size_t len, struct out_ids *o)
{
	size_t n_sym;
	int32_t id;
	int ret;

	if (t->ignore_merges && (id = tok_lookup(t, w->buf, len)) >= 0) {
		emit(o, id);
		return 0;
	}
	ret = split_symbols(w, len, utf8_char_len, &n_sym);
	if (ret)
		return ret;
	w->heap_n = 0;
	for (size_t i = 1; i < n_sym; i++)
		if ((ret = bpe_try_bigram(t, w, (int32_t)i - 1, (int32_t)i)))
			return ret;
	while (w->heap_n) {
		struct bigram bg = heap_pop(w);
		struct sym *a = &w->sym[bg.left], *b = &w->sym[bg.right];

		if (a->n == 0 || b->n == 0 || a->n + b->n != bg.size)
			continue;
		a->n += b->n;
		b->n = 0;
		a->next = b->next;
		if (b->next >= 0)
			w->sym[b->next].prev = (int32_t)bg.left;
		if ((ret = bpe_try_bigram(t, w, a->prev, (int32_t)bg.left)) ||
		    (ret = bpe_try_bigram(t, w, (int32_t)bg.left, a->next)))
			return ret;
	}
	for (int32_t i = n_sym ? 0 : -1; i >= 0; i = w->sym[i].next) {
		const struct sym *s = &w->sym[i];

		id = tok_lookup(t, w->buf + s->off, s->n);
		if (id >= 0) {
			emit(o, id);
			continue;
		}
		/* Not in the vocabulary: single bytes of the symbol that are (llama.cpp). */
		for (uint32_t k = 0; k < s->n; k++)
			if ((id = tok_lookup(t, w->buf + s->off + k, 1)) >= 0)
				emit(o, id);
	}
	return 0;
}

static int bpe_encode(const struct tokenizer *t, struct work *w, const char *text, size_t len,
		      struct out_ids *o)
{
	size_t n_cp = 0;
	int ret;

	if (grow((void **)&w->cp, &w->cp_cap, len + 1, sizeof(*w->cp)))
		return -ENOMEM;
	for (size_t off = 0; off < len;)
		off += uni_decode((const uint8_t *)text + off, len - off, &w->cp[n_cp++]);
	ret = pre_split(t, w, n_cp);
	if (ret)
		return ret;
	for (size_t p = 0; p + 1 < w->n_bnd; p++) {
		size_t s = w->bnd[p], e = w->bnd[p + 1], n = 0;

		/* Each code point: up to 4 bytes, each up to 2 bytes in the alphabet. */
		if (grow((void **)&w->buf, &w->buf_cap, (e - s) * 8, 1))
			return -ENOMEM;
		for (size_t i = s; i < e; i++) {
			uint8_t u[4], a[4];
			size_t nu = uni_encode(w->cp[i], u);

			for (size_t k = 0; k < nu; k++) {
				size_t na = uni_encode(t->byte_cp[u[k]], a);

				memcpy(w->buf + n, a, na);
				n += na;
			}
		}
		ret = bpe_word(t, w, n, o);
		if (ret)
			return ret;
	}
	return 0;
}

/* ------------------------------------------------------------ encode */

struct frag {
	size_t off, len; /* raw text, when id < 0 */
	int32_t id;	 /* a special token */
};

/*
 * Cut the special tokens out of text (longest piece first, each over all
 * remaining raw fragments, leftmost occurrences first), as llama.cpp does.
 */
static int partition(const struct tokenizer *t, const char *text, size_t len, bool parse_special,
		     struct frag **out, size_t *n_out)
{
	struct frag *fr = NULL, *nf = NULL;
	size_t n = 0, cap = 0, nn, ncap = 0;
	int ret = -ENOMEM;

	if (grow((void **)&fr, &cap, 1, sizeof(*fr)))
		goto fail;
	fr[n++] = (struct frag){ .off = 0, .len = len, .id = -1 };
	for (uint32_t k = 0; k < t->n_special; k++) {
		const struct tok_entry *e = &t->tok[t->special[k]];
		bool found = false;

		if (!parse_special && e->type != TOK_TYPE_USER_DEFINED)
			continue;
		for (size_t i = 0; i < n && !found; i++)
			found = fr[i].id < 0 && fr[i].len >= e->len &&
				memmem(text + fr[i].off, fr[i].len, e->text, e->len);
		if (!found)
			continue;
		nn = 0;
		for (size_t i = 0; i < n; i++) {
			size_t off = fr[i].off, end = fr[i].off + fr[i].len;
			const char *hit;

			if (fr[i].id >= 0) {
				if (grow((void **)&nf, &ncap, nn + 1, sizeof(*nf)))
					goto fail;
				nf[nn++] = fr[i];
				continue;
			}
			while (off < end) {
				hit = end - off >= e->len
					      ? memmem(text + off, end - off, e->text, e->len)
					      : NULL;
				if (grow((void **)&nf, &ncap, nn + 2, sizeof(*nf)))
					goto fail;
				if (!hit) {
					nf[nn++] = (struct frag){ .off = off,
								  .len = end - off,
								  .id = -1 };
					break;
				}
				if ((size_t)(hit - text) > off)
					nf[nn++] = (struct frag){ .off = off,
								  .len = (size_t)(hit - text) - off,
								  .id = -1 };
				nf[nn++] = (struct frag){ .id = t->special[k] };
				off = (size_t)(hit - text) + e->len;
			}
		}
		{
			struct frag *tf = fr;
			size_t tc = cap;

			fr = nf;
			cap = ncap;
			nf = tf;
			ncap = tc;
			n = nn;
		}
	}
	free(nf);
	*out = fr;
	*n_out = n;
	return 0;
fail:
	free(nf);
	free(fr);
	return ret;
}

int tok_encode(const struct tokenizer *t, const char *text, size_t len, bool add_special,
	       bool parse_special, int32_t *ids, size_t max_ids, size_t *n_ids)
{
	struct out_ids o = { .ids = ids, .max = max_ids, .n = 0 };
	struct work w = { 0 };
	struct frag *fr = NULL;
	size_t n_fr = 0;
	bool prev_special = true; /* SPM: the space prefix goes before the first raw fragment */
	int ret = 0;

	*n_ids = 0;
	if (!text && len)
		return -EINVAL;
	if (len > TOK_MAX_TEXT)
		return -E2BIG; /* symbol offsets are 32-bit; SPM text grows up to 3x */
	if (add_special && t->add_bos && t->bos >= 0)
		emit(&o, t->bos);
	if (len) {
		ret = partition(t, text, len, parse_special, &fr, &n_fr);
		if (ret)
			goto out;
	}
	for (size_t i = 0; i < n_fr; i++) {
		if (fr[i].id >= 0) {
			emit(&o, fr[i].id);
			prev_special = true;
			continue;
		}
		if (t->kind == MODEL_TOK_SPM)
			ret = spm_encode(t, &w, text + fr[i].off, fr[i].len,
					 t->add_space_prefix && prev_special, &o);
		else
			ret = bpe_encode(t, &w, text + fr[i].off, fr[i].len, &o);
		if (ret)
			goto out;
		prev_special = false;
	}
	if (add_special && t->add_eos && t->eos >= 0)
		emit(&o, t->eos);
	*n_ids = o.n;
	ret = o.n > max_ids ? -ENOSPC : 0;
out:
	free(fr);
	work_free(&w);
	return ret;
}

/* ------------------------------------------------------------ decode */

void tok_stream_init(struct tok_stream *s)
{
	memset(s, 0, sizeof(*s));
}

size_t tok_stream_max(const struct tokenizer *t)
{
	/* Every input byte may become U+FFFD (3 bytes), plus a held-back sequence. */
	return 3 * ((size_t)t->max_piece + 8);
}

struct sink {
	char *out;
	size_t n;
};

static void put(struct sink *k, const void *p, size_t n)
{
	memcpy(k->out + k->n, p, n);
	k->n += n;
}

static void put_fffd(struct sink *k)
{
	put(k, "\xef\xbf\xbd", 3);
}

/* Is b acceptable as continuation byte number idx (1-based) after lead? */
static bool cont_ok(uint8_t lead, size_t idx, uint8_t b)
{
	if ((b & 0xC0) != 0x80)
		return false;
	if (idx != 1)
		return true;
	switch (lead) {
	case 0xE0:
		return b >= 0xA0;
	case 0xED:
		return b <= 0x9F;
	case 0xF0:
		return b >= 0x90;
	case 0xF4:
		return b <= 0x8F;
	default:
		return true;
	}
}

/* Feed one byte through the UTF-8 assembler. */
static void feed(struct tok_stream *s, struct sink *k, uint8_t b)
{
	if (s->n_pend) {
		if (cont_ok(s->pend[0], s->n_pend, b)) {
			s->pend[s->n_pend++] = b;
			if (s->n_pend == s->need) {
				put(k, s->pend, s->n_pend);
				s->n_pend = 0;
			}
			return;
		}
		put_fffd(k); /* the truncated sequence; b starts afresh */
		s->n_pend = 0;
	}
	if (b < 0x80) {
		put(k, &b, 1);
		return;
	}
	s->need = (uint8_t)uni_seq_len(b);
	if (s->need == 1) {
		put_fffd(k);
		return;
	}
	s->pend[0] = b;
	s->n_pend = 1;
}

static void feed_bytes(struct tok_stream *s, struct sink *k, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		feed(s, k, (uint8_t)p[i]);
}

/* Piece bytes of a NORMAL-like token, sent through the assembler. */
static void decode_normal(const struct tokenizer *t, const struct tok_entry *e,
			  struct tok_stream *s, struct sink *k, bool strip)
{
	const uint8_t *p = (const uint8_t *)e->text;
	size_t n = e->len, i = 0;

	if (t->kind == MODEL_TOK_SPM) {
		while (i < n) {
			if (n - i >= SPM_SPACE_LEN &&
			    memcmp(p + i, SPM_SPACE, SPM_SPACE_LEN) == 0) {
				if (!strip)
					feed(s, k, ' ');
				i += SPM_SPACE_LEN;
			} else {
				if (!(strip && p[i] == ' '))
					feed(s, k, p[i]);
				i++;
			}
			strip = false;
		}
		return;
	}
	while (i < n) {
		uint32_t cp;
		size_t l = uni_decode(p + i, n - i, &cp);

		if (cp < 512 && t->cp_byte[cp] >= 0)
			feed(s, k, (uint8_t)t->cp_byte[cp]);
		else
			feed_bytes(s, k, (const char *)p + i, l);
		i += l;
	}
}

static int parse_byte_piece(const struct tok_entry *e)
{
	unsigned v;
	char buf[8];

	if (e->len != 6 || memcmp(e->text, "<0x", 3) != 0 || e->text[5] != '>')
		return -1;
	memcpy(buf, e->text + 3, 2);
	buf[2] = '\0';
	if (sscanf(buf, "%2x", &v) != 1)
		return -1;
	return (int)v;
}

int tok_stream_push(const struct tokenizer *t, struct tok_stream *s, int32_t id, char *out,
		    size_t cap)
{
	struct sink k = { .out = out, .n = 0 };
	const struct tok_entry *e;
	bool strip;
	int b;

	if (id < 0 || (uint32_t)id >= t->n)
		return -EINVAL;
	if (cap < tok_stream_max(t))
		return -ENOSPC;
	e = &t->tok[id];
	strip = s->after_bos;
	s->after_bos = false;
	if (id == t->bos) {
		s->after_bos = t->kind == MODEL_TOK_SPM && t->add_space_prefix;
		return 0;
	}
	switch (e->type) {
	case TOK_TYPE_CONTROL:
		break;
	case TOK_TYPE_BYTE:
		b = parse_byte_piece(e);
		if (b >= 0)
			feed(s, &k, (uint8_t)b);
		else
			feed_bytes(s, &k, e->text, e->len);
		break;
	case TOK_TYPE_UNKNOWN:
		if (t->kind == MODEL_TOK_SPM)
			feed_bytes(s, &k, "\xe2\x96\x85", 3);
		else
			feed_bytes(s, &k, e->text, e->len);
		break;
	case TOK_TYPE_USER_DEFINED:
		feed_bytes(s, &k, e->text, e->len);
		break;
	default:
		decode_normal(t, e, s, &k, strip);
		break;
	}
	return (int)k.n;
}

int tok_stream_flush(const struct tokenizer *t, struct tok_stream *s, char *out, size_t cap)
{
	(void)t;
	if (!s->n_pend)
		return 0;
	if (cap < 3)
		return -ENOSPC;
	memcpy(out, "\xef\xbf\xbd", 3);
	s->n_pend = 0;
	return 3;
}

int tok_decode(const struct tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap,
	       size_t *len)
{
	struct tok_stream s;
	size_t total = 0, max = tok_stream_max(t);
	char *buf = malloc(max);
	int ret = 0;

	*len = 0;
	if (!buf)
		return -ENOMEM;
	tok_stream_init(&s);
	for (size_t i = 0; i <= n; i++) {
		int r = i < n ? tok_stream_push(t, &s, ids[i], buf, max)
			      : tok_stream_flush(t, &s, buf, max);

		if (r < 0) {
			ret = r;
			goto out;
		}
		if (total < cap)
			memcpy(out + total, buf, (size_t)r < cap - total ? (size_t)r : cap - total);
		total += (size_t)r;
	}
	*len = total;
	if (total < cap)
		out[total] = '\0';
	else
		ret = -ENOSPC;
out:
	free(buf);
	return ret;
}
