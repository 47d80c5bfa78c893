// SPDX-License-Identifier: MIT
#include "runtime/model/model.h"
#include "runtime/core/err.h"
#include "runtime/core/mem.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct loader {
	const struct gguf_file *f;
	struct model_desc *m;
	const char *arch; /* key prefix */
	char *err;
	size_t errlen;
	uint64_t *seen; /* bitmap over tensor indices: claimed by the schema */
};

__attribute__((format(printf, 3, 4))) static int fail(struct loader *l, int code, const char *fmt,
						      ...)
{
	va_list ap;
	int n;

	if (!l->err || !l->errlen)
		return code;
	n = snprintf(l->err, l->errlen, "%s: ", duet_strerror(code));
	if (n >= 0 && (size_t)n < l->errlen) {
		va_start(ap, fmt);
		vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* Prefix a gguf getter's own message with the error name. */
static int getter_fail(struct loader *l, int ret, const char *key, const char *msg)
{
	if (ret == -ENOENT)
		return fail(l, -DUET_EMODELKEY, "required key '%s' is missing", key);
	return fail(l, ret, "%s", msg[0] ? msg : key);
}

static int arch_u32(struct loader *l, const char *suffix, bool required, uint32_t def, uint32_t min,
		    uint32_t max, uint32_t *out)
{
	char key[128], msg[256] = "";
	int ret;

	snprintf(key, sizeof(key), "%s.%s", l->arch, suffix);
	ret = gguf_get_u32(l->f, key, out, msg, sizeof(msg));
	if (ret == -ENOENT && !required) {
		*out = def;
		return 0;
	}
	if (ret)
		return getter_fail(l, ret, key, msg);
	if (*out < min || *out > max)
		return fail(l, -DUET_EHPARAM, "'%s' = %u is out of range [%u, %u]", key, *out, min,
			    max);
	return 0;
}

static int arch_f32(struct loader *l, const char *suffix, bool required, float def, float *out)
{
	char key[128], msg[256] = "";
	int ret;

	snprintf(key, sizeof(key), "%s.%s", l->arch, suffix);
	ret = gguf_get_f32(l->f, key, out, msg, sizeof(msg));
	if (ret == -ENOENT && !required) {
		*out = def;
		return 0;
	}
	if (ret)
		return getter_fail(l, ret, key, msg);
	if (!isfinite(*out) || *out <= 0)
		return fail(l, -DUET_EHPARAM, "'%s' = %g must be a positive finite number", key,
			    (double)*out);
	return 0;
}

/* Features this engine does not implement are refused rather than ignored. */
static int check_unsupported_features(struct loader *l)
{
	static const char *const refused[] = {
		"expert_count",	     /* mixture of experts */
		"rope.scaling.type", /* checked for "none" below */
		"attention.sliding_window",
		"attention.key_length", /* checked against head_dim below */
		"attention.value_length",
	};
	char key[128], msg[256] = "";
	const char *s;
	size_t len;
	uint32_t v;

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		snprintf(key, sizeof(key), "%s.%s", l->arch, refused[i]);
		if (gguf_find_key(l->f, key) < 0)
			continue;
		if (strcmp(refused[i], "rope.scaling.type") == 0) {
			if (gguf_get_str(l->f, key, &s, &len, msg, sizeof(msg)) == 0 && len == 4 &&
			    memcmp(s, "none", 4) == 0)
				continue;
			return fail(l, -DUET_EARCH, "RoPE scaling ('%s') is not supported", key);
		}
		if (strcmp(refused[i], "expert_count") == 0 &&
		    gguf_get_u32(l->f, key, &v, msg, sizeof(msg)) == 0 && v == 0)
			continue;
		if (strstr(refused[i], "_length") &&
		    gguf_get_u32(l->f, key, &v, msg, sizeof(msg)) == 0 && v == l->m->head_dim)
			continue;
		return fail(l, -DUET_EARCH, "feature '%s' is not supported", key);
	}
	return 0;
}

static int load_hparams(struct loader *l)
{
	struct model_desc *m = l->m;
	int ret;

	if ((ret = arch_u32(l, "context_length", true, 0, 1, MODEL_MAX_CTX, &m->n_ctx)) ||
	    (ret = arch_u32(l, "embedding_length", true, 0, 1, MODEL_MAX_DIM, &m->dim)) ||
	    (ret = arch_u32(l, "block_count", true, 0, 1, MODEL_MAX_LAYERS, &m->n_layers)) ||
	    (ret = arch_u32(l, "feed_forward_length", true, 0, 1, MODEL_MAX_FFN, &m->ffn)) ||
	    (ret = arch_u32(l, "attention.head_count", true, 0, 1, MODEL_MAX_HEADS, &m->n_heads)))
		return ret;
	ret = arch_u32(l, "attention.head_count_kv", false, m->n_heads, 1, MODEL_MAX_HEADS,
		       &m->n_kv_heads);
	if (ret)
		return ret;
	if (m->dim % m->n_heads)
		return fail(l, -DUET_EHPARAM,
			    "embedding_length %u is not a multiple of head_count %u (head_dim "
			    "would not be integral)",
			    m->dim, m->n_heads);
	m->head_dim = m->dim / m->n_heads;
	if (m->head_dim % 2 || m->head_dim > MODEL_MAX_HEAD_DIM)
		return fail(l, -DUET_EHPARAM, "head_dim %u must be even and at most %u",
			    m->head_dim, MODEL_MAX_HEAD_DIM);
	if (m->n_kv_heads > m->n_heads || m->n_heads % m->n_kv_heads)
		return fail(l, -DUET_EHPARAM, "head_count %u is not a multiple of head_count_kv %u",
			    m->n_heads, m->n_kv_heads);
	ret = arch_u32(l, "rope.dimension_count", false, m->head_dim, 2, m->head_dim, &m->rope_dim);
	if (ret)
		return ret;
	if (m->rope_dim % 2)
		return fail(l, -DUET_EHPARAM, "rope.dimension_count %u must be even", m->rope_dim);
	ret = arch_f32(l, "rope.freq_base", false, 10000.0f, &m->rope_base);
	if (ret)
		return ret;
	ret = arch_f32(l, "attention.layer_norm_rms_epsilon", true, 0, &m->rms_eps);
	if (ret)
		return ret;
	if (m->rms_eps >= 1.0f)
		return fail(l, -DUET_EHPARAM, "layer_norm_rms_epsilon %g is absurd (>= 1)",
			    (double)m->rms_eps);
	return check_unsupported_features(l);
}

static int opt_token_id(struct loader *l, const char *key, uint32_t *out)
{
	char msg[256] = "";
	int ret = gguf_get_u32(l->f, key, out, msg, sizeof(msg));

	if (ret == -ENOENT) {
		*out = MODEL_NO_TOKEN;
		return 0;
	}
	if (ret)
		return getter_fail(l, ret, key, msg);
	if (*out >= l->m->vocab.n_tokens)
		return fail(l, -DUET_EHPARAM, "'%s' = %u is not below the vocabulary size %u", key,
			    *out, l->m->vocab.n_tokens);
	return 0;
}

static int opt_bool(struct loader *l, const char *key, bool def, bool *out)
{
	char msg[256] = "";
	int ret = gguf_get_bool(l->f, key, out, msg, sizeof(msg));

	if (ret == -ENOENT) {
		*out = def;
		return 0;
	}
	return ret ? getter_fail(l, ret, key, msg) : 0;
}

/* An optional per-token array: absent, or of elem type and exactly n_tokens long. */
static int token_array(struct loader *l, const char *key, enum gguf_type elem, bool required,
		       int64_t *kv)
{
	char msg[256] = "";
	uint64_t n;
	int ret = gguf_get_arr(l->f, key, elem, &n, msg, sizeof(msg));

	*kv = -1;
	if (ret == -ENOENT && !required)
		return 0;
	if (ret)
		return getter_fail(l, ret, key, msg);
	if (n != l->m->vocab.n_tokens)
		return fail(l, -DUET_EMODELKEY, "'%s' has %llu entries but there are %u tokens",
			    key, (unsigned long long)n, l->m->vocab.n_tokens);
	*kv = gguf_find_key(l->f, key);
	return 0;
}

static int load_vocab(struct loader *l)
{
	struct model_vocab *v = &l->m->vocab;
	char msg[256] = "", key[128];
	const char *s;
	size_t len;
	uint64_t n;
	uint32_t vocab_size;
	int ret;

	ret = gguf_get_str(l->f, "tokenizer.ggml.model", &s, &len, msg, sizeof(msg));
	if (ret)
		return getter_fail(l, ret, "tokenizer.ggml.model", msg);
	if (len == 5 && memcmp(s, "llama", 5) == 0)
		v->kind = MODEL_TOK_SPM;
	else if (len == 4 && memcmp(s, "gpt2", 4) == 0)
		v->kind = MODEL_TOK_BPE;
	else
		return fail(l, -DUET_EARCH,
			    "tokenizer '%.*s' is not supported (supported: llama, gpt2)",
			    (int)(len > 32 ? 32 : len), s);

	ret = gguf_get_str(l->f, "tokenizer.ggml.pre", &s, &len, msg, sizeof(msg));
	if (ret == 0)
		snprintf(v->pre, sizeof(v->pre), "%.*s", (int)(len < 31 ? len : 31), s);
	else if (ret != -ENOENT)
		return getter_fail(l, ret, "tokenizer.ggml.pre", msg);

	ret = gguf_get_arr(l->f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &n, msg, sizeof(msg));
	if (ret)
		return getter_fail(l, ret, "tokenizer.ggml.tokens", msg);
	if (n == 0 || n > MODEL_MAX_VOCAB)
		return fail(l, -DUET_EHPARAM, "vocabulary of %llu tokens is out of range [1, %u]",
			    (unsigned long long)n, MODEL_MAX_VOCAB);
	v->n_tokens = (uint32_t)n;
	v->tokens_kv = gguf_find_key(l->f, "tokenizer.ggml.tokens");
	l->m->n_vocab = v->n_tokens;

	snprintf(key, sizeof(key), "%s.vocab_size", l->arch);
	ret = gguf_get_u32(l->f, key, &vocab_size, msg, sizeof(msg));
	if (ret && ret != -ENOENT)
		return getter_fail(l, ret, key, msg);
	if (ret == 0 && vocab_size != v->n_tokens)
		return fail(l, -DUET_EHPARAM, "'%s' = %u but tokenizer.ggml.tokens has %u", key,
			    vocab_size, v->n_tokens);

	if ((ret = token_array(l, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32,
			       v->kind == MODEL_TOK_SPM, &v->scores_kv)) ||
	    (ret = token_array(l, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, false,
			       &v->types_kv)))
		return ret;
	v->merges_kv = -1;
	if (v->kind == MODEL_TOK_BPE) {
		ret = gguf_get_arr(l->f, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &n, msg,
				   sizeof(msg));
		if (ret)
			return getter_fail(l, ret, "tokenizer.ggml.merges", msg);
		v->merges_kv = gguf_find_key(l->f, "tokenizer.ggml.merges");
	}

	if ((ret = opt_token_id(l, "tokenizer.ggml.bos_token_id", &v->bos)) ||
	    (ret = opt_token_id(l, "tokenizer.ggml.eos_token_id", &v->eos)) ||
	    (ret = opt_token_id(l, "tokenizer.ggml.unknown_token_id", &v->unk)) ||
	    (ret = opt_token_id(l, "tokenizer.ggml.padding_token_id", &v->pad)) ||
	    (ret = opt_bool(l, "tokenizer.ggml.add_bos_token", v->kind == MODEL_TOK_SPM,
			    &v->add_bos)) ||
	    (ret = opt_bool(l, "tokenizer.ggml.add_eos_token", false, &v->add_eos)) ||
	    (ret = opt_bool(l, "tokenizer.ggml.add_space_prefix", v->kind == MODEL_TOK_SPM,
			    &v->add_space_prefix)))
		return ret;
	return 0;
}

bool model_weight_type_supported(enum ggml_type t)
{
	switch (t) {
	case GGML_TYPE_F32:
	case GGML_TYPE_F16:
	case GGML_TYPE_BF16:
	case GGML_TYPE_Q8_0:
	case GGML_TYPE_Q4_0:
		return true;
	default:
		return false;
	}
}

enum tensor_kind {
	T_MATRIX, /* any supported weight type */
	T_VECTOR, /* F32 only: norms and biases */
};

/*
 * Look up a tensor, check its shape (ne0, ne1; ne1 = 0 for a vector) and type,
 * and mark it claimed.  A missing optional tensor gives NULL and 0.
 */
static int tensor(struct loader *l, const char *name, bool required, enum tensor_kind kind,
		  uint64_t ne0, uint64_t ne1, const struct gguf_tensor **out)
{
	const struct gguf_tensor *t = gguf_find_tensor(l->f, name);
	uint32_t want_dims = ne1 ? 2 : 1;

	*out = NULL;
	if (!t) {
		if (!required)
			return 0;
		return fail(l, -DUET_EMODELTENSOR, "tensor '%s' is missing", name);
	}
	if (t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 && t->ne[1] != ne1)) {
		char got[96], want[64];
		int n = snprintf(got, sizeof(got), "[%llu", (unsigned long long)t->ne[0]);
		for (uint32_t d = 1; d < t->n_dims && n > 0 && (size_t)n < sizeof(got); d++)
			n += snprintf(got + n, sizeof(got) - (size_t)n, ", %llu",
				      (unsigned long long)t->ne[d]);
		if (n > 0 && (size_t)n < sizeof(got))
			snprintf(got + n, sizeof(got) - (size_t)n, "]");
		if (ne1)
			snprintf(want, sizeof(want), "[%llu, %llu]", (unsigned long long)ne0,
				 (unsigned long long)ne1);
		else
			snprintf(want, sizeof(want), "[%llu]", (unsigned long long)ne0);
		return fail(l, -DUET_EMODELTENSOR, "tensor '%s' has shape %s, expected %s", name,
			    got, want);
	}
	if (kind == T_VECTOR ? t->type != GGML_TYPE_F32 : !model_weight_type_supported(t->type))
		return fail(l, -DUET_EMODELTENSOR, "tensor '%s' has type %s; supported: %s", name,
			    ggml_type_name(t->type),
			    kind == T_VECTOR ? "F32" : "F32, F16, BF16, Q8_0, Q4_0");
	l->seen[(t - gguf_tensor(l->f, 0)) / 64] |= 1ull << ((t - gguf_tensor(l->f, 0)) % 64);
	*out = t;
	return 0;
}

static int load_layer(struct loader *l, uint32_t i)
{
	struct model_desc *m = l->m;
	struct model_layer *y = &m->layers[i];
	uint64_t q_dim = (uint64_t)m->n_heads * m->head_dim;
	uint64_t kv_dim = (uint64_t)m->n_kv_heads * m->head_dim;
	bool bias_required = m->arch == MODEL_ARCH_QWEN2;
	char n[GGUF_MAX_TENSOR_NAME + 1];
	int ret;

#define T(suffix, req, kind, a, b, dst)                      \
	do {                                                 \
		snprintf(n, sizeof(n), "blk.%u." suffix, i); \
		ret = tensor(l, n, req, kind, a, b, dst);    \
		if (ret)                                     \
			return ret;                          \
	} while (0)
	T("attn_norm.weight", true, T_VECTOR, m->dim, 0, &y->attn_norm);
	T("attn_q.weight", true, T_MATRIX, m->dim, q_dim, &y->wq);
	T("attn_k.weight", true, T_MATRIX, m->dim, kv_dim, &y->wk);
	T("attn_v.weight", true, T_MATRIX, m->dim, kv_dim, &y->wv);
	T("attn_output.weight", true, T_MATRIX, q_dim, m->dim, &y->wo);
	T("attn_q.bias", bias_required, T_VECTOR, q_dim, 0, &y->bq);
	T("attn_k.bias", bias_required, T_VECTOR, kv_dim, 0, &y->bk);
	T("attn_v.bias", bias_required, T_VECTOR, kv_dim, 0, &y->bv);
	T("ffn_norm.weight", true, T_VECTOR, m->dim, 0, &y->ffn_norm);
	T("ffn_gate.weight", true, T_MATRIX, m->dim, m->ffn, &y->w_gate);
	T("ffn_up.weight", true, T_MATRIX, m->dim, m->ffn, &y->w_up);
	T("ffn_down.weight", true, T_MATRIX, m->ffn, m->dim, &y->w_down);
#undef T
	if (!!y->bq != !!y->bk || !!y->bq != !!y->bv)
		return fail(l, -DUET_EMODELTENSOR,
			    "layer %u has some but not all of the q/k/v bias tensors", i);
	return 0;
}

static int load_tensors(struct loader *l)
{
	struct model_desc *m = l->m;
	uint64_t n = gguf_tensor_count(l->f);
	int ret;

	m->layers = duet_calloc(m->n_layers, sizeof(*m->layers));
	l->seen = duet_calloc(n / 64 + 1, sizeof(*l->seen));
	if (!m->layers || !l->seen)
		return fail(l, -ENOMEM, "out of memory");

	if ((ret = tensor(l, "token_embd.weight", true, T_MATRIX, m->dim, m->n_vocab,
			  &m->tok_embd)) ||
	    (ret = tensor(l, "output_norm.weight", true, T_VECTOR, m->dim, 0, &m->output_norm)) ||
	    (ret = tensor(l, "output.weight", false, T_MATRIX, m->dim, m->n_vocab, &m->output)))
		return ret;
	if (!m->output) {
		m->output = m->tok_embd;
		m->tied_output = true;
	}
	for (uint32_t i = 0; i < m->n_layers; i++) {
		ret = load_layer(l, i);
		if (ret)
			return ret;
	}
	m->wtype = m->layers[0].wq->type;

	/* Every tensor must be one the schema knows: an unknown one is a feature we lack. */
	for (uint64_t i = 0; i < n; i++) {
		const struct gguf_tensor *t = gguf_tensor(l->f, i);
		if (!(l->seen[i / 64] & (1ull << (i % 64))))
			return fail(l, -DUET_EMODELTENSOR,
				    "unexpected tensor '%s' (a feature this engine does not "
				    "support, or a layer beyond block_count %u)",
				    t->name, m->n_layers);
		m->n_params += t->n_elements;
		m->weight_bytes += t->size;
	}
	return 0;
}

int model_desc_load(const struct gguf_file *f, unsigned flags, struct model_desc **out, char *err,
		    size_t errlen)
{
	struct loader l = { .f = f, .err = err, .errlen = errlen };
	struct model_desc *m;
	char msg[256] = "";
	const char *s;
	size_t len;
	int ret;

	*out = NULL;
	m = duet_calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	l.m = m;

	ret = gguf_get_str(f, "general.architecture", &s, &len, msg, sizeof(msg));
	if (ret) {
		ret = getter_fail(&l, ret, "general.architecture", msg);
		goto free_desc;
	}
	if (len == 5 && memcmp(s, "llama", 5) == 0) {
		m->arch = MODEL_ARCH_LLAMA;
		m->rope_mode = MODEL_ROPE_NORM;
	} else if (len == 5 && memcmp(s, "qwen2", 5) == 0) {
		m->arch = MODEL_ARCH_QWEN2;
		m->rope_mode = MODEL_ROPE_NEOX;
	} else {
		ret = fail(&l, -DUET_EARCH,
			   "architecture '%.*s' is not supported (supported: llama, qwen2)",
			   (int)(len > 64 ? 64 : len), s);
		goto free_desc;
	}
	l.arch = model_arch_name(m->arch);

	ret = gguf_get_str(f, "general.name", &s, &len, msg, sizeof(msg));
	if (ret == 0)
		snprintf(m->name, sizeof(m->name), "%.*s", (int)(len < 127 ? len : 127), s);
	else if (ret == -ENOENT)
		snprintf(m->name, sizeof(m->name), "%s", l.arch);
	else {
		ret = getter_fail(&l, ret, "general.name", msg);
		goto free_desc;
	}

	ret = load_hparams(&l);
	if (ret)
		goto free_desc;
	ret = load_vocab(&l);
	if (ret)
		goto free_desc;
	m->wtype = GGML_TYPE_F32;
	if (flags & MODEL_LOAD_VOCAB_ONLY) {
		m->vocab_only = true;
	} else {
		ret = load_tensors(&l);
		if (ret)
			goto free_desc;
	}
	duet_free(l.seen);
	*out = m;
	return 0;

free_desc:
	duet_free(l.seen);
	model_desc_free(m);
	return ret;
}

void model_desc_free(struct model_desc *m)
{
	if (!m)
		return;
	duet_free(m->layers);
	duet_free(m);
}

const char *model_arch_name(enum model_arch arch)
{
	switch (arch) {
	case MODEL_ARCH_LLAMA:
		return "llama";
	case MODEL_ARCH_QWEN2:
		return "qwen2";
	}
	return "?";
}

void model_desc_summary(const struct model_desc *m, char *buf, size_t len)
{
	snprintf(buf, len,
		 "%s '%s': %u layers, dim %u, heads %u/%u (head_dim %u), ffn %u, ctx %u, "
		 "vocab %u (%s), %s%s, %.2fM params, %.1f MiB of weights",
		 model_arch_name(m->arch), m->name, m->n_layers, m->dim, m->n_heads, m->n_kv_heads,
		 m->head_dim, m->ffn, m->n_ctx, m->n_vocab,
		 m->vocab.kind == MODEL_TOK_SPM ? "spm" : "bpe", ggml_type_name(m->wtype),
		 m->tied_output ? ", tied output" : "", (double)m->n_params / 1e6,
		 (double)m->weight_bytes / (1024.0 * 1024.0));
}
