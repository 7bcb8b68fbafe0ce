"""A seeded study written with the project's own run-database writer, round by round as the study runner writes
them: for tests, the browser check and the page-speed measurement (e.g. 1,000 rounds x 10 sites)."""

from __future__ import annotations

import numpy as np

from protocol.participants import PUBLIC_STEP, Participants
from protocol.round_record import RoundRecord, SiteReport
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import lab_key, local_key, plain
from rundb.schema import npy_bytes
from rundb.writer import RunDatabase


def seed_study(url: str, *, rounds: int = 6, sites: int = 3, generations: bool = True, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    db = RunDatabase(url)
    phases = ["pretrain", "generator", "finetune"]
    per_phase = [rounds // 3 + (1 if i < rounds % 3 else 0) for i in range(3)]
    public = {"description": "the lab's public cohort", "sites": ["public"], "dp": False, "pretrain_epochs": 60,
              "generator_epochs": 30, "finetune_epochs": 30}
    names = [f"hospital-{i:02d}" for i in range(sites)]
    enrolled = [*names, "hospital-silent"]  # enrolled, never reported: the dashboard must still show it
    study_id = db.start_study("seeded", "small", {"phases": [{"name": p, "rounds": n} for p, n in zip(phases, per_phase)],
                                                  "public_data": public, "sites": enrolled,
                                                  "app": {"fab_hash": "5e" * 32}}, total_rounds=rounds)
    for phase in phases:  # the lab's step on its public data before each phase, as the study runner records it
        db.record_round(study_id, RoundRecord(f"public-{phase}", 0, started=1.79e9, seconds=30.0,
                                              participants=Participants(public={"examples": 600, "epochs": 30},
                                                                        outcome=PUBLIC_STEP),
                                              global_metrics={lab_key(K.MEAN_AUROC): 0.55, lab_key(K.RETRIEVAL_TOP1): 0.02}))
    budgets = {s: float(6 + 2 * (i % 3)) for i, s in enumerate(names)}
    epsilon = dict.fromkeys(names, 0.0)
    # per-round spend: the first site ends at 80 % of its budget, later ones higher, some run out and decline
    spend = {s: budgets[s] * (0.8 + 0.15 * (i % 3)) / rounds for i, s in enumerate(names)}
    step, t0 = 0, 1.79e9
    for phase, count in zip(phases, per_phase):
        for r in range(1, count + 1):
            step += 1
            trained, declined, reports = [], {}, []
            for s in names:
                over = epsilon[s] + spend[s] > budgets[s]
                if over:
                    declined[s] = f"round would spend ε past this site's budget ε={budgets[s]:g}"
                else:
                    epsilon[s] += spend[s]
                    trained.append(s)
                reports.append(SiteReport(s, "fit", 0 if over else 100, plain({
                    K.SITE: s, K.EXAMPLES: 0 if over else 100, K.DECLINED: int(over), K.REASON: declined.get(s, ""),
                    K.EPSILON: epsilon[s], K.TARGET_EPSILON: budgets[s], K.DELTA: 1e-5, K.NOISE_MULTIPLIER: 1.1,
                    K.MAX_GRAD_NORM: 1.0, K.DP_LOSS: float(1 / step + rng.random() * 0.05), K.SECONDS: 5.0})))
                reports.append(SiteReport(s, "evaluate", 30, plain({
                    K.SITE: s, K.NUM_EXAMPLES: 30, K.LOSS: float(1 / step + rng.random() * 0.1),
                    K.MEAN_AUROC: float(0.5 + 0.3 * step / rounds + rng.random() * 0.05),
                    K.MEAN_R2: float(0.4 * step / rounds - 0.1), K.EPSILON: epsilon[s],
                    **({local_key(K.LOSS): float(1.2 / step)} if phase == "finetune" else {})})))
            participants = Participants(trained=trained, declined=declined, failed=int(step == 2),
                                        # one round shows what the audit page warns about
                                        rejected={"node-9": "node 9 is not a registered site"} if step == 2 else {},
                                        flags={names[0]: "lifetime ε went down from 3.000 to 0.100"} if step == 2 else {},
                                        refused={"hospital-silent": "app 1f2e... is not approved by this site's operator"}
                                        if step == 3 else {})
            db.record_round(study_id, RoundRecord(
                phase, r, started=t0 + step * 10, seconds=9.0 + rng.random(), participants=participants,
                site_reports=reports, model_hash=f"{step:016x}", checkpoint=f"checkpoints/{phase}_round{r}.pt",
                global_metrics=plain({K.LOSS: 1 / step, K.MEAN_AUROC: 0.5 + 0.3 * step / rounds,
                                      K.MEAN_R2: 0.4 * step / rounds - 0.1, lab_key(K.MEAN_AUROC): 0.45 + 0.3 * step / rounds})))
            if generations and phase == "generator":
                db.add_generations(study_id, phase, r, [_generation(rng, ref) for ref in ("ref-1", "ref-2")])
    db.update_study(study_id, status="finished", current_phase="finetune", current_round=per_phase[-1], finished=t0 + step * 10)
    return study_id


def _generation(rng, reference: str) -> dict:
    real = rng.random((16, 64, 64)).astype(np.float32)
    return {"reference": reference, "ecg": npy_bytes(rng.standard_normal((12, 5000))), "generated": npy_bytes(real * 0.8),
            "real": npy_bytes(real), "ssim": 0.5, "psnr": 15.0}
