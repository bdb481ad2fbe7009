-- LuaRocks build of the periskope module (builtin backend).
-- From the repository root:
--   luarocks make --deps-mode=none rockspec/periskope-scm-1.rockspec
package = "periskope"
version = "scm-1"

source = {
  url = "git+file://./",
}

description = {
  summary = "Pin and unpin WhatsApp messages through the Periskope API",
  detailed = [[
    A Lua module written in C (libcurl transport) for the Periskope REST
    API's Pin Message operation: retries with Retry-After and rate-limit
    waits, reused connections, pacing shared across processes through an
    nginx shared dictionary or Redis (hiredis), a sans-I/O request builder
    and response reader. Loads in Lua 5.1 to 5.4 and LuaJIT.
  ]],
  license = "MIT",
}

dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson",
}

external_dependencies = {
  CURL = {
    -- The library, not the header: Debian keeps curl.h in a multiarch
    -- include directory that the compiler searches but LuaRocks does not.
    library = "curl",
  },
  HIREDIS = {
    -- Shared pacing through Redis (periskope.limiter.redis).
    header = "hiredis/hiredis.h",
    library = "hiredis",
  },
}

build = {
  type = "builtin",
  install = {
    bin = { periskope = "bin/periskope" },
  },
  modules = {
    periskope = {
      sources = {
        "src/psk_buf.c",
        "src/psk_core.c",
        "src/psk_pace.c",
        "src/psk_time.c",
        "src/psk_http.c",
        "src/psk_redis.c",
        "src/lpace.c",
        "src/lpsk_check.c",
        "src/lpsk_result.c",
        "src/lpsk_job.c",
        "src/lpsk_pin.c",
        "src/lperiskope.c",
      },
      defines = { "_POSIX_C_SOURCE=200809L" },
      libraries = { "curl", "hiredis" },
      incdirs = { "$(CURL_INCDIR)", "$(HIREDIS_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(HIREDIS_LIBDIR)" },
    },
  },
}
