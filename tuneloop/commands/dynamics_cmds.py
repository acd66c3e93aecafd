"""Training-dynamics command: a run's data map (dataset cartography) and its flags."""

from __future__ import annotations

from typing import Annotated

import polars as pl
import typer
from rich.table import Table
from rich.text import Text

from tuneloop.common import JsonOpt, ProjectOpt, console, emit_json, fail, id_column, project


def dynamics_cmd(
    run: Annotated[str, typer.Argument(help="Run id or name.")],
    show: Annotated[int, typer.Option(help="Print this many hard-to-learn and ambiguous pairs each.")] = 10,
    hard_confidence: Annotated[float, typer.Option(
        help="Below this mean confidence (and stable) a pair is hard-to-learn.")] = 0.5,
    ambiguous_share: Annotated[float, typer.Option(
        help="The share of the run's pairs with the highest variability that are ambiguous.")] = 0.1,
    ambiguous_variability: Annotated[float, typer.Option(
        help="No pair with a lower std of confidence across epochs is ambiguous.")] = 0.1,
    min_epochs: Annotated[int, typer.Option(help="Pairs seen in fewer epochs get no region.")] = 2,
    flag: Annotated[bool, typer.Option("--flag/--no-flag",
                                       help="Store the flags as the signals hard_to_learn and ambiguous.")] = True,
    json_out: JsonOpt = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Map a run's train pairs by how it learned them (confidence and its variability across epochs).

    Regions: easy-to-learn (high confidence), hard-to-learn (low and stable: often a wrong
    label), ambiguous (high variability). The flags are stored as the quality signals
    `hard_to_learn` and `ambiguous`, so `--where flagged=hard_to_learn` finds them.

    Example: tuneloop dynamics run_01ab... --show 20
    """
    from analysis.dynamics import CartographyConfig
    from workflows.dynamics import map_run

    p = project(project_dir)
    cfg = CartographyConfig(min_epochs=min_epochs, hard_confidence=hard_confidence,
                            ambiguous_share=ambiguous_share, ambiguous_variability=ambiguous_variability)
    try:
        m = map_run(p, run, cfg, flag=flag, text=True)
    except (KeyError, ValueError) as exc:
        raise fail(str(exc.args[0]) if exc.args else str(exc)) from None
    if json_out:
        emit_json({"run_id": m.run_id, "regions": m.counts, "flagged": m.flagged,
                   "pairs": m.pairs.drop("response").to_dicts()})
        return
    console.print(f"run [bold]{m.run_id}[/]: {m.pairs.height} train pairs; "
                  + ", ".join(f"{k} {v}" for k, v in m.counts.items())
                  + (f"; {m.flagged} flags stored" if flag else ""), highlight=False)
    for region, order in (("hard-to-learn", "confidence"), ("ambiguous", "variability")):
        rows = m.pairs.filter(pl.col("region") == region).sort(order, descending=region == "ambiguous").head(show)
        if not show or rows.is_empty():
            continue
        t = Table(title=region)
        id_column(t, "pair_id")
        for c in ("confidence", "variability", "epochs"):
            t.add_column(c, justify="right")
        t.add_column("instruction", overflow="fold")
        t.add_column("response", overflow="fold")
        for r in rows.iter_rows(named=True):
            t.add_row(r["pair_id"], f"{r['confidence']:.3f}", f"{r['variability']:.3f}", str(r["epochs"]),
                      _cut(r.get("instruction")), _cut(r.get("response")))
        console.print(t)


def _cut(s: str | None, width: int = 60) -> Text:
    """Data as plain text (never rich markup), on one line, cut at ``width``."""
    s = (s or "").replace("\n", " ")
    return Text(s if len(s) <= width else s[: width - 1] + "…")


def register(app: typer.Typer) -> None:
    """Add the training-dynamics command to the root app."""
    app.command("dynamics")(dynamics_cmd)
