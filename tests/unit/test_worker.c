// SPDX-License-Identifier: MIT
/*
 * The partition worker, end to end: worker_run() in a thread on one end of a
 * seqpacket socketpair, the test as the supervisor on the other, the real
 * tiny model.  Streams are checked frame by frame and against an in-process
 * greedy llm_seq run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "drivers/backend.h"
#include "runtime/config/config.h"
#include "runtime/core/log.h"
#include "runtime/ipc/ipc.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"
#include "runtime/worker.h"
#include "tests/unit/testutil.h"

#define N_CTX 512
#define N_BLOCKS 256
#define TIMEOUT_MS 30000 /* any single wait; generous for sanitizer builds */
/* KV quarantine of expired leases in these tests (the default is 11 s) */
#define TEST_QUARANTINE_MS 300
#define MAX_REQ 16
#define MAX_GEN 512

/* The bundled model of this build ($BUILD, as tests/run-tests.sh sets it; else "build"). */
static char model_path[512];
static char cfg_text[1024];

/* --- the supervisor's side ---------------------------------------------------------- */

struct sup {
	struct duet_config cfg;
	struct ipc_chan *ch;
	int wfd;
	pthread_t th;
	bool running;
	int ret;
	struct ipc_msg m;      /* last frame received */
	struct ipc_submit sub; /* send buffers */
	struct ipc_prompt_chunk chunk;
	struct ipc_lease lease;
	uint64_t salt; /* of the SUBMITs sup_submit2 sends */
	struct ipc_ready ready;
	struct ipc_stats stats; /* last STATS */
	unsigned n_stats;
	int partition; /* the worker's index in cfg */
};

/* Per-request stream as received. */
struct stream {
	uint64_t rid;
	int32_t tokens[MAX_GEN];
	uint64_t t_ns[MAX_GEN];
	int n;
	bool last_seen, done, error;
	uint32_t last_finish;
	int32_t error_code;
	char error_msg[IPC_ERRMSG_MAX];
	struct ipc_done d;
	/* Logprobs: asked for (with want_top alternatives), and what came per index. */
	bool want_lp, lp_pending; /* a LOGPROBS arrived, its TOKEN not yet */
	uint32_t want_top;
	float lp[MAX_GEN];		      /* the sampled token's logprob */
	struct ipc_top_logprob top0[MAX_GEN]; /* the first alternative (when want_top > 0) */
	struct ipc_top_logprob top1[MAX_GEN]; /* the second (when want_top > 1) */
};

static int32_t n_vocab_model;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *worker_main(void *arg)
{
	struct sup *s = arg;

	s->ret = worker_run(s->wfd, &s->cfg, s->partition);
	return NULL;
}

static struct sup *sup_start_part(const char *text, int partition)
{
	struct cfg_errors errs;
	struct sup *s = calloc(1, sizeof(*s));
	int sv[2];

	assert_non_null(s);
	s->partition = partition;
	if (cfg_load_string(text, "test.cfg", NULL, &s->cfg, &errs)) {
		cfg_errors_print(stderr, &errs);
		fail_msg("config does not load");
	}
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	assert_int_equal(ipc_chan_create(sv[0], IPC_END_SUPERVISOR, 0, &s->ch), 0);
	s->wfd = sv[1];
	assert_int_equal(pthread_create(&s->th, NULL, worker_main, s), 0);
	s->running = true;
	return s;
}

static struct sup *sup_start(const char *text)
{
	return sup_start_part(text, 0);
}

/* The worker's exit status; fails when it does not return within timeout_ms. */
static int sup_join(struct sup *s, int timeout_ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	if (pthread_timedjoin_np(s->th, NULL, &ts) != 0)
		fail_msg("worker did not exit within %d ms", timeout_ms);
	s->running = false;
	return s->ret;
}

static void sup_free(struct sup *s)
{
	ipc_chan_destroy(s->ch);
	if (s->running)
		sup_join(s, TIMEOUT_MS);
	free(s);
}

/* Next frame of any type into s->m; false on timeout. */
static bool sup_recv_any(struct sup *s, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;

	for (;;) {
		int ret = ipc_recv(s->ch, &s->m);

		if (ret < 0)
			fail_msg("supervisor channel: %s", ipc_chan_error_reason(s->ch));
		if (ret == 1) {
			if (s->m.hdr.type == IPC_STATS) {
				s->stats = s->m.u.stats;
				s->n_stats++;
			}
			return true;
		}
		uint64_t now = now_ns();
		if (now >= deadline)
			return false;
		struct pollfd pfd = { .fd = ipc_chan_fd(s->ch), .events = POLLIN };
		poll(&pfd, 1, (int)((deadline - now) / 1000000ull) + 1);
	}
}

/* Next frame other than STATS. */
static struct ipc_msg *sup_recv(struct sup *s)
{
	do {
		if (!sup_recv_any(s, TIMEOUT_MS))
			fail_msg("no frame from the worker within %d ms", TIMEOUT_MS);
	} while (s->m.hdr.type == IPC_STATS);
	return &s->m;
}

/* Frames (any) until the next STATS, each within 2 s; it is in s->stats. */
static void sup_next_stats(struct sup *s)
{
	unsigned n0 = s->n_stats;

	do
		assert_true(sup_recv_any(s, 2000));
	while (s->n_stats == n0);
}

static void sup_handshake(struct sup *s)
{
	struct ipc_msg *m = sup_recv(s);

	assert_int_equal(m->hdr.type, IPC_HELLO);
	assert_int_equal(m->u.hello.pid, getpid());
	assert_int_equal(m->u.hello.partition, 0);
	assert_int_equal(m->u.hello.role, IPC_ROLE_MIXED);
	assert_string_equal(m->u.hello.model, "duet-tiny.gguf");
	m = sup_recv(s);
	if (m->hdr.type == IPC_ERROR)
		fail_msg("worker failed: %s", m->u.error.msg);
	assert_int_equal(m->hdr.type, IPC_READY);
	s->ready = m->u.ready;
	assert_int_equal(s->ready.n_ctx, N_CTX);
	assert_int_equal(s->ready.n_vocab, n_vocab_model);
	assert_int_equal(s->ready.kv_blocks_total, N_BLOCKS);
	assert_int_equal(s->ready.block_tokens, 16);
	assert_int_equal(s->ready.max_batch, 8);
}

/*
 * A greedy request; the prompt goes as a SUBMIT of `first` tokens and chunks
 * of `chunk` (0: no chunks, the prompt stays incomplete).
 */
static void sup_submit(struct sup *s, uint64_t rid, const int32_t *prompt, uint32_t n,
		       uint32_t max_tokens, uint32_t first, uint32_t chunk)
{
	memset(&s->sub, 0, IPC_SUBMIT_FIXED);
	s->sub.sampling = (struct ipc_sampling){ .top_p = 1.0f, .repeat_penalty = 1.0f };
	s->sub.max_tokens = max_tokens;
	s->sub.n_prompt = n;
	s->sub.n_tokens = first < n ? first : n;
	memcpy(s->sub.tokens, prompt, 4 * s->sub.n_tokens);
	assert_int_equal(ipc_send(s->ch, IPC_SUBMIT, rid, &s->sub, ipc_submit_len(s->sub.n_tokens)),
			 0);
	for (uint32_t off = s->sub.n_tokens; chunk > 0 && off < n; off += chunk) {
		uint32_t k = n - off < chunk ? n - off : chunk;

		memset(&s->chunk, 0, IPC_CHUNK_FIXED);
		s->chunk.n_prompt = n;
		s->chunk.offset = off;
		s->chunk.n_tokens = k;
		memcpy(s->chunk.tokens, prompt + off, 4 * k);
		assert_int_equal(
			ipc_send(s->ch, IPC_PROMPT_CHUNK, rid, &s->chunk, ipc_chunk_len(k)), 0);
	}
}

/* A greedy request with logprobs (flags, n_top) and logit bias, the prompt in one SUBMIT. */
static void sup_submit_lp(struct sup *s, uint64_t rid, const int32_t *prompt, uint32_t n,
			  uint32_t max_tokens, uint32_t flags, uint32_t n_top,
			  const struct ipc_bias *bias, uint32_t n_bias, uint32_t first)
{
	memset(&s->sub, 0, IPC_SUBMIT_FIXED);
	s->sub.sampling = (struct ipc_sampling){ .top_p = 1.0f, .repeat_penalty = 1.0f };
	s->sub.max_tokens = max_tokens;
	s->sub.n_prompt = n;
	s->sub.n_tokens = first < n ? first : n;
	s->sub.logprobs_flags = flags;
	s->sub.n_top = n_top;
	s->sub.n_bias = n_bias;
	memcpy(s->sub.tokens, prompt, 4 * s->sub.n_tokens);
	memcpy(ipc_submit_bias_mut(&s->sub), bias, sizeof(*bias) * n_bias);
	assert_int_equal(
		ipc_send(s->ch, IPC_SUBMIT, rid, &s->sub, ipc_submit_len2(s->sub.n_tokens, n_bias)),
		0);
	for (uint32_t off = s->sub.n_tokens; off < n; off += 3) {
		uint32_t k = n - off < 3 ? n - off : 3;

		memset(&s->chunk, 0, IPC_CHUNK_FIXED);
		s->chunk.n_prompt = n;
		s->chunk.offset = off;
		s->chunk.n_tokens = k;
		memcpy(s->chunk.tokens, prompt + off, 4 * k);
		assert_int_equal(
			ipc_send(s->ch, IPC_PROMPT_CHUNK, rid, &s->chunk, ipc_chunk_len(k)), 0);
	}
}

static void sup_send(struct sup *s, enum ipc_type type, uint64_t rid, const void *p, uint32_t len)
{
	assert_int_equal(ipc_send(s->ch, type, rid, p, len), 0);
	while (ipc_chan_queued(s->ch) > 0)
		assert_true(ipc_flush(s->ch) >= 0);
}

/* LEASE of n_prompt tokens for owner; n_tokens of them (from tokens, salt) to match. */
static void sup_lease(struct sup *s, uint64_t rid, uint32_t n_prompt, uint32_t ttl_ms,
		      uint64_t owner, uint64_t salt, const int32_t *tokens, uint32_t n_tokens)
{
	memset(&s->lease, 0, IPC_LEASE_FIXED);
	s->lease.n_prompt = n_prompt;
	s->lease.ttl_ms = ttl_ms;
	s->lease.owner = owner;
	s->lease.salt = salt;
	s->lease.n_tokens = n_tokens;
	if (n_tokens)
		memcpy(s->lease.tokens, tokens, 4 * (size_t)n_tokens);
	sup_send(s, IPC_LEASE, rid, &s->lease, ipc_lease_len(n_tokens));
}

/* File one TOKEN / ERROR / DONE into its stream, checking the stream's rules. */
static struct stream *stream_add(struct stream *st, int n_st, const struct ipc_msg *m)
{
	struct stream *x = NULL;

	for (int i = 0; i < n_st; i++) {
		if (st[i].rid == m->hdr.req_id)
			x = &st[i];
	}
	if (!x)
		fail_msg("%s for unknown request %llu", ipc_type_name(m->hdr.type),
			 (unsigned long long)m->hdr.req_id);
	assert_false(x->done);
	switch (m->hdr.type) {
	case IPC_LOGPROBS: {
		const struct ipc_logprobs *l = &m->u.logprobs;

		assert_true(x->want_lp);
		assert_false(x->lp_pending);
		assert_false(x->last_seen);
		assert_int_equal(l->index, x->n); /* the TOKEN that follows */
		assert_int_equal(l->n_top, x->want_top);
		assert_int_equal(m->hdr.len, ipc_logprobs_len(l->n_top));
		assert_true(l->logprob <= 0.0f && isfinite(l->logprob));
		for (uint32_t i = 0; i < l->n_top; i++) {
			assert_true(l->top[i].token >= 0 && l->top[i].token < n_vocab_model);
			if (i > 0)
				assert_true(l->top[i].logprob <= l->top[i - 1].logprob);
		}
		x->lp[x->n] = l->logprob;
		if (l->n_top > 0)
			x->top0[x->n] = l->top[0];
		if (l->n_top > 1)
			x->top1[x->n] = l->top[1];
		x->tokens[x->n] = l->token; /* the TOKEN must agree */
		x->lp_pending = true;
		break;
	}
	case IPC_TOKEN: {
		const struct ipc_token *t = &m->u.token;

		/* LOGPROBS right before each TOKEN exactly when asked, same index and token. */
		assert_int_equal(x->lp_pending, x->want_lp);
		if (x->want_lp)
			assert_int_equal(t->token, x->tokens[x->n]);
		x->lp_pending = false;
		assert_false(x->last_seen);
		assert_false(x->error);
		assert_int_equal(t->index, x->n); /* in order, no gaps */
		assert_int_equal(!!(t->flags & IPC_TOK_FIRST), x->n == 0);
		assert_true(t->token >= 0 && t->token < n_vocab_model);
		assert_true(x->n < MAX_GEN);
		if (x->n > 0)
			assert_true(t->t_ns >= x->t_ns[x->n - 1]);
		x->tokens[x->n] = t->token;
		x->t_ns[x->n++] = t->t_ns;
		if (t->flags & IPC_TOK_LAST) {
			x->last_seen = true;
			x->last_finish = t->finish;
		}
		break;
	}
	case IPC_ERROR:
		assert_false(x->error);
		x->error = true;
		x->error_code = m->u.error.code;
		snprintf(x->error_msg, sizeof(x->error_msg), "%s", m->u.error.msg);
		break;
	case IPC_DONE:
		assert_false(x->lp_pending);
		x->done = true;
		x->d = m->u.done;
		/* Sent right after the step that finished it, not at the next timer. */
		/* Sent with the step that finished it, not at the next timer (generous for CI load). */
		assert_true(now_ns() - x->d.t_done_ns < 2000 * 1000000ull);
		assert_int_equal(x->d.n_generated, x->n);
		if (x->last_seen)
			assert_int_equal(x->d.finish, x->last_finish);
		assert_int_equal(x->error, x->d.finish == IPC_FINISH_ERROR);
		if (x->n > 0) {
			assert_int_equal(x->d.t_first_ns, x->t_ns[0]);
			assert_true(x->d.t_done_ns >= x->t_ns[x->n - 1]);
			/* Arrival, first step, first token: in that order, on the worker's clock. */
			assert_true(x->d.t_arrival_ns > 0);
			assert_true(x->d.t_arrival_ns <= x->d.t_sched_ns);
			assert_true(x->d.t_sched_ns <= x->d.t_first_ns);
		}
		break;
	default:
		fail_msg("unexpected %s", ipc_type_name(m->hdr.type));
	}
	return x;
}

/* Receive until every stream is DONE. */
static void sup_collect(struct sup *s, struct stream *st, int n_st)
{
	for (;;) {
		int open = 0;

		for (int i = 0; i < n_st; i++)
			open += !st[i].done;
		if (!open)
			return;
		stream_add(st, n_st, sup_recv(s));
	}
}

/* --- the reference: one sequence, greedy, in process -------------------------------- */

static struct {
	struct gguf_file *f;
	struct model_desc *m;
	struct tokenizer *tok;
	struct backend *be;
	struct llm *llm;
	struct llm_seq seq;
	float *logits;
} ref;

static int group_setup(void **state)
{
	char err[512];
	struct be_options bo = { .threads = 2 };
	struct be_step_limits lim = { .max_tokens = 128, .max_seqs = 1, .max_table = 64 };
	struct llm_options lo = {
		.kv_dtype = GGML_TYPE_F16, .n_ctx = N_CTX, .block_tokens = 16, .max_tokens = 128
	};

	const char *build = getenv("BUILD");

	snprintf(model_path, sizeof(model_path), "%s/models/duet-tiny.gguf",
		 build && build[0] ? build : "build");
	snprintf(cfg_text, sizeof(cfg_text),
		 "model = { path = \"%s\"; context = %d; };\n"
		 "kv = { blocks = %d; block_tokens = 16; };\n"
		 "partitions = ( { name = \"p0\"; threads = 2; max_seqs = 8;\n"
		 "                 max_batch_tokens = 128; } );\n",
		 model_path, N_CTX, N_BLOCKS);
	if (access(model_path, R_OK) != 0) {
		fprintf(stderr, "test_worker: %s missing (run make)\n", model_path);
		return -1;
	}
	if (gguf_open(model_path, &ref.f, err, sizeof(err)) ||
	    model_desc_load(ref.f, 0, &ref.m, err, sizeof(err)) ||
	    tok_create(ref.f, ref.m, &ref.tok, err, sizeof(err))) {
		fprintf(stderr, "test_worker: %s\n", err);
		return -1;
	}
	if (backend_open("cpu", &bo, &lim, &ref.be) || llm_create(ref.be, ref.m, &lo, &ref.llm) ||
	    llm_seq_init(&ref.seq, ref.llm))
		return -1;
	n_vocab_model = (int32_t)ref.m->n_vocab;
	ref.logits = calloc((size_t)n_vocab_model, sizeof(float));
	/* Expired leases' blocks come back soon enough for tests that wait for them. */
	worker_test_kv_quarantine_ms(TEST_QUARANTINE_MS);
	return ref.logits ? 0 : -1;
}

static int group_teardown(void **state)
{
	worker_test_kv_quarantine_ms(0);
	free(ref.logits);
	if (ref.seq.llm)
		llm_seq_free(&ref.seq);
	llm_destroy(ref.llm);
	backend_close(ref.be);
	tok_destroy(ref.tok);
	model_desc_free(ref.m);
	gguf_close(ref.f);
	return 0;
}

/* Greedy continuation of prompt; returns the tokens generated (stops after an EOG token). */
static int ref_greedy(const int32_t *prompt, int n, int max_tokens, int32_t *out)
{
	int32_t id;
	int k = 0;

	llm_seq_reset(&ref.seq);
	assert_int_equal(llm_seq_eval(&ref.seq, prompt, n, ref.logits, NULL), 0);
	while (k < max_tokens) {
		id = 0;
		for (int32_t v = 1; v < n_vocab_model; v++) {
			if (ref.logits[v] > ref.logits[id])
				id = v;
		}
		out[k++] = id;
		if (tok_is_eog(ref.tok, id) || n + k >= N_CTX)
			break;
		assert_int_equal(llm_seq_eval(&ref.seq, &id, 1, ref.logits, NULL), 0);
	}
	return k;
}

static void make_prompt(int32_t *p, int n, uint32_t seed)
{
	for (int i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		p[i] = (int32_t)((seed >> 8) % (uint32_t)n_vocab_model);
	}
}

/* The stream is complete and equals the reference run. */
static void check_against_ref(const struct stream *x, const int32_t *prompt, int n, int max_tokens)
{
	int32_t want[MAX_GEN];
	int k = ref_greedy(prompt, n, max_tokens, want);

	assert_true(x->done);
	assert_int_equal(x->d.n_prompt, n);
	assert_int_equal(x->n, k);
	assert_memory_equal(x->tokens, want, sizeof(int32_t) * (size_t)k);
	assert_true(x->last_seen);
	if (tok_is_eog(ref.tok, want[k - 1]))
		assert_int_equal(x->d.finish, IPC_FINISH_EOG);
	else
		assert_int_equal(x->d.finish,
				 k == max_tokens ? IPC_FINISH_LENGTH : IPC_FINISH_CONTEXT);
}

static void shutdown_now(struct sup *s)
{
	struct ipc_shutdown sd = { .mode = IPC_SHUTDOWN_NOW };

	sup_send(s, IPC_SHUTDOWN, 0, &sd, sizeof(sd));
	assert_int_equal(sup_join(s, TIMEOUT_MS), WORKER_EXIT_OK);
}

/* --- tests -------------------------------------------------------------------------- */

static void test_handshake_ping_stats_shutdown(void **state)
{
	worker_set_step_delay_us(0);
	struct sup *s = sup_start(cfg_text);
	struct ipc_ping ping = { .t_ns = 12345 };
	struct ipc_reload rl = { .what = IPC_RELOAD_LOG_LEVEL, .log_level = duet_log_get_level() };

	sup_handshake(s);
	sup_send(s, IPC_RELOAD, 0, &rl, sizeof(rl));
	sup_send(s, IPC_PING, 77, &ping, sizeof(ping));
	struct ipc_msg *m = sup_recv(s);
	assert_int_equal(m->hdr.type, IPC_PONG);
	assert_int_equal(m->hdr.req_id, 77);
	assert_int_equal(m->u.ping.t_ns, 12345);

	/* STATS keep coming while idle, about every WORKER_STATS_MS. */
	unsigned n0 = s->n_stats;
	uint64_t t0 = now_ns();
	while (s->n_stats < n0 + 2)
		assert_true(sup_recv_any(s, 2000));
	assert_true(now_ns() - t0 >= (uint64_t)WORKER_STATS_MS * 1000000ull / 2);
	assert_int_equal(s->stats.kv_total, N_BLOCKS);
	assert_int_equal(s->stats.kv_used, 0);
	assert_int_equal(s->stats.running + s->stats.waiting, 0);

	shutdown_now(s);
	sup_free(s);
}

static void test_greedy_stream(void **state)
{
	worker_set_step_delay_us(0);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(1, sizeof(*st));
	int32_t prompt[12];

	sup_handshake(s);
	make_prompt(prompt, 12, 1);
	st->rid = 1001;
	sup_submit(s, st->rid, prompt, 12, 40, 12, 0);
	sup_collect(s, st, 1);
	check_against_ref(st, prompt, 12, 40);
	assert_int_equal(st->d.n_preempted, 0);
	assert_true(st->d.t_first_ns > 0);

	shutdown_now(s);
	sup_free(s);
	free(st);
}

static void test_chunked_prompt(void **state)
{
	worker_set_step_delay_us(0);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(2, sizeof(*st));
	int32_t prompt[300];

	sup_handshake(s);
	make_prompt(prompt, 300, 2);
	st[0].rid = 7;
	st[1].rid = 8;
	sup_submit(s, 7, prompt, 300, 30, 100, 90); /* 100 + 90 + 90 + 20 */
	sup_submit(s, 8, prompt, 300, 30, 1, 299);  /* 1 + 299 */
	sup_collect(s, st, 2);
	check_against_ref(&st[0], prompt, 300, 30);
	check_against_ref(&st[1], prompt, 300, 30);

	shutdown_now(s);
	sup_free(s);
	free(st);
}

static void test_cancel_frees_kv(void **state)
{
	/* 2 ms per step: the requests are still running when the test acts. */
	worker_set_step_delay_us(2000);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(1, sizeof(*st));
	struct ipc_cancel c = { .reason = IPC_CANCEL_CLIENT };
	int32_t prompt[8];

	sup_handshake(s);
	make_prompt(prompt, 8, 3);
	st->rid = 42;
	sup_submit(s, 42, prompt, 8, 500, 8, 0);
	while (st->n < 3)
		stream_add(st, 1, sup_recv(s));
	sup_send(s, IPC_CANCEL, 42, &c, sizeof(c));
	sup_collect(s, st, 1);
	assert_int_equal(st->d.finish, IPC_FINISH_CANCELLED);
	assert_false(st->last_seen);
	assert_true(st->n >= 3 && st->n < 500);
	/* A cancel that crossed the DONE is ignored. */
	sup_send(s, IPC_CANCEL, 42, &c, sizeof(c));

	/* A STATS after the DONE shows the blocks back (full ones may stay cached). */
	do
		sup_next_stats(s);
	while (s->stats.kv_used != 0);
	assert_int_equal(s->stats.running + s->stats.waiting, 0);
	assert_int_equal(s->stats.gen_tokens, (uint64_t)st->n);

	/* Cancelling a request whose prompt is still arriving ends it at once. */
	struct stream half = { .rid = 43 };
	sup_submit(s, 43, prompt, 8, 10, 4, 0);
	sup_submit(s, 43, prompt, 4, 10, 4, 0); /* id in use: ERROR only */
	struct ipc_msg *m = sup_recv(s);
	assert_int_equal(m->hdr.type, IPC_ERROR);
	assert_int_equal(m->u.error.code, -EEXIST);
	sup_send(s, IPC_CANCEL, 43, &c, sizeof(c));
	sup_collect(s, &half, 1);
	assert_false(half.error);
	assert_int_equal(half.d.finish, IPC_FINISH_CANCELLED);
	assert_int_equal(half.n, 0);

	shutdown_now(s);
	sup_free(s);
	free(st);
}

/* Wait (STATS by STATS) until the worker reports `leased` blocks held by reservations. */
static void wait_leased(struct sup *s, uint32_t leased)
{
	do
		sup_next_stats(s);
	while (s->stats.kv_leased != leased);
}

/*
 * Decode-side reservations: LEASE answers LEASED with ceil(n / 16) distinct
 * blocks, held until LEASE_FREE or the deadline (expired while the worker
 * is idle, too); a reservation that cannot fit is an ERROR for its request.
 */
static void test_leases(void **state)
{
	struct sup *s = sup_start(cfg_text);
	struct ipc_lease_free f;
	struct ipc_msg *m;

	(void)state;
	sup_handshake(s);
	sup_lease(s, 7, 40, 60000, 1, 0, NULL, 0);
	m = sup_recv(s);
	assert_int_equal(m->hdr.type, IPC_LEASED);
	assert_int_equal(m->hdr.req_id, 7);
	assert_int_equal(m->u.leased.n_blocks, 3);
	assert_int_equal(m->u.leased.n_cached, 0);
	for (int i = 0; i < 3; i++) {
		assert_true(m->u.leased.blocks[i] >= 0);
		for (int k = 0; k < i; k++)
			assert_int_not_equal(m->u.leased.blocks[i], m->u.leased.blocks[k]);
	}
	f = (struct ipc_lease_free){ .lease_id = m->u.leased.lease_id,
				     .epoch = m->u.leased.epoch };
	wait_leased(s, 3);
	sup_send(s, IPC_LEASE_FREE, 7, &f, sizeof(f));
	wait_leased(s, 0);
	sup_send(s, IPC_LEASE_FREE, 7, &f, sizeof(f)); /* stale now: ignored */

	/* 1 ms to live: gone by a later STATS, with no step running. */
	sup_lease(s, 8, 40, 1, 1, 0, NULL, 0);
	m = sup_recv(s);
	assert_int_equal(m->hdr.type, IPC_LEASED);
	wait_leased(s, 0);

	/* Too long for the context: an ERROR for that request, the worker lives on. */
	sup_lease(s, 9, N_CTX, 1000, 1, 0, NULL, 0);
	m = sup_recv(s);
	assert_int_equal(m->hdr.type, IPC_ERROR);
	assert_int_equal(m->hdr.req_id, 9);
	assert_int_equal(m->u.error.code, -E2BIG);
	shutdown_now(s);
	sup_free(s);
}

/*
 * The blocks of an expired lease are quarantined: STATS count them in
 * kv_leased (not free) from the expiry until the quarantine has passed,
 * then they are free.
 */
static void test_lease_quarantine(void **state)
{
	const uint64_t q_ns = 1000 * 1000000ull;
	struct sup *s;
	struct ipc_msg *m;
	uint64_t t_expired;

	(void)state;
	worker_test_kv_quarantine_ms(1000);
	s = sup_start(cfg_text);
	sup_handshake(s);
	sup_lease(s, 8, 40, 1, 1, 0, NULL, 0); /* 3 blocks, 1 ms to live */
	m = sup_recv(s);
	assert_int_equal(m->hdr.type, IPC_LEASED);
	do
		assert_true(sup_recv_any(s, 2000));
	while (s->stats.leases_expired == 0);
	/* the STATS right after the expiry, which the same timer tick did */
	assert_int_equal(s->stats.kv_leased, 3);
	assert_int_equal(s->stats.kv_used, 0);
	t_expired = s->stats.t_ns;
	do {
		sup_next_stats(s);
		if (s->stats.kv_leased)
			assert_int_equal(s->stats.kv_leased, 3);
	} while (s->stats.kv_leased);
	/* free no earlier than the quarantine allows (the expiry came a moment before its STATS) */
	assert_true(s->stats.t_ns - t_expired >= q_ns - 20 * 1000000ull);
	assert_int_equal(s->stats.kv_used, 0);
	worker_test_kv_quarantine_ms(TEST_QUARANTINE_MS);
	shutdown_now(s);
	sup_free(s);
}

/* The next frame of type t (STATS skipped); fails on anything else. */
static struct ipc_msg *expect_type(struct sup *s, enum ipc_type t)
{
	struct ipc_msg *m = sup_recv(s);

	if (m->hdr.type != t)
		fail_msg("expected %s, got %s", ipc_type_name(t), ipc_type_name(m->hdr.type));
	return m;
}

/* Relay an XFER_DESC from one worker to the other, as the supervisor does. */
static void relay_desc(struct sup *from, int from_part, struct sup *to)
{
	struct ipc_msg *m = expect_type(from, IPC_XFER_DESC);
	struct ipc_xfer_desc d = m->u.desc;
	int fds[IPC_MAX_FDS];
	unsigned n = m->n_fds;

	assert_int_equal(d.n_fds, n);
	memcpy(fds, m->fds, sizeof(int) * n);
	d.partition = (uint32_t)from_part;
	assert_int_equal(ipc_send_fds(to->ch, IPC_XFER_DESC, 0, &d, IPC_DESC_FIXED + d.len, fds, n),
			 0);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

/*
 * A prefill worker and a decode worker connect their KV transfer endpoints
 * through a relaying supervisor (descriptors and fds in XFER_DESC frames):
 * both report XFER_READY 0, and again after a second XFER_CONNECT (a peer
 * that restarted).  Connecting to itself or with no split configured is
 * refused with a status.
 */
static void test_xfer_connect(void **state)
{
	char text[1400];
	struct sup *a, *b, *mixed;
	struct ipc_xfer_connect c = { 0 };
	struct ipc_msg *m;

	(void)state;
	snprintf(text, sizeof(text),
		 "model = { path = \"%s\"; context = %d; };\n"
		 "kv = { blocks = %d; block_tokens = 16; };\n"
		 "transport = { driver = \"shm\"; };\n"
		 "partitions = ( { name = \"p0\"; role = \"prefill\"; threads = 1; max_seqs = 8;\n"
		 "                 max_batch_tokens = 128; },\n"
		 "               { name = \"p1\"; role = \"decode\"; threads = 1; max_seqs = 8;\n"
		 "                 max_batch_tokens = 128; } );\n",
		 model_path, N_CTX, N_BLOCKS);
	a = sup_start_part(text, 0);
	b = sup_start_part(text, 1);
	m = expect_type(a, IPC_HELLO);
	assert_int_equal(m->u.hello.role, IPC_ROLE_PREFILL);
	expect_type(a, IPC_READY);
	m = expect_type(b, IPC_HELLO);
	assert_int_equal(m->u.hello.role, IPC_ROLE_DECODE);
	expect_type(b, IPC_READY);

	c.partition = 1;
	sup_send(a, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	c.partition = 0;
	sup_send(b, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	relay_desc(a, 0, b);
	relay_desc(b, 1, a);
	m = expect_type(a, IPC_XFER_READY);
	assert_int_equal(m->u.xready.partition, 1);
	assert_int_equal(m->u.xready.status, 0);
	m = expect_type(b, IPC_XFER_READY);
	assert_int_equal(m->u.xready.partition, 0);
	assert_int_equal(m->u.xready.status, 0);

	/* Refusals come back as a status, and the workers live on. */
	c.partition = 0;
	sup_send(a, IPC_XFER_CONNECT, 0, &c, sizeof(c)); /* itself */
	m = expect_type(a, IPC_XFER_READY);
	assert_true(m->u.xready.status < 0);
	/* Connecting again (the peer restarted) makes a new endpoint and connects it. */
	c.partition = 1;
	sup_send(a, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	c.partition = 0;
	sup_send(b, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	relay_desc(a, 0, b);
	relay_desc(b, 1, a);
	assert_int_equal(expect_type(a, IPC_XFER_READY)->u.xready.status, 0);
	assert_int_equal(expect_type(b, IPC_XFER_READY)->u.xready.status, 0);
	shutdown_now(a);
	shutdown_now(b);
	sup_free(a);
	sup_free(b);

	mixed = sup_start(cfg_text); /* one mixed partition: no transfer driver at all */
	sup_handshake(mixed);
	sup_send(mixed, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	m = expect_type(mixed, IPC_XFER_READY);
	assert_true(m->u.xready.status < 0);
	shutdown_now(mixed);
	sup_free(mixed);
}

/* --- split prefill / decode: SHIP, PREFILLED, ADOPT ---------------------------------- */

#define SPLIT_CASES 6
#define SPLIT_PREFILL_BATCH 32 /* the prefill partition's max_batch_tokens: long prompts chunk */

/* A stream of STATS until one shows (kv_leased, xfer_rejected); at most 50 of them. */
static void wait_stats(struct sup *s, uint32_t leased, uint64_t rejected)
{
	for (int k = 0; k < 50; k++) {
		sup_next_stats(s);
		if (s->stats.kv_leased == leased && s->stats.xfer_rejected == rejected)
			return;
	}
	fail_msg("STATS show kv_leased %u, xfer_rejected %llu; expected %u, %llu",
		 s->stats.kv_leased, (unsigned long long)s->stats.xfer_rejected, leased,
		 (unsigned long long)rejected);
}

/*
 * A request with a greedy sampler: the prompt as a SUBMIT of `first` tokens
 * and PROMPT_CHUNKs of `chunk` (0: no chunks); n_top < 0: no logprobs.
 */
static void sup_submit2(struct sup *s, uint64_t rid, const int32_t *prompt, uint32_t n,
			uint32_t max_tokens, uint32_t first, uint32_t chunk, int n_top)
{
	memset(&s->sub, 0, IPC_SUBMIT_FIXED);
	s->sub.sampling = (struct ipc_sampling){ .top_p = 1.0f, .repeat_penalty = 1.0f };
	s->sub.salt = s->salt;
	s->sub.max_tokens = max_tokens;
	s->sub.n_prompt = n;
	s->sub.n_tokens = first < n ? first : n;
	s->sub.logprobs_flags = n_top >= 0 ? IPC_SUBMIT_LOGPROBS : 0;
	s->sub.n_top = n_top > 0 ? (uint32_t)n_top : 0;
	memcpy(s->sub.tokens, prompt, 4 * s->sub.n_tokens);
	sup_send(s, IPC_SUBMIT, rid, &s->sub, ipc_submit_len(s->sub.n_tokens));
	for (uint32_t off = s->sub.n_tokens; chunk > 0 && off < n; off += chunk) {
		uint32_t k = n - off < chunk ? n - off : chunk;

		memset(&s->chunk, 0, IPC_CHUNK_FIXED);
		s->chunk.n_prompt = n;
		s->chunk.offset = off;
		s->chunk.n_tokens = k;
		memcpy(s->chunk.tokens, prompt + off, 4 * k);
		sup_send(s, IPC_PROMPT_CHUNK, rid, &s->chunk, ipc_chunk_len(k));
	}
}

/* One request of the split tests. */
struct scase {
	uint64_t rid;
	int32_t prompt[400];
	uint32_t n, max_tokens, first, chunk;
	int n_top; /* < 0: no logprobs */
};

/* What the prefill worker said about one shipped request. */
struct shipped {
	uint64_t rid;
	bool have_rec, done, error;
	struct ipc_kv_record rec;
	struct ipc_done d;
	int32_t error_code;
	char error_msg[IPC_ERRMSG_MAX];
};

/* A prefill worker (partition 0) and a decode worker (partition 1), the test between them. */
struct split {
	struct sup *p, *d;
	struct ipc_ship *ship; /* send buffer */
	uint32_t n_blocks;     /* of the last lease */
	uint32_t n_cached;     /* of them cached on the decode side (the SHIP's first) */
};

static struct split *split_open(const char *text)
{
	struct split *sp = calloc(1, sizeof(*sp));
	struct ipc_msg *m;

	assert_non_null(sp);
	sp->ship = calloc(1, sizeof(*sp->ship));
	assert_non_null(sp->ship);
	sp->p = sup_start_part(text, 0);
	sp->d = sup_start_part(text, 1);
	m = expect_type(sp->p, IPC_HELLO);
	assert_int_equal(m->u.hello.role, IPC_ROLE_PREFILL);
	expect_type(sp->p, IPC_READY);
	m = expect_type(sp->d, IPC_HELLO);
	assert_int_equal(m->u.hello.role, IPC_ROLE_DECODE);
	expect_type(sp->d, IPC_READY);
	return sp;
}

/* The supervisor's part of connecting the two KV endpoints. */
static void split_connect(struct split *sp)
{
	struct ipc_xfer_connect c = { .partition = 1 };

	sup_send(sp->p, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	c.partition = 0;
	sup_send(sp->d, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	relay_desc(sp->p, 0, sp->d);
	relay_desc(sp->d, 1, sp->p);
	assert_int_equal(expect_type(sp->p, IPC_XFER_READY)->u.xready.status, 0);
	assert_int_equal(expect_type(sp->d, IPC_XFER_READY)->u.xready.status, 0);
}

static void split_close(struct split *sp)
{
	shutdown_now(sp->p);
	shutdown_now(sp->d);
	sup_free(sp->p);
	sup_free(sp->d);
	free(sp->ship);
	free(sp);
}

/*
 * LEASE (ttl_ms; tokens[0, n_tokens) under salt to match) on the decode
 * worker; its LEASED becomes sp->ship (checksummed, for partition 1, 60 s to
 * live, the cached entries not to be written).
 */
static void split_lease_match(struct split *sp, uint64_t rid, uint32_t n_prompt, uint32_t ttl_ms,
			      uint64_t salt, const int32_t *tokens, uint32_t n_tokens)
{
	const struct ipc_leased *ld;
	struct ipc_msg *m;

	sup_lease(sp->d, rid, n_prompt, ttl_ms, 0, salt, tokens, n_tokens);
	m = expect_type(sp->d, IPC_LEASED);
	assert_int_equal(m->hdr.req_id, rid);
	ld = &m->u.leased;
	assert_int_equal(ld->n_blocks, (n_prompt + 15) / 16);
	assert_int_equal(ld->blocks_total, N_BLOCKS);
	assert_true(ld->block_bytes > 0);
	assert_true(ld->n_cached <= (n_prompt - 1) / 16);
	memset(sp->ship, 0, IPC_SHIP_FIXED);
	sp->ship->partition = 1;
	sp->ship->lease_id = ld->lease_id;
	sp->ship->epoch = ld->epoch;
	sp->ship->region = ld->region;
	sp->ship->blocks_total = ld->blocks_total;
	sp->ship->block_bytes = ld->block_bytes;
	sp->ship->n_blocks = ld->n_blocks;
	sp->ship->flags = IPC_SHIP_CHECKSUM;
	sp->ship->ttl_ms = 60000;
	sp->ship->first = ld->n_cached;
	memcpy(sp->ship->blocks, ld->blocks, 4 * ld->n_blocks);
	sp->n_blocks = ld->n_blocks;
	sp->n_cached = ld->n_cached;
}

/* A LEASE without prompt tokens: nothing cached, every block written. */
static void split_lease_ttl(struct split *sp, uint64_t rid, uint32_t n_prompt, uint32_t ttl_ms)
{
	split_lease_match(sp, rid, n_prompt, ttl_ms, 0, NULL, 0);
	assert_int_equal(sp->n_cached, 0);
}

static void split_lease(struct split *sp, uint64_t rid, uint32_t n_prompt)
{
	split_lease_ttl(sp, rid, n_prompt, 60000);
}

static void split_ship(struct split *sp, uint64_t rid)
{
	sup_send(sp->p, IPC_SHIP, rid, sp->ship, IPC_SHIP_FIXED + 4 * sp->ship->n_blocks);
}

/* c's SUBMIT (and chunks) on the prefill worker (max_tokens there: any, it makes one). */
static void split_submit(struct split *sp, const struct scase *c)
{
	sup_submit2(sp->p, c->rid, c->prompt, c->n, 50, c->first, c->chunk, c->n_top);
}

/* Lease, then SHIP + SUBMIT on the prefill worker. */
static void split_prefill(struct split *sp, const struct scase *c)
{
	split_lease(sp, c->rid, c->n);
	split_ship(sp, c->rid);
	split_submit(sp, c);
}

static void lease_free(struct sup *d, uint64_t rid, int32_t id, uint64_t epoch)
{
	struct ipc_lease_free f = { .lease_id = id, .epoch = epoch };

	sup_send(d, IPC_LEASE_FREE, rid, &f, sizeof(f));
}

/* LEASE_FREE of the lease the last split_lease*() took (sp->ship's). */
static void split_lease_free(struct split *sp, uint64_t rid)
{
	lease_free(sp->d, rid, sp->ship->lease_id, sp->ship->epoch);
}

/* The prefill worker's frames until every x[] is DONE: PREFILLED then DONE, or ERROR + DONE. */
static void collect_shipped(struct sup *p, struct shipped *x, int n)
{
	for (;;) {
		struct shipped *t = NULL;
		struct ipc_msg *m;
		int open = 0;

		for (int i = 0; i < n; i++)
			open += !x[i].done;
		if (!open)
			return;
		m = sup_recv(p);
		for (int i = 0; i < n; i++) {
			if (x[i].rid == m->hdr.req_id)
				t = &x[i];
		}
		if (!t)
			fail_msg("%s for unknown request %llu", ipc_type_name(m->hdr.type),
				 (unsigned long long)m->hdr.req_id);
		assert_false(t->done);
		switch (m->hdr.type) {
		case IPC_PREFILLED:
			assert_false(t->have_rec);
			assert_false(t->error);
			t->have_rec = true;
			memcpy(&t->rec, &m->u.kv, m->hdr.len);
			break;
		case IPC_ERROR:
			assert_false(t->error);
			t->error = true;
			t->error_code = m->u.error.code;
			snprintf(t->error_msg, sizeof(t->error_msg), "%s", m->u.error.msg);
			break;
		case IPC_DONE:
			t->done = true;
			t->d = m->u.done;
			if (t->have_rec) {
				assert_true(t->d.finish == IPC_FINISH_LENGTH ||
					    t->d.finish == IPC_FINISH_EOG);
				assert_int_equal(t->d.n_generated, 1);
			} else {
				assert_int_equal(t->d.n_generated, 0);
				assert_int_equal(t->error, t->d.finish == IPC_FINISH_ERROR);
			}
			break;
		default:
			/* No TOKEN or LOGPROBS for a shipped request. */
			fail_msg("unexpected %s from the prefill worker",
				 ipc_type_name(m->hdr.type));
		}
	}
}

/* The prefill worker's frames for rid: PREFILLED (its record into *rec), then DONE. */
static void expect_record(struct split *sp, uint64_t rid, struct ipc_kv_record *rec)
{
	struct shipped x = { .rid = rid };

	collect_shipped(sp->p, &x, 1);
	if (!x.have_rec)
		fail_msg("request %llu: no PREFILLED (%s)", (unsigned long long)rid, x.error_msg);
	*rec = x.rec;
}

/* ADOPT with rec, then the SUBMIT it applies to, on the decode worker. */
static void split_adopt(struct split *sp, const struct scase *c, const struct ipc_kv_record *rec)
{
	sup_send(sp->d, IPC_ADOPT, c->rid, rec, ipc_kv_record_len(rec->n_top));
	sup_submit2(sp->d, c->rid, c->prompt, c->n, c->max_tokens, c->first, c->chunk, c->n_top);
}

static void make_cases(struct scase *c)
{
	static const struct {
		uint32_t n, max_tokens, first, chunk;
		int n_top;
		uint32_t seed;
	} def[SPLIT_CASES] = {
		{ 100, 12, 100, 0, -1, 31 }, /* 7 blocks, 4 prefill steps */
		{ 20, 10, 7, 5, -1, 32 },    /* over one block, prompt in SUBMIT + chunks */
		{ 5, 8, 5, 0, -1, 33 },	     /* under one block */
		{ 40, 10, 40, 0, 3, 34 },    /* logprobs, 3 alternatives */
		{ 18, 1, 18, 0, 0, 35 },     /* logprobs, no alternatives, one token */
		{ 100, 12, 60, 40, -1, 31 }, /* case 0's prompt: the prefill cache has its prefix */
	};

	for (int i = 0; i < SPLIT_CASES; i++) {
		c[i] = (struct scase){ .rid = 300 + (uint64_t)i,
				       .n = def[i].n,
				       .max_tokens = def[i].max_tokens,
				       .first = def[i].first,
				       .chunk = def[i].chunk,
				       .n_top = def[i].n_top };
		make_prompt(c[i].prompt, (int)c[i].n, def[i].seed);
	}
}

static void stream_init(struct stream *st, const struct scase *c)
{
	*st = (struct stream){ .rid = c->rid,
			       .want_lp = c->n_top >= 0,
			       .want_top = c->n_top > 0 ? (uint32_t)c->n_top : 0 };
}

/*
 * Every case through a mixed worker, then through prefill -> KV transfer ->
 * decode: the same tokens (the greedy reference too) and the same logprobs.
 */
static void split_end_to_end(const char *text)
{
	struct scase *cs = calloc(SPLIT_CASES, sizeof(*cs));
	struct stream *mix = calloc(SPLIT_CASES, sizeof(*mix));
	struct stream *st = calloc(SPLIT_CASES, sizeof(*st));
	struct shipped *sh = calloc(SPLIT_CASES, sizeof(*sh));
	uint32_t n_blocks[SPLIT_CASES];
	uint32_t n_layers = ref.m->n_layers;
	struct split *sp;
	struct sup *m;

	assert_non_null(cs);
	assert_non_null(mix);
	assert_non_null(st);
	assert_non_null(sh);
	worker_set_step_delay_us(0);
	make_cases(cs);

	/* The baseline: one mixed partition. */
	m = sup_start(cfg_text);
	sup_handshake(m);
	for (int i = 0; i < SPLIT_CASES; i++) {
		stream_init(&mix[i], &cs[i]);
		sup_submit2(m, cs[i].rid, cs[i].prompt, cs[i].n, cs[i].max_tokens, cs[i].first,
			    cs[i].chunk, cs[i].n_top);
	}
	sup_collect(m, mix, SPLIT_CASES);
	shutdown_now(m);
	sup_free(m);

	sp = split_open(text);
	split_connect(sp);
	/* Case 0 alone first (fresh pools: adjacent blocks on both sides), then the rest at once. */
	for (int i = 0; i < SPLIT_CASES; i++) {
		sh[i].rid = cs[i].rid;
		split_prefill(sp, &cs[i]);
		n_blocks[i] = sp->n_blocks;
		if (i == 0)
			collect_shipped(sp->p, sh, 1);
	}
	collect_shipped(sp->p, sh, SPLIT_CASES);
	for (int i = 0; i < SPLIT_CASES; i++) {
		const struct ipc_kv_record *k = &sh[i].rec;

		if (!sh[i].have_rec)
			fail_msg("request %llu: no PREFILLED (%s)", (unsigned long long)sh[i].rid,
				 sh[i].error_msg);
		assert_int_equal(sh[i].d.n_prompt, cs[i].n);
		assert_int_equal(k->n_tokens, cs[i].n);
		assert_int_equal(k->n_layers, n_layers);
		assert_int_equal(k->first_token, mix[i].tokens[0]);
		assert_true(k->flags & IPC_KV_CHECKSUM);
		assert_int_equal(!!(k->flags & IPC_KV_LOGPROBS), cs[i].n_top >= 0);
		if (cs[i].n_top >= 0) {
			assert_int_equal(k->n_top, cs[i].n_top);
			assert_true(k->first_logprob == mix[i].lp[0]);
			if (k->n_top > 0)
				assert_memory_equal(&k->top[0], &mix[i].top0[0], sizeof(k->top[0]));
			if (k->n_top > 1)
				assert_memory_equal(&k->top[1], &mix[i].top1[0], sizeof(k->top[1]));
		}
		/* Every layer of every leased block, some twice (a block a chunk ends in). */
		assert_true(k->bytes >= (uint64_t)n_layers * n_blocks[i] * sp->ship->block_bytes);
		assert_int_equal(k->t_first_ns, sh[i].d.t_first_ns);
		assert_true(k->t_first_ns > 0);
	}
	/*
	 * Case 0: 4 steps of 32 tokens wrote table entries [0,2) [2,4) [4,6) [6,7): one
	 * write per step and layer when adjacent blocks merge, 7 per layer when not.
	 */
	assert_int_equal(sh[0].rec.writes, n_layers * 4);
	assert_int_equal(sh[0].rec.bytes, (uint64_t)n_layers * 7 * sp->ship->block_bytes);
	/* Case 5 found case 0's prompt in the prefill cache and shipped that prefix too. */
	assert_int_equal(sh[5].d.n_cached, 96);

	for (int i = 0; i < SPLIT_CASES; i++) {
		stream_init(&st[i], &cs[i]);
		split_adopt(sp, &cs[i], &sh[i].rec);
	}
	sup_collect(sp->d, st, SPLIT_CASES);
	for (int i = 0; i < SPLIT_CASES; i++) {
		if (st[i].error)
			fail_msg("request %llu: %s", (unsigned long long)st[i].rid,
				 st[i].error_msg);
		check_against_ref(&st[i], cs[i].prompt, (int)cs[i].n, (int)cs[i].max_tokens);
		assert_int_equal(st[i].n, mix[i].n);
		assert_memory_equal(st[i].tokens, mix[i].tokens, sizeof(int32_t) * (size_t)st[i].n);
		assert_int_equal(st[i].d.finish, mix[i].d.finish);
		if (!st[i].want_lp)
			continue;
		assert_memory_equal(st[i].lp, mix[i].lp, sizeof(float) * (size_t)st[i].n);
		if (st[i].want_top > 0)
			assert_memory_equal(st[i].top0, mix[i].top0,
					    sizeof(st[i].top0[0]) * (size_t)st[i].n);
		if (st[i].want_top > 1)
			assert_memory_equal(st[i].top1, mix[i].top1,
					    sizeof(st[i].top1[0]) * (size_t)st[i].n);
	}
	/* Every lease was used up; nothing was refused. */
	wait_stats(sp->d, 0, 0);
	split_close(sp);
	free(cs);
	free(mix);
	free(st);
	free(sh);
}

static const char split_fmt[] =
	"model = { path = \"%s\"; context = %d; };\n"
	"kv = { blocks = %d; block_tokens = 16; %s};\n"
	"transport = { driver = \"%s\"; %s };\n"
	"partitions = ( { name = \"pre\"; role = \"prefill\"; threads = 1; max_seqs = 8;\n"
	"                 max_batch_tokens = %d; },\n"
	"               { name = \"dec\"; role = \"decode\"; threads = 1; max_seqs = 8;\n"
	"                 max_batch_tokens = 128; } );\n";

/*
 * The split config into text[cap]: transport `driver` with xport_opt, kv_opt
 * (each "" or options ending in "; ") added to the kv group.
 */
static void split_text(char *text, size_t cap, const char *driver, const char *xport_opt,
		       const char *kv_opt)
{
	int len = snprintf(text, cap, split_fmt, model_path, N_CTX, N_BLOCKS, kv_opt, driver,
			   xport_opt, SPLIT_PREFILL_BATCH);

	assert_true(len > 0 && (size_t)len < cap);
}

/* Prompts through prefill -> shm -> decode equal the mixed partition's run. */
static void test_split_shm(void **state)
{
	char text[1600];

	(void)state;
	split_text(text, sizeof(text), "shm", "", "");
	split_end_to_end(text);
}

/* The same over tcp (loopback), the endpoints authenticated with a pre-shared key. */
static void test_split_tcp(void **state)
{
	static const char key[] = "duet worker test key, 32+ bytes long\n";
	char text[1600], opt[700], psk[600];
	char *dir = tu_mkdtemp();

	(void)state;
	snprintf(psk, sizeof(psk), "%s/psk", dir);
	assert_int_equal(tu_write_file(psk, key, sizeof(key) - 1), 0);
	assert_int_equal(chmod(psk, 0600), 0);
	snprintf(opt, sizeof(opt), "psk_file = \"%s\";", psk);
	split_text(text, sizeof(text), "tcp", opt, "");
	split_end_to_end(text);
	tu_rmtree(dir);
}

/* STATS until one shows (kv_used, kv_leased) (at most 50 of them); returns it. */
static const struct ipc_stats *wait_kv(struct sup *s, uint32_t used, uint32_t leased)
{
	for (int k = 0; k < 50; k++) {
		sup_next_stats(s);
		if (s->stats.kv_used == used && s->stats.kv_leased == leased)
			return &s->stats;
	}
	fail_msg("STATS show kv_used %u, kv_leased %u; expected %u, %u", s->stats.kv_used,
		 s->stats.kv_leased, used, leased);
	return NULL;
}

/* c through prefill -> transfer -> decode after split_lease_match; its record into *rec. */
static void share_run(struct split *sp, const struct scase *c, struct ipc_kv_record *rec,
		      struct stream *st)
{
	split_ship(sp, c->rid);
	split_submit(sp, c);
	expect_record(sp, c->rid, rec);
	stream_init(st, c);
	split_adopt(sp, c, rec);
	sup_collect(sp->d, st, 1);
	if (st->error)
		fail_msg("request %llu: %s", (unsigned long long)c->rid, st->error_msg);
}

/*
 * Decode-side prefix sharing.  The same 200-token prompt twice under one
 * salt: the first time nothing is cached on the decode side and all 13
 * blocks are written; the second time the decode worker's prefix cache
 * holds the 12 full blocks it adopted, the lease holds them (LEASED
 * n_cached 12, SHIP first 12) and the prefill worker writes only the last
 * one.  Both streams equal the mixed partition's (and the greedy
 * reference), and the checksum over the whole table agrees on both sides
 * both times (the forward pass is batch invariant).  Another salt finds
 * nothing.  A lease that pins the prefix and expires gives the blocks back
 * to the cache (STATS), where the next lease finds them again.
 */
static void test_split_prefix_share(void **state)
{
	char text[1600];
	struct scase *c = calloc(1, sizeof(*c));
	struct stream *mix = calloc(1, sizeof(*mix)), *st = calloc(2, sizeof(*st));
	struct ipc_kv_record rec[2];
	uint32_t n_layers = ref.m->n_layers;
	uint64_t block_bytes, expired;
	uint32_t cached;
	struct split *sp;
	struct sup *m;

	(void)state;
	assert_non_null(c);
	assert_non_null(mix);
	assert_non_null(st);
	worker_set_step_delay_us(0);
	*c = (struct scase){ .rid = 500, .n = 200, .max_tokens = 10, .first = 200, .n_top = -1 };
	make_prompt(c->prompt, (int)c->n, 77);

	m = sup_start(cfg_text);
	sup_handshake(m);
	m->salt = 0x5a17;
	stream_init(mix, c);
	sup_submit2(m, c->rid, c->prompt, c->n, c->max_tokens, c->first, c->chunk, c->n_top);
	sup_collect(m, mix, 1);
	check_against_ref(mix, c->prompt, (int)c->n, (int)c->max_tokens);
	shutdown_now(m);
	sup_free(m);

	split_text(text, sizeof(text), "shm", "", "");
	sp = split_open(text);
	split_connect(sp);
	sp->p->salt = sp->d->salt = 0x5a17;

	/* First: nothing cached on the decode side, every block written. */
	split_lease_match(sp, c->rid, c->n, 60000, 0x5a17, c->prompt, c->n);
	assert_int_equal(sp->n_cached, 0);
	block_bytes = sp->ship->block_bytes;
	share_run(sp, c, &rec[0], &st[0]);

	/* Second: the 12 full blocks the decode worker adopted are held, the 13th written. */
	c->rid = 501;
	split_lease_match(sp, c->rid, c->n, 60000, 0x5a17, c->prompt, c->n);
	assert_int_equal(sp->n_cached, 12);
	share_run(sp, c, &rec[1], &st[1]);

	for (int i = 0; i < 2; i++) {
		assert_int_equal(st[i].n, mix->n);
		assert_memory_equal(st[i].tokens, mix->tokens, sizeof(int32_t) * (size_t)mix->n);
		assert_int_equal(st[i].d.finish, mix->d.finish);
		assert_true(rec[i].flags & IPC_KV_CHECKSUM);
		assert_int_equal(rec[i].n_tokens, c->n);
	}
	print_message("prefix sharing: first %llu bytes in %u writes, second %llu bytes in %u "
		      "writes\n",
		      (unsigned long long)rec[0].bytes, rec[0].writes,
		      (unsigned long long)rec[1].bytes, rec[1].writes);
	/* 7 prefill steps of 2 blocks (the last of 1) wrote 13 blocks; then only the last. */
	assert_int_equal(rec[0].bytes, (uint64_t)n_layers * 13 * block_bytes);
	assert_int_equal(rec[0].writes, n_layers * 7);
	assert_int_equal(rec[1].bytes, (uint64_t)n_layers * block_bytes);
	assert_int_equal(rec[1].writes, n_layers);
	/* The same KV both times, as the decode side checked against its cached prefix. */
	assert_true(rec[1].checksum == rec[0].checksum);
	assert_int_equal(st[0].d.n_cached, 0);
	assert_int_equal(st[1].d.n_cached, 12 * 16);

	/* Another tenant's salt finds nothing. */
	split_lease_match(sp, 502, c->n, 60000, 0x0bad, c->prompt, c->n);
	assert_int_equal(sp->n_cached, 0);
	split_lease_free(sp, 502);

	/*
	 * A lease that pins the prefix (12 blocks in use, 1 leased) and expires: the 12 go
	 * back to the cache, not to the free list, and the next lease finds them again.
	 */
	cached = wait_kv(sp->d, 0, 0)->kv_cached;
	expired = sp->d->stats.leases_expired;
	split_lease_match(sp, 503, c->n, 1500, 0x5a17, c->prompt, c->n);
	assert_int_equal(sp->n_cached, 12);
	assert_int_equal(wait_kv(sp->d, 12, 1)->kv_cached, cached - 12);
	assert_int_equal(wait_kv(sp->d, 0, 0)->kv_cached, cached);
	assert_int_equal(sp->d->stats.leases_expired, expired + 1);
	split_lease_match(sp, 504, c->n, 60000, 0x5a17, c->prompt, c->n);
	assert_int_equal(sp->n_cached, 12);
	split_lease_free(sp, 504);
	assert_int_equal(wait_kv(sp->d, 0, 0)->kv_cached, cached);
	wait_stats(sp->d, 0, 0); /* nothing was refused */
	split_close(sp);

	/* With kv.prefix_cache off, a lease holds nothing cached. */
	split_text(text, sizeof(text), "shm", "", "prefix_cache = false; ");
	sp = split_open(text);
	split_connect(sp);
	sp->p->salt = sp->d->salt = 0x5a17;
	c->rid = 505;
	split_lease_match(sp, c->rid, c->n, 60000, 0x5a17, c->prompt, c->n);
	share_run(sp, c, &rec[0], &st[0]);
	split_lease_match(sp, 506, c->n, 60000, 0x5a17, c->prompt, c->n);
	assert_int_equal(sp->n_cached, 0);
	split_close(sp);
	free(c);
	free(mix);
	free(st);
}

/* The decode worker's answer to a rejected ADOPT: ERROR naming why, then DONE(ERROR). */
static void expect_rejected(struct split *sp, const struct scase *c, int code, const char *why)
{
	struct stream st;

	stream_init(&st, c);
	sup_collect(sp->d, &st, 1);
	assert_true(st.error);
	assert_int_equal(st.d.finish, IPC_FINISH_ERROR);
	assert_int_equal(st.n, 0);
	assert_int_equal(st.error_code, code);
	if (!strstr(st.error_msg, why) || !strstr(st.error_msg, "KV transfer record rejected") ||
	    !strstr(st.error_msg, "lease"))
		fail_msg("error '%s' does not say '%s'", st.error_msg, why);
}

/* The prefill worker's answer to a SHIP it cannot serve: ERROR naming why, DONE(ERROR). */
static void expect_ship_refused(struct split *sp, uint64_t rid, int code, const char *why)
{
	struct shipped x = { .rid = rid };

	collect_shipped(sp->p, &x, 1);
	assert_false(x.have_rec);
	assert_true(x.error);
	assert_int_equal(x.d.finish, IPC_FINISH_ERROR);
	assert_int_equal(x.error_code, code);
	if (!strstr(x.error_msg, why))
		fail_msg("error '%s' does not say '%s'", x.error_msg, why);
}

/* Ship c through the prefill worker; its completion record into *rec. */
static void prefill_ok(struct split *sp, const struct scase *c, struct ipc_kv_record *rec)
{
	split_prefill(sp, c);
	expect_record(sp, c->rid, rec);
}

/*
 * What fails closed.  Prefill side: a SHIP to a partition with no link, or
 * with another block size or block count, fails its request.  Decode side:
 * a completion record for a released lease, of an older epoch, with a wrong
 * checksum or covering another prompt length is rejected, the lease goes
 * back, and STATS count the rejections.  A cancelled SHIP request ends
 * without a record.
 */
static void test_split_fail_closed(void **state)
{
	char text[1600];
	struct scase c = { .n = 30, .max_tokens = 4, .first = 30, .n_top = -1 };
	struct ipc_kv_record rec;
	struct ipc_cancel cancel = { .reason = IPC_CANCEL_CLIENT };
	struct split *sp;
	int32_t id;
	uint64_t epoch;

	(void)state;
	worker_set_step_delay_us(0);
	split_text(text, sizeof(text), "shm", "", "");
	make_prompt(c.prompt, (int)c.n, 40);
	sp = split_open(text);

	/* No link to the decode partition yet. */
	c.rid = 800;
	split_prefill(sp, &c);
	expect_ship_refused(sp, c.rid, -ENOTCONN, "no connected KV link");
	split_lease_free(sp, c.rid);
	split_connect(sp);

	/* Another block size: different models or KV types. */
	c.rid = 801;
	split_lease(sp, c.rid, c.n);
	sp->ship->block_bytes *= 2;
	split_ship(sp, c.rid);
	sup_submit2(sp->p, c.rid, c.prompt, c.n, 4, c.first, c.chunk, c.n_top);
	expect_ship_refused(sp, c.rid, -EINVAL, "bytes");
	sp->ship->block_bytes /= 2;
	split_lease_free(sp, c.rid);

	/* A block count that does not fit the prompt. */
	c.rid = 802;
	split_lease(sp, c.rid, c.n);
	sp->ship->blocks[sp->ship->n_blocks++] = 0;
	split_ship(sp, c.rid);
	sup_submit2(sp->p, c.rid, c.prompt, c.n, 4, c.first, c.chunk, c.n_top);
	expect_ship_refused(sp, c.rid, -EINVAL, "SHIP names 3 blocks");
	split_lease_free(sp, c.rid);
	wait_stats(sp->d, 0, 0);

	/* The supervisor gave the lease up before the ADOPT: stale. */
	c.rid = 810;
	prefill_ok(sp, &c, &rec);
	lease_free(sp->d, c.rid, rec.lease_id, rec.epoch);
	split_adopt(sp, &c, &rec);
	expect_rejected(sp, &c, -ESTALE, "stale lease");

	/* A record of an older epoch: stale, and the lease held now is not touched. */
	c.rid = 811;
	prefill_ok(sp, &c, &rec);
	rec.epoch--;
	split_adopt(sp, &c, &rec);
	expect_rejected(sp, &c, -ESTALE, "stale lease");
	wait_stats(sp->d, sp->n_blocks, 2);
	lease_free(sp->d, c.rid, rec.lease_id, rec.epoch + 1);

	/* The bytes that landed are not the ones that were sent. */
	c.rid = 812;
	prefill_ok(sp, &c, &rec);
	rec.checksum ^= 0x100;
	split_adopt(sp, &c, &rec);
	expect_rejected(sp, &c, -EBADMSG, "checksum mismatch");

	/* A record for another prompt length. */
	c.rid = 813;
	prefill_ok(sp, &c, &rec);
	rec.n_tokens = c.n - 1;
	split_adopt(sp, &c, &rec);
	expect_rejected(sp, &c, -EINVAL, "covers 29 prompt tokens");
	wait_stats(sp->d, 0, 4);

	/* The same record unchanged is taken: nothing above was a false alarm. */
	c.rid = 814;
	prefill_ok(sp, &c, &rec);
	split_adopt(sp, &c, &rec);
	{
		struct stream st;

		stream_init(&st, &c);
		sup_collect(sp->d, &st, 1);
		check_against_ref(&st, c.prompt, (int)c.n, (int)c.max_tokens);
	}

	/* A cancelled SHIP request (13 steps of at least 2 ms): DONE(CANCELLED), no record. */
	worker_set_step_delay_us(2000);
	c.rid = 820;
	c.n = 400;
	c.first = 400;
	make_prompt(c.prompt, (int)c.n, 41);
	split_prefill(sp, &c);
	id = sp->ship->lease_id;
	epoch = sp->ship->epoch;
	sup_send(sp->p, IPC_CANCEL, c.rid, &cancel, sizeof(cancel));
	{
		struct shipped x = { .rid = c.rid };

		collect_shipped(sp->p, &x, 1);
		assert_false(x.have_rec);
		assert_false(x.error);
		assert_int_equal(x.d.finish, IPC_FINISH_CANCELLED);
	}
	worker_set_step_delay_us(0);
	lease_free(sp->d, c.rid, id, epoch);
	wait_stats(sp->d, 0, 4);
	split_close(sp);
}

/* --- the transfer protocol over the loopback fake driver ---------------------------- */

/*
 * The workers talk through drivers/net/loopback.c (worker_test_xfer_driver),
 * whose faults (worker_test_inject) hit the KV writes of one chosen request.
 * The prefill partition takes 32 tokens per step; a 30-token prompt is one
 * step of n_layers writes or more, a 100-token one four steps.
 */

/* Every hook back to its default, after each test (a failed one too). */
static int hooks_reset(void **state)
{
	(void)state;
	worker_test_xfer_driver(NULL);
	worker_test_xfer_timeout_ms(0);
	worker_test_inject(XFER_FAULT_DROP, 0);
	worker_test_release(false);
	worker_set_step_delay_us(0);
	return 0;
}

/* A prefill and a decode worker over loopback, their KV link up. */
static struct split *lb_open(void)
{
	char text[1600];
	struct split *sp;

	worker_set_step_delay_us(0);
	split_text(text, sizeof(text), "shm", "", "");
	worker_test_xfer_driver("loopback");
	sp = split_open(text);
	split_connect(sp);
	return sp;
}

/* A greedy request of n prompt tokens (seed), 8 to generate, the prompt in the SUBMIT. */
static void lb_case(struct scase *c, uint64_t rid, uint32_t n, uint32_t seed)
{
	*c = (struct scase){ .rid = rid, .n = n, .max_tokens = 8, .first = n, .n_top = -1 };
	make_prompt(c->prompt, (int)n, seed);
}

/* ADOPT rec on the decode worker: the stream equals the greedy reference. */
static void adopt_ok(struct split *sp, const struct scase *c, const struct ipc_kv_record *rec)
{
	struct stream st;

	stream_init(&st, c);
	split_adopt(sp, c, rec);
	sup_collect(sp->d, &st, 1);
	if (st.error)
		fail_msg("request %llu: %s", (unsigned long long)c->rid, st.error_msg);
	check_against_ref(&st, c->prompt, (int)c->n, (int)c->max_tokens);
}

/*
 * The tail of the test_lb_* cases: a 30-token request (rid, seed) goes through
 * the same link, nothing is left leased or refused, and sp is closed.
 */
static void lb_finish(struct split *sp, uint64_t rid, uint32_t seed)
{
	struct ipc_kv_record rec;
	struct scase c;

	lb_case(&c, rid, 30, seed);
	prefill_ok(sp, &c, &rec);
	adopt_ok(sp, &c, &rec);
	wait_stats(sp->d, 0, 0);
	split_close(sp);
}

/* Nothing but STATS from s for ms milliseconds. */
static void expect_quiet(struct sup *s, int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;

	for (uint64_t now = now_ns(); now < end; now = now_ns()) {
		if (sup_recv_any(s, (int)((end - now) / 1000000ull) + 1) &&
		    s->m.hdr.type != IPC_STATS)
			fail_msg("%s for request %llu while its KV write is held",
				 ipc_type_name(s->m.hdr.type), (unsigned long long)s->m.hdr.req_id);
	}
}

/* Prompts through prefill -> loopback -> decode equal the mixed partition's run. */
static void test_split_loopback(void **state)
{
	char text[1600];

	(void)state;
	worker_set_step_delay_us(0);
	split_text(text, sizeof(text), "shm", "", "");
	worker_test_xfer_driver("loopback");
	split_end_to_end(text);
}

/*
 * Writes delivered twice or out of order land in disjoint ranges, so the
 * transfer is still whole: the request completes with the reference tokens
 * (and the checksum, over what landed, agrees).
 */
static void test_lb_duplicate_reorder(void **state)
{
	struct split *sp = lb_open();
	struct ipc_kv_record rec;
	struct scase c;

	(void)state;
	lb_case(&c, 900, 100, 50);
	worker_test_inject(XFER_FAULT_DUPLICATE, 1);
	worker_test_inject(XFER_FAULT_DUPLICATE, 6);
	prefill_ok(sp, &c, &rec);
	adopt_ok(sp, &c, &rec);

	lb_case(&c, 901, 100, 51);
	worker_test_inject(XFER_FAULT_REORDER, 1);
	worker_test_inject(XFER_FAULT_REORDER, 7);
	prefill_ok(sp, &c, &rec);
	adopt_ok(sp, &c, &rec);
	wait_stats(sp->d, 0, 0);
	split_close(sp);
}

/*
 * c through prefill -> loopback -> decode with a write held (as injected):
 * quiet for 300 ms, then the record once released, then the reference stream.
 */
static void lb_held_ok(struct split *sp, const struct scase *c)
{
	struct ipc_kv_record rec;

	split_prefill(sp, c);
	expect_quiet(sp->p, 300);
	worker_test_release(true);
	expect_record(sp, c->rid, &rec);
	worker_test_release(false);
	adopt_ok(sp, c, &rec);
}

/*
 * A held write holds the record back: no PREFILLED (nor DONE) while it is
 * held, the request completes once it is delivered.  With the first write
 * duplicated as well, the extra copy must not stand in for the held one.
 */
static void test_lb_delay(void **state)
{
	struct split *sp = lb_open();
	struct scase c;

	(void)state;
	lb_case(&c, 910, 30, 52);
	worker_test_inject(XFER_FAULT_DELAY, 1);
	lb_held_ok(sp, &c);

	lb_case(&c, 911, 30, 53);
	worker_test_inject(XFER_FAULT_DUPLICATE, 1);
	worker_test_inject(XFER_FAULT_DELAY, 2);
	lb_held_ok(sp, &c);
	wait_stats(sp->d, 0, 0);
	split_close(sp);
}

/*
 * A write corrupted on the way: with IPC_SHIP_CHECKSUM the decode worker
 * refuses the record (the lease goes back, the rejection is counted).
 * Without the checksum nothing on either side can notice: the request is
 * admitted and decodes from the damaged KV (its tokens may or may not
 * differ, so only the admission is checked) -- which is what the flag is for.
 */
static void test_lb_corrupt(void **state)
{
	struct split *sp = lb_open();
	struct ipc_kv_record rec;
	struct scase c;

	(void)state;
	lb_case(&c, 920, 30, 54);
	worker_test_inject(XFER_FAULT_CORRUPT, 1);
	prefill_ok(sp, &c, &rec);
	assert_true(rec.flags & IPC_KV_CHECKSUM);
	split_adopt(sp, &c, &rec);
	expect_rejected(sp, &c, -EBADMSG, "checksum mismatch");
	wait_stats(sp->d, 0, 1);

	lb_case(&c, 921, 30, 55);
	split_lease(sp, c.rid, c.n);
	sp->ship->flags = 0;
	split_ship(sp, c.rid);
	worker_test_inject(XFER_FAULT_CORRUPT, 1);
	split_submit(sp, &c);
	{
		struct stream st;

		expect_record(sp, c.rid, &rec);
		assert_false(rec.flags & IPC_KV_CHECKSUM);
		stream_init(&st, &c);
		split_adopt(sp, &c, &rec);
		sup_collect(sp->d, &st, 1);
		assert_false(st.error);
		assert_true(st.n >= 1);
	}
	wait_stats(sp->d, 0, 1);
	split_close(sp);
}

/*
 * A write that vanishes never completes: the prefill worker gives up after
 * the transfer timeout (300 ms here), fails the request without a record,
 * and the next request over the same link goes through.
 */
static void test_lb_drop(void **state)
{
	struct split *sp = lb_open();
	struct scase c;
	uint64_t t0;

	(void)state;
	lb_case(&c, 930, 30, 56);
	worker_test_xfer_timeout_ms(300);
	worker_test_inject(XFER_FAULT_DROP, 2);
	t0 = now_ns();
	split_prefill(sp, &c);
	expect_ship_refused(sp, c.rid, -ETIMEDOUT, "not completed after 300 ms");
	assert_true(now_ns() - t0 < (uint64_t)WORKER_XFER_TIMEOUT_MS * 1000000ull);
	worker_test_xfer_timeout_ms(0);
	split_lease_free(sp, c.rid);

	lb_finish(sp, 931, 57);
}

/* A write that fails at the sender fails its request (-EIO), without a record. */
static void test_lb_fail(void **state)
{
	struct split *sp = lb_open();
	struct scase c;

	(void)state;
	lb_case(&c, 940, 30, 58);
	worker_test_inject(XFER_FAULT_FAIL, 2);
	split_prefill(sp, &c);
	expect_ship_refused(sp, c.rid, -EIO, "local failure");
	split_lease_free(sp, c.rid);

	lb_finish(sp, 941, 59);
}

/*
 * The lease deadline on the prefill side: SHIP's ttl_ms runs from its
 * arrival, and no write is posted after it.  A SUBMIT that comes too late
 * is refused; a prefill that takes longer than the ttl (13 steps of at least
 * 5 ms, ttl 20 ms) stops posting and fails.  Neither sends PREFILLED.
 */
static void test_lb_ship_deadline(void **state)
{
	struct split *sp = lb_open();
	struct scase c;

	(void)state;
	lb_case(&c, 950, 30, 60);
	split_lease_ttl(sp, c.rid, c.n, 30);
	sp->ship->ttl_ms = 30;
	split_ship(sp, c.rid);
	usleep(60 * 1000);
	split_submit(sp, &c);
	expect_ship_refused(sp, c.rid, -ETIMEDOUT,
			    "lease deadline passed (30 ms) before its KV was written");

	lb_case(&c, 951, 400, 61);
	split_lease(sp, c.rid, c.n);
	sp->ship->ttl_ms = 20;
	worker_set_step_delay_us(5000);
	split_ship(sp, c.rid);
	split_submit(sp, &c);
	expect_ship_refused(sp, c.rid, -ETIMEDOUT,
			    "lease deadline passed (20 ms) before its KV was written");
	worker_set_step_delay_us(0);
	split_lease_free(sp, c.rid);

	lb_finish(sp, 952, 62);
}

/*
 * The lease deadline on the decode side: a record that arrives after its
 * lease expired is refused (stale), the blocks are free again and STATS
 * count the expiry and the rejection.
 */
static void test_lb_adopt_expired(void **state)
{
	struct split *sp = lb_open();
	struct ipc_kv_record rec;
	struct scase c;
	struct stream st;

	(void)state;
	lb_case(&c, 960, 30, 63);
	split_lease_ttl(sp, c.rid, c.n, 30);
	split_ship(sp, c.rid); /* the SHIP's ttl stays 60 s: the transfer itself completes */
	split_submit(sp, &c);
	expect_record(sp, c.rid, &rec);
	usleep(60 * 1000);
	split_adopt(sp, &c, &rec);
	stream_init(&st, &c);
	sup_collect(sp->d, &st, 1);
	assert_true(st.error);
	assert_int_equal(st.n, 0);
	assert_int_equal(st.d.finish, IPC_FINISH_ERROR);
	if (st.error_code != -ESTALE && st.error_code != -ETIMEDOUT)
		fail_msg("error %d (%s): not a stale or expired lease", st.error_code,
			 st.error_msg);
	if (!strstr(st.error_msg, "KV transfer record rejected") || !strstr(st.error_msg, "lease"))
		fail_msg("error '%s' does not say the lease is gone", st.error_msg);
	wait_stats(sp->d, 0, 1);
	assert_true(sp->d->stats.leases_expired >= 1);
	split_close(sp);
}

static void test_eight_concurrent(void **state)
{
	worker_set_step_delay_us(0);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(8, sizeof(*st));
	int32_t prompts[8][64];
	int len[8], max[8];

	sup_handshake(s);
	for (int i = 0; i < 8; i++) {
		len[i] = 5 + 7 * i;
		max[i] = 20 + 9 * i;
		make_prompt(prompts[i], len[i], 100 + (uint32_t)i);
		st[i].rid = 500 + (uint64_t)i;
		sup_submit(s, st[i].rid, prompts[i], (uint32_t)len[i], (uint32_t)max[i], 64, 0);
	}
	sup_collect(s, st, 8);
	for (int i = 0; i < 8; i++)
		check_against_ref(&st[i], prompts[i], len[i], max[i]);

	shutdown_now(s);
	sup_free(s);
	free(st);
}

static void test_bad_token_fails_one_request(void **state)
{
	worker_set_step_delay_us(0);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(4, sizeof(*st));
	int32_t good[10], bad[20];

	sup_handshake(s);
	make_prompt(good, 10, 4);
	make_prompt(bad, 20, 5);
	for (int i = 0; i < 4; i++)
		st[i].rid = 10 + (uint64_t)i;
	bad[3] = n_vocab_model; /* valid on the wire (>= 0), outside the vocabulary */
	bad[15] = n_vocab_model + 100;
	sup_submit(s, 10, good, 10, 16, 10, 0);
	sup_submit(s, 11, bad, 10, 16, 10, 0); /* in the SUBMIT */
	sup_submit(s, 12, good, 10, 16, 10, 0);
	sup_submit(s, 13, bad + 4, 16, 16, 8, 8); /* in the second chunk */
	sup_collect(s, st, 4);
	check_against_ref(&st[0], good, 10, 16);
	check_against_ref(&st[2], good, 10, 16);
	for (int i = 1; i < 4; i += 2) {
		assert_true(st[i].error);
		assert_int_equal(st[i].error_code, -EINVAL);
		assert_int_equal(st[i].d.finish, IPC_FINISH_ERROR);
		assert_int_equal(st[i].n, 0);
	}

	/* A prompt that does not fit the context fails the same way. */
	static int32_t big[N_CTX];
	struct stream one = { .rid = 99 };
	sup_submit(s, 99, big, N_CTX, 4, N_CTX, 0);
	sup_collect(s, &one, 1);
	assert_true(one.error);
	assert_int_equal(one.d.finish, IPC_FINISH_ERROR);

	shutdown_now(s);
	sup_free(s);
	free(st);
}

/* Logit bias and logprobs over the wire, beside a request that asked for neither. */
static void test_bias_and_logprobs(void **state)
{
	worker_set_step_delay_us(0);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(4, sizeof(*st));
	int32_t prompt[12], want[MAX_GEN];
	enum { GEN = 12 };

	sup_handshake(s);
	make_prompt(prompt, 12, 21);
	int k = ref_greedy(prompt, 12, GEN, want);
	assert_true(k >= 1);
	int32_t g0 = want[0];
	/* A token to push: not the greedy one, not an end-of-generation token. */
	int32_t push = (g0 + 97) % n_vocab_model;
	while (tok_is_eog(ref.tok, push) || push == g0)
		push = (push + 1) % n_vocab_model;

	struct ipc_bias ban[2] = { { g0, -INFINITY }, { (g0 + 1) % n_vocab_model, -5.0f } };
	struct ipc_bias up = { push, 100.0f };
	struct ipc_bias oov[2] = { { 3, 1.0f }, { n_vocab_model + 7, -1.0f } };

	st[0] = (struct stream){ .rid = 201, .want_lp = true, .want_top = 4 };
	st[1] = (struct stream){ .rid = 202, .want_lp = true, .want_top = 0 };
	st[2] = (struct stream){ .rid = 203, .want_lp = true, .want_top = 2 };
	st[3] = (struct stream){ .rid = 204 };
	sup_submit_lp(s, 201, prompt, 12, GEN, IPC_SUBMIT_LOGPROBS, 4, ban, 2, 12);
	sup_submit_lp(s, 202, prompt, 12, GEN, IPC_SUBMIT_LOGPROBS, 0, &up, 1, 4); /* + chunks */
	sup_submit_lp(s, 203, prompt, 12, GEN, IPC_SUBMIT_LOGPROBS, 2, oov, 2, 12);
	sup_submit(s, 204, prompt, 12, GEN, 12, 0);
	sup_collect(s, st, 4);

	/* The ban: the greedy token never comes; logprobs are the model's, before the bias. */
	assert_true(st[0].done && !st[0].error);
	assert_true(st[0].n >= 1);
	for (int i = 0; i < st[0].n; i++)
		assert_int_not_equal(st[0].tokens[i], g0);
	assert_int_equal(st[0].top0[0].token, g0);
	assert_int_equal(st[0].tokens[0], st[0].top1[0].token);
	assert_true(st[0].lp[0] == st[0].top1[0].logprob);
	assert_true(st[0].top0[0].logprob > st[0].lp[0]);

	/* +100 (the prompt reassembled from chunks kept its bias): the pushed token throughout. */
	assert_true(st[1].done && !st[1].error);
	assert_int_equal(st[1].n, GEN);
	for (int i = 0; i < GEN; i++)
		assert_int_equal(st[1].tokens[i], push);
	assert_true(st[1].lp[0] < 0.0f);

	/* A bias token outside the vocabulary: ERROR naming it, DONE(ERROR), no tokens. */
	assert_true(st[2].error);
	assert_int_equal(st[2].error_code, -EINVAL);
	assert_int_equal(st[2].d.finish, IPC_FINISH_ERROR);
	assert_int_equal(st[2].n, 0);
	char name[32];
	snprintf(name, sizeof(name), "%d", n_vocab_model + 7);
	if (!strstr(st[2].error_msg, name) || !strstr(st[2].error_msg, "logit_bias"))
		fail_msg("error '%s' does not name bias token %s", st[2].error_msg, name);

	/* The plain one is untouched: no LOGPROBS (stream_add checks), the reference tokens. */
	check_against_ref(&st[3], prompt, 12, GEN);

	shutdown_now(s);
	sup_free(s);
	free(st);
}

static void test_drain(void **state)
{
	/* 2 ms per step: the requests are still running when the test acts. */
	worker_set_step_delay_us(2000);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(3, sizeof(*st));
	struct ipc_shutdown sd = { .mode = IPC_SHUTDOWN_DRAIN };
	int32_t prompt[16];

	sup_handshake(s);
	make_prompt(prompt, 16, 6);
	st[0].rid = 1;
	st[1].rid = 2;
	st[2].rid = 3;
	sup_submit(s, 1, prompt, 16, 50, 16, 0);
	sup_submit(s, 2, prompt, 8, 50, 8, 0);
	sup_send(s, IPC_SHUTDOWN, 0, &sd, sizeof(sd));
	sup_submit(s, 3, prompt, 16, 50, 16, 0);
	sup_collect(s, st, 3);
	check_against_ref(&st[0], prompt, 16, 50);
	check_against_ref(&st[1], prompt, 8, 50);
	assert_true(st[2].error);
	assert_int_equal(st[2].error_code, -ESHUTDOWN);
	assert_int_equal(sup_join(s, TIMEOUT_MS), WORKER_EXIT_OK);
	sup_free(s);
	free(st);
}

static void test_shutdown_now_cancels(void **state)
{
	/* 2 ms per step: the requests are still running when the test acts. */
	worker_set_step_delay_us(2000);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(3, sizeof(*st));
	struct ipc_shutdown sd = { .mode = IPC_SHUTDOWN_NOW };
	int32_t prompt[40];

	sup_handshake(s);
	make_prompt(prompt, 40, 8);
	for (int i = 0; i < 3; i++)
		st[i].rid = 60 + (uint64_t)i;
	sup_submit(s, 60, prompt, 8, 500, 8, 0);
	sup_submit(s, 61, prompt, 9, 500, 9, 0);
	sup_submit(s, 62, prompt, 40, 500, 20, 20);
	while (st[0].n < 2)
		stream_add(st, 3, sup_recv(s));
	sup_send(s, IPC_SHUTDOWN, 0, &sd, sizeof(sd));
	sup_collect(s, st, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(st[i].d.finish, IPC_FINISH_CANCELLED);
		assert_false(st[i].last_seen);
	}
	assert_int_equal(sup_join(s, TIMEOUT_MS), WORKER_EXIT_OK);
	sup_free(s);
	free(st);
}

static void test_drain_deadline(void **state)
{
	/* 2 ms per step: the requests are still running when the test acts. */
	worker_set_step_delay_us(2000);
	struct sup *s = sup_start(cfg_text);
	struct stream *st = calloc(1, sizeof(*st));
	struct ipc_shutdown sd = { .mode = IPC_SHUTDOWN_DRAIN, .deadline_ms = 1 };
	int32_t prompt[8];

	sup_handshake(s);
	make_prompt(prompt, 8, 9);
	st->rid = 70;
	sup_submit(s, 70, prompt, 8, 500, 8, 0);
	stream_add(st, 1, sup_recv(s));
	sup_send(s, IPC_SHUTDOWN, 0, &sd, sizeof(sd));
	sup_collect(s, st, 1);
	assert_int_equal(st->d.finish, IPC_FINISH_CANCELLED);
	assert_int_equal(sup_join(s, TIMEOUT_MS), WORKER_EXIT_OK);
	sup_free(s);
	free(st);
}

static void test_supervisor_gone(void **state)
{
	/* 2 ms per step: the requests are still running when the test acts. */
	worker_set_step_delay_us(2000);
	struct sup *s = sup_start(cfg_text);
	int32_t prompt[8];

	sup_handshake(s);
	make_prompt(prompt, 8, 7);
	sup_submit(s, 5, prompt, 8, 500, 8, 0);
	sup_recv(s); /* generation is under way */
	ipc_chan_destroy(s->ch);
	s->ch = NULL;
	assert_int_equal(sup_join(s, TIMEOUT_MS), WORKER_EXIT_CHANNEL);
	sup_free(s);
}

static void test_model_load_error(void **state)
{
	worker_set_step_delay_us(0);
	struct sup *s = sup_start("model = { path = \"build/models/no-such-model.gguf\"; };\n"
				  "partitions = ( { name = \"p0\"; threads = 1; } );\n");
	struct ipc_msg *m = sup_recv(s);

	assert_int_equal(m->hdr.type, IPC_HELLO);
	m = sup_recv(s);
	assert_int_equal(m->hdr.type, IPC_ERROR);
	assert_int_equal(m->hdr.req_id, 0);
	assert_true(m->u.error.code < 0);
	assert_non_null(strstr(m->u.error.msg, "no-such-model.gguf"));
	assert_int_equal(sup_join(s, TIMEOUT_MS), WORKER_EXIT_SETUP);
	sup_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_ping_stats_shutdown),
		cmocka_unit_test(test_greedy_stream),
		cmocka_unit_test(test_chunked_prompt),
		cmocka_unit_test(test_cancel_frees_kv),
		cmocka_unit_test(test_eight_concurrent),
		cmocka_unit_test(test_leases),
		cmocka_unit_test(test_lease_quarantine),
		cmocka_unit_test(test_xfer_connect),
		cmocka_unit_test(test_split_shm),
		cmocka_unit_test(test_split_tcp),
		cmocka_unit_test(test_split_prefix_share),
		cmocka_unit_test(test_split_fail_closed),
		cmocka_unit_test_teardown(test_split_loopback, hooks_reset),
		cmocka_unit_test_teardown(test_lb_duplicate_reorder, hooks_reset),
		cmocka_unit_test_teardown(test_lb_delay, hooks_reset),
		cmocka_unit_test_teardown(test_lb_corrupt, hooks_reset),
		cmocka_unit_test_teardown(test_lb_drop, hooks_reset),
		cmocka_unit_test_teardown(test_lb_fail, hooks_reset),
		cmocka_unit_test_teardown(test_lb_ship_deadline, hooks_reset),
		cmocka_unit_test_teardown(test_lb_adopt_expired, hooks_reset),
		cmocka_unit_test(test_bad_token_fails_one_request),
		cmocka_unit_test(test_bias_and_logprobs),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_shutdown_now_cancels),
		cmocka_unit_test(test_drain_deadline),
		cmocka_unit_test(test_supervisor_gone),
		cmocka_unit_test(test_model_load_error),
	};
	return cmocka_run_group_tests_name("worker", tests, group_setup, group_teardown);
}
