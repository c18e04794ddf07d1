# hv/: libhv (hv.h sim+xen, xenstore server, grant tables, event channels, libblkfront), hvsimd.
HV_MAINS := $(wildcard hv/*_main.c)
HV_LIB_SRCS := $(filter-out $(HV_MAINS),$(wildcard hv/*.c))
HV_LIB := $(BUILD)/lib/libhv.a
$(HV_LIB): $(call objs,$(HV_LIB_SRCS))

ifneq ($(wildcard hv/hvsimd_main.c),)
BINS += $(BUILD)/bin/hvsimd
$(BUILD)/bin/hvsimd: $(call objs,hv/hvsimd_main.c) $(HV_LIB) $(COMMON_LIB)
endif

UNIT_TESTS += $(BUILD)/tests/hv-unit
$(BUILD)/tests/hv-unit: $(call objs,$(wildcard tests/hv/*.c)) $(HARNESS_OBJ) $(HV_LIB) $(COMMON_LIB)
