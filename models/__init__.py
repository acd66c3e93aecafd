"""Model runtime shared by ingest (model generator), training and analysis (embeddings).

Sits just above store/: it may import torch, transformers and sentence-transformers, and it
never imports ingest/, training/ or analysis/. Heavy imports happen inside functions.
"""
