# KV transfer drivers (included by the top-level Makefile before LIB_SRCS, BINS,
# UNIT_TESTS and FUZZ_TARGETS are computed).
# NET_SRCS: sources added to libduet.a.  NET_BINS: binaries (make all, install).
# NET_UNIT_TESTS: names N of tests/unit/test_N.c.  NET_FUZZ: names N of tests/fuzz/fuzz_N.c
# (replayed by make test from tests/fuzz/corpus/N).
NET_SRCS       := drivers/net/xfer.c drivers/net/sha256.c drivers/net/loopback.c \
		  drivers/net/shm.c drivers/net/tcp.c
NET_BINS       := $(BUILD)/bin/duet-xferbench
NET_UNIT_TESTS := xfer
NET_FUZZ       := xfer

.SECONDARY: $(BUILD)/obj/drivers/net/xferbench.o

# $(LIBDUET) is defined after this file is included: name the library directly.
$(BUILD)/bin/duet-xferbench: $(BUILD)/obj/drivers/net/xferbench.o $(BUILD)/libduet.a
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)
