// SPDX-License-Identifier: MIT
/*
 * Continuous batching.  A request's tokens live in ids[] (prompt, then what
 * it generated); n_computed of them have KV in its sequence.  A step feeds
 * each scheduled request ids[n_computed .. n_computed + chunk) and, when that
 * reaches the end of ids[], samples the next token from the last row's
 * logits.  Decoding is the one-token case of the same rule, so a preempted
 * request is resumed simply by recomputing (or matching from the prefix
 * cache) everything it has.
 */
#include "runtime/sched/sched.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct req {
	bool used;
	struct sched_info info; /* id, state, finish, counts and times exported */
	int32_t *ids;		/* [n_prompt + max_tokens] */
	uint64_t *t_tokens;	/* [max_tokens] */
	int n_prompt, max_tokens;
	int n_computed;	    /* tokens of ids[] whose KV is stored */
	struct kv_seq *seq; /* NULL while waiting */
	struct sampler *smp;
	uint64_t salt;
	int priority;
	uint64_t seqno; /* arrival order */
	bool in_batch;
	bool held; /* preempted during this step: not re-admitted in it */
	int chunk; /* tokens fed in the current step */
	/* Logprobs (only when asked): [lp_cap][1 + n_top] records, grown by doubling. */
	bool want_lp;
	int n_top;
	struct sched_logprob *lp;
	int lp_cap; /* tokens lp has room for, <= max_tokens */
	bool ship_kv;  /* KV through the layer hook */
	bool ship_all; /* next step ships from table entry 0 (admitted: cached prefix too) */
};

struct sched {
	struct llm *llm;
	struct sched_config c;
	bool (*is_eog)(void *ctx, int32_t token);
	void *eog_ctx;
	struct kv_pool *pool;
	struct req *reqs; /* [max_requests] */
	uint64_t next_id, next_seqno;
	int n_vocab, n_ctx, blocks_per_seq;
	struct sched_stats st;

	/* Step staging, sized at create. */
	struct req **batch;				  /* [max_batch_seqs] */
	int32_t *tokens, *pos, *seqidx, *slot, *out_rows; /* [max_batch_tokens] */
	int32_t *table_start;				  /* [max_batch_seqs] */
	int32_t *tables;				  /* [max_batch_seqs * blocks_per_seq] */
	float *logits;					  /* [max_batch_seqs][n_vocab] */
	struct req **order;				  /* [max_requests] scratch for sorting */
	sched_layer_fn layer_fn;
	void *layer_ctx;
	struct sched_kv_run *runs; /* [max_batch_seqs] */
	int n_runs;
};

static int total_of(const struct req *r)
{
	return r->n_prompt + r->info.n_gen;
}

static bool running(const struct req *r)
{
	return r->used && (r->info.state == SCHED_PREFILLING || r->info.state == SCHED_DECODING);
}

void sched_destroy(struct sched *s)
{
	if (!s)
		return;
	if (s->reqs) {
		for (int i = 0; i < s->c.max_requests; i++) {
			struct req *r = &s->reqs[i];
			kv_seq_free(r->seq);
			smp_destroy(r->smp);
			duet_free(r->ids);
			duet_free(r->t_tokens);
			duet_free(r->lp);
		}
	}
	kv_pool_destroy(s->pool);
	duet_free(s->reqs);
	duet_free(s->batch);
	duet_free(s->tokens);
	duet_free(s->pos);
	duet_free(s->seqidx);
	duet_free(s->slot);
	duet_free(s->out_rows);
	duet_free(s->table_start);
	duet_free(s->tables);
	duet_free(s->logits);
	duet_free(s->order);
	duet_free(s->runs);
	duet_free(s);
}

int sched_create(struct llm *llm, const struct sched_config *c,
		 bool (*is_eog)(void *ctx, int32_t token), void *eog_ctx, struct sched **out)
{
	struct sched *s;
	struct kv_pool_config kc;
	int ret = -ENOMEM;

	*out = NULL;
	if (c->max_leases < 0 || c->max_batch_tokens < 1 || c->max_batch_tokens > llm_max_tokens(llm) ||
	    c->max_batch_seqs < 1 || c->max_batch_seqs > llm_max_out(llm) ||
	    c->max_batch_seqs > c->max_batch_tokens || c->max_requests < 1) {
		log_error("sched",
			  "limits out of range: max_batch_tokens %d (engine %d), max_batch_seqs %d "
			  "(engine %d), max_requests %d",
			  c->max_batch_tokens, llm_max_tokens(llm), c->max_batch_seqs,
			  llm_max_out(llm), c->max_requests);
		return -EINVAL;
	}
	s = duet_calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->llm = llm;
	s->c = *c;
	s->is_eog = is_eog;
	s->eog_ctx = eog_ctx;
	s->n_vocab = (int)llm_model(llm)->n_vocab;
	s->n_ctx = llm_n_ctx(llm);
	s->blocks_per_seq = s->n_ctx / llm_block_tokens(llm);
	s->next_id = 1;
	kc = (struct kv_pool_config){
		.n_blocks = llm_n_blocks(llm),
		.block_tokens = llm_block_tokens(llm),
		.max_seqs = c->max_requests,
		.max_seq_tokens = s->n_ctx,
		.max_leases = c->max_leases,
		.quarantine_ns = c->kv_quarantine_ns,
	};
	ret = kv_pool_create(&kc, &s->pool);
	if (ret)
		goto destroy;
	ret = -ENOMEM;
	size_t bt = (size_t)c->max_batch_tokens, bs = (size_t)c->max_batch_seqs;
	s->reqs = duet_calloc((size_t)c->max_requests, sizeof(*s->reqs));
	s->order = duet_calloc((size_t)c->max_requests, sizeof(*s->order));
	s->batch = duet_calloc(bs, sizeof(*s->batch));
	s->tokens = duet_calloc(bt, sizeof(int32_t));
	s->pos = duet_calloc(bt, sizeof(int32_t));
	s->seqidx = duet_calloc(bt, sizeof(int32_t));
	s->slot = duet_calloc(bt, sizeof(int32_t));
	s->out_rows = duet_calloc(bt, sizeof(int32_t));
	s->table_start = duet_calloc(bs, sizeof(int32_t));
	s->tables = duet_calloc(bs * (size_t)s->blocks_per_seq, sizeof(int32_t));
	s->logits = duet_calloc(bs * (size_t)s->n_vocab, sizeof(float));
	s->runs = duet_calloc(bs, sizeof(*s->runs));
	if (!s->reqs || !s->order || !s->batch || !s->tokens || !s->pos || !s->seqidx || !s->slot ||
	    !s->out_rows || !s->table_start || !s->tables || !s->logits || !s->runs)
		goto destroy;
	*out = s;
	return 0;

destroy:
	sched_destroy(s);
	return ret;
}

void sched_set_layer_hook(struct sched *s, sched_layer_fn fn, void *ctx)
{
	s->layer_fn = fn;
	s->layer_ctx = ctx;
}

static int layer_trampoline(void *ctx, int layer)
{
	struct sched *s = ctx;

	return s->layer_fn(s->layer_ctx, layer, s->runs, s->n_runs);
}

struct kv_pool *sched_pool(struct sched *s)
{
	return s->pool;
}

static struct req *find(const struct sched *s, uint64_t id)
{
	for (int i = 0; i < s->c.max_requests; i++) {
		if (s->reqs[i].used && s->reqs[i].info.id == id)
			return &s->reqs[i];
	}
	return NULL;
}

const struct sched_info *sched_get(const struct sched *s, uint64_t id)
{
	struct req *r = find(s, id);

	return r ? &r->info : NULL;
}

static void req_clear(struct req *r)
{
	kv_seq_free(r->seq);
	smp_destroy(r->smp);
	duet_free(r->ids);
	duet_free(r->t_tokens);
	duet_free(r->lp);
	memset(r, 0, sizeof(*r));
}

int sched_blocks(const struct sched *s, uint64_t id, const int32_t **blocks)
{
	struct req *r = find(s, id);
	int n = 0;

	if (!r)
		return -ENOENT;
	*blocks = NULL;
	if (r->seq)
		*blocks = kv_seq_table(r->seq, &n);
	return n;
}

void sched_release(struct sched *s, uint64_t id)
{
	struct req *r = find(s, id);

	if (r && r->info.state == SCHED_FINISHED)
		req_clear(r);
}

static int req_new(struct sched *s, const struct sched_request *q, uint64_t now_ns,
		   struct req **out);

int sched_submit(struct sched *s, const struct sched_request *q, uint64_t now_ns, uint64_t *id)
{
	struct req *r;
	int ret = req_new(s, q, now_ns, &r);

	if (ret == 0)
		*id = r->info.id;
	return ret;
}

/* A validated request in a free slot, WAITING; nothing allocated on error. */
static int req_new(struct sched *s, const struct sched_request *q, uint64_t now_ns,
		   struct req **out)
{
	struct req *r = NULL;
	char err[128];
	int ret;

	if (q->n_prompt < 1 || q->max_tokens < 1 || q->n_prompt >= s->n_ctx)
		return -EINVAL;
	if (q->n_top_logprobs < 0 || q->n_top_logprobs > SCHED_MAX_TOP_LOGPROBS ||
	    (q->n_top_logprobs && !q->logprobs))
		return -EINVAL;
	for (int i = 0; i < q->n_prompt; i++) {
		if (q->prompt[i] < 0 || q->prompt[i] >= s->n_vocab)
			return -EINVAL;
	}
	if (smp_params_validate(&q->sampling, s->n_vocab, err, sizeof(err))) {
		log_warn("sched", "request rejected: %s", err);
		return -EINVAL;
	}
	for (int i = 0; i < s->c.max_requests && !r; i++) {
		if (!s->reqs[i].used)
			r = &s->reqs[i];
	}
	if (!r)
		return -EBUSY;
	memset(r, 0, sizeof(*r));
	r->ids = duet_malloc(sizeof(int32_t) * ((size_t)q->n_prompt + (size_t)q->max_tokens));
	r->t_tokens = duet_calloc((size_t)q->max_tokens, sizeof(uint64_t));
	ret = smp_create(&q->sampling, s->n_vocab, &r->smp);
	if (!r->ids || !r->t_tokens || ret) {
		req_clear(r);
		return ret ? ret : -ENOMEM;
	}
	memcpy(r->ids, q->prompt, sizeof(int32_t) * (size_t)q->n_prompt);
	for (int i = 0; i < q->n_prompt; i++)
		smp_accept(r->smp, q->prompt[i]);
	r->used = true;
	r->n_prompt = q->n_prompt;
	r->max_tokens = q->max_tokens;
	r->salt = q->salt;
	r->priority = q->priority;
	r->seqno = s->next_seqno++;
	r->want_lp = q->logprobs;
	r->ship_kv = q->ship_kv;
	r->n_top = q->n_top_logprobs < s->n_vocab ? q->n_top_logprobs : s->n_vocab;
	r->info = (struct sched_info){
		.id = s->next_id++,
		.state = SCHED_WAITING,
		.n_prompt = q->n_prompt,
		.tokens = r->ids + q->n_prompt,
		.t_arrival = now_ns,
		.t_tokens = r->t_tokens,
		.n_top = r->n_top,
	};
	*out = r;
	return 0;
}

static void finish(struct req *r, enum sched_finish why, uint64_t now);
static bool lp_reserve(struct req *r);

int sched_lease(struct sched *s, int n_prompt, uint64_t salt, const int32_t *prompt, int n_known,
		uint64_t owner, uint64_t deadline_ns, int32_t *blocks, int *n_blocks, int *n_cached,
		struct kv_lease_ref *ref)
{
	int bt = llm_block_tokens(s->llm), n = (n_prompt + bt - 1) / bt;
	int n_match = n_known < n_prompt - 1 ? n_known : n_prompt - 1;
	int ret;

	if (n_prompt < 1 || n_prompt >= s->n_ctx || n_known < 0 || (n_known > 0 && !prompt))
		return -EINVAL;
	if (!s->c.prefix_cache)
		n_match = 0;
	ret = kv_lease_prefix(s->pool, n, salt, prompt, n_match, owner, deadline_ns, blocks,
			      n_cached, ref);
	if (ret == 0)
		*n_blocks = n;
	return ret;
}

int sched_expire_leases(struct sched *s, uint64_t now_ns)
{
	int n = s->c.max_leases > 0 ? kv_lease_expire(s->pool, now_ns) : 0;

	if (n > 0)
		log_warn("sched", "%d KV lease(s) expired: their transfers did not complete in time",
			 n);
	return n;
}

int sched_lease_release(struct sched *s, struct kv_lease_ref ref)
{
	return kv_lease_release(s->pool, ref);
}

int sched_adopt(struct sched *s, const struct sched_request *q, struct kv_lease_ref ref,
		int32_t first_token, const struct sched_logprob *first_lp, uint64_t now_ns,
		uint64_t *id)
{
	struct req *r;
	int ret;

	if (first_token < 0 || first_token >= s->n_vocab || (q->logprobs && !first_lp)) {
		kv_lease_release(s->pool, ref);
		return -EINVAL;
	}
	ret = req_new(s, q, now_ns, &r);
	if (ret) {
		kv_lease_release(s->pool, ref);
		return ret;
	}
	ret = kv_seq_create(s->pool, r->salt, &r->seq);
	if (ret) {
		kv_lease_release(s->pool, ref);
		req_clear(r);
		return ret;
	}
	ret = kv_lease_commit(s->pool, ref, now_ns, r->seq, q->prompt, q->n_prompt);
	if (ret < 0) {
		if (ret != -ESTALE && ret != -ETIMEDOUT)
			kv_lease_release(s->pool, ref);
		req_clear(r);
		return ret;
	}
	r->info.n_cached = ret * llm_block_tokens(s->llm);
	kv_seq_publish(r->seq);
	if (r->want_lp) {
		if (!lp_reserve(r)) {
			req_clear(r);
			return -ENOMEM;
		}
		memcpy(r->lp, first_lp, sizeof(*first_lp) * (1 + (size_t)r->n_top));
	}
	/* As if this scheduler had computed the prompt and sampled first_token. */
	r->n_computed = q->n_prompt;
	r->info.t_first_sched = now_ns;
	smp_skip(r->smp, 1); /* the prefill side's draw for first_token */
	smp_accept(r->smp, first_token);
	r->ids[total_of(r)] = first_token;
	r->t_tokens[0] = now_ns;
	r->info.n_gen = 1;
	r->info.t_first_token = now_ns;
	r->info.state = SCHED_DECODING;
	if (s->is_eog && s->is_eog(s->eog_ctx, first_token))
		finish(r, SCHED_FINISH_EOG, now_ns);
	else if (r->info.n_gen >= r->max_tokens)
		finish(r, SCHED_FINISH_LENGTH, now_ns);
	else if (total_of(r) >= s->n_ctx)
		finish(r, SCHED_FINISH_CONTEXT, now_ns);
	*id = r->info.id;
	return 0;
}

bool sched_busy(const struct sched *s)
{
	for (int i = 0; i < s->c.max_requests; i++) {
		const struct req *r = &s->reqs[i];
		if (r->used && r->info.state != SCHED_FINISHED)
			return true;
	}
	return false;
}

void sched_get_stats(const struct sched *s, struct sched_stats *out)
{
	*out = s->st;
	kv_pool_stats(s->pool, &out->kv);
}

/* Priority first (higher first), then arrival (older first). */
static int cmp_req(const void *a, const void *b)
{
	const struct req *x = *(struct req *const *)a, *y = *(struct req *const *)b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	return x->seqno < y->seqno ? -1 : x->seqno > y->seqno;
}

static void finish(struct req *r, enum sched_finish why, uint64_t now)
{
	/* Blocks were published after each successful step; never publish after a failed one. */
	kv_seq_free(r->seq);
	r->seq = NULL;
	r->info.state = SCHED_FINISHED;
	r->info.finish = why;
	r->info.t_finish = now;
}

int sched_cancel(struct sched *s, uint64_t id, uint64_t now_ns)
{
	struct req *r = find(s, id);

	if (!r)
		return -ENOENT;
	if (r->info.state == SCHED_FINISHED)
		return -EALREADY;
	finish(r, SCHED_FINISH_CANCELLED, now_ns);
	return 0;
}

/* Give back a running request's blocks; it will be recomputed later. */
static void preempt(struct sched *s, struct req *r)
{
	kv_seq_free(r->seq);
	r->seq = NULL;
	r->n_computed = 0;
	r->info.state = SCHED_WAITING;
	r->held = true;
	r->info.n_preempted++;
	s->st.preemptions++;
	log_debug("sched", "request %llu preempted (%d tokens to recompute)",
		  (unsigned long long)r->info.id, total_of(r));
}

/* The newest running request not in this step's batch, or NULL. */
static struct req *victim(struct sched *s, const struct req *except)
{
	struct req *v = NULL;

	for (int i = 0; i < s->c.max_requests; i++) {
		struct req *r = &s->reqs[i];
		if (!running(r) || r->in_batch || r == except)
			continue;
		if (!v || cmp_req(&r, &v) > 0)
			v = r;
	}
	return v;
}

/*
 * Put up to want tokens of r into the step.  Returns tokens placed (0 when
 * the pool cannot hold them even after preempting newer requests).
 */
static int place(struct sched *s, struct req *r, int want, int *n_tok, uint64_t now)
{
	struct kv_copy cow;
	int ret;

	if (!r->seq) {
		ret = kv_seq_create(s->pool, r->salt, &r->seq);
		if (ret)
			return 0;
		r->n_computed = 0;
		if (s->c.prefix_cache) {
			int hit = kv_seq_match_prefix(r->seq, r->ids, total_of(r) - 1);
			r->n_computed = hit > 0 ? hit : 0;
		}
		r->info.n_cached = r->n_computed;
		r->info.state = SCHED_PREFILLING;
		r->ship_all = true;
		if (!r->info.t_first_sched)
			r->info.t_first_sched = now;
		if (want > total_of(r) - r->n_computed)
			want = total_of(r) - r->n_computed;
	}
	for (;;) {
		ret = kv_seq_append(r->seq, r->ids + r->n_computed, want, s->slot + *n_tok, &cow);
		if (ret == 0)
			break;
		if (ret != -ENOSPC)
			return 0;
		struct req *v = victim(s, r);
		if (!v)
			return 0;
		preempt(s, v);
	}
	/* The shared partial block was copied to a fresh one: move its KV now. */
	if (cow.n_tokens > 0 && llm_kv_copy(s->llm, cow.src, cow.dst, cow.n_tokens) != 0) {
		log_error("sched", "copy-on-write of block %d failed", cow.src);
		return 0;
	}
	*n_tok += want;
	return want;
}

/* Add r to the batch with chunk tokens; false when the batch cannot take it. */
static bool schedule(struct sched *s, struct req *r, int budget, int *n_tok, int *n_seq,
		     uint64_t now)
{
	int want, got, first = *n_tok;

	if (*n_seq == s->c.max_batch_seqs || budget <= 0)
		return false;
	want = r->seq ? total_of(r) - r->n_computed : total_of(r);
	if (want > budget)
		want = budget;
	got = place(s, r, want, n_tok, now);
	if (got <= 0) {
		if (r->seq && r->n_computed == 0 && r->info.state == SCHED_PREFILLING) {
			/* Admitted this step but nothing fits: back to the queue. */
			kv_seq_free(r->seq);
			r->seq = NULL;
			r->info.state = SCHED_WAITING;
		}
		return false;
	}
	for (int i = 0; i < got; i++) {
		s->tokens[first + i] = r->ids[r->n_computed + i];
		s->pos[first + i] = r->n_computed + i;
		s->seqidx[first + i] = *n_seq;
	}
	r->chunk = got;
	r->in_batch = true;
	s->batch[(*n_seq)++] = r;
	return true;
}

/* A logit as the sampler reads it: NaN never drawn (-inf), +inf the largest finite value. */
static float clean_logit(float x)
{
	if (isnan(x))
		return -INFINITY;
	return x == INFINITY ? FLT_MAX : x;
}

/* Does (x, id) rank before (y, jd): larger logit first, lower id among equals. */
static bool ranks_before(float x, int32_t id, float y, int32_t jd)
{
	return x > y || (x == y && id < jd);
}

/*
 * The log-softmax of one row of raw logits (n_vocab) at token tok into
 * out[0], and the k most likely tokens into out[1..k] (k <= n_vocab), by
 * descending logprob, ties to the lower id.  O(n_vocab * k) at worst, about
 * O(n_vocab) in practice: a candidate is compared with the current k-th
 * best first.  Allocates nothing.
 */
static void logprobs_of(const float *row, int n_vocab, int32_t tok, int k,
			struct sched_logprob *out)
{
	struct sched_logprob *top = out + 1; /* holds raw logits until the end */
	float max = -INFINITY;
	double sum = 0.0, lse;
	int n = 0;

	for (int v = 0; v < n_vocab; v++) {
		float x = clean_logit(row[v]);

		if (x > max)
			max = x;
		if (k == 0 || (n == k && !ranks_before(x, v, top[k - 1].logprob, top[k - 1].token)))
			continue;
		int at = n < k ? n++ : k - 1; /* insertion point, shifted down from the end */
		while (at > 0 && ranks_before(x, v, top[at - 1].logprob, top[at - 1].token)) {
			top[at] = top[at - 1];
			at--;
		}
		top[at] = (struct sched_logprob){ .token = v, .logprob = x };
	}
	if (max == -INFINITY) {
		/* Nothing can be drawn (the sampler refuses too); report all as impossible. */
		out[0] = (struct sched_logprob){ .token = tok, .logprob = -INFINITY };
		for (int i = 0; i < k; i++)
			top[i].logprob = -INFINITY;
		return;
	}
	for (int v = 0; v < n_vocab; v++)
		sum += exp((double)clean_logit(row[v]) - (double)max);
	lse = log(sum); /* >= 0: the maximum contributes exp(0) */
	out[0] = (struct sched_logprob){
		.token = tok,
		.logprob = (float)fmin((double)clean_logit(row[tok]) - (double)max - lse, 0.0),
	};
	for (int i = 0; i < k; i++)
		top[i].logprob = (float)fmin((double)top[i].logprob - (double)max - lse, 0.0);
}

/* Room for one more token's logprob records; false when memory ran out. */
static bool lp_reserve(struct req *r)
{
	size_t stride = 1 + (size_t)r->n_top;
	struct sched_logprob *lp;
	int cap;

	if (r->info.n_gen < r->lp_cap)
		return true;
	cap = r->lp_cap ? 2 * r->lp_cap : 16;
	if (cap > r->max_tokens)
		cap = r->max_tokens;
	lp = duet_realloc(r->lp, (size_t)cap * stride * sizeof(*lp));
	if (!lp)
		return false;
	r->lp = lp;
	r->lp_cap = cap;
	r->info.logprobs = lp;
	return true;
}

static uint64_t elapsed(uint64_t (*clock_ns)(void), uint64_t t0)
{
	uint64_t t = clock_ns();

	return t > t0 ? t - t0 : 0;
}

int sched_step(struct sched *s, uint64_t (*clock_ns)(void))
{
	uint64_t t0 = clock_ns(), t_fwd = 0;
	int n_tok = 0, n_seq = 0, n_sorted = 0, n_out = 0, n_table = 0, ret = 0;

	sched_expire_leases(s, t0);

	/* Candidates in priority/arrival order. */
	for (int i = 0; i < s->c.max_requests; i++) {
		struct req *r = &s->reqs[i];
		r->in_batch = false;
		r->held = false;
		if (r->used && r->info.state != SCHED_FINISHED)
			s->order[n_sorted++] = r;
	}
	if (n_sorted == 0)
		return 0;
	qsort(s->order, (size_t)n_sorted, sizeof(*s->order), cmp_req);

	/* 1. every decoding request's next token; 2. prompt chunks; 3. admissions. */
	for (int pass = 0; pass < 3; pass++) {
		for (int i = 0; i < n_sorted; i++) {
			struct req *r = s->order[i];
			enum sched_state want = pass == 0   ? SCHED_DECODING
						: pass == 1 ? SCHED_PREFILLING
							    : SCHED_WAITING;
			if (r->in_batch || r->held || r->info.state != want)
				continue;
			if (!schedule(s, r, s->c.max_batch_tokens - n_tok, &n_tok, &n_seq, t0) &&
			    pass == 2)
				goto formed; /* FCFS: no overtaking a request that did not fit */
		}
	}
formed:
	if (n_seq == 0) {
		/* Nothing fits: the oldest waiting request cannot ever fit this pool. */
		for (int i = 0; i < n_sorted; i++) {
			struct req *r = s->order[i];
			if (r->info.state == SCHED_WAITING && !running(r)) {
				log_error("sched",
					  "request %llu (%d tokens) does not fit in the KV pool",
					  (unsigned long long)r->info.id, total_of(r));
				finish(r, SCHED_FINISH_ERROR, t0);
				return -ENOSPC;
			}
		}
		return 0;
	}

	/* Block tables after every append (appends may extend them). */
	for (int b = 0; b < n_seq; b++) {
		int nb;
		const int32_t *t = kv_seq_table(s->batch[b]->seq, &nb);
		s->table_start[b] = n_table;
		memcpy(s->tables + n_table, t, sizeof(int32_t) * (size_t)nb);
		n_table += nb;
	}
	/* Logits for requests whose chunk reaches the end of their tokens. */
	for (int b = 0, row = 0; b < n_seq; b++) {
		struct req *r = s->batch[b];
		row += r->chunk;
		if (r->n_computed + r->chunk == total_of(r))
			s->out_rows[n_out++] = row - 1;
	}

	struct be_step st = {
		.n_tokens = n_tok,
		.tokens = s->tokens,
		.pos = s->pos,
		.seq = s->seqidx,
		.slot = s->slot,
		.n_seqs = n_seq,
		.table_start = s->table_start,
		.block_tables = s->tables,
		.n_table = n_table,
		.n_out = n_out,
		.out_rows = s->out_rows,
	};
	/* What each ship_kv request's chunk wrote, for the layer hook. */
	s->n_runs = 0;
	for (int b = 0; b < n_seq && s->layer_fn; b++) {
		struct req *r = s->batch[b];
		int bt = llm_block_tokens(s->llm);
		int first = r->ship_all ? 0 : r->n_computed / bt;
		int last = (r->n_computed + r->chunk - 1) / bt;

		if (!r->ship_kv)
			continue;
		s->runs[s->n_runs++] = (struct sched_kv_run){
			.id = r->info.id,
			.first = first,
			.n = last - first + 1,
			.blocks = s->tables + s->table_start[b] + first,
		};
		r->ship_all = false;
	}
	if (s->n_runs)
		llm_set_layer_hook(s->llm, layer_trampoline, s);
	uint64_t tf = clock_ns();
	ret = llm_step(s->llm, &st, s->logits);
	if (s->n_runs)
		llm_set_layer_hook(s->llm, NULL, NULL);
	t_fwd = elapsed(clock_ns, tf);
	uint64_t now = clock_ns();

	for (int b = 0, o = 0; b < n_seq; b++) {
		struct req *r = s->batch[b];
		bool sample = r->n_computed + r->chunk == total_of(r);

		if (ret) {
			finish(r, SCHED_FINISH_ERROR, now);
			continue;
		}
		r->n_computed += r->chunk;
		if (r->info.state == SCHED_PREFILLING)
			s->st.prefill_tokens += (uint64_t)r->chunk;
		else
			s->st.decode_tokens += (uint64_t)r->chunk;
		kv_seq_publish(r->seq);
		if (!sample)
			continue;
		const float *row = s->logits + (size_t)o++ * s->n_vocab;
		int32_t tok = smp_sample(r->smp, row);
		if (tok < 0) {
			finish(r, SCHED_FINISH_ERROR, now);
			continue;
		}
		if (r->want_lp) {
			if (!lp_reserve(r)) {
				log_error("sched", "request %llu: no memory for logprobs",
					  (unsigned long long)r->info.id);
				finish(r, SCHED_FINISH_ERROR, now);
				continue;
			}
			logprobs_of(row, s->n_vocab, tok, r->n_top,
				    r->lp + (size_t)r->info.n_gen * (1 + (size_t)r->n_top));
		}
		smp_accept(r->smp, tok);
		r->ids[total_of(r)] = tok;
		r->t_tokens[r->info.n_gen] = now;
		if (r->info.n_gen++ == 0)
			r->info.t_first_token = now;
		r->info.state = SCHED_DECODING;
		if (s->is_eog && s->is_eog(s->eog_ctx, tok))
			finish(r, SCHED_FINISH_EOG, now);
		else if (r->info.n_gen >= r->max_tokens)
			finish(r, SCHED_FINISH_LENGTH, now);
		else if (total_of(r) >= s->n_ctx)
			finish(r, SCHED_FINISH_CONTEXT, now);
	}
	s->st.steps++;
	s->st.step_ns += t_fwd;
	s->st.sched_ns += elapsed(clock_ns, t0) - t_fwd;
	if (ret) {
		log_error("sched", "forward step of %d tokens failed: %s", n_tok,
			  duet_strerror(ret));
		return ret;
	}
	return n_tok;
}
