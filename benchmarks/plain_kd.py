"""A hand-written KD loop, no edgekd: SGD-Nesterov, one-cycle, fresh reflect-crop + flip views
every epoch, the teacher live on the same batch. Alone it fits digits; benchmarks/recipe.py imports it."""

import time

import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits


def augment(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """A fresh random crop of the reflect-padded batch and a random horizontal flip per image."""
    padded, (h, w) = F.pad(x, (pad,) * 4, mode="reflect"), x.shape[-2:]
    dy, dx = torch.randint(0, 2 * pad + 1, (2, len(x))).tolist()
    views = torch.stack([p[:, i : i + h, j : j + w] for p, i, j in zip(padded, dy, dx, strict=True)])
    return torch.where((torch.rand(len(x)) < 0.5)[:, None, None, None], views.flip(-1), views)


def fit(model, x, y, epochs=8, lr=0.05, teacher=None, t=4.0, alpha=0.9, batch=128, seed=0):
    """Train `model` on (x, y); with `teacher`, (1 - α)·CE + α·T²·KL. Returns it and seconds per epoch."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * -(-len(x) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(x)).split(batch):
            logits = model(xb := augment(x[idx]))
            loss = F.cross_entropy(logits, y[idx])
            if teacher is not None:
                with torch.no_grad():
                    soft = F.log_softmax(teacher.eval()(xb) / t, 1)
                kl = F.kl_div(F.log_softmax(logits / t, 1), soft, reduction="batchmean", log_target=True)
                loss = (1 - alpha) * loss + alpha * t**2 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        seconds.append(time.perf_counter() - started)
    return model.eval(), seconds


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    return sum(int((model(a).argmax(1) == b).sum()) for a, b in zip(x.split(512), y.split(512))) / len(y)


if __name__ == "__main__":
    digits, net = load_digits(), lambda arch: timm.create_model(arch, num_classes=10)
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None].expand(-1, 3, -1, -1) / 8 - 1
    x, y = F.interpolate(images, size=32), torch.tensor(digits.target)  # test: the last 300 images
    teacher = fit(net("resnet18"), x[:-300], y[:-300], lr=0.1)[0]
    scratch = fit(net("mobilenetv3_small_050"), x[:-300], y[:-300])[0]
    kd = fit(net("mobilenetv3_small_050"), x[:-300], y[:-300], teacher=teacher)[0]
    for name, model in (("teacher", teacher), ("scratch", scratch), ("kd", kd)):
        print(f"{name}: {100 * accuracy(model, x[-300:], y[-300:]):.1f} % test")
