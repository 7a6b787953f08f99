"""The PEFT study: pretrain each audio model family once (proxy objective: tempo bucket on a
split of its own), then adapt it to rudiment classification with LoRA, AdaLoRA or IA3 from peft
(config/sweeps/peft.yaml). Tasks: `generate` data (lambda_hat.studies.peft.rudiments), `pretrain`, `finetune`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lambda_hat.engine.tasks import Task, task
from lambda_hat.engine.typed import nonneg, positive, seed_range


@dataclass(frozen=True)
class PeftConfig:
    seed: int = field(default=0, metadata=seed_range())
    model: Literal["ast", "htsat", "beats", "efficientat"] = "ast"
    strategy: Literal["lora", "adalora", "ia3"] = "lora"
    augment: bool = False
    data_size: Literal["tiny", "small"] = "tiny"
    data_seed: int = field(default=0, metadata=seed_range())
    pretrain_epochs: int = field(default=6, metadata=positive())
    epochs: int = field(default=12, metadata=positive())
    batch: int = field(default=32, metadata=positive())
    lr: float | None = field(default=None, metadata=positive())  # default: per strategy (LR)
    rank: int = field(default=8, metadata=positive())  # LoRA rank; AdaLoRA's initial rank is 1.5×
    adalora_target_rank: int = field(default=4, metadata=positive())
    mixup_alpha: float = field(default=0.4, metadata=nonneg())
    target_modules: list[str] | None = None  # default: the family's (audio_models.TARGETS)


LR = {"lora": 2e-3, "adalora": 2e-3, "ia3": 1e-2}


def _data_task(cfg: PeftConfig) -> Task:
    c = {"size": cfg.data_size, "seed": cfg.data_seed}
    return Task("data", "lambda_hat.studies.peft.rudiments:generate", c, f"rudiments {cfg.data_size}/s{cfg.data_seed}")


def needs(cfg: PeftConfig) -> list[Task]:
    data = _data_task(cfg)
    c = {"model": cfg.model, "data": data.id, "epochs": cfg.pretrain_epochs, "seed": cfg.data_seed}
    pre = Task("pretrain", "lambda_hat.studies.peft.study:pretrain", c, f"pretrain {cfg.model}", deps=(("data", data.id),))
    return [data, pre]


def load_data(d: Path):
    import torch

    z = np.load(d / "data.npz")
    return {k: torch.from_numpy(z[k].astype(np.float32) if k.endswith("_x") else z[k]) for k in z.files}


def _epoch(model, x, y, opt, batch, gen, mixup_alpha=0.0, n_classes=10, after_step=None):
    """One training epoch; returns the mean loss. Mixup mixes waveforms and one-hot labels."""
    import torch
    import torch.nn.functional as F

    model.train()
    perm = torch.randperm(len(x), generator=gen)
    total = 0.0
    for i in range(0, len(x), batch):
        idx = perm[i : i + batch]
        xb, yb = x[idx], F.one_hot(y[idx], n_classes).float()
        if mixup_alpha > 0:
            lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen))).beta(mixup_alpha, mixup_alpha))
            j = torch.randperm(len(xb), generator=gen)
            xb, yb = lam * xb + (1 - lam) * xb[j], lam * yb + (1 - lam) * yb[j]
        loss = torch.sum(-yb * F.log_softmax(model(xb), -1), -1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step:
            after_step()
        total += float(loss.detach()) * len(idx)
    return total / len(x)


def evaluate(model, x, y, batch=128) -> dict:
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import f1_score

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    pred = logits.argmax(-1)
    return {
        "loss": float(F.cross_entropy(logits, y)),
        "accuracy": float((pred == y).float().mean()),
        "macro_f1": float(f1_score(y.numpy(), pred.numpy(), average="macro")),
    }


@dataclass(frozen=True)
class Pretrain:
    model: str
    data: str  # the data task's ID
    epochs: int
    seed: int


@task(Pretrain, version=2, requires=("torch",))  # bump when audio_models.py changes a model
def pretrain(ctx, cfg: Pretrain) -> dict:
    """Cached task: one family trained on the proxy objective (tempo bucket, 5 classes)."""
    import torch

    from lambda_hat.studies.peft import audio_models as am
    from lambda_hat.studies.peft.rudiments import TEMPO_BUCKETS

    c = ctx.config
    torch.manual_seed(c["seed"])
    data = load_data(ctx.deps[0])
    n_out = len(TEMPO_BUCKETS) - 1
    model = am.build(c["model"], n_out)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(c["seed"])
    for epoch in range(c["epochs"]):
        loss = _epoch(model, data["pretrain_x"], data["pretrain_tempo"], opt, 32, gen, n_classes=n_out)
        ctx.log(f"pretrain epoch {epoch}: loss {loss:.4f}")
    torch.save(model.state_dict(), ctx.workdir / "model.pt")
    return {"proxy_train_loss": loss, "proxy_accuracy": evaluate(model, data["pretrain_x"], data["pretrain_tempo"])["accuracy"]}


def base_hash(model) -> str:
    """Hash of the frozen base weights (adapter and head copies excluded)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if not any(s in name for s in ("lora_", "ia3_", "modules_to_save", "original_module")):
            h.update(name.encode())
            h.update(p.detach().numpy().tobytes())
    return h.hexdigest()


def adapt(model, cfg: PeftConfig, total_steps: int):
    """Wrap a pretrained model (fresh 10-class `classifier`) with the strategy's peft config."""
    from peft import AdaLoraConfig, IA3Config, LoraConfig, get_peft_model

    from lambda_hat.studies.peft.audio_models import TARGETS

    lora_t, ia3_t, ia3_ff = TARGETS[cfg.model]
    targets = list(cfg.target_modules) if cfg.target_modules else None
    if cfg.strategy == "lora":
        pc = LoraConfig(r=cfg.rank, lora_alpha=2 * cfg.rank, target_modules=targets or lora_t, lora_dropout=0.0, modules_to_save=["classifier"])
    elif cfg.strategy == "adalora":
        init_r = max(cfg.rank * 3 // 2, cfg.adalora_target_rank + 1)
        pc = AdaLoraConfig(
            init_r=init_r, target_r=cfg.adalora_target_rank, lora_alpha=2 * cfg.rank, target_modules=targets or lora_t,
            total_step=total_steps, tinit=total_steps // 10, tfinal=total_steps // 5, deltaT=1, modules_to_save=["classifier"],
        )  # fmt: skip
    else:
        pc = IA3Config(target_modules=targets or ia3_t, feedforward_modules=[m for m in ia3_ff if m in (targets or ia3_t)], modules_to_save=["classifier"])
    return get_peft_model(model, pc)


def adalora_rank(model, budget: bool = False) -> int:
    """AdaLoRA's rank summed over the adapted layers: the singular values left non-zero by its
    pruning, or with `budget` all of them (lora_E starts at zero, so only the size counts then)."""
    es = [p.detach() for n, p in model.named_parameters() if "lora_E" in n]
    return int(sum(e.numel() if budget else int((e != 0).sum()) for e in es))


def finetune_model(model, data: dict, cfg: PeftConfig, log=print) -> tuple[object, dict]:
    """Train the adapted model on the rudiment labels; best epoch by validation accuracy."""
    import torch

    from lambda_hat.studies.peft.audio_models import set_augment

    steps_per_epoch = -(-len(data["train_x"]) // cfg.batch)
    model = adapt(model, cfg, cfg.epochs * steps_per_epoch)
    set_augment(model, cfg.augment)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    before = base_hash(model)
    rank0 = adalora_rank(model, budget=True) if cfg.strategy == "adalora" else None
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr or LR[cfg.strategy], weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = [0]

    def after_step():
        step[0] += 1
        if cfg.strategy == "adalora":  # prune and re-allocate the rank budget (peft's AdaLoRA contract)
            model.base_model.update_and_allocate(step[0])

    best, best_state, epoch_times, history = None, None, [], []
    for epoch in range(cfg.epochs):
        t0 = time.time()
        train_loss = _epoch(model, data["train_x"], data["train_y"], opt, cfg.batch, gen, cfg.mixup_alpha if cfg.augment else 0.0, after_step=after_step)
        epoch_times.append(time.time() - t0)
        val = evaluate(model, data["val_x"], data["val_y"])
        log(f"epoch {epoch}: train loss {train_loss:.4f}, val acc {val['accuracy']:.3f}")
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "valid_loss": val["loss"], "valid_accuracy": val["accuracy"], "valid_macro_f1": val["macro_f1"]}
        )
        if best is None or val["accuracy"] > best["val"]["accuracy"]:
            best = {"epoch": epoch, "val": val, "train_loss": train_loss}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    final_val = val
    model.load_state_dict(best_state)
    test = evaluate(model, data["test_x"], data["test_y"])
    metrics = {
        "val_accuracy": best["val"]["accuracy"], "val_macro_f1": best["val"]["macro_f1"],
        "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"], "best_epoch": best["epoch"],
        "final_train_loss": train_loss, "final_val_loss": final_val["loss"], "test_loss": test["loss"],
        "base_unchanged": base_hash(model) == before,
        "params": total, "epochs": cfg.epochs, "history": history,
        "efficiency": {
            "total_params": total, "trainable_params": trainable, "trainable_percent": 100 * trainable / total,
            # accuracy per percent of the parameters trained: how far the trained fraction goes
            "param_efficiency": test["accuracy"] / (100 * trainable / total),
            "training_time": sum(epoch_times), "avg_epoch_time": sum(epoch_times) / len(epoch_times),
        },
    }  # fmt: skip
    if rank0 is not None:
        metrics.update(adalora_rank_initial=rank0, adalora_rank_final=adalora_rank(model))
    return model, metrics


def load_pretrained(d: Path, family: str):
    import torch
    from torch import nn

    from lambda_hat.studies.peft import audio_models as am
    from lambda_hat.studies.peft.rudiments import CLASSES, TEMPO_BUCKETS

    model = am.build(family, len(TEMPO_BUCKETS) - 1)
    model.load_state_dict(torch.load(d / "model.pt", weights_only=True))
    model.classifier = nn.Linear(model.classifier.in_features, len(CLASSES))  # the new task's head
    return model


@task(PeftConfig, needs=needs, requires=("torch", "peft"))
def finetune(ctx, cfg: PeftConfig) -> dict:
    import pandas as pd
    import torch

    torch.manual_seed(cfg.seed)
    data = load_data(ctx.deps[0])
    model = load_pretrained(ctx.deps[1], cfg.model)
    _, metrics = finetune_model(model, data, cfg, ctx.log)
    pd.DataFrame(metrics.pop("history")).to_csv(ctx.workdir / "history.csv", index=False)  # per-epoch curves (tracking)
    if not metrics.pop("base_unchanged"):
        from lambda_hat.engine.tasks import TaskFailed

        raise TaskFailed("the frozen base weights changed during fine-tuning")
    return metrics
