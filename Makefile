# periskope: build, test, install and demo.
#
#   make                      build build/$(LUA)/periskope.so (Lua 5.4 by default)
#   make LUA=lua5.1           another Lua, by pkg-config name (lua5.1 ... lua5.4, luajit)
#   make test                 busted specs against the built module
#   make test-all             the specs under lua5.1, lua5.2, lua5.3, lua5.4 and luajit
#   make test-contention      shared pacing: many nginx workers and processes, one budget
#   make check-core           the pure C core's own tests, under ASan/UBSan
#   make check-valgrind       1,000 pins under valgrind memcheck
#   make demo                 pin through the bundled local Periskope server
#   make install              the module into $(LUA_CMOD), the command into $(BINDIR)

LUA ?= lua5.4
PKG_CONFIG ?= pkg-config
CC ?= cc

# luarocks passes LUA_INCDIR; otherwise pkg-config knows the headers.
ifdef LUA_INCDIR
LUA_CFLAGS := -I$(LUA_INCDIR)
else
LUA_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(LUA))
endif
CURL_CFLAGS := $(shell $(PKG_CONFIG) --cflags libcurl)
CURL_LIBS := $(shell $(PKG_CONFIG) --libs libcurl)
# hiredis: the Redis store of shared pacing (periskope.limiter.redis).
HIREDIS_CFLAGS := $(shell $(PKG_CONFIG) --cflags hiredis)
HIREDIS_LIBS := $(shell $(PKG_CONFIG) --libs hiredis)

# The interpreter that runs the specs for this build.
LUA_BIN_lua5.1 := lua5.1
LUA_BIN_lua5.2 := lua5.2
LUA_BIN_lua5.3 := lua5.3
LUA_BIN_lua5.4 := lua5.4
LUA_BIN_luajit := luajit
LUA_BIN ?= $(or $(LUA_BIN_$(LUA)),lua)
LUA_VERSION_DIR := $(shell $(LUA_BIN) -e 'print((_VERSION:gsub("Lua ","")))' 2>/dev/null || echo 5.4)

PREFIX ?= /usr/local
LUA_CMOD ?= $(PREFIX)/lib/lua/$(LUA_VERSION_DIR)
BINDIR ?= $(PREFIX)/bin

WARN := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=c99 -fPIC -fvisibility=hidden $(WARN) $(CFLAGS) \
              $(LUA_CFLAGS) $(CURL_CFLAGS) $(HIREDIS_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS_SO := -shared $(LDFLAGS) $(EXTRA_LDFLAGS)

BUILD := build/$(LUA)
CORE_SRC := src/psk_buf.c src/psk_core.c src/psk_pace.c src/psk_time.c
SRC := $(CORE_SRC) src/psk_http.c src/psk_redis.c src/lpace.c \
       src/lpsk_check.c src/lpsk_result.c src/lpsk_job.c src/lpsk_pin.c \
       src/lperiskope.c
OBJ := $(patsubst src/%.c,$(BUILD)/%.o,$(SRC))
SO := $(BUILD)/periskope.so

BUSTED ?= /usr/bin/busted

LUAS := lua5.1 lua5.2 lua5.3 lua5.4 luajit

.PHONY: all test test-all test-contention check-core check-valgrind demo install clean

all: $(SO)

$(BUILD)/%.o: src/%.c src/*.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD):
	mkdir -p $@

# libcurl and hiredis are linked; liblua is not: the host (lua, luajit, nginx, nvim) has it.
$(SO): $(OBJ)
	$(CC) $(LDFLAGS_SO) -o $@ $(OBJ) $(CURL_LIBS) $(HIREDIS_LIBS)

test: $(SO)
	PERISKOPE_CPATH="$(CURDIR)/$(BUILD)/?.so" PERISKOPE_LUA=$(LUA_BIN) $(LUA_BIN) $(BUSTED) $(BUSTED_ARGS)

# Shared pacing under contention (spec/contention_spec.lua, tag "contention",
# left out of `make test`): nginx workers, Lua 5.4 and LuaJIT processes and
# the Redis they share each run their own build, whatever LUA is.
test-contention: $(SO)
	PERISKOPE_CPATH="$(CURDIR)/$(BUILD)/?.so" PERISKOPE_LUA=$(LUA_BIN) $(LUA_BIN) $(BUSTED) --run=contention $(BUSTED_ARGS)

# Each interpreter builds its own module in build/<lua>/ and runs every spec.
test-all:
	@rc=0; for l in $(LUAS); do \
	  echo "== $$l"; $(MAKE) --no-print-directory LUA=$$l test || rc=1; \
	done; exit $$rc

# The pure core and buffer, without Lua or libcurl, under the sanitizers.
build/check-core: test/check_core.c $(CORE_SRC) src/psk_core.h src/psk_buf.h src/psk_pace.h src/psk_time.h
	mkdir -p build
	$(CC) -std=c99 -g -O1 $(WARN) -fsanitize=address,undefined \
	  -fno-sanitize-recover=all -Isrc test/check_core.c $(CORE_SRC) -lm -o $@

check-core: build/check-core
	./build/check-core

check-valgrind: $(SO)
	PERISKOPE_CPATH="$(CURDIR)/$(BUILD)/?.so" $(LUA_BIN) spec/support/run_with_server.lua -- \
	  valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 \
	  $(LUA_BIN) test/pin_loop.lua 1000

demo: $(SO)
	PERISKOPE_CPATH="$(CURDIR)/$(BUILD)/?.so" sh examples/demo.sh "$(LUA_BIN)"

# The command runs under the interpreter the module was built for.
install: $(SO)
	install -d "$(DESTDIR)$(LUA_CMOD)" "$(DESTDIR)$(BINDIR)"
	install -m 0755 $(SO) "$(DESTDIR)$(LUA_CMOD)/periskope.so"
	sed '1s|^#!.*|#!/usr/bin/env $(LUA_BIN)|' bin/periskope > "$(DESTDIR)$(BINDIR)/periskope"
	chmod 0755 "$(DESTDIR)$(BINDIR)/periskope"

clean:
	rm -rf build

# Further targets (fuzzing, sanitizers, static checks, benchmark) live in mk/.
-include mk/*.mk
