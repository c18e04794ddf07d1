# qos/: the credit-weighted I/O scheduler, the cost model, the simulated device and the
# virtual-time simulation driver (libqos), and its unit tests.
QOS_SRCS := $(wildcard qos/*.c)
QOS_LIB := $(BUILD)/lib/libqos.a
$(QOS_LIB): $(call objs,$(QOS_SRCS))

UNIT_TESTS += $(BUILD)/tests/qos-unit
$(BUILD)/tests/qos-unit: $(call objs,$(wildcard tests/qos/*.c)) $(HARNESS_OBJ) $(QOS_LIB) $(COMMON_LIB)
