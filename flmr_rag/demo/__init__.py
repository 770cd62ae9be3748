"""The offline end-to-end demo on easy-vqa: data, knowledge base, models, pipeline and report."""
