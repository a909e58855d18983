#!/usr/bin/env python3
"""Generate src/detail/unicode_tables.h for LAKE's CLIP tokenizer.

The C++ tokenizer reproduces OpenAI CLIP's SimpleTokenizer text pipeline
(html.unescape twice, whitespace collapse with Python ``re``'s ``\\s``,
``str.lower()``, and the split regex compiled by the ``regex`` module with
IGNORECASE).  Rather than re-deriving Unicode properties from the UCD, this
script asks the very Python modules used by the reference, one code point at a
time, so the tables agree with the reference exactly (including the Unicode
versions those modules were built with):

  * re_space       code points matched by ``re``'s ``\\s`` (== str.isspace())
  * letter         ``[\\p{L}]`` under regex.IGNORECASE
  * number         ``[\\p{N}]`` under regex.IGNORECASE
  * other          ``[^\\s\\p{L}\\p{N}]`` under regex.IGNORECASE
  * cased /        the Cased and Case_Ignorable properties as CPython's
    case_ignorable str.lower() uses them for the Final_Sigma rule, probed
                   through str.lower() itself
  * lower          str.lower() for single code points (runs of equal delta),
                   plus the one-to-many mappings
  * case_equiv     for every character of the split regex's literals, the
                   code points that match it under regex.IGNORECASE
  * html entities  html.entities.html5, html._invalid_charrefs and
                   html._invalid_codepoints

Usage: python tools/gen_unicode_tables.py [output]   (default: src/detail/unicode_tables.h)
"""

import html
import html.entities
import os
import re
import sys
import unicodedata

import regex

MAX_CP = 0x110000
ALL = "".join(chr(c) for c in range(MAX_CP))

# The literal alternatives of CLIP's split pattern (special tokens, contractions).
LITERALS = ["<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]


def ranges_of(codepoints):
    """Sorted code points -> list of inclusive (first, last) ranges."""
    out = []
    for c in sorted(codepoints):
        if out and out[-1][1] + 1 == c:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def regex_set(pattern, flags=0, module=regex):
    return {ord(m) for m in module.findall(pattern, ALL, flags)}


def lower_runs():
    """Single-code-point lowercase mappings as runs (first, last, stride, delta)."""
    singles, multi = [], []
    for c in range(MAX_CP):
        low = chr(c).lower()
        if low == chr(c):
            continue
        if len(low) == 1:
            singles.append((c, ord(low) - c))
        else:
            multi.append((c, [ord(x) for x in low]))
    runs = []  # [first, last, stride, delta]
    for c, d in singles:
        if runs:
            r = runs[-1]
            if r[3] == d:
                stride = c - r[1]
                if r[0] == r[1] and stride in (1, 2):
                    r[1], r[2] = c, stride
                    continue
                if r[0] != r[1] and stride == r[2]:
                    r[1] = c
                    continue
        runs.append([c, c, 1, d])
    return runs, multi


def final_sigma_properties():
    """Probe CPython's Cased / Case_Ignorable through the Final_Sigma rule of str.lower().

    'Σ' lowers to 'ς' iff it is preceded by cased (skipping case-ignorables) and not
    followed by cased (skipping case-ignorables).
    """
    cased, ignorable = set(), set()
    for c in range(MAX_CP):
        ch = chr(c)
        if (ch + "\u03a3").lower()[-1] == "\u03c2":
            cased.add(c)
    for c in range(MAX_CP):
        ch = chr(c)
        if c in cased:
            # Cased: ignorable iff 'AΣ' + ch still has Σ in final position.
            if ("A\u03a3" + ch).lower()[1] == "\u03c2":
                ignorable.add(c)
        elif ("A" + ch + "\u03a3").lower()[-1] == "\u03c2":
            ignorable.add(c)
    return cased, ignorable


def c_bytes(s):
    """A C++ string literal holding the UTF-8 bytes of s (octal escapes are never ambiguous)."""
    out = []
    for b in s.encode("utf-8"):
        ch = chr(b)
        if ch.isascii() and (ch.isalnum() or ch in ";_"):
            out.append(ch)
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def emit_ranges(lines, name, comment, rngs):
    lines.append(f"// {comment} ({len(rngs)} ranges)")
    lines.append(f"inline constexpr Range {name}[] = {{")
    row = []
    for a, b in rngs:
        row.append(f"{{0x{a:X},0x{b:X}}}")
        if len(row) == 8:
            lines.append("    " + ",".join(row) + ",")
            row = []
    if row:
        lines.append("    " + ",".join(row) + ",")
    lines.append("};")
    lines.append("")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "src", "detail", "unicode_tables.h")

    re_space = regex_set(r"\s", 0, re)
    assert re_space == {c for c in range(MAX_CP) if chr(c).isspace()}
    letter = regex_set(r"[\p{L}]", regex.IGNORECASE)
    number = regex_set(r"[\p{N}]", regex.IGNORECASE)
    other = regex_set(r"[^\s\p{L}\p{N}]", regex.IGNORECASE)
    assert not (letter & number) and not (letter & other) and not (number & other)
    runs, multi = lower_runs()
    cased, ignorable = final_sigma_properties()

    literal_chars = sorted({ch for lit in LITERALS for ch in lit})
    equiv = {}
    for ch in literal_chars:
        eq = sorted(regex_set(regex.escape(ch), regex.IGNORECASE))
        assert ord(ch) in eq and len(eq) <= 4, (ch, eq)
        equiv[ch] = eq

    entities = sorted((k.encode("utf-8"), v) for k, v in html.entities.html5.items())
    invalid_charrefs = sorted(html._invalid_charrefs.items())
    invalid_codepoints = ranges_of(html._invalid_codepoints)
    assert all(len(v) == 1 for _, v in invalid_charrefs)

    L = []
    L.append("// GENERATED by tools/gen_unicode_tables.py -- do not edit by hand.")
    L.append(f"// Python {sys.version.split()[0]} (unicodedata {unicodedata.unidata_version}), "
             f"regex {regex.__version__}.")
    L.append("// Tables that make LAKE's C++ CLIP tokenizer match OpenAI CLIP's SimpleTokenizer:")
    L.append("// code point sets as sorted inclusive ranges, str.lower(), html.unescape data.")
    L.append("#pragma once")
    L.append("")
    L.append("#include <cstdint>")
    L.append("")
    L.append("namespace lake::detail::unicode {")
    L.append("")
    L.append("struct Range { char32_t first, last; };")
    L.append("// Code points first, first+stride, ..., last all lowercase to cp + delta.")
    L.append("struct LowerRun { char32_t first, last; int32_t stride, delta; };")
    L.append("// A code point whose lowercase is several code points (zero-terminated).")
    L.append("struct LowerMulti { char32_t cp; char32_t lower[4]; };")
    L.append("// A literal character of the split pattern and what matches it under IGNORECASE.")
    L.append("struct CaseEquiv { char32_t ch; char32_t matches[4]; };")
    L.append("// One entry of html.entities.html5: name (with or without ';') -> UTF-8 value.")
    L.append("struct Entity { const char* name; const char* value; };")
    L.append("struct InvalidCharref { uint32_t number; char32_t replacement; };")
    L.append("")
    emit_ranges(L, "kReSpace", "Python re '\\s' on str (== str.isspace())", ranges_of(re_space))
    emit_ranges(L, "kLetter", "regex '[\\p{L}]' with IGNORECASE", ranges_of(letter))
    emit_ranges(L, "kNumber", "regex '[\\p{N}]' with IGNORECASE", ranges_of(number))
    emit_ranges(L, "kOther", "regex '[^\\s\\p{L}\\p{N}]' with IGNORECASE", ranges_of(other))
    emit_ranges(L, "kCased", "Cased, as used by str.lower()'s Final_Sigma rule", ranges_of(cased))
    emit_ranges(L, "kCaseIgnorable", "Case_Ignorable, as used by str.lower()'s Final_Sigma rule",
                ranges_of(ignorable))

    L.append(f"// str.lower() of single code points ({len(runs)} runs)")
    L.append("inline constexpr LowerRun kLower[] = {")
    row = []
    for a, b, s, d in runs:
        row.append(f"{{0x{a:X},0x{b:X},{s},{d}}}")
        if len(row) == 6:
            L.append("    " + ",".join(row) + ",")
            row = []
    if row:
        L.append("    " + ",".join(row) + ",")
    L.append("};")
    L.append("inline constexpr LowerMulti kLowerMulti[] = {")
    for c, low in multi:
        assert len(low) < 4
        L.append(f"    {{0x{c:X}, {{{','.join('0x%X' % x for x in low)}}}}},")
    L.append("};")
    L.append("")

    L.append("// Characters of the split pattern's literals and their IGNORECASE matches")
    L.append("inline constexpr CaseEquiv kCaseEquiv[] = {")
    for ch in literal_chars:
        L.append(f"    {{0x{ord(ch):X}, {{{','.join('0x%X' % x for x in equiv[ch])}}}}},")
    L.append("};")
    L.append("")

    L.append("// html._invalid_charrefs: numeric references replaced by a fixed character")
    L.append("inline constexpr InvalidCharref kInvalidCharrefs[] = {")
    for n, v in invalid_charrefs:
        L.append(f"    {{0x{n:X}, 0x{ord(v):X}}},")
    L.append("};")
    L.append("")
    emit_ranges(L, "kInvalidCodepoints", "html._invalid_codepoints: numeric references dropped",
                invalid_codepoints)

    L.append(f"// html.entities.html5, sorted by the bytes of the name ({len(entities)} entries)")
    L.append("inline constexpr Entity kEntities[] = {")
    for name, value in entities:
        L.append(f"    {{{c_bytes(name.decode())}, {c_bytes(value)}}},")
    L.append("};")
    L.append("")
    L.append("}  // namespace lake::detail::unicode")
    L.append("")

    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="ascii") as f:
        f.write("\n".join(L))
    print(f"wrote {out_path}: {os.path.getsize(out_path)} bytes; "
          f"space={len(ranges_of(re_space))} L={len(ranges_of(letter))} N={len(ranges_of(number))} "
          f"other={len(ranges_of(other))} cased={len(ranges_of(cased))} "
          f"ignorable={len(ranges_of(ignorable))} lower_runs={len(runs)} multi={len(multi)} "
          f"entities={len(entities)}")


if __name__ == "__main__":
    main()
