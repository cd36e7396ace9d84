"""Batch jobs over whole corpora (core layer): Arrow tables on one worker (``tables``), Ray
Data actors (``raydata``), input files (``readers``) and resumable file jobs (``filejob``,
their part files and manifest in ``parts``).

Users import them from :mod:`jupyter_mlx_embed.distributed`; ``ray`` and ``pyarrow`` are
imported when a job runs, never when the package is imported.
"""
