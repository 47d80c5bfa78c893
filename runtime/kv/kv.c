// SPDX-License-Identifier: MIT
/*
 * KV block manager: block states, block tables, copy-on-write, the prefix
 * cache (hash index + LRU) and leases.  See kv.h for the contracts.
 *
 * Data structures, all sized at create:
 *   blk[]       per-block state, refcount, prefix-index key and links;
 *   tokens[]    [n_blocks][block_tokens] token ids stored in each block;
 *   free_bits[] one bit per block, set when FREE (finds low free runs);
 *   idx[]       open-addressing (linear probing, backward-shift deletion)
 *               table of registered block ids, keyed by blk[].hash;
 *   seqs[]      sequence slots, each with a table of max_table block ids;
 *   leases[]    lease slots, each with up to max_table block ids: first the
 *               registered blocks it matched (kv_lease_prefix), on which it
 *               holds a reference like a block table, then LEASED ones;
 *   quarantine  QUARANTINED blocks, linked through blk[].next in the order
 *               they came, each with the time it may go FREE.
 */
#include "runtime/kv/kv.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#define KV_SUB "kv"

struct kv_block {
	uint64_t hash;	  /* chain hash h_i, when registered */
	uint64_t gen;	  /* registration generation, unique over the pool's life */
	uint64_t pgen;	  /* parent's gen at registration */
	uint64_t salt;	  /* tenant salt of the chain */
	uint64_t free_at; /* when QUARANTINED: may go FREE from this time on */
	int32_t parent;	  /* previous block of the chain, -1 for the first */
	int32_t ref;	  /* block table references */
	int32_t prev;	  /* LRU links, when CACHED; next: the quarantine list, when QUARANTINED */
	int32_t next;
	int32_t lease;	    /* lease slot, when LEASED */
	uint8_t state;	    /* enum kv_block_state */
	uint8_t registered; /* in idx[] */
};

struct kv_seq {
	struct kv_pool *pool;
	bool active;
	uint64_t salt;
	int n_tokens;
	int n_blocks;
	int n_published; /* table[0, n_published) are registered and chained */
	int32_t *table;	 /* [max_table] */
};

struct kv_lease_slot {
	bool active;
	uint64_t owner;
	uint64_t epoch;
	uint64_t deadline;
	uint64_t salt;	 /* of the matched prefix */
	int n_blocks;	 /* table entries, matched prefix included */
	int n_pinned;	 /* blocks[0, n_pinned): matched prefix, IN_USE, one reference each */
	int32_t *blocks; /* [max_table] */
};

struct kv_pool {
	int n_blocks;
	int block_tokens;
	int max_seqs;
	int max_table; /* blocks per sequence */
	int max_leases;

	struct kv_block *blk;
	int32_t *tokens;
	uint64_t *free_bits;
	int n_words;

	int32_t *idx;
	uint32_t idx_mask;
	int n_registered;
	uint64_t gen_next;
	kv_hash_fn hash;

	int32_t lru_head; /* least recently used */
	int32_t lru_tail;

	struct kv_seq *seqs;
	int32_t *seq_tables;
	int n_seqs;

	struct kv_lease_slot *leases;
	int32_t *lease_tables;
	int n_leases;
	uint64_t epoch_next;

	uint64_t quarantine_ns;
	int32_t quar_head; /* oldest QUARANTINED block, -1 when none */
	int32_t quar_tail;
	uint64_t quar_due; /* <= every quarantined block's free_at (UINT64_MAX when none) */
	bool quar_warned;  /* -ENOSPC while blocks are quarantined logged; reset when none are */

	int n_free, n_in_use, n_cached, n_leased, n_quarantined;
	uint64_t queries, hits, query_tokens, hit_tokens, evictions, cow_copies, dedups;
	uint64_t leases_expired, quarantine_stalls;

	int32_t *scratch; /* [n_blocks] for kv_pool_check */
};

/* ---- hashing ---- */

static uint64_t kv_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static uint64_t kv_hash_default(uint64_t prev, const int32_t *tokens, int n)
{
	uint64_t h = kv_mix64(prev ^ 0x9e3779b97f4a7c15ULL);

	for (int i = 0; i < n; i++) {
		h = (h ^ (uint32_t)tokens[i]) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	return kv_mix64(h ^ (uint64_t)n);
}

static uint64_t kv_root_hash(uint64_t salt)
{
	return kv_mix64(salt + 0x2545f4914f6cdd1dULL);
}

uint64_t kv_salt_from_bytes(const void *buf, size_t len)
{
	const unsigned char *b = buf;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3ULL;
	return kv_mix64(h ^ len);
}

/* ---- sizes ---- */

int kv_block_bytes(int block_tokens, int n_kv_heads, int head_dim, size_t elem_size, int n_layers,
		   size_t *out)
{
	size_t v = 2;

	if (!out || block_tokens <= 0 || n_kv_heads <= 0 || head_dim <= 0 || elem_size == 0 ||
	    n_layers <= 0)
		return -EINVAL;
	if (__builtin_mul_overflow(v, (size_t)block_tokens, &v) ||
	    __builtin_mul_overflow(v, (size_t)n_kv_heads, &v) ||
	    __builtin_mul_overflow(v, (size_t)head_dim, &v) ||
	    __builtin_mul_overflow(v, elem_size, &v) ||
	    __builtin_mul_overflow(v, (size_t)n_layers, &v))
		return -EOVERFLOW;
	*out = v;
	return 0;
}

int kv_blocks_for_budget(size_t budget, int block_tokens, int n_kv_heads, int head_dim,
			 size_t elem_size, int n_layers, int *n_blocks)
{
	size_t bytes, n;
	int rc;

	if (!n_blocks)
		return -EINVAL;
	rc = kv_block_bytes(block_tokens, n_kv_heads, head_dim, elem_size, n_layers, &bytes);
	if (rc)
		return rc;
	n = budget / bytes;
	if (n > (size_t)(INT32_MAX / block_tokens))
		n = (size_t)(INT32_MAX / block_tokens);
	*n_blocks = (int)n;
	return 0;
}

/* ---- free bitmap ---- */

static bool kv_is_free_bit(const struct kv_pool *p, int32_t b)
{
	return p->free_bits[b >> 6] >> (b & 63) & 1;
}

static void kv_bit_set(struct kv_pool *p, int32_t b)
{
	p->free_bits[b >> 6] |= 1ULL << (b & 63);
}

static void kv_bit_clear(struct kv_pool *p, int32_t b)
{
	p->free_bits[b >> 6] &= ~(1ULL << (b & 63));
}

/* First block >= from whose free bit equals want; n_blocks when none. */
static int32_t kv_bits_next(const struct kv_pool *p, int32_t from, bool want)
{
	int w = from >> 6;
	uint64_t x;

	if (from >= p->n_blocks)
		return p->n_blocks;
	x = want ? p->free_bits[w] : ~p->free_bits[w];
	x &= ~0ULL << (from & 63);
	for (;;) {
		if (x) {
			int32_t b = (int32_t)(w * 64 + __builtin_ctzll(x));

			return b < p->n_blocks ? b : p->n_blocks;
		}
		if (++w >= p->n_words)
			return p->n_blocks;
		x = want ? p->free_bits[w] : ~p->free_bits[w];
	}
}

/* Lowest free block starting a run of at least want free blocks, else the lowest free one. */
static int32_t kv_find_run(const struct kv_pool *p, int want)
{
	int32_t first = -1;
	int32_t b = kv_bits_next(p, 0, true);

	while (b < p->n_blocks) {
		int32_t end = kv_bits_next(p, b, false);

		if (first < 0)
			first = b;
		if (end - b >= want)
			return b;
		b = kv_bits_next(p, end, true);
	}
	return first;
}

/* ---- LRU of CACHED blocks ---- */

static void kv_lru_push(struct kv_pool *p, int32_t b)
{
	p->blk[b].prev = p->lru_tail;
	p->blk[b].next = -1;
	if (p->lru_tail >= 0)
		p->blk[p->lru_tail].next = b;
	else
		p->lru_head = b;
	p->lru_tail = b;
}

static void kv_lru_remove(struct kv_pool *p, int32_t b)
{
	struct kv_block *k = &p->blk[b];

	if (k->prev >= 0)
		p->blk[k->prev].next = k->next;
	else
		p->lru_head = k->next;
	if (k->next >= 0)
		p->blk[k->next].prev = k->prev;
	else
		p->lru_tail = k->prev;
	k->prev = k->next = -1;
}

/* ---- hash index ---- */

static uint32_t kv_idx_home(const struct kv_pool *p, uint64_t h)
{
	return (uint32_t)kv_mix64(h) & p->idx_mask;
}

static void kv_idx_insert(struct kv_pool *p, int32_t b)
{
	uint32_t i = kv_idx_home(p, p->blk[b].hash);

	while (p->idx[i] >= 0)
		i = (i + 1) & p->idx_mask;
	p->idx[i] = b;
}

/* Backward-shift deletion keeps every entry reachable from its home without tombstones. */
static void kv_idx_remove(struct kv_pool *p, int32_t b)
{
	uint32_t i = kv_idx_home(p, p->blk[b].hash), j;

	while (p->idx[i] != b)
		i = (i + 1) & p->idx_mask;
	p->idx[i] = -1;
	j = i;
	for (;;) {
		uint32_t k;

		j = (j + 1) & p->idx_mask;
		if (p->idx[j] < 0)
			return;
		k = kv_idx_home(p, p->blk[p->idx[j]].hash);
		/* Entry j may move into the hole at i unless its home lies in (i, j]. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		p->idx[i] = p->idx[j];
		p->idx[j] = -1;
		i = j;
	}
}

/* The registered block with this exact key and content, or -1. */
static int32_t kv_idx_lookup(const struct kv_pool *p, uint64_t h, int32_t parent, uint64_t salt,
			     const int32_t *tokens)
{
	uint32_t i = kv_idx_home(p, h);
	size_t bytes = (size_t)p->block_tokens * sizeof(int32_t);

	for (; p->idx[i] >= 0; i = (i + 1) & p->idx_mask) {
		int32_t e = p->idx[i];
		const struct kv_block *k = &p->blk[e];

		if (k->hash != h || k->parent != parent || k->salt != salt)
			continue;
		if (parent >= 0 && k->pgen != p->blk[parent].gen)
			continue;
		if (memcmp(&p->tokens[(size_t)e * p->block_tokens], tokens, bytes) == 0)
			return e;
	}
	return -1;
}

static void kv_register(struct kv_pool *p, int32_t b, uint64_t h, int32_t parent, uint64_t salt)
{
	struct kv_block *k = &p->blk[b];

	k->hash = h;
	k->gen = ++p->gen_next;
	k->parent = parent;
	k->pgen = parent >= 0 ? p->blk[parent].gen : 0;
	k->salt = salt;
	k->registered = 1;
	kv_idx_insert(p, b);
	p->n_registered++;
}

/* ---- block state transitions ---- */

static void kv_evict(struct kv_pool *p, int32_t b)
{
	kv_lru_remove(p, b);
	kv_idx_remove(p, b);
	p->blk[b].registered = 0;
	p->n_registered--;
	p->blk[b].state = KV_BLOCK_FREE;
	kv_bit_set(p, b);
	p->n_cached--;
	p->n_free++;
	p->evictions++;
}

/*
 * Takes a FREE block out of the free set (evicting the LRU CACHED block when
 * none is FREE): prefer when it is free, else the lowest run of want.  The
 * caller sets the new state and its counter.  -1 when nothing can be had.
 */
static int32_t kv_take(struct kv_pool *p, int32_t prefer, int want)
{
	int32_t b;

	if (prefer >= 0 && prefer < p->n_blocks && kv_is_free_bit(p, prefer))
		b = prefer;
	else if (p->n_free > 0)
		b = kv_find_run(p, want);
	else if (p->lru_head >= 0)
		kv_evict(p, b = p->lru_head);
	else
		return -1;
	kv_bit_clear(p, b);
	p->n_free--;
	return b;
}

static int32_t kv_take_in_use(struct kv_pool *p, int32_t prefer, int want)
{
	int32_t b = kv_take(p, prefer, want);

	DUET_ASSERT(b >= 0);
	p->blk[b].state = KV_BLOCK_IN_USE;
	p->blk[b].ref = 1;
	p->n_in_use++;
	return b;
}

static void kv_to_free(struct kv_pool *p, int32_t b)
{
	p->blk[b].state = KV_BLOCK_FREE;
	p->blk[b].ref = 0;
	p->blk[b].lease = -1;
	kv_bit_set(p, b);
	p->n_free++;
}

/* One more table reference; a CACHED block comes back IN_USE. */
static void kv_get(struct kv_pool *p, int32_t b)
{
	struct kv_block *k = &p->blk[b];

	if (k->state == KV_BLOCK_CACHED) {
		kv_lru_remove(p, b);
		k->state = KV_BLOCK_IN_USE;
		p->n_cached--;
		p->n_in_use++;
	}
	k->ref++;
}

/* One table reference less; at zero the block is CACHED if registered, else FREE. */
static void kv_put(struct kv_pool *p, int32_t b)
{
	struct kv_block *k = &p->blk[b];

	DUET_ASSERT(k->state == KV_BLOCK_IN_USE && k->ref > 0);
	if (--k->ref > 0)
		return;
	p->n_in_use--;
	if (k->registered) {
		k->state = KV_BLOCK_CACHED;
		kv_lru_push(p, b);
		p->n_cached++;
	} else {
		kv_to_free(p, b);
	}
}

/* ---- quarantine ---- */

/* b, a fresh block of a lease that expired at now_ns, waits out quarantine_ns before FREE. */
static void kv_quarantine(struct kv_pool *p, int32_t b, uint64_t now_ns)
{
	struct kv_block *k = &p->blk[b];
	uint64_t at;

	if (__builtin_add_overflow(now_ns, p->quarantine_ns, &at))
		at = UINT64_MAX;
	k->state = KV_BLOCK_QUARANTINED;
	k->ref = 0;
	k->lease = -1;
	k->free_at = at;
	k->next = -1;
	if (p->quar_tail >= 0)
		p->blk[p->quar_tail].next = b;
	else
		p->quar_head = b;
	p->quar_tail = b;
	if (at < p->quar_due)
		p->quar_due = at;
	p->n_quarantined++;
}

/* Quarantined blocks with free_at <= now_ns go FREE; returns how many. */
static int kv_quarantine_release(struct kv_pool *p, uint64_t now_ns)
{
	uint64_t due = UINT64_MAX;
	int32_t prev = -1, next;
	int n = 0;

	if (now_ns < p->quar_due)
		return 0;
	for (int32_t b = p->quar_head; b >= 0; b = next) {
		struct kv_block *k = &p->blk[b];

		next = k->next;
		if (now_ns < k->free_at) {
			due = k->free_at < due ? k->free_at : due;
			prev = b;
			continue;
		}
		if (prev >= 0)
			p->blk[prev].next = next;
		else
			p->quar_head = next;
		if (next < 0)
			p->quar_tail = prev;
		k->next = -1;
		p->n_quarantined--;
		kv_to_free(p, b);
		n++;
	}
	p->quar_due = due;
	if (!p->n_quarantined)
		p->quar_warned = false;
	return n;
}

/*
 * An allocation found too few FREE and CACHED blocks.  Quarantined ones are
 * not taken early (a late write may still land in them); the first such
 * failure while any are quarantined says so.
 */
static int kv_nospc(struct kv_pool *p)
{
	if (p->n_quarantined) {
		p->quarantine_stalls++;
		if (!p->quar_warned)
			log_warn(
				KV_SUB,
				"out of KV blocks: %d block(s) quarantined after expired leases, not reused yet",
				p->n_quarantined);
		p->quar_warned = true;
	}
	return -ENOSPC;
}

/* ---- pool ---- */

static int kv_config_valid(const struct kv_pool_config *c)
{
	if (c->n_blocks <= 0 || c->block_tokens <= 0 || c->max_seqs <= 0 ||
	    c->max_seq_tokens <= 0 || c->max_leases < 0)
		return 0;
	if (c->n_blocks > INT32_MAX / c->block_tokens)
		return 0;
	/* the index holds up to n_blocks entries at load <= 1/2 */
	if (c->n_blocks > (1 << 29))
		return 0;
	return 1;
}

int kv_pool_create(const struct kv_pool_config *c, struct kv_pool **out)
{
	struct kv_pool *p;
	size_t cap = 2;

	if (!c || !out || !kv_config_valid(c))
		return -EINVAL;
	p = duet_calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->n_blocks = c->n_blocks;
	p->block_tokens = c->block_tokens;
	p->max_seqs = c->max_seqs;
	p->max_table = (int)(((int64_t)c->max_seq_tokens + c->block_tokens - 1) / c->block_tokens);
	p->max_leases = c->max_leases;
	p->quarantine_ns = c->quarantine_ns;
	p->quar_head = p->quar_tail = -1;
	p->quar_due = UINT64_MAX;
	p->n_words = (c->n_blocks + 63) / 64;
	p->hash = kv_hash_default;
	p->lru_head = p->lru_tail = -1;
	while (cap < 2 * (size_t)c->n_blocks)
		cap <<= 1;
	p->idx_mask = (uint32_t)(cap - 1);

	p->blk = duet_calloc((size_t)p->n_blocks, sizeof(*p->blk));
	if (!p->blk)
		goto fail;
	p->tokens = duet_calloc((size_t)p->n_blocks * p->block_tokens, sizeof(int32_t));
	if (!p->tokens)
		goto fail;
	p->free_bits = duet_calloc((size_t)p->n_words, sizeof(uint64_t));
	if (!p->free_bits)
		goto fail;
	p->idx = duet_malloc(cap * sizeof(int32_t));
	if (!p->idx)
		goto fail;
	p->scratch = duet_calloc((size_t)p->n_blocks, sizeof(int32_t));
	if (!p->scratch)
		goto fail;
	p->seqs = duet_calloc((size_t)p->max_seqs, sizeof(*p->seqs));
	if (!p->seqs)
		goto fail;
	p->seq_tables = duet_calloc((size_t)p->max_seqs * p->max_table, sizeof(int32_t));
	if (!p->seq_tables)
		goto fail;
	if (p->max_leases > 0) {
		p->leases = duet_calloc((size_t)p->max_leases, sizeof(*p->leases));
		if (!p->leases)
			goto fail;
		p->lease_tables =
			duet_calloc((size_t)p->max_leases * p->max_table, sizeof(int32_t));
		if (!p->lease_tables)
			goto fail;
	}

	memset(p->idx, 0xff, cap * sizeof(int32_t));
	for (int32_t b = 0; b < p->n_blocks; b++) {
		p->blk[b].parent = p->blk[b].prev = p->blk[b].next = p->blk[b].lease = -1;
		kv_bit_set(p, b);
	}
	p->n_free = p->n_blocks;
	for (int i = 0; i < p->max_seqs; i++) {
		p->seqs[i].pool = p;
		p->seqs[i].table = &p->seq_tables[(size_t)i * p->max_table];
	}
	for (int i = 0; i < p->max_leases; i++)
		p->leases[i].blocks = &p->lease_tables[(size_t)i * p->max_table];
	*out = p;
	return 0;

fail:
	kv_pool_destroy(p);
	return -ENOMEM;
}

void kv_pool_destroy(struct kv_pool *p)
{
	if (!p)
		return;
	duet_free(p->lease_tables);
	duet_free(p->leases);
	duet_free(p->seq_tables);
	duet_free(p->seqs);
	duet_free(p->scratch);
	duet_free(p->idx);
	duet_free(p->free_bits);
	duet_free(p->tokens);
	duet_free(p->blk);
	duet_free(p);
}

void kv_pool_stats(const struct kv_pool *p, struct kv_stats *o)
{
	memset(o, 0, sizeof(*o));
	o->total = p->n_blocks;
	o->free = p->n_free;
	o->in_use = p->n_in_use;
	o->cached = p->n_cached;
	o->leased = p->n_leased;
	o->quarantined = p->n_quarantined;
	o->seqs = p->n_seqs;
	o->leases = p->n_leases;
	o->queries = p->queries;
	o->hits = p->hits;
	o->query_tokens = p->query_tokens;
	o->hit_tokens = p->hit_tokens;
	o->evictions = p->evictions;
	o->cow_copies = p->cow_copies;
	o->dedups = p->dedups;
	o->leases_expired = p->leases_expired;
	o->quarantine_stalls = p->quarantine_stalls;
}

int kv_pool_drop_cache(struct kv_pool *p)
{
	int n = 0;

	while (p->lru_head >= 0) {
		kv_evict(p, p->lru_head);
		n++;
	}
	return n;
}

int kv_pool_set_hash(struct kv_pool *p, kv_hash_fn fn)
{
	if (!p)
		return -EINVAL;
	if (p->n_registered)
		return -EBUSY;
	p->hash = fn ? fn : kv_hash_default;
	return 0;
}

int kv_block_state(const struct kv_pool *p, int32_t b)
{
	if (!p || b < 0 || b >= p->n_blocks)
		return -EINVAL;
	return p->blk[b].state;
}

int kv_block_refcount(const struct kv_pool *p, int32_t b)
{
	if (!p || b < 0 || b >= p->n_blocks)
		return -EINVAL;
	return p->blk[b].ref;
}

const int32_t *kv_block_tokens(const struct kv_pool *p, int32_t b)
{
	if (!p || b < 0 || b >= p->n_blocks)
		return NULL;
	return &p->tokens[(size_t)b * p->block_tokens];
}

/* ---- consistency check ---- */

#define KV_CHECK(cond, ...)                                                   \
	do {                                                                  \
		if (!(cond)) {                                                \
			log_alert(KV_SUB, "pool check failed: " __VA_ARGS__); \
			return -EFAULT;                                       \
		}                                                             \
	} while (0)

static int kv_check_blocks(const struct kv_pool *p)
{
	int cnt[KV_BLOCK_QUARANTINED + 1] = { 0 }, reg = 0;

	for (int32_t b = 0; b < p->n_blocks; b++) {
		const struct kv_block *k = &p->blk[b];

		KV_CHECK(k->state <= KV_BLOCK_QUARANTINED, "block %d has bad state %d", b,
			 k->state);
		cnt[k->state]++;
		KV_CHECK(kv_is_free_bit(p, b) == (k->state == KV_BLOCK_FREE),
			 "free bitmap disagrees with state of block %d", b);
		KV_CHECK((k->ref > 0) == (k->state == KV_BLOCK_IN_USE),
			 "refcount %d of block %d does not fit state %d", k->ref, b, k->state);
		KV_CHECK(!(k->state == KV_BLOCK_CACHED) || k->registered,
			 "CACHED block %d is not in the prefix index", b);
		KV_CHECK(!k->registered || k->state == KV_BLOCK_IN_USE ||
				 k->state == KV_BLOCK_CACHED,
			 "registered block %d is in state %d", b, k->state);
		KV_CHECK((k->lease >= 0) == (k->state == KV_BLOCK_LEASED),
			 "lease link of block %d does not fit state %d", b, k->state);
		reg += k->registered;
	}
	KV_CHECK(cnt[KV_BLOCK_FREE] == p->n_free, "free count %d, scanned %d", p->n_free,
		 cnt[KV_BLOCK_FREE]);
	KV_CHECK(cnt[KV_BLOCK_IN_USE] == p->n_in_use, "in_use count %d, scanned %d", p->n_in_use,
		 cnt[KV_BLOCK_IN_USE]);
	KV_CHECK(cnt[KV_BLOCK_CACHED] == p->n_cached, "cached count %d, scanned %d", p->n_cached,
		 cnt[KV_BLOCK_CACHED]);
	KV_CHECK(cnt[KV_BLOCK_LEASED] == p->n_leased, "leased count %d, scanned %d", p->n_leased,
		 cnt[KV_BLOCK_LEASED]);
	KV_CHECK(cnt[KV_BLOCK_QUARANTINED] == p->n_quarantined, "quarantined count %d, scanned %d",
		 p->n_quarantined, cnt[KV_BLOCK_QUARANTINED]);
	KV_CHECK(p->n_free + p->n_in_use + p->n_cached + p->n_leased + p->n_quarantined ==
			 p->n_blocks,
		 "free + in_use + cached + leased + quarantined != total (%d + %d + %d + %d + %d != %d)",
		 p->n_free, p->n_in_use, p->n_cached, p->n_leased, p->n_quarantined, p->n_blocks);
	KV_CHECK(reg == p->n_registered, "registered count %d, scanned %d", p->n_registered, reg);
	for (int w = 0; w < p->n_words; w++) {
		uint64_t tail = p->n_blocks - w * 64 < 64 ? ~0ULL << (p->n_blocks - w * 64) : 0;

		KV_CHECK(!(p->free_bits[w] & tail), "free bitmap has bits beyond n_blocks");
	}
	return 0;
}

static int kv_check_lru(const struct kv_pool *p)
{
	int n = 0;
	int32_t prev = -1;

	for (int32_t b = p->lru_head; b >= 0; b = p->blk[b].next) {
		KV_CHECK(b < p->n_blocks, "LRU link %d out of range", b);
		KV_CHECK(p->blk[b].state == KV_BLOCK_CACHED, "LRU holds block %d in state %d", b,
			 p->blk[b].state);
		KV_CHECK(p->blk[b].prev == prev, "LRU back link of block %d broken", b);
		KV_CHECK(++n <= p->n_cached, "LRU longer than the cached count (cycle?)");
		prev = b;
	}
	KV_CHECK(p->lru_tail == prev, "LRU tail is %d, walk ended at %d", p->lru_tail, prev);
	KV_CHECK(n == p->n_cached, "LRU holds %d blocks, cached count %d", n, p->n_cached);
	return 0;
}

static int kv_check_quarantine(const struct kv_pool *p)
{
	int n = 0;
	int32_t last = -1;

	for (int32_t b = p->quar_head; b >= 0; b = p->blk[b].next) {
		KV_CHECK(b < p->n_blocks, "quarantine link %d out of range", b);
		KV_CHECK(p->blk[b].state == KV_BLOCK_QUARANTINED,
			 "quarantine list holds block %d in state %d", b, p->blk[b].state);
		KV_CHECK(p->blk[b].free_at >= p->quar_due,
			 "quarantined block %d is due before the earliest due time", b);
		KV_CHECK(++n <= p->n_quarantined,
			 "quarantine list longer than the quarantined count (cycle?)");
		last = b;
	}
	KV_CHECK(p->quar_tail == last, "quarantine tail is %d, walk ended at %d", p->quar_tail,
		 last);
	KV_CHECK(n == p->n_quarantined, "quarantine list holds %d blocks, quarantined count %d", n,
		 p->n_quarantined);
	return 0;
}

static int kv_check_index(const struct kv_pool *p)
{
	int32_t *seen = p->scratch;
	int n = 0;

	memset(seen, 0, (size_t)p->n_blocks * sizeof(*seen));
	for (uint32_t i = 0; i <= p->idx_mask; i++) {
		int32_t e = p->idx[i];

		if (e < 0) {
			KV_CHECK(e == -1, "index slot %u holds %d", i, e);
			continue;
		}
		KV_CHECK(e < p->n_blocks, "index slot %u holds block %d out of range", i, e);
		KV_CHECK(p->blk[e].registered, "index holds unregistered block %d", e);
		KV_CHECK(!seen[e]++, "index holds block %d twice", e);
		for (uint32_t j = kv_idx_home(p, p->blk[e].hash); j != i; j = (j + 1) & p->idx_mask)
			KV_CHECK(p->idx[j] >= 0,
				 "index entry of block %d unreachable from its home", e);
		n++;
	}
	KV_CHECK(n == p->n_registered, "index holds %d entries, %d blocks registered", n,
		 p->n_registered);
	for (int32_t b = 0; b < p->n_blocks; b++) {
		const struct kv_block *k = &p->blk[b];

		if (!k->registered)
			continue;
		KV_CHECK(seen[b] == 1, "registered block %d missing from the index", b);
		KV_CHECK(k->parent < p->n_blocks && k->parent != b,
			 "registered block %d has bad parent %d", b, k->parent);
		KV_CHECK(k->gen > 0 && k->gen <= p->gen_next && k->pgen < k->gen,
			 "registered block %d has bad generations", b);
	}
	return 0;
}

static int kv_check_seqs(const struct kv_pool *p)
{
	int32_t *refs = p->scratch;
	int alive = 0;

	memset(refs, 0, (size_t)p->n_blocks * sizeof(*refs));
	for (int i = 0; i < p->max_seqs; i++) {
		const struct kv_seq *s = &p->seqs[i];
		int bt = p->block_tokens;

		if (!s->active)
			continue;
		alive++;
		KV_CHECK(s->n_blocks == (s->n_tokens + bt - 1) / bt && s->n_blocks <= p->max_table,
			 "sequence %d has %d tokens in %d blocks", i, s->n_tokens, s->n_blocks);
		KV_CHECK(s->n_published >= 0 && s->n_published <= s->n_tokens / bt,
			 "sequence %d published %d of %d full blocks", i, s->n_published,
			 s->n_tokens / bt);
		for (int j = 0; j < s->n_blocks; j++) {
			int32_t b = s->table[j];

			KV_CHECK(b >= 0 && b < p->n_blocks, "sequence %d table[%d] = %d", i, j, b);
			KV_CHECK(p->blk[b].state == KV_BLOCK_IN_USE,
				 "sequence %d uses block %d in state %d", i, b, p->blk[b].state);
			refs[b]++;
			if (j >= s->n_published)
				continue;
			const struct kv_block *k = &p->blk[b];
			int32_t par = j ? s->table[j - 1] : -1;

			KV_CHECK(k->registered && k->salt == s->salt && k->parent == par &&
					 (par < 0 || k->pgen == p->blk[par].gen),
				 "sequence %d published block %d is not chained to its table", i,
				 b);
		}
	}
	KV_CHECK(alive == p->n_seqs, "%d sequences alive, count %d", alive, p->n_seqs);
	for (int i = 0; i < p->max_leases; i++) {
		const struct kv_lease_slot *l = &p->leases[i];

		for (int j = 0; l->active && j < l->n_pinned && j < l->n_blocks; j++) {
			int32_t b = l->blocks[j];

			KV_CHECK(b >= 0 && b < p->n_blocks, "lease %d table[%d] = %d", i, j, b);
			refs[b]++;
		}
	}
	for (int32_t b = 0; b < p->n_blocks; b++)
		KV_CHECK(refs[b] == p->blk[b].ref,
			 "block %d has refcount %d but %d table and lease references", b,
			 p->blk[b].ref, refs[b]);
	return 0;
}

static int kv_check_leases(const struct kv_pool *p)
{
	int alive = 0, blocks = 0;

	for (int i = 0; i < p->max_leases; i++) {
		const struct kv_lease_slot *l = &p->leases[i];

		if (!l->active)
			continue;
		alive++;
		KV_CHECK(l->n_blocks > 0 && l->n_blocks <= p->max_table, "lease %d has %d blocks",
			 i, l->n_blocks);
		KV_CHECK(l->epoch > 0 && l->epoch <= p->epoch_next, "lease %d has bad epoch", i);
		KV_CHECK(l->n_pinned >= 0 && l->n_pinned < l->n_blocks,
			 "lease %d holds %d matched of %d blocks", i, l->n_pinned, l->n_blocks);
		for (int j = 0; j < l->n_blocks; j++) {
			int32_t b = l->blocks[j];

			KV_CHECK(b >= 0 && b < p->n_blocks, "lease %d block %d out of range", i, b);
			if (j >= l->n_pinned) {
				KV_CHECK(p->blk[b].state == KV_BLOCK_LEASED && p->blk[b].lease == i,
					 "lease %d block %d is not leased to it", i, b);
				continue;
			}
			const struct kv_block *k = &p->blk[b];
			int32_t par = j ? l->blocks[j - 1] : -1;

			KV_CHECK(k->state == KV_BLOCK_IN_USE && k->registered &&
					 k->salt == l->salt && k->parent == par &&
					 (par < 0 || k->pgen == p->blk[par].gen),
				 "lease %d matched block %d is not a registered chain", i, b);
		}
		blocks += l->n_blocks - l->n_pinned;
	}
	KV_CHECK(alive == p->n_leases, "%d leases alive, count %d", alive, p->n_leases);
	KV_CHECK(blocks == p->n_leased, "leases hold %d blocks, leased count %d", blocks,
		 p->n_leased);
	return 0;
}

int kv_pool_check(const struct kv_pool *p)
{
	int rc;

	if (!p)
		return -EINVAL;
	rc = kv_check_blocks(p);
	if (!rc)
		rc = kv_check_lru(p);
	if (!rc)
		rc = kv_check_quarantine(p);
	if (!rc)
		rc = kv_check_index(p);
	if (!rc)
		rc = kv_check_seqs(p);
	if (!rc)
		rc = kv_check_leases(p);
	return rc;
}

/* ---- sequences ---- */

static bool kv_seq_ok(const struct kv_seq *s)
{
	return s && s->active && s->pool;
}

static struct kv_seq *kv_seq_slot(struct kv_pool *p)
{
	for (int i = 0; i < p->max_seqs; i++) {
		if (!p->seqs[i].active)
			return &p->seqs[i];
	}
	return NULL;
}

int kv_seq_create(struct kv_pool *p, uint64_t salt, struct kv_seq **out)
{
	struct kv_seq *s;

	if (!p || !out)
		return -EINVAL;
	s = kv_seq_slot(p);
	if (!s)
		return -EBUSY;
	s->active = true;
	s->salt = salt;
	s->n_tokens = s->n_blocks = s->n_published = 0;
	p->n_seqs++;
	*out = s;
	return 0;
}

void kv_seq_free(struct kv_seq *s)
{
	struct kv_pool *p;

	if (!kv_seq_ok(s))
		return;
	p = s->pool;
	/* Last block first, so the LRU evicts chain tails before the prefixes they hang on. */
	for (int i = s->n_blocks - 1; i >= 0; i--)
		kv_put(p, s->table[i]);
	s->active = false;
	s->n_tokens = s->n_blocks = s->n_published = 0;
	p->n_seqs--;
}

int kv_seq_fork(struct kv_seq *src, struct kv_seq **out)
{
	struct kv_pool *p;
	struct kv_seq *s;

	if (!kv_seq_ok(src) || !out)
		return -EINVAL;
	p = src->pool;
	s = kv_seq_slot(p);
	if (!s)
		return -EBUSY;
	s->active = true;
	s->salt = src->salt;
	s->n_tokens = src->n_tokens;
	s->n_blocks = src->n_blocks;
	s->n_published = src->n_published;
	for (int i = 0; i < src->n_blocks; i++) {
		s->table[i] = src->table[i];
		kv_get(p, s->table[i]);
	}
	p->n_seqs++;
	*out = s;
	return 0;
}

int kv_seq_len(const struct kv_seq *s)
{
	return kv_seq_ok(s) ? s->n_tokens : -EINVAL;
}

const int32_t *kv_seq_table(const struct kv_seq *s, int *n_blocks)
{
	if (!kv_seq_ok(s)) {
		if (n_blocks)
			*n_blocks = 0;
		return NULL;
	}
	if (n_blocks)
		*n_blocks = s->n_blocks;
	return s->table;
}

int kv_seq_append(struct kv_seq *s, const int32_t *tokens, int n, int32_t *slots,
		  struct kv_copy *cow)
{
	struct kv_pool *p;
	int bt, off, new_blocks, need;
	int64_t total;
	bool do_cow;

	if (cow)
		*cow = (struct kv_copy){ .src = -1, .dst = -1, .n_tokens = 0 };
	if (!kv_seq_ok(s) || n < 0 || (n > 0 && (!tokens || !slots)))
		return -EINVAL;
	if (n == 0)
		return 0;
	p = s->pool;
	bt = p->block_tokens;
	total = (int64_t)s->n_tokens + n;
	if (total > (int64_t)p->max_table * bt)
		return -E2BIG;
	off = s->n_tokens % bt;
	do_cow = off && p->blk[s->table[s->n_blocks - 1]].ref > 1;
	if (do_cow && !cow)
		return -EINVAL;
	new_blocks = (int)((total + bt - 1) / bt) - s->n_blocks;
	need = new_blocks + do_cow;
	if (need > p->n_free + p->n_cached)
		return kv_nospc(p);

	if (do_cow) {
		int last = s->n_blocks - 1;
		int32_t src = s->table[last];
		int32_t prefer = last ? s->table[last - 1] + 1 : -1;
		int32_t dst = kv_take_in_use(p, prefer, need);

		memcpy(&p->tokens[(size_t)dst * bt], &p->tokens[(size_t)src * bt],
		       (size_t)off * sizeof(int32_t));
		kv_put(p, src);
		s->table[last] = dst;
		*cow = (struct kv_copy){ .src = src, .dst = dst, .n_tokens = off };
		p->cow_copies++;
		need--;
	}
	for (int i = 0; i < n; i++) {
		int pos = s->n_tokens;
		int32_t b;

		if (pos % bt == 0) {
			int32_t prefer = s->n_blocks ? s->table[s->n_blocks - 1] + 1 : -1;

			b = kv_take_in_use(p, prefer, need--);
			s->table[s->n_blocks++] = b;
		} else {
			b = s->table[pos / bt];
		}
		p->tokens[(size_t)b * bt + pos % bt] = tokens[i];
		slots[i] = b * bt + pos % bt;
		s->n_tokens++;
	}
	return 0;
}

int kv_seq_publish(struct kv_seq *s)
{
	struct kv_pool *p;
	int bt, full;

	if (!kv_seq_ok(s))
		return -EINVAL;
	p = s->pool;
	bt = p->block_tokens;
	full = s->n_tokens / bt;
	while (s->n_published < full) {
		int i = s->n_published;
		int32_t b = s->table[i];
		int32_t par = i ? s->table[i - 1] : -1;
		const int32_t *tok = &p->tokens[(size_t)b * bt];
		struct kv_block *k = &p->blk[b];
		uint64_t h;
		int32_t e;

		if (k->registered) {
			/*
			 * Registered through a fork sibling; usable only if chained
			 * to our table (the sibling may have deduplicated a parent
			 * that has since gone).  Otherwise stop: later blocks stay
			 * uncached.
			 */
			if (k->salt != s->salt || k->parent != par ||
			    (par >= 0 && k->pgen != p->blk[par].gen))
				break;
			s->n_published++;
			continue;
		}
		h = p->hash(par >= 0 ? p->blk[par].hash : kv_root_hash(s->salt), tok, bt);
		e = kv_idx_lookup(p, h, par, s->salt, tok);
		if (e >= 0) {
			kv_get(p, e);
			s->table[i] = e;
			kv_put(p, b);
			p->dedups++;
		} else {
			kv_register(p, b, h, par, s->salt);
		}
		s->n_published++;
	}
	return s->n_published;
}

/*
 * The longest chain of registered blocks under salt holding tokens' first
 * full blocks, their ids written to out[]; returns how many.  Takes no
 * reference: the lookup reads only the index, keys and tokens, none of the
 * ref/LRU state that kv_get() changes, so callers may take theirs after.
 */
static int kv_match_chain(const struct kv_pool *p, uint64_t salt, const int32_t *tokens, int full,
			  int32_t *out)
{
	int bt = p->block_tokens, m;
	uint64_t h = kv_root_hash(salt);
	int32_t par = -1;

	for (m = 0; m < full; m++) {
		const int32_t *tok = &tokens[(size_t)m * bt];
		int32_t e;

		h = p->hash(h, tok, bt);
		e = kv_idx_lookup(p, h, par, salt, tok);
		if (e < 0)
			break;
		out[m] = e;
		par = e;
	}
	return m;
}

int kv_seq_match_prefix(struct kv_seq *s, const int32_t *tokens, int n)
{
	struct kv_pool *p;
	int bt, full, i;

	if (!kv_seq_ok(s) || n < 0 || (n > 0 && !tokens))
		return -EINVAL;
	if (s->n_tokens)
		return -EBUSY;
	p = s->pool;
	bt = p->block_tokens;
	full = n / bt;
	if (full > p->max_table)
		full = p->max_table;
	p->queries++;
	p->query_tokens += (uint64_t)full * bt;
	i = kv_match_chain(p, s->salt, tokens, full, s->table);
	for (int j = 0; j < i; j++)
		kv_get(p, s->table[j]);
	s->n_blocks = s->n_published = i;
	s->n_tokens = i * bt;
	if (i) {
		p->hits++;
		p->hit_tokens += (uint64_t)i * bt;
	}
	return s->n_tokens;
}

/* ---- leases ---- */

static struct kv_lease_slot *kv_lease_get(const struct kv_pool *p, struct kv_lease_ref ref)
{
	struct kv_lease_slot *l;

	if (ref.id < 0 || ref.id >= p->max_leases)
		return NULL;
	l = &p->leases[ref.id];
	return l->active && l->epoch == ref.epoch ? l : NULL;
}

/* The slot is free again; its blocks have been handed on already. */
static void kv_lease_end(struct kv_pool *p, struct kv_lease_slot *l)
{
	p->n_leased -= l->n_blocks - l->n_pinned;
	l->n_blocks = l->n_pinned = 0;
	l->active = false;
	p->n_leases--;
}

/*
 * The lease ends unused: matched blocks lose its reference (tail first);
 * LEASED blocks go FREE, or, when it expired at now_ns (a write posted
 * before the deadline may still land), into quarantine.  Matched blocks are
 * never written by the transfer and need none.
 */
static void kv_lease_drop(struct kv_pool *p, struct kv_lease_slot *l, bool expired, uint64_t now_ns)
{
	for (int i = l->n_blocks - 1; i >= l->n_pinned; i--) {
		if (expired && p->quarantine_ns)
			kv_quarantine(p, l->blocks[i], now_ns);
		else
			kv_to_free(p, l->blocks[i]);
	}
	for (int i = l->n_pinned - 1; i >= 0; i--)
		kv_put(p, l->blocks[i]);
	kv_lease_end(p, l);
}

int kv_lease(struct kv_pool *p, int n, uint64_t owner, uint64_t deadline_ns, int32_t *blocks,
	     struct kv_lease_ref *out)
{
	int n_cached;

	return kv_lease_prefix(p, n, 0, NULL, 0, owner, deadline_ns, blocks, &n_cached, out);
}

int kv_lease_prefix(struct kv_pool *p, int n, uint64_t salt, const int32_t *tokens, int n_match,
		    uint64_t owner, uint64_t deadline_ns, int32_t *blocks, int *n_cached,
		    struct kv_lease_ref *out)
{
	struct kv_lease_slot *l = NULL;
	int id, bt, full, m, revived = 0;

	if (!p || !blocks || !n_cached || !out || n <= 0 || n > p->max_table || n_match < 0 ||
	    (n_match > 0 && !tokens))
		return -EINVAL;
	for (id = 0; id < p->max_leases; id++) {
		if (!p->leases[id].active) {
			l = &p->leases[id];
			break;
		}
	}
	if (!l)
		return -EBUSY;
	/* Find the prefix first, taking nothing: on -ENOSPC the LRU stays as it was. */
	bt = p->block_tokens;
	full = n_match / bt < n - 1 ? n_match / bt : n - 1;
	m = kv_match_chain(p, salt, tokens, full, blocks);
	for (int i = 0; i < m; i++)
		revived += p->blk[blocks[i]].state == KV_BLOCK_CACHED;
	/* Matched CACHED blocks leave the LRU: they cannot be evicted for the rest. */
	if (n - m > p->n_free + p->n_cached - revived)
		return kv_nospc(p);
	if (full > 0) {
		p->queries++;
		p->query_tokens += (uint64_t)full * bt;
		if (m) {
			p->hits++;
			p->hit_tokens += (uint64_t)m * bt;
		}
	}
	l->active = true;
	l->owner = owner;
	l->epoch = ++p->epoch_next;
	l->deadline = deadline_ns;
	l->salt = salt;
	for (int i = 0; i < m; i++) {
		kv_get(p, blocks[i]);
		l->blocks[i] = blocks[i];
	}
	for (int i = m; i < n; i++) {
		int32_t b = kv_take(p, i ? l->blocks[i - 1] + 1 : -1, n - i);

		DUET_ASSERT(b >= 0);
		p->blk[b].state = KV_BLOCK_LEASED;
		p->blk[b].lease = id;
		l->blocks[i] = blocks[i] = b;
	}
	l->n_blocks = n;
	l->n_pinned = m;
	p->n_leased += n - m;
	p->n_leases++;
	*n_cached = m;
	*out = (struct kv_lease_ref){ .id = id, .epoch = l->epoch };
	return 0;
}

int kv_lease_release(struct kv_pool *p, struct kv_lease_ref ref)
{
	struct kv_lease_slot *l;

	if (!p)
		return -EINVAL;
	l = kv_lease_get(p, ref);
	if (!l)
		return -ESTALE;
	kv_lease_drop(p, l, false, 0);
	return 0;
}

int kv_lease_blocks(const struct kv_pool *p, struct kv_lease_ref ref, const int32_t **blocks)
{
	const struct kv_lease_slot *l;

	if (!p || !blocks)
		return -EINVAL;
	l = kv_lease_get(p, ref);
	if (!l)
		return -ESTALE;
	*blocks = l->blocks;
	return l->n_blocks;
}

int kv_lease_commit(struct kv_pool *p, struct kv_lease_ref ref, uint64_t now_ns, struct kv_seq *s,
		    const int32_t *tokens, int n_tokens)
{
	struct kv_lease_slot *l;
	int bt, need;

	if (!p || !kv_seq_ok(s) || s->pool != p || !tokens || n_tokens <= 0)
		return -EINVAL;
	l = kv_lease_get(p, ref);
	if (!l)
		return -ESTALE;
	bt = p->block_tokens;
	need = (int)(((int64_t)n_tokens + bt - 1) / bt);
	if (need > l->n_blocks || need <= l->n_pinned)
		return -EINVAL;
	if (s->n_tokens)
		return -EBUSY;
	/* The matched prefix holds KV of these tokens under this salt, or the sequence is wrong. */
	if (l->n_pinned && s->salt != l->salt)
		return -EILSEQ;
	for (int i = 0; i < l->n_pinned; i++) {
		if (memcmp(&p->tokens[(size_t)l->blocks[i] * bt], &tokens[(size_t)i * bt],
			   (size_t)bt * sizeof(int32_t)))
			return -EILSEQ;
	}
	if (now_ns >= l->deadline) {
		kv_lease_drop(p, l, true, now_ns);
		p->leases_expired++; /* as if kv_lease_expire() had found it first */
		return -ETIMEDOUT;
	}
	for (int i = 0; i < l->n_blocks; i++) {
		int32_t b = l->blocks[i];

		if (i < l->n_pinned) {
			s->table[i] = b; /* the lease's reference becomes the table's */
			continue;
		}
		if (i >= need) {
			kv_to_free(p, b);
			continue;
		}
		p->blk[b].state = KV_BLOCK_IN_USE;
		p->blk[b].ref = 1;
		p->blk[b].lease = -1;
		p->n_in_use++;
		s->table[i] = b;
		memcpy(&p->tokens[(size_t)b * bt], &tokens[(size_t)i * bt],
		       (size_t)(i == need - 1 ? n_tokens - i * bt : bt) * sizeof(int32_t));
	}
	s->n_blocks = need;
	s->n_tokens = n_tokens;
	s->n_published = l->n_pinned;
	kv_lease_end(p, l);
	return s->n_published;
}

int kv_lease_expire(struct kv_pool *p, uint64_t now_ns)
{
	int n = 0;

	if (!p)
		return -EINVAL;
	kv_quarantine_release(p, now_ns);
	for (int i = 0; i < p->max_leases; i++) {
		struct kv_lease_slot *l = &p->leases[i];

		if (l->active && l->deadline <= now_ns) {
			kv_lease_drop(p, l, true, now_ns);
			p->leases_expired++;
			n++;
		}
	}
	return n;
}

int kv_lease_release_owner(struct kv_pool *p, uint64_t owner)
{
	int n = 0;

	if (!p)
		return -EINVAL;
	for (int i = 0; i < p->max_leases; i++) {
		struct kv_lease_slot *l = &p->leases[i];

		if (l->active && l->owner == owner) {
			kv_lease_drop(p, l, false, 0);
			n++;
		}
	}
	return n;
}
