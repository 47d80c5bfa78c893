// SPDX-License-Identifier: MIT
/*
 * GGUF reader.  Validation happens once, in gguf_parse(); everything after it
 * trusts the parsed tables.  The parser reads through a cursor that checks
 * every length against the bytes left, and computes every product and sum
 * with overflow checks.  Allocations are bounded by the file size: a count is
 * only believed after checking that the file could hold that many of the
 * smallest possible entries.
 */
#include "runtime/model/gguf.h"
#include "runtime/core/err.h"
#include "runtime/core/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

/* Smallest possible encodings, used to bound counts by the bytes left. */
#define MIN_KV_BYTES (8 + 1 + 4 + 1)		 /* key len, 1-byte key, type, u8 value */
#define MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8) /* name len, name, n_dims, ne[0], type, offset */

struct gguf_kv {
	const char *key; /* in the names arena */
	enum gguf_type type;
	enum gguf_type elem; /* arrays only */
	uint64_t n;	     /* arrays: element count */
	uint64_t off;	     /* file offset of the value (arrays: of the first element) */
	uint64_t *str_offs;  /* string arrays: file offset of each element's length prefix */
};

struct gguf_file {
	const uint8_t *base;
	uint64_t size;
	bool mapped;
	char *path;
	uint32_t version;
	uint32_t alignment;
	uint64_t data_off;
	uint64_t n_kv;
	struct gguf_kv *kv;
	uint64_t *kv_sorted; /* kv indices sorted by key */
	uint64_t n_tensors;
	struct gguf_tensor *tensors;
	uint64_t *tensor_sorted; /* tensor indices sorted by name */
	char *names;		 /* NUL-terminated keys and tensor names */
	uint64_t names_used, names_cap;
};

/* --- type tables ---------------------------------------------------------- */

static const struct {
	const char *name;
	uint32_t size; /* bytes of one scalar; 0 for STRING and ARRAY */
} gguf_types[GGUF_TYPE_COUNT] = {
	[GGUF_TYPE_UINT8] = { "UINT8", 1 },	[GGUF_TYPE_INT8] = { "INT8", 1 },
	[GGUF_TYPE_UINT16] = { "UINT16", 2 },	[GGUF_TYPE_INT16] = { "INT16", 2 },
	[GGUF_TYPE_UINT32] = { "UINT32", 4 },	[GGUF_TYPE_INT32] = { "INT32", 4 },
	[GGUF_TYPE_FLOAT32] = { "FLOAT32", 4 }, [GGUF_TYPE_BOOL] = { "BOOL", 1 },
	[GGUF_TYPE_STRING] = { "STRING", 0 },	[GGUF_TYPE_ARRAY] = { "ARRAY", 0 },
	[GGUF_TYPE_UINT64] = { "UINT64", 8 },	[GGUF_TYPE_INT64] = { "INT64", 8 },
	[GGUF_TYPE_FLOAT64] = { "FLOAT64", 8 },
};

/* ggml's block layouts: elements per block, bytes per block. */
static const struct {
	const char *name;
	uint32_t blck;
	uint32_t size;
} ggml_types[GGML_TYPE_COUNT] = {
	[GGML_TYPE_F32] = { "F32", 1, 4 },
	[GGML_TYPE_F16] = { "F16", 1, 2 },
	[GGML_TYPE_Q4_0] = { "Q4_0", 32, 2 + 16 },
	[GGML_TYPE_Q4_1] = { "Q4_1", 32, 2 + 2 + 16 },
	[GGML_TYPE_Q5_0] = { "Q5_0", 32, 2 + 4 + 16 },
	[GGML_TYPE_Q5_1] = { "Q5_1", 32, 2 + 2 + 4 + 16 },
	[GGML_TYPE_Q8_0] = { "Q8_0", 32, 2 + 32 },
	[GGML_TYPE_Q8_1] = { "Q8_1", 32, 2 + 2 + 32 },
	[GGML_TYPE_Q2_K] = { "Q2_K", 256, 16 + 64 + 2 + 2 },
	[GGML_TYPE_Q3_K] = { "Q3_K", 256, 32 + 64 + 12 + 2 },
	[GGML_TYPE_Q4_K] = { "Q4_K", 256, 2 + 2 + 12 + 128 },
	[GGML_TYPE_Q5_K] = { "Q5_K", 256, 2 + 2 + 12 + 32 + 128 },
	[GGML_TYPE_Q6_K] = { "Q6_K", 256, 128 + 64 + 16 + 2 },
	[GGML_TYPE_Q8_K] = { "Q8_K", 256, 4 + 256 + 32 },
	[GGML_TYPE_IQ2_XXS] = { "IQ2_XXS", 256, 2 + 64 },
	[GGML_TYPE_IQ2_XS] = { "IQ2_XS", 256, 2 + 64 + 8 },
	[GGML_TYPE_IQ3_XXS] = { "IQ3_XXS", 256, 2 + 96 },
	[GGML_TYPE_IQ1_S] = { "IQ1_S", 256, 2 + 32 + 16 },
	[GGML_TYPE_IQ4_NL] = { "IQ4_NL", 32, 2 + 16 },
	[GGML_TYPE_IQ3_S] = { "IQ3_S", 256, 2 + 64 + 8 + 32 + 4 },
	[GGML_TYPE_IQ2_S] = { "IQ2_S", 256, 2 + 64 + 8 + 8 },
	[GGML_TYPE_IQ4_XS] = { "IQ4_XS", 256, 2 + 2 + 4 + 128 },
	[GGML_TYPE_I8] = { "I8", 1, 1 },
	[GGML_TYPE_I16] = { "I16", 1, 2 },
	[GGML_TYPE_I32] = { "I32", 1, 4 },
	[GGML_TYPE_I64] = { "I64", 1, 8 },
	[GGML_TYPE_F64] = { "F64", 1, 8 },
	[GGML_TYPE_IQ1_M] = { "IQ1_M", 256, 32 + 16 + 8 },
	[GGML_TYPE_BF16] = { "BF16", 1, 2 },
	[GGML_TYPE_TQ1_0] = { "TQ1_0", 256, 48 + 4 + 2 },
	[GGML_TYPE_TQ2_0] = { "TQ2_0", 256, 64 + 2 },
	[GGML_TYPE_MXFP4] = { "MXFP4", 32, 1 + 16 },
};

const char *gguf_type_name(enum gguf_type t)
{
	if ((unsigned)t >= GGUF_TYPE_COUNT)
		return "?";
	return gguf_types[t].name;
}

const char *ggml_type_name(enum ggml_type t)
{
	if ((unsigned)t >= GGML_TYPE_COUNT)
		return NULL;
	return ggml_types[t].name;
}

uint32_t ggml_blck_size(enum ggml_type t)
{
	if ((unsigned)t >= GGML_TYPE_COUNT || !ggml_types[t].name)
		return 0;
	return ggml_types[t].blck;
}

uint32_t ggml_type_size(enum ggml_type t)
{
	if ((unsigned)t >= GGML_TYPE_COUNT || !ggml_types[t].name)
		return 0;
	return ggml_types[t].size;
}

/* --- errors and the cursor ----------------------------------------------- */

#define NO_OFFSET UINT64_MAX

struct cursor {
	const uint8_t *base;
	uint64_t size;
	uint64_t off;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 4, 5))) static int fail(struct cursor *c, int code, uint64_t at,
						      const char *fmt, ...)
{
	va_list ap;
	int n;

	if (c->err && c->errlen) {
		if (at == NO_OFFSET)
			n = snprintf(c->err, c->errlen, "%s: ", duet_strerror(code));
		else
			n = snprintf(c->err, c->errlen, "%s at byte %llu: ", duet_strerror(code),
				     (unsigned long long)at);
		if (n >= 0 && (size_t)n < c->errlen) {
			va_start(ap, fmt);
			vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return code;
}

static uint64_t left(const struct cursor *c)
{
	return c->size - c->off;
}

static int need(struct cursor *c, uint64_t n, const char *what)
{
	if (n > left(c))
		return fail(c, -DUET_ETRUNCATED, c->off,
			    "%s needs %llu bytes but the file ends after %llu", what,
			    (unsigned long long)n, (unsigned long long)left(c));
	return 0;
}

static int rd_u32(struct cursor *c, uint32_t *v, const char *what)
{
	int ret = need(c, 4, what);

	if (ret)
		return ret;
	memcpy(v, c->base + c->off, 4);
	c->off += 4;
	return 0;
}

static int rd_u64(struct cursor *c, uint64_t *v, const char *what)
{
	int ret = need(c, 8, what);

	if (ret)
		return ret;
	memcpy(v, c->base + c->off, 8);
	c->off += 8;
	return 0;
}

/* A length-prefixed string: *len bytes at *at.  what names it in errors. */
static int rd_str(struct cursor *c, uint64_t *at, uint64_t *len, uint64_t max, const char *what)
{
	uint64_t start = c->off;
	int ret = rd_u64(c, len, what);

	if (ret)
		return ret;
	if (*len > max)
		return fail(c, -DUET_ESTRING, start, "%s: length %llu is absurd (limit %llu)", what,
			    (unsigned long long)*len, (unsigned long long)max);
	if (*len > left(c))
		return fail(c, -DUET_ESTRING, start,
			    "%s: length %llu runs past the end of the file (%llu bytes left)", what,
			    (unsigned long long)*len, (unsigned long long)left(c));
	*at = c->off;
	c->off += *len;
	return 0;
}

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* --- parsing ------------------------------------------------------------- */

/* Copy a name into the arena; fails on an embedded NUL. */
static const char *arena_add(struct gguf_file *f, const uint8_t *s, uint64_t len)
{
	char *dst;

	if (memchr(s, '\0', len))
		return NULL;
	if (len + 1 > f->names_cap - f->names_used)
		return NULL; /* cannot happen: the arena is sized from the file */
	dst = f->names + f->names_used;
	memcpy(dst, s, len);
	dst[len] = '\0';
	f->names_used += len + 1;
	return dst;
}

static int parse_value(struct cursor *c, struct gguf_file *f, struct gguf_kv *kv)
{
	uint64_t at = c->off, len, sat;
	uint32_t elem;
	int ret;

	kv->off = c->off;
	kv->n = 1;
	switch (kv->type) {
	case GGUF_TYPE_STRING:
		return rd_str(c, &sat, &len, GGUF_MAX_STRING, kv->key);
	case GGUF_TYPE_BOOL:
		ret = need(c, 1, kv->key);
		if (ret)
			return ret;
		if (c->base[c->off] > 1)
			return fail(c, -DUET_EVALTYPE, c->off, "'%s': BOOL value %u is not 0 or 1",
				    kv->key, c->base[c->off]);
		c->off += 1;
		return 0;
	case GGUF_TYPE_ARRAY:
		break;
	default:
		ret = need(c, gguf_types[kv->type].size, kv->key);
		if (ret)
			return ret;
		c->off += gguf_types[kv->type].size;
		return 0;
	}

	ret = rd_u32(c, &elem, kv->key);
	if (ret)
		return ret;
	if (elem >= GGUF_TYPE_COUNT)
		return fail(c, -DUET_EVALTYPE, at, "'%s': unknown array element type %u", kv->key,
			    elem);
	if (elem == GGUF_TYPE_ARRAY)
		return fail(c, -DUET_EVALTYPE, at, "'%s': nested arrays are not supported",
			    kv->key);
	kv->elem = elem;
	ret = rd_u64(c, &kv->n, kv->key);
	if (ret)
		return ret;
	kv->off = c->off;

	if (elem == GGUF_TYPE_STRING) {
		if (kv->n > left(c) / 8)
			return fail(c, -DUET_ECOUNT, at,
				    "'%s': %llu strings cannot fit in the %llu bytes left", kv->key,
				    (unsigned long long)kv->n, (unsigned long long)left(c));
		kv->str_offs = duet_malloc((kv->n ? kv->n : 1) * sizeof(*kv->str_offs));
		if (!kv->str_offs)
			return fail(c, -ENOMEM, at, "'%s': out of memory", kv->key);
		for (uint64_t j = 0; j < kv->n; j++) {
			kv->str_offs[j] = c->off;
			ret = rd_str(c, &sat, &len, GGUF_MAX_STRING, kv->key);
			if (ret)
				return ret;
		}
		return 0;
	}

	uint32_t esize = gguf_types[elem].size;
	if (kv->n > left(c) / esize)
		return fail(c, -DUET_ECOUNT, at,
			    "'%s': %llu %s elements cannot fit in the %llu bytes left", kv->key,
			    (unsigned long long)kv->n, gguf_types[elem].name,
			    (unsigned long long)left(c));
	if (elem == GGUF_TYPE_BOOL) {
		for (uint64_t j = 0; j < kv->n; j++) {
			if (c->base[c->off + j] > 1)
				return fail(c, -DUET_EVALTYPE, c->off + j,
					    "'%s': BOOL element %llu is %u, not 0 or 1", kv->key,
					    (unsigned long long)j, c->base[c->off + j]);
		}
	}
	c->off += kv->n * esize;
	return 0;
}

/* qsort_r comparators over index arrays; ctx is the gguf_file. */
static int cmp_kv(const void *a, const void *b, void *ctx)
{
	const struct gguf_file *f = ctx;
	const uint64_t *x = a, *y = b;

	return strcmp(f->kv[*x].key, f->kv[*y].key);
}

static int cmp_tensor_name(const void *a, const void *b, void *ctx)
{
	const struct gguf_file *f = ctx;
	const uint64_t *x = a, *y = b;

	return strcmp(f->tensors[*x].name, f->tensors[*y].name);
}

static int cmp_tensor_offset(const void *a, const void *b, void *ctx)
{
	const struct gguf_file *f = ctx;
	const uint64_t *x = a, *y = b;
	uint64_t ox = f->tensors[*x].offset, oy = f->tensors[*y].offset;

	return ox < oy ? -1 : ox > oy;
}

static int parse_kvs(struct cursor *c, struct gguf_file *f)
{
	int ret;

	for (uint64_t i = 0; i < f->n_kv; i++) {
		struct gguf_kv *kv = &f->kv[i];
		uint64_t at = c->off, kat, klen;
		uint32_t type;
		char what[48];

		snprintf(what, sizeof(what), "key of metadata entry %llu", (unsigned long long)i);
		ret = rd_str(c, &kat, &klen, UINT64_MAX, what);
		if (ret)
			return ret;
		if (klen == 0)
			return fail(c, -DUET_EKEY, at, "metadata entry %llu has an empty key",
				    (unsigned long long)i);
		if (klen > GGUF_MAX_KEY)
			return fail(c, -DUET_EKEY, at,
				    "metadata entry %llu: key of %llu bytes is too long (limit %d)",
				    (unsigned long long)i, (unsigned long long)klen, GGUF_MAX_KEY);
		kv->key = arena_add(f, c->base + kat, klen);
		if (!kv->key)
			return fail(c, -DUET_EKEY, at,
				    "metadata entry %llu: key contains a NUL byte",
				    (unsigned long long)i);
		ret = rd_u32(c, &type, kv->key);
		if (ret)
			return ret;
		if (type >= GGUF_TYPE_COUNT)
			return fail(c, -DUET_EVALTYPE, c->off - 4, "'%s': unknown value type %u",
				    kv->key, type);
		kv->type = type;
		ret = parse_value(c, f, kv);
		if (ret)
			return ret;
	}

	/* Duplicates: sort an index by key (also used by gguf_find_key). */
	qsort_r(f->kv_sorted, f->n_kv, sizeof(*f->kv_sorted), cmp_kv, f);
	for (uint64_t i = 1; i < f->n_kv; i++) {
		const struct gguf_kv *a = &f->kv[f->kv_sorted[i - 1]];
		const struct gguf_kv *b = &f->kv[f->kv_sorted[i]];
		if (strcmp(a->key, b->key) == 0)
			return fail(c, -DUET_EKEY, b->off, "duplicate key '%s'", b->key);
	}
	return 0;
}

static int parse_alignment(struct cursor *c, struct gguf_file *f)
{
	int64_t i = gguf_find_key(f, "general.alignment");
	uint32_t a;

	f->alignment = GGUF_DEFAULT_ALIGNMENT;
	if (i < 0)
		return 0;
	if (f->kv[i].type != GGUF_TYPE_UINT32)
		return fail(c, -DUET_EALIGN, f->kv[i].off,
			    "general.alignment must be UINT32, not %s",
			    gguf_type_name(f->kv[i].type));
	memcpy(&a, c->base + f->kv[i].off, 4);
	if (!is_pow2(a) || a > GGUF_MAX_ALIGNMENT)
		return fail(c, -DUET_EALIGN, f->kv[i].off,
			    "general.alignment %u is not a power of two in [1, %u]", a,
			    GGUF_MAX_ALIGNMENT);
	f->alignment = a;
	return 0;
}

static int parse_tensor_info(struct cursor *c, struct gguf_file *f, uint64_t i)
{
	struct gguf_tensor *t = &f->tensors[i];
	uint64_t at = c->off, nat, nlen, nbytes;
	uint32_t n_dims, type;
	char what[48];
	int ret;

	snprintf(what, sizeof(what), "name of tensor %llu", (unsigned long long)i);
	ret = rd_str(c, &nat, &nlen, UINT64_MAX, what);
	if (ret)
		return ret;
	if (nlen == 0)
		return fail(c, -DUET_ETENSORNAME, at, "tensor %llu has an empty name",
			    (unsigned long long)i);
	if (nlen > GGUF_MAX_TENSOR_NAME)
		return fail(c, -DUET_ETENSORNAME, at,
			    "tensor %llu: name of %llu bytes is too long (limit %d)",
			    (unsigned long long)i, (unsigned long long)nlen, GGUF_MAX_TENSOR_NAME);
	t->name = arena_add(f, c->base + nat, nlen);
	if (!t->name)
		return fail(c, -DUET_ETENSORNAME, at, "tensor %llu: name contains a NUL byte",
			    (unsigned long long)i);

	ret = rd_u32(c, &n_dims, t->name);
	if (ret)
		return ret;
	if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
		return fail(c, -DUET_ESHAPE, c->off - 4, "'%s': n_dims %u is not in [1, %d]",
			    t->name, n_dims, GGUF_MAX_DIMS);
	t->n_dims = n_dims;
	t->n_elements = 1;
	for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
		t->ne[d] = 1;
	for (uint32_t d = 0; d < n_dims; d++) {
		ret = rd_u64(c, &t->ne[d], t->name);
		if (ret)
			return ret;
		if (t->ne[d] == 0 || t->ne[d] > INT64_MAX)
			return fail(c, -DUET_ESHAPE, c->off - 8,
				    "'%s': dimension %u is %lld (must be positive)", t->name, d,
				    (long long)t->ne[d]);
		if (__builtin_mul_overflow(t->n_elements, t->ne[d], &t->n_elements) ||
		    t->n_elements > INT64_MAX)
			return fail(c, -DUET_ESHAPE, c->off - 8,
				    "'%s': element count overflows at dimension %u", t->name, d);
	}

	ret = rd_u32(c, &type, t->name);
	if (ret)
		return ret;
	if (!ggml_type_name(type))
		return fail(c, -DUET_ETENSORTYPE, c->off - 4, "'%s': unknown tensor type id %u",
			    t->name, type);
	t->type = type;

	uint32_t blck = ggml_types[type].blck;
	if (t->ne[0] % blck)
		return fail(c, -DUET_ESIZE, at,
			    "'%s': first dimension %llu is not a multiple of the %s block size %u",
			    t->name, (unsigned long long)t->ne[0], ggml_types[type].name, blck);
	if (__builtin_mul_overflow(t->n_elements / blck, (uint64_t)ggml_types[type].size,
				   &nbytes) ||
	    nbytes > INT64_MAX)
		return fail(c, -DUET_ESIZE, at, "'%s': byte size of %llu %s elements overflows",
			    t->name, (unsigned long long)t->n_elements, ggml_types[type].name);
	t->size = nbytes;

	return rd_u64(c, &t->offset, t->name);
}

static int check_tensor_data(struct cursor *c, struct gguf_file *f)
{
	uint64_t data_size, end;
	uint64_t *order = f->tensor_sorted; /* reused: sorted by offset here, by name after */

	if (f->n_tensors == 0) {
		f->data_off = c->off;
		return 0;
	}
	/* The data section starts at the next multiple of the alignment. */
	f->data_off = (c->off + f->alignment - 1) / f->alignment * f->alignment;
	if (f->data_off > f->size)
		return fail(c, -DUET_ETRUNCATED, c->off,
			    "the data section should start at byte %llu but the file has %llu",
			    (unsigned long long)f->data_off, (unsigned long long)f->size);
	data_size = f->size - f->data_off;

	for (uint64_t i = 0; i < f->n_tensors; i++) {
		struct gguf_tensor *t = &f->tensors[i];

		if (t->offset % f->alignment)
			return fail(c, -DUET_EOFFSET, f->data_off,
				    "'%s': data offset %llu is not a multiple of the alignment %u",
				    t->name, (unsigned long long)t->offset, f->alignment);
		if (__builtin_add_overflow(t->offset, t->size, &end) || end > data_size)
			return fail(
				c, -DUET_EOFFSET, f->data_off,
				"'%s': data [%llu, +%llu) runs past the end of the data section "
				"(%llu bytes; file truncated?)",
				t->name, (unsigned long long)t->offset, (unsigned long long)t->size,
				(unsigned long long)data_size);
		t->data = f->base + f->data_off + t->offset;
		order[i] = i;
	}

	qsort_r(order, f->n_tensors, sizeof(*order), cmp_tensor_offset, f);
	for (uint64_t i = 1; i < f->n_tensors; i++) {
		const struct gguf_tensor *a = &f->tensors[order[i - 1]];
		const struct gguf_tensor *b = &f->tensors[order[i]];
		if (a->offset + a->size > b->offset)
			return fail(c, -DUET_EOVERLAP, f->data_off + b->offset,
				    "'%s' [%llu, +%llu) overlaps '%s' [%llu, +%llu)", b->name,
				    (unsigned long long)b->offset, (unsigned long long)b->size,
				    a->name, (unsigned long long)a->offset,
				    (unsigned long long)a->size);
	}
	return 0;
}

static int parse_tensors(struct cursor *c, struct gguf_file *f)
{
	int ret;

	for (uint64_t i = 0; i < f->n_tensors; i++) {
		ret = parse_tensor_info(c, f, i);
		if (ret)
			return ret;
	}
	ret = check_tensor_data(c, f);
	if (ret)
		return ret;

	for (uint64_t i = 0; i < f->n_tensors; i++)
		f->tensor_sorted[i] = i;
	qsort_r(f->tensor_sorted, f->n_tensors, sizeof(*f->tensor_sorted), cmp_tensor_name, f);
	for (uint64_t i = 1; i < f->n_tensors; i++) {
		const struct gguf_tensor *a = &f->tensors[f->tensor_sorted[i - 1]];
		const struct gguf_tensor *b = &f->tensors[f->tensor_sorted[i]];
		if (strcmp(a->name, b->name) == 0)
			return fail(c, -DUET_ETENSORNAME, NO_OFFSET, "duplicate tensor name '%s'",
				    b->name);
	}
	return 0;
}

static int parse_header(struct cursor *c, struct gguf_file *f)
{
	uint64_t rest;
	int ret;

	if (c->size < 4 || memcmp(c->base, GGUF_MAGIC, 4) != 0) {
		if (c->size < 4 && memcmp(c->base, GGUF_MAGIC, c->size) == 0)
			return fail(c, -DUET_ETRUNCATED, 0, "the file ends inside the magic");
		return fail(c, -DUET_EBADMAGIC, 0, "the file does not start with \"GGUF\"");
	}
	c->off = 4;
	ret = rd_u32(c, &f->version, "version");
	if (ret)
		return ret;
	if (f->version == 0x02000000 || f->version == 0x03000000)
		return fail(c, -DUET_EVERSION, 4, "big-endian GGUF files are not supported");
	if (f->version != 2 && f->version != 3)
		return fail(c, -DUET_EVERSION, 4, "version %u (supported: 2 and 3)", f->version);
	ret = rd_u64(c, &f->n_tensors, "tensor count");
	if (ret)
		return ret;
	ret = rd_u64(c, &f->n_kv, "metadata count");
	if (ret)
		return ret;

	rest = left(c);
	if (f->n_tensors > INT64_MAX || f->n_tensors > rest / MIN_TENSOR_BYTES)
		return fail(c, -DUET_ECOUNT, 8,
			    "tensor count %lld cannot fit in the %llu bytes left (truncated file?)",
			    (long long)f->n_tensors, (unsigned long long)rest);
	if (f->n_kv > INT64_MAX || f->n_kv > rest / MIN_KV_BYTES)
		return fail(
			c, -DUET_ECOUNT, 16,
			"metadata count %lld cannot fit in the %llu bytes left (truncated file?)",
			(long long)f->n_kv, (unsigned long long)rest);
	return 0;
}

static int gguf_parse(struct gguf_file *f, char *err, size_t errlen)
{
	struct cursor c = { .base = f->base, .size = f->size, .err = err, .errlen = errlen };
	int ret;

	ret = parse_header(&c, f);
	if (ret)
		return ret;

	/* Bounded by the file size through the count checks above. */
	f->kv = duet_calloc(f->n_kv ? f->n_kv : 1, sizeof(*f->kv));
	f->kv_sorted = duet_calloc(f->n_kv ? f->n_kv : 1, sizeof(*f->kv_sorted));
	f->tensors = duet_calloc(f->n_tensors ? f->n_tensors : 1, sizeof(*f->tensors));
	f->tensor_sorted = duet_calloc(f->n_tensors ? f->n_tensors : 1, sizeof(*f->tensor_sorted));
	f->names_cap = f->size; /* every name byte comes from the file, plus its NUL */
	f->names = duet_malloc(f->names_cap);
	if (!f->kv || !f->kv_sorted || !f->tensors || !f->tensor_sorted || !f->names)
		return fail(&c, -ENOMEM, 0, "out of memory for %llu entries",
			    (unsigned long long)(f->n_kv + f->n_tensors));
	for (uint64_t i = 0; i < f->n_kv; i++)
		f->kv_sorted[i] = i;

	ret = parse_kvs(&c, f);
	if (ret)
		return ret;
	ret = parse_alignment(&c, f);
	if (ret)
		return ret;
	return parse_tensors(&c, f);
}

/* --- open / close --------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int open_common(struct gguf_file *f, struct gguf_file **out, char *err, size_t errlen)
{
	int ret = gguf_parse(f, err, errlen);

	if (ret) {
		gguf_close(f);
		return ret;
	}
	*out = f;
	return 0;
}

int gguf_open_mem(const void *buf, size_t len, struct gguf_file **out, char *err, size_t errlen)
{
	struct gguf_file *f;

	*out = NULL;
	if (len == 0) {
		set_err(err, errlen, "%s: empty input", duet_strerror(-DUET_ETRUNCATED));
		return -DUET_ETRUNCATED;
	}
	f = duet_calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->base = buf;
	f->size = len;
	return open_common(f, out, err, errlen);
}

int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errlen)
{
	struct gguf_file *f;
	struct stat st;
	void *map;
	int fd, ret;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		set_err(err, errlen, "%s: open: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) != 0) {
		ret = -errno;
		set_err(err, errlen, "%s: fstat: %s", path, strerror(errno));
		goto close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		set_err(err, errlen, "%s: not a regular file", path);
		goto close_fd;
	}
	if (st.st_size == 0) {
		ret = -DUET_ETRUNCATED;
		set_err(err, errlen, "%s: %s: the file is empty", path, duet_strerror(ret));
		goto close_fd;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		set_err(err, errlen, "%s: mmap: %s", path, strerror(errno));
		goto close_fd;
	}
	close(fd);

	f = duet_calloc(1, sizeof(*f));
	if (!f || !(f->path = duet_strdup(path))) {
		duet_free(f);
		munmap(map, (size_t)st.st_size);
		return -ENOMEM;
	}
	f->base = map;
	f->size = (uint64_t)st.st_size;
	f->mapped = true;
	ret = gguf_parse(f, err, errlen);
	if (ret) {
		/* Prefix the message with the path so it stands alone in a log line. */
		if (err && errlen) {
			char msg[512];
			snprintf(msg, sizeof(msg), "%s", err);
			set_err(err, errlen, "%s: %s", path, msg);
		}
		gguf_close(f);
		return ret;
	}
	*out = f;
	return 0;

close_fd:
	close(fd);
	return ret;
}

void gguf_close(struct gguf_file *f)
{
	if (!f)
		return;
	if (f->kv) {
		for (uint64_t i = 0; i < f->n_kv; i++)
			duet_free(f->kv[i].str_offs);
	}
	duet_free(f->kv);
	duet_free(f->kv_sorted);
	duet_free(f->tensors);
	duet_free(f->tensor_sorted);
	duet_free(f->names);
	if (f->mapped)
		munmap((void *)f->base, f->size);
	duet_free(f->path);
	duet_free(f);
}

/* --- accessors ------------------------------------------------------------ */

uint32_t gguf_version(const struct gguf_file *f)
{
	return f->version;
}

uint32_t gguf_alignment(const struct gguf_file *f)
{
	return f->alignment;
}

uint64_t gguf_file_size(const struct gguf_file *f)
{
	return f->size;
}

uint64_t gguf_data_offset(const struct gguf_file *f)
{
	return f->data_off;
}

const char *gguf_path(const struct gguf_file *f)
{
	return f->path ? f->path : "(memory)";
}

uint64_t gguf_kv_count(const struct gguf_file *f)
{
	return f->n_kv;
}

int64_t gguf_find_key(const struct gguf_file *f, const char *key)
{
	uint64_t lo = 0, hi = f->n_kv;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		int c = strcmp(f->kv[f->kv_sorted[mid]].key, key);
		if (c == 0)
			return (int64_t)f->kv_sorted[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

const char *gguf_kv_key(const struct gguf_file *f, uint64_t i)
{
	return i < f->n_kv ? f->kv[i].key : NULL;
}

enum gguf_type gguf_kv_type(const struct gguf_file *f, uint64_t i)
{
	return i < f->n_kv ? f->kv[i].type : GGUF_TYPE_COUNT;
}

int gguf_kv_array(const struct gguf_file *f, uint64_t i, enum gguf_type *elem, uint64_t *n)
{
	if (i >= f->n_kv || f->kv[i].type != GGUF_TYPE_ARRAY)
		return -EINVAL;
	*elem = f->kv[i].elem;
	*n = f->kv[i].n;
	return 0;
}

/* Scalar of an integer, float or bool type at file offset off. */
static bool read_int(const uint8_t *p, enum gguf_type t, int64_t *sv, uint64_t *uv, bool *is_signed)
{
	*is_signed = false;
	switch (t) {
	case GGUF_TYPE_UINT8:
		*uv = p[0];
		return true;
	case GGUF_TYPE_UINT16: {
		uint16_t v;
		memcpy(&v, p, 2);
		*uv = v;
		return true;
	}
	case GGUF_TYPE_UINT32: {
		uint32_t v;
		memcpy(&v, p, 4);
		*uv = v;
		return true;
	}
	case GGUF_TYPE_UINT64:
		memcpy(uv, p, 8);
		return true;
	case GGUF_TYPE_INT8:
		*sv = (int8_t)p[0];
		break;
	case GGUF_TYPE_INT16: {
		int16_t v;
		memcpy(&v, p, 2);
		*sv = v;
		break;
	}
	case GGUF_TYPE_INT32: {
		int32_t v;
		memcpy(&v, p, 4);
		*sv = v;
		break;
	}
	case GGUF_TYPE_INT64:
		memcpy(sv, p, 8);
		break;
	default:
		return false;
	}
	*is_signed = true;
	return true;
}

static int key_lookup(const struct gguf_file *f, const char *key, int64_t *i)
{
	*i = gguf_find_key(f, key);
	return *i < 0 ? -ENOENT : 0;
}

static int wrong_type(const struct gguf_file *f, int64_t i, const char *want, char *err,
		      size_t errlen)
{
	const struct gguf_kv *kv = &f->kv[i];

	if (kv->type == GGUF_TYPE_ARRAY)
		set_err(err, errlen, "'%s' must be %s, not an array of %s", kv->key, want,
			gguf_type_name(kv->elem));
	else
		set_err(err, errlen, "'%s' must be %s, not %s", kv->key, want,
			gguf_type_name(kv->type));
	return -DUET_EMODELKEY;
}

int gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out, char *err,
		 size_t errlen)
{
	int64_t i, sv = 0;
	uint64_t uv = 0;
	bool is_signed;

	if (key_lookup(f, key, &i))
		return -ENOENT;
	if (!read_int(f->base + f->kv[i].off, f->kv[i].type, &sv, &uv, &is_signed))
		return wrong_type(f, i, "an unsigned integer", err, errlen);
	if (is_signed) {
		if (sv < 0) {
			set_err(err, errlen, "'%s' is negative (%lld)", key, (long long)sv);
			return -DUET_EMODELKEY;
		}
		uv = (uint64_t)sv;
	}
	*out = uv;
	return 0;
}

int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out, char *err,
		 size_t errlen)
{
	uint64_t v;
	int ret = gguf_get_u64(f, key, &v, err, errlen);

	if (ret)
		return ret;
	if (v > UINT32_MAX) {
		set_err(err, errlen, "'%s' = %llu does not fit in 32 bits", key,
			(unsigned long long)v);
		return -DUET_EMODELKEY;
	}
	*out = (uint32_t)v;
	return 0;
}

int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out, char *err, size_t errlen)
{
	int64_t i, sv = 0;
	uint64_t uv = 0;
	bool is_signed;

	if (key_lookup(f, key, &i))
		return -ENOENT;
	if (!read_int(f->base + f->kv[i].off, f->kv[i].type, &sv, &uv, &is_signed))
		return wrong_type(f, i, "an integer", err, errlen);
	if (!is_signed) {
		if (uv > INT64_MAX) {
			set_err(err, errlen, "'%s' = %llu does not fit in 63 bits", key,
				(unsigned long long)uv);
			return -DUET_EMODELKEY;
		}
		sv = (int64_t)uv;
	}
	*out = sv;
	return 0;
}

int gguf_get_f32(const struct gguf_file *f, const char *key, float *out, char *err, size_t errlen)
{
	int64_t i;

	if (key_lookup(f, key, &i))
		return -ENOENT;
	if (f->kv[i].type == GGUF_TYPE_FLOAT32) {
		memcpy(out, f->base + f->kv[i].off, 4);
	} else if (f->kv[i].type == GGUF_TYPE_FLOAT64) {
		double d;
		memcpy(&d, f->base + f->kv[i].off, 8);
		*out = (float)d;
	} else {
		return wrong_type(f, i, "FLOAT32", err, errlen);
	}
	return 0;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out, char *err, size_t errlen)
{
	int64_t i;

	if (key_lookup(f, key, &i))
		return -ENOENT;
	if (f->kv[i].type != GGUF_TYPE_BOOL)
		return wrong_type(f, i, "BOOL", err, errlen);
	*out = f->base[f->kv[i].off] != 0;
	return 0;
}

static void str_at(const struct gguf_file *f, uint64_t off, const char **s, size_t *len)
{
	uint64_t n;

	memcpy(&n, f->base + off, 8);
	*s = (const char *)f->base + off + 8;
	*len = (size_t)n;
}

int gguf_get_str(const struct gguf_file *f, const char *key, const char **s, size_t *len, char *err,
		 size_t errlen)
{
	int64_t i;

	if (key_lookup(f, key, &i))
		return -ENOENT;
	if (f->kv[i].type != GGUF_TYPE_STRING)
		return wrong_type(f, i, "STRING", err, errlen);
	str_at(f, f->kv[i].off, s, len);
	return 0;
}

int gguf_get_arr(const struct gguf_file *f, const char *key, enum gguf_type elem, uint64_t *n,
		 char *err, size_t errlen)
{
	int64_t i;
	char want[48];

	if (key_lookup(f, key, &i))
		return -ENOENT;
	if (f->kv[i].type != GGUF_TYPE_ARRAY || f->kv[i].elem != elem) {
		snprintf(want, sizeof(want), "an array of %s", gguf_type_name(elem));
		return wrong_type(f, i, want, err, errlen);
	}
	*n = f->kv[i].n;
	return 0;
}

int gguf_arr_str(const struct gguf_file *f, uint64_t i, uint64_t j, const char **s, size_t *len)
{
	if (i >= f->n_kv || f->kv[i].type != GGUF_TYPE_ARRAY || f->kv[i].elem != GGUF_TYPE_STRING ||
	    j >= f->kv[i].n)
		return -EINVAL;
	str_at(f, f->kv[i].str_offs[j], s, len);
	return 0;
}

const void *gguf_arr_data(const struct gguf_file *f, uint64_t i)
{
	if (i >= f->n_kv || f->kv[i].type != GGUF_TYPE_ARRAY || f->kv[i].elem == GGUF_TYPE_STRING)
		return NULL;
	return f->base + f->kv[i].off;
}

int64_t gguf_arr_get_int(const struct gguf_file *f, uint64_t i, uint64_t j)
{
	const struct gguf_kv *kv;
	int64_t sv = 0;
	uint64_t uv = 0;
	bool is_signed;

	if (i >= f->n_kv || f->kv[i].type != GGUF_TYPE_ARRAY || j >= f->kv[i].n)
		return 0;
	kv = &f->kv[i];
	if (kv->elem == GGUF_TYPE_BOOL)
		return f->base[kv->off + j];
	if (!read_int(f->base + kv->off + j * gguf_types[kv->elem].size, kv->elem, &sv, &uv,
		      &is_signed))
		return 0;
	return is_signed ? sv : (int64_t)uv;
}

double gguf_arr_get_float(const struct gguf_file *f, uint64_t i, uint64_t j)
{
	const struct gguf_kv *kv;

	if (i >= f->n_kv || f->kv[i].type != GGUF_TYPE_ARRAY || j >= f->kv[i].n)
		return 0;
	kv = &f->kv[i];
	if (kv->elem == GGUF_TYPE_FLOAT32) {
		float v;
		memcpy(&v, f->base + kv->off + j * 4, 4);
		return v;
	}
	if (kv->elem == GGUF_TYPE_FLOAT64) {
		double v;
		memcpy(&v, f->base + kv->off + j * 8, 8);
		return v;
	}
	return (double)gguf_arr_get_int(f, i, j);
}

uint64_t gguf_tensor_count(const struct gguf_file *f)
{
	return f->n_tensors;
}

const struct gguf_tensor *gguf_tensor(const struct gguf_file *f, uint64_t i)
{
	return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name)
{
	uint64_t lo = 0, hi = f->n_tensors;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		const struct gguf_tensor *t = &f->tensors[f->tensor_sorted[mid]];
		int c = strcmp(t->name, name);
		if (c == 0)
			return t;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}
