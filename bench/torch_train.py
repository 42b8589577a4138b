"""PyTorch baseline for `npm run bench:train`: the same models, batch sizes and optimiser
(SGD, lr 0.01, momentum 0.5) as subfed's trainLocal, on one CPU thread.

Usage: python3 bench/torch_train.py --model lenet5-mnist --batch 10 --seconds 4
Prints one JSON object: {"model", "batch", "backend": "torch", "samplesPerSec", "samplesPerCpuSec",
"samples", "seconds"}; samplesPerCpuSec divides by this process's CPU time, which stays
comparable when other work shares the machine.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet5Mnist(nn.Module):
    # conv 1->10 k5, pool, relu, conv 10->20 k5, pool, relu, 320->50 relu ->10 (21,840 params)
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


class LeNet5(nn.Module):
    """subfed's lenet5-* zoo: conv(valid 5x5) -> [BatchNorm] -> max_pool 2 -> ReLU, twice, then dense layers."""

    def __init__(self, channels, convs, dense_widths, batch_norm):
        super().__init__()
        c1, c2 = convs
        side = 28 if channels == 1 else 32
        flat = ((side - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.bn1 = nn.BatchNorm2d(c1) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(c2) if batch_norm else nn.Identity()
        widths = [flat * flat * c2, *dense_widths]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.bn1(self.conv1(x)), 2))
        x = F.relu(F.max_pool2d(self.bn2(self.conv2(x)), 2))
        x = x.flatten(1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = F.relu(x)
        return x


class Mlp(nn.Module):
    # 784-200-200-10, ReLU
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, 10)

    def forward(self, x):
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


MODELS = {
    "lenet5-mnist": LeNet5Mnist,
    "lenet5-bn-mnist": lambda: LeNet5(1, (10, 20), (50, 10), batch_norm=True),
    "lenet5-cifar": lambda: LeNet5(3, (6, 16), (120, 84, 10), batch_norm=False),
    "lenet5-bn-cifar": lambda: LeNet5(3, (6, 16), (120, 84, 10), batch_norm=True),
    "mlp": Mlp,
}
INPUT_SHAPES = {"lenet5-cifar": (3, 32, 32), "lenet5-bn-cifar": (3, 32, 32)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--samples", type=int, default=1000, help="size of the synthetic training set")
    args = parser.parse_args()
    if args.batch < 1:
        sys.exit(f"--batch must be a positive integer, got {args.batch}")

    torch.set_num_threads(1)
    torch.manual_seed(1)
    model = MODELS[args.model]()
    # Synthetic MNIST-shaped bytes, normalised like the TypeScript side (pixel/255, then MNIST mean/std).
    images = torch.randint(0, 256, (args.samples, *INPUT_SHAPES.get(args.model, (1, 28, 28))), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.samples,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)

    def epoch():
        order = torch.randperm(args.samples)
        for start in range(0, args.samples, args.batch):
            idx = order[start:start + args.batch]
            x = (images[idx].float() / 255 - 0.1307) / 0.3081
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), labels[idx])
            loss.backward()
            optimizer.step()
            loss.item()  # the TypeScript loop reads the loss back every batch too
        return args.samples

    model.train()
    epoch()  # warm-up
    samples = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    while True:
        samples += epoch()
        elapsed = time.perf_counter() - start
        if elapsed >= args.seconds:
            break
    cpu = time.process_time() - cpu_start
    print(json.dumps({"model": args.model, "batch": args.batch, "backend": "torch",
                      "samplesPerSec": samples / elapsed, "samplesPerCpuSec": samples / cpu,
                      "samples": samples, "seconds": elapsed}))


if __name__ == "__main__":
    main()
