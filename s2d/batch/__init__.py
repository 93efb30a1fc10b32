"""Batch analysis of many videos (`s2d analyze`): the service's pipeline (service.predict.VideoAnalyser, the same
probabilities as POST /v1/classify) over files, folders, globs and manifests, into a Parquet (or CSV) dataset that
`load` reads back as pandas DataFrames; resumable; on local worker processes or a Ray cluster. Never imports torch.

    from s2d.batch import load
    windows, videos = load("out")
"""

from s2d.batch.tables import Results, load

__all__ = ["Results", "load"]
