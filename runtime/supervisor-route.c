// SPDX-License-Identifier: MIT
/*
 * The router of split configurations (DESIGN.md "Request life").
 *
 * A choice waits in one FIFO queue until a decode partition can reserve its
 * prompt's blocks: the router asks one decode worker at a time (LEASE; one
 * in flight per worker), picks the prefill partition with the fewest prompt
 * tokens in flight among those whose link to it is up, and hands it the
 * prompt with the reservation (SHIP + SUBMIT).  The prefill worker writes
 * the KV layer by layer and reports PREFILLED then DONE; the router passes
 * the record on (ADOPT + SUBMIT) and the decode worker streams the tokens.
 * A refused reservation (-ENOSPC) marks the worker full until it frees
 * blocks, and the choice waits at the head of the queue: decode KV is never
 * over-committed.
 *
 * Failures: a worker that dies, a transfer that fails, a record the decode
 * side refuses send the choice back to the head of the queue with a new
 * worker request id (so late frames of the old attempt match nothing) and
 * its prompt extended by the tokens the client already has, up to
 * api.max_attempts starts; the client's stream goes on where it stopped.
 * Every wait has a deadline: the queue api.queue_timeout_ms, a reservation
 * kv.lease_timeout_ms (the decode worker frees it).
 *
 * Cancellation while no worker streams the choice is deferred: the choice
 * is marked and sup_route_kick() (or the answer it waits for) ends it, so
 * callers iterating over choices never see one freed under them.
 */
#include "runtime/supervisor-impl.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "runtime/core/err.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"
#include "runtime/ctl/metrics.h"

#define SUB "router"

/* --- the queue -------------------------------------------------------------------- */

static void q_push(struct sup *S, struct sup_req *r, bool front)
{
	r->qnext = NULL;
	if (!S->q_head) {
		S->q_head = S->q_tail = r;
	} else if (front) {
		r->qnext = S->q_head;
		S->q_head = r;
	} else {
		S->q_tail->qnext = r;
		S->q_tail = r;
	}
}

static void q_remove(struct sup *S, struct sup_req *r)
{
	struct sup_req *prev = NULL;

	for (struct sup_req *q = S->q_head; q; prev = q, q = q->qnext) {
		if (q != r)
			continue;
		if (prev)
			prev->qnext = q->qnext;
		else
			S->q_head = q->qnext;
		if (S->q_tail == q)
			S->q_tail = prev;
		q->qnext = NULL;
		return;
	}
}

static void enqueue(struct sup *S, struct sup_req *r, bool front)
{
	uint64_t now = sup_now_ns();

	r->phase = SUP_QUEUED;
	r->pre = -1;
	r->t_queued_ns = now;
	r->deadline_ms = now / 1000000u + (uint64_t)S->cfg->api.queue_timeout_ms;
	q_push(S, r, front);
}

void sup_route_free(struct sup_req *r)
{
	if (!r->job)
		return;
	duet_free(r->job->bias);
	duet_free(r->job->ids);
	duet_free(r->job->ship);
	duet_free(r->job);
	r->job = NULL;
}

int sup_route_add(struct sup *S, struct sup_req *r, const struct ipc_bias *bias, uint32_t n_bias,
		  const int32_t *ids, size_t n)
{
	struct sup_job *j = duet_calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	memcpy(j->head, S->submit, IPC_SUBMIT_FIXED);
	j->n_bias = n_bias;
	j->cap_ids = (uint32_t)n + 16;
	j->ids = duet_malloc(sizeof(int32_t) * j->cap_ids);
	j->bias = n_bias ? duet_malloc(sizeof(*j->bias) * n_bias) : NULL;
	if (!j->ids || (n_bias && !j->bias)) {
		duet_free(j->ids);
		duet_free(j->bias);
		duet_free(j);
		return -ENOMEM;
	}
	if (n_bias)
		memcpy(j->bias, bias, sizeof(*j->bias) * n_bias);
	memcpy(j->ids, ids, sizeof(int32_t) * n);
	j->n_ids = (uint32_t)n;
	r->job = j;
	r->next = S->reqs;
	S->reqs = r;
	S->n_reqs++;
	enqueue(S, r, false);
	return 0;
}

/* A generated token (decode phase): the prompt of a resumed attempt grows by it. */
void sup_route_token(struct sup_req *r, int32_t token)
{
	struct sup_job *j = r->job;

	if (j->n_ids == j->cap_ids) {
		uint32_t cap = j->cap_ids * 2;
		int32_t *ids = duet_realloc(j->ids, sizeof(int32_t) * cap);

		if (!ids)
			return; /* a resume then fails: the prompt would miss this token */
		j->ids = ids;
		j->cap_ids = cap;
	}
	j->ids[j->n_ids++] = token;
}

/* --- circuit breaker ---------------------------------------------------------------- */

void sup_breaker_fail(struct sup *S, struct sup_worker *w, const char *why)
{
	uint64_t now = sup_now_ms();

	/* Failures are counted over a minute: a worker that crashes every few
	 * seconds trips it even when canaries get through in between. */
	if (!w->breaker_until_ms && now - w->fail_since_ms > SUP_BREAKER_WINDOW_MS) {
		w->fail_since_ms = now;
		w->fails = 0;
	}
	w->fails++;
	if (w->breaker_until_ms || w->fails < (unsigned)S->cfg->api.breaker_failures)
		return;
	w->breaker_until_ms = sup_now_ms() + (uint64_t)S->cfg->api.breaker_cooldown_ms;
	log_warn(SUB, "partition %s: circuit breaker open after %u failures in a minute (last: %s)",
		 sup_part_name(S, w->idx), w->fails, why);
	sup_event(S, "breaker_open", w->idx, DUET_LOG_WARN,
		  "partition %s: circuit breaker open after %u failures in a minute (last: %s)",
		  sup_part_name(S, w->idx), w->fails, why);
}

void sup_breaker_ok(struct sup *S, struct sup_worker *w)
{
	/* An open breaker closes only on a success after its cool-down (a canary's). */
	if (!w->breaker_until_ms || sup_now_ms() < w->breaker_until_ms)
		return;
	w->fails = 0;
	w->fail_since_ms = sup_now_ms();
	w->breaker_until_ms = 0;
	log_info(SUB, "partition %s: circuit breaker closed: a canary went through",
		 sup_part_name(S, w->idx));
	sup_event(S, "breaker_close", w->idx, DUET_LOG_INFO,
		  "partition %s: circuit breaker closed", sup_part_name(S, w->idx));
}

/* --- picking partitions -------------------------------------------------------------- */

/*
 * Prefix affinity: the chained hashes of a prompt's leading whole blocks
 * (hash i covers blocks 0..i, salted by the tenant like the prefix cache),
 * remembered per prefill partition in a small direct-mapped table when a
 * prompt is sent there.  A partition that saw a prefix recently probably
 * still has it cached.
 */
static unsigned prefix_hashes(const struct sup *S, const struct sup_req *r, uint64_t *h)
{
	const struct sup_job *j = r->job;
	uint32_t bt = S->w[0].block_tokens ? S->w[0].block_tokens : 16;
	unsigned n = j->n_ids / bt;
	uint64_t x;

	memcpy(&x, j->head + offsetof(struct ipc_submit, salt), sizeof(x));
	x ^= 0x9e3779b97f4a7c15ull;

	if (n > SUP_PREFIX_BLOCKS)
		n = SUP_PREFIX_BLOCKS;
	for (unsigned b = 0; b < n; b++) {
		x = ipc_kv_checksum(x, j->ids + (size_t)b * bt, sizeof(int32_t) * bt);
		h[b] = x | 1; /* 0 marks an empty slot */
	}
	return n;
}

/* Leading blocks of r's prompt that p saw lately. */
static unsigned prefix_score(const struct sup_worker *p, const uint64_t *h, unsigned n)
{
	unsigned k = 0;

	while (k < n && p->prefix_seen[h[k] % SUP_PREFIX_SLOTS] == h[k])
		k++;
	return k;
}

/*
 * Prefill admission: a prefill worker takes a new prompt of n tokens when
 * it has none in flight, or when what it has plus n fits one step
 * (its max_batch_tokens).  The rest waits in the router, holding no decode
 * blocks, so a reservation waits for at most about one prefill step.
 */
static bool pre_has_room(const struct sup *S, const struct sup_worker *p, uint32_t n)
{
	return p->pending_tokens == 0 ||
	       p->pending_tokens + n <= (uint64_t)S->cfg->partitions[p->idx].max_batch_tokens;
}

/* Link l's prefill partition can take a prompt of n tokens toward decode partition d now. */
static bool pre_fits(const struct sup *S, const struct sup_link *l, int d, uint32_t n)
{
	const struct sup_worker *p = &S->w[l->pre];

	return l->dec == d && l->up && sup_worker_usable(p) && pre_has_room(S, p, n);
}

/*
 * The prefill partition for r toward decode partition d (pre_fits); the one
 * that saw the longest prefix of r's prompt lately (h[0..n): its
 * prefix_hashes), unless that one has more than a prompt's worth of tokens
 * in flight beyond the least loaded; else the fewest prompt tokens in flight.
 */
static struct sup_worker *pick_pre(struct sup *S, int d, const struct sup_req *r, const uint64_t *h,
				   unsigned n)
{
	struct sup_worker *least = NULL, *aff = NULL;
	unsigned best_k = 0;

	for (unsigned i = 0; i < S->n_links; i++) {
		struct sup_worker *p = &S->w[S->links[i].pre];
		unsigned k;

		if (!pre_fits(S, &S->links[i], d, r->job->n_ids))
			continue;
		if (!least || p->pending_tokens < least->pending_tokens)
			least = p;
		k = prefix_score(p, h, n);
		if (k > best_k || (k == best_k && k && p->pending_tokens < aff->pending_tokens)) {
			aff = p;
			best_k = k;
		}
	}
	if (aff && aff->pending_tokens <= least->pending_tokens + 2 * r->job->n_ids)
		return aff;
	return least;
}

/* A prompt with prefix hashes h[0..n) goes to p: remember them there. */
static void prefix_note(struct sup_worker *p, const uint64_t *h, unsigned n)
{
	for (unsigned b = 0; b < n; b++)
		p->prefix_seen[h[b] % SUP_PREFIX_SLOTS] = h[b];
}

/* Blocks a prompt of n tokens needs on worker w (its block size). */
static uint32_t blocks_for(const struct sup_worker *w, uint32_t n)
{
	uint32_t bt = w->block_tokens ? w->block_tokens : 16;

	return (n + bt - 1) / bt;
}

/* Some prefill partition can take a prompt of n tokens toward decode partition d now. */
static bool pre_any(const struct sup *S, int d, uint32_t n)
{
	for (unsigned i = 0; i < S->n_links; i++)
		if (pre_fits(S, &S->links[i], d, n))
			return true;
	return false;
}

/*
 * The decode partition for r: free to take a LEASE now, a prefill partition
 * linked to it, room in its pool as its last STATS said; the smallest
 * running batch first.  *never: no decode partition could ever hold it.
 */
static struct sup_worker *pick_dec(struct sup *S, const struct sup_req *r, bool *never)
{
	struct sup_worker *best = NULL;
	bool any_fits = false, any = false;

	for (unsigned i = 0; i < S->n_w; i++) {
		struct sup_worker *d = &S->w[i];
		uint32_t need;

		if (S->cfg->partitions[i].role != CFG_ROLE_DECODE)
			continue;
		any = true;
		need = blocks_for(d, r->job->n_ids);
		if (!d->st.t_ns || need <= d->st.kv_total)
			any_fits = true;
		if (!sup_worker_usable(d) || d->lease_rid || d->full ||
		    !pre_any(S, (int)i, r->job->n_ids))
			continue;
		if (d->st.t_ns && need > d->st.kv_total - d->st.kv_used - d->st.kv_leased)
			continue;
		if (!best || d->running < best->running)
			best = d;
	}
	*never = any && !any_fits;
	return best;
}

/* --- moving a choice ------------------------------------------------------------------- */

static void uncount(struct sup *S, struct sup_req *r)
{
	struct sup_worker *w = &S->w[r->worker];

	if (r->counted && w->running)
		w->running--;
	r->counted = false;
	if (r->phase == SUP_PREFILL)
		w->pending_tokens -= w->pending_tokens >= r->job->n_ids ? r->job->n_ids
									: w->pending_tokens;
}

static void count(struct sup *S, struct sup_req *r, struct sup_worker *w)
{
	r->worker = w->idx;
	w->running++;
	r->counted = true;
}

static void lease_free(struct sup *S, int dec, uint64_t id, int32_t lease_id, uint64_t epoch)
{
	struct sup_worker *d = &S->w[dec];
	struct ipc_lease_free f = { .lease_id = lease_id, .epoch = epoch };

	if (!d->ch)
		return; /* its pool went with it */
	ipc_send(d->ch, IPC_LEASE_FREE, id, &f, sizeof(f));
	sup_worker_set_events(S, d);
}

/* The reservation r holds (after LEASED, until ADOPT), given back. */
static void release_lease(struct sup *S, struct sup_req *r)
{
	const struct ipc_ship *sh = r->job->ship;

	if (sh)
		lease_free(S, (int)sh->partition, r->id, sh->lease_id, sh->epoch);
	duet_free(r->job->ship);
	r->job->ship = NULL;
}

/*
 * The current attempt of r failed (why): start again from the queue's head
 * with the tokens the client already has, or fail r when it has had its
 * api.max_attempts.  r is no longer counted anywhere.
 */
static void retry_or_fail(struct sup *S, struct sup_req *r, const char *why)
{
	struct sup_job *j = r->job;
	uint32_t done_tokens = j->n_ids - r->n_prompt;

	snprintf(r->last_err, sizeof(r->last_err), "%s", why);
	r->id = ++S->next_id; /* late frames of the failed attempt find nothing */
	if (r->attempts >= (unsigned)S->cfg->api.max_attempts) {
		char msg[IPC_ERRMSG_MAX + 64];

		snprintf(msg, sizeof(msg), "the request failed %u time%s; last: %s", r->attempts,
			 r->attempts == 1 ? "" : "s", why);
		r->phase = SUP_DIRECT;
		sup_req_finish(S, r, 503, "WORKER", msg);
		return;
	}
	if (done_tokens >= r->max_tokens) {
		/* Everything was streamed already; only the DONE was lost. */
		r->phase = SUP_DIRECT;
		sup_req_finish(S, r, 200, NULL, NULL);
		return;
	}
	log_info(SUB, "request %" PRIu64 ": attempt %u failed (%s); re-prefilling %u tokens", r->id,
		 r->attempts, why, j->n_ids);
	enqueue(S, r, true);
}

/*
 * What is left of r's lease for the SHIP: kv.lease_timeout_ms from the
 * LEASE, less the time since, less a margin (a tenth, at most 100 ms) for
 * the frames on their way; at least 1 ms.
 */
static uint32_t ship_ttl(const struct sup *S, const struct sup_req *r)
{
	uint64_t ttl = (uint64_t)S->cfg->kv.lease_timeout_ms;
	uint64_t spent = (sup_now_ns() - r->t_lease_ns) / 1000000u;
	uint64_t margin = ttl / 10 < 100 ? ttl / 10 : 100;

	return ttl > spent + margin + 1 ? (uint32_t)(ttl - spent - margin) : 1;
}

/* dispatch() builds the LEASE in S->submit's buffer: nothing is kept there between frames. */
static_assert(sizeof(struct ipc_lease) <= sizeof(struct ipc_submit), "a LEASE fits S->submit");

/*
 * Send LEASE for the queue's head; false when it has to wait.  The LEASE
 * carries the prompt's salt and its first tokens (as many as fit one frame)
 * so that the decode worker can hold the blocks it has cached already.
 */
static bool dispatch(struct sup *S, struct sup_req *r)
{
	uint32_t n_tok =
		r->job->n_ids < IPC_LEASE_MAX_TOKENS ? r->job->n_ids : IPC_LEASE_MAX_TOKENS;
	uint32_t len = ipc_lease_len(n_tok);
	struct ipc_lease *l = (struct ipc_lease *)S->submit;
	uint64_t h[SUP_PREFIX_BLOCKS];
	struct sup_worker *d, *p;
	unsigned n_h;
	bool never;
	int ret;

	d = pick_dec(S, r, &never);
	if (!d) {
		if (never) {
			q_remove(S, r);
			r->phase = SUP_DIRECT;
			sup_req_finish(S, r, 400, "BADPARAM",
				       "the prompt needs more KV blocks than any decode partition has");
			return true;
		}
		return false;
	}
	n_h = prefix_hashes(S, r, h);
	p = pick_pre(S, d->idx, r, h, n_h);
	/* Only len bytes go out: no struct assignment (it would write all 64 KiB). */
	memset(l, 0, IPC_LEASE_FIXED);
	l->n_prompt = r->job->n_ids;
	l->ttl_ms = (uint32_t)S->cfg->kv.lease_timeout_ms;
	l->owner = (uint64_t)p->idx;
	memcpy(&l->salt, r->job->head + offsetof(struct ipc_submit, salt), sizeof(l->salt));
	l->n_tokens = n_tok;
	memcpy(l->tokens, r->job->ids, sizeof(int32_t) * n_tok);
	r->id = ++S->next_id;
	ret = ipc_send(d->ch, IPC_LEASE, r->id, l, len);
	sup_worker_set_events(S, d);
	if (ret)
		return false; /* its queue is full, or it is dying: try again later */
	q_remove(S, r);
	r->t_lease_ns = sup_now_ns();
	r->phase = SUP_LEASING;
	r->worker = d->idx;
	r->pre = p->idx;
	r->attempts++;
	d->lease_rid = r->id;
	return true;
}

/* Restart the scan after anything that may free choices (sup_req_finish). */
static bool end_one_cancelled(struct sup *S, uint64_t now_ms)
{
	for (struct sup_req *r = S->q_head; r; r = r->qnext) {
		if (r->cancel_pending) {
			q_remove(S, r);
			r->phase = SUP_DIRECT;
			sup_req_finish(S, r, 503, "CANCELLED", "the request was cancelled");
			return true;
		}
		if (S->draining) {
			q_remove(S, r);
			r->phase = SUP_DIRECT;
			sup_req_finish(S, r, 503, "SHUTDOWN", "the server is shutting down");
			return true;
		}
		if (now_ms >= r->deadline_ms) {
			char msg[IPC_ERRMSG_MAX + 96];

			q_remove(S, r);
			r->phase = SUP_DIRECT;
			if (r->last_err[0])
				snprintf(msg, sizeof(msg),
					 "no partition could take the request again within %d ms "
					 "after: %s",
					 S->cfg->api.queue_timeout_ms, r->last_err);
			else
				snprintf(msg, sizeof(msg),
					 "no prefill/decode capacity within %d ms (api.queue_timeout_ms)",
					 S->cfg->api.queue_timeout_ms);
			sup_req_finish(S, r, 503, "UNAVAILABLE", msg);
			return true;
		}
	}
	return false;
}

void sup_route_kick(struct sup *S)
{
	uint64_t now = sup_now_ms();

	if (!S->q_head)
		return;
	while (end_one_cancelled(S, now))
		;
	while (S->q_head && dispatch(S, S->q_head))
		;
}

/* --- answers from workers ------------------------------------------------------------- */

/* The split choice id on worker w in phase ph, or NULL. */
static struct sup_req *find_in(struct sup *S, struct sup_worker *w, uint64_t id,
			       enum sup_phase ph)
{
	struct sup_req *r = sup_req_find(S, id);

	return r && !r->done && r->phase == ph && r->worker == w->idx ? r : NULL;
}

bool sup_route_leased(struct sup *S, struct sup_worker *w, uint64_t id,
		      const struct ipc_leased *l)
{
	struct sup_req *r = find_in(S, w, id, SUP_LEASING);
	struct ipc_ship *sh;
	struct sup_worker *p;
	uint32_t len = IPC_SHIP_FIXED + 4u * l->n_blocks;
	uint64_t h[SUP_PREFIX_BLOCKS];
	unsigned n_h;
	int ret;

	if (w->lease_rid == id)
		w->lease_rid = 0;
	if (!r || r->cancel_pending) {
		/* Nobody wants it any more: give it back. */
		lease_free(S, w->idx, id, l->lease_id, l->epoch);
		if (r) {
			r->phase = SUP_QUEUED; /* the kick ends it */
			q_push(S, r, true);
		}
		return true;
	}
	if (l->n_blocks != blocks_for(w, r->job->n_ids)) {
		char why[160];

		snprintf(why, sizeof(why), "partition %s reserved %u blocks for %u tokens",
			 sup_part_name(S, w->idx), l->n_blocks, r->job->n_ids);
		log_error(SUB, "%s", why);
		lease_free(S, w->idx, id, l->lease_id, l->epoch);
		retry_or_fail(S, r, why);
		return true;
	}
	sh = duet_realloc(r->job->ship, len);
	if (!sh) {
		lease_free(S, w->idx, id, l->lease_id, l->epoch);
		retry_or_fail(S, r, "out of memory");
		return true;
	}
	r->job->ship = sh;
	r->job->ship_len = len;
	/* Only len bytes are allocated: no struct assignment (it would write all 64 KiB). */
	memset(sh, 0, IPC_SHIP_FIXED);
	sh->partition = (uint32_t)w->idx;
	sh->lease_id = l->lease_id;
	sh->epoch = l->epoch;
	sh->region = l->region;
	sh->blocks_total = l->blocks_total;
	sh->block_bytes = l->block_bytes;
	sh->n_blocks = l->n_blocks;
	sh->flags = S->cfg->transport.checksum ? IPC_SHIP_CHECKSUM : 0;
	sh->first = l->n_cached; /* the decode side has those; the prefill side skips them */
	memcpy(sh->blocks, l->blocks, 4u * l->n_blocks);
	n_h = prefix_hashes(S, r, h);
	p = &S->w[r->pre];
	if (!sup_worker_usable(p) || !sup_link_of(S, p->idx, w->idx)->up)
		p = pick_pre(S, w->idx, r, h, n_h);
	if (!p) {
		release_lease(S, r);
		r->attempts--; /* nothing was tried */
		enqueue(S, r, true);
		return true;
	}
	sh->ttl_ms = ship_ttl(S, r);
	/* SHIP, then the SUBMIT it applies to; the prefill worker runs it for one token. */
	memcpy(S->submit, r->job->head, IPC_SUBMIT_FIXED);
	S->submit->max_tokens = 1;
	ret = ipc_send(p->ch, IPC_SHIP, r->id, sh, len);
	if (!ret)
		ret = sup_submit_frames(S, p, r->id, r->job->bias, r->job->n_bias, r->job->ids,
					r->job->n_ids);
	sup_worker_set_events(S, p);
	if (ret) {
		struct ipc_cancel c = { .reason = IPC_CANCEL_REROUTE };
		char why[160];

		ipc_send(p->ch, IPC_CANCEL, r->id, &c, sizeof(c));
		release_lease(S, r);
		if (ret == -ENOBUFS) {
			/* Its queue is full: try again later, not a failure of the request. */
			r->attempts--;
			r->id = ++S->next_id;
			enqueue(S, r, true);
			return true;
		}
		snprintf(why, sizeof(why), "sending the prompt to partition %s: %s",
			 sup_part_name(S, p->idx), duet_strerror(ret));
		log_error(SUB, "%s", why);
		retry_or_fail(S, r, why);
		return true;
	}
	r->pre = p->idx;
	r->phase = SUP_PREFILL;
	count(S, r, p);
	p->pending_tokens += r->job->n_ids;
	prefix_note(p, h, n_h);
	return true;
}

bool sup_route_error(struct sup *S, struct sup_worker *w, uint64_t id, const struct ipc_error *e)
{
	struct sup_req *r = find_in(S, w, id, SUP_LEASING);

	if (!r)
		return false; /* an error of a running request: DONE follows */
	if (w->lease_rid == id)
		w->lease_rid = 0;
	r->phase = SUP_QUEUED;
	if (r->cancel_pending) {
		q_push(S, r, true); /* the kick ends it */
		return true;
	}
	if (e->code == -ENOSPC || e->code == -EBUSY) {
		/* No room now: wait at the head until this worker frees blocks. */
		w->full = true;
		r->attempts--;
		enqueue(S, r, true);
		return true;
	}
	r->phase = SUP_DIRECT;
	sup_req_finish(S, r, sup_http_status(e->code), e->code == -E2BIG ? "BADPARAM" : "WORKER",
		       e->msg);
	return true;
}

bool sup_route_prefilled(struct sup *S, struct sup_worker *w, uint64_t id,
			 const struct ipc_kv_record *rec, uint32_t len)
{
	struct sup_req *r = find_in(S, w, id, SUP_PREFILL);
	struct sup_link *l;

	if (!r || !r->job->ship)
		return false;
	memcpy(&r->job->rec, rec, len);
	r->job->rec_len = len;
	r->t_first_pre_ns = rec->t_first_ns;
	l = sup_link_of(S, w->idx, (int)r->job->ship->partition);
	if (l) {
		l->bytes += rec->bytes;
		l->transfers++;
		l->xfer_ns += rec->xfer_ns;
	}
	met_add(S->met, MET_KV_TRANSFER_BYTES, w->series, (double)rec->bytes);
	met_observe(S->met, MET_KV_TRANSFER_SECONDS, w->series, (double)rec->xfer_ns / 1e9);
	return true;
}

/* A transfer between r's partitions failed; blame (if any) gets a breaker failure. */
static void transfer_failed(struct sup *S, struct sup_req *r, struct sup_worker *blame)
{
	struct sup_link *l = r->job->ship ? sup_link_of(S, r->pre, (int)r->job->ship->partition)
					  : NULL;

	if (l)
		l->failures++;
	met_add(S->met, MET_KV_TRANSFER_FAILURES, S->w[r->pre >= 0 ? r->pre : r->worker].series, 1);
	if (blame)
		sup_breaker_fail(S, blame, r->err_msg[0] ? r->err_msg : "KV transfer failed");
}

/* The prefill side is done with r: hand it to the decode side, or retry. */
static void prefill_done(struct sup *S, struct sup_worker *p, struct sup_req *r,
			 const struct ipc_done *d)
{
	struct sup_job *j = r->job;
	struct sup_worker *dw = j->ship ? &S->w[j->ship->partition] : NULL;
	int ret;

	uncount(S, r);
	/* The prompt went through the prefill side's prefix cache, not the decode side's. */
	r->n_cached = d->n_cached < r->n_prompt ? d->n_cached : r->n_prompt;
	if (d->t_arrival_ns && d->t_sched_ns >= d->t_arrival_ns && d->t_first_ns >= d->t_sched_ns) {
		/* Waiting: in the router (this attempt) and in the prefill worker's queue. */
		double routed = d->t_arrival_ns > r->t_queued_ns
					? (double)(d->t_arrival_ns - r->t_queued_ns) / 1e6
					: 0;

		r->queue_ms = routed + (double)(d->t_sched_ns - d->t_arrival_ns) / 1e6;
		r->prefill_ms = (double)(d->t_first_ns - d->t_sched_ns) / 1e6;
		if (r->resp) {
			met_observe(S->met, MET_QUEUE_TIME, p->series, r->queue_ms / 1e3);
			met_observe(S->met, MET_PREFILL_TIME, p->series, r->prefill_ms / 1e3);
		}
	}
	if (r->cancel_pending || d->finish == IPC_FINISH_CANCELLED) {
		release_lease(S, r);
		r->phase = SUP_DIRECT;
		sup_req_finish(S, r, 503, "CANCELLED", "the request was cancelled");
		return;
	}
	if (d->finish == IPC_FINISH_ERROR || !j->rec_len || !dw || !dw->ch) {
		char why[IPC_ERRMSG_MAX + 64];

		if (d->finish != IPC_FINISH_ERROR && !j->rec_len)
			snprintf(why, sizeof(why), "partition %s finished without a KV record",
				 sup_part_name(S, p->idx));
		else if (d->finish != IPC_FINISH_ERROR)
			snprintf(why, sizeof(why), "the decode partition went away");
		else
			snprintf(why, sizeof(why), "partition %s: %s", sup_part_name(S, p->idx),
				 r->err_msg[0] ? r->err_msg : "prefill failed");
		if (r->err_code == -E2BIG) { /* the prompt does not fit: no use trying again */
			release_lease(S, r);
			r->phase = SUP_DIRECT;
			sup_req_finish(S, r, 400, "BADPARAM", why);
			return;
		}
		transfer_failed(S, r, p);
		release_lease(S, r);
		r->err_msg[0] = '\0';
		r->err_code = 0;
		retry_or_fail(S, r, why);
		return;
	}
	/* ADOPT, then the SUBMIT it applies to, with what is left to generate. */
	memcpy(S->submit, j->head, IPC_SUBMIT_FIXED);
	S->submit->max_tokens = r->max_tokens - (j->n_ids - r->n_prompt);
	ret = ipc_send(dw->ch, IPC_ADOPT, r->id, &j->rec, j->rec_len);
	if (!ret)
		ret = sup_submit_frames(S, dw, r->id, j->bias, j->n_bias, j->ids, j->n_ids);
	sup_worker_set_events(S, dw);
	j->rec_len = 0;
	duet_free(j->ship); /* the decode worker owns the blocks now (or frees them) */
	j->ship = NULL;
	if (ret) {
		struct ipc_cancel c = { .reason = IPC_CANCEL_REROUTE };

		ipc_send(dw->ch, IPC_CANCEL, r->id, &c, sizeof(c));
		retry_or_fail(S, r, "the decode partition's channel is full");
		return;
	}
	r->phase = SUP_DECODE;
	count(S, r, dw);
}

bool sup_route_done(struct sup *S, struct sup_worker *w, struct sup_req *r,
		    const struct ipc_done *d)
{
	if (r->phase == SUP_PREFILL) {
		prefill_done(S, w, r, d);
		return true;
	}
	if (r->phase != SUP_DECODE)
		return true; /* not in a worker: stale */
	w->full = false; /* it finished something: blocks may be free */
	if (d->t_arrival_ns && r->t_first_pre_ns && d->t_arrival_ns >= r->t_first_pre_ns) {
		struct sup_link *l = sup_link_of(S, r->pre, w->idx);

		r->xfer_ms = (double)(d->t_arrival_ns - r->t_first_pre_ns) / 1e6;
		if (l) {
			l->handoffs++;
			l->handoff_ms += r->xfer_ms;
		}
	}
	/*
	 * An error here is the decode side's (a record it refused, a failed
	 * step): the request was admitted and checked, so it starts again.
	 */
	if (d->finish != IPC_FINISH_ERROR || r->stopped || r->cancel_pending)
		return false; /* finishes as any request */
	{
		char why[IPC_ERRMSG_MAX + 64];

		snprintf(why, sizeof(why), "partition %s: %s", sup_part_name(S, w->idx),
			 r->err_msg[0] ? r->err_msg : "decode failed");
		uncount(S, r);
		transfer_failed(S, r, w);
		r->err_msg[0] = '\0';
		r->err_code = 0;
		retry_or_fail(S, r, why);
	}
	return true;
}

/* One split choice touched by w's loss, handled; false when there is none left. */
static bool lost_one(struct sup *S, struct sup_worker *w, const char *why)
{
	for (struct sup_req *r = S->reqs; r; r = r->next) {
		if (r->done || r->phase == SUP_DIRECT || r->phase == SUP_QUEUED)
			continue;
		bool on_it = r->worker == w->idx;
		bool dec_of_prefill = r->phase == SUP_PREFILL && r->job->ship &&
				      (int)r->job->ship->partition == w->idx;

		if (!on_it && !dec_of_prefill)
			continue;
		if (r->phase == SUP_PREFILL && !on_it) {
			/* Its blocks died with the decode worker: stop the prefill. */
			struct sup_worker *p = &S->w[r->worker];
			struct ipc_cancel c = { .reason = IPC_CANCEL_REROUTE };

			if (p->ch) {
				ipc_send(p->ch, IPC_CANCEL, r->id, &c, sizeof(c));
				sup_worker_set_events(S, p);
			}
			duet_free(r->job->ship);
			r->job->ship = NULL;
		} else if (r->phase == SUP_PREFILL) {
			release_lease(S, r);
		}
		if (r->phase == SUP_LEASING || r->phase == SUP_PREFILL) {
			if (r->cancel_pending) {
				uncount(S, r);
				r->phase = SUP_DIRECT;
				sup_req_finish(S, r, 503, "CANCELLED", "the request was cancelled");
				return true;
			}
			r->attempts -= r->phase == SUP_LEASING; /* the LEASE never got an answer */
		}
		uncount(S, r);
		if (r->phase != SUP_LEASING)
			transfer_failed(S, r, NULL); /* the death itself counts for the breaker */
		retry_or_fail(S, r, why);
		return true;
	}
	return false;
}

void sup_route_worker_lost(struct sup *S, struct sup_worker *w)
{
	if (!sup_split(S))
		return;
	while (lost_one(S, w, w->why[0] ? w->why : "a worker failed"))
		;
}

bool sup_route_cancel(struct sup *S, struct sup_req *r)
{
	struct ipc_cancel c = { .reason = IPC_CANCEL_CLIENT };
	struct sup_worker *p;

	switch (r->phase) {
	case SUP_QUEUED:
	case SUP_LEASING:
		r->cancel_pending = true;
		return true;
	case SUP_PREFILL:
		r->cancel_pending = true;
		p = &S->w[r->worker];
		if (p->ch) {
			ipc_send(p->ch, IPC_CANCEL, r->id, &c, sizeof(c));
			sup_worker_set_events(S, p);
		}
		return true;
	case SUP_DIRECT:
	case SUP_DECODE:
	default:
		return false;
	}
}
