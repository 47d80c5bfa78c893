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
#include <sys/mman.h>
#include <unistd.h>

#include "drivers/backend.h"
#include "runtime/core/err.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/model.h"
#include "runtime/model/synth.h"
#include "kernels/cpu/quant.h"
#include "tests/unit/testutil.h"

struct rig {
	struct gguf_file *f;
	struct model_desc *m;
	struct backend *be;
	struct llm *llm;
	struct llm_seq seq;
	float *logits;
};

static bool rig_shared_kv; /* the next rig_open's pool in a memfd */

static void rig_open(struct rig *r, const char *path, enum ggml_type kv, int threads,
		     int max_tokens, int max_out)
{
	char err[512];
	struct be_options bo = { .threads = threads };
	struct be_step_limits lim = { .max_tokens = max_tokens, .max_seqs = 1, .max_table = 4096 };
	struct llm_options lo = { .kv_dtype = kv,
				  .max_tokens = max_tokens,
				  .max_out = max_out,
				  .shared_kv = rig_shared_kv };

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
	"once_upon_a_time", "the_little_dog",	 "empty",
	"lily_and_tom",	    "newline_in_prompt", "leading_space",
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
						fail_msg(
							"%s (%s, KV F16): step %d picks %d, reference %d "
							"is %.4g below it",
							stories_cases[c], model_rel, i, top,
							want[i], gap);
					ties++;
				}
				if (i + 1 < ng)
					assert_int_equal(
						llm_seq_eval(&r.seq, &want[i], 1, r.logits, NULL),
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
	char *json = tu_read_file(
		TU_SHARED_OR_SKIP("golden/stories260K/once_upon_a_time.nobos.json"), NULL);
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
	char *json = tu_read_file(
		TU_SHARED_OR_SKIP("golden/stories260K/logits_once_upon_a_time.json"), NULL);
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
static char *make_model_arch(char *dir, enum ggml_type type, bool tied, bool qwen2)
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
	p.qwen2 = qwen2;
	p.seed = 5;
	assert_true(asprintf(&path, "%s/m-%d-%d.gguf", dir, (int)type, (int)qwen2) > 0);
	assert_int_equal(synth_write_file(&p, path, NULL), 0);
	return path;
}

static char *make_model(char *dir, enum ggml_type type, bool tied)
{
	return make_model_arch(dir, type, tied, false);
}

/* --- an independent f64 forward pass ------------------------------------------ */

/* The tensor's values as the file holds them (dequantized), as doubles. */
static double *deq(const struct gguf_tensor *t)
{
	size_t n = (size_t)t->n_elements, cols = (size_t)t->ne[0], rows = n / cols;
	size_t rb = (size_t)t->size / rows;
	float *row = calloc(cols, sizeof(float));
	double *out = calloc(n, sizeof(double));

	assert_non_null(row);
	assert_non_null(out);
	for (size_t r = 0; r < rows; r++) {
		const uint8_t *src = (const uint8_t *)t->data + r * rb;
		switch (t->type) {
		case GGML_TYPE_F32:
			memcpy(row, src, cols * sizeof(float));
			break;
		case GGML_TYPE_F16:
			quant_row_from_fp16((const uint16_t *)src, row, cols);
			break;
		case GGML_TYPE_BF16:
			quant_row_from_bf16((const uint16_t *)src, row, cols);
			break;
		case GGML_TYPE_Q8_0:
			quant_dequant_row_q8_0((const void *)src, row, cols);
			break;
		case GGML_TYPE_Q4_0:
			quant_dequant_row_q4_0((const void *)src, row, cols);
			break;
		default:
			fail_msg("deq: type %d", t->type);
		}
		for (size_t c = 0; c < cols; c++)
			out[r * cols + c] = row[c];
	}
	free(row);
	return out;
}

/* y[r] = sum_c W[r][c] x[c] (+ b[r]); W is [rows][cols]. */
static void ref_mv(const double *w, const double *b, const double *x, double *y, int rows, int cols)
{
	for (int r = 0; r < rows; r++) {
		double acc = b ? b[r] : 0;
		for (int c = 0; c < cols; c++)
			acc += w[(size_t)r * cols + c] * x[c];
		y[r] = acc;
	}
}

static void ref_rmsnorm(const double *x, const double *w, double *y, int n, double eps)
{
	double ss = 0;

	for (int i = 0; i < n; i++)
		ss += x[i] * x[i];
	double k = 1.0 / sqrt(ss / n + eps);
	for (int i = 0; i < n; i++)
		y[i] = x[i] * k * w[i];
}

static void ref_rope(double *x, int n_heads, int hd, int rd, int pos, double base, bool neox)
{
	for (int h = 0; h < n_heads; h++) {
		double *v = x + (size_t)h * hd;
		for (int i = 0; i < rd / 2; i++) {
			double th = pos * pow(base, -2.0 * i / rd), c = cos(th), s = sin(th);
			int a = neox ? i : 2 * i, b = neox ? i + rd / 2 : 2 * i + 1;
			double x0 = v[a], x1 = v[b];
			v[a] = x0 * c - x1 * s;
			v[b] = x0 * s + x1 * c;
		}
	}
}

/* Logits after the last of n tokens, computed token by token in double. */
static void ref_forward(const struct model_desc *m, const int32_t *ids, int n, double *logits)
{
	int dim = (int)m->dim, hd = (int)m->head_dim, nh = (int)m->n_heads,
	    nkv = (int)m->n_kv_heads;
	int qd = nh * hd, kvd = nkv * hd, ffn = (int)m->ffn, nv = (int)m->n_vocab;
	double *emb = deq(m->tok_embd), *outw = m->tied_output ? emb : deq(m->output);
	double *onorm = deq(m->output_norm);
	double *kc = calloc((size_t)m->n_layers * n * kvd, sizeof(double));
	double *vc = calloc((size_t)m->n_layers * n * kvd, sizeof(double));
	double *x = calloc((size_t)dim, sizeof(double)), *h = calloc((size_t)dim, sizeof(double));
	double *q = calloc((size_t)qd, sizeof(double)), *att = calloc((size_t)qd, sizeof(double));
	double *g = calloc((size_t)ffn, sizeof(double)), *u = calloc((size_t)ffn, sizeof(double));
	double *sc = calloc((size_t)n, sizeof(double)), *o = calloc((size_t)dim, sizeof(double));

	for (int t = 0; t < n; t++) {
		memcpy(x, emb + (size_t)ids[t] * dim, sizeof(double) * (size_t)dim);
		for (uint32_t l = 0; l < m->n_layers; l++) {
			const struct model_layer *L = &m->layers[l];
			double *an = deq(L->attn_norm), *wq = deq(L->wq), *wk = deq(L->wk);
			double *wv = deq(L->wv), *wo = deq(L->wo), *fn = deq(L->ffn_norm);
			double *wg = deq(L->w_gate), *wu = deq(L->w_up), *wd = deq(L->w_down);
			double *bq = L->bq ? deq(L->bq) : NULL, *bk = L->bk ? deq(L->bk) : NULL;
			double *bv = L->bv ? deq(L->bv) : NULL;
			double *kl = kc + (size_t)l * n * kvd, *vl = vc + (size_t)l * n * kvd;

			ref_rmsnorm(x, an, h, dim, m->rms_eps);
			ref_mv(wq, bq, h, q, qd, dim);
			ref_mv(wk, bk, h, kl + (size_t)t * kvd, kvd, dim);
			ref_mv(wv, bv, h, vl + (size_t)t * kvd, kvd, dim);
			bool neox = m->rope_mode == MODEL_ROPE_NEOX;
			ref_rope(q, nh, hd, (int)m->rope_dim, t, m->rope_base, neox);
			ref_rope(kl + (size_t)t * kvd, nkv, hd, (int)m->rope_dim, t, m->rope_base,
				 neox);
			for (int hh = 0; hh < nh; hh++) {
				int kh = hh / (nh / nkv);
				double mx = -INFINITY, sum = 0;
				for (int s2 = 0; s2 <= t; s2++) {
					double d = 0;
					for (int j = 0; j < hd; j++)
						d += q[hh * hd + j] *
						     kl[(size_t)s2 * kvd + kh * hd + j];
					sc[s2] = d / sqrt((double)hd);
					mx = fmax(mx, sc[s2]);
				}
				for (int s2 = 0; s2 <= t; s2++)
					sum += (sc[s2] = exp(sc[s2] - mx));
				for (int j = 0; j < hd; j++) {
					double a = 0;
					for (int s2 = 0; s2 <= t; s2++)
						a += sc[s2] / sum *
						     vl[(size_t)s2 * kvd + kh * hd + j];
					att[hh * hd + j] = a;
				}
			}
			ref_mv(wo, NULL, att, o, dim, qd);
			for (int i = 0; i < dim; i++)
				x[i] += o[i];
			ref_rmsnorm(x, fn, h, dim, m->rms_eps);
			ref_mv(wg, NULL, h, g, ffn, dim);
			ref_mv(wu, NULL, h, u, ffn, dim);
			for (int i = 0; i < ffn; i++)
				g[i] = g[i] / (1 + exp(-g[i])) * u[i];
			ref_mv(wd, NULL, g, o, dim, ffn);
			for (int i = 0; i < dim; i++)
				x[i] += o[i];
			double *all[] = { an, wq, wk, wv, wo, fn, wg, wu, wd, bq, bk, bv };
			for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
				free(all[i]);
		}
	}
	ref_rmsnorm(x, onorm, h, dim, m->rms_eps);
	ref_mv(outw, NULL, h, logits, nv, dim);
	if (outw != emb)
		free(outw);
	free(emb);
	free(onorm);
	free(kc);
	free(vc);
	free(x);
	free(h);
	free(q);
	free(att);
	free(g);
	free(u);
	free(sc);
	free(o);
}

/*
 * Llama and Qwen2 (q/k/v biases, NeoX RoPE) synthetic models of every weight
 * type against the f64 forward pass above.  F32/F16/BF16 run with f32
 * activations (tight); Q8_0/Q4_0 quantize activations to 8 bits like ggml.
 */
static void test_reference_forward(void **state)
{
	const enum ggml_type types[] = { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16,
					 GGML_TYPE_Q8_0, GGML_TYPE_Q4_0 };
	char *dir = tu_mkdtemp();
	int32_t ids[21];

	(void)state;
	for (int i = 0; i < 21; i++)
		ids[i] = (i * 53 + 7) % 354;
	for (int qwen2 = 0; qwen2 < 2; qwen2++) {
		for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
			char *path = make_model_arch(dir, types[t], t == 2, qwen2);
			double want[354], max_diff = 0, max_abs = 0;
			struct rig r;

			rig_open(&r, path, GGML_TYPE_F32, 2, 8, 1);
			assert_int_equal(r.m->arch, qwen2 ? MODEL_ARCH_QWEN2 : MODEL_ARCH_LLAMA);
			assert_int_equal(r.m->layers[0].bq != NULL, qwen2);
			assert_int_equal(llm_seq_eval(&r.seq, ids, 21, r.logits, NULL), 0);
			ref_forward(r.m, ids, 21, want);
			for (int i = 0; i < 354; i++) {
				max_diff = fmax(max_diff, fabs(r.logits[i] - want[i]));
				max_abs = fmax(max_abs, fabs(want[i]));
			}
			bool q8 = types[t] == GGML_TYPE_Q8_0 || types[t] == GGML_TYPE_Q4_0;
			double tol = (q8 ? 2e-2 : 1e-4) * fmax(1.0, max_abs);
			print_message(
				"%s %s: max |diff| %.3g vs f64 (max |logit| %.3g, tolerance %.3g)\n",
				qwen2 ? "qwen2" : "llama", ggml_type_name(types[t]), max_diff,
				max_abs, tol);
			assert_true(max_diff < tol);
			rig_close(&r);
			free(path);
		}
	}
	tu_rmtree(dir);
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

/* The KV pool sized from a byte budget, and on huge pages when asked (or a fallback). */
static void test_kv_budget_and_hugepages(void **state)
{
	char *dir = tu_mkdtemp();
	char *path = make_model(dir, GGML_TYPE_F32, false);
	char err[256];
	struct gguf_file *f;
	struct model_desc *m;
	struct backend *be;
	struct llm *llm;
	struct be_step_limits lim = { 16, 1, 64 };
	/* 2 layers x 2 (K,V) x 16 tokens x 2 kv heads x 16 dims x 2 bytes = 4096 per block */
	struct llm_options lo = { .kv_dtype = GGML_TYPE_F16,
				  .kv_budget = 10 * 4096 + 100,
				  .max_tokens = 16,
				  .hugepages = true };

	(void)state;
	assert_int_equal(gguf_open(path, &f, err, sizeof(err)), 0);
	assert_int_equal(model_desc_load(f, 0, &m, err, sizeof(err)), 0);
	assert_int_equal(backend_open("cpu", &(struct be_options){ .threads = 1 }, &lim, &be), 0);
	tu_log_capture_start();
	assert_int_equal(llm_create(be, m, &lo, &llm), 0);
	tu_log_capture_stop();
	assert_int_equal(llm_n_blocks(llm), 10);
	struct be_region reg;
	assert_int_equal(be_kv_region(be, llm_kv(llm), 1, &reg), 0);
	assert_int_equal(reg.bytes, 10 * 4096 / 2);
	llm_destroy(llm);
	lo.kv_budget = 100; /* not even one block */
	assert_int_equal(llm_create(be, m, &lo, &llm), -EINVAL);
	backend_close(be);
	model_desc_free(m);
	gguf_close(f);
	free(path);
	tu_rmtree(dir);
}

static int transplant_layer_fail(void *ctx, int layer)
{
	(void)ctx;
	return layer == 1 ? -ECANCELED : 0;
}

/* What the layer hook of test_kv_transplant saw and where it wrote. */
struct transplant {
	struct rig *src;
	uint8_t *dst; /* the decode pool, through a second mapping of its memfd */
	int n_blocks; /* blocks the prompt occupies so far (identity table) */
	int calls, last_layer, out_of_order;
};

/* Layer-wise "transfer": copy this layer's blocks of the source pool into the destination. */
static int transplant_layer(void *ctx, int layer)
{
	struct transplant *t = ctx;
	struct be_region pool;
	size_t off, len;

	if (layer != (t->last_layer + 1) % (int)t->src->m->n_layers)
		t->out_of_order++;
	t->last_layer = layer;
	t->calls++;
	if (llm_kv_range(t->src->llm, layer, 0, t->n_blocks, &off, &len) ||
	    llm_kv_pool(t->src->llm, &pool))
		return -EIO;
	memcpy(t->dst + off, (const uint8_t *)pool.base + off, len);
	return 0;
}

/*
 * Disaggregation's core property, in one process: prefill on one engine,
 * its KV copied layer by layer (from the layer hook, by block ranges) into
 * another engine's shared pool through a second mapping of the memfd, and
 * decoding continued there gives bit-identical logits to decoding on the
 * first engine.
 */
static void test_kv_transplant(void **state)
{
	char *dir = tu_mkdtemp();
	char *path = make_model(dir, GGML_TYPE_F32, false);
	struct rig a, b;
	struct transplant t = { .last_layer = -1 };
	struct be_region pool;
	int32_t ids[40];
	size_t off, len;
	float *la;
	int bt, n_layers;

	(void)state;
	for (int i = 0; i < 40; i++)
		ids[i] = (i * 7 + 3) % 50;
	rig_open(&a, path, GGML_TYPE_F16, 1, 16, 1);
	rig_shared_kv = true;
	rig_open(&b, path, GGML_TYPE_F16, 1, 16, 1);
	rig_shared_kv = false;
	n_layers = (int)a.m->n_layers;
	bt = llm_block_tokens(a.llm);
	la = calloc(a.m->n_vocab, sizeof(float));
	assert_non_null(la);

	/* The decode pool is a memfd; the "peer" maps it a second time. */
	assert_int_equal(llm_kv_pool(b.llm, &pool), 0);
	assert_true(pool.fd >= 0);
	assert_int_equal(pool.kind, BE_MEM_HOST_SHARED);
	t.dst = mmap(NULL, pool.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, pool.fd, 0);
	assert_true(t.dst != MAP_FAILED);
	t.src = &a;

	/* Ranges: contiguous per layer, adjacent blocks merge, bounds refused. */
	assert_int_equal(llm_kv_range(a.llm, 1, 2, 3, &off, &len), 0);
	{
		size_t o1, l1;

		assert_int_equal(llm_kv_range(a.llm, 1, 2, 1, &o1, &l1), 0);
		assert_int_equal(off, o1);
		assert_int_equal(len, 3 * l1);
		assert_int_equal(llm_kv_range(a.llm, 1, 5, 1, &o1, &l1), 0);
		assert_int_equal(o1, off + len);
	}
	assert_int_equal(llm_kv_range(a.llm, n_layers, 0, 1, &off, &len), -EINVAL);
	assert_int_equal(llm_kv_range(a.llm, 0, llm_n_blocks(a.llm), 1, &off, &len), -EINVAL);
	assert_int_equal(llm_kv_range(a.llm, 0, -1, 1, &off, &len), -EINVAL);
	assert_int_equal(llm_kv_range(a.llm, 0, 0, 0, &off, &len), -EINVAL);

	/* Prefill on a in chunks of 16, every layer's KV shipped as it is computed. */
	t.n_blocks = (40 + bt - 1) / bt;
	llm_set_layer_hook(a.llm, transplant_layer, &t);
	assert_int_equal(llm_seq_eval(&a.seq, ids, 40, la, NULL), 0);
	llm_set_layer_hook(a.llm, NULL, NULL);
	assert_int_equal(t.calls, 3 * n_layers); /* 40 tokens = 3 steps of at most 16 */
	assert_int_equal(t.out_of_order, 0);

	/* b takes over at position 40 with a's first token; both decode 8 tokens greedily. */
	b.seq.n_past = 40;
	for (int step = 0; step < 8; step++) {
		int32_t next = argmax(la, (int)a.m->n_vocab);

		assert_int_equal(llm_seq_eval(&a.seq, &next, 1, la, NULL), 0);
		assert_int_equal(llm_seq_eval(&b.seq, &next, 1, b.logits, NULL), 0);
		assert_memory_equal(la, b.logits, sizeof(float) * a.m->n_vocab);
	}

	/* A hook that fails aborts the step with its code. */
	t.src = NULL;
	llm_set_layer_hook(a.llm, transplant_layer_fail, NULL);
	assert_int_equal(llm_seq_eval(&a.seq, ids, 1, la, NULL), -ECANCELED);
	llm_set_layer_hook(a.llm, NULL, NULL);

	munmap(t.dst, pool.bytes);
	free(la);
	rig_close(&a);
	rig_close(&b);
	free(path);
	tu_rmtree(dir);
}

/* Copy-on-write support: kv_copy moves n token rows of K and V in every layer. */
static void test_kv_copy(void **state)
{
	char *dir = tu_mkdtemp();
	char *path = make_model(dir, GGML_TYPE_F32, false);
	struct rig r;
	int32_t ids[40];
	struct be_region reg;

	(void)state;
	for (int i = 0; i < 40; i++)
		ids[i] = i + 3;
	rig_open(&r, path, GGML_TYPE_F16, 1, 64, 1);
	assert_int_equal(llm_seq_eval(&r.seq, ids, 40, r.logits, NULL), 0);
	struct be_kv *kv = llm_kv(r.llm);
	int bt = llm_block_tokens(r.llm);
	size_t row = (size_t)r.m->n_kv_heads * r.m->head_dim * 2; /* F16 */
	size_t block = 2 * (size_t)bt * row;
	assert_int_equal(be_kv_copy(r.be, kv, 1, 9, 5), 0);
	for (int layer = 0; layer < (int)r.m->n_layers; layer++) {
		assert_int_equal(be_kv_region(r.be, kv, layer, &reg), 0);
		const uint8_t *b = reg.base;
		/* K rows 0..4 and V rows 0..4 of block 1 now also in block 9 */
		assert_memory_equal(b + 9 * block, b + 1 * block, 5 * row);
		assert_memory_equal(b + 9 * block + block / 2, b + 1 * block + block / 2, 5 * row);
		/* row 5 of block 9 untouched (zero: never written) */
		for (size_t i = 0; i < row; i++)
			assert_int_equal(b[9 * block + 5 * row + i], 0);
	}
	assert_int_equal(be_kv_copy(r.be, kv, 1, 1, 5), -EINVAL);
	assert_int_equal(be_kv_copy(r.be, kv, 1, llm_n_blocks(r.llm), 5), -EINVAL);
	assert_int_equal(be_kv_copy(r.be, kv, 1, 2, bt + 1), -EINVAL);
	rig_close(&r);
	free(path);
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
		cmocka_unit_test(test_reference_forward),
		cmocka_unit_test(test_batch_and_thread_invariance),
		cmocka_unit_test(test_kv_copy),
		cmocka_unit_test(test_kv_transplant),
		cmocka_unit_test(test_kv_budget_and_hugepages),
		cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests_name("llama", tests, NULL, NULL);
}
