"""The batcher and the ONNX Runtime engine in-process, on the real exported test model (no mocks)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from s2d.service.batcher import Batcher
from s2d.service.errors import BusyError, DeadlineError
from s2d.service.inference import OnnxClassifier, ProviderUnavailableError, check_providers
from s2d.store import ModelStore
from tests.service_helpers import TEST_MODEL, build_store


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> OnnxClassifier:
    store = build_store(str(tmp_path_factory.getbasetemp() / "service-store"))
    return OnnxClassifier(ModelStore(Path(store)).get(TEST_MODEL), "fp32", ["CPUExecutionProvider"])


def clips(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 2, 224, 224, 3), dtype=np.uint8)  # [N, T, H, W, 3]


def run(coro):
    return asyncio.run(coro)


def test_engine_checks_shapes_and_providers(classifier):
    out = classifier.run(clips(2))
    assert out.probs.shape == (2, 4) and np.allclose(out.probs.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="expected uint8"):
        classifier.run(clips(1).astype(np.float32))
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider"):
        check_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_clips_from_separate_submits_share_a_batch_and_match_batch_one(classifier):
    async def main():
        batcher = Batcher(classifier, max_batch=4, max_wait_ms=300, queue_size=16)
        batcher.start()
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(batcher.submit(clips(1, seed=i)) for i in range(5)))
            return results, time.monotonic() - started
        finally:
            await batcher.stop()

    results, _ = run(main())
    sizes = sorted({size for r in results for size, _ in r.batches.values()})
    assert sizes == [1, 4]  # 4 clips together, then the fifth alone once max_wait ran out
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.probs[0], classifier.run(clips(1, seed=i)).probs[0], atol=1e-5)


class GatedClassifier:
    """The real classifier behind a gate: `run` waits until the test opens it, so the worker is busy for as long as
    the test needs, on a machine of any speed."""

    def __init__(self, classifier: OnnxClassifier):
        self.classifier = classifier
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self.classifier, name)

    def run(self, frames, deadline=None):
        self.entered.set()
        self.gate.wait(30)
        return self.classifier.run(frames, deadline)


def test_full_queue_refuses_and_cancelled_clips_are_dropped(classifier):
    gated = GatedClassifier(classifier)

    async def main():
        batcher = Batcher(gated, max_batch=1, max_wait_ms=0, queue_size=2)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(clips(1)))  # taken by the worker, held at the gate
            await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, 30)
            waiting = asyncio.ensure_future(batcher.submit(clips(2, seed=1)))  # fills the queue
            await asyncio.sleep(0)
            with pytest.raises(BusyError) as busy:
                await batcher.submit(clips(1, seed=2))
            assert busy.value.retry_after >= 1 and busy.value.headers["Retry-After"] == str(busy.value.retry_after)
            waiting.cancel()  # its client went away: both clips leave the queue
            await asyncio.sleep(0)
            assert batcher.pending == 0
            gated.gate.set()
            late = await batcher.submit(clips(1, seed=3), wait_for_space=True)
            with pytest.raises(DeadlineError):
                await batcher.submit(clips(1, seed=4), deadline=time.monotonic() - 1)
            return await first, late
        finally:
            await batcher.stop()

    first, late = run(main())
    assert first.probs.shape == (1, 4) and late.probs.shape == (1, 4)
