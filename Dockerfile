# S2D service images. No torch in either runtime image (the service never imports it).
#
#   docker build --target gpu -t s2d:gpu .   CUDA 12 runtime + cuDNN 9, onnxruntime-gpu, NVML metrics (the default)
#   docker build --target cpu -t s2d:cpu .   Python slim, onnxruntime + openvino (S2D_ENGINE=auto picks per CPU)
#
# Behind a firewall (no registry, no PyPI): docker/build_offline.sh makes a Debian base image with debootstrap, puts
# wheels in docker/wheels/cpu/ and builds the cpu target on that base (PYTHON_IMAGE); docker/README.md explains it.
#
# Models: mount a model store at /models (compose.yaml does), or bake official weights in when the build has network:
#   docker build --target gpu --build-arg S2D_WEIGHTS="s2d-dfew" -t s2d:gpu .
# The build then needs weights.lock.json at the root of the build context pinning every release it names (`s2d
# weights pull` writes one next to the model store); S2D_WEIGHTS_TRUST_ON_FIRST_USE=1 trusts the first download
# instead. `s2d weights pull` needs torch to convert a checkpoint to ONNX: it runs in the `weights` stage, and only the
# model store it writes is copied into the runtime images.

# Any Debian-like image with python3 and its venv module: the official python image, or a local Debian base.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---- weights: official checkpoints -> ONNX model store (empty unless S2D_WEIGHTS names releases) ------------------
FROM ${PYTHON_IMAGE} AS weights
ARG S2D_WEIGHTS=""
ARG S2D_WEIGHTS_VARIANTS=fp32,fp16
ARG S2D_WEIGHTS_TRUST_ON_FIRST_USE=0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/weights PATH=/opt/weights/bin:$PATH
WORKDIR /src
# The lock is optional in the context (the [n] glob matches nothing without it), needed to bake weights in: checked
# here, before torch is installed, and again by `--locked` below for every release named.
COPY pyproject.toml docker/requirements.py weights.lock.jso[n] ./
RUN mkdir -p /models \
 && if [ -n "$S2D_WEIGHTS" ]; then \
      if [ "$S2D_WEIGHTS_TRUST_ON_FIRST_USE" != 1 ] && [ ! -f weights.lock.json ]; then \
        echo "S2D_WEIGHTS: no weights.lock.json in the build context to pin them (docker/README.md, 'Baked in');" \
          "S2D_WEIGHTS_TRUST_ON_FIRST_USE=1 trusts the first download instead" >&2; \
        exit 1; \
      fi \
      && python3 -m venv /opt/weights \
      && python3 requirements.py train > requirements.txt \
      && pip install --extra-index-url "$TORCH_INDEX_URL" -r requirements.txt; \
    fi
COPY README.md ./
COPY s2d ./s2d
COPY models ./models
COPY training ./training
COPY service ./service
# --locked: a release the lock does not pin is refused before any download, so a baked image holds exactly the
# weights the lock names. Trust on first use only when asked for; the lock it writes goes into /models either way.
RUN if [ -n "$S2D_WEIGHTS" ]; then \
      pip install --no-deps . \
      && pin="--locked" && if [ "$S2D_WEIGHTS_TRUST_ON_FIRST_USE" = 1 ]; then pin="--trust-unpinned"; fi \
      && for name in $S2D_WEIGHTS; do \
           s2d weights pull "$name" --store /models --lock /src/weights.lock.json \
             --variants "$S2D_WEIGHTS_VARIANTS" $pin || exit 1; \
         done \
      && cp /src/weights.lock.json /models/ \
      && s2d models list --store /models; \
    fi

# ---- cpu-build: the cpu image's virtual environment (from docker/wheels/cpu/ alone when it holds wheels) ----------
# [triton] too: the same image serves with its own ONNX Runtime or in front of a Triton server (S2D_ENGINE). Every
# package at its version in docker/constraints-cpu.txt (resolved for the default base image's Python).
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Dependencies before the source: this layer is rebuilt only when pyproject.toml (or the wheels) change. The wheels
# stay in this stage; only the environment they make is copied into the image.
COPY pyproject.toml docker/requirements.py docker/constraints-cpu.txt docker/wheels/cp[u] /tmp/build/
RUN python3 -m venv /opt/s2d \
 && python3 /tmp/build/requirements.py --build-system --wheels=/tmp/build --constraints=/tmp/build/constraints-cpu.txt \
      cpu triton > /tmp/build/requirements.txt \
 && /opt/s2d/bin/pip install -r /tmp/build/requirements.txt

# ---- cpu: the service on CPU (ONNX Runtime's CPU wheel and OpenVINO) ----------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/s2d PATH=/opt/s2d/bin:$PATH
COPY --from=cpu-build /opt/s2d /opt/s2d
# The package s2d in place (its data files are found there). models/ and training/ come as source because the
# installed package maps them (s2d.models, s2d.training), but torch is not installed and the service never imports
# them (the layering contracts in pyproject.toml, tests/test_layers.py). setuptools is in the environment, so the
# install needs no index (--no-build-isolation).
WORKDIR /app
COPY pyproject.toml README.md ./
COPY s2d ./s2d
COPY models ./models
COPY training ./training
COPY service ./service
RUN pip install --no-deps --no-build-isolation -e . \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/s2d s2d
COPY --from=weights --chown=10001:10001 /models /models
ENV S2D_HOST=0.0.0.0 S2D_PORT=8000 S2D_MODEL_STORE=/models S2D_PROVIDERS=cpu S2D_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8000
# Ready = every model loaded and warmed up; a ViT-B warm-up at every batch size takes a while on CPU.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('S2D_PORT', '8000'), timeout=4)" || exit 1
ENTRYPOINT ["s2d"]
CMD ["serve"]

# ---- gpu-build: a virtual environment with onnxruntime-gpu, built on the runtime's own base -----------------------
FROM ${CUDA_IMAGE} AS gpu-build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/s2d
COPY pyproject.toml docker/requirements.py docker/wheels/gp[u] /tmp/build/
RUN /opt/s2d/bin/python /tmp/build/requirements.py --build-system --wheels=/tmp/build gpu triton > /tmp/build/requirements.txt \
 && /opt/s2d/bin/pip install -r /tmp/build/requirements.txt

# ---- gpu: the service on an NVIDIA GPU (CUDA execution provider, CPU as the named fallback) -------------------------
FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/s2d PATH=/opt/s2d/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/s2d s2d
COPY --from=gpu-build /opt/s2d /opt/s2d
WORKDIR /app
COPY pyproject.toml README.md ./
COPY s2d ./s2d
COPY models ./models
COPY training ./training
COPY service ./service
# setuptools for the in-place install is in the environment (from gpu-build): no index needed.
RUN pip install --no-deps --no-build-isolation -e .
COPY --from=weights --chown=10001:10001 /models /models
ENV S2D_HOST=0.0.0.0 S2D_PORT=8000 S2D_MODEL_STORE=/models S2D_PROVIDERS=cuda,cpu S2D_LOG_FORMAT=json \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('S2D_PORT', '8000'), timeout=4)" || exit 1
ENTRYPOINT ["s2d"]
CMD ["serve"]
