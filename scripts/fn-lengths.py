#!/usr/bin/env python3
"""Lists the longest production functions of the workspace (crates/*/src, outside
`#[cfg(test)]` modules), with their lengths in lines: a tidiness measure for issue notes.

    python3 scripts/fn-lengths.py [N]
"""
import re
import sys
from pathlib import Path

FN = re.compile(r"^\s*(pub(\([a-z]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+([A-Za-z0-9_]+)")


def strip(line):
    # Drop strings, chars and comments well enough to count braces.
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def functions(path):
    lines = path.read_text().splitlines()
    i = 0
    out = []
    skip_depth = None
    depth = 0
    pending_test = False
    while i < len(lines):
        raw = lines[i]
        s = strip(raw)
        if "#[cfg(test)]" in raw:
            pending_test = True
        m = FN.match(raw)
        if m and skip_depth is None:
            start = i
            d = 0
            seen = False
            j = i
            while j < len(lines):
                t = strip(lines[j])
                if not seen and ";" in t and "{" not in t:
                    break  # a declaration without a body
                d += t.count("{") - t.count("}")
                if "{" in t:
                    seen = True
                if seen and d <= 0:
                    out.append((j - start + 1, f"{path}:{start + 1}", m.group(6)))
                    break
                j += 1
            i = j + 1
            continue
        opened = s.count("{") - s.count("}")
        if pending_test and re.match(r"^\s*mod\s+\w+\s*\{", raw):
            skip_depth = depth
            pending_test = False
        elif re.match(r"^\s*(mod|fn|impl|struct|enum)\b", raw):
            pending_test = False
        depth += opened
        if skip_depth is not None and depth <= skip_depth:
            skip_depth = None
        i += 1
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    root = Path(__file__).resolve().parent.parent
    found = []
    for p in sorted(root.glob("crates/*/src/**/*.rs")):
        if "testkit" in p.parts or p.name == "tests.rs":
            continue
        found.extend((l, str(Path(w).relative_to(root)), n) for l, w, n in functions(p))
    found.sort(reverse=True)
    for length, where, name in found[:n]:
        print(f"{length:5}  {name:32} {where}")


main()
