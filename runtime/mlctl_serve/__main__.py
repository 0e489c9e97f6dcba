"""Run a server: ``python -m mlctl_serve my_service.server:app [--host H] [--port P] [--reload]``.

Host, port, workers, graceful shutdown, log level, access log and the client limits come from
``SERVING_*`` variables unless given here. uvicorn runs with uvloop and our httptools protocol
(``mlctl_serve.connection``). On SIGTERM it stops accepting, lets in-flight requests finish within
SERVING_GRACEFUL_SHUTDOWN_S (0: at once), answers what is still running with a JSON 503, and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys

from mlctl_serve.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlctl_serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("app", help="the ASGI app, module:attribute (e.g. fraud_scorer.server:app)")
    parser.add_argument("--host", help="address to listen on (default: SERVING_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: SERVING_PORT or 8080)")
    parser.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    parser.add_argument("--reload-dir", action="append", default=[], help="directory to watch (repeatable)")
    parser.add_argument("--access-log", action="store_true", default=None, help="log every request")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"mlctl-serve: invalid settings: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from mlctl_serve.connection import uvicorn_options

    # uvicorn drains on SIGTERM/SIGINT and then raises the signal again with the handler it found
    # installed. With no-op handlers here, a graceful stop ends in exit status 0, not -15.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.run(
        args.app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=None if args.reload else settings.workers,
        reload=args.reload,
        reload_dirs=args.reload_dir or None,
        log_level=settings.log_level,
        access_log=settings.access_log if args.access_log is None else args.access_log,
        **uvicorn_options(settings),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
