// SPDX-License-Identifier: MIT
/* Error codes and logging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <signal.h>
#include <unistd.h>

#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/core/sdnotify.h"
#include "tests/unit/testutil.h"

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(duet_strerror(0), "success");
	assert_string_equal(duet_strerror(-ENOENT), strerror(ENOENT));
	assert_string_equal(duet_strerror(-DUET_ETRUNCATED), "file truncated");
	assert_string_equal(duet_strerror(-DUET_ECFGINVALID), "invalid configuration");
	assert_string_equal(duet_strerror(-DUET_E__END), "unknown error");
	assert_string_equal(duet_strerror(5), "unknown error");
	assert_string_equal(duet_errname(0), "OK");
	assert_string_equal(duet_errname(-ENOMEM), "ENOMEM");
	assert_string_equal(duet_errname(-DUET_EBADMAGIC), "BADMAGIC");
	assert_string_equal(duet_errname(-DUET_E__END), "EUNKNOWN");
}

/* Every project code has a distinct name and a message; all lie above errno. */
static void test_error_list(void **state)
{
	(void)state;
	assert_true(DUET_E_BASE > 4095);
	for (int e = DUET_E_BASE; e < DUET_E__END; e++) {
		assert_true(strlen(duet_strerror(-e)) > 5);
		assert_string_not_equal(duet_strerror(-e), "unknown error");
		for (int o = DUET_E_BASE; o < e; o++)
			assert_string_not_equal(duet_errname(-e), duet_errname(-o));
	}
}

static void test_log_levels(void **state)
{
	enum duet_log_level l;

	(void)state;
	assert_int_equal(duet_log_level_parse("debug", &l), 0);
	assert_int_equal(l, DUET_LOG_DEBUG);
	assert_int_equal(duet_log_level_parse("alert", &l), 0);
	assert_int_equal(l, DUET_LOG_ALERT);
	assert_int_equal(duet_log_level_parse("verbose", &l), -EINVAL);
	assert_string_equal(duet_log_level_name(DUET_LOG_WARN), "warn");

	tu_log_capture_start();
	duet_log_set_format(DUET_LOG_FMT_PLAIN);
	duet_log_set_level(DUET_LOG_WARN);
	log_info("test", "hidden %d", 1);
	log_debug("test", "hidden %d", 2);
	log_warn("test", "shown %d", 3);
	log_alert("test", "invariant %s", "broken");
	duet_log_set_level(DUET_LOG_INFO);
	assert_false(tu_log_contains("hidden"));
	assert_true(tu_log_contains("[warn] test: shown 3\n"));
	assert_true(tu_log_contains("[alert] test: invariant broken\n"));
	tu_log_capture_stop();
}

static void test_log_format(void **state)
{
	const char *text;

	(void)state;
	tu_log_capture_start();
	duet_log_set_format(DUET_LOG_FMT_PLAIN);
	duet_log_set_ident("duetd");
	log_error("gguf", "line one\nline two");
	text = tu_log_text();
	/* 2026-11-28T09:53:32.123Z duetd[pid] [error] gguf: ... */
	assert_true(strlen(text) > 24);
	assert_true(text[4] == '-' && text[10] == 'T' && text[23] == 'Z');
	assert_non_null(strstr(text, " duetd["));
	/* A message never breaks the one-line-per-event format. */
	assert_non_null(strstr(text, "[error] gguf: line one line two\n"));

	tu_log_capture_start();
	duet_log_set_format(DUET_LOG_FMT_JOURNAL);
	log_warn("cfg", "x");
	assert_string_equal(tu_log_text(), "<4>[warn] cfg: x\n");
	duet_log_set_format(DUET_LOG_FMT_PLAIN);
	duet_log_set_ident(NULL);
	tu_log_capture_stop();
}

/* A long message is cut, not overflowed, and stays one line. */
static void test_log_long(void **state)
{
	char big[5000];

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	tu_log_capture_start();
	log_info("test", "%s", big);
	const char *text = tu_log_text();
	assert_true(strlen(text) < 2100);
	assert_non_null(strstr(text, "...\n"));
	assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1);
	tu_log_capture_stop();
}

/* AUTO picks the journal format only when stderr is the stream systemd named. */
static void test_log_auto_journal(void **state)
{
	struct stat st;
	char js[64];

	(void)state;
	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	tu_log_capture_start();
	duet_log_set_format(DUET_LOG_FMT_AUTO);
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	log_info("sd", "to journal");
	assert_true(tu_log_contains("<6>[info] sd: to journal"));
	setenv("JOURNAL_STREAM", "1:2", 1);
	log_info("sd", "to tty");
	assert_false(tu_log_contains("<6>[info] sd: to tty"));
	assert_true(tu_log_contains("[info] sd: to tty"));
	unsetenv("JOURNAL_STREAM");
	duet_log_set_format(DUET_LOG_FMT_PLAIN);
	tu_log_capture_stop();
}

static void test_assert_aborts_with_alert(void **state)
{
	int fds[2];
	pid_t pid;
	char buf[512] = "";
	int status;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], STDERR_FILENO);
		duet_log_set_sink(NULL, NULL);
		duet_log_set_format(DUET_LOG_FMT_PLAIN);
		DUET_ASSERT(1 + 1 == 3);
		_exit(0);
	}
	close(fds[1]);
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	assert_true(n > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	assert_non_null(strstr(buf, "[alert] assert: "));
	assert_non_null(strstr(buf, "invariant '1 + 1 == 3' broken"));
}

/* Notifications reach the socket $NOTIFY_SOCKET names, path or abstract. */
static void test_sdnotify(void **state)
{
	char *dir = tu_mkdtemp();
	char path[100], buf[128];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;
	ssize_t n;

	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(sdn_notify("READY=1"), 0); /* not under systemd: nothing to do */

	snprintf(path, sizeof(path), "%s/notify", dir);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(sdn_notify("READY=1"), 0);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_int_equal(n, 7);
	buf[n] = '\0';
	assert_string_equal(buf, "READY=1");
	assert_int_equal(sdn_status("loading %d of %d", 1, 2), 0);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	assert_string_equal(buf, "STATUS=loading 1 of 2");
	close(fd);

	/* Abstract namespace: "@name". */
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "duet-test-%d", (int)getpid());
	socklen_t len =
		(socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
	snprintf(path, sizeof(path), "@duet-test-%d", (int)getpid());
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(sdn_notify("WATCHDOG=1"), 0);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_int_equal(n, 10);
	close(fd);

	setenv("NOTIFY_SOCKET", "relative/path", 1);
	assert_int_equal(sdn_notify("READY=1"), -EINVAL);
	unsetenv("NOTIFY_SOCKET");

	setenv("WATCHDOG_USEC", "30000000", 1);
	unsetenv("WATCHDOG_PID");
	assert_int_equal(sdn_watchdog_usec(), 30000000);
	setenv("WATCHDOG_PID", "1", 1); /* someone else's watchdog */
	assert_int_equal(sdn_watchdog_usec(), 0);
	unsetenv("WATCHDOG_PID");
	setenv("WATCHDOG_USEC", "soon", 1);
	assert_int_equal(sdn_watchdog_usec(), 0);
	unsetenv("WATCHDOG_USEC");
	tu_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_error_list),
		cmocka_unit_test(test_log_levels),
		cmocka_unit_test(test_log_format),
		cmocka_unit_test(test_log_long),
		cmocka_unit_test(test_log_auto_journal),
		cmocka_unit_test(test_assert_aborts_with_alert),
		cmocka_unit_test(test_sdnotify),
	};
	return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
