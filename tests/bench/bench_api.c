// SPDX-License-Identifier: MIT
/*
 * API benchmark: requests/s and latency percentiles over api.sock.
 *
 *   bench_api SOCKET health      CONNS REQUESTS
 *   bench_api SOCKET complete1   CONNS REQUESTS   (1-token completions, "Hello")
 *   bench_api SOCKET delivery    STREAMS TOKENS   (then token-delivery quantiles from /metrics)
 *
 * Each connection is a thread with one keep-alive connection sending its
 * share of the requests back to back.  Latency is per request, from the
 * first byte written to the last byte of the answer read.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *sock_path;
static const char *mode;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int conn_open(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		fprintf(stderr, "bench_api: connect %s: %s\n", sock_path, strerror(errno));
		exit(1);
	}
	return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0) {
			fprintf(stderr, "bench_api: write: %s\n", strerror(errno));
			exit(1);
		}
		p += w;
		n -= (size_t)w;
	}
}

/* Read one answer with a Content-Length body; returns the HTTP status. */
static int read_answer(int fd, char *buf, size_t cap, size_t *body_len)
{
	size_t have = 0, need = 0;
	char *hdr_end = NULL;
	int status = 0;

	for (;;) {
		ssize_t r = read(fd, buf + have, cap - 1 - have);

		if (r <= 0) {
			fprintf(stderr, "bench_api: connection closed after %zu bytes\n", have);
			exit(1);
		}
		have += (size_t)r;
		buf[have] = '\0';
		if (!hdr_end && (hdr_end = strstr(buf, "\r\n\r\n"))) {
			const char *cl = strcasestr(buf, "\r\nContent-Length:");

			sscanf(buf, "HTTP/1.1 %d", &status);
			need = (size_t)(hdr_end + 4 - buf) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
		}
		if (hdr_end && have >= need)
			break;
		if (have + 1 >= cap) {
			fprintf(stderr, "bench_api: answer too large\n");
			exit(1);
		}
	}
	*body_len = need - (size_t)(hdr_end + 4 - buf);
	return status;
}

struct worker {
	pthread_t th;
	int n;
	double *lat;
	int errors;
};

static const char *request_text(size_t *len)
{
	static char req[512];
	static const char body[] = "{\"model\":\"m\",\"prompt\":\"Hello\",\"max_tokens\":1,\"temperature\":0}";

	if (!strcmp(mode, "health"))
		*len = (size_t)snprintf(req, sizeof(req), "GET /health HTTP/1.1\r\nHost: duet\r\n\r\n");
	else
		*len = (size_t)snprintf(req, sizeof(req),
					"POST /v1/completions HTTP/1.1\r\nHost: duet\r\n"
					"Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
					strlen(body), body);
	return req;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	char buf[16384];
	size_t len, blen;
	const char *req = request_text(&len);
	int fd = conn_open();

	for (int i = 0; i < w->n; i++) {
		double t0 = now_ms();

		write_all(fd, req, len);
		if (read_answer(fd, buf, sizeof(buf), &blen) != 200)
			w->errors++;
		w->lat[i] = now_ms() - t0;
	}
	close(fd);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double q)
{
	int i = (int)ceil(q * n) - 1;

	return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Quantile q of a Prometheus histogram given as (upper bound, cumulative count) pairs. */
static double hist_q(const double *le, const double *cum, int nb, double q)
{
	double total = cum[nb - 1], want = q * total, lo = 0, prev = 0;

	for (int i = 0; i < nb; i++) {
		if (cum[i] >= want) {
			if (isinf(le[i]))
				return lo;
			return lo + (le[i] - lo) * (cum[i] > prev ? (want - prev) / (cum[i] - prev) : 0);
		}
		lo = le[i];
		prev = cum[i];
	}
	return lo;
}

static int delivery(int streams, int tokens)
{
	static char buf[1 << 20];
	char req[1024], body[256];
	double le[64], cum[64];
	int nb = 0;
	size_t blen;
	double t0 = now_ms();

	snprintf(body, sizeof(body),
		 "{\"model\":\"m\",\"prompt\":\"Hello\",\"max_tokens\":%d,\"stream\":true,"
		 "\"temperature\":0}",
		 tokens);
	for (int s = 0; s < streams; s++) {
		int fd = conn_open();
		size_t len = (size_t)snprintf(req, sizeof(req),
					      "POST /v1/completions HTTP/1.1\r\nHost: duet\r\n"
					      "Connection: close\r\nContent-Type: application/json\r\n"
					      "Content-Length: %zu\r\n\r\n%s",
					      strlen(body), body);

		write_all(fd, req, len);
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		close(fd);
	}
	printf("delivery: %d streams of %d tokens in %.0f ms\n", streams, tokens, now_ms() - t0);
	{
		int fd = conn_open();
		const char *get = "GET /metrics HTTP/1.1\r\nHost: duet\r\n\r\n";

		write_all(fd, get, strlen(get));
		read_answer(fd, buf, sizeof(buf), &blen);
		close(fd);
	}
	for (char *l = strstr(buf, "\nduet_token_delivery_seconds_bucket{"); l && nb < 64;
	     l = strstr(l + 1, "\nduet_token_delivery_seconds_bucket{")) {
		char *p = strstr(l, ",le=\"");

		if (!p)
			break;
		le[nb] = strncmp(p + 5, "+Inf", 4) ? strtod(p + 5, NULL) : INFINITY;
		cum[nb] = strtod(strchr(p, '}') + 1, NULL);
		nb++;
	}
	if (!nb || cum[nb - 1] == 0) {
		fprintf(stderr, "bench_api: no duet_token_delivery_seconds samples in /metrics\n");
		return 1;
	}
	printf("token sampled -> SSE frame written: %.0f tokens, p50 %.1f us, p90 %.1f us, p99 %.1f us "
	       "(from histogram buckets)\n",
	       cum[nb - 1], hist_q(le, cum, nb, 0.5) * 1e6, hist_q(le, cum, nb, 0.9) * 1e6,
	       hist_q(le, cum, nb, 0.99) * 1e6);
	return 0;
}

int main(int argc, char **argv)
{
	struct worker *w;
	int conns, total, errors = 0, n = 0;
	double *all, t0, t1;

	if (argc != 5) {
		fprintf(stderr, "usage: bench_api SOCKET health|complete1|delivery CONNS|STREAMS "
				"REQUESTS|TOKENS\n");
		return 2;
	}
	sock_path = argv[1];
	mode = argv[2];
	conns = atoi(argv[3]);
	total = atoi(argv[4]);
	if (conns < 1 || conns > 256 || total < 1)
		return 2;
	if (!strcmp(mode, "delivery"))
		return delivery(conns, total);
	if (strcmp(mode, "health") && strcmp(mode, "complete1"))
		return 2;
	w = calloc((size_t)conns, sizeof(*w));
	all = calloc((size_t)total, sizeof(*all));
	for (int i = 0; i < conns; i++) {
		w[i].n = total / conns + (i < total % conns);
		w[i].lat = calloc((size_t)w[i].n + 1, sizeof(double));
	}
	t0 = now_ms();
	for (int i = 0; i < conns; i++)
		pthread_create(&w[i].th, NULL, run, &w[i]);
	for (int i = 0; i < conns; i++)
		pthread_join(w[i].th, NULL);
	t1 = now_ms();
	for (int i = 0; i < conns; i++) {
		memcpy(all + n, w[i].lat, (size_t)w[i].n * sizeof(double));
		n += w[i].n;
		errors += w[i].errors;
		free(w[i].lat);
	}
	qsort(all, (size_t)n, sizeof(double), cmp);
	printf("%-10s %3d conn: %6d requests in %7.1f ms = %8.0f req/s; latency p50 %.3f ms, p90 "
	       "%.3f ms, p99 %.3f ms; %d non-200\n",
	       mode, conns, n, t1 - t0, n / ((t1 - t0) / 1e3), pct(all, n, 0.5), pct(all, n, 0.9),
	       pct(all, n, 0.99), errors);
	free(all);
	free(w);
	return errors ? 1 : 0;
}
