// SPDX-License-Identifier: MIT
/*
 * The GGUF writer and the synthetic model generator, checked through the
 * project's GGUF reader: every key/value type and tensor type round-trips,
 * alignment and padding follow the spec, misuse is rejected with -EINVAL and
 * a log line, files are written atomically; generated models have exactly
 * the metadata, tensors and bytes they promise, are deterministic, and carry
 * the same header as ../shared's tiny-bytes models (skipped when absent).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/cpu/quant.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_write.h"
#include "runtime/model/model.h"
#include "runtime/model/synth.h"
#include "tests/unit/testutil.h"

static struct gguf_file *open_mem_ok(const void *buf, size_t len)
{
	struct gguf_file *f = NULL;
	char err[512] = "";
	int ret = gguf_open_mem(buf, len, &f, err, sizeof(err));

	if (ret)
		fail_msg("gguf_open_mem: %d: %s", ret, err);
	return f;
}

static struct gguf_file *open_file_ok(const char *path)
{
	struct gguf_file *f = NULL;
	char err[512] = "";
	int ret = gguf_open(path, &f, err, sizeof(err));

	if (ret)
		fail_msg("gguf_open %s: %d: %s", path, ret, err);
	return f;
}

static char *path_in(const char *dir, const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* --- writer: values and tensors ------------------------------------------- */

static void check_str(const struct gguf_file *f, const char *key, const char *want, size_t wlen)
{
	const char *s;
	size_t len;

	assert_int_equal(gguf_get_str(f, key, &s, &len, NULL, 0), 0);
	assert_int_equal(len, wlen);
	assert_memory_equal(s, want, wlen);
}

static void check_type(const struct gguf_file *f, const char *key, enum gguf_type t)
{
	int64_t i = gguf_find_key(f, key);

	if (i < 0)
		fail_msg("key %s missing", key);
	assert_int_equal(gguf_kv_type(f, (uint64_t)i), t);
}

static void test_writer_all_types(void **state)
{
	struct gguf_writer *w;
	void *buf;
	size_t len;
	uint64_t v64;
	int64_t i64;
	float fv;
	bool b;

	(void)state;
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_add_u8(w, "t.u8", 200), 0);
	assert_int_equal(gguf_writer_add_i8(w, "t.i8", -100), 0);
	assert_int_equal(gguf_writer_add_u16(w, "t.u16", 65000), 0);
	assert_int_equal(gguf_writer_add_i16(w, "t.i16", -30000), 0);
	assert_int_equal(gguf_writer_add_u32(w, "t.u32", 4000000000u), 0);
	assert_int_equal(gguf_writer_add_i32(w, "t.i32", -2000000000), 0);
	assert_int_equal(gguf_writer_add_u64(w, "t.u64", 0xfedcba9876543210ull), 0);
	assert_int_equal(gguf_writer_add_i64(w, "t.i64", INT64_MIN + 5), 0);
	assert_int_equal(gguf_writer_add_f32(w, "t.f32", 1.5f), 0);
	assert_int_equal(gguf_writer_add_f64(w, "t.f64", -0.25), 0);
	assert_int_equal(gguf_writer_add_bool(w, "t.bool", true), 0);
	assert_int_equal(gguf_writer_add_str(w, "t.str", "h\xc3\xa9llo"), 0);
	assert_int_equal(gguf_writer_add_strn(w, "t.strn", "a\0b", 3), 0);
	assert_int_equal(gguf_writer_add_str(w, "t.empty", ""), 0);

	const uint8_t a_u8[] = { 1, 2, 255 };
	const int8_t a_i8[] = { -1, 0, 127 };
	const uint16_t a_u16[] = { 7, 65535 };
	const int16_t a_i16[] = { -32768, 5 };
	const uint32_t a_u32[] = { 1, 2, 3, 4 };
	const int32_t a_i32[] = { -7, 8 };
	const uint64_t a_u64[] = { UINT64_MAX };
	const int64_t a_i64[] = { -1, INT64_MAX };
	const float a_f32[] = { 0.5f, -2.0f, 1e-9f };
	const double a_f64[] = { 3.25, -1e300 };
	const bool a_bool[] = { true, false, true };
	const char *const a_str[] = { "x", "", "\xe2\x96\x81yz" };
	assert_int_equal(gguf_writer_add_arr(w, "a.u8", GGUF_TYPE_UINT8, a_u8, 3), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.i8", GGUF_TYPE_INT8, a_i8, 3), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.u16", GGUF_TYPE_UINT16, a_u16, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.i16", GGUF_TYPE_INT16, a_i16, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.u32", GGUF_TYPE_UINT32, a_u32, 4), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.i32", GGUF_TYPE_INT32, a_i32, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.u64", GGUF_TYPE_UINT64, a_u64, 1), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.i64", GGUF_TYPE_INT64, a_i64, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.f32", GGUF_TYPE_FLOAT32, a_f32, 3), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.f64", GGUF_TYPE_FLOAT64, a_f64, 2), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.bool", GGUF_TYPE_BOOL, a_bool, 3), 0);
	assert_int_equal(gguf_writer_add_arr(w, "a.none", GGUF_TYPE_UINT32, NULL, 0), 0);
	assert_int_equal(gguf_writer_add_arr_str(w, "a.str", a_str, 3), 0);

	/* Tensors of four types; sizes 12, 20, 136 and 18 bytes. */
	const float t0[3] = { 1.0f, 2.0f, 3.0f };
	uint16_t t1[10];
	uint8_t t2[136], t3[18];
	for (int i = 0; i < 10; i++)
		t1[i] = quant_fp32_to_fp16((float)i);
	for (int i = 0; i < 136; i++)
		t2[i] = (uint8_t)(i * 7 + 1);
	for (int i = 0; i < 18; i++)
		t3[i] = (uint8_t)(0xa0 + i);
	const uint64_t ne0[] = { 3 }, ne1[] = { 5, 2 }, ne2[] = { 64, 2 }, ne3[] = { 32, 1, 1, 1 };
	assert_int_equal(gguf_writer_add_tensor(w, "f32", GGML_TYPE_F32, 1, ne0, t0, 12), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "f16", GGML_TYPE_F16, 2, ne1, t1, 20), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "q8", GGML_TYPE_Q8_0, 2, ne2, t2, 136), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "q4", GGML_TYPE_Q4_0, 4, ne3, t3, 18), 0);
	assert_int_equal(gguf_writer_kv_count(w), 27);
	assert_int_equal(gguf_writer_tensor_count(w), 4);

	assert_int_equal(gguf_writer_write_mem(w, &buf, &len), 0);
	assert_int_equal(len, gguf_writer_file_size(w));
	assert_int_equal(len % 32, 0);

	/* The raw header. */
	const uint8_t *p = buf;
	assert_memory_equal(p, "GGUF\x03\0\0\0", 8);
	assert_int_equal(le64(p + 8), 4);
	assert_int_equal(le64(p + 16), 27);

	struct gguf_file *f = open_mem_ok(buf, len);
	assert_int_equal(gguf_version(f), 3);
	assert_int_equal(gguf_alignment(f), 32);
	assert_int_equal(gguf_find_key(f, "general.alignment"), -1);
	assert_int_equal(gguf_kv_count(f), 27);
	assert_string_equal(gguf_kv_key(f, 0), "t.u8");
	assert_string_equal(gguf_kv_key(f, 26), "a.str");

	check_type(f, "t.u8", GGUF_TYPE_UINT8);
	check_type(f, "t.i8", GGUF_TYPE_INT8);
	check_type(f, "t.u16", GGUF_TYPE_UINT16);
	check_type(f, "t.i16", GGUF_TYPE_INT16);
	check_type(f, "t.u32", GGUF_TYPE_UINT32);
	check_type(f, "t.i32", GGUF_TYPE_INT32);
	check_type(f, "t.u64", GGUF_TYPE_UINT64);
	check_type(f, "t.i64", GGUF_TYPE_INT64);
	check_type(f, "t.f32", GGUF_TYPE_FLOAT32);
	check_type(f, "t.f64", GGUF_TYPE_FLOAT64);
	check_type(f, "t.bool", GGUF_TYPE_BOOL);
	check_type(f, "t.str", GGUF_TYPE_STRING);
	assert_int_equal(gguf_get_u64(f, "t.u8", &v64, NULL, 0), 0);
	assert_int_equal(v64, 200);
	assert_int_equal(gguf_get_i64(f, "t.i8", &i64, NULL, 0), 0);
	assert_int_equal(i64, -100);
	assert_int_equal(gguf_get_u64(f, "t.u16", &v64, NULL, 0), 0);
	assert_int_equal(v64, 65000);
	assert_int_equal(gguf_get_i64(f, "t.i16", &i64, NULL, 0), 0);
	assert_int_equal(i64, -30000);
	assert_int_equal(gguf_get_u64(f, "t.u32", &v64, NULL, 0), 0);
	assert_int_equal(v64, 4000000000u);
	assert_int_equal(gguf_get_i64(f, "t.i32", &i64, NULL, 0), 0);
	assert_int_equal(i64, -2000000000);
	assert_int_equal(gguf_get_u64(f, "t.u64", &v64, NULL, 0), 0);
	assert_true(v64 == 0xfedcba9876543210ull);
	assert_int_equal(gguf_get_i64(f, "t.i64", &i64, NULL, 0), 0);
	assert_true(i64 == INT64_MIN + 5);
	assert_int_equal(gguf_get_f32(f, "t.f32", &fv, NULL, 0), 0);
	assert_true(fv == 1.5f);
	assert_int_equal(gguf_get_f32(f, "t.f64", &fv, NULL, 0), 0);
	assert_true(fv == -0.25f);
	assert_int_equal(gguf_get_bool(f, "t.bool", &b, NULL, 0), 0);
	assert_true(b);
	check_str(f, "t.str", "h\xc3\xa9llo", 6);
	check_str(f, "t.strn", "a\0b", 3);
	check_str(f, "t.empty", "", 0);

	/* Arrays: element type, count and every element. */
	static const struct {
		const char *key;
		enum gguf_type elem;
		uint64_t n;
	} arrs[] = {
		{ "a.u8", GGUF_TYPE_UINT8, 3 },	   { "a.i8", GGUF_TYPE_INT8, 3 },
		{ "a.u16", GGUF_TYPE_UINT16, 2 },  { "a.i16", GGUF_TYPE_INT16, 2 },
		{ "a.u32", GGUF_TYPE_UINT32, 4 },  { "a.i32", GGUF_TYPE_INT32, 2 },
		{ "a.u64", GGUF_TYPE_UINT64, 1 },  { "a.i64", GGUF_TYPE_INT64, 2 },
		{ "a.f32", GGUF_TYPE_FLOAT32, 3 }, { "a.f64", GGUF_TYPE_FLOAT64, 2 },
		{ "a.bool", GGUF_TYPE_BOOL, 3 },   { "a.none", GGUF_TYPE_UINT32, 0 },
		{ "a.str", GGUF_TYPE_STRING, 3 },
	};
	for (size_t k = 0; k < sizeof(arrs) / sizeof(arrs[0]); k++) {
		uint64_t n;

		assert_int_equal(gguf_get_arr(f, arrs[k].key, arrs[k].elem, &n, NULL, 0), 0);
		assert_int_equal(n, arrs[k].n);
	}
	int64_t ki = gguf_find_key(f, "a.u8");
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 2), 255);
	ki = gguf_find_key(f, "a.i8");
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 0), -1);
	ki = gguf_find_key(f, "a.u16");
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 1), 65535);
	ki = gguf_find_key(f, "a.i16");
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 0), -32768);
	ki = gguf_find_key(f, "a.u32");
	assert_memory_equal(gguf_arr_data(f, (uint64_t)ki), a_u32, sizeof(a_u32));
	ki = gguf_find_key(f, "a.i32");
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 0), -7);
	ki = gguf_find_key(f, "a.u64");
	assert_memory_equal(gguf_arr_data(f, (uint64_t)ki), a_u64, sizeof(a_u64));
	ki = gguf_find_key(f, "a.i64");
	assert_true(gguf_arr_get_int(f, (uint64_t)ki, 1) == INT64_MAX);
	ki = gguf_find_key(f, "a.f32");
	assert_true(gguf_arr_get_float(f, (uint64_t)ki, 2) == (double)1e-9f);
	ki = gguf_find_key(f, "a.f64");
	assert_true(gguf_arr_get_float(f, (uint64_t)ki, 1) == -1e300);
	ki = gguf_find_key(f, "a.bool");
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 0), 1);
	assert_int_equal(gguf_arr_get_int(f, (uint64_t)ki, 1), 0);
	ki = gguf_find_key(f, "a.str");
	for (uint64_t j = 0; j < 3; j++) {
		const char *s;
		size_t sl;

		assert_int_equal(gguf_arr_str(f, (uint64_t)ki, j, &s, &sl), 0);
		assert_int_equal(sl, strlen(a_str[j]));
		assert_memory_equal(s, a_str[j], sl);
	}

	/* Tensors: order, shape, type, aligned offsets, data, zero padding. */
	static const struct {
		const char *name;
		enum ggml_type type;
		uint32_t n_dims;
		uint64_t ne0, ne1, size;
	} want[] = {
		{ "f32", GGML_TYPE_F32, 1, 3, 1, 12 },
		{ "f16", GGML_TYPE_F16, 2, 5, 2, 20 },
		{ "q8", GGML_TYPE_Q8_0, 2, 64, 2, 136 },
		{ "q4", GGML_TYPE_Q4_0, 4, 32, 1, 18 },
	};
	const void *datas[] = { t0, t1, t2, t3 };
	uint64_t expect_off = 0;
	assert_int_equal(gguf_tensor_count(f), 4);
	assert_int_equal(gguf_data_offset(f) % 32, 0);
	for (uint64_t i = 0; i < 4; i++) {
		const struct gguf_tensor *t = gguf_tensor(f, i);

		assert_string_equal(t->name, want[i].name);
		assert_int_equal(t->type, want[i].type);
		assert_int_equal(t->n_dims, want[i].n_dims);
		assert_int_equal(t->ne[0], want[i].ne0);
		assert_int_equal(t->ne[1], want[i].ne1);
		assert_int_equal(t->size, want[i].size);
		assert_int_equal(t->offset, expect_off);
		assert_memory_equal(t->data, datas[i], want[i].size);
		for (uint64_t k = want[i].size; k < (want[i].size + 31) / 32 * 32; k++)
			assert_int_equal(((const uint8_t *)t->data)[k], 0);
		expect_off += (want[i].size + 31) / 32 * 32;
	}
	assert_int_equal(gguf_data_offset(f) + expect_off, len);
	gguf_close(f);
	free(buf);
	gguf_writer_destroy(w);
}

static void test_writer_alignment(void **state)
{
	struct gguf_writer *w;
	struct gguf_file *f;
	void *buf;
	size_t len;
	uint32_t v;
	const uint8_t data[40] = { 1, 2, 3 };
	const uint64_t ne[] = { 10 };

	(void)state;
	tu_log_capture_start();
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_set_alignment(w, 64), 0);
	assert_int_equal(gguf_writer_add_str(w, "general.name", "x"), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "a", GGML_TYPE_F32, 1, ne, data, 40), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "b", GGML_TYPE_F32, 1, ne, data, 40), 0);
	/* A second call updates the value in place: the key stays second. */
	assert_int_equal(gguf_writer_set_alignment(w, 128), 0);
	assert_int_equal(gguf_writer_kv_count(w), 3);
	assert_int_equal(gguf_writer_write_mem(w, &buf, &len), 0);
	f = open_mem_ok(buf, len);
	assert_int_equal(gguf_alignment(f), 128);
	assert_string_equal(gguf_kv_key(f, 1), "general.alignment");
	check_type(f, "general.alignment", GGUF_TYPE_UINT32);
	assert_int_equal(gguf_get_u32(f, "general.alignment", &v, NULL, 0), 0);
	assert_int_equal(v, 128);
	assert_int_equal(gguf_data_offset(f) % 128, 0);
	assert_int_equal(gguf_tensor(f, 1)->offset, 128);
	assert_int_equal(len, gguf_data_offset(f) + 256);
	gguf_close(f);
	free(buf);

	/* Alignment 1: tensors packed back to back. */
	assert_int_equal(gguf_writer_set_alignment(w, 1), 0);
	assert_int_equal(gguf_writer_write_mem(w, &buf, &len), 0);
	f = open_mem_ok(buf, len);
	assert_int_equal(gguf_alignment(f), 1);
	assert_int_equal(gguf_tensor(f, 1)->offset, 40);
	assert_int_equal(len, gguf_data_offset(f) + 80);
	gguf_close(f);
	free(buf);

	/* Invalid alignments and keys. */
	assert_int_equal(gguf_writer_set_alignment(w, 0), -EINVAL);
	assert_int_equal(gguf_writer_set_alignment(w, 48), -EINVAL);
	assert_int_equal(gguf_writer_set_alignment(w, GGUF_MAX_ALIGNMENT * 2), -EINVAL);
	assert_true(tu_log_contains("not a power of two"));
	assert_int_equal(gguf_writer_add_u32(w, "general.alignment", 16), -EINVAL);
	assert_true(tu_log_contains("duplicate key 'general.alignment'"));
	assert_int_equal(gguf_writer_add_u64(w, "general.alignment", 16), -EINVAL);
	assert_int_equal(gguf_writer_add_str(w, "general.alignment", "16"), -EINVAL);
	assert_true(tu_log_contains("general.alignment must be UINT32"));
	gguf_writer_destroy(w);

	/* add_u32("general.alignment") is set_alignment(). */
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_add_u32(w, "general.alignment", 7), -EINVAL);
	assert_int_equal(gguf_writer_add_u32(w, "general.alignment", 16), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "a", GGML_TYPE_F32, 1, ne, data, 40), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "b", GGML_TYPE_F32, 1, ne, data, 40), 0);
	assert_int_equal(gguf_writer_write_mem(w, &buf, &len), 0);
	f = open_mem_ok(buf, len);
	assert_int_equal(gguf_alignment(f), 16);
	assert_int_equal(gguf_tensor(f, 1)->offset, 48);
	gguf_close(f);
	free(buf);
	gguf_writer_destroy(w);
	tu_log_capture_stop();
}

static void test_writer_errors(void **state)
{
	struct gguf_writer *w;
	char key[300], name[80];
	const uint8_t data[256] = { 0 };
	const uint64_t ne33[] = { 33 }, ne32[] = { 32 }, ne0[] = { 0 }, ne5[] = { 1, 1, 1, 1, 1 };

	(void)state;
	tu_log_capture_start();
	assert_int_equal(gguf_writer_create(&w), 0);

	assert_int_equal(gguf_writer_add_u32(w, "k", 1), 0);
	assert_int_equal(gguf_writer_add_u32(w, "k", 2), -EINVAL);
	assert_true(tu_log_contains("duplicate key 'k'"));
	assert_int_equal(gguf_writer_add_str(w, "k", "again"), -EINVAL);
	assert_int_equal(gguf_writer_add_u8(w, "", 1), -EINVAL);
	assert_true(tu_log_contains("empty metadata key"));
	assert_int_equal(gguf_writer_add_u8(w, NULL, 1), -EINVAL);
	assert_int_equal(gguf_writer_add_u8(w, "has space", 1), -EINVAL);
	assert_true(tu_log_contains("not printable ASCII"));
	memset(key, 'k', sizeof(key));
	key[GGUF_MAX_KEY + 1] = '\0';
	assert_int_equal(gguf_writer_add_u8(w, key, 1), -EINVAL);
	assert_true(tu_log_contains("is 257 bytes long"));
	key[GGUF_MAX_KEY] = '\0';
	assert_int_equal(gguf_writer_add_u8(w, key, 1), 0); /* 256 bytes: the reader's limit */
	assert_int_equal(gguf_writer_add_str(w, "s", NULL), -EINVAL);
	assert_int_equal(gguf_writer_add_arr(w, "a", GGUF_TYPE_STRING, data, 1), -EINVAL);
	assert_true(tu_log_contains("is not a number or bool"));
	assert_int_equal(gguf_writer_add_arr(w, "a", GGUF_TYPE_ARRAY, data, 1), -EINVAL);
	assert_int_equal(gguf_writer_add_arr(w, "a", GGUF_TYPE_COUNT, data, 1), -EINVAL);
	assert_int_equal(gguf_writer_add_arr(w, "a", GGUF_TYPE_UINT8, NULL, 3), -EINVAL);
	const char *strs[] = { "a", NULL };
	assert_int_equal(gguf_writer_add_arr_str(w, "a", strs, 2), -EINVAL);
	assert_int_equal(gguf_writer_kv_count(w), 2);

	/* Tensor names: 63 bytes is ggml's limit. */
	memset(name, 'n', sizeof(name));
	name[GGUF_WRITER_MAX_NAME] = '\0';
	assert_int_equal(gguf_writer_add_tensor(w, name, GGML_TYPE_F32, 1, ne32, data, 128), 0);
	name[GGUF_WRITER_MAX_NAME] = 'n';
	name[GGUF_WRITER_MAX_NAME + 1] = '\0';
	assert_int_equal(gguf_writer_add_tensor(w, name, GGML_TYPE_F32, 1, ne32, data, 128),
			 -EINVAL);
	assert_true(tu_log_contains("is 64 bytes (limit 63)"));
	assert_int_equal(gguf_writer_add_tensor(w, "", GGML_TYPE_F32, 1, ne32, data, 128), -EINVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "t", GGML_TYPE_F32, 1, ne32, data, 128), 0);
	assert_int_equal(gguf_writer_add_tensor(w, "t", GGML_TYPE_F32, 1, ne32, data, 128),
			 -EINVAL);
	assert_true(tu_log_contains("duplicate tensor 't'"));
	assert_int_equal(gguf_writer_add_tensor(w, "q", GGML_TYPE_Q8_0, 1, ne33, data, 34),
			 -EINVAL);
	assert_true(tu_log_contains("not a multiple of the type's block size"));
	assert_int_equal(gguf_writer_add_tensor(w, "q", GGML_TYPE_Q8_0, 1, ne32, data, 35),
			 -EINVAL);
	assert_true(tu_log_contains("35 bytes of data, but its Q8_0 shape needs 34"));
	assert_int_equal(gguf_writer_add_tensor(w, "q", GGML_TYPE_Q8_0, 1, ne32, NULL, 34),
			 -EINVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "q", GGML_TYPE_F32, 1, ne0, data, 0), -EINVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "q", GGML_TYPE_F32, 0, ne32, data, 128),
			 -EINVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "q", GGML_TYPE_F32, 5, ne5, data, 4), -EINVAL);
	assert_true(tu_log_contains("n_dims out of range"));
	assert_int_equal(gguf_writer_add_tensor(w, "q", (enum ggml_type)4, 1, ne32, data, 128),
			 -EINVAL);
	assert_true(tu_log_contains("unknown tensor type"));
	assert_int_equal(gguf_writer_add_tensor_fill(w, "q", GGML_TYPE_F32, 1, ne32, NULL, NULL),
			 -EINVAL);
	assert_int_equal(gguf_writer_add_tensor(w, "q", GGML_TYPE_Q8_0, 1, ne32, data, 34), 0);
	assert_int_equal(gguf_writer_tensor_count(w), 3);

	/* The pure size query. */
	uint64_t size, big[] = { 1ull << 40, 1ull << 40 };
	assert_int_equal(gguf_writer_tensor_size(GGML_TYPE_Q4_0, 1, ne32, &size), 0);
	assert_int_equal(size, 18);
	assert_int_equal(gguf_writer_tensor_size(GGML_TYPE_F32, 2, big, &size), -EOVERFLOW);
	assert_int_equal(gguf_writer_tensor_size(GGML_TYPE_Q4_0, 1, ne33, &size), -EINVAL);

	/* What was accepted still makes a valid file. */
	void *buf;
	size_t len;
	assert_int_equal(gguf_writer_write_mem(w, &buf, &len), 0);
	struct gguf_file *f = open_mem_ok(buf, len);
	assert_int_equal(gguf_tensor_count(f), 3);
	assert_int_equal(gguf_kv_count(f), 2);
	gguf_close(f);
	free(buf);
	gguf_writer_destroy(w);
	tu_log_capture_stop();
}

struct fill_ctx {
	int calls;
	int fail; /* return this when non-zero */
};

static int fill_pattern(void *ctx, const struct gguf_writer_tensor *t, void *dst)
{
	struct fill_ctx *c = ctx;

	c->calls++;
	if (c->fail)
		return c->fail;
	for (uint64_t i = 0; i < t->size; i++)
		((uint8_t *)dst)[i] = (uint8_t)(i * 13 + t->ne[0]);
	return 0;
}

static void test_writer_file_and_fill(void **state)
{
	char *dir = tu_mkdtemp();
	char *path = path_in(dir, "m.gguf"), *tmp = path_in(dir, "m.gguf.tmp");
	char *nodir = path_in(dir, "missing/m.gguf");
	struct fill_ctx ctx = { 0 };
	struct gguf_writer *w;
	uint8_t pattern[1000];
	const uint64_t ne[] = { 250 }, ne2[] = { 64, 3 };
	void *mem, *file;
	size_t mlen, flen;

	(void)state;
	for (int i = 0; i < 1000; i++)
		pattern[i] = (uint8_t)(i * 13 + 250);
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(
		gguf_writer_add_tensor_fill(w, "filled", GGML_TYPE_F32, 1, ne, fill_pattern, &ctx),
		0);
	assert_int_equal(gguf_writer_add_tensor(w, "plain", GGML_TYPE_F32, 1, ne, pattern, 1000),
			 0);
	assert_int_equal(
		gguf_writer_add_tensor_fill(w, "q", GGML_TYPE_Q8_0, 2, ne2, fill_pattern, &ctx), 0);

	assert_int_equal(gguf_writer_write_mem(w, &mem, &mlen), 0);
	assert_int_equal(ctx.calls, 2);
	assert_int_equal(gguf_writer_write_file(w, path), 0);
	assert_int_equal(ctx.calls, 4);
	assert_false(exists(tmp));
	file = tu_read_file(path, &flen);
	assert_non_null(file);
	assert_int_equal(flen, mlen);
	assert_memory_equal(file, mem, mlen);

	struct gguf_file *f = open_file_ok(path);
	const struct gguf_tensor *a = gguf_find_tensor(f, "filled");
	const struct gguf_tensor *b = gguf_find_tensor(f, "plain");
	assert_non_null(a);
	assert_non_null(b);
	assert_memory_equal(a->data, pattern, 1000);
	assert_memory_equal(b->data, pattern, 1000);
	assert_int_equal(gguf_find_tensor(f, "q")->size, 3 * 2 * 34);
	gguf_close(f);

	/* A failing fill aborts the write: the old file stays, no temporary is left. */
	tu_log_capture_start();
	ctx.fail = -EIO;
	assert_int_equal(gguf_writer_write_file(w, path), -EIO);
	assert_false(exists(tmp));
	free(file);
	file = tu_read_file(path, &flen);
	assert_int_equal(flen, mlen);
	assert_memory_equal(file, mem, mlen);
	void *dummy;
	size_t dlen;
	assert_int_equal(gguf_writer_write_mem(w, &dummy, &dlen), -EIO);
	assert_null(dummy);
	ctx.fail = 0;

	/* I/O errors come back as -errno, logged with the path. */
	assert_int_equal(gguf_writer_write_file(w, nodir), -ENOENT);
	assert_true(tu_log_contains("missing/m.gguf.tmp: open"));
	tu_log_capture_stop();

	free(file);
	free(mem);
	gguf_writer_destroy(w);
	free(nodir);
	free(tmp);
	free(path);
	tu_rmtree(dir);
}

/* An empty file: header only, padded to the alignment. */
static void test_writer_empty(void **state)
{
	struct gguf_writer *w;
	void *buf;
	size_t len;

	(void)state;
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_write_mem(w, &buf, &len), 0);
	assert_int_equal(len, 32);
	assert_memory_equal(buf, "GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 24);
	struct gguf_file *f = open_mem_ok(buf, len);
	assert_int_equal(gguf_kv_count(f), 0);
	assert_int_equal(gguf_tensor_count(f), 0);
	gguf_close(f);
	free(buf);
	gguf_writer_destroy(w);
	gguf_writer_destroy(NULL);
}

/* --- synth: model contents ------------------------------------------------ */

/* The bytes tensor name of p should have: its values, converted. */
static void *expected_bytes(const struct synth_params *p, const struct gguf_tensor *t)
{
	float *v = malloc(t->n_elements * sizeof(float));
	void *out = malloc(t->size);

	assert_non_null(v);
	assert_non_null(out);
	assert_int_equal(synth_tensor_values(p, t->name, v, t->n_elements), 0);
	switch (t->type) {
	case GGML_TYPE_F32:
		memcpy(out, v, t->size);
		break;
	case GGML_TYPE_F16:
		quant_row_to_fp16(v, out, t->n_elements);
		break;
	case GGML_TYPE_BF16:
		quant_row_to_bf16(v, out, t->n_elements);
		break;
	case GGML_TYPE_Q8_0:
		assert_int_equal(quant_row_q8_0(v, out, t->n_elements), 0);
		break;
	case GGML_TYPE_Q4_0:
		assert_int_equal(quant_row_q4_0(v, out, t->n_elements), 0);
		break;
	default:
		fail_msg("unexpected type %d", t->type);
	}
	free(v);
	return out;
}

static void check_u32(const struct gguf_file *f, const char *key, uint32_t want)
{
	uint32_t v;

	check_type(f, key, GGUF_TYPE_UINT32);
	assert_int_equal(gguf_get_u32(f, key, &v, NULL, 0), 0);
	if (v != want)
		fail_msg("%s = %u, want %u", key, v, want);
}

/* Every key in order, every value, every tensor and its bytes. */
static void check_model(const struct gguf_file *f, const struct synth_params *p)
{
	const uint32_t vocab = p->vocab ? p->vocab : SYNTH_VOCAB_BASE;
	const bool quant = p->type == GGML_TYPE_Q8_0 || p->type == GGML_TYPE_Q4_0;
	const char *keys[] = {
		"general.architecture",
		"general.name",
		"general.alignment",
		"general.file_type",
		"general.quantization_version",
		"llama.context_length",
		"llama.embedding_length",
		"llama.block_count",
		"llama.feed_forward_length",
		"llama.attention.head_count",
		"llama.attention.head_count_kv",
		"llama.rope.dimension_count",
		"llama.attention.layer_norm_rms_epsilon",
		"llama.rope.freq_base",
		"llama.vocab_size",
		"tokenizer.ggml.model",
		"tokenizer.ggml.tokens",
		"tokenizer.ggml.scores",
		"tokenizer.ggml.token_type",
		"tokenizer.ggml.bos_token_id",
		"tokenizer.ggml.eos_token_id",
		"tokenizer.ggml.unknown_token_id",
		"tokenizer.ggml.add_bos_token",
		"tokenizer.ggml.add_eos_token",
	};
	uint64_t ki = 0;
	float fv;
	bool bv;
	uint64_t n;

	assert_int_equal(gguf_version(f), 3);
	assert_int_equal(gguf_alignment(f), 32);
	assert_int_equal(gguf_kv_count(f), quant ? 24 : 23);
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		if (!quant && strcmp(keys[k], "general.quantization_version") == 0)
			continue;
		assert_string_equal(gguf_kv_key(f, ki++), keys[k]);
	}

	check_str(f, "general.architecture", "llama", 5);
	const char *name = p->name ? p->name : SYNTH_DEFAULT_NAME;
	check_str(f, "general.name", name, strlen(name));
	check_u32(f, "general.alignment", 32);
	check_u32(f, "general.file_type", (uint32_t)synth_file_type(p->type));
	if (quant)
		check_u32(f, "general.quantization_version", 2);
	check_u32(f, "llama.context_length", p->ctx);
	check_u32(f, "llama.embedding_length", p->dim);
	check_u32(f, "llama.block_count", p->n_layers);
	check_u32(f, "llama.feed_forward_length", p->ffn);
	check_u32(f, "llama.attention.head_count", p->n_heads);
	check_u32(f, "llama.attention.head_count_kv", p->n_kv_heads);
	check_u32(f, "llama.rope.dimension_count", p->dim / p->n_heads);
	check_type(f, "llama.attention.layer_norm_rms_epsilon", GGUF_TYPE_FLOAT32);
	assert_int_equal(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &fv, NULL, 0),
			 0);
	assert_true(fv == (p->rms_eps ? p->rms_eps : 1e-5f));
	check_type(f, "llama.rope.freq_base", GGUF_TYPE_FLOAT32);
	assert_int_equal(gguf_get_f32(f, "llama.rope.freq_base", &fv, NULL, 0), 0);
	assert_true(fv == (p->rope_base ? p->rope_base : 10000.0f));
	check_u32(f, "llama.vocab_size", vocab);
	check_str(f, "tokenizer.ggml.model", "llama", 5);
	check_u32(f, "tokenizer.ggml.bos_token_id", 1);
	check_u32(f, "tokenizer.ggml.eos_token_id", 2);
	check_u32(f, "tokenizer.ggml.unknown_token_id", 0);
	check_type(f, "tokenizer.ggml.add_bos_token", GGUF_TYPE_BOOL);
	assert_int_equal(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &bv, NULL, 0), 0);
	assert_true(bv);
	assert_int_equal(gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &bv, NULL, 0), 0);
	assert_false(bv);

	/* The vocabulary, token by token. */
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &n, NULL, 0),
			 0);
	assert_int_equal(n, vocab);
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, &n, NULL, 0),
			 0);
	assert_int_equal(n, vocab);
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &n, NULL, 0),
			 0);
	assert_int_equal(n, vocab);
	uint64_t kt = (uint64_t)gguf_find_key(f, "tokenizer.ggml.tokens");
	uint64_t ks = (uint64_t)gguf_find_key(f, "tokenizer.ggml.scores");
	uint64_t ky = (uint64_t)gguf_find_key(f, "tokenizer.ggml.token_type");
	for (uint32_t id = 0; id < vocab; id++) {
		char piece[32];
		float score;
		int32_t type;
		const char *s;
		size_t len;

		assert_int_equal(synth_vocab_token(vocab, id, piece, sizeof(piece), &score, &type),
				 0);
		assert_int_equal(gguf_arr_str(f, kt, id, &s, &len), 0);
		assert_int_equal(len, strlen(piece));
		assert_memory_equal(s, piece, len);
		assert_true(gguf_arr_get_float(f, ks, id) == (double)score);
		assert_int_equal(gguf_arr_get_int(f, ky, id), type);
	}

	/* Tensors: names in order, shapes, types, offsets, bytes. */
	const uint64_t dim = p->dim, kv_dim = p->dim / p->n_heads * p->n_kv_heads, ffn = p->ffn;
	const uint64_t n_tensors = 3 + 9 * (uint64_t)p->n_layers - (p->tied ? 1 : 0);
	uint64_t idx = 0, elements = 0;
	assert_int_equal(gguf_tensor_count(f), n_tensors);
	for (uint32_t l = 0; l <= p->n_layers; l++) {
		struct {
			char name[64];
			uint64_t ne0, ne1; /* ne1 0: a 1-D norm */
		} want[9];
		int nw = 0;

		if (l == 0) {
			snprintf(want[nw].name, 64, "token_embd.weight");
			want[nw].ne0 = dim, want[nw++].ne1 = vocab;
			snprintf(want[nw].name, 64, "output_norm.weight");
			want[nw].ne0 = dim, want[nw++].ne1 = 0;
			if (!p->tied) {
				snprintf(want[nw].name, 64, "output.weight");
				want[nw].ne0 = dim, want[nw++].ne1 = vocab;
			}
		} else {
			const struct {
				const char *n;
				uint64_t ne0, ne1;
			} layer[9] = {
				{ "attn_norm", dim, 0 },     { "attn_q", dim, dim },
				{ "attn_k", dim, kv_dim },   { "attn_v", dim, kv_dim },
				{ "attn_output", dim, dim }, { "ffn_norm", dim, 0 },
				{ "ffn_gate", dim, ffn },    { "ffn_up", dim, ffn },
				{ "ffn_down", ffn, dim },
			};
			for (int i = 0; i < 9; i++) {
				snprintf(want[nw].name, 64, "blk.%u.%s.weight", l - 1, layer[i].n);
				want[nw].ne0 = layer[i].ne0;
				want[nw++].ne1 = layer[i].ne1;
			}
		}
		for (int i = 0; i < nw; i++, idx++) {
			const struct gguf_tensor *t = gguf_tensor(f, idx);
			const bool norm = want[i].ne1 == 0;

			assert_non_null(t);
			assert_string_equal(t->name, want[i].name);
			assert_ptr_equal(gguf_find_tensor(f, want[i].name), t);
			assert_int_equal(t->n_dims, norm ? 1 : 2);
			assert_int_equal(t->ne[0], want[i].ne0);
			assert_int_equal(t->ne[1], norm ? 1 : want[i].ne1);
			assert_int_equal(t->type, norm ? GGML_TYPE_F32 : p->type);
			assert_int_equal(t->offset % 32, 0);
			assert_int_equal(
				((uintptr_t)t->data - (uintptr_t)gguf_tensor(f, 0)->data) % 32, 0);
			void *exp = expected_bytes(p, t);
			if (memcmp(exp, t->data, t->size) != 0)
				fail_msg("tensor %s: bytes differ from its values", t->name);
			free(exp);
			elements += t->n_elements;
		}
	}
	assert_int_equal(elements, synth_param_count(p));
	assert_int_equal(gguf_data_offset(f) % 32, 0);

	/* And the model loader takes it as the model it is. */
	struct model_desc *m;
	char err[512] = "";
	if (model_desc_load(f, 0, &m, err, sizeof(err)) != 0)
		fail_msg("model_desc_load: %s", err);
	assert_int_equal(m->arch, MODEL_ARCH_LLAMA);
	assert_int_equal(m->n_vocab, vocab);
	assert_int_equal(m->dim, p->dim);
	assert_int_equal(m->n_layers, p->n_layers);
	assert_int_equal(m->n_heads, p->n_heads);
	assert_int_equal(m->n_kv_heads, p->n_kv_heads);
	assert_int_equal(m->ffn, p->ffn);
	assert_int_equal(m->n_ctx, p->ctx);
	assert_int_equal(m->tied_output, p->tied);
	assert_int_equal(m->wtype, p->type);
	assert_int_equal(m->n_params, synth_param_count(p));
	assert_int_equal(m->vocab.kind, MODEL_TOK_SPM);
	assert_int_equal(m->vocab.bos, 1);
	assert_int_equal(m->vocab.eos, 2);
	assert_int_equal(m->vocab.unk, 0);
	assert_true(m->vocab.add_bos);
	assert_false(m->vocab.add_eos);
	model_desc_free(m);
}

static void small_params(struct synth_params *p, enum ggml_type type, bool tied)
{
	synth_params_init(p);
	p->dim = 64;
	p->n_layers = 2;
	p->n_heads = 4;
	p->n_kv_heads = 2;
	p->ffn = 96;
	p->ctx = 256;
	p->type = type;
	p->tied = tied;
	p->seed = 7;
}

static void test_synth_models(void **state)
{
	static const struct {
		enum ggml_type type;
		bool tied;
	} cases[] = {
		{ GGML_TYPE_F32, false }, { GGML_TYPE_F32, true },   { GGML_TYPE_F16, false },
		{ GGML_TYPE_F16, true },  { GGML_TYPE_BF16, false }, { GGML_TYPE_Q8_0, false },
		{ GGML_TYPE_Q8_0, true }, { GGML_TYPE_Q4_0, false }, { GGML_TYPE_Q4_0, true },
	};
	char *dir = tu_mkdtemp();

	(void)state;
	assert_non_null(dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct synth_params p;
		char file[64];
		uint64_t size = 0;

		small_params(&p, cases[i].type, cases[i].tied);
		p.name = "round-trip";
		p.vocab = 400;
		p.rope_base = 500000.0f;
		p.rms_eps = 1e-6f;
		snprintf(file, sizeof(file), "m%zu.gguf", i);
		char *path = path_in(dir, file);
		assert_int_equal(synth_write_file(&p, path, &size), 0);

		struct gguf_file *f = open_file_ok(path);
		assert_int_equal(gguf_file_size(f), size);
		check_model(f, &p);
		gguf_close(f);
		free(path);
	}
	tu_rmtree(dir);
}

/* The defaults (tiny, F16, vocab 0 = 354, default name/rope/eps) in memory. */
static void test_synth_defaults(void **state)
{
	struct synth_params p;
	void *buf;
	size_t len;

	(void)state;
	synth_params_init(&p);
	p.vocab = 0;
	assert_int_equal(synth_write_mem(&p, &buf, &len), 0);
	struct gguf_file *f = open_mem_ok(buf, len);
	check_model(f, &p);
	gguf_close(f);
	free(buf);
}

static void test_synth_deterministic(void **state)
{
	char *dir = tu_mkdtemp();
	char *path = path_in(dir, "a.gguf");
	struct synth_params p;
	void *a, *b, *c;
	size_t alen, blen, clen;

	(void)state;
	small_params(&p, GGML_TYPE_Q8_0, false);
	assert_int_equal(synth_write_mem(&p, &a, &alen), 0);
	assert_int_equal(synth_write_mem(&p, &b, &blen), 0);
	assert_int_equal(alen, blen);
	assert_memory_equal(a, b, alen);
	free(b);
	assert_int_equal(synth_write_file(&p, path, NULL), 0);
	b = tu_read_file(path, &blen);
	assert_non_null(b);
	assert_int_equal(alen, blen);
	assert_memory_equal(a, b, alen);

	/* Another seed: same layout, every weight tensor different. */
	p.seed = 8;
	assert_int_equal(synth_write_mem(&p, &c, &clen), 0);
	assert_int_equal(clen, alen);
	struct gguf_file *fa = open_mem_ok(a, alen), *fc = open_mem_ok(c, clen);
	assert_int_equal(gguf_data_offset(fa), gguf_data_offset(fc));
	assert_memory_equal(a, c, gguf_data_offset(fa));
	for (uint64_t i = 0; i < gguf_tensor_count(fa); i++) {
		const struct gguf_tensor *ta = gguf_tensor(fa, i), *tc = gguf_tensor(fc, i);

		assert_int_equal(ta->size, tc->size);
		if (memcmp(ta->data, tc->data, ta->size) == 0)
			fail_msg("%s is the same for seeds 7 and 8", ta->name);
	}
	/* Within one model no two tensors of the same shape are equal either. */
	const struct gguf_tensor *q = gguf_find_tensor(fa, "blk.0.attn_q.weight");
	const struct gguf_tensor *o = gguf_find_tensor(fa, "blk.0.attn_output.weight");
	const struct gguf_tensor *q1 = gguf_find_tensor(fa, "blk.1.attn_q.weight");
	assert_memory_not_equal(q->data, o->data, q->size);
	assert_memory_not_equal(q->data, q1->data, q->size);
	gguf_close(fa);
	gguf_close(fc);
	free(a);
	free(b);
	free(c);
	free(path);
	tu_rmtree(dir);
}

static void test_synth_values(void **state)
{
	struct synth_params p;
	float *v = malloc(64 * 400 * sizeof(float));
	double sum = 0;

	(void)state;
	assert_non_null(v);
	small_params(&p, GGML_TYPE_F16, true);
	p.vocab = 400;
	assert_int_equal(synth_tensor_values(&p, "token_embd.weight", v, 64 * 400), 0);
	for (int i = 0; i < 64 * 400; i++) {
		assert_true(v[i] >= -0.125f && v[i] <= 0.125f); /* 1/sqrt(64) */
		sum += v[i];
	}
	assert_true(fabs(sum / (64 * 400)) < 0.01);
	assert_int_equal(synth_tensor_values(&p, "blk.1.ffn_down.weight", v, 96 * 64), 0);
	for (int i = 0; i < 96 * 64; i++)
		assert_true(fabsf(v[i]) <= 1.0f / sqrtf(96.0f));
	assert_int_equal(synth_tensor_values(&p, "blk.0.ffn_norm.weight", v, 64), 0);
	for (int i = 0; i < 64; i++)
		assert_true(v[i] >= 0.9f && v[i] <= 1.1f);

	tu_log_capture_start();
	assert_int_equal(synth_tensor_values(&p, "output.weight", v, 64 * 400), -ENOENT); /* tied */
	assert_int_equal(synth_tensor_values(&p, "blk.2.attn_q.weight", v, 64 * 64), -ENOENT);
	assert_int_equal(synth_tensor_values(&p, "blk.0.attn_q.weight", v, 64), -EINVAL);
	tu_log_capture_stop();
	free(v);
}

static void test_synth_param_count(void **state)
{
	struct synth_params p;

	(void)state;
	synth_params_init(&p);
	p.dim = 768;
	p.n_layers = 12;
	p.n_heads = 12;
	p.n_kv_heads = 12;
	p.ffn = 2048;
	p.vocab = 32000;
	assert_int_equal(synth_validate(&p), 0);
	assert_int_equal(synth_param_count(&p), 134105856);
	p.tied = true;
	assert_int_equal(synth_param_count(&p), 109529856); /* llama2.c's stories110M */
}

static void test_synth_invalid(void **state)
{
	static const struct {
		const char *field;
		uint64_t value;
		const char *msg;
	} cases[] = {
		{ "dim", 0, "dim 0 is out of range" },
		{ "dim", SYNTH_MAX_DIM + 1, "dim 65537 is out of range" },
		{ "layers", 0, "layers 0 is out of range" },
		{ "heads", 0, "heads 0 is out of range" },
		{ "kv", 0, "kv-heads 0 is out of range" },
		{ "ffn", 0, "ffn 0 is out of range" },
		{ "ctx", 0, "ctx 0 is out of range" },
		{ "vocab", 353, "vocab 353 is smaller than the 354 byte-level tokens" },
		{ "vocab", SYNTH_MAX_VOCAB + 1, "vocab 1048577 is out of range" },
		{ "heads", 3, "dim 64 is not a multiple of heads 3" },
		{ "heads", 64, "is odd" },
		{ "kv", 3, "heads 4 is not a multiple of kv-heads 3" },
		{ "kv", 8, "heads 4 is not a multiple of kv-heads 8" },
		{ "ffn", 100, "type Q8_0 needs dim and ffn multiples of 32" },
		{ "type", GGML_TYPE_Q4_K, "weight type Q4_K (12) is not supported" },
		{ "type", 4, "weight type ? (4) is not supported" },
		{ "rope", 0, "rope base -1 must be positive" },
		{ "eps", 0, "rms epsilon 2 must be in (0, 1)" },
		{ "name", 0, "name must be 1..255 bytes" },
		{ "big", 0, "parameters is more than the limit" },
		{ "hd", 0, "head size dim/heads = 4096/2 = 2048 is above 1024" },
		{ "layers", SYNTH_MAX_LAYERS + 1, "layers 513 is out of range" },
	};
	char longname[300];

	(void)state;
	memset(longname, 'x', sizeof(longname));
	longname[299] = '\0';
	tu_log_capture_start();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct synth_params p;
		const char *fld = cases[i].field;
		uint32_t v = (uint32_t)cases[i].value;
		void *buf = (void *)1;
		size_t len = 1;

		small_params(&p, GGML_TYPE_Q8_0, false);
		if (!strcmp(fld, "dim"))
			p.dim = v;
		else if (!strcmp(fld, "layers"))
			p.n_layers = v;
		else if (!strcmp(fld, "heads"))
			p.n_heads = v;
		else if (!strcmp(fld, "kv"))
			p.n_kv_heads = v;
		else if (!strcmp(fld, "ffn"))
			p.ffn = v;
		else if (!strcmp(fld, "ctx"))
			p.ctx = v;
		else if (!strcmp(fld, "vocab"))
			p.vocab = v;
		else if (!strcmp(fld, "type"))
			p.type = (enum ggml_type)v;
		else if (!strcmp(fld, "rope"))
			p.rope_base = -1.0f;
		else if (!strcmp(fld, "eps"))
			p.rms_eps = 2.0f;
		else if (!strcmp(fld, "name"))
			p.name = longname;
		else if (!strcmp(fld, "big"))
			p.dim = 65536, p.n_heads = 256, p.n_kv_heads = 256, p.ffn = 1u << 18,
			p.n_layers = 512;
		else if (!strcmp(fld, "hd"))
			p.dim = 4096, p.n_heads = 2, p.n_kv_heads = 2;

		assert_int_equal(synth_validate(&p), -EINVAL);
		if (!tu_log_contains(cases[i].msg))
			fail_msg("case %zu (%s): log lacks '%s': %s", i, fld, cases[i].msg,
				 tu_log_text());
		assert_int_equal(synth_write_mem(&p, &buf, &len), -EINVAL);
		assert_null(buf);
		assert_int_equal(synth_write_file(&p, "/nonexistent/never.gguf", NULL), -EINVAL);
	}
	tu_log_capture_stop();

	/* A NaN rope base, an empty name. */
	struct synth_params p;
	small_params(&p, GGML_TYPE_F32, false);
	p.rope_base = NAN;
	tu_log_capture_start();
	assert_int_equal(synth_validate(&p), -EINVAL);
	p.rope_base = 0;
	p.name = "";
	assert_int_equal(synth_validate(&p), -EINVAL);
	/* Odd sizes are fine for float types. */
	p.name = NULL;
	p.dim = 36;
	p.n_heads = 6;
	p.n_kv_heads = 1;
	p.ffn = 50;
	assert_int_equal(synth_validate(&p), 0);
	tu_log_capture_stop();
	void *buf;
	size_t len;
	assert_int_equal(synth_write_mem(&p, &buf, &len), 0);
	struct gguf_file *f = open_mem_ok(buf, len);
	check_model(f, &p);
	gguf_close(f);
	free(buf);

	/* I/O errors are not parameter errors. */
	small_params(&p, GGML_TYPE_F32, false);
	tu_log_capture_start();
	assert_int_equal(synth_write_file(&p, "/nonexistent/dir/m.gguf", NULL), -ENOENT);
	tu_log_capture_stop();
}

static void test_synth_vocab_token(void **state)
{
	char piece[32];
	float score;
	int32_t type;

	(void)state;
	assert_int_equal(synth_vocab_token(354, 0, piece, sizeof(piece), &score, &type), 0);
	assert_string_equal(piece, "<unk>");
	assert_int_equal(type, 2);
	assert_int_equal(synth_vocab_token(354, 2, piece, sizeof(piece), &score, &type), 0);
	assert_string_equal(piece, "</s>");
	assert_int_equal(type, 3);
	assert_int_equal(synth_vocab_token(354, 13, piece, sizeof(piece), &score, &type), 0);
	assert_string_equal(piece, "<0x0A>");
	assert_int_equal(type, 6);
	assert_int_equal(synth_vocab_token(354, 259, piece, sizeof(piece), &score, &type), 0);
	assert_string_equal(piece, "\xe2\x96\x81");
	assert_int_equal(type, 1);
	assert_true(score == 0.0f);
	assert_int_equal(synth_vocab_token(354, 260, piece, sizeof(piece), &score, &type), 0);
	assert_string_equal(piece, "!");
	assert_true(score == -1.0f);
	assert_int_equal(synth_vocab_token(354, 353, piece, sizeof(piece), &score, &type), 0);
	assert_string_equal(piece, "~");
	assert_true(score == -94.0f);
	assert_int_equal(synth_vocab_token(32000, 31999, piece, sizeof(piece), &score, &type), 0);
	assert_string_equal(piece, "<extra_31999>");
	assert_int_equal(type, 5);
	assert_true(score < -1e8f);
	assert_int_equal(synth_vocab_token(354, 354, piece, sizeof(piece), &score, &type), -EINVAL);
	assert_int_equal(synth_vocab_token(353, 0, piece, sizeof(piece), &score, &type), -EINVAL);
	assert_int_equal(synth_vocab_token(354, 0, piece, 8, &score, &type), -EINVAL);
}

/* --- synth against ../shared's tiny-bytes models --------------------------- */

/* Our vocabulary equals the shared file's, token by token. */
static void test_synth_vocab_matches_shared(void **state)
{
	const char *path = TU_SHARED_OR_SKIP("models/tiny-bytes-f32.gguf");
	struct gguf_file *f = open_file_ok(path);
	uint64_t n;

	(void)state;
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &n, NULL, 0),
			 0);
	assert_int_equal(n, SYNTH_VOCAB_BASE);
	uint64_t kt = (uint64_t)gguf_find_key(f, "tokenizer.ggml.tokens");
	uint64_t ks = (uint64_t)gguf_find_key(f, "tokenizer.ggml.scores");
	uint64_t ky = (uint64_t)gguf_find_key(f, "tokenizer.ggml.token_type");
	for (uint32_t id = 0; id < SYNTH_VOCAB_BASE; id++) {
		char piece[32];
		float score;
		int32_t type;
		const char *s;
		size_t len;

		assert_int_equal(synth_vocab_token(SYNTH_VOCAB_BASE, id, piece, sizeof(piece),
						   &score, &type),
				 0);
		assert_int_equal(gguf_arr_str(f, kt, id, &s, &len), 0);
		if (len != strlen(piece) || memcmp(s, piece, len) != 0)
			fail_msg("token %u: '%.*s' in the shared file, '%s' here", id, (int)len, s,
				 piece);
		/* == treats the file's -0.0 for id 259 as 0 */
		assert_true(gguf_arr_get_float(f, ks, id) == (double)score);
		assert_int_equal(gguf_arr_get_int(f, ky, id), type);
	}
	gguf_close(f);
}

/*
 * With the shared model's shape and name, everything before the data section
 * (header, every key/value, every tensor info) is byte-identical to the
 * shared file, except the 4 bytes of token 259's score (-0.0 there, 0 here).
 */
static void check_header_equal(const char *rel, const char *name, enum ggml_type type)
{
	char path[4096];
	struct synth_params p;
	void *buf, *theirs;
	size_t len, tlen;

	snprintf(path, sizeof(path), "%s", TU_SHARED_OR_SKIP(rel));
	synth_params_init(&p);
	p.dim = 64;
	p.n_layers = 2;
	p.n_heads = 4;
	p.n_kv_heads = 2;
	p.ffn = 160;
	p.ctx = 128;
	p.type = type;
	p.name = name;
	assert_int_equal(synth_write_mem(&p, &buf, &len), 0);
	theirs = tu_read_file(path, &tlen);
	assert_non_null(theirs);
	assert_int_equal(len, tlen);

	struct gguf_file *ours = open_mem_ok(buf, len), *f = open_mem_ok(theirs, tlen);
	uint64_t data_off = gguf_data_offset(f);
	assert_int_equal(gguf_data_offset(ours), data_off);
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *a = gguf_tensor(ours, i), *b = gguf_tensor(f, i);
		assert_string_equal(a->name, b->name);
		assert_int_equal(a->offset, b->offset);
	}
	/* The one expected difference: scores[259]. */
	int64_t ks = gguf_find_key(f, "tokenizer.ggml.scores");
	const uint8_t *s259 = (const uint8_t *)gguf_arr_data(f, (uint64_t)ks) + 259 * 4;
	size_t at = (size_t)(s259 - (const uint8_t *)theirs);
	assert_memory_equal(s259, "\0\0\0\x80", 4);
	assert_memory_equal((uint8_t *)buf + at, "\0\0\0\0", 4);
	assert_memory_equal(buf, theirs, at);
	assert_memory_equal((uint8_t *)buf + at + 4, (uint8_t *)theirs + at + 4, data_off - at - 4);
	gguf_close(ours);
	gguf_close(f);
	free(theirs);
	free(buf);
}

static void test_synth_header_matches_shared(void **state)
{
	(void)state;
	check_header_equal("models/tiny-bytes-f32.gguf", "tiny-bytes-f32", GGML_TYPE_F32);
	check_header_equal("models/tiny-bytes-f16.gguf", "tiny-bytes-f16", GGML_TYPE_F16);
	check_header_equal("models/tiny-bytes-q8_0.gguf", "tiny-bytes-q8_0", GGML_TYPE_Q8_0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writer_all_types),
		cmocka_unit_test(test_writer_alignment),
		cmocka_unit_test(test_writer_errors),
		cmocka_unit_test(test_writer_file_and_fill),
		cmocka_unit_test(test_writer_empty),
		cmocka_unit_test(test_synth_models),
		cmocka_unit_test(test_synth_defaults),
		cmocka_unit_test(test_synth_deterministic),
		cmocka_unit_test(test_synth_values),
		cmocka_unit_test(test_synth_param_count),
		cmocka_unit_test(test_synth_invalid),
		cmocka_unit_test(test_synth_vocab_token),
		cmocka_unit_test(test_synth_vocab_matches_shared),
		cmocka_unit_test(test_synth_header_matches_shared),
	};

	return cmocka_run_group_tests_name("synth", tests, NULL, NULL);
}
