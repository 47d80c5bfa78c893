# duet-console (included by the top-level Makefile before BINS and UNIT_TESTS).
# TUI_BINS: binaries added to `make all` and `make install`.
# TUI_UNIT_TESTS: names N of tests/unit/test_N.c added to the cmocka suite.
# TUI_DEPS_BUILD / TUI_DEPS_TEST: Debian packages (pkg:reason), as in DEPS_*.
TUI_BINS       := $(BUILD)/bin/duet-console
TUI_UNIT_TESTS := console plan
TUI_DEPS_BUILD := libncurses-dev:console
TUI_DEPS_TEST  := tmux:console-tests

# ncursesw: pkg-config when it knows it, else the Debian defaults.
NCURSES_CFLAGS := $(shell pkg-config --cflags ncursesw 2>/dev/null)
NCURSES_LIBS   := $(or $(shell pkg-config --libs ncursesw 2>/dev/null),-lncursesw -ltinfo)

# Objects: client (shared with duetctl) and the console's modules.  Only
# screen.o includes curses; everything else is testable without a terminal.
TUI_CLIENT_OBJS  := $(BUILD)/obj/tui/client.o
TUI_MODEL_OBJS   := $(BUILD)/obj/tui/model.o $(BUILD)/obj/tui/layout.o $(BUILD)/obj/tui/canvas.o \
		    $(BUILD)/obj/tui/panels.o
TUI_CONSOLE_OBJS := $(BUILD)/obj/tui/console.o $(BUILD)/obj/tui/screen.o $(TUI_MODEL_OBJS) \
		    $(TUI_CLIENT_OBJS)

$(BUILD)/obj/tui/screen.o: ALL_CFLAGS += $(NCURSES_CFLAGS)

$(BUILD)/bin/duet-console: $(TUI_CONSOLE_OBJS)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(NCURSES_LIBS)

# The planner (duetctl profile / plan): its simulation, over serve_lib's
# traces and goodput search (SERVE_LIB_OBJ, from tests/bench/bench.mk).
TUI_PLAN_OBJS    := $(BUILD)/obj/tui/plan.o $(SERVE_LIB_OBJ)

# duetctl shares the socket client and the planner (the Makefile's recipe links $^).
$(BUILD)/bin/duetctl: $(TUI_CLIENT_OBJS) $(TUI_PLAN_OBJS)

# test_console: the model, layout, canvas, panels and client, no curses.
$(BUILD)/tests/test_console: $(TUI_MODEL_OBJS) $(TUI_CLIENT_OBJS)

# test_plan: the planner against hand-computed queues.
$(BUILD)/tests/test_plan: $(TUI_PLAN_OBJS)

.SECONDARY: $(BUILD)/obj/tests/unit/test_console.o
