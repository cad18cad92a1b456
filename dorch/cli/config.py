"""``dorch config show``: the effective configuration and where each value came from."""

from __future__ import annotations

import typer

from dorch.cli import ConfigOption, JsonOption, app, handles_errors, load_config, print_json

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@handles_errors
def config_show(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Print the effective configuration (secrets redacted) and where each value came from."""
    from dorch.config import toml_key, toml_value

    cfg = load_config(config)  # holds no secret: a token where its name belongs is refused
    if as_json:
        print_json({"file": str(cfg.file) if cfg.file else None, "values": cfg.values,
                    "sources": cfg.sources})
        return
    typer.echo(f"# config file: {cfg.file or 'none found (built-in defaults)'}")
    for section, keys in cfg.values.items():
        if not keys:
            continue
        typer.echo(f"\n[{section}]")
        for key, value in keys.items():
            src = cfg.sources.get(f"{section}.{key}", "")
            typer.echo(f"{toml_key(key)} = {toml_value(value)}  # {src}")
