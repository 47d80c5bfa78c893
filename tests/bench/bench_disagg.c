// SPDX-License-Identifier: MIT
/*
 * Disaggregation benchmark: what shipping a prompt's KV layer by layer
 * costs next to computing it.
 *
 *   bench_disagg MODEL.gguf [prompt_tokens] [threads]
 *
 * One engine prefills a random prompt (in one step of up to 512 tokens, as a
 * prefill worker would); from the layer hook it posts, for each layer, one
 * write of that layer's prompt blocks into a second engine's KV pool (a
 * memfd) over a transfer driver, and waits for the completions at the end.
 * Reported per driver (shm, tcp over loopback): prefill time without and
 * with the transfer, the time inside the hook (posting, and for shm the
 * copies themselves), the bytes moved and the rate, and the share of the
 * time to first token that the transfer adds.  Then the decode engine
 * continues from the shipped KV and must give the same next token as the
 * prefill engine (checked, not timed).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drivers/backend.h"
#include "drivers/net/xfer.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/model.h"

#define REPS 5

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct eng {
	struct backend *be;
	struct llm *llm;
	struct llm_seq seq;
};

struct ship {
	struct eng *src, *dst;
	struct xfer_ep *ep;
	struct xfer_mr *src_mr;
	uint32_t dst_region;
	int n_blocks;
	uint64_t hook_ns, bytes;
	unsigned posted;
};

static int poll_all(struct xfer_ep *ep, unsigned *left)
{
	struct xfer_wc wc[32];
	int n;

	while (*left) {
		n = xfer_poll(ep, wc, 32);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			if (wc[i].status != XFER_WC_OK)
				return -EIO;
			(*left)--;
		}
	}
	return 0;
}

static int ship_layer(void *ctx, int layer)
{
	struct ship *sh = ctx;
	uint64_t t0 = mono_ns();
	size_t off, len;
	int ret;

	/* Identity tables on both sides: blocks [0, n) are one contiguous range per layer. */
	ret = llm_kv_range(sh->src->llm, layer, 0, sh->n_blocks, &off, &len);
	if (ret)
		return ret;
	struct xfer_sge sg = { .mr = sh->src_mr, .offset = off, .len = len };
	struct xfer_write wr = { .wr_id = layer, .sg = &sg, .nsg = 1,
				 .remote_region = sh->dst_region, .remote_offset = off };

	while ((ret = xfer_post_write(sh->ep, &wr)) == -EAGAIN) {
		unsigned one = 1;

		ret = poll_all(sh->ep, &one);
		if (ret)
			return ret;
		sh->posted--;
	}
	if (ret)
		return ret;
	sh->posted++;
	sh->bytes += len;
	sh->hook_ns += mono_ns() - t0;
	return 0;
}

static int eng_open(struct eng *e, const struct model_desc *m, int threads, int n_ctx, bool shared)
{
	struct be_options bo = { .threads = threads };
	struct be_step_limits lim = { .max_tokens = 512, .max_seqs = 1, .max_table = n_ctx / 16 };
	struct llm_options lo = { .kv_dtype = GGML_TYPE_F16,
				  .n_ctx = n_ctx,
				  .block_tokens = 16,
				  .max_tokens = 512,
				  .shared_kv = shared };
	int ret = backend_open("cpu", &bo, &lim, &e->be);

	if (!ret)
		ret = llm_create(e->be, m, &lo, &e->llm);
	if (!ret)
		ret = llm_seq_init(&e->seq, e->llm);
	return ret;
}

static void eng_close(struct eng *e)
{
	llm_seq_free(&e->seq);
	llm_destroy(e->llm);
	backend_close(e->be);
}

static int32_t argmax(const float *x, int n)
{
	int32_t best = 0;

	for (int i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return best;
}

static int run_driver(const char *driver, struct eng *p, struct eng *d, const int32_t *prompt,
		      int n, float *logits, float *logits_d, double base_ms)
{
	static const uint8_t psk[32] = "duet bench key, 32 bytes long..";
	struct xfer_opts xo = { .psk = psk, .psk_len = sizeof(psk) };
	struct xfer_dev *dp = NULL, *dd = NULL;
	struct xfer_ep *ep_p = NULL, *ep_d = NULL;
	struct xfer_mr *mr_d = NULL;
	struct xfer_desc desc_p, desc_d;
	struct be_region pp, dpool;
	struct ship sh = { .src = p, .dst = d, .n_blocks = (n + 15) / 16 };
	double with_ms = 1e30, hook_ms = 0, wait_ms = 0;
	int n_vocab = (int)llm_model(p->llm)->n_vocab, ret;

	if ((ret = llm_kv_pool(p->llm, &pp)) || (ret = llm_kv_pool(d->llm, &dpool)) ||
	    (ret = xfer_open(driver, &xo, &dp)) || (ret = xfer_open(driver, &xo, &dd)) ||
	    (ret = xfer_mr_reg(dp, pp.base, pp.bytes, &sh.src_mr)) ||
	    (ret = xfer_mr_reg_fd(dd, dpool.base, dpool.bytes, dpool.fd, &mr_d)) ||
	    (ret = xfer_ep_create(dp, &ep_p)) || (ret = xfer_ep_create(dd, &ep_d)) ||
	    (ret = xfer_local_desc(ep_p, &desc_p)) || (ret = xfer_local_desc(ep_d, &desc_d)) ||
	    (ret = xfer_connect(ep_p, &desc_d)) || (ret = xfer_connect(ep_d, &desc_p)))
		goto out;
	sh.ep = ep_p;
	sh.dst_region = xfer_mr_id(mr_d);
	for (int r = 0; r < REPS; r++) {
		uint64_t t0, t1, t2;

		sh.hook_ns = sh.bytes = 0;
		llm_seq_reset(&p->seq);
		llm_set_layer_hook(p->llm, ship_layer, &sh);
		t0 = mono_ns();
		ret = llm_seq_eval(&p->seq, prompt, n, logits, NULL);
		t1 = mono_ns();
		llm_set_layer_hook(p->llm, NULL, NULL);
		if (!ret)
			ret = poll_all(ep_p, &sh.posted);
		t2 = mono_ns();
		if (ret)
			goto out;
		if ((t2 - t0) / 1e6 < with_ms) {
			with_ms = (t2 - t0) / 1e6;
			hook_ms = sh.hook_ns / 1e6;
			wait_ms = (t2 - t1) / 1e6;
		}
	}
	/* The decode engine continues from the shipped KV: the same next token. */
	{
		int32_t next = argmax(logits, n_vocab);

		llm_seq_reset(&d->seq);
		d->seq.n_past = n;
		if ((ret = llm_seq_eval(&p->seq, &next, 1, logits, NULL)) ||
		    (ret = llm_seq_eval(&d->seq, &next, 1, logits_d, NULL)))
			goto out;
		if (argmax(logits, n_vocab) != argmax(logits_d, n_vocab) ||
		    memcmp(logits, logits_d, sizeof(float) * (size_t)n_vocab) != 0) {
			fprintf(stderr, "bench_disagg: %s: the decode side's logits differ\n", driver);
			ret = -EIO;
			goto out;
		}
	}
	printf("%-4s %5d tokens: prefill %8.2f ms, with transfer %8.2f ms (+%.2f ms, %.1f%% of TTFT);"
	       " %.1f MiB in %d layer writes, hook %.2f ms, completion wait %.2f ms, %.2f GB/s\n",
	       driver, n, base_ms, with_ms, with_ms - base_ms, 100.0 * (with_ms - base_ms) / with_ms,
	       sh.bytes / 1048576.0, (int)llm_model(p->llm)->n_layers, hook_ms, wait_ms,
	       sh.bytes / ((hook_ms + wait_ms) / 1e3) / 1e9);
out:
	if (ret)
		fprintf(stderr, "bench_disagg: %s: %s\n", driver, duet_strerror(ret));
	xfer_ep_destroy(ep_p);
	xfer_ep_destroy(ep_d);
	xfer_mr_dereg(sh.src_mr);
	xfer_mr_dereg(mr_d);
	xfer_close(dp);
	xfer_close(dd);
	return ret;
}

int main(int argc, char **argv)
{
	struct gguf_file *f = NULL;
	struct model_desc *m = NULL;
	struct eng p = { 0 }, d = { 0 };
	char err[512];
	int n = argc > 2 ? atoi(argv[2]) : 512, threads = argc > 3 ? atoi(argv[3]) : 1, ret = 1;
	int n_ctx;
	int32_t *prompt;
	float *logits, *logits_d;
	double base_ms = 1e30;
	uint64_t x = 88172645463325252ull;

	if (argc < 2 || argc > 4 || n < 1 || n > 512 || threads < 1) {
		fprintf(stderr, "usage: bench_disagg MODEL.gguf [prompt_tokens <= 512] [threads]\n");
		return 2;
	}
	duet_log_set_level(DUET_LOG_WARN);
	if (gguf_open(argv[1], &f, err, sizeof(err)) ||
	    model_desc_load(f, 0, &m, err, sizeof(err))) {
		fprintf(stderr, "bench_disagg: %s\n", err);
		return 1;
	}
	n_ctx = (n + 1 + 15) / 16 * 16;
	prompt = malloc(sizeof(int32_t) * (size_t)n);
	logits = malloc(sizeof(float) * m->n_vocab);
	logits_d = malloc(sizeof(float) * m->n_vocab);
	if (!prompt || !logits || !logits_d || eng_open(&p, m, threads, n_ctx, false) ||
	    eng_open(&d, m, threads, n_ctx, true))
		goto out;
	for (int i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		prompt[i] = (int32_t)(x % m->n_vocab);
	}
	/* Warm-up, then the best of REPS without any transfer. */
	for (int r = 0; r <= REPS; r++) {
		uint64_t t0 = mono_ns();

		llm_seq_reset(&p.seq);
		if (llm_seq_eval(&p.seq, prompt, n, logits, NULL))
			goto out;
		if (r && (mono_ns() - t0) / 1e6 < base_ms)
			base_ms = (mono_ns() - t0) / 1e6;
	}
	printf("== KV transfer during prefill: %s, %d threads, best of %d ==\n", m->name, threads,
	       REPS);
	ret = run_driver("shm", &p, &d, prompt, n, logits, logits_d, base_ms) ? 1 : 0;
	ret |= run_driver("tcp", &p, &d, prompt, n, logits, logits_d, base_ms) ? 1 : 0;
out:
	eng_close(&p);
	eng_close(&d);
	free(prompt);
	free(logits);
	free(logits_d);
	model_desc_free(m);
	gguf_close(f);
	return ret;
}
