"""The data report of a site check: every rejected record with its file and reason, and counts per
modality, split and label. Shown to hospital IT; it stays on site (it names files and subjects)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class RecordProblem:
    subject_id: str
    file: str
    modality: str  # manifest | ecg | cmr
    reason: str
    severity: str = "rejected"  # rejected: the record (or modality) is not used; warning: used, partly

    def line(self) -> str:
        """One plain-text line that starts with its severity in words (also when piped or logged)."""
        return f"{self.severity.upper()}: {self.subject_id or '-'} {self.modality}: {self.reason} ({self.file})"


@dataclass
class DataReport:
    site_id: str
    manifest: str
    manifest_rows: int = 0
    problems: list[RecordProblem] = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # filled by the site preparation
    heart_offsets_mm: dict = field(default_factory=dict)  # subject -> [row, col] of the LV found, from the image centre

    def heart_line(self) -> str:
        """Where the heart was found (cmr.roi_center = "auto"); the subjects not localised are warnings."""
        if not self.heart_offsets_mm:
            return ""
        distance = np.hypot(*np.asarray(list(self.heart_offsets_mm.values()), dtype=float).T)
        return (f"heart localised in {len(distance)} CMR studies: the LV sat {np.median(distance):.1f} mm from the "
                f"image centre (median; at most {distance.max():.1f} mm) and each clip is cut around it")

    @property
    def usable_subjects(self) -> int:
        return int(sum(self.counts.get("subjects_with_ecg", {}).values()))

    @property
    def rejected(self) -> list[RecordProblem]:
        return [p for p in self.problems if p.severity == "rejected"]

    def summary(self) -> str:
        """Subjects and files counted apart: a CMR that failed leaves its subject in, as ECG-only."""
        subjects_out = {p.subject_id or p.file for p in self.rejected if p.modality in ("manifest", "ecg")}
        cmr_out = [p for p in self.rejected if p.modality == "cmr"]
        warnings = [p for p in self.problems if p.severity != "rejected"]
        return (f"{self.manifest_rows} manifest rows: {self.usable_subjects} subjects usable, {len(subjects_out)} rejected "
                f"(no usable ECG or manifest row); {len(cmr_out)} CMR studies not used (those subjects kept as "
                f"ECG-only); {len(warnings)} warnings on records that are used")

    def to_json(self) -> str:
        payload = asdict(self)
        payload["usable_subjects"] = self.usable_subjects
        return json.dumps(payload, indent=2, sort_keys=False)

    def render(self, console) -> None:
        """Human-readable report on a rich console."""
        from rich.table import Table

        console.print(f"[bold]Site {self.site_id}[/bold] — manifest {self.manifest} ({self.manifest_rows} rows)")
        table = Table(title="Usable data", show_header=True)
        table.add_column("what")
        for split in ("train", "val", "test", "total"):
            table.add_column(split, justify="right")
        for label, key in [("subjects with ECG", "subjects_with_ecg"), ("ECG windows", "ecg_windows"),
                           ("paired ECG-CMR", "paired"), ("ECG-only", "ecg_only"), ("reduced-lead ECG", "reduced_lead")]:
            per_split = self.counts.get(key, {})
            table.add_row(label, *(str(per_split.get(s, 0)) for s in ("train", "val", "test")), str(sum(per_split.values())))
        console.print(table)

        labels = Table(title="Labels (usable subjects)")
        labels.add_column("label")
        labels.add_column("labelled", justify="right")
        labels.add_column("positive", justify="right")
        for name, stats in self.counts.get("labels", {}).items():
            labels.add_row(name, str(stats["labelled"]), "" if stats.get("positive") is None else str(stats["positive"]))
        console.print(labels)

        from rich.markup import escape

        console.print(escape(self.summary()), style="bold", highlight=False)
        if self.heart_line():
            console.print(escape(self.heart_line()), highlight=False)
        for problem in self.problems:  # file names and reasons may hold [brackets]: printed as text, not markup
            console.print(escape(problem.line()), style="red" if problem.severity == "rejected" else "yellow",
                          highlight=False, soft_wrap=True)
        if not self.problems:
            console.print("no problems found", style="green")
