# agentledger in a container: the wheel is built in one stage and installed, without -e, into a
# slim runtime stage that runs as a non-root user with its data on a volume. Every step calls
# .ci/entrypoint.sh, the same script CI uses to build, install, start and health-check the wheel.
#
#   docker build -t agentledger .
#   docker run -p 4317:4317 -p 4318:4318 -v agentledger-data:/var/lib/agentledger agentledger
#
# Config: /etc/agentledger/agentledger.yaml (config/examples/container.yaml; mount your own file
# there or set AGENTLEDGER_CONFIG), with ${env:...} and ${file:...} values.

FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN sh .ci/entrypoint.sh build /dist

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTLEDGER_CONFIG=/etc/agentledger/agentledger.yaml \
    AGENTLEDGER_DATA_DIR=/var/lib/agentledger
COPY .ci/entrypoint.sh /usr/local/bin/agentledger-entrypoint
COPY config/examples/container.yaml /etc/agentledger/agentledger.yaml
COPY --from=build /dist /dist
RUN sh /usr/local/bin/agentledger-entrypoint install /dist \
    && rm -rf /dist \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/agentledger agentledger \
    && mkdir -p /var/lib/agentledger \
    && chown agentledger:agentledger /var/lib/agentledger
USER agentledger
WORKDIR /var/lib/agentledger
VOLUME ["/var/lib/agentledger"]
EXPOSE 4317 4318
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["sh", "/usr/local/bin/agentledger-entrypoint", "health"]
ENTRYPOINT ["sh", "/usr/local/bin/agentledger-entrypoint", "serve"]
