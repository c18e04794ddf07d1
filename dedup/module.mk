# dedup/: libdedup (content-addressed volume store: radix block maps, SHA-256 index in LMDB,
# containers, snapshots, reclaim, collector, fsck) and its unit tests.
DEDUP_SRCS := $(wildcard dedup/*.c)
DEDUP_LIB := $(BUILD)/lib/libdedup.a
$(DEDUP_LIB): $(call objs,$(DEDUP_SRCS))

UNIT_TESTS += $(BUILD)/tests/dedup-unit
$(BUILD)/tests/dedup-unit: $(call objs,$(wildcard tests/dedup/*.c)) $(HARNESS_OBJ) $(DEDUP_LIB) $(COMMON_LIB)

# make bench-dedup: issue 6's numbers (dedup ratio of four Debian images against an independent
# count, index size per TB, speed against the raw target); tables on stdout, JSON under results/.
# The images are cached in /var/cache/sluice-bench; tools/bench_dedup.py lists the knobs.
bench-dedup: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) python3 tools/bench_dedup.py
.PHONY: bench-dedup
