# The serving benchmark's library (included by the top-level Makefile before
# UNIT_TESTS is computed).  tests/bench/serve_lib.c (traces, latency figures,
# goodput search) is linked into bench_serve and into its unit test.
# BENCH_UNIT_TESTS: names N of tests/unit/test_N.c.  DEPS_BENCH: Debian
# packages `make bench` installs (gnuplot draws bench_serve's plots; without
# it bench_serve says the plots were skipped).  `make test` needs none of them.
BENCH_UNIT_TESTS := serve
SERVE_LIB_OBJ    := $(BUILD)/obj/tests/bench/serve_lib.o
DEPS_BENCH       := gnuplot-nox:benchmark-plots curl:benchmark-scripts jq:benchmark-scripts

# Extra prerequisites of the pattern rules' targets: $^ includes them.  bench_serve
# talks HTTP through tui/client.c (TUI_CLIENT_OBJS in tui/tui.mk, included later).
$(BUILD)/tests/bench_serve: $(SERVE_LIB_OBJ) $(BUILD)/obj/tui/client.o
$(BUILD)/tests/test_serve: $(SERVE_LIB_OBJ)

# tests/integration/bench_smoke.sh runs bench_serve against duetd.
check-tests: $(BUILD)/tests/bench_serve

.PHONY: deps-bench
bench: deps-bench
deps-bench:
	@etc/deps.sh $(DEPS_BUILD) $(DEPS_BENCH)
