# common/: logging and small helpers every subsystem links.
COMMON_SRCS := $(wildcard common/*.c)
COMMON_LIB := $(BUILD)/lib/libsluice-common.a
$(COMMON_LIB): $(call objs,$(COMMON_SRCS))

# The CUnit harness every test binary links.
HARNESS_OBJ := $(call objs,tests/harness.c)

UNIT_TESTS += $(BUILD)/tests/common-unit
$(BUILD)/tests/common-unit: $(call objs,$(wildcard tests/common/*.c)) $(HARNESS_OBJ) $(COMMON_LIB)
