/* SPDX-License-Identifier: MIT */
/*
 * Tokenizers from GGUF metadata (tokenizer.ggml.*), with llama.cpp's
 * semantics so that token ids agree with llama_tokenize():
 *
 *  - SPM (tokenizer.ggml.model = "llama"): SentencePiece-style merging of
 *    adjacent pieces by score, highest first (ties: leftmost), spaces as
 *    U+2581, a space prefix when add_space_prefix, byte fallback to <0xXX>
 *    tokens.
 *  - BPE (tokenizer.ggml.model = "gpt2"): the pre-tokenizer named by
 *    tokenizer.ggml.pre splits the text (hand-written matchers equivalent to
 *    llama.cpp's regexes), each piece is mapped to GPT-2's byte alphabet and
 *    merged by rank from tokenizer.ggml.merges (lower index first).
 *
 * Special tokens: USER_DEFINED pieces found in the text always become their
 * token; CONTROL and UNKNOWN pieces ("<s>", "<|im_end|>") only when
 * parse_special is set.  Longer special pieces are matched first.
 *
 * A tokenizer borrows the token strings from the gguf_file: the file must stay
 * open until tok_destroy().  It is immutable after creation; any number of
 * threads may use one tokenizer concurrently (each with its own tok_stream).
 */
#ifndef DUET_TOKENIZER_H
#define DUET_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/model/gguf.h"
#include "runtime/model/model.h"

struct tokenizer; /* opaque */

/* GGUF token types (tokenizer.ggml.token_type). */
enum tok_type {
	TOK_TYPE_UNDEFINED = 0,
	TOK_TYPE_NORMAL = 1,
	TOK_TYPE_UNKNOWN = 2,
	TOK_TYPE_CONTROL = 3,
	TOK_TYPE_USER_DEFINED = 4,
	TOK_TYPE_UNUSED = 5,
	TOK_TYPE_BYTE = 6,
};

/*
 * Build a tokenizer from the tokenizer.ggml.* keys of f alone (any
 * general.architecture; vocab-only files included).  Everything is checked:
 * key types, array lengths equal to the vocabulary size, token types in
 * 0..6, special ids in range, every merge of the form "left right".
 * Errors: -DUET_EARCH (tokenizer model or pre-tokenizer not supported),
 * -DUET_EMODELKEY (key missing or of the wrong type or length, bad merge),
 * -DUET_EHPARAM (vocabulary size or token id out of range), -ENOMEM; err
 * (may be NULL) names the culprit.
 */
int tok_create_from_gguf(const struct gguf_file *f, struct tokenizer **out, char *err,
			 size_t errlen);
/* The same for a validated model description m of f (its vocabulary must match). */
int tok_create(const struct gguf_file *f, const struct model_desc *m, struct tokenizer **out,
	       char *err, size_t errlen);
void tok_destroy(struct tokenizer *t);

/*
 * Tokenize text[0..len) (UTF-8; invalid bytes are tolerated as llama.cpp
 * does: byte tokens for SPM, U+FFFD for BPE).  add_special: prepend BOS /
 * append EOS as the vocabulary's add_bos / add_eos flags say.  parse_special:
 * CONTROL-token text in the input becomes the control token.  Writes at most
 * max_ids ids; *n_ids receives the number of ids the text needs.  Returns 0,
 * -ENOSPC when max_ids was too small (the first max_ids ids are written),
 * -E2BIG for a text over 256 MiB, -ENOMEM, or -EINVAL.  Allocates its
 * scratch per call (O(len)); time is O(len log len).
 */
int tok_encode(const struct tokenizer *t, const char *text, size_t len, bool add_special,
	       bool parse_special, int32_t *ids, size_t max_ids, size_t *n_ids);

/* The raw piece of id as stored in the vocabulary (not NUL-terminated). -EINVAL if out of range. */
int tok_piece(const struct tokenizer *t, int32_t id, const char **ptr, size_t *len);
enum tok_type tok_token_type(const struct tokenizer *t, int32_t id); /* UNDEFINED if out of range */
/* Id of the token whose piece is exactly s[0..len), or -1. */
int32_t tok_lookup(const struct tokenizer *t, const char *s, size_t len);

uint32_t tok_n_vocab(const struct tokenizer *t);
enum model_tokenizer tok_kind(const struct tokenizer *t);
const char *tok_pre_name(const struct tokenizer *t); /* "default", "gpt-2", ...; "" for SPM */
/* Special ids; -1 when the vocabulary has none. */
int32_t tok_bos(const struct tokenizer *t);
int32_t tok_eos(const struct tokenizer *t);
int32_t tok_eot(const struct tokenizer *t); /* tokenizer.ggml.eot_token_id */
bool tok_add_bos(const struct tokenizer *t);
bool tok_add_space_prefix(const struct tokenizer *t);

/*
 * End of generation: the EOS and EOT ids, and every CONTROL token whose piece
 * is one of <|eot_id|>, <|eom_id|>, <|im_end|>, <|endoftext|>, <|end|>,
 * <|end_of_text|>, <end_of_turn>, <|return|> (chat-model terminators).
 */
bool tok_is_eog(const struct tokenizer *t, int32_t id);

/*
 * Streaming detokenizer.  Feed ids one at a time; the output is always
 * complete, valid UTF-8: a character split over several tokens (byte tokens,
 * or BPE pieces holding part of a character) is held back until complete,
 * and every invalid sequence becomes U+FFFD.  Pieces: SPM U+2581 -> space,
 * <0xXX> byte tokens -> the byte, UNKNOWN -> U+2585; BPE pieces are mapped
 * back from GPT-2's byte alphabet; USER_DEFINED pieces are copied; CONTROL
 * tokens produce nothing.  After BOS in an SPM vocabulary with
 * add_space_prefix, the next piece loses one leading space (as llama2.c and
 * SentencePiece decode).  The struct is embedded by the caller; no allocation.
 */
struct tok_stream {
	uint8_t pend[4]; /* bytes of an incomplete UTF-8 sequence */
	uint8_t n_pend;
	uint8_t need;	/* total length of the pending sequence */
	bool after_bos; /* the next piece loses one leading space */
};

void tok_stream_init(struct tok_stream *s);
/*
 * Decode id and append the complete characters to out.  Returns the number of
 * bytes written (0..cap), -EINVAL for an id out of range, or -ENOSPC when cap
 * is below tok_stream_max(t) (nothing consumed).  out is not NUL-terminated.
 */
int tok_stream_push(const struct tokenizer *t, struct tok_stream *s, int32_t id, char *out,
		    size_t cap);
/* Emit what is held back (an incomplete sequence becomes U+FFFD); cap >= 3 suffices. */
int tok_stream_flush(const struct tokenizer *t, struct tok_stream *s, char *out, size_t cap);
/* A cap that is always enough for one tok_stream_push() on this vocabulary. */
size_t tok_stream_max(const struct tokenizer *t);

/*
 * Detokenize ids[0..n) in one go (a fresh stream, flushed at the end).
 * Writes at most cap bytes and NUL-terminates when there is room; *len
 * receives the full length.  Returns 0, -ENOSPC (truncated) or -EINVAL.
 */
int tok_decode(const struct tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap,
	       size_t *len);

#endif /* DUET_TOKENIZER_H */
