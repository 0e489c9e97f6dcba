"""``mlctl config``: check and show a service's mlctl.yaml."""

from __future__ import annotations

from typing import Any

import typer

from mlctl.cli.options import EnvOption, JsonOption
from mlctl.cli.output import state_of

app = typer.Typer(help="Check and show the service's mlctl.yaml.", no_args_is_help=True, rich_markup_mode=None)


@app.command("validate")
def validate_cmd(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Check mlctl.yaml and every environment in it; list every problem with file, line and key."""
    from mlctl.models import ConfigCheck

    state = state_of(ctx)
    out = state.output(json_)
    loaded = state.config()
    check = ConfigCheck(True, str(loaded.path), loaded.config.name, tuple(loaded.config.environments))
    out.result(
        check,
        lambda console: console.print(
            f"[green]valid:[/] {loaded.path.name} for service {check.service}"
            + (f" (environments: {', '.join(check.environments)})" if check.environments else "")
        ),
    )


@app.command("show")
def show_cmd(ctx: typer.Context, env: EnvOption = None, json_: JsonOption = False) -> None:
    """Print the effective config: mlctl.yaml, then environments.ENV, then MLCTL_CONFIG__* variables."""
    from mlctl.models import ConfigView

    state = state_of(ctx)
    out = state.output(json_)
    loaded = state.config(env)
    data: dict[str, Any] = loaded.config.model_dump(mode="json")
    view = ConfigView(str(loaded.path), loaded.environment, data, loaded.overrides)

    def render(console: Any) -> None:
        import io

        from ruamel.yaml import YAML

        yaml = YAML()
        yaml.default_flow_style = False
        yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
        buffer = io.StringIO()
        yaml.dump(data, buffer)
        console.print(buffer.getvalue().rstrip("\n"), markup=False)

    out.result(view, render)
