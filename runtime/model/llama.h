/* SPDX-License-Identifier: MIT */
/*
 * The Llama-family forward pass (architectures llama and qwen2), written
 * once against the backend interface (drivers/backend.h): it never touches
 * activations or KV on the host.  One llm_step() runs a batch that may mix
 * prefill chunks and decode tokens of several sequences over a paged KV pool
 * (DESIGN.md "KV cache"); the caller owns the block tables.
 */
#ifndef DUET_LLAMA_H
#define DUET_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drivers/backend.h"
#include "runtime/model/model.h"

struct llm_options {
	enum ggml_type kv_dtype; /* GGML_TYPE_F16 (default) or GGML_TYPE_F32 */
	int n_ctx;		 /* tokens per sequence; 0 = the model's context length */
	int block_tokens;	 /* KV block size; 0 = 16 */
	int n_blocks;		 /* KV pool size in blocks; 0 = from kv_budget, or else
				  * enough for max_seqs full contexts */
	size_t kv_budget;	 /* KV pool size in bytes when n_blocks is 0; 0 = unused */
	bool hugepages;		 /* KV pool on huge pages (falls back with a warning) */
	bool shared_kv;		 /* KV pool in a memfd a peer process can map (be_region.fd) */
	int max_tokens;		 /* tokens per step; 0 = 512 */
	int max_seqs;		 /* sequences per step; 0 = 1 */
	int max_out;		 /* logit rows per step; 0 = max_seqs */
};

struct llm;

/*
 * Prepare weights, activation buffers and the KV pool.  m must stay valid
 * (and its gguf file open) until llm_destroy.  Errors are logged.
 */
int llm_create(struct backend *be, const struct model_desc *m, const struct llm_options *o,
	       struct llm **out);
void llm_destroy(struct llm *llm);

const struct model_desc *llm_model(const struct llm *llm);
int llm_n_ctx(const struct llm *llm);
int llm_block_tokens(const struct llm *llm);
int llm_n_blocks(const struct llm *llm);
int llm_max_tokens(const struct llm *llm);
int llm_max_out(const struct llm *llm);
struct be_kv *llm_kv(const struct llm *llm);

/*
 * The KV bytes of blocks [block, block + n) of one layer: one contiguous
 * range, as an offset from the start of layer 0's region (the whole pool is
 * one mapping; with shared_kv, also the offset in the memfd).  This is the
 * unit a KV transfer writes: runs of adjacent blocks merge into one range.
 * -EINVAL when layer or the blocks are out of range.
 */
int llm_kv_range(const struct llm *llm, int layer, int32_t block, int n, size_t *offset,
		 size_t *len);
/* The whole pool as one region (layer 0's base, every layer's bytes). */
int llm_kv_pool(const struct llm *llm, struct be_region *out);

/*
 * Called by llm_step after layer `layer` of the step is computed, its K/V
 * stored in the pool and the backend synchronized, before the next layer
 * starts: a prefill worker posts that layer's KV writes from here so that
 * the transfer overlaps the following layers.  A non-zero return aborts the
 * step with that code.  NULL removes the hook.
 */
typedef int (*llm_layer_fn)(void *ctx, int layer);
void llm_set_layer_hook(struct llm *llm, llm_layer_fn fn, void *ctx);

/* Copy-on-write of a shared block: n_tokens slots of src into dst, all layers. */
int llm_kv_copy(struct llm *llm, int32_t src, int32_t dst, int n_tokens);

/*
 * One forward step.  Stores every token's K/V in its slot, then writes the
 * logits of the step's out_rows to logits ([n_out][n_vocab] floats, host).
 * Returns 0 or a negative code (step larger than the limits, token id out of
 * range, position beyond n_ctx).
 */
int llm_step(struct llm *llm, const struct be_step *s, float *logits);

/*
 * A single sequence over a private identity block table (block i holds
 * positions i*block_tokens ...), for offline generation and tests.
 */
struct llm_seq {
	struct llm *llm;
	int n_past;	  /* tokens already in the KV cache */
	int32_t *table;	  /* [n_ctx / block_tokens] */
	int32_t *scratch; /* step staging: tokens, pos, seq, slot, out_rows */
};

int llm_seq_init(struct llm_seq *s, struct llm *llm);
void llm_seq_free(struct llm_seq *s);
void llm_seq_reset(struct llm_seq *s);
/*
 * Append n tokens (in chunks of max_tokens) and return the logits of the
 * last one (n_vocab floats), or, when all_logits is not NULL, of every one
 * ([n][n_vocab]).  -ENOSPC when the context would overflow.
 */
int llm_seq_eval(struct llm_seq *s, const int32_t *ids, int n, float *last_logits,
		 float *all_logits);

#endif /* DUET_LLAMA_H */
