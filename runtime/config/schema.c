// SPDX-License-Identifier: MIT
/*
 * The configuration schema: one table of every key, and the code it drives.
 *
 * Each entry names a key by its path ("kv.block_tokens"; "partitions.[].name"
 * for a key of every entry of the partitions list), its type, its range (for
 * strings: their length in bytes), its default, a one-line doc and where its
 * value lives (an offset into struct duet_config, or into struct
 * cfg_partition for list entries).  Validation, defaults, cfg_print_doc() and
 * cfg_print() read only this table; the few checks a range cannot express are
 * small functions attached to their entries, and the checks that involve
 * several keys are in cross_check().
 */
#include "runtime/config/config-impl.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"

#include <ctype.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum cfg_type {
	CFG_T_GROUP,  /* a section { ... }; no value of its own */
	CFG_T_LIST,   /* ( { ... }, ... ): entries described by "path.[].key" */
	CFG_T_INT,    /* int field; libconfig int or int64 literal */
	CFG_T_FLOAT,  /* double field; float or integer literal */
	CFG_T_BOOL,   /* bool field */
	CFG_T_STRING, /* char[size] field */
	CFG_T_ENUM,   /* int-sized enum field; string literal naming one of values */
};

#define CFG_REQUIRED 0x1 /* must be present; no default */
#define CFG_PATH 0x2	 /* string is a path; relative ones are resolved */
#define CFG_ZERO_OK 0x4	 /* int: 0 is allowed besides [min, max] */

struct cfg_enum_val {
	const char *name;
	int value;
};

/* A value read from the file or taken from the schema's default. */
struct cfg_value {
	int64_t i; /* int; enum: set by key_set() to the enum's value */
	double f;
	bool b;
	const char *s; /* string, enum: as written */
};

/*
 * Check a value that passed the type and range checks and was stored; may
 * fill further fields of obj (the struct that holds the key's field).
 * Returns 0, or -DUET_ECFGINVALID with the reason in why.
 */
typedef int (*cfg_check_fn)(const struct cfg_value *v, void *obj, char *why, size_t whylen);

/* Example entries of a required list in cfg_print_doc() (the partitions of etc/duet.cfg). */
#define CFG_DOC_ENTRIES 2

struct cfg_key {
	const char *path;
	enum cfg_type type;
	unsigned flags;			   /* CFG_REQUIRED, CFG_PATH, CFG_ZERO_OK */
	int64_t min, max;		   /* int: values; string: length in bytes; list: entries */
	double fmin, fmax;		   /* float: values */
	const struct cfg_enum_val *values; /* enum: allowed names, NULL-terminated */
	int64_t def_i;
	double def_f;
	bool def_b;
	const char *def_s;   /* string and enum defaults; NULL = "" */
	const char *example; /* required keys: the value cfg_print_doc() shows */
	/* list entry keys: the value of each example entry cfg_print_doc() shows (NULL: default) */
	const char *entries[CFG_DOC_ENTRIES];
	size_t off, size;    /* field; list: the array and the size of one entry */
	size_t count_off;    /* list: the unsigned count of entries in use */
	cfg_check_fn check;
	const char *doc;
};

static int check_name(const struct cfg_value *v, void *obj, char *why, size_t whylen)
{
	for (const char *p = v->s; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-') {
			snprintf(why, whylen, "only letters, digits, '_' and '-' are allowed");
			return -DUET_ECFGINVALID;
		}
	}
	return 0;
}

/* Template and group names: [A-Za-z0-9_.-], not starting with '-'. */
static int check_token(const struct cfg_value *v, void *obj, char *why, size_t whylen)
{
	for (const char *p = v->s; *p; p++) {
		if ((!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') ||
		    (p == v->s && *p == '-')) {
			snprintf(why, whylen,
				 "only letters, digits, '_', '.' and '-' (not first) are allowed");
			return -DUET_ECFGINVALID;
		}
	}
	return 0;
}

static int check_graph(const struct cfg_value *v, void *obj, char *why, size_t whylen)
{
	for (const char *p = v->s; *p; p++) {
		if (*p < 0x21 || *p > 0x7e) {
			snprintf(why, whylen, "only printable ASCII without spaces is allowed");
			return -DUET_ECFGINVALID;
		}
	}
	return 0;
}

static int check_pow2(const struct cfg_value *v, void *obj, char *why, size_t whylen)
{
	if (v->i > 0 && (v->i & (v->i - 1)) == 0)
		return 0;
	snprintf(why, whylen, "not a power of two");
	return -DUET_ECFGINVALID;
}

static int check_cpus(const struct cfg_value *v, void *obj, char *why, size_t whylen)
{
	struct cfg_partition *part = obj;

	return cfg_cpulist_parse(v->s, &part->cpuset, &part->n_cpus, why, whylen);
}

static int check_device(const struct cfg_value *v, void *obj, char *why, size_t whylen)
{
	struct cfg_partition *part = obj;

	if (cfg_device_parse(v->s, &part->device_kind, &part->device_index) == 0)
		return 0;
	snprintf(why, whylen, "expected \"cpu\" or \"cuda:N\" with N in 0..63");
	return -DUET_ECFGINVALID;
}

/* "" or "host:port": host a name, an IPv4 address, "*" or "[IPv6]"; port 1..65535. */
static int check_hostport(const struct cfg_value *v, void *obj, char *why, size_t whylen)
{
	const char *colon = strrchr(v->s, ':'), *host = v->s, *p;
	size_t hostlen;
	long port = 0;

	if (!*v->s)
		return 0;
	if (!colon || !colon[1])
		goto bad;
	for (p = colon + 1; *p; p++) {
		if (!isdigit((unsigned char)*p) || port > 65535)
			goto bad;
		port = port * 10 + (*p - '0');
	}
	if (port < 1 || port > 65535)
		goto bad;
	hostlen = (size_t)(colon - host);
	if (hostlen >= 2 && host[0] == '[' && host[hostlen - 1] == ']') {
		host++;
		hostlen -= 2;
		for (size_t i = 0; i < hostlen; i++)
			if (!isxdigit((unsigned char)host[i]) && host[i] != ':' && host[i] != '.')
				goto bad;
	} else {
		for (size_t i = 0; i < hostlen; i++)
			if (!isalnum((unsigned char)host[i]) && !strchr("-._*", host[i]))
				goto bad;
	}
	if (hostlen > 0)
		return 0;
bad:
	snprintf(why, whylen, "expected \"host:port\" with port 1..65535");
	return -DUET_ECFGINVALID;
}

static const struct cfg_enum_val role_vals[] = {
	{ "mixed", CFG_ROLE_MIXED },
	{ "prefill", CFG_ROLE_PREFILL },
	{ "decode", CFG_ROLE_DECODE },
	{ NULL, 0 },
};

static const struct cfg_enum_val dtype_vals[] = {
	{ "f16", CFG_KV_F16 },
	{ "f32", CFG_KV_F32 },
	{ NULL, 0 },
};

static const struct cfg_enum_val driver_vals[] = {
	{ "auto", CFG_XPORT_AUTO },
	{ "shm", CFG_XPORT_SHM },
	{ "tcp", CFG_XPORT_TCP },
	{ "verbs", CFG_XPORT_VERBS },
	{ "cuda-ipc", CFG_XPORT_CUDA_IPC },
	{ "nccl", CFG_XPORT_NCCL },
	{ NULL, 0 },
};

static const struct cfg_enum_val level_vals[] = {
	{ "alert", DUET_LOG_ALERT }, { "error", DUET_LOG_ERROR }, { "warn", DUET_LOG_WARN },
	{ "info", DUET_LOG_INFO },   { "debug", DUET_LOG_DEBUG }, { NULL, 0 },
};

static const struct cfg_enum_val format_vals[] = {
	{ "auto", DUET_LOG_FMT_AUTO },
	{ "plain", DUET_LOG_FMT_PLAIN },
	{ "journal", DUET_LOG_FMT_JOURNAL },
	{ NULL, 0 },
};

#define C_FIELD(f) \
	.off = offsetof(struct duet_config, f), .size = sizeof(((struct duet_config *)0)->f)
#define T_FIELD(f) \
	.off = offsetof(struct cfg_tenant, f), .size = sizeof(((struct cfg_tenant *)0)->f)
#define P_FIELD(f) \
	.off = offsetof(struct cfg_partition, f), .size = sizeof(((struct cfg_partition *)0)->f)

/*
 * Table order is the order of cfg_print_doc() and cfg_print(); a group or
 * list comes before its keys.
 */
static const struct cfg_key schema[] = {
	{ .path = "name",
	  .type = CFG_T_STRING,
	  .min = 1,
	  .max = 63,
	  .def_s = "duet",
	  .check = check_name,
	  C_FIELD(name),
	  .doc = "Name of this appliance in /health, /v1/status, metrics and the console; letters, digits, '_' and '-'." },

	{ .path = "model", .type = CFG_T_GROUP, .doc = "The model this appliance serves." },
	{ .path = "model.path",
	  .type = CFG_T_STRING,
	  .flags = CFG_REQUIRED | CFG_PATH,
	  .min = 1,
	  .max = CFG_PATH_MAX - 1,
	  .example = "../build/models/duet-tiny.gguf",
	  C_FIELD(model.path),
	  .doc = "GGUF model file; a relative path is resolved against the directory of this file." },
	{ .path = "model.served_name",
	  .type = CFG_T_STRING,
	  .max = 127,
	  .check = check_graph,
	  C_FIELD(model.served_name),
	  .doc = "Model name clients use in requests and /v1/models; \"\" = the name stored in the model file." },
	{ .path = "model.context",
	  .type = CFG_T_INT,
	  .flags = CFG_ZERO_OK,
	  .min = 16,
	  .max = 1048576,
	  .def_i = 0,
	  C_FIELD(model.context),
	  .doc = "Context length per sequence (prompt plus output), tokens; 0 = the model's own." },
	{ .path = "model.chat_template",
	  .type = CFG_T_STRING,
	  .max = 63,
	  .check = check_token,
	  C_FIELD(model.chat_template),
	  .doc = "Built-in chat template for /v1/chat/completions, by name; \"\" = the one the model file names." },

	{ .path = "kv", .type = CFG_T_GROUP, .doc = "The paged KV cache of each partition." },
	{ .path = "kv.block_tokens",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 1024,
	  .def_i = 16,
	  .check = check_pow2,
	  C_FIELD(kv.block_tokens),
	  .doc = "Tokens per KV block, the unit of allocation, sharing and transfer; a power of two." },
	{ .path = "kv.memory_mb",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 16777216,
	  .def_i = 256,
	  C_FIELD(kv.memory_mb),
	  .doc = "Size of each partition's KV pool, MiB; used when kv.blocks is 0." },
	{ .path = "kv.blocks",
	  .type = CFG_T_INT,
	  .flags = CFG_ZERO_OK,
	  .min = 1,
	  .max = 16777216,
	  .def_i = 0,
	  C_FIELD(kv.blocks),
	  .doc = "KV blocks per partition; 0 = as many as kv.memory_mb holds." },
	{ .path = "kv.dtype",
	  .type = CFG_T_ENUM,
	  .values = dtype_vals,
	  .def_s = "f16",
	  C_FIELD(kv.dtype),
	  .doc = "Element type of the cached keys and values." },
	{ .path = "kv.hugepages",
	  .type = CFG_T_BOOL,
	  .def_b = false,
	  C_FIELD(kv.hugepages),
	  .doc = "Back the KV pools with huge pages." },
	{ .path = "kv.prefix_cache",
	  .type = CFG_T_BOOL,
	  .def_b = true,
	  C_FIELD(kv.prefix_cache),
	  .doc = "Keep full prompt blocks after their request ends and reuse them for requests with the same prefix." },
	{ .path = "kv.lease_timeout_ms",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 600000,
	  .def_i = 30000,
	  C_FIELD(kv.lease_timeout_ms),
	  .doc = "A decode partition's reservation of blocks for an incoming transfer expires after this, ms." },

	{ .path = "partitions",
	  .type = CFG_T_LIST,
	  .flags = CFG_REQUIRED,
	  .min = 1,
	  .max = CFG_MAX_PARTITIONS,
	  .off = offsetof(struct duet_config, partitions),
	  .size = sizeof(struct cfg_partition),
	  .count_off = offsetof(struct duet_config, n_partitions),
	  .doc = "Compute partitions; duetd runs one worker process for each entry." },
	{ .path = "partitions.[].name",
	  .type = CFG_T_STRING,
	  .flags = CFG_REQUIRED,
	  .min = 1,
	  .max = CFG_NAME_MAX - 1,
	  .example = "cpu0",
	  .entries = { "prefill0", "decode0" },
	  .check = check_name,
	  P_FIELD(name),
	  .doc = "Unique name of the partition; letters, digits, '_' and '-'." },
	{ .path = "partitions.[].role",
	  .type = CFG_T_ENUM,
	  .values = role_vals,
	  .def_s = "mixed",
	  .entries = { "prefill", "decode" },
	  P_FIELD(role),
	  .doc = "\"prefill\" computes prompts and hands their KV to a decode partition, \"decode\" continues them, \"mixed\" does both." },
	{ .path = "partitions.[].device",
	  .type = CFG_T_STRING,
	  .min = 1,
	  .max = 15,
	  .def_s = "cpu",
	  .check = check_device,
	  P_FIELD(device),
	  .doc = "Compute device: \"cpu\", or \"cuda:N\" for GPU N." },
	{ .path = "partitions.[].cpus",
	  .type = CFG_T_STRING,
	  .max = CFG_CPULIST_MAX - 1,
	  .check = check_cpus,
	  P_FIELD(cpus),
	  .doc = "CPUs the worker is pinned to, as a list like \"0-3,8,10-11\" (CPUs 0..1023); \"\" = all CPUs." },
	{ .path = "partitions.[].threads",
	  .type = CFG_T_INT,
	  .min = 0,
	  .max = 1024,
	  .def_i = 0,
	  .entries = { "1", "1" },
	  P_FIELD(threads),
	  .doc = "Compute threads; 0 = one for each CPU in cpus." },
	{ .path = "partitions.[].numa_node",
	  .type = CFG_T_INT,
	  .min = -1,
	  .max = 63,
	  .def_i = -1,
	  P_FIELD(numa_node),
	  .doc = "NUMA node for the partition's memory; -1 = the node of its CPUs or device." },
	{ .path = "partitions.[].max_batch_tokens",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 1048576,
	  .def_i = 2048,
	  P_FIELD(max_batch_tokens),
	  .doc = "Most tokens in one forward step, over all sequences of the batch." },
	{ .path = "partitions.[].max_seqs",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 4096,
	  .def_i = 64,
	  P_FIELD(max_seqs),
	  .doc = "Most sequences in one batch; at most max_batch_tokens." },

	{ .path = "transport",
	  .type = CFG_T_GROUP,
	  .doc = "How KV moves from prefill partitions to decode partitions." },
	{ .path = "transport.driver",
	  .type = CFG_T_ENUM,
	  .values = driver_vals,
	  .def_s = "auto",
	  C_FIELD(transport.driver),
	  .doc = "Transfer driver; \"auto\" picks the best one each pair of partitions supports." },
	{ .path = "transport.tcp_listen",
	  .type = CFG_T_STRING,
	  .max = 127,
	  .check = check_hostport,
	  C_FIELD(transport.tcp_listen),
	  .doc = "Address the tcp driver listens on, \"host:port\"; \"\" = do not listen." },
	{ .path = "transport.psk_file",
	  .type = CFG_T_STRING,
	  .flags = CFG_PATH,
	  .max = CFG_PATH_MAX - 1,
	  C_FIELD(transport.psk_file),
	  .doc = "File holding the pre-shared key that authenticates tcp peers; \"\" = none." },
	{ .path = "transport.encrypt",
	  .type = CFG_T_BOOL,
	  .def_b = false,
	  C_FIELD(transport.encrypt),
	  .doc = "Encrypt tcp transfers; needs transport.psk_file." },
	{ .path = "transport.checksum",
	  .type = CFG_T_BOOL,
	  .def_b = true,
	  C_FIELD(transport.checksum),
	  .doc = "Every KV transfer's completion record carries a checksum of the bytes written; the decode partition verifies it before admitting the request (a mismatch fails the transfer closed)." },

	{ .path = "api",
	  .type = CFG_T_GROUP,
	  .doc = "The local UNIX-socket API: api.sock for clients, admin.sock for operators." },
	{ .path = "api.socket_dir",
	  .type = CFG_T_STRING,
	  .flags = CFG_PATH,
	  .max = CFG_SOCKET_DIR_MAX - 1,
	  C_FIELD(api.socket_dir),
	  .doc = "Directory of the sockets; \"\" = /run/duet as root, else $XDG_RUNTIME_DIR/duet (build/run without it)." },
	{ .path = "api.group",
	  .type = CFG_T_STRING,
	  .max = 31,
	  .def_s = "duet",
	  .check = check_token,
	  C_FIELD(api.group),
	  .doc = "Group allowed to use api.sock; \"\" = the daemon's own group." },
	{ .path = "api.admin_group",
	  .type = CFG_T_STRING,
	  .max = 31,
	  .def_s = "duet-admin",
	  .check = check_token,
	  C_FIELD(api.admin_group),
	  .doc = "Group allowed to use admin.sock; \"\" = the daemon's own group." },
	{ .path = "api.max_body_kb",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 65536,
	  .def_i = 1024,
	  C_FIELD(api.max_body_kb),
	  .doc = "Largest request body accepted, KiB." },
	{ .path = "api.max_queue",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 1000000,
	  .def_i = 256,
	  C_FIELD(api.max_queue),
	  .doc = "Requests that may wait for a partition; further ones are refused with 429." },
	{ .path = "api.queue_timeout_ms",
	  .type = CFG_T_INT,
	  .min = 100,
	  .max = 3600000,
	  .def_i = 30000,
	  C_FIELD(api.queue_timeout_ms),
	  .doc = "How long a request may wait in the router for prefill or decode capacity before it fails with 503, ms." },
	{ .path = "api.default_max_tokens",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 1048576,
	  .def_i = 256,
	  C_FIELD(api.default_max_tokens),
	  .doc = "Output tokens of a request that sets no max_tokens." },
	{ .path = "api.max_tokens",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 1048576,
	  .def_i = 4096,
	  C_FIELD(api.max_tokens),
	  .doc = "Largest max_tokens a request may ask for (the context may allow fewer)." },
	{ .path = "api.max_n",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 128,
	  .def_i = 8,
	  C_FIELD(api.max_n),
	  .doc = "Largest n (choices per request)." },
	{ .path = "api.max_logprobs",
	  .type = CFG_T_INT,
	  .min = 0,
	  .max = 20,
	  .def_i = 20,
	  C_FIELD(api.max_logprobs),
	  .doc = "Largest top_logprobs (chat) or logprobs (completions); 0 refuses logprobs." },
	{ .path = "api.audit_log",
	  .type = CFG_T_STRING,
	  .flags = CFG_PATH,
	  .max = CFG_PATH_MAX - 1,
	  C_FIELD(api.audit_log),
	  .doc = "File that every admin request is appended to (uid, gid, route, outcome); \"\" = audit.log in the socket directory." },
	{ .path = "api.canary_interval_ms",
	  .type = CFG_T_INT,
	  .min = 0,
	  .max = 600000,
	  .def_i = 5000,
	  C_FIELD(api.canary_interval_ms),
	  .doc = "How often a one-token canary request goes through every partition; /health is 200 only while they succeed. 0 = no canary (health = every worker ready)." },
	{ .path = "api.max_attempts",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 10,
	  .def_i = 3,
	  C_FIELD(api.max_attempts),
	  .doc = "Times a request is started on a partition in all, restarts after a worker or transfer failure included, before it fails; 1 = never restarted." },
	{ .path = "api.breaker_failures",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 1000,
	  .def_i = 3,
	  C_FIELD(api.breaker_failures),
	  .doc = "Failures of a partition (a worker death, a failed transfer) within one minute that open its circuit breaker: it gets no new work until a canary gets through." },
	{ .path = "api.breaker_cooldown_ms",
	  .type = CFG_T_INT,
	  .min = 100,
	  .max = 3600000,
	  .def_i = 5000,
	  C_FIELD(api.breaker_cooldown_ms),
	  .doc = "How long an open circuit breaker waits before it probes the partition with a canary, ms." },
	{ .path = "api.tenants",
	  .type = CFG_T_LIST,
	  .min = 0,
	  .max = CFG_MAX_TENANTS,
	  .off = offsetof(struct duet_config, api.tenants),
	  .size = sizeof(struct cfg_tenant),
	  .count_off = offsetof(struct duet_config, api.n_tenants),
	  .doc = "Users whose requests share a prefix-cache tenant; every other uid is a tenant of its own." },
	{ .path = "api.tenants.[].uid",
	  .type = CFG_T_INT,
	  .flags = CFG_REQUIRED,
	  .min = 0,
	  .max = 2147483647,
	  .example = "1000",
	  T_FIELD(uid),
	  .doc = "The user id (as the socket's peer credentials report it)." },
	{ .path = "api.tenants.[].tenant",
	  .type = CFG_T_STRING,
	  .flags = CFG_REQUIRED,
	  .min = 1,
	  .max = 31,
	  .example = "team-a",
	  .check = check_token,
	  T_FIELD(name),
	  .doc = "The tenant's name: users with the same name share cached prefixes." },

	{ .path = "slo",
	  .type = CFG_T_GROUP,
	  .doc = "Service-level objectives that admission and placement aim for." },
	{ .path = "slo.ttft_ms",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 600000,
	  .def_i = 1000,
	  C_FIELD(slo.ttft_ms),
	  .doc = "Time-to-first-token target, ms." },
	{ .path = "slo.tpot_ms",
	  .type = CFG_T_INT,
	  .min = 1,
	  .max = 60000,
	  .def_i = 100,
	  C_FIELD(slo.tpot_ms),
	  .doc = "Time-per-output-token target, ms." },
	{ .path = "slo.attainment",
	  .type = CFG_T_FLOAT,
	  .fmin = 0.5,
	  .fmax = 1.0,
	  .def_f = 0.9,
	  C_FIELD(slo.attainment),
	  .doc = "Fraction of requests that must meet both targets." },

	{ .path = "log",
	  .type = CFG_T_GROUP,
	  .doc = "Logging to stderr (the journal under systemd)." },
	{ .path = "log.level",
	  .type = CFG_T_ENUM,
	  .values = level_vals,
	  .def_s = "info",
	  C_FIELD(log.level),
	  .doc = "Least severe level that is logged." },
	{ .path = "log.format",
	  .type = CFG_T_ENUM,
	  .values = format_vals,
	  .def_s = "auto",
	  C_FIELD(log.format),
	  .doc = "\"plain\": timestamped lines; \"journal\": <N> priority prefixes; \"auto\": journal when stderr is the journal." },
};

#define SCHEMA_LEN (sizeof(schema) / sizeof(schema[0]))

size_t cfg_schema_count(void)
{
	return SCHEMA_LEN;
}

const char *cfg_schema_path(size_t i)
{
	return i < SCHEMA_LEN ? schema[i].path : NULL;
}

const char *cfg_xfer_driver(const struct duet_config *cfg)
{
	switch (cfg->transport.driver) {
	case CFG_XPORT_AUTO:
	case CFG_XPORT_SHM:
		return "shm";
	case CFG_XPORT_TCP:
		return "tcp";
	default:
		return NULL;
	}
}

const char *cfg_role_name(enum cfg_role role)
{
	for (const struct cfg_enum_val *e = role_vals; e->name; e++)
		if (e->value == (int)role)
			return e->name;
	return "?";
}

static const char *key_leaf(const struct cfg_key *k)
{
	const char *dot = strrchr(k->path, '.');

	return dot ? dot + 1 : k->path;
}

/* Is k directly inside the group or list entry named parent ("" = top level)? */
static bool key_is_child(const struct cfg_key *k, const char *parent)
{
	size_t n = strlen(parent);

	if (n == 0)
		return !strchr(k->path, '.');
	return strncmp(k->path, parent, n) == 0 && k->path[n] == '.' &&
	       !strchr(k->path + n + 1, '.');
}

static bool key_is_scalar(const struct cfg_key *k)
{
	return k->type != CFG_T_GROUP && k->type != CFG_T_LIST;
}

static bool key_in_list(const struct cfg_key *k)
{
	return strstr(k->path, "[]") != NULL;
}

static const struct cfg_key *key_find(const char *path)
{
	for (size_t i = 0; i < SCHEMA_LEN; i++)
		if (strcmp(schema[i].path, path) == 0)
			return &schema[i];
	return NULL;
}

static const char *enum_name(const struct cfg_key *k, int value)
{
	for (const struct cfg_enum_val *e = k->values; e->name; e++)
		if (e->value == value)
			return e->name;
	return NULL;
}

/* s in double quotes, escaped and cut to fit messages and terminals. */
static const char *quote(char *buf, size_t len, const char *s)
{
	size_t o = 0, i;

	buf[o++] = '"';
	for (i = 0; s[i] && o + 8 < len && i < 48; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			o += (size_t)snprintf(buf + o, len - o, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	if (s[i])
		o += (size_t)snprintf(buf + o, len - o, "...");
	snprintf(buf + o, len - o, "\"");
	return buf;
}

/*
 * Validate v against k and store it into obj; then run k's check.  Returns 0,
 * or a negative code with the message (without the key's path) in msg.
 */
static int key_set(const struct cfg_key *k, struct cfg_value *v, void *obj, const char *base_dir,
		   char *msg, size_t msglen)
{
	char *field = (char *)obj + k->off;
	char why[160], q[80];
	int rc;

	switch (k->type) {
	case CFG_T_INT:
		if (!(v->i == 0 && (k->flags & CFG_ZERO_OK)) && (v->i < k->min || v->i > k->max)) {
			snprintf(msg, msglen, "%lld out of range [%lld, %lld]%s", (long long)v->i,
				 (long long)k->min, (long long)k->max,
				 k->flags & CFG_ZERO_OK ? " (or 0)" : "");
			return -DUET_ECFGRANGE;
		}
		DUET_ASSERT(k->size == sizeof(int));
		*(int *)field = (int)v->i;
		break;
	case CFG_T_FLOAT:
		if (isnan(v->f) || v->f < k->fmin || v->f > k->fmax) {
			snprintf(msg, msglen, "%g out of range [%g, %g]", v->f, k->fmin, k->fmax);
			return -DUET_ECFGRANGE;
		}
		DUET_ASSERT(k->size == sizeof(double));
		*(double *)field = v->f;
		break;
	case CFG_T_BOOL:
		DUET_ASSERT(k->size == sizeof(bool));
		*(bool *)field = v->b;
		break;
	case CFG_T_ENUM: {
		const struct cfg_enum_val *e;
		size_t o;

		for (e = k->values; e->name; e++)
			if (strcmp(e->name, v->s) == 0)
				break;
		if (!e->name) {
			o = (size_t)snprintf(msg, msglen, "invalid value %s (allowed:",
					     quote(q, sizeof(q), v->s));
			for (e = k->values; e->name && o < msglen; e++)
				o += (size_t)snprintf(msg + o, msglen - o, " \"%s\"%s", e->name,
						      e[1].name ? "," : ")");
			return -DUET_ECFGINVALID;
		}
		v->i = e->value;
		DUET_ASSERT(k->size == sizeof(int));
		*(int *)field = e->value;
		break;
	}
	case CFG_T_STRING: {
		size_t len = strlen(v->s);

		DUET_ASSERT(k->max >= 0 && (size_t)k->max < k->size);
		if (len < (size_t)k->min) {
			if (len == 0)
				snprintf(msg, msglen, "must not be empty");
			else
				snprintf(msg, msglen, "too short (%zu bytes, at least %lld)", len,
					 (long long)k->min);
			return -DUET_ECFGRANGE;
		}
		if (len > (size_t)k->max) {
			snprintf(msg, msglen, "too long (%zu bytes, at most %lld)", len,
				 (long long)k->max);
			return -DUET_ECFGRANGE;
		}
		memset(field, 0, k->size);
		if ((k->flags & CFG_PATH) && base_dir && v->s[0] && v->s[0] != '/') {
			int n = snprintf(field, k->size, "%s/%s", base_dir, v->s);

			if (n < 0 || (size_t)n > (size_t)k->max) {
				memset(field, 0, k->size);
				snprintf(
					msg, msglen,
					"too long once resolved against %s (%d bytes, at most %lld)",
					quote(q, sizeof(q), base_dir), n, (long long)k->max);
				return -DUET_ECFGRANGE;
			}
		} else {
			memcpy(field, v->s, len);
		}
		break;
	}
	case CFG_T_GROUP:
	case CFG_T_LIST:
		DUET_ASSERT(!"key_set on a group or list");
	}

	if (k->check) {
		rc = k->check(v, obj, why, sizeof(why));
		if (rc < 0) {
			if (k->type == CFG_T_INT)
				snprintf(msg, msglen, "invalid value %lld: %s", (long long)v->i,
					 why);
			else
				snprintf(msg, msglen, "invalid value %s: %s",
					 quote(q, sizeof(q), v->s), why);
			return rc;
		}
	}
	return 0;
}

static void key_default(const struct cfg_key *k, void *obj)
{
	struct cfg_value v = {
		.i = k->def_i,
		.f = k->def_f,
		.b = k->def_b,
		.s = k->def_s ? k->def_s : "",
	};
	char msg[CFG_ERROR_LEN];
	int rc;

	rc = key_set(k, &v, obj, NULL, msg, sizeof(msg));
	if (rc < 0)
		log_alert("config", "schema default of %s: %s", k->path, msg);
	DUET_ASSERT(rc == 0);
}

/* Defaults of one entry of list k, into elem (all of it, padding included). */
static void list_entry_defaults(const struct cfg_key *k, void *elem)
{
	size_t n = strlen(k->path);

	memset(elem, 0, k->size);
	for (size_t i = 0; i < SCHEMA_LEN; i++) {
		const struct cfg_key *e = &schema[i];

		if (key_is_scalar(e) && !(e->flags & CFG_REQUIRED) &&
		    strncmp(e->path, k->path, n) == 0 && strncmp(e->path + n, ".[].", 4) == 0)
			key_default(e, elem);
	}
}

void cfg_defaults(struct duet_config *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < SCHEMA_LEN; i++) {
		const struct cfg_key *k = &schema[i];

		if (key_is_scalar(k) && !(k->flags & CFG_REQUIRED) && !key_in_list(k))
			key_default(k, out);
	}
}

/* --- validation ------------------------------------------------------------------------- */

struct cfg_ctx {
	const char *name;     /* file name in messages */
	const char *base_dir; /* for relative paths; NULL = leave them */
	struct cfg_errors *errs;
	config_setting_t *root;
};

#define CFG_PATH_LEN 128 /* key paths, as schema paths or as shown ("partitions[3].name") */

static void ctx_error(struct cfg_ctx *c, const config_setting_t *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* One error, prefixed with "file:line: " (s's line) or "file: " when there is no line. */
static void ctx_error(struct cfg_ctx *c, const config_setting_t *s, int code, const char *fmt, ...)
{
	unsigned line = s ? config_setting_source_line(s) : 0;
	char msg[CFG_ERROR_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line)
		cfg_errors_add(c->errs, code, "%s:%u: %s", c->name, line, msg);
	else
		cfg_errors_add(c->errs, code, "%s: %s", c->name, msg);
}

static const char *setting_type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		return "an integer";
	case CONFIG_TYPE_FLOAT:
		return "a float";
	case CONFIG_TYPE_STRING:
		return "a string";
	case CONFIG_TYPE_BOOL:
		return "a boolean";
	case CONFIG_TYPE_ARRAY:
		return "an array";
	case CONFIG_TYPE_LIST:
		return "a list";
	case CONFIG_TYPE_GROUP:
		return "a group";
	}
	return "an unknown type";
}

static const char *key_type_name(const struct cfg_key *k)
{
	switch (k->type) {
	case CFG_T_GROUP:
		return "a group";
	case CFG_T_LIST:
		return "a list";
	case CFG_T_INT:
		return "an integer";
	case CFG_T_FLOAT:
		return "a number";
	case CFG_T_BOOL:
		return "a boolean";
	case CFG_T_STRING:
	case CFG_T_ENUM:
		return "a string";
	}
	return "?";
}

static void type_error(struct cfg_ctx *c, const config_setting_t *s, const char *dpath,
		       const char *expected)
{
	ctx_error(c, s, -DUET_ECFGTYPE, "%s: expected %s, got %s", dpath, expected,
		  setting_type_name(s));
}

/* Edit distance with adjacent transpositions; strings of at most 32 bytes. */
static unsigned edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned d[33][33];

	if (la > 32 || lb > 32)
		return 99;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (unsigned)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			unsigned cost = a[i - 1] != b[j - 1];
			unsigned best = d[i - 1][j - 1] + cost;

			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[la][lb];
}

/* A schema path as shown to people: "partitions.[].name" -> "partitions[].name". */
static void display_path(char *buf, size_t len, const char *path)
{
	size_t o = 0;

	for (; *path && o + 1 < len; path++) {
		if (path[0] == '.' && path[1] == '[')
			continue;
		buf[o++] = *path;
	}
	buf[o] = '\0';
}

/*
 * Unknown key name inside kprefix (shown as dprefix): suggest the key of the
 * same name elsewhere, else a sibling within a small edit distance.
 */
static void unknown_key(struct cfg_ctx *c, const config_setting_t *s, const char *kprefix,
			const char *dprefix, const char *name)
{
	const struct cfg_key *best = NULL;
	unsigned best_d = 99;
	char shown[CFG_PATH_LEN], hint[CFG_PATH_LEN];
	const char *sep = *dprefix ? "." : "";

	snprintf(shown, sizeof(shown), "%s%s%.64s%s", dprefix, sep, name,
		 strlen(name) > 64 ? "..." : "");
	for (size_t i = 0; i < SCHEMA_LEN; i++) {
		if (strcmp(key_leaf(&schema[i]), name) == 0) {
			display_path(hint, sizeof(hint), schema[i].path);
			ctx_error(c, s, -DUET_ECFGKEY, "unknown key '%s' (did you mean '%s'?)",
				  shown, hint);
			return;
		}
	}
	for (size_t i = 0; i < SCHEMA_LEN; i++) {
		const char *leaf = key_leaf(&schema[i]);
		unsigned d, limit = strlen(leaf) <= 4 ? 1 : 2;

		if (!key_is_child(&schema[i], kprefix))
			continue;
		d = edit_distance(name, leaf);
		if (d <= limit && d < best_d) {
			best = &schema[i];
			best_d = d;
		}
	}
	if (best)
		ctx_error(c, s, -DUET_ECFGKEY, "unknown key '%s' (did you mean '%s%s%s'?)", shown,
			  dprefix, sep, key_leaf(best));
	else
		ctx_error(c, s, -DUET_ECFGKEY, "unknown key '%s'", shown);
}

static void walk_group(struct cfg_ctx *c, config_setting_t *g, const char *kprefix,
		       const char *dprefix, void *obj);

static void apply_scalar(struct cfg_ctx *c, const struct cfg_key *k, config_setting_t *s,
			 const char *dpath, void *obj)
{
	struct cfg_value v = { 0 };
	int t = config_setting_type(s);
	char msg[CFG_ERROR_LEN];
	int rc;

	switch (k->type) {
	case CFG_T_INT:
		if (t == CONFIG_TYPE_INT)
			v.i = config_setting_get_int(s);
		else if (t == CONFIG_TYPE_INT64)
			v.i = config_setting_get_int64(s);
		else
			goto bad_type;
		break;
	case CFG_T_FLOAT:
		if (t == CONFIG_TYPE_FLOAT)
			v.f = config_setting_get_float(s);
		else if (t == CONFIG_TYPE_INT)
			v.f = config_setting_get_int(s);
		else if (t == CONFIG_TYPE_INT64)
			v.f = (double)config_setting_get_int64(s);
		else
			goto bad_type;
		break;
	case CFG_T_BOOL:
		if (t != CONFIG_TYPE_BOOL)
			goto bad_type;
		v.b = config_setting_get_bool(s);
		break;
	case CFG_T_STRING:
	case CFG_T_ENUM:
		if (t != CONFIG_TYPE_STRING)
			goto bad_type;
		v.s = config_setting_get_string(s);
		if (!v.s)
			v.s = "";
		break;
	case CFG_T_GROUP:
	case CFG_T_LIST:
		DUET_ASSERT(!"apply_scalar on a group or list");
	}
	rc = key_set(k, &v, obj, c->base_dir, msg, sizeof(msg));
	if (rc < 0)
		ctx_error(c, s, rc, "%s: %s", dpath, msg);
	return;

bad_type:
	type_error(c, s, dpath, key_type_name(k));
}

static void apply_list(struct cfg_ctx *c, const struct cfg_key *k, config_setting_t *s,
		       const char *dpath, void *obj)
{
	char kprefix[CFG_PATH_LEN], edpath[CFG_PATH_LEN];
	int n, used;

	if (config_setting_type(s) != CONFIG_TYPE_LIST) {
		type_error(c, s, dpath, "a list ( { ... }, ... )");
		return;
	}
	n = config_setting_length(s);
	if (n < k->min || n > k->max)
		ctx_error(c, s, -DUET_ECFGRANGE, "%s: %d entries, out of range [%lld, %lld]", dpath,
			  n, (long long)k->min, (long long)k->max);
	used = n > k->max ? (int)k->max : n;
	snprintf(kprefix, sizeof(kprefix), "%s.[]", k->path);
	for (int i = 0; i < used; i++) {
		config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		void *elem = (char *)obj + k->off + (size_t)i * k->size;

		list_entry_defaults(k, elem);
		snprintf(edpath, sizeof(edpath), "%.100s[%d]", dpath, i);
		if (!config_setting_is_group(e)) {
			type_error(c, e, edpath, "a group");
			continue;
		}
		walk_group(c, e, kprefix, edpath, elem);
	}
	*(unsigned *)((char *)obj + k->count_off) = (unsigned)used;
}

/*
 * Required keys under kprefix that group g lacks.  A key inside a subgroup
 * that g has is left to the walk of that subgroup (or was reported as a type
 * error); one inside a subgroup g lacks is reported here, without a line.
 */
static void check_missing(struct cfg_ctx *c, config_setting_t *g, const char *kprefix,
			  const char *dprefix)
{
	size_t plen = strlen(kprefix);

	for (size_t i = 0; i < SCHEMA_LEN; i++) {
		const struct cfg_key *k = &schema[i];
		char rel[CFG_PATH_LEN], first[CFG_PATH_LEN];
		config_setting_t *at = g;
		const char *dot;

		if (!(k->flags & CFG_REQUIRED))
			continue;
		if (plen) {
			if (strncmp(k->path, kprefix, plen) != 0 || k->path[plen] != '.')
				continue;
			snprintf(rel, sizeof(rel), "%s", k->path + plen + 1);
		} else {
			snprintf(rel, sizeof(rel), "%s", k->path);
		}
		if (strchr(rel, '['))
			continue; /* inside a list: checked for each entry */
		dot = strchr(rel, '.');
		if (dot) {
			snprintf(first, sizeof(first), "%.*s", (int)(dot - rel), rel);
			if (config_setting_get_member(g, first))
				continue;
			at = NULL;
		} else if (config_setting_get_member(g, rel)) {
			continue;
		}
		ctx_error(c, at, -DUET_ECFGMISSING, "%s%s%s: required key missing", dprefix,
			  *dprefix ? "." : "", rel);
	}
}

static void walk_group(struct cfg_ctx *c, config_setting_t *g, const char *kprefix,
		       const char *dprefix, void *obj)
{
	int n = config_setting_length(g);

	for (int i = 0; i < n; i++) {
		config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
		const char *name = config_setting_name(s);
		char kpath[CFG_PATH_LEN], dpath[CFG_PATH_LEN];
		const struct cfg_key *k = NULL;
		int kn;

		if (!name)
			continue;
		kn = snprintf(kpath, sizeof(kpath), "%s%s%s", kprefix, *kprefix ? "." : "", name);
		snprintf(dpath, sizeof(dpath), "%s%s%s", dprefix, *dprefix ? "." : "", name);
		if (kn > 0 && (size_t)kn < sizeof(kpath))
			k = key_find(kpath);
		if (!k) {
			unknown_key(c, s, kprefix, dprefix, name);
			continue;
		}
		switch (k->type) {
		case CFG_T_GROUP:
			if (!config_setting_is_group(s))
				type_error(c, s, dpath, "a group { ... }");
			else
				walk_group(c, s, k->path, dpath, obj);
			break;
		case CFG_T_LIST:
			apply_list(c, k, s, dpath, obj);
			break;
		default:
			apply_scalar(c, k, s, dpath, obj);
		}
	}
	check_missing(c, g, kprefix, dprefix);
}

/* Checks that involve more than one key. */
static void cross_check(struct cfg_ctx *c, const struct duet_config *cfg)
{
	config_setting_t *list = config_setting_lookup(c->root, "partitions");
	bool can_prefill = false, can_decode = false;

	if (list && !config_setting_is_list(list))
		list = NULL;
	for (unsigned i = 0; list && i < cfg->n_partitions; i++) {
		const struct cfg_partition *p = &cfg->partitions[i];
		config_setting_t *e = config_setting_get_elem(list, i);

		for (unsigned j = 0; j < i && p->name[0]; j++) {
			if (strcmp(p->name, cfg->partitions[j].name) == 0) {
				ctx_error(
					c, e, -DUET_ECFGINVALID,
					"partitions[%u].name: duplicate partition name \"%s\" (also partitions[%u])",
					i, p->name, j);
				break;
			}
		}
		if (p->max_seqs > p->max_batch_tokens)
			ctx_error(c, e, -DUET_ECFGINVALID,
				  "partitions[%u].max_seqs: %d is more than max_batch_tokens %d", i,
				  p->max_seqs, p->max_batch_tokens);
		can_prefill |= p->role != CFG_ROLE_DECODE;
		can_decode |= p->role != CFG_ROLE_PREFILL;
	}
	if (list && cfg->n_partitions > 0 && !can_prefill)
		ctx_error(c, list, -DUET_ECFGINVALID,
			  "partitions: no partition can prefill (role \"prefill\" or \"mixed\")");
	if (list && cfg->n_partitions > 0 && !can_decode)
		ctx_error(c, list, -DUET_ECFGINVALID,
			  "partitions: no partition can decode (role \"decode\" or \"mixed\")");
	if (cfg->transport.encrypt && !cfg->transport.psk_file[0])
		ctx_error(c, config_setting_lookup(c->root, "transport.encrypt"), -DUET_ECFGINVALID,
			  "transport.encrypt: needs transport.psk_file");
}

int cfg__apply(config_setting_t *root, const char *name, const char *base_dir,
	       struct duet_config *out, struct cfg_errors *errs)
{
	struct cfg_ctx c = {
		.name = name,
		.base_dir = base_dir,
		.errs = errs,
		.root = root,
	};

	walk_group(&c, root, "", "", out);
	cross_check(&c, out);
	return errs->first;
}

/* --- printing --------------------------------------------------------------------------- */

static void print_indent(FILE *fp, int depth)
{
	for (int i = 0; i < depth; i++)
		fputs("    ", fp);
}

/* s as a libconfig string literal (which reads back to the same bytes). */
static void print_string(FILE *fp, const char *s)
{
	fputc('"', fp);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(fp, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", fp);
		else if (ch == '\t')
			fputs("\\t", fp);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(fp, "\\x%02x", ch);
		else
			fputc(ch, fp);
	}
	fputc('"', fp);
}

/* A float that reads back exactly and is never taken for an integer. */
static void print_float(FILE *fp, double f)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "%.15g", f);
	if (strtod(buf, NULL) != f)
		snprintf(buf, sizeof(buf), "%.17g", f);
	if (!strpbrk(buf, ".eEn"))
		strcat(buf, ".0");
	fputs(buf, fp);
}

/* The example list entry cfg_print_doc() is printing; -1 outside one. */
static int doc_entry = -1;

/* The value of k: from obj, or (obj NULL) the schema's default or example. */
static void print_value(FILE *fp, const struct cfg_key *k, const void *obj)
{
	const char *field = obj ? (const char *)obj + k->off : NULL;
	const char *name;

	if (!field && doc_entry >= 0 && k->entries[doc_entry]) {
		if (k->type == CFG_T_STRING || k->type == CFG_T_ENUM)
			print_string(fp, k->entries[doc_entry]);
		else
			fputs(k->entries[doc_entry], fp);
		return;
	}
	switch (k->type) {
	case CFG_T_INT:
		if (!field && (k->flags & CFG_REQUIRED) && k->example)
			fputs(k->example, fp);
		else
			fprintf(fp, "%d", field ? *(const int *)field : (int)k->def_i);
		break;
	case CFG_T_FLOAT:
		print_float(fp, field ? *(const double *)field : k->def_f);
		break;
	case CFG_T_BOOL:
		fputs((field ? *(const bool *)field : k->def_b) ? "true" : "false", fp);
		break;
	case CFG_T_ENUM:
		name = field ? enum_name(k, *(const int *)field) : k->def_s;
		print_string(fp, name ? name : "?");
		break;
	case CFG_T_STRING:
		if (field)
			name = field;
		else if (k->flags & CFG_REQUIRED)
			name = k->example;
		else
			name = k->def_s;
		print_string(fp, name ? name : "");
		break;
	case CFG_T_GROUP:
	case CFG_T_LIST:
		break;
	}
}

/* "# doc" and "# type, range; default" above a key. */
static void print_key_doc(FILE *fp, const struct cfg_key *k, int depth)
{
	print_indent(fp, depth);
	fprintf(fp, "# %s\n", k->doc);
	print_indent(fp, depth);
	fputs("# ", fp);
	switch (k->type) {
	case CFG_T_GROUP:
		fputs("group", fp);
		break;
	case CFG_T_LIST:
		fprintf(fp, "list of %lld..%lld groups", (long long)k->min, (long long)k->max);
		break;
	case CFG_T_INT:
		fprintf(fp, "integer, %s%lld..%lld", k->flags & CFG_ZERO_OK ? "0 or " : "",
			(long long)k->min, (long long)k->max);
		break;
	case CFG_T_FLOAT:
		fputs("number, ", fp);
		print_float(fp, k->fmin);
		fputs("..", fp);
		print_float(fp, k->fmax);
		break;
	case CFG_T_BOOL:
		fputs("boolean, true or false", fp);
		break;
	case CFG_T_STRING:
		fputs(k->flags & CFG_PATH ? "path" : "string", fp);
		if (k->min > 0)
			fprintf(fp, ", %lld..%lld bytes", (long long)k->min, (long long)k->max);
		else
			fprintf(fp, ", at most %lld bytes", (long long)k->max);
		break;
	case CFG_T_ENUM:
		fputs("one of", fp);
		for (const struct cfg_enum_val *e = k->values; e->name; e++)
			fprintf(fp, " \"%s\"%s", e->name, e[1].name ? "," : "");
		break;
	}
	if (k->flags & CFG_REQUIRED) {
		fputs("; required", fp);
	} else if (key_is_scalar(k)) {
		int entry = doc_entry;

		fputs("; default ", fp);
		doc_entry = -1; /* the schema's default, not the example entry's value */
		print_value(fp, k, NULL);
		doc_entry = entry;
	}
	fputc('\n', fp);
}

static void print_level(FILE *fp, const char *kprefix, const void *obj, int depth);

/* "name = ( { ... }, ... );" with n entries of obj (NULL: one documented example entry). */
static void print_list(FILE *fp, const struct cfg_key *k, const void *obj, unsigned n, int depth)
{
	char eprefix[CFG_PATH_LEN];

	snprintf(eprefix, sizeof(eprefix), "%s.[]", k->path);
	fprintf(fp, "%s =\n", key_leaf(k));
	print_indent(fp, depth);
	fputs("(\n", fp);
	for (unsigned j = 0; j < n; j++) {
		const char *elem = obj ? (const char *)obj + k->off + (size_t)j * k->size : NULL;

		print_indent(fp, depth + 1);
		fputs("{\n", fp);
		if (!obj)
			doc_entry = (int)j;
		print_level(fp, eprefix, elem, depth + 2);
		doc_entry = -1;
		print_indent(fp, depth + 1);
		fputs(j + 1 < n ? "},\n" : "}\n", fp);
	}
	print_indent(fp, depth);
	fputs(");\n", fp);
}

/* A list that may be empty: empty by default, with one example entry commented out. */
static void print_list_example(FILE *fp, const struct cfg_key *k, int depth)
{
	char *text = NULL, *line, *save = NULL;
	size_t len = 0;
	FILE *ms = open_memstream(&text, &len);

	if (ms) {
		print_list(ms, k, NULL, 1, 0);
		fclose(ms);
		/* The caller indented the first line already. */
		for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			if (line != text)
				print_indent(fp, depth);
			fprintf(fp, "# %s\n", line);
		}
		free(text);
	}
	print_indent(fp, depth);
	fprintf(fp, "%s = ( );\n", key_leaf(k));
}

/*
 * The keys directly inside kprefix, from obj (effective values) or, with
 * obj NULL, as documentation with defaults and one example list entry.
 */
static void print_level(FILE *fp, const char *kprefix, const void *obj, int depth)
{
	bool doc = obj == NULL, first = true;

	for (size_t i = 0; i < SCHEMA_LEN; i++) {
		const struct cfg_key *k = &schema[i];

		if (!key_is_child(k, kprefix))
			continue;
		if (doc) {
			if (!first || depth == 0)
				fputc('\n', fp);
			print_key_doc(fp, k, depth);
		}
		first = false;
		print_indent(fp, depth);
		if (k->type == CFG_T_GROUP) {
			fprintf(fp, "%s =\n", key_leaf(k));
			print_indent(fp, depth);
			fputs("{\n", fp);
			print_level(fp, k->path, obj, depth + 1);
			print_indent(fp, depth);
			fputs("};\n", fp);
		} else if (k->type == CFG_T_LIST && doc && k->min == 0) {
			print_list_example(fp, k, depth);
		} else if (k->type == CFG_T_LIST) {
			print_list(fp, k, obj,
				   obj ? *(const unsigned *)((const char *)obj + k->count_off)
				       : CFG_DOC_ENTRIES,
				   depth);
		} else {
			fprintf(fp, "%s = ", key_leaf(k));
			print_value(fp, k, obj);
			fputs(";\n", fp);
		}
	}
}

void cfg_print_doc(FILE *fp)
{
	fputs("# Duet configuration: every key with its type, range and default (libconfig syntax).\n"
	      "# Relative paths are resolved against the directory of the file that holds them.\n",
	      fp);
	print_level(fp, "", NULL, 0);
}

void cfg_print(FILE *fp, const struct duet_config *cfg)
{
	print_level(fp, "", cfg, 0);
}
