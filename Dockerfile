# syntax=docker/dockerfile:1
# One image, four services: the command names the service.
#   docker run sluice gateway | coordinator | runner | streamer
# Build with BuildKit (the default builder since Docker 23): the runtime stage mounts the
# builder's wheels instead of copying them, so they never land in a layer.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# Every dependency is pinned in pyproject.toml; this resolves them to wheels once.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --no-create-home --shell /usr/sbin/nologin sluice
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels sluice
COPY deploy/docker/healthcheck.py /usr/local/bin/sluice-healthcheck
USER 10001:10001
EXPOSE 8080 8081 8082 8083
# Finds the service from the container's command and probes its port; see docs/deploy.md.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "/usr/local/bin/sluice-healthcheck"]
ENTRYPOINT ["sluice"]
CMD ["--help"]
