// SPDX-License-Identifier: MIT
/*
 * screen — curses, alone (see screen.h).
 */
#define NCURSES_WIDECHAR 1
#include "tui/screen.h"

#include <curses.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tui/panels.h"

static volatile sig_atomic_t screen_active;
static bool screen_color, screen_is_utf8;

static const int fatal_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGSEGV,
				     SIGBUS,  SIGFPE, SIGILL, SIGABRT };

/*
 * Restore the terminal, then die of the same signal.  endwin() is not on
 * the async-signal-safe list; like htop we accept that, because leaving the
 * operator's terminal in raw mode is worse, and the process ends right after.
 */
static void on_fatal(int sig)
{
	if (screen_active) {
		screen_active = 0;
		endwin();
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

void screen_close(void)
{
	if (!screen_active)
		return;
	screen_active = 0;
	endwin();
}

int screen_open(bool color)
{
	const char *nc = getenv("NO_COLOR");
	struct sigaction sa = { .sa_handler = on_fatal };

	setlocale(LC_ALL, "");
	screen_is_utf8 = !strcmp(nl_langinfo(CODESET), "UTF-8");
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++)
		sigaction(fatal_signals[i], &sa, NULL);
	if (!initscr())
		return -1;
	screen_active = 1;
	atexit(screen_close);
	cbreak();
	noecho();
	nonl();
	keypad(stdscr, TRUE);
	nodelay(stdscr, TRUE);
	curs_set(0);
	set_escdelay(25);
	screen_color = color && !(nc && nc[0]) && has_colors();
	if (screen_color) {
		static const short fg[CC_COUNT] = {
			[CC_GREEN] = COLOR_GREEN, [CC_YELLOW] = COLOR_YELLOW,
			[CC_RED] = COLOR_RED,	  [CC_CYAN] = COLOR_CYAN,
			[CC_BLUE] = COLOR_BLUE,	  [CC_MAGENTA] = COLOR_MAGENTA,
		};

		start_color();
		use_default_colors();
		for (short i = 1; i < CC_COUNT; i++)
			init_pair(i, fg[i], -1);
	}
	return 0;
}

void screen_size(int *w, int *h)
{
	getmaxyx(stdscr, *h, *w);
}

bool screen_utf8(void)
{
	return screen_is_utf8;
}

static attr_t to_curses(unsigned a, short *pair)
{
	attr_t r = A_NORMAL;

	if (a & CA_BOLD)
		r |= A_BOLD;
	if (a & CA_REVERSE)
		r |= A_REVERSE;
	if (a & CA_DIM)
		r |= A_DIM;
	if (a & CA_UNDERLINE)
		r |= A_UNDERLINE;
	*pair = screen_color ? (short)CA_COLOR_OF(a) : 0;
	return r;
}

void screen_present(const struct canvas *c)
{
	int w, h;

	getmaxyx(stdscr, h, w);
	for (int y = 0; y < c->h && y < h; y++) {
		for (int x = 0; x < c->w && x < w; x++) {
			const struct canvas_cell *k = &c->cells[y * c->w + x];
			wchar_t wc[2] = { (wchar_t)k->ch, 0 };
			cchar_t cc;
			short pair;
			attr_t a = to_curses(k->attr, &pair);

			setcchar(&cc, wc, a, pair, NULL);
			mvadd_wch(y, x, &cc); /* the bottom-right cell may fail: harmless */
		}
	}
	refresh();
}

int screen_getkey(void)
{
	wint_t ch;
	int rc = get_wch(&ch);

	if (rc == ERR)
		return -1;
	if (rc == KEY_CODE_YES) {
		switch (ch) {
		case KEY_UP:
			return PK_UP;
		case KEY_DOWN:
			return PK_DOWN;
		case KEY_LEFT:
			return PK_LEFT;
		case KEY_RIGHT:
			return PK_RIGHT;
		case KEY_PPAGE:
			return PK_PGUP;
		case KEY_NPAGE:
			return PK_PGDN;
		case KEY_HOME:
			return PK_HOME;
		case KEY_END:
			return PK_END;
		case KEY_ENTER:
			return PK_ENTER;
		case KEY_BTAB:
			return PK_BTAB;
		case KEY_BACKSPACE:
			return PK_BACKSPACE;
		case KEY_RESIZE:
			return PK_RESIZE;
		default:
			if (ch == KEY_F(1))
				return PK_F1;
			if (ch == KEY_F(6))
				return PK_F6;
			if (ch == KEY_F(10))
				return PK_F10;
			return 0; /* an unknown key: ignored by the caller */
		}
	}
	switch (ch) {
	case '\r':
	case '\n':
		return PK_ENTER;
	case '\t':
		return PK_TAB;
	case 127:
	case 8:
		return PK_BACKSPACE;
	case 27:
		return PK_ESC;
	default:
		return (int)ch;
	}
}
