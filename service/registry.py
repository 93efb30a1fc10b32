"""The models this process serves: one classifier (an ONNX Runtime session, or a model on a Triton server:
settings.engine) and one batcher per model, loaded from the store."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from s2d.card import CPU
from s2d.service import metrics
from s2d.service.batcher import Batcher
from s2d.service.errors import NotReadyError, UnknownModelError
from s2d.service.inference import (
    Classifier,
    OnnxClassifier,
    VariantChoice,
    check_providers,
    choose_variant,
    time_variants,
)
from s2d.service.settings import Settings
from s2d.service.triton_engine import TritonClassifier, TritonStartupError
from s2d.store import ModelStore, StoredModel, preferred

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    stored: StoredModel
    classifier: Classifier
    batcher: Batcher
    choice: VariantChoice
    warmup_s: float | None = None

    @property
    def name(self) -> str:
        return self.stored.name

    def ref(self) -> dict:
        """Which model answered, as every response names it (service.schemas.ModelRef)."""
        card = self.stored.card
        return {
            "name": self.name,
            "version": card.version,
            "variant": self.classifier.variant,
            "provider": self.classifier.provider,
            "family": card.family,
            "family_description": card.family_description,
            "demo": card.demo,
        }

    def describe(self) -> dict:
        """What /v1/models shows: the card plus how it runs here."""
        card = self.stored.card
        return {
            **self.ref(),
            "precision": card.variants[self.classifier.variant].precision,
            "max_batch": self.batcher.max_batch,
            "warmup_s": self.warmup_s,
            "variant_choice": self.choice.describe(),
            "engine": self.classifier.engine(),
            "card": card.model_dump(mode="json"),
        }


class ModelRegistry:
    """Loads sessions at start-up (failing loudly), warms them up, and hands out models by name."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = ModelStore(settings.model_store)
        self.models: dict[str, LoadedModel] = {}
        self.default_name: str | None = None
        self.ready = False
        self._unready_logged: dict[str, str | None] = {}  # model -> the engine's last logged unready reason

    def load(self) -> None:
        """Create every classifier and batcher; raises on a missing provider, model or broken card, or a Triton
        server that does not serve a model as its card says."""
        s = self.settings
        if s.engine == "onnxruntime":
            check_providers(s.providers)
        names = s.models or self.store.names()
        if not names:
            raise KeyError(f"the model store {self.store.root} holds no model (set S2D_MODEL_STORE or S2D_MODELS)")
        for name in names:
            stored = self.store.get(name)
            classifier, choice = self._triton(stored) if s.engine == "triton" else self._pick_variant(stored)
            batcher = Batcher(
                classifier, s.max_batch, s.max_wait_ms, s.queue_size, extra_delay_ms=s.fault_inference_delay_ms
            )
            self.models[name] = LoadedModel(stored, classifier, batcher, choice)
            metrics.MODEL_INFO.labels(
                name,
                stored.card.version,
                choice.variant,
                stored.card.variants[choice.variant].precision,
                classifier.provider,
                str(stored.card.demo).lower(),
                stored.card.family,
            ).set(1)
            log.info(
                "loaded model %s on %s from %s: %s", name, classifier.provider, classifier.location, choice.summary()
            )
        if s.default_model is not None and s.default_model not in self.models:
            raise KeyError(f"default_model {s.default_model!r} is not among the loaded models {sorted(self.models)}")
        self.default_name = s.default_model or preferred(m.stored for m in self.models.values()).name

    def _session(self, stored: StoredModel, variant: str) -> OnnxClassifier:
        s = self.settings
        return OnnxClassifier(stored, variant, s.providers, s.device_id, s.intra_op_threads)

    def _pick_variant(self, stored: StoredModel) -> tuple[OnnxClassifier, VariantChoice]:
        """The pinned variant (S2D_VARIANT); on CPU the fastest candidate timed here (card speeds come from another
        CPU, maybe with other instruction sets); else the card's choice (GPU, or warm-up off)."""
        s = self.settings
        variant = choose_variant(stored, s.variant, s.providers)
        candidates = stored.cpu_candidates()
        if s.variant != "auto" or s.providers[0] != CPU or not s.warmup or len(candidates) < 2:
            how = "pinned" if s.variant != "auto" else "card"
            return self._session(stored, variant), VariantChoice.of(variant, how)
        sessions = {v: self._session(stored, v) for v in candidates}
        choice = VariantChoice.of(None, "measured", time_variants(sessions))
        return sessions[choice.variant], choice

    def _triton(self, stored: StoredModel) -> tuple[TritonClassifier, VariantChoice]:
        """The model on the Triton server: the variant is the one its repository serves (no timing here); a
        pinned S2D_VARIANT must be that one."""
        s = self.settings
        classifier = TritonClassifier.connect(
            stored,
            s.triton_url,
            version=s.triton_model_version,
            timeout_s=s.triton_timeout_s,
            ready_timeout_s=s.triton_ready_timeout_s,
            max_in_flight=s.triton_max_in_flight,
            max_batch=s.max_batch,
        )
        if s.variant not in ("auto", classifier.variant):
            classifier.close()
            raise TritonStartupError(
                f"Triton at {s.triton_url}, model {stored.name!r} serves variant {classifier.variant!r}, but "
                f"S2D_VARIANT pins {s.variant!r}: unpin it (`s2d models triton --kind` picks the repository's variant)"
            )
        return classifier, VariantChoice.of(classifier.variant, "triton")

    def start(self) -> None:
        for model in self.models.values():
            model.batcher.start()

    async def warmup(self) -> None:
        """Warm every model at every batch size (in the batchers' threads), then mark the service ready."""
        if self.settings.warmup:
            for model in self.models.values():
                model.warmup_s = await model.batcher.run_exclusive(model.classifier.warmup, self.settings.max_batch)
        self.ready = True
        metrics.READY.set(1)
        log.info("ready: %s", ", ".join(self.models))

    async def stop(self) -> None:
        self.ready = False
        metrics.READY.set(0)
        for model in self.models.values():
            await model.batcher.stop()
            model.classifier.close()

    def unready_engines(self) -> dict[str, str]:
        """Model name -> why its engine cannot serve now, for the models whose engine cannot (a Triton server gone
        or restarting after start-up). Blocks for the engines' short checks: call it off the event loop."""
        reasons = {name: model.classifier.unready_reason() for name, model in self.models.items()}
        for name, reason in reasons.items():  # logged as it changes, not at every probe; the address is the log's
            if reason != self._unready_logged.get(name):
                where = self.models[name].classifier.location
                if reason:
                    log.warning("model %s is not servable now: %s (%s)", name, reason, where)
                else:
                    log.info("model %s is servable again (%s)", name, where)
                self._unready_logged[name] = reason
        return {name: reason for name, reason in reasons.items() if reason}

    def get(self, name: str | None) -> LoadedModel:
        if not self.ready:
            raise NotReadyError()
        name = name or self.default_name
        if name not in self.models:
            raise UnknownModelError(f"no model {name[:100]!r} is loaded; loaded: {sorted(self.models)}")
        return self.models[name]
