// SPDX-License-Identifier: MIT
/*
 * The supervisor: worker processes, the API sockets, and the request table
 * between them.  See supervisor.h for the contract.
 *
 * A request lives in struct sup_req from its SUBMIT until both the worker
 * said DONE (or died) and the HTTP side said on_close; whichever comes
 * second frees it.  Text reaches the client through the request's
 * tok_stream (UTF-8 held back across tokens) and, when the request has stop
 * strings, a hold-back of the longest stop minus one byte, so a stop string
 * is never sent to the client.
 */
#include "runtime/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/core/log.h"
#include "runtime/core/mem.h"
#include "runtime/core/sdnotify.h"
#include "runtime/ctl/http.h"
#include "runtime/ctl/metrics.h"
#include "runtime/ctl/openai.h"
#include "runtime/ipc/ipc.h"
#include "runtime/kv/kv.h"
#include "runtime/model/chat.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"

#define SUP_VERSION "0.1.0"
#define SUP_MAX_EVENTS 64

/* epoll tags: small integers below this are fixed fds, workers are SUP_TAG_WORKER + index. */
enum { SUP_TAG_SIGNAL = 1, SUP_TAG_API, SUP_TAG_ADMIN, SUP_TAG_WORKER = 16 };

struct sup_worker {
	int idx;
	pid_t pid; /* 0: not running */
	struct ipc_chan *ch;
	uint32_t events; /* what the channel fd is registered for */
	bool ready;
	uint32_t n_ctx;
	unsigned running;		    /* requests of ours in flight on it */
	int series;			    /* metrics label set */
	uint64_t started_ms, restart_at_ms; /* restart_at_ms != 0: a restart is due then */
	unsigned backoff_ms;
	unsigned restarts;
	char why[320]; /* why it is not ready, for /health */
};

struct sup_req {
	struct sup_req *next;
	uint64_t id;
	int worker;
	struct http_stream *s; /* NULL once on_close ran */
	bool streaming, begun;
	bool done;    /* DONE seen, or the worker is gone */
	bool stopped; /* a stop string matched: CANCEL sent, finish stop */
	enum oai_kind kind;
	char model[128];
	char idstr[40];
	int64_t created;
	bool include_usage;
	struct oai_str stop[OAI_MAX_STOP];
	unsigned n_stop;
	size_t hold; /* longest stop - 1 */
	struct tok_stream ts;
	struct oai_buf text; /* all generated text */
	size_t sent;	     /* bytes of text given to the client */
	uint32_t n_prompt, n_gen;
	enum oai_finish finish;
	int err_code;
	char err_msg[IPC_ERRMSG_MAX];
	uint64_t t_submit_ns, t_first_ns, t_last_ns;
};

struct sup {
	const struct sup_options *opt;
	struct duet_config *cfg;
	int epfd, sigfd;
	struct http_server *api, *admin;
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
	unsigned n_reqs;
	uint64_t next_id;
	bool up, draining;
	uint64_t drain_deadline_ms;
	uint64_t wd_usec, wd_next_ms;
	struct ipc_msg *msg;	   /* receive buffer */
	struct ipc_submit *submit; /* send buffer */
	struct oai_buf out;	   /* scratch for bodies and SSE frames */
	char *piece;		   /* tok_stream_max() bytes */
	size_t piece_cap;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
	return now_ns() / 1000000u;
}

/* --- small output helpers ------------------------------------------------------- */

static int buf_append(struct oai_buf *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *d;

		while (cap < b->len + n + 1)
			cap *= 2;
		d = duet_realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

static void resp_oai_error(struct sup *S, struct http_resp *resp, const struct oai_error *e)
{
	oai_buf_reset(&S->out);
	if (oai_write_error(&S->out, e) == 0)
		http_resp_set(resp, e->http_status, "application/json", S->out.data, S->out.len);
	else
		http_resp_error(resp, 500, "NOMEM", "out of memory");
}

static void resp_json(struct sup *S, struct http_resp *resp, int ret)
{
	if (ret == 0)
		http_resp_set(resp, 200, "application/json", S->out.data, S->out.len);
	else
		http_resp_error(resp, 500, "NOMEM", "out of memory");
}

/* --- workers -------------------------------------------------------------------- */

static void worker_set_events(struct sup *S, struct sup_worker *w)
{
	uint32_t want = EPOLLIN | (ipc_chan_queued(w->ch) ? EPOLLOUT : 0);
	struct epoll_event ev = { .events = want, .data.u64 = SUP_TAG_WORKER + (uint64_t)w->idx };

	if (want != w->events && epoll_ctl(S->epfd, EPOLL_CTL_MOD, ipc_chan_fd(w->ch), &ev) == 0)
		w->events = want;
}

/* Start worker w: socketpair, fork, exec "duetd --worker N --fd K -c FILE". */
static int worker_spawn(struct sup *S, struct sup_worker *w)
{
	char idx[16], fdbuf[16];
	struct epoll_event ev;
	int sv[2], ret;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		close(sv[0]);
		close(sv[1]);
		return ret;
	}
	if (pid == 0) {
		sigset_t none;
		char *argv[10];
		int a = 0;

		/* The child: unblock signals, keep only its end, become the worker. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGINT, SIG_IGN); /* a terminal's Ctrl-C is the supervisor's to handle */
		signal(SIGHUP, SIG_IGN);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (fcntl(sv[1], F_SETFD, 0) != 0)
			_exit(127);
		snprintf(idx, sizeof(idx), "%d", w->idx);
		snprintf(fdbuf, sizeof(fdbuf), "%d", sv[1]);
		argv[a++] = "duetd";
		argv[a++] = "--worker";
		argv[a++] = idx;
		argv[a++] = "--fd";
		argv[a++] = fdbuf;
		argv[a++] = "-c";
		argv[a++] = (char *)S->opt->config_path;
		if (S->opt->verbose)
			argv[a++] = "-v";
		argv[a] = NULL;
		execv(S->opt->exe, argv);
		fprintf(stderr, "duetd: exec %s: %s\n", S->opt->exe, strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	ret = ipc_chan_create(sv[0], IPC_END_SUPERVISOR, 0, &w->ch);
	if (ret) {
		kill(pid, SIGKILL);
		w->pid = pid; /* reaped through SIGCHLD */
		return ret;
	}
	ev.events = EPOLLIN;
	ev.data.u64 = SUP_TAG_WORKER + (uint64_t)w->idx;
	if (epoll_ctl(S->epfd, EPOLL_CTL_ADD, ipc_chan_fd(w->ch), &ev) != 0) {
		ret = -errno;
		ipc_chan_destroy(w->ch);
		w->ch = NULL;
		kill(pid, SIGKILL);
		w->pid = pid;
		return ret;
	}
	w->events = EPOLLIN;
	w->pid = pid;
	w->ready = false;
	w->started_ms = now_ms();
	w->restart_at_ms = 0;
	snprintf(w->why, sizeof(w->why), "partition %s: starting", S->cfg->partitions[w->idx].name);
	log_info("supervisor", "partition %s: worker started (pid %d)",
		 S->cfg->partitions[w->idx].name, (int)pid);
	return 0;
}

static void req_destroy(struct sup_req *r)
{
	oai_buf_free(&r->text);
	for (unsigned i = 0; i < r->n_stop; i++)
		duet_free(r->stop[i].ptr);
	duet_free(r);
}

/* Unlink r from the table and free it. */
static void req_free(struct sup *S, struct sup_req *r)
{
	for (struct sup_req **pp = &S->reqs; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			S->n_reqs--;
			break;
		}
	}
	req_destroy(r);
}

static struct sup_req *req_find(struct sup *S, uint64_t id)
{
	for (struct sup_req *r = S->reqs; r; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

/* Send the request's end to its client (if still there); frees it when the client is gone. */
static void req_finish(struct sup *S, struct sup_req *r, int status, const char *code,
		       const char *msg);

/* Worker w is gone (process or channel): fail its requests, schedule the restart. */
static void worker_lost(struct sup *S, struct sup_worker *w, const char *why)
{
	const char *name = S->cfg->partitions[w->idx].name;
	struct sup_req *r, *next;

	if (w->ch) {
		epoll_ctl(S->epfd, EPOLL_CTL_DEL, ipc_chan_fd(w->ch), NULL);
		ipc_chan_destroy(w->ch);
		w->ch = NULL;
	}
	w->ready = false;
	w->running = 0;
	snprintf(w->why, sizeof(w->why), "partition %s: %s", name, why);
	for (r = S->reqs; r; r = next) {
		next = r->next;
		if (r->worker == w->idx && !r->done)
			req_finish(S, r, 503, "WORKER", "the worker serving the request failed");
	}
}

/* Worker channel failed: kill the process; SIGCHLD does the rest. */
static void worker_channel_failed(struct sup *S, struct sup_worker *w)
{
	if (!S->draining)
		log_warn("supervisor", "partition %s: channel to worker %d failed: %s",
			 S->cfg->partitions[w->idx].name, (int)w->pid,
			 ipc_chan_error_reason(w->ch));
	worker_lost(S, w, "worker channel failed");
	/* Draining, the worker closing its end is how it says goodbye; it exits by itself. */
	if (w->pid > 0 && !S->draining)
		kill(w->pid, SIGKILL);
}

static void worker_exited(struct sup *S, struct sup_worker *w, int status)
{
	const char *name = S->cfg->partitions[w->idx].name;
	uint64_t now = now_ms();
	char why[96];

	if (WIFSIGNALED(status))
		snprintf(why, sizeof(why), "worker %d killed by signal %d (%s)", (int)w->pid,
			 WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(why, sizeof(why), "worker %d exited with status %d", (int)w->pid,
			 WEXITSTATUS(status));
	w->pid = 0;
	worker_lost(S, w, why);
	if (S->draining) {
		log_info("supervisor", "partition %s: %s", name, why);
		return;
	}
	if (now - w->started_ms >= SUP_BACKOFF_RESET_MS || !w->backoff_ms)
		w->backoff_ms = SUP_BACKOFF_MIN_MS;
	else if (w->backoff_ms < SUP_BACKOFF_MAX_MS)
		w->backoff_ms = w->backoff_ms * 2 > SUP_BACKOFF_MAX_MS ? SUP_BACKOFF_MAX_MS
								       : w->backoff_ms * 2;
	w->restart_at_ms = now + w->backoff_ms;
	w->restarts++;
	met_add(S->met, MET_WORKER_RESTARTS, w->series, 1);
	log_error("supervisor", "partition %s: %s; restarting in %u ms", name, why, w->backoff_ms);
}

static void reap_children(struct sup *S)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (unsigned i = 0; i < S->n_w; i++) {
			if (S->w[i].pid == pid) {
				worker_exited(S, &S->w[i], status);
				break;
			}
		}
	}
}

/* --- requests: output --------------------------------------------------------- */

static enum oai_finish finish_of(uint32_t f)
{
	return f == IPC_FINISH_LENGTH || f == IPC_FINISH_CONTEXT ? OAI_FINISH_LENGTH
								 : OAI_FINISH_STOP;
}

static enum met_finish met_finish_of(const struct sup_req *r, uint32_t f)
{
	if (r->stopped)
		return MET_FINISH_STOP;
	switch (f) {
	case IPC_FINISH_LENGTH:
	case IPC_FINISH_CONTEXT:
		return MET_FINISH_LENGTH;
	case IPC_FINISH_EOG:
	case IPC_FINISH_STOP:
		return MET_FINISH_STOP;
	case IPC_FINISH_CANCELLED:
		return MET_FINISH_ABORT;
	default:
		return MET_FINISH_ERROR;
	}
}

static struct oai_meta req_meta(const struct sup_req *r)
{
	return (struct oai_meta){ .kind = r->kind,
				  .id = r->idstr,
				  .model = r->model,
				  .created = r->created,
				  .include_usage = r->include_usage };
}

/* Give the client text[sent, upto). */
static void req_emit(struct sup *S, struct sup_req *r, size_t upto)
{
	struct oai_meta m = req_meta(r);

	if (upto <= r->sent)
		return;
	if (r->streaming && r->s) {
		oai_buf_reset(&S->out);
		if (oai_sse_text(&S->out, &m, r->text.data + r->sent, upto - r->sent) == 0)
			http_stream_write(r->s, S->out.data, S->out.len);
	}
	r->sent = upto;
}

/* Cut the text at the first stop string; true when one matched. */
static bool req_match_stop(struct sup_req *r)
{
	size_t from = r->sent > r->hold ? r->sent - r->hold : 0, best = SIZE_MAX;

	for (unsigned i = 0; i < r->n_stop; i++) {
		const char *p = r->text.len ? strstr(r->text.data + from, r->stop[i].ptr) : NULL;

		if (p && (size_t)(p - r->text.data) < best)
			best = (size_t)(p - r->text.data);
	}
	if (best == SIZE_MAX)
		return false;
	r->text.len = best;
	r->text.data[best] = '\0';
	return true;
}

/* Emit what is safe to send: all but the hold-back, cut to a UTF-8 boundary. */
static void req_emit_safe(struct sup *S, struct sup_req *r)
{
	size_t upto = r->text.len > r->hold ? r->text.len - r->hold : 0;

	while (upto > r->sent && upto < r->text.len &&
	       ((unsigned char)r->text.data[upto] & 0xC0) == 0x80)
		upto--;
	req_emit(S, r, upto);
}

static void req_finish(struct sup *S, struct sup_req *r, int status, const char *code,
		       const char *msg)
{
	struct oai_meta m = req_meta(r);
	struct oai_usage u = { .prompt_tokens = r->n_prompt, .completion_tokens = r->n_gen };
	int ret;

	r->done = true;
	if (S->w[r->worker].running)
		S->w[r->worker].running--;
	if (!r->s) {
		req_free(S, r);
		return;
	}
	oai_buf_reset(&S->out);
	if (status != 200) {
		struct oai_error e;

		oai_error_set(&e, status, code, "", "%s", msg);
		if (r->begun) {
			if (oai_sse_error(&S->out, &e) == 0)
				http_stream_write(r->s, S->out.data, S->out.len);
			http_stream_end(r->s);
		} else if (oai_write_error(&S->out, &e) == 0) {
			http_stream_reply(r->s, status, "application/json", S->out.data,
					  S->out.len);
		} else {
			http_stream_reply_error(r->s, 500, "NOMEM", "out of memory");
		}
		return;
	}
	if (r->streaming) {
		req_emit(S, r, r->text.len);
		oai_buf_reset(&S->out);
		ret = oai_sse_finish(&S->out, &m, r->finish);
		if (!ret && r->include_usage)
			ret = oai_sse_usage(&S->out, &m, &u);
		if (!ret)
			ret = oai_sse_done(&S->out);
		if (!ret)
			http_stream_write(r->s, S->out.data, S->out.len);
		http_stream_end(r->s);
		return;
	}
	ret = oai_write_response(&S->out, &m, r->text.data ? r->text.data : "", r->text.len,
				 r->finish, &u);
	if (ret)
		http_stream_reply_error(r->s, 500, "NOMEM", "out of memory");
	else
		http_stream_reply(r->s, 200, "application/json", S->out.data, S->out.len);
}

/* --- frames from workers ------------------------------------------------------- */

static void on_token(struct sup *S, struct sup_worker *w, uint64_t id, const struct ipc_token *t)
{
	struct sup_req *r = req_find(S, id);
	int n;

	if (!r || r->worker != w->idx || r->done || r->stopped)
		return;
	if (!r->n_gen)
		r->t_first_ns = now_ns();
	else
		met_observe(S->met, MET_INTER_TOKEN, w->series,
			    (double)(now_ns() - r->t_last_ns) / 1e9);
	r->t_last_ns = now_ns();
	r->n_gen++;
	if (t->flags & IPC_TOK_LAST)
		r->finish = finish_of(t->finish);
	/* The end-of-generation token itself is not text. */
	if ((t->flags & IPC_TOK_LAST) && t->finish == IPC_FINISH_EOG)
		return;
	n = tok_stream_push(S->tok, &r->ts, t->token, S->piece, S->piece_cap);
	if (n > 0 && buf_append(&r->text, S->piece, (size_t)n) != 0)
		return;
	if (r->n_stop && req_match_stop(r)) {
		struct ipc_cancel c = { .reason = IPC_CANCEL_STOP };

		r->stopped = true;
		r->finish = OAI_FINISH_STOP;
		ipc_send(w->ch, IPC_CANCEL, r->id, &c, sizeof(c));
		return;
	}
	if (r->streaming)
		req_emit_safe(S, r);
}

static void on_done(struct sup *S, struct sup_worker *w, uint64_t id, const struct ipc_done *d)
{
	struct sup_req *r = req_find(S, id);
	int n;

	if (!r || r->worker != w->idx || r->done)
		return;
	met_finish(S->met, w->series, met_finish_of(r, d->finish));
	met_add(S->met, MET_PROMPT_TOKENS, w->series, d->n_prompt);
	met_add(S->met, MET_GENERATION_TOKENS, w->series, d->n_generated);
	met_add(S->met, MET_PREEMPTIONS, w->series, d->n_preempted);
	met_observe(S->met, MET_E2E, w->series, (double)(now_ns() - r->t_submit_ns) / 1e9);
	if (r->t_first_ns)
		met_observe(S->met, MET_TTFT, w->series,
			    (double)(r->t_first_ns - r->t_submit_ns) / 1e9);
	r->n_prompt = d->n_prompt;
	if (!r->stopped) {
		n = tok_stream_flush(S->tok, &r->ts, S->piece, S->piece_cap);
		if (n > 0)
			buf_append(&r->text, S->piece, (size_t)n);
		if (r->n_stop && req_match_stop(r))
			r->finish = OAI_FINISH_STOP;
	}
	if (d->finish == IPC_FINISH_ERROR) {
		int st = r->err_code == -EINVAL || r->err_code == -E2BIG ||
					 r->err_code == -EOVERFLOW || r->err_code == -ERANGE
				 ? 400
				 : 503;

		req_finish(S, r, st, st == 400 ? "BADPARAM" : "WORKER",
			   r->err_msg[0] ? r->err_msg : "the request failed in the worker");
		return;
	}
	if (d->finish == IPC_FINISH_CANCELLED && !r->stopped) {
		req_finish(S, r, 503, "CANCELLED", "the request was cancelled");
		return;
	}
	req_finish(S, r, 200, NULL, NULL);
}

static void on_stats(struct sup *S, struct sup_worker *w, const struct ipc_stats *st)
{
	met_set(S->met, MET_REQUESTS_RUNNING, w->series, st->running);
	met_set(S->met, MET_REQUESTS_WAITING, w->series, st->waiting);
	met_set(S->met, MET_KV_BLOCKS_USED, w->series, st->kv_used);
	met_set(S->met, MET_KV_BLOCKS_CACHED, w->series, st->kv_cached);
	met_set(S->met, MET_KV_BLOCKS_LEASED, w->series, st->kv_leased);
	met_set(S->met, MET_KV_BLOCKS_TOTAL, w->series, st->kv_total);
	met_set(S->met, MET_KV_USAGE_RATIO, w->series,
		st->kv_total ? (double)st->kv_used / st->kv_total : 0.0);
}

static void worker_readable(struct sup *S, struct sup_worker *w)
{
	const char *name = S->cfg->partitions[w->idx].name;
	struct ipc_msg *m = S->msg;
	int ret;

	while (w->ch && (ret = ipc_recv(w->ch, m)) == 1) {
		switch (m->hdr.type) {
		case IPC_HELLO:
			log_debug("supervisor", "partition %s: HELLO from pid %d", name,
				  (int)m->u.hello.pid);
			break;
		case IPC_READY:
			w->ready = true;
			w->n_ctx = m->u.ready.n_ctx;
			w->why[0] = '\0';
			log_info("supervisor",
				 "partition %s: worker %d ready (context %u, %u KV blocks)", name,
				 (int)w->pid, m->u.ready.n_ctx, m->u.ready.kv_blocks_total);
			break;
		case IPC_TOKEN:
			on_token(S, w, m->hdr.req_id, &m->u.token);
			break;
		case IPC_DONE:
			on_done(S, w, m->hdr.req_id, &m->u.done);
			break;
		case IPC_ERROR:
			if (m->hdr.req_id == 0) {
				log_error("supervisor", "partition %s: worker error: %s", name,
					  m->u.error.msg);
				snprintf(w->why, sizeof(w->why), "partition %s: %s", name,
					 m->u.error.msg);
			} else {
				struct sup_req *r = req_find(S, m->hdr.req_id);

				if (r) {
					r->err_code = m->u.error.code;
					snprintf(r->err_msg, sizeof(r->err_msg), "%s",
						 m->u.error.msg);
				}
			}
			break;
		case IPC_STATS:
			on_stats(S, w, &m->u.stats);
			break;
		default:
			break;
		}
	}
	if (w->ch && ret < 0)
		worker_channel_failed(S, w);
}

/* --- requests: input ---------------------------------------------------------- */

static struct sup_worker *pick_worker(struct sup *S)
{
	struct sup_worker *best = NULL;

	for (unsigned i = 0; i < S->n_w; i++) {
		struct sup_worker *w = &S->w[i];

		if (w->ready && w->ch && (!best || w->running < best->running))
			best = w;
	}
	return best;
}

/* Send SUBMIT (+ PROMPT_CHUNKs) for r on w. */
static int submit_send(struct sup *S, struct sup_worker *w, struct sup_req *r,
		       const struct oai_params *p, const int32_t *ids, size_t n, uint64_t salt)
{
	struct ipc_submit *sub = S->submit;
	const struct oai_sampling *sp = &p->sampling;
	uint32_t first = n < IPC_SUBMIT_MAX_TOKENS ? (uint32_t)n : IPC_SUBMIT_MAX_TOKENS;
	int ret;

	memset(sub, 0, IPC_SUBMIT_FIXED);
	sub->sampling.temperature = sp->temperature;
	sub->sampling.top_p = sp->top_p;
	sub->sampling.min_p = sp->min_p;
	sub->sampling.repeat_penalty = sp->repetition_penalty;
	sub->sampling.presence_penalty = sp->presence_penalty;
	sub->sampling.frequency_penalty = sp->frequency_penalty;
	sub->sampling.top_k = sp->top_k;
	sub->sampling.repeat_last_n = 64;
	sub->sampling.seed = sp->has_seed ? (uint64_t)sp->seed : r->id;
	sub->salt = salt;
	sub->max_tokens = p->max_tokens;
	sub->n_prompt = (uint32_t)n;
	sub->n_tokens = first;
	memcpy(sub->tokens, ids, first * sizeof(int32_t));
	ret = ipc_send(w->ch, IPC_SUBMIT, r->id, sub, ipc_submit_len(first));
	for (size_t off = first; !ret && off < n;) {
		struct ipc_prompt_chunk *c = (struct ipc_prompt_chunk *)S->submit;
		uint32_t k =
			n - off < IPC_CHUNK_MAX_TOKENS ? (uint32_t)(n - off) : IPC_CHUNK_MAX_TOKENS;

		c->n_prompt = (uint32_t)n;
		c->offset = (uint32_t)off;
		c->n_tokens = k;
		c->reserved = 0;
		memcpy(c->tokens, ids + off, k * sizeof(int32_t));
		ret = ipc_send(w->ch, IPC_PROMPT_CHUNK, r->id, c, ipc_chunk_len(k));
		off += k;
	}
	return ret;
}

/* Tokenize text (the whole prompt) into a new array. */
static int encode(struct sup *S, const char *text, size_t len, bool add_special, bool parse_special,
		  int32_t **ids, size_t *n)
{
	size_t cap = len + 8;
	int ret;

	*ids = duet_malloc(cap * sizeof(int32_t));
	if (!*ids)
		return -ENOMEM;
	ret = tok_encode(S->tok, text, len, add_special, parse_special, *ids, cap, n);
	if (ret) {
		duet_free(*ids);
		*ids = NULL;
	}
	return ret;
}

/* Common part of completions and chat: admission, routing, SUBMIT, defer/stream. */
static void start_generation(struct sup *S, const struct http_req *req, struct http_resp *resp,
			     enum oai_kind kind, const struct oai_params *p, const int32_t *ids,
			     size_t n)
{
	struct oai_error e;
	struct sup_worker *w;
	struct sup_req *r;
	uint64_t salt;
	int ret;

	if (S->draining) {
		oai_error_set(&e, 503, "SHUTDOWN", "", "the server is shutting down");
		resp_oai_error(S, resp, &e);
		return;
	}
	if (S->n_reqs >= (unsigned)S->cfg->api.max_queue) {
		oai_error_set(&e, 429, "QUEUEFULL", "", "too many requests in flight (%u)",
			      S->n_reqs);
		resp_oai_error(S, resp, &e);
		return;
	}
	if (p->sampling.n_logit_bias) {
		oai_error_set(&e, 400, "UNSUPPORTED", "logit_bias",
			      "logit_bias: not supported yet");
		resp_oai_error(S, resp, &e);
		return;
	}
	if (n == 0) {
		oai_error_set(&e, 400, "BADPARAM", "prompt", "prompt: empty after tokenization");
		resp_oai_error(S, resp, &e);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < 0 || (uint32_t)ids[i] >= S->n_vocab) {
			oai_error_set(&e, 400, "BADPARAM", "prompt",
				      "prompt: token %" PRId32 " is outside the vocabulary (%u)",
				      ids[i], S->n_vocab);
			resp_oai_error(S, resp, &e);
			return;
		}
	}
	w = pick_worker(S);
	if (!w) {
		oai_error_set(&e, 503, "UNAVAILABLE", "", "no worker is ready");
		resp_oai_error(S, resp, &e);
		return;
	}
	if (n + p->max_tokens > w->n_ctx) {
		oai_error_set(&e, 400, "BADPARAM", "max_tokens",
			      "max_tokens: prompt (%zu tokens) + max_tokens (%u) exceeds the "
			      "context length %u",
			      n, p->max_tokens, w->n_ctx);
		resp_oai_error(S, resp, &e);
		return;
	}
	r = duet_calloc(1, sizeof(*r));
	if (!r)
		goto nomem;
	r->id = ++S->next_id;
	r->worker = w->idx;
	r->kind = kind;
	r->streaming = p->stream;
	r->include_usage = p->include_usage;
	r->created = (int64_t)time(NULL);
	r->n_prompt = (uint32_t)n;
	r->finish = OAI_FINISH_LENGTH;
	r->t_submit_ns = now_ns();
	snprintf(r->model, sizeof(r->model), "%s", p->model.ptr ? p->model.ptr : S->model_name);
	oai_format_id(r->idstr, sizeof(r->idstr), kind, r->id);
	tok_stream_init(&r->ts);
	for (unsigned i = 0; i < p->n_stop; i++) {
		r->stop[i].ptr = duet_strdup(p->stop[i].ptr);
		if (!r->stop[i].ptr) {
			r->n_stop = i;
			req_destroy(r); /* not linked yet */
			goto nomem;
		}
		r->stop[i].len = p->stop[i].len;
		r->n_stop = i + 1;
		if (p->stop[i].len - 1 > r->hold)
			r->hold = p->stop[i].len - 1;
	}
	r->next = S->reqs;
	S->reqs = r;
	S->n_reqs++;
	salt = kv_salt_from_bytes(&req->uid, sizeof(req->uid));
	ret = submit_send(S, w, r, p, ids, n, salt);
	if (ret) {
		log_warn("supervisor", "request %" PRIu64 ": SUBMIT failed: %s", r->id,
			 strerror(-ret));
		req_free(S, r);
		oai_error_set(&e, 503, "UNAVAILABLE", "", "the worker is not accepting requests");
		resp_oai_error(S, resp, &e);
		if (ret != -ENOBUFS)
			worker_channel_failed(S, w);
		return;
	}
	w->running++;
	worker_set_events(S, w);
	if (r->streaming) {
		struct oai_meta m = req_meta(r);

		ret = http_resp_stream(resp, 200, "text/event-stream", r, &r->s);
		if (ret == 0) {
			r->begun = true;
			oai_buf_reset(&S->out);
			if (oai_sse_role(&S->out, &m) == 0 && S->out.len)
				http_stream_write(r->s, S->out.data, S->out.len);
		}
	} else {
		ret = http_resp_defer(resp, r, &r->s);
	}
	if (ret) {
		struct ipc_cancel c = { .reason = IPC_CANCEL_CLIENT };

		r->s = NULL;
		ipc_send(w->ch, IPC_CANCEL, r->id, &c, sizeof(c));
		http_resp_error(resp, 500, "NOMEM", "out of memory");
	}
	return;
nomem:
	http_resp_error(resp, 500, "NOMEM", "out of memory");
}

static void handle_completion(struct sup *S, const struct http_req *req, struct http_resp *resp)
{
	struct oai_completion c;
	struct oai_error e;
	int32_t *ids = NULL;
	size_t n = 0;

	if (oai_parse_completion(req->body, req->body_len, &S->lim, &c, &e)) {
		resp_oai_error(S, resp, &e);
		return;
	}
	if (c.has_prompt_tokens) {
		start_generation(S, req, resp, OAI_KIND_COMPLETION, &c.p, c.prompt_tokens,
				 c.n_prompt_tokens);
	} else if (encode(S, c.prompt.ptr, c.prompt.len, true, false, &ids, &n) == 0) {
		start_generation(S, req, resp, OAI_KIND_COMPLETION, &c.p, ids, n);
	} else {
		oai_error_set(&e, 400, "BADPARAM", "prompt", "prompt: cannot be tokenized");
		resp_oai_error(S, resp, &e);
	}
	duet_free(ids);
	oai_completion_free(&c);
}

static void handle_chat(struct sup *S, const struct http_req *req, struct http_resp *resp)
{
	struct chat_msg *msgs = NULL;
	char *text = NULL, why[160] = "";
	struct oai_chat c;
	struct oai_error e;
	int32_t *ids = NULL;
	size_t len = 0, n = 0;
	int ret;

	if (oai_parse_chat(req->body, req->body_len, &S->lim, &c, &e)) {
		resp_oai_error(S, resp, &e);
		return;
	}
	msgs = duet_calloc(c.n_messages, sizeof(*msgs));
	if (!msgs)
		goto nomem;
	for (size_t i = 0; i < c.n_messages; i++) {
		const char *role = oai_role_name(c.messages[i].role);

		msgs[i] = (struct chat_msg){ role, strlen(role), c.messages[i].content.ptr,
					     c.messages[i].content.len };
	}
	ret = chat_apply(S->chat, msgs, (int)c.n_messages, true, NULL, 0, &len, why, sizeof(why));
	if (ret == -ENOSPC) {
		text = duet_malloc(len + 1);
		if (!text)
			goto nomem;
		ret = chat_apply(S->chat, msgs, (int)c.n_messages, true, text, len + 1, &len, why,
				 sizeof(why));
	}
	if (ret) {
		oai_error_set(&e, 400, "BADPARAM", "messages", "messages: %s",
			      why[0] ? why : "cannot be formatted");
		resp_oai_error(S, resp, &e);
		goto out;
	}
	if (encode(S, text, len, !chat_template_has_bos(S->chat), true, &ids, &n)) {
		oai_error_set(&e, 400, "BADPARAM", "messages", "messages: cannot be tokenized");
		resp_oai_error(S, resp, &e);
		goto out;
	}
	/* The end of an assistant turn is a natural stop when the client gave none. */
	if (!c.p.n_stop && chat_template_stop(S->chat) && *chat_template_stop(S->chat)) {
		c.p.stop[0].ptr = (char *)chat_template_stop(S->chat);
		c.p.stop[0].len = strlen(c.p.stop[0].ptr);
		c.p.n_stop = 1;
		start_generation(S, req, resp, OAI_KIND_CHAT, &c.p, ids, n);
		c.p.n_stop = 0;
		c.p.stop[0].ptr = NULL;
	} else {
		start_generation(S, req, resp, OAI_KIND_CHAT, &c.p, ids, n);
	}
	goto out;
nomem:
	http_resp_error(resp, 500, "NOMEM", "out of memory");
out:
	duet_free(ids);
	duet_free(text);
	duet_free(msgs);
	oai_chat_free(&c);
}

static void handle_tokenize(struct sup *S, const struct http_req *req, struct http_resp *resp)
{
	struct oai_tokenize t;
	struct oai_error e;
	int32_t *ids = NULL;
	size_t n = 0;

	if (oai_parse_tokenize(req->body, req->body_len, &S->lim, &t, &e)) {
		resp_oai_error(S, resp, &e);
		return;
	}
	if (encode(S, t.text.ptr, t.text.len, t.add_special, false, &ids, &n)) {
		oai_error_set(&e, 400, "BADPARAM", "prompt", "prompt: cannot be tokenized");
		resp_oai_error(S, resp, &e);
	} else {
		oai_buf_reset(&S->out);
		resp_json(S, resp, oai_write_tokens(&S->out, ids, n));
	}
	duet_free(ids);
	oai_tokenize_free(&t);
}

static void handle_detokenize(struct sup *S, const struct http_req *req, struct http_resp *resp)
{
	struct oai_detokenize d;
	struct oai_error e;
	char *text = NULL;
	size_t cap, len = 0;

	if (oai_parse_detokenize(req->body, req->body_len, &S->lim, &d, &e)) {
		resp_oai_error(S, resp, &e);
		return;
	}
	for (size_t i = 0; i < d.n_tokens; i++) {
		if (d.tokens[i] < 0 || (uint32_t)d.tokens[i] >= S->n_vocab) {
			oai_error_set(&e, 400, "BADPARAM", "tokens",
				      "tokens[%zu]: %" PRId32 " is outside the vocabulary (%u)", i,
				      d.tokens[i], S->n_vocab);
			resp_oai_error(S, resp, &e);
			goto out;
		}
	}
	cap = (d.n_tokens + 1) * S->piece_cap + 8;
	text = duet_malloc(cap);
	if (!text || tok_decode(S->tok, d.tokens, d.n_tokens, text, cap, &len)) {
		http_resp_error(resp, 500, "INTERNAL", "detokenization failed");
		goto out;
	}
	oai_buf_reset(&S->out);
	resp_json(S, resp, oai_write_text(&S->out, text, len));
out:
	duet_free(text);
	oai_detokenize_free(&d);
}

static void handle_health(struct sup *S, struct http_resp *resp)
{
	const char *why = NULL;

	if (S->draining)
		why = "shutting down";
	for (unsigned i = 0; !why && i < S->n_w; i++)
		if (!S->w[i].ready)
			why = S->w[i].why[0] ? S->w[i].why : "worker not ready";
	if (!why) {
		http_resp_set(resp, 200, "application/json", "{\"status\":\"ok\"}\n", 16);
		return;
	}
	http_resp_error(resp, 503, "UNAVAILABLE", "%s", why);
}

static void handle_metrics(struct sup *S, struct http_resp *resp)
{
	size_t len = 0;

	if (met_render(S->met, S->met_buf, S->met_cap, &len) != 0) {
		http_resp_error(resp, 500, "INTERNAL", "metrics buffer too small");
		return;
	}
	http_resp_set(resp, 200, "text/plain; version=0.0.4; charset=utf-8", S->met_buf, len);
}

static bool is(const struct http_req *req, const char *path)
{
	return strcmp(req->path, path) == 0;
}

static void on_request(void *ctx, const struct http_req *req, struct http_resp *resp)
{
	struct sup *S = ctx;
	bool get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;

	if (is(req, "/v1/completions") || is(req, "/v1/chat/completions") ||
	    is(req, "/v1/tokenize") || is(req, "/v1/detokenize")) {
		if (!post) {
			http_resp_bad_method(resp, req, "POST");
			return;
		}
		if (is(req, "/v1/completions"))
			handle_completion(S, req, resp);
		else if (is(req, "/v1/chat/completions"))
			handle_chat(S, req, resp);
		else if (is(req, "/v1/tokenize"))
			handle_tokenize(S, req, resp);
		else
			handle_detokenize(S, req, resp);
		return;
	}
	if (is(req, "/v1/models") || is(req, "/health") || is(req, "/metrics")) {
		if (!get) {
			http_resp_bad_method(resp, req, "GET");
			return;
		}
		if (is(req, "/health")) {
			handle_health(S, resp);
		} else if (is(req, "/metrics")) {
			handle_metrics(S, resp);
		} else {
			struct oai_model_info mi = { .id = S->model_name, .created = 0 };

			oai_buf_reset(&S->out);
			resp_json(S, resp, oai_write_models(&S->out, &mi, 1));
		}
		return;
	}
	http_resp_not_found(resp, req);
}

static void on_close(void *ctx, struct http_stream *s, void *user, bool completed)
{
	struct sup *S = ctx;
	struct sup_req *r = user;

	(void)s;
	if (!r)
		return;
	r->s = NULL;
	if (r->done) {
		req_free(S, r);
		return;
	}
	if (!completed && S->w[r->worker].ch) {
		struct ipc_cancel c = { .reason = IPC_CANCEL_CLIENT };

		ipc_send(S->w[r->worker].ch, IPC_CANCEL, r->id, &c, sizeof(c));
		worker_set_events(S, &S->w[r->worker]);
	}
}

/* --- set-up --------------------------------------------------------------------- */

/* api.socket_dir, resolved; created when missing. */
static int socket_dir(const struct duet_config *cfg, char *out, size_t cap)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (cfg->api.socket_dir[0])
		n = snprintf(out, cap, "%s", cfg->api.socket_dir);
	else if (geteuid() == 0)
		n = snprintf(out, cap, "/run/duet");
	else if (xdg && xdg[0])
		n = snprintf(out, cap, "%s/duet", xdg);
	else
		n = snprintf(out, cap, "build/run");
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	if (mkdir(out, 0755) != 0 && errno != EEXIST) {
		log_error("supervisor", "mkdir %s: %s", out, strerror(errno));
		return -errno;
	}
	return 0;
}

static const char *group_or_null(const char *key, const char *g)
{
	if (!g[0])
		return NULL;
	if (!getgrnam(g)) {
		log_warn("supervisor", "%s: group '%s' does not exist; keeping the daemon's group",
			 key, g);
		return NULL;
	}
	return g;
}

static int add_fd(struct sup *S, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	return epoll_ctl(S->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static int open_sockets(struct sup *S)
{
	const struct duet_config *cfg = S->cfg;
	struct http_handler h = { .ctx = S, .on_request = on_request, .on_close = on_close };
	struct http_config hc = { 0 };
	char dir[CFG_SOCKET_DIR_MAX];
	int ret;

	ret = socket_dir(cfg, dir, sizeof(dir));
	if (ret)
		return ret;
	snprintf(S->api_path, sizeof(S->api_path), "%s/api.sock", dir);
	snprintf(S->admin_path, sizeof(S->admin_path), "%s/admin.sock", dir);
	hc.path = S->api_path;
	hc.group = group_or_null("api.group", cfg->api.group);
	hc.mode = 0660;
	hc.max_body = (size_t)cfg->api.max_body_kb * 1024;
	ret = http_server_create(&hc, &h, &S->api);
	if (ret)
		return ret;
	hc.path = S->admin_path;
	hc.group = group_or_null("api.admin_group", cfg->api.admin_group);
	hc.is_admin = true;
	ret = http_server_create(&hc, &h, &S->admin);
	if (ret)
		return ret;
	ret = add_fd(S, http_server_fd(S->api), SUP_TAG_API);
	if (!ret)
		ret = add_fd(S, http_server_fd(S->admin), SUP_TAG_ADMIN);
	if (!ret)
		log_info("supervisor", "API on %s, admin on %s", S->api_path, S->admin_path);
	return ret;
}

static int setup(struct sup *S, const struct gguf_file *file, const struct model_desc *desc)
{
	const struct duet_config *cfg = S->cfg;
	char err[256] = "";
	const char *jinja;
	size_t jlen;
	sigset_t set;
	int ret;

	S->epfd = S->sigfd = -1;
	S->msg = duet_malloc(sizeof(*S->msg));
	S->submit = duet_malloc(sizeof(*S->submit));
	S->w = duet_calloc(cfg->n_partitions, sizeof(*S->w));
	if (!S->msg || !S->submit || !S->w)
		return -ENOMEM;
	S->n_w = cfg->n_partitions;

	ret = tok_create(file, desc, &S->tok, err, sizeof(err));
	if (ret) {
		log_error("supervisor", "tokenizer: %s", err);
		return ret;
	}
	S->n_vocab = tok_n_vocab(S->tok);
	S->piece_cap = tok_stream_max(S->tok);
	if (S->piece_cap < 8)
		S->piece_cap = 8;
	S->piece = duet_malloc(S->piece_cap);
	if (!S->piece)
		return -ENOMEM;
	S->model_name = cfg->model.served_name[0] ? cfg->model.served_name : desc->name;
	if (cfg->model.chat_template[0]) {
		S->chat = chat_template_find(cfg->model.chat_template);
	} else if (gguf_get_str(file, "tokenizer.chat_template", &jinja, &jlen, err, sizeof(err)) ==
		   0) {
		S->chat = chat_template_detect(jinja, jlen);
		if (!S->chat)
			log_warn("supervisor",
				 "chat template not recognized; set model.chat_template to one of: "
				 "%s (using chatml)",
				 chat_template_names());
	}
	if (!S->chat) {
		S->chat = chat_template_find("chatml");
		if (!S->chat)
			S->chat = chat_template_at(0);
	}
	log_info("supervisor", "chat template %s%s", chat_template_name(S->chat),
		 cfg->model.chat_template[0] ? " (model.chat_template)" : "");
	S->lim.max_body = (size_t)cfg->api.max_body_kb * 1024;
	S->lim.default_max_tokens = (uint32_t)cfg->api.default_max_tokens;

	ret = met_create((int)cfg->n_partitions, SUP_VERSION, &S->met);
	if (ret)
		return ret;
	for (unsigned i = 0; i < S->n_w; i++) {
		S->w[i].idx = (int)i;
		S->w[i].series = met_series_add(S->met, cfg->partitions[i].name,
						cfg_role_name(cfg->partitions[i].role));
	}
	S->met_cap = met_render_max(S->met) + 1;
	S->met_buf = duet_malloc(S->met_cap);
	if (!S->met_buf)
		return -ENOMEM;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		return -errno;
	S->epfd = epoll_create1(EPOLL_CLOEXEC);
	S->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (S->epfd < 0 || S->sigfd < 0)
		return -errno;
	ret = add_fd(S, S->sigfd, SUP_TAG_SIGNAL);
	if (ret)
		return ret;
	ret = open_sockets(S);
	if (ret)
		return ret;
	for (unsigned i = 0; i < S->n_w; i++) {
		ret = worker_spawn(S, &S->w[i]);
		if (ret) {
			log_error("supervisor", "partition %s: cannot start a worker: %s",
				  cfg->partitions[i].name, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

static void teardown(struct sup *S)
{
	struct sup_req *r;

	/* Servers first: on_close for every open stream while the requests still exist. */
	http_server_destroy(S->api);
	http_server_destroy(S->admin);
	while ((r = S->reqs)) {
		S->reqs = r->next;
		req_destroy(r);
	}
	for (unsigned i = 0; S->w && i < S->n_w; i++) {
		if (S->w[i].pid > 0) {
			kill(S->w[i].pid, SIGKILL);
			waitpid(S->w[i].pid, NULL, 0);
		}
		ipc_chan_destroy(S->w[i].ch);
	}
	if (S->sigfd >= 0)
		close(S->sigfd);
	if (S->epfd >= 0)
		close(S->epfd);
	met_destroy(S->met);
	tok_destroy(S->tok);
	oai_buf_free(&S->out);
	duet_free(S->met_buf);
	duet_free(S->piece);
	duet_free(S->w);
	duet_free(S->submit);
	duet_free(S->msg);
}

/* --- the loop ------------------------------------------------------------------- */

static void start_drain(struct sup *S, int sig)
{
	struct ipc_shutdown sd = { .mode = IPC_SHUTDOWN_DRAIN, .deadline_ms = SUP_DRAIN_MS };

	log_info("duetd", "%s: shutting down", strsignal(sig));
	sdn_notify("STOPPING=1");
	S->draining = true;
	S->drain_deadline_ms = now_ms() + SUP_DRAIN_MS + SUP_KILL_GRACE_MS;
	met_set(S->met, MET_UP, 0, 0);
	for (unsigned i = 0; i < S->n_w; i++) {
		S->w[i].restart_at_ms = 0;
		if (S->w[i].ch) {
			ipc_send(S->w[i].ch, IPC_SHUTDOWN, 0, &sd, sizeof(sd));
			worker_set_events(S, &S->w[i]);
		}
	}
}

static void reload(struct sup *S)
{
	struct duet_config next;

	log_info("duetd", "SIGHUP: re-reading %s", S->opt->config_path);
	sdn_notify("RELOADING=1");
	if (S->opt->reload(S->opt->reload_ctx, &next) == 0) {
		struct ipc_reload rl = { .what = IPC_RELOAD_LOG_LEVEL,
					 .log_level = (uint32_t)duet_log_get_level() };

		/* Partitions, sockets and the model stay as started; the rest applies now. */
		S->cfg->log = next.log;
		S->cfg->api.max_queue = next.api.max_queue;
		S->cfg->api.default_max_tokens = next.api.default_max_tokens;
		S->lim.default_max_tokens = (uint32_t)next.api.default_max_tokens;
		for (unsigned i = 0; i < S->n_w; i++) {
			if (S->w[i].ch) {
				ipc_send(S->w[i].ch, IPC_RELOAD, 0, &rl, sizeof(rl));
				worker_set_events(S, &S->w[i]);
			}
		}
		log_info("duetd", "configuration reloaded (log level %s)",
			 duet_log_level_name(duet_log_get_level()));
	} else {
		log_warn("duetd", "reload failed; keeping the running configuration");
	}
	sdn_notify("READY=1");
}

/* Returns 1 to stop the loop cleanly, a negative code on a fatal error, else 0. */
static int on_signals(struct sup *S)
{
	struct signalfd_siginfo si;

	while (read(S->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap_children(S);
			break;
		case SIGHUP:
			reload(S);
			break;
		default:
			if (!S->draining)
				start_drain(S, (int)si.ssi_signo);
			break;
		}
	}
	return 0;
}

/* Due work outside events: restarts, the first "up", the watchdog, the drain's end. */
static int housekeeping(struct sup *S)
{
	uint64_t now = now_ms();
	bool all_ready = true, any_alive = false;

	for (unsigned i = 0; i < S->n_w; i++) {
		struct sup_worker *w = &S->w[i];

		if (!S->up && !w->pid && !w->ch) {
			log_error("supervisor", "%s; not starting",
				  w->why[0] ? w->why : "a worker failed");
			return -ECHILD;
		}
		if (w->restart_at_ms && now >= w->restart_at_ms && !S->draining) {
			int ret = worker_spawn(S, w);

			if (ret) {
				log_error("supervisor", "partition %s: restart failed: %s",
					  S->cfg->partitions[i].name, strerror(-ret));
				w->restart_at_ms = now + w->backoff_ms;
			}
		}
		all_ready &= w->ready;
		any_alive |= w->pid > 0;
		if (w->ch)
			worker_set_events(S, w);
	}
	if (!S->up && all_ready) {
		S->up = true;
		log_info("duetd",
			 "up (pid %d): %u worker(s) ready; API on %s; Ctrl-C or SIGTERM "
			 "stops",
			 (int)getpid(), S->n_w, S->api_path);
		sdn_notify("READY=1");
		sdn_status("serving; %u partition(s)", S->n_w);
	}
	if (S->wd_usec && now >= S->wd_next_ms) {
		sdn_notify("WATCHDOG=1");
		S->wd_next_ms = now + S->wd_usec / 2000;
	}
	if (S->draining) {
		bool answering = false;

		/* Done when every worker exited and the last answers went out (or time is up). */
		for (struct sup_req *r = S->reqs; r; r = r->next)
			answering |= r->s != NULL;
		if (!any_alive && (!answering || now >= S->drain_deadline_ms))
			return 1;
		if (now >= S->drain_deadline_ms) {
			for (unsigned i = 0; i < S->n_w; i++) {
				if (S->w[i].pid > 0) {
					log_warn(
						"supervisor",
						"partition %s: worker %d did not drain; killing it",
						S->cfg->partitions[i].name, (int)S->w[i].pid);
					kill(S->w[i].pid, SIGKILL);
				}
			}
			S->drain_deadline_ms = now + 1000;
		}
	}
	return 0;
}

static int loop_timeout(struct sup *S)
{
	int t = http_server_timeout_ms(S->api), t2 = http_server_timeout_ms(S->admin);

	if (t < 0 || (t2 >= 0 && t2 < t))
		t = t2;
	/* Restarts, the drain and the watchdog are checked at least this often. */
	if (t < 0 || t > 100)
		t = 100;
	return t;
}

int sup_run(const struct sup_options *opt, struct duet_config *cfg, const struct gguf_file *file,
	    const struct model_desc *desc)
{
	struct sup *S;
	struct epoll_event ev[SUP_MAX_EVENTS];
	int ret;

	S = duet_calloc(1, sizeof(*S));
	if (!S)
		return -ENOMEM;
	S->opt = opt;
	S->cfg = cfg;
	S->wd_usec = sdn_watchdog_usec();
	ret = setup(S, file, desc);
	while (!ret) {
		int n = epoll_wait(S->epfd, ev, SUP_MAX_EVENTS, loop_timeout(S));

		if (n < 0 && errno != EINTR) {
			ret = -errno;
			log_error("supervisor", "epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;

			if (tag == SUP_TAG_SIGNAL) {
				on_signals(S);
			} else if (tag >= SUP_TAG_WORKER && tag - SUP_TAG_WORKER < S->n_w) {
				struct sup_worker *w = &S->w[tag - SUP_TAG_WORKER];

				if (!w->ch)
					continue;
				if (ev[i].events & EPOLLOUT && ipc_flush(w->ch) < 0) {
					worker_channel_failed(S, w);
					continue;
				}
				worker_readable(S, w);
			}
		}
		/* Every round: answers written from worker frames go out now. */
		http_server_run(S->api);
		http_server_run(S->admin);
		ret = housekeeping(S);
	}
	if (ret == 1) {
		ret = 0;
		log_info("supervisor", "all workers stopped; removing %s and %s", S->api_path,
			 S->admin_path);
	}
	teardown(S);
	duet_free(S);
	return ret;
}
