/* SPDX-License-Identifier: MIT */
/*
 * Synthetic Llama-architecture models: random weights from a seeded PRNG,
 * written as a GGUF file with the metadata, tensor names and shapes a real
 * llama.cpp-converted model has, and a built-in byte-level SentencePiece
 * vocabulary.  duet-mkmodel is the command-line front end; the runtime uses
 * these files so that it runs with no download.
 *
 * Tensors, in file order (shapes in ggml order, ne[0] = input dimension;
 * kv_dim = n_kv_heads * dim / n_heads):
 *   token_embd.weight        [dim, vocab]   matrix type
 *   output_norm.weight       [dim]          F32
 *   output.weight            [dim, vocab]   matrix type (absent when tied)
 *   per layer N:
 *   blk.N.attn_norm.weight   [dim]          F32
 *   blk.N.attn_q.weight      [dim, dim]
 *   blk.N.attn_k.weight      [dim, kv_dim]
 *   blk.N.attn_v.weight      [dim, kv_dim]
 *   blk.N.attn_output.weight [dim, dim]
 *   blk.N.ffn_norm.weight    [dim]          F32
 *   blk.N.ffn_gate.weight    [dim, ffn]
 *   blk.N.ffn_up.weight      [dim, ffn]
 *   blk.N.ffn_down.weight    [ffn, dim]
 *
 * Weights: every tensor has its own PRNG stream derived from (seed, tensor
 * name), so a tensor's values do not depend on the weight type, on the other
 * tensors or on the order of generation.  Matrices are uniform in
 * [-1/sqrt(ne[0]), 1/sqrt(ne[0])], norm weights uniform in [0.9, 1.1].  The
 * fp32 values are then converted with kernels/cpu/quant (exactly ggml's
 * conversions), so the Q8_0 file holds what llama.cpp's quantizer would make
 * of the F32 file.  Same parameters, same bytes, on every host.
 *
 * Vocabulary (vocab >= SYNTH_VOCAB_BASE ids):
 *   0 "<unk>" UNKNOWN, 1 "<s>" and 2 "</s>" CONTROL, score 0
 *   3..258   "<0x00>".."<0xFF>"  BYTE, score 0
 *   259      "\u2581" (the SentencePiece space) NORMAL, score 0
 *   260..353 the printable ASCII characters '!'..'~', NORMAL, scores -1..-94
 *   354..    "<extra_ID>" (ID = the token id) UNUSED, score -1e9
 *
 * Tensor data is generated one tensor at a time while the file is written:
 * peak memory is about the largest tensor in the target type, plus the
 * vocabulary.
 */
#ifndef DUET_SYNTH_H
#define DUET_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/model/gguf.h"

#define SYNTH_VOCAB_BASE 354 /* the byte-level vocabulary's size */
#define SYNTH_DEFAULT_NAME "duet-synth"
#define SYNTH_DEFAULT_ROPE_BASE 10000.0f
#define SYNTH_DEFAULT_RMS_EPS 1e-5f

/*
 * Limits synth_validate() enforces: sane sizes, within what the model loader
 * (runtime/model/model.h) accepts, so that every valid model loads.
 */
#define SYNTH_MAX_DIM 65536
#define SYNTH_MAX_LAYERS 512
#define SYNTH_MAX_HEADS 1024
#define SYNTH_MAX_HEAD_DIM 1024
#define SYNTH_MAX_FFN (1u << 18)
#define SYNTH_MAX_CTX (1u << 24)
#define SYNTH_MAX_VOCAB (1u << 20)
#define SYNTH_MAX_PARAMS (1ull << 34) /* elements in all tensors together */
#define SYNTH_MAX_NAME 255	      /* bytes of general.name */

struct synth_params {
	uint32_t dim; /* embedding width; dim / n_heads = head_dim, even */
	uint32_t n_layers;
	uint32_t n_heads;
	uint32_t n_kv_heads; /* divides n_heads (grouped-query attention) */
	uint32_t ffn;	     /* feed-forward hidden width */
	uint32_t ctx;	     /* llama.context_length (metadata only) */
	uint32_t vocab;	     /* 0 = SYNTH_VOCAB_BASE */
	enum ggml_type type; /* matrices: F32, F16, BF16, Q8_0 or Q4_0; norms are always F32 */
	uint64_t seed;
	bool tied;	  /* omit output.weight: the classifier is token_embd.weight */
	bool qwen2;	  /* architecture qwen2: q/k/v bias tensors, NeoX RoPE */
	const char *name; /* general.name; NULL = SYNTH_DEFAULT_NAME */
	float rope_base;  /* llama.rope.freq_base; 0 = SYNTH_DEFAULT_ROPE_BASE */
	float rms_eps;	  /* llama.attention.layer_norm_rms_epsilon; 0 = SYNTH_DEFAULT_RMS_EPS */
};

/*
 * The bundled tiny model's shape: dim 128, 4 layers, 4 heads, 2 kv heads,
 * ffn 352, ctx 1024, vocab 354, F16, seed 1, untied, defaults elsewhere.
 */
void synth_params_init(struct synth_params *p);

/* 0, or -EINVAL after logging (subsystem "synth") which parameter is wrong and why. */
int synth_validate(const struct synth_params *p);

/* Elements in all tensors of a valid p (the "parameter count"). */
uint64_t synth_param_count(const struct synth_params *p);

/* llama.cpp's general.file_type for a matrix type (0, 1, 2, 7, 32); -EINVAL for others. */
int synth_file_type(enum ggml_type type);

/*
 * Write the model to path atomically (see gguf_writer_write_file()).
 * *file_size (may be NULL) receives the bytes written.  Returns 0, -EINVAL
 * for invalid parameters, -ENOMEM, or -errno for I/O; errors are logged.
 */
int synth_write_file(const struct synth_params *p, const char *path, uint64_t *file_size);
/* The same into a new malloc'd buffer; the caller frees *buf. */
int synth_write_mem(const struct synth_params *p, void **buf, size_t *len);

/*
 * The fp32 values of tensor name of model p (before conversion to the
 * matrix type), n = its element count, into dst.  Returns 0, -EINVAL (p
 * invalid or n wrong) or -ENOENT (no such tensor in this model).
 */
int synth_tensor_values(const struct synth_params *p, const char *name, float *dst, uint64_t n);

/*
 * Token id of a vocabulary of vocab ids: its piece (NUL-terminated into
 * piece, at most 24 bytes with the NUL), score and llama token type
 * (1 NORMAL, 2 UNKNOWN, 3 CONTROL, 5 UNUSED, 6 BYTE).  -EINVAL if
 * id >= vocab, vocab < SYNTH_VOCAB_BASE or piece_len is too small.
 */
int synth_vocab_token(uint32_t vocab, uint32_t id, char *piece, size_t piece_len, float *score,
		      int32_t *type);

#endif /* DUET_SYNTH_H */
