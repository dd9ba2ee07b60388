#!/bin/sh
# Starts the bundled local server on a free port, runs examples/demo.lua
# against it (a real HTTP round trip), and stops the server.
set -e
LUA=${1:-lua5.4}
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'kill $(cat "$dir/pid" 2>/dev/null) 2>/dev/null; rm -rf "$dir"' EXIT INT TERM
sh -c 'echo $$ > "$1/pid"; exec lua5.4 bin/llmchat-server --port 0 --port-file "$1/port" --quiet > "$1/log" 2>&1' sh "$dir" &
i=0
while [ ! -s "$dir/port" ]; do
  i=$((i + 1)); [ $i -gt 100 ] && { echo "server did not start"; cat "$dir/log"; exit 1; }
  sleep 0.1
done
export LLMCHAT_BASE_URL="http://127.0.0.1:$(cat "$dir/port")/v1"
echo "local server: $LLMCHAT_BASE_URL"
LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/$LUA/?.so;;" "$LUA" examples/demo.lua
