// SPDX-License-Identifier: MIT
/* Supervisor <-> worker channel: framing, message catalogue, non-blocking seqpacket I/O. */
#include "runtime/ipc/ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "runtime/core/log.h"
#include "runtime/core/mem.h"
#include "runtime/model/sampler.h"

#define IPC_QUEUE_DEFAULT (1u << 20)

static_assert(sizeof(((struct ipc_msg *)0)->u) == IPC_MAX_PAYLOAD, "ipc_msg payload buffer");

/* Who may send a type. */
#define DIR_S2W 1u /* supervisor -> worker */
#define DIR_W2S 2u /* worker -> supervisor */
#define DIR_ANY (DIR_S2W | DIR_W2S)

/* What the header's req_id must be. */
enum rid_rule {
	RID_ZERO, /* channel-level message */
	RID_SET,  /* a request's message */
	RID_ANY,  /* nonce, or optional */
};

/* Returns NULL when the payload (exactly len bytes, len within [min, max]) is valid, else why. */
typedef const char *(*ipc_check_fn)(const void *p, uint32_t len);

struct ipc_type_info {
	const char *name;
	unsigned dir;
	enum rid_rule rid;
	uint32_t min_len, max_len; /* equal for fixed structs */
	uint32_t elem;		   /* > 0: len == min_len + elem * k */
	ipc_check_fn check;
	bool fds; /* may carry file descriptors */
};

struct ipc_chan {
	int fd;
	enum ipc_end end;
	int err;	  /* 0 alive, else the sticky code */
	char reason[128]; /* why err was set */
	uint8_t *q;	  /* outgoing ring of whole frames (header + payload), may wrap */
	size_t q_cap;
	size_t q_head;	 /* offset of the oldest queued byte */
	size_t q_used;	 /* bytes queued */
	size_t q_frames; /* frames queued */
};

/* A string field must hold a NUL, and only NULs after the first one (no stale bytes leak). */
static bool str_ok(const char *s, size_t n)
{
	const char *nul = memchr(s, '\0', n);

	if (!nul)
		return false;
	for (const char *p = nul; p < s + n; p++)
		if (*p)
			return false;
	return true;
}

static bool in_range(float v, float lo, float hi)
{
	return isfinite(v) && v >= lo && v <= hi;
}

/* Log-probabilities: -inf or finite and <= 0, with room for rounding in the sender's sum. */
#define LOGPROB_SLACK 1e-4f

static bool logprob_ok(float v)
{
	return v == -INFINITY || (isfinite(v) && v <= LOGPROB_SLACK);
}

static bool tokens_ok(const int32_t *t, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (t[i] < 0)
			return false;
	return true;
}

static const char *chk_hello(const void *p, uint32_t len)
{
	const struct ipc_hello *m = p;

	(void)len;
	if (m->pid <= 0)
		return "HELLO: pid <= 0";
	if (m->role >= IPC_ROLE__END)
		return "HELLO: role out of range";
	if (m->reserved)
		return "HELLO: reserved field not 0";
	if (!str_ok(m->model, sizeof(m->model)))
		return "HELLO: model name not NUL-terminated and NUL-padded";
	return NULL;
}

static const char *chk_ready(const void *p, uint32_t len)
{
	const struct ipc_ready *m = p;

	(void)len;
	if (!m->n_ctx || !m->n_vocab || m->n_vocab > SMP_MAX_VOCAB)
		return "READY: n_ctx or n_vocab out of range";
	if (!m->kv_blocks_total || !m->block_tokens || !m->max_batch)
		return "READY: kv_blocks_total, block_tokens or max_batch is 0";
	if (m->reserved)
		return "READY: reserved field not 0";
	return NULL;
}

static const char *chk_sampling(const struct ipc_sampling *s)
{
	if (!in_range(s->temperature, 0.0f, SMP_MAX_TEMPERATURE))
		return "SUBMIT: temperature out of range";
	if (!in_range(s->top_p, 0.0f, 1.0f) || s->top_p == 0.0f)
		return "SUBMIT: top_p out of range";
	if (!in_range(s->min_p, 0.0f, 1.0f))
		return "SUBMIT: min_p out of range";
	if (!in_range(s->repeat_penalty, 0.0f, SMP_MAX_REPEAT_PENALTY) || s->repeat_penalty == 0.0f)
		return "SUBMIT: repeat_penalty out of range";
	if (!in_range(s->presence_penalty, -SMP_MAX_PENALTY, SMP_MAX_PENALTY) ||
	    !in_range(s->frequency_penalty, -SMP_MAX_PENALTY, SMP_MAX_PENALTY))
		return "SUBMIT: presence or frequency penalty out of range";
	if (s->top_k < 0)
		return "SUBMIT: top_k < 0";
	if (s->repeat_last_n < 0 || s->repeat_last_n > SMP_MAX_LAST_N)
		return "SUBMIT: repeat_last_n out of range";
	return NULL;
}

static const char *chk_submit(const void *p, uint32_t len)
{
	const struct ipc_submit *m = p;
	const char *why = chk_sampling(&m->sampling);

	if (why)
		return why;
	if (!m->max_tokens)
		return "SUBMIT: max_tokens is 0";
	if (!m->n_prompt || m->n_prompt > IPC_MAX_PROMPT)
		return "SUBMIT: n_prompt out of range";
	if (!m->n_tokens || m->n_tokens > m->n_prompt)
		return "SUBMIT: n_tokens out of range";
	if (m->logprobs_flags & ~IPC_SUBMIT__MASK)
		return "SUBMIT: unknown logprobs flags";
	if (m->n_top > IPC_MAX_TOP_LOGPROBS)
		return "SUBMIT: n_top out of range";
	if (m->n_top && !(m->logprobs_flags & IPC_SUBMIT_LOGPROBS))
		return "SUBMIT: n_top set without IPC_SUBMIT_LOGPROBS";
	if (m->n_bias > IPC_MAX_BIAS)
		return "SUBMIT: n_bias out of range";
	if (m->reserved)
		return "SUBMIT: reserved field not 0";
	/* 64-bit: n_tokens is bounded by n_prompt only, so 4 * n_tokens may wrap in 32. */
	if ((uint64_t)len != IPC_SUBMIT_FIXED + 4ull * m->n_tokens + 8ull * m->n_bias)
		return "SUBMIT: length does not match n_tokens and n_bias";
	if (!tokens_ok(m->tokens, m->n_tokens))
		return "SUBMIT: negative token id";
	const struct ipc_bias *b = ipc_submit_bias(m);
	for (uint32_t i = 0; i < m->n_bias; i++) {
		if (b[i].token < 0)
			return "SUBMIT: negative logit bias token";
		if (!in_range(b[i].bias, -SMP_MAX_BIAS, SMP_MAX_BIAS) && b[i].bias != -INFINITY)
			return "SUBMIT: logit bias not in [-100, 100] or -inf";
	}
	return NULL;
}

static const char *chk_chunk(const void *p, uint32_t len)
{
	const struct ipc_prompt_chunk *m = p;

	if (!m->n_prompt || m->n_prompt > IPC_MAX_PROMPT)
		return "PROMPT_CHUNK: n_prompt out of range";
	if (!m->offset || !m->n_tokens || (uint64_t)m->offset + m->n_tokens > m->n_prompt)
		return "PROMPT_CHUNK: offset or n_tokens out of range";
	if (m->reserved)
		return "PROMPT_CHUNK: reserved field not 0";
	if ((uint64_t)len != IPC_CHUNK_FIXED + 4ull * m->n_tokens)
		return "PROMPT_CHUNK: length does not match n_tokens";
	if (!tokens_ok(m->tokens, m->n_tokens))
		return "PROMPT_CHUNK: negative token id";
	return NULL;
}

static const char *chk_cancel(const void *p, uint32_t len)
{
	const struct ipc_cancel *m = p;

	(void)len;
	if (m->reason >= IPC_CANCEL__END)
		return "CANCEL: reason out of range";
	if (m->reserved)
		return "CANCEL: reserved field not 0";
	return NULL;
}

static const char *chk_token(const void *p, uint32_t len)
{
	const struct ipc_token *m = p;
	bool last = m->flags & IPC_TOK_LAST;

	(void)len;
	if (m->token < 0)
		return "TOKEN: negative token id";
	if (m->flags & ~IPC_TOK__MASK)
		return "TOKEN: unknown flags";
	if (m->finish >= IPC_FINISH__END)
		return "TOKEN: finish out of range";
	if (last != (m->finish != IPC_FINISH_NONE))
		return "TOKEN: finish set without LAST or LAST without finish";
	if (((m->flags & IPC_TOK_FIRST) != 0) != (m->index == 0))
		return "TOKEN: FIRST flag does not match index 0";
	return NULL;
}

static const char *chk_done(const void *p, uint32_t len)
{
	const struct ipc_done *m = p;

	(void)len;
	if (m->finish == IPC_FINISH_NONE || m->finish >= IPC_FINISH__END)
		return "DONE: finish out of range";
	if (m->n_cached > m->n_prompt)
		return "DONE: n_cached > n_prompt";
	if (m->reserved)
		return "DONE: reserved field not 0";
	return NULL;
}

static const char *chk_error(const void *p, uint32_t len)
{
	const struct ipc_error *m = p;

	(void)len;
	if (m->code >= 0)
		return "ERROR: code not negative";
	if (m->reserved)
		return "ERROR: reserved field not 0";
	if (!str_ok(m->msg, sizeof(m->msg)))
		return "ERROR: message not NUL-terminated and NUL-padded";
	return NULL;
}

static const char *chk_stats(const void *p, uint32_t len)
{
	const struct ipc_stats *m = p;

	(void)len;
	if ((uint64_t)m->kv_used + m->kv_cached + m->kv_leased > m->kv_total)
		return "STATS: kv used + cached + leased > total";
	if (m->prefix_hits > m->prefix_queries)
		return "STATS: prefix hits > queries";
	if (m->step_ns_max > m->step_ns_total)
		return "STATS: step_ns_max > step_ns_total";
	return NULL;
}

static const char *chk_logprobs(const void *p, uint32_t len)
{
	const struct ipc_logprobs *m = p;

	if (m->n_top > IPC_MAX_TOP_LOGPROBS)
		return "LOGPROBS: n_top out of range";
	if (len != ipc_logprobs_len(m->n_top))
		return "LOGPROBS: length does not match n_top";
	if (m->token < 0)
		return "LOGPROBS: negative token id";
	if (!logprob_ok(m->logprob))
		return "LOGPROBS: logprob not <= 0 or -inf";
	for (uint32_t i = 0; i < m->n_top; i++) {
		const struct ipc_top_logprob *t = &m->top[i];

		if (t->token < 0)
			return "LOGPROBS: negative top token id";
		if (!logprob_ok(t->logprob))
			return "LOGPROBS: top logprob not <= 0 or -inf";
		if (i > 0 && t->logprob > m->top[i - 1].logprob)
			return "LOGPROBS: top not sorted by descending logprob";
		for (uint32_t j = 0; j < i; j++) {
			if (m->top[j].token == t->token)
				return "LOGPROBS: duplicate top token";
		}
	}
	return NULL;
}

static const char *chk_shutdown(const void *p, uint32_t len)
{
	const struct ipc_shutdown *m = p;

	(void)len;
	if (m->mode >= IPC_SHUTDOWN__END)
		return "SHUTDOWN: mode out of range";
	return NULL;
}

static const char *chk_reload(const void *p, uint32_t len)
{
	const struct ipc_reload *m = p;

	(void)len;
	if (!m->what || (m->what & ~IPC_RELOAD__MASK))
		return "RELOAD: no or unknown setting bits";
	if ((m->what & IPC_RELOAD_LOG_LEVEL) &&
	    duet_log_level_name((enum duet_log_level)m->log_level)[0] == '?')
		return "RELOAD: log level out of range";
	if (!(m->what & IPC_RELOAD_LOG_LEVEL) && m->log_level)
		return "RELOAD: log_level set without IPC_RELOAD_LOG_LEVEL";
	return NULL;
}

static const char *chk_desc(const void *p, uint32_t len)
{
	const struct ipc_xfer_desc *m = p;

	if (m->partition >= IPC_MAX_PARTITION)
		return "XFER_DESC: partition out of range";
	if (m->n_fds > IPC_MAX_FDS)
		return "XFER_DESC: more than IPC_MAX_FDS fds";
	if (m->reserved)
		return "XFER_DESC: reserved field not 0";
	if (m->len == 0 || (uint64_t)m->len + IPC_DESC_FIXED != len)
		return "XFER_DESC: length does not match len";
	return NULL;
}

static const char *chk_lease(const void *p, uint32_t len)
{
	const struct ipc_lease *m = p;

	if (!m->n_prompt || m->n_prompt > IPC_MAX_PROMPT)
		return "LEASE: n_prompt out of range";
	if (!m->ttl_ms || m->ttl_ms > 3600000)
		return "LEASE: ttl_ms out of range";
	if (m->n_tokens > m->n_prompt)
		return "LEASE: n_tokens > n_prompt";
	if (m->reserved)
		return "LEASE: reserved field not 0";
	if ((uint64_t)len != IPC_LEASE_FIXED + 4ull * m->n_tokens)
		return "LEASE: length does not match n_tokens";
	if (!tokens_ok(m->tokens, m->n_tokens))
		return "LEASE: negative token id";
	return NULL;
}

static const char *chk_leased(const void *p, uint32_t len)
{
	const struct ipc_leased *m = p;

	if (m->lease_id < 0)
		return "LEASED: negative lease id";
	if (!m->block_bytes || !m->blocks_total)
		return "LEASED: zero block_bytes or blocks_total";
	if (!m->n_blocks || (uint64_t)IPC_LEASED_FIXED + 4ull * m->n_blocks != len)
		return "LEASED: length does not match n_blocks";
	if (m->n_cached >= m->n_blocks)
		return "LEASED: n_cached not below n_blocks";
	if (m->reserved)
		return "LEASED: reserved field not 0";
	for (uint32_t i = 0; i < m->n_blocks; i++) {
		if (m->blocks[i] < 0 || (uint32_t)m->blocks[i] >= m->blocks_total)
			return "LEASED: block id outside the pool";
	}
	return NULL;
}

static const char *chk_lease_free(const void *p, uint32_t len)
{
	const struct ipc_lease_free *m = p;

	(void)len;
	if (m->lease_id < 0 || m->reserved)
		return "LEASE_FREE: negative lease id or reserved field not 0";
	return NULL;
}

static const char *chk_xconnect(const void *p, uint32_t len)
{
	const struct ipc_xfer_connect *m = p;

	(void)len;
	if (m->partition >= IPC_MAX_PARTITION || m->reserved)
		return "XFER_CONNECT: partition out of range or reserved field not 0";
	return NULL;
}

static const char *chk_xready(const void *p, uint32_t len)
{
	const struct ipc_xfer_ready *m = p;

	(void)len;
	if (m->partition >= IPC_MAX_PARTITION || m->status > 0)
		return "XFER_READY: partition out of range or positive status";
	return NULL;
}

static const char *chk_ship(const void *p, uint32_t len)
{
	const struct ipc_ship *m = p;

	if (m->partition >= IPC_MAX_PARTITION)
		return "SHIP: partition out of range";
	if (m->lease_id < 0)
		return "SHIP: negative lease id";
	if (!m->block_bytes || !m->blocks_total)
		return "SHIP: zero block_bytes or blocks_total";
	if (m->flags & ~IPC_SHIP__MASK)
		return "SHIP: unknown flags";
	if (!m->ttl_ms || m->ttl_ms > 3600000)
		return "SHIP: ttl_ms out of range";
	if (!m->n_blocks || (uint64_t)IPC_SHIP_FIXED + 4ull * m->n_blocks != len)
		return "SHIP: length does not match n_blocks";
	if (m->first >= m->n_blocks)
		return "SHIP: first not below n_blocks";
	for (uint32_t i = 0; i < m->n_blocks; i++) {
		if (m->blocks[i] < 0 || (uint32_t)m->blocks[i] >= m->blocks_total)
			return "SHIP: block id outside the decode pool";
	}
	return NULL;
}

static const char *chk_kv_record(const void *p, uint32_t len)
{
	const struct ipc_kv_record *m = p;

	if (m->lease_id < 0 || m->first_token < 0)
		return "KV record: negative lease id or token";
	if (!m->n_tokens || m->n_tokens > IPC_MAX_PROMPT || !m->n_layers)
		return "KV record: n_tokens or n_layers out of range";
	if (m->flags & ~IPC_KV__MASK)
		return "KV record: unknown flags";
	if (m->n_top > IPC_MAX_TOP_LOGPROBS || len != ipc_kv_record_len(m->n_top))
		return "KV record: length does not match n_top";
	if (!(m->flags & IPC_KV_LOGPROBS) && (m->n_top || m->first_logprob != 0.0f))
		return "KV record: logprobs without IPC_KV_LOGPROBS";
	if (!(m->flags & IPC_KV_CHECKSUM) && m->checksum)
		return "KV record: checksum without IPC_KV_CHECKSUM";
	if ((m->flags & IPC_KV_LOGPROBS) && !logprob_ok(m->first_logprob))
		return "KV record: first_logprob not <= 0 or -inf";
	for (uint32_t i = 0; i < m->n_top; i++) {
		if (m->top[i].token < 0 || !logprob_ok(m->top[i].logprob))
			return "KV record: bad top logprob entry";
		if (i > 0 && m->top[i].logprob > m->top[i - 1].logprob)
			return "KV record: top logprobs not in descending order";
	}
	return NULL;
}

#define FIXED(t, n, d, r, s, f)       \
	[t] = { .name = n,            \
		.dir = d,             \
		.rid = r,             \
		.min_len = sizeof(s), \
		.max_len = sizeof(s), \
		.check = f }

static const struct ipc_type_info ipc_types[IPC_TYPE__END] = {
	FIXED(IPC_HELLO, "HELLO", DIR_W2S, RID_ZERO, struct ipc_hello, chk_hello),
	FIXED(IPC_READY, "READY", DIR_W2S, RID_ZERO, struct ipc_ready, chk_ready),
	[IPC_SUBMIT] = { .name = "SUBMIT",
			 .dir = DIR_S2W,
			 .rid = RID_SET,
			 .min_len = IPC_SUBMIT_FIXED + 4,
			 .max_len = sizeof(struct ipc_submit),
			 .elem = 4,
			 .check = chk_submit },
	[IPC_PROMPT_CHUNK] = { .name = "PROMPT_CHUNK",
			       .dir = DIR_S2W,
			       .rid = RID_SET,
			       .min_len = IPC_CHUNK_FIXED + 4,
			       .max_len = sizeof(struct ipc_prompt_chunk),
			       .elem = 4,
			       .check = chk_chunk },
	FIXED(IPC_CANCEL, "CANCEL", DIR_S2W, RID_SET, struct ipc_cancel, chk_cancel),
	FIXED(IPC_TOKEN, "TOKEN", DIR_W2S, RID_SET, struct ipc_token, chk_token),
	FIXED(IPC_DONE, "DONE", DIR_W2S, RID_SET, struct ipc_done, chk_done),
	FIXED(IPC_ERROR, "ERROR", DIR_ANY, RID_ANY, struct ipc_error, chk_error),
	FIXED(IPC_STATS, "STATS", DIR_W2S, RID_ZERO, struct ipc_stats, chk_stats),
	FIXED(IPC_PING, "PING", DIR_ANY, RID_ANY, struct ipc_ping, NULL),
	FIXED(IPC_PONG, "PONG", DIR_ANY, RID_ANY, struct ipc_ping, NULL),
	FIXED(IPC_SHUTDOWN, "SHUTDOWN", DIR_S2W, RID_ZERO, struct ipc_shutdown, chk_shutdown),
	FIXED(IPC_RELOAD, "RELOAD", DIR_S2W, RID_ZERO, struct ipc_reload, chk_reload),
	[IPC_LOGPROBS] = { .name = "LOGPROBS",
			   .dir = DIR_W2S,
			   .rid = RID_SET,
			   .min_len = IPC_LOGPROBS_FIXED,
			   .max_len = sizeof(struct ipc_logprobs),
			   .elem = sizeof(struct ipc_top_logprob),
			   .check = chk_logprobs },
	[IPC_XFER_DESC] = { .name = "XFER_DESC",
			    .dir = DIR_ANY,
			    .rid = RID_ZERO,
			    .min_len = IPC_DESC_FIXED + 1,
			    .max_len = sizeof(struct ipc_xfer_desc),
			    .elem = 1,
			    .check = chk_desc,
			    .fds = true },
	[IPC_LEASE] = { .name = "LEASE",
			.dir = DIR_S2W,
			.rid = RID_SET,
			.min_len = IPC_LEASE_FIXED,
			.max_len = sizeof(struct ipc_lease),
			.elem = 4,
			.check = chk_lease },
	[IPC_LEASED] = { .name = "LEASED",
			 .dir = DIR_W2S,
			 .rid = RID_SET,
			 .min_len = IPC_LEASED_FIXED + 4,
			 .max_len = sizeof(struct ipc_leased),
			 .elem = 4,
			 .check = chk_leased },
	FIXED(IPC_LEASE_FREE, "LEASE_FREE", DIR_S2W, RID_SET, struct ipc_lease_free,
	      chk_lease_free),
	FIXED(IPC_XFER_CONNECT, "XFER_CONNECT", DIR_S2W, RID_ZERO, struct ipc_xfer_connect,
	      chk_xconnect),
	FIXED(IPC_XFER_READY, "XFER_READY", DIR_W2S, RID_ZERO, struct ipc_xfer_ready, chk_xready),
	[IPC_SHIP] = { .name = "SHIP",
		       .dir = DIR_S2W,
		       .rid = RID_SET,
		       .min_len = IPC_SHIP_FIXED + 4,
		       .max_len = sizeof(struct ipc_ship),
		       .elem = 4,
		       .check = chk_ship },
	[IPC_PREFILLED] = { .name = "PREFILLED",
			    .dir = DIR_W2S,
			    .rid = RID_SET,
			    .min_len = IPC_KV_RECORD_FIXED,
			    .max_len = sizeof(struct ipc_kv_record),
			    .elem = sizeof(struct ipc_top_logprob),
			    .check = chk_kv_record },
	[IPC_ADOPT] = { .name = "ADOPT",
			.dir = DIR_S2W,
			.rid = RID_SET,
			.min_len = IPC_KV_RECORD_FIXED,
			.max_len = sizeof(struct ipc_kv_record),
			.elem = sizeof(struct ipc_top_logprob),
			.check = chk_kv_record },
};

/* Four independent lanes (a multiply chain each), folded at the end of every call. */
uint64_t ipc_kv_checksum(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	const uint64_t k = 0x9e3779b97f4a7c15ull;
	uint64_t l[4] = { h ^ 1, h ^ 2, h ^ 3, h ^ 4 };
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		for (int j = 0; j < 4; j++) {
			uint64_t w;

			memcpy(&w, b + i + 8 * (size_t)j, 8);
			l[j] = (l[j] ^ w) * k;
			l[j] ^= l[j] >> 31;
		}
	}
	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, b + i, 8);
		l[0] = ((l[0] ^ w) * k) ^ (l[0] >> 29);
	}
	for (; i < n; i++)
		l[1] = (l[1] ^ b[i]) * k;
	h = (uint64_t)n;
	for (int j = 0; j < 4; j++) {
		h = (h ^ l[j]) * k;
		h ^= h >> 32;
	}
	return h;
}

const char *ipc_type_name(unsigned type)
{
	if (type >= IPC_TYPE__END || !ipc_types[type].name)
		return "?";
	return ipc_types[type].name;
}

int ipc_validate(enum ipc_end from, const struct ipc_hdr *h, const void *payload,
		 const char **reason)
{
	const struct ipc_type_info *ti;
	const char *why = NULL;
	int err = -EPROTO;

	if (h->magic != IPC_MAGIC) {
		why = "bad magic";
		goto fail;
	}
	if (h->version != IPC_VERSION) {
		why = "protocol version mismatch";
		err = -EPROTONOSUPPORT;
		goto fail;
	}
	if (h->flags) {
		why = "unknown header flags";
		goto fail;
	}
	if (h->type >= IPC_TYPE__END || !ipc_types[h->type].name) {
		why = "unknown message type";
		goto fail;
	}
	ti = &ipc_types[h->type];
	if (!(ti->dir & (from == IPC_END_SUPERVISOR ? DIR_S2W : DIR_W2S))) {
		why = "message type not allowed in this direction";
		goto fail;
	}
	if ((ti->rid == RID_ZERO && h->req_id) || (ti->rid == RID_SET && !h->req_id)) {
		why = "request id present where none belongs, or missing";
		goto fail;
	}
	err = -EMSGSIZE;
	if (h->len > IPC_MAX_PAYLOAD) {
		why = "payload longer than IPC_MAX_PAYLOAD";
		goto fail;
	}
	if (h->len < ti->min_len || h->len > ti->max_len ||
	    (ti->elem && (h->len - ti->min_len) % ti->elem)) {
		why = "payload length does not fit the message type";
		goto fail;
	}
	err = -EBADMSG;
	if (ti->check && (why = ti->check(payload, h->len)))
		goto fail;
	return 0;
fail:
	if (reason)
		*reason = why;
	return err;
}

/* Kills the channel once; the first cause wins and is logged. */
static int chan_fail(struct ipc_chan *c, int err, const char *why, const struct ipc_hdr *h)
{
	if (c->err)
		return c->err;
	c->err = err;
	if (h)
		snprintf(c->reason, sizeof(c->reason), "%s (type %u %s, len %u, req %llu)", why,
			 (unsigned)h->type, ipc_type_name(h->type), (unsigned)h->len,
			 (unsigned long long)h->req_id);
	else
		snprintf(c->reason, sizeof(c->reason), "%s", why);
	/* A peer that closed is the owner's news to tell (exit, crash); a violation is ours. */
	duet_log(err == -EPIPE || err == -ECONNRESET ? DUET_LOG_DEBUG : DUET_LOG_WARN, "ipc",
		 "channel fd %d (%s end) dead: %s", c->fd,
		 c->end == IPC_END_SUPERVISOR ? "supervisor" : "worker", c->reason);
	return err;
}

int ipc_chan_create(int fd, enum ipc_end end, size_t queue_bytes, struct ipc_chan **out)
{
	struct ipc_chan *c;
	int type = 0, fl;
	socklen_t sl = sizeof(type);
	int err;

	*out = NULL;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0) {
		err = -errno;
		log_error("ipc", "getsockopt(SO_TYPE) fd %d: %s", fd, strerror(errno));
		goto close_fd;
	}
	if (type != SOCK_SEQPACKET) {
		err = -EPROTOTYPE;
		log_error("ipc", "fd %d is not a SOCK_SEQPACKET socket", fd);
		goto close_fd;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		err = -errno;
		log_error("ipc", "fcntl fd %d: %s", fd, strerror(errno));
		goto close_fd;
	}
	if (!queue_bytes)
		queue_bytes = IPC_QUEUE_DEFAULT;
	if (queue_bytes < IPC_FRAME_MAX)
		queue_bytes = IPC_FRAME_MAX;
	c = duet_calloc(1, sizeof(*c));
	if (!c) {
		err = -ENOMEM;
		goto close_fd;
	}
	c->q = duet_malloc(queue_bytes);
	if (!c->q) {
		err = -ENOMEM;
		goto free_chan;
	}
	c->fd = fd;
	c->end = end;
	c->q_cap = queue_bytes;
	*out = c;
	return 0;

free_chan:
	duet_free(c);
close_fd:
	close(fd);
	return err;
}

void ipc_chan_destroy(struct ipc_chan *c)
{
	if (!c)
		return;
	close(c->fd);
	duet_free(c->q);
	duet_free(c);
}

int ipc_chan_fd(const struct ipc_chan *c)
{
	return c->fd;
}

size_t ipc_chan_queued(const struct ipc_chan *c)
{
	return c->q_frames;
}

int ipc_chan_error(const struct ipc_chan *c)
{
	return c->err;
}

const char *ipc_chan_error_reason(const struct ipc_chan *c)
{
	return c->err ? c->reason : "";
}

/* Ring position -> up to two spans of n bytes starting at offset off from the head. */
static int ring_iov(const struct ipc_chan *c, size_t off, size_t n, struct iovec iov[2])
{
	size_t pos = (c->q_head + off) % c->q_cap;
	size_t first = c->q_cap - pos < n ? c->q_cap - pos : n;

	iov[0] = (struct iovec){ .iov_base = c->q + pos, .iov_len = first };
	if (first == n)
		return 1;
	iov[1] = (struct iovec){ .iov_base = c->q, .iov_len = n - first };
	return 2;
}

static void ring_put(struct ipc_chan *c, const void *src, size_t n)
{
	struct iovec iov[2];
	int k = ring_iov(c, c->q_used, n, iov);

	memcpy(iov[0].iov_base, src, iov[0].iov_len);
	if (k == 2)
		memcpy(iov[1].iov_base, (const uint8_t *)src + iov[0].iov_len, iov[1].iov_len);
	c->q_used += n;
}

/*
 * One sendmsg of a whole frame, with n_fds descriptors (SCM_RIGHTS) when
 * n_fds > 0.  1 sent, 0 socket full, < 0 channel dead.
 */
static int send_frame(struct ipc_chan *c, struct iovec *iov, int n_iov, const int *fds,
		      unsigned n_fds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * IPC_MAX_FDS)];
	} cm;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n_iov };

	if (n_fds) {
		struct cmsghdr *cmh;

		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		cmh = CMSG_FIRSTHDR(&mh);
		cmh->cmsg_level = SOL_SOCKET;
		cmh->cmsg_type = SCM_RIGHTS;
		cmh->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(cmh), fds, sizeof(int) * n_fds);
	}
	for (;;) {
		if (sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
			return 1; /* seqpacket: all of it or nothing */
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
			return 0;
		if (errno == EPIPE || errno == ECONNRESET)
			return chan_fail(c, -errno, "peer closed", NULL);
		log_error("ipc", "sendmsg fd %d: %s", c->fd, strerror(errno));
		return chan_fail(c, -errno, "sendmsg failed", NULL);
	}
}

static struct ipc_hdr frame_hdr(enum ipc_type type, uint64_t req_id, uint32_t len)
{
	return (struct ipc_hdr){
		.magic = IPC_MAGIC,
		.version = IPC_VERSION,
		.type = (uint16_t)type,
		.len = len,
		.req_id = req_id,
	};
}

int ipc_flush(struct ipc_chan *c)
{
	while (!c->err && c->q_frames) {
		struct ipc_hdr h;
		struct iovec hv[2], fv[4];
		int k, n, r;
		size_t flen;

		k = ring_iov(c, 0, sizeof(h), hv);
		memcpy(&h, hv[0].iov_base, hv[0].iov_len);
		if (k == 2)
			memcpy((uint8_t *)&h + hv[0].iov_len, hv[1].iov_base, hv[1].iov_len);
		flen = sizeof(h) + h.len;
		n = ring_iov(c, 0, flen, fv);
		r = send_frame(c, fv, n, NULL, 0);
		if (r <= 0)
			return r < 0 ? r : (int)c->q_frames;
		c->q_head = (c->q_head + flen) % c->q_cap;
		c->q_used -= flen;
		c->q_frames--;
	}
	if (!c->q_used)
		c->q_head = 0;
	return c->err ? c->err : (int)c->q_frames;
}

int ipc_send(struct ipc_chan *c, enum ipc_type type, uint64_t req_id, const void *payload,
	     uint32_t len)
{
	struct ipc_hdr h = frame_hdr(type, req_id, len);
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)payload, .iov_len = len },
	};
	const char *why = NULL;
	int r;

	if (c->err)
		return c->err;
	if ((unsigned)type >= IPC_TYPE__END || (len && !payload) ||
	    ipc_validate(c->end, &h, payload, &why) < 0) {
		log_error("ipc", "refusing to send invalid %s frame (len %u): %s",
			  ipc_type_name(type), len, why ? why : "bad arguments");
		return -EINVAL;
	}
	if (c->q_frames) {
		r = ipc_flush(c);
		if (r < 0)
			return r;
	}
	if (!c->q_frames) {
		r = send_frame(c, iov, len ? 2 : 1, NULL, 0);
		if (r != 0)
			return r < 0 ? r : 0;
	}
	if (c->q_cap - c->q_used < sizeof(h) + len)
		return -ENOBUFS;
	ring_put(c, &h, sizeof(h));
	ring_put(c, payload, len);
	c->q_frames++;
	return 0;
}

int ipc_send_fds(struct ipc_chan *c, enum ipc_type type, uint64_t req_id, const void *payload,
		 uint32_t len, const int *fds, unsigned n_fds)
{
	struct ipc_hdr h = frame_hdr(type, req_id, len);
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)payload, .iov_len = len },
	};
	const char *why = NULL;
	int r;

	if (c->err)
		return c->err;
	if ((unsigned)type >= IPC_TYPE__END || !ipc_types[type].fds || !payload ||
	    n_fds > IPC_MAX_FDS || (n_fds && !fds) || ipc_validate(c->end, &h, payload, &why) < 0 ||
	    (type == IPC_XFER_DESC && ((const struct ipc_xfer_desc *)payload)->n_fds != n_fds)) {
		log_error("ipc", "refusing to send invalid %s frame with %u fds: %s",
			  ipc_type_name(type), n_fds, why ? why : "bad arguments");
		return -EINVAL;
	}
	/* Order: what is queued goes first; this frame is never queued (fds are not bytes). */
	if (c->q_frames) {
		r = ipc_flush(c);
		if (r < 0)
			return r;
		if (r > 0)
			return -EAGAIN;
	}
	r = send_frame(c, iov, 2, fds, n_fds);
	return r < 0 ? r : r ? 0 : -EAGAIN;
}

/* Closes the fds a refused frame brought along. */
static void close_fds(struct ipc_msg *m)
{
	for (unsigned i = 0; i < m->n_fds; i++)
		close(m->fds[i]);
	m->n_fds = 0;
}

int ipc_recv(struct ipc_chan *c, struct ipc_msg *m)
{
	struct iovec iov[2] = {
		{ .iov_base = &m->hdr, .iov_len = sizeof(m->hdr) },
		{ .iov_base = &m->u, .iov_len = sizeof(m->u) },
	};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * IPC_MAX_FDS)];
	} cm;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	const char *why = NULL;
	ssize_t n;
	int err;

	m->n_fds = 0;
	if (c->err)
		return c->err;
	for (;;) {
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno == ECONNRESET)
			return chan_fail(c, -ECONNRESET, "peer reset the connection", NULL);
		log_error("ipc", "recvmsg fd %d: %s", c->fd, strerror(errno));
		return chan_fail(c, -errno, "recvmsg failed", NULL);
	}
	/* Whatever fds came are ours now: keep them with the frame or close them. */
	for (struct cmsghdr *cmh = CMSG_FIRSTHDR(&mh); cmh; cmh = CMSG_NXTHDR(&mh, cmh)) {
		if (cmh->cmsg_level != SOL_SOCKET || cmh->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (cmh->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cmh) + i * sizeof(int), sizeof(int));
			if (m->n_fds < IPC_MAX_FDS)
				m->fds[m->n_fds++] = fd;
			else
				close(fd);
		}
	}
	/* Frames are never empty, so 0 bytes is end of stream. */
	if (n == 0) {
		close_fds(m);
		return chan_fail(c, -EPIPE, "peer closed", NULL);
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		close_fds(m);
		return chan_fail(c, -EPROTO, "more file descriptors than IPC_MAX_FDS", NULL);
	}
	err = 0;
	if ((size_t)n < sizeof(m->hdr))
		err = chan_fail(c, -EPROTO, "frame shorter than a header", NULL);
	else if (mh.msg_flags & MSG_TRUNC)
		err = chan_fail(c, -EMSGSIZE, "frame longer than IPC_FRAME_MAX", &m->hdr);
	else if ((size_t)n - sizeof(m->hdr) != m->hdr.len)
		err = chan_fail(c, -EMSGSIZE, "header length does not match frame size", &m->hdr);
	else if ((err = ipc_validate(c->end == IPC_END_SUPERVISOR ? IPC_END_WORKER
								  : IPC_END_SUPERVISOR,
				     &m->hdr, &m->u, &why)))
		err = chan_fail(c, err, why, &m->hdr);
	else if (m->n_fds && !ipc_types[m->hdr.type].fds)
		err = chan_fail(c, -EPROTO, "file descriptors with a frame that takes none",
				&m->hdr);
	else if (m->hdr.type == IPC_XFER_DESC && m->u.desc.n_fds != m->n_fds)
		err = chan_fail(c, -EPROTO, "XFER_DESC: n_fds does not match the fds received",
				&m->hdr);
	if (err) {
		close_fds(m);
		return err;
	}
	return 1;
}
