#!/usr/bin/env bash
# Install the peer tools that bench/peers.py compares harkd against, each into its own
# virtualenv under bench/.venv-peers/ (never into harkd's), plus a bench venv with
# matplotlib for the plots. A peer that fails to install is recorded in
# bench/.venv-peers/STATUS and skipped; the script always finishes.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.venv-peers"
py="${PYTHON:-python3.11}"
mkdir -p "$root"
status="$root/STATUS"
: > "$status"

install() {  # name, pip requirement...
    local name="$1"; shift
    local venv="$root/$name"
    rm -f "$venv/.ok"
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv" || { echo "$name FAILED: venv" | tee -a "$status"; return; }
        "$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1
    fi
    if "$venv/bin/pip" install -q "$@" >"$venv/install.log" 2>&1; then
        touch "$venv/.ok"
        local req="${1%%[[]*}"
        echo "$name ok $("$venv/bin/pip" freeze 2>/dev/null | grep -iE "^${req}==" | head -1)" \
            | tee -a "$status"
    else
        echo "$name FAILED: $(tail -n 3 "$venv/install.log" | tr '\n' ' ')" | tee -a "$status"
    fi
}

# wrk drives the throughput figures (a Python client saturates first); optional.
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq wrk >/dev/null 2>&1 || echo "wrk not installed: the aiohttp client is used"
fi

install bench matplotlib numpy aiohttp watchfiles jinja2
install litellm 'litellm[proxy]'
install talkpipe talkpipe
install ttt goobits-ttt
install llm llm
echo "peers in $root:"; cat "$status"
