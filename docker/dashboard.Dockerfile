# The study leads' dashboard (Streamlit), reading the lab's run database.
# Build from the repository root:  docker build -f docker/dashboard.Dockerfile -t cardiacfl-dashboard .
FROM python:3.11.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10003 dashboard
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
RUN pip install . && chown -R dashboard /app

USER 10003
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=5)"]
# The password comes from the environment at run time (CARDIACFL_DASHBOARD_PASSWORD), never from the image.
ENTRYPOINT ["cardiacfl", "dashboard"]
CMD ["--db", "/state/study.db", "--host", "0.0.0.0"]
