// SPDX-License-Identifier: MIT
#include "drivers/cpu/threadpool.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Spin iterations before a worker sleeps (about 100 us on current x86). */
#define SPIN_LIMIT 20000

struct tp {
	int n_threads;
	pthread_t *threads;
	/* Job of the current region; published by the release store to gen. */
	tp_fn fn;
	void *ctx;
	int nth;
	_Atomic uint32_t gen; /* bumped once per region (and at shutdown) */
	_Atomic int done;     /* workers finished in the current region */
	_Atomic int sleepers; /* workers waiting on the gen futex */
	_Atomic int stop;
	const int *cpus;
	int n_cpus;
	struct tp_arg {
		struct tp *tp;
		int ith;
	} * args;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static void pin_self(const struct tp *tp, int ith)
{
	cpu_set_t set;
	int cpu, ret;

	if (!tp->cpus || tp->n_cpus <= 0)
		return;
	cpu = tp->cpus[ith % tp->n_cpus];
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	ret = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	if (ret)
		log_warn("cpu", "thread %d: cannot pin to CPU %d: %s", ith, cpu, strerror(ret));
}

static void *worker(void *p)
{
	struct tp_arg *a = p;
	struct tp *tp = a->tp;
	uint32_t seen = 0;

	pin_self(tp, a->ith);
	for (;;) {
		uint32_t g;
		int spins = 0;

		while ((g = atomic_load_explicit(&tp->gen, memory_order_acquire)) == seen) {
			if (++spins < SPIN_LIMIT) {
				cpu_relax();
				continue;
			}
			atomic_fetch_add(&tp->sleepers, 1);
			/* Re-check after announcing: the producer wakes sleepers after bumping gen. */
			if (atomic_load(&tp->gen) == seen)
				futex_wait(&tp->gen, seen);
			atomic_fetch_sub(&tp->sleepers, 1);
			spins = 0;
		}
		seen = g;
		if (atomic_load_explicit(&tp->stop, memory_order_acquire))
			return NULL;
		if (a->ith < tp->nth)
			tp->fn(tp->ctx, a->ith, tp->nth);
		atomic_fetch_add_explicit(&tp->done, 1, memory_order_release);
	}
}

int tp_create(int n_threads, const int *cpus, int n_cpus, struct tp **out)
{
	struct tp *tp;
	int ret, i;

	*out = NULL;
	if (n_threads < 1)
		return -EINVAL;
	tp = duet_calloc(1, sizeof(*tp));
	if (!tp)
		return -ENOMEM;
	tp->n_threads = n_threads;
	tp->cpus = cpus;
	tp->n_cpus = n_cpus;
	tp->threads = duet_calloc((size_t)n_threads, sizeof(*tp->threads));
	tp->args = duet_calloc((size_t)n_threads, sizeof(*tp->args));
	if (!tp->threads || !tp->args) {
		ret = -ENOMEM;
		goto free_tp;
	}
	pin_self(tp, 0);
	for (i = 1; i < n_threads; i++) {
		tp->args[i] = (struct tp_arg){ .tp = tp, .ith = i };
		ret = pthread_create(&tp->threads[i], NULL, worker, &tp->args[i]);
		if (ret) {
			log_error("cpu", "pthread_create: %s", strerror(ret));
			ret = -ret;
			goto stop_threads;
		}
	}
	/* The pinning table belongs to the caller; it is only read at start-up. */
	*out = tp;
	return 0;

stop_threads:
	tp->n_threads = i;
	atomic_store(&tp->stop, 1);
	atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
	futex_wake_all(&tp->gen);
	for (int j = 1; j < i; j++)
		pthread_join(tp->threads[j], NULL);
free_tp:
	duet_free(tp->threads);
	duet_free(tp->args);
	duet_free(tp);
	return ret;
}

void tp_destroy(struct tp *tp)
{
	if (!tp)
		return;
	atomic_store(&tp->stop, 1);
	atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
	futex_wake_all(&tp->gen);
	for (int i = 1; i < tp->n_threads; i++)
		pthread_join(tp->threads[i], NULL);
	duet_free(tp->threads);
	duet_free(tp->args);
	duet_free(tp);
}

int tp_threads(const struct tp *tp)
{
	return tp->n_threads;
}

void tp_run(struct tp *tp, tp_fn fn, void *ctx, int nth)
{
	int workers = tp->n_threads - 1;

	if (nth <= 1 || workers == 0) {
		fn(ctx, 0, 1);
		return;
	}
	if (nth > tp->n_threads)
		nth = tp->n_threads;
	tp->fn = fn;
	tp->ctx = ctx;
	tp->nth = nth;
	atomic_store_explicit(&tp->done, 0, memory_order_relaxed);
	/* seq_cst, paired with the worker's sleepers increment and gen re-check. */
	atomic_fetch_add(&tp->gen, 1);
	if (atomic_load(&tp->sleepers) > 0)
		futex_wake_all(&tp->gen);
	fn(ctx, 0, nth);
	/* Every worker checks in, even those with ith >= nth, so the job fields stay stable. */
	while (atomic_load_explicit(&tp->done, memory_order_acquire) < workers)
		cpu_relax();
}
