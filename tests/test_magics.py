"""The IPython extension: every magic, option and error, in a real InteractiveShell."""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import jupyter_mlx_embed as jme
from jupyter_mlx_embed.embeddings import Embeddings
from jupyter_mlx_embed.settings import MLXEmbed


@pytest.fixture(scope="module")
def shell() -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    jme.set_transport("local")
    ip.run_line_magic("load_ext", "jupyter_mlx_embed")
    yield ip
    jme.get_worker().close()


@pytest.fixture(autouse=True)
def clean_namespace(shell: InteractiveShell) -> Iterator[None]:
    yield
    for name in ("docs", "texts", "out", "numbers", "series", "df", "a", "b", "Texts"):
        shell.user_ns.pop(name, None)


def test_line_magic_returns_the_vector(shell, corpus, reference) -> None:
    vector = shell.run_line_magic("embed", corpus[1])
    assert vector.shape == (384,)
    assert float(vector @ reference["embeddings"][1]) >= 0.9999


def test_line_magic_with_options(shell) -> None:
    vector = shell.run_line_magic("embed", "--dimensions 32 -- a short text")
    np.testing.assert_allclose(vector, jme.embed("a short text", dimensions=32), atol=1e-5)


def test_cell_magic_binds_name_one_text_per_line(shell) -> None:
    result = shell.run_cell_magic("embed", "docs", "first text\n\n   second text  \nthird\n")
    assert result is None
    docs = shell.user_ns["docs"]
    assert isinstance(docs, Embeddings)
    assert docs.texts == ["first text", "second text", "third"]
    np.testing.assert_allclose(docs.vectors, jme.embed(docs.texts), atol=1e-5)


def test_cell_magic_returns_when_no_name(shell) -> None:
    result = shell.run_cell_magic("embed", "", "alpha\nbeta")
    assert isinstance(result, Embeddings) and len(result) == 2


def test_cell_magic_prefix_model_and_dimensions(shell) -> None:
    shell.run_cell_magic(
        "embed", "docs --prefix 'query: ' --dimensions 8 --model all-MiniLM-L6-v2", "cats\ndogs"
    )
    docs = shell.user_ns["docs"]
    assert docs.texts == ["cats", "dogs"]  # the texts as written; the prefix only shapes vectors
    expected = jme.embed(["query: cats", "query: dogs"], dimensions=8)
    np.testing.assert_allclose(docs.vectors, expected, atol=1e-5)


@pytest.mark.parametrize("kind", [list, tuple, np.array])
def test_input_variable_is_embedded_in_chunks(shell, kind) -> None:
    texts = [f"text number {i}" for i in range(23)]
    shell.user_ns["texts"] = kind(texts)
    shell.run_line_magic("config", "MLXEmbed.chunk_size = 5")
    try:
        shell.run_line_magic("embed", "-i texts -o out")
    finally:
        shell.run_line_magic("config", "MLXEmbed.chunk_size = 256")
    out = shell.user_ns["out"]
    assert out.texts == texts
    np.testing.assert_allclose(out.vectors, jme.embed(texts), atol=1e-5)


def test_input_variable_pandas_series(shell) -> None:
    pd = pytest.importorskip("pandas")
    shell.user_ns["series"] = pd.Series(["one", "two"])
    result = shell.run_line_magic("embed", "-i series")
    assert isinstance(result, Embeddings) and result.texts == ["one", "two"]


def _interrupt_after(seconds: float, shell, line: str) -> str:
    """Run ``%embed line`` and press Ctrl-C (SIGINT to the main thread) after ``seconds``;
    returns the message of the KeyboardInterrupt it raises.

    As a kernel receives it: Python's own handler, SIGINT not blocked, and no garbage left by
    earlier tests (Ray's, the browsers') whose finalizers could run on the main thread at that
    moment and swallow the KeyboardInterrupt as an unraisable exception."""
    gc.collect()
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    main = threading.main_thread().ident
    timer = threading.Timer(seconds, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            shell.run_line_magic("embed", line)
    finally:
        timer.cancel()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)
    return str(raised.value)


def test_interrupt_stores_nothing_and_worker_keeps_serving(shell) -> None:
    shell.user_ns["texts"] = [f"sentence {i} " + "word " * 60 for i in range(3000)]
    shell.run_line_magic("config", "MLXEmbed.chunk_size = 50")
    try:
        message = _interrupt_after(1.5, shell, "-i texts -o out")
    finally:
        shell.run_line_magic("config", "MLXEmbed.chunk_size = 256")
    assert "out" not in shell.user_ns
    # The message is the exception's own (IPython shows it last, after a short traceback).
    assert message.startswith("Interrupted after ") and "nothing was stored" in message
    assert shell.run_line_magic("embed", "still working").shape == (384,)


def test_embed_info_shows_transport_model_and_blas(shell, capsys) -> None:
    shell.run_line_magic("embed", "warm")
    shell.run_line_magic("embed_info", "")
    out = capsys.readouterr().out
    assert "transport      local" in out
    assert "all-MiniLM-L6-v2" in out
    assert "scipy-openblas" in out or "openblas" in out
    assert "all-MiniLM-L6-v2: 384 dimensions, max 256 tokens, mean pooling" in out


def test_embed_info_says_a_loaded_reranker_is_one(shell, capsys, tmp_path) -> None:
    from .reranker_models import build_reranker

    folder = build_reranker("ms-marco-MiniLM-L6-v2", tmp_path, layers=1)
    before = list(_settings(shell).model_roots)
    shell.run_line_magic("config", f"MLXEmbed.model_roots = [{str(tmp_path)!r}]")
    try:
        shell.run_line_magic("embed", "warm")  # the worker restarts with the new root
        jme.rerank("a query", ["a document"], model=folder.name)
        capsys.readouterr()
        shell.run_line_magic("embed_info", "")
        lines = capsys.readouterr().out.splitlines()
        card = next(line for line in lines if line.startswith(f"{folder.name}: "))
    finally:
        shell.run_line_magic("config", f"MLXEmbed.model_roots = {before!r}")
    assert card.startswith(f"{folder.name}: reranker, max 512 tokens, ")
    assert "None" not in card


def test_config_changes_reach_the_worker(shell) -> None:
    shell.run_line_magic("config", "MLXEmbed.token_budget = 1024")
    try:
        shell.run_line_magic("embed", "reconfigure")
        assert jme.get_worker().config.token_budget == 1024
    finally:
        shell.run_line_magic("config", "MLXEmbed.token_budget = 8192")


def _settings(shell) -> MLXEmbed:
    return next(c for c in shell.configurables if isinstance(c, MLXEmbed))


def test_config_refuses_a_value_below_the_minimum_and_keeps_the_old_one(
    shell, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(shell)
    before = settings.queue_size
    try:
        shell.run_line_magic("config", "MLXEmbed.queue_size = 0")
    finally:  # %config also merged the refused value into the shell's own config
        shell.config.MLXEmbed.pop("queue_size", None)
    # %config reports a refused value through logging, on one line.
    logged = [r.getMessage() for r in caplog.records if r.name == "root"]
    assert logged == ["MLXEmbed.queue_size must be >= 1, got 0"]
    assert settings.queue_size == before
    assert shell.run_line_magic("embed", "still works").shape == (384,)


def test_an_invalid_environment_variable_is_a_usage_error(shell, monkeypatch) -> None:
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CPU_STREAMS", "0")  # no trait set: the env applies
    with pytest.raises(UsageError, match=r"^invalid setting: cpu_streams must be >= 1, got 0$"):
        shell.run_line_magic("embed", "some text")


@pytest.mark.parametrize(
    ("magic", "line", "cell", "message"),
    [
        ("embed", "", None, "needs a text"),
        ("embed", "-i", None, "expected one argument"),
        ("embed", "-i nothere", None, "no variable named 'nothere'"),
        ("embed", "-i numbers", None, "not a string"),
        ("embed", "--dimensions x -- t", None, "invalid int value"),
        ("embed", "--dimensions 0 -- t", None, "positive integer"),
        ("embed", "--dimensions 999 -- t", None, "dimensions must be between 1 and 384"),
        ("embed", "--model nope -- t", None, "does not exist"),
        ("embed", "--bogus t", None, r"^%embed: unknown option --bogus \(options: -i, "),
        ("embed", "docs --dimension 8", "t", r"^%%embed: unknown option --dimension; did you "),
        ("embed", '--prefix "query: t', None, "^No closing quotation: "),
        ("embed", "bad-name!", "x", "not a valid variable name"),
        ("embed", "docs", "\n  \n", "no text"),
        ("embed_serve", "--stop", None, "no server is running"),
    ],
)
def test_user_mistakes_are_usage_errors(shell, magic, line, cell, message) -> None:
    shell.user_ns["numbers"] = [1, 2, 3]
    with pytest.raises(UsageError, match=message):
        if cell is None:
            shell.run_line_magic(magic, line)
        else:
            shell.run_cell_magic(magic, line, cell)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('-i ["a","b"] --bogus -o docs', "unknown option --bogus (options: -i, --input, -o, "),
        ('-i ["x","y"] --dimension 5 -o docs', "unknown option --dimension; did you mean "),
        ("-i texts -o docs --skip-invalids", "unknown option --skip-invalids; did you mean "),
        ("-i texts -x -o docs", "unknown option -x (options: "),
        ("-i -o docs", "argument -i/--input: expected one argument"),
    ],
)
def test_an_unknown_option_after_the_input_is_named_not_evaluated(shell, line, message) -> None:
    """The -i expression ends at the first option outside brackets and strings, known or
    not: a mistyped one is reported as such, not as part of a failed expression."""
    shell.user_ns["texts"] = ["one", "two"]
    with pytest.raises(UsageError) as raised:
        shell.run_line_magic("embed", line)
    assert str(raised.value).startswith(f"%embed: {message}")
    assert "\n" not in str(raised.value) and "docs" not in shell.user_ns


def test_an_image_input_typed_as_a_folder_ends_before_the_options(shell, tmp_path) -> None:
    with pytest.raises(UsageError, match=r"^%embed_images: unknown option --bogus"):
        shell.run_line_magic("embed_images", f"-i {tmp_path}/ --bogus -o docs")
    with pytest.raises(UsageError, match=r"^%embed_images -i: no picture files match "):
        shell.run_line_magic("embed_images", f"-i {tmp_path}/* -o docs")


def test_input_expressions_holding_dashes_stay_whole(shell) -> None:
    """Dashes inside strings, a minus before a negated operand and a known option after the
    expression: none of them cut the expression short."""
    pd = pytest.importorskip("pandas")
    shell.user_ns["df"] = pd.DataFrame({"a -- b": ["first", "second"]})
    column = shell.run_line_magic("embed", '-i df["a -- b"] --skip-invalid')
    assert column.texts == ["first", "second"]
    shell.run_cell(
        "class Texts(list):\n"
        "    def __neg__(self): return self\n"
        "    def __sub__(self, other): return Texts(t for t in self if t not in other)\n"
        "a, b = Texts(['kept', 'dropped']), Texts(['dropped'])"
    )
    assert shell.run_line_magic("embed", "-i a - -b -o docs") is None
    assert shell.user_ns["docs"].texts == ["kept"]


def test_usage_error_shows_no_traceback(shell, capsys) -> None:
    shell.run_cell("%embed --model nope -- text")
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "UsageError" in output and "does not exist" in output
    assert "Traceback" not in output


def test_embed_serve_serves_this_kernels_worker(shell, capsys, monkeypatch) -> None:
    import json
    import os
    import urllib.request

    from .servers import free_port

    port = free_port()
    monkeypatch.setenv("JUPYTER_MLX_EMBED_TOKEN", "")  # so it is removed after the test
    shell.run_line_magic("embed_serve", f"--port {port}")
    try:
        out = capsys.readouterr().out
        token = os.environ["JUPYTER_MLX_EMBED_TOKEN"]
        assert f"http://127.0.0.1:{port}/v1" in out and token not in out
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/embeddings",
            data=json.dumps({"input": "served from the kernel"}).encode(),
            headers={"Authorization": f"Bearer {token}"},
        )
        body = json.loads(urllib.request.urlopen(request, timeout=60).read())
        expected = jme.embed("served from the kernel")
        np.testing.assert_allclose(body["data"][0]["embedding"], expected, atol=1e-5)
    finally:
        shell.run_line_magic("embed_serve", "--stop")


def test_collection_errors_name_the_users_variable_and_index(shell) -> None:
    shell.user_ns["texts"] = ["fine"] * 300 + [None]
    with pytest.raises(UsageError, match=r"texts\[300\] is None, a missing value, not a string"):
        shell.run_line_magic("embed", "-i texts")


@pytest.fixture
def table():
    import pandas as pd

    return pd.DataFrame(
        {
            "text": ["The Cat sat", None, "a dog barked", "", "   ", float("nan"), "x" * 10_000],
            "topic": list("abcdefg"),
        },
        index=[f"row{i}" for i in range(7)],
    )


def test_input_is_any_expression_and_keeps_series_labels(shell, table) -> None:
    shell.user_ns["df"] = table.dropna().loc[lambda d: d.text.str.strip() != ""]
    shell.run_line_magic("embed", '-i df["text"] -o docs')
    docs = shell.user_ns["docs"]
    assert docs.index == ["row0", "row2", "row6"] and docs.texts[1] == "a dog barked"
    joined = shell.user_ns["df"].join(docs.to_pandas()["embedding"])
    assert joined.loc["row2", "embedding"].shape == (384,)
    lowered = shell.run_line_magic("embed", "-i df.text.str.lower()")
    assert lowered.texts[0] == "the cat sat" and lowered.index == docs.index


def test_dirty_column_is_refused_whole_with_positions_labels_and_the_fix(shell, table) -> None:
    shell.user_ns["df"] = table
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("embed", "-i df.text -o docs")
    message = str(info.value)
    assert "4 items of df.text are not texts" in message
    assert "df.text[1] (label 'row1') is " in message and "a missing value" in message
    assert "df.text[3] (label 'row3') is an empty string" in message
    assert "--skip-invalid" in message and "docs" not in shell.user_ns


def test_pandas_missing_values_are_named_as_missing(shell) -> None:
    """A nullable string column holds pd.NA, not None or NaN: it is missing all the same."""
    pandas = pytest.importorskip("pandas")
    shell.user_ns["s"] = pandas.Series(["a cat", None, "a dog"], dtype="string")
    with pytest.raises(UsageError, match=r"s\[1\] is <NA>, a missing value, not a string"):
        shell.run_line_magic("embed", "-i s")


def test_skip_invalid_with_no_text_at_all_is_one_usage_error(shell, capsys) -> None:
    shell.user_ns["texts"] = [None, "", "   "]
    with pytest.raises(UsageError) as raised:
        shell.run_line_magic("embed", "-i texts --skip-invalid -o docs")
    assert str(raised.value) == (
        "%embed -i: every one of the 3 items of texts is missing, blank or not a string: "
        "nothing to embed"
    )
    assert capsys.readouterr().out == "" and "docs" not in shell.user_ns


def test_skip_invalid_embeds_the_rest_and_records_what_was_skipped(shell, table) -> None:
    shell.user_ns["df"] = table
    shell.run_line_magic("embed", "-i df.text -o docs --skip-invalid")
    docs = shell.user_ns["docs"]
    assert docs.skipped == ["row1", "row3", "row4", "row5"]
    assert docs.index == ["row0", "row2", "row6"] and len(docs) == 3
    np.testing.assert_allclose(docs.vectors[2], jme.embed("x" * 10_000), atol=1e-5)


def test_a_question_mark_is_part_of_the_text_not_a_help_request(shell) -> None:
    shell.run_cell("v = %embed What is a cat?")
    np.testing.assert_allclose(shell.user_ns["v"], jme.embed("What is a cat?"), atol=1e-5)
    result = shell.run_cell("%embed Is it?")
    assert result.success and result.result.shape == (384,)


def test_the_python_api_applies_the_same_rules(shell) -> None:
    with pytest.raises(jme.InvalidRequestError, match=r"^2 items of input are not texts"):
        jme.embed(["fine", None, "  "])


def test_openai_client_reaches_this_kernels_server(shell, monkeypatch) -> None:
    monkeypatch.delenv("JUPYTER_MLX_EMBED_URL", raising=False)
    monkeypatch.setenv("JUPYTER_MLX_EMBED_TOKEN", "")
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    with pytest.raises(jme.EmbedError, match="No embedding endpoint"):
        jme.openai_client()
    shell.run_line_magic("embed_serve", "--port 0")
    try:
        client = jme.openai_client()
        reply = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello world"])
        vector = np.asarray(reply.data[0].embedding, dtype=np.float32)
        assert float(vector @ jme.embed("hello world")) >= 0.9999
    finally:
        shell.run_line_magic("embed_serve", "--stop")


def test_rerunning_an_interrupted_cell_resumes_from_the_cache(shell, tmp_path) -> None:
    shell.user_ns["texts"] = [f"resumable sentence {i} " + "word " * 40 for i in range(3000)]
    for line in ("cache = True", f"cache_dir = {str(tmp_path)!r}", "chunk_size = 50"):
        shell.run_line_magic("config", f"MLXEmbed.{line}")
    try:
        shell.run_line_magic("embed", "warm")  # the worker restarts with the cache on
        worker = jme.get_worker()
        misses_before = worker.stats.cache_misses
        assert "running the cell again resumes" in _interrupt_after(1.5, shell, "-i texts -o docs")
        worker._cache.flush()
        started = worker.stats.cache_misses - misses_before  # chunks begun before Ctrl-C
        assert 0 < started < 3000
        shell.run_line_magic("embed", "-i texts -o docs")  # the re-run
        assert len(shell.user_ns["docs"]) == 3000
        # Every chunk finished before the interrupt is a hit; only the one running then
        # (50 texts) may have been dropped unfinished.
        assert worker.stats.cache_hits >= started - 50
        assert worker.stats.cache_misses - misses_before - started <= 3000 - started + 50
    finally:
        for line in ("cache = False", "cache_dir = None", "chunk_size = 256"):
            shell.run_line_magic("config", f"MLXEmbed.{line}")
