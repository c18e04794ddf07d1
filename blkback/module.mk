# blkback/: libblkback (blkbackd as a library: target interface, raw target, I/O engines, ...)
# and the thin blkbackd binary. Wildcards, so new files build without editing this fragment.
# libhv.a is named by path: hv/module.mk is included after this one, so $(HV_LIB) is not set yet.
BLKBACK_MAINS := $(wildcard blkback/*_main.c)
BLKBACK_LIB_SRCS := $(filter-out $(BLKBACK_MAINS),$(wildcard blkback/*.c))
BLKBACK_LIB := $(BUILD)/lib/libblkback.a
$(BLKBACK_LIB): $(call objs,$(BLKBACK_LIB_SRCS))

ifneq ($(wildcard blkback/blkbackd_main.c),)
BINS += $(BUILD)/bin/blkbackd
$(BUILD)/bin/blkbackd: $(call objs,blkback/blkbackd_main.c) $(BLKBACK_LIB) \
	$(BUILD)/lib/libdedup.a $(BUILD)/lib/libqos.a $(BUILD)/lib/libhv.a $(COMMON_LIB)
endif

UNIT_TESTS += $(BUILD)/tests/blkback-unit
$(BUILD)/tests/blkback-unit: $(call objs,$(wildcard tests/blkback/*.c)) $(HARNESS_OBJ) \
	$(BLKBACK_LIB) $(BUILD)/lib/libdedup.a $(BUILD)/lib/libqos.a $(BUILD)/lib/libhv.a $(COMMON_LIB)
