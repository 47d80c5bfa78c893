/* SPDX-License-Identifier: MIT */
/*
 * Metrics registry and Prometheus text exposition (format 0.0.4) for
 * duetd's /metrics, plus quantiles for /v1/status and the console.
 *
 * Every family is declared once, in one table in metrics.c (name, type,
 * help, unit, labels, histogram bounds), in the order it is rendered.
 * Names carry the duet_ prefix and base units (seconds, tokens, blocks,
 * ratio 0..1) and keep vLLM's meanings, so dashboards translate by name:
 *
 *   duet_requests_running                ~ vllm:num_requests_running
 *   duet_requests_waiting                ~ vllm:num_requests_waiting
 *   duet_kv_blocks_used                  ~ (none; vllm:cache_config_info has num_gpu_blocks)
 *   duet_kv_blocks_cached / _leased      ~ (none: prefix-cache-only / lent to another partition)
 *   duet_kv_blocks_total                 ~ num_gpu_blocks in vllm:cache_config_info
 *   duet_kv_usage_ratio                  ~ vllm:gpu_cache_usage_perc / vllm:kv_cache_usage_perc
 *   duet_prefix_cache_queries_total      ~ vllm:gpu_prefix_cache_queries (tokens)
 *   duet_prefix_cache_hits_total         ~ vllm:gpu_prefix_cache_hits (tokens)
 *   duet_prompt_tokens_total             ~ vllm:prompt_tokens_total
 *   duet_generation_tokens_total         ~ vllm:generation_tokens_total
 *   duet_request_success_total{finish_reason} ~ vllm:request_success_total (+ "error")
 *   duet_preemptions_total               ~ vllm:num_preemptions_total
 *   duet_worker_restarts_total           ~ (none)
 *   duet_time_to_first_token_seconds     ~ vllm:time_to_first_token_seconds
 *   duet_inter_token_latency_seconds     ~ vllm:time_per_output_token_seconds
 *                                          (vllm:inter_token_latency_seconds in newer vLLM)
 *   duet_e2e_request_latency_seconds     ~ vllm:e2e_request_latency_seconds
 *   duet_request_queue_time_seconds      ~ vllm:request_queue_time_seconds
 *   duet_request_prefill_time_seconds    ~ vllm:request_prefill_time_seconds
 *   duet_request_decode_time_seconds     ~ vllm:request_decode_time_seconds
 *   duet_token_delivery_seconds          ~ (none: token sampled -> its stream frame written)
 *   duet_kv_transfer_bytes_total         ~ (none: KV bytes written prefill -> decode partition)
 *   duet_kv_transfer_seconds             ~ (none: per request, first KV write posted -> last completed)
 *   duet_kv_transfer_failures_total      ~ (none: a write failed, a record was refused, a lease expired)
 *   duet_kv_lease_expired_total          ~ (none: KV reservations that passed their deadline)
 *   duet_build_info{version} 1, duet_up  ~ (none; the usual *_build_info and up idioms)
 *
 * vLLM labels by model_name; Duet labels every per-partition series by
 * partition="<name>",role="<role>" instead.  duet_up and duet_build_info
 * have no partition labels.  The four KV transfer families (duet_kv_transfer_*,
 * duet_kv_lease_expired_total) add transport="<driver>", one value for the
 * whole registry (met_set_transport(); "none" until set), so that a
 * dashboard can tell shm from tcp from rdma without knowing the config.
 *
 * Memory and threads: met_create() reserves every slot for max_series label
 * sets; met_series_add() fills one at start-up (or repartition).  Updates
 * are plain stores and adds into those slots: no allocation, no locks, no
 * atomics.  A registry belongs to one thread (duetd's single-threaded
 * supervisor loop); readers (met_render, met_quantile) on that same thread
 * see a consistent snapshot.
 *
 * Updates with an out-of-range family, series or reason, or with the wrong
 * kind of family (met_set on a counter, ...) are dropped and counted in
 * met_misuse(); metrics never take the daemon down.
 */
#ifndef DUET_METRICS_H
#define DUET_METRICS_H

#include <stddef.h>
#include <stdint.h>

enum met_type {
	MET_COUNTER,
	MET_GAUGE,
	MET_HISTOGRAM,
};

/* Families, in render order (the order of the table in metrics.c). */
enum met_family {
	MET_UP,			  /* gauge, no labels: 1 while duetd serves */
	MET_BUILD_INFO,		  /* gauge {version}: always 1 */
	MET_REQUESTS_RUNNING,	  /* gauge, requests */
	MET_REQUESTS_WAITING,	  /* gauge, requests */
	MET_KV_BLOCKS_USED,	  /* gauge, blocks held by running or waiting requests */
	MET_KV_BLOCKS_CACHED,	  /* gauge, blocks held only by the prefix cache */
	MET_KV_BLOCKS_LEASED,	  /* gauge, blocks lent to or borrowed from another partition */
	MET_KV_BLOCKS_TOTAL,	  /* gauge, blocks in the pool */
	MET_KV_USAGE_RATIO,	  /* gauge, 0..1: used / total */
	MET_PREFIX_CACHE_QUERIES, /* counter, prompt tokens looked up */
	MET_PREFIX_CACHE_HITS,	  /* counter, prompt tokens found */
	MET_PROMPT_TOKENS,	  /* counter, tokens */
	MET_GENERATION_TOKENS,	  /* counter, tokens */
	MET_REQUEST_SUCCESS,	  /* counter {finish_reason}: finished requests */
	MET_PREEMPTIONS,	  /* counter */
	MET_WORKER_RESTARTS,	  /* counter */
	MET_TTFT,		  /* histogram, seconds */
	MET_INTER_TOKEN,	  /* histogram, seconds */
	MET_E2E,		  /* histogram, seconds */
	MET_QUEUE_TIME,		  /* histogram, seconds */
	MET_PREFILL_TIME,	  /* histogram, seconds */
	MET_DECODE_TIME,	  /* histogram, seconds */
	MET_TOKEN_DELIVERY,	  /* histogram, seconds: token sampled -> its SSE frame written */
	MET_KV_TRANSFER_BYTES,	  /* counter {transport}, bytes written prefill -> decode */
	MET_KV_TRANSFER_SECONDS,  /* histogram {transport}, seconds: first write -> last done */
	MET_KV_TRANSFER_FAILURES, /* counter {transport}: transfers failed (write, record, lease) */
	MET_KV_LEASE_EXPIRED,	  /* counter {transport}: KV reservations past their deadline */
	MET_N_FAMILIES
};

/* finish_reason label values, in render order. */
enum met_finish {
	MET_FINISH_STOP,   /* "stop": EOS or a stop string */
	MET_FINISH_LENGTH, /* "length": max_tokens or the context */
	MET_FINISH_ABORT,  /* "abort": cancelled by the client or an operator */
	MET_FINISH_ERROR,  /* "error": failed inside duet (no vLLM equivalent) */
	MET_N_FINISH
};

/* Which labels a family carries. */
enum met_labels {
	MET_LABELS_NONE,	   /* one unlabelled series */
	MET_LABELS_VERSION,	   /* one series {version="..."} */
	MET_LABELS_PART,	   /* {partition,role} per label set */
	MET_LABELS_PART_FINISH,	   /* {partition,role,finish_reason} per label set and reason */
	MET_LABELS_PART_TRANSPORT, /* {partition,role,transport} per label set; one transport */
};

/* One row of the family table; all strings static. */
struct met_family_desc {
	const char *name; /* full exposition name, e.g. "duet_prompt_tokens_total" */
	enum met_type type;
	enum met_labels labels;
	const char *unit; /* base unit, documentation only (0.0.4 has no # UNIT) */
	const char *help;
	const double *bounds; /* histograms: n_bounds finite upper bounds, increasing */
	int n_bounds;	      /* the +Inf bucket is implicit and not counted here */
};

/* Table row for f; NULL when f is out of range. */
const struct met_family_desc *met_family(enum met_family f);

/* Name of a finish reason ("stop", ...); NULL when out of range. */
const char *met_finish_name(enum met_finish why);

#define MET_LABEL_MAX 64 /* partition, role, version, transport values: at most 63 bytes */
#define MET_ALL (-1)	 /* series argument of readers: sum over every label set */

struct met_registry;

/*
 * A registry with room for max_series {partition,role} label sets
 * (1..4096).  version is the duet_build_info label value (copied).  duet_up
 * starts at 1.  Returns 0, -EINVAL, -ENAMETOOLONG or -ENOMEM.
 */
int met_create(int max_series, const char *version, struct met_registry **out);
void met_destroy(struct met_registry *r); /* NULL is fine */

/*
 * Register the label set {partition,role}; values are copied and escaped
 * once here.  Returns the series index (0, 1, ... in call order) that
 * updates take, or -EINVAL (empty or NULL value), -ENAMETOOLONG, -EEXIST
 * (same pair again) or -ENOSPC (max_series reached).  Allocates nothing.
 */
int met_series_add(struct met_registry *r, const char *partition, const char *role);
int met_series_count(const struct met_registry *r);

/*
 * Set the transport="..." label value of the MET_LABELS_PART_TRANSPORT
 * families (the configured KV transfer driver, e.g. "shm", "tcp"); it is
 * "none" until set.  The value is copied and escaped once here; a later
 * call replaces it (values already counted stay).  Returns 0, -EINVAL
 * (NULL or empty) or -ENAMETOOLONG (MET_LABEL_MAX bytes or more; the old
 * value stays).  Allocates nothing; met_render_max() already allows for
 * the longest value, so a buffer sized before this call stays big enough.
 */
int met_set_transport(struct met_registry *r, const char *transport);

/*
 * Updates (no allocation, O(1) except met_observe: O(log buckets)).
 * series is an index from met_series_add(); it is ignored for the unlabelled
 * families (MET_UP).  Counters only go up: met_add() drops negative or NaN
 * deltas.  met_observe() drops NaN; a value exactly on a bound lands in
 * that bucket (le is inclusive); negative values land in the first bucket.
 */
void met_set(struct met_registry *r, enum met_family f, int series, double v);	   /* gauges */
void met_add(struct met_registry *r, enum met_family f, int series, double delta); /* counters */
void met_finish(struct met_registry *r, int series, enum met_finish why);	   /* +1 */
void met_observe(struct met_registry *r, enum met_family f, int series, double v);

/* Updates dropped as out of range or of the wrong kind since met_create(). */
uint64_t met_misuse(const struct met_registry *r);

/*
 * Readers.  met_get(): a counter's or gauge's value (MET_REQUEST_SUCCESS:
 * summed over reasons), a histogram's observation count; series MET_ALL
 * sums over every label set.  NaN for an invalid family or series.
 */
double met_get(const struct met_registry *r, enum met_family f, int series);
double met_get_finish(const struct met_registry *r, int series, enum met_finish why);

/*
 * q-quantile (0 <= q <= 1) of a histogram family for one series or MET_ALL,
 * by linear interpolation inside the bucket that holds rank q * count, the
 * way Prometheus' histogram_quantile() does: the first bucket spans
 * [0, bound0] (just bound0 when bound0 <= 0), empty buckets are skipped,
 * and a rank in the +Inf bucket answers the largest finite bound.
 * Returns 0, -EINVAL (bad family, series or q) or -ENODATA (no
 * observations).
 */
int met_quantile(const struct met_registry *r, enum met_family f, int series, double q,
		 double *out);

/*
 * The same over raw bucket counts: counts[i] observations in bucket i
 * (non-cumulative, i < n_bounds: v <= bounds[i] and above bounds[i-1];
 * counts[n_bounds]: above every bound).  NaN when empty or q is out of
 * range.
 */
double met_bucket_quantile(const double *bounds, const uint64_t *counts, int n_bounds, double q);

/*
 * Write the whole registry as Prometheus text exposition format 0.0.4
 * (Content-Type: text/plain; version=0.0.4; charset=utf-8): for each family
 * in table order "# HELP", "# TYPE", then its samples, series in
 * registration order; histograms as cumulative _bucket{le} lines ending in
 * le="+Inf", then _sum and _count.  Integers print exactly; other numbers
 * as the shortest of %.15g / %.16g / %.17g that reads back as the same
 * double; +Inf, -Inf and NaN are spelled that way.  Needs LC_NUMERIC "C"
 * (the default unless someone calls setlocale()).
 *
 * *len is always set to the text's length without its NUL.  Returns 0 when
 * the text and a NUL fit in cap bytes; -ENOSPC otherwise (buf contents
 * unspecified; retry with cap >= *len + 1); -EINVAL for NULL arguments.
 * Allocates nothing.
 */
int met_render(const struct met_registry *r, char *buf, size_t cap, size_t *len);

/*
 * Upper bound of *len from met_render() for any values, given the label
 * sets registered so far: size a buffer once after start-up (and again
 * after a repartition adds label sets).
 */
size_t met_render_max(const struct met_registry *r);

#endif /* DUET_METRICS_H */
