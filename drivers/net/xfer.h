/* SPDX-License-Identifier: MIT */
/*
 * KV transfer: one verbs-shaped interface over several wires ("loopback",
 * "shm", "tcp").
 *
 * Life cycle (both ends):
 *   xfer_open(driver)            a device
 *   xfer_mr_alloc / xfer_mr_reg  memory regions, once, before any descriptor
 *   xfer_ep_create               an endpoint (one peer)
 *   xfer_local_desc              bytes (+ fds) to hand to the peer out of band
 *   xfer_connect(peer desc)      BOTH ends connect with the other's descriptor
 *   xfer_post_write / _msg       one-sided writes, small messages
 *   xfer_poll                    completions; xfer_event_fd() for the event loop
 *
 * Remote memory is only ever named as (region id, offset, length).  The
 * receiving end checks every such range against its own registered regions
 * (overflow-safe) and rejects, counts and reports (a failed completion at
 * the sender) anything outside.  The shm driver writes straight into the
 * peer's mapping, so its sender checks against the region sizes in the
 * peer's descriptor as well, and the receiver re-checks every range named in
 * a ring record it consumes.
 *
 * Descriptors and fds: a descriptor is up to XFER_DESC_MAX opaque bytes plus
 * up to XFER_DESC_MAX_FDS file descriptors (shm: the memfds of the regions
 * and of the ring, and the eventfd).  The caller ferries both, e.g. with
 * xfer_desc_send()/xfer_desc_recv() over the supervisor's SOCK_SEQPACKET
 * channels (SCM_RIGHTS).  When a descriptor arrives without its fds, shm
 * falls back to pidfd_getfd(2) on the pid and fd numbers recorded in the
 * bytes (needs ptrace access to the peer).
 *
 * tcp: xfer_connect() returns at once; the dial/accept and the PSK handshake
 * run in the endpoint's receive thread, and the first post waits for them
 * (connect_timeout_ms).  A failed handshake fails the endpoint: posts and
 * xfer_poll() return the error (-EACCES for a wrong key).
 *
 * Regions are deregistered only after every endpoint of their device is
 * destroyed.
 *
 * Threads: an endpoint is used by one thread at a time (the tcp driver runs
 * its own receive thread internally).  Functions return 0 (or a count) or a
 * negative errno-style code; every failure is logged once where it happens.
 */
#ifndef DUET_XFER_H
#define DUET_XFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XFER_DESC_MAX 1024  /* bytes of a descriptor */
#define XFER_DESC_MAX_FDS 8 /* fds travelling with a descriptor */
#define XFER_MSG_MAX 4096   /* bytes of a message */
#define XFER_MAX_SGE 16	    /* scatter entries of one write */
#define XFER_MAX_REGIONS 8  /* registered regions per device */
#define XFER_PSK_MIN 16	    /* bytes of a pre-shared key, at least */
#define XFER_PSK_MAX 256

struct xfer_dev;
struct xfer_ep;
struct xfer_mr;

struct xfer_opts {
	const char *listen_host; /* tcp: address endpoints listen on; NULL = 127.0.0.1 */
	const char *psk_file;	 /* tcp: transport.psk_file (whitespace-trimmed contents) */
	const uint8_t *psk;	 /* tcp: the key itself, instead of psk_file */
	size_t psk_len;
	bool encrypt;		     /* transport.encrypt: not implemented -> -EOPNOTSUPP */
	bool hugepages;		     /* shm: MFD_HUGETLB for xfer_mr_alloc(), 4 KiB fallback */
	unsigned depth;		     /* operations in flight per endpoint; 0 = 64 */
	unsigned connect_timeout_ms; /* tcp: handshake and first post; 0 = 10000 */
};

/* What a driver can do; xfer_query_caps() answers without opening a device. */
struct xfer_caps {
	uint64_t max_write;   /* bytes of one write (sum of its scatter list) */
	uint32_t max_msg;     /* bytes of one message */
	uint32_t max_sge;     /* scatter entries of one write */
	bool imm;	      /* write with immediate */
	bool msg;	      /* small messages */
	bool fd_passing;      /* the descriptor carries fds the caller must ferry */
	bool cross_host;      /* works between hosts */
	bool auth;	      /* peer authenticated (pre-shared key) */
	bool encrypt;	      /* payload encryption */
	bool remote_reject;   /* receiver-side rejections come back as failed completions */
	bool fault_injection; /* xfer_loopback_inject() */
};

/* A local range: (registered region, byte offset, byte length). */
struct xfer_sge {
	struct xfer_mr *mr;
	uint64_t offset;
	uint64_t len;
};

struct xfer_write {
	uint64_t wr_id;		   /* echoed in the completion; never interpreted */
	const struct xfer_sge *sg; /* gathered in order into one contiguous remote range */
	unsigned nsg;		   /* 1 .. XFER_MAX_SGE */
	uint32_t remote_region;	   /* region id in the peer's descriptor */
	uint64_t remote_offset;
	bool with_imm; /* the peer gets an XFER_WC_RECV_IMM after the data */
	uint32_t imm;
};

enum xfer_wc_op {
	XFER_WC_WRITE,	  /* send side: a write finished (or failed) */
	XFER_WC_MSG,	  /* send side: a message finished (or failed) */
	XFER_WC_RECV_IMM, /* receive side: a write with immediate landed */
	XFER_WC_RECV_MSG, /* receive side: a message arrived (msg, len) */
};

enum xfer_wc_status {
	XFER_WC_OK,
	XFER_WC_REMOTE_ACCESS, /* range outside the peer's regions: rejected, nothing written */
	XFER_WC_REMOTE_OP,     /* the peer refused the operation (bad record) */
	XFER_WC_LOCAL,	       /* local failure before anything went out */
	XFER_WC_FLUSHED,       /* connection lost before the operation finished */
};

struct xfer_wc {
	uint64_t wr_id; /* send side */
	enum xfer_wc_op op;
	enum xfer_wc_status status;
	uint32_t imm;	 /* RECV_IMM */
	uint32_t region; /* RECV_IMM: where the write landed (checked) */
	uint64_t offset;
	uint64_t len;	 /* RECV_IMM: bytes written; RECV_MSG: message bytes */
	const void *msg; /* RECV_MSG: valid until the next xfer_poll() on the ep */
};

struct xfer_desc {
	uint32_t len;		    /* bytes used */
	uint32_t nfds;		    /* fds used */
	int fds[XFER_DESC_MAX_FDS]; /* xfer_local_desc: borrowed from the ep, do not close */
	uint8_t bytes[XFER_DESC_MAX];
};

struct xfer_stats {
	uint64_t writes; /* writes posted */
	uint64_t write_bytes;
	uint64_t msgs;	    /* messages posted */
	uint64_t rx_writes; /* writes that landed here */
	uint64_t rx_bytes;
	uint64_t rx_msgs;
	uint64_t rx_rejected; /* remote ranges or records refused here */
	uint64_t bad_frames;  /* tcp: frames refused (auth, replay, format) */
	uint64_t tx_failed;   /* own operations that completed with an error */
};

enum xfer_fault {
	XFER_FAULT_DROP,      /* vanishes: no data, no completion on either side */
	XFER_FAULT_DELAY,     /* held until xfer_loopback_release() */
	XFER_FAULT_DUPLICATE, /* delivered twice */
	XFER_FAULT_REORDER,   /* delivered after the next operation */
	XFER_FAULT_CORRUPT,   /* one payload byte flipped (the middle one) */
	XFER_FAULT_FAIL,      /* not delivered; the sender gets XFER_WC_LOCAL */
};

/* "loopback", "shm", "tcp" (in registration order) -> name; NULL past the end. */
const char *xfer_driver_name(unsigned i);
int xfer_query_caps(const char *driver, struct xfer_caps *caps);

int xfer_open(const char *driver, const struct xfer_opts *opts, struct xfer_dev **out);
void xfer_close(struct xfer_dev *dev); /* after every ep and mr of it */
const char *xfer_dev_driver(const struct xfer_dev *dev);

/*
 * Memory regions.  xfer_mr_alloc() gets memory the driver can expose to a
 * peer (shm: a sealed memfd mapping), zero-filled.  xfer_mr_reg() registers
 * the caller's memory; with shm such a region is a write source only and
 * is not in the descriptor.  A region's id is the lowest free slot (0, 1, ...).
 */
int xfer_mr_alloc(struct xfer_dev *dev, size_t len, struct xfer_mr **out);
int xfer_mr_reg(struct xfer_dev *dev, void *addr, size_t len, struct xfer_mr **out);
/*
 * Registers memory the caller mapped MAP_SHARED from the memfd fd, bytes
 * [0, len) at addr (a KV pool the backend put in a memfd): a region a peer
 * may write, as one from xfer_mr_alloc().  shm hands the fd to the peer, so
 * it must be sealed against shrinking and growing (-EINVAL, logged, when it
 * is not, or is shorter than len).  fd is duplicated; the caller keeps its own.
 */
int xfer_mr_reg_fd(struct xfer_dev *dev, void *addr, size_t len, int fd, struct xfer_mr **out);
void xfer_mr_dereg(struct xfer_mr *mr);
void *xfer_mr_base(const struct xfer_mr *mr);
size_t xfer_mr_len(const struct xfer_mr *mr);
uint32_t xfer_mr_id(const struct xfer_mr *mr);

int xfer_ep_create(struct xfer_dev *dev, struct xfer_ep **out);
void xfer_ep_destroy(struct xfer_ep *ep);
int xfer_local_desc(struct xfer_ep *ep, struct xfer_desc *desc);
/* Takes what it needs from peer (dups its fds; the caller still owns them). */
int xfer_connect(struct xfer_ep *ep, const struct xfer_desc *peer);

/* 0 when posted (the outcome comes as a completion); -EAGAIN when depth ops are in flight. */
int xfer_post_write(struct xfer_ep *ep, const struct xfer_write *wr);
int xfer_post_msg(struct xfer_ep *ep, uint64_t wr_id, const void *buf, size_t len);
/*
 * Up to max completions, without blocking: the number returned, or a
 * negative code once the connection has failed (after its flushed
 * completions have been returned).
 */
int xfer_poll(struct xfer_ep *ep, struct xfer_wc *wc, unsigned max);
/* Readable when xfer_poll() may return something; owned by the ep. */
int xfer_event_fd(struct xfer_ep *ep);
void xfer_ep_stats(const struct xfer_ep *ep, struct xfer_stats *st);

const char *xfer_wc_status_str(enum xfer_wc_status st);

/* A descriptor (bytes + fds) as one SOCK_SEQPACKET/SOCK_DGRAM message with SCM_RIGHTS. */
int xfer_desc_send(int sock, const struct xfer_desc *desc);
/* The received fds are the caller's to close (xfer_desc_close_fds). */
int xfer_desc_recv(int sock, struct xfer_desc *desc);
void xfer_desc_close_fds(struct xfer_desc *desc);

/* Loopback only (-EOPNOTSUPP elsewhere): the nth operation (1 = the next) posted on ep. */
int xfer_loopback_inject(struct xfer_ep *ep, enum xfer_fault fault, unsigned nth);
/* Delivers the operations held by XFER_FAULT_DELAY. */
int xfer_loopback_release(struct xfer_ep *ep);

#endif /* DUET_XFER_H */
