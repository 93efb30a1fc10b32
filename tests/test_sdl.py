"""SDL: the soft target on a hand-computed example, the weight schedule, and both memory modes."""

from __future__ import annotations

import pytest
import torch

from s2d.training.sdl import EmotionAnchors, SDLConfig, sdl_loss, sdl_weight


def anchors_with(queue, probe, mode="fixed", top_k=1):
    size = queue.shape[1]
    anchors = EmotionAnchors(queue.shape[0], queue.shape[2], SDLConfig(mode=mode, size=size, top_k=top_k))
    anchors.queue.copy_(queue)
    anchors.probe.copy_(probe)
    anchors.filled.fill_(size)
    return anchors


def test_soft_target_matches_a_hand_computed_example():
    # 2 classes, 2 anchors each, 2-D features. The sample f = (1, 0).
    queue = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [-1.0, 0.0]]])
    probe = torch.tensor([[[0.9, 0.1], [0.6, 0.4]], [[0.3, 0.7], [0.2, 0.8]]])
    # cosine similarities: class 0 -> (1, 0), class 1 -> (1/sqrt2, -1). Top-1 per class: 1 (anchor 0,0), 0.7071 (1,0)
    s0, s1 = 1.0, 2**-0.5
    expected = (s0 * probe[0, 0] + s1 * probe[1, 0]) / (s0 + s1)
    target = anchors_with(queue, probe, top_k=1).soft_targets(torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(target[0], expected)
    # top-2 uses all four anchors: (1*p00 + 0*p01 + s1*p10 + (-1)*p11) / (1 + 0 + s1 - 1)
    expected2 = (probe[0, 0] + s1 * probe[1, 0] - probe[1, 1]) / s1
    target2 = anchors_with(queue, probe, top_k=2).soft_targets(torch.tensor([[2.0, 0.0]]))  # scale-invariant
    torch.testing.assert_close(target2[0], expected2)


def test_weight_schedule_is_the_released_one():
    assert [sdl_weight(e) for e in (0, 29, 30, 49, 50, 59, 60, 79, 80, 99)] == [
        0.0, 0.0, 0.01, 0.01, 0.1, 0.1, 0.5, 0.5, 1.0, 1.0,
    ]  # fmt: skip
    logits, target = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    assert sdl_loss(logits, target, 10).item() == 0.0
    assert sdl_loss(logits, target, 85).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_fixed_mode_fills_memory_with_real_features_before_using_it():
    anchors = EmotionAnchors(2, 3, SDLConfig(mode="fixed", size=2, top_k=1))
    assert not anchors.ready and not anchors.active(85)  # empty memory is never used
    feats = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    anchors.update(feats, torch.zeros(3, 2), torch.tensor([0, 0, 1]))
    assert not anchors.ready  # class 1 has one of two entries
    anchors.update(torch.tensor([[5.0, 5, 5]]), torch.tensor([[0.0, 10.0]]), torch.tensor([1]))
    assert anchors.ready and anchors.active(85)
    torch.testing.assert_close(anchors.queue[0], feats[:2])  # FIFO in batch order
    torch.testing.assert_close(anchors.queue[1], torch.tensor([[0, 0, 1.0], [5.0, 5, 5]]))
    torch.testing.assert_close(anchors.probe[1, 1], torch.tensor([0.0, 10.0]).softmax(-1))
    anchors.update(torch.tensor([[7.0, 7, 7]]), torch.zeros(1, 2), torch.tensor([1]))
    torch.testing.assert_close(anchors.queue[1], torch.tensor([[5.0, 5, 5], [7.0, 7, 7]]))  # oldest dropped
    assert all(anchors.updates_in(e) for e in range(21, 100)) and not anchors.updates_in(20)


def test_faithful_mode_reproduces_the_released_defects():
    anchors = EmotionAnchors(7, 8, SDLConfig(mode="faithful", size=16, update_freq=100))
    assert anchors.queue.min() >= 0 and anchors.queue.std() > 0.1  # starts as uniform noise, not real features
    assert anchors.ready and anchors.active(30)  # used although it never saw a feature
    assert not any(anchors.updates_in(e) for e in range(100))  # 100 epochs, frequency 100: never refreshed
    assert [e for e in range(100) if EmotionAnchors(7, 8, SDLConfig(mode="faithful")).updates_in(e)] == [40, 80]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="mode"):
        SDLConfig(mode="magic")
    with pytest.raises(ValueError, match="top_k"):
        SDLConfig(size=2, top_k=3)
