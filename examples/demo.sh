#!/bin/sh
# make demo: pins a message with examples/pin.lua. With PERISKOPE_API_KEY
# and PERISKOPE_PHONE set it talks to the real API (MESSAGE_ID names the
# message); otherwise it starts the bundled local Periskope server (10
# requests per 2 s, like Periskope), pins and unpins through it with the
# example and with the periskope command, and stops it.
set -eu
lua=${1:-lua5.4}
cd "$(dirname "$0")/.."
export LUA_CPATH="${PERISKOPE_CPATH:-build/lua5.4/?.so};;"
id=${MESSAGE_ID:-true_919487126251@c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95}

if [ -n "${PERISKOPE_API_KEY:-}" ] && [ -n "${PERISKOPE_PHONE:-}" ]; then
  echo "== pinning $id for 7 days through ${PERISKOPE_BASE_URL:-the Periskope API}"
  exec "$lua" examples/pin.lua "$id" --time 7
fi

echo "== local Periskope server (nginx on 127.0.0.1) started; pinning for 7 days"
# The id travels in the environment, so the shell never re-parses it.
DEMO_ID=$id DEMO_LUA=$lua "$lua" spec/support/run_with_server.lua --rate-limit 10 --window 2 -- \
  sh -c '"$DEMO_LUA" examples/pin.lua "$DEMO_ID" --time 7 &&
         echo "== unpinning it" &&
         "$DEMO_LUA" examples/pin.lua "$DEMO_ID" --unpin &&
         echo "== the periskope command: three pins at once, as JSON lines" &&
         "$DEMO_LUA" bin/periskope pin demo-1 demo-2 demo-3 --json &&
         echo "== the request it would send, the key redacted (nothing is sent)" &&
         "$DEMO_LUA" bin/periskope pin --dry-run "$DEMO_ID" --time 7'
echo "== server stopped"
