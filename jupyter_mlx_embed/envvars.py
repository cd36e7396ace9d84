"""Every environment variable the package reads or sets, by name (pure).

Settings (:mod:`.config`) read ``JUPYTER_MLX_EMBED_<NAME>``; the rest are listed here.
"""

from __future__ import annotations

#: Prefix of the variables that settings fall back to: ``JUPYTER_MLX_EMBED_<NAME>``.
SETTING_PREFIX = "JUPYTER_MLX_EMBED_"
#: Set by the server extension in the server's environment, hence inherited by its kernels.
SERVER_PID = "JUPYTER_MLX_EMBED_SERVER_PID"
#: Set by the server extension when the server uses HTTPS: its certificate file, which the
#: kernels it starts (they inherit it) trust for that server, self-signed or not.
SERVER_CERTFILE = "JUPYTER_MLX_EMBED_SERVER_CERTFILE"
#: The API key of the standalone and kernel-side servers.
TOKEN = "JUPYTER_MLX_EMBED_TOKEN"
#: The OpenAI ``base_url`` of a standalone or kernel-side server (``%embed_serve`` sets it).
URL = "JUPYTER_MLX_EMBED_URL"
#: Set by Jupyter servers in the kernels they start: the server's pid.
JUPYTER_PARENT_PID = "JPY_PARENT_PID"


def setting_variable(name: str) -> str:
    """The environment variable a setting falls back to (``token_budget`` ->
    ``JUPYTER_MLX_EMBED_TOKEN_BUDGET``)."""
    return SETTING_PREFIX + name.upper()
