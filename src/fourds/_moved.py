"""Old module paths of moved modules, kept importable with a :class:`DeprecationWarning`.

The probe protocol moved from ``fourds.train`` to :mod:`fourds.probe`, and two small ``fourds.train``
modules merged into their neighbours. No shim file stays behind: :func:`install` (called by
``fourds/train/__init__.py``) puts a finder on :data:`sys.meta_path` that answers an import of an old path
with a module holding every name of its new modules (the same objects), and warns. Code, pickles and saved
folders that name an old path keep working; new code imports the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

#: old module path -> the modules its names now live in (searched in this order).
MOVED: dict[str, tuple[str, ...]] = {
    "fourds.train.probe": ("fourds.probe.protocol", "fourds.probe.sweep", "fourds.probe.data"),
    "fourds.train.probe_loop": ("fourds.probe.sweep", "fourds.probe.evaluate"),
    "fourds.train.probe_heads": ("fourds.probe.sweep", "fourds.probe.protocol", "fourds.probe.cache"),
    "fourds.train.probe_data": ("fourds.probe.data",),
    "fourds.train.probe_config": ("fourds.probe.config",),
    "fourds.train.probe_metrics": ("fourds.probe.metrics",),
    "fourds.train.probe_report": ("fourds.probe.report",),
    "fourds.train.probe_visualize": ("fourds.probe.visualize",),
    "fourds.train.feature_cache": ("fourds.probe.cache",),
    "fourds.train.distill_config": ("fourds.train.distill",),
    "fourds.train.flops": ("fourds.train.device_step",),
}


def _message(old: str) -> str:
    return f"{old} moved to {' / '.join(MOVED[old])}; import it from there (the old path will be removed)"


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED` (only after the regular finders found no file there)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__
        warnings.warn(_message(old), DeprecationWarning, stacklevel=2)
        targets = [importlib.import_module(name) for name in MOVED[old]]
        names: dict[str, object] = {}
        for target in reversed(targets):  # the first module listed wins a name held by several
            names.update({k: v for k, v in vars(target).items() if not k.startswith("__")})
        module.__dict__.update(names)
        module.__doc__ = _message(old)
        module.__all__ = sorted(k for k in names if not k.startswith("_")
                                and getattr(names[k], "__module__", None) in MOVED[old])


_FINDER = _MovedModules()


def install() -> None:
    """Put the finder of old paths on :data:`sys.meta_path` (once; after the regular finders)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
