"""Instruction prompts from config_sentence_transformers.json, as sentence-transformers
applies them: named, default, or given; vectors equal embedding the prefixed text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jupyter_mlx_embed import InvalidRequestError

PROMPTS = {"query": "query: ", "document": "passage: "}
TEXTS = ["the cat sat on the mat", "quick brown fox"]


@pytest.fixture
def prompted(model_root: Path, tmp_path: Path) -> Path:
    """tiny-bert-cls with prompts and a default prompt (``document``)."""
    folder = shutil.copytree(model_root / "tiny-bert-cls", tmp_path / "tiny-prompted")
    config = {"prompts": PROMPTS, "default_prompt_name": "document"}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    return tmp_path


def test_named_prompt_equals_the_prefixed_text(make_worker, prompted: Path, model_root) -> None:
    worker = make_worker(model_roots=(prompted, model_root))
    got = worker.submit(TEXTS, model="tiny-prompted", prompt_name="query").result()
    plain = worker.submit([f"query: {t}" for t in TEXTS], model="tiny-bert-cls").result()
    np.testing.assert_allclose(got.vectors, plain.vectors, atol=1e-6)
    assert got.token_counts == plain.token_counts  # the prompt's tokens count in usage


def test_default_prompt_applies_when_none_is_named(make_worker, prompted, model_root) -> None:
    worker = make_worker(model_roots=(prompted, model_root))
    got = worker.submit(TEXTS, model="tiny-prompted").result()
    plain = worker.submit([f"passage: {t}" for t in TEXTS], model="tiny-bert-cls").result()
    np.testing.assert_allclose(got.vectors, plain.vectors, atol=1e-6)
    own = worker.submit(TEXTS, model="tiny-prompted", prompt="").result()  # no prompt at all
    bare = worker.submit(TEXTS, model="tiny-bert-cls").result()
    np.testing.assert_allclose(own.vectors, bare.vectors, atol=1e-6)


def test_unknown_prompt_name_lists_the_models_prompts(make_worker, prompted, model_root) -> None:
    worker = make_worker(model_roots=(prompted, model_root))
    future = worker.submit(TEXTS, model="tiny-prompted", prompt_name="question")
    with pytest.raises(InvalidRequestError, match="'query', 'document'") as info:
        future.result()
    assert info.value.param == "prompt_name" and info.value.status == 400


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt_name": 3}, "prompt_name must be a string"),
        ({"prompt_name": "query", "prompt": "x: "}, "not both"),
    ],
)
def test_bad_prompt_options_are_refused_at_submit(make_worker, options, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        make_worker().submit(TEXTS, **options)


def test_a_prompt_name_for_a_model_without_prompts_is_refused(make_worker) -> None:
    worker = make_worker()
    with pytest.raises(InvalidRequestError, match="its prompts: none"):
        worker.submit(TEXTS, prompt_name="passage").result()


def test_http_and_python_api_take_prompt_name(make_worker, prompted, model_root) -> None:
    import jupyter_mlx_embed as jme
    from jupyter_mlx_embed.standalone import ThreadedServer

    worker = make_worker(model_roots=(prompted, model_root))
    expected = worker.submit([f"query: {TEXTS[0]}"], model="tiny-bert-cls").result().vectors[0]
    server = ThreadedServer.start(worker, port=0, token="prompt-token")
    try:
        from openai import OpenAI

        client = OpenAI(base_url=server.url, api_key="prompt-token")
        reply = client.embeddings.create(
            model="tiny-prompted", input=[TEXTS[0]], extra_body={"prompt_name": "query"}
        )
        np.testing.assert_allclose(reply.data[0].embedding, expected, atol=1e-5)
        bad = {"prompt_name": "nope"}
        with pytest.raises(Exception, match="has no prompt named 'nope'"):
            client.embeddings.create(model="tiny-prompted", input=["x"], extra_body=bad)
    finally:
        server.stop_soon()
    jme.set_transport("local")
    got = jme.embed(TEXTS[0], model="tiny-prompted", prompt_name="query")
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_models_route_shows_metadata(make_worker, prompted, model_root) -> None:
    import json
    import urllib.request

    from jupyter_mlx_embed.standalone import ThreadedServer

    worker = make_worker(model_roots=(prompted, model_root))
    worker.submit(["load it"], model="tiny-prompted").result()
    server = ThreadedServer.start(worker, port=0, token="meta-token")
    headers = {"Authorization": "Bearer meta-token"}
    try:
        url = server.url + "/models/tiny-prompted"
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as reply:
            card = json.loads(reply.read())
        with urllib.request.urlopen(
            urllib.request.Request(server.url + "/models", headers=headers)
        ) as reply:
            listed = {m["id"]: m for m in json.loads(reply.read())["data"]}
    finally:
        server.stop_soon()
    assert card["id"] == "tiny-prompted" and card["object"] == "model"
    assert (card["dimensions"], card["pooling"], card["max_input_tokens"]) == (32, "cls", 24)
    assert card["prompts"] == PROMPTS and card["default_prompt_name"] == "document"
    assert card["quantization"] is None and card["loaded"] is True
    assert listed["tiny-prompted"] == card
    assert listed["all-MiniLM-L6-v2"]["loaded"] is False
    assert "chat-llama" not in listed  # only what a request can use


def test_explorer_queries_use_the_models_query_prompt(make_worker, prompted, model_root) -> None:
    import jupyter_mlx_embed as jme
    from jupyter_mlx_embed.transport import LocalTransport

    worker = make_worker(model_roots=(prompted, model_root))
    texts = ["a cat on a mat", "a fox in a den", "rain over the river"]
    docs = jme.Embeddings(
        texts, worker.submit(texts, model="tiny-prompted").result().vectors, "tiny-prompted"
    )
    explorer = jme.SimilarityExplorer(docs, transport=LocalTransport(lambda: worker, timeout=60))
    results = explorer.search_text("a small animal")
    query = worker.submit(["query: a small animal"], model="tiny-bert-cls").result().vectors[0]
    expected = docs.search(query, k=len(texts))
    assert [h.index for h in results] == [h.index for h in expected][: len(results)]
    assert results[0].score == pytest.approx(expected[0].score, abs=1e-5)


def test_query_and_document_are_empty_prompts_where_a_model_sets_none(worker) -> None:
    """As sentence-transformers' ``encode_query``/``encode_document`` on any model."""
    plain = worker.submit(TEXTS).result().vectors
    for name in ("query", "document"):
        got = worker.submit(TEXTS, prompt_name=name).result().vectors
        np.testing.assert_array_equal(got, plain)
