# duet-console (included by the top-level Makefile before BINS and UNIT_TESTS).
# TUI_BINS: binaries added to `make all` and `make install`.
# TUI_UNIT_TESTS: names N of tests/unit/test_N.c added to the cmocka suite.
# TUI_DEPS_BUILD / TUI_DEPS_TEST: Debian packages (pkg:reason), as in DEPS_*.
TUI_BINS       :=
TUI_UNIT_TESTS :=
TUI_DEPS_BUILD :=
TUI_DEPS_TEST  :=
