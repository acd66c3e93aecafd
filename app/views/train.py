"""Train: pick a slice and a base model, choose what the CLI's ``key=value`` overrides choose, see
the memory plan, start; live loss / val-loss chart, tokens/s, ETA and the predictions after
training polled from the run folder; cancel or resume the run shown; "Predict on…" for a finished
run; the list of runs.

- A run starts through ``workflows.train.train``: when it succeeds, its own process predicts
  the slice's eval split (config ``predict_after``, ``predict_split``); this page only shows it.
- The controls (objective, from_run, beta, preference_pairs, quantization, gradient checkpointing,
  attention, unfreeze_every, nproc with device=cuda as ``--gpus N`` sets them, distributed) become
  ``key=value`` overrides, as the CLI's (``tuneloop train --slice S key=value ...``), applied over
  the TOML config below them; a control left at its default adds nothing, so such a key written
  in the TOML applies. The command line the run is equivalent to is shown before the start.
- DPO / ORPO train on the preference pairs corrections stored, gathered as the run will gather
  them (``training.runner.preference_rows``); DPO starts from a succeeded LoRA run (``from_run``,
  whose base the run uses). A slice without preference pairs says so and Start says why it is off.
- The memory plan (``training.memory``) of the chosen base and settings is shown before the start,
  from the base's config only (read once per base, never downloaded); when it does not fit and
  ``memory_check`` is on, Start is off and the plan says what to change.
- The runs list is the store's, synced from the run folders on every render and, while any run
  is queued or running, every 2 s by a fragment (``training.runner.sync_live``), which redraws
  the page when a run moves on; the fragments never hold the database warm.
- Each control acts on the run it shows: the Cancel button of the shown run is keyed by its id,
  and starting a run shows that run.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any, get_args

import altair as alt
import polars as pl
import streamlit as st

from app import components as ui
from app import state
from models import lm
from store import runs as runs_store
from store import slices as slices_store
from store.config import ConfigError
from store.db import Project, StoreBusyError
from store.records import Run
from training import config as train_config
from training import memory, runner
from workflows.train import train as start_training

DEFAULTS = train_config.TrainConfig.model_validate({})
# The keys the controls above the TOML set (as overrides); the default TOML leaves them out.
CONTROLLED = ("objective", "from_run", "beta", "preference_pairs", "quantization", "gradient_checkpointing",
              "attention", "unfreeze_every", "nproc", "distributed")
OBJECTIVES = {"sft": "SFT", "dpo": "DPO (on corrections)", "orpo": "ORPO (on corrections)"}
CHECKPOINTING = {"auto": None, "on": True, "off": False}


def _choices(key: str) -> list[str]:
    return list(get_args(train_config.TrainConfig.model_fields[key].annotation))


def _help(key: str) -> str:
    return str(train_config.TrainConfig.model_fields[key].description or "")


def _cli_value(v: Any) -> str:
    """A value as the CLI's ``key=value`` writes it (``store.config`` parses it back to ``v``)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, int | float) else str(v)


def overrides_of(values: dict[str, Any]) -> list[str]:
    """``key=value`` overrides for the controls not at their default (None: not set, the default)."""
    return [f"{k}={_cli_value(v)}" for k, v in values.items() if v is not None and v != getattr(DEFAULTS, k)]


@st.cache_resource(show_spinner="Reading the base model's config…", max_entries=16)
def base_shape(base: str) -> memory.Shape:
    """``training.memory.shape_of`` the base's config (AutoConfig only: no weights), cached per base.
    Never downloads: a hub id resolves from the local cache or not at all; the bundled default is
    read from its converted folder, else from its GGUF file's header. Raises when it cannot resolve
    (not cached, so a base that appears later is found)."""
    cfg = lm.base_config(base)
    return memory.shape_of(cfg)


def preference_count(project: Project, slice_id: str, objective: str, scope: str,
                     system_prompt: str) -> int:
    """How many preference pairs a dpo/orpo run on this slice would train on, gathered by
    ``training.runner.preference_rows``, the function the run itself uses (not cached: a correction
    made anywhere counts at once)."""
    with project.connect() as con:
        rows = slices_store.examples(con, slice_id).to_dicts()
    cfg = train_config.TrainConfig.model_construct(objective=objective, preference_pairs=scope,
                                                   system_prompt=system_prompt)
    try:
        return len(runner.preference_rows(project, cfg, rows, [r for r in rows if r["split"] == "train"]))
    except ValueError:  # none: the caller says so
        return 0


def effective_config(toml_text: str, overrides: list[str]) -> train_config.TrainConfig:
    """The config the run would get: the TOML, then the overrides (``training.config.load``)."""
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="tuneloop-draft-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(toml_text)
        return train_config.load(path, overrides)
    finally:
        os.unlink(path)


def start_points(succeeded: list[Run]) -> list[Run]:
    """Runs a dpo/orpo run can start from (``from_run``): succeeded, LoRA, with an adapter on disk."""
    return [r for r in succeeded if r.kind in runs_store.TRAINED_KINDS and r.adapter_path
            and (r.config or {}).get("method", "lora") == "lora"
            and (Path(r.adapter_path) / "adapter_config.json").exists()]


def show_memory_plan(cfg: train_config.TrainConfig, base: str) -> str | None:
    """Draw the memory plan of ``cfg`` on ``base``; returns why Start is off (None when it may start)."""
    st.markdown("**Memory plan**")
    try:
        shape = base_shape(base)
    except Exception as exc:  # noqa: BLE001 - not resolvable here: the trainer will say more
        st.caption(f"No memory plan: the config of base {ui.esc(ui.short(base, 80))} cannot be read here "
                   f"without downloading ({ui.esc(ui.short(f'{type(exc).__name__}: {exc}', 160))}). "
                   "The run's own process resolves the base when it starts.")
        return None
    device = lm.pick_device(cfg.device)
    device = "cuda:0" if device == "cuda" else device
    try:
        free: int | None = memory.free_memory(device)
    except Exception as exc:  # noqa: BLE001 - e.g. device=cuda on a machine without one
        st.caption(f"Free memory of {ui.esc(device)} unknown ({ui.esc(type(exc).__name__)}).")
        free = None
    p = memory.plan(shape, cfg, device)
    frame = pl.DataFrame({"bar": ["this run"] * len(p.parts()), "part": [k for k, _ in p.parts()],
                          "value": [v / memory.GiB for _, v in p.parts()]})
    if free is not None:
        frame = pl.concat([frame, pl.DataFrame({"bar": [f"free on {device}"], "part": ["free"],
                                                "value": [free / memory.GiB]})])
    chart = ui.bar_spec(frame, category="bar", value="value", color="part", number_format=".2f")
    if chart is not None:  # one bar stacked by the plan's parts, one of the free memory; GiB
        st.altair_chart(chart.encode(x=alt.X("value", type="quantitative", title="GiB", stack="zero",
                                             axis=alt.Axis(format=".2f", grid=True))), width="stretch")
    per_process = " per process" if cfg.nproc > 1 else ""
    st.caption(ui.esc(f"{p.describe()}{per_process}; "
                      + (f"{memory.gib(free)} free on {device}." if free is not None else f"on {device}.")))
    if cfg.nproc > 1 and cfg.distributed == "fsdp":
        st.caption(ui.esc(f"fsdp: each of the {cfg.nproc} processes holds 1/{cfg.nproc} of the weights and "
                          "optimizer state (counted so above)."))
    if free is None or p.total <= free:
        return None
    try:
        memory.check(shape, cfg, device, free)
    except memory.DoesNotFit as exc:
        if cfg.memory_check:
            st.error(ui.esc(f"Does not fit: {exc}"), icon=":material/memory:")
            return "the memory plan does not fit (memory_check = true refuses the run): change what it says"
        st.warning(ui.esc(f"Does not fit: {exc} It starts anyway: memory_check = false."), icon=":material/memory:")
    return None


st.title("Train")

try:  # the store learns what the run folders say now (no stale "queued" for a run that ended)
    runner.sync_live(state.project())
except (StoreBusyError, OSError) as exc:
    st.caption(f"(runs not synced just now: {type(exc).__name__})")
with state.db() as con:
    all_slices = slices_store.list_slices(con)
    runs = runs_store.overview(con, limit=100)
    succeeded = runs_store.list_runs(con, limit=200, status="succeeded")

tab_new, tab_runs = st.tabs(["New run", "Runs"])

with tab_new:
    if not state.can("train"):
        st.caption("Only admins start training runs.")
    elif not all_slices:
        st.info("No slice yet: save one on the **Explore** page first.")
    else:
        blocked: list[str] = []  # why Start is off
        objective = st.radio("Objective", list(OBJECTIVES), key="tr_objective", horizontal=True,
                             format_func=OBJECTIVES.__getitem__,
                             help="SFT on the slice's responses; DPO or ORPO on the preference pairs that corrections "
                                  "stored (chosen = the correction, rejected = the model's output)") or "sft"
        preferring = objective != "sft"
        from_run: Run | None = None
        scope: str = DEFAULTS.preference_pairs
        beta: float = DEFAULTS.beta
        if preferring:
            starts = start_points(succeeded)
            by_id = {r.id: r for r in starts}
            options: list[str] = ([] if objective == "dpo" else [""]) + list(by_id)

            def start_label(rid: str) -> str:
                if not rid:
                    return "none: a new adapter on the base model"
                r = by_id[rid]
                return f"{r.name or r.id} · {r.kind} · {ui.short(Path(r.base_model).name, 40)}"

            p = st.columns([3, 2, 1])
            picked_run = p[0].selectbox(
                "Start from run", options, key=f"tr_from_run_{objective}", format_func=start_label,
                help=_help("from_run") + ". The run trains on that run's base model.")
            from_run = by_id.get(picked_run or "")
            scope = p[1].radio("Preference pairs", _choices("preference_pairs"), key="tr_pref_scope", horizontal=True,
                               format_func={"slice": "of the slice", "all": "all in the project"}.__getitem__,
                               help=_help("preference_pairs")) or DEFAULTS.preference_pairs
            beta = float(p[2].number_input("beta", min_value=0.001, value=DEFAULTS.beta, step=0.05, format="%.3f",
                                           key="tr_beta", help=_help("beta")))
            if objective == "dpo" and not starts:
                st.warning("DPO starts from a succeeded LoRA run (and keeps it as the reference), and this project has "
                           "none yet: train an SFT run first.", icon=":material/info:")
                blocked.append("DPO needs a succeeded LoRA run to start from")
        c = st.columns([2, 2, 1])
        sl = c[0].selectbox("Slice", sorted(all_slices, key=lambda s: s.created_at or 0, reverse=True), key="tr_slice",
                            format_func=lambda s: f"{s.name}@{s.version} · {s.n_train:,} train / {s.n_eval:,} eval")
        base = c[1].text_input("Base model", "smollm2", key="tr_base", disabled=from_run is not None,
                               help="`smollm2` (the bundled SmolLM2-135M-Instruct), a Hugging Face id or a local folder")
        name = c[2].text_input("Run name", key="tr_name", help="Must be new; empty = SLICE@VERSION (made unique)")
        base_model = from_run.base_model if from_run is not None else (base.strip() or "smollm2")
        if from_run is not None:
            st.caption(f"Base model: {ui.esc(from_run.base_model)}, the base of the run it starts from.")

        with st.expander("Advanced: quantization, checkpointing, attention, gradual unfreezing"):
            a = st.columns(4)
            quantization = a[0].selectbox("Quantization", _choices("quantization"), key="tr_quant",
                                          format_func={"none": "none", "4bit": "4-bit (QLoRA, NF4)",
                                                       "8bit": "8-bit"}.__getitem__,
                                          help=_help("quantization"))
            ckpt = a[1].selectbox("Gradient checkpointing", list(CHECKPOINTING), key="tr_ckpt",
                                  help=_help("gradient_checkpointing"))
            attention = a[2].selectbox("Attention", _choices("attention"), key="tr_attention", help=_help("attention"))
            unfreeze = int(a[3].number_input("Unfreeze every (steps)", min_value=0, value=0, step=1, key="tr_unfreeze",
                                             help=_help("unfreeze_every")))
            n_cuda = memory.cuda_devices()
            if not n_cuda:
                st.caption("No CUDA device here: 4-bit and 8-bit quantization are refused by the trainer on this "
                           "machine (bitsandbytes runs on CUDA only).")
        nproc: int = DEFAULTS.nproc
        distributed: str = DEFAULTS.distributed
        if n_cuda > 1:
            g = st.columns([1, 2])
            nproc = int(g[0].number_input("GPUs (processes)", min_value=1, max_value=n_cuda, value=1, step=1,
                                          key="tr_nproc", help=_help("nproc")))
            distributed = g[1].selectbox("Distributed", [c for c in _choices("distributed") if not c.startswith("deepspeed")],
                                         key="tr_distributed",
                                         disabled=nproc == 1, help=_help("distributed")) or DEFAULTS.distributed
        else:
            st.caption(f"GPUs: one process: {n_cuda} CUDA device{'' if n_cuda == 1 else 's'} found.")

        overrides = overrides_of({
            "objective": objective, "from_run": from_run.id if from_run is not None else None,
            "beta": beta if preferring else None, "preference_pairs": scope if preferring else None,
            "quantization": quantization, "gradient_checkpointing": CHECKPOINTING[ckpt or "auto"],
            "attention": attention, "unfreeze_every": unfreeze, "nproc": nproc,
            "device": "cuda" if nproc > 1 else None,  # as the CLI's --gpus N: nproc=N device=cuda
            "distributed": distributed})
        default_toml = "".join(line for line in train_config.to_toml(DEFAULTS).splitlines(keepends=True)
                               if line.split(" = ", 1)[0] not in CONTROLLED)
        toml_text = st.text_area("Config (TOML; unknown keys are rejected; the controls above override the keys "
                                 "they set)", default_toml, height=260, key="tr_toml")
        # DPO with no run to start from is already said above (and keeps Start off): the plan and the
        # preference pairs are still shown, for the config as it will be once a run is picked.
        pending = ["from_run=(a run to pick)"] if objective == "dpo" and from_run is None else []
        try:
            cfg: train_config.TrainConfig | None = effective_config(toml_text, [*overrides, *pending])
        except ConfigError as exc:
            cfg = None
            st.error(ui.esc_block(str(exc)))
            blocked.append("the config is not valid (see above)")
        if cfg is not None and cfg.objective != "sft":
            try:
                n_pref = preference_count(state.project(), sl.id, cfg.objective, cfg.preference_pairs,
                                          cfg.system_prompt)
            except (StoreBusyError, OSError) as exc:
                st.caption(f"(preference pairs not counted just now: {type(exc).__name__})")
            else:
                where = "in the project" if cfg.preference_pairs == "all" else "for the slice's train pairs"
                if n_pref:
                    st.caption(f"{n_pref:,} preference pairs {where} ({cfg.objective} trains on them).")
                else:
                    st.warning(ui.esc(f"No preference pairs {where}: correct predictions first (Errors page, "
                                      "or `tuneloop errors correct`), or use the pairs of the whole project."),
                               icon=":material/info:")
                    blocked.append(f"{cfg.objective} needs preference pairs and there are none {where}")
        if cfg is not None:
            fits = show_memory_plan(cfg, base_model)
            if fits:
                blocked.append(fits)
        cli = ["tuneloop", "train", "--slice", f"{sl.name}@{sl.version}"]
        if from_run is None:
            cli += ["--base", base_model]
        st.caption("The same run from the command line (plus the TOML above as --config):")
        st.code(shlex.join([*cli, *overrides]), language="bash", wrap_lines=True)
        if blocked:
            st.caption(ui.esc("Start is off: " + "; ".join(blocked) + "."))
        if st.button("Start training", type="primary", key="tr_start", icon=":material/play_arrow:",
                     disabled=bool(blocked), help=ui.esc("; ".join(blocked)) if blocked else None):
            drafts = state.project().runs_dir / "_configs"
            drafts.mkdir(parents=True, exist_ok=True)
            cfg_path = drafts / f"{hashlib.sha256(toml_text.encode()).hexdigest()[:16]}.toml"
            cfg_path.write_text(toml_text, encoding="utf-8")
            try:
                run_id = start_training(state.project(), sl.id, base_model=None if from_run is not None else base_model,
                                        config_path=cfg_path, overrides=overrides, name=name.strip(),
                                        author=state.user())
            except (ConfigError, ValueError, KeyError, FileNotFoundError) as exc:
                st.error(ui.esc_block(str(exc)))
            else:
                state.put("tr_run", run_id)
                state.put("tr_watch", run_id)  # show (and cancel) the run just started, not the one shown before
                state.bump()
                state.flash(f"run {run_id} started in its own process")
                st.rerun()

with tab_runs:
    if runs.is_empty():
        st.caption("No runs yet.")
    else:
        shown_status = dict(zip(runs["id"].to_list(), runs["status"].to_list()))
        live_ids = {i for i, s in shown_status.items() if s not in runs_store.TERMINAL}

        @st.fragment(run_every=2 if live_ids else None)
        def runs_table() -> None:
            frame = runs
            if live_ids:
                try:
                    now = runner.sync_live(state.project())
                except (StoreBusyError, OSError):
                    now = None
                if now is not None:
                    with state.db(warm=False) as con:
                        frame = runs_store.overview(con, limit=100)
                    if set(now) != live_ids or any(shown_status.get(i) != s for i, s in now.items()):
                        st.rerun()  # a run moved on: redraw the page (labels, the shown run, "Predict on")
            st.dataframe(frame.drop("parent_run_id"), hide_index=True, width="stretch",
                         column_config={"id": st.column_config.TextColumn("run", width="small")})

        runs_table()
        ids: list[str] = runs["id"].to_list()
        default = state.get("tr_run") if state.get("tr_run") in ids else ids[0]
        labels = dict(zip(ids, (f"{n or i} · {s}" for i, n, s in zip(ids, runs["name"], runs["status"]))))

        def run_label(run_id: str) -> str:
            return labels[run_id]

        state.put("tr_watch", state.get("tr_watch") if state.get("tr_watch") in ids else default)
        watch = st.selectbox("Watch run", ids, key="tr_watch", format_func=run_label)
        with state.db() as con:
            watched = runs_store.get(con, watch) if watch is not None else None
        watched_after = runner.after_of(watched.run_dir) if watched is not None and watched.run_dir else None
        after_pending = watched_after is not None and watched_after.get("state") not in runner.AFTER_FINAL
        polling = watched is not None and (watched.status not in runs_store.TERMINAL or after_pending)

        @st.fragment(run_every=2 if polling else None)
        def live(run_id: str) -> None:
            project = state.project()
            try:
                run = runner.sync_run(project, run_id)
            except Exception as exc:  # the store is busy or the folder is gone: show, do not crash
                st.caption(f"(waiting for the project: {type(exc).__name__})")
                return
            prog = runner.progress_of(project, run_id) if run.run_dir else {}
            with state.db(warm=False) as con:
                m = runs_store.metrics_frame(con, run_id)
            c = st.columns(5)
            c[0].metric("Status", run.status)
            step, total = prog.get("step") or 0, prog.get("total_steps")
            c[1].metric("Step", f"{step}/{total}" if total else str(step))
            tps = prog.get("tokens_per_s")
            if tps is None and not m.is_empty():
                last = m.filter(pl.col("name") == "tokens_per_s")
                tps = last["value"][-1] if last.height else None
            c[2].metric("Tokens/s", f"{tps:,.0f}" if tps else "–")
            eta = prog.get("eta_s")
            if eta is None and total and step and run.started_at is not None and run.status == "running":
                elapsed = time.time() - float(prog.get("started_at") or time.time())
                eta = elapsed / step * (total - step) if elapsed > 0 else None
            c[3].metric("ETA", f"{eta / 60:.1f} min" if eta else "–")
            c[4].metric("Base model", ui.esc(ui.short(run.base_model, 24)))
            if total:
                st.progress(min(1.0, step / total))
            losses = m.filter(pl.col("name").is_in(["loss", "val_loss"])).to_pandas()
            if len(losses):
                # Long form, a line per metric: val_loss is logged at fewer steps than loss (every
                # eval_every steps, or once at the end), so in a wide table its line would break at
                # every gap; its points are drawn too, since one value alone makes no line.
                base = alt.Chart(losses).encode(
                    x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title="loss"),
                    color=alt.Color("name:N", title=None, legend=alt.Legend(orient="bottom")),
                    tooltip=["name:N", "step:Q", alt.Tooltip("value:Q", format=".4f")])
                chart = base.mark_line() + base.mark_point(filled=True, size=40).transform_filter(
                    alt.datum.name == "val_loss")
                st.altair_chart(chart.properties(height=260), width="stretch")
            after = runner.after_of(run.run_dir, prog) if run.run_dir else None
            if after is not None:
                text = ui.esc(str(after.get("message") or ""))
                if after.get("state") == "running" and after.get("total"):
                    done = int(after.get("done") or 0)
                    st.progress(min(1.0, done / int(after["total"])), text=f"{text}: {done}/{after['total']}")
                elif after.get("state") == "failed":
                    st.warning(text)
                else:
                    st.caption(f"After training: {text}")
            if run.error:
                st.error(ui.esc_block(run.error))
            b = st.columns(3)
            shown = run.name or run.id
            if run.status in ("queued", "running") and state.can("train") and b[0].button(
                    f"Cancel {ui.esc(shown)}", key=f"tr_cancel_{run_id}", icon=":material/stop:"):
                runner.cancel_run(project, run_id)
                st.rerun()
            if run.status in ("failed", "cancelled") and state.can("train") and b[1].button(
                    "Resume from checkpoint", key=f"tr_resume_{run_id}"):
                try:
                    runner.resume_run(project, run_id)
                except ValueError as exc:
                    st.error(ui.esc(str(exc)))
                else:
                    st.rerun()
            if run.status in runs_store.TERMINAL and run.adapter_path:
                st.caption(f"Adapter: {ui.esc(run.adapter_path)}")
            seen = (run_id, run.status, (after or {}).get("state"))
            before = state.get("tr_seen")
            state.put("tr_seen", seen)
            if before is not None and before[0] == run_id and before != seen:
                st.rerun()  # the run (or its predictions) moved on: the list and "Predict on" follow

        if watched is not None:
            live(watched.id)
            if watched.status == "succeeded" and state.can("analyse"):
                unpredicted = not runs.row(ids.index(watched.id), named=True)["predictions"]
                with st.expander("Predict on…", expanded=unpredicted and not after_pending):
                    ui.predict_on(watched.id, watched.name or watched.id, all_slices, own_slice_id=watched.slice_id,
                                  key=f"tr_predict_{watched.id}")
