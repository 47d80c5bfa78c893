// SPDX-License-Identifier: MIT
/*
 * Scheduler benchmark: decode throughput of continuous batching at 1, 8, 32
 * and 64 concurrent sequences, and what the scheduler itself costs per step
 * next to the forward pass.
 *
 *   bench_sched MODEL.gguf [threads]
 *
 * Each round submits C requests with distinct random prompts of PROMPT
 * tokens (prefix cache off) and DECODE tokens to generate (EOS ignored), and
 * steps until all finish.  Only pure decode steps with all C sequences in
 * the batch are measured (no prompt tokens in the step), so the figure is
 * the steady-state decode rate at batch C.  DUET_BENCH_SEQS="1 8" overrides
 * the concurrencies.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drivers/backend.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/model.h"
#include "runtime/model/sampler.h"
#include "runtime/sched/sched.h"

#define PROMPT 256
#define DECODE 64
#define MAX_SEQS 64
#define BATCH_TOKENS 512
#define N_CTX 512
#define BLOCK 16

struct figures {
	int seqs;
	uint64_t steps, tokens;
	uint64_t wall_ns, step_ns, sched_ns; /* over the measured steps */
	uint64_t prefill_wall_ns;	     /* from the first submit to the last prompt token */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool never_eog(void *ctx, int32_t t)
{
	return false;
}

static uint64_t rng(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* One round at concurrency seqs; prompt and decode lengths as given. */
static int round_run(struct llm *llm, int seqs, int prompt_len, int decode, uint64_t seed,
		     struct figures *fig)
{
	struct sched_config sc = {
		.max_batch_tokens = BATCH_TOKENS,
		.max_batch_seqs = seqs,
		.max_requests = seqs,
		.prefix_cache = false,
	};
	int n_vocab = (int)llm_model(llm)->n_vocab;
	int32_t *prompt = malloc(sizeof(int32_t) * (size_t)prompt_len);
	uint64_t ids[MAX_SEQS], x = seed | 1, t0;
	struct sched_stats a, b;
	struct sched *s = NULL;
	bool prefilling = true;
	int ret;

	memset(fig, 0, sizeof(*fig));
	fig->seqs = seqs;
	if (!prompt)
		return -ENOMEM;
	ret = sched_create(llm, &sc, never_eog, NULL, &s);
	if (ret)
		goto out;
	t0 = mono_ns();
	for (int i = 0; i < seqs; i++) {
		struct sched_request q = {
			.prompt = prompt,
			.n_prompt = prompt_len,
			.max_tokens = decode,
			.sampling = smp_params_default(),
		};

		q.sampling.temperature = 0;
		for (int k = 0; k < prompt_len; k++)
			prompt[k] = (int32_t)(rng(&x) % (uint64_t)n_vocab);
		ret = sched_submit(s, &q, mono_ns(), &ids[i]);
		if (ret)
			goto out_sched;
	}
	while (sched_busy(s)) {
		uint64_t w0, w1;
		int k;

		sched_get_stats(s, &a);
		w0 = mono_ns();
		k = sched_step(s, mono_ns);
		w1 = mono_ns();
		if (k < 0) {
			ret = k;
			goto out_sched;
		}
		sched_get_stats(s, &b);
		if (b.prefill_tokens != a.prefill_tokens)
			continue;
		if (prefilling) {
			fig->prefill_wall_ns = w0 - t0;
			prefilling = false;
		}
		if (b.decode_tokens - a.decode_tokens != (uint64_t)seqs)
			continue;
		fig->steps++;
		fig->tokens += b.decode_tokens - a.decode_tokens;
		fig->wall_ns += w1 - w0;
		fig->step_ns += b.step_ns - a.step_ns;
		fig->sched_ns += b.sched_ns - a.sched_ns;
	}
	for (int i = 0; i < seqs; i++) {
		const struct sched_info *in = sched_get(s, ids[i]);

		if (!in || in->finish != SCHED_FINISH_LENGTH || in->n_gen != decode) {
			fprintf(stderr, "bench_sched: request %d did not produce %d tokens\n", i,
				decode);
			ret = -EPROTO;
		}
		sched_release(s, ids[i]);
	}
out_sched:
	sched_destroy(s);
out:
	free(prompt);
	return ret;
}

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

int main(int argc, char **argv)
{
	static int cpus[1024];
	int seqs_list[16] = { 1, 8, 32, 64 }, n_list = 4;
	struct be_options bo = { 0 };
	struct be_step_limits lim = {
		.max_tokens = BATCH_TOKENS,
		.max_seqs = MAX_SEQS,
		.max_table = MAX_SEQS * (N_CTX / BLOCK),
	};
	struct llm_options lo = {
		.kv_dtype = GGML_TYPE_F16,
		.n_ctx = N_CTX,
		.block_tokens = BLOCK,
		/* Every sequence's prompt and output, plus a block of slack each. */
		.n_blocks = MAX_SEQS * ((PROMPT + DECODE + BLOCK - 1) / BLOCK + 1),
		.max_tokens = BATCH_TOKENS,
		.max_seqs = MAX_SEQS,
		.max_out = MAX_SEQS,
	};
	struct gguf_file *f = NULL;
	struct model_desc *m = NULL;
	struct backend *be = NULL;
	struct llm *llm = NULL;
	struct figures fig;
	char err[512], desc[256];
	const char *env = getenv("DUET_BENCH_SEQS");
	int ret = 1;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: bench_sched MODEL.gguf [threads]\n");
		return 2;
	}
	duet_log_set_level(DUET_LOG_WARN);
	if (env) {
		char *end;

		n_list = 0;
		for (long v = strtol(env, &end, 10); end != env && n_list < 16;
		     v = strtol(env, &end, 10)) {
			if (v < 1 || v > MAX_SEQS) {
				fprintf(stderr,
					"bench_sched: DUET_BENCH_SEQS: %ld not in [1, %d]\n", v,
					MAX_SEQS);
				return 2;
			}
			seqs_list[n_list++] = (int)v;
			env = end;
		}
	}
	bo.n_cpus = allowed_cpus(cpus, 1024);
	bo.cpus = bo.n_cpus > 0 ? cpus : NULL;
	bo.threads = argc == 3 ? atoi(argv[2]) : 0;
	if (gguf_open(argv[1], &f, err, sizeof(err))) {
		fprintf(stderr, "bench_sched: %s\n", err);
		goto out;
	}
	if (model_desc_load(f, 0, &m, err, sizeof(err))) {
		fprintf(stderr, "bench_sched: %s: %s\n", argv[1], err);
		goto out_gguf;
	}
	if ((int)m->n_ctx < PROMPT + DECODE) {
		fprintf(stderr, "bench_sched: the model's context (%u) is under %d tokens\n",
			m->n_ctx, PROMPT + DECODE);
		goto out_model;
	}
	if ((ret = backend_open("cpu", &bo, &lim, &be))) {
		fprintf(stderr, "bench_sched: backend_open: %s\n", duet_strerror(ret));
		goto out_model;
	}
	if ((ret = llm_create(be, m, &lo, &llm))) {
		fprintf(stderr, "bench_sched: llm_create: %s\n", duet_strerror(ret));
		goto out_backend;
	}
	backend_describe(be, desc, sizeof(desc));
	model_desc_summary(m, err, sizeof(err));
	printf("bench_sched: %s\n  %s; prompts of %d tokens, %d decoded each; only full decode "
	       "steps are timed\n",
	       err, desc, PROMPT, DECODE);
	/* Warm-up: page in the weights, start the threads. */
	if ((ret = round_run(llm, 1, 16, 4, 99, &fig)))
		goto fail;
	printf("| seqs | decode tok/s | steps | step ms | forward ms | sched us/step | sched %% | "
	       "prefill tok/s |\n");
	printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < n_list; i++) {
		double steps;

		if ((ret = round_run(llm, seqs_list[i], PROMPT, DECODE, 1 + (uint64_t)i, &fig)))
			goto fail;
		steps = fig.steps ? (double)fig.steps : 1;
		printf("| %d | %.1f | %llu | %.3f | %.3f | %.2f | %.2f | %.1f |\n", fig.seqs,
		       fig.wall_ns ? fig.tokens / (fig.wall_ns / 1e9) : 0.0,
		       (unsigned long long)fig.steps, fig.wall_ns / 1e6 / steps,
		       fig.step_ns / 1e6 / steps, fig.sched_ns / 1e3 / steps,
		       fig.step_ns + fig.sched_ns
			       ? 100.0 * fig.sched_ns / (double)(fig.step_ns + fig.sched_ns)
			       : 0.0,
		       fig.prefill_wall_ns ? (double)fig.seqs * PROMPT / (fig.prefill_wall_ns / 1e9)
					   : 0.0);
		fflush(stdout);
	}
	ret = 0;
	goto out_llm;
fail:
	fprintf(stderr, "bench_sched: %s\n", duet_strerror(ret));
	ret = 1;
out_llm:
	llm_destroy(llm);
out_backend:
	backend_close(be);
out_model:
	model_desc_free(m);
out_gguf:
	gguf_close(f);
out:
	return ret ? 1 : 0;
}
