"""The metric contract: every key a site sends in its fit and evaluate replies, and that the server, the run
database, the summary and the dashboard read. Add a site metric here and every room sees the same name.

Values are plain numbers or short strings (Flower's Scalar): aggregates only, never per-patient values.
"""

from __future__ import annotations

from enum import StrEnum


class MetricKey(StrEnum):
    # identity and outcome of a round at a site
    SITE = "site"  # the site's own name (informational: the server identifies a site by its node)
    PHASE = "phase"
    ROUND = "round"
    DECLINED = "declined"  # 1 when the site refused the round
    REASON = "reason"  # why it declined, or why it had nothing to train
    MODEL = "scored_model"  # cross-site rows: whose model was scored on this site's data (simulation only)
    EXAMPLES = "examples"  # training samples this round (0 when declined)
    NUM_EXAMPLES = "num-examples"  # validation samples scored
    # below the site's release floor (privacy.min_eval_count) an evaluation reply says only this, and a coarse count
    WITHHELD = "withheld"
    COUNT_BAND = "count_band"  # e.g. "<20"
    # training. A DP round's exact training loss never leaves a site (it is a function of the private batch,
    # outside the DP guarantee); where the site's policy releases one, it is noised, its ε is in the ledger, and it
    # travels under its own key so that nothing reads it as exact (client/loss_release.py).
    LOSS = "loss"  # evaluation loss (above the release floor), and the training loss of a round without DP
    DP_LOSS = "dp_loss"
    STEPS = "steps"
    SECONDS = "seconds"
    PREPARE_S = "prepare_s"  # site data, model and DP set-up
    STARTUP_S = "startup_s"  # process start -> handler (interpreter, Flower, message decoding)
    WORK_S = "work_s"  # handler -> reply ready: the site's whole work (in the warm worker, or imports + work in-process)
    # privacy: the site's own policy and lifetime ledger
    EPSILON = "epsilon"  # lifetime ε spent so far (cumulative over every round, phase and restart)
    TARGET_EPSILON = "target_epsilon"
    DELTA = "delta"
    NOISE_MULTIPLIER = "noise_multiplier"
    MAX_GRAD_NORM = "max_grad_norm"
    SAMPLE_RATE = "sample_rate"
    # distributed DP: the SecAgg+ reconstruction threshold t the site's share of the noise (σ/√t) was sized for
    NOISE_SHARES = "noise_shares"
    # validation (shared_models.evaluation)
    MASKED_ECG = "masked_ecg"
    ALIGNMENT_COSINE = "alignment_cosine"
    RETRIEVAL_TOP1 = "retrieval_top1"
    RETRIEVAL_TOP5 = "retrieval_top5"
    RETRIEVAL_MEDIAN_RANK = "retrieval_median_rank"  # rank of the true CMR among all, 1 = first (chance: about n/2)
    RETRIEVAL_CHANCE = "retrieval_chance"
    # mean cosine between different subjects' embeddings: near 1 means the embeddings barely differ (collapse)
    ECG_PAIRWISE_COSINE = "ecg_pairwise_cosine"
    CMR_PAIRWISE_COSINE = "cmr_pairwise_cosine"
    GENERATOR_LOSS = "generator_loss"
    SSIM = "ssim"
    PSNR = "psnr"
    EF_PROXY_MAE = "ef_proxy_mae"
    GENERATED_SAMPLES = "generated_samples"
    BASELINE_SSIM = "baseline_ssim"
    BASELINE_PSNR = "baseline_psnr"
    BASELINE_EF_PROXY_MAE = "baseline_ef_proxy_mae"
    # per-patient fidelity, which the mean clip cannot have (0 for it): generated vs real EF proxy over subjects,
    # and the blood-pool area curves with the mean curve taken off
    EF_PROXY_CORRELATION = "ef_proxy_correlation"
    AREA_CURVE_CORRELATION = "area_curve_correlation"
    # realism: generated / real share of spatial high-frequency energy (1 = alike), and the tubelet grid's contrast
    HIGH_FREQUENCY_RATIO = "high_frequency_ratio"
    GRID_CONTRAST = "grid_contrast"
    MEAN_AUROC = "mean_auroc"
    MEAN_R2 = "mean_r2"


def per_target(kind: str, name: str) -> str:
    """Per-indicator and per-disease keys: 'auroc/CAD', 'r2/LVEF', 'pearson/LVEF', 'mae/LVEF'."""
    return f"{kind}/{name}"


TEXT_KEYS = frozenset({MetricKey.SITE, MetricKey.PHASE, MetricKey.REASON, MetricKey.MODEL, MetricKey.COUNT_BAND})  # every other key is a number
# Per-site values that an example-weighted mean over sites would make meaningless.
NOT_AVERAGED = frozenset({MetricKey.NUM_EXAMPLES, MetricKey.EPSILON, MetricKey.TARGET_EPSILON, MetricKey.DELTA,
                          MetricKey.NOISE_MULTIPLIER, MetricKey.MAX_GRAD_NORM, MetricKey.SAMPLE_RATE, MetricKey.ROUND,
                          MetricKey.NOISE_SHARES, MetricKey.WITHHELD})
# What the summary table and the dashboard's overview show of a round's global metrics.
HEADLINE = (MetricKey.LOSS, MetricKey.MASKED_ECG, MetricKey.RETRIEVAL_TOP1, MetricKey.GENERATOR_LOSS,
            MetricKey.MEAN_AUROC, MetricKey.MEAN_R2)


def interval_keys(key: str) -> tuple[str, str]:
    """The bounds of a bootstrap 95 % interval of `key`: 'mean_auroc_low', 'mean_auroc_high'."""
    return f"{key}_low", f"{key}_high"


def lab_key(key: str) -> str:
    """The same metric computed by the lab on its own held-out reference panel (no site data)."""
    return f"lab/{key}"


def local_key(key: str) -> str:
    """The same metric for the site's own locally fine-tuned model, on its own validation split."""
    return f"local/{key}"


def plain(metrics: dict) -> dict:
    """Keys as plain strings, for Flower's records and JSON."""
    return {str(k): v for k, v in metrics.items()}


def weighted_mean_of_numbers(results: list[tuple[int, dict]]) -> dict[str, float]:
    """Flower's `evaluate_metrics_aggregation_fn`: the example-weighted mean of every finite numeric metric
    over the sites that reported it, leaving out per-site values (ε, δ, σ …)."""
    import math

    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for examples, metrics in results:
        for key, value in metrics.items():
            if key in NOT_AVERAGED or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value) and examples > 0:
                sums[key] = sums.get(key, 0.0) + float(value) * examples
                weights[key] = weights.get(key, 0.0) + examples
    return {key: sums[key] / weights[key] for key in sums}


# Human names for the keys people read (the summary table, the dashboard); a key without one shows as itself.
LABELS = {
    MetricKey.LOSS: "loss", MetricKey.MASKED_ECG: "masked-ECG loss", MetricKey.ALIGNMENT_COSINE: "ECG-CMR cosine",
    MetricKey.RETRIEVAL_TOP1: "retrieval top-1", MetricKey.RETRIEVAL_CHANCE: "retrieval by chance",
    MetricKey.RETRIEVAL_TOP5: "retrieval top-5", MetricKey.RETRIEVAL_MEDIAN_RANK: "retrieval median rank",
    MetricKey.GENERATOR_LOSS: "generator loss", MetricKey.SSIM: "SSIM", MetricKey.PSNR: "PSNR",
    MetricKey.EF_PROXY_MAE: "EF-proxy MAE", MetricKey.BASELINE_SSIM: "mean clip's SSIM",
    MetricKey.BASELINE_EF_PROXY_MAE: "mean clip's EF-proxy MAE", MetricKey.MEAN_AUROC: "mean AUROC",
    MetricKey.MEAN_R2: "mean R²", MetricKey.EPSILON: "ε spent", MetricKey.TARGET_EPSILON: "ε budget",
    MetricKey.NOISE_MULTIPLIER: "noise σ", MetricKey.EXAMPLES: "training examples",
    MetricKey.NUM_EXAMPLES: "validation examples", MetricKey.ECG_PAIRWISE_COSINE: "ECG pairwise cosine",
    MetricKey.CMR_PAIRWISE_COSINE: "CMR pairwise cosine",
}


def gain_key(key: str) -> str:
    """A held-out figure's gain over the public model alone, paired on the same subjects: 'gain/mean_auroc'."""
    return f"gain/{key}"


# The figures whose gain over the public model alone the lab measures on its panel after every round.
GAIN_KEYS = {"pretrain": (MetricKey.RETRIEVAL_TOP5,), "finetune": (MetricKey.MEAN_AUROC, MetricKey.MEAN_R2),
             "generator": ()}


def label(key: str) -> str:
    """'lab/mean_auroc' -> 'mean AUROC (lab panel)', 'local/loss' -> 'loss (site's own model)'."""
    for prefix, where in (("lab/", "lab panel"), ("local/", "site's own model"), ("gain/", "gain over the public model")):
        if key.startswith(prefix):
            return f"{label(key.removeprefix(prefix))} ({where})"
    return LABELS.get(key, key)
