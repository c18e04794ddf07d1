# tools/: command-line tools over the subsystem libraries (hvctl; later blkctl, the fio engine)
# and benchmarks.

BINS += $(BUILD)/bin/hvctl
$(BUILD)/bin/hvctl: $(call objs,tools/hvctl.c) $(HV_LIB) $(COMMON_LIB)
