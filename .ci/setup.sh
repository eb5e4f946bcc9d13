#!/usr/bin/env bash
# Prepare a machine (or a fresh CI runner) to build, test and run bulkio. Idempotent and fast when
# nothing changed.
#
#   .ci/setup.sh              system packages + .venv with the project installed editable (which
#                             compiles the Rust extension engine._native) and the `dev` dependency
#                             group (test, bench and lint tools), at the versions in uv.lock
#   .ci/setup.sh --no-build   same, but only the Python dependencies: the project (and its Rust
#                             extension) is not built; the source tree is put on sys.path instead
#   .ci/setup.sh --force      reinstall even if the stamp says nothing changed
#
# uv.lock pins every Python package (with hashes). When pyproject.toml changed and uv.lock no
# longer matches it, CI (CI=true) fails; elsewhere the lock is updated (pinned versions that still
# fit are kept) and you are told to commit it.
#
# Environment: PYTHON (interpreter used to create .venv, default python3, must be >= 3.11),
#              BULKIO_SKIP_APT=1 (never call apt-get; just check that the binaries exist).
#
# System packages (Debian/Ubuntu): postgresql, postgresql-contrib, redis-server, chromium (the
# browser tests of the web page drive it headless through Playwright, which never downloads a
# browser of its own), plus a C compiler and, for a Debian-packaged python3,
# python3-venv/python3-dev. Their system services are never started or enabled: bulkio runs its
# own private instances (.ci/services.sh, tests/servers.py).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMP=$VENV/.bulkio-setup-stamp

BUILD=1
FORCE=0
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        --force) FORCE=1 ;;
        -h | --help)
            sed -n '2,22p' "$0"
            exit 0
            ;;
        *)
            echo "setup.sh: unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

log() { printf '[setup] %s\n' "$*" >&2; }
die() {
    printf '[setup] ERROR: %s\n' "$*" >&2
    exit 1
}

# ----------------------------------------------------------------------------- system packages

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

have_postgres_server() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
    command -v initdb >/dev/null 2>&1 && return 0
    command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir 2>/dev/null)/initdb" ]]
}

have_chromium() {
    if [[ -n ${BULKIO_CHROMIUM:-} ]]; then
        [[ -x $BULKIO_CHROMIUM ]]
    else
        command -v chromium >/dev/null 2>&1
    fi
}

PY=${PYTHON:-python3}

install_system_packages() {
    local -a want=()
    if command -v dpkg-query >/dev/null 2>&1 && [[ ${BULKIO_SKIP_APT:-0} != 1 ]]; then
        local p
        for p in postgresql postgresql-contrib redis-server; do
            pkg_installed "$p" || want+=("$p")
        done
        # tests/browser/ (BULKIO_CHROMIUM may name another Chromium binary instead).
        if [[ -z ${BULKIO_CHROMIUM:-} ]] && ! have_chromium; then
            want+=(chromium)
        fi
        if ! command -v cc >/dev/null 2>&1; then
            want+=(gcc libc6-dev)
        fi
        if ! command -v "$PY" >/dev/null 2>&1; then
            want+=(python3 python3-venv python3-dev)
        else
            # A Debian-packaged interpreter needs python3-venv (ensurepip) to create .venv and
            # libpython3.X-dev to link `cargo test` binaries of the PyO3 crate.
            local real
            real=$(readlink -f "$(command -v "$PY")")
            if [[ $real == /usr/bin/python3* ]]; then
                local ver
                ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
                pkg_installed "python$ver-venv" || want+=("python$ver-venv")
                pkg_installed "libpython$ver-dev" || want+=("libpython$ver-dev")
            fi
        fi
    fi

    if ((${#want[@]} == 0)); then
        have_postgres_server || die "PostgreSQL server binaries (initdb) not found"
        command -v redis-server >/dev/null 2>&1 || die "redis-server not found"
        have_chromium || die "chromium not found (the browser tests need it: apt-get install chromium, or set BULKIO_CHROMIUM)"
        return 0
    fi

    log "installing Debian packages: ${want[*]}"
    # Keep maintainer scripts from starting (or enabling) the system services: a policy-rc.d that
    # answers 101 ("action forbidden") is honoured by invoke-rc.d and deb-systemd-invoke.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        made_policy=1
    fi
    local -a apt_env=(env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1)
    local -a install=(apt-get install -y -q --no-install-recommends "${want[@]}")
    local rc=0
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        as_root "${apt_env[@]}" apt-get update -q || rc=$?
    fi
    if ((rc == 0)); then
        if ! as_root "${apt_env[@]}" "${install[@]}"; then
            log "apt-get install failed; running apt-get update and retrying"
            as_root "${apt_env[@]}" apt-get update -q && as_root "${apt_env[@]}" "${install[@]}" || rc=$?
        fi
    fi
    if ((made_policy)); then
        as_root rm -f "$policy"
    fi
    ((rc == 0)) || die "apt-get failed (exit $rc)"

    # Belt and braces: never leave the distribution's services enabled or running.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now postgresql.service redis-server.service >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null 2>&1; then
        local s
        for s in postgresql redis-server; do
            if [[ -x /etc/init.d/$s ]]; then
                as_root update-rc.d "$s" disable >/dev/null 2>&1 || true
            fi
        done
    fi
    have_postgres_server || die "PostgreSQL server binaries (initdb) still not found"
    command -v redis-server >/dev/null 2>&1 || die "redis-server still not found"
    have_chromium || die "chromium still not found"
}

install_system_packages

# ------------------------------------------------------------------------------------ the venv

command -v "$PY" >/dev/null 2>&1 || die "$PY not found (need Python >= 3.11; set PYTHON=...)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PY is $("$PY" -V 2>&1); bulkio needs Python >= 3.11 (set PYTHON=...)"
PY_VERSION=$("$PY" -c 'import sys; print(sys.version.split()[0])')

if [[ -x $VENV/bin/python ]]; then
    VENV_VERSION=$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)
    if [[ $VENV_VERSION != "$PY_VERSION" ]]; then
        log "recreating .venv (was Python ${VENV_VERSION:-broken}, want $PY_VERSION)"
        rm -rf "$VENV"
    fi
fi
if [[ ! -x $VENV/bin/python ]]; then
    log "creating .venv with $PY ($PY_VERSION)"
    "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python

if [[ $BUILD == 1 ]]; then
    # maturin needs cargo; rustup's default location is not always on PATH in CI shells.
    if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
        export PATH=$HOME/.cargo/bin:$PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: a Rust toolchain is needed to build engine._native (install rustup from https://rustup.rs, or run '.ci/setup.sh --no-build' to install only the Python dependencies)"
fi

# Everything that can change what gets installed or compiled. Python sources are not part of it:
# the install is editable.
compute_stamp() {
    {
        echo "mode=$BUILD python=$PY_VERSION"
        local f
        for f in pyproject.toml uv.lock Cargo.toml Cargo.lock native/Cargo.toml native/build.rs; do
            [[ -f $f ]] && echo "$f $(sha256sum <"$f")"
        done
        if [[ -d native/src ]]; then
            find native/src -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
        fi
    } | sha256sum | cut -d' ' -f1
}

installed_ok() {
    [[ -f $STAMP && $(cat "$STAMP") == "$1" ]] || return 1
    if [[ $BUILD == 1 ]]; then
        "$VPY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("engine._native") is None)' 2>/dev/null
    else
        "$VPY" -c 'import engine' 2>/dev/null
    fi
}

WANT=$(compute_stamp)
if [[ $FORCE == 0 ]] && installed_ok "$WANT"; then
    log "up to date (.venv, Python $PY_VERSION$([[ $BUILD == 1 ]] || echo ', --no-build'))"
    exit 0
fi

rm -f "$STAMP"
# uv itself is pinned: uv.lock's format and resolution are those of this version.
UV_VERSION=0.13.9
UV=$VENV/bin/uv
if [[ ! -x $UV || $("$UV" --version 2>/dev/null | cut -d' ' -f2) != "$UV_VERSION" ]]; then
    log "installing uv $UV_VERSION into .venv"
    "$VPY" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
SRC_PTH=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_bulkio_source_tree.pth

# `uv sync` installs exactly the versions in uv.lock into .venv (the project environment).
# --inexact: leave alone what it did not install (pip, uv itself, tools added by hand).
export UV_PROJECT_ENVIRONMENT=$VENV
SYNC=("$UV" sync --inexact)
if [[ ${CI:-} == true ]]; then
    "$UV" lock --check ||
        die "uv.lock does not match pyproject.toml: run '.venv/bin/uv lock' and commit uv.lock"
    SYNC+=(--locked)
else
    LOCK_BEFORE=$(sha256sum <uv.lock 2>/dev/null || true)
fi

start=$SECONDS
if [[ $BUILD == 1 ]]; then
    rm -f "$SRC_PTH"
    log "installing bulkio editable + the dev dependency group from uv.lock (compiles native/ through maturin)"
    "${SYNC[@]}" --reinstall-package bulkio
    # The extension is an abi3 module (engine/_native.abi3.so). A version-specific one left by an
    # older build would be imported first (CPython tries .cpython-3XX-*.so before .abi3.so).
    find engine -maxdepth 1 -name '_native.*.so' ! -name '_native.abi3.so' -print -delete |
        sed 's/^/[setup] removed stale /' >&2
    "$VPY" -c 'import engine._native' ||
        die "the build finished but 'import engine._native' fails"
else
    log "installing the Python dependencies only from uv.lock (--no-build: engine._native is NOT built)"
    "${SYNC[@]}" --no-install-project
    echo "$ROOT" >"$SRC_PTH"
fi
if [[ ${CI:-} != true && $(sha256sum <uv.lock) != "$LOCK_BEFORE" ]]; then
    log "uv.lock was updated to match pyproject.toml: commit it"
fi
echo "$(compute_stamp)" >"$STAMP"
log "done in $((SECONDS - start))s"
