// SPDX-License-Identifier: MIT
/* libFuzzer target: the OpenAI request parsers (all four) on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ctl/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct oai_limits lim = { .max_body = 1 << 20,
					.default_max_tokens = 16,
					.max_tokens_cap = 4096,
					.max_n = 8,
					.max_logprobs = 20 };
	struct oai_completion c;
	struct oai_chat ch;
	struct oai_tokenize t;
	struct oai_detokenize d;
	struct oai_error e;

	if (oai_parse_completion((const char *)data, size, &lim, &c, &e) == 0)
		oai_completion_free(&c);
	if (oai_parse_chat((const char *)data, size, &lim, &ch, &e) == 0)
		oai_chat_free(&ch);
	if (oai_parse_tokenize((const char *)data, size, &lim, &t, &e) == 0)
		oai_tokenize_free(&t);
	if (oai_parse_detokenize((const char *)data, size, &lim, &d, &e) == 0)
		oai_detokenize_free(&d);
	return 0;
}
