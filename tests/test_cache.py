import hashlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekd.augment import Augmentation
from edgekd.distill.cache import TeacherOutputCache


def test_augmentation_replays_the_same_view_and_draws_differ():
    aug = Augmentation(draws=3, max_shift=2, seed=7, padding="zeros")
    x = torch.randn(16, 3, 10, 10)
    idx = torch.arange(100, 116)
    first, again = aug.apply(x, idx, 1), aug.apply(x, idx, 1)
    assert torch.equal(first, again)
    assert not torch.equal(aug.apply(x, idx, 0), first)
    dx, dy, flip = aug.params(idx, 1)
    assert (np.abs(dx) <= 2).all() and (np.abs(dy) <= 2).all() and flip.any() and not flip.all()
    # the same sample at the same draw gives the same view wherever it sits in a batch
    assert torch.equal(aug.apply(x[5:6], idx[5:6], 1), first[5:6])
    # an independent computation of one view: shift by (dx, dy) with zero fill, then mirror
    i = 3
    expected = torch.zeros(3, 10, 10)
    src = x[i]
    for r in range(10):
        for c in range(10):
            rr, cc = r + dy[i], c + dx[i]
            if 0 <= rr < 10 and 0 <= cc < 10:
                expected[:, r, c] = src[:, rr, cc]
    if flip[i]:
        expected = expected.flip(-1)
    assert torch.equal(first[i], expected)
    assert [aug.draw_for_epoch(e) for e in range(1, 6)] == [0, 1, 2, 0, 1]


def test_reflect_padding_mirrors_the_border_the_shift_uncovers():
    zeros, reflect = (
        Augmentation(draws=2, max_shift=3, seed=5, padding="zeros"),
        Augmentation(draws=2, max_shift=3, seed=5),  # reflect: the default
    )
    x = torch.randn(32, 3, 8, 8)
    idx = torch.arange(32)
    views = reflect.apply(x, idx, 1)
    dx, dy, flip = reflect.params(idx, 1)
    # the same draws as zero padding: only the fill differs
    for got, want in zip(zeros.params(idx, 1), (dx, dy, flip), strict=True):
        assert np.array_equal(got, want)

    def mirrored(k: int) -> int:  # numpy/torch "reflect": the edge pixel is not repeated
        return -k if k < 0 else 2 * 7 - k if k > 7 else k

    shifted = [i for i in range(32) if dx[i] or dy[i]]
    assert shifted
    for i in shifted:
        expected = torch.empty(3, 8, 8)
        for r in range(8):
            for c in range(8):
                expected[:, r, c] = x[i][:, mirrored(r + dy[i]), mirrored(c + dx[i])]
        assert torch.equal(views[i], expected.flip(-1) if flip[i] else expected)
    assert not torch.equal(views[shifted[0]], zeros.apply(x, idx, 1)[shifted[0]])
    # a zero-padded augmentation keeps the fingerprint it had before `padding` existed
    old = {"draws": 2, "max_shift": 3, "hflip": True, "seed": 5}
    assert zeros.fingerprint == hashlib.sha256(repr(sorted(old.items())).encode()).hexdigest()[:16]
    assert reflect.fingerprint != zeros.fingerprint
    with pytest.raises(ValueError, match="padding must be one of"):
        Augmentation(padding="edge")


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _teacher(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


def _open(root, teacher, aug, top_k=None):
    return TeacherOutputCache.open(root, teacher, "data-fp", aug, samples=40, classes=5, top_k=top_k)


def test_cached_logits_equal_a_live_teacher_on_the_same_views(tmp_path):
    data, teacher, aug = _Data(), _teacher(), Augmentation(draws=2, max_shift=1)
    cache = _open(tmp_path, teacher, aug)
    assert cache.fill(teacher, data, aug, batch_size=16) == 80 and cache.complete
    idx = torch.tensor([3, 17, 39, 0])
    for draw in (0, 1):
        live = teacher(aug.apply(data.x[idx], idx, draw)).detach()
        torch.testing.assert_close(cache.lookup(idx, draw), live, rtol=2e-3, atol=2e-3)
    # reopened by another run: nothing to compute, same values
    again = _open(tmp_path, teacher, aug)
    assert again.directory == cache.directory and again.fill(teacher, data, aug) == 0


def test_an_interrupted_fill_resumes_where_it_stopped(tmp_path):
    data, teacher, aug = _Data(), _teacher(), Augmentation(draws=2)

    class Interrupt:
        def task(self, description, total):
            class T:
                calls = 0

                def advance(self, steps=1, **_):
                    T.calls += 1
                    if T.calls == 3:
                        raise KeyboardInterrupt

                def close(self):
                    pass

            return T()

        def stage(self, *a):
            pass

    with pytest.raises(KeyboardInterrupt):
        _open(tmp_path, teacher, aug).fill(teacher, data, aug, batch_size=8, observer=Interrupt())
    cache = _open(tmp_path, teacher, aug)
    done = int(cache.filled(torch.arange(40), 0).sum() + cache.filled(torch.arange(40), 1).sum())
    assert done == 24  # three batches of 8 were written before the interrupt
    with pytest.raises(KeyError, match="not in the cache"):
        cache.lookup(torch.arange(40), 1)
    assert cache.fill(teacher, data, aug, batch_size=8) == 80 - 24 and cache.complete


def test_the_key_changes_with_teacher_weights_data_and_augmentation(tmp_path):
    aug = Augmentation(draws=2)
    base = _open(tmp_path, _teacher(0), aug).directory
    assert _open(tmp_path, _teacher(1), aug).directory != base
    assert _open(tmp_path, _teacher(0), Augmentation(draws=2, max_shift=3)).directory != base
    other_data = TeacherOutputCache.open(tmp_path, _teacher(0), "other", aug, samples=40, classes=5)
    assert other_data.directory != base


def test_top_k_keeps_the_top_probabilities_and_the_total_mass(tmp_path):
    data, teacher, aug = _Data(), _teacher(), Augmentation(draws=1)
    cache = _open(tmp_path, teacher, aug, top_k=2)
    cache.fill(teacher, data, aug)
    idx = torch.arange(10)
    live = torch.softmax(teacher(aug.apply(data.x[idx], idx, 0)).detach(), 1)
    rebuilt = torch.softmax(cache.lookup(idx, 0), 1)
    top = live.topk(2, dim=1)
    torch.testing.assert_close(rebuilt.gather(1, top.indices), top.values, rtol=5e-3, atol=5e-3)
    torch.testing.assert_close(rebuilt.sum(1), torch.ones(10))
    rest = (1 - top.values.sum(1)) / 3  # the other 3 classes share what is left equally
    mask = torch.ones_like(live, dtype=torch.bool).scatter(1, top.indices, False)
    torch.testing.assert_close(rebuilt[mask].view(10, 3), rest[:, None].expand(10, 3), rtol=5e-3, atol=5e-3)
