/* SPDX-License-Identifier: MIT */
/*
 * Supervisor <-> worker channel (DESIGN.md "Processes").
 *
 * One AF_UNIX SOCK_SEQPACKET socketpair per worker.  Seqpacket because the
 * kernel keeps message boundaries and delivers or refuses a whole message:
 * one sendmsg() is one frame, one recvmsg() is one frame, there are no
 * partial reads or writes to reassemble, and a frame longer than the
 * receiver's buffer is reported (MSG_TRUNC) instead of desynchronising the
 * stream.  The peer is always a process of the same host and the same
 * binary, so every field is in host byte order (little-endian on every
 * supported target) and structs are sent as they are laid out in memory;
 * every struct has explicit widths, explicit padding and a static_assert on
 * its size, and the version field changes whenever any of them does.
 *
 * Frame = struct ipc_hdr (24 bytes) + len payload bytes, len <= IPC_MAX_PAYLOAD
 * (64 KiB).  The payload is the type's struct; types with an array (SUBMIT,
 * PROMPT_CHUNK, LOGPROBS, LEASE, LEASED, SHIP, PREFILLED, ADOPT) send only
 * the used part of it.  64 KiB keeps one frame well under the default
 * AF_UNIX send buffer (wmem_default, ~208 KiB), so a frame never needs
 * tuning of socket options; a prompt longer than one
 * frame (IPC_SUBMIT_MAX_TOKENS, ~16K tokens) is sent as one SUBMIT with the
 * first tokens followed by PROMPT_CHUNK frames, which lets prompts reach any
 * context length (IPC_MAX_PROMPT) with a fixed receive buffer.
 *
 * Validation: every received frame is checked before ipc_recv returns it:
 * magic, version, header flags, type, direction (a worker does not send
 * SUBMIT), request id (zero or not, per type), length (exact for fixed
 * structs; fixed part + element size * count for arrays), enums, bit
 * masks, counts against each other, NUL-terminated and NUL-padded strings,
 * finite floats in range, sorted lists sorted.  The first violation kills
 * the channel: ipc_recv and ipc_send return the same negative code from
 * then on, and the supervisor treats the worker as crashed.  Senders run
 * the same validator, so a bug on the sending side is caught there
 * (-EINVAL, channel stays alive) rather than killing the peer.
 *
 * Cross-frame state (a PROMPT_CHUNK must follow its SUBMIT at the right
 * offset, a TOKEN must name a known request, a LOGPROBS must come only for
 * a request that asked, right before the TOKEN of its index) is the
 * receiver's to check.
 *
 * Errors (negative errno): -EPROTO malformed header (magic, flags, type,
 * direction, request id, short frame), -EPROTONOSUPPORT version mismatch,
 * -EMSGSIZE length beyond IPC_MAX_PAYLOAD or not the type's length,
 * -EBADMSG payload rejected by the type's validator, -EPIPE / -ECONNRESET
 * peer gone.  ipc_chan_error_reason() says what exactly, for the log.
 */
#ifndef DUET_IPC_H
#define DUET_IPC_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define IPC_MAGIC 0x43504944u /* "DIPC" in memory on little-endian */
/*
 * Protocol version.  2: logprobs, bias; 3: XFER_DESC, LEASE*; 4: SHIP,
 * PREFILLED, ADOPT; 5: decode-side prefix sharing (LEASE salt and tokens,
 * LEASED n_cached, SHIP first).
 */
#define IPC_VERSION 5
#define IPC_MAX_PAYLOAD (64u * 1024u)
#define IPC_NAME_MAX 128	  /* model name field, NUL included */
#define IPC_ERRMSG_MAX 256	  /* ERROR message field, NUL included */
#define IPC_MAX_PROMPT (1u << 24) /* tokens in one prompt, all chunks */
#define IPC_MAX_TOP_LOGPROBS 20	  /* top alternatives per generated token */
#define IPC_MAX_BIAS 1024	  /* logit-bias entries in one SUBMIT */

/* Types.  Values are wire values: append, never renumber. */
enum ipc_type {
	IPC_HELLO = 1,	  /* W->S  process up: pid, partition, role, model */
	IPC_READY,	  /* W->S  model loaded: n_ctx, n_vocab, KV blocks */
	IPC_SUBMIT,	  /* S->W  a request: sampling, limits, first prompt tokens */
	IPC_PROMPT_CHUNK, /* S->W  more prompt tokens of a SUBMIT */
	IPC_CANCEL,	  /* S->W  stop a request */
	IPC_TOKEN,	  /* W->S  one generated token */
	IPC_DONE,	  /* W->S  a request finished (after its last TOKEN) */
	IPC_ERROR,	  /* both  a request (req_id != 0) or the worker failed */
	IPC_STATS,	  /* W->S  periodic counters */
	IPC_PING,	  /* both  liveness; req_id is a nonce */
	IPC_PONG,	  /* both  answer to PING, same req_id and payload */
	IPC_SHUTDOWN,	  /* S->W  drain or stop */
	IPC_RELOAD,	  /* S->W  apply runtime settings */
	IPC_LOGPROBS,	  /* W->S  logprobs of one generated token (before its TOKEN) */
	IPC_XFER_DESC,	  /* both  a KV transfer endpoint's descriptor, with its fds */
	IPC_LEASE,	  /* S->W  decode side: reserve the blocks of an incoming prompt */
	IPC_LEASED,	  /* W->S  the reservation: lease id, epoch, block ids */
	IPC_LEASE_FREE,	  /* S->W  give a reservation back */
	IPC_XFER_CONNECT, /* S->W  make a KV transfer endpoint for a peer partition */
	IPC_XFER_READY,	  /* W->S  that endpoint is connected (or why not) */
	IPC_SHIP,	  /* S->W  prefill side: where the next SUBMIT's KV goes (sent before it) */
	IPC_PREFILLED,	  /* W->S  prefill side: that KV is written: the completion record */
	IPC_ADOPT,	  /* S->W  decode side: the next SUBMIT continues a completed transfer */
	IPC_TYPE__END
};

/* Which end of the socketpair a channel is; decides what it may send and receive. */
enum ipc_end {
	IPC_END_SUPERVISOR,
	IPC_END_WORKER,
};

enum ipc_role { IPC_ROLE_PREFILL, IPC_ROLE_DECODE, IPC_ROLE_MIXED, IPC_ROLE__END };

/* Why a request ended (TOKEN with IPC_TOK_LAST, DONE). */
enum ipc_finish {
	IPC_FINISH_NONE,      /* not finished (TOKEN without IPC_TOK_LAST) */
	IPC_FINISH_LENGTH,    /* max_tokens produced */
	IPC_FINISH_EOG,	      /* end-of-generation token */
	IPC_FINISH_CONTEXT,   /* context full */
	IPC_FINISH_STOP,      /* stop string (supervisor side) */
	IPC_FINISH_CANCELLED, /* CANCEL received */
	IPC_FINISH_ERROR,     /* see the ERROR frame sent before DONE */
	IPC_FINISH__END
};

enum ipc_cancel_reason {
	IPC_CANCEL_CLIENT,   /* client went away */
	IPC_CANCEL_STOP,     /* stop string matched */
	IPC_CANCEL_DEADLINE, /* request deadline passed */
	IPC_CANCEL_ADMIN,    /* operator */
	IPC_CANCEL_REROUTE,  /* moved to another partition */
	IPC_CANCEL__END
};

enum ipc_shutdown_mode {
	IPC_SHUTDOWN_DRAIN, /* finish running requests, accept none, then exit */
	IPC_SHUTDOWN_NOW,   /* cancel everything and exit */
	IPC_SHUTDOWN__END
};

/* Frame header; 24 bytes, offsets 0, 4, 6, 8, 12, 16. */
struct ipc_hdr {
	uint32_t magic;	  /* IPC_MAGIC */
	uint16_t version; /* IPC_VERSION */
	uint16_t type;	  /* enum ipc_type */
	uint32_t len;	  /* payload bytes after the header, <= IPC_MAX_PAYLOAD */
	uint32_t flags;	  /* none defined in version 1: must be 0 */
	uint64_t req_id;  /* request id; 0 for channel-level messages; PING nonce */
};
static_assert(sizeof(struct ipc_hdr) == 24, "ipc_hdr wire size");

#define IPC_FRAME_MAX (sizeof(struct ipc_hdr) + IPC_MAX_PAYLOAD)

/* HELLO: 144 bytes.  req_id 0. */
struct ipc_hello {
	int32_t pid;		  /* > 0 */
	uint32_t partition;	  /* index in the config */
	uint32_t role;		  /* enum ipc_role */
	uint32_t reserved;	  /* 0 */
	char model[IPC_NAME_MAX]; /* NUL-terminated, NUL-padded */
};
static_assert(sizeof(struct ipc_hello) == 144, "ipc_hello wire size");

/* READY: 24 bytes.  req_id 0. */
struct ipc_ready {
	uint32_t n_ctx;		  /* tokens, > 0 */
	uint32_t n_vocab;	  /* (0, 1 << 24] */
	uint32_t kv_blocks_total; /* > 0 */
	uint32_t block_tokens;	  /* > 0 */
	uint32_t max_batch;	  /* sequences per step, > 0 */
	uint32_t reserved;	  /* 0 */
};
static_assert(sizeof(struct ipc_ready) == 24, "ipc_ready wire size");

/* Sampling parameters (struct smp_params without logit bias); 40 bytes, ranges as smp_params. */
struct ipc_sampling {
	float temperature;	 /* [0, 100]; 0 = greedy */
	float top_p;		 /* (0, 1] */
	float min_p;		 /* [0, 1] */
	float repeat_penalty;	 /* (0, 10] */
	float presence_penalty;	 /* [-2, 2] */
	float frequency_penalty; /* [-2, 2] */
	int32_t top_k;		 /* >= 0; 0 = off */
	int32_t repeat_last_n;	 /* [0, 1 << 20] */
	uint64_t seed;
};
static_assert(sizeof(struct ipc_sampling) == 40, "ipc_sampling wire size");

/* One logit-bias entry of a SUBMIT (struct smp_bias on the wire); 8 bytes. */
struct ipc_bias {
	int32_t token; /* >= 0 (n_vocab is the worker's check) */
	float bias;    /* [-100, 100] (SMP_MAX_BIAS), or -INFINITY to ban the token */
};
static_assert(sizeof(struct ipc_bias) == 8, "ipc_bias wire size");

#define IPC_SUBMIT_LOGPROBS 1u /* send a LOGPROBS frame before every TOKEN */
#define IPC_SUBMIT__MASK 1u

/*
 * SUBMIT: 80-byte fixed part + n_tokens * 4 + n_bias * 8 bytes
 * (ipc_submit_len2()).  req_id != 0.  tokens[] holds prompt tokens
 * [0, n_tokens); the n_bias logit-bias entries (struct ipc_bias,
 * ipc_submit_bias()) follow right after tokens[n_tokens - 1].  When
 * n_tokens < n_prompt, PROMPT_CHUNK frames with the same req_id carry the
 * rest of the prompt.  IPC_SUBMIT_MAX_TOKENS is the most tokens a SUBMIT
 * without bias entries holds; a sender with bias entries puts fewer tokens
 * in it (n_tokens + 2 * n_bias <= IPC_SUBMIT_MAX_TOKENS: with
 * IPC_MAX_BIAS entries, at most IPC_SUBMIT_MAX_TOKENS - 2048 tokens) and
 * sends the rest in PROMPT_CHUNKs as usual.
 *
 * Byte offsets: sampling 0, salt 40, max_tokens 48, priority 52,
 * n_prompt 56, n_tokens 60, logprobs_flags 64, n_top 68, n_bias 72,
 * reserved 76, tokens 80.
 */
#define IPC_SUBMIT_FIXED 80u
#define IPC_SUBMIT_MAX_TOKENS ((IPC_MAX_PAYLOAD - IPC_SUBMIT_FIXED) / 4u)
struct ipc_submit {
	struct ipc_sampling sampling;
	uint64_t salt;		 /* prefix-cache tenant salt */
	uint32_t max_tokens;	 /* tokens to generate, > 0 */
	int32_t priority;	 /* larger runs first; any value */
	uint32_t n_prompt;	 /* whole prompt, (0, IPC_MAX_PROMPT] */
	uint32_t n_tokens;	 /* in this frame, (0, n_prompt]; see above for the maximum */
	uint32_t logprobs_flags; /* IPC_SUBMIT_* bits; 0 = no LOGPROBS frames */
	uint32_t n_top;		 /* [0, IPC_MAX_TOP_LOGPROBS] alternatives per token; 0 without
				    IPC_SUBMIT_LOGPROBS */
	uint32_t n_bias;	 /* [0, IPC_MAX_BIAS] logit-bias entries after tokens[] */
	uint32_t reserved;	 /* 0 */
	int32_t tokens[IPC_SUBMIT_MAX_TOKENS]; /* >= 0 each (n_vocab is the worker's check) */
};
static_assert(offsetof(struct ipc_submit, salt) == 40, "ipc_submit layout");
static_assert(offsetof(struct ipc_submit, n_tokens) == 60, "ipc_submit layout");
static_assert(offsetof(struct ipc_submit, logprobs_flags) == 64, "ipc_submit layout");
static_assert(offsetof(struct ipc_submit, reserved) == 76, "ipc_submit layout");
static_assert(offsetof(struct ipc_submit, tokens) == IPC_SUBMIT_FIXED, "ipc_submit layout");
static_assert(IPC_SUBMIT_FIXED % 8 == 0, "ipc_submit fixed part 8-byte aligned");
static_assert(sizeof(struct ipc_submit) == IPC_MAX_PAYLOAD, "ipc_submit wire size");
static_assert(2u * IPC_MAX_BIAS < IPC_SUBMIT_MAX_TOKENS, "bias entries leave room for tokens");

/* PROMPT_CHUNK: 16-byte fixed part + n_tokens * 4 bytes.  req_id != 0. */
#define IPC_CHUNK_FIXED 16u
#define IPC_CHUNK_MAX_TOKENS ((IPC_MAX_PAYLOAD - IPC_CHUNK_FIXED) / 4u)
struct ipc_prompt_chunk {
	uint32_t n_prompt; /* as in the SUBMIT */
	uint32_t offset;   /* index of tokens[0] in the prompt, > 0 */
	uint32_t n_tokens; /* > 0, offset + n_tokens <= n_prompt; == n_prompt: the last chunk */
	uint32_t reserved; /* 0 */
	int32_t tokens[IPC_CHUNK_MAX_TOKENS];
};
static_assert(offsetof(struct ipc_prompt_chunk, tokens) == IPC_CHUNK_FIXED, "chunk layout");
static_assert(sizeof(struct ipc_prompt_chunk) == IPC_MAX_PAYLOAD, "chunk wire size");

/* CANCEL: 8 bytes.  req_id != 0. */
struct ipc_cancel {
	uint32_t reason;   /* enum ipc_cancel_reason */
	uint32_t reserved; /* 0 */
};
static_assert(sizeof(struct ipc_cancel) == 8, "ipc_cancel wire size");

#define IPC_TOK_FIRST 1u /* first generated token of the request */
#define IPC_TOK_LAST 2u	 /* last one; finish != IPC_FINISH_NONE exactly then */
#define IPC_TOK__MASK 3u

/* TOKEN: 32 bytes.  req_id != 0.  Times are CLOCK_MONOTONIC ns. */
struct ipc_token {
	int32_t token;	  /* >= 0 */
	uint32_t index;	  /* 0-based among generated tokens; 0 exactly with IPC_TOK_FIRST */
	uint32_t flags;	  /* IPC_TOK_* */
	uint32_t finish;  /* enum ipc_finish */
	uint64_t t_ns;	  /* when the token was sampled */
	uint64_t step_ns; /* duration of the step that produced it */
};
static_assert(sizeof(struct ipc_token) == 32, "ipc_token wire size");

/* DONE: 56 bytes.  req_id != 0.  Times: the worker's CLOCK_MONOTONIC ns. */
struct ipc_done {
	uint32_t finish;      /* enum ipc_finish, != IPC_FINISH_NONE */
	uint32_t n_prompt;    /* prompt tokens */
	uint32_t n_cached;    /* of them served from the prefix cache, <= n_prompt */
	uint32_t n_generated; /* tokens sent */
	uint32_t n_preempted; /* times the request was preempted */
	uint32_t reserved;    /* 0 */
	uint64_t t_first_ns;  /* first token sampled (0: none) */
	uint64_t t_done_ns;   /* finished */
	uint64_t t_arrival_ns; /* the request reached the scheduler (0: never) */
	uint64_t t_sched_ns;   /* first scheduled into a step (0: never) */
};
static_assert(sizeof(struct ipc_done) == 56, "ipc_done wire size");

/* ERROR: 264 bytes.  req_id: the failed request, or 0 for the worker itself. */
struct ipc_error {
	int32_t code;		  /* < 0: -errno or -DUET_E* */
	uint32_t reserved;	  /* 0 */
	char msg[IPC_ERRMSG_MAX]; /* NUL-terminated, NUL-padded */
};
static_assert(sizeof(struct ipc_error) == 264, "ipc_error wire size");

/* STATS: 112 bytes.  req_id 0.  Counters are cumulative since the worker started. */
struct ipc_stats {
	uint32_t running, waiting;		/* requests now */
	uint32_t kv_total;			/* blocks */
	uint32_t kv_used, kv_cached, kv_leased; /* sum <= kv_total; leased includes blocks
						   quarantined after an expired lease */
	uint64_t prefix_queries, prefix_hits;	/* hits <= queries */
	uint64_t prompt_tokens, gen_tokens;
	uint64_t preemptions;
	uint64_t steps;
	uint64_t step_ns_total, step_ns_max;
	uint64_t t_ns;		 /* CLOCK_MONOTONIC when sampled */
	uint64_t leases_expired; /* KV reservations that passed their deadline */
	uint64_t xfer_rejected;	 /* transfer operations refused here (bad range, stale record) */
};
static_assert(sizeof(struct ipc_stats) == 112, "ipc_stats wire size");

/* PING / PONG: 8 bytes.  req_id: any nonce; PONG echoes req_id and t_ns. */
struct ipc_ping {
	uint64_t t_ns; /* sender's CLOCK_MONOTONIC at PING */
};
static_assert(sizeof(struct ipc_ping) == 8, "ipc_ping wire size");

/* SHUTDOWN: 8 bytes.  req_id 0. */
struct ipc_shutdown {
	uint32_t mode;	      /* enum ipc_shutdown_mode */
	uint32_t deadline_ms; /* DRAIN: then as NOW; 0 = no deadline */
};
static_assert(sizeof(struct ipc_shutdown) == 8, "ipc_shutdown wire size");

#define IPC_RELOAD_LOG_LEVEL 1u /* apply log_level */
#define IPC_RELOAD__MASK 1u

/* RELOAD: 8 bytes.  req_id 0. */
struct ipc_reload {
	uint32_t what;	    /* IPC_RELOAD_* bits, at least one */
	uint32_t log_level; /* enum duet_log_level when IPC_RELOAD_LOG_LEVEL */
};
static_assert(sizeof(struct ipc_reload) == 8, "ipc_reload wire size");

/*
 * LOGPROBS: 16-byte fixed part + n_top * 8 bytes (ipc_logprobs_len()).
 * req_id != 0.  Sent, when the SUBMIT had IPC_SUBMIT_LOGPROBS, right before
 * the TOKEN frame with the same index.  Log-probabilities are natural
 * logarithms of the model's own distribution for that step (log-softmax of
 * the raw logits: before temperature, penalties and logit bias), each
 * finite or -inf, and <= 0.  top[] holds the n_top most likely tokens of
 * that distribution, by descending logprob (ties: lower id first); the
 * sampled token may or may not be among them.  n_top is the SUBMIT's n_top
 * (fewer only when the vocabulary is smaller).
 */
#define IPC_LOGPROBS_FIXED 16u
struct ipc_top_logprob {
	int32_t token; /* >= 0, distinct within top[] */
	float logprob; /* <= 0 or -inf */
};
static_assert(sizeof(struct ipc_top_logprob) == 8, "ipc_top_logprob wire size");

struct ipc_logprobs {
	uint32_t index; /* generated-token index, as the TOKEN's */
	int32_t token;	/* the sampled token, >= 0 (the TOKEN's) */
	float logprob;	/* of the sampled token, <= 0 or -inf */
	uint32_t n_top; /* [0, IPC_MAX_TOP_LOGPROBS] */
	struct ipc_top_logprob top[IPC_MAX_TOP_LOGPROBS]; /* [n_top], descending logprob */
};
static_assert(offsetof(struct ipc_logprobs, top) == IPC_LOGPROBS_FIXED, "ipc_logprobs layout");
static_assert(sizeof(struct ipc_logprobs) == IPC_LOGPROBS_FIXED + 8u * IPC_MAX_TOP_LOGPROBS,
	      "ipc_logprobs wire size");

/*
 * XFER_DESC: 16-byte fixed part + len bytes, with n_fds file descriptors
 * (SCM_RIGHTS) in the same datagram: the only frame that may carry fds.
 * req_id 0.  Worker -> supervisor: the descriptor of this worker's endpoint
 * for the peer partition `partition`; supervisor -> worker: the descriptor
 * of partition `partition`'s endpoint for this worker.  The bytes are the
 * transfer driver's (drivers/net/xfer.h), opaque here.
 */
#define IPC_MAX_FDS 8
#define IPC_DESC_FIXED 16u
#define IPC_DESC_MAX 1024u
struct ipc_xfer_desc {
	uint32_t partition; /* < IPC_MAX_PARTITION */
	uint32_t n_fds;	    /* fds with the frame, <= IPC_MAX_FDS */
	uint32_t len;	    /* bytes of desc, <= IPC_DESC_MAX */
	uint32_t reserved;  /* 0 */
	uint8_t desc[IPC_DESC_MAX];
};
#define IPC_MAX_PARTITION 4096
static_assert(offsetof(struct ipc_xfer_desc, desc) == IPC_DESC_FIXED, "ipc_xfer_desc layout");

/*
 * LEASE: 32-byte fixed part + n_tokens * 4.  req_id: the request the blocks
 * are for.  The decode worker reserves ceil(n_prompt / block_tokens) blocks
 * for owner (the prefill partition that will write them) for ttl_ms, then
 * answers LEASED (or ERROR with the same req_id: -ENOSPC, -EBUSY, -EINVAL,
 * -E2BIG).  Prefix sharing: tokens[] holds the prompt's first n_tokens
 * tokens (all of them, or fewer when the prompt does not fit one frame; 0:
 * no sharing).  The decode worker matches the leading whole blocks of them,
 * at most (n_prompt - 1) / block_tokens (the last prompt token is always
 * computed), against its prefix cache under salt; the blocks found lead the
 * table, held by the lease (LEASED n_cached), and only the rest is reserved
 * fresh.
 *
 * Byte offsets: n_prompt 0, ttl_ms 4, owner 8, salt 16, n_tokens 24,
 * reserved 28, tokens 32.
 */
#define IPC_LEASE_FIXED 32u
#define IPC_LEASE_MAX_TOKENS ((IPC_MAX_PAYLOAD - IPC_LEASE_FIXED) / 4u)
struct ipc_lease {
	uint32_t n_prompt; /* (0, IPC_MAX_PROMPT] */
	uint32_t ttl_ms;   /* (0, 3600000] */
	uint64_t owner;
	uint64_t salt;	   /* prefix-cache tenant salt of the prompt (the SUBMIT's) */
	uint32_t n_tokens; /* [0, n_prompt]: leading prompt tokens in tokens[] */
	uint32_t reserved; /* 0 */
	int32_t tokens[IPC_LEASE_MAX_TOKENS]; /* >= 0 each */
};
static_assert(offsetof(struct ipc_lease, salt) == 16, "ipc_lease layout");
static_assert(offsetof(struct ipc_lease, tokens) == IPC_LEASE_FIXED, "ipc_lease layout");
static_assert(sizeof(struct ipc_lease) == IPC_MAX_PAYLOAD, "ipc_lease wire size");

/* Payload bytes of a LEASE carrying n prompt tokens, n <= IPC_LEASE_MAX_TOKENS. */
static inline uint32_t ipc_lease_len(uint32_t n)
{
	return IPC_LEASE_FIXED + 4u * n;
}

/*
 * LEASED: 40-byte fixed part + n_blocks * 4.  req_id as the LEASE's.  With
 * the reservation comes what the prefill side needs to address the pool
 * (block b of layer l starts at (l * blocks_total + b) * block_bytes of
 * region `region`), and the ranges the writes land in are checked there.
 * blocks[] is the prompt's whole block table; its first n_cached entries
 * already hold the prompt's prefix (cached blocks the lease keeps from
 * eviction), so the prefill side writes only entries [n_cached, n_blocks)
 * (SHIP first).  The lease gives them back to the cache when it ends
 * unused (LEASE_FREE, deadline).
 *
 * Byte offsets: lease_id 0, n_blocks 4, epoch 8, region 16, blocks_total
 * 20, block_bytes 24, n_cached 32, reserved 36, blocks 40.
 */
#define IPC_LEASED_FIXED 40u
#define IPC_LEASED_MAX_BLOCKS ((IPC_MAX_PAYLOAD - IPC_LEASED_FIXED) / 4u)
struct ipc_leased {
	int32_t lease_id;      /* >= 0 */
	uint32_t n_blocks;     /* > 0 */
	uint64_t epoch;
	uint32_t region;       /* the pool's region id in the decode endpoint's descriptor */
	uint32_t blocks_total; /* blocks in the decode pool: the layer stride; > every block id */
	uint64_t block_bytes;  /* bytes of one block of one layer, > 0 */
	uint32_t n_cached;     /* < n_blocks: leading entries already holding the prefix */
	uint32_t reserved;     /* 0 */
	int32_t blocks[IPC_LEASED_MAX_BLOCKS]; /* >= 0 each, distinct; table order */
};
static_assert(offsetof(struct ipc_leased, n_cached) == 32, "ipc_leased layout");
static_assert(offsetof(struct ipc_leased, blocks) == IPC_LEASED_FIXED, "ipc_leased layout");

/* LEASE_FREE: 16 bytes.  req_id as the LEASE's. */
struct ipc_lease_free {
	int32_t lease_id;
	uint32_t reserved; /* 0 */
	uint64_t epoch;
};
static_assert(sizeof(struct ipc_lease_free) == 16, "ipc_lease_free wire size");

/*
 * XFER_CONNECT: 8 bytes, req_id 0.  The worker makes an endpoint for peer
 * partition `partition` and answers with its XFER_DESC; when the peer's
 * XFER_DESC arrives it connects and answers XFER_READY.
 */
struct ipc_xfer_connect {
	uint32_t partition; /* < IPC_MAX_PARTITION */
	uint32_t reserved;  /* 0 */
};
static_assert(sizeof(struct ipc_xfer_connect) == 8, "ipc_xfer_connect wire size");

/* XFER_READY: 8 bytes, req_id 0.  status 0: connected; < 0: why not (-errno or -DUET_E*). */
struct ipc_xfer_ready {
	uint32_t partition;
	int32_t status;
};
static_assert(sizeof(struct ipc_xfer_ready) == 8, "ipc_xfer_ready wire size");

/*
 * SHIP: 48-byte fixed part + n_blocks * 4.  req_id: the SUBMIT that follows
 * it on the same channel (a prefill worker).  That request runs with
 * max_tokens 1 and its KV goes, layer by layer as it is computed, through
 * the endpoint for decode partition `partition` into the leased blocks
 * (the LEASED fields); when every write has completed the worker sends
 * PREFILLED, then DONE.  Table entries below `first` (LEASED n_cached)
 * already hold the prefix on the decode side: they are computed here as
 * usual but not written.  The lease ends ttl_ms after the SHIP is sent
 * (less a margin the supervisor takes off): a write that would be posted
 * later fails the request instead, so no late write lands in blocks the
 * decode side gave to someone else.  IPC_SHIP_CHECKSUM: the record carries
 * a checksum of the whole table as computed here, entries below `first`
 * included (ipc_kv_checksum order: layer by layer, blocks in table order);
 * the forward pass is batch invariant, so the decode side's cached prefix
 * holds the same bytes.
 *
 * Byte offsets: partition 0, lease_id 4, epoch 8, region 16, blocks_total
 * 20, block_bytes 24, n_blocks 32, flags 36, ttl_ms 40, first 44, blocks 48.
 */
#define IPC_SHIP_CHECKSUM 1u
#define IPC_SHIP__MASK 1u
#define IPC_SHIP_FIXED 48u
#define IPC_SHIP_MAX_BLOCKS ((IPC_MAX_PAYLOAD - IPC_SHIP_FIXED) / 4u)
struct ipc_ship {
	uint32_t partition; /* the decode partition, < IPC_MAX_PARTITION */
	int32_t lease_id;   /* >= 0 */
	uint64_t epoch;
	uint32_t region;
	uint32_t blocks_total; /* > every block id */
	uint64_t block_bytes;  /* > 0 */
	uint32_t n_blocks;     /* > 0: ceil(n_prompt / block_tokens) */
	uint32_t flags;	       /* IPC_SHIP_* */
	uint32_t ttl_ms;       /* (0, 3600000]: the lease's time left; no write is posted after */
	uint32_t first;	       /* < n_blocks: entries [0, first) not written (LEASED n_cached) */
	int32_t blocks[IPC_SHIP_MAX_BLOCKS];
};
static_assert(offsetof(struct ipc_ship, first) == 44, "ipc_ship layout");
static_assert(offsetof(struct ipc_ship, blocks) == IPC_SHIP_FIXED, "ipc_ship layout");

/*
 * The completion record of one transfer: PREFILLED (prefill worker ->
 * supervisor, req_id the shipped request, after every write completed) and
 * ADOPT (supervisor -> decode worker, sent right before the SUBMIT it
 * applies to, which carries the same prompt).  72-byte fixed part + n_top *
 * 8 bytes.  The decode worker admits the request only when the lease
 * (lease_id, epoch) is live, n_tokens is the whole prompt, n_layers every
 * layer, the SUBMIT's prompt and salt are those of the lease's cached
 * prefix (LEASED n_cached) and, with IPC_KV_CHECKSUM, the lease's whole
 * table (that prefix included) hashes to checksum; anything else fails the
 * request (the blocks go back, cached ones to the cache).  first_token is
 * generated token 0; with IPC_KV_LOGPROBS its logprob records follow.
 */
#define IPC_KV_CHECKSUM 1u
#define IPC_KV_LOGPROBS 2u
#define IPC_KV__MASK 3u
#define IPC_KV_RECORD_FIXED 72u
struct ipc_kv_record {
	int32_t lease_id; /* >= 0 */
	uint32_t n_tokens; /* prompt tokens whose K/V the table holds (prefix + written), > 0 */
	uint64_t epoch;
	uint32_t n_layers;    /* layers written, > 0 */
	int32_t first_token;  /* >= 0 */
	uint32_t flags;	      /* IPC_KV_* */
	uint32_t n_top;	      /* [0, IPC_MAX_TOP_LOGPROBS]; 0 without IPC_KV_LOGPROBS */
	uint64_t checksum;    /* with IPC_KV_CHECKSUM; else 0 */
	uint64_t bytes;	      /* bytes written (entries from SHIP first on) */
	uint64_t t_first_ns;  /* first_token sampled (CLOCK_MONOTONIC) */
	uint64_t xfer_ns;     /* first write posted -> last write completed */
	float first_logprob;  /* with IPC_KV_LOGPROBS: <= 0 or -inf; else 0 */
	uint32_t writes;      /* write operations posted */
	struct ipc_top_logprob top[IPC_MAX_TOP_LOGPROBS];
};
static_assert(offsetof(struct ipc_kv_record, top) == IPC_KV_RECORD_FIXED, "kv record layout");

static inline uint32_t ipc_kv_record_len(uint32_t n_top)
{
	return IPC_KV_RECORD_FIXED + 8u * n_top;
}

/*
 * The checksum of a transfer: a 64-bit hash chained over the byte ranges
 * in the order above (each call folds one range into h).  Start from
 * IPC_KV_CHECKSUM_SEED.  Not cryptographic: it catches a torn, partial or
 * misdirected transfer, not a forger (the tcp driver authenticates peers).
 */
#define IPC_KV_CHECKSUM_SEED 0x6475657463736d31ull
uint64_t ipc_kv_checksum(uint64_t h, const void *p, size_t n);

/* A received frame: the header and its validated payload (hdr.len bytes of u). */
struct ipc_msg {
	struct ipc_hdr hdr;
	union {
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
		struct ipc_kv_record kv; /* PREFILLED, ADOPT */
		uint8_t raw[IPC_MAX_PAYLOAD];
	} u;
	/* XFER_DESC only: the fds that came with it, owned by the receiver from now on. */
	int fds[IPC_MAX_FDS];
	unsigned n_fds;
};

struct ipc_chan;

/*
 * Payload bytes of a SUBMIT carrying n_tokens prompt tokens and n_bias
 * logit-bias entries (n_tokens + 2 * n_bias <= IPC_SUBMIT_MAX_TOKENS).
 */
static inline uint32_t ipc_submit_len2(uint32_t n_tokens, uint32_t n_bias)
{
	return IPC_SUBMIT_FIXED + 4u * n_tokens + 8u * n_bias;
}

/* Payload bytes of a SUBMIT carrying n tokens and no bias entries, n <= IPC_SUBMIT_MAX_TOKENS. */
static inline uint32_t ipc_submit_len(uint32_t n)
{
	return ipc_submit_len2(n, 0);
}

/*
 * The bias entries of a SUBMIT: they start right after tokens[n_tokens - 1],
 * so n_tokens must be set first.  ipc_submit_bias_mut() is the sender's view
 * for filling them in.
 */
static inline const struct ipc_bias *ipc_submit_bias(const struct ipc_submit *s)
{
	return (const struct ipc_bias *)(const void *)(s->tokens + s->n_tokens);
}

static inline struct ipc_bias *ipc_submit_bias_mut(struct ipc_submit *s)
{
	return (struct ipc_bias *)(void *)(s->tokens + s->n_tokens);
}

/* Payload bytes of a LOGPROBS frame with n_top alternatives (<= IPC_MAX_TOP_LOGPROBS). */
static inline uint32_t ipc_logprobs_len(uint32_t n_top)
{
	return IPC_LOGPROBS_FIXED + 8u * n_top;
}

/* Payload bytes of a PROMPT_CHUNK carrying n tokens, n <= IPC_CHUNK_MAX_TOKENS. */
static inline uint32_t ipc_chunk_len(uint32_t n)
{
	return IPC_CHUNK_FIXED + 4u * n;
}

/*
 * Wraps fd, one end of an AF_UNIX SOCK_SEQPACKET socketpair, as the given
 * end.  The channel takes the fd (ipc_chan_destroy closes it, also on
 * failure here), sets O_NONBLOCK and FD_CLOEXEC, and reserves an outgoing
 * queue of queue_bytes (0: 1 MiB; at least IPC_FRAME_MAX).  This is the only
 * allocation.  -EPROTOTYPE if fd is not a seqpacket socket, -ENOMEM.
 */
int ipc_chan_create(int fd, enum ipc_end end, size_t queue_bytes, struct ipc_chan **out);
void ipc_chan_destroy(struct ipc_chan *c); /* NULL is fine; closes the fd */

/* The socket, for epoll: EPOLLIN always, EPOLLOUT while ipc_chan_queued() > 0. */
int ipc_chan_fd(const struct ipc_chan *c);

/* Frames waiting in the outgoing queue. */
size_t ipc_chan_queued(const struct ipc_chan *c);

/* 0 while the channel is alive, else the code that killed it (sticky). */
int ipc_chan_error(const struct ipc_chan *c);

/* What killed the channel, for the log ("bad magic 0x...", "peer closed"); "" when alive. */
const char *ipc_chan_error_reason(const struct ipc_chan *c);

/*
 * Sends one frame: header (type, req_id, len) + len bytes of payload.  The
 * payload is validated as the receiver will; -EINVAL if it fails (nothing
 * sent, channel alive).  The frame goes out now, or is copied into the
 * outgoing queue when the socket is full (or earlier frames wait), so
 * frames are never reordered or lost: 0 then.  -ENOBUFS when the queue has
 * no room for it (nothing queued, channel alive: the peer is not reading;
 * the caller decides whether that makes it dead).  -EPIPE / -ECONNRESET
 * when the peer is gone (channel dead).  Allocates nothing.
 */
int ipc_send(struct ipc_chan *c, enum ipc_type type, uint64_t req_id, const void *payload,
	     uint32_t len);

/*
 * Writes queued frames until the queue is empty or the socket is full.
 * Returns the frames still queued (>= 0), or the channel's error.
 */
int ipc_flush(struct ipc_chan *c);
/*
 * Send a frame with n_fds file descriptors (only XFER_DESC allows them; its
 * n_fds field must say n_fds).  Not queued: the frames queued before it go
 * first, and when they or it cannot go now, -EAGAIN (retry after EPOLLOUT).
 * The fds stay the caller's.  0, -EAGAIN, -EINVAL, or the channel's error.
 */
int ipc_send_fds(struct ipc_chan *c, enum ipc_type type, uint64_t req_id, const void *payload,
		 uint32_t len, const int *fds, unsigned n_fds);

/*
 * Receives at most one frame into *m, without blocking.  1: *m holds a
 * validated frame (m->hdr.len payload bytes of m->u; the rest of m->u is
 * undefined).  0: no frame waiting.  < 0: a protocol violation or the peer
 * closed; the channel is dead and every later call returns the same code.
 * Allocates nothing.
 */
int ipc_recv(struct ipc_chan *c, struct ipc_msg *m);

/*
 * Validates one frame as ipc_recv does, for a frame sent by `from`
 * (header and the len payload bytes at payload).  0 or the negative code;
 * *reason (optional) gets a static description.
 */
int ipc_validate(enum ipc_end from, const struct ipc_hdr *h, const void *payload,
		 const char **reason);

/* "HELLO", "SUBMIT", ...; "?" for unknown values. */
const char *ipc_type_name(unsigned type);

#endif /* DUET_IPC_H */
