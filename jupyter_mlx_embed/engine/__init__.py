"""The MLX side of the package: the only modules that import ``mlx``.

Everything here runs on the worker thread (:mod:`jupyter_mlx_embed.worker`): ``mlx_engine``
loads models and runs forward passes, ``cpu_kernels`` is the CPU fast path and ``partition``
cuts its batches, ``blas`` binds a fast BLAS before ``mlx.core`` is imported, and
``tokenization`` turns texts into the model's token ids.
"""
