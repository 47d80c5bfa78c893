// SPDX-License-Identifier: MIT
/*
 * Metrics registry and Prometheus text exposition 0.0.4; see metrics.h.
 *
 * Storage, all reserved by met_create():
 *   val[f * max_series + s]              counters and gauges (and duet_up at s = 0)
 *   fin[s * MET_N_FINISH + why]          duet_request_success_total
 *   hcnt[hoff[f] + s * (nb + 1) + b]     histogram buckets, non-cumulative; b = nb is +Inf
 *   hsum/hn[f * max_series + s]          histogram _sum and _count
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/core/mem.h"
#include "runtime/ctl/metrics.h"

/*
 * Bucket upper bounds in seconds, the ones vLLM uses so that dashboards
 * and alerts carry over bucket for bucket.
 */

/* clang-format off */
/* vllm:time_to_first_token_seconds: 1 ms .. 2560 s. */
static const double met_ttft_bounds[] = {
	0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
	1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
};

/* vllm:time_per_output_token_seconds (= inter_token_latency_seconds): 10 ms .. 80 s. */
static const double met_itl_bounds[] = {
	0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
	0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
};

/* vLLM's request latency buckets (e2e, queue, prefill, decode): 0.3 s .. 7680 s. */
static const double met_req_bounds[] = {
	0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
	30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
};
/* Duet's own: the API path's share of a token's latency, 10 us .. 1 s. */
static const double met_delivery_bounds[] = {
	0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005,
	0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
};
/* Duet's own: one request's KV transfer, 0.1 ms (shm, a few blocks) .. 10 s (a long prompt over tcp). */
static const double met_xfer_bounds[] = {
	0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
	0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
};
/* clang-format on */

#define MET_NB(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The one family table; its order is enum met_family's and the render order. */
static const struct met_family_desc met_table[MET_N_FAMILIES] = {
	[MET_UP] = {
		.name = "duet_up",
		.type = MET_GAUGE,
		.labels = MET_LABELS_NONE,
		.unit = "",
		.help = "Whether duetd is up and serving (1) or shutting down (0).",
	},
	[MET_BUILD_INFO] = {
		.name = "duet_build_info",
		.type = MET_GAUGE,
		.labels = MET_LABELS_VERSION,
		.unit = "",
		.help = "Duet build information; always 1.",
	},
	[MET_REQUESTS_RUNNING] = {
		.name = "duet_requests_running",
		.type = MET_GAUGE,
		.labels = MET_LABELS_PART,
		.unit = "requests",
		.help = "Requests in the running batch.",
	},
	[MET_REQUESTS_WAITING] = {
		.name = "duet_requests_waiting",
		.type = MET_GAUGE,
		.labels = MET_LABELS_PART,
		.unit = "requests",
		.help = "Requests waiting to be scheduled.",
	},
	[MET_KV_BLOCKS_USED] = {
		.name = "duet_kv_blocks_used",
		.type = MET_GAUGE,
		.labels = MET_LABELS_PART,
		.unit = "blocks",
		.help = "KV cache blocks held by running or waiting requests.",
	},
	[MET_KV_BLOCKS_CACHED] = {
		.name = "duet_kv_blocks_cached",
		.type = MET_GAUGE,
		.labels = MET_LABELS_PART,
		.unit = "blocks",
		.help = "KV cache blocks held only by the prefix cache.",
	},
	[MET_KV_BLOCKS_LEASED] = {
		.name = "duet_kv_blocks_leased",
		.type = MET_GAUGE,
		.labels = MET_LABELS_PART,
		.unit = "blocks",
		.help = "KV cache blocks leased to or from another partition.",
	},
	[MET_KV_BLOCKS_TOTAL] = {
		.name = "duet_kv_blocks_total",
		.type = MET_GAUGE,
		.labels = MET_LABELS_PART,
		.unit = "blocks",
		.help = "KV cache blocks in the partition's pool.",
	},
	[MET_KV_USAGE_RATIO] = {
		.name = "duet_kv_usage_ratio",
		.type = MET_GAUGE,
		.labels = MET_LABELS_PART,
		.unit = "ratio",
		.help = "KV cache usage, 0 to 1 (1 = full).",
	},
	[MET_PREFIX_CACHE_QUERIES] = {
		.name = "duet_prefix_cache_queries_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART,
		.unit = "tokens",
		.help = "Prompt tokens looked up in the prefix cache.",
	},
	[MET_PREFIX_CACHE_HITS] = {
		.name = "duet_prefix_cache_hits_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART,
		.unit = "tokens",
		.help = "Prompt tokens found in the prefix cache.",
	},
	[MET_PROMPT_TOKENS] = {
		.name = "duet_prompt_tokens_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART,
		.unit = "tokens",
		.help = "Prefill tokens processed.",
	},
	[MET_GENERATION_TOKENS] = {
		.name = "duet_generation_tokens_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART,
		.unit = "tokens",
		.help = "Generation tokens processed.",
	},
	[MET_REQUEST_SUCCESS] = {
		.name = "duet_request_success_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART_FINISH,
		.unit = "requests",
		.help = "Finished requests by finish reason.",
	},
	[MET_PREEMPTIONS] = {
		.name = "duet_preemptions_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART,
		.unit = "requests",
		.help = "Requests preempted by the scheduler.",
	},
	[MET_WORKER_RESTARTS] = {
		.name = "duet_worker_restarts_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART,
		.unit = "restarts",
		.help = "Times the partition's worker was restarted.",
	},
	[MET_TTFT] = {
		.name = "duet_time_to_first_token_seconds",
		.type = MET_HISTOGRAM,
		.labels = MET_LABELS_PART,
		.unit = "seconds",
		.help = "Time from arrival to the first generated token.",
		.bounds = met_ttft_bounds,
		.n_bounds = MET_NB(met_ttft_bounds),
	},
	[MET_INTER_TOKEN] = {
		.name = "duet_inter_token_latency_seconds",
		.type = MET_HISTOGRAM,
		.labels = MET_LABELS_PART,
		.unit = "seconds",
		.help = "Time between consecutive generated tokens.",
		.bounds = met_itl_bounds,
		.n_bounds = MET_NB(met_itl_bounds),
	},
	[MET_E2E] = {
		.name = "duet_e2e_request_latency_seconds",
		.type = MET_HISTOGRAM,
		.labels = MET_LABELS_PART,
		.unit = "seconds",
		.help = "Time from arrival to the last token.",
		.bounds = met_req_bounds,
		.n_bounds = MET_NB(met_req_bounds),
	},
	[MET_QUEUE_TIME] = {
		.name = "duet_request_queue_time_seconds",
		.type = MET_HISTOGRAM,
		.labels = MET_LABELS_PART,
		.unit = "seconds",
		.help = "Time spent waiting before first scheduled.",
		.bounds = met_req_bounds,
		.n_bounds = MET_NB(met_req_bounds),
	},
	[MET_PREFILL_TIME] = {
		.name = "duet_request_prefill_time_seconds",
		.type = MET_HISTOGRAM,
		.labels = MET_LABELS_PART,
		.unit = "seconds",
		.help = "Time from first scheduled to the first token.",
		.bounds = met_req_bounds,
		.n_bounds = MET_NB(met_req_bounds),
	},
	[MET_TOKEN_DELIVERY] = {
		.name = "duet_token_delivery_seconds",
		.type = MET_HISTOGRAM,
		.labels = MET_LABELS_PART,
		.unit = "seconds",
		.help = "Time from a token being sampled in the worker to its stream frame being written by the supervisor.",
		.bounds = met_delivery_bounds,
		.n_bounds = MET_NB(met_delivery_bounds),
	},
	[MET_DECODE_TIME] = {
		.name = "duet_request_decode_time_seconds",
		.type = MET_HISTOGRAM,
		.labels = MET_LABELS_PART,
		.unit = "seconds",
		.help = "Time from the first token to the last.",
		.bounds = met_req_bounds,
		.n_bounds = MET_NB(met_req_bounds),
	},
	[MET_KV_TRANSFER_BYTES] = {
		.name = "duet_kv_transfer_bytes_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART_TRANSPORT,
		.unit = "bytes",
		.help = "KV cache bytes written from a prefill partition to a decode partition.",
	},
	[MET_KV_TRANSFER_SECONDS] = {
		.name = "duet_kv_transfer_seconds",
		.type = MET_HISTOGRAM,
		.labels = MET_LABELS_PART_TRANSPORT,
		.unit = "seconds",
		.help = "Per request, time from the first KV write posted to the last one completed.",
		.bounds = met_xfer_bounds,
		.n_bounds = MET_NB(met_xfer_bounds),
	},
	[MET_KV_TRANSFER_FAILURES] = {
		.name = "duet_kv_transfer_failures_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART_TRANSPORT,
		.unit = "transfers",
		.help = "KV transfers that failed: a write failed, a completion record was refused, or a lease expired under it.",
	},
	[MET_KV_LEASE_EXPIRED] = {
		.name = "duet_kv_lease_expired_total",
		.type = MET_COUNTER,
		.labels = MET_LABELS_PART_TRANSPORT,
		.unit = "leases",
		.help = "KV block reservations that passed their deadline.",
	},
};

static const char *const met_finish_names[MET_N_FINISH] = {
	[MET_FINISH_STOP] = "stop",
	[MET_FINISH_LENGTH] = "length",
	[MET_FINISH_ABORT] = "abort",
	[MET_FINISH_ERROR] = "error",
};

#define MET_MAX_SERIES 4096
#define MET_NUM_MAX 32	 /* formatted number + NUL; %.17g needs at most 24 */
#define MET_NUM_WORST 24 /* "-2.2250738585072014e-308" */
#define MET_LE_LEN (MET_NUM_MAX + 8)
/* 'partition="' + 2 * 63 + '",role="' + 2 * 63 + '"' + NUL */
#define MET_LABELS_LEN (2 * 2 * (MET_LABEL_MAX - 1) + 32)
/* 'transport="' + 2 * 63 + '"' + NUL */
#define MET_TRANSPORT_LEN (2 * (MET_LABEL_MAX - 1) + 16)
#define MET_TRANSPORT_WORST (sizeof("transport=\"\"") - 1 + 2 * (MET_LABEL_MAX - 1))

struct met_series {
	char partition[MET_LABEL_MAX];
	char role[MET_LABEL_MAX];
	char labels[MET_LABELS_LEN]; /* escaped 'partition="..",role=".."', rendered once */
	size_t labels_len;
};

struct met_registry {
	int max_series;
	int n_series;
	uint64_t misuse;
	char version[MET_LABEL_MAX * 2 + 1]; /* escaped */
	char transport[MET_TRANSPORT_LEN];   /* 'transport="<escaped>"', rendered once */
	struct met_series *series;	     /* [max_series] */
	double *val;			     /* [MET_N_FAMILIES * max_series] */
	double *fin;			     /* [max_series * MET_N_FINISH] */
	uint64_t *hcnt;			     /* see the top of the file */
	double *hsum;			     /* [MET_N_FAMILIES * max_series] */
	uint64_t *hn;			     /* [MET_N_FAMILIES * max_series] */
	size_t hoff[MET_N_FAMILIES];
	char (*le)[MET_LE_LEN]; /* 'le="<bound>"', [lefirst[f] + b] */
	int lefirst[MET_N_FAMILIES];
};

const struct met_family_desc *met_family(enum met_family f)
{
	if ((unsigned)f >= MET_N_FAMILIES)
		return NULL;
	return &met_table[f];
}

const char *met_finish_name(enum met_finish why)
{
	if ((unsigned)why >= MET_N_FINISH)
		return NULL;
	return met_finish_names[why];
}

/*
 * Label value escaping of the exposition format: \ " and newline become
 * \\ \" \n.  out must hold 2 * strlen(s) + 1.  Returns the length written.
 */
static size_t met_escape(char *out, const char *s)
{
	size_t n = 0;

	for (; *s; s++) {
		if (*s == '\\' || *s == '"') {
			out[n++] = '\\';
			out[n++] = *s;
		} else if (*s == '\n') {
			out[n++] = '\\';
			out[n++] = 'n';
		} else {
			out[n++] = *s;
		}
	}
	out[n] = '\0';
	return n;
}

static size_t met_fmt_u64(char *out, uint64_t v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
	return n;
}

/*
 * Shortest "%.Ng" (N = 15..17) that reads back as the same double, the
 * way Prometheus' Go client prints floats; integers below 2^53 take a fast
 * path.  out holds MET_NUM_MAX bytes.  Returns the length.
 */
static size_t met_fmt_double(char *out, double v)
{
	int prec, n = 0;

	if (isnan(v))
		return (size_t)snprintf(out, MET_NUM_MAX, "NaN");
	if (isinf(v))
		return (size_t)snprintf(out, MET_NUM_MAX, "%s", v > 0 ? "+Inf" : "-Inf");
	if (v == floor(v) && fabs(v) < 9007199254740992.0 && !(v == 0 && signbit(v))) {
		if (v < 0) {
			out[0] = '-';
			return 1 + met_fmt_u64(out + 1, (uint64_t)-v);
		}
		return met_fmt_u64(out, (uint64_t)v);
	}
	for (prec = 15; prec <= 17; prec++) {
		n = snprintf(out, MET_NUM_MAX, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			break;
	}
	return (size_t)n;
}

int met_create(int max_series, const char *version, struct met_registry **out)
{
	struct met_registry *r;
	size_t nh = 0, ms;
	int f, b, nle = 0;

	if (!out || !version || max_series < 1 || max_series > MET_MAX_SERIES)
		return -EINVAL;
	*out = NULL;
	if (strlen(version) >= MET_LABEL_MAX)
		return -ENAMETOOLONG;
	ms = (size_t)max_series;
	for (f = 0; f < MET_N_FAMILIES; f++) {
		if (met_table[f].type != MET_HISTOGRAM)
			continue;
		nh += ms * (size_t)(met_table[f].n_bounds + 1);
		nle += met_table[f].n_bounds;
	}

	r = duet_calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->max_series = max_series;
	met_escape(r->version, version);
	strcpy(r->transport, "transport=\"none\"");
	r->series = duet_calloc(ms, sizeof(*r->series));
	if (!r->series)
		goto err_free_r;
	r->val = duet_calloc(MET_N_FAMILIES * ms, sizeof(*r->val));
	if (!r->val)
		goto err_free_series;
	r->fin = duet_calloc(ms * MET_N_FINISH, sizeof(*r->fin));
	if (!r->fin)
		goto err_free_val;
	r->hcnt = duet_calloc(nh, sizeof(*r->hcnt));
	if (!r->hcnt)
		goto err_free_fin;
	r->hsum = duet_calloc(MET_N_FAMILIES * ms, sizeof(*r->hsum));
	if (!r->hsum)
		goto err_free_hcnt;
	r->hn = duet_calloc(MET_N_FAMILIES * ms, sizeof(*r->hn));
	if (!r->hn)
		goto err_free_hsum;
	r->le = duet_calloc((size_t)nle, sizeof(*r->le));
	if (!r->le)
		goto err_free_hn;

	nh = 0;
	nle = 0;
	for (f = 0; f < MET_N_FAMILIES; f++) {
		if (met_table[f].type != MET_HISTOGRAM)
			continue;
		r->hoff[f] = nh;
		r->lefirst[f] = nle;
		for (b = 0; b < met_table[f].n_bounds; b++) {
			char num[MET_NUM_MAX];

			met_fmt_double(num, met_table[f].bounds[b]);
			snprintf(r->le[nle + b], MET_LE_LEN, "le=\"%s\"", num);
		}
		nh += ms * (size_t)(met_table[f].n_bounds + 1);
		nle += met_table[f].n_bounds;
	}
	r->val[MET_UP * ms] = 1;
	*out = r;
	return 0;

err_free_hn:
	duet_free(r->hn);
err_free_hsum:
	duet_free(r->hsum);
err_free_hcnt:
	duet_free(r->hcnt);
err_free_fin:
	duet_free(r->fin);
err_free_val:
	duet_free(r->val);
err_free_series:
	duet_free(r->series);
err_free_r:
	duet_free(r);
	return -ENOMEM;
}

void met_destroy(struct met_registry *r)
{
	if (!r)
		return;
	duet_free(r->le);
	duet_free(r->hn);
	duet_free(r->hsum);
	duet_free(r->hcnt);
	duet_free(r->fin);
	duet_free(r->val);
	duet_free(r->series);
	duet_free(r);
}

int met_series_add(struct met_registry *r, const char *partition, const char *role)
{
	struct met_series *s;
	size_t n;
	int i;

	if (!r || !partition || !role || !*partition || !*role)
		return -EINVAL;
	if (strlen(partition) >= MET_LABEL_MAX || strlen(role) >= MET_LABEL_MAX)
		return -ENAMETOOLONG;
	for (i = 0; i < r->n_series; i++)
		if (!strcmp(r->series[i].partition, partition) && !strcmp(r->series[i].role, role))
			return -EEXIST;
	if (r->n_series >= r->max_series)
		return -ENOSPC;

	s = &r->series[r->n_series];
	strcpy(s->partition, partition);
	strcpy(s->role, role);
	n = (size_t)sprintf(s->labels, "partition=\"");
	n += met_escape(s->labels + n, partition);
	n += (size_t)sprintf(s->labels + n, "\",role=\"");
	n += met_escape(s->labels + n, role);
	n += (size_t)sprintf(s->labels + n, "\"");
	s->labels_len = n;
	return r->n_series++;
}

int met_set_transport(struct met_registry *r, const char *transport)
{
	size_t n;

	if (!r || !transport || !*transport)
		return -EINVAL;
	if (strlen(transport) >= MET_LABEL_MAX)
		return -ENAMETOOLONG;
	n = (size_t)sprintf(r->transport, "transport=\"");
	n += met_escape(r->transport + n, transport);
	strcpy(r->transport + n, "\"");
	return 0;
}

int met_series_count(const struct met_registry *r)
{
	return r ? r->n_series : 0;
}

uint64_t met_misuse(const struct met_registry *r)
{
	return r ? r->misuse : 0;
}

/* Slot index for f/series, or -1 (counted as misuse) when out of range or of another type. */
static long met_slot(struct met_registry *r, enum met_family f, int series, enum met_type type)
{
	if ((unsigned)f >= MET_N_FAMILIES || met_table[f].type != type ||
	    met_table[f].labels == MET_LABELS_VERSION)
		goto bad;
	if (met_table[f].labels == MET_LABELS_NONE)
		series = 0;
	else if (series < 0 || series >= r->n_series)
		goto bad;
	return (long)f * r->max_series + series;
bad:
	r->misuse++;
	return -1;
}

void met_set(struct met_registry *r, enum met_family f, int series, double v)
{
	long i = met_slot(r, f, series, MET_GAUGE);

	if (i >= 0)
		r->val[i] = v;
}

void met_add(struct met_registry *r, enum met_family f, int series, double delta)
{
	long i;

	if (f == MET_REQUEST_SUCCESS) { /* needs a reason: met_finish() */
		r->misuse++;
		return;
	}
	i = met_slot(r, f, series, MET_COUNTER);
	if (i < 0)
		return;
	if (!(delta >= 0)) {
		r->misuse++;
		return;
	}
	r->val[i] += delta;
}

void met_finish(struct met_registry *r, int series, enum met_finish why)
{
	if (series < 0 || series >= r->n_series || (unsigned)why >= MET_N_FINISH) {
		r->misuse++;
		return;
	}
	r->fin[series * MET_N_FINISH + why] += 1;
}

/* First bucket whose bound is >= v (le is inclusive); n when above every bound. */
static int met_bucket(const double *bounds, int n, double v)
{
	int lo = 0, hi = n;

	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;

		if (bounds[mid] >= v)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

void met_observe(struct met_registry *r, enum met_family f, int series, double v)
{
	long i = met_slot(r, f, series, MET_HISTOGRAM);
	const struct met_family_desc *d;
	int b;

	if (i < 0)
		return;
	if (isnan(v)) {
		r->misuse++;
		return;
	}
	d = &met_table[f];
	b = met_bucket(d->bounds, d->n_bounds, v);
	r->hcnt[r->hoff[f] + (size_t)series * (size_t)(d->n_bounds + 1) + (size_t)b]++;
	r->hsum[i] += v;
	r->hn[i]++;
}

/* Series range [*s0, *s1) for a reader, or false when invalid. */
static bool met_range(const struct met_registry *r, enum met_family f, int series, int *s0, int *s1)
{
	if (!r || (unsigned)f >= MET_N_FAMILIES)
		return false;
	if (met_table[f].labels == MET_LABELS_NONE || met_table[f].labels == MET_LABELS_VERSION) {
		*s0 = 0;
		*s1 = 1;
	} else if (series == MET_ALL) {
		*s0 = 0;
		*s1 = r->n_series;
	} else if (series >= 0 && series < r->n_series) {
		*s0 = series;
		*s1 = series + 1;
	} else {
		return false;
	}
	return true;
}

double met_get(const struct met_registry *r, enum met_family f, int series)
{
	double sum = 0;
	int s0, s1, s, k;

	if (!met_range(r, f, series, &s0, &s1))
		return NAN;
	if (f == MET_BUILD_INFO)
		return 1;
	for (s = s0; s < s1; s++) {
		size_t i = (size_t)f * (size_t)r->max_series + (size_t)s;

		if (f == MET_REQUEST_SUCCESS)
			for (k = 0; k < MET_N_FINISH; k++)
				sum += r->fin[s * MET_N_FINISH + k];
		else if (met_table[f].type == MET_HISTOGRAM)
			sum += (double)r->hn[i];
		else
			sum += r->val[i];
	}
	return sum;
}

double met_get_finish(const struct met_registry *r, int series, enum met_finish why)
{
	double sum = 0;
	int s0, s1, s;

	if ((unsigned)why >= MET_N_FINISH || !met_range(r, MET_REQUEST_SUCCESS, series, &s0, &s1))
		return NAN;
	for (s = s0; s < s1; s++)
		sum += r->fin[s * MET_N_FINISH + why];
	return sum;
}

double met_bucket_quantile(const double *bounds, const uint64_t *counts, int n_bounds, double q)
{
	uint64_t total = 0, cum = 0;
	double rank, lo;
	int b;

	if (!bounds || !counts || n_bounds < 1 || !(q >= 0 && q <= 1))
		return NAN;
	for (b = 0; b <= n_bounds; b++)
		total += counts[b];
	if (!total)
		return NAN;
	rank = q * (double)total;
	for (b = 0; b <= n_bounds; b++) {
		if (counts[b] && (double)(cum + counts[b]) >= rank)
			break;
		cum += counts[b];
	}
	if (b >= n_bounds)
		return bounds[n_bounds - 1];
	if (b == 0 && bounds[0] <= 0)
		return bounds[0];
	lo = b == 0 ? 0 : bounds[b - 1];
	return lo + (bounds[b] - lo) * ((rank - (double)cum) / (double)counts[b]);
}

int met_quantile(const struct met_registry *r, enum met_family f, int series, double q, double *out)
{
	uint64_t counts[64];
	const struct met_family_desc *d;
	int s0, s1, s, b;

	if (!out || !met_range(r, f, series, &s0, &s1) || met_table[f].type != MET_HISTOGRAM ||
	    !(q >= 0 && q <= 1))
		return -EINVAL;
	d = &met_table[f];
	if (d->n_bounds + 1 > (int)(sizeof(counts) / sizeof(counts[0])))
		return -EINVAL;
	memset(counts, 0, sizeof(counts));
	for (s = s0; s < s1; s++) {
		const uint64_t *h = r->hcnt + r->hoff[f] + (size_t)s * (size_t)(d->n_bounds + 1);

		for (b = 0; b <= d->n_bounds; b++)
			counts[b] += h[b];
	}
	*out = met_bucket_quantile(d->bounds, counts, d->n_bounds, q);
	return isnan(*out) ? -ENODATA : 0;
}

/*
 * Output cursor.  len counts every byte asked for, even past cap, so that
 * -ENOSPC can say how much is needed; one byte of cap stays for the NUL.
 * worst: count every number as its widest form (met_render_max()).
 */
struct met_out {
	char *buf;
	size_t cap;
	size_t len;
	bool worst;
};

static void met_put(struct met_out *o, const char *s, size_t n)
{
	if (o->len + n < o->cap)
		memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void met_puts(struct met_out *o, const char *s)
{
	met_put(o, s, strlen(s));
}

static void met_put_num(struct met_out *o, double v)
{
	char num[MET_NUM_MAX];

	if (o->worst) {
		o->len += MET_NUM_WORST;
		return;
	}
	met_put(o, num, met_fmt_double(num, v));
}

static void met_put_u64(struct met_out *o, uint64_t v)
{
	char num[MET_NUM_MAX];

	if (o->worst) {
		o->len += MET_NUM_WORST;
		return;
	}
	met_put(o, num, met_fmt_u64(num, v));
}

/* HELP text escaping of format 0.0.4: only \ and newline. */
static void met_put_help(struct met_out *o, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			met_put(o, "\\\\", 2);
		else if (*s == '\n')
			met_put(o, "\\n", 2);
		else
			met_put(o, s, 1);
	}
}

/*
 * "name<suffix>{labels<,tp><,extra>} " up to the value.  tp is the
 * registry's transport label; met_render_max() counts it at its longest,
 * since met_set_transport() may come after the buffer is sized.
 */
static void met_put_head(struct met_out *o, const char *name, const char *suffix,
			 const struct met_series *s, const char *tp, const char *extra)
{
	bool comma = false;

	met_puts(o, name);
	met_puts(o, suffix);
	if (s || tp || extra) {
		met_put(o, "{", 1);
		if (s) {
			met_put(o, s->labels, s->labels_len);
			comma = true;
		}
		if (tp) {
			if (comma)
				met_put(o, ",", 1);
			if (o->worst)
				o->len += MET_TRANSPORT_WORST;
			else
				met_puts(o, tp);
			comma = true;
		}
		if (extra) {
			if (comma)
				met_put(o, ",", 1);
			met_puts(o, extra);
		}
		met_put(o, "}", 1);
	}
	met_put(o, " ", 1);
}

static void met_render_hist(const struct met_registry *r, struct met_out *o, enum met_family f,
			    int si, const char *tp)
{
	const struct met_family_desc *d = &met_table[f];
	const struct met_series *s = &r->series[si];
	const uint64_t *h = r->hcnt + r->hoff[f] + (size_t)si * (size_t)(d->n_bounds + 1);
	size_t i = (size_t)f * (size_t)r->max_series + (size_t)si;
	uint64_t cum = 0;
	int b;

	for (b = 0; b <= d->n_bounds; b++) {
		cum += h[b];
		met_put_head(o, d->name, "_bucket", s, tp,
			     b < d->n_bounds ? r->le[r->lefirst[f] + b] : "le=\"+Inf\"");
		met_put_u64(o, cum);
		met_put(o, "\n", 1);
	}
	met_put_head(o, d->name, "_sum", s, tp, NULL);
	met_put_num(o, r->hsum[i]);
	met_put(o, "\n", 1);
	met_put_head(o, d->name, "_count", s, tp, NULL);
	met_put_u64(o, r->hn[i]);
	met_put(o, "\n", 1);
}

static void met_render_family(const struct met_registry *r, struct met_out *o, enum met_family f)
{
	static const char *const type_names[] = { "counter", "gauge", "histogram" };
	const struct met_family_desc *d = &met_table[f];
	const char *tp = d->labels == MET_LABELS_PART_TRANSPORT ? r->transport : NULL;
	char extra[MET_LABEL_MAX * 2 + 32];
	int s, k;

	met_puts(o, "# HELP ");
	met_puts(o, d->name);
	met_put(o, " ", 1);
	met_put_help(o, d->help);
	met_puts(o, "\n# TYPE ");
	met_puts(o, d->name);
	met_put(o, " ", 1);
	met_puts(o, type_names[d->type]);
	met_put(o, "\n", 1);

	switch (d->labels) {
	case MET_LABELS_NONE:
		met_put_head(o, d->name, "", NULL, NULL, NULL);
		met_put_num(o, r->val[(size_t)f * (size_t)r->max_series]);
		met_put(o, "\n", 1);
		break;
	case MET_LABELS_VERSION:
		snprintf(extra, sizeof(extra), "version=\"%s\"", r->version);
		met_put_head(o, d->name, "", NULL, NULL, extra);
		met_puts(o, "1\n");
		break;
	case MET_LABELS_PART:
	case MET_LABELS_PART_TRANSPORT:
		for (s = 0; s < r->n_series; s++) {
			if (d->type == MET_HISTOGRAM) {
				met_render_hist(r, o, f, s, tp);
				continue;
			}
			met_put_head(o, d->name, "", &r->series[s], tp, NULL);
			met_put_num(o, r->val[(size_t)f * (size_t)r->max_series + (size_t)s]);
			met_put(o, "\n", 1);
		}
		break;
	case MET_LABELS_PART_FINISH:
		for (s = 0; s < r->n_series; s++) {
			for (k = 0; k < MET_N_FINISH; k++) {
				snprintf(extra, sizeof(extra), "finish_reason=\"%s\"",
					 met_finish_names[k]);
				met_put_head(o, d->name, "", &r->series[s], NULL, extra);
				met_put_num(o, r->fin[s * MET_N_FINISH + k]);
				met_put(o, "\n", 1);
			}
		}
		break;
	}
}

static void met_render_all(const struct met_registry *r, struct met_out *o)
{
	int f;

	for (f = 0; f < MET_N_FAMILIES; f++)
		met_render_family(r, o, (enum met_family)f);
}

int met_render(const struct met_registry *r, char *buf, size_t cap, size_t *len)
{
	struct met_out o = { .buf = buf, .cap = cap };

	if (!r || !len || (!buf && cap))
		return -EINVAL;
	met_render_all(r, &o);
	*len = o.len;
	if (o.len >= cap)
		return -ENOSPC;
	buf[o.len] = '\0';
	return 0;
}

size_t met_render_max(const struct met_registry *r)
{
	struct met_out o = { .worst = true };

	if (!r)
		return 0;
	met_render_all(r, &o);
	return o.len;
}
