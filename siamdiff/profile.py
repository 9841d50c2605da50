"""Profiles `demo`, `polyps`, `paper`, `tiny`: one flag switches params.yaml between scales/data.

    python -m siamdiff.profile polyps                 # params.yaml := demo baseline + polyps overrides
    python -m siamdiff.profile demo                   # back to the default
    python -m siamdiff.profile                        # which profile params.yaml is now; the list
    dvc exp run $(python -m siamdiff.profile polyps --set-args)        # one experiment, workspace untouched
    dvc exp run --queue $(python -m siamdiff.profile polyps --set-args) -S train.lambda_c=2

A profile is `configs/profiles/<name>.yaml`: a partial params.yaml (nested mappings merge, lists and
scalars replace). Switching applies `demo.yaml` first, then the chosen profile, onto params.yaml, keeping
its comments (values equal to the current ones are not touched); `demo.yaml` names every key another
profile changes, so switching back to `demo` restores every value (comments inside a replaced list, such
as the demo `ingest.sources` entry, are not restored).
`--set-args` prints the same change as DVC `-S key=value` overrides (Hydra syntax, no spaces), so
`dvc exp run` / `--queue` can run a profile as an experiment.
This is as simple as DVC's Hydra composition (one flag) without moving params.yaml into a conf/ tree.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from siamdiff.utils import SiamdiffError

PROFILES_DIR = Path("configs/profiles")  # relative to the project root (the CWD of dvc and the CLI)
if not PROFILES_DIR.is_dir():  # an installed wheel outside the repository: the copy shipped in the package
    PROFILES_DIR = Path(__file__).resolve().parent / "_profiles"
BASE = "demo"


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round-trip: keeps comments and key order
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    y.preserve_quotes = True
    y.representer.add_representer(type(None), lambda r, d: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def available(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> dict:
    import yaml

    path = Path(profiles_dir) / f"{name}.yaml"
    if not path.exists():
        raise SiamdiffError(f"{path}: no such profile; choose one of {', '.join(available(profiles_dir)) or 'none'}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SiamdiffError(f"{path}: a profile is a mapping of params.yaml sections")
    return data


def _check_keys(over: dict, params: dict, where: str, path: str = "") -> None:
    for k, v in over.items():
        dotted = f"{path}{k}"
        if k not in params:
            raise SiamdiffError(f"{where}: key {dotted!r} is not in params.yaml (typo?)")
        if isinstance(v, dict) and isinstance(params[k], dict):
            _check_keys(v, params[k], where, dotted + ".")


def _plain(v):
    """ruamel round-trip nodes -> plain Python values (for comparisons)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, float):
        return float(v)
    if isinstance(v, int):
        return int(v)
    return str(v) if isinstance(v, str) else v


def merge(target, over: dict) -> None:
    """Deep-merge `over` into `target` in place (mappings merge; lists/scalars replace).

    A value equal to the one already there is left alone, so its formatting and comments stay.
    """
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        elif k not in target or _plain(target[k]) != _plain(v):
            target[k] = v
            _align_comment(target, k)


def _align_comment(target, key) -> None:
    """Keep an end-of-line comment at its mapping's comment column (values change length between profiles)."""
    from collections import Counter

    items = getattr(getattr(target, "ca", None), "items", {})
    tok = items.get(key, [None] * 3)[2] if key in items else None
    if tok is None or not hasattr(tok, "column"):
        return
    cols = [v[2].column for k2, v in items.items() if k2 != key and len(v) > 2 and v[2] is not None
            and hasattr(v[2], "column") and v[2].value.startswith("#")]
    if cols:
        tok.column = Counter(cols).most_common(1)[0][0]


def overrides(name: str, profiles_dir: Path = PROFILES_DIR) -> dict:
    """The full change a profile makes: demo baseline, then the profile (a nested dict)."""
    import copy

    out = copy.deepcopy(load_profile(BASE, profiles_dir))
    if name != BASE:
        merge(out, load_profile(name, profiles_dir))
    return out


def apply(name: str, params_path: str | Path = "params.yaml", profiles_dir: Path = PROFILES_DIR) -> dict:
    """Rewrite params.yaml for profile `name` (comments kept, written atomically). Returns the overrides."""
    import yaml

    from siamdiff.utils import write_text

    params_path = Path(params_path)
    if not params_path.exists():
        raise SiamdiffError(f"{params_path}: not found; run from the project root")
    over = overrides(name, profiles_dir)
    plain = yaml.safe_load(params_path.read_text()) or {}
    _check_keys(over, plain, f"{Path(profiles_dir) / name}.yaml")
    y = _yaml()
    doc = y.load(params_path.read_text())
    # merge the profile files' own nodes, so numbers keep the profile's spelling (1.0e-5, not 1e-05)
    merge(doc, y.load((Path(profiles_dir) / f"{BASE}.yaml").read_text()) or {})
    if name != BASE:
        merge(doc, y.load((Path(profiles_dir) / f"{name}.yaml").read_text()) or {})
    buf = io.StringIO()
    y.dump(doc, buf)
    write_text(params_path, _section_spacing(buf.getvalue()))
    return over


def _section_spacing(text: str) -> str:
    """A blank line before each top-level section that follows an indented block (params.yaml's style);
    a replaced list would otherwise glue the next section to it."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if (out and line[:1].isalpha() and out[-1].strip() and out[-1][:1] in (" ", "\t")):
            out.append("\n")
        out.append(line)
    return "".join(out)


def _hydra_value(v: Any) -> str:
    """A value in Hydra override syntax without whitespace (so `$(...)` word-splitting keeps it whole)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        if any(c.isspace() for c in v):
            raise SiamdiffError(f"profile value {v!r} contains whitespace; --set-args cannot express it, "
                                "switch the workspace with `python -m siamdiff.profile NAME` instead")
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, list):
        return "[" + ",".join(_hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(x)}" for k, x in v.items()) + "}"
    raise SiamdiffError(f"profile value {v!r} of type {type(v).__name__} is not supported")


def set_args(name: str, profiles_dir: Path = PROFILES_DIR) -> list[str]:
    """`["-S", "key=value", ...]` for `dvc exp run` that make the same change as `apply(name)`."""
    out: list[str] = []

    def walk(d: dict, prefix: str):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                out.extend(["-S", f"{prefix}{k}={_hydra_value(v)}"])

    walk(overrides(name, profiles_dir), "")
    return out


def drift(params_path: str | Path = "params.yaml", profiles_dir: Path = PROFILES_DIR) -> list[str]:
    """Keys whose value in `demo.yaml` differs from params.yaml while params.yaml is the demo profile
    (params.yaml changed, demo.yaml not updated): `['train.steps: params.yaml 600, demo.yaml 900']`."""
    import yaml

    params = yaml.safe_load(Path(params_path).read_text()) or {}
    out: list[str] = []

    def walk(d: dict, p: dict, pre: str):
        for k, v in d.items():
            if k not in p:
                out.append(f"{pre}{k}: not in params.yaml")
            elif isinstance(v, dict) and isinstance(p[k], dict):
                walk(v, p[k], f"{pre}{k}.")
            elif v != p[k]:
                out.append(f"{pre}{k}: params.yaml {p[k]!r}, {BASE}.yaml {v!r}")

    walk(load_profile(BASE, profiles_dir), params, "")
    return out


def current(params_path: str | Path = "params.yaml") -> str:
    import yaml

    return str((yaml.safe_load(Path(params_path).read_text()) or {}).get("profile", "?"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m siamdiff.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="profile to switch to (configs/profiles/NAME.yaml)")
    p.add_argument("--set-args", action="store_true", help="print `-S key=value` args for `dvc exp run` instead")
    p.add_argument("--check", action="store_true", help="check that configs/profiles/demo.yaml matches params.yaml")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profiles", default=str(PROFILES_DIR))
    args = p.parse_args(argv)
    try:
        if args.check:
            bad = drift(args.params, Path(args.profiles)) if current(args.params) == BASE else []
            for line in bad:
                print(f"{Path(args.profiles) / BASE}.yaml out of date: {line}", file=sys.stderr)
            sys.exit(1 if bad else 0)
        if not args.name:
            print(f"params.yaml profile: {current(args.params)}; available: {', '.join(available(Path(args.profiles)))}")
            return
        if args.set_args:
            print(" ".join(set_args(args.name, Path(args.profiles))))
            return
        over = apply(args.name, args.params, Path(args.profiles))
        print(f"params.yaml -> profile {args.name!r} ({json.dumps(sorted(over))} sections set); "
              "`dvc status` shows the stages this changes", file=sys.stderr)
    except SiamdiffError as e:
        print(f"siamdiff.profile: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
