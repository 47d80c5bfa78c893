/* SPDX-License-Identifier: MIT */
/*
 * GGUF v3 writer (ggml's docs/gguf.md): collect key/values and tensors in
 * memory, then serialize them to a file or a malloc'd buffer.
 *
 * File layout written (all integers little-endian):
 *   "GGUF" | u32 version = 3 | u64 n_tensors | u64 n_kv
 *   n_kv x       { string key | u32 gguf_type | value }
 *   n_tensors x  { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   zero padding to the alignment
 *   data section: each tensor at its offset (relative to the section start,
 *                 a multiple of the alignment), zero padding between tensors
 *                 and after the last one, so the file size is aligned too.
 * A string is u64 length + bytes (no NUL).  Keys and tensors keep the order
 * in which they were added.
 *
 * Misuse (duplicate key or tensor, name too long, shape not a whole number
 * of blocks, size not matching the shape...) returns -EINVAL and logs one
 * line under "gguf" naming the key or tensor; allocation failures return
 * -ENOMEM; I/O failures return -errno after logging the path and the call.
 * A failed add leaves the writer as it was.
 *
 * Tensor data is never copied: gguf_writer_add_tensor() keeps the caller's
 * pointer, which must stay valid until the last write.  For tensors too big
 * to hold all at once, gguf_writer_add_tensor_fill() registers a callback
 * that produces the bytes at write time into a scratch buffer of the
 * tensor's size (allocated once, sized for the largest such tensor).
 *
 * Not thread-safe; one writer per thread.
 */
#ifndef DUET_GGUF_WRITE_H
#define DUET_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/model/gguf.h"

/* Longest tensor name written, in bytes without the NUL (ggml's GGML_MAX_NAME - 1). */
#define GGUF_WRITER_MAX_NAME 63

struct gguf_writer; /* opaque */

/* A tensor as the fill callback sees it. */
struct gguf_writer_tensor {
	const char *name;
	enum ggml_type type;
	uint32_t n_dims;
	uint64_t ne[GGUF_MAX_DIMS]; /* ggml order, unused dims = 1 */
	uint64_t size;		    /* bytes of data */
};

/*
 * Produce exactly t->size bytes of t's data into dst.  Called once per write,
 * in tensor order.  Return 0, or a negative errno which aborts the write
 * (the callback logs its own error).
 */
typedef int (*gguf_writer_fill_fn)(void *ctx, const struct gguf_writer_tensor *t, void *dst);

int gguf_writer_create(struct gguf_writer **out);
void gguf_writer_destroy(struct gguf_writer *w); /* NULL is a no-op */

/*
 * Data alignment: a power of two, 1..GGUF_MAX_ALIGNMENT (default
 * GGUF_DEFAULT_ALIGNMENT).  Also records "general.alignment" as UINT32: the
 * first call appends the key at the current position, later calls update
 * its value in place.  Without a call the key is omitted and readers use 32.
 * Adding the key "general.alignment" directly is the same as calling this.
 */
int gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment);

/*
 * Key/values.  A key is 1..GGUF_MAX_KEY - 1 bytes of printable ASCII
 * (lower_snake_case dotted by convention), unique in the file.
 */
int gguf_writer_add_u8(struct gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_add_i8(struct gguf_writer *w, const char *key, int8_t v);
int gguf_writer_add_u16(struct gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_add_i16(struct gguf_writer *w, const char *key, int16_t v);
int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v);
int gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_add_f64(struct gguf_writer *w, const char *key, double v);
int gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool v);
/* A NUL-terminated string value (UTF-8 by convention; not checked). */
int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *s);
/* A string value of len bytes, which may contain NULs; len <= GGUF_MAX_STRING. */
int gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *s, size_t len);
/*
 * An array of n numbers or bools of type elem (not STRING or ARRAY), read
 * from data as a C array of the matching type (uint8_t .. double; bool as
 * one byte 0/1).  The values are copied.  n may be 0.
 */
int gguf_writer_add_arr(struct gguf_writer *w, const char *key, enum gguf_type elem,
			const void *data, uint64_t n);
/* An array of n NUL-terminated strings, copied. */
int gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
			    uint64_t n);

/*
 * A tensor of type with n_dims (1..GGUF_MAX_DIMS) dimensions ne[0..n_dims-1]
 * (ggml order: ne[0] is the contiguous one, each >= 1, ne[0] a multiple of
 * the type's block size).  size must equal the byte size the shape implies.
 * name is 1..GGUF_WRITER_MAX_NAME bytes, unique; it is copied, data is not.
 */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum ggml_type type,
			   uint32_t n_dims, const uint64_t *ne, const void *data, uint64_t size);
/* The same with the data produced by fill(ctx, ...) at write time. */
int gguf_writer_add_tensor_fill(struct gguf_writer *w, const char *name, enum ggml_type type,
				uint32_t n_dims, const uint64_t *ne, gguf_writer_fill_fn fill,
				void *ctx);

/*
 * Byte size of a tensor of this type and shape into *size: 0, or -EINVAL
 * (unknown type, n_dims or a dimension out of range, ne[0] not a multiple of
 * the block size) or -EOVERFLOW.  Logs nothing.
 */
int gguf_writer_tensor_size(enum ggml_type type, uint32_t n_dims, const uint64_t *ne,
			    uint64_t *size);

uint64_t gguf_writer_kv_count(const struct gguf_writer *w);
uint64_t gguf_writer_tensor_count(const struct gguf_writer *w);
/* Total bytes the serialized file will have (0 if that overflows). */
uint64_t gguf_writer_file_size(const struct gguf_writer *w);

/*
 * Write the file atomically: to "<path>.tmp", fsync, rename over path, fsync
 * the directory.  On failure path is untouched and the temporary removed.
 * The writer stays usable (it can be written again).
 */
int gguf_writer_write_file(struct gguf_writer *w, const char *path);
/* Serialize into a new malloc'd buffer (*buf, *len); the caller frees it. */
int gguf_writer_write_mem(struct gguf_writer *w, void **buf, size_t *len);

#endif /* DUET_GGUF_WRITE_H */
