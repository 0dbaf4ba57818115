"""`<Choices>` and `<Taxonomy>` on an image: classes from a classification model.

`choice="single"` / `"single-radio"` (default) takes the best mapped class over the threshold;
`choice="multiple"` takes every mapped class over the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from control_models.base import ControlModel, class_label_map
from converters.image_regions import choices_region, taxonomy_region
from converters.task_score import classification_uncertainty
from core.errors import LabelingConfigError
from core.settings import Settings
from inference.detections import Classification


@dataclass
class ChoicesModel(ControlModel):
    control_tag: ClassVar[str] = "Choices"
    model_tasks: ClassVar[tuple[str, ...]] = ("classify",)
    default_model: ClassVar[str] = "yolov8n-cls.pt"
    # One chosen class per image; a task with several choices is left out of the dataset.
    training_task: ClassVar[str | None] = "classify"

    multiple: bool = False

    @classmethod
    def from_control(cls, control: Any, settings: Settings, **extra: Any) -> ControlModel:
        extra.pop("interface", None)
        multiple = str(control.attr.get("choice", "single")).lower() == "multiple"
        return super().from_control(control, settings, multiple=multiple, **extra)

    def chosen(self, output: Classification, class_names: Mapping[int, str]) -> list[tuple[str, float]]:
        """(label, probability) of the chosen classes, best first."""
        label_map = self.label_map(class_names)
        candidates = sorted(
            (
                (label, float(output.probs[index]))
                for index, label in label_map.items()
                if index < len(output.probs) and output.probs[index] >= self.score_threshold
            ),
            key=lambda item: -item[1],
        )
        unique: dict[str, float] = {}
        for label, probability in candidates:
            unique.setdefault(label, probability)  # several classes may map to one label
        chosen = list(unique.items())
        return chosen if self.multiple else chosen[:1]

    def task_uncertainty(self, output: Classification, class_names: Mapping[int, str]) -> float | None:
        """The margin of the two most probable labels (None in confidence mode); the classes that stand for
        one label count as one, the classes of no label each as itself."""
        if not self.scores_uncertainty:
            return None
        groups: dict[str, list[int]] = {}
        for index, label in self.label_map(class_names).items():
            groups.setdefault(label, []).append(index)
        return classification_uncertainty(output.probs, list(groups.values()))

    def regions(self, output: Classification, class_names: Mapping[int, str]) -> list[dict]:
        chosen = self.chosen(output, class_names)
        if not chosen:
            return []
        score = max(probability for _, probability in chosen)
        return [
            choices_region(
                from_name=self.from_name,
                to_name=self.to_name,
                choices=[label for label, _ in chosen],
                score=score,
            )
        ]


@dataclass
class TaxonomyModel(ChoicesModel):
    control_tag: ClassVar[str] = "Taxonomy"

    paths: dict[str, list[str]] = field(default_factory=dict)  # label -> path from the root

    @classmethod
    def from_control(cls, control: Any, settings: Settings, **extra: Any) -> ControlModel:
        interface = extra.get("interface")
        paths = _taxonomy_paths(interface.config, control.name) if interface is not None else {}
        model = super().from_control(control, settings, paths=paths, **extra)
        if model.training is not None and paths:
            # The classes a classifier learns are the leaves; a path ending at an inner node (say
            # "Animal" alone) is no example of one of them.
            inner = {node for path in paths.values() for node in path[:-1]}
            leaves = tuple(label for label in model.training.labels if label not in inner)
            kept = {label: model.labels[label] for label in leaves}
            model.training = replace(model.training, labels=leaves, label_map=class_label_map(kept))
        return model

    def regions(self, output: Classification, class_names: Mapping[int, str]) -> list[dict]:
        chosen = self.chosen(output, class_names)
        if not chosen:
            return []
        return [
            taxonomy_region(
                from_name=self.from_name,
                to_name=self.to_name,
                paths=[self.paths.get(label, [label]) for label, _ in chosen],
                score=max(probability for _, probability in chosen),
            )
        ]


def _taxonomy_paths(config: str, control_name: str) -> dict[str, list[str]]:
    """Every `<Choice>` of the named `<Taxonomy>` with its path from the root, e.g. Cat -> [Animal, Cat].

    Read with defusedxml, which refuses entity declarations that Label Studio's own parser accepts.
    """
    try:
        root = fromstring(config)
    except DefusedXmlException:
        raise LabelingConfigError(
            f'<Taxonomy name="{control_name}"> cannot be read: the labeling config declares XML entities '
            "(<!DOCTYPE ... <!ENTITY ...>); remove the DOCTYPE and write the values out"
        ) from None
    except ParseError as error:
        raise LabelingConfigError(f'<Taxonomy name="{control_name}"> cannot be read: {error}') from None
    paths: dict[str, list[str]] = {}

    def walk(element: Element, prefix: list[str]) -> None:
        for child in element:
            if child.tag == "Choice":
                value = child.get("value", child.get("alias", ""))
                path = [*prefix, value]
                paths.setdefault(value, path)
                walk(child, path)

    for taxonomy in root.iter("Taxonomy"):
        if taxonomy.get("name") == control_name:
            walk(taxonomy, [])
    return paths
