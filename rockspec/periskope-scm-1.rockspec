-- LuaRocks build of periskope, for development from a checkout:
--   luarocks make --deps-mode=none rockspec/periskope-scm-1.rockspec
-- (for LuaRocks' default Lua: add --lua-version 5.4 for another).
-- Releases use periskope-<version>-1.rockspec, which `make dist` writes
-- from this file with the release tarball as its source.
--
-- The make backend, not the builtin one: the Makefile compiles with
-- -fvisibility=hidden so that only luaopen_periskope is exported, and
-- keeps its objects under build/, never next to the sources.
--
-- hiredis (the Redis store of periskope.limiter.redis) is optional, which
-- external_dependencies cannot say: it is the build variable HIREDIS.
-- Unset (LuaRocks then warns "unmatched variable HIREDIS"), the build links
-- hiredis when pkg-config finds it and says which it did; HIREDIS=yes
-- insists, HIREDIS=no leaves it out:
--   luarocks make HIREDIS=no --deps-mode=none rockspec/periskope-scm-1.rockspec
-- lua-cjson is optional too (JSON error bodies, the command's --json and
-- JSON input), so it is not a dependency: `luarocks install lua-cjson` or
-- Debian's lua-cjson adds it.
--
-- The command finds the module in the tree it is installed in, whatever
-- --tree was given, and is installed twice: periskope, and
-- periskope-<Lua version> for two Lua versions in one tree. Its man page
-- stays in the rock's directory: `periskope --help` says where.
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
    nginx shared dictionary or Redis (hiredis, optional: the build variable
    HIREDIS, auto by default, yes or no),
    a sans-I/O request builder and response reader, and the periskope
    command. Loads in Lua 5.1 to 5.4 and LuaJIT. lua-cjson, when present,
    reads JSON error bodies and the command's JSON input.
  ]],
  homepage = "https://github.com/periskope/periskope-lua",
  license = "MIT",
  labels = { "whatsapp", "periskope", "http", "curl" },
}

dependencies = {
  "lua >= 5.1, < 5.5",
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
  variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA_BIN = "$(LUA)",
    CURL_INCDIR = "$(CURL_INCDIR)",
    CURL_LIBDIR = "$(CURL_LIBDIR)",
    HIREDIS = "$(HIREDIS)",
  },
  install_variables = {
    PREFIX = "$(PREFIX)",
    LUA_CMOD = "$(LIBDIR)",
    LUA_LMOD = "$(LUADIR)",
    BINDIR = "$(BINDIR)",
    INSTALLED_CMOD = "",
    COMMAND_VERSIONED = "yes",
  },
  copy_directories = { "doc" },
}
