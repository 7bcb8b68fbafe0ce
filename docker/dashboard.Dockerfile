# The study leads' dashboard (Streamlit), reading the lab's run database.
# Build from the repository root:  docker build -f docker/dashboard.Dockerfile -t cardiacfl-dashboard .
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

RUN useradd --create-home --uid 10003 --user-group dashboard
USER 10003:10003
EXPOSE 8501
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=5)"]
# The sign-in password comes at run time, from a secret file (CARDIACFL_DASHBOARD_PASSWORD_FILE), never from the image.
ENTRYPOINT ["cardiacfl", "dashboard"]
CMD ["--db", "/state/study.db", "--host", "0.0.0.0"]
