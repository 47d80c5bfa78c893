/* SPDX-License-Identifier: MIT */
/*
 * The supervisor's internals, shared by supervisor.c (workers, requests,
 * the loop) and supervisor-admin.c (/v1/status, /health, the admin routes,
 * events, audit, canaries).  Not for other modules.
 *
 * A client's answer is a struct sup_resp (what on_close and the HTTP side
 * see); each of its n choices is a struct sup_req, one worker request of
 * its own.  Canary requests have no sup_resp.
 */
#ifndef DUET_SUPERVISOR_IMPL_H
#define DUET_SUPERVISOR_IMPL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "runtime/config/config.h"
#include "runtime/ctl/http.h"
#include "runtime/ctl/openai.h"
#include "runtime/ipc/ipc.h"
#include "runtime/model/tokenizer.h"
#include "runtime/supervisor.h"

#define SUP_VERSION "0.1.0"
#define SUP_MAX_EVENTS 64
#define SUP_RECENT 64		 /* finished requests kept for /v1/status */
#define SUP_WINDOW 8192		 /* finished requests kept for the SLO window */
#define SUP_WINDOW_S 60		 /* the SLO window */
#define SUP_EVENT_RING 256	 /* events kept */
#define SUP_EVENT_REPLAY 100	 /* events a new /admin/events subscriber gets first */
#define SUP_EVENT_MSG 256	 /* bytes of an event's message */
#define SUP_KEEPALIVE_MS 15000	 /* ": keepalive" on a silent event stream */
#define SUP_MAX_SUBS 32		 /* /admin/events subscribers */
#define SUP_BREAKER_WINDOW_MS 60000 /* api.breaker_failures are counted over this */
#define SUP_PREFIX_SLOTS 4096	 /* prompt-prefix hashes remembered per prefill partition */
#define SUP_PREFIX_BLOCKS 64	 /* leading blocks of a prompt the router hashes */

/* epoll tags: small integers below this are fixed fds, workers are SUP_TAG_WORKER + index. */
enum { SUP_TAG_SIGNAL = 1, SUP_TAG_API, SUP_TAG_ADMIN, SUP_TAG_WORKER = 16 };

/* What an http_stream's user pointer is (the first member of each). */
enum sup_user_kind { SUP_USER_RESP = 0x52455350, SUP_USER_SUB = 0x53554253 };

struct sup_worker {
	int idx;
	pid_t pid; /* 0: not running */
	struct ipc_chan *ch;
	uint32_t events; /* what the channel fd is registered for */
	bool ready;
	bool drain; /* operator drain: no new requests */
	uint32_t n_ctx;
	uint32_t block_tokens;
	unsigned running;		    /* requests of ours in flight on it */
	int series;			    /* metrics label set */
	uint64_t started_ms, restart_at_ms; /* restart_at_ms != 0: a restart is due then */
	unsigned backoff_ms;
	unsigned restarts;
	char why[320]; /* why it is not ready, for /health */
	struct ipc_stats st, st_prev; /* last two STATS; st.t_ns == 0: none yet */
	uint64_t canary_sent_ms;      /* 0: none in flight */
	uint64_t canary_ok_ms;	      /* last canary that went through; 0: none */
	uint64_t canary_due_ms;	      /* next canary */
	bool drained_said;	      /* the "drained" event went out */
	char canary_why[160];	      /* why the last canary failed; "" when it did not */
	/* Router (split configurations). */
	uint64_t lease_rid;	   /* the LEASE in flight on this decode worker; 0: none */
	bool full;		   /* refused a LEASE for lack of blocks: wait for it to free some */
	uint64_t pending_tokens;   /* prompt tokens shipped to this prefill worker, not yet done */
	unsigned fails;		   /* failures (deaths, failed transfers) since fail_since_ms */
	uint64_t fail_since_ms;	   /* start of the breaker's one-minute window */
	uint64_t breaker_until_ms; /* != 0: circuit breaker open; probe with a canary after */
	uint64_t leases_expired;   /* from STATS, for the metric's deltas */
	/* Prefill partitions: hashes of prompt prefixes (whole blocks) sent to it lately. */
	uint64_t prefix_seen[SUP_PREFIX_SLOTS];
};

/* A prefill -> decode KV link between two partitions' workers. */
struct sup_link {
	int pre, dec;		/* partition indexes */
	bool pre_ok, dec_ok;	/* each end reported XFER_READY 0 */
	bool up;
	char why[160];		/* why it is not up */
	uint64_t bytes, transfers, failures; /* KV shipped over it */
	uint64_t xfer_ns;		     /* sum of the transfers' windows: first write -> last done */
	uint64_t handoffs;		     /* requests adopted on the decode side */
	double handoff_ms;		     /* their sum of prefill's first token -> adopted */
};

/*
 * Where a choice is.  A direct one runs on one worker; in a split
 * configuration it goes QUEUED -> LEASING (decode worker reserves the
 * prompt's blocks) -> PREFILL (prefill worker computes the prompt and writes
 * its KV into them) -> DECODE (the decode worker adopts it and streams), and
 * back to QUEUED (with a new worker request id) when a worker or transfer
 * fails, up to api.max_attempts times.
 */
enum sup_phase { SUP_DIRECT, SUP_QUEUED, SUP_LEASING, SUP_PREFILL, SUP_DECODE };

/* What every hop and retry of a split choice needs: its SUBMIT, kept. */
struct sup_job {
	uint8_t head[IPC_SUBMIT_FIXED]; /* the SUBMIT's fixed part */
	struct ipc_bias *bias;
	uint32_t n_bias;
	int32_t *ids; /* the prompt (r->n_prompt), then the tokens generated before a resume */
	uint32_t n_ids, cap_ids;
	struct ipc_ship *ship; /* the current lease as a SHIP frame */
	uint32_t ship_len;
	struct ipc_kv_record rec; /* PREFILLED, for the ADOPT */
	uint32_t rec_len;	  /* 0: no record yet */
};

/* One choice: one request on one worker. */
struct sup_req {
	struct sup_req *next;
	uint64_t id; /* worker request id */
	struct sup_resp *resp; /* NULL: a canary */
	unsigned index;	       /* choice index */
	int worker;
	bool done;    /* DONE seen, or the worker is gone */
	bool stopped; /* a stop string matched: CANCEL sent, finish stop */
	bool failed;
	struct oai_str stop[OAI_MAX_STOP];
	unsigned n_stop;
	size_t hold; /* longest stop - 1 */
	struct tok_stream ts;
	struct oai_buf text; /* all generated text */
	size_t sent;	     /* bytes of text given to the client */
	uint32_t n_prompt, n_gen, n_cached, max_tokens;
	enum oai_finish finish;
	int err_code;
	char err_msg[IPC_ERRMSG_MAX];
	uint64_t t_submit_ns, t_first_ns, t_last_ns;
	double queue_ms, prefill_ms, decode_ms; /* from DONE (the worker's clock); < 0: unknown */
	struct oai_logprob *lp; /* logprobs of the generated tokens, when asked */
	size_t n_lp, cap_lp;
	size_t lp_sent; /* entries given to the client (streaming) */
	bool counted;	/* counted in S->w[worker].running */
	/* Split configurations (phase != SUP_DIRECT). */
	enum sup_phase phase;
	int pre;		  /* the prefill partition of this attempt; -1: none */
	struct sup_req *qnext;	  /* router queue */
	bool cancel_pending;	  /* cancelled while queued or in flight: the router ends it */
	unsigned attempts;	  /* starts so far */
	uint64_t deadline_ms;	  /* queued: fail after this */
	uint64_t t_queued_ns;	  /* entered the router queue (this attempt) */
	uint64_t t_lease_ns;	  /* LEASE sent (this attempt) */
	uint64_t t_first_pre_ns;  /* the prefill side sampled token 0 (its clock) */
	double xfer_ms;		  /* prefill's first token -> adopted on the decode side; < 0: none */
	char last_err[IPC_ERRMSG_MAX]; /* why the last attempt failed */
	struct sup_job *job;
};

/* One client answer with its n choices. */
struct sup_resp {
	enum sup_user_kind tag; /* SUP_USER_RESP */
	struct http_stream *s;	/* NULL once on_close ran */
	bool streaming, begun;
	bool include_usage;
	enum oai_kind kind;
	char model[128];
	char idstr[40];
	int64_t created;
	uid_t uid;
	char tenant[40];    /* api.tenants' name for uid, else "uid:N" */
	unsigned n, n_done; /* choices, finished choices */
	unsigned logprobs;  /* 0: none; else 1 + top alternatives */
	struct sup_req **choice;
	int err_status; /* first failure among the choices; 0: none */
	char err_code[24];
	char err_msg[IPC_ERRMSG_MAX];
	uint64_t t_submit_ns;
};

/* A finished request, for /v1/status and /admin/requests. */
struct sup_rec {
	char id[56];
	char tenant[40];
	int worker;
	const char *state; /* "done", "failed", "cancelled" */
	const char *finish;
	uint32_t n_prompt, n_gen, max_tokens;
	double ttft_ms, tpot_ms, e2e_ms; /* < 0: none */
	double queue_ms, prefill_ms, decode_ms;
	double xfer_ms; /* split: KV transfer and hand-over; < 0: none */
	int pre;	/* split: the prefill partition; -1: none */
	double t_done;	/* wall clock */
};

/* A finished request, for the SLO window (compact). */
struct sup_win {
	uint64_t t_ms; /* monotonic */
	float ttft_ms, tpot_ms, e2e_ms; /* < 0: none */
};

struct sup_event {
	uint64_t seq;
	double time; /* wall clock */
	char type[16];
	int part; /* partition index; -1: none */
	int level; /* enum duet_log_level */
	char msg[SUP_EVENT_MSG];
};

/* An /admin/events subscriber. */
struct sup_sub {
	enum sup_user_kind tag; /* SUP_USER_SUB */
	struct http_stream *s;
	uint64_t next_seq;
	uint64_t last_ms; /* last write */
};

struct sup {
	const struct sup_options *opt;
	struct duet_config *cfg;
	int epfd, sigfd;
	struct http_server *api, *admin;
	char sock_dir[CFG_SOCKET_DIR_MAX];
	char api_path[CFG_SOCKET_DIR_MAX + 16], admin_path[CFG_SOCKET_DIR_MAX + 16];
	struct met_registry *met;
	char *met_buf;
	size_t met_cap;
	struct tokenizer *tok;
	const struct chat_template *chat;
	const char *model_name;
	uint32_t n_vocab;
	struct oai_limits lim;
	struct sup_worker *w;
	unsigned n_w;
	struct sup_req *reqs;
	unsigned n_reqs;  /* choices in flight (canaries included) */
	unsigned n_resps; /* client answers in flight */
	uint64_t next_id;
	bool up, draining;
	uint64_t start_ms;
	uint64_t drain_deadline_ms;
	uint64_t wd_usec, wd_next_ms;
	struct ipc_msg *msg;	   /* receive buffer */
	struct ipc_submit *submit; /* send buffer */
	struct oai_buf out;	   /* scratch for bodies and SSE frames */
	char *piece;		   /* tok_stream_max() bytes */
	size_t piece_cap;
	gid_t admin_gid; /* (gid_t)-1: none besides root and our uid */
	int audit_fd;
	/* totals for /v1/status */
	uint64_t n_requests, n_ok, n_failed, n_cancelled, prompt_tokens, gen_tokens;
	struct sup_rec recent[SUP_RECENT];
	unsigned recent_head, n_recent;
	struct sup_win *win; /* SUP_WINDOW entries */
	unsigned win_head, n_win;
	double *scratch; /* SUP_WINDOW doubles, for percentiles */
	struct sup_event *ev; /* SUP_EVENT_RING entries */
	uint64_t ev_seq;      /* seq of the next event; events [max(0, ev_seq - RING), ev_seq) kept */
	struct sup_sub *subs[SUP_MAX_SUBS];
	struct sup_link *links; /* every prefill partition with every decode partition */
	unsigned n_links;
	struct sup_req *q_head, *q_tail; /* the router queue (split configurations) */
	bool reloading; /* capturing the first error of a reload */
	char reload_err[SUP_EVENT_MSG];
};

static inline uint64_t sup_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t sup_now_ms(void)
{
	return sup_now_ns() / 1000000u;
}

/* supervisor.c */
int sup_buf_append(struct oai_buf *b, const char *p, size_t n);
void sup_resp_json(struct sup *S, struct http_resp *resp, int ret);
void sup_worker_set_events(struct sup *S, struct sup_worker *w);
int sup_send_cancel(struct sup *S, struct sup_req *r, uint32_t reason);
void sup_start_drain(struct sup *S, const char *why);
/* Re-read the config; lists of what applied and what was refused go to applied/rejected. */
int sup_reload(struct sup *S, struct oai_buf *applied, struct oai_buf *rejected);
const char *sup_worker_state(const struct sup *S, const struct sup_worker *w);
struct sup_worker *sup_pick_worker(struct sup *S);
int sup_submit_canary(struct sup *S, struct sup_worker *w);

/* Split a request from here on: prefill and decode partitions (some link exists). */
static inline bool sup_split(const struct sup *S)
{
	return S->n_links > 0;
}

/* Circuit breaker open: w gets no requests until a canary goes through after the cool-down. */
static inline bool sup_breaker_open(const struct sup_worker *w)
{
	return w->breaker_until_ms != 0;
}

/* w takes new requests: running, not drained, breaker closed. */
static inline bool sup_worker_usable(const struct sup_worker *w)
{
	return w->ready && w->ch && !w->drain && !sup_breaker_open(w);
}

/* The HTTP status of a request that failed with a worker's code: 400 its own fault, else 503. */
static inline int sup_http_status(int code)
{
	bool bad = code == -EINVAL || code == -E2BIG || code == -EOVERFLOW || code == -ERANGE;

	return bad ? 400 : 503;
}

struct sup_req *sup_req_find(struct sup *S, uint64_t id);
void sup_req_finish(struct sup *S, struct sup_req *r, int status, const char *code,
		    const char *msg);
void sup_worker_channel_failed(struct sup *S, struct sup_worker *w);
/* Send SUBMIT + PROMPT_CHUNKs from S->submit's fixed part, bias, and ids[0..n). */
int sup_submit_frames(struct sup *S, struct sup_worker *w, uint64_t id, const struct ipc_bias *bias,
		      uint32_t n_bias, const int32_t *ids, size_t n);
const char *sup_part_name(const struct sup *S, int i);
struct sup_link *sup_link_of(struct sup *S, int x, int y);

/* supervisor-route.c: the router of split configurations */
/* Queue choice r (linked, phase SUP_QUEUED) with its SUBMIT: S->submit's fixed part, bias, ids. */
int sup_route_add(struct sup *S, struct sup_req *r, const struct ipc_bias *bias, uint32_t n_bias,
		  const int32_t *ids, size_t n);
/* Dispatch what can go, end what was cancelled or waited too long. */
void sup_route_kick(struct sup *S);
/* Frames for split choices; each returns false when the frame is not the router's. */
bool sup_route_leased(struct sup *S, struct sup_worker *w, uint64_t id,
		      const struct ipc_leased *l);
bool sup_route_error(struct sup *S, struct sup_worker *w, uint64_t id, const struct ipc_error *e);
bool sup_route_prefilled(struct sup *S, struct sup_worker *w, uint64_t id,
			 const struct ipc_kv_record *rec, uint32_t len);
bool sup_route_done(struct sup *S, struct sup_worker *w, struct sup_req *r,
		    const struct ipc_done *d);
/* Worker w is gone: its split choices go back to the queue (or fail). */
void sup_route_worker_lost(struct sup *S, struct sup_worker *w);
/* r was cancelled (client, stop, operator): true when the router handles it. */
bool sup_route_cancel(struct sup *S, struct sup_req *r);
void sup_route_token(struct sup_req *r, int32_t token);
void sup_route_free(struct sup_req *r);
/* Circuit breaker: w failed / served. */
void sup_breaker_fail(struct sup *S, struct sup_worker *w, const char *why);
void sup_breaker_ok(struct sup *S, struct sup_worker *w);

/* supervisor-admin.c */
int sup_admin_init(struct sup *S);
void sup_admin_fini(struct sup *S);
/* Log tap and state changes: append one event (type a short word; part -1 for none). */
void sup_event(struct sup *S, const char *type, int part, int level, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* Send pending events to subscribers, keepalives; sends canaries that are due. */
void sup_admin_tick(struct sup *S);
/* A choice's TTFT and TPOT so far, ms; -1 before its first / second token. */
double sup_req_ttft_ms(const struct sup_req *r);
double sup_req_tpot_ms(const struct sup_req *r);
/* A choice or canary finished: totals, recent, window. */
void sup_record(struct sup *S, const struct sup_req *r, const char *state, const char *finish);
/* /health, /v1/status, /admin/... on_request handlers; false when path is not theirs. */
bool sup_admin_route(struct sup *S, const struct http_req *req, struct http_resp *resp);
void sup_admin_close(struct sup *S, struct sup_sub *sub);
/* Why the appliance is not healthy now, or NULL. */
const char *sup_health_why(struct sup *S, char *buf, size_t cap);

#endif /* DUET_SUPERVISOR_IMPL_H */
