#!/usr/bin/env bash
# Several hosts on one PostgreSQL database: starts a throwaway PostgreSQL (as the postgres
# user, on a Unix socket in a temporary dir), two hookwasm hosts sharing it and the example
# receiver; posts events to both hosts in turn, kills one with SIGKILL halfway, and shows that
# every accepted event arrived, signed, once per webhook-id. Run as root (PostgreSQL runs as
# the postgres user); installs Debian's postgresql if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=examples/common.sh
source examples/common.sh

if [ "$(id -u)" != 0 ]; then echo "run as root: PostgreSQL is started as the postgres user" >&2; exit 1; fi
command -v pg_config >/dev/null || apt-get install -y -q postgresql >/dev/null
pg=$(pg_config --bindir)
echo "== building"
cargo build --quiet -p hookwasm -p hookwasm-example-receiver

work=$(mktemp -d "${TMPDIR:-/tmp}/hookwasm-cluster.XXXXXX")
chmod 755 "$work"
cleanup() {
  kill "${host1:-}" "${host2:-}" "${receiver_pid:-}" 2>/dev/null || true
  runuser -u postgres -- "$pg/pg_ctl" -D "$work/pg/data" stop -m fast >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  if [ "${HOOKWASM_DEMO_KEEP:-0}" = 1 ]; then echo "== kept the working dir $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== PostgreSQL on a Unix socket in $work/pg"
mkdir -p "$work/pg" && chown postgres "$work/pg"
runuser -u postgres -- "$pg/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
runuser -u postgres -- "$pg/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w \
  -o "-k $work/pg -c listen_addresses=''" start >/dev/null
runuser -u postgres -- "$pg/createdb" -h "$work/pg" hookwasm

secret="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
RECEIVER_SECRET="$secret" target/debug/receiver --listen 127.0.0.1:0 >"$work/receiver.out" 2>&1 &
receiver_pid=$!
receiver_url=$(wait_for_line "$work/receiver.out" "receiver listening on ")

start_host() { # n -> starts host n in the background, prints its URL
  mkdir -p "$work/host$1/plugins.d"
  cat >"$work/host$1/hookwasm.toml" <<TOML
[server]
listen = "127.0.0.1:0"
data_dir = "$work/host$1/data"
plugins_dir = "$work/host$1/plugins.d"

[delivery]
allow_http = true
allow_private_networks = true
timeout = "2s"

[store]
backend = "postgres"
url = "host=$work/pg user=postgres dbname=hookwasm"
host_id = "hw-$1"
TOML
  HOOKWASM_LOG=warn target/debug/hookwasm serve --config "$work/host$1/hookwasm.toml" \
    >"$work/host$1/out" 2>"$work/host$1/log" &
}
start_host 1; host1=$!
start_host 2; host2=$!
url1=$(wait_for_line "$work/host1/out" "hookwasm listening on ")
url2=$(wait_for_line "$work/host2/out" "hookwasm listening on ")
echo "== hw-1 on $url1 and hw-2 on $url2, one database; receiver on $receiver_url"
# Webhooks live in the database, not in each host's config: applied once, through any host.
cat >"$work/webhooks.toml" <<TOML
[[webhooks]]
id = "everything"
url = "$receiver_url/everything"
events = ["*"]
secret = "$secret"
TOML
target/debug/hookwasm webhooks apply "$work/webhooks.toml" --server "$url1"
for _ in $(seq 1 50); do # hw-2 sees it within a second
  curl -sf "$url2/v1/webhooks/everything" >/dev/null && break
  sleep 0.1
done

events=40
accepted=0
echo "== posting $events events, alternating hosts; hw-1 is killed (SIGKILL) after the first half"
for i in $(seq 1 "$events"); do
  if [ "$i" -gt $((events / 2)) ] && kill -0 "$host1" 2>/dev/null; then
    kill -9 "$host1"; wait "$host1" 2>/dev/null || true
    echo "   killed hw-1"
  fi
  target=$url2
  if [ $((i % 2)) = 1 ] && [ "$i" -le $((events / 2)) ]; then target=$url1; fi
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$target/v1/events" -H 'content-type: application/json' \
    -d "{\"id\": \"cluster-$i\", \"type\": \"message.created\", \"data\": {\"n\": $i}}")
  [ "$status" = 202 ] && accepted=$((accepted + 1))
done

echo "== waiting for every accepted event (what hw-1 was sending goes out once its leases expire)"
for _ in $(seq 1 900); do
  arrived=$(grep -c '^verified ' "$work/receiver.out" || true)
  [ "$arrived" -ge "$accepted" ] && break
  sleep 0.1
done
echo "   accepted $accepted, arrived $arrived (each webhook-id once, every signature verified), rejected $(grep -c '^rejected' "$work/receiver.out" || true)"
echo "== hw-2 answers for an event hw-1 accepted"
curl -s "$url2/v1/events/cluster-1" | head -c 400; echo
if [ "$arrived" -lt "$accepted" ]; then echo "not every event arrived; hw-2's log:" >&2; cat "$work/host2/log" >&2; exit 1; fi
echo "== done"
