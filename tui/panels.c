// SPDX-License-Identifier: MIT
/*
 * panels — the console's panels and the frame that arranges them (see
 * panels.h).
 */
#include "tui/panels.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define ATTR_TITLE CA_BOLD
#define ATTR_HEAD (CA_BOLD | CA_UNDERLINE)
#define ATTR_OK CA_COLOR(CC_GREEN)
#define ATTR_WARN CA_COLOR(CC_YELLOW)
#define ATTR_BAD (CA_COLOR(CC_RED) | CA_BOLD)

/* --- formatting ------------------------------------------------------------------ */

void panel_fmt_duration(char *out, size_t cap, double s)
{
	long t = (long)s;

	if (isnan(s) || s < 0)
		snprintf(out, cap, "-");
	else if (s < 10)
		snprintf(out, cap, "%.1fs", s);
	else if (t < 60)
		snprintf(out, cap, "%lds", t);
	else if (t < 3600)
		snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
	else if (t < 86400)
		snprintf(out, cap, "%ldh%02ldm", t / 3600, t % 3600 / 60);
	else
		snprintf(out, cap, "%ldd%02ldh", t / 86400, t % 86400 / 3600);
}

/* A number with one decimal below 100, none above; "-" when NAN. */
static void fmt_num(char *out, size_t cap, double v)
{
	if (isnan(v))
		snprintf(out, cap, "-");
	else if (fabs(v) < 100)
		snprintf(out, cap, "%.1f", v);
	else
		snprintf(out, cap, "%.0f", v);
}

static void fmt_pct(char *out, size_t cap, double frac)
{
	if (isnan(frac))
		snprintf(out, cap, "-");
	else
		snprintf(out, cap, "%.0f%%", 100 * frac);
}

static unsigned part_state_attr(const char *state)
{
	if (!strcmp(state, "up"))
		return ATTR_OK;
	if (!strcmp(state, "down") || !strcmp(state, "circuit open"))
		return ATTR_BAD;
	return ATTR_WARN;
}

static unsigned req_state_attr(const char *state)
{
	if (!strcmp(state, "failed"))
		return ATTR_BAD;
	if (!strcmp(state, "cancelled"))
		return CA_COLOR(CC_MAGENTA);
	if (!strcmp(state, "done"))
		return CA_DIM;
	if (!strcmp(state, "queued"))
		return ATTR_WARN;
	return ATTR_OK;
}

/* "─ Title ─────── info ─", the title reversed when the panel has focus. */
static void draw_title(struct canvas *c, struct layout_rect r, const char *title, bool focused,
		       const char *info)
{
	int x;

	canvas_hline(c, r.x, r.y, r.w, CA_DIM);
	x = r.x + 1;
	x += canvas_printf(c, x, r.y, r.w - 2, focused ? (CA_REVERSE | CA_BOLD) : ATTR_TITLE,
			   " %s ", title);
	if (info && info[0]) {
		int len = (int)strlen(info) + 2, room = r.x + r.w - 1 - x - 1;

		if (room >= 6) {
			if (len > room)
				len = room;
			canvas_printf(c, r.x + r.w - 1 - len, r.y, len, CA_DIM, " %s ", info);
		}
	}
}

/* Column X positions from widths (one blank between visible columns). */
static void col_x(const int *w, int n, int x0, int *x)
{
	int at = x0;

	for (int i = 0; i < n; i++) {
		x[i] = at;
		if (w[i])
			at += w[i] + 1;
	}
}

static void draw_header_row(struct canvas *c, const struct layout_col *cols, int n, const int *w,
			    const int *x, int y)
{
	for (int i = 0; i < n; i++) {
		if (!w[i])
			continue;
		if (cols[i].right)
			canvas_put_right(c, x[i], y, w[i], ATTR_HEAD, cols[i].title);
		else
			canvas_put(c, x[i], y, w[i], ATTR_HEAD, cols[i].title);
	}
}

static void cell_put(struct canvas *c, const struct layout_col *col, int w, int x, int y,
		     unsigned attr, const char *text)
{
	if (!w)
		return;
	if (col->right)
		canvas_put_right(c, x, y, w, attr, text);
	else
		canvas_put(c, x, y, w, attr, text);
}

/* Keep the selection in [0, n) and on screen in PAGE rows. */
static void scroll_to_sel(struct panel *p, int n, int page)
{
	if (p->sel >= n)
		p->sel = n - 1;
	if (p->sel < 0)
		p->sel = 0;
	if (page < 1)
		page = 1;
	p->page = page;
	if (p->sel < p->top)
		p->top = p->sel;
	if (p->sel >= p->top + page)
		p->top = p->sel - page + 1;
	if (p->top > (n > page ? n - page : 0))
		p->top = n > page ? n - page : 0;
	if (p->top < 0)
		p->top = 0;
}

/*
 * Once the operator has moved the selection, follow the selected item by
 * its key across refreshes (rows come and go in a live table); until then
 * the selection stays on its row, the first.
 */
static void sync_sel(struct panel *p, const struct model *m)
{
	int n = p->ops->rows ? p->ops->rows(p, m) : 0;
	char key[64];

	if (n <= 0 || !p->ops->row_key)
		return;
	if (p->sel_key[0]) {
		int i;

		for (i = 0; i < n; i++)
			if (p->ops->row_key(p, m, i, key, sizeof(key)) && !strcmp(key, p->sel_key))
				break;
		if (i < n)
			p->sel = i;
		else
			p->sel_key[0] = '\0'; /* it is gone: stay on the row */
	}
	if (p->sel >= n)
		p->sel = n - 1;
	if (p->sel < 0)
		p->sel = 0;
}

/* --- header ---------------------------------------------------------------------- */

static int header_measure(const struct panel *p, const struct model *m, int width)
{
	if (m->conn != MODEL_UP || (m->have && !m->cur.healthy))
		return 3;
	return 2;
}

static void header_draw(struct panel *p, const struct model *m, struct canvas *c,
			struct layout_rect r)
{
	const struct model_status *s = &m->cur;
	char up[32], rps[32], tps[32], at1[16], at2[16], line[640];
	const char *mode, *sep;
	unsigned mattr;
	int x;

	canvas_fill(c, r.x, r.y, r.w, ' ', CA_REVERSE);
	sep = c->utf8 ? "·" : "|";
	panel_fmt_duration(up, sizeof(up), s->uptime_s);
	if (m->have)
		snprintf(line, sizeof(line), " %s %s %s %s %s %s uptime %s%s%s%s%s", s->name, sep,
			 s->model, sep, s->state, sep, up, s->version[0] ? " " : "",
			 s->version[0] ? sep : "", s->version[0] ? " v" : "", s->version);
	else
		snprintf(line, sizeof(line), " duet-console");
	canvas_put(c, r.x, r.y, r.w, CA_REVERSE | CA_BOLD, line);
	if (!m->have) {
		mode = "";
		mattr = CA_REVERSE;
	} else if (s->admin) {
		mode = " ADMIN ";
		mattr = CA_REVERSE | CA_BOLD | CA_COLOR(CC_YELLOW);
	} else {
		mode = " READ-ONLY ";
		mattr = CA_REVERSE | CA_BOLD;
	}
	x = r.x + r.w - (int)strlen(mode);
	if (x > r.x + 20)
		canvas_put(c, x, r.y, -1, mattr, mode);
	if (r.h < 2)
		return;

	/* Line 2: health, load and SLO attainment. */
	x = r.x + 1;
	if (!m->have)
		x += canvas_put(c, x, r.y + 1, -1, ATTR_WARN, "no data yet");
	else if (s->healthy)
		x += canvas_put(c, x, r.y + 1, -1, ATTR_OK | CA_BOLD,
				c->utf8 ? "● healthy" : "* healthy");
	else
		x += canvas_put(c, x, r.y + 1, -1, ATTR_BAD,
				c->utf8 ? "✗ UNHEALTHY" : "x UNHEALTHY");
	fmt_num(rps, sizeof(rps), model_rps(m, 5));
	fmt_num(tps, sizeof(tps), model_tps(m, 5));
	fmt_pct(at1, sizeof(at1), model_attainment_ttft(m));
	fmt_pct(at2, sizeof(at2), model_attainment_tpot(m));
	snprintf(line, sizeof(line), "  %s req/s  %s out tok/s  SLO(%.0fs) TTFT %s TPOT %s", rps,
		 tps, isnan(s->window_s) ? 60.0 : s->window_s, at1, at2);
	x += canvas_put(c, x, r.y + 1, r.x + r.w - x, 0, line);
	if (!isnan(s->slo_attainment))
		canvas_printf(c, x, r.y + 1, r.x + r.w - x, CA_DIM, " (target %.0f%%)",
			      100 * s->slo_attainment);
	if (r.h < 3)
		return;

	/* Line 3: why it is not well. */
	if (m->conn == MODEL_DOWN)
		snprintf(line, sizeof(line), " DISCONNECTED — retrying: %s", m->conn_err);
	else if (m->conn == MODEL_CONNECTING)
		snprintf(line, sizeof(line), " connecting to %s ...", m->sock);
	else
		snprintf(line, sizeof(line), " unhealthy: %s",
			 s->reason[0] ? s->reason : "no reason given");
	if (!c->utf8) /* the dash is not ASCII */
		for (char *d = strstr(line, "—"); d; d = strstr(line, "—"))
			memmove(d + 1, d + 3, strlen(d + 3) + 1), *d = '-';
	canvas_put(c, r.x, r.y + 2, r.w, m->conn == MODEL_CONNECTING ? ATTR_WARN : ATTR_BAD, line);
}

static const struct panel_ops header_ops = {
	.title = "Header",
	.measure = header_measure,
	.draw = header_draw,
};

/* --- partitions ---------------------------------------------------------------- */

enum {
	PC_NAME,
	PC_ROLE,
	PC_DEV,
	PC_CPUS,
	PC_STATE,
	PC_RUN,
	PC_WAIT,
	PC_BATCH,
	PC_KVBAR,
	PC_KV,
	PC_HIT,
	PC_STEP,
	PC_UTIL,
	PC_N
};

const struct layout_col panel_part_cols[PC_N] = {
	[PC_NAME] = { "NAME", 4, 10, 0, 0, 0 },	  [PC_ROLE] = { "ROLE", 5, 7, 4, 0, 0 },
	[PC_DEV] = { "DEVICE", 4, 10, 5, 0, 0 },  [PC_CPUS] = { "CPUS", 4, 8, 6, 0, 0 },
	[PC_STATE] = { "STATE", 8, 12, 0, 0, 0 }, [PC_RUN] = { "RUN", 3, 3, 0, 0, 1 },
	[PC_WAIT] = { "WAIT", 4, 4, 1, 0, 1 },	  [PC_BATCH] = { "BATCH", 5, 5, 3, 0, 1 },
	[PC_KVBAR] = { "KV", 8, 20, 2, 1, 0 },	  [PC_KV] = { "BLOCKS", 7, 9, 3, 0, 1 },
	[PC_HIT] = { "HIT%", 4, 4, 3, 0, 1 },	  [PC_STEP] = { "STEPms", 6, 6, 4, 0, 1 },
	[PC_UTIL] = { "UTIL", 4, 4, 2, 0, 1 },
};
const int panel_part_ncols = PC_N;

static int parts_rows(const struct panel *p, const struct model *m)
{
	return (int)m->cur.n_parts;
}

static bool parts_key(const struct panel *p, const struct model *m, int i, char *out, size_t cap)
{
	if (i < 0 || i >= (int)m->cur.n_parts)
		return false;
	snprintf(out, cap, "%s", m->cur.parts[i].name);
	return true;
}

static int parts_measure(const struct panel *p, const struct model *m, int width)
{
	return 2 + (m->cur.n_parts ? (int)m->cur.n_parts : 1);
}

static void kv_bar(struct canvas *c, int x, int y, int w, const struct model_partition *pt)
{
	const double v[3] = { pt->kv_used, pt->kv_cached, pt->kv_leased };
	const unsigned attrs[3] = { ATTR_OK, CA_COLOR(CC_CYAN), ATTR_WARN };
	const uint32_t glyphs[3] = { 0x2588, 0x2592, 0x2593 }; /* █ ▒ ▓ */

	canvas_bar(c, x, y, w, v, attrs, glyphs, "#+=", 3, pt->kv_total);
}

static void parts_draw(struct panel *p, const struct model *m, struct canvas *c,
		       struct layout_rect r)
{
	int w[PC_N], x[PC_N], n = (int)m->cur.n_parts;
	char info[64];

	snprintf(info, sizeof(info), "%d", n);
	draw_title(c, r, "Partitions", p->focused, info);
	if (r.h < 2)
		return;
	layout_columns(panel_part_cols, PC_N, r.w, w);
	col_x(w, PC_N, r.x, x);
	draw_header_row(c, panel_part_cols, PC_N, w, x, r.y + 1);
	if (n == 0) {
		if (r.h > 2)
			canvas_put(c, r.x + 1, r.y + 2, r.w - 1, CA_DIM, "no partitions");
		return;
	}
	scroll_to_sel(p, n, r.h - 2);
	for (int row = 0; row < r.h - 2 && p->top + row < n; row++) {
		const struct model_partition *pt = &m->cur.parts[p->top + row];
		const char *st = model_part_state(pt);
		int y = r.y + 2 + row;
		char b[64];

		cell_put(c, &panel_part_cols[PC_NAME], w[PC_NAME], x[PC_NAME], y, CA_BOLD,
			 pt->name);
		cell_put(c, &panel_part_cols[PC_ROLE], w[PC_ROLE], x[PC_ROLE], y, 0, pt->role);
		cell_put(c, &panel_part_cols[PC_DEV], w[PC_DEV], x[PC_DEV], y, 0,
			 pt->devices[0] ? pt->devices : "-");
		cell_put(c, &panel_part_cols[PC_CPUS], w[PC_CPUS], x[PC_CPUS], y, 0,
			 pt->cpus[0] ? pt->cpus : "all");
		cell_put(c, &panel_part_cols[PC_STATE], w[PC_STATE], x[PC_STATE], y,
			 part_state_attr(st), st);
		snprintf(b, sizeof(b), "%.0f", pt->running);
		cell_put(c, &panel_part_cols[PC_RUN], w[PC_RUN], x[PC_RUN], y, 0, b);
		snprintf(b, sizeof(b), "%.0f", pt->waiting);
		cell_put(c, &panel_part_cols[PC_WAIT], w[PC_WAIT], x[PC_WAIT], y,
			 pt->waiting > 0 ? ATTR_WARN : 0, b);
		snprintf(b, sizeof(b), "%.0f", pt->batch);
		cell_put(c, &panel_part_cols[PC_BATCH], w[PC_BATCH], x[PC_BATCH], y, 0, b);
		if (w[PC_KVBAR])
			kv_bar(c, x[PC_KVBAR], y, w[PC_KVBAR], pt);
		snprintf(b, sizeof(b), "%.0f/%.0f", pt->kv_used + pt->kv_leased, pt->kv_total);
		cell_put(c, &panel_part_cols[PC_KV], w[PC_KV], x[PC_KV], y, 0, b);
		fmt_pct(b, sizeof(b), model_hit_rate(pt));
		cell_put(c, &panel_part_cols[PC_HIT], w[PC_HIT], x[PC_HIT], y, 0, b);
		fmt_num(b, sizeof(b), pt->step_ms);
		cell_put(c, &panel_part_cols[PC_STEP], w[PC_STEP], x[PC_STEP], y, 0, b);
		fmt_pct(b, sizeof(b), pt->utilization);
		cell_put(c, &panel_part_cols[PC_UTIL], w[PC_UTIL], x[PC_UTIL], y, 0, b);
		if (p->focused && p->top + row == p->sel)
			canvas_attr(c, r.x, y, w[PC_NAME], CA_REVERSE | CA_BOLD);
	}
}

static const struct panel_ops parts_ops = {
	.title = "Partitions",
	.measure = parts_measure,
	.draw = parts_draw,
	.rows = parts_rows,
	.row_key = parts_key,
};

/* --- KV links ---------------------------------------------------------------------- */

static int links_rows(const struct panel *p, const struct model *m)
{
	return (int)m->cur.n_links;
}

static bool links_key(const struct panel *p, const struct model *m, int i, char *out, size_t cap)
{
	if (i < 0 || i >= (int)m->cur.n_links)
		return false;
	snprintf(out, cap, "%s>%s", m->cur.links[i].prefill, m->cur.links[i].decode);
	return true;
}

static int links_measure(const struct panel *p, const struct model *m, int width)
{
	return m->cur.n_links ? 2 + (int)m->cur.n_links : 2;
}

enum { LC_PAIR, LC_TRANSPORT, LC_GBPS, LC_SPARK, LC_TPS, LC_FAIL, LC_EXPIRED, LC_N };
static const struct layout_col link_cols[LC_N] = {
	[LC_PAIR] = { "PREFILL>DECODE", 9, 22, 0, 0, 0 },
	[LC_TRANSPORT] = { "WIRE", 4, 8, 3, 0, 0 },
	[LC_GBPS] = { "GB/s", 6, 7, 0, 0, 1 },
	[LC_SPARK] = { "GB/s history", 8, 30, 2, 1, 0 },
	[LC_TPS] = { "XFER/s", 6, 7, 1, 0, 1 },
	[LC_FAIL] = { "FAIL", 4, 6, 1, 0, 1 },
	[LC_EXPIRED] = { "EXPIRED", 7, 7, 2, 0, 1 },
};

static void links_draw(struct panel *p, const struct model *m, struct canvas *c,
		       struct layout_rect r)
{
	int w[LC_N], x[LC_N], n = (int)m->cur.n_links;
	double hist[MODEL_RING];

	draw_title(c, r, "KV links", p->focused, NULL);
	if (r.h < 2)
		return;
	if (n == 0) {
		canvas_put(c, r.x + 1, r.y + 1, r.w - 1, CA_DIM,
			   "no KV links (all partitions mixed)");
		return;
	}
	layout_columns(link_cols, LC_N, r.w, w);
	col_x(w, LC_N, r.x, x);
	draw_header_row(c, link_cols, LC_N, w, x, r.y + 1);
	scroll_to_sel(p, n, r.h - 2);
	for (int row = 0; row < r.h - 2 && p->top + row < n; row++) {
		const struct model_link *l = &m->cur.links[p->top + row];
		const struct model_link_hist *h = model_link_hist(m, l);
		int y = r.y + 2 + row;
		char b[96];

		snprintf(b, sizeof(b), "%s%s%s", l->prefill, c->utf8 ? "→" : ">", l->decode);
		cell_put(c, &link_cols[LC_PAIR], w[LC_PAIR], x[LC_PAIR], y, CA_BOLD, b);
		cell_put(c, &link_cols[LC_TRANSPORT], w[LC_TRANSPORT], x[LC_TRANSPORT], y, 0,
			 l->transport);
		snprintf(b, sizeof(b), "%.2f", model_link_gbps(h, 5));
		if (isnan(model_link_gbps(h, 5)))
			snprintf(b, sizeof(b), "-");
		cell_put(c, &link_cols[LC_GBPS], w[LC_GBPS], x[LC_GBPS], y, 0, b);
		if (w[LC_SPARK] && h) {
			size_t k = model_ring_tail(&h->gbps, hist, (size_t)w[LC_SPARK]);

			canvas_sparkline(c, x[LC_SPARK], y, w[LC_SPARK], hist, k, 0,
					 CA_COLOR(CC_CYAN), 0, 0);
		}
		fmt_num(b, sizeof(b), model_link_tps(h, 5));
		cell_put(c, &link_cols[LC_TPS], w[LC_TPS], x[LC_TPS], y, 0, b);
		snprintf(b, sizeof(b), "%.0f", l->failures);
		cell_put(c, &link_cols[LC_FAIL], w[LC_FAIL], x[LC_FAIL], y,
			 l->failures > 0 ? ATTR_BAD : 0, b);
		snprintf(b, sizeof(b), "%.0f", l->lease_expiries);
		cell_put(c, &link_cols[LC_EXPIRED], w[LC_EXPIRED], x[LC_EXPIRED], y,
			 l->lease_expiries > 0 ? ATTR_WARN : 0, b);
		if (p->focused && p->top + row == p->sel)
			canvas_attr(c, r.x, y, w[LC_PAIR], CA_REVERSE | CA_BOLD);
	}
}

static const struct panel_ops links_ops = {
	.title = "KV links",
	.measure = links_measure,
	.draw = links_draw,
	.rows = links_rows,
	.row_key = links_key,
};

/* --- latency ------------------------------------------------------------------------- */

static int latency_measure(const struct panel *p, const struct model *m, int width)
{
	return 4;
}

/* "TTFT p50 12.0 p90 20.1 p99 25.3 ms  SLO 500" and the p99 history against the SLO. */
static void latency_line(struct canvas *c, int x, int y, int w, const char *name,
			 const struct model_quantiles *q, double slo, const struct model_ring *p99)
{
	double hist[MODEL_RING], max = 0;
	char a[16], b[16], d[16];
	int used;
	size_t k;

	fmt_num(a, sizeof(a), q->p50);
	fmt_num(b, sizeof(b), q->p90);
	fmt_num(d, sizeof(d), q->p99);
	used = canvas_printf(c, x, y, w, 0, "%s p50 %6s p90 %6s p99 %6s ms", name, a, b, d);
	if (!isnan(slo))
		used += canvas_printf(c, x + used, y, w - used,
				      !isnan(q->p99) && q->p99 > slo ? ATTR_BAD : CA_DIM,
				      "  SLO %.0f ", slo);
	if (w - used < 8)
		return;
	k = model_ring_tail(p99, hist, (size_t)(w - used - 1));
	for (size_t i = 0; i < k; i++)
		if (hist[i] > max)
			max = hist[i];
	/* The scale keeps the SLO line at two thirds of the height, or above the peak. */
	if (!isnan(slo) && slo * 1.5 > max)
		max = slo * 1.5;
	canvas_sparkline(c, x + used + 1, y, w - used - 1, hist, k, max, ATTR_OK,
			 isnan(slo) ? 0 : slo, ATTR_BAD);
}

/* "TTFT p99   25.3 ms  SLO 500" and that series' history against the SLO (tall panels). */
static void series_line(struct canvas *c, int x, int y, int w, const char *name, const char *q,
			double now, double slo, const struct model_ring *hist_ring)
{
	double hist[MODEL_RING], max = 0;
	char a[16];
	int used;
	size_t k;

	fmt_num(a, sizeof(a), now);
	used = canvas_printf(c, x, y, w, 0, "%s %s %6s ms", name, q, a);
	if (!isnan(slo))
		used += canvas_printf(c, x + used, y, w - used,
				      !isnan(now) && now > slo ? ATTR_BAD : CA_DIM, "  SLO %.0f ",
				      slo);
	if (w - used < 8)
		return;
	k = model_ring_tail(hist_ring, hist, (size_t)(w - used - 1));
	for (size_t i = 0; i < k; i++)
		if (hist[i] > max)
			max = hist[i];
	if (!isnan(slo) && slo * 1.5 > max)
		max = slo * 1.5;
	canvas_sparkline(c, x + used + 1, y, w - used - 1, hist, k, max, ATTR_OK,
			 isnan(slo) ? 0 : slo, ATTR_BAD);
}

static void latency_draw(struct panel *p, const struct model *m, struct canvas *c,
			 struct layout_rect r)
{
	const struct model_status *s = &m->cur;
	double att[MODEL_RING];
	char a[16], b[16], info[64];
	int used, y;
	size_t k;

	snprintf(info, sizeof(info), "last %.0fs, %.0f requests",
		 isnan(s->window_s) ? 60.0 : s->window_s, s->win_requests);
	draw_title(c, r, r.h >= 8 ? "Latency" : "Latency (p99 over time)", p->focused, info);
	if (r.h >= 8) { /* room for every percentile's history */
		const struct {
			const char *name, *q;
			double now, slo;
			const struct model_ring *ring;
		} rows[6] = {
			{ "TTFT", "p99", s->ttft.p99, s->slo_ttft_ms, &m->ttft_p99 },
			{ "TTFT", "p90", s->ttft.p90, s->slo_ttft_ms, &m->ttft_p90 },
			{ "TTFT", "p50", s->ttft.p50, s->slo_ttft_ms, &m->ttft_p50 },
			{ "TPOT", "p99", s->tpot.p99, s->slo_tpot_ms, &m->tpot_p99 },
			{ "TPOT", "p90", s->tpot.p90, s->slo_tpot_ms, &m->tpot_p90 },
			{ "TPOT", "p50", s->tpot.p50, s->slo_tpot_ms, &m->tpot_p50 },
		};

		for (int i = 0; i < 6; i++)
			series_line(c, r.x + 1, r.y + 1 + i, r.w - 1, rows[i].name, rows[i].q,
				    rows[i].now, rows[i].slo, rows[i].ring);
		y = r.y + 7;
	} else {
		if (r.h > 1)
			latency_line(c, r.x + 1, r.y + 1, r.w - 1, "TTFT", &s->ttft, s->slo_ttft_ms,
				     &m->ttft_p99);
		if (r.h > 2)
			latency_line(c, r.x + 1, r.y + 2, r.w - 1, "TPOT", &s->tpot, s->slo_tpot_ms,
				     &m->tpot_p99);
		y = r.y + 3;
	}
	if (y < r.y + r.h) {
		double target = isnan(s->slo_attainment) ? 0 : s->slo_attainment;

		fmt_pct(a, sizeof(a), model_attainment_ttft(m));
		fmt_pct(b, sizeof(b), model_attainment_tpot(m));
		used = canvas_printf(c, r.x + 1, y, r.w - 1, 0,
				     "SLO met  TTFT %4s  TPOT %4s  both ", a, b);
		if (s->win_requests > 0) {
			double both = s->win_slo_ok / s->win_requests;

			fmt_pct(a, sizeof(a), both);
			used += canvas_printf(c, r.x + 1 + used, y, r.w - 1 - used,
					      both < target ? ATTR_BAD : ATTR_OK, "%4s", a);
		} else {
			used += canvas_put(c, r.x + 1 + used, y, r.w - 1 - used, 0, "   -");
		}
		used += canvas_printf(c, r.x + 1 + used, y, r.w - 1 - used, CA_DIM,
				      "  target %.0f%%", 100 * target);
		if (r.w - 2 - used >= 8) {
			k = model_ring_tail(&m->att_ttft, att, (size_t)(r.w - 2 - used - 1));
			canvas_sparkline(c, r.x + 2 + used, y, r.w - 2 - used, att, k, 1.0,
					 CA_COLOR(CC_CYAN), 0, 0);
		}
	}
}

static const struct panel_ops latency_ops = {
	.title = "Latency",
	.measure = latency_measure,
	.draw = latency_draw,
};

/* --- requests ------------------------------------------------------------------------ */

enum {
	RC_ID,
	RC_TENANT,
	RC_STATE,
	RC_PROMPT,
	RC_OUT,
	RC_TTFT,
	RC_TPOT,
	RC_AGE,
	RC_WHERE,
	RC_FINISH,
	RC_N
};

const struct layout_col panel_req_cols[RC_N] = {
	[RC_ID] = { "ID", 8, 14, 0, 1, 0 },	  [RC_TENANT] = { "TENANT", 8, 12, 4, 0, 0 },
	[RC_STATE] = { "STATE", 8, 12, 0, 0, 0 }, [RC_PROMPT] = { "PROMPT", 6, 6, 2, 0, 1 },
	[RC_OUT] = { "OUTPUT", 6, 9, 1, 0, 1 },	  [RC_TTFT] = { "TTFTms", 6, 7, 1, 0, 1 },
	[RC_TPOT] = { "TPOTms", 6, 7, 2, 0, 1 },  [RC_AGE] = { "AGE", 5, 6, 3, 0, 1 },
	[RC_WHERE] = { "WHERE", 5, 10, 3, 0, 0 }, [RC_FINISH] = { "FINISH", 6, 9, 5, 0, 0 },
};
const int panel_req_ncols = RC_N;

/* The sort key's column, for the header mark. */
static int sort_col(enum model_sort k)
{
	switch (k) {
	case MODEL_SORT_ID:
		return RC_ID;
	case MODEL_SORT_TENANT:
		return RC_TENANT;
	case MODEL_SORT_STATE:
		return RC_STATE;
	case MODEL_SORT_PROMPT:
		return RC_PROMPT;
	case MODEL_SORT_OUTPUT:
		return RC_OUT;
	case MODEL_SORT_TTFT:
		return RC_TTFT;
	case MODEL_SORT_TPOT:
		return RC_TPOT;
	case MODEL_SORT_PARTITION:
		return RC_WHERE;
	default:
		return RC_AGE;
	}
}

static int reqs_rows(const struct panel *p, const struct model *m)
{
	unsigned idx[MODEL_MAX_REQS];

	return (int)model_requests_view(m, idx, MODEL_MAX_REQS);
}

static bool reqs_key(const struct panel *p, const struct model *m, int i, char *out, size_t cap)
{
	unsigned idx[MODEL_MAX_REQS];
	int n = (int)model_requests_view(m, idx, MODEL_MAX_REQS);

	if (i < 0 || i >= n)
		return false;
	snprintf(out, cap, "%s", m->cur.reqs[idx[i]].id);
	return true;
}

static int reqs_measure(const struct panel *p, const struct model *m, int width)
{
	int n = (int)m->cur.n_reqs;

	return 2 + (n < 6 ? (n ? n : 1) : 6);
}

static void reqs_draw(struct panel *p, const struct model *m, struct canvas *c,
		      struct layout_rect r)
{
	unsigned idx[MODEL_MAX_REQS];
	int w[RC_N], x[RC_N], n = (int)model_requests_view(m, idx, MODEL_MAX_REQS), inflight = 0;
	struct layout_col cols[RC_N];
	char info[256], title[32];

	for (unsigned i = 0; i < m->cur.n_reqs; i++) {
		const char *st = m->cur.reqs[i].state;

		inflight += strcmp(st, "done") && strcmp(st, "failed") && strcmp(st, "cancelled");
	}
	snprintf(info, sizeof(info), "%d in flight, %u recent, sort %s%s%s%s%s", inflight,
		 m->cur.n_reqs - (unsigned)inflight, model_sort_name(m->sort),
		 m->sort_desc ? " desc" : "", m->filter[0] ? ", filter '" : "", m->filter,
		 m->filter[0] ? "'" : "");
	snprintf(title, sizeof(title), "Requests (%d)", n);
	draw_title(c, r, title, p->focused, info);
	if (r.h < 2)
		return;
	memcpy(cols, panel_req_cols, sizeof(cols));
	layout_columns(cols, RC_N, r.w, w);
	col_x(w, RC_N, r.x, x);
	draw_header_row(c, cols, RC_N, w, x, r.y + 1);
	{
		int sc = sort_col(m->sort);

		if (w[sc]) /* mark the sort column */
			canvas_attr(c, x[sc], r.y + 1, w[sc], ATTR_HEAD | CA_REVERSE);
	}
	if (n == 0) {
		if (r.h > 2)
			canvas_put(c, r.x + 1, r.y + 2, r.w - 1, CA_DIM,
				   m->filter[0] ? "no request matches the filter"
						: "no requests yet");
		return;
	}
	scroll_to_sel(p, n, r.h - 2);
	for (int row = 0; row < r.h - 2 && p->top + row < n; row++) {
		const struct model_request *q = &m->cur.reqs[idx[p->top + row]];
		int y = r.y + 2 + row;
		char b[64];

		cell_put(c, &cols[RC_ID], w[RC_ID], x[RC_ID], y, 0, q->id);
		cell_put(c, &cols[RC_TENANT], w[RC_TENANT], x[RC_TENANT], y, 0,
			 q->tenant[0] ? q->tenant : "-");
		cell_put(c, &cols[RC_STATE], w[RC_STATE], x[RC_STATE], y, req_state_attr(q->state),
			 q->state);
		snprintf(b, sizeof(b), "%.0f", q->prompt_tokens);
		cell_put(c, &cols[RC_PROMPT], w[RC_PROMPT], x[RC_PROMPT], y, 0, b);
		if (isnan(q->max_tokens))
			snprintf(b, sizeof(b), "%.0f", q->output_tokens);
		else
			snprintf(b, sizeof(b), "%.0f/%.0f", q->output_tokens, q->max_tokens);
		cell_put(c, &cols[RC_OUT], w[RC_OUT], x[RC_OUT], y, 0, b);
		fmt_num(b, sizeof(b), q->ttft_ms);
		cell_put(c, &cols[RC_TTFT], w[RC_TTFT], x[RC_TTFT], y,
			 q->ttft_ms > m->cur.slo_ttft_ms ? ATTR_BAD : 0, b);
		fmt_num(b, sizeof(b), q->tpot_ms);
		cell_put(c, &cols[RC_TPOT], w[RC_TPOT], x[RC_TPOT], y,
			 q->tpot_ms > m->cur.slo_tpot_ms ? ATTR_BAD : 0, b);
		panel_fmt_duration(b, sizeof(b), q->age_ms / 1000.0);
		cell_put(c, &cols[RC_AGE], w[RC_AGE], x[RC_AGE], y, 0, b);
		cell_put(c, &cols[RC_WHERE], w[RC_WHERE], x[RC_WHERE], y, 0,
			 q->partition[0] ? q->partition : "-");
		cell_put(c, &cols[RC_FINISH], w[RC_FINISH], x[RC_FINISH], y, CA_DIM,
			 q->finish[0] ? q->finish : "");
		if (p->focused && p->top + row == p->sel)
			canvas_attr(c, r.x, y, r.w, CA_REVERSE);
	}
}

static const struct panel_ops reqs_ops = {
	.title = "Requests",
	.measure = reqs_measure,
	.draw = reqs_draw,
	.rows = reqs_rows,
	.row_key = reqs_key,
};

/* --- events ---------------------------------------------------------------------------- */

static int events_rows(const struct panel *p, const struct model *m)
{
	return (int)m->ev_count;
}

static bool events_key(const struct panel *p, const struct model *m, int i, char *out, size_t cap)
{
	const struct model_event *e = model_event_get(m, (unsigned)i);

	if (!e)
		return false;
	snprintf(out, cap, "%lld", e->seq);
	return true;
}

static int events_measure(const struct panel *p, const struct model *m, int width)
{
	return 6;
}

static void events_draw(struct panel *p, const struct model *m, struct canvas *c,
			struct layout_rect r)
{
	int n = (int)m->ev_count, y0 = r.y + 1, rows = r.h - 1;

	draw_title(c, r, "Events", p->focused, m->ev_live ? "live, newest first" : NULL);
	if (r.h < 2)
		return;
	if (!m->ev_live || n == 0) {
		canvas_put(c, r.x + 1, y0, r.w - 1, m->ev_live ? CA_DIM : ATTR_WARN,
			   m->ev_live	   ? "no events yet"
			   : m->ev_note[0] ? m->ev_note
					   : "no event stream");
		y0++;
		rows--;
	}
	scroll_to_sel(p, n, rows);
	for (int row = 0; row < rows && p->top + row < n; row++) {
		const struct model_event *e = model_event_get(m, (unsigned)(p->top + row));
		unsigned attr = !strcmp(e->level, "error")  ? ATTR_BAD
				: !strcmp(e->level, "warn") ? ATTR_WARN
							    : 0;
		time_t sec = (time_t)e->time;
		struct tm tm;
		char when[16] = "--:--:--";
		int x = r.x + 1;

		if (e->time > 0 && localtime_r(&sec, &tm))
			strftime(when, sizeof(when), "%H:%M:%S", &tm);
		x += canvas_printf(c, x, y0 + row, r.x + r.w - x, CA_DIM, "%s ", when);
		x += canvas_printf(c, x, y0 + row, r.x + r.w - x, attr | CA_BOLD, "%-12s ",
				   e->type);
		if (e->partition[0])
			x += canvas_printf(c, x, y0 + row, r.x + r.w - x, 0, "%s: ", e->partition);
		canvas_put(c, x, y0 + row, r.x + r.w - x, attr, e->message);
		if (p->focused && p->top + row == p->sel)
			canvas_attr(c, r.x, y0 + row, r.w, CA_REVERSE);
	}
}

static const struct panel_ops events_ops = {
	.title = "Events",
	.measure = events_measure,
	.draw = events_draw,
	.rows = events_rows,
	.row_key = events_key,
};

/* --- overlays ----------------------------------------------------------------------------- */

static const char *const help_lines[] = {
	"duet-console keys",
	"",
	"  ? F1          this help (any key closes it)",
	"  q F10         quit",
	"  Tab S-Tab     next / previous panel",
	"  Up Down PgUp PgDn Home End   move in the panel",
	"  Enter         details of the selected partition or request",
	"  /             filter requests (id, tenant, state, partition); Esc clears",
	"  < > F6        sort requests by the previous / next column;  I  invert",
	"  d / u         drain / undrain the selected partition      (admin)",
	"  c             cancel the selected request (asks first)    (admin)",
	"  r             reload the daemon's configuration           (admin)",
	"  p             pause / resume updates",
	"",
	"KV bar: used (#), cached (+), leased (=), free (.) blocks of the pool.",
	"",
	"Admin actions need admin.sock and group duet-admin; on api.sock the",
	"console is read-only.",
};

/* A box of N lines centred on the canvas, as wide as the longest (clipped). */
static void draw_box(struct canvas *c, const char *const *lines, int n, unsigned first_attr)
{
	int w = 0, h, x, y;

	for (int i = 0; i < n; i++)
		if ((int)strlen(lines[i]) > w)
			w = (int)strlen(lines[i]);
	w += 4;
	h = n + 2;
	if (w > c->w)
		w = c->w;
	if (h > c->h)
		h = c->h;
	x = (c->w - w) / 2;
	y = (c->h - h) / 2;
	for (int i = 0; i < h; i++)
		canvas_fill(c, x, y + i, w, ' ', 0);
	canvas_box(c, x, y, w, h, CA_BOLD);
	for (int i = 0; i < n && i < h - 2; i++)
		canvas_put(c, x + 2, y + 1 + i, w - 4, i == 0 ? first_attr : 0, lines[i]);
}

#define DETAIL_LINES 24

static int details_partition(const struct model_partition *pt, char l[][256])
{
	int n = 0;
	char hit[16];

	fmt_pct(hit, sizeof(hit), model_hit_rate(pt));
	snprintf(l[n++], 256, "partition %s (%s)", pt->name, pt->role);
	l[n++][0] = '\0';
	snprintf(l[n++], 256, "state        %s%s%s", model_part_state(pt), pt->why[0] ? ": " : "",
		 pt->why);
	snprintf(l[n++], 256, "devices      %s", pt->devices[0] ? pt->devices : "-");
	snprintf(l[n++], 256, "cpus         %s", pt->cpus[0] ? pt->cpus : "all");
	snprintf(l[n++], 256, "worker pid   %.0f, restarts %.0f", pt->pid, pt->restarts);
	snprintf(l[n++], 256, "requests     %.0f running, %.0f waiting; batch %.0f", pt->running,
		 pt->waiting, pt->batch);
	snprintf(l[n++], 256, "KV blocks    %.0f total of %.0f tokens", pt->kv_total,
		 pt->kv_block_tokens);
	snprintf(l[n++], 256, "             used %.0f, cached %.0f, leased %.0f, free %.0f",
		 pt->kv_used, pt->kv_cached, pt->kv_leased, pt->kv_free);
	snprintf(l[n++], 256, "prefix cache %.0f hits of %.0f queries (%s)", pt->pc_hits,
		 pt->pc_queries, hit);
	snprintf(l[n++], 256, "steps        %.0f, %.2f ms each, %.0f%% busy", pt->steps,
		 pt->step_ms, 100 * pt->utilization);
	return n;
}

/* A request's timeline: queue -> prefill -> transfer -> decode, from what the daemon sent. */
static int details_request(const struct model_request *q, char l[][256])
{
	char a[16], b[16], d[16];
	int n = 0;

	snprintf(l[n++], 256, "request %s", q->id);
	l[n++][0] = '\0';
	snprintf(l[n++], 256, "tenant       %s", q->tenant[0] ? q->tenant : "-");
	snprintf(l[n++], 256, "state        %s%s%s", q->state, q->finish[0] ? ", finished: " : "",
		 q->finish);
	snprintf(l[n++], 256, "partition    %s", q->partition[0] ? q->partition : "-");
	snprintf(l[n++], 256, "tokens       %.0f prompt, %.0f output of %.0f at most",
		 q->prompt_tokens, q->output_tokens, q->max_tokens);
	fmt_num(a, sizeof(a), q->age_ms);
	snprintf(l[n++], 256, "age          %s ms", a);
	l[n++][0] = '\0';
	snprintf(l[n++], 256, "timeline (ms from arrival)");
	if (!isnan(q->queue_ms) || !isnan(q->prefill_ms)) { /* the daemon sends the phases */
		fmt_num(a, sizeof(a), q->queue_ms);
		fmt_num(b, sizeof(b), q->prefill_ms);
		fmt_num(d, sizeof(d), q->transfer_ms);
		snprintf(l[n++], 256, "  queue %s -> prefill %s -> transfer %s", a, b, d);
		fmt_num(a, sizeof(a), q->decode_ms);
		snprintf(l[n++], 256, "  -> decode %s", a);
	} else {
		fmt_num(a, sizeof(a), q->ttft_ms);
		snprintf(l[n++], 256, "  queue + prefill + transfer   %s  (first token at +%s)", a,
			 a);
		if (!isnan(q->tpot_ms) && q->output_tokens > 1) {
			fmt_num(b, sizeof(b), q->tpot_ms * (q->output_tokens - 1));
			fmt_num(d, sizeof(d), q->tpot_ms);
			snprintf(l[n++], 256,
				 "  decode                       %s  (%.0f tokens x %s)", b,
				 q->output_tokens - 1, d);
		} else {
			snprintf(l[n++], 256, "  decode                       -");
		}
	}
	fmt_num(a, sizeof(a), q->e2e_ms);
	snprintf(l[n++], 256, "  end to end                   %s", a);
	fmt_num(a, sizeof(a), q->ttft_ms);
	fmt_num(b, sizeof(b), q->tpot_ms);
	snprintf(l[n++], 256, "TTFT %s ms, TPOT %s ms", a, b);
	return n;
}

static void draw_details(struct panel_set *ps, const struct model *m, struct canvas *c)
{
	char lines[DETAIL_LINES][256];
	const char *ptrs[DETAIL_LINES];
	const struct model_partition *pt = NULL;
	const struct model_request *q = NULL;
	int n = 0;

	if (ps->focus == PANEL_PARTS)
		pt = panel_selected_partition(ps, m);
	else if (ps->focus == PANEL_REQS)
		q = panel_selected_request(ps, m);
	if (pt)
		n = details_partition(pt, lines);
	else if (q)
		n = details_request(q, lines);
	else
		snprintf(lines[n++], 256, "select a partition or a request first (Tab, arrows)");
	lines[n++][0] = '\0';
	snprintf(lines[n++], 256, "(any key closes)");
	for (int i = 0; i < n; i++)
		ptrs[i] = lines[i];
	draw_box(c, ptrs, n, CA_BOLD);
}

/* --- the frame ----------------------------------------------------------------------------- */

void panel_set_init(struct panel_set *ps)
{
	static const struct panel_ops *const ops[PANEL_COUNT] = {
		[PANEL_HEADER] = &header_ops, [PANEL_PARTS] = &parts_ops,
		[PANEL_LINKS] = &links_ops,   [PANEL_LATENCY] = &latency_ops,
		[PANEL_REQS] = &reqs_ops,     [PANEL_EVENTS] = &events_ops,
	};

	memset(ps, 0, sizeof(*ps));
	for (int i = 0; i < PANEL_COUNT; i++)
		ps->p[i].ops = ops[i];
	ps->focus = PANEL_PARTS;
}

static void draw_footer(const struct panel_ui *ui, struct canvas *c, int y)
{
	static const char hints[] = "F1/? help  q quit  Tab panel  Enter details  / filter  <> sort"
				    "  d drain  u undrain  c cancel  r reload  p pause";

	canvas_fill(c, 0, y, c->w, ' ', 0);
	if (ui->prompt) {
		int x = canvas_printf(c, 0, y, c->w, CA_BOLD, "filter: ");

		x += canvas_put(c, x, y, c->w - x, 0, ui->prompt);
		canvas_put(c, x, y, c->w - x, CA_REVERSE, " ");
		canvas_put(c, x + 2, y, c->w - x - 2, CA_DIM, "(Enter keeps, Esc clears)");
	} else if (ui->message) {
		canvas_put(c, 0, y, c->w, ui->message_attr, ui->message);
	} else if (ui->paused) {
		canvas_put(c, 0, y, c->w, CA_REVERSE | CA_BOLD, " PAUSED (p resumes) ");
	} else if (!ui->once) {
		canvas_put(c, 0, y, c->w, CA_DIM, hints);
	}
}

void panel_draw_frame(struct panel_set *ps, const struct model *m, const struct panel_ui *ui,
		      struct canvas *c)
{
	struct layout_row rows[PANEL_COUNT] = { 0 };
	int head, body, y;
	bool wide;

	canvas_clear(c);
	for (int i = 0; i < PANEL_COUNT; i++) {
		ps->p[i].focused = i == ps->focus && !ui->once;
		if (ps->p[i].ops->rows)
			sync_sel(&ps->p[i], m);
		ps->rect[i] = (struct layout_rect){ 0 };
	}
	head = header_measure(NULL, m, c->w);
	if (head > c->h - 1)
		head = c->h - 1 > 0 ? c->h - 1 : 0;
	ps->rect[PANEL_HEADER] = (struct layout_rect){ 0, 0, c->w, head };
	header_draw(&ps->p[PANEL_HEADER], m, c, ps->rect[PANEL_HEADER]);
	body = c->h - head - 1;
	wide = c->w >= 150 && body >= 14;

	/* The left (or only) column: partitions, links, requests (and the rest when narrow). */
	rows[PANEL_PARTS] = (struct layout_row){ 3, parts_measure(NULL, m, c->w), 0, 0 };
	rows[PANEL_LINKS] = (struct layout_row){ 2, links_measure(NULL, m, c->w), 0, 3 };
	rows[PANEL_REQS] = (struct layout_row){ 3, reqs_measure(NULL, m, c->w), 3, 1 };
	if (!wide) {
		rows[PANEL_LATENCY] = (struct layout_row){ 3, 4, 0, 4 };
		rows[PANEL_EVENTS] = (struct layout_row){ 3, 6, 1, 2 };
	}
	{
		/* Stack order on screen. */
		static const int order[] = { PANEL_PARTS, PANEL_LINKS, PANEL_LATENCY, PANEL_REQS,
					     PANEL_EVENTS };
		struct layout_row r[5];
		int hh[5], lw = wide ? c->w - c->w * 2 / 5 - 1 : c->w;

		for (int i = 0; i < 5; i++)
			r[i] = rows[order[i]];
		layout_rows(r, 5, body, hh);
		y = head;
		for (int i = 0; i < 5; i++) {
			if (!hh[i])
				continue;
			ps->rect[order[i]] = (struct layout_rect){ 0, y, lw, hh[i] };
			y += hh[i];
		}
		if (wide) { /* the right column: latency over events */
			struct layout_row rr[2] = { { 4, 9, 0, 1 }, { 3, 6, 1, 0 } };
			int rh[2], rx = lw + 1, rw = c->w - lw - 1;

			layout_rows(rr, 2, body, rh);
			ps->rect[PANEL_LATENCY] = (struct layout_rect){ rx, head, rw, rh[0] };
			ps->rect[PANEL_EVENTS] =
				(struct layout_rect){ rx, head + rh[0], rw, rh[1] };
			for (int i = 0; i < body; i++)
				canvas_fill(c, lw, head + i, 1, c->utf8 ? 0x2502 : '|', CA_DIM);
		}
	}
	for (int i = PANEL_PARTS; i < PANEL_COUNT; i++)
		if (ps->rect[i].h > 0 && ps->rect[i].w > 0)
			ps->p[i].ops->draw(&ps->p[i], m, c, ps->rect[i]);
	if (c->h > head)
		draw_footer(ui, c, c->h - 1);
	if (ui->help) {
		draw_box(c, help_lines, (int)(sizeof(help_lines) / sizeof(help_lines[0])), CA_BOLD);
	} else if (ui->details) {
		draw_details(ps, m, c);
	}
}

/* --- keys ------------------------------------------------------------------------------- */

static bool focusable(const struct panel_set *ps, const struct model *m, int i)
{
	if (i == PANEL_LINKS)
		return m->cur.n_links > 0 && ps->rect[i].h > 0;
	return ps->p[i].ops->rows && (ps->rect[i].h > 0 || ps->rect[PANEL_HEADER].h == 0);
}

bool panel_handle_key(struct panel_set *ps, const struct model *m, int key)
{
	struct panel *p = &ps->p[ps->focus];
	int n = p->ops->rows ? p->ops->rows(p, m) : 0, page = p->page > 1 ? p->page : 1;

	switch (key) {
	case PK_TAB:
	case PK_BTAB:
		for (int k = 1; k < PANEL_COUNT; k++) {
			int i = key == PK_TAB ? (ps->focus + k) % PANEL_COUNT
					      : (ps->focus - k + PANEL_COUNT) % PANEL_COUNT;

			if (focusable(ps, m, i)) {
				ps->focus = i;
				break;
			}
		}
		return true;
	case PK_UP:
		p->sel--;
		break;
	case PK_DOWN:
		p->sel++;
		break;
	case PK_PGUP:
		p->sel -= page;
		break;
	case PK_PGDN:
		p->sel += page;
		break;
	case PK_HOME:
		p->sel = 0;
		break;
	case PK_END:
		p->sel = n - 1;
		break;
	default:
		return false;
	}
	if (p->sel >= n)
		p->sel = n - 1;
	if (p->sel < 0)
		p->sel = 0;
	if (!p->ops->row_key || !p->ops->row_key(p, m, p->sel, p->sel_key, sizeof(p->sel_key)))
		p->sel_key[0] = '\0';
	return true;
}

const struct model_partition *panel_selected_partition(const struct panel_set *ps,
						       const struct model *m)
{
	const struct panel *p = &ps->p[PANEL_PARTS];

	if (p->sel_key[0])
		return model_find_partition(m, p->sel_key);
	if (p->sel >= 0 && p->sel < (int)m->cur.n_parts)
		return &m->cur.parts[p->sel];
	return NULL;
}

const struct model_request *panel_selected_request(const struct panel_set *ps,
						   const struct model *m)
{
	const struct panel *p = &ps->p[PANEL_REQS];
	char id[64];

	if (p->sel_key[0])
		return model_find_request(m, p->sel_key);
	if (reqs_key(p, m, p->sel, id, sizeof(id)))
		return model_find_request(m, id);
	return NULL;
}
