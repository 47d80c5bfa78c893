/* SPDX-License-Identifier: MIT */
/*
 * Model schema: maps a validated GGUF file onto a typed description of a
 * Llama-family decoder (architectures `llama` and `qwen2`), checking every
 * hyperparameter's range and every tensor's presence, shape and type.
 *
 * The description points into the gguf_file (tensors, token strings): the
 * file must stay open while the description is used.  Shapes below are in
 * ggml order (ne[0] first, the contiguous dimension).
 */
#ifndef DUET_MODEL_H
#define DUET_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/model/gguf.h"

enum model_arch {
	MODEL_ARCH_LLAMA,
	MODEL_ARCH_QWEN2,
};

enum model_rope_mode {
	MODEL_ROPE_NORM, /* rotate adjacent pairs (x0, x1), (x2, x3), ... (Llama) */
	MODEL_ROPE_NEOX, /* rotate (x_i, x_{i + rope_dim/2}) (Qwen2, GPT-NeoX) */
};

enum model_tokenizer {
	MODEL_TOK_SPM, /* tokenizer.ggml.model = "llama": SentencePiece, scores */
	MODEL_TOK_BPE, /* tokenizer.ggml.model = "gpt2": byte-level BPE, merges */
};

/* Token ids; MODEL_NO_TOKEN when the file does not name one. */
#define MODEL_NO_TOKEN UINT32_MAX

/* Hard limits: anything above is rejected as corrupt rather than attempted. */
#define MODEL_MAX_LAYERS 512
#define MODEL_MAX_HEADS 1024
#define MODEL_MAX_HEAD_DIM 1024
#define MODEL_MAX_DIM 65536
#define MODEL_MAX_FFN (1u << 20)
#define MODEL_MAX_CTX (1u << 24)
#define MODEL_MAX_VOCAB (1u << 22)

struct model_layer {
	const struct gguf_tensor *attn_norm; /* (dim) F32 */
	const struct gguf_tensor *wq;	     /* (dim, n_heads * head_dim) */
	const struct gguf_tensor *wk;	     /* (dim, n_kv_heads * head_dim) */
	const struct gguf_tensor *wv;	     /* (dim, n_kv_heads * head_dim) */
	const struct gguf_tensor *wo;	     /* (n_heads * head_dim, dim) */
	const struct gguf_tensor *bq;	     /* (n_heads * head_dim) F32, or NULL */
	const struct gguf_tensor *bk;	     /* (n_kv_heads * head_dim) F32, or NULL */
	const struct gguf_tensor *bv;	     /* (n_kv_heads * head_dim) F32, or NULL */
	const struct gguf_tensor *ffn_norm;  /* (dim) F32 */
	const struct gguf_tensor *w_gate;    /* (dim, ffn) */
	const struct gguf_tensor *w_up;	     /* (dim, ffn) */
	const struct gguf_tensor *w_down;    /* (ffn, dim) */
};

struct model_vocab {
	enum model_tokenizer kind;
	char pre[32]; /* tokenizer.ggml.pre, "" when absent */
	uint32_t n_tokens;
	int64_t tokens_kv; /* gguf key index of tokenizer.ggml.tokens (STRING array) */
	int64_t scores_kv; /* FLOAT32 array, or -1 */
	int64_t types_kv;  /* INT32 array, or -1 */
	int64_t merges_kv; /* STRING array (BPE), or -1 */
	uint32_t bos, eos, unk, pad;
	bool add_bos, add_eos, add_space_prefix;
};

struct model_desc {
	enum model_arch arch;
	char name[128]; /* general.name, or the architecture */
	uint32_t n_vocab;
	uint32_t dim; /* embedding length */
	uint32_t n_layers;
	uint32_t n_heads;
	uint32_t n_kv_heads;
	uint32_t head_dim; /* dim / n_heads */
	uint32_t ffn;	   /* feed-forward hidden size */
	uint32_t n_ctx;	   /* trained context length, tokens */
	uint32_t rope_dim; /* leading dims of each head that RoPE rotates */
	float rope_base;
	float rms_eps;
	enum model_rope_mode rope_mode;
	bool tied_output;     /* output == tok_embd */
	bool vocab_only;      /* tensors were not looked up */
	enum ggml_type wtype; /* type of blk.0.attn_q.weight (F32 if vocab only) */
	uint64_t n_params;    /* elements over all model tensors */
	uint64_t weight_bytes;

	struct model_vocab vocab;

	const struct gguf_tensor *tok_embd;    /* (dim, n_vocab) */
	const struct gguf_tensor *output_norm; /* (dim) F32 */
	const struct gguf_tensor *output;      /* (dim, n_vocab); == tok_embd when tied */
	struct model_layer *layers;	       /* [n_layers] */
};

#define MODEL_LOAD_VOCAB_ONLY 0x1u /* hyperparameters and vocabulary, no tensors */

/*
 * Build the description.  Errors: -DUET_EARCH (architecture or feature not
 * supported), -DUET_EMODELKEY (key missing or wrong type), -DUET_EHPARAM
 * (out of range or inconsistent), -DUET_EMODELTENSOR (tensor missing, of the
 * wrong shape or type, or unexpected), -ENOMEM; err names the culprit.
 */
int model_desc_load(const struct gguf_file *f, unsigned flags, struct model_desc **out, char *err,
		    size_t errlen);
void model_desc_free(struct model_desc *m);

const char *model_arch_name(enum model_arch arch);
/* Is t a weight type the engine computes with (matrices)? */
bool model_weight_type_supported(enum ggml_type t);
/* One line for logs: "llama 'x': 4 layers, dim 128, heads 4/2, ffn 352, ctx 1024, vocab 354, F16, 1.2M params". */
void model_desc_summary(const struct model_desc *m, char *buf, size_t len);

#endif /* DUET_MODEL_H */
