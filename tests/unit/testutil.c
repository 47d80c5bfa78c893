// SPDX-License-Identifier: MIT
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/testutil.h"
#include "runtime/core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *tu_shared_path(const char *rel)
{
	static char path[PATH_MAX];
	const char *base = getenv("DUET_SHARED");
	struct stat st;

	if (!base || !*base)
		base = "../shared";
	if (snprintf(path, sizeof(path), "%s/%s", base, rel) >= (int)sizeof(path))
		return NULL;
	if (stat(path, &st) != 0)
		return NULL;
	return path;
}

char *tu_mkdtemp(void)
{
	const char *tmp = getenv("TMPDIR");
	char *dir;

	if (!tmp || !*tmp)
		tmp = "/tmp";
	if (asprintf(&dir, "%s/duet-test-XXXXXX", tmp) < 0)
		return NULL;
	if (!mkdtemp(dir)) {
		free(dir);
		return NULL;
	}
	return dir;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void tu_rmtree(char *dir)
{
	if (!dir)
		return;
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

void *tu_read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!fp)
		return NULL;
	if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0)
		goto out;
	buf = malloc((size_t)n + 1);
	if (!buf)
		goto out;
	if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[n] = '\0';
	if (len)
		*len = (size_t)n;
out:
	fclose(fp);
	return buf;
}

int tu_write_file(const char *path, const void *buf, size_t len)
{
	FILE *fp = fopen(path, "wb");
	int ret = 0;

	if (!fp)
		return -errno;
	if (len && fwrite(buf, 1, len, fp) != len)
		ret = -EIO;
	if (fclose(fp) != 0 && ret == 0)
		ret = -errno;
	return ret;
}

static struct {
	char *buf;
	size_t len, cap;
} captured;

static void capture_sink(void *ctx, enum duet_log_level level, const char *line)
{
	size_t n = strlen(line);

	(void)ctx;
	(void)level;
	if (captured.len + n + 2 > captured.cap) {
		size_t cap = (captured.cap ? captured.cap * 2 : 4096) + n;
		char *p = realloc(captured.buf, cap);
		if (!p)
			return;
		captured.buf = p;
		captured.cap = cap;
	}
	memcpy(captured.buf + captured.len, line, n);
	captured.len += n;
	captured.buf[captured.len++] = '\n';
	captured.buf[captured.len] = '\0';
}

void tu_log_capture_start(void)
{
	captured.len = 0;
	if (captured.buf)
		captured.buf[0] = '\0';
	duet_log_set_sink(capture_sink, NULL);
}

void tu_log_capture_stop(void)
{
	duet_log_set_sink(NULL, NULL);
	free(captured.buf);
	captured.buf = NULL;
	captured.len = captured.cap = 0;
}

const char *tu_log_text(void)
{
	return captured.buf ? captured.buf : "";
}

bool tu_log_contains(const char *needle)
{
	return strstr(tu_log_text(), needle) != NULL;
}

static const char *json_value(const char *json, const char *key)
{
	char pat[256];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\"", key);
	p = strstr(json, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
		p++;
	if (*p != ':')
		return NULL;
	p++;
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
		p++;
	return p;
}

static const char *skip_ws_comma(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',')
		p++;
	return p;
}

long tu_json_numbers(const char *json, const char *key, double *out, size_t max)
{
	const char *p = json_value(json, key);
	size_t n = 0;

	if (!p || *p != '[')
		return -1;
	p = skip_ws_comma(p + 1);
	while (*p && *p != ']') {
		char *end;
		double v = strtod(p, &end);
		if (end == p)
			return -1;
		if (n < max)
			out[n] = v;
		n++;
		p = skip_ws_comma(end);
	}
	return *p == ']' ? (long)(n < max ? n : max) : -1;
}

long tu_json_pairs(const char *json, const char *key, int *ids, double *vals, size_t max)
{
	const char *p = json_value(json, key);
	size_t n = 0;

	if (!p || *p != '[')
		return -1;
	p = skip_ws_comma(p + 1);
	while (*p == '[') {
		char *end;
		long id = strtol(p + 1, &end, 10);
		if (end == p + 1)
			return -1;
		p = skip_ws_comma(end);
		double v = strtod(p, &end);
		if (end == p)
			return -1;
		p = skip_ws_comma(end);
		if (*p != ']')
			return -1;
		if (n < max) {
			ids[n] = (int)id;
			vals[n] = v;
		}
		n++;
		p = skip_ws_comma(p + 1);
	}
	return *p == ']' ? (long)(n < max ? n : max) : -1;
}
