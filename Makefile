# Sluice: one non-recursive Makefile; each directory adds its part in <dir>/module.mk.
#   make            build everything under build/
#   make deps       install the Debian packages the project needs
#   make check      deps, build, every test (SANITIZE=1 for ASan+UBSan)
#   make demo       deps, build, the main job end to end

SANITIZE ?=
ifeq ($(SANITIZE),)
BUILD ?= build
else
BUILD ?= build/san
endif

CC ?= cc
PKGS := xenstore xenevtchn xengnttab liburing lmdb cunit json-c libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wmissing-prototypes
CFLAGS ?= -O2 -g
CFLAGS += -fPIC -std=gnu11 $(WARN) -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I. $(PKG_CFLAGS) -MMD -MP -pthread
LDFLAGS += -pthread
LDLIBS += -Wl,--as-needed $(PKG_LIBS) -laio -lm
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

# Filled in by the module fragments.
BINS :=
LIBS_SO :=
UNIT_TESTS :=
ALL_OBJS :=

objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

.PHONY: all deps check demo clean format fuzz bench bench-hv
all:

include common/module.mk
include $(filter-out common/module.mk,$(wildcard */module.mk */*/module.mk))

all: $(BINS) $(LIBS_SO) $(UNIT_TESTS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/lib/%.a:
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/bin/%:
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(filter %.a,$^) $(LDLIBS)

$(BUILD)/tests/%:
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(filter %.a,$^) $(LDLIBS)

deps:
	@sh tools/deps.sh

check: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tests/run.sh $(UNIT_TESTS)

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tools/demo.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
