# The operator image: a Python virtualenv built in one stage and copied alone onto the
# same slim base, run as a non-root user that needs no writable root filesystem.
#
# BASE_IMAGE defaults to a local tag that scripts/build-image makes from Debian bookworm
# packages (no registry needed). With registry access, any Python 3.11+ base works:
#   buildah bud --build-arg BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm .
# Both stages must use the same base: the venv links to the base's python3.
ARG BASE_IMAGE=localhost/ona-taskrun/python-base:bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A name for the runtime UID: kopf (through getpass) and other libraries look the
# user up in /etc/passwd and fail without an entry.
RUN echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'nonroot:x:65532:' >> /etc/group \
    && python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a change to the operator's
# code rebuilds only the small layer below. The optional ca-bundle secret lets pip
# trust a TLS-intercepting proxy without the bundle ending up in any layer.
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt
COPY README.md ./
COPY operator/ operator/
# A non-editable install, so the final stage needs no source tree; pip precompiles
# bytecode here because nothing may write it at runtime. pip and setuptools are only
# needed to build.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE}
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
