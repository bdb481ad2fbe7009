# Benchmark: periskope against a raw libcurl loop and its peers, on the local
# Periskope server. Included by the Makefile (-include mk/*.mk); it reuses
# the Makefile's LUA_BIN, BUILD, WARN, CURL_CFLAGS and CURL_LIBS and names
# its own variables BENCH_*.
#
#   make bench        build both modules and the raw C loops, then run
#                     bench/bench.lua (about 4-5 minutes); results go to
#                     bench/results.md, bench/README.md (between its bench
#                     markers) and bench/pins_per_second.png; then
#                     bench/nonblocking.lua (bench/nonblocking.md)
#   make bench-nonblocking  only the non-blocking part (about 4 minutes):
#                     periskope.ngx in nginx's worker beside a pin by hand
#                     over cosockets, periskope.uv in Neovim's loop beside
#                     the pool-thread way; results in bench/nonblocking.md
#   make soak         nginx reloaded every 10 s and processes on Redis,
#                     pinning for SOAK_SECONDS (default 600) against local
#                     servers made hostile at random: bench/soak.lua, the
#                     figures of a full run in bench/results.md
#   make bench-deps   what the bench uses beyond scripts/setup-debian-dev:
#                     lua-curl, gnuplot-nox, valgrind, linux-perf, hyperfine
#                     (apt-get) and the Node client (npm ci in bench/node)
#
# Settings (environment or make variables): BENCH_PINS, BENCH_WARMUP,
# BENCH_ROUNDS, BENCH_CURL_PINS, BENCH_NODE_PINS, BENCH_CG_N1, BENCH_CG_N2,
# BENCH_CG_REPEAT, BENCH_CG_LIBDIR, BENCH_MANY_TRIPS, BENCH_MANY_LATENCY,
# BENCH_RSS_N1, BENCH_RSS_N2, BENCH_HOST_PINS, BENCH_SERVER_CPU,
# BENCH_CLIENT_CPU, BENCH_RAW_MULTI, BENCH_FAIR, BENCH_FAIR_RATE,
# BENCH_FAIR_WINDOW, BENCH_CMD_ROUNDS, BENCH_CMD_RUNS, BENCH_CMD_WARMUP and
# BENCH_PARTS (e.g. BENCH_PARTS=cmd: only the command against curl;
# BENCH_PARTS=cg: only the callgrind part, written to
# build/bench/results-partial.md); see bench/common.lua (the settings) and
# bench/bench.lua (the parts).

.PHONY: bench bench-deps bench-build bench-node

BENCH_DIR := build/bench
BENCH_RAW := $(BENCH_DIR)/raw_curl
BENCH_RAW_MULTI := $(BENCH_DIR)/raw_multi
BENCH_NB_LOAD := $(BENCH_DIR)/nb_load
BENCH_CC ?= $(CC)

$(BENCH_DIR)/%: bench/%.c bench/raw_common.h
	@mkdir -p $(BENCH_DIR)
	$(BENCH_CC) -std=c99 -O2 -g $(WARN) $(CURL_CFLAGS) $< -o $@ $(CURL_LIBS)

# Both modules, each with its own build directory, through the Makefile.
bench-build: $(BENCH_RAW) $(BENCH_RAW_MULTI) $(BENCH_NB_LOAD)
	$(MAKE) --no-print-directory LUA=lua5.4 all
	$(MAKE) --no-print-directory LUA=luajit all

# The Node client from the lockfile, once; without npm (or the registry)
# the bench prints "skipped: npm unavailable" for its row.
bench-node:
	@if [ -f bench/node/node_modules/@periskope/periskope-client/package.json ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  (cd bench/node && timeout 300 npm ci --no-audit --no-fund --loglevel=error) || \
	    echo "bench: npm ci failed: the Node client row will be skipped"; \
	else echo "bench: npm unavailable: the Node client row will be skipped"; fi

bench-deps:
	apt-get install -y lua-curl gnuplot-nox valgrind linux-perf hyperfine
	$(MAKE) --no-print-directory bench-node

bench: bench-build bench-node
	BENCH_RAW=$(BENCH_RAW) BENCH_RAW_MULTI=$(BENCH_RAW_MULTI) BENCH_DIR=$(BENCH_DIR) lua5.4 bench/bench.lua
	$(if $(BENCH_PARTS),@echo "bench: BENCH_PARTS given: bench/nonblocking.lua not run (make bench-nonblocking runs it)",$(BENCH_NB_RUN))

# Pinning without blocking the host (OpenResty's worker, Neovim's loop):
# bench/nonblocking.lua, results in bench/nonblocking.md. The script, the
# local servers and the load generator run on BENCH_SERVER_CPU; it moves
# the measured nginx worker and nvim to BENCH_CLIENT_CPU itself.
# BENCH_NB_PARTS (e.g. a1,b) runs some of its steps (see the script).
BENCH_NB_RUN = BENCH_NB_LOAD=$(BENCH_NB_LOAD) $(if $(shell command -v taskset),taskset -c $(or $(BENCH_SERVER_CPU),0)) \
  lua5.4 bench/nonblocking.lua
.PHONY: bench-nonblocking
bench-nonblocking: $(BENCH_NB_LOAD)
	$(MAKE) --no-print-directory LUA=luajit all
	$(BENCH_NB_RUN)

# The soak (issue 21): an nginx of 4 workers on the shared-dictionary
# limiter, reloaded every 10 s, and a Lua 5.4 and a LuaJIT process on the
# Redis limiter, Redis restarted once, all pinning against local servers
# made hostile at random, for SOAK_SECONDS (default 600; CI runs 30). It
# prints the figures (build/soak/soak.md; a run of 600 s or more also in
# the soak section of bench/results.md) and exits 1 when a criterion is
# missed: bench/README.md says which.
SOAK_SECONDS ?= 600
.PHONY: soak
soak:
	$(MAKE) --no-print-directory LUA=luajit all
	$(MAKE) --no-print-directory LUA=lua5.4 all
	SOAK_SECONDS=$(SOAK_SECONDS) lua5.4 bench/soak.lua
