// SPDX-License-Identifier: MIT
#include "runtime/core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static struct {
	enum duet_log_level level;
	enum duet_log_format format;
	const char *ident;
	duet_log_sink_fn sink;
	void *sink_ctx;
	duet_log_tap_fn tap;
	void *tap_ctx;
} logger = {
	.level = DUET_LOG_INFO,
	.format = DUET_LOG_FMT_AUTO,
	.ident = NULL,
};

static const struct {
	const char *name;
	enum duet_log_level level;
} level_names[] = {
	{ "alert", DUET_LOG_ALERT }, { "error", DUET_LOG_ERROR }, { "warn", DUET_LOG_WARN },
	{ "info", DUET_LOG_INFO },   { "debug", DUET_LOG_DEBUG },
};

void duet_log_set_level(enum duet_log_level level)
{
	logger.level = level;
}

enum duet_log_level duet_log_get_level(void)
{
	return logger.level;
}

void duet_log_set_format(enum duet_log_format fmt)
{
	logger.format = fmt;
}

void duet_log_set_ident(const char *ident)
{
	logger.ident = ident;
}

void duet_log_set_tap(duet_log_tap_fn fn, void *ctx)
{
	logger.tap = fn;
	logger.tap_ctx = ctx;
}

void duet_log_set_sink(duet_log_sink_fn fn, void *ctx)
{
	logger.sink = fn;
	logger.sink_ctx = ctx;
}

int duet_log_level_parse(const char *name, enum duet_log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i].name) == 0) {
			*out = level_names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

const char *duet_log_level_name(enum duet_log_level level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (level_names[i].level == level)
			return level_names[i].name;
	}
	return "?";
}

int duet_log_format_parse(const char *name, enum duet_log_format *out)
{
	if (strcmp(name, "auto") == 0)
		*out = DUET_LOG_FMT_AUTO;
	else if (strcmp(name, "plain") == 0)
		*out = DUET_LOG_FMT_PLAIN;
	else if (strcmp(name, "journal") == 0)
		*out = DUET_LOG_FMT_JOURNAL;
	else
		return -EINVAL;
	return 0;
}

bool duet_log_enabled(enum duet_log_level level)
{
	return level <= logger.level;
}

/*
 * systemd sets JOURNAL_STREAM=<dev>:<ino> for a unit whose stderr is the
 * journal; it is only ours if stderr is still that very stream.
 */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) != 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static size_t format_prefix(char *buf, size_t len, enum duet_log_level level, const char *subsys)
{
	enum duet_log_format fmt = logger.format;
	int n;

	if (fmt == DUET_LOG_FMT_AUTO)
		fmt = stderr_is_journal() ? DUET_LOG_FMT_JOURNAL : DUET_LOG_FMT_PLAIN;

	if (fmt == DUET_LOG_FMT_JOURNAL) {
		n = snprintf(buf, len, "<%d>[%s] %s: ", (int)level, duet_log_level_name(level),
			     subsys);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] [%s] %s: ",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			     tm.tm_sec, ts.tv_nsec / 1000000, logger.ident ? logger.ident : "duet",
			     (int)getpid(), duet_log_level_name(level), subsys);
	}
	if (n < 0)
		return 0;
	return (size_t)n < len ? (size_t)n : len - 1;
}

void duet_vlog(enum duet_log_level level, const char *subsys, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	size_t n, prefix;
	int m;
	int saved_errno = errno;

	if (!duet_log_enabled(level))
		return;

	n = format_prefix(line, sizeof(line), level, subsys ? subsys : "-");
	prefix = n;
	m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (m < 0)
		m = 0;
	n += (size_t)m;
	if (n > sizeof(line) - 2) {
		n = sizeof(line) - 2;
		memcpy(line + n - 3, "...", 3);
	}
	/* One line per event: a message never breaks the line format. */
	for (size_t i = 0; i < n; i++) {
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	}
	line[n] = '\0';

	if (logger.tap && level <= DUET_LOG_WARN) {
		duet_log_tap_fn tap = logger.tap;

		logger.tap = NULL; /* a tap that logs does not recurse */
		tap(logger.tap_ctx, level, subsys ? subsys : "-", line + prefix);
		logger.tap = tap;
	}
	if (logger.sink) {
		logger.sink(logger.sink_ctx, level, line);
	} else {
		line[n] = '\n';
		ssize_t w = write(STDERR_FILENO, line, n + 1);
		(void)w;
	}
	errno = saved_errno;
}

void duet_log(enum duet_log_level level, const char *subsys, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	duet_vlog(level, subsys, fmt, ap);
	va_end(ap);
}

void duet_assert_fail(const char *expr, const char *file, int line, const char *func)
{
	duet_log(DUET_LOG_ALERT, "assert", "%s:%d: %s: invariant '%s' broken", file, line, func,
		 expr);
	abort();
}
