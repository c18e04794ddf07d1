# tests/fuzz/: libFuzzer targets, built with clang apart from the gcc build (own object dir),
# run by `make fuzz` only (never by `make check`).
#   make fuzz              build, then fuzz the xenstore parser/dispatcher for FUZZ_TIME s
#   make fuzz FUZZ_TIME=600
FUZZ_DIR := build/fuzz
FUZZ_CC ?= clang
FUZZ_TIME ?= 60
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -O1 -g -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. \
	-MMD -MP -pthread $(FUZZ_SAN)
# The code under test: the xenstore server and what it links.
FUZZ_LIB_SRCS := hv/xs_store.c hv/xs_server.c hv/loop.c common/log.c common/util.c
FUZZ_LIB_OBJS := $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(FUZZ_LIB_SRCS))

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_DIR)/xs_fuzz: $(FUZZ_DIR)/obj/tests/fuzz/xs_fuzz.o $(FUZZ_LIB_OBJS)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ $^

$(FUZZ_DIR)/xs_seeds: tests/fuzz/xs_seeds.c
	@mkdir -p $(@D)
	$(FUZZ_CC) -O1 -g -std=gnu11 -Wall -Wextra -Werror -o $@ $<

# libFuzzer exits non-zero (and leaves crash-* in build/fuzz) on any crash, leak or trap.
fuzz: $(FUZZ_DIR)/xs_fuzz $(FUZZ_DIR)/xs_seeds
	@mkdir -p $(FUZZ_DIR)/corpus
	$(FUZZ_DIR)/xs_seeds $(FUZZ_DIR)/corpus
	cd $(FUZZ_DIR) && ./xs_fuzz -max_total_time=$(FUZZ_TIME) -max_len=16384 -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 corpus

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
