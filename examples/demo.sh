#!/bin/sh
# make demo: pins a message with examples/pin.lua. With PERISKOPE_API_KEY
# and PERISKOPE_PHONE set it talks to the real API (MESSAGE_ID names the
# message); otherwise it starts the bundled local Periskope server, pins
# through it, and stops it.
set -eu
lua=${1:-lua5.4}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export LUA_CPATH="${PERISKOPE_CPATH:-build/lua5.4/?.so};;"
id=${MESSAGE_ID:-true_919487126251@c.us_3EB0F754E67BDF3178E76C680224FF7114E2CB95}

if [ -n "${PERISKOPE_API_KEY:-}" ] && [ -n "${PERISKOPE_PHONE:-}" ]; then
  echo "== pinning $id through ${PERISKOPE_BASE_URL:-the Periskope API}"
  exec "$lua" examples/pin.lua "$id" --time 7
fi

echo "== starting the local Periskope server (nginx) and pinning $id for 7 days"
"$lua" spec/support/run_with_server.lua -- "$lua" examples/pin.lua "$id" --time 7
echo "== and unpinning it"
"$lua" spec/support/run_with_server.lua -- "$lua" examples/pin.lua "$id" --unpin
