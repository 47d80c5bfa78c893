# Duet — build, test, run.  Plain and chatty on purpose: it says what it probes,
# what it builds and what it installs.  Every object is listed explicitly.
#
#   make            build build/bin/* and the bundled tiny model
#   make run        install missing packages, build, start duetd on etc/duet.cfg
#   make test       install missing packages, build and run every test
#   make bench      benchmarks that print their figures
#   make fuzz       libFuzzer targets (clang), FUZZ_TIME seconds each
#   make install    DESTDIR=... PREFIX=... (default /usr/local)
#   make SANITIZE=address,undefined test   the same, built with sanitizers (in build/sanitize)

PREFIX      ?= /usr/local
SYSCONFDIR  ?= /etc
DESTDIR     ?=
CUDA_HOME   ?= /usr/local/cuda
SANITIZE    ?=
FUZZ_TIME   ?= 60
SHARED      ?= $(abspath ../shared)

CC          ?= cc
ifeq ($(origin CC),default)
CC          := gcc
endif

ifeq ($(SANITIZE),)
BUILD       := build
OPTFLAGS    := -O2
else
BUILD       := build/sanitize
OPTFLAGS    := -O1 -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

CFLAGS      ?= -g
WARNFLAGS   := -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes \
	       -Wmissing-prototypes -Wformat=2 -Wvla -Werror=implicit-function-declaration
ALL_CFLAGS  := -std=gnu11 $(OPTFLAGS) $(WARNFLAGS) -D_GNU_SOURCE -pthread -I. -MMD -MP $(CFLAGS)
ALL_LDFLAGS := $(OPTFLAGS) -pthread $(LDFLAGS)
LIBS        := -lconfig -ljansson -lmicrohttpd -lm

# ---------------------------------------------------------------------------
# Probes for the optional parts.  None of them is needed to build or test.
# ---------------------------------------------------------------------------
NVCC := $(firstword $(wildcard $(CUDA_HOME)/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
ifneq ($(and $(NVCC),$(wildcard $(CUDA_HOME)/include/cuda_runtime.h)),)
HAVE_CUDA := 1
CUDA_VERSION := $(shell $(NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
$(info probe: CUDA toolkit   found: $(NVCC) (release $(CUDA_VERSION)))
else
HAVE_CUDA := 0
$(info probe: CUDA toolkit   not found in $(CUDA_HOME) or on PATH: CUDA backend and cuda-ipc driver off)
endif
NCCL_H := $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h))
ifneq ($(NCCL_H),)
HAVE_NCCL := 1
$(info probe: NCCL           found: $(NCCL_H))
else
HAVE_NCCL := 0
$(info probe: NCCL           not found: nccl transfer driver off)
endif
ifneq ($(wildcard /usr/include/infiniband/verbs.h),)
HAVE_VERBS := 1
$(info probe: libibverbs     found: /usr/include/infiniband/verbs.h)
else
HAVE_VERBS := 0
$(info probe: libibverbs     not found (apt-get install libibverbs-dev): verbs transfer driver off)
endif
ALL_CFLAGS += -DDUET_HAVE_CUDA=$(HAVE_CUDA) -DDUET_HAVE_NCCL=$(HAVE_NCCL) -DDUET_HAVE_VERBS=$(HAVE_VERBS)

# ---------------------------------------------------------------------------
# Debian packages: what each is for.  `make deps` installs the missing ones.
# ---------------------------------------------------------------------------
DEPS_BUILD := gcc:compiler make:build-tool libconfig-dev:configuration-parser libjansson-dev:JSON \
	      libmicrohttpd-dev:HTTP-server
DEPS_TEST  := libcmocka-dev:unit-tests curl:API-tests jq:JSON-checks-in-tests
DEPS_FUZZ  := clang:libFuzzer-targets libclang-rt-14-dev:libFuzzer-runtime

# ---------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------
CORE_SRCS   := runtime/core/err.c runtime/core/log.c runtime/core/mem.c runtime/core/sdnotify.c
CONFIG_SRCS := runtime/config/config.c runtime/config/schema.c
MODEL_SRCS  := runtime/model/gguf.c runtime/model/gguf_write.c runtime/model/model.c \
	       runtime/model/synth.c runtime/model/tokenizer.c runtime/model/unicode.c \
	       runtime/model/unicode_data.c runtime/model/sampler.c runtime/model/llama.c \
	       runtime/model/chat.c
KERNEL_SRCS := kernels/cpu/quant.c kernels/cpu/ref.c kernels/cpu/avx2.c kernels/cpu/avx512.c \
	       kernels/cpu/dispatch.c
KV_SRCS     := runtime/kv/kv.c runtime/sched/sched.c
CTL_SRCS    := runtime/ctl/openai.c runtime/ctl/metrics.c runtime/ctl/http.c runtime/ipc/ipc.c \
	       runtime/worker.c runtime/supervisor.c runtime/supervisor-admin.c runtime/supervisor-route.c
DRIVER_SRCS := drivers/backend.c drivers/cpu/cpu_backend.c drivers/cpu/threadpool.c
# KV transfer drivers (drivers/net): NET_SRCS, NET_BINS, NET_UNIT_TESTS, NET_FUZZ and their rules.
# `make` alone builds everything (the fragments below define rules of their own first).
.DEFAULT_GOAL := all

include drivers/net/net.mk
# The serving benchmark's library and its unit test: BENCH_UNIT_TESTS, SERVE_LIB_OBJ, DEPS_BENCH.
include tests/bench/bench.mk

LIB_SRCS    := $(CORE_SRCS) $(CONFIG_SRCS) $(MODEL_SRCS) $(KV_SRCS) $(CTL_SRCS) $(DRIVER_SRCS) \
	       $(KERNEL_SRCS) $(NET_SRCS)
LIB_OBJS    := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIBDUET     := $(BUILD)/libduet.a

# duet-console and its tests: TUI_BINS, TUI_UNIT_TESTS, TUI_DEPS_* and their rules.
include tui/tui.mk

BINS        := $(BUILD)/bin/duetd $(BUILD)/bin/duet-mkmodel $(BUILD)/bin/duet-generate \
	       $(BUILD)/bin/duetctl $(TUI_BINS) $(NET_BINS)
TINY_MODEL  := $(BUILD)/models/duet-tiny.gguf
# Shape of the bundled model (etc/duet.cfg points at it).
TINY_ARGS   := --dim 128 --layers 4 --heads 4 --kv-heads 2 --ffn 352 --ctx 1024 --type f16 --seed 1

UNIT_TESTS  := core config gguf synth quant tokenizer sampler kernels kv llama sched chat openai ipc \
	       metrics http worker $(TUI_UNIT_TESTS) $(NET_UNIT_TESTS) $(BENCH_UNIT_TESTS)
TEST_HELPER := tests/unit/testutil.c tests/unit/ggufgen.c
TEST_HELPER_OBJS := $(TEST_HELPER:%.c=$(BUILD)/obj/%.o)
TEST_BINS   := $(UNIT_TESTS:%=$(BUILD)/tests/test_%)
FUZZ_TARGETS := gguf config openai ipc $(NET_FUZZ)
REPLAY_BINS := $(FUZZ_TARGETS:%=$(BUILD)/tests/replay_%)
BENCH_BINS  := $(BUILD)/tests/bench_gguf $(BUILD)/tests/bench_membw $(BUILD)/tests/bench_kernels \
	       $(BUILD)/tests/bench_sched $(BUILD)/tests/bench_api $(BUILD)/tests/bench_disagg
BENCH_BINS  += $(BUILD)/tests/bench_serve

# Keep the objects of pattern-rule chains (tests, replays, benches) between runs.
# (Listed explicitly: a bare .SECONDARY: would also let a missing library
# object count as up to date.)
.SECONDARY: $(UNIT_TESTS:%=$(BUILD)/obj/tests/unit/test_%.o) \
	    $(FUZZ_TARGETS:%=$(BUILD)/obj/tests/fuzz/fuzz_%.o) $(BUILD)/obj/tests/fuzz/replay.o \
	    $(BENCH_BINS:$(BUILD)/tests/%=$(BUILD)/obj/tests/bench/%.o) \
	    $(BUILD)/obj/tests/fuzz/gen_seeds.o

.PHONY: all run test check-tests bench fuzz clean install deps deps-test deps-fuzz seeds format
all: $(BINS) $(TINY_MODEL)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBDUET): $(LIB_OBJS)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/duetd: $(BUILD)/obj/runtime/duetd.o $(LIBDUET)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bin/duet-mkmodel: $(BUILD)/obj/runtime/tools/mkmodel.o $(LIBDUET)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bin/duet-generate: $(BUILD)/obj/runtime/tools/generate.o $(BUILD)/obj/runtime/tools/batch.o \
			    $(LIBDUET)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bin/duetctl: $(BUILD)/obj/tui/duetctl.o $(LIBDUET)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(TINY_MODEL): $(BUILD)/bin/duet-mkmodel
	@mkdir -p $(dir $@)
	@echo "  MODEL   $@ ($(TINY_ARGS))"
	@$(BUILD)/bin/duet-mkmodel $(TINY_ARGS) --name duet-tiny -o $@

# --- tests -----------------------------------------------------------------
$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(TEST_HELPER_OBJS) $(LIBDUET)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) -lcmocka

$(BUILD)/tests/replay_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay.o $(LIBDUET)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/bench_%: $(BUILD)/obj/tests/bench/bench_%.o $(LIBDUET)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

check-tests: $(TEST_BINS) $(REPLAY_BINS) $(BINS) $(TINY_MODEL)
	@BUILD=$(BUILD) DUET_SHARED=$(SHARED) tests/run-tests.sh $(TEST_BINS) -- $(FUZZ_TARGETS)

test: deps-test
	@$(MAKE) --no-print-directory check-tests

bench: deps
	@$(MAKE) --no-print-directory $(BENCH_BINS) $(BINS)
	@BUILD=$(BUILD) DUET_SHARED=$(SHARED) $(BUILD)/tests/bench_gguf
	@$(BUILD)/tests/bench_kernels
	@tests/bench/bench_generate.sh $(BUILD) $(SHARED)
	@$(BUILD)/tests/bench_sched $(BUILD)/bench/synth-110m-f16.gguf
	@$(BUILD)/tests/bench_disagg $(BUILD)/bench/synth-110m-f16.gguf 512 1
	@tests/bench/bench_api.sh $(BUILD)

run: deps
	@$(MAKE) --no-print-directory all
	@echo "run: starting $(BUILD)/bin/duetd -c etc/duet.cfg (Ctrl-C stops it)"
	@$(BUILD)/bin/duetd -c etc/duet.cfg

# --- fuzzing (clang + libFuzzer) --------------------------------------------
FUZZ_DIR    := build/fuzz
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -pthread -I.
fuzz: deps-fuzz
	@mkdir -p $(FUZZ_DIR)
	@for t in $(FUZZ_TARGETS); do \
		echo "  FUZZ    $$t: building $(FUZZ_DIR)/fuzz_$$t with clang"; \
		clang $(FUZZ_CFLAGS) -o $(FUZZ_DIR)/fuzz_$$t tests/fuzz/fuzz_$$t.c $(LIB_SRCS) $(LIBS) || exit 1; \
		mkdir -p $(FUZZ_DIR)/corpus-$$t; \
		echo "  FUZZ    $$t: running $(FUZZ_TIME)s on tests/fuzz/corpus/$$t (new inputs in $(FUZZ_DIR)/corpus-$$t)"; \
		$(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_TIME) -rss_limit_mb=2048 \
			-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus-$$t tests/fuzz/corpus/$$t || exit 1; \
	done

# Regenerate the committed seed corpora (tests/fuzz/corpus/*).
seeds: $(BUILD)/tests/gen_seeds
	@$(BUILD)/tests/gen_seeds tests/fuzz/corpus

$(BUILD)/tests/gen_seeds: $(BUILD)/obj/tests/fuzz/gen_seeds.o $(TEST_HELPER_OBJS) $(LIBDUET)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) -lcmocka

# --- packages ----------------------------------------------------------------
deps:
	@etc/deps.sh $(DEPS_BUILD) $(TUI_DEPS_BUILD)
deps-test:
	@etc/deps.sh $(DEPS_BUILD) $(TUI_DEPS_BUILD) $(DEPS_TEST) $(TUI_DEPS_TEST)
deps-fuzz:
	@etc/deps.sh $(DEPS_BUILD) $(DEPS_FUZZ)

# --- install -----------------------------------------------------------------
install: all
	@echo "install: $(DESTDIR)$(PREFIX)/bin, $(DESTDIR)$(PREFIX)/share/duet, $(DESTDIR)$(SYSCONFDIR)/duet, $(DESTDIR)$(PREFIX)/lib/systemd/system"
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/duet/models $(DESTDIR)$(SYSCONFDIR)/duet
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(TINY_MODEL) $(DESTDIR)$(PREFIX)/share/duet/models/
	sed 's|^\([[:space:]]*path[[:space:]]*=[[:space:]]*\)"[^"]*duet-tiny.gguf"|\1"$(PREFIX)/share/duet/models/duet-tiny.gguf"|' \
		etc/duet.cfg > $(DESTDIR)$(SYSCONFDIR)/duet/duet.cfg
	chmod 0644 $(DESTDIR)$(SYSCONFDIR)/duet/duet.cfg
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed -e 's|/usr/local/bin/duetd|$(PREFIX)/bin/duetd|' -e 's|/etc/duet/duet.cfg|$(SYSCONFDIR)/duet/duet.cfg|' \
		etc/duetd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/duetd.service

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	@echo "  CLEAN   build/"
	@rm -rf build

# The appliance image: image, image-test, image-clean, image-deps.
include images/image.mk

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
