"""Study configuration (`studies/<name>.toml`): which sites take part, the phases with their rounds and
strategies, DP on/off and the secure-aggregation settings. The ServerApp reads it; each round's share of it
reaches the sites as a ConfigRecord. Errors name the file and the dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sitedata.site_config import read_toml
from shared_models.config import PRESETS
from protocol.round_contract import plan_text as format_plan
from shared_models.training import FINETUNE_MODES, PHASES

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")


class StudyConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PhasePlan:
    name: str
    rounds: int = 2
    local_epochs: int = 1
    lr: float = 1e-3
    strategy: str = "fedavg"
    proximal_mu: float = 0.0  # FedProx: Flower sends mu, the site adds the proximal term
    server_lr: float = 0.01  # FedAdam/FedYogi server learning rate (eta)
    finetune_mode: str = "full"
    min_sites: int = 2  # a round needs this many sites; fewer and it waits
    # the share of each site's lifetime budget this phase may spend (DP); 0 everywhere: one σ for the whole plan
    budget_share: float = 0.0


@dataclass(frozen=True)
class SecAggSettings:
    enabled: bool = True
    num_shares: float = 1.0  # share of the round's sites each site's secret is split among
    reconstruction_threshold: float = 0.6  # share of num_shares needed to unmask (3 sites: 2; 5 sites: 3)
    clipping_range: float = 8.0  # weights are clipped to +-this before quantisation
    quantization_range: int = 2 ** 24
    timeout_s: float = 600.0  # a site silent this long in a stage counts as dropped; local training runs inside a stage
    # the fewest sites whose updates a round may sum, per round and per model part: the sum of one update is that
    # update (protocol/round_admission.py)
    min_contributors: int = 2


@dataclass(frozen=True)
class PublicData:
    """The lab's own non-private ECG-CMR data (no site's patients), trained on centrally and without DP at the
    start of each phase, before its federated rounds: self-supervised pretraining with InfoNCE (which DP-SGD cannot use) and, where labelled, the
    generator and heads. Sites then refine that model under DP. 0 epochs skips a phase."""

    sites: tuple[Path, ...] = ()  # site configs of the public data, read through the same ingest
    description: str = "the coordinating lab's own non-private data"
    pretrain_epochs: int = 0
    generator_epochs: int = 0
    finetune_epochs: int = 0
    lr: float = 1e-3
    batch_size: int = 32
    # weight of the ECG-CMR InfoNCE term in public pretraining; 0 pretrains the ECG encoder by masked ECG
    # modelling alone (the ablation that isolates what alignment to CMR adds)
    alignment_weight: float = 1.0

    def epochs(self, phase: str) -> int:
        return getattr(self, f"{phase}_epochs")


@dataclass(frozen=True)
class StudyConfig:
    path: Path
    name: str
    preset: str = "small"
    sites: tuple[Path, ...] = ()  # site configs, for `cardiacfl study run` on one machine
    dp: bool = True
    max_site_examples: int = 1000  # scale of the per-part weights (examples / this, kept <= 1)
    max_update_ratio: float = 1.0  # a site's update may move the model by at most this x the global model's norm
    # What the study asks of every site's privacy (0: each site's own policy). A site whose policy grants less
    # (a smaller clipping norm, a smaller lifetime budget) declines the study's rounds with the reason.
    max_grad_norm: float = 0.0
    target_epsilon: float = 0.0
    seed: int = 0
    # DP where the noise is added: "local" (each site's DP-SGD, the default) or "distributed" (each site adds its
    # share of one noisy step per round and SecAgg+ sums them: client/distributed_dp.py; needs [secagg])
    dp_mode: str = "local"
    noise_multiplier: float = 1.0  # distributed: σ of the summed step, which each site accounts at
    dp_batch: int = 64  # distributed: expected samples per site per step
    # a checkpoint to start from instead of the preset's initial weights (relative to this file), e.g. a model
    # the lab trained on its public data earlier
    initial_checkpoint: str = ""
    generate_reference: int = 2  # reference-panel clips generated after each generator round (dashboard)
    phases: tuple[PhasePlan, ...] = field(default_factory=tuple)
    secagg: SecAggSettings = field(default_factory=SecAggSettings)
    public_data: PublicData | None = None

    @property
    def plan_text(self) -> str:
        """The plan every site needs to fix its noise multiplier: 'phase:rounds:local_epochs,...'."""
        return format_plan([(p.name, p.rounds, p.local_epochs, p.budget_share) for p in self.phases])


def load_study_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    raw = read_toml(path, StudyConfigError, "study config")
    fail = lambda key, expected, got: _fail(path, key, expected, got)  # noqa: E731
    _known(path, raw, "", {"study", "secagg", "phase", "public_data"})
    study = raw.get("study", {})
    _known(path, study, "study", {f.name for f in fields(StudyConfig)} - {"path", "phases", "secagg", "public_data"})
    if "name" not in study:
        fail("study.name", "a study name", None)
    if study.get("preset", "small") not in PRESETS:
        fail("study.preset", f"one of {', '.join(PRESETS)}", study.get("preset"))
    sites = tuple((path.parent / s).resolve() for s in study.get("sites", []))
    phases = []
    for i, table in enumerate(raw.get("phase", [])):
        _known(path, table, f"phase[{i}]", {f.name for f in fields(PhasePlan)})
        plan = PhasePlan(**table)
        if plan.name not in PHASES:
            fail(f"phase[{i}].name", f"one of {', '.join(PHASES)}", plan.name)
        if plan.finetune_mode not in FINETUNE_MODES:
            fail(f"phase[{i}].finetune_mode", f"one of {', '.join(FINETUNE_MODES)}", plan.finetune_mode)
        if plan.strategy not in STRATEGIES:
            fail(f"phase[{i}].strategy", f"one of {', '.join(STRATEGIES)}", plan.strategy)
        if plan.rounds < 1 or plan.local_epochs < 1 or plan.min_sites < 1:
            fail(f"phase[{i}]", "rounds, local_epochs and min_sites of at least 1", table)
        phases.append(plan)
    if not phases:
        fail("phase", "at least one [[phase]] table", None)
    shares = [p.budget_share for p in phases]
    if any(shares) and (min(shares) <= 0 or sum(shares) > 1 + 1e-9):
        fail("phase.budget_share", "a share above 0 for every phase, summing to at most 1 (or none at all)", shares)
    order = [PHASES.index(p.name) for p in phases]
    if order != sorted(order):
        fail("phase", f"phases in the order {' -> '.join(PHASES)} (each builds on the one before)",
             [p.name for p in phases])
    secagg_raw = raw.get("secagg", {})
    _known(path, secagg_raw, "secagg", {f.name for f in fields(SecAggSettings)})
    secagg = SecAggSettings(**secagg_raw)
    if secagg.enabled and secagg.min_contributors < 2:
        fail("secagg.min_contributors", "at least 2: a SecAgg+ sum of one site's update is that update",
             secagg.min_contributors)
    public = _public_data(path, raw.get("public_data"))
    if study.get("dp", True) and any(p.name == "pretrain" for p in phases) and not (
            public and (public.pretrain_epochs or study.get("initial_checkpoint"))):
        fail("public_data.pretrain_epochs", "public pretraining before a DP pretrain phase (or an initial_checkpoint "
             "that had it): under DP a site contrasts its pairs with a bank of the lab's public pairs, which needs "
             "[public_data] and embeddings that InfoNCE on those pairs trained. Declare it or drop the pretrain phase", 0)
    if study.get("initial_checkpoint") and not (path.parent / study["initial_checkpoint"]).is_file():
        fail("study.initial_checkpoint", "an existing checkpoint file", study["initial_checkpoint"])
    if study.get("dp_mode", "local") not in ("local", "distributed"):
        fail("study.dp_mode", "local or distributed", study.get("dp_mode"))
    if study.get("dp_mode") == "distributed":
        if not (study.get("dp", True) and secagg.enabled):
            fail("study.dp_mode", "distributed DP only with dp = true and [secagg] enabled: the sum of the sites' "
                 "noise shares protects a patient only while SecAgg+ hides each single share", "distributed")
        if study.get("noise_multiplier", 1.0) <= 0 or study.get("dp_batch", 64) < 1:
            fail("study.noise_multiplier", "σ > 0 and dp_batch >= 1", (study.get("noise_multiplier"), study.get("dp_batch")))
    values = {k: v for k, v in study.items() if k != "sites"}
    if values.get("initial_checkpoint"):
        values["initial_checkpoint"] = str((path.parent / values["initial_checkpoint"]).resolve())
    return StudyConfig(path=path, sites=sites, phases=tuple(phases), secagg=secagg, public_data=public, **values)


def _public_data(path: Path, table: dict | None) -> PublicData | None:
    if table is None:
        return None
    _known(path, table, "public_data", {f.name for f in fields(PublicData)})
    public = PublicData(**{**table, "sites": tuple((path.parent / s).resolve() for s in table.get("sites", []))})
    if not public.sites:
        _fail(path, "public_data.sites", "at least one site config of the lab's public data", table.get("sites"))
    if min(public.epochs(phase) for phase in PHASES) < 0:
        _fail(path, "public_data", "epochs of 0 or more", table)
    if public.alignment_weight < 0:
        _fail(path, "public_data.alignment_weight", "a weight of 0 (masked modelling only) or more", public.alignment_weight)
    return public


def _known(path: Path, table: dict, prefix: str, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        key = ".".join(filter(None, [prefix, sorted(unknown)[0]]))
        _fail(path, key, f"one of the known keys ({', '.join(sorted(allowed))})", "unknown key")


def _fail(path: Path, key: str, expected: str, got: Any) -> None:
    raise StudyConfigError(f"{path}: {key}: expected {expected}, got {got!r}")
