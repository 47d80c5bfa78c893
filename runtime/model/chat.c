// SPDX-License-Identifier: MIT
/* Built-in chat templates; the contract is in chat.h. */
#include "runtime/model/chat.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum chat_role {
	CHAT_SYSTEM,
	CHAT_USER,
	CHAT_ASSISTANT,
};

/*
 * A template is text around each turn.  Output, in order:
 *
 *   bos
 *   sys_pre SYSTEM sys_suf                      (fold == false)
 *   for each user turn:      user_pre [fold_pre SYSTEM fold_suf] USER user_suf
 *                            (the bracket only in the first user turn, when fold)
 *   for each assistant turn: asst_pre ASSISTANT asst_suf
 *   gen                                         (add_generation_prompt; may be NULL)
 *
 * The strings below are exact; "\n" is one newline byte.
 */
struct chat_template {
	const char *name;
	const char *bos; /* "" when the template writes no BOS of its own */
	bool has_bos;	 /* output always begins with bos_text */
	const char *bos_text;
	bool fold;	/* no system role: system goes into the first user turn */
	bool alternate; /* user/assistant must alternate, starting with user */
	const char *sys_pre, *sys_suf;
	const char *fold_pre, *fold_suf;
	const char *user_pre, *user_suf;
	const char *asst_pre, *asst_suf;
	const char *gen;
	const char *stop;
};

static const struct chat_template chat_builtin[] = {
	/*
	 * Llama 2 chat (Meta's reference chat_completion): every exchange is its
	 * own BOS ... EOS sequence, the system prompt sits inside the first
	 * [INST] between <<SYS>> markers.
	 *
	 *   <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>
	 *   <s>[INST] {user} [/INST]
	 *
	 * (shown on two lines; there is no newline between "</s>" and "<s>").
	 * The generation prompt is the " [/INST]" that closes each user turn.
	 */
	{
		.name = "llama2",
		.bos = "",
		.has_bos = true,
		.bos_text = "<s>",
		.fold = true,
		.alternate = true,
		.fold_pre = "<<SYS>>\n",
		.fold_suf = "\n<</SYS>>\n\n",
		.user_pre = "<s>[INST] ",
		.user_suf = " [/INST]",
		.asst_pre = " ",
		.asst_suf = " </s>",
		.gen = NULL,
		.stop = "</s>",
	},
	/*
	 * Llama 3 / 3.x instruct:
	 *
	 *   <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>
	 *   <|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>
	 *   <|start_header_id|>assistant<|end_header_id|>\n\n{assistant}<|eot_id|>
	 *   generation prompt: <|start_header_id|>assistant<|end_header_id|>\n\n
	 */
	{
		.name = "llama3",
		.bos = "<|begin_of_text|>",
		.has_bos = true,
		.bos_text = "<|begin_of_text|>",
		.sys_pre = "<|start_header_id|>system<|end_header_id|>\n\n",
		.sys_suf = "<|eot_id|>",
		.user_pre = "<|start_header_id|>user<|end_header_id|>\n\n",
		.user_suf = "<|eot_id|>",
		.asst_pre = "<|start_header_id|>assistant<|end_header_id|>\n\n",
		.asst_suf = "<|eot_id|>",
		.gen = "<|start_header_id|>assistant<|end_header_id|>\n\n",
		.stop = "<|eot_id|>",
	},
	/*
	 * ChatML (Qwen, Qwen2, Yi, OpenHermes, ...); no BOS text:
	 *
	 *   <|im_start|>system\n{system}<|im_end|>\n
	 *   <|im_start|>user\n{user}<|im_end|>\n
	 *   <|im_start|>assistant\n{assistant}<|im_end|>\n
	 *   generation prompt: <|im_start|>assistant\n
	 */
	{
		.name = "chatml",
		.bos = "",
		.sys_pre = "<|im_start|>system\n",
		.sys_suf = "<|im_end|>\n",
		.user_pre = "<|im_start|>user\n",
		.user_suf = "<|im_end|>\n",
		.asst_pre = "<|im_start|>assistant\n",
		.asst_suf = "<|im_end|>\n",
		.gen = "<|im_start|>assistant\n",
		.stop = "<|im_end|>",
	},
	/*
	 * Mistral instruct, v1 style (Mistral-7B-Instruct model card); no system
	 * role, so the system message opens the first user turn followed by a
	 * blank line:
	 *
	 *   <s>[INST] {system}\n\n{user} [/INST] {assistant}</s>[INST] {user} [/INST]
	 *
	 * The generation prompt is the " [/INST]" that closes each user turn.
	 */
	{
		.name = "mistral",
		.bos = "<s>",
		.has_bos = true,
		.bos_text = "<s>",
		.fold = true,
		.alternate = true,
		.fold_pre = "",
		.fold_suf = "\n\n",
		.user_pre = "[INST] ",
		.user_suf = " [/INST]",
		.asst_pre = " ",
		.asst_suf = "</s>",
		.gen = NULL,
		.stop = "</s>",
	},
	/*
	 * Zephyr (HuggingFaceH4/zephyr-7b-*), "</s>" being the EOS text; no BOS
	 * text:
	 *
	 *   <|system|>\n{system}</s>\n
	 *   <|user|>\n{user}</s>\n
	 *   <|assistant|>\n{assistant}</s>\n
	 *   generation prompt: <|assistant|>\n
	 */
	{
		.name = "zephyr",
		.bos = "",
		.sys_pre = "<|system|>\n",
		.sys_suf = "</s>\n",
		.user_pre = "<|user|>\n",
		.user_suf = "</s>\n",
		.asst_pre = "<|assistant|>\n",
		.asst_suf = "</s>\n",
		.gen = "<|assistant|>\n",
		.stop = "</s>",
	},
	/*
	 * Gemma (1, 2, 3): the assistant's role is "model"; no system role, so
	 * the system message opens the first user turn followed by a blank line
	 * (as Gemma 3's own template does):
	 *
	 *   <bos><start_of_turn>user\n{system}\n\n{user}<end_of_turn>\n
	 *   <start_of_turn>model\n{assistant}<end_of_turn>\n
	 *   generation prompt: <start_of_turn>model\n
	 */
	{
		.name = "gemma",
		.bos = "<bos>",
		.has_bos = true,
		.bos_text = "<bos>",
		.fold = true,
		.alternate = true,
		.fold_pre = "",
		.fold_suf = "\n\n",
		.user_pre = "<start_of_turn>user\n",
		.user_suf = "<end_of_turn>\n",
		.asst_pre = "<start_of_turn>model\n",
		.asst_suf = "<end_of_turn>\n",
		.gen = "<start_of_turn>model\n",
		.stop = "<end_of_turn>",
	},
	/*
	 * Phi-3 / Phi-3.5; no BOS text (Phi-3's own Jinja starts with
	 * {{ bos_token }}, which the caller adds from the vocabulary's add_bos):
	 *
	 *   <|system|>\n{system}<|end|>\n
	 *   <|user|>\n{user}<|end|>\n
	 *   <|assistant|>\n{assistant}<|end|>\n
	 *   generation prompt: <|assistant|>\n
	 */
	{
		.name = "phi3",
		.bos = "",
		.sys_pre = "<|system|>\n",
		.sys_suf = "<|end|>\n",
		.user_pre = "<|user|>\n",
		.user_suf = "<|end|>\n",
		.asst_pre = "<|assistant|>\n",
		.asst_suf = "<|end|>\n",
		.gen = "<|assistant|>\n",
		.stop = "<|end|>",
	},
};

#define CHAT_N_BUILTIN ((int)(sizeof(chat_builtin) / sizeof(chat_builtin[0])))

/* Kept in table order; test_chat checks that the two agree. */
static const char chat_names[] = "llama2, llama3, chatml, mistral, zephyr, gemma, phi3";

const struct chat_template *chat_template_at(int i)
{
	if (i < 0 || i >= CHAT_N_BUILTIN)
		return NULL;
	return &chat_builtin[i];
}

const char *chat_template_names(void)
{
	return chat_names;
}

const struct chat_template *chat_template_find(const char *name)
{
	if (!name)
		return NULL;
	for (int i = 0; i < CHAT_N_BUILTIN; i++)
		if (strcmp(chat_builtin[i].name, name) == 0)
			return &chat_builtin[i];
	return NULL;
}

const char *chat_template_name(const struct chat_template *t)
{
	return t->name;
}

bool chat_template_has_bos(const struct chat_template *t)
{
	return t->has_bos;
}

const char *chat_template_bos(const struct chat_template *t)
{
	return t->has_bos ? t->bos_text : NULL;
}

const char *chat_template_stop(const struct chat_template *t)
{
	return t->stop;
}

static bool chat_has(const char *s, size_t len, const char *needle)
{
	return memmem(s, len, needle, strlen(needle)) != NULL;
}

/*
 * Markers, most specific first: a ChatML or Llama 3 template may mention
 * "[INST]" or "<|user|>" in a comment or a branch for another format, while
 * their own markers appear in no other family.  "<|user|>" is shared by
 * phi3 and zephyr: phi3 ends turns with "<|end|>", zephyr with the EOS, which
 * its Jinja writes as eos_token more often than as a literal "</s>".
 */
const struct chat_template *chat_template_detect(const char *jinja, size_t len)
{
	if (!jinja || len == 0)
		return NULL;
	if (chat_has(jinja, len, "<|im_start|>"))
		return chat_template_find("chatml");
	if (chat_has(jinja, len, "<|start_header_id|>"))
		return chat_template_find("llama3");
	if (chat_has(jinja, len, "<start_of_turn>"))
		return chat_template_find("gemma");
	if (chat_has(jinja, len, "<|user|>")) {
		if (chat_has(jinja, len, "<|end|>"))
			return chat_template_find("phi3");
		if (chat_has(jinja, len, "</s>") || chat_has(jinja, len, "eos_token"))
			return chat_template_find("zephyr");
		return NULL;
	}
	if (chat_has(jinja, len, "[INST]"))
		return chat_template_find(chat_has(jinja, len, "<<SYS>>") ? "llama2" : "mistral");
	return NULL;
}

static int chat_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int chat_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static const char *chat_role_name(enum chat_role r)
{
	switch (r) {
	case CHAT_SYSTEM:
		return "system";
	case CHAT_USER:
		return "user";
	case CHAT_ASSISTANT:
		return "assistant";
	}
	return "?";
}

static bool chat_role_is(const struct chat_msg *m, const char *name)
{
	size_t n = strlen(name);

	return m->role_len == n && memcmp(m->role, name, n) == 0;
}

/* Check the conversation against t's rules; -EINVAL with a message in err. */
static int chat_validate(const struct chat_template *t, const struct chat_msg *msgs, int n,
			 bool add_generation_prompt, char *err, size_t errlen)
{
	enum chat_role prev = CHAT_SYSTEM;

	if (n <= 0)
		return chat_fail(err, errlen, "empty conversation: at least one message is needed");
	if (!msgs)
		return chat_fail(err, errlen, "no messages");

	for (int i = 0; i < n; i++) {
		const struct chat_msg *m = &msgs[i];
		enum chat_role r;

		if (!m->role)
			return chat_fail(err, errlen, "message %d: no role", i);
		if (!m->content && m->content_len)
			return chat_fail(err, errlen, "message %d: no content", i);
		if (chat_role_is(m, "system")) {
			r = CHAT_SYSTEM;
		} else if (chat_role_is(m, "user")) {
			r = CHAT_USER;
		} else if (chat_role_is(m, "assistant")) {
			r = CHAT_ASSISTANT;
		} else if (chat_role_is(m, "tool")) {
			return chat_fail(
				err, errlen,
				"message %d: role 'tool' is not supported by chat template "
				"'%s'",
				i, t->name);
		} else {
			int shown = m->role_len > 32 ? 32 : (int)m->role_len;

			return chat_fail(
				err, errlen,
				"message %d: unknown role '%.*s' (expected system, user or "
				"assistant)",
				i, shown, m->role);
		}

		if (r == CHAT_SYSTEM && i > 0) {
			if (chat_role_is(&msgs[0], "system"))
				return chat_fail(err, errlen,
						 "message %d: more than one system message", i);
			return chat_fail(err, errlen,
					 "message %d: the system message must be the first message",
					 i);
		}
		if (t->alternate && r != CHAT_SYSTEM) {
			enum chat_role want = prev == CHAT_USER ? CHAT_ASSISTANT : CHAT_USER;

			if (r != want)
				return chat_fail(
					err, errlen,
					"message %d: expected role '%s', got '%s' (chat "
					"template '%s' requires user and assistant turns to "
					"alternate, starting with user)",
					i, chat_role_name(want), chat_role_name(r), t->name);
		}
		prev = r;
	}

	if (t->fold && n == 1 && prev == CHAT_SYSTEM)
		return chat_fail(err, errlen,
				 "chat template '%s' has no system role: the system message "
				 "must be followed by a user message",
				 t->name);
	if (t->alternate && add_generation_prompt && prev == CHAT_ASSISTANT)
		return chat_fail(err, errlen,
				 "chat template '%s' requires the conversation to end with a user "
				 "message when a reply is to be generated",
				 t->name);
	return 0;
}

/* Output cursor: counts every byte, copies only what fits. */
struct chat_out {
	char *buf;
	size_t cap;
	size_t pos;
	bool overflow;
};

static void chat_put(struct chat_out *o, const char *s, size_t n)
{
	if (o->overflow || n == 0)
		return;
	if (n > SIZE_MAX - o->pos) {
		o->overflow = true;
		return;
	}
	if (o->pos + n <= o->cap)
		memcpy(o->buf + o->pos, s, n);
	o->pos += n;
}

static void chat_puts(struct chat_out *o, const char *s)
{
	if (s)
		chat_put(o, s, strlen(s));
}

static void chat_content(struct chat_out *o, const struct chat_msg *m, struct chat_span *span)
{
	if (span) {
		span->off = o->pos;
		span->len = m->content_len;
	}
	chat_put(o, m->content, m->content_len);
}

int chat_apply_spans(const struct chat_template *t, const struct chat_msg *msgs, int n,
		     bool add_generation_prompt, char *out, size_t cap, size_t *len,
		     struct chat_span *spans, char *err, size_t errlen)
{
	struct chat_out o = { .buf = out, .cap = cap };
	const struct chat_msg *sys = NULL;
	bool folded = false;
	int first = 0;
	int rc;

	if (!t || !len || (!out && cap))
		return chat_fail(err, errlen, "chat_apply: invalid arguments");
	rc = chat_validate(t, msgs, n, add_generation_prompt, err, errlen);
	if (rc)
		return rc;

	if (chat_role_is(&msgs[0], "system")) {
		sys = &msgs[0];
		first = 1;
	}

	chat_puts(&o, t->bos);
	if (sys && !t->fold) {
		chat_puts(&o, t->sys_pre);
		chat_content(&o, sys, spans ? &spans[0] : NULL);
		chat_puts(&o, t->sys_suf);
	}
	for (int i = first; i < n; i++) {
		const struct chat_msg *m = &msgs[i];
		struct chat_span *sp = spans ? &spans[i] : NULL;

		if (chat_role_is(m, "user")) {
			chat_puts(&o, t->user_pre);
			if (sys && t->fold && !folded) {
				chat_puts(&o, t->fold_pre);
				chat_content(&o, sys, spans ? &spans[0] : NULL);
				chat_puts(&o, t->fold_suf);
				folded = true;
			}
			chat_content(&o, m, sp);
			chat_puts(&o, t->user_suf);
		} else {
			chat_puts(&o, t->asst_pre);
			chat_content(&o, m, sp);
			chat_puts(&o, t->asst_suf);
		}
	}
	if (add_generation_prompt)
		chat_puts(&o, t->gen);

	if (o.overflow || o.pos == SIZE_MAX) {
		*len = SIZE_MAX;
		chat_fail(err, errlen, "chat prompt too long");
		return -EOVERFLOW;
	}
	*len = o.pos;
	if (o.pos + 1 > cap) {
		if (err && errlen)
			snprintf(err, errlen, "chat prompt needs %zu bytes, buffer has %zu",
				 o.pos + 1, cap);
		return -ENOSPC;
	}
	out[o.pos] = '\0';
	return 0;
}

int chat_apply(const struct chat_template *t, const struct chat_msg *msgs, int n,
	       bool add_generation_prompt, char *out, size_t cap, size_t *len, char *err,
	       size_t errlen)
{
	return chat_apply_spans(t, msgs, n, add_generation_prompt, out, cap, len, NULL, err,
				errlen);
}
