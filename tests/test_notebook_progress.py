"""Progress bars in a notebook executed by nbclient (what ``jupyter nbconvert --execute``
runs): the saved output's ``text/plain``, what GitHub or a notebook without a kernel shows,
reads where the bar ended, not tqdm's initial 0%."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_mlx_embed.progress import progress_bar

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

SETUP = '%load_ext jupyter_mlx_embed\n%config MLXEmbed.transport = "local"'


def _outputs(tmp_path: Path, *cells: str) -> list[dict]:
    """Execute a notebook of ``cells`` in a fresh kernel; the saved outputs of the last."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in (SETUP, *cells)]
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": tmp_path}},
    )
    client.execute()
    return notebook.cells[-1].outputs


def _bars(outputs: list[dict]) -> list[str]:
    """The text of each progress bar widget among ``outputs``."""
    return [
        "".join(output["data"]["text/plain"])
        for output in outputs
        if "application/vnd.jupyter.widget-view+json" in output.get("data", {})
    ]


@pytest.mark.slow
def test_saved_embed_output_shows_the_finished_bar(tmp_path: Path) -> None:
    texts = 'texts = [f"text number {i}" for i in range(15)]'
    outputs = _outputs(tmp_path, texts, "%embed -i texts -o docs")
    [bar] = _bars(outputs)
    assert bar.startswith("embedding: 100%") and "15/15" in bar, outputs


@pytest.mark.slow
def test_saved_output_of_a_failed_run_shows_where_it_stopped(tmp_path: Path) -> None:
    code = (
        "from jupyter_mlx_embed.progress import progress_bar\n"
        'with progress_bar(10, desc="working", unit="step") as bar:\n'
        "    bar.update(4)\n"
        '    raise RuntimeError("stopped")'
    )
    outputs = _outputs(tmp_path, code)
    [bar] = _bars(outputs)
    assert bar.startswith("working:  40%") and "4/10" in bar, outputs
    assert outputs[-1]["output_type"] == "error"


def test_outside_a_notebook_the_bar_is_text(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(3, desc="counting", unit="item") as bar:
        bar.update(3)
    assert "counting: 100%" in capsys.readouterr().err
