"""Before each phase's federated rounds the lab trains that phase on its own non-private data (`[public_data]` in
the study config), centrally and without DP: masked ECG + masked CMR modelling with InfoNCE alignment (a loss that
couples the samples of a batch, so DP-SGD at a site cannot use it), the generator, and the heads where the data
has pairs and labels. Sites then refine this model under DP: the established recipe of public pretraining followed
by private fine-tuning. No site data is involved, so no privacy budget is spent here.

Fine-tuning keeps the epoch with the best figures on the public data's own validation split (early stopping): mean
AUROC above chance plus mean R². Not the validation loss: with the class weighting at reference prevalence it rose
from the first epoch while ranking and R² improved, so it kept the heads at their prior (panel AUROC 0.506, R²
-0.010, against 0.613 and 0.118 five epochs later).

Each phase's result is cached in `out/public-<phase>.pt`, keyed by the data, the settings, the model it started
from and the training code, so a resumed or repeated study does not train it again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from server.study_config import PublicData
from sitedata.pooling import data_hash, labelled_fraction, pooled
from sitedata.site_config import load_site_config
from sitedata.site_data import PreparedSite, prepare_site
from sitedata.site_dataset import mean_cmr_clip
from shared_models.cardiacnets import CardiacNets, build_model
from protocol.public_bank import encode_bank
from shared_models.checkpoint import load_checkpoint, save_checkpoint
from shared_models.evaluation import evaluate
from protocol.site_metrics import MetricKey as K
from shared_models.model_arrays import numpy_state, load_numpy_state
from shared_models.training import TrainOptions, reference_pos_weight, train_phase

log = logging.getLogger(__name__)


@dataclass
class PublicPhase:
    phase: str
    epochs: int
    examples: int
    seconds: float
    cached: bool


def public_sites(public: PublicData) -> list[PreparedSite]:
    return [prepare_site(load_site_config(path)) for path in public.sites]


def train_on_public_data(model: CardiacNets, public: PublicData, sites: list[PreparedSite], phase: str, out: Path, *,
                         seed: int = 0) -> PublicPhase | None:
    """Train `model` in place on the public data for one phase (None when the study gives it no epochs). The ServerApp
    calls it at the start of each phase, before that phase's federated rounds, so every phase starts from what the
    public data teaches it on top of the model so far (heads fitted to the final encoder, not to an earlier one)."""
    epochs = public.epochs(phase)
    if not epochs:
        return None
    train = pooled(sites, "train")
    if len(train) == 0:
        raise ValueError(f"public data ({', '.join(str(p) for p in public.sites)}): no usable training samples")
    if phase == "generator":
        prior = mean_cmr_clip(train)
        if prior is not None:  # the generator's starting point: the mean public clip, never a site's
            model.generator.set_prior_clip(torch.from_numpy(prior))
    # The result depends on the data, the settings and the model it starts from.
    incoming = hashlib.sha256(b"".join(array.tobytes() for array in numpy_state(model).values())).hexdigest()
    digest = hashlib.sha256(f"{data_hash(sites)}|{model.config.to_dict()}|{seed}|{public.lr}|{public.batch_size}|"
                            f"{phase}:{epochs}|{public.alignment_weight}|{incoming}|{training_code_hash()}".encode()).hexdigest()[:16]
    path = out / f"public-{phase}.pt"
    data = labelled_fraction(train, 1.0) if phase == "finetune" else train
    stored, meta = load_checkpoint(path) if path.is_file() else (None, {})
    cached = meta.get("data_hash") == digest
    started = time.perf_counter()
    if cached:
        model.load_state_dict(stored.state_dict())
    else:
        loader = DataLoader(data, batch_size=public.batch_size, shuffle=True, drop_last=len(data) > public.batch_size,
                            generator=torch.Generator().manual_seed(seed))
        options = TrainOptions(phase=phase, epochs=epochs, lr=public.lr, alignment="infonce", seed=seed,
                               alignment_weight=public.alignment_weight)
        if phase == "finetune":
            result = _finetune_with_early_stopping(model, loader, pooled(sites, "val"), options)
        else:
            result = train_phase(model, loader, options, progress=_logger(phase))
        save_checkpoint(path, model, phase=f"public-{phase}", step=result.steps, data_hash=digest)
    done = PublicPhase(phase, epochs, len(data), time.perf_counter() - started, cached)
    log.info("public data, %s: %d epochs over %d samples in %.0f s%s", phase, epochs, len(data), done.seconds,
             " (cached)" if cached else "")
    return done


def training_code_hash() -> str:
    """The model and training code the cached result came from: a changed loop or loss must not reuse it."""
    sources = sorted(Path(__file__).resolve().parents[1].glob("shared_models/*.py")) + [Path(__file__).resolve()]
    return hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:16]


def _finetune_with_early_stopping(model: CardiacNets, loader: DataLoader, validation, options: TrainOptions):
    """Fine-tune epoch by epoch and keep the weights with the best validation figures (`validation_score`)."""
    epochs, options.epochs = options.epochs, 1
    val_loader = DataLoader(validation, batch_size=64)
    best, best_state, result = -float("inf"), _copy_of_weights(model), None
    for epoch in range(epochs):
        options.seed += 1  # a fresh data order and masks each epoch
        result = train_phase(model, loader, options, pos_weight=reference_pos_weight())
        score = validation_score(evaluate(model, val_loader, "finetune")) if len(validation) else epoch
        if score > best:
            best, best_state = score, _copy_of_weights(model)
            log.info("public data, finetune: epoch %d, validation score %.4f (best so far)", epoch + 1, score)
    load_numpy_state(model, best_state)
    return result


def validation_score(result: dict) -> float:
    """Mean AUROC above chance plus mean R² (an undefined one counts 0): what the held-out figures report."""
    auroc, r2 = result.get(K.MEAN_AUROC, float("nan")), result.get(K.MEAN_R2, float("nan"))
    return (auroc - 0.5 if auroc == auroc else 0.0) + (r2 if r2 == r2 else 0.0)


def _copy_of_weights(model: CardiacNets) -> dict:
    return {name: array.copy() for name, array in numpy_state(model).items()}  # numpy_state shares memory


def _logger(phase: str):
    last = [0.0]

    def progress(step: int, total: int, loss: float) -> None:
        if step == total or time.perf_counter() - last[0] > 15:
            last[0] = time.perf_counter()
            log.info("public data, %s: step %d/%d, loss %.4f", phase, step, total, loss)
    return progress


class PublicBankSource:
    """Global weights -> the public alignment bank (protocol/public_bank.py) that a DP pretrain round sends: the
    embeddings of the lab's public training pairs under that round's model."""

    def __init__(self, preset: str, sites: list[PreparedSite]):
        if not sites:
            raise ValueError("DP pretraining needs the lab's public pairs ([public_data]) for its alignment bank")
        self.model = build_model(preset)
        data = pooled(sites, "train")
        self.loader = DataLoader(data, batch_size=128)

    def __call__(self, global_state: dict) -> bytes:
        load_numpy_state(self.model, global_state)
        bank = self.model.public_bank(self.loader)
        return encode_bank(bank.ecg.numpy(), bank.cmr.numpy())
