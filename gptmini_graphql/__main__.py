"""Command line: `python -m gptmini_graphql serve | export-schema | healthcheck |
llm serve | users … | db upgrade | usage prune|export`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gptmini-graphql")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--host", help="default: HOST setting (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: PORT setting (8000)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1); they share one embedded model process",
    )

    export = commands.add_parser("export-schema", help="print the schema as SDL")
    export.add_argument("--output", type=Path, help="write to this file instead")

    health = commands.add_parser(
        "healthcheck",
        help="exit 0 if the server on this host answers (for container probes)",
    )
    health.add_argument("--port", type=int, help="default: PORT setting (8000)")
    health.add_argument(
        "--ready", action="store_true", help="ask /readyz instead of /healthz"
    )

    llm = commands.add_parser("llm", help="the embedded model")
    llm_commands = llm.add_subparsers(dest="llm_command", required=True)
    llm_serve = llm_commands.add_parser(
        "serve", help="serve it alone as an OpenAI-compatible server"
    )
    llm_serve.add_argument("--host", default="127.0.0.1")
    llm_serve.add_argument("--port", type=int, default=8001)
    llm_serve.add_argument("--uds", help="listen on this Unix socket instead")
    llm_serve.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="stop when standard input closes (how a supervisor's end is noticed)",
    )

    from gptmini_graphql.auth import cli as accounts_cli

    accounts_cli.add_parsers(commands)
    from gptmini_graphql.spend import cli as usage_cli

    usage_cli.add_parsers(commands)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "users":
        return accounts_cli.run_users(args)
    if args.command == "db":
        return accounts_cli.run_db(args)
    if args.command == "usage":
        return usage_cli.run(args)
    if args.command == "llm":
        return _serve_embedded(args)
    if args.command == "healthcheck":
        return _healthcheck(args)
    return _export_schema(args.output)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gptmini_graphql.drain import hard_stop_seconds
    from gptmini_graphql.http_protocol import OneWriteHTTPProtocol
    from gptmini_graphql.settings import InsecureSettings, Settings

    settings = Settings()
    try:
        settings.check()
    except InsecureSettings as problem:
        print(problem, file=sys.stderr)
        return 2
    if args.workers > 1 and not settings.redis_url:
        from gptmini_graphql.spend.budgets import defaults

        if defaults(settings):
            # In memory, each worker would keep a budget of its own: N times it.
            print(
                "--workers > 1 with budgets (BUDGET_*, TOKEN_RATE_LIMIT) needs "
                "REDIS_URL: without it each worker would enforce them alone.",
                file=sys.stderr,
            )
            return 2
        print(
            "warning: --workers > 1 without REDIS_URL: budgets an admin sets "
            "per user or key are kept by each worker alone.",
            file=sys.stderr,
        )
    metrics_directory = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics must add up every worker, whichever one is asked: the
        # workers share a fresh directory (prometheus_client's multiprocess
        # mode; each reads the variable when it imports the metrics).
        metrics_directory = tempfile.mkdtemp(prefix="gptmini-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_directory
    model_process = None
    if (
        args.workers > 1
        and settings.backend == "local"
        and not settings.local_model_url
    ):
        # One model process for all workers, supervised from here; each
        # worker's settings find it through the environment they inherit.
        from gptmini_graphql.llm.local.process import ModelProcess

        model_process = ModelProcess(settings)
        model_process.start()
        os.environ["LOCAL_MODEL_URL"] = model_process.url
    try:
        uvicorn.run(
            "gptmini_graphql.app:create_app",
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            reload=args.reload,
            workers=args.workers,
            # httptools, each response's head sent with its body.
            http=OneWriteHTTPProtocol,
            # Our JSON logging; the operation log line replaces the access log.
            log_config=None,
            access_log=False,
            # A WebSocket message is held to the same size as a request body.
            ws_max_size=settings.max_body_bytes,
            # Streams end at the grace (drain.py); anything left is cut after.
            timeout_graceful_shutdown=hard_stop_seconds(
                settings.shutdown_grace_seconds
            ),
        )
    finally:
        if model_process is not None:
            model_process.stop()
        if metrics_directory is not None:
            shutil.rmtree(metrics_directory, ignore_errors=True)
    return 0


def _serve_embedded(args: argparse.Namespace) -> int:
    from gptmini_graphql.llm.local.serve import serve_embedded
    from gptmini_graphql.settings import Settings
    from gptmini_graphql.tasks import RESPONSE_SCHEMAS

    serve_embedded(
        Settings(),
        host=args.host,
        port=args.port,
        uds=args.uds,
        exit_with_stdin=args.exit_with_stdin,
        warm_up_schemas=RESPONSE_SCHEMAS,
    )
    return 0


def _healthcheck(args: argparse.Namespace) -> int:
    """The port from the same settings the server reads, so a container
    started with PORT=8301 is probed on 8301."""
    import urllib.request

    from gptmini_graphql.settings import Settings

    port = args.port or Settings().port
    path = "/readyz" if args.ready else "/healthz"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2):
            return 0
    except OSError as error:  # URLError and HTTPError (a 503) among them
        print(f"{path} on port {port}: {error}", file=sys.stderr)
        return 1


def _export_schema(output: Path | None) -> int:
    from gptmini_graphql.schema import build_schema

    sdl = str(build_schema()) + "\n"
    if output is None:
        sys.stdout.write(sdl)
    else:
        output.write_text(sdl, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
