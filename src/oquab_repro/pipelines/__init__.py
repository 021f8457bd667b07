"""One modular Kedro pipeline per thesis stage; ``find_pipelines`` discovers them.

``pipeline_registry`` puts each in the namespace of its stage, and a stage puts each of its
variants (source network, dataset, transfer variant...) in a namespace of its own, so
``kedro viz`` opens on the thesis' stages, each expandable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial, update_wrapper
from typing import Any

from kedro.pipeline import Node, Pipeline, node, pipeline

from oquab_repro.params import NO_SOURCE


def bind(func: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    """``func`` with keyword arguments fixed (the variant a node serves), keeping its name and
    docstring for Kedro and kedro-viz."""
    return update_wrapper(partial(func, **kwargs), func)


def source_weights(source: str) -> list[str]:
    """The dataset a transfer variant starts from: its source network's weights (none for a
    variant trained from scratch)."""
    return [] if source == NO_SOURCE else [f"pretrain_{source}_weights"]


def namespaced(steps: Iterable[Node | Pipeline], name: str, tags: Iterable[str] = ()) -> Pipeline:
    """``steps`` in the namespace ``name`` (a stage, or a variant inside one), tagged ``tags``.
    Dataset names stay the catalog's: the namespace only groups the nodes (``kedro viz``)."""
    return pipeline(
        list(steps), namespace=name, tags=list(tags) or None, prefix_datasets_with_namespace=False
    )


def train_node(
    func: Callable[..., Any], variant: str, inputs: list[str], outputs: list[str], **bound: Any
) -> Pipeline:
    """A variant's training node (``func`` with ``variant`` and ``bound`` fixed), named ``train``
    in the variant's own namespace: the same shape in every stage that trains variants."""
    train = node(bind(func, variant=variant, **bound), inputs, outputs, name="train")
    return namespaced([train], variant)
