#!/usr/bin/env python3
"""Lists the functions longer than N lines (default 80) in crates/*/src, longest first, skipping
everything after a file's `#[cfg(test)]`: functions that long are split where a name explains the part.

    python3 scripts/long_functions.py [N]
"""
import pathlib
import re
import sys

N = int(sys.argv[1]) if len(sys.argv) > 1 else 80
fn = re.compile(r'^(\s*)(pub(\([a-z]+\))? )?(const )?(async )?(unsafe )?fn (\w+)')
found = []
for p in sorted(pathlib.Path(__file__).resolve().parent.parent.joinpath('crates').glob('*/src/**/*.rs')):
    lines = p.read_text().split('\n')
    i = 0
    while i < len(lines):
        l = lines[i]
        if l.startswith('#[cfg(test)]'):
            break
        m = fn.match(l)
        if m:
            ind = m.group(1)
            j = i
            while j < len(lines) and not (lines[j].startswith(ind + '}') and len(lines[j].rstrip()) == len(ind) + 1):
                j += 1
            n = j - i + 1
            if n > N and j < len(lines):
                found.append((n, f'{p.relative_to(pathlib.Path.cwd()) if p.is_relative_to(pathlib.Path.cwd()) else p}:{i+1}', m.group(7)))
            i = j if n > 1 and j < len(lines) else i
        i += 1
for n, where, name in sorted(found, reverse=True):
    print(f'{n:4d} {where} {name}')
