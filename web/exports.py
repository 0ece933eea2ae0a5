"""Lists as spreadsheets: CSV and XLSX downloads of what a page lists.

Every cell is text that no spreadsheet reads as a formula (CSV injection): a value starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from aiohttp import web
from openpyxl import Workbook

FORMATS = ("csv", "xlsx")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def wanted(request: web.Request) -> str | None:
    """The export format the query asks for (``?format=csv|xlsx``), else ``None``."""
    kind = request.query.get("format")
    return kind if kind in FORMATS else None


def export_response(
    kind: str, name: str, header: Sequence[str], rows: Sequence[Sequence[object]]
) -> web.Response:
    """``rows`` under ``header`` as ``<name>.csv`` or ``<name>.xlsx``, as an attachment."""
    disposition = f'attachment; filename="{name}.{kind}"'
    safe = [[cell(v) for v in row] for row in rows]
    if kind == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(safe)
        return web.Response(
            body=("\ufeff" + buffer.getvalue()).encode(),  # the BOM makes Excel read UTF-8
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": disposition},
        )
    book = Workbook(write_only=True)
    sheet = book.create_sheet(name[:31])
    sheet.append(list(header))
    for row in safe:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return web.Response(
        body=out.getvalue(), content_type=XLSX, headers={"Content-Disposition": disposition}
    )
