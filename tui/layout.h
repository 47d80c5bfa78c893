/* SPDX-License-Identifier: MIT */
/*
 * layout — the console's geometry, in terminal cells: which table columns
 * fit a width and how wide each is, and how the panels share the rows.
 * Pure arithmetic, tested at many terminal sizes.
 */
#ifndef DUET_TUI_LAYOUT_H
#define DUET_TUI_LAYOUT_H

struct layout_rect {
	int x, y, w, h;
};

/* A table column. */
struct layout_col {
	const char *title;
	int min;   /* narrowest it is useful at (>= 1) */
	int pref;  /* what it gets when there is room (>= min) */
	int prio;  /* 0 is never dropped; higher numbers are dropped first */
	int flex;  /* share of the space left over after every pref (0: none) */
	int right; /* right-aligned (numbers) */
};

/*
 * Widths for N columns in WIDTH cells with one blank between columns, into
 * W (0 for a dropped column).  Columns are dropped, highest prio first,
 * until the minimums fit and the prio-0 columns fit at their pref (so the
 * essential columns are never squeezed to show optional ones); then each
 * visible column grows towards its pref
 * (lowest prio first), then flex columns share what is left.  The visible
 * widths plus the gaps never exceed WIDTH, and never exceed it by growing.
 * Returns the number of visible columns.
 */
int layout_columns(const struct layout_col *cols, int n, int width, int *w);

/* A panel's claim on the rows of a column of panels. */
struct layout_row {
	int min;  /* fewest rows it is drawn with; below that it is hidden (0 rows) */
	int want; /* what it asks for (>= min) */
	int flex; /* takes the rows left over (share) */
	int prio; /* 0 is kept longest; higher numbers are hidden first when rows are short */
};

/*
 * Rows for N panels stacked in TOTAL rows, into H.  Panels are hidden,
 * highest prio first, until the minimums fit; then each grows towards its
 * want in order, then flex panels share the rest.  Sum of H <= TOTAL.
 * Returns the number of panels shown.
 */
int layout_rows(const struct layout_row *rows, int n, int total, int *h);

#endif /* DUET_TUI_LAYOUT_H */
