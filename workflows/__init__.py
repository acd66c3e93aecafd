"""The loop's steps that cross stages, as library functions with typed arguments.

The stages below each have one entry point (``ingest.documents.ingest``, ``analysis.curate``,
``training.runner.start_run``, ``training.predict.predict_run``, ``workflows.errors.auto``);
the functions here chain them:

- ``workflows.predict.predict_and_categorise``: predictions of a run, scored (``scoring``) and
  stored with the run's metrics, then pre-categorised into error categories;
- ``workflows.errors``: a run's errors by category, accuracy, comparisons, the review queue,
  and the corrected slice of a run;
- ``workflows.train.train``: start a training run whose own processes then predict its eval
  split (``predict_and_categorise``) when it succeeds (config ``predict_after``, ``predict_split``);
- ``workflows.dynamics.map_run``: a run's training dynamics as a data map (cartography), its
  hard-to-learn and ambiguous pairs stored as quality signals;
- ``workflows.retrain.retrain``: freeze the corrected slice of a run and train on it with the
  run's config (the correction round).

The CLI (``tuneloop``) and the app both call these; neither calls the other, and the app runs
them in a child process (``workflows.job``) so no long step runs inside a Streamlit rerun.
"""
