/* SPDX-License-Identifier: MIT */
/*
 * Test helper: writes a small, valid Llama GGUF image byte by byte and
 * records where every field landed, so that tests can mutate exactly one
 * field (a count, a length, a type id, a dimension, an offset ...) and check
 * that the loader rejects the result with the right error.  It is written
 * independently of the project's GGUF writer on purpose.
 */
#ifndef DUET_GGUFGEN_H
#define DUET_GGUFGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GG_MAX_KV 48
#define GG_MAX_TENSORS 48

struct gg_kv_pos {
	char key[96];
	size_t keylen_off; /* u64 key length */
	size_t key_off;	   /* key bytes */
	size_t type_off;   /* u32 value type */
	size_t value_off;  /* value (arrays: u32 element type, then u64 count, then data) */
};

struct gg_tensor_pos {
	char name[72];
	size_t namelen_off, name_off, ndims_off, ne_off[4], type_off, offset_off;
	uint64_t offset, size; /* within the data section */
};

struct gg_file {
	uint8_t *data;
	size_t len, cap;
	size_t version_off, n_tensors_off, n_kv_off;
	struct gg_kv_pos kv[GG_MAX_KV];
	size_t n_kv;
	struct gg_tensor_pos t[GG_MAX_TENSORS];
	size_t n_t;
	size_t data_off;
};

struct gg_opts {
	bool qwen2;	    /* architecture qwen2 with q/k/v biases */
	bool tied;	    /* no output.weight */
	uint32_t alignment; /* 0: default 32, general.alignment not written */
};

/*
 * The model: dim 32, 2 layers, 2 heads (head_dim 16), 1 KV head, ffn 64,
 * ctx 64, vocab 16; matrices Q8_0, norms and biases F32; weights are a
 * deterministic byte pattern.  Returns 0 or -ENOMEM.
 */
int gg_make_model(struct gg_file *g, const struct gg_opts *opts);
void gg_free(struct gg_file *g);

/* Field positions by key / tensor name; abort the test (fail()) when absent. */
const struct gg_kv_pos *gg_kv(const struct gg_file *g, const char *key);
const struct gg_tensor_pos *gg_tensor(const struct gg_file *g, const char *name);

void gg_put_u32(struct gg_file *g, size_t off, uint32_t v);
void gg_put_u64(struct gg_file *g, size_t off, uint64_t v);
void gg_put_u8(struct gg_file *g, size_t off, uint8_t v);

#endif /* DUET_GGUFGEN_H */
