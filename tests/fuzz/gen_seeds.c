// SPDX-License-Identifier: MIT
/*
 * Writes the GGUF seed corpus (tests/fuzz/corpus/gguf): valid images in each
 * variant the test generator knows, and a few broken ones near the edges the
 * loader checks; and the IPC one (tests/fuzz/corpus/ipc): one valid frame of
 * most types, as it goes on the wire, and a few refused just past an edge.
 * Run through `make seeds`; the output is committed.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/ipc/ipc.h"
#include "tests/unit/ggufgen.h"

static int save_bytes(const char *dir, const char *sub, const char *name, const void *data,
		      size_t len)
{
	char path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	fp = fopen(path, "wb");
	if (!fp || fwrite(data, 1, len, fp) != len) {
		perror(path);
		if (fp)
			fclose(fp);
		return 1;
	}
	fclose(fp);
	printf("seeds: %s (%zu bytes)\n", path, len);
	return 0;
}

static int save(const char *dir, const char *name, const struct gg_file *g, size_t len)
{
	return save_bytes(dir, "gguf", name, g->data, len);
}

/* One frame: header and payload, contiguous as on the wire. */
static struct {
	struct ipc_hdr h;
	union {
		struct ipc_hello hello;
		struct ipc_ready ready;
		struct ipc_submit submit;
		struct ipc_prompt_chunk chunk;
		struct ipc_token token;
		struct ipc_done done;
		struct ipc_error error;
		struct ipc_stats stats;
		struct ipc_ping ping;
		struct ipc_logprobs logprobs;
		struct ipc_xfer_desc desc;
		struct ipc_lease lease;
		struct ipc_leased leased;
		struct ipc_ship ship;
		struct ipc_kv_record kv;
		struct ipc_cancel cancel;
		struct ipc_shutdown shutdown;
		struct ipc_reload reload;
		struct ipc_lease_free lease_free;
		struct ipc_xfer_connect xconnect;
		struct ipc_xfer_ready xready;
		uint8_t raw[IPC_MAX_PAYLOAD];
	} u;
} fr;
static_assert(offsetof(__typeof__(fr), u) == sizeof(struct ipc_hdr), "frame layout");

/*
 * Saves fr as a frame of type from `from` with len payload bytes; valid says
 * whether ipc_validate() must accept it (a seed that stops matching the
 * protocol fails the run instead of going stale).
 */
static int save_frame(const char *dir, const char *name, enum ipc_end from, enum ipc_type type,
		      uint64_t req_id, uint32_t len, int valid)
{
	const char *why = "accepted";
	int rc;

	fr.h = (struct ipc_hdr){ .magic = IPC_MAGIC,
				 .version = IPC_VERSION,
				 .type = (uint16_t)type,
				 .len = len,
				 .req_id = req_id };
	rc = ipc_validate(from, &fr.h, &fr.u, &why);
	if ((rc == 0) != valid) {
		fprintf(stderr, "seeds: ipc/%s: expected %s, ipc_validate says %d (%s)\n", name,
			valid ? "valid" : "refused", rc, why);
		return 1;
	}
	return save_bytes(dir, "ipc", name, &fr, sizeof(fr.h) + len);
}

static int ipc_seeds(const char *dir)
{
	const enum ipc_end S = IPC_END_SUPERVISOR, W = IPC_END_WORKER;
	struct ipc_submit *sm = &fr.u.submit;
	struct ipc_kv_record *kv = &fr.u.kv;
	struct ipc_bias *b;
	char sub[512];
	int ret = 0;

	snprintf(sub, sizeof(sub), "%s/ipc", dir);
	if (mkdir(sub, 0755) < 0 && errno != EEXIST) {
		perror(sub);
		return 1;
	}

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.hello = (struct ipc_hello){ .pid = 4242, .partition = 1, .role = IPC_ROLE_PREFILL };
	strcpy(fr.u.hello.model, "duet-tiny");
	ret |= save_frame(dir, "hello", W, IPC_HELLO, 0, sizeof(struct ipc_hello), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.ready = (struct ipc_ready){ .n_ctx = 512,
					 .n_vocab = 320,
					 .kv_blocks_total = 64,
					 .block_tokens = 16,
					 .max_batch = 8 };
	ret |= save_frame(dir, "ready", W, IPC_READY, 0, sizeof(struct ipc_ready), 1);

	/* 6 of 9 prompt tokens, 2 bias entries (one a ban), logprobs with 3 alternatives */
	memset(&fr.u, 0, sizeof(fr.u));
	sm->sampling = (struct ipc_sampling){ .temperature = 0.7f,
					      .top_p = 0.9f,
					      .min_p = 0.05f,
					      .repeat_penalty = 1.1f,
					      .presence_penalty = 0.5f,
					      .frequency_penalty = -0.5f,
					      .top_k = 40,
					      .repeat_last_n = 64,
					      .seed = 7 };
	sm->salt = 0x5a17;
	sm->max_tokens = 16;
	sm->priority = -1;
	sm->n_prompt = 9;
	sm->n_tokens = 6;
	sm->logprobs_flags = IPC_SUBMIT_LOGPROBS;
	sm->n_top = 3;
	sm->n_bias = 2;
	for (int i = 0; i < 6; i++)
		sm->tokens[i] = 10 + i;
	b = ipc_submit_bias_mut(sm);
	b[0] = (struct ipc_bias){ .token = 3, .bias = 2.5f };
	b[1] = (struct ipc_bias){ .token = 4, .bias = -INFINITY };
	ret |= save_frame(dir, "submit", S, IPC_SUBMIT, 1, ipc_submit_len2(6, 2), 1);
	sm->n_tokens = 10; /* more than n_prompt */
	ret |= save_frame(dir, "bad-submit-n_tokens", S, IPC_SUBMIT, 1, ipc_submit_len2(6, 2), 0);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.chunk = (struct ipc_prompt_chunk){ .n_prompt = 9, .offset = 6, .n_tokens = 3 };
	fr.u.chunk.tokens[0] = 1;
	fr.u.chunk.tokens[1] = 2;
	fr.u.chunk.tokens[2] = 3;
	ret |= save_frame(dir, "prompt-chunk", S, IPC_PROMPT_CHUNK, 1, ipc_chunk_len(3), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.token = (struct ipc_token){ .token = 42,
					 .flags = IPC_TOK_FIRST | IPC_TOK_LAST,
					 .finish = IPC_FINISH_LENGTH,
					 .t_ns = 1000,
					 .step_ns = 10 };
	ret |= save_frame(dir, "token", W, IPC_TOKEN, 1, sizeof(struct ipc_token), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.logprobs = (struct ipc_logprobs){ .index = 0,
					       .token = 42,
					       .logprob = -0.25f,
					       .n_top = 2,
					       .top = { { 42, -0.25f }, { 7, -INFINITY } } };
	ret |= save_frame(dir, "logprobs", W, IPC_LOGPROBS, 1, ipc_logprobs_len(2), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.done = (struct ipc_done){ .finish = IPC_FINISH_EOG,
				       .n_prompt = 9,
				       .n_cached = 4,
				       .n_generated = 3,
				       .t_first_ns = 10,
				       .t_done_ns = 20,
				       .t_arrival_ns = 1,
				       .t_sched_ns = 2 };
	ret |= save_frame(dir, "done", W, IPC_DONE, 1, sizeof(struct ipc_done), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.error.code = -ENOSPC;
	strcpy(fr.u.error.msg, "KV pool full");
	ret |= save_frame(dir, "error", W, IPC_ERROR, 1, sizeof(struct ipc_error), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.stats = (struct ipc_stats){ .running = 2,
					 .waiting = 1,
					 .kv_total = 64,
					 .kv_used = 10,
					 .kv_cached = 5,
					 .kv_leased = 3,
					 .prefix_queries = 100,
					 .prefix_hits = 40,
					 .steps = 9,
					 .step_ns_total = 900,
					 .step_ns_max = 200,
					 .leases_expired = 1,
					 .xfer_rejected = 2 };
	ret |= save_frame(dir, "stats", W, IPC_STATS, 0, sizeof(struct ipc_stats), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.ping.t_ns = 123456789;
	ret |= save_frame(dir, "ping", S, IPC_PING, 77, sizeof(struct ipc_ping), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.shutdown = (struct ipc_shutdown){ .mode = IPC_SHUTDOWN_DRAIN, .deadline_ms = 5000 };
	ret |= save_frame(dir, "shutdown", S, IPC_SHUTDOWN, 0, sizeof(struct ipc_shutdown), 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.desc = (struct ipc_xfer_desc){ .partition = 1, .n_fds = 0, .len = 4 };
	memcpy(fr.u.desc.desc, "DXD1", 4);
	ret |= save_frame(dir, "xfer-desc", W, IPC_XFER_DESC, 0, IPC_DESC_FIXED + 4, 1);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.lease = (struct ipc_lease){
		.n_prompt = 40, .ttl_ms = 5000, .owner = 0, .salt = 0x5a17, .n_tokens = 40
	};
	for (int i = 0; i < 40; i++)
		fr.u.lease.tokens[i] = (i * 37 + 5) % 354;
	ret |= save_frame(dir, "lease", S, IPC_LEASE, 3, ipc_lease_len(40), 1);
	fr.u.lease.n_tokens = 41; /* more than the prompt */
	ret |= save_frame(dir, "bad-lease-n_tokens", S, IPC_LEASE, 3, ipc_lease_len(41), 0);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.leased = (struct ipc_leased){ .lease_id = 5,
					   .n_blocks = 3,
					   .epoch = 9,
					   .region = 0,
					   .blocks_total = 64,
					   .block_bytes = 4096,
					   .n_cached = 2 };
	fr.u.leased.blocks[0] = 7;
	fr.u.leased.blocks[1] = 0;
	fr.u.leased.blocks[2] = 63;
	ret |= save_frame(dir, "leased", W, IPC_LEASED, 3, IPC_LEASED_FIXED + 3 * 4, 1);
	fr.u.leased.n_cached = 3; /* == n_blocks */
	ret |= save_frame(dir, "bad-leased-n_cached", W, IPC_LEASED, 3, IPC_LEASED_FIXED + 3 * 4,
			  0);

	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.xconnect = (struct ipc_xfer_connect){ .partition = 1 };
	ret |= save_frame(dir, "xfer-connect", S, IPC_XFER_CONNECT, 0,
			  sizeof(struct ipc_xfer_connect), 1);

	/* the transfer of the leased blocks, with a checksum */
	memset(&fr.u, 0, sizeof(fr.u));
	fr.u.ship = (struct ipc_ship){ .partition = 1,
				       .lease_id = 5,
				       .epoch = 9,
				       .region = 0,
				       .blocks_total = 64,
				       .block_bytes = 4096,
				       .n_blocks = 3,
				       .flags = IPC_SHIP_CHECKSUM,
				       .ttl_ms = 5000,
				       .first = 2 };
	fr.u.ship.blocks[0] = 7;
	fr.u.ship.blocks[1] = 0;
	fr.u.ship.blocks[2] = 63;
	ret |= save_frame(dir, "ship", S, IPC_SHIP, 3, IPC_SHIP_FIXED + 3 * 4, 1);
	fr.u.ship.blocks[2] = 64; /* == blocks_total */
	ret |= save_frame(dir, "bad-ship-block", S, IPC_SHIP, 3, IPC_SHIP_FIXED + 3 * 4, 0);

	/* its completion record: checksum and the first token's logprobs */
	memset(&fr.u, 0, sizeof(fr.u));
	*kv = (struct ipc_kv_record){ .lease_id = 5,
				      .n_tokens = 40,
				      .epoch = 9,
				      .n_layers = 2,
				      .first_token = 42,
				      .flags = IPC_KV_CHECKSUM | IPC_KV_LOGPROBS,
				      .n_top = 2,
				      .checksum = ipc_kv_checksum(IPC_KV_CHECKSUM_SEED, "kv", 2),
				      .bytes = 3 * 2 * 4096,
				      .t_first_ns = 50,
				      .xfer_ns = 20000,
				      .first_logprob = -0.5f,
				      .writes = 6,
				      .top = { { 42, -0.5f }, { 8, -1.5f } } };
	ret |= save_frame(dir, "prefilled", W, IPC_PREFILLED, 3, ipc_kv_record_len(2), 1);
	ret |= save_frame(dir, "bad-prefilled-len", W, IPC_PREFILLED, 3, ipc_kv_record_len(1), 0);
	/* the same record forwarded to the decode side, without logprobs */
	kv->flags = IPC_KV_CHECKSUM;
	kv->n_top = 0;
	kv->first_logprob = 0;
	memset(kv->top, 0, sizeof(kv->top));
	ret |= save_frame(dir, "adopt", S, IPC_ADOPT, 3, ipc_kv_record_len(0), 1);
	ret |= save_frame(dir, "bad-adopt-direction", W, IPC_ADOPT, 3, ipc_kv_record_len(0), 0);
	return ret;
}

int main(int argc, char **argv)
{
	const struct {
		const char *name;
		struct gg_opts opts;
	} variants[] = {
		{ "llama-q8_0.seed", { 0 } },
		{ "llama-tied.seed", { .tied = true } },
		{ "qwen2.seed", { .qwen2 = true } },
		{ "llama-align64.seed", { .alignment = 64 } },
	};
	const char *dir = argc > 1 ? argv[1] : "tests/fuzz/corpus";
	int ret = 0;

	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		struct gg_file g;

		if (gg_make_model(&g, &variants[i].opts))
			return 1;
		ret |= save(dir, variants[i].name, &g, g.len);
		if (i == 0) {
			/* The metadata alone: a vocab-only image. */
			gg_put_u64(&g, g.n_tensors_off, 0);
			ret |= save(dir, "vocab-only.seed", &g, g.t[0].namelen_off);
			gg_put_u64(&g, g.n_tensors_off, g.n_t);
			ret |= save(dir, "truncated-in-data.seed", &g, g.len - 100);
			ret |= save(dir, "truncated-in-infos.seed", &g, g.t[3].ndims_off + 2);
			gg_put_u64(&g, gg_tensor(&g, "blk.0.ffn_up.weight")->offset_off,
				   gg_tensor(&g, "blk.0.ffn_gate.weight")->offset);
			ret |= save(dir, "overlap.seed", &g, g.len);
		}
		gg_free(&g);
	}
	ret |= ipc_seeds(dir);
	return ret;
}
