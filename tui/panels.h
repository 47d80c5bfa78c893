/* SPDX-License-Identifier: MIT */
/*
 * panels — what duet-console draws, as small vtables (measure, draw,
 * selectable rows), arranged into a frame on a canvas.  No curses: the same
 * frame is shown by screen.c, printed by --once and checked by the tests.
 *
 * Keys arrive already translated (PK_* for the special ones, the character
 * otherwise); panels handle only moving their selection.  Actions (drain,
 * cancel, ...) are the console's.
 */
#ifndef DUET_TUI_PANELS_H
#define DUET_TUI_PANELS_H

#include <stdbool.h>

#include "tui/canvas.h"
#include "tui/layout.h"
#include "tui/model.h"

enum panel_key {
	PK_UP = 0x110000, /* above every code point */
	PK_DOWN,
	PK_LEFT,
	PK_RIGHT,
	PK_PGUP,
	PK_PGDN,
	PK_HOME,
	PK_END,
	PK_ENTER,
	PK_TAB,
	PK_BTAB,
	PK_BACKSPACE,
	PK_ESC,
	PK_F1,
	PK_F6,
	PK_F10,
	PK_RESIZE,
};

enum panel_id {
	PANEL_HEADER,
	PANEL_PARTS,
	PANEL_LINKS,
	PANEL_LATENCY,
	PANEL_REQS,
	PANEL_EVENTS,
	PANEL_COUNT
};

struct panel;

struct panel_ops {
	const char *title;
	/* Rows this panel would like at WIDTH, its title line included. */
	int (*measure)(const struct panel *p, const struct model *m, int width);
	void (*draw)(struct panel *p, const struct model *m, struct canvas *c,
		     struct layout_rect r);
	/* Selectable rows (0: the panel takes no focus). */
	int (*rows)(const struct panel *p, const struct model *m);
	/* A stable name of row I (partition name, request id), so that the
	 * selection follows the item when rows move; false when none. */
	bool (*row_key)(const struct panel *p, const struct model *m, int i, char *out, size_t cap);
};

struct panel {
	const struct panel_ops *ops;
	int sel, top; /* selected row, first row shown */
	int page;     /* data rows shown at the last draw */
	bool focused;
	char sel_key[64];
};

/* What the console adds to a frame. */
struct panel_ui {
	bool paused;
	bool once;	     /* --once: no key hints, no cursor */
	double interval;     /* seconds between refreshes */
	const char *message; /* a transient line above the footer, or NULL */
	unsigned message_attr;
	const char *prompt; /* the filter being typed, or NULL */
	bool help;	    /* the help overlay */
	bool details;	    /* the details overlay of the focused panel's selection */
};

struct panel_set {
	struct panel p[PANEL_COUNT];
	int focus; /* a PANEL_* that takes focus */
	struct layout_rect rect[PANEL_COUNT];
};

void panel_set_init(struct panel_set *ps);
/* Draw the whole frame on C (its size is the terminal's). */
void panel_draw_frame(struct panel_set *ps, const struct model *m, const struct panel_ui *ui,
		      struct canvas *c);
/* Focus and selection keys; true when KEY was one of them. */
bool panel_handle_key(struct panel_set *ps, const struct model *m, int key);
/* The selection of the partitions / requests panel, or NULL. */
const struct model_partition *panel_selected_partition(const struct panel_set *ps,
						       const struct model *m);
const struct model_request *panel_selected_request(const struct panel_set *ps,
						   const struct model *m);

/* Column specs of the tables (exposed for the layout tests). */
extern const struct layout_col panel_part_cols[];
extern const int panel_part_ncols;
extern const struct layout_col panel_req_cols[];
extern const int panel_req_ncols;

/* "1h02m" etc. into OUT. */
void panel_fmt_duration(char *out, size_t cap, double s);

#endif /* DUET_TUI_PANELS_H */
