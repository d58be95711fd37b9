"""datatrove pipeline steps that move documents between our Parquet datasets and datatrove.

A Document carries `id` and `text`; every other column of the row rides in `metadata`,
so a stage keeps all input columns and adds its own.
"""

from __future__ import annotations

import posixpath

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.parquet import ParquetWriter

from dagster_llmdata.io.logs import progress_bar
from dagster_llmdata.io.parquet_store import IN_PROGRESS



def row_to_document(row: dict) -> Document:
    text = row.pop("text", None)
    doc_id = row.pop("id", None)
    return Document(text=text if text is not None else "", id=str(doc_id), metadata=row)


def document_to_row(_writer, doc: Document) -> dict:
    """datatrove writer adapter: back to a flat row (writer's schema picks the columns)."""
    return {"id": doc.id, "text": doc.text, **doc.metadata}


class ParquetDocReader(PipelineStep):
    """Reads the Parquet files of a dataset. Work is split by row group, not by file, so a
    partition that is one file still spreads over every task; the split is deterministic, so
    multi-pass steps (MinHash signatures, then its filter) see the same docs in the same order."""

    name = "📖 Parquet dataset"
    type = "📖 - READER"

    def __init__(self, files: list[str], progress_label: str = "docs"):
        super().__init__()
        self.files = list(files)
        self.progress_label = progress_label

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        mine = [(path, group, rows) for unit, (path, group, rows) in enumerate(self._row_groups()) if unit % world_size == rank]
        bar = progress_bar(self.progress_label, sum(rows for _, _, rows in mine), position=rank)
        open_path, pf = None, None
        for path, group, _ in mine:
            if path != open_path:
                open_path, pf = path, pq.ParquetFile(path)
            for row in pf.read_row_group(group).to_pylist():
                self.stat_update("documents")
                if bar is not None:
                    bar.update()
                yield row_to_document(row)
        if bar is not None:
            bar.close()

    def _row_groups(self):
        """(file, row group, rows) over every row group of every file, in a stable order (footers only)."""
        for path in self.files:
            meta = pq.read_metadata(path)
            for group in range(meta.num_row_groups):
                yield path, group, meta.row_group(group).num_rows


class DatasetWriter(ParquetWriter):
    """datatrove's ParquetWriter with a fixed schema, so every part file of a dataset agrees.
    Parts are written inside the dataset's hidden IN_PROGRESS folder and moved into the dataset
    only once closed complete: a killed task leaves no half-written part where readers look."""

    name = "💽 Parquet dataset"

    def __init__(self, folder: str, schema: pa.Schema):
        super().__init__(
            folder,
            output_filename=f"{IN_PROGRESS}/part-${{rank}}.parquet",
            adapter=document_to_row,
            schema=schema,
            batch_size=512,
            compression="zstd",
            use_content_defined_chunking=False,
        )

    def close_file(self, filename: str) -> None:
        super().close_file(filename)  # writes the footer and closes the file
        self.output_folder.mv(filename, posixpath.basename(filename))






