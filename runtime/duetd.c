// SPDX-License-Identifier: MIT
/*
 * duetd: the Duet appliance daemon.
 *
 * It loads and validates the configuration and the model it names, reports
 * what it loaded, and becomes the supervisor (runtime/supervisor.h): one
 * worker process per partition and the OpenAI API on api.sock, until
 * SIGINT/SIGTERM (SIGHUP re-reads the configuration and applies the log
 * level).  "duetd --worker N --fd K -c FILE" is how the supervisor starts a
 * worker (internal; not for people).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/config/config.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/core/sdnotify.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"
#include "runtime/supervisor.h"
#include "runtime/worker.h"

#define DUET_VERSION "0.1.0"
#define DEFAULT_CONFIG "/etc/duet/duet.cfg"

/* Exit codes: 0 ok, 1 runtime or validation error, 2 usage error. */
enum { EXIT_USAGE = 2 };

struct loaded_model {
	struct gguf_file *file;
	struct model_desc *desc;
};

static void usage(FILE *fp)
{
	fprintf(fp,
		"usage: duetd [-c FILE] [--check] [--print-config-doc] [--version]\n"
		"\n"
		"  -c, --config FILE     configuration file (default %s)\n"
		"      --check           validate the configuration and the model file, then exit\n"
		"                        (0 when valid, 1 with every error listed otherwise)\n"
		"      --print-config     print the effective configuration (with --check)\n"
		"      --print-config-doc print every configuration key with its type, range,\n"
		"                        default and meaning, as a valid config file, and exit\n"
		"  -v, --verbose         log at debug level (overrides log.level)\n"
		"  -V, --version         print the version and the optional parts built in\n"
		"  -h, --help            this text\n",
		DEFAULT_CONFIG);
}

static void print_version(void)
{
	printf("duetd %s\n", DUET_VERSION);
	printf("optional parts found when built: CUDA toolkit %s, NCCL %s, libibverbs %s\n",
	       DUET_HAVE_CUDA ? "yes" : "no", DUET_HAVE_NCCL ? "yes" : "no",
	       DUET_HAVE_VERBS ? "yes" : "no");
	printf("compute backends: cpu (CUDA backend and verbs/NCCL drivers not written yet)\n");
}

/* Load and validate config; print every error.  Returns 0 or the first error. */
static int load_config(const char *path, struct duet_config *cfg)
{
	struct cfg_errors errs;
	int ret;

	ret = cfg_load_file(path, cfg, &errs);
	if (ret) {
		cfg_errors_print(stderr, &errs);
		log_error("config", "%s: %u error(s), the first: %s", path,
			  errs.count + errs.dropped, errs.count ? errs.msg[0] : "?");
	}
	return ret;
}

/*
 * Open the model file, map it onto the schema and check it against the
 * config.  flags: 0 (every tensor checked) or MODEL_LOAD_VOCAB_ONLY.
 */
static int load_model(const struct duet_config *cfg, unsigned flags, struct loaded_model *lm)
{
	char err[768] = "", summary[512];
	int ret;

	ret = gguf_open(cfg->model.path, &lm->file, err, sizeof(err));
	if (ret) {
		log_error("model", "%s", err);
		return ret;
	}
	ret = model_desc_load(lm->file, flags, &lm->desc, err, sizeof(err));
	if (ret) {
		log_error("model", "%s: %s", cfg->model.path, err);
		goto close_file;
	}
	if (cfg->model.context > 0 && (uint32_t)cfg->model.context > lm->desc->n_ctx) {
		log_error("model", "model.context = %d exceeds the %u tokens %s was trained for",
			  cfg->model.context, lm->desc->n_ctx, cfg->model.path);
		ret = -DUET_ECFGRANGE;
		goto free_desc;
	}
	if (lm->desc->vocab_only) {
		/* The summary's weight figures are zero without tensors: say what was read. */
		log_info("model",
			 "%s: %s '%s': ctx %u, vocab %u; vocabulary read (workers load "
			 "the weights)",
			 cfg->model.path, model_arch_name(lm->desc->arch), lm->desc->name,
			 lm->desc->n_ctx, lm->desc->n_vocab);
	} else {
		model_desc_summary(lm->desc, summary, sizeof(summary));
		log_info("model", "%s: %s", cfg->model.path, summary);
	}
	return 0;

free_desc:
	model_desc_free(lm->desc);
	lm->desc = NULL;
close_file:
	gguf_close(lm->file);
	lm->file = NULL;
	return ret;
}

static void unload_model(struct loaded_model *lm)
{
	model_desc_free(lm->desc);
	gguf_close(lm->file);
	lm->desc = NULL;
	lm->file = NULL;
}

static void apply_log_config(const struct duet_config *cfg, bool verbose)
{
	duet_log_set_level(verbose ? DUET_LOG_DEBUG : cfg->log.level);
	duet_log_set_format(cfg->log.format);
}

static void log_partitions(const struct duet_config *cfg)
{
	for (unsigned i = 0; i < cfg->n_partitions; i++) {
		const struct cfg_partition *p = &cfg->partitions[i];
		log_info("config", "partition %s: role %s, device %s, cpus %s, threads %d", p->name,
			 cfg_role_name(p->role), p->device, p->cpus[0] ? p->cpus : "all",
			 p->threads);
	}
}

struct reload_ctx {
	const char *config_path;
	bool verbose;
};

/* The supervisor's SIGHUP hook: re-read the file, apply its log settings. */
static int reload_config(void *ctx, struct duet_config *next)
{
	const struct reload_ctx *rc = ctx;
	int ret;

	ret = load_config(rc->config_path, next);
	if (ret == 0)
		apply_log_config(next, rc->verbose);
	return ret;
}

/* "--worker N --fd K": serve partition N on fd K; the exit status is worker_run's. */
static int run_worker(const char *config_path, const char *part, const char *fdarg, bool verbose)
{
	static struct duet_config cfg;
	char ident[48], *end;
	long idx, fd;

	idx = strtol(part, &end, 10);
	if (*end || idx < 0 || idx >= CFG_MAX_PARTITIONS)
		return EXIT_USAGE;
	fd = strtol(fdarg, &end, 10);
	if (*end || fd < 0 || fd > 65535)
		return EXIT_USAGE;
	if (load_config(config_path, &cfg))
		return WORKER_EXIT_SETUP;
	apply_log_config(&cfg, verbose);
	if ((unsigned)idx < cfg.n_partitions) {
		snprintf(ident, sizeof(ident), "duetd[%s]", cfg.partitions[idx].name);
		duet_log_set_ident(ident);
	}
	/* Testing only: slow every step down so that tests can act on a request in flight. */
	if (getenv("DUET_TEST_STEP_DELAY_US")) {
		unsigned long us = strtoul(getenv("DUET_TEST_STEP_DELAY_US"), NULL, 10);

		if (us && us <= 1000000) {
			log_warn("worker", "DUET_TEST_STEP_DELAY_US: every step waits %lu us (testing)", us);
			worker_set_step_delay_us((unsigned)us);
		}
	}
	return worker_run((int)fd, &cfg, (int)idx);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "print-config", no_argument, NULL, 'p' },
		{ "print-config-doc", no_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ "worker", required_argument, NULL, 'W' },
		{ "fd", required_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = DEFAULT_CONFIG, *worker = NULL, *worker_fd = NULL;
	bool check = false, print_config = false, verbose = false;
	static struct duet_config cfg; /* large: keep it off the stack */
	struct loaded_model lm = { 0 };
	int c, ret;

	duet_log_set_ident("duetd");
	while ((c = getopt_long(argc, argv, "c:vVh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'k':
			check = true;
			break;
		case 'p':
			print_config = true;
			break;
		case 'd':
			cfg_print_doc(stdout);
			return 0;
		case 'v':
			verbose = true;
			break;
		case 'V':
			print_version();
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case 'W':
			worker = optarg;
			break;
		case 'F':
			worker_fd = optarg;
			break;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "duetd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (verbose)
		duet_log_set_level(DUET_LOG_DEBUG);
	if (worker || worker_fd) {
		if (!worker || !worker_fd) {
			fprintf(stderr, "duetd: --worker and --fd go together\n");
			return EXIT_USAGE;
		}
		return run_worker(config_path, worker, worker_fd, verbose);
	}

	if (load_config(config_path, &cfg))
		return 1;
	apply_log_config(&cfg, verbose);
	log_info("config", "%s: valid; appliance '%s', %u partition(s)", config_path, cfg.name,
		 cfg.n_partitions);
	log_partitions(&cfg);
	if (print_config)
		cfg_print(stdout, &cfg);

	/* --check validates every tensor; serving needs the vocabulary (the workers load the rest). */
	ret = load_model(&cfg, check ? 0 : MODEL_LOAD_VOCAB_ONLY, &lm);
	if (ret)
		return 1;
	if (check) {
		printf("duetd: %s: configuration and model are valid\n", config_path);
		unload_model(&lm);
		return 0;
	}

	struct reload_ctx rc = { config_path, verbose };
	struct sup_options so = { .config_path = config_path,
				  .exe = "/proc/self/exe",
				  .verbose = verbose,
				  .reload = reload_config,
				  .reload_ctx = &rc };
	ret = sup_run(&so, &cfg, lm.file, lm.desc);
	unload_model(&lm);
	return ret ? 1 : 0;
}
