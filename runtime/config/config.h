/* SPDX-License-Identifier: MIT */
/*
 * Duet configuration (libconfig files, e.g. etc/duet.cfg).
 *
 * One schema table (schema.c) lists every key with its type, range, default
 * and a one-line doc.  Validation, default filling, cfg_print_doc() and
 * cfg_print() are all driven by it.  Loading rejects syntax errors, unknown
 * keys, values of the wrong type, out-of-range values and missing required
 * keys; it reports every problem it finds (up to CFG_MAX_ERRORS), each as
 * one line "file:line: message" (or "file: message" when there is no line).
 *
 * struct duet_config is a plain value: nothing in it is allocated, it may be
 * copied, and there is nothing to free.  Relative paths in a config file are
 * resolved against the directory of that file.  @include is not supported.
 */
#ifndef DUET_CONFIG_H
#define DUET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/core/log.h"

#define CFG_MAX_PARTITIONS 64
#define CFG_MAX_CPUS 1024     /* CPU numbers 0..1023 */
#define CFG_NAME_MAX 32	      /* partition name: 1..31 bytes + NUL */
#define CFG_PATH_MAX 4096     /* resolved path + NUL */
#define CFG_SOCKET_DIR_MAX 96 /* resolved dir + NUL; leaves room for "/admin.sock" in sun_path */
#define CFG_CPULIST_MAX 256   /* cpus text + NUL */
#define CFG_MAX_ERRORS 32     /* messages kept by struct cfg_errors */
#define CFG_ERROR_LEN 256     /* bytes per message, NUL included; longer ones are cut */
#define CFG_MAX_FILE_BYTES (1u << 20) /* cfg_load_file() refuses larger files */

/* Set of CPU numbers 0..CFG_MAX_CPUS-1; bit (n % 64) of bits[n / 64] is CPU n. */
struct cfg_cpuset {
	uint64_t bits[CFG_MAX_CPUS / 64];
};

enum cfg_role {
	CFG_ROLE_MIXED,	  /* prefill and decode with continuous batching in one partition */
	CFG_ROLE_PREFILL, /* prompts only; KV goes to a decode partition */
	CFG_ROLE_DECODE,  /* continues requests prefilled elsewhere */
};

enum cfg_device_kind {
	CFG_DEVICE_CPU,
	CFG_DEVICE_CUDA,
};

enum cfg_kv_dtype {
	CFG_KV_F16,
	CFG_KV_F32,
};

enum cfg_transport_driver {
	CFG_XPORT_AUTO, /* the best driver each pair of partitions supports */
	CFG_XPORT_SHM,
	CFG_XPORT_TCP,
	CFG_XPORT_VERBS,
	CFG_XPORT_CUDA_IPC,
	CFG_XPORT_NCCL,
};

struct cfg_partition {
	char name[CFG_NAME_MAX]; /* [A-Za-z0-9_-]{1,31}, unique */
	enum cfg_role role;
	char device[16];		  /* as written: "cpu" or "cuda:N" */
	enum cfg_device_kind device_kind; /* parsed from device */
	int device_index;		  /* N of "cuda:N"; 0 for "cpu" */
	char cpus[CFG_CPULIST_MAX];	  /* as written, e.g. "0-3,8"; "" = all CPUs */
	struct cfg_cpuset cpuset;	  /* parsed from cpus; empty = all CPUs */
	unsigned n_cpus;		  /* CPUs in cpuset; 0 = all CPUs */
	int threads;			  /* compute threads; 0 = one per CPU of the set */
	int numa_node;			  /* NUMA node for memory; -1 = automatic */
	int max_batch_tokens;		  /* tokens in one forward step, all sequences */
	int max_seqs;			  /* sequences in one batch */
};

struct cfg_model {
	char path[CFG_PATH_MAX]; /* GGUF file, resolved against the config's directory */
	char served_name[128];	 /* name in the API; "" = the model file's name */
	int context;		 /* tokens per sequence; 0 = the model's own context length */
	char chat_template[64];	 /* built-in template name; "" = from the model file */
};

struct cfg_kv {
	int block_tokens; /* tokens per KV block, a power of two */
	int memory_mb;	  /* KV pool per partition, MiB (used when blocks == 0) */
	int blocks;	  /* KV blocks per partition; 0 = derive from memory_mb */
	enum cfg_kv_dtype dtype;
	bool hugepages;	      /* back the pool with huge pages */
	bool prefix_cache;    /* keep and share full prompt blocks */
	int lease_timeout_ms; /* a block reservation expires after this, ms */
};

struct cfg_transport {
	enum cfg_transport_driver driver;
	char tcp_listen[128];	     /* "host:port" for the tcp driver; "" = do not listen */
	char psk_file[CFG_PATH_MAX]; /* pre-shared key file, resolved; "" = none */
	bool encrypt;		     /* encrypt tcp transfers (needs psk_file) */
	bool checksum;		     /* completion records carry a checksum the decoder verifies */
};

#define CFG_MAX_TENANTS 64

/* A uid whose requests share one prefix-cache tenant (and its name in status). */
struct cfg_tenant {
	int uid;
	char name[32]; /* [A-Za-z0-9_.-] */
};

struct cfg_api {
	char socket_dir[CFG_SOCKET_DIR_MAX]; /* "" = /run/duet (root), else $XDG_RUNTIME_DIR/duet */
	char group[32];			     /* group of api.sock; "" = the daemon's group */
	char admin_group[32];		     /* group of admin.sock; "" = the daemon's group */
	int max_body_kb;		     /* largest request body, KiB */
	int max_queue;			     /* queued requests before 429 */
	int queue_timeout_ms;		     /* wait for prefill/decode capacity before 503, ms */
	int default_max_tokens;		     /* max_tokens when a request gives none */
	int max_tokens;			     /* largest max_tokens a request may ask */
	int max_n;			     /* largest n */
	int max_logprobs;		     /* largest top_logprobs; 0: none */
	char audit_log[CFG_PATH_MAX];	     /* "" = <socket_dir>/audit.log */
	int canary_interval_ms;		     /* 0: no canary */
	int max_attempts;		     /* starts of a request, restarts included */
	int breaker_failures;		     /* consecutive failures that open a breaker */
	int breaker_cooldown_ms;	     /* open breaker -> canary probe, ms */
	struct cfg_tenant tenants[CFG_MAX_TENANTS]; /* uid -> tenant; others: their own */
	unsigned n_tenants;
};

struct cfg_slo {
	int ttft_ms;	   /* time-to-first-token target, ms */
	int tpot_ms;	   /* time-per-output-token target, ms */
	double attainment; /* fraction of requests that must meet both targets */
};

struct cfg_log {
	enum duet_log_level level;
	enum duet_log_format format;
};

struct duet_config {
	char name[64]; /* appliance name, [A-Za-z0-9_-] */
	struct cfg_model model;
	struct cfg_kv kv;
	struct cfg_partition partitions[CFG_MAX_PARTITIONS];
	unsigned n_partitions; /* entries of partitions[] in use */
	struct cfg_transport transport;
	struct cfg_api api;
	struct cfg_slo slo;
	struct cfg_log log;
};

/*
 * Errors found by one load, in the order found.  first is the code of the
 * first error (0 when none); the load functions return it.
 */
struct cfg_errors {
	unsigned count;	  /* messages in msg[] */
	unsigned dropped; /* errors beyond CFG_MAX_ERRORS, counted but not kept */
	int first;
	char msg[CFG_MAX_ERRORS][CFG_ERROR_LEN]; /* "file:line: message", no newline */
};

void cfg_errors_init(struct cfg_errors *errs);
/* Append one message (code is a negative error code); keeps the first code. */
void cfg_errors_add(struct cfg_errors *errs, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* One message per line, then "(N more errors)" if any were dropped. */
void cfg_errors_print(FILE *fp, const struct cfg_errors *errs);

/* Every key at its default; no partitions, empty model.path. */
void cfg_defaults(struct duet_config *out);

/*
 * Load and validate a config file.  errs may be NULL.  Returns 0, or the code
 * of the first error: -errno when the file cannot be read (-EFBIG above
 * CFG_MAX_FILE_BYTES), else a -DUET_ECFG* code.  *out is always filled
 * (defaults plus whatever was valid) but must not be used after an error.
 * Does not open the model file or any other file the config names.
 */
int cfg_load_file(const char *path, struct duet_config *out, struct cfg_errors *errs);

/*
 * The same for config text.  name is shown as the file name in messages;
 * relative paths are resolved against base_dir (left relative when NULL).
 */
int cfg_load_string(const char *text, const char *name, const char *base_dir,
		    struct duet_config *out, struct cfg_errors *errs);

/*
 * Every key in libconfig syntax: a comment with its doc, type, range and
 * default above it, then the key at its default (an example for required
 * keys).  The output is itself a valid config.
 */
void cfg_print_doc(FILE *fp);

/* The effective values of cfg in libconfig syntax; loading it gives cfg back. */
void cfg_print(FILE *fp, const struct duet_config *cfg);

/* Schema keys, in table order: "kv.block_tokens", "partitions.[].name", ... */
size_t cfg_schema_count(void);
const char *cfg_schema_path(size_t i); /* NULL when i >= cfg_schema_count() */

/*
 * Parse a CPU list such as "0-3,8,10-11" ("" is the empty set) into *set and
 * the number of CPUs in it.  Returns 0, or -DUET_ECFGINVALID with the reason
 * in why (malformed list, reversed range, CPU >= CFG_MAX_CPUS).
 */
int cfg_cpulist_parse(const char *s, struct cfg_cpuset *set, unsigned *count, char *why,
		      size_t whylen);
bool cfg_cpuset_has(const struct cfg_cpuset *set, unsigned cpu);

/* "cpu" or "cuda:N" (N in 0..63, decimal) -> kind, index; -DUET_ECFGINVALID otherwise. */
int cfg_device_parse(const char *s, enum cfg_device_kind *kind, int *index);

/* "mixed", "prefill", "decode"; "?" for other values. */
const char *cfg_role_name(enum cfg_role role);
/*
 * The KV transfer driver (drivers/net) transport.driver selects: "shm" for
 * "auto" (the partitions of one duetd share a host) and "shm", "tcp" for
 * "tcp"; NULL for one this build does not have.
 */
const char *cfg_xfer_driver(const struct duet_config *cfg);

#endif /* DUET_CONFIG_H */
