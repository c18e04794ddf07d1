# tools/: command-line tools over the subsystem libraries (hvctl; later blkctl, the fio engine)
# and benchmarks.

BINS += $(BUILD)/bin/hvctl
$(BUILD)/bin/hvctl: $(call objs,tools/hvctl.c) $(HV_LIB) $(COMMON_LIB)

# The fio external ioengine, compiled against the headers of the installed fio (fetched and
# configured by tools/fio-src.sh, which `make deps` runs). fio's headers are -isystem so our
# warning flags apply to our code only. Everything but the `ioengine` symbol is hidden, so the
# static libraries inside cannot clash with symbols the fio executable exports.
FIO_SRC := third_party/fio-src
FIO_ENGINE := $(BUILD)/lib/fio-blkfront.so
LIBS_SO += $(FIO_ENGINE)

$(FIO_SRC)/config-host.h:
	sh tools/fio-src.sh

$(BUILD)/obj/tools/fio_blkfront.o: tools/fio_blkfront.c $(FIO_SRC)/config-host.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fvisibility=hidden -isystem $(FIO_SRC) -include $(FIO_SRC)/config-host.h \
		-c -o $@ $<

$(FIO_ENGINE): $(BUILD)/obj/tools/fio_blkfront.o $(HV_LIB) $(COMMON_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -shared -Wl,--exclude-libs,ALL -o $@ $(filter %.o,$^) \
		$(filter %.a,$^) $(LDLIBS)

# bench_hv: the sim hypervisor's costs (xenstore, event channels, grant mapping); `make bench-hv`
# runs it against a private hvsimd.
BINS += $(BUILD)/bin/bench_hv
$(BUILD)/bin/bench_hv: $(call objs,tools/bench_hv.c) $(HV_LIB) $(COMMON_LIB)

bench-hv: $(BUILD)/bin/bench_hv $(BUILD)/bin/hvsimd
	@$(BUILD)/bin/bench_hv

# blkctl: volumes through the pool library, everything else over blkbackd's control socket.
# libblkback.a is named by path so this rule does not depend on the order of the fragments.
BINS += $(BUILD)/bin/blkctl
$(BUILD)/bin/blkctl: $(call objs,tools/blkctl.c tools/blkctl_client.c tools/blkctl_dedup.c \
	tools/blkctl_calibrate.c) $(BUILD)/lib/libblkback.a $(BUILD)/lib/libdedup.a \
	$(BUILD)/lib/libqos.a $(COMMON_LIB)

# make bench: every contender (fio direct in dom0, sluice through blkbackd, nbdkit, and
# qemu-storage-daemon) on one backing file; tables on stdout, JSON under results/.
# BENCH_QUICK=1 for a two-minute smoke run; tools/bench.py lists the other knobs.
bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) python3 tools/bench.py
