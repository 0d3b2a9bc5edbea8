# mnist-serving: Flask + gunicorn + onnxruntime serving the ONNX models in models/.
#
#   podman build --format docker -t mnist-serving .                 # CPU serving image (default target)
#   podman build --format docker --build-arg ORT_PACKAGE=onnxruntime-gpu -t mnist-serving:gpu .
#   podman build --format docker --target train -t mnist-serving:train .
#
# (docker build works the same; podman needs --format docker to keep HEALTHCHECK, which the OCI
# image format has no field for.)
#
# Stages: builder (venv with the serving dependencies, pinned by constraints.txt) -> runtime (the
# default, last stage: python:3.11-slim + that venv + the code + models/, no compilers, no TensorFlow).
# train (the [train] extra on top of the builder venv) is only built when asked for with --target.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
# onnxruntime (CPU) by default; onnxruntime-gpu for a CUDA image. ORT_EXTRAS pulls the CUDA runtime,
# cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN 9 from PyPI (nvidia-* wheels; CUDA 13 for onnxruntime-gpu
# 1.31, so the host driver must support CUDA 13) when ORT_PACKAGE=onnxruntime-gpu: no CUDA base
# image, only the host's NVIDIA driver (docker run --gpus all, podman run --device nvidia.com/gpu=all,
# or the Kubernetes NVIDIA device plugin). The runtime stage registers those libraries with ldconfig.
ARG ORT_PACKAGE=onnxruntime
ARG ORT_EXTRAS="[cuda,cudnn]"
# Pin for ORT_PACKAGE when it is not onnxruntime (constraints.txt pins onnxruntime, whose GPU twin
# is often a release behind on PyPI), e.g. --build-arg ORT_VERSION=1.31.1. Empty = newest that fits.
ARG ORT_VERSION=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
# The venv has no pip/setuptools of its own (25 MB less in the image): the base image's pip installs
# into it with --python (/usr/local/bin/python: the base image's, not the venv's).
RUN python -m venv --without-pip /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY deploy/requirements.py deploy/requirements.py
# Only the dependencies go into the venv (the code is copied to /app in the runtime stage), so this
# layer is rebuilt only when pyproject.toml or constraints.txt change.
RUN python deploy/requirements.py serve --ort-package "$ORT_PACKAGE" --ort-extras "$ORT_EXTRAS" \
        --ort-version "$ORT_VERSION" > requirements-serve.txt \
 && cat requirements-serve.txt \
 && /usr/local/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --progress-bar off -c constraints.txt -r requirements-serve.txt \
 && python -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())" \
 && find /opt/venv/lib -type d -name tests -path '*/site-packages/*' -prune -exec rm -rf {} + \
 && find /opt/venv/lib -path '*/site-packages/*' \( -name '*.h' -o -name '*.pyx' -o -name '*.pxd' \) -delete \
 && find /opt/venv/lib -type d -path '*/site-packages/nvidia/*' -name lib | sort > /opt/venv/nvidia-libs.conf \
 && cat /opt/venv/nvidia-libs.conf

# ---------------------------------------------------------------------------------------------------
# Retraining in a container, against a mounted repository:
#   podman run --rm -v "$PWD/models:/models:Z" -v /path/to/mnist:/data:ro mnist-serving:train \
#       python -m training train --data /data --repository /models
FROM builder AS train
RUN python deploy/requirements.py train > requirements-train.txt \
 && cat requirements-train.txt \
 && /usr/local/bin/python -m pip --python /opt/venv/bin/python install --no-cache-dir --progress-bar off -c constraints.txt -r requirements-train.txt
WORKDIR /app
COPY service/ service/
COPY training/ training/
COPY pyproject.toml constraints.txt ./
ENV PYTHONUNBUFFERED=1 MODEL_REPOSITORY=/models MPLCONFIGDIR=/tmp/matplotlib HOME=/tmp
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init --home-dir /app --shell /usr/sbin/nologin app
USER 10001:10001
VOLUME ["/models"]
CMD ["python", "-m", "training", "--help"]

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed, unprivileged UID/GID (Kubernetes runAsNonRoot needs a numeric USER). The code and models
# stay owned by root, read-only for the service.
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init --home-dir /app --shell /usr/sbin/nologin app

# The feedback store's mount point (compose.yaml, deploy/): owned by the service's user, so a fresh named
# volume mounted there (docker and podman copy the folder's owner onto it) is writable. Empty and unused
# unless FEEDBACK_DIR points at it.
RUN mkdir -p /var/lib/mnist-serving/feedback && chown 10001:10001 /var/lib/mnist-serving/feedback

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY service/ service/
COPY models/ models/
# Byte-compile now: the root filesystem may be read-only at run time. In a GPU image, register the
# CUDA/cuDNN libraries of the nvidia-* wheels with the dynamic linker (the list is empty for CPU).
RUN python -m compileall -q service \
 && cp /opt/venv/nvidia-libs.conf /etc/ld.so.conf.d/zz-venv-nvidia.conf \
 && ldconfig

# Everything is configured by environment variables (service/config.py); these are the image defaults.
# RUNTIME_DIR (the workers' shared scratch: Prometheus multiprocess metrics, gunicorn.conf.py points
# PROMETHEUS_MULTIPROC_DIR at $RUNTIME_DIR/metrics) is under /tmp, so that `--read-only --tmpfs /tmp`
# (Kubernetes: readOnlyRootFilesystem + an emptyDir on /tmp) is all the service needs to write.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_REPOSITORY=/app/models \
    DEFAULT_MODEL=mnist \
    POLL_INTERVAL_S=2 \
    ORT_PROVIDERS=auto \
    LOG_LEVEL=INFO \
    RUNTIME_DIR=/tmp/mnist-serving

USER 10001:10001
# 8000: HTTP (REST, metrics, page). 8081: the Open Inference Protocol over gRPC, served when GRPC_PORT=8081
# (compose.yaml and the manifests set it; off by default, so containers on a shared host network do not collide).
EXPOSE 8000 8081
# The real python:3.11-slim has no curl: ask the V2 readiness route with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('PORT', '8000'), timeout=2)"]
# gunicorn is PID 1 (exec form, no shell): SIGTERM reaches its master, which stops accepting and lets
# the workers finish the requests in flight (graceful_timeout in service/gunicorn.conf.py).
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "service/gunicorn.conf.py"]

# Last, so that a new revision or build date does not invalidate the layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG ORT_PACKAGE=onnxruntime
LABEL org.opencontainers.image.title="mnist-serving" \
      org.opencontainers.image.description="MNIST / Fashion-MNIST ONNX models served by Flask + gunicorn + onnxruntime (simple image API, KServe V2, TF Serving REST)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/mnist-serving" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim" \
      io.mnist-serving.onnxruntime="${ORT_PACKAGE}"
