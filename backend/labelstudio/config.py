"""Label config → label space: which `<Choices>` controls we can predict, and on which text field.

Label Studio describes a project by an XML label config. We read it with label-studio-sdk's
`LabelInterface` (the same parser the SDK uses to validate predictions) and keep only what an
ensemble of text classifiers can answer: a `<Choices>` bound to a `<Text>`. Anything else is named,
so /setup can say exactly what is not supported instead of predicting nothing in silence.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache


class LabelConfigError(ValueError):
    """The label config is not XML, or has nothing AutoAnnotator can predict."""


@dataclass(frozen=True)
class ChoiceControl:
    """One `<Choices>` control on one `<Text>` object."""

    name: str  # from_name
    to_name: str  # the Text tag's name
    data_key: str  # task.data key holding the text ("$text" -> "text")
    labels: tuple[str, ...]  # the choice values exactly as Label Studio stores them
    multiple: bool

    @property
    def bundle_key(self) -> str:
        """Which trained bundle serves this control: same mode and same label set, any control name."""
        return bundle_key(self.labels, self.multiple)


@dataclass(frozen=True)
class LabelSpace:
    controls: tuple[ChoiceControl, ...]
    unsupported: tuple[str, ...]  # human-readable reasons for the controls we ignore
    config_hash: str


def normalise_label(label: str) -> str:
    return re.sub(r"[^0-9a-z]+", "-", label.strip().lower()).strip("-")


def bundle_key(labels: tuple[str, ...] | list[str], multiple: bool) -> str:
    """A directory-safe key for a label set; case and punctuation of the names do not matter."""
    names = sorted(normalise_label(x) or "blank" for x in labels)
    slug = "_".join(names)
    mode = "multi" if multiple else "single"
    if len(slug) > 80:
        slug = slug[:60] + "-" + hashlib.sha1(slug.encode()).hexdigest()[:12]
    return f"{mode}__{slug}"


def project_bundle_key(project_id: str, control: str) -> str:
    """A project's own bundle for one control: trained from its corrections, preferred when present."""
    return f"project-{normalise_label(str(project_id)) or 'unknown'}__{normalise_label(control) or 'control'}"


def parse_label_config(config: str) -> LabelSpace:
    """Parse once per distinct config (it is cached): /setup is called on nearly every LS page view."""
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError("label config is empty")
    return _parse_cached(config)


@lru_cache(maxsize=256)
def _parse_cached(config: str) -> LabelSpace:
    # The SDK is heavy: only parsing a config needs it, not serving a bundle (ensemble.py imports this module).
    from label_studio_sdk.label_interface import LabelInterface

    try:
        li = LabelInterface(config)
    except Exception as exc:  # the SDK raises assorted lxml/ValueError types on bad XML
        raise LabelConfigError(f"label config is not valid Label Studio XML: {exc}") from exc
    objects = {o.name: o for o in li.objects}
    controls: list[ChoiceControl] = []
    unsupported: list[str] = []
    for ctrl in li.controls:
        if ctrl.tag.lower() != "choices":
            unsupported.append(f"<{ctrl.tag} name=\"{ctrl.name}\">: only <Choices> on <Text> is predicted")
            continue
        targets = [objects.get(n) for n in ctrl.to_name]
        text_targets = [o for o in targets if o is not None and o.tag.lower() == "text"]
        if not text_targets:
            unsupported.append(f"<Choices name=\"{ctrl.name}\">: toName does not point at a <Text> object")
            continue
        labels = tuple(ctrl.labels or ())
        if "value" in ctrl.attr and str(ctrl.attr["value"]).startswith("$"):
            unsupported.append(f"<Choices name=\"{ctrl.name}\">: choices taken from task data are not supported")
            continue
        if len(labels) < 2:
            unsupported.append(f"<Choices name=\"{ctrl.name}\">: needs at least two <Choice> values")
            continue
        if len(ctrl.name) > 64:  # the store keeps control names in 64 characters
            unsupported.append(f"<Choices name=\"{ctrl.name[:20]}…\">: a name longer than 64 characters")
            continue
        obj = text_targets[0]
        data_key = str(obj.value or "").lstrip("$")
        if not data_key:
            unsupported.append(f"<Text name=\"{obj.name}\">: has no $field value")
            continue
        multiple = str(ctrl.attr.get("choice", "single")).lower() == "multiple"
        controls.append(ChoiceControl(ctrl.name, obj.name, data_key, labels, multiple))
    if not controls:
        found = "; ".join(unsupported) or "no control tags at all"
        raise LabelConfigError(
            "no supported control in the label config: AutoAnnotator predicts <Choices> bound to a <Text> "
            f"(single or multiple choice). Found: {found}"
        )
    digest = hashlib.sha1(config.encode("utf-8")).hexdigest()[:16]
    return LabelSpace(tuple(controls), tuple(unsupported), digest)
