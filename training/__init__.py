"""Training and predictions: format slices, fine-tune (LoRA/full/top-k) in a run process, predict, score.

Public entry points: ``training.runner.start_run`` / ``sync_run`` / ``cancel_run`` / ``resume_run``,
``training.predict.predict_run`` / ``predict_base``, ``training.export.export_adapter`` /
``export_merged``. Nothing here imports ingest/, analysis/ or app/; heavy imports are lazy.
"""
