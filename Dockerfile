# payrun: one image for the worker, the webhook server/dashboard and the CLI.
#
#   docker build -t payrun .
#   docker run --rm -e PAYRUN_DATABASE_URL=postgres://payrun:...@db/payrun \
#       -e DOTS_CLIENT_ID=... -e DOTS_API_KEY=... payrun                  # payrun worker (default)
#   docker run ... -p 8080:8080 payrun serve --listen 0.0.0.0:8080         # webhooks + dashboard
#   docker run ... -v "$PWD:/in:ro" payrun submit /in/payouts.csv          # any other subcommand
#
# Secrets (DOTS_API_KEY, DOTS_WEBHOOK_SECRET, the password in PAYRUN_DATABASE_URL) are never
# baked in: pass them in the environment at run time. Linted by .ci/check-deploy (hadolint).

# ---- build -----------------------------------------------------------------------------------
# Same toolchain as the development machines (rustc 1.95). rust:*-slim ships gcc and libc6-dev,
# which is all the C in the tree needs (bundled SQLite; ring's C and assembly: rustls uses
# ring alone, see Cargo.toml). The release profile builds dependencies without debug info
# and strips nothing, so the binary copied below keeps symbols and payrun's line tables.
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, against stub sources, so this layer is reused until Cargo.toml or
# Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources. config/default.toml (include_str!) and migrations/ (sqlx::migrate!) are read
# at compile time. The touch makes cargo rebuild the crate over the stub whatever the mtimes
# COPY preserved.
COPY src ./src
COPY config ./config
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/payrun /usr/local/bin/payrun \
    && /usr/local/bin/payrun --version

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: reqwest and sqlx use rustls with the system trust store; no OpenSSL needed.
# Not version-pinned on purpose: a Debian mirror carries only the newest build of a package per
# suite (bookworm-security moved ca-certificates from 20230311+deb12u1 to 20250419~deb12u2), so
# an exact pin breaks the build at the next update, and that update is one we want.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, numeric non-root user, so volume ownership and runAsNonRoot checks are predictable.
RUN groupadd --system --gid 10001 payrun \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin payrun

# The binary reads config/default.toml and config/$PAYRUN_ENV.toml relative to the working
# directory. Migrations are embedded in the binary and run on connect; the copy here is for
# reference and for operators who apply them by hand. examples/ is what `payrun demo` reads.
# Scheduled batches (jobs/*.toml) are deployment-specific and not baked in: mount them at
# /app/jobs (PAYRUN_SCHEDULES_DIR, relative to /app).
WORKDIR /app
COPY --from=builder /usr/local/bin/payrun /usr/local/bin/payrun
COPY config ./config
COPY migrations ./migrations
COPY examples ./examples

# The default database is the embedded SQLite file sqlite://data/payrun.db, i.e. /app/data.
RUN mkdir -p /app/data && chown 10001:10001 /app/data
VOLUME ["/app/data"]

# The worker's health endpoint (GET /healthz). `payrun serve` takes --listen explicitly.
ENV PAYRUN_HEALTH_LISTEN=0.0.0.0:9090

USER 10001:10001

# 9090: worker /healthz (PAYRUN_HEALTH_LISTEN); 8080: payrun serve --listen 0.0.0.0:8080
# (webhooks, dashboard, /healthz, /metrics); 7070: payrun sim --listen 0.0.0.0:7070.
EXPOSE 9090 8080 7070

# No curl in the image: bash's /dev/tcp does one HTTP/1.0 GET of /healthz on the port of
# PAYRUN_HEALTH_LISTEN and wants a 200. For `serve` or `sim`, override it (docker-compose.yml
# does). One-shot CLI commands exit long before the first check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${PAYRUN_HEALTH_LISTEN##*:}\" && printf 'GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && read -r -t 4 _ code _ <&3 && [ \"$code\" = 200 ]"]

ENTRYPOINT ["payrun"]
CMD ["worker"]
