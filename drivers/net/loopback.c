// SPDX-License-Identifier: MIT
/*
 * loopback: a fake driver for tests.  Both endpoints live in one process;
 * an operation is copied at post time into the peer's inbound queue and
 * delivered when the peer polls (bounds checked there like any receiver,
 * with a failed completion back to the sender).  Faults armed with
 * xfer_loopback_inject() hit the nth operation posted after the call.
 * Every operation completes at most once at its sender, as on a real
 * wire (xfer.c counts operations in flight by their completions): the
 * copy a DUPLICATE delivers completes nowhere.
 * Allocates per operation: it is a test fake, not a hot path.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "drivers/net/xfer-impl.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#define LB_MAX_FAULTS 16

enum lb_kind { LB_WRITE, LB_MSG };

struct lb_op {
	struct lb_op *next;
	enum lb_kind kind;
	uint64_t src_token; /* sender endpoint (may be gone at delivery) */
	uint64_t wr_id;
	uint32_t region;
	uint64_t offset;
	uint64_t len;
	bool with_imm;
	uint32_t imm;
	bool dup; /* XFER_FAULT_DUPLICATE's second copy: no completion at the sender */
	uint8_t data[];
};

struct lb_ep {
	struct lb_ep *next; /* all loopback endpoints (lb_lock) */
	struct xfer_ep *ep;
	struct lb_op *in_head, *in_tail; /* inbound, delivered on poll (lb_lock) */
	struct lb_op *held;		 /* XFER_FAULT_DELAY, posted by this ep */
	struct lb_op *reorder;		 /* XFER_FAULT_REORDER: goes after the next op */
	struct {
		enum xfer_fault fault;
		uint64_t at; /* value of posted that triggers */
	} faults[LB_MAX_FAULTS];
	unsigned n_faults;
	uint64_t posted;
};

static pthread_mutex_t lb_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lb_ep *lb_all;

static struct lb_ep *lb_find(uint64_t token)
{
	for (struct lb_ep *l = lb_all; l; l = l->next)
		if (l->ep->token == token)
			return l;
	return NULL;
}

static void free_list(struct lb_op *op)
{
	while (op) {
		struct lb_op *next = op->next;
		duet_free(op);
		op = next;
	}
}

int xfer_anon_mr_alloc(struct xfer_dev *dev, struct xfer_mr *mr)
{
	long pg = 4096;
	size_t map = (mr->len + (size_t)pg - 1) & ~((size_t)pg - 1);
	void *p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		log_error(XFER_SUBSYS, "%s: mmap of %zu bytes: %s", dev->ops->name, map,
			  strerror(errno));
		return -ENOMEM;
	}
	mr->base = p;
	mr->map_len = map;
	return 0;
}

void xfer_anon_mr_free(struct xfer_mr *mr)
{
	munmap(mr->base, mr->map_len);
}

static int lb_ep_create(struct xfer_ep *ep)
{
	struct lb_ep *l = duet_calloc(1, sizeof(*l));

	if (!l)
		return -ENOMEM;
	l->ep = ep;
	ep->priv = l;
	pthread_mutex_lock(&lb_lock);
	l->next = lb_all;
	lb_all = l;
	pthread_mutex_unlock(&lb_lock);
	return 0;
}

static void lb_ep_destroy(struct xfer_ep *ep)
{
	struct lb_ep *l = ep->priv;

	pthread_mutex_lock(&lb_lock);
	for (struct lb_ep **pp = &lb_all; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	pthread_mutex_unlock(&lb_lock);
	free_list(l->in_head);
	free_list(l->held);
	free_list(l->reorder);
	duet_free(l);
}

static int lb_connect(struct xfer_ep *ep, const struct xfer_desc *d)
{
	struct lb_ep *peer;

	pthread_mutex_lock(&lb_lock);
	peer = lb_find(ep->peer.token);
	pthread_mutex_unlock(&lb_lock);
	if (!peer) {
		log_error(XFER_SUBSYS, "loopback: no endpoint %016" PRIx64 " in this process",
			  ep->peer.token);
		return -ECONNREFUSED;
	}
	return 0;
}

/* Completes op at its sender (if it still exists); takes lb_lock. */
static void complete_at_sender(const struct lb_op *op, enum xfer_wc_status st)
{
	struct lb_ep *src;
	struct xfer_wc wc = { .wr_id = op->wr_id,
			      .status = st,
			      .op = op->kind == LB_WRITE ? XFER_WC_WRITE : XFER_WC_MSG };

	if (op->dup)
		return;
	pthread_mutex_lock(&lb_lock);
	src = lb_find(op->src_token);
	if (src)
		xfer_cq_push(src->ep, &wc, NULL, false);
	pthread_mutex_unlock(&lb_lock);
}

/* Appends op to the peer's inbound queue; a vanished peer flushes it (ep is its sender). */
static void deliver(struct xfer_ep *ep, struct lb_op *op)
{
	struct lb_ep *peer;

	op->next = NULL;
	pthread_mutex_lock(&lb_lock);
	peer = lb_find(ep->peer.token);
	if (peer) {
		if (peer->in_tail)
			peer->in_tail->next = op;
		else
			peer->in_head = op;
		peer->in_tail = op;
		xfer_ep_signal(peer->ep);
	}
	pthread_mutex_unlock(&lb_lock);
	if (!peer) {
		complete_at_sender(op, XFER_WC_FLUSHED);
		duet_free(op);
	}
}

/* Applies the fault armed for this operation, if any, then sends it on. */
static int submit(struct xfer_ep *ep, struct lb_op *op)
{
	struct lb_ep *l = ep->priv;
	struct lb_op *prev = l->reorder;
	bool have_fault = false;
	enum xfer_fault fault = XFER_FAULT_DROP;

	l->posted++;
	for (unsigned i = 0; i < l->n_faults; i++) {
		if (l->faults[i].at != l->posted)
			continue;
		fault = l->faults[i].fault;
		have_fault = true;
		l->faults[i] = l->faults[--l->n_faults];
		break;
	}
	l->reorder = NULL;
	if (!have_fault) {
		deliver(ep, op);
	} else {
		log_debug(XFER_SUBSYS, "loopback: fault %d on operation %" PRIu64, fault,
			  l->posted);
		switch (fault) {
		case XFER_FAULT_DROP:
			duet_free(op);
			break;
		case XFER_FAULT_DELAY:
			op->next = l->held;
			l->held = op;
			break;
		case XFER_FAULT_DUPLICATE: {
			size_t sz = sizeof(*op) + op->len;
			struct lb_op *dup = duet_malloc(sz);
			if (dup) {
				memcpy(dup, op, sz);
				dup->dup = true;
			}
			deliver(ep, op);
			if (dup)
				deliver(ep, dup);
			break;
		}
		case XFER_FAULT_REORDER:
			l->reorder = op;
			break;
		case XFER_FAULT_CORRUPT:
			if (op->len)
				op->data[op->len / 2] ^= 0x5a;
			deliver(ep, op);
			break;
		case XFER_FAULT_FAIL: {
			struct xfer_wc wc = { .wr_id = op->wr_id,
					      .status = XFER_WC_LOCAL,
					      .op = op->kind == LB_WRITE ? XFER_WC_WRITE
									 : XFER_WC_MSG };
			duet_free(op);
			xfer_cq_push(ep, &wc, NULL, false);
			break;
		}
		}
	}
	if (prev)
		deliver(ep, prev);
	return 0;
}

static int lb_post_write(struct xfer_ep *ep, const struct xfer_write *wr, uint64_t total)
{
	struct lb_op *op = duet_malloc(sizeof(*op) + total);
	uint64_t at = 0;

	if (!op)
		return -ENOMEM;
	*op = (struct lb_op){ .kind = LB_WRITE,
			      .src_token = ep->token,
			      .wr_id = wr->wr_id,
			      .region = wr->remote_region,
			      .offset = wr->remote_offset,
			      .len = total,
			      .with_imm = wr->with_imm,
			      .imm = wr->imm };
	for (unsigned i = 0; i < wr->nsg; i++) {
		memcpy(op->data + at, (uint8_t *)wr->sg[i].mr->base + wr->sg[i].offset,
		       wr->sg[i].len);
		at += wr->sg[i].len;
	}
	return submit(ep, op);
}

static int lb_post_msg(struct xfer_ep *ep, uint64_t wr_id, const void *buf, size_t len)
{
	struct lb_op *op = duet_malloc(sizeof(*op) + len);

	if (!op)
		return -ENOMEM;
	*op = (struct lb_op){ .kind = LB_MSG, .src_token = ep->token, .wr_id = wr_id, .len = len };
	memcpy(op->data, buf, len);
	return submit(ep, op);
}

static int lb_progress(struct xfer_ep *ep)
{
	struct lb_ep *l = ep->priv;
	struct lb_op *op;

	for (;;) {
		struct xfer_mr *mr;
		struct xfer_wc wc = { 0 };

		/* Keep room for the completion this op may produce. */
		if (xfer_cq_room(ep) == 0)
			break;
		pthread_mutex_lock(&lb_lock);
		op = l->in_head;
		if (op) {
			l->in_head = op->next;
			if (!l->in_head)
				l->in_tail = NULL;
		}
		pthread_mutex_unlock(&lb_lock);
		if (!op)
			break;
		if (op->kind == LB_MSG) {
			XFER_STAT_ADD(ep, rx_msgs, 1);
			wc.op = XFER_WC_RECV_MSG;
			wc.len = op->len;
			xfer_cq_push(ep, &wc, op->data, false);
			complete_at_sender(op, XFER_WC_OK);
		} else if (xfer_check_rx(ep, op->region, op->offset, op->len, &mr) == 0) {
			memcpy((uint8_t *)mr->base + op->offset, op->data, op->len);
			XFER_STAT_ADD(ep, rx_writes, 1);
			XFER_STAT_ADD(ep, rx_bytes, op->len);
			if (op->with_imm) {
				wc.op = XFER_WC_RECV_IMM;
				wc.imm = op->imm;
				wc.region = op->region;
				wc.offset = op->offset;
				wc.len = op->len;
				xfer_cq_push(ep, &wc, NULL, false);
			}
			complete_at_sender(op, XFER_WC_OK);
		} else {
			complete_at_sender(op, XFER_WC_REMOTE_ACCESS);
		}
		duet_free(op);
	}
	return 0;
}

static int lb_inject(struct xfer_ep *ep, enum xfer_fault fault, unsigned nth)
{
	struct lb_ep *l = ep->priv;

	if (nth == 0 || fault > XFER_FAULT_FAIL)
		return -EINVAL;
	if (l->n_faults == LB_MAX_FAULTS)
		return -ENOSPC;
	l->faults[l->n_faults].fault = fault;
	l->faults[l->n_faults].at = l->posted + nth;
	l->n_faults++;
	return 0;
}

static int lb_release(struct xfer_ep *ep)
{
	struct lb_ep *l = ep->priv;
	struct lb_op *rev = NULL, *op;
	int n = 0;

	/* held is newest first: deliver in posting order. */
	while ((op = l->held)) {
		l->held = op->next;
		op->next = rev;
		rev = op;
	}
	while ((op = rev)) {
		rev = op->next;
		deliver(ep, op);
		n++;
	}
	if ((op = l->reorder)) {
		l->reorder = NULL;
		deliver(ep, op);
		n++;
	}
	return n;
}

const struct xfer_ops xfer_loopback_ops = {
	.name = "loopback",
	.id = XFER_DRV_LOOPBACK,
	.caps = {
		.max_write = 1ull << 30,
		.max_msg = XFER_MSG_MAX,
		.max_sge = XFER_MAX_SGE,
		.imm = true,
		.msg = true,
		.remote_reject = true,
		.fault_injection = true,
	},
	.mr_alloc = xfer_anon_mr_alloc,
	.mr_free = xfer_anon_mr_free,
	.ep_create = lb_ep_create,
	.ep_destroy = lb_ep_destroy,
	.connect = lb_connect,
	.post_write = lb_post_write,
	.post_msg = lb_post_msg,
	.progress = lb_progress,
	.inject = lb_inject,
	.release = lb_release,
};
