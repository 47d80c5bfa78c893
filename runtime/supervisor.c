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
#include "runtime/supervisor-impl.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
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

#include "runtime/core/err.h"
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

/* --- small output helpers ------------------------------------------------------- */

int sup_buf_append(struct oai_buf *b, const char *p, size_t n)
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

void sup_resp_json(struct sup *S, struct http_resp *resp, int ret)
{
	if (ret == 0)
		http_resp_set(resp, 200, "application/json", S->out.data, S->out.len);
	else
		http_resp_error(resp, 500, "NOMEM", "out of memory");
}

/* --- workers -------------------------------------------------------------------- */

void sup_worker_set_events(struct sup *S, struct sup_worker *w)
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
	w->started_ms = sup_now_ms();
	w->restart_at_ms = 0;
	w->leases_expired = 0; /* a new worker counts from 0 */
	snprintf(w->why, sizeof(w->why), "partition %s: starting", S->cfg->partitions[w->idx].name);
	log_info("supervisor", "partition %s: worker started (pid %d)",
		 S->cfg->partitions[w->idx].name, (int)pid);
	sup_event(S, "worker_start", w->idx, DUET_LOG_INFO, "partition %s: worker started (pid %d)",
		  S->cfg->partitions[w->idx].name, (int)pid);
	return 0;
}

/* --- requests: bookkeeping ------------------------------------------------------ */

static void req_destroy(struct sup_req *r)
{
	sup_route_free(r);
	oai_buf_free(&r->text);
	for (unsigned i = 0; i < r->n_stop; i++)
		duet_free(r->stop[i].ptr);
	duet_free(r->lp);
	duet_free(r);
}

/* Take r out of the table of choices in flight (it stays owned by its answer). */
static void req_unlink(struct sup *S, struct sup_req *r)
{
	for (struct sup_req **pp = &S->reqs; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			r->next = NULL;
			S->n_reqs--;
			return;
		}
	}
}

struct sup_req *sup_req_find(struct sup *S, uint64_t id)
{
	for (struct sup_req *r = S->reqs; r; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

static void resp_destroy(struct sup *S, struct sup_resp *p)
{
	for (unsigned i = 0; i < p->n; i++) {
		if (p->choice[i]) {
			if (!p->choice[i]->done)
				req_unlink(S, p->choice[i]);
			req_destroy(p->choice[i]);
		}
	}
	duet_free(p->choice);
	duet_free(p);
}

/* Free p once every choice is over and the client side is closed. */
static void resp_maybe_free(struct sup *S, struct sup_resp *p)
{
	if (p->n_done == p->n && !p->s) {
		resp_destroy(S, p);
		S->n_resps--;
	}
}

int sup_send_cancel(struct sup *S, struct sup_req *r, uint32_t reason)
{
	struct sup_worker *w = &S->w[r->worker];
	struct ipc_cancel c = { .reason = reason };
	int ret;

	if (r->done)
		return -ESRCH;
	if (r->phase != SUP_DIRECT && sup_route_cancel(S, r))
		return 0;
	if (!w->ch)
		return -ESRCH;
	ret = ipc_send(w->ch, IPC_CANCEL, r->id, &c, sizeof(c));
	sup_worker_set_events(S, w);
	return ret;
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

static struct oai_meta resp_meta(const struct sup_resp *p)
{
	return (struct oai_meta){ .kind = p->kind,
				  .id = p->idstr,
				  .model = p->model,
				  .created = p->created,
				  .include_usage = p->include_usage };
}

/* A token's text on its own, for logprobs. */
static size_t token_piece(void *ctx, int32_t token, char *buf, size_t cap)
{
	struct sup *S = ctx;
	struct tok_stream ts;
	int n, m;

	if (cap < S->piece_cap + 4)
		return 0;
	tok_stream_init(&ts);
	n = tok_stream_push(S->tok, &ts, token, buf, cap);
	if (n < 0)
		return 0;
	m = tok_stream_flush(S->tok, &ts, buf + n, cap - (size_t)n);
	return (size_t)n + (m > 0 ? (size_t)m : 0);
}

static struct oai_choice req_choice(struct sup *S, const struct sup_req *r)
{
	return (struct oai_choice){ .index = r->index,
				    .text = r->text.data,
				    .len = r->text.len,
				    .finish = r->finish,
				    .lp = r->resp->logprobs ? r->lp : NULL,
				    .n_lp = r->n_lp,
				    .piece = token_piece,
				    .piece_ctx = S };
}

/* Give the client text[sent, upto) and the logprobs not sent yet. */
static void req_emit(struct sup *S, struct sup_req *r, size_t upto)
{
	struct sup_resp *p = r->resp;
	struct oai_meta m = resp_meta(p);
	struct oai_choice c;

	if (upto <= r->sent && r->lp_sent >= r->n_lp)
		return;
	if (upto < r->sent)
		upto = r->sent;
	if (p->streaming && p->s) {
		c = req_choice(S, r);
		c.text = r->text.data + r->sent;
		c.len = upto - r->sent;
		c.text_offset = r->sent;
		if (c.lp) {
			c.lp = r->lp + r->lp_sent;
			c.n_lp = r->n_lp - r->lp_sent;
		}
		oai_buf_reset(&S->out);
		if (oai_sse_choice(&S->out, &m, &c, false) == 0)
			http_stream_write(p->s, S->out.data, S->out.len);
	}
	r->sent = upto;
	r->lp_sent = r->n_lp;
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

/* A finished choice's phases for the answer's "timings" (-1: none). */
static struct oai_timing choice_timing(const struct sup *S, const struct sup_req *r)
{
	struct oai_timing t = { .queue_ms = r->queue_ms,
				.prefill_ms = r->prefill_ms,
				.transfer_ms = r->xfer_ms,
				.decode_ms = r->decode_ms,
				.ttft_ms = sup_req_ttft_ms(r),
				.tpot_ms = sup_req_tpot_ms(r) };

	if (r->worker >= 0 && (size_t)r->worker < S->cfg->n_partitions)
		t.partition = S->cfg->partitions[r->worker].name;
	if (r->job && r->pre >= 0 && (size_t)r->pre < S->cfg->n_partitions)
		t.prefill_partition = S->cfg->partitions[r->pre].name;
	return t;
}

/* The answer's body or its stream's end, with usage u. */
static void resp_write(struct sup *S, struct sup_resp *p, const struct oai_meta *m,
		       const struct oai_usage *u)
{
	struct oai_choice *cs;
	int ret;

	if (p->err_status) {
		struct oai_error e;

		oai_error_set(&e, p->err_status, p->err_code, "", "%s", p->err_msg);
		if (p->begun) {
			if (oai_sse_error(&S->out, &e) == 0)
				http_stream_write(p->s, S->out.data, S->out.len);
			http_stream_end(p->s);
		} else if (oai_write_error(&S->out, &e) == 0) {
			http_stream_reply(p->s, p->err_status, "application/json", S->out.data,
					  S->out.len);
		} else {
			http_stream_reply_error(p->s, 500, "NOMEM", "out of memory");
		}
		return;
	}
	if (p->streaming) {
		ret = p->include_usage ? oai_sse_usage(&S->out, m, u) : 0;
		if (!ret)
			ret = oai_sse_done(&S->out);
		if (!ret)
			http_stream_write(p->s, S->out.data, S->out.len);
		http_stream_end(p->s);
		return;
	}
	cs = duet_calloc(p->n, sizeof(*cs));
	ret = cs ? 0 : -ENOMEM;
	for (unsigned i = 0; !ret && i < p->n; i++)
		cs[i] = req_choice(S, p->choice[i]);
	if (!ret)
		ret = oai_write_choices(&S->out, m, cs, p->n, u);
	duet_free(cs);
	if (ret)
		http_stream_reply_error(p->s, 500, "NOMEM", "out of memory");
	else
		http_stream_reply(p->s, 200, "application/json", S->out.data, S->out.len);
}

/* Every choice is over: the answer (or its end) goes to the client. */
static void resp_complete(struct sup *S, struct sup_resp *p)
{
	struct oai_meta m = resp_meta(p);
	struct oai_usage u = { 0 };
	struct oai_timing *tm;

	if (!p->s)
		return;
	u.prompt_tokens = p->choice[0]->n_prompt;
	u.cached_tokens = p->choice[0]->n_cached;
	for (unsigned i = 0; i < p->n; i++)
		u.completion_tokens += p->choice[i]->n_gen;
	/* Without memory for them the answer goes out without its timings. */
	tm = p->err_status ? NULL : duet_calloc(p->n, sizeof(*tm));
	for (unsigned i = 0; tm && i < p->n; i++)
		tm[i] = choice_timing(S, p->choice[i]);
	u.timings = tm;
	u.n_timings = tm ? p->n : 0;
	oai_buf_reset(&S->out);
	resp_write(S, p, &m, &u);
	duet_free(tm);
}

/*
 * Choice r is over (status 200: it finished; else it failed with code and
 * msg).  A failure fails the whole answer: the other choices are cancelled.
 */
void sup_req_finish(struct sup *S, struct sup_req *r, int status, const char *code,
		    const char *msg)
{
	struct sup_resp *p = r->resp;
	struct sup_worker *w = &S->w[r->worker];

	r->done = true;
	r->failed = status != 200;
	req_unlink(S, r);
	if (r->counted && w->running)
		w->running--;
	r->counted = false;
	if (!p) {
		/* A canary: healthy when it produced its token. */
		if (status == 200 && r->n_gen) {
			w->canary_ok_ms = sup_now_ms();
			w->canary_why[0] = '\0';
		} else if (w->ready) {
			snprintf(w->canary_why, sizeof(w->canary_why), "canary failed: %s",
				 msg ? msg : "no token");
			log_warn("supervisor", "partition %s: %s",
				 S->cfg->partitions[r->worker].name, w->canary_why);
		}
		w->canary_sent_ms = 0;
		req_destroy(r);
		return;
	}
	sup_record(S, r,
		   status == 200		    ? "done"
		   : strcmp(code, "CANCELLED") == 0 ? "cancelled"
						    : "failed",
		   status == 200 ? (r->finish == OAI_FINISH_LENGTH ? "length" : "stop")
		   : strcmp(code, "CANCELLED") == 0 ? "cancelled"
						    : "error");
	p->n_done++;
	if (status != 200 && !p->err_status) {
		p->err_status = status;
		snprintf(p->err_code, sizeof(p->err_code), "%s", code);
		snprintf(p->err_msg, sizeof(p->err_msg), "%s", msg);
		for (unsigned i = 0; i < p->n; i++)
			if (p->choice[i] != r)
				sup_send_cancel(S, p->choice[i], IPC_CANCEL_CLIENT);
	}
	if (status == 200 && !p->err_status && p->streaming && p->s) {
		struct oai_meta m = resp_meta(p);
		struct oai_choice c = req_choice(S, r);

		req_emit(S, r, r->text.len);
		c.lp = NULL;
		oai_buf_reset(&S->out);
		if (oai_sse_choice(&S->out, &m, &c, true) == 0)
			http_stream_write(p->s, S->out.data, S->out.len);
	}
	if (p->n_done == p->n)
		resp_complete(S, p);
	resp_maybe_free(S, p);
}

static void link_down(struct sup *S, struct sup_link *l, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

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
	snprintf(w->why, sizeof(w->why), "partition %s: %s", name, why);
	sup_route_worker_lost(S, w);
	for (r = S->reqs; r; r = next) {
		next = r->next;
		if (r->worker == w->idx && !r->done && r->phase == SUP_DIRECT)
			sup_req_finish(S, r, 503, "WORKER", "the worker serving the request failed");
	}
	w->running = 0;
	w->lease_rid = 0;
	memset(w->prefix_seen, 0, sizeof(w->prefix_seen)); /* its cache went with it */
	w->full = false;
	w->pending_tokens = 0;
	w->canary_sent_ms = 0;
	w->canary_ok_ms = 0;
	for (unsigned i = 0; i < S->n_links; i++) {
		struct sup_link *l = &S->links[i];

		if (l->pre == w->idx || l->dec == w->idx)
			link_down(S, l, "partition %s: %s", name, why);
	}
}

/* Worker channel failed: kill the process; SIGCHLD does the rest. */
void sup_worker_channel_failed(struct sup *S, struct sup_worker *w)
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
	uint64_t now = sup_now_ms();
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
	sup_breaker_fail(S, w, why);
	met_add(S->met, MET_WORKER_RESTARTS, w->series, 1);
	log_error("supervisor", "partition %s: %s; restarting in %u ms", name, why, w->backoff_ms);
	sup_event(S, "worker_exit", w->idx, DUET_LOG_ERROR, "partition %s: %s; restarting in %u ms",
		  name, why, w->backoff_ms);
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

/* --- frames from workers ------------------------------------------------------- */

static void on_token(struct sup *S, struct sup_worker *w, uint64_t id, const struct ipc_token *t)
{
	struct sup_req *r = sup_req_find(S, id);
	uint64_t now = sup_now_ns();
	int n;

	if (!r || r->worker != w->idx || r->done || r->stopped)
		return;
	if (!r->n_gen)
		r->t_first_ns = now;
	else if (r->resp)
		met_observe(S->met, MET_INTER_TOKEN, w->series, (double)(now - r->t_last_ns) / 1e9);
	r->t_last_ns = now;
	r->n_gen++;
	if (r->phase == SUP_DECODE)
		sup_route_token(r, t->token);
	if (t->flags & IPC_TOK_LAST)
		r->finish = finish_of(t->finish);
	if (!r->resp)
		return;
	/* The end-of-generation token itself is not text (nor a logprobs entry). */
	if ((t->flags & IPC_TOK_LAST) && t->finish == IPC_FINISH_EOG) {
		if (r->n_lp > r->lp_sent && r->lp[r->n_lp - 1].token == t->token)
			r->n_lp--;
		return;
	}
	n = tok_stream_push(S->tok, &r->ts, t->token, S->piece, S->piece_cap);
	if (n > 0 && sup_buf_append(&r->text, S->piece, (size_t)n) != 0)
		return;
	if (r->n_stop && req_match_stop(r)) {
		r->stopped = true;
		r->finish = OAI_FINISH_STOP;
		sup_send_cancel(S, r, IPC_CANCEL_STOP);
		return;
	}
	if (r->resp->streaming) {
		size_t before = r->sent;

		req_emit_safe(S, r);
		/* Both ends use CLOCK_MONOTONIC on this host. */
		if (r->sent > before && r->resp->s && t->t_ns && now >= t->t_ns)
			met_observe(S->met, MET_TOKEN_DELIVERY, w->series,
				    (double)(sup_now_ns() - t->t_ns) / 1e9);
	}
}

/* Comes just before the TOKEN of the same index; kept until the token's text is sent. */
static void on_logprobs(struct sup *S, struct sup_worker *w, uint64_t id,
			const struct ipc_logprobs *l)
{
	struct sup_req *r = sup_req_find(S, id);
	struct oai_logprob *e;

	if (!r || r->worker != w->idx || r->done || r->stopped || !r->resp || !r->resp->logprobs)
		return;
	if (r->n_lp == r->cap_lp) {
		size_t cap = r->cap_lp ? r->cap_lp * 2 : 16;
		struct oai_logprob *lp = duet_realloc(r->lp, cap * sizeof(*lp));

		if (!lp)
			return; /* the answer lacks this entry rather than failing */
		r->lp = lp;
		r->cap_lp = cap;
	}
	e = &r->lp[r->n_lp++];
	e->token = l->token;
	e->logprob = l->logprob;
	e->n_top = l->n_top < OAI_MAX_TOP_LOGPROBS ? l->n_top : OAI_MAX_TOP_LOGPROBS;
	for (uint32_t k = 0; k < e->n_top; k++) {
		e->top[k].token = l->top[k].token;
		e->top[k].logprob = l->top[k].logprob;
	}
}

static void on_done(struct sup *S, struct sup_worker *w, uint64_t id, const struct ipc_done *d)
{
	struct sup_req *r = sup_req_find(S, id);
	uint64_t now = sup_now_ns();
	bool split;
	int n;

	if (!r || r->worker != w->idx || r->done)
		return;
	if (r->phase != SUP_DIRECT && sup_route_done(S, w, r, d))
		return;
	if (d->finish != IPC_FINISH_ERROR)
		sup_breaker_ok(S, w);
	split = r->phase == SUP_DECODE;
	if (!split) {
		/* Split, these stay: the client's prompt (not a resumed attempt's), the
		 * prefill side's n_cached, queue and prefill times. */
		r->n_prompt = d->n_prompt;
		r->n_cached = d->n_cached;
		r->queue_ms = r->prefill_ms = -1;
		if (d->t_arrival_ns && d->t_sched_ns >= d->t_arrival_ns) {
			r->queue_ms = (double)(d->t_sched_ns - d->t_arrival_ns) / 1e6;
			if (d->t_first_ns >= d->t_sched_ns)
				r->prefill_ms = (double)(d->t_first_ns - d->t_sched_ns) / 1e6;
		}
	}
	r->decode_ms = d->t_first_ns && d->t_done_ns >= d->t_first_ns
			       ? (double)(d->t_done_ns - d->t_first_ns) / 1e6
			       : -1;
	if (r->resp) {
		met_finish(S->met, w->series, met_finish_of(r, d->finish));
		met_add(S->met, MET_PROMPT_TOKENS, w->series, r->n_prompt);
		met_add(S->met, MET_GENERATION_TOKENS, w->series,
			split ? r->n_gen : d->n_generated);
		met_add(S->met, MET_PREEMPTIONS, w->series, d->n_preempted);
		met_observe(S->met, MET_E2E, w->series, (double)(now - r->t_submit_ns) / 1e9);
		/* The worker's clock: waiting for a step, then the prompt until the first token
		 * (split: observed on the prefill side). */
		if (!split && d->t_sched_ns >= d->t_arrival_ns && d->t_arrival_ns) {
			met_observe(S->met, MET_QUEUE_TIME, w->series,
				    (double)(d->t_sched_ns - d->t_arrival_ns) / 1e9);
			if (d->t_first_ns >= d->t_sched_ns)
				met_observe(S->met, MET_PREFILL_TIME, w->series,
					    (double)(d->t_first_ns - d->t_sched_ns) / 1e9);
		}
		if (r->t_first_ns)
			met_observe(S->met, MET_TTFT, w->series,
				    (double)(r->t_first_ns - r->t_submit_ns) / 1e9);
		/* The worker's clock: from its first token to its last. */
		if (split ? r->decode_ms >= 0 : r->t_first_ns && r->decode_ms > 0)
			met_observe(S->met, MET_DECODE_TIME, w->series, r->decode_ms / 1e3);
	}
	if (!r->stopped && r->resp) {
		n = tok_stream_flush(S->tok, &r->ts, S->piece, S->piece_cap);
		if (n > 0)
			sup_buf_append(&r->text, S->piece, (size_t)n);
		if (r->n_stop && req_match_stop(r))
			r->finish = OAI_FINISH_STOP;
	}
	if (d->finish == IPC_FINISH_ERROR) {
		int st = sup_http_status(r->err_code);

		sup_req_finish(S, r, st, st == 400 ? "BADPARAM" : "WORKER",
			   r->err_msg[0] ? r->err_msg : "the request failed in the worker");
		return;
	}
	if (d->finish == IPC_FINISH_CANCELLED && !r->stopped) {
		sup_req_finish(S, r, 503, "CANCELLED", "the request was cancelled");
		return;
	}
	sup_req_finish(S, r, 200, NULL, NULL);
}

static void on_stats(struct sup *S, struct sup_worker *w, const struct ipc_stats *st)
{
	double dq = 0, dh = 0;

	if (w->st.t_ns) {
		dq = (double)(st->prefix_queries - w->st.prefix_queries);
		dh = (double)(st->prefix_hits - w->st.prefix_hits);
	} else {
		dq = (double)st->prefix_queries;
		dh = (double)st->prefix_hits;
	}
	if (dq >= 0 && dh >= 0) {
		met_add(S->met, MET_PREFIX_CACHE_QUERIES, w->series, dq);
		met_add(S->met, MET_PREFIX_CACHE_HITS, w->series, dh);
	}
	if (st->leases_expired > w->leases_expired)
		met_add(S->met, MET_KV_LEASE_EXPIRED, w->series,
			(double)(st->leases_expired - w->leases_expired));
	w->leases_expired = st->leases_expired;
	w->full = false; /* fresh numbers: the router may ask it again */
	w->st_prev = w->st;
	w->st = *st;
	met_set(S->met, MET_REQUESTS_RUNNING, w->series, st->running);
	met_set(S->met, MET_REQUESTS_WAITING, w->series, st->waiting);
	met_set(S->met, MET_KV_BLOCKS_USED, w->series, st->kv_used);
	met_set(S->met, MET_KV_BLOCKS_CACHED, w->series, st->kv_cached);
	met_set(S->met, MET_KV_BLOCKS_LEASED, w->series, st->kv_leased);
	met_set(S->met, MET_KV_BLOCKS_TOTAL, w->series, st->kv_total);
	met_set(S->met, MET_KV_USAGE_RATIO, w->series,
		st->kv_total ? (double)st->kv_used / st->kv_total : 0.0);
}

/* --- KV links ------------------------------------------------------------------------ */

const char *sup_part_name(const struct sup *S, int i)
{
	return S->cfg->partitions[i].name;
}

static void link_down(struct sup *S, struct sup_link *l, const char *fmt, ...)
{
	va_list ap;
	bool was = l->up;

	l->up = l->pre_ok = l->dec_ok = false;
	va_start(ap, fmt);
	vsnprintf(l->why, sizeof(l->why), fmt, ap);
	va_end(ap);
	if (was)
		sup_event(S, "link_down", l->pre, DUET_LOG_WARN, "KV link %s -> %s down: %s",
			  sup_part_name(S, l->pre), sup_part_name(S, l->dec), l->why);
}

/* Both ends ready: ask each for an endpoint toward the other (XFER_CONNECT). */
static void link_start(struct sup *S, struct sup_link *l)
{
	struct sup_worker *a = &S->w[l->pre], *b = &S->w[l->dec];
	struct ipc_xfer_connect c = { 0 };

	if (!a->ready || !b->ready || !a->ch || !b->ch)
		return;
	l->up = l->pre_ok = l->dec_ok = false;
	snprintf(l->why, sizeof(l->why), "connecting");
	c.partition = (uint32_t)l->dec;
	ipc_send(a->ch, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	c.partition = (uint32_t)l->pre;
	ipc_send(b->ch, IPC_XFER_CONNECT, 0, &c, sizeof(c));
	sup_worker_set_events(S, a);
	sup_worker_set_events(S, b);
}

struct sup_link *sup_link_of(struct sup *S, int x, int y)
{
	for (unsigned i = 0; i < S->n_links; i++) {
		struct sup_link *l = &S->links[i];

		if ((l->pre == x && l->dec == y) || (l->pre == y && l->dec == x))
			return l;
	}
	return NULL;
}

/* Worker w's descriptor for peer m->u.desc.partition: hand it over, fds and all. */
static void on_xfer_desc(struct sup *S, struct sup_worker *w, struct ipc_msg *m)
{
	struct ipc_xfer_desc *d = &m->u.desc;
	int peer = (int)d->partition;
	struct sup_link *l = sup_link_of(S, w->idx, peer);
	int ret = -ENOTCONN;

	if (l && S->w[peer].ch) {
		d->partition = (uint32_t)w->idx;
		for (int tries = 0; tries < 100; tries++) {
			ret = ipc_send_fds(S->w[peer].ch, IPC_XFER_DESC, 0, d,
					   IPC_DESC_FIXED + d->len, m->fds, m->n_fds);
			if (ret != -EAGAIN)
				break;
			ipc_flush(S->w[peer].ch);
		}
	}
	if (ret && l)
		link_down(S, l, "passing %s's descriptor to %s: %s", sup_part_name(S, w->idx),
			  peer >= 0 && (unsigned)peer < S->n_w ? sup_part_name(S, peer) : "?",
			  duet_strerror(ret));
}

static void on_xfer_ready(struct sup *S, struct sup_worker *w, const struct ipc_xfer_ready *r)
{
	struct sup_link *l = sup_link_of(S, w->idx, (int)r->partition);

	if (!l)
		return;
	if (r->status) {
		link_down(S, l, "partition %s: %s", sup_part_name(S, w->idx), duet_strerror(r->status));
		log_warn("supervisor", "KV link %s -> %s: %s", sup_part_name(S, l->pre),
			 sup_part_name(S, l->dec), l->why);
		return;
	}
	if (w->idx == l->pre)
		l->pre_ok = true;
	else
		l->dec_ok = true;
	if (l->pre_ok && l->dec_ok && !l->up) {
		l->up = true;
		l->why[0] = '\0';
		log_info("supervisor", "KV link %s -> %s up (%s)", sup_part_name(S, l->pre),
			 sup_part_name(S, l->dec), cfg_xfer_driver(S->cfg));
		sup_event(S, "link_up", l->pre, DUET_LOG_INFO, "KV link %s -> %s up",
			  sup_part_name(S, l->pre), sup_part_name(S, l->dec));
	}
}

static void worker_readable(struct sup *S, struct sup_worker *w)
{
	const char *name = S->cfg->partitions[w->idx].name;
	struct ipc_msg *m = S->msg;
	int ret = 0;

	while (w->ch && (ret = ipc_recv(w->ch, m)) == 1) {
		switch (m->hdr.type) {
		case IPC_HELLO:
			log_debug("supervisor", "partition %s: HELLO from pid %d", name,
				  (int)m->u.hello.pid);
			break;
		case IPC_READY:
			w->ready = true;
			w->n_ctx = m->u.ready.n_ctx;
			w->block_tokens = m->u.ready.block_tokens;
			w->why[0] = '\0';
			w->canary_why[0] = '\0';
			log_info("supervisor",
				 "partition %s: worker %d ready (context %u, %u KV blocks)", name,
				 (int)w->pid, m->u.ready.n_ctx, m->u.ready.kv_blocks_total);
			sup_event(S, "worker_ready", w->idx, DUET_LOG_INFO,
				  "partition %s: worker %d ready", name, (int)w->pid);
			sup_submit_canary(S, w);
			for (unsigned i = 0; i < S->n_links; i++)
				if (S->links[i].pre == w->idx || S->links[i].dec == w->idx)
					link_start(S, &S->links[i]);
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
				struct sup_req *r = sup_req_find(S, m->hdr.req_id);

				if (sup_route_error(S, w, m->hdr.req_id, &m->u.error))
					break;
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
		case IPC_LOGPROBS:
			on_logprobs(S, w, m->hdr.req_id, &m->u.logprobs);
			break;
		case IPC_XFER_DESC:
			on_xfer_desc(S, w, m);
			break;
		case IPC_XFER_READY:
			on_xfer_ready(S, w, &m->u.xready);
			break;
		case IPC_LEASED:
			sup_route_leased(S, w, m->hdr.req_id, &m->u.leased);
			break;
		case IPC_PREFILLED:
			sup_route_prefilled(S, w, m->hdr.req_id, &m->u.kv, m->hdr.len);
			break;
		default:
			break;
		}
		/* Received fds were passed on (the channel dup'ed them) or are not wanted. */
		for (unsigned i = 0; i < m->n_fds; i++)
			close(m->fds[i]);
		m->n_fds = 0;
	}
	if (w->ch && ret < 0)
		sup_worker_channel_failed(S, w);
}

/* --- requests: input ---------------------------------------------------------- */

struct sup_worker *sup_pick_worker(struct sup *S)
{
	struct sup_worker *best = NULL;

	for (unsigned i = 0; i < S->n_w; i++) {
		struct sup_worker *w = &S->w[i];

		/* Split configurations send whole requests to mixed partitions only. */
		if (sup_split(S) && S->cfg->partitions[i].role != CFG_ROLE_MIXED)
			continue;
		if (sup_worker_usable(w) && (!best || w->running < best->running))
			best = w;
	}
	return best;
}

/* Fill S->submit's fixed part from p (counts left to sup_submit_frames). */
static void submit_build(struct sup *S, struct sup_req *r, const struct oai_params *p,
			 uint64_t salt)
{
	struct ipc_submit *sub = S->submit;
	const struct oai_sampling *sp = &p->sampling;

	memset(sub, 0, IPC_SUBMIT_FIXED);
	sub->sampling.temperature = sp->temperature;
	sub->sampling.top_p = sp->top_p;
	sub->sampling.min_p = sp->min_p;
	sub->sampling.repeat_penalty = sp->repetition_penalty;
	sub->sampling.presence_penalty = sp->presence_penalty;
	sub->sampling.frequency_penalty = sp->frequency_penalty;
	sub->sampling.top_k = sp->top_k;
	sub->sampling.repeat_last_n = 64;
	/* n > 1: each choice its own stream of randomness, reproducible from the seed. */
	sub->sampling.seed = sp->has_seed ? (uint64_t)sp->seed + r->index : r->id;
	sub->salt = salt;
	sub->max_tokens = p->max_tokens;
	if (r->resp && r->resp->logprobs) {
		sub->logprobs_flags = IPC_SUBMIT_LOGPROBS;
		sub->n_top = r->resp->logprobs - 1;
	}
}

int sup_submit_frames(struct sup *S, struct sup_worker *w, uint64_t id, const struct ipc_bias *bias,
		      uint32_t n_bias, const int32_t *ids, size_t n)
{
	struct ipc_submit *sub = S->submit;
	/* Bias entries share the SUBMIT with the first tokens (8 bytes each). */
	uint32_t room = IPC_SUBMIT_MAX_TOKENS - 2u * n_bias;
	uint32_t first = n < room ? (uint32_t)n : room;
	int ret;

	sub->n_prompt = (uint32_t)n;
	sub->n_tokens = first;
	memcpy(sub->tokens, ids, first * sizeof(int32_t));
	sub->n_bias = n_bias;
	if (n_bias)
		memcpy(ipc_submit_bias_mut(sub), bias, n_bias * sizeof(*bias));
	ret = ipc_send(w->ch, IPC_SUBMIT, id, sub, ipc_submit_len2(first, n_bias));
	for (size_t off = first; !ret && off < n;) {
		struct ipc_prompt_chunk *c = (struct ipc_prompt_chunk *)S->submit;
		uint32_t k =
			n - off < IPC_CHUNK_MAX_TOKENS ? (uint32_t)(n - off) : IPC_CHUNK_MAX_TOKENS;

		c->n_prompt = (uint32_t)n;
		c->offset = (uint32_t)off;
		c->n_tokens = k;
		c->reserved = 0;
		memcpy(c->tokens, ids + off, k * sizeof(int32_t));
		ret = ipc_send(w->ch, IPC_PROMPT_CHUNK, id, c, ipc_chunk_len(k));
		off += k;
	}
	return ret;
}

/* p's logit bias as SUBMIT entries into b[OAI_MAX_LOGIT_BIAS]; returns how many. */
static uint32_t bias_of(const struct oai_params *p, struct ipc_bias *b)
{
	const struct oai_sampling *sp = &p->sampling;

	for (size_t i = 0; i < sp->n_logit_bias; i++)
		b[i] = (struct ipc_bias){ sp->logit_bias[i].token, sp->logit_bias[i].bias };
	return (uint32_t)sp->n_logit_bias;
}

/* Send SUBMIT (+ PROMPT_CHUNKs) for r on w. */
static int submit_send(struct sup *S, struct sup_worker *w, struct sup_req *r,
		       const struct oai_params *p, const int32_t *ids, size_t n, uint64_t salt)
{
	struct ipc_bias bias[OAI_MAX_LOGIT_BIAS];
	uint32_t n_bias = bias_of(p, bias);

	submit_build(S, r, p, salt);
	return sup_submit_frames(S, w, r->id, bias, n_bias, ids, n);
}

/* A new choice for worker w (not linked yet). */
static struct sup_req *req_new(struct sup *S, struct sup_worker *w, uint32_t n_prompt,
			       uint32_t max_tokens)
{
	struct sup_req *r = duet_calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->id = ++S->next_id;
	r->worker = w->idx;
	r->n_prompt = n_prompt;
	r->max_tokens = max_tokens;
	r->finish = OAI_FINISH_LENGTH;
	r->t_submit_ns = sup_now_ns();
	r->queue_ms = r->prefill_ms = r->decode_ms = r->xfer_ms = -1;
	tok_stream_init(&r->ts);
	return r;
}

/* Link r and send it; on failure r is unlinked and the caller frees it. */
static int req_submit(struct sup *S, struct sup_worker *w, struct sup_req *r,
		      const struct oai_params *p, const int32_t *ids, size_t n, uint64_t salt)
{
	int ret;

	r->next = S->reqs;
	S->reqs = r;
	S->n_reqs++;
	ret = submit_send(S, w, r, p, ids, n, salt);
	if (ret) {
		log_warn("supervisor", "request %" PRIu64 ": SUBMIT failed: %s", r->id,
			 strerror(-ret));
		req_unlink(S, r);
		if (ret != -ENOBUFS)
			sup_worker_channel_failed(S, w);
		return ret;
	}
	w->running++;
	r->counted = true;
	sup_worker_set_events(S, w);
	return 0;
}

int sup_submit_canary(struct sup *S, struct sup_worker *w)
{
	struct oai_params p = { .max_tokens = 1 };
	int32_t tok = tok_bos(S->tok) >= 0 ? tok_bos(S->tok) : 0;
	struct sup_req *r;
	int ret;

	if (!S->cfg->api.canary_interval_ms || w->canary_sent_ms || !w->ready || !w->ch)
		return 0;
	r = req_new(S, w, 1, 1);
	if (!r)
		return -ENOMEM;
	p.sampling.top_p = 1.0f;
	p.sampling.repetition_penalty = 1.0f;
	ret = req_submit(S, w, r, &p, &tok, 1, 0);
	if (ret) {
		req_destroy(r);
		return ret;
	}
	w->canary_sent_ms = sup_now_ms();
	w->canary_due_ms = w->canary_sent_ms + (uint64_t)S->cfg->api.canary_interval_ms;
	return 0;
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

/* A new answer with p->n choices on worker w, each with p's stop strings. */
static struct sup_resp *resp_new(struct sup *S, const struct http_req *req, enum oai_kind kind,
				 const struct oai_params *p, struct sup_worker *w, size_t n_prompt)
{
	struct sup_resp *rs = duet_calloc(1, sizeof(*rs));

	if (!rs)
		return NULL;
	rs->tag = SUP_USER_RESP;
	rs->kind = kind;
	rs->streaming = p->stream;
	rs->include_usage = p->include_usage;
	rs->created = (int64_t)time(NULL);
	rs->uid = req->uid;
	snprintf(rs->tenant, sizeof(rs->tenant), "uid:%u", (unsigned)req->uid);
	for (unsigned i = 0; i < S->cfg->api.n_tenants; i++)
		if ((uid_t)S->cfg->api.tenants[i].uid == req->uid)
			snprintf(rs->tenant, sizeof(rs->tenant), "%s", S->cfg->api.tenants[i].name);
	rs->logprobs = p->logprobs ? 1 + p->top_logprobs : 0;
	rs->t_submit_ns = sup_now_ns();
	snprintf(rs->model, sizeof(rs->model), "%s", p->model.ptr ? p->model.ptr : S->model_name);
	oai_format_id(rs->idstr, sizeof(rs->idstr), kind, S->next_id + 1);
	rs->choice = duet_calloc(p->n, sizeof(*rs->choice));
	if (!rs->choice)
		goto fail;
	for (unsigned i = 0; i < p->n; i++) {
		struct sup_req *r = req_new(S, w, (uint32_t)n_prompt, p->max_tokens);

		if (!r)
			goto fail;
		rs->choice[i] = r;
		rs->n = i + 1;
		r->resp = rs;
		r->index = i;
		r->done = true; /* not linked yet: resp_destroy must not unlink it */
		for (unsigned k = 0; k < p->n_stop; k++) {
			r->stop[k].ptr = duet_strdup(p->stop[k].ptr);
			if (!r->stop[k].ptr)
				goto fail;
			r->stop[k].len = p->stop[k].len;
			r->n_stop = k + 1;
			if (p->stop[k].len - 1 > r->hold)
				r->hold = p->stop[k].len - 1;
		}
	}
	return rs;
fail:
	resp_destroy(S, rs);
	return NULL;
}

/*
 * Split configurations: the decode partition whose context bounds the
 * request, preferring one with a link up.  A partition that is restarting
 * still counts (the request waits in the router for it, up to
 * api.queue_timeout_ms); NULL when an operator drained every decode or
 * every prefill partition, or none was ever ready.
 */
static struct sup_worker *split_front(struct sup *S)
{
	struct sup_worker *best = NULL;
	bool best_up = false, pre = false;

	for (unsigned i = 0; i < S->n_links; i++) {
		struct sup_worker *d = &S->w[S->links[i].dec];
		bool up = S->links[i].up && d->ready && S->w[S->links[i].pre].ready;

		if (S->w[S->links[i].pre].drain || d->drain || !d->n_ctx)
			continue;
		pre = true;
		if (!best || (up && !best_up) || (up == best_up && d->running < best->running)) {
			best = d;
			best_up = up;
		}
	}
	return pre ? best : NULL;
}

/* Queue a split choice: link it and hand it to the router with its SUBMIT. */
static int split_add(struct sup *S, struct sup_req *r, const struct oai_params *p,
		     const int32_t *ids, size_t n, uint64_t salt)
{
	struct ipc_bias bias[OAI_MAX_LOGIT_BIAS];
	uint32_t n_bias = bias_of(p, bias);

	submit_build(S, r, p, salt);
	return sup_route_add(S, r, bias, n_bias, ids, n);
}

/* Common part of completions and chat: admission, routing, SUBMITs, defer/stream. */
static void start_generation(struct sup *S, const struct http_req *req, struct http_resp *resp,
			     enum oai_kind kind, const struct oai_params *p, const int32_t *ids,
			     size_t n)
{
	struct oai_error e;
	struct sup_worker *w;
	struct sup_resp *rs;
	uint64_t salt;
	int ret = 0;

	if (S->draining) {
		oai_error_set(&e, 503, "SHUTDOWN", "", "the server is shutting down");
		goto error;
	}
	if (S->n_resps + 1 > (unsigned)S->cfg->api.max_queue) {
		oai_error_set(&e, 429, "QUEUEFULL", "", "too many requests in flight (%u)",
			      S->n_resps);
		goto error;
	}
	for (size_t i = 0; i < p->sampling.n_logit_bias; i++) {
		if ((uint32_t)p->sampling.logit_bias[i].token >= S->n_vocab) {
			oai_error_set(&e, 400, "BADPARAM", "logit_bias",
				      "logit_bias: token %" PRId32
				      " is outside the vocabulary (%u)",
				      p->sampling.logit_bias[i].token, S->n_vocab);
			goto error;
		}
	}
	if (n == 0) {
		oai_error_set(&e, 400, "BADPARAM", "prompt", "prompt: empty after tokenization");
		goto error;
	}
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < 0 || (uint32_t)ids[i] >= S->n_vocab) {
			oai_error_set(&e, 400, "BADPARAM", "prompt",
				      "prompt: token %" PRId32 " is outside the vocabulary (%u)",
				      ids[i], S->n_vocab);
			goto error;
		}
	}
	w = sup_pick_worker(S);
	if (!w && sup_split(S))
		w = split_front(S);
	if (!w) {
		char why[384];
		const char *h = sup_health_why(S, why, sizeof(why));

		oai_error_set(&e, 503, "UNAVAILABLE", "", "no partition is taking requests%s%s",
			      h ? ": " : "", h ? h : "");
		goto error;
	}
	if (n + p->max_tokens > w->n_ctx) {
		oai_error_set(&e, 400, "BADPARAM", "max_tokens",
			      "max_tokens: prompt (%zu tokens) + max_tokens (%u) exceeds the "
			      "context length %u",
			      n, p->max_tokens, w->n_ctx);
		goto error;
	}
	rs = resp_new(S, req, kind, p, w, n);
	if (!rs)
		goto nomem;
	S->n_resps++;
	/* The tenant, from the peer's credentials: users of one tenant share cached prefixes. */
	salt = kv_salt_from_bytes(rs->tenant, strlen(rs->tenant));
	for (unsigned i = 0; i < rs->n; i++) {
		rs->choice[i]->done = false;
		if (S->cfg->partitions[w->idx].role != CFG_ROLE_MIXED) {
			/* Split: the router takes it from here (prefill, transfer, decode). */
			ret = split_add(S, rs->choice[i], p, ids, n, salt);
		} else {
			ret = req_submit(S, w, rs->choice[i], p, ids, n, salt);
		}
		if (ret) {
			/* Choices already sent are cancelled; their DONEs find no client. */
			rs->choice[i]->done = true;
			for (unsigned k = 0; k < i; k++)
				sup_send_cancel(S, rs->choice[k], IPC_CANCEL_CLIENT);
			rs->n_done += rs->n - i;
			for (unsigned k = i + 1; k < rs->n; k++)
				rs->choice[k]->done = true;
			resp_maybe_free(S, rs);
			oai_error_set(&e, 503, "UNAVAILABLE", "",
				      "the worker is not accepting requests");
			goto error;
		}
	}
	S->n_requests++;
	if (rs->streaming) {
		struct oai_meta m = resp_meta(rs);

		ret = http_resp_stream(resp, 200, "text/event-stream", rs, &rs->s);
		if (ret == 0) {
			rs->begun = true;
			oai_buf_reset(&S->out);
			for (unsigned i = 0; !ret && i < rs->n; i++)
				ret = oai_sse_role_at(&S->out, &m, i);
			if (!ret && S->out.len)
				http_stream_write(rs->s, S->out.data, S->out.len);
			ret = 0;
		}
	} else {
		ret = http_resp_defer(resp, rs, &rs->s);
	}
	if (ret) {
		rs->s = NULL;
		for (unsigned i = 0; i < rs->n; i++)
			sup_send_cancel(S, rs->choice[i], IPC_CANCEL_CLIENT);
		http_resp_error(resp, 500, "NOMEM", "out of memory");
	}
	return;
error:
	resp_oai_error(S, resp, &e);
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
		sup_resp_json(S, resp, oai_write_tokens(&S->out, ids, n));
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
	sup_resp_json(S, resp, oai_write_text(&S->out, text, len));
out:
	duet_free(text);
	oai_detokenize_free(&d);
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
	if (is(req, "/v1/models") || is(req, "/metrics")) {
		if (!get) {
			http_resp_bad_method(resp, req, "GET");
			return;
		}
		if (is(req, "/metrics")) {
			handle_metrics(S, resp);
		} else {
			struct oai_model_info mi = { .id = S->model_name, .created = 0 };

			oai_buf_reset(&S->out);
			sup_resp_json(S, resp, oai_write_models(&S->out, &mi, 1));
		}
		return;
	}
	if (sup_admin_route(S, req, resp))
		return;
	http_resp_not_found(resp, req);
}

static void on_close(void *ctx, struct http_stream *s, void *user, bool completed)
{
	struct sup *S = ctx;
	struct sup_resp *p = user;

	(void)s;
	if (!user)
		return;
	if (*(const enum sup_user_kind *)user == SUP_USER_SUB) {
		sup_admin_close(S, user);
		return;
	}
	p->s = NULL;
	if (!completed) {
		for (unsigned i = 0; i < p->n; i++)
			sup_send_cancel(S, p->choice[i], IPC_CANCEL_CLIENT);
	}
	resp_maybe_free(S, p);
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
	snprintf(S->sock_dir, sizeof(S->sock_dir), "%s", dir);
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
	S->lim.max_tokens_cap = (uint32_t)cfg->api.max_tokens;
	S->lim.max_n = (uint32_t)cfg->api.max_n;
	S->lim.max_logprobs = (uint32_t)cfg->api.max_logprobs;

	ret = met_create((int)cfg->n_partitions, SUP_VERSION, &S->met);
	if (ret)
		return ret;
	if (cfg_xfer_driver(cfg))
		met_set_transport(S->met, cfg_xfer_driver(cfg));
	for (unsigned i = 0; i < S->n_w; i++) {
		S->w[i].idx = (int)i;
		S->w[i].series = met_series_add(S->met, cfg->partitions[i].name,
						cfg_role_name(cfg->partitions[i].role));
	}
	/* Every prefill partition gets a KV link to every decode partition. */
	S->links = duet_calloc((size_t)S->n_w * S->n_w, sizeof(*S->links));
	if (!S->links)
		return -ENOMEM;
	for (unsigned i = 0; i < S->n_w; i++) {
		for (unsigned j = 0; j < S->n_w; j++) {
			if (cfg->partitions[i].role != CFG_ROLE_PREFILL ||
			    cfg->partitions[j].role != CFG_ROLE_DECODE)
				continue;
			S->links[S->n_links++] = (struct sup_link){ .pre = (int)i, .dec = (int)j };
			snprintf(S->links[S->n_links - 1].why, sizeof(S->links[0].why),
				 "waiting for the workers");
		}
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
	ret = sup_admin_init(S);
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
		if (r->resp) {
			resp_destroy(S, r->resp);
		} else {
			req_unlink(S, r);
			req_destroy(r);
		}
	}
	sup_admin_fini(S);
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
	duet_free(S->links);
	duet_free(S->w);
	duet_free(S->submit);
	duet_free(S->msg);
}

/* --- the loop ------------------------------------------------------------------- */

void sup_start_drain(struct sup *S, const char *why)
{
	struct ipc_shutdown sd = { .mode = IPC_SHUTDOWN_DRAIN, .deadline_ms = SUP_DRAIN_MS };

	log_info("duetd", "%s: shutting down", why);
	sup_event(S, "shutdown", -1, DUET_LOG_INFO, "%s: shutting down", why);
	sdn_notify("STOPPING=1");
	S->draining = true;
	S->drain_deadline_ms = sup_now_ms() + SUP_DRAIN_MS + SUP_KILL_GRACE_MS;
	met_set(S->met, MET_UP, 0, 0);
	for (unsigned i = 0; i < S->n_w; i++) {
		S->w[i].restart_at_ms = 0;
		if (S->w[i].ch) {
			ipc_send(S->w[i].ch, IPC_SHUTDOWN, 0, &sd, sizeof(sd));
			sup_worker_set_events(S, &S->w[i]);
		}
	}
}

static int list_add(struct oai_buf *b, const char *item)
{
	if (b->len && sup_buf_append(b, ", ", 2))
		return -ENOMEM;
	return sup_buf_append(b, item, strlen(item));
}

/* Settings that need a restart: name them in rejected when next differs from the running ones. */
static void reload_rejects(const struct duet_config *cur, const struct duet_config *next,
			   struct oai_buf *rejected)
{
	bool parts = cur->n_partitions != next->n_partitions;

	for (unsigned i = 0; !parts && i < cur->n_partitions; i++) {
		const struct cfg_partition *a = &cur->partitions[i], *b = &next->partitions[i];

		parts = strcmp(a->name, b->name) || a->role != b->role ||
			strcmp(a->device, b->device) || strcmp(a->cpus, b->cpus) ||
			a->threads != b->threads || a->numa_node != b->numa_node ||
			a->max_batch_tokens != b->max_batch_tokens || a->max_seqs != b->max_seqs;
	}
	if (parts)
		list_add(rejected, "partitions");
	if (strcmp(cur->model.path, next->model.path) ||
	    strcmp(cur->model.served_name, next->model.served_name) ||
	    cur->model.context != next->model.context ||
	    strcmp(cur->model.chat_template, next->model.chat_template))
		list_add(rejected, "model");
	if (memcmp(&cur->kv, &next->kv, sizeof(cur->kv)))
		list_add(rejected, "kv");
	{
		struct cfg_transport t = cur->transport;

		t.checksum = next->transport.checksum; /* applies at once */
		if (memcmp(&t, &next->transport, sizeof(t)))
			list_add(rejected, "transport");
	}
	if (strcmp(cur->api.socket_dir, next->api.socket_dir) ||
	    strcmp(cur->api.group, next->api.group) ||
	    strcmp(cur->api.admin_group, next->api.admin_group) ||
	    strcmp(cur->api.audit_log, next->api.audit_log) ||
	    cur->api.max_body_kb != next->api.max_body_kb)
		list_add(rejected, "api.socket_dir/group/admin_group/audit_log/max_body_kb");
	if (strcmp(cur->name, next->name))
		list_add(rejected, "name");
}

int sup_reload(struct sup *S, struct oai_buf *applied, struct oai_buf *rejected)
{
	struct ipc_reload rl = { .what = IPC_RELOAD_LOG_LEVEL };
	struct duet_config *next;
	int ret;

	next = duet_malloc(sizeof(*next));
	if (!next)
		return -ENOMEM;
	log_info("duetd", "re-reading %s", S->opt->config_path);
	sdn_notify("RELOADING=1");
	S->reloading = true;
	S->reload_err[0] = '\0';
	ret = S->opt->reload(S->opt->reload_ctx, next);
	S->reloading = false;
	if (ret) {
		log_warn("duetd", "reload failed; keeping the running configuration");
		sup_event(S, "reload", -1, DUET_LOG_WARN, "reload failed: %s",
			  S->reload_err[0] ? S->reload_err : duet_strerror(ret));
		sdn_notify("READY=1");
		duet_free(next);
		return ret;
	}
	reload_rejects(S->cfg, next, rejected);
	/* What applies at run time. */
	S->cfg->log = next->log;
	S->cfg->api.max_queue = next->api.max_queue;
	S->cfg->api.default_max_tokens = next->api.default_max_tokens;
	S->cfg->api.max_tokens = next->api.max_tokens;
	S->cfg->api.max_n = next->api.max_n;
	S->cfg->api.max_logprobs = next->api.max_logprobs;
	S->cfg->api.canary_interval_ms = next->api.canary_interval_ms;
	S->cfg->api.queue_timeout_ms = next->api.queue_timeout_ms;
	S->cfg->api.max_attempts = next->api.max_attempts;
	S->cfg->api.breaker_failures = next->api.breaker_failures;
	S->cfg->api.breaker_cooldown_ms = next->api.breaker_cooldown_ms;
	S->cfg->transport.checksum = next->transport.checksum;
	S->cfg->slo = next->slo;
	S->lim.default_max_tokens = (uint32_t)next->api.default_max_tokens;
	S->lim.max_tokens_cap = (uint32_t)next->api.max_tokens;
	S->lim.max_n = (uint32_t)next->api.max_n;
	S->lim.max_logprobs = (uint32_t)next->api.max_logprobs;
	list_add(applied, "log.level");
	list_add(applied, "log.format");
	list_add(applied, "api.max_queue");
	list_add(applied, "api.default_max_tokens");
	list_add(applied, "api.max_tokens");
	list_add(applied, "api.max_n");
	list_add(applied, "api.max_logprobs");
	list_add(applied, "api.canary_interval_ms");
	list_add(applied, "api.queue_timeout_ms");
	list_add(applied, "api.max_attempts");
	list_add(applied, "api.breaker_failures");
	list_add(applied, "api.breaker_cooldown_ms");
	list_add(applied, "transport.checksum");
	list_add(applied, "slo");
	rl.log_level = (uint32_t)duet_log_get_level();
	for (unsigned i = 0; i < S->n_w; i++) {
		if (S->w[i].ch) {
			ipc_send(S->w[i].ch, IPC_RELOAD, 0, &rl, sizeof(rl));
			sup_worker_set_events(S, &S->w[i]);
		}
	}
	if (rejected->len)
		log_warn("duetd", "reload: these changes need a restart and were not applied: %s",
			 rejected->data);
	log_info("duetd", "configuration reloaded (log level %s)",
		 duet_log_level_name(duet_log_get_level()));
	sup_event(S, "reload", -1, DUET_LOG_INFO, "configuration reloaded%s%s",
		  rejected->len ? "; needs a restart: " : "", rejected->len ? rejected->data : "");
	sdn_notify("READY=1");
	duet_free(next);
	return 0;
}

static void reload(struct sup *S)
{
	struct oai_buf applied = { 0 }, rejected = { 0 };

	sup_reload(S, &applied, &rejected);
	oai_buf_free(&applied);
	oai_buf_free(&rejected);
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
				sup_start_drain(S, strsignal((int)si.ssi_signo));
			break;
		}
	}
	return 0;
}

/* Due work outside events: restarts, the first "up", the watchdog, the drain's end. */
static int housekeeping(struct sup *S)
{
	uint64_t now = sup_now_ms();
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
			sup_worker_set_events(S, w);
	}
	if (!S->up && all_ready) {
		S->up = true;
		log_info("duetd",
			 "up (pid %d): %u worker(s) ready; API on %s; Ctrl-C or SIGTERM "
			 "stops",
			 (int)getpid(), S->n_w, S->api_path);
		sdn_notify("READY=1");
		sdn_status("serving; %u partition(s)", S->n_w);
		sup_event(S, "ready", -1, DUET_LOG_INFO, "up: %u partition(s) ready", S->n_w);
	}
	if (S->wd_usec && now >= S->wd_next_ms) {
		sdn_notify("WATCHDOG=1");
		S->wd_next_ms = now + S->wd_usec / 2000;
	}
	if (S->draining) {
		bool answering = S->n_resps > 0;

		/* Done when every worker exited and the last answers went out (or time is up). */
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
	S->start_ms = sup_now_ms();
	S->audit_fd = -1;
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
					sup_worker_channel_failed(S, w);
					continue;
				}
				worker_readable(S, w);
			}
		}
		sup_route_kick(S);
		sup_admin_tick(S);
		/* Every round: answers written from worker frames go out now. */
		http_server_run(S->api);
		http_server_run(S->admin);
		/* Requests that just arrived go to the workers now, not after the next wait. */
		sup_route_kick(S);
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
