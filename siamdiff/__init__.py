"""siamdiff: a reproducible DVC pipeline for Noise-Consistent Siamese-Diffusion (CVPR 2025)."""
__version__ = "0.1.0"

# The trained generator is a diffusers pipeline (siamdiff/sample/pipeline.py). `import siamdiff` stays light (no
# torch/diffusers import): `siamdiff.SiameseDiffusionPipeline` is imported on first use, and diffusers is taught
# the name, so `DiffusionPipeline.from_pretrained("models/siamese")` resolves the folder's
# `_class_name: SiameseDiffusionPipeline` (diffusers looks it up in its own namespace) whether diffusers is
# imported before or after siamdiff.
_PIPELINE = "SiameseDiffusionPipeline"


def _pipeline_class():
    import importlib

    return getattr(importlib.import_module("siamdiff.sample.pipeline"), _PIPELINE)


def __getattr__(name):
    if name == _PIPELINE:
        return _pipeline_class()
    raise AttributeError(f"module 'siamdiff' has no attribute {name!r}")


def _teach_diffusers(module) -> None:
    """Make `diffusers.SiameseDiffusionPipeline` resolve lazily (a subclass of diffusers' module type)."""
    base = type(module)
    if getattr(base, "_siamdiff_pipeline", False) or _PIPELINE in vars(module):
        return

    class _WithSiameseDiffusion(base):
        _siamdiff_pipeline = True

        def __getattr__(self, name):
            if name == _PIPELINE:
                return _pipeline_class()  # its module also sets it on diffusers
            parent = getattr(base, "__getattr__", None)
            if parent is None:
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
            return parent(self, name)

    try:
        module.__class__ = _WithSiameseDiffusion
    except TypeError:  # an unusual module object: `import siamdiff.sample.pipeline` still registers the class
        pass


class _DiffusersImportHook:
    """A one-shot meta-path finder: when diffusers is first imported, teach it the pipeline once it has loaded."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "diffusers":
            return None
        import importlib.util
        import sys

        if cls in sys.meta_path:
            sys.meta_path.remove(cls)
        spec = importlib.util.find_spec("diffusers")
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_and_teach(module):
            exec_module(module)
            _teach_diffusers(sys.modules.get("diffusers", module))

        loader.exec_module = exec_and_teach
        return spec


def _install() -> None:
    import sys

    if "diffusers" in sys.modules:
        _teach_diffusers(sys.modules["diffusers"])
    elif _DiffusersImportHook not in sys.meta_path:
        sys.meta_path.insert(0, _DiffusersImportHook)


_install()
