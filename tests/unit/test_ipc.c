// SPDX-License-Identifier: MIT
/* Supervisor <-> worker channel: round trips, validation, queueing, ping-pong, fuzz. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "runtime/core/log.h"
#include "runtime/core/mem.h"
#include "runtime/ipc/ipc.h"
#include "tests/unit/testutil.h"

static struct ipc_msg rx; /* 64 KiB: keep off the stack */
static char last_log[512];
static unsigned long n_logs;

static void log_sink(void *ctx, enum duet_log_level level, const char *line)
{
	(void)ctx;
	(void)level;
	snprintf(last_log, sizeof(last_log), "%s", line);
	n_logs++;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A supervisor channel and a worker channel joined by a seqpacket socketpair. */
static void pair(struct ipc_chan **sup, struct ipc_chan **wrk, size_t queue)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	assert_int_equal(ipc_chan_create(sv[0], IPC_END_SUPERVISOR, queue, sup), 0);
	assert_int_equal(ipc_chan_create(sv[1], IPC_END_WORKER, queue, wrk), 0);
}

/* A channel of the given end and the raw fd of its peer, for injecting frames. */
static struct ipc_chan *raw_pair(enum ipc_end end, int *raw)
{
	struct ipc_chan *c;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	assert_int_equal(ipc_chan_create(sv[0], end, 0, &c), 0);
	*raw = sv[1];
	return c;
}

/* Valid example payloads; *len gets the payload length. */
static const void *example(enum ipc_type t, uint32_t *len, uint64_t *rid)
{
	static union {
		struct ipc_hello hello;
		struct ipc_ready ready;
		struct ipc_submit submit;
		struct ipc_prompt_chunk chunk;
		struct ipc_cancel cancel;
		struct ipc_token token;
		struct ipc_done done;
		struct ipc_error error;
		struct ipc_stats stats;
		struct ipc_ping ping;
		struct ipc_shutdown shutdown;
		struct ipc_reload reload;
		struct ipc_logprobs logprobs;
		struct ipc_xfer_desc desc;
		struct ipc_lease lease;
		struct ipc_leased leased;
		struct ipc_lease_free lease_free;
		struct ipc_xfer_connect xconnect;
		struct ipc_xfer_ready xready;
		struct ipc_ship ship;
		struct ipc_kv_record kv;
	} u;

	memset(&u, 0, sizeof(u));
	*rid = 0;
	switch (t) {
	case IPC_HELLO:
		u.hello =
			(struct ipc_hello){ .pid = 4242, .partition = 3, .role = IPC_ROLE_DECODE };
		strcpy(u.hello.model, "duet-tiny");
		*len = sizeof(u.hello);
		break;
	case IPC_READY:
		u.ready = (struct ipc_ready){ .n_ctx = 131072,
					      .n_vocab = 151936,
					      .kv_blocks_total = 8192,
					      .block_tokens = 16,
					      .max_batch = 64 };
		*len = sizeof(u.ready);
		break;
	case IPC_SUBMIT:
		u.submit.sampling = (struct ipc_sampling){ .temperature = 0.7f,
							   .top_p = 0.9f,
							   .min_p = 0.05f,
							   .repeat_penalty = 1.1f,
							   .presence_penalty = -0.5f,
							   .frequency_penalty = 2.0f,
							   .top_k = 40,
							   .repeat_last_n = 64,
							   .seed = 0xfeedull };
		u.submit.salt = 0x1234567890ull;
		u.submit.max_tokens = 256;
		u.submit.priority = -3;
		u.submit.n_prompt = 5;
		u.submit.n_tokens = 5;
		for (int i = 0; i < 5; i++)
			u.submit.tokens[i] = 100 + i;
		*len = ipc_submit_len(5);
		*rid = 77;
		break;
	case IPC_PROMPT_CHUNK:
		u.chunk = (struct ipc_prompt_chunk){ .n_prompt = 10, .offset = 5, .n_tokens = 5 };
		for (int i = 0; i < 5; i++)
			u.chunk.tokens[i] = 200 + i;
		*len = ipc_chunk_len(5);
		*rid = 77;
		break;
	case IPC_CANCEL:
		u.cancel.reason = IPC_CANCEL_DEADLINE;
		*len = sizeof(u.cancel);
		*rid = 77;
		break;
	case IPC_TOKEN:
		u.token = (struct ipc_token){ .token = 9,
					      .index = 0,
					      .flags = IPC_TOK_FIRST | IPC_TOK_LAST,
					      .finish = IPC_FINISH_EOG,
					      .t_ns = 123,
					      .step_ns = 45 };
		*len = sizeof(u.token);
		*rid = 77;
		break;
	case IPC_DONE:
		u.done = (struct ipc_done){ .finish = IPC_FINISH_LENGTH,
					    .n_prompt = 10,
					    .n_cached = 8,
					    .n_generated = 256,
					    .n_preempted = 1,
					    .t_first_ns = 1000,
					    .t_done_ns = 2000 };
		*len = sizeof(u.done);
		*rid = 77;
		break;
	case IPC_ERROR:
		u.error.code = -ENOMEM;
		strcpy(u.error.msg, "out of KV blocks");
		*len = sizeof(u.error);
		*rid = 77;
		break;
	case IPC_STATS:
		u.stats = (struct ipc_stats){ .running = 3,
					      .waiting = 7,
					      .kv_total = 100,
					      .kv_used = 50,
					      .kv_cached = 30,
					      .kv_leased = 20,
					      .prefix_queries = 10,
					      .prefix_hits = 10,
					      .prompt_tokens = 1000,
					      .gen_tokens = 2000,
					      .preemptions = 2,
					      .steps = 99,
					      .step_ns_total = 5000,
					      .step_ns_max = 400,
					      .t_ns = 42 };
		*len = sizeof(u.stats);
		break;
	case IPC_PING:
	case IPC_PONG:
		u.ping.t_ns = 31337;
		*len = sizeof(u.ping);
		*rid = 5;
		break;
	case IPC_SHUTDOWN:
		u.shutdown =
			(struct ipc_shutdown){ .mode = IPC_SHUTDOWN_DRAIN, .deadline_ms = 3000 };
		*len = sizeof(u.shutdown);
		break;
	case IPC_RELOAD:
		u.reload = (struct ipc_reload){ .what = IPC_RELOAD_LOG_LEVEL,
						.log_level = DUET_LOG_DEBUG };
		*len = sizeof(u.reload);
		break;
	case IPC_LOGPROBS:
		u.logprobs = (struct ipc_logprobs){
			.index = 3, .token = 9, .logprob = -1.25f, .n_top = 4
		};
		u.logprobs.top[0] = (struct ipc_top_logprob){ 9, -1.25f };
		u.logprobs.top[1] = (struct ipc_top_logprob){ 2, -1.5f };
		u.logprobs.top[2] = (struct ipc_top_logprob){ 0, -1.5f };
		u.logprobs.top[3] = (struct ipc_top_logprob){ 7, -INFINITY };
		*len = ipc_logprobs_len(4);
		*rid = 77;
		break;
	case IPC_XFER_DESC:
		u.desc = (struct ipc_xfer_desc){ .partition = 1, .n_fds = 0, .len = 5 };
		memcpy(u.desc.desc, "desc!", 5);
		*len = IPC_DESC_FIXED + 5;
		*rid = 0;
		break;
	case IPC_LEASE:
		u.lease = (struct ipc_lease){
			.n_prompt = 40, .ttl_ms = 5000, .owner = 2, .salt = 0xfeed, .n_tokens = 3
		};
		u.lease.tokens[0] = 5;
		u.lease.tokens[1] = 0;
		u.lease.tokens[2] = 151935;
		*len = ipc_lease_len(3);
		*rid = 77;
		break;
	case IPC_LEASED:
		u.leased = (struct ipc_leased){ .lease_id = 3,
						.n_blocks = 3,
						.epoch = 9,
						.region = 0,
						.blocks_total = 12,
						.block_bytes = 4096,
						.n_cached = 2 };
		u.leased.blocks[0] = 10;
		u.leased.blocks[1] = 11;
		u.leased.blocks[2] = 4;
		*len = IPC_LEASED_FIXED + 12;
		*rid = 77;
		break;
	case IPC_LEASE_FREE:
		u.lease_free = (struct ipc_lease_free){ .lease_id = 3, .epoch = 9 };
		*len = sizeof(u.lease_free);
		*rid = 77;
		break;
	case IPC_XFER_CONNECT:
		u.xconnect = (struct ipc_xfer_connect){ .partition = 1 };
		*len = sizeof(u.xconnect);
		break;
	case IPC_XFER_READY:
		u.xready = (struct ipc_xfer_ready){ .partition = 1, .status = -EACCES };
		*len = sizeof(u.xready);
		break;
	case IPC_SHIP:
		u.ship = (struct ipc_ship){ .partition = 1,
					    .lease_id = 3,
					    .epoch = 9,
					    .region = 0,
					    .blocks_total = 12,
					    .block_bytes = 4096,
					    .n_blocks = 2,
					    .flags = IPC_SHIP_CHECKSUM,
					    .ttl_ms = 5000,
					    .first = 1 };
		u.ship.blocks[0] = 11;
		u.ship.blocks[1] = 4;
		*len = IPC_SHIP_FIXED + 8;
		*rid = 77;
		break;
	case IPC_PREFILLED:
	case IPC_ADOPT:
		u.kv = (struct ipc_kv_record){ .lease_id = 3,
					       .n_tokens = 20,
					       .epoch = 9,
					       .n_layers = 4,
					       .first_token = 17,
					       .flags = IPC_KV_CHECKSUM | IPC_KV_LOGPROBS,
					       .n_top = 2,
					       .checksum = 0x1234,
					       .bytes = 8 * 4096,
					       .t_first_ns = 1000,
					       .xfer_ns = 50,
					       .first_logprob = -0.5f,
					       .writes = 8 };
		u.kv.top[0] = (struct ipc_top_logprob){ 17, -0.5f };
		u.kv.top[1] = (struct ipc_top_logprob){ 3, -2.0f };
		*len = ipc_kv_record_len(2);
		*rid = 77;
		break;
	default:
		fail();
	}
	return &u;
}

/* The example SUBMIT with logprobs (5 alternatives) and 3 bias entries; returns its length. */
static uint32_t submit_with_bias(struct ipc_submit *s)
{
	static const struct ipc_bias bias[3] = { { 7, -INFINITY },
						 { 0, 100.0f },
						 { 151935, -0.5f } };
	uint32_t len;
	uint64_t rid;
	const void *ex = example(IPC_SUBMIT, &len, &rid);

	memcpy(s, ex, len);
	s->logprobs_flags = IPC_SUBMIT_LOGPROBS;
	s->n_top = 5;
	s->n_bias = 3;
	memcpy(ipc_submit_bias_mut(s), bias, sizeof(bias));
	return ipc_submit_len2(s->n_tokens, 3);
}

static bool sent_by_worker(enum ipc_type t)
{
	return t == IPC_HELLO || t == IPC_READY || t == IPC_TOKEN || t == IPC_DONE ||
	       t == IPC_STATS || t == IPC_ERROR || t == IPC_PING || t == IPC_PONG ||
	       t == IPC_LOGPROBS || t == IPC_XFER_DESC || t == IPC_LEASED || t == IPC_XFER_READY ||
	       t == IPC_PREFILLED;
}

static bool sent_by_supervisor(enum ipc_type t)
{
	return !sent_by_worker(t) || t == IPC_ERROR || t == IPC_PING || t == IPC_PONG ||
	       t == IPC_XFER_DESC;
}

static void test_sizes(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct ipc_hdr), 24);
	assert_int_equal(IPC_FRAME_MAX, 24 + 65536);
	assert_int_equal(IPC_VERSION, 5);
	assert_int_equal(IPC_SUBMIT_FIXED, 80);
	assert_int_equal(IPC_SUBMIT_MAX_TOKENS, 16364);
	assert_int_equal(IPC_CHUNK_MAX_TOKENS, 16380);
	assert_int_equal(ipc_submit_len(IPC_SUBMIT_MAX_TOKENS), IPC_MAX_PAYLOAD);
	assert_int_equal(ipc_submit_len(7), ipc_submit_len2(7, 0));
	assert_int_equal(ipc_submit_len2(7, 3), 80 + 28 + 24);
	assert_int_equal(ipc_submit_len2(IPC_SUBMIT_MAX_TOKENS - 2 * IPC_MAX_BIAS, IPC_MAX_BIAS),
			 IPC_MAX_PAYLOAD);
	assert_int_equal(sizeof(struct ipc_bias), 8);
	assert_int_equal(sizeof(struct ipc_logprobs), 176);
	assert_int_equal(ipc_logprobs_len(0), 16);
	assert_int_equal(ipc_logprobs_len(IPC_MAX_TOP_LOGPROBS), sizeof(struct ipc_logprobs));
	assert_int_equal(IPC_LOGPROBS, IPC_RELOAD + 1); /* appended, nothing renumbered */
	assert_int_equal(IPC_XFER_DESC, IPC_LOGPROBS + 1);
	assert_int_equal(IPC_LEASE_FREE, IPC_XFER_DESC + 3);
	assert_int_equal(IPC_XFER_READY, IPC_LEASE_FREE + 2);
	assert_int_equal(IPC_LEASED_MAX_BLOCKS, (65536 - 40) / 4);
	assert_int_equal(IPC_LEASE_MAX_TOKENS, (65536 - 32) / 4);
	assert_int_equal(ipc_lease_len(IPC_LEASE_MAX_TOKENS), IPC_MAX_PAYLOAD);
	assert_int_equal(ipc_lease_len(0), 32);
	assert_int_equal(sizeof(struct ipc_xfer_desc), IPC_DESC_FIXED + IPC_DESC_MAX);
	{
		static struct ipc_submit sb;

		sb.n_tokens = 9;
		assert_ptr_equal((const char *)ipc_submit_bias(&sb),
				 (const char *)&sb + IPC_SUBMIT_FIXED + 36);
		assert_ptr_equal(ipc_submit_bias_mut(&sb), ipc_submit_bias(&sb));
	}
	for (unsigned t = IPC_HELLO; t < IPC_TYPE__END; t++)
		assert_string_not_equal(ipc_type_name(t), "?");
	assert_string_equal(ipc_type_name(0), "?");
	assert_string_equal(ipc_type_name(IPC_TYPE__END), "?");
}

static void test_roundtrip_all(void **state)
{
	struct ipc_chan *sup, *wrk;

	(void)state;
	pair(&sup, &wrk, 0);
	for (int t = IPC_HELLO; t < IPC_TYPE__END; t++) {
		for (int dir = 0; dir < 2; dir++) {
			struct ipc_chan *tx = dir ? wrk : sup, *rcv = dir ? sup : wrk;
			uint32_t len;
			uint64_t rid;
			const void *p;

			if (dir ? !sent_by_worker(t) : !sent_by_supervisor(t))
				continue;
			p = example(t, &len, &rid);
			assert_int_equal(ipc_send(tx, t, rid, p, len), 0);
			assert_int_equal(ipc_recv(rcv, &rx), 1);
			assert_int_equal(rx.hdr.magic, IPC_MAGIC);
			assert_int_equal(rx.hdr.version, IPC_VERSION);
			assert_int_equal(rx.hdr.type, t);
			assert_int_equal(rx.hdr.len, len);
			assert_int_equal(rx.hdr.flags, 0);
			assert_int_equal(rx.hdr.req_id, rid);
			assert_memory_equal(&rx.u, p, len);
			assert_int_equal(ipc_recv(rcv, &rx), 0);
		}
	}
	assert_int_equal(ipc_chan_error(sup), 0);
	assert_int_equal(ipc_chan_error(wrk), 0);
	assert_string_equal(ipc_chan_error_reason(sup), "");
	ipc_chan_destroy(sup);
	ipc_chan_destroy(wrk);
}

/* A 40,000-token prompt as SUBMIT + two PROMPT_CHUNKs, reassembled by the receiver. */
static void test_chunked_submit(void **state)
{
	enum { N = 40000 };
	static struct ipc_submit s;
	static struct ipc_prompt_chunk ch;
	static int32_t prompt[N], got[N];
	struct ipc_chan *sup, *wrk;
	uint32_t len, off, have = 0;
	uint64_t rid;

	(void)state;
	pair(&sup, &wrk, 0);
	for (int i = 0; i < N; i++)
		prompt[i] = (int32_t)((i * 7919u) % 151936u);
	memcpy(&s, example(IPC_SUBMIT, &len, &rid), ipc_submit_len(0));
	s.n_prompt = N;
	s.n_tokens = IPC_SUBMIT_MAX_TOKENS;
	memcpy(s.tokens, prompt, sizeof(int32_t) * s.n_tokens);
	assert_int_equal(ipc_send(sup, IPC_SUBMIT, 9, &s, ipc_submit_len(s.n_tokens)), 0);
	for (off = s.n_tokens; off < N; off += ch.n_tokens) {
		ch = (struct ipc_prompt_chunk){ .n_prompt = N, .offset = off };
		ch.n_tokens = N - off < IPC_CHUNK_MAX_TOKENS ? N - off : IPC_CHUNK_MAX_TOKENS;
		memcpy(ch.tokens, prompt + off, sizeof(int32_t) * ch.n_tokens);
		assert_int_equal(
			ipc_send(sup, IPC_PROMPT_CHUNK, 9, &ch, ipc_chunk_len(ch.n_tokens)), 0);
	}
	while (have < N) {
		assert_int_equal(ipc_recv(wrk, &rx), 1);
		assert_int_equal(rx.hdr.req_id, 9);
		if (rx.hdr.type == IPC_SUBMIT) {
			assert_int_equal(have, 0);
			memcpy(got, rx.u.submit.tokens, 4u * rx.u.submit.n_tokens);
			have = rx.u.submit.n_tokens;
		} else {
			assert_int_equal(rx.hdr.type, IPC_PROMPT_CHUNK);
			assert_int_equal(rx.u.chunk.offset, have);
			memcpy(got + have, rx.u.chunk.tokens, 4u * rx.u.chunk.n_tokens);
			have += rx.u.chunk.n_tokens;
		}
	}
	assert_memory_equal(got, prompt, sizeof(prompt));
	assert_int_equal(ipc_recv(wrk, &rx), 0);
	ipc_chan_destroy(sup);
	ipc_chan_destroy(wrk);
}

/* ---- Violations: a raw peer sends one bad frame; the channel must die with `want`. ---- */

struct frame {
	struct ipc_hdr h;
	uint8_t p[IPC_MAX_PAYLOAD + 64];
};

static struct frame fr;
static size_t fr_len; /* bytes actually sent; normally sizeof(hdr) + h.len */

static void frame_of(enum ipc_type t)
{
	uint32_t len;
	uint64_t rid;
	const void *p = example(t, &len, &rid);

	memset(&fr, 0, sizeof(fr));
	fr.h = (struct ipc_hdr){
		.magic = IPC_MAGIC, .version = IPC_VERSION, .type = t, .len = len, .req_id = rid
	};
	memcpy(fr.p, p, len);
	fr_len = sizeof(fr.h) + len;
}

static void expect_dead(enum ipc_end end, int want, const char *reason_part)
{
	int raw;
	struct ipc_chan *c = raw_pair(end, &raw);
	const char *why = NULL;

	/* The standalone validator agrees with the channel (when the frame is self-consistent). */
	if (fr_len == sizeof(fr.h) + fr.h.len && fr.h.len <= IPC_MAX_PAYLOAD)
		assert_int_equal(ipc_validate(end == IPC_END_SUPERVISOR ? IPC_END_WORKER
									: IPC_END_SUPERVISOR,
					      &fr.h, fr.p, &why),
				 want);
	assert_int_equal(send(raw, &fr, fr_len, 0), (ssize_t)fr_len);
	assert_int_equal(ipc_recv(c, &rx), want);
	assert_int_equal(ipc_chan_error(c), want);
	if (!strstr(ipc_chan_error_reason(c), reason_part))
		fail_msg("reason '%s' lacks '%s'", ipc_chan_error_reason(c), reason_part);
	assert_non_null(strstr(last_log, reason_part));
	/* Dead for good: a valid frame behind it is not delivered, sends fail too. */
	frame_of(IPC_PING);
	assert_int_equal(send(raw, &fr, fr_len, 0), (ssize_t)fr_len);
	assert_int_equal(ipc_recv(c, &rx), want);
	assert_int_equal(ipc_send(c, IPC_PING, 1, fr.p, sizeof(struct ipc_ping)), want);
	close(raw);
	ipc_chan_destroy(c);
}

#define SUP IPC_END_SUPERVISOR /* the receiving end */
#define WRK IPC_END_WORKER

static void test_header_violations(void **state)
{
	(void)state;
	frame_of(IPC_PING);
	fr.h.magic ^= 1;
	expect_dead(SUP, -EPROTO, "bad magic");

	frame_of(IPC_PING);
	fr.h.version = IPC_VERSION + 1;
	expect_dead(SUP, -EPROTONOSUPPORT, "version");

	frame_of(IPC_PING);
	fr.h.flags = 1;
	expect_dead(WRK, -EPROTO, "flags");

	frame_of(IPC_PING);
	fr.h.type = 0;
	expect_dead(SUP, -EPROTO, "unknown message type");
	frame_of(IPC_PING);
	fr.h.type = IPC_TYPE__END;
	expect_dead(SUP, -EPROTO, "unknown message type");
	frame_of(IPC_PING);
	fr.h.type = 0xffff;
	expect_dead(WRK, -EPROTO, "unknown message type");

	/* Direction: a worker never sends SUBMIT, a supervisor never sends TOKEN. */
	frame_of(IPC_SUBMIT);
	expect_dead(SUP, -EPROTO, "direction");
	frame_of(IPC_TOKEN);
	expect_dead(WRK, -EPROTO, "direction");

	/* Request ids. */
	frame_of(IPC_TOKEN);
	fr.h.req_id = 0;
	expect_dead(SUP, -EPROTO, "request id");
	frame_of(IPC_HELLO);
	fr.h.req_id = 1;
	expect_dead(SUP, -EPROTO, "request id");

	/* Short frame. */
	frame_of(IPC_PING);
	fr_len = 10;
	expect_dead(SUP, -EPROTO, "shorter than a header");
}

static void test_length_violations(void **state)
{
	(void)state;
	/* Header claims more than the maximum (frame itself small). */
	frame_of(IPC_PING);
	fr.h.len = IPC_MAX_PAYLOAD + 1;
	expect_dead(SUP, -EMSGSIZE, "length");
	frame_of(IPC_PING);
	fr.h.len = UINT32_MAX;
	expect_dead(SUP, -EMSGSIZE, "length");

	/* The frame itself is larger than the maximum. */
	frame_of(IPC_SUBMIT);
	fr.h.len = IPC_MAX_PAYLOAD + 8;
	fr_len = sizeof(fr.h) + fr.h.len;
	expect_dead(WRK, -EMSGSIZE, "longer than IPC_FRAME_MAX");

	/* Header length and frame size disagree. */
	frame_of(IPC_PING);
	fr.h.len = 4;
	expect_dead(SUP, -EMSGSIZE, "does not match frame size");
	frame_of(IPC_PING);
	fr_len += 4;
	expect_dead(SUP, -EMSGSIZE, "does not match frame size");

	/* Fixed structs: exact size only. */
	frame_of(IPC_HELLO);
	fr.h.len -= 1;
	fr_len -= 1;
	expect_dead(SUP, -EMSGSIZE, "does not fit the message type");
	frame_of(IPC_STATS);
	fr.h.len += 8;
	fr_len += 8;
	expect_dead(SUP, -EMSGSIZE, "does not fit the message type");
	frame_of(IPC_CANCEL);
	fr.h.len = 0;
	fr_len = sizeof(fr.h);
	expect_dead(WRK, -EMSGSIZE, "does not fit the message type");

	/* Token arrays: fixed part + 4 * k, k >= 1. */
	frame_of(IPC_SUBMIT);
	fr.h.len -= 2;
	fr_len -= 2;
	expect_dead(WRK, -EMSGSIZE, "does not fit the message type");
	frame_of(IPC_SUBMIT);
	fr.h.len = IPC_SUBMIT_FIXED;
	fr_len = sizeof(fr.h) + fr.h.len;
	expect_dead(WRK, -EMSGSIZE, "does not fit the message type");

	/* Counts vs length. */
	frame_of(IPC_SUBMIT);
	((struct ipc_submit *)fr.p)->n_tokens = 4; /* len says 5 */
	expect_dead(WRK, -EBADMSG, "length does not match n_tokens");
	frame_of(IPC_SUBMIT);
	((struct ipc_submit *)fr.p)->n_prompt = 4000;
	((struct ipc_submit *)fr.p)->n_tokens = 4000; /* far beyond the frame */
	expect_dead(WRK, -EBADMSG, "length does not match n_tokens");
	frame_of(IPC_PROMPT_CHUNK);
	((struct ipc_prompt_chunk *)fr.p)->n_tokens = 6;
	((struct ipc_prompt_chunk *)fr.p)->n_prompt = 100;
	expect_dead(WRK, -EBADMSG, "length does not match n_tokens");
	frame_of(IPC_PROMPT_CHUNK);
	((struct ipc_prompt_chunk *)fr.p)->n_tokens = 0x80000000u; /* 4 * n wraps in 32 bits */
	((struct ipc_prompt_chunk *)fr.p)->n_prompt = IPC_MAX_PROMPT;
	((struct ipc_prompt_chunk *)fr.p)->offset = 1;
	expect_dead(WRK, -EBADMSG, "PROMPT_CHUNK");
}

static void test_payload_violations(void **state)
{
	struct ipc_submit *s = (struct ipc_submit *)fr.p;
	struct ipc_prompt_chunk *ch = (struct ipc_prompt_chunk *)fr.p;
	struct ipc_hello *he = (struct ipc_hello *)fr.p;
	struct ipc_token *tk = (struct ipc_token *)fr.p;

	(void)state;
	/* Strings: no NUL, bytes after the NUL. */
	frame_of(IPC_HELLO);
	memset(he->model, 'x', sizeof(he->model));
	expect_dead(SUP, -EBADMSG, "NUL");
	frame_of(IPC_HELLO);
	he->model[sizeof(he->model) - 1] = 'x';
	expect_dead(SUP, -EBADMSG, "NUL");
	frame_of(IPC_ERROR);
	((struct ipc_error *)fr.p)->msg[100] = '!';
	expect_dead(SUP, -EBADMSG, "NUL");

	/* Reservations and descriptors. */
	frame_of(IPC_LEASE);
	((struct ipc_lease *)fr.p)->n_prompt = 0;
	expect_dead(WRK, -EBADMSG, "n_prompt");
	frame_of(IPC_LEASE);
	((struct ipc_lease *)fr.p)->ttl_ms = 0;
	expect_dead(WRK, -EBADMSG, "ttl_ms");
	frame_of(IPC_LEASE);
	((struct ipc_lease *)fr.p)->n_tokens = 4; /* three in the frame */
	expect_dead(WRK, -EBADMSG, "length does not match n_tokens");
	frame_of(IPC_LEASE);
	((struct ipc_lease *)fr.p)->n_tokens = 0x80000001u; /* far beyond any prompt */
	((struct ipc_lease *)fr.p)->n_prompt = IPC_MAX_PROMPT;
	expect_dead(WRK, -EBADMSG, "n_tokens > n_prompt");
	frame_of(IPC_LEASE);
	((struct ipc_lease *)fr.p)->n_prompt = 2; /* fewer than the tokens sent */
	expect_dead(WRK, -EBADMSG, "n_tokens > n_prompt");
	frame_of(IPC_LEASE);
	((struct ipc_lease *)fr.p)->tokens[2] = -1;
	expect_dead(WRK, -EBADMSG, "negative token");
	frame_of(IPC_LEASE);
	((struct ipc_lease *)fr.p)->reserved = 1;
	expect_dead(WRK, -EBADMSG, "reserved");
	frame_of(IPC_LEASE); /* a fixed part cut short */
	fr.h.len = IPC_LEASE_FIXED - 4;
	fr_len = sizeof(fr.h) + fr.h.len;
	expect_dead(WRK, -EMSGSIZE, "does not fit the message type");
	frame_of(IPC_LEASED);
	((struct ipc_leased *)fr.p)->n_cached = 3; /* == n_blocks: nothing left to write */
	expect_dead(SUP, -EBADMSG, "n_cached");
	frame_of(IPC_LEASED);
	((struct ipc_leased *)fr.p)->reserved = 1;
	expect_dead(SUP, -EBADMSG, "reserved");
	frame_of(IPC_LEASED);
	((struct ipc_leased *)fr.p)->n_blocks = 4; /* three in the frame */
	expect_dead(SUP, -EBADMSG, "n_blocks");
	frame_of(IPC_LEASED);
	((struct ipc_leased *)fr.p)->blocks[2] = -1;
	expect_dead(SUP, -EBADMSG, "outside the pool");
	frame_of(IPC_LEASED);
	((struct ipc_leased *)fr.p)->blocks[2] = 12; /* blocks_total */
	expect_dead(SUP, -EBADMSG, "outside the pool");
	frame_of(IPC_LEASED);
	((struct ipc_leased *)fr.p)->block_bytes = 0;
	expect_dead(SUP, -EBADMSG, "block_bytes");

	/* Shipping and completion records. */
	frame_of(IPC_SHIP);
	((struct ipc_ship *)fr.p)->blocks[1] = 12;
	expect_dead(WRK, -EBADMSG, "outside the decode pool");
	frame_of(IPC_SHIP);
	((struct ipc_ship *)fr.p)->n_blocks = 3; /* two in the frame */
	expect_dead(WRK, -EBADMSG, "n_blocks");
	frame_of(IPC_SHIP);
	((struct ipc_ship *)fr.p)->flags = 2;
	expect_dead(WRK, -EBADMSG, "flags");
	frame_of(IPC_SHIP);
	((struct ipc_ship *)fr.p)->ttl_ms = 0;
	expect_dead(WRK, -EBADMSG, "ttl_ms");
	frame_of(IPC_SHIP);
	((struct ipc_ship *)fr.p)->partition = IPC_MAX_PARTITION;
	expect_dead(WRK, -EBADMSG, "partition");
	frame_of(IPC_SHIP);
	((struct ipc_ship *)fr.p)->first = 2; /* == n_blocks */
	expect_dead(WRK, -EBADMSG, "first");
	frame_of(IPC_PREFILLED);
	((struct ipc_kv_record *)fr.p)->n_top = 3; /* two in the frame */
	expect_dead(SUP, -EBADMSG, "n_top");
	frame_of(IPC_PREFILLED);
	((struct ipc_kv_record *)fr.p)->flags = IPC_KV_CHECKSUM; /* logprobs without the flag */
	expect_dead(SUP, -EBADMSG, "IPC_KV_LOGPROBS");
	frame_of(IPC_ADOPT);
	((struct ipc_kv_record *)fr.p)->flags = IPC_KV_LOGPROBS; /* a checksum without the flag */
	expect_dead(WRK, -EBADMSG, "checksum");
	frame_of(IPC_ADOPT);
	((struct ipc_kv_record *)fr.p)->top[1].logprob = 0.0f; /* above top[0] */
	expect_dead(WRK, -EBADMSG, "descending");
	frame_of(IPC_ADOPT);
	((struct ipc_kv_record *)fr.p)->n_layers = 0;
	expect_dead(WRK, -EBADMSG, "n_layers");
	frame_of(IPC_ADOPT);
	((struct ipc_kv_record *)fr.p)->first_token = -1;
	expect_dead(WRK, -EBADMSG, "negative");
	frame_of(IPC_LEASED);
	((struct ipc_leased *)fr.p)->lease_id = -1;
	expect_dead(SUP, -EBADMSG, "lease id");
	frame_of(IPC_LEASE_FREE);
	((struct ipc_lease_free *)fr.p)->reserved = 1;
	expect_dead(WRK, -EBADMSG, "reserved");
	frame_of(IPC_XFER_DESC);
	((struct ipc_xfer_desc *)fr.p)->partition = IPC_MAX_PARTITION;
	expect_dead(SUP, -EBADMSG, "partition");
	frame_of(IPC_XFER_DESC);
	((struct ipc_xfer_desc *)fr.p)->len = 6; /* five bytes follow */
	expect_dead(SUP, -EBADMSG, "len");
	frame_of(IPC_XFER_DESC);
	((struct ipc_xfer_desc *)fr.p)->n_fds = IPC_MAX_FDS + 1;
	expect_dead(WRK, -EBADMSG, "IPC_MAX_FDS");
	frame_of(IPC_XFER_CONNECT);
	((struct ipc_xfer_connect *)fr.p)->reserved = 1;
	expect_dead(WRK, -EBADMSG, "reserved");
	frame_of(IPC_XFER_READY);
	((struct ipc_xfer_ready *)fr.p)->status = 1;
	expect_dead(SUP, -EBADMSG, "positive status");

	/* Enums and masks. */
	frame_of(IPC_HELLO);
	he->role = IPC_ROLE__END;
	expect_dead(SUP, -EBADMSG, "role");
	frame_of(IPC_HELLO);
	he->pid = 0;
	expect_dead(SUP, -EBADMSG, "pid");
	frame_of(IPC_HELLO);
	he->reserved = 1;
	expect_dead(SUP, -EBADMSG, "reserved");
	frame_of(IPC_TOKEN);
	tk->finish = IPC_FINISH__END;
	expect_dead(SUP, -EBADMSG, "finish");
	frame_of(IPC_TOKEN);
	tk->flags |= 8;
	expect_dead(SUP, -EBADMSG, "flags");
	frame_of(IPC_TOKEN);
	tk->flags = IPC_TOK_FIRST; /* finish EOG without LAST */
	expect_dead(SUP, -EBADMSG, "LAST");
	frame_of(IPC_TOKEN);
	tk->index = 3; /* FIRST with index 3 */
	expect_dead(SUP, -EBADMSG, "FIRST");
	frame_of(IPC_TOKEN);
	tk->token = -1;
	expect_dead(SUP, -EBADMSG, "negative token");
	frame_of(IPC_DONE);
	((struct ipc_done *)fr.p)->finish = IPC_FINISH_NONE;
	expect_dead(SUP, -EBADMSG, "finish");
	frame_of(IPC_DONE);
	((struct ipc_done *)fr.p)->n_cached = 11;
	expect_dead(SUP, -EBADMSG, "n_cached");
	frame_of(IPC_ERROR);
	((struct ipc_error *)fr.p)->code = 0;
	expect_dead(WRK, -EBADMSG, "code");
	frame_of(IPC_CANCEL);
	((struct ipc_cancel *)fr.p)->reason = IPC_CANCEL__END;
	expect_dead(WRK, -EBADMSG, "reason");
	frame_of(IPC_SHUTDOWN);
	((struct ipc_shutdown *)fr.p)->mode = 7;
	expect_dead(WRK, -EBADMSG, "mode");
	frame_of(IPC_RELOAD);
	((struct ipc_reload *)fr.p)->log_level = 2; /* no such level */
	expect_dead(WRK, -EBADMSG, "log level");
	frame_of(IPC_RELOAD);
	((struct ipc_reload *)fr.p)->what = 0;
	expect_dead(WRK, -EBADMSG, "setting bits");
	frame_of(IPC_READY);
	((struct ipc_ready *)fr.p)->n_vocab = (1u << 24) + 1;
	expect_dead(SUP, -EBADMSG, "n_vocab");
	frame_of(IPC_STATS);
	((struct ipc_stats *)fr.p)->kv_leased = UINT32_MAX; /* sum overflows 32 bits */
	expect_dead(SUP, -EBADMSG, "kv used");
	frame_of(IPC_STATS);
	((struct ipc_stats *)fr.p)->prefix_hits = 11;
	expect_dead(SUP, -EBADMSG, "prefix hits");

	/* Sampling: ranges and NaN. */
	frame_of(IPC_SUBMIT);
	s->sampling.temperature = NAN;
	expect_dead(WRK, -EBADMSG, "temperature");
	frame_of(IPC_SUBMIT);
	s->sampling.temperature = -0.5f;
	expect_dead(WRK, -EBADMSG, "temperature");
	frame_of(IPC_SUBMIT);
	s->sampling.top_p = 0.0f;
	expect_dead(WRK, -EBADMSG, "top_p");
	frame_of(IPC_SUBMIT);
	s->sampling.min_p = INFINITY;
	expect_dead(WRK, -EBADMSG, "min_p");
	frame_of(IPC_SUBMIT);
	s->sampling.frequency_penalty = 2.5f;
	expect_dead(WRK, -EBADMSG, "penalty");
	frame_of(IPC_SUBMIT);
	s->sampling.top_k = -1;
	expect_dead(WRK, -EBADMSG, "top_k");
	frame_of(IPC_SUBMIT);
	s->max_tokens = 0;
	expect_dead(WRK, -EBADMSG, "max_tokens");
	frame_of(IPC_SUBMIT);
	s->n_prompt = 4; /* n_tokens 5 > n_prompt */
	expect_dead(WRK, -EBADMSG, "n_tokens");
	frame_of(IPC_SUBMIT);
	s->n_prompt = IPC_MAX_PROMPT + 1;
	expect_dead(WRK, -EBADMSG, "n_prompt");
	frame_of(IPC_SUBMIT);
	s->tokens[4] = INT32_MIN;
	expect_dead(WRK, -EBADMSG, "negative token");

	/* Chunks: offset 0 belongs to SUBMIT; offset + n beyond the prompt (and its overflow). */
	frame_of(IPC_PROMPT_CHUNK);
	ch->offset = 0;
	expect_dead(WRK, -EBADMSG, "offset");
	frame_of(IPC_PROMPT_CHUNK);
	ch->offset = 6;
	expect_dead(WRK, -EBADMSG, "offset");
	frame_of(IPC_PROMPT_CHUNK);
	ch->offset = UINT32_MAX - 2;
	ch->n_prompt = IPC_MAX_PROMPT;
	expect_dead(WRK, -EBADMSG, "offset");
}

/* SUBMIT with logit bias and logprobs, LOGPROBS: what is sent is what arrives. */
static void test_bias_logprobs_roundtrip(void **state)
{
	static struct ipc_submit s;
	static struct ipc_logprobs lp;
	struct ipc_chan *sup, *wrk;
	const struct ipc_bias *b;
	uint32_t len;

	(void)state;
	pair(&sup, &wrk, 0);
	len = submit_with_bias(&s);
	assert_int_equal(len, 80 + 5 * 4 + 3 * 8);
	assert_int_equal(ipc_send(sup, IPC_SUBMIT, 31, &s, len), 0);
	assert_int_equal(ipc_recv(wrk, &rx), 1);
	assert_int_equal(rx.hdr.len, len);
	assert_memory_equal(&rx.u.submit, &s, len);
	assert_int_equal(rx.u.submit.logprobs_flags, IPC_SUBMIT_LOGPROBS);
	assert_int_equal(rx.u.submit.n_top, 5);
	assert_int_equal(rx.u.submit.n_bias, 3);
	assert_int_equal(rx.u.submit.tokens[4], 104);
	b = ipc_submit_bias(&rx.u.submit);
	assert_int_equal(b[0].token, 7);
	assert_true(isinf(b[0].bias) && b[0].bias < 0);
	assert_int_equal(b[1].token, 0);
	assert_true(b[1].bias == 100.0f);
	assert_int_equal(b[2].token, 151935);
	assert_true(b[2].bias == -0.5f);

	/* The largest: IPC_MAX_BIAS entries and the tokens that still fit, 64 KiB exactly. */
	s.n_prompt = s.n_tokens = IPC_SUBMIT_MAX_TOKENS - 2 * IPC_MAX_BIAS;
	for (uint32_t i = 0; i < s.n_tokens; i++)
		s.tokens[i] = (int32_t)i;
	s.n_bias = IPC_MAX_BIAS;
	for (uint32_t i = 0; i < IPC_MAX_BIAS; i++)
		ipc_submit_bias_mut(&s)[i] =
			(struct ipc_bias){ (int32_t)(i * 3), (float)i / 11.0f - 45.0f };
	len = ipc_submit_len2(s.n_tokens, s.n_bias);
	assert_int_equal(len, IPC_MAX_PAYLOAD);
	assert_int_equal(ipc_send(sup, IPC_SUBMIT, 32, &s, len), 0);
	assert_int_equal(ipc_recv(wrk, &rx), 1);
	assert_memory_equal(&rx.u.submit, &s, len);
	assert_int_equal(ipc_submit_bias(&rx.u.submit)[IPC_MAX_BIAS - 1].token,
			 3 * (IPC_MAX_BIAS - 1));

	/* LOGPROBS with 0 and with IPC_MAX_TOP_LOGPROBS alternatives. */
	lp = (struct ipc_logprobs){ .index = 0, .token = 5, .logprob = 0.0f, .n_top = 0 };
	assert_int_equal(ipc_send(wrk, IPC_LOGPROBS, 31, &lp, ipc_logprobs_len(0)), 0);
	assert_int_equal(ipc_recv(sup, &rx), 1);
	assert_int_equal(rx.hdr.type, IPC_LOGPROBS);
	assert_int_equal(rx.hdr.len, 16);
	assert_memory_equal(&rx.u.logprobs, &lp, 16);
	lp = (struct ipc_logprobs){
		.index = 17, .token = 1000, .logprob = -INFINITY, .n_top = IPC_MAX_TOP_LOGPROBS
	};
	for (int i = 0; i < IPC_MAX_TOP_LOGPROBS; i++)
		lp.top[i] =
			(struct ipc_top_logprob){ 40 - i, i < 19 ? -0.5f * (float)i : -INFINITY };
	lp.top[0].logprob = 5e-5f; /* rounding slack above 0 */
	assert_int_equal(ipc_send(wrk, IPC_LOGPROBS, 31, &lp, ipc_logprobs_len(lp.n_top)), 0);
	assert_int_equal(ipc_recv(sup, &rx), 1);
	assert_int_equal(rx.hdr.len, sizeof(lp));
	assert_memory_equal(&rx.u.logprobs, &lp, sizeof(lp));
	assert_int_equal(ipc_recv(sup, &rx), 0);
	assert_int_equal(ipc_chan_error(sup), 0);
	assert_int_equal(ipc_chan_error(wrk), 0);
	ipc_chan_destroy(sup);
	ipc_chan_destroy(wrk);
}

/* fr = the example SUBMIT with bias entries and logprobs. */
static struct ipc_submit *frame_submit_bias(void)
{
	frame_of(IPC_SUBMIT);
	fr.h.len = submit_with_bias((struct ipc_submit *)fr.p);
	fr_len = sizeof(fr.h) + fr.h.len;
	return (struct ipc_submit *)fr.p;
}

static void test_bias_logprobs_violations(void **state)
{
	struct ipc_logprobs *lp = (struct ipc_logprobs *)fr.p;
	struct ipc_submit *s;
	const char *why;

	(void)state;
	/* SUBMIT: counts against the length (one entry short, one too many, wrap-around). */
	s = frame_submit_bias();
	s->n_bias = 2;
	expect_dead(WRK, -EBADMSG, "length does not match n_tokens and n_bias");
	s = frame_submit_bias();
	s->n_bias = 4;
	expect_dead(WRK, -EBADMSG, "length does not match n_tokens and n_bias");
	s = frame_submit_bias();
	fr.h.len -= 8; /* the entries' bytes, not the count, are short */
	fr_len -= 8;
	expect_dead(WRK, -EBADMSG, "length does not match n_tokens and n_bias");
	s = frame_submit_bias();
	fr.h.len -= 4; /* not even a whole entry: still a multiple of 4, so the validator's */
	fr_len -= 4;
	expect_dead(WRK, -EBADMSG, "length does not match n_tokens and n_bias");
	s = frame_submit_bias();
	s->n_prompt = IPC_MAX_PROMPT;
	s->n_tokens = IPC_MAX_PROMPT; /* far beyond the frame */
	expect_dead(WRK, -EBADMSG, "length does not match");

	/* SUBMIT: ranges. */
	s = frame_submit_bias();
	s->n_top = IPC_MAX_TOP_LOGPROBS + 1;
	expect_dead(WRK, -EBADMSG, "n_top out of range");
	s = frame_submit_bias();
	s->n_bias = IPC_MAX_BIAS + 1;
	expect_dead(WRK, -EBADMSG, "n_bias out of range");
	s = frame_submit_bias();
	s->reserved = 1;
	expect_dead(WRK, -EBADMSG, "reserved");
	s = frame_submit_bias();
	s->logprobs_flags = 2;
	expect_dead(WRK, -EBADMSG, "unknown logprobs flags");
	s = frame_submit_bias();
	s->logprobs_flags = 0; /* n_top 5 without the flag */
	expect_dead(WRK, -EBADMSG, "n_top set without IPC_SUBMIT_LOGPROBS");
	s = frame_submit_bias();
	ipc_submit_bias_mut(s)[1].bias = NAN;
	expect_dead(WRK, -EBADMSG, "logit bias not in");
	s = frame_submit_bias();
	ipc_submit_bias_mut(s)[1].bias = INFINITY;
	expect_dead(WRK, -EBADMSG, "logit bias not in");
	s = frame_submit_bias();
	ipc_submit_bias_mut(s)[2].bias = -100.5f;
	expect_dead(WRK, -EBADMSG, "logit bias not in");
	s = frame_submit_bias();
	ipc_submit_bias_mut(s)[2].token = -1;
	expect_dead(WRK, -EBADMSG, "negative logit bias token");

	/* LOGPROBS: header rules. */
	frame_of(IPC_LOGPROBS);
	expect_dead(WRK, -EPROTO, "direction"); /* a supervisor never sends it */
	frame_of(IPC_LOGPROBS);
	fr.h.req_id = 0;
	expect_dead(SUP, -EPROTO, "request id");

	/* LOGPROBS: lengths. */
	frame_of(IPC_LOGPROBS);
	lp->n_top = 3; /* len says 4 */
	expect_dead(SUP, -EBADMSG, "length does not match n_top");
	frame_of(IPC_LOGPROBS);
	fr.h.len -= 4; /* not a whole entry */
	fr_len -= 4;
	expect_dead(SUP, -EMSGSIZE, "does not fit the message type");
	frame_of(IPC_LOGPROBS);
	fr.h.len = 12; /* shorter than the fixed part */
	fr_len = sizeof(fr.h) + 12;
	expect_dead(SUP, -EMSGSIZE, "does not fit the message type");
	frame_of(IPC_LOGPROBS);
	fr.h.len = ipc_logprobs_len(IPC_MAX_TOP_LOGPROBS + 1);
	fr_len = sizeof(fr.h) + fr.h.len;
	lp->n_top = IPC_MAX_TOP_LOGPROBS + 1;
	expect_dead(SUP, -EMSGSIZE, "does not fit the message type");
	frame_of(IPC_LOGPROBS);
	lp->n_top = IPC_MAX_TOP_LOGPROBS + 1; /* len says 4 */
	expect_dead(SUP, -EBADMSG, "n_top out of range");
	frame_of(IPC_LOGPROBS);
	lp->n_top = 0x20000000u; /* 8 * n_top wraps to 0 */
	expect_dead(SUP, -EBADMSG, "n_top out of range");

	/* LOGPROBS: values. */
	frame_of(IPC_LOGPROBS);
	lp->token = -1;
	expect_dead(SUP, -EBADMSG, "negative token id");
	frame_of(IPC_LOGPROBS);
	lp->logprob = 0.5f;
	expect_dead(SUP, -EBADMSG, "logprob not <= 0");
	frame_of(IPC_LOGPROBS);
	lp->logprob = NAN;
	expect_dead(SUP, -EBADMSG, "logprob not <= 0");
	frame_of(IPC_LOGPROBS);
	lp->logprob = INFINITY;
	expect_dead(SUP, -EBADMSG, "logprob not <= 0");
	frame_of(IPC_LOGPROBS);
	lp->top[1].logprob = 0.01f;
	expect_dead(SUP, -EBADMSG, "top logprob not <= 0");
	frame_of(IPC_LOGPROBS);
	lp->top[2].logprob = NAN;
	expect_dead(SUP, -EBADMSG, "top logprob not <= 0");
	frame_of(IPC_LOGPROBS);
	lp->top[3].token = INT32_MIN;
	expect_dead(SUP, -EBADMSG, "negative top token");
	frame_of(IPC_LOGPROBS);
	lp->top[2].logprob = -1.0f; /* above top[1]'s -1.5 */
	expect_dead(SUP, -EBADMSG, "not sorted");
	frame_of(IPC_LOGPROBS);
	lp->top[3] = (struct ipc_top_logprob){ 2, -2.0f }; /* token 2 twice */
	expect_dead(SUP, -EBADMSG, "duplicate top token");

	/* The slack above 0 is tiny: rounding, not probabilities above 1. */
	frame_of(IPC_LOGPROBS);
	lp->logprob = 1e-5f;
	assert_int_equal(ipc_validate(WRK, &fr.h, fr.p, &why), 0);
	lp->logprob = 1e-3f;
	assert_int_equal(ipc_validate(WRK, &fr.h, fr.p, &why), -EBADMSG);
}

/* A peer passing file descriptors is a violation; they are not kept open. */
static void test_ancillary(void **state)
{
	int raw, fds[1] = { 0 };
	struct ipc_chan *c = raw_pair(SUP, &raw);
	char cbuf[CMSG_SPACE(sizeof(fds))];
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;

	(void)state;
	frame_of(IPC_PING);
	iov = (struct iovec){ .iov_base = &fr, .iov_len = fr_len };
	memset(cbuf, 0, sizeof(cbuf));
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(cm), fds, sizeof(fds));
	assert_int_equal(sendmsg(raw, &mh, 0), (ssize_t)fr_len);
	assert_int_equal(ipc_recv(c, &rx), -EPROTO);
	assert_non_null(strstr(ipc_chan_error_reason(c), "takes none"));
	close(raw);
	ipc_chan_destroy(c);
}

static int n_open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 1024; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

/*
 * XFER_DESC carries fds both ways; they arrive usable (here: memfds with
 * their content); a count that does not match, fds on another frame type
 * and too many fds fail the channel and leak nothing.
 */
static void test_xfer_desc_fds(void **state)
{
	struct ipc_chan *sup, *wrk;
	struct ipc_xfer_desc d = { .partition = 3, .n_fds = 2, .len = 7 };
	int fds[2], base = n_open_fds();
	char buf[8];

	(void)state;
	memcpy(d.desc, "payload", 7);
	for (int i = 0; i < 2; i++) {
		fds[i] = memfd_create("t", MFD_CLOEXEC);
		assert_true(fds[i] >= 0);
		assert_int_equal(write(fds[i], i ? "one" : "zero", i ? 3 : 4), i ? 3 : 4);
	}
	pair(&sup, &wrk, 0);
	/* Worker -> supervisor. */
	assert_int_equal(ipc_send_fds(wrk, IPC_XFER_DESC, 0, &d, IPC_DESC_FIXED + 7, fds, 2), 0);
	assert_int_equal(ipc_recv(sup, &rx), 1);
	assert_int_equal(rx.hdr.type, IPC_XFER_DESC);
	assert_int_equal(rx.n_fds, 2);
	assert_int_equal(rx.u.desc.partition, 3);
	assert_memory_equal(rx.u.desc.desc, "payload", 7);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pread(rx.fds[i], buf, sizeof(buf), 0), i ? 3 : 4);
		assert_memory_equal(buf, i ? "one" : "zero", i ? 3 : 4);
		close(rx.fds[i]);
	}
	/* Supervisor -> worker with no fds at all. */
	d.n_fds = 0;
	assert_int_equal(ipc_send_fds(sup, IPC_XFER_DESC, 0, &d, IPC_DESC_FIXED + 7, NULL, 0), 0);
	assert_int_equal(ipc_recv(wrk, &rx), 1);
	assert_int_equal(rx.n_fds, 0);
	/* Refused by the sender: a type that takes no fds, a count that does not match. */
	assert_int_equal(ipc_send_fds(sup, IPC_PING, 1, &(struct ipc_ping){ 0 }, 8, fds, 1), -EINVAL);
	d.n_fds = 1;
	assert_int_equal(ipc_send_fds(sup, IPC_XFER_DESC, 0, &d, IPC_DESC_FIXED + 7, fds, 2), -EINVAL);
	d.len = 0;
	assert_int_equal(ipc_send_fds(sup, IPC_XFER_DESC, 0, &d, IPC_DESC_FIXED, fds, 1), -EINVAL);
	ipc_chan_destroy(sup);
	ipc_chan_destroy(wrk);

	/* Received: a lying n_fds fails the channel and closes what came. */
	{
		int raw;
		struct ipc_chan *c = raw_pair(SUP, &raw);
		char cbuf[CMSG_SPACE(sizeof(fds))];
		struct {
			struct ipc_hdr h;
			struct ipc_xfer_desc d;
		} f = { .h = { .magic = IPC_MAGIC, .version = IPC_VERSION, .type = IPC_XFER_DESC,
			       .len = IPC_DESC_FIXED + 7 },
			.d = { .partition = 0, .n_fds = 1, .len = 7 } };
		struct iovec iov = { .iov_base = &f, .iov_len = sizeof(f.h) + IPC_DESC_FIXED + 7 };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *cm;

		memset(cbuf, 0, sizeof(cbuf));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(fds));
		memcpy(CMSG_DATA(cm), fds, sizeof(fds));
		assert_int_equal(sendmsg(raw, &mh, 0), (ssize_t)iov.iov_len);
		assert_int_equal(ipc_recv(c, &rx), -EPROTO);
		assert_non_null(strstr(ipc_chan_error_reason(c), "n_fds"));
		close(raw);
		ipc_chan_destroy(c);
	}
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(n_open_fds(), base);
}

/* Senders validate too: a bad payload is refused with -EINVAL and the channel lives. */
static void test_send_rejects(void **state)
{
	struct ipc_chan *sup, *wrk;
	struct ipc_token tk;
	uint32_t len;
	uint64_t rid;

	(void)state;
	pair(&sup, &wrk, 0);
	memcpy(&tk, example(IPC_TOKEN, &len, &rid), sizeof(tk));
	assert_int_equal(ipc_send(sup, IPC_TOKEN, rid, &tk, len), -EINVAL); /* direction */
	assert_int_equal(ipc_send(wrk, IPC_TOKEN, 0, &tk, len), -EINVAL);   /* req id */
	assert_int_equal(ipc_send(wrk, IPC_TOKEN, rid, &tk, len - 1), -EINVAL);
	assert_int_equal(ipc_send(wrk, IPC_TOKEN, rid, NULL, len), -EINVAL);
	assert_int_equal(ipc_send(wrk, (enum ipc_type)99, rid, &tk, len), -EINVAL);
	assert_int_equal(ipc_send(wrk, IPC_TOKEN, rid, &tk, IPC_MAX_PAYLOAD + 1), -EINVAL);
	tk.finish = IPC_FINISH_NONE;
	assert_int_equal(ipc_send(wrk, IPC_TOKEN, rid, &tk, len), -EINVAL);
	assert_int_equal(ipc_chan_error(wrk), 0);
	assert_int_equal(ipc_recv(sup, &rx), 0); /* nothing went out */
	tk.finish = IPC_FINISH_EOG;
	assert_int_equal(ipc_send(wrk, IPC_TOKEN, rid, &tk, len), 0);
	assert_int_equal(ipc_recv(sup, &rx), 1);
	ipc_chan_destroy(sup);
	ipc_chan_destroy(wrk);
}

static void test_peer_close(void **state)
{
	struct ipc_chan *sup, *wrk;
	struct ipc_ping p = { 1 };

	(void)state;
	/* Frames sent before the close are still delivered, then -EPIPE. */
	pair(&sup, &wrk, 0);
	assert_int_equal(ipc_send(wrk, IPC_PING, 1, &p, sizeof(p)), 0);
	ipc_chan_destroy(wrk);
	assert_int_equal(ipc_recv(sup, &rx), 1);
	assert_int_equal(ipc_recv(sup, &rx), -EPIPE);
	assert_int_equal(ipc_recv(sup, &rx), -EPIPE);
	assert_non_null(strstr(ipc_chan_error_reason(sup), "peer closed"));
	ipc_chan_destroy(sup);

	/* Sending to a closed peer: -EPIPE, and no SIGPIPE. */
	pair(&sup, &wrk, 0);
	ipc_chan_destroy(wrk);
	assert_int_equal(ipc_send(sup, IPC_PING, 1, &p, sizeof(p)), -EPIPE);
	assert_int_equal(ipc_chan_error(sup), -EPIPE);
	ipc_chan_destroy(sup);
}

static void test_create_errors(void **state)
{
	struct ipc_chan *c = (void *)1;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(ipc_chan_create(sv[0], SUP, 0, &c), -EPROTOTYPE);
	assert_null(c);
	assert_int_equal(close(sv[0]), -1); /* create closed it */
	close(sv[1]);
	assert_int_equal(ipc_chan_create(-1, SUP, 0, &c), -EBADF);

	for (unsigned long n = 1;; n++) {
		int r;

		assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
		duet_mem_fail_at(n);
		r = ipc_chan_create(sv[0], SUP, 0, &c);
		duet_mem_fail_at(0);
		close(sv[1]);
		if (r == 0) {
			assert_true(n > 2);
			ipc_chan_destroy(c);
			break;
		}
		assert_int_equal(r, -ENOMEM);
		assert_null(c);
	}
}

/*
 * The peer does not read: frames go to the socket buffer, then to the queue,
 * then -ENOBUFS; once the peer reads and the sender flushes, every accepted
 * frame arrives once, in order.
 */
static void test_queue(void **state)
{
	struct ipc_chan *sup, *wrk;
	struct ipc_stats st;
	uint32_t len;
	uint64_t rid, sent = 0, got = 0;
	size_t max_queued = 0;
	int r;

	(void)state;
	memcpy(&st, example(IPC_STATS, &len, &rid), sizeof(st));
	pair(&sup, &wrk, IPC_FRAME_MAX); /* the minimum queue */
	for (;;) {
		st.t_ns = sent;
		r = ipc_send(wrk, IPC_STATS, 0, &st, len);
		if (r == -ENOBUFS)
			break;
		assert_int_equal(r, 0);
		sent++;
		if (ipc_chan_queued(wrk) > max_queued)
			max_queued = ipc_chan_queued(wrk);
		assert_true(sent < 1000000);
	}
	assert_true(max_queued > 0);
	assert_true(max_queued * (24 + sizeof(st)) <= IPC_FRAME_MAX);
	assert_int_equal(ipc_chan_error(wrk), 0); /* -ENOBUFS does not kill */
	print_message("queue: %llu frames accepted, %zu queued at -ENOBUFS\n",
		      (unsigned long long)sent, max_queued);
	while (got < sent) {
		r = ipc_recv(sup, &rx);
		if (r == 0) {
			assert_true(ipc_flush(wrk) >= 0);
			continue;
		}
		assert_int_equal(r, 1);
		assert_int_equal(rx.u.stats.t_ns, got);
		got++;
	}
	assert_int_equal(ipc_flush(wrk), 0);
	assert_int_equal(ipc_chan_queued(wrk), 0);
	assert_int_equal(ipc_recv(sup, &rx), 0);

	/* Wrap-around: big and small frames through a small ring, order kept. */
	{
		static struct ipc_submit s;
		uint64_t next_tx = 1, next_rx = 1;

		memcpy(&s, example(IPC_SUBMIT, &len, &rid), ipc_submit_len(0));
		while (next_rx < 3000) {
			uint32_t n = 1 + (uint32_t)((next_tx * 2654435761u) % 9000u);

			s.n_prompt = s.n_tokens = n;
			for (uint32_t i = 0; i < n; i++)
				s.tokens[i] = (int32_t)(next_tx + i);
			if (next_tx < 3000) {
				r = ipc_send(sup, IPC_SUBMIT, next_tx, &s, ipc_submit_len(n));
				if (r == 0)
					next_tx++;
				else
					assert_int_equal(r, -ENOBUFS);
			}
			/* Read at a third of the rate, then catch up. */
			if ((next_tx % 3) == 0 || next_tx >= 3000 || r) {
				r = ipc_recv(wrk, &rx);
				assert_true(r >= 0);
				if (r == 1) {
					assert_int_equal(rx.hdr.req_id, next_rx);
					assert_int_equal(
						rx.u.submit.tokens[rx.u.submit.n_tokens - 1],
						(int32_t)(next_rx + rx.u.submit.n_tokens - 1));
					next_rx++;
				}
				r = ipc_flush(sup);
				assert_true(r >= 0);
				r = 0;
			}
		}
	}
	ipc_chan_destroy(sup);
	ipc_chan_destroy(wrk);
}

/* ---- Ping-pong between two threads. ---- */

enum { PP_N = 100000 };

struct pp {
	struct ipc_chan *c;
	struct ipc_msg *m;
	uint64_t *rtt;
	int err;
};

static int wait_in(struct ipc_chan *c)
{
	struct pollfd pfd = { .fd = ipc_chan_fd(c), .events = POLLIN };

	if (ipc_chan_queued(c))
		pfd.events |= POLLOUT;
	if (poll(&pfd, 1, 5000) <= 0)
		return -ETIMEDOUT;
	if (ipc_chan_queued(c))
		return ipc_flush(c) < 0 ? -EIO : 0;
	return 0;
}

/* Worker: answers every PING with a PONG carrying the same req_id and payload. */
static void *pp_worker(void *arg)
{
	struct pp *pp = arg;
	long n = 0;

	while (n < PP_N) {
		int r = ipc_recv(pp->c, pp->m);

		if (r == 0) {
			if ((pp->err = wait_in(pp->c)))
				return NULL;
			continue;
		}
		if (r < 0 || pp->m->hdr.type != IPC_PING) {
			pp->err = r < 0 ? r : -EPROTO;
			return NULL;
		}
		r = ipc_send(pp->c, IPC_PONG, pp->m->hdr.req_id, &pp->m->u.ping,
			     sizeof(pp->m->u.ping));
		if (r < 0) {
			pp->err = r;
			return NULL;
		}
		n++;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_pingpong(void **state)
{
	static struct ipc_msg wm;
	struct ipc_chan *sup, *wrk;
	struct pp w = { 0 };
	pthread_t th;
	uint64_t *rtt = malloc(sizeof(uint64_t) * PP_N), t0, t1;
	double secs;

	(void)state;
	assert_non_null(rtt);
	pair(&sup, &wrk, 0);
	w.c = wrk;
	w.m = &wm;
	assert_int_equal(pthread_create(&th, NULL, pp_worker, &w), 0);
	t0 = now_ns();
	for (uint64_t i = 1; i <= PP_N; i++) {
		struct ipc_ping p = { .t_ns = now_ns() };
		int r;

		assert_int_equal(ipc_send(sup, IPC_PING, i, &p, sizeof(p)), 0);
		while ((r = ipc_recv(sup, &rx)) == 0)
			assert_int_equal(wait_in(sup), 0);
		assert_int_equal(r, 1);
		assert_int_equal(rx.hdr.type, IPC_PONG);
		assert_int_equal(rx.hdr.req_id, i);
		assert_int_equal(rx.u.ping.t_ns, p.t_ns);
		rtt[i - 1] = now_ns() - p.t_ns;
	}
	t1 = now_ns();
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(w.err, 0);
	qsort(rtt, PP_N, sizeof(*rtt), cmp_u64);
	secs = (double)(t1 - t0) / 1e9;
	print_message("ping-pong: %d round trips (%d frames) in %.3f s: %.0f frames/s, "
		      "RTT p50 %.1f us, p99 %.1f us, max %.1f us\n",
		      PP_N, 2 * PP_N, secs, 2.0 * PP_N / secs, rtt[PP_N / 2] / 1e3,
		      rtt[PP_N * 99 / 100] / 1e3, rtt[PP_N - 1] / 1e3);
	free(rtt);
	ipc_chan_destroy(sup);
	ipc_chan_destroy(wrk);
}

/* ---- Fuzz: random frames never crash, leak or get past validation when invalid. ---- */

static uint64_t rng_s = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void test_fuzz(void **state)
{
	_Static_assert(IPC_TYPE__END == 24, "one fixed_len entry per type");
	static const uint32_t fixed_len[] = { 144, 24, 80, 16, 8,  32, 56, 264, 112, 8, 8, 8,
					      8,   16, 17, 32, 44, 16, 8,	8,   52, 72, 72 };
	unsigned long accepted = 0, rejected = 0;
	int raw = -1;
	struct ipc_chan *c = NULL;
	enum ipc_end end = SUP;
	int fd_before = dup(0), fd_after;

	(void)state;
	close(fd_before);
	for (int i = 0; i < 40000; i++) {
		const char *why;
		int want, r;

		if (!c) {
			end = (rnd() & 1) ? SUP : WRK;
			c = raw_pair(end, &raw);
		}
		memset(&fr, 0, sizeof(fr));
		if (i < 20000) {
			/* Valid header, random type, plausible or random length, random payload. */
			unsigned t = 1 + (unsigned)(rnd() % (IPC_TYPE__END - 1));
			uint32_t len;

			if (rnd() % 4 == 0)
				t = (unsigned)(rnd() % 20);
			switch (rnd() % 4) {
			case 0:
				len = (uint32_t)(rnd() % 300);
				break;
			case 1:
				len = (uint32_t)(rnd() % (IPC_MAX_PAYLOAD + 1));
				break;
			default:
				len = t >= 1 && t < IPC_TYPE__END ? fixed_len[t - 1] : 8;
				if (t == IPC_SUBMIT || t == IPC_PROMPT_CHUNK || t == IPC_LEASE)
					len += 4 * (uint32_t)(rnd() % 64);
				if (t == IPC_LOGPROBS || t == IPC_PREFILLED || t == IPC_ADOPT)
					len += 8 * (uint32_t)(rnd() % (IPC_MAX_TOP_LOGPROBS + 2));
			}
			fr.h = (struct ipc_hdr){ .magic = IPC_MAGIC,
						 .version = IPC_VERSION,
						 .type = (uint16_t)t,
						 .len = len,
						 .req_id = rnd() % 3 };
			/* Sparse random payload: mostly small values, so some frames validate. */
			for (uint32_t k = 0; k < len; k++)
				fr.p[k] = (rnd() % 8 == 0) ? (uint8_t)rnd() : 0;
			if (rnd() % 2) {
				/* Plausible floats for SUBMIT sampling. */
				float one = 1.0f;

				for (int k = 0; k < 6; k++)
					memcpy(fr.p + 4 * k, &one, 4);
			}
			fr_len = sizeof(fr.h) + len;
		} else {
			/* Fully random bytes. */
			fr_len = (size_t)(rnd() % 512);
			for (size_t k = 0; k < fr_len; k++)
				((uint8_t *)&fr)[k] = (uint8_t)rnd();
			if (fr_len >= 8 && rnd() % 2) {
				fr.h.magic = IPC_MAGIC; /* get past the first check sometimes */
				fr.h.version = IPC_VERSION;
			}
		}
		if (fr_len == 0)
			fr_len = 1; /* an empty datagram reads as end of stream */
		want = -1;
		if (fr_len >= sizeof(fr.h) && fr_len == sizeof(fr.h) + fr.h.len)
			want = ipc_validate(end == SUP ? WRK : SUP, &fr.h, fr.p, &why);
		assert_int_equal(send(raw, &fr, fr_len, 0), (ssize_t)fr_len);
		r = ipc_recv(c, &rx);
		if (want == 0) {
			assert_int_equal(r, 1);
			assert_memory_equal(&rx.hdr, &fr.h, sizeof(fr.h));
			accepted++;
			continue;
		}
		assert_true(r < 0);
		if (want < 0 && want != -1)
			assert_int_equal(r, want);
		rejected++;
		close(raw);
		ipc_chan_destroy(c);
		c = NULL;
	}
	if (c) {
		close(raw);
		ipc_chan_destroy(c);
	}
	fd_after = dup(0);
	close(fd_after);
	assert_int_equal(fd_after, fd_before); /* no descriptor leaked */
	print_message("fuzz: 40000 frames, %lu accepted, %lu rejected\n", accepted, rejected);
	assert_true(accepted > 100);
}

/* The transfer checksum: chained over ranges, sensitive to every byte and to the order. */
static void test_kv_checksum(void **state)
{
	static uint8_t a[4096 + 13];
	uint64_t h, h2;

	(void)state;
	uint64_t x = 88172645463325252ull;

	for (size_t i = 0; i < sizeof(a); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		a[i] = (uint8_t)x;
	}
	h = ipc_kv_checksum(IPC_KV_CHECKSUM_SEED, a, sizeof(a));
	assert_int_equal(h, ipc_kv_checksum(IPC_KV_CHECKSUM_SEED, a, sizeof(a)));
	/* Any one flipped bit, in any lane or in the tail, changes it. */
	for (size_t i = 0; i < sizeof(a); i += 97) {
		a[i] ^= 0x10;
		assert_true(ipc_kv_checksum(IPC_KV_CHECKSUM_SEED, a, sizeof(a)) != h);
		a[i] ^= 0x10;
	}
	a[sizeof(a) - 1] ^= 1;
	assert_true(ipc_kv_checksum(IPC_KV_CHECKSUM_SEED, a, sizeof(a)) != h);
	a[sizeof(a) - 1] ^= 1;
	/* Two ranges in the other order differ; the seed matters. */
	h = ipc_kv_checksum(ipc_kv_checksum(IPC_KV_CHECKSUM_SEED, a, 2048), a + 2048, 2048);
	h2 = ipc_kv_checksum(ipc_kv_checksum(IPC_KV_CHECKSUM_SEED, a + 2048, 2048), a, 2048);
	assert_true(h != h2);
	assert_true(ipc_kv_checksum(1, a, 64) != ipc_kv_checksum(2, a, 64));
	/* Swapping two 8-byte words of one lane changes it. */
	h = ipc_kv_checksum(0, a, 64);
	{
		uint8_t b[64];

		memcpy(b, a, 64);
		memcpy(b, a + 32, 8);
		memcpy(b + 32, a, 8);
		assert_true(ipc_kv_checksum(0, b, 64) != h);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_roundtrip_all),
		cmocka_unit_test(test_chunked_submit),
		cmocka_unit_test(test_header_violations),
		cmocka_unit_test(test_length_violations),
		cmocka_unit_test(test_payload_violations),
		cmocka_unit_test(test_bias_logprobs_roundtrip),
		cmocka_unit_test(test_bias_logprobs_violations),
		cmocka_unit_test(test_ancillary),
		cmocka_unit_test(test_xfer_desc_fds),
		cmocka_unit_test(test_send_rejects),
		cmocka_unit_test(test_peer_close),
		cmocka_unit_test(test_create_errors),
		cmocka_unit_test(test_queue),
		cmocka_unit_test(test_pingpong),
		cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_kv_checksum),
	};

	duet_log_set_sink(log_sink, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
