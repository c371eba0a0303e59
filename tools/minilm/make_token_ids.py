#!/usr/bin/env python3
"""Writes the reference token ids of the MiniLM test sentences with HuggingFace `tokenizers`.

  make_token_ids.py MODEL_DIR [SENTENCES [OUT]]

MODEL_DIR holds tokenizer.json (tools/fetch_minilm.sh prints it). SENTENCES defaults to
tests/frontend/data/minilm_sentences.txt (one UTF-8 sentence a line, an empty line being the
empty sentence), OUT to tests/frontend/data/minilm_token_ids.txt: one line a sentence, its
space-separated ids. Encoding is sentence-transformers' for all-MiniLM-L6-v2: [CLS] ... [SEP]
truncated to max_seq_length 256 tokens, no padding. Needs `pip install tokenizers`.
"""
import os
import sys

from tokenizers import Tokenizer

MAX_SEQ_LENGTH = 256


def read_sentences(path):
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    return (text[:-1] if text.endswith("\n") else text).split("\n")


def main(argv):
    if not 2 <= len(argv) <= 4:
        sys.exit(__doc__)
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/frontend/data")
    sentences = argv[2] if len(argv) > 2 else os.path.join(data, "minilm_sentences.txt")
    out = argv[3] if len(argv) > 3 else os.path.join(data, "minilm_token_ids.txt")
    tok = Tokenizer.from_file(os.path.join(argv[1], "tokenizer.json"))
    tok.no_padding()  # tokenizer.json pads and truncates to 128
    tok.enable_truncation(max_length=MAX_SEQ_LENGTH)
    lines = [" ".join(map(str, tok.encode(s).ids)) for s in read_sentences(sentences)]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{out}: {len(lines)} sentences, {sum(len(l.split()) for l in lines)} tokens")


if __name__ == "__main__":
    main(sys.argv)
