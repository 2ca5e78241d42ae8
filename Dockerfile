# One image for both programs: the service (the default command) and the training CLI.
# Build: docker compose build (or docker build -t image-classifier .)

# Stage 1: the Python dependencies, in a virtual environment that is copied whole into
# the final stage, so the result does not depend on where the base image keeps its packages.
FROM python:3.11-slim-bookworm AS dependencies

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# Wheels only, so nothing is compiled and no compiler is ever needed. requirements.txt
# picks tensorflow-cpu on amd64 and tensorflow (a CPU build there) on arm64.
# Then out go what only compiling or testing needs: TensorFlow's C++ headers (about
# 290 MB, for custom ops), libclang (60 MB, a C compiler front end that TensorFlow
# declares but never imports), the packages' own test suites, and pip itself.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        -r /tmp/requirements.txt \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet libclang \
    && rm -rf /opt/venv/lib/python3*/site-packages/tensorflow/include \
    && find /opt/venv -depth -type d -name tests -exec rm -rf {} + \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet pip

# Stage 2: the runtime image, with no build tools and no pip cache.
FROM python:3.11-slim-bookworm

# HOME is /tmp so that Keras, Matplotlib and gunicorn's control socket find a writable
# home whatever user id the container runs as (compose may set one to match the host).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    MODEL_DIR=/app/models

# Uid 1000 is the first user on most Linux machines, so the versions the trainer
# publishes into a bind-mounted models folder belong to the person who ran it.
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app

COPY --from=dependencies /opt/venv /opt/venv

# The source comes last, so a code change rebuilds only these small layers. It stays
# owned by root: the service can read its code but not change it.
WORKDIR /app
COPY service/ service/
COPY model_training/ model_training/
RUN install -d -o app -g app /app/models

USER app
EXPOSE 8000

# The slim image has no curl; Python's standard library does the same job.
# /health answers 200 only once a model is loaded and warmed, 503 before.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# The same gunicorn settings the tests use; HOST, PORT, WORKERS and the rest come from the environment.
CMD ["gunicorn", "-c", "service/gunicorn_conf.py"]

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
