/* SPDX-License-Identifier: MIT */
/*
 * Chat templates: turn an OpenAI-style list of messages (role, content) into
 * the prompt text a chat-tuned model was trained on.
 *
 * Duet does not run Jinja.  It has a fixed set of built-in templates, chosen
 * by name (the model.chat_template setting) or recognized from the markers in
 * a GGUF file's tokenizer.chat_template string.  The exact output of each
 * template is documented next to its table entry in chat.c.
 *
 * Roles are "system", "user" and "assistant".  At most one system message,
 * and only as the first message.  Templates without a system role (mistral,
 * gemma) fold it into the first user turn.  llama2, mistral and gemma
 * require user and assistant turns to alternate, starting with user.
 *
 * Content is inserted verbatim: no trimming and no escaping.  Whether text
 * such as "<|im_end|>" typed by a user becomes a control token is the
 * tokenizer's parse_special decision, not this module's.  The API tokenizes
 * the template's own text (including the BOS text below) with parse_special
 * set and each message's content (the spans from chat_apply_spans()) without
 * it, so that a user cannot forge turn markers.
 *
 * BOS: some templates write the BOS token's text themselves ("<s>",
 * "<|begin_of_text|>", "<bos>"); for those chat_template_has_bos() is true and
 * the caller must not add another BOS token.  For the others the caller adds
 * BOS as the vocabulary's add_bos flag says.
 *
 * Templates are immutable, static and thread-safe; nothing here allocates.
 */
#ifndef DUET_CHAT_H
#define DUET_CHAT_H

#include <stdbool.h>
#include <stddef.h>

struct chat_template; /* opaque, static storage */

/* One message; the strings need not be NUL-terminated.  content may be NULL if content_len is 0. */
struct chat_msg {
	const char *role;
	size_t role_len;
	const char *content;
	size_t content_len;
};

/* Where one message's content landed in the output: bytes [off, off + len). */
struct chat_span {
	size_t off;
	size_t len;
};

/* A built-in template by exact name ("chatml"); NULL if there is none. */
const struct chat_template *chat_template_find(const char *name);

/*
 * The built-in template whose distinctive markers appear in a GGUF
 * tokenizer.chat_template string (jinja: len bytes, need not be
 * NUL-terminated); NULL when none is recognized.  The caller then reports
 * "chat template not recognized; set model.chat_template to one of: "
 * followed by chat_template_names().
 */
const struct chat_template *chat_template_detect(const char *jinja, size_t len);

/* The i-th built-in template, i from 0; NULL past the end. */
const struct chat_template *chat_template_at(int i);
/* All built-in names, comma-separated: "llama2, llama3, chatml, ...". */
const char *chat_template_names(void);

const char *chat_template_name(const struct chat_template *t);
/* True when the output begins with the BOS token's text (chat_template_bos()). */
bool chat_template_has_bos(const struct chat_template *t);
/* That BOS text ("<|begin_of_text|>"), or NULL when the template writes none. */
const char *chat_template_bos(const struct chat_template *t);
/* Text that ends an assistant turn ("<|im_end|>"), a natural stop string. */
const char *chat_template_stop(const struct chat_template *t);

/*
 * Format n messages into out (cap bytes) as a NUL-terminated string; *len
 * receives its length without the NUL.  add_generation_prompt appends the
 * opening of an assistant turn (llama2 and mistral have none: their prompt
 * ends with " [/INST]" after the last user turn either way).
 *
 * Returns 0; -ENOSPC when cap < *len + 1, with *len set to the length
 * needed (out may be NULL when cap is 0, to ask for the size; its bytes are
 * unspecified after -ENOSPC); -EOVERFLOW when the length does not fit a
 * size_t; -EINVAL on an invalid conversation (empty, unknown or unsupported
 * role such as "tool", system not first, two systems, turns that do not
 * alternate where the template requires it, a system message with no user
 * message to fold into), with a one-line message in err (may be NULL).
 */
int chat_apply(const struct chat_template *t, const struct chat_msg *msgs, int n,
	       bool add_generation_prompt, char *out, size_t cap, size_t *len, char *err,
	       size_t errlen);

/*
 * chat_apply(), and on success spans[i] (spans: n entries, may be NULL) is
 * where msgs[i].content is in out; spans[i].len == msgs[i].content_len.
 * Everything outside the spans is template text.
 */
int chat_apply_spans(const struct chat_template *t, const struct chat_msg *msgs, int n,
		     bool add_generation_prompt, char *out, size_t cap, size_t *len,
		     struct chat_span *spans, char *err, size_t errlen);

#endif /* DUET_CHAT_H */
