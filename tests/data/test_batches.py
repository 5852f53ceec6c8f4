"""labkit.data.batches: stratified splits, in-process batches, normalisation and augmentation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.data import IMAGENET_MEAN, IMAGENET_STD, Batches, random_crop_flip, stratified_split


def test_stratified_split_is_deterministic_and_stratified():
    labels = np.array([0] * 70 + [1] * 30)
    a_train, a_test = stratified_split(labels, 0.3, seed=1)
    b_train, b_test = stratified_split(labels, 0.3, seed=1)
    assert np.array_equal(a_test, b_test) and len(a_test) == 30
    assert np.bincount(labels[a_test]).tolist() == [21, 9]
    assert not set(a_train) & set(a_test)
    assert not np.array_equal(stratified_split(labels, 0.3, seed=2)[1], a_test)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        stratified_split(labels, 1.5)


def test_batches_orders_and_augmentation():
    images = torch.arange(10 * 3 * 8 * 8, dtype=torch.int64).remainder(256).to(torch.uint8).view(10, 3, 8, 8)
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    seq = Batches(images, labels, 4, order="sequential", mean=(0, 0, 0), std=(1 / 255,) * 3)
    batches = list(seq)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.allclose(batches[0][0], images[:4].float())  # mean 0, std 1/255: raw values back
    sorted_labels = torch.cat([y for _, y in Batches(images, labels, 3, order="class_sorted")])
    assert sorted_labels.tolist() == [0] * 5 + [1] * 5
    shuffled = Batches(images, labels, 10, order="shuffle", seed=3)
    first = next(iter(shuffled))[1]
    again = next(iter(Batches(images, labels, 10, order="shuffle", seed=3)))[1]
    assert torch.equal(first, again)
    shuffled.epoch = 1
    assert not torch.equal(next(iter(shuffled))[0], next(iter(Batches(images, labels, 10, seed=3)))[0])
    sampler_order = [9, 8, 7, 0]
    got = torch.cat([y for _, y in Batches(images, labels, 2, order=sampler_order)])
    assert got.tolist() == labels[sampler_order].tolist()
    aug = next(iter(Batches(images, labels, 10, order="sequential", augment=True, image_size=6)))[0]
    assert aug.shape == (10, 3, 6, 6) and aug.dtype == torch.float32
    with pytest.raises(ValueError, match="allowed: shuffle, sequential, class_sorted"):
        Batches(images, labels, 2, order="random")


def test_batches_normalise_with_imagenet_statistics_exactly():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    images = torch.randint(0, 256, (6, 3, 5, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images[0], images[1] = 0, 255  # both ends of the range
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    expected = (images.double() / 255 - mean) / std
    for channels_last in (False, True):
        x, _ = next(iter(Batches(images, torch.zeros(6, dtype=torch.long), 6, order="sequential",
                                 channels_last=channels_last)))
        assert x.dtype == torch.float32
        error = (x.double() - expected).abs().max().item()
        assert error < 1e-6, error  # float32 rounding only


def _window_of(out: torch.Tensor, padded: torch.Tensor, h: int, w: int):
    """(dy, dx, flipped) of the window of ``padded`` equal to ``out``, or None."""
    for dy in range(padded.shape[-2] - h + 1):
        for dx in range(padded.shape[-1] - w + 1):
            window = padded[:, dy:dy + h, dx:dx + w]
            for flipped in (False, True):
                if torch.equal(out, window.flip(-1) if flipped else window):
                    return dy, dx, flipped
    return None


@pytest.mark.parametrize("dtype, size", [(torch.float32, 16), (torch.uint8, 8)])
def test_random_crop_flip_gives_windows_of_the_padded_input(dtype, size):
    """A position-encoded batch (every pixel holds its image, channel, row and column): each output
    must be exactly one window of the reflection-padded input, mirrored or not. The batched gather
    (CUDA's path) runs here on the CPU and must give the same windows as the per-image slices."""
    n = 32 if dtype == torch.float32 else 3
    c, rows, cols = torch.meshgrid(torch.arange(3), torch.arange(size), torch.arange(size), indexing="ij")
    position = c * size * size + rows * size + cols  # < 256 for 8 x 8: fits uint8
    x = torch.stack([position + (1000 * i if dtype == torch.float32 else 0) for i in range(n)]).to(dtype)
    pad = max(1, round(size * 0.125))
    padded = F.pad(x.double(), (pad, pad, pad, pad), mode="reflect")  # torch's own, not labkit's
    sliced = random_crop_flip(x, torch.Generator().manual_seed(0), batched=False)
    gathered = random_crop_flip(x, torch.Generator().manual_seed(0), batched=True)
    assert sliced.dtype == gathered.dtype == dtype and sliced.shape == x.shape
    assert torch.equal(sliced, gathered)
    found = [_window_of(sliced[i].double(), padded[i], size, size) for i in range(n)]
    assert None not in found
    if dtype == torch.float32:  # the draws really vary: offsets across the padding, both flips
        assert len({(dy, dx) for dy, dx, _ in found}) > 5 and {f for *_, f in found} == {False, True}
        assert {dy for dy, _, _ in found} >= {0, 2 * pad}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_crop_flip_on_cuda_matches_the_cpu():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    cpu = random_crop_flip(x, torch.Generator().manual_seed(1))
    gpu = random_crop_flip(x.cuda(), torch.Generator().manual_seed(1))
    assert torch.equal(gpu.cpu(), cpu)


def test_split_errors_name_the_parameter_to_change():
    from labkit.params import ParameterError
    train, held = stratified_split([0, 0, 1, 1], 0.0)
    assert train.tolist() == [0, 1, 2, 3] and held.tolist() == []
    with pytest.raises(ParameterError, match=r"val_fraction=0.2: too few images .* class 1 has 1.* val_fraction=0"):
        stratified_split([0, 0, 0, 1], 0.2, param="val_fraction")
    with pytest.raises(ParameterError, match=r"test_fraction=1.0 is not allowed"):
        stratified_split([0, 0, 1, 1], 1.0)
