"""``mlctl config``: check and show a service's mlctl.yaml."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlctl.cli.output import JsonOption, Output, state_of

if TYPE_CHECKING:
    from mlctl.config import LoadedConfig

app = typer.Typer(help="Check and show the service's mlctl.yaml.", no_args_is_help=True, rich_markup_mode=None)

EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env",
        "-e",
        envvar="MLCTL_ENV",
        metavar="ENV",
        help="Apply the overrides of environments.ENV (e.g. staging).",
    ),
]


def load_config(out: Output, env: str | None = None) -> LoadedConfig:
    """Load mlctl.yaml for a command, announcing every MLCTL_CONFIG__* override."""
    import json

    from mlctl.config import load_service_config

    loaded = load_service_config(env=env)
    reporter = out.reporter()
    for o in loaded.overrides:
        before = "not set" if o.file_value is None else json.dumps(o.file_value)
        reporter.warn(f"{o.variable} overrides {o.key} (mlctl.yaml: {before}, now: {json.dumps(o.value)})")
    return loaded


@app.command("validate")
def validate_cmd(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Check mlctl.yaml and every environment in it; list every problem with file, line and key."""
    out = state_of(ctx).output(json_)
    loaded = load_config(out)
    envs = list(loaded.config.environments)
    summary = {
        "valid": True,
        "path": str(loaded.path),
        "service": loaded.config.name,
        "environments": envs,
    }
    out.result(
        summary,
        lambda console: console.print(
            f"[green]valid:[/] {loaded.path.name} for service {loaded.config.name}"
            + (f" (environments: {', '.join(envs)})" if envs else "")
        ),
    )


@app.command("show")
def show_cmd(ctx: typer.Context, env: EnvOption = None, json_: JsonOption = False) -> None:
    """Print the effective config: mlctl.yaml, then environments.ENV, then MLCTL_CONFIG__* variables."""
    out = state_of(ctx).output(json_)
    loaded = load_config(out, env)
    data: dict[str, Any] = loaded.config.model_dump(mode="json")
    result = {
        "path": str(loaded.path),
        "environment": loaded.environment,
        "config": data,
        "overrides": loaded.overrides,
    }

    def render(console: Any) -> None:
        import io

        from ruamel.yaml import YAML

        yaml = YAML()
        yaml.default_flow_style = False
        yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
        buffer = io.StringIO()
        yaml.dump(data, buffer)
        console.print(buffer.getvalue().rstrip("\n"), markup=False)

    out.result(result, render)
