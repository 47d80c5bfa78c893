// SPDX-License-Identifier: MIT
/*
 * KV transfer drivers: SHA-256/HMAC vectors, the registry, descriptors,
 * round trips on loopback, shm (in one process and across fork()) and tcp
 * (127.0.0.1 with a pre-shared key), bounds checks, tcp authentication,
 * tampering, replay and truncation, loopback faults, eventfd wake-ups.
 *
 * No timing assertions: waits are poll() on the event fd with a generous
 * safety timeout that only turns a hang into a failure.
 *
 * XFER_SEEDS_DIR=dir: test_write_seeds also writes the fuzz seed corpus there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "drivers/net/sha256.h"
#include "drivers/net/xfer-impl.h"
#include "drivers/net/xfer.h"
#include "runtime/core/log.h"
#include "runtime/core/mem.h"
#include "tests/unit/testutil.h"

#define SAFETY_MS 20000 /* a hang becomes a failure; never a pass/fail criterion */
#define REGION 65536

/*
 * Log capture safe against the tcp threads logging at the same time as the
 * test (tu_log_capture_* is single-threaded).
 */
static pthread_mutex_t cap_lock = PTHREAD_MUTEX_INITIALIZER;
static char cap_buf[1 << 16];
static size_t cap_len;

static void cap_sink(void *ctx, enum duet_log_level level, const char *line)
{
	size_t n = strlen(line);

	pthread_mutex_lock(&cap_lock);
	if (cap_len + n + 2 < sizeof(cap_buf)) {
		memcpy(cap_buf + cap_len, line, n);
		cap_buf[cap_len + n] = '\n';
		cap_len += n + 1;
		cap_buf[cap_len] = 0;
	}
	pthread_mutex_unlock(&cap_lock);
}

static void cap_start(void)
{
	pthread_mutex_lock(&cap_lock);
	cap_len = 0;
	cap_buf[0] = 0;
	pthread_mutex_unlock(&cap_lock);
	duet_log_set_sink(cap_sink, NULL);
}

static void cap_stop(void)
{
	duet_log_set_sink(NULL, NULL);
}

static bool cap_contains(const char *needle)
{
	bool yes;

	pthread_mutex_lock(&cap_lock);
	yes = strstr(cap_buf, needle) != NULL;
	pthread_mutex_unlock(&cap_lock);
	return yes;
}

static const uint8_t test_psk[] = "duet-test-pre-shared-key-0123456789";
static const uint8_t fuzz_psk[] = "duet-fuzz-key-0123456789abcdef";

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static void check_sha(const void *data, size_t len, const char *want)
{
	uint8_t d[SHA256_LEN];
	char h[65];

	sha256(data, len, d);
	hex(d, sizeof(d), h);
	assert_string_equal(h, want);
}

static void check_hmac(const void *key, size_t klen, const void *data, size_t len, const char *want)
{
	uint8_t d[SHA256_LEN];
	char h[65];

	hmac_sha256(key, klen, data, len, d);
	hex(d, sizeof(d), h);
	assert_string_equal(h, want);
}

/* FIPS 180-4 examples and RFC 4231 test cases 1-4, 6, 7. */
static void sha256_vectors(void)
{
	uint8_t k[131], d[50];
	char *million;
	struct sha256 s;
	uint8_t out[SHA256_LEN];
	char h[65];

	check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	million = malloc(1000000);
	assert_non_null(million);
	memset(million, 'a', 1000000);
	check_sha(million, 1000000,
		  "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	/* The same in odd-sized pieces: the buffering path. */
	sha256_init(&s);
	for (size_t at = 0, step = 1; at < 1000000; at += step, step = step * 3 % 1000 + 1)
		sha256_update(&s, million + at, at + step > 1000000 ? 1000000 - at : step);
	sha256_final(&s, out);
	hex(out, sizeof(out), h);
	assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(million);

	memset(k, 0x0b, 20);
	check_hmac(k, 20, "Hi There", 8,
		   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	check_hmac("Jefe", 4, "what do ya want for nothing?", 28,
		   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	memset(k, 0xaa, 20);
	memset(d, 0xdd, 50);
	check_hmac(k, 20, d, 50,
		   "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
	for (int i = 0; i < 25; i++)
		k[i] = (uint8_t)(i + 1);
	memset(d, 0xcd, 50);
	check_hmac(k, 25, d, 50,
		   "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
	memset(k, 0xaa, 131);
	check_hmac(k, 131, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
		   "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	check_hmac(
		k, 131,
		"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
		152, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
	assert_int_equal(sha256_memcmp_ct("abc", "abc", 3), 0);
	assert_int_not_equal(sha256_memcmp_ct("abc", "abd", 3), 0);
}

/* Both the SHA-extension path (when the CPU has it) and the portable one. */
static void test_sha256_vectors(void **state)
{
	sha256_use_accel(true);
	print_message("sha256: x86 SHA extensions %s\n",
		      sha256_accelerated() ? "in use" : "not available");
	sha256_vectors();
	sha256_use_accel(false);
	sha256_vectors();
	sha256_use_accel(true);
}

/* --- registry ------------------------------------------------------------- */

static void test_registry(void **state)
{
	struct xfer_caps c;
	struct xfer_dev *dev;
	struct xfer_opts o = { .psk = test_psk, .psk_len = sizeof(test_psk) - 1, .encrypt = true };

	assert_string_equal(xfer_driver_name(0), "loopback");
	assert_string_equal(xfer_driver_name(1), "shm");
	assert_string_equal(xfer_driver_name(2), "tcp");
	assert_null(xfer_driver_name(3));
	assert_int_equal(xfer_query_caps("nope", &c), -ENOENT);
	assert_int_equal(xfer_query_caps("shm", &c), 0);
	assert_true(c.fd_passing && c.imm && !c.cross_host);
	assert_true(c.max_write >= (64u << 20));
	assert_int_equal(xfer_query_caps("tcp", &c), 0);
	assert_true(c.auth && c.cross_host && !c.encrypt && !c.fd_passing);
	assert_int_equal(xfer_query_caps("loopback", &c), 0);
	assert_true(c.fault_injection);

	cap_start();
	assert_int_equal(xfer_open("verbs-nope", NULL, &dev), -ENOENT);
	assert_null(dev);
	assert_int_equal(xfer_open("tcp", &o, &dev), -EOPNOTSUPP);
	assert_true(cap_contains("transport.encrypt"));
	o.encrypt = false;
	o.psk = NULL;
	assert_int_equal(xfer_open("tcp", &o, &dev), -EINVAL);
	assert_true(cap_contains("transport.psk_file"));
	o.psk = (const uint8_t *)"short";
	o.psk_len = 5;
	assert_int_equal(xfer_open("tcp", &o, &dev), -EINVAL);
	o.psk = NULL;
	o.psk_file = "/nonexistent/duet.psk";
	assert_int_equal(xfer_open("tcp", &o, &dev), -ENOENT);
	cap_stop();
}

/* xfer_mr_reg_fd: only a sealed memfd that holds the region; the fd is dup'ed and closed at dereg. */
static void test_mr_reg_fd(void **state)
{
	struct xfer_dev *dev;
	struct xfer_mr *mr;
	int fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *p;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 65536), 0);
	p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	assert_int_equal(xfer_open("shm", NULL, &dev), 0);
	cap_start();
	assert_int_equal(xfer_mr_reg_fd(dev, p, 65536, fd, &mr), -EINVAL); /* not sealed */
	assert_true(cap_contains("sealed"));
	cap_stop();
	assert_null(mr);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	cap_start();
	assert_int_equal(xfer_mr_reg_fd(dev, p, 65537, fd, &mr), -EINVAL); /* longer than the fd */
	assert_int_equal(xfer_mr_reg_fd(dev, p, 0, fd, &mr), -EINVAL);
	assert_int_equal(xfer_mr_reg_fd(dev, p, 4096, -1, &mr), -EINVAL);
	cap_stop();
	assert_int_equal(xfer_mr_reg_fd(dev, p, 65536, fd, &mr), 0);
	assert_ptr_equal(xfer_mr_base(mr), p);
	assert_int_equal(xfer_mr_len(mr), 65536);
	/* The region keeps its own copy of the fd: the caller may close its own. */
	close(fd);
	{
		struct xfer_ep *ep;
		struct xfer_desc d;

		assert_int_equal(xfer_ep_create(dev, &ep), 0);
		assert_int_equal(xfer_local_desc(ep, &d), 0);
		assert_true(d.nfds >= 1);
		assert_true(fcntl(d.fds[0], F_GET_SEALS) & F_SEAL_SHRINK); /* the region's memfd */
		xfer_ep_destroy(ep);
	}
	xfer_mr_dereg(mr);
	xfer_close(dev);
	munmap(p, 65536);
}

static void test_psk_file(void **state)
{
	char *dir = tu_mkdtemp();
	char path[512];
	struct xfer_dev *dev;
	struct xfer_opts o = { .psk_file = path };

	snprintf(path, sizeof(path), "%s/psk", dir);
	assert_int_equal(tu_write_file(path, "0123456789abcdef0123\n", 21), 0);
	chmod(path, 0600);
	assert_int_equal(xfer_open("tcp", &o, &dev), 0);
	assert_int_equal(dev->psk_len, 20); /* newline trimmed */
	xfer_close(dev);
	tu_rmtree(dir);
}

/* --- helpers ----------------------------------------------------------------- */

struct pair {
	const char *driver;
	struct xfer_dev *sd, *rd; /* sender (prefill), receiver (decode) */
	struct xfer_mr *src, *dst;
	struct xfer_ep *s, *r;
};

static struct xfer_opts opts_for(const char *driver)
{
	struct xfer_opts o = { .depth = 16 };

	if (strcmp(driver, "tcp") == 0) {
		o.psk = test_psk;
		o.psk_len = sizeof(test_psk) - 1;
	}
	return o;
}

static void pair_open(struct pair *p, const char *driver)
{
	struct xfer_opts o = opts_for(driver);
	struct xfer_desc ds, dr;

	memset(p, 0, sizeof(*p));
	p->driver = driver;
	assert_int_equal(xfer_open(driver, &o, &p->sd), 0);
	assert_int_equal(xfer_open(driver, &o, &p->rd), 0);
	assert_int_equal(xfer_mr_alloc(p->sd, REGION, &p->src), 0);
	assert_int_equal(xfer_mr_alloc(p->rd, REGION, &p->dst), 0);
	assert_int_equal(xfer_mr_id(p->dst), 0);
	for (size_t i = 0; i < REGION; i++)
		((uint8_t *)xfer_mr_base(p->src))[i] = (uint8_t)(i * 7 + 3);
	assert_int_equal(xfer_ep_create(p->sd, &p->s), 0);
	assert_int_equal(xfer_ep_create(p->rd, &p->r), 0);
	assert_int_equal(xfer_local_desc(p->s, &ds), 0);
	assert_int_equal(xfer_local_desc(p->r, &dr), 0);
	/* In one process the descriptor's fds are valid as they are. */
	assert_int_equal(xfer_connect(p->s, &dr), 0);
	assert_int_equal(xfer_connect(p->r, &ds), 0);
}

static void pair_close(struct pair *p)
{
	xfer_ep_destroy(p->s);
	xfer_ep_destroy(p->r);
	xfer_mr_dereg(p->src);
	xfer_mr_dereg(p->dst);
	xfer_close(p->sd);
	xfer_close(p->rd);
}

/*
 * Polls both endpoints until `want` completions have come from `from`
 * (the other is polled too: loopback delivers on the receiver's poll).
 */
static int collect(struct xfer_ep *from, struct xfer_ep *other, struct xfer_wc *out, int want)
{
	int got = 0;

	while (got < want) {
		struct xfer_wc wc[8];
		struct pollfd pf[2] = { { .fd = xfer_event_fd(from), .events = POLLIN },
					{ .fd = other ? xfer_event_fd(other) : -1,
					  .events = POLLIN } };
		int n = xfer_poll(from, wc, (unsigned)(want - got < 8 ? want - got : 8));

		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			out[got] = wc[i];
			/* Keep a message's bytes: the pointer lasts until the next poll. */
			if (wc[i].op == XFER_WC_RECV_MSG) {
				static uint8_t keep[64][XFER_MSG_MAX];
				memcpy(keep[got % 64], wc[i].msg, wc[i].len);
				out[got].msg = keep[got % 64];
			}
			got++;
		}
		if (got == want)
			break;
		if (other) {
			struct xfer_wc o[8];
			int m = xfer_poll(other, o, 8);
			assert_true(m == 0 || m < 0); /* nothing expected there meanwhile */
		}
		if (n == 0)
			assert_true(poll(pf, other ? 2 : 1, SAFETY_MS) > 0);
	}
	return got;
}

/* Waits until ep's connection has failed; returns the error. */
static int wait_error(struct xfer_ep *ep)
{
	for (;;) {
		struct xfer_wc wc[8];
		struct pollfd pf = { .fd = xfer_event_fd(ep), .events = POLLIN };
		int n = xfer_poll(ep, wc, 8);

		if (n < 0)
			return n;
		if (n == 0)
			assert_true(poll(&pf, 1, SAFETY_MS) > 0);
	}
}

static struct xfer_write wr1(struct pair *p, uint64_t id, uint64_t soff, uint64_t len,
			     uint32_t region, uint64_t roff, struct xfer_sge *sg)
{
	*sg = (struct xfer_sge){ .mr = p->src, .offset = soff, .len = len };
	return (struct xfer_write){
		.wr_id = id, .sg = sg, .nsg = 1, .remote_region = region, .remote_offset = roff
	};
}

/* --- round trips -------------------------------------------------------------- */

static void round_trip(const char *driver)
{
	struct pair p;
	struct xfer_wc wc[4];
	struct xfer_sge sg[2] = { 0 };
	struct xfer_write w;
	struct xfer_stats st;
	uint8_t *src, *dst;
	const char hello[] = "completion record: req 42 epoch 7";

	pair_open(&p, driver);
	src = xfer_mr_base(p.src);
	dst = xfer_mr_base(p.dst);

	/* Two scatter entries gathered into one remote range, with an immediate. */
	sg[0] = (struct xfer_sge){ .mr = p.src, .offset = 100, .len = 3000 };
	sg[1] = (struct xfer_sge){ .mr = p.src, .offset = 20000, .len = 5000 };
	w = (struct xfer_write){ .wr_id = 11,
				 .sg = sg,
				 .nsg = 2,
				 .remote_region = 0,
				 .remote_offset = 4096,
				 .with_imm = true,
				 .imm = 0xfeedbeef };
	assert_int_equal(xfer_post_write(p.s, &w), 0);
	assert_int_equal(collect(p.r, p.s, wc, 1), 1);
	assert_int_equal(wc[0].op, XFER_WC_RECV_IMM);
	assert_int_equal(wc[0].status, XFER_WC_OK);
	assert_int_equal(wc[0].imm, 0xfeedbeef);
	assert_int_equal(wc[0].region, 0);
	assert_int_equal(wc[0].offset, 4096);
	assert_int_equal(wc[0].len, 8000);
	assert_memory_equal(dst + 4096, src + 100, 3000);
	assert_memory_equal(dst + 4096 + 3000, src + 20000, 5000);
	assert_int_equal(collect(p.s, p.r, wc, 1), 1);
	assert_int_equal(wc[0].op, XFER_WC_WRITE);
	assert_int_equal(wc[0].status, XFER_WC_OK);
	assert_int_equal(wc[0].wr_id, 11);

	/* Without immediate: only the sender hears of it. */
	w = wr1(&p, 12, 0, REGION, 0, 0, sg);
	assert_int_equal(xfer_post_write(p.s, &w), 0);
	assert_int_equal(collect(p.s, p.r, wc, 1), 1);
	assert_int_equal(wc[0].wr_id, 12);
	assert_int_equal(wc[0].status, XFER_WC_OK);
	assert_memory_equal(dst, src, REGION);

	/* Messages, both ways. */
	assert_int_equal(xfer_post_msg(p.s, 13, hello, sizeof(hello)), 0);
	assert_int_equal(collect(p.r, p.s, wc, 1), 1);
	assert_int_equal(wc[0].op, XFER_WC_RECV_MSG);
	assert_int_equal(wc[0].len, sizeof(hello));
	assert_memory_equal(wc[0].msg, hello, sizeof(hello));
	assert_int_equal(collect(p.s, p.r, wc, 1), 1);
	assert_int_equal(wc[0].op, XFER_WC_MSG);
	assert_int_equal(wc[0].wr_id, 13);
	assert_int_equal(xfer_post_msg(p.r, 14, "ack", 3), 0);
	assert_int_equal(collect(p.s, p.r, wc, 1), 1);
	assert_int_equal(wc[0].op, XFER_WC_RECV_MSG);
	assert_memory_equal(wc[0].msg, "ack", 3);
	assert_int_equal(collect(p.r, p.s, wc, 1), 1);
	assert_int_equal(wc[0].wr_id, 14);

	/* Local argument checks. */
	assert_int_equal(xfer_post_msg(p.s, 1, hello, 0), -EMSGSIZE);
	{
		static uint8_t big[XFER_MSG_MAX + 1];
		assert_int_equal(xfer_post_msg(p.s, 1, big, sizeof(big)), -EMSGSIZE);
	}
	w = wr1(&p, 1, REGION - 10, 11, 0, 0, sg); /* past the local region */
	assert_int_equal(xfer_post_write(p.s, &w), -ERANGE);
	w = wr1(&p, 1, 0, 0, 0, 0, sg); /* zero length */
	assert_int_equal(xfer_post_write(p.s, &w), -ERANGE);
	w.nsg = 0;
	assert_int_equal(xfer_post_write(p.s, &w), -EINVAL);

	xfer_ep_stats(p.s, &st);
	assert_int_equal(st.writes, 2);
	assert_int_equal(st.msgs, 1);
	xfer_ep_stats(p.r, &st);
	assert_int_equal(st.rx_msgs, 1);
	assert_int_equal(st.rx_rejected, 0);
	pair_close(&p);
}

static void test_roundtrip_loopback(void **state)
{
	round_trip("loopback");
}

static void test_roundtrip_shm(void **state)
{
	round_trip("shm");
}

static void test_roundtrip_tcp(void **state)
{
	round_trip("tcp");
}

/* --- bounds ---------------------------------------------------------------------- */

static void bounds(const char *driver, bool forge)
{
	struct pair p;
	struct xfer_wc wc[2];
	struct xfer_sge sg;
	struct xfer_write w;
	struct xfer_stats st;
	struct xfer_mr *mr;
	static const struct {
		uint32_t region;
		uint64_t off, len;
	} bad[] = {
		{ 0, REGION - 100, 101 },   /* one byte past the end */
		{ 0, REGION, 1 },	    /* at the end */
		{ 0, UINT64_MAX - 10, 64 }, /* offset + len overflows */
		{ 0, UINT64_MAX, 1 },
		{ 7, 0, 16 }, /* no such region */
		{ 1, 0, 16 }, /* nothing registered there */
		{ 0xffffffffu, 0, 16 },
	};
	uint8_t *dst;
	cap_start();
	pair_open(&p, driver);
	dst = xfer_mr_base(p.dst);
	xfer_test_forge(p.s, forge);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		w = wr1(&p, 100 + i, 0, bad[i].len, bad[i].region, bad[i].off, &sg);
		w.with_imm = true;
		assert_int_equal(xfer_post_write(p.s, &w), 0);
		assert_int_equal(collect(p.s, p.r, wc, 1), 1);
		assert_int_equal(wc[0].op, XFER_WC_WRITE);
		assert_int_equal(wc[0].wr_id, 100 + i);
		assert_int_equal(wc[0].status, XFER_WC_REMOTE_ACCESS);
	}
	/* Nothing landed, nothing announced. */
	for (size_t i = 0; i < REGION; i++)
		assert_int_equal(dst[i], 0);
	assert_int_equal(xfer_poll(p.r, wc, 2), 0);
	xfer_ep_stats(p.r, &st);
	/* shm refuses at the sender unless forged; the receiver counts what reaches it. */
	assert_int_equal(st.rx_rejected,
			 strcmp(driver, "shm") == 0 && !forge ? 0 : sizeof(bad) / sizeof(bad[0]));
	assert_int_equal(st.rx_writes, 0);
	xfer_ep_stats(p.s, &st);
	assert_int_equal(st.tx_failed, sizeof(bad) / sizeof(bad[0]));

	/* The receiver's check on its own: zero and huge lengths, overflow. */
	assert_int_equal(xfer_check_rx(p.r, 0, 0, 0, &mr), -EINVAL);
	assert_int_equal(xfer_check_rx(p.r, 0, 0, UINT64_MAX, &mr), -ERANGE);
	assert_int_equal(xfer_check_rx(p.r, 0, 8, UINT64_MAX - 4, &mr), -ERANGE);
	assert_int_equal(xfer_check_rx(p.r, 0, REGION, 0, &mr), -EINVAL);
	assert_int_equal(xfer_check_rx(p.r, 0, 0, REGION, &mr), 0);
	assert_ptr_equal(mr, p.dst);
	assert_true(cap_contains("rejected") || cap_contains("refused"));
	cap_stop();

	/* Still usable afterwards. */
	w = wr1(&p, 1, 0, 64, 0, REGION - 64, &sg);
	assert_int_equal(xfer_post_write(p.s, &w), 0);
	assert_int_equal(collect(p.s, p.r, wc, 1), 1);
	assert_int_equal(wc[0].status, XFER_WC_OK);
	pair_close(&p);
}

static void test_bounds_loopback(void **state)
{
	bounds("loopback", false);
}

static void test_bounds_shm(void **state)
{
	bounds("shm", false);
}

static void test_bounds_shm_forged(void **state)
{
	bounds("shm", true);
}

static void test_bounds_tcp(void **state)
{
	bounds("tcp", false);
}

/* --- event fd ------------------------------------------------------------------- */

static void wakes(const char *driver)
{
	struct pair p;
	struct xfer_wc wc[2];
	struct pollfd pf;

	pair_open(&p, driver);
	assert_int_equal(xfer_poll(p.r, wc, 2), 0); /* arms the eventfd */
	pf = (struct pollfd){ .fd = xfer_event_fd(p.r), .events = POLLIN };
	assert_int_equal(xfer_post_msg(p.s, 1, "wake", 4), 0);
	assert_int_equal(poll(&pf, 1, SAFETY_MS), 1);
	assert_true(pf.revents & POLLIN);
	assert_int_equal(xfer_poll(p.r, wc, 2), 1);
	assert_int_equal(wc[0].op, XFER_WC_RECV_MSG);
	/* Drained and re-armed: not readable until something new arrives. */
	assert_int_equal(xfer_poll(p.r, wc, 2), 0);
	pf.revents = 0;
	assert_int_equal(poll(&pf, 1, 0), 0);
	assert_int_equal(collect(p.s, p.r, wc, 1), 1);
	pair_close(&p);
}

static void test_eventfd_wakes(void **state)
{
	wakes("loopback");
	wakes("shm");
	wakes("tcp");
}

/* --- shm across fork ---------------------------------------------------------------- */

/* The sender (prefill) side, in the child: exit status 0 when all went well. */
static int child_sender(int sock)
{
	struct xfer_dev *dev;
	struct xfer_mr *src;
	struct xfer_ep *ep;
	struct xfer_desc peer, mine;
	struct xfer_sge sg;
	struct xfer_write w;
	struct xfer_wc wc[4];
	int got = 0;

	static uint8_t buf[REGION]; /* the caller's memory: a write source only */

	if (xfer_desc_recv(sock, &peer) || xfer_open("shm", NULL, &dev) ||
	    xfer_mr_reg(dev, buf, sizeof(buf), &src) || xfer_ep_create(dev, &ep))
		return 1;
	memset(xfer_mr_base(src), 0xa5, REGION);
	if (xfer_local_desc(ep, &mine) || xfer_desc_send(sock, &mine) || xfer_connect(ep, &peer))
		return 2;
	xfer_desc_close_fds(&peer);
	sg = (struct xfer_sge){ .mr = src, .offset = 0, .len = REGION / 2 };
	w = (struct xfer_write){ .wr_id = 1,
				 .sg = &sg,
				 .nsg = 1,
				 .remote_region = 0,
				 .remote_offset = REGION / 2,
				 .with_imm = true,
				 .imm = 77 };
	if (xfer_post_write(ep, &w) || xfer_post_msg(ep, 2, "done", 4))
		return 3;
	/* A range the child's own check refuses. */
	w.wr_id = 3;
	w.remote_offset = REGION - 1;
	if (xfer_post_write(ep, &w))
		return 4;
	while (got < 3) {
		int n = xfer_poll(ep, wc + got, 3 - (unsigned)got);
		if (n < 0)
			return 5;
		got += n;
	}
	if (wc[0].status != XFER_WC_OK || wc[1].status != XFER_WC_OK ||
	    wc[2].status != XFER_WC_REMOTE_ACCESS)
		return 6;
	/* Wait for the parent's go-ahead before unmapping (it reads meanwhile). */
	if (read(sock, &got, 1) != 1)
		return 7;
	xfer_ep_destroy(ep);
	xfer_mr_dereg(src);
	xfer_close(dev);
	return 0;
}

static void test_shm_fork(void **state)
{
	struct xfer_dev *dev;
	struct xfer_mr *dst;
	struct xfer_ep *ep;
	struct xfer_desc mine, peer;
	struct xfer_wc wc[2];
	int sv[2], status;
	uint8_t *d;
	pid_t pid;

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(xfer_open("shm", NULL, &dev), 0);
	assert_int_equal(xfer_mr_alloc(dev, REGION, &dst), 0);
	assert_int_equal(xfer_ep_create(dev, &ep), 0);
	assert_int_equal(xfer_local_desc(ep, &mine), 0);
	assert_int_equal(mine.nfds, 3); /* region, ring, eventfd */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		_exit(child_sender(sv[1]));
	}
	close(sv[1]);
	assert_int_equal(xfer_desc_send(sv[0], &mine), 0);
	assert_int_equal(xfer_desc_recv(sv[0], &peer), 0);
	assert_int_equal(peer.nfds, 2); /* its ring and eventfd; its region is local-only */
	assert_int_equal(xfer_connect(ep, &peer), 0);
	xfer_desc_close_fds(&peer);
	assert_int_equal(collect(ep, NULL, wc, 2), 2);
	assert_int_equal(wc[0].op, XFER_WC_RECV_IMM);
	assert_int_equal(wc[0].imm, 77);
	assert_int_equal(wc[0].offset, REGION / 2);
	assert_int_equal(wc[1].op, XFER_WC_RECV_MSG);
	assert_memory_equal(wc[1].msg, "done", 4);
	d = xfer_mr_base(dst);
	for (size_t i = 0; i < REGION; i++)
		assert_int_equal(d[i], i < REGION / 2 ? 0 : 0xa5);
	assert_int_equal(write(sv[0], "g", 1), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(sv[0]);
	xfer_ep_destroy(ep);
	xfer_mr_dereg(dst);
	xfer_close(dev);
}

/* Descriptor without its fds: fetched with pidfd_getfd (same process here). */
static void test_shm_pidfd_fallback(void **state)
{
	struct xfer_dev *a, *b;
	struct xfer_mr *src, *dst;
	struct xfer_ep *ea, *eb;
	struct xfer_desc da, db;
	struct xfer_sge sg;
	struct xfer_write w;
	struct xfer_wc wc[1];
	int ret;

	assert_int_equal(xfer_open("shm", NULL, &a), 0);
	assert_int_equal(xfer_open("shm", NULL, &b), 0);
	assert_int_equal(xfer_mr_alloc(a, 4096, &src), 0);
	assert_int_equal(xfer_mr_alloc(b, 4096, &dst), 0);
	assert_int_equal(xfer_ep_create(a, &ea), 0);
	assert_int_equal(xfer_ep_create(b, &eb), 0);
	assert_int_equal(xfer_local_desc(ea, &da), 0);
	assert_int_equal(xfer_local_desc(eb, &db), 0);
	da.nfds = db.nfds = 0;
	cap_start();
	ret = xfer_connect(ea, &db);
	cap_stop();
	if (ret != 0) {
		/* No ptrace access here (e.g. a container without pidfd_getfd). */
		print_message("[  SKIP    ] pidfd_getfd refused: %s\n", strerror(-ret));
	} else {
		assert_int_equal(xfer_connect(eb, &da), 0);
		memset(xfer_mr_base(src), 0x3c, 4096);
		sg = (struct xfer_sge){ .mr = src, .len = 4096 };
		w = (struct xfer_write){ .wr_id = 9, .sg = &sg, .nsg = 1, .with_imm = true };
		assert_int_equal(xfer_post_write(ea, &w), 0);
		assert_int_equal(collect(eb, NULL, wc, 1), 1);
		assert_int_equal(((uint8_t *)xfer_mr_base(dst))[4095], 0x3c);
	}
	xfer_ep_destroy(ea);
	xfer_ep_destroy(eb);
	xfer_mr_dereg(src);
	xfer_mr_dereg(dst);
	xfer_close(a);
	xfer_close(b);
}

/* A peer handing an unsealed memfd, or a short one, or a pipe for its eventfd. */
static void test_shm_lying_peer(void **state)
{
	struct xfer_dev *a, *b;
	struct xfer_mr *dst;
	struct xfer_ep *ea, *eb;
	struct xfer_desc db, bad;
	int unsealed, pipefd[2];

	assert_int_equal(xfer_open("shm", NULL, &a), 0);
	assert_int_equal(xfer_open("shm", NULL, &b), 0);
	assert_int_equal(xfer_mr_alloc(b, REGION, &dst), 0);
	assert_int_equal(xfer_ep_create(a, &ea), 0);
	assert_int_equal(xfer_ep_create(b, &eb), 0);
	assert_int_equal(xfer_local_desc(eb, &db), 0);
	unsealed = memfd_create("liar", MFD_CLOEXEC);
	assert_true(unsealed >= 0);
	assert_int_equal(ftruncate(unsealed, REGION), 0);
	assert_int_equal(pipe(pipefd), 0);

	cap_start();
	bad = db;
	bad.fds[0] = unsealed;
	assert_int_equal(xfer_connect(ea, &bad), -EPROTO);
	assert_true(cap_contains("not sealed"));
	bad = db;
	bad.fds[0] = bad.fds[1]; /* the ring memfd: sealed but another size is fine... */
	bad.fds[1] = unsealed;	 /* ...the ring must be sealed */
	assert_int_equal(xfer_connect(ea, &bad), -EPROTO);
	bad = db;
	bad.fds[2] = pipefd[1];
	assert_int_equal(xfer_connect(ea, &bad), -EPROTO);
	assert_true(cap_contains("not an eventfd"));
	bad = db;
	bad.nfds = 2; /* the eventfd index now points past the fds */
	assert_int_equal(xfer_connect(ea, &bad), -EPROTO);
	bad = db;
	bad.len -= 1;
	assert_int_equal(xfer_connect(ea, &bad), -EPROTO);
	assert_true(cap_contains("bad peer descriptor"));
	cap_stop();

	close(unsealed);
	close(pipefd[0]);
	close(pipefd[1]);
	xfer_ep_destroy(ea);
	xfer_ep_destroy(eb);
	xfer_mr_dereg(dst);
	xfer_close(a);
	xfer_close(b);
}

/* Hugepages asked for: MFD_HUGETLB when the system has them, else a logged fallback. */
static void test_shm_hugepages(void **state)
{
	struct xfer_opts o = { .hugepages = true };
	struct xfer_dev *a, *b;
	struct xfer_mr *src, *dst;
	struct xfer_ep *ea, *eb;
	struct xfer_desc da, db;
	struct xfer_sge sg;
	struct xfer_write w;
	struct xfer_wc wc[1];

	cap_start();
	assert_int_equal(xfer_open("shm", &o, &a), 0);
	assert_int_equal(xfer_open("shm", &o, &b), 0);
	assert_int_equal(xfer_mr_alloc(a, 3 << 20, &src), 0);
	assert_int_equal(xfer_mr_alloc(b, 3 << 20, &dst), 0);
	if (cap_contains("falling back to 4 KiB pages"))
		print_message("shm: no hugepages here: the fallback was taken and logged\n");
	cap_stop();
	assert_int_equal(xfer_ep_create(a, &ea), 0);
	assert_int_equal(xfer_ep_create(b, &eb), 0);
	assert_int_equal(xfer_local_desc(ea, &da), 0);
	assert_int_equal(xfer_local_desc(eb, &db), 0);
	assert_int_equal(xfer_connect(ea, &db), 0);
	assert_int_equal(xfer_connect(eb, &da), 0);
	memset(xfer_mr_base(src), 0x42, 3 << 20);
	sg = (struct xfer_sge){ .mr = src, .len = 3 << 20 };
	w = (struct xfer_write){ .wr_id = 1, .sg = &sg, .nsg = 1, .with_imm = true };
	assert_int_equal(xfer_post_write(ea, &w), 0);
	assert_int_equal(collect(eb, NULL, wc, 1), 1);
	assert_int_equal(wc[0].len, 3 << 20);
	assert_int_equal(((uint8_t *)xfer_mr_base(dst))[(3 << 20) - 1], 0x42);
	xfer_ep_destroy(ea);
	xfer_ep_destroy(eb);
	xfer_mr_dereg(src);
	xfer_mr_dereg(dst);
	xfer_close(a);
	xfer_close(b);
}

/* --- descriptors ------------------------------------------------------------------- */

static void test_desc_decode(void **state)
{
	struct xfer_peer in = { .driver = XFER_DRV_TCP,
				.token = 5,
				.pid = 1,
				.family = 4,
				.port = 99,
				.ring_fd = -1,
				.ev_fd = -1,
				.ring_fdnum = -1,
				.ev_fdnum = -1,
				.n_regions = 2 };
	struct xfer_peer out;
	struct xfer_desc d;
	struct xfer_wire_desc *w = (struct xfer_wire_desc *)d.bytes;
	struct xfer_wire_region *r = (struct xfer_wire_region *)(d.bytes + sizeof(*w));
	char why[160];

	in.region[0] = (typeof(in.region[0])){ .id = 0, .fd = -1, .fdnum = -1, .len = 4096 };
	in.region[1] = (typeof(in.region[0])){ .id = 3, .fd = -1, .fdnum = -1, .len = 1 << 20 };
	assert_int_equal(xfer_desc_encode(&in, &d), 0);
	assert_int_equal(d.len, 64 + 2 * 24);
	assert_int_equal(xfer_desc_decode(d.bytes, d.len, 0, &out, why, sizeof(why)), 0);
	assert_int_equal(out.region[1].id, 3);
	assert_int_equal(out.region[1].len, 1 << 20);
	assert_int_equal(out.port, 99);

	for (size_t n = 0; n < d.len; n++)
		assert_int_equal(xfer_desc_decode(d.bytes, n, 0, &out, why, sizeof(why)), -EPROTO);
#define EXPECT_BAD(mutate, text)                                                              \
	do {                                                                                  \
		assert_int_equal(xfer_desc_encode(&in, &d), 0);                               \
		mutate;                                                                       \
		assert_int_equal(xfer_desc_decode(d.bytes, d.len, 0, &out, why, sizeof(why)), \
				 -EPROTO);                                                    \
		assert_non_null(strstr(why, text));                                           \
	} while (0)
	EXPECT_BAD(w->magic ^= 1, "magic");
	EXPECT_BAD(w->version = 9, "version");
	EXPECT_BAD(w->n_regions = 9, "regions");
	EXPECT_BAD(w->n_regions = 1, "bytes for 1 regions");
	EXPECT_BAD(w->token = 0, "token");
	EXPECT_BAD(w->family = 5, "family");
	EXPECT_BAD(r[1].id = 0, "twice");
	EXPECT_BAD(r[1].id = 8, "out of range");
	EXPECT_BAD(r[0].len = 0, "length");
	EXPECT_BAD(r[0].len = UINT64_MAX, "length");
	EXPECT_BAD(r[0].fd = 8, "fd index");
	EXPECT_BAD(r[0].rsvd = 1, "reserved");
	EXPECT_BAD(w->ev_fd = -2, "index");
#undef EXPECT_BAD
	/* fd indexes are checked against the fds that came. */
	in.region[0].fd = 2;
	assert_int_equal(xfer_desc_encode(&in, &d), 0);
	assert_int_equal(xfer_desc_decode(d.bytes, d.len, 2, &out, why, sizeof(why)), -EPROTO);
	assert_int_equal(xfer_desc_decode(d.bytes, d.len, 3, &out, why, sizeof(why)), 0);
}

/* A descriptor for another driver, or the endpoint's own. */
static void test_connect_mismatch(void **state)
{
	struct xfer_dev *lb, *shm;
	struct xfer_ep *a, *b, *c;
	struct xfer_desc da, dc;

	assert_int_equal(xfer_open("loopback", NULL, &lb), 0);
	assert_int_equal(xfer_open("shm", NULL, &shm), 0);
	assert_int_equal(xfer_ep_create(lb, &a), 0);
	assert_int_equal(xfer_ep_create(lb, &b), 0);
	assert_int_equal(xfer_ep_create(shm, &c), 0);
	assert_int_equal(xfer_local_desc(a, &da), 0);
	assert_int_equal(xfer_local_desc(c, &dc), 0);
	cap_start();
	assert_int_equal(xfer_connect(b, &dc), -EPROTO);
	assert_true(cap_contains("for driver"));
	assert_int_equal(xfer_connect(a, &da), -EPROTO);
	assert_int_equal(xfer_post_msg(b, 1, "x", 1), -ENOTCONN);
	assert_int_equal(xfer_loopback_inject(c, XFER_FAULT_DROP, 1), -EOPNOTSUPP);
	cap_stop();
	assert_int_equal(xfer_connect(b, &da), 0);
	assert_int_equal(xfer_connect(b, &da), -EISCONN);
	xfer_ep_destroy(a);
	/* The peer is gone: operations flush. */
	assert_int_equal(xfer_post_msg(b, 1, "x", 1), 0);
	{
		struct xfer_wc wc[1];
		assert_int_equal(xfer_poll(b, wc, 1), 1);
		assert_int_equal(wc[0].status, XFER_WC_FLUSHED);
	}
	xfer_ep_destroy(b);
	xfer_ep_destroy(c);
	xfer_close(lb);
	xfer_close(shm);
}

/* --- tcp security ---------------------------------------------------------------- */

static void test_tcp_wrong_psk(void **state)
{
	struct xfer_opts o1 = opts_for("tcp"), o2 = opts_for("tcp");
	static const uint8_t other[] = "another-pre-shared-key-0123456789";
	struct xfer_dev *d1, *d2;
	struct xfer_ep *e1, *e2;
	struct xfer_desc x1, x2;
	struct xfer_stats st;

	o2.psk = other;
	o2.psk_len = sizeof(other) - 1;
	assert_int_equal(xfer_open("tcp", &o1, &d1), 0);
	assert_int_equal(xfer_open("tcp", &o2, &d2), 0);
	assert_int_equal(xfer_ep_create(d1, &e1), 0);
	assert_int_equal(xfer_ep_create(d2, &e2), 0);
	assert_int_equal(xfer_local_desc(e1, &x1), 0);
	assert_int_equal(xfer_local_desc(e2, &x2), 0);
	cap_start();
	assert_int_equal(xfer_connect(e1, &x2), 0);
	assert_int_equal(xfer_connect(e2, &x1), 0);
	assert_int_equal(xfer_post_msg(e1, 1, "let me in", 9), -EACCES);
	assert_int_equal(wait_error(e1), -EACCES);
	assert_int_equal(wait_error(e2), -EACCES);
	assert_true(cap_contains("wrong pre-shared key"));
	cap_stop();
	xfer_ep_stats(e2, &st);
	assert_int_equal(st.rx_msgs, 0);
	xfer_ep_destroy(e1);
	xfer_ep_destroy(e2);
	xfer_close(d1);
	xfer_close(d2);
}

static long write_frame(struct pair *p, uint64_t wr_id, const void *payload, uint32_t len,
			uint8_t *out, size_t cap)
{
	struct xfer_tcp_hdr h = { .type = XFER_TCP_WRITE,
				  .flags = XFER_TCP_F_LAST | XFER_TCP_F_IMM,
				  .wr_id = wr_id,
				  .region = 0,
				  .offset = 0,
				  .len = len,
				  .base = 256,
				  .total = len,
				  .imm = 5 };

	return xfer_tcp_test_frame(p->s, &h, payload, out, cap);
}

static void test_tcp_tampered(void **state)
{
	struct pair p;
	uint8_t frame[256], zero[64] = { 0 };
	struct xfer_stats st;
	long n;

	pair_open(&p, "tcp");
	n = write_frame(&p, 1, "sixteen bytes!!!", 16, frame, sizeof(frame));
	assert_int_equal(n, 64 + 16 + 32);
	frame[64 + 3] ^= 1;
	cap_start();
	assert_int_equal(xfer_tcp_test_raw(p.s, frame, (size_t)n, false), 0);
	assert_int_equal(wait_error(p.r), -EBADMSG);
	assert_true(cap_contains("bad HMAC"));
	cap_stop();
	assert_memory_equal((uint8_t *)xfer_mr_base(p.dst) + 256, zero, sizeof(zero));
	xfer_ep_stats(p.r, &st);
	assert_int_equal(st.bad_frames, 1);
	assert_int_equal(st.rx_writes, 0);
	/* A tampered header fails the same way. */
	pair_close(&p);
	pair_open(&p, "tcp");
	n = write_frame(&p, 1, "sixteen bytes!!!", 16, frame, sizeof(frame));
	frame[32] ^= 0x80; /* offset */
	cap_start();
	assert_int_equal(xfer_tcp_test_raw(p.s, frame, (size_t)n, false), 0);
	assert_true(wait_error(p.r) < 0);
	cap_stop();
	assert_memory_equal((uint8_t *)xfer_mr_base(p.dst) + 256, zero, sizeof(zero));
	pair_close(&p);
}

static void test_tcp_replay(void **state)
{
	struct pair p;
	uint8_t frame[256];
	struct xfer_wc wc[2];
	struct xfer_stats st;
	long n;

	pair_open(&p, "tcp");
	n = write_frame(&p, 1, "sixteen bytes!!!", 16, frame, sizeof(frame));
	assert_int_equal(xfer_tcp_test_raw(p.s, frame, (size_t)n, false), 0);
	assert_int_equal(collect(p.r, NULL, wc, 1), 1);
	assert_int_equal(wc[0].op, XFER_WC_RECV_IMM);
	assert_memory_equal((uint8_t *)xfer_mr_base(p.dst) + 256, "sixteen bytes!!!", 16);
	memset((uint8_t *)xfer_mr_base(p.dst) + 256, 0, 16);
	cap_start();
	assert_int_equal(xfer_tcp_test_raw(p.s, frame, (size_t)n, false), 0);
	assert_int_equal(wait_error(p.r), -EPROTO);
	assert_true(cap_contains("replayed"));
	cap_stop();
	assert_int_equal(((uint8_t *)xfer_mr_base(p.dst))[256], 0); /* not written again */
	xfer_ep_stats(p.r, &st);
	assert_int_equal(st.bad_frames, 1);
	assert_int_equal(st.rx_writes, 1);
	pair_close(&p);
}

static void test_tcp_truncated(void **state)
{
	uint8_t frame[256], zero[64] = { 0 };
	long n = 0;

	cap_start();
	for (long cut = 0; cut == 0 || cut < n; cut++) {
		struct pair p;
		struct xfer_stats st;
		int err;

		pair_open(&p, "tcp");
		n = write_frame(&p, 1, "sixteen bytes!!!", 16, frame, sizeof(frame));
		assert_int_equal(xfer_tcp_test_raw(p.s, frame, (size_t)cut, true), 0);
		err = wait_error(p.r);
		assert_int_equal(err, cut == 0 ? -ECONNRESET : -EPROTO);
		assert_memory_equal((uint8_t *)xfer_mr_base(p.dst) + 256, zero, sizeof(zero));
		xfer_ep_stats(p.r, &st);
		assert_int_equal(st.rx_writes, 0);
		assert_int_equal(st.bad_frames, cut == 0 ? 0 : 1);
		pair_close(&p);
	}
	assert_true(cap_contains("mid-frame"));
	cap_stop();
}

/* Frames that fail the header checks on their own. */
static void test_tcp_frame_codec(void **state)
{
	struct hmac_sha256 key;
	struct xfer_tcp_hdr h = { .type = XFER_TCP_MSG, .len = 5, .seq = 3 }, out;
	uint8_t buf[256];
	char why[160];
	long n;

	hmac_sha256_init(&key, fuzz_psk, sizeof(fuzz_psk) - 1);
	n = xfer_tcp_frame_build(&key, &h, "hello", buf, sizeof(buf));
	assert_int_equal(n, 64 + 5 + 32);
	assert_int_equal(xfer_tcp_frame_verify(&key, 3, buf, (size_t)n, &out, why, sizeof(why)), 0);
	assert_int_equal(xfer_tcp_frame_verify(&key, 4, buf, (size_t)n, &out, why, sizeof(why)),
			 -EPROTO);
	assert_non_null(strstr(why, "replayed"));
	for (long k = 0; k < n; k++)
		assert_true(xfer_tcp_frame_verify(&key, 3, buf, (size_t)k, &out, why, sizeof(why)) <
			    0);
	buf[70] ^= 1;
	assert_int_equal(xfer_tcp_frame_verify(&key, 3, buf, (size_t)n, &out, why, sizeof(why)),
			 -EBADMSG);
#define BAD_HDR(...)                                                                         \
	do {                                                                                 \
		struct xfer_tcp_hdr b = { __VA_ARGS__ };                                     \
		assert_true(xfer_tcp_frame_build(&key, &b, NULL, buf, sizeof(buf)) > 0 ||    \
			    b.len > 100);                                                    \
		assert_int_equal(xfer_tcp_hdr_decode(buf, &out, why, sizeof(why)), -EPROTO); \
	} while (0)
	BAD_HDR(.type = 0);
	BAD_HDR(.type = 9);
	BAD_HDR(.type = XFER_TCP_ACK, .flags = 1);
	BAD_HDR(.type = XFER_TCP_NACK, .status = 0);
	BAD_HDR(.type = XFER_TCP_MSG, .len = 0);
	BAD_HDR(.type = XFER_TCP_WRITE, .len = 0);
	BAD_HDR(.type = XFER_TCP_WRITE, .flags = XFER_TCP_F_IMM);
#undef BAD_HDR
	/* Lengths that do not fit the build buffer are checked on the header alone. */
	{
		struct xfer_tcp_hdr b = { .type = XFER_TCP_WRITE,
					  .len = XFER_TCP_CHUNK + 1,
					  .total = UINT64_MAX };
		struct xfer_tcp_hdr w;
		memset(&w, 0, sizeof(w));
		w.magic = XFER_TCP_FRAME_MAGIC;
		w.type = b.type;
		w.len = b.len;
		w.total = b.total;
		assert_int_equal(xfer_tcp_hdr_decode(&w, &out, why, sizeof(why)), -EPROTO);
		w.len = 16;
		w.total = 16;
		w.offset = UINT64_MAX;
		w.base = 0;
		assert_int_equal(xfer_tcp_hdr_decode(&w, &out, why, sizeof(why)), -EPROTO);
		w.offset = 8;
		w.base = 0;
		assert_int_equal(xfer_tcp_hdr_decode(&w, &out, why, sizeof(why)), -EPROTO);
		w.offset = 0;
		assert_int_equal(xfer_tcp_hdr_decode(&w, &out, why, sizeof(why)), 0);
	}
}

/* A write of several 1 MiB frames, gathered from scatter entries that straddle frame edges. */
static void test_tcp_large_write(void **state)
{
	struct xfer_opts o = opts_for("tcp");
	struct xfer_dev *d[2];
	struct xfer_mr *mr[2];
	struct xfer_ep *ep[2];
	struct xfer_desc x[2];
	struct xfer_wc wc[2];
	const size_t len = (3u << 20) + 4096;
	struct xfer_sge sg[3];
	struct xfer_write w;
	uint8_t *src, *dst;

	for (int i = 0; i < 2; i++) {
		assert_int_equal(xfer_open("tcp", &o, &d[i]), 0);
		assert_int_equal(xfer_mr_alloc(d[i], len, &mr[i]), 0);
		assert_int_equal(xfer_ep_create(d[i], &ep[i]), 0);
		assert_int_equal(xfer_local_desc(ep[i], &x[i]), 0);
	}
	assert_int_equal(xfer_connect(ep[0], &x[1]), 0);
	assert_int_equal(xfer_connect(ep[1], &x[0]), 0);
	src = xfer_mr_base(mr[0]);
	dst = xfer_mr_base(mr[1]);
	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 31 + (i >> 13));
	sg[0] = (struct xfer_sge){ .mr = mr[0], .offset = 5, .len = (1u << 20) - 3 };
	sg[1] = (struct xfer_sge){ .mr = mr[0], .offset = (1u << 20) + 11, .len = 1u << 20 };
	sg[2] = (struct xfer_sge){ .mr = mr[0], .offset = 2u << 20, .len = (1u << 20) + 1000 };
	w = (struct xfer_write){ .wr_id = 77,
				 .sg = sg,
				 .nsg = 3,
				 .remote_offset = 999,
				 .with_imm = true,
				 .imm = 0xabc };
	assert_int_equal(xfer_post_write(ep[0], &w), 0);
	assert_int_equal(collect(ep[1], NULL, wc, 1), 1);
	assert_int_equal(wc[0].op, XFER_WC_RECV_IMM);
	assert_int_equal(wc[0].offset, 999);
	assert_int_equal(wc[0].len, sg[0].len + sg[1].len + sg[2].len);
	assert_memory_equal(dst + 999, src + sg[0].offset, sg[0].len);
	assert_memory_equal(dst + 999 + sg[0].len, src + sg[1].offset, sg[1].len);
	assert_memory_equal(dst + 999 + sg[0].len + sg[1].len, src + sg[2].offset, sg[2].len);
	assert_int_equal(dst[998], 0);
	assert_int_equal(dst[999 + wc[0].len], 0);
	assert_int_equal(collect(ep[0], NULL, wc, 1), 1);
	assert_int_equal(wc[0].wr_id, 77);
	assert_int_equal(wc[0].status, XFER_WC_OK);
	for (int i = 0; i < 2; i++) {
		xfer_ep_destroy(ep[i]);
		xfer_mr_dereg(mr[i]);
		xfer_close(d[i]);
	}
}

/* A stranger connecting first (junk, or a hello for another endpoint) is dropped. */
static void test_tcp_stranger(void **state)
{
	struct pair p;
	struct xfer_opts o = opts_for("tcp");
	struct xfer_desc ds, dr;
	struct xfer_peer ps, pr, *acc;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct xfer_wc wc[1];
	char why[160], junk[64];
	int fd;

	memset(&p, 0, sizeof(p));
	assert_int_equal(xfer_open("tcp", &o, &p.sd), 0);
	assert_int_equal(xfer_open("tcp", &o, &p.rd), 0);
	assert_int_equal(xfer_mr_alloc(p.sd, REGION, &p.src), 0);
	assert_int_equal(xfer_mr_alloc(p.rd, REGION, &p.dst), 0);
	assert_int_equal(xfer_ep_create(p.sd, &p.s), 0);
	assert_int_equal(xfer_ep_create(p.rd, &p.r), 0);
	assert_int_equal(xfer_local_desc(p.s, &ds), 0);
	assert_int_equal(xfer_local_desc(p.r, &dr), 0);
	assert_int_equal(xfer_desc_decode(ds.bytes, ds.len, 0, &ps, why, sizeof(why)), 0);
	assert_int_equal(xfer_desc_decode(dr.bytes, dr.len, 0, &pr, why, sizeof(why)), 0);
	acc = ps.token > pr.token ? &ps : &pr; /* the larger token accepts */
	memcpy(&sa.sin_addr, acc->addr, 4);
	sa.sin_port = htons(acc->port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	memset(junk, 'J', sizeof(junk));
	assert_int_equal(write(fd, junk, sizeof(junk)), sizeof(junk));
	cap_start();
	assert_int_equal(xfer_connect(p.s, &dr), 0);
	assert_int_equal(xfer_connect(p.r, &ds), 0);
	assert_int_equal(xfer_post_msg(p.s, 1, "real", 4), 0);
	assert_int_equal(collect(p.r, NULL, wc, 1), 1);
	assert_memory_equal(wc[0].msg, "real", 4);
	assert_true(cap_contains("did not name this endpoint"));
	cap_stop();
	close(fd);
	pair_close(&p);
}

/* Both ends pushing large writes at once: neither may stall the other. */
struct bidi {
	struct xfer_ep *ep;
	struct xfer_mr *src;
	int ret;
};

static void *bidi_main(void *arg)
{
	struct bidi *b = arg;
	unsigned posted = 0, done = 0;
	const unsigned total = 48;

	while (done < total) {
		struct xfer_wc wc[16];
		struct pollfd pf = { .fd = xfer_event_fd(b->ep), .events = POLLIN };
		int n;

		while (posted < total) {
			struct xfer_sge sg = { .mr = b->src, .len = xfer_mr_len(b->src) };
			struct xfer_write w = { .wr_id = posted, .sg = &sg, .nsg = 1 };
			int ret = xfer_post_write(b->ep, &w);
			if (ret == -EAGAIN)
				break;
			if (ret) {
				b->ret = ret;
				return NULL;
			}
			posted++;
		}
		n = xfer_poll(b->ep, wc, 16);
		if (n < 0) {
			b->ret = n;
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			if (wc[i].op != XFER_WC_WRITE || wc[i].status != XFER_WC_OK) {
				b->ret = -EIO;
				return NULL;
			}
			done++;
		}
		if (n == 0 && poll(&pf, 1, SAFETY_MS) <= 0) {
			b->ret = -ETIMEDOUT;
			return NULL;
		}
	}
	return NULL;
}

static void test_tcp_bidirectional(void **state)
{
	struct xfer_opts o = opts_for("tcp");
	struct xfer_dev *d[2];
	struct xfer_mr *mr[2], *src[2];
	struct xfer_ep *ep[2];
	struct xfer_desc x[2];
	struct bidi b[2];
	pthread_t th[2];
	const size_t len = 3u << 20; /* 3 chunks per write; 48 writes = 144 MiB each way */

	for (int i = 0; i < 2; i++) {
		assert_int_equal(xfer_open("tcp", &o, &d[i]), 0);
		assert_int_equal(xfer_mr_alloc(d[i], len, &mr[i]), 0);	/* id 0: the target */
		assert_int_equal(xfer_mr_alloc(d[i], len, &src[i]), 0); /* id 1: the source */
		assert_int_equal(xfer_ep_create(d[i], &ep[i]), 0);
		assert_int_equal(xfer_local_desc(ep[i], &x[i]), 0);
	}
	assert_int_equal(xfer_connect(ep[0], &x[1]), 0);
	assert_int_equal(xfer_connect(ep[1], &x[0]), 0);
	for (int i = 0; i < 2; i++) {
		b[i] = (struct bidi){ .ep = ep[i], .src = src[i] };
		assert_int_equal(pthread_create(&th[i], NULL, bidi_main, &b[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(b[i].ret, 0);
	}
	for (int i = 0; i < 2; i++) {
		xfer_ep_destroy(ep[i]);
		xfer_mr_dereg(src[i]);
		xfer_mr_dereg(mr[i]);
		xfer_close(d[i]);
	}
}

/* --- loopback faults --------------------------------------------------------------- */

static void expect_msgs(struct pair *p, const char *want)
{
	struct xfer_wc wc[16];
	size_t n = strlen(want);

	assert_int_equal(collect(p->r, NULL, wc, (int)n), (int)n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(wc[i].op, XFER_WC_RECV_MSG);
		assert_int_equal(((const char *)wc[i].msg)[0], want[i]);
	}
	assert_int_equal(xfer_poll(p->r, wc, 16), 0);
}

static void post_msgs(struct pair *p, const char *which)
{
	for (const char *c = which; *c; c++)
		assert_int_equal(xfer_post_msg(p->s, (uint64_t)*c, c, 1), 0);
}

static void drain_sender(struct pair *p, int n)
{
	struct xfer_wc wc[16];

	assert_int_equal(collect(p->s, NULL, wc, n), n);
}

static void test_loopback_faults(void **state)
{
	struct pair p;
	struct xfer_wc wc[4];
	struct xfer_sge sg;
	struct xfer_write w;
	uint8_t *dst, *src;

	pair_open(&p, "loopback");
	dst = xfer_mr_base(p.dst);
	src = xfer_mr_base(p.src);

	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_DROP, 2), 0);
	post_msgs(&p, "abc");
	expect_msgs(&p, "ac");
	drain_sender(&p, 2);
	assert_int_equal(xfer_poll(p.s, wc, 4), 0); /* the dropped one never completes */

	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_DELAY, 1), 0);
	post_msgs(&p, "de");
	expect_msgs(&p, "e");
	assert_int_equal(xfer_loopback_release(p.s), 1);
	expect_msgs(&p, "d");
	drain_sender(&p, 2);

	/* Delivered twice, completed once: the sender's count of operations in flight holds. */
	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_DUPLICATE, 1), 0);
	post_msgs(&p, "f");
	expect_msgs(&p, "ff");
	drain_sender(&p, 1);
	assert_int_equal(xfer_poll(p.s, wc, 4), 0);

	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_REORDER, 1), 0);
	post_msgs(&p, "gh");
	expect_msgs(&p, "hg");
	drain_sender(&p, 2);

	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_FAIL, 1), 0);
	post_msgs(&p, "i");
	assert_int_equal(collect(p.s, NULL, wc, 1), 1);
	assert_int_equal(wc[0].status, XFER_WC_LOCAL);
	assert_int_equal(xfer_poll(p.r, wc, 4), 0);

	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_CORRUPT, 1), 0);
	w = wr1(&p, 5, 0, 100, 0, 0, &sg);
	w.with_imm = true;
	assert_int_equal(xfer_post_write(p.s, &w), 0);
	assert_int_equal(collect(p.r, p.s, wc, 1), 1);
	assert_memory_equal(dst, src, 50);
	assert_int_equal(dst[50], src[50] ^ 0x5a);
	assert_memory_equal(dst + 51, src + 51, 49);
	drain_sender(&p, 1);

	/* A reordered operation with nothing after it comes out on release. */
	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_REORDER, 1), 0);
	post_msgs(&p, "j");
	assert_int_equal(xfer_poll(p.r, wc, 4), 0);
	assert_int_equal(xfer_loopback_release(p.s), 1);
	expect_msgs(&p, "j");
	drain_sender(&p, 1);

	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_DROP, 0), -EINVAL);
	/* Faults left armed and operations held are freed with the endpoint. */
	assert_int_equal(xfer_loopback_inject(p.s, XFER_FAULT_DELAY, 1), 0);
	post_msgs(&p, "k");
	pair_close(&p);
}

/* Depth: -EAGAIN once depth operations are in flight. */
static void test_depth(void **state)
{
	struct pair p;
	struct xfer_wc wc[32];

	pair_open(&p, "loopback");
	for (int i = 0; i < 16; i++)
		assert_int_equal(xfer_post_msg(p.s, (uint64_t)i, "x", 1), 0);
	assert_int_equal(xfer_post_msg(p.s, 99, "x", 1), -EAGAIN);
	assert_int_equal(collect(p.r, NULL, wc, 16), 16);
	assert_int_equal(collect(p.s, NULL, wc, 16), 16);
	assert_int_equal(xfer_post_msg(p.s, 99, "x", 1), 0);
	pair_close(&p);
}

/* Every allocation failure on the setup path returns -ENOMEM and leaks nothing. */
static void test_alloc_failures(void **state)
{
	const char *drv[] = { "loopback", "shm", "tcp" };

	for (size_t d = 0; d < 3; d++) {
		for (unsigned long n = 1;; n++) {
			struct xfer_opts o = opts_for(drv[d]);
			struct xfer_dev *dev = NULL;
			struct xfer_mr *mr = NULL;
			struct xfer_ep *ep = NULL;
			int ret;

			duet_mem_fail_at(n);
			cap_start();
			ret = xfer_open(drv[d], &o, &dev);
			if (ret == 0)
				ret = xfer_mr_alloc(dev, 4096, &mr);
			if (ret == 0)
				ret = xfer_ep_create(dev, &ep);
			cap_stop();
			duet_mem_fail_at(0);
			xfer_ep_destroy(ep);
			xfer_mr_dereg(mr);
			xfer_close(dev);
			if (ret == 0)
				break;
			assert_int_equal(ret, -ENOMEM);
		}
	}
}

/* --- seeds for the fuzz corpus ------------------------------------------------------- */

static void write_seed(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(tu_write_file(path, buf, len), 0);
}

/* The fuzz target reads: byte 0 = what to parse, the rest = the bytes. */
static void test_write_seeds(void **state)
{
	const char *dir = getenv("XFER_SEEDS_DIR");
	struct hmac_sha256 key;
	uint8_t buf[2048];
	struct xfer_peer pe = { .driver = XFER_DRV_SHM,
				.token = 0x1234,
				.pid = 100,
				.ring_fd = 1,
				.ev_fd = 2,
				.ring_slots = 64,
				.ring_fdnum = 7,
				.ev_fdnum = 8,
				.n_regions = 1 };
	struct xfer_desc d;
	static const struct xfer_tcp_hdr hs[] = {
		{ .type = XFER_TCP_WRITE,
		  .flags = XFER_TCP_F_LAST | XFER_TCP_F_IMM,
		  .wr_id = 1,
		  .offset = 64,
		  .len = 32,
		  .base = 64,
		  .total = 32,
		  .imm = 9 },
		{ .type = XFER_TCP_WRITE,
		  .wr_id = 2,
		  .offset = 16,
		  .len = 16,
		  .base = 80,
		  .total = 48 },
		{ .type = XFER_TCP_MSG, .wr_id = 3, .len = 24 },
		{ .type = XFER_TCP_ACK, .wr_id = 4 },
		{ .type = XFER_TCP_NACK,
		  .flags = XFER_TCP_F_OPMSG,
		  .wr_id = 5,
		  .status = XFER_WC_REMOTE_ACCESS },
	};
	static const char *names[] = { "frame-write-imm", "frame-write-mid", "frame-msg",
				       "frame-ack", "frame-nack" };
	uint8_t payload[64];
	char *tmp = NULL;

	if (!dir)
		dir = tmp = tu_mkdtemp(); /* still exercises the encoders */
	pe.region[0] = (typeof(pe.region[0])){ .id = 0, .fd = 0, .fdnum = 6, .len = 1 << 20 };
	assert_int_equal(xfer_desc_encode(&pe, &d), 0);
	buf[0] = 0;
	memcpy(buf + 1, d.bytes, d.len);
	write_seed(dir, "desc-shm", buf, d.len + 1);
	pe.driver = XFER_DRV_TCP;
	pe.family = 4;
	pe.port = 4242;
	memcpy(pe.addr, "\x7f\x00\x00\x01", 4);
	pe.ring_fd = pe.ev_fd = pe.ring_fdnum = pe.ev_fdnum = -1;
	pe.region[0].fd = pe.region[0].fdnum = -1;
	pe.n_regions = 2;
	pe.region[1] = (typeof(pe.region[0])){ .id = 1, .fd = -1, .fdnum = -1, .len = 4096 };
	assert_int_equal(xfer_desc_encode(&pe, &d), 0);
	memcpy(buf + 1, d.bytes, d.len);
	write_seed(dir, "desc-tcp", buf, d.len + 1);

	hmac_sha256_init(&key, fuzz_psk, sizeof(fuzz_psk) - 1);
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
		long n = xfer_tcp_frame_build(&key, &hs[i], payload, buf + 1, sizeof(buf) - 1);
		assert_true(n > 0);
		buf[0] = 1;
		write_seed(dir, names[i], buf, (size_t)n + 1);
	}
	if (tmp)
		tu_rmtree(tmp);
}

static int count_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

static int fds_at_start;

static int setup_count_fds(void **state)
{
	fds_at_start = count_fds();
	return 0;
}

/* Last: every socket, memfd, eventfd and pipe the tests opened is closed again. */
static void test_no_fd_leak(void **state)
{
	assert_int_equal(count_fds(), fds_at_start);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_registry),
		cmocka_unit_test(test_psk_file),
		cmocka_unit_test(test_mr_reg_fd),
		cmocka_unit_test(test_desc_decode),
		cmocka_unit_test(test_connect_mismatch),
		cmocka_unit_test(test_roundtrip_loopback),
		cmocka_unit_test(test_roundtrip_shm),
		cmocka_unit_test(test_roundtrip_tcp),
		cmocka_unit_test(test_bounds_loopback),
		cmocka_unit_test(test_bounds_shm),
		cmocka_unit_test(test_bounds_shm_forged),
		cmocka_unit_test(test_bounds_tcp),
		cmocka_unit_test(test_eventfd_wakes),
		cmocka_unit_test(test_shm_fork),
		cmocka_unit_test(test_shm_pidfd_fallback),
		cmocka_unit_test(test_shm_lying_peer),
		cmocka_unit_test(test_shm_hugepages),
		cmocka_unit_test(test_tcp_wrong_psk),
		cmocka_unit_test(test_tcp_tampered),
		cmocka_unit_test(test_tcp_replay),
		cmocka_unit_test(test_tcp_truncated),
		cmocka_unit_test(test_tcp_frame_codec),
		cmocka_unit_test(test_tcp_large_write),
		cmocka_unit_test(test_tcp_stranger),
		cmocka_unit_test(test_tcp_bidirectional),
		cmocka_unit_test(test_loopback_faults),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_alloc_failures),
		cmocka_unit_test(test_write_seeds),
		cmocka_unit_test(test_no_fd_leak),
	};

	return cmocka_run_group_tests(tests, setup_count_fds, NULL);
}
