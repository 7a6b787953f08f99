"""Four small audio classifiers in torch, standing in for AST, HTS-AT, BEATs and EfficientAT.

Each maps a batch of 2 s waveforms (B, 32000) to logits through a head named `classifier`, and
applies SpecAugment to its time-frequency features while training when `augment` is on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lambda_hat.studies.peft.rudiments import HOP, N_FFT, mel_filterbank

FAMILIES = ("ast", "htsat", "beats", "efficientat")
# peft targets per family: (LoRA/AdaLoRA targets, IA3 targets, IA3 feedforward modules)
TARGETS = {
    "ast": (["qkv", "proj"], ["qkv", "fc2"], ["fc2"]),
    "htsat": (["qkv", "proj"], ["qkv", "fc2"], ["fc2"]),
    "beats": (["qkv", "proj"], ["qkv", "fc2"], ["fc2"]),
    "efficientat": (["conv2", "conv3", "value"], ["conv3", "value"], ["value"]),
}


class LogMel(nn.Module):
    """Fixed front end: waveform → per-clip standardised log-mel, (B, 1, mels, frames)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT))
        self.register_buffer("fb", torch.from_numpy(mel_filterbank()))

    def forward(self, wave):
        spec = torch.stft(wave, N_FFT, HOP, window=self.window, return_complex=True).abs() ** 2
        x = torch.log(torch.einsum("bft,fm->bmt", spec, self.fb) + 1e-6)
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-5)
        return x.unsqueeze(1)


class SpecAugment(nn.Module):
    """Two time masks and two frequency masks (zeros) per clip, only while training."""

    def __init__(self, max_time: int = 12, max_freq: int = 8):
        super().__init__()
        self.enabled, self.max_time, self.max_freq = False, max_time, max_freq

    def forward(self, x):  # (B, C, F, T)
        if not (self.training and self.enabled):
            return x
        B, _, Fr, T = x.shape
        mask = torch.ones(B, 1, Fr, T, device=x.device)
        for size, axis in ((self.max_time, 3), (self.max_freq, 2)):
            n = x.shape[axis]
            for _ in range(2):
                w = torch.randint(0, size + 1, (B,))
                s = (torch.rand(B) * (n - w).clamp(min=1)).long()
                idx = torch.arange(n)
                m = ((idx[None] >= s[:, None]) & (idx[None] < (s + w)[:, None])).float()
                mask = mask * (1 - (m[:, None, None, :] if axis == 3 else m[:, None, :, None]))
        return x * mask


class Block(nn.Module):
    """Pre-norm transformer block with plain Linear layers (qkv, proj, fc1, fc2) for peft."""

    def __init__(self, dim: int, heads: int = 4, mlp: int = 2):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp * dim), nn.Linear(mlp * dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class AST(nn.Module):
    """Spectrogram-patch transformer: 16×16 patches, a class token, 3 blocks."""

    def __init__(self, n_out: int, dim: int = 96, depth: int = 3):
        super().__init__()
        self.logmel, self.augment = LogMel(), SpecAugment()
        self.patch = nn.Conv2d(1, dim, 16, stride=16)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 1 + 4 * 7, dim))
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.norm, self.classifier = nn.LayerNorm(dim), nn.Linear(dim, n_out)

    def forward(self, wave):
        x = self.patch(self.augment(self.logmel(wave))).flatten(2).transpose(1, 2)  # (B, 28, dim)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        return self.classifier(self.norm(self.blocks(x))[:, 0])


class HTSAT(nn.Module):
    """Hierarchical transformer: 8×8 patches, 2 blocks, 2×2 patch merging, 2 blocks, mean pool."""

    def __init__(self, n_out: int, dim: int = 48):
        super().__init__()
        self.logmel, self.augment = LogMel(), SpecAugment()
        self.patch = nn.Conv2d(1, dim, 8, stride=8)
        self.pos = nn.Parameter(0.02 * torch.randn(1, dim, 8, 16))
        self.stage1 = nn.Sequential(Block(dim), Block(dim))
        self.merge = nn.Linear(4 * dim, 2 * dim)
        self.stage2 = nn.Sequential(Block(2 * dim), Block(2 * dim))
        self.norm, self.classifier = nn.LayerNorm(2 * dim), nn.Linear(2 * dim, n_out)

    def forward(self, wave):
        x = self.patch(F.pad(self.augment(self.logmel(wave)), (0, 2)))  # (B, dim, 8, 16)
        x = x + self.pos
        B, D, H, W = x.shape
        x = self.stage1(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, D, H, W)
        x = x.reshape(B, D, H // 2, 2, W // 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(B, H * W // 4, 4 * D)
        x = self.stage2(self.merge(x))
        return self.classifier(self.norm(x).mean(1))


class BEATs(nn.Module):
    """Waveform model: strided 1-D conv front end (≈ 10 ms frames), then 2 transformer blocks."""

    def __init__(self, n_out: int, dim: int = 96):
        super().__init__()
        # GroupNorm after the first conv, as in wav2vec 2.0: without it the front end stalls
        self.frontend = nn.Sequential(
            nn.Conv1d(1, 32, 10, stride=5), nn.GroupNorm(32, 32), nn.GELU(), nn.Conv1d(32, 64, 8, stride=4), nn.GELU(),
            nn.Conv1d(64, dim, 8, stride=8), nn.GELU(),
        )  # fmt: skip
        self.feat_norm = nn.LayerNorm(dim)
        self.augment = SpecAugment(max_time=12, max_freq=8)  # masks frames and feature channels
        self.pos = nn.Parameter(0.02 * torch.randn(1, 200, dim))
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.norm, self.classifier = nn.LayerNorm(dim), nn.Linear(dim, n_out)

    def forward(self, wave):
        wave = (wave - wave.mean(1, keepdim=True)) / (wave.std(1, keepdim=True) + 1e-5)
        x = self.frontend(wave.unsqueeze(1))  # (B, dim, T)
        x = self.feat_norm(self.augment(x.unsqueeze(1)).squeeze(1).transpose(1, 2))
        x = x + self.pos[:, : x.shape[1]]
        return self.classifier(self.norm(self.blocks(x)).mean(1))


class EfficientAT(nn.Module):
    """Small CNN on log-mel (3 conv blocks) with attention pooling over time."""

    def __init__(self, n_out: int, width: int = 64):
        super().__init__()
        self.logmel, self.augment = LogMel(), SpecAugment()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, width, 3, padding=1), nn.BatchNorm2d(width)
        self.att, self.value = nn.Linear(width, 1), nn.Linear(width, width)
        self.classifier = nn.Linear(width, n_out)

    def forward(self, wave):
        x = self.augment(self.logmel(wave))
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.max_pool2d(F.relu(bn(conv(x))), 2)
        x = x.mean(2).transpose(1, 2)  # (B, T, width)
        w = torch.softmax(self.att(x), dim=1)
        return self.classifier((w * F.gelu(self.value(x))).sum(1))


def build(family: str, n_out: int) -> nn.Module:
    return {"ast": AST, "htsat": HTSAT, "beats": BEATs, "efficientat": EfficientAT}[family](n_out)


def set_augment(model: nn.Module, on: bool) -> None:
    for m in model.modules():
        if isinstance(m, SpecAugment):
            m.enabled = on
