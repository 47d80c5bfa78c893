// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for runtime/config: any bytes, taken as config text (up to
 * the first NUL), must load without crashing, leaking or hanging.  It also
 * checks what every load promises: the return code is the first error's,
 * every message names the file, and a config that loads prints (cfg_print)
 * to a text that loads back to the same struct, byte for byte.
 */
#include "runtime/config/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Large; static rather than on the stack.  libFuzzer runs inputs one at a time. */
static struct duet_config cfg, again;
static struct cfg_errors errs, errs2;

static void broken(const char *what, const char *text)
{
	fprintf(stderr, "fuzz_config: %s\n", what);
	cfg_errors_print(stderr, &errs);
	if (text)
		fprintf(stderr, "--- printed config ---\n%s\n", text);
	cfg_errors_print(stderr, &errs2);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text, *printed = NULL;
	size_t printed_len = 0;
	FILE *fp;
	int rc;

	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	rc = cfg_load_string(text, "fuzz.cfg", "/fuzz", &cfg, &errs);
	if (rc > 0 || (rc == 0) != (errs.count == 0) || rc != errs.first)
		broken("return code does not match the error list", NULL);
	for (unsigned i = 0; i < errs.count; i++)
		if (strncmp(errs.msg[i], "fuzz.cfg:", 9) != 0)
			broken("message without the file name", NULL);

	if (rc == 0) {
		fp = open_memstream(&printed, &printed_len);
		if (!fp)
			goto out;
		cfg_print(fp, &cfg);
		if (fclose(fp) != 0)
			goto out;
		if (cfg_load_string(printed, "printed", "/elsewhere", &again, &errs2) != 0)
			broken("printed config does not load", printed);
		if (memcmp(&cfg, &again, sizeof(cfg)) != 0)
			broken("printed config loads to a different struct", printed);
	}
out:
	free(printed);
	free(text);
	return 0;
}
