"""Curation and error analysis: pure functions over store records and Polars frames."""
