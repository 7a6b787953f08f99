"""The "blob" study task: a tanh³ autoencoder on noisy two-hot inputs, and the clusters its
encoder/decoder weight pairs form (../shared/REFERENCE.md §6; sweep: config/sweeps/blobs.yaml).

Each hidden unit j gives d points (W1[j, i], W2[i, j]); on the reference settings they gather
into 3 blobs (unused, positive, negative weights), which DBSCAN counts and silhouette scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from lambda_hat.engine.tasks import task
from lambda_hat.engine.typed import nonneg, positive, seed_range


@dataclass(frozen=True)
class BlobConfig:
    seed: int = field(default=0, metadata=seed_range())
    d: int = field(default=1024, metadata={"ge": 2})  # input/output dimension: two-hot inputs need two coordinates
    h: int = field(default=128, metadata=positive())  # hidden units
    lr: float = field(default=0.02, metadata=positive())
    batch: int = field(default=4096, metadata=positive())
    steps: int = field(default=900, metadata=positive())
    init_scale: float = field(default=1.0, metadata=positive())
    noise: float = field(default=0.005, metadata=nonneg())  # input noise standard deviation
    active_weight: float = field(default=16.0, metadata=positive())
    decoder_decay: float = field(default=0.03, metadata=nonneg())
    n_test: int = field(default=4096, metadata=positive())
    n_pairs: int = field(default=20000, metadata=positive())  # weight pairs clustered
    eps: float = field(default=0.1, metadata=positive())  # DBSCAN radius, in units of the pairs' std
    min_samples: int = field(default=20, metadata=positive())
    min_cluster_fraction: float = field(default=0.05, metadata={"ge": 0, "le": 1})  # smaller clusters count as noise


def _batch(key, cfg: BlobConfig, n: int):
    import jax

    k_idx, k_noise = jax.random.split(key)
    # two distinct active coordinates per sample: the second is offset by 1..d-1 from the first
    first = jax.random.randint(k_idx, (n,), 0, cfg.d)
    second = (first + jax.random.randint(jax.random.fold_in(k_idx, 1), (n,), 1, cfg.d)) % cfg.d
    target = jax.nn.one_hot(first, cfg.d) + jax.nn.one_hot(second, cfg.d)
    return target + cfg.noise * jax.random.normal(k_noise, target.shape), target


def _init(key, cfg: BlobConfig):
    import jax

    k1, k2 = jax.random.split(key)
    xavier = cfg.init_scale * np.sqrt(2.0 / (cfg.d + cfg.h))
    return {
        "W1": xavier * jax.random.normal(k1, (cfg.h, cfg.d)),
        "b1": jax.numpy.zeros(cfg.h),
        "W2": xavier * jax.random.normal(k2, (cfg.d, cfg.h)),
        "b2": jax.numpy.zeros(cfg.d),
    }


def _loss(p, x, target, cfg: BlobConfig):
    import jax.numpy as jnp

    f = jnp.tanh(x @ p["W1"].T + p["b1"]) ** 3 @ p["W2"].T + p["b2"]
    per_coord = jnp.where(target > 0.5, cfg.active_weight * (f - 1.0) ** 2, f**2)
    return jnp.mean(jnp.sum(per_coord, axis=1)) + cfg.decoder_decay * jnp.sum(p["W2"] ** 2)


def cluster_pairs(pairs: np.ndarray, cfg: BlobConfig, rng: np.random.Generator) -> dict:
    """DBSCAN on standardised (encoder, decoder) pairs (the decoder weights are ~30× smaller),
    and the silhouette of its clusters on the pairs themselves, noise points left out. DBSCAN
    splits small groups off a blob's tails; a cluster needs `min_cluster_fraction` of the pairs."""
    from sklearn.cluster import DBSCAN
    from sklearn.metrics import silhouette_score

    if len(pairs) > cfg.n_pairs:
        pairs = pairs[rng.choice(len(pairs), cfg.n_pairs, replace=False)]
    z = (pairs - pairs.mean(0)) / (pairs.std(0) + 1e-12)
    labels = DBSCAN(eps=cfg.eps, min_samples=cfg.min_samples).fit_predict(z)
    sizes = np.bincount(labels[labels >= 0], minlength=1)
    labels[(labels >= 0) & (sizes[np.maximum(labels, 0)] < cfg.min_cluster_fraction * len(z))] = -1
    clusters = sorted(set(labels) - {-1})
    core = labels >= 0
    sil = float(silhouette_score(pairs[core], labels[core], sample_size=min(5000, int(core.sum())), random_state=0)) if len(clusters) >= 2 else None
    return {"n_clusters": len(clusters), "silhouette": sil, "noise_fraction": float(1 - core.mean())}


@task(BlobConfig, version=2, preload=("jax", "optax"))  # bump when the training or the data change
def train(ctx, cfg: BlobConfig) -> dict:
    import jax
    import optax

    t0 = time.time()
    # every step jitted (as llc.targets.problem), the keys arguments: one program for every seed
    k_init, k_data, k_test = jax.jit(lambda s: jax.random.split(jax.random.PRNGKey(s), 3))(cfg.seed)
    params = jax.jit(lambda k: _init(k, cfg))(k_init)
    opt = optax.adam(cfg.lr)

    @jax.jit
    def run(params, k_data):
        def step(carry, i):
            p, s = carry
            x, t = _batch(jax.random.fold_in(k_data, i), cfg, cfg.batch)
            loss, g = jax.value_and_grad(_loss)(p, x, t, cfg)
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), np.arange(cfg.steps))
        return p, losses

    params, losses = jax.block_until_ready(run(params, k_data))
    train_sec = time.time() - t0
    test_loss = float(jax.jit(lambda p, k: _loss(p, *_batch(k, cfg, cfg.n_test), cfg))(params, k_test))
    if not np.isfinite(test_loss):
        from lambda_hat.engine.tasks import TaskFailed

        raise TaskFailed(f"training diverged (test loss {test_loss}) at lr={cfg.lr:g}")
    w1, w2 = np.asarray(params["W1"]), np.asarray(params["W2"])
    pairs = np.stack([w1.ravel(), w2.T.ravel()], axis=1)  # (W1[j, i], W2[i, j]) for all j, i
    np.savez_compressed(ctx.workdir / "weights.npz", W1=w1, W2=w2, losses=np.asarray(losses))
    clusters = cluster_pairs(pairs, cfg, np.random.default_rng(cfg.seed))
    return {
        "test_loss": test_loss,
        "final_train_loss": float(losses[-1]),
        **clusters,
        "enc_dec_corr": float(np.corrcoef(pairs.T)[0, 1]),
        "train_sec": train_sec,
        "params": int(sum(v.size for v in params.values())),
        "epochs": cfg.steps,  # one fresh batch per step: steps are the unit of work here
    }
