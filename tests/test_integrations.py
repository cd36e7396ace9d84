"""jupyter_mlx_embed.integrations: each library's native class gives embed()'s vectors (with
the model's query and document prompts, and ``dimensions``), works inside the library the way
its users call it, and goes through this process's transport: a local worker here, the
Jupyter server's worker from a kernel that server started, or a server named by URL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import jupyter_mlx_embed as jme
from jupyter_mlx_embed.errors import EmbedError
from jupyter_mlx_embed.standalone import ThreadedServer
from jupyter_mlx_embed.worker import Worker

from .servers import jupyter_server, run_in_kernel

PROMPTED = "tiny-gemma3-mean"  # publishes "query" and "document" prompts
DOCS = [
    "The kitten chased a ball of yarn across the kitchen floor.",
    "Quarterly revenue rose twelve percent on strong cloud sales.",
    "Knead the dough for ten minutes, then let it rise for an hour.",
]
QUERY = "a young cat playing"
TOKEN = "integrations-secret"


@pytest.fixture(scope="session")
def reranker(ms_marco: Path) -> str:
    """cross-encoder/ms-marco-MiniLM-L6-v2 at its published shape: its folder's name."""
    return ms_marco.name


@pytest.fixture(scope="module")
def worker(model_root: Path, ms_marco: Path) -> Iterator[Worker]:
    """This process's worker (the integrations' default transport), with the tiny models and
    a reranker besides the bundled default."""
    jme.set_transport("local")
    worker = jme.configure(model_roots=(model_root, ms_marco.parent), cache=False)
    yield worker
    worker.close()


def assert_same(got: object, expected: np.ndarray) -> None:
    vectors = np.asarray(got, dtype=np.float32)
    assert vectors.shape == expected.shape
    cosine = np.sum(vectors * expected, axis=-1) / np.linalg.norm(vectors, axis=-1)
    assert float(np.min(cosine)) >= 0.9999


# ------------------------------------------------------------------------------- LangChain


def test_langchain_embeddings_use_the_models_query_and_document_prompts(worker: Worker) -> None:
    from jupyter_mlx_embed.integrations.langchain import MLXEmbeddings

    embeddings = MLXEmbeddings(PROMPTED)
    documents = jme.embed(DOCS, model=PROMPTED, prompt_name="document")
    query = jme.embed(QUERY, model=PROMPTED, prompt_name="query")
    assert not np.allclose(query, jme.embed(QUERY, model=PROMPTED), atol=1e-3)  # prompts matter
    assert_same(embeddings.embed_documents(DOCS), documents)
    assert_same(embeddings.embed_query(QUERY), query)
    assert_same(asyncio.run(embeddings.aembed_documents(DOCS)), documents)
    assert_same(asyncio.run(embeddings.aembed_query(QUERY)), query)
    plain = MLXEmbeddings(PROMPTED, query_prompt_name=None, dimensions=8)
    assert_same(plain.embed_query(QUERY), jme.embed(QUERY, model=PROMPTED, dimensions=8))
    assert embeddings.embed_documents([]) == []


def test_langchain_vector_store_finds_the_nearest_text(worker: Worker) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from jupyter_mlx_embed.integrations.langchain import MLXEmbeddings

    store = InMemoryVectorStore.from_texts(DOCS, MLXEmbeddings())
    assert store.similarity_search(QUERY, k=1)[0].page_content == DOCS[0]


def test_langchain_reranker_orders_by_the_rerankers_scores(worker: Worker, reranker: str) -> None:
    from langchain_core.documents import Document

    from jupyter_mlx_embed.integrations.langchain import MLXReranker

    expected = jme.rerank(QUERY, DOCS, model=reranker)
    documents = [Document(page_content=text, metadata={"n": i}) for i, text in enumerate(DOCS)]
    kept = MLXReranker(model=reranker, top_n=2).compress_documents(documents, QUERY)
    assert [d.metadata["n"] for d in kept] == [hit.index for hit in expected.hits[:2]]
    scores = [d.metadata["relevance_score"] for d in kept]
    np.testing.assert_allclose(scores, [hit.score for hit in expected.hits[:2]], rtol=1e-5)
    again = asyncio.run(
        MLXReranker(model=reranker, top_n=None).acompress_documents(documents, QUERY)
    )
    assert len(again) == 3


# ------------------------------------------------------------------------------- LlamaIndex


def test_llama_index_embedding_with_dimensions_and_prompts(worker: Worker) -> None:
    from jupyter_mlx_embed.integrations.llama_index import MLXEmbedding

    model = MLXEmbedding(model_name=PROMPTED, dimensions=16)
    expected = jme.embed(DOCS, model=PROMPTED, dimensions=16, prompt_name="document")
    assert_same(model.get_text_embedding_batch(DOCS), expected)
    assert_same(asyncio.run(model.aget_text_embedding_batch(DOCS)), expected)
    query = jme.embed(QUERY, model=PROMPTED, dimensions=16, prompt_name="query")
    assert_same(model.get_query_embedding(QUERY), query)
    assert_same(asyncio.run(model.aget_query_embedding(QUERY)), query)


def test_llama_index_retriever_and_reranker(worker: Worker, reranker: str) -> None:
    from llama_index.core import Document, VectorStoreIndex

    from jupyter_mlx_embed.integrations.llama_index import MLXEmbedding, MLXReranker

    index = VectorStoreIndex.from_documents(
        [Document(text=text) for text in DOCS], embed_model=MLXEmbedding()
    )
    nodes = index.as_retriever(similarity_top_k=3).retrieve(QUERY)
    assert nodes[0].node.get_content() == DOCS[0]
    ranked = MLXReranker(model=reranker, top_n=2).postprocess_nodes(nodes, query_str=QUERY)
    expected = jme.rerank(QUERY, [n.node.get_content() for n in nodes], model=reranker)
    assert [n.node.get_content() for n in ranked] == [hit.text for hit in expected.hits[:2]]
    np.testing.assert_allclose(
        [n.score for n in ranked], [hit.score for hit in expected.hits[:2]], rtol=1e-5
    )


# ----------------------------------------------------------------------------------- Chroma

REOPEN = """
import json, sys
import chromadb
from jupyter_mlx_embed.integrations.chroma import MLXEmbeddingFunction
collection = chromadb.PersistentClient(sys.argv[1]).get_collection("notes")
config = collection.configuration_json["embedding_function"]
found = collection.query(query_texts=[sys.argv[2]], n_results=1)
print(json.dumps({"config": config, "nearest": found["documents"][0][0],
                  "dimensions": len(collection.get(include=["embeddings"])["embeddings"][0])}))
"""


def test_chroma_function_persists_with_the_collection(worker: Worker, tmp_path: Path) -> None:
    import chromadb

    from jupyter_mlx_embed.integrations.chroma import MLXEmbeddingFunction

    function = MLXEmbeddingFunction(dimensions=128)
    client = chromadb.PersistentClient(
        str(tmp_path), settings=chromadb.Settings(anonymized_telemetry=False)
    )
    collection = client.create_collection("notes", embedding_function=function)
    collection.add(ids=["0", "1", "2"], documents=DOCS)
    stored = np.asarray(collection.get(ids=["0"], include=["embeddings"])["embeddings"])
    assert_same(stored, jme.embed(DOCS[:1], dimensions=128))
    # A new process that imports the module gets the function back from the collection's
    # config (Chroma's registry), with no token in it, and queries with it.
    reopened = subprocess.run(
        [sys.executable, "-c", REOPEN, str(tmp_path), QUERY],
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    result = json.loads(reopened.stdout.strip().splitlines()[-1])
    assert result["config"]["name"] == "jupyter_mlx_embed"
    assert result["config"]["config"] == function.get_config()
    assert "token" not in json.dumps(result["config"]).replace("token_env_var", "")
    assert result["nearest"] == DOCS[0] and result["dimensions"] == 128


# --------------------------------------------------------------------------------- Haystack


def test_haystack_pipeline_round_trips_and_embeds(worker: Worker) -> None:
    from haystack import Document, Pipeline

    from jupyter_mlx_embed.integrations.haystack import MLXDocumentEmbedder, MLXTextEmbedder

    pipeline = Pipeline()
    pipeline.add_component("documents", MLXDocumentEmbedder(meta_fields_to_embed=["title"]))
    loaded = Pipeline.loads(pipeline.dumps())  # saved and loaded as YAML
    documents = [Document(content=text, meta={"title": "Notes"}) for text in DOCS]
    out = loaded.run({"documents": {"documents": documents}})["documents"]["documents"]
    assert_same([d.embedding for d in out], jme.embed([f"Notes\n{t}" for t in DOCS]))
    query = MLXTextEmbedder(model=PROMPTED).run(QUERY)["embedding"]
    assert_same(query, jme.embed(QUERY, model=PROMPTED, prompt_name="query"))


def test_haystack_raises_on_failure_instead_of_returning_none(worker: Worker) -> None:
    from haystack import Document

    from jupyter_mlx_embed.integrations.haystack import MLXDocumentEmbedder

    with pytest.raises(EmbedError, match="no-such-model"):
        MLXDocumentEmbedder(model="no-such-model").run([Document(content="x")])


# ----------------------------------------------------------------------- a server by its URL


def test_a_server_named_by_url_and_token(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_mlx_embed.integrations.langchain import MLXEmbeddings

    server = ThreadedServer.start(worker, port=0, token=TOKEN)
    try:
        remote = MLXEmbeddings(url=server.url, token=TOKEN, dimensions=32)
        assert_same(remote.embed_documents(DOCS), jme.embed(DOCS, dimensions=32))
        monkeypatch.delenv("JUPYTER_MLX_EMBED_TOKEN", raising=False)
        with pytest.raises(EmbedError, match="token"):
            MLXEmbeddings(url=server.url).embed_query(QUERY)
        monkeypatch.setenv("JUPYTER_MLX_EMBED_TOKEN", "wrong")
        with pytest.raises(EmbedError) as refused:
            MLXEmbeddings(url=server.url.removesuffix("/v1")).embed_query(QUERY)
        assert refused.value.status == 401
    finally:
        server.stop_soon().result(timeout=30)


# -------------------------------------------------------------------- from a Jupyter kernel

KERNEL_CODE = """
import json, os, sys
from jupyter_mlx_embed.integrations.langchain import MLXEmbeddings
from jupyter_mlx_embed.integrations.llama_index import MLXEmbedding
from jupyter_mlx_embed.integrations.haystack import MLXTextEmbedder
import jupyter_mlx_embed as jme
texts = %r
print("RESULT " + json.dumps({
    "langchain": MLXEmbeddings().embed_documents(texts),
    "llama_index": MLXEmbedding(dimensions=64).get_text_embedding_batch(texts),
    "haystack": MLXTextEmbedder().run(texts[0])["embedding"],
    "transport": jme.get_transport().kind,
    "mlx": "mlx.core" in sys.modules,
    "tiktoken": "tiktoken" in sys.modules,
    "api_key": "OPENAI_API_KEY" in os.environ,
}))
"""


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with jupyter_server(tmp_path_factory.mktemp("integrations-root"), TOKEN) as url:
        yield url


@pytest.mark.slow
def test_integrations_in_a_kernel_use_the_servers_worker(worker: Worker, jupyter: str) -> None:
    out = asyncio.run(run_in_kernel(jupyter, TOKEN, KERNEL_CODE % (DOCS,)))
    assert out["status"] == "ok", out
    line = next(x for x in out["stdout"].splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["transport"] == "server"
    assert not result["mlx"] and not result["tiktoken"] and not result["api_key"]
    assert_same(result["langchain"], jme.embed(DOCS))
    assert_same(result["llama_index"], jme.embed(DOCS, dimensions=64))
    assert_same(result["haystack"], jme.embed(DOCS[0]))
