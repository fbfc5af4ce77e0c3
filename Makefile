# tdrl: `make` builds ./tdrl and build/libtdrl.a; `make test` runs every test.
# Sources are picked up by wildcard: a new ops/*.c, ops/io/*.c, vm/*.c or tests/c/test_*.c needs no
# edit here.
CC      ?= cc
PREFIX  ?= /usr/local
BUILD   ?= build
OPT     ?= -O3 -march=native -fno-math-errno -fno-trapping-math
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter
DEPS    := lua5.4 openblas jansson stb zlib $(shell pkg-config --exists libzmq libcrypto 2>/dev/null && echo libzmq libcrypto)
PKGCFLAGS := $(shell pkg-config --cflags $(DEPS) 2>/dev/null)
PKGLIBS   := $(shell pkg-config --libs $(DEPS) 2>/dev/null)
# Open MPI when present (vm/lua_dist.c; `make MPI=0` builds without it): tdrl.dist then runs
# under mpirun / srun; without it every script runs as one process. Debian's pkg-config name is
# ompi; mpicc --showme answers where the .pc file is missing.
MPI     ?= auto
ifneq ($(MPI),0)
MPICFLAGS := $(shell pkg-config --cflags ompi 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPILIBS   := $(shell pkg-config --libs ompi 2>/dev/null || mpicc --showme:link 2>/dev/null)
ifneq ($(strip $(MPILIBS)),)
PKGCFLAGS += -DTDRL_MPI $(MPICFLAGS)
PKGLIBS   += $(MPILIBS)
endif
endif
CFLAGS  += -std=gnu11 $(OPT) $(WARN) -fopenmp -g $(PKGCFLAGS) -I/usr/include/stb $(EXTRA_CFLAGS)
LDLIBS  += $(PKGLIBS) -lreadline -lutil -lm -fopenmp $(EXTRA_LDFLAGS)

OPS_SRC := $(wildcard ops/*.c ops/io/*.c)
VM_SRC  := $(wildcard vm/*.c)
OPS_OBJ := $(OPS_SRC:%.c=$(BUILD)/%.o)
VM_OBJ  := $(VM_SRC:%.c=$(BUILD)/%.o)
CTESTS  := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))
FUZZERS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
LIB     := $(BUILD)/libtdrl.a
BIN     ?= tdrl

.PHONY: all setup setup-test test asan bench fuzz install clean reproduce kernel
all: $(BIN) $(LIB) docs/core.md

# The core functions' reference is generated from the docs table the binary carries, so that a new
# op touches ops/ and a test only; help_spec checks the committed file matches.
docs/core.md: $(BIN) lua/tdrl/help.lua
	@echo "  GEN $@"
	@./$(BIN) -e "io.write(require('tdrl.help').markdown())" > $@.tmp && mv $@.tmp $@

setup:
	@./scripts/setup.sh

setup-test:
	@./scripts/setup.sh test

$(BUILD)/%.o: %.c $(wildcard ops/*.h ops/io/*.h vm/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(OPS_OBJ)
	@rm -f $@
	@echo "  AR $@"
	@ar rcs $@ $^

$(BIN): $(VM_OBJ) $(LIB)
	@echo "  LD $@"
	@$(CC) $(CFLAGS) -o $@ $(VM_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/c/%.c tests/c/check.h $(LIB) $(BIN)
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

test: setup-test
	@$(MAKE) --no-print-directory all ctests
	@BUILD=$(BUILD) BIN=./$(BIN) ./tests/run.sh

ctests: $(CTESTS)

# The whole suite under AddressSanitizer + UBSan, in its own build folder and binary, with leak
# detection on: a test program that leaks exits non-zero and counts as a failure.
# tests/lsan.supp lists what is not ours to free (libraries' one-time allocations), each with why.
asan: setup-test
	@$(MAKE) --no-print-directory BUILD=build-asan BIN=build-asan/tdrl OPT="-O1 -march=native -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" all ctests
	@ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  BUILD=build-asan BIN=build-asan/tdrl ./tests/run.sh

# libFuzzer targets, one per reader (tests/fuzz/fuzz_<reader>.c, seeds in tests/fuzz/seeds/<name>/),
# FUZZ_TIME seconds each. Built with clang (Debian's clang 14; scripts/setup.sh fuzz installs it):
# -Wno-pass-failed because a sanitised loop that `omp simd` asks to vectorise cannot be, which
# clang reports as a warning (a missed optimisation, not a fault in the code). The readers written
# in Lua (checkpoints, trajectories) link the Lua bindings (vm/lua_*.c) and run lua/ from here.
# Undefined behaviour stops a fuzzer (-fno-sanitize-recover) so that it counts as a finding.
FUZZ_TIME ?= 60
# the Lua bindings and the docs table they register (the fuzzers run Lua readers without the host)
FUZZ_LUA_OBJ := $(patsubst vm/%.c,build-fuzz/vm/%.o,$(wildcard vm/lua_*.c) vm/core_docs.c)
fuzz: setup
	@./scripts/setup.sh fuzz
	@$(MAKE) --no-print-directory CC=clang BUILD=build-fuzz BIN=build-fuzz/tdrl OPT="-O1 -g -march=native" \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -Wno-pass-failed" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" \
	  build-fuzz/libtdrl.a $(FUZZ_LUA_OBJ)
	@rm -f build-fuzz/libtdrl_lua.a && ar rcs build-fuzz/libtdrl_lua.a $(FUZZ_LUA_OBJ)
	@for f in $(wildcard tests/fuzz/fuzz_*.c); do \
	  n=$$(basename $$f .c); mkdir -p build-fuzz/fuzz build-fuzz/corpus/$$n; \
	  clang $(PKGCFLAGS) -I/usr/include/stb -DTDRL_LUA_DIR='"$(CURDIR)/lua"' -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	    -o build-fuzz/fuzz/$$n $$f build-fuzz/libtdrl_lua.a build-fuzz/libtdrl.a $(PKGLIBS) -lm -fopenmp || exit 1; \
	  cp tests/fuzz/seeds/$$n/* build-fuzz/corpus/$$n/ 2>/dev/null; \
	  echo "fuzzing $$n for $(FUZZ_TIME) s"; \
	  build-fuzz/fuzz/$$n -max_total_time=$(FUZZ_TIME) -rss_limit_mb=2048 -malloc_limit_mb=1024 \
	    build-fuzz/corpus/$$n || exit 1; \
	done

# The main job: the paper's pipeline on the built-in Synthetic data (ARGS="--quick", "--full", ...).
reproduce: setup all
	@./$(BIN) examples/reproduce.lua $(ARGS)

# The Jupyter kernelspec for this user (or under PREFIX with KERNEL_PREFIX=...): see docs in README.
kernel: setup all
	@./scripts/install_kernel.sh $(if $(KERNEL_PREFIX),--prefix $(KERNEL_PREFIX))

bench: setup all
	@./$(BIN) bench/run.lua

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/tdrl/lua/tdrl $(DESTDIR)$(PREFIX)/lib
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/tdrl
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libtdrl.a
	cd lua && find tdrl -name '*.lua' -exec install -D -m 644 {} $(DESTDIR)$(PREFIX)/share/tdrl/lua/{} \;

clean:
	rm -rf build build-asan build-fuzz $(BIN)
