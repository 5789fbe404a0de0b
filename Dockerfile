# The boto-prom demo app: `boto-prom demo` drives boto 2 against an embedded AWS-protocol
# server (moto) and serves its metrics on port 9875, for the Prometheus in docker-compose.yml.
# Python 3.11: boto 2 does not import on 3.12 and later.
FROM python:3.11.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml setup.cfg setup.py README.md LICENSE ./
COPY boto_prom ./boto_prom
RUN pip install ".[demo]"

# The demo needs no privileges.
RUN useradd --create-home --uid 10001 boto-prom
USER boto-prom
WORKDIR /home/boto-prom

EXPOSE 9875
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9875/healthz', timeout=2)"]
# 0.0.0.0: Prometheus reaches the app from another container.
CMD ["boto-prom", "demo", "--addr", "0.0.0.0"]
