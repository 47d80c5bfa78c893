/* SPDX-License-Identifier: MIT */
/*
 * The continuous-batching scheduler of one partition (DESIGN.md "Request
 * life"): requests share one paged KV pool and one forward step.  Each
 * sched_step() forms a batch under the token budget (max_batch_tokens) and
 * the sequence limit (max_batch_seqs): every decoding request's next token
 * first, then chunks of prompts (chunked prefill), then newly admitted
 * requests in priority then arrival order.  When the pool runs out, the
 * newest running request is preempted (its blocks freed) and later
 * recomputed from its prompt and the tokens it already produced, so its
 * output is exactly what it would have been (the forward pass is batch
 * invariant).  Prompts reuse cached KV blocks of earlier requests with the
 * same tenant salt (prefix cache).
 */
#ifndef DUET_SCHED_H
#define DUET_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/kv/kv.h"
#include "runtime/model/llama.h"
#include "runtime/model/sampler.h"

struct sched_config {
	int max_batch_tokens; /* tokens per step, all sequences (<= llm_max_tokens) */
	int max_batch_seqs;   /* sequences per step (<= llm_max_out) */
	int max_requests; /* requests known at once (waiting + running + finished, not yet released) */
	bool prefix_cache; /* match prompts against cached blocks */
	int max_leases;	   /* decode side: reservations for incoming KV outstanding at once */
	/*
	 * Decode side: ns the fresh blocks of an expired lease stay quarantined
	 * (kv_pool_config.quarantine_ns; 0: none), on the clock sched_step uses.
	 */
	uint64_t kv_quarantine_ns;
};

enum sched_state {
	SCHED_WAITING,	  /* queued, or preempted and waiting to be recomputed */
	SCHED_PREFILLING, /* prompt being computed, chunk by chunk */
	SCHED_DECODING,
	SCHED_FINISHED,
};

enum sched_finish {
	SCHED_FINISH_NONE,
	SCHED_FINISH_LENGTH,  /* max_tokens produced */
	SCHED_FINISH_EOG,     /* an end-of-generation token */
	SCHED_FINISH_CONTEXT, /* the context is full */
	SCHED_FINISH_ERROR,
	SCHED_FINISH_CANCELLED, /* sched_cancel (a client went away, a stop string matched) */
};

#define SCHED_MAX_TOP_LOGPROBS 20

/*
 * A log-probability record: natural log of the probability of token in the
 * model's distribution for one step, i.e. the log-softmax of the raw logits
 * (before temperature, penalties and logit bias); <= 0, or -inf.
 */
struct sched_logprob {
	int32_t token;
	float logprob;
};

struct sched_request {
	const int32_t *prompt;	    /* copied */
	int n_prompt;		    /* >= 1 */
	int max_tokens;		    /* >= 1 */
	struct smp_params sampling; /* logit_bias is copied (by smp_create) */
	uint64_t salt;		    /* prefix-cache tenant salt */
	int priority;		    /* higher is scheduled first; FCFS within a priority */
	bool logprobs;		    /* record sched_info.logprobs for every generated token */
	int n_top_logprobs; /* [0, SCHED_MAX_TOP_LOGPROBS] alternatives each; 0 without logprobs */
	bool ship_kv;	    /* prefill side: its KV goes through the layer hook (with max_tokens 1) */
};

/*
 * The blocks of one request that the step being run wrote (plus, in its
 * first step, the prefix it found in the cache): table entries [first,
 * first + n) of the request, which are blocks[0..n) of this pool.
 */
struct sched_kv_run {
	uint64_t id;
	int first;
	int n;
	const int32_t *blocks;
};

/*
 * Called after each layer of a step that has ship_kv requests, once that
 * layer's K/V is in the pool (llm_set_layer_hook): the caller posts the
 * writes of runs[] for that layer.  A non-zero return fails the step.
 */
typedef int (*sched_layer_fn)(void *ctx, int layer, const struct sched_kv_run *runs, int n_runs);

/* Per-request record; times are the caller's clock (ns), 0 when not reached. */
struct sched_info {
	uint64_t id;
	enum sched_state state;
	enum sched_finish finish;
	int n_prompt;
	int n_gen;	       /* tokens produced */
	const int32_t *tokens; /* [n_gen] */
	int n_cached;	       /* prompt tokens served from the prefix cache (last admission) */
	int n_preempted;
	uint64_t t_arrival, t_first_sched, t_first_token, t_finish;
	const uint64_t *t_tokens; /* [n_gen]: time each token was produced */
	/*
	 * NULL unless the request asked for logprobs.  Else [n_gen][1 + n_top],
	 * per generated token: the sampled token's record, then the n_top most
	 * likely tokens of that step by descending logprob (ties: lower id
	 * first); see sched_token_logprobs().  The array grows as tokens come:
	 * the pointer is valid until the next sched_step() or sched_release().
	 */
	const struct sched_logprob *logprobs;
	int n_top; /* alternatives per token: the request's, capped at n_vocab */
};

/* The logprob records of generated token i (< in->n_gen): [1 + in->n_top], or NULL. */
static inline const struct sched_logprob *sched_token_logprobs(const struct sched_info *in, int i)
{
	return in->logprobs ? in->logprobs + (size_t)i * (size_t)(1 + in->n_top) : NULL;
}

struct sched_stats {
	uint64_t steps;
	uint64_t prefill_tokens, decode_tokens;
	uint64_t preemptions;
	uint64_t step_ns;  /* forward passes */
	uint64_t sched_ns; /* batch formation and bookkeeping, outside the forward pass */
	struct kv_stats kv;
};

struct sched;

/*
 * is_eog(ctx, token): does this token end generation (from the tokenizer).
 * The scheduler owns a kv_pool sized from the llm's KV pool.
 */
int sched_create(struct llm *llm, const struct sched_config *c,
		 bool (*is_eog)(void *ctx, int32_t token), void *eog_ctx, struct sched **out);
void sched_destroy(struct sched *s);

/*
 * Queue a request; *id receives its handle.  -EINVAL (bad request), -EBUSY
 * (full), -ENOMEM.  r and what it points to need not outlive the call.
 */
int sched_submit(struct sched *s, const struct sched_request *r, uint64_t now_ns, uint64_t *id);

/*
 * Run one step: form a batch, run the forward pass, sample.  Returns the
 * number of tokens computed (0 when there was nothing to do) or a negative
 * error (which fails the affected requests, not the scheduler).  For a
 * request that asked for logprobs, the step also computes them from the
 * row its token was sampled from (O(n_vocab * (1 + n_top)) at worst); its
 * logprob array grows by doubling, the one allocation a step may make
 * (none for requests that did not ask), and a failed growth fails only
 * that request.
 */
int sched_step(struct sched *s, uint64_t (*clock_ns)(void));

bool sched_busy(const struct sched *s); /* any request waiting or running */
const struct sched_info *sched_get(const struct sched *s, uint64_t id);
/*
 * Finish a request now, between steps: its blocks are released (full ones
 * stay in the prefix cache).  -ENOENT for an unknown id, -EALREADY when it
 * has finished.
 */
int sched_cancel(struct sched *s, uint64_t id, uint64_t now_ns);
/* Forget a finished request (its record and tokens). */
void sched_release(struct sched *s, uint64_t id);
/*
 * Decode side of disaggregation (DESIGN.md "Request life").  sched_lease
 * reserves the blocks for a prompt of n_prompt tokens that a prefill
 * partition will write (blocks[] receives ceil(n_prompt / block_tokens) ids,
 * in table order; block i holds positions i*block_tokens...); the lease
 * expires at deadline_ns (the clock sched_step is given), when sched_step
 * frees it (its fresh blocks then quarantined for kv_quarantine_ns).  Prefix sharing: with the prefix cache on, the leading full
 * blocks of prompt[0, n_known) (the prompt's first n_known tokens; NULL, 0:
 * none), at most (n_prompt - 1) / block_tokens as the scheduler's own
 * match, that are cached under salt lead the table, held by the lease
 * (kv_lease_prefix); *n_cached receives how many, and only the rest needs
 * writing.  -ENOSPC, -EBUSY (max_leases outstanding), -EINVAL.
 */
int sched_lease(struct sched *s, int n_prompt, uint64_t salt, const int32_t *prompt, int n_known,
		uint64_t owner, uint64_t deadline_ns, int32_t *blocks, int *n_blocks, int *n_cached,
		struct kv_lease_ref *ref);
/*
 * Ends the leases past their deadline and frees quarantined blocks whose
 * time has come (kv_lease_expire; sched_step does it too); returns how many
 * leases expired.
 */
int sched_expire_leases(struct sched *s, uint64_t now_ns);
/*
 * Give the blocks back at once (the transfer ended or its writer died: no
 * write is on its way).  -ESTALE for an unknown lease or epoch.
 */
int sched_lease_release(struct sched *s, struct kv_lease_ref ref);
/*
 * The transfer under ref is complete: q's prompt is in the leased blocks
 * (its cached prefix, when the lease has one, must be q's prompt under q's
 * salt: -EILSEQ otherwise) and first_token was sampled from its last
 * position by the prefill side; its sched_info.n_cached counts that prefix.  The
 * request starts decoding from there: the first token counts as generated
 * token 0 (t_first_token = now_ns), with first_lp (1 + n_top records; NULL
 * when q asked for no logprobs) as its logprobs.  It may finish at once
 * (max_tokens 1, an end-of-generation token).  Its sampler skips the draw
 * the prefill side made, so seeded sampling continues exactly as one
 * partition's would.  -ESTALE / -ETIMEDOUT from the
 * lease (the lease is gone either way), -EILSEQ, -EINVAL, -EBUSY, -ENOMEM;
 * on error no request exists.
 */
int sched_adopt(struct sched *s, const struct sched_request *q, struct kv_lease_ref ref,
		int32_t first_token, const struct sched_logprob *first_lp, uint64_t now_ns,
		uint64_t *id);
void sched_set_layer_hook(struct sched *s, sched_layer_fn fn, void *ctx);
/*
 * The block table of request id while it holds KV (prefilling or decoding):
 * *blocks is valid until the next sched_step, sched_cancel or sched_release.
 * Returns its entries (0 while the request holds none: waiting, preempted or
 * finished), or -ENOENT.  A step may replace an entry with an identical
 * cached block (prefix-cache dedup): this is the table after that.
 */
int sched_blocks(const struct sched *s, uint64_t id, const int32_t **blocks);
void sched_get_stats(const struct sched *s, struct sched_stats *out);
struct kv_pool *sched_pool(struct sched *s);

#endif /* DUET_SCHED_H */
