"""The ``syngeo`` command line: serve the dashboard, analyse files, run specs, submit jobs."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from syngeo.formatting import format_interval, format_number

app = typer.Typer(help="Synaptic Geometry Lab: which geometry did learning use?",
                  no_args_is_help=True, pretty_exceptions_enable=False)
analyze_app = typer.Typer(help="Analyse local weight files in-process.", no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@contextmanager
def progress_bar(enabled: bool = True):  # noqa: ANN201
    """A progress bar on stderr; yields the callback kinds and the engine report to."""
    if not enabled:
        yield lambda fraction, message="": None
        return
    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
               # Kinds report progress in units of their real cost, so rich's rate estimate
               # gives a fair remaining time.
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("Starting", total=1.0)

        def update(fraction: float, message: str = "") -> None:
            bar.update(task, completed=fraction, description=message or "Working")

        yield update


# --- analyse ---------------------------------------------------------------------------------

@analyze_app.command("geometry")
def analyze_geometry(
    before: Annotated[Path, typer.Argument(help="Two-column CSV/TSV (before, after), .npy/.npz, "
                                           "or the 'before' file of a pair.")],
    after: Annotated[Path | None, typer.Argument(help="The 'after' file of a pair.")] = None,
    potentials: Annotated[str | None, typer.Option(
        help="Comma-separated candidates, e.g. 'ne,p1.5,p2'. Default: NE and p = 1.1…3.0.")] = None,
    grid: Annotated[bool, typer.Option("--grid", help="The paper's grid rule instead of the "
                                       "exact ΔCDF.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates (0: no intervals).")] = 200,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    include_all: Annotated[bool, typer.Option(help="Keep biases and normalisation tensors "
                                              "of checkpoints.")] = False,
    noise_absolute: Annotated[float, typer.Option(
        help="Measurement noise: s.d. of additive noise on the weights before and after, in "
        "their unit. Calibrates the tests by simulation.")] = 0.0,
    noise_relative: Annotated[float, typer.Option(
        help="Measurement noise: s.d. of multiplicative noise before and after, as a fraction "
        "of |w|.")] = 0.0,
    calibration: Annotated[int, typer.Option(
        help="With noise: simulated data sets per candidate.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Which potential makes the weight change Gaussian in its dual space?"""
    from pydantic import ValidationError

    from syngeo.io.weights import WeightDataError
    from syngeo.runner import run_local

    spec = {"dataset": [str(before)] + ([str(after)] if after else []),
            "potentials": potentials.split(",") if potentials else None,
            "method": "grid" if grid else "exact", "bootstrap": bootstrap, "seed": seed,
            "device": device, "include_all": include_all,
            "noise_absolute_before": noise_absolute, "noise_absolute_after": noise_absolute,
            "noise_relative_before": noise_relative, "noise_relative_after": noise_relative,
            "calibration": calibration}
    try:
        with progress_bar(err.is_terminal) as update:
            _, result = run_local("geometry", spec, on_progress=update)
    except (WeightDataError, ValidationError, ValueError) as exc:
        raise fail(str(exc)) from None
    summary = result.summary
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    print_geometry(summary)


def print_conclusion(summary: dict[str, Any]) -> None:
    """The result's one-sentence conclusion, first in human output (printed as is: no rich
    markup, whose brackets an interval would be mistaken for)."""
    if summary.get("conclusion"):
        out.print(summary["conclusion"], markup=False, highlight=False)


def print_geometry(summary: dict[str, Any]) -> None:
    print_conclusion(summary)
    pooled = summary["pooled"]
    for layer in summary["layers"] + ([pooled] if len(summary["layers"]) > 1 else []):
        table = Table(title=f"{layer['name']}: {layer['n']:,} weights", title_justify="left")
        for column in ("potential", "ΔCDF", "interval", "fit p", "Δφ"):
            table.add_column(column, justify="left" if column == "potential" else "right")
        best = layer["verdict"]["best"]["key"] if layer["verdict"]["best"] else None
        for c in layer["candidates"]:
            ci = c["delta_cdf_ci"]
            mark = " ◀ best" if c["key"] == best else ""
            table.add_row(c["label"] + mark, _num(c["delta_cdf"]),
                          format_interval(None, ci) if ci else "—", _p(c),
                          _num(c["dual_change"]), style="bold" if mark else None)
        out.print(table)
        if layer["n_zero"] or layer["n_sign_flips"]:
            out.print(f"  {layer['n_zero']:,} pairs with a zero weight are left out; "
                      f"{layer['n_sign_flips']:,} weights change sign.")
    out.print("  — : no interval where ΔCDF may be 0 or a few extreme changes dominate "
              "(the test answers instead).")


def _p(candidate: dict[str, Any]) -> str:
    p = candidate.get("p_value")
    if p is None:
        return "—"
    text = f"<{format_number(p, 2)}" if candidate.get("p_value_bounded") else format_number(p, 2)
    return text + ("" if candidate.get("fits") else " ✗")


def _num(value: float | None) -> str:
    return "—" if value is None else format_number(value)


# --- kinds and specs -------------------------------------------------------------------------

@app.command()
def kinds() -> None:
    """List the experiment kinds."""
    from syngeo.kinds import KINDS

    for kind in KINDS.values():
        out.print(f"[bold]{kind.name}[/]  {kind.title}\n    {kind.description}")


@app.command()
def spec(kind: Annotated[str, typer.Argument(help="Experiment kind, see 'syngeo kinds'.")]) -> None:
    """Print a documented YAML template of a kind's spec."""
    from syngeo.kinds import UnknownKind, get_kind

    try:
        schema = get_kind(kind).schema()
    except UnknownKind as exc:
        raise fail(str(exc)) from None
    lines = [f"kind: {kind}", "spec:"]
    for name, prop in schema["properties"].items():
        bounds = ", ".join(f"{k} {prop[k]}" for k in ("minimum", "maximum", "exclusiveMinimum",
                                                       "exclusiveMaximum") if k in prop)
        doc = prop.get("description", "") + (f" ({bounds})" if bounds else "")
        lines.append(f"  # {doc}" if doc else "  #")
        default = prop.get("default", "<required>")
        value = yaml.safe_dump({name: default}, default_flow_style=True, allow_unicode=True)
        lines.append("  " + value.strip()[1:-1])
    typer.echo("\n".join(lines))


def _load_spec_file(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict) or "kind" not in document or \
            not isinstance(document.get("spec"), dict):
        raise fail(f"{path} must hold 'kind: NAME' and a 'spec:' mapping; "
                   "'syngeo spec KIND' prints a template")
    return document["kind"], document["spec"]


def _paths_relative_to(base: Path, kind_name: str, raw: dict[str, Any]) -> None:
    """Paths in a spec are relative to the spec file. Where the kind's ``dataset`` takes a
    list of files (geometry: before/after), a string is one such file; where it takes one
    string (spine_fit: 'example', an uploaded dataset's id or a file), it is rewritten only
    when a file of that name lies next to the spec."""
    from pydantic import TypeAdapter, ValidationError

    from syngeo.kinds import UnknownKind, get_kind

    value = raw.get("dataset")
    if not isinstance(value, str | list):
        return
    try:
        field = get_kind(kind_name).Spec.model_fields.get("dataset")
        TypeAdapter(field.annotation if field else list[str]).validate_python(["file"])
        takes_list = True
    except (UnknownKind, ValidationError):
        takes_list = False

    def resolve(path: str) -> str:
        return str(base / path) if not Path(path).is_absolute() else path

    if isinstance(value, list):
        raw["dataset"] = [resolve(p) for p in value]
    elif takes_list:
        raw["dataset"] = [resolve(value)]
    elif (base / value).is_file():
        raw["dataset"] = resolve(value)


@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(help="YAML or JSON file with 'kind' and 'spec'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run any experiment kind in-process, from the same spec the API takes."""
    from pydantic import ValidationError

    from syngeo.io.weights import WeightDataError
    from syngeo.kinds import UnknownKind
    from syngeo.runner import run_local

    kind_name, raw = _load_spec_file(spec_file)
    _paths_relative_to(spec_file.resolve().parent, kind_name, raw)
    try:
        with progress_bar(err.is_terminal) as update:
            full_spec, result = run_local(kind_name, raw, on_progress=update)
    except (UnknownKind, WeightDataError, ValidationError, ValueError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"kind": kind_name, "spec": full_spec.model_dump(mode="json"),
                               "summary": result.summary}, indent=2))
    elif kind_name == "geometry":
        print_geometry(result.summary)
    else:
        print_conclusion(result.summary)
        typer.echo(json.dumps(result.summary, indent=2))


# --- server ----------------------------------------------------------------------------------

@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    worker: Annotated[bool, typer.Option(help="Also start a local Celery worker.")] = True,
    allow_remote_without_auth: Annotated[bool, typer.Option(
        help="Listen on a non-loopback address without multi-user mode: anyone who can "
        "reach the port can read, start and delete everything.")] = False,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="Server processes answering requests (one per core serves "
        "many readers of a shared result at once; with PostgreSQL).")] = 1,
) -> None:
    """Start the dashboard (and, by default, a local worker). With no SYNGEO_* settings it
    uses the embedded default: a SQLite file, local artifacts and a filesystem broker."""
    import ipaddress

    import uvicorn

    from syngeo.settings import get_settings
    from syngeo.store.db import engine_for, migrate

    settings = get_settings()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if not (loopback or settings.auth or allow_remote_without_auth):
        raise fail(f"refusing to listen on {host} without accounts: set SYNGEO_AUTH=1 (and "
                   "create users with 'syngeo users add NAME'), or pass "
                   "--allow-remote-without-auth if the network is trusted")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(engine_for(settings.resolved_database_url))
    supervisor = None
    if worker:
        from syngeo.worker.supervisor import WorkerSupervisor

        # Supervised: restarted when it dies; on shutdown it hands its run back to the queue.
        supervisor = WorkerSupervisor(
            [sys.executable, "-m", "celery", "-A", "syngeo.worker.app:celery_app", "worker",
             "--concurrency=1", "--loglevel=INFO", "-n", f"embedded-{os.getpid()}@%h"],
            grace_s=settings.shutdown_grace_s).start()
    err.print(f"Synaptic Geometry Lab on http://{host}:{port}  "
              f"(database: {settings.resolved_database_url.split('://')[0]}, "
              f"broker: {settings.resolved_broker_url.split('://')[0]})")
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that an exception so the
    # worker below is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run("syngeo.backend.app:create_app", factory=True, host=host, port=port,
                    workers=workers)
    finally:
        if supervisor is not None:
            supervisor.stop()


@app.command("worker")
def run_worker(
    concurrency: Annotated[int, typer.Option(help="Parallel tasks (each may use all cores).")] = 1,
) -> None:
    """Start a Celery worker for the configured database and broker. SIGTERM stops it
    gracefully: its runs go back to the queue at their next progress step."""
    # A name of its own (runs and /api/health name their worker), even for two on one host.
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A",
                              "syngeo.worker.app:celery_app", "worker",
                              f"--concurrency={concurrency}", "--loglevel=INFO",
                              "-n", f"worker-{os.getpid()}@%h"])


@app.command()
def submit(
    inputs: Annotated[list[Path], typer.Argument(help="A spec file (.yaml/.json) or one or two "
                                                 "weight files to analyse.")],
    server: Annotated[str, typer.Option(envvar="SYNGEO_SERVER", help="Dashboard URL.")] =
    "http://127.0.0.1:8000",
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = False,
    token: Annotated[str, typer.Option(envvar="SYNGEO_TOKEN", help="API token, for a server "
                                       "in multi-user mode.")] = "",
) -> None:
    """Send an analysis or a spec to a running server and print the run's URL."""
    import httpx

    server = server.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=server, timeout=600, headers=headers) as client:
            if len(inputs) == 1 and inputs[0].suffix.lower() in {".yaml", ".yml", ".json"}:
                kind_name, raw = _load_spec_file(inputs[0])
            else:
                files = [("files", (p.name, p.open("rb"))) for p in inputs]
                response = client.post("/api/datasets", files=files)
                _check(response)
                kind_name, raw = "geometry", {"dataset": response.json()["id"]}
            response = client.post("/api/runs", json={"kind": kind_name, "spec": raw})
            _check(response)
            run_record = response.json()
            out.print(f"{server}/runs/{run_record['id']}")
            if wait:
                with progress_bar(err.is_terminal) as update:
                    while run_record["status"] in {"queued", "running"}:
                        time.sleep(1)
                        run_record = client.get(f"/api/runs/{run_record['id']}").json()
                        update(run_record["progress"], run_record["message"])
                out.print(f"status: {run_record['status']}")
                if run_record["status"] != "succeeded":
                    raise typer.Exit(1)
                print_conclusion(run_record)  # the run record carries its conclusion
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach {server}: {exc}") from None


def _check(response: Any) -> None:
    if response.status_code >= 400:
        try:
            message = response.json().get("detail", response.text)
        except ValueError:
            message = response.text
        raise fail(f"{response.status_code}: {message}")


# --- accounts (multi-user mode) ----------------------------------------------------------------

@app.command("rebuild-pages")
def rebuild_pages(
    every: Annotated[bool, typer.Option("--all", help="Rebuild every stored page, not only "
                                        "missing or outdated ones.")] = False,
) -> None:
    """Build the stored result pages (figures, table, summary) of succeeded runs that have
    none or whose figure code has changed since: after an upgrade, so that no viewer waits
    for a page to be built on its first view."""
    from syngeo.result_pages import figure_version, store_page
    from syngeo.settings import get_settings
    from syngeo.store import crud
    from syngeo.store.artifacts import artifact_store
    from syngeo.store.db import engine_for, migrate, session_factory

    settings = get_settings()
    url = settings.resolved_database_url
    migrate(engine_for(url))
    sessions = session_factory(url)
    store = artifact_store(settings.artifact_location)
    with sessions() as session:
        todo = crud.runs_needing_pages(session, None if every else figure_version())
    failed = 0
    with progress_bar() as report:
        for done, (run_id, kind_name) in enumerate(todo):
            report(done / len(todo), f"run {run_id} ({kind_name})")
            try:
                with sessions.begin() as session:
                    store_page(session, store, run_id, kind_name)
            except Exception as exc:  # one unreadable result does not stop the others
                failed += 1
                err.print(f"[red]run {run_id}:[/] {exc.__class__.__name__}: {exc}")
    err.print(f"built {len(todo) - failed} result page(s) of figure version "
              f"{figure_version()}" + (f"; {failed} failed" if failed else ""))
    if failed:
        raise typer.Exit(1)


users_app = typer.Typer(help="Users and API tokens of a multi-user server (SYNGEO_AUTH=1).",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")


@contextmanager
def _accounts_session():  # noqa: ANN202
    from syngeo.settings import get_settings
    from syngeo.store.db import engine_for, migrate, session_factory

    url = get_settings().resolved_database_url
    migrate(engine_for(url))
    with session_factory(url).begin() as session:
        yield session


def _print_token(name: str, token: str) -> None:
    err.print(f"API token of {name} (shown only now; keep it secret):")
    out.print(token)


@users_app.command("add")
def users_add(name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ -).")],
              ) -> None:
    """Create a user and print their first API token."""
    from syngeo.store import accounts

    with _accounts_session() as session:
        try:
            user = accounts.create_user(session, name)
        except ValueError as exc:
            raise fail(str(exc)) from None
        token = accounts.issue_token(session, user, "created with the user")
    _print_token(name, token)


@users_app.command("token")
def users_token(name: Annotated[str, typer.Argument(help="User name.")],
                label: Annotated[str, typer.Option(help="What the token is for.")] = "",
                ) -> None:
    """Print a new API token for a user (their other tokens keep working)."""
    from syngeo.store import accounts

    with _accounts_session() as session:
        user = accounts.get_user(session, name)
        if user is None:
            raise fail(f"no user {name!r}; create one with 'syngeo users add {name}'")
        token = accounts.issue_token(session, user, label)
    _print_token(name, token)


@users_app.command("revoke")
def users_revoke(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Revoke every API token of a user (logs them out everywhere)."""
    from syngeo.store import accounts

    with _accounts_session() as session:
        user = accounts.get_user(session, name)
        if user is None:
            raise fail(f"no user {name!r}")
        count = accounts.revoke_tokens(session, user)
    err.print(f"revoked {count} token(s) of {name}")


@users_app.command("list")
def users_list() -> None:
    """Users and how many tokens each holds."""
    from syngeo.store import accounts

    table = Table("user", "tokens", "created")
    with _accounts_session() as session:
        for user, tokens in accounts.list_users(session):
            table.add_row(user.name, str(tokens), f"{user.created_at:%Y-%m-%d}")
    out.print(table)


if __name__ == "__main__":
    app()
