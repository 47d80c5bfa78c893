// SPDX-License-Identifier: MIT
/* libFuzzer target: the GGUF loader and the model schema on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/model/gguf.h"
#include "runtime/model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gguf_file *f;
	struct model_desc *m;
	char err[512];

	if (gguf_open_mem(data, size, &f, err, sizeof(err)) != 0)
		return 0;
	/* Exercise the accessors over everything the file claims to hold. */
	for (uint64_t i = 0; i < gguf_kv_count(f); i++) {
		enum gguf_type et;
		uint64_t n;
		const char *s;
		size_t len;

		if (gguf_kv_array(f, i, &et, &n) == 0) {
			for (uint64_t j = 0; j < n && j < 64; j++) {
				if (et == GGUF_TYPE_STRING)
					gguf_arr_str(f, i, j, &s, &len);
				else
					(void)gguf_arr_get_float(f, i, j);
			}
		}
	}
	volatile uint8_t sink = 0;
	for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
		const struct gguf_tensor *t = gguf_tensor(f, i);
		const uint8_t *p = t->data;
		sink ^= p[0] ^ p[t->size - 1];
	}
	(void)sink;
	if (model_desc_load(f, 0, &m, err, sizeof(err)) == 0)
		model_desc_free(m);
	if (model_desc_load(f, MODEL_LOAD_VOCAB_ONLY, &m, err, sizeof(err)) == 0)
		model_desc_free(m);
	gguf_close(f);
	return 0;
}
