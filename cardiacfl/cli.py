"""`cardiacfl`: one command for hospital IT, the coordinating lab and study leads.

Exit codes, for every command: 0 done; 2 bad input (a missing or malformed file, option or config: the message
names it); 1 the work itself failed (a study, the lab, a prediction, a ledger that is not trusted).
"""

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
study_app = typer.Typer(help="Run a federated study (coordinating lab).", no_args_is_help=True)
app.add_typer(study_app, name="study")
site_app = typer.Typer(help="A hospital's node and its own state (runs on site).", no_args_is_help=True)
app.add_typer(site_app, name="site")
lab_app = typer.Typer(help="The coordinating lab's long-lived server (runs at the lab).", no_args_is_help=True)
app.add_typer(lab_app, name="lab")
rundb_app = typer.Typer(help="The lab's run database (SQLite file or PostgreSQL).", no_args_is_help=True)
app.add_typer(rundb_app, name="rundb")
ledger_app = typer.Typer(help="The site's lifetime privacy ledger.", no_args_is_help=True)
site_app.add_typer(ledger_app, name="ledger")
console = Console(stderr=True)
PRESET_HELP = "Model preset: tiny, small, cpu, base or paper (its ECG rate and window, CMR frames and size)."
RUN_FOLDER = Path("runs/demo-study")  # `study run` writes here and `dashboard` reads here unless told otherwise
LAB_STATE_HELP = ("The lab's state folder (logs, checkpoints, run DB, ports); the same folder for `lab start` and "
                  "`study submit/status/stop`.")


def fail(message: str, code: int) -> typer.Exit:
    """One line on stderr naming what went wrong; the caller raises the returned Exit."""
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _check_preset(preset: str) -> None:
    from shared_models.config import PRESETS

    if preset not in PRESETS:
        raise fail(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}", 2)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@app.command()
def synth(
    out: Path = typer.Option(Path("data/demo-cohort"), help="Folder to write the cohort into."),
    layout: str = typer.Option("demo", help="demo: --sites sites of --subjects each; paper: a federation shaped "
                               "like the paper's data (a biobank, an ECG archive, three small hospitals)."),
    scale: float = typer.Option(1.0, min=0.001, help="paper layout: multiplies every site's size."),
    sites: int = typer.Option(3, min=1, help="demo layout: number of sites (kinds cycle: DICOM, NIfTI, ECG-only)."),
    subjects: int = typer.Option(150, min=1, help="demo layout: subjects per site."),
    seed: int = typer.Option(0, help="Seed; the same role and seed write the same cohort."),
    role: str = typer.Option("sites", help="Whose data: sites (the hospitals' private data), public (the lab's "
                             "public pairs) or panel (the lab's held-out panel). Each role has its own seed "
                             "namespace: no two roles share a subject, whatever the seeds."),
    workers: int = typer.Option(0, help="Worker processes (0: up to 4, by CPU count)."),
) -> None:
    """Write a synthetic multi-site ECG-CMR cohort in real formats, with manifests and site configs."""
    from synthetic.cohort import ROLES, SiteSpec, site_profiles, write_layout
    from synthetic.paper_layout import paper_layout

    if role not in ROLES:
        console.print(f"[red]error:[/red] --role must be one of {', '.join(ROLES)}, not {role!r}", highlight=False)
        raise typer.Exit(2)
    if layout == "paper":
        specs = paper_layout(scale)
    elif layout == "demo":
        specs = [SiteSpec(profile, subjects) for profile in site_profiles(sites, seed)]
    else:
        console.print(f"[red]error:[/red] --layout must be demo or paper, not {layout!r}", highlight=False)
        raise typer.Exit(2)
    start = time.perf_counter()
    with _progress() as progress:
        tasks = {spec.profile.site_id: progress.add_task(f"synth {spec.profile.site_id}", total=spec.subjects)
                 for spec in specs}
        configs = write_layout(out, specs, seed=seed, workers=workers or None, role=role,
                               progress=lambda site, done, total: progress.update(tasks[site], completed=done))
    seconds = time.perf_counter() - start
    total = sum(spec.subjects for spec in specs)
    console.print(f"wrote {len(specs)} sites, {total} subjects to {out} in {seconds:.1f} s "
                  f"({total / seconds:.1f} subjects/s)")
    for spec, config in zip(specs, configs):
        kind = "ECG + CMR" if spec.profile.cmr_format else "ECG only"
        console.print(f"  {config}: {spec.subjects} subjects, {kind}")


@data_app.command("check")
def data_check(
    site_config: Path = typer.Option(..., "--site-config", help="The site's TOML config."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    preset: str = typer.Option("small", help=PRESET_HELP),
) -> None:
    """Validate a site end to end (manifest, every ECG and CMR) and fill its preprocessing cache.

    Exits 1 only when nothing usable remains; bad records are listed with file and reason."""
    from sitedata.model_geometry import check_model_geometry
    from sitedata.site_config import SiteConfigError, load_site_config
    from sitedata.site_data import prepare_site

    _check_preset(preset)
    try:
        config = load_site_config(site_config)
        check_model_geometry(config, preset)
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


@app.command("train-central")
def train_central_command(
    data: Path = typer.Option(Path("data/demo-cohort"), help="Cohort folder (with site_configs/), a folder of site configs, or one config."),
    out: Path = typer.Option(Path("runs/central"), help="Folder for checkpoints, metrics.json and plots."),
    phase: list[str] = typer.Option(["all"], help="pretrain, generator, finetune or all (repeatable; run in that order)."),
    preset: str = typer.Option("small", help=PRESET_HELP),
    init: Path | None = typer.Option(None, help="Start from this checkpoint instead of a fresh model."),
    epochs: int = typer.Option(0, min=0, help="Epochs per phase (0: the phase defaults 20/30/20)."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    batch_size: int = typer.Option(32, min=2, help="Batch size."),
    label_fraction: float = typer.Option(1.0, min=0.01, max=1.0, help="Share of labelled training samples fine-tuning sees."),
    finetune_mode: str = typer.Option("full", help="full (encoder + heads) or linear (heads only: a linear probe)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, help="Seed of the model's initialisation and the data order."),
) -> None:
    """Centralized reference training on the pooled cohort (the upper bound for the federated study)."""
    from cardiacfl.central import train_central
    from protocol.jsonable import finite_or_null
    from shared_models.training import PHASES

    _check_preset(preset)
    phases = list(PHASES) if "all" in phase else [p for p in PHASES if p in phase]
    unknown = set(phase) - set(PHASES) - {"all"}
    if unknown or not phases:
        console.print(f"[red]error:[/red] --phase {', '.join(sorted(unknown)) or '(none)'}: expected pretrain, generator, finetune or all")
        raise typer.Exit(2)
    with _progress() as progress:
        tasks: dict[str, int] = {}

        def update(name: str, done: int, total: int, loss: float) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, description=f"{name} loss {loss:.3f}")

        summary = train_central(data, out, phases=phases, preset=preset, init=init,
                                epochs={p: epochs for p in phases} if epochs else None, lr=lr, batch_size=batch_size,
                                label_fraction=label_fraction, finetune_mode=finetune_mode, seed=seed, device=device,
                                progress=update)
    _print_central_summary(finite_or_null(summary))
    console.print(f"checkpoints, metrics.json and plots in {out}")


def _print_central_summary(summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"centralized {summary['preset']} (train samples {summary['train_samples']})")
    for column in ("phase", "test metric", "value"):
        table.add_column(column)
    for phase, record in summary["phases"].items():
        for key, value in record["test"].items():
            if "/" not in key and value is not None:
                table.add_row(phase, key, f"{value:.3f}")
    Console().print(table)


@app.command()
def predict(
    checkpoint: Path = typer.Option(..., help="A checkpoint written by training (fine-tuned for useful heads)."),
    ecg: Path = typer.Option(..., help="WFDB record (path with or without .hea)."),
    out: Path | None = typer.Option(None, help="Folder for the generated CMR clip (GIF + PNG frames)."),
    as_json: bool = typer.Option(False, "--json", help="Print the prediction as JSON on stdout."),
    allow_reduced_leads: bool = typer.Option(False, help="Score records missing some of the 12 leads (less reliable)."),
) -> None:
    """One ECG -> cardiac-function indicators, disease probabilities and a generated CMR clip."""
    import dataclasses
    import json

    from cardiacfl.predict import predict_from_checkpoint
    from sitedata.ecg_ingest import EcgError
    from shared_models.targets import INDICATORS

    if not checkpoint.is_file():
        raise fail(f"checkpoint {checkpoint} not found", 2)
    try:
        result = predict_from_checkpoint(checkpoint, ecg, out=out, allow_reduced_leads=allow_reduced_leads)
    except (EcgError, OSError, ValueError) as err:  # the record given cannot be read or scored
        raise fail(f"{ecg}: {err}", 2)
    if as_json:
        sys.stdout.write(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
        return
    from rich.table import Table

    con = Console()
    con.print(f"[bold]{result.record}[/bold]: {result.windows} window(s), leads {' '.join(result.leads_used)}, "
              f"age {result.demographics['age']}, sex(male) {result.demographics['sex_male']}")
    table = Table("indicator", "estimate", "unit")
    for name, value in result.indicators.items():
        table.add_row(name, f"{value:.1f}", INDICATORS[name])
    con.print(table)
    table = Table("disease", "probability")
    for name, value in result.disease_probability.items():
        table.add_row(name, f"{value:.2f}")
    con.print(table)
    if result.clip_files:
        con.print(f"generated CMR clip: {result.clip_files['gif']} (frames in {result.clip_files['frames']})")
    if result.checkpoint_phase != "finetune":
        con.print(f"[yellow]note:[/yellow] checkpoint phase is {result.checkpoint_phase!r}; the heads are only trained after 'finetune'")


provision_app = typer.Typer(help="Study kits: the lab's and one per hospital (run at the lab).")
app.add_typer(provision_app, name="provision")


@provision_app.callback(invoke_without_command=True)
def provision(
    ctx: typer.Context,
    study: str = typer.Option("", help="Study name (written into every kit)."),
    lab_address: str = typer.Option("", help="HOST[:PORT] hospitals connect to (the Fleet gateway; port 9092 by default)."),
    site: list[str] = typer.Option([], "--site", help="A hospital's site id (repeat the option, one per hospital)."),
    out: Path = typer.Option(Path("kits"), help="Folder for the lab's kit and one archive per hospital."),
) -> None:
    """Write the lab's kit (CA, SuperLink certificate for the lab's address, site keys) and one archive per
    hospital; re-running with more sites adds them and keeps every earlier kit valid."""
    if ctx.invoked_subcommand is not None:
        return
    if not (study and lab_address and site):
        raise fail("--study, --lab-address and at least one --site are required", 2)
    from cardiacfl.provision import provision_study

    paths = provision_study(out, study, lab_address, site)
    console.print(f"lab kit (keep at the lab): {paths['lab']} (SuperLink certificate for {lab_address}"
                  f"{'' if ':' in lab_address else ':9092'})", highlight=False)
    for site, archive in paths["archives"].items():
        console.print(f"  hand to {site}: {archive}", highlight=False)


@provision_app.command("revoke")
def provision_revoke(
    site: str = typer.Option(..., help="The site whose key the lab stops accepting."),
    out: Path = typer.Option(Path("kits"), help="The folder `provision` wrote."),
) -> None:
    """Remove a site's key from the lab's kit (refused from the lab's next start; unregistered by `lab start`)."""
    from cardiacfl.provision import revoke

    try:
        revoke(out, site)
    except FileNotFoundError as err:
        raise fail(str(err), 2)
    console.print(f"{site}: key revoked (recorded in {out / 'lab' / 'revoked.txt'})", highlight=False)


@study_app.command("run")
def study_run(
    study: Path = typer.Option(Path("studies/demo.toml"), help="Study config."),
    work: Path = typer.Option(RUN_FOLDER, help="Folder for keys, logs, checkpoints and the run database (`dashboard` reads WORK/study.db)."),
    reference_panel: Path | None = typer.Option(None, help="Site config of the lab's reference panel (generation gallery)."),
    insecure: bool = typer.Option(False, "--insecure", help="DEBUG ONLY: no TLS and no site authentication."),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest unfinished study of this name in WORK from its last finished round."),
) -> None:
    """Start a SuperLink and one SuperNode per site on loopback, run the study, show progress, stop everything."""
    from cardiacfl.deployment import run_study

    config = _load_study(study)
    if insecure:
        console.print("[yellow]warning: --insecure: traffic is unencrypted and sites are not authenticated[/yellow]")
    _run_with_progress(config, lambda status, update: run_study(
        config, work, insecure=insecure, reference_panel=reference_panel, resume=resume, status=status, progress=update))


@study_app.command("simulate")
def study_simulate(
    study: Path = typer.Option(Path("studies/demo.toml"), help="Study config."),
    work: Path = typer.Option(Path("runs/simulation"), help="Folder for logs, checkpoints and the run database."),
    site_configs: str = typer.Option("", help="A glob of site configs, one virtual site each (default: the study's sites)."),
    sites: int = typer.Option(0, min=0, help="Use the first N site configs (0: all)."),
    reference_panel: Path | None = typer.Option(None, help="Site config of the lab's reference panel."),
    cpus_per_site: int = typer.Option(1, min=1, help="CPUs Ray gives each virtual site (1 on 2 cores runs 2 at once)."),
) -> None:
    """Run the same ServerApp and ClientApp on Flower's Simulation Engine: one virtual site per site config."""
    import glob

    from cardiacfl.simulation import simulate_study

    config = _load_study(study)
    configs = sorted(Path(p) for p in glob.glob(site_configs)) if site_configs else list(config.sites)
    if site_configs and not configs:
        raise fail(f"--site-configs {site_configs!r} matches no file", 2)
    if sites > len(configs):
        raise fail(f"--sites {sites}: only {len(configs)} site configs", 2)
    configs = configs[:sites] if sites else configs
    _run_with_progress(config, lambda status, update: simulate_study(
        config, work, site_configs=configs, reference_panel=reference_panel, cpus_per_site=cpus_per_site,
        status=status, progress=update))


@lab_app.command("start")
def lab_start(
    kit: Path = typer.Option(..., help="The lab's kit folder (`provision` wrote it as OUT/lab)."),
    lab_state: Path = typer.Option(Path("lab-state"), help=LAB_STATE_HELP),
    db: str = typer.Option("", help="Run database: SQLAlchemy URL or SQLite path (default: LAB_STATE/study.db)."),
    fleet_address: str = typer.Option("", help="HOST[:PORT] to serve the Fleet API on (default: the kit's lab address)."),
    db_reader: str = typer.Option("", help="PostgreSQL role the dashboard connects as: granted read-only access."),
) -> None:
    """Run the SuperLink (loopback, TLS, site authentication) and the Fleet gateway, register the kit's site
    keys, and serve until Ctrl-C or SIGTERM. The run database is created or upgraded first."""
    from sqlalchemy.exc import SQLAlchemyError

    from cardiacfl.lab import start_lab_service

    try:
        start_lab_service(kit, lab_state, db=db or None, fleet_listen=fleet_address or None, db_reader=db_reader or None,
                          status=lambda line: console.print(line, highlight=False, soft_wrap=True))
    except (FileNotFoundError, ValueError) as err:  # the kit, the address or the database URL given
        raise fail(str(err), 2)
    except (RuntimeError, SQLAlchemyError) as err:
        raise fail(str(err), 1)


@rundb_app.command("upgrade")
def rundb_upgrade(db: str = typer.Option(..., help="Run database: SQLAlchemy URL or SQLite path.")) -> None:
    """Create the run database's tables or bring an older database up to the newest schema, in place."""
    from rundb.migrate import upgrade
    from rundb.url import display_url

    console.print(f"{display_url(db)} is at schema revision {upgrade(db)}", highlight=False)


@rundb_app.command("grant-reader")
def rundb_grant_reader(
    db: str = typer.Option(..., help="PostgreSQL URL, connected as the tables' owner (password: CARDIACFL_DB_PASSWORD_FILE)."),
    role: str = typer.Option("cardiacfl_dashboard", help="The dashboard's database role."),
    password_file: Path = typer.Option(None, help="Create the role (or reset its password) with this file's password."),
) -> None:
    """Give the dashboard's role SELECT on every run-database table (and on tables added later), nothing more."""
    from rundb.access import grant_reader

    try:
        password = password_file.read_text().strip() if password_file else None
        url = grant_reader(db, role, password)
    except (OSError, ValueError) as err:
        raise fail(str(err), 2)
    console.print(f"role {role} may read the run database: start the dashboard with --db {url}", highlight=False)


@study_app.command("submit")
def study_submit(
    study: Path = typer.Option(..., help="Study config."),
    lab_state: Path = typer.Option(Path("lab-state"), help=LAB_STATE_HELP),
    reference_panel: Path | None = typer.Option(None, help="Site config of the lab's reference panel."),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest unfinished study of this name."),
) -> None:
    """Send a study to a running lab (`lab start`)."""
    from cardiacfl.lab import submit_study

    try:
        run_id, digest = submit_study(lab_state, _load_study(study), reference_panel, resume=resume)
    except FileNotFoundError as err:
        raise fail(str(err), 2)
    except RuntimeError as err:
        raise fail(str(err), 1)
    console.print(f"app {digest}: each site runs it only once its operator approved this hash "
                  "(`cardiacfl site approve HASH --site-config ...`)", highlight=False)
    sys.stdout.write(f"{run_id}\n")


@study_app.command("status")
def study_status_command(
    lab_state: Path = typer.Option(Path("lab-state"), help=LAB_STATE_HELP),
    follow: bool = typer.Option(False, "--follow", help="Keep printing until the study ends."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """The latest study at a running lab: status, phase and round, and Flower's run status."""
    import json

    from cardiacfl.lab import study_status

    while True:
        try:
            snapshot = study_status(lab_state)
        except FileNotFoundError as err:
            raise fail(str(err), 2)
        if as_json:
            sys.stdout.write(json.dumps(snapshot) + "\n")
        else:
            console.print(_status_line(snapshot), highlight=False)
        if not follow or snapshot.get("status") in ("finished", "failed", "interrupted"):
            break
        time.sleep(5)


def _status_line(snapshot: dict) -> str:
    line = (f"{snapshot.get('study', '-')} #{snapshot.get('id', '-')}: {snapshot.get('status', 'no study yet')}, "
            f"{snapshot.get('phase') or '-'} round {snapshot.get('round', 0)}/{snapshot.get('total_rounds', '?')}")
    if snapshot.get("reason"):
        line += f"; {snapshot['reason']}"
    if (flower := snapshot.get("flower_run")):
        line += f"; Flower run {flower['id']}: {flower['status']}"
    return line


@study_app.command("stop")
def study_stop(lab_state: Path = typer.Option(Path("lab-state"), help=LAB_STATE_HELP)) -> None:
    """Stop the latest submitted study at a running lab and mark it interrupted."""
    from cardiacfl.lab import stop_study

    try:
        run_id = stop_study(lab_state)
    except FileNotFoundError as err:
        raise fail(str(err), 2)
    except RuntimeError as err:
        raise fail(str(err), 1)
    console.print(f"stopped Flower run {run_id}")


@site_app.command("start")
def site_start(
    kit: Path = typer.Option(..., help="This hospital's kit from the lab: the archive (kits/<site>.tar.gz) or its unpacked folder."),
    site_config: Path = typer.Option(..., "--site-config", help="The site's TOML config."),
    threads: int = typer.Option(0, min=0, help="torch threads for the site's worker (0: torch's choice)."),
    approve_app: list[str] = typer.Option([], "--approve", help="Approve this app hash first (as `site approve`; "
                                                                "for containers). Repeatable."),
) -> None:
    """Check the data, then run this hospital's node (SuperNode + warm worker) against the lab, reconnecting
    with backoff while the lab is unreachable, until Ctrl-C or SIGTERM."""
    from cardiacfl.hospital import start_site
    from client.app_gate import approve, approved_path
    from sitedata.site_config import SiteConfigError, load_site_config

    try:
        for digest in approve_app:
            approve(approved_path(load_site_config(site_config).state_dir), digest, note="site start --approve")
        code = start_site(kit, site_config, threads=threads or None,
                          status=lambda line: console.print(line, highlight=False, soft_wrap=True))
    except (SiteConfigError, FileNotFoundError, ValueError) as err:
        raise fail(str(err), 2)
    raise typer.Exit(code)


@site_app.command("approve")
def site_approve(
    app_ref: str = typer.Argument(..., metavar="FAB", help="The app to approve: its FAB file, its source folder, or the "
                                                           "SHA-256 the lab printed when it submitted the study."),
    site_config: Path = typer.Option(..., "--site-config", help="The site's TOML config."),
    note: str = typer.Option("", help="Why (kept with the approval)."),
    revoke: bool = typer.Option(False, "--revoke", help="Take the approval back instead."),
) -> None:
    """Let this site's node run one app (by its FAB hash): the node refuses every other app before any of its code
    runs or its files are written."""
    from client.app_gate import app_hash, approve, approved_path, revoke_approval
    from sitedata.site_config import SiteConfigError, load_site_config

    try:
        path = approved_path(load_site_config(site_config).state_dir)
        digest = app_hash(app_ref)
    except (SiteConfigError, ValueError) as err:
        raise fail(str(err), 2)
    if revoke:
        found = revoke_approval(path, digest)
        console.print(f"app {digest}: approval {'revoked' if found else 'was not on the list'} ({path})", highlight=False)
        return
    approve(path, digest, note=note or app_ref)
    console.print(f"app {digest} approved for this site ({path}); a running node applies it to the next message",
                  highlight=False)


@site_app.command("approved")
def site_approved(site_config: Path = typer.Option(..., "--site-config", help="The site's TOML config.")) -> None:
    """The apps this site's node may run."""
    from client.app_gate import approved_apps, approved_path
    from sitedata.site_config import SiteConfigError, load_site_config

    try:
        path = approved_path(load_site_config(site_config).state_dir)
    except SiteConfigError as err:
        raise fail(str(err), 2)
    entries = approved_apps(path)
    for entry in entries:
        console.print(f"{entry['hash']}  {entry['approved_at']}  {entry['operator']}  {entry['note']}", highlight=False)
    if not entries:
        console.print(f"no app approved ({path}): the node refuses every study", highlight=False)


@site_app.command("status")
def site_status_command(
    site_config: Path = typer.Option(..., "--site-config", help="The site's TOML config."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """The site's privacy spent (lifetime), its last rounds, and whether its node is running."""
    import json

    from cardiacfl.hospital import site_status

    status = site_status(site_config)
    if as_json:
        sys.stdout.write(json.dumps(status) + "\n")
        return
    console.print(f"{status['site']}: node {status['node']}; ε spent {status.get('epsilon', float('nan')):.3f} of "
                  f"{status['budget']:g}{'; ledger ' + status['ledger'] if 'ledger' in status else ''}", highlight=False)
    for entry in status.get("last_rounds", []):
        console.print(f"  {entry.get('study')} {entry.get('phase')} round {entry.get('round')}: {entry['what']}"
                      f"{' (' + entry['reason'] + ')' if entry.get('reason') else ''}", highlight=False)
    console.print(f"  log: {status['log']}", highlight=False)


def _load_study(path: Path):
    from server.study_config import StudyConfigError, load_study_config

    try:
        return load_study_config(path)
    except StudyConfigError as err:
        raise fail(str(err), 2)


def _run_with_progress(config, run) -> None:
    """Call run(status, update) under a progress bar over the study's rounds, then print the summary."""
    start = time.perf_counter()
    offsets, total = {}, 0
    for plan in config.phases:
        offsets[plan.name] = total
        total += plan.rounds
    with _progress() as progress:
        task = progress.add_task("study", total=total)
        done: dict[str, int] = {}

        def update(snapshot: dict) -> None:
            if snapshot["phase"]:
                done["value"] = offsets.get(snapshot["phase"], 0) + max(snapshot["round"] - 1, 0)
            progress.update(task, completed=done.get("value", 0),
                            description=f"{snapshot['phase'] or 'starting'} round {snapshot['round']} ({snapshot['status']})")

        try:
            paths = run(lambda line: progress.console.print(line), update)
        except (RuntimeError, TimeoutError, ValueError) as err:
            console.print(f"[red]study failed:[/red] {err}", highlight=False)
            raise typer.Exit(1)
        progress.update(task, completed=total)
    console.print(f"study finished in {time.perf_counter() - start:.0f} s; run database {paths.db}")
    from cardiacfl.summary import print_summary

    print_summary(paths.db)


@app.command("app-hash")
def app_hash_command(
    app_folder: Path = typer.Argument(None, help="The app folder (default: this installed project, the app `study submit` sends)."),
) -> None:
    """Print the SHA-256 of the app's FAB: what `study submit` prints and each hospital approves (`site approve`,
    `site start --approve`). Run it in the lab's image to know the hash before a study is submitted."""
    from cardiacfl.deployment import REPO
    from client.app_gate import app_hash

    folder = app_folder or REPO
    if not (folder / "pyproject.toml").is_file():
        raise fail(f"{folder}: not an app folder (no pyproject.toml)", 2)
    sys.stdout.write(app_hash(folder) + "\n")


@app.command()
def dashboard(
    db: str = typer.Option(str(RUN_FOLDER / "study.db"), help="Run database: a SQLite file or an SQLAlchemy URL (default: what `study run` writes)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default; use a TLS reverse proxy beyond it)."),
    port: int = typer.Option(8501, help="Port to serve on."),
    utility: Path | None = typer.Option(None, help="utility.json of benchmarks/privacy_utility.py: adds the References page."),
) -> None:
    """Start the Streamlit study dashboard (study leads sign in with the configured password)."""
    import os
    import subprocess

    env = dict(os.environ, CARDIACFL_RUN_DB=db if "://" in db else str(Path(db).resolve()))
    if utility is not None:
        env["CARDIACFL_UTILITY_JSON"] = str(utility.resolve())
    if not env.get("CARDIACFL_DASHBOARD_PASSWORD") and not env.get("CARDIACFL_DASHBOARD_PASSWORD_FILE"):
        console.print("[yellow]note:[/yellow] set CARDIACFL_DASHBOARD_PASSWORD_FILE or CARDIACFL_DASHBOARD_PASSWORD (or "
                      "[dashboard] password in Streamlit secrets); "
                      "the dashboard shows no study data without it")
    app_path = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    console.print(f"dashboard on http://{host}:{port} reading {db}")
    raise typer.Exit(subprocess.call([sys.executable, "-m", "streamlit", "run", str(app_path), "--server.address", host,
                                      "--server.port", str(port), "--server.headless", "true",
                                      "--browser.gatherUsageStats", "false",
                                      "--client.toolbarMode", "viewer"], env=env))  # no developer menu for study leads



@ledger_app.command("verify")
def ledger_verify(site_config: Path = typer.Option(..., "--site-config", help="The site's TOML config.")) -> None:
    """Check both ledger copies against their hash chains and each other; print the ε spent."""
    from client.privacy_ledger import LedgerTampered
    from client.site_round import open_ledger
    from sitedata.site_config import load_site_config

    config = load_site_config(site_config)
    try:
        with open_ledger(config) as ledger:
            console.print(f"{config.site_id}: ledger intact ({len(ledger.entries)} entries, {len(ledger.rounds)} rounds); "
                          f"ε spent {ledger.epsilon:.3f} of {config.privacy.target_epsilon:g} at δ={config.privacy.target_delta:g}")
    except LedgerTampered as err:
        console.print(f"[red]{config.site_id}: ledger not trusted:[/red] {err}", highlight=False)
        raise typer.Exit(1)


@ledger_app.command("reset")
def ledger_reset(
    site_config: Path = typer.Option(..., "--site-config", help="The site's TOML config."),
    reason: str = typer.Option(..., "--reason", help="Why: recorded in the new ledger's first entry."),
) -> None:
    """Start a new ledger after a refused one. The old copies are kept beside it; spending restarts at zero,
    which the lab's server sees and flags. Prefer restoring an intact copy when there is one."""
    from client.privacy_ledger import reset_ledger
    from sitedata.site_config import load_site_config

    config = load_site_config(site_config)
    try:
        path = reset_ledger(config.ledger_path, site_id=config.site_id, reason=reason, copy_path=config.ledger_copy_path)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2)
    console.print(f"{config.site_id}: new ledger at {path} (reset recorded: {reason!r})")


if __name__ == "__main__":
    app()
