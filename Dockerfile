# stmdb container image: a static binary on distroless.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t stmdb .
#   docker run -d --name stmdb -p 7401:7401 -p 7480:7480 -p 9090:9090 -v stmdb-data:/data stmdb
#   docker exec stmdb stmdb ping
#
# Base: gcr.io/distroless/static-debian12:nonroot. The binary is static
# (CGO_ENABLED=0), so it needs no libc. Over scratch, distroless adds only
# /etc/passwd with a nonroot user (uid 65532), CA certificates and tzdata;
# over alpine, it leaves out a shell and a package manager, which the server
# never uses and an attacker would. Debug with `docker cp` or an ephemeral
# debug container instead of a shell.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
# The build context has no .git (.dockerignore): the revision comes in as a
# build argument and `stmdb version` prints it.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.serverVersion=${VERSION} -X main.buildRevision=${REVISION}" \
      -o /out/stmdb . \
 && mkdir /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/stmdb /usr/local/bin/stmdb
# An empty /data owned by the server's user: a named volume mounted there
# starts as a copy of it. A bind-mounted host directory must be writable by
# uid 65532.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# Listen on every interface of the container (the defaults are loopback);
# publish only the ports you need. RSTMDB_ADDR is where `stmdb ping` and the
# other client verbs connect from inside the container.
ENV RSTMDB_DATA=/data \
    RSTMDB_BIND=0.0.0.0:7401 \
    RSTMDB_HTTP_BIND=0.0.0.0:7480 \
    RSTMDB_METRICS_ENABLED=true \
    RSTMDB_METRICS_BIND=0.0.0.0:9090 \
    RSTMDB_ADDR=127.0.0.1:7401
VOLUME ["/data"]
# 7401 RCP (clients), 7480 HTTP API and console, 9090 Prometheus /metrics.
EXPOSE 7401 7480 9090
# PING needs no AUTH, so the check works with auth required. With TLS on,
# add "--ca-cert", "FILE" (which implies --tls) to this command.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/stmdb", "ping"]
# SIGTERM (docker stop) shuts down cleanly: the log is synced and closed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/stmdb"]
CMD ["serve"]
