/* SPDX-License-Identifier: MIT */
/*
 * model — what duet-console knows about the appliance, apart from any
 * drawing: the last /v1/status snapshot parsed into fixed-size structs, ring
 * buffers of samples per series, rates derived from counters, percentiles,
 * the event log, and the requests table's sort and filter.  No curses, no
 * sockets: tested with canned JSON in tests/unit/test_console.c.
 *
 * Times: `t` arguments are seconds on a monotonic clock; latencies are ms.
 * Absent or JSON-null numbers are NAN.
 */
#ifndef DUET_TUI_MODEL_H
#define DUET_TUI_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#define MODEL_RING 600	   /* samples kept per series (10 min at the 1 s default) */
#define MODEL_MAX_PARTS 64 /* as many as duetd allows */
#define MODEL_MAX_LINKS 64
#define MODEL_MAX_REQS 256 /* /v1/status sends at most 64 */
#define MODEL_MAX_EVENTS 512

/* A ring of (time, value) samples, oldest overwritten first. */
struct model_ring {
	double t[MODEL_RING], v[MODEL_RING];
	unsigned head; /* next slot to write */
	unsigned count;
};

void model_ring_push(struct model_ring *r, double t, double v);
/* The I-th newest sample (0 = newest); false when there are not that many. */
bool model_ring_get(const struct model_ring *r, unsigned i, double *t, double *v);
/* The newest min(N, count) values into OUT, oldest first. Returns how many. */
size_t model_ring_tail(const struct model_ring *r, double *out, size_t n);
/*
 * The rate per second of a monotonic counter over the last SPAN seconds
 * (from the oldest sample within the span to the newest).  A decrease (the
 * daemon restarted) counts as a restart from 0.  NAN with fewer than two
 * samples or no elapsed time.
 */
double model_ring_rate(const struct model_ring *r, double span);

/* The P-th percentile (0..100) of N values by linear interpolation; sorts V. NAN when N is 0. */
double model_percentile(double *v, size_t n, double p);

struct model_partition {
	char name[32], role[16], devices[64], cpus[64], state[16], why[192];
	double pid, restarts;
	double running, waiting, batch;
	double kv_block_tokens, kv_total, kv_used, kv_cached, kv_leased, kv_free;
	double pc_queries, pc_hits;
	double steps, step_ms, utilization;
};

struct model_link {
	char prefill[32], decode[32], transport[16];
	double bytes, transfers, failures, lease_expiries; /* counters */
};

struct model_request {
	char id[48], tenant[48], state[16], partition[32], finish[16];
	double prompt_tokens, output_tokens, max_tokens;
	double age_ms, ttft_ms, tpot_ms, e2e_ms;
	/* per-phase times, when the daemon sends them (not in the contract yet) */
	double queue_ms, prefill_ms, transfer_ms, decode_ms;
};

struct model_quantiles {
	double p50, p90, p99;
};

/* One /v1/status answer. */
struct model_status {
	char name[64], version[32], model[128], state[16], reason[256];
	bool healthy, admin;
	double uptime_s, now;
	double slo_ttft_ms, slo_tpot_ms, slo_attainment;
	double requests, requests_ok, requests_failed, requests_cancelled;
	double prompt_tokens, generation_tokens, worker_restarts;
	double window_s, win_requests, win_ttft_ok, win_tpot_ok, win_slo_ok;
	struct model_quantiles ttft, tpot, e2e;
	struct model_partition parts[MODEL_MAX_PARTS];
	struct model_link links[MODEL_MAX_LINKS];
	struct model_request reqs[MODEL_MAX_REQS];
	unsigned n_parts, n_links, n_reqs;
};

/* Parse a /v1/status body. 0, or -EINVAL with the reason in ERR. */
int model_parse_status(const char *json, struct model_status *out, char *err, size_t errcap);

struct model_event {
	long long seq;
	double time; /* seconds since the epoch */
	char type[24], level[8], partition[32], message[256];
};

/* Parse one /admin/events data payload. 0 or -EINVAL. */
int model_parse_event(const char *json, struct model_event *e);

enum model_conn { MODEL_CONNECTING, MODEL_UP, MODEL_DOWN };

/* Sort keys of the requests table, in the order `>` walks them. */
enum model_sort {
	MODEL_SORT_AGE,
	MODEL_SORT_ID,
	MODEL_SORT_TENANT,
	MODEL_SORT_STATE,
	MODEL_SORT_PROMPT,
	MODEL_SORT_OUTPUT,
	MODEL_SORT_TTFT,
	MODEL_SORT_TPOT,
	MODEL_SORT_PARTITION,
	MODEL_SORT_COUNT
};
const char *model_sort_name(enum model_sort k);

/* History of one KV link, keyed by prefill→decode. */
struct model_link_hist {
	char prefill[32], decode[32];
	struct model_ring bytes, transfers; /* the counters */
	struct model_ring gbps;		    /* GB/s between consecutive samples */
};

struct model {
	struct model_status cur; /* the newest snapshot (valid when have) */
	bool have;
	double t_cur; /* when it arrived */

	/* connection, as the fetcher sees it */
	enum model_conn conn;
	char sock[256];	     /* the socket in use */
	char conn_err[256];  /* why it is down */
	double conn_since;   /* when conn last changed */
	unsigned reconnects; /* times it came back after being down */

	/* series: counters sampled at each snapshot, and derived values */
	struct model_ring c_requests, c_gen_tokens;
	struct model_ring rps, tps; /* per second, between consecutive samples */
	struct model_ring ttft_p50, ttft_p90, ttft_p99, tpot_p50, tpot_p90, tpot_p99;
	struct model_ring att_ttft, att_tpot; /* fraction of the window that met each SLO */
	struct model_link_hist lh[MODEL_MAX_LINKS];
	unsigned n_lh;

	/* the event log (newest last) and whether the stream is open */
	struct model_event ev[MODEL_MAX_EVENTS];
	unsigned ev_head, ev_count;
	long long ev_last_seq;
	bool ev_live;
	char ev_note[192]; /* why there is no stream, for the pane */

	/* the requests table */
	enum model_sort sort;
	bool sort_desc;
	char filter[64];
};

void model_init(struct model *m);
/* Take a new snapshot that arrived at T: keep it, push the series. */
void model_update(struct model *m, const struct model_status *s, double t);
/* Connection state changes (ERR: why it is down, or NULL). */
void model_set_conn(struct model *m, enum model_conn c, const char *sock, const char *err,
		    double t);
/* Append an event unless its seq was seen already (a reconnect replays the last 100). */
void model_add_event(struct model *m, const struct model_event *e);
/* The I-th newest event (0 = newest), or NULL. */
const struct model_event *model_event_get(const struct model *m, unsigned i);

/* Requests per second and generated tokens per second over the last SPAN seconds; NAN unknown. */
double model_rps(const struct model *m, double span);
double model_tps(const struct model *m, double span);
/* Window SLO attainment, 0..1, for TTFT and TPOT; NAN with no finished request in the window. */
double model_attainment_ttft(const struct model *m);
double model_attainment_tpot(const struct model *m);
/* Prefix-cache hit rate of a partition, 0..1, NAN with no queries. */
double model_hit_rate(const struct model_partition *p);
/* KV link history for LINK, or NULL. */
const struct model_link_hist *model_link_hist(const struct model *m, const struct model_link *l);
/* GB/s of a link over the last SPAN seconds, and transfers per second. */
double model_link_gbps(const struct model_link_hist *h, double span);
double model_link_tps(const struct model_link_hist *h, double span);
/* "up", "draining", ..., or "circuit open" when the daemon says why it is down that way. */
const char *model_part_state(const struct model_partition *p);

/* Does request R pass the filter (case-insensitive substring of id, tenant, state, partition)? */
bool model_request_matches(const struct model_request *r, const char *filter);
/* Indices into cur.reqs of the requests that pass the filter, in sort order. Returns how many. */
size_t model_requests_view(const struct model *m, unsigned *idx, size_t max);
/* TTFT (WHICH 0) or TPOT (1) percentile P over the requests in the snapshot that have one. */
double model_request_percentile(const struct model *m, int which, double p);

/* Find a partition by name in the current snapshot, or NULL. */
const struct model_partition *model_find_partition(const struct model *m, const char *name);
const struct model_request *model_find_request(const struct model *m, const char *id);

#endif /* DUET_TUI_MODEL_H */
