/* SPDX-License-Identifier: MIT */
/*
 * Internals shared by the transfer drivers: the ops table, the device,
 * region and endpoint bodies, the completion queue, the descriptor wire
 * layout and the common checks.  Not for callers of xfer.h.
 */
#ifndef DUET_XFER_IMPL_H
#define DUET_XFER_IMPL_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "drivers/net/xfer.h"

#define XFER_SUBSYS "xfer"
#define XFER_DEFAULT_DEPTH 64
#define XFER_MAX_DEPTH 4096

enum xfer_driver_id {
	XFER_DRV_LOOPBACK = 1,
	XFER_DRV_SHM = 2,
	XFER_DRV_TCP = 3,
};

/*
 * Descriptor bytes, little-endian.  Fixed header, then n_regions region
 * entries.  fd fields are indexes into the fds travelling with the
 * descriptor (-1: none); *_fdnum are the same fds' numbers in process pid,
 * for the pidfd_getfd(2) fallback.
 */
#define XFER_DESC_MAGIC 0x31445844u /* "DXD1" */
#define XFER_DESC_VERSION 1

struct xfer_wire_desc {
	uint32_t magic;	     /*  0 */
	uint16_t version;    /*  4 */
	uint16_t driver;     /*  6: enum xfer_driver_id */
	uint64_t token;	     /*  8: the endpoint's random id */
	uint32_t pid;	     /* 16 */
	uint32_t n_regions;  /* 20 */
	uint8_t addr[16];    /* 24: tcp: IPv4 in the first 4 bytes or IPv6 */
	uint16_t port;	     /* 40: tcp */
	uint16_t family;     /* 42: tcp: 4 or 6 */
	int32_t ring_fd;     /* 44: shm: the endpoint's inbound ring */
	int32_t ev_fd;	     /* 48: shm: its eventfd */
	uint32_t ring_slots; /* 52: shm */
	int32_t ring_fdnum;  /* 56 */
	int32_t ev_fdnum;    /* 60 */
};
static_assert(sizeof(struct xfer_wire_desc) == 64, "descriptor header is 64 bytes");

struct xfer_wire_region {
	uint32_t id;   /*  0 */
	int32_t fd;    /*  4: shm: memfd index */
	uint64_t len;  /*  8: bytes */
	int32_t fdnum; /* 16 */
	uint32_t rsvd; /* 20: zero */
};
static_assert(sizeof(struct xfer_wire_region) == 24, "descriptor region is 24 bytes");
static_assert(sizeof(struct xfer_wire_desc) + XFER_MAX_REGIONS * sizeof(struct xfer_wire_region) <=
		      XFER_DESC_MAX,
	      "descriptor fits XFER_DESC_MAX");

/* A decoded descriptor (host order, validated). */
struct xfer_peer {
	uint16_t driver;
	uint64_t token;
	uint32_t pid;
	uint8_t addr[16];
	uint16_t port;
	uint16_t family;
	int32_t ring_fd, ev_fd;
	uint32_t ring_slots;
	int32_t ring_fdnum, ev_fdnum;
	uint32_t n_regions;
	struct {
		uint32_t id;
		int32_t fd;
		int32_t fdnum;
		uint64_t len;
	} region[XFER_MAX_REGIONS];
};

struct xfer_ops {
	const char *name;
	enum xfer_driver_id id;
	struct xfer_caps caps;
	int (*open)(struct xfer_dev *dev, const struct xfer_opts *opts);
	void (*close)(struct xfer_dev *dev);
	int (*mr_alloc)(struct xfer_dev *dev, struct xfer_mr *mr); /* sets base, len, fd */
	void (*mr_free)(struct xfer_mr *mr);
	int (*ep_create)(struct xfer_ep *ep);
	void (*ep_destroy)(struct xfer_ep *ep);
	/* Fills the driver fields of w and the fds of d (the header is done). */
	int (*local_desc)(struct xfer_ep *ep, struct xfer_peer *w, struct xfer_desc *d);
	int (*connect)(struct xfer_ep *ep, const struct xfer_desc *d);
	/* wr checked locally (sges, total); total = its byte count. */
	int (*post_write)(struct xfer_ep *ep, const struct xfer_write *wr, uint64_t total);
	int (*post_msg)(struct xfer_ep *ep, uint64_t wr_id, const void *buf, size_t len);
	/* Moves driver-side arrivals into the cq; negative once the connection is dead. */
	int (*progress)(struct xfer_ep *ep);
	int (*inject)(struct xfer_ep *ep, enum xfer_fault fault, unsigned nth);
	int (*release)(struct xfer_ep *ep);
};

struct xfer_mr {
	struct xfer_dev *dev;
	uint32_t id;
	void *base;
	size_t len;	/* registered bytes */
	size_t map_len; /* bytes mapped (rounded to the page size in use) */
	int fd;		/* shm: the memfd, else -1 */
	bool allocated; /* by the driver (xfer_mr_alloc) */
	bool own_fd;	/* xfer_mr_reg_fd: fd is our dup, closed at dereg */
	bool remote;	/* a peer may write into it */
};

struct xfer_dev {
	const struct xfer_ops *ops;
	void *priv;
	struct xfer_mr *mrs[XFER_MAX_REGIONS];
	unsigned n_eps;
	unsigned depth;
	bool hugepages;
	unsigned connect_timeout_ms;
	char listen_host[64];
	uint8_t psk[XFER_PSK_MAX];
	size_t psk_len;
};

/*
 * Completion queue: a ring of cap entries, each with a message slot.  The
 * entries returned by one xfer_poll() stay reserved until the next one, so
 * wc.msg stays valid.  Guarded by lock (the tcp receive thread pushes).
 */
struct xfer_cq {
	pthread_mutex_t lock;
	pthread_cond_t room; /* signalled when entries are released */
	struct xfer_wc *wc;
	uint8_t *msg; /* cap * XFER_MSG_MAX */
	unsigned cap;
	unsigned head;	   /* oldest unread entry */
	unsigned count;	   /* unread entries */
	unsigned reserved; /* entries before head returned by the last poll */
	bool armed;	   /* the poller saw it empty: the next push signals the eventfd */
	bool closing;	   /* the ep is being destroyed: waiting pushes give up */
};

struct xfer_ep {
	struct xfer_dev *dev;
	const struct xfer_ops *ops;
	void *priv;
	uint64_t token;
	int efd; /* eventfd (EFD_NONBLOCK); for shm the peer signals it too */
	struct xfer_cq cq;
	unsigned inflight; /* own writes/messages without a completion yet */
	bool connected;
	_Atomic int error; /* sticky: the connection failed (set by the tcp thread) */
	struct xfer_peer peer;
	struct xfer_stats stats;
	bool test_forge; /* tests: skip the shm sender-side range check */
};

/*
 * Counters in ep->stats: the tcp driver's receive thread updates some while
 * the owner reads them (xfer_ep_stats), so every update and read is atomic
 * (relaxed: they are statistics, not synchronization).
 */
#define XFER_STAT_ADD(ep, field, v) __atomic_fetch_add(&(ep)->stats.field, (v), __ATOMIC_RELAXED)


/* Pushes a completion (msg copied for RECV_MSG); wait: block while full (else -ENOSPC). */
int xfer_cq_push(struct xfer_ep *ep, const struct xfer_wc *wc, const void *msg, bool wait);
/* Free entries (not counting reserved ones). */
unsigned xfer_cq_room(struct xfer_ep *ep);
/* Marks the connection failed (first error wins) and wakes the poller. */
void xfer_ep_fail(struct xfer_ep *ep, int err);
void xfer_ep_signal(struct xfer_ep *ep);

/*
 * Receiver-side check of a remote range against ep's device regions:
 * region registered and remote, 1 <= len <= max_write, off + len within it
 * (overflow-safe).  On failure counts rx_rejected, logs what was wrong and
 * returns -ERANGE (or -EINVAL for a bad length).
 */
int xfer_check_rx(struct xfer_ep *ep, uint32_t region, uint64_t off, uint64_t len,
		  struct xfer_mr **mr);
/* Sender-side check against the peer's descriptor (shm); no counting. */
int xfer_check_peer(const struct xfer_ep *ep, uint32_t region, uint64_t off, uint64_t len,
		    uint64_t *region_len);

/* Validates and decodes descriptor bytes (nfds: fds that came with them). */
int xfer_desc_decode(const void *bytes, size_t len, unsigned nfds, struct xfer_peer *out, char *why,
		     size_t why_len);
int xfer_desc_encode(const struct xfer_peer *p, struct xfer_desc *d);

uint64_t xfer_random64(void);
uint64_t xfer_now_ns(void);

/*
 * tcp frames: a 64-byte header, len payload bytes, a 32-byte HMAC-SHA256 tag
 * over header and payload with the sending direction's session key.  The
 * receiver accepts only seq == the next expected (replay, reordering).
 */
#define XFER_TCP_FRAME_MAGIC 0x31465844u /* "DXF1" */
#define XFER_TCP_CHUNK (1u << 20)	 /* payload bytes per WRITE frame, at most */
#define XFER_TCP_TAG 32

enum xfer_tcp_type {
	XFER_TCP_WRITE = 1, /* a chunk of a write: payload -> (region, offset) */
	XFER_TCP_MSG = 2,   /* a message */
	XFER_TCP_ACK = 3,   /* the peer's oldest write/message finished */
	XFER_TCP_NACK = 4,  /* ... failed (status) */
};

enum xfer_tcp_flags {
	XFER_TCP_F_LAST = 1,  /* WRITE: the write's last chunk */
	XFER_TCP_F_IMM = 2,   /* WRITE (with LAST): deliver imm */
	XFER_TCP_F_OPMSG = 4, /* ACK/NACK: of a message, not a write */
};

struct xfer_tcp_hdr {
	uint32_t magic;	 /*  0 */
	uint16_t type;	 /*  4 */
	uint16_t flags;	 /*  6 */
	uint64_t seq;	 /*  8 */
	uint64_t wr_id;	 /* 16 */
	uint32_t region; /* 24 */
	uint32_t imm;	 /* 28 */
	uint64_t offset; /* 32: WRITE: this chunk's offset within the write */
	uint32_t len;	 /* 40: payload bytes */
	uint32_t status; /* 44: NACK */
	uint64_t base;	 /* 48: the write's first remote offset */
	uint64_t total;	 /* 56: the write's bytes */
};
static_assert(sizeof(struct xfer_tcp_hdr) == 64, "tcp frame header is 64 bytes");

/* Header from the wire (little-endian) into h (host), validated on its own. */
int xfer_tcp_hdr_decode(const void *wire, struct xfer_tcp_hdr *h, char *why, size_t why_len);
/* A whole frame in buf: header, exact length, tag (key = the direction's state), seq. */
struct hmac_sha256;
int xfer_tcp_frame_verify(const struct hmac_sha256 *key, uint64_t seq, const void *buf, size_t len,
			  struct xfer_tcp_hdr *h, char *why, size_t why_len);
/* Encodes h + payload + tag into out (cap bytes); returns the frame length or negative. */
long xfer_tcp_frame_build(const struct hmac_sha256 *key, const struct xfer_tcp_hdr *h,
			  const void *payload, void *out, size_t cap);

/* Tests: the next valid frame ep would send (consumes a seq), and raw bytes on its socket. */
long xfer_tcp_test_frame(struct xfer_ep *ep, const struct xfer_tcp_hdr *h, const void *payload,
			 void *out, size_t cap);
int xfer_tcp_test_raw(struct xfer_ep *ep, const void *buf, size_t len, bool shut_wr);

/* Test hook (tests only): let an shm sender post ranges its own check would refuse. */
void xfer_test_forge(struct xfer_ep *ep, bool on);

/* Private anonymous memory for drivers with nothing special to map (loopback, tcp). */
int xfer_anon_mr_alloc(struct xfer_dev *dev, struct xfer_mr *mr);
void xfer_anon_mr_free(struct xfer_mr *mr);

extern const struct xfer_ops xfer_loopback_ops;
extern const struct xfer_ops xfer_shm_ops;
extern const struct xfer_ops xfer_tcp_ops;

#endif /* DUET_XFER_IMPL_H */
