"""The ``covers`` command line: worker, broker, dev, publish, render."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError
from rich.console import Console

from streams import embedded, logs
from streams.settings import ConfigError, Settings, load

cli = typer.Typer(help="Book-cover stream processor.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
log = logging.getLogger("covers.cli")


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    """A ConfigError ends the command with its message and exit code 2."""
    try:
        yield
    except ConfigError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from None


def _settings(**overrides: object) -> Settings:
    with _config_errors():
        return load(**overrides)


@cli.command()
def worker() -> None:
    """Run the Faust worker against KAFKA_BROKERS (the seed default is kafka:9092)."""
    import faust

    from streams.app import create_app

    settings = _settings()
    logging.config.dictConfig(logs.config(settings.log_format, settings.log_level))
    _preflight(settings)
    if settings.enable_metrics:
        _serve_metrics(settings)
    app = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level, quiet=settings.log_format == "json",
                 logging_config=logs.config(settings.log_format, settings.log_level),
                 ).execute_from_commandline()


def _serve_metrics(settings: Settings) -> None:
    """Prometheus ``/metrics`` on ``METRICS_HOST:METRICS_PORT``, in a background thread."""
    from prometheus_client import start_http_server

    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    except OSError as exc:
        console.print(f"[red]METRICS_PORT: cannot listen on {settings.metrics_host}:"
                      f"{settings.metrics_port} ({exc}); set another port or "
                      "ENABLE_METRICS=false")
        raise typer.Exit(2) from None


def _preflight(settings: Settings) -> None:
    """Stop with a clear message when the object store or the catalog database is unusable
    (no such bucket, database down, table without the layout's columns); apply the catalog
    migrations first when ``CATALOG_MIGRATE`` says so."""
    from processors import errors
    from streams.catalog import open_catalog
    from streams.store import open_store

    async def check() -> None:
        store = open_store(settings)
        catalog = open_catalog(settings.catalog_url, settings.catalog_layout)
        try:
            await store.check()
            if settings.catalog_migrate:
                for applied in await catalog.migrate():
                    log.info("catalog migration applied", extra={"migration": applied})
            await catalog.check()
        except errors.TransientError as exc:
            raise ConfigError(f"CATALOG_URL: {exc.message}") from None
        finally:
            await store.close()
            await catalog.close()

    with _config_errors():
        asyncio.run(check())


@cli.command()
def shim() -> None:
    """The HTTP shim (frozen /health and /process, /v2) on SHIM_HOST:SHIM_PORT."""
    import uvicorn

    from streams.shim import Shim

    settings = _settings()
    app = Shim(settings).app
    uvicorn.run(app, host=settings.shim_host, port=settings.shim_port,
                log_config=logs.config(settings.log_format, settings.log_level),
                proxy_headers=True, timeout_graceful_shutdown=10)


@cli.command()
def healthcheck(
    url: Annotated[str, typer.Option(help="Probe URL; default: the worker's /healthz")] = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer")] = 3,
) -> None:
    """Exit 0 when the probe answers 200, 1 otherwise (the container image's HEALTHCHECK)."""
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    settings = _settings()
    url = url or f"http://127.0.0.1:{settings.worker_web_port}/healthz"
    try:
        with urlopen(url, timeout=timeout) as resp:
            ok = resp.status == 200
    except HTTPError as exc:  # answered, but not 200
        exc.close()
        console.print(f"[red]{url}: {exc.code}")
        raise typer.Exit(1) from None
    except (URLError, OSError) as exc:
        console.print(f"[red]{url}: {exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(0 if ok else 1)


@cli.command()
def broker(port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 9092) -> None:
    """Run the embedded Kafka-compatible broker alone (memory only) until Ctrl-C."""
    workdir = Path(tempfile.mkdtemp(prefix="covers-broker-"))
    service = embedded.broker(workdir, port).start()
    console.print(f"broker on {embedded.LOOPBACK}:{port} (KAFKA_BROKERS={embedded.LOOPBACK}:"
                  f"{port}); log in {service.log_path}")
    try:
        assert service.proc is not None
        service.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


@cli.command()
def dev(
    demo: Annotated[bool, typer.Option(help="Serve and publish the bundled sample covers")] = True,
    exit_when_done: Annotated[bool, typer.Option(help="Exit once every sample is done")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the samples")] = 180,
    data_dir: Annotated[Path, typer.Option(help="Where the store and catalog live")] = Path(
        "data"),
) -> None:
    """Embedded stack (broker, Redis, local store, SQLite catalog) plus a worker."""
    # Ctrl-C or SIGTERM (also when started in the background, where SIGINT is ignored) stop the
    # worker and the embedded services through the same clean-up path.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    user_env = dict(os.environ)
    with embedded.embedded_stack(user_env) as stack:
        defaults = stack.env()
        defaults["STORAGE_URL"] = (data_dir.resolve() / "store").as_uri()
        defaults["CATALOG_URL"] = f"sqlite:///{data_dir.resolve() / 'catalog.db'}"
        defaults["WORKER_DATA_DIR"] = str(data_dir.resolve() / "faust")
        defaults["ALLOW_PRIVATE_SOURCES"] = "true"  # the samples are served on loopback
        defaults["APP_ID"] = f"book-covers-dev-{int(time.time())}"
        env = {**defaults, **user_env}
        settings = _settings(**{k.lower(): v for k, v in env.items()
                                if k.lower() in Settings.model_fields})
        log_path = stack.workdir / "worker.log"
        console.print(f"[bold]embedded stack[/]: KAFKA_BROKERS={settings.kafka_brokers} "
                      f"REDIS_URL={settings.redis_url}\n  STORAGE_URL={env['STORAGE_URL']}"
                      f"\n  CATALOG_URL={settings.catalog_url}\n  worker log: {log_path}"
                      f"\n  shim: http://{settings.shim_host}:{settings.shim_port} (log: "
                      f"{stack.workdir / 'shim.log'})"
                      f"\n  metrics: http://127.0.0.1:{settings.metrics_port}/metrics")
        proc = _spawn("worker", env, log_path)
        shim = _spawn("shim", env, stack.workdir / "shim.log")
        try:
            code = _run_dev(settings, proc, demo, exit_when_done, timeout, data_dir)
        finally:
            _stop(shim)
            _stop(proc)
            if proc.returncode not in (0, -signal.SIGTERM, None):
                console.print(f"worker exited with {proc.returncode}; last log lines:")
                console.print(log_path.read_text(errors="replace")[-3000:])
    raise typer.Exit(code)


def _run_dev(settings: Settings, proc: subprocess.Popen[bytes], demo: bool,
             exit_when_done: bool, timeout: float, data_dir: Path) -> int:
    from streams.demo import SAMPLES, run_demo
    from streams.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    code = 0
    if demo:
        outcomes = asyncio.run(run_demo(settings, data_dir / "samples", timeout, console))
        missing = len(SAMPLES) - len(outcomes.processed)
        if missing:
            console.print(f"[red]{missing} sample(s) not processed "
                          f"({len(outcomes.failed)} dead-lettered)")
            code = 1
        else:
            console.print(f"[green]all {len(outcomes.processed)} samples processed")
    if exit_when_done:
        return code
    console.print("worker running; Ctrl-C to stop")
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    return code


def _spawn(command: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", command], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


catalog_cli = typer.Typer(help="The catalog database: migrations and backfill.",
                          no_args_is_help=True)
cli.add_typer(catalog_cli, name="catalog")


@catalog_cli.command("migrate")
def catalog_migrate(
    sql: Annotated[bool, typer.Option("--sql", help="Print the SQL instead of applying it")]
    = False,
) -> None:
    """Apply the catalog migrations not applied yet to CATALOG_URL (CATALOG_TABLE,
    CATALOG_COLUMNS give the layout)."""
    from processors import errors
    from streams.catalog import open_catalog

    settings = _settings()
    catalog = open_catalog(settings.catalog_url, settings.catalog_layout)
    if sql:
        print(catalog.migration_sql())
        return

    async def run() -> list[str]:
        try:
            return await catalog.migrate()
        finally:
            await catalog.close()

    try:
        applied = asyncio.run(run())
    except errors.TransientError as exc:
        console.print(f"[red]CATALOG_URL: {exc.message}")
        raise typer.Exit(1) from None
    for description in applied:
        console.print(f"applied: {description}")
    console.print(f"catalog {settings.catalog_table!r} is up to date "
                  f"({len(applied)} migration(s) applied)")


@catalog_cli.command("backfill")
def catalog_backfill() -> None:
    """Re-write the catalog database from the catalog table's changelog (e.g. after restoring
    an old backup). Newer rows already in the database stay."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from processors import errors
    from streams.catalog import open_catalog
    from streams.catalog.sink import backfill

    settings = _settings()

    async def run() -> tuple[int, int]:
        catalog = open_catalog(settings.catalog_url, settings.catalog_layout)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
            tasks = {"read": progress.add_task("reading the changelog", total=None),
                     "write": progress.add_task("writing the catalog", total=None)}

            def show(phase: str, done: int, total: int) -> None:
                progress.update(tasks[phase], completed=done, total=total)

            try:
                return await backfill(settings, catalog, show)
            finally:
                await catalog.close()

    try:
        books, changed = asyncio.run(run())
    except (errors.TransientError, KafkaError) as exc:
        console.print(f"[red]backfill failed: {exc}")
        raise typer.Exit(1) from None
    console.print(f"{books} books in the table; {changed} catalog rows written "
                  f"({books - changed} were up to date)")


dlq_cli = typer.Typer(help="The dead-letter topic: inspect and replay dead letters.",
                      no_args_is_help=True)
cli.add_typer(dlq_cli, name="dlq")

_REASON = typer.Option("--reason", help="Only letters with this reason code (repeatable)")
_BOOK = typer.Option("--book", help="Only letters of this book id (repeatable)")


def _read_letters(settings: Settings) -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from streams.dlq import read_letters

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"reading {settings.topic_dead_letter}", total=None)
        try:
            letters, unreadable = asyncio.run(read_letters(
                settings, lambda done, total: progress.update(task, completed=done,
                                                              total=total)))
        except KafkaError as exc:
            console.print(f"[red]KAFKA_BROKERS: {exc}")
            raise typer.Exit(1) from None
    if unreadable:
        console.print(f"[yellow]{unreadable} message(s) on {settings.topic_dead_letter} are not "
                      "dead letters this version can read; left alone")
    return letters


@dlq_cli.command("list")
def dlq_list(
    reason: Annotated[list[str] | None, _REASON] = None,
    book: Annotated[list[str] | None, _BOOK] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (newest last)")] = 50,
) -> None:
    """Dead letters as a table (ref = partition:offset), with counts by reason."""
    from collections import Counter

    from rich.table import Table

    from streams.dlq import select

    settings = _settings()
    letters = select(_read_letters(settings), reasons=reason or (), books=book or (),
                     include_undecodable=True)
    table = Table("ref", "book", "reason", "attempts", "last failure", "source", "message",
                  title=f"{settings.topic_dead_letter}: {len(letters)} letter(s)")
    for letter in letters[-limit:]:
        r = letter.record
        table.add_row(letter.ref, r.book_id or "", r.reason_code + (" (transient)"
                      if r.transient else ""), str(r.attempts),
                      r.last_failure_at.strftime("%Y-%m-%d %H:%M:%S"),
                      f"{r.source_topic}/{r.source_partition}@{r.source_offset}",
                      r.message[:60])
    console.print(table)
    counts = Counter(letter.record.reason_code for letter in letters)
    console.print(", ".join(f"{code}: {n}" for code, n in counts.most_common()) or "none")


@dlq_cli.command("show")
def dlq_show(ref: Annotated[str, typer.Argument(help="partition:offset, as `dlq list` shows")]
             ) -> None:
    """One dead letter in full, its original event decoded, as JSON."""
    import json

    from streams.dlq import describe, select

    settings = _settings()
    found = select(_read_letters(settings), refs=[ref])
    if not found:
        console.print(f"[red]no dead letter {ref} on {settings.topic_dead_letter}")
        raise typer.Exit(1)
    print(json.dumps(describe(found[0], settings), indent=2, default=str))


@dlq_cli.command("replay")
def dlq_replay(
    refs: Annotated[list[str] | None, typer.Argument(help="partition:offset of letters")] = None,
    all_letters: Annotated[bool, typer.Option("--all", help="Every letter (with filters)")]
    = False,
    reason: Annotated[list[str] | None, _REASON] = None,
    book: Annotated[list[str] | None, _BOOK] = None,
    include_undecodable: Annotated[bool, typer.Option(
        help="Also replay poison pills (they only come back)")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what would be replayed; send nothing")]
    = False,
) -> None:
    """Publish dead letters' original events to their input topic again, once the cause is
    fixed. Covers already done are recognised as duplicates, so replaying twice is harmless."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from streams.dlq import replay, replay_problem, select

    if not (refs or all_letters or reason or book):
        console.print("[red]name letters (partition:offset), or give --all, --reason or --book")
        raise typer.Exit(2)
    settings = _settings()
    chosen = select(_read_letters(settings), refs=refs or (), reasons=reason or (),
                    books=book or (), include_undecodable=include_undecodable)
    missing = set(refs or ()) - {letter.ref for letter in chosen}
    if missing:
        console.print(f"[red]no dead letter {', '.join(sorted(missing))}")
        raise typer.Exit(1)
    problems = {letter.ref: p for letter in chosen if (p := replay_problem(letter, settings))}
    for ref, problem in problems.items():
        console.print(f"[yellow]{ref} skipped: {problem}")
    if dry_run:
        for letter in chosen:
            if letter.ref not in problems:
                console.print(f"would replay {letter.ref} ({letter.record.book_id}, "
                              f"{letter.record.reason_code}) to {letter.record.source_topic}")
        console.print(f"dry run: {len(chosen) - len(problems)} letter(s) would be replayed")
        return
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("replaying", total=len(chosen))
        try:
            sent = asyncio.run(replay(settings, chosen, lambda done, total: progress.update(
                task, completed=done)))
        except KafkaError as exc:
            console.print(f"[red]replay stopped: {exc}")
            raise typer.Exit(1) from None
    console.print(f"replayed {sent} letter(s); {len(problems)} skipped")


@cli.command()
def publish(
    sources: Annotated[list[str], typer.Argument(help="Image URLs or local image files")],
    book_prefix: Annotated[str, typer.Option(help="book_id = prefix + file stem")] = "book-",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for outcomes")] = 120,
) -> None:
    """Publish book_enriched events; local files are served on loopback until processed."""
    from streams.demo import publish as send
    from streams.demo import results_table, serve_directory, watch
    from streams.records import BookEnriched

    settings = _settings()

    async def run() -> None:
        files = [Path(s) for s in sources if "://" not in s]
        urls = [s for s in sources if "://" in s]
        for f in files:
            if not f.is_file():
                raise typer.BadParameter(f"{f} is not a file")
        events = [BookEnriched(book_id=f"{book_prefix}{Path(u).stem}", cover_image_url=u)
                  for u in urls]
        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                (Path(tmp) / f.name).write_bytes(f.read_bytes())
            async with serve_directory(Path(tmp)) as base:
                events += [BookEnriched(book_id=f"{book_prefix}{f.stem}",
                                        cover_image_url=f"{base}/{f.name}") for f in files]
                await send(settings, events)
                console.print(f"published {len(events)} events to {settings.topic_book_enriched}")
                outcomes = await watch(settings, {e.book_id for e in events}, timeout, console)
        console.print(await results_table(settings, outcomes))

    asyncio.run(run())


@cli.command("render")
def render_command(
    files: Annotated[list[Path], typer.Argument(help="Image files", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder")] = Path("renders"),
    preset: Annotated[str, typer.Option(help="Preset name (built in or from the file)")] = "",
    output: Annotated[list[str] | None, typer.Option(
        help="A custom rendition instead of a preset, repeatable: a JSON object or "
             "name=thumb,width=200,height=300,fit=cover,format=webp,quality=75")] = None,
    presets_file: Annotated[Path | None, typer.Option(
        envvar="PRESETS_FILE", help="TOML or YAML presets")] = None,
    sheet: Annotated[bool, typer.Option(
        "--contact-sheet/--no-contact-sheet", help="Write contact-sheet.png and index.html")
    ] = True,
    jobs: Annotated[int, typer.Option(help="Files at once; 0 = one per core")] = 0,
    max_pixels: Annotated[int, typer.Option(help="Pixel cap per image")] = 16_800_000,
) -> None:
    """Render local image files with a preset or custom outputs, with a summary table and a
    contact sheet. Exits 1 if any file failed (its reason code is in the table)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from processors.presets import load_presets
    from processors.spec import Limits, SpecError
    from streams.localfiles import contact_sheet, custom_preset, render_files

    try:
        if output and preset:
            raise SpecError("give --preset or --output, not both")
        if output:
            chosen = custom_preset(output)
        else:
            presets = load_presets(presets_file)
            if (preset or "cover") not in presets:
                raise SpecError(f"no preset named {preset!r}; known: {', '.join(presets)}")
            chosen = presets[preset or "cover"]
    except (SpecError, ValueError) as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from None
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=not console.is_terminal) as progress:
        task = progress.add_task(f"rendering ({chosen.name})", total=len(files))
        results = render_files(files, chosen, out, Limits(max_pixels=max_pixels), jobs,
                               done=lambda _: progress.advance(task))
    table = Table("file", "source", *(r.name for r in chosen.renditions), "ms",
                  title=f"{chosen.name} v{chosen.version} -> {out}")
    for item in results:
        if item.result is None:
            assert item.error is not None
            table.add_row(item.path.name, f"[red]{item.error.code}",
                          *([""] * len(chosen.renditions)), f"{item.seconds * 1000:.0f}")
            continue
        r = item.result
        table.add_row(item.path.name, f"{r.source_width}x{r.source_height} {r.source_format}",
                      *(f"{x.width}x{x.height} {x.format} {len(x.data) / 1024:.1f} KB"
                        for x in r.renditions), f"{item.seconds * 1000:.0f}")
    console.print(table)
    if sheet:
        png, page = contact_sheet(results, out)
        console.print(f"contact sheet: {png if png.exists() else '(nothing rendered)'}; "
                      f"page: {page}")
    failed = [item for item in results if item.error is not None]
    for item in failed:
        console.print(f"[red]{item.path}: {item.error}")
    if failed:
        console.print(f"[red]{len(failed)} of {len(results)} failed")
        raise typer.Exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
