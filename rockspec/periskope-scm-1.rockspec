-- LuaRocks build of periskope, for development from a checkout:
--   luarocks make --deps-mode=none rockspec/periskope-scm-1.rockspec
-- (for LuaRocks' default Lua: add --lua-version 5.4 for another).
-- Releases use periskope-<version>-1.rockspec, which `make dist` writes
-- from this file with the release tarball as its source.
--
-- The make backend, not the builtin one: the Makefile finds hiredis when
-- it is there and builds without it when not, compiles with
-- -fvisibility=hidden so that only luaopen_periskope is exported, and
-- keeps its objects under build/, never next to the sources.
rockspec_format = "3.0"
package = "periskope"
version = "scm-1"

source = {
  url = "git+https://github.com/periskope/periskope-lua.git",
}

description = {
  summary = "Pin and unpin WhatsApp messages through the Periskope API",
  detailed = [[
    A Lua module written in C (libcurl transport) for the Periskope REST
    API's Pin Message operation: retries with Retry-After and rate-limit
    waits, reused connections, pacing shared across processes through an
    nginx shared dictionary or Redis (hiredis, when found at build time),
    a sans-I/O request builder and response reader, and the periskope
    command. Loads in Lua 5.1 to 5.4 and LuaJIT.
  ]],
  homepage = "https://github.com/periskope/periskope-lua",
  license = "MIT",
  labels = { "whatsapp", "periskope", "http", "curl" },
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
}

build = {
  type = "make",
  -- The same variables for both steps, so that install finds the build.
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA_BIN = "$(LUA)",
  },
  install_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA_BIN = "$(LUA)",
    PREFIX = "$(PREFIX)",
    LUA_CMOD = "$(LIBDIR)",
    LUA_LMOD = "$(LUADIR)",
    BINDIR = "$(BINDIR)",
    INSTALLED_CMOD = "",
  },
  copy_directories = { "doc" },
}
