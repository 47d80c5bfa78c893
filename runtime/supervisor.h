/* SPDX-License-Identifier: MIT */
/*
 * The supervisor (DESIGN.md "Processes", "Request life"): duetd's serving
 * loop.  One worker process per configured partition, each started as
 * "duetd --worker N --fd K -c FILE" on its end of a SOCK_SEQPACKET
 * socketpair, and the OpenAI-compatible API on api.sock (the same routes on
 * admin.sock).
 *
 * Single-threaded: one epoll loop watches the HTTP servers, the worker
 * channels and a signalfd.  SIGHUP re-reads the configuration (through the
 * caller's reload hook) and sends the new log level to the workers;
 * SIGINT/SIGTERM drain: new requests get 503, workers get SHUTDOWN DRAIN
 * with SUP_DRAIN_MS, requests in flight finish, the sockets are removed.
 *
 * A worker that dies (or whose channel fails) is logged with its exit
 * status or signal, its requests in flight fail (503, or an SSE error
 * frame on a stream already begun), and it is restarted after a backoff
 * that doubles from SUP_BACKOFF_MIN_MS up to SUP_BACKOFF_MAX_MS (reset once
 * a worker stayed up SUP_BACKOFF_RESET_MS).  Before the daemon is up, a
 * worker that fails its setup stops the start-up instead.
 */
#ifndef DUET_SUPERVISOR_H
#define DUET_SUPERVISOR_H

#include <stdbool.h>

#include "runtime/config/config.h"

#define SUP_DRAIN_MS 10000	   /* SHUTDOWN DRAIN deadline given to workers */
#define SUP_KILL_GRACE_MS 3000	   /* after the drain deadline: SIGKILL what is left */
#define SUP_BACKOFF_MIN_MS 100	   /* first restart delay */
#define SUP_BACKOFF_MAX_MS 10000   /* longest restart delay */
#define SUP_BACKOFF_RESET_MS 30000 /* up this long: the next death starts from the minimum */

struct gguf_file;
struct model_desc;

struct sup_options {
	const char *config_path; /* passed to the workers; re-read on SIGHUP */
	const char *exe;	 /* binary the workers run ("/proc/self/exe") */
	bool verbose;		 /* passed to the workers as -v */
	/*
	 * SIGHUP: fill *next from config_path and apply its log level.
	 * Returns 0 or a negative code (the running configuration stays).
	 */
	int (*reload)(void *ctx, struct duet_config *next);
	void *reload_ctx;
};

/*
 * Serve until SIGINT/SIGTERM.  cfg is the loaded configuration (updated in
 * place by reloads); file and desc are the model opened at least
 * vocabulary-only (for the tokenizer and the chat template).  SIGINT,
 * SIGTERM, SIGHUP and SIGCHLD are blocked in the calling thread for the
 * duration.  Returns 0 after a clean drain, or a negative code when the
 * start-up failed (sockets, workers).
 */
int sup_run(const struct sup_options *opt, struct duet_config *cfg, const struct gguf_file *file,
	    const struct model_desc *desc);

#endif /* DUET_SUPERVISOR_H */
