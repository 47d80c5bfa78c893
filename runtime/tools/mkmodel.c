// SPDX-License-Identifier: MIT
/*
 * duet-mkmodel: write a synthetic Llama GGUF model (runtime/model/synth.h).
 *
 * Exit status: 0 written, 1 runtime error (I/O, memory), 2 usage error
 * (unknown option, bad value, inconsistent shape).
 */
#include "runtime/model/synth.h"
#include "runtime/core/err.h"
#include "runtime/core/log.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROG "duet-mkmodel"
#define EXIT_USAGE 2

struct preset {
	const char *name;
	uint32_t dim, n_layers, n_heads, n_kv_heads, ffn, ctx, vocab;
	bool tied;
};

/* "tiny" is the bundled model's shape (the Makefile's TINY_ARGS). */
static const struct preset presets[] = {
	{ "tiny", 128, 4, 4, 2, 352, 1024, SYNTH_VOCAB_BASE, false },
	/* llama2.c's stories110M shape: tied output, 109.5M parameters */
	{ "110m", 768, 12, 12, 12, 2048, 1024, 32000, true },
};

static const struct {
	const char *name;
	enum ggml_type type;
} types[] = {
	{ "f32", GGML_TYPE_F32 },   { "f16", GGML_TYPE_F16 },	{ "bf16", GGML_TYPE_BF16 },
	{ "q8_0", GGML_TYPE_Q8_0 }, { "q4_0", GGML_TYPE_Q4_0 },
};

enum {
	OPT_DIM = 256,
	OPT_LAYERS,
	OPT_HEADS,
	OPT_KV_HEADS,
	OPT_FFN,
	OPT_CTX,
	OPT_VOCAB,
	OPT_TYPE,
	OPT_SEED,
	OPT_TIED,
	OPT_UNTIED,
	OPT_NAME,
	OPT_ROPE_BASE,
	OPT_RMS_EPS,
	OPT_PRESET,
};

static const struct option long_opts[] = {
	{ "dim", required_argument, NULL, OPT_DIM },
	{ "layers", required_argument, NULL, OPT_LAYERS },
	{ "heads", required_argument, NULL, OPT_HEADS },
	{ "kv-heads", required_argument, NULL, OPT_KV_HEADS },
	{ "ffn", required_argument, NULL, OPT_FFN },
	{ "ctx", required_argument, NULL, OPT_CTX },
	{ "vocab", required_argument, NULL, OPT_VOCAB },
	{ "type", required_argument, NULL, OPT_TYPE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "tied", no_argument, NULL, OPT_TIED },
	{ "untied", no_argument, NULL, OPT_UNTIED },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "rope-base", required_argument, NULL, OPT_ROPE_BASE },
	{ "rms-eps", required_argument, NULL, OPT_RMS_EPS },
	{ "preset", required_argument, NULL, OPT_PRESET },
	{ "output", required_argument, NULL, 'o' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void usage(FILE *fp)
{
	fprintf(fp,
		"Usage: " PROG " [OPTIONS] -o FILE\n"
		"Write a synthetic Llama-architecture GGUF model with random weights and a\n"
		"byte-level SentencePiece vocabulary.  The same options give the same bytes.\n"
		"\n"
		"Shape (defaults: the 'tiny' preset):\n"
		"  --preset NAME     tiny: dim 128, 4 layers, 4 heads, 2 kv heads, ffn 352,\n"
		"                          ctx 1024, vocab 354 (the default)\n"
		"                    110m: dim 768, 12 layers, 12 heads, 12 kv heads, ffn 2048,\n"
		"                          ctx 1024, vocab 32000, tied (109.5M parameters)\n"
		"                    other options override the preset, in any order\n"
		"  --dim N           embedding width; a multiple of --heads with an even quotient\n"
		"                    (the head size); a multiple of 32 for q8_0 / q4_0 [128]\n"
		"  --layers N        transformer blocks [4]\n"
		"  --heads N         attention heads [4]\n"
		"  --kv-heads N      key/value heads; divides --heads [2]\n"
		"  --ffn N           feed-forward hidden width; a multiple of 32 for q8_0 / q4_0 [352]\n"
		"  --ctx N           context length written to llama.context_length [1024]\n"
		"  --vocab N         vocabulary size, >= %d; ids past %d are unused filler [%d]\n"
		"  --tied            no output.weight: the classifier shares token_embd.weight\n"
		"                    [untied; tied with --preset 110m]\n"
		"  --untied          write output.weight (undoes --tied or the preset's tying)\n"
		"\n"
		"Weights and metadata:\n"
		"  --type T          matrix type: f32, f16, bf16, q8_0, q4_0 (norms stay f32) [f16]\n"
		"  --seed N          PRNG seed, 0..2^64-1 [1]\n"
		"  --name S          general.name [duet-PRESET with --preset, else %s]\n"
		"  --rope-base F     llama.rope.freq_base [%g]\n"
		"  --rms-eps F       llama.attention.layer_norm_rms_epsilon [%g]\n"
		"\n"
		"Output:\n"
		"  -o, --output FILE the model file (required); written to FILE.tmp, then renamed\n"
		"  -q, --quiet       no summary line\n"
		"  -h, --help        this text\n"
		"\n"
		"Exit status: 0 written, 1 runtime error (I/O, memory), 2 usage error.\n",
		SYNTH_VOCAB_BASE, SYNTH_VOCAB_BASE - 1, SYNTH_VOCAB_BASE, SYNTH_DEFAULT_NAME,
		(double)SYNTH_DEFAULT_ROPE_BASE, (double)SYNTH_DEFAULT_RMS_EPS);
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" PROG " --help'.\n");
	return EXIT_USAGE;
}

/* A decimal integer in [0, max], the whole string. */
static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9')
		goto bad;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		goto bad;
	*out = v;
	return 0;
bad:
	usage_error("--%s: '%s' is not an integer in [0, %llu]", opt, s, (unsigned long long)max);
	return -EINVAL;
}

static int parse_u32(const char *opt, const char *s, uint32_t *out)
{
	uint64_t v;
	int ret = parse_u64(opt, s, UINT32_MAX, &v);

	if (!ret)
		*out = (uint32_t)v;
	return ret;
}

static int parse_pos_float(const char *opt, const char *s, float *out)
{
	char *end;
	float v;

	errno = 0;
	v = strtof(s, &end);
	if (errno || end == s || *end || !isfinite(v) || !(v > 0.0f)) {
		usage_error("--%s: '%s' is not a positive number", opt, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Options given explicitly override the preset whatever their order. */
struct opts {
	struct synth_params p;
	const struct preset *preset;
	const char *type_name;
	const char *out;
	bool quiet;
	bool help;
	bool set_dim, set_layers, set_heads, set_kv, set_ffn, set_ctx, set_vocab, set_tied;
	char default_name[64];
};

static int parse_args(int argc, char **argv, struct opts *o)
{
	struct synth_params *p = &o->p;
	const char *opt;
	int c;

	synth_params_init(p);
	o->type_name = "f16";
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:qh", long_opts, NULL)) != -1) {
		opt = "?";
		for (const struct option *lo = long_opts; lo->name; lo++) {
			if (lo->val == c)
				opt = lo->name;
		}
		switch (c) {
		case OPT_DIM:
			o->set_dim = true;
			if (parse_u32(opt, optarg, &p->dim))
				return EXIT_USAGE;
			break;
		case OPT_LAYERS:
			o->set_layers = true;
			if (parse_u32(opt, optarg, &p->n_layers))
				return EXIT_USAGE;
			break;
		case OPT_HEADS:
			o->set_heads = true;
			if (parse_u32(opt, optarg, &p->n_heads))
				return EXIT_USAGE;
			break;
		case OPT_KV_HEADS:
			o->set_kv = true;
			if (parse_u32(opt, optarg, &p->n_kv_heads))
				return EXIT_USAGE;
			break;
		case OPT_FFN:
			o->set_ffn = true;
			if (parse_u32(opt, optarg, &p->ffn))
				return EXIT_USAGE;
			break;
		case OPT_CTX:
			o->set_ctx = true;
			if (parse_u32(opt, optarg, &p->ctx))
				return EXIT_USAGE;
			break;
		case OPT_VOCAB:
			o->set_vocab = true;
			if (parse_u32(opt, optarg, &p->vocab))
				return EXIT_USAGE;
			break;
		case OPT_TYPE: {
			bool found = false;

			for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
				if (strcmp(optarg, types[i].name) == 0) {
					p->type = types[i].type;
					o->type_name = types[i].name;
					found = true;
				}
			}
			if (!found)
				return usage_error(
					"--type: '%s' is not one of f32, f16, bf16, q8_0, q4_0",
					optarg);
			break;
		}
		case OPT_SEED:
			if (parse_u64(opt, optarg, UINT64_MAX, &p->seed))
				return EXIT_USAGE;
			break;
		case OPT_TIED:
		case OPT_UNTIED:
			o->set_tied = true;
			p->tied = c == OPT_TIED;
			break;
		case OPT_NAME:
			p->name = optarg;
			break;
		case OPT_ROPE_BASE:
			if (parse_pos_float(opt, optarg, &p->rope_base))
				return EXIT_USAGE;
			break;
		case OPT_RMS_EPS:
			if (parse_pos_float(opt, optarg, &p->rms_eps))
				return EXIT_USAGE;
			break;
		case OPT_PRESET:
			o->preset = NULL;
			for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
				if (strcmp(optarg, presets[i].name) == 0)
					o->preset = &presets[i];
			}
			if (!o->preset)
				return usage_error("--preset: '%s' is not one of tiny, 110m",
						   optarg);
			break;
		case 'o':
			o->out = optarg;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'h':
			o->help = true;
			return 0;
		case ':':
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!o->out)
		return usage_error("no output file (-o FILE)");

	if (o->preset) {
		const struct preset *s = o->preset;

		p->dim = o->set_dim ? p->dim : s->dim;
		p->n_layers = o->set_layers ? p->n_layers : s->n_layers;
		p->n_heads = o->set_heads ? p->n_heads : s->n_heads;
		p->n_kv_heads = o->set_kv ? p->n_kv_heads : s->n_kv_heads;
		p->ffn = o->set_ffn ? p->ffn : s->ffn;
		p->ctx = o->set_ctx ? p->ctx : s->ctx;
		p->vocab = o->set_vocab ? p->vocab : s->vocab;
		p->tied = o->set_tied ? p->tied : s->tied;
		if (!p->name) {
			snprintf(o->default_name, sizeof(o->default_name), "duet-%s", s->name);
			p->name = o->default_name;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	uint64_t size = 0, params;
	double t0, ms;
	int ret;

	duet_log_set_ident(PROG);
	ret = parse_args(argc, argv, &o);
	if (ret)
		return ret;
	if (o.help) {
		usage(stdout);
		return 0;
	}
	if (synth_validate(&o.p) != 0) {
		fprintf(stderr, PROG ": invalid model shape (see the error above); try --help\n");
		return EXIT_USAGE;
	}

	params = synth_param_count(&o.p);
	t0 = now_ms();
	ret = synth_write_file(&o.p, o.out, &size);
	ms = now_ms() - t0;
	if (ret) {
		log_error("mkmodel", "%s not written: %s", o.out, duet_strerror(ret));
		return 1;
	}
	if (!o.quiet)
		printf(PROG
		       ": wrote %s: llama dim %u, %u layers, %u/%u heads, ffn %u, ctx %u, "
		       "vocab %u, %s, %s, seed %llu: %.2fM params, %.1f MB in %.0f ms (%.0f MB/s)\n",
		       o.out, o.p.dim, o.p.n_layers, o.p.n_heads, o.p.n_kv_heads, o.p.ffn, o.p.ctx,
		       o.p.vocab ? o.p.vocab : SYNTH_VOCAB_BASE, o.type_name,
		       o.p.tied ? "tied" : "untied", (unsigned long long)o.p.seed,
		       (double)params / 1e6, (double)size / 1e6, ms,
		       ms > 0 ? (double)size / 1e3 / ms : 0.0);
	return 0;
}
