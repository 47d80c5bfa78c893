# KV transfer drivers (included by the top-level Makefile before LIB_SRCS, BINS,
# UNIT_TESTS and FUZZ_TARGETS are computed).
# NET_SRCS: sources added to libduet.a.  NET_BINS: binaries (make all, install).
# NET_UNIT_TESTS: names N of tests/unit/test_N.c.  NET_FUZZ: names N of tests/fuzz/fuzz_N.c
# (replayed by make test from tests/fuzz/corpus/N).
NET_SRCS       :=
NET_BINS       :=
NET_UNIT_TESTS :=
NET_FUZZ       :=
