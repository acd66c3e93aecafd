"""Train: pick a slice and a base model, edit the config, start; live loss / val-loss chart,
tokens/s, ETA and the predictions after training polled from the run folder; cancel or resume
the run shown; "Predict on…" for a finished run; the list of runs.

- A run starts through ``workflows.train.train``: when it succeeds, its own process predicts
  the slice's eval split (config ``predict_after``, ``predict_split``); this page only shows it.
- The runs list is the store's, synced from the run folders on every render and, while any run
  is queued or running, every 2 s by a fragment (``training.runner.sync_live``), which redraws
  the page when a run moves on; the fragments never hold the database warm.
- Each control acts on the run it shows: the Cancel button of the shown run is keyed by its id,
  and starting a run shows that run.
"""

from __future__ import annotations

import hashlib
import time

import altair as alt
import polars as pl
import streamlit as st

from app import components as ui
from app import state
from store import runs as runs_store
from store import slices as slices_store
from store.config import ConfigError
from store.db import StoreBusyError
from training import config as train_config
from training import runner
from workflows.train import train as start_training

st.title("Train")

try:  # the store learns what the run folders say now (no stale "queued" for a run that ended)
    runner.sync_live(state.project())
except (StoreBusyError, OSError) as exc:
    st.caption(f"(runs not synced just now: {type(exc).__name__})")
with state.db() as con:
    all_slices = slices_store.list_slices(con)
    runs = runs_store.overview(con, limit=100)

tab_new, tab_runs = st.tabs(["New run", "Runs"])

with tab_new:
    if not state.can("train"):
        st.caption("Only admins start training runs.")
    elif not all_slices:
        st.info("No slice yet: save one on the **Explore** page first.")
    else:
        newest = sorted(all_slices, key=lambda s: s.created_at or 0, reverse=True)
        c = st.columns([2, 2, 1])
        sl = c[0].selectbox("Slice", newest, key="tr_slice",
                            format_func=lambda s: f"{s.name}@{s.version} · {s.n_train:,} train / {s.n_eval:,} eval")
        base = c[1].text_input("Base model", "smollm2", key="tr_base",
                               help="`smollm2` (the bundled SmolLM2-135M-Instruct), a Hugging Face id or a local folder")
        name = c[2].text_input("Run name", key="tr_name", help="Must be new; empty = SLICE@VERSION (made unique)")
        default_toml = train_config.to_toml(train_config.TrainConfig.model_validate({}))
        toml_text = st.text_area("Config (TOML; unknown keys are rejected)", default_toml, height=260, key="tr_toml")
        if st.button("Start training", type="primary", key="tr_start", icon=":material/play_arrow:"):
            drafts = state.project().runs_dir / "_configs"
            drafts.mkdir(parents=True, exist_ok=True)
            cfg_path = drafts / f"{hashlib.sha256(toml_text.encode()).hexdigest()[:16]}.toml"
            cfg_path.write_text(toml_text, encoding="utf-8")
            try:
                run_id = start_training(state.project(), sl.id, base_model=base.strip() or None,
                                        config_path=cfg_path, name=name.strip(), author=state.user())
            except (ConfigError, ValueError, KeyError) as exc:
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
