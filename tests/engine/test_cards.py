"""Every shipped card validates and builds a Parsl configuration (nothing is submitted)."""

import pytest

from conftest import ROOT
from lambda_hat.engine.cards import load_card, parsl_config

CARDS = sorted((ROOT / "parsl_cards").rglob("*.yaml"))


@pytest.mark.parametrize("path", CARDS, ids=[str(p.relative_to(ROOT)) for p in CARDS])
def test_card_builds_parsl_config(path, tmp_path):
    card = load_card(path)
    cfg = parsl_config(card, tmp_path)
    (ex,) = cfg.executors
    assert ex.label == "lh"
    if card.provider.type == "slurm":
        p = ex.provider
        assert p.partition and p.walltime and p.exclusive is False  # Parsl's default would book whole nodes
        assert "activate" in p.worker_init


def test_a100_card_binds_one_gpu_per_worker(tmp_path):
    card = load_card(ROOT / "parsl_cards/slurm/a100.yaml", ("provider.partition=debug", "provider.account=proj", "workers=2", "provider.gpus_per_node=2"))
    ex = parsl_config(card, tmp_path).executors[0]
    assert ex.provider.partition == "debug" and ex.provider.account == "proj"
    assert ex.max_workers_per_node == 2 and list(ex.available_accelerators) == ["0", "1"]


def test_a_card_that_parsl_would_misread_is_an_error(tmp_path):
    """init_blocks over max_blocks (Parsl submits init_blocks jobs at start, whatever max_blocks
    says) and a card that is a list had been taken: the list as the default local card."""
    from lambda_hat.engine.typed import InputError

    a100 = ROOT / "parsl_cards/slurm/a100.yaml"
    with pytest.raises(InputError, match=r"a100.yaml with --set provider.init_blocks=3: provider.init_blocks: must be <= max_blocks \(2\)$"):
        load_card(a100, ("provider.init_blocks=3",))
    assert load_card(a100, ("provider.init_blocks=2",)).provider.init_blocks == 2
    for text in ("[]", "- executor: htex", "5"):
        (tmp_path / "card.yaml").write_text(text)
        with pytest.raises(InputError, match=r"card.yaml: <top>: expected a mapping"):
            load_card(tmp_path / "card.yaml")
    (tmp_path / "card.yaml").write_text("")  # an empty card: every field its default
    assert load_card(tmp_path / "card.yaml").executor == "threads"


def test_local_default_without_card_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    card = load_card(None)
    assert card.executor == "threads" and card.workers >= 1


def test_local_gpu_card_binds_one_gpu_per_worker(tmp_path):
    card = load_card(ROOT / "parsl_cards/local-gpu.yaml")
    ex = parsl_config(card, tmp_path).executors[0]
    assert type(ex.provider).__name__ == "LocalProvider" and list(ex.available_accelerators) == ["0"] and card.capacity == 1
    card = load_card(ROOT / "parsl_cards/local-gpu.yaml", ("gpus_per_node=2", "workers=4"))
    ex = parsl_config(card, tmp_path).executors[0]
    assert list(ex.available_accelerators) == ["0", "1"] and ex.workers_per_node == 2 and card.capacity == 2  # no more workers than GPUs


def test_local_gpu_card_warns_where_jax_has_no_cuda_plugin(tmp_path, monkeypatch):
    """Its tasks would run on the CPU unannounced: the run says so, until a CUDA plugin is importable."""
    import sys

    from lambda_hat.engine.cards import gpu_warning

    gpu = load_card(ROOT / "parsl_cards/local-gpu.yaml")
    assert "no CUDA plugin" in gpu_warning(gpu) and "1 GPU(s)" in gpu_warning(gpu)
    assert gpu_warning(load_card(ROOT / "parsl_cards/local-processes.yaml")) is None
    assert gpu_warning(load_card(ROOT / "parsl_cards/slurm/a100.yaml")) is None  # its nodes are not this machine
    (tmp_path / "jax_cuda13_plugin").mkdir()
    (tmp_path / "jax_cuda13_plugin" / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert gpu_warning(gpu) is None
