// SPDX-License-Identifier: MIT
#include "tests/unit/ggufgen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIM 32
#define LAYERS 2
#define HEADS 2
#define KV_HEADS 1
#define HEAD_DIM (DIM / HEADS)
#define FFN 64
#define CTX 64
#define VOCAB 16

/* GGUF ids used here (kept local: this helper does not trust gguf.h). */
enum { T_U8 = 0, T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7, T_STR = 8, T_ARR = 9 };
enum { G_F32 = 0, G_Q8_0 = 8 };

static int grow(struct gg_file *g, size_t n)
{
	if (g->len + n <= g->cap)
		return 0;
	size_t cap = g->cap ? g->cap : 4096;
	while (cap < g->len + n)
		cap *= 2;
	uint8_t *p = realloc(g->data, cap);
	if (!p)
		return -ENOMEM;
	g->data = p;
	g->cap = cap;
	return 0;
}

static size_t emit(struct gg_file *g, const void *p, size_t n)
{
	size_t at = g->len;

	if (grow(g, n))
		abort(); /* test helper: out of memory is not a case we test */
	memcpy(g->data + g->len, p, n);
	g->len += n;
	return at;
}

static size_t emit_u32(struct gg_file *g, uint32_t v)
{
	return emit(g, &v, 4);
}

static size_t emit_u64(struct gg_file *g, uint64_t v)
{
	return emit(g, &v, 8);
}

static size_t emit_str(struct gg_file *g, const char *s, size_t *bytes_off)
{
	size_t at = emit_u64(g, strlen(s));

	*bytes_off = emit(g, s, strlen(s));
	return at;
}

static struct gg_kv_pos *kv_begin(struct gg_file *g, const char *key, uint32_t type)
{
	struct gg_kv_pos *k = &g->kv[g->n_kv++];

	snprintf(k->key, sizeof(k->key), "%s", key);
	k->keylen_off = emit_str(g, key, &k->key_off);
	k->type_off = emit_u32(g, type);
	k->value_off = g->len;
	return k;
}

static void kv_u32(struct gg_file *g, const char *key, uint32_t v)
{
	kv_begin(g, key, T_U32);
	emit_u32(g, v);
}

static void kv_f32(struct gg_file *g, const char *key, float v)
{
	kv_begin(g, key, T_F32);
	emit(g, &v, 4);
}

static void kv_bool(struct gg_file *g, const char *key, bool v)
{
	uint8_t b = v;

	kv_begin(g, key, T_BOOL);
	emit(g, &b, 1);
}

static void kv_str(struct gg_file *g, const char *key, const char *v)
{
	size_t dummy;

	kv_begin(g, key, T_STR);
	emit_str(g, v, &dummy);
}

static void emit_kvs(struct gg_file *g, const struct gg_opts *o)
{
	const char *arch = o->qwen2 ? "qwen2" : "llama";
	char key[96];
	size_t dummy;

#define AKEY(s) (snprintf(key, sizeof(key), "%s.%s", arch, s), key)
	kv_str(g, "general.architecture", arch);
	kv_str(g, "general.name", "ggufgen");
	if (o->alignment)
		kv_u32(g, "general.alignment", o->alignment);
	kv_u32(g, AKEY("context_length"), CTX);
	kv_u32(g, AKEY("embedding_length"), DIM);
	kv_u32(g, AKEY("block_count"), LAYERS);
	kv_u32(g, AKEY("feed_forward_length"), FFN);
	kv_u32(g, AKEY("attention.head_count"), HEADS);
	kv_u32(g, AKEY("attention.head_count_kv"), KV_HEADS);
	kv_u32(g, AKEY("rope.dimension_count"), HEAD_DIM);
	kv_f32(g, AKEY("attention.layer_norm_rms_epsilon"), 1e-5f);
	kv_f32(g, AKEY("rope.freq_base"), 10000.0f);
	kv_u32(g, AKEY("vocab_size"), VOCAB);
#undef AKEY
	kv_str(g, "tokenizer.ggml.model", "llama");

	kv_begin(g, "tokenizer.ggml.tokens", T_ARR);
	emit_u32(g, T_STR);
	emit_u64(g, VOCAB);
	for (int i = 0; i < VOCAB; i++) {
		char tok[16];
		snprintf(tok, sizeof(tok),
			 i == 0	  ? "<unk>"
			 : i == 1 ? "<s>"
			 : i == 2 ? "</s>"
				  : "t%d",
			 i);
		emit_str(g, tok, &dummy);
	}
	kv_begin(g, "tokenizer.ggml.scores", T_ARR);
	emit_u32(g, T_F32);
	emit_u64(g, VOCAB);
	for (int i = 0; i < VOCAB; i++) {
		float s = -(float)i;
		emit(g, &s, 4);
	}
	kv_begin(g, "tokenizer.ggml.token_type", T_ARR);
	emit_u32(g, T_I32);
	emit_u64(g, VOCAB);
	for (int i = 0; i < VOCAB; i++)
		emit_u32(g, i == 0 ? 2 : i < 3 ? 3 : 1);
	kv_u32(g, "tokenizer.ggml.bos_token_id", 1);
	kv_u32(g, "tokenizer.ggml.eos_token_id", 2);
	kv_bool(g, "tokenizer.ggml.add_bos_token", true);
	/* A numeric array nobody reads, to have an array of bytes in the corpus. */
	kv_begin(g, "duet.test.bytes", T_ARR);
	emit_u32(g, T_U8);
	emit_u64(g, 3);
	emit(g, "\x01\x02\x03", 3);
}

static uint64_t tensor_bytes(uint32_t type, uint64_t n)
{
	return type == G_Q8_0 ? n / 32 * 34 : n * 4;
}

static void add_tensor(struct gg_file *g, const char *name, uint32_t type, uint64_t ne0,
		       uint64_t ne1, uint64_t *data_end, uint32_t align)
{
	struct gg_tensor_pos *t = &g->t[g->n_t++];

	snprintf(t->name, sizeof(t->name), "%s", name);
	t->namelen_off = emit_str(g, name, &t->name_off);
	t->ndims_off = emit_u32(g, ne1 ? 2 : 1);
	t->ne_off[0] = emit_u64(g, ne0);
	if (ne1)
		t->ne_off[1] = emit_u64(g, ne1);
	t->type_off = emit_u32(g, type);
	t->offset = *data_end;
	t->size = tensor_bytes(type, ne0 * (ne1 ? ne1 : 1));
	t->offset_off = emit_u64(g, t->offset);
	*data_end = (t->offset + t->size + align - 1) / align * align;
}

static void emit_tensor_infos(struct gg_file *g, const struct gg_opts *o, uint32_t align)
{
	uint64_t end = 0;
	char n[72];

	add_tensor(g, "token_embd.weight", G_Q8_0, DIM, VOCAB, &end, align);
	add_tensor(g, "output_norm.weight", G_F32, DIM, 0, &end, align);
	if (!o->tied)
		add_tensor(g, "output.weight", G_Q8_0, DIM, VOCAB, &end, align);
	for (int l = 0; l < LAYERS; l++) {
#define L(s) (snprintf(n, sizeof(n), "blk.%d.%s", l, s), n)
		add_tensor(g, L("attn_norm.weight"), G_F32, DIM, 0, &end, align);
		add_tensor(g, L("attn_q.weight"), G_Q8_0, DIM, HEADS * HEAD_DIM, &end, align);
		add_tensor(g, L("attn_k.weight"), G_Q8_0, DIM, KV_HEADS * HEAD_DIM, &end, align);
		add_tensor(g, L("attn_v.weight"), G_Q8_0, DIM, KV_HEADS * HEAD_DIM, &end, align);
		add_tensor(g, L("attn_output.weight"), G_Q8_0, HEADS * HEAD_DIM, DIM, &end, align);
		if (o->qwen2) {
			add_tensor(g, L("attn_q.bias"), G_F32, HEADS * HEAD_DIM, 0, &end, align);
			add_tensor(g, L("attn_k.bias"), G_F32, KV_HEADS * HEAD_DIM, 0, &end, align);
			add_tensor(g, L("attn_v.bias"), G_F32, KV_HEADS * HEAD_DIM, 0, &end, align);
		}
		add_tensor(g, L("ffn_norm.weight"), G_F32, DIM, 0, &end, align);
		add_tensor(g, L("ffn_gate.weight"), G_Q8_0, DIM, FFN, &end, align);
		add_tensor(g, L("ffn_up.weight"), G_Q8_0, DIM, FFN, &end, align);
		add_tensor(g, L("ffn_down.weight"), G_Q8_0, FFN, DIM, &end, align);
#undef L
	}
}

int gg_make_model(struct gg_file *g, const struct gg_opts *o)
{
	uint32_t align = o->alignment ? o->alignment : 32;
	uint64_t end = 0;

	memset(g, 0, sizeof(*g));
	emit(g, "GGUF", 4);
	g->version_off = emit_u32(g, 3);
	g->n_tensors_off = emit_u64(g, 0);
	g->n_kv_off = emit_u64(g, 0);
	emit_kvs(g, o);
	emit_tensor_infos(g, o, align);
	gg_put_u64(g, g->n_tensors_off, g->n_t);
	gg_put_u64(g, g->n_kv_off, g->n_kv);

	g->data_off = (g->len + align - 1) / align * align;
	for (size_t i = 0; i < g->n_t; i++) {
		if (g->t[i].offset + g->t[i].size > end)
			end = g->t[i].offset + g->t[i].size;
	}
	if (grow(g, g->data_off - g->len + end))
		return -ENOMEM;
	memset(g->data + g->len, 0, g->data_off - g->len + end);
	g->len = g->data_off + end;

	/* Deterministic contents; Q8_0 scales stay finite (high byte of the f16 < 0x7c). */
	for (size_t i = 0; i < g->n_t; i++) {
		uint8_t *p = g->data + g->data_off + g->t[i].offset;
		for (uint64_t j = 0; j < g->t[i].size; j++)
			p[j] = (uint8_t)((j * 37 + i * 11) & 0x3f);
	}
	return 0;
}

void gg_free(struct gg_file *g)
{
	free(g->data);
	memset(g, 0, sizeof(*g));
}

const struct gg_kv_pos *gg_kv(const struct gg_file *g, const char *key)
{
	for (size_t i = 0; i < g->n_kv; i++) {
		if (strcmp(g->kv[i].key, key) == 0)
			return &g->kv[i];
	}
	fprintf(stderr, "ggufgen: no key '%s'\n", key);
	abort();
}

const struct gg_tensor_pos *gg_tensor(const struct gg_file *g, const char *name)
{
	for (size_t i = 0; i < g->n_t; i++) {
		if (strcmp(g->t[i].name, name) == 0)
			return &g->t[i];
	}
	fprintf(stderr, "ggufgen: no tensor '%s'\n", name);
	abort();
}

void gg_put_u32(struct gg_file *g, size_t off, uint32_t v)
{
	memcpy(g->data + off, &v, 4);
}

void gg_put_u64(struct gg_file *g, size_t off, uint64_t v)
{
	memcpy(g->data + off, &v, 8);
}

void gg_put_u8(struct gg_file *g, size_t off, uint8_t v)
{
	g->data[off] = v;
}
