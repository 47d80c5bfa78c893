/* SPDX-License-Identifier: MIT */
/*
 * Logging: one line per event, "<time> [level] subsys: message".
 *
 * Levels are syslog priorities.  [alert] marks a broken invariant or a fault
 * the operator must see; integration tests fail on any [alert] line.  Output
 * goes to stderr, written with one write() per line so that lines from
 * several threads or processes never interleave.  Under systemd (stderr is
 * the journal stream) lines carry a "<N>" priority prefix instead of a
 * timestamp, which journald turns into the entry's priority.
 */
#ifndef DUET_LOG_H
#define DUET_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum duet_log_level {
	DUET_LOG_ALERT = 1,
	DUET_LOG_ERROR = 3,
	DUET_LOG_WARN = 4,
	DUET_LOG_INFO = 6,
	DUET_LOG_DEBUG = 7,
};

enum duet_log_format {
	DUET_LOG_FMT_AUTO,    /* journal when stderr is the journal stream, else plain */
	DUET_LOG_FMT_PLAIN,   /* timestamped lines */
	DUET_LOG_FMT_JOURNAL, /* "<N>" priority prefix, no timestamp */
};

/* Receives each formatted line (no trailing newline) instead of stderr. */
typedef void (*duet_log_sink_fn)(void *ctx, enum duet_log_level level, const char *line);

void duet_log_set_level(enum duet_log_level level);
enum duet_log_level duet_log_get_level(void);
void duet_log_set_format(enum duet_log_format fmt);
/* Name of the program shown in plain lines; the pointer is kept. */
void duet_log_set_ident(const char *ident);
/* NULL restores stderr. */
void duet_log_set_sink(duet_log_sink_fn fn, void *ctx);
/*
 * Also receives each warning, error and alert (the message without the
 * prefix), in addition to the normal output; NULL removes it.  Not
 * thread-safe: set it from the thread that logs (duetd's supervisor).
 */
typedef void (*duet_log_tap_fn)(void *ctx, enum duet_log_level level, const char *subsys,
				const char *msg);
void duet_log_set_tap(duet_log_tap_fn fn, void *ctx);

/* "alert", "error", "warn", "info", "debug" -> level; -EINVAL for others. */
int duet_log_level_parse(const char *name, enum duet_log_level *out);
const char *duet_log_level_name(enum duet_log_level level);
/* "auto", "plain", "journal" -> format; -EINVAL for others. */
int duet_log_format_parse(const char *name, enum duet_log_format *out);

bool duet_log_enabled(enum duet_log_level level);

void duet_log(enum duet_log_level level, const char *subsys, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void duet_vlog(enum duet_log_level level, const char *subsys, const char *fmt, va_list ap);

#define log_alert(sub, ...) duet_log(DUET_LOG_ALERT, sub, __VA_ARGS__)
#define log_error(sub, ...) duet_log(DUET_LOG_ERROR, sub, __VA_ARGS__)
#define log_warn(sub, ...) duet_log(DUET_LOG_WARN, sub, __VA_ARGS__)
#define log_info(sub, ...) duet_log(DUET_LOG_INFO, sub, __VA_ARGS__)
#define log_debug(sub, ...)                                         \
	do {                                                        \
		if (duet_log_enabled(DUET_LOG_DEBUG))               \
			duet_log(DUET_LOG_DEBUG, sub, __VA_ARGS__); \
	} while (0)

/*
 * The one assertion: for broken invariants only, never for bad input.
 * Logs an [alert] naming the place, then aborts.
 */
#define DUET_ASSERT(cond)                                                      \
	do {                                                                   \
		if (__builtin_expect(!(cond), 0))                              \
			duet_assert_fail(#cond, __FILE__, __LINE__, __func__); \
	} while (0)

void duet_assert_fail(const char *expr, const char *file, int line, const char *func)
	__attribute__((noreturn));

#endif /* DUET_LOG_H */
