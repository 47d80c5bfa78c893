// SPDX-License-Identifier: MIT
/*
 * GGUF loader: the real files in ../shared load with the right metadata and
 * tensors; a corpus of malformed images, each made by mutating one field of
 * a valid image, is rejected with the right error code and a message naming
 * the problem; truncation at every length is rejected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/core/err.h"
#include "runtime/core/mem.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"
#include "tests/unit/ggufgen.h"
#include "tests/unit/testutil.h"

/* --- the shared real files --------------------------------------------------- */

static void check_token(const struct gguf_file *f, uint64_t id, const char *want)
{
	int64_t ki = gguf_find_key(f, "tokenizer.ggml.tokens");
	const char *s;
	size_t len;

	assert_true(ki >= 0);
	assert_int_equal(gguf_arr_str(f, (uint64_t)ki, id, &s, &len), 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(s, want, len);
}

static void test_stories260k(void **state)
{
	const char *path = TU_SHARED_OR_SKIP("models/stories260K.gguf");
	struct gguf_file *f;
	struct model_desc *m;
	char err[512] = "";

	(void)state;
	assert_int_equal(gguf_open(path, &f, err, sizeof(err)), 0);
	assert_int_equal(gguf_version(f), 3);
	assert_int_equal(gguf_kv_count(f), 24);
	assert_int_equal(gguf_tensor_count(f), 48);
	assert_int_equal(gguf_alignment(f), 32);
	check_token(f, 403, "\xe2\x96\x81Once");
	check_token(f, 100, "<0x61>");

	/* Tensors in file order, with ggml-order shapes. */
	const struct gguf_tensor *t = gguf_tensor(f, 0);
	assert_string_equal(t->name, "token_embd.weight");
	assert_int_equal(t->n_dims, 2);
	assert_int_equal(t->ne[0], 64);
	assert_int_equal(t->ne[1], 512);
	assert_int_equal(t->type, GGML_TYPE_F32);
	assert_int_equal(t->size, 64 * 512 * 4);
	t = gguf_find_tensor(f, "blk.4.ffn_down.weight");
	assert_non_null(t);
	assert_int_equal(t->ne[0], 172);
	assert_int_equal(t->ne[1], 64);
	assert_ptr_equal((const uint8_t *)t->data,
			 (const uint8_t *)gguf_tensor(f, 0)->data + t->offset);
	assert_null(gguf_find_tensor(f, "blk.5.ffn_down.weight"));

	assert_int_equal(model_desc_load(f, 0, &m, err, sizeof(err)), 0);
	assert_int_equal(m->arch, MODEL_ARCH_LLAMA);
	assert_int_equal(m->dim, 64);
	assert_int_equal(m->n_layers, 5);
	assert_int_equal(m->n_heads, 8);
	assert_int_equal(m->n_kv_heads, 4);
	assert_int_equal(m->head_dim, 8);
	assert_int_equal(m->ffn, 172);
	assert_int_equal(m->n_ctx, 512);
	assert_int_equal(m->n_vocab, 512);
	assert_int_equal(m->rope_dim, 8);
	assert_true(m->rope_base == 10000.0f);
	assert_true(m->rms_eps > 0.99e-5f && m->rms_eps < 1.01e-5f);
	assert_int_equal(m->rope_mode, MODEL_ROPE_NORM);
	assert_false(m->tied_output);
	assert_int_equal(m->wtype, GGML_TYPE_F32);
	assert_int_equal(m->vocab.kind, MODEL_TOK_SPM);
	assert_int_equal(m->vocab.bos, 1);
	assert_int_equal(m->vocab.eos, 2);
	assert_int_equal(m->vocab.unk, 0);
	assert_true(m->vocab.add_bos);
	assert_false(m->vocab.add_eos);
	assert_true(m->vocab.add_space_prefix);
	assert_true(m->vocab.scores_kv >= 0);
	assert_ptr_equal(m->output, gguf_find_tensor(f, "output.weight"));
	assert_ptr_equal(m->layers[4].w_down, gguf_find_tensor(f, "blk.4.ffn_down.weight"));
	/* 48 tensors: 2 * 512 * 64 + 64 + 5 * (64*64*2 + 64*32*2 + 2*64 + 3*64*172) */
	assert_int_equal(m->n_params,
			 2 * 512 * 64 + 64 +
				 5 * (64 * 64 * 2 + 64 * 32 * 2 + 2 * 64 + 3 * 64 * 172));
	model_desc_free(m);
	gguf_close(f);
}

static void test_stories260k_tied(void **state)
{
	const char *path = TU_SHARED_OR_SKIP("models/stories260K-tied.gguf");
	struct gguf_file *f;
	struct model_desc *m;
	char err[512] = "";

	(void)state;
	assert_int_equal(gguf_open(path, &f, err, sizeof(err)), 0);
	assert_int_equal(gguf_tensor_count(f), 47);
	assert_null(gguf_find_tensor(f, "output.weight"));
	assert_int_equal(model_desc_load(f, 0, &m, err, sizeof(err)), 0);
	assert_true(m->tied_output);
	assert_ptr_equal(m->output, m->tok_embd);
	assert_int_equal(m->n_layers, 5);
	model_desc_free(m);
	gguf_close(f);
}

static void check_tiny_bytes(const char *rel, enum ggml_type wtype, uint64_t n_kv)
{
	const char *path = TU_SHARED_OR_SKIP(rel);
	struct gguf_file *f;
	struct model_desc *m;
	char err[512] = "";

	assert_int_equal(gguf_open(path, &f, err, sizeof(err)), 0);
	assert_int_equal(gguf_kv_count(f), n_kv);
	assert_int_equal(gguf_tensor_count(f), 21);
	assert_int_equal(model_desc_load(f, 0, &m, err, sizeof(err)), 0);
	assert_int_equal(m->dim, 64);
	assert_int_equal(m->n_layers, 2);
	assert_int_equal(m->n_heads, 4);
	assert_int_equal(m->n_kv_heads, 2);
	assert_int_equal(m->head_dim, 16);
	assert_int_equal(m->ffn, 160);
	assert_int_equal(m->n_ctx, 128);
	assert_int_equal(m->n_vocab, 354);
	assert_int_equal(m->wtype, wtype);
	assert_int_equal(m->layers[1].wk->type, wtype);
	assert_int_equal(m->layers[1].wk->ne[1], 32);
	assert_int_equal(m->layers[1].attn_norm->type, GGML_TYPE_F32);
	assert_int_equal(m->layers[0].wq->size,
			 64 * 64 / ggml_blck_size(wtype) * ggml_type_size(wtype));
	assert_false(m->tied_output);
	check_token(f, 353, "~");
	model_desc_free(m);
	gguf_close(f);
}

static void test_tiny_bytes_f32(void **state)
{
	(void)state;
	check_tiny_bytes("models/tiny-bytes-f32.gguf", GGML_TYPE_F32, 23);
}

static void test_tiny_bytes_f16(void **state)
{
	(void)state;
	check_tiny_bytes("models/tiny-bytes-f16.gguf", GGML_TYPE_F16, 23);
}

static void test_tiny_bytes_q8_0(void **state)
{
	(void)state;
	check_tiny_bytes("models/tiny-bytes-q8_0.gguf", GGML_TYPE_Q8_0, 24);
}

/* Expected values read from the files with an independent reader. */
static const struct vocab_file {
	const char *file, *arch, *tok_model, *tok100;
	uint64_t n_kv, n_tokens, n_merges;
	uint32_t bos, eos, ctx, dim, blocks;
	int model_err; /* what model_desc_load (vocab only) says */
} vocab_files[] = {
	{ "ggml-vocab-baichuan.gguf", "baichuan", "llama", "<reserved_7>", 18, 64000, 0, 1, 2, 4096,
	  4096, 32, -DUET_EARCH },
	{ "ggml-vocab-bert-bge.gguf", "bert", "bert", "[UNK]", 20, 30522, 0, UINT32_MAX, UINT32_MAX,
	  512, 384, 12, -DUET_EARCH },
	{ "ggml-vocab-deepseek-coder.gguf", "llama", "gpt2", "\xc2\xa7", 25, 32256, 31757, 32013,
	  32014, 16384, 4096, 32, -DUET_EARCH /* linear RoPE scaling */ },
	{ "ggml-vocab-deepseek-llm.gguf", "llama", "gpt2", "\xc2\xa7", 23, 102400, 99757, 100000,
	  100001, 4096, 4096, 30, 0 },
	{ "ggml-vocab-falcon.gguf", "falcon", "gpt2", "y", 18, 65024, 64784, 11, 11, 2048, 4544, 32,
	  -DUET_EARCH },
	{ "ggml-vocab-gpt-2.gguf", "gpt2", "gpt2", "\xc2\xa7", 16, 50257, 50000, 50256, 50256, 1024,
	  768, 12, -DUET_EARCH },
	{ "ggml-vocab-gpt-neox.gguf", "gptneox", "gpt2", "\xc2\xa5", 17, 50432, 50009, 0, 0, 2048,
	  6144, 44, -DUET_EARCH },
	{ "ggml-vocab-llama-spm.gguf", "llama", "llama", "<0x61>", 22, 32000, 0, 1, 2, 4096, 4096,
	  32, 0 },
	{ "ggml-vocab-mpt.gguf", "mpt", "gpt2", "\xc2\xa5", 17, 50432, 50009, 0, 0, 2048, 4096, 32,
	  -DUET_EARCH },
	{ "ggml-vocab-phi-3.gguf", "phi3", "llama", "<0x61>", 26, 32064, 0, 1, 32000, 4096, 3072,
	  32, -DUET_EARCH },
	{ "ggml-vocab-refact.gguf", "refact", "gpt2", "r", 18, 49216, 48891, 0, 0, 4096, 2048, 32,
	  -DUET_EARCH },
	{ "ggml-vocab-starcoder.gguf", "starcoder2", "gpt2", "_", 19, 49152, 48872, 0, 0, 16384,
	  3072, 30, -DUET_EARCH },
};

static void check_u32_key(const struct gguf_file *f, const char *arch, const char *suffix,
			  uint32_t want)
{
	char key[128], err[256];
	uint32_t v = 0;

	snprintf(key, sizeof(key), "%s.%s", arch, suffix);
	assert_int_equal(gguf_get_u32(f, key, &v, err, sizeof(err)), 0);
	assert_int_equal(v, want);
}

static void test_tokenizer_vector_files(void **state)
{
	char rel[128], err[512];

	(void)state;
	snprintf(rel, sizeof(rel), "tokenizer-vectors/%s", vocab_files[0].file);
	TU_SHARED_OR_SKIP(rel);
	for (size_t i = 0; i < sizeof(vocab_files) / sizeof(vocab_files[0]); i++) {
		const struct vocab_file *v = &vocab_files[i];
		struct gguf_file *f;
		struct model_desc *m;
		const char *s;
		size_t len;
		uint64_t n;
		uint32_t id;

		snprintf(rel, sizeof(rel), "tokenizer-vectors/%s", v->file);
		const char *path = TU_SHARED_OR_SKIP(rel);
		err[0] = '\0';
		if (gguf_open(path, &f, err, sizeof(err)) != 0)
			fail_msg("%s: %s", v->file, err);
		assert_int_equal(gguf_tensor_count(f), 0);
		assert_int_equal(gguf_kv_count(f), v->n_kv);
		assert_int_equal(gguf_get_str(f, "general.architecture", &s, &len, NULL, 0), 0);
		assert_int_equal(len, strlen(v->arch));
		assert_memory_equal(s, v->arch, len);
		assert_int_equal(gguf_get_str(f, "tokenizer.ggml.model", &s, &len, NULL, 0), 0);
		assert_memory_equal(s, v->tok_model, len);
		assert_int_equal(
			gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &n, NULL, 0), 0);
		assert_int_equal(n, v->n_tokens);
		check_token(f, 100, v->tok100);
		if (v->n_merges) {
			assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_STRING,
						      &n, NULL, 0),
					 0);
			assert_int_equal(n, v->n_merges);
		} else {
			assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_STRING,
						      &n, NULL, 0),
					 -ENOENT);
		}
		if (v->bos != UINT32_MAX) {
			assert_int_equal(
				gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &id, NULL, 0), 0);
			assert_int_equal(id, v->bos);
			assert_int_equal(
				gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &id, NULL, 0), 0);
			assert_int_equal(id, v->eos);
		}
		check_u32_key(f, v->arch, "context_length", v->ctx);
		check_u32_key(f, v->arch, "embedding_length", v->dim);
		check_u32_key(f, v->arch, "block_count", v->blocks);

		err[0] = '\0';
		int ret = model_desc_load(f, MODEL_LOAD_VOCAB_ONLY, &m, err, sizeof(err));
		if (ret != v->model_err)
			fail_msg("%s: model_desc_load gave %s (%s), want %s", v->file,
				 duet_errname(ret), err, duet_errname(v->model_err));
		if (ret == 0) {
			assert_true(m->vocab_only);
			assert_int_equal(m->n_vocab, v->n_tokens);
			assert_int_equal(m->dim, v->dim);
			assert_int_equal(m->n_layers, v->blocks);
			assert_int_equal(m->n_ctx, v->ctx);
			assert_int_equal(m->vocab.bos, v->bos);
			assert_int_equal(m->vocab.kind, strcmp(v->tok_model, "gpt2")
								? MODEL_TOK_SPM
								: MODEL_TOK_BPE);
			assert_null(m->layers);
			model_desc_free(m);
		} else {
			assert_non_null(strstr(err, v->model_err == -DUET_EARCH &&
								    strcmp(v->arch, "llama") == 0
							    ? "RoPE scaling"
							    : v->arch));
		}
		gguf_close(f);
	}
}

/* --- generated valid images ---------------------------------------------------- */

static void test_generated_valid(void **state)
{
	const struct gg_opts variants[] = {
		{ 0 }, { .tied = true }, { .qwen2 = true }, { .alignment = 64 }, { .alignment = 1 },
	};
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		struct gg_file g;
		struct gguf_file *f;
		struct model_desc *m;

		assert_int_equal(gg_make_model(&g, &variants[i]), 0);
		err[0] = '\0';
		if (gguf_open_mem(g.data, g.len, &f, err, sizeof(err)))
			fail_msg("variant %zu: %s", i, err);
		assert_int_equal(gguf_alignment(f),
				 variants[i].alignment ? variants[i].alignment : 32);
		assert_int_equal(gguf_data_offset(f), g.data_off);
		assert_int_equal(gguf_tensor_count(f), g.n_t);
		if (model_desc_load(f, 0, &m, err, sizeof(err)))
			fail_msg("variant %zu: %s", i, err);
		assert_int_equal(m->arch, variants[i].qwen2 ? MODEL_ARCH_QWEN2 : MODEL_ARCH_LLAMA);
		assert_int_equal(m->rope_mode,
				 variants[i].qwen2 ? MODEL_ROPE_NEOX : MODEL_ROPE_NORM);
		assert_int_equal(m->tied_output, variants[i].tied);
		assert_int_equal(m->layers[1].bq != NULL, variants[i].qwen2);
		assert_int_equal(m->wtype, GGML_TYPE_Q8_0);
		assert_int_equal(m->n_vocab, 16);
		for (size_t t = 0; t < g.n_t; t++) {
			const struct gguf_tensor *gt = gguf_find_tensor(f, g.t[t].name);
			assert_non_null(gt);
			assert_int_equal(gt->offset, g.t[t].offset);
			assert_int_equal(gt->size, g.t[t].size);
			assert_int_equal(gt->offset % gguf_alignment(f), 0);
		}
		model_desc_free(m);
		gguf_close(f);
		gg_free(&g);
	}
}

/* --- typed getters --------------------------------------------------------------- */

static void test_getters(void **state)
{
	struct gg_file g;
	struct gguf_file *f;
	char err[256];
	uint32_t u32;
	uint64_t u64, n;
	int64_t i64;
	float f32;
	bool b;
	const char *s;
	size_t len;
	enum gguf_type et;

	(void)state;
	assert_int_equal(gg_make_model(&g, &(struct gg_opts){ 0 }), 0);
	assert_int_equal(gguf_open_mem(g.data, g.len, &f, err, sizeof(err)), 0);

	assert_int_equal(gguf_get_u32(f, "llama.block_count", &u32, err, sizeof(err)), 0);
	assert_int_equal(u32, 2);
	assert_int_equal(gguf_get_u64(f, "llama.block_count", &u64, err, sizeof(err)), 0);
	assert_int_equal(u64, 2);
	assert_int_equal(gguf_get_i64(f, "llama.block_count", &i64, err, sizeof(err)), 0);
	assert_int_equal(i64, 2);
	assert_int_equal(gguf_get_f32(f, "llama.rope.freq_base", &f32, err, sizeof(err)), 0);
	assert_true(f32 == 10000.0f);
	assert_int_equal(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b, err, sizeof(err)), 0);
	assert_true(b);
	assert_int_equal(gguf_get_str(f, "general.name", &s, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 7);
	assert_memory_equal(s, "ggufgen", 7);

	assert_int_equal(gguf_get_u32(f, "no.such.key", &u32, err, sizeof(err)), -ENOENT);
	assert_int_equal(gguf_get_u32(f, "general.name", &u32, err, sizeof(err)), -DUET_EMODELKEY);
	assert_non_null(strstr(err, "'general.name' must be an unsigned integer, not STRING"));
	assert_int_equal(gguf_get_str(f, "llama.block_count", &s, &len, err, sizeof(err)),
			 -DUET_EMODELKEY);
	assert_int_equal(gguf_get_f32(f, "tokenizer.ggml.tokens", &f32, err, sizeof(err)),
			 -DUET_EMODELKEY);
	assert_non_null(strstr(err, "not an array of STRING"));
	assert_int_equal(
		gguf_get_arr(f, "tokenizer.ggml.scores", GGUF_TYPE_INT32, &n, err, sizeof(err)),
		-DUET_EMODELKEY);

	int64_t ki = gguf_find_key(f, "tokenizer.ggml.scores");
	assert_true(ki >= 0);
	assert_string_equal(gguf_kv_key(f, (uint64_t)ki), "tokenizer.ggml.scores");
	assert_int_equal(gguf_kv_type(f, (uint64_t)ki), GGUF_TYPE_ARRAY);
	assert_int_equal(gguf_kv_array(f, (uint64_t)ki, &et, &n), 0);
	assert_int_equal(et, GGUF_TYPE_FLOAT32);
	assert_int_equal(n, 16);
	assert_true(gguf_arr_get_float(f, (uint64_t)ki, 5) == -5.0);
	ki = gguf_find_key(f, "tokenizer.ggml.token_type");
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 0), 2);
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 7), 1);
	ki = gguf_find_key(f, "duet.test.bytes");
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 2), 3);
	assert_int_equal(gguf_arr_str(f, (uint64_t)ki, 0, &s, &len), -EINVAL);
	ki = gguf_find_key(f, "tokenizer.ggml.tokens");
	assert_int_equal(gguf_arr_str(f, (uint64_t)ki, 16, &s, &len), -EINVAL);
	assert_int_equal(gguf_arr_str(f, (uint64_t)ki, 15, &s, &len), 0);
	assert_memory_equal(s, "t15", 3);

	gguf_close(f);

	/* A negative integer is no unsigned value. */
	gg_put_u32(&g, gg_kv(&g, "llama.block_count")->type_off, GGUF_TYPE_INT32);
	gg_put_u32(&g, gg_kv(&g, "llama.block_count")->value_off, (uint32_t)-2);
	assert_int_equal(gguf_open_mem(g.data, g.len, &f, err, sizeof(err)), 0);
	assert_int_equal(gguf_get_u32(f, "llama.block_count", &u32, err, sizeof(err)),
			 -DUET_EMODELKEY);
	assert_non_null(strstr(err, "negative"));
	assert_int_equal(gguf_get_i64(f, "llama.block_count", &i64, err, sizeof(err)), 0);
	assert_int_equal(i64, -2);
	gguf_close(f);
	gg_free(&g);
}

static void test_open_errors(void **state)
{
	char *dir = tu_mkdtemp();
	char path[512], err[512];
	struct gguf_file *f = (void *)1;

	(void)state;
	assert_non_null(dir);
	snprintf(path, sizeof(path), "%s/missing.gguf", dir);
	assert_int_equal(gguf_open(path, &f, err, sizeof(err)), -ENOENT);
	assert_null(f);
	assert_non_null(strstr(err, "missing.gguf: open: No such file"));
	assert_int_equal(gguf_open(dir, &f, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	snprintf(path, sizeof(path), "%s/empty.gguf", dir);
	assert_int_equal(tu_write_file(path, "", 0), 0);
	assert_int_equal(gguf_open(path, &f, err, sizeof(err)), -DUET_ETRUNCATED);
	assert_non_null(strstr(err, "empty"));
	snprintf(path, sizeof(path), "%s/text.gguf", dir);
	assert_int_equal(tu_write_file(path, "hello world\n", 12), 0);
	assert_int_equal(gguf_open(path, &f, err, sizeof(err)), -DUET_EBADMAGIC);
	/* The path leads the message so it stands alone in a log line. */
	assert_true(strncmp(err, path, strlen(path)) == 0);
	tu_rmtree(dir);
}

/* --- the malformed corpus -------------------------------------------------------- */

struct corrupt_case {
	const char *name;
	void (*mutate)(struct gg_file *g);
	int gguf_err;	    /* from gguf_open_mem; 0 = the GGUF layer accepts it */
	int model_err;	    /* from model_desc_load when gguf_err == 0 */
	const char *needle; /* must appear in the error message */
	struct gg_opts opts;
};

#define KV(k) gg_kv(g, k)
#define TN(n) gg_tensor(g, n)

static void m_magic(struct gg_file *g)
{
	g->data[0] = 'X';
}
static void m_version1(struct gg_file *g)
{
	gg_put_u32(g, g->version_off, 1);
}
static void m_version4(struct gg_file *g)
{
	gg_put_u32(g, g->version_off, 4);
}
static void m_version0(struct gg_file *g)
{
	gg_put_u32(g, g->version_off, 0);
}
static void m_big_endian(struct gg_file *g)
{
	gg_put_u32(g, g->version_off, 0x03000000);
}
static void m_ntensors_neg(struct gg_file *g)
{
	gg_put_u64(g, g->n_tensors_off, (uint64_t)-1);
}
static void m_ntensors_huge(struct gg_file *g)
{
	gg_put_u64(g, g->n_tensors_off, 1ull << 40);
}
static void m_nkv_neg(struct gg_file *g)
{
	gg_put_u64(g, g->n_kv_off, (uint64_t)-5);
}
static void m_nkv_huge(struct gg_file *g)
{
	gg_put_u64(g, g->n_kv_off, 1ull << 33);
}
static void m_nkv_plus1(struct gg_file *g)
{
	gg_put_u64(g, g->n_kv_off, g->n_kv + 1);
}
static void m_ntensors_plus1(struct gg_file *g)
{
	gg_put_u64(g, g->n_tensors_off, g->n_t + 1);
}
static void m_str_past_eof(struct gg_file *g)
{
	gg_put_u64(g, KV("general.name")->value_off, g->len);
}
static void m_str_absurd(struct gg_file *g)
{
	gg_put_u64(g, KV("general.name")->value_off, 1ull << 62);
}
static void m_keylen_past_eof(struct gg_file *g)
{
	gg_put_u64(g, KV("general.name")->keylen_off, g->len * 2);
}
static void m_token_str_past_eof(struct gg_file *g)
{
	/* The first token's length prefix follows the element type and count. */
	gg_put_u64(g, KV("tokenizer.ggml.tokens")->value_off + 12, (uint64_t)1 << 20);
}
static void m_empty_key(struct gg_file *g)
{
	gg_put_u64(g, KV("general.name")->keylen_off, 0);
}
static void m_long_key(struct gg_file *g)
{
	gg_put_u64(g, KV("general.name")->keylen_off, GGUF_MAX_KEY + 1);
}
static void m_dup_key(struct gg_file *g)
{
	/* Two keys of the same length, so the layout does not move. */
	memcpy(g->data + KV("llama.rope.freq_base")->key_off, "llama.context_length", 20);
}
static void m_key_nul(struct gg_file *g)
{
	g->data[KV("general.name")->key_off + 3] = 0;
}
static void m_valtype(struct gg_file *g)
{
	gg_put_u32(g, KV("general.name")->type_off, 13);
}
static void m_valtype_huge(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.block_count")->type_off, 0xffffffffu);
}
static void m_arr_elemtype(struct gg_file *g)
{
	gg_put_u32(g, KV("tokenizer.ggml.scores")->value_off, 77);
}
static void m_arr_nested(struct gg_file *g)
{
	gg_put_u32(g, KV("tokenizer.ggml.scores")->value_off, GGUF_TYPE_ARRAY);
}
static void m_arr_count_huge(struct gg_file *g)
{
	gg_put_u64(g, KV("tokenizer.ggml.scores")->value_off + 4, 1ull << 61);
}
static void m_arr_str_count_huge(struct gg_file *g)
{
	gg_put_u64(g, KV("tokenizer.ggml.tokens")->value_off + 4, (uint64_t)-1);
}
static void m_bool_value(struct gg_file *g)
{
	gg_put_u8(g, KV("tokenizer.ggml.add_bos_token")->value_off, 2);
}
static void m_scores_int(struct gg_file *g)
{
	gg_put_u32(g, KV("tokenizer.ggml.scores")->value_off, GGUF_TYPE_INT32);
}
static void m_tokens_count(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.vocab_size")->value_off, 17);
}
static void m_tname_empty(struct gg_file *g)
{
	gg_put_u64(g, TN("output.weight")->namelen_off, 0);
}
static void m_tname_long(struct gg_file *g)
{
	gg_put_u64(g, TN("output.weight")->namelen_off, GGUF_MAX_TENSOR_NAME + 1);
}
static void m_tname_dup(struct gg_file *g)
{
	memcpy(g->data + TN("blk.0.attn_k.weight")->name_off, "blk.0.attn_v.weight", 19);
}
static void m_tname_nul(struct gg_file *g)
{
	g->data[TN("output.weight")->name_off + 2] = 0;
}
static void m_ndims0(struct gg_file *g)
{
	gg_put_u32(g, TN("output_norm.weight")->ndims_off, 0);
}
static void m_ndims5(struct gg_file *g)
{
	gg_put_u32(g, TN("output_norm.weight")->ndims_off, 5);
}
static void m_dim_zero(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.0.attn_q.weight")->ne_off[1], 0);
}
static void m_dim_negative(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.0.attn_q.weight")->ne_off[1], (uint64_t)-32);
}
static void m_nelem_overflow(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.0.attn_q.weight")->ne_off[1], 1ull << 62);
}
static void m_nbytes_overflow(struct gg_file *g)
{
	/* F32: 2^61 elements are representable, their 2^63 bytes are not. */
	gg_put_u32(g, TN("output_norm.weight")->ndims_off, 1);
	gg_put_u64(g, TN("output_norm.weight")->ne_off[0], 1ull << 62);
}
static void m_block_multiple(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.0.attn_q.weight")->ne_off[0], 33);
}
static void m_ttype_unknown(struct gg_file *g)
{
	gg_put_u32(g, TN("blk.0.attn_q.weight")->type_off, 99);
}
static void m_ttype_retired(struct gg_file *g)
{
	gg_put_u32(g, TN("blk.0.attn_q.weight")->type_off, 4); /* Q4_2, removed from ggml */
}
static void m_offset_misaligned(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.1.ffn_up.weight")->offset_off, TN("blk.1.ffn_up.weight")->offset + 4);
}
static void m_offset_past_end(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.1.ffn_up.weight")->offset_off, 1ull << 40);
}
static void m_offset_wrap(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.1.ffn_up.weight")->offset_off, (uint64_t)-32);
}
static void m_overlap(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.1.ffn_up.weight")->offset_off, TN("blk.1.ffn_gate.weight")->offset);
}
static void m_align_zero(struct gg_file *g)
{
	gg_put_u32(g, KV("general.alignment")->value_off, 0);
}
static void m_align_npot(struct gg_file *g)
{
	gg_put_u32(g, KV("general.alignment")->value_off, 48);
}
static void m_align_huge(struct gg_file *g)
{
	gg_put_u32(g, KV("general.alignment")->value_off, 1u << 30);
}
static void m_align_type(struct gg_file *g)
{
	gg_put_u32(g, KV("general.alignment")->type_off, GGUF_TYPE_INT32);
}
static void m_data_truncated(struct gg_file *g)
{
	g->len = g->data_off - 1;
}
static void m_last_tensor_cut(struct gg_file *g)
{
	g->len -= 1;
}
static void m_no_arch(struct gg_file *g)
{
	memcpy(g->data + KV("general.architecture")->key_off, "general.architecturX", 20);
}
static void m_arch_unknown(struct gg_file *g)
{
	memcpy(g->data + KV("general.architecture")->value_off + 8, "llamb", 5);
}
static void m_no_block_count(struct gg_file *g)
{
	memcpy(g->data + KV("llama.block_count")->key_off, "llama.block_counX", 17);
}
static void m_block_count_type(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.block_count")->type_off, GGUF_TYPE_FLOAT32);
}
static void m_block_count_zero(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.block_count")->value_off, 0);
}
static void m_block_count_huge(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.block_count")->value_off, 100000);
}
static void m_block_count_more(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.block_count")->value_off, 3);
}
static void m_block_count_less(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.block_count")->value_off, 1);
}
static void m_heads_zero(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.attention.head_count")->value_off, 0);
}
static void m_heads_not_integral(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.attention.head_count")->value_off, 3);
}
static void m_kv_heads_not_divisor(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.attention.head_count")->value_off, 4);
	gg_put_u32(g, KV("llama.attention.head_count_kv")->value_off, 3);
}
static void m_kv_heads_more(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.attention.head_count_kv")->value_off, 4);
}
static void m_eps_nan(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.attention.layer_norm_rms_epsilon")->value_off, 0x7fc00000u);
}
static void m_rope_dim_odd(struct gg_file *g)
{
	gg_put_u32(g, KV("llama.rope.dimension_count")->value_off, 7);
}
static void m_bos_range(struct gg_file *g)
{
	gg_put_u32(g, KV("tokenizer.ggml.bos_token_id")->value_off, 16);
}
static void m_tokenizer_model(struct gg_file *g)
{
	memcpy(g->data + KV("tokenizer.ggml.model")->value_off + 8, "llamo", 5);
}
static void m_shape_q(struct gg_file *g)
{
	gg_put_u64(g, TN("blk.1.attn_q.weight")->ne_off[1], 16);
}
static void m_shape_embd(struct gg_file *g)
{
	gg_put_u64(g, TN("token_embd.weight")->ne_off[1], 8);
}
static void m_norm_type(struct gg_file *g)
{
	gg_put_u32(g, TN("blk.0.ffn_norm.weight")->type_off, GGML_TYPE_F16);
}
static void m_matrix_type(struct gg_file *g)
{
	gg_put_u32(g, TN("blk.0.ffn_up.weight")->type_off, GGML_TYPE_IQ4_NL);
}
static void m_missing_tensor(struct gg_file *g)
{
	memcpy(g->data + TN("blk.1.ffn_down.weight")->name_off, "blk.1.ffn_dowX", 14);
}
static void m_qwen2_no_bias(struct gg_file *g)
{
	memcpy(g->data + TN("blk.1.attn_k.bias")->name_off, "blk.1.attn_k.bia_", 17);
}
static void m_none(struct gg_file *g)
{
	(void)g;
}

#define CASE(n, fn, ge, me, needle)    \
	{                              \
		n, fn, ge, me, needle, \
		{                      \
			0              \
		}                      \
	}
#define CASE_O(n, fn, ge, me, needle, ...) \
	{                                  \
		n, fn, ge, me, needle,     \
		{                          \
			__VA_ARGS__        \
		}                          \
	}

static const struct corrupt_case cases[] = {
	CASE("bad magic", m_magic, -DUET_EBADMAGIC, 0, "does not start with \"GGUF\""),
	CASE("version 1", m_version1, -DUET_EVERSION, 0, "version 1 (supported: 2 and 3)"),
	CASE("version 4", m_version4, -DUET_EVERSION, 0, "version 4"),
	CASE("version 0", m_version0, -DUET_EVERSION, 0, "version 0"),
	CASE("big-endian", m_big_endian, -DUET_EVERSION, 0, "big-endian"),
	CASE("tensor count negative", m_ntensors_neg, -DUET_ECOUNT, 0, "tensor count -1"),
	CASE("tensor count huge", m_ntensors_huge, -DUET_ECOUNT, 0, "cannot fit"),
	CASE("kv count negative", m_nkv_neg, -DUET_ECOUNT, 0, "metadata count -5"),
	CASE("kv count huge", m_nkv_huge, -DUET_ECOUNT, 0, "cannot fit"),
	CASE("kv count one too many", m_nkv_plus1, -DUET_ESTRING, 0, "name of tensor 0"),
	CASE("tensor count one too many", m_ntensors_plus1, -DUET_ETENSORNAME, 0,
	     "tensor 21 has an empty name"),
	CASE("string past EOF", m_str_past_eof, -DUET_ESTRING, 0, "runs past the end"),
	CASE("string absurd", m_str_absurd, -DUET_ESTRING, 0, "is absurd"),
	CASE("key length past EOF", m_keylen_past_eof, -DUET_ESTRING, 0, "key of metadata entry 1"),
	CASE("token string past EOF", m_token_str_past_eof, -DUET_ESTRING, 0,
	     "tokenizer.ggml.tokens: length 1048576 runs past"),
	CASE("empty key", m_empty_key, -DUET_EKEY, 0, "empty key"),
	CASE("over-long key", m_long_key, -DUET_EKEY, 0, "too long"),
	CASE("duplicate key", m_dup_key, -DUET_EKEY, 0, "duplicate key 'llama.context_length'"),
	CASE("NUL in key", m_key_nul, -DUET_EKEY, 0, "NUL"),
	CASE("unknown value type", m_valtype, -DUET_EVALTYPE, 0,
	     "'general.name': unknown value type 13"),
	CASE("value type 2^32-1", m_valtype_huge, -DUET_EVALTYPE, 0, "4294967295"),
	CASE("unknown array element type", m_arr_elemtype, -DUET_EVALTYPE, 0,
	     "unknown array element type 77"),
	CASE("nested array", m_arr_nested, -DUET_EVALTYPE, 0, "nested arrays"),
	CASE("array count huge", m_arr_count_huge, -DUET_ECOUNT, 0, "FLOAT32 elements cannot fit"),
	CASE("string array count huge", m_arr_str_count_huge, -DUET_ECOUNT, 0,
	     "strings cannot fit"),
	CASE("bool value 2", m_bool_value, -DUET_EVALTYPE, 0, "not 0 or 1"),
	CASE("scores not FLOAT32", m_scores_int, 0, -DUET_EMODELKEY,
	     "'tokenizer.ggml.scores' must be an array of FLOAT32, not an array of INT32"),
	CASE("vocab_size disagrees", m_tokens_count, 0, -DUET_EHPARAM,
	     "'llama.vocab_size' = 17 but tokenizer.ggml.tokens has 16"),
	CASE("empty tensor name", m_tname_empty, -DUET_ETENSORNAME, 0, "empty name"),
	CASE("over-long tensor name", m_tname_long, -DUET_ETENSORNAME, 0, "too long (limit 64)"),
	CASE("duplicate tensor name", m_tname_dup, -DUET_ETENSORNAME, 0,
	     "duplicate tensor name 'blk.0.attn_v.weight'"),
	CASE("NUL in tensor name", m_tname_nul, -DUET_ETENSORNAME, 0, "NUL"),
	CASE("n_dims 0", m_ndims0, -DUET_ESHAPE, 0, "n_dims 0 is not in [1, 4]"),
	CASE("n_dims 5", m_ndims5, -DUET_ESHAPE, 0, "n_dims 5"),
	CASE("zero dimension", m_dim_zero, -DUET_ESHAPE, 0, "dimension 1 is 0"),
	CASE("negative dimension", m_dim_negative, -DUET_ESHAPE, 0, "dimension 1 is -32"),
	CASE("element count overflow", m_nelem_overflow, -DUET_ESHAPE, 0,
	     "element count overflows"),
	CASE("byte size overflow", m_nbytes_overflow, -DUET_ESIZE, 0, "byte size"),
	CASE("not a block multiple", m_block_multiple, -DUET_ESIZE, 0,
	     "33 is not a multiple of the Q8_0 block size 32"),
	CASE("unknown tensor type", m_ttype_unknown, -DUET_ETENSORTYPE, 0,
	     "unknown tensor type id 99"),
	CASE("retired tensor type", m_ttype_retired, -DUET_ETENSORTYPE, 0, "id 4"),
	CASE("misaligned offset", m_offset_misaligned, -DUET_EOFFSET, 0,
	     "is not a multiple of the alignment 32"),
	CASE("offset past end", m_offset_past_end, -DUET_EOFFSET, 0, "runs past the end"),
	CASE("offset + size wraps", m_offset_wrap, -DUET_EOFFSET, 0, "runs past the end"),
	CASE("overlapping tensors", m_overlap, -DUET_EOVERLAP, 0, "overlaps"),
	CASE_O("alignment 0", m_align_zero, -DUET_EALIGN, 0, "general.alignment 0",
	       .alignment = 64),
	CASE_O("alignment not a power of two", m_align_npot, -DUET_EALIGN, 0,
	       "general.alignment 48 is not a power of two", .alignment = 64),
	CASE_O("alignment absurd", m_align_huge, -DUET_EALIGN, 0, "1073741824", .alignment = 64),
	CASE_O("alignment wrong type", m_align_type, -DUET_EALIGN, 0, "must be UINT32, not INT32",
	       .alignment = 64),
	CASE("data section missing", m_data_truncated, -DUET_ETRUNCATED, 0,
	     "data section should start"),
	CASE("last tensor cut short", m_last_tensor_cut, -DUET_EOFFSET, 0, "truncated?"),
	CASE("architecture missing", m_no_arch, 0, -DUET_EMODELKEY,
	     "required key 'general.architecture' is missing"),
	CASE("architecture unknown", m_arch_unknown, 0, -DUET_EARCH, "architecture 'llamb'"),
	CASE("block_count missing", m_no_block_count, 0, -DUET_EMODELKEY,
	     "required key 'llama.block_count' is missing"),
	CASE("block_count wrong type", m_block_count_type, 0, -DUET_EMODELKEY,
	     "'llama.block_count' must be an unsigned integer, not FLOAT32"),
	CASE("block_count 0", m_block_count_zero, 0, -DUET_EHPARAM,
	     "'llama.block_count' = 0 is out of range"),
	CASE("block_count huge", m_block_count_huge, 0, -DUET_EHPARAM, "= 100000 is out of range"),
	CASE("block_count beyond the tensors", m_block_count_more, 0, -DUET_EMODELTENSOR,
	     "tensor 'blk.2.attn_norm.weight' is missing"),
	CASE("block_count below the tensors", m_block_count_less, 0, -DUET_EMODELTENSOR,
	     "unexpected tensor 'blk.1."),
	CASE("head_count 0", m_heads_zero, 0, -DUET_EHPARAM, "head_count' = 0"),
	CASE("head_dim not integral", m_heads_not_integral, 0, -DUET_EHPARAM,
	     "not a multiple of head_count 3"),
	CASE("heads not a multiple of kv heads", m_kv_heads_not_divisor, 0, -DUET_EHPARAM,
	     "head_count 4 is not a multiple of head_count_kv 3"),
	CASE("more kv heads than heads", m_kv_heads_more, 0, -DUET_EHPARAM,
	     "head_count 2 is not a multiple of head_count_kv 4"),
	CASE("rms epsilon NaN", m_eps_nan, 0, -DUET_EHPARAM, "positive finite"),
	CASE("rope dimension odd", m_rope_dim_odd, 0, -DUET_EHPARAM, "must be even"),
	CASE("bos id out of range", m_bos_range, 0, -DUET_EHPARAM,
	     "'tokenizer.ggml.bos_token_id' = 16 is not below the vocabulary size 16"),
	CASE("tokenizer unknown", m_tokenizer_model, 0, -DUET_EARCH, "tokenizer 'llamo'"),
	CASE("attn_q shape", m_shape_q, 0, -DUET_EMODELTENSOR,
	     "tensor 'blk.1.attn_q.weight' has shape [32, 16], expected [32, 32]"),
	CASE("token_embd shape", m_shape_embd, 0, -DUET_EMODELTENSOR,
	     "'token_embd.weight' has shape [32, 8], expected [32, 16]"),
	CASE("norm not F32", m_norm_type, 0, -DUET_EMODELTENSOR,
	     "'blk.0.ffn_norm.weight' has type F16; supported: F32"),
	CASE("matrix type unsupported", m_matrix_type, 0, -DUET_EMODELTENSOR,
	     "'blk.0.ffn_up.weight' has type IQ4_NL"),
	CASE("tensor missing", m_missing_tensor, 0, -DUET_EMODELTENSOR,
	     "tensor 'blk.1.ffn_down.weight' is missing"),
	CASE_O("qwen2 bias missing", m_qwen2_no_bias, 0, -DUET_EMODELTENSOR,
	       "tensor 'blk.1.attn_k.bias' is missing", .qwen2 = true),
	CASE("valid control (no mutation)", m_none, 0, 0, ""),
};

static void run_corrupt_case(void **state)
{
	const struct corrupt_case *c = *state;
	struct gg_file g;
	struct gguf_file *f = NULL;
	struct model_desc *m = NULL;
	char err[512] = "";
	int ret;

	assert_int_equal(gg_make_model(&g, &c->opts), 0);
	c->mutate(&g);
	/* An exact-size copy, so that ASan catches any read past the end. */
	uint8_t *copy = malloc(g.len);
	assert_non_null(copy);
	memcpy(copy, g.data, g.len);

	ret = gguf_open_mem(copy, g.len, &f, err, sizeof(err));
	if (ret != c->gguf_err)
		fail_msg("%s: gguf_open_mem gave %s (%s), want %s", c->name, duet_errname(ret), err,
			 duet_errname(c->gguf_err));
	if (ret == 0) {
		ret = model_desc_load(f, 0, &m, err, sizeof(err));
		if (ret != c->model_err)
			fail_msg("%s: model_desc_load gave %s (%s), want %s", c->name,
				 duet_errname(ret), err, duet_errname(c->model_err));
		if (ret == 0)
			assert_non_null(m);
		else
			assert_null(m);
		model_desc_free(m);
		gguf_close(f);
	} else {
		assert_null(f);
	}
	if (c->needle[0] && !strstr(err, c->needle))
		fail_msg("%s: message '%s' lacks '%s'", c->name, err, c->needle);
	/* Every message names the error class first. */
	if (c->gguf_err || c->model_err)
		assert_non_null(
			strstr(err, duet_strerror(c->gguf_err ? c->gguf_err : c->model_err)));
	free(copy);
	gg_free(&g);
}

/* Every proper prefix of a valid image is rejected, each with a message. */
static void test_truncation_every_length(void **state)
{
	const struct gg_opts variants[] = { { 0 }, { .qwen2 = true, .alignment = 64 } };

	(void)state;
	for (size_t v = 0; v < 2; v++) {
		struct gg_file g;

		assert_int_equal(gg_make_model(&g, &variants[v]), 0);
		for (size_t len = 1; len < g.len; len++) {
			struct gguf_file *f = NULL;
			char err[512] = "";
			uint8_t *copy = malloc(len);

			assert_non_null(copy);
			memcpy(copy, g.data, len);
			int ret = gguf_open_mem(copy, len, &f, err, sizeof(err));
			if (ret == 0)
				fail_msg("a %zu-byte prefix of a %zu-byte file was accepted", len,
					 g.len);
			if (ret != -DUET_ETRUNCATED && ret != -DUET_ESTRING &&
			    ret != -DUET_EOFFSET && ret != -DUET_ECOUNT)
				fail_msg("prefix of %zu bytes: unexpected %s (%s)", len,
					 duet_errname(ret), err);
			assert_true(strlen(err) > 20);
			assert_null(f);
			free(copy);
		}
		gg_free(&g);
	}
}

/* Flipping any single byte of the header and metadata never crashes or leaks. */
static void test_byte_flips(void **state)
{
	struct gg_file g;
	size_t rejected = 0, flips = 0;

	(void)state;
	assert_int_equal(gg_make_model(&g, &(struct gg_opts){ 0 }), 0);
	for (size_t i = 0; i < g.data_off; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			struct gguf_file *f = NULL;
			struct model_desc *m = NULL;
			char err[512] = "";

			g.data[i] ^= (uint8_t)(1u << bit);
			int ret = gguf_open_mem(g.data, g.len, &f, err, sizeof(err));
			if (ret == 0) {
				ret = model_desc_load(f, 0, &m, err, sizeof(err));
				model_desc_free(m);
				gguf_close(f);
			}
			if (ret) {
				rejected++;
				assert_true(err[0] != '\0');
			}
			flips++;
			g.data[i] ^= (uint8_t)(1u << bit);
		}
	}
	/* Most flips land in structure and must be caught; some hit free text. */
	print_message("byte flips: %zu of %zu rejected\n", rejected, flips);
	assert_true(rejected > flips / 2);
	gg_free(&g);
}

/*
 * Fail the Nth allocation for N = 1, 2, 3 ... until loading succeeds: every
 * failure must come back as -ENOMEM with nothing leaked (ASan checks leaks).
 */
static void test_allocation_failures(void **state)
{
	struct gg_file g;
	char *dir = tu_mkdtemp(), path[512], err[512];
	unsigned long n;
	int ret = -1;

	(void)state;
	assert_non_null(dir);
	assert_int_equal(gg_make_model(&g, &(struct gg_opts){ .qwen2 = true }), 0);
	snprintf(path, sizeof(path), "%s/m.gguf", dir);
	assert_int_equal(tu_write_file(path, g.data, g.len), 0);
	for (n = 1; n < 1000 && ret != 0; n++) {
		struct gguf_file *f = NULL;
		struct model_desc *m = NULL;

		duet_mem_fail_at(n);
		ret = gguf_open(path, &f, err, sizeof(err));
		if (ret == 0) {
			ret = model_desc_load(f, 0, &m, err, sizeof(err));
			model_desc_free(m);
			gguf_close(f);
		}
		duet_mem_fail_at(0);
		if (ret != 0 && ret != -ENOMEM)
			fail_msg("allocation %lu failing gave %s (%s)", n, duet_errname(ret), err);
	}
	assert_int_equal(ret, 0);
	print_message("loader: %lu allocation failure points, all -ENOMEM\n", n - 2);
	assert_true(n > 5);
	gg_free(&g);
	tu_rmtree(dir);
}

static void test_type_tables(void **state)
{
	(void)state;
	assert_int_equal(ggml_blck_size(GGML_TYPE_Q8_0), 32);
	assert_int_equal(ggml_type_size(GGML_TYPE_Q8_0), 34);
	assert_int_equal(ggml_type_size(GGML_TYPE_Q4_0), 18);
	assert_int_equal(ggml_type_size(GGML_TYPE_Q4_K), 144);
	assert_int_equal(ggml_type_size(GGML_TYPE_Q5_K), 176);
	assert_int_equal(ggml_type_size(GGML_TYPE_Q6_K), 210);
	assert_int_equal(ggml_type_size(GGML_TYPE_BF16), 2);
	assert_int_equal(ggml_blck_size(4), 0);
	assert_int_equal(ggml_blck_size(GGML_TYPE_COUNT), 0);
	assert_null(ggml_type_name(5));
	assert_string_equal(ggml_type_name(GGML_TYPE_Q6_K), "Q6_K");
	assert_string_equal(gguf_type_name(GGUF_TYPE_FLOAT64), "FLOAT64");
	assert_string_equal(gguf_type_name(99), "?");
}

int main(void)
{
	const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_stories260k),
		cmocka_unit_test(test_stories260k_tied),
		cmocka_unit_test(test_tiny_bytes_f32),
		cmocka_unit_test(test_tiny_bytes_f16),
		cmocka_unit_test(test_tiny_bytes_q8_0),
		cmocka_unit_test(test_tokenizer_vector_files),
		cmocka_unit_test(test_generated_valid),
		cmocka_unit_test(test_getters),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_truncation_every_length),
		cmocka_unit_test(test_byte_flips),
		cmocka_unit_test(test_allocation_failures),
		cmocka_unit_test(test_type_tables),
	};
	size_t n_fixed = sizeof(fixed) / sizeof(fixed[0]);
	size_t n_cases = sizeof(cases) / sizeof(cases[0]);
	struct CMUnitTest *tests = calloc(n_fixed + n_cases, sizeof(*tests));
	char(*names)[96] = calloc(n_cases, sizeof(*names));
	int failed;

	if (!tests || !names)
		return 1;
	memcpy(tests, fixed, sizeof(fixed));
	for (size_t i = 0; i < n_cases; i++) {
		snprintf(names[i], sizeof(names[i]), "malformed: %s", cases[i].name);
		tests[n_fixed + i] = (struct CMUnitTest){
			.name = names[i],
			.test_func = run_corrupt_case,
			.initial_state = (void *)&cases[i],
		};
	}
	failed = _cmocka_run_group_tests("gguf", tests, n_fixed + n_cases, NULL, NULL);
	free(tests);
	free(names);
	return failed;
}
