"""Small pieces several test modules share."""

from contextlib import contextmanager

import torch
from torch.utils.data import TensorDataset


def subset(dataset: TensorDataset, n: int) -> TensorDataset:
    """The first `n` samples of a tensor dataset."""
    images, labels = dataset.tensors
    return TensorDataset(images[:n], labels[:n])


@contextmanager
def one_torch_thread():
    """Training a tiny net on 2 busy cores is ~30x faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_export_model(arch: str = "mobilenetv3_small_050", num_classes: int = 10, seed: int = 0):
    """A small timm model in eval mode with non-trivial BatchNorm statistics: timm's initial ones
    (and its zeroed residual BatchNorms) let converters fold whole branches away, so an export test
    on them would test less than it says."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=num_classes).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model


def digits_cnn() -> torch.nn.Module:
    """A small CNN for 32 px, 10-class images: three stride-2 convolutions with batch norm."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )  # fmt: skip


def trained_digits_cnn(digits) -> torch.nn.Module:
    """`digits_cnn` trained 5 epochs on the digits train split with Adam (~99 % test accuracy, a few
    seconds), seeded and on one thread so every test file that trains it gets the same weights."""
    from edgekd.data import stack

    torch.manual_seed(0)
    model = digits_cnn()
    images, labels = stack(digits.train)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    with one_torch_thread():
        for _ in range(5):
            for idx in torch.randperm(len(images)).split(32):
                loss = torch.nn.functional.cross_entropy(model(images[idx]), labels[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return model.eval()


# One conversion per (model, format, contract, options) for the whole session: converting the tiny
# timm student takes 7-70 s per format and precision on 2 cores, and a dozen test modules only
# inspect the same files. Callers must not modify what they get; a test that mutates copies it.
_SHARED_EXPORTS: dict = {}
SHARED_ARCH = "mobilenetv3_small_050"


def shared_tiny_model():
    """`tiny_export_model(SHARED_ARCH)`, built once; callers must not train or modify it."""
    if "model" not in _SHARED_EXPORTS:
        _SHARED_EXPORTS["model"] = tiny_export_model(SHARED_ARCH)
    return _SHARED_EXPORTS["model"]


def shared_export(tmp_path_factory, fmt: str, preprocessing, precision: str = "fp32", options=None):
    """`shared_tiny_model()` exported through `edgekd.export.export` with `make_contract`, once per
    session for each (format, precision, preprocessing, options), alone in its own directory (the
    session's base temp) so a test can list that directory. A calibrated precision (int8) calibrates
    on MIN_CALIBRATION_IMAGES digits training images drawn by `representative_images`."""
    from edgekd.artifact import FORMATS, make_contract
    from edgekd.export import MIN_CALIBRATION_IMAGES, export

    key = (fmt, precision, preprocessing, tuple(sorted((options or {}).items())))
    if key not in _SHARED_EXPORTS:
        contract = make_contract(SHARED_ARCH, fmt, preprocessing, precision)
        calibration = None
        if precision in FORMATS.get(fmt).calibrated:
            from edgekd.data import load_digits_splits, representative_images

            digits = load_digits_splits(preprocessing.input_size)
            calibration = representative_images(digits.train, MIN_CALIBRATION_IMAGES)
        out = tmp_path_factory.mktemp(f"shared-{fmt}-{precision}")
        _SHARED_EXPORTS[key] = export(
            shared_tiny_model(), fmt, out, contract=contract, calibration=calibration, options=options
        )
    return _SHARED_EXPORTS[key]


def shared_trained_digits_cnn(digits) -> torch.nn.Module:
    """`trained_digits_cnn(digits)`, trained once per session; callers must not train or modify it."""
    if "digits_cnn" not in _SHARED_EXPORTS:
        _SHARED_EXPORTS["digits_cnn"] = trained_digits_cnn(digits)
    return _SHARED_EXPORTS["digits_cnn"]


def shared_digits_cnn_int8(tmp_path_factory, digits):
    """`shared_trained_digits_cnn` as int8 .tflite (post-training quantization), once per session,
    calibrated on MIN_CALIBRATION_IMAGES training images in a seeded order: never on the test split
    the tests score on."""
    from edgekd.artifact import make_contract
    from edgekd.data import stack
    from edgekd.export import MIN_CALIBRATION_IMAGES, export

    if "digits_cnn_int8" not in _SHARED_EXPORTS:
        images, _ = stack(digits.train)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
        contract = make_contract("digits_cnn", "tflite", digits.preprocessing, "int8")
        with one_torch_thread():
            _SHARED_EXPORTS["digits_cnn_int8"] = export(
                shared_trained_digits_cnn(digits),
                "tflite",
                tmp_path_factory.mktemp("shared-digits-cnn-int8"),
                contract=contract,
                stem="ptq",
                calibration=images[order[:MIN_CALIBRATION_IMAGES]],
            )
    return _SHARED_EXPORTS["digits_cnn_int8"]


def on_two_ranks(work, folder) -> None:
    """`work(world)` in two forked processes joined in a gloo process group (an edgekd.distill.
    distributed World each), as torchrun's ranks are but in a second; fails the test if either rank
    fails or is still waiting after a minute (a collective only one rank reached)."""
    import multiprocessing

    def rank_main(rank: int) -> None:
        import torch.distributed as dist

        from edgekd.distill.distributed import World

        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
        work(World(rank, 2))
        dist.barrier()
        dist.destroy_process_group()

    ranks = [multiprocessing.get_context("fork").Process(target=rank_main, args=(r,)) for r in (0, 1)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    assert [p.exitcode for p in ranks] == [0, 0], "a rank failed, or waited a minute in a collective"
