# ARM cross builds (included from the Makefile).
#
#   make -C native cross-deps   install Debian's cross compilers and qemu-user (apt-get, when missing)
#   make -C native cross        static, stripped -O3 CLIs: build/aarch64/bnnbench-native and
#                               build/armv7/bnnbench-native (hard-float; NEON kernel picked at
#                               run time from HWCAP_NEON, the rest of the binary NEON-free)
#   make -C native cross-test   the C unit tests cross-built and run under qemu-user (they run
#                               the grid on every supported kernel set: portable and neon;
#                               ARMv7 also as a Cortex-A8, whose NEON lacks VFPv4's VFMA),
#                               plus a build whose NEON u16->u32 fold runs every 3 chunks;
#                               built with -Werror from their own objects (build/<arch>/tobj)
#   make -C native mca          llvm-mca static analysis of the NEON inner loops (binary row,
#                               SGEMM; AArch64 and ARMv7: bench/mca_neon.sh; installs llvm-19)
#
# The NEON kernels (src/bconv_neon64.c, src/bconv_neon32.c, src/sgemm_neon64.c,
# src/sgemm_neon32.c, src/pool_neon.c, src/bitpack_neon.c) compile to empty units on other architectures; on a
# native ARM host they are linked into the normal build too.

AARCH64_CC ?= aarch64-linux-gnu-gcc
ARMV7_CC   ?= arm-linux-gnueabihf-gcc
AARCH64_STRIP ?= aarch64-linux-gnu-strip
ARMV7_STRIP   ?= arm-linux-gnueabihf-strip
QEMU_AARCH64 ?= qemu-aarch64
QEMU_ARM     ?= qemu-arm

NEON_SRCS  := bconv_neon64.c bconv_neon32.c sgemm_neon64.c sgemm_neon32.c pool_neon.c \
              bitpack_neon.c
# The ARMv7 files built with -mfpu=neon (the rest of an armv7 build stays NEON-free).
NEON32_OBJS := bconv_neon32.o sgemm_neon32.o pool_neon.o bitpack_neon.o
CROSS_SRCS := $(LIB_SRCS) $(NEON_SRCS)
CROSS_CFLAGS := $(CSTD) -O3 $(WARN) -pthread -Iinclude -Isrc
ARMV7_FLAGS  := -march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard
# Debian packages providing each tool the cross targets need.
CROSS_PKGS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf \
              libc6-dev-armhf-cross qemu-user

.PHONY: cross cross-deps cross-test cross-test-builds mca mca-deps

cross: $(BUILD)/aarch64/bnnbench-native $(BUILD)/armv7/bnnbench-native

cross-deps:
	@missing=""; \
	for t in $(AARCH64_CC) $(ARMV7_CC) $(QEMU_AARCH64) $(QEMU_ARM); do \
	  command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	for h in /usr/aarch64-linux-gnu/lib/libc.a /usr/arm-linux-gnueabihf/lib/libc.a; do \
	  [ -f $$h ] || missing="$$missing $$h"; done; \
	if [ -n "$$missing" ]; then \
	  echo "cross-deps: missing$$missing; installing $(CROSS_PKGS)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $(CROSS_PKGS); \
	else echo "cross-deps: toolchains and qemu-user present"; fi

# llvm-mca: LLVM 14 (bookworm's default `llvm`) has no Cortex-A76/Neoverse-N1 scheduling
# model (it falls back to Cortex-A57's); LLVM 19 models cortex-a76 as Neoverse N1.
MCA_LLVM ?= 19
mca-deps: cross-deps
	@if [ -x /usr/lib/llvm-$(MCA_LLVM)/bin/llvm-mca ]; then echo "mca-deps: llvm-$(MCA_LLVM) present"; \
	else SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends llvm-$(MCA_LLVM); fi

mca: mca-deps
	LLVM_MCA=/usr/lib/llvm-$(MCA_LLVM)/bin/llvm-mca bench/mca_neon.sh

$(BUILD)/aarch64/obj/%.o: src/%.c | $(BUILD)/aarch64/obj
	$(AARCH64_CC) $(CROSS_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/armv7/obj/%.o: src/%.c | $(BUILD)/armv7/obj
	$(ARMV7_CC) $(CROSS_CFLAGS) $(ARMV7_FLAGS) -MMD -MP -c $< -o $@

# The unit tests' objects: the same flags plus -Werror, in their own folders, so a warning
# fails cross-test while `make cross` (what a fleet host builds with its own compilers)
# still builds.
$(BUILD)/aarch64/tobj/%.o: src/%.c | $(BUILD)/aarch64/tobj
	$(AARCH64_CC) $(CROSS_CFLAGS) $(WERROR) -MMD -MP -c $< -o $@

$(BUILD)/armv7/tobj/%.o: src/%.c | $(BUILD)/armv7/tobj
	$(ARMV7_CC) $(CROSS_CFLAGS) $(WERROR) $(ARMV7_FLAGS) -MMD -MP -c $< -o $@

# Only the NEON kernel files are built with NEON enabled.
$(NEON32_OBJS:%=$(BUILD)/armv7/obj/%) $(NEON32_OBJS:%=$(BUILD)/armv7/tobj/%): ARMV7_FLAGS += -mfpu=neon

$(BUILD)/aarch64/bnnbench-native: $(BUILD)/aarch64/obj/cli.o $(CROSS_SRCS:%.c=$(BUILD)/aarch64/obj/%.o)
	$(AARCH64_CC) -static -pthread -o $@ $^ -lm
	$(AARCH64_STRIP) $@

$(BUILD)/armv7/bnnbench-native: $(BUILD)/armv7/obj/cli.o $(CROSS_SRCS:%.c=$(BUILD)/armv7/obj/%.o)
	$(ARMV7_CC) $(ARMV7_FLAGS) -static -pthread -o $@ $^ -lm
	$(ARMV7_STRIP) $@

$(BUILD)/aarch64/test_kernels: tests/test_kernels.c $(CROSS_SRCS:%.c=$(BUILD)/aarch64/tobj/%.o)
	$(AARCH64_CC) $(CROSS_CFLAGS) $(WERROR) -static -o $@ $^ -lm

$(BUILD)/armv7/test_kernels: tests/test_kernels.c $(CROSS_SRCS:%.c=$(BUILD)/armv7/tobj/%.o)
	$(ARMV7_CC) $(CROSS_CFLAGS) $(WERROR) $(ARMV7_FLAGS) -static -o $@ $^ -lm

# test_kernels_fold: the NEON kernel with U16_CHUNKS=3, so the u16 -> u32 fold (normally
# every 4095 chunks, far beyond the test shapes) runs several times in every case.
$(BUILD)/aarch64/test_kernels_fold: tests/test_kernels.c src/bconv_neon64.c \
    $(filter-out %/bconv_neon64.o,$(CROSS_SRCS:%.c=$(BUILD)/aarch64/tobj/%.o))
	$(AARCH64_CC) $(CROSS_CFLAGS) $(WERROR) -DU16_CHUNKS=3u -static -o $@ $^ -lm

$(BUILD)/armv7/test_kernels_fold: tests/test_kernels.c src/bconv_neon32.c \
    $(filter-out %/bconv_neon32.o,$(CROSS_SRCS:%.c=$(BUILD)/armv7/tobj/%.o))
	$(ARMV7_CC) $(CROSS_CFLAGS) $(WERROR) $(ARMV7_FLAGS) -mfpu=neon -DU16_CHUNKS=3u -static \
	  -o $@ $^ -lm

CROSS_TESTS := $(BUILD)/aarch64/test_kernels $(BUILD)/aarch64/test_kernels_fold \
               $(BUILD)/armv7/test_kernels $(BUILD)/armv7/test_kernels_fold

cross-test-builds: cross $(CROSS_TESTS)

# ARMv7 twice: qemu's default CPU has VFPv4 (the VFMA SGEMM), a Cortex-A8 has NEON without
# it (the VMLA SGEMM).
cross-test: $(CROSS_TESTS)
	$(QEMU_AARCH64) $(BUILD)/aarch64/test_kernels
	$(QEMU_AARCH64) $(BUILD)/aarch64/test_kernels_fold
	$(QEMU_ARM) $(BUILD)/armv7/test_kernels
	$(QEMU_ARM) -cpu cortex-a8 $(BUILD)/armv7/test_kernels
	$(QEMU_ARM) $(BUILD)/armv7/test_kernels_fold

$(BUILD)/aarch64/obj $(BUILD)/armv7/obj $(BUILD)/aarch64/tobj $(BUILD)/armv7/tobj:
	mkdir -p $@

# Native ARM hosts: link the NEON kernels into the ordinary build (kernels.c references them).
# The compiler's target triple names the architecture: AArch64 is aarch64-* (GCC, Linux
# clang) or arm64-* (Apple clang: arm64-apple-darwin23.0.0); 32-bit ARM is arm-* (GCC:
# arm-linux-gnueabihf) or armv<N>* (clang: armv7l-unknown-linux-gnueabihf). Both object
# files are linked either way (the other one compiles to an empty unit); -mfpu=neon, a
# 32-bit-only option, is added on 32-bit ARM alone.
HOST_ARCH := $(shell $(CC) -dumpmachine 2>/dev/null)
HOST_ARM64 := $(filter aarch64-% arm64-%,$(HOST_ARCH))
HOST_ARM32 := $(filter arm-% armv%,$(HOST_ARCH))
ifneq ($(HOST_ARM64)$(HOST_ARM32),)
$(BUILD)/libbnn.so $(BUILD)/bnnbench-native: $(NEON_SRCS:%.c=$(BUILD)/obj/%.o)
$(BUILD)/asan/bnnbench-native $(BUILD)/asan/test_kernels: $(NEON_SRCS:%.c=$(BUILD)/asan/obj/%.o)
ifneq ($(HOST_ARM32),)
$(NEON32_OBJS:%=$(BUILD)/obj/%): ALL_CFLAGS += -mfpu=neon
$(NEON32_OBJS:%=$(BUILD)/asan/obj/%): SAN_CFLAGS += -mfpu=neon
endif
endif

-include $(wildcard $(BUILD)/aarch64/obj/*.d $(BUILD)/armv7/obj/*.d $(BUILD)/aarch64/tobj/*.d \
                    $(BUILD)/armv7/tobj/*.d)
