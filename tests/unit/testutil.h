/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the cmocka tests: locating ../shared test data (tests
 * that need it skip with a message when it is absent), temporary
 * directories, capturing log lines, and reading whole files.
 *
 * Include after <cmocka.h> (and its prerequisites).
 */
#ifndef DUET_TESTUTIL_H
#define DUET_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Path of a file under the shared test data folder ($DUET_SHARED, default
 * ../shared next to the repository), in a static buffer; NULL when the file
 * is absent.
 */
const char *tu_shared_path(const char *rel);

/* Like tu_shared_path(), but skips the current cmocka test with a message when absent. */
#define TU_SHARED_OR_SKIP(rel)                                                            \
	({                                                                                \
		const char *p_ = tu_shared_path(rel);                                     \
		if (!p_) {                                                                \
			print_message("[  SKIP    ] %s: shared test data '%s' not found " \
				      "(set DUET_SHARED)\n",                              \
				      __func__, rel);                                     \
			skip();                                                           \
		}                                                                         \
		p_;                                                                       \
	})

/* A fresh directory under $TMPDIR (or /tmp); removed with its files by tu_rmtree(). */
char *tu_mkdtemp(void);
void tu_rmtree(char *dir); /* also frees dir */

/* Whole file into a malloc'd buffer (NUL-terminated beyond len); NULL on error. */
void *tu_read_file(const char *path, size_t *len);
int tu_write_file(const char *path, const void *buf, size_t len);

/* Capture log lines into an internal buffer (tu_log_text()); stop restores stderr. */
void tu_log_capture_start(void);
void tu_log_capture_stop(void);
const char *tu_log_text(void);
bool tu_log_contains(const char *needle);

/*
 * Minimal readers for the golden JSON files: find the first "key": and parse
 * the value after it.  Enough for arrays of numbers and of [id, value] pairs.
 * Return the number of elements read (at most max), or -1 when the key is
 * absent or the value is not of that shape.
 */
long tu_json_numbers(const char *json, const char *key, double *out, size_t max);
long tu_json_pairs(const char *json, const char *key, int *ids, double *vals, size_t max);

#endif /* DUET_TESTUTIL_H */
