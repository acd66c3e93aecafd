"""Training commands: train, runs list|show|cancel|resume, predict, eval (standard benchmarks), metrics, export-model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from store import runs as runs_store
from store import slices as slices_store
from store.config import ConfigError
from tuneloop.common import (
    AuthorOpt,
    EngineOpt,
    JsonOpt,
    ProjectOpt,
    RayAddressOpt,
    console,
    default_author,
    emit_json,
    engine_for,
    err,
    fail,
    id_column,
    lookup,
    project,
)
from tuneloop.progress import progress

runs_app = typer.Typer(help="List, show, cancel and resume training runs.", no_args_is_help=True)


def follow_run(p, run_id: str) -> None:
    """Wait for a run with a progress bar (plain lines when stderr is not a terminal), then for its
    predictions after training, and say how both ended; exit code 1 unless the run succeeded
    (failed, cancelled). Ctrl-C detaches (the run goes on)."""
    from training.runner import after_of, wait_run

    with progress(f"training {run_id}", transient=False) as bar:
        bar.update(info="starting")

        def show(st: dict) -> None:
            after = st.get("after") or {}
            if st.get("status") == "succeeded" and after.get("total"):
                bar.update(after.get("done") or 0, after["total"], info=after.get("message", ""))
                return
            total = st.get("total_steps")
            if total:
                bar.update(st.get("step") or 0, total,
                           info=f"loss {st['loss']:.4f}" if st.get("loss") is not None else st.get("status", ""))
        try:
            run = wait_run(p, run_id, progress=show)
        except KeyboardInterrupt:
            err.print(f"detached; the run goes on. `tuneloop runs show {run_id}` follows it, "
                      f"`tuneloop runs cancel {run_id}` stops it.")
            raise typer.Exit(0) from None
    style = "green" if run.status == "succeeded" else "red"
    console.print(f"run [bold]{run.id}[/] [{style}]{run.status}[/]" + (f": {run.error}" if run.error else ""))
    if run.adapter_path:
        console.print(f"result: {run.adapter_path}")
    after = after_of(run.run_dir) if run.run_dir else None
    if after is not None:
        style = {"done": "green", "failed": "red"}.get(after.get("state", ""), "yellow")
        console.print(f"[{style}]{escape(after.get('message', ''))}[/]", highlight=False)
    if run.status != "succeeded":
        raise typer.Exit(1)


def train(
    slice_ref: Annotated[str | None, typer.Option("--slice", "-s", help="Slice name or id to train on "
                                                  "(default with --from-run: that run's slice).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="Config overrides key=value (see docs/training.md).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base model: smollm2 (default, bundled), a HF id or a folder.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")] = None,
    name: Annotated[str, typer.Option(help="A name for the run; refused when another run has it.")] = "",
    init_adapter: Annotated[Path | None, typer.Option("--init-adapter", help="Continue from this LoRA adapter folder.")] = None,
    parent_run: Annotated[str | None, typer.Option("--parent-run", help="Run this one derives from (lineage).")] = None,
    objective: Annotated[str | None, typer.Option("--objective", help="sft (default), or dpo / orpo: preference "
                                                  "training on the corrections' preference pairs (config objective).")] = None,
    from_run: Annotated[str | None, typer.Option("--from-run", help="Start from this run's LoRA adapter (config "
                                                 "from_run; dpo needs it: the SFT run, also the reference).")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", min=1, help="Train on N CUDA GPUs, one process each "
                                             "(config nproc=N device=cuda), launched with accelerate; refused "
                                             "when the machine has fewer.")] = None,
    distributed: Annotated[str | None, typer.Option("--distributed", help="With --gpus N > 1: ddp (default), fsdp "
                                                    "(FSDP2 full shard), deepspeed_zero2 or deepspeed_zero3 "
                                                    "(config distributed).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--detach", help="Wait for the run to end, showing progress (default; "
                                       "exit code 0 only if it succeeded), or start it and return at once.")] = True,
    no_launch: Annotated[bool, typer.Option("--no-launch", help="Prepare the run (folder, frozen data, queued in the "
                                            "project) and print the command that starts it, for a launch by hand "
                                            "(accelerate launch / torchrun on a cluster).")] = False,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Fine-tune a base model on a slice (LoRA by default) in its own process, then predict.

    The run is tracked in the project (status, per-step metrics, config, adapter) and resumes
    from its last checkpoint with `tuneloop runs resume RUN`. When it succeeds, its own process
    predicts the slice's eval split, scores and categorises it, as `tuneloop predict` does
    (config predict_after=false turns that off, predict_split=train picks the train split).
    --name must be new; without it the run is named SLICE@VERSION (made unique with " (2)").

    --objective dpo|orpo trains on the preference pairs that corrections stored (chosen = the
    correction, rejected = the model's output) of the slice's train pairs (preference_pairs=all:
    every one in the project), with TRL, starting from the adapter of --from-run; the run is
    tracked, resumed and predicts like any other (docs/training.md, "Preference training").

    Example: tuneloop train --slice support-v1 max_steps=200 learning_rate=1e-4 lora_r=8
    Example: tuneloop train --objective dpo --from-run run_01ab... beta=0.1 max_steps=50

    --gpus N trains in N processes, one per CUDA GPU, through `accelerate launch` with the config
    of --distributed shipped in training/launch/ (ddp, or fsdp for full fine-tuning and bigger
    models); nproc=N device=cpu tries the same on the CPU (docs/training.md, "Multi-GPU").
    """
    from workflows.train import train as start_run

    p = project(project_dir)
    if parent_run:
        parent_run = _resolve(p, parent_run)
    extra = [f"objective={objective}"] if objective else []
    if from_run:
        extra.append(f"from_run={_resolve(p, from_run)}")
    if gpus is not None:
        extra += [f"nproc={gpus}", "device=cuda"]
    if distributed:
        extra.append(f"distributed={distributed}")
    if not slice_ref and not from_run:
        raise fail("pass --slice NAME (or --from-run RUN to train on that run's slice)")
    try:
        rid = start_run(p, slice_ref, base_model=base, config_path=config, overrides=(*(overrides or ()), *extra),
                        parent_run_id=parent_run, init_adapter=str(init_adapter) if init_adapter else None,
                        name=name, author=author or default_author(), launch_now=not no_launch)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc).strip('"')) from None
    if no_launch:
        import shlex

        from training.config import TrainConfig
        from training.runner import REPO_ROOT, launch_command, run_folder

        folder = run_folder(p, rid)
        cmd = launch_command(folder, TrainConfig(**folder.read_json(folder.config_file, {})))
        print(f"prepared run {rid} (queued) in {folder.path}; start it with (from {REPO_ROOT}):")
        print(shlex.join(cmd))
        return
    console.print(f"started run [bold]{rid}[/]" + (f" on slice {slice_ref}" if slice_ref else ""))
    if wait:
        follow_run(p, rid)


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonOpt = False,
    project_dir: ProjectOpt = None,
) -> None:
    """List runs, newest first (live runs are synced from their folders first).

    The slice column shows name@version (`--json` has the slice id).
    Example: tuneloop runs list --status running
    """
    from training.runner import sync_live

    p = project(project_dir)
    sync_live(p)
    with p.connect() as con:
        rows = runs_store.list_runs(con, limit=limit, status=status)
        slice_names = {s.id: f"{s.name}@{s.version}" for s in slices_store.list_slices(con)}
    if as_json:
        emit_json([r.model_dump(mode="json") for r in rows])
        return
    t = Table(title="runs")
    id_column(t, "id")
    for c in ("name", "kind", "status", "base", "slice", "step", "final loss", "created"):
        t.add_column(c)
    for r in rows:
        s = r.summary or {}
        t.add_row(r.id, r.name, r.kind, r.status, Path(r.base_model).name,
                  slice_names.get(r.slice_id or "", r.slice_id or ""),
                  f"{s.get('step', s.get('steps', ''))}/{s.get('total_steps', '')}" if r.kind in runs_store.TRAINED_KINDS else "",
                  f"{s['final_loss']:.4f}" if isinstance(s.get("final_loss"), float) else "",
                  str(r.created_at)[:19])
    console.print(t)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run id or name.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow a live run with a progress bar.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Show a run: status, config, summary, latest metrics, prediction sets.

    Example: tuneloop runs show run_01ab... --follow
    """
    from training.runner import after_of, sync_run

    p = project(project_dir)
    try:
        r = sync_run(p, _resolve(p, run))
    except KeyError as exc:
        raise fail(str(exc).strip('"')) from None
    if follow and r.status in ("queued", "running"):
        follow_run(p, r.id)
        r = sync_run(p, r.id)
    console.print(f"[bold]{r.id}[/] {r.name} - {r.kind}, [bold]{r.status}[/]" + (f"\nerror: {r.error}" if r.error else ""))
    console.print(f"base {r.base_model}; slice {r.slice_id} (hash {str(r.slice_hash)[:12]}); run dir {r.run_dir}")
    if r.adapter_path:
        console.print(f"result: {r.adapter_path}")
    after = after_of(r.run_dir) if r.run_dir else None
    if after is not None:
        console.print(f"after training ({after.get('state')}): {escape(after.get('message', ''))}", highlight=False)
    console.print_json(json.dumps({"config": r.config, "summary": r.summary}, default=str))
    with p.connect() as con:
        m = runs_store.metrics_frame(con, r.id)
        sets = runs_store.prediction_sets(con, r.id)
    if m.height:
        t = Table(title="last metrics")
        t.add_column("name")
        t.add_column("step", justify="right")
        t.add_column("value", justify="right")
        for name in sorted(set(m["name"])):
            last = m.filter(m["name"] == name).tail(1).row(0, named=True)
            t.add_row(name, str(last["step"]), f"{last['value']:.5g}")
        console.print(t)
    for s in sets.iter_rows(named=True):
        console.print(f"predictions {s['id']}: {s['n']} on {s['split']} ({str(s['created_at'])[:19]})")


@runs_app.command("cancel")
def runs_cancel(run: Annotated[str, typer.Argument(help="Run id or name.")], project_dir: ProjectOpt = None) -> None:
    """Cancel a run: it saves a checkpoint and stops (resumable).

    Example: tuneloop runs cancel run_01ab...
    """
    from training.runner import cancel_run

    p = project(project_dir)
    r = cancel_run(p, _resolve(p, run))
    console.print(f"run {r.id}: {r.status}" + ("" if r.status in runs_store.TERMINAL else " (cancel requested)"))


@runs_app.command("resume")
def runs_resume(
    run: Annotated[str, typer.Argument(help="Run id or name.")],
    detach: Annotated[bool, typer.Option("--detach", help="Return at once.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Resume a failed, killed or cancelled run from its last checkpoint.

    Example: tuneloop runs resume run_01ab...
    """
    from training.runner import resume_run

    p = project(project_dir)
    try:
        rid = resume_run(p, _resolve(p, run))
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"resumed run [bold]{rid}[/]")
    if not detach:
        follow_run(p, rid)


def _resolve(p, ref: str) -> str:
    """A run's full id from its id, name or an unambiguous id prefix (else one error line)."""
    with p.connect() as con:
        return lookup(runs_store.get, con, ref).id


def predict(
    run: Annotated[str | None, typer.Option("--run", "-r", help="Run id or name whose model predicts.")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Predict with an untrained base model instead.")] = None,
    slice_ref: Annotated[str | None, typer.Option("--slice", "-s", help="Slice (default: the run's slice).")] = None,
    split: Annotated[str, typer.Option(help="eval or train.")] = "eval",
    max_new_tokens: Annotated[int | None, typer.Option(
        help="Default: 1.5x the longest reference (16-512); for a label task the longest label + 4.")] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy (default); > 0 samples.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling when temperature > 0.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 16,
    limit: Annotated[int | None, typer.Option(help="Only the first N pairs.")] = None,
    system_prompt: Annotated[str, typer.Option(help="System prompt for --base predictions.")] = "",
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    precision: Annotated[str, typer.Option(
        help="auto (fp32 on CPU; on CUDA the precision the run trained in), fp32 (same answers as plain "
             "fp32 transformers) or bf16 (bf16 autocast; faster, may change some answers).")] = "auto",
    decode: Annotated[str, typer.Option(
        help="generate (free generation) or labels (a label task answered within the slice's label set: "
             "every label scored as the whole reply, the likeliest chosen; no invented or cut-off labels).")] = "generate",
    perplexity: Annotated[bool, typer.Option("--perplexity/--no-perplexity",
                                             help="Also score the references' perplexity under the model (one more pass).")] = True,
    categorise: Annotated[bool, typer.Option("--categorise/--no-categorise",
                                             help="Then pre-categorise the errors (`tuneloop errors auto`).")] = True,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Generate predictions for a slice split in batches, store them (immutable), score them and
    pre-categorise their errors. With --engine ray, an actor per GPU (else per CPU slot) of the
    Ray cluster generates, each loading the model once; greedy answers are the local engine's.

    Progress goes to stderr: a bar on a terminal, else a line every 10% or 10 s.
    Example: tuneloop predict --run run_01ab... --split eval --no-perplexity
    Example: tuneloop predict --base smollm2 --slice support-v1
    Example: tuneloop predict --run run_01ab... --decode labels   (a label task: answers only from its labels)
    """
    from training.predict import predict_base
    from workflows.predict import predict_and_categorise

    if bool(run) == bool(base):
        raise fail("pass exactly one of --run RUN or --base MODEL (with --slice)")
    if base and not slice_ref:
        raise fail("--base needs --slice NAME")
    if precision not in ("auto", "fp32", "bf16"):
        raise fail(f"--precision {precision}: use auto, fp32 or bf16")
    if decode not in ("generate", "labels"):
        raise fail(f"--decode {decode}: use generate or labels")
    p = project(project_dir)
    kw: dict[str, Any] = dict(split=split, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
              batch_size=batch_size, limit=limit, seed=seed, perplexity=perplexity, precision=precision,
              decode=decode, engine=engine_for(p, engine, ray_address))
    res = None
    with progress("predict") as bar:
        bar.update(info="loading model")
        kw["progress"] = lambda done, total: bar.update(done, total, info="")
        try:
            if base:
                assert slice_ref is not None
                rid, psid = predict_base(p, slice_ref, base_model=base, system_prompt=system_prompt,
                                         author=author or default_author(), **kw)
            else:
                assert run is not None
                rid = _resolve(p, run)
                res = predict_and_categorise(p, rid, slice_ref=slice_ref, categorise=categorise, **kw)
                psid = res.prediction_set_id
        except (KeyError, ValueError) as exc:
            raise fail(str(exc).strip('"')) from None
    console.print(f"prediction set [bold]{psid}[/] of run {rid}")
    from training.predict import generation_config

    g = generation_config(p, psid)
    console.print(f"precision {g.get('precision')} (asked: {g.get('precision_requested')}; autocast "
                  f"{g.get('autocast_dtype') or 'off'}; weights {g.get('model_dtype')}) on {g.get('device')}")
    _print_metrics(p, psid)
    if res is not None and res.categorised:
        c = res.categorised
        console.print(f"errors pre-categorised: {c['proposals']} proposals on {c['predictions']} predictions "
                      f"({c['task']} task); review them with `tuneloop errors list --run {rid}` or on the Errors page")


def _print_metrics(p, psid: str, per_label: bool = False) -> None:
    with p.connect() as con:
        m = runs_store.metrics_of(con, psid)
    t = Table(title=f"metrics of {psid}")
    for c in ("scope", "name", "value"):
        t.add_column(c, justify="right" if c == "value" else "left")
    for s, n, v in m.iter_rows():
        if s == "overall" or (per_label and s.startswith("label:")):
            t.add_row(s, n, f"{v:.4g}")
    console.print(t)


def metrics(
    run: Annotated[str, typer.Option("--run", "-r", help="Run id or name.")],
    prediction_set: Annotated[str | None, typer.Option("--set", help="Prediction set (default: the latest).")] = None,
    per_label: Annotated[bool, typer.Option("--per-label", help="Also per-label P/R/F1.")] = False,
    recompute: Annotated[bool, typer.Option(help="Recompute from the stored predictions.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Show a run's prediction metrics (EM, token F1, ROUGE-L, BLEU, perplexity, accuracy...).

    Example: tuneloop metrics --run run_01ab... --per-label
    """
    from training.predict import compute_metrics

    p = project(project_dir)
    rid = _resolve(p, run)
    with p.connect() as con:
        psid = lookup(runs_store.resolve_prediction_set, con, prediction_set) if prediction_set else \
            runs_store.latest_prediction_set(con, rid)
    if not psid:
        raise fail(f"run {rid} has no predictions yet; run `tuneloop predict --run {rid}`")
    if recompute:
        compute_metrics(p, psid)
    if as_json:
        with p.connect() as con:
            m = runs_store.metrics_of(con, psid)
        emit_json(m.to_dicts())
        return
    _print_metrics(p, psid, per_label)


def export_model(
    run: Annotated[str, typer.Option("--run", "-r", help="Run id or name.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (adapter or --merged).")] = None,
    merged: Annotated[bool, typer.Option("--merged", help="Merge the adapter into the base (safetensors).")] = False,
    gguf: Annotated[Path | None, typer.Option(
        "--gguf", help="Write the merged model as this one GGUF file (llama.cpp, ollama; Llama models).")] = None,
    gguf_type: Annotated[str, typer.Option("--gguf-type", help="GGUF weight type: f16 or f32.")] = "f16",
    project_dir: ProjectOpt = None,
) -> None:
    """Export a run's result: the PEFT adapter folder, with --merged a full merged model, or with
    --gguf the merged model as one GGUF file.

    Example: tuneloop export-model --run run_01ab... --merged --out ./merged-model
    Example: tuneloop export-model --run run_01ab... --gguf ./model.gguf
    """
    from training.export import export_adapter, export_gguf, export_merged

    if gguf is None and out is None:
        raise fail("give --out DIR (adapter, or --merged) or --gguf FILE.gguf")
    if gguf is not None and (out is not None or merged):
        raise fail("--gguf writes one file: use it without --out/--merged")
    p = project(project_dir)
    rid = _resolve(p, run)
    try:
        if gguf is not None:
            path = export_gguf(p, rid, gguf, outtype=gguf_type)
        else:
            assert out is not None
            path = export_merged(p, rid, out) if merged else export_adapter(p, rid, out)
    except (ValueError, FileExistsError) as exc:
        raise fail(str(exc)) from None
    console.print(f"exported to [bold]{path}[/]")



def eval_benchmarks(
    run: Annotated[str, typer.Option("--run", "-r", help="Run id or name whose model is scored.")],
    bench: Annotated[str, typer.Option("--bench", "-b", help="Comma-separated: mmlu, arc_challenge, hellaswag, "
                                       "truthfulqa_mc2.")] = "mmlu,arc_challenge,hellaswag,truthfulqa_mc2",
    bench_dir: Annotated[Path | None, typer.Option("--bench-dir", help="Folder of the benchmarks' local copies "
                                                   "(default $TUNELOOP_BENCH_DIR; docs/training.md).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions of each benchmark (MMLU: of each "
                                              "subject), for a quick look.")] = None,
    base: Annotated[bool, typer.Option("--base/--no-base", help="Also score the run's base model (reused when "
                                       "already scored at this limit), for the deltas.")] = True,
    batch_size: Annotated[int, typer.Option(help="Harness batch size.")] = 8,
    max_drop: Annotated[float, typer.Option(help="Warn of forgetting when the run is worse than its base by more "
                                            "than this many points beyond the 95% interval.")] = 2.0,
    json_out: JsonOpt = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Score a run on standard benchmarks with lm-evaluation-harness (zero-shot, log-likelihood
    multiple choice), from local copies only, and compare with its base model.

    Prints per benchmark: base and run accuracy (points), the delta with its 95% interval, n.
    Example: tuneloop eval --run run_01ab... --bench arc_challenge,hellaswag --bench-dir ~/benchmarks --limit 200
    """
    from training.benchmarks import bench_dir as resolve_dir
    from training.benchmarks import parse_names
    from workflows.benchmarks import evaluate_with_base

    benches = parse_names(bench)
    root = resolve_dir(bench_dir)
    p = project(project_dir)
    rid = _resolve(p, run)
    with progress("eval") as bar:
        bar.update(info="starting")
        run_id, base_id, rows = evaluate_with_base(p, rid, benches, root, limit=limit, batch_size=batch_size,
                                                   base=base, max_drop=max_drop,
                                                   progress=lambda msg: bar.update(info=msg))
    if json_out:
        emit_json({"run_id": run_id, "baseline_run_id": base_id, "limit": limit, "max_drop": max_drop,
                   "benchmarks": [r.__dict__ for r in rows]})
        return

    def pts(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    table = Table(title=f"general ability of {run_id}" + (f" (limit {limit})" if limit else ""))
    for col in ("benchmark", "base", "run", "delta [95% interval]", "n"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for r in rows:
        d = "" if r.delta is None else f"{r.delta:+.1f}" + (f" [{r.low:+.1f}, {r.high:+.1f}]" if r.low is not None else "")
        table.add_row(escape(r.benchmark), pts(r.base), pts(r.run), d, str(r.n))
    console.print(table)
    for r in rows:
        if r.forgetting:
            console.print(f"[bold yellow]warning:[/] forgetting on {escape(r.benchmark)}: the run is {-(r.delta or 0):.1f} "
                          f"points below its base, more than {max_drop:g} beyond the 95% interval", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app.command("train")(train)
    app.add_typer(runs_app, name="runs")
    app.command("predict")(predict)
    app.command("eval")(eval_benchmarks)
    app.command("metrics")(metrics)
    app.command("export-model")(export_model)
