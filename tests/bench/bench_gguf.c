// SPDX-License-Identifier: MIT
/*
 * Loader benchmark: how long opening and fully validating a model takes
 * (gguf_open + model_desc_load), for the bundled tiny model, a ~110M-parameter
 * synthetic model and, when present, the 32000-token vocabulary file; plus
 * how fast duet-mkmodel's generator writes the 110M model and how fast the
 * mapped tensor data can be read once validated.  Prints its figures.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runtime/core/err.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"
#include "runtime/model/synth.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Open + validate + schema, n times; prints mean, p50, p99 in ms. */
static int bench_open(const char *label, const char *path, unsigned flags, int n)
{
	double *t = calloc((size_t)n, sizeof(*t)), sum = 0;
	char err[512];

	if (!t)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		struct gguf_file *f;
		struct model_desc *m;
		double t0 = now_s();
		int ret = gguf_open(path, &f, err, sizeof(err));
		if (ret == 0) {
			ret = model_desc_load(f, flags, &m, err, sizeof(err));
			if (ret == 0)
				model_desc_free(m);
			gguf_close(f);
		}
		if (ret) {
			fprintf(stderr, "bench: %s: %s\n", path, err);
			free(t);
			return ret;
		}
		t[i] = (now_s() - t0) * 1e3;
		sum += t[i];
	}
	qsort(t, (size_t)n, sizeof(*t), cmp_double);
	printf("open+validate %-28s %4d runs: mean %8.3f ms  p50 %8.3f ms  p99 %8.3f ms\n", label,
	       n, sum / n, t[n / 2], t[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1]);
	free(t);
	return 0;
}

/* Touch every tensor byte of a validated file: the page-cache read rate. */
static int bench_read(const char *path)
{
	struct gguf_file *f;
	char err[512];
	uint64_t bytes = 0, acc = 0;
	double t0;

	if (gguf_open(path, &f, err, sizeof(err)))
		return -EIO;
	for (int pass = 0; pass < 2; pass++) { /* the first pass faults pages in */
		t0 = now_s();
		bytes = 0;
		acc = 0;
		for (uint64_t i = 0; i < gguf_tensor_count(f); i++) {
			const struct gguf_tensor *t = gguf_tensor(f, i);
			const uint64_t *p = t->data; /* tensors are 32-byte aligned */
			for (uint64_t j = 0; j < t->size / 8; j++)
				acc += p[j];
			bytes += t->size;
		}
		double dt = now_s() - t0;
		printf("read mapped tensors (pass %d)        %.1f MiB in %.3f s: %.2f GB/s%s "
		       "[sum %016llx]\n",
		       pass + 1, (double)bytes / (1 << 20), dt, (double)bytes / dt / 1e9,
		       pass == 0 ? " (page faults)" : "", (unsigned long long)acc);
	}
	gguf_close(f);
	return 0;
}

int main(int argc, char **argv)
{
	const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
	const char *shared = getenv("DUET_SHARED") ? getenv("DUET_SHARED") : "../shared";
	char tiny[512], big[512], vocab[512];
	struct synth_params p;
	struct stat st;
	uint64_t size;
	double t0;

	(void)argc;
	(void)argv;
	snprintf(tiny, sizeof(tiny), "%s/models/duet-tiny.gguf", build);
	snprintf(big, sizeof(big), "%s/bench/synth-110m-f16.gguf", build);
	snprintf(vocab, sizeof(vocab), "%s/tokenizer-vectors/ggml-vocab-llama-spm.gguf", shared);

	char dir[512];
	snprintf(dir, sizeof(dir), "%s/bench", build);
	mkdir(dir, 0755);
	synth_params_init(&p);
	p.dim = 768;
	p.n_layers = 12;
	p.n_heads = 12;
	p.n_kv_heads = 12;
	p.ffn = 2048;
	p.vocab = 32000;
	p.ctx = 1024;
	p.type = GGML_TYPE_F16;
	p.seed = 42;
	p.tied = true;
	p.name = "synth-110m";
	t0 = now_s();
	if (synth_write_file(&p, big, &size)) {
		fprintf(stderr, "bench: cannot write %s\n", big);
		return 1;
	}
	double dt = now_s() - t0;
	printf("duet-mkmodel 110M f16 (%.1fM params)   %.1f MiB in %.2f s: %.1f MB/s\n",
	       (double)synth_param_count(&p) / 1e6, (double)size / (1 << 20), dt,
	       (double)size / dt / 1e6);

	if (bench_open("duet-tiny.gguf", tiny, 0, 200) ||
	    bench_open("synth-110m-f16.gguf", big, 0, 50))
		return 1;
	if (stat(vocab, &st) == 0) {
		if (bench_open("ggml-vocab-llama-spm (vocab)", vocab, MODEL_LOAD_VOCAB_ONLY, 50))
			return 1;
	} else {
		printf("open+validate ggml-vocab-llama-spm: skipped (%s not found)\n", vocab);
	}
	bench_read(big);
	unlink(big);
	return 0;
}
