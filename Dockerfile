# Minimal image until the service lands (see README): the model CLI on CPU.
# The serving image (CUDA runtime base, onnxruntime-gpu, no torch, non-root, HEALTHCHECK) comes with the service.
FROM python:3.11-slim AS runtime

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

# Dependencies first for layer caching; torch 2.13.0 CPU wheel from the PyTorch CPU index.
COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY service ./service
COPY s2d ./s2d
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu '.[train]'

RUN useradd --create-home --uid 10001 s2d
USER s2d

ENTRYPOINT ["s2d"]
CMD ["model", "run"]
