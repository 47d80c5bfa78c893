// SPDX-License-Identifier: MIT
/*
 * Tests of runtime/ctl/openai: valid requests of every kind with every field
 * checked, one table entry per rejected request (status, code, param and a
 * message naming the field), nesting bombs, allocation failures at every
 * step, random mutations of valid bodies (run under ASan for leaks), and the
 * serializers read back with jansson or compared byte for byte (SSE).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/testutil.h"
#include "runtime/ctl/openai.h"
#include "runtime/core/mem.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct oai_limits lim = {
	.max_body = 1 << 20,
	.default_max_tokens = 16,
	.max_tokens_cap = 0,
	.max_n = 4,
	.max_logprobs = 5,
};

static struct oai_error err;

static int parse_cmpl(const char *body, struct oai_completion *c)
{
	memset(&err, 0, sizeof(err));
	return oai_parse_completion(body, strlen(body), &lim, c, &err);
}

static int parse_chat(const char *body, struct oai_chat *c)
{
	memset(&err, 0, sizeof(err));
	return oai_parse_chat(body, strlen(body), &lim, c, &err);
}

#define assert_ok(rc)                                                                           \
	do {                                                                                    \
		int rc_ = (rc);                                                                 \
		if (rc_)                                                                        \
			fail_msg("rc %d: %d %s param '%s': %s", rc_, err.http_status, err.code, \
				 err.param, err.message);                                       \
	} while (0)

#define assert_str(s, expect)                              \
	do {                                               \
		assert_non_null((s).ptr);                  \
		assert_string_equal((s).ptr, (expect));    \
		assert_int_equal((s).len, strlen(expect)); \
	} while (0)

static void assert_float(double got, double expect)
{
	if (fabs(got - expect) > 1e-6)
		fail_msg("%g != %g", got, expect);
}

/* --- valid requests ------------------------------------------------------------------------ */

static void test_completion_minimal(void **state)
{
	struct oai_completion c;

	assert_ok(parse_cmpl("{\"model\":\"tiny\",\"prompt\":\"Hello\"}", &c));
	assert_str(c.p.model, "tiny");
	assert_false(c.has_prompt_tokens);
	assert_str(c.prompt, "Hello");
	assert_null(c.prompt_tokens);
	assert_int_equal(c.p.max_tokens, 16);
	assert_float(c.p.sampling.temperature, 1);
	assert_float(c.p.sampling.top_p, 1);
	assert_int_equal(c.p.sampling.top_k, 0);
	assert_float(c.p.sampling.min_p, 0);
	assert_float(c.p.sampling.presence_penalty, 0);
	assert_float(c.p.sampling.frequency_penalty, 0);
	assert_float(c.p.sampling.repetition_penalty, 1);
	assert_false(c.p.sampling.has_seed);
	assert_int_equal(c.p.sampling.n_logit_bias, 0);
	assert_null(c.p.sampling.logit_bias);
	assert_int_equal(c.p.n_stop, 0);
	assert_false(c.p.stream);
	assert_false(c.p.include_usage);
	assert_int_equal(c.p.n_unknown, 0);
	assert_string_equal(c.p.unknown, "");
	oai_completion_free(&c);
	assert_null(c.arena.head);
	oai_completion_free(&c); /* twice is harmless */
}

static void test_completion_full(void **state)
{
	struct oai_completion c;

	assert_ok(
		parse_cmpl("{\"model\":\"tiny\",\"prompt\":\"Once upon\",\"max_tokens\":100,"
			   "\"temperature\":0.7,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,"
			   "\"presence_penalty\":-1.5,\"frequency_penalty\":2,"
			   "\"repetition_penalty\":1.1,\"seed\":-42,"
			   "\"stop\":[\"\\n\\n\",\"END\",\"\u00e9t\u00e9\",\"x\"],\"stream\":true,"
			   "\"stream_options\":{\"include_usage\":true},"
			   "\"logit_bias\":{\"50256\":-100,\"7\":2.5,\"0\":100},\"n\":1,"
			   "\"user\":\"alice\",\"echo\":false,\"logprobs\":null,\"best_of\":1,"
			   "\"suffix\":\"\"}",
			   &c));
	assert_str(c.p.model, "tiny");
	assert_str(c.prompt, "Once upon");
	assert_int_equal(c.p.max_tokens, 100);
	assert_float(c.p.sampling.temperature, 0.7);
	assert_float(c.p.sampling.top_p, 0.9);
	assert_int_equal(c.p.sampling.top_k, 40);
	assert_float(c.p.sampling.min_p, 0.05);
	assert_float(c.p.sampling.presence_penalty, -1.5);
	assert_float(c.p.sampling.frequency_penalty, 2);
	assert_float(c.p.sampling.repetition_penalty, 1.1);
	assert_true(c.p.sampling.has_seed);
	assert_int_equal(c.p.sampling.seed, -42);
	assert_int_equal(c.p.n_stop, 4);
	assert_str(c.p.stop[0], "\n\n");
	assert_str(c.p.stop[1], "END");
	assert_str(c.p.stop[2], "\xc3\xa9t\xc3\xa9");
	assert_str(c.p.stop[3], "x");
	assert_true(c.p.stream);
	assert_true(c.p.include_usage);
	assert_int_equal(c.p.sampling.n_logit_bias, 3);
	assert_int_equal(c.p.sampling.logit_bias[0].token, 0);
	assert_float(c.p.sampling.logit_bias[0].bias, 100);
	assert_int_equal(c.p.sampling.logit_bias[1].token, 7);
	assert_float(c.p.sampling.logit_bias[1].bias, 2.5);
	assert_int_equal(c.p.sampling.logit_bias[2].token, 50256);
	assert_float(c.p.sampling.logit_bias[2].bias, -100);
	assert_int_equal(c.p.n_unknown, 0);
	oai_completion_free(&c);
}

static void test_completion_prompt_forms(void **state)
{
	struct oai_completion c;

	assert_ok(parse_cmpl("{\"model\":\"m\",\"prompt\":[1,2,2147483647]}", &c));
	assert_true(c.has_prompt_tokens);
	assert_int_equal(c.n_prompt_tokens, 3);
	assert_int_equal(c.prompt_tokens[0], 1);
	assert_int_equal(c.prompt_tokens[2], 2147483647);
	assert_null(c.prompt.ptr);
	oai_completion_free(&c);

	assert_ok(parse_cmpl("{\"model\":\"m\",\"prompt\":[\"only one\"]}", &c));
	assert_false(c.has_prompt_tokens);
	assert_str(c.prompt, "only one");
	oai_completion_free(&c);

	assert_ok(parse_cmpl("{\"model\":\"m\",\"prompt\":[[5,6]]}", &c));
	assert_true(c.has_prompt_tokens);
	assert_int_equal(c.n_prompt_tokens, 2);
	assert_int_equal(c.prompt_tokens[1], 6);
	oai_completion_free(&c);

	/* An empty string is a valid prompt (the server adds BOS). */
	assert_ok(parse_cmpl("{\"model\":\"m\",\"prompt\":\"\"}", &c));
	assert_str(c.prompt, "");
	oai_completion_free(&c);
}

/* Clients send null for "not set": defaults apply; integral reals count as integers. */
static void test_completion_nulls_and_integral_reals(void **state)
{
	struct oai_completion c;

	assert_ok(parse_cmpl("{\"model\":\"m\",\"prompt\":\"p\",\"max_tokens\":null,"
			     "\"temperature\":null,\"top_p\":null,\"stop\":null,\"seed\":null,"
			     "\"logit_bias\":null,\"n\":null,\"stream\":null,"
			     "\"stream_options\":null,\"user\":null,\"suffix\":null,"
			     "\"best_of\":null,\"echo\":null}",
			     &c));
	assert_int_equal(c.p.max_tokens, 16);
	assert_float(c.p.sampling.temperature, 1);
	assert_false(c.p.sampling.has_seed);
	assert_int_equal(c.p.n_stop, 0);
	oai_completion_free(&c);

	assert_ok(parse_cmpl("{\"model\":\"m\",\"prompt\":\"p\",\"max_tokens\":5.0,"
			     "\"temperature\":0,\"stop\":\"###\",\"stop_token_ids\":[1]}",
			     &c));
	assert_int_equal(c.p.max_tokens, 5);
	assert_float(c.p.sampling.temperature, 0);
	assert_int_equal(c.p.n_stop, 1);
	assert_str(c.p.stop[0], "###");
	assert_int_equal(c.p.n_unknown, 1);
	assert_string_equal(c.p.unknown, "stop_token_ids");
	oai_completion_free(&c);
}

static void test_unknown_fields_recorded(void **state)
{
	struct oai_completion c;
	char body[2048];
	int n;

	n = snprintf(body, sizeof(body), "{\"model\":\"m\",\"prompt\":\"p\"");
	for (int i = 0; i < 30; i++)
		n += snprintf(body + n, sizeof(body) - (size_t)n, ",\"extra_field_%02d\":%d", i, i);
	snprintf(body + n, sizeof(body) - (size_t)n, "}");
	assert_ok(parse_cmpl(body, &c));
	assert_int_equal(c.p.n_unknown, 30);
	assert_true(strlen(c.p.unknown) < sizeof(c.p.unknown));
	assert_non_null(strstr(c.p.unknown, "extra_field_00,extra_field_01"));
	assert_non_null(strstr(c.p.unknown, "..."));
	oai_completion_free(&c);
}

static void test_max_tokens_cap(void **state)
{
	struct oai_limits l = lim;
	struct oai_completion c;
	const char *ok = "{\"model\":\"m\",\"prompt\":\"p\",\"max_tokens\":64}";
	const char *big = "{\"model\":\"m\",\"prompt\":\"p\",\"max_tokens\":65}";

	l.max_tokens_cap = 64;
	assert_ok(oai_parse_completion(ok, strlen(ok), &l, &c, &err));
	assert_int_equal(c.p.max_tokens, 64);
	oai_completion_free(&c);
	assert_int_equal(oai_parse_completion(big, strlen(big), &l, &c, &err), -EINVAL);
	assert_int_equal(err.http_status, 400);
	assert_string_equal(err.code, "BADPARAM");
	assert_string_equal(err.param, "max_tokens");
	assert_string_equal(err.message, "max_tokens: must be an integer in [1, 64], got 65");
	assert_null(c.arena.head);
}

static void test_chat_minimal(void **state)
{
	struct oai_chat c;

	assert_ok(parse_chat("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"Hi\"}]}",
			     &c));
	assert_str(c.p.model, "tiny");
	assert_int_equal(c.n_messages, 1);
	assert_int_equal(c.messages[0].role, OAI_ROLE_USER);
	assert_str(c.messages[0].content, "Hi");
	assert_int_equal(c.p.max_tokens, 16);
	assert_false(c.p.stream);
	oai_chat_free(&c);
	assert_null(c.messages);
}

static void test_chat_full(void **state)
{
	struct oai_chat c;

	assert_ok(parse_chat(
		"{\"model\":\"tiny\",\"messages\":["
		"{\"role\":\"system\",\"content\":\"Be brief.\"},"
		"{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"dev\"}]},"
		"{\"role\":\"user\",\"name\":\"bob\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
		"{\"type\":\"text\",\"text\":\"\"},{\"type\":\"text\",\"text\":\"bc\"}]},"
		"{\"role\":\"assistant\",\"content\":null},"
		"{\"role\":\"assistant\",\"content\":\"ok\",\"tool_calls\":[]},"
		"{\"role\":\"user\",\"content\":\"\u4f60\u597d\"}],"
		"\"max_tokens\":10,\"max_completion_tokens\":20,\"temperature\":2,\"top_p\":1,"
		"\"top_k\":0,\"min_p\":1,\"presence_penalty\":2,\"frequency_penalty\":-2,"
		"\"repetition_penalty\":10,\"seed\":9007199254740993,\"stop\":\"</s>\","
		"\"stream\":true,\"stream_options\":{\"include_usage\":false},"
		"\"logit_bias\":{\"3\":1},\"n\":1,\"logprobs\":false,\"tools\":[],"
		"\"tool_choice\":\"none\",\"response_format\":{\"type\":\"text\"},"
		"\"user\":\"u\",\"metadata\":{\"k\":\"v\"},\"chat_template_kwargs\":{}}",
		&c));
	assert_int_equal(c.n_messages, 6);
	assert_int_equal(c.messages[0].role, OAI_ROLE_SYSTEM);
	assert_str(c.messages[0].content, "Be brief.");
	assert_int_equal(c.messages[1].role, OAI_ROLE_SYSTEM);
	assert_str(c.messages[1].content, "dev");
	assert_int_equal(c.messages[2].role, OAI_ROLE_USER);
	assert_str(c.messages[2].content, "abc");
	assert_int_equal(c.messages[3].role, OAI_ROLE_ASSISTANT);
	assert_str(c.messages[3].content, "");
	assert_str(c.messages[4].content, "ok");
	assert_str(c.messages[5].content, "\xe4\xbd\xa0\xe5\xa5\xbd");
	assert_int_equal(c.p.max_tokens, 20);
	assert_float(c.p.sampling.temperature, 2);
	assert_float(c.p.sampling.top_p, 1);
	assert_float(c.p.sampling.min_p, 1);
	assert_float(c.p.sampling.presence_penalty, 2);
	assert_float(c.p.sampling.frequency_penalty, -2);
	assert_float(c.p.sampling.repetition_penalty, 10);
	assert_true(c.p.sampling.has_seed);
	assert_true(c.p.sampling.seed == 9007199254740993LL);
	assert_int_equal(c.p.n_stop, 1);
	assert_str(c.p.stop[0], "</s>");
	assert_true(c.p.stream);
	assert_false(c.p.include_usage);
	assert_int_equal(c.p.sampling.n_logit_bias, 1);
	assert_int_equal(c.p.sampling.logit_bias[0].token, 3);
	assert_int_equal(c.p.n_unknown, 1);
	assert_string_equal(c.p.unknown, "chat_template_kwargs");
	assert_string_equal(oai_role_name(c.messages[3].role), "assistant");
	assert_string_equal(oai_role_name(OAI_ROLE_SYSTEM), "system");
	oai_chat_free(&c);
}

static void test_tokenize_detokenize(void **state)
{
	struct oai_tokenize t;
	struct oai_detokenize d;
	const char *b1 = "{\"model\":\"tiny\",\"prompt\":\"Hello world\"}";
	const char *b2 = "{\"content\":\"x\",\"add_special\":false}";
	const char *b3 = "{\"model\":\"m\",\"prompt\":\"y\",\"add_special_tokens\":false}";
	const char *b4 = "{\"model\":\"tiny\",\"tokens\":[1,15043,3186]}";
	const char *b5 = "{\"tokens\":[]}";

	assert_ok(oai_parse_tokenize(b1, strlen(b1), &lim, &t, &err));
	assert_str(t.model, "tiny");
	assert_str(t.text, "Hello world");
	assert_true(t.add_special);
	oai_tokenize_free(&t);
	assert_ok(oai_parse_tokenize(b2, strlen(b2), &lim, &t, &err));
	assert_str(t.model, "");
	assert_str(t.text, "x");
	assert_false(t.add_special);
	oai_tokenize_free(&t);
	assert_ok(oai_parse_tokenize(b3, strlen(b3), &lim, &t, &err));
	assert_false(t.add_special);
	oai_tokenize_free(&t);

	assert_ok(oai_parse_detokenize(b4, strlen(b4), &lim, &d, &err));
	assert_str(d.model, "tiny");
	assert_int_equal(d.n_tokens, 3);
	assert_int_equal(d.tokens[0], 1);
	assert_int_equal(d.tokens[1], 15043);
	assert_int_equal(d.tokens[2], 3186);
	oai_detokenize_free(&d);
	assert_ok(oai_parse_detokenize(b5, strlen(b5), &lim, &d, &err));
	assert_int_equal(d.n_tokens, 0);
	assert_str(d.model, "");
	oai_detokenize_free(&d);
}

/* --- rejected requests: one table entry each ---------------------------------------------- */

enum which { CMPL, CHAT, TOK, DETOK };

struct bad {
	const char *name;
	enum which which;
	const char *body;
	int status;
	const char *code;
	const char *param;
	const char *needle; /* in the message */
};

#define M "{\"model\":\"m\","
#define P M "\"prompt\":\"p\","
#define U M "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"

static const struct bad bads[] = {
	/* syntax and shape */
	{ "syntax", CMPL, "{\"model\":\"m\",\n \"prompt\": tru}", 400, "BADJSON", "",
	  "line 2 column" },
	{ "trailing garbage", CMPL, "{\"model\":\"m\",\"prompt\":\"p\"} x", 400, "BADJSON", "",
	  "invalid JSON" },
	{ "empty body", CMPL, "", 400, "BADJSON", "", "invalid JSON" },
	{ "not object", CMPL, "[1,2]", 400, "BADTYPE", "",
	  "body: must be a JSON object, got array" },
	{ "duplicate key", CMPL, "{\"model\":\"m\",\"model\":\"n\",\"prompt\":\"p\"}", 400,
	  "BADJSON", "", "duplicate" },
	{ "bad utf8", CMPL, "{\"model\":\"m\",\"prompt\":\"\xff\"}", 400, "BADJSON", "",
	  "invalid JSON" },
	{ "nul in prompt", CMPL, "{\"model\":\"m\",\"prompt\":\"a\\u0000b\"}", 400, "BADPARAM",
	  "prompt", "prompt: must not contain NUL" },
	{ "nul in content part", CHAT,
	  M
	  "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"\\u0000\"}]}]}",
	  400, "BADPARAM", "messages[0].content[0].text", "NUL" },
	/* model */
	{ "missing model", CMPL, "{\"prompt\":\"p\"}", 400, "MISSING", "model",
	  "model: is required" },
	{ "null model", CHAT, "{\"model\":null,\"messages\":[]}", 400, "MISSING", "model",
	  "model: is required" },
	{ "model type", CMPL, "{\"model\":3,\"prompt\":\"p\"}", 400, "BADTYPE", "model",
	  "model: must be a string, got integer" },
	{ "empty model", CMPL, "{\"model\":\"\",\"prompt\":\"p\"}", 400, "BADPARAM", "model",
	  "model: must not be empty" },
	/* prompt */
	{ "missing prompt", CMPL, "{\"model\":\"m\"}", 400, "MISSING", "prompt",
	  "prompt: is required" },
	{ "prompt type", CMPL, M "\"prompt\":{}}", 400, "BADTYPE", "prompt",
	  "prompt: must be a string" },
	{ "empty token prompt", CMPL, M "\"prompt\":[]}", 400, "BADPARAM", "prompt",
	  "must not be an empty array" },
	{ "batched strings", CMPL, M "\"prompt\":[\"a\",\"b\"]}", 400, "UNSUPPORTED", "prompt",
	  "batched prompts not supported" },
	{ "batched tokens", CMPL, M "\"prompt\":[[1],[2]]}", 400, "UNSUPPORTED", "prompt",
	  "batched prompts not supported" },
	{ "negative token", CMPL, M "\"prompt\":[1,-1]}", 400, "BADPARAM", "prompt[1]",
	  "prompt[1]: must be an integer in [0, 2147483647], got -1" },
	{ "huge token", CMPL, M "\"prompt\":[2147483648]}", 400, "BADPARAM", "prompt[0]",
	  "got 2147483648" },
	{ "token type", CMPL, M "\"prompt\":[1,\"x\"]}", 400, "BADTYPE", "prompt[1]",
	  "got string" },
	{ "fractional token", CMPL, M "\"prompt\":[1.5]}", 400, "BADTYPE", "prompt[0]", "got 1.5" },
	/* numbers */
	{ "temperature high", CMPL, P "\"temperature\":3.5}", 400, "BADPARAM", "temperature",
	  "temperature: must be a number in [0, 2], got 3.5" },
	{ "temperature negative", CMPL, P "\"temperature\":-0.1}", 400, "BADPARAM", "temperature",
	  "got -0.1" },
	{ "temperature type", CMPL, P "\"temperature\":\"hot\"}", 400, "BADTYPE", "temperature",
	  "temperature: must be a number in [0, 2], got string" },
	{ "top_p zero", CMPL, P "\"top_p\":0}", 400, "BADPARAM", "top_p",
	  "top_p: must be a number in (0, 1], got 0" },
	{ "top_p high", CHAT, U "\"top_p\":1.01}", 400, "BADPARAM", "top_p", "got 1.01" },
	{ "top_k negative", CMPL, P "\"top_k\":-1}", 400, "BADPARAM", "top_k",
	  "top_k: must be an integer in [0, 2147483647], got -1" },
	{ "top_k real", CMPL, P "\"top_k\":2.5}", 400, "BADTYPE", "top_k", "got 2.5" },
	{ "min_p high", CMPL, P "\"min_p\":1.5}", 400, "BADPARAM", "min_p", "[0, 1]" },
	{ "presence_penalty", CMPL, P "\"presence_penalty\":2.5}", 400, "BADPARAM",
	  "presence_penalty", "[-2, 2], got 2.5" },
	{ "frequency_penalty", CHAT, U "\"frequency_penalty\":-3}", 400, "BADPARAM",
	  "frequency_penalty", "[-2, 2], got -3" },
	{ "repetition_penalty zero", CMPL, P "\"repetition_penalty\":0}", 400, "BADPARAM",
	  "repetition_penalty", "(0, 10], got 0" },
	{ "repetition_penalty high", CMPL, P "\"repetition_penalty\":10.5}", 400, "BADPARAM",
	  "repetition_penalty", "got 10.5" },
	{ "seed type", CMPL, P "\"seed\":\"1\"}", 400, "BADTYPE", "seed",
	  "seed: must be an integer, got string" },
	{ "seed overflow", CMPL, P "\"seed\":1e300}", 400, "BADTYPE", "seed", "got 1e+300" },
	{ "max_tokens zero", CMPL, P "\"max_tokens\":0}", 400, "BADPARAM", "max_tokens",
	  "max_tokens: must be an integer in [1, 2147483647], got 0" },
	{ "max_tokens type", CMPL, P "\"max_tokens\":\"5\"}", 400, "BADTYPE", "max_tokens",
	  "got string" },
	{ "max_completion_tokens", CHAT, U "\"max_completion_tokens\":-5}", 400, "BADPARAM",
	  "max_completion_tokens", "got -5" },
	{ "integer overflow", CMPL, P "\"max_tokens\":99999999999999999999999}", 400, "BADJSON", "",
	  "too big" },
	/* booleans and objects */
	{ "stream type", CMPL, P "\"stream\":1}", 400, "BADTYPE", "stream",
	  "stream: must be a boolean, got integer" },
	{ "stream_options type", CMPL, P "\"stream_options\":true}", 400, "BADTYPE",
	  "stream_options", "must be an object" },
	{ "include_usage type", CHAT, U "\"stream_options\":{\"include_usage\":\"yes\"}}", 400,
	  "BADTYPE", "stream_options.include_usage", "must be a boolean, got string" },
	/* stop */
	{ "too many stops", CMPL, P "\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "BADPARAM",
	  "stop", "stop: at most 4 strings, got 5" },
	{ "stop element type", CMPL, P "\"stop\":[\"a\",1]}", 400, "BADTYPE", "stop[1]",
	  "stop[1]: must be a string, got integer" },
	{ "stop empty", CMPL, P "\"stop\":\"\"}", 400, "BADPARAM", "stop", "empty" },
	{ "stop type", CHAT, U "\"stop\":{}}", 400, "BADTYPE", "stop", "got object" },
	/* logit_bias */
	{ "logit_bias key", CMPL, P "\"logit_bias\":{\"abc\":1}}", 400, "BADPARAM", "logit_bias",
	  "key \"abc\" is not a token id" },
	{ "logit_bias negative key", CMPL, P "\"logit_bias\":{\"-1\":1}}", 400, "BADPARAM",
	  "logit_bias", "is not a token id" },
	{ "logit_bias big key", CMPL, P "\"logit_bias\":{\"4294967296\":1}}", 400, "BADPARAM",
	  "logit_bias", "out of range" },
	{ "logit_bias value", CMPL, P "\"logit_bias\":{\"5\":101}}", 400, "BADPARAM", "logit_bias",
	  "value for token 5 must be a number in [-100, 100], got 101" },
	{ "logit_bias value type", CMPL, P "\"logit_bias\":{\"5\":\"x\"}}", 400, "BADTYPE",
	  "logit_bias", "got string" },
	{ "logit_bias dup", CMPL, P "\"logit_bias\":{\"5\":1,\"05\":2}}", 400, "BADPARAM",
	  "logit_bias", "token 5 appears twice" },
	{ "logit_bias type", CMPL, P "\"logit_bias\":[1]}", 400, "BADTYPE", "logit_bias",
	  "got array" },
	/* unsupported OpenAI features */
	{ "n over max_n", CMPL, P "\"n\":5}", 400, "BADPARAM", "n", "at most 4, got 5" },
	{ "n huge", CHAT, U "\"n\":99999999999}", 400, "BADPARAM", "n", "at most 4" },
	{ "n=0", CHAT, U "\"n\":0}", 400, "BADPARAM", "n", "got 0" },
	{ "echo", CMPL, P "\"echo\":true}", 400, "UNSUPPORTED", "echo", "not supported" },
	{ "echo type", CMPL, P "\"echo\":1}", 400, "BADTYPE", "echo", "must be a boolean" },
	{ "logprobs over max", CMPL, P "\"logprobs\":6}", 400, "BADPARAM", "logprobs",
	  "must be in [0, 5], got 6" },
	{ "logprobs negative", CMPL, P "\"logprobs\":-1}", 400, "BADPARAM", "logprobs", "got -1" },
	{ "logprobs type", CMPL, P "\"logprobs\":true}", 400, "BADTYPE", "logprobs", "integer" },
	{ "best_of", CMPL, P "\"best_of\":3}", 400, "UNSUPPORTED", "best_of", "got 3" },
	{ "suffix", CMPL, P "\"suffix\":\"end\"}", 400, "UNSUPPORTED", "suffix", "not supported" },
	{ "chat logprobs type", CHAT, U "\"logprobs\":3}", 400, "BADTYPE", "logprobs", "boolean" },
	{ "chat top_logprobs alone", CHAT, U "\"top_logprobs\":2}", 400, "BADPARAM", "top_logprobs",
	  "needs \"logprobs\": true" },
	{ "chat top_logprobs over max", CHAT, U "\"logprobs\":true,\"top_logprobs\":21}", 400,
	  "BADPARAM", "top_logprobs", "must be in [0, 5], got 21" },
	{ "tools", CHAT, U "\"tools\":[{\"type\":\"function\"}]}", 400, "UNSUPPORTED", "tools",
	  "tool calling" },
	{ "response_format json", CHAT, U "\"response_format\":{\"type\":\"json_object\"}}", 400,
	  "UNSUPPORTED", "response_format", "text" },
	{ "user too long", CMPL,
	  P "\"user\":\"0123456789012345678901234567890123456789012345678901234567890123"
	    "0123456789012345678901234567890123456789012345678901234567890123"
	    "0123456789012345678901234567890123456789012345678901234567890123"
	    "0123456789012345678901234567890123456789012345678901234567890123x\"}",
	  400, "BADPARAM", "user", "at most 256 bytes, got 257" },
	{ "user type", CMPL, P "\"user\":5}", 400, "BADTYPE", "user", "got integer" },
	/* messages */
	{ "missing messages", CHAT, "{\"model\":\"m\"}", 400, "MISSING", "messages",
	  "messages: is required" },
	{ "empty messages", CHAT, M "\"messages\":[]}", 400, "BADPARAM", "messages",
	  "messages: must not be empty" },
	{ "messages type", CHAT, M "\"messages\":\"hi\"}", 400, "BADTYPE", "messages",
	  "got string" },
	{ "message type", CHAT, M "\"messages\":[\"hi\"]}", 400, "BADTYPE", "messages[0]",
	  "must be an object, got string" },
	{ "bad role", CHAT, M "\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400,
	  "BADPARAM", "messages[0].role", "got \"wizard\"" },
	{ "missing role", CHAT,
	  M "\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"content\":\"x\"}]}", 400,
	  "MISSING", "messages[1].role", "messages[1].role: is required" },
	{ "role type", CHAT, M "\"messages\":[{\"role\":1,\"content\":\"x\"}]}", 400, "BADTYPE",
	  "messages[0].role", "got integer" },
	{ "tool role", CHAT, M "\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400,
	  "UNSUPPORTED", "messages[0].role", "\"tool\" messages are not supported" },
	{ "tool_calls", CHAT,
	  M "\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"1\"}]}]}", 400,
	  "UNSUPPORTED", "messages[0].tool_calls", "not supported" },
	{ "missing content", CHAT, M "\"messages\":[{\"role\":\"user\"}]}", 400, "MISSING",
	  "messages[0].content", "messages[0].content: is required" },
	{ "content type", CHAT, M "\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400,
	  "BADTYPE", "messages[0].content", "got integer" },
	{ "image part", CHAT,
	  M "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
	    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}}]}]}",
	  400, "UNSUPPORTED", "messages[0].content[1].type", "image parts are not supported" },
	{ "audio part", CHAT,
	  M "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}", 400,
	  "UNSUPPORTED", "messages[0].content[0].type", "not supported" },
	{ "unknown part", CHAT,
	  M "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"blob\"}]}]}", 400,
	  "BADPARAM", "messages[0].content[0].type", "got \"blob\"" },
	{ "part type missing", CHAT,
	  M "\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}", 400, "MISSING",
	  "messages[0].content[0].type", "is required" },
	{ "part not object", CHAT, M "\"messages\":[{\"role\":\"user\",\"content\":[\"a\"]}]}", 400,
	  "BADTYPE", "messages[0].content[0]", "must be an object" },
	{ "part text missing", CHAT,
	  M "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", 400, "MISSING",
	  "messages[0].content[0].text", "is required" },
	{ "part text type", CHAT,
	  M "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":[]}]}]}",
	  400, "BADTYPE", "messages[0].content[0].text", "got array" },
	/* tokenize / detokenize */
	{ "tokenize missing", TOK, "{\"model\":\"m\"}", 400, "MISSING", "prompt", "is required" },
	{ "tokenize both", TOK, "{\"prompt\":\"a\",\"content\":\"b\"}", 400, "BADPARAM", "content",
	  "not both" },
	{ "tokenize type", TOK, "{\"content\":[1]}", 400, "BADTYPE", "content", "got array" },
	{ "tokenize add_special", TOK, "{\"prompt\":\"a\",\"add_special\":\"yes\"}", 400, "BADTYPE",
	  "add_special", "must be a boolean" },
	{ "detokenize missing", DETOK, "{\"model\":\"m\"}", 400, "MISSING", "tokens",
	  "tokens: is required" },
	{ "detokenize type", DETOK, "{\"tokens\":\"1 2\"}", 400, "BADTYPE", "tokens",
	  "got string" },
	{ "detokenize element", DETOK, "{\"tokens\":[1,null]}", 400, "BADTYPE", "tokens[1]",
	  "got null" },
	{ "detokenize model type", DETOK, "{\"model\":[],\"tokens\":[]}", 400, "BADTYPE", "model",
	  "got array" },
};

/* Parse body as `which`; returns rc and frees whatever was parsed. */
static int parse_any(enum which which, const char *body, size_t len, const struct oai_limits *l,
		     struct oai_error *e)
{
	union {
		struct oai_completion c;
		struct oai_chat ch;
		struct oai_tokenize t;
		struct oai_detokenize d;
	} u;
	int rc;

	switch (which) {
	case CMPL:
		rc = oai_parse_completion(body, len, l, &u.c, e);
		if (rc)
			assert_null(u.c.arena.head);
		oai_completion_free(&u.c);
		return rc;
	case CHAT:
		rc = oai_parse_chat(body, len, l, &u.ch, e);
		if (rc)
			assert_null(u.ch.arena.head);
		oai_chat_free(&u.ch);
		return rc;
	case TOK:
		rc = oai_parse_tokenize(body, len, l, &u.t, e);
		if (rc)
			assert_null(u.t.arena.head);
		oai_tokenize_free(&u.t);
		return rc;
	case DETOK:
		rc = oai_parse_detokenize(body, len, l, &u.d, e);
		if (rc)
			assert_null(u.d.arena.head);
		oai_detokenize_free(&u.d);
		return rc;
	}
	return -1;
}

static void test_bad(void **state)
{
	const struct bad *b = *state;
	int rc;

	memset(&err, 0, sizeof(err));
	rc = parse_any(b->which, b->body, strlen(b->body), &lim, &err);
	if (rc != -EINVAL || err.http_status != b->status || strcmp(err.code, b->code) ||
	    strcmp(err.param, b->param) || !strstr(err.message, b->needle))
		fail_msg("%s: rc %d status %d code %s param '%s' message '%s'; expected %d %s "
			 "'%s' with '%s'",
			 b->name, rc, err.http_status, err.code, err.param, err.message, b->status,
			 b->code, b->param, b->needle);
	assert_string_equal(err.type, "invalid_request_error");
	/* The message names the field it is about. */
	if (b->param[0])
		assert_true(strncmp(err.message, b->param, strlen(b->param)) == 0);
}

/* --- limits, bombs, allocation failures, fuzz ---------------------------------------------- */

static void test_body_too_big(void **state)
{
	struct oai_limits l = lim;
	const char *body = "{\"model\":\"m\",\"prompt\":\"0123456789\"}";

	l.max_body = strlen(body) - 1;
	assert_int_equal(parse_any(CMPL, body, strlen(body), &l, &err), -EINVAL);
	assert_int_equal(err.http_status, 413);
	assert_string_equal(err.code, "TOOBIG");
	assert_string_equal(err.param, "");
	assert_non_null(strstr(err.message, "over the limit"));
	l.max_body = strlen(body);
	assert_int_equal(parse_any(CMPL, body, strlen(body), &l, &err), 0);
	l.max_body = 0; /* no limit */
	assert_int_equal(parse_any(CMPL, body, strlen(body), &l, &err), 0);
}

static void test_nesting_bombs(void **state)
{
	enum { N = 10000 };
	char *b = malloc(6 * N + 64); /* N/2 openers of up to 5 bytes */
	const char *opens[] = { "[", "{\"a\":" };

	assert_non_null(b);
	for (int k = 0; k < 2; k++) {
		size_t n = 0;

		n += (size_t)sprintf(b, "{\"model\":\"m\",\"prompt\":");
		for (int i = 0; i < N / 2; i++)
			n += (size_t)sprintf(b + n, "%s", opens[k]);
		b[n] = '\0';
		for (enum which w = CMPL; w <= DETOK; w++) {
			assert_int_equal(parse_any(w, b, n, &lim, &err), -EINVAL);
			assert_string_equal(err.code, "BADJSON");
			assert_non_null(strstr(err.message, "nested deeper"));
		}
	}
	/* Closed properly, it is still too deep. */
	memset(b, '[', N);
	memset(b + N, ']', N);
	assert_int_equal(parse_any(CHAT, b, 2 * N, &lim, &err), -EINVAL);
	assert_string_equal(err.code, "BADJSON");
	/* Brackets inside strings do not count. */
	{
		char body[256];

		snprintf(
			body, sizeof(body),
			"{\"model\":\"m\",\"prompt\":\"%s\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}",
			"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[");
		assert_int_equal(parse_any(CMPL, body, strlen(body), &lim, &err), 0);
	}
	free(b);
}

/* Allocation N fails, for every N, until the parse succeeds: -ENOMEM, NOMEM, nothing leaked. */
static void test_alloc_failures(void **state)
{
	const char *body =
		"{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
		"{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]},"
		"{\"role\":\"assistant\"}],\"stop\":[\"x\",\"y\"],\"logit_bias\":{\"1\":1}}";
	const char *cbody = "{\"model\":\"m\",\"prompt\":[1,2,3],\"stop\":\"s\"}";
	unsigned long n;
	int rc;

	for (n = 1; n < 100; n++) {
		duet_mem_fail_at(n);
		rc = parse_any(CHAT, body, strlen(body), &lim, &err);
		duet_mem_fail_at(0);
		if (!rc)
			break;
		assert_int_equal(rc, -ENOMEM);
		assert_int_equal(err.http_status, 500);
		assert_string_equal(err.code, "NOMEM");
		assert_string_equal(err.type, "server_error");
	}
	assert_true(n > 5 && n < 100);
	for (n = 1; n < 100; n++) {
		duet_mem_fail_at(n);
		rc = parse_any(CMPL, cbody, strlen(cbody), &lim, &err);
		duet_mem_fail_at(0);
		if (!rc)
			break;
		assert_int_equal(rc, -ENOMEM);
	}
	assert_true(n > 2 && n < 100);

	/* Writers: -ENOMEM, and the buffer is still usable after a reset. */
	{
		struct oai_buf b = { 0 };
		struct oai_meta m = { .kind = OAI_KIND_CHAT, .id = "chatcmpl-1", .model = "m" };
		struct oai_usage u = { .prompt_tokens = 1, .completion_tokens = 2 };

		duet_mem_fail_at(1);
		assert_int_equal(oai_write_response(&b, &m, "hello", 5, OAI_FINISH_STOP, &u),
				 -ENOMEM);
		duet_mem_fail_at(0);
		oai_buf_reset(&b);
		assert_int_equal(oai_write_response(&b, &m, "hello", 5, OAI_FINISH_STOP, &u), 0);
		oai_buf_free(&b);
	}
}

static const char *const seeds[] = {
	"{\"model\":\"tiny\",\"prompt\":\"Once upon\",\"max_tokens\":100,\"temperature\":0.7,"
	"\"top_p\":0.9,\"top_k\":40,\"stop\":[\"\\n\",\"END\"],\"stream\":true,"
	"\"stream_options\":{\"include_usage\":true},\"logit_bias\":{\"50256\":-100},\"seed\":1}",
	"{\"model\":\"tiny\",\"prompt\":[[1,2,3]],\"n\":1,\"echo\":false}",
	"{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
	"{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
	"\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null}],\"max_completion_tokens\":5,"
	"\"stop\":\"x\",\"min_p\":0.1,\"repetition_penalty\":1.1}",
	"{\"model\":\"tiny\",\"prompt\":\"Hello\",\"add_special\":false}",
	"{\"model\":\"tiny\",\"tokens\":[1,2,3,4]}",
};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void test_fuzz_mutations(void **state)
{
	static const char interesting[] = "{}[]\",:\\0123456789-.eE \ttrnulfase\x00\xff\xc3";
	static const char *const tokens[] = { "null",	     "true",	    "1e999",
					      "-0",	     "[",	    "{",
					      "\"\\u0000\"", "\"\\ud800\"", "99999999999999999999",
					      "\"x\"" };
	enum { ITER = 20000, CAP = 1024 };
	char buf[CAP];
	unsigned ok = 0;

	for (int it = 0; it < ITER; it++) {
		const char *seed = seeds[rnd() % (sizeof(seeds) / sizeof(seeds[0]))];
		size_t len = strlen(seed);
		int muts = 1 + (int)(rnd() % 4);

		memcpy(buf, seed, len);
		for (int m = 0; m < muts && len > 0; m++) {
			size_t pos = rnd() % len;

			switch (rnd() % 5) {
			case 0: /* flip a byte */
				buf[pos] = (char)rnd();
				break;
			case 1: /* interesting byte */
				buf[pos] = interesting[rnd() % (sizeof(interesting) - 1)];
				break;
			case 2: /* delete a run */
			{
				size_t n = 1 + rnd() % 8;

				if (pos + n > len)
					n = len - pos;
				memmove(buf + pos, buf + pos + n, len - pos - n);
				len -= n;
				break;
			}
			case 3: /* insert a token */
			{
				const char *t =
					tokens[rnd() % (sizeof(tokens) / sizeof(tokens[0]))];
				size_t n = strlen(t);

				if (len + n > CAP)
					break;
				memmove(buf + pos + n, buf + pos, len - pos);
				memcpy(buf + pos, t, n);
				len += n;
				break;
			}
			default: /* truncate */
				len = pos;
			}
		}
		for (enum which w = CMPL; w <= DETOK; w++) {
			struct oai_error e;
			int rc = parse_any(w, buf, len, &lim, &e);

			if (rc == 0) {
				ok++;
				continue;
			}
			assert_int_equal(rc, -EINVAL);
			assert_true(e.http_status == 400);
			assert_true(e.code[0] >= 'A' && e.code[0] <= 'Z');
			assert_true(strlen(e.message) > 0);
		}
	}
	/* Some mutations stay valid: the loop reaches past the syntax check. */
	assert_true(ok > 0);
}

/* --- serializers --------------------------------------------------------------------------- */

static json_t *load_json(const char *s)
{
	json_error_t je;
	json_t *j = json_loads(s, 0, &je);

	if (!j)
		fail_msg("not JSON (%s at %d:%d): %s", je.text, je.line, je.column, s);
	return j;
}

static const char *jstr(json_t *j, const char *path)
{
	json_t *v = json_object_get(j, path);

	assert_true(json_is_string(v));
	return json_string_value(v);
}

static void test_write_completion_response(void **state)
{
	struct oai_buf b = { 0 };
	struct oai_meta m = { .kind = OAI_KIND_COMPLETION, .model = "tiny", .created = 1700000000 };
	struct oai_usage u = { .prompt_tokens = 5, .completion_tokens = 7 };
	char id[32];
	json_t *j, *ch, *us;

	m.id = oai_format_id(id, sizeof(id), OAI_KIND_COMPLETION, 0xabc);
	assert_string_equal(id, "cmpl-0000000000000abc");
	assert_int_equal(oai_write_response(&b, &m, "Hi \"there\"\n", 11, OAI_FINISH_LENGTH, &u),
			 0);
	assert_int_equal(strlen(b.data), b.len);
	j = load_json(b.data);
	assert_string_equal(jstr(j, "id"), "cmpl-0000000000000abc");
	assert_string_equal(jstr(j, "object"), "text_completion");
	assert_int_equal(json_integer_value(json_object_get(j, "created")), 1700000000);
	assert_string_equal(jstr(j, "model"), "tiny");
	ch = json_array_get(json_object_get(j, "choices"), 0);
	assert_int_equal(json_array_size(json_object_get(j, "choices")), 1);
	assert_string_equal(jstr(ch, "text"), "Hi \"there\"\n");
	assert_int_equal(json_integer_value(json_object_get(ch, "index")), 0);
	assert_true(json_is_null(json_object_get(ch, "logprobs")));
	assert_string_equal(jstr(ch, "finish_reason"), "length");
	us = json_object_get(j, "usage");
	assert_int_equal(json_integer_value(json_object_get(us, "prompt_tokens")), 5);
	assert_int_equal(json_integer_value(json_object_get(us, "completion_tokens")), 7);
	assert_int_equal(json_integer_value(json_object_get(us, "total_tokens")), 12);
	json_decref(j);
	oai_buf_free(&b);
}

static void test_write_chat_response(void **state)
{
	struct oai_buf b = { 0 };
	struct oai_meta m = { .kind = OAI_KIND_CHAT, .model = "tiny", .created = 1 };
	struct oai_usage u = { .prompt_tokens = 3, .completion_tokens = 4 };
	char id[32];
	json_t *j, *ch, *msg;

	m.id = oai_format_id(id, sizeof(id), OAI_KIND_CHAT, 1);
	assert_string_equal(id, "chatcmpl-0000000000000001");
	assert_int_equal(
		oai_write_response(&b, &m, "\xe4\xbd\xa0\xe5\xa5\xbd", 6, OAI_FINISH_STOP, &u), 0);
	j = load_json(b.data);
	assert_string_equal(jstr(j, "object"), "chat.completion");
	assert_string_equal(jstr(j, "id"), id);
	ch = json_array_get(json_object_get(j, "choices"), 0);
	assert_int_equal(json_integer_value(json_object_get(ch, "index")), 0);
	assert_string_equal(jstr(ch, "finish_reason"), "stop");
	msg = json_object_get(ch, "message");
	assert_string_equal(jstr(msg, "role"), "assistant");
	assert_string_equal(jstr(msg, "content"), "\xe4\xbd\xa0\xe5\xa5\xbd");
	assert_int_equal(
		json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")),
		7);
	json_decref(j);
	oai_buf_free(&b);
}

static void test_sse_completion_exact(void **state)
{
	struct oai_buf b = { 0 };
	struct oai_meta m = {
		.kind = OAI_KIND_COMPLETION, .id = "cmpl-1", .model = "tiny", .created = 42
	};
	struct oai_usage u = { .prompt_tokens = 2, .completion_tokens = 3 };

	assert_int_equal(oai_sse_role(&b, &m), 0);
	assert_int_equal(b.len, 0);
	assert_int_equal(oai_sse_text(&b, &m, "He", 2), 0);
	assert_string_equal(b.data,
			    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\","
			    "\"created\":42,\"model\":\"tiny\",\"choices\":[{\"text\":\"He\","
			    "\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n");
	oai_buf_reset(&b);
	assert_int_equal(oai_sse_finish(&b, &m, OAI_FINISH_LENGTH), 0);
	assert_string_equal(b.data, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\","
				    "\"created\":42,\"model\":\"tiny\",\"choices\":[{\"text\":\"\","
				    "\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}"
				    "\n\n");
	oai_buf_reset(&b);
	assert_int_equal(oai_sse_usage(&b, &m, &u), 0);
	assert_string_equal(b.data,
			    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\","
			    "\"created\":42,\"model\":\"tiny\",\"choices\":[],\"usage\":"
			    "{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5,"
			    "\"prompt_tokens_details\":{\"cached_tokens\":0}}}"
			    "\n\n");
	oai_buf_reset(&b);
	assert_int_equal(oai_sse_done(&b), 0);
	assert_string_equal(b.data, "data: [DONE]\n\n");
	assert_int_equal(b.len, 14);
	oai_buf_free(&b);
}

/* Duet's "timings": after "usage", one object per choice, null for unknown times. */
static void test_write_timings(void **state)
{
	struct oai_buf b = { 0 };
	struct oai_meta m = {
		.kind = OAI_KIND_COMPLETION, .id = "cmpl-2", .model = "tiny", .created = 9
	};
	struct oai_timing t[2] = {
		{ .queue_ms = 1.5,
		  .prefill_ms = 20,
		  .transfer_ms = 0.25,
		  .decode_ms = 300.125,
		  .ttft_ms = 22,
		  .tpot_ms = 7.5,
		  .partition = "dec",
		  .prefill_partition = "pre" },
		{ .queue_ms = 0,
		  .prefill_ms = 3,
		  .transfer_ms = -1,
		  .decode_ms = NAN,
		  .ttft_ms = 4,
		  .tpot_ms = -1,
		  .partition = "mix" },
	};
	struct oai_usage u = {
		.prompt_tokens = 2, .completion_tokens = 3, .timings = t, .n_timings = 2
	};
	json_t *j, *ts;
	json_error_t jerr;

	(void)state;
	assert_int_equal(oai_sse_usage(&b, &m, &u), 0);
	assert_string_equal(b.data,
			    "data: {\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":9,"
			    "\"model\":\"tiny\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,"
			    "\"completion_tokens\":3,\"total_tokens\":5,\"prompt_tokens_details\":"
			    "{\"cached_tokens\":0}},\"timings\":[{\"index\":0,\"queue_ms\":1.500,"
			    "\"prefill_ms\":20.000,\"transfer_ms\":0.250,\"decode_ms\":300.125,"
			    "\"ttft_ms\":22.000,\"tpot_ms\":7.500,\"partition\":\"dec\","
			    "\"prefill_partition\":\"pre\"},{\"index\":1,\"queue_ms\":0.000,"
			    "\"prefill_ms\":3.000,\"transfer_ms\":null,\"decode_ms\":null,"
			    "\"ttft_ms\":4.000,\"tpot_ms\":null,\"partition\":\"mix\"}]}\n\n");
	oai_buf_reset(&b);
	/* In a whole answer too, and the body stays valid JSON. */
	assert_int_equal(oai_write_response(&b, &m, "hi", 2, OAI_FINISH_STOP, &u), 0);
	j = json_loadb(b.data, b.len, 0, &jerr);
	assert_non_null(j);
	ts = json_object_get(j, "timings");
	assert_int_equal(json_array_size(ts), 2);
	assert_true(json_real_value(json_object_get(json_array_get(ts, 0), "decode_ms")) ==
		    300.125);
	assert_true(json_is_null(json_object_get(json_array_get(ts, 1), "transfer_ms")));
	json_decref(j);
	oai_buf_free(&b);
}

static void test_sse_chat_exact(void **state)
{
	struct oai_buf b = { 0 };
	struct oai_meta m = { .kind = OAI_KIND_CHAT,
			      .id = "chatcmpl-9",
			      .model = "tiny",
			      .created = 7,
			      .include_usage = true };
	const char *head = "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\","
			   "\"created\":7,\"model\":\"tiny\",";
	char expect[512];
	size_t cap;

	/* A whole stream appended into one buffer. */
	assert_int_equal(oai_sse_role(&b, &m), 0);
	assert_int_equal(oai_sse_text(&b, &m, "Hel", 3), 0);
	assert_int_equal(oai_sse_text(&b, &m, "lo", 2), 0);
	assert_int_equal(oai_sse_finish(&b, &m, OAI_FINISH_STOP), 0);
	assert_int_equal(
		oai_sse_usage(&b, &m,
			      &(struct oai_usage){ .prompt_tokens = 4, .completion_tokens = 2 }),
		0);
	assert_int_equal(oai_sse_done(&b), 0);
	snprintf(expect, sizeof(expect),
		 "%s\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
		 "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
		 "%s\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
		 "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
		 head, head);
	assert_memory_equal(b.data, expect, strlen(expect));
	{
		const char *p = b.data + strlen(expect);
		char e2[1024];

		snprintf(e2, sizeof(e2),
			 "%s\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},"
			 "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
			 "%s\"choices\":[{\"index\":0,\"delta\":{},"
			 "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
			 "%s\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,"
			 "\"total_tokens\":6,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n"
			 "data: [DONE]\n\n",
			 head, head, head);
		assert_string_equal(p, e2);
	}
	/* Every frame's JSON parses. */
	{
		char *copy = strdup(b.data), *save = NULL;
		int frames = 0;

		for (char *f = strtok_r(copy, "\n", &save); f; f = strtok_r(NULL, "\n", &save)) {
			assert_true(strncmp(f, "data: ", 6) == 0);
			frames++;
			if (strcmp(f + 6, "[DONE]"))
				json_decref(load_json(f + 6));
		}
		assert_int_equal(frames, 6);
		free(copy);
	}
	/* Reuse: after a reset the same chunk needs no new memory. */
	cap = b.cap;
	oai_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	duet_mem_fail_at(1);
	assert_int_equal(oai_sse_text(&b, &m, "lo", 2), 0);
	duet_mem_fail_at(0);
	assert_int_equal(b.cap, cap);
	oai_buf_free(&b);
	assert_null(b.data);
}

/* n, logprobs and top_logprobs as parsed. */
static void test_n_and_logprobs_parsed(void **state)
{
	struct oai_completion c;
	struct oai_chat ch;

	(void)state;
	assert_int_equal(parse_cmpl("{\"model\":\"m\",\"prompt\":\"x\"}", &c), 0);
	assert_int_equal(c.p.n, 1);
	assert_false(c.p.logprobs);
	oai_completion_free(&c);
	assert_int_equal(parse_cmpl("{\"model\":\"m\",\"prompt\":\"x\",\"n\":4,\"logprobs\":3}", &c),
			 0);
	assert_int_equal(c.p.n, 4);
	assert_true(c.p.logprobs);
	assert_int_equal(c.p.top_logprobs, 3);
	oai_completion_free(&c);
	assert_int_equal(parse_cmpl("{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":0}", &c), 0);
	assert_true(c.p.logprobs);
	assert_int_equal(c.p.top_logprobs, 0);
	oai_completion_free(&c);
	assert_int_equal(parse_cmpl("{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":null}", &c), 0);
	assert_false(c.p.logprobs);
	oai_completion_free(&c);
	assert_int_equal(parse_chat("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
				    "\"hi\"}],\"n\":2,\"logprobs\":true,\"top_logprobs\":5}",
				    &ch),
			 0);
	assert_int_equal(ch.p.n, 2);
	assert_true(ch.p.logprobs);
	assert_int_equal(ch.p.top_logprobs, 5);
	oai_chat_free(&ch);
}

static size_t piece_of(void *ctx, int32_t token, char *buf, size_t cap)
{
	(void)ctx;
	return (size_t)snprintf(buf, cap, "<%d>", (int)token);
}

/* Two choices with logprobs, in both dialects, checked field by field. */
static void test_write_choices_logprobs(void **state)
{
	struct oai_buf b = { 0 };
	struct oai_meta m = { .kind = OAI_KIND_CHAT, .id = "chatcmpl-1", .model = "tiny", .created = 1 };
	struct oai_usage u = { .prompt_tokens = 3, .completion_tokens = 4, .cached_tokens = 2 };
	struct oai_logprob lp[2] = {
		{ .token = 7, .logprob = -0.5f, .n_top = 2, .top = { { 7, -0.5f }, { 9, -1.25f } } },
		{ .token = 8, .logprob = -INFINITY, .n_top = 0 },
	};
	struct oai_choice c[2] = {
		{ .index = 0, .text = "<7><8>", .len = 6, .finish = OAI_FINISH_LENGTH, .lp = lp,
		  .n_lp = 2, .piece = piece_of },
		{ .index = 1, .text = "ab", .len = 2, .finish = OAI_FINISH_STOP },
	};
	json_t *j, *ch, *content, *e, *top, *cl;

	(void)state;
	assert_int_equal(oai_write_choices(&b, &m, c, 2, &u), 0);
	j = load_json(b.data);
	ch = json_object_get(j, "choices");
	assert_int_equal(json_array_size(ch), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(ch, 1), "index")), 1);
	assert_true(json_is_null(json_object_get(json_array_get(ch, 1), "logprobs")));
	content = json_object_get(json_object_get(json_array_get(ch, 0), "logprobs"), "content");
	assert_int_equal(json_array_size(content), 2);
	e = json_array_get(content, 0);
	assert_string_equal(jstr(e, "token"), "<7>");
	assert_true(fabs(json_real_value(json_object_get(e, "logprob")) + 0.5) < 1e-6);
	assert_int_equal(json_array_size(json_object_get(e, "bytes")), 3);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(e, "bytes"), 0)), '<');
	top = json_object_get(e, "top_logprobs");
	assert_int_equal(json_array_size(top), 2);
	assert_string_equal(jstr(json_array_get(top, 1), "token"), "<9>");
	assert_true(fabs(json_real_value(json_object_get(json_array_get(top, 1), "logprob")) + 1.25) <
		    1e-6);
	/* -inf is not JSON: the most negative float stands for it. */
	assert_true(json_real_value(json_object_get(json_array_get(content, 1), "logprob")) < -1e38);
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(json_object_get(j, "usage"), "prompt_tokens_details"),
				 "cached_tokens")),
			 2);
	json_decref(j);

	/* Completions: tokens, token_logprobs, top_logprobs maps, text_offset. */
	m.kind = OAI_KIND_COMPLETION;
	c[0].text_offset = 10;
	oai_buf_reset(&b);
	assert_int_equal(oai_write_choices(&b, &m, c, 1, &u), 0);
	j = load_json(b.data);
	cl = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs");
	assert_string_equal(json_string_value(json_array_get(json_object_get(cl, "tokens"), 1)), "<8>");
	assert_true(fabs(json_real_value(json_array_get(json_object_get(cl, "token_logprobs"), 0)) +
			 0.5) < 1e-6);
	top = json_array_get(json_object_get(cl, "top_logprobs"), 0);
	assert_true(fabs(json_real_value(json_object_get(top, "<9>")) + 1.25) < 1e-6);
	assert_int_equal(json_object_size(json_array_get(json_object_get(cl, "top_logprobs"), 1)), 0);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(cl, "text_offset"), 0)), 10);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(cl, "text_offset"), 1)), 13);
	json_decref(j);

	/* A stream chunk of choice 3 carries its index and logprobs; the finish chunk none. */
	m.kind = OAI_KIND_CHAT;
	c[0].index = 3;
	oai_buf_reset(&b);
	assert_int_equal(oai_sse_choice(&b, &m, &c[0], false), 0);
	assert_true(strncmp(b.data, "data: ", 6) == 0);
	j = load_json(b.data + 6);
	e = json_array_get(json_object_get(j, "choices"), 0);
	assert_int_equal(json_integer_value(json_object_get(e, "index")), 3);
	assert_string_equal(jstr(json_object_get(e, "delta"), "content"), "<7><8>");
	assert_int_equal(json_array_size(json_object_get(json_object_get(e, "logprobs"), "content")), 2);
	json_decref(j);
	oai_buf_reset(&b);
	c[0].lp = NULL;
	assert_int_equal(oai_sse_choice(&b, &m, &c[0], true), 0);
	j = load_json(b.data + 6);
	e = json_array_get(json_object_get(j, "choices"), 0);
	assert_string_equal(jstr(e, "finish_reason"), "length");
	assert_int_equal(json_object_size(json_object_get(e, "delta")), 0);
	json_decref(j);
	oai_buf_free(&b);
}

static void test_write_error(void **state)
{
	struct oai_buf b = { 0 };
	struct oai_error e;
	json_t *j, *o;

	assert_int_equal(parse_cmpl("{\"model\":\"m\",\"prompt\":\"p\",\"temperature\":3.5}",
				    &(struct oai_completion){ 0 }),
			 -EINVAL);
	assert_int_equal(oai_write_error(&b, &err), 0);
	j = load_json(b.data);
	o = json_object_get(j, "error");
	assert_string_equal(jstr(o, "message"), "temperature: must be a number in [0, 2], got 3.5");
	assert_string_equal(jstr(o, "type"), "invalid_request_error");
	assert_string_equal(jstr(o, "param"), "temperature");
	assert_string_equal(jstr(o, "code"), "BADPARAM");
	json_decref(j);

	/* No param: null.  Server errors set through oai_error_set. */
	oai_buf_reset(&b);
	oai_error_set(&e, 404, "NOMODEL", NULL, "model: no model named \"%s\"", "x\"y");
	assert_string_equal(e.type, "invalid_request_error");
	assert_int_equal(oai_write_error(&b, &e), 0);
	j = load_json(b.data);
	o = json_object_get(j, "error");
	assert_true(json_is_null(json_object_get(o, "param")));
	assert_string_equal(jstr(o, "message"), "model: no model named \"x\"y\"");
	assert_string_equal(jstr(o, "code"), "NOMODEL");
	json_decref(j);

	oai_buf_reset(&b);
	oai_error_set(&e, 503, "DRAINING", "", "server: draining");
	assert_string_equal(e.type, "server_error");
	assert_int_equal(oai_sse_error(&b, &e), 0);
	assert_string_equal(b.data, "data: {\"error\":{\"message\":\"server: draining\",\"type\":"
				    "\"server_error\",\"param\":null,\"code\":\"DRAINING\"}}\n\n");
	oai_buf_free(&b);
}

static void test_write_models_tokens_text(void **state)
{
	struct oai_buf b = { 0 };
	struct oai_model_info models[] = { { "tiny", 100, NULL }, { "big", 200, "acme" } };
	int32_t toks[] = { 1, 15043, 2147483647 };
	json_t *j, *d;

	assert_int_equal(oai_write_models(&b, models, 2), 0);
	j = load_json(b.data);
	assert_string_equal(jstr(j, "object"), "list");
	d = json_object_get(j, "data");
	assert_int_equal(json_array_size(d), 2);
	assert_string_equal(jstr(json_array_get(d, 0), "id"), "tiny");
	assert_string_equal(jstr(json_array_get(d, 0), "object"), "model");
	assert_string_equal(jstr(json_array_get(d, 0), "owned_by"), "duet");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(d, 1), "created")), 200);
	assert_string_equal(jstr(json_array_get(d, 1), "owned_by"), "acme");
	json_decref(j);

	oai_buf_reset(&b);
	assert_int_equal(oai_write_models(&b, NULL, 0), 0);
	assert_string_equal(b.data, "{\"object\":\"list\",\"data\":[]}");

	oai_buf_reset(&b);
	assert_int_equal(oai_write_tokens(&b, toks, 3), 0);
	assert_string_equal(b.data, "{\"tokens\":[1,15043,2147483647],\"count\":3}");
	oai_buf_reset(&b);
	assert_int_equal(oai_write_tokens(&b, NULL, 0), 0);
	assert_string_equal(b.data, "{\"tokens\":[],\"count\":0}");

	oai_buf_reset(&b);
	assert_int_equal(oai_write_text(&b, "a\tb", 3), 0);
	assert_string_equal(b.data, "{\"prompt\":\"a\\tb\"}");
	oai_buf_free(&b);
}

/* Invalid UTF-8 becomes U+FFFD; control characters and NUL are escaped; valid text is kept. */
static void test_write_utf8_sanitized(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		const char *out; /* the decoded JSON string */
	} cases[] = {
		{ "ok \xc3\xa9 \xf0\x9f\x98\x80", 10, "ok \xc3\xa9 \xf0\x9f\x98\x80" },
		{ "a\xff"
		  "b",
		  3,
		  "a\xef\xbf\xbd"
		  "b" },
		{ "\xc3", 1, "\xef\xbf\xbd" },				       /* truncated */
		{ "\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd" },		       /* overlong */
		{ "\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* surrogate */
		{ "\xf4\x90\x80\x80", 4,
		  "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* > U+10FFFF */
		{ "\x01\x1f\x7f", 3, "\x01\x1f\x7f" },
	};
	struct oai_buf b = { 0 };
	struct oai_meta m = { .kind = OAI_KIND_CHAT, .id = "c", .model = "m" };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *j, *v;

		oai_buf_reset(&b);
		assert_int_equal(oai_sse_text(&b, &m, cases[i].in, cases[i].len), 0);
		j = load_json(b.data + 6);
		v = json_object_get(
			json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta"),
			"content");
		assert_true(json_is_string(v));
		assert_string_equal(json_string_value(v), cases[i].out);
		json_decref(j);
	}
	/* NUL inside model text is written as \u0000 and round-trips with ALLOW_NUL. */
	oai_buf_reset(&b);
	assert_int_equal(oai_write_text(&b, "a\0b", 3), 0);
	assert_string_equal(b.data, "{\"prompt\":\"a\\u0000b\"}");
	oai_buf_free(&b);
}

/* A request that parses writes a response whose model name round-trips (escaping both ways). */
static void test_round_trip_model_name(void **state)
{
	struct oai_completion c;
	struct oai_buf b = { 0 };
	json_t *j;

	assert_ok(parse_cmpl("{\"model\":\"a\\\"b\\\\c\\n\u00e9\",\"prompt\":\"p\"}", &c));
	assert_str(c.p.model, "a\"b\\c\n\xc3\xa9");
	assert_int_equal(oai_write_response(&b,
					    &(struct oai_meta){ .kind = OAI_KIND_COMPLETION,
								.id = "cmpl-x",
								.model = c.p.model.ptr },
					    "", 0, OAI_FINISH_STOP, &(struct oai_usage){ 0 }),
			 0);
	j = load_json(b.data);
	assert_string_equal(jstr(j, "model"), c.p.model.ptr);
	json_decref(j);
	oai_buf_free(&b);
	oai_completion_free(&c);
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_completion_minimal),
		cmocka_unit_test(test_completion_full),
		cmocka_unit_test(test_completion_prompt_forms),
		cmocka_unit_test(test_completion_nulls_and_integral_reals),
		cmocka_unit_test(test_unknown_fields_recorded),
		cmocka_unit_test(test_max_tokens_cap),
		cmocka_unit_test(test_chat_minimal),
		cmocka_unit_test(test_chat_full),
		cmocka_unit_test(test_tokenize_detokenize),
		cmocka_unit_test(test_body_too_big),
		cmocka_unit_test(test_nesting_bombs),
		cmocka_unit_test(test_alloc_failures),
		cmocka_unit_test(test_fuzz_mutations),
		cmocka_unit_test(test_write_completion_response),
		cmocka_unit_test(test_write_chat_response),
		cmocka_unit_test(test_sse_completion_exact),
		cmocka_unit_test(test_sse_chat_exact),
		cmocka_unit_test(test_n_and_logprobs_parsed),
		cmocka_unit_test(test_write_choices_logprobs),
		cmocka_unit_test(test_write_error),
		cmocka_unit_test(test_write_timings),
		cmocka_unit_test(test_write_models_tokens_text),
		cmocka_unit_test(test_write_utf8_sanitized),
		cmocka_unit_test(test_round_trip_model_name),
	};
	enum { NFIXED = sizeof(fixed) / sizeof(fixed[0]), NBAD = sizeof(bads) / sizeof(bads[0]) };
	static struct CMUnitTest tests[NFIXED + NBAD];
	static char names[NBAD][80];

	memcpy(tests, fixed, sizeof(fixed));
	for (size_t i = 0; i < NBAD; i++) {
		snprintf(names[i], sizeof(names[i]), "reject: %s", bads[i].name);
		tests[NFIXED + i] = (struct CMUnitTest){ .name = names[i],
							 .test_func = test_bad,
							 .initial_state = (void *)&bads[i] };
	}
	return _cmocka_run_group_tests("openai", tests, NFIXED + NBAD, NULL, NULL);
}
