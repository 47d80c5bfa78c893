// SPDX-License-Identifier: MIT
/*
 * Tests of runtime/config: the shipped etc/duet.cfg, defaults, every kind of
 * rejected input (with its code and its "file:line: message"), the CPU list
 * and device parsers, cfg_print_doc() and cfg_print().  Run from the
 * repository root (etc/duet.cfg is found relative to it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/testutil.h"
#include "runtime/config/config.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SHIPPED "etc/duet.cfg"
#define MODEL "model = { path = \"m.gguf\"; };\n"
#define PART "partitions = ( { name = \"p0\"; } );\n"

/* Large structs live here, not on the test's stack. */
static struct duet_config cfg, cfg2;
static struct cfg_errors errs, errs2;

static int load(const char *text)
{
	return cfg_load_string(text, "t.cfg", "/base", &cfg, &errs);
}

static bool has_error(const char *needle)
{
	for (unsigned i = 0; i < errs.count; i++)
		if (strstr(errs.msg[i], needle))
			return true;
	return false;
}

static void dump_errors(void)
{
	for (unsigned i = 0; i < errs.count; i++)
		print_message("    error: %s\n", errs.msg[i]);
}

/* The load failed with code and some message contains needle. */
#define assert_load_error(text, code, needle)                                            \
	do {                                                                             \
		int rc_ = load(text);                                                    \
		if (rc_ != (code) || !has_error(needle)) {                               \
			dump_errors();                                                   \
			fail_msg("rc %d (%s), expected %d (%s) with \"%s\"", rc_,        \
				 duet_errname(rc_), (code), duet_errname(code), needle); \
		}                                                                        \
	} while (0)

#define assert_load_ok(text)                                                        \
	do {                                                                        \
		int rc_ = load(text);                                               \
		if (rc_ != 0 || errs.count != 0) {                                  \
			dump_errors();                                              \
			fail_msg("rc %d (%s), expected 0", rc_, duet_errname(rc_)); \
		}                                                                   \
	} while (0)

/* Text of cfg_print_doc() or cfg_print(); free() it. */
static char *print_to_string(const struct duet_config *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);

	assert_non_null(fp);
	if (c)
		cfg_print(fp, c);
	else
		cfg_print_doc(fp);
	assert_int_equal(fclose(fp), 0);
	return buf;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* --- the shipped file and the schema ------------------------------------------------------ */

static void test_shipped_config_loads(void **state)
{
	static struct duet_config expect;
	int rc;

	rc = cfg_load_file(SHIPPED, &cfg, &errs);
	if (rc != 0)
		dump_errors();
	assert_int_equal(rc, 0);
	assert_int_equal(errs.count, 0);
	assert_true(cfg.model.path[0] == '/');
	assert_true(ends_with(cfg.model.path, "build/models/duet-tiny.gguf"));

	/*
	 * Everything else is at the schema's defaults, with one prefill and one
	 * decode partition of one thread each (KV over transport "auto": shm here).
	 */
	assert_int_equal(cfg_load_string("model = { path = \"x\"; };\n"
					 "partitions = ( { name = \"prefill0\"; role = \"prefill\";"
					 " threads = 1; },\n"
					 "  { name = \"decode0\"; role = \"decode\"; threads = 1; } );\n",
					 "min", NULL, &expect, &errs2),
			 0);
	memcpy(expect.model.path, cfg.model.path, sizeof(expect.model.path));
	assert_int_equal(cfg.n_partitions, 2);
	assert_string_equal(cfg.partitions[0].name, "prefill0");
	assert_int_equal(cfg.partitions[0].role, CFG_ROLE_PREFILL);
	assert_string_equal(cfg.partitions[1].name, "decode0");
	assert_int_equal(cfg.partitions[1].role, CFG_ROLE_DECODE);
	assert_string_equal(cfg.partitions[0].device, "cpu");
	assert_string_equal(cfg.partitions[0].cpus, "");
	assert_int_equal(cfg.partitions[1].threads, 1);
	assert_string_equal(cfg_xfer_driver(&cfg), "shm");
	assert_memory_equal(&cfg, &expect, sizeof(cfg));
}

/* Every schema key is written out in etc/duet.cfg, so the file documents all of them. */
/* The shipped config's text (static; read once). */
static const char *shipped_text(void)
{
	static char buf[1 << 17];
	FILE *fp;
	size_t n;

	if (buf[0])
		return buf;
	fp = fopen(SHIPPED, "r");
	assert_non_null(fp);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static void test_shipped_config_has_every_key(void **state)
{
	config_t cf;
	config_setting_t *parts, *p0;

	config_init(&cf);
	if (!config_read_file(&cf, SHIPPED))
		fail_msg("%s:%d: %s", SHIPPED, config_error_line(&cf), config_error_text(&cf));
	parts = config_lookup(&cf, "partitions");
	assert_non_null(parts);
	p0 = config_setting_get_elem(parts, 0);
	assert_non_null(p0);
	for (size_t i = 0; i < cfg_schema_count(); i++) {
		const char *path = cfg_schema_path(i);
		const char *in_list = strstr(path, ".[].");
		config_setting_t *s;

		if (in_list && strncmp(path, "partitions.", 11) != 0) {
			/* A list that is empty by default: its entry's keys documented in comments. */
			char key[96];

			snprintf(key, sizeof(key), "%s = ", in_list + 4);
			if (!strstr(shipped_text(), key))
				fail_msg("schema key %s is not documented in %s", path, SHIPPED);
			continue;
		}
		s = in_list ? config_setting_lookup(p0, in_list + 4) : config_lookup(&cf, path);
		if (!s)
			fail_msg("schema key %s is not in %s", path, SHIPPED);
	}
	config_destroy(&cf);
}

static void test_schema_iterator(void **state)
{
	size_t n = cfg_schema_count();
	bool block_tokens = false, part_name = false;

	assert_true(n >= 40);
	assert_null(cfg_schema_path(n));
	for (size_t i = 0; i < n; i++) {
		const char *p = cfg_schema_path(i);

		assert_non_null(p);
		block_tokens |= strcmp(p, "kv.block_tokens") == 0;
		part_name |= strcmp(p, "partitions.[].name") == 0;
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(p, cfg_schema_path(j));
	}
	assert_true(block_tokens);
	assert_true(part_name);
}

/* The doc names every key, gives doc and type lines, and is itself a valid config. */
static void test_print_doc(void **state)
{
	char *doc = print_to_string(NULL);
	size_t comments = 0;

	for (size_t i = 0; i < cfg_schema_count(); i++) {
		const char *path = cfg_schema_path(i), *leaf = strrchr(path, '.');
		char needle[96];

		snprintf(needle, sizeof(needle), "%s =", leaf ? leaf + 1 : path);
		if (!strstr(doc, needle))
			fail_msg("doc does not set %s", path);
	}
	for (const char *p = doc; (p = strstr(p, "# ")); p++)
		comments++;
	assert_true(comments >= 2 * cfg_schema_count());
	assert_non_null(strstr(doc, "# integer, 1..1024; default 16\n    block_tokens = 16;"));
	assert_non_null(strstr(doc, "one of \"f16\", \"f32\"; default \"f16\""));
	assert_non_null(strstr(doc, "# integer, 0 or 16..1048576; default 0"));
	assert_non_null(strstr(doc, "# list of 1..64 groups; required"));

	assert_int_equal(cfg_load_string(doc, "doc", NULL, &cfg, &errs), 0);
	assert_int_equal(cfg_load_file(SHIPPED, &cfg2, &errs2), 0);
	memcpy(cfg.model.path, cfg2.model.path, sizeof(cfg.model.path));
	assert_memory_equal(&cfg, &cfg2, sizeof(cfg));
	free(doc);
}

/* --- values and defaults ------------------------------------------------------------------ */

static void test_minimal_gets_defaults(void **state)
{
	const struct cfg_partition *p = &cfg.partitions[0];

	assert_load_ok(MODEL PART);
	assert_string_equal(cfg.name, "duet");
	assert_string_equal(cfg.model.path, "/base/m.gguf");
	assert_string_equal(cfg.model.served_name, "");
	assert_int_equal(cfg.model.context, 0);
	assert_int_equal(cfg.kv.block_tokens, 16);
	assert_int_equal(cfg.kv.memory_mb, 256);
	assert_int_equal(cfg.kv.blocks, 0);
	assert_int_equal(cfg.kv.dtype, CFG_KV_F16);
	assert_false(cfg.kv.hugepages);
	assert_true(cfg.kv.prefix_cache);
	assert_int_equal(cfg.kv.lease_timeout_ms, 30000);
	assert_int_equal(cfg.n_partitions, 1);
	assert_string_equal(p->name, "p0");
	assert_int_equal(p->role, CFG_ROLE_MIXED);
	assert_string_equal(p->device, "cpu");
	assert_int_equal(p->device_kind, CFG_DEVICE_CPU);
	assert_int_equal(p->n_cpus, 0);
	assert_int_equal(p->threads, 0);
	assert_int_equal(p->numa_node, -1);
	assert_int_equal(p->max_batch_tokens, 2048);
	assert_int_equal(p->max_seqs, 64);
	assert_int_equal(cfg.transport.driver, CFG_XPORT_AUTO);
	assert_string_equal(cfg.transport.tcp_listen, "");
	assert_false(cfg.transport.encrypt);
	assert_true(cfg.transport.checksum);
	assert_string_equal(cfg.api.socket_dir, "");
	assert_string_equal(cfg.api.group, "duet");
	assert_string_equal(cfg.api.admin_group, "duet-admin");
	assert_int_equal(cfg.api.max_body_kb, 1024);
	assert_int_equal(cfg.api.max_queue, 256);
	assert_int_equal(cfg.api.queue_timeout_ms, 30000);
	assert_int_equal(cfg.api.default_max_tokens, 256);
	assert_int_equal(cfg.api.max_attempts, 3);
	assert_int_equal(cfg.api.breaker_failures, 3);
	assert_int_equal(cfg.api.breaker_cooldown_ms, 5000);
	assert_int_equal(cfg.slo.ttft_ms, 1000);
	assert_int_equal(cfg.slo.tpot_ms, 100);
	assert_true(cfg.slo.attainment == 0.9);
	assert_int_equal(cfg.log.level, DUET_LOG_INFO);
	assert_int_equal(cfg.log.format, DUET_LOG_FMT_AUTO);
}

static const char every_key[] =
	"name = \"edge-1\";\n"
	"model = { path = \"/m/x.gguf\"; served_name = \"org/x-7b\"; context = 4096;\n"
	"          chat_template = \"chatml\"; };\n"
	"kv = { block_tokens = 32; memory_mb = 512L; blocks = 100; dtype = \"f32\";\n"
	"       hugepages = true; prefix_cache = false; lease_timeout_ms = 250; };\n"
	"partitions = (\n"
	"  { name = \"pre\"; role = \"prefill\"; device = \"cuda:3\"; cpus = \"0-3,8\";\n"
	"    threads = 4; numa_node = 1; max_batch_tokens = 8192; max_seqs = 8; },\n"
	"  { name = \"dec_1\"; role = \"decode\"; cpus = \"1023\"; }\n"
	");\n"
	"transport = { driver = \"cuda-ipc\"; tcp_listen = \"[::1]:7000\";\n"
	"              psk_file = \"keys/a\\\"b\\\\c\\td\"; encrypt = true; checksum = false; };\n"
	"api = { socket_dir = \"run\"; group = \"\"; admin_group = \"ops.team\"; max_body_kb = 1;\n"
	"        max_queue = 1000000; queue_timeout_ms = 100; default_max_tokens = 17;\n"
	"        max_attempts = 10; breaker_failures = 1000; breaker_cooldown_ms = 3600000; };\n"
	"slo = { ttft_ms = 250; tpot_ms = 20; attainment = 1; };\n"
	"log = { level = \"debug\"; format = \"journal\"; };\n";

static void test_every_key_set(void **state)
{
	const struct cfg_partition *p = &cfg.partitions[0];

	assert_load_ok(every_key);
	assert_string_equal(cfg.name, "edge-1");
	assert_string_equal(cfg.model.path, "/m/x.gguf");
	assert_string_equal(cfg.model.served_name, "org/x-7b");
	assert_int_equal(cfg.model.context, 4096);
	assert_string_equal(cfg.model.chat_template, "chatml");
	assert_int_equal(cfg.kv.block_tokens, 32);
	assert_int_equal(cfg.kv.memory_mb, 512);
	assert_int_equal(cfg.kv.blocks, 100);
	assert_int_equal(cfg.kv.dtype, CFG_KV_F32);
	assert_true(cfg.kv.hugepages);
	assert_false(cfg.kv.prefix_cache);
	assert_int_equal(cfg.kv.lease_timeout_ms, 250);
	assert_int_equal(cfg.n_partitions, 2);
	assert_int_equal(p->role, CFG_ROLE_PREFILL);
	assert_int_equal(p->device_kind, CFG_DEVICE_CUDA);
	assert_int_equal(p->device_index, 3);
	assert_int_equal(p->n_cpus, 5);
	assert_true(cfg_cpuset_has(&p->cpuset, 3));
	assert_true(cfg_cpuset_has(&p->cpuset, 8));
	assert_false(cfg_cpuset_has(&p->cpuset, 4));
	assert_int_equal(p->threads, 4);
	assert_int_equal(p->numa_node, 1);
	assert_int_equal(p->max_batch_tokens, 8192);
	assert_int_equal(p->max_seqs, 8);
	assert_int_equal(cfg.partitions[1].role, CFG_ROLE_DECODE);
	assert_int_equal(cfg.partitions[1].n_cpus, 1);
	assert_true(cfg_cpuset_has(&cfg.partitions[1].cpuset, 1023));
	assert_int_equal(cfg.partitions[1].max_seqs, 64);
	assert_int_equal(cfg.transport.driver, CFG_XPORT_CUDA_IPC);
	assert_string_equal(cfg.transport.tcp_listen, "[::1]:7000");
	assert_string_equal(cfg.transport.psk_file, "/base/keys/a\"b\\c\td");
	assert_true(cfg.transport.encrypt);
	assert_false(cfg.transport.checksum);
	assert_string_equal(cfg.api.socket_dir, "/base/run");
	assert_string_equal(cfg.api.group, "");
	assert_string_equal(cfg.api.admin_group, "ops.team");
	assert_int_equal(cfg.api.max_body_kb, 1);
	assert_int_equal(cfg.api.max_queue, 1000000);
	assert_int_equal(cfg.api.queue_timeout_ms, 100);
	assert_int_equal(cfg.api.default_max_tokens, 17);
	assert_int_equal(cfg.api.max_attempts, 10);
	assert_int_equal(cfg.api.breaker_failures, 1000);
	assert_int_equal(cfg.api.breaker_cooldown_ms, 3600000);
	assert_int_equal(cfg.slo.ttft_ms, 250);
	assert_int_equal(cfg.slo.tpot_ms, 20);
	assert_true(cfg.slo.attainment == 1.0);
	assert_int_equal(cfg.log.level, DUET_LOG_DEBUG);
	assert_int_equal(cfg.log.format, DUET_LOG_FMT_JOURNAL);
}

/* cfg_print() writes a config that loads back to the same struct, byte for byte. */
static void test_print_roundtrip(void **state)
{
	char *text;

	assert_load_ok(every_key);
	cfg.slo.attainment = 0.1 + 0.8; /* not exactly 0.9: needs all 17 digits */
	text = print_to_string(&cfg);
	if (cfg_load_string(text, "printed", "/elsewhere", &cfg2, &errs2) != 0) {
		cfg_errors_print(stderr, &errs2);
		fail_msg("printed config does not load:\n%s", text);
	}
	assert_memory_equal(&cfg, &cfg2, sizeof(cfg));
	free(text);
}

/* The log section accepts exactly the names runtime/core/log parses, with its values. */
static void test_log_names_match_log_module(void **state)
{
	static const char *const levels[] = { "alert", "error", "warn", "info", "debug" };
	static const char *const formats[] = { "auto", "plain", "journal" };
	char text[256];

	for (size_t i = 0; i < 5; i++) {
		enum duet_log_level want;

		snprintf(text, sizeof(text), MODEL PART "log = { level = \"%s\"; };", levels[i]);
		assert_load_ok(text);
		assert_int_equal(duet_log_level_parse(levels[i], &want), 0);
		assert_int_equal(cfg.log.level, want);
	}
	for (size_t i = 0; i < 3; i++) {
		enum duet_log_format want;

		snprintf(text, sizeof(text), MODEL PART "log = { format = \"%s\"; };", formats[i]);
		assert_load_ok(text);
		assert_int_equal(duet_log_format_parse(formats[i], &want), 0);
		assert_int_equal(cfg.log.format, want);
	}
}

static void test_relative_paths_use_config_dir(void **state)
{
	static const char text[] = "model = { path = \"models/m.gguf\"; };\n" PART
				   "transport = { psk_file = \"/abs/key\"; };\n"
				   "api = { socket_dir = \"run\"; };\n";
	char *dir = tu_mkdtemp(), real[PATH_MAX], file[PATH_MAX + 16], want[PATH_MAX + 32];

	assert_non_null(dir);
	assert_non_null(realpath(dir, real));
	snprintf(file, sizeof(file), "%s/duet.cfg", dir);
	assert_int_equal(tu_write_file(file, text, strlen(text)), 0);
	assert_int_equal(cfg_load_file(file, &cfg, &errs), 0);
	snprintf(want, sizeof(want), "%s/models/m.gguf", real);
	assert_string_equal(cfg.model.path, want);
	assert_string_equal(cfg.transport.psk_file, "/abs/key");
	if (strlen(real) + 4 < CFG_SOCKET_DIR_MAX) {
		snprintf(want, sizeof(want), "%s/run", real);
		assert_string_equal(cfg.api.socket_dir, want);
	}
	tu_rmtree(dir);

	/* Without a base directory, relative paths stay relative. */
	assert_int_equal(cfg_load_string(text, "t.cfg", NULL, &cfg, &errs), 0);
	assert_string_equal(cfg.model.path, "models/m.gguf");
}

/* --- rejected input ----------------------------------------------------------------------- */

static void test_syntax_error_line(void **state)
{
	/* A comment on the last line, without a newline, is fine. */
	assert_load_ok(MODEL PART "# last line");
	assert_load_error("name = \"x\";\n\nkv = { block_tokens = ; };\n", -DUET_ECFGSYNTAX,
			  "t.cfg:3: syntax error");
	assert_int_equal(errs.count, 1);
	assert_load_error(MODEL "kv = { a = 1; a = 2; };\n", -DUET_ECFGSYNTAX,
			  "t.cfg:2: duplicate setting name");
}

/*
 * libconfig 1.5 leaks a string token it meets where its grammar takes none;
 * such input is refused before libconfig sees it (the sanitizer build checks
 * that nothing leaks).
 */
static void test_syntax_errors_found_before_libconfig(void **state)
{
	assert_load_error("name = true \"x\";\n", -DUET_ECFGSYNTAX,
			  "t.cfg:1: syntax error (unexpected string)");
	assert_load_error(MODEL "\"model\" = 1;\n", -DUET_ECFGSYNTAX,
			  "t.cfg:2: syntax error (unexpected string)");
	assert_load_error(MODEL "kv = { \"x\" };\n", -DUET_ECFGSYNTAX, "t.cfg:2: syntax error");
	assert_load_error(MODEL "partitions = ( { name = \"a\"; }\n \"b\" );\n", -DUET_ECFGSYNTAX,
			  "t.cfg:3: syntax error (unexpected string)");
	assert_load_error(MODEL "name = \"a\", \"b\" = 1;\n", -DUET_ECFGSYNTAX,
			  "t.cfg:2: syntax error (unexpected string)");
	assert_load_error(MODEL "kv = { };\n}\n", -DUET_ECFGSYNTAX,
			  "t.cfg:3: syntax error (unbalanced '}')");
	assert_load_error(MODEL "kv = ( ];\n", -DUET_ECFGSYNTAX,
			  "t.cfg:2: syntax error (unbalanced ']')");
	assert_load_error(
		"a = ((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))));\n",
		-DUET_ECFGSYNTAX, "t.cfg:1: groups, lists and arrays nested too deeply");
	assert_load_error(MODEL "name =.\"b\";\n", -DUET_ECFGSYNTAX,
			  "t.cfg:2: syntax error (unexpected string)"); /* "." is a float */
	/* An earlier error that libconfig finds is the one reported. */
	assert_load_error("kv = = 1;\nname = 1 \"x\";\n", -DUET_ECFGSYNTAX,
			  "t.cfg:1: syntax error");
	assert_int_equal(errs.count, 1);
	/* Strings where libconfig takes them are fine, concatenation included. */
	assert_load_ok("model = { path = \"m\" \"/x\"; };\n"
		       "partitions = ( { name = \"a\"; cpus = \"0\", }, { name = \"b\", } );\n"
		       "name : \"n\";\n");
	assert_string_equal(cfg.model.path, "/base/m/x");
}

static void test_unknown_top_level_key(void **state)
{
	assert_load_error(MODEL PART "colour = 1;\n", -DUET_ECFGKEY,
			  "t.cfg:3: unknown key 'colour'");
	assert_int_equal(errs.count, 1);
	/* A key of a section written at the top level points at its section. */
	assert_load_error(MODEL PART "block_tokens = 16;\n", -DUET_ECFGKEY,
			  "t.cfg:3: unknown key 'block_tokens' (did you mean 'kv.block_tokens'?)");
	assert_load_error(MODEL PART "unrelated = { a = 1; };\n", -DUET_ECFGKEY,
			  "unknown key 'unrelated'");
}

static void test_unknown_key_in_section(void **state)
{
	assert_load_error(
		MODEL PART "kv = {\n  blok_tokens = 16;\n};\n", -DUET_ECFGKEY,
		"t.cfg:4: unknown key 'kv.blok_tokens' (did you mean 'kv.block_tokens'?)");
	assert_load_error(MODEL PART "slo = { zzz = 1; };\n", -DUET_ECFGKEY,
			  "t.cfg:3: unknown key 'slo.zzz'");
	assert_false(has_error("did you mean"));
}

static void test_unknown_key_in_partition(void **state)
{
	assert_load_error(
		MODEL "partitions = (\n { name = \"a\"; },\n { name = \"b\"; nmae = \"c\"; }\n);\n",
		-DUET_ECFGKEY,
		"t.cfg:4: unknown key 'partitions[1].nmae' (did you mean 'partitions[1].name'?)");
}

static void test_wrong_type_int(void **state)
{
	assert_load_error(MODEL PART "kv = { block_tokens = \"16\"; };", -DUET_ECFGTYPE,
			  "t.cfg:3: kv.block_tokens: expected an integer, got a string");
	assert_load_error(MODEL PART "kv = { block_tokens = 16.0; };", -DUET_ECFGTYPE,
			  "kv.block_tokens: expected an integer, got a float");
	assert_load_error(MODEL PART "kv = { block_tokens = [16]; };", -DUET_ECFGTYPE,
			  "kv.block_tokens: expected an integer, got an array");
}

static void test_wrong_type_string(void **state)
{
	assert_load_error("model = { path = 5; };\n" PART, -DUET_ECFGTYPE,
			  "t.cfg:1: model.path: expected a string, got an integer");
	/* Present with the wrong type is not also "missing". */
	assert_int_equal(errs.count, 1);
	assert_load_error(MODEL PART "kv = { dtype = 16; };", -DUET_ECFGTYPE,
			  "kv.dtype: expected a string, got an integer");
}

static void test_wrong_type_bool(void **state)
{
	assert_load_error(MODEL PART "kv = { hugepages = 1; };", -DUET_ECFGTYPE,
			  "t.cfg:3: kv.hugepages: expected a boolean, got an integer");
	assert_load_error(MODEL PART "kv = { hugepages = \"yes\"; };", -DUET_ECFGTYPE,
			  "kv.hugepages: expected a boolean, got a string");
	assert_load_ok(MODEL PART "kv = { hugepages = TRUE; };");
	assert_true(cfg.kv.hugepages);
}

static void test_wrong_type_float(void **state)
{
	assert_load_error(MODEL PART "slo = { attainment = \"high\"; };", -DUET_ECFGTYPE,
			  "t.cfg:3: slo.attainment: expected a number, got a string");
	assert_load_ok(MODEL PART "slo = { attainment = 1; };");
	assert_true(cfg.slo.attainment == 1.0);
	assert_load_ok(MODEL PART "slo = { attainment = 1L; };");
}

static void test_wrong_type_group(void **state)
{
	assert_load_error(MODEL PART "kv = 5;", -DUET_ECFGTYPE,
			  "t.cfg:3: kv: expected a group { ... }, got an integer");
	assert_load_error("model = \"m.gguf\";\n" PART, -DUET_ECFGTYPE,
			  "t.cfg:1: model: expected a group { ... }, got a string");
	assert_int_equal(errs.count, 1); /* and no "model.path: required key missing" */
	assert_load_error(MODEL PART "log = ( { level = \"info\"; } );", -DUET_ECFGTYPE,
			  "log: expected a group { ... }, got a list");
}

static void test_wrong_type_list(void **state)
{
	assert_load_error(MODEL "partitions = { name = \"a\"; };\n", -DUET_ECFGTYPE,
			  "t.cfg:2: partitions: expected a list ( { ... }, ... ), got a group");
	assert_load_error(MODEL "partitions = [ 1, 2 ];\n", -DUET_ECFGTYPE,
			  "partitions: expected a list ( { ... }, ... ), got an array");
	assert_load_error(MODEL "partitions = ( { name = \"a\"; },\n 5 );\n", -DUET_ECFGTYPE,
			  "t.cfg:3: partitions[1]: expected a group, got an integer");
}

static void test_out_of_range(void **state)
{
	assert_load_error(MODEL PART "kv = { block_tokens = 3000; };", -DUET_ECFGRANGE,
			  "t.cfg:3: kv.block_tokens: 3000 out of range [1, 1024]");
	assert_load_error(MODEL PART "kv = { block_tokens = 2048; };", -DUET_ECFGRANGE,
			  "kv.block_tokens: 2048 out of range [1, 1024]");
	assert_load_error(MODEL PART "kv = { block_tokens = 0; };", -DUET_ECFGRANGE,
			  "kv.block_tokens: 0 out of range [1, 1024]");
	assert_load_error(MODEL PART "kv = { block_tokens = -16; };", -DUET_ECFGRANGE,
			  "kv.block_tokens: -16 out of range [1, 1024]");
	assert_load_error(MODEL "partitions = ( { name = \"a\"; numa_node = -2; } );",
			  -DUET_ECFGRANGE, "partitions[0].numa_node: -2 out of range [-1, 63]");
	assert_load_error(MODEL PART "api = { max_queue = 1000001; };", -DUET_ECFGRANGE,
			  "api.max_queue: 1000001 out of range [1, 1000000]");
	assert_load_error(MODEL PART "slo = { attainment = 0.4; };", -DUET_ECFGRANGE,
			  "slo.attainment: 0.4 out of range [0.5, 1]");
	assert_load_error(MODEL PART "slo = { attainment = 1.5; };", -DUET_ECFGRANGE,
			  "slo.attainment: 1.5 out of range [0.5, 1]");
	assert_load_error(MODEL PART "slo = { attainment = 1e999; };", -DUET_ECFGRANGE,
			  "slo.attainment: inf out of range");
	/* "0 = automatic" keys: 0 is fine, values between 0 and the minimum are not. */
	assert_load_ok("model = { path = \"m\"; context = 0; };" PART);
	assert_load_error("model = { path = \"m\"; context = 8; };" PART, -DUET_ECFGRANGE,
			  "model.context: 8 out of range [16, 1048576] (or 0)");
}

/* The router and transfer keys: both ends of each range, one past each, types. */
static void test_router_keys(void **state)
{
	static const struct {
		const char *key;
		long long min, max;
	} keys[] = {
		{ "queue_timeout_ms", 100, 3600000 },
		{ "max_attempts", 1, 10 },
		{ "breaker_failures", 1, 1000 },
		{ "breaker_cooldown_ms", 100, 3600000 },
	};
	char text[256], msg[128];

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		long long edge[2] = { keys[i].min, keys[i].max };
		long long out[2] = { keys[i].min - 1, keys[i].max + 1 };

		for (int e = 0; e < 2; e++) {
			snprintf(text, sizeof(text), MODEL PART "api = {\n %s = %lld; };",
				 keys[i].key, edge[e]);
			assert_load_ok(text);
			snprintf(text, sizeof(text), MODEL PART "api = {\n %s = %lld; };",
				 keys[i].key, out[e]);
			snprintf(msg, sizeof(msg),
				 "t.cfg:4: api.%s: %lld out of range [%lld, %lld]", keys[i].key,
				 out[e], keys[i].min, keys[i].max);
			assert_load_error(text, -DUET_ECFGRANGE, msg);
		}
		snprintf(text, sizeof(text), MODEL PART "api = { %s = \"5\"; };", keys[i].key);
		snprintf(msg, sizeof(msg), "t.cfg:3: api.%s: expected an integer, got a string",
			 keys[i].key);
		assert_load_error(text, -DUET_ECFGTYPE, msg);
	}
	assert_load_ok(MODEL PART "api = { queue_timeout_ms = 250; max_attempts = 1;\n"
				  "        breaker_failures = 7; breaker_cooldown_ms = 60000; };");
	assert_int_equal(cfg.api.queue_timeout_ms, 250);
	assert_int_equal(cfg.api.max_attempts, 1);
	assert_int_equal(cfg.api.breaker_failures, 7);
	assert_int_equal(cfg.api.breaker_cooldown_ms, 60000);

	assert_load_ok(MODEL PART "transport = { checksum = false; };");
	assert_false(cfg.transport.checksum);
	assert_load_ok(MODEL PART "transport = { checksum = true; };");
	assert_true(cfg.transport.checksum);
	assert_load_error(MODEL PART "transport = {\n checksum = 0; };", -DUET_ECFGTYPE,
			  "t.cfg:4: transport.checksum: expected a boolean, got an integer");
	assert_load_error(MODEL PART "transport = { check_sum = true; };", -DUET_ECFGKEY,
			  "unknown key 'transport.check_sum' (did you mean 'transport.checksum'?)");
	assert_load_error(MODEL PART "api = { max_attempt = 2; };", -DUET_ECFGKEY,
			  "unknown key 'api.max_attempt' (did you mean 'api.max_attempts'?)");
}

static void test_integer_literals(void **state)
{
	assert_load_ok(MODEL PART "kv = { memory_mb = 0x200; blocks = 100L; };");
	assert_int_equal(cfg.kv.memory_mb, 512);
	assert_int_equal(cfg.kv.blocks, 100);
	assert_load_error(MODEL PART "kv = { memory_mb = 99999999999L; };", -DUET_ECFGRANGE,
			  "kv.memory_mb: 99999999999 out of range [1, 16777216]");
	/* libconfig 1.5 would wrap 4294967552 to 256 and let it pass. */
	assert_load_error(MODEL PART "kv = {\n memory_mb = 4294967552; };", -DUET_ECFGRANGE,
			  "t.cfg:4: integer 4294967552 does not fit in 32 bits");
	assert_load_error(MODEL PART "kv = { memory_mb = 0x100000100; };", -DUET_ECFGRANGE,
			  "integer 0x100000100 does not fit in 32 bits");
	assert_load_error(MODEL PART "kv = { blocks = 99999999999999999999L; };", -DUET_ECFGRANGE,
			  "does not fit in 64 bits");
	/* "3000000000e" is the integer 3000000000 and the name "e" to libconfig. */
	assert_load_error(MODEL PART "kv = { memory_mb = 3000000000e = 1; };", -DUET_ECFGRANGE,
			  "integer 3000000000 does not fit in 32 bits");
	assert_load_ok(MODEL PART "kv = { memory_mb = 256; }; # 99999999999999999999\n"
				  "name = \"n-99999999999\"; /* 4294967552 */ // 4294967552\n");
}

static void test_bad_enum_lists_allowed_values(void **state)
{
	assert_load_error(MODEL PART "kv = { dtype = \"f8\"; };", -DUET_ECFGINVALID,
			  "t.cfg:3: kv.dtype: invalid value \"f8\" (allowed: \"f16\", \"f32\")");
	assert_load_error(
		MODEL "partitions = ( { name = \"a\"; role = \"both\"; } );", -DUET_ECFGINVALID,
		"partitions[0].role: invalid value \"both\" (allowed: \"mixed\", \"prefill\", \"decode\")");
	assert_load_error(MODEL PART "log = { level = \"verbose\"; };", -DUET_ECFGINVALID,
			  "(allowed: \"alert\", \"error\", \"warn\", \"info\", \"debug\")");
	assert_load_error(MODEL PART "transport = { driver = \"rdma\"; };", -DUET_ECFGINVALID,
			  "\"auto\", \"shm\", \"tcp\", \"verbs\", \"cuda-ipc\", \"nccl\")");
}

static void test_bad_cpu_lists(void **state)
{
	static const struct {
		const char *cpus, *why;
	} cases[] = {
		{ "3-1", "invalid value \"3-1\": reversed range 3-1" },
		{ "0,,1", "empty entry at offset 2" },
		{ "a", "expected a CPU number at offset 0" },
		{ "5000", "CPU 5000 out of range [0, 1023]" },
		{ "0-1024", "CPU 1024 out of range [0, 1023]" },
		{ "1,", "empty entry at offset 2" },
		{ ",1", "empty entry at offset 0" },
		{ "0-", "empty entry at offset 2" },
		{ "0-3x", "unexpected 'x' at offset 3" },
		{ " 1", "expected a CPU number at offset 0" },
		{ "1-2-3", "unexpected '-' at offset 3" },
		{ "99999999999999999999", "CPU 999999999999... out of range" },
	};
	char text[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text),
			 MODEL "partitions = ( { name = \"a\"; cpus = \"%s\"; } );", cases[i].cpus);
		assert_load_error(text, -DUET_ECFGINVALID, cases[i].why);
		assert_true(has_error("t.cfg:2: partitions[0].cpus: invalid value"));
	}
}

static void test_cpulist_parse(void **state)
{
	struct cfg_cpuset set;
	unsigned n = 99;
	char why[128];

	assert_int_equal(cfg_cpulist_parse("0-3,8,10-11", &set, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 7);
	for (unsigned c = 0; c < 16; c++)
		assert_int_equal(cfg_cpuset_has(&set, c), c <= 3 || c == 8 || c == 10 || c == 11);
	assert_int_equal(cfg_cpulist_parse("", &set, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 0);
	assert_int_equal(cfg_cpulist_parse("0-1023", &set, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 1024);
	assert_false(cfg_cpuset_has(&set, 1024));
	assert_int_equal(cfg_cpulist_parse("5,5,4-6", &set, &n, why, sizeof(why)), 0);
	assert_int_equal(n, 3);
	assert_int_equal(cfg_cpulist_parse("7-7", &set, NULL, why, sizeof(why)), 0);
	assert_true(cfg_cpuset_has(&set, 7));
	assert_int_equal(cfg_cpulist_parse("3-1", &set, &n, why, sizeof(why)), -DUET_ECFGINVALID);
	assert_string_equal(why, "reversed range 3-1");
	assert_int_equal(cfg_cpulist_parse("1;2", &set, &n, why, sizeof(why)), -DUET_ECFGINVALID);
	assert_string_equal(why, "unexpected ';' at offset 1");
}

static void test_device(void **state)
{
	static const char *const bad[] = { "gpu0",   "cuda:",	"cuda:64", "cuda:01", "cuda:1a",
					   "CUDA:0", "cuda:-1", "cpu0",	   "",	      "cuda:100" };
	enum cfg_device_kind kind;
	int index;

	assert_int_equal(cfg_device_parse("cpu", &kind, &index), 0);
	assert_int_equal(kind, CFG_DEVICE_CPU);
	assert_int_equal(cfg_device_parse("cuda:0", &kind, &index), 0);
	assert_int_equal(kind, CFG_DEVICE_CUDA);
	assert_int_equal(index, 0);
	assert_int_equal(cfg_device_parse("cuda:63", &kind, &index), 0);
	assert_int_equal(index, 63);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (cfg_device_parse(bad[i], &kind, &index) != -DUET_ECFGINVALID)
			fail_msg("device \"%s\" accepted", bad[i]);

	assert_load_error(
		MODEL "partitions = ( { name = \"a\"; device = \"gpu0\"; } );", -DUET_ECFGINVALID,
		"t.cfg:2: partitions[0].device: invalid value \"gpu0\": expected \"cpu\" or \"cuda:N\" with N in 0..63");
}

static void test_duplicate_partition_names(void **state)
{
	assert_load_error(
		MODEL "partitions = (\n  { name = \"a\"; },\n  { name = \"b\"; },\n"
		      "  { name = \"a\"; }\n);\n",
		-DUET_ECFGINVALID,
		"t.cfg:5: partitions[2].name: duplicate partition name \"a\" (also partitions[0])");
	assert_int_equal(errs.count, 1);
}

static void test_bad_partition_names(void **state)
{
	assert_load_error(
		MODEL "partitions = ( { name = \"a b\"; } );", -DUET_ECFGINVALID,
		"partitions[0].name: invalid value \"a b\": only letters, digits, '_' and '-' are allowed");
	assert_load_error(MODEL "partitions = ( { name = \"x/y\"; } );", -DUET_ECFGINVALID,
			  "invalid value \"x/y\"");
	assert_load_error(MODEL "partitions = ( { name = \"\"; } );", -DUET_ECFGRANGE,
			  "partitions[0].name: must not be empty");
	assert_load_error(MODEL
			  "partitions = ( { name = \"abcdefghijklmnopqrstuvwxyz012345\"; } );",
			  -DUET_ECFGRANGE, "partitions[0].name: too long (32 bytes, at most 31)");
	assert_load_ok(MODEL "partitions = ( { name = \"abcdefghijklmnopqrstuvwxyz01234\"; } );");
	assert_load_error(MODEL "partitions = ( { name = \"a\\x01\"; } );", -DUET_ECFGINVALID,
			  "invalid value \"a\\x01\"");
}

static void test_no_partitions(void **state)
{
	assert_load_error(MODEL "partitions = ();\n", -DUET_ECFGRANGE,
			  "t.cfg:2: partitions: 0 entries, out of range [1, 64]");
	assert_load_error(MODEL, -DUET_ECFGMISSING, "t.cfg: partitions: required key missing");
}

static void test_too_many_partitions(void **state)
{
	size_t cap = 128 * 70, o;
	char *text = malloc(cap);

	assert_non_null(text);
	o = (size_t)snprintf(text, cap, MODEL "partitions = (\n");
	for (int i = 0; i < 65; i++)
		o += (size_t)snprintf(text + o, cap - o, "  { name = \"p%d\"; }%s\n", i,
				      i < 64 ? "," : "");
	snprintf(text + o, cap - o, ");\n");
	assert_load_error(text, -DUET_ECFGRANGE,
			  "t.cfg:2: partitions: 65 entries, out of range [1, 64]");
	assert_int_equal(errs.count, 1);

	/* 64 is the most. */
	strcpy(strstr(text, ",\n  { name = \"p64\"; }"), "\n);\n");
	assert_load_ok(text);
	assert_int_equal(cfg.n_partitions, 64);
	assert_string_equal(cfg.partitions[63].name, "p63");
	free(text);
}

static void test_missing_model_path(void **state)
{
	assert_load_error(PART "model = {\n  served_name = \"x\";\n};\n", -DUET_ECFGMISSING,
			  "t.cfg:2: model.path: required key missing");
	assert_int_equal(errs.count, 1);
	assert_load_error(PART, -DUET_ECFGMISSING, "t.cfg: model.path: required key missing");
	assert_int_equal(errs.count, 1);
	assert_load_error("model = { path = \"\"; };\n" PART, -DUET_ECFGRANGE,
			  "t.cfg:1: model.path: must not be empty");
	assert_load_error(MODEL "partitions = ( { role = \"mixed\"; } );", -DUET_ECFGMISSING,
			  "t.cfg:2: partitions[0].name: required key missing");
}

static void test_block_tokens_power_of_two(void **state)
{
	assert_load_error(MODEL PART "kv = { block_tokens = 24; };", -DUET_ECFGINVALID,
			  "t.cfg:3: kv.block_tokens: invalid value 24: not a power of two");
	assert_load_ok(MODEL PART "kv = { block_tokens = 1; };");
	assert_load_ok(MODEL PART "kv = { block_tokens = 1024; };");
	assert_int_equal(cfg.kv.block_tokens, 1024);
}

static void test_role_mix(void **state)
{
	assert_load_error(
		MODEL "partitions = ( { name = \"a\"; role = \"prefill\"; } );", -DUET_ECFGINVALID,
		"t.cfg:2: partitions: no partition can decode (role \"decode\" or \"mixed\")");
	assert_load_error(MODEL "partitions = ( { name = \"a\"; role = \"decode\"; } );",
			  -DUET_ECFGINVALID, "partitions: no partition can prefill");
	/* several partitions, none of one kind: one message, at the line of "partitions" */
	assert_load_error(
		MODEL "partitions =\n ( { name = \"a\"; role = \"decode\"; },\n"
		      "   { name = \"b\"; role = \"decode\"; } );",
		-DUET_ECFGINVALID,
		"t.cfg:2: partitions: no partition can prefill (role \"prefill\" or \"mixed\")");
	assert_int_equal(errs.count, 1);
	assert_load_error(MODEL "partitions = ( { name = \"a\"; role = \"prefill\"; },\n"
				"               { name = \"b\"; role = \"prefill\"; } );",
			  -DUET_ECFGINVALID, "t.cfg:2: partitions: no partition can decode");
	assert_int_equal(errs.count, 1);
	/* a mixed partition covers both */
	assert_load_ok(MODEL "partitions = ( { name = \"a\"; role = \"prefill\"; },\n"
			     "                { name = \"b\"; role = \"mixed\"; } );");
	assert_load_ok(MODEL "partitions = ( { name = \"a\"; role = \"prefill\"; },\n"
			     "                { name = \"b\"; role = \"decode\"; } );");
	assert_int_equal(strcmp(cfg_role_name(cfg.partitions[1].role), "decode"), 0);
	assert_string_equal(cfg_role_name((enum cfg_role)42), "?");
}

static void test_cross_key_checks(void **state)
{
	assert_load_error(
		MODEL "partitions = ( { name = \"a\"; max_batch_tokens = 16; max_seqs = 32; } );",
		-DUET_ECFGINVALID, "partitions[0].max_seqs: 32 is more than max_batch_tokens 16");
	assert_load_error(MODEL PART "transport = {\n encrypt = true; };", -DUET_ECFGINVALID,
			  "t.cfg:4: transport.encrypt: needs transport.psk_file");
	assert_load_ok(MODEL PART "transport = { encrypt = true; psk_file = \"/k\"; };");
}

static void test_string_checks(void **state)
{
	static const char *const good[] = { "", "0.0.0.0:7000", "[::1]:7000", "*:1",
					    "host.example-1:65535" };
	static const char *const bad[] = { "7000",   "x:0", "x:70000", ":80",
					   "a b:80", "x:",  "[zz]:80", "x:8a" };
	char text[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), MODEL PART "transport = { tcp_listen = \"%s\"; };",
			 good[i]);
		assert_load_ok(text);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), MODEL PART "transport = { tcp_listen = \"%s\"; };",
			 bad[i]);
		assert_load_error(text, -DUET_ECFGINVALID,
				  "expected \"host:port\" with port 1..65535");
	}
	assert_load_error(MODEL PART "api = { group = \"-x\"; };", -DUET_ECFGINVALID,
			  "api.group: invalid value \"-x\"");
	assert_load_error("model = { path = \"m\"; served_name = \"a b\"; };" PART,
			  -DUET_ECFGINVALID, "model.served_name: invalid value \"a b\"");
	assert_load_error(MODEL PART "api = { socket_dir = \"/0123456789/0123456789/0123456789/"
				     "0123456789/0123456789/0123456789/0123456789/0123456789/"
				     "0123456789\"; };",
			  -DUET_ECFGRANGE, "api.socket_dir: too long (99 bytes, at most 95)");
	/* Short enough as written, too long once resolved. */
	assert_int_equal(cfg_load_string(MODEL PART "api = { socket_dir = \"0123456789/0123456789/"
						    "0123456789/0123456789/0123456789\"; };",
					 "t.cfg",
					 "/base/0123456789/0123456789/0123456789/0123456789", &cfg,
					 &errs),
			 -DUET_ECFGRANGE);
	assert_true(has_error("api.socket_dir: too long once resolved against"));
}

static void test_multiple_errors_reported(void **state)
{
	int rc = load("model = { path = 1; };\n"
		      "kv = { block_tokens = 3000; dtype = \"f8\"; };\n"
		      "colour = \"red\";\n"
		      "partitions = ( { name = \"a\"; cpus = \"3-1\"; } );\n");

	assert_int_equal(rc, -DUET_ECFGTYPE); /* the first error's code */
	assert_true(errs.count >= 5);
	assert_string_equal(errs.msg[0], "t.cfg:1: model.path: expected a string, got an integer");
	assert_true(has_error("t.cfg:2: kv.block_tokens: 3000 out of range"));
	assert_true(has_error("t.cfg:2: kv.dtype: invalid value"));
	assert_true(has_error("t.cfg:3: unknown key 'colour'"));
	assert_true(has_error("t.cfg:4: partitions[0].cpus"));
}

static void test_error_list_overflow(void **state)
{
	char *text = malloc(64 * 40), *p = text, *out = NULL;
	size_t len;
	FILE *fp;

	assert_non_null(text);
	for (int i = 0; i < 40; i++)
		p += sprintf(p, "bogus%d = 1;\n", i);
	assert_int_equal(load(text), -DUET_ECFGKEY);
	assert_int_equal(errs.count, CFG_MAX_ERRORS);
	assert_int_equal(errs.dropped, 40 + 2 - CFG_MAX_ERRORS); /* + model.path, partitions */
	fp = open_memstream(&out, &len);
	assert_non_null(fp);
	cfg_errors_print(fp, &errs);
	fclose(fp);
	assert_non_null(strstr(out, "t.cfg:1: unknown key 'bogus0'\n"));
	assert_non_null(strstr(out, "(10 more errors)\n"));
	free(out);
	free(text);
}

static void test_include_rejected(void **state)
{
	assert_load_error(MODEL "@include \"/etc/passwd\"\n" PART, -DUET_ECFGSYNTAX,
			  "t.cfg:2: @include is not supported");
	assert_int_equal(errs.count, 1);
	assert_load_error(MODEL PART "\n  @INCLUDE \"x.cfg\"", -DUET_ECFGSYNTAX,
			  "t.cfg:4: @include is not supported");
	/* Not a directive inside comments and strings, where libconfig ignores it too. */
	assert_load_ok(MODEL PART "# @include \"/etc/passwd\"\n"
				  "/*\n@include \"/etc/passwd\"\n*/\n"
				  "// @include \"/etc/passwd\"\n"
				  "transport = { psk_file = \"x\\\"\n@include\"; };\n");
	/* An '@' that is not @include is libconfig's syntax error. */
	assert_load_error(MODEL PART "@x = 1;", -DUET_ECFGSYNTAX, "t.cfg:3: syntax error");
}

static void test_load_file_errors(void **state)
{
	char *dir = tu_mkdtemp(), path[PATH_MAX];
	char *big;
	int rc;

	assert_non_null(dir);
	rc = cfg_load_file("/nonexistent/duet.cfg", &cfg, &errs);
	assert_int_equal(rc, -ENOENT);
	assert_int_equal(errs.count, 1);
	assert_string_equal(errs.msg[0],
			    "/nonexistent/duet.cfg: cannot open: No such file or directory");

	assert_int_equal(cfg_load_file(dir, &cfg, &errs), -EISDIR);

	snprintf(path, sizeof(path), "%s/nul.cfg", dir);
	assert_int_equal(tu_write_file(path, "name = \"a\";\nkv\0= 1;\n", 20), 0);
	assert_int_equal(cfg_load_file(path, &cfg, &errs), -DUET_ECFGSYNTAX);
	assert_non_null(strstr(errs.msg[0], "nul.cfg:2: NUL byte in file"));

	snprintf(path, sizeof(path), "%s/big.cfg", dir);
	big = malloc(CFG_MAX_FILE_BYTES + 2);
	assert_non_null(big);
	memset(big, '#', CFG_MAX_FILE_BYTES + 1);
	assert_int_equal(tu_write_file(path, big, CFG_MAX_FILE_BYTES + 1), 0);
	assert_int_equal(cfg_load_file(path, &cfg, &errs), -EFBIG);
	assert_non_null(strstr(errs.msg[0], "file too large"));
	/* Exactly the limit is fine (here: one long comment, then nothing required) */
	assert_int_equal(tu_write_file(path, big, CFG_MAX_FILE_BYTES), 0);
	assert_int_equal(cfg_load_file(path, &cfg, &errs), -DUET_ECFGMISSING);
	free(big);

	snprintf(path, sizeof(path), "%s/syntax.cfg", dir);
	assert_int_equal(tu_write_file(path, "a = 1;\nb = ;\n", 13), 0);
	assert_int_equal(cfg_load_file(path, &cfg, &errs), -DUET_ECFGSYNTAX);
	assert_true(strstr(errs.msg[0], "syntax.cfg:2: syntax error") != NULL);
	assert_true(strncmp(errs.msg[0], path, strlen(path)) == 0);
	tu_rmtree(dir);
}

static void test_null_arguments(void **state)
{
	assert_int_equal(cfg_load_string(MODEL "colour = 1;", "x", NULL, &cfg, NULL),
			 -DUET_ECFGKEY);
	assert_int_equal(cfg_load_file("/nonexistent/x", &cfg, NULL), -ENOENT);
	assert_int_equal(cfg_load_string(NULL, NULL, NULL, &cfg, &errs), -EINVAL);
	assert_int_equal(errs.count, 1);
	assert_int_equal(cfg_load_string(MODEL, NULL, NULL, &cfg, &errs), -DUET_ECFGMISSING);
	assert_string_equal(errs.msg[0], "(config): partitions: required key missing");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shipped_config_loads),
		cmocka_unit_test(test_shipped_config_has_every_key),
		cmocka_unit_test(test_schema_iterator),
		cmocka_unit_test(test_print_doc),
		cmocka_unit_test(test_minimal_gets_defaults),
		cmocka_unit_test(test_every_key_set),
		cmocka_unit_test(test_print_roundtrip),
		cmocka_unit_test(test_log_names_match_log_module),
		cmocka_unit_test(test_relative_paths_use_config_dir),
		cmocka_unit_test(test_syntax_error_line),
		cmocka_unit_test(test_syntax_errors_found_before_libconfig),
		cmocka_unit_test(test_unknown_top_level_key),
		cmocka_unit_test(test_unknown_key_in_section),
		cmocka_unit_test(test_unknown_key_in_partition),
		cmocka_unit_test(test_wrong_type_int),
		cmocka_unit_test(test_wrong_type_string),
		cmocka_unit_test(test_wrong_type_bool),
		cmocka_unit_test(test_wrong_type_float),
		cmocka_unit_test(test_wrong_type_group),
		cmocka_unit_test(test_wrong_type_list),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_router_keys),
		cmocka_unit_test(test_integer_literals),
		cmocka_unit_test(test_bad_enum_lists_allowed_values),
		cmocka_unit_test(test_bad_cpu_lists),
		cmocka_unit_test(test_cpulist_parse),
		cmocka_unit_test(test_device),
		cmocka_unit_test(test_duplicate_partition_names),
		cmocka_unit_test(test_bad_partition_names),
		cmocka_unit_test(test_no_partitions),
		cmocka_unit_test(test_too_many_partitions),
		cmocka_unit_test(test_missing_model_path),
		cmocka_unit_test(test_block_tokens_power_of_two),
		cmocka_unit_test(test_role_mix),
		cmocka_unit_test(test_cross_key_checks),
		cmocka_unit_test(test_string_checks),
		cmocka_unit_test(test_multiple_errors_reported),
		cmocka_unit_test(test_error_list_overflow),
		cmocka_unit_test(test_include_rejected),
		cmocka_unit_test(test_load_file_errors),
		cmocka_unit_test(test_null_arguments),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
