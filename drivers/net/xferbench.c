// SPDX-License-Identifier: MIT
/*
 * duet-xferbench: bandwidth and latency of one-sided writes (like
 * ib_write_bw), for the shm and tcp drivers next to a plain memcpy baseline
 * measured in the same run.
 *
 * Each thread owns an endpoint pair (sender and receiver in this process;
 * shm maps the receiver's memfd a second time, as the prefill process
 * would) and keeps `batch` writes in flight, each write going to the next
 * slot of a 64 MiB destination region.  The memcpy baseline copies the same
 * sizes into the same slot pattern.  Latency is post -> send completion.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "drivers/net/xfer.h"
#include "runtime/core/log.h"

#define MAX_THREADS 16
#define DST_BYTES (64ul << 20)
#define MAX_SAMPLES (1u << 18)

struct bench_cfg {
	double duration; /* seconds per (driver, size) */
	unsigned batch;
	unsigned threads;
	bool json;
	bool hugepages;
};

struct result {
	uint64_t bytes;
	double secs;
	double *lat_us; /* samples */
	size_t n_lat;
	int err;
};

struct job {
	const struct bench_cfg *cfg;
	const char *driver; /* NULL: memcpy */
	size_t size;
	struct result res;
	pthread_barrier_t *start;
};

static const uint8_t bench_psk[] = "duet-xferbench-ephemeral-key-0123456789";

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void add_lat(struct result *r, double us)
{
	if (r->n_lat < MAX_SAMPLES)
		r->lat_us[r->n_lat++] = us;
}

/* Page-aligned and populated, like a driver's region (malloc's 16-byte offset skews memcpy). */
static uint8_t *pages(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void run_memcpy(struct job *j)
{
	size_t slots = DST_BYTES / j->size ? DST_BYTES / j->size : 1;
	uint8_t *src = pages(j->size), *dst = pages(slots * j->size);
	double t0, t, end;
	size_t slot = 0;

	if (!src || !dst) {
		j->res.err = -ENOMEM;
		goto out;
	}
	memset(src, 1, j->size);
	pthread_barrier_wait(j->start);
	t0 = now_s();
	end = t0 + j->cfg->duration;
	do {
		double a = now_s();
		memcpy(dst + slot * j->size, src, j->size);
		__asm__ volatile("" : : "r"(dst) : "memory");
		t = now_s();
		add_lat(&j->res, (t - a) * 1e6);
		j->res.bytes += j->size;
		slot = (slot + 1) % slots;
	} while (t < end || j->res.n_lat < 3);
	j->res.secs = t - t0;
out:
	if (src)
		munmap(src, j->size);
	if (dst)
		munmap(dst, slots * j->size);
}

struct side {
	struct xfer_dev *dev;
	struct xfer_mr *mr;
	struct xfer_ep *ep;
};

static void side_close(struct side *s)
{
	xfer_ep_destroy(s->ep);
	xfer_mr_dereg(s->mr);
	xfer_close(s->dev);
}

static int side_open(struct side *s, const char *driver, size_t bytes, bool huge)
{
	struct xfer_opts o = {
		.depth = 64, .hugepages = huge, .psk = bench_psk, .psk_len = sizeof(bench_psk) - 1
	};
	int ret;

	memset(s, 0, sizeof(*s));
	ret = xfer_open(driver, &o, &s->dev);
	if (ret == 0)
		ret = xfer_mr_alloc(s->dev, bytes, &s->mr);
	if (ret == 0)
		ret = xfer_ep_create(s->dev, &s->ep);
	return ret;
}

static void run_xfer(struct job *j)
{
	size_t slots = DST_BYTES / j->size ? DST_BYTES / j->size : 1;
	struct side snd, rcv;
	struct xfer_desc ds, dr;
	double *posted = calloc(j->cfg->batch, sizeof(double));
	unsigned inflight = 0;
	uint64_t next_id = 0;
	size_t slot = 0;
	double t0, t = 0, end;
	int ret;

	ret = side_open(&snd, j->driver, j->size, j->cfg->hugepages);
	if (ret == 0)
		ret = side_open(&rcv, j->driver, slots * j->size, j->cfg->hugepages);
	if (ret == 0)
		ret = xfer_local_desc(snd.ep, &ds);
	if (ret == 0)
		ret = xfer_local_desc(rcv.ep, &dr);
	if (ret == 0)
		ret = xfer_connect(snd.ep, &dr);
	if (ret == 0)
		ret = xfer_connect(rcv.ep, &ds);
	if (ret || !posted) {
		j->res.err = ret ? ret : -ENOMEM;
		pthread_barrier_wait(j->start);
		goto out;
	}
	memset(xfer_mr_base(snd.mr), 1, j->size);
	pthread_barrier_wait(j->start);
	t0 = now_s();
	end = t0 + j->cfg->duration;
	for (;;) {
		struct xfer_wc wc[16];
		bool more = (t = now_s()) < end || next_id < 3;
		int n;

		while (more && inflight < j->cfg->batch) {
			struct xfer_sge sg = { .mr = snd.mr, .offset = 0, .len = j->size };
			struct xfer_write w = { .wr_id = next_id,
						.sg = &sg,
						.nsg = 1,
						.remote_region = xfer_mr_id(rcv.mr),
						.remote_offset = slot * j->size };
			posted[next_id % j->cfg->batch] = now_s();
			ret = xfer_post_write(snd.ep, &w);
			if (ret == -EAGAIN)
				break;
			if (ret) {
				j->res.err = ret;
				goto out;
			}
			next_id++;
			inflight++;
			slot = (slot + 1) % slots;
		}
		if (!more && inflight == 0)
			break;
		n = xfer_poll(snd.ep, wc, 16);
		if (n < 0) {
			j->res.err = n;
			goto out;
		}
		t = now_s();
		for (int i = 0; i < n; i++) {
			if (wc[i].status != XFER_WC_OK) {
				j->res.err = -EIO;
				goto out;
			}
			add_lat(&j->res, (t - posted[wc[i].wr_id % j->cfg->batch]) * 1e6);
			j->res.bytes += j->size;
			inflight--;
		}
		/* tcp: the receiver's thread does the work; nothing to poll there. */
	}
	j->res.secs = t - t0;
out:
	free(posted);
	side_close(&snd);
	side_close(&rcv);
}

static void *job_main(void *arg)
{
	struct job *j = arg;

	if (j->driver)
		run_xfer(j);
	else
		run_memcpy(j);
	return NULL;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct row {
	double gbps, p50, p99;
	int err;
};

static struct row measure(const struct bench_cfg *cfg, const char *driver, size_t size)
{
	struct job jobs[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	pthread_barrier_t bar;
	struct row row = { 0 };
	double *all;
	size_t n = 0;
	uint64_t bytes = 0;
	double secs = 0;

	all = malloc(sizeof(double) * MAX_SAMPLES * cfg->threads);
	pthread_barrier_init(&bar, NULL, cfg->threads);
	for (unsigned i = 0; i < cfg->threads; i++) {
		jobs[i] = (struct job){ .cfg = cfg, .driver = driver, .size = size, .start = &bar };
		jobs[i].res.lat_us = malloc(sizeof(double) * MAX_SAMPLES);
		pthread_create(&th[i], NULL, job_main, &jobs[i]);
	}
	for (unsigned i = 0; i < cfg->threads; i++) {
		pthread_join(th[i], NULL);
		if (jobs[i].res.err)
			row.err = jobs[i].res.err;
		bytes += jobs[i].res.bytes;
		if (jobs[i].res.secs > secs)
			secs = jobs[i].res.secs;
		if (all)
			memcpy(all + n, jobs[i].res.lat_us, jobs[i].res.n_lat * sizeof(double));
		n += jobs[i].res.n_lat;
		free(jobs[i].res.lat_us);
	}
	pthread_barrier_destroy(&bar);
	if (all && n && !row.err) {
		qsort(all, n, sizeof(double), cmp_d);
		row.p50 = all[n / 2];
		row.p99 = all[(size_t)((double)(n - 1) * 0.99)];
		row.gbps = secs > 0 ? (double)bytes / secs / 1e9 : 0;
	}
	free(all);
	return row;
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (end == s)
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	if (*end || v == 0 || v > DST_BYTES)
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

static void usage(FILE *fp)
{
	fprintf(fp, "usage: duet-xferbench [options]\n"
		    "  -d, --driver LIST    shm,tcp (default both; memcpy is always measured)\n"
		    "  -s, --min-size SIZE  smallest write (default 4K)\n"
		    "  -S, --max-size SIZE  largest write (default 64M); sizes go up by 4x\n"
		    "  -b, --batch N        writes in flight per thread (default 8)\n"
		    "  -t, --threads N      threads, each with its own endpoint pair (default 1)\n"
		    "  -D, --duration SEC   seconds per driver and size (default 1)\n"
		    "  -H, --hugepages      shm regions on 2 MiB pages (falls back when none)\n"
		    "  -j, --json           one JSON document instead of the table\n");
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "driver", required_argument, NULL, 'd' },
		{ "min-size", required_argument, NULL, 's' },
		{ "max-size", required_argument, NULL, 'S' },
		{ "batch", required_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 't' },
		{ "duration", required_argument, NULL, 'D' },
		{ "hugepages", no_argument, NULL, 'H' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench_cfg cfg = { .duration = 1.0, .batch = 8, .threads = 1 };
	const char *drivers = "shm,tcp";
	size_t min = 4096, max = 64ul << 20;
	bool first = true;
	int c;

	while ((c = getopt_long(argc, argv, "d:s:S:b:t:D:Hjh", lopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			drivers = optarg;
			break;
		case 's':
		case 'S':
			if (parse_size(optarg, c == 's' ? &min : &max)) {
				fprintf(stderr,
					"duet-xferbench: bad size '%s' (e.g. 4K, 1M, up to 64M)\n",
					optarg);
				return 2;
			}
			break;
		case 'b':
			cfg.batch = (unsigned)atoi(optarg);
			break;
		case 't':
			cfg.threads = (unsigned)atoi(optarg);
			break;
		case 'D':
			cfg.duration = atof(optarg);
			break;
		case 'H':
			cfg.hugepages = true;
			break;
		case 'j':
			cfg.json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (cfg.batch < 1 || cfg.batch > 64 || cfg.threads < 1 || cfg.threads > MAX_THREADS ||
	    cfg.duration <= 0 || min > max) {
		fprintf(stderr,
			"duet-xferbench: batch 1..64, threads 1..%d, duration > 0, min <= max\n",
			MAX_THREADS);
		return 2;
	}
	duet_log_set_ident("duet-xferbench");
	if (cfg.json)
		printf("{\"batch\": %u, \"threads\": %u, \"duration_s\": %g, \"results\": [",
		       cfg.batch, cfg.threads, cfg.duration);
	else
		printf("%-8s %10s %6s %4s %9s %9s %10s %10s\n", "driver", "size", "batch", "thr",
		       "GB/s", "%memcpy", "p50_us", "p99_us");
	for (size_t size = min; size <= max; size *= 4) {
		struct row base = measure(&cfg, NULL, size);
		const char *names[] = { "memcpy", "shm", "tcp" };

		for (int d = 0; d < 3; d++) {
			struct row r = base;
			if (d > 0) {
				if (!strstr(drivers, names[d]))
					continue;
				r = measure(&cfg, names[d], size);
			}
			if (cfg.json) {
				printf("%s\n  {\"driver\": \"%s\", \"size\": %zu, \"gbps\": %.3f, "
				       "\"pct_memcpy\": %.1f, \"p50_us\": %.2f, \"p99_us\": %.2f, "
				       "\"error\": %d}",
				       first ? "" : ",", names[d], size, r.gbps,
				       base.gbps > 0 ? 100 * r.gbps / base.gbps : 0, r.p50, r.p99,
				       r.err);
				first = false;
			} else if (r.err) {
				printf("%-8s %9zuK %6u %4u  failed: %s\n", names[d], size >> 10,
				       cfg.batch, cfg.threads, strerror(-r.err));
			} else {
				printf("%-8s %9zuK %6u %4u %9.2f %8.1f%% %10.1f %10.1f\n", names[d],
				       size >> 10, cfg.batch, cfg.threads, r.gbps,
				       base.gbps > 0 ? 100 * r.gbps / base.gbps : 0, r.p50, r.p99);
			}
			fflush(stdout);
		}
	}
	if (cfg.json)
		printf("\n]}\n");
	return 0;
}
