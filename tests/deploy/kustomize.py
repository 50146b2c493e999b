"""A small kustomize: the subset ``k8s/`` uses, so the overlays render with no binary.

Supported: ``resources`` (files and directories), ``patches`` (strategic-merge patch files
matched by kind and name), ``namespace``, ``labels`` (metadata only) and ``images``. Anything
else in a kustomization is an error, so a new feature cannot be silently ignored; the tests
compare this rendering with ``kubectl kustomize`` where kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# Strategic-merge keys of the built-in lists the manifests patch; other lists are replaced
# (and custom resources are always merged as JSON merge patches: lists replaced).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}
BUILTIN_GROUPS = ("v1", "apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/")

Doc = dict[str, Any]


def load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(directory: Path) -> list[Doc]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: kustomization fields not supported here: {unknown}")
    docs: list[Doc] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        docs += render(path) if path.is_dir() else load_all(path)
    for patch in kustomization.get("patches", []):
        for change in load_all(directory / patch["path"]):
            at = _index(docs, change["kind"], change["metadata"]["name"])
            docs[at] = _merge(docs[at], change, docs[at]["apiVersion"].startswith(BUILTIN_GROUPS))
    return _transform(docs, kustomization)


def _index(docs: list[Doc], kind: str, name: str) -> int:
    for at, doc in enumerate(docs):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return at
    raise KeyError(f"patch target {kind}/{name} is not among the resources")


def _merge(base: Any, patch: Any, strategic: bool, key: str = "") -> Any:
    """``patch`` over ``base``: maps merge, ``null`` deletes, lists are replaced unless
    ``strategic`` and the list has a merge key (then items merge by that key)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, v in patch.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = _merge(base.get(k), v, strategic, k) if k in base else copy.deepcopy(v)
        return merged
    if strategic and key in MERGE_KEYS and isinstance(base, list) and isinstance(patch, list):
        by = MERGE_KEYS[key]
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = next((i for i, old in enumerate(merged_list) if old.get(by) == item.get(by)),
                      None)
            if at is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[at] = _merge(merged_list[at], item, strategic)
        return merged_list
    return copy.deepcopy(patch)


def _transform(docs: list[Doc], kustomization: dict[str, Any]) -> list[Doc]:
    docs = copy.deepcopy(docs)
    namespace = kustomization.get("namespace")
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        if set(entry) - {"pairs"}:
            raise ValueError(f"labels options not supported here: {entry}")
        labels.update(entry["pairs"])
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if namespace and doc["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = namespace
        if labels:
            meta["labels"] = {**meta.get("labels", {}), **labels}
        for container in _containers(doc):
            name, _, tag = container["image"].partition(":")
            if name in images:
                image = images[name]
                tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
    return docs


def _containers(doc: Doc) -> list[Doc]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get(
        "spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]
