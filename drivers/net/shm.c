// SPDX-License-Identifier: MIT
/*
 * shm: same host, CPU memory.  A region from xfer_mr_alloc() is a sealed
 * memfd (MFD_HUGETLB when hugepages are asked for and available) mapped
 * shared; the peer maps it too, and a write is one memcpy into that mapping
 * from the sender's thread.
 *
 * Each endpoint owns an inbound ring in its own sealed memfd: a
 * single-producer (the peer) / single-consumer (this endpoint) ring of
 * fixed 4160-byte records, head and tail 64-bit counters on their own cache
 * lines.  Records announce writes with immediate, carry messages, and carry
 * NACKs (a record the receiver refused).  After pushing a record the
 * producer writes the consumer's eventfd.
 *
 * Trust: the peer can scribble over the shared ring and the regions.  The
 * consumer keeps its own head, checks the peer's tail against it, copies each
 * record out before looking at it and re-checks every range it names
 * against its own regions (fail closed).  The producer checks the peer's
 * head the same way.  Regions and rings are sealed against shrinking before
 * the peer sees them, and connect refuses unsealed or short memfds, so a
 * peer cannot make a mapping fault (SIGBUS).
 *
 * The descriptor's fds (region memfds, ring memfd, eventfd) must reach the
 * peer: ferry them with xfer_desc_send()/xfer_desc_recv() (SCM_RIGHTS), or
 * let connect fetch them with pidfd_getfd(2) from the pid and fd numbers in
 * the descriptor (needs ptrace access to the peer; logged when refused).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "drivers/net/xfer-impl.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#define HUGE_2M (2ul << 20)
#define RING_MAX_SLOTS 65536u

enum shm_rec_type {
	SHM_REC_IMM = 1,  /* a write with immediate landed at (region, offset, len) */
	SHM_REC_MSG = 2,  /* a message of msg_len bytes in data */
	SHM_REC_NACK = 3, /* the receiver refused the sender's wr_id (status) */
};

/* One ring record; every field little-endian host order (same host). */
struct shm_rec {
	uint32_t type;		    /*  0: enum shm_rec_type */
	uint32_t status;	    /*  4: NACK: enum xfer_wc_status */
	uint64_t wr_id;		    /*  8 */
	uint32_t region;	    /* 16 */
	uint32_t imm;		    /* 20 */
	uint64_t offset;	    /* 24 */
	uint64_t len;		    /* 32 */
	uint32_t msg_len;	    /* 40 */
	uint32_t op;		    /* 44: NACK: enum xfer_wc_op of the refused operation */
	uint64_t rsvd[2];	    /* 48 */
	uint8_t data[XFER_MSG_MAX]; /* 64 */
};
static_assert(sizeof(struct shm_rec) == 64 + XFER_MSG_MAX, "shm record is 64 + 4096 bytes");

struct shm_ring_hdr {
	_Atomic uint64_t tail; /* written by the producer */
	uint8_t pad0[56];
	_Atomic uint64_t head; /* written by the consumer */
	uint8_t pad1[56];
};
static_assert(sizeof(struct shm_ring_hdr) == 128, "shm ring header is 128 bytes");

struct shm_map {
	void *base;
	size_t map_len;
	uint64_t len; /* bytes the descriptor promised (<= map_len) */
};

struct shm_ep {
	/* Inbound ring (this endpoint consumes). */
	int ring_fd;
	struct shm_ring_hdr *ring;
	size_t ring_bytes;
	uint32_t slots;
	uint64_t head;
	/* The peer's inbound ring (this endpoint produces) and its eventfd. */
	struct shm_ring_hdr *pring;
	size_t pring_bytes;
	uint32_t pslots;
	uint64_t ptail;
	int pefd;
	struct shm_map peer_mr[XFER_MAX_REGIONS]; /* by the peer's region id */
};

static struct shm_rec *rec_at(struct shm_ring_hdr *r, uint32_t slots, uint64_t i)
{
	return (struct shm_rec *)((uint8_t *)(r + 1) +
				  (size_t)(i & (slots - 1)) * sizeof(struct shm_rec));
}

static int seal(int fd, const char *what)
{
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		log_error(XFER_SUBSYS, "shm: sealing %s: fcntl(F_ADD_SEALS): %s", what,
			  strerror(errno));
		return -errno;
	}
	return 0;
}

/* A sealed memfd of map_len bytes, mapped shared; huge: MFD_HUGETLB. */
static int memfd_map(const char *name, size_t map_len, bool huge, int *fd_out, void **base)
{
	unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB : 0);
	int fd, ret;
	void *p;

	fd = memfd_create(name, flags);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)map_len) < 0) {
		ret = -errno;
		goto err_close;
	}
	p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		goto err_close;
	}
	ret = seal(fd, name);
	if (ret)
		goto err_unmap;
	*fd_out = fd;
	*base = p;
	return 0;

err_unmap:
	munmap(p, map_len);
err_close:
	close(fd);
	return ret;
}

static int shm_mr_alloc(struct xfer_dev *dev, struct xfer_mr *mr)
{
	size_t pg = 4096;
	int ret;

	if (dev->hugepages) {
		mr->map_len = (mr->len + HUGE_2M - 1) & ~(HUGE_2M - 1);
		ret = memfd_map("duet-kv", mr->map_len, true, &mr->fd, &mr->base);
		if (ret == 0)
			return 0;
		log_warn(
			XFER_SUBSYS,
			"shm: hugepages asked for but a %zu-byte MFD_HUGETLB region failed (%s); falling back to 4 KiB pages",
			mr->map_len, strerror(-ret));
	}
	mr->map_len = (mr->len + pg - 1) & ~(pg - 1);
	ret = memfd_map("duet-kv", mr->map_len, false, &mr->fd, &mr->base);
	if (ret)
		log_error(XFER_SUBSYS, "shm: region of %zu bytes: memfd/mmap: %s", mr->map_len,
			  strerror(-ret));
	return ret;
}

static void shm_mr_free(struct xfer_mr *mr)
{
	munmap(mr->base, mr->map_len);
	close(mr->fd);
}

static int shm_ep_create(struct xfer_ep *ep)
{
	struct shm_ep *s = duet_calloc(1, sizeof(*s));
	uint32_t slots = 2;
	void *p;
	int ret;

	if (!s)
		return -ENOMEM;
	while (slots < 2 * ep->dev->depth && slots < RING_MAX_SLOTS)
		slots *= 2;
	s->slots = slots;
	s->ring_bytes = sizeof(struct shm_ring_hdr) + (size_t)slots * sizeof(struct shm_rec);
	ret = memfd_map("duet-xfer-ring", s->ring_bytes, false, &s->ring_fd, &p);
	if (ret) {
		log_error(XFER_SUBSYS, "shm: ring of %zu bytes: memfd/mmap: %s", s->ring_bytes,
			  strerror(-ret));
		duet_free(s);
		return ret;
	}
	s->ring = p;
	s->pefd = -1;
	ep->priv = s;
	return 0;
}

static void shm_ep_destroy(struct xfer_ep *ep)
{
	struct shm_ep *s = ep->priv;

	for (unsigned i = 0; i < XFER_MAX_REGIONS; i++)
		if (s->peer_mr[i].base)
			munmap(s->peer_mr[i].base, s->peer_mr[i].map_len);
	if (s->pring)
		munmap(s->pring, s->pring_bytes);
	if (s->pefd >= 0)
		close(s->pefd);
	munmap(s->ring, s->ring_bytes);
	close(s->ring_fd);
	duet_free(s);
}

static int shm_local_desc(struct xfer_ep *ep, struct xfer_peer *p, struct xfer_desc *d)
{
	struct shm_ep *s = ep->priv;

	for (uint32_t i = 0; i < p->n_regions; i++) {
		struct xfer_mr *mr = ep->dev->mrs[p->region[i].id];
		p->region[i].fd = (int32_t)d->nfds;
		p->region[i].fdnum = mr->fd;
		d->fds[d->nfds++] = mr->fd;
	}
	p->ring_fd = (int32_t)d->nfds;
	p->ring_fdnum = s->ring_fd;
	d->fds[d->nfds++] = s->ring_fd;
	p->ev_fd = (int32_t)d->nfds;
	p->ev_fdnum = ep->efd;
	d->fds[d->nfds++] = ep->efd;
	p->ring_slots = s->slots;
	return 0;
}

/* Our own copy of the peer's fd (ferried, or fetched with pidfd_getfd). */
static int get_fd(const struct xfer_ep *ep, const struct xfer_desc *d, int32_t idx, int32_t fdnum,
		  const char *what)
{
	int fd, pidfd;

	if (d->nfds) {
		if (idx < 0 || (uint32_t)idx >= d->nfds) {
			log_error(XFER_SUBSYS,
				  "shm: peer descriptor: %s fd index %" PRId32 " with %u fds", what,
				  idx, d->nfds);
			return -EPROTO;
		}
		fd = fcntl(d->fds[idx], F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			log_error(XFER_SUBSYS, "shm: dup of the peer's %s fd: %s", what,
				  strerror(errno));
			return -errno;
		}
		return fd;
	}
	pidfd = (int)syscall(SYS_pidfd_open, (pid_t)ep->peer.pid, 0);
	if (pidfd < 0) {
		log_error(XFER_SUBSYS,
			  "shm: descriptor came without fds and pidfd_open(%" PRIu32
			  ") failed: %s (ferry the fds with xfer_desc_send)",
			  ep->peer.pid, strerror(errno));
		return -errno;
	}
	fd = (int)syscall(SYS_pidfd_getfd, pidfd, fdnum, 0);
	if (fd < 0) {
		int err = errno;
		log_error(XFER_SUBSYS,
			  "shm: descriptor came without fds and pidfd_getfd(pid %" PRIu32
			  ", fd %" PRId32
			  ") for the %s failed: %s (ferry the fds with xfer_desc_send)",
			  ep->peer.pid, fdnum, what, strerror(err));
		close(pidfd);
		return -err;
	}
	close(pidfd);
	return fd;
}

/* Maps a peer memfd after checking it is sealed against shrinking and at least len bytes. */
static int map_peer(int fd, uint64_t len, bool exact, const char *what, void **base,
		    size_t *map_len)
{
	struct stat st;
	int seals;
	void *p;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		log_error(XFER_SUBSYS, "shm: the peer's %s fd is not a memfd", what);
		return -EPROTO;
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
		log_error(XFER_SUBSYS, "shm: the peer's %s memfd is not sealed against shrinking",
			  what);
		return -EPROTO;
	}
	if ((uint64_t)st.st_size < len || (exact && (uint64_t)st.st_size != len) ||
	    (uint64_t)st.st_size > (1ull << 47)) {
		log_error(XFER_SUBSYS,
			  "shm: the peer's %s memfd has %lld bytes, its descriptor says %" PRIu64,
			  what, (long long)st.st_size, len);
		return -EPROTO;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
		 0);
	if (p == MAP_FAILED) {
		log_error(XFER_SUBSYS, "shm: mmap of the peer's %s (%lld bytes): %s", what,
			  (long long)st.st_size, strerror(errno));
		return -errno;
	}
	*base = p;
	*map_len = (size_t)st.st_size;
	return 0;
}

static int is_eventfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return 1; /* no /proc: trust it */
	target[n] = 0;
	return strcmp(target, "anon_inode:[eventfd]") == 0;
}

static int shm_connect(struct xfer_ep *ep, const struct xfer_desc *d)
{
	struct shm_ep *s = ep->priv;
	const struct xfer_peer *p = &ep->peer;
	int fd, ret;

	if (p->ring_slots < 2 || p->ring_slots > RING_MAX_SLOTS ||
	    (p->ring_slots & (p->ring_slots - 1))) {
		log_error(XFER_SUBSYS, "shm: peer descriptor: ring of %" PRIu32 " slots",
			  p->ring_slots);
		return -EPROTO;
	}
	for (uint32_t i = 0; i < p->n_regions; i++) {
		struct shm_map *m = &s->peer_mr[p->region[i].id];
		fd = get_fd(ep, d, p->region[i].fd, p->region[i].fdnum, "region");
		if (fd < 0) {
			ret = fd;
			goto err_unmap;
		}
		ret = map_peer(fd, p->region[i].len, false, "region", &m->base, &m->map_len);
		close(fd);
		if (ret)
			goto err_unmap;
		m->len = p->region[i].len;
	}
	fd = get_fd(ep, d, p->ring_fd, p->ring_fdnum, "ring");
	if (fd < 0) {
		ret = fd;
		goto err_unmap;
	}
	s->pslots = p->ring_slots;
	ret = map_peer(fd,
		       sizeof(struct shm_ring_hdr) + (uint64_t)s->pslots * sizeof(struct shm_rec),
		       true, "ring", (void **)&s->pring, &s->pring_bytes);
	close(fd);
	if (ret)
		goto err_unmap;
	s->ptail = atomic_load_explicit(&s->pring->tail, memory_order_acquire);
	fd = get_fd(ep, d, p->ev_fd, p->ev_fdnum, "eventfd");
	if (fd < 0) {
		ret = fd;
		goto err_unmap;
	}
	if (!is_eventfd(fd)) {
		log_error(XFER_SUBSYS, "shm: the peer's eventfd is not an eventfd");
		close(fd);
		ret = -EPROTO;
		goto err_unmap;
	}
	s->pefd = fd;
	return 0;

err_unmap:
	if (s->pring)
		munmap(s->pring, s->pring_bytes);
	s->pring = NULL;
	for (unsigned i = 0; i < XFER_MAX_REGIONS; i++) {
		if (s->peer_mr[i].base)
			munmap(s->peer_mr[i].base, s->peer_mr[i].map_len);
		s->peer_mr[i].base = NULL;
	}
	return ret;
}

/* A free slot in the peer's ring, or NULL (full, or the peer's head is a lie). */
static struct shm_rec *ring_reserve(struct xfer_ep *ep)
{
	struct shm_ep *s = ep->priv;
	uint64_t head = atomic_load_explicit(&s->pring->head, memory_order_acquire);

	if (head > s->ptail || s->ptail - head > s->pslots) {
		log_error(XFER_SUBSYS,
			  "shm: the peer's ring head %" PRIu64
			  " is inconsistent with tail %" PRIu64,
			  head, s->ptail);
		xfer_ep_fail(ep, -EPROTO);
		return NULL;
	}
	if (s->ptail - head == s->pslots)
		return NULL;
	return rec_at(s->pring, s->pslots, s->ptail);
}

static void ring_commit(struct xfer_ep *ep)
{
	struct shm_ep *s = ep->priv;
	uint64_t one = 1;

	s->ptail++;
	atomic_store_explicit(&s->pring->tail, s->ptail, memory_order_release);
	if (write(s->pefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn(XFER_SUBSYS, "shm: signalling the peer: %s", strerror(errno));
}

static int shm_post_write(struct xfer_ep *ep, const struct xfer_write *wr, uint64_t total)
{
	struct shm_ep *s = ep->priv;
	struct xfer_wc wc = { .wr_id = wr->wr_id, .op = XFER_WC_WRITE };
	struct shm_rec *r = NULL;
	uint8_t *dst;
	int ret;

	/* Room for the completion first: once copied, the write cannot be taken back. */
	if (xfer_cq_room(ep) == 0)
		return -EAGAIN;
	ret = xfer_check_peer(ep, wr->remote_region, wr->remote_offset, total, NULL);
	if (ret && !ep->test_forge) {
		log_warn(XFER_SUBSYS,
			 "shm: write outside the peer's region (region %" PRIu32 " offset %" PRIu64
			 " len %" PRIu64 ") refused before copying",
			 wr->remote_region, wr->remote_offset, total);
		wc.status = XFER_WC_REMOTE_ACCESS;
		return xfer_cq_push(ep, &wc, NULL, false);
	}
	if (wr->with_imm || ret) {
		r = ring_reserve(ep);
		if (!r)
			return ep->error ? ep->error : -EAGAIN;
	}
	if (ret == 0) {
		dst = (uint8_t *)s->peer_mr[wr->remote_region].base + wr->remote_offset;
		for (unsigned i = 0; i < wr->nsg; i++) {
			memcpy(dst, (const uint8_t *)wr->sg[i].mr->base + wr->sg[i].offset,
			       wr->sg[i].len);
			dst += wr->sg[i].len;
		}
	}
	if (r) {
		r->type = SHM_REC_IMM;
		r->status = 0;
		r->wr_id = wr->wr_id;
		r->region = wr->remote_region;
		r->imm = wr->imm;
		r->offset = wr->remote_offset;
		r->len = total;
		r->msg_len = 0;
		r->op = XFER_WC_WRITE;
		ring_commit(ep);
	}
	if (ret) /* forged (tests): the receiver's NACK completes it */
		return 0;
	return xfer_cq_push(ep, &wc, NULL, false);
}

static int shm_post_msg(struct xfer_ep *ep, uint64_t wr_id, const void *buf, size_t len)
{
	struct xfer_wc wc = { .wr_id = wr_id, .op = XFER_WC_MSG };
	struct shm_rec *r;

	if (xfer_cq_room(ep) == 0)
		return -EAGAIN;
	r = ring_reserve(ep);
	if (!r)
		return ep->error ? ep->error : -EAGAIN;
	r->type = SHM_REC_MSG;
	r->status = 0;
	r->wr_id = wr_id;
	r->msg_len = (uint32_t)len;
	r->op = XFER_WC_MSG;
	memcpy(r->data, buf, len);
	ring_commit(ep);
	return xfer_cq_push(ep, &wc, NULL, false);
}

static void nack(struct xfer_ep *ep, const struct shm_rec *in, enum xfer_wc_status st)
{
	struct shm_rec *r = ring_reserve(ep);

	if (!r) {
		log_warn(XFER_SUBSYS,
			 "shm: the peer's ring is full: NACK of wr_id %" PRIu64 " lost", in->wr_id);
		return;
	}
	r->type = SHM_REC_NACK;
	r->status = st;
	r->wr_id = in->wr_id;
	r->op = in->op == XFER_WC_MSG ? XFER_WC_MSG : XFER_WC_WRITE;
	r->msg_len = 0;
	ring_commit(ep);
}

static int shm_progress(struct xfer_ep *ep)
{
	struct shm_ep *s = ep->priv;
	uint64_t tail;

	if (ep->error)
		return ep->error;
	tail = atomic_load_explicit(&s->ring->tail, memory_order_acquire);
	if (tail < s->head || tail - s->head > s->slots) {
		log_error(XFER_SUBSYS,
			  "shm: the peer's ring tail %" PRIu64 " is inconsistent with head %" PRIu64
			  " (%" PRIu32 " slots): connection failed",
			  tail, s->head, s->slots);
		xfer_ep_fail(ep, -EPROTO);
		return -EPROTO;
	}
	while (s->head != tail && xfer_cq_room(ep) > 0) {
		const struct shm_rec *shared = rec_at(s->ring, s->slots, s->head);
		struct shm_rec r; /* header only: the peer may change the shared copy */
		struct xfer_wc wc = { 0 };
		struct xfer_mr *mr;

		memcpy(&r, shared, offsetof(struct shm_rec, data));
		switch (r.type) {
		case SHM_REC_IMM:
			if (xfer_check_rx(ep, r.region, r.offset, r.len, &mr)) {
				nack(ep, &r, XFER_WC_REMOTE_ACCESS);
				break;
			}
			XFER_STAT_ADD(ep, rx_writes, 1);
			XFER_STAT_ADD(ep, rx_bytes, r.len);
			wc.op = XFER_WC_RECV_IMM;
			wc.imm = r.imm;
			wc.region = r.region;
			wc.offset = r.offset;
			wc.len = r.len;
			xfer_cq_push(ep, &wc, NULL, false);
			break;
		case SHM_REC_MSG:
			if (r.msg_len == 0 || r.msg_len > XFER_MSG_MAX) {
				XFER_STAT_ADD(ep, rx_rejected, 1);
				log_warn(XFER_SUBSYS,
					 "shm: rejected message record of %" PRIu32 " bytes",
					 r.msg_len);
				nack(ep, &r, XFER_WC_REMOTE_OP);
				break;
			}
			XFER_STAT_ADD(ep, rx_msgs, 1);
			wc.op = XFER_WC_RECV_MSG;
			wc.len = r.msg_len;
			xfer_cq_push(ep, &wc, shared->data, false);
			break;
		case SHM_REC_NACK:
			wc.op = r.op == XFER_WC_MSG ? XFER_WC_MSG : XFER_WC_WRITE;
			wc.wr_id = r.wr_id;
			wc.status = r.status == XFER_WC_REMOTE_ACCESS ? XFER_WC_REMOTE_ACCESS
								      : XFER_WC_REMOTE_OP;
			xfer_cq_push(ep, &wc, NULL, false);
			break;
		default:
			XFER_STAT_ADD(ep, rx_rejected, 1);
			log_warn(XFER_SUBSYS, "shm: rejected ring record of unknown type %" PRIu32,
				 r.type);
			break;
		}
		s->head++;
		atomic_store_explicit(&s->ring->head, s->head, memory_order_release);
	}
	return 0;
}

const struct xfer_ops xfer_shm_ops = {
	.name = "shm",
	.id = XFER_DRV_SHM,
	.caps = {
		.max_write = 1ull << 40,
		.max_msg = XFER_MSG_MAX,
		.max_sge = XFER_MAX_SGE,
		.imm = true,
		.msg = true,
		.fd_passing = true,
		.remote_reject = true,
	},
	.mr_alloc = shm_mr_alloc,
	.mr_free = shm_mr_free,
	.ep_create = shm_ep_create,
	.ep_destroy = shm_ep_destroy,
	.local_desc = shm_local_desc,
	.connect = shm_connect,
	.post_write = shm_post_write,
	.post_msg = shm_post_msg,
	.progress = shm_progress,
};
