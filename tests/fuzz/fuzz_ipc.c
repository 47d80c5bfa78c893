// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: supervisor <-> worker frames (runtime/ipc).  The input
 * is one frame as it travels on the wire, a 24-byte struct ipc_hdr and its
 * payload.  It goes
 *
 *   1. to ipc_validate() as sent by either end, from an exact-size copy of
 *      the payload (a read past it is caught): once with the header as it
 *      is, when the input holds hdr.len payload bytes, and once with hdr.len
 *      set to the payload bytes there are, so that mutations reach the type
 *      validators without having to guess the length;
 *   2. through a real channel in each direction: sent raw as one datagram on
 *      a SOCK_SEQPACKET socketpair and taken by ipc_recv() of the other end,
 *      which must accept exactly what ipc_validate() accepts (and nothing
 *      that needs fds, none being sent), kill the channel for good on
 *      anything else, and pass an accepted frame back through ipc_send()
 *      byte for byte.
 *
 * Every accepted frame is checked against the invariants ipc.h documents
 * (check_frame(), written from the header, not from the validator); a
 * violation aborts like a crash.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime/core/log.h"
#include "runtime/ipc/ipc.h"
#include "runtime/model/sampler.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_ipc: %s:%d: invariant failed: %s\n", __FILE__, \
				__LINE__, #cond);                                            \
			abort();                                                             \
		}                                                                            \
	} while (0)

/* Large: one frame each, static (libFuzzer runs inputs on one thread). */
static struct ipc_msg rx, rx2;

/* Channel deaths are logged as warnings: format them (that is code too), print nothing. */
static void quiet_sink(void *ctx, enum duet_log_level level, const char *line)
{
	(void)ctx;
	(void)level;
	(void)line;
}

static bool lp_ok(float v)
{
	return v == -INFINITY || (isfinite(v) && v <= 1e-3f);
}

static bool str_terminated(const char *s, size_t n)
{
	return memchr(s, '\0', n) != NULL;
}

static bool in(float v, float lo, float hi)
{
	return isfinite(v) && v >= lo && v <= hi;
}

/* Who may send a type, and whether its req_id is 0 (-1), set (1) or either (0); ipc.h's table. */
static void type_rules(unsigned type, bool *s2w, bool *w2s, int *rid)
{
	*s2w = *w2s = false;
	*rid = 0;
	switch (type) {
	case IPC_HELLO:
	case IPC_READY:
	case IPC_STATS:
	case IPC_XFER_READY:
		*w2s = true;
		*rid = -1;
		break;
	case IPC_TOKEN:
	case IPC_DONE:
	case IPC_LOGPROBS:
	case IPC_LEASED:
	case IPC_PREFILLED:
		*w2s = true;
		*rid = 1;
		break;
	case IPC_SHUTDOWN:
	case IPC_RELOAD:
	case IPC_XFER_CONNECT:
		*s2w = true;
		*rid = -1;
		break;
	case IPC_SUBMIT:
	case IPC_PROMPT_CHUNK:
	case IPC_CANCEL:
	case IPC_LEASE:
	case IPC_LEASE_FREE:
	case IPC_SHIP:
	case IPC_ADOPT:
		*s2w = true;
		*rid = 1;
		break;
	case IPC_XFER_DESC:
		*s2w = *w2s = true;
		*rid = -1;
		break;
	case IPC_ERROR:
	case IPC_PING:
	case IPC_PONG:
		*s2w = *w2s = true;
		break;
	}
}

static void check_kv_record(const struct ipc_kv_record *k, uint32_t len)
{
	CHECK(k->n_top <= IPC_MAX_TOP_LOGPROBS);
	CHECK(len == IPC_KV_RECORD_FIXED + 8ull * k->n_top && len == ipc_kv_record_len(k->n_top));
	CHECK(k->lease_id >= 0 && k->first_token >= 0);
	CHECK(k->n_tokens > 0 && k->n_tokens <= IPC_MAX_PROMPT && k->n_layers > 0);
	CHECK(!(k->flags & ~IPC_KV__MASK));
	CHECK((k->flags & IPC_KV_CHECKSUM) || k->checksum == 0);
	if (k->flags & IPC_KV_LOGPROBS)
		CHECK(lp_ok(k->first_logprob));
	else
		CHECK(k->n_top == 0 && k->first_logprob == 0.0f);
	for (uint32_t i = 0; i < k->n_top; i++) {
		CHECK(k->top[i].token >= 0 && lp_ok(k->top[i].logprob));
		CHECK(i == 0 || k->top[i].logprob <= k->top[i - 1].logprob);
	}
}

/* The invariants ipc.h promises for an accepted frame sent by `from`. */
static void check_frame(enum ipc_end from, const struct ipc_hdr *h, const void *p)
{
	const uint32_t len = h->len;
	bool s2w, w2s;
	int rid;

	CHECK(h->magic == IPC_MAGIC && h->version == IPC_VERSION && h->flags == 0);
	CHECK(h->type > 0 && h->type < IPC_TYPE__END && strcmp(ipc_type_name(h->type), "?"));
	CHECK(len <= IPC_MAX_PAYLOAD);
	type_rules(h->type, &s2w, &w2s, &rid);
	CHECK(from == IPC_END_SUPERVISOR ? s2w : w2s);
	CHECK(rid == 0 || (rid < 0) == (h->req_id == 0));

	switch ((enum ipc_type)h->type) {
	case IPC_HELLO: {
		const struct ipc_hello *m = p;

		CHECK(len == sizeof(*m) && m->pid > 0 && m->role < IPC_ROLE__END);
		CHECK(str_terminated(m->model, sizeof(m->model)));
		break;
	}
	case IPC_READY: {
		const struct ipc_ready *m = p;

		CHECK(len == sizeof(*m) && m->n_ctx && m->n_vocab && m->n_vocab <= SMP_MAX_VOCAB);
		CHECK(m->kv_blocks_total && m->block_tokens && m->max_batch);
		break;
	}
	case IPC_SUBMIT: {
		const struct ipc_submit *m = p;
		const struct ipc_sampling *s = &m->sampling;
		const struct ipc_bias *b;

		CHECK(len >= IPC_SUBMIT_FIXED + 4);
		CHECK(m->n_prompt > 0 && m->n_prompt <= IPC_MAX_PROMPT);
		CHECK(m->n_tokens > 0 && m->n_tokens <= m->n_prompt);
		CHECK(m->n_bias <= IPC_MAX_BIAS && m->n_top <= IPC_MAX_TOP_LOGPROBS);
		CHECK(m->n_tokens + 2ull * m->n_bias <= IPC_SUBMIT_MAX_TOKENS);
		CHECK(len == IPC_SUBMIT_FIXED + 4ull * m->n_tokens + 8ull * m->n_bias);
		CHECK(len == ipc_submit_len2(m->n_tokens, m->n_bias));
		CHECK(m->max_tokens > 0 && !(m->logprobs_flags & ~IPC_SUBMIT__MASK));
		CHECK(!m->n_top || (m->logprobs_flags & IPC_SUBMIT_LOGPROBS));
		CHECK(in(s->temperature, 0, SMP_MAX_TEMPERATURE) && in(s->top_p, 0, 1) &&
		      s->top_p > 0 && in(s->min_p, 0, 1));
		CHECK(in(s->repeat_penalty, 0, SMP_MAX_REPEAT_PENALTY) && s->repeat_penalty > 0);
		CHECK(in(s->presence_penalty, -SMP_MAX_PENALTY, SMP_MAX_PENALTY) &&
		      in(s->frequency_penalty, -SMP_MAX_PENALTY, SMP_MAX_PENALTY));
		CHECK(s->top_k >= 0 && s->repeat_last_n >= 0 && s->repeat_last_n <= SMP_MAX_LAST_N);
		for (uint32_t i = 0; i < m->n_tokens; i++)
			CHECK(m->tokens[i] >= 0);
		b = ipc_submit_bias(m);
		CHECK((const uint8_t *)(b + m->n_bias) == (const uint8_t *)p + len);
		for (uint32_t i = 0; i < m->n_bias; i++)
			CHECK(b[i].token >= 0 && (in(b[i].bias, -SMP_MAX_BIAS, SMP_MAX_BIAS) ||
						  b[i].bias == -INFINITY));
		break;
	}
	case IPC_PROMPT_CHUNK: {
		const struct ipc_prompt_chunk *m = p;

		CHECK(m->n_tokens <= IPC_CHUNK_MAX_TOKENS &&
		      len == IPC_CHUNK_FIXED + 4ull * m->n_tokens);
		CHECK(m->n_prompt <= IPC_MAX_PROMPT && m->offset > 0 && m->n_tokens > 0);
		CHECK((uint64_t)m->offset + m->n_tokens <= m->n_prompt);
		for (uint32_t i = 0; i < m->n_tokens; i++)
			CHECK(m->tokens[i] >= 0);
		break;
	}
	case IPC_CANCEL:
		CHECK(len == sizeof(struct ipc_cancel));
		CHECK(((const struct ipc_cancel *)p)->reason < IPC_CANCEL__END);
		break;
	case IPC_TOKEN: {
		const struct ipc_token *m = p;

		CHECK(len == sizeof(*m) && m->token >= 0 && !(m->flags & ~IPC_TOK__MASK));
		CHECK(m->finish < IPC_FINISH__END);
		CHECK(!(m->flags & IPC_TOK_LAST) == (m->finish == IPC_FINISH_NONE));
		CHECK(!(m->flags & IPC_TOK_FIRST) == (m->index != 0));
		break;
	}
	case IPC_DONE: {
		const struct ipc_done *m = p;

		CHECK(len == sizeof(*m) && m->finish != IPC_FINISH_NONE &&
		      m->finish < IPC_FINISH__END);
		CHECK(m->n_cached <= m->n_prompt);
		break;
	}
	case IPC_ERROR: {
		const struct ipc_error *m = p;

		CHECK(len == sizeof(*m) && m->code < 0 && str_terminated(m->msg, sizeof(m->msg)));
		break;
	}
	case IPC_STATS: {
		const struct ipc_stats *m = p;

		CHECK(len == sizeof(*m));
		CHECK((uint64_t)m->kv_used + m->kv_cached + m->kv_leased <= m->kv_total);
		CHECK(m->prefix_hits <= m->prefix_queries && m->step_ns_max <= m->step_ns_total);
		break;
	}
	case IPC_PING:
	case IPC_PONG:
		CHECK(len == sizeof(struct ipc_ping));
		break;
	case IPC_SHUTDOWN:
		CHECK(len == sizeof(struct ipc_shutdown));
		CHECK(((const struct ipc_shutdown *)p)->mode < IPC_SHUTDOWN__END);
		break;
	case IPC_RELOAD: {
		const struct ipc_reload *m = p;

		CHECK(len == sizeof(*m) && m->what && !(m->what & ~IPC_RELOAD__MASK));
		break;
	}
	case IPC_LOGPROBS: {
		const struct ipc_logprobs *m = p;

		CHECK(m->n_top <= IPC_MAX_TOP_LOGPROBS &&
		      len == IPC_LOGPROBS_FIXED + 8ull * m->n_top);
		CHECK(m->token >= 0 && lp_ok(m->logprob));
		for (uint32_t i = 0; i < m->n_top; i++) {
			CHECK(m->top[i].token >= 0 && lp_ok(m->top[i].logprob));
			CHECK(i == 0 || m->top[i].logprob <= m->top[i - 1].logprob);
			for (uint32_t j = 0; j < i; j++)
				CHECK(m->top[j].token != m->top[i].token);
		}
		break;
	}
	case IPC_XFER_DESC: {
		const struct ipc_xfer_desc *m = p;

		CHECK(len >= IPC_DESC_FIXED + 1 && m->len > 0 && m->len <= IPC_DESC_MAX);
		CHECK(len == IPC_DESC_FIXED + m->len);
		CHECK(m->partition < IPC_MAX_PARTITION && m->n_fds <= IPC_MAX_FDS);
		break;
	}
	case IPC_LEASE: {
		const struct ipc_lease *m = p;

		CHECK(len >= IPC_LEASE_FIXED && m->n_prompt > 0 && m->n_prompt <= IPC_MAX_PROMPT);
		CHECK(m->ttl_ms > 0 && m->ttl_ms <= 3600000 && !m->reserved);
		CHECK(m->n_tokens <= m->n_prompt && m->n_tokens <= IPC_LEASE_MAX_TOKENS);
		CHECK(len == IPC_LEASE_FIXED + 4ull * m->n_tokens &&
		      len == ipc_lease_len(m->n_tokens));
		for (uint32_t i = 0; i < m->n_tokens; i++)
			CHECK(m->tokens[i] >= 0);
		break;
	}
	case IPC_LEASED: {
		const struct ipc_leased *m = p;

		CHECK(m->n_blocks > 0 && m->n_blocks <= IPC_LEASED_MAX_BLOCKS);
		CHECK(len == IPC_LEASED_FIXED + 4ull * m->n_blocks);
		CHECK(m->lease_id >= 0 && m->block_bytes > 0 && m->blocks_total > 0);
		CHECK(m->n_cached < m->n_blocks && !m->reserved);
		for (uint32_t i = 0; i < m->n_blocks; i++)
			CHECK(m->blocks[i] >= 0 && (uint32_t)m->blocks[i] < m->blocks_total);
		break;
	}
	case IPC_LEASE_FREE:
		CHECK(len == sizeof(struct ipc_lease_free));
		CHECK(((const struct ipc_lease_free *)p)->lease_id >= 0);
		break;
	case IPC_XFER_CONNECT:
		CHECK(len == sizeof(struct ipc_xfer_connect));
		CHECK(((const struct ipc_xfer_connect *)p)->partition < IPC_MAX_PARTITION);
		break;
	case IPC_XFER_READY: {
		const struct ipc_xfer_ready *m = p;

		CHECK(len == sizeof(*m) && m->partition < IPC_MAX_PARTITION && m->status <= 0);
		break;
	}
	case IPC_SHIP: {
		const struct ipc_ship *m = p;

		CHECK(m->n_blocks > 0 && m->n_blocks <= IPC_SHIP_MAX_BLOCKS);
		CHECK(len == IPC_SHIP_FIXED + 4ull * m->n_blocks);
		CHECK(m->partition < IPC_MAX_PARTITION && m->lease_id >= 0);
		CHECK(m->block_bytes > 0 && m->blocks_total > 0 && !(m->flags & ~IPC_SHIP__MASK));
		CHECK(m->ttl_ms > 0 && m->ttl_ms <= 3600000 && m->first < m->n_blocks);
		for (uint32_t i = 0; i < m->n_blocks; i++)
			CHECK(m->blocks[i] >= 0 && (uint32_t)m->blocks[i] < m->blocks_total);
		break;
	}
	case IPC_PREFILLED:
	case IPC_ADOPT:
		check_kv_record(p, len);
		break;
	case IPC_TYPE__END:
		CHECK(!"type out of range accepted");
	}
}

/*
 * ipc_validate() from both ends (res[0]: sent by the supervisor, res[1]: by
 * a worker) on an exact-size copy of the n payload bytes; accepted frames
 * must hold, refused ones come with a documented code and a reason.
 */
static void validate_both(const struct ipc_hdr *h, const uint8_t *payload, size_t n, int res[2])
{
	static const enum ipc_end ends[] = { IPC_END_SUPERVISOR, IPC_END_WORKER };
	uint8_t *copy = malloc(n ? n : 1);

	CHECK(copy);
	memcpy(copy, payload, n);
	for (size_t i = 0; i < 2; i++) {
		const char *why = NULL;

		res[i] = ipc_validate(ends[i], h, copy, &why);
		if (res[i] == 0) {
			check_frame(ends[i], h, copy);
			continue;
		}
		CHECK(why && *why);
		CHECK(res[i] == -EPROTO || res[i] == -EPROTONOSUPPORT || res[i] == -EMSGSIZE ||
		      res[i] == -EBADMSG);
	}
	free(copy);
}

/*
 * The input as one datagram from `from` to a channel of the other end.
 * want: what ipc_validate() said of it as a whole frame from `from`.
 */
static void through_channel(const uint8_t *data, size_t size, enum ipc_end from, bool want)
{
	enum ipc_end to = from == IPC_END_SUPERVISOR ? IPC_END_WORKER : IPC_END_SUPERVISOR;
	struct ipc_chan *rc = NULL, *sc = NULL;
	int sv[2], r;
	ssize_t sent;

	/* Not skipped on failure: an fd leak would otherwise end the checks silently. */
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
	CHECK(ipc_chan_create(sv[0], to, IPC_FRAME_MAX, &rc) == 0);
	CHECK(ipc_chan_create(sv[1], from, IPC_FRAME_MAX, &sc) == 0);
	sent = send(ipc_chan_fd(sc), data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
	r = ipc_recv(rc, &rx);
	if (sent < 0) { /* larger than the socket takes: nothing to receive */
		CHECK(r == 0);
		goto out;
	}
	CHECK(r != 0);
	CHECK((r == 1) == want);
	if (r < 0) {
		/* Dead for good: the same code, a reason, and no further frame. */
		CHECK(ipc_chan_error(rc) == r && *ipc_chan_error_reason(rc));
		CHECK(ipc_recv(rc, &rx) == r);
		goto out;
	}
	CHECK(rx.n_fds == 0 && ipc_chan_error(rc) == 0);
	check_frame(from, &rx.hdr, &rx.u);
	CHECK(!memcmp(&rx.hdr, data, sizeof(rx.hdr)));
	CHECK(!memcmp(&rx.u, data + sizeof(rx.hdr), rx.hdr.len));

	/* What one end accepts, the other end's sender sends, unchanged. */
	CHECK(ipc_send(sc, (enum ipc_type)rx.hdr.type, rx.hdr.req_id, &rx.u, rx.hdr.len) == 0);
	CHECK(ipc_recv(rc, &rx2) == 1);
	CHECK(!memcmp(&rx2.hdr, &rx.hdr, sizeof(rx.hdr)));
	CHECK(!memcmp(&rx2.u, &rx.u, rx.hdr.len));
	CHECK(ipc_recv(rc, &rx2) == 0);
out:
	ipc_chan_destroy(sc);
	ipc_chan_destroy(rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool quiet;
	struct ipc_hdr h;
	bool want[2] = { false, false };
	int res[2];
	size_t n;

	if (!quiet) {
		duet_log_set_sink(quiet_sink, NULL);
		quiet = true;
	}
	if (size >= sizeof(h)) {
		memcpy(&h, data, sizeof(h));
		n = size - sizeof(h);
		if (h.len <= n)
			validate_both(&h, data + sizeof(h), h.len, res);
		if (h.len == n) {
			/* ipc_recv's verdict is ipc_validate's, and an XFER_DESC's fds must arrive. */
			uint32_t desc_fds = 0;

			if (h.type == IPC_XFER_DESC && n >= IPC_DESC_FIXED)
				memcpy(&desc_fds,
				       data + sizeof(h) + offsetof(struct ipc_xfer_desc, n_fds),
				       sizeof(desc_fds));
			want[0] = res[0] == 0 && desc_fds == 0;
			want[1] = res[1] == 0 && desc_fds == 0;
		} else if (n <= UINT32_MAX) {
			struct ipc_hdr h2 = h;

			h2.len = (uint32_t)n;
			validate_both(&h2, data + sizeof(h), n, res);
		}
	}
	through_channel(data, size, IPC_END_SUPERVISOR, want[0]);
	through_channel(data, size, IPC_END_WORKER, want[1]);
	return 0;
}
