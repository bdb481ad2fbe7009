# Hardening: fuzzing, sanitizers, valgrind over the suite, static checks.
# Included by the Makefile (-include mk/*.mk); it reuses the Makefile's
# LUA, LUA_BIN, CORE_SRC, SRC, WARN, LUA_CFLAGS, CURL_CFLAGS, CURL_LIBS and
# BUSTED, and names its own variables FUZZ_* or HARDEN_* so they never
# clash with the Makefile's or another fragment's.
#
#   make fuzz [FUZZ_SECONDS=20]  build the libFuzzer harnesses into build/fuzz/
#                                and run each for FUZZ_SECONDS (make -j3 fuzz:
#                                in parallel); crashes land in build/fuzz/
#   make fuzz-regress            run each harness once over its seed corpus and
#                                fuzz/regressions/<harness>/ (past crashes)
#   make check-asan              the busted suite against a module built with
#                                ASan+UBSan (build/asan-$(LUA)/)
#   make check-valgrind-suite    the busted suite under valgrind memcheck
#   make check-static            clang-tidy + cppcheck on src/*.c, luacheck on
#                                every Lua file
#   make check-oom               each scenario's allocations failing one by one
#                                (test/check_oom.c), under ASan with leak checks
#
# Tools (scripts/setup-debian-dev installs them): clang, libclang-rt-14-dev
# (libFuzzer), clang-tidy, cppcheck, valgrind.

.PHONY: fuzz fuzz-build fuzz-regress check-asan check-valgrind-suite check-oom \
        check-static check-clang-tidy check-cppcheck check-luacheck

# ---------------------------------------------------------------- fuzzing
# Only the pure core: no Lua, no libcurl, so millions of inputs a minute.

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 20
FUZZ_HARNESSES := request headers retry pace resp h1
FUZZ_DIR := build/fuzz
FUZZ_BINS := $(FUZZ_HARNESSES:%=$(FUZZ_DIR)/fuzz_%)
# -fno-sanitize-recover: a UBSan finding must stop the run and save the
# input, not scroll past in the log.
FUZZ_CFLAGS := -std=c99 -g -O1 $(WARN) -fsanitize=fuzzer,address,undefined \
               -fno-sanitize-recover=all -fno-omit-frame-pointer -Isrc
# The core sources the harnesses link; another list (a patched copy of the
# core) may be given to check a proposed fix.
FUZZ_CORE_SRC ?= $(CORE_SRC)
# Longest input per harness: room for a 4 KiB key and a 2 KiB base URL;
# a head of many lines; a few header values; an answer of many lines
# (fuzz_h1 inflates runs of a byte to reach its 100 KiB and 256 KiB caps).
FUZZ_MAX_LEN_request := 8192
FUZZ_MAX_LEN_headers := 4096
FUZZ_MAX_LEN_retry := 512
FUZZ_MAX_LEN_pace := 1024
FUZZ_MAX_LEN_resp := 1024
FUZZ_MAX_LEN_h1 := 4096

fuzz-build: $(FUZZ_BINS)

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h $(FUZZ_CORE_SRC) src/psk_core.h src/psk_buf.h src/psk_h1.h src/psk_pace.h src/psk_resp.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(FUZZ_CORE_SRC) -o $@

# One target per harness, so make -j runs them side by side. New inputs go
# to build/fuzz/corpus/<h> (the committed seeds in fuzz/corpus/<h> are only
# read; past crashes in fuzz/regressions/<h> seed it too); a crash is saved as
# build/fuzz/<h>-crash-<sha1>.
FUZZ_RUNS := $(FUZZ_HARNESSES:%=fuzz-run-%)
.PHONY: $(FUZZ_RUNS)
fuzz: $(FUZZ_RUNS)
	@cat $(FUZZ_HARNESSES:%=$(FUZZ_DIR)/%.summary)

$(FUZZ_RUNS): fuzz-run-%: $(FUZZ_DIR)/fuzz_%
	@mkdir -p $(FUZZ_DIR)/corpus/$*
	@echo "fuzz: $* for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/$*.log)"
	@rc=0; ./$(FUZZ_DIR)/fuzz_$* -max_total_time=$(FUZZ_SECONDS) \
	  -max_len=$(FUZZ_MAX_LEN_$*) -dict=fuzz/$*.dict -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_DIR)/$*- \
	  $(FUZZ_DIR)/corpus/$* fuzz/corpus/$* $$(ls -d fuzz/regressions/$* 2>/dev/null) > $(FUZZ_DIR)/$*.log 2>&1 || rc=$$?; \
	execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_DIR)/$*.log); \
	secs=$$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' $(FUZZ_DIR)/$*.log); \
	echo "fuzz: $*: $${execs:-?} executions in $${secs:-?} s, exit $$rc" \
	  > $(FUZZ_DIR)/$*.summary; \
	if [ $$rc -ne 0 ]; then tail -n 40 $(FUZZ_DIR)/$*.log; \
	  ls $(FUZZ_DIR)/$*-crash-* $(FUZZ_DIR)/$*-leak-* $(FUZZ_DIR)/$*-timeout-* \
	    $(FUZZ_DIR)/$*-oom-* 2>/dev/null | sed 's/^/fuzz: saved /'; exit 1; fi

# Every seed and every past crash, one process each so that every failing
# input is named: a fast regression test (about a second).
fuzz-regress: $(FUZZ_BINS)
	@rc=0; for h in $(FUZZ_HARNESSES); do \
	  n=0; bad=0; \
	  for f in fuzz/corpus/$$h/* fuzz/regressions/$$h/*; do \
	    [ -f "$$f" ] || continue; n=$$((n + 1)); \
	    if ! ./$(FUZZ_DIR)/fuzz_$$h "$$f" > $(FUZZ_DIR)/regress.log 2>&1; then \
	      bad=$$((bad + 1)); \
	      grep -E 'invariant broken|ERROR: |runtime error' $(FUZZ_DIR)/regress.log | head -n 2; \
	      echo "fuzz-regress: $$h: FAILED on $$f"; \
	    fi; \
	  done; \
	  echo "fuzz-regress: $$h: $$n inputs, $$bad failed"; \
	  [ $$bad -eq 0 ] || rc=1; \
	done; exit $$rc

# ---------------------------------------------------------------- ASan/UBSan
# The module built with the sanitizers into its own directory (never over
# build/$(LUA)), then the busted suite against it. The interpreter is not
# instrumented, so the ASan runtime is preloaded into it; gcc builds the
# module, so gcc's runtimes are the ones that match. Children must not
# inherit the preload (see test/asan_unpreload.c): the interpreter runs
# through a wrapper, $(HARDEN_ASAN_BUILD)/lua, that preloads the runtimes
# and asan_unpreload.so, and the specs get the same wrapper as
# PERISKOPE_LUA for the Lua processes they start themselves.

HARDEN_ASAN_CC ?= gcc
HARDEN_ASAN_BUILD := build/asan-$(LUA)
HARDEN_ASAN_FLAGS := -g -O1 -fsanitize=address,undefined \
                     -fno-omit-frame-pointer -fno-sanitize-recover=all
HARDEN_ASAN_OBJ := $(patsubst src/%.c,$(HARDEN_ASAN_BUILD)/%.o,$(SRC))
HARDEN_ASAN_SO := $(HARDEN_ASAN_BUILD)/periskope.so
HARDEN_ASAN_UNPRELOAD := $(HARDEN_ASAN_BUILD)/asan_unpreload.so
HARDEN_ASAN_LUA := $(HARDEN_ASAN_BUILD)/lua
# detect_leaks=0: the interpreter's own allocations are not ours, and
# leaks are valgrind's job (check-valgrind, check-valgrind-suite).
HARDEN_ASAN_OPTIONS := detect_leaks=0:halt_on_error=1
HARDEN_UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1

$(HARDEN_ASAN_BUILD)/%.o: src/%.c src/*.h
	@mkdir -p $(@D)
	$(HARDEN_ASAN_CC) -std=c99 -fPIC -fvisibility=hidden $(WARN) $(HARDEN_ASAN_FLAGS) \
	  $(LUA_CFLAGS) $(CURL_CFLAGS) $(HIREDIS_CFLAGS) -c $< -o $@

# Rebuilt when the hiredis choice changes (the Makefile's stamp).
$(HARDEN_ASAN_OBJ): $(BUILD)/hiredis-$(HAVE_HIREDIS)

$(HARDEN_ASAN_SO): $(HARDEN_ASAN_OBJ)
	$(HARDEN_ASAN_CC) -shared $(HARDEN_ASAN_FLAGS) -o $@ $(HARDEN_ASAN_OBJ) $(CURL_LIBS) $(HIREDIS_LIBS)

$(HARDEN_ASAN_UNPRELOAD): test/asan_unpreload.c
	@mkdir -p $(@D)
	$(HARDEN_ASAN_CC) -std=c99 -O2 -fPIC -shared $(WARN) $< -o $@

# The runtimes' paths are asked of gcc when the wrapper is written.
$(HARDEN_ASAN_LUA): $(HARDEN_ASAN_UNPRELOAD) mk/hardening.mk
	@mkdir -p $(@D)
	@{ echo '#!/bin/sh'; \
	  echo '# Written by make check-asan: $(LUA_BIN) with the ASan and UBSan runtimes.'; \
	  echo 'LD_PRELOAD="$(shell $(HARDEN_ASAN_CC) -print-file-name=libasan.so) $(shell $(HARDEN_ASAN_CC) -print-file-name=libubsan.so) $(CURDIR)/$(HARDEN_ASAN_UNPRELOAD)"'; \
	  echo 'ASAN_OPTIONS=$(HARDEN_ASAN_OPTIONS) UBSAN_OPTIONS=$(HARDEN_UBSAN_OPTIONS)'; \
	  echo 'export LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS'; \
	  echo 'exec $(LUA_BIN) "$$@"'; } > $@
	@chmod +x $@

check-asan: $(HARDEN_ASAN_SO) $(HARDEN_ASAN_LUA)
	PERISKOPE_CPATH="$(CURDIR)/$(HARDEN_ASAN_BUILD)/?.so" \
	  PERISKOPE_LUA="$(CURDIR)/$(HARDEN_ASAN_LUA)" $(RUN_SPECS) --lua "$(CURDIR)/$(HARDEN_ASAN_LUA)" \
	  --times build/spec-times-asan-$(LUA) $(SPECS) -- $(BUSTED_ARGS)

# ---------------------------------------------------------------- valgrind
# The busted suite under memcheck: any invalid read or write, use of
# uninitialised memory or definitely lost block fails it (exit 3). Only the
# interpreter running busted is traced, not nginx, curl or the Lua processes
# that specs start. HARDEN_VG_SPECS picks a subset (default: every spec); the
# files run side by side as in `make test`. Upper bounds on the time a spec
# measures are four times looser (PERISKOPE_TIME_SCALE, spec/support/util.lua).

HARDEN_VG_SPECS ?=
HARDEN_VG := valgrind --quiet --error-exitcode=3 --leak-check=full \
  --errors-for-leak-kinds=definite --show-leak-kinds=definite \
  --num-callers=30

check-valgrind-suite: $(SO)
	PERISKOPE_CPATH="$(CURDIR)/$(BUILD)/?.so" PERISKOPE_LUA=$(LUA_BIN) PERISKOPE_TIME_SCALE=4 \
	  $(RUN_SPECS) --lua "$(HARDEN_VG) $(LUA_BIN)" --times build/spec-times-valgrind-$(LUA) \
	  $(HARDEN_VG_SPECS) -- $(BUSTED_ARGS)

# ---------------------------------------------------------------- static checks
# clang-tidy (checks and reasons in .clang-tidy) and cppcheck over src/*.c,
# then luacheck over every Lua file. Each must be clean. About a minute,
# nearly all of it clang-tidy's analyzer.

HARDEN_TIDY ?= clang-tidy
HARDEN_CPPCHECK ?= cppcheck
# Lua 5.4 and libcurl headers as the build sees them; mk/analyzer_lua.h
# tells the analyzer that the raising Lua functions do not return. Both
# check the hiredis code (PSK_HAVE_HIREDIS), not the few lines of its stub.
HARDEN_TIDY_FLAGS = -std=c99 -Isrc $(shell $(PKG_CONFIG) --cflags lua5.4 libcurl) \
  -DPSK_HAVE_HIREDIS -include mk/analyzer_lua.h
# cppcheck reads the Lua headers themselves (its lua.cfg misses
# luaL_argerror and wrongly wants lua_tostring's result used) but not the
# system ones, so LLONG_MAX, which luaconf.h tests, is given as <limits.h>
# has it; libcurl is described by cppcheck's own libcurl.cfg.
HARDEN_CPPCHECK_FLAGS := --enable=warning,style,performance,portability \
  --error-exitcode=1 --inline-suppr --quiet --std=c99 \
  --library=posix --library=libcurl -Isrc -I/usr/include/lua5.4 -DPSK_HAVE_HIREDIS \
  -DLLONG_MAX=9223372036854775807LL --suppress-xml=mk/cppcheck.suppress \
  --template='{file}:{line}: {severity}: {message} [{id}]'
# Every Lua file of the repository, wherever it is (spec, examples, test,
# bench, .busted, .luacheckrc, ...), and scripts without an extension whose
# first line runs lua, or that are sh then Lua (bin/periskope: a "--[["
# second line); build/ and .git/ hold none of ours.
HARDEN_FIND = find . \( -path ./build -o -path ./.git -o -path ./luarocks-tree \) -prune -o -type f
HARDEN_LUA_FILES = $(shell { $(HARDEN_FIND) \( -name '*.lua' -o -name .busted -o -name .luacheckrc \) -print; \
  $(HARDEN_FIND) ! -name '*.*' -exec sh -c 'head -n 2 "$$1" | grep -q -e "^\#!.*lua" -e "^--\[\[ "' _ {} \; -print; } \
  | sed 's|^\./||' | sort)
# luacheck given a rockspec checks the modules the rockspec lists, not the
# rockspec itself: it reads those from stdin under their own name.
HARDEN_ROCKSPECS = $(wildcard *.rockspec rockspec/*.rockspec)

check-static: check-clang-tidy check-cppcheck check-luacheck

# The "N warnings generated." lines count what system headers hold and
# --quiet hides; they are dropped, the findings and the status are kept.
check-clang-tidy:
	@mkdir -p build
	@echo "$(HARDEN_TIDY) --quiet src/*.c -- $(HARDEN_TIDY_FLAGS)"
	@rc=0; $(HARDEN_TIDY) --quiet src/*.c -- $(HARDEN_TIDY_FLAGS) > build/clang-tidy.log 2>&1 || rc=$$?; \
	grep -v '^[0-9]* warnings* generated\.$$' build/clang-tidy.log; \
	echo "clang-tidy: exit $$rc"; exit $$rc

check-cppcheck:
	$(HARDEN_CPPCHECK) $(HARDEN_CPPCHECK_FLAGS) src/*.c

check-luacheck:
	luacheck --no-color -q $(HARDEN_LUA_FILES)
	@rc=0; for f in $(HARDEN_ROCKSPECS); do \
	  luacheck --no-color -q --filename "$$f" - < "$$f" || rc=1; \
	done; exit $$rc

# ---------------------------------------------------------------- allocation failure
# test/check_oom.c: every allocation of a pin, pin_many, build_pin,
# read_response, the options and both limiters fails in turn (Lua's,
# libcurl's and the module's own), and of the core's HTTP/1.1 reader and
# request framer (C scenarios), under ASan with its leak check on. The
# module's objects are linked into the driver, built against Lua 5.4
# whatever LUA is; the driver runs under the local Periskope server and
# starts its own redis-server.

HARDEN_OOM_CC ?= gcc
HARDEN_OOM_BUILD := build/oom
HARDEN_OOM_FLAGS := $(HARDEN_ASAN_FLAGS)
# Recursive (=): pkg-config runs only when check-oom builds, not on every make.
HARDEN_OOM_LUA_CFLAGS = $(shell $(PKG_CONFIG) --cflags lua5.4)
HARDEN_OOM_LUA_LIBS = $(shell $(PKG_CONFIG) --libs lua5.4)
HARDEN_OOM_OBJ := $(patsubst src/%.c,$(HARDEN_OOM_BUILD)/%.o,$(SRC))
HARDEN_OOM_BIN := $(HARDEN_OOM_BUILD)/check_oom
HARDEN_OOM_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup

$(HARDEN_OOM_BUILD)/%.o: src/%.c src/*.h
	@mkdir -p $(@D)
	$(HARDEN_OOM_CC) -std=c99 $(WARN) $(HARDEN_OOM_FLAGS) $(HARDEN_OOM_LUA_CFLAGS) \
	  $(CURL_CFLAGS) $(HIREDIS_CFLAGS) -c $< -o $@

$(HARDEN_OOM_BIN): test/check_oom.c $(HARDEN_OOM_OBJ)
	$(HARDEN_OOM_CC) -std=c99 $(WARN) $(HARDEN_OOM_FLAGS) -Isrc $(HARDEN_OOM_LUA_CFLAGS) \
	  $(CURL_CFLAGS) $(HIREDIS_CFLAGS) test/check_oom.c $(HARDEN_OOM_OBJ) \
	  $(HARDEN_OOM_WRAP) $(HARDEN_OOM_LUA_LIBS) $(CURL_LIBS) $(HIREDIS_LIBS) -lm -o $@

check-oom: $(HARDEN_OOM_BIN)
	ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/test/check_oom.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=$(HARDEN_UBSAN_OPTIONS) \
	  lua5.4 spec/support/run_with_server.lua --rate-limit 1000000 -- ./$(HARDEN_OOM_BIN)
