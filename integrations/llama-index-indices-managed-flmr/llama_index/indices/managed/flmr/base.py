"""FLMRIndex: a LlamaIndex index whose nodes are searched by FLMR late interaction.

The index adapts one ``flmr_rag.FLMRRetriever`` (model, multi-vector index and its own
docstore). LlamaIndex's docstore keeps the nodes; the FLMR index keeps their token
embeddings under the same ids. The index struct records which node ids belong to this index and
where ``persist`` last wrote the FLMR artifacts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from llama_index.core.callbacks import CallbackManager
from llama_index.core.data_structs.data_structs import IndexDict
from llama_index.core.data_structs.registry import INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS
from llama_index.core.data_structs.struct_type import IndexStructType
from llama_index.core.indices.base import BaseIndex
from llama_index.core.indices.registry import INDEX_STRUCT_TYPE_TO_INDEX_CLASS
from llama_index.core.llms import LLM
from llama_index.core.schema import BaseNode, IndexNode, MetadataMode, NodeWithScore, TransformComponent
from llama_index.core.storage.docstore.types import RefDocInfo
from llama_index.core.storage.storage_context import DEFAULT_PERSIST_DIR, StorageContext

import flmr_rag
from flmr_rag.types import ImageInput

from ._convert import node_to_document, result_node, with_score
from ._snapshot import snapshot_directory

if TYPE_CHECKING:
    from .query_engine import FLMRVisualQAQueryEngine
    from .retriever import FLMRMultiModalRetriever

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "LinWeizheDragon/PreFLMR_ViT-L"

# Sub-folder of a persist directory that contains the FLMR index (model reference, embeddings, docstore).
ARTIFACT_DIRNAME = "flmr_index"

FLMR_INDEX_STRUCT_TYPE = "flmr"


@dataclass
class FLMRIndexStruct(IndexDict):
    """The index struct of :class:`FLMRIndex`.

    ``nodes_dict`` maps each node id to itself (the FLMR index uses node ids as document ids).
    ``artifact_dir`` is the absolute path of the FLMR folder that the last ``persist`` wrote,
    which ``load_index_from_storage`` opens. ``FLMRIndex.load_from_disk`` uses
    ``<persist_dir>/flmr_index`` instead, so a persist directory can be moved.
    """

    artifact_dir: str = ""
    format_version: int = 1

    @classmethod
    def get_type(cls) -> IndexStructType:
        """Return ``"flmr"``, the key this package registers for loading."""
        return FLMR_INDEX_STRUCT_TYPE  # type: ignore[return-value]


def _close_and_remove(retriever: Any, folder: str) -> None:
    try:
        retriever.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class FLMRIndex(BaseIndex[FLMRIndexStruct]):
    """A LlamaIndex index over text and image nodes, searched with FLMR / PreFLMR.

    Args:
        nodes: nodes to index (``TextNode``, ``ImageNode``, ``Node``); use ``from_documents``
            for ``Document`` and ``ImageDocument`` objects.
        index_struct: a struct loaded from storage; the FLMR folder is then opened from
            ``index_dir`` or from ``index_struct.artifact_dir``.
        storage_context: LlamaIndex stores (docstore, index store); a fresh in-memory one when
            omitted.
        model: the FLMR checkpoint for a new index: a hub id, a local folder or an
            ``FLMRModelForRetrieval`` instance.
        index_dir: the folder of the FLMR index, new or empty. When omitted, the index lives in
            a temporary folder that is removed with this object, so call :meth:`persist` to keep it.
        retriever: an open ``flmr_rag.FLMRRetriever`` to use instead of ``model`` and
            ``index_dir``; the caller keeps ownership and closes it.
        device, dtype: where and in which dtype the model runs (``flmr_rag`` chooses by default).
        nbits, batch_size, instruction: passed to ``flmr_rag.FLMRRetriever.create`` when set.
        metadata_mode: which node metadata FLMR encodes with the text (LlamaIndex's
            ``MetadataMode.EMBED`` by default, so ``excluded_embed_metadata_keys`` applies).

    These keywords are consumed here; other keywords go to ``BaseIndex``.

    Raises:
        ValueError: a node has neither text nor an image, or an image reference is unusable.
        FileNotFoundError: a node's image path does not exist.

    Example:
        >>> index = FLMRIndex.from_documents(documents, model="LinWeizheDragon/PreFLMR_ViT-L")
        >>> nodes = index.as_retriever(similarity_top_k=5).retrieve(query_bundle)
    """

    index_struct_cls = FLMRIndexStruct

    def __init__(
        self,
        nodes: Optional[Sequence[BaseNode]] = None,
        objects: Optional[Sequence[IndexNode]] = None,
        index_struct: Optional[FLMRIndexStruct] = None,
        storage_context: Optional[StorageContext] = None,
        callback_manager: Optional[CallbackManager] = None,
        transformations: Optional[List[TransformComponent]] = None,
        show_progress: bool = False,
        *,
        model: Any = DEFAULT_MODEL,
        index_dir: Optional[Union[str, os.PathLike]] = None,
        retriever: Optional["flmr_rag.FLMRRetriever"] = None,
        device: Optional[str] = None,
        dtype: Any = None,
        nbits: Optional[int] = None,
        batch_size: Optional[int] = None,
        instruction: Optional[str] = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        **kwargs: Any,
    ) -> None:
        self._metadata_mode = metadata_mode
        self._lock = threading.RLock()
        self._owns_retriever = retriever is None

        # Reject unusable nodes before BaseIndex writes them to the docstore.
        for node in list(nodes or []) + list(objects or []):
            node_to_document(node, metadata_mode)

        if retriever is not None:
            self._flmr = retriever
        elif index_struct is not None:
            folder = index_dir or index_struct.artifact_dir
            if not folder:
                raise ValueError(
                    "the index struct records no FLMR folder; pass index_dir=<persist_dir>/flmr_index "
                    "or load with FLMRIndex.load_from_disk(persist_dir)"
                )
            self._flmr = flmr_rag.FLMRRetriever.open(folder, device=device, dtype=dtype)
        else:
            self._flmr = self._create_retriever(
                model, index_dir, device=device, dtype=dtype, nbits=nbits, batch_size=batch_size, instruction=instruction
            )

        super().__init__(
            nodes=nodes,
            objects=objects,
            index_struct=index_struct,
            storage_context=storage_context,
            callback_manager=callback_manager,
            transformations=transformations,
            show_progress=show_progress,
            **kwargs,
        )

    def _create_retriever(
        self, model: Any, index_dir: Optional[Union[str, os.PathLike]], **options: Any
    ) -> "flmr_rag.FLMRRetriever":
        create_options = {name: value for name, value in options.items() if value is not None}
        if index_dir is not None:
            return flmr_rag.FLMRRetriever.create(index_dir, model=model, **create_options)

        scratch = tempfile.mkdtemp(prefix="llama-index-flmr-")
        try:
            retriever = flmr_rag.FLMRRetriever.create(Path(scratch) / ARTIFACT_DIRNAME, model=model, **create_options)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        weakref.finalize(self, _close_and_remove, retriever, scratch)
        logger.info("FLMR index in temporary folder %s; call persist() to keep it", scratch)
        return retriever

    @property
    def flmr_retriever(self) -> "flmr_rag.FLMRRetriever":
        """The ``flmr_rag.FLMRRetriever`` this index adapts."""
        return self._flmr

    @property
    def index_dir(self) -> Path:
        """The folder of the live FLMR index."""
        return Path(self._flmr.index_dir)

    def close(self) -> None:
        """Close the FLMR retriever if this index opened it; the index is unusable afterwards."""
        if self._owns_retriever:
            self._flmr.close()

    # Building, inserting, deleting.

    def _add_nodes(self, nodes: Sequence[BaseNode], index_struct: FLMRIndexStruct) -> None:
        documents = [node_to_document(node, self._metadata_mode) for node in nodes]
        if not documents:
            return
        with self._lock:
            replaced = [document.id for document in documents if document.id in index_struct.nodes_dict]
            if replaced:
                # LlamaIndex inserts with allow_update=True: an insert of a known id replaces the node.
                self._flmr.delete(replaced)
            self._flmr.add(documents)
            for node in nodes:
                index_struct.add_node(node, text_id=node.node_id)

    def _build_index_from_nodes(self, nodes: Sequence[BaseNode], **build_kwargs: Any) -> FLMRIndexStruct:
        index_struct = FLMRIndexStruct()
        self._add_nodes(nodes, index_struct)
        return index_struct

    def insert_nodes(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        """Insert nodes (an existing node id is replaced); unusable nodes raise before any write."""
        for node in nodes:
            node_to_document(node, self._metadata_mode)
        super().insert_nodes(nodes, **insert_kwargs)

    async def ainsert_nodes(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        """Insert nodes in a worker thread, so the event loop keeps running during encoding."""
        await asyncio.to_thread(self.insert_nodes, nodes, **insert_kwargs)

    def _insert(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        self._add_nodes(nodes, self._index_struct)

    def _delete_node(self, node_id: str, **delete_kwargs: Any) -> None:
        self._delete_from_flmr([node_id])

    def _delete_from_flmr(self, node_ids: Sequence[str]) -> None:
        known = [node_id for node_id in node_ids if node_id in self._index_struct.nodes_dict]
        if not known:
            return
        with self._lock:
            self._flmr.delete(known)
            for node_id in known:
                self._index_struct.delete(node_id)

    def delete_nodes(self, node_ids: List[str], delete_from_docstore: bool = False, **delete_kwargs: Any) -> None:
        """Delete nodes from the FLMR index in one commit (and from the docstore on request)."""
        self._delete_from_flmr(node_ids)
        if delete_from_docstore:
            for node_id in node_ids:
                self.docstore.delete_document(node_id, raise_error=False)
        self._storage_context.index_store.add_index_struct(self._index_struct)

    async def adelete_nodes(
        self, node_ids: List[str], delete_from_docstore: bool = False, **delete_kwargs: Any
    ) -> None:
        """Delete nodes in a worker thread."""
        await asyncio.to_thread(self.delete_nodes, node_ids, delete_from_docstore, **delete_kwargs)

    @property
    def ref_doc_info(self) -> Dict[str, RefDocInfo]:
        """The source documents of this index's nodes, keyed by ref_doc_id."""
        nodes = self.docstore.get_nodes(list(self._index_struct.nodes_dict.values()), raise_error=False)
        info: Dict[str, RefDocInfo] = {}
        for node in nodes:
            ref_doc_id = node.ref_doc_id
            if ref_doc_id is None or ref_doc_id in info:
                continue
            ref_info = self.docstore.get_ref_doc_info(ref_doc_id)
            if ref_info is not None:
                info[ref_doc_id] = ref_info
        return info

    # Searching: called by FLMRMultiModalRetriever.

    def __len__(self) -> int:
        return len(self._index_struct.nodes_dict)

    def search(
        self,
        question: Optional[str],
        image: Optional[ImageInput],
        k: int,
        instruction: Optional[str] = None,
    ) -> List[NodeWithScore]:
        """Return the ``k`` best nodes for a question, an image or both, best first.

        ``k`` larger than the index returns every node; an empty index returns ``[]``.
        """
        return self.search_batch([{"question": question, "image": image, "instruction": instruction}], k)[0]

    def search_batch(self, queries: Sequence[Dict[str, Any]], k: int) -> List[List[NodeWithScore]]:
        """Search several queries (dicts with ``question``, ``image``, ``instruction``) in one batch."""
        with self._lock:
            k = min(k, len(self._flmr))
            if k <= 0:
                return [[] for _ in queries]
            if len(queries) == 1:
                query = queries[0]
                batches = [self._flmr.search(question=query["question"], image=query["image"], k=k, instruction=query["instruction"])]
            else:
                batches = self._flmr.search_batch([dict(query) for query in queries], k=k)
        return [self._to_nodes(results) for results in batches]

    def _to_nodes(self, results: Sequence["flmr_rag.SearchResult"]) -> List[NodeWithScore]:
        scored = []
        for result in results:
            node = self.docstore.get_node(result.id, raise_error=False)
            if node is None:
                logger.warning("node %s is in the FLMR index but not in the docstore; using the FLMR copy", result.id)
                node = result_node(result)
            scored.append(with_score(node, result.score))
        return scored

    # Framework entry points.

    def as_retriever(self, **kwargs: Any) -> "FLMRMultiModalRetriever":
        """Return an :class:`FLMRMultiModalRetriever`; ``similarity_top_k`` sets k, unknown keywords are ignored."""
        from .retriever import FLMRMultiModalRetriever

        kwargs.setdefault("callback_manager", self._callback_manager)
        kwargs.setdefault("object_map", self._object_map)
        return FLMRMultiModalRetriever(index=self, **kwargs)

    def as_visual_qa_engine(self, llm: LLM, **kwargs: Any) -> "FLMRVisualQAQueryEngine":
        """Return a query engine that sends the query image and the retrieved passages to ``llm``."""
        from .query_engine import FLMRVisualQAQueryEngine

        return FLMRVisualQAQueryEngine(retriever=self.as_retriever(**kwargs), llm=llm, callback_manager=self._callback_manager)

    # Persistence.

    def persist(self, persist_dir: Union[str, os.PathLike] = DEFAULT_PERSIST_DIR) -> None:
        """Write the FLMR index to ``persist_dir/flmr_index`` and the LlamaIndex stores to ``persist_dir``.

        An index that already lives in ``persist_dir/flmr_index`` is not copied. An earlier
        snapshot there is replaced only after the new copy is complete.

        Raises:
            FileExistsError: ``persist_dir/flmr_index`` exists and was not written by ``persist``.
        """
        persist_path = Path(persist_dir).resolve()
        target = persist_path / ARTIFACT_DIRNAME
        with self._lock:
            if self.index_dir.resolve() != target:
                snapshot_directory(self.index_dir, target)
            self._index_struct.artifact_dir = str(target)
            self._storage_context.index_store.add_index_struct(self._index_struct)
            self._storage_context.persist(persist_dir=str(persist_path))
        logger.info("persisted FLMR index with %d nodes to %s", len(self), persist_path)

    @classmethod
    def load_from_disk(
        cls,
        persist_dir: Union[str, os.PathLike] = DEFAULT_PERSIST_DIR,
        index_id: Optional[str] = None,
        **kwargs: Any,
    ) -> "FLMRIndex":
        """Load an index written by :meth:`persist`; ``device`` and ``dtype`` may be given in ``kwargs``.

        Raises:
            FileNotFoundError: ``persist_dir`` has no ``flmr_index`` folder.
            ValueError: the persist directory contains no FLMR index struct, or several and no ``index_id``.
        """
        persist_path = Path(persist_dir)
        artifact_dir = persist_path / ARTIFACT_DIRNAME
        if not artifact_dir.is_dir():
            raise FileNotFoundError(
                f"{artifact_dir} does not exist; pass the folder that FLMRIndex.persist(persist_dir) wrote"
            )
        storage_context = StorageContext.from_defaults(persist_dir=str(persist_path))
        candidates = [
            struct
            for struct in storage_context.index_store.index_structs()
            if isinstance(struct, FLMRIndexStruct) and (index_id is None or struct.index_id == index_id)
        ]
        if len(candidates) != 1:
            found = "no FLMR index" if not candidates else f"{len(candidates)} FLMR indexes"
            raise ValueError(
                f"found {found} matching index_id={index_id!r} in {persist_path}; pass the index_id of the index to load"
            )
        return cls(index_struct=candidates[0], storage_context=storage_context, index_dir=artifact_dir, **kwargs)


# load_index_from_storage looks the struct type up in these two tables; "flmr" is not an
# IndexStructType member, but the tables accept any string key.
INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS.setdefault(FLMR_INDEX_STRUCT_TYPE, FLMRIndexStruct)  # type: ignore[arg-type]
INDEX_STRUCT_TYPE_TO_INDEX_CLASS.setdefault(FLMR_INDEX_STRUCT_TYPE, FLMRIndex)  # type: ignore[arg-type]
