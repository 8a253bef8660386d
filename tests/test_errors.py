"""The error tree (edgespeak/base/errors.py): every public exception class edgespeak defines
is an EdgespeakError, on the branch its docstring tree names."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import edgespeak
from edgespeak.base import errors
from edgespeak.base.errors import (
    AudioFormatError,
    CacheError,
    EdgespeakError,
    RequestError,
    TtsError,
)


def defined_exceptions() -> dict[str, type[BaseException]]:
    """``module.Class`` → class, for every exception class defined in an edgespeak module."""
    found = {}
    for info in pkgutil.walk_packages(edgespeak.__path__, "edgespeak."):
        if info.name.endswith("__main__"):
            continue  # runs the command line on import
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_public_exception_class_is_in_the_tree() -> None:
    classes = defined_exceptions()
    public = {name: cls for name, cls in classes.items() if not cls.__name__.startswith("_")}
    outside = [name for name, cls in public.items() if not issubclass(cls, EdgespeakError)]
    assert outside == []
    assert len(public) >= 17, sorted(public)  # the walk found the modules
    # Private signals stay out of it, so no `except EdgespeakError` swallows one.
    private = [cls for cls in classes.values() if cls.__name__.startswith("_")]
    assert not any(issubclass(cls, EdgespeakError) for cls in private)


def test_the_classes_defined_beside_their_modules_are_on_their_branch() -> None:
    classes = {cls.__name__: cls for cls in defined_exceptions().values()}
    branch = {
        "SessionError": RequestError,
        "InputError": RequestError,
        "UnsupportedRequest": RequestError,
        "ProtocolError": RequestError,
        "IndexUnavailable": CacheError,
        "UnknownVoice": TtsError,
        "EngineError": TtsError,
        "ChimeError": EdgespeakError,
        "RelayGap": TtsError,
        "RelayError": AudioFormatError,
    }
    for name, parent in branch.items():
        assert issubclass(classes[name], parent), name
        assert f" {name} " in (errors.__doc__ or ""), f"{name} not drawn in the tree"
