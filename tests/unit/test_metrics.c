// SPDX-License-Identifier: MIT
/*
 * Metrics registry and Prometheus text exposition: exact text for small
 * registries (written by hand), label escaping, histogram buckets (le is
 * inclusive, cumulative, +Inf == _count), number formatting that
 * round-trips, -ENOSPC sizing, a line-by-line validator of the 0.0.4
 * grammar run over every output, quantiles on known distributions,
 * allocation failures, and the render time for 64 partitions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/core/mem.h"
#include "runtime/ctl/metrics.h"
#include "tests/unit/testutil.h"

static char *render(const struct met_registry *r, size_t *len_out)
{
	size_t len = 0, cap;
	char *buf;

	assert_int_equal(met_render(r, NULL, 0, &len), -ENOSPC);
	assert_true(len <= met_render_max(r));
	cap = len + 1;
	buf = malloc(cap);
	assert_non_null(buf);
	assert_int_equal(met_render(r, buf, cap, &len), 0);
	assert_int_equal(strlen(buf), len);
	if (len_out)
		*len_out = len;
	return buf;
}

/* The block of one family: from its "# HELP name " line up to the next "# HELP". */
static char *family_block(const char *text, const char *name)
{
	char key[128];
	const char *p, *e;
	char *out;

	snprintf(key, sizeof(key), "# HELP %s ", name);
	p = strstr(text, key);
	if (!p)
		fail_msg("family %s not rendered", name);
	e = strstr(p + strlen(key), "# HELP ");
	if (!e)
		e = p + strlen(p);
	out = strndup(p, (size_t)(e - p));
	assert_non_null(out);
	return out;
}

/*
 * ---- A validator for the text exposition format 0.0.4 ----
 *
 * Checks every line: "# HELP name text" (text escapes only \\ and \n),
 * "# TYPE name counter|gauge|histogram|summary|untyped", or a sample
 * "name[{l="v",...}] value".  Names match [a-zA-Z_:][a-zA-Z0-9_:]*, label
 * names [a-zA-Z_][a-zA-Z0-9_]* (not starting "__"), values escape only
 * \\ \" \n.  One TYPE (and at most one HELP) per family, before its
 * samples; a family's samples are contiguous; no series appears twice;
 * histogram buckets carry le, rise cumulatively per series, end with
 * le="+Inf" equal to _count, and have a _sum.
 */
#define V_MAX_SERIES 32768
#define V_MAX_FAMILIES 256

struct v_state {
	char family[128]; /* current family (last TYPE) */
	char type[16];
	char seen[V_MAX_FAMILIES][128];
	int n_seen;
	char *series[V_MAX_SERIES]; /* "name{labels}" keys, for duplicates */
	int n_series;
	/* histogram series in progress: labels without le */
	char hist_labels[1024];
	double hist_last_le;
	double hist_last_count;
	bool hist_inf;
	double hist_inf_count;
	int n_samples;
};

static bool v_name(const char *s, size_t n, bool metric)
{
	size_t i;

	if (!n)
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];
		bool ok = isalpha((unsigned char)c) || c == '_' || (metric && c == ':') ||
			  (i > 0 && isdigit((unsigned char)c));
		if (!ok)
			return false;
	}
	return true;
}

static bool v_value(const char *s, double *out)
{
	char *end;

	if (!strcmp(s, "+Inf")) {
		*out = INFINITY;
		return true;
	}
	if (!strcmp(s, "-Inf")) {
		*out = -INFINITY;
		return true;
	}
	if (!strcmp(s, "NaN")) {
		*out = NAN;
		return true;
	}
	if (!*s || isspace((unsigned char)*s))
		return false;
	*out = strtod(s, &end);
	/* strtod also takes "inf", "nan" and hex: the format does not */
	if (*end || strpbrk(s, "iInNxX"))
		return false;
	return true;
}

/* The validator reports its first complaint by jumping back into validate_text(). */
static jmp_buf v_jmp;
static char v_err[512];

static void v_fail(int lineno, const char *line, const char *why)
{
	snprintf(v_err, sizeof(v_err), "line %d: %s: '%.200s'", lineno, why, line);
	longjmp(v_jmp, 1);
}

static bool v_seen(struct v_state *v, const char *fam)
{
	int i;

	for (i = 0; i < v->n_seen; i++)
		if (!strcmp(v->seen[i], fam))
			return true;
	return false;
}

/* Close the histogram series in progress (if any) and check it. */
static void v_hist_flush(struct v_state *v, int lineno)
{
	(void)lineno;
	v->hist_labels[0] = '\0';
	v->hist_last_le = -INFINITY;
	v->hist_last_count = 0;
	v->hist_inf = false;
}

static void v_sample(struct v_state *v, int lineno, const char *line)
{
	char name[128], labels[1024], key[1200], le[256] = "", lbl_nole[1024] = "";
	const char *p = line, *q;
	size_t n, ln = 0, nl = 0;
	double val;
	int i;

	q = p;
	while (*q && *q != '{' && *q != ' ')
		q++;
	n = (size_t)(q - p);
	if (!v_name(p, n, true) || n >= sizeof(name))
		v_fail(lineno, line, "bad metric name");
	memcpy(name, p, n);
	name[n] = '\0';
	labels[0] = '\0';
	if (*q == '{') {
		q++;
		while (*q != '}') {
			const char *ls = q, *vs;
			char lname[64], lval[256];
			size_t lvn = 0;

			while (*q && *q != '=')
				q++;
			if (*q != '=' || !v_name(ls, (size_t)(q - ls), false) ||
			    (size_t)(q - ls) >= sizeof(lname))
				v_fail(lineno, line, "bad label name");
			memcpy(lname, ls, (size_t)(q - ls));
			lname[q - ls] = '\0';
			if (!strncmp(lname, "__", 2))
				v_fail(lineno, line, "reserved label name");
			q++;
			if (*q != '"')
				v_fail(lineno, line, "label value not quoted");
			vs = ++q;
			while (*q && *q != '"') {
				if (*q == '\\') {
					q++;
					if (*q != '\\' && *q != '"' && *q != 'n')
						v_fail(lineno, line, "bad escape in label value");
				}
				if (lvn + 1 >= sizeof(lval))
					v_fail(lineno, line, "label value too long");
				lval[lvn++] = *q++;
			}
			lval[lvn] = '\0';
			(void)vs;
			if (*q != '"')
				v_fail(lineno, line, "unterminated label value");
			q++;
			/* duplicate label names within one sample */
			{
				char pat[80];

				snprintf(pat, sizeof(pat), "%s=", lname);
				if (!strncmp(labels, pat, strlen(pat)) ||
				    (snprintf(pat, sizeof(pat), ",%s=", lname),
				     strstr(labels, pat)))
					v_fail(lineno, line, "duplicate label name");
			}
			if (!strcmp(lname, "le")) {
				snprintf(le, sizeof(le), "%s", lval);
			} else {
				nl += (size_t)snprintf(lbl_nole + nl, sizeof(lbl_nole) - nl,
						       "%s%s=%s", nl ? "," : "", lname, lval);
			}
			ln += (size_t)snprintf(labels + ln, sizeof(labels) - ln, "%s%s=\"%.*s\"",
					       ln ? "," : "", lname, (int)(q - vs - 1), vs);
			if (*q == ',')
				q++;
			else if (*q != '}')
				v_fail(lineno, line, "expected , or } after a label");
		}
		q++;
	}
	if (*q != ' ')
		v_fail(lineno, line, "expected one space before the value");
	q++;
	if (!v_value(q, &val))
		v_fail(lineno, line, "bad value (or a timestamp)");

	/* which family does the sample belong to? */
	if (!v->family[0])
		v_fail(lineno, line, "sample before any TYPE");
	if (!strcmp(v->type, "histogram")) {
		size_t fl = strlen(v->family);

		if (strncmp(name, v->family, fl))
			v_fail(lineno, line, "sample of another family inside a histogram");
		if (!strcmp(name + fl, "_bucket")) {
			double lev = 0;

			if (!le[0] || !v_value(le, &lev) || isnan(lev))
				v_fail(lineno, line, "bucket without a valid le");
			if (strcmp(lbl_nole, v->hist_labels)) {
				if (v->hist_labels[0] || v->hist_inf)
					v_fail(lineno, line,
					       "new bucket series before _sum/_count");
				snprintf(v->hist_labels, sizeof(v->hist_labels), "%s", lbl_nole);
				v->hist_last_le = -INFINITY;
				v->hist_last_count = 0;
			}
			if (!(lev > v->hist_last_le))
				v_fail(lineno, line, "le not increasing");
			if (val < v->hist_last_count)
				v_fail(lineno, line, "bucket counts not cumulative");
			v->hist_last_le = lev;
			v->hist_last_count = val;
			if (isinf(lev)) {
				v->hist_inf = true;
				v->hist_inf_count = val;
			}
		} else if (!strcmp(name + fl, "_sum")) {
			if (le[0])
				v_fail(lineno, line, "le on _sum");
			if (!v->hist_inf || strcmp(lbl_nole, v->hist_labels))
				v_fail(lineno, line, "_sum without a +Inf bucket before it");
		} else if (!strcmp(name + fl, "_count")) {
			if (le[0])
				v_fail(lineno, line, "le on _count");
			if (!v->hist_inf || strcmp(lbl_nole, v->hist_labels))
				v_fail(lineno, line, "_count without a +Inf bucket before it");
			if (val != v->hist_inf_count)
				v_fail(lineno, line, "_count differs from the +Inf bucket");
			v_hist_flush(v, lineno);
		} else {
			v_fail(lineno, line, "histogram sample with an unknown suffix");
		}
	} else {
		if (strcmp(name, v->family))
			v_fail(lineno, line, "sample name differs from its family");
		if (le[0])
			v_fail(lineno, line, "le label outside a histogram");
		if (!strcmp(v->type, "counter") && !(val >= 0))
			v_fail(lineno, line, "counter negative or NaN");
	}

	snprintf(key, sizeof(key), "%s{%s}", name, labels);
	for (i = 0; i < v->n_series; i++)
		if (!strcmp(v->series[i], key))
			v_fail(lineno, line, "duplicate series");
	assert_true(v->n_series < V_MAX_SERIES);
	v->series[v->n_series++] = strdup(key);
	v->n_samples++;
}

static void v_free(struct v_state *v)
{
	int i;

	for (i = 0; i < v->n_series; i++)
		free(v->series[i]);
	free(v);
}

/* Validate a whole exposition: NULL when well-formed (*n_samples set), else the complaint. */
static const char *validate_text(const char *text, int *n_samples)
{
	static struct v_state *v;
	/* volatile: kept across the longjmp() of v_fail() */
	const char *volatile p = text;
	char line[4096];
	volatile bool help_pending = false;
	char help_name[128] = "";
	volatile int lineno = 0;

	v = calloc(1, sizeof(*v));
	assert_non_null(v);
	if (setjmp(v_jmp)) {
		v_free(v);
		return v_err;
	}
	v_hist_flush(v, 0);
	if (*text && text[strlen(text) - 1] != '\n')
		v_fail(0, "", "exposition does not end with a newline");
	while (*p) {
		const char *e = strchr(p, '\n');
		size_t len = (size_t)(e - p);

		assert_non_null(e);
		assert_true(len < sizeof(line));
		memcpy(line, p, len);
		line[len] = '\0';
		p = e + 1;
		lineno++;
		if (!len)
			v_fail(lineno, line, "empty line");
		if (!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7)) {
			const char *nm = line + 7, *sp = strchr(nm, ' ');
			char fam[128];

			if (!sp || !v_name(nm, (size_t)(sp - nm), true) ||
			    (size_t)(sp - nm) >= sizeof(fam))
				v_fail(lineno, line, "bad name in a comment");
			memcpy(fam, nm, (size_t)(sp - nm));
			fam[sp - nm] = '\0';
			if (v->hist_labels[0] || v->hist_inf)
				v_fail(lineno, line, "histogram series left without _count");
			if (line[2] == 'H') {
				const char *t;

				for (t = sp + 1; *t; t++)
					if (*t == '\\' && t[1] != '\\' && t[1] != 'n')
						v_fail(lineno, line, "bad escape in HELP");
					else if (*t == '\\')
						t++;
				if (v_seen(v, fam) || (help_pending && !strcmp(help_name, fam)))
					v_fail(lineno, line, "HELP twice or after the samples");
				help_pending = true;
				snprintf(help_name, sizeof(help_name), "%s", fam);
			} else {
				const char *ty = sp + 1;

				if (strcmp(ty, "counter") && strcmp(ty, "gauge") &&
				    strcmp(ty, "histogram") && strcmp(ty, "summary") &&
				    strcmp(ty, "untyped"))
					v_fail(lineno, line, "unknown TYPE");
				if (v_seen(v, fam))
					v_fail(lineno, line, "second TYPE for a family");
				if (help_pending && strcmp(help_name, fam))
					v_fail(lineno, line, "HELP and TYPE of different families");
				help_pending = false;
				assert_true(v->n_seen < V_MAX_FAMILIES);
				snprintf(v->seen[v->n_seen++], 128, "%s", fam);
				snprintf(v->family, sizeof(v->family), "%s", fam);
				snprintf(v->type, sizeof(v->type), "%s", ty);
			}
			continue;
		}
		if (line[0] == '#')
			continue; /* other comments are allowed */
		if (help_pending)
			v_fail(lineno, line, "HELP without a TYPE before samples");
		v_sample(v, lineno, line);
	}
	if (v->hist_labels[0] || v->hist_inf)
		v_fail(lineno, "", "exposition ends inside a histogram series");
	*n_samples = v->n_samples;
	v_free(v);
	return NULL;
}

/* Validate or fail the test; returns the number of samples. */
static int validate(const char *text)
{
	const char *err;
	int n = 0;

	err = validate_text(text, &n);
	if (err)
		fail_msg("exposition: %s", err);
	return n;
}

/* The validator accepts what it should and catches what it claims to. */
static void test_validator(void **state)
{
	static const struct {
		const char *text;
		const char *why; /* NULL: well-formed */
	} cases[] = {
		{ "# HELP a_total x \\\\ y\\n\n# TYPE a_total counter\na_total 1\n", NULL },
		{ "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
		  "h_sum 3.5\nh_count 2\n",
		  NULL },
		{ "# TYPE a gauge\na{x=\"\\\\\\\"\\n\"} NaN\n", NULL },
		{ "# TYPE a gauge\na-b 1\n", "bad metric name" },
		{ "# TYPE a gauge\n9a 1\n", "bad metric name" },
		{ "a 1\n", "sample before any TYPE" },
		{ "# TYPE a gauge\na{x=\"\\q\"} 1\n", "bad escape" },
		{ "# TYPE a gauge\na{x=1} 1\n", "not quoted" },
		{ "# TYPE a gauge\na{x-y=\"1\"} 1\n", "bad label name" },
		{ "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n", "duplicate label name" },
		{ "# TYPE a gauge\na 1\n# TYPE a gauge\n", "second TYPE" },
		{ "# TYPE a gauge\na 1\na 2\n", "duplicate series" },
		{ "# TYPE a gauge\nb 1\n", "differs from its family" },
		{ "# TYPE a gauge\na inf\n", "bad value" },
		{ "# TYPE a gauge\na 1 1700000000\n", "bad value" },
		{ "# TYPE a gauge\na  1\n", "bad value" },
		{ "# TYPE a counter\na -1\n", "counter negative" },
		{ "# TYPE a gauge\na 1", "newline" },
		{ "# TYPE a gauge\n\na 1\n", "empty line" },
		{ "# TYPE a gaug\n", "unknown TYPE" },
		{ "# HELP a x\na 1\n", "HELP without a TYPE" },
		{ "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "+Inf" },
		{ "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n"
		  "h_count 1\n",
		  "not cumulative" },
		{ "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n",
		  "le not increasing" },
		{ "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
		  "_count differs" },
		{ "# TYPE h histogram\nh_bucket 1\n", "without a valid le" },
		{ "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\n", "ends inside" },
	};
	size_t i;
	int n;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *err = validate_text(cases[i].text, &n);

		if (!cases[i].why && err)
			fail_msg("case %zu rejected: %s", i, err);
		if (cases[i].why && (!err || !strstr(err, cases[i].why)))
			fail_msg("case %zu: expected '%s', got %s", i, cases[i].why,
				 err ? err : "accepted");
	}
}

/* ---- exact text ---- */

static const char empty_text[] =
	"# HELP duet_up Whether duetd is up and serving (1) or shutting down (0).\n"
	"# TYPE duet_up gauge\n"
	"duet_up 1\n"
	"# HELP duet_build_info Duet build information; always 1.\n"
	"# TYPE duet_build_info gauge\n"
	"duet_build_info{version=\"0.1.0\"} 1\n"
	"# HELP duet_requests_running Requests in the running batch.\n"
	"# TYPE duet_requests_running gauge\n"
	"# HELP duet_requests_waiting Requests waiting to be scheduled.\n"
	"# TYPE duet_requests_waiting gauge\n"
	"# HELP duet_kv_blocks_used KV cache blocks held by running or waiting requests.\n"
	"# TYPE duet_kv_blocks_used gauge\n"
	"# HELP duet_kv_blocks_cached KV cache blocks held only by the prefix cache.\n"
	"# TYPE duet_kv_blocks_cached gauge\n"
	"# HELP duet_kv_blocks_leased KV cache blocks leased to or from another partition.\n"
	"# TYPE duet_kv_blocks_leased gauge\n"
	"# HELP duet_kv_blocks_total KV cache blocks in the partition's pool.\n"
	"# TYPE duet_kv_blocks_total gauge\n"
	"# HELP duet_kv_usage_ratio KV cache usage, 0 to 1 (1 = full).\n"
	"# TYPE duet_kv_usage_ratio gauge\n"
	"# HELP duet_prefix_cache_queries_total Prompt tokens looked up in the prefix cache.\n"
	"# TYPE duet_prefix_cache_queries_total counter\n"
	"# HELP duet_prefix_cache_hits_total Prompt tokens found in the prefix cache.\n"
	"# TYPE duet_prefix_cache_hits_total counter\n"
	"# HELP duet_prompt_tokens_total Prefill tokens processed.\n"
	"# TYPE duet_prompt_tokens_total counter\n"
	"# HELP duet_generation_tokens_total Generation tokens processed.\n"
	"# TYPE duet_generation_tokens_total counter\n"
	"# HELP duet_request_success_total Finished requests by finish reason.\n"
	"# TYPE duet_request_success_total counter\n"
	"# HELP duet_preemptions_total Requests preempted by the scheduler.\n"
	"# TYPE duet_preemptions_total counter\n"
	"# HELP duet_worker_restarts_total Times the partition's worker was restarted.\n"
	"# TYPE duet_worker_restarts_total counter\n"
	"# HELP duet_time_to_first_token_seconds Time from arrival to the first generated token.\n"
	"# TYPE duet_time_to_first_token_seconds histogram\n"
	"# HELP duet_inter_token_latency_seconds Time between consecutive generated tokens.\n"
	"# TYPE duet_inter_token_latency_seconds histogram\n"
	"# HELP duet_e2e_request_latency_seconds Time from arrival to the last token.\n"
	"# TYPE duet_e2e_request_latency_seconds histogram\n"
	"# HELP duet_request_queue_time_seconds Time spent waiting before first scheduled.\n"
	"# TYPE duet_request_queue_time_seconds histogram\n"
	"# HELP duet_request_prefill_time_seconds Time from first scheduled to the first token.\n"
	"# TYPE duet_request_prefill_time_seconds histogram\n"
	"# HELP duet_request_decode_time_seconds Time from the first token to the last.\n"
	"# TYPE duet_request_decode_time_seconds histogram\n"
	"# HELP duet_token_delivery_seconds Time from a token being sampled in the worker to its "
	"stream frame being written by the supervisor.\n"
	"# TYPE duet_token_delivery_seconds histogram\n"
	"# HELP duet_kv_transfer_bytes_total KV cache bytes written from a prefill partition to a "
	"decode partition.\n"
	"# TYPE duet_kv_transfer_bytes_total counter\n"
	"# HELP duet_kv_transfer_seconds Per request, time from the first KV write posted to the last "
	"one completed.\n"
	"# TYPE duet_kv_transfer_seconds histogram\n"
	"# HELP duet_kv_transfer_failures_total KV transfers that failed: a write failed, a completion "
	"record was refused, or a lease expired under it.\n"
	"# TYPE duet_kv_transfer_failures_total counter\n"
	"# HELP duet_kv_lease_expired_total KV block reservations that passed their deadline.\n"
	"# TYPE duet_kv_lease_expired_total counter\n";

static void test_empty_exact(void **state)
{
	struct met_registry *r;
	char *text;

	(void)state;
	assert_int_equal(met_create(4, "0.1.0", &r), 0);
	text = render(r, NULL);
	assert_string_equal(text, empty_text);
	assert_int_equal(validate(text), 2);
	free(text);
	met_set(r, MET_UP, 0, 0);
	text = render(r, NULL);
	assert_non_null(strstr(text, "\nduet_up 0\n"));
	free(text);
	met_destroy(r);
}

static void test_small_exact(void **state)
{
	struct met_registry *r;
	char *text, *blk;

	(void)state;
	assert_int_equal(met_create(4, "0.1.0", &r), 0);
	assert_int_equal(met_series_add(r, "p0", "mixed"), 0);
	assert_int_equal(met_series_add(r, "p1", "decode"), 1);
	assert_int_equal(met_series_count(r), 2);

	met_set(r, MET_REQUESTS_RUNNING, 0, 3);
	met_set(r, MET_REQUESTS_RUNNING, 1, 12);
	met_set(r, MET_KV_USAGE_RATIO, 0, 0.25);
	met_set(r, MET_KV_USAGE_RATIO, 1, 0.1);
	met_add(r, MET_PROMPT_TOKENS, 0, 100);
	met_add(r, MET_PROMPT_TOKENS, 0, 28);
	met_finish(r, 0, MET_FINISH_STOP);
	met_finish(r, 0, MET_FINISH_STOP);
	met_finish(r, 0, MET_FINISH_LENGTH);
	met_finish(r, 1, MET_FINISH_ERROR);
	met_observe(r, MET_TTFT, 0, 0.003);
	met_observe(r, MET_TTFT, 0, 0.5);
	met_observe(r, MET_TTFT, 0, 3000);
	met_observe(r, MET_TTFT, 1, 0.001);

	text = render(r, NULL);
	assert_int_equal(met_misuse(r), 0);

	blk = family_block(text, "duet_requests_running");
	assert_string_equal(blk, "# HELP duet_requests_running Requests in the running batch.\n"
				 "# TYPE duet_requests_running gauge\n"
				 "duet_requests_running{partition=\"p0\",role=\"mixed\"} 3\n"
				 "duet_requests_running{partition=\"p1\",role=\"decode\"} 12\n");
	free(blk);

	blk = family_block(text, "duet_kv_usage_ratio");
	assert_string_equal(blk, "# HELP duet_kv_usage_ratio KV cache usage, 0 to 1 (1 = full).\n"
				 "# TYPE duet_kv_usage_ratio gauge\n"
				 "duet_kv_usage_ratio{partition=\"p0\",role=\"mixed\"} 0.25\n"
				 "duet_kv_usage_ratio{partition=\"p1\",role=\"decode\"} 0.1\n");
	free(blk);

	blk = family_block(text, "duet_prompt_tokens_total");
	assert_string_equal(blk, "# HELP duet_prompt_tokens_total Prefill tokens processed.\n"
				 "# TYPE duet_prompt_tokens_total counter\n"
				 "duet_prompt_tokens_total{partition=\"p0\",role=\"mixed\"} 128\n"
				 "duet_prompt_tokens_total{partition=\"p1\",role=\"decode\"} 0\n");
	free(blk);

	blk = family_block(text, "duet_request_success_total");
	assert_string_equal(
		blk,
		"# HELP duet_request_success_total Finished requests by finish reason.\n"
		"# TYPE duet_request_success_total counter\n"
		"duet_request_success_total{partition=\"p0\",role=\"mixed\",finish_reason=\"stop\"} 2\n"
		"duet_request_success_total{partition=\"p0\",role=\"mixed\",finish_reason=\"length\"} 1\n"
		"duet_request_success_total{partition=\"p0\",role=\"mixed\",finish_reason=\"abort\"} 0\n"
		"duet_request_success_total{partition=\"p0\",role=\"mixed\",finish_reason=\"error\"} 0\n"
		"duet_request_success_total{partition=\"p1\",role=\"decode\",finish_reason=\"stop\"} 0\n"
		"duet_request_success_total{partition=\"p1\",role=\"decode\",finish_reason=\"length\"} 0\n"
		"duet_request_success_total{partition=\"p1\",role=\"decode\",finish_reason=\"abort\"} 0\n"
		"duet_request_success_total{partition=\"p1\",role=\"decode\",finish_reason=\"error\"} 1\n");
	free(blk);

#define TT "duet_time_to_first_token_seconds"
#define P0 "partition=\"p0\",role=\"mixed\""
#define P1 "partition=\"p1\",role=\"decode\""
	blk = family_block(text, TT);
	assert_string_equal(
		blk, "# HELP " TT " Time from arrival to the first generated token.\n"
		     "# TYPE " TT " histogram\n" TT "_bucket{" P0 ",le=\"0.001\"} 0\n" TT
		     "_bucket{" P0 ",le=\"0.005\"} 1\n" TT "_bucket{" P0 ",le=\"0.01\"} 1\n" TT
		     "_bucket{" P0 ",le=\"0.02\"} 1\n" TT "_bucket{" P0 ",le=\"0.04\"} 1\n" TT
		     "_bucket{" P0 ",le=\"0.06\"} 1\n" TT "_bucket{" P0 ",le=\"0.08\"} 1\n" TT
		     "_bucket{" P0 ",le=\"0.1\"} 1\n" TT "_bucket{" P0 ",le=\"0.25\"} 1\n" TT
		     "_bucket{" P0 ",le=\"0.5\"} 2\n" TT "_bucket{" P0 ",le=\"0.75\"} 2\n" TT
		     "_bucket{" P0 ",le=\"1\"} 2\n" TT "_bucket{" P0 ",le=\"2.5\"} 2\n" TT
		     "_bucket{" P0 ",le=\"5\"} 2\n" TT "_bucket{" P0 ",le=\"7.5\"} 2\n" TT
		     "_bucket{" P0 ",le=\"10\"} 2\n" TT "_bucket{" P0 ",le=\"20\"} 2\n" TT
		     "_bucket{" P0 ",le=\"40\"} 2\n" TT "_bucket{" P0 ",le=\"80\"} 2\n" TT
		     "_bucket{" P0 ",le=\"160\"} 2\n" TT "_bucket{" P0 ",le=\"640\"} 2\n" TT
		     "_bucket{" P0 ",le=\"2560\"} 2\n" TT "_bucket{" P0 ",le=\"+Inf\"} 3\n" TT
		     "_sum{" P0 "} 3000.503\n" TT "_count{" P0 "} 3\n" TT "_bucket{" P1
		     ",le=\"0.001\"} 1\n" TT "_bucket{" P1 ",le=\"0.005\"} 1\n" TT "_bucket{" P1
		     ",le=\"0.01\"} 1\n" TT "_bucket{" P1 ",le=\"0.02\"} 1\n" TT "_bucket{" P1
		     ",le=\"0.04\"} 1\n" TT "_bucket{" P1 ",le=\"0.06\"} 1\n" TT "_bucket{" P1
		     ",le=\"0.08\"} 1\n" TT "_bucket{" P1 ",le=\"0.1\"} 1\n" TT "_bucket{" P1
		     ",le=\"0.25\"} 1\n" TT "_bucket{" P1 ",le=\"0.5\"} 1\n" TT "_bucket{" P1
		     ",le=\"0.75\"} 1\n" TT "_bucket{" P1 ",le=\"1\"} 1\n" TT "_bucket{" P1
		     ",le=\"2.5\"} 1\n" TT "_bucket{" P1 ",le=\"5\"} 1\n" TT "_bucket{" P1
		     ",le=\"7.5\"} 1\n" TT "_bucket{" P1 ",le=\"10\"} 1\n" TT "_bucket{" P1
		     ",le=\"20\"} 1\n" TT "_bucket{" P1 ",le=\"40\"} 1\n" TT "_bucket{" P1
		     ",le=\"80\"} 1\n" TT "_bucket{" P1 ",le=\"160\"} 1\n" TT "_bucket{" P1
		     ",le=\"640\"} 1\n" TT "_bucket{" P1 ",le=\"2560\"} 1\n" TT "_bucket{" P1
		     ",le=\"+Inf\"} 1\n" TT "_sum{" P1 "} 0.001\n" TT "_count{" P1 "} 1\n");
	free(blk);
#undef TT
#undef P0
#undef P1

	/* every family present, in table order, and the whole text well-formed */
	{
		const char *prev = text;
		int f;

		for (f = 0; f < MET_N_FAMILIES; f++) {
			char key[128];
			const char *at;

			snprintf(key, sizeof(key), "# TYPE %s ", met_family(f)->name);
			at = strstr(text, key);
			assert_non_null(at);
			assert_true(at >= prev);
			prev = at;
		}
	}
	/*
	 * up, build_info; per series 7 gauges, 6 + 3 counters + 4 reasons,
	 * histograms 25 + 22 + 4 * 24 + 19 + 19
	 */
	assert_int_equal(validate(text), 2 + 2 * (20 + 25 + 22 + 24 * 4 + 19 + 19));
	free(text);
	met_destroy(r);
}

/*
 * The KV transfer families: {partition,role,transport}, transport "none"
 * until met_set_transport(), exact lines for counters and the histogram.
 */
static void test_transport_exact(void **state)
{
	struct met_registry *r;
	char *text, *blk;

	(void)state;
	assert_int_equal(met_create(2, "0.1.0", &r), 0);
	assert_int_equal(met_series_add(r, "p0", "prefill"), 0);
	assert_int_equal(met_series_add(r, "p1", "decode"), 1);
	met_add(r, MET_KV_TRANSFER_BYTES, 0, 123);
	text = render(r, NULL);
	blk = family_block(text, "duet_kv_transfer_bytes_total");
	assert_string_equal(
		blk,
		"# HELP duet_kv_transfer_bytes_total KV cache bytes written from a prefill partition "
		"to a decode partition.\n"
		"# TYPE duet_kv_transfer_bytes_total counter\n"
		"duet_kv_transfer_bytes_total{partition=\"p0\",role=\"prefill\",transport=\"none\"} "
		"123\n"
		"duet_kv_transfer_bytes_total{partition=\"p1\",role=\"decode\",transport=\"none\"} "
		"0\n");
	free(blk);
	free(text);

	assert_int_equal(met_set_transport(r, "shm"), 0);
	met_add(r, MET_KV_TRANSFER_BYTES, 0, 1 << 20);
	met_add(r, MET_KV_TRANSFER_FAILURES, 1, 1);
	met_add(r, MET_KV_TRANSFER_FAILURES, 1, 1);
	met_add(r, MET_KV_LEASE_EXPIRED, 1, 1);
	met_observe(r, MET_KV_TRANSFER_SECONDS, 0, 0.00005); /* below the first bound */
	met_observe(r, MET_KV_TRANSFER_SECONDS, 0, 0.0001);  /* on it: le is inclusive */
	met_observe(r, MET_KV_TRANSFER_SECONDS, 0, 0.003);
	met_observe(r, MET_KV_TRANSFER_SECONDS, 0, 12.5); /* above 10 s: +Inf only */
	text = render(r, NULL);
	assert_int_equal(met_misuse(r), 0);

	blk = family_block(text, "duet_kv_transfer_bytes_total");
	assert_non_null(strstr(blk,
			       "\nduet_kv_transfer_bytes_total{partition=\"p0\",role=\"prefill\","
			       "transport=\"shm\"} 1048699\n"));
	free(blk);

	blk = family_block(text, "duet_kv_transfer_failures_total");
	assert_string_equal(
		blk,
		"# HELP duet_kv_transfer_failures_total KV transfers that failed: a write failed, a "
		"completion record was refused, or a lease expired under it.\n"
		"# TYPE duet_kv_transfer_failures_total counter\n"
		"duet_kv_transfer_failures_total{partition=\"p0\",role=\"prefill\",transport=\"shm\"} "
		"0\n"
		"duet_kv_transfer_failures_total{partition=\"p1\",role=\"decode\",transport=\"shm\"} "
		"2\n");
	free(blk);

	blk = family_block(text, "duet_kv_lease_expired_total");
	assert_string_equal(
		blk,
		"# HELP duet_kv_lease_expired_total KV block reservations that passed their deadline.\n"
		"# TYPE duet_kv_lease_expired_total counter\n"
		"duet_kv_lease_expired_total{partition=\"p0\",role=\"prefill\",transport=\"shm\"} 0\n"
		"duet_kv_lease_expired_total{partition=\"p1\",role=\"decode\",transport=\"shm\"} 1\n");
	free(blk);

#define KT "duet_kv_transfer_seconds"
#define P0 "{partition=\"p0\",role=\"prefill\",transport=\"shm\""
#define P1 "{partition=\"p1\",role=\"decode\",transport=\"shm\""
	blk = family_block(text, KT);
	/* clang-format off */
	assert_string_equal(
		blk,
		"# HELP " KT " Per request, time from the first KV write posted to the last one "
		"completed.\n"
		"# TYPE " KT " histogram\n"
		KT "_bucket" P0 ",le=\"0.0001\"} 2\n"
		KT "_bucket" P0 ",le=\"0.0002\"} 2\n"
		KT "_bucket" P0 ",le=\"0.0005\"} 2\n"
		KT "_bucket" P0 ",le=\"0.001\"} 2\n"
		KT "_bucket" P0 ",le=\"0.002\"} 2\n"
		KT "_bucket" P0 ",le=\"0.005\"} 3\n"
		KT "_bucket" P0 ",le=\"0.01\"} 3\n"
		KT "_bucket" P0 ",le=\"0.02\"} 3\n"
		KT "_bucket" P0 ",le=\"0.05\"} 3\n"
		KT "_bucket" P0 ",le=\"0.1\"} 3\n"
		KT "_bucket" P0 ",le=\"0.2\"} 3\n"
		KT "_bucket" P0 ",le=\"0.5\"} 3\n"
		KT "_bucket" P0 ",le=\"1\"} 3\n"
		KT "_bucket" P0 ",le=\"2\"} 3\n"
		KT "_bucket" P0 ",le=\"5\"} 3\n"
		KT "_bucket" P0 ",le=\"10\"} 3\n"
		KT "_bucket" P0 ",le=\"+Inf\"} 4\n"
		KT "_sum" P0 "} 12.50315\n"
		KT "_count" P0 "} 4\n"
		KT "_bucket" P1 ",le=\"0.0001\"} 0\n"
		KT "_bucket" P1 ",le=\"0.0002\"} 0\n"
		KT "_bucket" P1 ",le=\"0.0005\"} 0\n"
		KT "_bucket" P1 ",le=\"0.001\"} 0\n"
		KT "_bucket" P1 ",le=\"0.002\"} 0\n"
		KT "_bucket" P1 ",le=\"0.005\"} 0\n"
		KT "_bucket" P1 ",le=\"0.01\"} 0\n"
		KT "_bucket" P1 ",le=\"0.02\"} 0\n"
		KT "_bucket" P1 ",le=\"0.05\"} 0\n"
		KT "_bucket" P1 ",le=\"0.1\"} 0\n"
		KT "_bucket" P1 ",le=\"0.2\"} 0\n"
		KT "_bucket" P1 ",le=\"0.5\"} 0\n"
		KT "_bucket" P1 ",le=\"1\"} 0\n"
		KT "_bucket" P1 ",le=\"2\"} 0\n"
		KT "_bucket" P1 ",le=\"5\"} 0\n"
		KT "_bucket" P1 ",le=\"10\"} 0\n"
		KT "_bucket" P1 ",le=\"+Inf\"} 0\n"
		KT "_sum" P1 "} 0\n"
		KT "_count" P1 "} 0\n");
	/* clang-format on */
	free(blk);
#undef KT
#undef P0
#undef P1
	/* the transport label stays off the other families */
	blk = family_block(text, "duet_token_delivery_seconds");
	assert_null(strstr(blk, "transport="));
	free(blk);
	assert_true(met_get(r, MET_KV_TRANSFER_BYTES, MET_ALL) == 123 + (1 << 20));
	assert_true(met_get(r, MET_KV_TRANSFER_FAILURES, 1) == 2);
	assert_true(met_get(r, MET_KV_TRANSFER_SECONDS, 0) == 4);
	validate(text);
	free(text);

	/* wrong kinds are misuse like anywhere else */
	met_set(r, MET_KV_TRANSFER_BYTES, 0, 1);
	met_add(r, MET_KV_TRANSFER_SECONDS, 0, 1);
	met_add(r, MET_KV_LEASE_EXPIRED, 2, 1);
	assert_int_equal(met_misuse(r), 3);
	met_destroy(r);
}

/*
 * met_set_transport(): escaped once like the other label values, empty
 * and NULL refused, 63 bytes the longest, a refused value keeps the old
 * one, and a buffer sized before the call holds the longest value.
 */
static void test_transport_errors(void **state)
{
	struct met_registry *r;
	char big[MET_LABEL_MAX + 1], *text, *buf;
	size_t max, len;

	(void)state;
	assert_int_equal(met_set_transport(NULL, "shm"), -EINVAL);
	assert_int_equal(met_create(1, "x", &r), 0);
	assert_int_equal(met_series_add(r, "p", "prefill"), 0);
	assert_int_equal(met_set_transport(r, NULL), -EINVAL);
	assert_int_equal(met_set_transport(r, ""), -EINVAL);

	assert_int_equal(met_set_transport(r, "t\"c\\p\n"), 0);
	met_add(r, MET_KV_LEASE_EXPIRED, 0, 5);
	text = render(r, NULL);
	assert_non_null(strstr(text,
			       "\nduet_kv_lease_expired_total{partition=\"p\",role=\"prefill\","
			       "transport=\"t\\\"c\\\\p\\n\"} 5\n"));
	validate(text);
	free(text);

	memset(big, '"', sizeof(big) - 1); /* every byte escapes to two */
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(met_set_transport(r, big), -ENAMETOOLONG);
	big[MET_LABEL_MAX] = '\0'; /* 64 bytes */
	assert_int_equal(met_set_transport(r, big), -ENAMETOOLONG);
	text = render(r, NULL); /* the old value stays */
	assert_non_null(strstr(text, "transport=\"t\\\"c\\\\p\\n\"}"));
	free(text);

	/* sized with a short value, rendered with the longest (63 quotes) */
	assert_int_equal(met_set_transport(r, "tcp"), 0);
	max = met_render_max(r);
	big[MET_LABEL_MAX - 1] = '\0';
	assert_int_equal(met_set_transport(r, big), 0);
	met_observe(r, MET_KV_TRANSFER_SECONDS, 0, -1.2345678901234567e-300);
	met_add(r, MET_KV_TRANSFER_BYTES, 0, 1.2345678901234567e-300);
	assert_int_equal(met_render(r, NULL, 0, &len), -ENOSPC);
	assert_true(len <= max);
	buf = malloc(max + 1);
	assert_non_null(buf);
	assert_int_equal(met_render(r, buf, max + 1, &len), 0);
	validate(buf);
	free(buf);
	assert_int_equal(met_misuse(r), 0);
	met_destroy(r);
}

static void test_label_escaping(void **state)
{
	struct met_registry *r;
	char *text, *blk;

	(void)state;
	assert_int_equal(met_create(2, "v\"1\\2\n", &r), 0);
	assert_int_equal(met_series_add(r, "a\\b\"c\nd", "x y"), 0);
	met_set(r, MET_REQUESTS_WAITING, 0, 7);
	text = render(r, NULL);
	assert_non_null(strstr(text, "duet_build_info{version=\"v\\\"1\\\\2\\n\"} 1\n"));
	blk = family_block(text, "duet_requests_waiting");
	assert_string_equal(
		blk, "# HELP duet_requests_waiting Requests waiting to be scheduled.\n"
		     "# TYPE duet_requests_waiting gauge\n"
		     "duet_requests_waiting{partition=\"a\\\\b\\\"c\\nd\",role=\"x y\"} 7\n");
	free(blk);
	validate(text);
	free(text);
	met_destroy(r);
}

static void test_series_add_errors(void **state)
{
	struct met_registry *r;
	char big[MET_LABEL_MAX + 1];

	(void)state;
	assert_int_equal(met_create(0, "x", &r), -EINVAL);
	assert_int_equal(met_create(1, NULL, &r), -EINVAL);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(met_create(1, big, &r), -ENAMETOOLONG);
	assert_int_equal(met_create(2, "x", &r), 0);
	assert_int_equal(met_series_add(r, "", "mixed"), -EINVAL);
	assert_int_equal(met_series_add(r, "p", NULL), -EINVAL);
	assert_int_equal(met_series_add(r, big, "mixed"), -ENAMETOOLONG);
	big[MET_LABEL_MAX - 1] = '\0'; /* 63 bytes: the longest allowed */
	assert_int_equal(met_series_add(r, big, "mixed"), 0);
	assert_int_equal(met_series_add(r, big, "mixed"), -EEXIST);
	assert_int_equal(met_series_add(r, big, "decode"), 1);
	assert_int_equal(met_series_add(r, "q", "decode"), -ENOSPC);
	met_destroy(r);
	met_destroy(NULL);
}

/* Value of the sample line that starts with prefix (up to the value). */
static double sample_value(const char *text, const char *prefix)
{
	char key[512];
	const char *p;
	double v;

	snprintf(key, sizeof(key), "\n%s ", prefix);
	p = strstr(text, key);
	if (!p)
		fail_msg("no sample '%s'", prefix);
	p += strlen(key);
	{
		char num[64];
		size_t n = strcspn(p, "\n");

		assert_true(n < sizeof(num));
		memcpy(num, p, n);
		num[n] = '\0';
		assert_true(v_value(num, &v));
	}
	return v;
}

static void test_histogram_buckets(void **state)
{
	static const double vals[] = {
		0.3, 0.3, 0.30000000000000004, 0.5, 0.0, -1.0, 7680.0, 7680.5
	};
	const struct met_family_desc *d = met_family(MET_E2E);
	struct met_registry *r;
	char *text, key[256];
	double expect_sum = 0;
	uint64_t expect[64] = { 0 };
	size_t i;
	int b;

	(void)state;
	assert_int_equal(d->n_bounds, 21);
	assert_true(d->bounds[0] == 0.3 && d->bounds[20] == 7680.0);
	assert_int_equal(met_create(1, "x", &r), 0);
	assert_int_equal(met_series_add(r, "p", "mixed"), 0);
	for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		met_observe(r, MET_E2E, 0, vals[i]);
		expect_sum += vals[i];
	}
	met_observe(r, MET_E2E, 0, NAN); /* dropped */
	assert_int_equal(met_misuse(r), 1);
	text = render(r, NULL);
	validate(text);
	/* by hand: le=0.3 takes 0.3, 0.3, 0.0, -1.0 (inclusive, negatives in the first) */
	expect[0] = 4; /* 0.3 */
	expect[1] = 6; /* 0.5: + 0.30000000000000004, 0.5 */
	for (b = 2; b < 20; b++)
		expect[b] = 6;
	expect[20] = 7; /* 7680 exactly */
	expect[21] = 8; /* +Inf: 7680.5 */
	for (b = 0; b <= 21; b++) {
		char le[32];

		if (b < 21)
			snprintf(le, sizeof(le), "%.15g", d->bounds[b]);
		else
			snprintf(le, sizeof(le), "+Inf");
		snprintf(key, sizeof(key),
			 "duet_e2e_request_latency_seconds_bucket{partition=\"p\",role=\"mixed\","
			 "le=\"%s\"}",
			 le);
		if (sample_value(text, key) != (double)expect[b])
			fail_msg("bucket le=%s: %g, expected %lu", le, sample_value(text, key),
				 (unsigned long)expect[b]);
	}
	assert_true(sample_value(text, "duet_e2e_request_latency_seconds_count{partition=\"p\","
				       "role=\"mixed\"}") == 8);
	assert_true(sample_value(text, "duet_e2e_request_latency_seconds_sum{partition=\"p\","
				       "role=\"mixed\"}") == expect_sum);
	free(text);

	/* +Inf observation: counted in +Inf, sum becomes +Inf, still well-formed */
	met_observe(r, MET_E2E, 0, INFINITY);
	met_observe(r, MET_E2E, 0, 1.0);
	text = render(r, NULL);
	validate(text);
	assert_true(sample_value(text, "duet_e2e_request_latency_seconds_bucket{partition=\"p\","
				       "role=\"mixed\",le=\"1\"}") == 7);
	assert_true(sample_value(text, "duet_e2e_request_latency_seconds_bucket{partition=\"p\","
				       "role=\"mixed\",le=\"+Inf\"}") == 10);
	assert_non_null(strstr(text, "duet_e2e_request_latency_seconds_sum{partition=\"p\","
				     "role=\"mixed\"} +Inf\n"));
	assert_true(met_get(r, MET_E2E, 0) == 10);
	free(text);
	met_destroy(r);
}

/*
 * Every bound of every histogram: a value exactly on it lands in its bucket,
 * the next double above it in the next bucket.
 */
static void test_boundaries(void **state)
{
	struct met_registry *r;
	int f, b;

	(void)state;
	for (f = 0; f < MET_N_FAMILIES; f++) {
		const struct met_family_desc *d = met_family(f);

		if (d->type != MET_HISTOGRAM)
			continue;
		for (b = 1; b < d->n_bounds; b++)
			assert_true(d->bounds[b] > d->bounds[b - 1]);
		for (b = 0; b < d->n_bounds; b++) {
			double q;

			assert_int_equal(met_create(1, "x", &r), 0);
			assert_int_equal(met_series_add(r, "p", "mixed"), 0);
			met_observe(r, f, 0, d->bounds[b]);
			/* the one observation spans [lower, bound] of bucket b: q=1 gives the bound */
			assert_int_equal(met_quantile(r, f, 0, 1.0, &q), 0);
			assert_true(q == d->bounds[b]);
			met_destroy(r);

			assert_int_equal(met_create(1, "x", &r), 0);
			assert_int_equal(met_series_add(r, "p", "mixed"), 0);
			met_observe(r, f, 0, nextafter(d->bounds[b], INFINITY));
			assert_int_equal(met_quantile(r, f, 0, 1.0, &q), 0);
			if (b + 1 < d->n_bounds)
				assert_true(q == d->bounds[b + 1]);
			else
				assert_true(q ==
					    d->bounds[b]); /* +Inf bucket answers the top bound */
			met_destroy(r);
		}
	}
}

static void test_number_format(void **state)
{
	static const struct {
		double v;
		const char *text;
	} cases[] = {
		{ 0, "0" },
		{ 1, "1" },
		{ -3, "-3" },
		{ 0.1, "0.1" },
		{ 0.25, "0.25" },
		{ 1.0 / 3, "0.3333333333333333" },
		{ 0.1 + 0.2, "0.30000000000000004" },
		{ 1e21, "1e+21" },
		{ 1e-300, "1e-300" },
		{ 9007199254740993.0, "9007199254740992" },
		{ 123456789012.5, "123456789012.5" },
		{ -0.0, "-0" },
		{ INFINITY, "+Inf" },
		{ -INFINITY, "-Inf" },
		{ NAN, "NaN" },
	};
	struct met_registry *r;
	char *text, want[128];
	size_t i;
	unsigned seed = 12345;

	(void)state;
	assert_int_equal(met_create(1, "x", &r), 0);
	assert_int_equal(met_series_add(r, "p", "mixed"), 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		met_set(r, MET_KV_USAGE_RATIO, 0, cases[i].v);
		text = render(r, NULL);
		snprintf(want, sizeof(want),
			 "\nduet_kv_usage_ratio{partition=\"p\",role=\"mixed\"} %s\n",
			 cases[i].text);
		if (!strstr(text, want))
			fail_msg("%.17g not rendered as %s", cases[i].v, cases[i].text);
		validate(text);
		free(text);
	}
	/* random bit patterns round-trip */
	for (i = 0; i < 2000; i++) {
		uint64_t bits = 0;
		double v, got;
		int k;

		for (k = 0; k < 4; k++)
			bits = bits << 16 | (uint64_t)(rand_r(&seed) & 0xffff);
		memcpy(&v, &bits, sizeof(v));
		met_set(r, MET_KV_USAGE_RATIO, 0, v);
		text = render(r, NULL);
		got = sample_value(text, "duet_kv_usage_ratio{partition=\"p\",role=\"mixed\"}");
		if (isnan(v))
			assert_true(isnan(got));
		else if (memcmp(&got, &v, sizeof(v)))
			fail_msg("%a did not round-trip (%a)", v, got);
		free(text);
	}
	met_destroy(r);
}

static void test_enospc(void **state)
{
	struct met_registry *r;
	size_t len = 0, len2 = 0, max;
	char *buf;
	int s;

	(void)state;
	assert_int_equal(met_create(8, "0.1.0", &r), 0);
	for (s = 0; s < 8; s++) {
		char name[16];

		snprintf(name, sizeof(name), "p%d", s);
		assert_int_equal(met_series_add(r, name, s & 1 ? "decode" : "prefill"), s);
		met_set(r, MET_KV_USAGE_RATIO, s, 1.0 / (s + 3));
		met_observe(r, MET_DECODE_TIME, s, 0.123456789 * s);
	}
	assert_int_equal(met_render(r, NULL, 0, &len), -ENOSPC);
	assert_true(len > 1000);
	buf = malloc(len + 1);
	assert_non_null(buf);
	memset(buf, 'X', len + 1);
	assert_int_equal(met_render(r, buf, len, &len2), -ENOSPC); /* no room for the NUL */
	assert_int_equal(len2, len);
	assert_int_equal(met_render(r, buf, 100, &len2), -ENOSPC);
	assert_int_equal(len2, len);
	assert_int_equal(met_render(r, buf, len + 1, &len2), 0);
	assert_int_equal(len2, len);
	assert_int_equal(buf[len], '\0');
	assert_int_equal(strlen(buf), len);
	validate(buf);
	assert_int_equal(met_render(NULL, buf, len + 1, &len2), -EINVAL);
	assert_int_equal(met_render(r, buf, len + 1, NULL), -EINVAL);
	free(buf);

	/* the bound holds with the widest values */
	for (s = 0; s < 8; s++) {
		int f;

		for (f = 0; f < MET_N_FAMILIES; f++) {
			const struct met_family_desc *d = met_family(f);

			if (d->type == MET_GAUGE)
				met_set(r, f, s, -2.2250738585072014e-308);
			else if (d->type == MET_COUNTER && f != MET_REQUEST_SUCCESS)
				met_add(r, f, s, 1.2345678901234567e-300);
			else if (d->type == MET_HISTOGRAM)
				met_observe(r, f, s, -1.2345678901234567e-300);
		}
	}
	max = met_render_max(r);
	assert_int_equal(met_render(r, NULL, 0, &len), -ENOSPC);
	print_message("render: %zu bytes with widest values, bound %zu\n", len, max);
	assert_true(len <= max);
	met_destroy(r);
}

static void test_misuse(void **state)
{
	struct met_registry *r;

	(void)state;
	assert_int_equal(met_create(2, "x", &r), 0);
	assert_int_equal(met_series_add(r, "p", "mixed"), 0);
	met_set(r, MET_PROMPT_TOKENS, 0, 5);	/* counter */
	met_add(r, MET_REQUESTS_RUNNING, 0, 1); /* gauge */
	met_add(r, MET_PROMPT_TOKENS, 0, -1);	/* counters only rise */
	met_add(r, MET_PROMPT_TOKENS, 0, NAN);
	met_add(r, MET_REQUEST_SUCCESS, 0, 1); /* needs met_finish */
	met_add(r, MET_PROMPT_TOKENS, 1, 1);   /* series 1 not registered */
	met_set(r, MET_BUILD_INFO, 0, 2);      /* constant */
	met_observe(r, MET_TTFT, -1, 1);
	met_observe(r, MET_REQUESTS_RUNNING, 0, 1);
	met_finish(r, 0, MET_N_FINISH);
	met_finish(r, 3, MET_FINISH_STOP);
	met_set(r, MET_N_FAMILIES, 0, 1);
	assert_int_equal(met_misuse(r), 12);
	assert_true(met_get(r, MET_PROMPT_TOKENS, 0) == 0);
	assert_true(met_get(r, MET_BUILD_INFO, 0) == 1);
	assert_true(isnan(met_get(r, MET_PROMPT_TOKENS, 1)));
	assert_true(isnan(met_get(r, MET_N_FAMILIES, 0)));
	assert_true(isnan(met_get_finish(r, 0, MET_N_FINISH)));
	met_set(r, MET_UP, 99, 0); /* unlabelled: series ignored */
	assert_true(met_get(r, MET_UP, MET_ALL) == 0);
	assert_int_equal(met_misuse(r), 12);
	assert_null(met_family(MET_N_FAMILIES));
	assert_null(met_finish_name(MET_N_FINISH));
	assert_string_equal(met_finish_name(MET_FINISH_ABORT), "abort");
	met_destroy(r);
}

static void test_quantile(void **state)
{
	static const double bounds[] = { 1, 2, 3, 4 };
	uint64_t flat[] = { 10, 10, 10, 10, 0 };
	uint64_t inf[] = { 0, 0, 0, 0, 5 };
	uint64_t gap[] = { 0, 4, 0, 4, 0 };
	static const double neg_bounds[] = { -1, 0, 1 };
	uint64_t neg[] = { 4, 0, 0, 0 };
	struct met_registry *r;
	double q;
	int i;

	(void)state;
	/* uniform over [0, 4] */
	assert_true(met_bucket_quantile(bounds, flat, 4, 0.25) == 1);
	assert_true(met_bucket_quantile(bounds, flat, 4, 0.5) == 2);
	assert_true(fabs(met_bucket_quantile(bounds, flat, 4, 0.9) - 3.6) < 1e-12);
	assert_true(fabs(met_bucket_quantile(bounds, flat, 4, 0.99) - 3.96) < 1e-12);
	assert_true(met_bucket_quantile(bounds, flat, 4, 0) == 0);
	assert_true(met_bucket_quantile(bounds, flat, 4, 1) == 4);
	/* everything above the top bound: the top bound */
	assert_true(met_bucket_quantile(bounds, inf, 4, 0.5) == 4);
	/* empty buckets are skipped: q=0.5 ends bucket (1,2], q=0.75 is inside (3,4] */
	assert_true(met_bucket_quantile(bounds, gap, 4, 0.5) == 2);
	assert_true(met_bucket_quantile(bounds, gap, 4, 0.75) == 3.5);
	assert_true(met_bucket_quantile(bounds, gap, 4, 0) == 1);
	/* a first bound <= 0 answers itself */
	assert_true(met_bucket_quantile(neg_bounds, neg, 3, 0.5) == -1);
	assert_true(isnan(met_bucket_quantile(bounds, flat, 4, 1.5)));
	assert_true(isnan(met_bucket_quantile(bounds, flat, 4, NAN)));
	assert_true(isnan(met_bucket_quantile(bounds, (uint64_t[5]){ 0 }, 4, 0.5)));

	/* 1000 inter-token latencies spread evenly over (0, 1] s */
	assert_int_equal(met_create(2, "x", &r), 0);
	assert_int_equal(met_series_add(r, "a", "mixed"), 0);
	assert_int_equal(met_series_add(r, "b", "mixed"), 1);
	assert_int_equal(met_quantile(r, MET_INTER_TOKEN, 0, 0.5, &q), -ENODATA);
	for (i = 1; i <= 1000; i++)
		met_observe(r, MET_INTER_TOKEN, i & 1, i / 1000.0);
	assert_int_equal(met_quantile(r, MET_INTER_TOKEN, MET_ALL, 0.5, &q), 0);
	assert_true(fabs(q - 0.5) < 1e-9);
	assert_int_equal(met_quantile(r, MET_INTER_TOKEN, MET_ALL, 0.9, &q), 0);
	assert_true(fabs(q - 0.9) < 1e-9);
	assert_int_equal(met_quantile(r, MET_INTER_TOKEN, MET_ALL, 0.99, &q), 0);
	assert_true(fabs(q - 0.99) < 1e-9);
	/* one series holds the even thousandths: same shape within a bucket's resolution */
	assert_int_equal(met_quantile(r, MET_INTER_TOKEN, 0, 0.5, &q), 0);
	assert_true(fabs(q - 0.5) < 0.01);
	assert_true(met_get(r, MET_INTER_TOKEN, MET_ALL) == 1000);
	assert_true(met_get(r, MET_INTER_TOKEN, 1) == 500);
	assert_int_equal(met_quantile(r, MET_REQUESTS_RUNNING, 0, 0.5, &q), -EINVAL);
	assert_int_equal(met_quantile(r, MET_INTER_TOKEN, 2, 0.5, &q), -EINVAL);
	assert_int_equal(met_quantile(r, MET_INTER_TOKEN, 0, -0.1, &q), -EINVAL);
	assert_int_equal(met_quantile(r, MET_INTER_TOKEN, 0, 0.5, NULL), -EINVAL);
	met_destroy(r);

	/* TTFT exponential with mean 0.2 s (deterministic quantiles of the law) */
	assert_int_equal(met_create(1, "x", &r), 0);
	assert_int_equal(met_series_add(r, "a", "mixed"), 0);
	for (i = 0; i < 100000; i++)
		met_observe(r, MET_TTFT, 0, -0.2 * log(1 - (i + 0.5) / 100000.0));
	assert_int_equal(met_quantile(r, MET_TTFT, 0, 0.5, &q), 0);
	print_message("ttft exp(mean 0.2): p50 %.4f (true %.4f)", q, 0.2 * log(2));
	assert_true(fabs(q - 0.2 * log(2)) < 0.02); /* bucket (0.1, 0.25] */
	assert_int_equal(met_quantile(r, MET_TTFT, 0, 0.99, &q), 0);
	print_message(", p99 %.4f (true %.4f)\n", q, 0.2 * log(100));
	assert_true(q > 0.75 && q <= 1.0); /* in the right bucket (0.75, 1] */
	met_destroy(r);
}

static void test_counts_and_finish(void **state)
{
	struct met_registry *r;

	(void)state;
	assert_int_equal(met_create(3, "x", &r), 0);
	assert_int_equal(met_series_add(r, "a", "prefill"), 0);
	assert_int_equal(met_series_add(r, "b", "decode"), 1);
	met_add(r, MET_GENERATION_TOKENS, 0, 5);
	met_add(r, MET_GENERATION_TOKENS, 1, 7);
	met_finish(r, 0, MET_FINISH_ABORT);
	met_finish(r, 1, MET_FINISH_ABORT);
	met_finish(r, 1, MET_FINISH_STOP);
	assert_true(met_get(r, MET_GENERATION_TOKENS, MET_ALL) == 12);
	assert_true(met_get(r, MET_GENERATION_TOKENS, 1) == 7);
	assert_true(met_get(r, MET_REQUEST_SUCCESS, MET_ALL) == 3);
	assert_true(met_get_finish(r, MET_ALL, MET_FINISH_ABORT) == 2);
	assert_true(met_get_finish(r, 1, MET_FINISH_STOP) == 1);
	assert_true(met_get_finish(r, 0, MET_FINISH_STOP) == 0);
	met_destroy(r);
}

static void test_alloc_failures(void **state)
{
	struct met_registry *r = NULL;
	unsigned long n;
	int rc = -ENOMEM;

	(void)state;
	for (n = 1; n < 100; n++) {
		duet_mem_fail_at(n);
		rc = met_create(16, "x", &r);
		duet_mem_fail_at(0);
		if (rc == 0)
			break;
		assert_int_equal(rc, -ENOMEM);
		assert_null(r);
	}
	assert_int_equal(rc, 0);
	print_message("met_create: %lu allocation failure points, all -ENOMEM\n", n - 1);
	assert_true(n > 3);
	/* updates and render allocate nothing */
	assert_int_equal(met_series_add(r, "p", "mixed"), 0);
	duet_mem_fail_at(1);
	met_observe(r, MET_TTFT, 0, 0.5);
	met_add(r, MET_PROMPT_TOKENS, 0, 3);
	{
		size_t len;
		char buf[65536];

		assert_int_equal(met_render(r, buf, sizeof(buf), &len), 0);
	}
	assert_int_equal(duet_mem_fail_at(0), 0);
	met_destroy(r);
}

static uint64_t clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void test_render_64(void **state)
{
	struct met_registry *r;
	size_t len = 0, max;
	char *buf;
	uint64_t t0, t1;
	unsigned seed = 7;
	int s, f, k, iters = 50;

	(void)state;
	assert_int_equal(met_create(64, "0.1.0", &r), 0);
	for (s = 0; s < 64; s++) {
		char name[16];

		snprintf(name, sizeof(name), "part%02d", s);
		assert_int_equal(met_series_add(r, name, s % 3 ? "decode" : "prefill"), s);
		for (f = 0; f < MET_N_FAMILIES; f++) {
			const struct met_family_desc *d = met_family(f);

			if (d->type == MET_GAUGE && d->labels == MET_LABELS_PART)
				met_set(r, f, s, rand_r(&seed) % 4096);
			else if (d->type == MET_COUNTER && f != MET_REQUEST_SUCCESS)
				met_add(r, f, s, rand_r(&seed) % 1000000);
			else if (d->type == MET_HISTOGRAM)
				for (k = 0; k < 200; k++)
					met_observe(r, f, s, (rand_r(&seed) % 100000) / 997.0);
		}
		met_set(r, MET_KV_USAGE_RATIO, s, (rand_r(&seed) % 1000) / 999.0);
		for (k = 0; k < MET_N_FINISH; k++)
			met_finish(r, s, k);
	}
	assert_int_equal(met_misuse(r), 0);
	max = met_render_max(r);
	buf = malloc(max + 1);
	assert_non_null(buf);
	assert_int_equal(met_render(r, buf, max + 1, &len), 0);
	assert_int_equal(validate(buf), 2 + 64 * (20 + 25 + 22 + 24 * 4 + 19 + 19));
	t0 = clock_ns();
	for (k = 0; k < iters; k++)
		assert_int_equal(met_render(r, buf, max + 1, &len), 0);
	t1 = clock_ns();
	print_message("render: 64 partitions, %zu bytes (bound %zu), %.1f us per render\n", len,
		      max, (double)(t1 - t0) / iters / 1000.0);
	free(buf);
	met_destroy(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_validator),
		cmocka_unit_test(test_empty_exact),
		cmocka_unit_test(test_small_exact),
		cmocka_unit_test(test_transport_exact),
		cmocka_unit_test(test_transport_errors),
		cmocka_unit_test(test_label_escaping),
		cmocka_unit_test(test_series_add_errors),
		cmocka_unit_test(test_histogram_buckets),
		cmocka_unit_test(test_boundaries),
		cmocka_unit_test(test_number_format),
		cmocka_unit_test(test_enospc),
		cmocka_unit_test(test_misuse),
		cmocka_unit_test(test_quantile),
		cmocka_unit_test(test_counts_and_finish),
		cmocka_unit_test(test_alloc_failures),
		cmocka_unit_test(test_render_64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
