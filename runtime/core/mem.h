/* SPDX-License-Identifier: MIT */
/*
 * Allocation wrappers.  Modules that allocate on a load or setup path call
 * these instead of libc, so that tests can make the Nth allocation fail
 * (SQLite-style) and check that every failure path returns -ENOMEM and
 * leaks nothing.  Hot paths do not allocate at all.
 */
#ifndef DUET_MEM_H
#define DUET_MEM_H

#include <stddef.h>

void *duet_malloc(size_t size);
void *duet_calloc(size_t n, size_t size);
void *duet_realloc(void *p, size_t size);
char *duet_strdup(const char *s);
void duet_free(void *p);

/*
 * Test hook: allocation number n (counting from 1 after this call) and every
 * later one fail; n == 0 turns failures off.  Returns how many allocations
 * were attempted since the previous call.
 */
unsigned long duet_mem_fail_at(unsigned long n);

#endif /* DUET_MEM_H */
