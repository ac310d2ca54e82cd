# shellcheck shell=bash
# Sourced by deploy-dev.sh and deploy-prod.sh. compose reads .env for every
# command; read it too (the environment wins, as in compose), so that the
# scripts' checks see what compose will.
if [[ -f .env ]]; then
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        name=${BASH_REMATCH[2]} value=${BASH_REMATCH[3]}
        [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]] && value=${BASH_REMATCH[1]}
        [[ -n "${!name+set}" ]] || export "$name=$value"
    done <.env
fi
