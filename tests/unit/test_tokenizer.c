// SPDX-License-Identifier: MIT
/*
 * Tokenizers: llama.cpp's tokenizer test vectors for every SPM and BPE
 * vocabulary in ../shared (46 strings each), the stories260K golden cases
 * (ids with and without BOS, pieces, and the detokenized text of whole
 * generations), the streaming detokenizer's UTF-8 assembly, round trips,
 * malformed vocabularies and large or random prompts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/core/err.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_write.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"
#include "runtime/model/unicode.h"
#include "tests/unit/testutil.h"

/* --- a purpose-built JSON reader for the golden files ------------------------ */

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
		p++;
	return p;
}

/* Position just after `"key":` at or after p, or NULL. */
static const char *json_key(const char *p, const char *key)
{
	char pat[128];
	const char *q;

	snprintf(pat, sizeof(pat), "\"%s\"", key);
	while ((q = strstr(p, pat))) {
		const char *r = skip_ws(q + strlen(pat));

		if (*r == ':')
			return skip_ws(r + 1);
		p = q + 1;
	}
	return NULL;
}

static unsigned hex4(const char *p)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];

		v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/* A JSON string at p into a malloc'd buffer (NUL-terminated); *end after it. */
static char *json_str(const char *p, size_t *len, const char **end)
{
	size_t n = 0, cap = strlen(p) + 1;
	char *out = malloc(cap);

	assert_non_null(out);
	p = skip_ws(p);
	assert_int_equal(*p, '"');
	for (p++; *p != '"'; p++) {
		uint32_t cp;
		uint8_t u[4];

		assert_true(*p != '\0');
		if (*p != '\\') {
			out[n++] = *p;
			continue;
		}
		p++;
		switch (*p) {
		case 'n':
			out[n++] = '\n';
			break;
		case 't':
			out[n++] = '\t';
			break;
		case 'r':
			out[n++] = '\r';
			break;
		case 'b':
			out[n++] = '\b';
			break;
		case 'f':
			out[n++] = '\f';
			break;
		case 'u':
			cp = hex4(p + 1);
			p += 4;
			if (cp >= 0xD800 && cp < 0xDC00 && p[1] == '\\' && p[2] == 'u') {
				cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(p + 3) - 0xDC00);
				p += 6;
			}
			n += uni_encode(cp, u);
			memcpy(out + n - uni_encode(cp, u), u, uni_encode(cp, u));
			break;
		default: /* \" \\ \/ */
			out[n++] = *p;
			break;
		}
	}
	out[n] = '\0';
	*len = n;
	if (end)
		*end = p + 1;
	return out;
}

/* A JSON array of integers at p into ids[max]; returns the count. */
static size_t json_ints(const char *p, int32_t *ids, size_t max, const char **end)
{
	size_t n = 0;

	p = skip_ws(p);
	assert_int_equal(*p, '[');
	p = skip_ws(p + 1);
	while (*p != ']') {
		char *e;
		long v = strtol(p, &e, 10);

		assert_true(e != p);
		assert_true(n < max);
		ids[n++] = (int32_t)v;
		p = skip_ws(e);
		if (*p == ',')
			p = skip_ws(p + 1);
	}
	if (end)
		*end = p + 1;
	return n;
}

/* --- helpers ----------------------------------------------------------------- */

static struct gguf_file *open_gguf(const char *path)
{
	struct gguf_file *f = NULL;
	char err[512] = "";
	int ret = gguf_open(path, &f, err, sizeof(err));

	if (ret)
		print_error("gguf_open(%s): %s\n", path, err);
	assert_int_equal(ret, 0);
	return f;
}

static struct tokenizer *make_tok(const struct gguf_file *f)
{
	struct tokenizer *t = NULL;
	char err[512] = "";
	int ret = tok_create_from_gguf(f, &t, err, sizeof(err));

	if (ret)
		print_error("tok_create_from_gguf: %s\n", err);
	assert_int_equal(ret, 0);
	return t;
}

/* Encode into a malloc'd array (checks the -ENOSPC protocol on the way). */
static int32_t *encode(const struct tokenizer *t, const char *s, size_t len, bool add_special,
		       bool parse_special, size_t *n)
{
	int32_t *ids;
	int ret = tok_encode(t, s, len, add_special, parse_special, NULL, 0, n);

	assert_true(ret == 0 || ret == -ENOSPC);
	assert_true(ret == -ENOSPC || *n == 0);
	ids = malloc((*n + 1) * sizeof(*ids));
	assert_non_null(ids);
	assert_int_equal(tok_encode(t, s, len, add_special, parse_special, ids, *n, n), 0);
	return ids;
}

static char *decode(const struct tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
	size_t cap = 64;
	char *out = NULL;
	int ret;

	do {
		cap *= 4;
		free(out);
		out = malloc(cap);
		assert_non_null(out);
		ret = tok_decode(t, ids, n, out, cap, len);
	} while (ret == -ENOSPC);
	assert_int_equal(ret, 0);
	return out;
}

static bool valid_utf8(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = uni_decode_strict((const uint8_t *)s + i, n - i, &cp);

		if (!l)
			return false;
		i += l;
	}
	return true;
}

/* --- unicode helpers ---------------------------------------------------------- */

static void test_unicode(void **state)
{
	static const struct {
		const char *s;
		size_t len, used;
		uint32_t cp;
	} dec[] = {
		{ "A", 1, 1, 'A' },
		{ "\xc3\xa9", 2, 2, 0xE9 },
		{ "\xf0\x9f\x98\x80", 4, 4, 0x1F600 },
		{ "\x80", 1, 1, UNI_REPLACEMENT },	       /* stray continuation */
		{ "\xc0\xaf", 2, 1, UNI_REPLACEMENT },	       /* overlong lead */
		{ "\xe0\x80\xaf", 3, 1, UNI_REPLACEMENT },     /* overlong 3-byte */
		{ "\xed\xa0\x80", 3, 1, UNI_REPLACEMENT },     /* surrogate */
		{ "\xf4\x90\x80\x80", 4, 1, UNI_REPLACEMENT }, /* > U+10FFFF */
		{ "\xe2\x82", 2, 1, UNI_REPLACEMENT },	       /* truncated */
		{ "\xff", 1, 1, UNI_REPLACEMENT },
	};
	uint8_t u[4];

	(void)state;
	for (size_t i = 0; i < sizeof(dec) / sizeof(dec[0]); i++) {
		uint32_t cp;

		assert_int_equal(uni_decode((const uint8_t *)dec[i].s, dec[i].len, &cp),
				 dec[i].used);
		assert_int_equal(cp, dec[i].cp);
	}
	/* Every scalar value round-trips through encode and strict decode. */
	for (uint32_t c = 0; c <= UNI_MAX; c++) {
		uint32_t back;
		size_t n;

		if (c >= 0xD800 && c <= 0xDFFF)
			continue;
		n = uni_encode(c, u);
		assert_int_equal(uni_decode_strict(u, n, &back), n);
		assert_int_equal(back, c);
	}
	assert_int_equal(uni_encode(0xD800, u), 3); /* surrogates encode U+FFFD */
	assert_memory_equal(u, "\xef\xbf\xbd", 3);

	assert_int_equal(uni_category('a'), UNI_LETTER);
	assert_int_equal(uni_category(0x4E2D), UNI_LETTER); /* 中 */
	assert_int_equal(uni_category(0xBD), UNI_NUMBER);   /* ½ */
	assert_int_equal(uni_category(0x663), UNI_NUMBER);  /* Arabic-Indic 3 */
	assert_int_equal(uni_category(0x3002), UNI_PUNCT);  /* 。 */
	assert_int_equal(uni_category('$'), UNI_SYMBOL);
	assert_int_equal(uni_category(0x1F600), UNI_SYMBOL); /* emoji */
	assert_int_equal(uni_category(0x301), UNI_MARK);
	assert_int_equal(uni_category(0x3000), UNI_SEPARATOR);
	assert_int_equal(uni_category(0x200B), UNI_FORMAT);
	assert_int_equal(uni_category(0xE000), UNI_UNDEF); /* private use */
	assert_int_equal(uni_category(0x110000), UNI_UNDEF);
	assert_true(uni_is_space(0x85));
	assert_true(uni_is_space(0x3000));
	assert_false(uni_is_space(0x200B));
	assert_false(uni_is_space(0x1C));
	assert_true(strlen(uni_data_version) >= 5); /* "14.0.0" from the generating Python */
	/* The table is sorted and gap-free. */
	assert_int_equal(uni_ranges[0].first, 0);
	for (unsigned i = 1; i < uni_n_ranges; i++)
		assert_int_equal(uni_ranges[i].first, uni_ranges[i - 1].last + 1);
	assert_int_equal(uni_ranges[uni_n_ranges - 1].last, UNI_MAX);
}

/* --- stories260K golden cases ------------------------------------------------ */

static void test_stories_cases(void **state)
{
	char *model = strdup(TU_SHARED_OR_SKIP("models/stories260K.gguf"));
	const char *cases = TU_SHARED_OR_SKIP("golden/stories260K/tokenizer_cases.json");
	char *json = tu_read_file(cases, NULL);
	struct gguf_file *f = open_gguf(model);
	struct tokenizer *t = make_tok(f);
	const char *p;
	int n_cases = 0;

	(void)state;
	assert_non_null(json);
	p = json_key(json, "cases");
	assert_non_null(p);
	while ((p = json_key(p, "text"))) {
		int32_t want_bos[512], want_nobos[512];
		size_t len, nb, nn, n;
		char *text = json_str(p, &len, &p);
		int32_t *ids;

		nb = json_ints(json_key(p, "ids_with_bos"), want_bos, 512, &p);
		nn = json_ints(json_key(p, "ids_no_bos"), want_nobos, 512, &p);
		ids = encode(t, text, len, true, false, &n);
		assert_int_equal(n, nb);
		assert_memory_equal(ids, want_bos, n * sizeof(*ids));
		free(ids);
		ids = encode(t, text, len, false, false, &n);
		assert_int_equal(n, nn);
		assert_memory_equal(ids, want_nobos, n * sizeof(*ids));

		/* pieces: the raw vocabulary strings of ids_with_bos */
		p = json_key(p, "pieces");
		p = skip_ws(p) + 1;
		for (size_t i = 0; i < nb; i++) {
			size_t pl, tl;
			const char *tp;
			char *piece = json_str(p, &pl, &p);

			assert_int_equal(tok_piece(t, want_bos[i], &tp, &tl), 0);
			assert_int_equal(tl, pl);
			assert_memory_equal(tp, piece, pl);
			free(piece);
			p = skip_ws(p);
			if (*p == ',')
				p++;
		}
		free(ids);
		free(text);
		n_cases++;
	}
	print_message("stories260K tokenizer_cases: %d cases\n", n_cases);
	assert_int_equal(n_cases, 20);
	free(json);
	free(model);
	tok_destroy(t);
	gguf_close(f);
}

static void check_prompt_file(const struct tokenizer *t, const char *rel, bool text_too)
{
	const char *path = tu_shared_path(rel);
	int32_t want[1024], gen[1024];
	size_t len, np, ng, n, tl, dl;
	char *json, *prompt, *text, *dec;
	int32_t *ids;
	bool add_bos;

	assert_non_null(path);
	json = tu_read_file(path, NULL);
	assert_non_null(json);
	prompt = json_str(json_key(json, "prompt"), &len, NULL);
	add_bos = strncmp(json_key(json, "add_bos"), "true", 4) == 0;
	np = json_ints(json_key(json, "prompt_ids"), want, 1024, NULL);
	ids = encode(t, prompt, len, add_bos, false, &n);
	assert_int_equal(n, np);
	assert_memory_equal(ids, want, n * sizeof(*ids));
	if (text_too) {
		ng = json_ints(json_key(json, "generated_ids"), gen, 1024, NULL);
		assert_true(np + ng <= 1024);
		memcpy(want + np, gen, ng * sizeof(*gen));
		text = json_str(json_key(json, "text"), &tl, NULL);
		dec = decode(t, want, np + ng, &dl);
		if (dl != tl || memcmp(dec, text, tl) != 0)
			print_error("%s: detokenized text differs:\n got: %s\nwant: %s\n", rel, dec,
				    text);
		assert_int_equal(dl, tl);
		assert_memory_equal(dec, text, tl);
		free(dec);
		free(text);
	}
	free(ids);
	free(prompt);
	free(json);
}

static void test_stories_prompts(void **state)
{
	static const char *const slugs[] = {
		"once_upon_a_time", "the_little_dog",	 "empty",
		"lily_and_tom",	    "newline_in_prompt", "leading_space"
	};
	char *model = strdup(TU_SHARED_OR_SKIP("models/stories260K.gguf"));
	struct gguf_file *f;
	struct tokenizer *t;
	char rel[128];

	(void)state;
	TU_SHARED_OR_SKIP("golden/stories260K/once_upon_a_time.json");
	f = open_gguf(model);
	free(model);
	t = make_tok(f);
	for (size_t i = 0; i < sizeof(slugs) / sizeof(slugs[0]); i++) {
		snprintf(rel, sizeof(rel), "golden/stories260K/%s.json", slugs[i]);
		check_prompt_file(t, rel, true);
	}
	check_prompt_file(t, "golden/stories260K/once_upon_a_time.nobos.json", false);
	{
		struct model_desc *m;
		struct tokenizer *t2;
		char err[256];
		int32_t ids[8];
		size_t n;

		assert_int_equal(model_desc_load(f, MODEL_LOAD_VOCAB_ONLY, &m, err, sizeof(err)),
				 0);
		assert_int_equal(tok_create(f, m, &t2, err, sizeof(err)), 0);
		assert_int_equal(tok_encode(t2, "Once upon a time", 16, true, false, ids, 8, &n),
				 0);
		assert_int_equal(n, 5);
		assert_int_equal(ids[1], 403);
		tok_destroy(t2);
		model_desc_free(m);
	}
	assert_true(tok_is_eog(t, 2));
	assert_false(tok_is_eog(t, 1));
	assert_int_equal(tok_bos(t), 1);
	assert_int_equal(tok_eos(t), 2);
	tok_destroy(t);
	gguf_close(f);
}

/* --- llama.cpp tokenizer vectors --------------------------------------------- */

struct vocab_case {
	const char *name;
	const char *gguf; /* relative to shared/ */
	const char *vec;  /* .inp/.out prefix */
};

static const struct vocab_case vocabs[] = {
	{ "llama-spm", "tokenizer-vectors/ggml-vocab-llama-spm.gguf", NULL },
	{ "phi-3", "tokenizer-vectors/ggml-vocab-phi-3.gguf", NULL },
	{ "stories260K", "models/stories260K.gguf", "tokenizer-vectors/stories260K.gguf" },
	{ "gpt-2", "tokenizer-vectors/ggml-vocab-gpt-2.gguf", NULL },
	{ "mpt", "tokenizer-vectors/ggml-vocab-mpt.gguf", NULL },
	{ "falcon", "tokenizer-vectors/ggml-vocab-falcon.gguf", NULL },
	{ "starcoder", "tokenizer-vectors/ggml-vocab-starcoder.gguf", NULL },
	{ "refact", "tokenizer-vectors/ggml-vocab-refact.gguf", NULL },
	{ "deepseek-coder", "tokenizer-vectors/ggml-vocab-deepseek-coder.gguf", NULL },
	{ "deepseek-llm", "tokenizer-vectors/ggml-vocab-deepseek-llm.gguf", NULL },
};

#define SEP "\n__ggml_vocab_test__\n"

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
	print_message("    %s:", what);
	for (size_t i = 0; i < n; i++)
		print_message(" %d", ids[i]);
	print_message("\n");
}

/* Run one vocabulary's vectors; returns failures (cases and round trips). */
static int run_vectors(const struct vocab_case *vc, int *n_cases)
{
	char rel[256], inp_path[512], out_path[512];
	const char *path = tu_shared_path(vc->gguf);
	struct gguf_file *f;
	struct tokenizer *t;
	char *inp, *out, *ip, *op;
	size_t inp_len;
	int fails = 0, rt_fails = 0;

	*n_cases = 0;
	if (!path) {
		print_message("[  SKIP    ] %s: not found\n", vc->gguf);
		return 0;
	}
	f = open_gguf(path);
	t = make_tok(f);
	snprintf(rel, sizeof(rel), "%s.inp", vc->vec ? vc->vec : vc->gguf);
	snprintf(inp_path, sizeof(inp_path), "%s", tu_shared_path(rel));
	snprintf(rel, sizeof(rel), "%s.out", vc->vec ? vc->vec : vc->gguf);
	snprintf(out_path, sizeof(out_path), "%s", tu_shared_path(rel));
	inp = tu_read_file(inp_path, &inp_len);
	out = tu_read_file(out_path, NULL);
	assert_non_null(inp);
	assert_non_null(out);
	ip = inp;
	op = out;
	for (;;) {
		char *sep = strstr(ip, SEP), *nl;
		int32_t want[1024];
		size_t nw = 0, n, dl, tl;
		int32_t *ids;
		char *dec;

		if (!sep)
			break;
		*sep = '\0';
		tl = (size_t)(sep - ip);
		nl = strchr(op, '\n');
		assert_non_null(nl);
		*nl = '\0';
		for (char *q = op; *q;) {
			char *e;

			want[nw++] = (int32_t)strtol(q, &e, 10);
			if (e == q)
				break;
			q = e;
			while (*q == ' ')
				q++;
		}
		if (nw && op[0] == '\0')
			nw = 0;
		ids = encode(t, ip, tl, false, false, &n);
		if (n != nw || memcmp(ids, want, n * sizeof(*ids)) != 0) {
			print_message("  %s: FAIL on \"%s\"\n", vc->name, ip);
			print_ids("got ", ids, n);
			print_ids("want", want, nw);
			fails++;
		}
		/* Round trip: SPM adds the space prefix (no BOS here, so it stays). */
		dec = decode(t, ids, n, &dl);
		if (tok_kind(t) == MODEL_TOK_SPM && tok_add_space_prefix(t) && tl) {
			if (dl != tl + 1 || dec[0] != ' ' || memcmp(dec + 1, ip, tl) != 0)
				rt_fails++;
		} else if (dl != tl || memcmp(dec, ip, tl) != 0) {
			rt_fails++;
		}
		if (rt_fails && !fails)
			print_message("  %s: round trip differs on \"%s\" -> \"%.*s\"\n", vc->name,
				      ip, (int)dl, dec);
		free(dec);
		free(ids);
		(*n_cases)++;
		ip = sep + strlen(SEP);
		op = nl + 1;
	}
	print_message("  %-15s %2d/%d vectors pass, %d round-trip failures\n", vc->name,
		      *n_cases - fails, *n_cases, rt_fails);
	free(inp);
	free(out);
	tok_destroy(t);
	gguf_close(f);
	return fails + rt_fails;
}

static void test_vectors(void **state)
{
	int total_fail = 0;

	(void)state;
	TU_SHARED_OR_SKIP("tokenizer-vectors/README.md");
	for (size_t i = 0; i < sizeof(vocabs) / sizeof(vocabs[0]); i++) {
		int n;

		total_fail += run_vectors(&vocabs[i], &n);
		if (tu_shared_path(vocabs[i].gguf))
			assert_int_equal(n, 46);
	}
	assert_int_equal(total_fail, 0);
}

/* Vocabularies without vectors load (or are refused with a clear error). */
static void test_other_vocabs(void **state)
{
	const char *bert = TU_SHARED_OR_SKIP("tokenizer-vectors/ggml-vocab-bert-bge.gguf");

	const char *paths[] = { "tokenizer-vectors/ggml-vocab-baichuan.gguf",
				"tokenizer-vectors/ggml-vocab-gpt-neox.gguf" };
	struct gguf_file *f = open_gguf(bert);
	struct tokenizer *t = NULL;
	char err[256] = "";

	(void)state;
	assert_int_equal(tok_create_from_gguf(f, &t, err, sizeof(err)), -DUET_EARCH);
	assert_null(t);
	assert_non_null(strstr(err, "tokenizer 'bert' is not supported"));
	gguf_close(f);
	for (size_t i = 0; i < 2; i++) {
		const char *p = tu_shared_path(paths[i]);
		int32_t *ids;
		size_t n, dl;
		char *dec;
		const char *txt = "Hello world! 123 ünïcödé";

		if (!p)
			continue;
		f = open_gguf(p);
		t = make_tok(f);
		ids = encode(t, txt, strlen(txt), true, false, &n);
		assert_true(n > 3);
		dec = decode(t, ids, n, &dl);
		assert_non_null(strstr(dec, txt));
		free(dec);
		free(ids);
		tok_destroy(t);
		gguf_close(f);
	}
}

/* --- streaming detokenizer --------------------------------------------------- */

static void test_stream_spm_bytes(void **state)
{
	const char *model = TU_SHARED_OR_SKIP("models/stories260K.gguf");
	struct gguf_file *f = open_gguf(model);
	struct tokenizer *t = make_tok(f);
	struct tok_stream s;
	size_t cap = tok_stream_max(t);
	char *out = malloc(cap);
	const uint8_t emoji[4] = { 0xF0, 0x9F, 0x98, 0x80 };
	int32_t ids[64];
	size_t n;

	(void)state;
	assert_non_null(out);
	tok_stream_init(&s);
	for (int i = 0; i < 3; i++)
		assert_int_equal(tok_stream_push(t, &s, 3 + emoji[i], out, cap), 0);
	assert_int_equal(tok_stream_push(t, &s, 3 + emoji[3], out, cap), 4);
	assert_memory_equal(out, emoji, 4);

	/* A lone invalid byte -> U+FFFD; a truncated sequence then ASCII -> U+FFFD + it. */
	assert_int_equal(tok_stream_push(t, &s, 3 + 0xFF, out, cap), 3);
	assert_memory_equal(out, "\xef\xbf\xbd", 3);
	assert_int_equal(tok_stream_push(t, &s, 3 + 0xE2, out, cap), 0);
	assert_int_equal(tok_stream_push(t, &s, 3 + 'a', out, cap), 4);
	assert_memory_equal(out,
			    "\xef\xbf\xbd"
			    "a",
			    4);
	/* Overlong and surrogate leads are refused at the second byte. */
	assert_int_equal(tok_stream_push(t, &s, 3 + 0xE0, out, cap), 0);
	assert_int_equal(tok_stream_push(t, &s, 3 + 0x80, out, cap), 6);
	assert_memory_equal(out, "\xef\xbf\xbd\xef\xbf\xbd", 6);
	/* Pending at the end: flush emits U+FFFD. */
	assert_int_equal(tok_stream_push(t, &s, 3 + 0xF0, out, cap), 0);
	assert_int_equal(tok_stream_flush(t, &s, out, cap), 3);
	assert_int_equal(tok_stream_flush(t, &s, out, cap), 0);

	/* BOS strips one leading space of the next piece only; control tokens emit nothing. */
	tok_stream_init(&s);
	assert_int_equal(tok_stream_push(t, &s, 1, out, cap), 0);
	assert_int_equal(tok_encode(t, "Once", 4, false, false, ids, 64, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(tok_stream_push(t, &s, ids[0], out, cap), 4);
	assert_memory_equal(out, "Once", 4);
	assert_int_equal(tok_stream_push(t, &s, ids[0], out, cap), 5);
	assert_memory_equal(out, " Once", 5);
	assert_int_equal(tok_stream_push(t, &s, 2, out, cap), 0);

	/* Errors. */
	assert_int_equal(tok_stream_push(t, &s, 512, out, cap), -EINVAL);
	assert_int_equal(tok_stream_push(t, &s, -1, out, cap), -EINVAL);
	assert_int_equal(tok_stream_push(t, &s, 5, out, 2), -ENOSPC);
	{
		const char *pc;
		size_t pl;

		assert_int_equal(tok_piece(t, 512, &pc, &pl), -EINVAL);
	}
	free(out);
	tok_destroy(t);
	gguf_close(f);
}

/* Each partial output of a BPE stream is valid UTF-8 and the whole equals the input. */
static void test_stream_bpe(void **state)
{
	const char *path = TU_SHARED_OR_SKIP("tokenizer-vectors/ggml-vocab-gpt-2.gguf");
	const char *txt = "emoji \xf0\x9f\xa6\x99\xf0\x9f\x98\x80 and \xe4\xb8\xad\xe6\x96\x87 ok";
	struct gguf_file *f = open_gguf(path);
	struct tokenizer *t = make_tok(f);
	struct tok_stream s;
	size_t cap = tok_stream_max(t), n, total = 0;
	char *out = malloc(cap), all[256];
	int32_t *ids = encode(t, txt, strlen(txt), false, false, &n);
	int held = 0;

	(void)state;
	tok_stream_init(&s);
	for (size_t i = 0; i < n; i++) {
		int r = tok_stream_push(t, &s, ids[i], out, cap);

		assert_true(r >= 0);
		assert_true(valid_utf8(out, (size_t)r));
		held += r == 0;
		memcpy(all + total, out, (size_t)r);
		total += (size_t)r;
	}
	assert_int_equal(tok_stream_flush(t, &s, out, cap), 0);
	assert_true(held > 0); /* the emoji are split over several byte-level tokens */
	assert_int_equal(total, strlen(txt));
	assert_memory_equal(all, txt, total);
	free(ids);
	free(out);
	tok_destroy(t);
	gguf_close(f);
}

/* --- special tokens, -ENOSPC ------------------------------------------------- */

static void test_special_and_nospc(void **state)
{
	const char *path = TU_SHARED_OR_SKIP("tokenizer-vectors/ggml-vocab-llama-spm.gguf");
	struct gguf_file *f = open_gguf(path);
	struct tokenizer *t = make_tok(f);
	int32_t ids[64];
	size_t n;

	(void)state;
	/* parse_special turns "<s>" into BOS; without it the text is tokenized. */
	assert_int_equal(tok_encode(t, "<s>Hi", 5, false, true, ids, 64, &n), 0);
	assert_true(n >= 2);
	assert_int_equal(ids[0], 1);
	assert_int_equal(tok_encode(t, "<s>Hi", 5, false, false, ids, 64, &n), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_not_equal(ids[i], 1);
	/* Hello world with BOS: [1, 15043, 3186]; too small a buffer -> -ENOSPC + count. */
	assert_int_equal(tok_encode(t, "Hello world", 11, true, false, ids, 2, &n), -ENOSPC);
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], 15043);
	assert_int_equal(tok_encode(t, "Hello world", 11, true, false, ids, 3, &n), 0);
	assert_int_equal(ids[2], 3186);
	assert_int_equal(tok_encode(t, "", 0, true, false, ids, 3, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(tok_encode(t, "", 0, false, false, ids, 3, &n), 0);
	assert_int_equal(n, 0);
	tok_destroy(t);
	gguf_close(f);
}

/* --- malformed vocabularies -------------------------------------------------- */

enum bad_kind {
	BAD_NONE,
	BAD_SPM_NO_SCORES,
	BAD_MERGE_NO_SPACE,
	BAD_BOS_RANGE,
	BAD_PRE,
	BAD_TYPE,
	BAD_SCORES_LEN,
	BAD_MODEL,
	BAD_NO_MERGES,
};

/* A 6-token vocabulary, SPM or BPE, with one defect. */
static int make_vocab(bool bpe, enum bad_kind bad, struct tokenizer **t, char *err, size_t errlen)
{
	static const char *const spm_tokens[] = { "<unk>",
						  "<s>",
						  "</s>",
						  "\xe2\x96\x81",
						  "a",
						  "\xe2\x96\x81"
						  "a" };
	static const char *const bpe_tokens[] = { "a",
						  "b",
						  "ab",
						  "\xc4\xa0",
						  "\xc4\xa0"
						  "a",
						  "<|endoftext|>" };
	const char *merges[] = { "a b", "\xc4\xa0 a" };
	float scores[6] = { 0, 0, 0, -1, -2, -0.5f };
	int32_t types[6] = { 2, 3, 3, 1, 1, 1 };
	struct gguf_writer *w;
	struct gguf_file *f = NULL;
	void *buf = NULL;
	size_t len;
	int ret;

	if (bpe)
		types[5] = 3, types[0] = types[1] = types[2] = 1;
	if (bad == BAD_TYPE)
		types[4] = 9;
	if (bad == BAD_MERGE_NO_SPACE)
		merges[1] = "xyz";
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_add_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_add_str(w, "tokenizer.ggml.model",
					     bad == BAD_MODEL ? "bert"
					     : bpe	      ? "gpt2"
							      : "llama"),
			 0);
	if (bpe)
		assert_int_equal(gguf_writer_add_str(w, "tokenizer.ggml.pre",
						     bad == BAD_PRE ? "x" : "gpt-2"),
				 0);
	assert_int_equal(gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens",
						 bpe ? bpe_tokens : spm_tokens, 6),
			 0);
	if (bad != BAD_SPM_NO_SCORES)
		assert_int_equal(gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32,
						     scores, bad == BAD_SCORES_LEN ? 5 : 6),
				 0);
	assert_int_equal(
		gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 6), 0);
	if (bpe && bad != BAD_NO_MERGES)
		assert_int_equal(gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, 2), 0);
	assert_int_equal(gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id",
					     bad == BAD_BOS_RANGE ? 6
					     : bpe		  ? 5
								  : 1),
			 0);
	assert_int_equal(gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", bpe ? 5 : 2), 0);
	assert_int_equal(gguf_writer_write_mem(w, &buf, &len), 0);
	gguf_writer_destroy(w);
	assert_int_equal(gguf_open_mem(buf, len, &f, err, errlen), 0);
	ret = tok_create_from_gguf(f, t, err, errlen);
	if (ret == 0) {
		int32_t ids[16];
		size_t n;

		/* "a a ab": exercises merging on the tiny vocabularies. */
		assert_int_equal(tok_encode(*t, "a ab", 4, false, false, ids, 16, &n), 0);
		if (bpe) {
			/* "a", then "Ġab": "a b" (rank 0) wins over "Ġ a" -> Ġ, ab */
			assert_int_equal(n, 3);
			assert_int_equal(ids[0], 0);
			assert_int_equal(ids[1], 3);
			assert_int_equal(ids[2], 2);
		} else {
			/* "▁a▁ab": ▁a (-0.5) twice, then b by byte fallback -> <unk> */
			assert_int_equal(n, 3);
			assert_int_equal(ids[0], 5);
			assert_int_equal(ids[1], 5);
			assert_int_equal(ids[2], 0);
		}
		tok_destroy(*t);
		*t = NULL;
	}
	gguf_close(f);
	free(buf);
	return ret;
}

static void test_bad_vocabs(void **state)
{
	static const struct {
		bool bpe;
		enum bad_kind bad;
		int code;
		const char *msg;
	} cases[] = {
		{ false, BAD_SPM_NO_SCORES, -DUET_EMODELKEY, "tokenizer.ggml.scores" },
		{ false, BAD_SCORES_LEN, -DUET_EMODELKEY, "has 5 entries but there are 6 tokens" },
		{ true, BAD_MERGE_NO_SPACE, -DUET_EMODELKEY, "merges[1] = 'xyz'" },
		{ true, BAD_NO_MERGES, -DUET_EMODELKEY, "tokenizer.ggml.merges" },
		{ false, BAD_BOS_RANGE, -DUET_EHPARAM, "bos_token_id' = 6 is not below" },
		{ true, BAD_PRE, -DUET_EARCH, "pre-tokenizer 'x' is not supported" },
		{ false, BAD_TYPE, -DUET_EMODELKEY, "token_type[4] = 9" },
		{ false, BAD_MODEL, -DUET_EARCH, "tokenizer 'bert' is not supported" },
	};
	struct tokenizer *t = NULL;
	char err[256];

	(void)state;
	assert_int_equal(make_vocab(false, BAD_NONE, &t, err, sizeof(err)), 0);
	assert_int_equal(make_vocab(true, BAD_NONE, &t, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_int_equal(make_vocab(cases[i].bpe, cases[i].bad, &t, err, sizeof(err)),
				 cases[i].code);
		assert_null(t);
		if (!strstr(err, cases[i].msg))
			print_error("case %zu: message '%s' lacks '%s'\n", i, err, cases[i].msg);
		assert_non_null(strstr(err, cases[i].msg));
	}
}

/* --- large and random prompts ------------------------------------------------ */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_large_prompts(void **state)
{
	static const char *const names[] = { "tokenizer-vectors/ggml-vocab-llama-spm.gguf",
					     "tokenizer-vectors/ggml-vocab-gpt-2.gguf",
					     "tokenizer-vectors/ggml-vocab-deepseek-llm.gguf",
					     "tokenizer-vectors/ggml-vocab-falcon.gguf" };
	const char *inp = TU_SHARED_OR_SKIP("tokenizer-vectors/ggml-vocab-gpt-2.gguf.inp");
	size_t big = 1u << 20, inp_len;
	char *rnd = malloc(big), *text = malloc(big), *src = tu_read_file(inp, &inp_len);
	uint64_t x = 0x9E3779B97F4A7C15ull;

	(void)state;
	assert_non_null(rnd);
	assert_non_null(text);
	assert_non_null(src);
	for (size_t i = 0; i < big; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		rnd[i] = (char)(x >> 24);
	}
	for (size_t i = 0; i < big; i++)
		text[i] = src[i % inp_len];
	for (size_t v = 0; v < sizeof(names) / sizeof(names[0]); v++) {
		const char *p = tu_shared_path(names[v]);
		struct gguf_file *f;
		struct tokenizer *t;
		int32_t *ids;
		size_t n;
		double t0, t1, t2;
		char *dec;
		size_t dl;

		if (!p)
			continue;
		f = open_gguf(p);
		t = make_tok(f);
		t0 = now_s();
		ids = encode(t, text, big, false, false, &n);
		t1 = now_s();
		/* encode() tokenizes twice (count, then fill). */
		print_message("  %-48s 1 MiB text: %zu tokens in %.3f s (%.2f Mtok/s)\n", names[v],
			      n, (t1 - t0) / 2, n / ((t1 - t0) / 2) / 1e6);
		free(ids);
		t1 = now_s();
		ids = encode(t, rnd, big, false, true, &n);
		t2 = now_s();
		print_message("  %-48s 1 MiB random bytes: %zu tokens in %.3f s\n", names[v], n,
			      (t2 - t1) / 2);
		assert_true(n > 0);
		dec = decode(t, ids, n, &dl);
		assert_true(valid_utf8(dec, dl));
		free(dec);
		free(ids);
		tok_destroy(t);
		gguf_close(f);
	}
	free(src);
	free(text);
	free(rnd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unicode),		cmocka_unit_test(test_stories_cases),
		cmocka_unit_test(test_stories_prompts), cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_other_vocabs),	cmocka_unit_test(test_stream_spm_bytes),
		cmocka_unit_test(test_stream_bpe),	cmocka_unit_test(test_special_and_nospc),
		cmocka_unit_test(test_bad_vocabs),	cmocka_unit_test(test_large_prompts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
