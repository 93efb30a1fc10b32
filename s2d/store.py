"""The model store: one folder per served model, holding its ONNX variants and `card.json`. Torch-free.

```
<store>/<name>/card.json
<store>/<name>/model.onnx        # fp32, always present
<store>/<name>/model.fp16.onnx   # optional variants, each named in the card
<store>/<name>/model.int8.onnx
```

The store root is `$S2D_MODEL_STORE` when set, else `$XDG_CACHE_HOME/s2d/models` (`~/.cache/s2d/models`).
Training writes into it through `ModelStore.staging(name)` (a temp folder swapped in atomically, so the service never
sees a half-written model); the service reads it with `ModelStore.get(name)` / `ModelStore.default()`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from s2d.card import CPU, CUDA, CardError, ModelCard, load_card
from s2d.files import user_cache_dir

log = logging.getLogger(__name__)

STORE_ENV = "S2D_MODEL_STORE"
CARD_FILE = "card.json"
MIN_AGREEMENT = 0.99  # a reduced-precision variant below this top-1 agreement with fp32 is never chosen
# Which model serves when none is named: real S2D weights first, then the per-frame baseline, the demo model last.
FAMILY_PREFERENCE = ("s2d-video", "frame-baseline", "demo")


def default_store_dir() -> Path:
    """`$S2D_MODEL_STORE`, else `$XDG_CACHE_HOME/s2d/models`, else `~/.cache/s2d/models`."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    return user_cache_dir("s2d", "models")


@dataclass(frozen=True)
class StoredModel:
    """A model folder of the store with its validated card."""

    name: str
    path: Path
    card: ModelCard

    @property
    def demo(self) -> bool:
        return self.card.demo

    @property
    def family(self) -> str:
        return self.card.family

    def variant_path(self, variant: str = "fp32") -> Path:
        if variant not in self.card.variants:
            raise KeyError(f"model {self.name!r} has no variant {variant!r}; it has {sorted(self.card.variants)}")
        path = self.path / self.card.variants[variant].file
        if not path.is_file():
            raise FileNotFoundError(f"model {self.name!r}: variant {variant!r} names {path}, which is missing")
        return path

    def usable(self, variant: str, provider: str) -> bool:
        """`variant` is meant for `provider`, its file is present, and it agrees with fp32 (fp32 always does)."""
        spec = self.card.variants[variant]
        agrees = variant == "fp32" or (spec.top1_agreement is not None and spec.top1_agreement >= MIN_AGREEMENT)
        return provider in spec.providers and agrees and (self.path / spec.file).is_file()

    def cpu_candidates(self) -> list[str]:
        """The variants worth timing on this CPU: meant for the CPU provider and agreeing with fp32 (fp32 first)."""
        return sorted((n for n in self.card.variants if self.usable(n, CPU)), key=lambda n: (n != "fp32", n))

    def choose_variant(self, providers: Iterable[str]) -> str:
        """The variant to run with these ONNX Runtime providers (e.g. `onnxruntime.get_available_providers()`),
        from the card alone (the service times the CPU candidates at warm-up instead, `cpu_candidates`).

        fp16 when CUDA is available and the card has a CUDA fp16 variant; otherwise the fastest measured variant meant
        for the CPU provider (its clips/s in the card) with top-1 agreement >= 99%; otherwise fp32.
        """
        providers = set(providers)
        variants = self.card.variants
        if CUDA in providers and "fp16" in variants and self.usable("fp16", CUDA):
            return "fp16"
        if CPU in providers:
            timed = [n for n in self.cpu_candidates() if variants[n].clips_per_s is not None]
            if timed:
                return max(timed, key=lambda n: variants[n].clips_per_s)
        return "fp32"


def preferred(models: Iterable[StoredModel]) -> StoredModel:
    """The default among `models`: by family (FAMILY_PREFERENCE), then by name."""
    return min(models, key=lambda m: (FAMILY_PREFERENCE.index(m.family), m.name))


class ModelStore:
    """The folders of a store root; `list()` and `get(name)` read cards, `staging(name)` writes a model."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_store_dir()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    def _folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def list(self) -> list[StoredModel]:
        """Every model folder with a valid card, by name. Folders with a broken card are logged and skipped."""
        models = []
        for folder in self._folders():
            if not (folder / CARD_FILE).is_file():
                continue
            try:
                models.append(StoredModel(folder.name, folder, load_card(folder / CARD_FILE)))
            except CardError as err:
                log.warning("skipping %s: %s", folder, err)
        return models

    def names(self) -> list[str]:
        return [m.name for m in self.list()]

    def get(self, name: str) -> StoredModel:
        """The model `name`; KeyError listing what is present; CardError when its card does not validate."""
        folder = self.root / name
        if name.startswith(".") or "/" in name or not (folder / CARD_FILE).is_file():
            present = ", ".join(self.names()) or "none"
            raise KeyError(f"no model {name!r} in the store {self.root} (present: {present})")
        card = load_card(folder / CARD_FILE)
        if card.name != name:
            log.warning("model folder %s holds a card named %r; the folder name wins", folder, card.name)
        return StoredModel(name, folder, card)

    def default(self) -> StoredModel:
        """The model to serve when none is named (`preferred`)."""
        models = self.list()
        if not models:
            raise KeyError(
                f"the model store {self.root} holds no model: run `s2d baseline build` (the per-frame baseline), "
                "`s2d weights pull NAME` (S2D weights) or `s2d demo build`"
            )
        return preferred(models)

    @contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """Yield an empty temp folder inside the store; on success it replaces `<root>/<name>` in one rename.

        The folder must end up holding a valid `card.json` whose variant files exist; otherwise nothing changes.
        """
        if not name or name.startswith(".") or "/" in name or os.sep in name:
            raise ValueError(f"invalid model name {name!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging", dir=self.root))
        try:
            yield tmp
            card = load_card(tmp / CARD_FILE)
            for variant, spec in card.variants.items():
                if not (tmp / spec.file).is_file():
                    raise CardError(f"variant {variant!r} names {spec.file}, which was not written", tmp, "variants")
            self._swap_in(tmp, self.root / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _swap_in(new: Path, final: Path) -> None:
        old = None
        if final.exists() and not (final / CARD_FILE).is_file() and any(final.iterdir()):
            raise FileExistsError(f"{final} exists and is not a model folder (no {CARD_FILE}); refusing to replace it")
        if final.exists():  # two renames; a reader in between sees "no such model", never a mix of two
            old = final.with_name(f".{final.name}.{os.getpid()}.old")
            final.replace(old)
        new.replace(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
