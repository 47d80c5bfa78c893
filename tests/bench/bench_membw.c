// SPDX-License-Identifier: MIT
/*
 * Memory bandwidth of this machine, for judging decode speed: a decode step
 * streams every weight once, so tokens/s x weight bytes can be compared with
 * what the memory system delivers.  Measures a read-only pass (sum) and
 * memcpy over a buffer far larger than the caches, on 1 and on all threads.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BYTES (512ull << 20)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct job {
	uint8_t *src, *dst;
	size_t n;
	int copy;
	uint64_t sum;
};

static void *run(void *p)
{
	struct job *j = p;

	if (j->copy) {
		memcpy(j->dst, j->src, j->n);
	} else {
		const uint64_t *s = (const uint64_t *)j->src;
		uint64_t a = 0, b = 0, c = 0, d = 0;
		for (size_t i = 0; i + 4 <= j->n / 8; i += 4) {
			a += s[i];
			b += s[i + 1];
			c += s[i + 2];
			d += s[i + 3];
		}
		j->sum = a + b + c + d;
	}
	return NULL;
}

static double measure(uint8_t *src, uint8_t *dst, int nth, int copy)
{
	pthread_t t[64];
	struct job j[64];
	double best = 0;

	for (int rep = 0; rep < 5; rep++) {
		double t0 = now_s();
		for (int i = 0; i < nth; i++) {
			size_t part = BYTES / (size_t)nth;
			j[i] = (struct job){ src + i * part, dst + i * part, part, copy, 0 };
			pthread_create(&t[i], NULL, run, &j[i]);
		}
		for (int i = 0; i < nth; i++)
			pthread_join(t[i], NULL);
		double dt = now_s() - t0;
		/* copy moves the bytes twice (read + write) */
		double gbs = (double)BYTES * (copy ? 2 : 1) / dt / 1e9;
		if (gbs > best)
			best = gbs;
	}
	return best;
}

int main(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	uint8_t *src = malloc(BYTES), *dst = malloc(BYTES);

	if (!src || !dst)
		return 1;
	memset(src, 1, BYTES);
	memset(dst, 2, BYTES);
	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > 64)
		ncpu = 64;
	printf("memory bandwidth (best of 5 over %llu MiB):\n", BYTES >> 20);
	printf("  read   1 thread : %6.2f GB/s\n", measure(src, dst, 1, 0));
	printf("  read   %ld threads: %6.2f GB/s\n", ncpu, measure(src, dst, (int)ncpu, 0));
	printf("  memcpy 1 thread : %6.2f GB/s (read + write)\n", measure(src, dst, 1, 1));
	printf("  memcpy %ld threads: %6.2f GB/s (read + write)\n", ncpu,
	       measure(src, dst, (int)ncpu, 1));
	free(src);
	free(dst);
	return 0;
}
