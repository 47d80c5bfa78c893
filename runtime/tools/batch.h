/* SPDX-License-Identifier: MIT */
/*
 * Batch mode of duet-generate: replay a trace of requests (JSON lines)
 * through the continuous-batching scheduler in real time, and report each
 * request's tokens, text and latencies plus a summary.
 *
 * Input, one JSON object per line (blank lines are skipped):
 *   {"prompt": "text" | "prompt_ids": [int, ...],   exactly one of the two
 *    "max_tokens": N,                                >= 1 [the -n default]
 *    "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n",
 *    "presence_penalty", "frequency_penalty", "seed", sampling (smp_params names)
 *    "stop": ["...", ...],                           up to SMP_STOP_MAX strings
 *    "arrival_ms": T,                                offset from the start [0]
 *    "tenant": "name",                               prefix-cache salt [none]
 *    "priority": P,                                  higher first [0]
 *    "id": any}                                      echoed [the line number]
 *
 * Output, one JSON object per request in input order, then a summary object
 * with "summary": true as the last line.
 */
#ifndef DUET_BATCH_H
#define DUET_BATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/model/llama.h"
#include "runtime/model/sampler.h"
#include "runtime/model/tokenizer.h"

struct batch_options {
	const char *requests; /* JSONL trace path; "-" = stdin */
	const char *out;      /* output path; NULL or "-" = stdout */
	int max_batch_tokens; /* scheduler token budget per step (<= llm_max_tokens) */
	int max_batch_seqs;   /* sequences per step (<= llm_max_out) */
	bool prefix_cache;
	bool add_bos;	      /* tokenize "prompt" with the vocabulary's BOS/EOS flags */
	bool parse_special;   /* control-token text in "prompt" becomes the token */
	bool ignore_eos;      /* generate past end-of-generation tokens */
	int max_tokens;	      /* default for requests without "max_tokens" */
	struct smp_params sp; /* defaults for the sampling keys a request omits */
};

/*
 * Run the trace on llm (created with max_seqs/max_out >= max_batch_seqs) and
 * tok.  Returns 0 when every request ran (individual requests may still have
 * finished with "error"), -EINVAL for an invalid trace (the line and key are
 * logged), -ENOENT and the like for unreadable files, -ENOMEM.
 */
int batch_run(struct llm *llm, const struct tokenizer *tok, const struct batch_options *o);

/* A synthetic trace of prompt_ids requests (no text needed). */
struct batch_gen_options {
	int n_requests;
	uint64_t seed;
	int prompt_min, prompt_max;	    /* prompt tokens, inclusive range, >= 1 */
	int max_tokens_min, max_tokens_max; /* inclusive range, >= 1 */
	int shared_prefix;		    /* leading tokens common to every prompt */
	double rate;			    /* Poisson arrivals per second; 0 = all at t = 0 */
	int n_vocab;			    /* token ids are drawn from [0, n_vocab) */
};

/* Write the trace to fp.  -EINVAL for inconsistent options, -EIO on a write error. */
int batch_make_requests(const struct batch_gen_options *g, FILE *fp);

/*
 * s[0..n) as a JSON string literal: quotes, backslashes and control bytes
 * escaped, other bytes as they are (the detokenizer emits valid UTF-8).
 * Shared by every JSON output of duet-generate so texts compare byte for byte.
 */
void batch_json_str(FILE *fp, const char *s, size_t n);

#endif /* DUET_BATCH_H */
