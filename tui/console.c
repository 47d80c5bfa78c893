// SPDX-License-Identifier: MIT
/*
 * duet-console — the operator console of duetd (ncurses).
 *
 *   duet-console [-i SECONDS] [--socket PATH] [--admin-socket PATH] [--once]
 *
 * Threads: the UI thread owns the terminal (screen.c) and draws the model
 * every refresh or when woken; the fetcher thread polls GET /v1/status and
 * runs the operator's actions (drain, cancel, ...); the events thread
 * follows GET /admin/events.  Only the fetchers do socket I/O, always with
 * timeouts, so a slow or dead daemon never freezes the screen.  One mutex
 * guards the model and the shared fields of struct console.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tui/canvas.h"
#include "tui/client.h"
#include "tui/model.h"
#include "tui/panels.h"
#include "tui/screen.h"

#define PROG "duet-console"
#define STATUS_TIMEOUT_MS 3000 /* one /v1/status exchange */
#define ACTION_TIMEOUT_MS 10000
#define EVENTS_IDLE_MS 45000 /* the daemon sends a keepalive every 15 s */
#define MESSAGE_S 6.0	     /* how long an action's outcome stays in the footer */

enum action_kind { ACT_NONE, ACT_DRAIN, ACT_UNDRAIN, ACT_CANCEL, ACT_RELOAD };

struct console {
	/* options */
	const char *socks[3]; /* candidates, in order of preference */
	int n_socks;
	double interval;

	pthread_mutex_t lock;
	pthread_cond_t wake; /* the fetcher waits on it */
	atomic_bool stop;
	int wake_pipe[2]; /* fetchers -> UI: something changed */

	/* under lock */
	struct model *m;
	const char *sock; /* the candidate that answered last, or NULL */
	bool paused;
	enum action_kind action;
	char action_arg[64];
	char msg[256];
	unsigned msg_attr;
	double msg_until;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(FILE *fp)
{
	fprintf(fp,
		"usage: " PROG " [options]\n"
		"\n"
		"The operator console of duetd: health, partitions, KV links, requests, latency\n"
		"against the SLOs, and the event log, refreshed every interval.\n"
		"\n"
		"Options:\n"
		"  -i, --interval SECONDS   refresh interval (default 1, 0.1 .. 3600)\n"
		"  -s, --socket PATH        api.sock to use (read-only unless it is admin.sock)\n"
		"      --admin-socket PATH  admin.sock to try first\n"
		"      --once               print one frame as plain text and exit (1 when the\n"
		"                           daemon does not answer)\n"
		"      --size WxH           the frame size for --once (default: the terminal's,\n"
		"                           else $COLUMNS x $LINES, else 80x24)\n"
		"      --no-color           no colour (also when NO_COLOR is set)\n"
		"  -h, --help               this text\n"
		"\n"
		"By default the console tries admin.sock, then api.sock, in the directory duetd\n"
		"uses for api.socket_dir \"\": /run/duet as root, else $XDG_RUNTIME_DIR/duet, else\n"
		"build/run.  On admin.sock with group duet-admin it can act (drain, cancel, reload);\n"
		"otherwise it is read-only and says so.  Press ? inside for the keys.\n");
}

/* --- fetching ------------------------------------------------------------------------- */

static void wake_ui(struct console *C)
{
	char b = 1;
	ssize_t n = write(C->wake_pipe[1], &b, 1);

	(void)n; /* a full pipe already wakes the UI */
}

static void set_message(struct console *C, unsigned attr, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Call with the lock held. */
static void set_message(struct console *C, unsigned attr, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(C->msg, sizeof(C->msg), fmt, ap);
	va_end(ap);
	C->msg_attr = attr;
	C->msg_until = now_s() + MESSAGE_S;
}

/*
 * GET /v1/status from the first candidate that answers it, into *S.
 * Returns the socket that answered, or NULL with the reason in ERR.
 */
static const char *fetch_status(struct console *C, struct model_status *s, char *err, size_t cap)
{
	err[0] = '\0';
	for (int i = 0; i < C->n_socks; i++) {
		struct client_buf b = { 0 };
		struct client_req req = {
			.sock = C->socks[i],
			.method = "GET",
			.path = "/v1/status",
			.timeout_ms = STATUS_TIMEOUT_MS,
			.agent = PROG,
			.cancel = &C->stop,
		};
		int st = client_request(&req, &b);
		char msg[256];

		if (st == 200 && model_parse_status(b.p, s, msg, sizeof(msg)) == 0) {
			client_buf_free(&b);
			return C->socks[i];
		}
		/* Keep the reason of the first candidate unless it just is not there. */
		if (!err[0] || st == -ENOENT || st == -ECONNREFUSED) {
			if (st < 0)
				snprintf(err, cap, "%s: %s", C->socks[i], client_strerror(st));
			else if (st == 200)
				snprintf(err, cap, "%s", msg);
			else if (client_error_message(b.p, msg, sizeof(msg)))
				snprintf(err, cap, "%s: HTTP %d: %s", C->socks[i], st, msg);
			else
				snprintf(err, cap, "%s: HTTP %d", C->socks[i], st);
		}
		client_buf_free(&b);
	}
	return NULL;
}

static void poll_status(struct console *C)
{
	struct model_status *s = malloc(sizeof(*s));
	char err[512];
	const char *sock;

	if (!s)
		return;
	sock = fetch_status(C, s, err, sizeof(err));
	pthread_mutex_lock(&C->lock);
	if (sock) {
		model_update(C->m, s, now_s());
		model_set_conn(C->m, MODEL_UP, sock, NULL, now_s());
		C->sock = sock;
	} else {
		model_set_conn(C->m, MODEL_DOWN, C->sock ? C->sock : C->socks[0], err, now_s());
		C->sock = NULL;
	}
	pthread_mutex_unlock(&C->lock);
	free(s);
	wake_ui(C);
}

/* Run one action against SOCK; the outcome goes to the footer. */
static void run_action(struct console *C, enum action_kind kind, const char *arg, const char *sock)
{
	static const char *const what[] = { [ACT_DRAIN] = "drain",
					    [ACT_UNDRAIN] = "undrain",
					    [ACT_CANCEL] = "cancel",
					    [ACT_RELOAD] = "reload" };
	struct client_buf b = { 0 };
	char path[160], body[160], msg[256];
	struct client_req req = {
		.sock = sock,
		.method = "POST",
		.path = path,
		.timeout_ms = ACTION_TIMEOUT_MS,
		.agent = PROG,
		.cancel = &C->stop,
	};
	json_t *root;
	int st;

	switch (kind) {
	case ACT_DRAIN:
	case ACT_UNDRAIN: {
		json_t *o = json_pack("{s:s}", "partition", arg);
		char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;

		snprintf(path, sizeof(path), "/admin/%s", what[kind]);
		snprintf(body, sizeof(body), "%s", t ? t : "{}");
		req.body = body;
		free(t);
		json_decref(o);
		break;
	}
	case ACT_CANCEL:
		snprintf(path, sizeof(path), "/admin/requests/%s/cancel", arg);
		break;
	case ACT_RELOAD:
		snprintf(path, sizeof(path), "/admin/reload");
		break;
	default:
		return;
	}
	st = client_request(&req, &b);
	root = st == 200 ? json_loads(b.p ? b.p : "", JSON_ALLOW_NUL, NULL) : NULL;
	pthread_mutex_lock(&C->lock);
	if (st < 0) {
		set_message(C, CA_COLOR(CC_RED) | CA_BOLD, "%s %s failed: %s", what[kind], arg,
			    client_strerror(st));
	} else if (st != 200) {
		if (!client_error_message(b.p, msg, sizeof(msg)))
			snprintf(msg, sizeof(msg), "no reason given");
		set_message(C, CA_COLOR(CC_RED) | CA_BOLD, "%s %s refused (HTTP %d): %s",
			    what[kind], arg, st, msg);
	} else if (kind == ACT_RELOAD) {
		json_t *rej = json_object_get(root, "rejected");

		set_message(C,
			    rej && json_array_size(rej) ? CA_COLOR(CC_YELLOW) : CA_COLOR(CC_GREEN),
			    "reloaded: %zu applied, %zu rejected%s%s",
			    json_array_size(json_object_get(root, "applied")), json_array_size(rej),
			    json_array_size(rej) ? ": " : "",
			    json_array_size(rej) ? json_string_value(json_array_get(rej, 0)) : "");
	} else if (kind == ACT_CANCEL) {
		set_message(C, CA_COLOR(CC_GREEN), "request %s cancelled", arg);
	} else {
		const char *state = json_string_value(json_object_get(root, "state"));

		set_message(C, CA_COLOR(CC_GREEN), "partition %s: %s", arg, state ? state : "ok");
	}
	pthread_mutex_unlock(&C->lock);
	json_decref(root);
	client_buf_free(&b);
}

static void *fetcher_main(void *arg)
{
	struct console *C = arg;
	double next = 0;

	while (!atomic_load(&C->stop)) {
		enum action_kind kind;
		char action_arg[64];
		const char *sock;
		bool paused, have;
		struct timespec until;
		double t;

		pthread_mutex_lock(&C->lock);
		kind = C->action;
		snprintf(action_arg, sizeof(action_arg), "%s", C->action_arg);
		C->action = ACT_NONE;
		sock = C->sock;
		paused = C->paused;
		have = C->m->have;
		pthread_mutex_unlock(&C->lock);

		if (kind != ACT_NONE && sock) {
			run_action(C, kind, action_arg, sock);
			next = 0; /* show the outcome now */
		} else if (kind != ACT_NONE) {
			pthread_mutex_lock(&C->lock);
			set_message(C, CA_COLOR(CC_RED) | CA_BOLD, "%s: not sent, not connected",
				    action_arg[0] ? action_arg : "reload");
			pthread_mutex_unlock(&C->lock);
		}
		t = now_s();
		if (t >= next) {
			if (!paused || !have)
				poll_status(C);
			next = now_s() + C->interval;
		}
		/* Sleep until the next poll, an action or stop. */
		pthread_mutex_lock(&C->lock);
		t = next - now_s();
		clock_gettime(CLOCK_REALTIME, &until);
		if (t > 0) {
			until.tv_sec += (time_t)t;
			until.tv_nsec += (long)((t - floor(t)) * 1e9);
			if (until.tv_nsec >= 1000000000) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000;
			}
			if (C->action == ACT_NONE && !atomic_load(&C->stop))
				pthread_cond_timedwait(&C->wake, &C->lock, &until);
		}
		pthread_mutex_unlock(&C->lock);
	}
	return NULL;
}

/* --- events ------------------------------------------------------------------------------ */

struct ev_ctx {
	struct console *C;
	struct client_sse sse;
};

static int ev_event(void *ctx, const char *event, const char *data)
{
	struct console *C = ctx;
	struct model_event e;

	if (model_parse_event(data, &e))
		return 0;
	if (!e.type[0])
		snprintf(e.type, sizeof(e.type), "%s", event);
	pthread_mutex_lock(&C->lock);
	model_add_event(C->m, &e);
	pthread_mutex_unlock(&C->lock);
	wake_ui(C);
	return 0;
}

static int ev_body(void *ctx, const char *p, size_t n)
{
	struct ev_ctx *x = ctx;

	pthread_mutex_lock(&x->C->lock);
	if (!x->C->m->ev_live) {
		x->C->m->ev_live = true;
		x->C->m->ev_note[0] = '\0';
	}
	pthread_mutex_unlock(&x->C->lock);
	return client_sse_feed(&x->sse, p, n);
}

/* Sleep S seconds unless stopped. */
static void nap(struct console *C, double s)
{
	for (double t = 0; t < s && !atomic_load(&C->stop); t += 0.1)
		usleep(100000);
}

static void *events_main(void *arg)
{
	struct console *C = arg;

	while (!atomic_load(&C->stop)) {
		struct ev_ctx x = { .C = C, .sse = { .on_event = ev_event, .ctx = C } };
		struct client_buf b = { 0 };
		char sock[256] = "", msg[256];
		bool admin;
		int st, status = 0;
		struct client_req req = {
			.sock = sock,
			.method = "GET",
			.path = "/admin/events",
			.idle_ms = EVENTS_IDLE_MS,
			.agent = PROG,
			.on_body = ev_body,
			.ctx = &x,
			.cancel = &C->stop,
			.status_out = &status,
		};

		pthread_mutex_lock(&C->lock);
		admin = C->sock && C->m->have && C->m->cur.admin;
		if (C->sock)
			snprintf(sock, sizeof(sock), "%s", C->sock);
		if (!admin)
			snprintf(C->m->ev_note, sizeof(C->m->ev_note), "%s",
				 !C->sock ? "no event stream: not connected"
					  : "event log needs admin.sock (group duet-admin): "
					    "read-only mode");
		pthread_mutex_unlock(&C->lock);
		if (!admin) {
			nap(C, 0.5);
			continue;
		}
		st = client_request(&req, &b);
		pthread_mutex_lock(&C->lock);
		C->m->ev_live = false;
		if (st < 0 && st != -ECANCELED)
			snprintf(C->m->ev_note, sizeof(C->m->ev_note),
				 "event stream lost (%s); reconnecting", client_strerror(st));
		else if (st > 0 && st != 200)
			snprintf(C->m->ev_note, sizeof(C->m->ev_note),
				 "event stream refused: HTTP %d: %.100s", st,
				 client_error_message(b.p, msg, sizeof(msg)) ? msg
									     : "no reason given");
		else
			snprintf(C->m->ev_note, sizeof(C->m->ev_note),
				 "event stream closed by the daemon; reconnecting");
		pthread_mutex_unlock(&C->lock);
		client_sse_free(&x.sse);
		client_buf_free(&b);
		wake_ui(C);
		nap(C, st > 0 && st != 200 ? 5.0 : 1.0);
	}
	return NULL;
}

/* --- the UI -------------------------------------------------------------------------------- */

struct ui_state {
	struct panel_set ps;
	struct panel_ui ui;
	bool filtering, quit;
	char confirm_id[64]; /* a cancel waiting for y */
	char filter_copy[64];
};

/* Queue an action for the fetcher, if this connection may act. Lock held. */
static void request_action(struct console *C, enum action_kind kind, const char *arg,
			   const char *verb)
{
	if (!C->m->have || C->m->conn != MODEL_UP) {
		set_message(C, CA_COLOR(CC_RED) | CA_BOLD, "%s: not connected", verb);
		return;
	}
	if (!C->m->cur.admin) {
		set_message(C, CA_COLOR(CC_YELLOW) | CA_BOLD,
			    "read-only: %s needs admin.sock and group duet-admin (connected to %s)",
			    verb, C->m->sock);
		return;
	}
	C->action = kind;
	snprintf(C->action_arg, sizeof(C->action_arg), "%s", arg ? arg : "");
	set_message(C, CA_DIM, "%s %s ...", verb, arg ? arg : "");
	pthread_cond_signal(&C->wake);
}

/* One key. Lock held. */
static void handle_key(struct console *C, struct ui_state *u, int key)
{
	struct model *m = C->m;

	if (u->ui.help || u->ui.details) { /* any key closes an overlay */
		u->ui.help = u->ui.details = false;
		if (key != 'q' && key != PK_F10)
			return;
	}
	if (u->filtering) {
		size_t len = strlen(m->filter);

		if (key == PK_ENTER) {
			u->filtering = false;
		} else if (key == PK_ESC) {
			m->filter[0] = '\0';
			u->filtering = false;
		} else if (key == PK_BACKSPACE) {
			if (len)
				m->filter[len - 1] = '\0';
		} else if (key >= 0x20 && key < 0x7f && len + 1 < sizeof(m->filter)) {
			m->filter[len] = (char)key;
			m->filter[len + 1] = '\0';
		}
		return;
	}
	if (u->confirm_id[0]) {
		if (key == 'y' || key == 'Y')
			request_action(C, ACT_CANCEL, u->confirm_id, "cancel");
		else
			set_message(C, CA_DIM, "cancel of %s not sent", u->confirm_id);
		u->confirm_id[0] = '\0';
		return;
	}
	if (panel_handle_key(&u->ps, m, key))
		return;
	switch (key) {
	case 'q':
	case 'Q':
	case PK_F10:
		u->quit = true;
		break;
	case '?':
	case 'h':
	case PK_F1:
		u->ui.help = true;
		break;
	case PK_ENTER:
		u->ui.details = true;
		break;
	case 'p':
	case 'P':
		C->paused = !C->paused;
		set_message(C, CA_DIM, C->paused ? "updates paused" : "updates resumed");
		pthread_cond_signal(&C->wake);
		break;
	case '/':
		u->filtering = true;
		break;
	case PK_ESC:
		m->filter[0] = '\0';
		break;
	case '>':
	case '.':
	case PK_F6:
		m->sort = (m->sort + 1) % MODEL_SORT_COUNT;
		break;
	case '<':
	case ',':
		m->sort = (m->sort + MODEL_SORT_COUNT - 1) % MODEL_SORT_COUNT;
		break;
	case 'I':
		m->sort_desc = !m->sort_desc;
		break;
	case 'd':
	case 'u': {
		const struct model_partition *pt = panel_selected_partition(&u->ps, m);

		if (!pt)
			set_message(C, CA_COLOR(CC_YELLOW), "select a partition first");
		else
			request_action(C, key == 'd' ? ACT_DRAIN : ACT_UNDRAIN, pt->name,
				       key == 'd' ? "drain" : "undrain");
		break;
	}
	case 'c': {
		const struct model_request *q =
			u->ps.focus == PANEL_REQS ? panel_selected_request(&u->ps, m) : NULL;

		if (!q) {
			set_message(C, CA_COLOR(CC_YELLOW),
				    "select a request first (Tab to Requests, arrows)");
		} else if (!m->cur.admin) {
			request_action(C, ACT_CANCEL, q->id, "cancel"); /* says read-only */
		} else {
			snprintf(u->confirm_id, sizeof(u->confirm_id), "%s", q->id);
		}
		break;
	}
	case 'r':
		request_action(C, ACT_RELOAD, NULL, "reload");
		break;
	default:
		break;
	}
}

static int run_ui(struct console *C, bool color)
{
	struct ui_state *u = calloc(1, sizeof(*u));
	struct canvas cv = { 0 };
	pthread_t fetcher, events;
	sigset_t block, old;
	int w, h, rc = 0;
	char prompt[80], confirm[160];

	if (!u)
		return 1;
	panel_set_init(&u->ps);
	u->ui.interval = C->interval;
	if (screen_open(color)) {
		fprintf(stderr, PROG ": cannot initialise the terminal (TERM=%s)\n",
			getenv("TERM") ? getenv("TERM") : "");
		free(u);
		return 1;
	}
	screen_size(&w, &h);
	if (canvas_init(&cv, w, h, screen_utf8())) {
		screen_close();
		free(u);
		return 1;
	}
	/* The fetchers take no signals: SIGWINCH and the fatal ones go to this thread. */
	sigfillset(&block);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	pthread_create(&fetcher, NULL, fetcher_main, C);
	pthread_create(&events, NULL, events_main, C);
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	while (!u->quit) {
		struct pollfd pfd[2] = { { .fd = STDIN_FILENO, .events = POLLIN },
					 { .fd = C->wake_pipe[0], .events = POLLIN } };
		char drain[64];
		double t = now_s();
		int key;

		pthread_mutex_lock(&C->lock);
		u->ui.paused = C->paused;
		u->ui.message = t < C->msg_until ? C->msg : NULL;
		u->ui.message_attr = C->msg_attr;
		u->ui.prompt = NULL;
		if (u->filtering) {
			snprintf(prompt, sizeof(prompt), "%s", C->m->filter);
			u->ui.prompt = prompt;
		}
		if (u->confirm_id[0]) {
			snprintf(confirm, sizeof(confirm), "Cancel request %s? (y/n)",
				 u->confirm_id);
			u->ui.message = confirm;
			u->ui.message_attr = CA_REVERSE | CA_BOLD;
		}
		panel_draw_frame(&u->ps, C->m, &u->ui, &cv);
		pthread_mutex_unlock(&C->lock);
		screen_present(&cv);

		if (poll(pfd, 2, 1000) > 0 && (pfd[1].revents & POLLIN))
			while (read(C->wake_pipe[0], drain, sizeof(drain)) ==
			       (ssize_t)sizeof(drain))
				;
		while ((key = screen_getkey()) != -1) {
			if (key == PK_RESIZE) {
				screen_size(&w, &h);
				if (canvas_resize(&cv, w, h)) {
					rc = 1;
					u->quit = true;
				}
				continue;
			}
			if (key == 0)
				continue;
			pthread_mutex_lock(&C->lock);
			handle_key(C, u, key);
			pthread_mutex_unlock(&C->lock);
			if (u->quit)
				break;
		}
	}
	atomic_store(&C->stop, true);
	pthread_mutex_lock(&C->lock);
	pthread_cond_signal(&C->wake);
	pthread_mutex_unlock(&C->lock);
	screen_close();
	pthread_join(fetcher, NULL);
	pthread_join(events, NULL);
	canvas_free(&cv);
	free(u);
	return rc;
}

/* --- --once -------------------------------------------------------------------------------- */

static int once_event(void *ctx, const char *event, const char *data)
{
	struct model *m = ctx;
	struct model_event e;

	if (!model_parse_event(data, &e)) {
		if (!e.type[0])
			snprintf(e.type, sizeof(e.type), "%s", event);
		model_add_event(m, &e);
	}
	return 0;
}

static int once_body(void *ctx, const char *p, size_t n)
{
	return client_sse_feed(ctx, p, n);
}

static void term_size(int *w, int *h)
{
	struct winsize ws;
	const char *cols = getenv("COLUMNS"), *lines = getenv("LINES");

	*w = 80;
	*h = 24;
	if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col &&
	    ws.ws_row) {
		*w = ws.ws_col;
		*h = ws.ws_row;
		return;
	}
	if (cols && atoi(cols) > 0)
		*w = atoi(cols);
	if (lines && atoi(lines) > 0)
		*h = atoi(lines);
}

static int run_once(struct console *C, int w, int h)
{
	struct model_status *s = malloc(sizeof(*s));
	struct canvas cv = { 0 };
	struct panel_set ps;
	struct panel_ui ui = { .once = true, .interval = C->interval };
	char err[512], *text;
	const char *sock;
	bool utf8;

	if (!s)
		return 1;
	setlocale(LC_ALL, "");
	utf8 = !strcmp(nl_langinfo(CODESET), "UTF-8");
	sock = fetch_status(C, s, err, sizeof(err));
	if (sock) {
		model_update(C->m, s, now_s());
		model_set_conn(C->m, MODEL_UP, sock, NULL, now_s());
		if (s->admin) {
			/* The daemon replays its recent events first; take what comes in 1 s. */
			struct client_sse sse = { .on_event = once_event, .ctx = C->m };
			struct client_buf b = { 0 };
			int status = 0;
			struct client_req req = {
				.sock = sock,
				.method = "GET",
				.path = "/admin/events",
				.timeout_ms = 1000,
				.agent = PROG,
				.on_body = once_body,
				.ctx = &sse,
				.status_out = &status,
			};

			client_request(&req, &b);
			C->m->ev_live = status == 200;
			if (status != 200)
				snprintf(C->m->ev_note, sizeof(C->m->ev_note),
					 "no event stream (HTTP %d)", status);
			client_sse_free(&sse);
			client_buf_free(&b);
		} else {
			snprintf(C->m->ev_note, sizeof(C->m->ev_note),
				 "event log needs admin.sock (group duet-admin): read-only mode");
		}
	} else {
		model_set_conn(C->m, MODEL_DOWN, C->socks[0], err, now_s());
		snprintf(C->m->ev_note, sizeof(C->m->ev_note), "no event stream: not connected");
	}
	panel_set_init(&ps);
	if (canvas_init(&cv, w, h, utf8)) {
		free(s);
		return 1;
	}
	panel_draw_frame(&ps, C->m, &ui, &cv);
	text = canvas_text(&cv);
	if (text)
		fputs(text, stdout);
	free(text);
	canvas_free(&cv);
	free(s);
	if (!sock)
		fprintf(stderr, PROG ": %s\n", err);
	return sock ? 0 : 1;
}

/* --- main ---------------------------------------------------------------------------------- */

enum { OPT_ADMIN_SOCKET = 256, OPT_ONCE, OPT_SIZE, OPT_NO_COLOR };

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "interval", required_argument, NULL, 'i' },
		{ "socket", required_argument, NULL, 's' },
		{ "admin-socket", required_argument, NULL, OPT_ADMIN_SOCKET },
		{ "once", no_argument, NULL, OPT_ONCE },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "no-color", no_argument, NULL, OPT_NO_COLOR },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct console C = { .interval = 1.0 };
	const char *sock = NULL, *admin = NULL, *env = getenv("DUET_SOCKET");
	char dir[400], def_api[512], def_admin[512], *end;
	bool once = false, color = true;
	int c, w = 0, h = 0, rc;

	while ((c = getopt_long(argc, argv, "i:s:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			C.interval = strtod(optarg, &end);
			if (*end || !(C.interval >= 0.1 && C.interval <= 3600)) {
				fprintf(stderr, PROG ": bad -i '%s' (want 0.1 .. 3600 seconds)\n",
					optarg);
				return 2;
			}
			break;
		case 's':
			sock = optarg;
			break;
		case OPT_ADMIN_SOCKET:
			admin = optarg;
			break;
		case OPT_ONCE:
			once = true;
			break;
		case OPT_SIZE:
			if (sscanf(optarg, "%dx%d", &w, &h) != 2 || w < 20 || h < 5 || w > 1000 ||
			    h > 1000) {
				fprintf(stderr, PROG ": bad --size '%s' (want WxH, e.g. 80x24)\n",
					optarg);
				return 2;
			}
			break;
		case OPT_NO_COLOR:
			color = false;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	client_socket_dir(dir, sizeof(dir));
	snprintf(def_api, sizeof(def_api), "%s/api.sock", dir);
	snprintf(def_admin, sizeof(def_admin), "%s/admin.sock", dir);
	/* admin.sock first (it can act), then api.sock; an explicit -s alone is used alone. */
	if (admin)
		C.socks[C.n_socks++] = admin;
	if (sock)
		C.socks[C.n_socks++] = sock;
	if (!admin && !sock) {
		C.socks[C.n_socks++] = def_admin;
		C.socks[C.n_socks++] = env && env[0] ? env : def_api;
	} else if (!sock) {
		C.socks[C.n_socks++] = env && env[0] ? env : def_api;
	}

	C.m = malloc(sizeof(*C.m));
	if (!C.m) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	model_init(C.m);
	model_set_conn(C.m, MODEL_CONNECTING, C.socks[0], NULL, 0);
	if (once) {
		if (!w)
			term_size(&w, &h);
		rc = run_once(&C, w, h);
		free(C.m);
		return rc;
	}
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		fprintf(stderr, PROG ": needs a terminal (use --once for plain text)\n");
		free(C.m);
		return 2;
	}
	if (pipe2(C.wake_pipe, O_CLOEXEC | O_NONBLOCK)) {
		fprintf(stderr, PROG ": pipe: %s\n", strerror(errno));
		free(C.m);
		return 1;
	}
	pthread_mutex_init(&C.lock, NULL);
	pthread_cond_init(&C.wake, NULL);
	rc = run_ui(&C, color);
	pthread_cond_destroy(&C.wake);
	pthread_mutex_destroy(&C.lock);
	close(C.wake_pipe[0]);
	close(C.wake_pipe[1]);
	free(C.m);
	return rc;
}
