// SPDX-License-Identifier: MIT
/*
 * Continuous batching: requests give exactly the tokens they give alone,
 * whatever the batch, the chunk size, preemption and prefix-cache hits; the
 * prefix cache computes only the suffix and never crosses tenants; the
 * stories260K goldens still pass through the batched path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drivers/backend.h"
#include "drivers/net/xfer.h"
#include "runtime/core/err.h"
#include "runtime/kv/kv.h"
#include "runtime/model/llama.h"
#include "runtime/model/synth.h"
#include "runtime/sched/sched.h"
#include "tests/unit/testutil.h"

static uint64_t clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct eng {
	struct gguf_file *f;
	struct model_desc *m;
	struct backend *be;
	struct llm *llm;
	struct sched *s;
};

static bool eng_shared_kv;	   /* the next eng_open's KV pool in a memfd */
static uint64_t eng_quarantine_ns; /* the next eng_open's kv_quarantine_ns */

static void eng_open(struct eng *e, const char *path, enum ggml_type kv, int batch_tokens,
		     int batch_seqs, int n_blocks, int threads)
{
	char err[512];
	struct be_options bo = { .threads = threads };
	struct llm_options lo = { .kv_dtype = kv,
				  .max_tokens = batch_tokens,
				  .max_seqs = batch_seqs,
				  .max_out = batch_seqs,
				  .n_blocks = n_blocks,
				  .shared_kv = eng_shared_kv };
	struct sched_config sc = { .max_batch_tokens = batch_tokens,
				   .max_batch_seqs = batch_seqs,
				   .max_requests = 64,
				   .prefix_cache = true,
				   .max_leases = 64,
				   .kv_quarantine_ns = eng_quarantine_ns };

	memset(e, 0, sizeof(*e));
	if (gguf_open(path, &e->f, err, sizeof(err)) ||
	    model_desc_load(e->f, 0, &e->m, err, sizeof(err)))
		fail_msg("%s", err);
	int n_ctx = (int)e->m->n_ctx;
	struct be_step_limits lim = { .max_tokens = batch_tokens,
				      .max_seqs = batch_seqs,
				      .max_table = batch_seqs * (n_ctx / 16 + 1) };
	assert_int_equal(backend_open("cpu", &bo, &lim, &e->be), 0);
	assert_int_equal(llm_create(e->be, e->m, &lo, &e->llm), 0);
	assert_int_equal(sched_create(e->llm, &sc, NULL, NULL, &e->s), 0);
}

static void eng_close(struct eng *e)
{
	assert_int_equal(kv_pool_check(sched_pool(e->s)), 0);
	sched_destroy(e->s);
	llm_destroy(e->llm);
	backend_close(e->be);
	model_desc_free(e->m);
	gguf_close(e->f);
}

static void run_all(struct eng *e)
{
	int guard = 0;

	while (sched_busy(e->s)) {
		int ret = sched_step(e->s, clock_ns);
		assert_true(ret >= 0);
		assert_int_equal(kv_pool_check(sched_pool(e->s)), 0);
		assert_true(++guard < 100000);
	}
}

/* --- requests ---------------------------------------------------------------- */

#define N_REQ 32
#define MAX_PROMPT 120
#define GEN 12
#define JOB_TOP 3 /* alternatives of the jobs that ask for logprobs */

struct job {
	int32_t prompt[MAX_PROMPT];
	int n_prompt;
	struct smp_params sp;
	uint64_t salt;
	bool logprobs; /* with JOB_TOP alternatives */
	int32_t want[GEN];
	int n_want;
	struct sched_logprob want_lp[GEN][1 + JOB_TOP];
};

/* Mixed lengths; every third shares a 40-token prefix; every fourth samples. */
static void make_jobs(struct job *jobs)
{
	uint64_t x = 12345;

	for (int j = 0; j < N_REQ; j++) {
		struct job *q = &jobs[j];
		q->n_prompt = 1 + (int)((j * 37 + 11) % MAX_PROMPT);
		for (int i = 0; i < q->n_prompt; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			q->prompt[i] = (int32_t)((x >> 33) % 354);
		}
		if (j % 3 == 0 && q->n_prompt > 40) {
			for (int i = 0; i < 40; i++)
				q->prompt[i] = (int32_t)((i * 7 + 3) % 354);
		}
		q->sp = smp_params_default();
		if (j % 4 == 0) {
			q->sp.temperature = 0.9f;
			q->sp.seed = (uint64_t)j;
		} else {
			q->sp.temperature = 0.0f;
		}
		q->salt = 42;
		q->logprobs = j % 2 == 1;
	}
}

static uint64_t submit(struct eng *e, const struct job *q)
{
	struct sched_request r = { .prompt = q->prompt,
				   .n_prompt = q->n_prompt,
				   .max_tokens = GEN,
				   .sampling = q->sp,
				   .salt = q->salt,
				   .logprobs = q->logprobs,
				   .n_top_logprobs = q->logprobs ? JOB_TOP : 0 };
	uint64_t id;

	assert_int_equal(sched_submit(e->s, &r, clock_ns(), &id), 0);
	return id;
}

static char *model_path(char **dir)
{
	struct synth_params p;
	char *path;

	*dir = tu_mkdtemp();
	synth_params_init(&p);
	p.dim = 64;
	p.n_layers = 2;
	p.n_heads = 4;
	p.n_kv_heads = 2;
	p.ffn = 96;
	p.ctx = 256;
	p.type = GGML_TYPE_Q8_0;
	p.seed = 11;
	assert_true(asprintf(&path, "%s/m.gguf", *dir) > 0);
	assert_int_equal(synth_write_file(&p, path, NULL), 0);
	return path;
}

/* Each request alone, one at a time, through a roomy scheduler. */
static void reference(const char *path, struct job *jobs)
{
	struct eng e;

	eng_open(&e, path, GGML_TYPE_F16, 512, 4, 0, 1);
	for (int j = 0; j < N_REQ; j++) {
		uint64_t id = submit(&e, &jobs[j]);
		run_all(&e);
		const struct sched_info *in = sched_get(e.s, id);
		assert_int_equal(in->n_gen, GEN);
		memcpy(jobs[j].want, in->tokens, sizeof(int32_t) * GEN);
		jobs[j].n_want = in->n_gen;
		if (jobs[j].logprobs) {
			assert_non_null(in->logprobs);
			assert_int_equal(in->n_top, JOB_TOP);
			memcpy(jobs[j].want_lp, in->logprobs, sizeof(jobs[j].want_lp));
		} else {
			assert_null(in->logprobs);
		}
		sched_release(e.s, id);
		/* Alone means alone: drop what the previous request left cached. */
		kv_pool_drop_cache(sched_pool(e.s));
	}
	eng_close(&e);
}

static void check_batched(const char *path, struct job *jobs, int batch_tokens, int n_blocks,
			  bool expect_preemption)
{
	struct eng e;
	uint64_t ids[N_REQ];
	struct sched_stats st;

	eng_open(&e, path, GGML_TYPE_F16, batch_tokens, 16, n_blocks, 2);
	for (int j = 0; j < N_REQ; j++)
		ids[j] = submit(&e, &jobs[j]);
	run_all(&e);
	for (int j = 0; j < N_REQ; j++) {
		const struct sched_info *in = sched_get(e.s, ids[j]);
		assert_int_equal(in->state, SCHED_FINISHED);
		assert_int_equal(in->finish, SCHED_FINISH_LENGTH);
		if (memcmp(in->tokens, jobs[j].want, sizeof(int32_t) * GEN) != 0)
			fail_msg(
				"request %d (prompt %d tokens, %s): batched tokens differ from alone "
				"(chunk %d, %d blocks, preempted %d times)",
				j, jobs[j].n_prompt,
				jobs[j].sp.temperature > 0 ? "sampled" : "greedy", batch_tokens,
				n_blocks, in->n_preempted);
		/* Logprobs too: recomputation after preemption does not record them twice. */
		if (jobs[j].logprobs &&
		    memcmp(in->logprobs, jobs[j].want_lp, sizeof(jobs[j].want_lp)) != 0)
			fail_msg(
				"request %d: batched logprobs differ from alone (preempted %d times)",
				j, in->n_preempted);
		if (!jobs[j].logprobs)
			assert_null(in->logprobs);
		assert_true(in->t_arrival <= in->t_first_sched);
		assert_true(in->t_first_sched <= in->t_first_token);
		assert_true(in->t_first_token <= in->t_finish);
		for (int i = 1; i < in->n_gen; i++)
			assert_true(in->t_tokens[i - 1] <= in->t_tokens[i]);
	}
	sched_get_stats(e.s, &st);
	print_message("chunk %3d, %3d blocks: %llu steps, %llu prefill + %llu decode tokens, "
		      "%llu preemptions, prefix hits %llu tokens\n",
		      batch_tokens, n_blocks, (unsigned long long)st.steps,
		      (unsigned long long)st.prefill_tokens, (unsigned long long)st.decode_tokens,
		      (unsigned long long)st.preemptions, (unsigned long long)st.kv.hit_tokens);
	if (expect_preemption)
		assert_true(st.preemptions > 0);
	for (int j = 0; j < N_REQ; j++)
		sched_release(e.s, ids[j]);
	eng_close(&e);
}

/* The layer hook of test_disaggregated: ship each layer's prompt blocks to the decode pool. */
struct ship {
	struct llm *src, *dst;
	const int32_t *blocks; /* the decode side's leased blocks, in table order */
	int n_blocks;
	int first; /* entries [0, first) are cached on the decode side: not shipped */
	int layers_shipped;
};

static int ship_layer(void *ctx, int layer)
{
	struct ship *sh = ctx;
	struct be_region sp, dp;
	size_t so, dof, len, dlen;

	if (llm_kv_pool(sh->src, &sp) || llm_kv_pool(sh->dst, &dp))
		return -EIO;
	/* The prefill side's identity table: block i holds positions i*bt...; runs could merge. */
	for (int i = sh->first; i < sh->n_blocks; i++) {
		if (llm_kv_range(sh->src, layer, i, 1, &so, &len) ||
		    llm_kv_range(sh->dst, layer, sh->blocks[i], 1, &dof, &dlen) || len != dlen)
			return -EIO;
		memcpy((uint8_t *)dp.base + dof, (const uint8_t *)sp.base + so, len);
	}
	sh->layers_shipped++;
	return 0;
}

/*
 * Disaggregated serving in one process: a prefill engine computes each
 * prompt and ships its KV layer by layer into blocks the decode scheduler
 * leased; the decode scheduler adopts the requests with the first token and
 * decodes them together.  Prompts whose leading blocks the decode pool has
 * cached already (the shared 40-token prefix) lease them and get only the
 * rest shipped.  Every request, greedy or seeded sampling, gives exactly
 * the reference tokens (and logprobs); leases that expire, stale epochs and
 * expired deadlines are refused; the pools' accounting holds throughout.
 */
static void test_disaggregated(void **state)
{
	char *dir, *path = model_path(&dir);
	struct job jobs[N_REQ];
	struct eng p, d;
	struct llm_seq seq;
	uint64_t ids[N_REQ];
	int32_t blocks[N_REQ][MAX_PROMPT / 16 + 2];
	struct kv_lease_ref refs[N_REQ], ref;
	struct sched_stats st;
	float *logits;
	int n_blocks, n_cached, n_greedy = 0, n_shared = 0;
	uint64_t now;

	(void)state;
	make_jobs(jobs);
	reference(path, jobs);
	eng_open(&p, path, GGML_TYPE_F16, 512, 4, 0, 1);
	eng_quarantine_ns = 1000000000ull;
	eng_open(&d, path, GGML_TYPE_F16, 64, 8, 0, 1);
	eng_quarantine_ns = 0;
	assert_int_equal(llm_seq_init(&seq, p.llm), 0);
	logits = calloc(p.m->n_vocab, sizeof(float));
	assert_non_null(logits);

	for (int j = 0; j < N_REQ; j++) {
		struct job *q = &jobs[j];
		struct ship sh = { .src = p.llm, .dst = d.llm };
		struct sched_request r = { .prompt = q->prompt,
					   .n_prompt = q->n_prompt,
					   .max_tokens = GEN,
					   .sampling = q->sp,
					   .salt = q->salt,
					   .logprobs = q->logprobs,
					   .n_top_logprobs = q->logprobs ? JOB_TOP : 0 };
		int32_t first;

		assert_int_equal(sched_lease(d.s, q->n_prompt, q->salt, q->prompt, q->n_prompt, 7,
					     clock_ns() + 60000000000ull, blocks[j], &n_blocks,
					     &n_cached, &refs[j]),
				 0);
		assert_int_equal(n_blocks, (q->n_prompt + 15) / 16);
		assert_true(n_cached <= (q->n_prompt - 1) / 16);
		assert_int_equal(kv_pool_check(sched_pool(d.s)), 0);
		n_shared += n_cached > 0;
		sh.blocks = blocks[j];
		sh.n_blocks = n_blocks;
		sh.first = n_cached;
		llm_seq_reset(&seq);
		llm_set_layer_hook(p.llm, ship_layer, &sh);
		assert_int_equal(llm_seq_eval(&seq, q->prompt, q->n_prompt, logits, NULL), 0);
		llm_set_layer_hook(p.llm, NULL, NULL);
		assert_int_equal(sh.layers_shipped, (int)p.m->n_layers);
		first = 0;
		for (int v = 1; v < (int)p.m->n_vocab; v++)
			if (logits[v] > logits[first])
				first = v;
		if (q->sp.temperature > 0)
			first = q->want[0]; /* what the prefill side's sampler drew */
		else
			assert_int_equal(first, q->want[0]);
		assert_int_equal(sched_adopt(d.s, &r, refs[j], first,
					     q->logprobs ? q->want_lp[0] : NULL, clock_ns(), &ids[j]),
				 0);
		assert_int_equal(sched_get(d.s, ids[j])->n_cached, n_cached * 16);
		assert_int_equal(kv_pool_check(sched_pool(d.s)), 0);
		n_greedy += q->sp.temperature == 0;
	}
	assert_true(n_greedy >= N_REQ / 2);
	/* Every third prompt over 40 tokens shares two blocks with the first such. */
	assert_int_equal(n_shared, 8);
	run_all(&d); /* all adopted requests decode together */
	for (int j = 0; j < N_REQ; j++) {
		const struct sched_info *in = sched_get(d.s, ids[j]);

		assert_non_null(in);
		assert_int_equal(in->n_gen, GEN);
		assert_memory_equal(in->tokens, jobs[j].want, sizeof(int32_t) * GEN);
		if (jobs[j].logprobs)
			assert_memory_equal(in->logprobs, jobs[j].want_lp, sizeof(jobs[j].want_lp));
		sched_release(d.s, ids[j]);
	}

	/*
	 * A lease past its deadline ends at the next step, its blocks quarantined
	 * for a second (a late write may still land); adopting it is stale.
	 */
	now = clock_ns();
	assert_int_equal(
		sched_lease(d.s, 20, 0, NULL, 0, 7, now, blocks[0], &n_blocks, &n_cached, &ref), 0);
	sched_step(d.s, clock_ns);
	sched_get_stats(d.s, &st);
	assert_int_equal(st.kv.leases_expired, 1);
	assert_int_equal(st.kv.leased, 0);
	assert_int_equal(st.kv.quarantined, n_blocks);
	for (int i = 0; i < n_blocks; i++)
		assert_int_equal(kv_block_state(sched_pool(d.s), blocks[0][i]),
				 KV_BLOCK_QUARANTINED);
	assert_int_equal(sched_adopt(d.s,
				     &(struct sched_request){ .prompt = jobs[1].prompt,
							      .n_prompt = 20,
							      .max_tokens = 4,
							      .sampling = smp_params_default() },
				     ref, 5, NULL, clock_ns(), &ids[0]),
			 -ESTALE);
	/* A commit after the deadline: -ETIMEDOUT, and the blocks come back after the quarantine. */
	now = clock_ns();
	assert_int_equal(sched_lease(d.s, 20, 0, NULL, 0, 7, now + 1000000000ull, blocks[0],
				     &n_blocks, &n_cached, &ref),
			 0);
	assert_int_equal(sched_adopt(d.s,
				     &(struct sched_request){ .prompt = jobs[1].prompt,
							      .n_prompt = 20,
							      .max_tokens = 4,
							      .sampling = smp_params_default() },
				     ref, 5, NULL, now + 2000000000ull, &ids[0]),
			 -ETIMEDOUT);
	sched_get_stats(d.s, &st);
	assert_true(st.kv.quarantined >= n_blocks); /* the first lease's may be free by now */
	assert_int_equal(sched_expire_leases(d.s, now + 2999999999ull), 0);
	sched_get_stats(d.s, &st);
	assert_int_equal(st.kv.quarantined, n_blocks);
	assert_int_equal(sched_expire_leases(d.s, now + 3000000000ull), 0);
	sched_get_stats(d.s, &st);
	assert_int_equal(st.kv.quarantined, 0);
	assert_int_equal(st.kv.free + st.kv.cached + st.kv.in_use, st.kv.total);
	/* A wrong epoch is stale and leaves the real lease alone; release then frees it. */
	assert_int_equal(sched_lease(d.s, 20, 0, NULL, 0, 7, now + 60000000000ull, blocks[0],
				     &n_blocks, &n_cached, &ref),
			 0);
	{
		struct kv_lease_ref bad = ref;

		bad.epoch++;
		assert_int_equal(sched_adopt(d.s,
					     &(struct sched_request){ .prompt = jobs[1].prompt,
								      .n_prompt = 20,
								      .max_tokens = 4,
								      .sampling = smp_params_default() },
					     bad, 5, NULL, clock_ns(), &ids[0]),
				 -ESTALE);
		sched_get_stats(d.s, &st);
		assert_int_equal(st.kv.leased, n_blocks);
	}
	assert_int_equal(sched_lease_release(d.s, ref), 0);
	assert_int_equal(sched_lease_release(d.s, ref), -ESTALE);
	sched_get_stats(d.s, &st);
	assert_int_equal(st.kv.leased, 0);
	assert_int_equal(
		sched_lease(d.s, 0, 0, NULL, 0, 7, now, blocks[0], &n_blocks, &n_cached, &ref),
		-EINVAL);

	free(logits);
	llm_seq_free(&seq);
	eng_close(&p);
	eng_close(&d);
	free(path);
	tu_rmtree(dir);
}

/* test_disaggregated_batched: where each prefill request's blocks go on the decode side. */
struct route {
	struct llm *src, *dst;
	uint64_t ids[N_REQ];			/* prefill side's request ids */
	int32_t blocks[N_REQ][MAX_PROMPT / 16 + 2]; /* decode side's leased blocks */
	int n_blocks[N_REQ];
	int runs, bad;
	/* Over a transfer driver instead of memcpy (NULL ep: memcpy). */
	struct xfer_ep *ep;
	struct xfer_mr *src_mr;
	uint32_t dst_region;
	unsigned posted, completed, failed;
};

/* Completions of the writes posted so far; false when one failed. */
static void route_poll(struct route *rt)
{
	struct xfer_wc wc[16];
	int n;

	while ((n = xfer_poll(rt->ep, wc, 16)) > 0) {
		for (int i = 0; i < n; i++) {
			rt->completed++;
			rt->failed += wc[i].status != XFER_WC_OK;
		}
	}
	if (n < 0)
		rt->failed++;
}

/* One block over the driver: a one-sided write from the prefill pool into the decode pool. */
static int route_write(struct route *rt, size_t so, size_t dof, size_t len)
{
	struct xfer_sge sg = { .mr = rt->src_mr, .offset = so, .len = len };
	struct xfer_write wr = { .wr_id = rt->posted, .sg = &sg, .nsg = 1,
				 .remote_region = rt->dst_region, .remote_offset = dof };
	int ret;

	while ((ret = xfer_post_write(rt->ep, &wr)) == -EAGAIN)
		route_poll(rt);
	if (ret == 0)
		rt->posted++;
	return ret;
}

static int route_layer(void *ctx, int layer, const struct sched_kv_run *runs, int n_runs)
{
	struct route *rt = ctx;
	struct be_region sp, dp;
	size_t so, dof, len, dlen;

	if (llm_kv_pool(rt->src, &sp) || llm_kv_pool(rt->dst, &dp))
		return -EIO;
	for (int k = 0; k < n_runs; k++) {
		int j = 0;

		while (j < N_REQ && rt->ids[j] != runs[k].id)
			j++;
		if (j == N_REQ || runs[k].first + runs[k].n > rt->n_blocks[j]) {
			rt->bad++;
			return -EIO;
		}
		for (int i = 0; i < runs[k].n; i++) {
			if (llm_kv_range(rt->src, layer, runs[k].blocks[i], 1, &so, &len) ||
			    llm_kv_range(rt->dst, layer, rt->blocks[j][runs[k].first + i], 1, &dof,
					 &dlen) ||
			    len != dlen)
				return -EIO;
			if (rt->ep) {
				if (route_write(rt, so, dof, len))
					return -EIO;
			} else {
				memcpy((uint8_t *)dp.base + dof, (const uint8_t *)sp.base + so, len);
			}
		}
		rt->runs++;
	}
	return 0;
}

/*
 * The same through two schedulers: every job is submitted to a prefill
 * scheduler at once (max_tokens 1, ship_kv) with small batches, so prompts
 * are chunked, batched together and hit its prefix cache; the layer hook
 * routes each run of blocks into the decode side's leases.  Adopted on the
 * decode side, every job gives the reference tokens and logprobs.
 */
static void disaggregated_batched(const char *driver)
{
	char *dir, *path = model_path(&dir);
	struct job jobs[N_REQ];
	struct eng p, d;
	struct route rt;
	struct kv_lease_ref refs[N_REQ];
	uint64_t ids[N_REQ];
	struct sched_stats st;
	struct xfer_dev *dev_p = NULL, *dev_d = NULL;
	struct xfer_ep *ep_d = NULL;
	struct xfer_mr *mr_d = NULL;

	make_jobs(jobs);
	reference(path, jobs);
	eng_open(&p, path, GGML_TYPE_F16, 48, 4, 0, 1);
	eng_shared_kv = driver != NULL;
	eng_open(&d, path, GGML_TYPE_F16, 64, 8, 400, 1); /* room to lease every prompt at once */
	eng_shared_kv = false;
	memset(&rt, 0, sizeof(rt));
	rt.src = p.llm;
	rt.dst = d.llm;
	if (driver) {
		/* The decode pool (its memfd) exposed to the prefill side's endpoint. */
		struct be_region pp, dp;
		struct xfer_desc desc_p, desc_d;

		assert_int_equal(llm_kv_pool(p.llm, &pp), 0);
		assert_int_equal(llm_kv_pool(d.llm, &dp), 0);
		assert_true(dp.fd >= 0);
		static const uint8_t psk[32] = "duet test key, 32 bytes long...";
		struct xfer_opts xo = { .psk = psk, .psk_len = sizeof(psk) };

		assert_int_equal(xfer_open(driver, &xo, &dev_p), 0);
		assert_int_equal(xfer_open(driver, &xo, &dev_d), 0);
		assert_int_equal(xfer_mr_reg(dev_p, pp.base, pp.bytes, &rt.src_mr), 0);
		assert_int_equal(xfer_mr_reg_fd(dev_d, dp.base, dp.bytes, dp.fd, &mr_d), 0);
		rt.dst_region = xfer_mr_id(mr_d);
		assert_int_equal(xfer_ep_create(dev_p, &rt.ep), 0);
		assert_int_equal(xfer_ep_create(dev_d, &ep_d), 0);
		assert_int_equal(xfer_local_desc(rt.ep, &desc_p), 0);
		assert_int_equal(xfer_local_desc(ep_d, &desc_d), 0);
		assert_int_equal(xfer_connect(rt.ep, &desc_d), 0);
		assert_int_equal(xfer_connect(ep_d, &desc_p), 0);
	}
	sched_set_layer_hook(p.s, route_layer, &rt);
	for (int j = 0; j < N_REQ; j++) {
		struct job *q = &jobs[j];
		struct sched_request r = { .prompt = q->prompt,
					   .n_prompt = q->n_prompt,
					   .max_tokens = 1,
					   .sampling = q->sp,
					   .salt = q->salt,
					   .logprobs = q->logprobs,
					   .n_top_logprobs = q->logprobs ? JOB_TOP : 0,
					   .ship_kv = true };

		int n_cached = -1;

		assert_int_equal(sched_lease(d.s, q->n_prompt, 0, NULL, 0, 7,
					     clock_ns() + 60000000000ull, rt.blocks[j],
					     &rt.n_blocks[j], &n_cached, &refs[j]),
				 0);
		assert_int_equal(n_cached, 0);
		assert_int_equal(sched_submit(p.s, &r, clock_ns(), &rt.ids[j]), 0);
	}
	run_all(&p);
	assert_int_equal(rt.bad, 0);
	assert_true(rt.runs > N_REQ); /* chunked: most prompts took several steps */
	if (rt.ep) {
		/* Every write done before any request is adopted. */
		for (int guard = 0; rt.completed < rt.posted && guard < 1000000; guard++)
			route_poll(&rt);
		assert_int_equal(rt.completed, rt.posted);
		assert_int_equal(rt.failed, 0);
		assert_true(rt.posted >= (unsigned)rt.runs);
	}
	sched_get_stats(p.s, &st);
	assert_true(st.kv.hit_tokens > 0); /* some prompts came from the prefill cache */
	for (int j = 0; j < N_REQ; j++) {
		const struct sched_info *in = sched_get(p.s, rt.ids[j]);
		struct sched_request r = { .prompt = jobs[j].prompt,
					   .n_prompt = jobs[j].n_prompt,
					   .max_tokens = GEN,
					   .sampling = jobs[j].sp,
					   /* A tenant each: the decode side cannot dedup a block
					    * the prefill side failed to ship against another's. */
					   .salt = 1000 + (uint64_t)j,
					   .logprobs = jobs[j].logprobs,
					   .n_top_logprobs = jobs[j].logprobs ? JOB_TOP : 0 };

		assert_int_equal(in->n_gen, 1);
		assert_int_equal(in->tokens[0], jobs[j].want[0]);
		assert_int_equal(sched_adopt(d.s, &r, refs[j], in->tokens[0], in->logprobs,
					     clock_ns(), &ids[j]),
				 0);
		sched_release(p.s, rt.ids[j]);
	}
	run_all(&d);
	for (int j = 0; j < N_REQ; j++) {
		const struct sched_info *in = sched_get(d.s, ids[j]);

		assert_int_equal(in->n_gen, GEN);
		assert_memory_equal(in->tokens, jobs[j].want, sizeof(int32_t) * GEN);
		if (jobs[j].logprobs)
			assert_memory_equal(in->logprobs, jobs[j].want_lp, sizeof(jobs[j].want_lp));
		sched_release(d.s, ids[j]);
	}
	if (rt.ep) {
		xfer_ep_destroy(rt.ep);
		xfer_ep_destroy(ep_d);
		xfer_mr_dereg(rt.src_mr);
		xfer_mr_dereg(mr_d);
		xfer_close(dev_p);
		xfer_close(dev_d);
	}
	eng_close(&p);
	eng_close(&d);
	free(path);
	tu_rmtree(dir);
}

static void test_disaggregated_batched(void **state)
{
	(void)state;
	disaggregated_batched(NULL);
}

/* The same with the KV moving as one-sided writes over the shm driver into the decode memfd. */
static void test_disaggregated_shm(void **state)
{
	(void)state;
	disaggregated_batched("shm");
}

/* And over tcp (loopback), authenticated with a pre-shared key. */
static void test_disaggregated_tcp(void **state)
{
	(void)state;
	disaggregated_batched("tcp");
}

static void test_batch_invariance(void **state)
{
	static struct job jobs[N_REQ];
	char *dir, *path = model_path(&dir);

	(void)state;
	make_jobs(jobs);
	reference(path, jobs);
	check_batched(path, jobs, 16, 0, false);
	check_batched(path, jobs, 64, 0, false);
	check_batched(path, jobs, 512, 0, false);
	/* 24 blocks of 16 tokens: far less than 32 requests need at once. */
	check_batched(path, jobs, 64, 24, true);
	free(path);
	tu_rmtree(dir);
}

static void test_prefix_cache(void **state)
{
	char *dir, *path = model_path(&dir);
	struct job a = { 0 }, b, c;
	struct eng e;
	struct sched_stats st0, st1;
	uint64_t ia, ib, ic;

	(void)state;
	a.n_prompt = 100;
	for (int i = 0; i < 100; i++)
		a.prompt[i] = (int32_t)((i * 13 + 5) % 354);
	a.sp = smp_params_default();
	a.sp.temperature = 0;
	a.salt = 1;
	b = a;
	b.prompt[97] = 7; /* same first 97 tokens */
	c = b;
	c.salt = 2; /* another tenant */

	eng_open(&e, path, GGML_TYPE_F16, 512, 4, 0, 1);
	ia = submit(&e, &a);
	run_all(&e);
	sched_get_stats(e.s, &st0);
	ib = submit(&e, &b);
	run_all(&e);
	sched_get_stats(e.s, &st1);
	/* 97 shared tokens = 6 full blocks of 16: only the rest is computed. */
	assert_int_equal(sched_get(e.s, ib)->n_cached, 96);
	assert_int_equal(st1.prefill_tokens - st0.prefill_tokens, 100 - 96);
	ic = submit(&e, &c);
	run_all(&e);
	assert_int_equal(sched_get(e.s, ic)->n_cached, 0);
	/* Same tokens with and without the cache: b and c differ only in the salt. */
	assert_memory_equal(sched_get(e.s, ib)->tokens, sched_get(e.s, ic)->tokens,
			    sizeof(int32_t) * GEN);
	(void)ia;
	eng_close(&e);
	free(path);
	tu_rmtree(dir);
}

/*
 * sched_blocks: a request's table while it holds KV, after the step's
 * prefix-cache dedup: two requests computing the same full blocks in one
 * step end up sharing the first one's blocks.  None once finished.
 */
static void test_blocks(void **state)
{
	char *dir, *path = model_path(&dir);
	struct job a = { 0 }, b;
	struct eng e;
	const int32_t *ta, *tb;
	uint64_t ia, ib;

	(void)state;
	a.n_prompt = 40;
	for (int i = 0; i < 40; i++)
		a.prompt[i] = (int32_t)((i * 11 + 3) % 354);
	a.sp = smp_params_default();
	a.sp.temperature = 0;
	a.salt = 1;
	b = a;
	eng_open(&e, path, GGML_TYPE_F16, 96, 4, 0, 1);
	ia = submit(&e, &a);
	ib = submit(&e, &b);
	assert_int_equal(sched_blocks(e.s, ia, &ta), 0); /* waiting: no KV yet */
	assert_true(sched_step(e.s, clock_ns) > 0);	 /* both prompts in one step */
	assert_int_equal(sched_blocks(e.s, ia, &ta), 3);
	assert_int_equal(sched_blocks(e.s, ib, &tb), 3);
	/* The two full blocks are a's now; the partial third one is each its own. */
	assert_memory_equal(ta, tb, 2 * sizeof(int32_t));
	assert_int_not_equal(ta[2], tb[2]);
	run_all(&e);
	assert_int_equal(sched_blocks(e.s, ia, &ta), 0);
	sched_release(e.s, ia);
	assert_int_equal(sched_blocks(e.s, ia, &ta), -ENOENT);
	sched_release(e.s, ib);
	eng_close(&e);
	free(path);
	tu_rmtree(dir);
}

/* The stories260K goldens through the batched path: all 6 prompts at once. */
static void test_stories_batched(void **state)
{
	static const char *const cases[] = {
		"once_upon_a_time", "the_little_dog",	 "empty",
		"lily_and_tom",	    "newline_in_prompt", "leading_space"
	};
	char model[1024], rel[128];
	int32_t want[6][128];
	uint64_t ids[6];
	struct eng e;

	(void)state;
	snprintf(model, sizeof(model), "%s", TU_SHARED_OR_SKIP("models/stories260K.gguf"));
	eng_open(&e, model, GGML_TYPE_F32, 64, 6, 0, 2);
	for (int c = 0; c < 6; c++) {
		double v[256];
		int32_t prompt[64];
		snprintf(rel, sizeof(rel), "golden/stories260K/%s.json", cases[c]);
		char *json = tu_read_file(TU_SHARED_OR_SKIP(rel), NULL);
		assert_non_null(json);
		long np = tu_json_numbers(json, "prompt_ids", v, 64);
		for (long i = 0; i < np; i++)
			prompt[i] = (int32_t)v[i];
		assert_int_equal(tu_json_numbers(json, "generated_ids", v, 256), 128);
		for (int i = 0; i < 128; i++)
			want[c][i] = (int32_t)v[i];
		free(json);
		struct sched_request r = { .prompt = prompt,
					   .n_prompt = (int)np,
					   .max_tokens = 128,
					   .sampling = smp_params_default() };
		r.sampling.temperature = 0;
		assert_int_equal(sched_submit(e.s, &r, clock_ns(), &ids[c]), 0);
	}
	run_all(&e);
	for (int c = 0; c < 6; c++) {
		const struct sched_info *in = sched_get(e.s, ids[c]);
		assert_int_equal(in->n_gen, 128);
		if (memcmp(in->tokens, want[c], sizeof(want[c])) != 0)
			fail_msg("%s: batched greedy ids differ from the golden ones", cases[c]);
	}
	eng_close(&e);
}

static void test_bad_requests(void **state)
{
	char *dir, *path = model_path(&dir);
	struct eng e;
	int32_t p[4] = { 1, 2, 3, 400 };
	uint64_t id;
	struct sched_request r = {
		.prompt = p, .n_prompt = 3, .max_tokens = 4, .sampling = smp_params_default()
	};

	(void)state;
	eng_open(&e, path, GGML_TYPE_F16, 64, 4, 0, 1);
	r.n_prompt = 0;
	assert_int_equal(sched_submit(e.s, &r, 0, &id), -EINVAL);
	r.n_prompt = 4; /* token 400 is beyond the 354-token vocabulary */
	assert_int_equal(sched_submit(e.s, &r, 0, &id), -EINVAL);
	r.n_prompt = 3;
	r.sampling.top_p = 2;
	assert_int_equal(sched_submit(e.s, &r, 0, &id), -EINVAL);
	r.sampling.top_p = 1;
	r.max_tokens = 0;
	assert_int_equal(sched_submit(e.s, &r, 0, &id), -EINVAL);
	/* Cancel: between steps, blocks released, state and reason recorded. */
	r.max_tokens = 50;
	assert_int_equal(sched_submit(e.s, &r, 0, &id), 0);
	assert_true(sched_step(e.s, clock_ns) > 0);
	assert_int_equal(sched_cancel(e.s, id, clock_ns()), 0);
	assert_int_equal(sched_get(e.s, id)->finish, SCHED_FINISH_CANCELLED);
	assert_int_equal(sched_cancel(e.s, id, clock_ns()), -EALREADY);
	assert_int_equal(sched_cancel(e.s, 999999, clock_ns()), -ENOENT);
	assert_false(sched_busy(e.s));
	struct sched_stats st;
	sched_get_stats(e.s, &st);
	assert_int_equal(st.kv.in_use, 0);
	sched_release(e.s, id);
	r.max_tokens = 1000; /* runs into the 256-token context */
	assert_int_equal(sched_submit(e.s, &r, 0, &id), 0);
	run_all(&e);
	assert_int_equal(sched_get(e.s, id)->finish, SCHED_FINISH_CONTEXT);
	assert_int_equal(sched_get(e.s, id)->n_gen, 256 - 3);
	eng_close(&e);
	free(path);
	tu_rmtree(dir);
}

/* --- logprobs and logit bias --------------------------------------------------- */

/* Greedy request of n tokens after prompt, with logprobs and k alternatives; its id. */
static uint64_t submit_lp(struct eng *e, const int32_t *prompt, int n_prompt, int n, int k,
			  const struct smp_bias *bias, int n_bias)
{
	struct sched_request r = { .prompt = prompt,
				   .n_prompt = n_prompt,
				   .max_tokens = n,
				   .sampling = smp_params_default(),
				   .logprobs = true,
				   .n_top_logprobs = k };
	uint64_t id;

	r.sampling.temperature = 0;
	r.sampling.logit_bias = bias;
	r.sampling.n_logit_bias = n_bias;
	assert_int_equal(sched_submit(e->s, &r, clock_ns(), &id), 0);
	return id;
}

/*
 * The log-softmax of one row of logits, computed here the plain way (sort
 * everything), and compared with what the scheduler recorded for a step.
 */
static void check_step(const float *logits, int n_vocab, const struct sched_logprob *lp, int k,
		       int32_t chosen)
{
	static int32_t order[SYNTH_VOCAB_BASE];
	double max = -INFINITY, sum = 0, lse, mass = 0;

	assert_true(n_vocab <= SYNTH_VOCAB_BASE);
	for (int v = 0; v < n_vocab; v++)
		max = fmax(max, (double)logits[v]);
	for (int v = 0; v < n_vocab; v++)
		sum += exp((double)logits[v] - max);
	lse = max + log(sum);
	/* Insertion sort: descending logit, ascending id among equals. */
	for (int v = 0; v < n_vocab; v++) {
		int at = v;
		while (at > 0 && logits[order[at - 1]] < logits[v])
			at--;
		memmove(order + at + 1, order + at, sizeof(int32_t) * (size_t)(v - at));
		order[at] = v;
	}
	assert_int_equal(lp[0].token, chosen);
	assert_true(lp[0].logprob <= 0.0f);
	assert_true(fabs((double)lp[0].logprob - ((double)logits[chosen] - lse)) < 1e-4);
	for (int i = 0; i < k; i++) {
		const struct sched_logprob *t = &lp[1 + i];
		assert_true(t->logprob <= 0.0f && isfinite(t->logprob));
		if (i > 0)
			assert_true(t->logprob <= lp[i].logprob);
		assert_int_equal(t->token, order[i]);
		assert_true(fabs((double)t->logprob - ((double)logits[order[i]] - lse)) < 1e-4);
		mass += exp((double)t->logprob);
	}
	assert_true(mass <= 1.0 + 1e-5);
}

static void test_logprobs(void **state)
{
	enum { N = 10, K = 5, NP = 9 };
	char *dir, *path = model_path(&dir);
	static float logits[SYNTH_VOCAB_BASE];
	int32_t prompt[NP + N];
	struct eng e, ref;
	struct llm_seq seq;
	uint64_t id, plain;
	struct sched_request bad = {
		.prompt = prompt, .n_prompt = NP, .max_tokens = 4, .sampling = smp_params_default()
	};

	(void)state;
	for (int i = 0; i < NP; i++)
		prompt[i] = (int32_t)((i * 29 + 7) % 354);
	eng_open(&e, path, GGML_TYPE_F16, 64, 4, 0, 1);
	eng_open(&ref, path, GGML_TYPE_F16, 64, 4, 0, 1);
	int n_vocab = (int)e.m->n_vocab;

	/* Logprobs without alternatives; requests that did not ask carry none; bad counts. */
	plain = submit_lp(&e, prompt, NP, N, 0, NULL, 0);
	run_all(&e);
	assert_non_null(sched_get(e.s, plain)->logprobs);
	assert_int_equal(sched_get(e.s, plain)->n_top, 0);
	assert_int_equal(sched_token_logprobs(sched_get(e.s, plain), 3)[0].token,
			 sched_get(e.s, plain)->tokens[3]);
	sched_release(e.s, plain);
	bad.n_top_logprobs = 2; /* without logprobs */
	assert_int_equal(sched_submit(e.s, &bad, 0, &id), -EINVAL);
	bad.logprobs = true;
	bad.n_top_logprobs = SCHED_MAX_TOP_LOGPROBS + 1;
	assert_int_equal(sched_submit(e.s, &bad, 0, &id), -EINVAL);
	bad.n_top_logprobs = -1;
	assert_int_equal(sched_submit(e.s, &bad, 0, &id), -EINVAL);
	bad.n_top_logprobs = 0;
	bad.logprobs = false;
	assert_int_equal(sched_submit(e.s, &bad, 0, &id), 0);
	run_all(&e);
	assert_null(sched_get(e.s, id)->logprobs);
	assert_null(sched_token_logprobs(sched_get(e.s, id), 0));
	sched_release(e.s, id);

	/* Greedy with K alternatives, against a direct forward pass of the same model. */
	id = submit_lp(&e, prompt, NP, N, K, NULL, 0);
	run_all(&e);
	const struct sched_info *in = sched_get(e.s, id);
	assert_int_equal(in->n_gen, N);
	assert_int_equal(in->n_top, K);
	memcpy(prompt + NP, in->tokens, sizeof(int32_t) * N);
	assert_int_equal(llm_seq_init(&seq, ref.llm), 0);
	assert_int_equal(llm_seq_eval(&seq, prompt, NP, logits, NULL), 0);
	for (int i = 0; i < N; i++) {
		const struct sched_logprob *lp = sched_token_logprobs(in, i);
		/* Temperature 0: the top alternative is the token chosen. */
		assert_int_equal(lp[1].token, in->tokens[i]);
		assert_true(lp[1].logprob == lp[0].logprob);
		check_step(logits, n_vocab, lp, K, in->tokens[i]);
		if (i + 1 < N)
			assert_int_equal(llm_seq_eval(&seq, &in->tokens[i], 1, logits, NULL), 0);
	}
	llm_seq_free(&seq);

	/* Banning the greedy first token: the runner-up comes out, its raw logprob reported. */
	int32_t first = in->tokens[0];
	struct sched_logprob second = sched_token_logprobs(in, 0)[2];
	struct smp_bias ban = { .token = first, .bias = -INFINITY };
	uint64_t ib = submit_lp(&e, prompt, NP, N, K, &ban, 1);
	run_all(&e);
	const struct sched_info *bi = sched_get(e.s, ib);
	assert_int_equal(bi->n_gen, N);
	assert_int_not_equal(bi->tokens[0], first);
	assert_int_equal(bi->tokens[0], second.token);
	assert_true(sched_token_logprobs(bi, 0)[0].logprob == second.logprob);
	for (int i = 0; i < N; i++)
		assert_int_not_equal(bi->tokens[i], first);
	/* Logprobs stay the model's: step 0 saw the same logits with and without the bias. */
	assert_memory_equal(sched_token_logprobs(bi, 0) + 1, sched_token_logprobs(in, 0) + 1,
			    sizeof(struct sched_logprob) * K);

	/* +100 on a token the model does not favour: it comes out at every step. */
	int32_t t = (first + 100) % 354;
	struct smp_bias push = { .token = t, .bias = 100.0f };
	uint64_t ip = submit_lp(&e, prompt, NP, N, K, &push, 1);
	run_all(&e);
	const struct sched_info *pi = sched_get(e.s, ip);
	assert_int_equal(pi->n_gen, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(pi->tokens[i], t);
		assert_true(sched_token_logprobs(pi, i)[0].logprob < 0.0f);
	}
	assert_true(sched_token_logprobs(pi, 0)[0].logprob <
		    sched_token_logprobs(in, 0)[0].logprob);

	/* A bias outside the vocabulary is refused. */
	struct smp_bias oov = { .token = n_vocab, .bias = 1.0f };
	bad.sampling.logit_bias = &oov;
	bad.sampling.n_logit_bias = 1;
	assert_int_equal(sched_submit(e.s, &bad, 0, &id), -EINVAL);

	sched_release(e.s, id);
	eng_close(&ref);
	eng_close(&e);
	free(path);
	tu_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_batch_invariance), cmocka_unit_test(test_prefix_cache),
		cmocka_unit_test(test_stories_batched),	 cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_logprobs),
		cmocka_unit_test(test_blocks),
		cmocka_unit_test(test_disaggregated),
		cmocka_unit_test(test_disaggregated_batched),
		cmocka_unit_test(test_disaggregated_shm),
		cmocka_unit_test(test_disaggregated_tcp),
	};
	return cmocka_run_group_tests_name("sched", tests, NULL, NULL);
}
