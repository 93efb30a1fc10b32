"""The models this process serves: one classifier (an ONNX Runtime session, an OpenVINO compiled model, or a model on
a Triton server: settings.engine) and one batcher per model, loaded from the store. With engine `auto` the in-process
candidates are tried at warm-up and the fastest that meets the agreement bar serves (service.inference)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from s2d.card import CPU
from s2d.service import metrics, openvino_engine
from s2d.service.batcher import Batcher
from s2d.service.errors import NotReadyError, UnknownModelError
from s2d.service.inference import (
    Classifier,
    OnnxClassifier,
    VariantChoice,
    check_providers,
    choose_variant,
    trial_candidates,
)
from s2d.service.openvino_engine import OpenVinoClassifier
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
            "precision": self.classifier.precision,
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
        if s.engine in ("auto", "onnxruntime"):
            check_providers(s.providers)
        names = s.models or self.store.names()
        if not names:
            raise KeyError(f"the model store {self.store.root} holds no model (set S2D_MODEL_STORE or S2D_MODELS)")
        for name in names:
            stored = self.store.get(name)
            classifier, choice = self._triton(stored) if s.engine == "triton" else self._in_process(stored)
            batcher = Batcher(
                classifier, s.max_batch, s.max_wait_ms, s.queue_size, extra_delay_ms=s.fault_inference_delay_ms
            )
            self.models[name] = LoadedModel(stored, classifier, batcher, choice)
            metrics.MODEL_INFO.labels(
                name,
                stored.card.version,
                choice.variant,
                classifier.precision,
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

    def _openvino(
        self, stored: StoredModel, precision: str | None = None, why: str | None = None
    ) -> OpenVinoClassifier:
        """OpenVINO at the settings' precision, or at `precision` chosen for this CPU for the reason `why`."""
        s = self.settings
        return OpenVinoClassifier(
            stored, precision or s.openvino_precision, s.intra_op_threads, s.openvino_cache_dir, why=why
        )

    def _in_process(self, stored: StoredModel) -> tuple[Classifier, VariantChoice]:
        """A pin (S2D_ENGINE=openvino or S2D_OPENVINO_PRECISION, S2D_VARIANT) is served untried; on CPU with the
        engine trial on (`engine_trial`, by default with warm-up), every candidate is tried (`_tried`); else the card's
        variant on ONNX Runtime (GPU providers: the card's figures are the GPU's; trial off: no time for trials)."""
        s = self.settings
        if s.engine == "openvino" or s.openvino_precision != "auto":
            classifier = self._openvino(stored)
            pin = "S2D_ENGINE=openvino" if s.engine == "openvino" else "S2D_OPENVINO_PRECISION pins OpenVINO"
            return classifier, VariantChoice.of(classifier, "pinned", f"{pin}; {classifier.precision_reason}")
        if s.variant != "auto":
            session = self._session(stored, choose_variant(stored, s.variant, s.providers))
            return session, VariantChoice.of(session, "pinned", f"S2D_VARIANT={s.variant}")
        with_openvino = s.engine == "auto" and s.providers[0] == CPU and openvino_engine.available()
        candidates = stored.cpu_candidates() if s.providers[0] == CPU else []
        trial = s.warmup if s.engine_trial is None else s.engine_trial
        if not trial or len(candidates) + with_openvino < 2:
            session = self._session(stored, choose_variant(stored, "auto", s.providers))
            reason = "the engine trial is off" if not trial else f"one candidate for {s.providers[0]}"
            return session, VariantChoice.of(session, "card", f"the card's variant for these providers ({reason})")
        return self._tried(stored, candidates, with_openvino)

    def _tried(self, stored: StoredModel, variants: list[str], with_openvino: bool) -> tuple[Classifier, VariantChoice]:
        """ONNX Runtime's CPU variants (fp32 first: the reference) and OpenVINO at its warm-up precisions (one, or
        fp32 and bf16 where the CPU has bf16 without AMX), run on the same warm-up clips and timed; the fastest
        meeting the agreement bar serves (nothing holds the others after). An OpenVINO that cannot compile the graph is
        refused, not fatal: ONNX Runtime serves."""
        classifiers: dict[str, Classifier] = {}
        for variant in variants:
            session = self._session(stored, variant)
            classifiers[session.label] = session
        failed = {}
        if with_openvino:
            try:
                for precision, why in openvino_engine.warmup_precisions().items():
                    compiled = self._openvino(stored, precision, why)
                    classifiers[compiled.label] = compiled
            except Exception as err:  # any OpenVINO failure leaves ONNX Runtime to serve
                log.warning("model %s: OpenVINO cannot run it, left out of the choice: %s", stored.name, err)
                failed["openvino"] = f"failed to compile: {err}"
        choice = VariantChoice.judged(classifiers, trial_candidates(classifiers), failed)
        return classifiers[choice.candidate], choice

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
        return classifier, VariantChoice.of(classifier, "triton", "the variant the Triton model repository serves")

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
