#!/usr/bin/env bash
# Static check of the Dockerfile, since no Docker engine runs where the
# tests run:
#   - the build stage's COPY lines give cargo a workspace it can resolve
#     (every member and path dependency present, Cargo.lock honoured),
#   - every `--bin` its cargo build names is a binary of the workspace,
#   - every binary the manifests run (/usr/local/bin/NAME in k8s/, compose
#     files, the ENTRYPOINT) is copied into the final image.
set -euo pipefail
cd "$(dirname "$0")/.."

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# The build stage: from the first FROM to the next.
build_stage=$(awk '/^FROM /{n++} n==1' Dockerfile)
final_stage=$(awk '/^FROM /{n++} n==2' Dockerfile)

# Recreate the build context the stage sees (minus .dockerignore'd output):
# `COPY SRC... DST`, DST a directory when it ends in / or there are several.
while read -ra words; do
    args=("${words[@]:1}")
    dst=${args[-1]}
    srcs=("${args[@]:0:${#args[@]}-1}")
    for s in "${srcs[@]}"; do
        if [[ "$dst" == */ || ${#srcs[@]} -gt 1 ]]; then
            to="$ctx/src/${dst%/}/$(basename "$s")"
        else
            to="$ctx/src/$dst"
        fi
        mkdir -p "$(dirname "$to")"
        if [[ -d "$s" ]]; then
            mkdir -p "$to"
            tar -C "$s" --exclude=target --exclude=node_modules -cf - . | tar -C "$to" -xf -
        else
            cp "$s" "$to"
        fi
    done
done < <(grep -E '^COPY ' <<<"$build_stage" | grep -v -- '--from')

if ! cargo metadata --locked --format-version 1 --manifest-path "$ctx/src/Cargo.toml" >"$ctx/metadata.json" 2>"$ctx/err"; then
    cat "$ctx/err" >&2
    echo "Dockerfile: the build stage's COPY lines do not make a workspace cargo can resolve" >&2
    exit 1
fi

# Binaries the build produces, as `cargo build ... --bin NAME` asks.
mapfile -t wanted_bins < <(grep -oE -- '--bin [A-Za-z0-9_-]+' <<<"$build_stage" | awk '{print $2}')
((${#wanted_bins[@]})) || { echo "Dockerfile: the build stage builds no --bin" >&2; exit 1; }
python3 - "$ctx/metadata.json" "${wanted_bins[@]}" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
bins = {t["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
missing = [b for b in sys.argv[2:] if b not in bins]
if missing:
    sys.exit(f"Dockerfile builds --bin {missing}, which the workspace does not have (it has {sorted(bins)})")
PY

# Binaries in the final image, and binaries the manifests run.
mapfile -t shipped < <(grep -oE -- '--from=build /src/target/release/[A-Za-z0-9_-]+' <<<"$final_stage" | sed 's#.*/##')
for b in "${shipped[@]}"; do
    printf '%s\n' "${wanted_bins[@]}" | grep -qx "$b" || { echo "Dockerfile copies $b, which the build stage does not build" >&2; exit 1; }
done
mapfile -t used < <(grep -rhoE '/usr/local/bin/[A-Za-z0-9_-]+' k8s Dockerfile docker-compose*.yml compose* 2>/dev/null | sed 's#.*/##' | sort -u)
status=0
for b in "${used[@]}"; do
    if ! printf '%s\n' "${shipped[@]}" | grep -qx "$b"; then
        echo "/usr/local/bin/$b is run by a manifest but the image does not carry it" >&2
        status=1
    fi
done
((status == 0)) && echo "Dockerfile: workspace resolves; image carries ${shipped[*]}; manifests run ${used[*]}"
exit "$status"
