"""Output of the demo: the results table, the JSON summary and the HTML report."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

from PIL import Image

from flmr_rag.demo.pipeline import DemoResult


def format_table(result: DemoResult) -> str:
    """Return the plain-text results table: retrieval, answers by question type, timings."""
    metrics = result.metrics
    lines = [
        f"flmr-rag demo: easy-vqa test, {int(metrics['num_questions'])} questions, 24 knowledge-base passages",
        "",
        f"{'metric':<28}{'value':>10}",
        f"{'Recall@1':<28}{metrics['recall_at_1']:>10.4f}",
        f"{'Recall@5':<28}{metrics['recall_at_5']:>10.4f}",
        f"{'VQA score':<28}{metrics['vqa_score']:>10.4f}",
        "",
        f"{'answer accuracy by type':<28}{'accuracy':>10}{'questions':>11}",
    ]
    for name, (accuracy, count) in result.accuracy_by_type.items():
        lines.append(f"{name:<28}{accuracy:>10.4f}{count:>11}")
    lines += ["", f"{'timing':<28}{'seconds':>10}"]
    for name, seconds in result.timings.items():
        note = ""
        if name == "train retriever" and result.cached["retriever"]:
            note = "  (cached)"
        if name == "train reader" and result.cached["reader"]:
            note = "  (cached)"
        lines.append(f"{name:<28}{seconds:>10.1f}{note}")
    return "\n".join(lines)


def write_json(result: DemoResult, path: str | os.PathLike) -> None:
    """Write the metrics (``recall_at_1``, ``recall_at_5``, ``vqa_score``, ``num_questions``) and more as JSON."""
    payload = {
        **result.metrics,
        "recall_curve": {str(k): value for k, value in result.recall_curve.items()},
        "accuracy_by_type": {name: {"accuracy": accuracy, "questions": count} for name, (accuracy, count) in result.accuracy_by_type.items()},
        "timings_s": result.timings,
        "cached": result.cached,
    }
    _write_atomic(Path(path), json.dumps(payload, indent=2))


def write_html(result: DemoResult, path: str | os.PathLike) -> None:
    """Write a self-contained HTML report: metrics, the Recall@K plot and example questions.

    Images (the easy-vqa pictures and the plot) are embedded as base64 PNG, so the file can be
    opened or sent on its own.
    """
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{accuracy:.4f}</td><td>{count}</td></tr>"
        for name, (accuracy, count) in result.accuracy_by_type.items()
    )
    examples = "".join(_example_html(example) for example in result.examples)
    metrics = result.metrics
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>flmr-rag demo report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} .example{{display:flex;gap:1em;margin:1em 0;border-top:1px solid #ddd;padding-top:1em}}
.example img{{width:128px;height:128px;image-rendering:pixelated}} .wrong{{color:#b00}} .right{{color:#070}}</style></head>
<body><h1>flmr-rag demo on easy-vqa</h1>
<p>{int(metrics['num_questions'])} test questions. Recall@1 {metrics['recall_at_1']:.4f}, Recall@5 {metrics['recall_at_5']:.4f},
VQA score {metrics['vqa_score']:.4f}. The knowledge base (24 passages, one per colour and shape) was written for this demo.</p>
<h2>Answer accuracy by question type</h2><table><tr><th>type</th><th>accuracy</th><th>questions</th></tr>{rows}</table>
<h2>Recall@K</h2><img alt="Recall@K plot" src="data:image/png;base64,{_recall_plot(result.recall_curve)}">
<h2>Examples</h2>{examples}
</body></html>
"""
    _write_atomic(Path(path), document)


def _example_html(example: dict) -> str:
    with Image.open(example["image_path"]) as image:
        picture = _png_base64(image.convert("RGB"))
    verdict = "right" if example["answer"] == example["gold_answer"] else "wrong"
    passages = "".join(
        f"<li><b>{html.escape(item['id'])}</b> ({item['score']:.2f}): {html.escape(item['text'])}</li>" for item in example["top_passages"]
    )
    return (
        f'<div class="example"><img alt="question image" src="data:image/png;base64,{picture}"><div>'
        f"<p><b>Q:</b> {html.escape(example['question'])}<br>"
        f"<b>Answer:</b> <span class=\"{verdict}\">{html.escape(example['answer'])}</span> "
        f"(expected {html.escape(example['gold_answer'])}; relevant passage {html.escape(example['gold_passage'])})</p>"
        f"<ol>{passages}</ol></div></div>"
    )


def _recall_plot(curve: dict[int, float]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.2), dpi=100)
    axes = figure.add_subplot()
    ks = sorted(curve)
    axes.plot(ks, [curve[k] for k in ks], marker="o")
    axes.set_xlabel("K")
    axes.set_ylabel("Recall@K")
    axes.set_xticks(ks)
    axes.set_ylim(min(min(curve.values()) - 0.05, 0.9), 1.005)
    axes.grid(True, alpha=0.3)
    axes.set_title("Retrieval on the easy-vqa test questions")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
