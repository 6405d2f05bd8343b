# Sourced by scripts/demo, scripts/test and .ci/run: make .venv exist and match requirements.txt.
#
# Re-running is cheap: requirements are installed only when requirements.txt (or the Python
# that built the venv) changed since the last successful install, which a stamp file records.
# A venv left broken by an interrupted install or a removed Python is rebuilt from scratch.

venv_ready() {
    local root=$1
    local python=${PYTHON:-python3}
    local venv="$root/.venv"
    local stamp="$venv/.requirements.sha256"

    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found; install Python 3.11 or newer (or set PYTHON=/path/to/python3)" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: $("$python" --version 2>&1) is too old; Election Monitor needs Python 3.11 or newer" >&2
        return 1
    fi
    if [ -d "$venv" ] && ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "--> $venv is broken or too old; rebuilding it"
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "--> creating $venv"
        "$python" -m venv "$venv"
    fi

    local want
    want=$("$venv/bin/python" - "$root/requirements.txt" <<'PY'
import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read() + sys.version.encode()).hexdigest())
PY
)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "--> installing requirements.txt into $venv (quiet: only errors are shown)"
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --quiet --disable-pip-version-check --requirement "$root/requirements.txt"
    echo "$want" >"$stamp"
}
