"""What a model folder says about itself: task, architecture, pooling, limits (pure: no MLX).

Pooling, the ``Dense`` layers after it and the maximum sequence length come from the folder's
sentence-transformers files (``modules.json``, ``1_Pooling/config.json``,
``2_Dense/config.json``, ``sentence_bert_config.json``) so that vectors match
sentence-transformers, and not from a fixed choice per architecture. A checkpoint whose
``config.json`` names a ``*ForSequenceClassification`` architecture is a reranker
(cross-encoder): it scores (query, document) pairs as sentence-transformers' ``CrossEncoder``
does, with the activation its config names. A SigLIP checkpoint (``model_type: siglip``) embeds
texts and images into one space: its image tower's input comes from
``preprocessor_config.json`` (:class:`ImageInput`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, ModelTypeError, elide

#: Architectures whose text forward we run and test (module names in ``mlx_embeddings.models``,
#: or in ``engine/architectures`` for those we implement ourselves).
SUPPORTED_MODEL_TYPES = ("bert", "xlm_roberta", "modernbert", "qwen3", "gemma3_text", "nomic_bert")
#: Image-text architectures: a text tower and an image tower into one space.
IMAGE_TEXT_MODEL_TYPES = ("siglip",)

#: Pooling modes we implement, named as sentence-transformers' ``pooling_mode_*`` keys.
POOLING_MODES = ("cls", "mean", "max", "lasttoken", "mean_sqrt_len_tokens")

_ST_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}
# sentence-transformers modules we run, in the order they must come: the Transformer, its
# Pooling, any Dense layers on the pooled vector, then Normalize (we always L2-normalise).
_ST_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")

#: sentence-transformers ``Dense`` activations we apply, by their ``activation_function``
#: (``torch.nn`` class paths); a config without one gets ``Dense``'s default, Tanh.
DENSE_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.SiLU": "silu",
}
#: What a model does: ``embed`` texts into vectors, or ``rerank`` (score query-document pairs).
TASKS = ("embed", "rerank")
#: Cross-encoder architectures we score with (``config.json`` ``architectures``), by the
#: classification head each puts on its encoder.
RERANKER_HEADS = {
    "BertForSequenceClassification": "bert",  # the pooler (CLS, dense, tanh), a linear layer
    "XLMRobertaForSequenceClassification": "roberta",  # CLS, dense, tanh, a linear layer
    "ModernBertForSequenceClassification": "modernbert",  # pooled, dense, act, norm, linear
}
_ST_CONFIG = "config_sentence_transformers.json"
_GENERATIVE_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# A tokenizer's "no limit" sentinel is a huge int; anything above this is not a real limit.
_UNBOUNDED = 1_000_000


@dataclass(frozen=True)
class Quantization:
    """An MLX-quantized checkpoint's ``config.json`` ``quantization`` block (mlx-community
    conversions): weights stored as ``bits``-bit integers with one scale and bias per
    ``group_size`` values.

    Attributes:
        group_size: Values sharing one scale and bias.
        bits: Bits per stored value.
        mode: ``mx.quantize`` mode (``affine`` unless the block says otherwise).
    """

    group_size: int
    bits: int
    mode: str = "affine"


@dataclass(frozen=True)
class DenseModule:
    """A sentence-transformers ``Dense`` module (``2_Dense``, ``3_Dense``, ...): it maps the
    pooled vector ``x`` to ``activation(x @ W.T + b)`` (plus ``x``, or a projection of it, when
    ``residual``), before normalisation.

    Attributes:
        path: The module's folder, holding ``config.json`` and ``model.safetensors`` (tensors
            ``linear.weight``, ``linear.bias`` if ``bias``, ``residual.weight`` for a residual
            between different sizes).
        in_features: Length of the vector it takes.
        out_features: Length of the vector it gives.
        bias: Whether the linear layer adds a bias.
        activation: One of the values of :data:`DENSE_ACTIVATIONS`.
        residual: Whether the input is added to the output (``use_residual``).
    """

    path: Path
    in_features: int
    out_features: int
    bias: bool = True
    activation: str = "tanh"
    residual: bool = False


@dataclass(frozen=True)
class Reranker:
    """How a cross-encoder turns its encoder's last hidden state into one score per pair.

    Attributes:
        head: One of the values of :data:`RERANKER_HEADS`.
        activation: Applied to the logit (one of :data:`DENSE_ACTIVATIONS`' values): the
            config's sentence-transformers ``activation_fn``, else sigmoid (CrossEncoder's
            default for one label).
        segments: Whether the pair's second text gets token type 1 (``type_vocab_size`` > 1).
        head_activation: ModernBERT's ``classifier_activation`` (``gelu`` is exact GELU).

    What the head pools is the spec's ``pooling``: ModernBERT's ``classifier_pooling`` (``cls``
    or ``mean``), the first token otherwise.
    """

    head: str
    activation: str = "sigmoid"
    segments: bool = False
    head_activation: str = "gelu"


#: A model folder's tokenizer: ``tokenizer.json``, or SentencePiece's model as Google
#: publishes SigLIP (no ``tokenizer.json``).
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def tokenizer_file(path: Path) -> Path | None:
    """The first of :data:`TOKENIZER_FILES` the folder holds, or None."""
    for name in TOKENIZER_FILES:
        if (path / name).is_file():
            return path / name
    return None


#: transformers' ``SiglipTextConfig`` / ``SiglipVisionConfig`` defaults for what Google's
#: published ``config.json`` files leave out (read here and by the SigLIP architecture).
SIGLIP_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 64,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}
SIGLIP_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}
#: PIL's resampling filters by the number image processors store (``resample``).
RESAMPLING = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class ImageInput:
    """What an image tower takes, as the checkpoint's ``preprocessor_config.json`` says:
    pictures converted to RGB, resized to ``height`` x ``width`` with ``resample``, then each
    value ``(v * rescale - mean) / std`` per channel.

    Attributes:
        height: Pixel rows the tower takes.
        width: Pixel columns.
        patch: Side of the square patches the tower cuts (each one token).
        resample: One of :data:`RESAMPLING`'s values.
        rescale: Factor of the 0-255 values (1/255).
        mean: Per channel, subtracted after rescaling.
        std: Per channel, divided by last.
    """

    height: int
    width: int
    patch: int
    resample: str = "bicubic"
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def tokens(self) -> int:
        """Patches per picture: the tower's sequence length, what a picture costs."""
        return (self.height // self.patch) * (self.width // self.patch)


@dataclass(frozen=True)
class ModelSpec:
    """A resolved, validated embedding model folder.

    Attributes:
        name: The canonical name reported to clients.
        path: The folder holding ``config.json``, weights and tokenizer.
        source: Where the registry found it: ``bundled``, ``root``, ``hf-cache`` or ``hub``.
        model_type: The architecture (``config.json`` ``model_type``).
        pooling: One of :data:`POOLING_MODES`.
        max_seq_length: Inputs are truncated to this many tokens (special tokens included).
        dimension: Length of the output vectors (the last Dense module's ``out_features``
            where the model has any, else the hidden size).
        vocab_size: Valid token ids are ``0 <= id < vocab_size``.
        pad_token_id: Id used for padding positions (masked out).
        quantization: The checkpoint's MLX quantization, ``None`` for float weights.
        prompts: Named instruction prefixes (``config_sentence_transformers.json``), e.g.
            ``{"query": "query: ", "document": "passage: "}``.
        default_prompt_name: The prompt used when a request names none, if any.
        dense: The sentence-transformers Dense modules applied after pooling, in order.
        reranker: For a cross-encoder, its scoring head (``task`` is then ``rerank``).
        image: For an image-text model, what its image tower takes (None: texts only).
    """

    name: str
    path: Path
    source: str
    model_type: str
    pooling: str
    max_seq_length: int
    dimension: int
    vocab_size: int
    pad_token_id: int = 0
    quantization: Quantization | None = None
    prompts: dict[str, str] = field(default_factory=dict, hash=False)
    default_prompt_name: str | None = None
    dense: tuple[DenseModule, ...] = ()
    reranker: Reranker | None = None
    image: ImageInput | None = None

    @property
    def task(self) -> str:
        """What the model does: one of :data:`TASKS`."""
        return "embed" if self.reranker is None else "rerank"

    @property
    def modalities(self) -> tuple[str, ...]:
        """What it embeds: ``("text",)``, or ``("text", "image")`` for an image-text model."""
        return ("text",) if self.image is None else ("text", "image")


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Cannot read {path.name} of model folder {path.parent}: {exc}"
        ) from exc


def read_model_spec(path: Path, *, name: str, source: str) -> ModelSpec:
    """Read and validate a model folder.

    Args:
        path: The model folder.
        name: The name clients use for it.
        source: How the registry found it.

    Raises:
        ModelLoadError: ``config.json``, weights or tokenizer are missing or unreadable.
        ModelTypeError: The folder holds a model that is not a supported embedding model.
    """
    config = _read_json(path / "config.json")
    if not isinstance(config, dict):
        raise ModelLoadError(f"Model '{name}' has no valid config.json in {path}")
    model_type = str(config.get("model_type", "")).replace("-", "_")
    if model_type in IMAGE_TEXT_MODEL_TYPES:
        return _siglip_spec(path, name=name, source=source, config=config)
    modules = _read_json(path / "modules.json")
    reranker = _reranker(name, model_type, config, _read_json(path / _ST_CONFIG))
    if reranker is None:
        _check_embedding_model(name, model_type, config, modules)

    if not any(path.glob("model*.safetensors")) and not any(path.glob("*/model*.safetensors")):
        raise ModelLoadError(f"Model '{name}' has no model*.safetensors weights in {path}")
    if not (path / "tokenizer.json").is_file():
        raise ModelLoadError(f"Model '{name}' has no tokenizer.json in {path}")

    # NomicBERT's own config names the hidden size n_embd.
    hidden = config.get("hidden_size") or config.get("d_model") or config.get("n_embd")
    vocab_size = config.get("vocab_size")
    if not isinstance(hidden, int) or not isinstance(vocab_size, int):
        raise ModelLoadError(f"Model '{name}': config.json lacks hidden_size or vocab_size")
    dense = () if reranker else _dense_modules(name, model_type, modules, path, hidden)
    pad = config.get("pad_token_id")
    return ModelSpec(
        name=name,
        path=path,
        source=source,
        model_type=model_type,
        pooling=_classifier_pooling(name, model_type, config, reranker)
        if reranker
        else _pooling_mode(name, model_type, config, modules, path),
        max_seq_length=_max_seq_length(model_type, config, path),
        dimension=dense[-1].out_features if dense else hidden,
        vocab_size=vocab_size,
        pad_token_id=pad if isinstance(pad, int) and 0 <= pad < vocab_size else 0,
        quantization=_quantization(name, config),
        **({} if reranker else _prompts(name, _read_json(path / _ST_CONFIG))),
        dense=dense,
        reranker=reranker,
    )


def _siglip_spec(path: Path, *, name: str, source: str, config: dict[str, Any]) -> ModelSpec:
    """A SigLIP checkpoint as Google publishes it (``spiece.model``, no ``tokenizer.json``) or
    converted (``tokenizer.json``). Its text tower reads texts padded to its full context with
    ``</s>`` and pools the last position (no attention mask), as the model was trained; its
    vector is the text or image tower's head output, normalised.

    Raises:
        ModelLoadError: A file is missing or unreadable.
    """
    text = {**SIGLIP_TEXT_DEFAULTS, **(config.get("text_config") or {})}
    vision = {**SIGLIP_VISION_DEFAULTS, **(config.get("vision_config") or {})}
    if not any(path.glob("model*.safetensors")):
        raise ModelLoadError(f"Model '{name}' has no model*.safetensors weights in {path}")
    if tokenizer_file(path) is None:
        raise ModelLoadError(
            f"Model '{name}' has neither tokenizer.json nor spiece.model in {path}"
        )
    preprocessor = _read_json(path / "preprocessor_config.json")
    if not isinstance(preprocessor, dict):
        raise ModelLoadError(f"Model '{name}' has no valid preprocessor_config.json in {path}")
    image = _image_input(name, preprocessor, vision)
    projection = text.get("projection_size") or text["hidden_size"]
    if projection != vision["hidden_size"]:
        raise ModelLoadError(
            f"Model '{name}': its text vectors ({projection}) and image vectors "
            f"({vision['hidden_size']}) differ in length"
        )
    tok = _read_json(path / "tokenizer_config.json")
    declared = tok.get("model_max_length") if isinstance(tok, dict) else None
    context = int(text["max_position_embeddings"])
    if isinstance(declared, int) and 0 < declared < context:
        context = declared
    return ModelSpec(
        name=name,
        path=path,
        source=source,
        model_type="siglip",
        pooling="lasttoken",
        max_seq_length=context,
        dimension=int(projection),
        vocab_size=int(text["vocab_size"]),
        pad_token_id=int(text.get("pad_token_id", 1)),
        quantization=_quantization(name, config),
        image=image,
    )


def _image_input(name: str, pre: dict[str, Any], vision: dict[str, Any]) -> ImageInput:
    """The image tower's input from ``preprocessor_config.json`` (transformers' defaults where
    it is silent), checked against the tower's own ``image_size``."""
    size = pre.get("size") or {}
    side = int(vision["image_size"])
    height, width = int(size.get("height", side)), int(size.get("width", side))
    if (height, width) != (side, side):
        raise ModelLoadError(
            f"Model '{name}': preprocessor_config.json resizes to {height} x {width}, but its "
            f"image tower takes {side} x {side}"
        )
    resample = RESAMPLING.get(pre.get("resample", 3))
    if resample is None:
        raise ModelLoadError(f"Model '{name}': unknown resample {pre.get('resample')!r}")

    def triple(key: str, default: float) -> tuple[float, float, float]:
        value = (
            pre.get(key, default) if pre.get("do_normalize", True) else float(key == "image_std")
        )
        if isinstance(value, (int, float)):
            value = [value] * 3
        if not isinstance(value, list) or len(value) != 3:
            raise ModelLoadError(f"Model '{name}': preprocessor_config.json {key} is not 3 values")
        return (float(value[0]), float(value[1]), float(value[2]))

    return ImageInput(
        height=height,
        width=width,
        patch=int(vision["patch_size"]),
        resample=resample,
        rescale=float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0,
        mean=triple("image_mean", 0.5),
        std=triple("image_std", 0.5),
    )


def _reranker(
    name: str, model_type: str, config: dict[str, Any], st_config: Any
) -> Reranker | None:
    """The scoring head of a cross-encoder checkpoint (``*ForSequenceClassification``), or
    None for any other model. Its activation is the first that sentence-transformers'
    ``CrossEncoder`` finds: ``activation_fn`` of ``config_sentence_transformers.json``
    (``st_config``, as sentence-transformers 5 and later save it), of ``config.json``'s
    ``sentence_transformers`` key (version 4), its older ``sbert_ce_default_activation_function``,
    else sigmoid.

    Raises:
        ModelTypeError: A classification architecture we do not score with, or one with
            more than one label (a reranker gives one relevance score per pair).
    """
    architectures = [str(a) for a in config.get("architectures") or []]
    classifiers = [a for a in architectures if a.endswith("ForSequenceClassification")]
    if not classifiers:
        return None
    head = RERANKER_HEADS.get(classifiers[0])
    if head is None:
        raise ModelTypeError(
            f"Model '{name}' is a {classifiers[0]}, which is not a supported reranker "
            f"architecture; supported: {', '.join(RERANKER_HEADS)}",
            model_type=model_type,
        )
    labels = config.get("id2label")
    count = len(labels) if isinstance(labels, dict) else config.get("num_labels", 1)
    if count != 1:
        raise ModelTypeError(
            f"Model '{name}' is a classifier with {count} labels; a reranker gives one "
            "relevance score per pair (one label)",
            model_type=model_type,
        )
    saved = st_config.get("activation_fn") if isinstance(st_config, dict) else None
    st = config.get("sentence_transformers")
    path = saved or (st.get("activation_fn") if isinstance(st, dict) else None)
    path = path or config.get("sbert_ce_default_activation_function")
    if path is not None and path not in DENSE_ACTIVATIONS:
        supported = ", ".join(p.rsplit(".", 1)[-1] for p in DENSE_ACTIVATIONS)
        raise ModelTypeError(
            f"Model '{name}' scores with the activation {elide(path)}, which is not supported "
            f"(supported: {supported})",
            model_type=model_type,
        )
    return Reranker(
        head=head,
        activation=DENSE_ACTIVATIONS[path] if path else "sigmoid",
        segments=int(config.get("type_vocab_size", 0) or 0) > 1,
        head_activation=str(config.get("classifier_activation", "gelu")),
    )


def _classifier_pooling(
    name: str, model_type: str, config: dict[str, Any], reranker: Reranker
) -> str:
    """What a cross-encoder's head reads of the last hidden state: ModernBERT's
    ``classifier_pooling``, the first token (``cls``) for the others."""
    if reranker.head != "modernbert":
        return "cls"
    pooling = str(config.get("classifier_pooling", "mean"))
    if pooling not in ("cls", "mean"):
        raise ModelTypeError(
            f"Model '{name}' pools with {elide(pooling)}; supported: cls, mean",
            model_type=model_type,
        )
    return pooling


def _prompts(name: str, st_config: Any) -> dict[str, Any]:
    """``prompts`` and ``default_prompt_name`` as sentence-transformers reads them."""
    if not isinstance(st_config, dict):
        return {}
    prompts = st_config.get("prompts") or {}
    default = st_config.get("default_prompt_name")
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise ModelLoadError(f"Model '{name}': config_sentence_transformers.json has bad prompts")
    if default is not None and default not in prompts:
        raise ModelLoadError(
            f"Model '{name}': default_prompt_name {default!r} is not one of its prompts"
        )
    return {"prompts": dict(prompts), "default_prompt_name": default}


def _quantization(name: str, config: dict[str, Any]) -> Quantization | None:
    block = config.get("quantization")
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ModelLoadError(f"Model '{name}': config.json 'quantization' is not an object")
    for key in ("group_size", "bits"):
        value = block.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelLoadError(
                f"Model '{name}': config.json 'quantization.{key}' must be a positive "
                f"integer, got {value!r}"
            )
    mode = block.get("mode", "affine")
    if not isinstance(mode, str):
        raise ModelLoadError(
            f"Model '{name}': config.json 'quantization.mode' must be a string, got {mode!r}"
        )
    return Quantization(group_size=block["group_size"], bits=block["bits"], mode=mode)


def _check_embedding_model(
    name: str, model_type: str, config: dict[str, Any], modules: Any
) -> None:
    architectures = [str(a) for a in config.get("architectures") or []]
    generative = any(a.endswith(_GENERATIVE_SUFFIXES) for a in architectures)
    # Decoder embedders (e.g. Qwen3-Embedding) keep a *ForCausalLM architecture name but ship
    # a sentence-transformers modules.json; chat models do not.
    if generative and modules is None:
        raise ModelTypeError(
            f"Model '{name}' is a generative language model ({architectures[0]}, model_type "
            f"'{model_type}'), not an embedding model",
            model_type=model_type,
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelTypeError(
            f"Model '{name}' has model_type '{model_type or '?'}', which is not a supported "
            f"embedding architecture; supported: {', '.join(SUPPORTED_MODEL_TYPES)}",
            model_type=model_type,
        )
    if modules is not None:
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ModelLoadError(f"Model '{name}': modules.json is not a list of modules")
        kinds = [_module_kind(m) for m in modules]
        for kind in kinds:
            if kind not in _ST_MODULES:
                raise ModelTypeError(
                    f"Model '{name}' uses the sentence-transformers module '{kind}', which is "
                    f"not supported (supported: {', '.join(_ST_MODULES)})",
                    model_type=model_type,
                )
        # Dense layers act on the pooled vector, and a Normalize before one would feed it a
        # unit vector where we feed the raw one: only this order is what we compute.
        order = [_ST_MODULES.index(kind) for kind in kinds]
        if order != sorted(order) or kinds.count("Pooling") > 1 or kinds.count("Normalize") > 1:
            raise ModelTypeError(
                f"Model '{name}' runs the sentence-transformers modules in the order "
                f"{' -> '.join(kinds)}; supported: Transformer -> Pooling -> Dense (any "
                "number) -> Normalize",
                model_type=model_type,
            )
        if "Dense" in kinds and "Pooling" not in kinds:
            raise ModelTypeError(
                f"Model '{name}' has Dense modules but no Pooling module", model_type=model_type
            )


def _module_kind(module: dict[str, Any]) -> str:
    """``Dense`` for ``sentence_transformers.models.Dense`` (or any other module path)."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _dense_modules(
    name: str, model_type: str, modules: Any, path: Path, hidden: int
) -> tuple[DenseModule, ...]:
    """The Dense modules of ``modules.json`` as sentence-transformers' ``Dense.load`` reads
    them (its constructor's defaults where the config says nothing), checked to chain from
    the pooled vector (``hidden`` values) and to have safetensors weights."""
    found: list[DenseModule] = []
    for module in modules if isinstance(modules, list) else []:
        if _module_kind(module) != "Dense":
            continue
        sub = str(module.get("path") or "")
        where = f"Model '{name}': Dense module '{sub}'"
        if os.path.normpath(sub).startswith(("..", "/", ".")):  # "" normalises to "."
            raise ModelLoadError(f"{where} is not a folder inside the model folder")
        folder = path / sub
        config = _read_json(folder / "config.json")
        if not isinstance(config, dict):
            raise ModelLoadError(f"{where} has no valid config.json in {folder}")
        dense = _dense_module(where, model_type, folder, config)
        expected = found[-1].out_features if found else hidden
        if dense.in_features != expected:
            raise ModelLoadError(
                f"{where} takes vectors of {dense.in_features} values but gets {expected}"
            )
        if not (folder / "model.safetensors").is_file():
            bin_only = (folder / "pytorch_model.bin").is_file()
            raise ModelLoadError(
                f"{where} has only pytorch_model.bin weights, which are not read (pickle); "
                "save them as model.safetensors"
                if bin_only
                else f"{where} has no model.safetensors weights in {folder}"
            )
        found.append(dense)
    return tuple(found)


def _dense_module(where: str, model_type: str, folder: Path, config: dict[str, Any]) -> DenseModule:
    given = (config.get("in_features"), config.get("out_features"))
    sizes = [n for n in given if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    if len(sizes) != 2:
        raise ModelLoadError(f"{where}: config.json needs positive in_features and out_features")
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if not isinstance(activation, str) or activation not in DENSE_ACTIVATIONS:
        supported = ", ".join(path.rsplit(".", 1)[-1] for path in DENSE_ACTIVATIONS)
        raise ModelTypeError(
            f"{where} uses the activation {elide(activation)}, which is not supported "
            f"(supported: {supported})",
            model_type=model_type,
        )
    source = config.get("module_input_name", "sentence_embedding")
    target = config.get("module_output_name") or source
    if (source, target) != ("sentence_embedding", "sentence_embedding"):
        raise ModelTypeError(
            f"{where} maps '{source}' to '{target}'; supported: Dense layers on the pooled "
            "sentence_embedding",
            model_type=model_type,
        )
    return DenseModule(
        path=folder,
        in_features=sizes[0],
        out_features=sizes[1],
        bias=bool(config.get("bias", True)),
        activation=DENSE_ACTIVATIONS[activation],
        residual=bool(config.get("use_residual", False)),
    )


def _pooling_mode(
    name: str, model_type: str, config: dict[str, Any], modules: Any, path: Path
) -> str:
    if modules is not None:
        pooling_dirs = [
            m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling")
        ]
        if pooling_dirs:
            pooling = _read_json(path / pooling_dirs[0] / "config.json")
            if not isinstance(pooling, dict):
                raise ModelLoadError(f"Model '{name}': missing pooling config in {pooling_dirs[0]}")
            chosen = [mode for key, mode in _ST_POOLING_KEYS.items() if pooling.get(key)]
            if len(chosen) != 1 or chosen[0] not in POOLING_MODES:
                raise ModelTypeError(
                    f"Model '{name}' asks for pooling {chosen or 'none'}; supported: exactly one "
                    f"of {', '.join(POOLING_MODES)}",
                    model_type=model_type,
                )
            return chosen[0]
    # No sentence-transformers config: what sentence-transformers itself would pick.
    if model_type == "qwen3":
        return "lasttoken"
    if model_type == "modernbert":
        return "cls" if config.get("classifier_pooling") == "cls" else "mean"
    return "mean"


def _max_seq_length(model_type: str, config: dict[str, Any], path: Path) -> int:
    st = _read_json(path / "sentence_bert_config.json")
    if isinstance(st, dict) and isinstance(st.get("max_seq_length"), int):
        return int(st["max_seq_length"])
    limits = []
    tok = _read_json(path / "tokenizer_config.json")
    declared = tok.get("model_max_length") if isinstance(tok, dict) else None
    if isinstance(declared, (int, float)) and declared < _UNBOUNDED:
        limits.append(int(declared))
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int):
        # RoBERTa-style models reserve padding_idx + 1 position slots.
        limits.append(positions - 2 if model_type == "xlm_roberta" else positions)
    return min(limits) if limits else 512
