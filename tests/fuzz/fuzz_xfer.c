// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the transfer drivers' wire messages.  Byte 0 picks the
 * parser (even: descriptor decoder, odd: tcp frame header + whole-frame
 * verification with the seed corpus's key); the rest is the message.  Every
 * input also goes through the other parser, so mutations cross over.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/net/sha256.h"
#include "drivers/net/xfer-impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t key_bytes[] = "duet-fuzz-key-0123456789abcdef";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xfer_peer peer;
	struct xfer_tcp_hdr h;
	struct hmac_sha256 key;
	char why[160];
	uint8_t *copy;

	if (size < 1)
		return 0;
	/* An exact-size copy, so that reading past the message is caught. */
	copy = malloc(size - 1 ? size - 1 : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	for (unsigned nfds = 0; nfds <= XFER_DESC_MAX_FDS; nfds += 4)
		xfer_desc_decode(copy, size - 1, nfds, &peer, why, sizeof(why));
	if (size - 1 >= sizeof(h))
		xfer_tcp_hdr_decode(copy, &h, why, sizeof(why));
	hmac_sha256_init(&key, key_bytes, sizeof(key_bytes) - 1);
	xfer_tcp_frame_verify(&key, data[0] & 1 ? 0 : 1, copy, size - 1, &h, why, sizeof(why));
	free(copy);
	return 0;
}
