#!/usr/bin/env bash
# Worker memory under a trickle of small batches (issue 14's "RSS flat over an hour"): a
# 20-item batch every 20 s (400 payees that come back every 20 batches; new ones are
# onboarded), the simulator in its own process (payees finish after 5 s), SQLite. Prints the
# worker's RSS, and its anonymous and file-backed parts, about once a minute.
#
#   cargo build --release && examples/bench-trickle.sh 60      # minutes
set -euo pipefail
MIN=${1:-60}
BIN=${PAYRUN_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/payrun}
D=$(mktemp -d); cd "$D"
export DOTS_CLIENT_ID=trickle DOTS_API_KEY=trickle-key DOTS_BASE_URL=http://127.0.0.1:7171/api
export PAYRUN_DATABASE_URL=sqlite://$D/t.db RUST_LOG=payrun=warn
printf '[limits]\nmax_item_cents = 0\nmax_batch_cents = 0\napproval_threshold_cents = 0\n' > t.toml
"$BIN" sim --listen 127.0.0.1:7171 --complete-after 5 > sim.log 2>&1 & SIM=$!
W=
trap 'kill $W $SIM 2>/dev/null; rm -rf "$D"' EXIT
sleep 2
"$BIN" migrate --config t.toml > /dev/null
"$BIN" worker --config t.toml > worker.log 2>&1 & W=$!
start=$(date +%s); n=0; next=0
echo "seconds rss_kib anon_kib file_kib"
while [ $(( $(date +%s) - start )) -lt $(( MIN * 60 )) ]; do
  f=b$n.csv
  echo "payee_id,amount,dots_user_id,first_name,last_name,email,country_code,phone_number,memo" > $f
  for k in $(seq 0 19); do
    p=$(( (n * 20 + k) % 400 ))
    echo "t-$p,$(( 1 + k )).$(( n % 90 + 10 )),,Ann,Payee,t$p@example.com,1,555$(printf %07d $p),batch $n" >> $f
  done
  "$BIN" submit --config t.toml $f > /dev/null; rm -f $f
  now=$(( $(date +%s) - start ))
  if [ "$now" -ge "$next" ]; then
    echo "$now $(awk '/^VmRSS|^RssAnon|^RssFile/{printf "%s ", $2}' /proc/$W/status)"
    next=$(( now + 60 ))
  fi
  n=$(( n + 1 )); sleep 20
done
echo "$n batches"
