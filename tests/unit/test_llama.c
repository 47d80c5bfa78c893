// SPDX-License-Identifier: MIT
/*
 * The forward pass against independent references (../shared/golden):
 * greedy token ids exactly, logits within the documented tolerances; batch
 * and thread invariance; bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/backend.h"
#include "runtime/core/err.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/model.h"
#include "runtime/model/synth.h"
#include "tests/unit/testutil.h"

struct rig {
	struct gguf_file *f;
	struct model_desc *m;
	struct backend *be;
	struct llm *llm;
	struct llm_seq seq;
	float *logits;
};

static void rig_open(struct rig *r, const char *path, enum ggml_type kv, int threads,
		     int max_tokens, int max_out)
{
	char err[512];
	struct be_options bo = { .threads = threads };
	struct be_step_limits lim = { .max_tokens = max_tokens, .max_seqs = 1, .max_table = 4096 };
	struct llm_options lo = { .kv_dtype = kv, .max_tokens = max_tokens, .max_out = max_out };

	memset(r, 0, sizeof(*r));
	if (gguf_open(path, &r->f, err, sizeof(err)))
		fail_msg("%s", err);
	if (model_desc_load(r->f, 0, &r->m, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(backend_open("cpu", &bo, &lim, &r->be), 0);
	assert_int_equal(llm_create(r->be, r->m, &lo, &r->llm), 0);
	assert_int_equal(llm_seq_init(&r->seq, r->llm), 0);
	r->logits = calloc((size_t)max_out * r->m->n_vocab, sizeof(float));
	assert_non_null(r->logits);
}

static void rig_close(struct rig *r)
{
	free(r->logits);
	llm_seq_free(&r->seq);
	llm_destroy(r->llm);
	backend_close(r->be);
	model_desc_free(r->m);
	gguf_close(r->f);
}

/* Greedy: the highest logit, the lowest id on ties. */
static int32_t argmax(const float *x, int n)
{
	int32_t best = 0;

	for (int i = 1; i < n; i++) {
		if (x[i] > x[best])
			best = i;
	}
	return best;
}

/* Prompt then n greedy tokens; returns the generated ids in out. */
static void greedy(struct rig *r, const int32_t *prompt, int n_prompt, int32_t *out, int n)
{
	int n_vocab = (int)r->m->n_vocab;

	llm_seq_reset(&r->seq);
	assert_int_equal(llm_seq_eval(&r->seq, prompt, n_prompt, r->logits, NULL), 0);
	for (int i = 0; i < n; i++) {
		out[i] = argmax(r->logits, n_vocab);
		if (i + 1 < n)
			assert_int_equal(llm_seq_eval(&r->seq, &out[i], 1, r->logits, NULL), 0);
	}
}

static int load_ids(const char *json, const char *key, int32_t *ids, size_t max)
{
	double v[1024];
	long n = tu_json_numbers(json, key, v, max < 1024 ? max : 1024);

	assert_true(n >= 0);
	for (long i = 0; i < n; i++)
		ids[i] = (int32_t)v[i];
	return (int)n;
}

static const char *const stories_cases[] = {
	"once_upon_a_time", "the_little_dog", "empty", "lily_and_tom", "newline_in_prompt",
	"leading_space",
};

static void check_stories(const char *model_rel, enum ggml_type kv)
{
	char model[1024], rel[128];
	struct rig r;

	snprintf(model, sizeof(model), "%s", TU_SHARED_OR_SKIP(model_rel));
	rig_open(&r, model, kv, 1, 64, 1);
	for (size_t c = 0; c < sizeof(stories_cases) / sizeof(stories_cases[0]); c++) {
		int32_t prompt[64], want[256], got[256];
		char *json;
		int np, ng;

		snprintf(rel, sizeof(rel), "golden/stories260K/%s.json", stories_cases[c]);
		json = tu_read_file(TU_SHARED_OR_SKIP(rel), NULL);
		assert_non_null(json);
		np = load_ids(json, "prompt_ids", prompt, 64);
		ng = load_ids(json, "generated_ids", want, 256);
		assert_true(np >= 1 && ng == 128);
		if (kv == GGML_TYPE_F32) {
			/* F32 KV: the references' exact greedy sequence. */
			greedy(&r, prompt, np, got, ng);
			for (int i = 0; i < ng; i++) {
				if (got[i] != want[i])
					fail_msg("%s (%s, KV F32): token %d is %d, want %d",
						 stories_cases[c], model_rel, i, got[i], want[i]);
			}
		} else {
			/*
			 * F16 KV rounds K and V to 11 bits (~1e-3 relative), so a step
			 * whose top two logits are closer than that may legitimately
			 * pick either.  Teacher-force the reference tokens and require
			 * our argmax at every step to be the reference token, or within
			 * 2e-3 of it (newline_in_prompt has a 3e-5 tie at step 96).
			 */
			int ties = 0;
			llm_seq_reset(&r.seq);
			assert_int_equal(llm_seq_eval(&r.seq, prompt, np, r.logits, NULL), 0);
			for (int i = 0; i < ng; i++) {
				int32_t top = argmax(r.logits, (int)r.m->n_vocab);
				if (top != want[i]) {
					double gap = r.logits[top] - r.logits[want[i]];
					if (gap > 2e-3)
						fail_msg("%s (%s, KV F16): step %d picks %d, reference %d "
							 "is %.4g below it",
							 stories_cases[c], model_rel, i, top, want[i], gap);
					ties++;
				}
				if (i + 1 < ng)
					assert_int_equal(llm_seq_eval(&r.seq, &want[i], 1, r.logits, NULL),
							 0);
			}
			if (ties)
				print_message("%s (%s, KV F16): %d near-tie step(s) within 2e-3\n",
					      stories_cases[c], model_rel, ties);
		}
		free(json);
	}
	rig_close(&r);
}

static void test_stories_greedy_f32kv(void **state)
{
	(void)state;
	check_stories("models/stories260K.gguf", GGML_TYPE_F32);
}

static void test_stories_greedy_f16kv(void **state)
{
	(void)state;
	check_stories("models/stories260K.gguf", GGML_TYPE_F16);
}

static void test_stories_tied_greedy(void **state)
{
	(void)state;
	check_stories("models/stories260K-tied.gguf", GGML_TYPE_F32);
	check_stories("models/stories260K-tied.gguf", GGML_TYPE_F16);
}

/* Without BOS: llama.cpp's 64 greedy tokens. */
static void test_stories_nobos(void **state)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s", TU_SHARED_OR_SKIP("models/stories260K.gguf"));
	char *json = tu_read_file(TU_SHARED_OR_SKIP("golden/stories260K/once_upon_a_time.nobos.json"),
				  NULL);
	int32_t prompt[16], want[64], got[64];
	struct rig r;

	(void)state;
	assert_non_null(json);
	int np = load_ids(json, "prompt_ids", prompt, 16);
	int ng = load_ids(json, "generated_ids", want, 64);
	assert_int_equal(np, 4);
	assert_int_equal(ng, 64);
	rig_open(&r, path, GGML_TYPE_F32, 1, 64, 1);
	greedy(&r, prompt, np, got, ng);
	assert_memory_equal(got, want, sizeof(got));
	rig_close(&r);
	free(json);
}

static void test_stories_logits(void **state)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s", TU_SHARED_OR_SKIP("models/stories260K.gguf"));
	char *json = tu_read_file(TU_SHARED_OR_SKIP("golden/stories260K/logits_once_upon_a_time.json"),
				  NULL);
	double want[512];
	int32_t prompt[8];
	struct rig r;
	double max_diff = 0;

	(void)state;
	assert_non_null(json);
	assert_int_equal(load_ids(json, "prompt_ids", prompt, 8), 5);
	assert_int_equal(tu_json_numbers(json, "all_logits_numpy_f64", want, 512), 512);
	rig_open(&r, path, GGML_TYPE_F32, 1, 64, 64);
	assert_int_equal(llm_seq_eval(&r.seq, prompt, 5, r.logits, NULL), 0);
	for (int i = 0; i < 512; i++)
		max_diff = fmax(max_diff, fabs(r.logits[i] - want[i]));
	print_message("stories260K logits vs f64 reference: max |diff| %.3g (F32 KV)\n", max_diff);
	assert_true(max_diff < 1e-4);
	rig_close(&r);
	free(json);
}

static void check_random_tiny(const char *type)
{
	char rel[128], mrel[128];
	double want[354], tol;
	int32_t prompt[64], want_ids[64], got[64];
	struct rig r;
	double max_diff = 0;

	snprintf(mrel, sizeof(mrel), "models/tiny-bytes-%s.gguf", type);
	snprintf(rel, sizeof(rel), "golden/random-tiny/%s.json", type);
	char model[1024];
	snprintf(model, sizeof(model), "%s", TU_SHARED_OR_SKIP(mrel));
	char *json = tu_read_file(TU_SHARED_OR_SKIP(rel), NULL);
	assert_non_null(json);
	int np = load_ids(json, "prompt_ids", prompt, 64);
	int ng = load_ids(json, "generated_ids_numpy_f64", want_ids, 64);
	assert_int_equal(tu_json_numbers(json, "first_gen_logits_all_numpy_f64", want, 354), 354);
	assert_int_equal(ng, 32);

	rig_open(&r, model, GGML_TYPE_F32, 1, 64, 1);
	greedy(&r, prompt, np, got, ng);
	assert_memory_equal(got, want_ids, sizeof(int32_t) * (size_t)ng);
	llm_seq_reset(&r.seq);
	assert_int_equal(llm_seq_eval(&r.seq, prompt, np, r.logits, NULL), 0);
	for (int i = 0; i < 354; i++)
		max_diff = fmax(max_diff, fabs(r.logits[i] - want[i]));
	/*
	 * F32 and F16 weights run with f32 activations: close to the f64
	 * reference.  Q8_0 quantizes activations to 8 bits like ggml, whose
	 * own deviation is 3.9e-3 here.
	 */
	tol = strcmp(type, "q8_0") == 0 ? 1e-2 : 1e-4;
	print_message("random-tiny %s logits vs f64 reference: max |diff| %.3g (tolerance %g)\n",
		      type, max_diff, tol);
	assert_true(max_diff < tol);
	rig_close(&r);
	free(json);
}

static void test_random_tiny_f32(void **state)
{
	(void)state;
	check_random_tiny("f32");
}

static void test_random_tiny_f16(void **state)
{
	(void)state;
	check_random_tiny("f16");
}

static void test_random_tiny_q8_0(void **state)
{
	(void)state;
	check_random_tiny("q8_0");
}

/* A synthetic model of every weight type in a temp dir. */
static char *make_model(char *dir, enum ggml_type type, bool tied)
{
	struct synth_params p;
	char *path;

	synth_params_init(&p);
	p.dim = 64;
	p.n_layers = 2;
	p.n_heads = 4;
	p.n_kv_heads = 2;
	p.ffn = 96;
	p.ctx = 256;
	p.type = type;
	p.tied = tied;
	p.seed = 5;
	assert_true(asprintf(&path, "%s/m-%d.gguf", dir, (int)type) > 0);
	assert_int_equal(synth_write_file(&p, path, NULL), 0);
	return path;
}

/*
 * The logits of a token do not depend on how the prompt was batched or on
 * the thread count: one chunk, token by token, chunks of 7, and 2 threads
 * all give bit-identical logits (DESIGN.md: batch invariance on CPU).
 */
static void test_batch_and_thread_invariance(void **state)
{
	const enum ggml_type types[] = { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16,
					 GGML_TYPE_Q8_0, GGML_TYPE_Q4_0 };
	char *dir = tu_mkdtemp();
	int32_t ids[40];

	(void)state;
	for (int i = 0; i < 40; i++)
		ids[i] = (i * 37 + 11) % 354;
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		char *path = make_model(dir, types[t], t % 2);
		struct rig a, b;
		size_t nv = 354;

		rig_open(&a, path, GGML_TYPE_F16, 1, 64, 64);
		rig_open(&b, path, GGML_TYPE_F16, 2, 7, 7);
		float *all = calloc(40 * nv, sizeof(float));
		float *step = calloc(7 * nv, sizeof(float));
		assert_non_null(all);
		assert_non_null(step);
		/* a: the whole prompt in one step, every position's logits. */
		assert_int_equal(llm_seq_eval(&a.seq, ids, 40, a.logits, all), 0);
		/* b: 2 threads, chunks of at most 7 tokens, then token by token. */
		for (int i = 0; i < 40;) {
			int n = i < 21 ? 7 : 1;
			assert_int_equal(llm_seq_eval(&b.seq, ids + i, n, b.logits, step), 0);
			for (int j = 0; j < n; j++) {
				if (memcmp(step + (size_t)j * nv, all + (size_t)(i + j) * nv,
					   nv * sizeof(float)) != 0)
					fail_msg("%s: position %d differs between batchings",
						 ggml_type_name(types[t]), i + j);
			}
			i += n;
		}
		free(all);
		free(step);
		rig_close(&a);
		rig_close(&b);
		free(path);
	}
	tu_rmtree(dir);
}

static void test_bad_input(void **state)
{
	char *dir = tu_mkdtemp();
	char *path = make_model(dir, GGML_TYPE_F32, false);
	struct rig r;
	int32_t ids[300];

	(void)state;
	for (int i = 0; i < 300; i++)
		ids[i] = i % 300;
	rig_open(&r, path, GGML_TYPE_F16, 1, 64, 1);
	/* The context is 256 tokens. */
	assert_int_equal(llm_n_ctx(r.llm), 256);
	assert_int_equal(llm_seq_eval(&r.seq, ids, 257, r.logits, NULL), -ENOSPC);
	assert_int_equal(llm_seq_eval(&r.seq, ids, 256, r.logits, NULL), 0);
	assert_int_equal(llm_seq_eval(&r.seq, ids, 1, r.logits, NULL), -ENOSPC);
	llm_seq_reset(&r.seq);
	int32_t bad = 354;
	assert_int_equal(llm_seq_eval(&r.seq, &bad, 1, r.logits, NULL), -EINVAL);
	bad = -1;
	assert_int_equal(llm_seq_eval(&r.seq, &bad, 1, r.logits, NULL), -EINVAL);
	assert_int_equal(llm_seq_eval(&r.seq, ids, 0, r.logits, NULL), -EINVAL);
	rig_close(&r);

	/* Unknown backend and instruction set. */
	struct backend *be;
	struct be_step_limits lim = { 1, 1, 1 };
	assert_int_equal(backend_open("tpu", &(struct be_options){ 0 }, &lim, &be), -ENOENT);
	assert_int_equal(backend_open("cpu", &(struct be_options){ .isa = "sse9" }, &lim, &be),
			 -EOPNOTSUPP);
	free(path);
	tu_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stories_greedy_f32kv),
		cmocka_unit_test(test_stories_greedy_f16kv),
		cmocka_unit_test(test_stories_tied_greedy),
		cmocka_unit_test(test_stories_nobos),
		cmocka_unit_test(test_stories_logits),
		cmocka_unit_test(test_random_tiny_f32),
		cmocka_unit_test(test_random_tiny_f16),
		cmocka_unit_test(test_random_tiny_q8_0),
		cmocka_unit_test(test_batch_and_thread_invariance),
		cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests_name("llama", tests, NULL, NULL);
}
