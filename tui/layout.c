// SPDX-License-Identifier: MIT
/*
 * layout — column widths and panel heights (see layout.h).
 */
#include "tui/layout.h"

#include <stdbool.h>

/* Index of the shown item with the highest prio (the last such one), or -1. */
static int worst(const int *prio, const bool *shown, int n)
{
	int k = -1;

	for (int i = 0; i < n; i++)
		if (shown[i] && prio[i] > 0 && (k < 0 || prio[i] >= prio[k]))
			k = i;
	return k;
}

/*
 * The shared algorithm: N items with MIN, WANT, FLEX and PRIO share TOTAL
 * cells, GAP cells between two shown ones.  Fills OUT; returns the number
 * shown.
 */
static int share(const int *min, const int *want, const int *flex, const int *prio, int n,
		 int total, int gap, bool essential_want, int *out)
{
	bool shown[64];
	int used, shown_n = 0, left, flex_sum = 0;

	if (n > 64)
		n = 64;
	for (int i = 0; i < n; i++) {
		shown[i] = min[i] > 0;
		out[i] = 0;
	}
	for (;;) {
		int k, need = 0;

		used = 0;
		shown_n = 0;
		for (int i = 0; i < n; i++) {
			if (!shown[i])
				continue;
			used += min[i] + (shown_n ? gap : 0);
			need += (prio[i] == 0 && essential_want ? want[i] : min[i]) +
				(shown_n ? gap : 0);
			shown_n++;
		}
		k = worst(prio, shown, n);
		/* Optional items give way until the essential ones have their want. */
		if (used <= total && (need <= total || k < 0))
			break;
		if (k < 0) { /* only never-dropped items left: drop from the end */
			for (k = n - 1; k >= 0 && !shown[k]; k--)
				;
			if (k < 0)
				break;
		}
		shown[k] = false;
	}
	if (total <= 0 || shown_n == 0)
		return 0;
	left = total - used;
	for (int i = 0; i < n; i++)
		if (shown[i])
			out[i] = min[i];
	/* Grow towards want, most important first (prio 0, 1, ...). */
	for (int p = 0; left > 0 && p <= 64; p++) {
		for (int i = 0; i < n && left > 0; i++) {
			int more;

			if (!shown[i] || (prio[i] < 64 ? prio[i] : 64) != p)
				continue;
			more = want[i] - out[i];
			if (more > left)
				more = left;
			if (more > 0) {
				out[i] += more;
				left -= more;
			}
		}
	}
	for (int i = 0; i < n; i++)
		if (shown[i])
			flex_sum += flex[i];
	if (left > 0 && flex_sum > 0) {
		int given = 0, last = -1;

		for (int i = 0; i < n; i++) {
			int add;

			if (!shown[i] || !flex[i])
				continue;
			add = left * flex[i] / flex_sum;
			out[i] += add;
			given += add;
			last = i;
		}
		out[last] += left - given; /* rounding leftovers to the last flex item */
	}
	return shown_n;
}

int layout_columns(const struct layout_col *cols, int n, int width, int *w)
{
	int min[64], want[64], flex[64], prio[64];

	if (n > 64)
		n = 64;
	for (int i = 0; i < n; i++) {
		min[i] = cols[i].min > 0 ? cols[i].min : 1;
		want[i] = cols[i].pref > min[i] ? cols[i].pref : min[i];
		flex[i] = cols[i].flex;
		prio[i] = cols[i].prio;
	}
	return share(min, want, flex, prio, n, width, 1, true, w);
}

int layout_rows(const struct layout_row *rows, int n, int total, int *h)
{
	int min[64], want[64], flex[64], prio[64];

	if (n > 64)
		n = 64;
	for (int i = 0; i < n; i++) {
		min[i] = rows[i].min;
		want[i] = rows[i].want > rows[i].min ? rows[i].want : rows[i].min;
		flex[i] = rows[i].flex;
		prio[i] = rows[i].prio;
	}
	return share(min, want, flex, prio, n, total, 0, false, h);
}
