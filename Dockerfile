# bulkio's image: the wheel is built once (Rust only in the build stage) and installed, with the
# runtime dependencies pinned by uv.lock, into a slim image that has no compiler and no source tree.
#
#   docker build -t bulkio:local .       (or `docker compose build`, which docker-compose.yml uses)
#
# The image runs `bulkio` (migrate, worker, token, cleanup) and `granian` (the API); see
# docker-compose.yml. Both are on PATH (/opt/venv/bin).

ARG PYTHON_IMAGE=python:3.11-slim-trixie
# Same Debian release as PYTHON_IMAGE: the compiled module links against the build stage's glibc.
ARG RUST_IMAGE=rust:1.95-slim-trixie

# ------------------------------------------------------------------------------ Rust toolchain
FROM ${RUST_IMAGE} AS rust

# ------------------------------------------------------------------- build: wheel + pinned deps
FROM ${PYTHON_IMAGE} AS build
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH \
    UV_PYTHON_DOWNLOADS=never
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
# gcc: the linker rustc calls.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# The uv version .ci/setup.sh pins (uv.lock's format is that version's).
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md LICENSE Cargo.toml Cargo.lock ./
COPY native/ native/
COPY engine/ engine/
COPY api/ api/
# One abi3 wheel (maturin, release profile) and the runtime dependencies of uv.lock with their
# hashes (no dependency groups: test, bench and lint tools stay out of the image).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=cache,target=/root/.cache/uv \
    uv build --wheel --out-dir /dist . \
    && uv export --frozen --no-default-groups --no-emit-project --format requirements-txt \
        --output-file /dist/requirements.txt

# ------------------------------------------------------------------------------------ runtime
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BULKIO_METRICS_DIR=/var/lib/bulkio/metrics
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes -r /dist/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
        /dist/bulkio-*.whl
# An unprivileged user; the metrics directory exists (owned by it) so that a named volume mounted
# there starts with that owner.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/bulkio bulkio \
    && install -d -o bulkio -g bulkio /var/lib/bulkio/metrics
USER bulkio
WORKDIR /var/lib/bulkio
EXPOSE 8000
CMD ["bulkio", "--help"]
