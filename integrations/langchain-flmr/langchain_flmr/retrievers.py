"""FLMRRetriever: FLMR / PreFLMR multimodal late-interaction search as a LangChain retriever."""

from __future__ import annotations

import os
import threading
from typing import Any, Optional, Sequence, Union

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForRetrieverRun,
    CallbackManager,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever, LangSmithRetrieverParams
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.runnables.config import get_config_list, run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr
from typing_extensions import TypedDict

import flmr_rag

from ._images import LoadedImage, image_reference, load_image

QUERY_KEYS = ("question", "image", "k", "instruction")


class FLMRQuery(TypedDict, total=False):
    """A dict query: the question, the query image (path, PIL image, bytes or base64 text), k, instruction."""

    question: str
    image: Any
    k: int
    instruction: str


def _split_query(query: Union[str, dict], options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a string or dict query into the question and the search keywords.

    Raises:
        ValueError: unknown dict keys, or a key given both in the dict and as a keyword.
        TypeError: the query is neither a string nor a dict.
    """
    merged = {name: value for name, value in options.items() if name in QUERY_KEYS[1:]}
    if isinstance(query, str):
        return query, merged
    if not isinstance(query, dict):
        raise TypeError(f"the query must be a string or a dict with keys {QUERY_KEYS}, got {type(query).__name__}")

    unknown = sorted(set(query) - set(QUERY_KEYS))
    if unknown:
        raise ValueError(f"unknown query keys {unknown}; a dict query takes {list(QUERY_KEYS)}")
    for name in QUERY_KEYS[1:]:
        if name in query and query[name] is not None:
            if merged.get(name) is not None:
                raise ValueError(f"{name!r} is given both in the query dict and as a keyword argument; give it once")
            merged[name] = query[name]
    question = query.get("question") or ""
    if not isinstance(question, str):
        raise TypeError(f"question must be a string, got {type(question).__name__}")
    return question, merged


class FLMRRetriever(BaseRetriever):
    """Retrieve passages for a question, an image, or both, with an ``flmr_rag.FLMRRetriever``.

    Build it from an open core retriever, ``FLMRRetriever(retriever=core, k=4)``, or from an
    index folder, ``FLMRRetriever.from_index(index_dir, k=4)``.

    Queries: ``invoke("question", image=...)``, ``invoke({"question": ..., "image": ...})``;
    ``k`` and ``instruction`` may be given per call the same two ways. Images are file paths,
    PIL images, bytes or base64 text (a ``data:`` URL too). ``batch`` and ``abatch`` encode all
    queries in one model call; ``ainvoke`` runs the model in a worker thread.

    Results are ``Document(id=<passage id>, page_content=<passage text>, metadata=...)`` whose
    metadata contains the passage's own metadata plus ``score`` (late-interaction score, higher is
    better), ``rank`` (1-based) and ``image_path`` (None for text passages), best first.

    Traces record the question text as the retriever input. The query image (from a dict or
    the ``image`` keyword) is passed around the tracer, and the run metadata
    ``flmr_query_image`` contains the image path or a SHA-256 prefix of its bytes instead.

    Raises (from ``invoke``):
        FileNotFoundError: an image path that does not exist.
        ValueError: undecodable image data, a query with neither question nor image, k <= 0.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    k: int = Field(default=4, gt=0, description="How many passages to return.")
    instruction: Optional[str] = Field(
        default=None, description="PreFLMR instruction for every query; None uses the index default."
    )
    exact: bool = Field(default=False, description="Score every passage exactly instead of the approximate index search.")

    _core: Any = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, *, retriever: "flmr_rag.FLMRRetriever", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._core = retriever

    @classmethod
    def from_index(
        cls,
        index_dir: Union[str, os.PathLike],
        k: int = 4,
        device: Optional[str] = None,
        dtype: Any = None,
        **kwargs: Any,
    ) -> "FLMRRetriever":
        """Open the FLMR index in ``index_dir`` (its model loads from the reference it stores)."""
        return cls(retriever=flmr_rag.FLMRRetriever.open(index_dir, device=device, dtype=dtype), k=k, **kwargs)

    @property
    def core(self) -> "flmr_rag.FLMRRetriever":
        """The ``flmr_rag.FLMRRetriever`` this retriever adapts."""
        return self._core

    @property
    def InputType(self) -> Any:  # noqa: N802 - the name is fixed by Runnable
        """A question string or an :class:`FLMRQuery` dict."""
        return Union[str, FLMRQuery]

    def _get_ls_params(self, **kwargs: Any) -> LangSmithRetrieverParams:
        params = LangSmithRetrieverParams(ls_retriever_name="flmr", ls_embedding_provider="flmr")
        model = (getattr(self._core, "settings", None) or {}).get("model")
        if model:
            params["ls_embedding_model"] = str(model)
        return params

    # Searching.

    def _search(self, queries: Sequence[dict[str, Any]], ks: Sequence[int]) -> list[list[Document]]:
        """Search prepared queries (question, image, instruction) in one batch and keep each query's k."""
        with self._lock:
            size = len(self._core)
            k = min(max(ks), size)
            if k <= 0:
                return [[] for _ in queries]
            if len(queries) == 1:
                query = queries[0]
                batches = [self._core.search(**query, k=k, exact=self.exact)]
            else:
                batches = self._core.search_batch([dict(query) for query in queries], k=k, exact=self.exact)
        return [[_to_document(result) for result in results[:wanted]] for results, wanted in zip(batches, ks)]

    def _prepare(self, question: str, image: Any, k: Optional[int], instruction: Optional[str]) -> tuple[dict[str, Any], int]:
        if k is None:
            k = self.k
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        loaded: Optional[LoadedImage] = None if image is None else load_image(image)
        if not question.strip() and loaded is None:
            raise ValueError("the query has neither a question nor an image; pass question text, image=, or both")
        query = {"question": question or None, "image": loaded, "instruction": instruction or self.instruction}
        return query, k

    def _get_relevant_documents(
        self,
        query: Union[str, dict],
        *,
        run_manager: CallbackManagerForRetrieverRun,
        image: Any = None,
        k: Optional[int] = None,
        instruction: Optional[str] = None,
    ) -> list[Document]:
        question, options = _split_query(query, {"image": image, "k": k, "instruction": instruction})
        prepared, wanted = self._prepare(question, options.get("image"), options.get("k"), options.get("instruction"))
        return self._search([prepared], [wanted])[0]

    async def _aget_relevant_documents(
        self,
        query: Union[str, dict],
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        image: Any = None,
        k: Optional[int] = None,
        instruction: Optional[str] = None,
    ) -> list[Document]:
        question, options = _split_query(query, {"image": image, "k": k, "instruction": instruction})
        prepared, wanted = self._prepare(question, options.get("image"), options.get("k"), options.get("instruction"))
        return await run_in_executor(None, lambda: self._search([prepared], [wanted])[0])

    # Keeping images out of traces: the dict is split before the run starts.

    def _traced(self, input: Any, config: Optional[RunnableConfig], kwargs: dict[str, Any]) -> tuple[Any, RunnableConfig, dict[str, Any]]:
        config = ensure_config(config)
        if not isinstance(input, (str, dict)):
            return input, config, kwargs
        question, options = _split_query(input, kwargs)
        image = options.get("image")
        if image is not None:
            metadata = {**(config.get("metadata") or {}), "flmr_query_image": image_reference(image)}
            config = {**config, "metadata": metadata}
        rest = {name: value for name, value in kwargs.items() if name not in QUERY_KEYS}
        return question, config, {**rest, **options}

    def invoke(self, input: Union[str, dict], config: Optional[RunnableConfig] = None, **kwargs: Any) -> list[Document]:
        """Retrieve for a question string (``image=``, ``k=``, ``instruction=`` keywords) or an :class:`FLMRQuery`."""
        question, config, kwargs = self._traced(input, config, kwargs)
        return super().invoke(question, config, **kwargs)

    async def ainvoke(self, input: Union[str, dict], config: Optional[RunnableConfig] = None, **kwargs: Any) -> list[Document]:
        """Async :meth:`invoke`; the model runs in a worker thread."""
        question, config, kwargs = self._traced(input, config, kwargs)
        return await super().ainvoke(question, config, **kwargs)

    # Batches: one retriever run per input, one model call for all of them.

    def _callback_manager(self, config: RunnableConfig, manager_class: type) -> Any:
        return manager_class.configure(
            config.get("callbacks"),
            None,
            verbose=False,
            inheritable_tags=config.get("tags"),
            local_tags=self.tags,
            inheritable_metadata={**(config.get("metadata") or {}), **self._get_ls_params()},
            local_metadata=self.metadata,
        )

    def _split_batch(self, inputs: Sequence[Any], configs: list[RunnableConfig], kwargs: dict[str, Any]) -> list[Any]:
        """Return, per input, ``(question, config, options)`` or the exception that splitting raised."""
        split: list[Any] = []
        for input, config in zip(inputs, configs):
            try:
                split.append(self._traced(input, config, kwargs))
            except Exception as error:  # noqa: BLE001 - returned in the input's slot or re-raised
                split.append(error)
        return split

    def _prepare_started(self, split: list[Any], runs: dict[int, Any]) -> tuple[dict[int, Any], dict[int, Exception]]:
        """Load the images of the started runs; return the prepared queries and the failures by position."""
        prepared: dict[int, Any] = {}
        failures: dict[int, Exception] = {}
        for position in runs:
            question, _, options = split[position]
            try:
                prepared[position] = self._prepare(question, options.get("image"), options.get("k"), options.get("instruction"))
            except Exception as error:  # noqa: BLE001 - reported to the input's run
                failures[position] = error
        return prepared, failures

    def _search_prepared(self, prepared: dict[int, Any]) -> list[list[Document]]:
        return self._search([query for query, _ in prepared.values()], [k for _, k in prepared.values()]) if prepared else []

    def batch(
        self,
        inputs: list[Any],
        config: Optional[Union[RunnableConfig, list[RunnableConfig]]] = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Retrieve for several queries with one batched model call; keywords apply to every query.

        Each input gets its own retriever run. With ``return_exceptions=True`` a failed input's
        slot contains its exception and the other inputs are still searched.
        """
        if not inputs:
            return []
        split = self._split_batch(inputs, get_config_list(config, len(inputs)), kwargs)
        _raise_first(list(split), return_exceptions)

        runs: dict[int, Any] = {}
        for position, item in enumerate(split):
            if not isinstance(item, Exception):
                question, run_config, _ = item
                manager = self._callback_manager(run_config, CallbackManager)
                runs[position] = manager.on_retriever_start(None, question, name=run_config.get("run_name") or self.get_name())

        prepared, failures = self._prepare_started(split, runs)
        for position, error in failures.items():
            runs[position].on_retriever_error(error)
        if failures and not return_exceptions:
            first = next(iter(failures.values()))
            for position in prepared:
                runs[position].on_retriever_error(first)
            raise first

        try:
            found = self._search_prepared(prepared)
        except Exception as error:
            for position in prepared:
                runs[position].on_retriever_error(error)
            if not return_exceptions:
                raise
            return _merge(split, failures, {position: error for position in prepared})
        for position, documents in zip(prepared, found):
            runs[position].on_retriever_end(documents)
        return _merge(split, failures, dict(zip(prepared, found)))

    async def abatch(
        self,
        inputs: list[Any],
        config: Optional[Union[RunnableConfig, list[RunnableConfig]]] = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Async :meth:`batch`; the model runs in a worker thread."""
        if not inputs:
            return []
        split = self._split_batch(inputs, get_config_list(config, len(inputs)), kwargs)
        _raise_first(list(split), return_exceptions)

        runs: dict[int, Any] = {}
        for position, item in enumerate(split):
            if not isinstance(item, Exception):
                question, run_config, _ = item
                manager = self._callback_manager(run_config, AsyncCallbackManager)
                runs[position] = await manager.on_retriever_start(None, question, name=run_config.get("run_name") or self.get_name())

        prepared, failures = self._prepare_started(split, runs)
        for position, error in failures.items():
            await runs[position].on_retriever_error(error)
        if failures and not return_exceptions:
            first = next(iter(failures.values()))
            for position in prepared:
                await runs[position].on_retriever_error(first)
            raise first

        try:
            found = await run_in_executor(None, self._search_prepared, prepared)
        except Exception as error:
            for position in prepared:
                await runs[position].on_retriever_error(error)
            if not return_exceptions:
                raise
            return _merge(split, failures, {position: error for position in prepared})
        for position, documents in zip(prepared, found):
            await runs[position].on_retriever_end(documents)
        return _merge(split, failures, dict(zip(prepared, found)))


def _raise_first(items: list[Any], return_exceptions: bool) -> None:
    if return_exceptions:
        return
    for item in items:
        if isinstance(item, Exception):
            raise item


def _merge(split: list[Any], failures: dict[int, Exception], outcomes: dict[int, Any]) -> list[Any]:
    """Return one slot per input: its documents, or the exception it raised (split, load or search)."""
    results: list[Any] = []
    for position, item in enumerate(split):
        if position in outcomes:
            results.append(outcomes[position])
        elif position in failures:
            results.append(failures[position])
        else:
            results.append(item)
    return results


def _to_document(result: "flmr_rag.SearchResult") -> Document:
    metadata = {**result.metadata, "score": float(result.score), "rank": result.rank, "image_path": result.image_path}
    return Document(id=result.id, page_content=result.text, metadata=metadata)
