# helpdesk-triage: the triage sidecar with its bundled ONNX model.
#
#   docker build -t helpdesk-triage:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# Two stages: the builder installs the pinned runtime dependencies into a
# virtualenv (never PyTorch: it is a training extra), then the package; the
# runtime stage is python:3.11-slim with that virtualenv and the model, run as
# UID 10001. PYTHON_IMAGE may name any Debian-based image with Python 3.11 as
# `python` and its venv module (.ci/image-test.sh builds one with debootstrap).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
RUN python -m venv /opt/venv

# Dependencies before the source: this layer is rebuilt only when the lock
# changes. docker/requirements.lock pins [project].dependencies (no extras)
# with hashes (make lock), so the image does not depend on what PyPI serves
# on the day it is built; --no-deps keeps out what the lock leaves out.
COPY docker/requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --require-hashes -r requirements.lock

# The package itself; its dependencies are already in place.
COPY pyproject.toml README.md ./
COPY connector/ connector/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    # Nothing at run time installs packages or runs numpy's test suite, and the
    # onnxruntime Python tooling (quantization, transformer optimisers) is for
    # preparing models, not serving them.
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -depth -type d -path '*/numpy/*' -name tests -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3.11/site-packages/onnxruntime/tools \
              /opt/venv/lib/python3.11/site-packages/onnxruntime/transformers \
              /opt/venv/lib/python3.11/site-packages/onnxruntime/quantization


FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="helpdesk-triage" \
      org.opencontainers.image.description="AI triage sidecar for Zammad, Znuny/OTRS/OTOBO and Request Tracker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"

# The model path and the listen address are image facts; the environment
# outranks the config file, so these win over a config.yaml that names them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRIAGE_MODEL__PATH=/app/model \
    TRIAGE_SERVER__HOST=0.0.0.0

# A passwd entry for the numeric user, for libraries that look the user up.
RUN groupadd --system --gid 10001 triage \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin triage

COPY --from=builder /opt/venv /opt/venv
# Owned by root and not writable by the service's user: the model is read-only.
COPY model/ /app/model/

WORKDIR /app
USER 10001:10001
EXPOSE 8080

# Kubernetes probes /healthz and /readyz (see the chart); no HEALTHCHECK here,
# since its port would have to guess the configured one.
ENTRYPOINT ["/opt/venv/bin/helpdesk-triage"]
CMD ["run"]
