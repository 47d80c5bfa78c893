// SPDX-License-Identifier: MIT
/*
 * duetd: the Duet appliance daemon.
 *
 * Today it loads and validates the configuration and the model it names,
 * reports what it loaded, and stays up until SIGINT/SIGTERM (SIGHUP re-reads
 * the configuration and applies the log level).  The supervisor, workers and
 * the socket API are built on this in later steps (see DESIGN.md).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/config/config.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/core/sdnotify.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"

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
		log_error("config", "%s: %u error(s); not starting", path,
			  errs.count + errs.dropped);
	}
	return ret;
}

/* Open the model file, map it onto the schema and check it against the config. */
static int load_model(const struct duet_config *cfg, struct loaded_model *lm)
{
	char err[768] = "", summary[512];
	int ret;

	ret = gguf_open(cfg->model.path, &lm->file, err, sizeof(err));
	if (ret) {
		log_error("model", "%s", err);
		return ret;
	}
	ret = model_desc_load(lm->file, 0, &lm->desc, err, sizeof(err));
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
	model_desc_summary(lm->desc, summary, sizeof(summary));
	log_info("model", "%s: %s", cfg->model.path, summary);
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

/* Wait for signals until asked to stop.  SIGHUP re-reads the config. */
static int serve(const char *config_path, struct duet_config *cfg, bool verbose)
{
	sigset_t set;
	siginfo_t si;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		log_error("duetd", "sigprocmask: %s", strerror(errno));
		return -errno;
	}
	log_info("duetd",
		 "up (pid %d): configuration and model validated; serving arrives with the "
		 "supervisor and API; Ctrl-C or SIGTERM stops",
		 (int)getpid());
	sdn_notify("READY=1");
	sdn_status("configuration and model validated; %u partition(s)", cfg->n_partitions);

	/* Under systemd with WatchdogSec=, ping at half the interval. */
	uint64_t wd_usec = sdn_watchdog_usec();
	struct timespec wait = { .tv_sec = (time_t)(wd_usec / 2 / 1000000),
				 .tv_nsec = (long)(wd_usec / 2 % 1000000) * 1000 };
	for (;;) {
		int sig = wd_usec ? sigtimedwait(&set, &si, &wait) : sigwaitinfo(&set, &si);
		if (sig < 0) {
			if (errno == EAGAIN) {
				sdn_notify("WATCHDOG=1");
				continue;
			}
			if (errno == EINTR)
				continue;
			log_error("duetd", "sigwaitinfo: %s", strerror(errno));
			return -errno;
		}
		if (sig == SIGHUP) {
			struct duet_config next;
			log_info("duetd", "SIGHUP: re-reading %s", config_path);
			sdn_notify("RELOADING=1");
			if (load_config(config_path, &next) == 0) {
				*cfg = next;
				apply_log_config(cfg, verbose);
				log_info("duetd", "configuration reloaded (log level %s)",
					 duet_log_level_name(duet_log_get_level()));
			} else {
				log_warn("duetd",
					 "reload failed; keeping the running configuration");
			}
			sdn_notify("READY=1");
			continue;
		}
		log_info("duetd", "%s: shutting down", strsignal(sig));
		sdn_notify("STOPPING=1");
		return 0;
	}
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
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = DEFAULT_CONFIG;
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

	if (load_config(config_path, &cfg))
		return 1;
	apply_log_config(&cfg, verbose);
	log_info("config", "%s: valid; appliance '%s', %u partition(s)", config_path, cfg.name,
		 cfg.n_partitions);
	log_partitions(&cfg);
	if (print_config)
		cfg_print(stdout, &cfg);

	ret = load_model(&cfg, &lm);
	if (ret)
		return 1;
	if (check) {
		printf("duetd: %s: configuration and model are valid\n", config_path);
		unload_model(&lm);
		return 0;
	}

	ret = serve(config_path, &cfg, verbose);
	unload_model(&lm);
	return ret ? 1 : 0;
}
