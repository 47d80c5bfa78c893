// SPDX-License-Identifier: MIT
/*
 * Transfer interface: the driver table, the thin wrappers every call goes
 * through (argument checks live here, once), the completion queue, the
 * descriptor codec and the receiver-side range check.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "drivers/net/xfer-impl.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

/* The one table of drivers, looked up by name. */
static const struct xfer_ops *const drivers[] = {
	&xfer_loopback_ops,
	&xfer_shm_ops,
	&xfer_tcp_ops,
};

#define N_DRIVERS (sizeof(drivers) / sizeof(drivers[0]))

static const struct xfer_ops *find_driver(const char *name)
{
	for (size_t i = 0; name && i < N_DRIVERS; i++)
		if (strcmp(drivers[i]->name, name) == 0)
			return drivers[i];
	return NULL;
}

const char *xfer_driver_name(unsigned i)
{
	return i < N_DRIVERS ? drivers[i]->name : NULL;
}

int xfer_query_caps(const char *driver, struct xfer_caps *caps)
{
	const struct xfer_ops *ops = find_driver(driver);

	if (!ops)
		return -ENOENT;
	*caps = ops->caps;
	return 0;
}

const char *xfer_wc_status_str(enum xfer_wc_status st)
{
	switch (st) {
	case XFER_WC_OK:
		return "ok";
	case XFER_WC_REMOTE_ACCESS:
		return "remote range rejected";
	case XFER_WC_REMOTE_OP:
		return "operation refused by the peer";
	case XFER_WC_LOCAL:
		return "local failure";
	case XFER_WC_FLUSHED:
		return "flushed (connection lost)";
	}
	return "unknown";
}

uint64_t xfer_random64(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
		/* Tokens only need to be unique, not secret: fall back to time and pid. */
		v = xfer_now_ns() ^ ((uint64_t)getpid() << 32);
	}
	return v ? v : 1;
}

uint64_t xfer_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* --- devices ------------------------------------------------------------ */

int xfer_open(const char *driver, const struct xfer_opts *opts, struct xfer_dev **out)
{
	static const struct xfer_opts defaults;
	const struct xfer_ops *ops = find_driver(driver);
	struct xfer_dev *dev;
	int ret;

	*out = NULL;
	if (!ops) {
		log_error(XFER_SUBSYS, "unknown transfer driver '%s' (loopback, shm, tcp)",
			  driver ? driver : "(null)");
		return -ENOENT;
	}
	if (!opts)
		opts = &defaults;
	if (opts->depth > XFER_MAX_DEPTH) {
		log_error(XFER_SUBSYS, "%s: depth %u out of range (1..%u)", ops->name, opts->depth,
			  XFER_MAX_DEPTH);
		return -EINVAL;
	}
	if (opts->encrypt && !ops->caps.encrypt) {
		log_error(
			XFER_SUBSYS,
			"%s: transport.encrypt = true is not supported by this driver (no payload encryption implemented)",
			ops->name);
		return -EOPNOTSUPP;
	}
	dev = duet_calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->ops = ops;
	dev->depth = opts->depth ? opts->depth : XFER_DEFAULT_DEPTH;
	dev->hugepages = opts->hugepages;
	dev->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 10000;
	snprintf(dev->listen_host, sizeof(dev->listen_host), "%s",
		 opts->listen_host ? opts->listen_host : "127.0.0.1");
	if (ops->open) {
		ret = ops->open(dev, opts);
		if (ret)
			goto err_free;
	}
	*out = dev;
	return 0;

err_free:
	duet_free(dev);
	return ret;
}

void xfer_close(struct xfer_dev *dev)
{
	if (!dev)
		return;
	DUET_ASSERT(dev->n_eps == 0);
	for (unsigned i = 0; i < XFER_MAX_REGIONS; i++)
		DUET_ASSERT(!dev->mrs[i]);
	if (dev->ops->close)
		dev->ops->close(dev);
	memset(dev->psk, 0, sizeof(dev->psk));
	duet_free(dev);
}

const char *xfer_dev_driver(const struct xfer_dev *dev)
{
	return dev->ops->name;
}

/* --- memory regions ----------------------------------------------------- */

static int mr_slot(struct xfer_dev *dev)
{
	for (unsigned i = 0; i < XFER_MAX_REGIONS; i++)
		if (!dev->mrs[i])
			return (int)i;
	log_error(XFER_SUBSYS, "%s: more than %d memory regions", dev->ops->name, XFER_MAX_REGIONS);
	return -ENOSPC;
}

/* A region record in a free slot of dev (not installed yet). */
static int mr_new(struct xfer_dev *dev, size_t len, struct xfer_mr **out)
{
	struct xfer_mr *mr;
	int slot = mr_slot(dev);

	if (slot < 0)
		return slot;
	mr = duet_calloc(1, sizeof(*mr));
	if (!mr)
		return -ENOMEM;
	mr->dev = dev;
	mr->id = (uint32_t)slot;
	mr->len = len;
	mr->fd = -1;
	*out = mr;
	return 0;
}

int xfer_mr_alloc(struct xfer_dev *dev, size_t len, struct xfer_mr **out)
{
	struct xfer_mr *mr;
	int ret;

	*out = NULL;
	if (len == 0 || len > (1ull << 46)) {
		log_error(XFER_SUBSYS, "%s: region of %zu bytes out of range", dev->ops->name, len);
		return -EINVAL;
	}
	ret = mr_new(dev, len, &mr);
	if (ret)
		return ret;
	mr->allocated = true;
	mr->remote = true;
	ret = dev->ops->mr_alloc(dev, mr);
	if (ret) {
		duet_free(mr);
		return ret;
	}
	dev->mrs[mr->id] = mr;
	*out = mr;
	return 0;
}

int xfer_mr_reg(struct xfer_dev *dev, void *addr, size_t len, struct xfer_mr **out)
{
	struct xfer_mr *mr;
	int ret;

	*out = NULL;
	if (!addr || len == 0) {
		log_error(XFER_SUBSYS, "%s: cannot register an empty region", dev->ops->name);
		return -EINVAL;
	}
	ret = mr_new(dev, len, &mr);
	if (ret)
		return ret;
	mr->base = addr;
	/* shm can only expose memory it mapped itself. */
	mr->remote = dev->ops->id != XFER_DRV_SHM;
	dev->mrs[mr->id] = mr;
	*out = mr;
	return 0;
}

int xfer_mr_reg_fd(struct xfer_dev *dev, void *addr, size_t len, int fd, struct xfer_mr **out)
{
	const int need = F_SEAL_SHRINK | F_SEAL_GROW;
	struct xfer_mr *mr;
	struct stat st;
	int seals, ret;

	*out = NULL;
	if (!addr || len == 0 || fd < 0) {
		log_error(XFER_SUBSYS, "%s: cannot register an empty region", dev->ops->name);
		return -EINVAL;
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & need) != need || fstat(fd, &st) != 0 ||
	    (uint64_t)st.st_size < len) {
		log_error(XFER_SUBSYS,
			  "%s: region memfd %d must be sealed against shrinking and growing and "
			  "hold %zu bytes (seals %#x, size %lld)",
			  dev->ops->name, fd, len, seals < 0 ? 0 : seals, (long long)st.st_size);
		return -EINVAL;
	}
	ret = mr_new(dev, len, &mr);
	if (ret)
		return ret;
	mr->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (mr->fd < 0) {
		ret = -errno;
		log_error(XFER_SUBSYS, "%s: dup of region memfd %d: %s", dev->ops->name, fd,
			  strerror(errno));
		duet_free(mr);
		return ret;
	}
	mr->base = addr;
	mr->map_len = len;
	mr->own_fd = true;
	mr->remote = true;
	dev->mrs[mr->id] = mr;
	*out = mr;
	return 0;
}

void xfer_mr_dereg(struct xfer_mr *mr)
{
	if (!mr)
		return;
	mr->dev->mrs[mr->id] = NULL;
	if (mr->own_fd)
		close(mr->fd);
	if (mr->allocated)
		mr->dev->ops->mr_free(mr);
	duet_free(mr);
}

void *xfer_mr_base(const struct xfer_mr *mr)
{
	return mr->base;
}

size_t xfer_mr_len(const struct xfer_mr *mr)
{
	return mr->len;
}

uint32_t xfer_mr_id(const struct xfer_mr *mr)
{
	return mr->id;
}

/* --- completion queue --------------------------------------------------- */

void xfer_ep_signal(struct xfer_ep *ep)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is saturated, i.e. already readable. */
	if (write(ep->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn(XFER_SUBSYS, "eventfd write: %s", strerror(errno));
}

int xfer_cq_push(struct xfer_ep *ep, const struct xfer_wc *wc, const void *msg, bool wait)
{
	struct xfer_cq *cq = &ep->cq;
	unsigned slot;
	bool signal;

	pthread_mutex_lock(&cq->lock);
	while (cq->count + cq->reserved >= cq->cap) {
		if (!wait || cq->closing) {
			pthread_mutex_unlock(&cq->lock);
			return -ENOSPC;
		}
		pthread_cond_wait(&cq->room, &cq->lock);
	}
	slot = (cq->head + cq->count) % cq->cap;
	cq->wc[slot] = *wc;
	cq->wc[slot].msg = NULL;
	if (wc->op == XFER_WC_RECV_MSG && msg && wc->len <= XFER_MSG_MAX) {
		memcpy(cq->msg + (size_t)slot * XFER_MSG_MAX, msg, wc->len);
		cq->wc[slot].msg = cq->msg + (size_t)slot * XFER_MSG_MAX;
	}
	if (wc->status != XFER_WC_OK && (wc->op == XFER_WC_WRITE || wc->op == XFER_WC_MSG))
		XFER_STAT_ADD(ep, tx_failed, 1);
	signal = cq->armed;
	cq->armed = false;
	cq->count++;
	pthread_mutex_unlock(&cq->lock);
	if (signal)
		xfer_ep_signal(ep);
	return 0;
}

unsigned xfer_cq_room(struct xfer_ep *ep)
{
	unsigned room;

	pthread_mutex_lock(&ep->cq.lock);
	room = ep->cq.cap - ep->cq.count - ep->cq.reserved;
	pthread_mutex_unlock(&ep->cq.lock);
	return room;
}

void xfer_ep_fail(struct xfer_ep *ep, int err)
{
	int none = 0;

	atomic_compare_exchange_strong(&ep->error, &none, err);
	xfer_ep_signal(ep);
}

/* arm: when nothing is there, the next push signals the eventfd. */
static unsigned cq_pop(struct xfer_ep *ep, struct xfer_wc *wc, unsigned max, bool arm)
{
	struct xfer_cq *cq = &ep->cq;
	unsigned n = 0;

	pthread_mutex_lock(&cq->lock);
	while (n < max && cq->count) {
		wc[n] = cq->wc[cq->head];
		if (wc[n].op == XFER_WC_WRITE || wc[n].op == XFER_WC_MSG) {
			if (ep->inflight)
				ep->inflight--;
		}
		cq->head = (cq->head + 1) % cq->cap;
		cq->count--;
		cq->reserved++;
		n++;
	}
	if (n == 0 && arm)
		cq->armed = true;
	pthread_mutex_unlock(&cq->lock);
	return n;
}

static void cq_release(struct xfer_ep *ep)
{
	struct xfer_cq *cq = &ep->cq;

	pthread_mutex_lock(&cq->lock);
	if (cq->reserved) {
		cq->reserved = 0;
		pthread_cond_broadcast(&cq->room);
	}
	pthread_mutex_unlock(&cq->lock);
}

/* --- endpoints ---------------------------------------------------------- */

int xfer_ep_create(struct xfer_dev *dev, struct xfer_ep **out)
{
	struct xfer_ep *ep;
	int ret;

	*out = NULL;
	ep = duet_calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	ep->dev = dev;
	ep->ops = dev->ops;
	ep->token = xfer_random64();
	ep->cq.cap = 4 * dev->depth;
	ep->cq.wc = duet_calloc(ep->cq.cap, sizeof(*ep->cq.wc));
	ep->cq.msg = duet_malloc((size_t)ep->cq.cap * XFER_MSG_MAX);
	if (!ep->cq.wc || !ep->cq.msg) {
		ret = -ENOMEM;
		goto err_free;
	}
	ep->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ep->efd < 0) {
		ret = -errno;
		log_error(XFER_SUBSYS, "eventfd: %s", strerror(errno));
		goto err_free;
	}
	ep->cq.armed = true;
	pthread_mutex_init(&ep->cq.lock, NULL);
	pthread_cond_init(&ep->cq.room, NULL);
	if (dev->ops->ep_create) {
		ret = dev->ops->ep_create(ep);
		if (ret)
			goto err_sync;
	}
	dev->n_eps++;
	*out = ep;
	return 0;

err_sync:
	pthread_cond_destroy(&ep->cq.room);
	pthread_mutex_destroy(&ep->cq.lock);
	close(ep->efd);
err_free:
	duet_free(ep->cq.msg);
	duet_free(ep->cq.wc);
	duet_free(ep);
	return ret;
}

void xfer_ep_destroy(struct xfer_ep *ep)
{
	if (!ep)
		return;
	pthread_mutex_lock(&ep->cq.lock);
	ep->cq.closing = true;
	pthread_cond_broadcast(&ep->cq.room);
	pthread_mutex_unlock(&ep->cq.lock);
	if (ep->ops->ep_destroy)
		ep->ops->ep_destroy(ep);
	ep->dev->n_eps--;
	pthread_cond_destroy(&ep->cq.room);
	pthread_mutex_destroy(&ep->cq.lock);
	close(ep->efd);
	duet_free(ep->cq.msg);
	duet_free(ep->cq.wc);
	duet_free(ep);
}

int xfer_local_desc(struct xfer_ep *ep, struct xfer_desc *d)
{
	struct xfer_peer p = { 0 };
	int ret;

	memset(d, 0, sizeof(*d));
	p.driver = (uint16_t)ep->ops->id;
	p.token = ep->token;
	p.pid = (uint32_t)getpid();
	p.ring_fd = p.ev_fd = p.ring_fdnum = p.ev_fdnum = -1;
	for (unsigned i = 0; i < XFER_MAX_REGIONS; i++) {
		struct xfer_mr *mr = ep->dev->mrs[i];
		if (!mr || !mr->remote)
			continue;
		p.region[p.n_regions].id = mr->id;
		p.region[p.n_regions].len = mr->len;
		p.region[p.n_regions].fd = -1;
		p.region[p.n_regions].fdnum = -1;
		p.n_regions++;
	}
	if (ep->ops->local_desc) {
		ret = ep->ops->local_desc(ep, &p, d);
		if (ret)
			return ret;
	}
	return xfer_desc_encode(&p, d);
}

int xfer_connect(struct xfer_ep *ep, const struct xfer_desc *peer)
{
	char why[160];
	int ret;

	if (ep->connected) {
		log_error(XFER_SUBSYS, "%s: endpoint already connected", ep->ops->name);
		return -EISCONN;
	}
	if (peer->nfds > XFER_DESC_MAX_FDS ||
	    xfer_desc_decode(peer->bytes, peer->len, peer->nfds, &ep->peer, why, sizeof(why))) {
		if (peer->nfds > XFER_DESC_MAX_FDS)
			snprintf(why, sizeof(why), "%u fds (at most %d)", peer->nfds,
				 XFER_DESC_MAX_FDS);
		log_error(XFER_SUBSYS, "%s: bad peer descriptor: %s", ep->ops->name, why);
		return -EPROTO;
	}
	if (ep->peer.driver != ep->ops->id) {
		log_error(XFER_SUBSYS, "%s: peer descriptor is for driver %u, not %s",
			  ep->ops->name, ep->peer.driver, ep->ops->name);
		return -EPROTO;
	}
	if (ep->peer.token == ep->token) {
		log_error(XFER_SUBSYS, "%s: peer descriptor is this endpoint's own", ep->ops->name);
		return -EPROTO;
	}
	ret = ep->ops->connect ? ep->ops->connect(ep, peer) : -EOPNOTSUPP;
	if (ret == 0)
		ep->connected = true;
	return ret;
}

/* --- posting -------------------------------------------------------------- */

static int check_post(struct xfer_ep *ep)
{
	if (!ep->connected)
		return -ENOTCONN;
	if (ep->error)
		return ep->error;
	if (ep->inflight >= ep->dev->depth)
		return -EAGAIN;
	return 0;
}

int xfer_post_write(struct xfer_ep *ep, const struct xfer_write *wr)
{
	uint64_t total = 0;
	int ret;

	ret = check_post(ep);
	if (ret)
		return ret;
	if (!ep->ops->post_write)
		return -EOPNOTSUPP;
	if (wr->with_imm && !ep->ops->caps.imm)
		return -EOPNOTSUPP;
	if (wr->nsg == 0 || wr->nsg > XFER_MAX_SGE || !wr->sg) {
		log_error(XFER_SUBSYS, "%s: write with %u scatter entries (1..%d)", ep->ops->name,
			  wr->nsg, XFER_MAX_SGE);
		return -EINVAL;
	}
	for (unsigned i = 0; i < wr->nsg; i++) {
		const struct xfer_sge *s = &wr->sg[i];
		if (!s->mr || s->mr->dev != ep->dev || s->len == 0 || s->offset > s->mr->len ||
		    s->len > s->mr->len - s->offset) {
			log_error(
				XFER_SUBSYS,
				"%s: write scatter entry %u outside its local region (offset %" PRIu64
				" len %" PRIu64 ")",
				ep->ops->name, i, s->offset, s->len);
			return -ERANGE;
		}
		total += s->len; /* each <= 2^46: no overflow for 16 entries */
	}
	if (total > ep->ops->caps.max_write) {
		log_error(XFER_SUBSYS, "%s: write of %" PRIu64 " bytes exceeds max_write %" PRIu64,
			  ep->ops->name, total, ep->ops->caps.max_write);
		return -EMSGSIZE;
	}
	ret = ep->ops->post_write(ep, wr, total);
	if (ret == 0) {
		ep->inflight++;
		XFER_STAT_ADD(ep, writes, 1);
		XFER_STAT_ADD(ep, write_bytes, total);
	}
	return ret;
}

int xfer_post_msg(struct xfer_ep *ep, uint64_t wr_id, const void *buf, size_t len)
{
	int ret;

	ret = check_post(ep);
	if (ret)
		return ret;
	if (!ep->ops->post_msg)
		return -EOPNOTSUPP;
	if (len == 0 || len > ep->ops->caps.max_msg || !buf) {
		log_error(XFER_SUBSYS, "%s: message of %zu bytes (1..%u)", ep->ops->name, len,
			  ep->ops->caps.max_msg);
		return -EMSGSIZE;
	}
	ret = ep->ops->post_msg(ep, wr_id, buf, len);
	if (ret == 0) {
		ep->inflight++;
		XFER_STAT_ADD(ep, msgs, 1);
	}
	return ret;
}

int xfer_poll(struct xfer_ep *ep, struct xfer_wc *wc, unsigned max)
{
	uint64_t v;
	unsigned n;
	int err;

	cq_release(ep);
	if (ep->ops->progress && ep->connected)
		ep->ops->progress(ep);
	n = cq_pop(ep, wc, max, false);
	if (n == 0) {
		/* About to report nothing: clear the eventfd, then look once more. */
		if (read(ep->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			log_warn(XFER_SUBSYS, "eventfd read: %s", strerror(errno));
		if (ep->ops->progress && ep->connected)
			ep->ops->progress(ep);
		n = cq_pop(ep, wc, max, true);
	}
	if (n)
		return (int)n;
	err = ep->error;
	if (err)
		xfer_ep_signal(ep); /* stays readable: the event loop sees the failure */
	return err;
}

int xfer_event_fd(struct xfer_ep *ep)
{
	return ep->efd;
}

void xfer_ep_stats(const struct xfer_ep *ep, struct xfer_stats *st)
{
	const struct xfer_stats *s = &ep->stats;

	st->writes = __atomic_load_n(&s->writes, __ATOMIC_RELAXED);
	st->write_bytes = __atomic_load_n(&s->write_bytes, __ATOMIC_RELAXED);
	st->msgs = __atomic_load_n(&s->msgs, __ATOMIC_RELAXED);
	st->rx_writes = __atomic_load_n(&s->rx_writes, __ATOMIC_RELAXED);
	st->rx_bytes = __atomic_load_n(&s->rx_bytes, __ATOMIC_RELAXED);
	st->rx_msgs = __atomic_load_n(&s->rx_msgs, __ATOMIC_RELAXED);
	st->rx_rejected = __atomic_load_n(&s->rx_rejected, __ATOMIC_RELAXED);
	st->bad_frames = __atomic_load_n(&s->bad_frames, __ATOMIC_RELAXED);
	st->tx_failed = __atomic_load_n(&s->tx_failed, __ATOMIC_RELAXED);
}

int xfer_loopback_inject(struct xfer_ep *ep, enum xfer_fault fault, unsigned nth)
{
	return ep->ops->inject ? ep->ops->inject(ep, fault, nth) : -EOPNOTSUPP;
}

int xfer_loopback_release(struct xfer_ep *ep)
{
	return ep->ops->release ? ep->ops->release(ep) : -EOPNOTSUPP;
}

void xfer_test_forge(struct xfer_ep *ep, bool on)
{
	ep->test_forge = on;
}

/* --- checks ---------------------------------------------------------------- */

int xfer_check_rx(struct xfer_ep *ep, uint32_t region, uint64_t off, uint64_t len,
		  struct xfer_mr **out)
{
	struct xfer_mr *mr = region < XFER_MAX_REGIONS ? ep->dev->mrs[region] : NULL;
	const char *why = NULL;

	if (!mr || !mr->remote)
		why = "no such region";
	else if (len == 0)
		why = "zero length";
	else if (len > ep->ops->caps.max_write)
		why = "length above max_write";
	else if (off > mr->len || len > mr->len - off)
		why = "range past the end of the region";
	if (why) {
		XFER_STAT_ADD(ep, rx_rejected, 1);
		log_warn(XFER_SUBSYS,
			 "%s: rejected remote write: %s (region %" PRIu32 " offset %" PRIu64
			 " len %" PRIu64 ")",
			 ep->ops->name, why, region, off, len);
		return len == 0 || !mr ? -EINVAL : -ERANGE;
	}
	*out = mr;
	return 0;
}

int xfer_check_peer(const struct xfer_ep *ep, uint32_t region, uint64_t off, uint64_t len,
		    uint64_t *region_len)
{
	for (uint32_t i = 0; i < ep->peer.n_regions; i++) {
		uint64_t rl = ep->peer.region[i].len;
		if (ep->peer.region[i].id != region)
			continue;
		if (len == 0 || off > rl || len > rl - off)
			return -ERANGE;
		if (region_len)
			*region_len = rl;
		return 0;
	}
	return -ERANGE;
}

/* --- descriptors ------------------------------------------------------------ */

int xfer_desc_encode(const struct xfer_peer *p, struct xfer_desc *d)
{
	struct xfer_wire_desc w = { 0 };
	size_t len = sizeof(w) + p->n_regions * sizeof(struct xfer_wire_region);

	if (p->n_regions > XFER_MAX_REGIONS || len > sizeof(d->bytes))
		return -EOVERFLOW;
	w.magic = htole32(XFER_DESC_MAGIC);
	w.version = htole16(XFER_DESC_VERSION);
	w.driver = htole16(p->driver);
	w.token = htole64(p->token);
	w.pid = htole32(p->pid);
	w.n_regions = htole32(p->n_regions);
	memcpy(w.addr, p->addr, sizeof(w.addr));
	w.port = htole16(p->port);
	w.family = htole16(p->family);
	w.ring_fd = (int32_t)htole32((uint32_t)p->ring_fd);
	w.ev_fd = (int32_t)htole32((uint32_t)p->ev_fd);
	w.ring_slots = htole32(p->ring_slots);
	w.ring_fdnum = (int32_t)htole32((uint32_t)p->ring_fdnum);
	w.ev_fdnum = (int32_t)htole32((uint32_t)p->ev_fdnum);
	memcpy(d->bytes, &w, sizeof(w));
	for (uint32_t i = 0; i < p->n_regions; i++) {
		struct xfer_wire_region r = {
			.id = htole32(p->region[i].id),
			.fd = (int32_t)htole32((uint32_t)p->region[i].fd),
			.len = htole64(p->region[i].len),
			.fdnum = (int32_t)htole32((uint32_t)p->region[i].fdnum),
		};
		memcpy(d->bytes + sizeof(w) + i * sizeof(r), &r, sizeof(r));
	}
	d->len = (uint32_t)len;
	return 0;
}

/* An fd index from the wire: -1 or < nfds (when fds came), or any when they did not. */
static bool fd_index_ok(int32_t idx, unsigned nfds)
{
	return idx == -1 ||
	       (idx >= 0 && idx < XFER_DESC_MAX_FDS && (nfds == 0 || (unsigned)idx < nfds));
}

int xfer_desc_decode(const void *bytes, size_t len, unsigned nfds, struct xfer_peer *p, char *why,
		     size_t why_len)
{
	struct xfer_wire_desc w;

#define BAD(...)                                     \
	do {                                         \
		snprintf(why, why_len, __VA_ARGS__); \
		return -EPROTO;                      \
	} while (0)

	memset(p, 0, sizeof(*p));
	if (len < sizeof(w))
		BAD("%zu bytes, shorter than the %zu-byte header", len, sizeof(w));
	memcpy(&w, bytes, sizeof(w));
	if (le32toh(w.magic) != XFER_DESC_MAGIC)
		BAD("bad magic 0x%08" PRIx32, le32toh(w.magic));
	if (le16toh(w.version) != XFER_DESC_VERSION)
		BAD("version %u (want %d)", le16toh(w.version), XFER_DESC_VERSION);
	p->driver = le16toh(w.driver);
	p->token = le64toh(w.token);
	p->pid = le32toh(w.pid);
	p->n_regions = le32toh(w.n_regions);
	if (p->n_regions > XFER_MAX_REGIONS)
		BAD("%" PRIu32 " regions (at most %d)", p->n_regions, XFER_MAX_REGIONS);
	if (len != sizeof(w) + p->n_regions * sizeof(struct xfer_wire_region))
		BAD("%zu bytes for %" PRIu32 " regions (want %zu)", len, p->n_regions,
		    sizeof(w) + p->n_regions * sizeof(struct xfer_wire_region));
	if (p->token == 0)
		BAD("zero endpoint token");
	memcpy(p->addr, w.addr, sizeof(p->addr));
	p->port = le16toh(w.port);
	p->family = le16toh(w.family);
	if (p->family != 0 && p->family != 4 && p->family != 6)
		BAD("address family %u", p->family);
	p->ring_fd = (int32_t)le32toh((uint32_t)w.ring_fd);
	p->ev_fd = (int32_t)le32toh((uint32_t)w.ev_fd);
	p->ring_slots = le32toh(w.ring_slots);
	p->ring_fdnum = (int32_t)le32toh((uint32_t)w.ring_fdnum);
	p->ev_fdnum = (int32_t)le32toh((uint32_t)w.ev_fdnum);
	if (!fd_index_ok(p->ring_fd, nfds) || !fd_index_ok(p->ev_fd, nfds))
		BAD("ring/eventfd index %" PRId32 "/%" PRId32 " with %u fds", p->ring_fd, p->ev_fd,
		    nfds);
	for (uint32_t i = 0; i < p->n_regions; i++) {
		struct xfer_wire_region r;
		memcpy(&r, (const uint8_t *)bytes + sizeof(w) + i * sizeof(r), sizeof(r));
		p->region[i].id = le32toh(r.id);
		p->region[i].fd = (int32_t)le32toh((uint32_t)r.fd);
		p->region[i].fdnum = (int32_t)le32toh((uint32_t)r.fdnum);
		p->region[i].len = le64toh(r.len);
		if (p->region[i].id >= XFER_MAX_REGIONS)
			BAD("region %" PRIu32 ": id %" PRIu32 " out of range", i, p->region[i].id);
		for (uint32_t j = 0; j < i; j++)
			if (p->region[j].id == p->region[i].id)
				BAD("region id %" PRIu32 " listed twice", p->region[i].id);
		if (p->region[i].len == 0 || p->region[i].len > (1ull << 46))
			BAD("region %" PRIu32 ": length %" PRIu64 " out of range", p->region[i].id,
			    p->region[i].len);
		if (!fd_index_ok(p->region[i].fd, nfds))
			BAD("region %" PRIu32 ": fd index %" PRId32 " with %u fds", p->region[i].id,
			    p->region[i].fd, nfds);
		if (le32toh(r.rsvd) != 0)
			BAD("region %" PRIu32 ": reserved field set", p->region[i].id);
	}
#undef BAD
	return 0;
}

/* --- ferrying descriptors ----------------------------------------------------- */

int xfer_desc_send(int sock, const struct xfer_desc *d)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * XFER_DESC_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)d->bytes, .iov_len = d->len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	if (d->nfds > XFER_DESC_MAX_FDS || d->len > XFER_DESC_MAX || d->len == 0)
		return -EINVAL;
	if (d->nfds) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * d->nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * d->nfds);
		memcpy(CMSG_DATA(c), d->fds, sizeof(int) * d->nfds);
	}
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)d->len) {
		int err = errno ? errno : EIO;
		log_error(XFER_SUBSYS, "sendmsg (descriptor): %s", strerror(err));
		return -err;
	}
	return 0;
}

int xfer_desc_recv(int sock, struct xfer_desc *d)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * XFER_DESC_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = d->bytes, .iov_len = sizeof(d->bytes) };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	ssize_t n;

	memset(d, 0, sizeof(*d));
	n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0) {
		log_error(XFER_SUBSYS, "recvmsg (descriptor): %s", strerror(errno));
		return -errno;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (d->nfds < XFER_DESC_MAX_FDS)
				d->fds[d->nfds++] = fd;
			else
				close(fd);
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		log_error(XFER_SUBSYS, "descriptor message truncated");
		xfer_desc_close_fds(d);
		return -EMSGSIZE;
	}
	d->len = (uint32_t)n;
	return 0;
}

void xfer_desc_close_fds(struct xfer_desc *d)
{
	for (unsigned i = 0; i < d->nfds && i < XFER_DESC_MAX_FDS; i++)
		if (d->fds[i] >= 0)
			close(d->fds[i]);
	d->nfds = 0;
}
