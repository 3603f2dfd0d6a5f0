#!/usr/bin/env python3
"""Prints the Rust functions longer than N lines (signature to closing brace, by brace counting) under the
given folders: `python3 tests/tools/long_functions.py 80 core ffi`. The redesign keeps them to the hot
kernels and tests."""
import re,sys,pathlib
N=int(sys.argv[1]); roots=sys.argv[2:]
for root in roots:
    for p in sorted(pathlib.Path(root).rglob('*.rs')):
        if 'target' in p.parts: continue
        lines=p.read_text().split('\n')
        i=0
        while i<len(lines):
            m=re.match(r'\s*(pub(\([a-z]+\))?\s+)?(unsafe\s+)?(extern "C"\s+)?fn\s+(\w+)',lines[i])
            if m and not lines[i].strip().startswith('//'):
                depth=0; start=i; seen=False
                j=i
                while j<len(lines):
                    l=re.sub(r'"([^"\\]|\\.)*"','""',lines[j]); l=re.sub(r"//.*",'',l)
                    depth+=l.count('{')-l.count('}')
                    if l.count('{'): seen=True
                    if seen and depth<=0: break
                    if not seen and l.rstrip().endswith(';'): break
                    j+=1
                n=j-start+1
                if n>N: print(f"{n:4d} {p}:{start+1} {m.group(5)}")
                i=j+1 if seen else i+1
            else: i+=1
