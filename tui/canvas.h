/* SPDX-License-Identifier: MIT */
/*
 * canvas — a grid of cells (a code point and an attribute each) that the
 * panels draw on.  screen.c copies it to the terminal through curses;
 * canvas_text() renders it as plain text for --once and the tests.  Every
 * drawing call clips to the grid, so panels never need to.
 *
 * Glyphs: with utf8 set, bars and sparklines use block elements (▁▂▃▄▅▆▇█)
 * and lines use box drawing; without, ASCII stand-ins.  Each code point is
 * one column (the console only draws text that holds for).
 */
#ifndef DUET_TUI_CANVAS_H
#define DUET_TUI_CANVAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Attributes: a style in the low bits, a colour pair in bits 4..7. */
enum {
	CA_BOLD = 1 << 0,
	CA_REVERSE = 1 << 1,
	CA_DIM = 1 << 2,
	CA_UNDERLINE = 1 << 3,
};
enum canvas_color {
	CC_DEFAULT,
	CC_GREEN,
	CC_YELLOW,
	CC_RED,
	CC_CYAN,
	CC_BLUE,
	CC_MAGENTA,
	CC_COUNT
};
#define CA_COLOR(c) ((unsigned)(c) << 4)
#define CA_COLOR_OF(a) (((a) >> 4) & 0xf)

struct canvas_cell {
	uint32_t ch;
	uint16_t attr;
};

struct canvas {
	int w, h;
	bool utf8;
	struct canvas_cell *cells; /* h rows of w */
};

int canvas_init(struct canvas *c, int w, int h, bool utf8); /* 0 or -ENOMEM */
int canvas_resize(struct canvas *c, int w, int h);	    /* 0 or -ENOMEM; clears */
void canvas_free(struct canvas *c);
void canvas_clear(struct canvas *c);

/* Write UTF-8 text at (x, y), at most MAXW columns (< 0: to the edge). Returns columns written. */
int canvas_put(struct canvas *c, int x, int y, int maxw, unsigned attr, const char *text);
__attribute__((format(printf, 6, 7))) int canvas_printf(struct canvas *c, int x, int y, int maxw,
							unsigned attr, const char *fmt, ...);
/* TEXT right-aligned in a field of W columns at X (cut on the left when too long). */
int canvas_put_right(struct canvas *c, int x, int y, int w, unsigned attr, const char *text);
/* W cells of code point CH. */
void canvas_fill(struct canvas *c, int x, int y, int w, uint32_t ch, unsigned attr);
/* Set the attribute of W cells, keeping their text (highlight a row). */
void canvas_attr(struct canvas *c, int x, int y, int w, unsigned attr);
/* A horizontal rule (─ or -). */
void canvas_hline(struct canvas *c, int x, int y, int w, unsigned attr);
/* A box around the rectangle (its border inside it). */
void canvas_box(struct canvas *c, int x, int y, int w, int h, unsigned attr);

/*
 * The sparkline level (0..8) of V on a scale of 0..MAX: 0 is blank (V <= 0
 * or not a number), 8 is full; any V > 0 shows at least level 1.
 */
int canvas_spark_level(double v, double max);
/*
 * The last W of N values as a sparkline scaled to MAX (<= 0: the largest
 * value), right-aligned; values above WARN (when > 0) in WARN_ATTR.
 */
void canvas_sparkline(struct canvas *c, int x, int y, int w, const double *v, size_t n, double max,
		      unsigned attr, double warn, unsigned warn_attr);
/*
 * A stacked bar W cells wide: N segments of VALUES out of TOTAL, drawn with
 * GLYPHS[i] (or the fill of the ASCII fallbacks) in ATTRS[i], the rest as
 * empty.  Cells go to segments by largest remainder, so the widths sum to
 * round(sum / total * W) and any non-zero segment gets a cell while room is left.
 */
void canvas_bar(struct canvas *c, int x, int y, int w, const double *values, const unsigned *attrs,
		const uint32_t *glyphs, const char *ascii, int n, double total);
/* Cells of a stacked bar: into CELLS[i] for each segment (exposed for the tests). */
void canvas_bar_cells(const double *values, int n, double total, int w, int *cells);

/* The grid as text: one line per row, trailing blanks removed. Malloc'd; NULL on ENOMEM. */
char *canvas_text(const struct canvas *c);
/* Does row Y (as text) contain NEEDLE? */
bool canvas_row_contains(const struct canvas *c, int y, const char *needle);

#endif /* DUET_TUI_CANVAS_H */
