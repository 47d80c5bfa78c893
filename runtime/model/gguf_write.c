// SPDX-License-Identifier: MIT
/*
 * GGUF writer.  Each key/value is encoded to its wire bytes when it is added,
 * so writing is a straight copy; tensor offsets are laid out at write time
 * (the alignment may change until then).  Output goes through one small
 * "sink" that is either a caller-visible malloc'd buffer or a buffered file
 * descriptor, so both targets share one serializer.
 */
#include "runtime/model/gguf_write.h"
#include "runtime/core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF writer assumes a little-endian host"
#endif

#define GW_VERSION 3
#define GW_FILE_BUF (1u << 20) /* bytes buffered before a write(2) */
#define GW_ALIGN_KEY "general.alignment"

struct gw_kv {
	char *key;
	size_t key_len;
	enum gguf_type type;
	uint8_t *val; /* wire bytes following the u32 type id */
	size_t val_len;
};

struct gw_tensor {
	struct gguf_writer_tensor info; /* info.name is owned */
	const void *data;		/* or NULL with fill set */
	gguf_writer_fill_fn fill;
	void *ctx;
};

struct gguf_writer {
	struct gw_kv *kv;
	size_t n_kv, cap_kv;
	struct gw_tensor *tensors;
	size_t n_tensors, cap_tensors;
	uint32_t alignment;
};

/* --- encoding helpers ----------------------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, unsigned int bytes)
{
	for (unsigned int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t gtype_size(enum gguf_type t)
{
	switch (t) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_BOOL:
		return 1;
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_INT16:
		return 2;
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_FLOAT32:
		return 4;
	case GGUF_TYPE_UINT64:
	case GGUF_TYPE_INT64:
	case GGUF_TYPE_FLOAT64:
		return 8;
	default:
		return 0; /* STRING, ARRAY, unknown */
	}
}

static uint64_t align_up(uint64_t x, uint32_t a)
{
	return (x + a - 1) / a * a;
}

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* --- create / destroy ------------------------------------------------------ */

int gguf_writer_create(struct gguf_writer **out)
{
	struct gguf_writer *w = calloc(1, sizeof(*w));

	*out = NULL;
	if (!w)
		return -ENOMEM;
	w->alignment = GGUF_DEFAULT_ALIGNMENT;
	*out = w;
	return 0;
}

void gguf_writer_destroy(struct gguf_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n_kv; i++) {
		free(w->kv[i].key);
		free(w->kv[i].val);
	}
	for (size_t i = 0; i < w->n_tensors; i++)
		free((char *)w->tensors[i].info.name);
	free(w->kv);
	free(w->tensors);
	free(w);
}

uint64_t gguf_writer_kv_count(const struct gguf_writer *w)
{
	return w->n_kv;
}

uint64_t gguf_writer_tensor_count(const struct gguf_writer *w)
{
	return w->n_tensors;
}

/* --- key/values ------------------------------------------------------------ */

static struct gw_kv *find_kv(struct gguf_writer *w, const char *key)
{
	for (size_t i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kv[i].key, key) == 0)
			return &w->kv[i];
	}
	return NULL;
}

static int check_key(struct gguf_writer *w, const char *key)
{
	size_t len;

	if (!key || !*key) {
		log_error("gguf", "writer: empty metadata key");
		return -EINVAL;
	}
	len = strlen(key);
	if (len > GGUF_MAX_KEY) {
		log_error("gguf", "writer: key '%.40s...' is %zu bytes long (limit %d)", key, len,
			  GGUF_MAX_KEY);
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)key[i];

		if (ch <= 0x20 || ch >= 0x7f) {
			log_error("gguf",
				  "writer: key '%s' has a byte 0x%02x that is not printable ASCII",
				  key, ch);
			return -EINVAL;
		}
	}
	if (find_kv(w, key)) {
		log_error("gguf", "writer: duplicate key '%s'", key);
		return -EINVAL;
	}
	return 0;
}

/*
 * Append key with type and len wire bytes of value, taking ownership of val
 * (freed on failure too).
 */
static int push_kv(struct gguf_writer *w, const char *key, enum gguf_type type, uint8_t *val,
		   size_t len)
{
	struct gw_kv *kv;
	char *k;
	int ret;

	ret = check_key(w, key);
	if (ret)
		goto free_val;
	ret = -ENOMEM;
	if (w->n_kv == w->cap_kv) {
		size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
		struct gw_kv *n = realloc(w->kv, cap * sizeof(*n));

		if (!n)
			goto free_val;
		w->kv = n;
		w->cap_kv = cap;
	}
	k = strdup(key);
	if (!k)
		goto free_val;
	kv = &w->kv[w->n_kv++];
	kv->key = k;
	kv->key_len = strlen(k);
	kv->type = type;
	kv->val = val;
	kv->val_len = len;
	return 0;

free_val:
	free(val);
	return ret;
}

static int add_scalar(struct gguf_writer *w, const char *key, enum gguf_type type, const void *v)
{
	uint32_t size = gtype_size(type);
	uint8_t *val;

	val = malloc(size);
	if (!val)
		return -ENOMEM;
	memcpy(val, v, size);
	return push_kv(w, key, type, val, size);
}

int gguf_writer_set_alignment(struct gguf_writer *w, uint32_t alignment)
{
	struct gw_kv *kv;
	uint8_t *val;

	if (!is_pow2(alignment) || alignment > GGUF_MAX_ALIGNMENT) {
		log_error("gguf", "writer: alignment %u is not a power of two in [1, %u]",
			  alignment, GGUF_MAX_ALIGNMENT);
		return -EINVAL;
	}
	kv = find_kv(w, GW_ALIGN_KEY);
	if (kv) {
		put_le(kv->val, alignment, 4);
	} else {
		val = malloc(4);
		if (!val)
			return -ENOMEM;
		put_le(val, alignment, 4);
		int ret = push_kv(w, GW_ALIGN_KEY, GGUF_TYPE_UINT32, val, 4);
		if (ret)
			return ret;
	}
	w->alignment = alignment;
	return 0;
}

/* Only UINT32 is a valid type for general.alignment (what readers require). */
static int reject_alignment_key(const char *key, enum gguf_type type)
{
	if (key && strcmp(key, GW_ALIGN_KEY) == 0) {
		log_error("gguf", "writer: %s must be UINT32, not %s", GW_ALIGN_KEY,
			  gguf_type_name(type));
		return -EINVAL;
	}
	return 0;
}

#define GW_ADD_SCALAR(suffix, ctype, gtype)                                           \
	int gguf_writer_add_##suffix(struct gguf_writer *w, const char *key, ctype v) \
	{                                                                             \
		int ret = reject_alignment_key(key, gtype);                           \
		if (ret)                                                              \
			return ret;                                                   \
		return add_scalar(w, key, gtype, &v);                                 \
	}

GW_ADD_SCALAR(u8, uint8_t, GGUF_TYPE_UINT8)
GW_ADD_SCALAR(i8, int8_t, GGUF_TYPE_INT8)
GW_ADD_SCALAR(u16, uint16_t, GGUF_TYPE_UINT16)
GW_ADD_SCALAR(i16, int16_t, GGUF_TYPE_INT16)
GW_ADD_SCALAR(i32, int32_t, GGUF_TYPE_INT32)
GW_ADD_SCALAR(u64, uint64_t, GGUF_TYPE_UINT64)
GW_ADD_SCALAR(i64, int64_t, GGUF_TYPE_INT64)
GW_ADD_SCALAR(f32, float, GGUF_TYPE_FLOAT32)
GW_ADD_SCALAR(f64, double, GGUF_TYPE_FLOAT64)
#undef GW_ADD_SCALAR

int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
	if (key && strcmp(key, GW_ALIGN_KEY) == 0) {
		if (find_kv(w, key)) {
			log_error("gguf", "writer: duplicate key '%s'", key);
			return -EINVAL;
		}
		return gguf_writer_set_alignment(w, v);
	}
	return add_scalar(w, key, GGUF_TYPE_UINT32, &v);
}

int gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool v)
{
	uint8_t b = v ? 1 : 0;
	int ret = reject_alignment_key(key, GGUF_TYPE_BOOL);

	if (ret)
		return ret;
	return add_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

int gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *s, size_t len)
{
	uint8_t *val;
	int ret = reject_alignment_key(key, GGUF_TYPE_STRING);

	if (ret)
		return ret;
	if (!s && len) {
		log_error("gguf", "writer: '%s': NULL string", key ? key : "");
		return -EINVAL;
	}
	if (len > GGUF_MAX_STRING) {
		log_error("gguf", "writer: '%s': string of %zu bytes is too long (limit %u)",
			  key ? key : "", len, GGUF_MAX_STRING);
		return -EINVAL;
	}
	val = malloc(8 + len);
	if (!val)
		return -ENOMEM;
	put_le(val, len, 8);
	if (len)
		memcpy(val + 8, s, len);
	return push_kv(w, key, GGUF_TYPE_STRING, val, 8 + len);
}

int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *s)
{
	if (!s) {
		log_error("gguf", "writer: '%s': NULL string", key ? key : "");
		return -EINVAL;
	}
	return gguf_writer_add_strn(w, key, s, strlen(s));
}

int gguf_writer_add_arr(struct gguf_writer *w, const char *key, enum gguf_type elem,
			const void *data, uint64_t n)
{
	uint32_t esize = gtype_size(elem);
	uint8_t *val;
	size_t bytes;
	int ret = reject_alignment_key(key, GGUF_TYPE_ARRAY);

	if (ret)
		return ret;
	if (esize == 0) {
		log_error("gguf", "writer: '%s': array element type %s is not a number or bool",
			  key ? key : "", gguf_type_name(elem));
		return -EINVAL;
	}
	if (!data && n) {
		log_error("gguf", "writer: '%s': NULL array data", key ? key : "");
		return -EINVAL;
	}
	if (n > (SIZE_MAX - 12) / esize) {
		log_error("gguf", "writer: '%s': %llu array elements overflow", key ? key : "",
			  (unsigned long long)n);
		return -EINVAL;
	}
	bytes = (size_t)n * esize;
	val = malloc(12 + bytes);
	if (!val)
		return -ENOMEM;
	put_le(val, elem, 4);
	put_le(val + 4, n, 8);
	if (elem == GGUF_TYPE_BOOL) {
		for (size_t i = 0; i < n; i++)
			val[12 + i] = ((const uint8_t *)data)[i] ? 1 : 0;
	} else if (bytes) {
		memcpy(val + 12, data, bytes);
	}
	return push_kv(w, key, GGUF_TYPE_ARRAY, val, 12 + bytes);
}

int gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
			    uint64_t n)
{
	size_t bytes = 12, pos;
	uint8_t *val;
	int ret = reject_alignment_key(key, GGUF_TYPE_ARRAY);

	if (ret)
		return ret;
	if (!strs && n) {
		log_error("gguf", "writer: '%s': NULL string array", key ? key : "");
		return -EINVAL;
	}
	for (uint64_t i = 0; i < n; i++) {
		size_t len;

		if (!strs[i]) {
			log_error("gguf", "writer: '%s': string %llu is NULL", key ? key : "",
				  (unsigned long long)i);
			return -EINVAL;
		}
		len = strlen(strs[i]);
		if (len > GGUF_MAX_STRING) {
			log_error("gguf", "writer: '%s': string %llu is %zu bytes (limit %u)",
				  key ? key : "", (unsigned long long)i, len, GGUF_MAX_STRING);
			return -EINVAL;
		}
		if (__builtin_add_overflow(bytes, 8 + len, &bytes)) {
			log_error("gguf", "writer: '%s': string array too large", key ? key : "");
			return -EINVAL;
		}
	}
	val = malloc(bytes);
	if (!val)
		return -ENOMEM;
	put_le(val, GGUF_TYPE_STRING, 4);
	put_le(val + 4, n, 8);
	pos = 12;
	for (uint64_t i = 0; i < n; i++) {
		size_t len = strlen(strs[i]);

		put_le(val + pos, len, 8);
		memcpy(val + pos + 8, strs[i], len);
		pos += 8 + len;
	}
	return push_kv(w, key, GGUF_TYPE_ARRAY, val, bytes);
}

/* --- tensors --------------------------------------------------------------- */

/* Like gguf_writer_tensor_size(); *why names the problem for the log. */
static int tensor_size(enum ggml_type type, uint32_t n_dims, const uint64_t *ne, uint64_t *size,
		       const char **why)
{
	uint32_t blck = ggml_blck_size(type), tsize = ggml_type_size(type);
	uint64_t rows = 1;

	if (blck == 0 || tsize == 0) {
		*why = "unknown tensor type";
		return -EINVAL;
	}
	if (n_dims == 0 || n_dims > GGUF_MAX_DIMS || !ne) {
		*why = "n_dims out of range";
		return -EINVAL;
	}
	for (uint32_t d = 0; d < n_dims; d++) {
		if (ne[d] == 0 || ne[d] > INT64_MAX) {
			*why = "a dimension is zero or above INT64_MAX";
			return -EINVAL;
		}
	}
	if (ne[0] % blck) {
		*why = "ne[0] is not a multiple of the type's block size";
		return -EINVAL;
	}
	for (uint32_t d = 1; d < n_dims; d++) {
		if (__builtin_mul_overflow(rows, ne[d], &rows))
			goto overflow;
	}
	if (__builtin_mul_overflow(ne[0] / blck * tsize, rows, size) || *size > INT64_MAX)
		goto overflow;
	return 0;

overflow:
	*why = "byte size overflows";
	return -EOVERFLOW;
}

int gguf_writer_tensor_size(enum ggml_type type, uint32_t n_dims, const uint64_t *ne,
			    uint64_t *size)
{
	const char *why;

	return tensor_size(type, n_dims, ne, size, &why);
}

static int push_tensor(struct gguf_writer *w, const char *name, enum ggml_type type,
		       uint32_t n_dims, const uint64_t *ne, const void *data, uint64_t size,
		       gguf_writer_fill_fn fill, void *ctx)
{
	struct gw_tensor *t;
	uint64_t want;
	const char *why;
	size_t len;
	char *copy;
	int ret;

	if (!name || !*name) {
		log_error("gguf", "writer: empty tensor name");
		return -EINVAL;
	}
	len = strlen(name);
	if (len > GGUF_WRITER_MAX_NAME) {
		log_error("gguf", "writer: tensor name '%s' is %zu bytes (limit %d)", name, len,
			  GGUF_WRITER_MAX_NAME);
		return -EINVAL;
	}
	for (size_t i = 0; i < w->n_tensors; i++) {
		if (strcmp(w->tensors[i].info.name, name) == 0) {
			log_error("gguf", "writer: duplicate tensor '%s'", name);
			return -EINVAL;
		}
	}
	ret = tensor_size(type, n_dims, ne, &want, &why);
	if (ret) {
		log_error("gguf", "writer: tensor '%s' (type %s, %u dims): %s", name,
			  ggml_type_name(type) ? ggml_type_name(type) : "?", n_dims, why);
		return -EINVAL;
	}
	if (!fill && size != want) {
		log_error("gguf",
			  "writer: tensor '%s': %llu bytes of data, but its %s shape needs %llu",
			  name, (unsigned long long)size, ggml_type_name(type),
			  (unsigned long long)want);
		return -EINVAL;
	}
	if (!fill && !data) {
		log_error("gguf", "writer: tensor '%s': NULL data", name);
		return -EINVAL;
	}
	if (want > SIZE_MAX) {
		log_error("gguf", "writer: tensor '%s' of %llu bytes does not fit in memory", name,
			  (unsigned long long)want);
		return -EINVAL;
	}

	if (w->n_tensors == w->cap_tensors) {
		size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
		struct gw_tensor *n = realloc(w->tensors, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		w->tensors = n;
		w->cap_tensors = cap;
	}
	copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	t = &w->tensors[w->n_tensors++];
	memset(t, 0, sizeof(*t));
	t->info.name = copy;
	t->info.type = type;
	t->info.n_dims = n_dims;
	for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
		t->info.ne[d] = d < n_dims ? ne[d] : 1;
	t->info.size = want;
	t->data = data;
	t->fill = fill;
	t->ctx = ctx;
	return 0;
}

int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, enum ggml_type type,
			   uint32_t n_dims, const uint64_t *ne, const void *data, uint64_t size)
{
	return push_tensor(w, name, type, n_dims, ne, data, size, NULL, NULL);
}

int gguf_writer_add_tensor_fill(struct gguf_writer *w, const char *name, enum ggml_type type,
				uint32_t n_dims, const uint64_t *ne, gguf_writer_fill_fn fill,
				void *ctx)
{
	if (!fill) {
		log_error("gguf", "writer: tensor '%s': NULL fill callback", name ? name : "");
		return -EINVAL;
	}
	return push_tensor(w, name, type, n_dims, ne, NULL, 0, fill, ctx);
}

/* --- layout ---------------------------------------------------------------- */

/*
 * Bytes before the data section (unpadded) into *meta, and the data section
 * size (each tensor padded to the alignment) into *data.  Every tensor size
 * was bounded when it was added, but many huge tensors can still overflow.
 */
static int layout(const struct gguf_writer *w, uint64_t *meta, uint64_t *data)
{
	uint64_t m = 4 + 4 + 8 + 8, d = 0;

	for (size_t i = 0; i < w->n_kv; i++)
		m += 8 + w->kv[i].key_len + 4 + w->kv[i].val_len;
	for (size_t i = 0; i < w->n_tensors; i++) {
		const struct gw_tensor *t = &w->tensors[i];

		m += 8 + strlen(t->info.name) + 4 + 8 * (uint64_t)t->info.n_dims + 4 + 8;
		if (__builtin_add_overflow(d, align_up(t->info.size, w->alignment), &d) ||
		    d > INT64_MAX)
			return -EOVERFLOW;
	}
	*meta = m;
	*data = d;
	return 0;
}

uint64_t gguf_writer_file_size(const struct gguf_writer *w)
{
	uint64_t meta, data;

	if (layout(w, &meta, &data))
		return 0;
	return align_up(meta, w->alignment) + data;
}

/* --- sinks ----------------------------------------------------------------- */

struct gw_sink {
	/* memory target */
	uint8_t *mem;
	size_t mem_len;
	/* file target */
	int fd;
	const char *path; /* for messages */
	uint8_t *buf;
	size_t buf_used;
	/* both */
	uint64_t pos;
};

static int write_all(struct gw_sink *s, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = write(s->fd, p, n > (1u << 30) ? (1u << 30) : n);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			int ret = -errno;
			log_error("gguf", "writer: %s: write: %s", s->path, strerror(errno));
			return ret;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int sink_flush(struct gw_sink *s)
{
	int ret = 0;

	if (s->mem || !s->buf_used)
		return 0;
	ret = write_all(s, s->buf, s->buf_used);
	s->buf_used = 0;
	return ret;
}

static int sink_put(struct gw_sink *s, const void *p, size_t n)
{
	int ret;

	if (s->mem) {
		DUET_ASSERT(s->pos + n <= s->mem_len);
		memcpy(s->mem + s->pos, p, n);
		s->pos += n;
		return 0;
	}
	s->pos += n;
	if (n >= GW_FILE_BUF) {
		ret = sink_flush(s);
		return ret ? ret : write_all(s, p, n);
	}
	if (s->buf_used + n > GW_FILE_BUF) {
		ret = sink_flush(s);
		if (ret)
			return ret;
	}
	memcpy(s->buf + s->buf_used, p, n);
	s->buf_used += n;
	return 0;
}

static int sink_zeros(struct gw_sink *s, uint64_t n)
{
	static const uint8_t zeros[256];
	int ret;

	while (n) {
		size_t k = n > sizeof(zeros) ? sizeof(zeros) : (size_t)n;

		ret = sink_put(s, zeros, k);
		if (ret)
			return ret;
		n -= k;
	}
	return 0;
}

static int sink_u32(struct gw_sink *s, uint32_t v)
{
	uint8_t b[4];

	put_le(b, v, 4);
	return sink_put(s, b, 4);
}

static int sink_u64(struct gw_sink *s, uint64_t v)
{
	uint8_t b[8];

	put_le(b, v, 8);
	return sink_put(s, b, 8);
}

static int sink_str(struct gw_sink *s, const char *str, size_t len)
{
	int ret = sink_u64(s, len);

	return ret ? ret : sink_put(s, str, len);
}

/* --- serializer ------------------------------------------------------------ */

/* Largest fill-tensor size: the scratch a file target needs. */
static uint64_t max_fill_size(const struct gguf_writer *w)
{
	uint64_t m = 0;

	for (size_t i = 0; i < w->n_tensors; i++) {
		if (w->tensors[i].fill && w->tensors[i].info.size > m)
			m = w->tensors[i].info.size;
	}
	return m;
}

static int emit_tensor_data(struct gw_sink *s, const struct gw_tensor *t, uint8_t *scratch)
{
	uint8_t *dst;
	int ret;

	if (!t->fill)
		return sink_put(s, t->data, (size_t)t->info.size);
	/* Memory target: fill in place.  File target: fill the scratch, then copy. */
	dst = s->mem ? s->mem + s->pos : scratch;
	ret = t->fill(t->ctx, &t->info, dst);
	if (ret)
		return ret;
	if (s->mem) {
		s->pos += t->info.size;
		return 0;
	}
	return sink_put(s, dst, (size_t)t->info.size);
}

static int serialize(struct gguf_writer *w, struct gw_sink *s, uint64_t meta)
{
	uint8_t *scratch = NULL;
	uint64_t fill_max;
	int ret;

	if (!s->mem && (fill_max = max_fill_size(w)) > 0) {
		scratch = malloc((size_t)fill_max);
		if (!scratch) {
			log_error("gguf", "writer: no memory for a %llu-byte tensor buffer",
				  (unsigned long long)fill_max);
			return -ENOMEM;
		}
	}

	ret = sink_put(s, GGUF_MAGIC, 4);
	if (!ret)
		ret = sink_u32(s, GW_VERSION);
	if (!ret)
		ret = sink_u64(s, w->n_tensors);
	if (!ret)
		ret = sink_u64(s, w->n_kv);
	for (size_t i = 0; !ret && i < w->n_kv; i++) {
		const struct gw_kv *kv = &w->kv[i];

		ret = sink_str(s, kv->key, kv->key_len);
		if (!ret)
			ret = sink_u32(s, kv->type);
		if (!ret)
			ret = sink_put(s, kv->val, kv->val_len);
	}
	/* Offsets: the tensors back to back in order, each padded to the alignment. */
	uint64_t offset = 0;
	for (size_t i = 0; !ret && i < w->n_tensors; i++) {
		const struct gw_tensor *t = &w->tensors[i];

		ret = sink_str(s, t->info.name, strlen(t->info.name));
		if (!ret)
			ret = sink_u32(s, t->info.n_dims);
		for (uint32_t d = 0; !ret && d < t->info.n_dims; d++)
			ret = sink_u64(s, t->info.ne[d]);
		if (!ret)
			ret = sink_u32(s, t->info.type);
		if (!ret)
			ret = sink_u64(s, offset);
		offset += align_up(t->info.size, w->alignment);
	}
	if (ret)
		goto free_scratch;
	DUET_ASSERT(s->pos == meta);
	ret = sink_zeros(s, align_up(meta, w->alignment) - meta);

	for (size_t i = 0; !ret && i < w->n_tensors; i++) {
		const struct gw_tensor *t = &w->tensors[i];

		ret = emit_tensor_data(s, t, scratch);
		if (!ret)
			ret = sink_zeros(s, align_up(t->info.size, w->alignment) - t->info.size);
	}
	if (!ret)
		ret = sink_flush(s);

free_scratch:
	free(scratch);
	return ret;
}

int gguf_writer_write_mem(struct gguf_writer *w, void **buf, size_t *len)
{
	struct gw_sink s = { .fd = -1 };
	uint64_t meta, data, total;
	int ret;

	*buf = NULL;
	*len = 0;
	ret = layout(w, &meta, &data);
	if (ret || __builtin_add_overflow(align_up(meta, w->alignment), data, &total) ||
	    total > SIZE_MAX) {
		log_error("gguf", "writer: file size overflows");
		return -EOVERFLOW;
	}
	s.mem_len = (size_t)total;
	s.mem = malloc(s.mem_len ? s.mem_len : 1);
	if (!s.mem)
		return -ENOMEM;
	ret = serialize(w, &s, meta);
	if (ret) {
		free(s.mem);
		return ret;
	}
	DUET_ASSERT(s.pos == total);
	*buf = s.mem;
	*len = s.mem_len;
	return 0;
}

/* fsync the directory holding path, so the rename itself is durable. */
static int sync_parent_dir(const char *path)
{
	char *copy = strdup(path);
	int fd, ret = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		log_error("gguf", "writer: %s: open directory: %s", path, strerror(errno));
		goto free_copy;
	}
	if (fsync(fd) != 0 && errno != EINVAL) { /* some filesystems cannot sync directories */
		ret = -errno;
		log_error("gguf", "writer: %s: fsync directory: %s", path, strerror(errno));
	}
	close(fd);
free_copy:
	free(copy);
	return ret;
}

int gguf_writer_write_file(struct gguf_writer *w, const char *path)
{
	struct gw_sink s = { .fd = -1, .path = NULL };
	uint64_t meta, data;
	char *tmp = NULL;
	int ret;

	ret = layout(w, &meta, &data);
	if (ret) {
		log_error("gguf", "writer: %s: file size overflows", path);
		return ret;
	}
	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return -ENOMEM;
	s.path = tmp;
	s.buf = malloc(GW_FILE_BUF);
	if (!s.buf) {
		ret = -ENOMEM;
		goto free_tmp;
	}
	s.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (s.fd < 0) {
		ret = -errno;
		log_error("gguf", "writer: %s: open: %s", tmp, strerror(errno));
		goto free_buf;
	}
	ret = serialize(w, &s, meta);
	if (ret)
		goto unlink_tmp;
	if (fsync(s.fd) != 0) {
		ret = -errno;
		log_error("gguf", "writer: %s: fsync: %s", tmp, strerror(errno));
		goto unlink_tmp;
	}
	if (close(s.fd) != 0) {
		s.fd = -1;
		ret = -errno;
		log_error("gguf", "writer: %s: close: %s", tmp, strerror(errno));
		goto unlink_tmp;
	}
	s.fd = -1;
	if (rename(tmp, path) != 0) {
		ret = -errno;
		log_error("gguf", "writer: rename %s to %s: %s", tmp, path, strerror(errno));
		goto unlink_tmp;
	}
	ret = sync_parent_dir(path);
	goto free_buf;

unlink_tmp:
	if (s.fd >= 0)
		close(s.fd);
	unlink(tmp);
free_buf:
	free(s.buf);
free_tmp:
	free(tmp);
	return ret;
}
