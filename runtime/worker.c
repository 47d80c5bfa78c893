// SPDX-License-Identifier: MIT
/*
 * The partition worker's step loop; the protocol it keeps is described in
 * worker.h, the frames in runtime/ipc/ipc.h.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "drivers/backend.h"
#include "drivers/net/xfer.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"
#include "runtime/ipc/ipc.h"
#include "runtime/model/gguf.h"
#include "runtime/model/llama.h"
#include "runtime/model/model.h"
#include "runtime/model/sampler.h"
#include "runtime/model/tokenizer.h"
#include "runtime/sched/sched.h"
#include "runtime/worker.h"

#define SUB "worker"
#define MAX_FRAMES_PER_TURN 64 /* frames taken between two steps */
#define MIN_REQUESTS 256       /* requests known at once, at least */
#define NS_PER_MS 1000000ull

/* One request the supervisor submitted; rid == 0: the slot is free. */

/* Test hook (worker_set_step_delay_us): a pause after every step. */
static unsigned step_delay_us;

void worker_set_step_delay_us(unsigned us)
{
	step_delay_us = us;
}

/*
 * Test hooks of the KV transfer (worker.h).  Faults armed by
 * worker_test_inject() wait here until a prefill worker starts a SHIP
 * request and arms them on that request's endpoint from its own thread
 * (an endpoint is used by one thread at a time).
 */
#define TEST_MAX_FAULTS 8
static const char *test_driver;
static _Atomic unsigned test_timeout_ms;
static _Atomic unsigned test_quarantine_ms;
static atomic_bool test_release;
static pthread_mutex_t test_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	enum xfer_fault fault;
	unsigned nth;
} test_faults[TEST_MAX_FAULTS];
static unsigned test_n_faults;

void worker_test_xfer_driver(const char *driver)
{
	test_driver = driver;
}

void worker_test_xfer_timeout_ms(unsigned ms)
{
	atomic_store(&test_timeout_ms, ms);
}

void worker_test_kv_quarantine_ms(unsigned ms)
{
	atomic_store(&test_quarantine_ms, ms);
}

void worker_test_inject(enum xfer_fault fault, unsigned nth)
{
	pthread_mutex_lock(&test_lock);
	if (nth == 0) {
		test_n_faults = 0;
	} else if (test_n_faults < TEST_MAX_FAULTS) {
		test_faults[test_n_faults].fault = fault;
		test_faults[test_n_faults++].nth = nth;
	}
	pthread_mutex_unlock(&test_lock);
}

void worker_test_release(bool on)
{
	atomic_store(&test_release, on);
}

/* How long a KV write may stay unposted or uncompleted (WORKER_XFER_TIMEOUT_MS unless tested). */
static unsigned xfer_timeout_ms(void)
{
	unsigned ms = atomic_load(&test_timeout_ms);

	return ms ? ms : WORKER_XFER_TIMEOUT_MS;
}

/*
 * How long an expired lease's fresh blocks stay quarantined: the longest a
 * write posted before its deadline may take to land (the prefill side's
 * xfer timeout), + 1 s (WORKER_KV_QUARANTINE_MS unless tested).
 */
static unsigned kv_quarantine_ms(void)
{
	unsigned ms = atomic_load(&test_quarantine_ms);

	return ms ? ms : xfer_timeout_ms() + (WORKER_KV_QUARANTINE_MS - WORKER_XFER_TIMEOUT_MS);
}

/* The faults tests armed go onto ep, the link of the SHIP request starting now. */
static void test_arm_faults(struct xfer_ep *ep, uint64_t rid)
{
	pthread_mutex_lock(&test_lock);
	for (unsigned i = 0; i < test_n_faults; i++) {
		int ret = xfer_loopback_inject(ep, test_faults[i].fault, test_faults[i].nth);

		if (ret)
			log_warn(SUB, "test hook: fault %d not armed: %s", test_faults[i].fault,
				 duet_strerror(ret));
		else
			log_info(SUB, "test hook: fault %d on write %u of request %llu's link",
				 test_faults[i].fault, test_faults[i].nth, (unsigned long long)rid);
	}
	test_n_faults = 0;
	pthread_mutex_unlock(&test_lock);
}

/*
 * Prefill side: where a SHIP request's KV goes (the decode worker's lease)
 * and how its writes are doing.  Allocated at SHIP with its two tables.
 */
struct wship {
	uint32_t partition;	  /* the decode partition; its endpoint is w->xep[partition] */
	const struct xfer_ep *ep; /* that endpoint when the request started; identity only */
	struct kv_lease_ref lease;
	uint32_t region, blocks_total;
	uint64_t block_bytes;
	uint32_t n_blocks, flags; /* IPC_SHIP_* */
	uint32_t first;		  /* entries [0, first) are cached there: computed, not written */
	uint32_t gen;		  /* low 32 bits of this request's wr_ids (high: its slot) */
	uint32_t ttl_ms;	  /* the SHIP's: the lease's time left when it was sent */
	uint64_t deadline;	  /* ns: SHIP arrival + ttl_ms; no write is posted from then on */
	int32_t *dst;		  /* [n_blocks] leased block of each table entry */
	int32_t *src;		  /* [n_blocks] this pool's block behind each entry; -1: not yet */
	uint64_t posted, completed, failed; /* writes */
	uint64_t bytes;			    /* posted */
	uint64_t t_first_post, t_last_done; /* ns */
	int err;			    /* first failure (< 0); 0 while all is well */
	char why[160];			    /* what failed, for the ERROR frame */
};

struct wreq {
	uint64_t rid;		/* supervisor's request id */
	uint64_t sid;		/* scheduler id; 0 while the prompt is being assembled */
	int32_t *prompt;	/* [n_prompt] while PROMPT_CHUNKs arrive, else NULL */
	uint32_t n_prompt;	/* whole prompt; 0: a SHIP or ADOPT slot before its SUBMIT */
	uint32_t n_have;	/* prompt tokens received so far */
	uint32_t n_sent;	/* TOKEN frames sent */
	struct smp_bias *bias;	/* [q.sampling.n_logit_bias] from the SUBMIT, until sched_submit */
	struct sched_request q; /* what goes to sched_submit (q.prompt set then) */
	struct wship *ship;	/* SHIP: the KV goes to a decode partition (prefill side) */
	struct ipc_kv_record *adopt; /* ADOPT: the KV is already here, leased (decode side) */
};

/* Send buffers too big for the stack. */
union wout {
	struct ipc_leased leased;
	struct ipc_xfer_desc desc;
};

struct worker {
	const struct duet_config *cfg;
	const struct cfg_partition *part;
	int index;
	struct ipc_chan *ch;
	struct ipc_msg *msg; /* receive buffer */
	union wout *out; /* send buffers too big for the stack (per worker: tests run several) */

	struct gguf_file *f;
	struct model_desc *m;
	struct tokenizer *tok;
	struct backend *be;
	struct llm *llm;
	struct sched *s;
	int cpus[CFG_MAX_CPUS]; /* the partition's CPU list, for the backend */
	int n_vocab, n_ctx;
	uint64_t block_bytes; /* one block of one layer, the unit of KV transfer */

	struct wreq *reqs; /* [n_reqs] */
	int n_reqs;
	int n_active; /* slots in use */
	/* ship_layer: the request of each run of this step, found at layer 0. */
	struct wreq **run_reqs; /* [max_runs] */
	int max_runs;		/* the partition's max_seqs: no step has more runs */
	int n_run_reqs;		/* run_reqs[0..n_run_reqs) are this step's */

	bool draining;
	uint64_t drain_deadline; /* ns; 0 = none */
	int fatal;		 /* channel dead or supervisor stuck: exit */
	int step_err;		 /* the last sched_step error, for failed requests */

	uint64_t next_stats; /* ns */
	uint64_t prompt_tokens, gen_tokens;
	uint64_t step_ns_total, step_ns_max;

	/* KV transfer, when the configuration splits prefill from decode. */
	struct xfer_dev *xdev;
	struct xfer_mr *xmr; /* the KV pool: a write source (prefill) or target (decode) */
	struct xfer_ep *xep[CFG_MAX_PARTITIONS];
	bool xup[CFG_MAX_PARTITIONS];  /* xep[i] connected (XFER_READY 0 sent) */
	int xdead[CFG_MAX_PARTITIONS]; /* xep[i] failed (xfer_poll's code); 0: alive */
	struct xfer_caps xcaps;	       /* of the driver: write size and scatter limits */
	bool kv_host;		       /* the KV pool is host memory (checksums readable) */
	bool warned_csum;	       /* said once that a device pool goes without checksums */
	uint32_t ship_gen;	       /* last wship.gen handed out */
	uint64_t xfer_rejected;	       /* ADOPT records refused, rx_rejected of endpoints gone */
	/* A SHIP or ADOPT that got no slot: its SUBMIT (the next frame) fails with this. */
	uint64_t refuse_rid;
	int refuse_code;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool is_eog(void *ctx, int32_t t)
{
	return tok_is_eog(ctx, t);
}

/* --- sending ------------------------------------------------------------------------ */

/*
 * Send one frame; waits (bounded) for room when the queue is full.  Sets
 * w->fatal when the channel is dead or the supervisor stopped reading.
 */
static int send_frame(struct worker *w, enum ipc_type type, uint64_t id, const void *p,
		      uint32_t len)
{
	uint64_t deadline = 0;
	int ret;

	if (w->fatal)
		return w->fatal;
	for (;;) {
		ret = ipc_send(w->ch, type, id, p, len);
		if (ret == 0)
			return 0;
		if (ret == -EINVAL) {
			log_alert(SUB, "%s frame for request %llu failed validation",
				  ipc_type_name(type), (unsigned long long)id);
			return ret;
		}
		if (ret != -ENOBUFS)
			break;
		uint64_t now = mono_ns();
		if (!deadline)
			deadline = now + WORKER_SEND_TIMEOUT_MS * NS_PER_MS;
		if (now >= deadline) {
			log_error(SUB, "supervisor stopped reading: send queue full for %d ms",
				  WORKER_SEND_TIMEOUT_MS);
			w->fatal = -ETIMEDOUT;
			return w->fatal;
		}
		struct pollfd pfd = { .fd = ipc_chan_fd(w->ch), .events = POLLOUT };
		if (poll(&pfd, 1, (int)((deadline - now) / NS_PER_MS) + 1) < 0 && errno != EINTR) {
			ret = -errno;
			log_error(SUB, "poll: %s", strerror(errno));
			break;
		}
		ret = ipc_flush(w->ch);
		if (ret < 0)
			break;
	}
	log_error(SUB, "channel to the supervisor: %s (%s)", duet_strerror(ret),
		  ipc_chan_error_reason(w->ch));
	w->fatal = ret;
	return ret;
}

/* Wait up to WORKER_FLUSH_MS for queued frames to leave, before exiting. */
static void flush_out(struct worker *w)
{
	uint64_t deadline = mono_ns() + WORKER_FLUSH_MS * NS_PER_MS;

	while (ipc_flush(w->ch) > 0) {
		uint64_t now = mono_ns();
		if (now >= deadline)
			break;
		struct pollfd pfd = { .fd = ipc_chan_fd(w->ch), .events = POLLOUT };
		poll(&pfd, 1, (int)((deadline - now) / NS_PER_MS) + 1);
	}
}

static void send_error(struct worker *w, uint64_t id, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ERROR frame (code < 0); the message is also logged (warn for a request, error otherwise). */
static void send_error(struct worker *w, uint64_t id, int code, const char *fmt, ...)
{
	struct ipc_error e;
	va_list ap;

	memset(&e, 0, sizeof(e));
	e.code = code < 0 ? code : -EIO;
	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
	va_end(ap);
	if (id)
		log_warn(SUB, "request %llu: %s", (unsigned long long)id, e.msg);
	else
		log_error(SUB, "%s", e.msg);
	send_frame(w, IPC_ERROR, id, &e, sizeof(e));
}

static void send_done(struct worker *w, uint64_t id, enum ipc_finish finish, uint32_t n_prompt,
		      const struct sched_info *in, uint32_t n_sent)
{
	struct ipc_done d = {
		.finish = finish,
		.n_prompt = n_prompt,
		.n_generated = n_sent,
		.t_done_ns = mono_ns(),
	};

	if (in) {
		d.n_cached = (uint32_t)in->n_cached;
		d.n_preempted = (uint32_t)in->n_preempted;
		d.t_first_ns = in->t_first_token;
		d.t_done_ns = in->t_finish ? in->t_finish : d.t_done_ns;
		d.t_arrival_ns = in->t_arrival;
		d.t_sched_ns = in->t_first_sched;
	}
	send_frame(w, IPC_DONE, id, &d, sizeof(d));
}

/* --- the request table -------------------------------------------------------------- */

static struct wreq *req_find(struct worker *w, uint64_t rid)
{
	for (int i = 0, seen = 0; i < w->n_reqs && seen < w->n_active; i++) {
		if (!w->reqs[i].rid)
			continue;
		if (w->reqs[i].rid == rid)
			return &w->reqs[i];
		seen++;
	}
	return NULL;
}

static struct wreq *req_alloc(struct worker *w, uint64_t rid)
{
	for (int i = 0; i < w->n_reqs; i++) {
		if (!w->reqs[i].rid) {
			memset(&w->reqs[i], 0, sizeof(w->reqs[i]));
			w->reqs[i].rid = rid;
			w->n_active++;
			return &w->reqs[i];
		}
	}
	return NULL;
}

static struct wreq *req_find_sid(struct worker *w, uint64_t sid)
{
	for (int i = 0, seen = 0; i < w->n_reqs && seen < w->n_active; i++) {
		if (!w->reqs[i].rid)
			continue;
		if (w->reqs[i].sid == sid)
			return &w->reqs[i];
		seen++;
	}
	return NULL;
}

static struct kv_lease_ref adopt_ref(const struct ipc_kv_record *k)
{
	return (struct kv_lease_ref){ .id = k->lease_id, .epoch = k->epoch };
}

static void req_free(struct worker *w, struct wreq *r)
{
	if (r->sid)
		sched_release(w->s, r->sid);
	else if (r->adopt)
		/* Never adopted: the leased blocks go back (a no-op when the lease is gone). */
		sched_lease_release(w->s, adopt_ref(r->adopt));
	duet_free(r->prompt);
	duet_free(r->bias);
	duet_free(r->ship);
	duet_free(r->adopt);
	memset(r, 0, sizeof(*r));
	w->n_active--;
}

/* A request that never reached the scheduler failed: ERROR, DONE, slot freed. */
static void req_fail(struct worker *w, struct wreq *r, int code, const char *what)
{
	send_error(w, r->rid, code, "%s", what);
	send_done(w, r->rid, IPC_FINISH_ERROR, r->n_prompt, NULL, 0);
	req_free(w, r);
}

static enum ipc_finish finish_of(enum sched_finish f)
{
	switch (f) {
	case SCHED_FINISH_LENGTH:
		return IPC_FINISH_LENGTH;
	case SCHED_FINISH_EOG:
		return IPC_FINISH_EOG;
	case SCHED_FINISH_CONTEXT:
		return IPC_FINISH_CONTEXT;
	case SCHED_FINISH_CANCELLED:
		return IPC_FINISH_CANCELLED;
	case SCHED_FINISH_ERROR:
	case SCHED_FINISH_NONE:
	default:
		return IPC_FINISH_ERROR;
	}
}

/* The LOGPROBS frame of token r->n_sent, which goes out right before its TOKEN. */
static void send_logprobs(struct worker *w, const struct wreq *r, const struct sched_info *in)
{
	const struct sched_logprob *lp = sched_token_logprobs(in, (int)r->n_sent);
	struct ipc_logprobs f;

	DUET_ASSERT(lp != NULL && in->n_top <= IPC_MAX_TOP_LOGPROBS);
	f.index = r->n_sent;
	f.token = lp[0].token;
	f.logprob = lp[0].logprob;
	f.n_top = (uint32_t)in->n_top;
	for (int i = 0; i < in->n_top; i++)
		f.top[i] = (struct ipc_top_logprob){ .token = lp[1 + i].token,
						     .logprob = lp[1 + i].logprob };
	send_frame(w, IPC_LOGPROBS, r->rid, &f, ipc_logprobs_len(f.n_top));
}

/* --- KV transfer: the prefill side (SHIP) ------------------------------------------- */

static void ship_fail(struct wship *sh, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Record the request's first transfer failure; later ones add nothing. */
static void ship_fail(struct wship *sh, int code, const char *fmt, ...)
{
	va_list ap;

	if (sh->err)
		return;
	sh->err = code < 0 ? code : -EIO;
	va_start(ap, fmt);
	vsnprintf(sh->why, sizeof(sh->why), fmt, ap);
	va_end(ap);
}

/* Writes posted and not completed yet. */
static uint64_t ship_outstanding(const struct wship *sh)
{
	return sh->posted - sh->completed - sh->failed;
}

static const char *part_name(const struct worker *w, uint32_t p)
{
	return p < w->cfg->n_partitions ? w->cfg->partitions[p].name : "?";
}

/* The ERROR text of a failed transfer (sh->err set): what ship_fail() recorded. */
static void ship_errmsg(const struct worker *w, const struct wship *sh, char *buf, size_t len)
{
	snprintf(buf, len, "KV transfer to partition %s failed: %s", part_name(w, sh->partition),
		 sh->why);
}

/* No write goes out after the lease deadline: the decode side may have reused the blocks. */
static void ship_fail_deadline(struct wship *sh)
{
	ship_fail(sh, -ETIMEDOUT, "lease deadline passed (%u ms) before its KV was written",
		  sh->ttl_ms);
}

/*
 * The link to partition p failed or is being replaced: every request
 * shipping there fails.  abandon: its endpoint goes away, so the writes
 * still in flight will never complete (count them failed).
 */
static void ship_link_lost(struct worker *w, uint32_t p, bool abandon, int code, const char *why)
{
	for (int i = 0, seen = 0; i < w->n_reqs && seen < w->n_active; i++) {
		struct wreq *r = &w->reqs[i];

		if (!r->rid)
			continue;
		seen++;
		if (!r->ship || r->ship->partition != p)
			continue;
		if (abandon)
			r->ship->failed += ship_outstanding(r->ship);
		ship_fail(r->ship, code, "%s", why);
	}
}

/* One completion, counted for the request its wr_id names; late ones of a gone request drop. */
static void on_wc(struct worker *w, const struct xfer_wc *wc, uint64_t now)
{
	uint64_t slot = wc->wr_id >> 32;
	struct wship *sh;

	if (wc->op != XFER_WC_WRITE || slot >= (uint64_t)w->n_reqs)
		return;
	sh = w->reqs[slot].rid ? w->reqs[slot].ship : NULL;
	if (!sh || sh->gen != (uint32_t)wc->wr_id || !ship_outstanding(sh))
		return;
	sh->t_last_done = now;
	if (wc->status == XFER_WC_OK) {
		sh->completed++;
		return;
	}
	sh->failed++;
	ship_fail(sh, -EIO, "a write completed with %s", xfer_wc_status_str(wc->status));
}

/* Take the completions of every endpoint; a failed link fails the requests shipping over it. */
static void xfer_pump(struct worker *w)
{
	struct xfer_wc wc[32];
	uint64_t now = mono_ns();

	for (unsigned p = 0; p < w->cfg->n_partitions && p < CFG_MAX_PARTITIONS; p++) {
		struct xfer_ep *ep = w->xep[p];
		int n;

		if (!ep || w->xdead[p])
			continue;
		if (atomic_load(&test_release))
			xfer_loopback_release(ep); /* test hook; -EOPNOTSUPP off loopback */
		while ((n = xfer_poll(ep, wc, 32)) > 0) {
			for (int i = 0; i < n; i++)
				on_wc(w, &wc[i], now);
		}
		if (n < 0) {
			char why[96];

			w->xdead[p] = n;
			snprintf(why, sizeof(why), "the KV link failed: %s", duet_strerror(n));
			log_error(SUB, "partition %s: KV link to partition %s failed: %s",
				  w->part->name, part_name(w, p), duet_strerror(n));
			ship_link_lost(w, p, false, n, why);
		}
	}
}

/* Wait a little for completions on the endpoint r ships over (or just a little). */
static void ship_idle(struct worker *w, const struct wship *sh)
{
	struct xfer_ep *ep = w->xep[sh->partition];
	struct pollfd pfd = { .fd = ep && ep == sh->ep ? xfer_event_fd(ep) : -1, .events = POLLIN };

	poll(&pfd, 1, 1);
}

/*
 * Wait until every write of r has completed (at most WORKER_XFER_TIMEOUT_MS):
 * before its blocks can be freed and reused, since a driver may still be
 * reading them.  Not cut short by the lease deadline: what is in flight
 * was posted before it, and the blocks are ours to free only afterwards.
 */
static void ship_wait(struct worker *w, struct wreq *r)
{
	struct wship *sh = r->ship;
	unsigned timeout_ms = xfer_timeout_ms();
	uint64_t deadline = mono_ns() + timeout_ms * NS_PER_MS;

	for (;;) {
		xfer_pump(w);
		if (!ship_outstanding(sh))
			return;
		if (mono_ns() >= deadline) {
			ship_fail(sh, -ETIMEDOUT, "%llu of %llu writes not completed after %u ms",
				  (unsigned long long)ship_outstanding(sh),
				  (unsigned long long)sh->posted, timeout_ms);
			return;
		}
		ship_idle(w, sh);
	}
}

/*
 * One write: sg[0..nsg) (total bytes, this pool) to blocks dst.. of layer
 * `layer` in the lease.  A full send queue is waited out, up to
 * WORKER_XFER_TIMEOUT_MS.  Nothing is posted once the lease deadline has
 * passed: the decode side may have given the blocks to someone else.
 * Failure fails the request (returns < 0).
 */
static int ship_post(struct worker *w, struct wreq *r, int layer, int32_t dst,
		     const struct xfer_sge *sg, unsigned nsg, uint64_t total)
{
	struct wship *sh = r->ship;
	struct xfer_write wr = {
		.wr_id = (uint64_t)(r - w->reqs) << 32 | sh->gen,
		.sg = sg,
		.nsg = nsg,
		.remote_region = sh->region,
		.remote_offset =
			((uint64_t)layer * sh->blocks_total + (uint64_t)dst) * sh->block_bytes,
	};
	uint64_t deadline = 0;
	int ret;

	for (;;) {
		struct xfer_ep *ep = w->xep[sh->partition];
		uint64_t now = mono_ns();

		if (sh->err)
			return sh->err; /* a completion failed while we waited */
		if (now >= sh->deadline) {
			ship_fail_deadline(sh);
			return sh->err;
		}
		if (!ep || ep != sh->ep || w->xdead[sh->partition]) {
			ret = -ENOTCONN;
			break;
		}
		ret = xfer_post_write(ep, &wr);
		if (ret != -EAGAIN)
			break;
		if (!deadline) {
			deadline = now + xfer_timeout_ms() * NS_PER_MS;
		} else if (now >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		xfer_pump(w);
		ship_idle(w, sh);
	}
	if (ret) {
		ship_fail(sh, ret, "posting a write of layer %d: %s", layer, duet_strerror(ret));
		return ret;
	}
	sh->posted++;
	sh->bytes += total;
	if (!sh->t_first_post)
		sh->t_first_post = mono_ns();
	return 0;
}

/*
 * One run of r's table entries for one layer: entries whose leased blocks
 * are adjacent go as one write, and within it adjacent blocks of this pool
 * as one scatter entry.  Entries below the SHIP's first are only noted (the
 * checksum covers them): the decode side has them cached.
 */
static void ship_run(struct worker *w, struct wreq *r, int layer, const struct sched_kv_run *run)
{
	struct wship *sh = r->ship;
	struct xfer_sge sg[XFER_MAX_SGE];
	unsigned nsg = 0, max_sge = w->xcaps.max_sge;
	uint64_t total = 0;
	int64_t next = -1; /* the leased block that would extend the current write */
	int32_t dst0 = -1;

	if (max_sge == 0 || max_sge > XFER_MAX_SGE)
		max_sge = XFER_MAX_SGE;
	if (run->first < 0 || run->n < 1 ||
	    (uint64_t)run->first + (uint64_t)run->n > sh->n_blocks) {
		ship_fail(sh, -EINVAL, "table entries [%d, %d) written, the lease has %u blocks",
			  run->first, run->first + run->n, sh->n_blocks);
		return;
	}
	for (int i = 0; i < run->n; i++) {
		int e = run->first + i;
		size_t off, len;

		if (llm_kv_range(w->llm, layer, run->blocks[i], 1, &off, &len) ||
		    len != sh->block_bytes) {
			ship_fail(sh, -EINVAL, "block %d of layer %d is outside the KV pool",
				  run->blocks[i], layer);
			return;
		}
		sh->src[e] = run->blocks[i];
		if ((uint32_t)e < sh->first)
			continue;
		if (nsg > 0 && sh->dst[e] == next && total + len <= w->xcaps.max_write) {
			struct xfer_sge *last = &sg[nsg - 1];

			if (last->offset + last->len == off) {
				last->len += len;
				total += len;
				next++;
				continue;
			}
			if (nsg < max_sge) {
				sg[nsg++] = (struct xfer_sge){ .mr = w->xmr,
							       .offset = off,
							       .len = len };
				total += len;
				next++;
				continue;
			}
		}
		if (nsg > 0 && ship_post(w, r, layer, dst0, sg, nsg, total))
			return;
		sg[0] = (struct xfer_sge){ .mr = w->xmr, .offset = off, .len = len };
		nsg = 1;
		total = len;
		dst0 = sh->dst[e];
		next = (int64_t)dst0 + 1;
	}
	if (nsg > 0)
		ship_post(w, r, layer, dst0, sg, nsg, total);
}

/*
 * The scheduler's layer hook: after layer `layer` of a step is in the pool,
 * post the writes of every shipping request's run.  A request whose
 * transfer failed stops posting; the step goes on for the others (0).
 */
static int ship_layer(void *ctx, int layer, const struct sched_kv_run *runs, int n_runs)
{
	struct worker *w = ctx;

	/* runs[] is the same for every layer of a step, and no slot is freed during it. */
	if (layer == 0) {
		w->n_run_reqs = n_runs < w->max_runs ? n_runs : w->max_runs;
		for (int k = 0; k < w->n_run_reqs; k++)
			w->run_reqs[k] = req_find_sid(w, runs[k].id);
	}
	for (int k = 0; k < n_runs; k++) {
		struct wreq *r = k < w->n_run_reqs ? w->run_reqs[k] : req_find_sid(w, runs[k].id);

		if (!r || !r->ship) {
			log_alert(SUB, "KV of scheduler request %llu has no destination",
				  (unsigned long long)runs[k].id);
			continue;
		}
		if (!r->ship->err)
			ship_run(w, r, layer, &runs[k]);
	}
	xfer_pump(w);
	return 0;
}

/*
 * The transfer checksum of table entries blocks[0..n) of this pool, every
 * layer (ipc_kv_checksum order: layer by layer, entries in table order).
 */
static int kv_checksum(const struct worker *w, const int32_t *blocks, uint32_t n, uint64_t *out)
{
	struct be_region pool;
	uint64_t h = IPC_KV_CHECKSUM_SEED;
	int ret = llm_kv_pool(w->llm, &pool);

	for (uint32_t l = 0; ret == 0 && l < w->m->n_layers; l++) {
		for (uint32_t i = 0; ret == 0 && i < n; i++) {
			size_t off, len;

			ret = llm_kv_range(w->llm, (int)l, blocks[i], 1, &off, &len);
			if (ret == 0)
				h = ipc_kv_checksum(h, (const uint8_t *)pool.base + off, len);
		}
	}
	*out = h;
	return ret;
}

/*
 * Whether transfers of this pool carry a checksum: only a host pool can be
 * read for one (computed when shipping, verified when adopting).  A device
 * pool goes without, said once.
 */
static bool kv_checksummed(struct worker *w)
{
	if (!w->kv_host && !w->warned_csum) {
		log_warn(SUB,
			 "partition %s: KV pool in device memory: transfers go without checksum",
			 w->part->name);
		w->warned_csum = true;
	}
	return w->kv_host;
}

/* A running request's table after the step: a block replaced by an identical cached one. */
static void ship_track(struct worker *w, struct wreq *r)
{
	struct wship *sh = r->ship;
	const int32_t *t;
	int n = sched_blocks(w->s, r->sid, &t);

	for (int i = 0; i < n && (uint32_t)i < sh->n_blocks; i++) {
		if (sh->src[i] >= 0)
			sh->src[i] = t[i];
	}
}

/* Every write of a finished request completed: its PREFILLED record.  0, or it fails. */
static int ship_record(struct worker *w, struct wreq *r, const struct sched_info *in)
{
	struct wship *sh = r->ship;
	struct ipc_kv_record k = {
		.lease_id = sh->lease.id,
		.n_tokens = r->n_prompt,
		.epoch = sh->lease.epoch,
		.n_layers = w->m->n_layers,
		.first_token = in->tokens[0],
		.bytes = sh->bytes,
		.t_first_ns = in->t_first_token,
		.xfer_ns =
			sh->t_last_done > sh->t_first_post ? sh->t_last_done - sh->t_first_post : 0,
		.writes = (uint32_t)sh->posted,
	};
	const struct sched_logprob *lp = sched_token_logprobs(in, 0);

	for (uint32_t i = 0; i < sh->n_blocks; i++) {
		if (sh->src[i] < 0) {
			ship_fail(sh, -EIO, "table entry %u of %u was never written", i,
				  sh->n_blocks);
			return sh->err;
		}
	}
	if ((sh->flags & IPC_SHIP_CHECKSUM) && kv_checksummed(w)) {
		int ret = kv_checksum(w, sh->src, sh->n_blocks, &k.checksum);

		if (ret) {
			ship_fail(sh, ret, "checksum: %s", duet_strerror(ret));
			return sh->err;
		}
		k.flags |= IPC_KV_CHECKSUM;
	}
	if (r->q.logprobs && lp && in->n_top <= IPC_MAX_TOP_LOGPROBS) {
		k.flags |= IPC_KV_LOGPROBS;
		k.first_logprob = lp[0].logprob;
		k.n_top = (uint32_t)in->n_top;
		for (int i = 0; i < in->n_top; i++)
			k.top[i] = (struct ipc_top_logprob){ .token = lp[1 + i].token,
							     .logprob = lp[1 + i].logprob };
	}
	log_debug(SUB, "request %llu: KV shipped to partition %s: %llu bytes in %u writes, %llu us",
		  (unsigned long long)r->rid, part_name(w, sh->partition),
		  (unsigned long long)k.bytes, k.writes, (unsigned long long)(k.xfer_ns / 1000));
	send_frame(w, IPC_PREFILLED, r->rid, &k, ipc_kv_record_len(k.n_top));
	return 0;
}

/*
 * collect() for a SHIP request, which sends no TOKEN frames.  Running: note
 * blocks the step replaced; failed: stop it.  Finished: wait for its writes
 * (the next step may reuse its blocks), then PREFILLED + DONE, or ERROR +
 * DONE.  The slot is freed unless it is still running.
 */
static void ship_collect(struct worker *w, struct wreq *r, const struct sched_info *in)
{
	struct wship *sh = r->ship;
	enum ipc_finish why;

	if (in->state != SCHED_FINISHED) {
		if (!sh->err) {
			ship_track(w, r);
			return;
		}
		ship_wait(w, r);
		sched_cancel(w->s, r->sid, mono_ns());
	} else {
		ship_wait(w, r);
	}
	why = finish_of(in->finish);
	if (!sh->err && in->n_gen >= 1 &&
	    (why == IPC_FINISH_LENGTH || why == IPC_FINISH_EOG || why == IPC_FINISH_CONTEXT) &&
	    ship_record(w, r, in) == 0) {
		send_done(w, r->rid, why, r->n_prompt, in, 1);
	} else if (sh->err) {
		char msg[IPC_ERRMSG_MAX];

		ship_errmsg(w, sh, msg, sizeof(msg));
		send_error(w, r->rid, sh->err, "%s", msg);
		send_done(w, r->rid, IPC_FINISH_ERROR, r->n_prompt, in, 0);
	} else if (why == IPC_FINISH_CANCELLED) {
		send_done(w, r->rid, why, r->n_prompt, in, 0);
	} else {
		send_error(w, r->rid, w->step_err ? w->step_err : -EIO,
			   "request failed in the scheduler: %s",
			   duet_strerror(w->step_err ? w->step_err : -EIO));
		send_done(w, r->rid, IPC_FINISH_ERROR, r->n_prompt, in, 0);
	}
	req_free(w, r);
}

/*
 * Send every token not yet sent, and DONE for finished requests (whose
 * slots are freed).  step_ns: the duration of the step that produced them.
 */
static void collect(struct worker *w, uint64_t step_ns)
{
	int n_active = w->n_active; /* req_free() below lowers w->n_active */

	for (int i = 0, seen = 0; i < w->n_reqs && seen < n_active && !w->fatal; i++) {
		struct wreq *r = &w->reqs[i];

		if (!r->rid)
			continue;
		seen++;
		if (!r->sid)
			continue;
		const struct sched_info *in = sched_get(w->s, r->sid);
		DUET_ASSERT(in != NULL);
		if (r->ship) {
			ship_collect(w, r, in);
			continue;
		}
		bool fin = in->state == SCHED_FINISHED;
		enum ipc_finish why = fin ? finish_of(in->finish) : IPC_FINISH_NONE;
		bool on_token = why == IPC_FINISH_LENGTH || why == IPC_FINISH_EOG ||
				why == IPC_FINISH_CONTEXT;

		for (; r->n_sent < (uint32_t)in->n_gen && !w->fatal; r->n_sent++) {
			bool last = on_token && r->n_sent + 1 == (uint32_t)in->n_gen;

			if (r->q.logprobs)
				send_logprobs(w, r, in);
			struct ipc_token t = {
				.token = in->tokens[r->n_sent],
				.index = r->n_sent,
				.flags = (r->n_sent == 0 ? IPC_TOK_FIRST : 0u) |
					 (last ? IPC_TOK_LAST : 0u),
				.finish = last ? why : IPC_FINISH_NONE,
				.t_ns = in->t_tokens[r->n_sent],
				.step_ns = step_ns,
			};
			send_frame(w, IPC_TOKEN, r->rid, &t, sizeof(t));
			w->gen_tokens++;
		}
		if (!fin || w->fatal)
			continue;
		if (why == IPC_FINISH_ERROR)
			send_error(w, r->rid, w->step_err ? w->step_err : -EIO,
				   "request failed in the scheduler: %s",
				   duet_strerror(w->step_err ? w->step_err : -EIO));
		send_done(w, r->rid, why, r->n_prompt, in, r->n_sent);
		req_free(w, r);
	}
}

/* --- KV transfer: the decode side (ADOPT) ------------------------------------------- */

/*
 * The completion record of r's transfer, checked against its SUBMIT and the
 * lease, then the request joins the scheduler decoding (sched_adopt).  On
 * failure the lease is gone too, err says why, and the rejection is counted.
 */
static int adopt_start(struct worker *w, struct wreq *r, char *err, size_t errlen)
{
	const struct ipc_kv_record *k = r->adopt;
	struct kv_lease_ref ref = adopt_ref(k);
	struct sched_logprob lp[1 + IPC_MAX_TOP_LOGPROBS];
	uint32_t bt = (uint32_t)llm_block_tokens(w->llm);
	uint32_t need = (r->n_prompt + bt - 1) / bt;
	uint32_t n_top = r->q.n_top_logprobs < w->n_vocab ? (uint32_t)r->q.n_top_logprobs
							  : (uint32_t)w->n_vocab;
	const int32_t *blocks;
	char why[160];
	int n, ret = -EINVAL;

	/*
	 * A lease past its deadline goes now, counted as expired, as the STATS
	 * timer would have done: the answer does not depend on which came first.
	 */
	sched_expire_leases(w->s, mono_ns());
	n = kv_lease_blocks(sched_pool(w->s), ref, &blocks);
	if (k->n_tokens != r->n_prompt) {
		snprintf(why, sizeof(why), "it covers %u prompt tokens, the prompt has %u",
			 k->n_tokens, r->n_prompt);
	} else if (k->n_layers != w->m->n_layers) {
		snprintf(why, sizeof(why), "it covers %u layers, the model has %u", k->n_layers,
			 w->m->n_layers);
	} else if (n < 0) {
		ret = n;
		snprintf(why, sizeof(why), "stale lease (expired, released, or an older epoch)");
	} else if ((uint32_t)n < need) {
		snprintf(why, sizeof(why), "the lease holds %d blocks, the prompt needs %u", n,
			 need);
	} else if (r->q.logprobs && !(k->flags & IPC_KV_LOGPROBS)) {
		snprintf(why, sizeof(why), "no logprobs for a request that asks for them");
	} else if (r->q.logprobs && k->n_top != n_top) {
		snprintf(why, sizeof(why), "logprobs with %u alternatives, the request asks for %u",
			 k->n_top, n_top);
	} else {
		uint64_t sum = k->checksum;

		ret = 0;
		if ((k->flags & IPC_KV_CHECKSUM) && kv_checksummed(w))
			ret = kv_checksum(w, blocks, need, &sum);
		if (ret) {
			snprintf(why, sizeof(why), "checksum: %s", duet_strerror(ret));
		} else if (sum != k->checksum) {
			ret = -EBADMSG;
			snprintf(why, sizeof(why), "checksum mismatch");
		} else {
			lp[0] = (struct sched_logprob){ .token = k->first_token,
							.logprob = k->first_logprob };
			for (uint32_t i = 0; i < k->n_top && r->q.logprobs; i++)
				lp[1 + i] = (struct sched_logprob){ .token = k->top[i].token,
								    .logprob = k->top[i].logprob };
			ret = sched_adopt(w->s, &r->q, ref, k->first_token,
					  r->q.logprobs ? lp : NULL, mono_ns(), &r->sid);
			if (ret == 0)
				return 0;
			r->sid = 0;
			snprintf(why, sizeof(why), "%s",
				 ret == -ESTALE	     ? "stale lease (expired or released)"
				 : ret == -ETIMEDOUT ? "the lease expired"
				 : ret == -EILSEQ ? "prompt or salt differ from the cached prefix"
				 : ret == -EBUSY  ? "scheduler full"
						  : duet_strerror(ret));
		}
	}
	sched_lease_release(w->s, ref); /* -ESTALE when it is gone already */
	if (ret != -EBUSY && ret != -ENOMEM)
		w->xfer_rejected++;
	snprintf(err, errlen, "KV transfer record rejected: %s (lease %d epoch %llu)", why,
		 k->lease_id, (unsigned long long)k->epoch);
	return ret;
}

/*
 * Hand a complete prompt to the scheduler (or, after ADOPT, the transferred
 * KV); on failure the request fails.
 */
static void req_start(struct worker *w, struct wreq *r, const int32_t *prompt)
{
	char err[IPC_ERRMSG_MAX] = "";
	int ret;

	r->q.prompt = prompt;
	r->q.n_prompt = (int)r->n_prompt;
	if (r->adopt) {
		ret = adopt_start(w, r, err, sizeof(err));
	} else if (r->ship && r->ship->err) {
		ret = r->ship->err;
		ship_errmsg(w, r->ship, err, sizeof(err));
	} else {
		ret = sched_submit(w->s, &r->q, mono_ns(), &r->sid);
	}
	duet_free(r->prompt);
	r->prompt = NULL;
	r->q.prompt = NULL;
	duet_free(r->bias); /* the sampler has its own copy */
	r->bias = NULL;
	r->q.sampling.logit_bias = NULL;
	r->q.sampling.n_logit_bias = 0;
	if (ret) {
		r->sid = 0;
		req_fail(w, r, ret,
			 err[0]		 ? err
			 : ret == -EBUSY ? "scheduler full"
					 : "request rejected");
		return;
	}
	if (!r->adopt)
		w->prompt_tokens += r->n_prompt; /* computed here */
}

/* Index of the first token of ids[0..n) outside the vocabulary, or -1. */
static long bad_token(const struct worker *w, const int32_t *ids, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= w->n_vocab)
			return (long)i;
	}
	return -1;
}

/* Index of the first logit-bias entry of b[0..n) whose token is outside the vocabulary, or -1. */
static long bad_bias(const struct worker *w, const struct ipc_bias *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (b[i].token < 0 || b[i].token >= w->n_vocab)
			return (long)i;
	}
	return -1;
}

/* --- frames from the supervisor ----------------------------------------------------- */

/* The SUBMIT of a SHIP request: can its KV go where the SHIP says?  0, or err says why. */
static int ship_check(struct worker *w, struct wreq *r, char *err, size_t errlen)
{
	struct wship *sh = r->ship;
	uint32_t bt = (uint32_t)llm_block_tokens(w->llm);
	uint32_t need = (r->n_prompt + bt - 1) / bt;
	uint32_t p = sh->partition;
	uint64_t stride;

	if (!w->xdev) {
		snprintf(err, errlen, "SHIP: no KV transfer driver (the partitions are all mixed)");
		return -EOPNOTSUPP;
	}
	if (p >= w->cfg->n_partitions || (int)p == w->index) {
		snprintf(err, errlen, "SHIP to partition %u: not another partition of the %u", p,
			 w->cfg->n_partitions);
		return -EINVAL;
	}
	/* A failure already recorded (the link went) stays the one reported: ship_fail keeps it. */
	if (mono_ns() >= sh->deadline)
		ship_fail_deadline(sh);
	else if (!w->xep[p] || !w->xup[p] || w->xdead[p])
		ship_fail(sh, -ENOTCONN, "no connected KV link to it (XFER_CONNECT first)");
	else if (sh->block_bytes != w->block_bytes)
		ship_fail(sh, -EINVAL,
			  "its KV blocks are %llu bytes, ours %llu "
			  "(model, KV dtype or block_tokens differ)",
			  (unsigned long long)sh->block_bytes, (unsigned long long)w->block_bytes);
	else if (sh->n_blocks != need)
		ship_fail(sh, -EINVAL, "SHIP names %u blocks, a prompt of %u tokens fills %u",
			  sh->n_blocks, r->n_prompt, need);
	else if (__builtin_mul_overflow((uint64_t)w->m->n_layers, (uint64_t)sh->blocks_total,
					&stride) ||
		 __builtin_mul_overflow(stride, sh->block_bytes, &stride))
		ship_fail(sh, -EOVERFLOW, "pool size overflows");
	if (sh->err) {
		ship_errmsg(w, sh, err, errlen);
		return sh->err;
	}
	sh->ep = w->xep[p];
	test_arm_faults(w->xep[p], r->rid);
	return 0;
}

/*
 * The slot a SHIP or ADOPT (frame) makes for the SUBMIT that follows, and
 * size zeroed bytes for what it carries (*mem, the caller's to attach to
 * the slot).  -EEXIST: rid is in use (ERROR sent).  -EBUSY (no slot) or
 * -ENOMEM: nothing is kept, and that SUBMIT is refused with the code.
 */
static int req_reserve(struct worker *w, uint64_t rid, const char *frame, size_t size,
		       struct wreq **out, void **mem)
{
	struct wreq *r;
	void *p = NULL;

	if (req_find(w, rid)) {
		send_error(w, rid, -EEXIST, "%s for a request id already in use", frame);
		return -EEXIST;
	}
	r = req_alloc(w, rid);
	if (r)
		p = duet_calloc(1, size);
	if (!p) {
		if (r)
			req_free(w, r);
		w->refuse_rid = rid;
		w->refuse_code = r ? -ENOMEM : -EBUSY;
		return w->refuse_code;
	}
	*out = r;
	*mem = p;
	return 0;
}

/*
 * SHIP: the SUBMIT that follows (same req_id) is prefilled here and its KV
 * written into a decode partition's lease.  The slot is made now; the
 * checks wait for the SUBMIT, which fails when they do not pass.
 */
static void on_ship(struct worker *w, uint64_t rid, const struct ipc_ship *m)
{
	struct wreq *r;
	struct wship *sh;
	void *mem;

	if (req_reserve(w, rid, "SHIP", sizeof(*sh) + 2 * sizeof(int32_t) * m->n_blocks, &r, &mem))
		return;
	sh = mem;
	*sh = (struct wship){
		.partition = m->partition,
		.lease = { .id = m->lease_id, .epoch = m->epoch },
		.region = m->region,
		.blocks_total = m->blocks_total,
		.block_bytes = m->block_bytes,
		.n_blocks = m->n_blocks,
		.flags = m->flags,
		.first = m->first,
		.gen = ++w->ship_gen,
		.ttl_ms = m->ttl_ms,
		.deadline = mono_ns() + (uint64_t)m->ttl_ms * NS_PER_MS,
		.dst = (int32_t *)(void *)(sh + 1),
	};
	sh->src = sh->dst + m->n_blocks;
	memcpy(sh->dst, m->blocks, sizeof(int32_t) * m->n_blocks);
	for (uint32_t i = 0; i < m->n_blocks; i++)
		sh->src[i] = -1;
	r->ship = sh;
}

/*
 * ADOPT: the SUBMIT that follows (same req_id, same prompt) continues a
 * transfer that completed into a lease here.  The record is checked when
 * the prompt is complete (adopt_start).
 */
static void on_adopt(struct worker *w, uint64_t rid, const struct ipc_kv_record *k, uint32_t len)
{
	struct wreq *r;
	void *rec;
	int ret = req_reserve(w, rid, "ADOPT", sizeof(*k), &r, &rec);

	if (ret) {
		if (ret != -EEXIST)
			sched_lease_release(w->s, adopt_ref(k));
		return;
	}
	memcpy(rec, k, len);
	r->adopt = rec;
}

static void on_submit(struct worker *w, uint64_t rid, const struct ipc_submit *sub)
{
	const struct ipc_sampling *sp = &sub->sampling;
	char err[IPC_ERRMSG_MAX];
	struct wreq *r;
	long bad;

	if (rid == w->refuse_rid) {
		/* Its SHIP or ADOPT found no room: the request ends here. */
		int code = w->refuse_code;

		w->refuse_rid = 0;
		send_error(w, rid, code, "%s",
			   code == -EBUSY ? "too many requests" : "out of memory for the transfer");
		send_done(w, rid, IPC_FINISH_ERROR, sub->n_prompt, NULL, 0);
		return;
	}
	r = req_find(w, rid);
	/* A slot of SHIP or ADOPT has n_prompt 0 until now; ipc_recv refuses a SUBMIT's 0. */
	if (r && r->n_prompt) {
		send_error(w, rid, -EEXIST, "request id already in use");
		return;
	}
	if (!r)
		r = req_alloc(w, rid);
	if (!r) {
		/* No slot to track it: answer directly. */
		send_error(w, rid, -EBUSY, "too many requests (%d)", w->n_reqs);
		send_done(w, rid, IPC_FINISH_ERROR, sub->n_prompt, NULL, 0);
		return;
	}
	r->n_prompt = sub->n_prompt;
	/* An ADOPT continues a request admitted before the drain began. */
	if (w->draining && !r->adopt) {
		req_fail(w, r, -ESHUTDOWN, "worker is shutting down");
		return;
	}
	if (sub->n_prompt >= (uint32_t)w->n_ctx) {
		snprintf(err, sizeof(err), "prompt of %u tokens does not fit the context of %d",
			 sub->n_prompt, w->n_ctx);
		req_fail(w, r, -E2BIG, err);
		return;
	}
	bad = bad_token(w, sub->tokens, sub->n_tokens);
	if (bad >= 0) {
		snprintf(err, sizeof(err), "prompt token %ld is %d, outside the vocabulary [0, %d)",
			 bad, sub->tokens[bad], w->n_vocab);
		req_fail(w, r, -EINVAL, err);
		return;
	}
	bad = bad_bias(w, ipc_submit_bias(sub), sub->n_bias);
	if (bad >= 0) {
		snprintf(err, sizeof(err),
			 "logit_bias token %d (entry %ld) is outside the vocabulary [0, %d)",
			 ipc_submit_bias(sub)[bad].token, bad, w->n_vocab);
		req_fail(w, r, -EINVAL, err);
		return;
	}
	if (sub->n_bias) {
		/* The receive buffer is reused: keep a copy until sched_submit (last chunk). */
		const struct ipc_bias *b = ipc_submit_bias(sub);

		r->bias = duet_malloc(sizeof(*r->bias) * sub->n_bias);
		if (!r->bias) {
			req_fail(w, r, -ENOMEM, "out of memory for the logit bias");
			return;
		}
		for (uint32_t i = 0; i < sub->n_bias; i++)
			r->bias[i] = (struct smp_bias){ .token = b[i].token, .bias = b[i].bias };
	}
	r->q = (struct sched_request){
		.max_tokens = sub->max_tokens < (uint32_t)w->n_ctx ? (int)sub->max_tokens
								   : w->n_ctx,
		.sampling = {
			.temperature = sp->temperature,
			.top_k = sp->top_k,
			.top_p = sp->top_p,
			.min_p = sp->min_p,
			.repeat_penalty = sp->repeat_penalty,
			.repeat_last_n = sp->repeat_last_n,
			.presence_penalty = sp->presence_penalty,
			.frequency_penalty = sp->frequency_penalty,
			.seed = sp->seed,
			.logit_bias = r->bias,
			.n_logit_bias = (int)sub->n_bias,
		},
		.salt = sub->salt,
		.priority = sub->priority,
		.logprobs = (sub->logprobs_flags & IPC_SUBMIT_LOGPROBS) != 0,
		.n_top_logprobs = (int)sub->n_top,
	};
	if (smp_params_validate(&r->q.sampling, w->n_vocab, err, sizeof(err))) {
		req_fail(w, r, -EINVAL, err);
		return;
	}
	if (r->ship) {
		int ret = ship_check(w, r, err, sizeof(err));

		if (ret) {
			req_fail(w, r, ret, err);
			return;
		}
		r->q.ship_kv = true;
		r->q.max_tokens = 1; /* the first token goes in the record, the rest is decode's */
	}
	if (sub->n_tokens == sub->n_prompt) {
		req_start(w, r, sub->tokens);
		return;
	}
	r->prompt = duet_malloc(sizeof(int32_t) * sub->n_prompt);
	if (!r->prompt) {
		req_fail(w, r, -ENOMEM, "out of memory for the prompt");
		return;
	}
	memcpy(r->prompt, sub->tokens, sizeof(int32_t) * sub->n_tokens);
	r->n_have = sub->n_tokens;
}

static void on_chunk(struct worker *w, uint64_t rid, const struct ipc_prompt_chunk *c)
{
	struct wreq *r = req_find(w, rid);
	char err[IPC_ERRMSG_MAX];
	long bad;

	if (!r || r->sid) {
		log_debug(SUB, "request %llu: PROMPT_CHUNK ignored (%s)", (unsigned long long)rid,
			  r ? "prompt complete" : "unknown request");
		return;
	}
	if (c->n_prompt != r->n_prompt || c->offset != r->n_have) {
		snprintf(err, sizeof(err),
			 "PROMPT_CHUNK at offset %u of %u tokens, expected offset %u of %u",
			 c->offset, c->n_prompt, r->n_have, r->n_prompt);
		req_fail(w, r, -EPROTO, err);
		return;
	}
	bad = bad_token(w, c->tokens, c->n_tokens);
	if (bad >= 0) {
		snprintf(err, sizeof(err), "prompt token %ld is %d, outside the vocabulary [0, %d)",
			 (long)c->offset + bad, c->tokens[bad], w->n_vocab);
		req_fail(w, r, -EINVAL, err);
		return;
	}
	memcpy(r->prompt + r->n_have, c->tokens, sizeof(int32_t) * c->n_tokens);
	r->n_have += c->n_tokens;
	if (r->n_have == r->n_prompt)
		req_start(w, r, r->prompt);
}

static void on_xfer_connect(struct worker *w, uint32_t partition);
static void on_xfer_desc(struct worker *w, struct ipc_msg *m);

/* Decode side: reserve the blocks a prefill partition will write; LEASED or ERROR. */
static void on_lease(struct worker *w, uint64_t rid, const struct ipc_lease *l)
{
	struct ipc_leased *out = &w->out->leased;
	struct kv_lease_ref ref;
	int n = 0, n_cached = 0, ret;

	if (w->draining) {
		send_error(w, rid, -ESHUTDOWN, "worker is shutting down");
		return;
	}
	if (l->n_prompt >= (uint32_t)w->n_ctx) {
		send_error(w, rid, -E2BIG, "a prompt of %u tokens does not fit the context of %d",
			   l->n_prompt, w->n_ctx);
		return;
	}
	ret = sched_lease(w->s, (int)l->n_prompt, l->salt, l->tokens, (int)l->n_tokens, l->owner,
			  mono_ns() + (uint64_t)l->ttl_ms * NS_PER_MS, out->blocks, &n, &n_cached,
			  &ref);
	if (ret) {
		send_error(w, rid, ret, "no KV reservation for %u tokens: %s", l->n_prompt,
			   duet_strerror(ret));
		return;
	}
	if (n_cached > 0)
		log_debug(SUB, "request %llu: lease %d holds %d cached blocks of %d",
			  (unsigned long long)rid, ref.id, n_cached, n);
	out->lease_id = ref.id;
	out->n_blocks = (uint32_t)n;
	out->epoch = ref.epoch;
	out->region = w->xmr ? xfer_mr_id(w->xmr) : 0;
	out->blocks_total = (uint32_t)llm_n_blocks(w->llm);
	out->block_bytes = w->block_bytes;
	out->n_cached = (uint32_t)n_cached;
	out->reserved = 0;
	send_frame(w, IPC_LEASED, rid, out, IPC_LEASED_FIXED + 4u * (uint32_t)n);
}

/* Cancel one request; its DONE goes out from collect() (or now, when not yet scheduled). */
static void req_cancel(struct worker *w, struct wreq *r)
{
	if (!r->sid) {
		send_done(w, r->rid, IPC_FINISH_CANCELLED, r->n_prompt, NULL, 0);
		req_free(w, r);
		return;
	}
	if (r->ship)
		ship_wait(w, r); /* its blocks go at sched_cancel, and the next step reuses them */
	sched_cancel(w->s, r->sid, mono_ns()); /* -EALREADY: finished, DONE on its way */
}

static void cancel_all(struct worker *w)
{
	for (int i = 0; i < w->n_reqs && w->n_active > 0; i++) {
		if (w->reqs[i].rid)
			req_cancel(w, &w->reqs[i]);
	}
	collect(w, 0);
}

/* Take waiting frames.  Returns 1 when SHUTDOWN NOW arrived, else 0 (w->fatal on death). */
static int take_frames(struct worker *w)
{
	struct ipc_msg *m = w->msg;

	for (int n = 0; n < MAX_FRAMES_PER_TURN && !w->fatal; n++) {
		int ret = ipc_recv(w->ch, m);

		if (ret == 0)
			return 0;
		if (ret < 0) {
			log_error(SUB, "channel to the supervisor: %s (%s)", duet_strerror(ret),
				  ipc_chan_error_reason(w->ch));
			w->fatal = ret;
			return 0;
		}
		uint64_t rid = m->hdr.req_id;
		switch (m->hdr.type) {
		case IPC_SUBMIT:
			on_submit(w, rid, &m->u.submit);
			break;
		case IPC_PROMPT_CHUNK:
			on_chunk(w, rid, &m->u.chunk);
			break;
		case IPC_CANCEL: {
			struct wreq *r = req_find(w, rid);
			if (r)
				req_cancel(w, r);
			else
				log_debug(SUB, "CANCEL of unknown request %llu",
					  (unsigned long long)rid);
			break;
		}
		case IPC_PING:
			send_frame(w, IPC_PONG, rid, &m->u.ping, sizeof(m->u.ping));
			break;
		case IPC_LEASE:
			on_lease(w, rid, &m->u.lease);
			break;
		case IPC_SHIP:
			on_ship(w, rid, &m->u.ship);
			break;
		case IPC_ADOPT:
			on_adopt(w, rid, &m->u.kv, m->hdr.len);
			break;
		case IPC_XFER_CONNECT:
			on_xfer_connect(w, m->u.xconnect.partition);
			break;
		case IPC_XFER_DESC:
			on_xfer_desc(w, m);
			break;
		case IPC_LEASE_FREE: {
			struct kv_lease_ref ref = { .id = m->u.lease_free.lease_id,
						    .epoch = m->u.lease_free.epoch };

			if (sched_lease_release(w->s, ref))
				log_debug(SUB,
					  "LEASE_FREE of request %llu: no such lease (expired?)",
					  (unsigned long long)rid);
			break;
		}
		case IPC_PONG:
			break;
		case IPC_RELOAD:
			if (m->u.reload.what & IPC_RELOAD_LOG_LEVEL) {
				duet_log_set_level((enum duet_log_level)m->u.reload.log_level);
				log_info(SUB, "log level %s",
					 duet_log_level_name(
						 (enum duet_log_level)m->u.reload.log_level));
			}
			break;
		case IPC_SHUTDOWN:
			if (m->u.shutdown.mode == IPC_SHUTDOWN_NOW) {
				log_info(SUB, "shutdown now: %d requests cancelled", w->n_active);
				return 1;
			}
			if (!w->draining)
				log_info(SUB, "draining %d requests", w->n_active);
			w->draining = true;
			if (m->u.shutdown.deadline_ms)
				w->drain_deadline =
					mono_ns() + m->u.shutdown.deadline_ms * NS_PER_MS;
			break;
		case IPC_ERROR:
			log_warn(SUB, "supervisor reports error %d for request %llu: %s",
				 m->u.error.code, (unsigned long long)rid, m->u.error.msg);
			break;
		default:
			log_warn(SUB, "unexpected %s frame ignored", ipc_type_name(m->hdr.type));
			break;
		}
		/* Received fds are ours: xfer_connect dup'ed what it keeps. */
		for (unsigned i = 0; i < m->n_fds; i++)
			close(m->fds[i]);
		m->n_fds = 0;
	}
	return 0;
}

/* --- periodic statistics ------------------------------------------------------------ */

static void send_stats(struct worker *w)
{
	struct sched_stats ss;
	struct ipc_stats st;

	sched_get_stats(w->s, &ss);
	memset(&st, 0, sizeof(st));
	for (int i = 0, seen = 0; i < w->n_reqs && seen < w->n_active; i++) {
		const struct wreq *r = &w->reqs[i];
		if (!r->rid)
			continue;
		seen++;
		const struct sched_info *in = r->sid ? sched_get(w->s, r->sid) : NULL;
		if (!in || in->state == SCHED_WAITING)
			st.waiting++;
		else if (in->state != SCHED_FINISHED)
			st.running++;
	}
	st.kv_total = (uint32_t)ss.kv.total;
	st.kv_used = (uint32_t)ss.kv.in_use;
	st.kv_cached = (uint32_t)ss.kv.cached;
	/* Quarantined blocks (expired leases) are neither free nor cached: counted as leased. */
	st.kv_leased = (uint32_t)(ss.kv.leased + ss.kv.quarantined);
	st.prefix_queries = ss.kv.queries;
	st.prefix_hits = ss.kv.hits;
	st.prompt_tokens = w->prompt_tokens;
	st.gen_tokens = w->gen_tokens;
	st.preemptions = ss.preemptions;
	st.steps = ss.steps;
	st.step_ns_total = w->step_ns_total;
	st.step_ns_max = w->step_ns_max;
	st.t_ns = mono_ns();
	st.leases_expired = ss.kv.leases_expired;
	st.xfer_rejected = w->xfer_rejected;
	for (unsigned p = 0; p < w->cfg->n_partitions && p < CFG_MAX_PARTITIONS; p++) {
		struct xfer_stats xs;

		if (!w->xep[p])
			continue;
		xfer_ep_stats(w->xep[p], &xs);
		st.xfer_rejected += xs.rx_rejected;
	}
	send_frame(w, IPC_STATS, 0, &st, sizeof(st));
}

/* --- setup -------------------------------------------------------------------------- */

static void send_hello(struct worker *w)
{
	struct ipc_hello h;
	const char *name = w->cfg->model.served_name;

	memset(&h, 0, sizeof(h));
	h.pid = (int32_t)getpid();
	h.partition = (uint32_t)w->index;
	h.role = w->part->role == CFG_ROLE_PREFILL  ? IPC_ROLE_PREFILL
		 : w->part->role == CFG_ROLE_DECODE ? IPC_ROLE_DECODE
						    : IPC_ROLE_MIXED;
	if (!name[0]) {
		name = strrchr(w->cfg->model.path, '/');
		name = name ? name + 1 : w->cfg->model.path;
	}
	snprintf(h.model, sizeof(h.model), "%.127s", name[0] ? name : "model");
	send_frame(w, IPC_HELLO, 0, &h, sizeof(h));
}

/* Threads and pinning from the partition: its CPU set, or every allowed CPU when empty. */
static void cpu_options(struct worker *w, struct be_options *bo)
{
	const struct cfg_partition *p = w->part;
	int n = 0;

	for (unsigned c = 0; c < CFG_MAX_CPUS && p->n_cpus > 0; c++) {
		if (cfg_cpuset_has(&p->cpuset, c))
			w->cpus[n++] = (int)c;
	}
	bo->cpus = n > 0 ? w->cpus : NULL;
	bo->n_cpus = n;
	bo->threads = p->threads;
	if (bo->threads == 0 && n == 0) {
		cpu_set_t set;

		bo->threads = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
	}
	bo->device = p->device_index;
}

/* NUMA nodes with memory, as /sys reports them; 1 when it cannot tell. */
static int numa_nodes(void)
{
	int n = 0;
	char path[64];

	for (int i = 0; i < 1024; i++) {
		snprintf(path, sizeof(path), "/sys/devices/system/node/node%d", i);
		if (access(path, F_OK) == 0)
			n++;
		else if (i > 0 && n == i)
			break;
	}
	return n > 0 ? n : 1;
}

/* The node of cpu, or -1. */
static int cpu_node(int cpu)
{
	char path[96];

	for (int node = 0; node < 1024; node++) {
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/node%d", cpu, node);
		if (access(path, F_OK) == 0)
			return node;
	}
	return -1;
}

/*
 * The whole process on the partition's CPUs (threads started later inherit
 * it) and, on a machine with more than one NUMA node, its memory on the
 * partition's node (numa_node, or the node of its first CPU).
 */
static void pin_process(struct worker *w)
{
	const struct cfg_partition *p = w->part;
	int first = -1, node;
	cpu_set_t set;

	CPU_ZERO(&set);
	for (unsigned c = 0; c < CFG_MAX_CPUS && c < CPU_SETSIZE && p->n_cpus > 0; c++) {
		if (cfg_cpuset_has(&p->cpuset, c)) {
			CPU_SET(c, &set);
			if (first < 0)
				first = (int)c;
		}
	}
	if (first >= 0 && sched_setaffinity(0, sizeof(set), &set) != 0)
		log_warn(SUB, "partition %s: sched_setaffinity(%s): %s", p->name, p->cpus,
			 strerror(errno));
	if (numa_nodes() < 2)
		return;
	node = p->numa_node >= 0 ? p->numa_node : first >= 0 ? cpu_node(first) : -1;
	if (node < 0 || node >= 64)
		return;
	{
		unsigned long mask = 1ul << node;

		/* MPOL_BIND = 2; set_mempolicy(2) has no glibc wrapper. */
		if (syscall(SYS_set_mempolicy, 2, &mask, sizeof(mask) * 8) != 0)
			log_warn(SUB, "partition %s: memory on NUMA node %d: %s", p->name, node,
				 strerror(errno));
		else
			log_info(SUB, "partition %s: memory bound to NUMA node %d", p->name, node);
	}
}

/* --- KV transfer endpoints ---------------------------------------------------------- */

/* Prefill and decode are split: some partition is not mixed. */
static bool disaggregated(const struct duet_config *cfg)
{
	for (unsigned i = 0; i < cfg->n_partitions; i++)
		if (cfg->partitions[i].role != CFG_ROLE_MIXED)
			return true;
	return false;
}

/* Open the driver and register the KV pool: the target of writes (decode) or their source. */
static int xfer_setup(struct worker *w)
{
	const struct duet_config *cfg = w->cfg;
	const char *driver = test_driver ? test_driver : cfg_xfer_driver(cfg);
	struct xfer_opts xo = { .psk_file =
					cfg->transport.psk_file[0] ? cfg->transport.psk_file : NULL,
				.encrypt = cfg->transport.encrypt,
				.hugepages = cfg->kv.hugepages };
	struct be_region pool;
	int ret;

	if (!driver) {
		log_error(SUB, "transport.driver: this build has no such transfer driver");
		return -EOPNOTSUPP;
	}
	ret = xfer_query_caps(driver, &w->xcaps);
	if (ret)
		return ret;
	ret = xfer_open(driver, &xo, &w->xdev);
	if (ret)
		return ret;
	ret = llm_kv_pool(w->llm, &pool);
	if (ret)
		return ret;
	w->kv_host = pool.kind != BE_MEM_DEVICE;
	if (w->part->role == CFG_ROLE_PREFILL)
		ret = xfer_mr_reg(w->xdev, pool.base, pool.bytes, &w->xmr);
	else
		ret = xfer_mr_reg_fd(w->xdev, pool.base, pool.bytes, pool.fd, &w->xmr);
	if (ret == 0)
		log_info(SUB, "partition %s: KV transfer over %s (%zu MiB pool %s)", w->part->name,
			 driver, pool.bytes >> 20,
			 w->part->role == CFG_ROLE_PREFILL ? "as a write source"
							   : "writable by peers");
	return ret;
}

static void send_xready(struct worker *w, uint32_t partition, int status)
{
	struct ipc_xfer_ready r = { .partition = partition, .status = status };

	send_frame(w, IPC_XFER_READY, 0, &r, sizeof(r));
}

/* XFER_CONNECT: an endpoint for peer partition `partition`, its descriptor to the supervisor. */
static void on_xfer_connect(struct worker *w, uint32_t partition)
{
	struct ipc_xfer_desc *out = &w->out->desc;
	struct xfer_desc d;
	int ret = -EINVAL;

	if (!w->xdev || partition >= w->cfg->n_partitions || (int)partition == w->index) {
		log_warn(SUB, "XFER_CONNECT to partition %u refused (%s)", partition,
			 !w->xdev ? "no transfer driver: partitions are all mixed"
				  : "not another partition");
		send_xready(w, partition, ret);
		return;
	}
	/* A peer that restarted: its old endpoint is dead, start over. */
	if (w->xep[partition]) {
		struct xfer_stats xs;

		ship_link_lost(w, partition, true, -ECONNRESET,
			       "the KV link was made anew (the peer restarted)");
		xfer_ep_stats(w->xep[partition], &xs);
		w->xfer_rejected += xs.rx_rejected; /* STATS counters never go back */
		xfer_ep_destroy(w->xep[partition]);
		w->xep[partition] = NULL;
	}
	w->xup[partition] = false;
	w->xdead[partition] = 0;
	ret = xfer_ep_create(w->xdev, &w->xep[partition]);
	if (!ret)
		ret = xfer_local_desc(w->xep[partition], &d);
	if (!ret && (d.len > IPC_DESC_MAX || d.nfds > IPC_MAX_FDS))
		ret = -E2BIG;
	if (!ret) {
		*out = (struct ipc_xfer_desc){ .partition = partition,
					       .n_fds = d.nfds,
					       .len = d.len };
		memcpy(out->desc, d.bytes, d.len);
		/* Not queued: what is queued must go first, so wait for room a little. */
		for (int tries = 0; tries < 1000; tries++) {
			ret = ipc_send_fds(w->ch, IPC_XFER_DESC, 0, out, IPC_DESC_FIXED + d.len,
					   d.fds, d.nfds);
			if (ret != -EAGAIN)
				break;
			poll(&(struct pollfd){ .fd = ipc_chan_fd(w->ch), .events = POLLOUT }, 1,
			     10);
		}
	}
	if (ret) {
		log_warn(SUB, "partition %s: endpoint for partition %u: %s", w->part->name,
			 partition, duet_strerror(ret));
		xfer_ep_destroy(w->xep[partition]);
		w->xep[partition] = NULL;
		send_xready(w, partition, ret);
	}
}

/* XFER_DESC from the supervisor: the peer's descriptor; connect and say so. */
static void on_xfer_desc(struct worker *w, struct ipc_msg *m)
{
	const struct ipc_xfer_desc *in = &m->u.desc;
	uint32_t partition = in->partition;
	struct xfer_desc d = { .len = in->len, .nfds = m->n_fds };
	int ret = -EINVAL;

	if (partition < CFG_MAX_PARTITIONS && w->xep[partition] && in->len <= XFER_DESC_MAX &&
	    m->n_fds <= XFER_DESC_MAX_FDS) {
		memcpy(d.bytes, in->desc, in->len);
		memcpy(d.fds, m->fds, sizeof(int) * m->n_fds);
		ret = xfer_connect(w->xep[partition], &d); /* dups what it keeps */
		w->xup[partition] = ret == 0;
	}
	if (ret)
		log_warn(SUB, "partition %s: connecting to partition %u: %s", w->part->name,
			 partition, duet_strerror(ret));
	else
		log_info(SUB, "partition %s: KV link to partition %s up", w->part->name,
			 w->cfg->partitions[partition].name);
	send_xready(w, partition, ret);
}

/* Model, backend, KV pool and scheduler.  On failure err says why (for the ERROR frame). */
static int engine_open(struct worker *w, char *err, size_t errlen)
{
	const struct duet_config *cfg = w->cfg;
	const struct cfg_partition *p = w->part;
	struct be_options bo = { 0 };
	struct be_step_limits lim;
	struct llm_options lo;
	struct sched_config sc;
	char msg[512], desc[256];
	int ret;

	ret = gguf_open(cfg->model.path, &w->f, msg, sizeof(msg));
	if (ret) {
		snprintf(err, errlen, "%.240s", msg);
		return ret;
	}
	ret = model_desc_load(w->f, 0, &w->m, msg, sizeof(msg));
	if (ret) {
		snprintf(err, errlen, "%.100s: %.140s", cfg->model.path, msg);
		return ret;
	}
	ret = tok_create(w->f, w->m, &w->tok, msg, sizeof(msg));
	if (ret) {
		snprintf(err, errlen, "%.100s: tokenizer: %.120s", cfg->model.path, msg);
		return ret;
	}

	int bt = cfg->kv.block_tokens > 0 ? cfg->kv.block_tokens : 16;
	int n_ctx = cfg->model.context > 0 ? cfg->model.context : (int)w->m->n_ctx;
	int ctx_blocks = (n_ctx + bt - 1) / bt;

	lo = (struct llm_options){
		.kv_dtype = cfg->kv.dtype == CFG_KV_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16,
		.n_ctx = n_ctx,
		.block_tokens = bt,
		.n_blocks = cfg->kv.blocks,
		.kv_budget = cfg->kv.blocks > 0 ? 0 : (size_t)cfg->kv.memory_mb << 20,
		.hugepages = cfg->kv.hugepages,
		.max_tokens = p->max_batch_tokens,
		.max_seqs = p->max_seqs,
		.max_out = p->max_seqs,
		/* A decode pool others write into lives in a memfd the driver can hand out. */
		.shared_kv = disaggregated(cfg) && p->role != CFG_ROLE_PREFILL,
	};
	lim = (struct be_step_limits){
		.max_tokens = p->max_batch_tokens,
		.max_seqs = p->max_seqs,
		.max_table = p->max_seqs * (ctx_blocks + 1),
	};
	pin_process(w);
	cpu_options(w, &bo);
	ret = backend_open(p->device_kind == CFG_DEVICE_CUDA ? "cuda" : "cpu", &bo, &lim, &w->be);
	if (ret) {
		snprintf(err, errlen, "backend %s: %s", p->device, duet_strerror(ret));
		return ret;
	}
	ret = llm_create(w->be, w->m, &lo, &w->llm);
	if (ret) {
		snprintf(err, errlen, "engine for %.100s: %.120s", cfg->model.path,
			 duet_strerror(ret));
		return ret;
	}
	w->n_vocab = (int)w->m->n_vocab;
	w->n_ctx = llm_n_ctx(w->llm);
	{
		size_t off, len;

		if (llm_kv_range(w->llm, 0, 0, 1, &off, &len) == 0)
			w->block_bytes = len;
	}
	w->n_reqs = 8 * p->max_seqs > MIN_REQUESTS ? 8 * p->max_seqs : MIN_REQUESTS;
	sc = (struct sched_config){
		.max_batch_tokens = p->max_batch_tokens,
		.max_batch_seqs = p->max_seqs,
		.max_requests = w->n_reqs,
		.prefix_cache = cfg->kv.prefix_cache,
		/* Decode-capable partitions take reservations for incoming KV. */
		.max_leases = p->role == CFG_ROLE_PREFILL ? 0 : w->n_reqs,
		.kv_quarantine_ns = (uint64_t)kv_quarantine_ms() * NS_PER_MS, /* mono_ns clock */
	};
	ret = sched_create(w->llm, &sc, is_eog, w->tok, &w->s);
	if (ret) {
		snprintf(err, errlen, "scheduler: %s", duet_strerror(ret));
		return ret;
	}
	w->reqs = duet_calloc((size_t)w->n_reqs, sizeof(*w->reqs));
	w->max_runs = p->max_seqs;
	w->run_reqs = duet_calloc((size_t)w->max_runs, sizeof(*w->run_reqs));
	if (!w->reqs || !w->run_reqs) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (disaggregated(cfg)) {
		ret = xfer_setup(w);
		if (ret) {
			const char *drv = test_driver ? test_driver : cfg_xfer_driver(cfg);

			snprintf(err, errlen, "KV transfer (%s): %s", drv ? drv : "?",
				 duet_strerror(ret));
			return ret;
		}
		/* SHIP requests' KV leaves layer by layer (only steps with one call it). */
		sched_set_layer_hook(w->s, ship_layer, w);
	}
	model_desc_summary(w->m, msg, sizeof(msg));
	backend_describe(w->be, desc, sizeof(desc));
	log_info(SUB, "partition %s: %s; %s; context %d, %d KV blocks of %d tokens", p->name, msg,
		 desc, w->n_ctx, llm_n_blocks(w->llm), llm_block_tokens(w->llm));
	return 0;
}

static void engine_close(struct worker *w)
{
	/* Endpoints and the region before the pool they name. */
	for (int i = 0; i < CFG_MAX_PARTITIONS; i++)
		xfer_ep_destroy(w->xep[i]);
	xfer_mr_dereg(w->xmr);
	xfer_close(w->xdev);
	for (int i = 0; w->reqs && i < w->n_reqs; i++) {
		duet_free(w->reqs[i].prompt);
		duet_free(w->reqs[i].bias);
		duet_free(w->reqs[i].ship);
		duet_free(w->reqs[i].adopt);
	}
	duet_free(w->reqs);
	duet_free(w->run_reqs);
	sched_destroy(w->s);
	llm_destroy(w->llm);
	backend_close(w->be);
	tok_destroy(w->tok);
	model_desc_free(w->m);
	gguf_close(w->f);
}

/* --- the loop ----------------------------------------------------------------------- */

/*
 * What the idle loop waits on: the supervisor's channel in pfd[0], then the
 * event fd of every live KV endpoint.  A driver whose receiver does the
 * delivery (loopback) needs the receiving worker to poll, so arrivals must
 * wake it rather than wait for the next STATS.  Returns the entries used.
 */
static nfds_t poll_set(struct worker *w, struct pollfd *pfd)
{
	nfds_t n = 1;

	pfd[0] = (struct pollfd){ .fd = ipc_chan_fd(w->ch),
				  .events = POLLIN | (ipc_chan_queued(w->ch) ? POLLOUT : 0) };
	for (unsigned p = 0; w->xdev && p < w->cfg->n_partitions && p < CFG_MAX_PARTITIONS; p++) {
		if (w->xep[p] && !w->xdead[p])
			pfd[n++] =
				(struct pollfd){ .fd = xfer_event_fd(w->xep[p]), .events = POLLIN };
	}
	return n;
}

/* Until SHUTDOWN (WORKER_EXIT_OK) or the channel dies (WORKER_EXIT_CHANNEL). */
static int step_loop(struct worker *w)
{
	struct pollfd pfd[1 + CFG_MAX_PARTITIONS];

	w->next_stats = mono_ns();
	for (;;) {
		uint64_t now = mono_ns();

		if (w->fatal)
			return WORKER_EXIT_CHANNEL;
		if (w->draining &&
		    (w->n_active == 0 || (w->drain_deadline && now >= w->drain_deadline))) {
			cancel_all(w);
			break;
		}
		if (now >= w->next_stats) {
			sched_expire_leases(w->s, now); /* also when no step runs */
			send_stats(w);
			w->next_stats = now + WORKER_STATS_MS * NS_PER_MS;
		}

		bool busy = sched_busy(w->s);
		uint64_t wake = w->next_stats;
		if (w->drain_deadline && w->drain_deadline < wake)
			wake = w->drain_deadline;
		int timeout = busy ? 0 : (int)((wake > now ? wake - now : 0) / NS_PER_MS) + 1;
		if (poll(pfd, poll_set(w, pfd), timeout) < 0 && errno != EINTR) {
			log_error(SUB, "poll: %s", strerror(errno));
			return WORKER_EXIT_CHANNEL;
		}
		if (ipc_chan_queued(w->ch) && ipc_flush(w->ch) < 0) {
			log_error(SUB, "channel to the supervisor: %s",
				  ipc_chan_error_reason(w->ch));
			return WORKER_EXIT_CHANNEL;
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			if (take_frames(w)) {
				cancel_all(w);
				break;
			}
			if (w->fatal)
				return WORKER_EXIT_CHANNEL;
		}

		if (w->xdev)
			xfer_pump(w);

		uint64_t step_ns = 0;
		if (sched_busy(w->s)) {
			uint64_t t0 = mono_ns();
			int ret = sched_step(w->s, mono_ns);
			if (step_delay_us)
				usleep(step_delay_us);
			step_ns = mono_ns() - t0;
			w->step_err = ret < 0 ? ret : 0;
			if (ret > 0) {
				w->step_ns_total += step_ns;
				if (step_ns > w->step_ns_max)
					w->step_ns_max = step_ns;
			}
		}
		if (w->n_active)
			collect(w, step_ns);
	}
	if (w->fatal)
		return WORKER_EXIT_CHANNEL;
	flush_out(w);
	return WORKER_EXIT_OK;
}

int worker_run(int fd, const struct duet_config *cfg, int partition_index)
{
	struct worker *w;
	char err[IPC_ERRMSG_MAX];
	int ret, status = WORKER_EXIT_SETUP;

	w = duet_calloc(1, sizeof(*w));
	if (!w) {
		close(fd);
		log_error(SUB, "out of memory");
		return WORKER_EXIT_SETUP;
	}
	w->cfg = cfg;
	w->index = partition_index;
	ret = ipc_chan_create(fd, IPC_END_WORKER, 0, &w->ch);
	if (ret) {
		log_error(SUB, "ipc_chan_create: %s", duet_strerror(ret));
		goto free_worker;
	}
	w->msg = duet_malloc(sizeof(*w->msg));
	w->out = duet_malloc(sizeof(*w->out));
	if (!w->msg || !w->out) {
		send_error(w, 0, -ENOMEM, "out of memory");
		goto destroy_chan;
	}
	if (partition_index < 0 || (unsigned)partition_index >= cfg->n_partitions) {
		send_error(w, 0, -EINVAL, "partition %d not in the config (%u partitions)",
			   partition_index, cfg->n_partitions);
		goto flush;
	}
	w->part = &cfg->partitions[partition_index];
	send_hello(w);
	ret = engine_open(w, err, sizeof(err));
	if (ret) {
		send_error(w, 0, ret, "%s", err);
		goto close_engine;
	}

	struct ipc_ready rd = {
		.n_ctx = (uint32_t)w->n_ctx,
		.n_vocab = (uint32_t)w->n_vocab,
		.kv_blocks_total = (uint32_t)llm_n_blocks(w->llm),
		.block_tokens = (uint32_t)llm_block_tokens(w->llm),
		.max_batch = (uint32_t)w->part->max_seqs,
	};
	send_frame(w, IPC_READY, 0, &rd, sizeof(rd));
	status = step_loop(w);
	if (status == WORKER_EXIT_OK)
		log_info(SUB, "partition %s: shut down", w->part->name);
close_engine:
	engine_close(w);
flush:
	if (status != WORKER_EXIT_CHANNEL && !w->fatal)
		flush_out(w);
	duet_free(w->msg);
	duet_free(w->out);
destroy_chan:
	ipc_chan_destroy(w->ch);
free_worker:
	duet_free(w);
	return status;
}
