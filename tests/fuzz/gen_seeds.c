// SPDX-License-Identifier: MIT
/*
 * Writes the GGUF seed corpus (tests/fuzz/corpus/gguf): valid images in each
 * variant the test generator knows, and a few broken ones near the edges the
 * loader checks.  Run through `make seeds`; the output is committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/ggufgen.h"

static int save(const char *dir, const char *name, const struct gg_file *g, size_t len)
{
	char path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/gguf/%s", dir, name);
	fp = fopen(path, "wb");
	if (!fp || fwrite(g->data, 1, len, fp) != len) {
		perror(path);
		if (fp)
			fclose(fp);
		return 1;
	}
	fclose(fp);
	printf("seeds: %s (%zu bytes)\n", path, len);
	return 0;
}

int main(int argc, char **argv)
{
	const struct {
		const char *name;
		struct gg_opts opts;
	} variants[] = {
		{ "llama-q8_0.seed", { 0 } },
		{ "llama-tied.seed", { .tied = true } },
		{ "qwen2.seed", { .qwen2 = true } },
		{ "llama-align64.seed", { .alignment = 64 } },
	};
	const char *dir = argc > 1 ? argv[1] : "tests/fuzz/corpus";
	int ret = 0;

	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		struct gg_file g;

		if (gg_make_model(&g, &variants[i].opts))
			return 1;
		ret |= save(dir, variants[i].name, &g, g.len);
		if (i == 0) {
			/* The metadata alone: a vocab-only image. */
			gg_put_u64(&g, g.n_tensors_off, 0);
			ret |= save(dir, "vocab-only.seed", &g, g.t[0].namelen_off);
			gg_put_u64(&g, g.n_tensors_off, g.n_t);
			ret |= save(dir, "truncated-in-data.seed", &g, g.len - 100);
			ret |= save(dir, "truncated-in-infos.seed", &g, g.t[3].ndims_off + 2);
			gg_put_u64(&g, gg_tensor(&g, "blk.0.ffn_up.weight")->offset_off,
				   gg_tensor(&g, "blk.0.ffn_gate.weight")->offset);
			ret |= save(dir, "overlap.seed", &g, g.len);
		}
		gg_free(&g);
	}
	return ret;
}
