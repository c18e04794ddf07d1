# qos/: the credit-weighted I/O scheduler, the cost model, the simulated device and the
# virtual-time simulation driver (libqos), and its unit tests.
QOS_SRCS := $(wildcard qos/*.c)
QOS_LIB := $(BUILD)/lib/libqos.a
$(QOS_LIB): $(call objs,$(QOS_SRCS))

UNIT_TESTS += $(BUILD)/tests/qos-unit
$(BUILD)/tests/qos-unit: $(call objs,$(wildcard tests/qos/*.c)) $(HARNESS_OBJ) $(QOS_LIB) $(COMMON_LIB)

# make bench-qos: issue 5's proof on blkbackd's simulated device and, for the overhead, on the
# real disk (tools/bench_qos.py lists the scenarios and knobs); tables on stdout, JSON under
# results/, the plot of a weight change in docs/qos-weight-change.png. BENCH_QUICK=1 for a
# short smoke run (its plot goes to results/).
.PHONY: bench-qos
bench-qos: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) python3 tools/bench_qos.py
