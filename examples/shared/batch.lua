-- Pins the message ids given as arguments, paced through Redis together
-- with every other process that uses the same Redis and API key; prints
-- "<id> <status or error kind>" per id, in order. Exit 1 if any failed.
--
--   PERISKOPE_API_KEY=... PERISKOPE_PHONE=... PERISKOPE_REDIS_PORT=6379 \
--     lua5.4 examples/shared/batch.lua id1 id2 ...
local periskope = require "periskope"

local client = periskope.new {
  limiter = periskope.limiter.redis {
    host = os.getenv("PERISKOPE_REDIS_HOST") or "127.0.0.1",
    port = tonumber(os.getenv("PERISKOPE_REDIS_PORT")) or 6379,
    password = os.getenv("PERISKOPE_REDIS_PASSWORD"),
    timeout = 0.5,
  },
}

local list = {}
for i, id in ipairs(arg) do list[i] = { message_id = id } end
local failed = 0
for i, res in ipairs(client:pin_many(list, { concurrency = 4 })) do
  print(arg[i], res.ok and res.status or (res.status or res.kind))
  if not res.ok then failed = failed + 1 end
end
client:close()
os.exit(failed == 0 and 0 or 1)
