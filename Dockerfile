# The release image of todobackend: one statically linked binary, FROM scratch,
# so building it pulls nothing. `cargo xtask build` compiles the binary and
# stages the build context (rootfs/: the binary, root's, mode 0555; writable/:
# the empty data/ and public/ directories); build it with that, not by hand.
FROM scratch

ARG APP_NAME=todobackend
ARG APP_VERSION=unknown
# The commit the binary was built from (`cargo xtask build` passes HEAD): the
# deploy history reads it from the image, so an entry names the deployed
# version's own commit, not the checkout of whoever deployed it.
ARG APP_COMMIT=
LABEL application=$APP_NAME \
      version=$APP_VERSION \
      org.opencontainers.image.title=$APP_NAME \
      org.opencontainers.image.version=$APP_VERSION \
      org.opencontainers.image.revision=$APP_COMMIT

# The binary is root's, mode 0555 (staged so): the process, a numeric
# non-root user (scratch has no /etc/passwd), can run it but not replace it.
COPY rootfs/ /
# The only directories that user owns: /data (SQLite) and /public (where
# `collectstatic` writes; `serve` only reads it). Named volumes mounted there
# take that ownership when first mounted. No VOLUME: a stack or compose file
# mounts what a service writes, and nothing else gets a writable volume (the
# PostgreSQL stack's app writes nowhere; its services run read_only).
COPY --chown=10001:10001 writable/ /
USER 10001:10001

ENV TODOBACKEND_DB=/data/todobackend.sqlite3 \
    TODOBACKEND_STATIC_ROOT=/public \
    TODOBACKEND_LISTEN=0.0.0.0:8000
EXPOSE 8000

# No shell or curl in the image: the binary checks itself, on GET /healthz
# (liveness, not /readyz: a briefly unavailable database must not get every
# replica restarted at once).
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/todobackend", "healthcheck"]

ENTRYPOINT ["/todobackend"]
CMD ["serve"]
