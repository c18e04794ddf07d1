# tests/blkback: bb-guest, the guest (and control client) of blkbackd's integration tests
# (tests/integration/blkback_*.sh find it next to the unit binaries). Not a unit test itself.
BB_GUEST := $(BUILD)/tests/bb-guest
$(BB_GUEST): $(call objs,tests/blkback/guest/bb_guest.c tests/blkback/test_front.c) \
	$(BLKBACK_LIB) $(BUILD)/lib/libdedup.a $(BUILD)/lib/libqos.a $(BUILD)/lib/libhv.a $(COMMON_LIB)
all: $(BB_GUEST)
