# A hospital's node: `cardiacfl site start` (SuperNode, the site's app gate and warm worker), as the multi-host
# test runs it. Build from the repository root:  docker build -f docker/site.Dockerfile -t cardiacfl-site .
FROM python:3.11.11-slim-bookworm

# The same instructions, in the same order, open all three Dockerfiles up to the project's install, so the three
# images share those layers (torch's ≈ 860 MB is stored once). GPU hospitals: --build-arg TORCH_INDEX=
# https://download.pytorch.org/whl/cu124 (a CUDA build of the same torch; `training.device = "auto"` then picks
# the GPU) and `docker run --gpus all`.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /app
# The dependencies before the code, so that a code change rebuilds only the layers after them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md ./
COPY cardiacfl ./cardiacfl
COPY client ./client
COPY server ./server
COPY sitedata ./sitedata
COPY rundb ./rundb
COPY protocol ./protocol
COPY shared_models ./shared_models
COPY dashboard ./dashboard
COPY synthetic ./synthetic
COPY studies ./studies
# Editable: /app stays the app folder the lab submits (`flwr run /app`) and whose FAB hash hospitals approve.
RUN pip install --no-deps -e . && python -m compileall -q /app

# /state: the ledger, cache and logs (a named volume: the privacy ledger must outlive the container), owned by
# the site's user so that a fresh volume starts writable.
RUN useradd --create-home --uid 10001 --user-group site && mkdir /state && chown site:site /state
ENV CARDIACFL_STATE_DIR=/state
USER 10001:10001
# /kit: this hospital's kit archive (read-only); /data: the site's data and config (read-only).
VOLUME ["/state"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import glob, socket; s = socket.socket(socket.AF_UNIX); s.connect(glob.glob('/state/*/worker/worker.sock')[0])"]
ENTRYPOINT ["cardiacfl", "site", "start"]
CMD ["--kit", "/kit/site.tar.gz", "--site-config", "/data/site-config.toml"]
