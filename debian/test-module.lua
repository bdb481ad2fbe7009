-- dh-lua runs this under each Lua with the module just built (lua -lperiskope,
-- and a C program that opens it): the module loads, says its version and
-- builds a request without sending it.
local periskope = require "periskope"
assert(periskope.VERSION:match("^%d+%.%d+%.%d+$"), periskope.VERSION)
local client = periskope.new { api_key = "k", phone = "919874532456",
  base_url = "http://127.0.0.1:1/v1" }
local req = client:build_pin { message_id = "a@b", time = 7 }
assert(req.method == "POST", req.method)
assert(req.url == "http://127.0.0.1:1/v1/message/a%40b/pin", req.url)
assert(req.body == '{"pin":true,"time":7}', req.body)
client:close()
print("periskope " .. periskope.VERSION .. ": loads, builds a request")
