#!/usr/bin/env python3
"""The layering check: every top-level module under src/ imports only the modules below it.

The allowed order is LAYERS (lowest first); docs/architecture.md draws the same diagram.
A module may name (`crate::x`, `super::` does not leave the module) only modules listed
before it. `sim` and `bench` are outside the product: only the composition root (`app`),
the command line (`cli`) and `bench` itself may import them, and `sim` imports nothing
but `domain`. Test code (`tests.rs`, `testing.rs`, files under a `tests/` folder and
`#[cfg(test)] mod tests` blocks) is not checked: tests may reach anything.

Exit 1 with one line per offending reference (file:line, from -> to, why); 0 when clean.
"""
import os
import re
import sys

LAYERS = [
    "domain",
    "sim",
    "report",
    "telemetry",
    "store",
    "lock",
    "cluster",
    "quota",
    "provider",
    "shapes",
    "actors",
    "diagnose",
    "http",
    "config",
    "app",
    "cli",
    "bench",
]
# Modules outside the product, and who may import them.
OUTSIDE = {"sim": {"app", "cli", "bench"}, "bench": {"cli"}}
# What the outside modules themselves may import (besides what their rank allows).
ONLY = {"sim": {"domain"}}

REFERENCE = re.compile(r"\bcrate::(?:\{([^}]*)\}|(\w+))")


def code_lines(text):
    """Yields (line number, line) of non-test, non-comment code."""
    depth_at_test = None
    depth = 0
    pending_cfg_test = False
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if depth_at_test is None:
            if stripped.startswith("#[cfg(test)]"):
                pending_cfg_test = True
            elif pending_cfg_test and re.match(r"(pub(\(\w+\))? )?mod \w+\s*\{", stripped):
                depth_at_test = depth
                pending_cfg_test = False
            elif stripped and not stripped.startswith("#["):
                pending_cfg_test = False
        in_test = depth_at_test is not None
        code = line.split("//", 1)[0]
        depth += code.count("{") - code.count("}")
        if in_test and depth <= depth_at_test:
            depth_at_test = None
            continue
        if in_test or stripped.startswith("//"):
            continue
        yield number, code


def top_level(path):
    rel = os.path.relpath(path, "src").split(os.sep)
    return rel[0][:-3] if rel[0].endswith(".rs") else rel[0]


def self_test():
    """The check must catch an upward import, a mutual import and a product import of
    the simulator, and pass a clean tree; run by scripts/test.sh before the real check."""
    import tempfile

    cases = {
        "upward": ({"store/mod.rs": "use crate::shapes::runner;\n", "shapes/mod.rs": ""}, 1),
        "mutual": ({"lock/mod.rs": "use crate::quota::x;\n", "quota/mod.rs": "use crate::lock::y;\n"}, 1),
        "sim in product": ({"shapes/mod.rs": "fn f() { crate::sim::serve(); }\n", "sim/mod.rs": ""}, 1),
        "test code": ({"store/mod.rs": "#[cfg(test)]\nmod tests {\n    use crate::app::x;\n}\n"}, 0),
        "clean": ({"shapes/mod.rs": "use crate::store::{a, b};\nuse crate::domain::c;\n"}, 0),
    }
    failures = 0
    for name, (files, expected) in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            for rel, text in files.items():
                path = os.path.join(tmp, "src", rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(text)
            got = check(tmp, quiet=True)
            if got != expected:
                print(f"self-test {name}: exit {got}, expected {expected}")
                failures += 1
    return 1 if failures else 0


def main():
    if "--self-test" in sys.argv:
        result = self_test()
        print("layering check self-test: " + ("failed" if result else "ok"))
        return result
    return check(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def check(root, quiet=False):
    os.chdir(root)
    rank = {name: index for index, name in enumerate(LAYERS)}
    problems = []
    seen_tops = set()
    for directory, _, files in os.walk("src"):
        for name in sorted(files):
            if not name.endswith(".rs") or name in ("tests.rs", "testing.rs"):
                continue
            path = os.path.join(directory, name)
            if "tests" in os.path.relpath(path, "src").split(os.sep)[:-1]:
                continue
            top = top_level(path)
            if top in ("lib", "main"):
                continue
            seen_tops.add(top)
            if top not in rank:
                problems.append(f"{path}: module {top} is not in the layer list of scripts/check-layers.py")
                continue
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            for number, code in code_lines(text):
                for match in REFERENCE.finditer(code):
                    group = match.group(1)
                    targets = re.findall(r"(?:^|[,{\s])(\w+)", group) if group else [match.group(2)]
                    for target in targets:
                        if target == top or target not in rank:
                            continue
                        why = None
                        if target in OUTSIDE and top in OUTSIDE[target]:
                            continue
                        if target in OUTSIDE:
                            why = f"{target} is outside the product; only {', '.join(sorted(OUTSIDE[target]))} may import it"
                        elif top in ONLY and target not in ONLY[top]:
                            why = f"{top} may import only {', '.join(sorted(ONLY[top]))}"
                        elif rank[target] > rank[top] and top not in ONLY:
                            why = f"{target} is above {top}"
                        if why:
                            problems.append(f"{path}:{number}: {top} -> {target}: {why}")
    if quiet:
        return 1 if problems else 0
    for problem in problems:
        print(problem)
    if problems:
        print(f"layering check: {len(problems)} references go up or out of the product (see docs/architecture.md)")
        return 1
    print(f"layering check: {len(seen_tops)} top-level modules, every import goes down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
