// SPDX-License-Identifier: MIT
/*
 * Tests of duet-console's parts that need no terminal: the data model
 * (rings, rates, percentiles, /v1/status and event parsing, the requests
 * table), the layout maths at many terminal sizes, the canvas (sparklines,
 * bars, clipping), whole frames drawn from canned JSON, and the socket
 * client (SSE parsing; HTTP over a UNIX socket served by a test thread,
 * with its deadline).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/testutil.h"
#include "tui/canvas.h"
#include "tui/client.h"
#include "tui/layout.h"
#include "tui/model.h"
#include "tui/panels.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The example of docs/api.md, with two partitions and three requests. */
static const char status_json[] =
	"{\"name\":\"duet\",\"version\":\"0.1.0\",\"model\":\"duet-tiny\",\"state\":\"up\","
	"\"health\":{\"ok\":true,\"reason\":null},\"uptime_s\":3725.5,\"now\":1795000000.123,"
	"\"admin\":false,\"slo\":{\"ttft_ms\":500,\"tpot_ms\":100,\"attainment\":0.9},"
	"\"totals\":{\"requests\":10,\"requests_ok\":9,\"requests_failed\":1,"
	"\"requests_cancelled\":0,\"prompt_tokens\":120,\"generation_tokens\":900,"
	"\"worker_restarts\":0},"
	"\"window\":{\"window_s\":60,\"requests\":10,\"ttft_ok\":9,\"tpot_ok\":8,\"slo_ok\":8,"
	"\"ttft_ms\":{\"p50\":12.0,\"p90\":20.1,\"p99\":25.3},"
	"\"tpot_ms\":{\"p50\":7.5,\"p90\":8.0,\"p99\":9.1},"
	"\"e2e_ms\":{\"p50\":90.0,\"p90\":120.0,\"p99\":130.0}},"
	"\"partitions\":["
	"{\"name\":\"p0\",\"role\":\"mixed\",\"devices\":[\"cpu\"],\"cpus\":\"0-1\",\"state\":\"up\","
	"\"why\":null,\"pid\":1234,\"restarts\":0,\"running\":1,\"waiting\":0,\"batch\":1,"
	"\"kv\":{\"block_tokens\":16,\"total\":256,\"used\":10,\"cached\":4,\"leased\":0,"
	"\"free\":242},\"prefix_cache\":{\"queries\":10,\"hits\":3},\"steps\":500,"
	"\"step_ms\":3.2,\"utilization\":0.4},"
	"{\"name\":\"p1\",\"role\":\"mixed\",\"devices\":[\"cpu\",\"cuda:1\"],\"cpus\":\"\","
	"\"state\":\"down\",\"why\":\"circuit breaker open after 5 failures\",\"pid\":null,"
	"\"restarts\":5,\"running\":0,\"waiting\":2,\"batch\":0,"
	"\"kv\":{\"block_tokens\":16,\"total\":256,\"used\":0,\"cached\":0,\"leased\":0,"
	"\"free\":256},\"prefix_cache\":{\"queries\":0,\"hits\":0},\"steps\":0,"
	"\"step_ms\":0,\"utilization\":0}],"
	"\"links\":[],"
	"\"requests\":["
	"{\"id\":\"cmpl-1f\",\"tenant\":\"uid:1000\",\"state\":\"decoding\",\"partition\":\"p0\","
	"\"prompt_tokens\":12,\"output_tokens\":30,\"max_tokens\":64,\"age_ms\":350.0,"
	"\"ttft_ms\":15.0,\"tpot_ms\":7.9,\"e2e_ms\":null,\"finish_reason\":null},"
	"{\"id\":\"cmpl-20\",\"tenant\":\"uid:0\",\"state\":\"queued\",\"partition\":\"p0\","
	"\"prompt_tokens\":400,\"output_tokens\":0,\"max_tokens\":16,\"age_ms\":20.0,"
	"\"ttft_ms\":null,\"tpot_ms\":null,\"e2e_ms\":null,\"finish_reason\":null},"
	"{\"id\":\"chatcmpl-1e\",\"tenant\":\"uid:1000\",\"state\":\"done\",\"partition\":\"p0\","
	"\"prompt_tokens\":5,\"output_tokens\":8,\"max_tokens\":8,\"age_ms\":900.0,"
	"\"ttft_ms\":600.0,\"tpot_ms\":7.0,\"e2e_ms\":650.0,\"finish_reason\":\"length\"}]}";

static struct model *new_model(void)
{
	struct model *m = malloc(sizeof(*m));

	assert_non_null(m);
	model_init(m);
	return m;
}

static struct model_status *parse(const char *json)
{
	struct model_status *s = malloc(sizeof(*s));
	char err[256];

	assert_non_null(s);
	assert_int_equal(model_parse_status(json, s, err, sizeof(err)), 0);
	return s;
}

/* ------------------------------------------------------------------------- */
/* rings, rates, percentiles */

static void test_ring(void **state)
{
	struct model_ring *r = calloc(1, sizeof(*r));
	double out[8], t, v;

	assert_false(model_ring_get(r, 0, &t, &v));
	assert_int_equal(model_ring_tail(r, out, 8), 0);
	for (int i = 0; i < MODEL_RING + 5; i++)
		model_ring_push(r, i, i * 10.0);
	assert_int_equal(r->count, MODEL_RING);
	assert_true(model_ring_get(r, 0, &t, &v));
	assert_true(t == MODEL_RING + 4 && v == (MODEL_RING + 4) * 10.0);
	assert_true(model_ring_get(r, MODEL_RING - 1, &t, NULL));
	assert_true(t == 5); /* the five oldest were overwritten */
	assert_false(model_ring_get(r, MODEL_RING, &t, NULL));
	assert_int_equal(model_ring_tail(r, out, 3), 3);
	assert_true(out[0] == (MODEL_RING + 2) * 10.0 && out[2] == (MODEL_RING + 4) * 10.0);
	free(r);
}

static void test_rate(void **state)
{
	struct model_ring *r = calloc(1, sizeof(*r));

	assert_true(isnan(model_ring_rate(r, 10)));
	model_ring_push(r, 100, 50);
	assert_true(isnan(model_ring_rate(r, 10))); /* one sample: no rate */
	for (int i = 1; i <= 20; i++)
		model_ring_push(r, 100 + i, 50 + 3.0 * i); /* 3 per second */
	assert_float_equal(model_ring_rate(r, 5), 3.0, 1e-9);
	assert_float_equal(model_ring_rate(r, 1000), 3.0, 1e-9);
	/* A span shorter than the interval still uses the previous sample. */
	assert_float_equal(model_ring_rate(r, 0.1), 3.0, 1e-9);
	/* The daemon restarted: the counter starts again from 0. */
	model_ring_push(r, 121, 4);
	model_ring_push(r, 122, 8);
	assert_float_equal(model_ring_rate(r, 2), 4.0, 1e-9);
	/* Same timestamp twice: no division by zero. */
	memset(r, 0, sizeof(*r));
	model_ring_push(r, 5, 1);
	model_ring_push(r, 5, 2);
	assert_true(isnan(model_ring_rate(r, 10)));
	free(r);
}

static void test_percentile(void **state)
{
	double v[100], one = 42, two[2] = { 10, 0 };

	for (int i = 0; i < 100; i++)
		v[i] = 100 - i; /* 100 .. 1, unsorted */
	assert_float_equal(model_percentile(v, 100, 50), 50.5, 1e-9);
	assert_float_equal(model_percentile(v, 100, 90), 90.1, 1e-9);
	assert_float_equal(model_percentile(v, 100, 99), 99.01, 1e-9);
	assert_float_equal(model_percentile(v, 100, 0), 1, 1e-9);
	assert_float_equal(model_percentile(v, 100, 100), 100, 1e-9);
	assert_float_equal(model_percentile(&one, 1, 99), 42, 1e-9);
	assert_float_equal(model_percentile(two, 2, 50), 5, 1e-9);
	assert_true(isnan(model_percentile(v, 0, 50)));
}

/* ------------------------------------------------------------------------- */
/* parsing */

static void test_parse_status(void **state)
{
	struct model_status *s = parse(status_json);
	const struct model_partition *p0 = &s->parts[0], *p1 = &s->parts[1];

	assert_string_equal(s->name, "duet");
	assert_string_equal(s->model, "duet-tiny");
	assert_true(s->healthy);
	assert_false(s->admin);
	assert_string_equal(s->reason, "");
	assert_float_equal(s->uptime_s, 3725.5, 1e-9);
	assert_float_equal(s->slo_ttft_ms, 500, 0);
	assert_float_equal(s->ttft.p99, 25.3, 1e-9);
	assert_float_equal(s->generation_tokens, 900, 0);
	assert_int_equal(s->n_parts, 2);
	assert_string_equal(p0->devices, "cpu");
	assert_string_equal(p1->devices, "cpu,cuda:1");
	assert_float_equal(p0->kv_free, 242, 0);
	assert_float_equal(model_hit_rate(p0), 0.3, 1e-9);
	assert_true(isnan(model_hit_rate(p1)));
	assert_true(isnan(p1->pid));
	assert_string_equal(model_part_state(p0), "up");
	assert_string_equal(model_part_state(p1), "circuit open");
	assert_int_equal(s->n_links, 0);
	assert_int_equal(s->n_reqs, 3);
	assert_string_equal(s->reqs[0].id, "cmpl-1f");
	assert_true(isnan(s->reqs[0].e2e_ms));
	assert_true(isnan(s->reqs[1].ttft_ms));
	assert_string_equal(s->reqs[2].finish, "length");
	assert_true(isnan(s->reqs[0].queue_ms)); /* not in the contract: absent */
	free(s);
}

static void test_parse_status_bad(void **state)
{
	struct model_status *s = malloc(sizeof(*s));
	char err[256];

	assert_int_equal(model_parse_status("{not json", s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "/v1/status"));
	assert_int_equal(model_parse_status("[1,2]", s, err, sizeof(err)), -EINVAL);
	assert_int_equal(model_parse_status("{\"name\":\"x\"}", s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "partitions"));
	assert_int_equal(model_parse_status(NULL, s, err, sizeof(err)), -EINVAL);
	/* Wrong types are tolerated as absent; strings are cut to their fields. */
	assert_int_equal(
		model_parse_status("{\"partitions\":[{\"name\":7,\"running\":\"x\"},3],"
				   "\"requests\":[{\"id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}]}",
				   s, err, sizeof(err)),
		0);
	assert_int_equal(s->n_parts, 1);
	assert_string_equal(s->parts[0].name, "");
	assert_float_equal(s->parts[0].running, 0, 0);
	assert_int_equal(strlen(s->reqs[0].id), sizeof(s->reqs[0].id) - 1);
	free(s);
}

static void test_parse_event(void **state)
{
	struct model_event e;

	assert_int_equal(
		model_parse_event("{\"seq\":7,\"time\":1795000000.5,\"type\":\"worker_exit\","
				  "\"partition\":\"p0\",\"level\":\"error\",\"message\":\"worker "
				  "p0 (pid 1234) was killed by signal 9\"}",
				  &e),
		0);
	assert_int_equal(e.seq, 7);
	assert_string_equal(e.type, "worker_exit");
	assert_string_equal(e.partition, "p0");
	assert_string_equal(e.level, "error");
	assert_int_equal(model_parse_event("{\"type\":\"ready\"}", &e), 0);
	assert_int_equal(e.seq, -1);
	assert_string_equal(e.level, "info");
	assert_string_equal(e.partition, "");
	assert_int_equal(model_parse_event("nope", &e), -EINVAL);
}

/* ------------------------------------------------------------------------- */
/* the model */

static void test_update_rates(void **state)
{
	struct model *m = new_model();
	struct model_status *s = parse(status_json);

	assert_true(isnan(model_rps(m, 5)));
	model_update(m, s, 100.0);
	assert_true(isnan(model_rps(m, 5)));
	s->requests += 6;
	s->generation_tokens += 240;
	model_update(m, s, 102.0);
	assert_float_equal(model_rps(m, 5), 3.0, 1e-9);
	assert_float_equal(model_tps(m, 5), 120.0, 1e-9);
	assert_float_equal(model_attainment_ttft(m), 0.9, 1e-9);
	assert_float_equal(model_attainment_tpot(m), 0.8, 1e-9);
	assert_int_equal(m->rps.count, 1);
	assert_int_equal(m->ttft_p99.count, 2);
	s->win_requests = 0;
	model_update(m, s, 103.0);
	assert_true(isnan(model_attainment_ttft(m)));
	free(s);
	free(m);
}

static void test_links(void **state)
{
	struct model *m = new_model();
	struct model_status *s = parse(status_json);
	const struct model_link_hist *h;

	s->n_links = 1;
	snprintf(s->links[0].prefill, sizeof(s->links[0].prefill), "pre0");
	snprintf(s->links[0].decode, sizeof(s->links[0].decode), "dec0");
	snprintf(s->links[0].transport, sizeof(s->links[0].transport), "shm");
	s->links[0].bytes = 1e9;
	s->links[0].transfers = 10;
	model_update(m, s, 10);
	s->links[0].bytes = 5e9; /* 4 GB in 2 s */
	s->links[0].transfers = 30;
	model_update(m, s, 12);
	h = model_link_hist(m, &s->links[0]);
	assert_non_null(h);
	assert_float_equal(model_link_gbps(h, 5), 2.0, 1e-9);
	assert_float_equal(model_link_tps(h, 5), 10.0, 1e-9);
	assert_int_equal(h->gbps.count, 1);
	assert_float_equal(h->gbps.v[0], 2.0, 1e-9);
	assert_true(isnan(model_link_gbps(NULL, 5)));
	free(s);
	free(m);
}

static void test_events(void **state)
{
	struct model *m = new_model();
	struct model_event e = { .seq = 1, .level = "info" };

	for (int i = 1; i <= 5; i++) {
		e.seq = i;
		snprintf(e.message, sizeof(e.message), "event %d", i);
		model_add_event(m, &e);
	}
	/* A reconnect replays what we already have: dropped. */
	e.seq = 3;
	model_add_event(m, &e);
	assert_int_equal(m->ev_count, 5);
	assert_string_equal(model_event_get(m, 0)->message, "event 5");
	assert_string_equal(model_event_get(m, 4)->message, "event 1");
	assert_null(model_event_get(m, 5));
	/* Events without seq are always kept; the ring overwrites the oldest. */
	e.seq = -1;
	for (int i = 0; i < MODEL_MAX_EVENTS; i++)
		model_add_event(m, &e);
	assert_int_equal(m->ev_count, MODEL_MAX_EVENTS);
	free(m);
}

static void test_requests_view(void **state)
{
	struct model *m = new_model();
	struct model_status *s = parse(status_json);
	unsigned idx[MODEL_MAX_REQS];
	size_t n;

	model_update(m, s, 1);
	n = model_requests_view(m, idx, MODEL_MAX_REQS);
	assert_int_equal(n, 3);
	/* By age, ascending: cmpl-20 (20 ms), cmpl-1f (350), chatcmpl-1e (900). */
	assert_string_equal(m->cur.reqs[idx[0]].id, "cmpl-20");
	assert_string_equal(m->cur.reqs[idx[2]].id, "chatcmpl-1e");
	m->sort_desc = true;
	model_requests_view(m, idx, MODEL_MAX_REQS);
	assert_string_equal(m->cur.reqs[idx[0]].id, "chatcmpl-1e");
	/* TTFT: the one without a TTFT sorts last in both directions. */
	m->sort = MODEL_SORT_TTFT;
	model_requests_view(m, idx, MODEL_MAX_REQS);
	assert_string_equal(m->cur.reqs[idx[0]].id, "chatcmpl-1e");
	assert_string_equal(m->cur.reqs[idx[2]].id, "cmpl-20");
	m->sort_desc = false;
	model_requests_view(m, idx, MODEL_MAX_REQS);
	assert_string_equal(m->cur.reqs[idx[0]].id, "cmpl-1f");
	assert_string_equal(m->cur.reqs[idx[2]].id, "cmpl-20");
	/* State: in flight first, in life order. */
	m->sort = MODEL_SORT_STATE;
	model_requests_view(m, idx, MODEL_MAX_REQS);
	assert_string_equal(m->cur.reqs[idx[0]].state, "queued");
	assert_string_equal(m->cur.reqs[idx[2]].state, "done");
	/* The filter: case-insensitive, over id, tenant, state and partition. */
	snprintf(m->filter, sizeof(m->filter), "CHAT");
	assert_int_equal(model_requests_view(m, idx, MODEL_MAX_REQS), 1);
	snprintf(m->filter, sizeof(m->filter), "uid:1000");
	assert_int_equal(model_requests_view(m, idx, MODEL_MAX_REQS), 2);
	snprintf(m->filter, sizeof(m->filter), "nothing");
	assert_int_equal(model_requests_view(m, idx, MODEL_MAX_REQS), 0);
	for (int k = 0; k < MODEL_SORT_COUNT; k++)
		assert_string_not_equal(model_sort_name((enum model_sort)k), "?");
	/* Percentiles over the requests that have one. */
	assert_float_equal(model_request_percentile(m, 0, 50), 307.5, 1e-9);
	assert_float_equal(model_request_percentile(m, 1, 100), 7.9, 1e-9);
	free(s);
	free(m);
}

/* ------------------------------------------------------------------------- */
/* layout */

static void check_columns(const struct layout_col *cols, int n, int width)
{
	int w[64], used = 0, shown = 0, must = 0, must_n = 0;
	int visible = layout_columns(cols, n, width, w);

	for (int i = 0; i < n; i++) {
		if (!w[i])
			continue;
		assert_true(w[i] >= cols[i].min);
		used += w[i] + (shown ? 1 : 0);
		shown++;
	}
	assert_int_equal(shown, visible);
	assert_true(used <= width);
	for (int i = 0; i < n; i++) {
		if (cols[i].prio == 0) {
			must += cols[i].min + (must_n ? 1 : 0);
			must_n++;
		}
	}
	/* The never-dropped columns are all there whenever they fit. */
	if (width >= must)
		for (int i = 0; i < n; i++)
			if (cols[i].prio == 0)
				assert_true(w[i] > 0);
	/* Room to spare is used: the flex columns take it. */
	if (visible == n) {
		int pref = 0;

		for (int i = 0; i < n; i++)
			pref += cols[i].pref + (i ? 1 : 0);
		if (width >= pref)
			assert_int_equal(used, width);
	}
}

static void test_layout_columns(void **state)
{
	int w[32];

	for (int width = 1; width <= 400; width++) {
		check_columns(panel_part_cols, panel_part_ncols, width);
		check_columns(panel_req_cols, panel_req_ncols, width);
	}
	/* 80 columns: the essentials of a partition row are there. */
	layout_columns(panel_part_cols, panel_part_ncols, 80, w);
	assert_true(w[0] > 0 && w[4] > 0 && w[5] > 0);
	/* 200 columns: everything, at least at its preferred width. */
	assert_int_equal(layout_columns(panel_part_cols, panel_part_ncols, 200, w),
			 panel_part_ncols);
	for (int i = 0; i < panel_part_ncols; i++)
		assert_true(w[i] >= panel_part_cols[i].pref);
	/* Dropping goes by prio: the highest number first. */
	{
		const struct layout_col cols[3] = { { "A", 10, 10, 0, 0, 0 },
						    { "B", 10, 10, 2, 0, 0 },
						    { "C", 10, 10, 1, 0, 0 } };

		assert_int_equal(layout_columns(cols, 3, 25, w), 2);
		assert_true(w[0] == 10 && w[1] == 0 && w[2] == 10);
		assert_int_equal(layout_columns(cols, 3, 9, w), 0); /* not even A fits */
	}
	/* Flex shares by weight, exactly. */
	{
		const struct layout_col cols[2] = { { "A", 1, 1, 0, 1, 0 },
						    { "B", 1, 1, 0, 3, 0 } };

		layout_columns(cols, 2, 41, w);
		assert_int_equal(w[0] + w[1], 40);
		assert_int_equal(w[0], 1 + 38 / 4);
	}
}

static void test_layout_rows(void **state)
{
	const struct layout_row rows[5] = {
		{ 3, 4, 0, 0 }, { 2, 2, 0, 3 }, { 3, 4, 0, 4 }, { 3, 8, 3, 1 }, { 3, 6, 1, 2 },
	};
	int h[5];

	for (int total = 0; total <= 120; total++) {
		int sum = 0, shown = layout_rows(rows, 5, total, h), n = 0;

		for (int i = 0; i < 5; i++) {
			assert_true(h[i] == 0 || h[i] >= rows[i].min);
			sum += h[i];
			n += h[i] > 0;
		}
		assert_int_equal(n, shown);
		assert_true(sum <= total);
		if (total >= 14) /* all the minimums fit: everything shows */
			assert_int_equal(shown, 5);
		if (total >= 24) /* all the wants fit: the flex panels take the rest */
			assert_int_equal(sum, total);
		if (total >= 3)
			assert_true(h[0] >= 3); /* prio 0 stays */
	}
	/* 10 rows: the least important (prio 4, then 3) go first. */
	layout_rows(rows, 5, 10, h);
	assert_int_equal(h[2], 0);
	assert_int_equal(h[1], 0);
}

/* ------------------------------------------------------------------------- */
/* canvas */

static void test_spark_levels(void **state)
{
	int prev = 0;

	assert_int_equal(canvas_spark_level(0, 10), 0);
	assert_int_equal(canvas_spark_level(-1, 10), 0);
	assert_int_equal(canvas_spark_level(NAN, 10), 0);
	assert_int_equal(canvas_spark_level(5, 0), 0);
	assert_int_equal(canvas_spark_level(1e-9, 10), 1);
	assert_int_equal(canvas_spark_level(10, 10), 8);
	assert_int_equal(canvas_spark_level(50, 10), 8);
	assert_int_equal(canvas_spark_level(5, 10), 4);
	for (double v = 0; v <= 12; v += 0.01) {
		int l = canvas_spark_level(v, 10);

		assert_true(l >= prev);
		prev = l;
	}
}

static void test_sparkline(void **state)
{
	struct canvas c;
	const double v[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, NAN, 16 };
	char *t;

	assert_int_equal(canvas_init(&c, 12, 1, false), 0);
	canvas_sparkline(&c, 0, 0, 12, v, 11, 8, 0, 0, 0);
	t = canvas_text(&c);
	assert_string_equal(t, "  .,:-=+*# #\n"); /* padded left, NAN blank, clipped at max */
	free(t);
	canvas_clear(&c);
	canvas_sparkline(&c, 0, 0, 4, v, 11, 0, 0, 0, 0); /* the last 4, scaled to their max */
	t = canvas_text(&c);
	assert_string_equal(t, "-- #\n");
	free(t);
	canvas_free(&c);
	assert_int_equal(canvas_init(&c, 3, 1, true), 0);
	canvas_sparkline(&c, 0, 0, 3, v + 6, 3, 8, 0, 7.5, CA_BOLD);
	t = canvas_text(&c);
	assert_string_equal(t, "\u2586\u2587\u2588\n");
	assert_int_equal(c.cells[1].attr, 0);
	assert_int_equal(c.cells[2].attr, CA_BOLD); /* above the warning line */
	free(t);
	canvas_free(&c);
}

static void test_bar(void **state)
{
	int cells[3];
	const double v[3] = { 10, 4, 0 }, tiny[3] = { 1, 1, 1 };
	struct canvas c;
	const unsigned attrs[3] = { 0, 0, 0 };
	const uint32_t glyphs[3] = { '#', '+', '=' };
	char *t;

	canvas_bar_cells(v, 3, 256, 20, cells);
	assert_int_equal(cells[0] + cells[1] + cells[2], 1 + 0); /* round(14/256*20) = 1 */
	assert_int_equal(cells[0], 1);
	canvas_bar_cells(v, 3, 14, 14, cells);
	assert_true(cells[0] == 10 && cells[1] == 4 && cells[2] == 0);
	/* Small non-zero segments still get a cell while the total allows. */
	canvas_bar_cells(tiny, 3, 30, 10, cells);
	assert_true(cells[0] == 1 && cells[1] == 0 && cells[2] == 0);
	canvas_bar_cells(tiny, 3, 10, 10, cells);
	assert_true(cells[0] == 1 && cells[1] == 1 && cells[2] == 1);
	/* More than the total (a racy snapshot) is scaled down, never past W. */
	canvas_bar_cells(v, 3, 7, 10, cells);
	assert_int_equal(cells[0] + cells[1] + cells[2], 10);
	canvas_bar_cells(v, 3, 0, 10, cells);
	assert_int_equal(cells[0] + cells[1] + cells[2], 0);
	assert_int_equal(canvas_init(&c, 10, 1, false), 0);
	canvas_bar(&c, 0, 0, 10, (const double[]){ 5, 2, 1 }, attrs, glyphs, "#+=", 3, 10);
	t = canvas_text(&c);
	assert_string_equal(t, "#####++=..\n");
	free(t);
	canvas_free(&c);
}

static void test_canvas_put(void **state)
{
	struct canvas c;
	char *t;

	assert_int_equal(canvas_init(&c, 10, 3, true), 0);
	assert_int_equal(canvas_put(&c, 7, 0, -1, 0, "abcdef"), 3);
	assert_int_equal(canvas_put(&c, 0, 1, 4, 0, "a\tb\x1b[2J"), 4); /* controls made harmless */
	canvas_put(&c, -2, 2, -1, 0, "xyz");				/* clipped on the left */
	canvas_put(&c, 0, 5, -1, 0, "off the grid");
	canvas_put_right(&c, 5, 2, 5, 0, "123456");
	t = canvas_text(&c);
	assert_string_equal(t, "       abc\na?b?\nz    23456\n");
	free(t);
	canvas_clear(&c);
	canvas_put(&c, 0, 0, -1, 0, "\xc3\xa9t\xc3\xa9 \xe2\x86\x92"); /* été → */
	t = canvas_text(&c);
	assert_string_equal(t, "\xc3\xa9t\xc3\xa9 \xe2\x86\x92\n\n\n");
	free(t);
	canvas_free(&c);
	/* Without UTF-8 the terminal gets ASCII only. */
	assert_int_equal(canvas_init(&c, 4, 1, false), 0);
	canvas_put(&c, 0, 0, -1, 0, "\xc3\xa9t\xe2\x86\x92");
	canvas_hline(&c, 3, 0, 1, 0);
	t = canvas_text(&c);
	assert_string_equal(t, "?t?-\n");
	free(t);
	canvas_free(&c);
}

/* ------------------------------------------------------------------------- */
/* frames */

/* The frame as text, with a check that no line is wider than the canvas. */
static char *frame(struct model *m, int w, int h, bool utf8, const struct panel_ui *ui)
{
	struct panel_set ps;
	struct canvas c;
	struct panel_ui none = { .once = true };
	char *t;

	panel_set_init(&ps);
	assert_int_equal(canvas_init(&c, w, h, utf8), 0);
	panel_draw_frame(&ps, m, ui ? ui : &none, &c);
	t = canvas_text(&c);
	assert_non_null(t);
	if (!utf8) {
		int lines = 0;

		for (char *l = t; *l; lines++) {
			char *nl = strchr(l, '\n');

			assert_non_null(nl);
			assert_true(nl - l <= w);
			l = nl + 1;
		}
		assert_int_equal(lines, h);
	}
	canvas_free(&c);
	return t;
}

static void test_frame_readonly(void **state)
{
	struct model *m = new_model();
	struct model_status *s = parse(status_json);
	static const int sizes[][2] = {
		{ 80, 24 }, { 200, 50 }, { 100, 30 }, { 150, 20 }, { 40, 12 },
		{ 20, 5 },  { 5, 2 },	 { 1, 1 },    { 2, 60 },   { 300, 3 },
	};
	char *t;

	model_update(m, s, 1);
	model_set_conn(m, MODEL_UP, "/run/duet/api.sock", NULL, 1);
	snprintf(m->ev_note, sizeof(m->ev_note), "event log needs admin.sock: read-only mode");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		t = frame(m, sizes[i][0], sizes[i][1], false, NULL);
		if (sizes[i][0] >= 80 && sizes[i][1] >= 20) {
			assert_non_null(strstr(t, "READ-ONLY"));
			assert_non_null(strstr(t, "duet-tiny"));
			assert_non_null(strstr(t, "uptime 1h02m"));
			assert_non_null(strstr(t, "p0 "));
			assert_non_null(strstr(t, "circuit open"));
			assert_non_null(strstr(t, "no KV links (all partitions mixed)"));
			assert_non_null(strstr(t, "cmpl-1f"));
			assert_non_null(strstr(t, "decoding"));
			assert_non_null(strstr(t, "read-only mode"));
			assert_non_null(strstr(t, "TTFT 90%"));
			assert_non_null(strstr(t, "p99   25.3"));
		}
		free(t);
	}
	/* Wide: the partition columns all show, and the bar with them. */
	t = frame(m, 200, 50, false, NULL);
	assert_non_null(strstr(t, "TPOT p50    7.5 ms  SLO 100")); /* every percentile when tall */
	assert_non_null(strstr(t, "0-1"));
	assert_non_null(strstr(t, "cpu,cuda:1"));
	assert_non_null(strstr(t, "30%")); /* p0's prefix-cache hits */
	assert_non_null(strstr(t, "10/256"));
	free(t);
	free(s);
	free(m);
}

static void test_frame_states(void **state)
{
	struct model *m = new_model();
	struct model_status *s = parse(status_json);
	struct model_event e = { .seq = 1,
				 .time = 1795000000,
				 .type = "drain",
				 .level = "info",
				 .partition = "p0",
				 .message = "partition p0 draining" };
	struct panel_ui ui = { .message = "drain p0: draining", .help = false };
	char *t;

	/* Admin, with events and a message. */
	s->admin = true;
	model_update(m, s, 1);
	model_set_conn(m, MODEL_UP, "admin.sock", NULL, 1);
	m->ev_live = true;
	model_add_event(m, &e);
	t = frame(m, 80, 24, false, &ui);
	assert_non_null(strstr(t, "ADMIN"));
	assert_null(strstr(t, "READ-ONLY"));
	assert_non_null(strstr(t, "partition p0 draining"));
	assert_non_null(strstr(t, "drain p0: draining"));
	free(t);

	/* Unhealthy: the reason is on screen. */
	s->healthy = false;
	snprintf(s->reason, sizeof(s->reason), "partition p1: worker exited with signal 9");
	model_update(m, s, 2);
	t = frame(m, 80, 24, false, NULL);
	assert_non_null(strstr(t, "UNHEALTHY"));
	assert_non_null(strstr(t, "partition p1: worker exited with signal 9"));
	free(t);

	/* The daemon went away: say so, keep the last data. */
	model_set_conn(m, MODEL_DOWN, "admin.sock", "admin.sock: Connection refused", 3);
	t = frame(m, 80, 24, false, NULL);
	assert_non_null(strstr(t, "DISCONNECTED - retrying"));
	assert_non_null(strstr(t, "Connection refused"));
	assert_non_null(strstr(t, "cmpl-1f"));
	free(t);
	model_set_conn(m, MODEL_UP, "admin.sock", NULL, 4);
	assert_int_equal(m->reconnects, 1);

	/* KV links rows. */
	s->healthy = true;
	s->n_links = 1;
	snprintf(s->links[0].prefill, sizeof(s->links[0].prefill), "pre0");
	snprintf(s->links[0].decode, sizeof(s->links[0].decode), "dec0");
	snprintf(s->links[0].transport, sizeof(s->links[0].transport), "shm");
	s->links[0].failures = 2;
	model_update(m, s, 5);
	s->links[0].bytes = 3e9;
	model_update(m, s, 6);
	t = frame(m, 120, 30, false, NULL);
	assert_null(strstr(t, "no KV links"));
	assert_non_null(strstr(t, "pre0>dec0"));
	assert_non_null(strstr(t, "3.00"));
	free(t);

	/* Overlays: help, and details of the selected partition. */
	ui = (struct panel_ui){ .help = true };
	t = frame(m, 80, 24, false, &ui);
	assert_non_null(strstr(t, "duet-console keys"));
	free(t);
	ui = (struct panel_ui){ .details = true };
	t = frame(m, 80, 24, false, &ui);
	assert_non_null(strstr(t, "partition p0 (mixed)"));
	assert_non_null(strstr(t, "used 10, cached 4, leased 0, free 242"));
	free(t);
	free(s);
	free(m);
}

static void test_frame_keys(void **state)
{
	struct model *m = new_model();
	struct model_status *s = parse(status_json);
	struct panel_set ps;
	struct canvas c;
	struct panel_ui ui = { 0 };
	const struct model_request *q;

	model_update(m, s, 1);
	panel_set_init(&ps);
	assert_int_equal(canvas_init(&c, 80, 24, false), 0);
	panel_draw_frame(&ps, m, &ui, &c);
	assert_int_equal(ps.focus, PANEL_PARTS);
	assert_string_equal(panel_selected_partition(&ps, m)->name, "p0");
	assert_true(panel_handle_key(&ps, m, PK_DOWN));
	assert_string_equal(panel_selected_partition(&ps, m)->name, "p1");
	assert_true(panel_handle_key(&ps, m, PK_DOWN)); /* stays on the last */
	assert_string_equal(panel_selected_partition(&ps, m)->name, "p1");
	assert_true(panel_handle_key(&ps, m, PK_HOME));
	assert_string_equal(panel_selected_partition(&ps, m)->name, "p0");
	/* Tab skips the empty links panel and the latency panel. */
	assert_true(panel_handle_key(&ps, m, PK_TAB));
	assert_int_equal(ps.focus, PANEL_REQS);
	panel_draw_frame(&ps, m, &ui, &c);
	q = panel_selected_request(&ps, m);
	assert_non_null(q);
	assert_string_equal(q->id, "cmpl-20"); /* youngest first */
	/* Not moved yet: the selection stays on the first row as rows come and go. */
	m->cur.reqs[0].age_ms = 1;
	panel_draw_frame(&ps, m, &ui, &c);
	assert_string_equal(panel_selected_request(&ps, m)->id, "cmpl-1f");
	m->cur.reqs[0].age_ms = 350;
	panel_draw_frame(&ps, m, &ui, &c);
	assert_true(panel_handle_key(&ps, m, PK_END));
	assert_string_equal(panel_selected_request(&ps, m)->id, "chatcmpl-1e");
	/* The selection follows the request when the order changes. */
	m->sort_desc = true;
	panel_draw_frame(&ps, m, &ui, &c);
	assert_int_equal(ps.p[PANEL_REQS].sel, 0);
	assert_string_equal(panel_selected_request(&ps, m)->id, "chatcmpl-1e");
	assert_true(panel_handle_key(&ps, m, PK_TAB));
	assert_int_equal(ps.focus, PANEL_EVENTS);
	assert_true(panel_handle_key(&ps, m, PK_BTAB));
	assert_int_equal(ps.focus, PANEL_REQS);
	assert_false(panel_handle_key(&ps, m, 'x'));
	canvas_free(&c);
	free(s);
	free(m);
}

static void test_duration(void **state)
{
	char b[32];

	panel_fmt_duration(b, sizeof(b), 3.25);
	assert_string_equal(b, "3.2s");
	panel_fmt_duration(b, sizeof(b), 59);
	assert_string_equal(b, "59s");
	panel_fmt_duration(b, sizeof(b), 185);
	assert_string_equal(b, "3m05s");
	panel_fmt_duration(b, sizeof(b), 3725);
	assert_string_equal(b, "1h02m");
	panel_fmt_duration(b, sizeof(b), 90000);
	assert_string_equal(b, "1d01h");
	panel_fmt_duration(b, sizeof(b), NAN);
	assert_string_equal(b, "-");
}

/* ------------------------------------------------------------------------- */
/* the client */

struct got {
	int n;
	char event[4][32], data[4][128];
	int comments;
};

static int on_ev(void *ctx, const char *event, const char *data)
{
	struct got *g = ctx;

	if (g->n < 4) {
		snprintf(g->event[g->n], sizeof(g->event[0]), "%s", event);
		snprintf(g->data[g->n], sizeof(g->data[0]), "%s", data);
	}
	g->n++;
	return 0;
}

static void on_comment(void *ctx, const char *text)
{
	((struct got *)ctx)->comments++;
}

static void test_sse(void **state)
{
	static const char stream[] = "event: drain\r\ndata: {\"seq\":1}\r\n\r\n"
				     ": keepalive\n\n"
				     "data: line one\ndata: line two\n\n"
				     "data: [DONE]\n\n";
	struct got g = { 0 };
	struct client_sse s = { .on_event = on_ev, .on_comment = on_comment, .ctx = &g };

	/* Byte by byte: frames split anywhere must come out whole. */
	for (size_t i = 0; i < sizeof(stream) - 1; i++)
		assert_int_equal(client_sse_feed(&s, &stream[i], 1), 0);
	assert_int_equal(g.n, 3);
	assert_string_equal(g.event[0], "drain");
	assert_string_equal(g.data[0], "{\"seq\":1}");
	assert_string_equal(g.event[1], "message");
	assert_string_equal(g.data[1], "line one\nline two");
	assert_string_equal(g.data[2], "[DONE]");
	assert_int_equal(g.comments, 1);
	client_sse_free(&s);
}

static void test_error_message(void **state)
{
	char msg[64];

	assert_true(client_error_message("{\"error\":{\"message\":\"no such partition: x\","
					 "\"type\":\"invalid_request_error\"}}",
					 msg, sizeof(msg)));
	assert_string_equal(msg, "no such partition: x");
	assert_false(client_error_message("not json", msg, sizeof(msg)));
	assert_false(client_error_message(NULL, msg, sizeof(msg)));
}

/* A one-shot server: accept once, read the request head, write REPLY, close. */
struct srv {
	int lfd;
	const char *reply;
	char request[2048];
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	int fd = accept(s->lfd, NULL, NULL);
	size_t n = 0;

	if (fd < 0)
		return NULL;
	/* The head and the body: a peer that closes with unread data gets ECONNRESET. */
	for (;;) {
		char *end = strstr(s->request, "\r\n\r\n"),
		     *cl = strstr(s->request, "Content-Length:");
		ssize_t r;

		if (end &&
		    (!cl || n >= (size_t)(end + 4 - s->request) + strtoul(cl + 15, NULL, 10)))
			break;
		if (n >= sizeof(s->request) - 1)
			break;
		r = read(fd, s->request + n, sizeof(s->request) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		s->request[n] = '\0';
	}
	if (s->reply && write(fd, s->reply, strlen(s->reply)) < 0)
		s->reply = NULL;
	close(fd);
	return NULL;
}

static int listen_on(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static int body_collect(void *ctx, const char *p, size_t n)
{
	return client_buf_add(ctx, p, n);
}

static void test_client_http(void **state)
{
	char *dir = tu_mkdtemp(), path[256];
	struct srv s = { 0 };
	pthread_t th;
	struct client_buf out = { 0 }, streamed = { 0 };
	struct client_req req = { .method = "POST",
				  .path = "/admin/drain",
				  .body = "{\"partition\":\"p0\"}",
				  .timeout_ms = 10000 };
	int st, status = 0;

	snprintf(path, sizeof(path), "%s/admin.sock", dir);
	req.sock = path;
	s.lfd = listen_on(path);

	/* Content-Length. */
	s.reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n"
		  "{\"state\":\"ok\"}";
	pthread_create(&th, NULL, srv_main, &s);
	st = client_request(&req, &out);
	pthread_join(th, NULL);
	assert_int_equal(st, 200);
	assert_string_equal(out.p, "{\"state\":\"ok\"}");
	assert_non_null(strstr(s.request, "POST /admin/drain HTTP/1.1\r\n"));
	assert_non_null(strstr(s.request, "Content-Length: 18\r\n"));
	client_buf_free(&out);

	/* Chunked, streamed to on_body. */
	s.reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		  "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
	req.on_body = body_collect;
	req.ctx = &streamed;
	req.status_out = &status;
	pthread_create(&th, NULL, srv_main, &s);
	st = client_request(&req, &out);
	pthread_join(th, NULL);
	assert_int_equal(st, 200);
	assert_int_equal(status, 200);
	assert_string_equal(streamed.p, "hello, world");
	assert_null(out.p);
	client_buf_free(&streamed);

	/* An error answer goes to OUT even when streaming; until-EOF body. */
	s.reply = "HTTP/1.1 403 Forbidden\r\n\r\n{\"error\":{\"message\":\"admin only\"}}";
	pthread_create(&th, NULL, srv_main, &s);
	st = client_request(&req, &out);
	pthread_join(th, NULL);
	assert_int_equal(st, 403);
	assert_non_null(strstr(out.p, "admin only"));
	client_buf_free(&out);

	/* Not HTTP; then a body cut short. */
	s.reply = "SSH-2.0-OpenSSH\r\n";
	pthread_create(&th, NULL, srv_main, &s);
	assert_int_equal(client_request(&req, &out), -EPROTO);
	pthread_join(th, NULL);
	s.reply = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
	req.on_body = NULL;
	pthread_create(&th, NULL, srv_main, &s);
	assert_int_equal(client_request(&req, &out), -EPROTO);
	pthread_join(th, NULL);
	client_buf_free(&out);

	/* A daemon that never answers (the connection waits in the backlog): the
	 * deadline ends the wait. */
	req.timeout_ms = 300;
	assert_int_equal(client_request(&req, &out), -ETIMEDOUT);
	close(s.lfd);

	/* No daemon. */
	unlink(path);
	assert_int_equal(client_request(&req, &out), -ENOENT);
	assert_string_equal(client_strerror(-ETIMEDOUT), "no answer in time");
	client_buf_free(&out);
	tu_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ring),
		cmocka_unit_test(test_rate),
		cmocka_unit_test(test_percentile),
		cmocka_unit_test(test_parse_status),
		cmocka_unit_test(test_parse_status_bad),
		cmocka_unit_test(test_parse_event),
		cmocka_unit_test(test_update_rates),
		cmocka_unit_test(test_links),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_requests_view),
		cmocka_unit_test(test_layout_columns),
		cmocka_unit_test(test_layout_rows),
		cmocka_unit_test(test_spark_levels),
		cmocka_unit_test(test_sparkline),
		cmocka_unit_test(test_bar),
		cmocka_unit_test(test_canvas_put),
		cmocka_unit_test(test_frame_readonly),
		cmocka_unit_test(test_frame_states),
		cmocka_unit_test(test_frame_keys),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_sse),
		cmocka_unit_test(test_error_message),
		cmocka_unit_test(test_client_http),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
