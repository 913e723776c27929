# The operator image: a Python virtualenv built in one stage and copied alone onto the
# same slim base, run as a non-root user that needs no writable root filesystem.
#
# BASE_IMAGE defaults to a local tag that scripts/build-image makes from Debian bookworm
# packages (no registry needed). With registry access, any Python 3.11+ base works:
#   buildah bud --build-arg BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm .
# Both stages must use the same base: the venv links to the base's python3.
ARG BASE_IMAGE=localhost/ona-taskrun/python-base:bookworm

FROM ${BASE_IMAGE} AS builder
# SOURCE_DATE_EPOCH (scripts/release sets it; scripts/build-image passes it with
# --timestamp) makes the compiled bytecode depend on the sources only, not on when they
# were unpacked, and the wheel's file times fixed; unset when empty, for the tools read an
# empty one as a bad number. Declared first in each stage, so a build with another value
# reuses no cached layer of this stage (a development build's layers keep their own times).
ARG SOURCE_DATE_EPOCH=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A name for the runtime UID: kopf (through getpass) and other libraries look the
# user up in /etc/passwd and fail without an entry.
RUN echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'nonroot:x:65532:' >> /etc/group \
    && python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first, from the locks alone, so that a change to the operator's code
# rebuilds only the small layer below. Every package is pinned with its hashes
# (requirements.lock, made by scripts/lock) and taken as a wheel: the same lock gives the
# same packages, byte for byte. The build backend that makes the operator's own wheel is
# locked the same way (requirements-build.lock) and kept in a venv of its own, so nothing
# unpinned enters the build and nothing of it the image. The optional ca-bundle secret
# lets pip trust a TLS-intercepting proxy without the bundle ending up in any layer.
# SOURCE_DATE_EPOCH: see the top of this stage.
COPY requirements.lock requirements-build.lock ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && if [ -z "$SOURCE_DATE_EPOCH" ]; then unset SOURCE_DATE_EPOCH; fi \
    && /opt/venv/bin/pip install --require-hashes --only-binary :all: \
         --requirement requirements.lock \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --only-binary :all: \
         --requirement requirements-build.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
# A non-editable install, so the final stage needs no source tree; pip precompiles
# bytecode here because nothing may write it at runtime. pip and setuptools are only
# needed to build.
RUN if [ -z "$SOURCE_DATE_EPOCH" ]; then unset SOURCE_DATE_EPOCH; fi \
    && /opt/build/bin/pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /tmp/wheel . \
    && /opt/venv/bin/pip install --no-deps --no-index /tmp/wheel/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE}
ARG SOURCE_DATE_EPOCH=
LABEL org.opencontainers.image.title="ona-taskrun-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs Ona automation tasks from TaskRun resources" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /etc/passwd /etc/group /etc/
COPY --from=builder /opt/venv /opt/venv
# HOME points at /tmp, the one writable place (an emptyDir in the Deployment), for
# libraries that look under ~.
ENV PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
ENTRYPOINT ["taskrun-operator"]
