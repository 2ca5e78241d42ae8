# Two images from one Dockerfile, one per program:
#   api      the service: LiteRT, no TensorFlow, no Keras (docker build --target api .)
#   trainer  the training CLI, with TensorFlow (docker build --target trainer .)
# docker compose builds each service's own target.

# Python packages go into a virtual environment that is copied whole into the final stage,
# so the result does not depend on where the base image keeps its packages. Wheels only:
# nothing is compiled, so no compiler is ever needed. Every package, dependencies
# included, comes from a lock file with its hashes (--require-hashes): a wheel that differs
# from the one locked is refused (scripts/lock-requirements.sh). The environment is made
# without pip, and the base image's pip installs into it, so it holds the locked packages
# and nothing else: no pip, and no setuptools (with its start-up .pth file) unless locked.
FROM python:3.11-slim-bookworm AS api-packages
RUN python -m venv --without-pip /opt/venv
COPY requirements-serving.lock /tmp/
# Out go the packages' own test suites, and the parts of LiteRT a CPU interpreter never
# loads: its WebGPU accelerator (18 MB), vendor NPU compiler plugins and command-line tools.
RUN python -m pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --only-binary=:all: --require-hashes -r /tmp/requirements-serving.lock \
    && cd /opt/venv/lib/python3*/site-packages \
    && rm -rf ai_edge_litert/libLiteRtWebGpuAccelerator.so ai_edge_litert/vendors ai_edge_litert/tools \
    && find /opt/venv -depth -type d -name tests -exec rm -rf {} +

FROM python:3.11-slim-bookworm AS trainer-packages
RUN python -m venv --without-pip /opt/venv
COPY requirements.lock /tmp/
# The lock (from requirements.txt) picks tensorflow-cpu on amd64 and tensorflow (a CPU
# build there) on arm64.
# Out go what only compiling needs: TensorFlow's C++ headers (about 290 MB, for custom
# ops) and libclang (60 MB, a C compiler front end that TensorFlow declares but never imports).
RUN python -m pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --only-binary=:all: --require-hashes -r /tmp/requirements.lock \
    && python -m pip --python /opt/venv/bin/python uninstall --yes --quiet libclang \
    && rm -rf /opt/venv/lib/python3*/site-packages/tensorflow/include \
    && find /opt/venv -depth -type d -name tests -exec rm -rf {} +

# The gRPC interface, compiled from service/grpc/protos/ by grpcio-tools' protoc here,
# so that neither ends up in the api image: only the compiled descriptors do.
FROM python:3.11-slim-bookworm AS grpc-code
RUN python -m venv --without-pip /opt/codegen
COPY requirements-codegen.lock /tmp/
RUN python -m pip --python /opt/codegen/bin/python install --no-cache-dir \
        --disable-pip-version-check --only-binary=:all: --require-hashes \
        -r /tmp/requirements-codegen.lock
WORKDIR /src
COPY service/__init__.py service/
COPY service/grpc/ service/grpc/
RUN /opt/codegen/bin/python -m service.grpc.codegen

# What both images share: no build tools, no pip cache, one unprivileged user.
FROM python:3.11-slim-bookworm AS runtime
# HOME is /tmp so that Keras, Matplotlib and gunicorn's control socket find a writable
# home whatever user id the container runs as (compose may set one to match the host).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_DIR=/app/models
# Uid 1000 is the first user on most Linux machines, so the versions the trainer
# publishes into a bind-mounted models folder belong to the person who ran it. The
# prediction store's folder: compose's named volume copies its mode on first use, so
# whichever APP_UID the api runs as can write there (sticky, like /tmp).
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
    && install -d -o app -g app /app/models \
    && install -d -m 1777 /app/store
WORKDIR /app

FROM runtime AS trainer
ENV TF_CPP_MIN_LOG_LEVEL=1
COPY --from=trainer-packages /opt/venv /opt/venv
# Training decodes images and checks the converted model with the service's own code.
COPY service/ service/
COPY model_training/ model_training/
USER app
ENTRYPOINT ["python", "-m", "model_training.train"]
CMD ["--help"]

# The api comes last, so a plain `docker build .` builds it.
FROM runtime AS api
COPY --from=api-packages /opt/venv /opt/venv
# The source comes last, so a code change rebuilds only this small layer. It stays
# owned by root: the service can read its code but not change it.
COPY service/ service/
COPY --from=grpc-code /src/service/grpc/generated/ service/grpc/generated/
USER app
# HTTP (gunicorn) and the Open Inference Protocol over gRPC (GRPC_PORT), Triton's ports.
EXPOSE 8000 8001
# The slim image has no curl; Python's standard library does the same job.
# /health answers 200 only once a model is loaded and warmed, 503 before.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
# The same gunicorn settings the tests use; HOST, PORT, WORKERS and the rest come from the
# environment. Every worker serves gRPC too, from a thread beside its HTTP threads
# (service/grpc/thread.py), so one command serves both faces and SIGTERM drains both.
CMD ["gunicorn", "-c", "service/process/gunicorn_conf.py"]

# The shipped models as an image of their own (target `model`), for Kubernetes pods that
# run with no models volume: an init container copies /models into the pod's emptyDir
# (deploy/kubernetes/components/shipped-model). Built on the same base as the service, so a
# node that already holds the api image pulls only the small models layer.
#     docker build --target model -t image-classifier-model:<version> .
FROM python:3.11-slim-bookworm AS model
COPY deploy/copy-models.sh /usr/local/bin/copy-models
COPY models/ /models/
USER 1000:1000
CMD ["copy-models", "/models", "/app/models"]
