# A hospital's node: `cardiacfl site start` (SuperNode + warm worker), as the multi-host test runs it.
# Build from the repository root:  docker build -f docker/site.Dockerfile -t cardiacfl-site .
# GPU hospitals: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
FROM python:3.11.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# CARDIACFL_STATE_DIR: the ledger, cache and logs go to the /state volume, apart from the read-only data.
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 CARDIACFL_STATE_DIR=/state

RUN useradd --create-home --uid 10001 site
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
# flwr is pinned by pyproject.toml (>=1.41,<1.42); no secret is baked in: the kit and data are mounted.
RUN pip install . && chown -R site /app

USER 10001
# /kit: this hospital's kit archive (read-only); /data: the site's data and config (read-only);
# /state: the ledger, cache and logs (a named volume: the privacy ledger must outlive the container).
VOLUME ["/state"]
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["python", "-c", "import glob, socket; s = socket.socket(socket.AF_UNIX); s.connect(glob.glob('/state/*/worker/worker.sock')[0])"]
ENTRYPOINT ["cardiacfl", "site", "start"]
CMD ["--kit", "/kit/site.tar.gz", "--site-config", "/data/site-config.toml"]
