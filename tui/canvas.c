// SPDX-License-Identifier: MIT
/*
 * canvas — a grid of cells for the panels to draw on (see canvas.h).
 */
#include "tui/canvas.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int canvas_init(struct canvas *c, int w, int h, bool utf8)
{
	*c = (struct canvas){ .utf8 = utf8 };
	return canvas_resize(c, w, h);
}

int canvas_resize(struct canvas *c, int w, int h)
{
	struct canvas_cell *cells;

	if (w < 1)
		w = 1;
	if (h < 1)
		h = 1;
	cells = calloc((size_t)w * (size_t)h, sizeof(*cells));
	if (!cells)
		return -ENOMEM;
	free(c->cells);
	c->cells = cells;
	c->w = w;
	c->h = h;
	canvas_clear(c);
	return 0;
}

void canvas_free(struct canvas *c)
{
	free(c->cells);
	c->cells = NULL;
	c->w = c->h = 0;
}

void canvas_clear(struct canvas *c)
{
	for (int i = 0; i < c->w * c->h; i++)
		c->cells[i] = (struct canvas_cell){ .ch = ' ' };
}

static struct canvas_cell *cell(struct canvas *c, int x, int y)
{
	if (x < 0 || y < 0 || x >= c->w || y >= c->h)
		return NULL;
	return &c->cells[y * c->w + x];
}

/* The next code point of UTF-8 text at *P (advanced); invalid bytes give U+FFFD. */
static uint32_t utf8_next(const unsigned char **p)
{
	const unsigned char *s = *p;
	uint32_t cp;
	int n;

	if (s[0] < 0x80) {
		*p = s + 1;
		return s[0];
	}
	if ((s[0] & 0xe0) == 0xc0) {
		cp = s[0] & 0x1f;
		n = 1;
	} else if ((s[0] & 0xf0) == 0xe0) {
		cp = s[0] & 0x0f;
		n = 2;
	} else if ((s[0] & 0xf8) == 0xf0) {
		cp = s[0] & 0x07;
		n = 3;
	} else {
		*p = s + 1;
		return 0xfffd;
	}
	for (int i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80) {
			*p = s + i;
			return 0xfffd;
		}
		cp = cp << 6 | (s[i] & 0x3f);
	}
	*p = s + n + 1;
	return cp;
}

int canvas_put(struct canvas *c, int x, int y, int maxw, unsigned attr, const char *text)
{
	const unsigned char *p = (const unsigned char *)(text ? text : "");
	int n = 0;

	if (maxw < 0)
		maxw = c->w - x;
	while (*p && n < maxw) {
		uint32_t cp = utf8_next(&p);
		struct canvas_cell *k = cell(c, x + n, y);

		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0))
			cp = '?'; /* control characters from the daemon must not reach the tty */
		if (!c->utf8 && cp >= 0x80)
			cp = '?';
		if (k)
			*k = (struct canvas_cell){ .ch = cp, .attr = (uint16_t)attr };
		n++;
	}
	return n;
}

int canvas_printf(struct canvas *c, int x, int y, int maxw, unsigned attr, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return canvas_put(c, x, y, maxw, attr, buf);
}

static int utf8_len(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	int n = 0;

	while (*p) {
		utf8_next(&p);
		n++;
	}
	return n;
}

int canvas_put_right(struct canvas *c, int x, int y, int w, unsigned attr, const char *text)
{
	const unsigned char *p = (const unsigned char *)text;
	int len = utf8_len(text);

	while (len > w) { /* keep the end: numbers lose their leading digits last */
		utf8_next(&p);
		len--;
	}
	return canvas_put(c, x + w - len, y, len, attr, (const char *)p);
}

void canvas_fill(struct canvas *c, int x, int y, int w, uint32_t ch, unsigned attr)
{
	for (int i = 0; i < w; i++) {
		struct canvas_cell *k = cell(c, x + i, y);

		if (k)
			*k = (struct canvas_cell){ .ch = ch, .attr = (uint16_t)attr };
	}
}

void canvas_attr(struct canvas *c, int x, int y, int w, unsigned attr)
{
	for (int i = 0; i < w; i++) {
		struct canvas_cell *k = cell(c, x + i, y);

		if (k)
			k->attr = (uint16_t)attr;
	}
}

void canvas_hline(struct canvas *c, int x, int y, int w, unsigned attr)
{
	canvas_fill(c, x, y, w, c->utf8 ? 0x2500 : '-', attr);
}

void canvas_box(struct canvas *c, int x, int y, int w, int h, unsigned attr)
{
	uint32_t v = c->utf8 ? 0x2502 : '|';

	if (w < 2 || h < 2)
		return;
	canvas_hline(c, x, y, w, attr);
	canvas_hline(c, x, y + h - 1, w, attr);
	for (int i = 1; i < h - 1; i++) {
		canvas_fill(c, x, y + i, 1, v, attr);
		canvas_fill(c, x + w - 1, y + i, 1, v, attr);
	}
	canvas_fill(c, x, y, 1, c->utf8 ? 0x250c : '+', attr);
	canvas_fill(c, x + w - 1, y, 1, c->utf8 ? 0x2510 : '+', attr);
	canvas_fill(c, x, y + h - 1, 1, c->utf8 ? 0x2514 : '+', attr);
	canvas_fill(c, x + w - 1, y + h - 1, 1, c->utf8 ? 0x2518 : '+', attr);
}

int canvas_spark_level(double v, double max)
{
	int l;

	if (!(v > 0) || !(max > 0)) /* also NAN */
		return 0;
	if (v >= max)
		return 8;
	l = (int)ceil(v / max * 8.0);
	return l < 1 ? 1 : l > 8 ? 8 : l;
}

void canvas_sparkline(struct canvas *c, int x, int y, int w, const double *v, size_t n, double max,
		      unsigned attr, double warn, unsigned warn_attr)
{
	static const char ascii[] = " .,:-=+*#";
	size_t first = n > (size_t)w ? n - (size_t)w : 0;
	int pad = w - (int)(n - first);

	if (!(max > 0)) {
		max = 0;
		for (size_t i = first; i < n; i++)
			if (v[i] > max)
				max = v[i];
	}
	canvas_fill(c, x, y, pad > 0 ? pad : 0, ' ', attr);
	for (size_t i = first; i < n; i++) {
		int l = canvas_spark_level(v[i], max);
		uint32_t ch = l == 0 ? ' ' : c->utf8 ? 0x2580 + (uint32_t)l : (uint32_t)ascii[l];

		canvas_fill(c, x + (pad > 0 ? pad : 0) + (int)(i - first), y, 1, ch,
			    warn > 0 && v[i] > warn ? warn_attr : attr);
	}
}

void canvas_bar_cells(const double *values, int n, double total, int w, int *cells)
{
	double rem[16], sum = 0;
	int given = 0, want;

	if (n > 16)
		n = 16;
	for (int i = 0; i < n; i++) {
		cells[i] = 0;
		rem[i] = 0;
		if (values[i] > 0)
			sum += values[i];
	}
	if (!(total > 0) || w <= 0)
		return;
	if (sum > total)
		total = sum;
	want = (int)lround(sum / total * w);
	for (int i = 0; i < n; i++) {
		double exact = values[i] > 0 ? values[i] / total * w : 0;

		cells[i] = (int)exact;
		rem[i] = exact - cells[i];
		given += cells[i];
	}
	/* Segments with a value but no cell first, then the largest remainders. */
	while (given < want) {
		int k = -1;

		for (int i = 0; i < n; i++) {
			if (!(values[i] > 0) || rem[i] < 0)
				continue;
			if (k < 0 || (cells[i] == 0 && cells[k] != 0) ||
			    ((cells[i] == 0) == (cells[k] == 0) && rem[i] > rem[k]))
				k = i;
		}
		if (k < 0)
			break;
		cells[k]++;
		rem[k] = -1;
		given++;
	}
}

void canvas_bar(struct canvas *c, int x, int y, int w, const double *values, const unsigned *attrs,
		const uint32_t *glyphs, const char *ascii, int n, double total)
{
	int cells[16], at = 0;

	if (n > 16)
		n = 16;
	canvas_bar_cells(values, n, total, w, cells);
	for (int i = 0; i < n; i++) {
		canvas_fill(c, x + at, y, cells[i], c->utf8 ? glyphs[i] : (uint32_t)ascii[i],
			    attrs[i]);
		at += cells[i];
	}
	if (at < w)
		canvas_fill(c, x + at, y, w - at, c->utf8 ? 0x00b7 : '.', CA_DIM);
}

/* Append code point CP as UTF-8. */
static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static size_t row_text(const struct canvas *c, int y, char *o)
{
	size_t n = 0, end = 0;

	for (int x = 0; x < c->w; x++) {
		uint32_t ch = c->cells[y * c->w + x].ch;

		n += put_utf8(o + n, ch);
		if (ch != ' ')
			end = n;
	}
	return end;
}

char *canvas_text(const struct canvas *c)
{
	char *out = malloc((size_t)c->h * ((size_t)c->w * 4 + 1) + 1), *o = out;

	if (!out)
		return NULL;
	for (int y = 0; y < c->h; y++) {
		o += row_text(c, y, o);
		*o++ = '\n';
	}
	*o = '\0';
	return out;
}

bool canvas_row_contains(const struct canvas *c, int y, const char *needle)
{
	char *row;
	bool found;

	if (y < 0 || y >= c->h)
		return false;
	row = malloc((size_t)c->w * 4 + 1);
	if (!row)
		return false;
	row[row_text(c, y, row)] = '\0';
	found = strstr(row, needle) != NULL;
	free(row);
	return found;
}
