// SPDX-License-Identifier: MIT
#include "runtime/core/mem.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_ulong alloc_count;
static atomic_ulong fail_at; /* 0: never fail */

static int should_fail(void)
{
	unsigned long n = atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed) + 1;
	unsigned long at = atomic_load_explicit(&fail_at, memory_order_relaxed);

	return at && n >= at;
}

void *duet_malloc(size_t size)
{
	return should_fail() ? NULL : malloc(size);
}

void *duet_calloc(size_t n, size_t size)
{
	return should_fail() ? NULL : calloc(n, size);
}

void *duet_realloc(void *p, size_t size)
{
	return should_fail() ? NULL : realloc(p, size);
}

char *duet_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = duet_malloc(n);

	if (d)
		memcpy(d, s, n);
	return d;
}

void duet_free(void *p)
{
	free(p);
}

unsigned long duet_mem_fail_at(unsigned long n)
{
	unsigned long count = atomic_exchange(&alloc_count, 0);

	atomic_store(&fail_at, n);
	return count;
}
