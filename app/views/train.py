"""Train: pick a slice and a base model, edit the config, start; live loss / val-loss charts,
tokens/s and ETA polled from the run folder; cancel or resume; the list of runs."""

from __future__ import annotations

import hashlib
import time

import polars as pl
import streamlit as st

from app import components as ui
from app import state
from store import runs as runs_store
from store import slices as slices_store
from store.config import ConfigError
from training import config as train_config
from training import runner

st.title("Train")

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
        name = c[2].text_input("Run name", key="tr_name")
        default_toml = train_config.to_toml(train_config.TrainConfig.model_validate({}))
        toml_text = st.text_area("Config (TOML; unknown keys are rejected)", default_toml, height=260, key="tr_toml")
        if st.button("Start training", type="primary", key="tr_start", icon=":material/play_arrow:"):
            drafts = state.project().runs_dir / "_configs"
            drafts.mkdir(parents=True, exist_ok=True)
            cfg_path = drafts / f"{hashlib.sha256(toml_text.encode()).hexdigest()[:16]}.toml"
            cfg_path.write_text(toml_text, encoding="utf-8")
            try:
                run_id = runner.start_run(state.project(), sl.id, base_model=base.strip() or None,
                                          config_path=cfg_path, name=name.strip(), author=state.user())
            except (ConfigError, ValueError, KeyError) as exc:
                st.error(str(exc))
            else:
                state.put("tr_run", run_id)
                state.bump()
                state.flash(f"run {run_id} started in its own process")
                st.rerun()

with tab_runs:
    if runs.is_empty():
        st.caption("No runs yet.")
    else:
        st.dataframe(runs.drop("parent_run_id"), hide_index=True, width="stretch",
                     column_config={"id": st.column_config.TextColumn("run", width="small")})
        ids: list[str] = runs["id"].to_list()
        default = state.get("tr_run") if state.get("tr_run") in ids else ids[0]
        labels = dict(zip(ids, (f"{n or i} · {s}" for i, n, s in zip(ids, runs["name"], runs["status"]))))

        def run_label(run_id: str) -> str:
            return labels[run_id]

        state.put("tr_watch", state.get("tr_watch") if state.get("tr_watch") in ids else default)
        watch = st.selectbox("Watch run", ids, key="tr_watch", format_func=run_label)

        @st.fragment(run_every=2)
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
            c[4].metric("Base model", ui.short(run.base_model, 24))
            if total:
                st.progress(min(1.0, step / total))
            losses = m.filter(pl.col("name").is_in(["loss", "val_loss"]))
            if losses.height:
                st.line_chart(losses.pivot(on="name", index="step", values="value").sort("step"), x="step",
                              height=260)
            if run.error:
                st.error(run.error)
            b = st.columns(3)
            if run.status in ("queued", "running") and state.can("train") and b[0].button(
                    "Cancel run", key=f"tr_cancel_{run_id}", icon=":material/stop:"):
                runner.cancel_run(project, run_id)
                st.rerun(scope="fragment")
            if run.status in ("failed", "cancelled") and state.can("train") and b[1].button(
                    "Resume from checkpoint", key=f"tr_resume_{run_id}"):
                try:
                    runner.resume_run(project, run_id)
                except ValueError as exc:
                    st.error(str(exc))
            if run.status in runs_store.TERMINAL and run.adapter_path:
                st.caption(f"Adapter: `{run.adapter_path}`")

        if watch is not None:
            live(watch)
