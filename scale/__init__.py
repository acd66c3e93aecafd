"""Where the heavy stages run: in this process and its parser workers (``local``, the default), or
on Ray (``ray``: a local Ray runtime with this machine's cores, or an existing cluster).

``scale.engine`` holds the choice (flag, project setting, ``RAY_ADDRESS``), the Ray runtime, and
the Parquet shards work flows through. The stages themselves stay where they live (``ingest``
parses, ``analysis`` embeds and signs); they hand ``scale`` a function or a class per shard.
"""
