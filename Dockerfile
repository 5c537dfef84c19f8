# syntax=docker/dockerfile:1
# One image, four services: the command names the service.
#   docker run sluice gateway | coordinator | runner | streamer
# Build with BuildKit (the default builder since Docker 23) or podman: the runtime stage
# mounts the builder's wheels instead of copying them, so they never land in a layer.
# `make image` builds it with podman, on a locally made base when no registry answers.
# The base is pinned by digest; docs/deploy.md says how to move the pin.

ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Every dependency, transitive ones included, comes from the hashed locks (`make lock`):
# pip refuses any file whose hash is not in them. The build backend is locked the same way.
COPY requirements.lock requirements-build.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-build.lock \
 && pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements.lock
COPY . .
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

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
