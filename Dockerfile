# syntax=docker/dockerfile:1
# rotator's container image. Two stages: the first builds the wheel and installs it, with its
# dependencies, into a virtual environment at /opt/rotator; the second copies only that environment
# onto a clean slim Python, so no build tool, source tree or pip cache reaches the image.
# `make image` builds it without Docker (buildah, on a Debian base: deploy/container/build-image),
# and tests/deploy/test_image.py runs that image against the Cloudflare simulator.
#
#   docker build -t rotator:0.1.0 .
#   docker run --read-only -v "$PWD/config.yaml:/etc/rotator/config.yaml:ro" \
#     -e CLOUDFLARE_API_TOKEN -p 9464:9464 rotator:0.1.0

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.txt pyproject.toml README.md ./
COPY rotator/ rotator/
# `python3` and a tools environment's own pip, never a bare `python` or `pip`: python:3.11-slim has
# both spellings in /usr/local/bin, a Debian base (python3, python3-venv; how `make image` builds
# here) has only /usr/bin/python3, and its system pip refuses to install outside an environment.
#
# What runs: exactly requirements.txt (`make lock`: every package pinned, with the hashes of its
# files on PyPI), installed with --require-hashes, so a package that differs from the one locked
# (another version, a tampered or re-uploaded file) fails the build; --no-deps on top, so nothing
# the lock does not list is resolved. Then rotator's own wheel, built here from the source, alone.
# /opt/rotator is made --without-pip and filled by the tools environment's pip (`--python`), so
# neither pip nor setuptools nor wheel is in the environment the image ships; the tools
# environment stays in this stage.
# The pip.conf secret (optional: `--secret id=pip.conf,src=/etc/pip.conf`) lets pip use a private
# index or proxy as the build machine's pip does; a secret mount never reaches a layer, and may hold
# the index's credentials.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    python3 -m venv /opt/tools \
    && python3 -m venv --without-pip /opt/rotator \
    && /opt/tools/bin/pip --python /opt/rotator/bin/python install --no-deps --require-hashes \
       --only-binary :all: -r requirements.txt \
    && /opt/tools/bin/pip wheel --no-deps --wheel-dir /dist . \
    && /opt/tools/bin/pip --python /opt/rotator/bin/python install --no-deps --no-index /dist/*.whl \
    && ! /opt/rotator/bin/python -c "import pip" 2>/dev/null \
    && ! /opt/rotator/bin/python -c "import setuptools" 2>/dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rotator" \
      org.opencontainers.image.description="Keeps Cloudflare Zero Trust Access signing keys rotated on a policy, with logs and Prometheus metrics." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the pod (the wheel's modules were
# compiled at install). PYTHONUNBUFFERED: each JSON log line reaches `docker logs` as it is written.
ENV PATH=/opt/rotator/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROTATOR_CONFIG=/etc/rotator/config.yaml
# A fixed uid/gid so Kubernetes' runAsNonRoot can verify it and volume ownership is predictable.
# /var/lib/rotator is the one writable place the daemon may use (state_file); the config is mounted
# read-only at /etc/rotator/config.yaml.
RUN groupadd --system --gid 10001 rotator \
    && useradd --system --uid 10001 --gid rotator --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin rotator \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/rotator \
    && install -d -m 0755 /etc/rotator
COPY --from=build /opt/rotator /opt/rotator
USER 10001:10001
# http.listen's default: /metrics, /healthz, /readyz.
EXPOSE 9464
ENTRYPOINT ["rotator"]
CMD ["run"]
