/* SPDX-License-Identifier: MIT */
/*
 * Token sampler (one per sequence) and the stop-string matcher.
 *
 * smp_sample() turns one row of logits (n_vocab floats, not modified) into a
 * token id.  The steps, in this order:
 *
 *   1. copy the logits; a NaN logit counts as -inf (the token is never drawn),
 *      +inf as FLT_MAX;
 *   2. logit bias: logit += bias for every (token, bias) entry; entries for the
 *      same token add up; a bias of -INFINITY bans the token;
 *   3. penalties, over the tokens of the last repeat_last_n smp_accept() calls
 *      (prompt and generated tokens alike; count = occurrences in that window):
 *        repeat (llama.cpp):  logit > 0 ? logit / repeat_penalty
 *                                       : logit * repeat_penalty
 *        then (OpenAI):       logit -= presence_penalty * (count > 0)
 *                                      + frequency_penalty * count
 *   4. temperature == 0: greedy argmax, the LOWEST id among equal maxima;
 *      top_k, top_p, min_p and the seed are ignored and no random number is
 *      used.  Otherwise:
 *   5. top-k: keep the k largest logits (ties at the cut: the lower ids);
 *   6. softmax of logit / temperature over what is left;
 *   7. top-p: keep the smallest prefix, in order of descending probability
 *      (ties: ascending id), whose cumulative probability is >= top_p (at
 *      least one token);
 *   8. min-p: drop tokens whose probability is < min_p * the largest one;
 *   9. renormalize and draw: exactly one 53-bit uniform u in [0, 1) from the
 *      sampler's xoshiro256** stream (seeded through splitmix64) per sampled
 *      token, even when one candidate is left; the token is the first, in
 *      ascending id order, whose cumulative weight exceeds u * total.
 *
 * Same parameters, same seed, same sequence of smp_accept()/smp_sample()
 * calls with the same logits: the same tokens, on every host.
 *
 * smp_create() allocates everything up front (O(n_vocab) scratch plus the
 * penalty window); smp_sample() and smp_accept() allocate nothing.  Time per
 * token is O(n_vocab) and nothing is sorted: top-k is a radix select on
 * (logit, id), top-p a radix select weighted by probability (the prefix of
 * the sorted order that reaches the mass, found without sorting it).
 *
 * A sampler is not thread-safe; use one per sequence.
 */
#ifndef DUET_SAMPLER_H
#define DUET_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits smp_params_validate() enforces (the ranges follow OpenAI's API). */
#define SMP_MAX_TEMPERATURE 100.0f
#define SMP_MAX_REPEAT_PENALTY 10.0f
#define SMP_MAX_PENALTY 2.0f	     /* presence and frequency: [-2, 2] */
#define SMP_MAX_BIAS 100.0f	     /* logit bias: [-100, 100] or -INFINITY */
#define SMP_MAX_LAST_N (1 << 20)     /* tokens in the penalty window */
#define SMP_MAX_LOGIT_BIAS (1 << 20) /* entries in logit_bias */
#define SMP_MAX_VOCAB (1 << 24)

struct smp_bias {
	int32_t token; /* [0, n_vocab) */
	float bias;    /* added to the logit; -INFINITY bans the token */
};

struct smp_params {
	float temperature;	 /* [0, 100]; 0 = greedy */
	int top_k;		 /* >= 0; 0 (or >= n_vocab) = off */
	float top_p;		 /* (0, 1]; 1 = off */
	float min_p;		 /* [0, 1]; 0 = off */
	float repeat_penalty;	 /* (0, 10]; 1 = off */
	int repeat_last_n;	 /* [0, SMP_MAX_LAST_N]; penalty window; 0 = no penalties */
	float presence_penalty;	 /* [-2, 2]; 0 = off */
	float frequency_penalty; /* [-2, 2]; 0 = off */
	uint64_t seed;		 /* any value, used as is */
	const struct smp_bias *logit_bias; /* n_logit_bias entries; copied by smp_create() */
	int n_logit_bias;		   /* [0, SMP_MAX_LOGIT_BIAS] */
};

struct sampler;

/*
 * Defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1 (off), repeat_last_n 64, presence/frequency 0, seed 0,
 * no logit bias (llama.cpp's defaults, with its penalty turned off).
 */
struct smp_params smp_params_default(void);

/*
 * 0 when p is usable with a vocabulary of n_vocab tokens; else -EINVAL and a
 * message naming the parameter ("top_p must be in (0, 1] (got 1.5)") in err
 * (errlen bytes, always NUL-terminated when errlen > 0; err may be NULL).
 * NaN is rejected everywhere.
 */
int smp_params_validate(const struct smp_params *p, int n_vocab, char *err, size_t errlen);

/*
 * A sampler for one sequence, with an empty penalty window and the PRNG
 * seeded from p->seed.  p (and p->logit_bias) need not outlive the call.
 * Returns 0, -EINVAL (invalid p or n_vocab: smp_params_validate() says why)
 * or -ENOMEM.  *out is set only on success.
 */
int smp_create(const struct smp_params *p, int n_vocab, struct sampler **out);

/* NULL is a no-op. */
void smp_destroy(struct sampler *s);

/* Empty the penalty window and reseed the PRNG from the creation seed. */
void smp_reset(struct sampler *s);

/*
 * Record token into the penalty window (prompt tokens and each sampled token
 * alike; smp_sample() does not do it).  The oldest token leaves the window
 * once it holds repeat_last_n tokens.  Ids outside [0, n_vocab) are ignored.
 */
void smp_accept(struct sampler *s, int32_t token);

/*
 * Advance the generator as n smp_sample() calls would (one draw each with
 * temperature > 0, none when greedy): a sampler that continues a sequence
 * another one started (a decode partition after the prefill partition
 * sampled the first token) then draws what a single sampler would have.
 */
void smp_skip(struct sampler *s, int n);

/*
 * The next token for logits (n_vocab floats, read only), in [0, n_vocab).
 * Returns -EINVAL when s or logits is NULL, -ERANGE when every token is
 * banned (-inf or NaN after bias and penalties).  Allocates nothing.
 */
int32_t smp_sample(struct sampler *s, const float *logits);

/*
 * Stop strings.  The engine feeds the detokenized text as it streams; the
 * matcher says when a stop string has appeared and how much text is safe to
 * show, holding back any tail that could be the start of a stop string.
 *
 * Contract.  The caller keeps a pending buffer: it appends every new piece of
 * text to it and feeds the same piece to smp_stop_feed().  The matcher keeps
 * no copy of the text, only its state (KMP automata), so the pieces may be of
 * any length.  After each feed:
 *   - not stopped: the first *emit_len bytes of the pending buffer may be sent
 *     and removed; what stays (at most SMP_STOP_MAXLEN - 1 bytes) is the
 *     longest tail that is a proper prefix of some stop string;
 *   - stopped: the first *emit_len bytes of the pending buffer come before
 *     the stop string and may be sent; the stop string and everything after
 *     it are dropped; generation ends.
 * At the end of generation without a stop, the whole pending buffer is sent.
 *
 * The stop reported is the one that ends first in the text (the longest, if
 * several end at the same byte), which makes the result independent of how
 * the text is cut into pieces.  Matching is on bytes.
 *
 * Example, stop "</s>": feed "Hi <" -> emit 3 ("Hi "), pending "<";
 * feed "/s> x" -> stopped, emit 0 (pending "</s> x", nothing before it).
 */
#define SMP_STOP_MAX 16	    /* stop strings */
#define SMP_STOP_MAXLEN 256 /* bytes per stop string, without the NUL */

/* Value type, so that the engine can embed it; fields are private. */
struct smp_stop {
	int n;
	bool stopped;
	size_t held; /* bytes the caller's pending buffer holds back */
	struct {
		uint16_t len;
		uint16_t state;			/* matched prefix length */
		uint16_t fail[SMP_STOP_MAXLEN]; /* KMP failure function */
		char str[SMP_STOP_MAXLEN];
	} s[SMP_STOP_MAX];
};

/*
 * Set up st for n NUL-terminated stop strings (n in [0, SMP_STOP_MAX]; each
 * 1..SMP_STOP_MAXLEN bytes; copied).  Returns 0 or -EINVAL with a message
 * naming the offending string in err (errlen bytes; err may be NULL).
 */
int smp_stop_init(struct smp_stop *st, const char *const *stops, int n, char *err, size_t errlen);

/* Forget the text seen so far (same stop strings), for a new generation. */
void smp_stop_reset(struct smp_stop *st);

/*
 * Feed the next len bytes of text (see the contract above).  Sets *emit_len
 * and *stopped; returns 0, or -EINVAL on NULL arguments.  Once stopped, every
 * further feed reports stopped with *emit_len 0 until smp_stop_reset().
 */
int smp_stop_feed(struct smp_stop *st, const char *text, size_t len, size_t *emit_len,
		  bool *stopped);

#endif /* DUET_SAMPLER_H */
