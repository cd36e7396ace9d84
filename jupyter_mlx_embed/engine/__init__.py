"""The MLX side of the package: the only modules that import ``mlx``.

Everything here runs on the worker thread (:mod:`jupyter_mlx_embed.worker`): ``mlx_engine``
loads models and runs forward passes, ``architectures`` holds the model code mlx-embeddings
lacks, ``cpu_kernels`` (BERT, XLM-R) and ``native_models`` (ModernBERT, Qwen3, Gemma 3) are the
CPU fast path, ``native`` builds and loads its C++ kernels (or takes the wheel's prebuilt ones)
and ``partition`` cuts its batches, ``blas`` binds a fast BLAS before
``mlx.core`` is imported and ``blas_probe`` reports which one MLX bound, ``_build`` compiles
the BLAS shim and the kernels into the cache folder, and ``tokenization`` turns texts into the
model's token ids.
"""
