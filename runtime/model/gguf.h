/* SPDX-License-Identifier: MIT */
/*
 * GGUF model files (v2 and v3, ggml's docs/gguf.md), read-only.
 *
 * gguf_open() memory-maps a file and validates all of it before returning:
 * header, every key/value pair, every tensor info, alignment and the data
 * section.  After a successful open every accessor is bounds-safe and every
 * tensor's data lies inside the file.  Nothing is allocated beyond what the
 * file's own size justifies.  On failure the error code is a -DUET_E* and a
 * message naming the problem (with the byte offset) is written to err.
 *
 * Strings in GGUF are length-prefixed, not NUL-terminated.  Key and tensor
 * names are returned as C strings (copied once at open); string values and
 * string array elements are returned as (pointer, length) into the mapping.
 * Numeric array data is little-endian and may be unaligned: read it through
 * gguf_arr_get_*().
 */
#ifndef DUET_GGUF_H
#define DUET_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_TENSOR_NAME 64	    /* bytes, without the terminating NUL (ggml's limit) */
#define GGUF_MAX_KEY 256	    /* bytes */
#define GGUF_MAX_STRING (16u << 20) /* any single string value */
#define GGUF_MAX_ALIGNMENT (1u << 20)

/* Metadata value types (the file's uint32 ids). */
enum gguf_type {
	GGUF_TYPE_UINT8 = 0,
	GGUF_TYPE_INT8 = 1,
	GGUF_TYPE_UINT16 = 2,
	GGUF_TYPE_INT16 = 3,
	GGUF_TYPE_UINT32 = 4,
	GGUF_TYPE_INT32 = 5,
	GGUF_TYPE_FLOAT32 = 6,
	GGUF_TYPE_BOOL = 7,
	GGUF_TYPE_STRING = 8,
	GGUF_TYPE_ARRAY = 9,
	GGUF_TYPE_UINT64 = 10,
	GGUF_TYPE_INT64 = 11,
	GGUF_TYPE_FLOAT64 = 12,
	GGUF_TYPE_COUNT
};

/* Tensor element types (ggml_type ids); gaps are ids ggml retired. */
enum ggml_type {
	GGML_TYPE_F32 = 0,
	GGML_TYPE_F16 = 1,
	GGML_TYPE_Q4_0 = 2,
	GGML_TYPE_Q4_1 = 3,
	GGML_TYPE_Q5_0 = 6,
	GGML_TYPE_Q5_1 = 7,
	GGML_TYPE_Q8_0 = 8,
	GGML_TYPE_Q8_1 = 9,
	GGML_TYPE_Q2_K = 10,
	GGML_TYPE_Q3_K = 11,
	GGML_TYPE_Q4_K = 12,
	GGML_TYPE_Q5_K = 13,
	GGML_TYPE_Q6_K = 14,
	GGML_TYPE_Q8_K = 15,
	GGML_TYPE_IQ2_XXS = 16,
	GGML_TYPE_IQ2_XS = 17,
	GGML_TYPE_IQ3_XXS = 18,
	GGML_TYPE_IQ1_S = 19,
	GGML_TYPE_IQ4_NL = 20,
	GGML_TYPE_IQ3_S = 21,
	GGML_TYPE_IQ2_S = 22,
	GGML_TYPE_IQ4_XS = 23,
	GGML_TYPE_I8 = 24,
	GGML_TYPE_I16 = 25,
	GGML_TYPE_I32 = 26,
	GGML_TYPE_I64 = 27,
	GGML_TYPE_F64 = 28,
	GGML_TYPE_IQ1_M = 29,
	GGML_TYPE_BF16 = 30,
	GGML_TYPE_TQ1_0 = 34,
	GGML_TYPE_TQ2_0 = 35,
	GGML_TYPE_MXFP4 = 39,
	GGML_TYPE_COUNT
};

struct gguf_tensor {
	const char *name; /* NUL-terminated, at most GGUF_MAX_TENSOR_NAME bytes */
	enum ggml_type type;
	uint32_t n_dims;	    /* 1..GGUF_MAX_DIMS */
	uint64_t ne[GGUF_MAX_DIMS]; /* ggml order: ne[0] is the contiguous dimension; unused = 1 */
	uint64_t n_elements;
	uint64_t offset;  /* from the start of the data section, aligned */
	uint64_t size;	  /* bytes */
	const void *data; /* inside the mapping */
};

struct gguf_file; /* opaque */

/* Open and validate a file.  err (may be NULL) receives a one-line message. */
int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errlen);
/*
 * Validate an in-memory image.  The buffer is not copied: it must outlive
 * the handle.  Used by tests and fuzzers.
 */
int gguf_open_mem(const void *buf, size_t len, struct gguf_file **out, char *err, size_t errlen);
void gguf_close(struct gguf_file *f);

uint32_t gguf_version(const struct gguf_file *f);
uint32_t gguf_alignment(const struct gguf_file *f);
uint64_t gguf_file_size(const struct gguf_file *f);
uint64_t gguf_data_offset(const struct gguf_file *f); /* file offset of the data section */
const char *gguf_path(const struct gguf_file *f);     /* "(memory)" for gguf_open_mem */

/* Key/value metadata, in file order. */
uint64_t gguf_kv_count(const struct gguf_file *f);
int64_t gguf_find_key(const struct gguf_file *f, const char *key); /* index or -1 */
const char *gguf_kv_key(const struct gguf_file *f, uint64_t i);
enum gguf_type gguf_kv_type(const struct gguf_file *f, uint64_t i);
/* For arrays: element type and count.  Returns -EINVAL if i is not an array. */
int gguf_kv_array(const struct gguf_file *f, uint64_t i, enum gguf_type *elem, uint64_t *n);

/*
 * Typed getters by key.  Return 0, -ENOENT when the key is absent, or
 * -DUET_EMODELKEY when it has an incompatible type or value (err explains).
 * Integers accept any integer type whose value fits; floats accept FLOAT32
 * and FLOAT64.
 */
int gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out, char *err,
		 size_t errlen);
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out, char *err,
		 size_t errlen);
int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out, char *err,
		 size_t errlen);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out, char *err, size_t errlen);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out, char *err, size_t errlen);
int gguf_get_str(const struct gguf_file *f, const char *key, const char **s, size_t *len, char *err,
		 size_t errlen);
/* An array of elem type; n receives its length. */
int gguf_get_arr(const struct gguf_file *f, const char *key, enum gguf_type elem, uint64_t *n,
		 char *err, size_t errlen);

/* Elements of the array at key index i (i from gguf_find_key); j < length. */
int gguf_arr_str(const struct gguf_file *f, uint64_t i, uint64_t j, const char **s, size_t *len);
int64_t gguf_arr_get_int(const struct gguf_file *f, uint64_t i, uint64_t j);
double gguf_arr_get_float(const struct gguf_file *f, uint64_t i, uint64_t j);
/* Raw little-endian element bytes of a numeric array (maybe unaligned). */
const void *gguf_arr_data(const struct gguf_file *f, uint64_t i);

/* Tensors, in file order. */
uint64_t gguf_tensor_count(const struct gguf_file *f);
const struct gguf_tensor *gguf_tensor(const struct gguf_file *f, uint64_t i);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);

/* Names and sizes of types. */
const char *gguf_type_name(enum gguf_type t); /* "UINT32"; "?" if unknown */
const char *ggml_type_name(enum ggml_type t); /* "Q8_0"; NULL if unknown */
/* Elements per block and bytes per block; 0 if the id is unknown. */
uint32_t ggml_blck_size(enum ggml_type t);
uint32_t ggml_type_size(enum ggml_type t);

#endif /* DUET_GGUF_H */
