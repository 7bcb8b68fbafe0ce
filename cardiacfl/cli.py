"""`cardiacfl`: one command for hospital IT, the coordinating lab and study leads."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help="Federated CardiacNets: site data, synthetic cohorts, training and studies.", no_args_is_help=True)
data_app = typer.Typer(help="Check and prepare a site's data (runs on site; data never leaves it).", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@app.command()
def synth(
    out: Path = typer.Option(Path("data/demo-cohort"), help="Folder to write the cohort into."),
    sites: int = typer.Option(3, min=1, help="Number of sites (kinds cycle: DICOM, NIfTI, ECG-only)."),
    subjects: int = typer.Option(150, min=1, help="Subjects per site."),
    seed: int = typer.Option(0, help="Seed; the same seed writes the same cohort."),
    workers: int = typer.Option(0, help="Worker processes (0: up to 4, by CPU count)."),
) -> None:
    """Write a synthetic multi-site ECG-CMR cohort in real formats, with manifests and site configs."""
    from synthetic.cohort import generate_cohort

    start = time.perf_counter()
    with _progress() as progress:
        tasks: dict[str, int] = {}

        def update(site: str, done: int, total: int) -> None:
            if site not in tasks:
                tasks[site] = progress.add_task(f"synth {site}", total=total)
            progress.update(tasks[site], completed=done)

        configs = generate_cohort(out, n_sites=sites, subjects=subjects, seed=seed, progress=update, workers=workers or None)
    console.print(f"wrote {sites} sites x {subjects} subjects to {out} in {time.perf_counter() - start:.1f} s")
    for config in configs:
        console.print(f"  site config: {config}")


@data_app.command("check")
def data_check(
    site_config: Path = typer.Option(..., "--site-config", help="The site's TOML config."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Validate a site end to end (manifest, every ECG and CMR) and fill its preprocessing cache.

    Exits 1 only when nothing usable remains; bad records are listed with file and reason."""
    from client.site_config import SiteConfigError, load_site_config
    from client.site_data import prepare_site

    try:
        config = load_site_config(site_config)
    except SiteConfigError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False)
        raise typer.Exit(2)
    with _progress() as progress:
        task = progress.add_task(f"check {config.site_id}", total=None)
        site = prepare_site(config, progress=lambda done, total: progress.update(task, completed=done, total=total))
    report = site.report
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        report.render(Console())
    if report.usable_subjects == 0:
        console.print(f"[red]site {config.site_id}: nothing usable[/red]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
