#!/usr/bin/env bash
# Benchmark (not a test): tallow-relay against coturn (Debian's turnserver)
# and turn-rs (`turn-server`, client-to-client only: it refuses external
# peers) under turn-load (bench/src/turn_load), the project's own TURN load
# generator, on loopback. The generator runs pinned to one core
# (BENCH_GEN_CPU, 0), each server to another (BENCH_SERVER_CPU, 1).
#
# For each mode (peer: to the generator's echo peer and back; c2c: between
# pairs of allocations):
#   - the highest offered packet rate a server carries with at most 0.1%
#     loss: the rate goes up by BENCH_FACTOR from BENCH_START_RATE for at
#     most BENCH_MAX_STEPS steps; a step fails when two tries both lose more
#     than 0.1%. Servers take each step in turn, so neighbours' load hits all
#     alike, and drop out at their first failed step; then BENCH_REFINE
#     bisection steps between a server's last pass and its failure;
#   - server CPU per message and p99 latency at one fixed rate;
# and, per server, memory per allocation with BENCH_MEM_ALLOCS allocations
# held (c2c setup: allocation, permission, channel), and tallow-relay's
# scaling from one shard to two (TURN_THREADS=1 vs 2, the server on both
# cores for that step).
# Writes bench/results/relay-load.{jsonl,md,svg} and rebuilds BENCHMARKS.md.
#
# Knobs: BENCH_QUICK=1 (short form), BENCH_ALLOCS (1000), BENCH_STEP_SECS (4),
# BENCH_START_RATE (10000), BENCH_FACTOR (1.5), BENCH_MAX_STEPS (9), BENCH_REFINE (2),
# BENCH_FIXED_RATE (20000), BENCH_FIXED_SECS (8), BENCH_MEM_ALLOCS (10000),
# BENCH_SHARDS (1: tallow shards = coturn relay threads = turn-rs threads
# in the comparison), TURN_RS_BIN. Every run is bounded (timeout on each
# generator run; the generator bounds its own setup and drain).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    d_secs=2 d_steps=5 d_factor=2 d_refine=1 d_fixed_secs=3 d_mem=2000
else
    d_secs=4 d_steps=9 d_factor=1.5 d_refine=2 d_fixed_secs=8 d_mem=10000
fi
allocs=${BENCH_ALLOCS:-1000}
step_secs=${BENCH_STEP_SECS:-$d_secs}
start_rate=${BENCH_START_RATE:-10000}
factor=${BENCH_FACTOR:-$d_factor}
max_steps=${BENCH_MAX_STEPS:-$d_steps}
refine=${BENCH_REFINE:-$d_refine}
fixed_rate=${BENCH_FIXED_RATE:-20000}
fixed_secs=${BENCH_FIXED_SECS:-$d_fixed_secs}
mem_allocs=${BENCH_MEM_ALLOCS:-$d_mem}
shards=${BENCH_SHARDS:-1}
gen_cpu=${BENCH_GEN_CPU:-0}
server_cpu=${BENCH_SERVER_CPU:-1}
secret=bench-load-secret
# Relay ports below Linux's ephemeral range (32768-60999), where the
# generator's own sockets live.
relay_low=10000 relay_high=29999

command -v turnserver >/dev/null || scripts/apt-install.sh coturn
for tool in turnserver taskset python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install coturn util-linux python3)" >&2; exit 1; }
done
cargo build --release -q --locked -p tallow-relay -p tallow-bench --bin tallow-relay --bin turn-load
relay_bin=target/release/tallow-relay
load_bin=target/release/turn-load

# turn-rs: TURN_RS_BIN, else target/bench-tools (installed here on first use;
# it needs Debian's protobuf-compiler), else no turn-rs column.
turnrs_bin=${TURN_RS_BIN:-target/bench-tools/bin/turn-server}
if [[ ! -x $turnrs_bin ]]; then
    command -v protoc >/dev/null || scripts/apt-install.sh protobuf-compiler || true
    echo "installing turn-rs: cargo install turn-server --root target/bench-tools" >&2
    cargo install -q turn-server --root target/bench-tools >&2 || true
fi
turnrs_note=""
if [[ -x $turnrs_bin ]]; then
    turnrs_note="turn-rs $("$turnrs_bin" --version 2>/dev/null | awk '{print $NF}')"
else
    turnrs_bin=""
    turnrs_note="turn-rs: not installed (cargo install turn-server failed)"
    echo "$turnrs_note: no turn-rs column" >&2
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Wait until a STUN Binding request to 127.0.0.1:$1 is answered.
wait_stun() {
    python3 - "$1" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.1)
req = bytes.fromhex("000100002112a442") + bytes(12)
end = time.time() + 20
while time.time() < end:
    try:
        s.sendto(req, ("127.0.0.1", int(sys.argv[1])))
        s.recv(1500)
        sys.exit(0)
    except OSError:
        pass
sys.exit("no STUN answer on port " + sys.argv[1])
EOF
}

start_server() { # name port threads cpus -> pid
    local name=$1 port=$2 threads=$3 cpus=$4
    case $name in
        tallow)
            # TURN_THREADS: shards; a relay without them ignores it (the
            # report shows the thread count the process really had).
            TURN_LISTEN=127.0.0.1:$port TURN_SECRET=$secret TURN_ALLOW_LOOPBACK=true \
                TURN_PORT_RANGE=$relay_low-$relay_high TURN_MAX_BYTES_PER_SEC=0 \
                TURN_USER_QUOTA=1000000 TURN_TOTAL_QUOTA=1000000 TURN_THREADS=$threads \
                LOG_FORMAT=json RUST_LOG=warn taskset -c "$cpus" "$relay_bin" >/dev/null 2>&1 &
            ;;
        coturn)
            taskset -c "$cpus" turnserver -n --listening-ip=127.0.0.1 --listening-port="$port" \
                --relay-ip=127.0.0.1 --use-auth-secret --static-auth-secret="$secret" --realm=tallow \
                --allow-loopback-peers --no-cli --no-tls --no-dtls --no-tcp --no-tcp-relay \
                --relay-threads="$threads" --min-port=$relay_low --max-port=$relay_high \
                --log-file=/dev/null --simple-log >/dev/null 2>&1 &
            ;;
        turnrs)
            cat >"$work/turnrs-$port.toml" <<TOML
[server]
port-range = "$relay_low..$relay_high"
max-threads = $threads
realm = "tallow"
[[server.interfaces]]
transport = "udp"
listen = "127.0.0.1:$port"
external = "127.0.0.1:$port"
[log]
level = "error"
stdout = false
[auth]
static-auth-secret = "$secret"
TOML
            taskset -c "$cpus" "$turnrs_bin" --config "$work/turnrs-$port.toml" >/dev/null 2>&1 &
            ;;
    esac
    echo $!
}

results=bench/results/relay-load.jsonl
mkdir -p bench/results
: >"$results"

declare -A port_of pid_of

launch() { # name threads cpus: start and wait for it
    local name=$1 port pid
    port=$(free_port)
    pid=$(start_server "$name" "$port" "$2" "$3")
    pids+=("$pid")
    wait_stun "$port"
    port_of[$name]=$port
    pid_of[$name]=$pid
}

stop() { # name
    local pid=${pid_of[$1]}
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Small JSON helpers for the runs below.
cat >"$work/line.py" <<'EOF'
import json, sys
cmd, line = sys.argv[1], json.loads(sys.argv[2])
if cmd == "tag":
    target, kind, nshards, scpus, threads, mode, rate = sys.argv[3:]
    line.update(target=target, kind=kind, shards=int(nshards), server_cpus=scpus,
                server_threads=int(threads), mode=mode, offered_pps=int(rate),
                loadavg=open("/proc/loadavg").read().split()[0])
    print(json.dumps(line))
elif cmd == "verdict":
    # lossy: over 0.1% lost (or the run failed); short: the generator could
    # not offer the rate (so a higher step would measure the generator).
    if line.get("failed") or line["loss_pct"] > 0.1:
        print("lossy")
    elif line["sent_pps"] < 0.98 * line["offered_pps"]:
        print("short")
    else:
        print("ok")
elif cmd == "summary":
    d = line
    head = f"  {d['target']:7} {d['mode']:4} {d['kind']:6} {d['offered_pps']:>7}/s"
    if d.get("failed"):
        print(head + " FAILED", file=sys.stderr)
    else:
        srv = d["server_cpu_us_per_msg"] or 0.0
        print(head + f" sent {d['sent_pps']:8.0f}/s loss {d['loss_pct']:6.3f}% p99 {d['p99_us']:8.0f} us"
              f" srv {srv:6.2f} us/msg gen cpu {d['gen_cpu_per_thread']:.2f} threads {d['server_threads']}"
              f" load {d['loadavg']}", file=sys.stderr)
EOF

# One generator run; its JSON line, tagged, goes to the results and stdout.
run() { # name mode kind rate secs allocs shards server_cpus
    local name=$1 mode=$2 kind=$3 rate=$4 secs=$5 n=$6 nshards=$7 scpus=$8
    local pid=${pid_of[$name]} threads out
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
    out=$(timeout 300 taskset -c "$gen_cpu" "$load_bin" --server "127.0.0.1:${port_of[$name]}" \
        --secret "$secret" --mode "$mode" --allocs "$n" --rate "$rate" --duration "$secs" \
        --server-pid "$pid" 2>"$work/gen.err") || {
        echo "turn-load failed against $name ($mode, $kind, $rate/s): $(tail -c 400 "$work/gen.err")" >&2
        out='{"failed":true}'
    }
    python3 "$work/line.py" tag "$out" "$name" "$kind" "$nshards" "$scpus" "$threads" "$mode" "$rate" |
        tee -a "$results"
}

verdict() { python3 "$work/line.py" verdict "$1"; }
summary() { python3 "$work/line.py" summary "$1"; }

# One step for one server: a run, and once more if it lost over 0.1% (a
# neighbour's burst is not the server's limit). Prints ok, lossy or short.
try_rate() { # name mode kind rate shards cpus
    local line v
    line=$(run "$1" "$2" "$3" "$4" "$step_secs" "$allocs" "$5" "$6")
    summary "$line"
    v=$(verdict "$line")
    if [[ $v == lossy ]]; then
        line=$(run "$1" "$2" "$3" "$4" "$step_secs" "$allocs" "$5" "$6")
        summary "$line"
        v=$(verdict "$line")
    fi
    echo "$v"
}

# Step every server in $@ up together in `mode`; servers must be launched.
# Then narrow each lossy server's limit by bisection (BENCH_REFINE steps).
step_up() { # mode kind shards cpus name...
    local mode=$1 kind=$2 nshards=$3 scpus=$4
    shift 4
    local active=("$@") rate=$start_rate v lo hi mid
    local -A ok_rate=() bad_rate=()
    for _ in $(seq 1 "$max_steps"); do
        ((${#active[@]})) || break
        local next=()
        for name in "${active[@]}"; do
            v=$(try_rate "$name" "$mode" "$kind" "$rate" "$nshards" "$scpus")
            case $v in
                ok)
                    ok_rate[$name]=$rate
                    next+=("$name")
                    ;;
                lossy) bad_rate[$name]=$rate ;;
            esac
        done
        active=("${next[@]}")
        rate=$(python3 -c "print(int(round($rate * $factor, -2)))")
    done
    for _ in $(seq 1 "$refine"); do
        for name in "${!bad_rate[@]}"; do
            lo=${ok_rate[$name]:-0} hi=${bad_rate[$name]}
            mid=$(((lo + hi) / 2))
            mid=$((mid - mid % 100))
            ((mid > lo && mid < hi)) || continue
            v=$(try_rate "$name" "$mode" "$kind" "$mid" "$nshards" "$scpus")
            case $v in
                ok) ok_rate[$name]=$mid ;;
                lossy) bad_rate[$name]=$mid ;;
                *) unset "bad_rate[$name]" ;;
            esac
        done
    done
}

servers_for() { # mode -> servers
    if [[ $1 == c2c && -n $turnrs_bin ]]; then echo tallow coturn turnrs; else echo tallow coturn; fi
}

t_start=$(date +%s)
echo "turn-load: $allocs allocations, steps of ${step_secs}s from $start_rate/s x$factor (at most $max_steps)," \
    "fixed rate $fixed_rate/s for ${fixed_secs}s; generator on CPU $gen_cpu, servers on CPU $server_cpu" >&2
for mode in peer c2c; do
    read -ra names <<<"$(servers_for "$mode")"
    for name in "${names[@]}"; do launch "$name" "$shards" "$server_cpu"; done
    step_up "$mode" step "$shards" "$server_cpu" "${names[@]}"
    for name in "${names[@]}"; do
        summary "$(run "$name" "$mode" fixed "$fixed_rate" "$fixed_secs" "$allocs" "$shards" "$server_cpu")"
        stop "$name"
    done
done

# Memory: a fresh server each, BENCH_MEM_ALLOCS allocations held for 2 s
# without traffic (c2c setup, which turn-rs accepts too).
for name in $(servers_for c2c); do
    launch "$name" "$shards" "$server_cpu"
    summary "$(run "$name" c2c memory 0 2 "$mem_allocs" "$shards" "$server_cpu")"
    stop "$name"
done

# Scaling: tallow-relay with one shard, then two, both on both cores (the
# generator still on its own core among them).
for n in 1 2; do
    launch tallow "$n" "0,1"
    for mode in peer c2c; do
        step_up "$mode" "scale" "$n" "0,1" tallow
    done
    stop tallow
done
t_end=$(date +%s)

coturn_version=$(dpkg-query -W -f='${Version}' coturn 2>/dev/null || echo unknown)
python3 - "$results" "$coturn_version" "$turnrs_note" "$((t_end - t_start))" "$allocs" "$step_secs" \
    "$start_rate" "$factor" "$max_steps" "$refine" "$fixed_rate" "$fixed_secs" "$mem_allocs" "$shards" \
    "$gen_cpu" "$server_cpu" "${BENCH_QUICK:-0}" <<'EOF'
import datetime, json, os, platform, sys

(path, coturn_version, turnrs_note, elapsed, allocs, step_secs, start_rate, factor, max_steps,
 refine, fixed_rate, fixed_secs, mem_allocs, shards, gen_cpu, server_cpu, quick) = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
ok = [r for r in rows if not r.get("failed")]
names = {"tallow": "tallow-relay", "coturn": f"coturn {coturn_version}", "turnrs": "turn-rs"}
servers = [s for s in ("tallow", "coturn", "turnrs") if any(r["target"] == s for r in rows)]

def steps(target, mode, kind="step", nshards=None):
    return [r for r in rows if r["target"] == target and r["mode"] == mode and r["kind"] == kind
            and (nshards is None or r["shards"] == nshards)]

def best(target, mode, kind="step", nshards=None):
    """Highest offered rate with a try at most 0.1% lossy, and whether the
    generator (not the server) fell short of the offer there."""
    runs = [r for r in steps(target, mode, kind, nshards) if not r.get("failed")]
    lossless = [r for r in runs if r["loss_pct"] <= 0.1]
    good = [r for r in lossless if r["sent_pps"] >= 0.98 * r["offered_pps"]]
    if not good:
        return None
    top = max(good, key=lambda r: r["offered_pps"])
    tried = max(r["offered_pps"] for r in steps(target, mode, kind, nshards))
    # Not the server's limit when it passed the last step, or when the next
    # one lost nothing but the generator could not offer it.
    above = [r for r in lossless if r["offered_pps"] > top["offered_pps"]]
    return top, top["offered_pps"] == tried or bool(above)

def one(target, mode, kind):
    xs = [r for r in ok if r["target"] == target and r["mode"] == mode and r["kind"] == kind]
    return xs[-1] if xs else None

def fmt(v, f="{:.0f}"):
    return "n/a" if v is None else f.format(v)

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"

out = []
p = out.append
p("## TURN relay under load: tallow-relay vs coturn vs turn-rs (turn-load)\n")
p(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; host: {platform.machine()}, "
  f"{os.cpu_count()} CPUs, loopback; run took {elapsed} s{' (BENCH_QUICK=1 short form)' if quick == '1' else ''}.")
p(f"- Command: `scripts/bench-relay-load.sh` (knobs in its header). Generator: `turn-load` "
  f"(bench/src/turn_load), pinned to CPU {gen_cpu} with taskset; each server pinned to CPU {server_cpu}.")
p(f"- Servers: tallow-relay (this tree, `TURN_THREADS={shards}`), coturn {coturn_version} "
  f"(`--relay-threads={shards}`, `--allow-loopback-peers`, `--no-cli`, `use-auth-secret`), "
  f"{turnrs_note} (`max-threads = {shards}`; it relays only between its own allocations, "
  "so it has no `peer` column). All with TURN REST credentials, one username per allocation.")
p(f"- Load: {allocs} allocations, one UDP socket each, ChannelData of 100 bytes at an offered rate paced "
  f"over all allocations. `peer`: each allocation sends to the generator's echo peer and the echo comes "
  f"back through the relay (each offered packet is relayed twice; latency is a round trip). "
  f"`c2c`: pairs of allocations send to each other's relayed address (relayed once; latency one way).")
p(f"- Highest loss-free rate: offered rate stepped from {start_rate}/s by x{factor} (at most {max_steps} "
  f"steps of {step_secs} s), then {refine} bisection steps between a server's last pass and its "
  "failure; a step fails when two tries both lose more than 0.1%. "
  f"\"≥\" marks a server whose limit was not reached: it passed the last step, or lost nothing at the "
  "next one but the generator could not offer that rate (sent below 98% of offered).")
p(f"- CPU per message and p99: one run of {fixed_secs} s at {fixed_rate} packets/s. Server CPU per message "
  "= server user+system CPU time over the data phase (/proc/PID/stat) / packets the clients sent.")
p(f"- Memory per allocation: (server RSS with {mem_allocs} allocations held, each with a permission and a "
  "channel - RSS before) / allocations, on a freshly started server.")
p("- The machine has 2 cores shared with other work: `loadavg` in the JSON lines shows the 1-minute load "
  "at each run. Compare within this table, not across machines.\n")

cols = servers
p("| mode | metric | " + " | ".join(names[s] for s in cols) + " | tallow / coturn |")
p("|---|---|" + "---|" * len(cols) + "---|")
for mode in ("peer", "c2c"):
    vals = {}
    for s in cols:
        b = best(s, mode)
        vals[s] = (b[0]["offered_pps"] if b else None, b[1] if b else False, b[0] if b else None)
    cells = []
    for s in cols:
        if mode == "peer" and s == "turnrs":
            cells.append("n/a (403 on external peers)")
        else:
            v, top, _ = vals[s]
            cells.append(("≥ " if top else "") + fmt(v))
    p(f"| {mode} | highest loss-free rate, packets/s offered (higher is better) | " + " | ".join(cells) +
      f" | {ratio(vals['tallow'][0], vals['coturn'][0])} |")
    cells = [fmt(vals[s][2]["delivered_pps"]) if vals[s][2] else "n/a" for s in cols]
    p(f"| {mode} | delivered packets/s at that rate | " + " | ".join(cells) + " | |")
    cells = [fmt(vals[s][2]["gen_cpu_per_thread"], "{:.2f}") if vals[s][2] else "n/a" for s in cols]
    p(f"| {mode} | generator CPU (share of its core) at that rate | " + " | ".join(cells) + " | |")
    # CPU per message falls with the rate (more packets per wake-up), so
    # compare servers at one rate: the highest that both tallow and coturn
    # were offered and carried loss-free.
    def passed(s):
        return {r["offered_pps"]: r for r in steps(s, mode)
                if not r.get("failed") and r["loss_pct"] <= 0.1}
    common = set(passed("tallow")) & set(passed("coturn"))
    if common:
        rate = max(common)
        at = {s: passed(s).get(rate) for s in cols}
        key = "server_cpu_us_per_msg"
        cells = [fmt(at[s][key], "{:.2f}") if at[s] else "n/a" for s in cols]
        t, c = at.get("tallow"), at.get("coturn")
        p(f"| {mode} | server CPU µs per message at {rate}/s, the highest rate both carried (lower is better) | "
          + " | ".join(cells) + f" | {ratio(t[key] if t else None, c[key] if c else None)} |")
    for label, key, f, scale in (("server CPU µs per message", "server_cpu_us_per_msg", "{:.2f}", 1),
                                 ("p99 latency µs", "p99_us", "{:.0f}", 1),
                                 ("p50 latency µs", "p50_us", "{:.0f}", 1)):
        xs = {s: one(s, mode, "fixed") for s in cols}
        cells = [fmt(xs[s][key] * scale, f) if xs[s] else "n/a" for s in cols]
        t, c = xs.get("tallow"), xs.get("coturn")
        p(f"| {mode} | {label} at {fixed_rate}/s (lower is better) | " + " | ".join(cells) +
          f" | {ratio(t[key] if t else None, c[key] if c else None)} |")
mem = {}
for s in cols:
    r = one(s, "c2c", "memory")
    if r and r.get("server_rss_kb_ready") is not None:
        mem[s] = (r["server_rss_kb_ready"] - r["server_rss_kb_before"]) / r["allocations"]
cells = [fmt(mem.get(s), "{:.2f}") for s in cols]
p(f"| - | memory per allocation, KiB ({mem_allocs} held; lower is better) | " + " | ".join(cells) +
  f" | {ratio(mem.get('tallow'), mem.get('coturn'))} |")

busy = [(mode, s, best(s, mode)[0]) for mode in ("peer", "c2c") for s in cols if best(s, mode)]
busy = [(mode, s, r) for mode, s, r in busy if r["gen_cpu_per_thread"] > 0.85]
if busy:
    p("")
for mode, s, r in busy:
    p(f"- {mode}, {names[s]}: the generator used {r['gen_cpu_per_thread']:.2f} of its core at "
      f"{r['offered_pps']}/s, close to its own limit: the server's limit may be higher than shown.")
p("\n### Scaling: tallow-relay with one shard and with two\n")
p("Server on both cores (`taskset -c 0,1`) in this step, the generator still pinned to core 0, so with two "
  "shards the server shares the generator's core. `TURN_THREADS` sets the shard count; `threads` is the "
  "thread count the relay process really had (a relay without shards ignores `TURN_THREADS`).\n")
p("| mode | 1 shard: loss-free packets/s | threads | 2 shards: loss-free packets/s | threads | 2 / 1 |")
p("|---|---|---|---|---|---|")
for mode in ("peer", "c2c"):
    b1, b2 = best("tallow", mode, "scale", 1), best("tallow", mode, "scale", 2)
    def cell(b):
        return ("≥ " if b[1] else "") + fmt(b[0]["offered_pps"]) if b else "n/a"
    th = lambda b: str(b[0]["server_threads"]) if b else "n/a"
    same = b1 and b2 and b1[0]["server_threads"] == b2[0]["server_threads"]
    note = " (same threads: TURN_THREADS ignored, so this is run-to-run spread)" if same else ""
    p(f"| {mode} | {cell(b1)} | {th(b1)} | {cell(b2)} | {th(b2)} | "
      f"{ratio(b2[0]['offered_pps'] if b2 else None, b1[0]['offered_pps'] if b1 else None)}{note} |")

p("\n![delivered vs offered packets/s](bench/results/relay-load.svg)\n")
p("### Raw runs (bench/results/relay-load.jsonl)\n")
p("| kind | server | mode | shards | offered/s | sent/s | delivered/s | loss % | p50 µs | p99 µs | "
  "server CPU µs/msg | generator CPU | load |")
p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("failed"):
        p(f"| {r['kind']} | {r['target']} | {r['mode']} | {r['shards']} | {r['offered_pps']} | failed | | | | | | | {r['loadavg']} |")
        continue
    p(f"| {r['kind']} | {r['target']} | {r['mode']} | {r['shards']} | {r['offered_pps']} | {r['sent_pps']:.0f} | "
      f"{r['delivered_pps']:.0f} | {r['loss_pct']:.3f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
      f"{fmt(r['server_cpu_us_per_msg'], '{:.2f}')} | {r['gen_cpu_per_thread']:.2f} | {r['loadavg']} |")
open("bench/results/relay-load.md", "w").write("\n".join(out) + "\n")

# The plot: delivered against offered packets/s, one panel per mode, by hand
# in SVG (no plotting package needed).
W, H, M = 460, 340, 60
colors = {"tallow": "#1f77b4", "coturn": "#d62728", "turnrs": "#2ca02c"}
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 30}" '
       'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
for k, mode in enumerate(("peer", "c2c")):
    pts = {s: sorted((r["offered_pps"], r["delivered_pps"], r["loss_pct"]) for r in ok
                     if r["target"] == s and r["mode"] == mode and r["kind"] == "step") for s in cols}
    top = max([x for v in pts.values() for x, _, _ in v] + [1])
    x0 = k * W
    sx = lambda v: x0 + M + (W - 1.5 * M) * v / top
    sy = lambda v: H - M + 20 - (H - 1.5 * M) * v / top
    svg.append(f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-size="13">{mode}: delivered vs offered '
               f'packets/s ({allocs} allocations)</text>')
    svg.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(top)}" y2="{sy(0)}" stroke="black"/>')
    svg.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(0)}" y2="{sy(top)}" stroke="black"/>')
    svg.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(top)}" y2="{sy(top)}" stroke="#bbb" stroke-dasharray="4"/>')
    for i in range(0, 5):
        v = top * i / 4
        svg.append(f'<text x="{sx(v)}" y="{sy(0) + 14}" text-anchor="middle">{v / 1000:.0f}k</text>')
        svg.append(f'<text x="{sx(0) - 4}" y="{sy(v) + 4}" text-anchor="end">{v / 1000:.0f}k</text>')
    for j, s in enumerate(s for s in cols if pts[s]):
        c = colors[s]
        svg.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                   % (c, " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in pts[s])))
        for x, y, loss in pts[s]:
            fill = c if loss <= 0.1 else "white"
            svg.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" stroke="{c}" fill="{fill}"/>')
        svg.append(f'<text x="{sx(0) + 10}" y="{sy(top) + 14 * j + 10}" fill="{c}">{names[s]}</text>')
    svg.append(f'<text x="{x0 + W / 2}" y="{H + 22}" text-anchor="middle">offered packets/s '
               '(hollow: more than 0.1% lost)</text>')
svg.append("</svg>")
open("bench/results/relay-load.svg", "w").write("\n".join(svg) + "\n")
EOF

scripts/bench-report.sh
cat bench/results/relay-load.md
