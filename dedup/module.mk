# dedup/: libdedup (content-addressed volume store: radix block maps, SHA-256 index in LMDB,
# containers, snapshots, reclaim, collector, fsck) and its unit tests.
DEDUP_SRCS := $(wildcard dedup/*.c)
DEDUP_LIB := $(BUILD)/lib/libdedup.a
$(DEDUP_LIB): $(call objs,$(DEDUP_SRCS))

UNIT_TESTS += $(BUILD)/tests/dedup-unit
$(BUILD)/tests/dedup-unit: $(call objs,$(wildcard tests/dedup/*.c)) $(HARNESS_OBJ) $(DEDUP_LIB) $(COMMON_LIB)
