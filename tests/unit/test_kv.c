// SPDX-License-Identifier: MIT
/* KV block manager: states, tables, copy-on-write, prefix cache, leases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/core/mem.h"
#include "runtime/kv/kv.h"
#include "tests/unit/testutil.h"

static struct kv_pool *mkpool_q(int n_blocks, int bt, int max_seqs, int max_seq_tokens,
				int max_leases, uint64_t quarantine_ns)
{
	struct kv_pool_config c = {
		.n_blocks = n_blocks,
		.block_tokens = bt,
		.max_seqs = max_seqs,
		.max_seq_tokens = max_seq_tokens,
		.max_leases = max_leases,
		.quarantine_ns = quarantine_ns,
	};
	struct kv_pool *p = NULL;

	assert_int_equal(kv_pool_create(&c, &p), 0);
	assert_non_null(p);
	assert_int_equal(kv_pool_check(p), 0);
	return p;
}

static struct kv_pool *mkpool(int n_blocks, int bt, int max_seqs, int max_seq_tokens,
			      int max_leases)
{
	return mkpool_q(n_blocks, bt, max_seqs, max_seq_tokens, max_leases, 0);
}

static void stats(const struct kv_pool *p, struct kv_stats *st)
{
	kv_pool_stats(p, st);
	assert_int_equal(st->free + st->in_use + st->cached + st->leased + st->quarantined,
			 st->total);
}

/* Appends n tokens and asserts success; returns the copy instruction. */
static struct kv_copy append(struct kv_seq *s, const int32_t *tok, int n)
{
	int32_t slots[256];
	struct kv_copy cow;

	assert_true(n <= 256);
	assert_int_equal(kv_seq_append(s, tok, n, slots, &cow), 0);
	return cow;
}

static void seq_with(struct kv_pool *p, uint64_t salt, const int32_t *tok, int n,
		     struct kv_seq **out)
{
	assert_int_equal(kv_seq_create(p, salt, out), 0);
	append(*out, tok, n);
}

static void test_sizes(void **state)
{
	size_t bytes;
	int n;

	(void)state;
	assert_int_equal(kv_block_bytes(16, 8, 128, 2, 32, &bytes), 0);
	assert_int_equal(bytes, 2UL * 16 * 8 * 128 * 2 * 32);
	assert_int_equal(kv_blocks_for_budget(1UL << 30, 16, 8, 128, 2, 32, &n), 0);
	assert_int_equal(n, 512);
	assert_int_equal(kv_blocks_for_budget(1000, 16, 8, 128, 2, 32, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(kv_block_bytes(0, 8, 128, 2, 32, &bytes), -EINVAL);
	assert_int_equal(kv_block_bytes(1 << 30, 1 << 30, 1 << 30, 8, 1 << 30, &bytes), -EOVERFLOW);
	assert_int_equal(kv_blocks_for_budget(SIZE_MAX, 1, 1, 1, 1, 1, &n), 0);
	assert_int_equal(n, INT32_MAX);
}

static void test_create_enomem(void **state)
{
	struct kv_pool_config c = {
		.n_blocks = 64,
		.block_tokens = 4,
		.max_seqs = 8,
		.max_seq_tokens = 64,
		.max_leases = 4,
	};
	unsigned long n;
	int rc = -1;

	(void)state;
	for (n = 1; n < 100; n++) {
		struct kv_pool *p = NULL;

		duet_mem_fail_at(n);
		rc = kv_pool_create(&c, &p);
		duet_mem_fail_at(0);
		if (rc == 0) {
			assert_int_equal(kv_pool_check(p), 0);
			kv_pool_destroy(p);
			break;
		}
		assert_int_equal(rc, -ENOMEM);
		assert_null(p);
	}
	assert_int_equal(rc, 0);
	assert_true(n > 5); /* several allocations, each failure path exercised */
	print_message("kv_pool_create: %lu allocation failure points\n", n - 1);
}

static void test_misuse(void **state)
{
	struct kv_pool_config bad = {
		.n_blocks = 0, .block_tokens = 4, .max_seqs = 1, .max_seq_tokens = 4
	};
	struct kv_pool *p = NULL;
	struct kv_seq *a, *b, *c;
	int32_t tok[64] = { 0 }, slots[64], ids[4];
	struct kv_copy cow;
	struct kv_stats st;
	struct kv_lease_ref lr;

	(void)state;
	assert_int_equal(kv_pool_create(&bad, &p), -EINVAL);
	assert_int_equal(kv_pool_create(NULL, &p), -EINVAL);
	bad.n_blocks = INT32_MAX;
	assert_int_equal(kv_pool_create(&bad, &p), -EINVAL);
	assert_null(p);
	kv_pool_destroy(NULL);

	p = mkpool(4, 4, 2, 32, 1);
	assert_int_equal(kv_seq_create(p, 1, &a), 0);
	assert_int_equal(kv_seq_create(p, 1, &b), 0);
	assert_int_equal(kv_seq_create(p, 1, &c), -EBUSY);
	assert_int_equal(kv_seq_fork(a, &c), -EBUSY);
	assert_int_equal(kv_seq_append(a, NULL, 1, slots, &cow), -EINVAL);
	assert_int_equal(kv_seq_append(a, tok, -1, slots, &cow), -EINVAL);
	assert_int_equal(kv_seq_append(a, tok, 33, slots, &cow), -E2BIG);
	/* 4 blocks of 4: 17 tokens do not fit; nothing changes */
	assert_int_equal(kv_seq_append(a, tok, 17, slots, &cow), -ENOSPC);
	assert_int_equal(kv_seq_len(a), 0);
	stats(p, &st);
	assert_int_equal(st.free, 4);
	append(a, tok, 12);
	assert_int_equal(kv_seq_append(b, tok, 5, slots, &cow), -ENOSPC);
	assert_int_equal(kv_lease(p, 2, 1, 10, ids, &lr), -ENOSPC);
	append(b, tok, 1);
	assert_int_equal(kv_seq_append(b, tok, 4, slots, &cow), -ENOSPC);
	assert_int_equal(kv_seq_len(b), 1);
	assert_int_equal(kv_seq_match_prefix(a, tok, 8), -EBUSY);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(a);
	kv_seq_free(a); /* dead handle: ignored */
	assert_int_equal(kv_seq_append(a, tok, 1, slots, &cow), -EINVAL);
	assert_int_equal(kv_seq_publish(a), -EINVAL);
	assert_int_equal(kv_seq_len(a), -EINVAL);
	assert_int_equal(kv_lease(p, 0, 1, 10, ids, &lr), -EINVAL);
	assert_int_equal(kv_lease(p, 9, 1, 10, ids, &lr), -EINVAL);
	assert_int_equal(kv_lease_release(p, (struct kv_lease_ref){ .id = 5, .epoch = 1 }),
			 -ESTALE);
	assert_int_equal(kv_block_state(p, 4), -EINVAL);
	assert_int_equal(kv_block_state(p, -1), -EINVAL);
	assert_null(kv_block_tokens(p, 4));
	kv_seq_free(b);
	stats(p, &st);
	assert_int_equal(st.free, 4);
	assert_int_equal(kv_pool_check(p), 0);
	kv_pool_destroy(p);
}

/* A sequence appending on an empty pool gets consecutive ids; new runs start low. */
static void test_adjacency(void **state)
{
	struct kv_pool *p = mkpool(32, 4, 8, 128, 2);
	struct kv_seq *a, *b, *c, *d, *e;
	int32_t tok[64], slots[64], ids[4];
	const int32_t *t;
	struct kv_lease_ref lr;
	int n;

	(void)state;
	for (int i = 0; i < 64; i++)
		tok[i] = i;
	assert_int_equal(kv_seq_create(p, 1, &a), 0);
	/* one token at a time: each new block is the one after the last */
	for (int i = 0; i < 20; i++) {
		struct kv_copy cow;

		assert_int_equal(kv_seq_append(a, &tok[i], 1, &slots[i], &cow), 0);
		assert_int_equal(cow.n_tokens, 0);
		assert_int_equal(slots[i], i);
	}
	t = kv_seq_table(a, &n);
	assert_int_equal(n, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(t[i], i);
	seq_with(p, 1, tok, 4, &b);  /* block 5 */
	seq_with(p, 1, tok, 12, &c); /* 6..8 */
	t = kv_seq_table(c, &n);
	assert_int_equal(t[0], 6);
	assert_int_equal(t[2], 8);
	kv_seq_free(b);		    /* hole at 5 */
	seq_with(p, 1, tok, 8, &d); /* a run of 2: 9..10, not the hole */
	t = kv_seq_table(d, &n);
	assert_int_equal(t[0], 9);
	assert_int_equal(t[1], 10);
	seq_with(p, 1, tok, 4, &e); /* one block: the lowest free, 5 */
	t = kv_seq_table(e, &n);
	assert_int_equal(t[0], 5);
	assert_int_equal(kv_lease(p, 4, 9, 100, ids, &lr), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(ids[i], 11 + i);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(a);
	kv_seq_free(c);
	kv_seq_free(d);
	kv_seq_free(e);
	assert_int_equal(kv_lease_release(p, lr), 0);
	assert_int_equal(kv_pool_check(p), 0);
	kv_pool_destroy(p);
}

static void test_cow(void **state)
{
	struct kv_pool *p = mkpool(16, 4, 8, 64, 0);
	struct kv_seq *a, *b, *c, *d;
	int32_t tok[16] = { 10, 11, 12, 13, 14, 15, 16, 17, 18 }, x = 99, y = 77, slot;
	struct kv_copy cow;
	const int32_t *ta, *tb;
	struct kv_stats st;
	int n;

	(void)state;
	seq_with(p, 1, tok, 6, &a); /* blocks 0, 1 (half full) */
	assert_int_equal(kv_seq_fork(a, &b), 0);
	assert_int_equal(kv_seq_len(b), 6);
	assert_int_equal(kv_block_refcount(p, 0), 2);
	assert_int_equal(kv_block_refcount(p, 1), 2);
	assert_int_equal(kv_pool_check(p), 0);

	/* a appends into the shared half block: moves to a fresh one, copy 2 rows */
	assert_int_equal(kv_seq_append(a, &x, 1, &slot, &cow), 0);
	assert_int_equal(cow.src, 1);
	assert_int_equal(cow.dst, 2);
	assert_int_equal(cow.n_tokens, 2);
	assert_int_equal(slot, 2 * 4 + 2);
	assert_memory_equal(kv_block_tokens(p, 2), &tok[4], 2 * sizeof(int32_t));
	assert_int_equal(kv_block_tokens(p, 2)[2], 99);
	/* b is now the only user of block 1: appends in place */
	assert_int_equal(kv_seq_append(b, &y, 1, &slot, &cow), 0);
	assert_int_equal(cow.n_tokens, 0);
	assert_int_equal(slot, 1 * 4 + 2);
	assert_int_equal(kv_block_tokens(p, 1)[2], 77);
	ta = kv_seq_table(a, &n);
	assert_int_equal(n, 2);
	tb = kv_seq_table(b, &n);
	assert_int_equal(n, 2);
	assert_int_equal(ta[0], tb[0]);
	assert_int_not_equal(ta[1], tb[1]);
	assert_int_equal(kv_block_refcount(p, 0), 2); /* shared full block stays shared */
	assert_int_equal(kv_block_refcount(p, 1), 1);
	assert_int_equal(kv_block_refcount(p, 2), 1);
	assert_int_equal(kv_pool_check(p), 0);

	/* a fork at a block boundary appends into new blocks: nothing to copy */
	seq_with(p, 1, tok, 8, &c);
	assert_int_equal(kv_seq_fork(c, &d), 0);
	assert_int_equal(kv_seq_append(c, &x, 1, &slot, &cow), 0);
	assert_int_equal(cow.n_tokens, 0);
	assert_int_equal(kv_seq_append(d, &x, 1, &slot, &cow), 0);
	assert_int_equal(cow.n_tokens, 0);
	/* a copy cannot be reported without somewhere to report it */
	kv_seq_free(d);
	assert_int_equal(kv_seq_fork(c, &d), 0);
	assert_int_equal(kv_seq_append(d, &x, 1, &slot, NULL), -EINVAL);
	assert_int_equal(kv_seq_len(d), 9);
	stats(p, &st);
	assert_int_equal(st.cow_copies, 1);
	kv_seq_free(a);
	kv_seq_free(b);
	kv_seq_free(c);
	kv_seq_free(d);
	stats(p, &st);
	assert_int_equal(st.free, 16);
	assert_int_equal(kv_pool_check(p), 0);
	kv_pool_destroy(p);
}

static void test_prefix(void **state)
{
	struct kv_pool *p = mkpool(32, 4, 8, 64, 0);
	struct kv_seq *a, *b, *c, *d;
	int32_t tok[22], other[22];
	const int32_t *ta, *tb, *td;
	int32_t old[5];
	struct kv_stats st;
	int n;

	(void)state;
	for (int i = 0; i < 22; i++)
		tok[i] = other[i] = 1000 + i;
	other[13] = 5;		      /* block 3 differs */
	seq_with(p, 42, tok, 22, &a); /* 5 full blocks + 2 tokens */
	assert_int_equal(kv_seq_publish(a), 5);
	ta = kv_seq_table(a, &n);
	memcpy(old, ta, sizeof(old));
	kv_seq_free(a);
	stats(p, &st);
	assert_int_equal(st.cached, 5);
	assert_int_equal(st.free, 27);
	assert_int_equal(kv_pool_check(p), 0);

	/* same salt, same prefix: all full blocks, CACHED -> IN_USE */
	assert_int_equal(kv_seq_create(p, 42, &b), 0);
	assert_int_equal(kv_seq_match_prefix(b, tok, 22), 20);
	tb = kv_seq_table(b, &n);
	assert_int_equal(n, 5);
	assert_memory_equal(tb, old, sizeof(old));
	assert_int_equal(kv_block_state(p, old[0]), KV_BLOCK_IN_USE);
	append(b, &tok[20], 2);
	stats(p, &st);
	assert_int_equal(st.queries, 1);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.hit_tokens, 20);
	assert_int_equal(st.cached, 0);

	/* another salt never matches */
	assert_int_equal(kv_seq_create(p, 43, &c), 0);
	assert_int_equal(kv_seq_match_prefix(c, tok, 22), 0);
	assert_int_equal(kv_seq_len(c), 0);

	/* a difference in block 3 matches blocks 0..2, shared with b (IN_USE) */
	assert_int_equal(kv_seq_create(p, 42, &d), 0);
	assert_int_equal(kv_seq_match_prefix(d, other, 22), 12);
	td = kv_seq_table(d, &n);
	assert_int_equal(n, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(td[i], old[i]);
		assert_int_equal(kv_block_refcount(p, old[i]), 2);
	}
	assert_int_equal(kv_block_refcount(p, old[3]), 1);
	append(d, &other[12], 10);
	stats(p, &st);
	assert_int_equal(st.queries, 3);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.hit_tokens, 32);
	assert_int_equal(st.query_tokens, 60);
	assert_int_equal(kv_pool_check(p), 0);

	/* publishing d chains its own block 3 after the shared block 2 */
	assert_int_equal(kv_seq_publish(d), 5);
	assert_int_equal(kv_seq_publish(b), 5);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(b);
	kv_seq_free(c);
	kv_seq_free(d);
	stats(p, &st);
	assert_int_equal(st.cached, 7);
	assert_int_equal(kv_pool_drop_cache(p), 7);
	stats(p, &st);
	assert_int_equal(st.free, 32);
	assert_int_equal(st.evictions, 7);
	assert_int_equal(kv_pool_check(p), 0);
	kv_pool_destroy(p);
}

/* Two sequences computed the same prefix: the second publish reuses the first's blocks. */
static void test_dedup(void **state)
{
	struct kv_pool *p = mkpool(16, 4, 8, 64, 0);
	struct kv_seq *a, *b;
	int32_t tok[10] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
	const int32_t *ta, *tb;
	struct kv_stats st;
	int n;

	(void)state;
	seq_with(p, 1, tok, 10, &a);
	seq_with(p, 1, tok, 10, &b);
	assert_int_equal(kv_seq_publish(a), 2);
	assert_int_equal(kv_seq_publish(b), 2);
	ta = kv_seq_table(a, &n);
	tb = kv_seq_table(b, &n);
	assert_int_equal(ta[0], tb[0]);
	assert_int_equal(ta[1], tb[1]);
	assert_int_not_equal(ta[2], tb[2]);
	stats(p, &st);
	assert_int_equal(st.dedups, 2);
	assert_int_equal(st.in_use, 4);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(a);
	kv_seq_free(b);
	assert_int_equal(kv_pool_check(p), 0);
	kv_pool_destroy(p);
}

static void test_lru(void **state)
{
	struct kv_pool *p = mkpool(8, 4, 8, 64, 0);
	struct kv_seq *a, *b, *c, *m;
	int32_t ta_tok[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, tb_tok[8] = { 9, 9, 9, 9, 8, 8, 8, 8 };
	int32_t big[20] = { 0 };
	int32_t A[2], B[2];
	struct kv_stats st;
	int n;

	(void)state;
	seq_with(p, 1, ta_tok, 8, &a);
	kv_seq_publish(a);
	memcpy(A, kv_seq_table(a, &n), sizeof(A));
	kv_seq_free(a);
	seq_with(p, 1, tb_tok, 8, &b);
	kv_seq_publish(b);
	memcpy(B, kv_seq_table(b, &n), sizeof(B));
	kv_seq_free(b);
	/* touch A: LRU order is now B1, B0, A1, A0 */
	assert_int_equal(kv_seq_create(p, 1, &m), 0);
	assert_int_equal(kv_seq_match_prefix(m, ta_tok, 8), 8);
	kv_seq_free(m);
	stats(p, &st);
	assert_int_equal(st.cached, 4);
	assert_int_equal(st.free, 4);

	/* 5 blocks: the 4 free ones, then the least recently used: B1 */
	seq_with(p, 2, big, 20, &c);
	stats(p, &st);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(kv_block_state(p, B[1]), KV_BLOCK_IN_USE);
	assert_int_equal(kv_block_state(p, B[0]), KV_BLOCK_CACHED);
	assert_int_equal(kv_block_state(p, A[0]), KV_BLOCK_CACHED);
	assert_int_equal(kv_block_state(p, A[1]), KV_BLOCK_CACHED);
	assert_int_equal(kv_pool_check(p), 0);
	/* B's chain lost its second block */
	assert_int_equal(kv_seq_create(p, 1, &m), 0);
	assert_int_equal(kv_seq_match_prefix(m, tb_tok, 8), 4);
	kv_seq_free(m);
	/* the match made B0 most recent: next goes A1 */
	append(c, big, 4);
	assert_int_equal(kv_block_state(p, A[1]), KV_BLOCK_IN_USE);
	assert_int_equal(kv_block_state(p, A[0]), KV_BLOCK_CACHED);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(c);
	kv_pool_destroy(p);
}

static uint64_t hash_const(uint64_t prev, const int32_t *tokens, int n)
{
	(void)prev;
	(void)tokens;
	(void)n;
	return 7;
}

/* With every hash equal, a match still needs equal tokens, salt and parent. */
static void test_collision(void **state)
{
	struct kv_pool *p = mkpool(32, 4, 8, 64, 0);
	struct kv_seq *a, *e, *m;
	int32_t ta[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, te[8] = { 0, 0, 0, 0, 5, 6, 7, 8 };
	int32_t q1[8] = { 1, 2, 3, 4, 5, 6, 7, 9 }, q2[4] = { 9, 9, 9, 9 };
	int32_t A[2];
	int n;

	(void)state;
	assert_int_equal(kv_pool_set_hash(p, hash_const), 0);
	seq_with(p, 1, ta, 8, &a);
	assert_int_equal(kv_seq_publish(a), 2);
	assert_int_equal(kv_pool_set_hash(p, NULL), -EBUSY);
	memcpy(A, kv_seq_table(a, &n), sizeof(A));
	kv_seq_free(a);
	seq_with(p, 1, te, 8, &e); /* same second block, other parent */
	assert_int_equal(kv_seq_publish(e), 2);
	kv_seq_free(e);
	assert_int_equal(kv_pool_check(p), 0);

	assert_int_equal(kv_seq_create(p, 1, &m), 0);
	assert_int_equal(kv_seq_match_prefix(m, q1, 8), 4);
	assert_int_equal(kv_seq_table(m, &n)[0], A[0]);
	kv_seq_free(m);
	assert_int_equal(kv_seq_create(p, 1, &m), 0);
	assert_int_equal(kv_seq_match_prefix(m, q2, 4), 0);
	kv_seq_free(m);
	assert_int_equal(kv_seq_create(p, 2, &m), 0);
	assert_int_equal(kv_seq_match_prefix(m, ta, 8), 0);
	kv_seq_free(m);
	assert_int_equal(kv_seq_create(p, 1, &m), 0);
	assert_int_equal(kv_seq_match_prefix(m, ta, 8), 8);
	assert_memory_equal(kv_seq_table(m, &n), A, sizeof(A));
	assert_memory_equal(kv_block_tokens(p, A[1]), &ta[4], 4 * sizeof(int32_t));
	kv_seq_free(m);
	assert_int_equal(kv_seq_create(p, 1, &m), 0);
	assert_int_equal(kv_seq_match_prefix(m, te, 8), 8);
	assert_int_not_equal(kv_seq_table(m, &n)[1], A[1]);
	kv_seq_free(m);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_pool_drop_cache(p), 4);
	assert_int_equal(kv_pool_set_hash(p, NULL), 0);
	kv_pool_destroy(p);
}

static void test_leases(void **state)
{
	struct kv_pool *p = mkpool(16, 4, 8, 64, 2);
	struct kv_lease_ref l1, l2, l3;
	int32_t ids[8], tok[16];
	struct kv_seq *s, *t;
	const int32_t *tab;
	struct kv_stats st;
	int n;

	(void)state;
	for (int i = 0; i < 16; i++)
		tok[i] = 500 + i;
	/* expiry at the deadline */
	assert_int_equal(kv_lease(p, 3, 7, 100, ids, &l1), 0);
	assert_int_equal(ids[1], ids[0] + 1);
	assert_int_equal(ids[2], ids[0] + 2);
	assert_int_equal(kv_block_state(p, ids[0]), KV_BLOCK_LEASED);
	stats(p, &st);
	assert_int_equal(st.leased, 3);
	assert_int_equal(st.leases, 1);
	assert_int_equal(kv_lease_expire(p, 99), 0);
	assert_int_equal(kv_lease_expire(p, 100), 1);
	stats(p, &st);
	assert_int_equal(st.leased, 0);
	assert_int_equal(st.free, 16);
	assert_int_equal(st.leases_expired, 1);
	assert_int_equal(kv_lease_release(p, l1), -ESTALE);

	/* same slot, new epoch: the old reference is stale */
	assert_int_equal(kv_lease(p, 3, 7, 1000, ids, &l2), 0);
	assert_int_equal(l2.id, l1.id);
	assert_true(l2.epoch != l1.epoch);
	/* the blocks of a live lease, by reference; none for a stale one */
	assert_int_equal(kv_lease_blocks(p, l2, &tab), 3);
	assert_memory_equal(tab, ids, 3 * sizeof(int32_t));
	assert_int_equal(kv_lease_blocks(p, l1, &tab), -ESTALE);
	assert_int_equal(
		kv_lease_blocks(p, (struct kv_lease_ref){ .id = 99, .epoch = l2.epoch }, &tab),
		-ESTALE);
	assert_int_equal(kv_lease_blocks(NULL, l2, &tab), -EINVAL);
	assert_int_equal(kv_seq_create(p, 1, &s), 0);
	assert_int_equal(kv_lease_commit(p, l1, 50, s, tok, 10), -ESTALE);
	assert_int_equal(kv_lease_commit(p, l2, 50, s, tok, 13), -EINVAL); /* > 3 blocks */
	assert_int_equal(kv_lease(p, 1, 8, 1000, ids + 4, &l3), 0);
	assert_int_equal(kv_lease(p, 1, 8, 1000, ids + 5, &l1), -EBUSY);
	assert_int_equal(kv_pool_check(p), 0);

	/* commit: the leased blocks become the sequence's table */
	assert_int_equal(kv_lease_commit(p, l2, 50, s, tok, 10), 0);
	tab = kv_seq_table(s, &n);
	assert_int_equal(n, 3);
	assert_memory_equal(tab, ids, 3 * sizeof(int32_t));
	assert_int_equal(kv_seq_len(s), 10);
	assert_int_equal(kv_block_state(p, ids[0]), KV_BLOCK_IN_USE);
	assert_int_equal(kv_lease_commit(p, l2, 50, s, tok, 10), -ESTALE);
	assert_int_equal(kv_lease_blocks(p, l2, &tab), -ESTALE); /* committed: gone */
	assert_int_equal(kv_seq_publish(s), 2);
	assert_int_equal(kv_pool_check(p), 0);
	append(s, &tok[10], 2); /* continues in the third block */
	assert_int_equal(kv_seq_table(s, &n)[2], ids[2]);

	/* a 1-block lease committed to a non-empty sequence: -EBUSY; then late: -ETIMEDOUT */
	assert_int_equal(kv_lease_commit(p, l3, 50, s, tok, 4), -EBUSY);
	assert_int_equal(kv_seq_create(p, 1, &t), 0);
	assert_int_equal(kv_lease_commit(p, l3, 1000, t, tok, 4), -ETIMEDOUT);
	assert_int_equal(kv_lease_release(p, l3), -ESTALE);
	stats(p, &st);
	assert_int_equal(st.leased, 0);
	assert_int_equal(st.leases_expired, 2); /* the commit found it late: counted too */

	/* extra leased blocks go FREE on commit; a dead owner's leases go */
	assert_int_equal(kv_lease(p, 3, 9, 1000, ids, &l1), 0);
	assert_int_equal(kv_lease_commit(p, l1, 10, t, tok, 5), 0);
	assert_int_equal(kv_block_state(p, ids[2]), KV_BLOCK_FREE);
	assert_int_equal(kv_lease(p, 2, 9, 1000, ids, &l1), 0);
	assert_int_equal(kv_lease(p, 2, 9, 1000, ids, &l2), 0);
	assert_int_equal(kv_lease_release_owner(p, 9), 2);
	stats(p, &st);
	assert_int_equal(st.leased, 0);
	assert_int_equal(st.in_use, 5);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(s);
	kv_seq_free(t);
	kv_pool_destroy(p);
}

/*
 * A prefix lease of n blocks (salt, tokens[0, n_match) to match; owner 7, deadline 100),
 * released at once: how many blocks it found cached.
 */
static int prefix_hits(struct kv_pool *p, int n, uint64_t salt, const int32_t *tokens, int n_match)
{
	struct kv_lease_ref l;
	int32_t ids[16];
	int nc;

	assert_true(n <= 16);
	assert_int_equal(kv_lease_prefix(p, n, salt, tokens, n_match, 7, 100, ids, &nc, &l), 0);
	assert_int_equal(kv_lease_release(p, l), 0);
	return nc;
}

/*
 * Leases that start with cached blocks (kv_lease_prefix): the prompt's
 * leading registered blocks under its salt lead the table, pinned (IN_USE,
 * not evictable) while the lease lives; release, expiry and a dead owner
 * give them back to the LRU, commit hands them to the sequence.  The
 * accounting holds after every step.
 */
static void test_lease_prefix(void **state)
{
	struct kv_pool *p = mkpool(16, 4, 8, 64, 4);
	int32_t tok[64], other[16], ids[16], chain[4], slots[64];
	struct kv_lease_ref l1, l2;
	struct kv_seq *a, *b, *s;
	struct kv_stats st, st0;
	const int32_t *tab;
	struct kv_copy cow;
	int n, nc;

	(void)state;
	for (int i = 0; i < 64; i++)
		tok[i] = 100 + i;
	memcpy(other, tok, sizeof(other));
	other[5] = 7; /* differs in the second block */

	/* a 14-token prompt leaves three full blocks cached (and its tail FREE) */
	seq_with(p, 1, tok, 14, &a);
	assert_int_equal(kv_seq_publish(a), 3);
	memcpy(chain, kv_seq_table(a, &n), sizeof(chain));
	kv_seq_free(a);
	stats(p, &st0);
	assert_int_equal(st0.cached, 3);

	/* the next prompt (16 tokens: match 15) finds them: 3 pinned + 1 fresh */
	assert_int_equal(kv_lease_prefix(p, 4, 1, tok, 15, 7, 100, ids, &nc, &l1), 0);
	assert_int_equal(nc, 3);
	assert_memory_equal(ids, chain, 3 * sizeof(int32_t));
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kv_block_state(p, ids[i]), KV_BLOCK_IN_USE);
		assert_int_equal(kv_block_refcount(p, ids[i]), 1);
	}
	assert_int_equal(kv_block_state(p, ids[3]), KV_BLOCK_LEASED);
	assert_int_equal(kv_lease_blocks(p, l1, &tab), 4);
	assert_memory_equal(tab, ids, 4 * sizeof(int32_t));
	stats(p, &st);
	assert_int_equal(st.cached, 0);
	assert_int_equal(st.in_use, 3);
	assert_int_equal(st.leased, 1);
	assert_int_equal(st.queries, st0.queries + 1);
	assert_int_equal(st.hits, st0.hits + 1);
	assert_int_equal(st.hit_tokens, st0.hit_tokens + 12);
	assert_int_equal(kv_pool_check(p), 0);

	/* pinned: a sequence that wants every other block cannot evict them */
	assert_int_equal(kv_seq_create(p, 9, &b), 0);
	assert_int_equal(kv_seq_append(b, tok, 48, slots, &cow), 0); /* the 12 FREE blocks */
	assert_int_equal(kv_seq_append(b, tok, 1, slots, &cow), -ENOSPC);
	assert_int_equal(kv_pool_check(p), 0);
	for (int i = 0; i < 3; i++)
		assert_memory_equal(kv_block_tokens(p, ids[i]), &tok[4 * i], 4 * sizeof(int32_t));
	/* and a prefix lease counts the blocks it revives against what is left */
	assert_int_equal(kv_lease_prefix(p, 2, 1, tok, 15, 7, 100, ids + 4, &nc, &l2), -ENOSPC);

	/* released: the fresh block FREE, the pinned back to the LRU, tail first */
	assert_int_equal(kv_lease_release(p, l1), 0);
	stats(p, &st);
	assert_int_equal(st.cached, 3);
	assert_int_equal(st.leased, 0);
	assert_int_equal(st.leases, 0);
	assert_int_equal(kv_block_state(p, chain[0]), KV_BLOCK_CACHED);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_seq_append(b, tok, 5, slots, &cow), 0);
	assert_int_equal(slots[0] / 4, ids[3]);
	assert_int_equal(slots[4] / 4, chain[2]); /* the chain's tail is evicted first */
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(b);
	assert_int_equal(kv_pool_drop_cache(p), 2);

	/* again from scratch: a 3-block chain, pinned by a lease that then expires */
	seq_with(p, 1, tok, 14, &a);
	assert_int_equal(kv_seq_publish(a), 3);
	memcpy(chain, kv_seq_table(a, &n), sizeof(chain));
	/* pinned while a sequence uses them too: the lease is one more reference */
	assert_int_equal(kv_lease_prefix(p, 4, 1, tok, 15, 7, 100, ids, &nc, &l1), 0);
	assert_int_equal(nc, 3);
	assert_int_equal(kv_block_refcount(p, chain[1]), 2);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(a);
	assert_int_equal(kv_block_state(p, chain[1]), KV_BLOCK_IN_USE);
	assert_int_equal(kv_block_refcount(p, chain[1]), 1);
	assert_int_equal(kv_pool_check(p), 0);
	stats(p, &st0);
	assert_int_equal(kv_lease_expire(p, 100), 1);
	stats(p, &st);
	assert_int_equal(st.leases_expired, st0.leases_expired + 1);
	assert_int_equal(st.cached, 3);
	assert_int_equal(st.in_use, 0);
	assert_int_equal(st.leased, 0);
	assert_int_equal(kv_block_state(p, chain[0]), KV_BLOCK_CACHED);
	assert_int_equal(kv_pool_check(p), 0);

	/* a dead owner's prefix lease unpins too */
	assert_int_equal(kv_lease_prefix(p, 4, 1, tok, 15, 8, 100, ids, &nc, &l1), 0);
	assert_int_equal(nc, 3);
	assert_int_equal(kv_lease_release_owner(p, 8), 1);
	stats(p, &st);
	assert_int_equal(st.cached, 3);
	assert_int_equal(kv_pool_check(p), 0);

	/* another salt, another prompt, a short match, or one block: nothing pinned */
	assert_int_equal(prefix_hits(p, 4, 2, tok, 15), 0);
	assert_int_equal(prefix_hits(p, 4, 1, other, 15), 1); /* the first block only */
	assert_int_equal(prefix_hits(p, 4, 1, tok, 7), 1);
	/* at most n - 1: something is always written */
	assert_int_equal(prefix_hits(p, 1, 1, tok, 15), 0);
	assert_int_equal(prefix_hits(p, 3, 1, tok, 15), 2);
	assert_int_equal(kv_lease_prefix(p, 4, 1, NULL, 15, 7, 100, ids, &nc, &l1), -EINVAL);
	assert_int_equal(kv_lease_prefix(p, 4, 1, tok, -1, 7, 100, ids, &nc, &l1), -EINVAL);
	assert_int_equal(kv_pool_check(p), 0);

	/* commit: the pinned blocks pass to the sequence, published; the rest as before */
	assert_int_equal(kv_lease_prefix(p, 5, 1, tok, 17, 7, 100, ids, &nc, &l1), 0);
	assert_int_equal(nc, 3);
	assert_int_equal(kv_seq_create(p, 2, &s), 0);
	assert_int_equal(kv_lease_commit(p, l1, 50, s, tok, 18), -EILSEQ); /* another salt */
	kv_seq_free(s);
	assert_int_equal(kv_seq_create(p, 1, &s), 0);
	assert_int_equal(kv_lease_commit(p, l1, 50, s, other, 18), -EILSEQ); /* other tokens */
	assert_int_equal(kv_lease_commit(p, l1, 50, s, tok, 12), -EINVAL);   /* nothing to write */
	assert_int_equal(kv_lease_blocks(p, l1, &tab), 5);		     /* the lease lives */
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_lease_commit(p, l1, 50, s, tok, 18), 3);
	tab = kv_seq_table(s, &n);
	assert_int_equal(n, 5);
	assert_memory_equal(tab, ids, 5 * sizeof(int32_t));
	assert_memory_equal(tab, chain, 3 * sizeof(int32_t));
	assert_int_equal(kv_seq_len(s), 18);
	assert_int_equal(kv_block_refcount(p, chain[0]), 1);
	stats(p, &st);
	assert_int_equal(st.in_use, 5);
	assert_int_equal(st.leased, 0);
	assert_int_equal(st.leases, 0);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_seq_publish(s), 4); /* the fourth block, full, joins the chain */
	append(s, &tok[18], 2);			/* the fifth continues, full now */
	assert_int_equal(kv_seq_publish(s), 5);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(s);
	/* the chain now reaches five blocks */
	assert_int_equal(prefix_hits(p, 6, 1, tok, 21), 5);
	assert_int_equal(kv_pool_check(p), 0);

	/* 11 FREE + 5 CACHED: 16 blocks fit exactly, one block held elsewhere does not */
	assert_int_equal(kv_lease_prefix(p, 16, 1, tok, 63, 7, 100, ids, &nc, &l1), 0);
	assert_int_equal(nc, 5);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_lease_release(p, l1), 0);
	assert_int_equal(kv_lease(p, 1, 7, 100, ids, &l2), 0);
	stats(p, &st0);
	assert_int_equal(kv_lease_prefix(p, 16, 1, tok, 63, 7, 100, ids, &nc, &l1), -ENOSPC);
	stats(p, &st);
	assert_memory_equal(&st, &st0, sizeof(st)); /* nothing changed, not even the counters */
	assert_int_equal(kv_lease_release(p, l2), 0);
	assert_int_equal(kv_pool_check(p), 0);
	kv_pool_destroy(p);
}

static void assert_states(const struct kv_pool *p, const int32_t *ids, int n, int state)
{
	for (int i = 0; i < n; i++)
		assert_int_equal(kv_block_state(p, ids[i]), state);
}

/*
 * Quarantine: the fresh blocks of a lease that expired (kv_lease_expire, or
 * a commit found late) are neither FREE nor allocatable until quarantine_ns
 * after the expiry, whatever the pressure; kv_lease_expire frees them then.
 * A release, a dead owner's release and a successful commit free at once,
 * and matched prefix blocks go back to the cache at once.  The pool checks
 * after every step.
 */
static void test_lease_quarantine(void **state)
{
	struct kv_pool *p = mkpool_q(16, 4, 8, 64, 4, 1000);
	int32_t ids[16], big[16], more[16], tok[64], slots[64];
	struct kv_lease_ref l1, l2, l3;
	struct kv_seq *s, *t;
	const int32_t *tab;
	struct kv_stats st;
	struct kv_copy cow;
	int nc;

	(void)state;
	for (int i = 0; i < 64; i++)
		tok[i] = 300 + i;

	/* expired: quarantined, not FREE, until 100 + 1000 */
	assert_int_equal(kv_lease(p, 3, 7, 100, ids, &l1), 0);
	assert_int_equal(kv_lease_expire(p, 100), 1);
	assert_int_equal(kv_pool_check(p), 0);
	assert_states(p, ids, 3, KV_BLOCK_QUARANTINED);
	stats(p, &st);
	assert_int_equal(st.quarantined, 3);
	assert_int_equal(st.free, 13);
	assert_int_equal(st.leased, 0);
	assert_int_equal(st.leases, 0);
	assert_int_equal(st.leases_expired, 1);
	assert_int_equal(kv_lease_release(p, l1), -ESTALE);
	assert_int_equal(kv_lease_blocks(p, l1, &tab), -ESTALE);

	/* under pressure they are not taken: not by a lease, not by an append; warned once */
	tu_log_capture_start();
	assert_int_equal(kv_lease(p, 13, 8, 5000, big, &l2), 0);
	assert_int_equal(kv_lease(p, 1, 8, 5000, more, &l3), -ENOSPC);
	assert_int_equal(kv_seq_create(p, 1, &s), 0);
	assert_int_equal(kv_seq_append(s, tok, 1, slots, &cow), -ENOSPC);
	assert_int_equal(kv_lease_prefix(p, 2, 1, tok, 7, 8, 5000, more, &nc, &l3), -ENOSPC);
	assert_true(tu_log_contains("[warn] kv: out of KV blocks: 3 block(s) quarantined"));
	assert_null(strstr(strstr(tu_log_text(), "quarantined") + 1, "quarantined")); /* once */
	tu_log_capture_stop();
	assert_states(p, ids, 3, KV_BLOCK_QUARANTINED);
	stats(p, &st);
	assert_int_equal(st.quarantine_stalls, 3);
	assert_int_equal(st.free, 0);
	assert_int_equal(kv_pool_check(p), 0);
	/* a normal release frees at once, however late */
	assert_int_equal(kv_lease_release(p, l2), 0);
	assert_states(p, big, 13, KV_BLOCK_FREE);
	stats(p, &st);
	assert_int_equal(st.free, 13);
	assert_int_equal(st.quarantined, 3);
	assert_int_equal(kv_pool_check(p), 0);

	/* not yet at 1099; FREE at 1100 */
	assert_int_equal(kv_lease_expire(p, 1099), 0);
	assert_states(p, ids, 3, KV_BLOCK_QUARANTINED);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_lease_expire(p, 1100), 0);
	assert_states(p, ids, 3, KV_BLOCK_FREE);
	stats(p, &st);
	assert_int_equal(st.quarantined, 0);
	assert_int_equal(st.free, 16);
	assert_int_equal(kv_pool_check(p), 0);
	/* and usable again: 16 blocks fit */
	assert_int_equal(kv_seq_append(s, tok, 64, slots, &cow), 0);
	kv_seq_free(s);
	assert_int_equal(kv_pool_check(p), 0);

	/* a commit found late quarantines too, until its now + 1000 */
	assert_int_equal(kv_lease(p, 2, 7, 2000, ids, &l1), 0);
	assert_int_equal(kv_seq_create(p, 1, &s), 0);
	assert_int_equal(kv_lease_commit(p, l1, 2500, s, tok, 8), -ETIMEDOUT);
	assert_states(p, ids, 2, KV_BLOCK_QUARANTINED);
	stats(p, &st);
	assert_int_equal(st.quarantined, 2);
	assert_int_equal(st.leases_expired, 2);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_lease_expire(p, 3499), 0);
	assert_states(p, ids, 2, KV_BLOCK_QUARANTINED);
	assert_int_equal(kv_lease_expire(p, 3500), 0);
	assert_states(p, ids, 2, KV_BLOCK_FREE);
	assert_int_equal(kv_pool_check(p), 0);

	/* a successful commit frees the blocks it does not need at once; a dead owner's too */
	assert_int_equal(kv_lease(p, 3, 7, 5000, ids, &l1), 0);
	assert_int_equal(kv_lease_commit(p, l1, 4000, s, tok, 5), 0);
	assert_int_equal(kv_block_state(p, ids[2]), KV_BLOCK_FREE);
	assert_int_equal(kv_lease(p, 2, 9, 5000, ids, &l1), 0);
	assert_int_equal(kv_lease_release_owner(p, 9), 1);
	assert_states(p, ids, 2, KV_BLOCK_FREE);
	stats(p, &st);
	assert_int_equal(st.quarantined, 0);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_seq_publish(s), 1);
	kv_seq_free(s); /* one full block cached */

	/* a prefix lease: the matched block back to the cache at once, the fresh ones held */
	assert_int_equal(kv_lease_prefix(p, 3, 1, tok, 11, 7, 6000, ids, &nc, &l1), 0);
	assert_int_equal(nc, 1);
	assert_int_equal(kv_lease_expire(p, 6000), 1);
	assert_int_equal(kv_block_state(p, ids[0]), KV_BLOCK_CACHED);
	assert_states(p, ids + 1, 2, KV_BLOCK_QUARANTINED);
	stats(p, &st);
	assert_int_equal(st.cached, 1);
	assert_int_equal(st.quarantined, 2);
	assert_int_equal(kv_pool_check(p), 0);

	/*
	 * Several batches, due in another order than they came (a commit's now may
	 * be earlier than an expiry's): each goes when its own time comes.
	 */
	assert_int_equal(kv_lease(p, 1, 7, 6200, more, &l2), 0);
	assert_int_equal(kv_lease_expire(p, 6500), 1); /* more[0] until 7500 */
	assert_int_equal(kv_lease(p, 1, 7, 100, more + 1, &l3), 0);
	assert_int_equal(kv_seq_create(p, 1, &t), 0);
	assert_int_equal(kv_lease_commit(p, l3, 6100, t, tok, 4), -ETIMEDOUT); /* until 7100 */
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_lease_expire(p, 6999), 0);
	stats(p, &st);
	assert_int_equal(st.quarantined, 4);
	assert_int_equal(kv_lease_expire(p, 7000), 0); /* ids[1..2] */
	assert_states(p, ids + 1, 2, KV_BLOCK_FREE);
	assert_int_equal(kv_block_state(p, more[0]), KV_BLOCK_QUARANTINED);
	assert_int_equal(kv_block_state(p, more[1]), KV_BLOCK_QUARANTINED);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_lease_expire(p, 7100), 0); /* more[1], the tail */
	assert_int_equal(kv_block_state(p, more[0]), KV_BLOCK_QUARANTINED);
	assert_int_equal(kv_block_state(p, more[1]), KV_BLOCK_FREE);
	assert_int_equal(kv_pool_check(p), 0);
	assert_int_equal(kv_lease_expire(p, 7500), 0);
	assert_int_equal(kv_block_state(p, more[0]), KV_BLOCK_FREE);
	stats(p, &st);
	assert_int_equal(st.quarantined, 0);
	assert_int_equal(st.free + st.cached, 16);
	assert_int_equal(kv_pool_check(p), 0);

	/* quarantine over, the warning is armed again */
	assert_int_equal(kv_lease(p, 1, 7, 8000, ids, &l1), 0);
	assert_int_equal(kv_lease_expire(p, 8000), 1);
	assert_int_equal(kv_lease(p, 15, 8, 9000, big, &l2), 0); /* the cached block evicted */
	tu_log_capture_start();
	assert_int_equal(kv_seq_append(t, tok, 1, slots, &cow), -ENOSPC);
	assert_true(tu_log_contains("[warn] kv: out of KV blocks: 1 block(s) quarantined"));
	tu_log_capture_stop();
	assert_int_equal(kv_lease_release(p, l2), 0);
	assert_int_equal(kv_lease_expire(p, UINT64_MAX), 0);
	stats(p, &st);
	assert_int_equal(st.free, 16);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(t);
	kv_pool_destroy(p);

	/* quarantine 0: FREE at once, as before */
	p = mkpool(4, 4, 1, 16, 1);
	assert_int_equal(kv_lease(p, 4, 7, 100, ids, &l1), 0);
	assert_int_equal(kv_lease_expire(p, 100), 1);
	assert_states(p, ids, 4, KV_BLOCK_FREE);
	assert_int_equal(kv_lease(p, 4, 7, 200, ids, &l1), 0);
	assert_int_equal(kv_seq_create(p, 1, &s), 0);
	assert_int_equal(kv_lease_commit(p, l1, 200, s, tok, 4), -ETIMEDOUT);
	assert_states(p, ids, 4, KV_BLOCK_FREE);
	stats(p, &st);
	assert_int_equal(st.free, 4);
	assert_int_equal(st.quarantined, 0);
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(s);
	kv_pool_destroy(p);
}

/* The checker notices a table entry changed behind the pool's back, and says what broke. */
static void test_check_detects(void **state)
{
	struct kv_pool *p = mkpool(8, 4, 4, 32, 0);
	struct kv_seq *a;
	int32_t tok[8] = { 0 }, *t, saved;
	int n;

	(void)state;
	seq_with(p, 1, tok, 8, &a);
	t = (int32_t *)kv_seq_table(a, &n);
	saved = t[1];
	t[1] = 5; /* a FREE block */
	tu_log_capture_start();
	assert_int_equal(kv_pool_check(p), -EFAULT);
	assert_true(tu_log_contains("[alert] kv: pool check failed: sequence 0 uses block 5 "
				    "in state 0"));
	tu_log_capture_stop();
	t[1] = saved;
	assert_int_equal(kv_pool_check(p), 0);
	kv_seq_free(a);
	kv_pool_destroy(p);
}

/* ---- randomized ---- */

#define R_BLOCKS 64
#define R_BT 4
#define R_SEQS 12
#define R_MAXTOK 48
#define R_LEASES 4
#define R_DOCS 4
#define R_OPS 100000
#define R_GRACE 30 /* quarantine of the third run, in units of the random clock */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

struct r_seq {
	struct kv_seq *s;
	int32_t tok[R_MAXTOK];
	int n;
	int doc;
};

struct r_lease {
	bool live;
	struct kv_lease_ref ref;
	int32_t ids[R_MAXTOK / R_BT];
	int n;
	uint64_t deadline;
	int n_cached; /* kv_lease_prefix: ids[0, n_cached) hold doc under salt */
	int doc;
	uint64_t salt;
};

/* A transfer that outlived its lease: it may write into its fresh blocks until `until`. */
struct r_ghost {
	int32_t ids[R_MAXTOK / R_BT];
	int n;
	uint64_t until;
};

struct r_world {
	struct kv_pool *p;
	struct r_seq seq[R_SEQS];
	struct r_lease lease[R_LEASES];
	int32_t kvmem[R_BLOCKS * R_BT]; /* what a backend would hold: the token of each slot */
	int32_t doc[R_DOCS][R_MAXTOK];
	uint64_t now;
	uint64_t grace;			/* the pool's quarantine_ns */
	struct r_ghost ghost[R_BLOCKS]; /* each holds >= 1 quarantined block */
	int n_ghosts;
	unsigned long late_writes;
};

/* Lease l expired now: with a quarantine, its writer may go on writing for grace. */
static void r_haunt(struct r_world *w, const struct r_lease *l)
{
	struct r_ghost *g;

	if (!w->grace)
		return;
	assert_true(w->n_ghosts < R_BLOCKS);
	g = &w->ghost[w->n_ghosts++];
	g->n = l->n - l->n_cached;
	memcpy(g->ids, &l->ids[l->n_cached], (size_t)g->n * sizeof(int32_t));
	g->until = w->now + w->grace;
}

/*
 * Late writes land in the blocks of every ghost still within its grace,
 * which must be quarantined (so r_verify sees the garbage if a sequence got
 * one); ghosts past it are gone, like their blocks' quarantine.
 */
static void r_ghosts_write(struct r_world *w)
{
	for (int i = 0; i < w->n_ghosts;) {
		struct r_ghost *g = &w->ghost[i];

		if (w->now >= g->until) {
			*g = w->ghost[--w->n_ghosts];
			continue;
		}
		for (int j = 0; j < g->n; j++) {
			assert_int_equal(kv_block_state(w->p, g->ids[j]), KV_BLOCK_QUARANTINED);
			for (int k = 0; k < R_BT; k++)
				w->kvmem[g->ids[j] * R_BT + k] = -1 - (int32_t)rnd(1000);
		}
		w->late_writes++;
		i++;
	}
}

/* The "backend" side of an append: execute the copy, then store the new rows. */
static int r_append(struct r_world *w, struct r_seq *rs, const int32_t *tok, int n)
{
	int32_t slots[R_MAXTOK];
	struct kv_copy cow;
	int rc = kv_seq_append(rs->s, tok, n, slots, &cow);

	if (rc)
		return rc;
	if (cow.n_tokens)
		memcpy(&w->kvmem[cow.dst * R_BT], &w->kvmem[cow.src * R_BT],
		       (size_t)cow.n_tokens * sizeof(int32_t));
	for (int i = 0; i < n; i++) {
		w->kvmem[slots[i]] = tok[i];
		rs->tok[rs->n++] = tok[i];
	}
	return 0;
}

/* Every live sequence sees exactly its tokens, through its table, in pool and "backend". */
static void r_verify(const struct r_world *w)
{
	assert_int_equal(kv_pool_check(w->p), 0);
	for (int i = 0; i < R_SEQS; i++) {
		const struct r_seq *rs = &w->seq[i];
		const int32_t *t;
		int n;

		if (!rs->s)
			continue;
		assert_int_equal(kv_seq_len(rs->s), rs->n);
		t = kv_seq_table(rs->s, &n);
		assert_int_equal(n, (rs->n + R_BT - 1) / R_BT);
		for (int j = 0; j < rs->n; j++) {
			int32_t b = t[j / R_BT];

			assert_int_equal(w->kvmem[b * R_BT + j % R_BT], rs->tok[j]);
			assert_int_equal(kv_block_tokens(w->p, b)[j % R_BT], rs->tok[j]);
		}
	}
}

static struct r_seq *r_free_slot(struct r_world *w)
{
	for (int i = 0; i < R_SEQS; i++) {
		if (!w->seq[i].s)
			return &w->seq[i];
	}
	return NULL;
}

static struct r_seq *r_live(struct r_world *w)
{
	int i = (int)rnd(R_SEQS);

	for (int k = 0; k < R_SEQS; k++, i = (i + 1) % R_SEQS) {
		if (w->seq[i].s)
			return &w->seq[i];
	}
	return NULL;
}

static uint64_t hash_weak(uint64_t prev, const int32_t *tokens, int n)
{
	uint64_t h = prev;

	for (int i = 0; i < n; i++)
		h += (uint64_t)tokens[i];
	return h & 3;
}

enum {
	OP_NEW,
	OP_APPEND,
	OP_FORK,
	OP_FREE,
	OP_PUBLISH,
	OP_LEASE,
	OP_LEASE_PREFIX,
	OP_COMMIT,
	OP_MISMATCH,
	OP_RELEASE,
	OP_STALE,
	OP_EXPIRE,
	OP_DROP,
	OP__N
};
static const char *const op_name[OP__N] = { "new+match", "append",  "fork",	 "free",
					    "publish",	 "lease",   "lease+hit", "commit",
					    "mismatch",	 "release", "stale",	 "expire",
					    "drop" };

static void r_run(uint64_t seed, bool weak_hash, uint64_t grace)
{
	static struct r_world w;
	unsigned long done[OP__N] = { 0 }, nospc = 0;
	struct kv_stats st;
	struct timespec t0, t1;
	double secs;

	memset(&w, 0, sizeof(w));
	rng_state = seed;
	w.grace = grace;
	w.p = mkpool_q(R_BLOCKS, R_BT, R_SEQS, R_MAXTOK, R_LEASES, grace);
	if (weak_hash)
		assert_int_equal(kv_pool_set_hash(w.p, hash_weak), 0);
	for (int d = 0; d < R_DOCS; d++)
		for (int i = 0; i < R_MAXTOK; i++)
			w.doc[d][i] = (int32_t)rnd(3); /* tiny vocabulary: equal blocks abound */
	/* a warning each time the pool runs out while blocks are quarantined */
	if (grace)
		tu_log_capture_start();
	duet_mem_fail_at(1); /* from here on, any allocation would fail and be counted */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int op = 0; op < R_OPS; op++) {
		uint32_t k = rnd(100);
		struct r_seq *rs;
		int rc;

		if (k < 14) { /* new sequence: match a document prefix, compute some more */
			int d = (int)rnd(R_DOCS), len = 1 + (int)rnd(R_MAXTOK), m;

			rs = r_free_slot(&w);
			if (!rs)
				continue;
			assert_int_equal(kv_seq_create(w.p, 1 + rnd(2), &rs->s), 0);
			rs->n = 0;
			rs->doc = d;
			m = kv_seq_match_prefix(rs->s, w.doc[d], len);
			assert_true(m >= 0 && m <= len && m % R_BT == 0);
			memcpy(rs->tok, w.doc[d], (size_t)m * sizeof(int32_t));
			rs->n = m;
			rc = r_append(&w, rs, &w.doc[d][m], len - m);
			if (rc) {
				assert_int_equal(rc, -ENOSPC);
				nospc++;
			}
			done[OP_NEW]++;
		} else if (k < 40) {
			int n = 1 + (int)rnd(6);
			int32_t tok[8];

			rs = r_live(&w);
			if (!rs)
				continue;
			if (rs->n + n > R_MAXTOK) {
				assert_int_equal(kv_seq_append(rs->s, tok, n, (int32_t[8]){ 0 },
							       &(struct kv_copy){ 0 }),
						 -E2BIG);
				continue;
			}
			for (int i = 0; i < n; i++)
				tok[i] = rnd(2) ? w.doc[rs->doc][rs->n + i] : (int32_t)rnd(3);
			rc = r_append(&w, rs, tok, n);
			if (rc) {
				assert_int_equal(rc, -ENOSPC);
				nospc++;
			}
			done[OP_APPEND]++;
		} else if (k < 50) {
			struct r_seq *src = r_live(&w);

			rs = r_free_slot(&w);
			if (!src || !rs)
				continue;
			assert_int_equal(kv_seq_fork(src->s, &rs->s), 0);
			memcpy(rs->tok, src->tok, sizeof(rs->tok));
			rs->n = src->n;
			rs->doc = src->doc;
			done[OP_FORK]++;
		} else if (k < 62) {
			rs = r_live(&w);
			if (!rs)
				continue;
			if (rnd(2))
				assert_true(kv_seq_publish(rs->s) >= 0);
			kv_seq_free(rs->s);
			rs->s = NULL;
			done[OP_FREE]++;
		} else if (k < 74) {
			rs = r_live(&w);
			if (!rs)
				continue;
			rc = kv_seq_publish(rs->s);
			assert_true(rc >= 0 && rc <= rs->n / R_BT);
			done[OP_PUBLISH]++;
		} else if (k < 82) {
			struct r_lease *l = &w.lease[rnd(R_LEASES)];

			if (l->live)
				continue;
			l->n = 1 + (int)rnd(6);
			l->deadline = w.now + rnd(50);
			l->n_cached = 0;
			if (rnd(2)) {
				int m = (int)rnd((uint32_t)(l->n * R_BT));

				l->doc = (int)rnd(R_DOCS);
				l->salt = 1 + rnd(2);
				rc = kv_lease_prefix(w.p, l->n, l->salt, w.doc[l->doc], m, rnd(3),
						     l->deadline, l->ids, &l->n_cached, &l->ref);
				if (rc == 0) {
					assert_true(l->n_cached * R_BT <= m && l->n_cached < l->n);
					for (int i = 0; i < l->n_cached * R_BT; i++)
						assert_int_equal(
							w.kvmem[l->ids[i / R_BT] * R_BT + i % R_BT],
							w.doc[l->doc][i]);
					done[OP_LEASE_PREFIX] += l->n_cached > 0;
				}
			} else {
				rc = kv_lease(w.p, l->n, rnd(3), l->deadline, l->ids, &l->ref);
			}
			if (rc == -ENOSPC) {
				nospc++;
				continue;
			}
			assert_int_equal(rc, 0);
			l->live = true;
			done[OP_LEASE]++;
		} else if (k < 89) {
			struct r_lease *l = &w.lease[rnd(R_LEASES)];
			int d = (int)rnd(R_DOCS), n, lo;
			uint64_t salt = 1 + rnd(2);
			bool match;

			if (!l->live || !(rs = r_free_slot(&w)))
				continue;
			/* a prefix lease: mostly its own prompt and salt, sometimes not */
			if (l->n_cached && rnd(4)) {
				d = l->doc;
				salt = l->salt;
			}
			lo = l->n_cached * R_BT; /* what the lease has cached: not written again */
			n = lo + 1 + (int)rnd((uint32_t)(l->n * R_BT - lo));
			match = !l->n_cached ||
				(salt == l->salt &&
				 !memcmp(w.doc[d], w.doc[l->doc], (size_t)lo * sizeof(int32_t)));
			assert_int_equal(kv_seq_create(w.p, salt, &rs->s), 0);
			rc = kv_lease_commit(w.p, l->ref, w.now, rs->s, w.doc[d], n);
			if (rc == -EILSEQ) {
				assert_false(match);
				assert_int_equal(kv_lease_release(w.p, l->ref), 0);
				l->live = false;
				kv_seq_free(rs->s);
				rs->s = NULL;
				done[OP_MISMATCH]++;
				continue;
			}
			l->live = false;
			if (rc == -ETIMEDOUT) {
				r_haunt(&w, l);
				kv_seq_free(rs->s);
				rs->s = NULL;
				continue;
			}
			assert_true(match);
			assert_int_equal(rc, l->n_cached);
			/* the transfer wrote the fresh blocks before the completion record */
			for (int i = lo; i < n; i++)
				w.kvmem[l->ids[i / R_BT] * R_BT + i % R_BT] = w.doc[d][i];
			memcpy(rs->tok, w.doc[d], (size_t)n * sizeof(int32_t));
			rs->n = n;
			rs->doc = d;
			done[OP_COMMIT]++;
		} else if (k < 92) {
			struct r_lease *l = &w.lease[rnd(R_LEASES)];

			if (!l->live)
				continue;
			assert_int_equal(kv_lease_release(w.p, l->ref), 0);
			l->live = false;
			done[OP_RELEASE]++;
		} else if (k < 94) {
			struct r_lease *l = &w.lease[rnd(R_LEASES)];
			struct kv_lease_ref stale = l->ref;

			if (l->live)
				stale.epoch--;
			assert_int_equal(kv_lease_release(w.p, stale), -ESTALE);
			done[OP_STALE]++;
		} else if (k < 99) {
			int expect = 0;

			w.now += rnd(20);
			for (int i = 0; i < R_LEASES; i++)
				expect += w.lease[i].live && w.lease[i].deadline <= w.now;
			assert_int_equal(kv_lease_expire(w.p, w.now), expect);
			for (int i = 0; i < R_LEASES; i++) {
				struct r_lease *l = &w.lease[i];

				if (l->live && l->deadline <= w.now) {
					assert_int_equal(kv_lease_release(w.p, l->ref), -ESTALE);
					l->live = false;
					r_haunt(&w, l);
				}
			}
			done[OP_EXPIRE]++;
		} else {
			kv_pool_drop_cache(w.p);
			done[OP_DROP]++;
		}
		r_ghosts_write(&w);
		r_verify(&w);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
	if (grace) {
		assert_true(tu_log_contains("block(s) quarantined after expired leases"));
		tu_log_capture_stop();
	}

	/* everything released: only FREE and CACHED remain, then only FREE */
	for (int i = 0; i < R_SEQS; i++) {
		if (w.seq[i].s)
			kv_seq_free(w.seq[i].s);
	}
	for (int i = 0; i < R_LEASES; i++) {
		if (w.lease[i].live)
			assert_int_equal(kv_lease_release(w.p, w.lease[i].ref), 0);
	}
	assert_int_equal(kv_lease_expire(w.p, w.now + grace), 0); /* the quarantine ends */
	assert_int_equal(kv_pool_check(w.p), 0);
	stats(w.p, &st);
	assert_int_equal(st.in_use, 0);
	assert_int_equal(st.leased, 0);
	assert_int_equal(st.quarantined, 0);
	assert_int_equal(st.free + st.cached, R_BLOCKS);
	for (int b = 0; b < R_BLOCKS; b++) {
		int s = kv_block_state(w.p, b);

		assert_true(s == KV_BLOCK_FREE || s == KV_BLOCK_CACHED);
	}
	assert_int_equal(kv_pool_drop_cache(w.p), st.cached);
	assert_int_equal(duet_mem_fail_at(0), 0); /* nothing allocated after create */
	stats(w.p, &st);
	assert_int_equal(st.free, R_BLOCKS);
	assert_int_equal(kv_pool_check(w.p), 0);

	print_message("seed %#llx%s%s: %d ops in %.3f s (%.0f ops/s, each checked)\n",
		      (unsigned long long)seed, weak_hash ? " (weak hash)" : "",
		      grace ? " (quarantine)" : "", R_OPS, secs, R_OPS / secs);
	for (int i = 0; i < OP__N; i++)
		print_message("  %-10s %lu\n", op_name[i], done[i]);
	print_message("  -ENOSPC    %lu (%llu with blocks quarantined)\n", nospc,
		      (unsigned long long)st.quarantine_stalls);
	if (grace) {
		print_message("  late writes into quarantined blocks: %lu\n", w.late_writes);
		assert_true(w.late_writes > 0 && st.quarantine_stalls > 0);
	} else {
		assert_int_equal(st.quarantine_stalls, 0);
	}
	print_message("  queries %llu hits %llu hit_tokens %llu evictions %llu cow %llu "
		      "dedups %llu expired %llu\n",
		      (unsigned long long)st.queries, (unsigned long long)st.hits,
		      (unsigned long long)st.hit_tokens, (unsigned long long)st.evictions,
		      (unsigned long long)st.cow_copies, (unsigned long long)st.dedups,
		      (unsigned long long)st.leases_expired);
	assert_true(st.hits > 0 && st.evictions > 0 && st.cow_copies > 0 && st.dedups > 0);
	assert_true(st.leases_expired > 0 && done[OP_COMMIT] > 0);
	assert_true(done[OP_LEASE_PREFIX] > 0 && done[OP_MISMATCH] > 0);
	kv_pool_destroy(w.p);
}

static void test_random(void **state)
{
	(void)state;
	r_run(0x5eed1234abcdULL, false, 0);
}

static void test_random_collisions(void **state)
{
	(void)state;
	r_run(0xc0111de5ULL, true, 0);
}

/*
 * With a quarantine: the writer of every expired lease scribbles over its
 * fresh blocks until the grace ends, and no sequence ever sees it.
 */
static void test_random_quarantine(void **state)
{
	(void)state;
	r_run(0xdeadbeefcafeULL, false, R_GRACE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_create_enomem),
		cmocka_unit_test(test_misuse),
		cmocka_unit_test(test_adjacency),
		cmocka_unit_test(test_cow),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_dedup),
		cmocka_unit_test(test_lru),
		cmocka_unit_test(test_collision),
		cmocka_unit_test(test_leases),
		cmocka_unit_test(test_lease_prefix),
		cmocka_unit_test(test_lease_quarantine),
		cmocka_unit_test(test_check_detects),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_random_collisions),
		cmocka_unit_test(test_random_quarantine),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
