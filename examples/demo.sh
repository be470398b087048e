#!/usr/bin/env bash
# The quickstart: builds hookwasm, the example plugins and the example receiver, starts the
# receiver and `hookwasm serve` with examples/quickstart/hookwasm.toml, posts the sample
# events, and shows what arrived: transformed, signed, verified.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=examples/common.sh
source examples/common.sh

rustup target add wasm32-wasip2 >/dev/null
echo "== building (the first build compiles wasmtime: a few minutes)"
cargo build --quiet --target wasm32-wasip2 --profile plugin --target-dir target/plugins \
  -p slack-notify -p redact-pii -p event-filter -p field-map
cargo build --quiet -p hookwasm -p hookwasm-example-receiver

work=$(mktemp -d "${TMPDIR:-/tmp}/hookwasm-demo.XXXXXX")
# The working dir (config, store, logs) is removed at exit; HOOKWASM_DEMO_KEEP=1 keeps it.
cleanup() {
  kill "${host_pid:-}" "${receiver_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${HOOKWASM_DEMO_KEEP:-0}" = 1 ]; then echo "== kept the working dir $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/plugins.d"
for plugin in slack-notify redact-pii event-filter field-map; do
  cp "target/plugins/wasm32-wasip2/plugin/${plugin//-/_}.wasm" "$work/plugins.d/$plugin.wasm"
done

# One demo secret shared by the four webhooks so one receiver can verify them all.
secret="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"

RECEIVER_SECRET="$secret" target/debug/receiver --listen 127.0.0.1:0 >"$work/receiver.out" 2>&1 &
receiver_pid=$!
receiver_url=$(wait_for_line "$work/receiver.out" "receiver listening on ")

sed -e "s|RECEIVER_URL|$receiver_url|" -e "s|DEMO_SECRET|$secret|" examples/quickstart/hookwasm.toml >"$work/hookwasm.toml"
(cd "$work" && HOOKWASM_LOG=warn exec "$OLDPWD/target/debug/hookwasm" serve --config hookwasm.toml) >"$work/host.out" 2>"$work/host.log" &
host_pid=$!
host_url=$(wait_for_line "$work/host.out" "hookwasm listening on ")
echo "== hookwasm on $host_url, receiver on $receiver_url (working dir $work)"

echo "== posting $(ls examples/events/*.json | wc -l) sample events"
target/debug/hookwasm events send --server "$host_url" examples/events/*.json | sed 's/^/   /'

# 9 events: slack gets 8 (the private note is skipped), crm 9, vip 4, analytics 1.
expected=22
for _ in $(seq 1 200); do
  accepted=$(grep -c '^verified ' "$work/receiver.out" || true)
  [ "$accepted" -ge "$expected" ] && break
  sleep 0.05
done

echo "== what the receiver verified and accepted"
grep '^verified ' "$work/receiver.out" | sed 's/^verified /   /'
echo "== receiver stats"
echo "   accepted $(grep -c '^verified ' "$work/receiver.out"), rejected $(grep -c '^rejected' "$work/receiver.out" || true) (every request signature-checked with the standardwebhooks library)"
if [ "$(grep -c '^verified ' "$work/receiver.out")" -lt "$expected" ]; then
  echo "expected $expected deliveries; host log:" >&2; cat "$work/host.log" >&2; exit 1
fi
# On a terminal, keep both running for a look at the console; in scripts (CI), stop here.
if [ -t 0 ] && [ -t 1 ]; then
  echo "== the console: $host_url/console/ (loopback needs no token here); Ctrl-C stops the demo"
  wait "$host_pid"
else
  echo "== done (run it on a terminal to keep it running and open the console at /console/)"
fi
