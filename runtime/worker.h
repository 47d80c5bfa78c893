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
 * Split prefill/decode (some partition is not mixed; DESIGN.md "Request
 * life").  Every worker then opens the transfer driver and, per XFER_CONNECT
 * / XFER_DESC, one endpoint per peer partition.
 *   Prefill side: SHIP(rid) right before SUBMIT(rid) (+ PROMPT_CHUNKs) says
 *   where that request's KV goes.  At the SUBMIT the SHIP is checked (link
 *   to that partition connected, block_bytes equal to ours, n_blocks ==
 *   ceil(n_prompt / block_tokens)); the request runs with max_tokens 1 and,
 *   after each layer of each step, its blocks of that layer are written into
 *   the lease (adjacent leased blocks in one write), except table entries
 *   below the SHIP's first, which the decode side has cached: the whole
 *   prompt is computed, the record's bytes and writes count what was sent,
 *   its checksum covers the whole table.  It sends no TOKEN or
 *   LOGPROBS: once every write has completed (before the next step may
 *   reuse its blocks) PREFILLED(rid) carries the completion record (first
 *   token, its logprobs when asked, checksum with IPC_SHIP_CHECKSUM), then
 *   DONE(rid) (finish of the first token, n_generated 1).  The SHIP's
 *   ttl_ms sets the lease deadline, counted from the SHIP's arrival: no
 *   write is posted from then on, and a request that would post one fails
 *   (-ETIMEDOUT, "lease deadline passed (<ttl_ms> ms) before its KV was
 *   written"; checked at the SUBMIT too).  The wait for writes already
 *   posted is not cut short by it (WORKER_XFER_TIMEOUT_MS): their source
 *   blocks stay ours until they complete.  A transfer that fails (post
 *   refused, lease deadline passed, a write completed with an error, the
 *   link lost or made anew, writes not completed after
 *   WORKER_XFER_TIMEOUT_MS) fails only its request: ERROR(rid, "KV transfer
 *   to partition <name> failed: <why>") + DONE(rid, ERROR), no PREFILLED.
 *   Decode side: LEASE -> LEASED reserves blocks.  The prompt's leading
 *   blocks cached here under the LEASE's salt and tokens (at most
 *   (n_prompt - 1) / block_tokens, with the prefix cache on) lead the table,
 *   held by the lease until it is adopted, freed or expires (LEASED
 *   n_cached), and only the rest is reserved.  ADOPT(rid) right before
 *   SUBMIT(rid) (+ chunks; same prompt, the real sampling and limits) hands
 *   over the completion record.  When the prompt is complete the record is
 *   checked (n_tokens == n_prompt, n_layers, lease live, logprobs present
 *   with the SUBMIT's n_top when asked, IPC_KV_CHECKSUM over the lease's
 *   whole table, the SUBMIT's prompt and salt those of its cached prefix)
 *   and the request decodes from there: TOKEN 0 is the record's
 *   first token.  A lease past its deadline is expired at that check
 *   (counted in STATS.leases_expired, as the timer would) and is stale.
 *   The fresh blocks of a lease that expired (timer or that check) stay
 *   quarantined for WORKER_KV_QUARANTINE_MS before another request may
 *   have them: a write the prefill side posted before the deadline may
 *   land until WORKER_XFER_TIMEOUT_MS after it.  STATS.kv_leased counts
 *   them with the leased blocks (neither is free); LEASE_FREE, sent once
 *   the prefill side finished or died, frees a lease's blocks at once.
 *   A record that fails a check releases the lease and sends ERROR(rid,
 *   "KV transfer record rejected: <why> (lease L epoch E)") + DONE(rid,
 *   ERROR); STATS.xfer_rejected counts it.
 *   A SHIP or ADOPT for a req_id in use gets ERROR -EEXIST and nothing else.
 *   SUBMITs of ADOPTs are taken while draining (the request was admitted).
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

#include <stdbool.h>

#include "drivers/net/xfer.h"
#include "runtime/config/config.h"

#define WORKER_STATS_MS 200	     /* STATS period */
#define WORKER_SEND_TIMEOUT_MS 5000  /* a full send queue for this long: supervisor dead */
#define WORKER_FLUSH_MS 1000	     /* waiting for queued frames to leave at exit */
#define WORKER_XFER_TIMEOUT_MS 10000 /* a KV write not posted / completed for this long fails */
/* An expired lease's fresh blocks are not reused for this long (a late write may land). */
#define WORKER_KV_QUARANTINE_MS (WORKER_XFER_TIMEOUT_MS + 1000)

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

/*
 * Test hooks of the KV transfer, for tests that run workers as threads of
 * one process; they act on every worker of the process and are off by
 * default.
 *
 * worker_test_xfer_driver: workers opened from now on use this transfer
 * driver ("loopback") instead of the configured one; NULL: the config's.
 *
 * worker_test_xfer_timeout_ms: WORKER_XFER_TIMEOUT_MS becomes ms (a dropped
 * write then fails its request quickly); 0: the default.
 *
 * worker_test_kv_quarantine_ms: workers opened from now on quarantine the
 * blocks of expired leases for ms instead of WORKER_KV_QUARANTINE_MS (the
 * xfer timeout, as the hook above sets it, + 1 s); 0: the default.
 *
 * worker_test_inject: arm fault on the nth write (1 = the first) posted
 * over the KV link of the next SHIP request a prefill worker starts (its
 * SUBMIT passed the checks), counted from that moment on that link.
 * Several faults armed before the request all go to it.  nth 0 disarms
 * those not yet taken.  The worker arms them from its own thread, with
 * xfer_loopback_inject() (other drivers: logged, nothing armed).
 *
 * worker_test_release: while on, every worker delivers the writes its
 * endpoints hold (XFER_FAULT_DELAY, REORDER) each time it looks at their
 * completions, whether they were held before the call or after.
 */
void worker_test_xfer_driver(const char *driver);
void worker_test_xfer_timeout_ms(unsigned ms);
void worker_test_kv_quarantine_ms(unsigned ms);
void worker_test_inject(enum xfer_fault fault, unsigned nth);
void worker_test_release(bool on);

#endif /* DUET_WORKER_H */
