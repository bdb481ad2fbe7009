# periskope: build, test, install and demo.
#
#   make                      build build/$(LUA)/periskope.so (Lua 5.4 by default)
#   make LUA=lua5.1           another Lua, by pkg-config name (lua5.1 ... lua5.4, luajit)
#   make test                 busted specs against the built module
#   make test-all             the specs under lua5.1, lua5.2, lua5.3, lua5.4 and luajit
#   make test-contention      shared pacing: many nginx workers and processes, one budget
#   make test-nohiredis       the specs against a build without hiredis (HIREDIS=no)
#   make check-core           the pure C core's own tests, under ASan/UBSan
#   make check-redis          the Redis store's exchange, sans-I/O, under ASan/UBSan
#   make check-valgrind       1,000 pins under valgrind memcheck
#   make demo                 pin through the bundled local Periskope server
#   make install              the module into $(LUA_CMOD), the command into $(BINDIR),
#                             its man page, the LuaLS annotations; make uninstall
#   make nvim                 the checkout as a Neovim plugin: lua/periskope.so, doc/tags
#   make dist                 the release tarball and its rockspec (build/dist/)
#   make deb                  the Debian package, lintian clean (build/deb/)

LUA ?= lua5.4
PKG_CONFIG ?= pkg-config
CC ?= cc

# luarocks passes LUA_INCDIR; otherwise pkg-config knows the headers.
ifdef LUA_INCDIR
LUA_CFLAGS := -I$(LUA_INCDIR)
else
LUA_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(LUA))
endif
# libcurl: where LuaRocks says (it passes CURL_INCDIR and CURL_LIBDIR, from
# the CURL_DIR it found or was given), else where pkg-config says.
ifneq ($(CURL_INCDIR)$(CURL_LIBDIR),)
CURL_CFLAGS := $(if $(CURL_INCDIR),-I$(CURL_INCDIR))
CURL_LIBS := $(if $(CURL_LIBDIR),-L$(CURL_LIBDIR)) -lcurl
else
CURL_CFLAGS := $(shell $(PKG_CONFIG) --cflags libcurl 2>/dev/null)
CURL_LIBS := $(or $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null),-lcurl)
endif

# ---------------------------------------------------------------- hiredis
# The Redis store of shared pacing (periskope.limiter.redis) is optional.
# HIREDIS=auto (the default) uses hiredis when pkg-config finds it; no
# builds without it (periskope.limiter.redis then raises, saying what is
# missing); yes stops when it is missing. Changing it rebuilds the objects.
# Empty is auto: the rockspec passes HIREDIS as LuaRocks was given it
# (`luarocks make HIREDIS=no`), empty when it was not.
HIREDIS ?= auto
override HIREDIS := $(or $(HIREDIS),auto)
ifeq ($(filter auto yes no,$(HIREDIS)),)
$(error HIREDIS=$(HIREDIS): it must be auto, yes or no)
endif
ifneq ($(HIREDIS),no)
HAVE_HIREDIS := $(shell $(PKG_CONFIG) --exists hiredis 2>/dev/null && echo yes)
endif
ifeq ($(HAVE_HIREDIS),yes)
HIREDIS_CFLAGS := -DPSK_HAVE_HIREDIS $(shell $(PKG_CONFIG) --cflags hiredis)
HIREDIS_LIBS := $(shell $(PKG_CONFIG) --libs hiredis)
else
HAVE_HIREDIS := no
ifeq ($(HIREDIS),yes)
$(error HIREDIS=yes, but pkg-config finds no hiredis: install libhiredis-dev (Debian), or build without it, which only periskope.limiter.redis needs: make HIREDIS=no, luarocks make HIREDIS=no)
endif
endif
# The specs read it to know what periskope.limiter.redis must do.
export PERISKOPE_HIREDIS := $(HAVE_HIREDIS)
# HIREDIS=no, asked for, builds beside the usual build (build/<lua>-nohiredis),
# so that the suite without hiredis can run while other builds are in use;
# the specs that build a module for another host (spec/support/hosts.lua)
# read the suffix.
export PERISKOPE_BUILD_SUFFIX := $(if $(filter no,$(HIREDIS)),-nohiredis)
# ----------------------------------------------------------------

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

# A LuaRocks build (it passes LUA_INCDIR) keeps apart from make's own.
BUILD := build/$(if $(LUA_INCDIR),rock-$(notdir $(LUA_INCDIR)),$(LUA))$(PERISKOPE_BUILD_SUFFIX)
CORE_SRC := src/psk_buf.c src/psk_core.c src/psk_h1.c src/psk_pace.c src/psk_resp.c src/psk_time.c
SRC := $(CORE_SRC) src/psk_fork.c src/psk_one.c src/psk_http.c src/psk_redis.c src/lpace.c \
       src/lpsk_client.c src/lpsk_check.c src/lpsk_head.c src/lpsk_result.c src/lpsk_pace.c src/lpsk_job.c src/lpsk_pin.c src/lpsk_wire.c \
       src/lpsk_async.c src/lperiskope.c
OBJ := $(patsubst src/%.c,$(BUILD)/%.o,$(SRC))
SO := $(BUILD)/periskope.so

BUSTED ?= /usr/bin/busted

LUAS := lua5.1 lua5.2 lua5.3 lua5.4 luajit

.PHONY: all test test-all test-contention check-core check-valgrind demo install uninstall clean

all: $(SO)

$(BUILD)/%.o: src/%.c src/*.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD):
	mkdir -p $@

# A stamp named after the hiredis choice: changing it rebuilds the objects.
$(OBJ): $(BUILD)/hiredis-$(HAVE_HIREDIS)
$(BUILD)/hiredis-$(HAVE_HIREDIS): | $(BUILD)
	rm -f $(BUILD)/hiredis-*
	touch $@

# libcurl and hiredis are linked; liblua is not: the host (lua, luajit, nginx, nvim) has it.
$(SO): $(OBJ)
	$(CC) $(LDFLAGS_SO) -o $@ $(OBJ) $(CURL_LIBS) $(HIREDIS_LIBS)
	@echo "periskope: $@ $(if $(filter yes,$(HAVE_HIREDIS)),links hiredis (HIREDIS=no leaves it out),has no Redis store: no hiredis (HIREDIS=$(HIREDIS)))"

# The spec files run side by side, each in its own busted process with its
# own local servers (spec/support/run_specs.lua); then the failures, one
# summary line and the ten slowest specs. SPECS picks files, SPEC_JOBS how
# many run at once, BUSTED_ARGS go to every busted process.
SPECS ?=
SPEC_JOBS ?= 6
RUN_SPECS = $(LUA_BIN) spec/support/run_specs.lua --jobs $(SPEC_JOBS) --busted $(BUSTED)

test: $(SO)
	PERISKOPE_CPATH="$(CURDIR)/$(BUILD)/?.so" PERISKOPE_LUA=$(LUA_BIN) \
	  $(RUN_SPECS) --times build/spec-times-$(notdir $(BUILD)) $(SPECS) -- $(BUSTED_ARGS)

# Shared pacing under contention (spec/contention*_spec.lua, tag
# "contention", left out of `make test`), the files side by side: nginx
# workers, Lua 5.4 and LuaJIT processes and the Redis they share each run
# their own build, whatever LUA is.
test-contention: $(SO)
	PERISKOPE_CPATH="$(CURDIR)/$(BUILD)/?.so" PERISKOPE_LUA=$(LUA_BIN) \
	  $(RUN_SPECS) --times build/spec-times-contention $(wildcard spec/contention*_spec.lua) \
	  -- --run=contention $(BUSTED_ARGS)

# Each interpreter builds its own module in build/<lua>/ and runs every
# spec: TEST_ALL_PARALLEL suites side by side, each with TEST_ALL_JOBS
# processes at once (a small machine's CI runs fewer, for time bounds that
# keep their meaning). The five builds come first: the OpenResty and
# Neovim specs of every suite load the LuaJIT one (spec/support/hosts.lua),
# which must not be rebuilt under them.
TEST_ALL_JOBS ?= 3
TEST_ALL_PARALLEL ?= 5
test-all:
	@$(MAKE) --no-print-directory -j5 $(LUAS:%=build-%)
	@$(MAKE) --no-print-directory -j$(TEST_ALL_PARALLEL) $(LUAS:%=test-all-%)

.PHONY: $(LUAS:%=build-%)
$(LUAS:%=build-%): build-%:
	@$(MAKE) --no-print-directory LUA=$* all

.PHONY: $(LUAS:%=test-all-%)
$(LUAS:%=test-all-%): test-all-%:
	@mkdir -p build; $(MAKE) --no-print-directory LUA=$* SPEC_JOBS=$(TEST_ALL_JOBS) test > build/test-all-$*.log 2>&1; \
	  rc=$$?; echo "== $*"; cat build/test-all-$*.log; exit $$rc

# The pure core and buffer, without Lua or libcurl, under the sanitizers.
build/check-core: test/check_core.c $(CORE_SRC) src/psk_core.h src/psk_buf.h src/psk_h1.h src/psk_pace.h src/psk_resp.h src/psk_time.h
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

# ---------------------------------------------------------------- hiredis
# The suite against a build without hiredis, as a user without
# libhiredis-dev gets it: all but the Redis store's specs (tag redis), on a
# build of its own (build/$(LUA)-nohiredis).
.PHONY: test-nohiredis
test-nohiredis:
	$(MAKE) --no-print-directory HIREDIS=no test \
	  BUSTED_ARGS="--exclude-tags=redis,contention $(BUSTED_ARGS)"

# The Redis store's exchange (psk_redis_x) fed canned replies, no server:
# test/check_redis.c, with hiredis, under ASan/UBSan. It needs hiredis.
REDIS_TEST_SRC := src/psk_redis.c src/psk_resp.c src/psk_fork.c src/psk_time.c
.PHONY: check-redis
build/check-redis: test/check_redis.c $(REDIS_TEST_SRC) src/psk_redis.h src/psk_resp.h src/psk_fork.h src/psk_time.h src/psk_pace.h
	@test "$(HAVE_HIREDIS)" = yes || { echo "check-redis: pkg-config finds no hiredis: install libhiredis-dev"; exit 1; }
	mkdir -p build
	$(CC) -std=c99 -g -O1 $(WARN) -fsanitize=address,undefined \
	  -fno-sanitize-recover=all -Isrc $(HIREDIS_CFLAGS) test/check_redis.c $(REDIS_TEST_SRC) \
	  $(HIREDIS_LIBS) -lm -o $@

check-redis: build/check-redis
	./build/check-redis

# ---------------------------------------------------------------- install
# The module, its Lua modules for the non-blocking hosts (periskope.ngx,
# periskope.uv, from lua/), the command (told which interpreter and module
# directory it goes with), its man page and the LuaLS annotations (meta/,
# not on any package.path: a periskope.lua there would hide the C module
# from require). install-module, install-command and install-data are its
# parts (the Debian package's rules take the last two; dh-lua installs the
# modules).
LUA_LMOD ?= $(PREFIX)/share/lua/$(LUA_VERSION_DIR)
LUA_MODULES := periskope/ngx.lua periskope/uv.lua periskope/nvim.lua
MANDIR ?= $(PREFIX)/share/man
METADIR ?= $(PREFIX)/share/periskope/meta
# The module directory the command searches first; empty, none (LuaRocks,
# where the command finds the tree it is installed in, or Debian's paths).
INSTALLED_CMOD ?= $(LUA_CMOD)
# The command's first line names the interpreter itself, so that no shell
# runs before Lua on each call; when it is not found, the sh launcher is
# kept, told which Lua to run.
LUA_INTERP ?= $(shell command -v $(LUA_BIN) 2>/dev/null)
# COMMAND_VERSIONED=yes installs periskope-<Lua version> beside periskope:
# LuaRocks deploys both into the tree's bin/, and the one periskope there is
# the last Lua version installed, so each version keeps a name of its own.
COMMAND_VERSIONED ?= no
COMMANDS := periskope $(if $(filter yes,$(COMMAND_VERSIONED)),periskope-$(LUA_VERSION_DIR))

.PHONY: install-module install-command install-data
install: install-module install-command install-data

install-module: $(SO)
	install -d "$(DESTDIR)$(LUA_CMOD)" "$(DESTDIR)$(LUA_LMOD)/periskope"
	install -m 0755 $(SO) "$(DESTDIR)$(LUA_CMOD)/periskope.so"
	for m in $(LUA_MODULES); do install -m 0644 lua/$$m "$(DESTDIR)$(LUA_LMOD)/$$m" || exit 1; done

install-command:
	install -d "$(DESTDIR)$(BINDIR)"
	for c in $(COMMANDS); do \
	  sed -e 's|^lua=$$|lua=$(LUA_BIN)|' \
	    $(if $(LUA_INTERP),-e '1s|^#!/bin/sh$$|#!$(LUA_INTERP)|') \
	    $(if $(INSTALLED_CMOD),-e 's|^local INSTALLED_CMOD = nil$$|local INSTALLED_CMOD = "$(INSTALLED_CMOD)"|') \
	    bin/periskope > "$(DESTDIR)$(BINDIR)/$$c" && chmod 0755 "$(DESTDIR)$(BINDIR)/$$c" || exit 1; \
	done

install-data:
	install -d "$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(METADIR)"
	install -m 0644 doc/periskope.1 "$(DESTDIR)$(MANDIR)/man1/periskope.1"
	install -m 0644 meta/periskope.lua "$(DESTDIR)$(METADIR)/periskope.lua"

uninstall:
	rm -f "$(DESTDIR)$(LUA_CMOD)/periskope.so" $(COMMANDS:%="$(DESTDIR)$(BINDIR)/%") \
	  "$(DESTDIR)$(MANDIR)/man1/periskope.1" "$(DESTDIR)$(METADIR)/periskope.lua" \
	  $(LUA_MODULES:%="$(DESTDIR)$(LUA_LMOD)/%")
	rmdir "$(DESTDIR)$(METADIR)" "$(DESTDIR)$(PREFIX)/share/periskope" \
	  "$(DESTDIR)$(LUA_LMOD)/periskope" 2>/dev/null || true
# ----------------------------------------------------------------

# ---------------------------------------------------------------- Neovim plugin
# make nvim: the build step of the checkout as a Neovim plugin (plugin
# managers run it; lazy.nvim through build.lua). The module built for
# LuaJIT goes to lua/periskope.so, where Neovim's loader looks on
# 'runtimepath' (lua/<name>.so), through a rename, so that a Neovim that
# has the old one loaded keeps its mapping; when nvim is there, doc/tags is
# made for :help periskope (plugin managers make it too). Git ignores both.
NVIM ?= nvim
NVIM_BUILD := build/luajit$(PERISKOPE_BUILD_SUFFIX)

.PHONY: nvim
nvim:
	@$(PKG_CONFIG) --exists luajit || { echo "make nvim: pkg-config finds no luajit:" \
	  "install libluajit2-5.1-dev (Debian) or your system's LuaJIT headers" >&2; exit 1; }
	@$(MAKE) --no-print-directory LUA=luajit all
	cp $(NVIM_BUILD)/periskope.so lua/periskope.so.tmp && mv -f lua/periskope.so.tmp lua/periskope.so
	@if command -v $(NVIM) >/dev/null 2>&1; then \
	  echo "$(NVIM) --headless -u NONE -c 'helptags doc'"; \
	  $(NVIM) --headless -u NONE -i NONE -n -c \
	    'lua local ok, e = pcall(vim.cmd, "helptags $(CURDIR)/doc") if not ok then io.stderr:write(e, "\n") os.exit(1) end' \
	    -c 'qa!' </dev/null || exit 1; \
	else echo "make nvim: no $(NVIM) here: doc/tags not made (:helptags ALL in Neovim makes it)"; fi
# ----------------------------------------------------------------

# ---------------------------------------------------------------- release
# make dist: $(DIST_DIR)/periskope-$(VERSION).tar.gz, the committed tree
# (git archive HEAD) less what .gitattributes marks export-ignore (the
# specs, fuzz harnesses, bench and CI), and $(DIST_DIR)/periskope-$(VERSION)-1.rockspec,
# the scm rockspec with that tarball, its md5 and its top directory as the
# source. DIST_URL is where the tarball is published (.ci/run gives a
# file:// URL to build and pack it offline).
VERSION := $(shell sed -n 's/^\#define PSK_VERSION "\(.*\)"$$/\1/p' src/psk_core.h)
HOMEPAGE := $(shell sed -n 's/^ *homepage = "\(.*\)",$$/\1/p' rockspec/periskope-scm-1.rockspec)
DIST_DIR ?= build/dist
DIST_NAME := periskope-$(VERSION)
DIST_URL ?= $(HOMEPAGE)/releases/download/v$(VERSION)/$(DIST_NAME).tar.gz

.PHONY: dist
dist:
	@test -n "$(VERSION)" || { echo "dist: no PSK_VERSION in src/psk_core.h"; exit 1; }
	@git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { echo "dist: git archive needs a clone"; exit 1; }
	mkdir -p $(DIST_DIR)
	git archive --format=tar.gz --prefix=$(DIST_NAME)/ -o $(DIST_DIR)/$(DIST_NAME).tar.gz HEAD
	md5=$$(md5sum $(DIST_DIR)/$(DIST_NAME).tar.gz | cut -d' ' -f1) && \
	sed -e '1i -- periskope $(VERSION), written by make dist from rockspec/periskope-scm-1.rockspec.' \
	  -e '/^rockspec_format/,$$!d' \
	  -e 's|^version = "scm-1"|version = "$(VERSION)-1"|' \
	  -e "s|^  url = \"git+.*|  url = \"$(DIST_URL)\",\n  md5 = \"$$md5\",\n  dir = \"$(DIST_NAME)\",|" \
	  rockspec/periskope-scm-1.rockspec > $(DIST_DIR)/$(DIST_NAME)-1.rockspec
	@echo "dist: $(DIST_DIR)/$(DIST_NAME).tar.gz $(DIST_DIR)/$(DIST_NAME)-1.rockspec"
# ----------------------------------------------------------------

# ---------------------------------------------------------------- Debian package
# make deb: $(DEB_DIR)/lua-periskope_$(VERSION)_<arch>.deb, built by Debian's
# own tooling (debian/: debhelper and dh-lua; scripts/setup-debian-dev
# installs them) from the files of the release tarball (.gitattributes) as
# they are in the work tree (tracked files: `git stash create`), unpacked
# into $(DEB_DIR)/src so that the checkout stays clean; then lintian, which
# must be clean. From a release tarball (no git), its own files.
DEB_DIR ?= build/deb
DEB_ARCH = $(shell dpkg --print-architecture)
DEB = $(DEB_DIR)/lua-periskope_$(VERSION)_$(DEB_ARCH).deb
LINTIAN_FLAGS ?= --info --display-experimental --pedantic --fail-on error,warning,info,pedantic,experimental

.PHONY: deb print-sources
deb:
	@v=$$(dpkg-parsechangelog -S Version); [ "$$v" = "$(VERSION)" ] || \
	  { echo "deb: debian/changelog says $$v, src/psk_core.h $(VERSION): add a changelog entry (dch -v $(VERSION))"; exit 1; }
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  tree=$$(git stash create) && git archive --format=tar $${tree:-HEAD} | tar -x -C $(DEB_DIR)/src; \
	else tar -c --exclude=./build . | tar -x -C $(DEB_DIR)/src; fi
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc --no-sign
	lintian $(LINTIAN_FLAGS) $(DEB)
	@echo "deb: $(DEB)"

# The module's C sources, for debian/lua5.*.dh-lua.conf.
print-sources:
	@echo $(SRC)
# ----------------------------------------------------------------

clean:
	rm -rf build
	rm -f lua/periskope.so doc/tags

# The release tarball (make dist, .gitattributes) leaves out the specs, the
# fuzz harnesses and the bench: their targets stop at once, saying so.
TARBALL_LACKS = $(if $(wildcard spec/helper.lua),,$(if $(filter test test-all test-contention \
  test-nohiredis check-asan check-valgrind-suite,$(MAKECMDGOALS)),spec/)) \
  $(if $(wildcard fuzz/fuzz.h),,$(if $(filter fuzz fuzz-build fuzz-regress,$(MAKECMDGOALS)),fuzz/)) \
  $(if $(wildcard bench/bench.lua),,$(if $(filter bench bench-build bench-node bench-deps \
  bench-nonblocking,$(MAKECMDGOALS)),bench/))
ifneq ($(strip $(TARBALL_LACKS)),)
$(error $(strip $(TARBALL_LACKS)) not in the release tarball, only in the repository ($(HOMEPAGE)): \
  make $(MAKECMDGOALS) needs a clone)
endif

# Further targets (fuzzing, sanitizers, static checks, benchmark) live in mk/.
-include mk/*.mk
