"""FLMRRetriever: an FLMR model, a multi-vector index and a document store behind one API.

The files of an index directory are described in :mod:`flmr_rag.index_directory`.

Example:
    >>> from flmr_rag import Document, FLMRRetriever
    >>> with FLMRRetriever.create("kb", model="LinWeizheDragon/PreFLMR_ViT-L") as retriever:
    ...     retriever.add([Document(id="p1", text="The Eiffel Tower is in Paris.")])
    ...     results = retriever.search(question="Where is this tower?", image="tower.jpg", k=5)

Adds are written in chunks of ``chunk_size`` documents, and each chunk is one commit of the index
and the docstore. :mod:`flmr_rag.docstore` describes how the two stay in step across a crash. A
crash or an error during ``add`` keeps the chunks committed before it and drops the chunk in
progress. Writers hold the directory's writer lock, and ``open`` repairs a crashed write only
when no other process holds that lock. Several processes may search one directory at once, and
documents added by another process become visible after the directory is opened again.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from flmr_rag.docstore import DocumentStore, StoredDocument
from flmr_rag.encoding import FLMREncoder, Query
from flmr_rag.index_directory import (
    DEFAULT_MODEL,
    DOCSTORE_FILE,
    IMAGES_FOLDER,
    INDEX_FOLDER,
    SETTINGS_FILE,
    SETTINGS_FORMAT,
    SETTINGS_VERSION,
    check_model_dim,
    check_new_index_directory,
    check_requested_model,
    load_model_and_processor,
    load_model_for_new_index,
    read_settings,
    remove_partial_index,
    write_json_atomic,
    writer_lock,
)
from flmr_rag.progress import progress
from flmr_rag.retriever_inputs import normalize_instructions, parse_query, prepare_document
from flmr_rag.types import Document, ImageInput, SearchResult

logger = logging.getLogger(__name__)


class FLMRRetriever:
    """Late-interaction multimodal retrieval over an index directory.

    Build one with :meth:`create` or :meth:`open`, not with the constructor. Searches may run from
    several threads at once; ``add`` and ``delete`` run one at a time.
    """

    def __init__(self, index_dir: Path, settings: dict[str, Any], model: Any, image_processor: Any, index: Any) -> None:
        self.index_dir = index_dir
        self.settings = settings
        self.model = model
        self.encoder = (
            FLMREncoder(model, image_processor, batch_size=int(settings["batch_size"]), instructions=settings.get("instructions"))
            if model is not None
            else None
        )
        self._index = index
        self._store = DocumentStore(index_dir / DOCSTORE_FILE, index_dir / IMAGES_FOLDER)
        self._write_lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._warned_k: set[int] = set()
        self._closed = False
        self._recover()

    def _recover(self) -> None:
        # Rows of a writer that is still running look like a crash's leftovers, so recovery
        # runs only when no process holds the writer lock.
        with writer_lock(self.index_dir, blocking=False) as acquired:
            if acquired:
                self._store.recover(self._index.contains, self._index.delete)
            else:
                logger.info("another process is writing to %s; its pending rows are left to it", self.index_dir)

    # Construction.

    @classmethod
    def create(
        cls,
        index_dir: str | os.PathLike[str],
        model: Any = DEFAULT_MODEL,
        device: str | None = None,
        dtype: str | None = None,
        nbits: int = 2,
        batch_size: int = 32,
        instruction: str | Mapping[str, str] | None = None,
        chunk_size: int = 4096,
        image_processor: Any = None,
        model_path: str | os.PathLike[str] | None = None,
    ) -> FLMRRetriever:
        """Create an empty index directory for ``model`` and return its retriever.

        Args:
            index_dir: a new or empty directory.
            model: a hub id, a local checkpoint folder, or an ``FLMRModelForRetrieval`` instance.
                An instance is referenced by ``model_path``, else by its ``name_or_path`` when
                that is a checkpoint folder, else it is saved into ``index_dir/model/``. A
                referenced folder must hold the instance's weights, because ``open`` loads them
                from there.
            device, dtype: where and how the model runs (default: CUDA with bfloat16 or float16
                when available, else CPU with float32). Ignored for an instance, which runs
                where it is.
            nbits: bits per residual dimension in the index (1, 2, 4 or 8); more is more
                accurate and larger.
            batch_size: documents or queries per forward pass.
            instruction: the query instruction for every query kind (a str), or per kind (a dict
                with keys ``image_question``, ``image``, ``text``); None keeps
                :data:`flmr_rag.encoding.DEFAULT_INSTRUCTIONS`.
            chunk_size: documents per commit during ``add``; bounds the memory of an add.
            image_processor: the image processor to use with a model instance (default: the
                one of its folder, else CLIP preprocessing for its image size).
            model_path: the checkpoint folder of a model instance.

        Raises:
            FileExistsError: ``index_dir`` already contains an index or other files.
            FileNotFoundError, ValueError: the model folder is missing or not an FLMR checkpoint.
        """
        from flmr_rag.index import MultiVectorIndex

        # An absolute directory keeps stored image paths valid from any working directory.
        directory = Path(index_dir).expanduser().absolute()
        check_new_index_directory(directory)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        instructions = normalize_instructions(instruction)

        existed = directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        try:
            reference, loaded, processor = load_model_for_new_index(model, directory, device, dtype, image_processor, model_path)

            dim = int(loaded.config.dim)
            index = MultiVectorIndex.create(directory / INDEX_FOLDER, dim=dim, nbits=nbits)
            settings = {
                "format": SETTINGS_FORMAT,
                "format_version": SETTINGS_VERSION,
                "model": reference,
                "dim": dim,
                "nbits": nbits,
                "batch_size": batch_size,
                "chunk_size": chunk_size,
                "instructions": instructions,
            }
            retriever = cls(directory, settings, loaded, processor, index)
            # The settings file marks the directory as a complete index, so it is written last.
            write_json_atomic(directory / SETTINGS_FILE, settings)
        except BaseException:
            remove_partial_index(directory, existed)
            raise
        logger.info("created index %s for model %s (dim %d, nbits %d)", directory, reference, dim, nbits)
        return retriever

    @classmethod
    def open(
        cls,
        index_dir: str | os.PathLike[str],
        device: str | None = None,
        dtype: str | None = None,
        model: str | os.PathLike[str] | None = None,
        batch_size: int | None = None,
        load_model: bool = True,
        chunk_size: int | None = None,
    ) -> FLMRRetriever:
        """Open an existing index directory with the model it was built with.

        Args:
            model: when given, must name the same model as the index (a check, not an override).
            batch_size: overrides the stored batch size for this session.
            chunk_size: overrides the stored documents per commit for this session.
            load_model: False opens without the model, so nothing is downloaded or loaded. Such a
                retriever supports ``get``, ``delete``, ``ids``, ``len`` and ``stats`` but not
                ``add`` or ``search``.

        Raises:
            FileNotFoundError: the directory is not an index.
            ValueError: ``model`` differs from the index's model, or the model's dim differs from
                the index's dim.
        """
        from flmr_rag.index import MultiVectorIndex

        directory = Path(index_dir).expanduser().absolute()
        settings = read_settings(directory)
        stored = str(settings["model"])
        check_requested_model(stored, model, directory)
        if chunk_size is not None:
            if chunk_size <= 0:
                raise ValueError(f"chunk_size must be positive, got {chunk_size}")
            settings = {**settings, "chunk_size": chunk_size}
        if not load_model:
            return cls(directory, settings, None, None, MultiVectorIndex.open(directory / INDEX_FOLDER))
        loaded, processor = load_model_and_processor(stored, directory, device, dtype)
        check_model_dim(directory, settings, loaded)
        if batch_size is not None:
            settings = {**settings, "batch_size": batch_size}
        index = MultiVectorIndex.open(directory / INDEX_FOLDER)
        return cls(directory, settings, loaded, processor, index)

    # Writing.

    def add(self, documents: Iterable[Document], show_progress: bool = True) -> list[str]:
        """Encode and index ``documents`` (a list or any stream); return their ids in order.

        Documents without an id get a random hex id. Images may be paths (stored by absolute
        path), PIL images or encoded bytes (stored as PNG under ``images/``).

        Raises:
            ValueError: a document has neither text nor image, an unreadable image, metadata that
                JSON cannot store, or an id that is already indexed or repeats.
        """
        self._check_open()
        self._require_encoder()
        added: list[str] = []
        iterator = iter(documents)
        chunk_size = int(self.settings.get("chunk_size", 4096))
        # A stream that knows its row count (operator.length_hint) gives the bar a total too.
        total = len(documents) if isinstance(documents, Sequence) else operator.length_hint(documents) or None
        bar_options: dict[str, Any] = {} if show_progress else {"disable": True}
        with (
            self._write_lock,
            writer_lock(self.index_dir),
            progress(total=total, unit="doc", desc="encoding documents", **bar_options) as bar,
        ):
            position = 0
            while chunk := list(itertools.islice(iterator, chunk_size)):
                added.extend(self._add_chunk(chunk, position, bar))
                position += len(chunk)
            if total is not None and bar.total != bar.n:
                # Skipped rows of a stream end the bar below its row count.
                bar.total = bar.n
                bar.refresh()
        return added

    def _add_chunk(self, documents: list[Document], position: int, bar: Any) -> list[str]:
        rows: list[StoredDocument] = []
        pngs: dict[int, bytes] = {}
        for offset, document in enumerate(documents):
            row, png = prepare_document(document, position + offset, self._store.images_dir)
            rows.append(row)
            if png is not None:
                pngs[offset] = png
        ids = [row.id for row in rows]

        self._store.stage(rows)
        try:
            for png in pngs.values():
                self._store.save_image(png)
            embeddings, doclens = self._require_encoder().encode_documents(
                [row.text for row in rows], [row.image_path for row in rows], progress_bar=bar
            )
            self._index.add(embeddings.numpy(), doclens, ids)
        except BaseException:
            indexed = [doc_id for doc_id in ids if self._index.contains(doc_id)]
            self._store.commit(indexed)
            self._store.discard([doc_id for doc_id in ids if doc_id not in set(indexed)])
            raise
        self._store.commit(ids)
        return ids

    def delete(self, ids: str | Iterable[str]) -> int:
        """Remove documents from the index and the docstore; return how many existed (unknown ids are ignored)."""
        self._check_open()
        requested = [ids] if isinstance(ids, str) else list(ids)
        with self._write_lock, writer_lock(self.index_dir):
            marked = self._store.mark_deleting(requested)
            if marked:
                self._index.delete(marked)
            self._store.finish_delete(marked)
        return len(marked)

    # Reading.

    def search(
        self,
        question: str | None = None,
        image: ImageInput | None = None,
        k: int = 10,
        instruction: str | None = None,
        exact: bool = False,
    ) -> list[SearchResult]:
        """Return the ``k`` documents with the highest late-interaction score for one query.

        Args:
            question: the question text (optional when an image is given).
            image: a path, PIL image or bytes (optional when a question is given).
            k: how many results; fewer come back when the index contains fewer documents.
            instruction: overrides the default instruction of this query's kind; "" sends the
                question alone.
            exact: score every document exactly. False lets the index choose: exhaustive
                scoring for small collections (see ``flmr_rag.index.EXACT_SEARCH_MAX_TOKENS``),
                else the approximate PLAID search with exact re-scoring of its candidates.

        Raises:
            ValueError: no question and no image, or ``k`` < 1.
            ImageLoadError: the image is missing or unreadable.
        """
        return self.search_batch([{"question": question, "image": image, "instruction": instruction}], k=k, exact=exact)[0]

    def search_batch(
        self, queries: Sequence[Mapping[str, Any] | Query], k: int = 10, exact: bool = False
    ) -> list[list[SearchResult]]:
        """Search several queries, encoded together; each is a dict with ``question``, ``image``
        and ``instruction`` keys (all optional, but a question or an image is required)."""
        self._check_open()
        encoder = self._require_encoder()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        parsed = [parse_query(query, position) for position, query in enumerate(queries)]
        if not parsed:
            return []
        size = len(self)
        if size == 0:
            logger.warning("index %s contains no documents; add some before searching", self.index_dir)
            return [[] for _ in parsed]
        if k > size and k not in self._warned_k:
            self._warned_k.add(k)
            logger.warning("k=%d is larger than the %d documents in %s; returning all of them", k, size, self.index_dir)

        with self._query_lock:
            embeddings = encoder.encode_queries(parsed)
        # exact=None lets the index choose exhaustive scoring for small collections.
        hits = self._index.search(embeddings.numpy(), k=min(k, size), exact=True if exact else None)
        return [self._results(ids, scores) for ids, scores in hits]

    def _results(self, ids: Sequence[str], scores: Sequence[float]) -> list[SearchResult]:
        stored = self._store.get_many(list(ids))
        results: list[SearchResult] = []
        for doc_id, score in zip(ids, scores):
            document = stored.get(doc_id)
            if document is None:
                # Deleted between the index search and the docstore read.
                continue
            results.append(
                SearchResult(doc_id, float(score), document.text, document.metadata, document.image_path, len(results) + 1)
            )
        return results

    def get(self, doc_id: str) -> Document | None:
        """Return the stored document (its image as the stored path), or None for an unknown id."""
        self._check_open()
        stored = self._store.get(doc_id)
        if stored is None:
            return None
        return Document(id=stored.id, text=stored.text, image=stored.image_path, metadata=stored.metadata)

    def ids(self) -> Iterator[str]:
        """Iterate over the ids of the indexed documents in insertion order."""
        self._check_open()
        return iter(self._store.ids())

    def stats(self) -> dict[str, Any]:
        """Return the settings, the document count and the index statistics."""
        self._check_open()
        return {**self.settings, "documents": len(self), "index": self._index.stats()}

    def __len__(self) -> int:
        self._check_open()
        return self._store.count()

    def ask(
        self,
        question: str | None = None,
        image: ImageInput | None = None,
        k: int = 5,
        generator: Any = None,
        instruction: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Retrieve ``k`` passages and answer the question with ``generator`` (RA-VQA); see
        :func:`flmr_rag.generation.answer_question`."""
        from flmr_rag.generation import answer_question

        return answer_question(self, question=question, image=image, k=k, generator=generator, instruction=instruction, **kwargs)

    # Lifetime.

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the retriever of {self.index_dir} is closed; open it again with FLMRRetriever.open")

    def _require_encoder(self) -> FLMREncoder:
        if self.encoder is None:
            raise RuntimeError(
                f"the retriever of {self.index_dir} was opened with load_model=False; "
                "open it with the model to add or search"
            )
        return self.encoder

    def close(self) -> None:
        """Close the index and the docstore; calling it twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._index.close()
        self._store.close()

    def __enter__(self) -> FLMRRetriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} documents"
        return f"FLMRRetriever({str(self.index_dir)!r}, model={self.settings['model']!r}, {state})"
