// SPDX-License-Identifier: MIT
/*
 * tcp: any two hosts.  One TCP connection per endpoint pair; the endpoint
 * with the smaller token dials the other's listening socket (each endpoint
 * listens on its own ephemeral port on transport's listen host; the port is
 * in its descriptor).
 *
 * Authentication (pre-shared key K, transport.psk_file):
 *   dialer   -> HELLO     {from, to, nonce_d}                     64 bytes
 *   acceptor -> CHALLENGE {nonce_a, HMAC(K, "A" || HELLO || nonce_a)}  96 bytes
 *   dialer   -> AUTH      {HMAC(K, "D" || HELLO || nonce_a)}            64 bytes
 * then each direction's frames carry HMAC(K_dir, frame) with
 * K_dir = HMAC(K, "K-D2A" or "K-A2D" || HELLO || nonce_a) and a sequence
 * number the receiver requires to be the next one.  No encryption:
 * transport.encrypt = true fails at open with -EOPNOTSUPP.
 *
 * Receiving: a thread per endpoint reads frames, verifies the tag before
 * touching the region (a WRITE chunk is staged in a 1 MiB buffer first, so
 * a tampered frame writes nothing), checks the write's whole remote range
 * against the registered regions, copies, and answers each write/message
 * with an ACK or NACK frame; the sender's receive thread turns those into
 * send completions (TCP keeps them in order).  Any bad frame closes the
 * connection with a named error; posted operations then complete FLUSHED.
 * Data frames are sent by the posting thread (blocking) and acks by a
 * second per-endpoint thread, under one send lock; the receive thread
 * never blocks on a send, so each side always drains its socket.  It does
 * wait while the completion queue is full: poll regularly.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "drivers/net/sha256.h"
#include "drivers/net/xfer-impl.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"

#define HS_MAGIC 0x31545844u /* "DXT1" */
#define HS_VERSION 1

enum hs_type { HS_HELLO = 1, HS_CHALLENGE = 2, HS_AUTH = 3 };

struct hs_hello {
	uint32_t magic;	   /*  0 */
	uint16_t version;  /*  4 */
	uint16_t type;	   /*  6 */
	uint64_t from;	   /*  8: dialer token */
	uint64_t to;	   /* 16: acceptor token */
	uint8_t nonce[32]; /* 24 */
	uint64_t rsvd;	   /* 56 */
};
static_assert(sizeof(struct hs_hello) == 64, "hello is 64 bytes");

struct hs_challenge {
	uint32_t magic;	   /*  0 */
	uint16_t version;  /*  4 */
	uint16_t type;	   /*  6 */
	uint64_t from;	   /*  8 */
	uint64_t to;	   /* 16 */
	uint8_t nonce[32]; /* 24 */
	uint8_t mac[32];   /* 56 */
	uint64_t rsvd;	   /* 88 */
};
static_assert(sizeof(struct hs_challenge) == 96, "challenge is 96 bytes");

struct hs_auth {
	uint32_t magic;	  /*  0 */
	uint16_t version; /*  4 */
	uint16_t type;	  /*  6 */
	uint64_t from;	  /*  8 */
	uint64_t to;	  /* 16 */
	uint8_t mac[32];  /* 24 */
	uint64_t rsvd;	  /* 56 */
};
static_assert(sizeof(struct hs_auth) == 64, "auth is 64 bytes");

struct pend {
	uint64_t wr_id;
	bool msg;
};

/* An acknowledgement waiting for the ack thread. */
struct ack {
	uint64_t wr_id;
	bool msg;
	enum xfer_wc_status status;
};

/* Unsent acks are bounded by the peer's operations in flight (its depth). */
#define ACKQ_CAP XFER_MAX_DEPTH

struct tcp_ep {
	int lfd;
	struct sockaddr_storage laddr;
	int stopfd; /* eventfd: destroy wakes the thread */
	pthread_t thr, ack_thr;
	bool thr_started, ack_started;

	pthread_mutex_t lock; /* sock, up, dead, pend */
	pthread_cond_t cond;
	int sock;
	bool up, dead;
	int dead_err;
	struct pend *pend; /* posted, not acknowledged; oldest first */
	unsigned pend_cap, pend_head, pend_count;
	struct ack *ackq; /* for the ack thread (lock, cond) */
	unsigned ack_head, ack_count;
	bool stopping;

	pthread_mutex_t send_lock;
	uint64_t tx_seq;
	struct hmac_sha256 tx_key;

	uint64_t rx_seq; /* receive thread only */
	struct hmac_sha256 rx_key;
	uint8_t *stage; /* XFER_TCP_CHUNK + tag */
	struct {	/* the write being received */
		bool active, failed;
		uint64_t wr_id, base, total, next;
		uint32_t region;
	} rw;
};

/* --- frame codec (shared with the fuzz target) ----------------------------------- */

int xfer_tcp_hdr_decode(const void *wire, struct xfer_tcp_hdr *h, char *why, size_t why_len)
{
	struct xfer_tcp_hdr w;

	memcpy(&w, wire, sizeof(w));
	h->magic = le32toh(w.magic);
	h->type = le16toh(w.type);
	h->flags = le16toh(w.flags);
	h->seq = le64toh(w.seq);
	h->wr_id = le64toh(w.wr_id);
	h->region = le32toh(w.region);
	h->imm = le32toh(w.imm);
	h->offset = le64toh(w.offset);
	h->len = le32toh(w.len);
	h->status = le32toh(w.status);
	h->base = le64toh(w.base);
	h->total = le64toh(w.total);
	if (h->magic != XFER_TCP_FRAME_MAGIC) {
		snprintf(why, why_len, "bad frame magic 0x%08" PRIx32, h->magic);
		return -EPROTO;
	}
	switch (h->type) {
	case XFER_TCP_WRITE:
		if (h->len == 0 || h->len > XFER_TCP_CHUNK) {
			snprintf(why, why_len, "WRITE frame of %" PRIu32 " bytes (1..%u)", h->len,
				 XFER_TCP_CHUNK);
			return -EPROTO;
		}
		if (h->flags & ~(XFER_TCP_F_LAST | XFER_TCP_F_IMM) ||
		    ((h->flags & XFER_TCP_F_IMM) && !(h->flags & XFER_TCP_F_LAST))) {
			snprintf(why, why_len, "WRITE frame with flags 0x%x", h->flags);
			return -EPROTO;
		}
		if (h->total < h->len || h->offset > h->total - h->len) {
			snprintf(why, why_len,
				 "WRITE chunk at +%" PRIu64 " of %" PRIu32
				 " bytes outside its write of %" PRIu64 " bytes",
				 h->offset, h->len, h->total);
			return -EPROTO;
		}
		break;
	case XFER_TCP_MSG:
		if (h->len == 0 || h->len > XFER_MSG_MAX || h->flags) {
			snprintf(why, why_len, "MSG frame of %" PRIu32 " bytes, flags 0x%x", h->len,
				 h->flags);
			return -EPROTO;
		}
		break;
	case XFER_TCP_ACK:
	case XFER_TCP_NACK:
		if (h->len || (h->flags & ~XFER_TCP_F_OPMSG)) {
			snprintf(why, why_len,
				 "%s frame with %" PRIu32 " payload bytes, flags 0x%x",
				 h->type == XFER_TCP_ACK ? "ACK" : "NACK", h->len, h->flags);
			return -EPROTO;
		}
		if (h->type == XFER_TCP_NACK && h->status != XFER_WC_REMOTE_ACCESS &&
		    h->status != XFER_WC_REMOTE_OP) {
			snprintf(why, why_len, "NACK frame with status %" PRIu32, h->status);
			return -EPROTO;
		}
		break;
	default:
		snprintf(why, why_len, "unknown frame type %u", h->type);
		return -EPROTO;
	}
	return 0;
}

static void hdr_encode(const struct xfer_tcp_hdr *h, struct xfer_tcp_hdr *w)
{
	w->magic = htole32(XFER_TCP_FRAME_MAGIC);
	w->type = htole16(h->type);
	w->flags = htole16(h->flags);
	w->seq = htole64(h->seq);
	w->wr_id = htole64(h->wr_id);
	w->region = htole32(h->region);
	w->imm = htole32(h->imm);
	w->offset = htole64(h->offset);
	w->len = htole32(h->len);
	w->status = htole32(h->status);
	w->base = htole64(h->base);
	w->total = htole64(h->total);
}

int xfer_tcp_frame_verify(const struct hmac_sha256 *key, uint64_t seq, const void *buf, size_t len,
			  struct xfer_tcp_hdr *h, char *why, size_t why_len)
{
	const uint8_t *p = buf;
	struct hmac_sha256 m = *key;
	uint8_t tag[SHA256_LEN];
	int ret;

	if (len < sizeof(*h)) {
		snprintf(why, why_len, "frame of %zu bytes, shorter than its header", len);
		return -EPROTO;
	}
	ret = xfer_tcp_hdr_decode(p, h, why, why_len);
	if (ret)
		return ret;
	if (len != sizeof(*h) + h->len + XFER_TCP_TAG) {
		snprintf(why, why_len, "frame of %zu bytes, its header says %zu", len,
			 sizeof(*h) + h->len + XFER_TCP_TAG);
		return -EPROTO;
	}
	hmac_sha256_update(&m, p, sizeof(*h) + h->len);
	hmac_sha256_final(&m, tag);
	if (sha256_memcmp_ct(tag, p + sizeof(*h) + h->len, SHA256_LEN)) {
		snprintf(why, why_len, "frame failed authentication (bad HMAC)");
		return -EBADMSG;
	}
	if (h->seq != seq) {
		snprintf(why, why_len,
			 "replayed or reordered frame (seq %" PRIu64 ", expected %" PRIu64 ")",
			 h->seq, seq);
		return -EPROTO;
	}
	return 0;
}

long xfer_tcp_frame_build(const struct hmac_sha256 *key, const struct xfer_tcp_hdr *h,
			  const void *payload, void *out, size_t cap)
{
	struct hmac_sha256 m = *key;
	uint8_t *p = out;
	size_t n = sizeof(*h) + h->len + XFER_TCP_TAG;

	struct xfer_tcp_hdr w;

	if (cap < n)
		return -ENOSPC;
	hdr_encode(h, &w);
	memcpy(p, &w, sizeof(w));
	if (h->len)
		memcpy(p + sizeof(*h), payload, h->len);
	hmac_sha256_update(&m, p, sizeof(*h) + h->len);
	hmac_sha256_final(&m, p + sizeof(*h) + h->len);
	return (long)n;
}

/* --- device --------------------------------------------------------------------- */

static int load_psk(struct xfer_dev *dev, const char *path)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		log_error(XFER_SUBSYS, "tcp: transport.psk_file %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) == 0 && (st.st_mode & 0077))
		log_warn(XFER_SUBSYS, "tcp: transport.psk_file %s is readable by group or others",
			 path);
	n = read(fd, dev->psk, sizeof(dev->psk));
	close(fd);
	if (n < 0) {
		log_error(XFER_SUBSYS, "tcp: transport.psk_file %s: %s", path, strerror(errno));
		return -errno;
	}
	if ((size_t)n == sizeof(dev->psk)) {
		log_error(XFER_SUBSYS, "tcp: transport.psk_file %s: key longer than %d bytes", path,
			  XFER_PSK_MAX - 1);
		return -EINVAL;
	}
	while (n > 0 && (dev->psk[n - 1] == '\n' || dev->psk[n - 1] == '\r' ||
			 dev->psk[n - 1] == ' ' || dev->psk[n - 1] == '\t'))
		n--;
	dev->psk_len = (size_t)n;
	return 0;
}

static int tcp_open(struct xfer_dev *dev, const struct xfer_opts *opts)
{
	int ret;

	if (opts->psk) {
		if (opts->psk_len > XFER_PSK_MAX)
			return -EINVAL;
		memcpy(dev->psk, opts->psk, opts->psk_len);
		dev->psk_len = opts->psk_len;
	} else if (opts->psk_file && opts->psk_file[0]) {
		ret = load_psk(dev, opts->psk_file);
		if (ret)
			return ret;
	} else {
		log_error(
			XFER_SUBSYS,
			"tcp: no pre-shared key: set transport.psk_file (a stranger could write into the KV pool)");
		return -EINVAL;
	}
	if (dev->psk_len < XFER_PSK_MIN) {
		log_error(XFER_SUBSYS, "tcp: pre-shared key of %zu bytes, need at least %d",
			  dev->psk_len, XFER_PSK_MIN);
		return -EINVAL;
	}
	return 0;
}

/* --- endpoint ------------------------------------------------------------------- */

static int tcp_ep_create(struct xfer_ep *ep)
{
	struct tcp_ep *t = duet_calloc(1, sizeof(*t));
	struct sockaddr_in *a4;
	struct sockaddr_in6 *a6;
	socklen_t alen;
	int ret;

	if (!t)
		return -ENOMEM;
	t->lfd = t->stopfd = t->sock = -1;
	t->pend_cap = ep->dev->depth;
	t->pend = duet_calloc(t->pend_cap, sizeof(*t->pend));
	t->stage = duet_malloc(XFER_TCP_CHUNK + XFER_TCP_TAG);
	t->ackq = duet_calloc(ACKQ_CAP, sizeof(*t->ackq));
	if (!t->pend || !t->stage || !t->ackq) {
		ret = -ENOMEM;
		goto err_free;
	}
	memset(&t->laddr, 0, sizeof(t->laddr));
	a4 = (struct sockaddr_in *)&t->laddr;
	a6 = (struct sockaddr_in6 *)&t->laddr;
	if (inet_pton(AF_INET, ep->dev->listen_host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		alen = sizeof(*a4);
	} else if (inet_pton(AF_INET6, ep->dev->listen_host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		alen = sizeof(*a6);
	} else {
		log_error(XFER_SUBSYS, "tcp: listen host '%s' is not a numeric IPv4/IPv6 address",
			  ep->dev->listen_host);
		ret = -EINVAL;
		goto err_free;
	}
	t->lfd = socket(t->laddr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (t->lfd < 0 || bind(t->lfd, (struct sockaddr *)&t->laddr, alen) < 0 ||
	    listen(t->lfd, 8) < 0 || getsockname(t->lfd, (struct sockaddr *)&t->laddr, &alen) < 0) {
		ret = -errno;
		log_error(XFER_SUBSYS, "tcp: listening on %s: %s", ep->dev->listen_host,
			  strerror(errno));
		goto err_close;
	}
	t->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->stopfd < 0) {
		ret = -errno;
		goto err_close;
	}
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	pthread_mutex_init(&t->send_lock, NULL);
	ep->priv = t;
	return 0;

err_close:
	if (t->lfd >= 0)
		close(t->lfd);
err_free:
	duet_free(t->ackq);
	duet_free(t->stage);
	duet_free(t->pend);
	duet_free(t);
	return ret;
}

static void tcp_ep_destroy(struct xfer_ep *ep)
{
	struct tcp_ep *t = ep->priv;
	uint64_t one = 1;

	if (t->thr_started) {
		if (write(t->stopfd, &one, sizeof(one)) < 0)
			log_warn(XFER_SUBSYS, "tcp: eventfd write: %s", strerror(errno));
		pthread_mutex_lock(&t->lock);
		t->stopping = true;
		pthread_cond_broadcast(&t->cond);
		if (t->sock >= 0)
			shutdown(t->sock, SHUT_RDWR);
		pthread_mutex_unlock(&t->lock);
		if (t->ack_started)
			pthread_join(t->ack_thr, NULL);
		pthread_join(t->thr, NULL);
	}
	if (t->sock >= 0)
		close(t->sock);
	close(t->stopfd);
	close(t->lfd);
	pthread_mutex_destroy(&t->send_lock);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	memset(&t->tx_key, 0, sizeof(t->tx_key));
	memset(&t->rx_key, 0, sizeof(t->rx_key));
	duet_free(t->ackq);
	duet_free(t->stage);
	duet_free(t->pend);
	duet_free(t);
}

static int tcp_local_desc(struct xfer_ep *ep, struct xfer_peer *p, struct xfer_desc *d)
{
	struct tcp_ep *t = ep->priv;

	if (t->laddr.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&t->laddr;
		p->family = 4;
		memcpy(p->addr, &a->sin_addr, 4);
		p->port = ntohs(a->sin_port);
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&t->laddr;
		p->family = 6;
		memcpy(p->addr, &a->sin6_addr, 16);
		p->port = ntohs(a->sin6_port);
	}
	return 0;
}

/* --- socket helpers (receive thread) ------------------------------------------------ */

static int ms_left(uint64_t deadline)
{
	uint64_t now = xfer_now_ns();

	if (!deadline)
		return -1;
	return now >= deadline ? 0 : (int)((deadline - now) / 1000000) + 1;
}

/* Waits for events on fd; -ECANCELED when stopped, -ETIMEDOUT past deadline (0: none). */
static int wait_fd(struct tcp_ep *t, int fd, short events, uint64_t deadline)
{
	struct pollfd pf[2] = { { .fd = fd, .events = events },
				{ .fd = t->stopfd, .events = POLLIN } };
	int n;

	for (;;) {
		int ms = ms_left(deadline);
		if (ms == 0)
			return -ETIMEDOUT;
		n = poll(pf, 2, ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (pf[1].revents)
			return -ECANCELED;
		if (pf[0].revents)
			return 0;
	}
}

/* Reads exactly len bytes; *got says how many arrived before an error or EOF. */
static int read_full(struct tcp_ep *t, void *buf, size_t len, uint64_t deadline, size_t *got)
{
	uint8_t *p = buf;
	size_t have = 0;
	int ret;

	while (have < len) {
		ssize_t n = recv(t->sock, p + have, len - have, MSG_DONTWAIT);
		if (n > 0) {
			have += (size_t)n;
			continue;
		}
		if (n == 0) {
			*got = have;
			return -ECONNRESET;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			*got = have;
			return -errno;
		}
		ret = wait_fd(t, t->sock, POLLIN, deadline);
		if (ret) {
			*got = have;
			return ret;
		}
	}
	*got = have;
	return 0;
}

/* Sends every byte of iov (the socket is blocking for sends); caller holds send_lock. */
static int send_iov(int sock, struct iovec *iov, int n)
{
	while (n > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				struct pollfd pf = { .fd = sock, .events = POLLOUT };
				poll(&pf, 1, 1000);
				continue;
			}
			return -errno;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* --- handshake ---------------------------------------------------------------------- */

static void derive(const struct xfer_dev *dev, const char *label, const struct hs_hello *hello,
		   const uint8_t nonce_a[32], uint8_t out[SHA256_LEN])
{
	struct hmac_sha256 m;

	hmac_sha256_init(&m, dev->psk, dev->psk_len);
	hmac_sha256_update(&m, label, strlen(label));
	hmac_sha256_update(&m, hello, sizeof(*hello));
	hmac_sha256_update(&m, nonce_a, 32);
	hmac_sha256_final(&m, out);
}

static void set_keys(struct xfer_ep *ep, const struct hs_hello *hello, const uint8_t nonce_a[32],
		     bool dialer)
{
	struct tcp_ep *t = ep->priv;
	uint8_t d2a[SHA256_LEN], a2d[SHA256_LEN];

	derive(ep->dev, "K-D2A", hello, nonce_a, d2a);
	derive(ep->dev, "K-A2D", hello, nonce_a, a2d);
	hmac_sha256_init(&t->tx_key, dialer ? d2a : a2d, SHA256_LEN);
	hmac_sha256_init(&t->rx_key, dialer ? a2d : d2a, SHA256_LEN);
	memset(d2a, 0, sizeof(d2a));
	memset(a2d, 0, sizeof(a2d));
}

static int hs_send(struct tcp_ep *t, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return send_iov(t->sock, &iov, 1);
}

static bool hs_head_ok(const void *buf, uint16_t type, uint64_t from, uint64_t to)
{
	const struct hs_hello *h = buf; /* magic .. to share one layout */

	return le32toh(h->magic) == HS_MAGIC && le16toh(h->version) == HS_VERSION &&
	       le16toh(h->type) == type && le64toh(h->from) == from && le64toh(h->to) == to;
}

static int dial(struct xfer_ep *ep, uint64_t deadline)
{
	struct tcp_ep *t = ep->priv;
	struct sockaddr_storage ss = { 0 };
	socklen_t alen;
	int fd, ret, err = 0;
	socklen_t elen = sizeof(err);
	char host[INET6_ADDRSTRLEN] = "?";

	if (ep->peer.family == 4) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		memcpy(&a->sin_addr, ep->peer.addr, 4);
		a->sin_port = htons(ep->peer.port);
		alen = sizeof(*a);
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		memcpy(&a->sin6_addr, ep->peer.addr, 16);
		a->sin6_port = htons(ep->peer.port);
		alen = sizeof(*a);
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	pthread_mutex_lock(&t->lock);
	t->sock = fd;
	pthread_mutex_unlock(&t->lock);
	if (connect(fd, (struct sockaddr *)&ss, alen) < 0 && errno != EINPROGRESS) {
		ret = -errno;
		goto err;
	}
	ret = wait_fd(t, fd, POLLOUT, deadline);
	if (ret)
		goto err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
		ret = -(err ? err : errno);
		goto err;
	}
	return 0;
err:
	if (ret != -ECANCELED)
		log_error(XFER_SUBSYS, "tcp: connect to %s port %u: %s", host, ep->peer.port,
			  strerror(-ret));
	return ret;
}

static int handshake_dialer(struct xfer_ep *ep, uint64_t deadline)
{
	struct tcp_ep *t = ep->priv;
	struct hs_hello hello = { 0 };
	struct hs_challenge ch;
	struct hs_auth auth = { 0 };
	uint8_t mac[SHA256_LEN];
	size_t got;
	int ret;

	hello.magic = htole32(HS_MAGIC);
	hello.version = htole16(HS_VERSION);
	hello.type = htole16(HS_HELLO);
	hello.from = htole64(ep->token);
	hello.to = htole64(ep->peer.token);
	for (int i = 0; i < 4; i++) {
		uint64_t r = xfer_random64();
		memcpy(hello.nonce + 8 * i, &r, 8);
	}
	ret = hs_send(t, &hello, sizeof(hello));
	if (ret == 0)
		ret = read_full(t, &ch, sizeof(ch), deadline, &got);
	if (ret) {
		if (ret == -ECONNRESET)
			log_error(
				XFER_SUBSYS,
				"tcp: handshake: the peer closed the connection before its challenge (unknown endpoint or refused)");
		else if (ret != -ECANCELED)
			log_error(XFER_SUBSYS, "tcp: handshake: %s", strerror(-ret));
		return ret;
	}
	if (!hs_head_ok(&ch, HS_CHALLENGE, ep->peer.token, ep->token)) {
		log_error(XFER_SUBSYS, "tcp: handshake: malformed challenge from the peer");
		return -EPROTO;
	}
	derive(ep->dev, "A", &hello, ch.nonce, mac);
	if (sha256_memcmp_ct(mac, ch.mac, SHA256_LEN)) {
		log_error(XFER_SUBSYS,
			  "tcp: handshake: the peer failed authentication (wrong pre-shared key?)");
		return -EACCES;
	}
	auth.magic = htole32(HS_MAGIC);
	auth.version = htole16(HS_VERSION);
	auth.type = htole16(HS_AUTH);
	auth.from = htole64(ep->token);
	auth.to = htole64(ep->peer.token);
	derive(ep->dev, "D", &hello, ch.nonce, auth.mac);
	ret = hs_send(t, &auth, sizeof(auth));
	if (ret)
		return ret;
	set_keys(ep, &hello, ch.nonce, true);
	return 0;
}

/* Accepts until a connection names this endpoint; a stranger is dropped, a bad key fails. */
static int accept_and_handshake(struct xfer_ep *ep, uint64_t deadline)
{
	struct tcp_ep *t = ep->priv;
	struct hs_hello hello;
	struct hs_challenge ch = { 0 };
	struct hs_auth auth;
	uint8_t mac[SHA256_LEN];
	uint64_t hello_deadline;
	size_t got;
	int fd, ret;

	for (;;) {
		ret = wait_fd(t, t->lfd, POLLIN, deadline);
		if (ret) {
			if (ret == -ETIMEDOUT)
				log_error(XFER_SUBSYS, "tcp: the peer did not connect in time");
			return ret;
		}
		fd = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&t->lock);
		t->sock = fd;
		pthread_mutex_unlock(&t->lock);
		/* A silent stranger may hold the port for 2 s at most. */
		hello_deadline = xfer_now_ns() + 2000000000ull;
		if (hello_deadline > deadline)
			hello_deadline = deadline;
		ret = read_full(t, &hello, sizeof(hello), hello_deadline, &got);
		if (ret == -ECANCELED)
			return ret;
		if (ret == 0 && hs_head_ok(&hello, HS_HELLO, ep->peer.token, ep->token))
			break;
		log_warn(XFER_SUBSYS, "tcp: dropped a connection that did not name this endpoint");
		pthread_mutex_lock(&t->lock);
		t->sock = -1;
		pthread_mutex_unlock(&t->lock);
		close(fd);
	}
	ch.magic = htole32(HS_MAGIC);
	ch.version = htole16(HS_VERSION);
	ch.type = htole16(HS_CHALLENGE);
	ch.from = htole64(ep->token);
	ch.to = htole64(ep->peer.token);
	for (int i = 0; i < 4; i++) {
		uint64_t r = xfer_random64();
		memcpy(ch.nonce + 8 * i, &r, 8);
	}
	derive(ep->dev, "A", &hello, ch.nonce, ch.mac);
	ret = hs_send(t, &ch, sizeof(ch));
	if (ret == 0)
		ret = read_full(t, &auth, sizeof(auth), deadline, &got);
	if (ret == -ECONNRESET) {
		log_error(
			XFER_SUBSYS,
			"tcp: handshake: the peer closed the connection during authentication (wrong pre-shared key?)");
		return -EACCES;
	}
	if (ret)
		return ret;
	derive(ep->dev, "D", &hello, ch.nonce, mac);
	if (!hs_head_ok(&auth, HS_AUTH, ep->peer.token, ep->token) ||
	    sha256_memcmp_ct(mac, auth.mac, SHA256_LEN)) {
		log_error(XFER_SUBSYS,
			  "tcp: handshake: the peer failed authentication (wrong pre-shared key?)");
		return -EACCES;
	}
	set_keys(ep, &hello, ch.nonce, false);
	return 0;
}

/* --- sending ------------------------------------------------------------------------ */

/* One frame: header, payload pieces, tag.  Caller holds send_lock. */
static int send_frame(struct xfer_ep *ep, struct xfer_tcp_hdr *h, struct iovec *pieces, int npieces)
{
	struct tcp_ep *t = ep->priv;
	struct xfer_tcp_hdr w;
	struct hmac_sha256 m = t->tx_key;
	uint8_t tag[SHA256_LEN];
	struct iovec iov[XFER_MAX_SGE + 2];

	h->seq = t->tx_seq++;
	hdr_encode(h, &w);
	hmac_sha256_update(&m, &w, sizeof(w));
	iov[0] = (struct iovec){ .iov_base = &w, .iov_len = sizeof(w) };
	for (int i = 0; i < npieces; i++) {
		hmac_sha256_update(&m, pieces[i].iov_base, pieces[i].iov_len);
		iov[1 + i] = pieces[i];
	}
	hmac_sha256_final(&m, tag);
	iov[1 + npieces] = (struct iovec){ .iov_base = tag, .iov_len = sizeof(tag) };
	return send_iov(t->sock, iov, npieces + 2);
}

/* Waits for the handshake (the first post after connect); the error once dead. */
static int wait_up(struct xfer_ep *ep)
{
	struct tcp_ep *t = ep->priv;
	struct timespec ts;
	int ret = 0;

	pthread_mutex_lock(&t->lock);
	if (!t->up && !t->dead) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += ep->dev->connect_timeout_ms / 1000 + 1;
		while (!t->up && !t->dead && ret == 0)
			ret = pthread_cond_timedwait(&t->cond, &t->lock, &ts);
	}
	if (t->dead)
		ret = t->dead_err ? t->dead_err : -ECONNRESET;
	else if (!t->up)
		ret = -ETIMEDOUT;
	else
		ret = 0;
	pthread_mutex_unlock(&t->lock);
	return ret;
}

static int pend_push(struct tcp_ep *t, uint64_t wr_id, bool msg)
{
	int ret = 0;

	pthread_mutex_lock(&t->lock);
	if (t->dead) {
		ret = t->dead_err ? t->dead_err : -ECONNRESET;
	} else if (t->pend_count == t->pend_cap) {
		ret = -EAGAIN;
	} else {
		t->pend[(t->pend_head + t->pend_count) % t->pend_cap] = (struct pend){ wr_id, msg };
		t->pend_count++;
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

static int tcp_post_write(struct xfer_ep *ep, const struct xfer_write *wr, uint64_t total)
{
	struct tcp_ep *t = ep->priv;
	struct iovec pieces[XFER_MAX_SGE];
	unsigned sgi = 0;
	uint64_t sgoff = 0, done = 0;
	int ret;

	ret = wait_up(ep);
	if (ret)
		return ret;
	ret = pend_push(t, wr->wr_id, false);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->send_lock);
	while (done < total) {
		uint64_t chunk = total - done < XFER_TCP_CHUNK ? total - done : XFER_TCP_CHUNK;
		struct xfer_tcp_hdr h = {
			.type = XFER_TCP_WRITE,
			.wr_id = wr->wr_id,
			.region = wr->remote_region,
			.offset = done,
			.len = (uint32_t)chunk,
			.base = wr->remote_offset,
			.total = total,
		};
		int np = 0;

		for (uint64_t need = chunk; need;) {
			const struct xfer_sge *s = &wr->sg[sgi];
			uint64_t take = s->len - sgoff < need ? s->len - sgoff : need;
			pieces[np++] = (struct iovec){
				.iov_base = (uint8_t *)s->mr->base + s->offset + sgoff,
				.iov_len = take,
			};
			need -= take;
			sgoff += take;
			if (sgoff == s->len) {
				sgi++;
				sgoff = 0;
			}
		}
		done += chunk;
		if (done == total)
			h.flags = XFER_TCP_F_LAST | (wr->with_imm ? XFER_TCP_F_IMM : 0);
		h.imm = wr->with_imm ? wr->imm : 0;
		ret = send_frame(ep, &h, pieces, np);
		if (ret)
			break;
	}
	pthread_mutex_unlock(&t->send_lock);
	if (ret) {
		/* The connection is broken: the receive thread flushes what is pending. */
		log_error(XFER_SUBSYS, "tcp: sending a write: %s", strerror(-ret));
		pthread_mutex_lock(&t->lock);
		if (t->sock >= 0)
			shutdown(t->sock, SHUT_RDWR);
		pthread_mutex_unlock(&t->lock);
		return 0; /* completes FLUSHED */
	}
	return 0;
}

static int tcp_post_msg(struct xfer_ep *ep, uint64_t wr_id, const void *buf, size_t len)
{
	struct tcp_ep *t = ep->priv;
	struct xfer_tcp_hdr h = { .type = XFER_TCP_MSG, .wr_id = wr_id, .len = (uint32_t)len };
	struct iovec piece = { .iov_base = (void *)buf, .iov_len = len };
	int ret;

	ret = wait_up(ep);
	if (ret)
		return ret;
	ret = pend_push(t, wr_id, true);
	if (ret)
		return ret;
	pthread_mutex_lock(&t->send_lock);
	ret = send_frame(ep, &h, &piece, 1);
	pthread_mutex_unlock(&t->send_lock);
	if (ret) {
		log_error(XFER_SUBSYS, "tcp: sending a message: %s", strerror(-ret));
		pthread_mutex_lock(&t->lock);
		if (t->sock >= 0)
			shutdown(t->sock, SHUT_RDWR);
		pthread_mutex_unlock(&t->lock);
	}
	return 0;
}

/*
 * The receive thread never blocks on a send (that could deadlock two
 * endpoints whose socket buffers are full both ways): it queues acks for
 * the ack thread.
 */
static int queue_ack(struct xfer_ep *ep, uint64_t wr_id, bool msg, enum xfer_wc_status st)
{
	struct tcp_ep *t = ep->priv;
	struct xfer_tcp_hdr h = {
		.type = st == XFER_WC_OK ? XFER_TCP_ACK : XFER_TCP_NACK,
		.flags = msg ? XFER_TCP_F_OPMSG : 0,
		.wr_id = wr_id,
		.status = st,
	};
	struct pollfd pf = { .fd = t->sock, .events = POLLOUT };
	bool inline_ok;
	int ret = 0;

	/*
	 * Fast path: nobody is sending, no ack is queued before this one, and
	 * the socket has room (a 96-byte frame then goes out without blocking).
	 * Acks keep their order: both paths send them holding send_lock.
	 */
	if (pthread_mutex_trylock(&t->send_lock) == 0) {
		pthread_mutex_lock(&t->lock);
		inline_ok = t->ack_count == 0;
		pthread_mutex_unlock(&t->lock);
		if (inline_ok && poll(&pf, 1, 0) == 1 && (pf.revents & POLLOUT)) {
			ret = send_frame(ep, &h, NULL, 0);
			pthread_mutex_unlock(&t->send_lock);
			return ret;
		}
		pthread_mutex_unlock(&t->send_lock);
	}
	pthread_mutex_lock(&t->lock);
	if (t->ack_count == ACKQ_CAP) {
		ret = -EPROTO;
	} else {
		t->ackq[(t->ack_head + t->ack_count) % ACKQ_CAP] = (struct ack){ wr_id, msg, st };
		t->ack_count++;
		pthread_cond_broadcast(&t->cond);
	}
	pthread_mutex_unlock(&t->lock);
	if (ret)
		log_error(XFER_SUBSYS, "tcp: the peer has more than %d operations unacknowledged",
			  ACKQ_CAP);
	return ret;
}

/* Sends queued acks; lock order send_lock -> lock, as in queue_ack(). */
static void *ack_thread(void *arg)
{
	struct xfer_ep *ep = arg;
	struct tcp_ep *t = ep->priv;
	struct ack batch[32];
	unsigned n;
	int ret = 0;

	for (;;) {
		pthread_mutex_lock(&t->lock);
		while (!t->ack_count && !t->stopping && !t->dead)
			pthread_cond_wait(&t->cond, &t->lock);
		if (t->stopping || t->dead) {
			pthread_mutex_unlock(&t->lock);
			break;
		}
		pthread_mutex_unlock(&t->lock);

		pthread_mutex_lock(&t->send_lock);
		pthread_mutex_lock(&t->lock);
		for (n = 0; n < 32 && t->ack_count; n++) {
			batch[n] = t->ackq[t->ack_head];
			t->ack_head = (t->ack_head + 1) % ACKQ_CAP;
			t->ack_count--;
		}
		pthread_mutex_unlock(&t->lock);
		for (unsigned i = 0; i < n && ret == 0; i++) {
			struct xfer_tcp_hdr h = {
				.type = batch[i].status == XFER_WC_OK ? XFER_TCP_ACK
								      : XFER_TCP_NACK,
				.flags = batch[i].msg ? XFER_TCP_F_OPMSG : 0,
				.wr_id = batch[i].wr_id,
				.status = batch[i].status,
			};
			ret = send_frame(ep, &h, NULL, 0);
		}
		pthread_mutex_unlock(&t->send_lock);
		if (ret)
			break;
	}
	pthread_mutex_lock(&t->lock);
	if (ret && !t->stopping && !t->dead) {
		log_error(XFER_SUBSYS, "tcp: sending an acknowledgement: %s", strerror(-ret));
		if (t->sock >= 0)
			shutdown(t->sock, SHUT_RDWR); /* the receive thread sees it and fails */
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* --- receiving ---------------------------------------------------------------------- */

static int on_ack(struct xfer_ep *ep, const struct xfer_tcp_hdr *h)
{
	struct tcp_ep *t = ep->priv;
	bool msg = h->flags & XFER_TCP_F_OPMSG;
	struct xfer_wc wc = { .wr_id = h->wr_id, .op = msg ? XFER_WC_MSG : XFER_WC_WRITE };
	struct pend p;

	pthread_mutex_lock(&t->lock);
	if (!t->pend_count) {
		pthread_mutex_unlock(&t->lock);
		log_error(XFER_SUBSYS,
			  "tcp: the peer acknowledged wr_id %" PRIu64 ", nothing is pending",
			  h->wr_id);
		return -EPROTO;
	}
	p = t->pend[t->pend_head];
	if (p.wr_id != h->wr_id || p.msg != msg) {
		pthread_mutex_unlock(&t->lock);
		log_error(XFER_SUBSYS,
			  "tcp: the peer acknowledged wr_id %" PRIu64
			  ", the oldest pending is %" PRIu64,
			  h->wr_id, p.wr_id);
		return -EPROTO;
	}
	t->pend_head = (t->pend_head + 1) % t->pend_cap;
	t->pend_count--;
	pthread_mutex_unlock(&t->lock);
	if (h->type == XFER_TCP_NACK)
		wc.status = h->status == XFER_WC_REMOTE_ACCESS ? XFER_WC_REMOTE_ACCESS
							       : XFER_WC_REMOTE_OP;
	xfer_cq_push(ep, &wc, NULL, true);
	return 0;
}

static int on_write(struct xfer_ep *ep, const struct xfer_tcp_hdr *h)
{
	struct tcp_ep *t = ep->priv;
	struct xfer_mr *mr = NULL;
	int ret;

	if (!t->rw.active) {
		if (h->offset != 0) {
			log_error(XFER_SUBSYS, "tcp: WRITE frame starts a write mid-way");
			return -EPROTO;
		}
		t->rw.active = true;
		t->rw.wr_id = h->wr_id;
		t->rw.base = h->base;
		t->rw.total = h->total;
		t->rw.next = 0;
		t->rw.region = h->region;
		t->rw.failed = xfer_check_rx(ep, h->region, h->base, h->total, &mr) != 0;
	} else if (h->wr_id != t->rw.wr_id || h->base != t->rw.base || h->total != t->rw.total ||
		   h->region != t->rw.region || h->offset != t->rw.next) {
		log_error(XFER_SUBSYS,
			  "tcp: WRITE frame out of sequence (wr_id %" PRIu64 " offset %" PRIu64 ")",
			  h->wr_id, h->offset);
		return -EPROTO;
	}
	if (h->offset != t->rw.next) {
		log_error(XFER_SUBSYS, "tcp: WRITE frame out of sequence");
		return -EPROTO;
	}
	t->rw.next += h->len; /* <= total: checked by the header decoder */
	if (!t->rw.failed) {
		/* base + total was checked against the region: no overflow here. */
		mr = ep->dev->mrs[h->region];
		memcpy((uint8_t *)mr->base + h->base + h->offset, t->stage, h->len);
	}
	if (!(h->flags & XFER_TCP_F_LAST))
		return 0;
	t->rw.active = false;
	if (t->rw.next != t->rw.total) {
		log_error(XFER_SUBSYS, "tcp: write ended after %" PRIu64 " of %" PRIu64 " bytes",
			  t->rw.next, t->rw.total);
		return -EPROTO;
	}
	if (t->rw.failed)
		return queue_ack(ep, h->wr_id, false, XFER_WC_REMOTE_ACCESS);
	XFER_STAT_ADD(ep, rx_writes, 1);
	XFER_STAT_ADD(ep, rx_bytes, t->rw.total);
	if (h->flags & XFER_TCP_F_IMM) {
		struct xfer_wc wc = { .op = XFER_WC_RECV_IMM,
				      .imm = h->imm,
				      .region = h->region,
				      .offset = t->rw.base,
				      .len = t->rw.total };
		ret = xfer_cq_push(ep, &wc, NULL, true);
		if (ret)
			return ret;
	}
	return queue_ack(ep, h->wr_id, false, XFER_WC_OK);
}

static int rx_loop(struct xfer_ep *ep)
{
	struct tcp_ep *t = ep->priv;
	uint8_t wire[sizeof(struct xfer_tcp_hdr)];
	struct xfer_tcp_hdr h;
	uint8_t tag[SHA256_LEN];
	char why[160];
	size_t got;
	int ret;

	for (;;) {
		struct hmac_sha256 m = t->rx_key;

		ret = read_full(t, wire, sizeof(wire), 0, &got);
		if (ret) {
			if (ret == -ECONNRESET && got == 0) {
				log_debug(XFER_SUBSYS, "tcp: the peer closed the connection");
				return -ECONNRESET;
			}
			if (ret == -ECONNRESET) {
				XFER_STAT_ADD(ep, bad_frames, 1);
				log_error(
					XFER_SUBSYS,
					"tcp: connection closed mid-frame after %zu of %zu header bytes",
					got, sizeof(wire));
				return -EPROTO;
			}
			return ret;
		}
		ret = xfer_tcp_hdr_decode(wire, &h, why, sizeof(why));
		if (ret) {
			XFER_STAT_ADD(ep, bad_frames, 1);
			log_error(XFER_SUBSYS, "tcp: bad frame from the peer: %s; closing", why);
			return ret;
		}
		ret = read_full(t, t->stage, h.len + XFER_TCP_TAG, 0, &got);
		if (ret) {
			if (ret == -ECONNRESET) {
				XFER_STAT_ADD(ep, bad_frames, 1);
				log_error(
					XFER_SUBSYS,
					"tcp: connection closed mid-frame after %zu of %u payload+tag bytes",
					got, h.len + XFER_TCP_TAG);
				return -EPROTO;
			}
			return ret;
		}
		hmac_sha256_update(&m, wire, sizeof(wire));
		hmac_sha256_update(&m, t->stage, h.len);
		hmac_sha256_final(&m, tag);
		if (sha256_memcmp_ct(tag, t->stage + h.len, SHA256_LEN)) {
			XFER_STAT_ADD(ep, bad_frames, 1);
			log_error(XFER_SUBSYS,
				  "tcp: frame %" PRIu64
				  " failed authentication (bad HMAC); closing, nothing written",
				  h.seq);
			return -EBADMSG;
		}
		if (h.seq != t->rx_seq) {
			XFER_STAT_ADD(ep, bad_frames, 1);
			log_error(XFER_SUBSYS,
				  "tcp: replayed or reordered frame (seq %" PRIu64
				  ", expected %" PRIu64 "); closing",
				  h.seq, t->rx_seq);
			return -EPROTO;
		}
		t->rx_seq++;
		switch (h.type) {
		case XFER_TCP_WRITE:
			ret = on_write(ep, &h);
			break;
		case XFER_TCP_MSG: {
			struct xfer_wc wc = { .op = XFER_WC_RECV_MSG, .len = h.len };
			XFER_STAT_ADD(ep, rx_msgs, 1);
			ret = xfer_cq_push(ep, &wc, t->stage, true);
			if (ret == 0)
				ret = queue_ack(ep, h.wr_id, true, XFER_WC_OK);
			break;
		}
		default:
			ret = on_ack(ep, &h);
			break;
		}
		if (ret)
			return ret;
	}
}

static void *rx_thread(void *arg)
{
	struct xfer_ep *ep = arg;
	struct tcp_ep *t = ep->priv;
	uint64_t deadline = xfer_now_ns() + (uint64_t)ep->dev->connect_timeout_ms * 1000000ull;
	bool dialer = ep->token < ep->peer.token;
	int one = 1, ret;

	ret = dialer ? dial(ep, deadline) : 0;
	if (ret == 0)
		ret = dialer ? handshake_dialer(ep, deadline) : accept_and_handshake(ep, deadline);
	if (ret == 0) {
		setsockopt(t->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* Sends block (the posting thread waits for room); receives poll. */
		fcntl(t->sock, F_SETFL, fcntl(t->sock, F_GETFL) & ~O_NONBLOCK);
		pthread_mutex_lock(&t->lock);
		t->up = true;
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->lock);
		log_debug(XFER_SUBSYS, "tcp: endpoint %016" PRIx64 " connected (%s)", ep->token,
			  dialer ? "dialed" : "accepted");
		ret = rx_loop(ep);
	}
	pthread_mutex_lock(&t->lock);
	t->dead = true;
	t->dead_err = ret;
	if (t->sock >= 0)
		shutdown(t->sock, SHUT_RDWR);
	pthread_cond_broadcast(&t->cond);
	while (t->pend_count) {
		struct pend p = t->pend[t->pend_head];
		struct xfer_wc wc = { .wr_id = p.wr_id,
				      .op = p.msg ? XFER_WC_MSG : XFER_WC_WRITE,
				      .status = XFER_WC_FLUSHED };
		t->pend_head = (t->pend_head + 1) % t->pend_cap;
		t->pend_count--;
		xfer_cq_push(ep, &wc, NULL, false);
	}
	pthread_mutex_unlock(&t->lock);
	xfer_ep_fail(ep, ret);
	return NULL;
}

static int tcp_connect(struct xfer_ep *ep, const struct xfer_desc *d)
{
	struct tcp_ep *t = ep->priv;
	int ret;

	if (ep->peer.family != 4 && ep->peer.family != 6) {
		log_error(XFER_SUBSYS, "tcp: peer descriptor without an address");
		return -EPROTO;
	}
	if (ep->peer.port == 0) {
		log_error(XFER_SUBSYS, "tcp: peer descriptor with port 0");
		return -EPROTO;
	}
	ret = pthread_create(&t->thr, NULL, rx_thread, ep);
	if (ret) {
		log_error(XFER_SUBSYS, "tcp: pthread_create: %s", strerror(ret));
		return -ret;
	}
	t->thr_started = true;
	ret = pthread_create(&t->ack_thr, NULL, ack_thread, ep);
	if (ret) {
		uint64_t one = 1;

		log_error(XFER_SUBSYS, "tcp: pthread_create: %s", strerror(ret));
		if (write(t->stopfd, &one, sizeof(one)) < 0)
			log_warn(XFER_SUBSYS, "tcp: eventfd write: %s", strerror(errno));
		pthread_mutex_lock(&t->lock);
		t->stopping = true;
		if (t->sock >= 0)
			shutdown(t->sock, SHUT_RDWR);
		pthread_mutex_unlock(&t->lock);
		pthread_join(t->thr, NULL);
		t->thr_started = false;
		return -ret;
	}
	t->ack_started = true;
	return 0;
}

static int tcp_progress(struct xfer_ep *ep)
{
	return 0;
}

/* --- test hooks ---------------------------------------------------------------------- */

long xfer_tcp_test_frame(struct xfer_ep *ep, const struct xfer_tcp_hdr *h, const void *payload,
			 void *out, size_t cap)
{
	struct tcp_ep *t = ep->priv;
	struct xfer_tcp_hdr c = *h;
	long n;

	if (ep->ops != &xfer_tcp_ops || wait_up(ep))
		return -EINVAL;
	/* The peer will acknowledge it: expect that like a posted operation. */
	if ((c.type == XFER_TCP_WRITE && (c.flags & XFER_TCP_F_LAST)) || c.type == XFER_TCP_MSG)
		if (pend_push(t, c.wr_id, c.type == XFER_TCP_MSG))
			return -EAGAIN;
	pthread_mutex_lock(&t->send_lock);
	c.seq = t->tx_seq++;
	n = xfer_tcp_frame_build(&t->tx_key, &c, payload, out, cap);
	pthread_mutex_unlock(&t->send_lock);
	return n;
}

int xfer_tcp_test_raw(struct xfer_ep *ep, const void *buf, size_t len, bool shut_wr)
{
	struct tcp_ep *t = ep->priv;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	int ret = 0;

	if (ep->ops != &xfer_tcp_ops || wait_up(ep))
		return -EINVAL;
	pthread_mutex_lock(&t->send_lock);
	if (len)
		ret = send_iov(t->sock, &iov, 1);
	if (shut_wr)
		shutdown(t->sock, SHUT_WR);
	pthread_mutex_unlock(&t->send_lock);
	return ret;
}

const struct xfer_ops xfer_tcp_ops = {
	.name = "tcp",
	.id = XFER_DRV_TCP,
	.caps = {
		.max_write = 1ull << 40,
		.max_msg = XFER_MSG_MAX,
		.max_sge = XFER_MAX_SGE,
		.imm = true,
		.msg = true,
		.cross_host = true,
		.auth = true,
		.remote_reject = true,
	},
	.open = tcp_open,
	.mr_alloc = xfer_anon_mr_alloc,
	.mr_free = xfer_anon_mr_free,
	.ep_create = tcp_ep_create,
	.ep_destroy = tcp_ep_destroy,
	.local_desc = tcp_local_desc,
	.connect = tcp_connect,
	.post_write = tcp_post_write,
	.post_msg = tcp_post_msg,
	.progress = tcp_progress,
};
