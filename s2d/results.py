"""`s2d analyze` results as pandas DataFrames: `windows, videos = s2d.results.load("out")` (see s2d.batch.tables)."""

from s2d.batch.tables import Results, load

__all__ = ["Results", "load"]
