-- A lean pin endpoint for make bench, loaded into the local server's nginx
-- (spec/support/server.lua's extra_server option) beside the mock's /v1/:
--
--   location /lean/v1/ { content_by_lua_block { require('bench.lean').pin(KEY) } }
--
-- The mock's handler records every request (a JSON record in a shared dict),
-- makes a fresh trace id and checks the body with cjson: about as much
-- server CPU per pin as the clients spend, which pulls every client's
-- sequential rate towards the server's. This one checks a pin request with
-- plain comparisons, answers with the same headers (so clients parse the
-- same head), counts it in the mock's own request counter (srv:stats()),
-- and records nothing.
-- luacheck: globals ngx

local M = {}

local LIMIT = 1000000000
local ORG_ID = "2997dd64-89bf-48d3-9a22-b314fca017e5"
local PHONE_ID = "phone-bqzvyibhmwkaergr"
local TRACE_ID = "5a0c1f2e-7b3d-4e8f-9a61-0c2d4b6e8f10" -- same length as a fresh one

function M.pin(api_key)
  local n = ngx.shared.periskope_mock:incr("requests", 1, 0)
  local var = ngx.var
  local good = ngx.req.get_method() == "POST"
    and var.uri:find("^/lean/v1/message/[^/]+/pin$") ~= nil
    and var.http_authorization == "Bearer " .. api_key
    and (var.http_x_phone or ""):find("^%d+$") ~= nil
    and (var.content_type or ""):find("^application/json") ~= nil
  if good then
    ngx.req.read_body()
    good = ngx.req.get_body_data() == '{"pin":true}'
  end
  local h = ngx.header
  h["Server"] = nil
  h["Access-Control-Allow-Origin"] = "*"
  h["X-Powered-By"] = "Express"
  h["X-RateLimit-Limit"] = LIMIT
  h["X-RateLimit-Remaining"] = LIMIT - n
  h["X-RateLimit-Reset"] = ngx.time() + 2
  h["x-periskope-org-id"] = ORG_ID
  h["x-periskope-phone-id"] = PHONE_ID
  h["x-periskope-trace-id"] = TRACE_ID
  if not good then
    ngx.status = 400
    h["Content-Type"] = "application/json; charset=utf-8"
    ngx.print('{"message":"bad pin request"}')
    return ngx.exit(ngx.HTTP_OK)
  end
  ngx.status = 204
  ngx.send_headers()
  return ngx.exit(ngx.HTTP_OK)
end

return M
