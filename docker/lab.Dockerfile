# The coordinating lab's server: `cardiacfl lab start` (SuperLink on loopback + the Fleet gateway).
# Build from the repository root:  docker build -f docker/lab.Dockerfile -t cardiacfl-lab .
FROM python:3.11.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1

RUN useradd --create-home --uid 10002 lab
WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY cardiacfl ./cardiacfl
COPY client ./client
COPY server ./server
COPY sitedata ./sitedata
COPY rundb ./rundb
COPY shared_models ./shared_models
COPY dashboard ./dashboard
COPY synthetic ./synthetic
COPY studies ./studies
RUN pip install . && chown -R lab /app

USER 10002
# /kit: the lab's kit (read-only); /state: logs, checkpoints, the run DB (a named volume).
VOLUME ["/state"]
EXPOSE 9092
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 9092), 5)"]
ENTRYPOINT ["cardiacfl", "lab", "start"]
CMD ["--kit", "/kit", "--lab-state", "/state", "--fleet-address", "0.0.0.0:9092"]
