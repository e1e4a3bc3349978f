"""Getting ImageBind ready to run, without running it: whether its optional package is there, cheap checks of a
checkpoint (`check_loadable`, what the plan uses), importing the package (with the shim pytorchvideo needs and
its noisy short-clip warning filtered), reading a checkpoint's state_dict, building the model without
initialising its parameters, and the CLIP tokenizer. The embedder itself is bitharbord/embed/imagebind.py."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitharbord.embed.base import EmbedError

if TYPE_CHECKING:
    import torch


def imagebind_available() -> bool:
    """Whether the optional `imagebind` package (imagebind-unofficial) can be imported here."""
    try:
        return importlib.util.find_spec("imagebind") is not None
    except (ImportError, ValueError):
        return False


def _install_shims() -> None:
    """pytorchvideo (imported by imagebind.data) still imports torchvision.transforms.functional_tensor, which
    torchvision renamed to _functional_tensor in 0.17. Alias it before the import; the code is unchanged."""
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        sys.modules[name] = importlib.import_module("torchvision.transforms._functional_tensor")


_META_LOCK = threading.Lock()


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every nn.Parameter registered inside is moved to the meta device, so building the model allocates and
    initialises nothing (the checkpoint supplies every value). Buffers stay real: ImageBind's constructor reads
    some (`linspace(...).item()`), which a plain `torch.device("meta")` context cannot do."""
    import torch

    module_cls = torch.nn.Module
    original = module_cls.register_parameter

    def register(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    with _META_LOCK:
        module_cls.register_parameter = register  # type: ignore[method-assign, assignment]
        try:
            yield
        finally:
            module_cls.register_parameter = original  # type: ignore[method-assign]


class _ShortClipFilter(logging.Filter):
    """imagebind.data logs a root-logger warning for every audio clip shorter than 2 s ("Large gap between
    audio n_frames ..."): expected for short sounds, which are padded as in the reference code. Drop only it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.endswith(os.path.join("imagebind", "data.py"))
                    and str(record.msg).startswith("Large gap between audio n_frames"))


_SHORT_CLIP_FILTER = _ShortClipFilter()


_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # torch's legacy (non-zip) format


def check_loadable(checkpoint: Path | str) -> None:
    """Cheap checks (no model load, milliseconds) that ImageBind can load here: the checkpoint is a PyTorch
    archive and the optional packages are importable. EmbedError says everything that is wrong; passing does not
    promise the weights fit (load() checks every tensor)."""
    path = Path(checkpoint)
    problems = []
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == b"PK\x03\x04":
            with zipfile.ZipFile(path) as zf:
                if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist()):
                    problems.append(f"checkpoint {path} is a zip archive without data.pkl, not a PyTorch "
                                    "checkpoint")
        elif head[:2] not in _PICKLE_MAGIC:
            problems.append(f"checkpoint {path} is not a PyTorch checkpoint (it starts with {head!r}; expected "
                            "a torch.save archive)")
    except OSError as exc:
        problems.append(f"checkpoint {path}: {exc.strerror or exc}")
    except zipfile.BadZipFile as exc:
        problems.append(f"checkpoint {path} is a damaged archive: {exc}")
    missing = []
    for mod in ("imagebind", "torch"):  # their own imports (torchvision, pytorchvideo...) are load()'s to report
        try:
            if importlib.util.find_spec(mod) is None:
                missing.append(mod)
        except (ImportError, ValueError):
            missing.append(mod)
    if missing:
        problems.append(f"the optional package(s) {', '.join(missing)} are not installed in this Python "
                        "environment (imagebind-unofficial and its torch stack; see the README's ImageBind notes)")
    if problems:
        raise EmbedError("ImageBind cannot load: " + "; ".join(problems))


def import_imagebind() -> tuple[Any, Any]:
    """(imagebind.models.imagebind_model, imagebind.data), or EmbedError saying how to get them."""
    try:
        _install_shims()
        with warnings.catch_warnings():
            # pkg_resources' deprecation notice and torch.jit's, from imagebind's and pytorchvideo's imports.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            model_mod = importlib.import_module("imagebind.models.imagebind_model")
            data_mod = importlib.import_module("imagebind.data")
        logging.getLogger().addFilter(_SHORT_CLIP_FILTER)  # a set: adding it twice keeps one
    except ImportError as e:
        raise EmbedError(
            "embedding.backend imagebind needs the optional package imagebind-unofficial and its torch "
            f"stack in this Python environment ({type(e).__name__}: {e}); see the README's ImageBind notes"
        ) from e
    return model_mod, data_mod


def state_dict_of(obj: Any, path: Path) -> dict[str, Any]:
    """The tensors of a checkpoint: a plain state_dict, or one wrapped as {"model": ...}/{"state_dict": ...};
    a "module." prefix (DataParallel) is dropped."""
    import torch

    if isinstance(obj, Mapping) and len(obj) <= 3:
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise EmbedError(f"checkpoint {path} holds {type(obj).__name__}, expected a state_dict of tensors")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise EmbedError(f"checkpoint {path}: entry {key!r} is {type(value).__name__}, expected a tensor")
        out[key.removeprefix("module.")] = value
    return out


def model_mod_tokenizer(data_mod: Any) -> Any:
    """The CLIP BPE tokenizer imagebind.data uses, built once (reading its vocabulary takes a moment)."""
    mp = importlib.import_module("imagebind.models.multimodal_preprocessors")
    return mp.SimpleTokenizer(bpe_path=data_mod.return_bpe_path())
