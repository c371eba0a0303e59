#!/usr/bin/env python3
"""Generates frontend/tokenizer_unicode.inc, the Unicode tables of the WordPiece tokenizer.

The tables reproduce the BertNormalizer and BertPreTokenizer of HuggingFace `tokenizers`:
  - a class per code point: word, drop (controls, format, private use, nonspacing marks,
    U+0000, U+FFFD), space, punct (ASCII punctuation and Unicode P*), cjk (padded with
    spaces);
  - accent stripping: canonical decomposition (NFD) with the nonspacing marks dropped;
  - lower-casing: str.lower for every code point whose lower case is one code point.
They are derived from Python's unicodedata (Unicode 14.0.0, Python 3.11). HF's Rust crates
classify and decompose with Unicode 8.0 tables but lower-case with Rust's (newer) ones, so
the few code points assigned or recategorised since differ: OVERRIDES restores HF's class
for them, NFD_UNKNOWN_TO_HF lists the decompositions HF does not apply and LOWER_EXTRA the
case mappings Python 3.11 lacks (all found with --check against tokenizers 0.23.3).

  gen_unicode_tables.py OUT.inc                  write the tables
  gen_unicode_tables.py --check tokenizer.json   compare them with HF on every code point
                                                 (needs the `tokenizers` package); prints
                                                 the overrides that would fix a mismatch
"""
import sys
import unicodedata as ud

WORD, DROP, SPACE, PUNCT, CJK = range(5)
CLASS_NAMES = ["kWord", "kDrop", "kSpace", "kPunct", "kCjk"]
# Rust's char::is_whitespace (the White_Space property) less the Cc ones HF drops.
SPACES = [0x9, 0xA, 0xD, 0x20, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
          0x205F, 0x3000]
CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
# Code points whose Unicode 8.0 class (used by HF) differs from their Unicode 14.0 one.
OVERRIDES = [
    (0x61D, 0x61D, WORD), (0x7FD, 0x7FD, WORD), (0x890, 0x891, WORD), (0x898, 0x89F, WORD),
    (0x8CA, 0x8E2, WORD), (0x9FD, 0x9FE, WORD), (0xA76, 0xA76, WORD), (0xAFA, 0xAFF, WORD),
    (0xB55, 0xB55, WORD), (0xC04, 0xC04, WORD), (0xC3C, 0xC3C, WORD), (0xC77, 0xC77, WORD),
    (0xC84, 0xC84, WORD), (0xD00, 0xD00, WORD), (0xD3B, 0xD3C, WORD), (0xD81, 0xD81, WORD),
    (0xEBA, 0xEBA, WORD), (0x166D, 0x166D, PUNCT), (0x1734, 0x1734, DROP),
    (0x180F, 0x180F, WORD), (0x1885, 0x1886, WORD), (0x1ABF, 0x1ACE, WORD),
    (0x1B7D, 0x1B7E, WORD), (0x1DF6, 0x1DFB, WORD), (0x2E43, 0x2E4F, WORD),
    (0x2E52, 0x2E5D, WORD), (0xA82C, 0xA82C, WORD), (0xA8C5, 0xA8C5, WORD),
    (0xA8FF, 0xA8FF, WORD), (0xA9BD, 0xA9BD, WORD), (0x10D24, 0x10D27, WORD),
    (0x10EAB, 0x10EAD, WORD), (0x10F46, 0x10F50, WORD), (0x10F55, 0x10F59, WORD),
    (0x10F82, 0x10F89, WORD), (0x11070, 0x11070, WORD), (0x11073, 0x11074, WORD),
    (0x110C2, 0x110C2, WORD), (0x110CD, 0x110CD, WORD), (0x111C9, 0x111C9, PUNCT),
    (0x111CF, 0x111CF, WORD), (0x1123E, 0x1123E, WORD), (0x1133B, 0x1133B, WORD),
    (0x11438, 0x1143F, WORD), (0x11442, 0x11444, WORD), (0x11446, 0x11446, WORD),
    (0x1144B, 0x1144F, WORD), (0x1145A, 0x1145B, WORD), (0x1145D, 0x1145E, WORD),
    (0x11660, 0x1166C, WORD), (0x116B9, 0x116B9, WORD), (0x1182F, 0x11837, WORD),
    (0x11839, 0x1183B, WORD), (0x1193B, 0x1193C, WORD), (0x1193E, 0x1193E, WORD),
    (0x11943, 0x11946, WORD), (0x119D4, 0x119D7, WORD), (0x119DA, 0x119DB, WORD),
    (0x119E0, 0x119E0, WORD), (0x119E2, 0x119E2, WORD), (0x11A01, 0x11A0A, WORD),
    (0x11A33, 0x11A38, WORD), (0x11A3B, 0x11A47, WORD), (0x11A51, 0x11A56, WORD),
    (0x11A59, 0x11A5B, WORD), (0x11A8A, 0x11A96, WORD), (0x11A98, 0x11A9C, WORD),
    (0x11A9E, 0x11AA2, WORD), (0x11C30, 0x11C36, WORD), (0x11C38, 0x11C3D, WORD),
    (0x11C3F, 0x11C3F, WORD), (0x11C41, 0x11C45, WORD), (0x11C70, 0x11C71, WORD),
    (0x11C92, 0x11CA7, WORD), (0x11CAA, 0x11CB0, WORD), (0x11CB2, 0x11CB3, WORD),
    (0x11CB5, 0x11CB6, WORD), (0x11D31, 0x11D36, WORD), (0x11D3A, 0x11D3A, WORD),
    (0x11D3C, 0x11D3D, WORD), (0x11D3F, 0x11D45, WORD), (0x11D47, 0x11D47, WORD),
    (0x11D90, 0x11D91, WORD), (0x11D95, 0x11D95, WORD), (0x11D97, 0x11D97, WORD),
    (0x11EF3, 0x11EF4, WORD), (0x11EF7, 0x11EF8, WORD), (0x11FFF, 0x11FFF, WORD),
    (0x12FF1, 0x12FF2, WORD), (0x13430, 0x13438, WORD), (0x16E97, 0x16E9A, WORD),
    (0x16F4F, 0x16F4F, WORD), (0x16FE2, 0x16FE2, WORD), (0x16FE4, 0x16FE4, WORD),
    (0x1CF00, 0x1CF2D, WORD), (0x1CF30, 0x1CF46, WORD), (0x1E000, 0x1E006, WORD),
    (0x1E008, 0x1E018, WORD), (0x1E01B, 0x1E021, WORD), (0x1E023, 0x1E024, WORD),
    (0x1E026, 0x1E02A, WORD), (0x1E130, 0x1E136, WORD), (0x1E2AE, 0x1E2AE, WORD),
    (0x1E2EC, 0x1E2EF, WORD), (0x1E944, 0x1E94A, WORD), (0x1E95E, 0x1E95F, WORD),
]
NFD_UNKNOWN_TO_HF = {0x11938}
# Lower-case mappings newer than Python 3.11 that HF (Rust's char::to_lowercase) applies:
# (first, last, delta).
LOWER_EXTRA = [(0x1C89, 0x1C89, 1), (0xA7CB, 0xA7CB, 0x264 - 0xA7CB), (0xA7CC, 0xA7CC, 1),
               (0xA7CE, 0xA7CE, 1), (0xA7D2, 0xA7D2, 1), (0xA7D4, 0xA7D4, 1), (0xA7DA, 0xA7DA, 1),
               (0xA7DC, 0xA7DC, 0x19B - 0xA7DC), (0x10D50, 0x10D65, 0x20),
               (0x16EA0, 0x16EB8, 0x1B)]
HANGUL = range(0xAC00, 0xD7A4)
MAX_CP = 0x110000


def base_class(cp):
    c = chr(cp)
    cat = ud.category(c)
    if cp in SPACES:
        return SPACE
    if cp in (0, 0xFFFD) or cat in ("Cc", "Cf", "Co", "Cs", "Mn"):
        return DROP
    if any(a <= cp <= b for a, b in CJK_RANGES):
        return CJK
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or cat[0] == "P":
        return PUNCT
    return WORD


def classes():
    cls = [base_class(cp) for cp in range(MAX_CP)]
    for first, last, c in OVERRIDES:
        cls[first:last + 1] = [c] * (last - first + 1)
    return cls


def strip_map(cls):
    """cp -> its NFD with nonspacing marks (HF's Unicode 8.0 ones) dropped, where it differs."""
    out = {}
    for cp in range(MAX_CP):
        if cls[cp] == DROP or cp in HANGUL or cp in NFD_UNKNOWN_TO_HF or 0xD800 <= cp < 0xE000:
            continue
        parts = [ord(x) for x in ud.normalize("NFD", chr(cp))]
        parts = [p for p in parts if not (cls[p] == DROP and ud.category(chr(p)) == "Mn")]
        if parts != [cp]:
            out[cp] = parts
    return out


def lower_map():
    out = {}
    for cp in range(MAX_CP):
        low = chr(cp).lower() if not 0xD800 <= cp < 0xE000 else chr(cp)
        if len(low) == 1 and ord(low) != cp:
            out[cp] = ord(low)
    for first, last, delta in LOWER_EXTRA:
        out.update((cp, cp + delta) for cp in range(first, last + 1))
    return out


def lower_runs(low):
    out = []
    for cp, to in sorted(low.items()):
        d = to - cp
        r = out[-1] if out else None
        if r and r[2] == d and (cp - r[1] == r[3] or (r[0] == r[1] and cp - r[1] in (1, 2))):
            r[3] = cp - r[1]
            r[1] = cp
        else:
            out.append([cp, cp, d, 1])
    return out


def normalize_char(cp, cls, strip, low):
    """Python mirror of the C++ per-code-point normalisation."""
    c = cls[cp]
    if c == DROP:
        return ""
    if c == SPACE:
        return " "
    if cp in HANGUL:
        parts = [ord(x) for x in ud.normalize("NFD", chr(cp))]
    else:
        parts = strip.get(cp, [cp])
    s = "".join(chr(low.get(p, p)) for p in parts)
    return " " + s + " " if c == CJK else s


def wrap(items):
    """Joins items into lines of at most 100 columns, indented by 4."""
    lines, line = [], ""
    for item in items:
        if line and len(line) + 1 + len(item) > 96:
            lines.append(line)
            line = ""
        line = line + " " + item if line else item
    return "\n".join("    " + l for l in lines + [line])


def write(path):
    cls = classes()
    strip = strip_map(cls)
    low = lower_map()
    class_runs = [(cp, cls[cp]) for cp in range(MAX_CP) if cp == 0 or cls[cp] != cls[cp - 1]]
    single = sorted((cp, v[0]) for cp, v in strip.items() if len(v) == 1)
    multi = sorted((cp, v) for cp, v in strip.items() if len(v) > 1)
    assert max(len(v) for _, v in multi) <= 3
    hexs = lambda v: "0x%X" % v
    text = f"""// Generated by tools/minilm/gen_unicode_tables.py from Python's unicodedata (Unicode
// {ud.unidata_version}) with HF tokenizers' Unicode 8.0 classes restored. Do not edit.
// clang-format off

// Class of every code point from `first` up to the next run's `first`.
constexpr ClassRun kClassRuns[] = {{
{wrap([f"{{{hexs(a)}, {CLASS_NAMES[c]}}}," for a, c in class_runs])}
}};

// Code point -> the one code point left after NFD and dropping nonspacing marks.
constexpr StripPair kStrip[] = {{
{wrap([f"{{{hexs(a)}, {hexs(t)}}}," for a, t in single])}
}};

// The same for code points that decompose to two or three kept code points.
constexpr StripMulti kStripMulti[] = {{
{wrap([f"{{{hexs(cp)}, {{{', '.join(hexs(p) for p in v)}}}}}," for cp, v in multi])}
}};

// Code points first, first+stride, ..., last lower-case to cp + delta.
constexpr LowerRun kLowerRuns[] = {{
{wrap([f"{{{hexs(a)}, {hexs(b)}, {d}, {s}}}," for a, b, d, s in lower_runs(low)])}
}};
// clang-format on
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{path}: {len(class_runs)} class runs, {len(single)} strip pairs, "
          f"{len(multi)} multi, {len(lower_runs(low))} lower runs")


def check(tokenizer_json):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    cls = classes()
    strip, low = strip_map(cls), lower_map()
    bad = []
    for cp in range(MAX_CP):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        got = normalize_char(cp, cls, strip, low)
        want = tok.normalizer.normalize_str(c)
        pieces = [t for t, _ in tok.pre_tokenizer.pre_tokenize_str("a" + c + "a")]
        hf_class = SPACE if pieces == ["a", "a"] else PUNCT if pieces == ["a", c, "a"] else WORD
        mine = cls[cp] if cls[cp] in (SPACE, PUNCT) else WORD
        if got != want or (cls[cp] != DROP and mine != hf_class):
            bad.append((cp, want, hf_class))
    print(f"{len(bad)} code points differ from HF")
    for cp, want, hf_class in bad[:20]:
        print("  U+%04X %s: HF normalises it to %r, class %s" % (
            cp, ud.name(chr(cp), "?"), want, CLASS_NAMES[hf_class]))
    fixes = []
    for cp, want, hf_class in bad:
        c = DROP if want == "" else SPACE if want == " " else hf_class
        if fixes and fixes[-1][1] == cp - 1 and fixes[-1][2] == c:
            fixes[-1][1] = cp
        else:
            fixes.append([cp, cp, c])
    if fixes:
        print("overrides that would fix the class of these (add to OVERRIDES):")
        print("\n".join("    (0x%X, 0x%X, %s)," % (a, b, CLASS_NAMES[c][1:].upper())
                        for a, b, c in fixes))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    if ud.unidata_version != "14.0.0":
        sys.exit(f"needs Python 3.11 (Unicode 14.0.0), OVERRIDES is relative to it; "
                 f"this Python has Unicode {ud.unidata_version}")
    write(sys.argv[1])
