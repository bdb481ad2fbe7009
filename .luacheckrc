-- luacheck configuration for every Lua file in the repository.
std = "max"
max_line_length = 120
files["spec"] = { std = "+busted" }
files["spec/support/mock.lua"] = { globals = { "ngx" } }
-- LuaLS annotations: functions declared for their signatures only.
files["meta"] = { unused_args = false, ignore = { "241" } }
