"""Native classes for the libraries people embed with, over this process's transport (the
Jupyter server's worker from its kernels, a local worker elsewhere, or a server by URL):

- :mod:`.langchain`: ``MLXEmbeddings``, ``MLXReranker`` (``pip install langchain-core``);
- :mod:`.llama_index`: ``MLXEmbedding``, ``MLXReranker`` (``llama-index-core``);
- :mod:`.chroma`: ``MLXEmbeddingFunction`` (``chromadb``);
- :mod:`.haystack`: ``MLXTextEmbedder``, ``MLXDocumentEmbedder`` (``haystack-ai``);
- :mod:`.jupyter_ai`: the embeddings provider jupyter-ai finds through its entry point.

Import the submodule of the library in use; each imports its library, nothing else does.
"""
