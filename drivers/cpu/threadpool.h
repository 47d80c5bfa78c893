/* SPDX-License-Identifier: MIT */
/*
 * The CPU backend's thread pool: created once per backend, threads pinned to
 * the partition's CPUs, and reused for every op.  tp_run() runs one parallel
 * region on the calling thread (index 0) and nth - 1 workers and returns when
 * all are done; it allocates nothing and creates no thread.  Between regions
 * workers spin briefly (ops of a forward pass follow each other within
 * microseconds), then sleep on a futex.
 */
#ifndef DUET_THREADPOOL_H
#define DUET_THREADPOOL_H

typedef void (*tp_fn)(void *ctx, int ith, int nth);

struct tp;

/*
 * n_threads >= 1 including the caller.  cpus (n_cpus entries, may be NULL)
 * are assigned round-robin: thread i (the caller is 0) is pinned to
 * cpus[i % n_cpus].  Pinning failures are logged and otherwise ignored.
 */
int tp_create(int n_threads, const int *cpus, int n_cpus, struct tp **out);
void tp_destroy(struct tp *tp);
int tp_threads(const struct tp *tp);

/* Run fn(ctx, ith, nth) for ith in [0, nth), nth in [1, tp_threads]. */
void tp_run(struct tp *tp, tp_fn fn, void *ctx, int nth);

#endif /* DUET_THREADPOOL_H */
