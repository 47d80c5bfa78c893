/* SPDX-License-Identifier: MIT */
/*
 * KV block manager (DESIGN.md "KV cache").
 *
 * Host-side bookkeeping of a paged KV pool: which block ids are free, which
 * sequences use them (reference counts, copy-on-write), which full blocks
 * are kept for the prefix cache, and which are leased to an incoming
 * transfer.  It owns no tensor memory: the backend's pool (be_kv_create) has
 * the same n_blocks and block_tokens, and a block id here is the same block
 * in every layer there.  A KV slot is block * block_tokens + offset.
 *
 * Every block is in exactly one state:
 *   FREE     nobody uses it;
 *   IN_USE   referenced by refcount >= 1 sequence block tables;
 *   CACHED   refcount 0, but its tokens are registered in the prefix index,
 *            kept in an LRU until allocation needs the block;
 *   LEASED   reserved for an incoming transfer (owner, epoch, deadline);
 *   QUARANTINED  a fresh block of a lease that passed its deadline, held
 *            until a write the transfer posted before the deadline can no
 *            longer land in it (kv_pool_config.quarantine_ns), then FREE.
 * and free + in_use + cached + leased + quarantined == total at all times.
 * A lease may also hold references on registered blocks that already hold
 * the start of its prompt (kv_lease_prefix); those count as IN_USE.
 *
 * Everything is sized at kv_pool_create; no other function allocates.  A
 * pool is not thread-safe: one thread (a worker's event loop) owns it.
 *
 * Prefix cache: full block i of a sequence is keyed by the hash chain
 * h_i = H(h_{i-1}, tokens of block i), h_{-1} = H(salt), with the tenant
 * salt given at kv_seq_create.  The hash only finds candidates: a match also
 * compares the block's tokens, its salt and its parent block (id and
 * registration generation), so a hash collision never returns wrong KV.
 */
#ifndef DUET_KV_H
#define DUET_KV_H

#include <stddef.h>
#include <stdint.h>

struct kv_pool;
struct kv_seq;

enum kv_block_state {
	KV_BLOCK_FREE,
	KV_BLOCK_IN_USE,
	KV_BLOCK_CACHED,
	KV_BLOCK_LEASED,
	KV_BLOCK_QUARANTINED,
};

struct kv_pool_config {
	int n_blocks;	    /* blocks in the pool, > 0; n_blocks * block_tokens <= INT32_MAX */
	int block_tokens;   /* tokens per block, > 0 */
	int max_seqs;	    /* sequences alive at once, > 0 */
	int max_seq_tokens; /* tokens per sequence, > 0 (sizes each block table) */
	int max_leases;	    /* leases outstanding at once, >= 0 */
	/*
	 * Grace in ns (the clock of kv_lease_expire / kv_lease_commit) before
	 * the fresh blocks of a lease that passed its deadline go FREE: the
	 * longest a write posted before the deadline may still land.  0: FREE
	 * at once.
	 */
	uint64_t quarantine_ns;
};

/*
 * Copy-on-write instruction from kv_seq_append.  When n_tokens > 0 the caller
 * must copy token rows [0, n_tokens) of block src into block dst, K and V, in
 * every layer, before anything reads dst (this step's attention) and before
 * anything writes src.  Executing the copies of a step on the backend stream
 * ahead of that step's kv_store satisfies both, even when src was released
 * and handed to another sequence of the same step.
 */
struct kv_copy {
	int32_t src;
	int32_t dst;
	int32_t n_tokens; /* 0: nothing to copy */
};

/* A lease as the caller names it; a stale epoch never matches a newer lease. */
struct kv_lease_ref {
	int32_t id;
	uint64_t epoch;
};

struct kv_stats {
	int total, free, in_use, cached, leased; /* blocks; with quarantined, add up to total */
	int quarantined;			 /* expired leases' blocks waiting out quarantine_ns */
	int seqs, leases;			 /* alive now */
	uint64_t queries;			 /* kv_seq_match_prefix, kv_lease_prefix calls */
	uint64_t hits;				 /* ... that matched at least one block */
	uint64_t query_tokens;			 /* tokens in full blocks offered to match */
	uint64_t hit_tokens;			 /* tokens matched */
	uint64_t evictions;			 /* CACHED blocks reclaimed */
	uint64_t cow_copies;			 /* copy instructions issued */
	uint64_t dedups; /* full blocks replaced by an identical cached one on publish */
	uint64_t leases_expired;
	uint64_t quarantine_stalls; /* -ENOSPC (append, lease) while blocks were quarantined */
};

/*
 * Bytes of one block over all layers: 2 * block_tokens * n_kv_heads *
 * head_dim * elem_size * n_layers.  -EINVAL for a non-positive argument,
 * -EOVERFLOW when it does not fit size_t.
 */
int kv_block_bytes(int block_tokens, int n_kv_heads, int head_dim, size_t elem_size, int n_layers,
		   size_t *out);
/* Blocks that fit in budget bytes (capped at INT32_MAX / block_tokens); 0 is allowed. */
int kv_blocks_for_budget(size_t budget, int block_tokens, int n_kv_heads, int head_dim,
			 size_t elem_size, int n_layers, int *n_blocks);

/* All blocks start FREE.  -EINVAL for a bad config, -ENOMEM. */
int kv_pool_create(const struct kv_pool_config *c, struct kv_pool **out);
/* Frees the pool with its sequences and leases; NULL is allowed. */
void kv_pool_destroy(struct kv_pool *p);

void kv_pool_stats(const struct kv_pool *p, struct kv_stats *out);
/*
 * Verifies every invariant by scanning: per-state counts, the free bitmap,
 * reference counts against the block tables, the LRU and quarantine lists,
 * the hash index, sequence and lease bookkeeping.  0, or -EFAULT after a
 * log_alert naming the broken invariant.  O(n_blocks + tables); for tests
 * and debug builds.
 */
int kv_pool_check(const struct kv_pool *p);
/* Evicts every CACHED block (they become FREE); returns how many. */
int kv_pool_drop_cache(struct kv_pool *p);

/* Introspection; -EINVAL (or NULL) for an id out of range. */
int kv_block_state(const struct kv_pool *p, int32_t block);
int kv_block_refcount(const struct kv_pool *p, int32_t block);
/* The block_tokens token ids last stored in block (meaningful up to its fill). */
const int32_t *kv_block_tokens(const struct kv_pool *p, int32_t block);

/* Salt for tenants named by bytes (hash them server-side, then kv_seq_create). */
uint64_t kv_salt_from_bytes(const void *buf, size_t len);

/*
 * Test hook: replace the block hash H(prev, tokens, n) (NULL restores the
 * default), e.g. with a constant to force collisions.  -EBUSY while any
 * block is registered in the prefix index.
 */
typedef uint64_t (*kv_hash_fn)(uint64_t prev, const int32_t *tokens, int n);
int kv_pool_set_hash(struct kv_pool *p, kv_hash_fn fn);

/* An empty sequence of tenant salt.  -EBUSY when max_seqs are alive. */
int kv_seq_create(struct kv_pool *p, uint64_t salt, struct kv_seq **out);
/*
 * Releases the sequence's blocks, last block first: a block whose refcount
 * drops to 0 becomes CACHED (most recently used) when registered in the
 * prefix index, FREE otherwise.  NULL is allowed; the handle is dead after.
 */
void kv_seq_free(struct kv_seq *s);
/* A new sequence sharing all of src's blocks (refcount++), tokens and salt. */
int kv_seq_fork(struct kv_seq *src, struct kv_seq **out);

/*
 * Appends n tokens (their ids, needed for the prefix cache), allocating
 * blocks as needed: first the block right after the sequence's last one,
 * else the lowest free run long enough, else the lowest free block, else the
 * least recently used CACHED block (evicted).  slots[i] receives token i's KV
 * slot.  When the last block is partially filled and shared, the sequence
 * first moves to a fresh block and *cow says what to copy (see struct
 * kv_copy); otherwise cow->n_tokens = 0.  With cow NULL, an append that
 * would need a copy fails with -EINVAL.
 * All or nothing: -ENOSPC (no FREE or CACHED block to be had: preempt
 * someone; QUARANTINED blocks are never taken), -E2BIG
 * (beyond max_seq_tokens), -EINVAL; on error nothing changed.
 */
int kv_seq_append(struct kv_seq *s, const int32_t *tokens, int n, int32_t *slots,
		  struct kv_copy *cow);
/*
 * Registers the sequence's full blocks not yet in the prefix index; call
 * once their KV has been written (after the step that computed them).  A
 * block identical to one already registered is replaced in the table by that
 * one (same KV) and released.  Returns the number of full blocks registered
 * for this sequence so far, or -EINVAL.
 */
int kv_seq_publish(struct kv_seq *s);
/*
 * On an empty sequence: attaches the longest chain of registered blocks
 * (CACHED or IN_USE) matching the full blocks of tokens[0, n) under the
 * sequence's salt, and returns the tokens covered (a multiple of
 * block_tokens); the caller computes the rest with kv_seq_append.  To keep
 * logits for the last prompt token, pass n = prompt length - 1.
 * -EBUSY when the sequence is not empty, -EINVAL.
 */
int kv_seq_match_prefix(struct kv_seq *s, const int32_t *tokens, int n);

int kv_seq_len(const struct kv_seq *s);
/* The block table: *n_blocks ids, valid until the next call that changes s. */
const int32_t *kv_seq_table(const struct kv_seq *s, int *n_blocks);

/*
 * Reserves n blocks (adjacent when possible) for a transfer by owner,
 * expiring at deadline_ns (caller's clock); blocks[] receives their ids in
 * table order.  -ENOSPC, -EBUSY (max_leases outstanding), -EINVAL
 * (n > blocks per sequence).  kv_lease_prefix with no tokens.
 */
int kv_lease(struct kv_pool *p, int n, uint64_t owner, uint64_t deadline_ns, int32_t *blocks,
	     struct kv_lease_ref *out);
/*
 * A lease of n blocks whose leading entries come from the prefix cache: the
 * longest chain of registered blocks (CACHED or IN_USE) matching the full
 * blocks of tokens[0, n_match) under salt, as kv_seq_match_prefix finds it,
 * at most n - 1 blocks (a transfer writes at least one).  Pass n_match <=
 * prompt length - 1, so that the last prompt token is computed.  The lease
 * holds a reference on each matched block (IN_USE: never evicted while it
 * lives; kv_lease_release, expiry and kv_lease_release_owner drop it, the
 * block going back to the LRU when nobody else uses it) and reserves
 * n - *n_cached fresh LEASED blocks for the rest.  blocks[] receives the
 * whole table, the *n_cached matched blocks first.  Counted in kv_stats'
 * prefix queries and hits when there is a block to match.  -ENOSPC, -EBUSY,
 * -EINVAL as kv_lease; on error nothing changed.
 */
int kv_lease_prefix(struct kv_pool *p, int n, uint64_t salt, const int32_t *tokens, int n_match,
		    uint64_t owner, uint64_t deadline_ns, int32_t *blocks, int *n_cached,
		    struct kv_lease_ref *out);
/*
 * The transfer is complete: the lease's blocks become the block table of the
 * empty sequence s, holding n_tokens tokens (ids in tokens[]); leased blocks
 * beyond ceil(n_tokens / block_tokens) go FREE.  Matched prefix blocks
 * (kv_lease_prefix) pass the lease's reference on to s and count as
 * published; n_tokens must go beyond them.  Call kv_seq_publish to enter
 * the rest in the prefix cache.  Returns the number of matched prefix blocks
 * (0 for a kv_lease), -ESTALE for an unknown lease or epoch, -ETIMEDOUT when
 * now_ns >= its deadline (the lease ends as kv_lease_expire(now_ns) would
 * end it: fresh blocks quarantined, counted expired), -EBUSY when s is not
 * empty, -EILSEQ when tokens[] or s's salt are not what the prefix was
 * matched with, -EINVAL; the lease lives on after -EBUSY, -EILSEQ, -EINVAL.
 */
int kv_lease_commit(struct kv_pool *p, struct kv_lease_ref ref, uint64_t now_ns, struct kv_seq *s,
		    const int32_t *tokens, int n_tokens);
/*
 * The blocks go FREE at once, deadline or not (matched prefix blocks: the
 * reference is dropped): the caller knows no write into them is on its way
 * (the transfer ended or its writer died).  -ESTALE for an unknown lease or
 * epoch.
 */
int kv_lease_release(struct kv_pool *p, struct kv_lease_ref ref);
/*
 * The blocks of a live lease, in table order (what kv_lease returned, matched
 * prefix blocks included): *blocks
 * points into the pool and stays valid while the lease is held.  Returns
 * their count, -ESTALE for an unknown lease or epoch (the deadline is not
 * checked: kv_lease_commit does that), -EINVAL.
 */
int kv_lease_blocks(const struct kv_pool *p, struct kv_lease_ref ref, const int32_t **blocks);
/*
 * First frees the quarantined blocks whose grace ended (now_ns >= the time
 * they were quarantined + quarantine_ns), then ends every lease with
 * deadline <= now_ns: its fresh blocks are quarantined until now_ns +
 * quarantine_ns (FREE at once when that is 0), its matched prefix blocks
 * lose its reference.  Returns how many leases expired.  Call it
 * periodically: nothing else frees quarantined blocks, and no allocation
 * takes them early (an append or lease that would need them fails with
 * -ENOSPC; the first such failure of a quarantine episode is logged).
 */
int kv_lease_expire(struct kv_pool *p, uint64_t now_ns);
/* Releases every lease of owner (a peer that died) as kv_lease_release; returns how many. */
int kv_lease_release_owner(struct kv_pool *p, uint64_t owner);

#endif /* DUET_KV_H */
