#!/usr/bin/env python3
"""The engine's files call each other in one direction only.

Reads the symbol tables of the engine library (an archive of one object per
engine/*.c), draws an edge from each file to the files whose functions or
data it uses, and fails when the drawing has a circle, printing the files
and the symbols that make it. With -v it prints the whole drawing.

usage: layers.py [-v] LIBEM_ENGINE.a
"""
import subprocess
import sys


def members(archive):
    """{object name: list of nm lines} for each member of <archive>."""
    out = subprocess.run(['nm', archive], capture_output=True, text=True, check=True).stdout
    objs, cur = {}, None
    for line in out.splitlines():
        if line.endswith('.o:'):
            cur = line[:-1].replace('.c.o', '').replace('.o', '')
            objs[cur] = []
        elif cur and line.strip():
            objs[cur].append(line.split())
    return objs


def graph(objs):
    defs, undef = {}, {}
    for name, lines in objs.items():
        undef[name] = set()
        for p in lines:
            if len(p) == 3 and p[1] in 'TDRBV':
                defs[p[2]] = name
            elif len(p) == 2 and p[0] == 'U':
                undef[name].add(p[1])
    edges = {n: {} for n in objs}
    for n in objs:
        for s in sorted(undef[n]):
            d = defs.get(s)
            if d and d != n:
                edges[n].setdefault(d, []).append(s)
    return edges


def cycles(edges):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return comps


def main():
    args = sys.argv[1:]
    verbose = '-v' in args
    args = [a for a in args if a != '-v']
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    edges = graph(members(args[0]))
    if len(edges) < 2:
        print(f'layers: {args[0]} holds {len(edges)} objects, expected the engine', file=sys.stderr)
        return 2
    if verbose:
        for n in sorted(edges):
            print(f'{n:16s} -> {", ".join(sorted(edges[n])) or "-"}')
    comps = cycles(edges)
    if not comps:
        print(f'layers: {len(edges)} engine files, no circle')
        return 0
    for comp in comps:
        print('layers: circle between ' + ', '.join(comp))
        for a in comp:
            for b, syms in sorted(edges[a].items()):
                if b in comp:
                    print(f'  {a} -> {b}: {", ".join(syms)}')
    return 1


if __name__ == '__main__':
    sys.exit(main())
