/* SPDX-License-Identifier: MIT */
/*
 * The partition worker (DESIGN.md "Processes"): one process per partition
 * runs worker_run() on its end of the supervisor's socketpair.
 *
 * Life: HELLO as soon as the channel exists, then the model, backend, KV
 * pool and scheduler are built from the config, then READY (or, when that
 * fails, ERROR with req_id 0 and a non-zero exit).  Then the step loop: take
 * frames from the supervisor, run one scheduler step while any request is
 * waiting or running, and after each step send a TOKEN for every new token
 * of every request, in index order, and a DONE for every request that
 * finished.  STATS go out every WORKER_STATS_MS.
 *
 * Per request (SUBMIT req_id), what the supervisor receives:
 *   - when the SUBMIT asked for them (IPC_SUBMIT_LOGPROBS), a LOGPROBS frame
 *     right before each TOKEN, with the same index and token;
 *   - TOKENs with index 0, 1, 2 ... without gaps; the first has
 *     IPC_TOK_FIRST; when the request ends on a token (length, end of
 *     generation -- that token is sent too --, context full) that token has
 *     IPC_TOK_LAST and the finish reason;
 *   - exactly one DONE, last; a request that was cancelled or failed gets no
 *     LAST token, and a failure (bad SUBMIT, bad token id, prompt too long,
 *     scheduler full, forward step failed) sends an ERROR with the request's
 *     id just before its DONE (finish IPC_FINISH_ERROR).  A logit-bias
 *     entry for a token outside the vocabulary fails the request the same
 *     way, with the entry's token in the ERROR message.
 *   The one exception: a SUBMIT whose req_id is already in use gets an ERROR
 *   (-EEXIST) and nothing else; the running request is not touched.
 * CANCEL of an unknown or finished request, and PROMPT_CHUNKs of a request
 * that already failed, are ignored (the frames crossed).
 *
 * SHUTDOWN NOW cancels every request (each gets its DONE) and returns 0.
 * SHUTDOWN DRAIN refuses new SUBMITs (ERROR -ESHUTDOWN + DONE), lets the
 * admitted ones (prompts still arriving included) finish, and returns 0 when
 * none is left, or acts as NOW when its deadline passes.
 *
 * The worker never blocks on a supervisor that is slow to read: frames wait
 * in the channel's queue; when that is full the worker waits for the socket
 * (at most WORKER_SEND_TIMEOUT_MS) and then considers the supervisor dead.
 * Nothing is allocated per step beyond the scheduler's own work; a chunked
 * prompt is assembled in one buffer allocated at its SUBMIT.
 */
#ifndef DUET_WORKER_H
#define DUET_WORKER_H

#include "runtime/config/config.h"

#define WORKER_STATS_MS 200	    /* STATS period */
#define WORKER_SEND_TIMEOUT_MS 5000 /* a full send queue for this long: supervisor dead */
#define WORKER_FLUSH_MS 1000	    /* waiting for queued frames to leave at exit */

/* Process exit statuses worker_run returns. */
enum worker_exit {
	WORKER_EXIT_OK = 0,	 /* SHUTDOWN handled */
	WORKER_EXIT_SETUP = 1,	 /* bad partition index, model or engine failed (ERROR sent) */
	WORKER_EXIT_CHANNEL = 2, /* supervisor gone, protocol violation, or stopped reading */
};

/*
 * Serve partition partition_index of cfg on fd, the worker end of an
 * AF_UNIX SOCK_SEQPACKET socketpair.  Takes fd (closed on return, on every
 * path).  cfg must stay valid until the return.  Runs in the calling thread
 * (compute threads are the backend's).  Returns an enum worker_exit value,
 * meant as the process exit status.
 */
int worker_run(int fd, const struct duet_config *cfg, int partition_index);

/*
 * Test hook: sleep us microseconds after every scheduler step, so that tests
 * which cancel or shut down a running request are not racing a fast model.
 * 0 (the default) turns it off.
 */
void worker_set_step_delay_us(unsigned us);

#endif /* DUET_WORKER_H */
