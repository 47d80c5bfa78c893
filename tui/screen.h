/* SPDX-License-Identifier: MIT */
/*
 * screen — the one module of duet-console that touches curses.  It puts the
 * terminal into curses mode, copies a canvas onto it, reads keys, and puts
 * the terminal back on every way out: screen_close(), exit (atexit), and
 * the fatal and terminating signals (SIGTERM, SIGINT, SIGHUP, SIGQUIT,
 * SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT), whose handlers restore the
 * terminal and then re-raise the signal with its default action.
 */
#ifndef DUET_TUI_SCREEN_H
#define DUET_TUI_SCREEN_H

#include <stdbool.h>

#include "tui/canvas.h"

/* Enter curses mode; colour unless NO_COLOR is set, COLOR is false, or the terminal has none. */
int screen_open(bool color);
void screen_close(void);
/* The terminal's size in cells. */
void screen_size(int *w, int *h);
/* Does the terminal take UTF-8 (from the locale, set by screen_open)? */
bool screen_utf8(void);
/* Show the canvas (same size as the terminal). */
void screen_present(const struct canvas *c);
/* The next key without waiting: a character or a PK_* (panels.h), 0 for one it does not
 * know, or -1 when none is waiting. */
int screen_getkey(void);

#endif /* DUET_TUI_SCREEN_H */
