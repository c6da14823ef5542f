"""The ``dspex`` command (click): every subcommand has ``--help``; ``dspex --version``.

    dspex registry [--json|--markdown]          implementations per module kind
    dspex pool status [--json] [--start] [--url URL]
    dspex lmserver [--host H] [--port N]        run the scripted test LM server
    dspex demo [--lm MODEL] [--api-base URL] [--api-key KEY]
    dspex serve app.py:program [--name NAME]... [--host H] [--port N]

``main(argv) -> int`` never lets a user's mistake end in a traceback: a busy port, a dead
endpoint, a bad flag or a closed pipe (``dspex registry --json | head``) print one line on
stderr and return a non-zero code. Each subsystem keeps its own ``main(argv)`` as well.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

__all__ = ["cli", "main", "run"]


class _PipeClosed(Exception):
    """stdout was closed by the reader (``| head``); not an OSError, so click lets it pass."""


class _Group(click.Group):
    """Lists commands under ``commands:``, names unknown ones plainly, reports closed pipes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _PipeClosed from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (name, (cmd.get_short_help_str(limit=70)))
            for name in self.list_commands(ctx)
            if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden
        ]
        if rows:
            with formatter.section("commands"):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            ctx.fail(f"unknown command {name!r} (try: {', '.join(self.list_commands(ctx))})")
        return super().resolve_command(ctx, args)


def _version() -> str:
    from dspex import __version__

    return __version__


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="dspex", message="%(version)s")
def cli() -> None:
    """DSPex: LM programs with a DSPy-compatible API, native or on real DSPy in worker pools."""


@cli.command("registry")
@click.option("--json", "as_json", is_flag=True, help="rows as JSON")
@click.option("--markdown", is_flag=True, help="a Markdown table")
def registry_command(as_json: bool, markdown: bool) -> int:
    """Show the implementations of every module kind and the router's default."""
    from dspex.router.cli import main as registry_main

    if as_json and markdown:
        raise click.UsageError("--json and --markdown exclude each other")
    return registry_main(["--json"] if as_json else ["--markdown"] if markdown else [])


@cli.group("pool", cls=_Group)
def pool_group() -> None:
    """Inspect worker pools."""


@pool_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="rows as JSON")
@click.option("--start", is_flag=True, help="start each configured pool, report it, close it")
@click.option(
    "--url",
    default=None,
    help="a running `dspex serve` (e.g. http://127.0.0.1:8000): its live pools",
)
def pool_status_command(as_json: bool, start: bool, url: str | None) -> int:
    """Configured pools (from DSPEX_POOLS / settings) or a running server's live pools."""
    from dspex.pool.cli import main as pool_main

    args = ["status"] + (["--json"] if as_json else []) + (["--start"] if start else [])
    if url:
        if start:
            raise click.UsageError("--start and --url exclude each other")
        args += ["--url", url]
    return pool_main(args)


@cli.command("lmserver")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def lmserver_command(host: str, port: int) -> int:
    """Run the scripted OpenAI/Anthropic-compatible LM server until Ctrl-C."""
    from dspex.testing.lmserver import main as lmserver_main

    return lmserver_main(["--host", host, "--port", str(port)])


@cli.command("demo")
@click.option("--lm", default=None, help="model id, e.g. openai/gpt-4o-mini (env DSPEX_LM)")
@click.option("--api-base", default=None, help="the provider's base URL (env DSPEX_API_BASE)")
@click.option("--api-key", default=None, help="the provider's API key (env DSPEX_API_KEY)")
def demo_command(lm: str | None, api_base: str | None, api_key: str | None) -> int:
    """Run the end-to-end demo (a scripted local LM unless --lm is given)."""
    from dspex.demo import main as demo_main

    args: list[str] = []
    for flag, value in (("--lm", lm), ("--api-base", api_base), ("--api-key", api_key)):
        if value is not None:
            args += [flag, value]
    return demo_main(args)


@cli.command("serve")
@click.argument("targets", nargs=-1, required=True)
@click.option("--name", "names", multiple=True, help="served name, one per target (repeatable)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int, help="0 picks a free port")
@click.option("--max-concurrency", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--max-queue", default=256, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
    help="default per-request deadline (seconds)",
)  # fmt: skip
@click.option(
    "--drain-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
    help="on SIGTERM, how long calls in flight may take to finish",
)  # fmt: skip
@click.option("--import-root", "import_roots", multiple=True, help="package a load may name")
@click.option("--no-load", is_flag=True, help="refuse POST/DELETE /v1/programs")
@click.option("--event-metrics", is_flag=True, help="export DSPex telemetry events on /metrics")
@click.option("--log-level", default="warning", show_default=True)
@click.option("--ray", "on_ray", is_flag=True, help="deploy on Ray Serve instead of uvicorn")
@click.option("--ray-address", default=None, help="with --ray: the cluster (default: start one)")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(min=1))
def serve_command(
    targets: tuple[str, ...],
    names: tuple[str, ...],
    host: str,
    port: int,
    max_concurrency: int,
    max_queue: int,
    timeout: float,
    drain_timeout: float,
    import_roots: tuple[str, ...],
    no_load: bool,
    event_metrics: bool,
    log_level: str,
    on_ray: bool,
    ray_address: str | None,
    replicas: int,
) -> int:
    """Serve programs over HTTP: TARGETS are app.py:program or package.module:program."""
    from dspex.server.cli import serve

    if on_ray:
        from dspex.server.ray_serve import serve_on_ray

        return serve_on_ray(
            targets,
            names=names,
            host=host,
            port=port,
            address=ray_address,
            replicas=replicas,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            timeout=timeout,
            drain_timeout=drain_timeout,
            import_roots=import_roots,
            allow_load=not no_load,
            event_metrics=event_metrics,
        )

    return serve(
        targets,
        names=names,
        host=host,
        port=port,
        log_level=log_level,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        timeout=timeout,
        drain_timeout=drain_timeout,
        import_roots=import_roots,
        allow_load=not no_load,
        event_metrics=event_metrics,
    )


def _fail(command: str, message: str, code: int = 1) -> int:
    try:
        print(f"dspex{' ' + command if command else ''}: {message}", file=sys.stderr)
    except (BrokenPipeError, ValueError):
        pass
    return code


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dspex`` with ``argv``; the exit code (no traceback for a user's mistake)."""
    from dspex.errors import DSPexError, UserError

    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), "")
    if not args:
        with click.Context(cli, info_name="dspex") as ctx:
            click.echo(cli.get_help(ctx))
        return 0
    try:
        result: Any = cli.main(args=args, prog_name="dspex", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return _fail(command, "aborted", 130)
    except KeyboardInterrupt:
        return 130
    except (BrokenPipeError, _PipeClosed):
        _silence_stdout()
        return _fail(command, "output closed early (broken pipe)", 141)
    except UserError as exc:
        return _fail(command, str(exc), 2)
    except DSPexError as exc:
        return _fail(command, f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return _fail(command, f"address already in use ({exc.strerror})")
        return _fail(command, f"{type(exc).__name__}: {exc}")
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
